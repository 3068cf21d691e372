//! Who needs which torrent, over real TCP: `Want` and the `Wanted` notices
//! it sends to the other members of the group.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use titorrent_tracker::proto::*;

const TTL: Duration = Duration::from_secs(30);

fn peer(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

/// A subscribed connection of `cred`, reporting `at` as its address.
async fn subscribed(addr: SocketAddr, cred: &Credential, at: Option<SocketAddr>) -> Client {
    let mut c = Client::authed_at(addr, cred, at).await;
    assert!(matches!(c.req(Request::Subscribe { from: None }).await, Response::Snapshot { .. }));
    c
}

/// Three members of one group (and two of another): a `Want` reaches
/// exactly the subscribed connections of the requester's group that are
/// not its own, naming the address it authenticated with.
#[tokio::test]
async fn want_reaches_the_other_members_of_the_group_only() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut setup, a) = new_group(srv.addr, "alice").await;
    let (_, b) = join(srv.addr, &mut setup, a.group, "bob").await;
    let (_, c) = join(srv.addr, &mut setup, a.group, "carol").await;
    let (mut other, d) = new_group(srv.addr, "dave").await;
    let (_, e) = join(srv.addr, &mut other, d.group, "ed").await;
    drop((setup, other));

    let mut alice = subscribed(srv.addr, &a, peer("10.0.0.1:6881")).await;
    // Alice again, subscribed too, with no BitTorrent address.
    let mut alice2 = subscribed(srv.addr, &a, None).await;
    let mut bob = subscribed(srv.addr, &b, peer("10.0.0.2:6882")).await;
    // Bob again, not subscribed: it is told nothing.
    let mut bob_quiet = Client::authed_at(srv.addr, &b, peer("10.0.0.2:6882")).await;
    let mut carol = subscribed(srv.addr, &c, peer("10.0.0.3:6883")).await;
    let mut dave = subscribed(srv.addr, &d, peer("10.0.1.4:6884")).await;
    let mut ed = subscribed(srv.addr, &e, peer("10.0.1.5:6885")).await;

    let (nowhere, wanted, from_bob, from_ed) =
        (InfoHash([1; 20]), InfoHash([2; 20]), InfoHash([3; 20]), InfoHash([4; 20]));
    // Without an address, a Want is answered and goes nowhere.
    assert_eq!(alice2.req(Request::Want { info_hash: nowhere }).await, Response::Ok);
    assert_eq!(alice.req(Request::Want { info_hash: wanted }).await, Response::Ok);
    let alice_at = "10.0.0.1:6881".parse().unwrap();
    for (who, c) in [("bob", &mut bob), ("carol", &mut carol)] {
        assert_eq!(c.next_wanted().await, (wanted, alice_at), "{who}");
    }
    // Markers sent after alice's Want, in each group: notices of a group
    // arrive in order, so a connection that had been sent alice's would
    // see it before the marker.
    assert_eq!(bob.req(Request::Want { info_hash: from_bob }).await, Response::Ok);
    assert_eq!(ed.req(Request::Want { info_hash: from_ed }).await, Response::Ok);
    let bob_at = "10.0.0.2:6882".parse().unwrap();
    for (who, c) in [("alice", &mut alice), ("alice again", &mut alice2)] {
        assert_eq!(c.next_wanted().await, (from_bob, bob_at), "{who} was sent its own Want");
    }
    assert_eq!(carol.next_wanted().await, (from_bob, bob_at));
    assert_eq!(dave.next_wanted().await, (from_ed, "10.0.1.5:6885".parse().unwrap()), "another group's Want");
    // Bob's own connections got neither his Want nor anything else more.
    assert!(matches!(bob_quiet.req(Request::ListMembers).await, Response::Members(_)));
    assert!(bob_quiet.wanted.is_empty(), "{:?}", bob_quiet.wanted);
    assert!(matches!(bob.req(Request::ListMembers).await, Response::Members(_)));
    assert!(bob.wanted.is_empty(), "{:?}", bob.wanted);
    // Not authenticated: refused like any request.
    let mut anon = Client::connect(srv.addr).await;
    assert_eq!(anon.req(Request::Want { info_hash: wanted }).await, Response::Error(ProtoError::NotAuthenticated));
    srv.stop().await;
}

/// A Want names the address as the tracker sees it when the member gave
/// 0.0.0.0, and nothing of it is logged.
#[tokio::test]
async fn want_fixes_an_unspecified_address_and_logs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut setup, a) = new_group(srv.addr, "alice").await;
    let (_, b) = join(srv.addr, &mut setup, a.group, "bob").await;
    drop(setup);
    let mut bob = subscribed(srv.addr, &b, None).await;
    let mut alice = Client::authed_at(srv.addr, &a, peer("0.0.0.0:7000")).await;
    let Response::Log { events: before, .. } = alice.req(Request::ReadLog { after: None, limit: 0 }).await else {
        panic!()
    };
    assert_eq!(alice.req(Request::Want { info_hash: InfoHash([9; 20]) }).await, Response::Ok);
    assert_eq!(bob.next_wanted().await, (InfoHash([9; 20]), "127.0.0.1:7000".parse().unwrap()));
    let Response::Log { events: after, .. } = alice.req(Request::ReadLog { after: None, limit: 0 }).await else {
        panic!()
    };
    assert_eq!(after, before, "a Want is not an event");
    srv.stop().await;
}

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

    let mut alice = subscribed(srv.addr, &a, peer("127.0.0.1:6881")).await;
    // Alice again, subscribed too, with no BitTorrent address.
    let mut alice2 = subscribed(srv.addr, &a, None).await;
    let mut bob = subscribed(srv.addr, &b, peer("127.0.0.1:6882")).await;
    // Bob again, not subscribed: it is told nothing.
    let mut bob_quiet = Client::authed_at(srv.addr, &b, peer("127.0.0.1:6882")).await;
    let mut carol = subscribed(srv.addr, &c, peer("127.0.0.1:6883")).await;
    let mut dave = subscribed(srv.addr, &d, peer("127.0.0.1:6884")).await;
    let mut ed = subscribed(srv.addr, &e, peer("127.0.0.1:6885")).await;

    let (nowhere, wanted, from_bob, from_ed) =
        (InfoHash([1; 20]), InfoHash([2; 20]), InfoHash([3; 20]), InfoHash([4; 20]));
    // Without an address, a Want is answered and goes nowhere.
    assert_eq!(alice2.req(Request::Want { info_hash: nowhere }).await, Response::Ok);
    assert_eq!(alice.req(Request::Want { info_hash: wanted }).await, Response::Ok);
    let alice_at = "127.0.0.1:6881".parse().unwrap();
    for (who, c) in [("bob", &mut bob), ("carol", &mut carol)] {
        assert_eq!(c.next_wanted().await, (wanted, alice_at), "{who}");
    }
    // Markers sent after alice's Want, in each group: notices of a group
    // arrive in order, so a connection that had been sent alice's would
    // see it before the marker.
    assert_eq!(bob.req(Request::Want { info_hash: from_bob }).await, Response::Ok);
    assert_eq!(ed.req(Request::Want { info_hash: from_ed }).await, Response::Ok);
    let bob_at = "127.0.0.1:6882".parse().unwrap();
    for (who, c) in [("alice", &mut alice), ("alice again", &mut alice2)] {
        assert_eq!(c.next_wanted().await, (from_bob, bob_at), "{who} was sent its own Want");
    }
    assert_eq!(carol.next_wanted().await, (from_bob, bob_at));
    assert_eq!(dave.next_wanted().await, (from_ed, "127.0.0.1:6885".parse().unwrap()), "another group's Want");
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

/// `%XX` for every byte.
fn url_bytes(b: &[u8]) -> String {
    b.iter().map(|c| format!("%{c:02X}")).collect()
}

/// An announce path for `info_hash` from port `port`, plus `extra`.
fn announce(key: &str, info_hash: InfoHash, port: u16, extra: &str) -> String {
    format!(
        "/announce/{key}?info_hash={}&peer_id=-TT0001-{:012}&port={port}&uploaded=0&downloaded=0&compact=1{extra}",
        url_bytes(&info_hash.0),
        port
    )
}

/// The reply to `path`: a bencoded dictionary, HTTP 200.
async fn get(addr: SocketAddr, path: &str) -> Bencode {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    Bencode::decode(&body)
}

fn failure_reason(b: &Bencode) -> Option<String> {
    match b.get("failure reason") {
        Some(Bencode::Bytes(r)) => Some(String::from_utf8_lossy(r).to_string()),
        _ => None,
    }
}

/// The compact IPv4 peers of a reply, as addresses.
fn peers(b: &Bencode) -> Vec<SocketAddr> {
    assert_eq!(failure_reason(b), None, "{b:?}");
    let Some(Bencode::Bytes(p)) = b.get("peers") else { panic!("no peers in {b:?}") };
    assert_eq!(p.len() % 6, 0, "{p:?}");
    p.chunks(6)
        .map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]]))))
        .collect()
}

async fn announce_key(c: &mut Client) -> String {
    match c.req(Request::AnnounceKey).await {
        Response::AnnounceKey { key } => key,
        other => panic!("AnnounceKey: {other:?}"),
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// HTTP announces on the tracker's own port: keys, swarms, numwant,
/// stopped, the group's online members in every reply, and refusals.
#[tokio::test]
async fn http_announces_share_a_swarm_per_info_hash() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut setup, a) = new_group(srv.addr, "alice").await;
    let (_, b) = join(srv.addr, &mut setup, a.group, "bob").await;
    drop(setup);
    // Alice's member is online at 127.0.0.1:6000; bob is offline.
    let mut alice = Client::authed_at(srv.addr, &a, Some(local(6000))).await;
    let key = announce_key(&mut alice).await;
    assert_eq!(key.len(), 32);
    assert_eq!(announce_key(&mut alice).await, key, "the same key each time");
    let ih = InfoHash([0x5a; 20]);

    // Bad keys are refused with a failure reason.
    for bad in ["0123456789abcdef0123456789abcdef", "nothex", ""] {
        let r = get(srv.addr, &announce(bad, ih, 7001, "&left=0")).await;
        assert!(failure_reason(&r).is_some(), "{bad}: {r:?}");
    }

    // The first announcer sees the member; the second sees the member and
    // the first; the first, again, sees the second and not itself.
    assert_eq!(peers(&get(srv.addr, &announce(&key, ih, 7001, "&left=0&event=started")).await), [local(6000)]);
    let r = get(srv.addr, &announce(&key, ih, 7002, "&left=5&event=started")).await;
    assert_eq!(peers(&r), [local(6000), local(7001)]);
    assert_eq!((r.get("complete"), r.get("incomplete")), (Some(&Bencode::Int(1)), Some(&Bencode::Int(1))));
    assert_eq!(r.get("interval"), Some(&Bencode::Int(300)));
    let mut again = peers(&get(srv.addr, &announce(&key, ih, 7001, "&left=0")).await);
    again.sort();
    assert_eq!(again, [local(6000), local(7002)]);
    // The member's own client announcing is not given itself.
    let mine = peers(&get(srv.addr, &announce(&key, ih, 6000, "&left=0")).await);
    assert!(!mine.contains(&local(6000)), "{mine:?}");
    // Another info hash is another swarm.
    assert_eq!(peers(&get(srv.addr, &announce(&key, InfoHash([1; 20]), 7003, "&left=1")).await), [local(6000)]);
    // Bob's key works for the same group and sees the same swarm.
    let mut bob = Client::authed(srv.addr, &b).await;
    let bob_key = announce_key(&mut bob).await;
    assert_ne!(bob_key, key);
    let mut seen = peers(&get(srv.addr, &announce(&bob_key, ih, 7004, "&left=1")).await);
    seen.sort();
    assert_eq!(seen, [local(6000), local(7001), local(7002)], "the member once, though its client announced too");

    // numwant caps the list (the member counts).
    assert_eq!(peers(&get(srv.addr, &announce(&key, ih, 7005, "&left=1&numwant=2")).await).len(), 2);
    assert_eq!(peers(&get(srv.addr, &announce(&key, ih, 7005, "&left=1&numwant=0")).await).len(), 0);

    // stopped removes the announcer from the others' lists.
    get(srv.addr, &announce(&key, ih, 7002, "&left=5&event=stopped")).await;
    let after = peers(&get(srv.addr, &announce(&key, ih, 7001, "&left=0&numwant=200")).await);
    assert!(!after.contains(&local(7002)), "{after:?}");
    assert!(after.contains(&local(7004)), "{after:?}");

    // Malformed queries get a failure reason; the server keeps serving.
    let h = url_bytes(&ih.0);
    for (q, why) in [
        ("?port=7001&left=0".to_string(), "info_hash"),
        (format!("?info_hash={}&port=7001", url_bytes(&ih.0[..19])), "20 bytes"),
        (format!("?info_hash={h}&port=0"), "port"),
        (format!("?info_hash={h}&port=seventy"), "port"),
        (format!("?info_hash={h}"), "port"),
    ] {
        let r = get(srv.addr, &format!("/announce/{key}{q}")).await;
        let reason = failure_reason(&r).unwrap_or_else(|| panic!("{q}: {r:?}"));
        assert!(reason.contains(why), "{q}: {reason}");
    }
    let r = get(srv.addr, &format!("/announce?info_hash={h}&port=7001")).await;
    assert!(failure_reason(&r).is_some_and(|f| f.contains("key")), "{r:?}");
    assert!(peers(&get(srv.addr, &announce(&key, ih, 7001, "&left=0")).await).contains(&local(7004)));
    assert!(matches!(alice.req(Request::ListMembers).await, Response::Members(_)));

    // Bob leaves: his key stops working at once.
    assert_eq!(bob.req(Request::Leave).await, Response::Ok);
    assert!(failure_reason(&get(srv.addr, &announce(&bob_key, ih, 7004, "&left=1")).await).is_some());
    srv.stop().await;
}

/// An announcer that still needs pieces is a `Wanted` for the group's
/// subscribed members, once per (info hash, address) per 30 s; a seeder
/// is not. Keys survive a restart.
#[tokio::test]
async fn a_leeching_announcer_is_wanted_by_the_members() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut setup, a) = new_group(srv.addr, "alice").await;
    let (_, b) = join(srv.addr, &mut setup, a.group, "bob").await;
    drop(setup);
    let mut alice = subscribed(srv.addr, &a, Some(local(6000))).await;
    let mut bob = subscribed(srv.addr, &b, Some(local(6001))).await;
    let key = announce_key(&mut alice).await;
    let (ih, other) = (InfoHash([0x77; 20]), InfoHash([0x78; 20]));

    get(srv.addr, &announce(&key, ih, 7001, "&left=100&event=started")).await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.next_wanted().await, (ih, local(7001)));
    }
    // Again at once, and as a seeder elsewhere: no new notice. A marker
    // (a leecher of another info hash) shows what came before it.
    get(srv.addr, &announce(&key, ih, 7001, "&left=50")).await;
    get(srv.addr, &announce(&key, ih, 7002, "&left=0&event=completed")).await;
    get(srv.addr, &announce(&key, other, 7003, "&left=1")).await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(c.next_wanted().await, (other, local(7003)));
    }
    srv.stop().await;

    let srv = Server::start(dir.path(), TTL).await;
    let r = get(srv.addr, &announce(&key, ih, 7001, "&left=0")).await;
    assert_eq!(failure_reason(&r), None, "the key after a restart: {r:?}");
    srv.stop().await;
}

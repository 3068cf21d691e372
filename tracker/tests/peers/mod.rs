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

async fn export_key(c: &mut Client, ih: InfoHash, ttl_ms: u64, port: u16) -> String {
    match c.req(Request::ExportKey { info_hash: ih, ttl_ms, port }).await {
        Response::AnnounceKey { key, expires } => {
            assert!(expires > 0);
            key
        }
        other => panic!("ExportKey: {other:?}"),
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// HTTP announces with an export key: one info hash, the exporters and
/// the other announcers listed (never the group's members), numwant,
/// stopped, refusals.
#[tokio::test]
async fn an_export_key_lists_the_exporters_and_announcers_of_its_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut setup, a) = new_group(srv.addr, "alice").await;
    let (_, b) = join(srv.addr, &mut setup, a.group, "bob").await;
    drop(setup);
    // Alice's member is online at 127.0.0.1:6000 and exports on 6100; bob
    // is online at 6001 and exports nothing.
    let mut alice = Client::authed_at(srv.addr, &a, Some(local(6000))).await;
    let _bob = Client::authed_at(srv.addr, &b, Some(local(6001))).await;
    let (ih, other) = (InfoHash([0x5a; 20]), InfoHash([0x5b; 20]));
    let key = export_key(&mut alice, ih, 600_000, 6100).await;
    assert_eq!(key.len(), 64);

    // Bad keys are refused with a failure reason; so is this key for
    // another info hash.
    for bad in ["0123456789abcdef0123456789abcdef", "nothex", "", &key[..63]] {
        let r = get(srv.addr, &announce(bad, ih, 7001, "&left=0")).await;
        assert!(failure_reason(&r).is_some(), "{bad}: {r:?}");
    }
    let mut forged = key.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let r = get(srv.addr, &announce(std::str::from_utf8(&forged).unwrap(), ih, 7001, "&left=0")).await;
    assert!(failure_reason(&r).is_some(), "a forged key: {r:?}");
    let r = get(srv.addr, &announce(&key, other, 7001, "&left=0")).await;
    assert!(failure_reason(&r).is_some_and(|f| f.contains("not for this torrent")), "{r:?}");

    // The first announcer sees the exporter (not the members' TLS ports);
    // the second sees the exporter and the first; the first, again, sees
    // the second and not itself.
    assert_eq!(peers(&get(srv.addr, &announce(&key, ih, 7001, "&left=5&event=started")).await), [local(6100)]);
    let r = get(srv.addr, &announce(&key, ih, 7002, "&left=5&event=started")).await;
    assert_eq!(peers(&r), [local(6100), local(7001)]);
    assert_eq!((r.get("complete"), r.get("incomplete")), (Some(&Bencode::Int(1)), Some(&Bencode::Int(2))));
    assert_eq!(r.get("interval"), Some(&Bencode::Int(300)));
    let mut again = peers(&get(srv.addr, &announce(&key, ih, 7001, "&left=0")).await);
    again.sort();
    assert_eq!(again, [local(6100), local(7002)]);
    // numwant caps the list.
    assert_eq!(peers(&get(srv.addr, &announce(&key, ih, 7005, "&left=1&numwant=1")).await).len(), 1);
    assert_eq!(peers(&get(srv.addr, &announce(&key, ih, 7005, "&left=1&numwant=0")).await).len(), 0);
    // stopped removes the announcer from the others' lists.
    get(srv.addr, &announce(&key, ih, 7002, "&left=5&event=stopped")).await;
    let after = peers(&get(srv.addr, &announce(&key, ih, 7001, "&left=0&numwant=200")).await);
    assert!(!after.contains(&local(7002)), "{after:?}");
    assert!(after.contains(&local(6100)) && after.contains(&local(7005)), "{after:?}");

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

    // Unexport: the exporter is no longer listed; the key still answers
    // (the announcers remain) until it expires.
    assert_eq!(alice.req(Request::Unexport { info_hash: ih }).await, Response::Ok);
    let after = peers(&get(srv.addr, &announce(&key, ih, 7001, "&left=0&numwant=200")).await);
    assert!(!after.contains(&local(6100)), "{after:?}");
    srv.stop().await;
}

/// An export key stops working when it expires and when its member
/// leaves; it works after a tracker restart (it is checked, not stored).
#[tokio::test]
async fn export_keys_expire_die_with_their_member_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut setup, a) = new_group(srv.addr, "alice").await;
    let (_, b) = join(srv.addr, &mut setup, a.group, "bob").await;
    drop(setup);
    let mut alice = Client::authed_at(srv.addr, &a, Some(local(6000))).await;
    let mut bob = Client::authed_at(srv.addr, &b, Some(local(6001))).await;
    let ih = InfoHash([0x77; 20]);

    let short = export_key(&mut alice, ih, 300, 6100).await;
    let r = poll("the short export expires", Duration::from_secs(5), || async {
        let r = get(srv.addr, &announce(&short, ih, 7001, "&left=1")).await;
        failure_reason(&r).filter(|f| f.contains("expired"))
    })
    .await;
    assert!(r.contains("export it again"), "{r}");

    let kept = export_key(&mut alice, ih, 600_000, 6100).await;
    let bobs = export_key(&mut bob, ih, 600_000, 6101).await;
    let mut both = peers(&get(srv.addr, &announce(&kept, ih, 7001, "&left=1")).await);
    both.sort();
    assert_eq!(both, [local(6100), local(6101)]);
    assert_eq!(bob.req(Request::Leave).await, Response::Ok);
    assert!(failure_reason(&get(srv.addr, &announce(&bobs, ih, 7002, "&left=1")).await).is_some(), "bob's key after he left");
    assert!(!peers(&get(srv.addr, &announce(&kept, ih, 7002, "&left=1")).await).contains(&local(6101)), "bob's export went with him");
    drop(alice);
    srv.stop().await;

    let srv = Server::start(dir.path(), TTL).await;
    let r = get(srv.addr, &announce(&kept, ih, 7001, "&left=0")).await;
    assert_eq!(failure_reason(&r), None, "the key after a restart: {r:?}");
    srv.stop().await;
}

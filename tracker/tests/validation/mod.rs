//! What a member may not do to the others through the tracker: claim
//! someone else's address, publish a torrent that is not the file, share
//! setuid bits or names with control characters, flood the log with `Have`.

use std::time::Duration;

use crate::common::*;
use titorrent_tracker::proto::*;

const TTL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_members_address_is_the_ip_it_connects_from() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut setup, a) = new_group(srv.addr, "alice").await;
    let (_, b) = join(srv.addr, &mut setup, a.group, "bob").await;
    // Bob claims a victim's address; others would dial it.
    let mut bob = Client::authed_at(srv.addr, &b, Some("203.0.113.9:7000".parse().unwrap())).await;
    let Response::Members(ms) = bob.req(Request::ListMembers).await else { panic!() };
    let bob_info = ms.iter().find(|m| m.id == b.member).unwrap();
    assert_eq!(bob_info.peer_addr, Some("127.0.0.1:7000".parse().unwrap()), "the port is his, the IP the connection's");
    srv.stop().await;
}

#[tokio::test]
async fn a_published_torrent_must_be_the_file_it_claims() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, _) = new_group(srv.addr, "alice").await;
    let (f, lease) = alice.create_file(FileId::ROOT, "small.txt", FileKind::File, true).await;
    let lease = lease.unwrap().id;
    let publish = |size, info_hash, torrent| Request::Publish {
        file: f.id,
        base: Version(0),
        lease,
        size,
        mtime: 1,
        info_hash: Some(info_hash),
        torrent,
        keep_lock: true,
    };
    let refused = |r: Response, what: &str| match r {
        Response::Error(ProtoError::BadRequest(why)) => assert!(why.contains(what), "{why}"),
        other => panic!("expected a refusal naming {what:?}, got {other:?}"),
    };
    // A 10 TiB torrent for a 5-byte file, and a 10 TiB file.
    let ten_tib = 10u64 << 40;
    let (ih, t) = torrent_of(b'x', 5);
    refused(alice.req(publish(ten_tib, ih, t)).await, "over the limit");
    refused(alice.req(publish(5, InfoHash([1; 20]), fake_torrent(b'x').1)).await, "SHA-1");
    // Another file's torrent under this one's size.
    let (ih, t) = torrent_of(b'y', 6);
    refused(alice.req(publish(5, ih, t)).await, "not the file's size");
    // Piece length out of bounds (1 byte pieces).
    let info = b"d6:lengthi5e4:name1:z12:piece lengthi1e6:pieces100:".iter().copied().chain([0u8; 100]).chain(*b"e").collect::<Vec<u8>>();
    let ih = InfoHash(sha1_of(&info));
    let t = [&b"d4:info"[..], &info, b"e"].concat();
    refused(alice.req(publish(5, ih, t)).await, "piece length");
    refused(alice.req(publish(5, InfoHash([2; 20]), b"not bencode".to_vec())).await, "torrent refused");
    // Nothing was published; the real one is.
    let (ih, t) = fake_torrent(b'x');
    let Response::Published(e) = alice.req(publish(5, ih, t)).await else { panic!() };
    assert_eq!((e.version, e.size), (Version(1), 5));
    srv.stop().await;
}

fn sha1_of(b: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(b).into()
}

#[tokio::test]
async fn setuid_is_not_shared_and_setgid_and_sticky_only_on_directories() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, _) = new_group(srv.addr, "alice").await;
    let req = Request::CreateFile { parent: FileId::ROOT, name: "run".into(), kind: FileKind::File, mode: 0o5755, lock: false, owner: Default::default() };
    let Response::File { entry, .. } = alice.req(req).await else { panic!() };
    assert_eq!(entry.mode, 0o755);
    let req = Request::CreateFile { parent: FileId::ROOT, name: "tmp".into(), kind: FileKind::Dir, mode: 0o7777, lock: false, owner: Default::default() };
    let Response::File { entry: d, .. } = alice.req(req).await else { panic!() };
    assert_eq!(d.mode, 0o3777, "a directory keeps its setgid and sticky bits");
    for mode in [0o2755, 0o6777, 0o1700] {
        let r = alice.req(Request::SetAttr { file: entry.id, mode: Some(mode), mtime: None, owner: None }).await;
        let Response::File { entry: e, .. } = r else { panic!("{r:?}") };
        assert_eq!(e.mode, mode & 0o777, "{mode:o}");
        let r = alice.req(Request::SetAttr { file: d.id, mode: Some(mode), mtime: None, owner: None }).await;
        let Response::File { entry: e, .. } = r else { panic!("{r:?}") };
        assert_eq!(e.mode, mode & 0o3777, "{mode:o} on a directory");
    }
    srv.stop().await;
}

#[tokio::test]
async fn owners_are_names_checked_kept_and_their_change_moves_the_ctime() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, _) = new_group(srv.addr, "alice").await;
    let ana = Owner { user: "ana".into(), group: "staff".into() };
    let req = Request::CreateFile { parent: FileId::ROOT, name: "f".into(), kind: FileKind::File, mode: 0o644, lock: false, owner: ana.clone() };
    let Response::File { entry, .. } = alice.req(req).await else { panic!() };
    assert_eq!(entry.owner, ana);
    assert_eq!(entry.ctime, entry.mtime, "a new entry's ctime is its creation");
    let bo = Owner { user: "bo".into(), group: "staff".into() };
    let r = alice.req(Request::SetAttr { file: entry.id, mode: None, mtime: None, owner: Some(bo.clone()) }).await;
    let Response::File { entry: e, .. } = r else { panic!("{r:?}") };
    assert_eq!((e.owner.clone(), e.mtime), (bo.clone(), entry.mtime), "chown keeps the mtime");
    assert!(e.ctime >= entry.ctime && e.ctime > 0, "chown sets the ctime to now");
    for bad in ["a\nb".to_string(), "x:y".into(), "a/b".into(), "u".repeat(65)] {
        let o = Owner { user: bad.clone(), group: "g".into() };
        let r = alice.req(Request::SetAttr { file: entry.id, mode: None, mtime: None, owner: Some(o.clone()) }).await;
        assert!(matches!(r, Response::Error(ProtoError::BadRequest(_))), "{bad:?}: {r:?}");
        let req = Request::CreateFile { parent: FileId::ROOT, name: "g".into(), kind: FileKind::File, mode: 0o644, lock: false, owner: o };
        assert!(matches!(alice.req(req).await, Response::Error(ProtoError::BadRequest(_))), "{bad:?}");
    }
    let r = alice.req(Request::ListFiles).await;
    let Response::Files { files, .. } = r else { panic!("{r:?}") };
    assert_eq!(files.iter().find(|f| f.id == entry.id).map(|f| f.owner.clone()), Some(bo));
    srv.stop().await;
}

#[tokio::test]
async fn names_with_control_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, _) = new_group(srv.addr, "alice").await;
    let (f, _) = alice.create_file(FileId::ROOT, "plain.txt", FileKind::File, false).await;
    for name in ["\x1b]0;pwned\x07", "a\nb", "tab\t", "bell\x07", "del\x7f", "c1\u{9b}"] {
        let req = Request::CreateFile { parent: FileId::ROOT, name: name.into(), kind: FileKind::File, mode: 0o644, lock: false, owner: Default::default() };
        assert!(matches!(alice.req(req).await, Response::Error(ProtoError::InvalidName(_))), "create {name:?}");
        let req = Request::Rename { file: f.id, new_parent: FileId::ROOT, new_name: name.into(), replace: false };
        assert!(matches!(alice.req(req).await, Response::Error(ProtoError::InvalidName(_))), "rename to {name:?}");
    }
    let req = Request::CreateFile { parent: FileId::ROOT, name: "ünïcödé ok.txt".into(), kind: FileKind::File, mode: 0o644, lock: false, owner: Default::default() };
    assert!(matches!(alice.req(req).await, Response::File { .. }));
    srv.stop().await;
}

#[tokio::test]
async fn a_repeated_have_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a) = new_group(srv.addr, "alice").await;
    let (mut bob, _) = join(srv.addr, &mut alice, a.group, "bob").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    assert!(matches!(alice.req(Request::Subscribe { from: None }).await, Response::Snapshot { .. }));
    for _ in 0..200 {
        assert_eq!(bob.req(Request::Have { file: f.id, version: Version(0) }).await, Response::Ok);
    }
    // A marker after them: everything before it has been pushed.
    let (marker, _) = bob.create_file(FileId::ROOT, "marker", FileKind::File, false).await;
    let evs = alice.events_until(|e| matches!(&e.kind, EventKind::FileCreated(x) if x.id == marker.id)).await;
    let haves = evs.iter().filter(|e| matches!(e.kind, EventKind::Have { .. })).count();
    assert_eq!(haves, 1, "{evs:?}");
    srv.stop().await;
}

//! The requests protocol version 2 added, over real TCP: delete, rename,
//! set attributes, leave, kept versions and restore, explicit locks and
//! unlock by file, reading the log and its retention; and all of it across
//! a reopen of the data dir.

use std::time::Duration;

use crate::common::*;
use titorrent_tracker::proto::*;
use titorrent_tracker::server::TrackerConfig;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);

fn assert_contiguous(evs: &[Event]) {
    for w in evs.windows(2) {
        assert_eq!(
            w[1].seq.0,
            w[0].seq.0 + 1,
            "gap or duplicate in {:?}",
            evs.iter().map(|e| e.seq.0).collect::<Vec<_>>()
        );
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn err(e: ProtoError) -> Response {
    Response::Error(e)
}

fn is_locked_by(r: &Response, name: &str) -> bool {
    matches!(r, Response::Error(ProtoError::Locked(h)) if h.member_name == name)
}

/// Locks (unless `lease` is given), publishes content `tag` on `base`.
async fn publish(c: &mut Client, file: FileId, base: u64, lease: Option<LeaseId>, tag: u8) -> FileEntry {
    let (keep_lock, lease) = match lease {
        Some(l) => (true, l),
        None => (false, c.lock(file).await.expect("lock to publish").id),
    };
    let (ih, torrent) = torrent_of(tag, 100 + tag as u64);
    let req = Request::Publish {
        file,
        base: Version(base),
        lease,
        size: 100 + tag as u64,
        mtime: 1000 + base,
        info_hash: Some(ih),
        torrent,
        keep_lock,
    };
    match c.req(req).await {
        Response::Published(e) => e,
        other => panic!("publish: {other:?}"),
    }
}

async fn files(c: &mut Client) -> Vec<FileEntry> {
    match c.req(Request::ListFiles).await {
        Response::Files { files, .. } => files,
        other => panic!("{other:?}"),
    }
}

async fn current_seq(c: &mut Client) -> Seq {
    match c.req(Request::ListFiles).await {
        Response::Files { seq, .. } => seq,
        other => panic!("{other:?}"),
    }
}

async fn versions(c: &mut Client, file: FileId) -> Vec<VersionInfo> {
    match c.req(Request::ListVersions { file }).await {
        Response::Versions(v) => v,
        other => panic!("{other:?}"),
    }
}

async fn read_log(c: &mut Client, after: Option<Seq>, limit: u32) -> (Vec<Event>, bool) {
    match c.req(Request::ReadLog { after, limit }).await {
        Response::Log { events, more } => (events, more),
        other => panic!("{other:?}"),
    }
}

/// Reads the whole log until `pred` holds, polling until a deadline.
async fn log_until(c: &mut Client, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (evs, _) = read_log(c, None, 0).await;
        if pred(&evs) {
            return evs;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A second connection as `cred`, subscribed from now on.
async fn watcher(addr: std::net::SocketAddr, cred: &Credential) -> Client {
    let mut w = Client::authed(addr, cred).await;
    let r = w.req(Request::Subscribe { from: None }).await;
    assert!(matches!(r, Response::Snapshot { .. }), "{r:?}");
    w
}

/// An answer to a change says the seq of its commit's last event, so a
/// member can order it among the events; other answers say none.
#[tokio::test]
async fn answers_to_changes_say_the_seq_of_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let mut w = watcher(srv.addr, &a_cred).await;
    let (d, _) = alice.create_file(FileId::ROOT, "d", FileKind::Dir, false).await;
    let created = alice.last_seq.expect("a create says its seq");
    let ev = w.events_until(|e| matches!(e.kind, EventKind::FileCreated(_))).await.pop().unwrap();
    assert_eq!(ev.seq, created);
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let r = alice.req(Request::Rename { file: f.id, new_parent: d.id, new_name: "g".into(), replace: false }).await;
    assert_eq!(r, Response::Ok);
    let renamed = alice.last_seq.expect("a rename says its seq");
    let ev = w.events_until(|e| matches!(e.kind, EventKind::FileRenamed { .. })).await.pop().unwrap();
    assert_eq!(ev.seq, renamed);
    assert!(renamed > created);
    assert_eq!(alice.req(Request::Delete { file: f.id }).await, Response::Ok);
    let deleted = alice.last_seq.expect("a delete says its seq");
    let ev = w.events_until(|e| matches!(e.kind, EventKind::FileDeleted { .. })).await.pop().unwrap();
    assert_eq!(ev.seq, deleted);
    alice.req(Request::ListMembers).await;
    assert_eq!(alice.last_seq, None, "a question changes nothing");
}

#[tokio::test]
async fn delete_files_and_empty_directories() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, _) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (d, _) = alice.create_file(FileId::ROOT, "docs", FileKind::Dir, false).await;
    let (f, _) = alice.create_file(d.id, "f.txt", FileKind::File, false).await;
    publish(&mut alice, f.id, 0, None, b'a').await;
    let mut w = watcher(srv.addr, &a_cred).await;

    assert!(matches!(
        alice.req(Request::Delete { file: FileId::ROOT }).await,
        Response::Error(ProtoError::BadRequest(_))
    ));
    assert_eq!(alice.req(Request::Delete { file: d.id }).await, err(ProtoError::NotEmpty));
    assert_eq!(alice.req(Request::Delete { file: FileId(999) }).await, err(ProtoError::NoSuchFile));
    // Locked by bob: refused, naming him.
    let bl = bob.lock(f.id).await.unwrap();
    let r = alice.req(Request::Delete { file: f.id }).await;
    assert!(is_locked_by(&r, "bob"), "{r:?}");
    assert_eq!(bob.req(Request::Unlock { lease: bl.id }).await, Response::Ok);

    // Alice's own lock does not stand in the way and ends with the file.
    let al = alice.lock(f.id).await.unwrap();
    assert_eq!(alice.req(Request::Delete { file: f.id }).await, Response::Ok);
    let evs = w.events_until(|e| matches!(e.kind, EventKind::FileDeleted { .. })).await;
    let tail = &evs[evs.len() - 2..];
    assert_contiguous(tail);
    assert_eq!(tail[0].kind, EventKind::Unlocked { file: f.id });
    assert_eq!(tail[0].by, a_cred.member);
    assert_eq!(tail[1].kind, EventKind::FileDeleted { file: f.id, parent: d.id, name: "f.txt".into() });
    assert_eq!(alice.req(Request::Renew { lease: al.id }).await, err(ProtoError::NoLease));
    assert_eq!(alice.req(Request::GetTorrent { file: f.id, version: Version(1) }).await, err(ProtoError::NoSuchFile));
    assert_eq!(bob.lock(f.id).await, Err(ProtoError::NoSuchFile));
    assert_eq!(alice.req(Request::Delete { file: f.id }).await, err(ProtoError::NoSuchFile));

    // Now empty, the directory goes; its name is free again.
    assert_eq!(bob.req(Request::Delete { file: d.id }).await, Response::Ok);
    let evs = w.events_until(|e| matches!(e.kind, EventKind::FileDeleted { .. })).await;
    assert_eq!(evs.last().unwrap().by, bob_id(&mut bob).await);
    assert_eq!(files(&mut alice).await.len(), 1);
    let (again, _) = alice.create_file(FileId::ROOT, "docs", FileKind::File, false).await;
    assert!(again.id > f.id, "file ids are not reused");
    srv.stop().await;
}

async fn bob_id(bob: &mut Client) -> MemberId {
    let Response::Members(ms) = bob.req(Request::ListMembers).await else { panic!() };
    ms.iter().find(|m| m.name == "bob").unwrap().id
}

#[tokio::test]
async fn rename_moves_refuses_and_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, _) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (a, _) = alice.create_file(FileId::ROOT, "a", FileKind::Dir, false).await;
    let (b, _) = alice.create_file(a.id, "b", FileKind::Dir, false).await;
    let (x, _) = alice.create_file(a.id, "x", FileKind::File, false).await;
    let (y, _) = alice.create_file(FileId::ROOT, "y", FileKind::File, false).await;
    let (z, _) = alice.create_file(FileId::ROOT, "z", FileKind::File, false).await;
    let (e, _) = alice.create_file(FileId::ROOT, "e", FileKind::Dir, false).await;
    let (e2, _) = alice.create_file(FileId::ROOT, "e2", FileKind::Dir, false).await;
    let y1 = publish(&mut alice, y.id, 0, None, b'y').await;
    publish(&mut alice, z.id, 0, None, b'z').await;
    let mut w = watcher(srv.addr, &a_cred).await;
    let rename = |file: FileId, new_parent: FileId, new_name: &str, replace: bool| Request::Rename {
        file,
        new_parent,
        new_name: new_name.into(),
        replace,
    };

    // A plain move and rename.
    assert_eq!(alice.req(rename(x.id, FileId::ROOT, "x2", false)).await, Response::Ok);
    let evs = w.events_until(|e| matches!(e.kind, EventKind::FileRenamed { .. })).await;
    let EventKind::FileRenamed { entry, old_parent, old_name } = &evs.last().unwrap().kind else { panic!() };
    assert_eq!((entry.id, entry.parent, entry.name.as_str()), (x.id, FileId::ROOT, "x2"));
    assert_eq!((*old_parent, old_name.as_str(), entry.version), (a.id, "x", x.version));
    let listed = files(&mut alice).await;
    assert!(listed.contains(entry));

    // Refusals.
    for bad in ["", "..", "a/b"] {
        let r = alice.req(rename(x.id, FileId::ROOT, bad, false)).await;
        assert!(matches!(r, Response::Error(ProtoError::InvalidName(_))), "{bad:?}: {r:?}");
    }
    assert_eq!(alice.req(rename(x.id, y.id, "n", false)).await, err(ProtoError::NotADirectory));
    assert_eq!(alice.req(rename(x.id, FileId(999), "n", false)).await, err(ProtoError::NoSuchFile));
    assert_eq!(alice.req(rename(FileId(999), FileId::ROOT, "n", false)).await, err(ProtoError::NoSuchFile));
    assert!(matches!(
        alice.req(rename(FileId::ROOT, a.id, "r", false)).await,
        Response::Error(ProtoError::BadRequest(_))
    ));
    for into in [a.id, b.id] {
        let r = alice.req(rename(a.id, into, "loop", false)).await;
        assert!(matches!(r, Response::Error(ProtoError::BadRequest(_))), "{r:?}");
    }
    assert_eq!(alice.req(rename(y.id, FileId::ROOT, "z", false)).await, err(ProtoError::AlreadyExists));
    assert_eq!(alice.req(rename(y.id, FileId::ROOT, "e", true)).await, err(ProtoError::IsADirectory));
    assert_eq!(alice.req(rename(e.id, FileId::ROOT, "z", true)).await, err(ProtoError::NotADirectory));
    assert_eq!(alice.req(rename(e.id, FileId::ROOT, "a", true)).await, err(ProtoError::NotEmpty));
    // Locked by another member: the file itself, or the target it would replace.
    let bl = bob.lock(y.id).await.unwrap();
    assert!(is_locked_by(&alice.req(rename(y.id, FileId::ROOT, "y2", false)).await, "bob"));
    assert_eq!(bob.req(Request::Unlock { lease: bl.id }).await, Response::Ok);
    let bl = bob.lock(z.id).await.unwrap();
    assert!(is_locked_by(&alice.req(rename(y.id, FileId::ROOT, "z", true)).await, "bob"));
    assert_eq!(bob.req(Request::Unlock { lease: bl.id }).await, Response::Ok);
    // Onto itself: nothing happens.
    let before = current_seq(&mut alice).await;
    assert_eq!(alice.req(rename(y.id, FileId::ROOT, "y", true)).await, Response::Ok);
    assert_eq!(current_seq(&mut alice).await, before);

    // Replacing a file: one step, seen as FileDeleted then FileRenamed with
    // consecutive seqs. Alice's lock on y moves with it.
    let al = alice.lock(y.id).await.unwrap();
    assert_eq!(alice.req(rename(y.id, FileId::ROOT, "z", true)).await, Response::Ok);
    let evs = w.events_until(|e| matches!(e.kind, EventKind::FileRenamed { .. })).await;
    let tail = &evs[evs.len() - 2..];
    assert_contiguous(tail);
    assert_eq!(tail[0].kind, EventKind::FileDeleted { file: z.id, parent: FileId::ROOT, name: "z".into() });
    let EventKind::FileRenamed { entry, old_name, .. } = &tail[1].kind else { panic!("{:?}", tail[1]) };
    assert_eq!((entry.id, entry.name.as_str(), old_name.as_str()), (y.id, "z", "y"));
    assert_eq!((entry.version, entry.info_hash), (y1.version, y1.info_hash), "a rename makes no version");
    let listed = files(&mut alice).await;
    assert!(!listed.iter().any(|f| f.id == z.id || f.name == "y"));
    assert_eq!(alice.req(Request::GetTorrent { file: z.id, version: Version(1) }).await, err(ProtoError::NoSuchFile));
    assert!(matches!(alice.req(Request::GetTorrent { file: y.id, version: Version(1) }).await, Response::Torrent(_)));
    assert!(is_locked_by(&Response::Error(bob.lock(y.id).await.unwrap_err()), "alice"));
    assert_eq!(alice.req(Request::Unlock { lease: al.id }).await, Response::Ok);

    // A directory over an empty directory; it takes its children along.
    assert_eq!(alice.req(rename(a.id, FileId::ROOT, "e2", true)).await, Response::Ok);
    let evs = w.events_until(|e| matches!(e.kind, EventKind::FileRenamed { .. })).await;
    let tail = &evs[evs.len() - 2..];
    assert_contiguous(tail);
    assert!(matches!(tail[0].kind, EventKind::FileDeleted { file, .. } if file == e2.id));
    let listed = files(&mut alice).await;
    assert!(listed.iter().any(|f| f.id == a.id && f.name == "e2"));
    assert!(listed.iter().any(|f| f.id == b.id && f.parent == a.id));
    // Deeper: b moves to the root; a is then empty and can be deleted.
    assert_eq!(bob.req(rename(b.id, FileId::ROOT, "b", false)).await, Response::Ok);
    assert_eq!(alice.req(Request::Delete { file: a.id }).await, Response::Ok);
    srv.stop().await;
}

#[tokio::test]
async fn set_attr_shares_mode_and_mtime_without_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, _) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let (d, _) = alice.create_file(FileId::ROOT, "d", FileKind::Dir, false).await;
    let mut w = watcher(srv.addr, &a_cred).await;
    let set = |file, mode, mtime| Request::SetAttr { file, mode, mtime, owner: None };

    let Response::File { entry, lease: None } = alice.req(set(f.id, Some(0o100600), None)).await else { panic!() };
    assert_eq!((entry.mode, entry.mtime, entry.version), (0o600, f.mtime, f.version), "permission bits only");
    let evs = w.events_until(|e| matches!(e.kind, EventKind::AttrChanged(_))).await;
    assert_eq!(evs.last().unwrap().kind, EventKind::AttrChanged(entry.clone()));
    let Response::File { entry, .. } = bob.req(set(f.id, None, Some(42))).await else { panic!() };
    assert_eq!((entry.mode, entry.mtime, entry.author), (0o600, 42, a_cred.member));
    let Response::File { entry: dir_entry, .. } = alice.req(set(d.id, Some(0o700), Some(7))).await else { panic!() };
    assert_eq!((dir_entry.mode, dir_entry.mtime), (0o700, 7));
    // Nothing to change: same entry, no event.
    let before = current_seq(&mut alice).await;
    assert_eq!(alice.req(set(f.id, None, None)).await, Response::File { entry: entry.clone(), lease: None });
    assert_eq!(current_seq(&mut alice).await, before);
    assert!(files(&mut bob).await.contains(&entry));

    // While bob holds the lock only he may change them.
    let bl = bob.lock(f.id).await.unwrap();
    assert!(is_locked_by(&alice.req(set(f.id, Some(0o644), None)).await, "bob"));
    assert!(matches!(bob.req(set(f.id, Some(0o640), None)).await, Response::File { .. }));
    assert_eq!(bob.req(Request::Unlock { lease: bl.id }).await, Response::Ok);
    assert_eq!(alice.req(set(FileId(999), Some(0o644), None)).await, err(ProtoError::NoSuchFile));
    srv.stop().await;
}

#[tokio::test]
async fn leave_revokes_the_credential_and_releases_locks() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let mut bob2 = Client::authed(srv.addr, &b_cred).await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let (g, _) = alice.create_file(FileId::ROOT, "g", FileKind::File, false).await;
    bob.lock(f.id).await.unwrap();
    assert!(matches!(bob2.req(Request::LockExplicit { file: g.id, ttl_ms: 0 }).await, Response::Locked(_)));
    let mut w = watcher(srv.addr, &a_cred).await;

    assert_eq!(bob.req(Request::Leave).await, Response::Ok);
    // Others see the locks go, then bob.
    let evs = w.events_until(|e| matches!(e.kind, EventKind::MemberLeft { .. })).await;
    let tail = &evs[evs.len() - 3..];
    assert_contiguous(tail);
    let mut unlocked: Vec<_> = tail[..2]
        .iter()
        .map(|e| match e.kind {
            EventKind::Unlocked { file } => (file, e.by),
            ref other => panic!("{other:?}"),
        })
        .collect();
    unlocked.sort();
    assert_eq!(unlocked, [(f.id, b_cred.member), (g.id, b_cred.member)]);
    assert_eq!(tail[2].kind, EventKind::MemberLeft { member: b_cred.member });
    assert!(alice.lock(f.id).await.is_ok());
    assert!(alice.lock(g.id).await.is_ok());
    let Response::Members(ms) = alice.req(Request::ListMembers).await else { panic!() };
    assert_eq!(ms.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["alice"]);

    // The leaving connection is no longer authenticated; bob's other one is
    // closed with a Goodbye; the credential no longer works.
    assert_eq!(bob.req(Request::ListFiles).await, err(ProtoError::NotAuthenticated));
    assert_eq!(bob.req(Request::Leave).await, err(ProtoError::NotAuthenticated));
    assert!(matches!(bob2.frame().await, Some(ServerFrame::Goodbye { .. })));
    assert_eq!(bob2.frame().await, None);
    let mut again = Client::connect_as(srv.addr, b_cred.identity.clone()).await;
    let r = again.req(Request::Authenticate { group: b_cred.group, member: b_cred.member, peer_addr: None }).await;
    assert_eq!(r, err(ProtoError::NotAuthenticated));
    srv.stop().await;

    // Still gone after a reopen, and bob's id (the highest) is not reused.
    let srv = Server::start(dir.path(), TTL).await;
    let mut again = Client::connect_as(srv.addr, b_cred.identity.clone()).await;
    let r = again.req(Request::Authenticate { group: b_cred.group, member: b_cred.member, peer_addr: None }).await;
    assert_eq!(r, err(ProtoError::NotAuthenticated));
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    let (_, c_cred) = join(srv.addr, &mut alice, a_cred.group, "carol").await;
    assert!(c_cred.member > b_cred.member);
    let Response::Members(ms) = alice.req(Request::ListMembers).await else { panic!() };
    assert_eq!(ms.len(), 2);
    srv.stop().await;
}

#[tokio::test]
async fn the_last_k_versions_are_kept_with_their_torrents() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |k| TrackerConfig { keep_versions: k, ..config(dir.path(), TTL) };
    let srv = Server::start_cfg(cfg(3)).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let (d, _) = alice.create_file(FileId::ROOT, "d", FileKind::Dir, false).await;

    // A new file has version 0, empty.
    let vs = versions(&mut bob, f.id).await;
    assert_eq!(vs.len(), 1);
    assert_eq!((vs[0].version, vs[0].size, vs[0].info_hash, vs[0].author), (Version(0), 0, None, a_cred.member));
    let t0 = now();
    for (base, tag) in [(0u64, b'1'), (1, b'2'), (2, b'3'), (3, b'4'), (4, b'5')] {
        let c = if base % 2 == 0 { &mut alice } else { &mut bob };
        publish(c, f.id, base, None, tag).await;
    }
    let vs = versions(&mut bob, f.id).await;
    assert_eq!(vs.iter().map(|v| v.version.0).collect::<Vec<_>>(), [5, 4, 3], "newest first, K of them");
    assert_eq!(vs[0].info_hash, Some(torrent_of(b'5', 100 + 53).0));
    assert_eq!((vs[0].size, vs[0].mtime, vs[0].author), (100 + b'5' as u64, 1004, a_cred.member));
    assert_eq!(vs[1].author, b_cred.member);
    assert!(vs.iter().all(|v| v.at >= t0 && v.at <= now()));
    for v in 3..=5u64 {
        let r = bob.req(Request::GetTorrent { file: f.id, version: Version(v) }).await;
        assert_eq!(r, Response::Torrent(torrent_of(b'0' + v as u8, 100 + 48 + v).1), "v{v}");
    }
    for v in 0..=2u64 {
        let r = bob.req(Request::GetTorrent { file: f.id, version: Version(v) }).await;
        assert_eq!(r, err(ProtoError::NoTorrent), "v{v}");
    }
    // Pushed out means gone for restore too.
    let r = bob.req(Request::Restore { file: f.id, version: Version(2), lease: None }).await;
    assert_eq!(r, err(ProtoError::NoTorrent));
    assert_eq!(bob.req(Request::ListVersions { file: d.id }).await, err(ProtoError::IsADirectory));
    assert_eq!(bob.req(Request::ListVersions { file: FileId(999) }).await, err(ProtoError::NoSuchFile));
    drop((alice, bob));
    srv.stop().await;

    // The same after a reopen; a smaller K drops the excess at open.
    let srv = Server::start_cfg(cfg(3)).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    assert_eq!(versions(&mut alice, f.id).await, vs);
    drop(alice);
    srv.stop().await;
    let srv = Server::start_cfg(cfg(2)).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    assert_eq!(versions(&mut alice, f.id).await, vs[..2]);
    let r = alice.req(Request::GetTorrent { file: f.id, version: Version(3) }).await;
    assert_eq!(r, err(ProtoError::NoTorrent));
    publish(&mut alice, f.id, 5, None, b'6').await;
    let vs = versions(&mut alice, f.id).await;
    assert_eq!(vs.iter().map(|v| v.version.0).collect::<Vec<_>>(), [6, 5]);
    srv.stop().await;
}

#[tokio::test]
async fn restore_makes_an_old_version_current_again() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let v1 = publish(&mut alice, f.id, 0, None, b'a').await;
    let v2 = publish(&mut alice, f.id, 1, None, b'b').await;
    let mut w = watcher(srv.addr, &a_cred).await;
    let restore = |version, lease| Request::Restore { file: f.id, version: Version(version), lease };

    // Bob restores v1: v3 has v1's content and torrent, bob as author.
    let t0 = now();
    let Response::Published(v3) = bob.req(restore(1, None)).await else { panic!() };
    assert_eq!((v3.version, v3.size, v3.info_hash, v3.author), (Version(3), v1.size, v1.info_hash, b_cred.member));
    assert!(v3.mtime >= t0);
    let evs = w.events_until(|e| matches!(e.kind, EventKind::Restored { .. })).await;
    assert_eq!(evs.last().unwrap().kind, EventKind::Restored { entry: v3.clone(), from: Version(1) });
    assert_eq!(evs.last().unwrap().by, b_cred.member);
    let r = alice.req(Request::GetTorrent { file: f.id, version: Version(3) }).await;
    assert_eq!(r, Response::Torrent(torrent_of(b'a', 100 + 97).1));
    let vs = versions(&mut alice, f.id).await;
    assert_eq!(
        vs.iter().map(|v| (v.version.0, v.info_hash)).collect::<Vec<_>>(),
        [(3, v1.info_hash), (2, v2.info_hash), (1, v1.info_hash), (0, None)]
    );
    assert!(files(&mut alice).await.contains(&v3));

    // The lock: free, or the caller's under the lease it names.
    let bl = bob.lock(f.id).await.unwrap();
    assert!(is_locked_by(&alice.req(restore(2, None)).await, "bob"));
    assert!(is_locked_by(&bob.req(restore(2, None)).await, "bob"), "the holder names its lease");
    assert_eq!(alice.req(restore(2, Some(bl.id))).await, err(ProtoError::NoLease));
    assert_eq!(bob.req(restore(2, Some(LeaseId(12345)))).await, err(ProtoError::NoLease));
    let Response::Published(v4) = bob.req(restore(2, Some(bl.id))).await else { panic!() };
    assert_eq!((v4.version, v4.info_hash), (Version(4), v2.info_hash));
    // Bob still holds the lock and can go on editing from v4.
    assert!(is_locked_by(&Response::Error(alice.lock(f.id).await.unwrap_err()), "bob"));
    let v5 = publish(&mut bob, f.id, 4, Some(bl.id), b'c').await;
    assert_eq!(v5.version, Version(5));
    // A stale base after a restore is refused as usual.
    let (ih, t) = fake_torrent(b'd');
    let stale = Request::Publish {
        file: f.id,
        base: Version(3),
        lease: bl.id,
        size: 1,
        mtime: 1,
        info_hash: Some(ih),
        torrent: t,
        keep_lock: true,
    };
    assert!(matches!(bob.req(stale).await, Response::Error(ProtoError::StaleVersion { .. })));
    assert_eq!(bob.req(Request::Unlock { lease: bl.id }).await, Response::Ok);

    // Restoring the empty version 0 empties the file; unknown versions are refused.
    let Response::Published(v6) = alice.req(restore(0, None)).await else { panic!() };
    assert_eq!((v6.version, v6.size, v6.info_hash), (Version(6), 0, None));
    assert_eq!(alice.req(restore(99, None)).await, err(ProtoError::NoTorrent));
    assert_eq!(
        alice.req(Request::Restore { file: FileId(999), version: Version(1), lease: None }).await,
        err(ProtoError::NoSuchFile)
    );
    assert_eq!(
        alice.req(Request::Restore { file: FileId::ROOT, version: Version(0), lease: None }).await,
        err(ProtoError::IsADirectory)
    );
    srv.stop().await;
}

#[tokio::test]
async fn explicit_locks_outlast_the_lease_ttl_until_unlocked() {
    let ttl = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), ttl).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, _) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let (g, _) = alice.create_file(FileId::ROOT, "g", FileKind::File, false).await;
    let (h, _) = alice.create_file(FileId::ROOT, "h", FileKind::File, false).await;
    let (k, _) = alice.create_file(FileId::ROOT, "k", FileKind::File, false).await;
    let mut w = watcher(srv.addr, &a_cred).await;
    let week = 7 * 24 * 3600 * 1000u64;

    let t0 = now();
    let Response::Locked(explicit) = alice.req(Request::LockExplicit { file: f.id, ttl_ms: 0 }).await else { panic!() };
    assert!(explicit.expires >= t0 + week && explicit.expires <= now() + week, "0 means a week");
    let Response::Locked(capped) = alice.req(Request::LockExplicit { file: h.id, ttl_ms: u64::MAX }).await else {
        panic!()
    };
    assert!(capped.expires <= now() + week, "capped at a week");
    let Response::Locked(short) = alice.req(Request::LockExplicit { file: k.id, ttl_ms: 200 }).await else { panic!() };
    assert!(short.expires <= now() + 200);
    let ordinary = alice.lock(g.id).await.unwrap();
    let evs = w.events_until(|e| matches!(e.kind, EventKind::Locked { file, .. } if file == g.id)).await;
    assert!(evs.iter().any(
        |e| matches!(&e.kind, EventKind::Locked { file, holder } if *file == f.id && holder.expires == explicit.expires)
    ));
    // Both explicit ones are refused to others like any lock, and to alice.
    assert!(is_locked_by(&bob.req(Request::LockExplicit { file: f.id, ttl_ms: 0 }).await, "alice"));
    assert!(is_locked_by(&alice.req(Request::LockExplicit { file: f.id, ttl_ms: 0 }).await, "alice"));

    // Without renewal, the ordinary lease and the short explicit one run
    // out (the sweeper releases them) while the week-long one holds.
    let mut expired = Vec::new();
    while expired.len() < 2 {
        let e = w.next_event().await;
        if let EventKind::Unlocked { file } = e.kind {
            assert_eq!(e.by, MemberId(0));
            expired.push(file);
        }
    }
    expired.sort();
    assert_eq!(expired, [g.id, k.id]);
    assert!(now() >= ordinary.expires);
    assert!(is_locked_by(&Response::Error(bob.lock(f.id).await.unwrap_err()), "alice"));
    // Renewing an explicit lock never shortens it.
    let Response::Locked(renewed) = alice.req(Request::Renew { lease: explicit.id }).await else { panic!() };
    assert_eq!(renewed.expires, explicit.expires);

    // Its holder writes under it (an open for write in her mount): Lock
    // hands back the explicit lease; publishing and closing keep it held.
    let under = alice.lock(f.id).await.unwrap();
    assert_eq!(under.id, explicit.id);
    let publish = Request::Publish {
        file: f.id,
        base: under.version,
        lease: under.id,
        size: 0,
        mtime: 1,
        info_hash: None,
        torrent: vec![],
        keep_lock: false,
    };
    assert!(matches!(alice.req(publish).await, Response::Published(_)));
    assert_eq!(alice.req(Request::Unlock { lease: under.id }).await, Response::Ok);
    assert!(is_locked_by(&Response::Error(bob.lock(f.id).await.unwrap_err()), "alice"));

    // UnlockFile: only the holder, whatever the lease.
    assert_eq!(bob.req(Request::UnlockFile { file: f.id }).await, err(ProtoError::NoLease));
    assert_eq!(alice.req(Request::UnlockFile { file: f.id }).await, Response::Ok);
    let evs = w.events_until(|e| matches!(e.kind, EventKind::Unlocked { file } if file == f.id)).await;
    assert_eq!(evs.last().unwrap().by, a_cred.member);
    assert_eq!(alice.req(Request::UnlockFile { file: f.id }).await, err(ProtoError::NoLease));
    assert_eq!(alice.req(Request::Renew { lease: explicit.id }).await, err(ProtoError::NoLease));
    assert_eq!(alice.req(Request::UnlockFile { file: FileId(999) }).await, err(ProtoError::NoSuchFile));
    let bl = bob.lock(f.id).await.unwrap();
    // It releases an ordinary lease too.
    assert_eq!(bob.req(Request::UnlockFile { file: f.id }).await, Response::Ok);
    assert_eq!(bob.req(Request::Unlock { lease: bl.id }).await, err(ProtoError::NoLease));
    assert!(matches!(
        alice.req(Request::LockExplicit { file: FileId::ROOT, ttl_ms: 0 }).await,
        Response::Error(ProtoError::BadRequest(_))
    ));
    drop((alice, bob, w));
    srv.stop().await;

    // Across a reopen the week-long lock on h is still alice's.
    let srv = Server::start(dir.path(), ttl).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    let (mut carol, _) = join(srv.addr, &mut alice, a_cred.group, "carol").await;
    assert!(is_locked_by(&Response::Error(carol.lock(h.id).await.unwrap_err()), "alice"));
    let mut watch = watcher(srv.addr, &a_cred).await;
    let probe = carol.lock(g.id).await.unwrap();
    watch.events_until(|e| matches!(e.kind, EventKind::Unlocked { file } if file == g.id)).await;
    assert!(now() >= probe.expires);
    assert!(is_locked_by(&Response::Error(carol.lock(h.id).await.unwrap_err()), "alice"));
    srv.stop().await;
}

#[tokio::test]
async fn read_log_pages_oldest_first_with_more() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, _) = new_group(srv.addr, "alice").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    for i in 0..20 {
        alice.create_file(FileId::ROOT, &format!("n{i}"), FileKind::File, false).await;
    }
    let end = current_seq(&mut alice).await;

    // Pages of 7 from the start: 1..=end, oldest first, `more` until the last.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = read_log(&mut alice, after, 7).await;
        assert!(page.len() <= 7);
        assert_eq!(more, page.last().unwrap().seq < end, "more on page ending {:?}", page.last().map(|e| e.seq));
        after = Some(page.last().unwrap().seq);
        all.extend(page);
        if !more {
            break;
        }
    }
    assert_eq!(all.first().unwrap().seq, Seq(1));
    assert_eq!(all.last().unwrap().seq, end);
    assert_contiguous(&all);
    assert!(matches!(&all[0].kind, EventKind::FileCreated(e) if e.id == FileId::ROOT));
    // The same as a subscriber replaying from 0 sees.
    let (everything, more) = read_log(&mut alice, None, 0).await;
    assert!(!more);
    assert_eq!(everything, all);
    let (mid, more) = read_log(&mut alice, Some(Seq(3)), 2).await;
    assert_eq!((mid.iter().map(|e| e.seq.0).collect::<Vec<_>>(), more), (vec![4, 5], true));
    assert_eq!(read_log(&mut alice, Some(end), 10).await, (vec![], false));
    assert_eq!(read_log(&mut alice, Some(Seq(end.0 + 100)), 10).await, (vec![], false));

    // At most 10 000 per reply. Explicit lock + unlock by file pipeline
    // without waiting for lease ids (in rounds, so that unread replies
    // never fill the socket buffers).
    for _ in 0..20 {
        let mut ids = Vec::new();
        for _ in 0..251 {
            ids.push(alice.send(Request::LockExplicit { file: f.id, ttl_ms: 0 }).await);
            ids.push(alice.send(Request::UnlockFile { file: f.id }).await);
        }
        for pair in ids.chunks(2) {
            assert!(matches!(alice.response(pair[0]).await, Response::Locked(_)));
            assert_eq!(alice.response(pair[1]).await, Response::Ok);
        }
    }
    let (big, more) = read_log(&mut alice, None, u32::MAX).await;
    assert_eq!((big.len(), more), (10_000, true));
    assert_contiguous(&big);
    let (rest, more) = read_log(&mut alice, Some(big.last().unwrap().seq), u32::MAX).await;
    assert!(!more);
    assert_eq!(rest.last().unwrap().seq, current_seq(&mut alice).await);
    assert_eq!(big.len() + rest.len(), current_seq(&mut alice).await.0 as usize);
    let mut anon = Client::connect(srv.addr).await;
    assert_eq!(anon.req(Request::ReadLog { after: None, limit: 1 }).await, err(ProtoError::NotAuthenticated));
    srv.stop().await;
}

#[tokio::test]
async fn log_retention_drops_old_events_and_resuming_there_gets_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(2);
    let cfg = TrackerConfig { log_retention: retention, ..config(dir.path(), TTL) };
    let srv = Server::start_cfg(cfg.clone()).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    for i in 0..5 {
        alice.create_file(FileId::ROOT, &format!("old{i}"), FileKind::File, false).await;
    }
    let old_end = current_seq(&mut alice).await;
    let (first, _) = read_log(&mut alice, None, 0).await;
    assert_eq!(first[0].seq, Seq(1));

    // Everything older than the retention goes, except the last event,
    // which marks where the log ends.
    let mut c = Client::authed(srv.addr, &a_cred).await;
    let kept = log_until(&mut c, "old events to be pruned", |evs| evs.len() == 1).await;
    assert_eq!(kept[0].seq, old_end);
    let log_start = kept[0].seq;
    let r = c.req(Request::Subscribe { from: Some(Seq(1)) }).await;
    assert!(matches!(r, Response::Snapshot { ref files, .. } if files.len() == 6), "{r:?}");
    let mut c2 = Client::authed(srv.addr, &a_cred).await;
    let r = c2.req(Request::Subscribe { from: Some(Seq(log_start.0 - 1)) }).await;
    assert_eq!(r, Response::Subscribed { seq: Seq(log_start.0 - 1) }, "the kept tail can still be resumed");
    // Reading from a pruned seq starts at the oldest kept.
    let (evs, _) = read_log(&mut alice, Some(Seq(1)), 0).await;
    assert_eq!(evs[0].seq, log_start);
    drop((alice, c, c2));
    srv.stop().await;

    // After a reopen with a long retention, the pruned part stays pruned
    // (the old tracker may have pruned its last moments' events too) and
    // new events are kept.
    let srv = Server::start_cfg(TrackerConfig { log_retention: Duration::from_secs(3600), ..cfg }).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    let (evs, _) = read_log(&mut alice, None, 0).await;
    let start = evs[0].seq;
    assert!(start >= log_start);
    let r = alice.req(Request::Subscribe { from: Some(Seq(1)) }).await;
    assert!(matches!(r, Response::Snapshot { .. }), "{r:?}");
    let mut c = Client::authed(srv.addr, &a_cred).await;
    c.create_file(FileId::ROOT, "new", FileKind::File, false).await;
    let (evs, more) = read_log(&mut c, Some(start), 0).await;
    assert!(!more);
    assert!(evs.iter().any(|e| matches!(&e.kind, EventKind::FileCreated(x) if x.name == "new")));
    assert_contiguous(&evs);
    srv.stop().await;
}

/// One of each change, then a reopen: the file table, versions, torrents,
/// locks, membership and log come back as they were.
#[tokio::test]
async fn changes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (d, _) = alice.create_file(FileId::ROOT, "d", FileKind::Dir, false).await;
    let (f, _) = alice.create_file(d.id, "f", FileKind::File, false).await;
    let (gone, _) = alice.create_file(FileId::ROOT, "gone", FileKind::File, false).await;
    let (target, _) = alice.create_file(FileId::ROOT, "target", FileKind::File, false).await;
    publish(&mut alice, f.id, 0, None, b'1').await;
    publish(&mut alice, f.id, 1, None, b'2').await;
    assert!(matches!(
        alice.req(Request::Restore { file: f.id, version: Version(1), lease: None }).await,
        Response::Published(_)
    ));
    assert_eq!(alice.req(Request::Delete { file: gone.id }).await, Response::Ok);
    let r = alice
        .req(Request::Rename { file: f.id, new_parent: FileId::ROOT, new_name: "target".into(), replace: true })
        .await;
    assert_eq!(r, Response::Ok);
    assert!(matches!(
        alice.req(Request::SetAttr { file: d.id, mode: Some(0o711), mtime: Some(5), owner: None }).await,
        Response::File { .. }
    ));
    let Response::Locked(held) = alice.req(Request::LockExplicit { file: f.id, ttl_ms: 0 }).await else { panic!() };
    assert_eq!(bob.req(Request::Leave).await, Response::Ok);
    let files_before = files(&mut alice).await;
    let versions_before = versions(&mut alice, f.id).await;
    let (log_before, _) = read_log(&mut alice, None, 0).await;
    drop((alice, bob));
    srv.stop().await;

    let srv = Server::start(dir.path(), TTL).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    assert_eq!(files(&mut alice).await, files_before);
    assert!(!files_before.iter().any(|e| e.id == gone.id || e.id == target.id));
    assert!(files_before.iter().any(|e| e.id == f.id && e.name == "target" && e.version == Version(3)));
    assert!(files_before.iter().any(|e| e.id == d.id && e.mode == 0o711 && e.mtime == 5));
    assert_eq!(versions(&mut alice, f.id).await, versions_before);
    assert_eq!(versions_before.len(), 4);
    let r = alice.req(Request::GetTorrent { file: f.id, version: Version(3) }).await;
    assert_eq!(r, Response::Torrent(torrent_of(b'1', 100 + 49).1));
    let (log_after, _) = read_log(&mut alice, None, 0).await;
    assert_eq!(log_after[..log_before.len()], log_before[..]);
    let mut again = Client::connect_as(srv.addr, b_cred.identity.clone()).await;
    let r = again.req(Request::Authenticate { group: b_cred.group, member: b_cred.member, peer_addr: None }).await;
    assert_eq!(r, err(ProtoError::NotAuthenticated));
    let (mut carol, _) = join(srv.addr, &mut alice, a_cred.group, "carol").await;
    assert!(is_locked_by(&Response::Error(carol.lock(f.id).await.unwrap_err()), "alice"));
    assert!(
        matches!(alice.req(Request::Renew { lease: held.id }).await, Response::Locked(l) if l.expires == held.expires)
    );
    assert_eq!(alice.req(Request::UnlockFile { file: f.id }).await, Response::Ok);
    assert!(carol.lock(f.id).await.is_ok());
    srv.stop().await;
}

/// The tracker crashes after committing a publish but before the reply
/// reaches the member, whose daemon then retries the same publish: it is
/// answered with the version it made, not refused as stale (which would
/// turn the edit into a spurious conflict copy).
#[tokio::test]
async fn a_publish_retried_after_a_tracker_restart_is_answered_again() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let lease = alice.lock(f.id).await.unwrap();
    let (ih, torrent) = torrent_of(b'7', 107);
    let req = Request::Publish {
        file: f.id,
        base: Version(0),
        lease: lease.id,
        size: 107,
        mtime: 1,
        info_hash: Some(ih),
        torrent,
        keep_lock: false,
    };
    let Response::Published(first) = alice.req(req.clone()).await else { panic!() };
    drop(alice);
    srv.stop().await;

    let srv = Server::start(dir.path(), TTL).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    assert_eq!(alice.req(req.clone()).await, Response::Published(first.clone()));
    // Other content on the same base is still a stale publish.
    let Request::Publish { file, base, lease, mtime, torrent, keep_lock, .. } = req else { unreachable!() };
    let (other, _) = fake_torrent(b'8');
    let stale = Request::Publish { file, base, lease, size: 108, mtime, info_hash: Some(other), torrent, keep_lock };
    assert_eq!(alice.req(stale).await, err(ProtoError::StaleVersion { base: Version(0), current: first.version }));
    srv.stop().await;
}

#[tokio::test]
async fn the_owner_and_admins_remove_members_and_break_locks_and_invites_die_with_their_maker() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut owner, o_cred) = new_group(srv.addr, "owner").await;
    let (mut ann, a_cred) = join(srv.addr, &mut owner, o_cred.group, "ann").await;
    let (mut bob, b_cred) = join(srv.addr, &mut owner, o_cred.group, "bob").await;
    let (mut cat, c_cred) = join(srv.addr, &mut owner, o_cred.group, "cat").await;
    let (f, _) = owner.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    bob.lock(f.id).await.unwrap();

    // A plain member can do none of it.
    assert_eq!(ann.req(Request::RemoveMember { member: b_cred.member }).await, err(ProtoError::NotAllowed));
    assert_eq!(ann.req(Request::ForceUnlock { file: f.id }).await, err(ProtoError::NotAllowed));
    assert_eq!(ann.req(Request::SetAdmin { member: a_cred.member, admin: true }).await, err(ProtoError::NotAllowed));
    // The owner makes ann an admin; ann breaks bob's lock, as the log says.
    assert_eq!(owner.req(Request::SetAdmin { member: a_cred.member, admin: true }).await, Response::Ok);
    let mut w = watcher(srv.addr, &o_cred).await;
    assert_eq!(ann.req(Request::ForceUnlock { file: f.id }).await, Response::Ok);
    let evs = w.events_until(|e| matches!(e.kind, EventKind::Unlocked { .. })).await;
    assert_eq!(evs.last().unwrap().by, a_cred.member);
    assert!(cat.lock(f.id).await.is_ok());
    // An admin cannot remove the owner; the owner cannot remove itself.
    assert_eq!(ann.req(Request::RemoveMember { member: o_cred.member }).await, err(ProtoError::NotAllowed));
    assert_eq!(owner.req(Request::RemoveMember { member: o_cred.member }).await, err(ProtoError::NotAllowed));
    assert_eq!(ann.req(Request::RemoveMember { member: MemberId(999) }).await, err(ProtoError::NoSuchMember));

    // ann removes cat: cat's locks go, everyone sees MemberLeft, cat's
    // connection is closed, its key no longer authenticates, and the invite
    // it made dies (the owner's still works).
    let cats_invite = cat.invite().await;
    let owners_invite = owner.invite().await;
    assert_eq!(ann.req(Request::RemoveMember { member: c_cred.member }).await, Response::Ok);
    let mut stranger = Client::connect(srv.addr).await;
    let via_cat = Request::Join { group: o_cred.group, invite: cats_invite, member_name: "eve".into(), peer_addr: None };
    assert_eq!(stranger.req(via_cat).await, err(ProtoError::BadInvite));
    let via_owner = Request::Join { group: o_cred.group, invite: owners_invite, member_name: "dan".into(), peer_addr: None };
    assert!(matches!(stranger.req(via_owner).await, Response::Joined { .. }));
    let evs = w.events_until(|e| matches!(e.kind, EventKind::MemberLeft { .. })).await;
    assert_eq!(evs.last().unwrap().kind, EventKind::MemberLeft { member: c_cred.member });
    assert!(matches!(cat.frame().await, Some(ServerFrame::Goodbye { .. }) | None));
    let mut again = Client::connect_as(srv.addr, c_cred.identity.clone()).await;
    let auth = Request::Authenticate { group: c_cred.group, member: c_cred.member, peer_addr: None };
    assert_eq!(again.req(auth).await, err(ProtoError::NotAuthenticated));
    assert!(owner.lock(f.id).await.is_ok(), "cat's lock went with cat");
    drop(bob);
    srv.stop().await;

    // Roles are kept: after a reopen ann is still an admin.
    let srv = Server::start(dir.path(), TTL).await;
    let mut ann = Client::authed(srv.addr, &a_cred).await;
    assert_eq!(ann.req(Request::RemoveMember { member: b_cred.member }).await, Response::Ok);
    srv.stop().await;
}

#[tokio::test]
async fn admins_set_the_longest_explicit_lock_and_it_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut owner, o_cred) = new_group(srv.addr, "owner").await;
    let (mut ann, a_cred) = join(srv.addr, &mut owner, o_cred.group, "ann").await;
    let (f, _) = owner.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let hour = 3_600_000;
    assert_eq!(ann.req(Request::SetLockLimit { max_ms: hour }).await, err(ProtoError::NotAllowed));
    assert_eq!(owner.req(Request::SetLockLimit { max_ms: hour }).await, Response::Ok);
    let lasts = |r: Response| match r {
        Response::Locked(l) => l.expires.saturating_sub(now_ms()),
        other => panic!("{other:?}"),
    };
    // "As long as allowed" and "a day" both get an hour now.
    let got = lasts(ann.req(Request::LockExplicit { file: f.id, ttl_ms: 0 }).await);
    assert!(got <= hour && got > hour - 60_000, "{got} ms");
    assert_eq!(ann.req(Request::UnlockFile { file: f.id }).await, Response::Ok);
    let got = lasts(ann.req(Request::LockExplicit { file: f.id, ttl_ms: 24 * hour }).await);
    assert!(got <= hour, "{got} ms");
    assert_eq!(ann.req(Request::UnlockFile { file: f.id }).await, Response::Ok);
    drop((owner, ann));
    srv.stop().await;

    let srv = Server::start(dir.path(), TTL).await;
    let mut ann = Client::authed(srv.addr, &a_cred).await;
    let got = lasts(ann.req(Request::LockExplicit { file: f.id, ttl_ms: 0 }).await);
    assert!(got <= hour, "the limit after a restart: {got} ms");
    srv.stop().await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn trash(c: &mut Client) -> Vec<TrashEntry> {
    match c.req(Request::ListTrash).await {
        Response::Trash(t) => t,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_deleted_file_waits_in_the_trash_until_undeleted_or_purged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), TTL);
    let srv = Server::start_cfg(cfg.clone()).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (d, _) = alice.create_file(FileId::ROOT, "docs", FileKind::Dir, false).await;
    let (f, _) = alice.create_file(d.id, "plan.txt", FileKind::File, false).await;
    publish(&mut alice, f.id, 0, None, b'a').await;
    let v2 = publish(&mut alice, f.id, 1, None, b'b').await;
    let (empty, _) = alice.create_file(d.id, "empty", FileKind::File, false).await;
    let mut w = watcher(srv.addr, &a_cred).await;

    // Bob deletes the file: it leaves the table, not the tracker.
    let t0 = now();
    assert_eq!(bob.req(Request::Delete { file: f.id }).await, Response::Ok);
    assert_eq!(bob.req(Request::Delete { file: empty.id }).await, Response::Ok);
    assert!(!files(&mut alice).await.iter().any(|e| e.id == f.id));
    let t = trash(&mut alice).await;
    assert_eq!(t.len(), 1, "an empty file has nothing to keep: {t:?}");
    assert_eq!((t[0].path.as_str(), t[0].by, &t[0].entry), ("docs/plan.txt", b_cred.member, &v2));
    assert!(t[0].deleted_at >= t0);

    // Back where it was, with its last content as a new version (no bytes
    // move: same info hash and torrent), announced as a creation.
    let undelete = |parent: FileId, name: &str| Request::Undelete { file: f.id, parent, name: name.into() };
    alice.create_file(d.id, "taken", FileKind::File, false).await;
    assert_eq!(alice.req(undelete(d.id, "taken")).await, err(ProtoError::AlreadyExists));
    assert_eq!(alice.req(undelete(FileId(999), "x")).await, err(ProtoError::NoSuchFile));
    let Response::File { entry: back, lease: None } = alice.req(undelete(d.id, "plan.txt")).await else { panic!() };
    assert_eq!((back.id, back.version, back.info_hash, back.size), (f.id, Version(3), v2.info_hash, v2.size));
    assert_eq!((back.parent, back.name.as_str(), back.author), (d.id, "plan.txt", a_cred.member));
    assert_eq!((back.mtime, back.owner.clone()), (v2.mtime, v2.owner.clone()), "as it was");
    assert!(back.ctime >= t0, "coming back is a change");
    let evs = w.events_until(|e| matches!(&e.kind, EventKind::FileCreated(x) if x.id == f.id)).await;
    assert_eq!(evs.last().unwrap().kind, EventKind::FileCreated(back.clone()));
    let r = bob.req(Request::GetTorrent { file: f.id, version: Version(3) }).await;
    assert_eq!(r, Response::Torrent(torrent_of(b'b', 100 + 98).1));
    let kept: Vec<u64> = versions(&mut bob, f.id).await.iter().map(|v| v.version.0).collect();
    assert_eq!(kept, [3, 2, 1, 0], "its history came back with it");
    assert!(trash(&mut alice).await.is_empty());
    assert_eq!(alice.req(undelete(d.id, "again")).await, err(ProtoError::NoSuchFile));

    // A file replaced by a rename goes to the trash too, and the trash
    // survives a restart.
    let (g, _) = alice.create_file(FileId::ROOT, "g", FileKind::File, false).await;
    let g1 = publish(&mut alice, g.id, 0, None, b'g').await;
    let (h, _) = alice.create_file(FileId::ROOT, "h", FileKind::File, false).await;
    publish(&mut alice, h.id, 0, None, b'h').await;
    let over = Request::Rename { file: h.id, new_parent: FileId::ROOT, new_name: "g".into(), replace: true };
    assert_eq!(alice.req(over).await, Response::Ok);
    drop((alice, bob, w));
    srv.stop().await;
    let srv = Server::start_cfg(cfg.clone()).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    let t = trash(&mut alice).await;
    assert_eq!(t.iter().map(|t| (t.path.as_str(), t.entry.info_hash)).collect::<Vec<_>>(), [("g", g1.info_hash)]);
    drop(alice);
    srv.stop().await;

    // With a short retention it is purged: versions and torrents go, with
    // a `Purged` event, and it cannot come back.
    let srv = Server::start_cfg(TrackerConfig { trash_retention: Duration::from_millis(300), ..cfg }).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    let evs = log_until(&mut alice, "the purge", |evs| evs.iter().any(|e| e.kind == EventKind::Purged { file: g.id })).await;
    // (Not necessarily the log's last event: alice's reconnection may
    // come after the sweep.)
    let purged = evs.iter().find(|e| e.kind == EventKind::Purged { file: g.id }).unwrap();
    assert_eq!(purged.by, MemberId(0), "the tracker purges");
    assert!(trash(&mut alice).await.is_empty());
    let back = Request::Undelete { file: g.id, parent: FileId::ROOT, name: "g2".into() };
    assert_eq!(alice.req(back).await, err(ProtoError::NoSuchFile));
    drop(alice);
    srv.stop().await;
}

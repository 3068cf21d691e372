//! Symbolic links in the file table (protocol 8): the target is carried in
//! the entry, validated, shared through events and snapshots, kept across a
//! reopen; renames and deletes of a link follow the lock rules of files.

use std::time::Duration;

use crate::common::*;
use titorrent_tracker::proto::*;

const TTL: Duration = Duration::from_secs(30);

fn symlink(parent: FileId, name: &str, target: &str) -> Request {
    Request::CreateFile { parent, name: name.into(), kind: FileKind::Symlink(target.into()), mode: 0o600, lock: true, owner: Default::default() }
}

async fn listed(c: &mut Client, id: FileId) -> Option<FileEntry> {
    match c.req(Request::ListFiles).await {
        Response::Files { files, .. } => files.into_iter().find(|e| e.id == id),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_symlink_carries_its_target_and_follows_the_lock_rules() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let mut w = Client::authed(srv.addr, &b_cred).await;
    assert!(matches!(w.req(Request::Subscribe { from: None }).await, Response::Snapshot { .. }));

    // A dangling target is as good as any; mode and lock are ignored.
    let Response::File { entry: l, lease: None } = alice.req(symlink(FileId::ROOT, "l", "../no/such")).await else {
        panic!("symlink not created without a lease")
    };
    assert_eq!((l.kind.link_target(), l.size, l.mode, l.info_hash), (Some("../no/such"), 10, 0o777, None));
    let ev = w.events_until(|e| matches!(e.kind, EventKind::FileCreated(_))).await;
    assert_eq!(ev.last().unwrap().kind, EventKind::FileCreated(l.clone()));

    // Refused targets: empty, with NUL, over PATH_MAX - 1 bytes.
    for bad in [String::new(), "a\0b".to_string(), "x".repeat(MAX_LINK_TARGET + 1)] {
        let r = alice.req(symlink(FileId::ROOT, "bad", &bad)).await;
        assert!(matches!(r, Response::Error(ProtoError::BadRequest(_))), "{}: {r:?}", bad.len());
    }
    let long = "y/".repeat(MAX_LINK_TARGET / 2) + "z";
    assert!(matches!(alice.req(symlink(FileId::ROOT, "long", &long)).await, Response::File { .. }));
    assert_eq!(alice.req(symlink(FileId::ROOT, "l", "t")).await, Response::Error(ProtoError::AlreadyExists));

    // No content: nothing to publish, no versions.
    let (ih, torrent) = fake_torrent(1);
    let lease = bob.lock(l.id).await.expect("a symlink can be locked");
    let publish = Request::Publish { file: l.id, base: Version(0), lease: lease.id, size: 5, mtime: 1, info_hash: Some(ih), torrent, keep_lock: true };
    assert!(matches!(bob.req(publish).await, Response::Error(ProtoError::BadRequest(_))));
    assert!(matches!(alice.req(Request::ListVersions { file: l.id }).await, Response::Error(ProtoError::BadRequest(_))));

    // Locked by bob: alice can neither rename nor delete it.
    let rename = Request::Rename { file: l.id, new_parent: FileId::ROOT, new_name: "m".into(), replace: false };
    assert!(matches!(alice.req(rename.clone()).await, Response::Error(ProtoError::Locked(_))));
    assert!(matches!(alice.req(Request::Delete { file: l.id }).await, Response::Error(ProtoError::Locked(_))));
    assert_eq!(bob.req(Request::Unlock { lease: lease.id }).await, Response::Ok);
    assert_eq!(alice.req(rename).await, Response::Ok);
    let moved = listed(&mut alice, l.id).await.unwrap();
    assert_eq!((moved.name.as_str(), moved.kind.link_target()), ("m", Some("../no/such")));

    // A file renamed over a symlink replaces it; a directory cannot be.
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let (d, _) = alice.create_file(FileId::ROOT, "d", FileKind::Dir, false).await;
    let over_dir = Request::Rename { file: l.id, new_parent: FileId::ROOT, new_name: "d".into(), replace: true };
    assert_eq!(alice.req(over_dir).await, Response::Error(ProtoError::IsADirectory));
    let over = Request::Rename { file: f.id, new_parent: FileId::ROOT, new_name: "m".into(), replace: true };
    assert_eq!(alice.req(over).await, Response::Ok);
    assert!(listed(&mut alice, l.id).await.is_none());

    // Across a reopen of the data dir.
    let Response::File { entry: k, .. } = alice.req(symlink(d.id, "k", "/etc/passwd")).await else { panic!() };
    drop((alice, bob, w));
    srv.stop().await;
    let srv = Server::start(dir.path(), TTL).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    assert_eq!(listed(&mut alice, k.id).await, Some(k));
    assert_eq!(alice.req(Request::Delete { file: l.id }).await, Response::Error(ProtoError::NoSuchFile));
    srv.stop().await;
}

fn hard_link(parent: FileId, name: &str, target: FileId) -> Request {
    Request::CreateFile { parent, name: name.into(), kind: FileKind::Link(target), mode: 0o600, lock: true, owner: Default::default() }
}

/// Hard links (protocol 11): a `Link` entry names a regular file or a
/// symbolic link; deleting
/// the file's own name promotes a link in the same batch (the file keeps
/// its id and takes the link's place), and members hear it as a
/// `FileDeleted` of the link then a `FileRenamed` of the file.
#[tokio::test]
async fn a_hard_link_names_a_file_and_is_promoted_when_the_file_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (_bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let mut w = Client::authed(srv.addr, &b_cred).await;
    assert!(matches!(w.req(Request::Subscribe { from: None }).await, Response::Snapshot { .. }));

    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let (d, _) = alice.create_file(FileId::ROOT, "d", FileKind::Dir, false).await;
    let Response::File { entry: l1, lease: None } = alice.req(hard_link(d.id, "l1", f.id)).await else {
        panic!("link not created without a lease")
    };
    assert_eq!((l1.kind.link_of(), l1.size, l1.mode), (Some(f.id), 0, 0));
    let Response::File { entry: l2, .. } = alice.req(hard_link(FileId::ROOT, "l2", f.id)).await else { panic!() };

    // A symbolic link can have links too (link(2) does not follow it).
    let Response::File { entry: s, .. } = alice.req(symlink(FileId::ROOT, "s", "dangling")).await else { panic!() };
    let Response::File { entry: sl, .. } = alice.req(hard_link(d.id, "s2", s.id)).await else { panic!("no link to a symlink") };
    assert_eq!(sl.kind.link_of(), Some(s.id));

    // Not a directory, a link, or nothing.
    for target in [d.id, l1.id, sl.id, FileId(9999)] {
        let r = alice.req(hard_link(FileId::ROOT, "bad", target)).await;
        assert!(matches!(r, Response::Error(ProtoError::BadRequest(_) | ProtoError::NoSuchFile)), "{r:?}");
    }
    // A directory holding a link is not empty.
    assert_eq!(alice.req(Request::Delete { file: d.id }).await, Response::Error(ProtoError::NotEmpty));

    // Deleting the file's name: l1 (the smallest id) is promoted.
    let Response::File { entry: moved, lease: None } = alice.req(Request::Delete { file: f.id }).await else {
        panic!("no promotion")
    };
    assert_eq!((moved.id, moved.parent, moved.name.as_str(), &moved.kind), (f.id, d.id, "l1", &FileKind::File));
    let evs = w.events_until(|e| matches!(e.kind, EventKind::FileRenamed { .. })).await;
    let n = evs.len();
    assert_eq!(evs[n - 2].kind, EventKind::FileDeleted { file: l1.id, parent: d.id, name: "l1".into() });
    assert_eq!(evs[n - 1].kind, EventKind::FileRenamed { entry: moved.clone(), old_parent: FileId::ROOT, old_name: "f".into() });
    assert!(listed(&mut alice, l1.id).await.is_none());

    // A rename over the file promotes too: f moves to l2's place, g takes
    // f's name, in one batch.
    let (g, _) = alice.create_file(FileId::ROOT, "g", FileKind::File, false).await;
    let over = Request::Rename { file: g.id, new_parent: d.id, new_name: "l1".into(), replace: true };
    assert_eq!(alice.req(over).await, Response::Ok);
    let evs = w.events_until(|e| matches!(&e.kind, EventKind::FileRenamed { entry, .. } if entry.id == g.id)).await;
    let n = evs.len();
    assert_eq!(evs[n - 3].kind, EventKind::FileDeleted { file: l2.id, parent: FileId::ROOT, name: "l2".into() });
    assert!(matches!(&evs[n - 2].kind, EventKind::FileRenamed { entry, .. } if entry.id == f.id && entry.name == "l2"));
    let f_now = listed(&mut alice, f.id).await.unwrap();
    assert_eq!((f_now.parent, f_now.name.as_str()), (FileId::ROOT, "l2"));
    assert_eq!(listed(&mut alice, g.id).await.map(|e| e.name), Some("l1".into()));
    assert!(listed(&mut alice, l2.id).await.is_none());

    // A link's own name is deleted like a file's; then the file is alone.
    let Response::File { entry: l3, .. } = alice.req(hard_link(FileId::ROOT, "l3", f.id)).await else { panic!() };
    assert_eq!(alice.req(Request::Delete { file: l3.id }).await, Response::Ok);
    assert_eq!(alice.req(Request::Delete { file: f.id }).await, Response::Ok);
    assert!(listed(&mut alice, f.id).await.is_none());

    // The link index is rebuilt from the store on reopen.
    let (h, _) = alice.create_file(FileId::ROOT, "h", FileKind::File, false).await;
    let Response::File { entry: hl, .. } = alice.req(hard_link(FileId::ROOT, "hl", h.id)).await else { panic!() };
    drop((alice, w));
    srv.stop().await;
    let srv = Server::start(dir.path(), TTL).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    let Response::File { entry: back, .. } = alice.req(Request::Delete { file: h.id }).await else { panic!("not promoted after reopen") };
    assert_eq!((back.id, back.name.as_str()), (h.id, "hl"));
    assert!(listed(&mut alice, hl.id).await.is_none());
    srv.stop().await;
}

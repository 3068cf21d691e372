//! Unit tests of the folder model against an in-memory tracker and content
//! store: locking, publishing, conflicts, offline retry, own-edit reads.

mod fakes;

use super::*;
use fakes::{FakeContent, FakeTracker, ME};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use titorrent_tracker::proto::{Event, EventKind, FileEntry, FileKind, LockHolder, MemberId, Owner, Seq};

struct Fixture {
    folder: Arc<Folder<Arc<FakeContent>, Arc<FakeTracker>>>,
    content: Arc<FakeContent>,
    tracker: Arc<FakeTracker>,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let content = Arc::new(FakeContent::default());
    *content.dir.lock() = Some(dir.path().join("objects"));
    std::fs::create_dir_all(dir.path().join("objects")).unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let folder = Folder::new(content.clone(), tracker.clone(), (ME, "me".into()), dirs_in(dir.path()), tokio::runtime::Handle::current()).unwrap();
    folder.apply_snapshot(Seq(0), vec![]);
    folder.set_online(true);
    Fixture { folder, content, tracker, dir }
}

fn dirs_in(root: &std::path::Path) -> FolderDirs {
    FolderDirs {
        state_root: root.to_path_buf(),
        pins: root.join("pins"),
        staging: root.join("staging"),
        outbox: root.join("outbox"),
        torrents: root.join("torrents"),
        conflicts: root.join("conflicts"),
    }
}

/// A new daemon run over the fixture's state directory, with the table as
/// the tracker has it now.
fn restart(f: &Fixture) -> Arc<Folder<Arc<FakeContent>, Arc<FakeTracker>>> {
    let second = Folder::new(f.content.clone(), f.tracker.clone(), (ME, "me".into()), dirs_in(f.dir.path()), tokio::runtime::Handle::current()).unwrap();
    second.apply_snapshot(Seq(1), f.tracker.files.lock().values().cloned().collect());
    second
}

/// Member 9 creates "remote" (file 50, version 1, 12 bytes) that only the
/// swarm has; its torrent is at the tracker.
fn remote_file_from_member_9(f: &Fixture) -> InfoHash {
    let ih = InfoHash([42; 20]);
    f.content.store.lock().insert(ih, b"remote bytes".to_vec());
    f.tracker.torrents.lock().insert((FileId(50), Version(1)), vec![b'd', 42, b'e']);
    let e = FileEntry {
        id: FileId(50),
        parent: FileId::ROOT,
        name: "remote".into(),
        kind: FileKind::File,
        size: 12,
        mtime: 0,
        mode: 0o644,
        version: Version(1),
        info_hash: Some(ih),
        author: MemberId(9),
        owner: Default::default(),
        ctime: 0,
    };
    f.folder.apply_event(Event { seq: Seq(1), at: 0, by: MemberId(9), kind: EventKind::FileCreated(e) });
    ih
}

fn read_all(f: &Fixture, fh: Fh) -> Vec<u8> {
    match f.folder.read_plan(fh, 0, 1 << 20).unwrap() {
        ReadPlan::Data(d) => d,
        ReadPlan::Fetch { .. } => panic!("expected local data"),
    }
}

async fn published(f: &Fixture, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.tracker.publishes.lock().len() < n || !f.folder.drain(Duration::from_millis(10)).await {
        assert!(tokio::time::Instant::now() < deadline, "publish {n} never happened");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn create_write_close_publishes_and_reads_back() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "a.txt", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"hello ").unwrap();
    f.folder.write(fh, 6, b"world").unwrap();
    // Own edits are visible before the close.
    assert_eq!(read_all(&f, fh), b"hello world");
    assert_eq!(f.folder.attr(entry.id).unwrap().size, 11);
    f.folder.release(fh);
    published(&f, 1).await;
    let e = f.folder.attr(entry.id).unwrap();
    assert_eq!((e.version, e.size), (Version(1), 11));
    let rh = f.folder.open_read(entry.id).unwrap();
    assert_eq!(read_all(&f, rh), b"hello world");
    assert!(f.tracker.locks.lock().is_empty(), "lock released by the publish");
}

#[tokio::test]
async fn appends_land_at_the_end_whatever_offset_the_kernel_sends() {
    let f = fixture();
    let append = OpenMode { append: true, ..OpenMode::default() };
    let (entry, fh) = f.folder.create(FileId::ROOT, "log", 0o644, append, false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"one\n").unwrap();
    // The kernel's cached size said 0 again (another member's version it
    // had not heard of): the daemon still appends.
    f.folder.write(fh, 0, b"two\n").unwrap();
    assert_eq!(read_all(&f, fh), b"one\ntwo\n");
    // A second handle without O_APPEND writes where it is told.
    let plain = f.folder.open(entry.id, OpenMode { write: true, ..OpenMode::default() }).await.unwrap();
    f.folder.write(plain, 0, b"ONE").unwrap();
    assert_eq!(read_all(&f, fh), b"ONE\ntwo\n");
    f.folder.release(plain);
    f.folder.release(fh);
    published(&f, 1).await;
}

#[tokio::test]
async fn an_exclusive_create_of_a_name_another_member_just_made_is_eexist() {
    let f = fixture();
    // Another member's create landed at the tracker; its event is not here yet.
    let theirs = FileEntry {
        id: FileId(50),
        parent: FileId::ROOT,
        name: "race".into(),
        kind: FileKind::File,
        size: 0,
        mtime: 0,
        mode: 0o644,
        version: Version(0),
        info_hash: None,
        author: MemberId(9),
        owner: Default::default(),
        ctime: 0,
    };
    f.tracker.files.lock().insert(theirs.id, theirs);
    let err = f.folder.create(FileId::ROOT, "race", 0o644, OpenMode::default(), true, Owner::default()).await.unwrap_err();
    assert!(matches!(err, ModelError::Exists), "{err:?}");
}

#[tokio::test]
async fn atime_is_this_members_own_set_by_utimensat_and_by_reads_as_relatime() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "a", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.release(fh);
    let e = f.folder.attr(entry.id).unwrap();
    assert_eq!(f.folder.atime(&e), e.mtime, "no access noted: the mtime");
    f.folder.set_atime(entry.id, e.mtime + 2_000_000).unwrap();
    assert_eq!(f.folder.atime(&e), e.mtime + 2_000_000);
    assert_eq!(f.folder.attr(entry.id).unwrap().mtime, e.mtime, "mtime untouched");
    // A read: the last access is newer than the change but more than a
    // day old, so it is noted.
    let before = now_ms();
    f.folder.open_read(entry.id).unwrap();
    let noted = f.folder.atime(&e);
    assert!(noted >= before, "{noted} < {before}");
    // Read again at once: relatime notes nothing new.
    f.folder.open_read(entry.id).unwrap();
    assert_eq!(f.folder.atime(&e), noted);
}

#[tokio::test]
async fn unchanged_close_unlocks_without_a_new_version() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "empty", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.release(fh);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f.tracker.locks.lock().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never unlocked");
        tokio::task::yield_now().await;
    }
    assert!(f.tracker.publishes.lock().is_empty());
    assert_eq!(f.folder.attr(entry.id).unwrap().version, Version(0));
}

#[tokio::test]
async fn open_for_write_of_a_locked_file_names_the_holder() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "notes.txt", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.release(fh);
    *f.tracker.foreign_holder.lock() =
        Some(LockHolder { member: MemberId(9), member_name: "ana".into(), since: 43_384_000, expires: 0 });
    let err = f.folder.open(entry.id, OpenMode { write: true, truncate: false, ..OpenMode::default() }).await.unwrap_err();
    assert!(matches!(err, ModelError::Locked { .. }));
    assert_eq!(err.to_string(), "notes.txt is locked by ana since 12:03:04 UTC");
}

#[tokio::test]
async fn a_refused_publish_becomes_a_conflict_copy_next_to_the_file() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "doc.txt", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"precious edit").unwrap();
    // Someone else's version lands first at the tracker.
    f.tracker.files.lock().get_mut(&entry.id).unwrap().version = Version(5);
    f.folder.release(fh);
    published(&f, 2).await; // the refused one, then the copy's
    let copy = f
        .folder
        .readdir(FileId::ROOT)
        .unwrap()
        .into_iter()
        .find(|(_, _, n)| n.starts_with("doc (conflict from me ") && n.ends_with(").txt"))
        .expect("conflict copy listed next to the original");
    let rh = f.folder.open_read(copy.0).unwrap();
    assert_eq!(read_all(&f, rh), b"precious edit");
    assert!(std::fs::read_dir(f.dir.path().join("outbox")).unwrap().next().is_none(), "outbox emptied");
}

#[tokio::test]
async fn an_edit_left_in_the_outbox_is_published_by_the_next_run() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "crash.txt", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"survives").unwrap();
    f.tracker.offline.store(true, Ordering::SeqCst);
    f.folder.release(fh);
    let outbox = f.dir.path().join("outbox");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // The close is noted in the outbox entry (on the blocking pool).
    let closed_noted = || {
        std::fs::read_dir(&outbox).unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("closed = true"))
        })
    };
    while !closed_noted() {
        assert!(tokio::time::Instant::now() < deadline, "no outbox entry of the closed edit written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A new daemon run over the same state directory.
    let second = restart(&f);
    second.set_online(true);
    f.tracker.offline.store(false, Ordering::SeqCst);
    second.resume_outbox().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.tracker.files.lock()[&entry.id].version != Version(1) {
        assert!(tokio::time::Instant::now() < deadline, "outbox edit never published");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ih = f.tracker.files.lock()[&entry.id].info_hash.unwrap();
    assert_eq!(f.content.store.lock()[&ih], b"survives");
}

#[tokio::test]
async fn publish_waits_out_an_offline_tracker() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "later", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"written offline").unwrap();
    f.tracker.offline.store(true, Ordering::SeqCst);
    f.folder.release(fh);
    // The edit stays readable here while it waits.
    let rh = f.folder.open_read(entry.id).unwrap();
    assert_eq!(read_all(&f, rh), b"written offline");
    assert!(!f.folder.drain(Duration::from_millis(300)).await, "cannot finish while offline");
    f.tracker.offline.store(false, Ordering::SeqCst);
    assert!(f.folder.drain(Duration::from_secs(5)).await);
    assert_eq!(f.folder.attr(entry.id).unwrap().version, Version(1));
    assert_eq!(read_all(&f, rh), b"written offline");
}

#[tokio::test]
async fn writes_while_offline_are_read_only() {
    let f = fixture();
    f.folder.set_online(false);
    let err = f.folder.create(FileId::ROOT, "x", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap_err();
    assert!(matches!(err, ModelError::Offline));
}

/// A request the connection lost before its answer may or may not have
/// been applied: the model says so (`Lost`; programs see EROFS, as the
/// folder is offline from then on), not that nothing was sent (`Offline`).
#[tokio::test]
async fn a_request_cut_off_in_flight_is_lost_not_offline() {
    let f = fixture();
    f.tracker.cut_off.store(true, Ordering::SeqCst);
    let err = f.folder.mkdir(FileId::ROOT, "d", 0o755, Owner::default()).await.unwrap_err();
    assert!(matches!(err, ModelError::Lost), "{err:?}");
}

#[tokio::test]
async fn another_members_version_is_fetched_not_read_locally() {
    let f = fixture();
    remote_file_from_member_9(&f);
    assert_eq!(f.folder.lookup(FileId::ROOT, "remote").unwrap().size, 12);
    let fh = f.folder.open_read(FileId(50)).unwrap();
    let ReadPlan::Fetch { file, version, info_hash } = f.folder.read_plan(fh, 0, 100).unwrap() else {
        panic!("not local, must fetch");
    };
    assert_eq!(f.folder.fetch(file, version, info_hash, 7, 100).await.unwrap(), &b"bytes"[..]);
}

#[tokio::test]
async fn a_torrent_that_does_not_match_its_hash_is_refused() {
    let f = fixture();
    let ih = InfoHash([42; 20]);
    f.tracker.torrents.lock().insert((FileId(50), Version(1)), vec![b'd', 1, b'e']);
    let err = f.folder.fetch(FileId(50), Version(1), ih, 0, 10).await.unwrap_err();
    assert!(matches!(err, ModelError::Content(ContentError::HashMismatch)), "{err:?}");
}

#[tokio::test]
async fn names_with_slash_or_dotdot_are_refused_before_the_tracker() {
    let f = fixture();
    for bad in ["..", "a/b", ""] {
        assert!(matches!(f.folder.create(FileId::ROOT, bad, 0o644, OpenMode::default(), false, Owner::default()).await, Err(ModelError::InvalidName)));
    }
    assert!(f.tracker.files.lock().is_empty());
}

#[tokio::test]
async fn only_the_last_k_versions_stay_local() {
    let f = fixture();
    f.folder.set_keep_versions(2);
    let (entry, fh) = f.folder.create(FileId::ROOT, "log.txt", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"v1").unwrap();
    f.folder.release(fh);
    published(&f, 1).await;
    let mut hashes = vec![f.folder.attr(entry.id).unwrap().info_hash.unwrap()];
    for (n, body) in [(2, b"v2"), (3, b"v3")] {
        let fh = f.folder.open(entry.id, OpenMode { write: true, truncate: true, ..OpenMode::default() }).await.unwrap();
        f.folder.write(fh, 0, body).unwrap();
        f.folder.release(fh);
        published(&f, n).await;
        hashes.push(f.folder.attr(entry.id).unwrap().info_hash.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.content.store.lock().contains_key(&hashes[0]) {
        assert!(tokio::time::Instant::now() < deadline, "version 1 never collected");
        tokio::task::yield_now().await;
    }
    assert!(f.content.store.lock().contains_key(&hashes[1]), "version 2 is one of the last two");
    assert!(f.content.store.lock().contains_key(&hashes[2]));
}

#[tokio::test]
async fn a_version_shared_with_another_file_is_not_collected() {
    let f = fixture();
    f.folder.set_keep_versions(1);
    let (a, fh) = f.folder.create(FileId::ROOT, "a", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"same").unwrap();
    f.folder.release(fh);
    published(&f, 1).await;
    let shared = f.folder.attr(a.id).unwrap().info_hash.unwrap();
    // Another file whose current version has the same content (hash).
    let mut b = f.folder.attr(a.id).unwrap();
    b.id = FileId(900);
    b.name = "b".into();
    f.folder.apply_event(Event { seq: Seq(10), at: 0, by: MemberId(9), kind: EventKind::FileCreated(b) });
    let fh = f.folder.open(a.id, OpenMode { write: true, truncate: true, ..OpenMode::default() }).await.unwrap();
    f.folder.write(fh, 0, b"new").unwrap();
    f.folder.release(fh);
    published(&f, 2).await;
    assert!(f.folder.drain(Duration::from_secs(1)).await);
    assert!(f.content.store.lock().contains_key(&shared), "still the current content of b");
}

#[tokio::test]
async fn an_edit_open_when_the_daemon_died_becomes_a_conflict_copy() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "draft.md", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"half of my work").unwrap();
    // The daemon dies here: no release. Its lease runs out and someone else
    // publishes a version meanwhile.
    f.tracker.locks.lock().clear();
    f.tracker.files.lock().get_mut(&entry.id).unwrap().version = Version(3);
    let second = restart(&f);
    second.set_online(true);
    second.resume_outbox().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let copy = loop {
        let found = second.readdir(FileId::ROOT).unwrap().into_iter().find(|(_, _, n)| n.starts_with("draft (conflict from me "));
        if let Some(c) = found {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "no conflict copy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(second.drain(Duration::from_secs(5)).await);
    let ih = second.attr(copy.0).unwrap().info_hash.unwrap();
    assert_eq!(f.content.store.lock()[&ih], b"half of my work");
    assert_eq!(f.tracker.files.lock()[&entry.id].version, Version(3), "the file itself untouched");
    let _ = fh;
}

#[tokio::test]
async fn a_fetched_version_is_reported_and_holders_are_tracked() {
    let f = fixture();
    remote_file_from_member_9(&f);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.tracker.haves.lock().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no Have report after the background fetch");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(f.tracker.haves.lock()[0], (FileId(50), Version(1)));
    let holders = |f: &Fixture| String::from_utf8(f.folder.xattr(FileId(50), "user.titorrent.holders").unwrap().unwrap()).unwrap();
    assert_eq!(holders(&f), "member-9, me", "the author, and this member once complete");
    f.folder.apply_event(Event {
        seq: Seq(2),
        at: 0,
        by: MemberId(11),
        kind: EventKind::Have { file: FileId(50), version: Version(1), member: MemberId(11) },
    });
    assert_eq!(holders(&f), "member-9, me, member-11");
}

#[tokio::test]
async fn versions_only_this_member_holds_are_listed() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "mine.txt", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"only here").unwrap();
    f.folder.release(fh);
    published(&f, 1).await;
    assert_eq!(f.folder.sole_copies(), vec!["mine.txt".to_string()]);
    let v = f.folder.attr(entry.id).unwrap().version;
    f.folder.apply_event(Event {
        seq: Seq(5),
        at: 0,
        by: MemberId(9),
        kind: EventKind::Have { file: entry.id, version: v, member: MemberId(9) },
    });
    assert!(f.folder.sole_copies().is_empty());
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event { seq: Seq(seq), at: 0, by: ME, kind }
}

#[tokio::test]
async fn an_open_for_write_right_after_an_unchanged_close_waits_for_the_unlock() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "f", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    // `touch f && echo x >> f`: the close's unlock is still in flight when
    // the next open asks for the lock; refused, it would be EBUSY.
    f.folder.release(fh);
    let fh = f.folder.open(entry.id, OpenMode { write: true, truncate: false, ..OpenMode::default() }).await.expect("open right after the close");
    f.folder.write(fh, 0, b"x\n").unwrap();
    f.folder.release(fh);
    published(&f, 1).await;
    assert_eq!(f.folder.attr(entry.id).unwrap().size, 2);
}

#[tokio::test]
async fn late_events_do_not_move_back_a_renamed_file_nor_revive_a_deleted_one() {
    let f = fixture();
    // Saved as a temporary file, renamed over nothing yet.
    let (tmp, fh) = f.folder.create(FileId::ROOT, "config.lock", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"[core]\n").unwrap();
    f.folder.release(fh);
    published(&f, 1).await;
    f.folder.rename(FileId::ROOT, "config.lock", FileId::ROOT, "config", true).await.unwrap();
    // This member's own events from before the rename arrive now.
    let created = FileEntry { version: Version(0), size: 0, ..tmp.clone() };
    let updated = FileEntry { version: Version(1), ..f.folder.attr(tmp.id).unwrap() };
    let updated = FileEntry { parent: FileId::ROOT, name: "config.lock".into(), ..updated };
    f.folder.apply_events(vec![event(1, EventKind::FileCreated(created)), event(2, EventKind::FileUpdated(updated))]);
    assert!(f.folder.lookup(FileId::ROOT, "config.lock").is_err(), "the temporary name came back");
    assert_eq!(f.folder.lookup(FileId::ROOT, "config").unwrap().id, tmp.id);

    // A second save replaces the first: the first file is deleted here.
    let (second, fh) = f.folder.create(FileId::ROOT, "config.lock", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"[core]\nbare = false\n").unwrap();
    f.folder.release(fh);
    published(&f, 2).await;
    f.folder.rename(FileId::ROOT, "config.lock", FileId::ROOT, "config", true).await.unwrap();
    // The first file's rename arrives late: it must not take `config` back.
    let renamed = FileEntry { name: "config".into(), ..f.folder.attr(second.id).unwrap() };
    let first_renamed = FileEntry { id: tmp.id, version: Version(1), ..renamed.clone() };
    f.folder.apply_events(vec![event(
        3,
        EventKind::FileRenamed { entry: first_renamed, old_parent: FileId::ROOT, old_name: "config.lock".into() },
    )]);
    assert_eq!(f.folder.lookup(FileId::ROOT, "config").unwrap().id, second.id, "config is the second save");
    assert!(f.folder.lookup(FileId::ROOT, "config.lock").is_err());
    // Once the events pass the commit of its deletion (the fake's seqs
    // count its requests), the first file's id is forgotten.
    f.folder.apply_events(vec![event(100, EventKind::FileDeleted { file: tmp.id, parent: FileId::ROOT, name: "config".into() })]);
    assert_eq!(f.folder.lookup(FileId::ROOT, "config").unwrap().id, second.id);
    assert!(f.folder.table.own_is_empty());
}

#[tokio::test]
async fn a_file_deleted_by_another_member_stays_readable_through_an_open_handle() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "movie.txt", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"the whole movie").unwrap();
    f.folder.release(fh);
    published(&f, 1).await;
    let reading = f.folder.open_read(entry.id).unwrap();
    let gone = EventKind::FileDeleted { file: entry.id, parent: FileId::ROOT, name: "movie.txt".into() };
    // Committed after every request of this test (the fake numbers them).
    f.folder.apply_events(vec![Event { seq: Seq(100), at: 0, by: MemberId(8), kind: gone }]);
    assert!(f.folder.lookup(FileId::ROOT, "movie.txt").is_err(), "the name is gone");
    assert_eq!(read_all(&f, reading), b"the whole movie", "as an unlinked file, still readable while open");
    // And through the inode a moment after (a name the kernel still caches).
    let late = f.folder.open_read(entry.id).expect("opening the just-removed file by its inode");
    assert_eq!(read_all(&f, late), b"the whole movie");
}

#[tokio::test]
async fn a_file_renamed_while_its_publish_is_in_flight_is_renamed_once_it_lands() {
    let f = fixture();
    let (tmp, fh) = f.folder.create(FileId::ROOT, "config.lock", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, b"[core]\n").unwrap();
    f.folder.release(fh); // the publish starts
    f.folder.rename(FileId::ROOT, "config.lock", FileId::ROOT, "config", true).await.unwrap();
    let e = f.folder.lookup(FileId::ROOT, "config").expect("renamed in the table");
    assert_eq!((e.id, e.version, e.size), (tmp.id, Version(1), 7), "the name shows the published version");
    assert!(f.folder.lookup(FileId::ROOT, "config.lock").is_err(), "the old name is gone");
}

#[tokio::test]
async fn symlinks_are_shared_and_fifos_and_devices_stay_local() {
    let f = fixture();
    let l = f.folder.symlink(FileId::ROOT, "link", "../dangling", Owner::default()).await.unwrap();
    assert_eq!(f.folder.readlink(l.id).unwrap(), "../dangling");
    assert_eq!(f.folder.node_type(&f.folder.lookup(FileId::ROOT, "link").unwrap()), NodeType::Symlink);
    assert!(matches!(f.tracker.files.lock()[&l.id].kind, FileKind::Symlink(ref t) if t == "../dangling"));
    assert!(matches!(f.folder.symlink(FileId::ROOT, "long", &"x".repeat(4096), Owner::default()).await, Err(ModelError::NameTooLong)));

    let fifo = f.folder.mknod(FileId::ROOT, "pipe", MknodKind::Fifo, 0o640, Owner::default()).await.unwrap();
    assert_eq!(f.folder.node_type(&fifo), NodeType::Fifo);
    assert!(matches!(f.folder.readlink(fifo.id), Err(ModelError::NotSymlink)));
    assert!(!f.tracker.files.lock().values().any(|e| e.name == "pipe"), "never sent to the tracker");
    let listed: Vec<_> = f.folder.readdir(FileId::ROOT).unwrap().into_iter().map(|(_, t, n)| (t, n)).collect();
    assert_eq!(listed, [(NodeType::Symlink, "link".to_string()), (NodeType::Fifo, "pipe".to_string())]);
    assert!(matches!(f.folder.mknod(FileId::ROOT, "pipe", MknodKind::Socket, 0o600, Owner::default()).await, Err(ModelError::Exists)));
    assert!(matches!(f.folder.symlink(FileId::ROOT, "pipe", "t", Owner::default()).await, Err(ModelError::Exists)));
    let null = f.folder.mknod(FileId::ROOT, "null", MknodKind::CharDevice(0x103), 0o666, Owner::default()).await.unwrap();
    assert_eq!((f.folder.node_type(&null), f.folder.node_type(&null).rdev()), (NodeType::CharDevice(0x103), 0x103));
    let disk = f.folder.mknod(FileId::ROOT, "disk", MknodKind::BlockDevice(0x801), 0o600, Owner::default()).await.unwrap();
    assert_eq!(f.folder.node_type(&disk), NodeType::BlockDevice(0x801));
    assert!(!f.tracker.files.lock().values().any(|e| e.name == "null" || e.name == "disk"), "devices never sent to the tracker");
    f.folder.remove(FileId::ROOT, "null", false).await.unwrap();
    f.folder.remove(FileId::ROOT, "disk", false).await.unwrap();

    // Moved, changed and removed here only.
    f.folder.rename(FileId::ROOT, "pipe", FileId::ROOT, "fifo", true).await.unwrap();
    assert_eq!(f.folder.lookup(FileId::ROOT, "fifo").unwrap().id, fifo.id);
    assert_eq!(f.folder.set_attrs(fifo.id, AttrChange { mode: Some(0o600), mtime: Some(5), ..Default::default() }).await.unwrap().mode, 0o600);
    f.folder.remove(FileId::ROOT, "fifo", false).await.unwrap();
    assert!(matches!(f.folder.lookup(FileId::ROOT, "fifo"), Err(ModelError::NotFound)));
}

/// setuid, setgid (and sticky on a file) are never sent to the group, but
/// the member that sets them keeps them for itself: its own mount shows
/// what it asked for, until a mode without them clears them.
#[tokio::test]
async fn setuid_stays_with_the_member_that_set_it_and_a_directorys_setgid_is_shared() {
    let f = fixture();
    let staff = Owner { user: "ana".into(), group: "staff".into() };
    let d = f.folder.mkdir(FileId::ROOT, "shared", 0o2775, staff).await.unwrap();
    assert_eq!(d.mode, 0o2775, "what mkdir answers");
    assert_eq!(f.folder.lookup(FileId::ROOT, "shared").unwrap().mode, 0o2775);
    assert_eq!(f.tracker.files.lock()[&d.id].mode, 0o2775, "the group gets a directory's setgid bit");
    // A setgid directory gives new entries its group, and its
    // subdirectories its setgid bit.
    let bo = Owner { user: "bo".into(), group: "bo".into() };
    let sub = f.folder.mkdir(d.id, "sub", 0o755, bo.clone()).await.unwrap();
    assert_eq!((sub.mode, sub.owner.user.as_str(), sub.owner.group.as_str()), (0o2755, "bo", "staff"));
    let (e, fh) = f.folder.create(d.id, "tool", 0o4755, OpenMode::default(), true, bo).await.unwrap();
    assert_eq!(f.tracker.files.lock()[&e.id].owner.group, "staff");
    f.folder.write(fh, 0, b"#!/bin/sh\n").unwrap();
    f.folder.release(fh);
    assert_eq!((e.mode, f.folder.attr(e.id).unwrap().mode), (0o4755, 0o4755));
    assert_eq!(f.tracker.files.lock()[&e.id].mode, 0o755);
    // A later version or attribute change from the group keeps them here.
    published(&f, 1).await;
    assert_eq!(f.folder.attr(e.id).unwrap().mode, 0o4755);
    // Removed with the file.
    f.folder.remove(d.id, "tool", false).await.unwrap();
    assert_eq!(f.folder.table.own_bits(e.id), 0);
}

/// A FIFO with two names: one node (one inode, `st_nlink` 2, a chmod seen
/// through both), the other name kept when one goes; nothing reaches the
/// tracker.
#[tokio::test]
async fn hard_links_to_a_fifo_are_local_names_of_one_node() {
    let f = fixture();
    let fifo = f.folder.mknod(FileId::ROOT, "a", MknodKind::Fifo, 0o644, Owner::default()).await.unwrap();
    let b = f.folder.link(fifo.id, FileId::ROOT, "b").await.unwrap();
    assert_eq!((b.id, f.folder.nlink(&b)), (fifo.id, 2));
    assert_eq!(f.folder.lookup(FileId::ROOT, "b").unwrap().id, fifo.id);
    f.folder.set_attrs(fifo.id, AttrChange { mode: Some(0o600), ..Default::default() }).await.unwrap();
    assert_eq!(f.folder.lookup(FileId::ROOT, "b").unwrap().mode, 0o600);
    f.folder.remove(FileId::ROOT, "a", false).await.unwrap();
    let left = f.folder.lookup(FileId::ROOT, "b").unwrap();
    assert_eq!((left.id, f.folder.nlink(&left)), (fifo.id, 1));
    assert!(matches!(f.folder.lookup(FileId::ROOT, "a"), Err(ModelError::NotFound)));
    assert!(!f.tracker.files.lock().values().any(|e| e.name == "a" || e.name == "b"), "never sent to the tracker");
}

/// The publish of an edit names the version it started from and the
/// ranges written; a new file has no base, and a rewrite from scratch
/// (O_TRUNC) names its base with everything changed.
#[tokio::test]
async fn an_edit_publishes_what_it_changed_of_its_base() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "big", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    f.folder.write(fh, 0, &vec![7u8; 100_000]).unwrap();
    f.folder.release(fh);
    published(&f, 1).await;
    let v1 = f.folder.attr(entry.id).unwrap().info_hash.unwrap();

    let fh = f.folder.open(entry.id, OpenMode { write: true, ..OpenMode::default() }).await.unwrap();
    f.folder.write(fh, 50_000, b"0123456789").unwrap();
    f.folder.release(fh);
    published(&f, 2).await;
    let v2 = f.folder.attr(entry.id).unwrap().info_hash.unwrap();
    let rh = f.folder.open_read(entry.id).unwrap();
    let got = read_all(&f, rh);
    assert_eq!((&got[..50_000], &got[50_000..50_010], got.len()), (&[7u8; 50_000][..], &b"0123456789"[..], 100_000));

    let truncating = OpenMode { write: true, truncate: true, ..OpenMode::default() };
    let fh = f.folder.open(entry.id, truncating).await.unwrap();
    f.folder.write(fh, 0, b"new").unwrap();
    f.folder.release(fh);
    published(&f, 3).await;

    let deltas = f.content.deltas.lock().clone();
    assert_eq!(
        deltas,
        vec![
            None,
            Some(Delta { base: v1, dirty: vec![(48 * 1024, 64 * 1024)] }),
            Some(Delta { base: v2, dirty: vec![(0, u64::MAX)] }),
        ]
    );
}

/// tar and cp -a chown each file they create to the owner it already has:
/// while the file is being written here that costs no request; a real
/// change of owner still goes to the tracker at once.
#[tokio::test]
async fn a_chown_to_the_owner_a_file_being_written_has_sends_nothing() {
    let f = fixture();
    let ana = Owner { user: "ana".into(), group: "staff".into() };
    let (e, fh) = f.folder.create(FileId::ROOT, "a", 0o644, OpenMode::default(), true, ana.clone()).await.unwrap();
    let requests = *f.tracker.next.lock();
    let same = AttrChange { owner: Some(ana.clone()), ..Default::default() };
    assert_eq!(f.folder.set_attrs(e.id, same).await.unwrap().owner, ana);
    assert_eq!(*f.tracker.next.lock(), requests, "no request for the owner it has");
    let bo = Owner { user: "bo".into(), group: "staff".into() };
    let other = AttrChange { owner: Some(bo.clone()), ..Default::default() };
    assert_eq!(f.folder.set_attrs(e.id, other).await.unwrap().owner, bo);
    assert_eq!(f.tracker.files.lock()[&e.id].owner, bo, "a change of owner reaches the tracker");
    f.folder.release(fh);
}

/// An open for write of a large local version makes a copy-on-write
/// staging copy: reads see the version at once, a write keeps the rest of
/// its blocks, a cut below the size waits for the copy, `fsync` works, and
/// the publish carries every byte; nothing is left in the staging dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_in_place_of_a_large_file_goes_through_its_overlay() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "disk", 0o644, OpenMode::default(), false, Owner::default()).await.unwrap();
    let size = super::overlay::OVERLAY_MIN as usize + (3 << 20);
    let base: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    for (k, chunk) in base.chunks(1 << 20).enumerate() {
        f.folder.write(fh, (k << 20) as u64, chunk).unwrap();
    }
    f.folder.release(fh);
    published(&f, 1).await;

    let fh = f.folder.open(entry.id, OpenMode { write: true, ..OpenMode::default() }).await.unwrap();
    let staging = f.folder.writes.staging(entry.id).unwrap();
    assert!(staging.overlay.is_some(), "a version of {size} bytes is not copied at open");
    let mut want = base.clone();
    f.folder.write(fh, 3_000_005, b"0123456789").unwrap();
    want[3_000_005..3_000_015].copy_from_slice(b"0123456789");
    let read = |off: u64, len: u32| match f.folder.read_plan(fh, off, len).unwrap() {
        ReadPlan::Data(d) => d,
        ReadPlan::Fetch { .. } => panic!("a staging copy is read here"),
    };
    assert_eq!(read(2_990_000, 40_000), want[2_990_000..3_030_000], "the write and the base around it");
    assert_eq!(read(size as u64 - 10, 100), want[size - 10..], "the end of the base");
    f.folder.fsync(fh).unwrap();
    let cut = size as u64 - 1_000_003;
    f.folder.set_size(entry.id, Some(fh), cut).await.unwrap();
    want.truncate(cut as usize);
    assert!(staging.overlay.as_ref().unwrap().0.is_complete(), "the cut waited for the copy");
    drop(staging);
    f.folder.release(fh);
    published(&f, 2).await;

    let rh = f.folder.open_read(entry.id).unwrap();
    let mut got = Vec::new();
    while got.len() < want.len() {
        match f.folder.read_plan(rh, got.len() as u64, 1 << 20).unwrap() {
            ReadPlan::Data(d) if !d.is_empty() => got.extend_from_slice(&d),
            _ => break,
        }
    }
    assert!(got == want, "the published version: {} bytes, {} expected", got.len(), want.len());
    let left: Vec<_> = std::fs::read_dir(f.dir.path().join("staging")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in the staging dir: {left:?}");
}

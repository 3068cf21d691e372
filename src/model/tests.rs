//! Unit tests of the folder model against an in-memory tracker and content
//! store: locking, publishing, conflicts, offline retry, own-edit reads.

use super::*;
use bytes::Bytes;
use std::path::Path;
use titorrent_tracker::proto::{LeaseId, ProtoError};

/// Content kept in memory, addressed by a fake info hash (first bytes of a
/// counter); `local` decides whether a version counts as complete here.
#[derive(Default)]
struct FakeContent {
    store: Mutex<HashMap<InfoHash, Vec<u8>>>,
    local: Mutex<HashSet<InfoHash>>,
    dir: Mutex<Option<PathBuf>>,
    next: Mutex<u8>,
}

impl Content for Arc<FakeContent> {
    async fn publish(&self, staging: &Path, _name: &str) -> Result<PublishedContent, ContentError> {
        // As the swarm: the bytes are taken, the staging file stays.
        let data = std::fs::read(staging).map_err(ContentError::Io)?;
        let mut n = self.next.lock();
        *n += 1;
        let ih = InfoHash([*n; 20]);
        let size = data.len() as u64;
        self.store.lock().insert(ih, data);
        self.local.lock().insert(ih);
        Ok(PublishedContent { info_hash: ih, torrent: vec![b'd', *n, b'e'], size })
    }
    async fn ensure(&self, info_hash: InfoHash, torrent: &[u8], _peers: Vec<SocketAddr>, _fetch: Fetch) -> Result<(), ContentError> {
        if torrent.get(1) != Some(&info_hash.0[0]) {
            return Err(ContentError::HashMismatch);
        }
        Ok(())
    }
    async fn read(&self, info_hash: InfoHash, offset: u64, len: u32) -> Result<Bytes, ContentError> {
        let store = self.store.lock();
        let d = store.get(&info_hash).ok_or(ContentError::NotFound)?;
        let start = (offset as usize).min(d.len());
        let end = (start + len as usize).min(d.len());
        Ok(Bytes::copy_from_slice(&d[start..end]))
    }
    fn live_count(&self) -> usize {
        0
    }

    fn read_local(&self, _info_hash: InfoHash, _offset: u64, _len: u32) -> Option<Vec<u8>> {
        None
    }

    fn local_path(&self, info_hash: InfoHash) -> Option<PathBuf> {
        if !self.local.lock().contains(&info_hash) {
            return None;
        }
        let dir = self.dir.lock().clone()?;
        let p = dir.join(info_hash.to_string());
        std::fs::write(&p, self.store.lock().get(&info_hash)?).ok()?;
        Some(p)
    }
    fn progress(&self, _info_hash: InfoHash) -> Option<(u64, u64)> {
        None
    }
    fn add_peers(&self, _peers: &[SocketAddr]) {}
    async fn wait_complete(&self, info_hash: InfoHash) -> Result<(), ContentError> {
        self.local.lock().insert(info_hash);
        Ok(())
    }
    async fn forget(&self, info_hash: InfoHash) -> Result<(), ContentError> {
        self.store.lock().remove(&info_hash);
        self.local.lock().remove(&info_hash);
        Ok(())
    }
}

/// A tracker that keeps one file table and lock table in memory.
#[derive(Default)]
struct FakeTracker {
    files: Mutex<HashMap<FileId, FileEntry>>,
    locks: Mutex<HashMap<FileId, (LeaseId, MemberId)>>,
    next: Mutex<u64>,
    offline: AtomicBool,
    publishes: Mutex<Vec<Request>>,
    /// Member name the fake reports as holding foreign locks.
    foreign_holder: Mutex<Option<LockHolder>>,
    torrents: Mutex<HashMap<(FileId, Version), Vec<u8>>>,
    haves: Mutex<Vec<(FileId, Version)>>,
}

const ME: MemberId = MemberId(7);

impl Coordinator for Arc<FakeTracker> {
    async fn request(&self, req: Request) -> Result<Response, CoordError> {
        if self.offline.load(Ordering::SeqCst) {
            return Err(CoordError::Offline);
        }
        let refuse = |e| Err(CoordError::Refused(e));
        let mut next = self.next.lock();
        *next += 1;
        let n = *next;
        drop(next);
        match req {
            Request::CreateFile { parent, name, kind, mode, lock } => {
                if self.files.lock().values().any(|e| e.parent == parent && e.name == name) {
                    return refuse(ProtoError::AlreadyExists);
                }
                let id = FileId(100 + n);
                let entry = FileEntry {
                    id,
                    parent,
                    name,
                    kind,
                    size: 0,
                    mtime: 0,
                    mode,
                    version: Version(0),
                    info_hash: None,
                    author: ME,
                };
                self.files.lock().insert(id, entry.clone());
                let lease = lock.then(|| {
                    self.locks.lock().insert(id, (LeaseId(n), ME));
                    Lease { id: LeaseId(n), file: id, expires: now_ms() + 30_000, version: Version(0) }
                });
                Ok(Response::File { entry, lease })
            }
            Request::Lock { file } => {
                if let Some(h) = self.foreign_holder.lock().clone() {
                    return refuse(ProtoError::Locked(h));
                }
                if let Some((_, holder)) = self.locks.lock().get(&file) {
                    // As the real tracker: locked is locked, whoever asks.
                    let h = LockHolder { member: *holder, member_name: "me".into(), since: 0, expires: now_ms() + 30_000 };
                    return refuse(ProtoError::Locked(h));
                }
                let version = self.files.lock().get(&file).map(|e| e.version).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
                self.locks.lock().insert(file, (LeaseId(n), ME));
                Ok(Response::Locked(Lease { id: LeaseId(n), file, expires: now_ms() + 30_000, version }))
            }
            Request::Unlock { lease } => {
                self.locks.lock().retain(|_, (l, _)| *l != lease);
                Ok(Response::Ok)
            }
            Request::Renew { .. } => Ok(Response::Ok),
            Request::Publish { file, base, lease, size, mtime, info_hash, ref torrent, .. } => {
                self.publishes.lock().push(req.clone());
                let mut files = self.files.lock();
                let e = files.get_mut(&file).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
                if e.version != base {
                    return refuse(ProtoError::StaleVersion { base, current: e.version });
                }
                if self.locks.lock().get(&file).map(|(l, _)| *l) != Some(lease) {
                    return refuse(ProtoError::NoLease);
                }
                e.version = Version(e.version.0 + 1);
                e.size = size;
                e.mtime = mtime;
                e.info_hash = info_hash;
                self.torrents.lock().insert((file, e.version), torrent.clone());
                self.locks.lock().remove(&file);
                Ok(Response::Published(e.clone()))
            }
            Request::GetTorrent { file, version } => {
                self.torrents.lock().get(&(file, version)).cloned().map(Response::Torrent).ok_or(CoordError::Refused(ProtoError::NoTorrent))
            }
            Request::ListMembers => Ok(Response::Members(vec![])),
            Request::Delete { file } => {
                self.files.lock().remove(&file).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
                Ok(Response::Ok)
            }
            Request::Rename { file, new_parent, new_name, replace } => {
                let mut files = self.files.lock();
                let target = files.values().find(|e| e.parent == new_parent && e.name == new_name).map(|e| e.id);
                match target {
                    Some(t) if t != file && !replace => return refuse(ProtoError::AlreadyExists),
                    Some(t) if t != file => {
                        files.remove(&t);
                    }
                    _ => {}
                }
                let e = files.get_mut(&file).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
                e.parent = new_parent;
                e.name = new_name;
                Ok(Response::File { entry: e.clone(), lease: None })
            }
            Request::Have { file, version } => {
                self.haves.lock().push((file, version));
                Ok(Response::Ok)
            }
            other => Err(CoordError::Failed(format!("fake tracker does not do {other:?}"))),
        }
    }
}

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
    let (entry, fh) = f.folder.create(FileId::ROOT, "a.txt", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "log", 0o644, append, false).await.unwrap();
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
    };
    f.tracker.files.lock().insert(theirs.id, theirs);
    let err = f.folder.create(FileId::ROOT, "race", 0o644, OpenMode::default(), true).await.unwrap_err();
    assert!(matches!(err, ModelError::Exists), "{err:?}");
}

#[tokio::test]
async fn atime_is_this_members_own_set_by_utimensat_and_by_reads_as_relatime() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "a", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "empty", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "notes.txt", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "doc.txt", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "crash.txt", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "later", 0o644, OpenMode::default(), false).await.unwrap();
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
    let err = f.folder.create(FileId::ROOT, "x", 0o644, OpenMode::default(), false).await.unwrap_err();
    assert!(matches!(err, ModelError::Offline));
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
        assert!(matches!(f.folder.create(FileId::ROOT, bad, 0o644, OpenMode::default(), false).await, Err(ModelError::InvalidName)));
    }
    assert!(f.tracker.files.lock().is_empty());
}

#[tokio::test]
async fn only_the_last_k_versions_stay_local() {
    let f = fixture();
    f.folder.set_keep_versions(2);
    let (entry, fh) = f.folder.create(FileId::ROOT, "log.txt", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (a, fh) = f.folder.create(FileId::ROOT, "a", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "draft.md", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "mine.txt", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (entry, fh) = f.folder.create(FileId::ROOT, "f", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (tmp, fh) = f.folder.create(FileId::ROOT, "config.lock", 0o644, OpenMode::default(), false).await.unwrap();
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
    let (second, fh) = f.folder.create(FileId::ROOT, "config.lock", 0o644, OpenMode::default(), false).await.unwrap();
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
    // Once its deletion's event is in, the first file's id is forgotten.
    f.folder.apply_events(vec![event(4, EventKind::FileDeleted { file: tmp.id, parent: FileId::ROOT, name: "config".into() })]);
    assert_eq!(f.folder.lookup(FileId::ROOT, "config").unwrap().id, second.id);
    assert!(f.folder.inner.lock().deleted_here.is_empty());
}

#[tokio::test]
async fn a_file_deleted_by_another_member_stays_readable_through_an_open_handle() {
    let f = fixture();
    let (entry, fh) = f.folder.create(FileId::ROOT, "movie.txt", 0o644, OpenMode::default(), false).await.unwrap();
    f.folder.write(fh, 0, b"the whole movie").unwrap();
    f.folder.release(fh);
    published(&f, 1).await;
    let reading = f.folder.open_read(entry.id).unwrap();
    let gone = EventKind::FileDeleted { file: entry.id, parent: FileId::ROOT, name: "movie.txt".into() };
    f.folder.apply_events(vec![Event { seq: Seq(1), at: 0, by: MemberId(8), kind: gone }]);
    assert!(f.folder.lookup(FileId::ROOT, "movie.txt").is_err(), "the name is gone");
    assert_eq!(read_all(&f, reading), b"the whole movie", "as an unlinked file, still readable while open");
    // And through the inode a moment after (a name the kernel still caches).
    let late = f.folder.open_read(entry.id).expect("opening the just-removed file by its inode");
    assert_eq!(read_all(&f, late), b"the whole movie");
}

#[tokio::test]
async fn a_file_renamed_while_its_publish_is_in_flight_is_renamed_once_it_lands() {
    let f = fixture();
    let (tmp, fh) = f.folder.create(FileId::ROOT, "config.lock", 0o644, OpenMode::default(), false).await.unwrap();
    f.folder.write(fh, 0, b"[core]\n").unwrap();
    f.folder.release(fh); // the publish starts
    f.folder.rename(FileId::ROOT, "config.lock", FileId::ROOT, "config", true).await.unwrap();
    let e = f.folder.lookup(FileId::ROOT, "config").expect("renamed in the table");
    assert_eq!((e.id, e.version, e.size), (tmp.id, Version(1), 7), "the name shows the published version");
    assert!(f.folder.lookup(FileId::ROOT, "config.lock").is_err(), "the old name is gone");
}

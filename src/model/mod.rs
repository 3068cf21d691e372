//! The shared folder as one member sees it: the file table, open handles,
//! this member's write sessions (lock held, staging copy, publish), and the
//! application of the tracker's events. Every operation the FUSE layer
//! needs, answered from memory where it can be.
//!
//! A file's write state on this member is one of (see `WriteState`):
//!
//! ```text
//!   (none) --open for write: lock granted--> Open{opens>0}
//!   Open   --last close, unchanged-------->  (none)       [unlock]
//!   Open   --last close, changed---------->  Publishing   [hash, seed, publish]
//!   Publishing --tracker accepted--------->  (none)       [lease released by publish]
//! ```
//!
//! While a file has a write state, every read of it on this member is served
//! from the staging copy, so this member always sees its own edits.

pub mod error;
mod history;
pub mod ports;
mod publish;
mod status;
pub mod tree;

pub use publish::conflict_name;
pub use status::{DiskSpace, XATTR_PREFIX};

#[cfg(test)]
mod tests;

pub use error::{ContentError, CoordError, ModelError, Result};
pub use ports::{Content, Coordinator, Fetch, KernelCache, PublishedContent, Stripe};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use titorrent_tracker::proto::{
    Event, EventKind, FileEntry, FileId, FileKind, InfoHash, Lease, LockHolder, MemberId, MemberInfo, ProtoError,
    Request, Response, Seq, UnixMillis, Version,
};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tree::Tree;

/// Formats a time as the log lines show it ("12:03:04 UTC").
pub fn fmt_time(ms: UnixMillis) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, (s / 60) % 60, s % 60)
}

pub fn now_ms() -> UnixMillis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// How a file is being opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
    /// `O_APPEND`: every write lands at the end of the staging copy,
    /// whatever offset the kernel sends (it computes one from the size it
    /// caches, which can predate the version this member's lock starts from).
    pub append: bool,
}

/// An open file handle's number, as handed to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

#[derive(Debug)]
struct Handle {
    file: FileId,
    write: bool,
    append: bool,
}

#[derive(Debug)]
struct Staging {
    path: PathBuf,
    file: File,
    /// Held while an append finds the end and writes there, so that two
    /// appends through this member's handles never take the same end.
    appending: Mutex<()>,
}

#[derive(Debug)]
struct WriteState {
    lease: Lease,
    /// How long leases last, as observed when this one was granted.
    lease_len_ms: u64,
    staging: Arc<Staging>,
    opens: u32,
    dirty: bool,
    publishing: bool,
    /// Deleted while open here: the last close drops it instead of publishing.
    deleted: bool,
    /// Mode and mtime set while the file is being written; they travel with
    /// (mtime) or right after (mode) the publish, so they are not overtaken.
    pending_mode: Option<u32>,
    pending_mtime: Option<UnixMillis>,
    /// The tracker refused to renew the lease (it ran out, and another
    /// member may have the lock now): no more renewals; the publish will be
    /// refused and kept as a conflict copy.
    lease_lost: bool,
}

impl WriteState {
    /// The mtime of the edit: the one a program set, else, once written,
    /// the staging copy's (the time of the last write). The publish carries
    /// the same, so `stat` shows one mtime before and after it lands.
    fn edit_mtime(&self, staging: &std::fs::Metadata) -> Option<UnixMillis> {
        if self.pending_mtime.is_some() {
            return self.pending_mtime;
        }
        let written = staging.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        self.dirty.then_some(written.as_millis() as UnixMillis)
    }

    fn new(lease: Lease, staging: Staging, dirty: bool) -> Self {
        WriteState {
            lease_len_ms: lease.expires.saturating_sub(now_ms()).max(1000),
            lease,
            staging: Arc::new(staging),
            opens: 1,
            dirty,
            publishing: false,
            deleted: false,
            pending_mode: None,
            pending_mtime: None,
            lease_lost: false,
        }
    }
}

/// What a read needs, decided from memory.
pub enum ReadPlan {
    /// The bytes, read from a local file.
    Data(Vec<u8>),
    /// Must be fetched from the swarm.
    Fetch { file: FileId, version: Version, info_hash: InfoHash },
}

struct Inner {
    tree: Tree,
    seq: Option<Seq>,
    handles: HashMap<Fh, Handle>,
    next_fh: u64,
    writes: HashMap<FileId, WriteState>,
    locks: HashMap<FileId, LockHolder>,
    members: HashMap<MemberId, MemberInfo>,
    /// Open files of complete local versions, so reads don't reopen them.
    local_files: HashMap<InfoHash, Arc<File>>,
    /// Versions already handed to the swarm.
    ensured: HashSet<InfoHash>,
    /// Files and directories this member keeps local whatever the policy.
    pins: HashSet<FileId>,
    /// Per file, the info hashes of its versions this member has seen,
    /// oldest first; beyond `keep_versions` they are forgotten.
    history: history::History,
    /// Files whose lock this member is giving back (an Unlock in flight):
    /// a new open for write waits, or the tracker would refuse it as locked
    /// by this very member (`touch f && echo x >> f`).
    unlocking: HashSet<FileId>,
    /// Files this member deleted (or replaced by a rename) whose deletion's
    /// event has not arrived yet: events about them before it are stale and
    /// would bring them back (a `config.lock` renamed over `config`, then
    /// created again, must not reappear from its own late creation event).
    deleted_here: HashSet<FileId>,
    /// Who holds a complete copy of each file's current version: its
    /// author, and every member that reported `Have` for it.
    holders: HashMap<FileId, (Version, HashSet<MemberId>)>,
    /// Versions whose completion this run reports (or has reported).
    reported: HashSet<InfoHash>,
    /// Files just removed from the table (deleted, or replaced by a rename),
    /// still readable through their inode: by handles opened before (as an
    /// unlinked file stays readable), and for [`ORPHAN_GRACE`] by opens
    /// through a name the kernel still caches (an open racing a replace
    /// gets the old file, not ENOENT).
    orphans: HashMap<FileId, (FileEntry, std::time::Instant)>,
    /// Access times on this member (not shared: a read here is nobody
    /// else's business), for the files whose atime differs from their
    /// mtime. Set by `utimensat` and by reads (relatime).
    atimes: HashMap<FileId, UnixMillis>,
}

/// Lease renewals sent at once.
const RENEWALS_IN_FLIGHT: usize = 64;

/// How long a removed file stays openable through its inode when no handle
/// holds it: longer than the kernel trusts a cached name (fuse::TTL).
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

impl Inner {
    /// A file's entry: in the table, or removed from it a moment ago.
    fn entry(&self, id: FileId) -> Option<&FileEntry> {
        self.tree.get(id).or_else(|| self.orphans.get(&id).map(|(e, _)| e))
    }

    /// Takes an entry out of the table, keeping a file as an orphan.
    fn remove_from_tree(&mut self, id: FileId) -> tree::Applied {
        let now = std::time::Instant::now();
        let open: HashSet<FileId> = self.handles.values().map(|h| h.file).collect();
        self.orphans.retain(|o, (_, at)| now.duration_since(*at) < ORPHAN_GRACE || open.contains(o));
        if let Some(e) = self.tree.get(id).filter(|e| e.kind == FileKind::File) {
            self.orphans.insert(id, (e.clone(), now));
        }
        self.atimes.remove(&id);
        self.tree.remove(id)
    }
}

/// Paths a folder keeps on local disk.
#[derive(Clone, Debug)]
pub struct FolderDirs {
    /// The member's state directory (shown as `user.titorrent.state_dir`).
    pub state_root: PathBuf,
    /// The list of pinned file ids.
    pub pins: PathBuf,
    pub staging: PathBuf,
    /// Edits waiting for the tracker; survives restarts.
    pub outbox: PathBuf,
    pub torrents: PathBuf,
    pub conflicts: PathBuf,
}

pub struct Folder<C: Content, T: Coordinator> {
    content: C,
    coord: T,
    me: MemberId,
    /// This member's name, for conflict copies.
    me_name: String,
    dirs: FolderDirs,
    kernel: OnceLock<Box<dyn KernelCache>>,
    inner: Mutex<Inner>,
    online: AtomicBool,
    /// Fetch every new version in the background (the default), or only
    /// what programs read and what is pinned.
    background: AtomicBool,
    /// How many versions of each file stay local (older ones are collected).
    keep_versions: std::sync::atomic::AtomicUsize,
    /// Signalled whenever the tree or a write state changes.
    changed: Notify,
    /// Serialises opens for write of one file on this member.
    write_opens: Mutex<HashMap<FileId, Arc<tokio::sync::Mutex<()>>>>,
    tasks: TaskTracker,
    rt: tokio::runtime::Handle,
}

impl<C: Content, T: Coordinator> Folder<C, T> {
    pub fn new(
        content: C,
        coord: T,
        me: (MemberId, String),
        dirs: FolderDirs,
        rt: tokio::runtime::Handle,
    ) -> std::io::Result<Arc<Self>> {
        let (me, me_name) = me;
        for d in [&dirs.staging, &dirs.outbox, &dirs.torrents, &dirs.conflicts] {
            std::fs::create_dir_all(d)?;
        }
        let folder = Arc::new(Folder {
            content,
            coord,
            me,
            me_name,
            dirs,
            kernel: OnceLock::new(),
            inner: Mutex::new(Inner {
                tree: Tree::new(),
                seq: None,
                handles: HashMap::new(),
                next_fh: 1,
                writes: HashMap::new(),
                locks: HashMap::new(),
                members: HashMap::new(),
                local_files: HashMap::new(),
                ensured: HashSet::new(),
                pins: HashSet::new(),
                history: history::History::default(),
                unlocking: HashSet::new(),
                deleted_here: HashSet::new(),
                orphans: HashMap::new(),
                holders: HashMap::new(),
                reported: HashSet::new(),
                atimes: HashMap::new(),
            }),
            online: AtomicBool::new(false),
            background: AtomicBool::new(true),
            keep_versions: std::sync::atomic::AtomicUsize::new(10),
            changed: Notify::new(),
            write_opens: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            rt,
        });
        folder.load_pins();
        Ok(folder)
    }

    /// Chooses between fetching every new version in the background and
    /// fetching on demand (reads and pins only).
    pub fn set_background_fetch(&self, on: bool) {
        self.background.store(on, Ordering::Relaxed);
    }

    /// How many versions of each file to keep local (at least 1).
    pub fn set_keep_versions(&self, k: usize) {
        self.keep_versions.store(k.max(1), Ordering::Relaxed);
    }

    /// Records a file's new current version and forgets local versions of
    /// it beyond the last K, unless another file's current version has the
    /// same content.
    fn collect_old_versions(self: &Arc<Self>, id: FileId) {
        let k = self.keep_versions.load(Ordering::Relaxed);
        let doomed: Vec<InfoHash> = {
            let mut inner = self.inner.lock();
            let Some(ih) = inner.tree.get(id).and_then(|e| e.info_hash) else { return };
            let mut out = inner.history.push(id, ih, k);
            // Indexed, not scanned: this runs for every new version.
            out.retain(|h| !inner.tree.holds(h) && !inner.history.holds(h));
            for h in &out {
                inner.ensured.remove(h);
                inner.local_files.remove(h);
            }
            out
        };
        for ih in doomed {
            let this = self.clone();
            self.tasks.spawn_on(
                async move {
                    match this.content.forget(ih).await {
                        Ok(()) => tracing::debug!(%ih, "old version collected"),
                        Err(e) => tracing::warn!(%ih, error = %e, "could not collect an old version"),
                    }
                },
                &self.rt,
            );
        }
    }

    pub fn content(&self) -> &C {
        &self.content
    }

    /// Connects the kernel's caches once the mount exists.
    pub fn set_kernel(&self, k: Box<dyn KernelCache>) {
        let _ = self.kernel.set(k);
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    pub fn last_seq(&self) -> Option<Seq> {
        self.inner.lock().seq
    }

    pub fn path_of(&self, id: FileId) -> String {
        self.inner.lock().tree.path(id)
    }

    // ---- answered from memory -------------------------------------------

    /// The entry as this member sees it: a file being written here shows the
    /// staging copy's size.
    pub fn attr(&self, id: FileId) -> Result<FileEntry> {
        let inner = self.inner.lock();
        let mut e = inner.entry(id).cloned().ok_or(ModelError::NotFound)?;
        if let Some(w) = inner.writes.get(&id) {
            if let Ok(md) = w.staging.file.metadata() {
                e.size = md.len();
                if let Some(t) = w.edit_mtime(&md) {
                    e.mtime = t;
                }
            }
        }
        Ok(e)
    }

    pub fn lookup(&self, parent: FileId, name: &str) -> Result<FileEntry> {
        if name.len() > NAME_MAX {
            return Err(ModelError::NameTooLong);
        }
        let id = {
            let inner = self.inner.lock();
            let p = inner.tree.get(parent).ok_or(ModelError::NotFound)?;
            if p.kind != FileKind::Dir {
                return Err(ModelError::NotDir);
            }
            inner.tree.lookup(parent, name).ok_or(ModelError::NotFound)?.id
        };
        self.attr(id)
    }

    pub fn readdir(&self, dir: FileId) -> Result<Vec<(FileId, FileKind, String)>> {
        let inner = self.inner.lock();
        let kids = inner.tree.children(dir).ok_or_else(|| {
            if inner.tree.get(dir).is_some() { ModelError::NotDir } else { ModelError::NotFound }
        })?;
        Ok(kids.into_iter().map(|e| (e.id, e.kind, e.name.clone())).collect())
    }

    /// Who holds a file's lock, as last heard.
    pub fn lock_holder(&self, id: FileId) -> Option<LockHolder> {
        self.inner.lock().locks.get(&id).cloned()
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        self.inner.lock().members.values().cloned().collect()
    }

    /// This member's stripe of a version `author` published: its rank among
    /// the online members other than the author, by member id. Those are the
    /// members that fetch it at the same time when replication is on.
    fn stripe(&self, inner: &Inner, author: Option<MemberId>) -> Stripe {
        let mut fetchers: Vec<MemberId> = inner
            .members
            .values()
            .filter(|m| (m.online || m.id == self.me) && Some(m.id) != author)
            .map(|m| m.id)
            .collect();
        if !fetchers.contains(&self.me) {
            fetchers.push(self.me);
        }
        fetchers.sort_unstable();
        let index = fetchers.iter().position(|m| *m == self.me).unwrap_or(0);
        Stripe { index: index as u32, count: fetchers.len() as u32 }
    }

    fn peers(&self) -> Vec<SocketAddr> {
        let inner = self.inner.lock();
        inner.members.values().filter(|m| m.online && m.id != self.me).filter_map(|m| m.peer_addr).collect()
    }

    // ---- open / create ---------------------------------------------------

    fn new_handle(&self, inner: &mut Inner, file: FileId, mode: OpenMode) -> Fh {
        let fh = Fh(inner.next_fh);
        inner.next_fh += 1;
        inner.handles.insert(fh, Handle { file, write: mode.write, append: mode.write && mode.append });
        fh
    }

    /// The file at a path relative to the folder's root ("docs/a.txt").
    pub fn resolve(&self, path: &std::path::Path) -> Option<FileId> {
        let inner = self.inner.lock();
        let mut cur = FileId::ROOT;
        for comp in path.components() {
            match comp {
                std::path::Component::Normal(n) => cur = inner.tree.lookup(cur, n.to_str()?)?.id,
                std::path::Component::RootDir | std::path::Component::CurDir => {}
                _ => return None,
            }
        }
        Some(cur)
    }

    /// The complete local copy of a file's current version, when reads can
    /// go straight to it (no write session of this member on the file).
    /// The FUSE layer hands it to the kernel for passthrough reads.
    pub fn local_content(&self, id: FileId) -> Option<(InfoHash, PathBuf)> {
        let inner = self.inner.lock();
        if inner.writes.contains_key(&id) {
            return None;
        }
        let ih = inner.tree.get(id)?.info_hash?;
        drop(inner);
        self.content.local_path(ih).map(|p| (ih, p))
    }

    /// Opens a file for reading: from memory, never waits. Notes the access
    /// as relatime does: when the last one noted is older than the file's
    /// last change, or a day old.
    pub fn open_read(&self, id: FileId) -> Result<Fh> {
        let mut inner = self.inner.lock();
        // Unknown: the kernel's cached name is older than a removal here;
        // its fresh lookup finds what the name is now.
        let mtime = inner.entry(id).ok_or(ModelError::Replaced)?.mtime;
        let now = now_ms();
        let last = inner.atimes.get(&id).copied().unwrap_or(mtime);
        if last <= mtime || now.saturating_sub(last) > 86_400_000 {
            inner.atimes.insert(id, now);
        }
        Ok(self.new_handle(&mut inner, id, OpenMode::default()))
    }

    /// This member's access time of a file: the last one noted, else its mtime.
    pub fn atime(&self, e: &FileEntry) -> UnixMillis {
        self.inner.lock().atimes.get(&e.id).copied().unwrap_or(e.mtime)
    }

    /// Sets this member's access time of a file (`utimensat`, `touch -a`).
    pub fn set_atime(&self, id: FileId, atime: UnixMillis) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.entry(id).ok_or(ModelError::NotFound)?;
        inner.atimes.insert(id, atime);
        Ok(())
    }

    /// Opens a file. For write, takes the file's lock from the tracker first.
    pub async fn open(self: &Arc<Self>, id: FileId, mode: OpenMode) -> Result<Fh> {
        if !mode.write {
            return self.open_read(id);
        }
        // Unknown, or an orphan: the name the kernel resolved now names
        // another file (a rename over it, or an unlink and a create) or
        // none; with ESTALE the kernel looks it up again, and an
        // open(O_CREAT) of a name just unlinked creates it.
        let entry = self.attr(id).map_err(|_| ModelError::Replaced)?;
        if entry.kind == FileKind::Dir {
            return Err(ModelError::IsDir);
        }
        if self.inner.lock().tree.get(id).is_none() {
            return Err(ModelError::Replaced);
        }
        let gate = self.write_open_gate(id);
        let _serial = gate.lock().await;
        // Join this member's own write session if there is one.
        loop {
            let notified = self.changed.notified();
            {
                let mut inner = self.inner.lock();
                let unlocking = inner.unlocking.contains(&id);
                match inner.writes.get_mut(&id) {
                    Some(w) if !w.publishing => {
                        w.opens += 1;
                        if mode.truncate {
                            w.staging.file.set_len(0)?;
                            w.dirty = true;
                        }
                        return Ok(self.new_handle(&mut inner, id, mode));
                    }
                    Some(_) => {} // wait for the publish to finish, then lock again
                    None if unlocking => {} // our own unlock lands first
                    None => break,
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(60), notified).await;
        }
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let lease = match self.take_lock(id).await {
            Err(ModelError::NotFound) => {
                // Removed at the tracker, and its event is on the way: once
                // it is here, the kernel's fresh lookup finds what the name
                // is now.
                self.wait_gone(id, Duration::from_secs(2)).await;
                return Err(ModelError::Replaced);
            }
            other => other?,
        };
        let staging = match self.prepare_staging(id, &lease, mode.truncate).await {
            Ok(s) => s,
            Err(e) => {
                self.inner.lock().unlocking.insert(id);
                self.release_lease(id, lease.id);
                return Err(e);
            }
        };
        let fh = {
            let mut inner = self.inner.lock();
            inner.writes.insert(id, WriteState::new(lease, staging, mode.truncate && entry.size > 0));
            self.new_handle(&mut inner, id, mode)
        };
        // The lock may start from a version whose size the kernel has not
        // heard of yet (its invalidation is queued): before the program
        // writes, the kernel must ask again, or `lseek(SEEK_END)` and reads
        // up to the cached size see the old length.
        if let Some(k) = self.kernel.get() {
            k.inval_attrs(id);
        }
        self.note_open_edit(id).await;
        Ok(fh)
    }

    /// Creates a file (locked by this member) and opens it for write. When
    /// another member created the name first, `exclusive` (`O_EXCL`) fails
    /// with `Exists`; otherwise their file is opened, as `O_CREAT` alone
    /// would.
    pub async fn create(
        self: &Arc<Self>,
        parent: FileId,
        name: &str,
        mode: u32,
        open: OpenMode,
        exclusive: bool,
    ) -> Result<(FileEntry, Fh)> {
        let open = OpenMode { write: true, ..open };
        self.check_new_name(parent, name)?;
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let req = Request::CreateFile { parent, name: name.to_string(), kind: FileKind::File, mode: mode & 0o7777, lock: true };
        let (entry, lease) = match self.coord.request(req).await {
            Ok(Response::File { entry, lease: Some(lease) }) => (entry, lease),
            Ok(other) => return Err(ModelError::Protocol(format!("CreateFile answered {other:?}"))),
            Err(CoordError::Refused(ProtoError::AlreadyExists)) if exclusive => return Err(ModelError::Exists),
            Err(CoordError::Refused(ProtoError::AlreadyExists)) => {
                // Someone else created it first: open theirs, as O_CREAT without O_EXCL would.
                let existing = self.wait_for_name(parent, name).await.ok_or(ModelError::Exists)?;
                let fh = self.open(existing, open).await?;
                return Ok((self.attr(existing)?, fh));
            }
            Err(e) => return Err(e.into()),
        };
        let staging = self.new_staging(entry.id, &lease)?;
        let applied = {
            let mut inner = self.inner.lock();
            let applied = inner.tree.apply(entry.clone());
            inner.writes.insert(entry.id, WriteState::new(lease, staging, false));
            let fh = self.new_handle(&mut inner, entry.id, open);
            (applied, fh)
        };
        self.changed.notify_waiters();
        self.note_open_edit(entry.id).await;
        Ok((entry, applied.1))
    }

    pub async fn mkdir(self: &Arc<Self>, parent: FileId, name: &str, mode: u32) -> Result<FileEntry> {
        self.check_new_name(parent, name)?;
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let req = Request::CreateFile { parent, name: name.to_string(), kind: FileKind::Dir, mode: mode & 0o7777, lock: false };
        match self.coord.request(req).await? {
            Response::File { entry, .. } => {
                self.inner.lock().tree.apply(entry.clone());
                self.changed.notify_waiters();
                Ok(entry)
            }
            other => Err(ModelError::Protocol(format!("CreateFile answered {other:?}"))),
        }
    }

    fn check_new_name(&self, parent: FileId, name: &str) -> Result<()> {
        check_name(name)?;
        let inner = self.inner.lock();
        match inner.tree.get(parent) {
            None => Err(ModelError::NotFound),
            Some(p) if p.kind != FileKind::Dir => Err(ModelError::NotDir),
            Some(_) if inner.tree.lookup(parent, name).is_some() => Err(ModelError::Exists),
            Some(_) => Ok(()),
        }
    }

    fn write_open_gate(&self, id: FileId) -> Arc<tokio::sync::Mutex<()>> {
        self.write_opens.lock().entry(id).or_default().clone()
    }

    async fn wait_for_name(&self, parent: FileId, name: &str) -> Option<FileId> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.changed.notified();
            if let Some(e) = self.inner.lock().tree.lookup(parent, name) {
                return Some(e.id);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    async fn take_lock(&self, id: FileId) -> Result<Lease> {
        match self.coord.request(Request::Lock { file: id }).await {
            Ok(Response::Locked(lease)) => Ok(lease),
            Ok(other) => Err(ModelError::Protocol(format!("Lock answered {other:?}"))),
            Err(CoordError::Refused(ProtoError::Locked(holder))) => {
                Err(ModelError::Locked { path: self.path_of(id), holder })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a lock back. The caller put `id` in `unlocking` in the same
    /// critical section that ended the write session, so that no open for
    /// write of the file slips in before the tracker has the lock back.
    fn release_lease(self: &Arc<Self>, id: FileId, lease: titorrent_tracker::proto::LeaseId) {
        let this = self.clone();
        self.tasks.spawn_on(
            async move {
                if let Err(e) = this.coord.request(Request::Unlock { lease }).await {
                    tracing::warn!(%lease, error = %e, "unlock failed; the lease will expire by itself");
                }
                this.unlocked(id);
            },
            &self.rt,
        );
    }

    /// The Unlock of `id` is answered (or failed): opens may lock again.
    fn unlocked(&self, id: FileId) {
        self.inner.lock().unlocking.remove(&id);
        self.changed.notify_waiters();
    }

    /// Shares the attributes set during a write session that changed no
    /// bytes while the lock is still this member's, then releases it.
    fn share_attrs_then_unlock(
        self: &Arc<Self>,
        id: FileId,
        mode: Option<u32>,
        mtime: Option<UnixMillis>,
        lease: titorrent_tracker::proto::LeaseId,
    ) {
        // The caller put `id` in `unlocking` (see release_lease).
        let this = self.clone();
        self.tasks.spawn_on(
            async move {
                this.share_attrs(id, mode, mtime).await;
                if let Err(e) = this.coord.request(Request::Unlock { lease }).await {
                    tracing::warn!(%lease, error = %e, "unlock failed; the lease will expire by itself");
                }
                this.unlocked(id);
            },
            &self.rt,
        );
    }

    /// Sends a mode and/or mtime set while the file was open for write here.
    pub(super) async fn share_attrs(&self, id: FileId, mode: Option<u32>, mtime: Option<UnixMillis>) {
        let resp = self.coord.request(Request::SetAttr { file: id, mode, mtime }).await;
        match self.entry_reply("SetAttr", resp) {
            Ok(e) => {
                self.inner.lock().tree.apply_in_place(e);
            }
            Err(e) => tracing::warn!(path = %self.path_of(id), error = %e, "could not share the mode or mtime set while the file was open"),
        }
    }

    fn staging_path(&self, id: FileId, lease: u64) -> PathBuf {
        self.dirs.staging.join(format!("{}-{}", id.0, lease))
    }

    fn new_staging(&self, id: FileId, lease: &Lease) -> Result<Staging> {
        let path = self.staging_path(id, lease.id.0);
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        Ok(Staging { path, file, appending: Mutex::new(()) })
    }

    /// A private copy to write into: empty, or the version the lease starts
    /// from (fetched whole first if it is not local).
    async fn prepare_staging(self: &Arc<Self>, id: FileId, lease: &Lease, truncate: bool) -> Result<Staging> {
        // The lease names the version the edit starts from; our table may not
        // have heard of it yet.
        let entry = self.wait_for_version(id, lease.version).await?;
        let staging = self.new_staging(id, lease)?;
        let Some(ih) = entry.info_hash.filter(|_| !truncate && entry.size > 0) else {
            return Ok(staging);
        };
        if self.content.local_path(ih).is_none() {
            self.ensure_version(id, entry.version, ih).await?;
        }
        if let Some(src) = self.content.local_path(ih) {
            let dst = staging.path.clone();
            tokio::task::spawn_blocking(move || std::fs::copy(src, dst))
                .await
                .map_err(|e| ModelError::Io(std::io::Error::other(e)))??;
            return Ok(staging);
        }
        // Not complete yet: pull it through the swarm in large reads.
        const CHUNK: u32 = 4 << 20;
        let mut off = 0u64;
        while off < entry.size {
            let data = self.content.read(ih, off, CHUNK).await?;
            if data.is_empty() {
                break;
            }
            staging.file.write_all_at(&data, off)?;
            off += data.len() as u64;
        }
        Ok(staging)
    }

    /// Waits until no publish of `id` is in flight on this member (at most
    /// `max`: a publish that cannot land holds nothing else back).
    async fn wait_publish_landed(&self, id: FileId, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.changed.notified();
            if !self.inner.lock().writes.get(&id).is_some_and(|w| w.publishing) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(path = %self.path_of(id), "renaming a file whose publish has not landed yet");
                return;
            }
        }
    }

    /// Waits (at most `max`) until `id` is out of the table.
    async fn wait_gone(&self, id: FileId, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.changed.notified();
            if self.inner.lock().tree.get(id).is_none() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    async fn wait_for_version(&self, id: FileId, version: Version) -> Result<FileEntry> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.changed.notified();
            let e = self.inner.lock().tree.get(id).cloned().ok_or(ModelError::NotFound)?;
            if e.version >= version {
                return Ok(e);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ModelError::Protocol(format!("version {version} of file {id} never arrived")));
            }
        }
    }

    // ---- read / write ----------------------------------------------------

    /// Decides a read from memory: local bytes now, or what to fetch.
    /// Disk work (opening the object file, reading) happens after the
    /// model's lock is released.
    pub fn read_plan(&self, fh: Fh, offset: u64, size: u32) -> Result<ReadPlan> {
        let (file, version, ih, open_file, ensured) = {
            let inner = self.inner.lock();
            let file = inner.handles.get(&fh).ok_or(ModelError::BadHandle)?.file;
            if let Some(w) = inner.writes.get(&file) {
                let staging = w.staging.clone();
                drop(inner);
                return Ok(ReadPlan::Data(pread(&staging.file, offset, size)?));
            }
            let e = inner.entry(file).ok_or(ModelError::NotFound)?;
            let Some(ih) = e.info_hash.filter(|_| offset < e.size) else {
                return Ok(ReadPlan::Data(Vec::new()));
            };
            (file, e.version, ih, inner.local_files.get(&ih).cloned(), inner.ensured.contains(&ih))
        };
        let local = open_file.or_else(|| {
            let f = Arc::new(File::open(self.content.local_path(ih)?).ok()?);
            let mut inner = self.inner.lock();
            if inner.local_files.len() > 512 {
                inner.local_files.clear();
            }
            inner.local_files.insert(ih, f.clone());
            Some(f)
        });
        match local {
            Some(f) => Ok(ReadPlan::Data(pread(&f, offset, size)?)),
            // Pieces fetched already (a sequential reader behind the
            // read-ahead, say) need no task and no thread hop either.
            None if ensured => match self.content.read_local(ih, offset, size) {
                Some(d) => Ok(ReadPlan::Data(d)),
                None => Ok(ReadPlan::Fetch { file, version, info_hash: ih }),
            },
            None => Ok(ReadPlan::Fetch { file, version, info_hash: ih }),
        }
    }

    /// Fetches a range from the swarm (after making the version known to it).
    pub async fn fetch(self: &Arc<Self>, file: FileId, version: Version, ih: InfoHash, offset: u64, size: u32) -> Result<Bytes> {
        self.ensure_version(file, version, ih).await?;
        Ok(self.content.read(ih, offset, size).await?)
    }

    pub fn write(&self, fh: Fh, offset: u64, data: &[u8]) -> Result<u32> {
        let mut inner = self.inner.lock();
        let h = inner.handles.get(&fh).ok_or(ModelError::BadHandle)?;
        if !h.write {
            return Err(ModelError::NotWritable);
        }
        let (file, append) = (h.file, h.append);
        let w = inner.writes.get_mut(&file).ok_or(ModelError::NotWritable)?;
        w.dirty = true;
        let staging = w.staging.clone();
        drop(inner);
        if append {
            let _end = staging.appending.lock();
            let end = staging.file.metadata()?.len();
            staging.file.write_all_at(data, end)?;
        } else {
            staging.file.write_all_at(data, offset)?;
        }
        Ok(data.len() as u32)
    }

    /// Changes a file's size. Through an open write handle this edits the
    /// staging copy; otherwise it is a whole open-truncate-close edit.
    pub async fn set_size(self: &Arc<Self>, id: FileId, fh: Option<Fh>, size: u64) -> Result<()> {
        if self.truncate_staging(id, fh, size)? {
            return Ok(());
        }
        if self.attr(id)?.size == size {
            return Ok(());
        }
        let fh = self.open(id, OpenMode { write: true, truncate: size == 0, append: false }).await?;
        let res = self.truncate_staging(id, Some(fh), size);
        self.release(fh);
        match res {
            Ok(true) => Ok(()),
            Ok(false) => Err(ModelError::NotWritable),
            Err(e) => Err(e),
        }
    }

    /// Truncates this member's staging copy if `fh` is a write handle on it.
    fn truncate_staging(&self, id: FileId, fh: Option<Fh>, size: u64) -> Result<bool> {
        let mut inner = self.inner.lock();
        let by_handle = fh.and_then(|fh| inner.handles.get(&fh)).is_some_and(|h| h.write && h.file == id);
        match inner.writes.get_mut(&id) {
            Some(w) if by_handle && !w.publishing => {
                w.staging.file.set_len(size)?;
                w.dirty = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Shares a mode and/or mtime change. While the file is being written
    /// here, the change rides with the publish instead.
    pub async fn set_attrs(self: &Arc<Self>, id: FileId, mode: Option<u32>, mtime: Option<UnixMillis>) -> Result<FileEntry> {
        if mode.is_none() && mtime.is_none() {
            return self.attr(id);
        }
        {
            let mut inner = self.inner.lock();
            if let Some(w) = inner.writes.get_mut(&id) {
                if !w.deleted {
                    w.pending_mode = mode.map(|m| m & 0o7777).or(w.pending_mode);
                    w.pending_mtime = mtime.or(w.pending_mtime);
                    inner.tree.with_entry_mut(id, |e| {
                        if let Some(m) = mode {
                            e.mode = m & 0o7777;
                        }
                        if let Some(t) = mtime {
                            e.mtime = t;
                        }
                    });
                    drop(inner);
                    return self.attr(id);
                }
            }
        }
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let resp = self.coord.request(Request::SetAttr { file: id, mode: mode.map(|m| m & 0o7777), mtime }).await;
        let entry = self.entry_reply("SetAttr", resp).map_err(|e| self.with_path(id, e))?;
        self.inner.lock().tree.apply_in_place(entry);
        self.attr(id)
    }

    /// The entry in a `File` answer, or a refusal mapped to the model's error.
    fn entry_reply(&self, what: &str, resp: std::result::Result<Response, CoordError>) -> Result<FileEntry> {
        match resp {
            Ok(Response::File { entry, .. }) => Ok(entry),
            Ok(other) => Err(ModelError::Protocol(format!("{what} answered {other:?}"))),
            Err(CoordError::Refused(ProtoError::Locked(holder))) => Err(ModelError::Locked { path: String::new(), holder }),
            Err(e) => Err(e.into()),
        }
    }

    /// Names a lock refusal with the path it was about.
    fn with_path(&self, id: FileId, e: ModelError) -> ModelError {
        match e {
            ModelError::Locked { holder, .. } => ModelError::Locked { path: self.path_of(id), holder },
            e => e,
        }
    }

    /// Deletes a file (`dir == false`) or an empty directory, asking the
    /// tracker first: the paper's delete permission.
    pub async fn remove(self: &Arc<Self>, parent: FileId, name: &str, dir: bool) -> Result<()> {
        let e = self.lookup(parent, name)?;
        match (dir, e.kind) {
            (false, FileKind::Dir) => return Err(ModelError::IsDir),
            (true, FileKind::File) => return Err(ModelError::NotDir),
            (true, FileKind::Dir) if !self.readdir(e.id)?.is_empty() => return Err(ModelError::NotEmpty),
            _ => {}
        }
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        match self.coord.request(Request::Delete { file: e.id }).await {
            Ok(_) => {}
            Err(CoordError::Refused(ProtoError::Locked(holder))) => {
                return Err(ModelError::Locked { path: self.path_of(e.id), holder })
            }
            Err(err) => return Err(err.into()),
        }
        {
            let mut inner = self.inner.lock();
            if let Some(w) = inner.writes.get_mut(&e.id) {
                w.deleted = true; // the delete released our lock too
            }
            inner.locks.remove(&e.id);
            inner.remove_from_tree(e.id);
            inner.deleted_here.insert(e.id);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// Moves/renames through the tracker, the single place that decides.
    pub async fn rename(
        self: &Arc<Self>,
        parent: FileId,
        name: &str,
        new_parent: FileId,
        new_name: &str,
        replace: bool,
    ) -> Result<()> {
        check_name(new_name)?;
        let src = self.lookup(parent, name)?;
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        // Saved to a temporary name and renamed over the original at once
        // (editors, rsync, os.replace): the publish of the temporary file is
        // still in flight. Renamed now, the name would show the others its
        // previous version (empty) until the publish lands; renamed after,
        // they go from the old content to the new in one step.
        self.wait_publish_landed(src.id, Duration::from_secs(30)).await;
        let target = self.inner.lock().tree.lookup(new_parent, new_name).map(|e| e.id);
        let req = Request::Rename { file: src.id, new_parent, new_name: new_name.to_string(), replace };
        let moved = match self.coord.request(req).await {
            Ok(Response::File { entry, .. }) => entry,
            Ok(_) => {
                // As the table has it now: a publish may have landed while
                // this rename waited for it (a newer version than `src`).
                let cur = self.inner.lock().tree.get(src.id).cloned().unwrap_or_else(|| src.clone());
                FileEntry { parent: new_parent, name: new_name.to_string(), ..cur }
            }
            Err(CoordError::Refused(ProtoError::Locked(holder))) => {
                let who = if holder.member == self.me { src.id } else { target.unwrap_or(src.id) };
                return Err(ModelError::Locked { path: self.path_of(who), holder });
            }
            Err(e) => return Err(e.into()),
        };
        // The kernel moves its dentry when we reply: the table must agree now.
        {
            let mut inner = self.inner.lock();
            if let Some(t) = target.filter(|t| *t != src.id) {
                inner.remove_from_tree(t);
                inner.deleted_here.insert(t);
                if let Some(w) = inner.writes.get_mut(&t) {
                    w.deleted = true;
                }
            }
            // A rename changes no attribute: keep the table's mode and
            // mtime, which may be newer than the answer's. One set here
            // during a write session is shared when the session ends, which
            // can reach the tracker after this rename and be applied here
            // (answer or event) before this thread applies the answer (rsync:
            // close, fchmod 644 on another descriptor, rename; the file kept
            // its 0600 here). If the table's are the older ones, the event
            // that changed them is still to come and brings them.
            let moved = match inner.tree.get(moved.id) {
                Some(cur) => FileEntry { mode: cur.mode, mtime: cur.mtime, ..moved },
                None => moved,
            };
            inner.tree.apply(moved);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    pub fn fsync(&self, fh: Fh) -> Result<()> {
        let inner = self.inner.lock();
        let file = inner.handles.get(&fh).ok_or(ModelError::BadHandle)?.file;
        if let Some(w) = inner.writes.get(&file) {
            let s = w.staging.clone();
            drop(inner);
            s.file.sync_data()?;
        }
        Ok(())
    }

    /// The last close of a file opened for write publishes it.
    pub fn release(self: &Arc<Self>, fh: Fh) {
        let mut inner = self.inner.lock();
        let Some(h) = inner.handles.remove(&fh) else { return };
        if !h.write {
            return;
        }
        let Some(w) = inner.writes.get_mut(&h.file) else { return };
        w.opens = w.opens.saturating_sub(1);
        if w.opens > 0 {
            return;
        }
        if w.deleted {
            let lease = w.lease.id;
            inner.writes.remove(&h.file);
            drop(inner);
            self.drop_open_edit(h.file, lease);
            self.changed.notify_waiters();
            return;
        }
        if !w.dirty {
            let (lease, mode, mtime) = (w.lease.id, w.pending_mode, w.pending_mtime);
            inner.writes.remove(&h.file);
            inner.unlocking.insert(h.file);
            drop(inner);
            self.drop_open_edit(h.file, lease);
            self.changed.notify_waiters();
            if mode.is_some() || mtime.is_some() {
                // No bytes changed, but attributes did (an empty file made by
                // `cp -a` or `tar x`, `touch`): no publish carries them.
                self.share_attrs_then_unlock(h.file, mode, mtime, lease);
            } else {
                self.release_lease(h.file, lease);
            }
            return;
        }
        w.publishing = true;
        drop(inner);
        let this = self.clone();
        let file = h.file;
        self.tasks.spawn_on(async move { this.publish(file).await }, &self.rt);
    }

    // ---- versions and the swarm -----------------------------------------

    /// Hands a version to the swarm once: its torrent comes from the local
    /// cache or the tracker.
    async fn ensure_version(self: &Arc<Self>, file: FileId, version: Version, ih: InfoHash) -> Result<()> {
        if self.inner.lock().ensured.contains(&ih) {
            return Ok(());
        }
        let tpath = self.dirs.torrents.join(format!("{ih}.torrent"));
        let torrent = match std::fs::read(&tpath) {
            Ok(t) => t,
            Err(_) => match self.coord.request(Request::GetTorrent { file, version }).await? {
                Response::Torrent(t) => {
                    let _ = crate::atomic_file::write(&tpath, &t, false);
                    t
                }
                other => return Err(ModelError::Protocol(format!("GetTorrent answered {other:?}"))),
            },
        };
        let peers = self.peers();
        let fetch = {
            let inner = self.inner.lock();
            if self.background.load(Ordering::Relaxed) || self.is_pinned(&inner, file) {
                let author = inner.tree.get(file).map(|e| e.author);
                Fetch::Background(self.stripe(&inner, author))
            } else {
                Fetch::OnDemand
            }
        };
        match self.content.ensure(ih, &torrent, peers, fetch).await {
            Ok(()) => {
                self.inner.lock().ensured.insert(ih);
                self.report_when_complete(file, version, ih);
                Ok(())
            }
            Err(e) => {
                if matches!(e, ContentError::HashMismatch) {
                    let _ = std::fs::remove_file(&tpath);
                }
                Err(e.into())
            }
        }
    }

    /// Tells the tracker once this member holds a complete copy, so that
    /// the others know who can serve it (and who is the only one).
    fn report_when_complete(self: &Arc<Self>, file: FileId, version: Version, ih: InfoHash) {
        if !self.inner.lock().reported.insert(ih) {
            return;
        }
        let this = self.clone();
        self.tasks.spawn_on(
            async move {
                if this.content.wait_complete(ih).await.is_err() {
                    this.inner.lock().reported.remove(&ih);
                    return;
                }
                let current = this.inner.lock().tree.get(file).is_some_and(|e| e.version == version);
                if current {
                    if let Err(e) = this.coord.request(Request::Have { file, version }).await {
                        tracing::debug!(%file, error = %e, "could not report a complete copy");
                        this.inner.lock().reported.remove(&ih);
                    }
                }
            },
            &self.rt,
        );
    }

    /// Files whose current version no other member is known to hold.
    pub fn sole_copies(&self) -> Vec<String> {
        let inner = self.inner.lock();
        let mut out: Vec<String> = inner
            .tree
            .entries()
            .filter(|e| e.kind == FileKind::File && e.info_hash.is_some())
            .filter(|e| {
                let hs = inner.holders.get(&e.id).filter(|(v, _)| *v == e.version).map(|(_, h)| h);
                let i_have = hs.is_some_and(|h| h.contains(&self.me)) || e.author == self.me;
                let others = hs.is_some_and(|h| h.iter().any(|m| *m != self.me));
                i_have && !others
            })
            .map(|e| inner.tree.path(e.id))
            .collect();
        out.sort();
        out
    }

    fn fetch_in_background(self: &Arc<Self>, e: &FileEntry) {
        let Some(ih) = e.info_hash else { return };
        {
            let inner = self.inner.lock();
            if inner.ensured.contains(&ih) {
                return;
            }
            if !self.background.load(Ordering::Relaxed) && !self.is_pinned(&inner, e.id) {
                return;
            }
        }
        let (this, file, version) = (self.clone(), e.id, e.version);
        self.tasks.spawn_on(
            async move {
                if let Err(err) = this.ensure_version(file, version, ih).await {
                    tracing::warn!(file = %this.path_of(file), %version, error = %err, "cannot fetch version");
                }
            },
            &self.rt,
        );
    }

    // ---- the tracker's events -------------------------------------------

    pub fn set_online(self: &Arc<Self>, online: bool) {
        self.online.store(online, Ordering::Relaxed);
        if online {
            let this = self.clone();
            self.tasks.spawn_on(async move { this.refresh_members().await }, &self.rt);
        }
    }

    async fn refresh_members(&self) {
        match self.coord.request(Request::ListMembers).await {
            Ok(Response::Members(ms)) => {
                let peers: Vec<SocketAddr> =
                    ms.iter().filter(|m| m.online && m.id != self.me).filter_map(|m| m.peer_addr).collect();
                self.inner.lock().members = ms.into_iter().map(|m| (m.id, m)).collect();
                self.content.add_peers(&peers);
            }
            Ok(other) => tracing::warn!(answer = ?other, "unexpected answer to ListMembers"),
            Err(e) => tracing::debug!(error = %e, "cannot list members"),
        }
    }

    /// Replaces the table with a snapshot from the tracker.
    pub fn apply_snapshot(self: &Arc<Self>, seq: Seq, files: Vec<FileEntry>) {
        let new_tree = Tree::from_snapshot(files);
        let (gone, changed): (Vec<(FileId, String)>, Vec<FileEntry>) = {
            let mut inner = self.inner.lock();
            let gone = inner
                .tree
                .entries()
                .filter(|e| e.id != FileId::ROOT && new_tree.get(e.id).is_none_or(|n| n.parent != e.parent || n.name != e.name))
                .map(|e| (e.parent, e.name.clone()))
                .collect();
            let changed = new_tree
                .entries()
                .filter(|n| inner.tree.get(n.id).is_none_or(|o| o.version != n.version || o.info_hash != n.info_hash))
                .cloned()
                .collect();
            inner.tree = new_tree;
            inner.deleted_here.clear();
            inner.seq = Some(seq);
            (gone, changed)
        };
        self.changed.notify_waiters();
        for (parent, name) in gone {
            self.kernel_inval_entry(parent, &name);
        }
        for e in &changed {
            self.kernel_inval_entry(e.parent, &e.name);
            self.kernel_inval_inode(e.id);
            self.fetch_in_background(e);
        }
    }

    pub fn apply_event(self: &Arc<Self>, ev: Event) {
        self.apply_events(vec![ev]);
    }

    /// Applies events in one step: a reader never sees the table between
    /// two of them (a rename over an existing file is the target's deletion
    /// then the rename; between the two, the name would not exist).
    pub fn apply_events(self: &Arc<Self>, evs: Vec<Event>) {
        let mut names = Vec::new();
        let mut inval = Vec::new();
        let mut fetch = Vec::new();
        {
            let mut inner = self.inner.lock();
            for ev in evs {
                if inner.seq.is_some_and(|s| ev.seq <= s) {
                    continue; // already applied
                }
                inner.seq = Some(ev.seq);
                if let Some(file) = tree_subject(&ev.kind).filter(|f| inner.deleted_here.contains(f)) {
                    if matches!(ev.kind, EventKind::FileDeleted { .. }) {
                        inner.deleted_here.remove(&file);
                    }
                    continue; // deleted here already (see `deleted_here`)
                }
                match ev.kind {
                    EventKind::FileDeleted { file, .. } => {
                        names.extend(inner.remove_from_tree(file).names);
                    }
                    EventKind::FileRenamed { entry, .. } => {
                        let id = entry.id;
                        names.extend(inner.tree.apply(entry).names);
                        inval.push(id);
                    }
                    // Not a creation: a file unknown here was deleted here
                    // (its deletion's event follows); do not bring it back.
                    EventKind::AttrChanged(entry) if inner.tree.get(entry.id).is_none() => {}
                    EventKind::FileUpdated(e) | EventKind::Restored { entry: e, .. } if inner.tree.get(e.id).is_none() => {}
                    EventKind::AttrChanged(entry) => {
                        let id = entry.id;
                        names.extend(inner.tree.apply_in_place(entry).names);
                        inval.push(id);
                    }
                    EventKind::MemberLeft { member } => {
                        inner.members.remove(&member);
                    }
                    EventKind::Have { file, version, member } => {
                        if inner.tree.get(file).is_some_and(|e| e.version == version) {
                            let h = inner.holders.entry(file).or_insert_with(|| (version, HashSet::new()));
                            if h.0 != version {
                                *h = (version, HashSet::new());
                            }
                            h.1.insert(member);
                        }
                    }
                    EventKind::FileCreated(e) | EventKind::FileUpdated(e) | EventKind::Restored { entry: e, .. } => {
                        // Our own write session is the truth for this member
                        // until its publish lands. Where the file is comes
                        // from renames (this member's own may be newer).
                        let applied = inner.tree.apply_in_place(e.clone());
                        note_author(&mut inner, &e);
                        names.extend(applied.names);
                        if applied.content_changed {
                            inval.push(e.id);
                            fetch.push(e);
                        }
                    }
                    EventKind::Locked { file, holder } => {
                        inner.locks.insert(file, holder);
                    }
                    EventKind::Unlocked { file } => {
                        inner.locks.remove(&file);
                    }
                    EventKind::MemberJoined(m) | EventKind::MemberOnline(m) => {
                        if m.online && m.id != self.me {
                            if let Some(a) = m.peer_addr {
                                self.content.add_peers(&[a]);
                            }
                        }
                        inner.members.insert(m.id, m);
                    }
                    EventKind::MemberOffline { member } => {
                        if let Some(m) = inner.members.get_mut(&member) {
                            m.online = false;
                        }
                    }
                }
            }
        }
        self.changed.notify_waiters();
        for (parent, name) in names {
            self.kernel_inval_entry(parent, &name);
        }
        for id in inval {
            self.kernel_inval_inode(id);
        }
        for e in &fetch {
            self.collect_old_versions(e.id);
        }
        for e in fetch {
            if e.author != self.me {
                self.fetch_in_background(&e);
            }
        }
    }

    fn kernel_inval_entry(&self, parent: FileId, name: &str) {
        if let Some(k) = self.kernel.get() {
            k.inval_entry(parent, name);
        }
    }

    fn kernel_inval_inode(&self, id: FileId) {
        if let Some(k) = self.kernel.get() {
            k.inval_inode(id);
        }
    }

    // ---- leases ----------------------------------------------------------

    /// Renews the leases of files being written here, well before they run
    /// out. Runs until the folder shuts down.
    pub async fn renew_leases(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let due: Vec<(FileId, Lease, u64)> = {
                let inner = self.inner.lock();
                let now = now_ms();
                inner
                    .writes
                    .iter()
                    .filter(|(_, w)| !w.lease_lost && w.lease.expires.saturating_sub(now) < w.lease_len_ms * 2 / 3)
                    .map(|(id, w)| (*id, w.lease.clone(), w.lease_len_ms))
                    .collect()
            };
            // Concurrently: a burst of writes holds many leases, and one
            // round trip each in turn would outlast them on a slow link.
            futures::stream::iter(due)
                .for_each_concurrent(RENEWALS_IN_FLIGHT, |(id, lease, len)| self.renew(id, lease, len))
                .await;
        }
    }

    async fn renew(&self, id: FileId, lease: Lease, len: u64) {
        match self.coord.request(Request::Renew { lease: lease.id }).await {
            Ok(resp) => {
                let expires = match resp {
                    Response::Locked(l) => l.expires,
                    _ => now_ms() + len,
                };
                if let Some(w) = self.inner.lock().writes.get_mut(&id).filter(|w| w.lease.id == lease.id) {
                    w.lease.expires = expires;
                }
            }
            Err(CoordError::Refused(e)) => {
                if let Some(w) = self.inner.lock().writes.get_mut(&id).filter(|w| w.lease.id == lease.id) {
                    w.lease_lost = true;
                }
                tracing::error!(file = %self.path_of(id), error = %e, "lease lost: the edit will be kept as a conflict copy if the publish is refused");
            }
            Err(e) => tracing::debug!(error = %e, "lease renewal failed; retrying"),
        }
    }

    /// Waits for publishes in flight to finish (bounded), for unmount.
    pub async fn drain(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.changed.notified();
            let busy = self.inner.lock().writes.values().any(|w| w.publishing);
            if !busy {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Saves the table and the last applied event together, so the next
    /// mount can show it offline and catch up from exactly there.
    pub fn save_table(&self, path: &std::path::Path) -> std::io::Result<()> {
        let (seq, files) = {
            let inner = self.inner.lock();
            let Some(seq) = inner.seq else { return Ok(()) };
            (seq, inner.tree.entries().cloned().collect::<Vec<_>>())
        };
        let bytes = bincode::serde::encode_to_vec(&SavedTable { seq, files }, bincode::config::standard())
            .map_err(std::io::Error::other)?;
        crate::atomic_file::write(path, &bytes, false)
    }

    /// Locks this member still holds because files are open for write.
    pub fn held_leases(&self) -> Vec<titorrent_tracker::proto::LeaseId> {
        self.inner.lock().writes.values().map(|w| w.lease.id).collect()
    }

    pub fn tracker(&self) -> &T {
        &self.coord
    }
}

/// Longest name component, in bytes (POSIX NAME_MAX).
pub const NAME_MAX: usize = 255;

/// A name this member may create: too long is ENAMETOOLONG, as POSIX says,
/// the rest of the tracker's rules EINVAL.
fn check_name(name: &str) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(ModelError::NameTooLong);
    }
    titorrent_tracker::proto::validate_name(name).map_err(|_| ModelError::InvalidName)
}

/// The author of a new current version holds it.
fn note_author(inner: &mut Inner, e: &FileEntry) {
    if e.kind != FileKind::File || e.info_hash.is_none() {
        return;
    }
    let h = inner.holders.entry(e.id).or_insert_with(|| (e.version, HashSet::new()));
    if h.0 != e.version {
        *h = (e.version, HashSet::new());
    }
    h.1.insert(e.author);
}

/// The file an event changes in the table, if it changes one.
fn tree_subject(kind: &EventKind) -> Option<FileId> {
    match kind {
        EventKind::FileCreated(e) | EventKind::FileUpdated(e) | EventKind::AttrChanged(e) => Some(e.id),
        EventKind::Restored { entry, .. } | EventKind::FileRenamed { entry, .. } => Some(entry.id),
        EventKind::FileDeleted { file, .. } => Some(*file),
        _ => None,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedTable {
    seq: Seq,
    files: Vec<FileEntry>,
}

/// The table a previous mount saved, if it is there and readable.
pub fn load_table(path: &std::path::Path) -> Option<(Seq, Vec<FileEntry>)> {
    let bytes = std::fs::read(path).ok()?;
    match bincode::serde::decode_from_slice::<SavedTable, _>(&bytes, bincode::config::standard()) {
        Ok((t, _)) => Some((t.seq, t.files)),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "saved file table unreadable; starting from a snapshot");
            None
        }
    }
}

fn pread(f: &File, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

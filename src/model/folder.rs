//! [`Folder`], the front: the parts it delegates to, its construction and
//! settings, and what is answered from memory (lookups, attributes,
//! listings, opens for read). See the module documentation of `model` for
//! the parts and the rule about their locks.

use super::handles::Handles;
use super::local::{is_local, LocalNodes, Special};
use super::members::Members;
use super::outbox::Outbox;
use super::store::VersionStore;
use super::table::FileTable;
use super::writes::WriteSessions;
use super::{Content, Coordinator, Fh, FolderDirs, KernelCache, ModelError, NodeType, OpenMode, ReadSource, Result, NAME_MAX};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use titorrent_tracker::proto::{FileEntry, FileId, LeaseId, LockHolder, MemberId, MemberInfo, Owner, Seq, UnixMillis};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

pub struct Folder<C: Content, T: Coordinator> {
    pub(super) content: C,
    pub(super) coord: T,
    pub(super) me: MemberId,
    /// This member's name, for conflict copies.
    pub(super) me_name: String,
    pub(super) dirs: FolderDirs,
    pub(super) kernel: OnceLock<Box<dyn KernelCache>>,
    pub(super) table: FileTable,
    pub(super) handles: Handles,
    pub(super) writes: WriteSessions,
    pub(super) store: VersionStore,
    pub(super) members: Members,
    pub(super) outbox: Outbox,
    pub(super) local: LocalNodes,
    pub(super) online: AtomicBool,
    /// Fetch every new version in the background (the default), or only
    /// what programs read and what is pinned.
    pub(super) background: AtomicBool,
    /// Signalled whenever the table or a write state changes.
    pub(super) changed: Notify,
    pub(super) tasks: TaskTracker,
    pub(super) rt: tokio::runtime::Handle,
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
            members: Members::new(me, me_name.clone()),
            me_name,
            outbox: Outbox::new(dirs.outbox.clone()),
            dirs,
            kernel: OnceLock::new(),
            table: FileTable::default(),
            handles: Handles::default(),
            writes: WriteSessions::default(),
            store: VersionStore::default(),
            local: LocalNodes::default(),
            online: AtomicBool::new(false),
            background: AtomicBool::new(true),
            changed: Notify::new(),
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
        self.store.set_keep(k);
    }

    pub fn content(&self) -> &C {
        &self.content
    }

    pub fn tracker(&self) -> &T {
        &self.coord
    }

    /// Connects the kernel's caches once the mount exists.
    pub fn set_kernel(&self, k: Box<dyn KernelCache>) {
        let _ = self.kernel.set(k);
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    pub fn last_seq(&self) -> Option<Seq> {
        self.table.seq()
    }

    pub fn path_of(&self, id: FileId) -> String {
        self.table.path(id)
    }

    // ---- answered from memory -------------------------------------------

    /// The entry as this member sees it: a file being written here shows the
    /// staging copy's size.
    pub fn attr(&self, id: FileId) -> Result<FileEntry> {
        if is_local(id) {
            return self.local.entry(id).ok_or(ModelError::NotFound);
        }
        let mut e = self.table.entry(id).ok_or(ModelError::NotFound)?;
        e.mode |= self.table.own_bits(id);
        if let Some(w) = self.writes.view(id) {
            if let Ok(md) = w.staging.file.metadata() {
                e.size = md.len();
                if let Some(t) = w.edit_mtime() {
                    e.mtime = t;
                }
                // A write or truncate changes the ctime too: the time of
                // the last one (the publish then sets its own, later).
                if w.changed {
                    e.ctime = e.ctime.max(w.staging.written_at());
                }
            }
        }
        Ok(e)
    }

    pub fn lookup(&self, parent: FileId, name: &str) -> Result<FileEntry> {
        if name.len() > NAME_MAX {
            return Err(ModelError::NameTooLong);
        }
        match self.table.lookup(parent, name) {
            Ok(id) => self.attr(id),
            // A FIFO or socket made here (a shared name hides it).
            Err(ModelError::NotFound) => {
                self.local.lookup(parent, name).and_then(|id| self.local.entry(id)).ok_or(ModelError::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// A directory's entries: the shared ones, then this member's FIFOs
    /// and sockets in it.
    pub fn readdir(&self, dir: FileId) -> Result<Vec<(FileId, NodeType, String)>> {
        let mut kids = self.table.readdir(dir)?;
        kids.extend(self.local.children(dir).into_iter().map(|(id, special, name)| (id, special_type(special), name)));
        Ok(kids)
    }

    /// What an entry is, as the kernel is told.
    pub fn node_type(&self, e: &FileEntry) -> NodeType {
        match self.local.special(e.id).filter(|_| is_local(e.id)) {
            Some(special) => special_type(special),
            None => NodeType::of(&e.kind),
        }
    }

    /// Who holds a file's lock, as last heard.
    pub fn lock_holder(&self, id: FileId) -> Option<LockHolder> {
        self.table.lock_holder(id)
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.list()
    }

    /// The file at a path relative to the folder's root ("docs/a.txt").
    pub fn resolve(&self, path: &std::path::Path) -> Option<FileId> {
        self.table.resolve(path)
    }

    /// Where a read-only open of a file finds its bytes (see [`ReadSource`]).
    pub fn read_source(&self, id: FileId) -> ReadSource {
        if self.writes.has_session(id) {
            return ReadSource::Daemon;
        }
        let Some(ih) = self.table.current(id).and_then(|e| e.info_hash) else { return ReadSource::Daemon };
        match self.content.local_path(ih) {
            Some(p) => ReadSource::Local(ih, p),
            None => ReadSource::Elsewhere,
        }
    }

    /// Opens a file for reading: from memory, never waits. Notes the access
    /// as relatime does: when the last one noted is older than the file's
    /// last change, or a day old.
    pub fn open_read(&self, id: FileId) -> Result<Fh> {
        self.table.note_read(id, super::now_ms())?;
        Ok(self.handles.open(id, OpenMode::default()))
    }

    /// This member's access time of a file: the last one noted, else its mtime.
    pub fn atime(&self, e: &FileEntry) -> UnixMillis {
        match is_local(e.id) {
            true => self.local.atime(e.id).unwrap_or(e.mtime),
            false => self.table.atime(e),
        }
    }

    /// The owner of a new entry in `parent`: the caller's, with the
    /// directory's group when the directory is setgid (as on any disk; the
    /// group shares a directory's setgid bit, see `proto::shared_mode`).
    pub(super) fn new_owner(&self, parent: FileId, owner: Owner) -> Owner {
        match self.table.entry(parent).filter(|_| self.setgid_dir(parent)) {
            Some(dir) => Owner { group: dir.owner.group, ..owner },
            None => owner,
        }
    }

    /// Whether a directory is setgid.
    pub(super) fn setgid_dir(&self, dir: FileId) -> bool {
        let shared = self.table.entry(dir).map_or(0, |e| e.mode);
        (shared | self.table.own_bits(dir)) & 0o2000 != 0
    }

    /// Sets this member's access time of a file (`utimensat`, `touch -a`).
    pub fn set_atime(&self, id: FileId, atime: UnixMillis) -> Result<()> {
        if is_local(id) {
            let change = super::AttrChange { atime: Some(atime), ..Default::default() };
            return self.local.set_attrs(id, change, super::now_ms()).map(drop);
        }
        self.table.set_atime(id, atime)
    }

    pub fn fsync(&self, fh: Fh) -> Result<()> {
        let file = self.handles.get(fh).ok_or(ModelError::BadHandle)?.file;
        if let Some(w) = self.writes.view(file) {
            w.staging.file.sync_data()?;
            if let Some(o) = &w.staging.overlay {
                o.0.sync_base_link()?;
            }
            self.outbox.make_durable(file.0, w.lease.id.0)?;
        }
        Ok(())
    }

    /// Waits for publishes in flight to finish (bounded), for unmount.
    pub async fn drain(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.changed.notified();
            if self.writes.publishing_count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Locks this member still holds because files are open for write.
    pub fn held_leases(&self) -> Vec<LeaseId> {
        self.writes.leases()
    }

    /// Saves the table and the last applied event together, so the next
    /// mount can show it offline and catch up from exactly there.
    pub fn save_table(&self, path: &std::path::Path) -> std::io::Result<()> {
        let Some((seq, files)) = self.table.saved_view() else { return Ok(()) };
        let bytes = bincode::serde::encode_to_vec(&SavedTable { seq, files }, bincode::config::standard())
            .map_err(std::io::Error::other)?;
        crate::atomic_file::write(path, &bytes, false)
    }

    pub(super) fn kernel_inval_entry(&self, parent: FileId, name: &str) {
        if let Some(k) = self.kernel.get() {
            k.inval_entry(parent, name);
        }
    }

    pub(super) fn kernel_inval_inode(&self, id: FileId) {
        if let Some(k) = self.kernel.get() {
            k.inval_inode(id);
        }
    }

    fn load_pins(&self) {
        let Ok(text) = std::fs::read_to_string(&self.dirs.pins) else { return };
        self.store.add_pins(text.lines().filter_map(|l| l.trim().parse().ok()).map(FileId));
    }

    pub(super) fn save_pins(&self) {
        let text = self.store.pins_text();
        if let Err(e) = crate::atomic_file::write(&self.dirs.pins, text.as_bytes(), false) {
            tracing::warn!(file = %self.dirs.pins.display(), error = %e, "cannot save pins");
        }
    }
}

fn special_type(s: Special) -> NodeType {
    match s {
        Special::Fifo => NodeType::Fifo,
        Special::Socket => NodeType::Socket,
        Special::CharDevice(d) => NodeType::CharDevice(d),
        Special::BlockDevice(d) => NodeType::BlockDevice(d),
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

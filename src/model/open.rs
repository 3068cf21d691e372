//! The front's opens, creates and closes: taking a file's lock from the
//! tracker, preparing the staging copy, joining this member's own write
//! session, and what the last close of a write handle sets off.

use super::overlay::{Overlay, OVERLAY_MIN};
use super::writes::{Closed, Edit, Join, Session, Staging};
use super::{check_name, Content, Coordinator, CoordError, Fh, Folder, ModelError, OpenMode, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use titorrent_tracker::calls::{CreateFile, CreateLocked, Lock, LockedFile, SetAttr, Unlock};
use titorrent_tracker::proto::{FileEntry, FileId, FileKind, Lease, LeaseId, Owner, ProtoError, UnixMillis, Version};

/// Ends an `Opening` state however the open ends (an error, or its future
/// dropped), and wakes the opens for write waiting on the file.
struct OpeningGuard<'a, C: Content, T: Coordinator> {
    folder: &'a Folder<C, T>,
    id: FileId,
}

impl<C: Content, T: Coordinator> Drop for OpeningGuard<'_, C, T> {
    fn drop(&mut self) {
        self.folder.writes.abandon_open(self.id);
        self.folder.changed.notify_waiters();
    }
}

impl<C: Content, T: Coordinator> Folder<C, T> {
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
        if !self.table.contains(id) {
            return Err(ModelError::Replaced);
        }
        // Join this member's own write session, or become the open that
        // takes the lock (see `WriteState`).
        loop {
            let notified = self.changed.notified();
            match self.writes.begin_open(id, mode.truncate) {
                Join::Joined(staging) => {
                    if mode.truncate {
                        staging.ready_for_len(0).await;
                        staging.set_len(0)?;
                    }
                    return Ok(self.handles.open(id, mode));
                }
                Join::Wait => {}
                Join::Vacant => break,
            }
            let _ = tokio::time::timeout(Duration::from_secs(60), notified).await;
        }
        let _opening = OpeningGuard { folder: self, id };
        self.lock_and_stage(id, mode, &entry).await
    }

    /// The `Opening` part of an open for write: the lock, the staging copy,
    /// the outbox entry, then the session is `Open`.
    async fn lock_and_stage(self: &Arc<Self>, id: FileId, mode: OpenMode, entry: &FileEntry) -> Result<Fh> {
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
                self.writes.open_failed(id);
                self.release_lease(id, lease.id);
                return Err(e);
            }
        };
        let session = Session::new(lease, staging);
        let edit = if mode.truncate && entry.size > 0 { Edit::Changed } else { Edit::Unchanged };
        self.note_open_edit(id, &session.view(edit)).await;
        self.writes.opened(id, session, edit);
        let fh = self.handles.open(id, mode);
        // The lock may start from a version whose size the kernel has not
        // heard of yet (its invalidation is queued): before the program
        // writes, the kernel must ask again, or `lseek(SEEK_END)` and reads
        // up to the cached size see the old length.
        if let Some(k) = self.kernel.get() {
            k.inval_attrs(id);
        }
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
        owner: Owner,
    ) -> Result<(FileEntry, Fh)> {
        let open = OpenMode { write: true, ..open };
        self.check_new_name(parent, name)?;
        let owner = self.new_owner(parent, owner);
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let call = CreateLocked { parent, name: name.to_string(), mode: mode & 0o7777, owner };
        let (entry, lease, seq) = match self.coord.call_at(call).await {
            Ok((LockedFile { entry, lease }, seq)) => (entry, lease, seq),
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
        self.writes.created(entry.id, Session::new(lease, staging));
        self.table.insert(entry.clone(), seq);
        self.table.set_own_bits(entry.id, mode);
        let entry = FileEntry { mode: entry.mode | self.table.own_bits(entry.id), ..entry };
        let fh = self.handles.open(entry.id, open);
        self.changed.notify_waiters();
        if let Some(view) = self.writes.view(entry.id) {
            self.note_open_edit(entry.id, &view).await;
        }
        Ok((entry, fh))
    }

    pub async fn mkdir(self: &Arc<Self>, parent: FileId, name: &str, mode: u32, owner: Owner) -> Result<FileEntry> {
        self.check_new_name(parent, name)?;
        // A setgid directory's subdirectories are setgid too.
        let mode = if self.setgid_dir(parent) { mode | 0o2000 } else { mode };
        let owner = self.new_owner(parent, owner);
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let e = self.create_unlocked(parent, name, FileKind::Dir, mode & 0o7777, owner).await?;
        self.table.set_own_bits(e.id, mode);
        Ok(FileEntry { mode: e.mode | self.table.own_bits(e.id), ..e })
    }

    /// Creates an entry nobody locks (a directory, a symlink, a hard link's
    /// name) at the tracker and records it in the table.
    pub(super) async fn create_unlocked(&self, parent: FileId, name: &str, kind: FileKind, mode: u32, owner: Owner) -> Result<FileEntry> {
        let call = CreateFile { parent, name: name.to_string(), kind, mode, lock: false, owner };
        let (answer, seq) = self.coord.call_at(call).await?;
        let entry = answer.entry;
        self.table.insert(entry.clone(), seq);
        self.changed.notify_waiters();
        Ok(entry)
    }

    pub(super) fn check_new_name(&self, parent: FileId, name: &str) -> Result<()> {
        check_name(name)?;
        self.table.check_new_name(parent, name)?;
        match self.local.lookup(parent, name) {
            Some(_) => Err(ModelError::Exists),
            None => Ok(()),
        }
    }

    async fn wait_for_name(&self, parent: FileId, name: &str) -> Option<FileId> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.changed.notified();
            if let Some(id) = self.table.child(parent, name) {
                return Some(id);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    async fn take_lock(&self, id: FileId) -> Result<Lease> {
        match self.coord.call(Lock { file: id }).await {
            Ok(lease) => Ok(lease),
            Err(CoordError::Refused(ProtoError::Locked(holder))) => {
                Err(ModelError::Locked { path: self.path_of(id), holder })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a lock back. The caller made the file's write state
    /// `Unlocking` when the session ended, so that no open for write of the
    /// file slips in before the tracker has the lock back.
    pub(super) fn release_lease(self: &Arc<Self>, id: FileId, lease: LeaseId) {
        let this = self.clone();
        self.tasks.spawn_on(
            async move {
                this.give_back(lease).await;
                this.unlocked(id);
            },
            &self.rt,
        );
    }

    /// Sends the Unlock of `lease`. A lease the tracker no longer knows
    /// was ended already: by this member's delete of the file or rename
    /// over it sent right after the close (`rm` after a write), or by
    /// running out.
    async fn give_back(&self, lease: LeaseId) {
        match self.coord.call(Unlock { lease }).await {
            Ok(_) => {}
            Err(CoordError::Refused(ProtoError::NoLease)) => tracing::debug!(%lease, "the lease had ended already"),
            Err(e) => tracing::warn!(%lease, error = %e, "unlock failed; the lease will expire by itself"),
        }
    }

    /// The Unlock of `id` is answered (or failed): opens may lock again.
    fn unlocked(&self, id: FileId) {
        self.writes.unlocked(id);
        self.changed.notify_waiters();
    }

    /// Shares the attributes set during a write session that changed no
    /// bytes while the lock is still this member's, then releases it.
    fn share_attrs_then_unlock(self: &Arc<Self>, id: FileId, mode: Option<u32>, mtime: Option<UnixMillis>, lease: LeaseId) {
        // The write state is `Unlocking` (see release_lease).
        self.table.attrs_on_their_way(id);
        let this = self.clone();
        self.tasks.spawn_on(
            async move {
                this.share_attrs(id, mode, mtime).await;
                this.give_back(lease).await;
                this.unlocked(id);
            },
            &self.rt,
        );
    }

    /// Sends a mode and/or mtime set while the file was open for write here.
    pub(super) async fn share_attrs(&self, id: FileId, mode: Option<u32>, mtime: Option<UnixMillis>) {
        let resp = self.coord.call(SetAttr { file: id, mode, mtime, owner: None }).await;
        match self.entry_reply(resp) {
            Ok(e) => {
                self.table.attrs_set(e);
                self.changed.notify_waiters();
            }
            Err(e) => {
                self.table.attrs_not_set(id);
                self.changed.notify_waiters();
                tracing::warn!(path = %self.path_of(id), error = %e, "could not share the mode or mtime set while the file was open");
            }
        }
    }

    pub(super) fn staging_path(&self, id: FileId, lease: u64) -> PathBuf {
        self.dirs.staging.join(format!("{}-{}", id.0, lease))
    }

    fn new_staging(&self, id: FileId, lease: &Lease) -> Result<Staging> {
        let path = self.staging_path(id, lease.id.0);
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        Ok(Staging::new(path, file, None))
    }

    /// A private copy to write into: empty, or the version the lease starts
    /// from (fetched whole first if it is not local). Either way the
    /// staging copy knows that version as its base, so that its publish
    /// reuses what was not written.
    async fn prepare_staging(self: &Arc<Self>, id: FileId, lease: &Lease, truncate: bool) -> Result<Staging> {
        // The lease names the version the edit starts from; our table may not
        // have heard of it yet.
        let entry = self.wait_for_version(id, lease.version).await?;
        let staging = self.new_staging(id, lease)?;
        let Some(ih) = entry.info_hash.filter(|_| entry.size > 0) else {
            return Ok(staging);
        };
        let staging = Staging { base: Some(ih), ..staging };
        if truncate {
            // Rewritten from scratch, it is still an edit of this version:
            // every byte is hashed, but the members reuse the pieces that
            // come out the same (most of them, for a program that saves
            // the whole file to change a line).
            staging.dirty.lock().truncate(0);
            return Ok(staging);
        }
        if self.content.local_path(ih).is_none() {
            self.ensure_version(id, entry.version, ih).await?;
        }
        if let Some(src) = self.content.local_path(ih) {
            if reflink(&src, &staging.file) {
                return Ok(staging);
            }
            if entry.size >= OVERLAY_MIN {
                // No reflinks here (ext4): ready at once, the base's bytes
                // copied in behind the program's writes.
                match Overlay::start(&staging.path, &staging.file, &src) {
                    Ok(o) => return Ok(Staging { overlay: Some(o), ..staging }),
                    Err(e) => tracing::debug!(error = %e, "no copy-on-write staging copy; copying the base whole"),
                }
            }
            let dst = staging.file.try_clone()?;
            tokio::task::spawn_blocking(move || -> std::io::Result<u64> { std::io::copy(&mut File::open(&src)?, &mut &dst) })
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
    pub(super) async fn wait_publish_landed(&self, id: FileId, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let notified = self.changed.notified();
            if !self.writes.is_publishing(id) {
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
            if !self.table.contains(id) {
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
            let e = self.table.current(id).ok_or(ModelError::NotFound)?;
            if e.version >= version {
                return Ok(e);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // The tracker granted the lock but its events stopped
                // coming (the link broke right after): as good as offline.
                tracing::info!(path = %self.path_of(id), %version, "the tracker's event for the locked version never arrived: offline");
                return Err(ModelError::Offline);
            }
        }
    }

    /// The last close of a file opened for write publishes it.
    pub fn release(self: &Arc<Self>, fh: Fh) {
        let Some(h) = self.handles.close(fh) else { return };
        if !h.write {
            return;
        }
        match self.writes.close(h.file) {
            Closed::Nothing => {}
            Closed::Dropped { lease } => {
                self.drop_open_edit(h.file, lease);
                self.changed.notify_waiters();
            }
            Closed::Unchanged { lease, mode, mtime } => {
                self.drop_open_edit(h.file, lease);
                self.changed.notify_waiters();
                if mode.is_some() || mtime.is_some() {
                    // No bytes changed, but attributes did (an empty file made by
                    // `cp -a` or `tar x`, `touch`): no publish carries them.
                    self.share_attrs_then_unlock(h.file, mode, mtime, lease);
                } else {
                    self.release_lease(h.file, lease);
                }
            }
            Closed::Publish => {
                let (this, file) = (self.clone(), h.file);
                self.tasks.spawn_on(async move { this.publish(file).await }, &self.rt);
            }
        }
    }
}

/// Makes `dst` (empty) share the blocks of the file at `src` (`FICLONE`,
/// no byte copied, blocks shared until written) where the cache's
/// filesystem has reflinks (btrfs, XFS). Whether it did.
fn reflink(src: &std::path::Path, dst: &File) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(from) = File::open(src) else { return false };
    // SAFETY: both descriptors are open for as long as the call lasts; the
    // ioctl reads nothing but its integer argument.
    unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) == 0 }
}

//! Publishing an edit so that no byte is ever lost: an outbox entry on disk
//! before anything else (see `outbox.rs`), the torrent, the compare-and-set
//! publish retried while the tracker is away, and, when the tracker refuses,
//! a conflict copy published as a new file next to the original.

use super::outbox::{conflict_name, remove_staging, OutboxEntry};
use super::writes::View;
use super::{now_ms, Content, Coordinator, CoordError, Delta, Folder, Result};
use std::sync::Arc;
use std::time::Duration;
use titorrent_tracker::calls::{CreateLocked, LockedFile, Publish};
use titorrent_tracker::proto::{FileEntry, FileId, FileKind, LeaseId, ProtoError, Version};

impl<C: Content, T: Coordinator> Folder<C, T> {
    /// The outbox entry of a session (`view`) on `id`, as things are now.
    fn outbox_entry(&self, id: FileId, w: &View, closed: bool) -> OutboxEntry {
        let e = self.table.current(id);
        let md = w.staging.file.metadata();
        OutboxEntry {
            file: id.0,
            parent: e.as_ref().map(|e| e.parent.0).unwrap_or(FileId::ROOT.0),
            name: e.as_ref().map(|e| e.name.clone()).unwrap_or_else(|| format!("file-{id}")),
            lease: w.lease.id.0,
            base: w.lease.version.0,
            mode: w.pending_mode.or(e.as_ref().map(|e| e.mode)).unwrap_or(0o644),
            mtime: w.edit_mtime().unwrap_or_else(now_ms),
            staging: w.staging.path.clone(),
            size: md.map(|m| m.len()).unwrap_or(0),
            info_hash: None,
            closed,
        }
    }

    /// Records a write session as soon as it opens, so that a daemon killed
    /// while a program writes still has the bytes and knows whose they are.
    pub(super) async fn note_open_edit(&self, id: FileId, w: &View) {
        let entry = self.outbox_entry(id, w, false);
        if let Err(err) = self.outbox.save_open(&entry).await {
            tracing::warn!(path = %self.path_of(id), error = %err, "cannot write the outbox entry");
        }
    }

    /// Forgets the outbox entry and the staging copy of a write session
    /// that ends without an edit.
    pub(super) fn drop_open_edit(&self, id: FileId, lease: LeaseId) {
        self.outbox.remove(id.0, lease.0);
        remove_staging(&self.staging_path(id, lease.0));
    }

    /// Called on the last close of a changed file.
    pub(super) async fn publish(self: Arc<Self>, id: FileId) {
        let Some(view) = self.writes.view(id) else { return };
        let entry = self.outbox_entry(id, &view, true);
        if let Err(e) = self.outbox.save(&entry).await {
            tracing::warn!(path = %self.path_of(id), error = %e, "cannot write the outbox entry; publishing anyway");
        }
        // The overlay's copy of the base must be in before the bytes are
        // hashed (the saved entry and the linked base cover a crash now).
        view.staging.completed().await;
        // No handle is open: what the session changed is settled.
        let delta = view.staging.delta();
        self.deliver(entry, delta).await;
    }

    /// Publishes the edits a previous run of the daemon left in the outbox.
    pub async fn resume_outbox(self: &Arc<Self>) {
        for (p, parsed) in self.outbox.entries() {
            match parsed {
                Ok(entry) => {
                    tracing::info!(name = %entry.name, "resuming a publish left by the previous run");
                    let this = self.clone();
                    // What the previous run changed is not known: hashed whole.
                    self.tasks.spawn_on(
                        async move {
                            if this.complete_leftover(&entry).await {
                                this.deliver(entry, None).await
                            }
                        },
                        &self.rt,
                    );
                }
                Err(e) => tracing::error!(file = %p.display(), error = %e, "unreadable outbox entry; left in place"),
            }
        }
    }

    /// Completes a staging copy that the previous run left before its
    /// overlay's copy was complete (its holes are the base's bytes; only a
    /// run that died leaves one: a publish waits for the copy). False when
    /// that failed: the edit stays in the outbox for the next mount.
    async fn complete_leftover(&self, entry: &OutboxEntry) -> bool {
        if entry.info_hash.is_some() {
            return true;
        }
        let path = &entry.name;
        let staging = entry.staging.clone();
        match tokio::task::spawn_blocking(move || super::overlay::fill_leftover(&staging)).await {
            Ok(Ok(false)) => true,
            Ok(Ok(true)) => {
                tracing::info!(%path, "completed the staging copy the previous run left, from the version it started from");
                true
            }
            Ok(Err(e)) => {
                tracing::error!(%path, error = %e, "cannot complete the staging copy from the version it started from; the edit stays in the outbox for the next mount");
                false
            }
            Err(e) => {
                tracing::error!(%path, error = %e, "the staging copy's completion did not run; the edit stays in the outbox for the next mount");
                false
            }
        }
    }

    /// Takes an outbox entry to the tracker, whatever it takes. `delta`:
    /// what the edit changed of its base, if that is known.
    async fn deliver(self: Arc<Self>, mut entry: OutboxEntry, delta: Option<Delta>) {
        let path = self.path_of(FileId(entry.file));
        if !self.hand_to_swarm(&mut entry, &path, delta).await {
            return;
        }
        let torrent = match entry.info_hash() {
            Some(ih) => match std::fs::read(self.dirs.torrents.join(format!("{ih}.torrent"))) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(%path, error = %e, "the edit's torrent is gone from the cache");
                    self.give_up(&entry, &path);
                    return;
                }
            },
            None => Vec::new(),
        };
        if !entry.closed {
            tracing::warn!(%path, "an edit was still open when the daemon stopped; publishing it as a conflict copy");
            self.settle_as_conflict_copy(&entry, torrent, &path).await;
            return;
        }
        self.publish_until_answered(&entry, torrent, &path).await;
    }

    /// The first phase of an outbox entry: the swarm takes the staging
    /// copy's bytes and the entry names their info hash. False when this
    /// run gave the edit up.
    async fn hand_to_swarm(self: &Arc<Self>, entry: &mut OutboxEntry, path: &str, delta: Option<Delta>) -> bool {
        if entry.info_hash.is_none() {
            // The staging copy is the truth until the swarm has the bytes.
            if let Ok(md) = std::fs::metadata(&entry.staging) {
                entry.size = md.len();
            }
        }
        if entry.info_hash.is_some() || entry.size == 0 {
            return true;
        }
        // Publishing links the staging file into the store. It is
        // removed only once the outbox entry names the info hash: a
        // crash in between leaves the bytes where the next run looks.
        match self.content.publish(&entry.staging, &entry.name, delta).await {
            Ok(c) => {
                let tpath = self.dirs.torrents.join(format!("{}.torrent", c.info_hash));
                if let Err(e) = crate::atomic_file::write(&tpath, &c.torrent, false) {
                    tracing::warn!(error = %e, "cannot cache torrent file {}", tpath.display());
                }
                self.store.mark_ensured(c.info_hash);
                entry.info_hash = Some(c.info_hash.to_string());
                entry.size = c.size;
                match self.outbox.save(entry).await {
                    Ok(()) => remove_staging(&entry.staging),
                    Err(e) => tracing::warn!(%path, error = %e, "cannot update the outbox entry; the staging copy stays"),
                }
                true
            }
            Err(e) => {
                tracing::error!(%path, error = %e, "could not make a torrent of the edit");
                self.give_up(entry, path);
                false
            }
        }
    }

    /// The compare-and-set publish, retried while the tracker is away.
    async fn publish_until_answered(self: &Arc<Self>, entry: &OutboxEntry, torrent: Vec<u8>, path: &str) {
        let id = FileId(entry.file);
        let call = Publish {
            file: id,
            base: Version(entry.base),
            lease: LeaseId(entry.lease),
            size: entry.size,
            mtime: entry.mtime,
            info_hash: entry.info_hash(),
            torrent: torrent.clone(),
            keep_lock: false,
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.coord.call(call.clone()).await {
                Ok(published) => {
                    tracing::info!(%path, version = %published.version, size = entry.size, "published");
                    return self.finish(entry, Some(published));
                }
                Err(CoordError::Refused(ProtoError::NoSuchFile)) if self.deleted_here(id).await => {
                    return self.finish(entry, None);
                }
                // A publish cut off mid-flight is sent again: the tracker
                // answers a repeat of the publish it applied with its entry.
                Err(CoordError::Offline | CoordError::Lost | CoordError::Protocol(_)) => {
                    tracing::info!(%path, "tracker unreachable; the edit waits in the outbox");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e @ CoordError::Unexpected(_)) => {
                    tracing::error!(%path, error = %e, "unexpected answer to publish");
                    return self.give_up(entry, path);
                }
                Err(CoordError::Refused(e)) => {
                    tracing::warn!(%path, error = %e, "publish refused; publishing the edit as a conflict copy");
                    return self.settle_as_conflict_copy(entry, torrent, path).await;
                }
            }
        }
    }

    /// Whether this member deleted `id` (or renamed another file over it)
    /// while its edit was being published. A delete whose answer is still
    /// on its way (`rm` right after the close) is waited for: the tracker
    /// may have taken it before this publish.
    async fn deleted_here(&self, id: FileId) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.changed.notified();
            if self.writes.was_deleted(id) {
                return true;
            }
            if !self.writes.delete_in_flight(id) || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Publishes the edit as a conflict copy; gives it up if even that fails.
    async fn settle_as_conflict_copy(self: &Arc<Self>, entry: &OutboxEntry, torrent: Vec<u8>, path: &str) {
        if let Err(err) = self.publish_conflict_copy(entry, torrent).await {
            tracing::error!(%path, error = %err, "could not publish the conflict copy");
            self.give_up(entry, path);
        } else {
            self.finish(entry, None);
        }
    }

    /// The edit is settled: end the write session (if this run has one) and
    /// drop the outbox entry; apply what the tracker published.
    fn finish(self: &Arc<Self>, entry: &OutboxEntry, published: Option<FileEntry>) {
        let id = FileId(entry.file);
        remove_staging(&entry.staging);
        let done = self.writes.finish(id, entry.lease, published.is_some());
        // Set after the publish started (`rsync` sets the mtime after
        // closing the file): the publish did not carry them.
        let mode = published.as_ref().and_then(|p| {
            done.as_ref().and_then(|d| d.mode).filter(|m| titorrent_tracker::proto::shared_mode(&p.kind, *m) != p.mode)
        });
        let mtime = published.as_ref().and_then(|p| done.as_ref().and_then(|d| d.mtime).filter(|t| *t != p.mtime));
        // Shown here as set until `share_attrs` lands (the kernel must not
        // see the old mode in between: a chmod 0477 right after a write
        // would let the owner write again for a moment).
        let published = published.map(|p| FileEntry {
            mode: mode.map_or(p.mode, |m| titorrent_tracker::proto::shared_mode(&p.kind, m)),
            mtime: mtime.unwrap_or(p.mtime),
            ..p
        });
        if mode.is_some() || mtime.is_some() {
            self.table.attrs_on_their_way(id);
        }
        let applied = published.map(|p| {
            self.store.note_author(&p);
            self.table.published(p)
        });
        self.outbox.remove(entry.file, entry.lease);
        self.changed.notify_waiters();
        if applied.is_some_and(|a| a.content_changed) {
            self.kernel_inval_inode(id);
            self.collect_old_versions(id);
        }
        if let Some(lease) = done.and_then(|d| d.unlock) {
            self.release_lease(id, lease);
        }
        if mode.is_some() || mtime.is_some() {
            let this = self.clone();
            self.tasks.spawn_on(async move { this.share_attrs(id, mode, mtime).await }, &self.rt);
        }
    }

    /// A refused edit becomes a new file next to the original, with the same
    /// content (no re-hash: the torrent is reused).
    async fn publish_conflict_copy(self: &Arc<Self>, entry: &OutboxEntry, torrent: Vec<u8>) -> Result<FileEntry> {
        let p = FileId(entry.parent);
        let parent = if self.table.current(p).is_some_and(|e| e.kind == FileKind::Dir) { p } else { FileId::ROOT };
        let name = conflict_name(&entry.name, &self.me_name, now_ms());
        let call = CreateLocked { parent, name: name.clone(), mode: entry.mode, owner: Default::default() };
        let LockedFile { entry: created, lease } = self.coord.call(call).await?;
        let call = Publish {
            file: created.id,
            base: created.version,
            lease: lease.id,
            size: entry.size,
            mtime: entry.mtime,
            info_hash: entry.info_hash(),
            torrent,
            keep_lock: false,
        };
        let p = self.coord.call(call).await?;
        tracing::warn!(original = %entry.name, copy = %name, "edit kept as a conflict copy");
        self.table.apply_in_place(p.clone());
        self.changed.notify_waiters();
        Ok(p)
    }

    /// This run cannot publish the edit: its bytes go to the local
    /// conflicts directory, and if even that fails (a full disk, no file
    /// descriptors left) the outbox entry stays for the next run to retry.
    fn give_up(self: &Arc<Self>, entry: &OutboxEntry, path: &str) {
        let kept = self.keep_locally(entry, path);
        self.finish(entry, None);
        if !kept {
            match self.outbox.save_here(entry) {
                Ok(()) => tracing::error!(%path, "the edit stays in the outbox; the next mount retries it"),
                Err(e) => tracing::error!(%path, error = %e, "the edit could not even stay in the outbox"),
            }
        }
    }

    /// Last resort: the bytes go to the local conflicts directory.
    fn keep_locally(&self, entry: &OutboxEntry, path: &str) -> bool {
        let src = if entry.staging.exists() {
            Some(entry.staging.clone())
        } else {
            entry.info_hash().and_then(|ih| self.content.local_path(ih))
        };
        let dst = self.dirs.conflicts.join(conflict_name(&path.replace('/', "_"), &self.me_name, now_ms()));
        match src.map(|s| std::fs::copy(&s, &dst)) {
            Some(Ok(_)) => {
                tracing::error!(%path, kept = %dst.display(), "edit could not be published; its bytes are kept");
                true
            }
            Some(Err(e)) => {
                tracing::error!(%path, error = %e, staging = %entry.staging.display(), "edit could not be published nor copied");
                false
            }
            None => {
                tracing::error!(%path, "edit could not be published and its bytes are not readable now");
                false
            }
        }
    }
}

//! Publishing an edit so that no byte is ever lost: an outbox entry on disk
//! before anything else (it survives a crash or restart of the daemon), the
//! torrent, the compare-and-set publish retried while the tracker is away,
//! and, when the tracker refuses, a conflict copy published as a new file
//! next to the original.
//!
//! An outbox entry goes through two phases, recorded in its file:
//! `content: None` (the bytes are in `staging`) and `content: Some` (the
//! swarm holds and seeds them; the torrent is in the torrents directory).
//! The entry is deleted only once the tracker has taken the edit, as the file
//! itself or as a conflict copy, or its bytes are safe in `conflicts/`.

use super::*;
use serde::{Deserialize, Serialize};

/// One edit waiting to be published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct OutboxEntry {
    pub file: u64,
    pub parent: u64,
    pub name: String,
    /// Lease ids are random u64s and TOML integers are i64: kept as text.
    #[serde(with = "u64_text")]
    pub lease: u64,
    pub base: u64,
    pub mode: u32,
    pub mtime: UnixMillis,
    pub staging: PathBuf,
    pub size: u64,
    /// Hex info hash once the swarm holds the bytes.
    pub info_hash: Option<String>,
    /// The program closed the file. An edit found unclosed by the next run
    /// (the daemon died while it was open) may be half-written: it becomes a
    /// conflict copy, never the file itself.
    #[serde(default)]
    pub closed: bool,
}

/// A u64 written as a decimal string; read from a string or an integer
/// (entries written before lease ids were kept as text).
mod u64_text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Int(u64),
            Str(String),
        }
        match Text::deserialize(d)? {
            Text::Int(n) => Ok(n),
            Text::Str(s) => s.parse().map_err(D::Error::custom),
        }
    }
}

impl OutboxEntry {
    fn info_hash(&self) -> Option<InfoHash> {
        let bytes = hex::decode(self.info_hash.as_ref()?).ok()?;
        Some(InfoHash(bytes.try_into().ok()?))
    }
}

/// "notes (conflict from ana 2026-11-21 140305).txt"
pub fn conflict_name(name: &str, member: &str, at: UnixMillis) -> String {
    let secs = at / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    let stamp = format!("{y:04}-{m:02}-{d:02} {:02}{:02}{:02}", t / 3600, (t / 60) % 60, t % 60);
    let member: String = member.chars().filter(|c| *c != '/' && *c != '\0').collect();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let mut out = format!("{stem} (conflict from {member} {stamp}){ext}");
    while out.len() > 255 {
        out.remove(0);
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl<C: Content, T: Coordinator> Folder<C, T> {
    fn outbox_path(&self, file: u64, lease: u64) -> PathBuf {
        self.dirs.outbox.join(format!("{file}-{lease}.toml"))
    }

    /// Writes an outbox entry durably, on the blocking pool: an fsync must
    /// not hold a runtime worker.
    async fn save_outbox(&self, e: &OutboxEntry) -> std::io::Result<()> {
        let text = toml::to_string(e).map_err(std::io::Error::other)?;
        let path = self.outbox_path(e.file, e.lease);
        tokio::task::spawn_blocking(move || crate::atomic_file::write(&path, text.as_bytes(), true))
            .await
            .map_err(std::io::Error::other)?
    }

    /// [`Self::save_outbox`] on the calling thread, for the last-resort path.
    fn save_outbox_here(&self, e: &OutboxEntry) -> std::io::Result<()> {
        let text = toml::to_string(e).map_err(std::io::Error::other)?;
        crate::atomic_file::write(&self.outbox_path(e.file, e.lease), text.as_bytes(), true)
    }

    fn drop_outbox(&self, e: &OutboxEntry) {
        let _ = std::fs::remove_file(self.outbox_path(e.file, e.lease));
    }

    fn outbox_entry(&self, inner: &Inner, id: FileId, closed: bool) -> Option<OutboxEntry> {
        let w = inner.writes.get(&id)?;
        let e = inner.tree.get(id);
        Some(OutboxEntry {
            file: id.0,
            parent: e.map(|e| e.parent.0).unwrap_or(FileId::ROOT.0),
            name: e.map(|e| e.name.clone()).unwrap_or_else(|| format!("file-{id}")),
            lease: w.lease.id.0,
            base: w.lease.version.0,
            mode: w.pending_mode.or(e.map(|e| e.mode)).unwrap_or(0o644),
            mtime: w.staging.file.metadata().ok().and_then(|md| w.edit_mtime(&md)).unwrap_or_else(now_ms),
            staging: w.staging.path.clone(),
            size: w.staging.file.metadata().map(|m| m.len()).unwrap_or(0),
            info_hash: None,
            closed,
        })
    }

    /// Records a write session as soon as it opens, so that a daemon killed
    /// while a program writes still has the bytes and knows whose they are.
    pub(super) async fn note_open_edit(&self, id: FileId) {
        let entry = self.outbox_entry(&self.inner.lock(), id, false);
        if let Some(e) = entry {
            if let Err(err) = self.save_outbox(&e).await {
                tracing::warn!(path = %self.path_of(id), error = %err, "cannot write the outbox entry");
            }
        }
    }

    /// Forgets the outbox entry and the staging copy of a write session
    /// that ends without an edit.
    pub(super) fn drop_open_edit(&self, id: FileId, lease: titorrent_tracker::proto::LeaseId) {
        let _ = std::fs::remove_file(self.outbox_path(id.0, lease.0));
        remove_staging(&self.staging_path(id, lease.0));
    }

    /// Called on the last close of a changed file.
    pub(super) async fn publish(self: Arc<Self>, id: FileId) {
        let Some(entry) = self.outbox_entry(&self.inner.lock(), id, true) else { return };
        if let Err(e) = self.save_outbox(&entry).await {
            tracing::warn!(path = %self.path_of(id), error = %e, "cannot write the outbox entry; publishing anyway");
        }
        self.deliver(entry).await;
    }

    /// Publishes the edits a previous run of the daemon left in the outbox.
    pub async fn resume_outbox(self: &Arc<Self>) {
        let Ok(dir) = std::fs::read_dir(&self.dirs.outbox) else { return };
        for ent in dir.flatten() {
            let p = ent.path();
            if p.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let parsed = std::fs::read_to_string(&p).map_err(|e| e.to_string()).and_then(|t| toml::from_str::<OutboxEntry>(&t).map_err(|e| e.to_string()));
            match parsed {
                Ok(entry) => {
                    tracing::info!(name = %entry.name, "resuming a publish left by the previous run");
                    let this = self.clone();
                    self.tasks.spawn_on(async move { this.deliver(entry).await }, &self.rt);
                }
                Err(e) => tracing::error!(file = %p.display(), error = %e, "unreadable outbox entry; left in place"),
            }
        }
    }

    /// Takes an outbox entry to the tracker, whatever it takes.
    async fn deliver(self: Arc<Self>, mut entry: OutboxEntry) {
        let id = FileId(entry.file);
        let path = self.path_of(id);
        if entry.info_hash.is_none() {
            // The staging copy is the truth until the swarm has the bytes.
            if let Ok(md) = std::fs::metadata(&entry.staging) {
                entry.size = md.len();
            }
        }
        if entry.info_hash.is_none() && entry.size > 0 {
            // Publishing links the staging file into the store. It is
            // removed only once the outbox entry names the info hash: a
            // crash in between leaves the bytes where the next run looks.
            match self.content.publish(&entry.staging, &entry.name).await {
                Ok(c) => {
                    let tpath = self.dirs.torrents.join(format!("{}.torrent", c.info_hash));
                    if let Err(e) = crate::atomic_file::write(&tpath, &c.torrent, false) {
                        tracing::warn!(error = %e, "cannot cache torrent file {}", tpath.display());
                    }
                    self.inner.lock().ensured.insert(c.info_hash);
                    entry.info_hash = Some(c.info_hash.to_string());
                    entry.size = c.size;
                    match self.save_outbox(&entry).await {
                        Ok(()) => remove_staging(&entry.staging),
                        Err(e) => tracing::warn!(%path, error = %e, "cannot update the outbox entry; the staging copy stays"),
                    }
                }
                Err(e) => {
                    tracing::error!(%path, error = %e, "could not make a torrent of the edit");
                    self.give_up(&entry, &path);
                    return;
                }
            }
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
            if let Err(err) = self.publish_conflict_copy(&entry, torrent).await {
                tracing::error!(%path, error = %err, "could not publish the conflict copy");
                self.give_up(&entry, &path);
            } else {
                self.finish(&entry, None);
            }
            return;
        }
        let req = Request::Publish {
            file: id,
            base: Version(entry.base),
            lease: titorrent_tracker::proto::LeaseId(entry.lease),
            size: entry.size,
            mtime: entry.mtime,
            info_hash: entry.info_hash(),
            torrent: torrent.clone(),
            keep_lock: false,
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.coord.request(req.clone()).await {
                Ok(Response::Published(published)) => {
                    tracing::info!(%path, version = %published.version, size = entry.size, "published");
                    self.finish(&entry, Some(published));
                    return;
                }
                Err(CoordError::Refused(ProtoError::NoSuchFile)) if self.was_deleted_here(id) => {
                    self.finish(&entry, None);
                    return;
                }
                Err(CoordError::Offline) | Err(CoordError::Failed(_)) => {
                    tracing::info!(%path, "tracker unreachable; the edit waits in the outbox");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Ok(other) => {
                    tracing::error!(%path, answer = ?other, "unexpected answer to publish");
                    self.give_up(&entry, &path);
                    return;
                }
                Err(CoordError::Refused(e)) => {
                    tracing::warn!(%path, error = %e, "publish refused; publishing the edit as a conflict copy");
                    if let Err(err) = self.publish_conflict_copy(&entry, torrent).await {
                        tracing::error!(%path, error = %err, "could not publish the conflict copy");
                        self.give_up(&entry, &path);
                    } else {
                        self.finish(&entry, None);
                    }
                    return;
                }
            }
        }
    }

    fn was_deleted_here(&self, id: FileId) -> bool {
        self.inner.lock().writes.get(&id).is_some_and(|w| w.deleted)
    }

    /// The edit is settled: drop the write state (if this run has one) and
    /// the outbox entry; apply what the tracker published.
    fn finish(self: &Arc<Self>, entry: &OutboxEntry, published: Option<FileEntry>) {
        let id = FileId(entry.file);
        remove_staging(&entry.staging);
        let (applied, mode, mtime, lease) = {
            let mut inner = self.inner.lock();
            let w = inner.writes.remove(&id).filter(|w| w.lease.id.0 == entry.lease);
            let lease = w.as_ref().filter(|_| published.is_none()).map(|w| w.lease.id);
            if lease.is_some() {
                inner.unlocking.insert(id); // see release_lease
            }
            // Set after the publish started (`rsync` sets the mtime after
            // closing the file): the publish did not carry them.
            let mode = published.as_ref().and_then(|p| w.as_ref().and_then(|w| w.pending_mode).filter(|m| *m != p.mode));
            let mtime = published.as_ref().and_then(|p| w.as_ref().and_then(|w| w.pending_mtime).filter(|t| *t != p.mtime));
            let applied = published.map(|p| {
                inner.locks.remove(&id);
                super::note_author(&mut inner, &p);
                inner.tree.apply_in_place(p)
            });
            (applied, mode, mtime, lease)
        };
        self.drop_outbox(entry);
        self.changed.notify_waiters();
        if applied.is_some_and(|a| a.content_changed) {
            self.kernel_inval_inode(id);
            self.collect_old_versions(id);
        }
        if let Some(lease) = lease {
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
        let parent = {
            let inner = self.inner.lock();
            let p = FileId(entry.parent);
            if inner.tree.get(p).is_some_and(|e| e.kind == FileKind::Dir) { p } else { FileId::ROOT }
        };
        let name = conflict_name(&entry.name, &self.me_name, now_ms());
        let req = Request::CreateFile { parent, name: name.clone(), kind: FileKind::File, mode: entry.mode, lock: true };
        let (created, lease) = match self.coord.request(req).await? {
            Response::File { entry, lease: Some(lease) } => (entry, lease),
            other => return Err(ModelError::Protocol(format!("CreateFile answered {other:?}"))),
        };
        let req = Request::Publish {
            file: created.id,
            base: created.version,
            lease: lease.id,
            size: entry.size,
            mtime: entry.mtime,
            info_hash: entry.info_hash(),
            torrent,
            keep_lock: false,
        };
        match self.coord.request(req).await? {
            Response::Published(p) => {
                tracing::warn!(original = %entry.name, copy = %name, "edit kept as a conflict copy");
                self.inner.lock().tree.apply_in_place(p.clone());
                self.changed.notify_waiters();
                Ok(p)
            }
            other => Err(ModelError::Protocol(format!("Publish answered {other:?}"))),
        }
    }

    /// This run cannot publish the edit: its bytes go to the local
    /// conflicts directory, and if even that fails (a full disk, no file
    /// descriptors left) the outbox entry stays for the next run to retry.
    fn give_up(self: &Arc<Self>, entry: &OutboxEntry, path: &str) {
        let kept = self.keep_locally(entry, path);
        self.finish(entry, None);
        if !kept {
            match self.save_outbox_here(entry) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension() {
        // 2026-11-21 14:03:05 UTC
        let at = 1_795_269_785_000;
        assert_eq!(conflict_name("notes.txt", "ana", at), "notes (conflict from ana 2026-11-21 140305).txt");
        assert_eq!(conflict_name("Makefile", "bob", at), "Makefile (conflict from bob 2026-11-21 140305)");
        assert_eq!(conflict_name(".bashrc", "bob", at), ".bashrc (conflict from bob 2026-11-21 140305)");
        assert!(conflict_name(&"x".repeat(300), "bob", at).len() <= 255);
    }

    #[test]
    fn outbox_entries_keep_any_lease_id() {
        let e = OutboxEntry {
            file: 7,
            parent: 1,
            name: "a.txt".into(),
            lease: u64::MAX - 5,
            base: 3,
            mode: 0o644,
            mtime: 1_795_269_785_000,
            staging: PathBuf::from("/s/7-1"),
            size: 12,
            info_hash: None,
            closed: true,
        };
        let text = toml::to_string(&e).expect("a lease id over i64::MAX serializes");
        let back: OutboxEntry = toml::from_str(&text).unwrap();
        assert_eq!(back.lease, u64::MAX - 5);
        // Entries written before, with the lease as an integer, still read.
        let old = text.replace(&format!("lease = \"{}\"", u64::MAX - 5), "lease = 42");
        assert_eq!(toml::from_str::<OutboxEntry>(&old).unwrap().lease, 42);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}

/// Removes a staging copy whose bytes the store holds now.
fn remove_staging(path: &std::path::Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(staging = %path.display(), error = %e, "could not remove a published staging copy")
        }
        _ => {}
    }
}

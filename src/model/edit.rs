//! The front's reads and changes of open files and of the table: reads
//! (from the staging copy, a local version, or the swarm), writes, sizes,
//! attributes, removes and renames.

use super::{check_name, pread, AttrChange, Content, Coordinator, CoordError, Fh, Folder, ModelError, OpenMode, ReadPlan, Result};
use bytes::Bytes;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;
use titorrent_tracker::calls::{Delete, Deleted, FileAnswer, Rename, SetAttr};
use titorrent_tracker::proto::{FileEntry, FileId, InfoHash, Owner, ProtoError, Version};

impl<C: Content, T: Coordinator> Folder<C, T> {
    /// Decides a read from memory: local bytes now, or what to fetch.
    /// Disk work (opening the object file, reading) happens with no part's
    /// lock held.
    pub fn read_plan(&self, fh: Fh, offset: u64, size: u32) -> Result<ReadPlan> {
        let file = self.handles.get(fh).ok_or(ModelError::BadHandle)?.file;
        if let Some(staging) = self.writes.staging(file) {
            return Ok(ReadPlan::Data(staging.read(offset, size)?));
        }
        let e = self.table.entry(file).ok_or(ModelError::NotFound)?;
        let Some(ih) = e.info_hash.filter(|_| offset < e.size) else {
            return Ok(ReadPlan::Data(Vec::new()));
        };
        let (open_file, ensured) = self.store.local_file(&ih);
        let local = open_file.or_else(|| {
            let f = Arc::new(File::open(self.content.local_path(ih)?).ok()?);
            self.store.keep_open(ih, f.clone());
            Some(f)
        });
        match local {
            Some(f) => Ok(ReadPlan::Data(pread(&f, offset, size)?)),
            // Pieces fetched already (a sequential reader behind the
            // read-ahead, say) need no task and no thread hop either.
            None if ensured => match self.content.read_local(ih, offset, size) {
                Some(d) => Ok(ReadPlan::Data(d)),
                None => Ok(ReadPlan::Fetch { file, version: e.version, info_hash: ih }),
            },
            None => Ok(ReadPlan::Fetch { file, version: e.version, info_hash: ih }),
        }
    }

    /// Fetches a range from the swarm (after making the version known to it).
    pub async fn fetch(self: &Arc<Self>, file: FileId, version: Version, ih: InfoHash, offset: u64, size: u32) -> Result<Bytes> {
        self.ensure_version(file, version, ih).await?;
        Ok(self.content.read(ih, offset, size).await?)
    }

    pub fn write(&self, fh: Fh, offset: u64, data: &[u8]) -> Result<u32> {
        let h = self.handles.get(fh).ok_or(ModelError::BadHandle)?;
        if !h.write {
            return Err(ModelError::NotWritable);
        }
        let staging = self.writes.write(h.file)?;
        if h.append {
            let _end = staging.appending.lock();
            let end = staging.file.metadata()?.len();
            staging.write_at(data, end)?;
        } else {
            staging.write_at(data, offset)?;
        }
        Ok(data.len() as u32)
    }

    /// Changes a file's size. Through an open write handle this edits the
    /// staging copy; otherwise it is a whole open-truncate-close edit.
    pub async fn set_size(self: &Arc<Self>, id: FileId, fh: Option<Fh>, size: u64) -> Result<()> {
        if let Some(staging) = self.writes.staging(id) {
            staging.ready_for_len(size).await;
        }
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
        let by_handle = fh.and_then(|fh| self.handles.get(fh)).is_some_and(|h| h.write && h.file == id);
        if !by_handle {
            return Ok(false);
        }
        match self.writes.truncate(id) {
            Some(staging) => {
                staging.set_len(size)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Shares a mode, mtime and/or owner change; sets this member's atime.
    /// While the file is being written here, a mode or mtime change rides
    /// with the publish instead (an owner change goes at once).
    pub async fn set_attrs(self: &Arc<Self>, id: FileId, change: AttrChange) -> Result<FileEntry> {
        if super::local::is_local(id) {
            return self.local.set_attrs(id, change, super::now_ms());
        }
        let AttrChange { mode, mtime, atime, owner } = change;
        if let Some(t) = atime {
            self.set_atime(id, t)?;
        }
        self.attrs_landed(id).await;
        // The owner it has already, on a file being written here (tar and
        // cp -a chown each file they create): nothing to share, and the
        // publish at close moves the ctime.
        let same = |o: &Owner| self.writes.has_session(id) && self.table.current(id).is_some_and(|e| e.owner == *o);
        let owner = owner.filter(|o| !same(o));
        if let Some(owner) = owner {
            if !self.is_online() {
                return Err(ModelError::Offline);
            }
            let resp = self.coord.call(SetAttr { file: id, mode: None, mtime: None, owner: Some(owner) }).await;
            let entry = self.entry_reply(resp).map_err(|e| self.with_path(id, e))?;
            self.table.attrs_set(entry);
        }
        if mode.is_none() && mtime.is_none() {
            return self.attr(id);
        }
        if self.writes.set_pending_attrs(id, mode, mtime) {
            self.table.set_attrs_here(id, mode, mtime);
            if let Some(m) = mode {
                self.table.set_own_bits(id, m);
            }
            return self.attr(id);
        }
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let resp = self.coord.call(SetAttr { file: id, mode: mode.map(|m| m & 0o7777), mtime, owner: None }).await;
        let entry = self.entry_reply(resp).map_err(|e| self.with_path(id, e))?;
        self.table.attrs_set(entry);
        if let Some(m) = mode {
            self.table.set_own_bits(id, m);
        }
        self.attr(id)
    }

    /// Waits (a while at most) for a mode or mtime set during a write
    /// session here to reach the tracker: a change made after it must reach
    /// the tracker after it too.
    async fn attrs_landed(&self, id: FileId) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let notified = self.changed.notified();
            if !self.table.attrs_in_flight(id) || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// The entry in a `File` answer, or a refusal mapped to the model's error.
    pub(super) fn entry_reply(&self, resp: std::result::Result<FileAnswer, CoordError>) -> Result<FileEntry> {
        match resp {
            Ok(FileAnswer { entry, .. }) => Ok(entry),
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
        match (dir, e.kind.is_dir()) {
            (false, true) => return Err(ModelError::IsDir),
            (true, false) => return Err(ModelError::NotDir),
            // This member's FIFOs and sockets in it count.
            (true, true) if !self.readdir(e.id)?.is_empty() => return Err(ModelError::NotEmpty),
            _ => {}
        }
        if super::local::is_local(e.id) {
            self.local.remove(parent, name, super::now_ms());
            self.table.touch_dir_here(parent);
            return Ok(());
        }
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        // A hard link's name: its own entry goes, the file stays.
        let named = self.table.name_entry(parent, name).filter(|n| n.kind.link_of().is_some());
        let target = named.as_ref().map_or(e.id, |n| n.id);
        let _deleting = self.writes.deleting(e.id, &self.changed);
        let seq = match self.coord.call_at(Delete { file: target }).await {
            Ok((Deleted { promoted: Some(entry) }, seq)) if named.is_none() => {
                self.promoted_here(entry, seq); // a link took the file's place
                return Ok(());
            }
            Ok((_, seq)) => seq,
            Err(CoordError::Refused(ProtoError::Locked(holder))) => {
                return Err(ModelError::Locked { path: self.path_of(e.id), holder })
            }
            Err(err) => return Err(err.into()),
        };
        if named.is_none() {
            self.writes.deleted(e.id); // the delete released our lock too
        }
        self.table.removed_here(target, &self.handles.open_files(), seq);
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
        let src = match self.table.name_entry(parent, name) {
            Some(n) if n.kind.link_of().is_some() => n, // a hard link's own entry
            _ => self.lookup(parent, name)?,
        };
        let other_name = self.table.name_entry(new_parent, new_name).is_some_and(|t| t.id != src.id);
        if other_name && self.table.child(new_parent, new_name) == self.table.child(parent, name) {
            return Ok(()); // two names of one file: rename(2) does nothing
        }
        if self.rename_local(&src, (parent, name), (new_parent, new_name), replace).await? {
            return Ok(());
        }
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        // Saved to a temporary name and renamed over the original at once
        // (editors, rsync, os.replace): the publish of the temporary file is
        // still in flight. Renamed now, the name would show the others its
        // previous version (empty) until the publish lands; renamed after,
        // they go from the old content to the new in one step.
        self.wait_publish_landed(src.id, Duration::from_secs(30)).await;
        let target = self.table.name_entry(new_parent, new_name).map(|t| t.id);
        // A target with hard links is not deleted: the tracker moves it to
        // one link's place, and its events bring that here.
        let target = target.filter(|t| self.table.links_to(*t) == 0);
        let call = Rename { file: src.id, new_parent, new_name: new_name.to_string(), replace };
        let _deleting = target.map(|t| self.writes.deleting(t, &self.changed));
        let seq = match self.coord.call_at(call).await {
            Ok(((), seq)) => seq,
            Err(CoordError::Refused(ProtoError::Locked(holder))) => {
                let who = if holder.member == self.me { src.id } else { target.unwrap_or(src.id) };
                return Err(ModelError::Locked { path: self.path_of(who), holder });
            }
            Err(e) => return Err(e.into()),
        };
        // The kernel moves its dentry when we reply: the table must agree now.
        if let Some(t) = target.filter(|t| *t != src.id) {
            self.writes.deleted(t);
        }
        self.table.renamed_here(src.id, (new_parent, new_name), target, &self.handles.open_files(), seq);
        self.changed.notify_waiters();
        Ok(())
    }
}

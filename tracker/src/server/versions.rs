//! Kept versions of each file: every publish (and restore) records a
//! [`VersionInfo`] next to its torrent and pushes the oldest out of the
//! window of `keep_versions`, in the same batch; `ListVersions` answers from
//! memory and `Restore` makes a kept version current again as a new one.
//!
//! Restoring copies the old version's torrent under the new version's key,
//! so every kept version owns its torrent and pruning one never affects
//! another; peers fetch nothing new (same info hash).

use super::group::{GroupState, Txn};
use super::ops::{Auth, Outcome};
use super::{now_ms, Tracker};
use crate::proto::{
    EventKind, FileEntry, FileId, FileKind, LeaseId, ProtoError, UnixMillis, Version, VersionInfo,
};

fn version_info(e: &FileEntry, at: UnixMillis) -> VersionInfo {
    VersionInfo { version: e.version, size: e.size, mtime: e.mtime, info_hash: e.info_hash, author: e.author, at }
}

impl GroupState {
    /// Memory side of [`Tracker::add_version`], once its batch is applied.
    pub(crate) fn keep_version(&mut self, e: &FileEntry, at: UnixMillis, pushed_out: &[Version]) {
        let kept = self.versions.entry(e.id).or_default();
        kept.insert(e.version, version_info(e, at));
        for v in pushed_out {
            kept.remove(v);
        }
    }
}

impl Tracker {
    /// Writes `e` (a file's new current entry) as a kept version with its
    /// torrent (empty: none), and drops the versions that fall out of the
    /// window. Returns those, for [`GroupState::keep_version`].
    pub(crate) fn add_version(
        &self,
        txn: &mut Txn,
        st: &GroupState,
        e: &FileEntry,
        torrent: Vec<u8>,
    ) -> Result<Vec<Version>, ProtoError> {
        txn.w.put_version(txn.group, e.id, &version_info(e, txn.now))?;
        if !torrent.is_empty() {
            txn.w.put_torrent(txn.group, e.id, e.version, torrent);
        }
        let keep_from = Version(e.version.0.saturating_add(1).saturating_sub(self.keep_versions()));
        let pushed_out = st.versions_before(e.id, keep_from);
        for v in &pushed_out {
            txn.w.del_version(txn.group, e.id, *v);
        }
        Ok(pushed_out)
    }

    /// Kept versions of `file`, newest first (the current one included).
    pub(crate) fn list_versions(&self, auth: &Auth, file: FileId) -> Outcome<Vec<VersionInfo>> {
        let group = &auth.group;
        let st = auth.state()?;
        match st.files.get(&file) {
            None => return Err(ProtoError::NoSuchFile),
            Some(e) if e.kind == FileKind::Dir => return Err(ProtoError::IsADirectory),
            Some(e) if e.kind != FileKind::File => return Err(ProtoError::BadRequest("only a regular file has versions".into())),
            Some(_) => {}
        }
        let list = st.versions.get(&file).map(|vs| vs.values().rev().cloned().collect()).unwrap_or_default();
        // What it lists may come from a publish not flushed yet.
        let ticket = self.committer.durable_at(group, st.current_seq());
        Ok((list, ticket))
    }

    /// Makes kept `version` current again as version current+1: its size,
    /// info hash and torrent, mtime now, the caller as author. With
    /// `lease`, it must be the caller's live lease on `file` (which it keeps
    /// holding); without, the file must not be locked (the caller's own
    /// lock included: it names the lease it holds).
    pub(crate) fn restore(&self, auth: &Auth, file: FileId, version: Version, lease: Option<LeaseId>) -> Outcome<FileEntry> {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let cur = match st.files.get(&file) {
            None => return Err(ProtoError::NoSuchFile),
            Some(e) if e.kind == FileKind::Dir => return Err(ProtoError::IsADirectory),
            Some(e) if e.kind != FileKind::File => return Err(ProtoError::BadRequest("only a regular file has versions".into())),
            Some(e) => e.clone(),
        };
        let now = now_ms();
        match lease {
            Some(l) => match st.live_lease(l, m, now) {
                Some((f, _)) if f == file => {}
                _ => return Err(ProtoError::NoLease),
            },
            None => {
                if let Some(rec) = st.locks.get(&file).filter(|r| r.expires > now) {
                    return Err(ProtoError::Locked(st.holder(rec)));
                }
            }
        }
        let old = st.versions.get(&file).and_then(|vs| vs.get(&version)).cloned().ok_or(ProtoError::NoTorrent)?;
        let torrent = match old.info_hash {
            Some(_) => self.store.torrent(group.id, file, version)?.ok_or(ProtoError::NoTorrent)?,
            None => Vec::new(),
        };
        let new = FileEntry {
            version: Version(cur.version.0 + 1),
            size: old.size,
            mtime: now,
            info_hash: old.info_hash,
            author: m,
            ctime: now,
            ..cur
        };
        let mut txn = Txn::new(group.id, &st, now);
        txn.w.put_file(group.id, &new)?;
        let pushed_out = self.add_version(&mut txn, &st, &new, torrent)?;
        txn.event(m, EventKind::Restored { entry: new.clone(), from: version })?;
        let ticket = self.commit(group, &mut st, txn, true)?;
        st.files.insert(file, new.clone());
        st.keep_version(&new, now, &pushed_out);
        // A publish retried after this is not a retry of the current version.
        st.published_by.remove(&file);
        tracing::debug!(group = %group.id, %file, from = %version, to = %new.version, "version restored");
        Ok((new, ticket))
    }
}

//! The group's trash: a regular file that is deleted, or replaced by a
//! rename, keeps its kept versions and their torrents for the trash
//! retention, so that no member can destroy the group's data with `rm`.
//! `ListTrash` lists what is there, `Undelete` brings a file back (its last
//! content as a new version: same info hash, so no bytes move), and the
//! sweep purges what is older than the retention with a `Purged` event,
//! after which members may drop their copies.
//!
//! Directories, symbolic links, hard-link names and empty files go for
//! good: they hold no content a member could lose.

use super::group::{GroupState, Txn};
use super::ops::{Auth, Outcome};
use super::{duration_ms, now_ms, Tracker};
use crate::calls::FileAnswer;
use crate::proto::{
    validate_name, EventKind, FileEntry, FileId, FileKind, MemberId, ProtoError, TrashEntry, UnixMillis,
    Version,
};

/// At most this many files are listed by one `ListTrash` (newest first),
/// so that the answer stays well within a frame.
pub(crate) const LIST_MAX: usize = 10_000;
/// At most this many files are purged per group in one sweep (one batch).
const PURGE_CHUNK: usize = 1_000;

impl GroupState {
    /// `f`'s path from the group's root ("a/b/c"), as far as the table
    /// knows it.
    pub fn path_of(&self, f: FileId) -> String {
        let mut parts = Vec::new();
        let mut at = self.files.get(&f);
        while let Some(e) = at.filter(|e| e.id != FileId::ROOT) {
            parts.push(e.name.as_str());
            if parts.len() > self.files.len() {
                break; // a cycle cannot happen; never loop on one anyway
            }
            at = self.files.get(&e.parent);
        }
        parts.reverse();
        parts.join("/")
    }

    /// Takes a deleted file out of the table; with `trashed`, its kept
    /// versions stay (for `Undelete`) and it is listed in the trash.
    pub fn discard(&mut self, f: FileId, trashed: Option<TrashEntry>) {
        let kept = self.versions.remove(&f);
        self.remove_file(f);
        if let Some(t) = trashed {
            self.versions.insert(f, kept.unwrap_or_default());
            self.trash.insert(f, t);
        }
    }
}

impl Tracker {
    /// What deleting `e` puts in the trash: `None` for what goes for good
    /// (see the module docs) or when the trash is off.
    pub(crate) fn to_trash(&self, st: &GroupState, e: &FileEntry, by: MemberId, now: UnixMillis) -> Option<TrashEntry> {
        let keeps = e.kind == FileKind::File && e.info_hash.is_some() && !self.cfg.trash_retention.is_zero();
        keeps.then(|| TrashEntry { entry: e.clone(), path: st.path_of(e.id), deleted_at: now, by })
    }

    /// The trash, newest first (at most [`LIST_MAX`]).
    pub(crate) fn list_trash(&self, auth: &Auth) -> Outcome<Vec<TrashEntry>> {
        let st = auth.state()?;
        let mut list: Vec<TrashEntry> = st.trash.values().cloned().collect();
        list.sort_by(|a, b| b.deleted_at.cmp(&a.deleted_at).then(b.entry.id.cmp(&a.entry.id)));
        list.truncate(LIST_MAX);
        let ticket = self.committer.durable_at(&auth.group, st.current_seq());
        Ok((list, ticket))
    }

    /// Brings `file` back from the trash as `name` in `parent`, as a new
    /// version with its last content (announced as `FileCreated`).
    pub(crate) fn undelete(&self, auth: &Auth, file: FileId, parent: FileId, name: String) -> Outcome<FileAnswer> {
        validate_name(&name)?;
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let t = st.trash.get(&file).cloned().ok_or(ProtoError::NoSuchFile)?;
        st.check_free_name(parent, &name)?;
        let torrent = match t.entry.info_hash {
            Some(_) => self.store.torrent(group.id, file, t.entry.version)?.ok_or(ProtoError::NoTorrent)?,
            None => Vec::new(),
        };
        let now = now_ms();
        let back = FileEntry { parent, name, version: Version(t.entry.version.0 + 1), author: m, ctime: now, ..t.entry };
        let mut txn = Txn::new(group.id, &st, now);
        txn.w.put_file(group.id, &back)?;
        txn.w.del_trash(group.id, file);
        let pushed_out = self.add_version(&mut txn, &st, &back, torrent)?;
        txn.event(m, EventKind::FileCreated(back.clone()))?;
        let ticket = self.commit(group, &mut st, txn, true)?;
        st.trash.remove(&file);
        st.insert_file(back.clone());
        st.keep_version(&back, now, &pushed_out);
        tracing::info!(group = %group.id, %file, path = %t.path, "file brought back from the trash");
        Ok((FileAnswer { entry: back, lease: None }, ticket))
    }

    /// Purges what has been in the trash longer than the retention: its
    /// versions and torrents go, with a `Purged` event each. Returns
    /// whether some group has more due (the sweep comes back at once).
    pub(crate) fn purge_trash(&self, now: UnixMillis) -> bool {
        let cutoff = now.saturating_sub(duration_ms(self.cfg.trash_retention));
        let mut more = false;
        for group in self.all_groups() {
            let mut st = group.state.lock();
            let mut due: Vec<FileId> =
                st.trash.values().filter(|t| t.deleted_at <= cutoff).map(|t| t.entry.id).collect();
            if due.is_empty() {
                continue;
            }
            more |= due.len() > PURGE_CHUNK;
            due.truncate(PURGE_CHUNK);
            match self.purge(&group, &mut st, &due, now) {
                Ok(()) => {
                    for f in &due {
                        st.trash.remove(f);
                        st.versions.remove(f);
                    }
                    tracing::debug!(group = %group.id, files = due.len(), "trash purged past its retention");
                }
                Err(e) => tracing::warn!(group = %group.id, error = %e, "cannot purge the trash"),
            }
        }
        more
    }

    fn purge(
        &self,
        group: &std::sync::Arc<super::group::Group>,
        st: &mut GroupState,
        due: &[FileId],
        now: UnixMillis,
    ) -> Result<(), ProtoError> {
        let g = group.id;
        let mut txn = Txn::new(g, st, now);
        for f in due {
            for v in st.versions.get(f).into_iter().flat_map(|vs| vs.keys()) {
                txn.w.del_version(g, *f, *v);
            }
            for v in self.store.torrent_versions(g, *f)? {
                txn.w.del_torrent(g, *f, v);
            }
            txn.w.del_trash(g, *f);
            txn.event(MemberId(0), EventKind::Purged { file: *f })?;
        }
        self.commit(group, st, txn, false)?;
        Ok(())
    }
}

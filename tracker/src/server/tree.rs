//! Changes to the shape of the file table and to shared attributes:
//! delete, rename (POSIX rename(2) rules, replacing a target in the same
//! batch) and set attributes. None of them makes a new version.
//!
//! A file locked by another member (a live lease) cannot be deleted,
//! renamed, replaced or have its attributes set. Deleting a file ends any
//! lock on it with an `Unlocked` event just before `FileDeleted`, so a
//! subscriber's lock table never keeps an entry for a file that is gone.

use super::group::{GroupState, Txn};
use super::ops::{Auth, Outcome};
use super::{now_ms, Tracker};
use crate::proto::{validate_name, EventKind, FileEntry, FileId, FileKind, MemberId, ProtoError, Response, UnixMillis};

impl Tracker {
    /// Deletes a file or an empty directory, with its lock, kept versions
    /// and torrents, in one batch.
    pub(crate) fn delete(&self, auth: &Auth, file: FileId) -> Outcome {
        if file == FileId::ROOT {
            return Err(ProtoError::BadRequest("the root directory cannot be deleted".into()));
        }
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let now = now_ms();
        let e = st.files.get(&file).cloned().ok_or(ProtoError::NoSuchFile)?;
        if e.kind == FileKind::Dir && st.has_children(file) {
            return Err(ProtoError::NotEmpty);
        }
        refuse_if_held_by_other(&st, file, m, now)?;
        let mut txn = Txn::new(group.id, &st, now);
        self.removal(&mut txn, &st, &e, m)?;
        let ticket = self.commit(group, &mut st, txn, true)?;
        st.remove_file(file);
        Ok((Response::Ok, ticket))
    }

    /// Writes and events that delete `e` (already checked): its lock ends
    /// (`Unlocked` by `by` if `by` held it, else by the tracker: the lock
    /// had expired), its kept versions and every torrent stored for it go,
    /// then `FileDeleted`.
    fn removal(&self, txn: &mut Txn, st: &GroupState, e: &FileEntry, by: MemberId) -> Result<(), ProtoError> {
        let g = txn.group;
        if let Some(rec) = st.locks.get(&e.id) {
            txn.w.del_lock(g, e.id);
            let who = if rec.holder == by { by } else { MemberId(0) };
            txn.event(who, EventKind::Unlocked { file: e.id })?;
        }
        for v in st.versions.get(&e.id).into_iter().flat_map(|vs| vs.keys()) {
            txn.w.del_version(g, e.id, *v);
        }
        // Also torrents without a version record (kept by an older tracker).
        for v in self.store.torrent_versions(g, e.id)? {
            txn.w.del_torrent(g, e.id, v);
        }
        txn.w.del_file(g, e.id);
        txn.event(by, EventKind::FileDeleted { file: e.id, parent: e.parent, name: e.name.clone() })?;
        Ok(())
    }

    /// Moves and/or renames `file`. An existing target is replaced only with
    /// `replace`, under rename(2)'s rules (file over file, empty directory
    /// under directory), and deleted in the same batch: `FileDeleted` for
    /// it, then `FileRenamed`. Renaming onto itself changes nothing.
    pub(crate) fn rename(
        &self,
        auth: &Auth,
        file: FileId,
        new_parent: FileId,
        new_name: String,
        replace: bool,
    ) -> Outcome {
        validate_name(&new_name)?;
        if file == FileId::ROOT {
            return Err(ProtoError::BadRequest("the root directory cannot be renamed".into()));
        }
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let now = now_ms();
        let e = st.files.get(&file).cloned().ok_or(ProtoError::NoSuchFile)?;
        match st.files.get(&new_parent) {
            None => return Err(ProtoError::NoSuchFile),
            Some(p) if p.kind != FileKind::Dir => return Err(ProtoError::NotADirectory),
            Some(_) => {}
        }
        let target = st.names.get(&(new_parent, new_name.clone())).copied();
        if target == Some(file) {
            return Ok((Response::Ok, self.committer.durable_at(group, st.current_seq())));
        }
        refuse_if_held_by_other(&st, file, m, now)?;
        if e.kind == FileKind::Dir && st.is_within(new_parent, file) {
            return Err(ProtoError::BadRequest("a directory cannot move into itself or below itself".into()));
        }
        let target = match target {
            None => None,
            Some(_) if !replace => return Err(ProtoError::AlreadyExists),
            Some(t) => {
                let t = st.files.get(&t).cloned().ok_or(ProtoError::NoSuchFile)?;
                match (e.kind, t.kind) {
                    (FileKind::File, FileKind::Dir) => return Err(ProtoError::IsADirectory),
                    (FileKind::Dir, FileKind::File) => return Err(ProtoError::NotADirectory),
                    (FileKind::Dir, FileKind::Dir) if st.has_children(t.id) => return Err(ProtoError::NotEmpty),
                    _ => refuse_if_held_by_other(&st, t.id, m, now)?,
                }
                Some(t)
            }
        };
        let moved = FileEntry { parent: new_parent, name: new_name, ..e.clone() };
        let mut txn = Txn::new(group.id, &st, now);
        if let Some(t) = &target {
            self.removal(&mut txn, &st, t, m)?;
        }
        txn.w.put_file(group.id, &moved)?;
        txn.event(m, EventKind::FileRenamed { entry: moved.clone(), old_parent: e.parent, old_name: e.name })?;
        let ticket = self.commit(group, &mut st, txn, true)?;
        if let Some(t) = target {
            st.remove_file(t.id);
        }
        st.insert_file(moved);
        Ok((Response::Ok, ticket))
    }

    /// Shares a mode and/or mtime change (no new version). Permission bits
    /// only are kept from `mode`: no setuid, setgid or sticky bit.
    pub(crate) fn set_attr(&self, auth: &Auth, file: FileId, mode: Option<u32>, mtime: Option<UnixMillis>) -> Outcome {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let now = now_ms();
        let cur = st.files.get(&file).cloned().ok_or(ProtoError::NoSuchFile)?;
        refuse_if_held_by_other(&st, file, m, now)?;
        let new = FileEntry {
            mode: mode.map_or(cur.mode, |md| md & 0o777),
            mtime: mtime.unwrap_or(cur.mtime),
            ..cur.clone()
        };
        if new == cur {
            let ticket = self.committer.durable_at(group, st.current_seq());
            return Ok((Response::File { entry: new, lease: None }, ticket));
        }
        let mut txn = Txn::new(group.id, &st, now);
        txn.w.put_file(group.id, &new)?;
        txn.event(m, EventKind::AttrChanged(new.clone()))?;
        let ticket = self.commit(group, &mut st, txn, true)?;
        st.insert_file(new.clone());
        Ok((Response::File { entry: new, lease: None }, ticket))
    }
}

impl Tracker {
    /// Records that the caller holds a complete copy of the current version.
    pub(crate) fn have(&self, auth: &Auth, file: FileId, version: crate::proto::Version) -> Outcome {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let cur = st.files.get(&file).ok_or(ProtoError::NoSuchFile)?;
        if cur.version != version || cur.kind != FileKind::File {
            return Ok((Response::Ok, None));
        }
        // Once per member and version, and at a bounded rate: a member
        // cannot flood the log with them.
        let ms = st.members.get_mut(&m).ok_or(ProtoError::NotAuthenticated)?;
        if ms.haves.get(&file) == Some(&version) {
            return Ok((Response::Ok, None));
        }
        if !ms.have_budget.take() {
            tracing::debug!(member = %m, "Have over the rate limit: dropped");
            return Ok((Response::Ok, None));
        }
        let mut txn = Txn::new(group.id, &st, now_ms());
        txn.event(m, EventKind::Have { file, version, member: m })?;
        let ticket = self.commit(group, &mut st, txn, false)?;
        if let Some(ms) = st.members.get_mut(&m) {
            ms.haves.insert(file, version);
        }
        Ok((Response::Ok, ticket))
    }
}

fn refuse_if_held_by_other(st: &GroupState, f: FileId, m: MemberId, now: UnixMillis) -> Result<(), ProtoError> {
    match st.held_by_other(f, m, now) {
        Some(h) => Err(ProtoError::Locked(h)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::proto::{LeaseId, Version};
    use crate::server::store::WriteSet;
    use crate::server::{Tracker, TrackerConfig};

    fn file(t: &Tracker, auth: &Auth, name: &str) -> (FileId, LeaseId) {
        match t.create_file(auth, FileId::ROOT, name.into(), FileKind::File, 0o644, true) {
            Ok((Response::File { entry, lease: Some(l) }, _)) => (entry.id, l.id),
            other => panic!("{:?}", other.map(|r| r.0)),
        }
    }

    fn publish(t: &Tracker, auth: &Auth, f: FileId, base: u64, lease: LeaseId) {
        let (ih, torrent) = crate::server::test_torrent(7, 5);
        let r = t.publish(auth, f, Version(base), lease, 5, 1, Some(ih), torrent, true);
        assert!(matches!(r, Ok((Response::Published(_), _))), "{:?}", r.map(|r| r.0));
    }

    /// Over the wire a deleted file's torrents are unreachable anyway; this
    /// checks they really leave the store, with the version records, in
    /// the delete's own batch (and for a rename's replaced target too),
    /// including a torrent an older tracker kept without a record.
    #[test]
    fn deleting_drops_versions_and_torrents_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let t: Arc<Tracker> =
            Tracker::open(TrackerConfig { data_dir: dir.path().into(), ..TrackerConfig::default() }).unwrap();
        let remote = "127.0.0.1:1".parse().unwrap();
        let (_, _, auth) = t.create_group("g".into(), "alice".into(), crate::proto::Fingerprint([7; 32]), None, remote).unwrap();
        let g = auth.group.id;
        let (a, la) = file(&t, &auth, "a");
        let (b, lb) = file(&t, &auth, "b");
        for base in 0..3 {
            publish(&t, &auth, a, base, la);
            publish(&t, &auth, b, base, lb);
        }
        let mut w = WriteSet::new();
        w.put_torrent(g, a, Version(77), b"legacy".to_vec());
        t.store.apply(w).unwrap();
        assert_eq!(t.store.torrent_versions(g, a).unwrap().len(), 4);
        let versions_on_disk = |f| t.store.load().unwrap().groups[&g].versions.get(&f).map_or(0, |v| v.len());
        assert_eq!(versions_on_disk(a), 4, "v0..v3");

        assert!(matches!(t.delete(&auth, a), Ok((Response::Ok, _))));
        assert!(t.store.torrent_versions(g, a).unwrap().is_empty());
        assert_eq!(versions_on_disk(a), 0);

        let (c, _) = file(&t, &auth, "c");
        assert!(matches!(t.rename(&auth, c, FileId::ROOT, "b".into(), true), Ok((Response::Ok, _))));
        assert!(t.store.torrent_versions(g, b).unwrap().is_empty());
        assert_eq!(versions_on_disk(b), 0);
        assert_eq!(versions_on_disk(c), 1);
        let st = auth.group.state.lock();
        assert!(!st.versions.contains_key(&a) && !st.versions.contains_key(&b));
        assert_eq!(st.names.get(&(FileId::ROOT, "b".to_string())), Some(&c));
        assert!(!st.has_children(c) && st.has_children(FileId::ROOT));
    }
}

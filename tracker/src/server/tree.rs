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
use crate::proto::shared_mode;
use super::{now_ms, Tracker};
use crate::calls::{Deleted, FileAnswer};
use crate::proto::{
    validate_name, validate_owner, EventKind, FileEntry, FileId, FileKind, MemberId, Owner, ProtoError,
    TrashEntry, UnixMillis,
};

impl Tracker {
    /// Deletes a file or an empty directory, with its lock, kept versions
    /// and torrents, in one batch.
    pub(crate) fn delete(&self, auth: &Auth, file: FileId) -> Outcome<Deleted> {
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
        if let Some(link) = st.first_link(file).and_then(|l| st.files.get(&l).cloned()) {
            let promoted = promotion(&mut txn, &e, &link, m)?;
            let ticket = self.commit(group, &mut st, txn, true)?;
            st.remove_file(link.id);
            st.insert_file(promoted.clone());
            return Ok((Deleted { promoted: Some(promoted) }, ticket));
        }
        let trashed = self.removal(&mut txn, &st, &e, m)?;
        let ticket = self.commit(group, &mut st, txn, true)?;
        st.discard(file, trashed);
        Ok((Deleted { promoted: None }, ticket))
    }

    /// Writes and events that delete `e` (already checked): its lock ends
    /// (`Unlocked` by `by` if `by` held it, else by the tracker: the lock
    /// had expired), then `FileDeleted`. A file with content goes to the
    /// trash with its kept versions and torrents (returned, for
    /// [`GroupState::discard`]); anything else loses them now.
    fn removal(
        &self,
        txn: &mut Txn,
        st: &GroupState,
        e: &FileEntry,
        by: MemberId,
    ) -> Result<Option<TrashEntry>, ProtoError> {
        let g = txn.group;
        if let Some(rec) = st.locks.get(&e.id) {
            txn.w.del_lock(g, e.id);
            let who = if rec.holder == by { by } else { MemberId(0) };
            txn.event(who, EventKind::Unlocked { file: e.id })?;
        }
        let trashed = self.to_trash(st, e, by, txn.now);
        match &trashed {
            Some(t) => txn.w.put_trash(g, t)?,
            None => {
                for v in st.versions.get(&e.id).into_iter().flat_map(|vs| vs.keys()) {
                    txn.w.del_version(g, e.id, *v);
                }
                // Also torrents without a version record (kept by an older tracker).
                for v in self.store.torrent_versions(g, e.id)? {
                    txn.w.del_torrent(g, e.id, v);
                }
            }
        }
        txn.w.del_file(g, e.id);
        txn.event(by, EventKind::FileDeleted { file: e.id, parent: e.parent, name: e.name.clone() })?;
        Ok(trashed)
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
    ) -> Outcome<()> {
        validate_name(&new_name)?;
        if file == FileId::ROOT {
            return Err(ProtoError::BadRequest("the root directory cannot be renamed".into()));
        }
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let now = now_ms();
        let e = st.files.get(&file).cloned().ok_or(ProtoError::NoSuchFile)?;
        st.check_dir(new_parent)?;
        let target = st.names.get(&(new_parent, new_name.clone())).copied();
        if target == Some(file) {
            return Ok(((), self.committer.durable_at(group, st.current_seq())));
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
                match (e.kind.is_dir(), t.kind.is_dir()) {
                    (false, true) => return Err(ProtoError::IsADirectory),
                    (true, false) => return Err(ProtoError::NotADirectory),
                    (true, true) if st.has_children(t.id) => return Err(ProtoError::NotEmpty),
                    _ => refuse_if_held_by_other(&st, t.id, m, now)?,
                }
                Some(t)
            }
        };
        let moved = FileEntry { parent: new_parent, name: new_name, ctime: now, ..e.clone() };
        let mut txn = Txn::new(group.id, &st, now);
        let (promoted, trashed) = match &target {
            Some(t) => self.replacement(&mut txn, &st, t, m)?,
            None => (None, None),
        };
        txn.w.put_file(group.id, &moved)?;
        txn.event(m, EventKind::FileRenamed { entry: moved.clone(), old_parent: e.parent, old_name: e.name })?;
        let ticket = self.commit(group, &mut st, txn, true)?;
        match (target, promoted) {
            (_, Some((link, promoted))) => {
                st.remove_file(link);
                st.insert_file(promoted);
            }
            (Some(t), None) => st.discard(t.id, trashed),
            (None, None) => {}
        }
        st.insert_file(moved);
        Ok(((), ticket))
    }

    /// Writes and events that take a rename's target `t` out of its name:
    /// deleted (into the trash if it has content: returned second), or,
    /// while hard links name it, moved to one's place (see [`promotion`];
    /// returns that link and the moved file first).
    fn replacement(
        &self,
        txn: &mut Txn,
        st: &GroupState,
        t: &FileEntry,
        by: MemberId,
    ) -> Result<(Option<(FileId, FileEntry)>, Option<TrashEntry>), ProtoError> {
        match st.first_link(t.id).and_then(|l| st.files.get(&l)) {
            Some(link) => Ok((Some((link.id, promotion(txn, t, link, by)?)), None)),
            None => self.removal(txn, st, t, by).map(|trashed| (None, trashed)),
        }
    }

    /// Shares a mode, mtime and/or owner change (no new version); the
    /// ctime becomes now. `mode` keeps what [`shared_mode`] keeps. Whether
    /// the caller may chown is the member's kernel's check (each member
    /// serves its own users; the group trusts its members with every file).
    pub(crate) fn set_attr(
        &self,
        auth: &Auth,
        file: FileId,
        mode: Option<u32>,
        mtime: Option<UnixMillis>,
        owner: Option<Owner>,
    ) -> Outcome<FileAnswer> {
        if let Some(o) = &owner {
            validate_owner(o)?;
        }
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let now = now_ms();
        let cur = st.files.get(&file).cloned().ok_or(ProtoError::NoSuchFile)?;
        refuse_if_held_by_other(&st, file, m, now)?;
        let new = FileEntry {
            mode: mode.map_or(cur.mode, |md| shared_mode(&cur.kind, md)),
            mtime: mtime.unwrap_or(cur.mtime),
            owner: owner.unwrap_or_else(|| cur.owner.clone()),
            ..cur.clone()
        };
        // A chmod or chown to what it already is still changes the ctime
        // (POSIX); only a request that names nothing changes nothing. The
        // ctimes of one entry's attribute changes strictly increase, so a
        // member can tell an older change's event from its own.
        let new = FileEntry { ctime: now.max(cur.ctime + 1), ..new };
        if mode.is_none() && mtime.is_none() && new.owner == cur.owner {
            let ticket = self.committer.durable_at(group, st.current_seq());
            return Ok((FileAnswer { entry: cur, lease: None }, ticket));
        }
        let mut txn = Txn::new(group.id, &st, now);
        txn.w.put_file(group.id, &new)?;
        txn.event(m, EventKind::AttrChanged(new.clone()))?;
        let ticket = self.commit(group, &mut st, txn, true)?;
        st.insert_file(new.clone());
        Ok((FileAnswer { entry: new, lease: None }, ticket))
    }
}

impl Tracker {
    /// Records that the caller holds a complete copy of the current version.
    pub(crate) fn have(&self, auth: &Auth, file: FileId, version: crate::proto::Version) -> Outcome<()> {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let cur = st.files.get(&file).ok_or(ProtoError::NoSuchFile)?;
        if cur.version != version || cur.kind != FileKind::File {
            return Ok(((), None));
        }
        // Once per member and version, and at a bounded rate: a member
        // cannot flood the log with them.
        let ms = st.members.get_mut(&m).ok_or(ProtoError::NotAuthenticated)?;
        if ms.haves.get(&file) == Some(&version) {
            return Ok(((), None));
        }
        if !ms.have_budget.take() {
            tracing::debug!(member = %m, "Have over the rate limit: dropped");
            return Ok(((), None));
        }
        let mut txn = Txn::new(group.id, &st, now_ms());
        txn.event(m, EventKind::Have { file, version, member: m })?;
        let ticket = self.commit(group, &mut st, txn, false)?;
        if let Some(ms) = st.members.get_mut(&m) {
            ms.haves.insert(file, version);
        }
        Ok(((), ticket))
    }
}

/// Writes and events that delete `e`'s name while hard link `link` names
/// it: the link entry goes and the file takes its place, keeping its id
/// (so its versions, lock and inode number). Returns the moved file.
fn promotion(txn: &mut Txn, e: &FileEntry, link: &FileEntry, by: MemberId) -> Result<FileEntry, ProtoError> {
    let g = txn.group;
    txn.w.del_file(g, link.id);
    txn.event(by, EventKind::FileDeleted { file: link.id, parent: link.parent, name: link.name.clone() })?;
    let moved = FileEntry { parent: link.parent, name: link.name.clone(), ctime: txn.now, ..e.clone() };
    txn.w.put_file(g, &moved)?;
    txn.event(by, EventKind::FileRenamed { entry: moved.clone(), old_parent: e.parent, old_name: e.name.clone() })?;
    Ok(moved)
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
    use std::time::Duration;

    use super::*;
    use crate::proto::{LeaseId, Version};
    use crate::server::store::WriteSet;
    use crate::server::{Tracker, TrackerConfig};

    fn file(t: &Tracker, auth: &Auth, name: &str) -> (FileId, LeaseId) {
        match t.create_file(auth, FileId::ROOT, name.into(), FileKind::File, 0o644, true, Owner::default()) {
            Ok((FileAnswer { entry, lease: Some(l) }, _)) => (entry.id, l.id),
            other => panic!("{:?}", other.map(|r| r.0)),
        }
    }

    fn publish(t: &Tracker, auth: &Auth, f: FileId, base: u64, lease: LeaseId) {
        let (ih, torrent) = crate::server::test_torrent(7, 5);
        let r = t.publish(auth, f, Version(base), lease, 5, 1, Some(ih), torrent, true);
        assert!(matches!(r, Ok((_, _))), "{:?}", r.map(|r| r.0));
    }

    /// With the trash off, a deleted file's torrents really leave the
    /// store, with the version records, in the delete's own batch (and for
    /// a rename's replaced target too), including a torrent an older
    /// tracker kept without a record. (With the trash on, the sweep's purge
    /// drops them; see the `requests` tests.)
    #[test]
    fn deleting_drops_versions_and_torrents_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrackerConfig { data_dir: dir.path().into(), trash_retention: Duration::ZERO, ..TrackerConfig::default() };
        let t: Arc<Tracker> = Tracker::open(cfg).unwrap();
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

        assert!(matches!(t.delete(&auth, a), Ok((Deleted { promoted: None }, _))));
        assert!(t.store.torrent_versions(g, a).unwrap().is_empty());
        assert_eq!(versions_on_disk(a), 0);

        let (c, _) = file(&t, &auth, "c");
        assert!(matches!(t.rename(&auth, c, FileId::ROOT, "b".into(), true), Ok(((), _))));
        assert!(t.store.torrent_versions(g, b).unwrap().is_empty());
        assert_eq!(versions_on_disk(b), 0);
        assert_eq!(versions_on_disk(c), 1);
        let st = auth.group.state.lock();
        assert!(!st.versions.contains_key(&a) && !st.versions.contains_key(&b));
        assert_eq!(st.names.get(&(FileId::ROOT, "b".to_string())), Some(&c));
        assert!(!st.has_children(c) && st.has_children(FileId::ROOT));
    }

    /// Making, removing and renaming an entry sets its directory's mtime
    /// and ctime to the event's time (both directories of a move), and a
    /// hard link its file's ctime: in memory and on disk, in the same
    /// commit, by the same rule members apply to the events.
    #[test]
    fn entries_made_removed_and_moved_touch_their_directories_times() {
        let dir = tempfile::tempdir().unwrap();
        let t: Arc<Tracker> = Tracker::open(TrackerConfig { data_dir: dir.path().into(), ..TrackerConfig::default() }).unwrap();
        let remote = "127.0.0.1:1".parse().unwrap();
        let (_, _, auth) = t.create_group("g".into(), "alice".into(), crate::proto::Fingerprint([7; 32]), None, remote).unwrap();
        let g = auth.group.id;
        let create = |parent: FileId, name: &str, kind: FileKind| match t.create_file(&auth, parent, name.into(), kind, 0o755, false, Owner::default()) {
            Ok((FileAnswer { entry, .. }, _)) => entry.id,
            other => panic!("{:?}", other.map(|r| r.0)),
        };
        let (d1, d2) = (create(FileId::ROOT, "d1", FileKind::Dir), create(FileId::ROOT, "d2", FileKind::Dir));
        let last_at = || t.store.events(g, 0, u64::MAX, usize::MAX).unwrap().last().unwrap().at;
        let times = |f: FileId| {
            let mem = auth.group.state.lock().files[&f].clone();
            let disk = t.store.load().unwrap().groups[&g].files[&f].clone();
            assert_eq!((mem.mtime, mem.ctime), (disk.mtime, disk.ctime), "memory and disk agree");
            (mem.mtime, mem.ctime)
        };
        let (root_m, _) = times(FileId::ROOT);
        let sleep = || std::thread::sleep(Duration::from_millis(3)); // a new millisecond
        sleep();
        let f = create(d1, "f", FileKind::File);
        let at = last_at();
        assert_eq!(times(d1), (at, at), "a new entry touches its directory");
        assert_eq!(times(FileId::ROOT).0, root_m, "and no other");
        sleep();
        assert!(matches!(t.rename(&auth, f, d2, "g".into(), false), Ok(((), _))));
        let at = last_at();
        assert_eq!((times(d1), times(d2)), ((at, at), (at, at)), "a move touches both directories");
        sleep();
        let f_mtime = times(f).0;
        let h = create(d1, "h", FileKind::Link(f));
        let at = last_at();
        assert_eq!(times(f), (f_mtime, at), "a hard link touches its file's ctime only");
        assert_eq!(times(d1), (at, at));
        sleep();
        assert!(matches!(t.delete(&auth, h), Ok((Deleted { promoted: None }, _))));
        let at = last_at();
        assert_eq!(times(d1), (at, at), "a removal touches its directory");
        assert_eq!(times(f), (f_mtime, at), "and a hard link's removal its file's ctime");
        assert!(times(d2).0 < at);
    }
}

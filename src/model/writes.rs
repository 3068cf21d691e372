//! The write sessions part: per file, where this member's write of it
//! stands, with the lease, the staging copy every read of the file on this
//! member is served from while there is a session, and the attributes set
//! meanwhile. One lock (the map of states), taken by no other part; each
//! staging copy has its own append lock, taken with no part's lock held.
//!
//! A file's write state on this member is one of [`WriteState`]; a file
//! with no entry has none (reads come from the table and the store):
//!
//! ```text
//!   (none)     --open for write------------------------> Opening    [lock, staging copy, outbox entry]
//!   Opening    --all done (`opened`)-------------------> Open{Unchanged | Changed if truncated}
//!   Opening    --lock refused, offline, gone-----------> (none)
//!   Opening    --staging copy failed-------------------> Unlocking  [unlock]
//!   (none)     --create (lock with the new file)-------> Open{Unchanged}
//!   Open       --write, truncate-----------------------> Open{Changed}   (Deleted{changed: true} if deleted)
//!   Open       --deleted or renamed over here----------> Open{Deleted}
//!   Open       --last close, Unchanged-----------------> Unlocking  [share attrs, unlock]
//!   Open       --last close, Changed-------------------> Publishing [hash, seed, publish]
//!   Open       --last close, Deleted-------------------> (none)     [drop the edit; the delete unlocked]
//!   Publishing --deleted or renamed over here----------> Publishing{Deleted}
//!   Publishing --tracker took it (`finish`)------------> (none)     [lease released by the publish]
//!   Publishing --kept as conflict copy / given up------> Unlocking  [unlock]
//!   Unlocking  --Unlock answered or failed-------------> (none)
//! ```
//!
//! Opening, Publishing and Unlocking hold back a new open for write of the
//! file (it waits for the change, then looks again): one open at a time
//! takes the lock; an open joins a session only before its publish starts;
//! and a lock being given back would otherwise be refused as locked by
//! this very member (`touch f && echo x >> f`).

use super::dirty::Dirty;
use super::overlay::OverlayHandle;
use super::{now_ms, Delta, ModelError, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use titorrent_tracker::proto::{FileId, InfoHash, Lease, LeaseId, UnixMillis};

#[derive(Debug)]
pub(super) struct Staging {
    pub path: PathBuf,
    pub file: File,
    /// Held while an append finds the end and writes there, so that two
    /// appends through this member's handles never take the same end.
    pub appending: Mutex<()>,
    /// The version the edit started from (none for a new file): the
    /// publish reuses what the session did not change (nothing, but the
    /// name, for a copy truncated at open).
    pub base: Option<InfoHash>,
    /// What the session changed (taken with no other lock held, after the
    /// bytes are written, so a publish that sees the close sees them).
    pub dirty: Mutex<Dirty>,
    /// Copy-on-write over the base while its bytes are still being copied
    /// in (`overlay.rs`); none for a copy made whole at open.
    pub overlay: Option<OverlayHandle>,
    /// When the copy was made, or last written or truncated (ms): the
    /// edit's mtime. Kept here, not taken from the file, which the
    /// overlay's background copy writes too.
    pub written: AtomicU64,
}

impl Staging {
    pub fn new(path: PathBuf, file: File, base: Option<InfoHash>) -> Staging {
        let written = AtomicU64::new(now_ms());
        Staging { path, file, appending: Mutex::new(()), base, dirty: Mutex::default(), overlay: None, written }
    }

    /// Reads `size` bytes at `offset`.
    pub fn read(&self, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
        match &self.overlay {
            Some(o) => o.0.read(&self.file, offset, size),
            None => super::pread(&self.file, offset, size),
        }
    }

    /// Writes `data` at `offset` and notes the range changed.
    pub fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        match &self.overlay {
            Some(o) => o.0.write(&self.file, data, offset)?,
            None => self.file.write_all_at(data, offset)?,
        }
        self.dirty.lock().write(offset, data.len() as u64);
        self.written.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Sets the copy's size and notes everything past it changed. A cut
    /// below the base's size waits for the overlay's copy (call
    /// [`Staging::ready_for_len`] first where waiting may take long).
    pub fn set_len(&self, size: u64) -> std::io::Result<()> {
        if let Some(o) = &self.overlay {
            o.0.before_set_len(size);
        }
        self.file.set_len(size)?;
        self.dirty.lock().truncate(size);
        self.written.store(now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Waits until setting the size to `size` would not wait.
    pub async fn ready_for_len(&self, size: u64) {
        if let Some(o) = self.overlay.as_ref().filter(|o| o.0.set_len_waits(size)) {
            o.0.completed().await;
        }
    }

    /// Waits until the file holds every byte of the edit (the overlay's
    /// copy is complete), as the publish needs.
    pub async fn completed(&self) {
        if let Some(o) = &self.overlay {
            o.0.completed().await;
        }
    }

    /// When the copy was last written or truncated, or made.
    pub fn written_at(&self) -> UnixMillis {
        self.written.load(Ordering::Relaxed)
    }

    /// What the session changed of its base, if it has one.
    pub fn delta(&self) -> Option<Delta> {
        Some(Delta { base: self.base?, dirty: self.dirty.lock().ranges() })
    }
}

/// A write session's lease, staging copy and the attributes set during it.
#[derive(Debug)]
pub(super) struct Session {
    pub lease: Lease,
    /// How long leases last, as observed when this one was granted.
    pub lease_len_ms: u64,
    pub staging: Arc<Staging>,
    /// Handles open for write on it.
    pub opens: u32,
    /// Mode and mtime set while the file is being written; they travel with
    /// (mtime) or right after (mode) the publish, so they are not overtaken.
    pub pending_mode: Option<u32>,
    pub pending_mtime: Option<UnixMillis>,
    /// The tracker refused to renew the lease (it ran out, and another
    /// member may have the lock now): no more renewals; the publish will be
    /// refused and kept as a conflict copy.
    pub lease_lost: bool,
}

impl Session {
    pub fn new(lease: Lease, staging: Staging) -> Self {
        Session {
            lease_len_ms: lease.expires.saturating_sub(now_ms()).max(1000),
            lease,
            staging: Arc::new(staging),
            opens: 1,
            pending_mode: None,
            pending_mtime: None,
            lease_lost: false,
        }
    }

    /// A copy of what readers need, for a session with `edit`.
    pub fn view(&self, edit: Edit) -> View {
        View {
            lease: self.lease.clone(),
            staging: self.staging.clone(),
            pending_mode: self.pending_mode,
            pending_mtime: self.pending_mtime,
            changed: edit.changed(),
        }
    }
}

/// What the session did to the file so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Edit {
    /// No byte written or truncated.
    Unchanged,
    /// Written or truncated: the last close publishes.
    Changed,
    /// Deleted (or replaced by a rename) by this member while the session
    /// lasts: the last close drops the edit, and a publish in flight that
    /// the tracker refuses as gone is dropped too.
    Deleted { changed: bool },
}

impl Edit {
    fn changed(self) -> bool {
        matches!(self, Edit::Changed | Edit::Deleted { changed: true })
    }

    fn written(self) -> Edit {
        match self {
            Edit::Deleted { .. } => Edit::Deleted { changed: true },
            _ => Edit::Changed,
        }
    }
}

/// A file's write state on this member (the transitions are in the module
/// documentation).
#[derive(Debug)]
pub(super) enum WriteState {
    /// An open for write is taking the lock and preparing the staging copy.
    Opening,
    /// Handles are open for write.
    Open { session: Session, edit: Edit },
    /// The last close of a changed file: its outbox entry is on the way to
    /// the tracker. Reads still come from the staging copy.
    Publishing { session: Session, edit: Edit },
    /// The lock is being given back (an Unlock in flight).
    Unlocking,
}

impl WriteState {
    fn session(&self) -> Option<(&Session, Edit)> {
        match self {
            WriteState::Open { session, edit } | WriteState::Publishing { session, edit } => Some((session, *edit)),
            WriteState::Opening | WriteState::Unlocking => None,
        }
    }

    fn session_mut(&mut self) -> Option<(&mut Session, &mut Edit)> {
        match self {
            WriteState::Open { session, edit } | WriteState::Publishing { session, edit } => Some((session, edit)),
            WriteState::Opening | WriteState::Unlocking => None,
        }
    }
}

/// What an open for write finds.
pub(super) enum Join {
    /// This member's session: joined (one more open).
    Joined(Arc<Staging>),
    /// Held back (see [`WriteState`]): wait for a change and ask again.
    Wait,
    /// No session: the caller is now `Opening` and takes the lock.
    Vacant,
}

/// What the last close (or not) of a write handle leaves to do.
pub(super) enum Closed {
    /// Other handles still write, or there was no session.
    Nothing,
    /// Deleted meanwhile: drop the edit (no unlock: the delete unlocked).
    Dropped { lease: LeaseId },
    /// Nothing written: now `Unlocking`; share attributes set, then unlock.
    Unchanged { lease: LeaseId, mode: Option<u32>, mtime: Option<UnixMillis> },
    /// Now `Publishing`.
    Publish,
}

/// What `finish` took out of a session whose edit is settled.
pub(super) struct Finished {
    /// The lease to give back (only when the edit did not land as the file:
    /// a publish releases it).
    pub unlock: Option<LeaseId>,
    pub mode: Option<u32>,
    pub mtime: Option<UnixMillis>,
}

/// A copy of what a session's readers need, taken out under the lock.
pub(super) struct View {
    pub lease: Lease,
    pub staging: Arc<Staging>,
    pub pending_mode: Option<u32>,
    pub pending_mtime: Option<UnixMillis>,
    pub changed: bool,
}

impl View {
    /// The mtime of the edit: the one a program set, else, once written,
    /// the staging copy's (the time of the last write). The publish carries
    /// the same, so `stat` shows one mtime before and after it lands.
    pub fn edit_mtime(&self) -> Option<UnixMillis> {
        if self.pending_mtime.is_some() {
            return self.pending_mtime;
        }
        self.changed.then(|| self.staging.written_at())
    }
}

#[derive(Debug, Default)]
pub(super) struct WriteSessions {
    states: Mutex<HashMap<FileId, WriteState>>,
    /// Files this member is deleting (or renaming another over) right now,
    /// with how many such requests are in flight: a publish the tracker
    /// refuses as "no such file" meanwhile waits for their answer before it
    /// decides between dropping the edit and keeping a conflict copy.
    deleting: Mutex<HashMap<FileId, u32>>,
}

/// A delete (or a rename over the file) of this member's in flight; see
/// [`WriteSessions::deleting`].
pub(super) struct Deleting<'a> {
    writes: &'a WriteSessions,
    id: FileId,
    /// Told when the delete's answer is applied (the guard dropped).
    changed: &'a tokio::sync::Notify,
}

impl Drop for Deleting<'_> {
    fn drop(&mut self) {
        let mut deleting = self.writes.deleting.lock();
        if let Some(n) = deleting.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                deleting.remove(&self.id);
            }
        }
        drop(deleting);
        self.changed.notify_waiters();
    }
}

impl WriteSessions {
    // ---- opening -----------------------------------------------------------

    /// An open for write: joins this member's session, waits, or starts
    /// `Opening`. `truncate`: the join marks the session changed (the caller
    /// truncates the staging copy).
    pub fn begin_open(&self, id: FileId, truncate: bool) -> Join {
        let mut states = self.states.lock();
        match states.get_mut(&id) {
            Some(WriteState::Open { session, edit }) => {
                session.opens += 1;
                if truncate {
                    *edit = edit.written();
                }
                Join::Joined(session.staging.clone())
            }
            Some(_) => Join::Wait,
            None => {
                states.insert(id, WriteState::Opening);
                Join::Vacant
            }
        }
    }

    /// `Opening` → `Open`.
    pub fn opened(&self, id: FileId, session: Session, edit: Edit) {
        self.states.lock().insert(id, WriteState::Open { session, edit });
    }

    /// A file this member just created, locked: `Open{Unchanged}`.
    pub fn created(&self, id: FileId, session: Session) {
        self.states.lock().insert(id, WriteState::Open { session, edit: Edit::Unchanged });
    }

    /// An open that got the lock but no staging copy: `Opening` → `Unlocking`.
    pub fn open_failed(&self, id: FileId) {
        let mut states = self.states.lock();
        if matches!(states.get(&id), Some(WriteState::Opening)) {
            states.insert(id, WriteState::Unlocking);
        }
    }

    /// An open that ended without a session: `Opening` → (none). Whether
    /// it was `Opening`.
    pub fn abandon_open(&self, id: FileId) -> bool {
        let mut states = self.states.lock();
        let opening = matches!(states.get(&id), Some(WriteState::Opening));
        if opening {
            states.remove(&id);
        }
        opening
    }

    /// The Unlock of `id` is answered (or failed): `Unlocking` → (none).
    pub fn unlocked(&self, id: FileId) {
        let mut states = self.states.lock();
        if matches!(states.get(&id), Some(WriteState::Unlocking)) {
            states.remove(&id);
        }
    }

    // ---- while open --------------------------------------------------------

    /// The staging copy to write into, the session marked changed;
    /// `NotWritable` without a session.
    pub fn write(&self, id: FileId) -> Result<Arc<Staging>> {
        let mut states = self.states.lock();
        let (session, edit) = states.get_mut(&id).and_then(|s| s.session_mut()).ok_or(ModelError::NotWritable)?;
        *edit = edit.written();
        Ok(session.staging.clone())
    }

    /// The staging copy to truncate, the session marked changed, if the
    /// session is open (not publishing).
    pub fn truncate(&self, id: FileId) -> Option<Arc<Staging>> {
        match self.states.lock().get_mut(&id) {
            Some(WriteState::Open { session, edit }) => {
                *edit = edit.written();
                Some(session.staging.clone())
            }
            _ => None,
        }
    }

    /// Mode and mtime set during a session (not once deleted): they ride
    /// with the publish. Whether there was such a session.
    pub fn set_pending_attrs(&self, id: FileId, mode: Option<u32>, mtime: Option<UnixMillis>) -> bool {
        let mut states = self.states.lock();
        match states.get_mut(&id).and_then(|s| s.session_mut()) {
            Some((session, edit)) if !matches!(edit, Edit::Deleted { .. }) => {
                session.pending_mode = mode.map(|m| m & 0o7777).or(session.pending_mode);
                session.pending_mtime = mtime.or(session.pending_mtime);
                true
            }
            _ => false,
        }
    }

    /// This member is about to ask the tracker to delete the file (or to
    /// rename another over it); held until the answer is applied, then
    /// `changed` is told.
    pub fn deleting<'a>(&'a self, id: FileId, changed: &'a tokio::sync::Notify) -> Deleting<'a> {
        *self.deleting.lock().entry(id).or_insert(0) += 1;
        Deleting { writes: self, id, changed }
    }

    /// Whether a delete of the file by this member awaits its answer.
    pub fn delete_in_flight(&self, id: FileId) -> bool {
        self.deleting.lock().contains_key(&id)
    }

    /// This member deleted the file (or renamed another over it).
    pub fn deleted(&self, id: FileId) {
        if let Some((_, edit)) = self.states.lock().get_mut(&id).and_then(|s| s.session_mut()) {
            *edit = Edit::Deleted { changed: edit.changed() };
        }
    }

    /// A write handle closed.
    pub fn close(&self, id: FileId) -> Closed {
        // The state that ended is dropped here, after the lock is released:
        // the last close of a staging copy's file is a syscall.
        let (closed, _ended) = self.close_locked(id);
        closed
    }

    fn close_locked(&self, id: FileId) -> (Closed, Option<WriteState>) {
        let mut states = self.states.lock();
        let Some(WriteState::Open { session, edit }) = states.get_mut(&id) else { return (Closed::Nothing, None) };
        session.opens = session.opens.saturating_sub(1);
        if session.opens > 0 {
            return (Closed::Nothing, None);
        }
        let (lease, mode, mtime, edit) = (session.lease.id, session.pending_mode, session.pending_mtime, *edit);
        match edit {
            Edit::Deleted { .. } => (Closed::Dropped { lease }, states.remove(&id)),
            Edit::Unchanged => (Closed::Unchanged { lease, mode, mtime }, states.insert(id, WriteState::Unlocking)),
            Edit::Changed => {
                if let Some(WriteState::Open { session, edit }) = states.remove(&id) {
                    states.insert(id, WriteState::Publishing { session, edit });
                }
                (Closed::Publish, None)
            }
        }
    }

    // ---- publishing --------------------------------------------------------

    /// The edit of `lease` is settled (`published`: the tracker took it as
    /// the file). Ends the file's session, whichever lease it has, and
    /// returns what is left to do if it was `lease`'s; `Unlocking` if the
    /// lease is to be given back.
    pub fn finish(&self, id: FileId, lease: u64, published: bool) -> Option<Finished> {
        let ended: WriteState; // dropped after the guard (see `close`)
        let mut states = self.states.lock();
        states.get(&id)?.session()?;
        ended = states.remove(&id)?;
        let (session, _) = ended.session()?;
        if session.lease.id.0 != lease {
            return None;
        }
        let unlock = (!published).then_some(session.lease.id);
        if unlock.is_some() {
            states.insert(id, WriteState::Unlocking);
        }
        Some(Finished { unlock, mode: session.pending_mode, mtime: session.pending_mtime })
    }

    /// Whether this member deleted the file while its session lasted.
    pub fn was_deleted(&self, id: FileId) -> bool {
        self.states.lock().get(&id).and_then(|s| s.session()).is_some_and(|(_, e)| matches!(e, Edit::Deleted { .. }))
    }

    pub fn is_publishing(&self, id: FileId) -> bool {
        matches!(self.states.lock().get(&id), Some(WriteState::Publishing { .. }))
    }

    pub fn publishing_count(&self) -> usize {
        self.states.lock().values().filter(|s| matches!(s, WriteState::Publishing { .. })).count()
    }

    // ---- what readers see --------------------------------------------------

    /// A copy of the session's state, if the file has a session.
    pub fn view(&self, id: FileId) -> Option<View> {
        let states = self.states.lock();
        let (s, edit) = states.get(&id)?.session()?;
        Some(s.view(edit))
    }

    /// The staging copy reads of the file come from, if it has a session.
    pub fn staging(&self, id: FileId) -> Option<Arc<Staging>> {
        self.states.lock().get(&id)?.session().map(|(s, _)| s.staging.clone())
    }

    pub fn has_session(&self, id: FileId) -> bool {
        self.states.lock().get(&id).is_some_and(|s| s.session().is_some())
    }

    // ---- leases ------------------------------------------------------------

    /// Leases held by sessions.
    pub fn leases(&self) -> Vec<LeaseId> {
        self.states.lock().values().filter_map(|s| s.session()).map(|(s, _)| s.lease.id).collect()
    }

    /// Leases to renew now: (file, lease) of those past a
    /// third of their length and not lost.
    pub fn due_renewals(&self, now: UnixMillis) -> Vec<(FileId, Lease)> {
        let states = self.states.lock();
        states
            .iter()
            .filter_map(|(id, st)| st.session().map(|(s, _)| (id, s)))
            .filter(|(_, s)| !s.lease_lost && s.lease.expires.saturating_sub(now) < s.lease_len_ms * 2 / 3)
            .map(|(id, s)| (*id, s.lease.clone()))
            .collect()
    }

    /// A renewal answered: `expires`, or `None` when refused (lost).
    pub fn renewed(&self, id: FileId, lease: LeaseId, expires: Option<UnixMillis>) {
        let mut states = self.states.lock();
        if let Some((s, _)) = states.get_mut(&id).and_then(|s| s.session_mut()).filter(|(s, _)| s.lease.id == lease) {
            match expires {
                Some(t) => s.lease.expires = t,
                None => s.lease_lost = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use titorrent_tracker::proto::Version;

    fn session(dir: &std::path::Path, lease: u64) -> Session {
        let path = dir.join(format!("s-{lease}"));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let lease = Lease { id: LeaseId(lease), file: FileId(2), expires: now_ms() + 30_000, version: Version(0) };
        Session::new(lease, Staging::new(path, file, None))
    }

    #[test]
    fn one_open_takes_the_lock_others_wait_then_join() {
        let dir = tempfile::tempdir().unwrap();
        let w = WriteSessions::default();
        let f = FileId(2);
        assert!(matches!(w.begin_open(f, false), Join::Vacant));
        assert!(matches!(w.begin_open(f, false), Join::Wait), "Opening holds back a second open");
        assert!(!w.has_session(f), "reads see the table while opening");
        w.opened(f, session(dir.path(), 1), Edit::Unchanged);
        assert!(matches!(w.begin_open(f, false), Join::Joined(_)));
        assert!(matches!(w.close(f), Closed::Nothing), "one handle still open");
        assert!(matches!(w.close(f), Closed::Unchanged { lease: LeaseId(1), mode: None, mtime: None }));
        assert!(matches!(w.begin_open(f, false), Join::Wait), "Unlocking holds back a new open");
        w.unlocked(f);
        assert!(matches!(w.begin_open(f, false), Join::Vacant));
        assert!(w.abandon_open(f));
        assert!(!w.abandon_open(f));
    }

    #[test]
    fn a_changed_session_publishes_and_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let w = WriteSessions::default();
        let f = FileId(2);
        w.created(f, session(dir.path(), 7));
        w.write(f).unwrap();
        assert!(w.set_pending_attrs(f, Some(0o100600), None));
        assert!(matches!(w.close(f), Closed::Publish));
        assert!(w.is_publishing(f) && w.publishing_count() == 1);
        assert!(w.truncate(f).is_none(), "no truncation once publishing");
        assert!(matches!(w.begin_open(f, false), Join::Wait), "no join once publishing");
        assert_eq!(w.view(f).map(|v| (v.changed, v.pending_mode)), Some((true, Some(0o600))));
        assert!(w.finish(f, 8, true).is_none(), "another lease's edit");
        assert!(!w.has_session(f), "…still ends the session, as it always did");
        w.created(f, session(dir.path(), 9));
        w.write(f).unwrap();
        w.close(f);
        let done = w.finish(f, 9, false).unwrap();
        assert_eq!(done.unlock, Some(LeaseId(9)), "not landed as the file: unlock");
        assert!(matches!(w.begin_open(f, false), Join::Wait), "Unlocking");
    }

    #[test]
    fn a_staging_copy_of_a_base_reports_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let base = InfoHash([9; 20]);
        let s = Staging::new(path, file, Some(base));
        assert_eq!(s.delta(), Some(Delta { base, dirty: vec![] }), "nothing written yet");
        s.write_at(b"hello", 40_000).unwrap();
        s.set_len(1 << 20).unwrap();
        assert_eq!(s.delta().unwrap().dirty, vec![(32 * 1024, 48 * 1024), (1 << 20, u64::MAX)]);
        let mut buf = [0u8; 5];
        s.file.read_exact_at(&mut buf, 40_000).unwrap();
        assert_eq!(&buf, b"hello");
        let fresh = Staging::new(dir.path().join("t"), tempfile::tempfile().unwrap(), None);
        assert_eq!(fresh.delta(), None, "a new file has no base");
    }

    #[test]
    fn a_session_deleted_here_is_dropped_at_the_last_close() {
        let dir = tempfile::tempdir().unwrap();
        let w = WriteSessions::default();
        let f = FileId(2);
        w.created(f, session(dir.path(), 3));
        w.deleted(f);
        assert!(w.was_deleted(f));
        assert!(!w.set_pending_attrs(f, None, Some(5)), "attributes go to the tracker once deleted");
        w.write(f).unwrap();
        assert!(w.view(f).unwrap().changed, "still written through its handle");
        assert!(matches!(w.close(f), Closed::Dropped { lease: LeaseId(3) }));
        assert!(matches!(w.begin_open(f, false), Join::Vacant), "no unlock to wait for");
    }

    #[test]
    fn renewals_are_due_after_a_third_and_stop_once_lost() {
        let dir = tempfile::tempdir().unwrap();
        let w = WriteSessions::default();
        let f = FileId(2);
        w.created(f, session(dir.path(), 4));
        assert!(w.due_renewals(now_ms()).is_empty());
        let later = now_ms() + 15_000;
        assert_eq!(w.due_renewals(later).len(), 1);
        w.renewed(f, LeaseId(4), Some(later + 30_000));
        assert!(w.due_renewals(later).is_empty());
        w.renewed(f, LeaseId(4), None);
        assert!(w.due_renewals(later + 40_000).is_empty(), "lost: no more renewals");
        assert_eq!(w.leases(), vec![LeaseId(4)]);
    }
}

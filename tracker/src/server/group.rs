//! One group in memory: its file table, locks, members and log position
//! behind one mutex, mirrored to sled by [`Txn`]s.
//!
//! The group mutex serializes every mutation of the group, so seq numbers,
//! file ids and the file table change together. It is a `parking_lot`
//! mutex and is never held across an `.await`: a mutation validates
//! against memory, applies one sled batch (buffered, no fsync), updates
//! memory, queues its events for the committer, and returns.
//!
//! Lock states of a file (exactly one at a time):
//! - **free**: no entry in `locks`;
//! - **held**: an entry with `expires > now`; only its holder may renew,
//!   unlock, or publish with its lease id;
//! - **expired**: an entry with `expires <= now` not yet swept; it behaves
//!   as free (a `Lock` takes it over, emitting `Unlocked` by `MemberId(0)`
//!   first) and as unknown to `Renew` and `Publish`.
//!
//! Ordinary leases (`Lock`, `Renew`, `Unlock`) touch no disk: they change
//! memory, keep their events in `unwritten` (encoded as the runs they will
//! be stored as, see `store.rs`) and mark the file in `dirty_locks`. What
//! waits is written in one batch, in front of the
//! group's next batch of its own ([`GroupState::pending_writes`]), or by
//! the committer just before its next flush, or before the log is read
//! ([`GroupState::write_unwritten`]): so sled's log never has a hole, an
//! event is never on disk without its lock record, a lease taken and
//! released between two flushes costs no lock record at all, and sixty of
//! them cost one sled write for their events. Explicit
//! locks, and lock changes that come with other changes (create locked,
//! publish, delete, leave, expiry), are written in the batch of the
//! request itself.
//!
//! A lease lasts the tracker's lease ttl from its grant or last renewal, or,
//! for an explicit lock (`LockExplicit`), the ttl the caller asked for (at
//! most a week); renewing never shortens a lease. Deleting a file, or its
//! holder leaving the group, ends its lock with an `Unlocked` event.
//!
//! Kept versions of a file (`versions`): the newest `keep_versions` of them,
//! the current one always among them; the entry's version is the newest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::store::{EventRun, GroupRec, LockRec, MemberRec, Store, StoreError, WriteSet, RUN_MAX};
use std::net::SocketAddr;

use crate::proto::{
    Event, EventKind, FileEntry, FileId, GroupId, InfoHash, LeaseId, LockHolder, MemberId, MemberInfo, Seq,
    TrashEntry, UnixMillis, Version, VersionInfo,
};

/// Commits buffered per group for live subscribers; a subscriber further
/// behind re-reads the log from sled.
const BROADCAST_CAPACITY: usize = 1024;
/// `Wanted` notices buffered per group; a subscriber further behind misses
/// some (they are hints, and the asker asks again).
const NOTICE_CAPACITY: usize = 256;

/// Someone needs pieces of `info_hash` and listens at `peer`: a `Wanted`
/// for every subscribed connection of the group, except those of `from`.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    pub info_hash: InfoHash,
    pub peer: SocketAddr,
    /// The member who asked (its own connections are not told); `None`
    /// for an announce over HTTP.
    pub from: Option<MemberId>,
}

/// The events of one commit: what one mutation of a group logged, in seq
/// order. Subscribers get it whole (see `ServerFrame::Events`).
pub(crate) type Committed = std::sync::Arc<[Event]>;

pub(crate) struct Group {
    pub id: GroupId,
    pub state: Mutex<GroupState>,
    /// Durable events, one commit's per message (never empty), in seq
    /// order (sent by the committer).
    pub events: broadcast::Sender<Committed>,
    /// Highest seq known durable.
    pub durable: watch::Sender<Seq>,
    /// `Wanted` notices (not events: not logged, not replayed).
    pub notices: broadcast::Sender<Notice>,
}

impl Group {
    pub fn new(id: GroupId, state: GroupState) -> Group {
        let durable = watch::Sender::new(state.current_seq());
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (notices, _) = broadcast::channel(NOTICE_CAPACITY);
        Group { id, state: Mutex::new(state), events, durable, notices }
    }

    /// Writes what ordinary leases left waiting (see the module docs).
    pub fn write_unwritten(&self, store: &Store) -> Result<(), StoreError> {
        self.state.lock().write_unwritten(self.id, store)
    }
}

pub(crate) struct MemberState {
    pub rec: MemberRec,
    /// Authenticated connections; online while > 0.
    pub conns: u32,
    /// Cancelled when the member leaves: its connections stop being
    /// authenticated and close.
    pub revoked: CancellationToken,
    /// The version of each file this member last reported holding whole
    /// (`Have`): a repeated report logs nothing.
    pub haves: HashMap<FileId, crate::proto::Version>,
    /// How many more `Have` events it may log now (a token bucket).
    pub have_budget: HaveBudget,
}

impl MemberState {
    pub fn new(rec: MemberRec) -> MemberState {
        MemberState {
            rec,
            conns: 0,
            revoked: CancellationToken::new(),
            haves: HashMap::new(),
            have_budget: HaveBudget::new(),
        }
    }
}

/// `Have` events a member may log: [`HAVE_BURST`] at once, refilled at
/// [`HAVE_RATE`] a second. Reports over it are answered and dropped (they
/// only say who could serve a version).
pub(crate) struct HaveBudget {
    tokens: f64,
    at: std::time::Instant,
}

pub(crate) const HAVE_BURST: f64 = 5_000.0;
pub(crate) const HAVE_RATE: f64 = 500.0;

impl HaveBudget {
    pub fn new() -> Self {
        HaveBudget { tokens: HAVE_BURST, at: std::time::Instant::now() }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * HAVE_RATE).min(HAVE_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) struct GroupState {
    pub name: String,
    /// The longest explicit lock (ms; 0: the tracker's maximum).
    pub max_lock_ms: u64,
    pub next_seq: u64,
    pub next_file: u64,
    /// First seq still in the log (`next_seq` when the log is empty).
    pub log_start: u64,
    pub files: BTreeMap<FileId, FileEntry>,
    /// (parent, name) -> child.
    pub names: HashMap<(FileId, String), FileId>,
    /// Number of children of each directory that has any.
    pub children: HashMap<FileId, usize>,
    /// The hard links (`FileKind::Link`) naming each file that has any.
    pub links: HashMap<FileId, BTreeSet<FileId>>,
    /// Kept versions of each file (directories have none).
    pub versions: HashMap<FileId, BTreeMap<Version, VersionInfo>>,
    /// Files deleted within the trash retention (their kept versions stay
    /// in `versions` until they are purged).
    pub trash: BTreeMap<FileId, TrashEntry>,
    pub locks: HashMap<FileId, LockRec>,
    pub leases: HashMap<LeaseId, FileId>,
    /// Files whose ordinary lease changed in memory and not yet in sled.
    pub dirty_locks: HashSet<FileId>,
    /// Events of ordinary leases not yet in sled: the log's last seqs, in
    /// order, encoded as the runs they will be stored as.
    pub unwritten: Vec<EventRun>,
    /// The lease whose publish made each file's current version (memory
    /// only): lets a retried publish whose reply was lost succeed again.
    pub published_by: HashMap<FileId, LeaseId>,
    pub members: BTreeMap<MemberId, MemberState>,
}

impl GroupState {
    pub fn new(name: String) -> GroupState {
        GroupState {
            name,
            max_lock_ms: 0,
            next_seq: 1,
            next_file: FileId::ROOT.0 + 1,
            log_start: 1,
            files: BTreeMap::new(),
            names: HashMap::new(),
            children: HashMap::new(),
            links: HashMap::new(),
            versions: HashMap::new(),
            trash: BTreeMap::new(),
            locks: HashMap::new(),
            leases: HashMap::new(),
            dirty_locks: HashSet::new(),
            unwritten: Vec::new(),
            published_by: HashMap::new(),
            members: BTreeMap::new(),
        }
    }

    pub fn current_seq(&self) -> Seq {
        Seq(self.next_seq - 1)
    }

    pub fn member_info(&self, m: MemberId) -> Option<MemberInfo> {
        self.members.get(&m).map(|ms| MemberInfo {
            id: m,
            name: ms.rec.name.clone(),
            online: ms.conns > 0,
            peer_addr: ms.rec.peer_addr,
            key: ms.rec.key,
        })
    }

    pub fn holder(&self, rec: &LockRec) -> LockHolder {
        LockHolder {
            member: rec.holder,
            member_name: self.members.get(&rec.holder).map(|m| m.rec.name.clone()).unwrap_or_default(),
            since: rec.since,
            expires: rec.expires,
        }
    }

    /// Inserts or replaces (e.g. renamed) an entry.
    /// The mtimes and ctimes of `touched` (a commit's directories and
    /// linked files), now written.
    pub fn take_times(&mut self, touched: &[FileEntry]) {
        for t in touched {
            if let Some(e) = self.files.get_mut(&t.id) {
                e.mtime = t.mtime;
                e.ctime = t.ctime;
            }
        }
    }

    pub fn insert_file(&mut self, e: FileEntry) {
        self.unlink(e.id);
        if e.id != FileId::ROOT {
            self.names.insert((e.parent, e.name.clone()), e.id);
            *self.children.entry(e.parent).or_default() += 1;
        }
        if let Some(t) = e.kind.link_of() {
            self.links.entry(t).or_default().insert(e.id);
        }
        self.files.insert(e.id, e);
    }

    /// Forgets a deleted file: entry, name, lock, versions.
    pub fn remove_file(&mut self, f: FileId) {
        self.unlink(f);
        if let Some(t) = self.files.remove(&f).and_then(|e| e.kind.link_of()) {
            if let Some(set) = self.links.get_mut(&t) {
                set.remove(&f);
                if set.is_empty() {
                    self.links.remove(&t);
                }
            }
        }
        self.children.remove(&f);
        self.remove_lock(f);
        self.published_by.remove(&f);
        self.versions.remove(&f);
    }

    /// Takes `f`'s current entry out of the name index.
    fn unlink(&mut self, f: FileId) {
        let Some(old) = self.files.get(&f) else { return };
        if f == FileId::ROOT {
            return;
        }
        let key = (old.parent, old.name.clone());
        if self.names.get(&key) == Some(&f) {
            self.names.remove(&key);
            if let Some(n) = self.children.get_mut(&old.parent) {
                *n -= 1;
                if *n == 0 {
                    self.children.remove(&old.parent);
                }
            }
        }
    }

    /// The link promoted when `f` is deleted: its smallest-id hard link.
    pub fn first_link(&self, f: FileId) -> Option<FileId> {
        self.links.get(&f).and_then(|s| s.first().copied())
    }

    /// `NoSuchFile` unless `d` exists, `NotADirectory` unless it is one.
    pub fn check_dir(&self, d: FileId) -> Result<(), crate::proto::ProtoError> {
        match self.files.get(&d) {
            None => Err(crate::proto::ProtoError::NoSuchFile),
            Some(p) if p.kind != crate::proto::FileKind::Dir => Err(crate::proto::ProtoError::NotADirectory),
            Some(_) => Ok(()),
        }
    }

    /// As [`Self::check_dir`], and `AlreadyExists` if `name` is taken in it.
    pub fn check_free_name(&self, parent: FileId, name: &str) -> Result<(), crate::proto::ProtoError> {
        self.check_dir(parent)?;
        if self.names.contains_key(&(parent, name.to_string())) {
            return Err(crate::proto::ProtoError::AlreadyExists);
        }
        Ok(())
    }

    pub fn has_children(&self, d: FileId) -> bool {
        self.children.get(&d).is_some_and(|n| *n > 0)
    }

    /// Whether `d` is `ancestor` or lies below it.
    pub fn is_within(&self, mut d: FileId, ancestor: FileId) -> bool {
        // Bounded by the table's size, in case a corrupt table has a cycle.
        for _ in 0..=self.files.len() {
            if d == ancestor {
                return true;
            }
            if d == FileId::ROOT {
                return false;
            }
            match self.files.get(&d) {
                Some(e) => d = e.parent,
                None => return false,
            }
        }
        true
    }

    /// The lock on `f` if another member holds it (a live lease): what
    /// changing `f` is refused with.
    pub fn held_by_other(&self, f: FileId, m: MemberId, now: UnixMillis) -> Option<LockHolder> {
        let rec = self.locks.get(&f)?;
        (rec.holder != m && rec.expires > now).then(|| self.holder(rec))
    }

    /// Kept versions of `f` older than `keep_from`.
    pub fn versions_before(&self, f: FileId, keep_from: Version) -> Vec<Version> {
        self.versions.get(&f).map(|vs| vs.range(..keep_from).map(|(v, _)| *v).collect()).unwrap_or_default()
    }

    /// The runs of `unwritten` events and the lock records (or their
    /// absence) of the files in `dirty_locks`, as memory has them now: what
    /// has to go in front of the group's next write.
    pub fn pending_writes(&self, g: GroupId) -> Result<WriteSet, StoreError> {
        let mut w = WriteSet::new();
        for run in &self.unwritten {
            w.put_run(g, run)?;
        }
        for f in &self.dirty_locks {
            match self.locks.get(f) {
                Some(rec) => w.put_lock(g, *f, rec)?,
                None => w.del_lock(g, *f),
            }
        }
        Ok(w)
    }

    /// Forgets what [`GroupState::pending_writes`] and `unwritten` held,
    /// once written.
    pub fn written(&mut self) {
        self.dirty_locks.clear();
        self.unwritten.clear();
    }

    /// Keeps the events of a lazy change (the next seqs) for later.
    pub fn add_unwritten(&mut self, evs: &[Event]) -> Result<(), StoreError> {
        for ev in evs {
            match self.unwritten.last_mut() {
                Some(run) if run.count < RUN_MAX => run.push(ev)?,
                _ => {
                    let mut run = EventRun::default();
                    run.push(ev)?;
                    self.unwritten.push(run);
                }
            }
        }
        Ok(())
    }

    /// Writes what ordinary leases left waiting, in one batch.
    pub fn write_unwritten(&mut self, g: GroupId, store: &Store) -> Result<(), StoreError> {
        if self.dirty_locks.is_empty() && self.unwritten.is_empty() {
            return Ok(());
        }
        store.apply(self.pending_writes(g)?)?;
        self.written();
        Ok(())
    }

    pub fn insert_lock(&mut self, f: FileId, rec: LockRec) {
        let lease = rec.lease;
        if let Some(old) = self.locks.insert(f, rec) {
            self.leases.remove(&old.lease);
        }
        self.leases.insert(lease, f);
    }

    pub fn remove_lock(&mut self, f: FileId) {
        if let Some(old) = self.locks.remove(&f) {
            self.leases.remove(&old.lease);
        }
    }

    /// The lock `lease` names, if it is a live lease of `m`.
    pub fn live_lease(&self, lease: LeaseId, m: MemberId, now: UnixMillis) -> Option<(FileId, &LockRec)> {
        let f = *self.leases.get(&lease)?;
        let rec = self.locks.get(&f)?;
        (rec.holder == m && rec.lease == lease && rec.expires > now).then_some((f, rec))
    }

    /// A lease id not in use in this group (random, so not guessable).
    pub fn new_lease_id(&self) -> LeaseId {
        loop {
            let id = LeaseId(rand::random::<u64>());
            if id.0 != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }
}

/// The writes and events of one mutation, built before memory changes so a
/// failed sled write leaves memory untouched.
pub(crate) struct Txn {
    pub group: GroupId,
    pub w: WriteSet,
    pub events: Vec<Event>,
    pub now: UnixMillis,
    pub next_seq: u64,
    pub next_file: u64,
    counters_changed: bool,
    lazy: bool,
}

impl Txn {
    pub fn new(group: GroupId, st: &GroupState, now: UnixMillis) -> Txn {
        Txn {
            group,
            w: WriteSet::new(),
            events: Vec::new(),
            now,
            next_seq: st.next_seq,
            next_file: st.next_file,
            counters_changed: false,
            lazy: false,
        }
    }

    /// A change of ordinary leases only: its writes wait in the group
    /// (`unwritten`) for the next batch or flush instead of going to sled
    /// now. Only events may be added to it.
    pub fn lazy(group: GroupId, st: &GroupState, now: UnixMillis) -> Txn {
        Txn { lazy: true, ..Txn::new(group, st, now) }
    }

    /// Logs an event of this mutation, stamped with the txn's `now`: all
    /// the events of one commit share their `at`, which is how a replay
    /// from the log tells where a commit ends (`subscribe.rs`).
    pub fn event(&mut self, by: MemberId, kind: EventKind) -> Result<(), StoreError> {
        let ev = Event { seq: Seq(self.next_seq), at: self.now, by, kind };
        self.next_seq += 1;
        if !self.lazy {
            self.w.put_event(self.group, &ev)?;
        }
        self.events.push(ev);
        Ok(())
    }

    pub fn alloc_file(&mut self) -> FileId {
        let id = FileId(self.next_file);
        self.next_file += 1;
        self.counters_changed = true;
        id
    }

    /// Makes `finish` write the group record (a new group).
    pub fn write_group_rec(&mut self) {
        self.counters_changed = true;
    }

    /// Adds the group record when a file id was allocated, in the same
    /// batch as the file that used it. Events alone do not rewrite it: the
    /// last event's key is the authoritative end of the log (pruning always
    /// keeps it), and open() takes the larger of the two.
    /// The entries this transaction's events touch, with their new times,
    /// written into it (a lazy transaction has no event that touches any).
    fn touched(&mut self, st: &GroupState) -> Result<Vec<FileEntry>, StoreError> {
        let mut touched: Vec<FileEntry> = Vec::new();
        for ev in &self.events {
            for t in ev.kind.touches(|f| st.files.get(&f).and_then(|e| e.kind.link_of())).into_iter().flatten() {
                let i = match touched.iter().position(|e| e.id == t.file()) {
                    Some(i) => i,
                    None => match st.files.get(&t.file()) {
                        Some(e) => {
                            touched.push(e.clone());
                            touched.len() - 1
                        }
                        None => continue, // gone in this very batch
                    },
                };
                t.apply(&mut touched[i], ev.at);
            }
        }
        for e in &touched {
            self.w.put_file(self.group, e)?;
        }
        Ok(touched)
    }

    pub fn finish(mut self, st: &GroupState) -> Result<FinishedTxn, StoreError> {
        if self.counters_changed {
            let rec = GroupRec {
                name: st.name.clone(),
                next_file: self.next_file,
                next_seq: self.next_seq,
                max_lock_ms: st.max_lock_ms,
            };
            self.w.put_group(self.group, &rec)?;
        }
        let touched = if self.lazy { Vec::new() } else { self.touched(st)? };
        Ok(FinishedTxn {
            touched,
            w: self.w,
            events: self.events,
            next_seq: self.next_seq,
            next_file: self.next_file,
            lazy: self.lazy,
        })
    }
}

pub(crate) struct FinishedTxn {
    /// Entries whose times the events touched ([`EventKind::touches`]),
    /// written in `w`; the group state takes their times once written.
    pub touched: Vec<FileEntry>,
    pub w: WriteSet,
    pub events: Vec<Event>,
    pub next_seq: u64,
    pub next_file: u64,
    pub lazy: bool,
}

#[cfg(test)]
mod have_budget_tests {
    use super::*;

    #[test]
    fn the_have_budget_empties_and_refills() {
        let mut b = HaveBudget::new();
        let taken = (0..(HAVE_BURST as usize + 100)).filter(|_| b.take()).count();
        assert!((HAVE_BURST as usize..HAVE_BURST as usize + 20).contains(&taken), "{taken}");
        b.at -= std::time::Duration::from_millis(100);
        let refilled = (0..1000).filter(|_| b.take()).count();
        assert!((40..=60).contains(&refilled), "{refilled}");
    }
}

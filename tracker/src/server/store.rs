//! The tracker's on-disk state: one sled tree, its key layout, the records
//! stored under each key, and loading everything back at open.
//!
//! Every key starts with a one-byte table tag, then big-endian ids so that
//! sled's byte order is the numeric order:
//!
//! | tag | key                                   | value            |
//! |-----|---------------------------------------|------------------|
//! | `G` | group                                 | [`GroupRec`]     |
//! | `M` | member                                | [`MemberRec`]    |
//! | `F` | group, file                           | `FileEntry`      |
//! | `T` | group, file, version                  | .torrent bytes   |
//! | `V` | group, file, version                  | `VersionInfo`    |
//! | `L` | group, file                           | [`LockRec`]      |
//! | `I` | SHA-256 of the invite code            | [`InviteRec`]    |
//! | `E` | group, seq                            | `Event`          |
//! | `R` | group, first seq                      | [`EventRun`]: consecutive `Event`s |
//! | `N` | (nothing)                             | next member id, a floor |
//! | `S` | (nothing)                             | the tracker's 32-byte secret (announce keys) |
//!
//! All the writes of one request go into one [`WriteSet`] applied with
//! `Tree::apply_batch`, which sled recovers atomically after a crash: an
//! event is never on disk without the file-table or lock change it records.
//! Ordinary leases are the one kind of change whose writes wait: their
//! events and `L` records are kept in memory and go, in seq order, in front
//! of the group's next batch or in the committer's before its next flush
//! (see `group.rs`), still in one batch. Their events go as runs (`R`): up
//! to [`RUN_MAX`] consecutive events under one key, one sled write instead
//! of one per event. A group's log is its `E` and `R` records together:
//! every seq is in exactly one of them, and readers merge the two.
//! A group's `next_seq` in [`GroupRec`] is only a floor (rewritten with
//! `next_file`); the last key of its log, which pruning always keeps, is
//! authoritative.
//!
//! A file's kept versions are its `V` records (a file has one for each
//! version it keeps, version 0 included while kept); a `T` record exists for
//! each kept version with content. Both go in the batch that pushes the
//! version out or deletes the file. Member ids are never reused: `N` is
//! written when a member leaves, so a reopened tracker does not hand out
//! the id of the member that had the highest one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::TrackerError;
use crate::proto::{
    Event, FileEntry, Fingerprint, FileId, GroupId, LeaseId, MemberId, ProtoError, Seq, TrashEntry, UnixMillis, Version,
    VersionInfo,
};

const TREE: &str = "tracker-v1";

const GROUP: u8 = b'G';
const MEMBER: u8 = b'M';
const FILE: u8 = b'F';
const TORRENT: u8 = b'T';
const LOCK: u8 = b'L';
const INVITE: u8 = b'I';
const EVENT: u8 = b'E';
const VERSION: u8 = b'V';
const NEXT_MEMBER: u8 = b'N';
const SECRET: u8 = b'S';
const RUN: u8 = b'R';
const TRASH: u8 = b'X';

/// Most events in one `R` record (a few KiB: well under the size at which
/// sled moves a value to a file of its own).
pub(crate) const RUN_MAX: u32 = 64;

/// Consecutive events encoded back to back, to be stored as one `R`
/// record: its value is the bincode of a `Vec<Event>`.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventRun {
    pub first: u64,
    pub count: u32,
    /// The events' bincode, one after the other.
    pub bytes: Vec<u8>,
}

impl EventRun {
    /// Appends `ev` (which must be the next seq).
    pub fn push(&mut self, ev: &Event) -> Result<(), StoreError> {
        if self.count == 0 {
            self.first = ev.seq.0;
        }
        debug_assert_eq!(ev.seq.0, self.first + u64::from(self.count));
        bincode::serde::encode_into_std_write(ev, &mut self.bytes, bincode::config::standard())?;
        self.count += 1;
        Ok(())
    }

    /// The record's value: a `Vec<Event>` as bincode writes it (its length,
    /// then the elements).
    fn value(&self) -> Result<Vec<u8>, StoreError> {
        let mut v = enc(&u64::from(self.count))?;
        v.extend_from_slice(&self.bytes);
        Ok(v)
    }
}

/// Where a log entry is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Single,
    /// In the run starting at `first` and ending at `last`.
    Run { first: u64, last: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GroupRec {
    pub name: String,
    pub next_file: u64,
    /// A floor for the next seq; see the module docs.
    pub next_seq: u64,
    /// The longest explicit lock a member may take (ms; 0: the tracker's
    /// maximum), as the owner or an admin set it.
    pub max_lock_ms: u64,
}

/// A group record as protocol 7 stored it (no lock limit).
#[derive(Deserialize)]
struct GroupRecV7 {
    name: String,
    next_file: u64,
    next_seq: u64,
}

impl GroupRec {
    fn decode(k: &[u8], v: &[u8]) -> Result<GroupRec, StoreError> {
        dec(k, v).or_else(|e| match dec::<GroupRecV7>(k, v) {
            Ok(o) => Ok(GroupRec { name: o.name, next_file: o.next_file, next_seq: o.next_seq, max_lock_ms: 0 }),
            Err(_) => Err(e),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MemberRec {
    pub group: GroupId,
    pub name: String,
    /// The fingerprint of the member's certificate. (A record from before
    /// protocol 5 held the SHA-256 of a bearer secret here, in the same
    /// layout: no certificate hashes to it, so that member must join again.)
    pub key: Fingerprint,
    pub peer_addr: Option<SocketAddr>,
    pub role: Role,
}

/// What a member may do beyond reading and writing files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Role {
    Member,
    /// Removes members, breaks locks.
    Admin,
    /// The group's creator: also makes admins.
    Owner,
}

/// A member record as protocol 6 stored it (no role): read as a plain
/// member.
#[derive(Deserialize)]
struct MemberRecV6 {
    group: GroupId,
    name: String,
    key: Fingerprint,
    peer_addr: Option<SocketAddr>,
}

impl MemberRec {
    fn decode(k: &[u8], v: &[u8]) -> Result<MemberRec, StoreError> {
        dec(k, v).or_else(|e| match dec::<MemberRecV6>(k, v) {
            Ok(o) => Ok(MemberRec { group: o.group, name: o.name, key: o.key, peer_addr: o.peer_addr, role: Role::Member }),
            Err(_) => Err(e),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockRec {
    pub holder: MemberId,
    pub lease: LeaseId,
    pub since: UnixMillis,
    pub expires: UnixMillis,
    /// Taken with `LockExplicit` (`titorrent lock`): its holder's own opens
    /// for write use it, publishing and closing keep it, and only
    /// `UnlockFile` or its time-to-live end it.
    pub explicit: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct InviteRec {
    pub group: GroupId,
    pub expires: UnixMillis,
    pub uses_left: u32,
    /// Who made it: it dies when that member leaves or is removed.
    pub by: MemberId,
}

/// An invite as protocol 6 stored it (no maker): kept until it expires.
#[derive(Deserialize)]
struct InviteRecV6 {
    group: GroupId,
    expires: UnixMillis,
    uses_left: u32,
}

impl InviteRec {
    fn decode(k: &[u8], v: &[u8]) -> Result<InviteRec, StoreError> {
        dec(k, v).or_else(|e| match dec::<InviteRecV6>(k, v) {
            Ok(o) => Ok(InviteRec { group: o.group, expires: o.expires, uses_left: o.uses_left, by: MemberId(0) }),
            Err(_) => Err(e),
        })
    }
}

/// A failure of the store while serving a request. The client only ever
/// sees `ProtoError::Internal`; the cause is logged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("cannot encode record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("corrupt record under key {key}: {source}")]
    Decode { key: String, source: bincode::error::DecodeError },
}

impl From<StoreError> for ProtoError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "tracker store failure");
        ProtoError::Internal("tracker storage failure".into())
    }
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    Ok(bincode::serde::encode_to_vec(v, bincode::config::standard())?)
}

fn dec<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(v, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|source| StoreError::Decode { key: hex::encode(key), source })
}

/// Decodes a value that must fill the record, else one as protocol 11
/// stored it (see `legacy`). Filling the record matters for a run: a run of
/// old events read as new ones could otherwise eat the next event's bytes.
fn dec_or_v11<T: DeserializeOwned, O: DeserializeOwned + Into<T>>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
    let cfg = bincode::config::standard();
    match bincode::serde::decode_from_slice::<T, _>(v, cfg) {
        Ok((t, used)) if used == v.len() => Ok(t),
        first => match bincode::serde::decode_from_slice::<O, _>(v, cfg) {
            Ok((o, used)) if used == v.len() => Ok(o.into()),
            _ => first
                .map(|(t, _)| t)
                .map_err(|source| StoreError::Decode { key: hex::encode(key), source }),
        },
    }
}

fn dec_event(key: &[u8], v: &[u8]) -> Result<Event, StoreError> {
    dec_or_v11::<Event, super::legacy::EventV11>(key, v)
}

fn dec_events(key: &[u8], v: &[u8]) -> Result<Vec<Event>, StoreError> {
    struct Old(Vec<super::legacy::EventV11>);
    impl<'de> Deserialize<'de> for Old {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Vec::deserialize(d).map(Old)
        }
    }
    impl From<Old> for Vec<Event> {
        fn from(o: Old) -> Self {
            o.0.into_iter().map(Event::from).collect()
        }
    }
    dec_or_v11::<Vec<Event>, Old>(key, v)
}

fn key(tag: u8, parts: &[u64]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 * parts.len());
    k.push(tag);
    for p in parts {
        k.extend_from_slice(&p.to_be_bytes());
    }
    k
}

fn u64_at(k: &[u8], idx: usize) -> Option<u64> {
    let start = 1 + 8 * idx;
    k.get(start..start + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

fn invite_key(code_hash: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(INVITE);
    k.extend_from_slice(code_hash);
    k
}

/// The writes of one request, applied atomically by [`Store::apply`].
pub(crate) struct WriteSet {
    /// In order; `None` deletes. The last write of a key wins.
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteSet {
    pub fn new() -> Self {
        WriteSet { ops: Vec::new() }
    }
    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((k, Some(v)));
    }
    fn del(&mut self, k: Vec<u8>) {
        self.ops.push((k, None));
    }
    pub fn put_group(&mut self, g: GroupId, rec: &GroupRec) -> Result<(), StoreError> {
        self.put(key(GROUP, &[g.0]), enc(rec)?);
        Ok(())
    }
    pub fn put_member(&mut self, m: MemberId, rec: &MemberRec) -> Result<(), StoreError> {
        self.put(key(MEMBER, &[m.0]), enc(rec)?);
        Ok(())
    }
    pub fn put_file(&mut self, g: GroupId, e: &FileEntry) -> Result<(), StoreError> {
        self.put(key(FILE, &[g.0, e.id.0]), enc(e)?);
        Ok(())
    }
    pub fn del_file(&mut self, g: GroupId, f: FileId) {
        self.del(key(FILE, &[g.0, f.0]));
    }
    pub fn del_member(&mut self, m: MemberId) {
        self.del(key(MEMBER, &[m.0]));
    }
    /// Records that member ids below `next` have been handed out.
    pub fn put_next_member(&mut self, next: u64) -> Result<(), StoreError> {
        self.put(vec![NEXT_MEMBER], enc(&next)?);
        Ok(())
    }
    pub fn put_version(&mut self, g: GroupId, f: FileId, v: &VersionInfo) -> Result<(), StoreError> {
        self.put(key(VERSION, &[g.0, f.0, v.version.0]), enc(v)?);
        Ok(())
    }
    /// Drops a kept version: its record and its torrent, if it has one.
    pub fn del_version(&mut self, g: GroupId, f: FileId, v: Version) {
        self.del(key(VERSION, &[g.0, f.0, v.0]));
        self.del_torrent(g, f, v);
    }
    pub fn put_torrent(&mut self, g: GroupId, f: FileId, v: Version, bytes: Vec<u8>) {
        self.put(key(TORRENT, &[g.0, f.0, v.0]), bytes);
    }
    pub fn del_torrent(&mut self, g: GroupId, f: FileId, v: Version) {
        self.del(key(TORRENT, &[g.0, f.0, v.0]));
    }
    pub fn put_trash(&mut self, g: GroupId, t: &TrashEntry) -> Result<(), StoreError> {
        self.put(key(TRASH, &[g.0, t.entry.id.0]), enc(t)?);
        Ok(())
    }
    pub fn del_trash(&mut self, g: GroupId, f: FileId) {
        self.del(key(TRASH, &[g.0, f.0]));
    }
    pub fn put_lock(&mut self, g: GroupId, f: FileId, rec: &LockRec) -> Result<(), StoreError> {
        self.put(key(LOCK, &[g.0, f.0]), enc(rec)?);
        Ok(())
    }
    pub fn del_lock(&mut self, g: GroupId, f: FileId) {
        self.del(key(LOCK, &[g.0, f.0]));
    }
    pub fn put_invite(&mut self, code_hash: &[u8; 32], rec: &InviteRec) -> Result<(), StoreError> {
        self.put(invite_key(code_hash), enc(rec)?);
        Ok(())
    }
    pub fn del_invite(&mut self, code_hash: &[u8; 32]) {
        self.del(invite_key(code_hash));
    }
    pub fn del_invite_key(&mut self, raw_key: &[u8]) {
        self.del(raw_key.to_vec());
    }
    pub fn put_run(&mut self, g: GroupId, run: &EventRun) -> Result<(), StoreError> {
        if run.count > 0 {
            self.put(key(RUN, &[g.0, run.first]), run.value()?);
        }
        Ok(())
    }
    fn del_run(&mut self, g: GroupId, first: u64) {
        self.del(key(RUN, &[g.0, first]));
    }
    pub fn put_event(&mut self, g: GroupId, ev: &Event) -> Result<(), StoreError> {
        self.put(key(EVENT, &[g.0, ev.seq.0]), enc(ev)?);
        Ok(())
    }
    pub fn del_event(&mut self, g: GroupId, seq: Seq) {
        self.del(key(EVENT, &[g.0, seq.0]));
    }
}

/// Everything loaded at open, before it is turned into in-memory groups.
pub(crate) struct Loaded {
    pub groups: BTreeMap<GroupId, LoadedGroup>,
    /// The floor written by [`WriteSet::put_next_member`] (0 if none).
    pub next_member: u64,
}

pub(crate) struct LoadedGroup {
    pub rec: GroupRec,
    pub members: BTreeMap<MemberId, MemberRec>,
    pub files: BTreeMap<FileId, FileEntry>,
    pub locks: BTreeMap<FileId, LockRec>,
    pub versions: BTreeMap<FileId, BTreeMap<Version, VersionInfo>>,
    pub trash: BTreeMap<FileId, TrashEntry>,
    /// First and last seq still in the log, if any.
    pub log: Option<(u64, u64)>,
}

/// sled's page cache. Its default (1 GiB) let a 100,000-file group's
/// pages (table, kept versions, the event log) all stay resident, though
/// the tracker answers from its own memory and reads sled only for log
/// catch-up and torrents; what misses is in the OS page cache anyway.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
pub(crate) struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, TrackerError> {
        let open_err = |source| TrackerError::Open { path: dir.to_path_buf(), source };
        // It holds the tracker's keys and every group's file table.
        super::private::make_private(dir, "tracker data").map_err(|e| open_err(sled::Error::Io(e)))?;
        let db = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES).open().map_err(open_err)?;
        let tree = db.open_tree(TREE).map_err(open_err)?;
        // What sled just created under a permissive umask (an embedding
        // process's): the directory is private already, this is for depth.
        super::private::tighten(dir).map_err(|e| open_err(sled::Error::Io(e)))?;
        Ok(Store { db, tree })
    }

    /// Applies `w` atomically (in memory; durable with the next flush).
    pub fn apply(&self, w: WriteSet) -> Result<(), StoreError> {
        self.apply_all(&[&w])
    }

    /// Applies the writes of all `parts`, in order, atomically. A single
    /// write goes in as it is: sled's `apply_batch` writes out and syncs its
    /// current log buffer for every batch (it rolls the buffer to pin the
    /// batch's recovery point), which a one-key write does not need.
    pub fn apply_all(&self, parts: &[&WriteSet]) -> Result<(), StoreError> {
        let mut ops = parts.iter().flat_map(|w| w.ops.iter());
        let n: usize = parts.iter().map(|w| w.ops.len()).sum();
        match (n, ops.next()) {
            (0, _) | (_, None) => {}
            (1, Some((k, Some(v)))) => {
                self.tree.insert(k.as_slice(), v.as_slice())?;
            }
            (1, Some((k, None))) => {
                self.tree.remove(k.as_slice())?;
            }
            (_, Some(first)) => {
                let mut batch = sled::Batch::default();
                for (k, v) in std::iter::once(first).chain(ops) {
                    match v {
                        Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                        None => batch.remove(k.as_slice()),
                    }
                }
                self.tree.apply_batch(batch)?;
            }
        }
        Ok(())
    }

    /// Makes every write applied so far durable.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }

    /// The tracker's secret, made (random) and made durable on first use.
    pub fn tracker_secret(&self) -> Result<[u8; 32], TrackerError> {
        if let Some(v) = self.tree.get([SECRET])? {
            return <[u8; 32]>::try_from(v.as_ref())
                .map_err(|_| TrackerError::Corrupt("the tracker secret is not 32 bytes".into()));
        }
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        self.tree.insert([SECRET], &secret[..])?;
        self.db.flush()?;
        Ok(secret)
    }

    pub fn invite(&self, code_hash: &[u8; 32]) -> Result<Option<InviteRec>, StoreError> {
        let k = invite_key(code_hash);
        match self.tree.get(&k)? {
            Some(v) => Ok(Some(InviteRec::decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Raw keys of invites that expired before `now`, at most `limit`.
    /// The keys of the invites `by` made (scans the invites: there are few,
    /// and members leave rarely).
    pub fn invites_by(&self, by: MemberId) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix([INVITE]) {
            let (k, v) = kv?;
            if InviteRec::decode(&k, &v)?.by == by {
                out.push(k.to_vec());
            }
        }
        Ok(out)
    }

    pub fn expired_invites(&self, now: UnixMillis, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix([INVITE]) {
            let (k, v) = kv?;
            let rec = InviteRec::decode(&k, &v)?;
            if rec.expires <= now {
                out.push(k.to_vec());
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn torrent(&self, g: GroupId, f: FileId, v: Version) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key(TORRENT, &[g.0, f.0, v.0]))?.map(|b| b.to_vec()))
    }

    /// Versions of file `f` that have a torrent stored, including any
    /// without a version record (written by a tracker older than them).
    pub fn torrent_versions(&self, g: GroupId, f: FileId) -> Result<Vec<Version>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.range(key(TORRENT, &[g.0, f.0, 0])..=key(TORRENT, &[g.0, f.0, u64::MAX])) {
            let (k, _) = kv?;
            if let Some(v) = u64_at(&k, 2) {
                out.push(Version(v));
            }
        }
        Ok(out)
    }

    /// Events of group `g` with `from <= seq <= to`, at most `limit`, in order.
    pub fn events(&self, g: GroupId, from: u64, to: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        Ok(self.log_entries(g, from, to, limit)?.into_iter().map(|(ev, _)| ev).collect())
    }

    /// The log's entries with `from <= seq <= to`, at most `limit`, in
    /// order, with where each is stored: the `E` and `R` records merged.
    fn log_entries(&self, g: GroupId, from: u64, to: u64, limit: usize) -> Result<Vec<(Event, Slot)>, StoreError> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let mut singles = Vec::new();
        for kv in self.tree.range(key(EVENT, &[g.0, from])..=key(EVENT, &[g.0, to])) {
            let (k, v) = kv?;
            singles.push(dec_event(&k, &v)?);
            if singles.len() >= limit {
                break;
            }
        }
        // The run that may hold `from` starts at or before it.
        let start = match self.tree.range(key(RUN, &[g.0, 0])..=key(RUN, &[g.0, from])).next_back() {
            Some(kv) => u64_at(&kv?.0, 1).unwrap_or(from),
            None => from,
        };
        let mut runs = Vec::new();
        for kv in self.tree.range(key(RUN, &[g.0, start])..=key(RUN, &[g.0, to])) {
            let (k, v) = kv?;
            let evs: Vec<Event> = dec_events(&k, &v)?;
            let (Some(first), Some(last)) = (evs.first().map(|e| e.seq.0), evs.last().map(|e| e.seq.0)) else {
                continue;
            };
            runs.extend(evs.into_iter().filter(|e| (from..=to).contains(&e.seq.0)).map(|e| (e, Slot::Run { first, last })));
            if runs.len() >= limit {
                break;
            }
        }
        // Merge the two sorted lists.
        let mut out = Vec::with_capacity(limit.min(singles.len() + runs.len()));
        let (mut a, mut b) = (singles.into_iter().peekable(), runs.into_iter().peekable());
        while out.len() < limit {
            let take_single = match (a.peek(), b.peek()) {
                (Some(x), Some((y, _))) => x.seq < y.seq,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_single {
                out.extend(a.next().map(|e| (e, Slot::Single)));
            } else {
                out.extend(b.next());
            }
        }
        Ok(out)
    }

    /// Deletions that drop events older than `cutoff` from the front of
    /// `g`'s log, looking at most at `limit` events from `from` up to
    /// `to`: a run goes only whole, and only if it ends by `to`. Returns
    /// the deletions, the new first seq if any was dropped, and whether
    /// every event looked at was old (there may be more).
    pub fn prune_front(
        &self,
        g: GroupId,
        from: u64,
        to: u64,
        cutoff: UnixMillis,
        limit: usize,
    ) -> Result<(WriteSet, Option<u64>, bool), StoreError> {
        let entries = self.log_entries(g, from, to, limit)?;
        let mut w = WriteSet::new();
        let mut new_start = None;
        let mut old = 0;
        for (ev, slot) in &entries {
            if ev.at >= cutoff {
                break;
            }
            match *slot {
                Slot::Single => {
                    w.del_event(g, ev.seq);
                    new_start = Some(ev.seq.0 + 1);
                }
                Slot::Run { last, .. } if last > to => break,
                Slot::Run { first, last } => {
                    if ev.seq.0 == last {
                        w.del_run(g, first);
                        new_start = Some(last + 1);
                    }
                }
            }
            old += 1;
        }
        Ok((w, new_start, entries.len() == limit && old == entries.len()))
    }

    fn log_bounds(&self, g: GroupId) -> Result<Option<(u64, u64)>, StoreError> {
        let range = key(EVENT, &[g.0, 0])..=key(EVENT, &[g.0, u64::MAX]);
        let first = self.tree.range(range.clone()).next().transpose()?.and_then(|(k, _)| u64_at(&k, 1));
        let last = self.tree.range(range).next_back().transpose()?.and_then(|(k, _)| u64_at(&k, 1));
        let runs = key(RUN, &[g.0, 0])..=key(RUN, &[g.0, u64::MAX]);
        let first_run = self.tree.range(runs.clone()).next().transpose()?.and_then(|(k, _)| u64_at(&k, 1));
        let last_run = match self.tree.range(runs).next_back().transpose()? {
            Some((k, v)) => dec_events(&k, &v)?.last().map(|e| e.seq.0),
            None => None,
        };
        let first = [first, first_run].into_iter().flatten().min();
        let last = [last, last_run].into_iter().flatten().max();
        Ok(first.zip(last))
    }

    /// Reads groups, members, file tables and locks (not the event log,
    /// only its bounds). Writes nothing.
    pub fn load(&self) -> Result<Loaded, TrackerError> {
        let corrupt = |e: StoreError| TrackerError::Corrupt(e.to_string());
        let mut groups = BTreeMap::new();
        for kv in self.tree.scan_prefix([GROUP]) {
            let (k, v) = kv?;
            let g = GroupId(u64_at(&k, 0).ok_or_else(|| bad_key(&k))?);
            let rec = GroupRec::decode(&k, &v).map_err(corrupt)?;
            let log = self.log_bounds(g).map_err(corrupt)?;
            groups.insert(
                g,
                LoadedGroup {
                    rec,
                    members: BTreeMap::new(),
                    files: BTreeMap::new(),
                    locks: BTreeMap::new(),
                    versions: BTreeMap::new(),
                    trash: BTreeMap::new(),
                    log,
                },
            );
        }
        for kv in self.tree.scan_prefix([MEMBER]) {
            let (k, v) = kv?;
            let m = MemberId(u64_at(&k, 0).ok_or_else(|| bad_key(&k))?);
            let rec = MemberRec::decode(&k, &v).map_err(corrupt)?;
            match groups.get_mut(&rec.group) {
                Some(lg) => {
                    lg.members.insert(m, rec);
                }
                None => tracing::warn!(member = %m, group = %rec.group, "member of an unknown group ignored"),
            }
        }
        for kv in self.tree.scan_prefix([FILE]) {
            let (k, v) = kv?;
            let g = GroupId(u64_at(&k, 0).ok_or_else(|| bad_key(&k))?);
            let e: FileEntry = dec_or_v11::<FileEntry, super::legacy::FileEntryV11>(&k, &v).map_err(corrupt)?;
            if let Some(lg) = groups.get_mut(&g) {
                lg.files.insert(e.id, e);
            }
        }
        for kv in self.tree.scan_prefix([LOCK]) {
            let (k, v) = kv?;
            let g = GroupId(u64_at(&k, 0).ok_or_else(|| bad_key(&k))?);
            let f = FileId(u64_at(&k, 1).ok_or_else(|| bad_key(&k))?);
            let rec: LockRec = dec(&k, &v).map_err(corrupt)?;
            if let Some(lg) = groups.get_mut(&g) {
                lg.locks.insert(f, rec);
            }
        }
        for kv in self.tree.scan_prefix([VERSION]) {
            let (k, v) = kv?;
            let g = GroupId(u64_at(&k, 0).ok_or_else(|| bad_key(&k))?);
            let f = FileId(u64_at(&k, 1).ok_or_else(|| bad_key(&k))?);
            let info: VersionInfo = dec(&k, &v).map_err(corrupt)?;
            if let Some(lg) = groups.get_mut(&g) {
                lg.versions.entry(f).or_default().insert(info.version, info);
            }
        }
        for kv in self.tree.scan_prefix([TRASH]) {
            let (k, v) = kv?;
            let g = GroupId(u64_at(&k, 0).ok_or_else(|| bad_key(&k))?);
            let t: TrashEntry = dec(&k, &v).map_err(corrupt)?;
            if let Some(lg) = groups.get_mut(&g) {
                lg.trash.insert(t.entry.id, t);
            }
        }
        let next_member = match self.tree.get([NEXT_MEMBER])? {
            Some(v) => dec(&[NEXT_MEMBER], &v).map_err(corrupt)?,
            None => 0,
        };
        Ok(Loaded { groups, next_member })
    }
}

fn bad_key(k: &[u8]) -> TrackerError {
    TrackerError::Corrupt(format!("malformed key {}", hex::encode(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{EventKind, FileKind};

    #[test]
    fn keys_sort_numerically() {
        assert!(key(EVENT, &[1, 255]) < key(EVENT, &[1, 256]));
        assert!(key(EVENT, &[1, u64::MAX]) < key(EVENT, &[2, 0]));
        assert_eq!(u64_at(&key(FILE, &[7, 9]), 1), Some(9));
    }

    #[test]
    fn batch_round_trip_and_event_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let g = GroupId(3);
        let mut w = WriteSet::new();
        w.put_group(g, &GroupRec { name: "g".into(), next_file: 2, next_seq: 4, max_lock_ms: 0 }).unwrap();
        let root = FileEntry {
            id: FileId::ROOT,
            parent: FileId::ROOT,
            name: String::new(),
            kind: FileKind::Dir,
            size: 0,
            mtime: 0,
            mode: 0o755,
            version: Version(0),
            info_hash: None,
            author: MemberId(1),
            owner: Default::default(),
            ctime: 0,
        };
        w.put_file(g, &root).unwrap();
        for s in 1..=3 {
            let ev = Event { seq: Seq(s), at: 0, by: MemberId(1), kind: EventKind::Unlocked { file: FileId(s) } };
            w.put_event(g, &ev).unwrap();
        }
        store.apply(w).unwrap();
        let loaded = store.load().unwrap();
        let lg = &loaded.groups[&g];
        assert_eq!(lg.log, Some((1, 3)));
        assert_eq!(lg.files[&FileId::ROOT], root);
        let evs = store.events(g, 2, 10, 100).unwrap();
        assert_eq!(evs.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![2, 3]);
        assert!(store.events(GroupId(4), 1, 10, 100).unwrap().is_empty());
    }

    fn ev(seq: u64, at: UnixMillis) -> Event {
        Event { seq: Seq(seq), at, by: MemberId(1), kind: EventKind::Unlocked { file: FileId(seq) } }
    }

    fn seqs(evs: &[Event]) -> Vec<u64> {
        evs.iter().map(|e| e.seq.0).collect()
    }

    /// `E` and `R` records read as one log: ranges, limits, bounds, and
    /// pruning that drops a run only whole and never past `to`.
    #[test]
    fn runs_and_single_events_read_as_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let g = GroupId(2);
        let mut w = WriteSet::new();
        for (seq, at) in [(1, 0), (2, 0), (6, 10)] {
            w.put_event(g, &ev(seq, at)).unwrap();
        }
        for run in [[(3, 0), (4, 0), (5, 0)], [(7, 0), (8, 0), (9, 20)]] {
            let mut r = EventRun::default();
            for (seq, at) in run {
                r.push(&ev(seq, at)).unwrap();
            }
            w.put_run(g, &r).unwrap();
        }
        store.apply(w).unwrap();
        assert_eq!(seqs(&store.events(g, 1, 9, 100).unwrap()), (1..=9).collect::<Vec<_>>());
        assert_eq!(seqs(&store.events(g, 4, 7, 100).unwrap()), [4, 5, 6, 7]);
        assert_eq!(seqs(&store.events(g, 0, u64::MAX, 3).unwrap()), [1, 2, 3]);
        assert!(store.events(GroupId(3), 0, u64::MAX, 100).unwrap().is_empty());
        assert_eq!(store.log_bounds(g).unwrap(), Some((1, 9)));

        // Events before 5 ms: 1..=5 (two singles and a whole run); 6 is not.
        let (w, start, more) = store.prune_front(g, 1, 8, 5, 100).unwrap();
        assert_eq!((start, more), (Some(6), false));
        store.apply(w).unwrap();
        assert_eq!(seqs(&store.events(g, 0, u64::MAX, 100).unwrap()), [6, 7, 8, 9]);
        // Everything is old now, but the run 7..=9 reaches past `to` (8).
        let (w, start, _) = store.prune_front(g, 6, 8, 100, 100).unwrap();
        assert_eq!(start, Some(7));
        store.apply(w).unwrap();
        assert_eq!(seqs(&store.events(g, 0, u64::MAX, 100).unwrap()), [7, 8, 9]);
        assert_eq!(store.log_bounds(g).unwrap(), Some((7, 9)));
        // A limit that ends inside a run keeps it.
        let (_, start, more) = store.prune_front(g, 7, 9, 100, 2).unwrap();
        assert_eq!((start, more), (None, true));
    }

    #[test]
    fn entries_and_events_stored_by_protocol_11_still_load() {
        // The layout protocol 11 wrote: no owner, no ctime.
        #[derive(Serialize)]
        struct Old {
            id: FileId,
            parent: FileId,
            name: String,
            kind: crate::proto::FileKind,
            size: u64,
            mtime: UnixMillis,
            mode: u32,
            version: Version,
            info_hash: Option<crate::proto::InfoHash>,
            author: MemberId,
        }
        #[derive(Serialize)]
        enum OldKind {
            FileCreated(Old),
        }
        #[derive(Serialize)]
        struct OldEvent {
            seq: Seq,
            at: UnixMillis,
            by: MemberId,
            kind: OldKind,
        }
        let old = |id: u64| Old {
            id: FileId(id),
            parent: FileId::ROOT,
            name: format!("f{id}"),
            kind: crate::proto::FileKind::File,
            size: 3,
            mtime: 77,
            mode: 0o644,
            version: Version(1),
            info_hash: None,
            author: MemberId(2),
        };
        let e: FileEntry = dec_or_v11::<FileEntry, super::super::legacy::FileEntryV11>(b"k", &enc(&old(5)).unwrap()).unwrap();
        assert_eq!((e.id, e.name.as_str(), e.mtime, e.ctime), (FileId(5), "f5", 77, 77));
        assert_eq!(e.owner, crate::proto::Owner::default(), "no owner: each member shows its mounting user");
        let evs: Vec<OldEvent> =
            (1..=3).map(|s| OldEvent { seq: Seq(s), at: 9, by: MemberId(2), kind: OldKind::FileCreated(old(s)) }).collect();
        let back = dec_events(b"k", &enc(&evs).unwrap()).unwrap();
        assert_eq!(back.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(matches!(&back[2].kind, EventKind::FileCreated(f) if f.name == "f3" && f.ctime == 77));
        let one = dec_event(b"k", &enc(&evs[0]).unwrap()).unwrap();
        assert_eq!(one.seq, Seq(1));
        // Today's records decode as themselves.
        let new = FileEntry { owner: crate::proto::Owner { user: "ana".into(), group: "staff".into() }, ctime: 80, ..e };
        let again: FileEntry = dec_or_v11::<FileEntry, super::super::legacy::FileEntryV11>(b"k", &enc(&new).unwrap()).unwrap();
        assert_eq!(again, new);
    }

}

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
//! | `N` | (nothing)                             | next member id, a floor |
//! | `S` | (nothing)                             | the tracker's 32-byte secret (announce keys) |
//!
//! All the writes of one request go into one [`WriteSet`] applied with
//! `Tree::apply_batch`, which sled recovers atomically after a crash: an
//! event is never on disk without the file-table or lock change it records.
//! Ordinary leases are the one kind of change whose writes wait: their
//! events and `L` records are kept in memory and go, in seq order, in front
//! of the group's next batch or in the committer's before its next flush
//! (see `group.rs`), still in one batch.
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
    Event, FileEntry, FileId, GroupId, LeaseId, MemberId, ProtoError, Seq, UnixMillis, Version, VersionInfo,
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GroupRec {
    pub name: String,
    pub next_file: u64,
    /// A floor for the next seq; see the module docs.
    pub next_seq: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MemberRec {
    pub group: GroupId,
    pub name: String,
    pub secret_hash: [u8; 32],
    pub peer_addr: Option<SocketAddr>,
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
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn clear(&mut self) {
        self.ops.clear();
    }
    /// Appends `other`'s writes after this one's.
    pub fn append(&mut self, other: WriteSet) {
        self.ops.extend(other.ops);
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
    /// First and last seq still in the log, if any.
    pub log: Option<(u64, u64)>,
}

#[derive(Clone)]
pub(crate) struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, TrackerError> {
        let open_err = |source| TrackerError::Open { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(sled::Error::Io(e)))?;
        let db = sled::Config::new().path(dir).open().map_err(open_err)?;
        let tree = db.open_tree(TREE).map_err(open_err)?;
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
            Some(v) => Ok(Some(dec(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Raw keys of invites that expired before `now`, at most `limit`.
    pub fn expired_invites(&self, now: UnixMillis, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix([INVITE]) {
            let (k, v) = kv?;
            let rec: InviteRec = dec(&k, &v)?;
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
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        for kv in self.tree.range(key(EVENT, &[g.0, from])..=key(EVENT, &[g.0, to])) {
            let (k, v) = kv?;
            out.push(dec(&k, &v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn log_bounds(&self, g: GroupId) -> Result<Option<(u64, u64)>, StoreError> {
        let range = key(EVENT, &[g.0, 0])..=key(EVENT, &[g.0, u64::MAX]);
        let first = self.tree.range(range.clone()).next().transpose()?;
        let last = self.tree.range(range).next_back().transpose()?;
        match (first, last) {
            (Some((f, _)), Some((l, _))) => Ok(u64_at(&f, 1).zip(u64_at(&l, 1))),
            _ => Ok(None),
        }
    }

    /// Reads groups, members, file tables and locks (not the event log,
    /// only its bounds). Writes nothing.
    pub fn load(&self) -> Result<Loaded, TrackerError> {
        let corrupt = |e: StoreError| TrackerError::Corrupt(e.to_string());
        let mut groups = BTreeMap::new();
        for kv in self.tree.scan_prefix([GROUP]) {
            let (k, v) = kv?;
            let g = GroupId(u64_at(&k, 0).ok_or_else(|| bad_key(&k))?);
            let rec: GroupRec = dec(&k, &v).map_err(corrupt)?;
            let log = self.log_bounds(g).map_err(corrupt)?;
            groups.insert(
                g,
                LoadedGroup {
                    rec,
                    members: BTreeMap::new(),
                    files: BTreeMap::new(),
                    locks: BTreeMap::new(),
                    versions: BTreeMap::new(),
                    log,
                },
            );
        }
        for kv in self.tree.scan_prefix([MEMBER]) {
            let (k, v) = kv?;
            let m = MemberId(u64_at(&k, 0).ok_or_else(|| bad_key(&k))?);
            let rec: MemberRec = dec(&k, &v).map_err(corrupt)?;
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
            let e: FileEntry = dec(&k, &v).map_err(corrupt)?;
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
        w.put_group(g, &GroupRec { name: "g".into(), next_file: 2, next_seq: 4 }).unwrap();
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
}

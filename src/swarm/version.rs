//! One version of a file as the swarm holds it: its geometry, which pieces are
//! here, and whether librqbit has it live.
//!
//! A version is in exactly one of two engine states:
//! - **dormant**: not in librqbit at all. Costs no task, timer, socket or
//!   descriptor; its verified pieces are the `haves` saved with it. Reads of
//!   those pieces are `pread`s on the object file.
//! - **live**: a librqbit torrent (seeding, fetching, or serving reads). Its
//!   verified pieces are librqbit's.
//!
//! Independently, `complete` is set once every piece is verified and is never
//! unset while the version lives; `background` says that all of it should be
//! fetched (the fetch queue takes it live until it is complete).
//!
//! Invariants:
//! - Waking (dormant → live) and sleeping (live → dormant) hold `transition`,
//!   so they never interleave.
//! - A live version is put to sleep only with no `users`: every read that
//!   holds a librqbit handle (an open `FileStream`, a lingering one) holds a
//!   [`LiveGuard`], which counts as a user.
//! - The haves of a dormant version were dumped from librqbit (or written at
//!   publish) before it left the session, and are saved under `meta/`, so
//!   the next wake resumes without re-hashing.
//!
//! On disk, under the cache directory:
//! - `meta/<ih>.torrent`: the minimal .torrent (info dict only);
//! - `meta/<ih>.have`: the have-bitfield (MSB first) as of the last sleep;
//!   missing means no piece.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use librqbit::ManagedTorrent;
use parking_lot::Mutex;
use titorrent_tracker::proto::InfoHash;
use tokio::sync::{watch, Semaphore};

use super::metainfo;
use crate::model::Stripe;
use super::stream_read::{Kick, Lingering};
use super::SwarmError;

/// Open `FileStream`s per version, so that reads waiting on a version no
/// online member has cannot take every stream.
pub(super) const MAX_OPEN_STREAMS_PER_VERSION: usize = 8;

/// Where a version is (see the module doc).
pub(super) enum Engine {
    Dormant { haves: Vec<u8> },
    Live(Arc<ManagedTorrent>),
}

/// What the sweeper last saw of a live version.
pub(super) struct Seen {
    /// When it last moved bytes or had a user.
    pub last_active: Instant,
    /// librqbit's (uploaded, fetched) byte counters then.
    pub counters: (u64, u64),
    /// When a want for it was last sent to the other members.
    pub last_want: Option<Instant>,
    /// When its fetch (background) last made progress.
    pub last_progress: Instant,
}

pub(super) struct Version {
    pub ih: InfoHash,
    pub size: u64,
    pub piece_length: u64,
    pub n_pieces: u64,
    /// The object file librqbit seeds and downloads into.
    pub path: PathBuf,
    /// The minimal .torrent librqbit is given when the version wakes.
    pub torrent: Bytes,
    complete: AtomicBool,
    done: watch::Sender<bool>,
    pub engine: Mutex<Engine>,
    /// Held while waking or putting to sleep.
    pub transition: tokio::sync::Mutex<()>,
    pub background: AtomicBool,
    /// Where its background fetch starts (see `Stripe`).
    pub stripe: Mutex<Stripe>,
    /// (end of the last read, bytes read back to back up to it): a reader
    /// going through the file in order (see `Inner::note_read`).
    pub sequential: Mutex<(u64, u64)>,
    users: AtomicUsize,
    pub seen: Mutex<Seen>,
    /// Read-only descriptor of the object file for `pread`s; dropped when
    /// the version goes to sleep.
    pub file: Mutex<Option<Arc<File>>>,
    /// When a stalled read last restarted the peer connections.
    pub kick: Mutex<Kick>,
    /// Bounds this version's open `FileStream`s; closed by `forget`.
    pub streams: Arc<Semaphore>,
    /// The stream of the read that finished last, kept open briefly.
    pub lingering: Mutex<Lingering>,
    /// Set by `forget`, for reads still waiting on it.
    pub forgotten: AtomicBool,
    /// Members named as having it (`ensure`), whom a blob fetch asks.
    pub holders: Mutex<Vec<SocketAddr>>,
    /// Held by a read's blob fetch, so that the reads of one small file
    /// ask for it once (`blobs`).
    pub blob_fetch: tokio::sync::Mutex<()>,
}

impl Version {
    /// A dormant version with the given haves (clipped or zero-padded to the
    /// right length).
    pub fn new(ih: InfoHash, checked: &metainfo::Checked, objects: &Path, mut haves: Vec<u8>) -> Version {
        let piece_length = u64::from(checked.piece_length);
        let n_pieces = checked.size.div_ceil(piece_length);
        haves.resize(n_pieces.div_ceil(8) as usize, 0);
        let complete = all_set(&haves, n_pieces);
        let now = Instant::now();
        Version {
            ih,
            size: checked.size,
            piece_length,
            n_pieces,
            path: objects.join(ih.to_string()).join(&checked.name),
            torrent: Bytes::from(checked.minimal.clone()),
            complete: AtomicBool::new(complete),
            done: watch::Sender::new(complete),
            engine: Mutex::new(Engine::Dormant { haves }),
            transition: tokio::sync::Mutex::new(()),
            background: AtomicBool::new(false),
            stripe: Mutex::new(Stripe::WHOLE),
            sequential: Mutex::new((0, 0)),
            users: AtomicUsize::new(0),
            seen: Mutex::new(Seen {
                last_active: now,
                counters: (0, 0),
                last_want: None,
                last_progress: now,
            }),
            file: Mutex::new(None),
            kick: Mutex::new(Kick::default()),
            streams: Arc::new(Semaphore::new(MAX_OPEN_STREAMS_PER_VERSION)),
            lingering: Mutex::new(Lingering::default()),
            forgotten: AtomicBool::new(false),
            holders: Mutex::new(Vec::new()),
            blob_fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds members that have it to `holders` (at most 16 are kept).
    pub fn add_holders(&self, peers: &[SocketAddr]) {
        let mut h = self.holders.lock();
        for p in peers {
            if !h.contains(p) && h.len() < 16 {
                h.push(*p);
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Records that every piece is verified, waking `wait_complete`ers.
    pub fn mark_complete(&self) {
        if !self.complete.swap(true, Ordering::AcqRel) {
            self.done.send_replace(true);
        }
    }

    /// Resolves once the version is complete.
    pub fn completion(&self) -> watch::Receiver<bool> {
        self.done.subscribe()
    }

    pub fn users(&self) -> usize {
        self.users.load(Ordering::Acquire)
    }

    /// The live handle, counted as a user, if the version is live.
    pub fn try_guard(self: &Arc<Self>) -> Option<LiveGuard> {
        let e = self.engine.lock();
        match &*e {
            Engine::Live(h) => {
                self.users.fetch_add(1, Ordering::AcqRel);
                Some(LiveGuard {
                    v: self.clone(),
                    handle: h.clone(),
                })
            }
            Engine::Dormant { .. } => None,
        }
    }

    /// The live handle without counting a user (for the sweeper and state
    /// queries that do not keep it).
    pub fn live_handle(&self) -> Option<Arc<ManagedTorrent>> {
        match &*self.engine.lock() {
            Engine::Live(h) => Some(h.clone()),
            Engine::Dormant { .. } => None,
        }
    }

    /// The haves of a dormant version.
    pub fn dormant_haves(&self) -> Option<Vec<u8>> {
        match &*self.engine.lock() {
            Engine::Dormant { haves } => Some(haves.clone()),
            Engine::Live(_) => None,
        }
    }

    /// Length of piece `i`.
    pub fn piece_len(&self, i: u64) -> u64 {
        if i + 1 == self.n_pieces {
            self.size - i * self.piece_length
        } else {
            self.piece_length
        }
    }

    /// Bytes covered by the set bits of `haves`.
    pub fn bytes_in(&self, haves: &[u8]) -> u64 {
        (0..self.n_pieces)
            .filter(|&i| bit(haves, i))
            .map(|i| self.piece_len(i))
            .sum()
    }

    /// Whether `haves` covers every piece of `start..end` (`end > start`).
    pub fn covers(&self, haves: &[u8], start: u64, end: u64) -> bool {
        (start / self.piece_length..=(end - 1) / self.piece_length).all(|i| bit(haves, i))
    }

    pub fn all_in(&self, haves: &[u8]) -> bool {
        all_set(haves, self.n_pieces)
    }

    /// The read-only descriptor for `pread`s, opened on first use.
    pub fn reader(&self) -> io::Result<Arc<File>> {
        let mut g = self.file.lock();
        if let Some(f) = &*g {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(&self.path)?);
        *g = Some(f.clone());
        Ok(f)
    }
}

/// A live version's librqbit handle, held by a read: the version does not
/// go to sleep while one exists.
pub(super) struct LiveGuard {
    v: Arc<Version>,
    pub handle: Arc<ManagedTorrent>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.v.seen.lock().last_active = Instant::now();
        self.v.users.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bit `i` of an MSB-first bitfield (BitTorrent's order).
pub(super) fn bit(bits: &[u8], i: u64) -> bool {
    bits.get((i / 8) as usize)
        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

fn all_set(bits: &[u8], n: u64) -> bool {
    (0..n).all(|i| bit(bits, i))
}

/// `n` one-bits, MSB first, the spare bits of the last byte zero.
pub(super) fn full_bitfield(n_pieces: u64) -> Vec<u8> {
    let mut bits = vec![0xffu8; n_pieces.div_ceil(8) as usize];
    let spare = (bits.len() as u64 * 8 - n_pieces) as u32;
    if let Some(last) = bits.last_mut() {
        *last = 0xffu8.checked_shl(spare).unwrap_or(0);
    }
    bits
}

/// The `meta/` directory: what a dormant version needs to wake.
#[derive(Clone)]
pub(super) struct MetaStore {
    dir: PathBuf,
}

impl MetaStore {
    pub fn new(dir: PathBuf) -> MetaStore {
        MetaStore { dir }
    }

    fn torrent_path(&self, ih: InfoHash) -> PathBuf {
        self.dir.join(format!("{ih}.torrent"))
    }

    fn have_path(&self, ih: InfoHash) -> PathBuf {
        self.dir.join(format!("{ih}.have"))
    }

    pub fn save_torrent(&self, ih: InfoHash, minimal: &[u8]) -> io::Result<()> {
        crate::atomic_file::write(&self.torrent_path(ih), minimal, false)
    }

    pub fn save_haves(&self, ih: InfoHash, haves: &[u8]) -> io::Result<()> {
        crate::atomic_file::write(&self.have_path(ih), haves, false)
    }

    /// A version saved here, dormant, if there is one. Its haves count only
    /// if its object file is still there.
    pub fn load(&self, ih: InfoHash, objects: &Path) -> Result<Option<Version>, SwarmError> {
        let torrent = match std::fs::read(self.torrent_path(ih)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let checked = metainfo::check(ih, &torrent)?;
        let haves = match std::fs::read(self.have_path(ih)) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut v = Version::new(ih, &checked, objects, haves);
        if !v.path.exists() {
            v = Version::new(ih, &checked, objects, Vec::new());
        }
        Ok(Some(v))
    }

    pub fn remove(&self, ih: InfoHash) -> io::Result<()> {
        for p in [self.torrent_path(ih), self.have_path(ih)] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_bitfield_has_exactly_n_ones() {
        for n in [1u64, 7, 8, 9, 16, 17, 256] {
            let b = full_bitfield(n);
            assert_eq!(b.len() as u64, n.div_ceil(8));
            assert_eq!(b.iter().map(|x| x.count_ones() as u64).sum::<u64>(), n);
            assert!(all_set(&b, n));
            assert!(!bit(&b, n));
        }
    }

    #[test]
    fn meta_roundtrip_and_missing_object_means_no_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let store = MetaStore::new(dir.path().join("meta"));
        std::fs::create_dir_all(dir.path().join("meta")).unwrap();
        // 3 pieces of 256 KiB, the last one short.
        let size = 2 * 262144 + 10;
        let info = metainfo::info_dict("f.bin", size, 262144, &[0u8; 60], None);
        let ih = InfoHash(metainfo::sha1(&info));
        let checked = metainfo::check(ih, &metainfo::torrent_file(&info, 0)).unwrap();

        assert!(store.load(ih, &objects).unwrap().is_none());
        store.save_torrent(ih, &checked.minimal).unwrap();
        store.save_haves(ih, &[0b1010_0000]).unwrap();
        // No object file yet: the saved haves do not count.
        let v = store.load(ih, &objects).unwrap().unwrap();
        assert_eq!(v.dormant_haves().unwrap(), vec![0]);

        std::fs::create_dir_all(v.path.parent().unwrap()).unwrap();
        std::fs::write(&v.path, b"x").unwrap();
        let v = store.load(ih, &objects).unwrap().unwrap();
        let haves = v.dormant_haves().unwrap();
        assert_eq!((v.n_pieces, v.piece_len(2)), (3, 10));
        assert_eq!(v.bytes_in(&haves), 262144 + 10);
        assert!(v.covers(&haves, 0, 262144));
        assert!(!v.covers(&haves, 0, 262145));
        assert!(!v.is_complete());

        store.save_haves(ih, &full_bitfield(3)).unwrap();
        assert!(store.load(ih, &objects).unwrap().unwrap().is_complete());
        store.remove(ih).unwrap();
        assert!(store.load(ih, &objects).unwrap().is_none());
    }
}

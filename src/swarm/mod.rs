//! Everything librqbit: the BitTorrent session, building and seeding edit torrents, on-demand ranged reads.
//!
//! Layout under `cache_dir`:
//! - `objects/<info hash hex>/<name>`: the content of one version (complete
//!   or partial), which is the file librqbit seeds and downloads into;
//! - `meta/`: what a version needs to wake (see `version`);
//! - `session/`: librqbit's JSON session persistence: the torrents live in
//!   it (restored on the next start) and one have-bitfield per torrent
//!   (`<hex>.bitv`, its fastresume data).
//!
//! A version is live in librqbit only while it is used: read, fetched in
//! the background, just published (while fewer than `PUBLISH_LIVE` are
//! live: a burst's later files wait dormant), or wanted by another member; otherwise
//! it is dormant and costs nothing but its files (`version`, `live`). So a
//! group of 10,000 files is not 10,000 torrents.
//!
//! What a version offers, whatever its engine state:
//! - **complete** (published here, or every piece fetched): `local_path` is
//!   `Some`, reads are `pread`s on the object file;
//! - **background**: the fetch queue takes it live until every piece is
//!   here, at most `MAX_FETCHING` at once; reads ask for theirs first;
//! - **on demand**: only the pieces reads ask for are fetched. A later
//!   `ensure(.., background = true)` queues it for the whole file;
//! - **failed**: librqbit stopped it (e.g. a full disk); reads fail, the next
//!   `ensure` restarts it.
//!
//! Reads of ranges not local yet go through librqbit `FileStream`s
//! (`stream_read`), which make librqbit ask for those pieces first.
//!
//! A version of at most [`SMALL`] bytes never needs librqbit between
//! members: it is published dormant and fetched whole, many to a request,
//! over a member link (`blobs`); BitTorrent is its fallback and what
//! standard clients get through an export.
//!
//! Peers are the group's members only: no DHT, LSD, UPnP or public tracker,
//! and every connection is mutual TLS between members' keys (`links`).
//! Torrents learn member addresses from `ensure` and from a tracker on
//! loopback that `add_peers` / `set_peers` feed (`peer_feed`); a member
//! that needs a version others hold asleep sends a want (`set_want_hook`),
//! and they wake it and dial back (`wanted`).
//!
//! `forget` removes a version in any state, files included.
//!
//! Every librqbit 9.1 workaround here is listed, with where it lives and the
//! test that shows it is still needed, in `QUIRKS.md` beside this file.

mod blobs;
mod engine;
mod error;
mod exports;
mod greedy;
mod links;
mod live;
mod metainfo;
mod peer_feed;
mod port;
mod reuse;
mod stream_read;
mod version;

pub use blobs::SMALL;
pub use error::SwarmError;
pub use links::LinkError;
pub use live::{DEFAULT_IDLE, PUBLISH_LIVE};
pub use metainfo::{piece_length_for, MAX_PIECES, MIN_PIECE_LENGTH};

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use librqbit::api::TorrentIdOrHash;
use librqbit::dht::Id20;
use librqbit::{
    Api, ManagedTorrent, ManagedTorrentState, Session,
};
use parking_lot::{Mutex, RwLock};
use titorrent_tracker::proto::{Fingerprint, InfoHash, MemberId, MemberInfo};
use titorrent_tracker::tls::Identity;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

pub use crate::model::{Delta, Fetch, Stripe};
use error::{engine, engine_ref};
use live::FetchQueue;
use peer_feed::PeerFeed;
use version::{full_bitfield, MetaStore, Version};

/// librqbit's blocking-work permits (`SessionOptions::runtime_worker_threads`).
/// Piece writes and hash checks take one each while they run.
const DISK_PERMITS: usize = 48;
/// Open `FileStream`s at once. Each holds one of `DISK_PERMITS` for its whole
/// life, and a stream waits for pieces whose writes need permits too: with
/// this many streams at most, 16 permits are always left for the writes.
const MAX_OPEN_STREAMS: usize = 32;
/// `pread`s on object files at once (each on a blocking thread).
const MAX_DISK_READS: usize = 32;
/// librqbit's rate limiter asks for one 16 KiB block at a time and fails if
/// that exceeds its one-second burst; keep limits well above it.
const MIN_RATE_LIMIT_BPS: u32 = 64 * 1024;

/// How to start a swarm.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// This member's key: its peer links are TLS with it.
    pub identity: Arc<Identity>,
    /// Object store and librqbit's session state. Must be valid UTF-8 (librqbit
    /// takes output folders as strings).
    pub cache_dir: PathBuf,
    /// Where to accept peer connections, e.g. `0.0.0.0:0` (any port) or
    /// `127.0.0.1:0` in tests.
    pub listen: SocketAddr,
    /// Bytes per second, all torrents together; at least 64 KiB/s if set.
    pub upload_limit_bps: Option<u32>,
    pub download_limit_bps: Option<u32>,
    /// How long a version nobody uses stays live before it goes dormant.
    pub idle: Duration,
    /// Where exports are kept across restarts (`None`: they end with the
    /// session).
    pub exports_file: Option<PathBuf>,
}

impl SwarmConfig {
    pub fn new(identity: Arc<Identity>, cache_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        SwarmConfig {
            identity,
            cache_dir: cache_dir.into(),
            listen,
            upload_limit_bps: None,
            download_limit_bps: None,
            idle: live::DEFAULT_IDLE,
            exports_file: None,
        }
    }
}

/// A version this member published and now seeds.
#[derive(Clone, Debug)]
pub struct Published {
    pub info_hash: InfoHash,
    /// The bencoded .torrent, for the tracker manager's file table.
    pub torrent: Vec<u8>,
    pub size: u64,
}

/// How this member asks the others to wake a version (see `set_want_hook`).
pub type WantHook = Box<dyn Fn(InfoHash) + Send + Sync>;

/// A handle on this member's BitTorrent session. Cheap to clone.
#[derive(Clone)]
pub struct Swarm {
    inner: Arc<Inner>,
}

struct Inner {
    session: Arc<Session>,
    /// Only for `api_dump_haves`: librqbit exposes a torrent's have-bitfield
    /// through its `Api` facade alone.
    api: Api,
    objects: PathBuf,
    session_dir: PathBuf,
    meta: MetaStore,
    /// Versions this run has looked at (the others are only on disk).
    versions: RwLock<HashMap<InfoHash, Arc<Version>>>,
    /// Torrent ids we hand librqbit. Its own choice (persistence's `next_id`)
    /// races between concurrent adds, and a clash makes `add_torrent` answer
    /// `AlreadyManaged` with the *other* torrent.
    next_id: AtomicUsize,
    streams: Arc<Semaphore>,
    disk_reads: Semaphore,
    feed: Arc<PeerFeed>,
    links: Arc<links::Links>,
    key: Fingerprint,
    fetch_queue: Mutex<FetchQueue>,
    fetch_kick: Arc<Notify>,
    /// Small versions waiting for a blob fetch, and links kept for them.
    blobs: blobs::Queue,
    /// The versions live in librqbit now (changed by `Inner::set_engine`
    /// and `Inner::sleep`), so that the sweeper looks at those alone.
    live: Mutex<HashSet<InfoHash>>,
    /// Held while a new version is filled from the one it names as
    /// `similar` (`reuse`), and by any other ensure of such a version.
    filling: tokio::sync::Mutex<()>,
    want_hook: OnceLock<WantHook>,
    idle: Duration,
    /// The public peer port (the TLS door; librqbit itself is on loopback).
    listen: SocketAddr,
    /// The runtime the session runs on, for tasks spawned from elsewhere.
    rt: tokio::runtime::Handle,
    /// The session's: background tasks end with it.
    cancel: CancellationToken,
    shut: AtomicBool,
}

fn id20(ih: InfoHash) -> Id20 {
    Id20::new(ih.0)
}

fn join_error(e: tokio::task::JoinError) -> SwarmError {
    SwarmError::Io(io::Error::other(format!("blocking task failed: {e}")))
}

impl Swarm {
    /// Starts the session: listens on `cfg.listen`; the versions live when
    /// the previous run stopped come back live (seeds resume without
    /// re-hashing), the others stay dormant on disk until used.
    pub async fn start(cfg: SwarmConfig) -> Result<Swarm, SwarmError> {
        let objects = cfg.cache_dir.join("objects");
        let session_dir = cfg.cache_dir.join("session");
        let meta_dir = cfg.cache_dir.join("meta");
        if objects.to_str().is_none() {
            return Err(SwarmError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the cache directory must be valid UTF-8",
            )));
        }
        for d in [&objects, &session_dir, &meta_dir] {
            tokio::fs::create_dir_all(d).await?;
        }

        let feed = PeerFeed::bind().await?;
        let cancel = CancellationToken::new();
        let key = cfg.identity.fingerprint();
        let (links, doors) = links::Links::bind(cfg.identity.clone(), cfg.listen, exports::ExportsFile(cfg.exports_file.clone()), cancel.clone()).await?;
        let listen = links::Links::public_addr(&doors)?;
        let opts = engine::session_options(&cfg, feed.urls(), &session_dir, links.proxy_url(&doors)?, cancel.clone());
        let session = Session::new_with_opts(objects.clone(), opts)
            .await
            .map_err(engine)?;
        let engine_addr = session
            .listen_addr()
            .ok_or_else(|| SwarmError::Engine("the session is not listening".into()))?;
        let links_for_spawn = (links.clone(), doors, engine_addr);
        feed.set_own(listen);
        feed.spawn(&tokio::runtime::Handle::current(), &cancel);

        let next_id = session
            .with_torrents(|it| it.map(|(id, _)| id).max())
            .map_or(0, |m| m + 1);
        let inner = Arc::new(Inner {
            api: Api::new(session.clone(), None),
            session,
            objects,
            session_dir,
            meta: MetaStore::new(meta_dir),
            versions: RwLock::default(),
            next_id: AtomicUsize::new(next_id),
            streams: Arc::new(Semaphore::new(MAX_OPEN_STREAMS)),
            disk_reads: Semaphore::new(MAX_DISK_READS),
            feed: feed.clone(),
            links,
            key,
            fetch_queue: Mutex::default(),
            fetch_kick: Arc::new(Notify::new()),
            blobs: blobs::Queue::default(),
            live: Mutex::default(),
            filling: tokio::sync::Mutex::new(()),
            want_hook: OnceLock::new(),
            idle: cfg.idle,
            listen,
            rt: tokio::runtime::Handle::current(),
            cancel,
            shut: AtomicBool::new(false),
        });
        inner.adopt_restored()?;
        engine::spawn_links(&inner, links_for_spawn);
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        feed.set_is_complete(Box::new(move |ih| {
            weak.upgrade()
                .and_then(|inner| inner.versions.read().get(&ih).map(|v| v.is_complete()))
                .unwrap_or(false)
        }));
        inner.spawn_upkeep();
        info!(%listen, live = inner.live_count(), "swarm started");
        Ok(Swarm { inner })
    }

    /// This member's key fingerprint (what other members pin).
    pub fn key(&self) -> Fingerprint {
        self.inner.key
    }

    pub fn listen_port(&self) -> u16 {
        self.inner.listen.port()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen
    }

    /// How this member asks the other members to wake a version it needs
    /// (the daemon sends it through the tracker manager). Set once.
    pub fn set_want_hook(&self, hook: WantHook) {
        let _ = self.inner.want_hook.set(hook);
    }

    /// Another member, listening at `peer`, wants a version: if any of it is
    /// here, it is woken and `peer` dialled. Returns at once.
    pub fn wanted(&self, info_hash: InfoHash, peer: SocketAddr) {
        if self.inner.check_running().is_err() {
            return;
        }
        let inner = self.inner.clone();
        spawn_task(&self.inner.rt, "wanted", &self.inner.cancel, async move {
            inner.on_wanted(info_hash, peer).await;
        });
    }

    /// Versions live in librqbit now (the others are dormant).
    pub fn live_count(&self) -> usize {
        self.inner.live_count()
    }

    /// Puts every live version nobody uses to sleep now, as the sweeper does
    /// after they are idle for a while. Returns how many slept.
    pub async fn sleep_idle(&self) -> usize {
        let live = self.inner.live_versions();
        let mut n = 0;
        for v in live {
            let fetching = v.background.load(Ordering::Acquire) && !v.is_complete();
            if !fetching && self.inner.sleep(&v).await {
                n += 1;
            }
        }
        n
    }

    /// Hashes a finished file (a staging copy the caller will not touch
    /// again), builds its private single-file torrent, moves the file into the
    /// object store and seeds it. The pieces are not hashed a second time:
    /// fastresume data saying "all pieces present" is written before the
    /// torrent is added, and librqbit only spot-checks a few pieces of it.
    ///
    /// If this very content is already complete here, the staging file is
    /// removed and the existing version returned.
    pub async fn publish(&self, staging: &Path, name: &str) -> Result<Published, SwarmError> {
        self.publish_edit(staging, name, None).await
    }

    /// [`Self::publish`] of an edit of `delta.base` whose bytes outside
    /// `delta.dirty` are the base's: those pieces keep the base's hashes
    /// (only the dirty ones are read), with the base's piece length when it
    /// still fits (`metainfo::piece_length_after`), and the torrent names
    /// the base as `similar` (BEP 38) so members fill the new version from
    /// their copy of it. A base this swarm does not know is hashed whole.
    pub async fn publish_edit(&self, staging: &Path, name: &str, delta: Option<Delta>) -> Result<Published, SwarmError> {
        self.inner.check_running()?;
        metainfo::check_name(name)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let reuse = delta.and_then(|d| {
            let base = self.inner.lookup(d.base).ok()?;
            let c = metainfo::check(d.base, &base.torrent).ok()?;
            Some(metainfo::Reuse { base: d.base, base_size: c.size, piece_length: c.piece_length, pieces: c.pieces, dirty: d.dirty })
        });
        let built = {
            let (staging, name) = (staging.to_owned(), name.to_owned());
            tokio::task::spawn_blocking(move || metainfo::build_from(&staging, &name, now, reuse.as_ref()))
                .await
                .map_err(join_error)??
        };
        let n_pieces = built.size.div_ceil(u64::from(built.piece_length));
        debug!(ih = %built.info_hash, hashed = built.hashed, pieces = n_pieces, "hashed the edit");
        let ih = built.info_hash;
        let published = Published {
            info_hash: ih,
            torrent: built.torrent,
            size: built.size,
        };

        if let Ok(v) = self.inner.lookup(ih) {
            if v.is_complete() || self.inner.range_local(&v, 0, v.size) {
                return Ok(published);
            }
            // We hold all of it while the session holds part: start over as a seed.
            self.forget(ih).await?;
        }

        let checked = metainfo::check(ih, &published.torrent)?;
        let dir = self.inner.object_dir(ih);
        let dest = dir.join(name);
        {
            let staging = staging.to_owned();
            let dest = dest.clone();
            let inner = self.inner.clone();
            let minimal = checked.minimal.clone();
            tokio::task::spawn_blocking(move || -> io::Result<()> {
                std::fs::create_dir_all(&dir)?;
                link_file(&staging, &dest)?;
                inner.meta.save_torrent(ih, &minimal)?;
                inner.meta.save_haves(ih, &full_bitfield(n_pieces))
            })
            .await
            .map_err(join_error)??;
        }
        let v = self.inner.register(Version::new(ih, &checked, &self.inner.objects, full_bitfield(n_pieces)));
        if built.size <= blobs::SMALL {
            // The others fetch it whole from the object file (`blobs`).
            debug!(%ih, size = built.size, "published, served as a blob");
            return Ok(published);
        }
        if self.inner.live_count() >= live::PUBLISH_LIVE {
            // A burst: the others' wants wake it (see `PUBLISH_LIVE`).
            debug!(%ih, size = built.size, "published, dormant until wanted");
            return Ok(published);
        }
        // Live at once: with background replication the others fetch it now.
        let g = self.inner.wake(&v, Vec::new()).await?;
        // Seeding starts once the spot check is done; surface its failure here.
        g.handle.wait_until_initialized().await.map_err(engine)?;
        if self.inner.haves_of(&g.handle).is_some_and(|h| !v.all_in(&h)) {
            warn!(%ih, "fastresume data was rejected; librqbit re-checked the published file");
        }
        debug!(%ih, size = built.size, "published");
        Ok(published)
    }

    /// Makes a version known: checks that `torrent`'s info dict hashes to
    /// `info_hash` (else `HashMismatch`, nothing added) and records it, stored
    /// under the object store, with `peers` to dial. Idempotent.
    ///
    /// `Fetch::Background` queues every piece for fetching, its stripe
    /// first; `OnDemand` fetches only the pieces reads ask for (nothing goes
    /// live until a read). A version ensured both ways is fetched in the
    /// background. A version that failed (see the module doc) is restarted.
    pub async fn ensure(
        &self,
        info_hash: InfoHash,
        torrent: &[u8],
        peers: Vec<SocketAddr>,
        fetch: Fetch,
    ) -> Result<(), SwarmError> {
        self.inner.check_running()?;
        let checked = metainfo::check(info_hash, torrent)?;
        self.inner.feed.add(&peers);
        let v = match self.inner.lookup(info_hash) {
            Ok(v) => v,
            Err(SwarmError::NotFound) => self.inner.add_new(info_hash, &checked).await?,
            Err(e) => return Err(e),
        };
        v.add_holders(&peers);
        if v.is_complete() {
            return Ok(());
        }
        if let Some(h) = v.live_handle() {
            let (failed, paused) = h.with_state(|s| {
                (
                    matches!(s, ManagedTorrentState::Error(_)),
                    matches!(s, ManagedTorrentState::Paused(_)),
                )
            });
            if failed || paused {
                info!(%info_hash, failed, "resuming a stopped version");
                self.inner.session.unpause(&h).await.map_err(engine)?;
            }
        }
        if let Fetch::Background(stripe) = fetch {
            *v.stripe.lock() = stripe;
            if v.size <= blobs::SMALL && v.live_handle().is_none() {
                self.inner.queue_small(&v);
            } else {
                self.inner.queue_fetch(&v);
            }
        }
        Ok(())
    }

    /// A member is known or changed: its key may open links to this one
    /// and, when it is online, torrents dial its address (within a few
    /// seconds); an offline member is no longer dialled.
    pub fn learn_member(&self, m: &MemberInfo) {
        self.inner.links.learn(m);
        if let Some(a) = m.peer_addr {
            if m.online {
                self.inner.feed.add(&[a]);
            } else {
                self.inner.feed.remove(a);
            }
        }
    }

    /// Serves a version to standard BitTorrent clients for `ttl` (see
    /// `links`); returns the export port and when the export ends.
    pub fn export(&self, info_hash: InfoHash, ttl: Duration) -> (SocketAddr, SystemTime) {
        self.inner.links.export(info_hash, ttl)
    }

    /// Ends an export now (`false` if there was none).
    pub fn unexport(&self, info_hash: InfoHash) -> bool {
        self.inner.links.unexport(info_hash)
    }

    /// Where and until when a version is exported.
    pub fn exported(&self, info_hash: InfoHash) -> Option<(SocketAddr, SystemTime)> {
        self.inner.links.exported(info_hash)
    }

    /// Every version exported now, with the export port's address and
    /// when each export ends.
    pub fn exports(&self) -> Vec<(InfoHash, SocketAddr, SystemTime)> {
        let addr = self.inner.links.export_addr();
        self.inner.links.exports().into_iter().map(|(ih, until)| (ih, addr, until)).collect()
    }

    /// A member left or was removed: its key is refused from now on and its
    /// open links are cut.
    pub fn forget_member(&self, id: MemberId, addr: Option<SocketAddr>) {
        self.inner.links.forget(id);
        if let Some(a) = addr {
            self.inner.feed.remove(a);
        }
    }

    /// Changes the session's rate limits (bytes per second, `None` = unlimited).
    pub fn set_rate_limits(&self, upload_bps: Option<u32>, download_bps: Option<u32>) {
        let limit = |bps: Option<u32>| bps.and_then(|b| NonZeroU32::new(b.max(MIN_RATE_LIMIT_BPS)));
        let r = &self.inner.session.ratelimits;
        r.set_upload_bps(limit(upload_bps));
        r.set_download_bps(limit(download_bps));
    }

    /// Reads `len` bytes at `offset` (fewer only at the end of the file).
    /// Returns as soon as the pieces covering the range are verified.
    ///
    /// Ranges already local are `pread` from the object file, dormant or
    /// not. Otherwise the version wakes and a librqbit `FileStream` asks for
    /// the range's pieces first and waits for them. The stream then stays
    /// open for `LINGER` (see `linger`), for the next read of the version to
    /// reuse; at most `MAX_OPEN_STREAMS` are open at once
    /// (`MAX_OPEN_STREAMS_PER_VERSION` per version). A read that sees no
    /// data arrive for `STALL_CHECK` redials the version's peers (see
    /// `Inner::kick`). There is no timeout: a range no online member has
    /// waits until one comes online. Dropping the future cancels the read
    /// cleanly.
    pub async fn read(
        &self,
        info_hash: InfoHash,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, SwarmError> {
        let v = self.inner.lookup(info_hash)?;
        if offset >= v.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + u64::from(len)).min(v.size);
        self.inner.note_read(&v, offset, end);
        if self.inner.range_local(&v, offset, end) {
            return self.inner.pread(&v, offset, end).await;
        }
        if v.size <= blobs::SMALL && v.live_handle().is_none() && self.inner.fetch_small_now(&v).await {
            return self.inner.pread(&v, offset, end).await;
        }
        if let Some(e) = v.live_handle().and_then(|h| state_error(&h)) {
            return Err(e);
        }
        self.inner.read_streamed(&v, offset, end).await
    }

    /// `len` bytes at `offset` if every piece under them is here (fewer only
    /// at the end of the file), read on the calling thread; `None` if some
    /// piece is missing or the version is unknown.
    pub fn read_local(&self, info_hash: InfoHash, offset: u64, len: u32) -> Option<Vec<u8>> {
        let v = self.inner.lookup(info_hash).ok()?;
        if offset >= v.size || len == 0 {
            return Some(Vec::new());
        }
        let end = (offset + u64::from(len)).min(v.size);
        self.inner.note_read(&v, offset, end);
        if !self.inner.range_local(&v, offset, end) {
            return None;
        }
        let file = v.reader().ok()?;
        let mut buf = vec![0u8; (end - offset) as usize];
        file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }

    /// The object file of a version, once every piece of it is here.
    pub fn local_path(&self, info_hash: InfoHash) -> Option<PathBuf> {
        let v = self.inner.lookup(info_hash).ok()?;
        self.inner.range_local(&v, 0, v.size).then(|| v.path.clone())
    }

    /// (bytes verified here, total size) of a version this swarm knows.
    pub fn progress(&self, info_hash: InfoHash) -> Option<(u64, u64)> {
        let v = self.inner.lookup(info_hash).ok()?;
        if v.is_complete() {
            return Some((v.size, v.size));
        }
        let have = match v.live_handle() {
            Some(h) => self.inner.haves_of(&h).map_or(0, |b| v.bytes_in(&b)),
            None => v.dormant_haves().map_or(0, |b| v.bytes_in(&b)),
        };
        Some((have, v.size))
    }

    /// Waits until every piece of a version is here. A version ensured with
    /// `background = false` completes only if reads cover all of it.
    pub async fn wait_complete(&self, info_hash: InfoHash) -> Result<(), SwarmError> {
        let v = self.inner.lookup(info_hash)?;
        let mut done = v.completion();
        loop {
            self.inner.check_running()?;
            if v.forgotten.load(Ordering::Acquire) {
                return Err(SwarmError::NotFound);
            }
            if v.is_complete() {
                return Ok(());
            }
            if let Some(e) = v.live_handle().and_then(|h| state_error(&h)) {
                return Err(e);
            }
            // Woken by completion; the timeout re-checks failure and shutdown.
            let _ = tokio::time::timeout(Duration::from_secs(5), done.changed()).await;
        }
    }

    /// Drops a version: removes it from the session and deletes its files.
    /// Forgetting an unknown version only cleans up what may be left on disk.
    pub async fn forget(&self, info_hash: InfoHash) -> Result<(), SwarmError> {
        let known = self.inner.versions.read().get(&info_hash).cloned();
        self.inner.fetch_queue.lock().remove(info_hash);
        let _transition = match &known {
            Some(v) => {
                v.forgotten.store(true, Ordering::Release);
                v.streams.close();
                v.lingering.lock().close();
                Some(v.transition.lock().await)
            }
            None => None,
        };
        let key = TorrentIdOrHash::Hash(id20(info_hash));
        if self.inner.session.get(key).is_some() {
            if let Err(e) = self.inner.session.delete(key, true).await {
                warn!(%info_hash, "librqbit could not delete it cleanly: {e:#}");
            }
        }
        if let Some(v) = &known {
            self.inner.set_engine(v, version::Engine::Dormant { haves: Vec::new() });
            *v.file.lock() = None;
        }
        // Only now: until librqbit dropped the torrent, `lookup` would find
        // it there and register it again.
        self.inner.versions.write().remove(&info_hash);
        self.inner.meta.remove(info_hash)?;
        for r in [
            tokio::fs::remove_dir_all(self.inner.object_dir(info_hash)).await,
            tokio::fs::remove_file(self.inner.bitv_path(info_hash)).await,
        ] {
            match r {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        debug!(%info_hash, "forgotten");
        Ok(())
    }

    /// Stops the session (seeding, fetching, listening). Versions stay on disk
    /// and come back with the next `start` on the same `cache_dir`.
    pub async fn shutdown(&self) {
        if self.inner.shut.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.streams.close();
        for v in self.inner.versions.read().values() {
            if let Some(h) = v.live_handle() {
                engine::log_traffic(&h, "traffic of a live version at shutdown");
            }
        }
        self.inner.session.stop().await;
    }
}

/// Spawns a background task of the swarm in a span of its own; it is dropped
/// when `cancel` fires (the session stops).
/// `rt` is the swarm's runtime: some callers (reads served on a FUSE
/// thread) are not in its context.
pub(super) fn spawn_task(
    rt: &tokio::runtime::Handle,
    name: &'static str,
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let cancel = cancel.clone();
    let span = tracing::debug_span!("swarm_task", name);
    rt.spawn(
        async move {
            tokio::select! {
                () = cancel.cancelled() => debug!("cancelled"),
                () = fut => {}
            }
        }
        .instrument(span),
    );
}

/// Why librqbit stopped a torrent, if it did.
pub(super) fn state_error(handle: &ManagedTorrent) -> Option<SwarmError> {
    handle.with_state(|s| match s {
        ManagedTorrentState::Error(e) => Some(engine_ref(e)),
        _ => None,
    })
}

/// Renames, or copies when the staging file is on another file system.
/// Puts a staging file's bytes at `to` without copying them (a hard link;
/// a copy across filesystems), replacing a leftover of an interrupted
/// publish. The staging file stays: the model removes it once its outbox
/// entry names the info hash, so a crash in between loses nothing.
fn link_file(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::hard_link(from, to) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(to)?;
            link_file(from, to)
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EPERM)) => std::fs::copy(from, to).map(|_| ()),
        r => r,
    }
}

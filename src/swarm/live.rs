//! Which versions are live in librqbit: waking on demand, putting idle ones
//! to sleep, the background fetch queue, and wants to and from the other
//! members.
//!
//! Every live librqbit torrent costs tasks, timers, descriptors and memory,
//! so a group of many files must not mean many live torrents. A version is
//! woken when a read needs pieces it lacks, when the fetch queue takes it,
//! when it is published, or when another member wants it; the sweeper puts
//! it back to sleep once it has been idle for `SwarmConfig::idle` (`IDLE_CROWDED` while
//! more than `MAX_LIVE` are live).
//!
//! librqbit refuses incoming connections for torrents it does not have, so a
//! member that needs pieces sends a *want* (through the tracker manager, see
//! `Swarm::set_want_hook`); the members that hold the version wake it and
//! dial the wanting member (`Swarm::wanted`).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use librqbit::ManagedTorrentState;
use titorrent_tracker::proto::InfoHash;
use tracing::{debug, info, warn};

use super::error::engine;
use super::version::{bit, full_bitfield, Engine, LiveGuard, Version};
use super::Stripe;
use super::{spawn_task, Inner, SwarmError};
use librqbit::api::TorrentIdOrHash;

/// A live version nobody used or moved bytes of for this long goes to sleep
/// (unless the configuration says otherwise: `SwarmConfig::idle`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);
/// The same while more than `MAX_LIVE` versions are live.
const IDLE_CROWDED: Duration = Duration::from_secs(2);
/// Live versions above which idle ones are put to sleep sooner.
const MAX_LIVE: usize = 48;
/// Live versions above which a version just published here stays dormant:
/// the members that fetch it want it, and it wakes for them. A burst of
/// thousands of small files (`tar -x`) otherwise keeps one live torrent,
/// with its descriptors, per file the others have not fetched yet, and the
/// daemon runs out of descriptors (EMFILE to programs).
pub const PUBLISH_LIVE: usize = 4 * MAX_LIVE;
/// Versions the sweeper puts to sleep at once (each is a librqbit delete
/// and a write of its haves).
const SLEEPS_AT_ONCE: usize = 8;
/// Versions fetched in the background at once.
const MAX_FETCHING: usize = 8;
/// A background fetch without progress for this long yields its slot to the
/// next queued version (and goes to the back of the queue).
const FETCH_STALL: Duration = Duration::from_secs(30);
/// Bytes read in order after which a version is fetched in full.
const SEQUENTIAL_PROMOTE: u64 = 8 << 20;
/// How often a steered background fetch moves its stream on.
const STEER_EVERY: Duration = Duration::from_millis(200);
/// How often the sweeper looks at the live versions.
const SWEEP: Duration = Duration::from_secs(1);
/// A version lacking pieces and connected to nobody is wanted again this often.
const WANT_AGAIN: Duration = Duration::from_secs(3);

/// The background fetch queue.
#[derive(Default)]
pub(super) struct FetchQueue {
    order: VecDeque<InfoHash>,
    queued: HashSet<InfoHash>,
}

impl FetchQueue {
    pub fn push(&mut self, ih: InfoHash) -> bool {
        if self.queued.insert(ih) {
            self.order.push_back(ih);
            true
        } else {
            false
        }
    }

    fn pop(&mut self) -> Option<InfoHash> {
        let ih = self.order.pop_front()?;
        self.queued.remove(&ih);
        Some(ih)
    }

    pub fn remove(&mut self, ih: InfoHash) {
        if self.queued.remove(&ih) {
            self.order.retain(|h| *h != ih);
        }
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Inner {
    /// The version live in librqbit, woken if it was dormant, with the caller
    /// counted as a user. If it wakes now it dials `peers`, or when none are
    /// given and it lacks pieces, every member the peer feed knows (at once,
    /// rather than after its first announce); such a version is also wanted
    /// from the other members.
    pub(super) async fn wake(&self, v: &Arc<Version>, peers: Vec<SocketAddr>) -> Result<LiveGuard, SwarmError> {
        if let Some(g) = v.try_guard() {
            return Ok(g);
        }
        let _t = v.transition.lock().await;
        if let Some(g) = v.try_guard() {
            return Ok(g);
        }
        self.check_running()?;
        if v.forgotten.load(Ordering::Acquire) {
            return Err(SwarmError::NotFound);
        }
        let haves = v.dormant_haves().unwrap_or_default();
        let complete = v.is_complete();
        {
            // librqbit's fastresume data: it spot-checks a few pieces of it
            // instead of hashing the whole file again.
            let bitv = self.bitv_path(v.ih);
            let any = haves.iter().any(|b| *b != 0);
            let haves = if complete { full_bitfield(v.n_pieces) } else { haves };
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                if any || complete {
                    crate::atomic_file::write(&bitv, &haves, false)
                } else {
                    match std::fs::remove_file(&bitv) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    }
                }
            })
            .await
            .map_err(super::join_error)??;
        }
        let fetch_all = complete || v.background.load(Ordering::Acquire);
        let only_files = if fetch_all { None } else { Some(Vec::new()) };
        // A complete version only serves: those who need it dial it.
        let peers = if peers.is_empty() && !complete { self.feed.peers() } else { peers };
        // Members fetching their stripes at once share the author's uplink.
        let window = if fetch_all && !complete { super::engine::request_window(*v.stripe.lock()) } else { super::engine::PEER_REQUEST_WINDOW };
        let handle = self.add(v.ih, v.torrent.to_vec(), only_files, peers, window).await?;
        {
            let mut seen = v.seen.lock();
            let now = Instant::now();
            seen.last_active = now;
            seen.last_progress = now;
            seen.counters = (0, 0);
        }
        self.set_engine(v, Engine::Live(handle));
        debug!(ih = %v.ih, complete, background = fetch_all, "woke");
        if !complete {
            self.want(v);
        }
        v.try_guard().ok_or(SwarmError::NotFound)
    }

    /// Puts a live version to sleep if nobody uses it: saves its haves and
    /// removes it from librqbit (its files stay). Returns whether it slept.
    pub(super) async fn sleep(&self, v: &Arc<Version>) -> bool {
        let Ok(_t) = v.transition.try_lock() else {
            return false;
        };
        let (handle, haves) = {
            let mut e = v.engine.lock();
            let Engine::Live(h) = &*e else { return false };
            if v.users() > 0 {
                return false;
            }
            let haves = if v.is_complete() {
                full_bitfield(v.n_pieces)
            } else {
                match self.haves_of(h) {
                    Some(b) => b,
                    // Still checking its files: not now.
                    None => return false,
                }
            };
            let h = h.clone();
            self.set_engine_locked(v.ih, &mut e, Engine::Dormant { haves: haves.clone() });
            (h, haves)
        };
        if let Err(e) = self.meta.save_haves(v.ih, &haves) {
            // Without them the next wake re-checks the file: slower, not wrong.
            warn!(ih = %v.ih, "cannot save the pieces of a sleeping version: {e}");
        }
        *v.file.lock() = None;
        super::engine::log_traffic(&handle, "traffic of a version going to sleep");
        if let Err(e) = self.session.delete(TorrentIdOrHash::Hash(handle.info_hash()), false).await {
            warn!(ih = %v.ih, "librqbit could not drop a sleeping version: {e:#}");
        }
        debug!(ih = %v.ih, "asleep");
        true
    }

    /// Asks the other members to wake the version (rate limited).
    pub(super) fn want(&self, v: &Version) {
        {
            let mut seen = v.seen.lock();
            if seen.last_want.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
                return;
            }
            seen.last_want = Some(Instant::now());
        }
        if let Some(hook) = self.want_hook.get() {
            hook(v.ih);
        }
    }

    /// Another member (at `peer`) wants a version: if it is here, even in
    /// part, wake it and dial them.
    pub(super) async fn on_wanted(&self, ih: InfoHash, peer: SocketAddr) {
        self.feed.add(&[peer]);
        let Ok(v) = self.lookup(ih) else { return };
        if v.live_handle().is_some() {
            // Live: they reach us through their own dialling.
            v.seen.lock().last_active = Instant::now();
            return;
        }
        let has_some = v.is_complete() || v.dormant_haves().is_some_and(|h| h.iter().any(|b| *b != 0));
        if !has_some {
            return;
        }
        match self.wake(&v, vec![peer]).await {
            Ok(g) => drop(g),
            Err(e) => debug!(%ih, "cannot wake a wanted version: {e}"),
        }
    }

    /// A standard client came for an exported version: live it must be.
    pub(super) async fn wake_for_export(&self, ih: InfoHash) {
        let Ok(v) = self.lookup(ih) else { return };
        v.seen.lock().last_active = Instant::now();
        if v.live_handle().is_none() {
            match self.wake(&v, Vec::new()).await {
                Ok(g) => drop(g),
                Err(e) => debug!(%ih, "cannot wake an exported version: {e}"),
            }
        }
    }

    /// Notes a read of `offset..end`. A reader that has gone through
    /// `SEQUENTIAL_PROMOTE` bytes in order is reading the whole file (`cat`,
    /// `cp`, a player): the version is then fetched in full, as fast as its
    /// peers give it, instead of only a stream's read-ahead at a time.
    pub(super) fn note_read(self: &Arc<Self>, v: &Arc<Version>, offset: u64, end: u64) {
        if v.is_complete() || v.background.load(Ordering::Acquire) {
            return;
        }
        let promote = {
            let mut seq = v.sequential.lock();
            let run = if offset <= seq.0 && seq.0 <= end { seq.1 + (end - seq.0) } else { end - offset };
            *seq = (end, run);
            run >= SEQUENTIAL_PROMOTE
        };
        if promote && !v.background.swap(true, Ordering::AcqRel) {
            debug!(ih = %v.ih, "read in order: fetching all of it");
            let (inner, v) = (self.clone(), v.clone());
            spawn_task(&self.rt, "fetch_sequential", &self.cancel, async move {
                match inner.wake(&v, Vec::new()).await {
                    Ok(g) => {
                        if g.handle.only_files().is_some_and(|f| f.is_empty()) {
                            let select = async {
                                g.handle.wait_until_initialized().await?;
                                inner.session.update_only_files(&g.handle, &HashSet::from([0])).await
                            };
                            if let Err(e) = select.await {
                                debug!(ih = %v.ih, "cannot fetch all of it: {e:#}");
                                return;
                            }
                        }
                        inner.watch_completion(&v, g.handle.clone());
                    }
                    Err(e) => debug!(ih = %v.ih, "cannot fetch all of it: {e}"),
                }
            });
        }
    }

    /// Queues a version for the background fetch.
    pub(super) fn queue_fetch(&self, v: &Arc<Version>) {
        v.background.store(true, Ordering::Release);
        if self.fetch_queue.lock().push(v.ih) {
            self.fetch_kick.notify_one();
        }
    }

    /// Runs the fetch queue and the sweeper until the session stops.
    pub(super) fn spawn_upkeep(self: &Arc<Self>) {
        self.spawn_blob_fetcher();
        let weak = Arc::downgrade(self);
        spawn_task(&self.rt, "fetch_queue", &self.cancel, async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                inner.start_fetches().await;
                let kick = inner.fetch_kick.clone();
                drop(inner);
                let _ = tokio::time::timeout(SWEEP, kick.notified()).await;
            }
        });
        let weak = Arc::downgrade(self);
        spawn_task(&self.rt, "sweeper", &self.cancel, async move {
            let mut tick = tokio::time::interval(SWEEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.sweep().await;
            }
        });
    }

    fn fetching(&self) -> usize {
        self.versions
            .read()
            .values()
            .filter(|v| v.background.load(Ordering::Acquire) && !v.is_complete() && v.live_handle().is_some())
            .count()
    }

    /// Takes queued versions live while fewer than `MAX_FETCHING` fetch.
    async fn start_fetches(self: &Arc<Self>) {
        let mut running = self.fetching();
        while running < MAX_FETCHING {
            let Some(ih) = self.fetch_queue.lock().pop() else { return };
            let Ok(v) = self.lookup(ih) else { continue };
            if v.is_complete() || !v.background.load(Ordering::Acquire) {
                continue;
            }
            match self.wake(&v, Vec::new()).await {
                Ok(g) => {
                    if g.handle.only_files().is_some_and(|f| f.is_empty()) {
                        // Woken for reads before: select the file now.
                        if let Err(e) = g.handle.wait_until_initialized().await {
                            warn!(%ih, "cannot fetch: {e:#}");
                            continue;
                        }
                        if let Err(e) = self.session.update_only_files(&g.handle, &HashSet::from([0])).await {
                            warn!(%ih, "cannot fetch all of it: {e:#}");
                            continue;
                        }
                    }
                    self.watch_completion(&v, g.handle.clone());
                    let stripe = *v.stripe.lock();
                    if stripe.count > 1 {
                        let (inner, v, handle) = (self.clone(), v.clone(), g.handle.clone());
                        spawn_task(&self.rt, "fetch_stripe", &self.cancel, async move {
                            inner.drive_fetch(v, handle, stripe).await;
                        });
                    }
                    running += 1;
                }
                Err(e) => warn!(%ih, "cannot start fetching: {e}"),
            }
        }
    }

    /// Steers a background fetch to its stripe first: an open `FileStream`
    /// makes librqbit ask for the 32 MiB after its position first, from any
    /// peer that has them. The position stays at the stripe's start until
    /// the stripe is here (moving it along would spill the window into the
    /// next stripe, which its own member is fetching from the seeder at the
    /// same time). Then it helps with the stripe that most lacks (see
    /// `help_target`), and again each time the part it took is here. The
    /// pieces of the other stripes come meanwhile from the members that fetch
    /// them (librqbit asks each peer for what it has). Without this, librqbit
    /// asks for pieces in file order, so members fetching at once all ask the
    /// seeder for the same ones and have little to give each other.
    async fn drive_fetch(self: Arc<Self>, v: Arc<Version>, handle: Arc<librqbit::ManagedTorrent>, stripe: Stripe) {
        use tokio::io::AsyncSeekExt;
        let Ok(_slot) = self.streams.clone().try_acquire_owned() else {
            return;
        };
        let mut stream = match handle.clone().stream(0).await {
            Ok(s) => s,
            Err(e) => {
                debug!(ih = %v.ih, "no stream to steer the fetch: {e:#}");
                return;
            }
        };
        let layout = StripeLayout { n_pieces: v.n_pieces, piece_length: v.piece_length, size: v.size, count: stripe.count };
        let (first, last) = layout.pieces(stripe.index);
        debug!(ih = %v.ih, index = stripe.index, count = stripe.count, first, last, "steering a background fetch");
        // The pieces the stream is after: its position up to the end of the
        // stripe it is in.
        let (mut piece, mut until) = (first, last);
        let mut at = None;
        let mut rejoined = false;
        loop {
            if at != Some(piece) {
                if let Err(e) = stream.seek(std::io::SeekFrom::Start(piece * v.piece_length)).await {
                    debug!(ih = %v.ih, "cannot steer the fetch: {e}");
                    return;
                }
                at = Some(piece);
            }
            tokio::time::sleep(STEER_EVERY).await;
            let same = v.live_handle().is_some_and(|h| Arc::ptr_eq(&h, &handle));
            if !same || v.is_complete() || v.forgotten.load(Ordering::Acquire) {
                return;
            }
            let Some(haves) = self.haves_of(&handle) else { continue };
            if !rejoined && haves.iter().any(|b| *b != 0) {
                rejoined = true;
                self.rejoin(&v, &handle).await;
            }
            if (piece..until).any(|i| !bit(&haves, i)) {
                continue;
            }
            match layout.help_target(&haves, stripe.index) {
                Some((index, next, end)) => {
                    debug!(ih = %v.ih, stripe = index, piece = next, until = end, "helping with a stripe");
                    (piece, until) = (next, end);
                }
                None => return,
            }
        }
    }

    /// Reconnects a fetching version to its peers once it has a piece.
    /// librqbit sends a peer `have`s only once it knows the peer's bitfield,
    /// and a peer that had no piece when it connected sent none; so members
    /// that connected to each other while both had nothing (all of them,
    /// when they start a shared fetch together) never tell each other what
    /// they got, until their idle connections time out (10 s) and are
    /// redialled after a backoff. Connections made now carry our bitfield,
    /// and then the haves flow both ways. The requests in flight to the
    /// seeder are lost: a window's worth, once.
    async fn rejoin(&self, v: &Version, handle: &Arc<librqbit::ManagedTorrent>) {
        debug!(ih = %v.ih, "rejoining the swarm with pieces to show");
        self.redial(handle).await;
    }

    /// Drops a torrent's peer connections and dials its peers afresh
    /// (pausing and resuming it: open streams survive, they belong to the
    /// torrent rather than to its live state). Nothing for a torrent that is
    /// initializing (it dials once live) or failed.
    pub(super) async fn redial(&self, handle: &Arc<librqbit::ManagedTorrent>) {
        let (live, paused) = handle.with_state(|s| {
            (
                matches!(s, ManagedTorrentState::Live(_)),
                matches!(s, ManagedTorrentState::Paused(_)),
            )
        });
        if !live && !paused {
            return;
        }
        if live {
            if let Err(e) = self.session.pause(handle).await {
                debug!(info_hash = ?handle.info_hash(), "pause for a redial: {e:#}");
                return;
            }
        }
        if let Err(e) = self.session.unpause(handle).await {
            warn!(info_hash = ?handle.info_hash(), "could not resume after a redial: {e:#}");
        }
    }

    /// Marks a fetching version complete when librqbit says so (and the
    /// haves agree), and frees its fetch slot.
    fn watch_completion(self: &Arc<Self>, v: &Arc<Version>, handle: Arc<librqbit::ManagedTorrent>) {
        let (weak, v) = (Arc::downgrade(self), v.clone());
        spawn_task(&self.rt, "fetch_done", &self.cancel, async move {
            if handle.wait_until_completed().await.is_err() {
                return;
            }
            let Some(inner) = weak.upgrade() else { return };
            super::engine::log_traffic(&handle, "fetched in the background");
            // librqbit may say finished a moment before its haves show it.
            for _ in 0..50 {
                if inner.range_local(&v, 0, v.size) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            inner.fetch_kick.notify_one();
        });
    }

    /// One look at the live versions: note activity, re-want what is stuck,
    /// rotate stalled fetches, put idle versions to sleep.
    async fn sweep(self: &Arc<Self>) {
        let live = self.live_versions();
        let now = Instant::now();
        let mut candidates = Vec::new();
        let queue_waiting = !self.fetch_queue.lock().is_empty();
        for v in &live {
            let Some(h) = v.live_handle() else { continue };
            if h.with_state(|s| matches!(s, ManagedTorrentState::Error(_))) {
                continue;
            }
            let (counters, connected) = match h.live() {
                Some(l) => {
                    let s = l.stats_snapshot();
                    ((s.uploaded_bytes, s.fetched_bytes), s.peer_stats.live > 0)
                }
                None => ((0, 0), false),
            };
            if !v.is_complete() && self.range_local(v, 0, v.size) {
                self.fetch_kick.notify_one();
            }
            let (idle_for, stalled) = {
                let mut seen = v.seen.lock();
                if counters != seen.counters {
                    if counters.1 != seen.counters.1 {
                        seen.last_progress = now;
                    }
                    seen.counters = counters;
                    seen.last_active = now;
                }
                if v.users() > 0 {
                    seen.last_active = now;
                }
                (now - seen.last_active, now - seen.last_progress)
            };
            let background = v.background.load(Ordering::Acquire);
            let complete = v.is_complete();
            if !complete && (background || v.users() > 0) {
                if !connected && v.seen.lock().last_want.is_none_or(|t| t.elapsed() >= WANT_AGAIN) {
                    self.want(v);
                }
                if background && queue_waiting && stalled >= FETCH_STALL && v.users() == 0 {
                    info!(ih = %v.ih, "background fetch stalled; trying the next queued version");
                    if self.sleep(v).await {
                        self.fetch_queue.lock().push(v.ih);
                        self.fetch_kick.notify_one();
                    }
                }
                continue;
            }
            if v.users() == 0 {
                candidates.push((idle_for, v.clone()));
            }

        }
        candidates.sort_by_key(|(idle, _)| std::cmp::Reverse(*idle));
        // Longest idle first; while crowded, the shorter limit applies.
        let n_live = live.len();
        let crowded = |n: usize| if n > MAX_LIVE { IDLE_CROWDED.min(self.idle) } else { self.idle };
        let mut due = Vec::new();
        for (idle, v) in candidates {
            if idle >= crowded(n_live - due.len()) {
                due.push(v);
            }
        }
        let slept = futures::stream::iter(due)
            .map(|v| async move { self.sleep(&v).await })
            .buffer_unordered(SLEEPS_AT_ONCE)
            .filter(|slept| std::future::ready(*slept))
            .count()
            .await;
        let n_live = n_live - slept;
        if slept > 0 {
            debug!(slept, live = n_live, "idle versions asleep");
            release_freed_memory();
        }
    }

    /// Versions live in librqbit now.
    pub(super) fn live_count(&self) -> usize {
        self.live.lock().len()
    }

    /// The versions live now: what the sweeper looks at, however many
    /// dormant ones the group has.
    pub(super) fn live_versions(&self) -> Vec<Arc<Version>> {
        let ids: Vec<InfoHash> = self.live.lock().iter().copied().collect();
        let versions = self.versions.read();
        ids.iter().filter_map(|ih| versions.get(ih).cloned()).collect()
    }

    /// Sets a version's engine state, keeping the set of live ones.
    pub(super) fn set_engine(&self, v: &Version, new: Engine) {
        self.set_engine_locked(v.ih, &mut v.engine.lock(), new);
    }

    /// [`Inner::set_engine`] for a caller that holds the engine's lock.
    fn set_engine_locked(&self, ih: InfoHash, engine: &mut Engine, new: Engine) {
        if matches!(new, Engine::Live(_)) {
            self.live.lock().insert(ih);
        } else {
            self.live.lock().remove(&ih);
        }
        *engine = new;
    }

    /// Registers the torrents librqbit restored from its own persistence
    /// (those live when the last run stopped) as live versions.
    pub(super) fn adopt_restored(self: &Arc<Self>) -> Result<(), SwarmError> {
        let handles: Vec<_> = self.session.with_torrents(|it| it.map(|(_, h)| h.clone()).collect());
        for handle in handles {
            let ih = InfoHash(handle.info_hash().0);
            let minimal = handle
                .with_metadata(|m| {
                    let mut t = b"d4:info".to_vec();
                    t.extend_from_slice(&m.info_bytes);
                    t.push(b'e');
                    t
                })
                .map_err(engine)?;
            let checked = match super::metainfo::check(ih, &minimal) {
                Ok(c) => c,
                Err(e) => {
                    warn!(%ih, "librqbit restored a torrent that is not a version: {e}");
                    continue;
                }
            };
            if let Err(e) = self.meta.save_torrent(ih, &checked.minimal) {
                warn!(%ih, "cannot save the metadata of a restored version: {e}");
            }
            let v = Arc::new(Version::new(ih, &checked, &self.objects, Vec::new()));
            v.background.store(handle.only_files().is_none(), Ordering::Release);
            self.set_engine(&v, Engine::Live(handle.clone()));
            self.versions.write().insert(ih, v.clone());
            if !self.range_local(&v, 0, v.size) && v.background.load(Ordering::Acquire) {
                self.watch_completion(&v, handle);
            }
        }
        Ok(())
    }
}

/// Gives memory freed by dropped torrents back to the system (glibc keeps
/// freed blocks in its arenas otherwise, and the daemon's RSS never falls).
fn release_freed_memory() {
    // SAFETY: malloc_trim has no preconditions; it only returns free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How a version's pieces fall into the stripes of a fetch shared by
/// `count` members.
#[derive(Clone, Copy, Debug)]
struct StripeLayout {
    n_pieces: u64,
    piece_length: u64,
    size: u64,
    count: u32,
}

impl StripeLayout {
    /// The pieces `first..last` of stripe `index`.
    fn pieces(&self, index: u32) -> (u64, u64) {
        let start = |i: u32| Stripe { index: i, count: self.count }.start(self.size, self.piece_length) / self.piece_length;
        let first = start(index);
        let last = if index + 1 >= self.count { self.n_pieces } else { start(index + 1) };
        (first, last.max(first))
    }

    /// Where a member whose own stripe is here helps next: the stripe that
    /// lacks the most pieces here (on a tie, the first after its own), from
    /// the middle of its missing pieces on. Its member fetches it from the
    /// front, so the two split what is left of it instead of both asking the
    /// seeder for the same pieces at its front. `(stripe, first piece, end
    /// of that stripe)`, or `None` when no piece is missing.
    fn help_target(&self, haves: &[u8], own: u32) -> Option<(u32, u64, u64)> {
        let mut best: Option<(u32, Vec<u64>, u64)> = None;
        for k in 0..self.count {
            let index = (own + 1 + k) % self.count;
            let (first, last) = self.pieces(index);
            let missing: Vec<u64> = (first..last).filter(|&i| !bit(haves, i)).collect();
            if !missing.is_empty() && best.as_ref().is_none_or(|(_, m, _)| missing.len() > m.len()) {
                best = Some((index, missing, last));
            }
        }
        best.map(|(index, missing, last)| (index, missing[missing.len() / 2], last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 stripes of 4 pieces (1 KiB each) over 16 pieces.
    fn layout() -> StripeLayout {
        StripeLayout { n_pieces: 16, piece_length: 1024, size: 16 * 1024, count: 4 }
    }

    fn haves(present: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let mut b = vec![0u8; 2];
        for i in present {
            b[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
        b
    }

    #[test]
    fn stripes_cover_every_piece_once() {
        let l = layout();
        assert_eq!((0..4).map(|i| l.pieces(i)).collect::<Vec<_>>(), vec![(0, 4), (4, 8), (8, 12), (12, 16)]);
        let odd = StripeLayout { n_pieces: 10, piece_length: 1024, size: 10 * 1024 - 100, count: 3 };
        let all: Vec<u64> = (0..3).flat_map(|i| { let (a, b) = odd.pieces(i); a..b }).collect();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_member_done_with_its_stripe_helps_the_one_that_lacks_most_from_its_middle() {
        let l = layout();
        // Stripe 1 is here; stripe 2 lacks 4 pieces, stripe 3 two, stripe 0 one.
        let h = haves([0, 1, 2, 4, 5, 6, 7, 12, 13]);
        assert_eq!(l.help_target(&h, 1), Some((2, 10, 12)));
        // Equal lacks: the first after its own stripe.
        let h = haves([4, 5, 6, 7, 0, 1, 8, 9, 12, 13]);
        assert_eq!(l.help_target(&h, 1), Some((2, 11, 12)));
        assert_eq!(l.help_target(&h, 3), Some((0, 3, 4)));
        // Nothing missing: done.
        assert_eq!(l.help_target(&haves(0..16), 0), None);
    }
}

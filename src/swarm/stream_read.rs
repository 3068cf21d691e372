//! Reads of ranges that are not local yet: through librqbit's `FileStream`,
//! which asks peers for the range's pieces first, with the workarounds that
//! one-stream-per-read needs in librqbit 9.1 (a lingering stream, and a
//! redial when a read stalls).

use std::io::{self, SeekFrom};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use librqbit::ManagedTorrent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::error::{engine, SwarmError};
use super::version::{LiveGuard, Version};
use super::{spawn_task, state_error, Inner};

/// A read waiting this long with no data arriving for its torrent redials
/// (at once if its torrent has no peer left to talk to).
const STALL_CHECK: Duration = Duration::from_millis(1500);
/// The same while a peer is connected: requested blocks arrive within a
/// round trip, so silence this long means librqbit's request loop sleeps
/// (it naps up to 5 s when it had nothing to ask for, and a new stream does
/// not wake it).
const STALL_CONNECTED: Duration = Duration::from_millis(600);
/// How long the stream of the last read stays open (see `linger`).
const LINGER: Duration = Duration::from_millis(300);
/// How often a waiting read looks at its torrent.
const WATCH_TICK: Duration = Duration::from_millis(200);
/// Fresh streams a read tries before its error is the answer (see
/// `read_streamed`).
const STREAM_ATTEMPTS: u32 = 5;
/// Redials of one torrent are at least this far apart, doubling (up to the
/// max) while they bring nothing.
const KICK_MIN_INTERVAL: Duration = Duration::from_secs(3);
const KICK_MAX_INTERVAL: Duration = Duration::from_secs(60);

impl Inner {
    /// Reads `offset..end` of a version through a stream (see `Swarm::read`).
    ///
    /// librqbit's stream fails a read ("no chunk tracker, torrent neither
    /// paused nor live") when its torrent is between states: initializing
    /// again, or taken out of its state for a moment by a pause. That is no
    /// answer for a program (it got EIO on an open while its member was cut
    /// off and redialling): the read starts again on a fresh stream, a few
    /// times, unless the torrent itself failed or the version is gone.
    pub(super) async fn read_streamed(
        &self,
        v: &Arc<Version>,
        offset: u64,
        end: u64,
    ) -> Result<Bytes, SwarmError> {
        let mut attempt = 1;
        loop {
            match self.read_streamed_once(v, offset, end).await {
                Err(e) if attempt < STREAM_ATTEMPTS && self.stream_may_recover(v, &e) => {
                    debug!(info_hash = %v.ih, attempt, "stream read failed between torrent states; again: {e}");
                    attempt += 1;
                    tokio::time::sleep(WATCH_TICK).await;
                }
                r => return r,
            }
        }
    }

    /// Whether a failed stream read may work on a fresh stream: the error is
    /// the engine's or the stream's, the version is still here and its
    /// torrent has not failed.
    fn stream_may_recover(&self, v: &Version, e: &SwarmError) -> bool {
        let transient = matches!(e, SwarmError::Engine(_) | SwarmError::Io(_));
        transient
            && !v.forgotten.load(Ordering::Acquire)
            && !self.cancel.is_cancelled()
            && v.live_handle().is_none_or(|h| state_error(&h).is_none())
    }

    async fn read_streamed_once(
        &self,
        v: &Arc<Version>,
        offset: u64,
        end: u64,
    ) -> Result<Bytes, SwarmError> {
        let reused = v.lingering.lock().stream.take();
        let mut open = match reused {
            Some(open) => open,
            None => {
                let version_slot = v
                    .streams
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| SwarmError::NotFound)?;
                let slot = self
                    .streams
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| SwarmError::ShutDown)?;
                // Arrived while we queued for a slot?
                if self.range_local(v, offset, end) {
                    return self.pread(v, offset, end).await;
                }
                let live = self.wake(v, Vec::new()).await?;
                // A stream of a torrent still initializing (its initial
                // check after it was woken or filled from an older version)
                // fails its first read: "no chunk tracker".
                live.handle.wait_until_initialized().await.map_err(engine)?;
                let stream = live.handle.clone().stream(0).await.map_err(engine)?;
                OpenStream {
                    stream: Box::new(stream),
                    live,
                    _slots: (version_slot, slot),
                }
            }
        };
        let mut buf = vec![0u8; (end - offset) as usize];
        open.stream.seek(SeekFrom::Start(offset)).await?;
        let handle = open.live.handle.clone();
        self.watch(v, &handle, open.stream.read_exact(&mut buf)).await?;
        self.linger(v, open);
        Ok(Bytes::from(buf))
    }

    /// Keeps a finished read's stream open for `LINGER`, for the version's
    /// next read to reuse (a second one at the same time opens its own). With
    /// no piece selected, librqbit hangs up on its seeders the moment no
    /// stream is open, and a read that opens its stream during that hang-up
    /// stalls (see `kick`); back-to-back reads, the common case, keep one
    /// stream open throughout instead. While it lingers, librqbit fetches
    /// ahead of the last read (its streams prefetch), which sequential reads
    /// want anyway.
    fn linger(&self, v: &Arc<Version>, stream: OpenStream) {
        let (previous, generation) = {
            let mut g = v.lingering.lock();
            g.generation += 1;
            (g.stream.replace(stream), g.generation)
        };
        drop(previous);
        let v = v.clone();
        spawn_task(&self.rt, "linger", &self.cancel, async move {
            tokio::time::sleep(LINGER).await;
            let expired = {
                let mut g = v.lingering.lock();
                if g.generation == generation {
                    g.stream.take()
                } else {
                    None
                }
            };
            drop(expired);
        });
    }

    /// Runs a stream read, redialling (`kick`) while it stalls.
    async fn watch<T>(
        &self,
        v: &Version,
        handle: &Arc<ManagedTorrent>,
        read: impl std::future::Future<Output = io::Result<T>>,
    ) -> Result<(), SwarmError> {
        tokio::pin!(read);
        let mut seen = Activity::of(handle);
        let mut last_data = Instant::now();
        loop {
            tokio::select! {
                r = &mut read => {
                    r?;
                    // The peers work: a later stall may redial at once.
                    *v.kick.lock() = Kick::default();
                    return Ok(());
                }
                () = tokio::time::sleep(WATCH_TICK) => {
                    if v.forgotten.load(Ordering::Acquire) {
                        return Err(SwarmError::NotFound);
                    }
                    if let Some(e) = state_error(handle) {
                        return Err(e);
                    }
                    let now = Activity::of(handle);
                    if now.got_data_since(&seen) {
                        last_data = Instant::now();
                        *v.kick.lock() = Kick::default();
                    } else if now.dead_end
                        || last_data.elapsed() >= if now.connected { STALL_CONNECTED } else { STALL_CHECK }
                    {
                        self.kick(v, handle).await;
                        last_data = Instant::now();
                    }
                    seen = Activity::of(handle);
                }
            }
        }
    }

    /// Restarts a torrent's peer connections after a read saw no data arrive
    /// (see `watch`).
    ///
    /// With no piece selected (on demand), librqbit hangs up on a seeder as
    /// soon as no stream is open, and redials it when the next stream opens.
    /// When a read's stream opens while that hang-up is under way, the seeder
    /// ends up waiting out a reconnect backoff (10 s, then 60 s, ...) or is
    /// never redialled; a request loop may also sleep 5 s before it notices a
    /// new stream. Pausing and resuming gives the torrent fresh peer state:
    /// it dials its initial peers and the peer feed's at once. Open streams
    /// survive it (they belong to the torrent, not to its live state).
    async fn kick(&self, v: &Version, handle: &Arc<ManagedTorrent>) {
        {
            let mut k = v.kick.lock();
            if k.last.is_some_and(|t| t.elapsed() < k.wait) {
                return;
            }
            if k.last.is_some() {
                // Nothing came since the last one either (no member online
                // has it, say): back off.
                k.wait = (k.wait * 2).min(KICK_MAX_INTERVAL);
            }
            k.last = Some(Instant::now());
        }
        // The members holding it may have it asleep.
        self.want(v);
        debug!(info_hash = ?handle.info_hash(), "read stalled; redialling peers");
        self.redial(handle).await;
    }
}

/// librqbit's `FileStream` (its type is not exported).
trait ReadStream: AsyncRead + AsyncSeek + Send + Unpin {}
impl<T: AsyncRead + AsyncSeek + Send + Unpin> ReadStream for T {}

/// An open `FileStream`, the live torrent it belongs to (kept awake while
/// the stream is open) and the stream slots it holds.
struct OpenStream {
    stream: Box<dyn ReadStream>,
    live: LiveGuard,
    _slots: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// A version's lingering stream (see `Inner::linger`).
#[derive(Default)]
pub(super) struct Lingering {
    stream: Option<OpenStream>,
    generation: u64,
}

impl Lingering {
    /// Closes the lingering stream now (the version is going away).
    pub(super) fn close(&mut self) {
        self.stream = None;
    }
}

/// A version's redial history (see `Inner::kick`).
pub(super) struct Kick {
    last: Option<Instant>,
    wait: Duration,
}

impl Default for Kick {
    fn default() -> Self {
        Kick {
            last: None,
            wait: KICK_MIN_INTERVAL,
        }
    }
}

/// What a read waiting on a torrent watches (see `Inner::kick`).
struct Activity {
    /// The live state (a new one after a pause) and the bytes it received.
    live: Option<(usize, u64)>,
    /// No peer is connected, connecting or about to be, but some were: only
    /// a reconnect backoff (or nothing) would bring them back.
    dead_end: bool,
    /// Some peer is connected.
    connected: bool,
}

impl Activity {
    fn of(handle: &ManagedTorrent) -> Activity {
        match handle.live() {
            Some(live) => {
                let s = live.stats_snapshot();
                let p = &s.peer_stats;
                Activity {
                    live: Some((Arc::as_ptr(&live) as usize, s.fetched_bytes)),
                    dead_end: p.live + p.connecting + p.queued == 0 && p.dead + p.not_needed > 0,
                    connected: p.live > 0,
                }
            }
            None => Activity {
                live: None,
                dead_end: false,
                connected: false,
            },
        }
    }

    fn got_data_since(&self, before: &Activity) -> bool {
        match (self.live, before.live) {
            (Some((now, n)), Some((then, b))) => now == then && n > b,
            _ => false,
        }
    }
}

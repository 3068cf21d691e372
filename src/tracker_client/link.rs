//! The mount daemon's link to the tracker: one authenticated, subscribed
//! connection at a time, re-established with backoff, carrying many
//! concurrent requests.
//!
//! States of the link (exactly one at a time):
//! - **connecting**: no live connection; `call` fails at once with
//!   `Offline`; a background task retries (100 ms doubling to 2 s; 30 s
//!   after the tracker refused the credential or the protocol);
//! - **online**: Hello, Authenticate and Subscribe succeeded; `Online` was
//!   emitted, then the `Snapshot` if the tracker sent one, then events;
//!   requests go out with fresh ids and their answers are matched by id;
//! - **stopped**: after `shutdown` or when every handle is dropped.
//!
//! Events are delivered exactly once and in seq order, a commit at a time
//! (`LinkEvent::Events`: what one change at the tracker logged, such as a
//! rename over an existing file, the target's `FileDeleted` then the
//! `FileRenamed`). The link remembers the last seq it delivered, always the
//! end of a commit, and resubscribes from it; a duplicate is skipped, a gap
//! drops the connection (the next one resubscribes). A commit the tracker
//! sends in several frames (`more`) is handed on once its last frame is
//! in; a connection lost before that hands on none of it.
//!
//! A file table (the `Snapshot`, a `ListFiles` answer) larger than one
//! frame comes in parts; the link puts it together and hands it on whole,
//! as one `Snapshot` or one `Files`. Each part must arrive within the
//! connect timeout, not the whole table: a 100,000-file group on a slow
//! link takes longer than one frame would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::connection::{check_hello, dial, TlsRead, TlsWrite, CONNECT_TIMEOUT};
use super::frame::{closed, read_frame};
use super::{ClientError, Login};
use titorrent_tracker::calls::{self, Call, Subscription};
use titorrent_tracker::proto::{
    encode_frame, ClientFrame, Event, FileEntry, InfoHash, Reassembly, Request, Response, Seq, ServerFrame,
    PROTOCOL_VERSION,
};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// After a refusal (bad credential, other protocol version) retrying fast
/// cannot help; retry slowly in case the tracker is fixed.
const REFUSED_RETRY: Duration = Duration::from_secs(30);
const OUT_QUEUE: usize = 256;
/// Frames read ahead of the session (each at most `MAX_FRAME`; in practice
/// events, answers and table parts of a few hundred KiB).
const READ_AHEAD: usize = 8;
/// After this long without a frame from the tracker the link asks it
/// something; with no frame for this long again, the connection is
/// presumed dead (a vanished host sends no FIN) and re-established.
const IDLE_PROBE: Duration = if cfg!(test) { Duration::from_millis(300) } else { Duration::from_secs(10) };
const AUTH_ID: u64 = 1;
const SUBSCRIBE_ID: u64 = 2;

/// What the link tells its owner, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected, authenticated and subscribed: requests work.
    Online,
    /// The connection was lost; requests fail with `Offline` until `Online`.
    Offline,
    /// The whole file table as of `seq` (first connection, or the log no
    /// longer reaches back to the last delivered seq). Events after `seq`
    /// follow.
    Snapshot { seq: Seq, files: Vec<FileEntry> },
    /// The events of one commit at the tracker, in seq order, to apply in
    /// one step: between two of them the table would show a state no
    /// member made (a name gone between a replace's deletion and its
    /// rename). After a reconnect a replay may hand on several commits
    /// made in the same millisecond together, never part of one. Never
    /// empty.
    Events(Vec<Event>),
    /// Another member (or a BitTorrent client announcing to the tracker)
    /// needs pieces of `info_hash` and listens at `peer`: if this member
    /// holds that version, it should make its torrent live and may connect
    /// to `peer`. A hint, not an event: not in seq order with events, not
    /// replayed after a reconnect.
    Wanted { info_hash: InfoHash, peer: SocketAddr },
}

/// A cheap, cloneable handle on the link. Dropping the last handle stops it.
#[derive(Clone)]
pub struct TrackerLink {
    inner: Arc<Inner>,
    _stop_on_drop: Arc<DropGuard>,
}

struct Inner {
    live: Mutex<Option<Arc<Live>>>,
    online: AtomicBool,
    cancel: CancellationToken,
}

/// One live connection's request side.
struct Live {
    out: mpsc::Sender<Vec<u8>>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
}

struct Pending {
    /// Set when the connection is gone; no new request may wait after it.
    closed: bool,
    waiting: HashMap<u64, oneshot::Sender<(Response, Option<Seq>)>>,
}

impl Live {
    /// Fails every waiting request with `Lost` (their senders drop).
    fn close(&self) {
        let mut p = self.pending.lock();
        p.closed = true;
        p.waiting.clear();
    }
}

struct Config {
    addr: String,
    login: Login,
    peer_port: u16,
}

impl TrackerLink {
    /// Starts the background task: connect (TLS with `login`'s key, the
    /// tracker's checked against its pin), Hello, Authenticate{group, member,
    /// peer_addr}, Subscribe{from: last_seq}; on any connection loss emits
    /// Offline and retries with backoff (100 ms doubling to 2 s),
    /// resubscribing from the last seq it delivered. peer_port: the
    /// BitTorrent listen port; peer_addr sent = (the IP of the tracker
    /// socket's local address, peer_port); none when `peer_port` is 0.
    ///
    /// Must be called within a Tokio runtime.
    pub fn start(
        tracker_addr: String,
        login: Login,
        peer_port: u16,
        last_seq: Option<Seq>,
    ) -> (TrackerLink, mpsc::UnboundedReceiver<LinkEvent>) {
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            live: Mutex::new(None),
            online: AtomicBool::new(false),
            cancel: cancel.clone(),
        });
        let (events, rx) = mpsc::unbounded_channel();
        let cfg = Config { addr: tracker_addr, login, peer_port };
        let span = tracing::info_span!("tracker_link", tracker = %cfg.addr, member = %cfg.login.member);
        tokio::spawn(tracing::Instrument::instrument(run(inner.clone(), cfg, last_seq, events), span));
        let link = TrackerLink { inner, _stop_on_drop: Arc::new(cancel.drop_guard()) };
        (link, rx)
    }

    /// Sends a call on the current connection and waits for its answer; if
    /// not connected, fails at once with [`ClientError::Offline`] (never
    /// waits for reconnect). Many calls may be in flight at once. A
    /// connection lost before the answer gives [`ClientError::Lost`]: the
    /// request may or may not have been applied.
    pub async fn call<C: Call>(&self, c: C) -> Result<C::Answer, ClientError> {
        Ok(self.call_at(c).await?.0)
    }

    /// [`TrackerLink::call`], with the seq the answer is as of when it
    /// answers a change of the file table (see `ServerFrame::Response`).
    pub async fn call_at<C: Call>(&self, c: C) -> Result<(C::Answer, Option<Seq>), ClientError> {
        let (resp, seq) = self.request(c.into()).await?;
        Ok((C::expect(resp)?, seq))
    }

    /// [`TrackerLink::call_at`] with the untyped request and answer.
    async fn request(&self, req: Request) -> Result<(Response, Option<Seq>), ClientError> {
        let live = self.inner.live.lock().clone().ok_or(ClientError::Offline)?;
        let id = live.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_frame(&ClientFrame::Request { id, req })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = live.pending.lock();
            if p.closed {
                return Err(ClientError::Offline);
            }
            p.waiting.insert(id, tx);
        }
        if live.out.send(bytes).await.is_err() {
            live.pending.lock().waiting.remove(&id);
            return Err(ClientError::Offline);
        }
        match rx.await.map_err(|_| ClientError::Lost)? {
            (Response::Error(e), _) => Err(ClientError::Refused(e)),
            answer => Ok(answer),
        }
    }

    /// Asks the tracker to have the other members wake `info_hash` for
    /// this member (a `Want`; they get [`LinkEvent::Wanted`] with this
    /// member's BitTorrent address). Fire and forget: never waits, and when
    /// offline (or the connection's queue is full) the request is dropped
    /// with a debug log; the caller asks again if it still needs pieces.
    pub fn want(&self, info_hash: InfoHash) {
        let Some(live) = self.inner.live.lock().clone() else {
            tracing::debug!(%info_hash, "not connected to the tracker: Want dropped");
            return;
        };
        let id = live.next_id.fetch_add(1, Ordering::Relaxed);
        // Its answer (Ok) matches no waiting request and is skipped.
        let bytes = match encode_frame(&ClientFrame::Request { id, req: calls::Want { info_hash }.into() }) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(%info_hash, error = %e, "cannot encode Want");
                return;
            }
        };
        if let Err(e) = live.out.try_send(bytes) {
            tracing::debug!(%info_hash, error = %e, "Want dropped");
        }
    }

    pub fn is_online(&self) -> bool {
        self.inner.online.load(Ordering::Acquire)
    }

    /// Closes the connection and stops reconnecting.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
        if let Some(live) = self.inner.live.lock().take() {
            live.close();
        }
        self.inner.online.store(false, Ordering::Release);
    }
}

/// Why a session ended.
enum End {
    /// `shutdown` or all handles dropped.
    Stopped,
    /// The tracker refused us (credential, protocol): retry slowly.
    Refused(ClientError),
    /// Network trouble: retry with backoff.
    Lost(ClientError),
}

async fn run(inner: Arc<Inner>, cfg: Config, mut last_seq: Option<Seq>, events: mpsc::UnboundedSender<LinkEvent>) {
    let mut backoff = MIN_BACKOFF;
    let mut attempts_failed = 0u32;
    loop {
        let mut was_online = false;
        let end = session(&inner, &cfg, &mut last_seq, &events, &mut was_online).await;
        if was_online {
            backoff = MIN_BACKOFF;
            attempts_failed = 0;
        }
        let delay = match end {
            End::Stopped => break,
            End::Refused(e) => {
                tracing::error!(error = %e, "the tracker refused this member; retrying in {REFUSED_RETRY:?}");
                REFUSED_RETRY
            }
            End::Lost(e) => {
                if was_online {
                    tracing::warn!(error = %e, "lost the tracker; reconnecting");
                } else if attempts_failed == 0 {
                    tracing::info!(error = %e, "cannot reach the tracker; retrying");
                } else {
                    tracing::debug!(error = %e, "cannot reach the tracker; retrying");
                }
                attempts_failed = attempts_failed.saturating_add(1);
                let d = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                d
            }
        };
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    inner.online.store(false, Ordering::Release);
    tracing::debug!("tracker link stopped");
}

fn refused_or_lost(e: ClientError) -> End {
    match e {
        ClientError::Refused(_) | ClientError::Protocol(_) | ClientError::Unexpected(_) => End::Refused(e),
        ClientError::Tls(titorrent_tracker::tls::TlsError::WrongTracker { .. }) => End::Refused(e),
        other => End::Lost(other),
    }
}

/// One connection, from connect to loss. Sets `was_online` once requests
/// were possible (and `Online` emitted).
async fn session(
    inner: &Arc<Inner>,
    cfg: &Config,
    last_seq: &mut Option<Seq>,
    events: &mpsc::UnboundedSender<LinkEvent>,
    was_online: &mut bool,
) -> End {
    let connected = tokio::select! {
        _ = inner.cancel.cancelled() => return End::Stopped,
        r = handshake(cfg, *last_seq) => r,
    };
    let (rd, wr, snapshot) = match connected {
        Err(e) => return refused_or_lost(e),
        Ok(x) => x,
    };
    if let Some((seq, _)) = &snapshot {
        *last_seq = Some(*seq);
    }
    let mut conn = Conn::start(inner, rd, wr);
    *was_online = true;
    tracing::info!(from = ?last_seq, "tracker link online");
    let _ = events.send(LinkEvent::Online);
    if let Some((seq, files)) = snapshot {
        let _ = events.send(LinkEvent::Snapshot { seq, files });
    }
    let end = conn.serve(inner, last_seq, events).await;
    conn.close(inner).await;
    let _ = events.send(LinkEvent::Offline);
    end
}

/// A connection that is online: its request table, its writer and reader
/// tasks.
struct Conn {
    live: Arc<Live>,
    cancel: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
    frames: mpsc::Receiver<Result<Option<ServerFrame>, ClientError>>,
}

impl Conn {
    /// Spawns the writer and the reader and makes the connection the one
    /// requests go to.
    fn start(inner: &Arc<Inner>, rd: TlsRead, wr: TlsWrite) -> Conn {
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let live = Arc::new(Live {
            out,
            pending: Mutex::new(Pending { closed: false, waiting: HashMap::new() }),
            next_id: AtomicU64::new(SUBSCRIBE_ID + 1),
        });
        let cancel = inner.cancel.child_token();
        let writer = tokio::spawn(write_loop(wr, out_rx, cancel.clone()));
        // Frames are read on their own task: a read cut off by the select in
        // `serve` (the probe's tick) would lose the bytes of a frame half
        // read, which a large part makes likely.
        let (frames_tx, frames) = mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(tracing::Instrument::in_current_span(read_loop(rd, frames_tx)));
        *inner.live.lock() = Some(live.clone());
        inner.online.store(true, Ordering::Release);
        Conn { live, cancel, writer, reader, frames }
    }

    /// Hands on frames until the connection ends, and says why it ended.
    async fn serve(
        &mut self,
        inner: &Arc<Inner>,
        last_seq: &mut Option<Seq>,
        events: &mpsc::UnboundedSender<LinkEvent>,
    ) -> End {
        let mut probe = Probe::new();
        let mut parts = Pieces::default();
        loop {
            let frame = tokio::select! {
                _ = self.cancel.cancelled() => {
                    return if inner.cancel.is_cancelled() { End::Stopped } else { End::Lost(closed()) };
                }
                _ = probe.tick.tick() => {
                    if let Some(end) = probe.check(&self.live) {
                        return end;
                    }
                    continue;
                }
                f = self.frames.recv() => f.unwrap_or_else(|| Err(closed())),
            };
            probe.heard();
            if let Some(end) = self.on_frame(frame, &mut parts, last_seq, events) {
                return end;
            }
        }
    }

    /// One frame from the tracker; `Some` ends the connection.
    fn on_frame(
        &self,
        frame: Result<Option<ServerFrame>, ClientError>,
        pieces: &mut Pieces,
        last_seq: &mut Option<Seq>,
        events: &mpsc::UnboundedSender<LinkEvent>,
    ) -> Option<End> {
        let protocol = |e: String| Some(End::Lost(ClientError::Protocol(e)));
        let parts = &mut pieces.parts;
        match frame {
            Ok(Some(ServerFrame::Part { id, files })) => {
                if let Err(e) = parts.part(id, files) {
                    return protocol(e);
                }
            }
            Ok(Some(ServerFrame::Response { id, seq, resp })) => {
                let resp = match parts.finish(id, resp) {
                    Ok(r) => r,
                    Err(e) => return protocol(e),
                };
                let waiter = self.live.pending.lock().waiting.remove(&id);
                if let Some(tx) = waiter {
                    // The caller may have given up; that is fine.
                    let _ = tx.send((resp, seq));
                }
            }
            Ok(Some(frame)) if parts.is_open() => {
                return protocol(format!("{} between the parts of an answer", frame_name(&frame)));
            }
            Ok(Some(ServerFrame::Events { events: evs, more })) => match pieces.commit.add(*last_seq, evs, more) {
                Err(e) => return protocol(e),
                Ok(None) => {}
                Ok(Some(commit)) => {
                    *last_seq = commit.last().map(|ev| ev.seq);
                    let _ = events.send(LinkEvent::Events(commit));
                }
            },
            Ok(Some(ServerFrame::Wanted { info_hash, peer })) => {
                let _ = events.send(LinkEvent::Wanted { info_hash, peer });
            }
            Ok(Some(ServerFrame::Goodbye { reason })) => return protocol(format!("the tracker said goodbye: {reason}")),
            Ok(Some(ServerFrame::Hello { .. })) => return protocol("a second Hello".into()),
            Ok(None) => return Some(End::Lost(closed())),
            Err(e) => return Some(End::Lost(e)),
        }
        None
    }

    /// Takes the connection out of service: waiting requests fail with
    /// `Offline`, queued frames are flushed, the reader stops.
    async fn close(self, inner: &Arc<Inner>) {
        {
            let mut cur = inner.live.lock();
            if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.live)) {
                *cur = None;
            }
        }
        inner.online.store(false, Ordering::Release);
        self.live.close();
        self.cancel.cancel();
        let _ = self.writer.await;
        self.reader.abort();
    }
}

/// What a connection receives in pieces: the parts of an answer, and the
/// events of a commit that comes in more than one frame.
#[derive(Default)]
struct Pieces {
    parts: Reassembly,
    commit: Arriving,
}

/// The events of the commit arriving, until its last frame (one without
/// `more`) is in.
#[derive(Debug, Default)]
struct Arriving(Vec<Event>);

impl Arriving {
    /// Adds one `Events` frame, skipping events at or before `last` (the
    /// last seq handed on: duplicates); the first new one must come right
    /// after it (or after the events before it), else Err (a gap).
    /// Returns the whole commit once a frame without `more` ends it.
    fn add(&mut self, last: Option<Seq>, evs: Vec<Event>, more: bool) -> Result<Option<Vec<Event>>, String> {
        for ev in evs {
            let prev = self.0.last().map_or(last.map_or(0, |s| s.0), |e| e.seq.0);
            if ev.seq.0 <= prev {
                continue;
            }
            if ev.seq.0 != prev + 1 {
                return Err(format!("event {} after {prev}: resubscribing", ev.seq));
            }
            self.0.push(ev);
        }
        Ok((!more && !self.0.is_empty()).then(|| std::mem::take(&mut self.0)))
    }
}

/// Notices a tracker that vanished without a FIN: after `IDLE_PROBE` of
/// silence it asks something, and gives up after as long again.
struct Probe {
    tick: tokio::time::Interval,
    last_rx: tokio::time::Instant,
    sent: Option<tokio::time::Instant>,
}

impl Probe {
    fn new() -> Probe {
        let mut tick = tokio::time::interval(IDLE_PROBE / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Probe { tick, last_rx: tokio::time::Instant::now(), sent: None }
    }

    fn heard(&mut self) {
        self.last_rx = tokio::time::Instant::now();
        self.sent = None;
    }

    /// On each tick: `Some` when the connection is to be given up.
    fn check(&mut self, live: &Live) -> Option<End> {
        match self.sent {
            Some(at) if at.elapsed() >= IDLE_PROBE => Some(End::Lost(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the tracker stopped answering",
            )))),
            Some(_) => None,
            None if self.last_rx.elapsed() >= IDLE_PROBE => {
                self.sent = Some(tokio::time::Instant::now());
                (!send_probe(live)).then(|| End::Lost(closed()))
            }
            None => None,
        }
    }
}

/// Queues a cheap read-only request whose only purpose is an answer.
fn send_probe(live: &Live) -> bool {
    let id = live.next_id.fetch_add(1, Ordering::Relaxed);
    let Ok(bytes) = encode_frame(&ClientFrame::Request { id, req: calls::ListMembers.into() }) else { return false };
    // A full queue means requests are flowing; the answers will tell.
    !matches!(live.out.try_send(bytes), Err(mpsc::error::TrySendError::Closed(_)))
}

type Handshake = (TlsRead, TlsWrite, Option<(Seq, Vec<FileEntry>)>);

/// What a frame is, for an error message (not its rows).
fn frame_name(f: &ServerFrame) -> &'static str {
    match f {
        ServerFrame::Hello { .. } => "Hello",
        ServerFrame::Response { .. } => "a Response",
        ServerFrame::Events { .. } => "Events",
        ServerFrame::Goodbye { .. } => "Goodbye",
        ServerFrame::Wanted { .. } => "Wanted",
        ServerFrame::Part { .. } => "a Part",
    }
}

fn handshake_timed_out() -> ClientError {
    ClientError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "tracker handshake timed out"))
}

/// Connect, Hello, Authenticate, Subscribe (pipelined), and their answers:
/// up to the answer to Authenticate within [`CONNECT_TIMEOUT`], then each
/// frame of the answer to Subscribe within it again.
async fn handshake(cfg: &Config, from: Option<Seq>) -> Result<Handshake, ClientError> {
    let (mut rd, wr) = tokio::time::timeout(CONNECT_TIMEOUT, authenticate(cfg, from))
        .await
        .map_err(|_| handshake_timed_out())??;
    let mut parts = Reassembly::default();
    let resp = loop {
        let frame = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut rd)).await.map_err(|_| handshake_timed_out())?;
        match frame? {
            Some(ServerFrame::Part { id: SUBSCRIBE_ID, files }) => parts.part(SUBSCRIBE_ID, files).map_err(ClientError::Protocol)?,
            other => break parts.finish(SUBSCRIBE_ID, answer_to(other, SUBSCRIBE_ID)?).map_err(ClientError::Protocol)?,
        }
    };
    match calls::Subscribe::expect(resp)? {
        Subscription::Snapshot { seq, files } => Ok((rd, wr, Some((seq, files)))),
        Subscription::Resumed { seq } if Some(seq) == from => Ok((rd, wr, None)),
        Subscription::Resumed { seq } => {
            Err(ClientError::Protocol(format!("a Subscribe from {from:?} resumed from {seq}")))
        }
    }
}

/// Connect, send Hello, Authenticate and Subscribe, and read the answers up
/// to Authenticate's.
async fn authenticate(cfg: &Config, from: Option<Seq>) -> Result<(TlsRead, TlsWrite), ClientError> {
    let (mut rd, mut wr, local, _) = dial(&cfg.addr, &cfg.login.tls).await?;
    let peer_addr = (cfg.peer_port != 0).then(|| SocketAddr::new(local.ip(), cfg.peer_port));
    let mut hello = Vec::new();
    for f in [
        ClientFrame::Hello { version: PROTOCOL_VERSION },
        ClientFrame::Request {
            id: AUTH_ID,
            req: calls::Authenticate { group: cfg.login.group, member: cfg.login.member, peer_addr }.into(),
        },
        ClientFrame::Request { id: SUBSCRIBE_ID, req: calls::Subscribe { from }.into() },
    ] {
        hello.extend(encode_frame(&f)?);
    }
    wr.write_all(&hello).await?;
    wr.flush().await?;
    check_hello(read_frame(&mut rd).await?)?;
    calls::Authenticate::expect(answer_to(read_frame(&mut rd).await?, AUTH_ID)?)?;
    Ok((rd, wr))
}

/// `frame` as the answer to request `id` (refusals as errors).
fn answer_to(frame: Option<ServerFrame>, id: u64) -> Result<Response, ClientError> {
    match frame {
        Some(ServerFrame::Response { id: got, resp, .. }) if got == id => match resp {
            // An unauthenticated Subscribe also answers NotAuthenticated.
            Response::Error(e) => Err(ClientError::Refused(e)),
            r => Ok(r),
        },
        Some(ServerFrame::Goodbye { reason }) => Err(ClientError::Protocol(format!("the tracker said goodbye: {reason}"))),
        Some(other) => Err(ClientError::Protocol(format!("expected the answer to {id}, got {}", frame_name(&other)))),
        None => Err(closed()),
    }
}

/// Reads frames off the connection into `tx` until it ends, fails, or the
/// session stops listening.
async fn read_loop(mut rd: TlsRead, tx: mpsc::Sender<Result<Option<ServerFrame>, ClientError>>) {
    loop {
        let frame = read_frame(&mut rd).await;
        let more = matches!(frame, Ok(Some(_)));
        if tx.send(frame).await.is_err() || !more {
            return;
        }
    }
}

async fn write_loop(wr: TlsWrite, mut rx: mpsc::Receiver<Vec<u8>>, cancel: CancellationToken) {
    let mut w = BufWriter::new(wr);
    loop {
        let bytes = tokio::select! {
            _ = cancel.cancelled() => break,
            b = rx.recv() => match b { Some(b) => b, None => break },
        };
        let write = async {
            w.write_all(&bytes).await?;
            if rx.is_empty() {
                w.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let res = tokio::select! {
            _ = cancel.cancelled() => break,
            r = write => r,
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "write to the tracker failed");
            break;
        }
    }
    // The reader notices through the token and ends the session.
    cancel.cancel();
}

//! One client connection: one task that reads requests, answers them in
//! order and writes the answers, plus a pump task once subscribed.
//!
//! Requests are applied in arrival order. Answers leave in the same order:
//! one that waits for durability (a [`Ticket`]) holds back those behind
//! it, so a client may pipeline requests and several replies share one
//! flush. Everything that is ready when the task runs out of input (the
//! answers to every complete frame read, events the pump handed over) goes
//! out in one write: a request answered from memory costs one read and one
//! write on this task, and no hand-off to another task or thread.
//!
//! A file table answer (`Snapshot`, `Files`) goes out in bounded parts
//! (see `table.rs`), one part per write; what is queued behind it waits
//! until its last part, as behind an answer that waits for durability.
//!
//! A malformed, oversized or out-of-protocol frame closes this connection
//! only. When a member leaves, its other connections are refused from then
//! on (`NotAuthenticated`) and closed with a `Goodbye`; the connection that
//! sent `Leave` stays open, unauthenticated.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::commit::Ticket;
use super::limits::{PreAuth, PREAUTH_MAX_FRAME};
use super::ops::{Auth, Outcome};
use super::subscribe::Pump;
use super::table::{TableAnswer, TableKind};
use super::Tracker;
use crate::calls::{self, Answer, Call, Subscription};
use crate::proto::{
    decode_body, encode_frame_into, ClientFrame, Fingerprint, FrameError, MemberId, ProtoError, Request, Response, Seq,
    ServerFrame, MAX_FRAME, PROTOCOL_VERSION,
};

/// Frames queued behind an answer that waits, and frames the pump may hand
/// over before it blocks: a slow client stalls its own pump and reads,
/// nobody else.
const OUT_QUEUE: usize = 256;
/// Read buffer room kept free before each read.
const READ_ROOM: usize = 16 * 1024;
/// A write buffer grown past this (a large torrent) is given back.
pub(crate) const OUT_KEEP: usize = 256 * 1024;

/// What is written to the client, in order.
pub(crate) enum Out {
    Frame(ServerFrame),
    /// A reply, written once `wait` (if any) resolves.
    Reply { id: u64, resp: Response, wait: Option<Ticket> },
    /// A file table answer, sent in parts once `wait` (if any) resolves.
    Table { answer: TableAnswer, wait: Option<Ticket> },
}

/// An answer that waits for durability before it goes out.
enum Held {
    Reply(u64, Option<Seq>, Response),
    Table(TableAnswer),
}

type Waiting = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Serves the binary protocol on an accepted TLS stream whose client
/// showed the certificate `key`. Until it authenticates it holds
/// `preauth`, may send frames of [`PREAUTH_MAX_FRAME`] at most, and is
/// closed at `auth_by`.
pub(crate) async fn run<S>(
    tracker: Arc<Tracker>,
    mut stream: S,
    remote: SocketAddr,
    key: Fingerprint,
    preauth: PreAuth,
    auth_by: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cancel = tracker.cancel.child_token();
    let (push, push_rx) = mpsc::channel(OUT_QUEUE);
    let mut conn = Conn {
        tracker,
        remote,
        key,
        preauth: Some(preauth),
        auth: None,
        revoked: None,
        push,
        pump: None,
        cancel: cancel.clone(),
        hello: false,
        queue: VecDeque::new(),
        head: None,
        streaming: None,
        out: Vec::with_capacity(4096),
        closing: None,
    };
    let reason = conn.serve(&mut stream, push_rx, auth_by).await;
    tracing::debug!(%remote, "connection closing: {reason}");
    if let Some(p) = conn.pump.take() {
        p.abort();
    }
    // Dropping `auth` may take the member offline.
    drop(conn);
    // Bounded: a peer that stopped reading must not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    cancel.cancel();
}

struct Conn {
    tracker: Arc<Tracker>,
    remote: SocketAddr,
    /// The fingerprint of the client's TLS certificate: the key it proved
    /// it holds.
    key: Fingerprint,
    /// Held until the connection first authenticates.
    preauth: Option<PreAuth>,
    auth: Option<Auth>,
    /// Resolves when the authenticated member leaves the group.
    revoked: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Handed to the pump: the frames it pushes.
    push: mpsc::Sender<Out>,
    pump: Option<JoinHandle<()>>,
    cancel: CancellationToken,
    hello: bool,
    /// Frames behind `head`, in order.
    queue: VecDeque<Out>,
    /// The oldest answer not written yet, waiting for durability.
    head: Option<(Held, Waiting)>,
    /// A file table answer being sent, a part per write; what is queued
    /// waits behind it.
    streaming: Option<TableAnswer>,
    /// Encoded frames ready to be written.
    out: Vec<u8>,
    /// Set once the connection is to end: it ends when everything queued
    /// before (a `Goodbye`, say) has been written.
    closing: Option<Stop>,
}

/// Why the connection ended.
enum Stop {
    Eof,
    Cancelled,
    WriteFailed(std::io::Error),
    Bad(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Eof => f.write_str("peer closed"),
            Stop::Cancelled => f.write_str("cancelled"),
            Stop::WriteFailed(e) => write!(f, "write failed: {e}"),
            Stop::Bad(why) => f.write_str(why),
        }
    }
}

/// The one place a handler's answer becomes a `Response`: `C` names the
/// request answered, and the handler must have returned that call's answer.
fn answer<C: Call>(outcome: Outcome<C::Answer>) -> Outcome<Response> {
    outcome.map(|(a, wait)| (a.into_response(), wait))
}

/// Waits for `f`, or forever when there is none.
async fn wait_opt<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Waits for the oldest unwritten answer's durability, or forever.
async fn wait_head(head: &mut Option<(Held, Waiting)>) -> Result<(), String> {
    match head {
        Some((_, w)) => w.as_mut().await,
        None => std::future::pending().await,
    }
}

impl Conn {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        mut push_rx: mpsc::Receiver<Out>,
        auth_deadline: tokio::time::Instant,
    ) -> Stop {
        let mut inbuf = BytesMut::with_capacity(READ_ROOM);
        let cancel = self.cancel.clone();
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        self.enqueue(Out::Frame(ServerFrame::Hello { version: PROTOCOL_VERSION }));
        loop {
            self.next_part();
            if !self.out.is_empty() {
                let res = tokio::select! {
                    _ = &mut cancelled => return Stop::Cancelled,
                    r = stream.write_all(&self.out) => r,
                };
                if let Err(e) = res {
                    return Stop::WriteFailed(e);
                }
                self.out.clear();
                if self.out.capacity() > OUT_KEEP {
                    self.out.shrink_to(OUT_KEEP / 4);
                }
            }
            if self.closing.is_some() && self.head.is_none() && self.streaming.is_none() && self.queue.is_empty() {
                return self.closing.take().unwrap_or(Stop::Eof);
            }
            let open = self.closing.is_none() && self.queue.len() < OUT_QUEUE;
            if inbuf.capacity() - inbuf.len() < READ_ROOM / 4 {
                inbuf.reserve(READ_ROOM);
            }
            tokio::select! {
                _ = &mut cancelled => return Stop::Cancelled,
                _ = wait_opt(&mut self.revoked), if open => {
                    self.revoked = None;
                    self.goodbye("the member left the group".into());
                }
                _ = tokio::time::sleep_until(auth_deadline), if open && self.preauth.is_some() => {
                    self.goodbye("not authenticated in time".into());
                }
                r = stream.read_buf(&mut inbuf), if open => match r {
                    // (Possibly in the middle of a frame: the rest is dropped.)
                    Ok(0) => return Stop::Eof,
                    Ok(_) => self.on_input(&mut inbuf),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Stop::Eof,
                    Err(e) => return Stop::Bad(e.to_string()),
                },
                item = push_rx.recv(), if open => {
                    if let Some(item) = item {
                        self.enqueue(item);
                        while self.queue.len() < OUT_QUEUE {
                            match push_rx.try_recv() {
                                Ok(item) => self.enqueue(item),
                                Err(_) => break,
                            }
                        }
                    }
                }
                r = wait_head(&mut self.head) => self.head_done(r),
                // The next part goes out on the next turn; input and the
                // pump are still served in between.
                _ = std::future::ready(()), if self.streaming.is_some() => {}
            }
        }
    }

    /// Handles every complete frame in `inbuf`.
    fn on_input(&mut self, inbuf: &mut BytesMut) {
        while self.closing.is_none() && inbuf.len() >= 4 {
            let len = u32::from_be_bytes([inbuf[0], inbuf[1], inbuf[2], inbuf[3]]) as usize;
            let limit = if self.preauth.is_some() { PREAUTH_MAX_FRAME } else { MAX_FRAME };
            if len > limit {
                tracing::info!(remote = %self.remote, "closing connection: frame of {len} bytes (limit {limit})");
                self.close(Stop::Bad(FrameError::TooLarge(len).to_string()));
                return;
            }
            // The buffer grows as bytes arrive (see `serve`), never to the
            // declared length: a stalled sender costs what it sent.
            if inbuf.len() < 4 + len {
                return;
            }
            let frame = decode_body::<ClientFrame>(&inbuf[4..4 + len]);
            inbuf.advance(4 + len);
            match frame {
                Ok(f) => self.on_frame(f),
                Err(e) => {
                    tracing::info!(remote = %self.remote, error = %e, "closing connection: undecodable frame");
                    self.close(Stop::Bad(e.to_string()));
                }
            }
        }
    }

    fn on_frame(&mut self, frame: ClientFrame) {
        match (self.hello, frame) {
            (false, ClientFrame::Hello { version }) if version == PROTOCOL_VERSION => self.hello = true,
            (false, ClientFrame::Hello { version }) => self.goodbye(format!(
                "protocol version {version} is not supported; this tracker speaks {PROTOCOL_VERSION}"
            )),
            (false, ClientFrame::Request { .. }) => self.goodbye("the first frame must be Hello".into()),
            (true, ClientFrame::Hello { .. }) => self.goodbye("Hello sent twice".into()),
            (true, ClientFrame::Request { id, req }) => self.handle(id, req),
        }
    }

    /// Ends the connection once what is queued so far is written.
    fn close(&mut self, why: Stop) {
        if self.closing.is_none() {
            self.closing = Some(why);
        }
    }

    fn goodbye(&mut self, reason: String) {
        tracing::info!(remote = %self.remote, "refusing connection: {reason}");
        self.enqueue(Out::Frame(ServerFrame::Goodbye { reason: reason.clone() }));
        self.close(Stop::Bad(reason));
    }

    /// Writes `o` now if nothing waits before it, else queues it.
    fn enqueue(&mut self, o: Out) {
        if self.head.is_none() && self.streaming.is_none() && self.queue.is_empty() {
            self.emit(o);
        } else {
            self.queue.push_back(o);
        }
    }

    fn emit(&mut self, o: Out) {
        match o {
            Out::Frame(f) => self.encode(f),
            Out::Reply { id, resp, wait: None } => self.encode(ServerFrame::Response { id, seq: None, resp }),
            Out::Reply { id, resp, wait: Some(t) } => self.head = Some((Held::Reply(id, t.seq(), resp), Box::pin(t.wait()))),
            Out::Table { answer, wait: None } => self.streaming = Some(answer),
            Out::Table { answer, wait: Some(t) } => self.head = Some((Held::Table(answer), Box::pin(t.wait()))),
        }
    }

    /// Encodes the next part of the table being sent, if any; after its
    /// last, what queued behind it.
    fn next_part(&mut self) {
        let Some(answer) = self.streaming.as_mut() else { return };
        let (frame, last) = answer.next_frame();
        if last {
            self.streaming = None;
        }
        self.encode(frame);
        if last {
            self.drain();
        }
    }

    /// Emits queued frames until one waits (for durability, or to be
    /// streamed).
    fn drain(&mut self) {
        while self.head.is_none() && self.streaming.is_none() {
            match self.queue.pop_front() {
                Some(o) => self.emit(o),
                None => break,
            }
        }
    }

    /// The waiting answer may go: it and what queued behind it (up to the
    /// next one that waits).
    fn head_done(&mut self, r: Result<(), String>) {
        let Some((held, _)) = self.head.take() else { return };
        match (held, r) {
            (Held::Reply(id, seq, resp), Ok(())) => self.encode(ServerFrame::Response { id, seq, resp }),
            (Held::Table(answer), Ok(())) => self.streaming = Some(answer),
            (Held::Reply(id, _, _) | Held::Table(TableAnswer { id, .. }), Err(e)) => {
                tracing::warn!(error = %e, "reply not durable");
                self.encode(ServerFrame::Response { id, seq: None, resp: Response::Error(ProtoError::Internal(e)) });
            }
        }
        self.drain();
    }

    fn encode(&mut self, frame: ServerFrame) {
        if let Err(e) = encode_frame_into(&mut self.out, &frame) {
            tracing::warn!(error = %e, "cannot encode a frame");
            let ServerFrame::Response { id, .. } = frame else {
                self.close(Stop::Bad(format!("cannot encode a frame: {e}")));
                return;
            };
            let err = ServerFrame::Response {
                id,
                seq: None,
                resp: Response::Error(ProtoError::Internal(format!("reply cannot be sent: {e}"))),
            };
            if encode_frame_into(&mut self.out, &err).is_err() {
                self.close(Stop::Bad(format!("cannot encode a frame: {e}")));
            }
        }
    }

    fn authed(&self) -> Result<&Auth, ProtoError> {
        self.auth.as_ref().filter(|a| !a.revoked.is_cancelled()).ok_or(ProtoError::NotAuthenticated)
    }

    fn handle(&mut self, id: u64, req: Request) {
        if let Request::Subscribe { from } = req {
            return self.subscribe(id, from);
        }
        if let Request::ListFiles = req {
            return self.list_files(id);
        }
        let (resp, wait) = match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => (Response::Error(e), None),
        };
        self.enqueue(Out::Reply { id, resp, wait });
    }

    fn dispatch(&mut self, req: Request) -> Outcome<Response> {
        let t = &self.tracker;
        match req {
            Request::CreateGroup { admin_token, group_name, member_name, peer_addr } => {
                if !t.admin.matches(&admin_token) {
                    tracing::info!(remote = %self.remote, "group creation refused: not the admin token");
                    return Err(ProtoError::NotAdmin);
                }
                let (created, wait, auth) = t.create_group(group_name, member_name, self.key, peer_addr, self.remote)?;
                self.set_auth(auth);
                answer::<calls::CreateGroup>(Ok((created, wait)))
            }
            Request::Join { group, invite, member_name, peer_addr } => {
                let (joined, wait, auth) = t.join(group, &invite, member_name, self.key, peer_addr, self.remote)?;
                self.set_auth(auth);
                answer::<calls::Join>(Ok((joined, wait)))
            }
            Request::Authenticate { group, member, peer_addr } => {
                let (authenticated, auth) = t.authenticate(group, member, &self.key, peer_addr, self.remote)?;
                self.set_auth(auth);
                answer::<calls::Authenticate>(Ok((authenticated, None)))
            }
            Request::CreateInvite { ttl_ms, uses } => answer::<calls::CreateInvite>(t.create_invite(self.authed()?, ttl_ms, uses)),
            Request::ListMembers => answer::<calls::ListMembers>(t.list_members(self.authed()?)),
            Request::CreateFile { parent, name, kind, mode, lock, owner } => {
                answer::<calls::CreateFile>(t.create_file(self.authed()?, parent, name, kind, mode, lock, owner))
            }
            Request::Lock { file } => answer::<calls::Lock>(t.lock(self.authed()?, file)),
            Request::Renew { lease } => answer::<calls::Renew>(t.renew(self.authed()?, lease)),
            Request::Unlock { lease } => answer::<calls::Unlock>(t.unlock(self.authed()?, lease)),
            Request::Publish { file, base, lease, size, mtime, info_hash, torrent, keep_lock } => {
                answer::<calls::Publish>(t.publish(self.authed()?, file, base, lease, size, mtime, info_hash, torrent, keep_lock))
            }
            Request::GetTorrent { file, version } => answer::<calls::GetTorrent>(t.get_torrent(self.authed()?, file, version)),
            Request::Delete { file } => answer::<calls::Delete>(t.delete(self.authed()?, file)),
            Request::Rename { file, new_parent, new_name, replace } => {
                answer::<calls::Rename>(t.rename(self.authed()?, file, new_parent, new_name, replace))
            }
            Request::SetAttr { file, mode, mtime, owner } => answer::<calls::SetAttr>(t.set_attr(self.authed()?, file, mode, mtime, owner)),
            Request::Have { file, version } => answer::<calls::Have>(t.have(self.authed()?, file, version)),
            Request::Want { info_hash } => answer::<calls::Want>(t.want(self.authed()?, info_hash)),
            Request::ExportKey { info_hash, ttl_ms, port } => answer::<calls::ExportKey>(t.export_key(self.authed()?, info_hash, ttl_ms, port)),
            Request::Unexport { info_hash } => answer::<calls::Unexport>(t.unexport(self.authed()?, info_hash)),
            Request::Leave => {
                let r = answer::<calls::Leave>(t.leave(self.authed()?))?;
                // Its subscription was for a group it is no longer in.
                if let Some(p) = self.pump.take() {
                    p.abort();
                }
                self.auth = None;
                self.revoked = None;
                Ok(r)
            }
            Request::RemoveMember { member } => answer::<calls::RemoveMember>(t.remove_member(self.authed()?, member)),
            Request::SetAdmin { member, admin } => answer::<calls::SetAdmin>(t.set_admin(self.authed()?, member, admin)),
            Request::ForceUnlock { file } => answer::<calls::ForceUnlock>(t.force_unlock(self.authed()?, file)),
            Request::SetLockLimit { max_ms } => answer::<calls::SetLockLimit>(t.set_lock_limit(self.authed()?, max_ms)),
            Request::ListVersions { file } => answer::<calls::ListVersions>(t.list_versions(self.authed()?, file)),
            Request::Restore { file, version, lease } => answer::<calls::Restore>(t.restore(self.authed()?, file, version, lease)),
            Request::LockExplicit { file, ttl_ms } => answer::<calls::LockExplicit>(t.lock_explicit(self.authed()?, file, ttl_ms)),
            Request::UnlockFile { file } => answer::<calls::UnlockFile>(t.unlock_file(self.authed()?, file)),
            Request::ReadLog { after, limit } => answer::<calls::ReadLog>(t.read_log(self.authed()?, after, limit)),
            Request::ListTrash => answer::<calls::ListTrash>(t.list_trash(self.authed()?)),
            Request::Undelete { file, parent, name } => answer::<calls::Undelete>(t.undelete(self.authed()?, file, parent, name)),
            Request::Subscribe { .. } | Request::ListFiles => {
                Err(ProtoError::BadRequest("answered in parts elsewhere".into()))
            }
        }
    }

    /// Switches the connection's identity. The new identity is counted
    /// before the old one is dropped, so re-authenticating as the same
    /// member does not flap it offline. A subscription of the old identity
    /// ends (it was for the old group).
    fn set_auth(&mut self, auth: Auth) {
        let same_group = self.auth.as_ref().is_some_and(|a| a.group.id == auth.group.id);
        if !same_group {
            if let Some(p) = self.pump.take() {
                p.abort();
            }
        }
        self.revoked = Some(Box::pin(auth.revoked.clone().cancelled_owned()));
        self.auth = Some(auth);
        self.preauth = None;
    }

    fn list_files(&mut self, id: u64) {
        let Ok(group) = self.authed().map(|a| a.group.clone()) else {
            return self.enqueue(Out::Reply { id, resp: Response::Error(ProtoError::NotAuthenticated), wait: None });
        };
        let (seq, files, wait) = self.tracker.file_table(&group);
        self.enqueue(Out::Table { answer: TableAnswer::new(id, TableKind::Files, seq, files), wait });
    }

    fn subscribe(&mut self, id: u64, from: Option<Seq>) {
        let Ok(group) = self.authed().map(|a| a.group.clone()) else {
            return self.enqueue(Out::Reply { id, resp: Response::Error(ProtoError::NotAuthenticated), wait: None });
        };
        if let Some(p) = self.pump.take() {
            p.abort();
        }
        // Register for live events before reading where the client starts.
        let rx = group.events.subscribe();
        let resume = {
            let st = group.state.lock();
            let current = st.current_seq().0;
            from.filter(|f| f.0 <= current && f.0.saturating_add(1) >= st.log_start)
        };
        let (answer, start) = match resume {
            Some(f) => {
                let wait = self.tracker.committer.durable_at(&group, f);
                (Out::Reply { id, resp: Subscription::Resumed { seq: f }.into_response(), wait }, f)
            }
            None => {
                let (seq, files, wait) = self.tracker.file_table(&group);
                (Out::Table { answer: TableAnswer::new(id, TableKind::Snapshot, seq, files), wait }, seq)
            }
        };
        self.enqueue(answer);
        let me = self.auth.as_ref().map_or(MemberId(0), |a| a.member);
        let pump = Pump {
            store: self.tracker.store.clone(),
            group: group.clone(),
            rx,
            notices: group.notices.subscribe(),
            me,
            last: start.0,
            out: self.push.clone(),
            conn: self.cancel.clone(),
        };
        self.pump = Some(super::spawn(tracing::Span::current(), pump.run()));
    }
}

//! One client connection: handshake, a reader loop that handles requests in
//! order, and a writer task fed by a bounded queue.
//!
//! Requests are applied in arrival order by the reader; a reply that waits
//! for durability waits in the writer, in order, so a client may pipeline
//! requests and several replies share one flush. A malformed, oversized or
//! out-of-protocol frame closes this connection only.
//!
//! When a member leaves, its other connections are refused from then on
//! (`NotAuthenticated`) and closed with a `Goodbye`; the connection that
//! sent `Leave` stays open, unauthenticated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::commit::Ticket;
use super::ops::Auth;
use super::subscribe::Pump;
use super::Tracker;
use crate::proto::{
    decode_body, encode_frame, ClientFrame, ProtoError, Request, Response, Seq, ServerFrame,
    PROTOCOL_VERSION,
};

/// Frames queued for the writer; a slow client stalls its own pump and
/// reader, nobody else.
const OUT_QUEUE: usize = 256;
/// How long a new connection may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the writer sends.
pub(crate) enum Out {
    Frame(ServerFrame),
    /// A reply, written once `wait` (if any) resolves.
    Reply { id: u64, resp: Response, wait: Option<Ticket> },
}

use crate::frame_io::{read_body as read_frame, ReadError};


pub(crate) async fn run(tracker: Arc<Tracker>, stream: TcpStream, remote: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let (rd, wr) = stream.into_split();
    let cancel = tracker.cancel.child_token();
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = super::spawn(tracing::Span::current(), write_loop(wr, out_rx, cancel.clone()));
    let mut conn = Conn { tracker, remote, auth: None, out, pump: None, cancel: cancel.clone() };
    let reason = conn.read_loop(BufReader::new(rd)).await;
    tracing::debug!(%remote, "connection closing: {reason}");
    if let Some(p) = conn.pump.take() {
        p.abort();
    }
    // Dropping `auth` may take the member offline; dropping `out` lets the
    // writer drain what is queued (a Goodbye) and end.
    drop(conn);
    let _ = writer.await;
    cancel.cancel();
}

async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Out>, cancel: CancellationToken) {
    let mut w = BufWriter::new(wr);
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => break,
            item = rx.recv() => match item { Some(i) => i, None => break },
        };
        let (frame, last) = match item {
            Out::Frame(f) => {
                let last = matches!(f, ServerFrame::Goodbye { .. });
                (f, last)
            }
            Out::Reply { id, resp, wait } => {
                let resp = match wait {
                    None => resp,
                    Some(t) => match tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = t.wait() => r,
                    } {
                        Ok(()) => resp,
                        Err(e) => {
                            tracing::warn!(error = %e, "reply not durable");
                            Response::Error(ProtoError::Internal(e))
                        }
                    },
                };
                (ServerFrame::Response { id, resp }, false)
            }
        };
        let bytes = match encode_frame(&frame) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a frame");
                let ServerFrame::Response { id, .. } = frame else { break };
                let err = ServerFrame::Response {
                    id,
                    resp: Response::Error(ProtoError::Internal(format!("reply cannot be sent: {e}"))),
                };
                match encode_frame(&err) {
                    Ok(b) => b,
                    Err(_) => break,
                }
            }
        };
        let write = async {
            w.write_all(&bytes).await?;
            if last || rx.is_empty() {
                w.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let res = tokio::select! {
            _ = cancel.cancelled() => break,
            r = write => r,
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "write failed");
            break;
        }
        if last {
            break;
        }
    }
    // Bounded: a peer that stopped reading must not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
    // The reader stops too: nothing more can be answered.
    cancel.cancel();
}

struct Conn {
    tracker: Arc<Tracker>,
    remote: SocketAddr,
    auth: Option<Auth>,
    out: mpsc::Sender<Out>,
    pump: Option<JoinHandle<()>>,
    cancel: CancellationToken,
}

/// Why the reader stopped.
enum Stop {
    Eof,
    Cancelled,
    WriterGone,
    /// The member this connection was authenticated as left the group.
    Revoked,
    Bad(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Eof => f.write_str("peer closed"),
            Stop::Cancelled => f.write_str("cancelled"),
            Stop::WriterGone => f.write_str("writer ended"),
            Stop::Revoked => f.write_str("member left the group"),
            Stop::Bad(why) => f.write_str(why),
        }
    }
}

impl Conn {
    async fn send(&self, o: Out) -> Result<(), Stop> {
        self.out.send(o).await.map_err(|_| Stop::WriterGone)
    }

    async fn goodbye(&self, reason: String) -> Stop {
        tracing::info!(remote = %self.remote, "refusing connection: {reason}");
        let _ = self.send(Out::Frame(ServerFrame::Goodbye { reason: reason.clone() })).await;
        Stop::Bad(reason)
    }

    async fn next_frame<R: AsyncRead + Unpin>(&self, rd: &mut R) -> Result<ClientFrame, Stop> {
        let revoked = self.auth.as_ref().map(|a| a.revoked.clone());
        let revoked = async {
            match revoked {
                Some(t) => t.cancelled_owned().await,
                None => std::future::pending().await,
            }
        };
        let body = tokio::select! {
            _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
            _ = revoked => return Err(Stop::Revoked),
            r = read_frame(rd) => r,
        };
        let body = match body {
            Ok(Some(b)) => b,
            Ok(None) => return Err(Stop::Eof),
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Stop::Eof),
            Err(e) => {
                tracing::info!(remote = %self.remote, error = %e, "closing connection: bad frame");
                return Err(Stop::Bad(e.to_string()));
            }
        };
        decode_body::<ClientFrame>(&body).map_err(|e| {
            tracing::info!(remote = %self.remote, error = %e, "closing connection: undecodable frame");
            Stop::Bad(e.to_string())
        })
    }

    async fn read_loop<R: AsyncRead + Unpin>(&mut self, mut rd: R) -> Stop {
        if self.send(Out::Frame(ServerFrame::Hello { version: PROTOCOL_VERSION })).await.is_err() {
            return Stop::WriterGone;
        }
        let first = match tokio::time::timeout(HELLO_TIMEOUT, self.next_frame(&mut rd)).await {
            Err(_) => return self.goodbye("no Hello received in time".into()).await,
            Ok(Err(stop)) => return stop,
            Ok(Ok(f)) => f,
        };
        match first {
            ClientFrame::Hello { version } if version == PROTOCOL_VERSION => {}
            ClientFrame::Hello { version } => {
                return self
                    .goodbye(format!(
                        "protocol version {version} is not supported; this tracker speaks {PROTOCOL_VERSION}"
                    ))
                    .await
            }
            ClientFrame::Request { .. } => return self.goodbye("the first frame must be Hello".into()).await,
        }
        loop {
            let frame = match self.next_frame(&mut rd).await {
                Ok(f) => f,
                Err(Stop::Revoked) => return self.goodbye("the member left the group".into()).await,
                Err(stop) => return stop,
            };
            let res = match frame {
                ClientFrame::Hello { .. } => return self.goodbye("Hello sent twice".into()).await,
                ClientFrame::Request { id, req } => self.handle(id, req).await,
            };
            if let Err(stop) = res {
                return stop;
            }
        }
    }

    fn authed(&self) -> Result<&Auth, ProtoError> {
        self.auth.as_ref().filter(|a| !a.revoked.is_cancelled()).ok_or(ProtoError::NotAuthenticated)
    }

    async fn handle(&mut self, id: u64, req: Request) -> Result<(), Stop> {
        if let Request::Subscribe { from } = req {
            return self.subscribe(id, from).await;
        }
        let (resp, wait) = match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => (Response::Error(e), None),
        };
        self.send(Out::Reply { id, resp, wait }).await
    }

    fn dispatch(&mut self, req: Request) -> Result<(Response, Option<Ticket>), ProtoError> {
        let t = self.tracker.clone();
        match req {
            Request::CreateGroup { group_name, member_name, peer_addr } => {
                let (resp, wait, auth) = t.create_group(group_name, member_name, peer_addr, self.remote)?;
                self.set_auth(auth);
                Ok((resp, wait))
            }
            Request::Join { group, invite, member_name, peer_addr } => {
                let (resp, wait, auth) = t.join(group, &invite, member_name, peer_addr, self.remote)?;
                self.set_auth(auth);
                Ok((resp, wait))
            }
            Request::Authenticate { credential, peer_addr } => {
                let (resp, auth) = t.authenticate(&credential, peer_addr, self.remote)?;
                self.set_auth(auth);
                Ok((resp, None))
            }
            Request::CreateInvite { ttl_ms, uses } => t.create_invite(self.authed()?, ttl_ms, uses),
            Request::ListMembers => t.list_members(self.authed()?),
            Request::ListFiles => t.list_files(self.authed()?),
            Request::CreateFile { parent, name, kind, mode, lock } => {
                t.create_file(self.authed()?, parent, name, kind, mode, lock)
            }
            Request::Lock { file } => t.lock(self.authed()?, file),
            Request::Renew { lease } => t.renew(self.authed()?, lease),
            Request::Unlock { lease } => t.unlock(self.authed()?, lease),
            Request::Publish { file, base, lease, size, mtime, info_hash, torrent, keep_lock } => {
                t.publish(self.authed()?, file, base, lease, size, mtime, info_hash, torrent, keep_lock)
            }
            Request::GetTorrent { file, version } => t.get_torrent(self.authed()?, file, version),
            Request::Delete { file } => t.delete(self.authed()?, file),
            Request::Rename { file, new_parent, new_name, replace } => {
                t.rename(self.authed()?, file, new_parent, new_name, replace)
            }
            Request::SetAttr { file, mode, mtime } => t.set_attr(self.authed()?, file, mode, mtime),
            Request::Have { file, version } => t.have(self.authed()?, file, version),
            Request::Leave => {
                let r = t.leave(self.authed()?)?;
                // Its subscription was for a group it is no longer in.
                if let Some(p) = self.pump.take() {
                    p.abort();
                }
                self.auth = None;
                Ok(r)
            }
            Request::ListVersions { file } => t.list_versions(self.authed()?, file),
            Request::Restore { file, version, lease } => t.restore(self.authed()?, file, version, lease),
            Request::LockExplicit { file, ttl_ms } => t.lock_explicit(self.authed()?, file, ttl_ms),
            Request::UnlockFile { file } => t.unlock_file(self.authed()?, file),
            Request::ReadLog { after, limit } => t.read_log(self.authed()?, after, limit),
            Request::Subscribe { .. } => Err(ProtoError::BadRequest("subscribe handled elsewhere".into())),
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
        self.auth = Some(auth);
    }

    async fn subscribe(&mut self, id: u64, from: Option<Seq>) -> Result<(), Stop> {
        let Ok(group) = self.authed().map(|a| a.group.clone()) else {
            return self.send(Out::Reply { id, resp: Response::Error(ProtoError::NotAuthenticated), wait: None }).await;
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
        let (resp, start) = match resume {
            Some(f) => (Response::Subscribed { seq: f }, f),
            None => {
                let (seq, files, _) = self.tracker.file_table(&group);
                (Response::Snapshot { seq, files }, seq)
            }
        };
        let wait = self.tracker.committer.durable_at(&group, start);
        self.send(Out::Reply { id, resp, wait }).await?;
        let pump = Pump {
            store: self.tracker.store.clone(),
            group: group.clone(),
            rx,
            last: start.0,
            out: self.out.clone(),
            conn: self.cancel.clone(),
        };
        self.pump = Some(super::spawn(tracing::Span::current(), pump.run()));
        Ok(())
    }
}

//! A one-shot, sequential connection to the tracker, for CLI commands.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::frame::{closed, read_frame, write_frame};
use super::ClientError;
use titorrent_tracker::calls::Call;
use titorrent_tracker::proto::{ClientFrame, Fingerprint, Reassembly, Request, Response, ServerFrame, PROTOCOL_VERSION};
use titorrent_tracker::tls::ClientTls;

pub(crate) type TlsRead = BufReader<ReadHalf<TlsStream<TcpStream>>>;
pub(crate) type TlsWrite = WriteHalf<TlsStream<TcpStream>>;

/// TCP, then TLS 1.3 with this member's key, checking the tracker's
/// against the pinned one; returns the halves, this end's address and the
/// tracker's fingerprint.
pub(crate) async fn dial(addr: &str, tls: &ClientTls) -> Result<(TlsRead, TlsWrite, SocketAddr, Fingerprint), ClientError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("connecting to the tracker"))??;
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let (stream, fingerprint) = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(addr, stream))
        .await
        .map_err(|_| timed_out("the TLS handshake with the tracker"))??;
    let (rd, wr) = tokio::io::split(stream);
    Ok((BufReader::new(rd), wr, local, fingerprint))
}

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer, or the next part of one sent in parts, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn timed_out(what: &str) -> ClientError {
    ClientError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out")))
}

/// One request at a time; events and notices the tracker pushes are skipped.
pub struct Connection {
    rd: TlsRead,
    wr: TlsWrite,
    local: SocketAddr,
    tracker_key: Fingerprint,
    next_id: u64,
}

impl Connection {
    /// Connects to `addr` (host:port) over TLS (see [`dial`]) and
    /// exchanges Hellos.
    pub async fn connect(addr: &str, tls: &ClientTls) -> Result<Self, ClientError> {
        let (rd, wr, local, tracker_key) = dial(addr, tls).await?;
        let mut c = Connection { rd, wr, local, tracker_key, next_id: 1 };
        write_frame(&mut c.wr, &ClientFrame::Hello { version: PROTOCOL_VERSION }).await?;
        let hello = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut c.rd))
            .await
            .map_err(|_| timed_out("the tracker's hello"))??;
        check_hello(hello)?;
        Ok(c)
    }

    /// Sends a call and waits for its answer (put together if it comes in
    /// parts: a large file table); a refusal is `Refused`, an answer of
    /// another shape `Unexpected`.
    pub async fn call<C: Call>(&mut self, c: C) -> Result<C::Answer, ClientError> {
        Ok(C::expect(self.request(c.into()).await?)?)
    }

    /// [`Connection::call`] with the untyped request and answer.
    async fn request(&mut self, req: Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(&mut self.wr, &ClientFrame::Request { id, req }).await?;
        let mut parts = Reassembly::default();
        let resp = loop {
            // Each frame within the timeout: a large table may take longer
            // as a whole on a slow link, and that is fine while it moves.
            let frame = tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut self.rd))
                .await
                .map_err(|_| timed_out("the tracker's answer"))??;
            match frame {
                Some(ServerFrame::Part { id: got, files }) if got == id => {
                    parts.part(got, files).map_err(ClientError::Protocol)?
                }
                Some(ServerFrame::Part { id: got, .. }) => {
                    return Err(ClientError::Protocol(format!("a part of answer {got}, expected {id}")))
                }
                Some(ServerFrame::Response { id: got, resp, .. }) if got == id => {
                    break parts.finish(got, resp).map_err(ClientError::Protocol)?
                }
                Some(ServerFrame::Response { id: got, .. }) => {
                    return Err(ClientError::Protocol(format!("answer to request {got}, expected {id}")))
                }
                Some(ServerFrame::Events { .. } | ServerFrame::Wanted { .. }) => continue,
                Some(ServerFrame::Goodbye { reason }) => {
                    return Err(ClientError::Protocol(format!("the tracker said goodbye: {reason}")))
                }
                Some(ServerFrame::Hello { .. }) => return Err(ClientError::Protocol("a second Hello".into())),
                None => return Err(closed()),
            }
        };
        match resp {
            Response::Error(e) => Err(ClientError::Refused(e)),
            resp => Ok(resp),
        }
    }

    /// This end's address (its IP is how this machine reaches the tracker).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The fingerprint of the tracker's key, as its TLS handshake proved.
    pub fn tracker_key(&self) -> Fingerprint {
        self.tracker_key
    }
}

/// Checks the tracker's first frame.
pub(crate) fn check_hello(frame: Option<ServerFrame>) -> Result<(), ClientError> {
    match frame {
        Some(ServerFrame::Hello { version }) if version == PROTOCOL_VERSION => Ok(()),
        Some(ServerFrame::Hello { version }) => Err(ClientError::Protocol(format!(
            "the tracker speaks protocol {version}, this client {PROTOCOL_VERSION}"
        ))),
        Some(ServerFrame::Goodbye { reason }) => Err(ClientError::Protocol(format!("the tracker said goodbye: {reason}"))),
        Some(other) => Err(ClientError::Protocol(format!("expected Hello, got {other:?}"))),
        None => Err(closed()),
    }
}

//! A raw client of the tracker that speaks the framing by hand, to send
//! what a well-behaved client never would: inside TLS as members do (with
//! a key of its own, or a member's), or in the clear.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use titorrent_tracker::proto::{
    decode_body, encode_frame, ClientFrame, Request, Response, ServerFrame, MAX_FRAME, PROTOCOL_VERSION,
};
use titorrent_tracker::tls::{ClientTls, Identity};

pub struct RawConn {
    stream: Stream,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Why no frame came.
#[derive(Debug)]
pub enum Recv {
    /// The server closed the connection (EOF or reset).
    Closed,
    TimedOut,
    /// The server sent something that is not a frame.
    Malformed(String),
}

impl RawConn {
    /// TLS with a key of its own (a stranger's), trusting any tracker key.
    pub fn connect(addr: SocketAddr) -> RawConn {
        RawConn::connect_as(addr, Arc::new(Identity::generate().expect("cannot make a key")))
    }

    /// TLS with `identity` (a member's, read from its state dir).
    pub fn connect_as(addr: SocketAddr, identity: Arc<Identity>) -> RawConn {
        let tcp = Self::tcp(addr);
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("set_read_timeout");
        let (s, _) = ClientTls { identity, pin: None }
            .connect_blocking(&addr.to_string(), tcp)
            .unwrap_or_else(|e| panic!("TLS with the tracker at {addr}: {e}"));
        RawConn { stream: Stream::Tls(Box::new(s)) }
    }

    /// Plain TCP: bytes as they are, no TLS.
    pub fn plain(addr: SocketAddr) -> RawConn {
        RawConn { stream: Stream::Plain(Self::tcp(addr)) }
    }

    fn tcp(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to the tracker at {addr}: {e}"));
        stream.set_nodelay(true).expect("set_nodelay");
        stream
    }

    /// Writes raw bytes. Returns false if the server already closed.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        match self.stream.write_all(bytes).and_then(|()| self.stream.flush()) {
            Ok(()) => true,
            Err(e) if is_closed(&e) => false,
            Err(e) => panic!("cannot write to the tracker: {e}"),
        }
    }

    pub fn send(&mut self, frame: &ClientFrame) -> bool {
        self.send_bytes(&encode_frame(frame).expect("cannot encode a frame"))
    }

    /// Sends our Hello and returns the server's.
    pub fn hello(&mut self) -> u32 {
        assert!(self.send(&ClientFrame::Hello { version: PROTOCOL_VERSION }), "tracker closed before Hello");
        match self.recv(Duration::from_secs(10)) {
            Ok(ServerFrame::Hello { version }) => version,
            other => panic!("expected the tracker's Hello, got {other:?}"),
        }
    }

    /// Sends request `id` and returns its response, skipping pushed events
    /// and notices.
    pub fn request(&mut self, id: u64, req: Request) -> Response {
        assert!(self.send(&ClientFrame::Request { id, req: req.clone() }), "tracker closed before {req:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(ServerFrame::Response { id: got, resp, .. }) if got == id => return resp,
                Ok(ServerFrame::Events { .. } | ServerFrame::Wanted { .. }) => {}
                other => panic!("expected the response to {req:?} (id {id}), got {other:?}"),
            }
        }
    }

    /// Reads one frame, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<ServerFrame, Recv> {
        let deadline = Instant::now() + timeout;
        let mut len = [0u8; 4];
        self.read_exact_by(&mut len, deadline)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(Recv::Malformed(format!("frame length {len} exceeds MAX_FRAME")));
        }
        let mut body = vec![0u8; len];
        self.read_exact_by(&mut body, deadline)?;
        decode_body(&body).map_err(|e| Recv::Malformed(e.to_string()))
    }

    /// Reads frames until the server closes the connection; panics if it
    /// is still open after `timeout`. Returns the frames seen before.
    pub fn expect_closed(&mut self, timeout: Duration, why: &str) -> Vec<ServerFrame> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Ok(f) => seen.push(f),
                Err(Recv::Closed) => return seen,
                Err(Recv::Malformed(m)) => panic!("tracker sent a malformed frame ({m}) instead of closing: {why}"),
                Err(Recv::TimedOut) => {
                    panic!("tracker kept the connection open for {timeout:?}: {why}; frames seen: {seen:?}")
                }
            }
        }
    }

    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), Recv> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Recv::TimedOut);
            }
            self.stream.tcp().set_read_timeout(Some(left)).expect("set_read_timeout");
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Err(Recv::Closed),
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) => return Err(Recv::Closed),
                Err(e) => panic!("cannot read from the tracker: {e}"),
            }
        }
        Ok(())
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted)
}

//! Test harness for the tracker: an in-process server on 127.0.0.1:0 in a
//! temp dir, a minimal raw-frame client, and polling helpers (no sleeps as
//! waits: everything polls a condition until a deadline).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use titorrent_tracker::proto::*;
use titorrent_tracker::server::{Tracker, TrackerConfig};
use titorrent_tracker::tls::{ClientTls, Identity};

/// What a test member needs to authenticate: its ids and its key.
#[derive(Clone, Debug)]
pub struct Credential {
    pub group: GroupId,
    pub member: MemberId,
    pub identity: Arc<Identity>,
}

/// A TLS connection to the tracker with `identity`, trusting whatever
/// tracker answers (tests check pinning separately).
pub async fn tls_connect_as(addr: SocketAddr, identity: Arc<Identity>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let (s, _) = ClientTls { identity, pin: None }.connect(&addr.to_string(), tcp).await.expect("TLS handshake");
    s
}

/// Same, with a fresh key.
pub async fn tls_raw(addr: SocketAddr) -> TlsStream<TcpStream> {
    tls_connect_as(addr, Arc::new(Identity::generate().unwrap())).await
}

pub const WAIT: Duration = Duration::from_secs(10);

/// The admin token of every test tracker (written into its data dir
/// before it first opens it).
pub const ADMIN: &str = "test-admin-token";

/// Puts [`ADMIN`] where the tracker on `dir` reads its admin token.
pub fn write_admin_token(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(titorrent_tracker::server::ADMIN_TOKEN_FILE);
    if !p.exists() {
        std::fs::write(p, ADMIN).unwrap();
    }
}

pub fn config(dir: &Path, lease_ttl: Duration) -> TrackerConfig {
    TrackerConfig { data_dir: dir.to_path_buf(), lease_ttl, ..TrackerConfig::default() }
}

/// Polls `f` until it returns `Some`, panicking after `within`.
pub async fn poll<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A tracker served in-process.
pub struct Server {
    pub tracker: Arc<Tracker>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(dir: &Path, lease_ttl: Duration) -> Server {
        Self::start_on(dir, lease_ttl, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Opens `dir` (waiting for a previous tracker on it to let go) and
    /// serves on `addr` (waiting for the port to be free again).
    pub async fn start_on(dir: &Path, lease_ttl: Duration, addr: SocketAddr) -> Server {
        Self::start_cfg_on(config(dir, lease_ttl), addr).await
    }

    /// Serves with a full configuration on 127.0.0.1:0.
    pub async fn start_cfg(cfg: TrackerConfig) -> Server {
        Self::start_cfg_on(cfg, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_cfg_on(cfg: TrackerConfig, addr: SocketAddr) -> Server {
        let dir = cfg.data_dir.clone();
        write_admin_token(&dir);
        let tracker = poll("the database to be free", WAIT, || {
            let cfg = cfg.clone();
            async move { Tracker::open(cfg).ok() }
        })
        .await;
        let listener = poll("the port to be free", WAIT, move || async move { TcpListener::bind(addr).await.ok() }).await;
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(tracker.clone().serve(listener));
        Server { tracker, addr, dir, task }
    }

    /// Also serves on another listener (same tracker).
    pub async fn extra_listener(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(self.tracker.clone().serve(listener));
        addr
    }

    /// Stops serving and drops this handle; the database closes once the
    /// tracker's tasks have ended (`start` on the same dir waits for that).
    pub async fn stop(self) {
        self.tracker.shutdown();
        let _ = tokio::time::timeout(WAIT, self.task).await.expect("serve did not return");
    }
}

/// A raw-frame client: sequential requests, events and `Wanted` notices
/// buffered, answers sent in parts put together.
pub struct Client {
    rd: BufReader<ReadHalf<TlsStream<TcpStream>>>,
    wr: WriteHalf<TlsStream<TcpStream>>,
    pub identity: Arc<Identity>,
    next_id: u64,
    /// Events read and not taken yet, one by one.
    pub events: VecDeque<Event>,
    /// The seqs of every `Events` frame read, with its `more`, in order.
    pub event_frames: Vec<(Vec<Seq>, bool)>,
    pub wanted: VecDeque<(InfoHash, SocketAddr)>,
    /// Frames of the last answer: 1 plus its parts.
    pub last_frames: usize,
    /// The seq the last answer said it is as of (`ServerFrame::Response`).
    pub last_seq: Option<Seq>,
    /// How long [`Client::frame`] waits for the next frame.
    pub wait: Duration,
}

pub async fn read_server_frame(rd: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<ServerFrame>> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    rd.read_exact(&mut body).await?;
    Ok(Some(decode_body(&body).expect("server sent an undecodable frame")))
}

impl Client {
    /// Connects with a fresh key.
    pub async fn connect(addr: SocketAddr) -> Client {
        Client::connect_as(addr, Arc::new(Identity::generate().unwrap())).await
    }

    pub async fn connect_as(addr: SocketAddr, identity: Arc<Identity>) -> Client {
        let s = tls_connect_as(addr, identity.clone()).await;
        let (rd, wr) = tokio::io::split(s);
        let mut c =
            Client {
                rd: BufReader::new(rd),
                wr,
                identity,
                next_id: 1,
                events: VecDeque::new(),
                event_frames: Vec::new(),
                wanted: VecDeque::new(),
                last_frames: 0,
                last_seq: None,
                wait: WAIT,
            };
        c.write(&ClientFrame::Hello { version: PROTOCOL_VERSION }).await;
        match c.frame().await {
            Some(ServerFrame::Hello { version }) => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("expected Hello, got {other:?}"),
        }
        c
    }

    pub async fn authed(addr: SocketAddr, cred: &Credential) -> Client {
        Client::authed_at(addr, cred, None).await
    }

    /// Authenticates reporting `peer` as its BitTorrent address.
    pub async fn authed_at(addr: SocketAddr, cred: &Credential, peer: Option<SocketAddr>) -> Client {
        let mut c = Client::connect_as(addr, cred.identity.clone()).await;
        match c.req(Request::Authenticate { group: cred.group, member: cred.member, peer_addr: peer }).await {
            Response::Authenticated { .. } => c,
            other => panic!("authenticate: {other:?}"),
        }
    }

    pub async fn write(&mut self, f: &ClientFrame) {
        let bytes = encode_frame(f).unwrap();
        self.wr.write_all(&bytes).await.expect("write");
        self.wr.flush().await.expect("flush");
    }

    /// Next frame, `None` when the server closed.
    pub async fn frame(&mut self) -> Option<ServerFrame> {
        tokio::time::timeout(self.wait, read_server_frame(&mut self.rd))
            .await
            .expect("no frame from the tracker in time")
            .ok()
            .flatten()
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send(&mut self, req: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&ClientFrame::Request { id, req }).await;
        id
    }

    /// The response to request `id`, buffering events that come first; an
    /// answer sent in parts is put together (nothing may come between its
    /// parts).
    pub async fn response(&mut self, id: u64) -> Response {
        let mut parts = Reassembly::default();
        self.last_frames = 1;
        loop {
            let frame = self.frame().await;
            if parts.is_open() {
                assert!(
                    matches!(frame, Some(ServerFrame::Part { .. } | ServerFrame::Response { .. })),
                    "{} between the parts of an answer",
                    frame.as_ref().map_or("the end".to_string(), |f| format!("{f:?}").chars().take(80).collect())
                );
            }
            match frame {
                Some(ServerFrame::Part { id: got, files }) => {
                    assert_eq!(got, id, "a part of another answer");
                    parts.part(got, files).unwrap();
                    self.last_frames += 1;
                }
                Some(ServerFrame::Response { id: got, seq, resp }) => {
                    assert_eq!(got, id, "responses out of order");
                    self.last_seq = seq;
                    return parts.finish(got, resp).unwrap();
                }
                Some(ServerFrame::Events { events, more }) => self.buffer_events(events, more),
                Some(ServerFrame::Wanted { info_hash, peer }) => self.wanted.push_back((info_hash, peer)),
                other => panic!("expected response {id}, got {other:?}"),
            }
        }
    }

    pub async fn req(&mut self, req: Request) -> Response {
        let id = self.send(req).await;
        self.response(id).await
    }

    /// Keeps the events of an `Events` frame, and what the frame held.
    fn buffer_events(&mut self, events: Vec<Event>, more: bool) {
        assert!(!events.is_empty(), "an empty Events frame");
        self.event_frames.push((events.iter().map(|e| e.seq).collect(), more));
        self.events.extend(events);
    }

    pub async fn next_event(&mut self) -> Event {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            match self.frame().await {
                Some(ServerFrame::Events { events, more }) => self.buffer_events(events, more),
                Some(ServerFrame::Wanted { info_hash, peer }) => self.wanted.push_back((info_hash, peer)),
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// The `Events` frame (with those before it marked `more`) that held
    /// `seq`: the seqs the client got together with it.
    pub fn frame_of(&self, seq: Seq) -> Vec<Seq> {
        let mut group = Vec::new();
        for (seqs, more) in &self.event_frames {
            group.extend(seqs.iter().copied());
            if !*more {
                if group.contains(&seq) {
                    return group;
                }
                group.clear();
            }
        }
        panic!("no whole Events frame held {seq}: {:?}", self.event_frames)
    }

    /// The next `Wanted` notice (events that come first are buffered).
    pub async fn next_wanted(&mut self) -> (InfoHash, SocketAddr) {
        if let Some(w) = self.wanted.pop_front() {
            return w;
        }
        loop {
            match self.frame().await {
                Some(ServerFrame::Wanted { info_hash, peer }) => return (info_hash, peer),
                Some(ServerFrame::Events { events, more }) => self.buffer_events(events, more),
                other => panic!("expected a Wanted notice, got {other:?}"),
            }
        }
    }

    /// Events until one matches `pred` (inclusive).
    pub async fn events_until(&mut self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let e = self.next_event().await;
            let done = pred(&e);
            out.push(e);
            if done {
                return out;
            }
        }
    }

    pub async fn create_file(&mut self, parent: FileId, name: &str, kind: FileKind, lock: bool) -> (FileEntry, Option<Lease>) {
        let req = Request::CreateFile { parent, name: name.into(), kind, mode: 0o644, lock, owner: Default::default() };
        match self.req(req).await {
            Response::File { entry, lease } => (entry, lease),
            other => panic!("create {name}: {other:?}"),
        }
    }

    pub async fn lock(&mut self, file: FileId) -> Result<Lease, ProtoError> {
        match self.req(Request::Lock { file }).await {
            Response::Locked(l) => Ok(l),
            Response::Error(e) => Err(e),
            other => panic!("lock: {other:?}"),
        }
    }

    pub async fn invite(&mut self) -> String {
        match self.req(Request::CreateInvite { ttl_ms: 0, uses: 0 }).await {
            Response::Invite { code, .. } => code,
            other => panic!("invite: {other:?}"),
        }
    }
}

/// Creates a group; returns the creator's connection and credential.
pub async fn new_group(addr: SocketAddr, member: &str) -> (Client, Credential) {
    let mut c = Client::connect(addr).await;
    let req =
        Request::CreateGroup { admin_token: ADMIN.into(), group_name: "team".into(), member_name: member.into(), peer_addr: None };
    match c.req(req).await {
        Response::Created { group, member } => {
            let identity = c.identity.clone();
            (c, Credential { group, member, identity })
        }
        other => panic!("create group: {other:?}"),
    }
}

/// Invites and joins a new member through `inviter`.
pub async fn join(addr: SocketAddr, inviter: &mut Client, group: GroupId, member: &str) -> (Client, Credential) {
    let code = inviter.invite().await;
    let mut c = Client::connect(addr).await;
    let req = Request::Join { group, invite: code, member_name: member.into(), peer_addr: None };
    match c.req(req).await {
        Response::Joined { member } => {
            let identity = c.identity.clone();
            (c, Credential { group, member, identity })
        }
        other => panic!("join: {other:?}"),
    }
}

/// A valid one-file torrent of 5 bytes (the tracker checks what it is
/// given), distinct per `tag`.
pub fn fake_torrent(tag: u8) -> (InfoHash, Vec<u8>) {
    torrent_of(tag, 5)
}

/// A valid one-file torrent of `size` bytes.
pub fn torrent_of(tag: u8, size: u64) -> (InfoHash, Vec<u8>) {
    titorrent_tracker::server::test_torrent(tag, size)
}

/// One HTTP/1.1 GET over a fresh connection (`Connection: close`): the
/// status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await.expect("no HTTP reply in time").expect("read");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("no end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("status line: {head}"));
    (status, raw[end + 4..].to_vec())
}

/// A bencoded value (what announce replies hold).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bencode {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bencode>),
    Dict(std::collections::BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    /// Decodes exactly one value; panics on anything else.
    pub fn decode(b: &[u8]) -> Bencode {
        let (v, used) = Self::at(b);
        assert_eq!(used, b.len(), "trailing bytes after bencode: {}", String::from_utf8_lossy(b));
        v
    }

    fn at(b: &[u8]) -> (Bencode, usize) {
        match b.first() {
            Some(b'i') => {
                let end = b.iter().position(|c| *c == b'e').expect("unterminated int");
                (Bencode::Int(std::str::from_utf8(&b[1..end]).unwrap().parse().unwrap()), end + 1)
            }
            Some(b'l') | Some(b'd') => {
                let mut i = 1;
                let mut items = Vec::new();
                while b[i] != b'e' {
                    let (v, n) = Self::at(&b[i..]);
                    items.push(v);
                    i += n;
                }
                if b[0] == b'l' {
                    return (Bencode::List(items), i + 1);
                }
                let mut d = std::collections::BTreeMap::new();
                let mut it = items.into_iter();
                while let (Some(Bencode::Bytes(k)), Some(v)) = (it.next(), it.next()) {
                    d.insert(k, v);
                }
                (Bencode::Dict(d), i + 1)
            }
            Some(c) if c.is_ascii_digit() => {
                let colon = b.iter().position(|c| *c == b':').expect("no colon");
                let len: usize = std::str::from_utf8(&b[..colon]).unwrap().parse().unwrap();
                (Bencode::Bytes(b[colon + 1..colon + 1 + len].to_vec()), colon + 1 + len)
            }
            other => panic!("not bencode at {other:?}: {}", String::from_utf8_lossy(b)),
        }
    }

    /// A dictionary's value under `key`.
    pub fn get(&self, key: &str) -> Option<&Bencode> {
        match self {
            Bencode::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }
}

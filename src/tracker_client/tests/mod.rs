//! The tracker client against an in-process tracker on 127.0.0.1:0:
//! one-shot connections, and a link that survives a tracker restart.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::model::CoordError;
use titorrent_tracker::calls;
use titorrent_tracker::proto::*;
use titorrent_tracker::server::{Tracker, TrackerConfig};
use titorrent_tracker::tls::{ClientTls, Identity};

/// A fresh member key, trusting `pin` (or any tracker).
fn key(pin: Option<Fingerprint>) -> ClientTls {
    ClientTls { identity: Arc::new(Identity::generate().unwrap()), pin }
}

/// A connection with a fresh key that pins `srv`'s.
async fn connect(srv: &Server) -> (Connection, ClientTls) {
    let tls = key(Some(srv.tracker.fingerprint()));
    (Connection::connect(&srv.addr.to_string(), &tls).await.unwrap(), tls)
}

/// A TLS listener with a key of its own, as a fake tracker.
async fn fake_tracker() -> (TcpListener, tokio_rustls::TlsAcceptor, Fingerprint) {
    let id = Identity::generate().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(titorrent_tracker::tls::server_config(&id).unwrap());
    (TcpListener::bind("127.0.0.1:0").await.unwrap(), acceptor, id.fingerprint())
}

const WAIT: Duration = Duration::from_secs(10);

struct Server {
    tracker: Arc<Tracker>,
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

async fn poll<T, Fut: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> Fut) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Server {
    async fn start(dir: &Path, addr: SocketAddr) -> Server {
        let cfg = TrackerConfig { data_dir: dir.to_path_buf(), ..TrackerConfig::default() };
        let tracker = poll("the database", move || {
            let cfg = cfg.clone();
            async move { Tracker::open(cfg).ok() }
        })
        .await;
        let listener = poll("the port", move || async move { TcpListener::bind(addr).await.ok() }).await;
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(tracker.clone().serve(listener));
        Server { tracker, addr, task }
    }

    async fn stop(self) {
        self.tracker.shutdown();
        let _ = tokio::time::timeout(WAIT, self.task).await.expect("serve did not stop");
    }
}

async fn next(rx: &mut UnboundedReceiver<LinkEvent>) -> LinkEvent {
    next_within(rx, WAIT).await
}

/// [`next`] with a deadline of its own: a snapshot of tens of thousands of
/// rows, read by a debug build on a busy machine, takes longer than one
/// event.
async fn next_within(rx: &mut UnboundedReceiver<LinkEvent>, wait: Duration) -> LinkEvent {
    tokio::time::timeout(wait, rx.recv()).await.expect("no link event in time").expect("link ended")
}

/// What a link hands on, one event at a time (a commit's events come out
/// of [`Events::next`] one by one), for a test that follows seqs.
#[derive(Debug, PartialEq)]
enum Got {
    Online,
    Offline,
    Snapshot { seq: Seq, files: Vec<FileEntry> },
    Event(Event),
    Wanted { info_hash: InfoHash, peer: SocketAddr },
}

/// A link's receiver, its commits taken apart.
struct Events {
    rx: UnboundedReceiver<LinkEvent>,
    queued: VecDeque<Event>,
}

impl Events {
    fn new(rx: UnboundedReceiver<LinkEvent>) -> Events {
        Events { rx, queued: VecDeque::new() }
    }

    async fn next(&mut self) -> Got {
        if let Some(ev) = self.queued.pop_front() {
            return Got::Event(ev);
        }
        match next(&mut self.rx).await {
            LinkEvent::Online => Got::Online,
            LinkEvent::Offline => Got::Offline,
            LinkEvent::Snapshot { seq, files } => Got::Snapshot { seq, files },
            LinkEvent::Wanted { info_hash, peer } => Got::Wanted { info_hash, peer },
            LinkEvent::Events(evs) => {
                assert!(!evs.is_empty(), "an empty commit");
                self.queued.extend(evs);
                Got::Event(self.queued.pop_front().unwrap())
            }
        }
    }
}

fn created_name(ev: &Got) -> Option<&str> {
    match ev {
        Got::Event(Event { kind: EventKind::FileCreated(e), .. }) => Some(&e.name),
        _ => None,
    }
}

async fn create(c: &mut Connection, name: &str) -> FileEntry {
    let call = calls::CreateFile { parent: FileId::ROOT, name: name.into(), kind: FileKind::File, mode: 0o644, lock: false, owner: Default::default() };
    c.call(call).await.unwrap().entry
}

#[tokio::test]
async fn one_shot_connection_requests_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let (mut c, _) = connect(&srv).await;
    assert_eq!(c.local_addr().ip(), srv.addr.ip());
    assert_eq!(c.tracker_key(), srv.tracker.fingerprint());
    assert!(matches!(c.call(calls::ListFiles).await, Err(ClientError::Refused(ProtoError::NotAuthenticated))));
    let req = calls::CreateGroup { admin_token: srv.tracker.admin_token().0.into(), group_name: "g".into(), member_name: "ana".into(), peer_addr: None };
    let calls::GroupCreated { group, .. } = c.call(req).await.unwrap();
    let code = c.call(calls::CreateInvite { ttl_ms: 0, uses: 0 }).await.unwrap().code;
    let (mut b, _) = connect(&srv).await;
    let join = calls::Join { group, invite: code, member_name: "ben".into(), peer_addr: None };
    b.call(join).await.unwrap();
    let ms = b.call(calls::ListMembers).await.unwrap();
    assert_eq!(ms.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["ana", "ben"]);
    assert!(Connection::connect("127.0.0.1:1", &key(None)).await.is_err());
    // A tracker with another key than the pinned one is refused by name.
    let wrong = Fingerprint([1; 32]);
    let err = Connection::connect(&srv.addr.to_string(), &key(Some(wrong))).await.err().expect("refused");
    assert!(
        matches!(&err, ClientError::Tls(titorrent_tracker::tls::TlsError::WrongTracker { got, .. }) if *got == srv.tracker.fingerprint()),
        "{err}"
    );
    srv.stop().await;
}

/// Twenty creates in flight on the link's one connection at once: each
/// answered, and their events after `last` in order with no gap; returns
/// the last event's seq.
async fn twenty_creates_in_flight(link: &TrackerLink, rx: &mut Events, mut last: Seq) -> Seq {
    let reqs = (0..20).map(|i| {
        let link = link.clone();
        async move {
            let req = calls::CreateFile {
                parent: FileId::ROOT,
                name: format!("f{i}"),
                kind: FileKind::File,
                mode: 0o644,
                lock: false,
                owner: Default::default(),
            };
            link.call(req).await
        }
    });
    for r in futures::future::join_all(reqs).await {
        assert!(matches!(r, Ok(calls::FileAnswer { .. })), "{r:?}");
    }
    let mut names = Vec::new();
    while names.len() < 20 {
        let Got::Event(ev) = rx.next().await else { panic!("unexpected link event") };
        assert_eq!(ev.seq.0, last.0 + 1, "gap");
        last = ev.seq;
        if let EventKind::FileCreated(e) = ev.kind {
            names.push(e.name);
        }
    }
    last
}

/// Events after `last` until the link says it is offline (presence events
/// may still arrive before the close), in order; returns the last seq.
async fn events_until_offline(rx: &mut Events, mut last: Seq) -> Seq {
    loop {
        match rx.next().await {
            Got::Offline => return last,
            Got::Event(ev) => {
                assert_eq!(ev.seq.0, last.0 + 1);
                last = ev.seq;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_reconnects_after_a_tracker_restart_and_resumes_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = srv.addr;
    let (mut c, tls) = connect(&srv).await;
    let req = calls::CreateGroup { admin_token: srv.tracker.admin_token().0.into(), group_name: "g".into(), member_name: "ana".into(), peer_addr: None };
    let calls::GroupCreated { group, member } = c.call(req).await.unwrap();
    let ana = Login { group, member, tls };
    drop(c);

    let (link, rx) = TrackerLink::start(addr.to_string(), ana.clone(), 6881, None);
    let mut rx = Events::new(rx);
    assert_eq!(rx.next().await, Got::Online);
    assert!(link.is_online());
    let Got::Snapshot { seq: mut last, files } = rx.next().await else { panic!("expected a snapshot") };
    assert_eq!(files.len(), 1);

    last = twenty_creates_in_flight(&link, &mut rx, last).await;
    // The peer address is the link's local IP with the BitTorrent port.
    let ms = link.call(calls::ListMembers).await.unwrap();
    assert_eq!(ms[0].peer_addr, Some("127.0.0.1:6881".parse().unwrap()));
    // Refusals come back typed.
    let r = link.call(calls::Lock { file: FileId(999) }).await;
    assert!(matches!(r, Err(ClientError::Refused(ProtoError::NoSuchFile))), "{r:?}");

    // The tracker goes away.
    srv.stop().await;
    last = events_until_offline(&mut rx, last).await;
    assert!(!link.is_online());
    let t = Instant::now();
    assert!(matches!(link.call(calls::ListFiles).await, Err(ClientError::Offline)));
    assert!(t.elapsed() < Duration::from_secs(1), "offline requests must fail at once");

    // It comes back on the same data; while the link is still away (the
    // old port is not served yet), another member changes things.
    let srv = Server::start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let mut other = Connection::connect(&srv.addr.to_string(), &ana.tls).await.unwrap();
    let auth = calls::Authenticate { group: ana.group, member: ana.member, peer_addr: None };
    other.call(auth).await.unwrap();
    for name in ["away1", "away2"] {
        create(&mut other, name).await;
    }
    let listener = poll("the old port", move || async move { TcpListener::bind(addr).await.ok() }).await;
    tokio::spawn(srv.tracker.clone().serve(listener));

    // The link is back, without a snapshot, and replays what it missed.
    assert_eq!(rx.next().await, Got::Online);
    let mut seen = Vec::new();
    while !seen.iter().any(|n| n == "away2") {
        let ev = rx.next().await;
        if let Some(n) = created_name(&ev) {
            seen.push(n.to_string());
        }
        let Got::Event(ev) = ev else { panic!("expected events only, got {ev:?}") };
        assert_eq!(ev.seq.0, last.0 + 1, "gap or duplicate after reconnect");
        last = ev.seq;
    }
    assert_eq!(seen, ["away1", "away2"]);
    // And live events and requests work again.
    let r = link.call(calls::ListFiles).await.unwrap();
    assert_eq!(r.files.len(), 23, "{r:?}");
    create(&mut other, "live").await;
    loop {
        let ev = rx.next().await;
        if created_name(&ev) == Some("live") {
            break;
        }
    }

    link.shutdown();
    assert!(matches!(link.call(calls::ListFiles).await, Err(ClientError::Offline)));
    srv.stop().await;
}

#[tokio::test]
async fn link_to_nowhere_is_offline_at_once() {
    let login = Login { group: GroupId(1), member: MemberId(1), tls: key(None) };
    let (link, _rx) = TrackerLink::start("127.0.0.1:1".into(), login, 0, None);
    let t = Instant::now();
    assert!(matches!(link.call(calls::ListFiles).await, Err(ClientError::Offline)));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(!link.is_online());
}

/// A tracker that completes the handshake, then never says anything again
/// (a host that vanished without a FIN): the link notices and goes offline,
/// and a request in flight then fails as `Lost`.
#[tokio::test]
async fn link_detects_a_tracker_that_stopped_answering() {
    use titorrent_tracker::proto::{decode_body, encode_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (listener, acceptor, fp) = fake_tracker().await;
    let addr = listener.local_addr().unwrap();
    let login = Login { group: GroupId(1), member: MemberId(1), tls: key(Some(fp)) };
    let me = MemberInfo { id: MemberId(1), name: "ana".into(), online: true, peer_addr: None, key: Fingerprint([0; 32]) };
    let silent = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = acceptor.accept(s).await.unwrap();
        let mut frames = Vec::new();
        for f in [
            ServerFrame::Hello { version: PROTOCOL_VERSION },
            ServerFrame::Response { id: 1, seq: None, resp: Response::Authenticated { member: me, group_name: "g".into() } },
            ServerFrame::Response { id: 2, seq: None, resp: Response::Snapshot { seq: Seq(0), files: vec![] } },
        ] {
            frames.extend(encode_frame(&f).unwrap());
        }
        s.write_all(&frames).await.unwrap();
        // Read (and check) what the client sends, answer nothing.
        let mut seen = 0;
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).await.is_err() {
                return seen;
            }
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            if s.read_exact(&mut body).await.is_err() {
                return seen;
            }
            decode_body::<ClientFrame>(&body).expect("client sent a bad frame");
            seen += 1;
        }
    });
    let (link, mut rx) = TrackerLink::start(addr.to_string(), login, 0, None);
    assert_eq!(next(&mut rx).await, LinkEvent::Online);
    assert!(matches!(next(&mut rx).await, LinkEvent::Snapshot { .. }));
    // A request in flight when the connection is given up: sent, never
    // answered, its outcome unknown (not `Offline`, which is "not sent").
    let in_flight = tokio::spawn({
        let link = link.clone();
        async move { link.call(calls::ListMembers).await }
    });
    let started = Instant::now();
    assert_eq!(next(&mut rx).await, LinkEvent::Offline);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!link.is_online());
    let lost = tokio::time::timeout(WAIT, in_flight).await.unwrap().unwrap();
    assert!(matches!(lost, Err(ClientError::Lost)), "{lost:?}");
    assert!(matches!(CoordError::from(lost.unwrap_err()), CoordError::Lost));
    link.shutdown();
    // Hello, Authenticate, Subscribe and at least one probe.
    let seen = tokio::time::timeout(WAIT, silent).await.unwrap().unwrap();
    assert!(seen >= 4, "{seen}");
}

/// A refused credential is not retried in a tight loop.
#[tokio::test]
async fn a_refused_credential_is_retried_slowly() {
    use titorrent_tracker::proto::encode_frame;
    use tokio::io::AsyncWriteExt;

    let (listener, acceptor, fp) = fake_tracker().await;
    let addr = listener.local_addr().unwrap();
    let login = Login { group: GroupId(1), member: MemberId(1), tls: key(Some(fp)) };
    let (link, mut rx) = TrackerLink::start(addr.to_string(), login, 0, None);
    let (s, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut s = acceptor.accept(s).await.unwrap();
    let mut frames = Vec::new();
    for f in [
        ServerFrame::Hello { version: PROTOCOL_VERSION },
        ServerFrame::Response { id: 1, seq: None, resp: Response::Error(ProtoError::NotAuthenticated) },
        ServerFrame::Response { id: 2, seq: None, resp: Response::Error(ProtoError::NotAuthenticated) },
    ] {
        frames.extend(encode_frame(&f).unwrap());
    }
    s.write_all(&frames).await.unwrap();
    s.shutdown().await.unwrap();
    drop(s);
    // Fast backoff would be back within 100 ms; a refusal waits far longer.
    assert!(tokio::time::timeout(Duration::from_secs(1), listener.accept()).await.is_err(), "retried at once");
    assert!(!link.is_online());
    assert!(rx.try_recv().is_err(), "never online, so no Online/Offline events");
    link.shutdown();
}

/// The next `Wanted` on a link, skipping events.
async fn next_wanted(rx: &mut UnboundedReceiver<LinkEvent>) -> (InfoHash, SocketAddr) {
    loop {
        match next(rx).await {
            LinkEvent::Wanted { info_hash, peer } => return (info_hash, peer),
            LinkEvent::Events(_) | LinkEvent::Snapshot { .. } | LinkEvent::Online => {}
            LinkEvent::Offline => panic!("link went offline"),
        }
    }
}

/// `want` on one member's link reaches another member's link as
/// `LinkEvent::Wanted` with the first member's BitTorrent address, and not
/// the first member itself; offline, it returns at once.
#[tokio::test]
async fn want_reaches_another_link_as_wanted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let (mut c, tls) = connect(&srv).await;
    let req = calls::CreateGroup { admin_token: srv.tracker.admin_token().0.into(), group_name: "g".into(), member_name: "ana".into(), peer_addr: None };
    let calls::GroupCreated { group, member } = c.call(req).await.unwrap();
    let ana = Login { group, member, tls };
    let code = c.call(calls::CreateInvite { ttl_ms: 0, uses: 0 }).await.unwrap().code;
    let (mut b, tls) = connect(&srv).await;
    let join = calls::Join { group, invite: code, member_name: "ben".into(), peer_addr: None };
    let member = b.call(join).await.unwrap().member;
    let ben = Login { group, member, tls };
    drop((c, b));

    let (ana_link, mut ana_rx) = TrackerLink::start(srv.addr.to_string(), ana, 6881, None);
    let (ben_link, mut ben_rx) = TrackerLink::start(srv.addr.to_string(), ben, 6882, None);
    for rx in [&mut ana_rx, &mut ben_rx] {
        assert_eq!(next(rx).await, LinkEvent::Online);
        assert!(matches!(next(rx).await, LinkEvent::Snapshot { .. }));
    }
    ana_link.want(InfoHash([5; 20]));
    assert_eq!(next_wanted(&mut ben_rx).await, (InfoHash([5; 20]), "127.0.0.1:6881".parse().unwrap()));
    // Notices of a group arrive in order: ana's own would come first.
    ben_link.want(InfoHash([6; 20]));
    assert_eq!(next_wanted(&mut ana_rx).await, (InfoHash([6; 20]), "127.0.0.1:6882".parse().unwrap()));

    ben_link.shutdown();
    let t = Instant::now();
    ben_link.want(InfoHash([7; 20]));
    assert!(t.elapsed() < Duration::from_secs(1), "want must not wait");
    ana_link.shutdown();
    srv.stop().await;
}

mod frames;

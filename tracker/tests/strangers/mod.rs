//! The tracker does not serve strangers: creating a group needs the admin
//! token; before authenticating, a connection has a deadline, a small frame
//! limit and a per-address cap; members keep working through a flood.

use std::time::Duration;

use crate::common::*;
use titorrent_tracker::proto::*;
use titorrent_tracker::server::{Limits, TrackerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);

/// Reads until the server closes; returns the frames seen and how long it took.
async fn until_closed(s: &mut (impl AsyncReadExt + Unpin), within: Duration) -> (Vec<ServerFrame>, Duration) {
    let t = Instant::now();
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout_at(t + within, read_server_frame(s)).await {
            Err(_) => panic!("connection still open after {within:?}; frames: {frames:?}"),
            Ok(Ok(Some(f))) => frames.push(f),
            Ok(Ok(None)) | Ok(Err(_)) => return (frames, t.elapsed()),
        }
    }
}

fn limited(dir: &std::path::Path, limits: Limits) -> TrackerConfig {
    TrackerConfig { limits, ..config(dir, TTL) }
}

#[tokio::test]
async fn creating_a_group_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let mut eve = Client::connect(srv.addr).await;
    for token in ["", "guess", &ADMIN[1..]] {
        let req = Request::CreateGroup {
            admin_token: token.into(),
            group_name: "free storage".into(),
            member_name: "eve".into(),
            peer_addr: None,
        };
        assert_eq!(eve.req(req).await, Response::Error(ProtoError::NotAdmin), "token {token:?}");
        // Still a stranger: nothing else works either.
        assert_eq!(eve.req(Request::ListFiles).await, Response::Error(ProtoError::NotAuthenticated));
    }
    let (mut alice, cred) = new_group(srv.addr, "alice").await;
    assert_eq!(cred.group, GroupId(1), "the refused attempts made no group");
    assert!(matches!(alice.req(Request::ListFiles).await, Response::Files { .. }));
    srv.stop().await;
}

#[tokio::test]
async fn a_slow_loris_is_closed_at_the_deadline_and_an_oversized_frame_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_millis(700);
    let srv = Server::start_cfg(limited(dir.path(), Limits { preauth_timeout: deadline, ..Limits::default() })).await;
    let hello = encode_frame(&ClientFrame::Hello { version: PROTOCOL_VERSION }).unwrap();

    // TLS and Hello, then nothing: a Goodbye at the deadline.
    let mut s = tls_raw(srv.addr).await;
    s.write_all(&hello).await.unwrap();
    let (frames, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(took >= deadline / 2, "closed after {took:?}");
    assert!(
        matches!(frames.last(), Some(ServerFrame::Goodbye { reason }) if reason.contains("not authenticated in time")),
        "{frames:?}"
    );
    // A frame trickled a byte at a time counts the same.
    let mut s = tls_raw(srv.addr).await;
    s.write_all(&hello).await.unwrap();
    s.write_all(&[0, 0, 0x10, 0]).await.unwrap();
    let t = Instant::now();
    while t.elapsed() < deadline * 3 {
        if s.write_all(&[1]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until_closed(&mut s, Duration::from_secs(5)).await;
    // Plain TCP that never says a word, and half a TLS record.
    for first in [&[][..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(first).await.unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("still open");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert!(t.elapsed() >= deadline / 2);
    }

    // A declared frame over 64 KiB before authenticating: closed at once
    // (well under an 8 MiB MAX_FRAME, and nothing is allocated for it).
    let mut s = tls_raw(srv.addr).await;
    s.write_all(&hello).await.unwrap();
    s.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    let (_, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(took < deadline / 2, "closed only after {took:?}");

    // Members are not held to either: an authenticated connection idles
    // past the deadline and publishes a torrent over 64 KiB.
    let (mut alice, _) = new_group(srv.addr, "alice").await;
    tokio::time::sleep(deadline * 2).await;
    let (f, lease) = alice.create_file(FileId::ROOT, "big", FileKind::File, true).await;
    let size = 60 << 20;
    let (ih, torrent) = torrent_of(b'b', size);
    assert!(torrent.len() > 64 * 1024);
    let publish = Request::Publish {
        file: f.id,
        base: Version(0),
        lease: lease.unwrap().id,
        size,
        mtime: 1,
        info_hash: Some(ih),
        torrent,
        keep_lock: false,
    };
    assert!(matches!(alice.req(publish).await, Response::Published(_)));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_keep_working_while_strangers_flood_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_preauth_per_ip: 8, preauth_timeout: Duration::from_secs(30), ..Limits::default() };
    let srv = Server::start_cfg(limited(dir.path(), limits)).await;
    let (mut alice, _) = new_group(srv.addr, "alice").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;

    async fn lock_latency(c: &mut Client, file: FileId, n: usize) -> Duration {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let l = c.lock(file).await.expect("lock");
            assert_eq!(c.req(Request::Unlock { lease: l.id }).await, Response::Ok);
            times.push(t.elapsed());
        }
        times.sort();
        times[n / 2]
    }
    let before = lock_latency(&mut alice, f.id, 50).await;

    // Strangers: eight connections fill this address's unauthenticated
    // places (TLS done, Hello sent, then silence); every further one is
    // closed at once, before TLS.
    let hello = encode_frame(&ClientFrame::Hello { version: PROTOCOL_VERSION }).unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = tls_raw(srv.addr).await;
        s.write_all(&hello).await.unwrap();
        held.push(s);
    }
    let flood = tokio::spawn({
        let addr = srv.addr;
        async move {
            let mut turned_away = 0;
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end {
                let Ok(mut s) = TcpStream::connect(addr).await else { continue };
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x50]).await;
                let mut buf = [0u8; 8];
                if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    turned_away += 1;
                }
            }
            turned_away
        }
    });
    let during = lock_latency(&mut alice, f.id, 200).await;
    let turned_away = flood.await.unwrap();
    assert!(turned_away > 20, "only {turned_away} connections were turned away");
    assert!(
        during < (before * 10).max(Duration::from_millis(20)),
        "lock+unlock p50 {before:?} before the flood, {during:?} during it"
    );
    // Once the held ones go, the address may connect again.
    drop(held);
    let tls = titorrent_tracker::tls::ClientTls {
        identity: std::sync::Arc::new(titorrent_tracker::tls::Identity::generate().unwrap()),
        pin: None,
    };
    poll("a free place for this address", WAIT, || async {
        let tcp = TcpStream::connect(srv.addr).await.ok()?;
        tls.connect("tracker", tcp).await.ok().map(|_| ())
    })
    .await;
    srv.stop().await;
}

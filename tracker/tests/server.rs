//! The tracker server over real TCP: membership, authentication, framing
//! robustness, locks and leases, publish CAS, event streaming, persistence;
//! `Want` notices in `peers`; symbolic links in `links`; strangers (admin token, pre-authentication
//! limits, floods) in `strangers`; what members may not publish in
//! `validation`; file tables larger than a frame in `large`.

mod common;
mod large;
mod links;
mod peers;
mod requests;
mod strangers;
mod validation;

use std::time::Duration;

use common::*;
use titorrent_tracker::proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);

fn seqs(evs: &[Event]) -> Vec<u64> {
    evs.iter().map(|e| e.seq.0).collect()
}

fn assert_contiguous(evs: &[Event]) {
    for w in evs.windows(2) {
        assert_eq!(w[1].seq.0, w[0].seq.0 + 1, "gap or duplicate in {:?}", seqs(evs));
    }
}

#[tokio::test]
async fn create_group_invite_and_join() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let mut alice = Client::connect(srv.addr).await;
    let created = alice
        .req(Request::CreateGroup {
            admin_token: ADMIN.into(),
            group_name: "team".into(),
            member_name: "alice".into(),
            peer_addr: Some("0.0.0.0:6881".parse().unwrap()),
        })
        .await;
    let Response::Created { group, member } = created else { panic!("{created:?}") };
    let a_cred = Credential { group, member, identity: alice.identity.clone() };
    match alice.req(Request::Subscribe { from: None }).await {
        Response::Snapshot { files, .. } => {
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].id, FileId::ROOT);
            assert_eq!(files[0].kind, FileKind::Dir);
        }
        other => panic!("{other:?}"),
    }

    let code = alice.invite().await;
    assert!(code.len() >= 16 && code.chars().all(|c| c.is_ascii_hexdigit()));
    let mut bob = Client::connect(srv.addr).await;
    let joined = bob
        .req(Request::Join {
            group,
            invite: code.clone(),
            member_name: "bob".into(),
            peer_addr: Some("127.0.0.1:7000".parse().unwrap()),
        })
        .await;
    let Response::Joined { member } = joined else { panic!("{joined:?}") };
    let b_cred = Credential { group, member, identity: bob.identity.clone() };
    assert_ne!(b_cred.member, a_cred.member);
    assert_ne!(b_cred.identity.fingerprint(), a_cred.identity.fingerprint());

    // Alice's subscription sees bob join and come online.
    let evs = alice.events_until(|e| matches!(e.kind, EventKind::MemberOnline(ref m) if m.name == "bob")).await;
    assert!(evs.iter().any(|e| matches!(&e.kind, EventKind::MemberJoined(m) if m.id == b_cred.member)));

    // Single use: the same code, or a made-up one, is refused.
    let mut carol = Client::connect(srv.addr).await;
    for invite in [code.clone(), "0123456789abcdef0123456789abcdef".into()] {
        let r = carol.req(Request::Join { group, invite, member_name: "carol".into(), peer_addr: None }).await;
        assert_eq!(r, Response::Error(ProtoError::BadInvite));
    }
    // An invite for another group does not work here.
    let (mut other, _) = new_group(srv.addr, "olga").await;
    let foreign = other.invite().await;
    let r = carol.req(Request::Join { group, invite: foreign, member_name: "carol".into(), peer_addr: None }).await;
    assert_eq!(r, Response::Error(ProtoError::BadInvite));
    // A multi-use invite works twice, then not.
    let Response::Invite { code: multi, .. } = alice.req(Request::CreateInvite { ttl_ms: 0, uses: 2 }).await else {
        panic!()
    };
    for (i, name) in ["carol", "dave", "erin"].into_iter().enumerate() {
        let mut c = Client::connect(srv.addr).await;
        let r = c.req(Request::Join { group, invite: multi.clone(), member_name: name.into(), peer_addr: None }).await;
        assert_eq!(matches!(r, Response::Joined { .. }), i < 2, "{name}: {r:?}");
    }
    // An expired invite is refused.
    let Response::Invite { code: short, expires } = alice.req(Request::CreateInvite { ttl_ms: 1, uses: 1 }).await
    else {
        panic!()
    };
    poll("the invite's expiry time", WAIT, || async { (now() > expires).then_some(()) }).await;
    let mut c = Client::connect(srv.addr).await;
    let r = c.req(Request::Join { group, invite: short, member_name: "late".into(), peer_addr: None }).await;
    assert_eq!(r, Response::Error(ProtoError::BadInvite), "joined with an expired invite");

    // Members: online flags and peer addresses (0.0.0.0 replaced by the
    // address alice connected from).
    let Response::Members(ms) = bob.req(Request::ListMembers).await else { panic!() };
    let a = ms.iter().find(|m| m.id == a_cred.member).unwrap();
    assert!(a.online);
    assert_eq!(a.peer_addr, Some("127.0.0.1:6881".parse().unwrap()));
    let b = ms.iter().find(|m| m.id == b_cred.member).unwrap();
    assert_eq!(b.peer_addr, Some("127.0.0.1:7000".parse().unwrap()));

    // The member list carries each member's key.
    assert_eq!((a.key, b.key), (a_cred.identity.fingerprint(), b_cred.identity.fingerprint()));

    // Bob's key authenticates a new connection as bob; another key naming
    // bob does not (eve knows bob's ids, which are no secret).
    let mut bob2 = Client::authed(srv.addr, &b_cred).await;
    assert!(matches!(bob2.req(Request::ListFiles).await, Response::Files { .. }));
    let mut eve = Client::connect(srv.addr).await;
    let r = eve.req(Request::Authenticate { group: b_cred.group, member: b_cred.member, peer_addr: None }).await;
    assert_eq!(r, Response::Error(ProtoError::NotAuthenticated));
    assert_eq!(eve.req(Request::ListFiles).await, Response::Error(ProtoError::NotAuthenticated));

    // Bob going away entirely makes him offline (two connections: both).
    drop(bob);
    drop(bob2);
    alice.events_until(|e| matches!(e.kind, EventKind::MemberOffline { member } if member == b_cred.member)).await;
    let Response::Members(ms) = alice.req(Request::ListMembers).await else { panic!() };
    assert!(!ms.iter().find(|m| m.id == b_cred.member).unwrap().online);
    srv.stop().await;
}

#[tokio::test]
async fn unauthenticated_requests_reveal_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, cred) = new_group(srv.addr, "alice").await;
    let (f, _) = alice.create_file(FileId::ROOT, "exists.txt", FileKind::File, false).await;

    let mut anon = Client::connect(srv.addr).await;
    let pairs = [
        (Request::Lock { file: f.id }, Request::Lock { file: FileId(999) }),
        (
            Request::GetTorrent { file: f.id, version: Version(0) },
            Request::GetTorrent { file: FileId(999), version: Version(0) },
        ),
        (
            Request::CreateFile { parent: FileId::ROOT, name: "x".into(), kind: FileKind::File, mode: 0o644, lock: false, owner: Default::default() },
            Request::CreateFile { parent: FileId(999), name: "x".into(), kind: FileKind::File, mode: 0o644, lock: false, owner: Default::default() },
        ),
        (Request::Unlock { lease: LeaseId(1) }, Request::Renew { lease: LeaseId(1) }),
        (Request::ListFiles, Request::ListMembers),
        (Request::Subscribe { from: None }, Request::CreateInvite { ttl_ms: 0, uses: 0 }),
    ];
    for (existing, missing) in pairs {
        let a = anon.req(existing).await;
        let b = anon.req(missing).await;
        assert_eq!(a, Response::Error(ProtoError::NotAuthenticated));
        assert_eq!(a, b);
    }
    // Bad credentials: same answer for a real member over a connection
    // with another key, an unknown member, and an unknown group.
    for (group, member) in [(cred.group, cred.member), (cred.group, MemberId(4242)), (GroupId(4242), cred.member)] {
        let r = anon.req(Request::Authenticate { group, member, peer_addr: None }).await;
        assert_eq!(r, Response::Error(ProtoError::NotAuthenticated));
    }
    // With alice's key, the ids must still match.
    let mut alice_key = Client::connect_as(srv.addr, cred.identity.clone()).await;
    for (group, member) in [(cred.group, MemberId(4242)), (GroupId(4242), cred.member)] {
        let r = alice_key.req(Request::Authenticate { group, member, peer_addr: None }).await;
        assert_eq!(r, Response::Error(ProtoError::NotAuthenticated));
    }
    // Nothing was created.
    let Response::Files { files, .. } = alice.req(Request::ListFiles).await else { panic!() };
    assert_eq!(files.len(), 2);
    srv.stop().await;
}

/// Reads until the server closes the connection (EOF or reset).
async fn closed_by_server(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let r = tokio::time::timeout_at(deadline, read_server_frame(s)).await.expect("connection not closed in time");
        match r {
            Ok(Some(f)) => frames.push(f),
            Ok(None) | Err(_) => return frames,
        }
    }
}

#[tokio::test]
async fn bad_frames_close_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, _) = new_group(srv.addr, "alice").await;

    let hello = encode_frame(&ClientFrame::Hello { version: PROTOCOL_VERSION }).unwrap();
    // Garbage body after a valid Hello.
    let mut s = tls_raw(srv.addr).await;
    s.write_all(&hello).await.unwrap();
    s.write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb]).await.unwrap();
    let frames = closed_by_server(&mut s).await;
    assert!(matches!(frames.as_slice(), [ServerFrame::Hello { .. }]), "{frames:?}");

    // Oversized length prefix.
    let mut s = tls_raw(srv.addr).await;
    s.write_all(&hello).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    closed_by_server(&mut s).await;

    // Garbage instead of a TLS ClientHello (a whole record: one cut short
    // waits for the rest until the handshake deadline).
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xfe, 0xfd, 0xfc, 0xfb]).await.unwrap();
    closed_by_server(&mut s).await;

    // A client of the protocol in the clear (an older titorrent): told
    // that TLS is required, in frames it can read, then closed.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let frames = closed_by_server(&mut s).await;
    assert!(
        matches!(frames.as_slice(), [ServerFrame::Hello { .. }, ServerFrame::Goodbye { reason }] if reason.contains("TLS")),
        "{frames:?}"
    );

    // HTTP that is not an announce: a 404, then closed.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut reply)).await.expect("HTTP connection not closed").unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 404"), "{}", String::from_utf8_lossy(&reply));

    // Wrong protocol version: Goodbye with a reason, then closed.
    let mut s = tls_raw(srv.addr).await;
    s.write_all(&encode_frame(&ClientFrame::Hello { version: PROTOCOL_VERSION + 1 }).unwrap()).await.unwrap();
    let frames = closed_by_server(&mut s).await;
    assert!(
        matches!(frames.last(), Some(ServerFrame::Goodbye { reason }) if reason.contains("version")),
        "{frames:?}"
    );

    // A request before Hello: Goodbye too.
    let mut s = tls_raw(srv.addr).await;
    let req = ClientFrame::Request { id: 1, req: Request::ListFiles };
    s.write_all(&encode_frame(&req).unwrap()).await.unwrap();
    let frames = closed_by_server(&mut s).await;
    assert!(matches!(frames.last(), Some(ServerFrame::Goodbye { .. })), "{frames:?}");

    // A half-sent frame then EOF.
    let mut s = tls_raw(srv.addr).await;
    s.write_all(&hello).await.unwrap();
    s.write_all(&[0, 0, 1, 0, 1, 2]).await.unwrap();
    s.shutdown().await.unwrap();
    closed_by_server(&mut s).await;

    // The authenticated client was not disturbed, and new ones work.
    let (f, _) = alice.create_file(FileId::ROOT, "still-here", FileKind::File, false).await;
    assert_eq!(f.name, "still-here");
    let (mut again, _) = new_group(srv.addr, "zed").await;
    assert!(matches!(again.req(Request::ListFiles).await, Response::Files { .. }));
    // The tracker is still accepting: a raw Hello gets its Hello.
    let mut s = tls_raw(srv.addr).await;
    s.write_all(&hello).await.unwrap();
    s.flush().await.unwrap();
    assert!(matches!(read_server_frame(&mut s).await.unwrap(), Some(ServerFrame::Hello { .. })));
    srv.stop().await;
}

#[tokio::test]
async fn file_table_rules() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, cred) = new_group(srv.addr, "alice").await;
    let (d, _) = alice.create_file(FileId::ROOT, "docs", FileKind::Dir, true).await;
    let (f, lease) = alice.create_file(d.id, "a.txt", FileKind::File, false).await;
    assert!(lease.is_none());
    assert!(f.id > d.id && d.id > FileId::ROOT);
    assert_eq!((f.version, f.size, f.info_hash, f.author), (Version(0), 0, None, cred.member));
    let create = |parent, name: &str| Request::CreateFile {
        parent,
        name: name.into(),
        kind: FileKind::File,
        mode: 0o644,
        lock: false,
        owner: Default::default(),
    };
    assert_eq!(alice.req(create(d.id, "a.txt")).await, Response::Error(ProtoError::AlreadyExists));
    assert_eq!(alice.req(create(f.id, "b")).await, Response::Error(ProtoError::NotADirectory));
    assert_eq!(alice.req(create(FileId(999), "b")).await, Response::Error(ProtoError::NoSuchFile));
    for bad in ["", ".", "..", "a/b", "a\0b"] {
        assert!(matches!(alice.req(create(d.id, bad)).await, Response::Error(ProtoError::InvalidName(_))), "{bad:?}");
    }
    // The same name in another directory is fine.
    alice.create_file(FileId::ROOT, "a.txt", FileKind::File, false).await;

    // Another group's files are invisible.
    let (mut olga, _) = new_group(srv.addr, "olga").await;
    assert_eq!(olga.lock(f.id).await, Err(ProtoError::NoSuchFile));
    let Response::Files { files, .. } = olga.req(Request::ListFiles).await else { panic!() };
    assert_eq!(files.len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn lock_refused_with_holder_while_held() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;

    let before = now();
    let lease = alice.lock(f.id).await.unwrap();
    assert_eq!((lease.file, lease.version), (f.id, Version(0)));
    assert!(lease.expires >= before + TTL.as_millis() as u64 - 1000);
    match bob.lock(f.id).await {
        Err(ProtoError::Locked(h)) => {
            assert_eq!((h.member, h.member_name.as_str()), (a_cred.member, "alice"));
            assert_eq!(h.expires, lease.expires);
            assert!(h.since >= before);
        }
        other => panic!("{other:?}"),
    }
    // Not re-entrant: the holder itself is told it holds it.
    assert!(matches!(alice.lock(f.id).await, Err(ProtoError::Locked(h)) if h.member == a_cred.member));
    // Only the holder can renew or unlock.
    assert_eq!(bob.req(Request::Renew { lease: lease.id }).await, Response::Error(ProtoError::NoLease));
    assert_eq!(bob.req(Request::Unlock { lease: lease.id }).await, Response::Error(ProtoError::NoLease));
    let Response::Locked(renewed) = alice.req(Request::Renew { lease: lease.id }).await else { panic!() };
    assert_eq!(renewed.id, lease.id);
    assert!(renewed.expires >= lease.expires);
    // A directory cannot be locked.
    assert!(matches!(alice.lock(FileId::ROOT).await, Err(ProtoError::BadRequest(_))));

    assert_eq!(alice.req(Request::Unlock { lease: lease.id }).await, Response::Ok);
    assert_eq!(alice.req(Request::Unlock { lease: lease.id }).await, Response::Error(ProtoError::NoLease));
    let bl = bob.lock(f.id).await.unwrap();
    assert_ne!(bl.id, lease.id);
    assert!(matches!(alice.lock(f.id).await, Err(ProtoError::Locked(h)) if h.member == b_cred.member));

    // Disconnecting does not release a lock.
    drop(bob);
    let mut alice2 = Client::authed(srv.addr, &a_cred).await;
    assert!(matches!(alice2.lock(f.id).await, Err(ProtoError::Locked(h)) if h.member_name == "bob"));
    srv.stop().await;
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn lease_expires_after_ttl_and_another_member_gets_it() {
    let ttl = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), ttl).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, _) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let (g, _) = alice.create_file(FileId::ROOT, "g", FileKind::File, false).await;
    let mut watcher = Client::authed(srv.addr, &a_cred).await;
    let Response::Snapshot { .. } = watcher.req(Request::Subscribe { from: None }).await else { panic!() };

    let lease = alice.lock(f.id).await.unwrap();
    let held_lease = alice.lock(g.id).await.unwrap();
    let granted_at = Instant::now();
    // While alice keeps renewing g, bob never gets it, for well over a ttl.
    // Meanwhile f runs out, and bob gets it.
    let mut bob_got_f = None;
    while granted_at.elapsed() < ttl * 3 {
        let r = alice.req(Request::Renew { lease: held_lease.id }).await;
        assert!(matches!(r, Response::Locked(_)), "renew failed after {:?}: {r:?}", granted_at.elapsed());
        assert!(matches!(bob.lock(g.id).await, Err(ProtoError::Locked(_))));
        if bob_got_f.is_none() {
            match bob.lock(f.id).await {
                Ok(l) => bob_got_f = Some((l, granted_at.elapsed())),
                Err(ProtoError::Locked(h)) => assert_eq!(h.member_name, "alice"),
                Err(e) => panic!("{e:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, after) = bob_got_f.expect("bob never got the expired lock");
    assert!(after >= ttl - Duration::from_millis(50), "lock taken over after only {after:?}");
    // Alice's old lease is dead: renew, unlock and publish are refused.
    assert_eq!(alice.req(Request::Renew { lease: lease.id }).await, Response::Error(ProtoError::NoLease));
    let publish = Request::Publish {
        file: f.id,
        base: Version(0),
        lease: lease.id,
        size: 0,
        mtime: 0,
        info_hash: None,
        torrent: vec![],
        keep_lock: false,
    };
    assert_eq!(alice.req(publish).await, Response::Error(ProtoError::NoLease));

    // The watcher saw alice's lock end (by the tracker, MemberId(0)) before
    // bob's began.
    let evs = watcher
        .events_until(|e| matches!(&e.kind, EventKind::Locked { file, holder } if *file == f.id && holder.member_name == "bob"))
        .await;
    assert_contiguous(&evs);
    let unlocked = evs.iter().position(|e| matches!(e.kind, EventKind::Unlocked { file } if file == f.id)).unwrap();
    assert_eq!(evs[unlocked].by, MemberId(0));

    // With nobody asking, the sweeper releases an expired lease by itself.
    let (h, _) = alice.create_file(FileId::ROOT, "h", FileKind::File, true).await;
    let evs = watcher.events_until(|e| matches!(e.kind, EventKind::Unlocked { file } if file == h.id)).await;
    assert_eq!(evs.last().unwrap().by, MemberId(0));
    srv.stop().await;
}

#[tokio::test]
async fn publish_is_compare_and_set_and_events_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (mut bob, _) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let Response::Snapshot { seq: start, .. } = bob.req(Request::Subscribe { from: None }).await else { panic!() };

    let (f, lease) = alice.create_file(FileId::ROOT, "report.txt", FileKind::File, true).await;
    let lease = lease.expect("created locked");
    assert_eq!(lease.version, Version(0));
    assert!(matches!(bob.lock(f.id).await, Err(ProtoError::Locked(_))));
    let (ih, torrent) = fake_torrent(b'a');
    let publish = |base, lease, keep_lock, ih: InfoHash, torrent: Vec<u8>| Request::Publish {
        file: f.id,
        base: Version(base),
        lease,
        size: 5,
        mtime: 1234,
        info_hash: Some(ih),
        torrent,
        keep_lock,
    };
    // Stale base.
    let r = alice.req(publish(1, lease.id, false, ih, torrent.clone())).await;
    assert_eq!(r, Response::Error(ProtoError::StaleVersion { base: Version(1), current: Version(0) }));
    // Not a lease of the caller.
    let r = alice.req(publish(0, LeaseId(12345), false, ih, torrent.clone())).await;
    assert_eq!(r, Response::Error(ProtoError::NoLease));
    let r = bob.req(publish(0, lease.id, false, ih, torrent.clone())).await;
    assert_eq!(r, Response::Error(ProtoError::NoLease));
    // Malformed: a hash without a torrent.
    let r = alice.req(publish(0, lease.id, false, ih, vec![])).await;
    assert!(matches!(r, Response::Error(ProtoError::BadRequest(_))), "{r:?}");
    // Good.
    let r = alice.req(publish(0, lease.id, false, ih, torrent.clone())).await;
    let Response::Published(v1) = r else { panic!("{r:?}") };
    assert_eq!((v1.version, v1.size, v1.mtime, v1.info_hash, v1.author), (Version(1), 5, 1234, Some(ih), a_cred.member));
    // A retry of that same publish (reply lost) is answered again.
    let r = alice.req(publish(0, lease.id, false, ih, torrent.clone())).await;
    assert_eq!(r, Response::Published(v1.clone()));
    // The lease is gone with the publish.
    assert_eq!(alice.req(Request::Renew { lease: lease.id }).await, Response::Error(ProtoError::NoLease));
    assert_eq!(alice.req(Request::GetTorrent { file: f.id, version: Version(1) }).await, Response::Torrent(torrent));
    assert_eq!(
        alice.req(Request::GetTorrent { file: f.id, version: Version(0) }).await,
        Response::Error(ProtoError::NoTorrent)
    );

    // Bob edits with keep_lock, then again, then unlocks.
    let bl = bob.lock(f.id).await.unwrap();
    assert_eq!(bl.version, Version(1));
    let (ih2, t2) = fake_torrent(b'b');
    let Response::Published(v2) = bob.req(publish(1, bl.id, true, ih2, t2)).await else { panic!() };
    assert!(matches!(alice.lock(f.id).await, Err(ProtoError::Locked(h)) if h.member_name == "bob"));
    let (ih3, t3) = fake_torrent(b'c');
    let Response::Published(v3) = bob.req(publish(2, bl.id, true, ih3, t3)).await else { panic!() };
    assert_eq!((v2.version, v3.version), (Version(2), Version(3)));
    // Truncated to empty: no hash, no torrent.
    let empty = Request::Publish {
        file: f.id,
        base: Version(3),
        lease: bl.id,
        size: 0,
        mtime: 5,
        info_hash: None,
        torrent: vec![],
        keep_lock: false,
    };
    let Response::Published(v4) = bob.req(empty).await else { panic!() };
    assert_eq!((v4.version, v4.size, v4.info_hash), (Version(4), 0, None));

    // Bob's subscription saw it all, in order, without gaps.
    let mut evs = bob.events_until(|e| matches!(&e.kind, EventKind::FileUpdated(e) if e.version == Version(4))).await;
    evs.push(bob.next_event().await);
    assert_eq!(evs[0].seq.0, start.0 + 1);
    assert_contiguous(&evs);
    let kinds: Vec<String> = evs
        .iter()
        .map(|e| match &e.kind {
            EventKind::FileCreated(x) => format!("created {}", x.name),
            EventKind::FileUpdated(x) => format!("updated v{}", x.version),
            EventKind::Locked { holder, .. } => format!("locked {}", holder.member_name),
            EventKind::Unlocked { .. } => "unlocked".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created report.txt",
            "locked alice",
            "updated v1",
            "unlocked",
            "locked bob",
            "updated v2",
            "updated v3",
            "updated v4",
            "unlocked"
        ]
    );
    srv.stop().await;
}

#[tokio::test]
async fn subscribe_from_a_seq_replays_exactly_the_missed_events() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, cred) = new_group(srv.addr, "alice").await;
    let mut sub = Client::authed(srv.addr, &cred).await;
    let Response::Snapshot { seq: s0, files } = sub.req(Request::Subscribe { from: None }).await else { panic!() };
    assert_eq!(files.len(), 1);
    alice.create_file(FileId::ROOT, "one", FileKind::File, false).await;
    let seen = sub.events_until(|e| matches!(&e.kind, EventKind::FileCreated(x) if x.name == "one")).await;
    let last_seen = seen.last().unwrap().seq;
    drop(sub);

    // Missed while away.
    for name in ["two", "three", "four"] {
        alice.create_file(FileId::ROOT, name, FileKind::File, true).await;
    }
    let Response::Files { seq: now_seq, files } = alice.req(Request::ListFiles).await else { panic!() };
    assert_eq!(files.len(), 5);

    let mut sub = Client::authed(srv.addr, &cred).await;
    let r = sub.req(Request::Subscribe { from: Some(last_seen) }).await;
    assert_eq!(r, Response::Subscribed { seq: last_seen });
    let replay = sub.events_until(|e| e.seq == now_seq).await;
    assert_eq!(replay[0].seq.0, last_seen.0 + 1);
    assert_contiguous(&replay);
    let created: Vec<_> = replay
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FileCreated(x) => Some(x.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(created, ["two", "three", "four"]);
    // Then live events continue from there.
    alice.create_file(FileId::ROOT, "five", FileKind::File, false).await;
    let live = sub.events_until(|e| matches!(&e.kind, EventKind::FileCreated(x) if x.name == "five")).await;
    assert_eq!(live[0].seq.0, now_seq.0 + 1);
    assert_contiguous(&live);

    // The whole log from the start rebuilds the same file table.
    let mut full = Client::authed(srv.addr, &cred).await;
    assert_eq!(full.req(Request::Subscribe { from: Some(Seq(0)) }).await, Response::Subscribed { seq: Seq(0) });
    let all = full.events_until(|e| matches!(&e.kind, EventKind::FileCreated(x) if x.name == "five")).await;
    assert_eq!(all[0].seq, Seq(1));
    assert_contiguous(&all);
    let names: Vec<_> = all
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FileCreated(x) => Some(x.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["", "one", "two", "three", "four", "five"]);
    assert!(s0 < last_seen);

    // A seq from the future (e.g. a tracker restored from backup) gets a snapshot.
    let mut odd = Client::authed(srv.addr, &cred).await;
    let r = odd.req(Request::Subscribe { from: Some(Seq(1_000_000)) }).await;
    assert!(matches!(r, Response::Snapshot { ref files, .. } if files.len() == 6), "{r:?}");
    srv.stop().await;
}

/// A rename over an existing file is one commit: its two events (the
/// target's `FileDeleted`, then the `FileRenamed`) reach a subscriber in
/// one frame, live and replayed from the log after a reconnect; a commit
/// larger than a frame (a member leaving with many locks) comes in frames
/// marked `more` up to its last event.
#[tokio::test]
async fn a_commit_reaches_subscribers_whole() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, cred) = new_group(srv.addr, "alice").await;
    let (y, _) = alice.create_file(FileId::ROOT, "y", FileKind::File, false).await;
    let (z, _) = alice.create_file(FileId::ROOT, "z", FileKind::File, false).await;
    let mut live = Client::authed(srv.addr, &cred).await;
    let Response::Snapshot { seq: start, .. } = live.req(Request::Subscribe { from: None }).await else { panic!() };
    let rename = Request::Rename { file: y.id, new_parent: FileId::ROOT, new_name: "z".into(), replace: true };
    assert_eq!(alice.req(rename).await, Response::Ok);
    let evs = live.events_until(|e| matches!(e.kind, EventKind::FileRenamed { .. })).await;
    let tail = &evs[evs.len() - 2..];
    assert_eq!(tail[0].kind, EventKind::FileDeleted { file: z.id, parent: FileId::ROOT, name: "z".into() });
    let (deleted, renamed) = (tail[0].seq, tail[1].seq);
    assert_eq!(live.frame_of(renamed), [deleted, renamed], "live: the rename's commit, alone in one frame");

    // From the log: still together (with any commit of the same millisecond).
    let mut again = Client::authed(srv.addr, &cred).await;
    assert_eq!(again.req(Request::Subscribe { from: Some(start) }).await, Response::Subscribed { seq: start });
    again.events_until(|e| e.seq == renamed).await;
    let replayed = again.frame_of(renamed);
    assert!(replayed.contains(&deleted), "replayed: the deletion apart from its rename: {replayed:?}");

    // Bob leaves holding 300 leases: 300 `Unlocked` and his `MemberLeft`,
    // one commit, more than one frame holds.
    let (mut bob, _) = join(srv.addr, &mut alice, cred.group, "bob").await;
    let n = 300;
    for i in 0..n {
        bob.create_file(FileId::ROOT, &format!("b{i}"), FileKind::File, true).await;
    }
    assert_eq!(bob.req(Request::Leave).await, Response::Ok);
    let evs = live.events_until(|e| matches!(e.kind, EventKind::MemberLeft { .. })).await;
    let left = evs.last().unwrap().seq;
    let commit = live.frame_of(left);
    let leave = (left.0 - n as u64..=left.0).map(Seq);
    assert!(leave.clone().all(|s| commit.contains(&s)), "every Unlocked of the leave and its MemberLeft, together");
    assert!(evs[evs.len() - 1 - n..evs.len() - 1].iter().all(|e| matches!(e.kind, EventKind::Unlocked { .. })));
    assert!(live.event_frames.iter().any(|(_, more)| *more), "a commit of {} events in one frame", n + 1);
    srv.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_gets_every_event() {
    // More events than the broadcast buffer holds, while the subscriber
    // does not read. (Whether its pump lags depends on socket buffers; the
    // unit test in server/subscribe.rs forces the lag.)
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, cred) = new_group(srv.addr, "alice").await;
    let (f, _) = alice.create_file(FileId::ROOT, "f", FileKind::File, false).await;
    let mut sub = Client::authed(srv.addr, &cred).await;
    let Response::Snapshot { seq: start, .. } = sub.req(Request::Subscribe { from: None }).await else { panic!() };
    let n = 1500;
    for _ in 0..n {
        let lease = alice.lock(f.id).await.unwrap();
        assert_eq!(alice.req(Request::Unlock { lease: lease.id }).await, Response::Ok);
    }
    let Response::Files { seq: end, .. } = alice.req(Request::ListFiles).await else { panic!() };
    assert_eq!(end.0, start.0 + 2 * n);
    let evs = sub.events_until(|e| e.seq == end).await;
    assert_eq!(evs.len() as u64, 2 * n);
    assert_eq!(evs[0].seq.0, start.0 + 1);
    assert_contiguous(&evs);
    srv.stop().await;
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a_cred) = new_group(srv.addr, "alice").await;
    let (_bob, b_cred) = join(srv.addr, &mut alice, a_cred.group, "bob").await;
    let (d, _) = alice.create_file(FileId::ROOT, "dir", FileKind::Dir, false).await;
    let (f, lease) = alice.create_file(d.id, "f", FileKind::File, true).await;
    let (ih, torrent) = fake_torrent(b'z');
    let publish = Request::Publish {
        file: f.id,
        base: Version(0),
        lease: lease.unwrap().id,
        size: 5,
        mtime: 9,
        info_hash: Some(ih),
        torrent: torrent.clone(),
        keep_lock: false,
    };
    assert!(matches!(alice.req(publish).await, Response::Published(_)));
    let held = alice.lock(f.id).await.unwrap();
    let code = alice.invite().await;
    let Response::Files { seq: seq_before, files: files_before } = alice.req(Request::ListFiles).await else {
        panic!()
    };
    drop(alice);
    srv.stop().await;

    let srv = Server::start(dir.path(), TTL).await;
    let mut alice = Client::authed(srv.addr, &a_cred).await;
    let Response::Files { seq, files } = alice.req(Request::ListFiles).await else { panic!() };
    // The presence events of the old connections may be there too.
    assert!(seq >= seq_before);
    assert_eq!(files, files_before);
    let Response::Members(ms) = alice.req(Request::ListMembers).await else { panic!() };
    assert_eq!(ms.len(), 2);
    assert!(!ms.iter().find(|m| m.id == b_cred.member).unwrap().online, "everyone starts offline");
    // The lock and its lease survived.
    let mut bob = Client::authed(srv.addr, &b_cred).await;
    assert!(matches!(bob.lock(f.id).await, Err(ProtoError::Locked(h)) if h.member == a_cred.member));
    assert!(matches!(alice.req(Request::Renew { lease: held.id }).await, Response::Locked(_)));
    assert_eq!(alice.req(Request::GetTorrent { file: f.id, version: Version(1) }).await, Response::Torrent(torrent));
    // The invite is still good; ids keep growing.
    let mut carol = Client::connect(srv.addr).await;
    let r = carol.req(Request::Join { group: a_cred.group, invite: code, member_name: "carol".into(), peer_addr: None }).await;
    let Response::Joined { member } = r else { panic!("{r:?}") };
    assert!(member > b_cred.member);
    let (g, _) = alice.create_file(FileId::ROOT, "g", FileKind::File, false).await;
    assert!(g.id > f.id);
    // The log resumes where it was.
    let mut sub = Client::authed(srv.addr, &a_cred).await;
    assert_eq!(sub.req(Request::Subscribe { from: Some(seq_before) }).await, Response::Subscribed { seq: seq_before });
    let evs = sub.events_until(|e| matches!(&e.kind, EventKind::FileCreated(x) if x.name == "g")).await;
    assert_eq!(evs[0].seq.0, seq_before.0 + 1);
    assert_contiguous(&evs);
    srv.stop().await;
}

/// Rough lock+unlock throughput: 8 members on their own connections, each
/// locking and unlocking its own files for a while. Prints the rates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_unlock_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, cred) = new_group(srv.addr, "alice").await;
    let mut clients = Vec::new();
    for i in 0..8 {
        let (mut c, _) = join(srv.addr, &mut alice, cred.group, &format!("m{i}")).await;
        let mut files = Vec::new();
        for j in 0..4 {
            files.push(c.create_file(FileId::ROOT, &format!("f{i}-{j}"), FileKind::File, false).await.0.id);
        }
        clients.push((c, files));
    }
    let run = Duration::from_millis(1500);
    for depth in [1usize, 4] {
        let start = Instant::now();
        let tasks: Vec<_> = clients
            .drain(..)
            .map(|(mut c, files)| {
                tokio::spawn(async move {
                    let mut pairs = 0u64;
                    while start.elapsed() < run {
                        let mut ids = Vec::new();
                        for f in &files[..depth] {
                            ids.push(c.send(Request::Lock { file: *f }).await);
                        }
                        let mut leases = Vec::new();
                        for id in ids {
                            match c.response(id).await {
                                Response::Locked(l) => leases.push(l.id),
                                other => panic!("{other:?}"),
                            }
                        }
                        let mut ids = Vec::new();
                        for lease in leases {
                            ids.push(c.send(Request::Unlock { lease }).await);
                        }
                        for id in ids {
                            assert_eq!(c.response(id).await, Response::Ok);
                        }
                        pairs += depth as u64;
                    }
                    (c, files, pairs)
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            let (c, files, pairs) = t.await.unwrap();
            total += pairs;
            clients.push((c, files));
        }
        let rate = total as f64 / start.elapsed().as_secs_f64();
        println!("lock+unlock pairs/s, 8 clients, {depth} in flight each: {rate:.0}");
        assert!(total > 0);
    }
    srv.stop().await;
}

/// A real `titorrent-tracker` process, killed with SIGKILL right after its
/// replies: everything it acknowledged is there when it comes back.
#[tokio::test]
async fn acknowledged_state_survives_kill_9() {
    use tokio::io::AsyncBufReadExt;
    use tokio::process::{Child, Command};

    async fn spawn(dir: &std::path::Path) -> (Child, std::net::SocketAddr) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_titorrent-tracker"))
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn titorrent-tracker");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        loop {
            let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("no listening line").unwrap().unwrap();
            if let Some(addr) = line.strip_prefix("titorrent-tracker listening on ") {
                return (child, addr.parse().expect(&line));
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    write_admin_token(dir.path());
    let (mut child, addr) = spawn(dir.path()).await;
    let (mut alice, a_cred) = new_group(addr, "alice").await;
    let (mut bob, b_cred) = join(addr, &mut alice, a_cred.group, "bob").await;
    let (f, lease) = alice.create_file(FileId::ROOT, "f", FileKind::File, true).await;
    let (ih, torrent) = fake_torrent(b'k');
    let publish = Request::Publish {
        file: f.id,
        base: Version(0),
        lease: lease.unwrap().id,
        size: 5,
        mtime: 1,
        info_hash: Some(ih),
        torrent: torrent.clone(),
        keep_lock: false,
    };
    let Response::Published(v1) = alice.req(publish).await else { panic!() };
    // A lease taken and given back: neither reply waits for the disk, but
    // the next reply that does covers both.
    let (h, _) = alice.create_file(FileId::ROOT, "h", FileKind::File, false).await;
    let gone = alice.lock(h.id).await.unwrap();
    assert_eq!(alice.req(Request::Unlock { lease: gone.id }).await, Response::Ok);
    let held = bob.lock(f.id).await.unwrap();
    let (g, _) = bob.create_file(FileId::ROOT, "g", FileKind::File, false).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let (_child, addr) = spawn(dir.path()).await;
    let mut alice = Client::authed(addr, &a_cred).await;
    let Response::Files { files, .. } = alice.req(Request::ListFiles).await else { panic!() };
    assert!(files.contains(&v1), "{files:?}");
    assert!(files.iter().any(|e| e.id == g.id && e.name == "g"));
    assert_eq!(alice.req(Request::GetTorrent { file: f.id, version: Version(1) }).await, Response::Torrent(torrent));
    assert!(matches!(alice.lock(f.id).await, Err(ProtoError::Locked(h)) if h.member == b_cred.member));
    let mut bob = Client::authed(addr, &b_cred).await;
    assert!(bob.lock(h.id).await.is_ok(), "a released lease came back");
    assert_eq!(bob.req(Request::Unlock { lease: held.id }).await, Response::Ok);
    assert!(alice.lock(f.id).await.is_ok());
}

#[tokio::test]
async fn a_client_pins_the_tracker_key_which_survives_restarts() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use titorrent_tracker::tls::{ClientTls, Identity, TlsError};
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let real = srv.tracker.fingerprint();
    let me = Arc::new(Identity::generate().unwrap());
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let (_, got) = ClientTls { identity: me.clone(), pin: Some(real) }.connect("t", tcp).await.unwrap();
    assert_eq!(got, real);
    // Another key than the invite or state names: refused, naming both.
    let expected = Fingerprint([9; 32]);
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let err = ClientTls { identity: me.clone(), pin: Some(expected) }.connect(&srv.addr.to_string(), tcp).await.unwrap_err();
    assert!(matches!(err, TlsError::WrongTracker { got, expected: e, .. } if got == real && e == expected), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("the tracker at {} is not the one this invite/state names", srv.addr)), "{msg}");
    assert!(msg.contains(&real.to_string()) && msg.contains(&expected.to_string()), "{msg}");
    let key = dir.path().join(titorrent_tracker::server::IDENTITY_FILE);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    srv.stop().await;
    let srv = Server::start(dir.path(), TTL).await;
    assert_eq!(srv.tracker.fingerprint(), real, "the tracker's key is long-lived");
    srv.stop().await;
}

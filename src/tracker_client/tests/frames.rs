//! The link with answers and commits larger than one frame: a file table
//! in parts, parts that arrive slowly, a commit in several frames.

use super::*;

/// A name at the longest a component may be, so that few rows make a
/// table larger than one frame.
fn long_name(i: usize) -> String {
    let head = format!("f{i:06}-");
    format!("{head}{}", "x".repeat(255 - head.len()))
}

/// A group whose file table is larger than `MAX_FRAME`: a fresh member's
/// link hands on one `Snapshot` with every row once, then the events after
/// it; `ListFiles` on the link and on a one-shot connection answer whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_larger_than_a_frame_reaches_a_new_link_as_one_snapshot() {
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

    // Ana fills the group through her link, many requests in flight.
    let (ana_link, _ana_rx) = TrackerLink::start(srv.addr.to_string(), ana, 0, None);
    poll("ana's link", || async { ana_link.is_online().then_some(()) }).await;
    let n = 31_000;
    let (tasks, per) = (31, 1000);
    let mut made = Vec::new();
    for t in 0..tasks {
        let link = ana_link.clone();
        made.push(tokio::spawn(async move {
            for i in t * per..(t + 1) * per {
                let req = calls::CreateFile { parent: FileId::ROOT, name: long_name(i), kind: FileKind::File, mode: 0o644, lock: false, owner: Default::default() };
                assert!(matches!(link.call(req).await, Ok(calls::FileAnswer { .. })));
            }
        }));
    }
    for t in made {
        t.await.unwrap();
    }

    let (ben_link, mut rx) = TrackerLink::start(srv.addr.to_string(), ben, 0, None);
    // Online comes with the answer to its Subscribe, the whole table.
    assert_eq!(next_within(&mut rx, Duration::from_secs(120)).await, LinkEvent::Online);
    let LinkEvent::Snapshot { seq, files } = next_within(&mut rx, Duration::from_secs(120)).await else { panic!("expected a snapshot") };
    let whole = Response::Snapshot { seq, files: files.clone() };
    assert!(
        matches!(encode_frame(&ServerFrame::Response { id: 2, seq: None, resp: whole }), Err(FrameError::TooLarge(_))),
        "the table must be larger than one frame for this test to mean anything"
    );
    let ids: std::collections::HashSet<FileId> = files.iter().map(|e| e.id).collect();
    assert_eq!((files.len(), ids.len()), (n + 1, n + 1), "every file and the root, each once");

    create(&mut b, "after").await;
    let mut rx = Events::new(rx);
    let ev = rx.next().await;
    assert_eq!(created_name(&ev), Some("after"), "{ev:?}");
    let Got::Event(ev) = ev else { unreachable!() };
    assert_eq!(ev.seq.0, seq.0 + 1, "the first event after the snapshot");

    let files = ben_link.call(calls::ListFiles).await.unwrap().files;
    assert_eq!(files.len(), n + 2);
    let files = b.call(calls::ListFiles).await.unwrap().files;
    assert_eq!(files.len(), n + 2);
    // The link still works for small answers after a large one.
    assert!(ben_link.call(calls::ListMembers).await.is_ok());
    ana_link.shutdown();
    ben_link.shutdown();
    srv.stop().await;
}

/// A tracker that puts anything between the parts of an answer is out of
/// protocol: the link drops the connection rather than deliver a table
/// that may be missing rows.
#[tokio::test]
async fn an_event_between_parts_drops_the_connection() {
    use tokio::io::AsyncWriteExt;

    let (listener, acceptor, fp) = fake_tracker().await;
    let addr = listener.local_addr().unwrap();
    let login = Login { group: GroupId(1), member: MemberId(1), tls: key(Some(fp)) };
    let me = MemberInfo { id: MemberId(1), name: "ana".into(), online: true, peer_addr: None, key: Fingerprint([0; 32]) };
    let root = FileEntry {
        id: FileId::ROOT,
        parent: FileId::ROOT,
        name: "root".into(),
        kind: FileKind::Dir,
        size: 0,
        mtime: 0,
        mode: 0o755,
        version: Version(0),
        info_hash: None,
        author: MemberId(1),
        owner: Default::default(),
        ctime: 0,
    };
    let ev = Event { seq: Seq(1), at: 0, by: MemberId(1), kind: EventKind::Unlocked { file: FileId(2) } };
    let fake = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = acceptor.accept(s).await.unwrap();
        let mut frames = Vec::new();
        for f in [
            ServerFrame::Hello { version: PROTOCOL_VERSION },
            ServerFrame::Response { id: 1, seq: None, resp: Response::Authenticated { member: me, group_name: "g".into() } },
            ServerFrame::Part { id: 2, files: vec![root] },
            ServerFrame::Events { events: vec![ev], more: false },
            ServerFrame::Response { id: 2, seq: None, resp: Response::Snapshot { seq: Seq(0), files: vec![] } },
        ] {
            frames.extend(encode_frame(&f).unwrap());
        }
        s.write_all(&frames).await.unwrap();
        // Held open: the link is the one to close.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink).await;
    });
    let (link, mut rx) = TrackerLink::start(addr.to_string(), login, 0, None);
    assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv()).await.is_err(), "{:?}", rx.try_recv());
    assert!(!link.is_online());
    link.shutdown();
    tokio::time::timeout(WAIT, fake).await.unwrap().unwrap();
}

/// A frame that arrives slowly (its halves further apart than the link's
/// probe tick) is read whole: the read is not cut off and restarted in the
/// middle of the frame.
#[tokio::test]
async fn a_part_that_arrives_slowly_is_read_whole() {
    use titorrent_tracker::proto::{decode_body, encode_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (listener, acceptor, fp) = fake_tracker().await;
    let addr = listener.local_addr().unwrap();
    let login = Login { group: GroupId(1), member: MemberId(1), tls: key(Some(fp)) };
    let me = MemberInfo { id: MemberId(1), name: "ana".into(), online: true, peer_addr: None, key: Fingerprint([0; 32]) };
    let rows: Vec<FileEntry> = (2..2000)
        .map(|i| FileEntry {
            id: FileId(i),
            parent: FileId::ROOT,
            name: long_name(i as usize),
            kind: FileKind::File,
            size: 0,
            mtime: 0,
            mode: 0o644,
            version: Version(0),
            info_hash: None,
            author: MemberId(1),
            owner: Default::default(),
            ctime: 0,
        })
        .collect();
    let sent = rows.clone();
    let fake = tokio::spawn(async move {
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
        // Hello, Authenticate, Subscribe, then the test's ListFiles (and
        // perhaps probes, which get no answer).
        let mut list_id = None;
        while list_id.is_none() {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut body).await.unwrap();
            if let ClientFrame::Request { id, req: Request::ListFiles } = decode_body(&body).unwrap() {
                list_id = Some(id);
            }
        }
        let id = list_id.unwrap();
        let part = encode_frame(&ServerFrame::Part { id, files: sent }).unwrap();
        let (first, rest) = part.split_at(part.len() / 2);
        s.write_all(first).await.unwrap();
        s.flush().await.unwrap();
        // Longer than the probe's tick (150 ms in tests), shorter than
        // what the link takes for a dead tracker (300 ms, then 300 ms more).
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.write_all(rest).await.unwrap();
        let end = ServerFrame::Response { id, seq: None, resp: Response::Files { seq: Seq(0), files: vec![] } };
        s.write_all(&encode_frame(&end).unwrap()).await.unwrap();
        s.flush().await.unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let (link, mut rx) = TrackerLink::start(addr.to_string(), login, 0, None);
    assert_eq!(next(&mut rx).await, LinkEvent::Online);
    assert!(matches!(next(&mut rx).await, LinkEvent::Snapshot { .. }));
    let got = link.call(calls::ListFiles).await.unwrap();
    assert_eq!(got, calls::FileTable { seq: Seq(0), files: rows });
    link.shutdown();
    tokio::time::timeout(WAIT, fake).await.unwrap().unwrap();
}

/// A rename over an existing file is one commit at the tracker (the
/// target's `FileDeleted`, then the `FileRenamed`): a link hands it on as
/// one `LinkEvent::Events`, live and when a link started from an older seq
/// replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_over_a_file_reaches_the_link_as_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let (mut c, tls) = connect(&srv).await;
    let req = calls::CreateGroup { admin_token: srv.tracker.admin_token().0.into(), group_name: "g".into(), member_name: "ana".into(), peer_addr: None };
    let calls::GroupCreated { group, member } = c.call(req).await.unwrap();
    let ana = Login { group, member, tls };
    let y = create(&mut c, "y").await;
    let z = create(&mut c, "z").await;

    let (link, mut rx) = TrackerLink::start(srv.addr.to_string(), ana.clone(), 0, None);
    assert_eq!(next(&mut rx).await, LinkEvent::Online);
    let LinkEvent::Snapshot { seq: before, .. } = next(&mut rx).await else { panic!("expected a snapshot") };
    let rename = calls::Rename { file: y.id, new_parent: FileId::ROOT, new_name: "z".into(), replace: true };
    let () = link.call(rename).await.unwrap();
    let is_rename = |evs: &[Event]| evs.iter().any(|e| matches!(e.kind, EventKind::FileRenamed { .. }));
    let commit = loop {
        match next(&mut rx).await {
            LinkEvent::Events(evs) if is_rename(&evs) => break evs,
            LinkEvent::Events(_) => {}
            other => panic!("{other:?}"),
        }
    };
    let kinds: Vec<&EventKind> = commit.iter().map(|e| &e.kind).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0], &EventKind::FileDeleted { file: z.id, parent: FileId::ROOT, name: "z".into() });
    assert!(matches!(kinds[1], EventKind::FileRenamed { entry, .. } if entry.id == y.id && entry.name == "z"), "{kinds:?}");
    link.shutdown();

    // A link that last saw `before` replays it, still in one piece.
    let (again, mut rx) = TrackerLink::start(srv.addr.to_string(), ana, 0, Some(before));
    assert_eq!(next(&mut rx).await, LinkEvent::Online);
    let replayed = loop {
        match next(&mut rx).await {
            LinkEvent::Events(evs) if is_rename(&evs) => break evs,
            LinkEvent::Events(_) => {}
            other => panic!("{other:?}"),
        }
    };
    assert!(replayed.ends_with(&commit), "the deletion apart from its rename: {replayed:?}");
    again.shutdown();
    srv.stop().await;
}

/// A commit the tracker sends in two frames (`more` on the first) is
/// handed on as one `LinkEvent::Events` once its last frame is in; a
/// connection lost between its frames hands on none of it, and the link
/// resubscribes from the end of the last commit it handed on.
#[tokio::test]
async fn a_commit_in_several_frames_is_handed_on_whole_or_not_at_all() {
    use titorrent_tracker::proto::{decode_body, encode_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (listener, acceptor, fp) = fake_tracker().await;
    let addr = listener.local_addr().unwrap();
    let login = Login { group: GroupId(1), member: MemberId(1), tls: key(Some(fp)) };
    let me = MemberInfo { id: MemberId(1), name: "ana".into(), online: true, peer_addr: None, key: Fingerprint([0; 32]) };
    let ev = |s: u64| Event { seq: Seq(s), at: 5, by: MemberId(1), kind: EventKind::Unlocked { file: FileId(s) } };
    let fake = tokio::spawn(async move {
        let mut froms = Vec::new();
        for conn in 0..2 {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = acceptor.accept(s).await.unwrap();
            // Hello, Authenticate, Subscribe.
            for _ in 0..3 {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).await.unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                s.read_exact(&mut body).await.unwrap();
                if let ClientFrame::Request { req: Request::Subscribe { from }, .. } = decode_body(&body).unwrap() {
                    froms.push(from);
                }
            }
            let subscribed = if conn == 0 { Response::Snapshot { seq: Seq(0), files: vec![] } } else { Response::Subscribed { seq: Seq(2) } };
            let mut frames = vec![
                ServerFrame::Hello { version: PROTOCOL_VERSION },
                ServerFrame::Response { id: 1, seq: None, resp: Response::Authenticated { member: me.clone(), group_name: "g".into() } },
                ServerFrame::Response { id: 2, seq: None, resp: subscribed },
            ];
            if conn == 0 {
                // A whole commit, then the first half of one, and the end.
                frames.push(ServerFrame::Events { events: vec![ev(1)], more: true });
                frames.push(ServerFrame::Events { events: vec![ev(2)], more: false });
                frames.push(ServerFrame::Events { events: vec![ev(3)], more: true });
            } else {
                frames.push(ServerFrame::Events { events: vec![ev(3)], more: true });
                frames.push(ServerFrame::Events { events: vec![ev(4)], more: false });
            }
            let mut bytes = Vec::new();
            for f in frames {
                bytes.extend(encode_frame(&f).unwrap());
            }
            s.write_all(&bytes).await.unwrap();
            s.flush().await.unwrap();
            if conn == 0 {
                s.shutdown().await.unwrap();
            } else {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            }
        }
        froms
    });
    let (link, mut rx) = TrackerLink::start(addr.to_string(), login, 0, None);
    assert_eq!(next(&mut rx).await, LinkEvent::Online);
    assert!(matches!(next(&mut rx).await, LinkEvent::Snapshot { .. }));
    assert_eq!(next(&mut rx).await, LinkEvent::Events(vec![ev(1), ev(2)]), "two frames, one commit");
    assert_eq!(next(&mut rx).await, LinkEvent::Offline, "nothing of the commit cut off");
    assert_eq!(next(&mut rx).await, LinkEvent::Online);
    assert_eq!(next(&mut rx).await, LinkEvent::Events(vec![ev(3), ev(4)]));
    link.shutdown();
    let froms = tokio::time::timeout(WAIT, fake).await.unwrap().unwrap();
    assert_eq!(froms, [None, Some(Seq(2))], "resubscribed from the end of the last commit handed on");
}

//! File tables larger than one frame: `Subscribe` and `ListFiles` answer
//! in parts, every row once, as of one seq, and a subscriber then gets
//! every later event, also when files are created while the parts go out.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::*;
use titorrent_tracker::proto::*;

const TTL: Duration = Duration::from_secs(30);

/// Deadline for each frame here: tens of thousands of rows in a debug
/// build on a loaded CI machine take far longer than the common `WAIT`
/// (the test is about what arrives, not how fast).
const SLOW: Duration = Duration::from_secs(120);

/// Names at the longest a component may be, so that few rows make a
/// table larger than `MAX_FRAME`.
fn long_name(tag: &str, i: usize) -> String {
    let head = format!("{tag}-{i:06}-");
    format!("{head}{}", "x".repeat(255 - head.len()))
}

/// Creates `names` in `parent` with requests pipelined `WINDOW` at a time
/// on `c`; returns the entries.
async fn create_many(c: &mut Client, parent: FileId, names: &[String]) -> Vec<FileEntry> {
    const WINDOW: usize = 512;
    let mut out = Vec::with_capacity(names.len());
    for batch in names.chunks(WINDOW) {
        let mut ids = Vec::with_capacity(batch.len());
        for name in batch {
            let req = Request::CreateFile { parent, name: name.clone(), kind: FileKind::File, mode: 0o644, lock: false, owner: Default::default() };
            ids.push(c.send(req).await);
        }
        for id in ids {
            match c.response(id).await {
                Response::File { entry, .. } => out.push(entry),
                other => panic!("create: {other:?}"),
            }
        }
    }
    out
}

/// Each row's id once; the rows by id.
fn by_id(files: Vec<FileEntry>) -> HashMap<FileId, FileEntry> {
    let n = files.len();
    let map: HashMap<_, _> = files.into_iter().map(|e| (e.id, e)).collect();
    assert_eq!(map.len(), n, "a row came twice");
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_larger_than_a_frame_comes_in_parts_then_the_events_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), TTL).await;
    let (mut alice, a) = new_group(srv.addr, "alice").await;
    alice.wait = SLOW;
    let (_, b) = join(srv.addr, &mut alice, a.group, "bob").await;
    let n = 32_000;
    let names: Vec<String> = (0..n).map(|i| long_name("big", i)).collect();
    let created = create_many(&mut alice, FileId::ROOT, &names).await;

    let Response::Files { seq: listed_at, files } = alice.req(Request::ListFiles).await else { panic!() };
    assert!(alice.last_frames > 2, "ListFiles came in {} frames", alice.last_frames);
    let whole = Response::Files { seq: listed_at, files: files.clone() };
    assert!(
        matches!(encode_frame(&ServerFrame::Response { id: 1, seq: None, resp: whole }), Err(FrameError::TooLarge(_))),
        "the table must be larger than one frame for this test to mean anything"
    );
    let listed = by_id(files);
    assert_eq!(listed.len(), n + 1, "every file and the root");
    for e in &created {
        assert_eq!(listed.get(&e.id), Some(e));
    }

    // Bob subscribes while alice keeps creating on another connection.
    let mut writer = Client::authed(srv.addr, &a).await;
    writer.wait = SLOW;
    let more: Vec<String> = (0..3000).map(|i| long_name("during", i)).collect();
    let during = tokio::spawn(async move { create_many(&mut writer, FileId::ROOT, &more).await });
    let mut bob = Client::authed(srv.addr, &b).await;
    bob.wait = SLOW;
    let Response::Snapshot { seq, files } = bob.req(Request::Subscribe { from: None }).await else { panic!() };
    assert!(bob.last_frames > 2, "the snapshot came in {} frames", bob.last_frames);
    let mut table = by_id(files);
    let made_during = during.await.unwrap();
    let last = made_during.iter().map(|e| e.id).max().unwrap();

    // Events after the snapshot's seq: in order, none lost, and each file
    // either in the snapshot or created after it, never both.
    let mut next = seq.0 + 1;
    let after = alice.create_file(FileId::ROOT, "after", FileKind::File, false).await.0;
    while !table.contains_key(&after.id) {
        let ev = bob.next_event().await;
        assert_eq!(ev.seq.0, next, "gap or duplicate after the snapshot at {seq}");
        next += 1;
        if let EventKind::FileCreated(e) = ev.kind {
            assert!(table.insert(e.id, e).is_none(), "created, yet in the snapshot");
        }
    }
    assert_eq!(table.len(), n + 1 + made_during.len() + 1);
    assert!(table.contains_key(&last));
    let names: HashSet<&str> = table.values().map(|e| e.name.as_str()).collect();
    assert_eq!(names.len(), table.len(), "names are unique in one directory");
    srv.stop().await;
}

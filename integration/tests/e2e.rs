//! End-to-end scenarios: a real tracker and real mounts on loopback, each
//! assertion something a member of the group could check by hand: bytes
//! read, errno returned, what another member sees.
//!
//! Needs root, /dev/fuse and fusermount3, and the binaries built
//! (`cargo build --workspace`); see README.md.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use titorrent_integration::content::describe_difference;
use titorrent_integration::raw::RawConn;
use titorrent_integration::{alice_and_bob, assert_same_bytes, scenario, wait_for, wait_until, Pattern, Peer, TrackerProc};
use titorrent_tracker::proto::{FileId, ProtoError, Request, Response};

const MIB: u64 = 1 << 20;
/// How long another member may take to see a small published change.
const SEE: Duration = Duration::from_secs(30);

/// Waits until `peer` reads exactly `expected` at `rel`.
fn wait_for_content(peer: &Peer, rel: &str, expected: &[u8], timeout: Duration) {
    let path = peer.path(rel);
    wait_for(timeout, &format!("{} reads the expected {} bytes of {rel}", peer.name(), expected.len()), || {
        let got = fs::read(&path).map_err(|e| format!("read: {e}"))?;
        match describe_difference(&got, expected) {
            None => Ok(()),
            Some(d) => Err(d),
        }
    });
}

fn names(peer: &Peer) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(peer.mountpoint())
        .unwrap_or_else(|e| panic!("readdir of {}'s mount: {e}", peer.name()))
        .map(|e| e.expect("readdir entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_file_written_on_one_member_reads_the_same_on_another() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();

        let text = b"hello from alice\n";
        fs::write(alice.path("hello.txt"), text).unwrap();
        let pattern = Pattern::random("photo.bin");
        let size = 3 * MIB;
        pattern.write_file(&alice.path("photo.bin"), size).unwrap();
        let photo = pattern.bytes_at(0, size as usize);
        assert_same_bytes("alice reads back her own photo.bin", &fs::read(alice.path("photo.bin")).unwrap(), &photo);

        wait_for_content(&bob, "hello.txt", text, SEE);
        wait_for_content(&bob, "photo.bin", &photo, SEE);
        assert_eq!(fs::metadata(bob.path("photo.bin")).unwrap().len(), size, "size bob stats");
        assert_eq!(names(&bob), ["hello.txt", "photo.bin"], "bob's listing");
    });
}

#[test]
fn a_read_in_the_middle_of_a_large_file_is_served_before_the_whole_file_is_local() {
    scenario(Duration::from_secs(300), || {
        titorrent_integration::require_fuse();
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        let mut bob = Peer::join(&tracker, &alice, "bob");
        // Alice uploads at 4 MiB/s at most: fetching the whole 200 MiB, or
        // everything up to the read offset, takes bob well over 30 s.
        alice.mount_with(&["--upload-limit", &(4 * MIB).to_string()]);
        bob.mount();

        let size = 200 * MIB;
        let offset = 150 * MIB;
        let pattern = Pattern::random("big.bin");
        pattern.write_file(&alice.path("big.bin"), size).unwrap();

        let path = bob.path("big.bin");
        wait_until(Duration::from_secs(90), "bob sees big.bin at its full size", || {
            fs::metadata(&path).is_ok_and(|m| m.len() == size)
        });
        let f = fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        let started = Instant::now();
        let n = f.read_at(&mut buf, offset).unwrap();
        let took = started.elapsed();
        let local = bob.cache_bytes_on_disk();
        eprintln!("pread of 4 KiB at {offset} took {took:?}; bob's cache then held {local} bytes on disk");
        assert_eq!(n, buf.len(), "short read at offset {offset}");
        assert_same_bytes("bob's 4 KiB at 150 MiB", &buf, &pattern.bytes_at(offset, buf.len()));
        assert!(
            local < offset,
            "when the read returned, bob's cache held {local} bytes on disk: not less than the \
             {offset} bytes before the read offset, so it did not fetch the read's pieces first"
        );
        // And reading on from there gives the right bytes too.
        let mut g = fs::File::open(&path).unwrap();
        g.seek(SeekFrom::Start(size - MIB)).unwrap();
        let mut last = Vec::new();
        g.read_to_end(&mut last).unwrap();
        assert_same_bytes("bob's last MiB", &last, &pattern.bytes_at(size - MIB, MIB as usize));
    });
}

#[test]
fn a_file_open_for_write_is_locked_against_other_members_until_closed() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::write(alice.path("notes.txt"), b"v1\n").unwrap();
        wait_for_content(&bob, "notes.txt", b"v1\n", SEE);

        // Alice holds notes.txt open for write: the lock is hers.
        let mut held = OpenOptions::new().write(true).truncate(true).open(alice.path("notes.txt")).unwrap();
        let mark = bob.log_len();
        let err = OpenOptions::new()
            .write(true)
            .open(bob.path("notes.txt"))
            .expect_err("bob opened notes.txt for write while alice holds it open for write");
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "bob's open for write: {err}");
        wait_until(Duration::from_secs(5), "bob's log names alice as the holder", || {
            bob.log_since(mark).contains("alice")
        });
        // Reading is not writing: bob still reads the published version.
        assert_eq!(fs::read(bob.path("notes.txt")).unwrap(), b"v1\n", "bob's read while alice holds the lock");

        held.write_all(b"edit by alice\n").unwrap();
        drop(held); // close: publishes and releases the lock
        wait_for_content(&bob, "notes.txt", b"edit by alice\n", SEE);

        // Now bob may write, and alice is the one refused.
        let mut bobs = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(bob.path("notes.txt"))
            .expect("bob's open for write once alice closed");
        let mark = alice.log_len();
        let err = OpenOptions::new()
            .write(true)
            .open(alice.path("notes.txt"))
            .expect_err("alice opened notes.txt for write while bob holds it open for write");
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "alice's open for write: {err}");
        wait_until(Duration::from_secs(5), "alice's log names bob as the holder", || {
            alice.log_since(mark).contains("bob")
        });
        bobs.write_all(b"edit by bob\n").unwrap();
        drop(bobs);
        wait_for_content(&alice, "notes.txt", b"edit by bob\n", SEE);
    });
}

#[test]
fn the_group_survives_a_tracker_crash_and_restart_on_the_same_port() {
    scenario(Duration::from_secs(180), || {
        let (mut tracker, alice, bob) = alice_and_bob();
        fs::write(alice.path("before.txt"), b"written before the crash\n").unwrap();
        wait_for_content(&bob, "before.txt", b"written before the crash\n", SEE);
        // `titorrent members` itself authenticates as its caller, so each
        // side looks at the other: online means the other's mount is linked.
        let sees_online = |p: &Peer, other: &str| {
            let m = p.members();
            if m.iter().any(|l| l.name == other && l.online) {
                Ok(())
            } else {
                Err(format!("{}'s `titorrent members`: {m:?}", p.name()))
            }
        };
        wait_for(SEE, "alice sees bob online", || sees_online(&alice, "bob"));
        wait_for(SEE, "bob sees alice online", || sees_online(&bob, "alice"));

        tracker.kill9();
        tracker.restart();

        for p in [&alice, &bob] {
            let mut listed: Vec<String> = p.members().into_iter().map(|l| l.name).collect();
            listed.sort();
            assert_eq!(listed, ["alice", "bob"], "`titorrent members` from {}'s state after the restart", p.name());
        }
        // The mounts reconnect by themselves.
        wait_for(Duration::from_secs(60), "alice sees bob online again", || sees_online(&alice, "bob"));
        wait_for(Duration::from_secs(60), "bob sees alice online again", || sees_online(&bob, "alice"));
        assert_eq!(names(&alice), ["before.txt"]);
        assert_eq!(names(&bob), ["before.txt"]);
        assert_eq!(fs::read(bob.path("before.txt")).unwrap(), b"written before the crash\n");

        let pattern = Pattern::random("after.bin");
        pattern.write_file(&alice.path("after.bin"), MIB).unwrap();
        wait_for_content(&bob, "after.bin", &pattern.bytes_at(0, MIB as usize), SEE);
    });
}

#[test]
fn garbage_and_unauthenticated_connections_are_refused_while_members_keep_working() {
    scenario(Duration::from_secs(120), || {
        let (tracker, alice, bob) = alice_and_bob();
        let addr = tracker.addr();

        // Not TLS at all after a TLS record header. (HTTP is the tracker's
        // announce endpoint.)
        let mut tls = RawConn::plain(addr);
        tls.send_bytes(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xfc, 0x03, 0x03]);
        tls.expect_closed(Duration::from_secs(10), "after a TLS record of garbage");

        // A well-sized frame whose body is not bincode of a ClientFrame.
        let mut junk = RawConn::connect(addr);
        let body = [0xffu8; 64];
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        junk.send_bytes(&frame);
        junk.expect_closed(Duration::from_secs(10), "after a frame of garbage");

        // Hello, then requests without authenticating.
        let mut anon = RawConn::connect(addr);
        anon.hello();
        for (id, req) in [
            (1, Request::ListFiles),
            (2, Request::ListMembers),
            (3, Request::Lock { file: FileId::ROOT }),
            (4, Request::Subscribe { from: None }),
        ] {
            let resp = anon.request(id, req.clone());
            assert_eq!(resp, Response::Error(ProtoError::NotAuthenticated), "answer to unauthenticated {req:?}");
        }

        // Meanwhile, a half-sent frame hangs on another connection.
        let mut half = RawConn::connect(addr);
        half.send_bytes(&[0, 0, 0, 100, 1, 2, 3]);

        fs::write(alice.path("during.txt"), b"while strangers knock\n").unwrap();
        wait_for_content(&bob, "during.txt", b"while strangers knock\n", SEE);

        drop((anon, half));
        fs::write(alice.path("after.txt"), b"after they left\n").unwrap();
        wait_for_content(&bob, "after.txt", b"after they left\n", SEE);
        fs::write(bob.path("reply.txt"), b"bob too\n").unwrap();
        wait_for_content(&alice, "reply.txt", b"bob too\n", SEE);
    });
}

#[test]
fn up_starts_a_working_share_that_a_second_member_joins_with_the_printed_command() {
    scenario(Duration::from_secs(120), || {
        titorrent_integration::require_fuse();
        let first = Peer::up("first");
        let invite = first.up_invite();
        let mut second = Peer::join_with_invite(None, &invite, "second");
        second.mount();

        fs::write(first.path("from-first.txt"), b"made on the up machine\n").unwrap();
        wait_for_content(&second, "from-first.txt", b"made on the up machine\n", SEE);
        fs::write(second.path("from-second.txt"), b"made on the joining machine\n").unwrap();
        wait_for_content(&first, "from-second.txt", b"made on the joining machine\n", SEE);
    });
}

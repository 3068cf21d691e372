//! Reading on real mounts: several opens of one file on one member at
//! once, and the read-ahead a mount asks of the kernel.
//!
//! Several opens of one file on one member at once: the
//! kernel keeps one I/O mode per file (page cache, or passthrough to a
//! local copy) and fails an open that asks for the other one with EIO;
//! these are the mixes a member meets: a file read while it was fetched and
//! read again once local, a file opened for writing while it is being read,
//! a new version opened while the old one is still being read, a file
//! mapped into memory (shared and private) while it is still being fetched.
//!
//! Needs root, /dev/fuse, fusermount3, the binaries built (`cargo build
//! --workspace`) and getfattr (package attr).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;
use titorrent_integration::programs::{getfattr, wait_for_content, SEE};
use titorrent_integration::{assert_same_bytes, scenario, wait_for, Pattern, Peer, TrackerProc};

const MIB: u64 = 1 << 20;
/// How long a member may take to fetch a few MiB over loopback.
const FETCH: Duration = Duration::from_secs(60);

/// A tracker, alice (default configuration) and bob with `config` (TOML),
/// both mounted.
fn alice_and_bob(config: &str) -> (TrackerProc, Peer, Peer, tempfile::TempDir) {
    titorrent_integration::require_fuse();
    let tracker = TrackerProc::start();
    let mut alice = Peer::create_group(&tracker, "alice");
    let mut bob = Peer::join(&tracker, &alice, "bob");
    let dir = tempfile::Builder::new().prefix("titorrent-open-modes-").tempdir().expect("temp dir");
    let cfg = dir.path().join("bob.toml");
    fs::write(&cfg, config).expect("write bob's config");
    alice.mount();
    bob.mount_with(&["--config", cfg.to_str().expect("utf-8 temp path")]);
    (tracker, alice, bob, dir)
}

fn bytes_local(path: &Path) -> u64 {
    getfattr(path, "user.titorrent.bytes_local").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// `name` written by alice (`size` bytes of a pattern seeded with `seed`)
/// and seen by bob (on demand) as version 1 with nothing of it local yet:
/// the pattern and bob's path.
fn published_on_demand(alice: &Peer, bob: &Peer, name: &str, size: u64, seed: u64) -> (Pattern, std::path::PathBuf) {
    let pattern = Pattern::new(seed);
    pattern.write_file(&alice.path(name), size).unwrap();
    let path = bob.path(name);
    wait_for(SEE, &format!("bob sees {name} published"), || match fs::metadata(&path) {
        Ok(m) if m.len() == size && getfattr(&path, "user.titorrent.version").as_deref() == Ok("1") => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(bytes_local(&path), 0, "on demand: nothing fetched before a read");
    (pattern, path)
}

fn read_all(f: &mut File) -> Vec<u8> {
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.read_to_end(&mut v).expect("read through an open handle");
    v
}

#[test]
fn a_file_opened_while_it_was_fetched_can_be_opened_again_once_local() {
    scenario(Duration::from_secs(180), || {
        let (_tracker, alice, bob, _dir) = alice_and_bob("replication = \"on-demand\"\n");
        let size = 8 * MIB;
        let (pattern, path) = published_on_demand(&alice, &bob, "data.bin", size, 0x6f70656e);

        // Opened while nothing is local: the daemon serves it.
        let mut early = File::open(&path).unwrap();
        let mut head = vec![0u8; 4096];
        early.read_exact_at(&mut head, 0).unwrap();
        assert_same_bytes("bob's first 4 KiB", &head, &pattern.bytes_at(0, 4096));

        // Another read fetches the rest; the first handle stays open.
        assert_same_bytes("bob's whole read", &fs::read(&path).unwrap(), &pattern.bytes_at(0, size as usize));
        wait_for(FETCH, "bob holds all of data.bin", || match bytes_local(&path) {
            n if n == size => Ok(()),
            n => Err(format!("{n} bytes local")),
        });

        // Opened now that it is local, beside the first handle.
        let mut late = File::open(&path).expect("an open of the local copy beside an earlier open");
        assert_same_bytes("bob's read once local", &read_all(&mut late), &pattern.bytes_at(0, size as usize));
        assert_same_bytes("bob's first handle", &read_all(&mut early), &pattern.bytes_at(0, size as usize));
        drop((early, late));
        let mut again = File::open(&path).unwrap();
        assert_same_bytes("bob's read after both closed", &read_all(&mut again), &pattern.bytes_at(0, size as usize));
    });
}

#[test]
fn a_file_being_read_can_be_opened_for_writing_by_the_same_member() {
    scenario(Duration::from_secs(180), || {
        let (_tracker, alice, bob, _dir) = alice_and_bob("");
        fs::write(alice.path("log.txt"), b"first line\n").unwrap();
        wait_for_content(&bob, "log.txt", b"first line\n", SEE);
        wait_for(SEE, "alice's log.txt is published and local", || match bytes_local(&alice.path("log.txt")) {
            11 => Ok(()),
            n => Err(format!("{n} bytes local")),
        });

        // `tail -f` and an appending writer, on the member who has it local.
        let mut reader = File::open(alice.path("log.txt")).unwrap();
        assert_eq!(read_all(&mut reader), b"first line\n");
        let mut writer = OpenOptions::new()
            .append(true)
            .open(alice.path("log.txt"))
            .expect("an open for writing beside a read of the local copy");
        writer.write_all(b"second line\n").unwrap();
        // A read opened while the write is open sees the edit in progress.
        let mut peek = File::open(alice.path("log.txt")).expect("a read open beside the write");
        assert_eq!(read_all(&mut peek), b"first line\nsecond line\n");
        drop(writer);
        drop(peek);
        wait_for_content(&bob, "log.txt", b"first line\nsecond line\n", SEE);
        let mut after = File::open(alice.path("log.txt")).expect("a read open after the edit");
        assert_eq!(read_all(&mut after), b"first line\nsecond line\n");
        drop(reader);
    });
}

#[test]
fn a_new_version_can_be_opened_while_the_old_one_is_still_being_read() {
    scenario(Duration::from_secs(180), || {
        let (_tracker, alice, bob, _dir) = alice_and_bob("");
        let (v1, v2) = (Pattern::new(1), Pattern::new(2));
        let size = 2 * MIB;
        v1.write_file(&alice.path("doc.bin"), size).unwrap();
        let path = bob.path("doc.bin");
        wait_for(FETCH, "bob holds version 1 of doc.bin", || {
            match (getfattr(&path, "user.titorrent.version"), bytes_local(&path)) {
                (Ok(v), n) if v == "1" && n == size => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let mut old = File::open(&path).unwrap();
        assert_same_bytes("bob's version 1", &read_all(&mut old), &v1.bytes_at(0, size as usize));

        v2.write_file(&alice.path("doc.bin"), size).unwrap();
        wait_for(FETCH, "bob holds version 2 of doc.bin", || {
            match (getfattr(&path, "user.titorrent.version"), bytes_local(&path)) {
                (Ok(v), n) if v == "2" && n == size => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        let mut new = File::open(&path).expect("an open of version 2 while version 1 is open");
        assert_same_bytes("bob's version 2", &read_all(&mut new), &v2.bytes_at(0, size as usize));
        let mut buf = vec![0u8; 4096];
        old.read_exact_at(&mut buf, 0).expect("the handle on version 1 still reads");
        drop((old, new));
        let mut again = File::open(&path).unwrap();
        assert_same_bytes("bob's version 2 once alone", &read_all(&mut again), &v2.bytes_at(0, size as usize));
    });
}

#[test]
fn a_mount_reads_ahead_one_full_fuse_request() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob, _dir) = alice_and_bob("");
        for p in [&alice, &bob] {
            let dev = fs::metadata(p.mountpoint()).unwrap().dev();
            let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
            let kib = fs::read_to_string(&knob).unwrap_or_else(|e| panic!("{knob}: {e}"));
            // 1 MiB: sequential reads the daemon serves come as 1 MiB READs
            // (the kernel's default is 128 KiB, and INIT cannot raise it).
            assert_eq!(kib.trim(), "1024", "{}'s {knob}", p.name());
        }
    });
}

/// The bytes of `len` bytes at `offset` of `f` seen through an mmap of it
/// (`flags`: MAP_SHARED or MAP_PRIVATE), read-only.
fn mapped(f: &File, flags: libc::c_int, offset: usize, len: usize, size: usize) -> std::io::Result<Vec<u8>> {
    // SAFETY: a read-only mapping of an open file, read within its size and
    // unmapped before returning.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ, flags, f.as_raw_fd(), 0);
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let v = std::slice::from_raw_parts((p as *const u8).add(offset), len).to_vec();
        libc::munmap(p, size);
        Ok(v)
    }
}

/// A version still being fetched is opened with direct I/O (its bytes go
/// into the object file only, not a second time into the page cache);
/// programs that map files (linkers, git, databases) must still map it.
#[test]
fn a_file_still_being_fetched_can_be_mapped_shared_and_private() {
    scenario(Duration::from_secs(180), || {
        let (_tracker, alice, bob, _dir) = alice_and_bob("replication = \"on-demand\"\n");
        let size = 8 * MIB;
        let (pattern, path) = published_on_demand(&alice, &bob, "mapped.bin", size, 0x6d6d6170);

        let f = File::open(&path).unwrap();
        let at = (5 * MIB + 12345) as usize;
        let shared = mapped(&f, libc::MAP_SHARED, at, 4096, size as usize).expect("MAP_SHARED of a file being fetched");
        assert_same_bytes("bob's shared mapping", &shared, &pattern.bytes_at(at as u64, 4096));
        let private = mapped(&f, libc::MAP_PRIVATE, 100, 8192, size as usize).expect("MAP_PRIVATE of a file being fetched");
        assert_same_bytes("bob's private mapping", &private, &pattern.bytes_at(100, 8192));
        // Plain reads through the same handle, small ones as stdio makes.
        let mut small = vec![0u8; 512];
        f.read_exact_at(&mut small, 3 * MIB + 7).unwrap();
        assert_same_bytes("bob's 512-byte read", &small, &pattern.bytes_at(3 * MIB + 7, 512));
        assert_same_bytes("bob's whole read", &fs::read(&path).unwrap(), &pattern.bytes_at(0, size as usize));
        drop(f);

        // Once complete, a new open (passthrough where the kernel has it)
        // maps and reads the same bytes.
        wait_for(FETCH, "bob holds all of mapped.bin", || match bytes_local(&path) {
            n if n == size => Ok(()),
            n => Err(format!("{n} bytes local")),
        });
        let f = File::open(&path).expect("an open of the local copy after a mapped one");
        let shared = mapped(&f, libc::MAP_SHARED, at, 4096, size as usize).expect("MAP_SHARED of the local copy");
        assert_same_bytes("bob's shared mapping once local", &shared, &pattern.bytes_at(at as u64, 4096));
    });
}

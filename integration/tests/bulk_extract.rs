//! A burst of small files: `tar -x` of a generated tree of a few thousand
//! files into a mount while another member is mounted. The other member
//! must end with every file byte-exact, no conflict copies, and neither
//! log may say a lease was lost (issue 12: "bulk writes at disk speed");
//! then `rm -rf` of the tree, which the other member must see gone.
//!
//! It prints files/s of the same extraction into a local dir, a bindfs
//! mount and titorrent, files/s of `rm -rf` in bindfs and titorrent, and
//! the CPU per file of both daemons: ratios of one run, never asserted. `TITORRENT_BULK_FILES` sets the size (default
//! 1,000, which keeps CI short):
//!
//! ```text
//! TITORRENT_BULK_FILES=10000 cargo test -p titorrent-integration --test bulk_extract -- --nocapture
//! ```
//!
//! Needs root, /dev/fuse, fusermount3, tar and the binaries built; bindfs
//! is used for the reference figure when installed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use titorrent_integration::process;
use titorrent_integration::programs::{conflict_copies, Compare, Tree};
use titorrent_integration::{scenario, wait_for, Peer, TrackerProc};

/// Files per directory of the generated tree.
const PER_DIR: usize = 100;

fn files() -> usize {
    std::env::var("TITORRENT_BULK_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

/// `n` small files (40 B to ~6 KiB, bytes that differ per file) in
/// directories of [`PER_DIR`], like a source tree.
fn generate(root: &Path, n: usize) {
    for i in 0..n {
        let dir = root.join(format!("crate-{:03}/src", i / PER_DIR));
        if i % PER_DIR == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let len = 40 + (i * 7919) % 6000;
        let bytes: Vec<u8> = (0..len).map(|k| b"abcdefghijklmnopqrstuvwxyz\n"[(k * 31 + i) % 27]).collect();
        std::fs::write(dir.join(format!("file-{i:05}.rs")), bytes).unwrap();
    }
}

fn tar_x(archive: &Path, into: &Path) -> Duration {
    let start = Instant::now();
    let mut c = Command::new("tar");
    c.arg("-xf").arg(archive).arg("-C").arg(into);
    process::run(&mut c, Duration::from_secs(900)).ok("tar -x");
    start.elapsed()
}

/// utime + stime of `pid`, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat(5), counted after the command's ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// How long `rm -rf dir` takes.
fn rm_rf(dir: &Path) -> Duration {
    let start = Instant::now();
    process::run(Command::new("rm").arg("-rf").arg(dir), Duration::from_secs(600)).ok("rm -rf");
    start.elapsed()
}

/// Files/s of `tar -x` into a bindfs mount of a local dir, and of `rm -rf`
/// of what it made, if bindfs is here.
fn bindfs_rates(archive: &Path, n: usize, tmp: &Path) -> Option<(f64, f64)> {
    let (src, mnt) = (tmp.join("bind-src"), tmp.join("bind-mnt"));
    std::fs::create_dir_all(&src).ok()?;
    std::fs::create_dir_all(&mnt).ok()?;
    Command::new("bindfs").arg(&src).arg(&mnt).status().ok()?.success().then_some(())?;
    std::fs::create_dir(mnt.join("t")).ok()?;
    let took = tar_x(archive, &mnt.join("t"));
    let removed = rm_rf(&mnt.join("t"));
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    Some((n as f64 / took.as_secs_f64(), n as f64 / removed.as_secs_f64()))
}

#[test]
fn a_burst_of_small_files_reaches_the_other_member_whole() {
    titorrent_integration::require_fuse();
    scenario(Duration::from_secs(1200), || {
        let n = files();
        let tmp = tempfile::Builder::new().prefix("titorrent-bulk-").tempdir().unwrap();
        let src = tmp.path().join("src");
        generate(&src, n);
        let archive = tmp.path().join("tree.tar");
        process::run(Command::new("tar").arg("-cf").arg(&archive).arg("-C").arg(&src).arg("."), Duration::from_secs(120))
            .ok("tar -c");
        let expected = Tree::read(&src).unwrap();

        let local = tmp.path().join("local");
        std::fs::create_dir(&local).unwrap();
        let local_rate = n as f64 / tar_x(&archive, &local).as_secs_f64();
        let bind = bindfs_rates(&archive, n, tmp.path());
        let bind_rate = bind.map(|(tar, _)| tar);

        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        let mut bob = Peer::join(&tracker, &alice, "bob");
        alice.mount();
        bob.mount();
        let (pa, pb) = (alice.daemon_pid().unwrap(), bob.daemon_pid().unwrap());
        let (ca, cb) = (cpu_s(pa), cpu_s(pb));
        std::fs::create_dir(alice.path("t")).unwrap();
        let wrote = tar_x(&archive, &alice.path("t"));
        let after_write = Instant::now();

        let count = |root: &Path| walk_count(root);
        wait_for(Duration::from_secs(600), "bob lists every file", || {
            let c = count(&bob.path("t"));
            if c >= n { Ok(()) } else { Err(format!("{c} of {n} files listed")) }
        });
        let listed = after_write.elapsed();
        wait_for(Duration::from_secs(600), "bob reads every file byte-exact", || {
            let got = Tree::read(&bob.path("t")).map_err(|e| format!("reading: {e}"))?;
            got.difference(&expected, Compare::BYTES).map_or(Ok(()), Err)
        });
        let whole = after_write.elapsed();
        let (da, db) = (cpu_s(pa) - ca, cpu_s(pb) - cb);

        for (who, p) in [("alice", &alice), ("bob", &bob)] {
            let names: Vec<String> = Tree::read(&p.path("t")).unwrap().paths().into_iter().map(str::to_string).collect();
            assert!(conflict_copies(&names).is_empty(), "{who} has conflict copies: {:?}", conflict_copies(&names));
            let log = p.log();
            assert!(!log.contains("lease lost"), "{who}'s log says a lease was lost:\n{}", process::tail(&log, 30));
        }
        // `rm -rf` of it on alice; bob's listing follows.
        let removed = rm_rf(&alice.path("t"));
        wait_for(Duration::from_secs(120), "bob sees the tree removed", || {
            if bob.path("t").exists() { Err("t still listed".into()) } else { Ok(()) }
        });
        let rm_rate = n as f64 / removed.as_secs_f64();
        eprintln!(
            "bulk_extract: rm -rf of {n} files: bindfs {}, titorrent {rm_rate:.0}/s ({:.3}x bindfs)",
            bind.map_or("n/a".into(), |(_, r)| format!("{r:.0}/s")),
            bind.map_or(f64::NAN, |(_, r)| rm_rate / r),
        );
        let rate = n as f64 / wrote.as_secs_f64();
        eprintln!(
            "bulk_extract: {n} files: local {local_rate:.0}/s, bindfs {}, titorrent {rate:.0}/s ({:.3}x bindfs); \
             bob listed all {:.1}s and read all {:.1}s after the last close; \
             CPU per file: writer {:.2} ms, receiver {:.2} ms (to the end of bob's reads)",
            bind_rate.map_or("n/a".into(), |r| format!("{r:.0}/s")),
            bind_rate.map_or(f64::NAN, |b| rate / b),
            listed.as_secs_f64(),
            whole.as_secs_f64(),
            da * 1000.0 / n as f64,
            db * 1000.0 / n as f64,
        );
        drop((alice, bob, tracker));
    });
}

fn walk_count(root: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(root) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_count(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

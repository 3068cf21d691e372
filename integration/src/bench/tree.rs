//! P6 (listing a large tree through the mount against the same tree on
//! local disk) and P9 (daemon memory and sockets with that tree mounted and
//! idle, against the same daemons with an empty group).

use super::measure::{self, median, ms};
use super::report::{Met, Row, Section};
use super::{Ctx, Sink};
use crate::{Peer, TrackerProc};
use anyhow::{anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WRITERS: usize = 4;

/// What a daemon holds.
#[derive(Clone, Copy, Debug)]
struct Usage {
    rss: u64,
    sockets: usize,
    fds: usize,
    threads: u64,
}

fn usage(mnt: &Path) -> anyhow::Result<Usage> {
    let pid = measure::daemon_pid(mnt).ok_or_else(|| anyhow!("no titorrent daemon for {}", mnt.display()))?;
    let rss = measure::rss_bytes(pid).ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))?;
    let (sockets, fds) = measure::fd_counts(pid).ok_or_else(|| anyhow!("cannot list /proc/{pid}/fd"))?;
    Ok(Usage { rss, sockets, fds, threads: measure::threads(pid).unwrap_or(0) })
}

/// Both daemons' usage once neither's descriptor count falls over `every`
/// (give or take a few), or at `max`; and how long that took.
fn settle(a: &Path, b: &Path, every: Duration, max: Duration) -> anyhow::Result<((Usage, Usage), Duration)> {
    let t = Instant::now();
    let mut last = (usage(a)?, usage(b)?);
    while t.elapsed() < max {
        std::thread::sleep(every);
        let now = (usage(a)?, usage(b)?);
        let falling = |before: &Usage, after: &Usage| after.fds + 8 < before.fds;
        let done = !falling(&last.0, &now.0) && !falling(&last.1, &now.1);
        last = now;
        if done {
            break;
        }
    }
    Ok((last, t.elapsed()))
}

fn fmt_usage(u: &Usage) -> String {
    format!("RSS {:.1} MB, {} sockets, {} fds, {} threads", u.rss as f64 / 1e6, u.sockets, u.fds, u.threads)
}

/// The tree: `dirs` directories of files, `files` files in all, each a
/// line of text, written a directory at a time with [`WRITERS`] threads.
/// With `confirm` (another member's mount of the same folder), each
/// directory is written only once that member sees every file of the
/// previous one published: a burst of thousands of creates overruns the
/// publish queue (see the notes of P6).
fn write_tree(root: &Path, dirs: usize, files: usize, confirm: Option<&Path>) -> anyhow::Result<Failed> {
    let per_dir = files.div_ceil(dirs);
    let mut failed = Failed::default();
    for d in 0..dirs {
        let dir = format!("d{d:03}");
        if let Err(e) = std::fs::create_dir(root.join(&dir)) {
            failed.add(&dir, &e);
            continue;
        }
        let names: Vec<String> = (d * per_dir..((d + 1) * per_dir).min(files)).map(|i| format!("{dir}/f{i:05}.txt")).collect();
        let results: Vec<Failed> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let names = &names;
                    s.spawn(move || {
                        let mut f = Failed::default();
                        for name in names.iter().skip(w).step_by(WRITERS) {
                            if let Err(e) = std::fs::write(root.join(name), format!("{name} of the benchmark tree\n")) {
                                f.add(name, &e);
                            }
                        }
                        f
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        for r in results {
            failed.merge(r);
        }
        if let Some(other) = confirm {
            let published = || names.iter().filter(|n| std::fs::metadata(other.join(n)).is_ok_and(|m| m.len() > 0)).count();
            wait_progress(names.len(), Duration::from_secs(15), published);
        }
    }
    Ok(failed)
}

/// Creates that failed (the mount said no), and the first error.
#[derive(Default)]
struct Failed {
    count: usize,
    first: Option<String>,
}

impl Failed {
    fn add(&mut self, name: &str, e: &std::io::Error) {
        self.count += 1;
        self.first.get_or_insert_with(|| format!("{name}: {e}"));
    }
    fn merge(&mut self, other: Failed) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// Polls `count` until it reaches `want` or stops growing for `stall`;
/// returns the last count.
fn wait_progress(want: usize, stall: Duration, mut count: impl FnMut() -> usize) -> usize {
    let mut last = count();
    let mut since = Instant::now();
    while last < want && since.elapsed() < stall {
        std::thread::sleep(Duration::from_millis(50));
        let n = count();
        if n > last {
            last = n;
            since = Instant::now();
        }
    }
    last
}

/// Files of the tree (d###/f#####.txt, not conflict copies) under `root`
/// that have content (an empty one is not published yet).
fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() && is_tree_file(&e.file_name()) && e.metadata().is_ok_and(|m| m.len() > 0) => n += 1,
                _ => {}
            }
        }
    }
    n
}

fn is_tree_file(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.len() == "f00000.txt".len() && n.starts_with('f') && n.ends_with(".txt")
}

/// (bytes local, bytes in all) over the files under `root`.
fn local_bytes(root: &Path) -> (u64, u64) {
    let (mut local, mut total) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => {
                    total += m.len();
                    local += measure::bytes_local(&e.path());
                }
                _ => {}
            }
        }
    }
    (local, total)
}

/// Runs `sh -c CMD` with stdout to /dev/null; its wall time.
fn timed(cmd: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let st = Command::new("sh").arg("-c").arg(cmd).stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let took = t.elapsed();
    if !st.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&st.stderr).lines().next().unwrap_or(""));
    }
    Ok(took)
}

pub fn run(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let z = &ctx.sizes;
    let tracker = TrackerProc::start();
    let mut alice = Peer::create_group(&tracker, "alice");
    let mut bob = Peer::join(&tracker, &alice, "bob");
    alice.mount();
    bob.mount();
    std::thread::sleep(z.p9_idle);
    let (a0, b0) = (usage(alice.mountpoint())?, usage(bob.mountpoint())?);

    let mut setup = Section::new("Setup shared by P6 and P9");
    let t = Instant::now();
    let failed = write_tree(alice.mountpoint(), z.tree_dirs, z.tree_files, Some(bob.mountpoint()))?;
    let wrote = t.elapsed();
    let published = wait_progress(z.tree_files, Duration::from_secs(30), || count_files(bob.mountpoint()));
    let seen = t.elapsed();
    let emfile = |log: &str| log.lines().filter(|l| l.contains("Too many open files")).count();
    let lost = |log: &str| log.lines().filter(|l| l.contains("could not be published")).count();
    setup.note(format!(
        "tracker, members alice and bob mounted; alice writes a tree of {} directories × {} files (one line of \
         text each) through her mount, a directory at a time ({WRITERS} writer threads), each directory only once \
         bob sees the previous one published: {} ({:.0} files/s); after {} bob sees {published} of the {} \
         files at their published size ({} never published; {} creates failed{}; alice's log has {} 'could not be \
         published' errors and {} 'Too many open files'; bob's log {} 'Too many open files'). (Written in one burst instead, 4 threads \
         and no waiting, alice's publish queue falls behind until the leases of files waiting in it expire: \
         `lease lost` errors and conflict copies.)",
        z.tree_dirs,
        z.tree_files / z.tree_dirs,
        measure::secs(wrote),
        z.tree_files as f64 / wrote.as_secs_f64(),
        measure::secs(seen),
        z.tree_files,
        z.tree_files - published,
        failed.count,
        failed.first.as_deref().map(|e| format!(", the first: {e}")).unwrap_or_default(),
        lost(&alice.log()),
        emfile(&alice.log()),
        emfile(&bob.log())
    ));
    let local = tempfile::Builder::new().prefix("titorrent-bench-tree-").tempdir()?;
    let local_failed = write_tree(local.path(), z.tree_dirs, z.tree_files, None)?;
    if let Some(e) = local_failed.first {
        bail!("cannot write the local reference tree: {e}");
    }
    setup.note(format!("the same tree written to a local directory ({}) for the reference", local.path().display()));
    sink.push(setup);

    if ctx.wants("P6") {
        sink.push(p6(ctx, bob.mountpoint(), local.path())?);
    }
    if ctx.wants("P9") {
        std::thread::sleep(z.p9_idle);
        let early = (usage(alice.mountpoint())?, usage(bob.mountpoint())?);
        let (settled, waited) = settle(alice.mountpoint(), bob.mountpoint(), z.p9_idle, z.p9_settle_max)?;
        let (a1, b1) = settled;
        let mut sec = p9(ctx, [a0, b0], [a1, b1]);
        sec.note(format!(
            "after a burst of publishes a daemon puts the versions it woke back to sleep (idle ones, oldest first); the figures are read once neither daemon's descriptor count fell over {} ({} after the first {}{}). At {} idle: alice {}; bob {}",
            measure::secs(z.p9_idle),
            measure::secs(waited),
            measure::secs(z.p9_idle),
            if waited >= z.p9_settle_max { ": the deadline, still falling" } else { "" },
            measure::secs(z.p9_idle),
            fmt_usage(&early.0),
            fmt_usage(&early.1)
        ));
        let (local, total) = local_bytes(bob.mountpoint());
        sec.note(format!(
            "bob runs with the build's default configuration; his mount reports {local} of the tree's {total} bytes \
             local (user.titorrent.bytes_local summed over every file, read after the figures above)"
        ));
        sink.push(sec);
    }
    // TITORRENT_BENCH_LOGS=DIR keeps each member's daemon log as DIR/NAME.log.
    if let Some(keep) = std::env::var_os("TITORRENT_BENCH_LOGS") {
        for p in [&alice, &bob] {
            let to = std::path::Path::new(&keep).join(format!("{}.log", p.name()));
            if let Err(e) = std::fs::create_dir_all(&keep).and_then(|()| std::fs::write(&to, p.log())) {
                eprintln!("could not keep {}'s log as {}: {e}", p.name(), to.display());
            }
        }
    }
    Ok(())
}

fn p6(ctx: &Ctx, mnt: &Path, local: &Path) -> anyhow::Result<Section> {
    let z = &ctx.sizes;
    let mut s = Section::new(&format!("P6: listing a {}-file tree", z.tree_files));
    let mut rows = Vec::new();
    for (id, tool, fmt) in [("P6a", "find -ls", "find {} -ls"), ("P6b", "ls -lR", "ls -lR {}")] {
        let cmd = |dir: &PathBuf| fmt.replace("{}", &format!("'{}'", dir.display()));
        let (m_cmd, l_cmd) = (cmd(&mnt.to_path_buf()), cmd(&local.to_path_buf()));
        measure::drop_caches();
        let (m_cold, l_cold) = (timed(&m_cmd)?, timed(&l_cmd)?);
        let (mut m, mut l) = (Vec::new(), Vec::new());
        for _ in 0..z.p6_reps {
            m.push(timed(&m_cmd)?);
            l.push(timed(&l_cmd)?);
        }
        let (mm, lm) = (median(&m), median(&l));
        s.note(format!(
            "`{tool}` (stdout to /dev/null) on bob's mount and on the local copy: first right after \
             `echo 3 > /proc/sys/vm/drop_caches` (mount {}, local {}), then {} more each, alternating: \
             mount {}; local {}; medians compared",
            ms(m_cold),
            ms(l_cold),
            z.p6_reps,
            m.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
            l.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
        ));
        rows.push(
            Row::new(id, &format!("`{tool}` of a {}-file tree in the mount", z.tree_files))
                .titorrent(ms(mm))
                .reference(format!("{} (local disk)", ms(lm)))
                .ratio(measure::ratio(mm.as_secs_f64(), lm.as_secs_f64()))
                .target("≤ 3×")
                .met(Met::from_bool(mm.as_secs_f64() <= 3.0 * lm.as_secs_f64())),
        );
    }
    for r in rows {
        s.row(r);
    }
    Ok(s)
}

fn p9(ctx: &Ctx, empty: [Usage; 2], full: [Usage; 2]) -> Section {
    let z = &ctx.sizes;
    let mut s = Section::new(&format!("P9: daemon memory and sockets, {}-file group mounted and idle", z.tree_files));
    s.note(format!(
        "RSS is VmRSS of the `titorrent mount` process (/proc/PID/status), sockets the socket: links in \
         /proc/PID/fd; with an empty group read after {} idle, with the tree once the daemons settled (below). \
         Empty group (both mounted, nothing written): alice {}; bob {}. \
         With the tree (alice wrote all of it and seeds every version; bob, mounted with the build's default \
         configuration, listed it and fetched what that configuration fetches): alice {}; bob {}",
        measure::secs(z.p9_idle),
        fmt_usage(&empty[0]),
        fmt_usage(&empty[1]),
        fmt_usage(&full[0]),
        fmt_usage(&full[1])
    ));
    let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
    for (id, who, e, f) in [("P9a", "alice (wrote the tree, seeds it)", empty[0], full[0]), ("P9b", "bob (default config)", empty[1], full[1])] {
        s.row(
            Row::new(id, &format!("daemon RSS, {}-file group idle: {who}", z.tree_files))
                .titorrent(mb(f.rss))
                .reference(format!("{} (empty group)", mb(e.rss)))
                .ratio(measure::ratio(f.rss as f64, e.rss as f64))
                .target("≤ 200 MB")
                .met(Met::from_bool(f.rss <= 200_000_000)),
        );
    }
    // Two members: a bound by members allows a few connections each on
    // top of what the daemon holds with an empty group.
    let slack = 8;
    let ok = full.iter().zip(&empty).all(|(f, e)| f.sockets <= e.sockets + slack);
    s.note(format!(
        "sockets are 'bounded by members' when each daemon holds at most {slack} more than with an empty group \
         (2 members: tracker link, peer connections, listeners)"
    ));
    s.row(
        Row::new("P9c", &format!("open sockets, {}-file group idle (alice, bob)", z.tree_files))
            .titorrent(format!("{}, {} (all fds: {}, {})", full[0].sockets, full[1].sockets, full[0].fds, full[1].fds))
            .reference(format!("{}, {} (empty group; all fds: {}, {})", empty[0].sockets, empty[1].sockets, empty[0].fds, empty[1].fds))
            .ratio(measure::ratio((full[0].sockets + full[1].sockets) as f64, (empty[0].sockets + empty[1].sockets) as f64))
            .target("bounded by members, not files")
            .met(Met::from_bool(ok)),
    );
    s
}

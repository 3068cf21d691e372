//! P6 (listing a large tree through the mount against the same tree on
//! local disk) and P9 (daemon memory and sockets with that tree mounted and
//! idle, against the same daemons with an empty group).

use super::measure::{self, median, ms, size};
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

fn fmt_usage(u: &Usage) -> String {
    format!("RSS {:.1} MB, {} sockets, {} fds, {} threads", u.rss as f64 / 1e6, u.sockets, u.fds, u.threads)
}

/// The tree: `dirs` directories of files, `files` files in all, each a
/// line of text. Written with [`WRITERS`] threads.
fn write_tree(root: &Path, dirs: usize, files: usize) -> anyhow::Result<()> {
    let per_dir = files.div_ceil(dirs);
    for d in 0..dirs {
        std::fs::create_dir(root.join(format!("d{d:03}")))?;
    }
    let root = root.to_path_buf();
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let root = root.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                for i in (w..files).step_by(WRITERS) {
                    let p = root.join(format!("d{:03}/f{:05}.txt", i / per_dir, i));
                    std::fs::write(p, format!("file number {i} of the benchmark tree\n"))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow!("a tree writer panicked"))??;
    }
    Ok(())
}

/// Regular files under `root`.
fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => n += 1,
                _ => {}
            }
        }
    }
    n
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
    write_tree(alice.mountpoint(), z.tree_dirs, z.tree_files)?;
    let wrote = t.elapsed();
    let seen = measure::poll(Duration::from_secs(1800), Duration::from_millis(500), || {
        (count_files(bob.mountpoint()) == z.tree_files).then(|| t.elapsed())
    })
    .ok_or_else(|| anyhow!("bob does not see all {} files within 30 min", z.tree_files))?;
    setup.note(format!(
        "tracker, members alice and bob mounted; alice writes a tree of {} directories × {} files (one line of \
         text each, {WRITERS} writer threads) through her mount: {} ({:.0} files/s); bob sees all {} files after {}",
        z.tree_dirs,
        z.tree_files / z.tree_dirs,
        measure::secs(wrote),
        z.tree_files as f64 / wrote.as_secs_f64(),
        z.tree_files,
        measure::secs(seen)
    ));
    let local = tempfile::Builder::new().prefix("titorrent-bench-tree-").tempdir()?;
    write_tree(local.path(), z.tree_dirs, z.tree_files)?;
    setup.note(format!("the same tree written to a local directory ({}) for the reference", local.path().display()));
    sink.push(setup);

    if ctx.wants("P6") {
        sink.push(p6(ctx, bob.mountpoint(), local.path())?);
    }
    if ctx.wants("P9") {
        std::thread::sleep(z.p9_idle);
        let (a1, b1) = (usage(alice.mountpoint())?, usage(bob.mountpoint())?);
        sink.push(p9(ctx, [a0, b0], [a1, b1]));
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
         /proc/PID/fd, each read after {} idle. Empty group (both mounted, nothing written): alice {}; bob {}. \
         With the tree (alice wrote all of it and seeds every version; bob only listed it): alice {}; bob {}",
        measure::secs(z.p9_idle),
        fmt_usage(&empty[0]),
        fmt_usage(&empty[1]),
        fmt_usage(&full[0]),
        fmt_usage(&full[1])
    ));
    let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
    for (id, who, e, f) in [("P9a", "alice (wrote the tree, seeds it)", empty[0], full[0]), ("P9b", "bob (listed it)", empty[1], full[1])] {
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
            .titorrent(format!("{}, {}", full[0].sockets, full[1].sockets))
            .reference(format!("{}, {} (empty group)", empty[0].sockets, empty[1].sockets))
            .ratio(measure::ratio((full[0].sockets + full[1].sockets) as f64, (empty[0].sockets + empty[1].sockets) as f64))
            .target("bounded by members, not files")
            .met(Met::from_bool(ok)),
    );
    let _ = size;
    s
}

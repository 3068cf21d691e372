//! P11 and P12: `tar -x` of a real tree, the unpacked crate sources under
//! `~/.cargo/registry/src`, into a mount while a second member is mounted,
//! against the same archive into a bindfs mount and into a local directory
//! in the same run, then `rm -rf` of it (P11); and the extraction of a part
//! of that tree with a round trip added to the members' tracker link (P12).
//!
//! What is measured is what `integration/tests/bulk_extract.rs` measures
//! for a generated tree: files/s, the CPU per file of both daemons (the
//! receiver's until it has read every file), and the other member's tree
//! checked byte for byte, with no conflict copies. The helpers here
//! (archive, extraction, counting, the bindfs reference) are meant for
//! both.

use super::delay::{self, DelayProxy};
use super::measure::{self, ms, secs};
use super::report::{Met, Row, Section};
use super::{Ctx, Sink};
use crate::programs::{conflict_copies, Compare, Tree};
use crate::scenario::{self, Registered};
use crate::{mounts, process, Peer, TrackerProc};
use anyhow::{anyhow, bail, Context};
use std::fs::FileType;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The directory every extraction goes into, inside its mount or dir.
const TOP: &str = "t";

/// Where cargo unpacks crate sources: `$CARGO_HOME/registry/src` (or
/// `~/.cargo/registry/src`), if it is there.
pub fn registry_src() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let src = home.join("registry/src");
    src.is_dir().then_some(src)
}

/// What a tree holds, counted without following symlinks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub other: usize,
    /// Bytes of the regular files.
    pub bytes: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.other += o.other;
        self.bytes += o.bytes;
    }
}

/// Calls `f(relative path, file type, its metadata when it is a file)` for
/// everything under `root`, not following symlinks. Entries that vanish or
/// cannot be read are passed over.
pub fn walk(root: &Path, f: &mut dyn FnMut(&str, FileType, Option<&std::fs::Metadata>)) {
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if t.is_dir() {
                f(&rel, t, None);
                stack.push((e.path(), rel));
            } else if t.is_file() {
                let md = e.metadata().ok();
                f(&rel, t, md.as_ref());
            } else {
                f(&rel, t, None);
            }
        }
    }
}

pub fn count_tree(root: &Path) -> Counts {
    let mut c = Counts::default();
    walk(root, &mut |_, t, md| {
        if t.is_dir() {
            c.dirs += 1;
        } else if t.is_file() {
            c.files += 1;
            c.bytes += md.map_or(0, |m| m.len());
        } else if t.is_symlink() {
            c.symlinks += 1;
        } else {
            c.other += 1;
        }
    });
    c
}

/// Regular files under `root` that are not conflict copies: what a member
/// lists of an extracted tree.
pub fn listed_files(root: &Path) -> usize {
    let mut n = 0;
    walk(root, &mut |rel, t, _| {
        if t.is_file() && !rel.contains(" (conflict from ") {
            n += 1;
        }
    });
    n
}

/// Every path under `root`, for finding conflict copies.
pub fn all_paths(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    walk(root, &mut |rel, _, _| v.push(rel.to_string()));
    v
}

/// A tar archive of crate directories of the registry, in a temp dir of
/// its own, and what it holds.
pub struct Archive {
    _dir: TempDir,
    pub path: PathBuf,
    pub counts: Counts,
    /// The crate directories in it, relative to [`Archive::source`]
    /// (`index.crates.io-…/serde-1.0.200`), in order.
    pub crates: Vec<String>,
    /// How many crate directories the registry has.
    pub crates_in_registry: usize,
    pub source: PathBuf,
    /// How long `tar -cf` took.
    pub took: Duration,
}

impl Archive {
    /// `tar -cf` (symlinks stored as symlinks, never followed) of the crate
    /// directories under `src`, in name order: all of them, or with
    /// `limit` the first ones that together hold about `limit` files (a
    /// crate that would take the total past 1.5 × `limit` is passed over).
    pub fn of_crates(src: &Path, limit: Option<usize>) -> anyhow::Result<Archive> {
        let mut all = Vec::new();
        let mut registries: Vec<PathBuf> = std::fs::read_dir(src)?.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        registries.sort();
        for reg in &registries {
            let mut crates: Vec<PathBuf> = std::fs::read_dir(reg)?.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
            crates.sort();
            all.extend(crates);
        }
        let mut counts = Counts::default();
        let mut chosen = Vec::new();
        for dir in &all {
            if limit.is_some_and(|l| counts.files >= l) {
                break;
            }
            let mut c = count_tree(dir);
            c.dirs += 1;
            if limit.is_some_and(|l| counts.files + c.files > l + l / 2) {
                continue;
            }
            counts.add(c);
            chosen.push(dir.strip_prefix(src)?.to_string_lossy().into_owned());
        }
        if chosen.is_empty() {
            bail!("no crate directories under {}", src.display());
        }
        let dir = tempfile::Builder::new().prefix("titorrent-bench-bulk-").tempdir()?;
        let path = dir.path().join("crates.tar");
        let t = Instant::now();
        let mut c = Command::new("tar");
        c.arg("-cf").arg(&path).arg("-C").arg(src).arg("--").args(&chosen);
        let out = process::run(&mut c, Duration::from_secs(600));
        if !out.status.success() {
            bail!("tar -cf failed: {}", out.stderr.trim());
        }
        let took = t.elapsed();
        Ok(Archive { _dir: dir, path, counts, crates: chosen, crates_in_registry: all.len(), source: src.to_path_buf(), took })
    }

    /// "16984 files (267 MB) in 350 crate directories, 1402 directories, no symlinks".
    pub fn describe(&self) -> String {
        let c = &self.counts;
        let first_last = match (self.crates.first(), self.crates.last()) {
            (Some(a), Some(b)) if self.crates.len() > 1 => format!(", {} … {}", short(a), short(b)),
            (Some(a), _) => format!(", {}", short(a)),
            _ => String::new(),
        };
        format!(
            "{} files ({:.0} MB) in {} of the {} crate directories of {}{first_last}; {} directories in all, {} symlinks, {} other",
            c.files,
            c.bytes as f64 / 1e6,
            self.crates.len(),
            self.crates_in_registry,
            self.source.display(),
            c.dirs,
            c.symlinks,
            c.other
        )
    }
}

/// `index.crates.io-…/serde-1.0.200` → `serde-1.0.200`.
fn short(krate: &str) -> &str {
    krate.rsplit('/').next().unwrap_or(krate)
}

/// `tar -xf ARCHIVE -C INTO`; how long it took.
pub fn tar_x(archive: &Path, into: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = process::run(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(into), Duration::from_secs(1800));
    let took = t.elapsed();
    if !out.status.success() {
        bail!("tar -xf into {} failed ({}): {}", into.display(), out.status, process::tail(&out.stderr, 5));
    }
    Ok(took)
}

/// `rm -rf DIR`; how long it took.
pub fn rm_rf(dir: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = process::run(Command::new("rm").arg("-rf").arg(dir), Duration::from_secs(1800));
    let took = t.elapsed();
    if !out.status.success() {
        bail!("rm -rf {} failed ({}): {}", dir.display(), out.status, process::tail(&out.stderr, 5));
    }
    Ok(took)
}

/// `bindfs SRC MNT` of a fresh local directory; unmounted on drop.
pub struct Bindfs {
    _dir: TempDir,
    pub mnt: PathBuf,
    _registered: Registered,
}

impl Bindfs {
    pub fn mount() -> anyhow::Result<Bindfs> {
        let bin = measure::have("bindfs").ok_or_else(|| anyhow!("bindfs is not installed"))?;
        let dir = tempfile::Builder::new().prefix("titorrent-bench-bindfs-").tempdir()?;
        let root = dir.path().canonicalize()?;
        let (src, mnt) = (root.join("src"), root.join("mnt"));
        std::fs::create_dir(&src)?;
        std::fs::create_dir(&mnt)?;
        let registered = scenario::register_mount(mnt.clone());
        let out = process::run(Command::new(bin).arg(&src).arg(&mnt), Duration::from_secs(30));
        if !out.status.success() {
            bail!("bindfs failed ({}): {}", out.status, out.stderr.trim());
        }
        measure::poll(Duration::from_secs(10), Duration::from_millis(20), || mounts::find(&mnt).map(|_| ()))
            .ok_or_else(|| anyhow!("bindfs did not show at {}", mnt.display()))?;
        Ok(Bindfs { _dir: dir, mnt, _registered: registered })
    }

    pub fn pid(&self) -> Option<u32> {
        measure::pid_of("bindfs", &self.mnt)
    }
}

impl Drop for Bindfs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.mnt).status();
        if mounts::find(&self.mnt).is_some() {
            mounts::force_unmount(&self.mnt);
        }
    }
}

/// The same archive through bindfs: `tar -x`, then `rm -rf`.
pub struct BindfsRun {
    pub tar: Duration,
    pub rm: Duration,
    /// CPU seconds of the bindfs daemon during the `tar -x`.
    pub cpu: f64,
}

pub fn bindfs_run(archive: &Path) -> anyhow::Result<BindfsRun> {
    let b = Bindfs::mount()?;
    let pid = b.pid().unwrap_or(0);
    let into = b.mnt.join(TOP);
    std::fs::create_dir(&into)?;
    let (tar, cpu) = measure::cpu_during(&[pid], || tar_x(archive, &into));
    let tar = tar?;
    let rm = rm_rf(&into)?;
    Ok(BindfsRun { tar, rm, cpu: cpu[0] })
}

/// The local-disk reference: `tar -x` into a fresh directory, and the tree
/// it made (the expected tree of every other extraction).
pub struct LocalRun {
    _dir: TempDir,
    pub tar: Duration,
    pub tree: Tree,
}

pub fn local_run(archive: &Path) -> anyhow::Result<LocalRun> {
    let dir = tempfile::Builder::new().prefix("titorrent-bench-local-").tempdir()?;
    let into = dir.path().join(TOP);
    std::fs::create_dir(&into)?;
    let tar = tar_x(archive, &into)?;
    let tree = Tree::read(&into).context("reading the local extraction")?;
    rm_rf(&into)?;
    Ok(LocalRun { _dir: dir, tar, tree })
}

/// What one extraction into titorrent gave.
pub struct TitorrentRun {
    pub tar: Duration,
    /// From the end of `tar -x` (its last close) until the other member
    /// lists every file.
    pub listed: Duration,
    /// Until the other member has read every file byte-exact.
    pub read: Duration,
    /// CPU seconds of the writer's and the receiver's daemon, from before
    /// the `tar -x` until the receiver has read every file.
    pub cpu: [f64; 2],
    /// Whether the other member's tree is the archive's, byte for byte,
    /// with no conflict copies on either member (else what differs).
    pub check: Result<(), String>,
    /// Modes and mtimes that differ from the local extraction (not part
    /// of the check).
    pub attrs: Option<String>,
    /// `lease lost` lines in each daemon's log.
    pub lease_lost: [usize; 2],
    pub rm: Duration,
    /// From the end of `rm -rf` until the other member no longer lists the
    /// tree (`None`: still listed at the deadline).
    pub gone: Option<Duration>,
    /// Connections the tracker proxy forwarded, when there was one.
    pub proxied: Option<u64>,
}

/// A tracker and members alice and bob, both mounted; with `one_way`, both
/// reach the tracker only through a [`DelayProxy`] of that delay.
/// Alice extracts `archive` into her mount; bob must end with `expected`.
pub fn titorrent_run(archive: &Archive, expected: &Tree, one_way: Option<Duration>) -> anyhow::Result<TitorrentRun> {
    let n = archive.counts.files;
    let tracker = TrackerProc::start();
    let proxy = one_way.map(|d| DelayProxy::start(tracker.addr(), d)).transpose()?;
    let addr: SocketAddr = proxy.as_ref().map_or(tracker.addr(), DelayProxy::addr);
    let mut alice = Peer::create_group_via(&tracker, addr, "alice");
    let mut bob = Peer::join_with_invite(Some(addr), &alice.invite(), "bob");
    alice.mount();
    bob.mount();
    let pids = [alice.daemon_pid().unwrap_or(0), bob.daemon_pid().unwrap_or(0)];
    let before: Vec<f64> = pids.iter().map(|p| measure::cpu_secs(*p).unwrap_or(0.0)).collect();
    let (at, bt) = (alice.path(TOP), bob.path(TOP));
    std::fs::create_dir(&at)?;
    let tar = tar_x(&archive.path, &at)?;
    let closed = Instant::now();

    let listing = Duration::from_secs(120 + n as u64 / 20);
    measure::poll_result(listing, Duration::from_millis(100), || {
        let c = listed_files(&bt);
        if c >= n {
            Ok(())
        } else {
            Err(format!("{c} of {n} files"))
        }
    })
    .map_err(|e| anyhow!("bob does not list every file {} after the last close: {e}", secs(listing)))?;
    let listed = closed.elapsed();
    let mut got = None;
    let compared = measure::poll_result(Duration::from_secs(120), Duration::from_secs(1), || {
        let t = Tree::read(&bt).map_err(|e| format!("reading bob's tree: {e}"))?;
        let d = t.difference(expected, Compare::BYTES);
        got = Some(t);
        d.map_or(Ok(()), Err)
    });
    let read = closed.elapsed();
    let after: Vec<f64> = pids.iter().map(|p| measure::cpu_secs(*p).unwrap_or(0.0)).collect();
    let cpu = [after[0] - before[0], after[1] - before[1]];
    let attrs = got.as_ref().and_then(|t| t.difference(expected, Compare::ALL));

    let mut check = compared.map_err(|d| format!("bob's tree differs from the archive: {d}"));
    for (who, root) in [("alice", &at), ("bob", &bt)] {
        let paths = all_paths(root);
        let copies = conflict_copies(&paths);
        if !copies.is_empty() && check.is_ok() {
            check = Err(format!("{who} has {} conflict copies, the first {}", copies.len(), copies[0]));
        }
    }
    let lost = |p: &Peer| p.log().lines().filter(|l| l.contains("lease lost")).count();
    let lease_lost = [lost(&alice), lost(&bob)];

    let rm = rm_rf(&at)?;
    let removed = Instant::now();
    let gone = measure::poll(Duration::from_secs(120), Duration::from_millis(50), || (!bt.exists()).then(|| removed.elapsed()));
    let proxied = proxy.as_ref().map(DelayProxy::connections);
    keep_logs(&[&alice, &bob], if one_way.is_some() { "-rtt" } else { "" });
    drop((alice, bob));
    drop(proxy);
    drop(tracker);
    Ok(TitorrentRun { tar, listed, read, cpu, check, attrs, lease_lost, rm, gone, proxied })
}

/// TITORRENT_BENCH_LOGS=DIR keeps each member's daemon log as DIR/bulk-NAME.log.
fn keep_logs(peers: &[&Peer], suffix: &str) {
    let Some(keep) = std::env::var_os("TITORRENT_BENCH_LOGS") else { return };
    for p in peers {
        let to = Path::new(&keep).join(format!("bulk{suffix}-{}.log", p.name()));
        if let Err(e) = std::fs::create_dir_all(&keep).and_then(|()| std::fs::write(&to, p.log())) {
            eprintln!("could not keep {}'s log as {}: {e}", p.name(), to.display());
        }
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// "1.92 ms": CPU seconds per file.
fn per_file(cpu_s: f64, n: usize) -> String {
    ms(Duration::from_secs_f64((cpu_s / n.max(1) as f64).max(0.0)))
}

/// The note on one titorrent extraction.
fn describe_run(r: &TitorrentRun, n: usize) -> String {
    format!(
        "titorrent{}: `tar -x` {} ({:.0} files/s); bob listed every file {} and had read every file byte-exact {} after \
         the last close; CPU (utime+stime of each `titorrent mount`, /proc/PID/stat, from before the `tar -x` until \
         bob had read every file): alice {:.2} s = {} per file, bob {:.2} s = {} per file; bob's tree against the \
         local extraction, bytes: {}; modes and mtimes too: {}; 'lease lost' in the logs: alice {}, bob {}; \
         `rm -rf` {} ({:.0} files/s), bob stopped listing the tree {} after it",
        r.proxied.map_or(String::new(), |c| format!(" (tracker link through the proxy: {c} connections)")),
        secs(r.tar),
        rate(n, r.tar),
        secs(r.listed),
        secs(r.read),
        r.cpu[0],
        per_file(r.cpu[0], n),
        r.cpu[1],
        per_file(r.cpu[1], n),
        match &r.check {
            Ok(()) => "the same, no conflict copies".to_string(),
            Err(e) => e.clone(),
        },
        r.attrs.as_deref().unwrap_or("the same"),
        r.lease_lost[0],
        r.lease_lost[1],
        secs(r.rm),
        rate(n, r.rm),
        r.gone.map_or("(still listed 120 s after it)".to_string(), secs)
    )
}

/// The row's met cell: an error when the check failed, else the target.
fn met(check: &Result<(), String>, ratio: Option<f64>, target: f64) -> Met {
    match (check, ratio) {
        (Err(e), _) => Met::Error(e.chars().take(200).collect()),
        (Ok(()), None) => Met::Skipped("needs bindfs (apt-get install bindfs)".into()),
        (Ok(()), Some(r)) => Met::from_bool(r >= target),
    }
}

fn no_registry(sink: &Sink, title: &str, rows: &[(&str, &str)]) {
    let why = "needs the unpacked crate sources under ~/.cargo/registry/src (a cargo build fetches them)".to_string();
    let mut s = Section::new(title);
    s.note(why.clone());
    for (id, fig) in rows {
        s.row(Row::new(id, fig).met(Met::Skipped(why.clone())));
    }
    sink.push(s);
}

pub fn run_p11(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let z = &ctx.sizes;
    let title = "P11: `tar -x` of the crate sources into a mount, a second member mounted; then `rm -rf`";
    let fig_tar = "`tar -x` of the crate sources into the mount, a second member mounted";
    let fig_rm = "`rm -rf` of the extracted crate sources in the mount";
    let Some(src) = registry_src() else {
        no_registry(sink, title, &[("P11a", fig_tar), ("P11b", fig_rm)]);
        return Ok(());
    };
    let archive = Archive::of_crates(&src, z.p11_files)?;
    let n = archive.counts.files;
    let mut s = Section::new(&format!("P11: `tar -x` of {n} files of crate sources into a mount, a second member mounted; then `rm -rf`"));
    s.note(format!(
        "the tree: {}; archived once with `tar -cf ARCHIVE -C {} -- CRATE…` (no -h: symlinks are not followed) in {}{}",
        archive.describe(),
        src.display(),
        secs(archive.took),
        match z.p11_files {
            Some(l) => format!("; a part of about {l} files (this run's size)"),
            None => String::new(),
        }
    ));
    let local = local_run(&archive.path)?;
    s.note(format!(
        "local disk: `tar -xf ARCHIVE -C DIR` into a fresh directory on the temp dirs' filesystem: {} ({:.0} files/s); \
         the tree it made is what bob's is compared with",
        secs(local.tar),
        rate(n, local.tar)
    ));
    let bind = match bindfs_run(&archive.path) {
        Ok(b) => {
            s.note(format!(
                "bindfs: `bindfs SRC MNT` of a fresh local directory, `tar -xf ARCHIVE -C MNT/t`: {} ({:.0} files/s; the bindfs \
                 daemon used {:.2} s CPU = {} per file); `rm -rf MNT/t`: {} ({:.0} files/s)",
                secs(b.tar),
                rate(n, b.tar),
                b.cpu,
                per_file(b.cpu, n),
                secs(b.rm),
                rate(n, b.rm)
            ));
            Some(b)
        }
        Err(e) => {
            s.note(format!("bindfs reference not measured: {e:#}"));
            None
        }
    };
    let r = titorrent_run(&archive, &local.tree, None)?;
    s.note(
        "tracker on 127.0.0.1, members alice and bob mounted (`titorrent mount MNT --state DIR --listen 127.0.0.1:0`, \
         the build's default configuration); alice runs `tar -xf ARCHIVE -C MNT/t`; the bench polls bob's MNT/t \
         every 100 ms until it lists every file, then reads bob's whole tree (the harness's Tree::read, every byte) \
         and compares it with the local extraction; then alice runs `rm -rf MNT/t`",
    );
    s.note(describe_run(&r, n));
    let local_tar = local.tar;
    drop(local);

    let tar_rate = rate(n, r.tar);
    let bind_tar = bind.as_ref().map(|b| rate(n, b.tar));
    let reference = match bind_tar {
        Some(b) => format!("{b:.0} files/s (bindfs); local disk {:.0} files/s", rate(n, local_tar)),
        None => format!("bindfs not measured; local disk {:.0} files/s", rate(n, local_tar)),
    };
    s.row(
        Row::new("P11a", &format!("`tar -x` of {n} files of crate sources into the mount, a second member mounted"))
            .titorrent(format!(
                "{tar_rate:.0} files/s (CPU per file: writer {}, receiver {}; the other member lists all {} after the last close)",
                per_file(r.cpu[0], n),
                per_file(r.cpu[1], n),
                secs(r.listed)
            ))
            .reference(reference)
            .ratio(bind_tar.map_or("—".into(), |b| measure::ratio(tar_rate, b)))
            .target("≥ 1.0× bindfs")
            .met(met(&r.check, bind_tar.map(|b| tar_rate / b), 1.0)),
    );
    let rm_rate = rate(n, r.rm);
    let bind_rm = bind.as_ref().map(|b| rate(n, b.rm));
    let rm_check = match r.gone {
        Some(_) => Ok(()),
        None => Err("bob still lists the tree 120 s after `rm -rf`".to_string()),
    };
    s.row(
        Row::new("P11b", &format!("`rm -rf` of those {n} files in the mount"))
            .titorrent(format!("{rm_rate:.0} files/s (the other member stops listing it {} after)", r.gone.map_or("—".into(), secs)))
            .reference(bind_rm.map_or("bindfs not measured".into(), |b| format!("{b:.0} files/s (bindfs)")))
            .ratio(bind_rm.map_or("—".into(), |b| measure::ratio(rm_rate, b)))
            .target("≥ 0.5× bindfs")
            .met(met(&rm_check, bind_rm.map(|b| rm_rate / b), 0.5)),
    );
    sink.push(s);
    Ok(())
}

pub fn run_p12(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let z = &ctx.sizes;
    let one_way = z.p12_rtt / 2;
    let fig = |n: usize, crates: usize| {
        format!(
            "`tar -x` of {n} files ({crates} crate directories of the crate sources) into the mount, {} round trip added on the tracker link",
            ms(z.p12_rtt)
        )
    };
    let Some(src) = registry_src() else {
        no_registry(sink, "P12: `tar -x` with a round trip added on the tracker link", &[("P12", &fig(z.p12_files, 0))]);
        return Ok(());
    };
    let archive = Archive::of_crates(&src, Some(z.p12_files))?;
    let n = archive.counts.files;
    let mut s = Section::new(&format!("P12: `tar -x` of {n} files with {} added to the tracker link's round trip", ms(z.p12_rtt)));
    s.note(format!(
        "the tree: {} (the first crate directories in name order up to about {} files, so that the run takes minutes); \
         archived once with `tar -cf ARCHIVE -C {} -- CRATE…` in {}",
        archive.describe(),
        z.p12_files,
        src.display(),
        secs(archive.took)
    ));
    let rounds = 20;
    let (direct, via) = delay::ping_pong(one_way, rounds)?;
    let (d50, v50) = (measure::median(&direct), measure::median(&via));
    let added = v50.saturating_sub(d50);
    s.note(format!(
        "the delay: netem is not available, so both members reach the tracker through a TCP proxy in the bench \
         (127.0.0.1:0; each connection dialled through to the tracker, each chunk read from either side written to \
         the other {} after it was read, in order; the link is TLS pinned by the tracker's key fingerprint, which the \
         proxy passes through untouched); the group is created with `--tracker PROXY`, so alice's membership and the \
         invite bob joins with name the proxy. A one-byte TCP ping-pong, {rounds} rounds to an echo server on \
         127.0.0.1: direct p50 {} (max {}), through such a proxy p50 {} (min {}, max {}): {} added per round trip",
        ms(one_way),
        ms(d50),
        ms(direct[direct.len() - 1]),
        ms(v50),
        ms(via[0]),
        ms(via[via.len() - 1]),
        ms(added)
    ));
    let local = local_run(&archive.path)?;
    s.note(format!("local disk: `tar -xf ARCHIVE -C DIR`: {} ({:.0} files/s)", secs(local.tar), rate(n, local.tar)));
    let bind = match bindfs_run(&archive.path) {
        Ok(b) => {
            s.note(format!(
                "bindfs: `bindfs SRC MNT` of a fresh local directory, `tar -xf ARCHIVE -C MNT/t`: {} ({:.0} files/s)",
                secs(b.tar),
                rate(n, b.tar)
            ));
            Some(b)
        }
        Err(e) => {
            s.note(format!("bindfs reference not measured: {e:#}"));
            None
        }
    };
    // The same archive with no proxy, for what the round trip costs.
    let plain = titorrent_run(&archive, &local.tree, None)?;
    s.note(format!("for comparison, with the tracker link direct (no proxy): {}", describe_run(&plain, n)));
    let r = titorrent_run(&archive, &local.tree, Some(one_way))?;
    s.note(format!(
        "tracker on 127.0.0.1 behind the proxy, members alice and bob mounted through it; alice runs `tar -xf ARCHIVE \
         -C MNT/t`; bob's tree is checked as in P11: {}",
        describe_run(&r, n)
    ));
    drop(local);
    let tar_rate = rate(n, r.tar);
    let bind_tar = bind.as_ref().map(|b| rate(n, b.tar));
    s.row(
        Row::new("P12", &fig(n, archive.crates.len()))
            .titorrent(format!(
                "{tar_rate:.0} files/s ({:.0} files/s without the delay; measured RTT added {})",
                rate(n, plain.tar),
                ms(added)
            ))
            .reference(bind_tar.map_or("bindfs not measured".into(), |b| format!("{b:.0} files/s (bindfs)")))
            .ratio(bind_tar.map_or("—".into(), |b| measure::ratio(tar_rate, b)))
            .target("≥ 0.5× bindfs")
            .met(met(&r.check, bind_tar.map(|b| tar_rate / b), 0.5)),
    );
    sink.push(s);
    Ok(())
}

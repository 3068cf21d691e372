//! `titorrent-bench`: the figures of the "benchmarks against btfs, librqbit
//! and the kernel" issue, each measured as a ratio against a reference
//! taken in the same run, written as a markdown report.
//!
//! Figures run in groups that share a setup (P1–P3 share one published
//! large file, P6 and P9 one large tree); each group runs as a harness
//! [`scenario`](crate::scenario) under a deadline, so a stuck mount is
//! killed and unmounted and the run goes on. A figure that fails shows as
//! an "error" row; the smoke test checks that none does.

pub mod announce;
pub mod btfs;
pub mod bulk;
pub mod delay;
pub mod edits;
pub mod locks;
pub mod measure;
pub mod member;
pub mod netns;
pub mod reads;
pub mod report;
pub mod rqbit_ref;
pub mod swarm;
pub mod tree;

use measure::{GIB, MIB};
use report::{Met, Row, RunInfo, Section};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every row id a complete report has, per figure.
pub const FIGURES: &[(&str, &[&str])] = &[
    ("P1", &["P1"]),
    ("P2", &["P2a", "P2b"]),
    ("P3", &["P3a", "P3b"]),
    ("P4", &["P4a", "P4b"]),
    ("P5", &["P5a", "P5b"]),
    ("P6", &["P6a", "P6b"]),
    ("P7", &["P7"]),
    ("P8", &["P8"]),
    ("P9", &["P9a", "P9b", "P9c"]),
    ("P11", &["P11a", "P11b"]),
    ("P12", &["P12"]),
];

/// Sizes and counts of one run.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub big: u64,
    pub p1_reps: usize,
    pub read_cap: Duration,
    pub btfs_cap: Duration,
    pub p3_batches: usize,
    pub p3_per_batch: u64,
    pub p4_opens: usize,
    pub p4_clients: usize,
    pub p4_duration: Duration,
    pub p5_small: u64,
    pub p5_edits: usize,
    pub p5_big: u64,
    pub tree_dirs: usize,
    pub tree_files: usize,
    pub p6_reps: usize,
    pub p7_peers: usize,
    pub p7_size: u64,
    /// Uplink of every namespace, bytes per second.
    pub p7_uplink: u64,
    pub p8_duration: Duration,
    pub p9_idle: Duration,
    /// The longest P9 waits for the daemons to settle after `p9_idle`.
    pub p9_settle_max: Duration,
    /// Files of the crate sources P11 extracts (about; whole crate
    /// directories), all of them when `None`.
    pub p11_files: Option<usize>,
    /// Files of the crate sources P12 extracts (about).
    pub p12_files: usize,
    /// Round trip P12 adds on the tracker link.
    pub p12_rtt: Duration,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            big: GIB,
            p1_reps: 5,
            read_cap: Duration::from_secs(300),
            btfs_cap: Duration::from_secs(120),
            p3_batches: 12,
            p3_per_batch: 16,
            p4_opens: 200,
            p4_clients: 8,
            p4_duration: Duration::from_secs(10),
            p5_small: MIB,
            p5_edits: 20,
            p5_big: GIB,
            tree_dirs: 100,
            tree_files: 10_000,
            p6_reps: 3,
            p7_peers: 8,
            p7_size: 256 * MIB,
            p7_uplink: 8 * MIB,
            p8_duration: Duration::from_secs(10),
            p9_idle: Duration::from_secs(15),
            p9_settle_max: Duration::from_secs(300),
            p11_files: None,
            p12_files: 2_000,
            p12_rtt: Duration::from_millis(20),
        }
    }

    pub fn smoke() -> Sizes {
        Sizes {
            big: 16 * MIB,
            p1_reps: 1,
            read_cap: Duration::from_secs(60),
            btfs_cap: Duration::from_secs(10),
            p3_batches: 2,
            p3_per_batch: 4,
            p4_opens: 10,
            p4_clients: 8,
            p4_duration: Duration::from_secs(1),
            p5_small: MIB,
            p5_edits: 3,
            p5_big: 16 * MIB,
            tree_dirs: 10,
            tree_files: 100,
            p6_reps: 1,
            p7_peers: 2,
            p7_size: 8 * MIB,
            p7_uplink: 4 * MIB,
            p8_duration: Duration::from_secs(1),
            p9_idle: Duration::from_secs(1),
            p9_settle_max: Duration::from_secs(10),
            p11_files: Some(200),
            p12_files: 100,
            p12_rtt: Duration::from_millis(20),
        }
    }
}

/// What the run was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub smoke: bool,
    /// Figures to run ("P1", "P3"); all when empty.
    pub only: BTreeSet<String>,
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// What every figure gets.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub smoke: bool,
    pub sizes: Sizes,
    pub only: BTreeSet<String>,
}

impl Ctx {
    /// Whether `figure` ("P2") or a part of it ("P2a") was asked for.
    pub fn wants(&self, figure: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| f == figure || part_of(f, figure))
    }

    /// Whether the part `part` ("P2b") was asked for, by itself or through
    /// its figure ("P2").
    pub fn wants_part(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| f == part || part_of(part, f))
    }
}

/// "P2b" is a part of "P2" (but "P21" is not).
fn part_of(part: &str, figure: &str) -> bool {
    part.strip_prefix(figure).is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Where a group puts its sections as soon as each is done, so that what
/// was measured survives a later failure in the same group.
#[derive(Clone, Default)]
pub struct Sink(Arc<Mutex<Vec<Section>>>);

impl Sink {
    pub fn push(&self, s: Section) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }
    fn take(&self) -> Vec<Section> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

type Body = fn(&Ctx, &Sink) -> anyhow::Result<()>;

/// Groups of figures that share a setup, with a deadline each.
fn groups(smoke: bool) -> Vec<(&'static str, &'static [&'static str], Duration, Body)> {
    let t = |full: u64, small: u64| Duration::from_secs(if smoke { small } else { full });
    vec![
        ("reads", &["P1", "P2", "P3"], t(3600, 300), reads::run as Body),
        ("locks", &["P4"], t(600, 120), locks::run as Body),
        ("edits", &["P5"], t(1200, 180), edits::run as Body),
        ("tree", &["P6", "P9"], t(3600, 300), tree::run as Body),
        ("swarm", &["P7"], t(1200, 180), swarm::run as Body),
        ("announce", &["P8"], t(300, 60), announce::run as Body),
        ("bulk", &["P11"], t(2400, 300), bulk::run_p11 as Body),
        ("bulk-rtt", &["P12"], t(1800, 300), bulk::run_p12 as Body),
    ]
}

/// Runs what `opts` asks for and writes the report. Returns the report.
pub fn run(opts: &Options) -> anyhow::Result<String> {
    let ctx = Ctx {
        smoke: opts.smoke,
        sizes: if opts.smoke { Sizes::smoke() } else { Sizes::full() },
        only: opts.only.clone(),
    };
    let started = Instant::now();
    let nofile = raise_nofile(NOFILE);
    let mut info = RunInfo {
        command: opts.command.clone(),
        mode: if opts.smoke { "smoke: small sizes, no external references".into() } else { "full".into() },
        started: measure::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        commit: commit(),
        machine: format!("{}; {nofile}", machine()),
        load_start: measure::loadavg(),
        ..Default::default()
    };
    let mut sections = Vec::new();
    for (name, figures, timeout, body) in groups(opts.smoke) {
        let wanted: Vec<&str> = figures.iter().copied().filter(|f| ctx.wants(f)).collect();
        if wanted.is_empty() {
            continue;
        }
        let load = measure::loadavg();
        eprintln!("== {name} ({}) — load average {load}", figures.join(", "));
        info.load_by_group.push((format!("{name} ({})", figures.join(", ")), load));
        sections.extend(run_group(&ctx, name, &wanted, timeout, body));
    }
    info.finished = measure::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    info.load_end = measure::loadavg();
    info.duration_s = started.elapsed().as_secs_f64();
    let md = report::render(&info, &sections);
    if let Some(dir) = opts.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.out, &md)?;
    Ok(md)
}

/// Open-file limit the bench gives itself and so every daemon it starts.
/// A member seeding the 10,000-file tree holds about two descriptors per
/// version: with this machine's 20,000 it runs out near 10,000 files.
const NOFILE: u64 = 65_536;

/// Raises RLIMIT_NOFILE (soft and hard) to at least `want`; says what it did.
fn raise_nofile(want: u64) -> String {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return "RLIMIT_NOFILE unknown".into();
    }
    let before = (lim.rlim_cur, lim.rlim_max);
    if lim.rlim_cur >= want as libc::rlim_t {
        return format!("daemons run with RLIMIT_NOFILE {} (soft)", before.0);
    }
    let new = libc::rlimit { rlim_cur: want as libc::rlim_t, rlim_max: lim.rlim_max.max(want as libc::rlim_t) };
    // SAFETY: setrlimit reads the struct we pass; raising the hard limit needs root, which the bench has.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return format!("daemons run with RLIMIT_NOFILE {} (raising it to {want} failed)", before.0);
    }
    format!(
        "daemons run with RLIMIT_NOFILE {want}, raised from {} soft / {} hard (see P9: the publishing member needs \
         about two descriptors per version)",
        before.0, before.1
    )
}

/// The rows a figure has in a complete report.
fn rows_of(figure: &str) -> &'static [&'static str] {
    FIGURES.iter().find(|(id, _)| *id == figure).map_or(&[], |(_, rows)| *rows)
}

/// Runs one group as a harness scenario under `timeout`. Whatever it
/// measured is kept; a wanted row it did not produce becomes an error row
/// saying why, and a failure after all its rows (a daemon slow to stop,
/// say) becomes a note.
fn run_group(ctx: &Ctx, name: &str, wanted: &[&str], timeout: Duration, body: Body) -> Vec<Section> {
    let sink = Sink::default();
    let error: Arc<Mutex<Option<String>>> = Arc::default();
    let (c, s, e) = (ctx.clone(), sink.clone(), error.clone());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::scenario(timeout, move || {
            if let Err(err) = body(&c, &s) {
                *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{err:#}"));
            }
        })
    }));
    let mut got = sink.take();
    let mut why = error.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Err(panic) = outcome {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        why = Some(msg);
    }
    let have: BTreeSet<String> = got.iter().flat_map(|s| s.rows.iter().map(|r| r.id.clone())).collect();
    let missing: Vec<(&str, &str)> = wanted
        .iter()
        .flat_map(|f| rows_of(f).iter().map(move |id| (*f, *id)))
        .filter(|(_, id)| !have.contains(*id))
        .collect();
    match (missing.is_empty(), why) {
        (true, None) => {}
        (true, Some(e)) => {
            let mut sec = Section::new(&format!("Problems in the {name} group after its figures were measured"));
            sec.note(e.lines().take(12).collect::<Vec<_>>().join(" / "));
            got.push(sec);
        }
        (false, why) => {
            let e = why.unwrap_or_else(|| "the figure produced no result".into());
            let short: String = e.lines().next().unwrap_or("").chars().take(200).collect();
            let mut sec = Section::new(&format!("{name}: failed"));
            sec.note(format!("error: {}", e.replace('\n', " / ")));
            for (f, id) in missing {
                sec.row(Row::new(id, f).met(Met::Error(short.clone())));
            }
            got.push(sec);
        }
    }
    got
}

fn commit() -> String {
    let head = measure::command_line("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{head} plus uncommitted changes")
    } else {
        head
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0));
    let kernel = measure::command_line("uname", &["-r"]);
    let fs = measure::command_line("sh", &["-c", "df -T \"${TMPDIR:-/tmp}\" | awk 'NR==2 {print $2}'"]);
    let bins = crate::bins::bin_dir();
    let profile = if bins.ends_with("release") { "release" } else { "NOT release (numbers only show that the figures run)" };
    format!("{cores} cores, {mem} RAM, Linux {kernel}, temp dirs on {fs}; titorrent binaries from {} ({profile})", bins.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(only: &[&str]) -> Ctx {
        Ctx { smoke: true, sizes: Sizes::smoke(), only: only.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn only_selects_figures_and_their_parts() {
        let all = ctx(&[]);
        assert!(all.wants("P2") && all.wants_part("P2b"));
        let p2 = ctx(&["P2"]);
        assert!(p2.wants("P2") && p2.wants_part("P2a") && p2.wants_part("P2b"));
        assert!(!p2.wants("P1"));
        let p2a = ctx(&["P2a"]);
        assert!(p2a.wants("P2") && p2a.wants_part("P2a"));
        assert!(!p2a.wants_part("P2b") && !p2a.wants("P1"));
        assert!(!ctx(&["P21"]).wants("P2"));
    }
}

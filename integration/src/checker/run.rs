//! Drives a run: a tracker and three members on real mounts (on loopback,
//! or each member in a network namespace of its own behind a bridge), one
//! workload thread per member, one thread injecting the plan's faults,
//! then the wait for a quiet group and the checks.

use super::history::{Outcome, Record};
use super::verify::{self, Observed, Violation};
use super::workload::{self, Op};
use crate::bench::member::{Member, DEFAULTS};
use crate::bench::netns::{Lab, NsTracker, BRIDGE_IP};
use crate::{Peer, TrackerProc};
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const MEMBERS: usize = 3;
/// How long refusals stay expected after a fault ends (reconnecting).
const FAULT_GRACE: Duration = Duration::from_secs(3);
/// How long the group may take to agree once the workloads are done.
const QUIET: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of a member's daemon with an edit open, then a remount.
    KillMember,
    /// kill -9 of the tracker, then a restart on the same data.
    RestartTracker,
    /// SIGSTOP of a member's daemon holding a lock, past the lease, while
    /// another member writes the file; then SIGCONT.
    PauseMember,
    /// A member's link down (its veth, in network-namespace mode) past the
    /// lease, then up again.
    CutMember,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    pub ops_per_member: usize,
    pub faults: Vec<Fault>,
    /// The tracker's `--lease-ttl`: short, so pauses outlast it quickly.
    pub lease_ttl_s: u64,
    /// Each member in a network namespace of its own (needed for
    /// `CutMember`; `KillMember`, `RestartTracker`, `PauseMember` run on
    /// loopback).
    pub netns: bool,
}

#[derive(Debug)]
pub struct Report {
    pub plan: Plan,
    pub ops: usize,
    pub elapsed: Duration,
    pub violations: Vec<Violation>,
    /// The violations with the history excerpts that show them.
    pub explanation: String,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The processes of a run. Fields drop in order: members, tracker, lab.
enum Group {
    Loopback { peers: Vec<Mutex<Peer>>, tracker: Mutex<TrackerProc> },
    Netns { members: Vec<Member>, _tracker: NsTracker, lab: Lab },
}

impl Group {
    fn loopback(plan: &Plan) -> Group {
        let tracker = TrackerProc::start_with_lease_ttl(Some(plan.lease_ttl_s));
        let mut peers = vec![Peer::create_group(&tracker, "m0")];
        for m in 1..MEMBERS {
            let p = Peer::join(&tracker, &peers[0], &format!("m{m}"));
            peers.push(p);
        }
        for p in &mut peers {
            p.mount();
        }
        Group::Loopback { peers: peers.into_iter().map(Mutex::new).collect(), tracker: Mutex::new(tracker) }
    }

    fn netns(plan: &Plan) -> Group {
        // Links fast enough not to matter: the cut is the fault here.
        let lab = Lab::new(MEMBERS, 256 << 20).expect("network namespaces (ip netns, tc; run as root)");
        let tracker = NsTracker::start_with_lease_ttl(&lab.bridge_ns, BRIDGE_IP, Some(plan.lease_ttl_s)).expect("tracker in the bridge namespace");
        let (ns, ip) = lab.members[0].clone();
        let mut members = vec![Member::create_group("m0", Some(&ns), ip.into(), tracker.addr, &tracker.admin_token, DEFAULTS).expect("m0's group")];
        for m in 1..MEMBERS {
            let invite = members[0].invite().expect("invite");
            let (ns, ip) = lab.members[m].clone();
            members.push(Member::join(&format!("m{m}"), Some(&ns), ip.into(), &invite, DEFAULTS).expect("join"));
        }
        for m in &mut members {
            m.mount().expect("mount in a namespace");
        }
        Group::Netns { members, _tracker: tracker, lab }
    }

    fn roots(&self) -> Vec<PathBuf> {
        match self {
            Group::Loopback { peers, .. } => peers.iter().map(|p| p.lock().mountpoint().to_path_buf()).collect(),
            Group::Netns { members, .. } => members.iter().map(|m| m.mountpoint().to_path_buf()).collect(),
        }
    }

    fn peer(&self, m: usize, fault: Fault) -> &Mutex<Peer> {
        match self {
            Group::Loopback { peers, .. } => &peers[m],
            Group::Netns { .. } => panic!("checker: {fault:?} runs on loopback only (Plan::netns = false)"),
        }
    }

    fn logs(&self) -> Vec<(String, String)> {
        match self {
            Group::Loopback { peers, tracker } => {
                let mut v: Vec<_> = peers.iter().enumerate().map(|(m, p)| (format!("m{m}"), p.lock().log())).collect();
                v.push(("tracker".into(), tracker.lock().log()));
                v
            }
            Group::Netns { members, .. } => members.iter().map(|m| (m.name.clone(), m.log())).collect(),
        }
    }
}

struct Shared {
    group: Group,
    roots: Vec<PathBuf>,
    /// Held (read) by a member's workload around each call; taken (write)
    /// by a fault that takes the member's daemon away.
    gates: Vec<RwLock<()>>,
    in_fault: Vec<AtomicBool>,
    start: Instant,
    records: Mutex<Vec<Record>>,
    versions: Mutex<Vec<(usize, String, u64)>>,
    must_survive: Mutex<Vec<(String, String)>>,
    must_equal: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Shared {
    fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// Runs one plan. Panics only when the harness itself cannot go on (a
/// mount that never comes up); what the product does wrong is returned.
pub fn run(plan: &Plan) -> Report {
    crate::require_fuse();
    let group = if plan.netns { Group::netns(plan) } else { Group::loopback(plan) };
    let roots = group.roots();
    setup(&roots);
    let shared = Shared {
        group,
        roots,
        gates: (0..MEMBERS).map(|_| RwLock::new(())).collect(),
        in_fault: (0..MEMBERS).map(|_| AtomicBool::new(false)).collect(),
        start: Instant::now(),
        records: Mutex::default(),
        versions: Mutex::default(),
        must_survive: Mutex::default(),
        must_equal: Mutex::default(),
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..MEMBERS).map(|m| s.spawn({
            let shared = &shared;
            move || workload_of(shared, plan, m)
        })).collect();
        let faults = s.spawn(|| inject(&shared, plan, &done));
        for w in workers {
            w.join().expect("a workload thread panicked");
        }
        done.store(true, Ordering::Release);
        faults.join().expect("the fault thread panicked");
    });
    let trees = quiet_trees(&shared.roots);
    let observed = Observed {
        records: std::mem::take(&mut *shared.records.lock()),
        trees,
        versions: std::mem::take(&mut *shared.versions.lock()),
        must_survive: std::mem::take(&mut *shared.must_survive.lock()),
        must_equal: std::mem::take(&mut *shared.must_equal.lock()),
    };
    let violations = verify::check(&observed);
    let explanation = verify::explain(&violations, &observed.records);
    if let Some(dir) = std::env::var_os("TITORRENT_CHECKER_LOGS").filter(|_| !violations.is_empty()) {
        keep_logs(&shared, Path::new(&dir), plan.seed);
    }
    Report { plan: plan.clone(), ops: observed.records.len(), elapsed: shared.start.elapsed(), violations, explanation }
}

/// The directories and files the workload starts from, seen by everyone.
fn setup(roots: &[PathBuf]) {
    let r = &roots[0];
    for d in workload::SETUP_DIRS {
        fs::create_dir(r.join(d)).unwrap_or_else(|e| panic!("mkdir {d}: {e}"));
    }
    for l in workload::LOGS {
        fs::write(r.join(l), b"").unwrap_or_else(|e| panic!("create {l}: {e}"));
    }
    for c in workload::COUNTERS {
        fs::write(r.join(c), b"0\n").unwrap_or_else(|e| panic!("create {c}: {e}"));
    }
    for root in roots {
        crate::wait_for(Duration::from_secs(30), &format!("{} sees the starting files", root.display()), || {
            for c in workload::COUNTERS {
                match fs::read(root.join(c)) {
                    Ok(b) if b == b"0\n" => {}
                    other => return Err(format!("{c}: {other:?}")),
                }
            }
            workload::LOGS.iter().try_for_each(|l| fs::metadata(root.join(l)).map(|_| ()).map_err(|e| format!("{l}: {e}")))
        });
    }
}

fn workload_of(shared: &Shared, plan: &Plan, m: usize) {
    let mut rng = StdRng::seed_from_u64(plan.seed.wrapping_mul(1_000_003).wrapping_add(m as u64));
    for n in 0..plan.ops_per_member {
        let op = workload::draw(&mut rng);
        let token = format!("m{m}-{n}");
        let _gate = shared.gates[m].read();
        let fault_before = shared.in_fault[m].load(Ordering::Acquire);
        let start_ms = shared.ms();
        let outcome = workload::execute(&shared.roots[m], &op, &token);
        let end_ms = shared.ms();
        let in_fault = fault_before || shared.in_fault[m].load(Ordering::Acquire);
        if let (Op::Append { log }, Outcome::Ok(_)) = (&op, &outcome) {
            if let Some(v) = workload::version_of(&shared.roots[m].join(workload::LOGS[*log])) {
                shared.versions.lock().push((m, workload::LOGS[*log].to_string(), v));
            }
        }
        let token = matches!(op, Op::Append { .. }).then_some(token);
        shared.records.lock().push(Record { member: m, op: op.name(), paths: op.paths(), token, start_ms, end_ms, outcome, in_fault });
    }
}

/// Injects the plan's faults one after another, each after a pause drawn
/// from the seed, while the workloads run.
fn inject(shared: &Shared, plan: &Plan, done: &AtomicBool) {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0xfa17_fa17);
    for (i, fault) in plan.faults.iter().enumerate() {
        // The time between faults is the point: the workload runs meanwhile.
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..2500)));
        if done.load(Ordering::Acquire) {
            eprintln!("checker: the workload ended before fault {i} ({fault:?}); injecting it anyway");
        }
        let m = rng.gen_range(0..MEMBERS);
        match fault {
            Fault::KillMember => kill_member(shared, m, i),
            Fault::RestartTracker => restart_tracker(shared),
            Fault::PauseMember => pause_member(shared, plan, m, i),
            Fault::CutMember => cut_member(shared, plan, m),
        }
    }
}

fn set_fault(shared: &Shared, members: &[usize], on: bool) {
    for m in members {
        shared.in_fault[*m].store(on, Ordering::Release);
    }
}

fn open_for_write(path: &Path, truncate: bool, patience: Duration) -> fs::File {
    crate::wait_for(patience, &format!("open {} for write", path.display()), || {
        OpenOptions::new().write(true).create(true).truncate(truncate).open(path).map_err(|e| e.to_string())
    })
}

fn kill_member(shared: &Shared, m: usize, i: usize) {
    let _gate = shared.gates[m].write();
    set_fault(shared, &[m], true);
    let rel = format!("scratch/k{i}");
    let marker = format!("kill-marker-{i}");
    let mut f = open_for_write(&shared.roots[m].join(&rel), false, Duration::from_secs(30));
    f.write_all(marker.as_bytes()).expect("write before the kill");
    {
        let mut p = shared.group.peer(m, Fault::KillMember).lock();
        p.kill9();
        drop(f); // its daemon is gone: the close fails, as after a crash
        p.mount();
    }
    shared.must_survive.lock().push((rel, marker));
    eprintln!("checker: killed m{m}'s daemon with scratch/k{i} open, remounted at {} ms", shared.ms());
    drop(_gate);
    std::thread::sleep(FAULT_GRACE); // refusals stay expected while it reconnects
    set_fault(shared, &[m], false);
}

fn restart_tracker(shared: &Shared) {
    let all: Vec<usize> = (0..MEMBERS).collect();
    set_fault(shared, &all, true);
    {
        let Group::Loopback { tracker, .. } = &shared.group else {
            panic!("checker: RestartTracker runs on loopback only (Plan::netns = false)");
        };
        let mut t = tracker.lock();
        t.kill9();
        // The outage is the fault: members see the tracker gone for a while.
        std::thread::sleep(Duration::from_secs(1));
        t.restart();
    }
    eprintln!("checker: restarted the tracker at {} ms", shared.ms());
    std::thread::sleep(FAULT_GRACE);
    set_fault(shared, &all, false);
}

fn pause_member(shared: &Shared, plan: &Plan, m: usize, i: usize) {
    let other = (m + 1) % MEMBERS;
    let rel = format!("scratch/p{i}");
    let (late, meanwhile) = (format!("late-{i}"), format!("meanwhile-{i}"));
    let mut held = open_for_write(&shared.roots[m].join(&rel), false, Duration::from_secs(30));
    held.write_all(late.as_bytes()).expect("the paused writer's write");
    set_fault(shared, &[m, other], true);
    let peer = shared.group.peer(m, Fault::PauseMember);
    let stopped = peer.lock().signal(libc::SIGSTOP);
    let ttl = Duration::from_secs(plan.lease_ttl_s);
    // Once the lease is out, the other member gets the lock and writes.
    let written = (|| -> std::io::Result<()> {
        let deadline = Instant::now() + ttl + Duration::from_secs(20);
        let mut f = loop {
            match OpenOptions::new().write(true).truncate(true).open(shared.roots[other].join(&rel)) {
                Ok(f) => break f,
                Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        f.write_all(meanwhile.as_bytes())?;
        drop(f);
        Ok(())
    })();
    peer.lock().signal(libc::SIGCONT);
    drop(held); // the late close: its publish must be refused
    eprintln!("checker: paused m{m} (stopped: {stopped}) past the lease; m{other} wrote meanwhile: {written:?}");
    if written.is_ok() {
        shared.must_equal.lock().push((rel.clone(), meanwhile.into_bytes()));
    } else {
        shared.records.lock().push(Record {
            member: other,
            op: "fence-open",
            paths: vec![rel.clone()],
            token: None,
            start_ms: shared.ms(),
            end_ms: shared.ms(),
            outcome: Outcome::Err(written.err().and_then(|e| e.raw_os_error()).unwrap_or(-1)),
            in_fault: false,
        });
    }
    shared.must_survive.lock().push((rel, late));
    std::thread::sleep(FAULT_GRACE);
    set_fault(shared, &[m, other], false);
}

/// Takes a member's link down past the lease and brings it back: its
/// calls meanwhile may be refused, the others carry on.
fn cut_member(shared: &Shared, plan: &Plan, m: usize) {
    let Group::Netns { lab, .. } = &shared.group else {
        panic!("checker: CutMember needs network namespaces (Plan::netns = true)");
    };
    let ns = &lab.members[m].0;
    let link = |state: &str| {
        let out = std::process::Command::new("ip").args(["-n", ns, "link", "set", "eth0", state]).output().expect("ip link set");
        assert!(out.status.success(), "ip -n {ns} link set eth0 {state}: {}", String::from_utf8_lossy(&out.stderr));
    };
    set_fault(shared, &[m], true);
    link("down");
    eprintln!("checker: cut m{m} off at {} ms", shared.ms());
    // Cut off past the lease: that is the fault.
    std::thread::sleep(Duration::from_secs(plan.lease_ttl_s + 2));
    link("up");
    eprintln!("checker: m{m} back at {} ms", shared.ms());
    std::thread::sleep(FAULT_GRACE * 2);
    set_fault(shared, &[m], false);
}

/// Copies the daemons' logs of a failed run to `dir` (TITORRENT_CHECKER_LOGS).
fn keep_logs(shared: &Shared, dir: &Path, seed: u64) {
    let _ = fs::create_dir_all(dir);
    for (who, log) in shared.group.logs() {
        let _ = fs::write(dir.join(format!("seed{seed}-{who}.log")), log);
    }
    eprintln!("checker: logs of seed {seed} in {}", dir.display());
}

/// Every member's tree, once they agree twice in a row (or `QUIET` passed).
fn quiet_trees(roots: &[PathBuf]) -> Vec<BTreeMap<String, Option<Vec<u8>>>> {
    let deadline = Instant::now() + QUIET;
    let mut last: Option<Vec<BTreeMap<String, Option<Vec<u8>>>>> = None;
    loop {
        let trees: Vec<_> = roots.iter().map(|r| read_tree(r)).collect();
        let agree = trees.windows(2).all(|w| w[0] == w[1]);
        if agree && last.as_ref() == Some(&trees) || Instant::now() >= deadline {
            return trees;
        }
        last = agree.then_some(trees);
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn read_tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(dir) = fs::read_dir(root.join(&rel)) else { continue };
        for e in dir.flatten() {
            let r = rel.join(e.file_name());
            let key = r.to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.insert(key, None);
                stack.push(r);
            } else {
                let content = fs::read(root.join(&r)).unwrap_or_else(|e| format!("<unreadable: {e}>").into_bytes());
                out.insert(key, Some(content));
            }
        }
    }
    out
}

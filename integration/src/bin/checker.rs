//! `titorrent-checker`: the contention checker as a soak. Runs plans with
//! every kind of fault, seed after seed, until `--minutes` have passed;
//! prints a line per run and, on a violation, the seed and the calls that
//! show it, and exits 1.
//!
//! ```text
//! titorrent-checker [--minutes N] [--seed S] [--ops N]
//! ```

use std::time::{Duration, Instant};
use titorrent_integration::checker::{run, Fault, Plan};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("titorrent-checker: {name} takes a number");
            std::process::exit(2)
        }),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("titorrent-checker [--minutes N] [--seed S] [--ops N]: the contention checker, seed after seed");
        return;
    }
    let minutes = arg(&args, "--minutes", 5);
    let mut seed = arg(&args, "--seed", 1000);
    let ops = arg(&args, "--ops", 100) as usize;
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let kinds = [vec![], vec![Fault::KillMember], vec![Fault::RestartTracker], vec![Fault::PauseMember], vec![Fault::KillMember, Fault::PauseMember, Fault::RestartTracker], vec![Fault::CutMember]];
    let (mut runs, mut calls, started) = (0u64, 0usize, Instant::now());
    while Instant::now() < until {
        let faults = kinds[(seed as usize) % kinds.len()].clone();
        let report = run(&Plan { seed, ops_per_member: ops, faults: faults.clone(), lease_ttl_s: 3, netns: faults.contains(&Fault::CutMember) });
        runs += 1;
        calls += report.ops;
        println!("seed {seed} faults {faults:?}: {} calls in {:.1?}: {}", report.ops, report.elapsed, if report.ok() { "ok" } else { "VIOLATION" });
        if !report.ok() {
            println!("{}", report.explanation);
            std::process::exit(1);
        }
        seed += 1;
    }
    let per_min = calls as f64 / started.elapsed().as_secs_f64() * 60.0;
    println!("{runs} runs, {calls} calls checked, {per_min:.0} calls/min: no violation");
}

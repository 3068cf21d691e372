//! The contention checker (titorrent_integration::checker) on fixed seeds:
//! three members on real mounts, random workloads, and one run per kind of
//! fault. Fails on any violation of the semantics README.md states,
//! printing the seed, the faults and the calls that show it. The last
//! runs each member in a network namespace of its own and cuts one off. A longer soak:
//! `target/debug/titorrent-checker --minutes N [--seed S]`.
//!
//! Needs root, /dev/fuse, fusermount3 and the binaries built (`cargo build
//! --workspace`).

use std::time::Duration;
use titorrent_integration::checker::{run, Fault, Plan};
use titorrent_integration::scenario;

fn check(seed: u64, faults: &[Fault]) {
    let faults = faults.to_vec();
    let netns = faults.contains(&Fault::CutMember);
    scenario(Duration::from_secs(300), move || {
        let plan = Plan { seed, ops_per_member: 60, faults: faults.clone(), lease_ttl_s: 3, netns };
        let report = run(&plan);
        eprintln!("checker: seed {seed}, faults {faults:?}: {} calls in {:.1?}", report.ops, report.elapsed);
        assert!(
            report.ok(),
            "checker: seed {seed}, faults {faults:?}: {} violations\n{}",
            report.violations.len(),
            report.explanation
        );
    });
}

#[test]
fn seed_1_without_faults() {
    check(1, &[]);
}

#[test]
fn seed_2_with_a_member_killed_and_remounted() {
    check(2, &[Fault::KillMember]);
}

#[test]
fn seed_3_with_the_tracker_killed_and_restarted() {
    check(3, &[Fault::RestartTracker]);
}

#[test]
fn seed_4_with_a_lock_holder_stopped_past_its_lease() {
    check(4, &[Fault::PauseMember]);
}

#[test]
fn seed_5_in_network_namespaces_with_a_member_cut_off_and_back() {
    check(5, &[Fault::CutMember]);
}

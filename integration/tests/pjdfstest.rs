//! pjdfstest, the POSIX filesystem test suite (../shared/pjdfstest, built
//! here into a temp dir), run as root inside a real mount. Fails when, in
//! any test directory, more subtests fail than `pjdfstest-failures.txt`
//! (next to this file) allows; prints the table either way. Lower the
//! numbers there when a change makes fewer fail.
//!
//! Needs root, /dev/fuse, fusermount3, the binaries built (`cargo build
//! --workspace`), gcc, autoconf, automake and prove (perl).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use titorrent_integration::programs::require_program;
use titorrent_integration::{scenario, Peer, TrackerProc};

/// Where the suite's source is: `PJDFSTEST_SRC`, else ../shared/pjdfstest
/// beside the repository.
fn source() -> PathBuf {
    let dir = std::env::var_os("PJDFSTEST_SRC").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pjdfstest")
    });
    assert!(
        dir.join("pjdfstest.c").exists(),
        "pjdfstest's source is not at {} (set PJDFSTEST_SRC to a copy of pjd/pjdfstest)",
        dir.display()
    );
    dir
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

/// Copies the (read-only) source into `dir` and builds the `pjdfstest` binary.
fn build(dir: &Path) {
    for (prog, pkg) in [("autoreconf", "autoconf"), ("automake", "automake"), ("cc", "gcc"), ("make", "make"), ("prove", "perl")] {
        require_program(prog, pkg);
    }
    run(Command::new("cp").arg("-a").arg(source()).arg(dir), "copying pjdfstest");
    let src = dir.join("pjdfstest");
    run(Command::new("chmod").args(["-R", "u+w"]).arg(&src), "chmod of the copy");
    run(Command::new("autoreconf").arg("-ifs").current_dir(&src), "autoreconf");
    run(Command::new("./configure").current_dir(&src), "configure");
    run(Command::new("make").arg("pjdfstest").current_dir(&src), "make pjdfstest");
}

/// Failing subtests per test directory, from prove's summary: the failed
/// ones plus those a test file planned and never ran.
fn failures(prove: &str, tests: &Path) -> BTreeMap<String, u64> {
    let mut per_dir = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in prove.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(&*tests.to_string_lossy()).and_then(|r| r.strip_prefix('/')) {
            if let (Some((dir, _)), Some(f)) = (rest.split_once('/'), line.split(" Failed: ").nth(1)) {
                let failed: u64 = f.trim_end_matches(')').parse().unwrap_or(0);
                *per_dir.entry(dir.to_string()).or_insert(0) += failed;
                current = Some(dir.to_string());
                continue;
            }
        }
        if let (Some(dir), Some(p)) = (&current, line.split("You planned ").nth(1)) {
            let nums: Vec<u64> = p.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
            if let [planned, ran, ..] = nums[..] {
                *per_dir.entry(dir.clone()).or_insert(0) += planned.saturating_sub(ran);
            }
        }
    }
    per_dir
}

fn allowed() -> BTreeMap<String, u64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pjdfstest-failures.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (dir, n) = l.split_once(char::is_whitespace).unwrap_or_else(|| panic!("bad line in {}: {l}", path.display()));
            (dir.to_string(), n.trim().parse().unwrap_or_else(|e| panic!("bad count in {}: {l}: {e}", path.display())))
        })
        .collect()
}

#[test]
fn pjdfstest_fails_no_more_subtests_than_committed() {
    scenario(Duration::from_secs(1200), || {
        titorrent_integration::require_fuse();
        let work = tempfile::Builder::new().prefix("titorrent-pjdfstest-").tempdir().expect("temp dir");
        build(work.path());
        let tests = work.path().join("pjdfstest/tests");
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        alice.mount();
        let cwd = alice.path("pjd");
        std::fs::create_dir(&cwd).expect("mkdir in the mount");
        let out = Command::new("prove").arg("-r").arg(&tests).current_dir(&cwd).output().expect("running prove");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let total_line = text.lines().find(|l| l.starts_with("Files=")).unwrap_or("(no summary line)").to_string();
        let got = failures(&text, &tests);
        let allowed = allowed();
        let mut table = String::from("directory      failing  allowed\n");
        let mut worse = Vec::new();
        let dirs: std::collections::BTreeSet<&String> = got.keys().chain(allowed.keys()).collect();
        for d in dirs {
            let (g, a) = (got.get(d).copied().unwrap_or(0), allowed.get(d).copied().unwrap_or(0));
            table.push_str(&format!("{d:<14} {g:>7}  {a:>7}\n"));
            if g > a {
                worse.push(format!("{d}: {g} > {a}"));
            }
        }
        let (sum_g, sum_a): (u64, u64) = (got.values().sum(), allowed.values().sum());
        table.push_str(&format!("{:<14} {sum_g:>7}  {sum_a:>7}\n{total_line}\n", "total"));
        eprintln!("pjdfstest in a titorrent mount:\n{table}");
        assert!(worse.is_empty(), "more pjdfstest subtests fail than allowed: {worse:?}\n{table}\nprove said:\n{text}");
    });
}

#[cfg(test)]
mod parse {
    use super::*;

    #[test]
    fn counts_failed_and_never_run_subtests_per_directory() {
        let t = Path::new("/x/tests");
        let prove = "\
Test Summary Report
-------------------
/x/tests/chmod/00.t      (Wstat: 0 Tests: 119 Failed: 5)
  Failed tests:  1-5
/x/tests/chmod/12.t      (Wstat: 256 (exited 1) Tests: 1 Failed: 0)
  Non-zero exit status: 1
  Parse errors: Bad plan.  You planned 7 tests but ran 1.
/x/tests/open/02.t       (Wstat: 0 Tests: 4 Failed: 2)
Files=3, Tests=124,  1 wallclock secs
Result: FAIL";
        let got = failures(prove, t);
        assert_eq!(got.get("chmod"), Some(&11));
        assert_eq!(got.get("open"), Some(&2));
    }
}

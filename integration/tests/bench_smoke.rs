//! The benchmark's smoke run: `titorrent-bench --smoke` (tiny sizes, no
//! btfs, opentracker or wrk) into a temp file. Checks only that every
//! figure produced its row and that the report renders; never timings.
//!
//! Needs what the e2e scenarios need (root, /dev/fuse, fusermount3, the
//! binaries built with `cargo build --workspace`).

use std::process::Command;
use std::time::Duration;
use titorrent_integration::bench::report::row_ids;
use titorrent_integration::bench::FIGURES;
use titorrent_integration::process;

#[test]
fn the_smoke_run_produces_every_figure_and_renders_the_report() {
    titorrent_integration::require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("benchmarks.md");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_titorrent-bench"));
    cmd.arg("--smoke").arg("--out").arg(&out);
    let run = process::run(&mut cmd, Duration::from_secs(900));
    assert!(
        run.status.success(),
        "titorrent-bench --smoke failed ({}):\n{}",
        run.status,
        process::tail(&run.stderr, 60)
    );
    let md = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("no report at {}: {e}", out.display()));
    assert!(md.starts_with("# titorrent benchmarks"), "report header:\n{}", process::tail(&md, 20));
    assert!(md.contains("| figure | titorrent | reference | ratio | target | met |"), "no table:\n{md}");
    let ids = row_ids(&md);
    for (_, rows) in FIGURES {
        for id in *rows {
            assert!(ids.iter().any(|r| r == id), "the report has no row {id}; rows: {ids:?}\n{md}");
        }
    }
    let failed: Vec<&str> = md.lines().filter(|l| l.starts_with("| P") && l.contains("| error:")).collect();
    assert!(failed.is_empty(), "figures that failed:\n{}\n\n{}", failed.join("\n"), process::tail(&run.stderr, 60));
    assert!(md.contains("## How each figure was measured"), "no notes section:\n{md}");
}

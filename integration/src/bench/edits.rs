//! P5: from close() of an edit on one member until another member's mount
//! returns the new bytes, for a small and a large file.

use super::measure::{self, median, ms, percentile, size};
use super::report::{Met, Row, Section};
use super::{Ctx, Sink};
use crate::{Pattern, Peer, TrackerProc};
use anyhow::{anyhow, bail};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(2);

pub fn run(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let tracker = TrackerProc::start();
    let mut alice = Peer::create_group(&tracker, "alice");
    let mut bob = Peer::join(&tracker, &alice, "bob");
    alice.mount();
    bob.mount();
    let mut s = Section::new("P5a: close() of a small edit on A until B's mount returns the new bytes");
    small_edits(ctx, &alice, &bob, &mut s)?;
    sink.push(s);
    let mut s = Section::new("P5b: writing a large edit on A, close(), until B's mount returns the new bytes");
    big_edit(ctx, &alice, &bob, &mut s)?;
    sink.push(s);
    Ok(())
}

fn small_edits(ctx: &Ctx, alice: &Peer, bob: &Peer, s: &mut Section) -> anyhow::Result<()> {
    let len = ctx.sizes.p5_small;
    let name = "edit.bin";
    let v0 = Pattern::new(500).bytes_at(0, len as usize);
    std::fs::write(alice.path(name), &v0)?;
    wait_whole(bob, name, &v0, Duration::from_secs(60)).ok_or_else(|| anyhow!("bob never read the first version of {name}"))?;
    let (mut visible, mut closes) = (Vec::new(), Vec::new());
    for i in 0..ctx.sizes.p5_edits {
        let content = Pattern::new(501 + i as u64).bytes_at(0, len as usize);
        let mut f = OpenOptions::new().write(true).truncate(true).open(alice.path(name))?;
        f.write_all(&content)?;
        let t0 = Instant::now();
        drop(f);
        closes.push(t0.elapsed());
        let d = wait_whole(bob, name, &content, Duration::from_secs(60))
            .map(|_| t0.elapsed())
            .ok_or_else(|| anyhow!("bob did not read edit {i} of {name} within 60 s"))?;
        visible.push(d);
    }
    let p50 = median(&visible);
    s.note(format!(
        "{} edits of a {} file: alice opens MNT/{name} O_WRONLY|O_TRUNC, writes new pseudo-random bytes, then \
         close(2) — timed from just before close until bob's read of the whole file (std::fs::read on his mount, \
         polled every {}) returns exactly the new bytes. p50 {}, p90 {}, max {}; the close(2) call itself p50 {}, max {}",
        visible.len(),
        size(len),
        ms(POLL),
        ms(p50),
        ms(percentile(&visible, 90.0)),
        ms(percentile(&visible, 100.0)),
        ms(median(&closes)),
        ms(percentile(&closes, 100.0))
    ));
    s.row(
        Row::new("P5a", &format!("close() of a {} edit on A until B reads the new bytes: p50", size(len)))
            .titorrent(ms(p50))
            .target("p50 ≤ 100 ms")
            .met(Met::from_bool(p50 <= Duration::from_millis(100))),
    );
    Ok(())
}

/// Polls bob's whole-file read until it equals `want`.
fn wait_whole(bob: &Peer, name: &str, want: &[u8], timeout: Duration) -> Option<()> {
    let p = bob.path(name);
    measure::poll(timeout, POLL, || std::fs::read(&p).ok().filter(|got| got == want).map(|_| ()))
}

/// Whether bob reads `pattern`'s bytes in the first and last 4 KiB.
fn ends_match(path: &Path, pattern: &Pattern, len: u64) -> bool {
    let Ok(f) = std::fs::File::open(path) else { return false };
    if f.metadata().map(|m| m.len()).unwrap_or(0) != len {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    [0, len - 4096].iter().all(|&off| f.read_exact_at(&mut buf, off).is_ok() && buf == pattern.bytes_at(off, 4096))
}

fn big_edit(ctx: &Ctx, alice: &Peer, bob: &Peer, s: &mut Section) -> anyhow::Result<()> {
    let len = ctx.sizes.p5_big;
    let name = "big-edit.bin";
    let (v1, v2) = (Pattern::new(600), Pattern::new(601));
    v1.write_file(&alice.path(name), len)?;
    if measure::poll(Duration::from_secs(600), Duration::from_millis(20), || ends_match(&bob.path(name), &v1, len).then_some(())).is_none() {
        bail!("bob never read the first version of {name}");
    }
    let w0 = Instant::now();
    let mut f = OpenOptions::new().write(true).truncate(true).open(alice.path(name))?;
    let mut off = 0;
    while off < len {
        let n = measure::MIB.min(len - off);
        f.write_all(&v2.bytes_at(off, n as usize))?;
        off += n;
    }
    let write_took = w0.elapsed();
    let t0 = Instant::now();
    drop(f);
    let close_took = t0.elapsed();
    let bp = bob.path(name);
    let visible = measure::poll(Duration::from_secs(600), Duration::from_millis(5), || ends_match(&bp, &v2, len).then(|| t0.elapsed()))
        .ok_or_else(|| anyhow!("bob did not read the new version of {name} within 600 s"))?;
    let total = write_took + visible;
    s.note(format!(
        "one edit of a {} file: alice opens MNT/{name} O_WRONLY|O_TRUNC and writes new bytes in 1 MiB writes \
         (open to last write: {}), then close(2) (the call took {}); from just before close until bob's mount \
         returns the new bytes (pread of the first and last 4 KiB, polled every 5 ms; the rest of the file is \
         fetched on demand): {}",
        size(len),
        measure::secs(write_took),
        measure::secs(close_took),
        measure::secs(visible)
    ));
    s.row(
        Row::new("P5b", &format!("write a {} edit on A, close(), until B reads the new bytes", size(len)))
            .titorrent(format!("{} (close → B: {})", measure::secs(total), measure::secs(visible)))
            .reference(format!("{} (writing it)", measure::secs(write_took)))
            .ratio(measure::ratio(total.as_secs_f64(), write_took.as_secs_f64()))
            .target("≤ writing + 1 s")
            .met(Met::from_bool(visible <= Duration::from_secs(1))),
    );
    Ok(())
}

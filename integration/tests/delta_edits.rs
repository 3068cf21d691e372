//! An edit moves only what changed (issue 13): two members on real mounts,
//! each in its own network namespace; the author edits a file the other
//! member holds whole (a 4 KiB write in place, an append, a truncate then
//! an extension, a burst of random writes over 1 % of it), and after each
//! edit the other member's copy is byte for byte the new version while the
//! author's uplink (its qdisc's counter) carried only the pieces the edit
//! touched. A rewrite of the whole file through `O_TRUNC` with one block
//! changed moves only that block's piece too, and a new file written from
//! scratch, the figure of before, is measured beside them.
//!
//! `TITORRENT_DELTA_MIB=1024` runs it on a 1 GiB file (the P10 figures).

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use titorrent_integration::bench::measure::{self, Rng, MIB};
use titorrent_integration::bench::member::{Member, DEFAULTS};
use titorrent_integration::bench::netns::{self, Lab, NsTracker, BRIDGE_IP};
use titorrent_integration::{assert_same_bytes, require_fuse, wait_for, wait_until, Pattern};

const NAME: &str = "big.bin";
/// The piece length of files up to 4 GiB (`piece_length_for`).
const PIECE: u64 = 256 * 1024;

fn size() -> u64 {
    std::env::var("TITORRENT_DELTA_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64) * MIB
}
/// Handshakes, bitfields, TLS records and the author's messages to the
/// tracker, on top of the pieces themselves.
const OVERHEAD: u64 = 256 * 1024;

struct Pair {
    lab: Lab,
    _tracker: NsTracker,
    a: Member,
    b: Member,
}

impl Pair {
    fn sent_by_a(&self) -> u64 {
        netns::uplink(&self.lab.members[0].0).expect("the author's uplink counters").sent_bytes
    }
}

fn pair() -> Pair {
    // Uplinks fast enough that the test is not about shaping, only counted.
    let lab = Lab::new(2, 256 * MIB).expect("network namespaces with tbf (ip netns, tc; run as root)");
    let tracker = NsTracker::start(&lab.bridge_ns, BRIDGE_IP).expect("tracker manager in the bridge namespace");
    let (a_ns, a_ip) = lab.members[0].clone();
    let mut a = Member::create_group("author", Some(&a_ns), a_ip.into(), tracker.addr, &tracker.admin_token, DEFAULTS).expect("author's group");
    a.mount().expect("author's mount");
    let (b_ns, b_ip) = lab.members[1].clone();
    let invite = a.invite().expect("invite");
    let mut b = Member::join("reader", Some(&b_ns), b_ip.into(), &invite, DEFAULTS).expect("join");
    b.mount().expect("reader's mount");
    Pair { lab, _tracker: tracker, a, b }
}

/// Pieces of `PIECE` bytes that `[start, end)` touches.
fn pieces(start: u64, end: u64) -> impl Iterator<Item = u64> {
    start / PIECE..end.div_ceil(PIECE)
}

/// Waits until the reader has the author's current version of `name`
/// whole and it reads as `expected`; returns (seconds until the bytes at
/// `probe` read new on the reader, bytes the author sent since `before`).
fn settle(p: &Pair, what: &str, expected: &[u8], probe: u64, closed: Instant, before: u64) -> (f64, u64) {
    settle_file(p, NAME, what, expected, probe, closed, before)
}

fn settle_file(p: &Pair, name: &str, what: &str, expected: &[u8], probe: u64, closed: Instant, before: u64) -> (f64, u64) {
    let (pa, pb) = (p.a.path(name), p.b.path(name));
    let size = expected.len() as u64;
    let want = &expected[probe as usize..(probe as usize + 4096).min(expected.len())];
    let visible = wait_for(Duration::from_secs(30), &format!("{what}: the reader reads the new bytes"), || {
        let f = std::fs::File::open(&pb).map_err(|e| e.to_string())?;
        let mut got = vec![0u8; want.len()];
        match f.read_exact_at(&mut got, probe) {
            Ok(()) if got == want => Ok(closed.elapsed().as_secs_f64()),
            Ok(()) => Err("old bytes".into()),
            Err(e) => Err(e.to_string()),
        }
    });
    let ih = wait_for(Duration::from_secs(60), &format!("{what}: the author publishes"), || {
        match (measure::info_hash(&pa), measure::bytes_local(&pa)) {
            (Some(ih), n) if n == size => Ok(ih),
            (ih, n) => Err(format!("{ih:?}, {n} of {size} bytes local")),
        }
    });
    // Room for a whole new version to travel on a loaded machine.
    let whole = Duration::from_secs(60 + size / (4 * MIB));
    wait_for(whole, &format!("{what}: the reader has the new version whole"), || {
        match (measure::info_hash(&pb), measure::bytes_local(&pb)) {
            (Some(h), n) if h == ih && n == size => Ok(()),
            (h, n) => Err(format!("{h:?} (author: {ih}), {n} of {size} bytes local")),
        }
    });
    eprintln!("{what}: the reader's copy complete again {:.2} s after the close", closed.elapsed().as_secs_f64());
    let got = wait_for(Duration::from_secs(10), &format!("{what}: the reader's copy reads whole"), || {
        let got = std::fs::read(&pb).map_err(|e| e.to_string())?;
        if got.as_slice() == expected { Ok(got) } else { Err(format!("{} bytes, not yet the new ones", got.len())) }
    });
    assert_same_bytes(&format!("{what}: the reader's copy"), &got, expected);
    (visible, p.sent_by_a() - before)
}

/// What the reader's daemon said about filling new versions from old ones.
fn fills(p: &Pair) {
    for line in p.b.log().lines().filter(|l| l.contains("previous version") || l.contains("versions it names")) {
        eprintln!("reader: {line}");
    }
}

fn report(what: &str, touched: u64, moved: u64, visible: f64) {
    eprintln!(
        "{what}: {touched} piece(s) touched, the author sent {:.2} MiB ({} pieces' worth), the reader read the new bytes {visible:.2} s after the close",
        moved as f64 / MIB as f64,
        moved.div_ceil(PIECE)
    );
}

#[test]
fn edits_move_only_the_pieces_they_touch() {
    require_fuse();
    let initial = size();
    let p = pair();
    let (pa, pb) = (p.a.path(NAME), p.b.path(NAME));
    let pattern = Pattern::new(0xde17a);
    let mut expected = pattern.bytes_at(0, initial as usize);
    pattern.write_file(&pa, initial).expect("write through the author's mount");
    wait_until(Duration::from_secs(300), "the author publishes it", || measure::info_hash(&pa).is_some() && measure::bytes_local(&pa) == initial);
    wait_for(Duration::from_secs(300), "the reader has all of it", || {
        let n = measure::bytes_local(&pb);
        if n == initial { Ok(()) } else { Err(format!("{n} of {initial} bytes local")) }
    });

    // 4 KiB in place, in the middle.
    let at = initial / 2 + 1000;
    let data = Pattern::new(1).bytes_at(0, 4096);
    let before = p.sent_by_a();
    let opened = Instant::now();
    let f = OpenOptions::new().write(true).open(&pa).expect("open for write");
    let open_ms = opened.elapsed().as_secs_f64() * 1000.0;
    f.write_all_at(&data, at).expect("pwrite");
    drop(f);
    let closed = Instant::now();
    expected[at as usize..at as usize + 4096].copy_from_slice(&data);
    let (visible, moved) = settle(&p, "4 KiB in place", &expected, at, closed, before);
    eprintln!("open for write of {} MiB: {open_ms:.1} ms", initial / MIB);
    report("4 KiB in place", 1, moved, visible);
    fills(&p);
    assert!(moved <= 2 * PIECE + OVERHEAD, "a 4 KiB edit moved {moved} bytes");

    // 1 MiB appended.
    let data = Pattern::new(2).bytes_at(0, MIB as usize);
    let before = p.sent_by_a();
    let mut f = OpenOptions::new().append(true).open(&pa).expect("open for append");
    f.write_all(&data).expect("append");
    drop(f);
    let closed = Instant::now();
    let end = expected.len() as u64;
    expected.extend_from_slice(&data);
    let (visible, moved) = settle(&p, "1 MiB appended", &expected, end, closed, before);
    report("1 MiB appended", pieces(end, end + MIB).count() as u64, moved, visible);
    assert!(moved <= MIB + PIECE + OVERHEAD, "a 1 MiB append moved {moved} bytes");

    // Truncated to 40 MiB and a bit, then 2 MiB written past that.
    let cut = 40 * MIB + 12_345;
    let data = Pattern::new(3).bytes_at(0, 2 * MIB as usize);
    let before = p.sent_by_a();
    let f = OpenOptions::new().write(true).open(&pa).expect("open for write");
    f.set_len(cut).expect("truncate");
    f.write_all_at(&data, cut).expect("extend");
    drop(f);
    let closed = Instant::now();
    expected.truncate(cut as usize);
    expected.extend_from_slice(&data);
    let (visible, moved) = settle(&p, "truncate then extend", &expected, cut, closed, before);
    let touched = pieces(cut, cut + 2 * MIB).count() as u64;
    report("truncate then extend", touched, moved, visible);
    assert!(moved <= touched * PIECE + OVERHEAD, "truncating and extending by 2 MiB moved {moved} bytes");

    // 1 % of the file in random 64 KiB writes.
    let size = expected.len() as u64;
    let mut rng = Rng::new(7);
    let mut touched = BTreeSet::new();
    let before = p.sent_by_a();
    let f = OpenOptions::new().write(true).open(&pa).expect("open for write");
    let mut first = None;
    for k in 0..(size / 100).div_ceil(64 * 1024) {
        let off = rng.below(size - 64 * 1024);
        let data = Pattern::new(100 + k).bytes_at(0, 64 * 1024);
        f.write_all_at(&data, off).expect("random write");
        expected[off as usize..off as usize + data.len()].copy_from_slice(&data);
        touched.extend(pieces(off, off + 64 * 1024));
        first.get_or_insert(off);
    }
    drop(f);
    let closed = Instant::now();
    let (visible, moved) = settle(&p, "random writes over 1 %", &expected, first.expect("some writes"), closed, before);
    report("random writes over 1 %", touched.len() as u64, moved, visible);
    assert!(moved <= touched.len() as u64 * PIECE + OVERHEAD, "random writes touching {} pieces moved {moved} bytes", touched.len());

    // The whole file rewritten through O_TRUNC, one 4 KiB block changed:
    // every byte is hashed, but the other member keeps the rest.
    let at = size / 3;
    let data = Pattern::new(4).bytes_at(0, 4096);
    expected[at as usize..at as usize + 4096].copy_from_slice(&data);
    let before = p.sent_by_a();
    let mut f = OpenOptions::new().write(true).truncate(true).open(&pa).expect("open with O_TRUNC");
    for chunk in expected.chunks(MIB as usize) {
        f.write_all(chunk).expect("rewrite");
    }
    drop(f);
    let closed = Instant::now();
    let (visible, moved) = settle(&p, "rewritten whole, 4 KiB changed", &expected, at, closed, before);
    report("rewritten whole, 4 KiB changed", 1, moved, visible);
    assert!(moved <= 2 * PIECE + OVERHEAD, "a rewrite changing 4 KiB moved {moved} bytes");

    // The figure of before: a new version whose bytes the reader has none
    // of (a new file of the same size, written from scratch).
    let fresh = Pattern::new(5).bytes_at(0, initial as usize);
    let before = p.sent_by_a();
    let opened = Instant::now();
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(p.a.path("fresh.bin")).expect("create");
    let open_ms = opened.elapsed().as_secs_f64() * 1000.0;
    for chunk in fresh.chunks(MIB as usize) {
        f.write_all(chunk).expect("write");
    }
    drop(f);
    let closed = Instant::now();
    let (visible, moved) = settle_file(&p, "fresh.bin", "from scratch", &fresh, initial / 2, closed, before);
    eprintln!("from scratch: open {open_ms:.1} ms");
    report("from scratch", initial.div_ceil(PIECE), moved, visible);
    assert!(moved >= initial, "a new file's bytes all travel: {moved} bytes for {initial}");
    fills(&p);
}

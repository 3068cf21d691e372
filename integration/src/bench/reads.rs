//! P1–P3: reading a large file through the mount. P1 against reading the
//! cache object file directly, P2 (whole file, not local) against
//! librqbit's `FileStream` and btfs, P3 (4 KiB at random offsets, not
//! local) against librqbit's `FileStream`.

use super::btfs::{with_announce, BtfsMount, OnePeerTracker};
use super::measure::{self, median, mib_s, ms, percentile, ratio, size, Rng, SeqRead};
use super::report::{Met, Row, Section};
use super::{Ctx, Sink};
use super::member::{Member, ON_DEMAND};
use crate::{Pattern, Peer, TrackerProc};
use anyhow::{anyhow, bail, Context};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NAME: &str = "big.bin";

/// A group whose first member (alice) wrote and published one large file.
pub struct BigFile {
    pub tracker: TrackerProc,
    pub alice: Peer,
    pub size: u64,
    pub pattern: Pattern,
    pub info_hash: String,
    /// alice's BitTorrent address (she seeds the file).
    pub seeder: SocketAddr,
    pub write_took: Duration,
    pub publish_took: Duration,
}

impl BigFile {
    pub fn new(size: u64) -> anyhow::Result<BigFile> {
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        alice.mount();
        let pattern = Pattern::new(0xB16_F11E);
        let path = alice.path(NAME);
        let t = Instant::now();
        pattern.write_file(&path, size)?;
        let write_took = t.elapsed();
        let t = Instant::now();
        let info_hash = measure::poll(Duration::from_secs(600), Duration::from_millis(20), || {
            measure::info_hash(&path).filter(|_| measure::bytes_local(&path) == size)
        })
        .ok_or_else(|| anyhow!("alice's {NAME} was not published within 600 s"))?;
        let publish_took = t.elapsed();
        let _ = member_addr(&alice, "alice")?;
        let seeder = export_addr(&alice, &path)?;
        Ok(BigFile { tracker, alice, size, pattern, info_hash, seeder, write_took, publish_took })
    }

    /// The cache object file alice seeds.
    pub fn object(&self) -> PathBuf {
        self.alice.state_dir().join("cache/objects").join(&self.info_hash).join(NAME)
    }

    /// Reads alice's object file once, so that every reader compared in P2
    /// finds the seeder's copy in the page cache (P1 drops caches; whoever
    /// read first would otherwise pay the seeder's disk for the others).
    pub fn warm_seeder(&self) -> anyhow::Result<()> {
        let mut f = std::fs::File::open(self.object()).with_context(|| format!("open {}", self.object().display()))?;
        std::io::copy(&mut f, &mut std::io::sink())?;
        Ok(())
    }

    /// The .torrent as alice keeps it (STATE/torrents/<ih>.torrent).
    pub fn torrent(&self) -> anyhow::Result<Vec<u8>> {
        let p = self.alice.state_dir().join("torrents").join(format!("{}.torrent", self.info_hash));
        std::fs::read(&p).with_context(|| format!("read {}", p.display()))
    }

    /// A new on-demand member (config `replication = "on-demand"`: it
    /// fetches only what is read), mounted, that sees the file at its full
    /// size.
    pub fn new_member(&self, name: &str) -> anyhow::Result<Member> {
        let invite = self.alice.invite();
        let mut p = Member::join(name, None, IpAddr::from([127, 0, 0, 1]), &invite, ON_DEMAND)?;
        p.mount()?;
        let path = p.path(NAME);
        measure::poll(Duration::from_secs(60), Duration::from_millis(10), || {
            std::fs::metadata(&path).ok().filter(|m| m.len() == self.size)
        })
        .ok_or_else(|| anyhow!("{name} does not see {NAME} at {} bytes within 60 s", self.size))?;
        Ok(p)
    }
}

/// A member's BitTorrent address as `titorrent members` prints it.
/// `titorrent export PATH`: where `peer` serves that version in plain
/// BitTorrent (members' own links are TLS; the standard-client references
/// read from here).
pub fn export_addr(peer: &Peer, path: &std::path::Path) -> anyhow::Result<SocketAddr> {
    let out = peer.cli(["export".as_ref(), path.as_os_str(), "--ttl".as_ref(), "1d".as_ref()]);
    if !out.status.success() {
        anyhow::bail!("titorrent export: {}", out.stderr.trim());
    }
    let addr = out.stdout.lines().find_map(|l| l.split("x.pe=").nth(1)).ok_or_else(|| anyhow!("no x.pe in {:?}", out.stdout))?;
    Ok(addr.trim().parse()?)
}

pub fn member_addr(peer: &Peer, name: &str) -> anyhow::Result<SocketAddr> {
    let line = measure::poll(Duration::from_secs(30), Duration::from_millis(50), || {
        peer.members().into_iter().find(|m| m.name == name && m.online && m.addr.parse::<SocketAddr>().is_ok())
    })
    .ok_or_else(|| anyhow!("`titorrent members` shows no address for {name}"))?;
    Ok(line.addr.parse()?)
}

pub fn run(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let big = BigFile::new(ctx.sizes.big)?;
    let mut setup = Section::new("Setup shared by P1–P3");
    setup.note(format!(
        "tracker on 127.0.0.1, member alice mounted (`titorrent mount MNT --state DIR --listen 127.0.0.1:0`); \
         alice writes {} of pseudo-random bytes to MNT/{NAME} in 1 MiB writes: {} ({:.0} MiB/s); \
         publish (hash, torrent, seed) until her mount reports the info hash and all bytes local: {} more; \
         members read over their TLS links, the standard-client references (librqbit's FileStream, btfs) from \
         alice's export port (`titorrent export`: the same librqbit session, plain BitTorrent)",
        size(big.size),
        measure::secs(big.write_took),
        mib_s(big.size, big.write_took),
        measure::secs(big.publish_took)
    ));
    setup.note(format!("info hash {}; object file {}", big.info_hash, big.object().display()));
    sink.push(setup);
    if ctx.wants("P1") {
        sink.push(p1(ctx, &big)?);
    }
    if ctx.wants("P2") {
        sink.push(p2(ctx, &big)?);
    }
    if ctx.wants("P3") {
        sink.push(p3(ctx, &big)?);
    }
    Ok(())
}

fn p1(ctx: &Ctx, big: &BigFile) -> anyhow::Result<Section> {
    let mut s = Section::new("P1: sequential read of a local file through the mount");
    let (through, direct) = (big.alice.path(NAME), big.object());
    if !direct.is_file() {
        bail!("no object file at {}", direct.display());
    }
    let mut mount_runs = Vec::new();
    let mut direct_runs = Vec::new();
    let mut dropped = true;
    let alice_pid = measure::daemon_pid(big.alice.mountpoint()).unwrap_or(0);
    let mut cpu = Vec::new();
    for _ in 0..ctx.sizes.p1_reps {
        dropped &= measure::drop_caches();
        let (r, c) = measure::cpu_during(&[alice_pid, std::process::id()], || measure::read_seq(&through));
        cpu.push(c);
        mount_runs.push(check_len(r?, big.size)?);
        dropped &= measure::drop_caches();
        direct_runs.push(check_len(measure::read_seq(&direct)?, big.size)?);
    }
    let rate = |runs: &[SeqRead]| {
        let mut v: Vec<f64> = runs.iter().map(SeqRead::mib_s).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m, d) = (rate(&mount_runs), rate(&direct_runs));
    s.note(format!(
        "{} alternations of: `sync; echo 3 > /proc/sys/vm/drop_caches` (done: {dropped}), read alice's MNT/{NAME} \
         start to end with 1 MiB read(2)s; drop caches again, read the object file {} the same way. Median of each.",
        ctx.sizes.p1_reps,
        "STATE/cache/objects/<ih>/big.bin"
    ));
    s.note(format!(
        "through the mount: {} MiB/s; object file: {} MiB/s. CPU seconds per read through the mount \
         (alice's daemon, the reading process): {}",
        fmt_rates(&mount_runs),
        fmt_rates(&direct_runs),
        cpu.iter().map(|c| format!("{:.2} + {:.2}", c[0], c[1])).collect::<Vec<_>>().join(", ")
    ));
    s.row(
        Row::new("P1", &format!("sequential read, {} local file, through the mount", size(big.size)))
            .titorrent(format!("{m:.0} MiB/s"))
            .reference(format!("{d:.0} MiB/s (object file)"))
            .ratio(ratio(m, d))
            .target("≥ 0.8×")
            .met(Met::from_bool(m >= 0.8 * d)),
    );
    Ok(s)
}

fn fmt_rates(runs: &[SeqRead]) -> String {
    runs.iter().map(|r| format!("{:.0}", r.mib_s())).collect::<Vec<_>>().join(", ")
}

fn check_len(r: SeqRead, want: u64) -> anyhow::Result<SeqRead> {
    if r.bytes != want {
        bail!("read {} bytes, expected {want}", r.bytes);
    }
    Ok(r)
}

fn p2(ctx: &Ctx, big: &BigFile) -> anyhow::Result<Section> {
    let mut s = Section::new("P2: sequential read of a file that is not local (one seeder on loopback)");
    let torrent = big.torrent()?;

    // titorrent: a fresh on-demand member reads the whole file through its mount.
    let bob = big.new_member("bob")?;
    big.warm_seeder()?;
    let path = bob.path(NAME);
    let local_before = measure::bytes_local(&path);
    let pids = [measure::daemon_pid(bob.mountpoint()).unwrap_or(0), measure::daemon_pid(big.alice.mountpoint()).unwrap_or(0)];
    let (t, tcpu) = measure::cpu_during(&pids, || measure::read_seq(&path));
    let t = check_len(t?, big.size)?;
    verify_sample(&path, &big.pattern, big.size)?;
    s.note(format!(
        "before each read compared here (bob's, carol's, librqbit's), the bench reads alice's object file \
         once, so that each finds the seeder's copy in the page cache; titorrent: member bob joins and mounts \
         with `replication = \"on-demand\"` in its config (so that \
         nothing is fetched before the read); bob's mount reports {local_before} bytes of MNT/{NAME} local \
         before the read; bob reads it start to end (1 MiB read(2)s) from alice: {} in {} = {:.0} MiB/s \
         (timed from open to EOF; content spot-checked); CPU seconds meanwhile: bob's daemon {:.2}, alice's {:.2}",
        size(t.bytes),
        measure::secs(t.took),
        t.mib_s(),
        tcpu[0],
        tcpu[1]
    ));
    drop(bob);
    default_member_read(big, &mut s)?;

    // librqbit's own FileStream from the same seeder.
    let dir = tempfile::Builder::new().prefix("titorrent-bench-rqbit-").tempdir()?;
    big.warm_seeder()?;
    let (r, rcpu) = measure::cpu_during(&[std::process::id(), pids[1]], || {
        super::rqbit_ref::stream_read_all(&torrent, big.seeder, dir.path(), big.size, ctx.sizes.read_cap)
    });
    let r = r?;
    s.note(format!(
        "librqbit 9.1: a Session on 127.0.0.1 (no DHT, LSD, trackers or persistence), add_torrent of alice's \
         STATE/torrents/<ih>.torrent with initial_peers = [alice {}], stream(0), read to EOF in 1 MiB reads: {} in {} = {:.0} MiB/s \
         (timed from add_torrent to EOF){}; CPU seconds meanwhile: the bench process (librqbit) {:.2}, alice's daemon {:.2}",
        big.seeder,
        size(r.bytes),
        measure::secs(r.took),
        r.mib_s(),
        if r.finished { "" } else { "; stopped at the cap" },
        rcpu[0],
        rcpu[1]
    ));
    drop(dir);
    let (tm, rm) = (t.mib_s(), r.mib_s());
    s.row(
        Row::new("P2a", &format!("sequential read, {} not local, 1 seeder on loopback, vs librqbit", size(big.size)))
            .titorrent(format!("{tm:.0} MiB/s"))
            .reference(format!("{rm:.0} MiB/s (librqbit FileStream)"))
            .ratio(ratio(tm, rm))
            .target("≥ 1.0×")
            .met(Met::from_bool(tm >= rm)),
    );

    // btfs on the same .torrent.
    let row = Row::new("P2b", &format!("sequential read, {} not local, 1 seeder on loopback, vs btfs", size(big.size)))
        .titorrent(format!("{tm:.0} MiB/s"))
        .target("≥ 10×");
    if ctx.smoke {
        s.row(row.met(Met::Skipped("skipped in smoke: needs btfs and a large file".into())));
        return Ok(s);
    }
    if !ctx.wants_part("P2b") {
        s.row(row.met(Met::Skipped("not asked for (`--only`)".into())));
        return Ok(s);
    }
    if measure::have("btfs").is_none() {
        s.row(row.met(Met::Skipped("needs btfs (`integration/bench-deps.sh`)".into())));
        return Ok(s);
    }
    match btfs_read(ctx, big, &torrent) {
        Ok((b, notes)) => {
            for n in notes {
                s.note(n);
            }
            let bm = b.mib_s();
            s.row(
                row.reference(format!("{bm:.1} MiB/s (btfs{})", if b.finished { "" } else { ", partial: cap reached" }))
                    .ratio(ratio(tm, bm))
                    .met(Met::from_bool(tm >= 10.0 * bm)),
            );
        }
        Err(e) => s.row(row.met(Met::Error(format!("{e:#}")))),
    }
    Ok(s)
}

fn btfs_read(ctx: &Ctx, big: &BigFile, torrent: &[u8]) -> anyhow::Result<(SeqRead, Vec<String>)> {
    let dir = tempfile::Builder::new().prefix("titorrent-bench-btfs-").tempdir()?;
    let tracker = OnePeerTracker::start(big.seeder)?;
    let tpath = dir.path().join("big.torrent");
    std::fs::write(&tpath, with_announce(torrent, &tracker.announce_url())?)?;
    let (data, mnt) = (dir.path().join("data"), dir.path().join("mnt"));
    std::fs::create_dir(&data)?;
    std::fs::create_dir(&mnt)?;
    let cmd = format!("btfs -f --data-directory={} {} {}", data.display(), tpath.display(), mnt.display());
    let m = BtfsMount::mount(&tpath, &data, &mnt, dir.path(), NAME)?;
    let path = mnt.join(NAME);
    let mnt2 = mnt.clone();
    let r = measure::read_seq_capped(&path, big.size, ctx.sizes.btfs_cap, move || BtfsMount::abort(&mnt2));
    let mut notes = vec![
        "btfs (Debian package, libtorrent-rasterbar 2.0): the seeder's .torrent is private and has no announce URL, and \
         btfs has no option to name a peer, so as given it finds no peer (no DHT/PEX/LSD for a private torrent). \
         The bench adds `announce` = a one-peer HTTP tracker of its own on 127.0.0.1 (outside the info dict: same \
         info hash) that answers every announce with alice's address."
            .to_string(),
        format!(
            "`{cmd}`, then read MNT/{NAME} start to end in 1 MiB reads, capped at {}: {} in {} = {:.1} MiB/s{} \
             (the tracker answered {} announces)",
            measure::secs(ctx.sizes.btfs_cap),
            size(r.bytes),
            measure::secs(r.took),
            r.mib_s(),
            if r.finished { "" } else { " (cap reached: rate over the bytes read by then)" },
            tracker.announces()
        ),
    ];
    if r.bytes == 0 {
        notes.push(format!("btfs log tail: {}", crate::process::tail(&m.stderr(), 5)));
    }
    drop(m);
    Ok((r, notes))
}

/// For the notes: the same read by a member with the build's default
/// configuration, which may start fetching the file as soon as it sees it.
fn default_member_read(big: &BigFile, s: &mut Section) -> anyhow::Result<()> {
    big.warm_seeder()?;
    let mut carol = Peer::join(&big.tracker, &big.alice, "carol");
    carol.mount();
    let path = carol.path(NAME);
    let t = Instant::now();
    measure::poll(Duration::from_secs(60), Duration::from_millis(10), || {
        std::fs::metadata(&path).ok().filter(|m| m.len() == big.size)
    })
    .ok_or_else(|| anyhow!("carol does not see {NAME} within 60 s"))?;
    let local_before = measure::bytes_local(&path);
    let r = check_len(measure::read_seq(&path)?, big.size)?;
    s.note(format!(
        "for comparison, member carol with the build's default configuration (no replication key) reads it \
         the same way as soon as she sees it ({} after her mount was up; {} already local then): {} = {:.0} MiB/s",
        ms(t.elapsed() - r.took),
        size(local_before),
        measure::secs(r.took),
        r.mib_s()
    ));
    Ok(())
}

/// Checks 4 KiB at a few offsets against the pattern.
fn verify_sample(path: &Path, pattern: &Pattern, len: u64) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    for off in [0, len / 3, len - 4096] {
        f.read_exact_at(&mut buf, off)?;
        if buf != pattern.bytes_at(off, 4096) {
            bail!("wrong bytes at offset {off} of {}", path.display());
        }
    }
    Ok(())
}

fn p3(ctx: &Ctx, big: &BigFile) -> anyhow::Result<Section> {
    let mut s = Section::new("P3: time to first byte of a 4 KiB read at a random offset, file not local");
    let torrent = big.torrent()?;
    let per_batch = ctx.sizes.p3_per_batch;
    let region = big.size / per_batch;
    // librqbit streams prefetch 32 MiB ahead of their position: a sample at
    // most region/2 into its region leaves the next region untouched.
    let spread = (region / 2).max(4096);
    let mut rng = Rng::new(0x7E57_0003);
    let (mut tit, mut rq) = (Vec::new(), Vec::new());
    let (mut tit_first, mut rq_first) = (Vec::new(), Vec::new());
    let mut fetched = Vec::new();
    for b in 0..ctx.sizes.p3_batches {
        let mut regions: Vec<u64> = (0..per_batch).collect();
        rng.shuffle(&mut regions);
        let offsets: Vec<u64> = regions.iter().map(|r| (r * region + rng.below(spread)) & !4095).collect();

        let m = big.new_member(&format!("p3m{b}"))?;
        let path = m.path(NAME);
        let f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 4096];
        for (i, &off) in offsets.iter().enumerate() {
            let t = Instant::now();
            f.read_exact_at(&mut buf, off)?;
            let d = t.elapsed();
            if buf != big.pattern.bytes_at(off, 4096) {
                bail!("p3m{b} read wrong bytes at {off}");
            }
            if i == 0 {
                tit_first.push(d);
            }
            tit.push(d);
        }
        fetched.push(measure::bytes_local(&path));
        drop(f);
        drop(m);

        let dir = tempfile::Builder::new().prefix("titorrent-bench-rqbit-").tempdir()?;
        let r = super::rqbit_ref::stream_samples(&torrent, big.seeder, dir.path(), &offsets, Duration::from_secs(60))?;
        rq_first.push(r[0]);
        rq.extend(r);
    }
    s.note(format!(
        "{} batches of {per_batch} samples; each batch is a fresh member (joins, mounts, opens MNT/{NAME} once) \
         and reads 4 KiB with pread(2) at one offset in each of {per_batch} regions of {} in shuffled order, \
         at most {} into its region (so a read's prefetch never reaches the next sample): every sample is a piece \
         that member does not have. Timed per pread; bytes checked.",
        ctx.sizes.p3_batches,
        size(region),
        size(spread)
    ));
    s.note(format!(
        "librqbit reference: per batch a fresh Session (as in P2) adding the torrent with only_files = [] \
         (nothing fetched but what the stream asks for, like titorrent's on-demand members), one stream(0), \
         then seek + read_exact of 4 KiB at the same offsets in the same order."
    ));
    s.note(format!(
        "bytes local on each titorrent member after its batch: {}",
        fetched.iter().map(|b| size(*b)).collect::<Vec<_>>().join(", ")
    ));
    s.note(format!(
        "first read of each batch (includes getting the torrent and connecting): titorrent p50 {} max {}; librqbit p50 {} max {}",
        ms(median(&tit_first)),
        ms(percentile(&tit_first, 100.0)),
        ms(median(&rq_first)),
        ms(percentile(&rq_first, 100.0))
    ));
    s.note(format!(
        "all samples: titorrent min {} p90 {} max {}; librqbit min {} p90 {} max {}",
        ms(percentile(&tit, 0.0)),
        ms(percentile(&tit, 90.0)),
        ms(percentile(&tit, 100.0)),
        ms(percentile(&rq, 0.0)),
        ms(percentile(&rq, 90.0)),
        ms(percentile(&rq, 100.0))
    ));
    let n = tit.len();
    for (id, p, target) in [("P3a", 50.0, Duration::from_millis(30)), ("P3b", 99.0, Duration::from_millis(200))] {
        let (a, b) = (percentile(&tit, p), percentile(&rq, p));
        s.row(
            Row::new(id, &format!("4 KiB read at a random offset, {} not local: p{p:.0} of {n}", size(big.size)))
                .titorrent(ms(a))
                .reference(format!("{} (librqbit FileStream)", ms(b)))
                .ratio(ratio(a.as_secs_f64(), b.as_secs_f64()))
                .target(format!("p{p:.0} ≤ {}", ms(target)))
                .met(Met::from_bool(a <= target)),
        );
    }
    Ok(s)
}

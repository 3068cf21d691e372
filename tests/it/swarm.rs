//! Swarm tests: real librqbit sessions on loopback, each in its own temp dir
//! and tracing span, every test under a deadline.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tempfile::TempDir;
use titorrent::swarm::{Fetch, Published, Stripe, Swarm, SwarmConfig, SwarmError, MIN_PIECE_LENGTH, PUBLISH_LIVE, SMALL};
use titorrent_tracker::proto::{InfoHash, MemberId, MemberInfo};
use titorrent_tracker::tls::Identity;
use tracing::Instrument;

/// A new member's swarm configuration on loopback, with its own key.
fn config(cache: PathBuf) -> SwarmConfig {
    SwarmConfig::new(Arc::new(Identity::generate().unwrap()), cache, "127.0.0.1:0".parse().unwrap())
}

/// Every swarm these tests started, as the member the others know: peer
/// links are TLS between members' keys, so each swarm must know the others
/// (the model tells it from the tracker's member list in the real daemon).
static ROSTER: std::sync::Mutex<Vec<(MemberInfo, Swarm)>> = std::sync::Mutex::new(Vec::new());
static NEXT_MEMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Starts a swarm and introduces it to (and to it) every other one.
async fn start_member(cfg: SwarmConfig) -> Result<Swarm, SwarmError> {
    let s = Swarm::start(cfg).await?;
    let me = MemberInfo {
        id: MemberId(NEXT_MEMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        name: "test".into(),
        // Known, not dialled: a test says whom a torrent dials (`ensure`).
        online: false,
        peer_addr: Some(s.listen_addr()),
        key: s.key(),
    };
    let mut roster = ROSTER.lock().unwrap();
    for (m, other) in roster.iter() {
        s.learn_member(m);
        other.learn_member(&me);
    }
    roster.push((me, s.clone()));
    Ok(s)
}

/// The member a swarm of the roster is, now online.
fn online_member(s: &Swarm) -> MemberInfo {
    let roster = ROSTER.lock().unwrap();
    let (m, _) = roster.iter().rev().find(|(m, _)| m.key == s.key()).expect("started by start_member");
    MemberInfo { online: true, ..m.clone() }
}

const MIB: usize = 1024 * 1024;

fn init_tracing() {
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_ansi(false)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        );
    let full_checks = FullCheckCounter.with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.is_span() || m.target() == "librqbit::torrent_state::initializing"
    }));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(full_checks)
        .try_init();
}

/// Sessions started inside a span of this name have their full checks counted.
const WATCHED: &str = "full_checks_watched";
static FULL_CHECKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts librqbit's "Doing initial checksum validation" (it hashes every
/// piece of a torrent it adds without usable fastresume data) in sessions
/// under a `WATCHED` span.
struct FullCheckCounter;

impl<S> tracing_subscriber::Layer<S> for FullCheckCounter
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        struct IsFullCheck(bool);
        impl tracing::field::Visit for IsFullCheck {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" && format!("{v:?}").contains("initial checksum validation")
                {
                    self.0 = true;
                }
            }
        }
        let mut m = IsFullCheck(false);
        event.record(&mut m);
        let watched = ctx
            .event_scope(event)
            .is_some_and(|mut scope| scope.any(|span| span.name() == WATCHED));
        if m.0 && watched {
            FULL_CHECKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Runs a test body under a deadline.
async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test deadline passed")
}

struct Peer {
    swarm: Swarm,
    dir: TempDir,
}

impl Peer {
    async fn start(name: &str, upload_limit_bps: Option<u32>) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path().join("cache"));
        cfg.upload_limit_bps = upload_limit_bps;
        let swarm = start_member(cfg)
            .instrument(tracing::info_span!("peer", name))
            .await
            .unwrap();
        Peer { swarm, dir }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.swarm.listen_addr()
    }

    /// Writes `data` to a staging file and publishes it.
    async fn publish(&self, name: &str, data: &[u8]) -> Published {
        let staging = self.staging(name, data);
        let p = self.swarm.publish(&staging, name).await.unwrap();
        // The store got the staging file's bytes without a copy (a hard
        // link); the staging file is the caller's to remove, as the model
        // does once its outbox names the info hash.
        let stored = self.swarm.local_path(p.info_hash).expect("published content is local");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&staging).unwrap().ino(), std::fs::metadata(&stored).unwrap().ino(), "publish links the staging file into the store");
        std::fs::remove_file(&staging).unwrap();
        p
    }

    fn staging(&self, name: &str, data: &[u8]) -> PathBuf {
        let staging = self.dir.path().join(format!("staging-{name}"));
        std::fs::write(&staging, data).unwrap();
        staging
    }
}

/// A file one byte too big for a blob (so it is a torrent), different
/// for each `i`.
fn past_small(i: usize) -> Vec<u8> {
    let mut data = vec![0u8; SMALL as usize + 1];
    data[..8].copy_from_slice(&(i as u64).to_be_bytes());
    data
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

async fn read_all(s: &Swarm, ih: InfoHash, size: usize, chunk: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let b = s.read(ih, out.len() as u64, chunk).await.unwrap();
        assert!(!b.is_empty());
        out.extend_from_slice(&b);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_then_fetch_32_mib() {
    init_tracing();
    within(120, async {
        let a = Peer::start("A", None).await;
        let b = Peer::start("B", None).await;
        let data = random_bytes(32 * MIB);
        let p = a.publish("data.bin", &data).await;
        assert_eq!(p.size, data.len() as u64);

        // The torrent is BEP 3 as other clients read it.
        let meta = librqbit::torrent_from_bytes(&p.torrent).unwrap();
        assert_eq!(meta.info_hash.0, p.info_hash.0);
        let info = &meta.info.data;
        assert!(info.private);
        assert_eq!(info.piece_length, MIN_PIECE_LENGTH);
        assert_eq!(info.length, Some(data.len() as u64));
        assert!(info.files.is_none());
        assert!(meta.announce.is_none());
        // An exact multiple of the piece length: no extra hash at the end.
        assert_eq!(
            info.pieces.as_ref().len(),
            data.len() / MIN_PIECE_LENGTH as usize * 20
        );

        let seeded = a
            .swarm
            .local_path(p.info_hash)
            .expect("the publisher seeds it");
        assert_eq!(std::fs::read(&seeded).unwrap(), data);
        assert_eq!(a.swarm.progress(p.info_hash), Some((p.size, p.size)));

        b.swarm
            .ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::Background(Stripe::WHOLE))
            .await
            .unwrap();
        // Idempotent.
        b.swarm
            .ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::Background(Stripe::WHOLE))
            .await
            .unwrap();
        let got = read_all(&b.swarm, p.info_hash, data.len(), 1024 * 1024).await;
        assert!(got == data, "B read different bytes");
        b.swarm.wait_complete(p.info_hash).await.unwrap();
        let local = b.swarm.local_path(p.info_hash).unwrap();
        assert!(std::fs::read(local).unwrap() == data);
        // Reads past the end.
        let tail = b.swarm.read(p.info_hash, p.size - 10, 4096).await.unwrap();
        assert_eq!(&tail[..], &data[data.len() - 10..]);
        assert!(b
            .swarm
            .read(p.info_hash, p.size, 4096)
            .await
            .unwrap()
            .is_empty());

        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_returns_before_the_file_is_complete() {
    init_tracing();
    within(120, async {
        // 4 MiB/s: all of it would take 16 s.
        let a = Peer::start("A", Some(4 * MIB as u32)).await;
        let b = Peer::start("B", None).await;
        let data = random_bytes(64 * MIB);
        let p = a.publish("big.bin", &data).await;
        b.swarm
            .ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand)
            .await
            .unwrap();

        let offset = 40 * MIB + 12345;
        let started = Instant::now();
        let got = b
            .swarm
            .read(p.info_hash, offset as u64, 4096)
            .await
            .unwrap();
        let latency = started.elapsed();
        let (have, total) = b.swarm.progress(p.info_hash).unwrap();
        eprintln!("on-demand 4 KiB read at 40 MiB: {latency:?}; B had {have} of {total} bytes");
        assert_eq!(&got[..], &data[offset..offset + 4096]);
        assert!(have < total, "the read waited for the whole file");
        assert!(b.swarm.local_path(p.info_hash).is_none());

        // Asking for the background fetch later completes it.
        b.swarm
            .ensure(p.info_hash, &p.torrent, vec![], Fetch::Background(Stripe::WHOLE))
            .await
            .unwrap();
        a.swarm.set_rate_limits(None, None);
        b.swarm.wait_complete(p.info_hash).await.unwrap();
        let local = b.swarm.local_path(p.info_hash).unwrap();
        assert!(std::fs::read(local).unwrap() == data);

        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ensure_rejects_a_torrent_that_does_not_match_its_hash() {
    init_tracing();
    within(60, async {
        let a = Peer::start("A", None).await;
        let b = Peer::start("B", None).await;
        let p = a.publish("small.txt", b"hello, swarm").await;
        let wrong = InfoHash([0xab; 20]);
        let r = b
            .swarm
            .ensure(wrong, &p.torrent, vec![a.addr()], Fetch::Background(Stripe::WHOLE))
            .await;
        assert!(matches!(r, Err(SwarmError::HashMismatch { .. })), "{r:?}");
        assert!(b.swarm.progress(wrong).is_none());
        assert!(b.swarm.progress(p.info_hash).is_none());
        assert!(matches!(
            b.swarm.read(p.info_hash, 0, 10).await,
            Err(SwarmError::NotFound)
        ));
        let r = b
            .swarm
            .ensure(p.info_hash, b"d4:infoi3ee", vec![], Fetch::Background(Stripe::WHOLE))
            .await;
        assert!(matches!(r, Err(SwarmError::InvalidTorrent(_))), "{r:?}");

        let empty = a.staging("empty", b"");
        assert!(matches!(
            a.swarm.publish(&empty, "empty").await,
            Err(SwarmError::EmptyFile)
        ));
        let other = a.staging("x", b"x");
        assert!(matches!(
            a.swarm.publish(&other, "../x").await,
            Err(SwarmError::InvalidName(_))
        ));

        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_reads_of_a_file_not_yet_here() {
    init_tracing();
    within(120, async {
        let a = Peer::start("A", Some(16 * MIB as u32)).await;
        let b = Peer::start("B", None).await;
        let data = Arc::new(random_bytes(64 * MIB));
        let p = a.publish("many.bin", &data).await;
        b.swarm
            .ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand)
            .await
            .unwrap();

        let started = Instant::now();
        let tasks: Vec<_> = (0..32usize)
            .map(|i| {
                let (s, data) = (b.swarm.clone(), data.clone());
                // Spread over the file; lengths cross piece boundaries.
                let offset = i * 2 * MIB + i * 4099;
                let len = 100 * 1024 + i * 1000;
                tokio::spawn(async move {
                    let got = s
                        .read(p.info_hash, offset as u64, len as u32)
                        .await
                        .unwrap();
                    let end = (offset + len).min(data.len());
                    assert!(got[..] == data[offset..end], "read {i} differs");
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        eprintln!("32 concurrent reads done in {:?}", started.elapsed());

        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

/// A member learnt after `ensure` (it came online later) is dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_added_later_are_used() {
    init_tracing();
    within(60, async {
        let a = Peer::start("A", None).await;
        let b = Peer::start("B", None).await;
        let data = random_bytes(2 * MIB + 3);
        let p = a.publish("later.bin", &data).await;
        b.swarm
            .ensure(p.info_hash, &p.torrent, vec![], Fetch::Background(Stripe::WHOLE))
            .await
            .unwrap();
        assert_eq!(b.swarm.progress(p.info_hash).unwrap().0, 0);
        // Not a wait for a condition: the member comes online after B's
        // torrent has made its first announce (and heard of nobody).
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(b.swarm.progress(p.info_hash).unwrap().0, 0);
        let started = Instant::now();
        b.swarm.learn_member(&online_member(&a.swarm));
        b.swarm.wait_complete(p.info_hash).await.unwrap();
        eprintln!("complete {:?} after the member came online", started.elapsed());
        let got = b.swarm.read(p.info_hash, 0, 3 * MIB as u32).await.unwrap();
        assert!(got[..] == data[..]);
        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

/// One read after another at scattered offsets, as a program seeking around
/// a file does: librqbit drops and redials the seeder between reads, and no
/// read may get stuck in that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scattered_reads_one_after_another() {
    init_tracing();
    within(120, async {
        let a = Peer::start("A", None).await;
        let b = Peer::start("B", None).await;
        let data = random_bytes(48 * MIB + 777);
        let p = a.publish("seek.bin", &data).await;
        b.swarm
            .ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand)
            .await
            .unwrap();
        let mut worst = Duration::ZERO;
        let mut total = Duration::ZERO;
        for i in 0..40usize {
            // A fixed, spread-out order (a multiplicative walk over 1 MiB slots).
            let offset = ((i * 29 + 7) % 48) * MIB + (i * 4099) % MIB;
            let started = Instant::now();
            let got = b
                .swarm
                .read(p.info_hash, offset as u64, 64 * 1024)
                .await
                .unwrap();
            let took = started.elapsed();
            worst = worst.max(took);
            total += took;
            let end = (offset + 64 * 1024).min(data.len());
            assert!(got[..] == data[offset..end], "read {i} differs");
        }
        eprintln!(
            "40 scattered 64 KiB reads: mean {:?}, worst {worst:?}",
            total / 40
        );
        assert!(
            worst < Duration::from_secs(4),
            "a read stalled for {worst:?}"
        );
        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

/// SHA-1 of a file's pieces with 1 MiB reads on one thread, with the SHA-1
/// publish uses (librqbit's): what hashing alone costs.
fn hash_only(path: &Path) -> Duration {
    use librqbit_sha1_wrapper::{ISha1, Sha1};
    use std::io::Read;
    let started = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; MIB];
    let mut pieces = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        // 1 MiB reads of a file whose pieces are 256 KiB: whole pieces each.
        for c in buf[..n].chunks(MIN_PIECE_LENGTH as usize) {
            let mut h = Sha1::new();
            h.update(c);
            pieces.push(h.finish());
        }
    }
    assert!(!pieces.is_empty());
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_does_not_hash_twice() {
    use std::sync::atomic::Ordering::SeqCst;
    init_tracing();
    within(300, async {
        let dir = tempfile::tempdir().unwrap();
        let start = |name: &str| {
            let cfg = config(dir.path().join(name));
            start_member(cfg).instrument(tracing::info_span!(WATCHED))
        };
        let a = start("a").await.unwrap();
        let data = random_bytes(256 * MIB);
        let staging = dir.path().join("big");
        std::fs::write(&staging, &data).unwrap();
        drop(data);
        let hash = hash_only(&staging);
        let started = Instant::now();
        let p = a.publish(&staging, "big").await.unwrap();
        let publish = started.elapsed();
        eprintln!("256 MiB: hashing alone {hash:?}, publish {publish:?}");
        assert!(a.local_path(p.info_hash).is_some());
        assert_eq!(
            FULL_CHECKS.load(SeqCst),
            0,
            "librqbit re-hashed the published file"
        );
        assert!(
            publish < hash * 2 + Duration::from_millis(500),
            "publish took {publish:?}, hashing alone {hash:?}"
        );

        // The counter sees full checks: adding a torrent to fetch does one
        // (of an empty file, which is quick).
        let b = start("b").await.unwrap();
        b.ensure(p.info_hash, &p.torrent, vec![], Fetch::Background(Stripe::WHOLE))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while FULL_CHECKS.load(SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the full-check counter saw nothing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_survive_a_restart_and_forget_removes_them() {
    init_tracing();
    within(60, async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path().join("cache"));
        let s = start_member(cfg.clone()).await.unwrap();
        let data = random_bytes(3 * MIB + 5);
        let staging = dir.path().join("staging");
        std::fs::write(&staging, &data).unwrap();
        let p = s.publish(&staging, "kept.bin").await.unwrap();
        let path = s.local_path(p.info_hash).unwrap();
        s.shutdown().await;
        drop(s);

        let s = start_member(cfg).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.local_path(p.info_hash).is_none() {
            assert!(Instant::now() < deadline, "the version did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            s.read(p.info_hash, 3 * MIB as u64, 100).await.unwrap(),
            &data[3 * MIB..]
        );

        s.forget(p.info_hash).await.unwrap();
        assert!(s.local_path(p.info_hash).is_none());
        assert!(s.progress(p.info_hash).is_none());
        assert!(!path.exists());
        assert!(matches!(
            s.read(p.info_hash, 0, 1).await,
            Err(SwarmError::NotFound)
        ));
        // Idempotent.
        s.forget(p.info_hash).await.unwrap();
        s.shutdown().await;
    })
    .await
}

/// A whole file fetched in the background by one member and read through
/// on demand by another, bytes checked. It prints the rates it saw; for a
/// throughput figure run it in release with a bigger size:
/// `TITORRENT_SWARM_MIB=256 cargo test --release --test tests whole_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_file_in_the_background_and_read_through_on_demand() {
    init_tracing();
    let mib: usize = std::env::var("TITORRENT_SWARM_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    within(600, async {
        let a = Peer::start("A", None).await;
        let data = random_bytes(mib * MIB);
        let p = a.publish("t.bin", &data).await;

        let b = Peer::start("B", None).await;
        let started = Instant::now();
        b.swarm
            .ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::Background(Stripe::WHOLE))
            .await
            .unwrap();
        b.swarm.wait_complete(p.info_hash).await.unwrap();
        let t = started.elapsed();
        assert!(std::fs::read(b.swarm.local_path(p.info_hash).unwrap()).unwrap() == data, "B's background copy");
        eprintln!("background fetch of {mib} MiB: {t:?} = {:.0} MiB/s", mib as f64 / t.as_secs_f64());

        let c = Peer::start("C", None).await;
        c.swarm
            .ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand)
            .await
            .unwrap();
        let started = Instant::now();
        let got = read_all(&c.swarm, p.info_hash, data.len(), 128 * 1024).await;
        let t = started.elapsed();
        eprintln!("sequential on-demand 128 KiB reads of {mib} MiB: {t:?} = {:.0} MiB/s", mib as f64 / t.as_secs_f64());
        assert!(got == data);
        for p in [a, b, c] {
            p.swarm.shutdown().await;
        }
    })
    .await
}

/// Routes `from`'s wants to `to`, as the tracker manager does between
/// members (`Want` → `Wanted`).
fn route_wants(from: &Peer, to: &Peer) {
    let (to, from_addr) = (to.swarm.clone(), from.addr());
    from.swarm.set_want_hook(Box::new(move |ih| to.wanted(ih, from_addr)));
}

/// Puts a swarm's versions to sleep, waiting out a read's lingering stream.
async fn sleep_all(s: &Swarm) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        s.sleep_idle().await;
        if s.live_count() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{} versions never went to sleep", s.live_count());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A version nobody uses leaves librqbit (no torrent, no descriptor), stays
/// readable from disk, and wakes when another member wants it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dormant_versions_are_read_locally_and_woken_by_a_want() {
    init_tracing();
    within(120, async {
        let a = Peer::start("A", None).await;
        let b = Peer::start("B", None).await;
        route_wants(&b, &a);
        let data = random_bytes(4 * MIB + 3);
        let p = a.publish("d.bin", &data).await;
        assert_eq!(a.swarm.live_count(), 1, "a new version is live at once");
        assert_eq!(a.swarm.sleep_idle().await, 1);
        assert_eq!(a.swarm.live_count(), 0);

        // Dormant and complete: served from the object file, nothing wakes.
        assert!(a.swarm.local_path(p.info_hash).is_some());
        assert_eq!(a.swarm.progress(p.info_hash), Some((p.size, p.size)));
        assert_eq!(&a.swarm.read(p.info_hash, 5, 100).await.unwrap()[..], &data[5..105]);
        assert_eq!(a.swarm.live_count(), 0);

        // B needs it: its want wakes A's copy, and B reads every byte.
        b.swarm.ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand).await.unwrap();
        assert_eq!(b.swarm.live_count(), 0, "on demand: nothing live before a read");
        let got = read_all(&b.swarm, p.info_hash, data.len(), 256 * 1024).await;
        assert!(got == data, "B read different bytes");
        assert_eq!(a.swarm.live_count(), 1, "A woke for B");

        // B's complete copy sleeps too, and still reads.
        until("B has all of it", 20, || b.swarm.local_path(p.info_hash).is_some()).await;
        b.swarm.wait_complete(p.info_hash).await.unwrap();
        sleep_all(&b.swarm).await;
        assert_eq!(&b.swarm.read(p.info_hash, 4 * MIB as u64, 3).await.unwrap()[..], &data[4 * MIB..]);
        assert_eq!(b.swarm.live_count(), 0);
        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

/// The pieces of a partly fetched version survive its sleep and a restart:
/// they are read back with their seeder gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_version_keeps_its_pieces_asleep_and_across_a_restart() {
    init_tracing();
    within(120, async {
        let a = Peer::start("A", None).await;
        // Bigger than a stream's 32 MiB read-ahead.
        let data = random_bytes(64 * MIB);
        let p = a.publish("p.bin", &data).await;

        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path().join("cache"));
        let b = start_member(cfg.clone()).await.unwrap();
        b.ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand).await.unwrap();
        let first = b.read(p.info_hash, 0, MIB as u32).await.unwrap();
        assert_eq!(&first[..], &data[..MIB]);
        sleep_all(&b).await;
        let (have, total) = b.progress(p.info_hash).unwrap();
        assert!(have >= MIB as u64 && have < total, "B has {have} of {total} bytes");
        b.shutdown().await;
        drop(b);
        a.swarm.shutdown().await;

        let b = start_member(cfg).await.unwrap();
        assert_eq!(b.progress(p.info_hash), Some((have, total)), "pieces kept across the restart");
        let again = b.read(p.info_hash, 1000, 1000).await.unwrap();
        assert_eq!(&again[..], &data[1000..2000]);
        assert_eq!(b.live_count(), 0, "a local range needs no torrent");
        b.shutdown().await;
    })
    .await
}

/// Publishing many files does not leave many torrents live: idle ones go
/// to sleep once more than a few dozen are live, and all stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_versions_do_not_stay_live() {
    init_tracing();
    within(180, async {
        let a = Peer::start("A", None).await;
        let mut published = Vec::new();
        // Torrents: small files would be blobs and never live (see below).
        for i in 0..120 {
            let data = past_small(i);
            let p = a.publish(&format!("f{i}.txt"), &data).await;
            published.push((p, data));
        }
        let live = a.swarm.live_count();
        assert!(live > 48, "all {live} were live right after publishing");
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.swarm.live_count() > 48 {
            assert!(Instant::now() < deadline, "{} versions still live", a.swarm.live_count());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (p, data) in &published {
            assert_eq!(&a.swarm.read(p.info_hash, 0, 100).await.unwrap()[..], &data[..100]);
            assert!(a.swarm.local_path(p.info_hash).is_some());
        }
        assert!(a.swarm.live_count() <= 48);
        a.swarm.shutdown().await;
    })
    .await
}

/// A burst of publishes (`tar -x` of many small files) never has more than
/// `PUBLISH_LIVE` versions live: past that a new version stays dormant,
/// and another member that needs it wakes it with a want and gets every
/// byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_publishes_keeps_live_versions_bounded_and_the_rest_wake_when_wanted() {
    init_tracing();
    within(300, async {
        let a = Peer::start("A", None).await;
        let b = Peer::start("B", None).await;
        route_wants(&b, &a);
        let mut published = Vec::new();
        let mut most = 0;
        for i in 0..PUBLISH_LIVE + 24 {
            let data = past_small(i);
            published.push((a.publish(&format!("f{i}.txt"), &data).await, data));
            most = most.max(a.swarm.live_count());
        }
        assert!(most <= PUBLISH_LIVE, "{most} versions were live at once (bound {PUBLISH_LIVE})");
        for (p, data) in published.iter().rev().take(8) {
            b.swarm.ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand).await.unwrap();
            let got = read_all(&b.swarm, p.info_hash, data.len(), 256 * 1024).await;
            assert!(&got == data, "B read other bytes than A published");
        }
        // Wants always wake: the bound plus the eight B asked for.
        assert!(a.swarm.live_count() <= PUBLISH_LIVE + 8, "{} live", a.swarm.live_count());
        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

/// Members fetching one version at once, each starting at its own stripe,
/// all end up with every byte (the seeder's upload is the benchmark P7's
/// business; this checks that steering the fetch loses nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn striped_background_fetches_complete_with_the_right_bytes() {
    init_tracing();
    within(300, async {
        let seed = Peer::start("S", None).await;
        let data = random_bytes(24 * MIB + 12345);
        let p = seed.publish("s.bin", &data).await;
        let mut members = Vec::new();
        for i in 0..3u32 {
            members.push(Peer::start(&format!("M{i}"), None).await);
        }
        let addrs: Vec<_> = std::iter::once(seed.addr()).chain(members.iter().map(|m| m.addr())).collect();
        for (i, m) in members.iter().enumerate() {
            route_wants(m, &seed);
            let stripe = Stripe { index: i as u32, count: 3 };
            m.swarm.ensure(p.info_hash, &p.torrent, addrs.clone(), Fetch::Background(stripe)).await.unwrap();
        }
        for m in &members {
            m.swarm.wait_complete(p.info_hash).await.unwrap();
            let local = m.swarm.local_path(p.info_hash).unwrap();
            assert!(std::fs::read(local).unwrap() == data, "a member's copy differs");
        }
        for m in members.iter().chain([&seed]) {
            m.swarm.shutdown().await;
        }
    })
    .await
}

/// A member reading a version in order (cat, cp) gets all of it fetched,
/// not just what it read so far; scattered reads fetch only what they need.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reading_in_order_fetches_the_whole_file_scattered_reads_do_not() {
    init_tracing();
    within(120, async {
        let a = Peer::start("A", None).await;
        let data = random_bytes(48 * MIB);
        let p = a.publish("o.bin", &data).await;

        let b = Peer::start("B", None).await;
        b.swarm.ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand).await.unwrap();
        let head = read_all(&b.swarm, p.info_hash, 9 * MIB, MIB as u32).await;
        assert!(head[..] == data[..9 * MIB]);
        b.swarm.wait_complete(p.info_hash).await.unwrap();
        assert!(std::fs::read(b.swarm.local_path(p.info_hash).unwrap()).unwrap() == data);

        // Scattered: four reads, each with a stream fetching at most 32 MiB
        // ahead of it, in a file of 160 MiB.
        let big = random_bytes(160 * MIB);
        let q = a.publish("s.bin", &big).await;
        let c = Peer::start("C", None).await;
        c.swarm.ensure(q.info_hash, &q.torrent, vec![a.addr()], Fetch::OnDemand).await.unwrap();
        for k in [150u64, 10, 100, 60] {
            let at = k * MIB as u64;
            let got = c.swarm.read(q.info_hash, at, 4096).await.unwrap();
            assert_eq!(&got[..], &big[at as usize..at as usize + 4096]);
        }
        // Time is the condition here: what a full fetch would bring in by now.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (have, total) = c.swarm.progress(q.info_hash).unwrap();
        assert!(have <= 4 * 33 * MIB as u64, "scattered 4 KiB reads fetched {have} of {total} bytes");
        for s in [a.swarm, b.swarm, c.swarm] {
            s.shutdown().await;
        }
    })
    .await
}

/// A burst of small files reaches another member whole, as blobs: no
/// version goes live in librqbit on either side, every copy is byte-exact,
/// and a read of a small file not fetched yet gets it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_files_move_as_blobs_with_no_torrent_on_either_side() {
    init_tracing();
    within(120, async {
        let a = Peer::start("A", None).await;
        let b = Peer::start("B", None).await;
        let mut published = Vec::new();
        // Sizes from empty-ish to exactly SMALL (four pieces).
        for i in 0..600usize {
            let len = match i {
                0 => SMALL as usize,
                1 => 1,
                _ => 40 + (i * 7919) % 9000,
            };
            let data = random_bytes(len);
            published.push((a.publish(&format!("s{i}.txt"), &data).await, data));
        }
        assert_eq!(a.swarm.live_count(), 0, "a small version is not a torrent");
        let (on_demand, background) = published.split_at(10);
        for (p, _) in background {
            b.swarm.ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::Background(Stripe::WHOLE)).await.unwrap();
        }
        for (p, data) in background {
            b.swarm.wait_complete(p.info_hash).await.unwrap();
            let local = b.swarm.local_path(p.info_hash).expect("complete on B");
            assert!(&std::fs::read(local).unwrap() == data, "B's copy differs");
        }
        for (p, data) in on_demand {
            b.swarm.ensure(p.info_hash, &p.torrent, vec![a.addr()], Fetch::OnDemand).await.unwrap();
            assert!(b.swarm.local_path(p.info_hash).is_none(), "on demand: nothing before a read");
            let got = read_all(&b.swarm, p.info_hash, data.len(), 128 * 1024).await;
            assert!(&got == data, "B read other bytes");
        }
        assert_eq!((a.swarm.live_count(), b.swarm.live_count()), (0, 0), "no torrent went live");
        a.swarm.shutdown().await;
        b.swarm.shutdown().await;
    })
    .await
}

/// A small version its first named holder does not have comes from the
/// next one; one no holder has whole comes by BitTorrent, woken by a want.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_version_a_holder_lacks_comes_from_the_next_or_by_bittorrent() {
    init_tracing();
    within(120, async {
        let a = Peer::start("A", None).await;
        let b = Peer::start("B", None).await;
        let c = Peer::start("C", None).await;
        route_wants(&b, &a);
        let one = random_bytes(5000);
        let two = random_bytes(7000);
        let (p1, p2) = (a.publish("one.txt", &one).await, a.publish("two.txt", &two).await);
        // C has neither: B asks C, then A.
        b.swarm.ensure(p1.info_hash, &p1.torrent, vec![c.addr(), a.addr()], Fetch::Background(Stripe::WHOLE)).await.unwrap();
        b.swarm.wait_complete(p1.info_hash).await.unwrap();
        assert!(std::fs::read(b.swarm.local_path(p1.info_hash).unwrap()).unwrap() == one);
        assert_eq!(a.swarm.live_count(), 0, "A served it as a blob");
        // Only C is named: no blob, so BitTorrent, which B's want makes A
        // wake and dial.
        b.swarm.ensure(p2.info_hash, &p2.torrent, vec![c.addr()], Fetch::Background(Stripe::WHOLE)).await.unwrap();
        b.swarm.wait_complete(p2.info_hash).await.unwrap();
        assert!(std::fs::read(b.swarm.local_path(p2.info_hash).unwrap()).unwrap() == two);
        for p in [&a, &b, &c] {
            p.swarm.shutdown().await;
        }
    })
    .await
}

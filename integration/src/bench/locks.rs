//! P4: taking a lock. Open-for-write latency through the mount on files
//! nobody holds, and lock+unlock pairs per second at the tracker from
//! several raw-protocol clients.

use super::measure::{self, median, ms, percentile};
use super::report::{Met, Row, Section};
use super::{Ctx, Sink};
use crate::raw::RawConn;
use crate::{Peer, TrackerProc};
use anyhow::{anyhow, bail};
use std::fs::OpenOptions;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use titorrent_tracker::proto::{FileId, FileKind, Request, Response};

pub fn run(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let mut s = Section::new("P4a: open-for-write (lock) latency through the mount");
    open_latency(ctx, &mut s)?;
    sink.push(s);
    let mut s = Section::new("P4b: lock+unlock pairs per second at the tracker");
    let tracker = TrackerProc::start();
    let tpid = measure::pid_of("titorrent-tracker", &tracker.data_dir()).unwrap_or(0);
    let n = ctx.sizes.p4_clients;
    let duration = ctx.sizes.p4_duration;
    let (res, cpu) = measure::cpu_during(&[tpid], || tracker_pairs(&tracker, n, duration, "bench"));
    let (pairs, took, lat) = res?;
    let rate = pairs as f64 / took.as_secs_f64();
    s.note(format!(
        "a fresh titorrent-tracker on 127.0.0.1; {n} raw clients (integration/src/raw.rs, one TCP connection \
         each, request/response, one request in flight per client) in one group, each with a file of its own; \
         for {} each loops Lock{{file}} → Locked(lease), Unlock{{lease}} → Ok. {pairs} pairs in {} = {rate:.0} \
         pairs/s; pair latency p50 {}, p99 {}; the tracker used {:.2} CPU seconds meanwhile ({:.0}% of one core)",
        measure::secs(duration),
        measure::secs(took),
        ms(median(&lat)),
        ms(percentile(&lat, 99.0)),
        cpu[0],
        100.0 * cpu[0] / took.as_secs_f64()
    ));
    // The same with 1 and 8× as many clients: a rate that grows with the
    // clients is bound by waiting (the flush a lock grant waits for), not
    // by the tracker's CPU.
    let short = (duration / 3).max(Duration::from_secs(1));
    for (k, c) in [1, n * 8].into_iter().enumerate() {
        let (p, t, l) = tracker_pairs(&tracker, c, short, &format!("sweep{k}"))?;
        s.note(format!(
            "same tracker, {c} clients for {}: {:.0} pairs/s, pair latency p50 {}",
            measure::secs(short),
            p as f64 / t.as_secs_f64(),
            ms(median(&l))
        ));
    }
    s.row(
        Row::new("P4b", &format!("lock+unlock pairs per second at the tracker, {n} clients"))
            .titorrent(format!("{rate:.0} /s"))
            .target("≥ 20,000 /s")
            .met(Met::from_bool(rate >= 20_000.0)),
    );
    sink.push(s);
    Ok(())
}

fn open_latency(ctx: &Ctx, s: &mut Section) -> anyhow::Result<()> {
    let tracker = TrackerProc::start();
    let mut alice = Peer::create_group(&tracker, "alice");
    alice.mount();
    let n = ctx.sizes.p4_opens;
    for i in 0..n {
        std::fs::write(alice.path(format!("f{i:04}.txt")), format!("file {i}\n"))?;
    }
    let last = alice.path(format!("f{:04}.txt", n - 1));
    measure::poll(Duration::from_secs(120), Duration::from_millis(20), || measure::info_hash(&last))
        .ok_or_else(|| anyhow!("the last of {n} small files was not published within 120 s"))?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let p = alice.path(format!("f{i:04}.txt"));
        let t = Instant::now();
        let f = OpenOptions::new().write(true).open(&p)?;
        samples.push(t.elapsed());
        drop(f);
    }
    let p50 = median(&samples);
    s.note(format!(
        "open latency: alice creates {n} small files through her mount and waits for them to be published; \
         then, one after the other, open(2) with O_WRONLY (no truncation) on each (no one holds any) and close it \
         without writing. Timed: the open alone. p50 {}, p90 {}, p99 {}, max {}",
        ms(p50),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(percentile(&samples, 100.0))
    ));
    s.row(
        Row::new("P4a", "open for write (takes the lock) of a file nobody holds, through the mount: p50")
            .titorrent(ms(p50))
            .target("p50 ≤ 2 ms")
            .met(Met::from_bool(p50 <= Duration::from_millis(2))),
    );
    Ok(())
}

/// One authenticated raw client with a file of its own.
struct Client {
    conn: RawConn,
    next_id: u64,
    file: FileId,
}

impl Client {
    fn req(&mut self, r: Request) -> Response {
        self.next_id += 1;
        self.conn.request(self.next_id, r)
    }
}

/// `n` raw clients in a new group of `tracker`, each locking and unlocking
/// a file of its own for `duration`: (pairs, time, pair latencies).
fn tracker_pairs(tracker: &TrackerProc, n: usize, duration: Duration, group_name: &str) -> anyhow::Result<(usize, Duration, Vec<Duration>)> {
    let mut first = RawConn::connect(tracker.addr());
    first.hello();
    let group = match first.request(1, Request::CreateGroup { admin_token: tracker.admin_token(), group_name: group_name.into(), member_name: "c0".into(), peer_addr: None }) {
        Response::Created { group, .. } => group,
        other => bail!("CreateGroup answered {other:?}"),
    };
    let code = match first.request(2, Request::CreateInvite { ttl_ms: 0, uses: n as u32 }) {
        Response::Invite { code, .. } => code,
        other => bail!("CreateInvite answered {other:?}"),
    };
    let mut clients = vec![Client { conn: first, next_id: 2, file: FileId(0) }];
    for i in 1..n {
        let mut c = RawConn::connect(tracker.addr());
        c.hello();
        match c.request(1, Request::Join { group, invite: code.clone(), member_name: format!("c{i}"), peer_addr: None }) {
            Response::Joined { .. } => {}
            other => bail!("Join answered {other:?}"),
        }
        clients.push(Client { conn: c, next_id: 1, file: FileId(0) });
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.file = match c.req(Request::CreateFile { parent: FileId::ROOT, name: format!("lock{i}"), kind: FileKind::File, mode: 0o644, lock: false, owner: Default::default() }) {
            Response::File { entry, .. } => entry.id,
            other => bail!("CreateFile answered {other:?}"),
        };
    }
    let barrier = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let b = barrier.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                b.wait();
                let end = Instant::now() + duration;
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    let lease = match c.req(Request::Lock { file: c.file }) {
                        Response::Locked(l) => l,
                        other => return Err(format!("Lock answered {other:?}")),
                    };
                    match c.req(Request::Unlock { lease: lease.id }) {
                        Response::Ok => {}
                        other => return Err(format!("Unlock answered {other:?}")),
                    }
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| anyhow!("a client thread panicked"))?.map_err(|e| anyhow!(e))?);
    }
    let took = start.elapsed();
    Ok((all.len(), took, all))
}

//! P7: one file from one member to N others, each in its own network
//! namespace with a shaped uplink, against the fluid-model lower bound
//! max(F/u_seed, N·F/(u_seed + Σu_i), F/d_min).

use super::measure::{self, size, MIB};
use super::member::{Member, DEFAULTS};
use super::netns::{Lab, NsTracker, BRIDGE_IP};
use super::report::{Met, Row, Section};
use super::{Ctx, Sink};
use crate::Pattern;
use anyhow::anyhow;
use std::time::{Duration, Instant};

const NAME: &str = "dist.bin";

pub fn run(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let z = &ctx.sizes;
    let (n, f, u) = (z.p7_peers, z.p7_size, z.p7_uplink);
    let mut s = Section::new(&format!("P7: one {} file from one member to {n} others, each in its own network namespace", size(f)));
    let fig = format!("{} from 1 seeder to {n} members, uplinks {} MiB/s each (tbf)", size(f), u / MIB);
    let lab = match Lab::new(n + 1, u) {
        Ok(l) => l,
        Err(e) => {
            let why = format!("needs network namespaces (root, iproute2 with tbf): {e:#}");
            s.note(why.clone());
            s.row(Row::new("P7", &fig).met(Met::Skipped(why)));
            sink.push(s);
            return Ok(());
        }
    };
    s.note(format!(
        "namespaces and links (m0 is the seeder; m2..m{n} are made like m1): `{}`",
        lab.commands.join("`; `")
    ));
    let tracker = NsTracker::start(&lab.bridge_ns, BRIDGE_IP)?;
    let (seed_ns, seed_ip) = lab.members[0].clone();
    let mut seed = Member::create_group("seed", Some(&seed_ns), seed_ip.into(), tracker.addr, &tracker.admin_token, DEFAULTS)?;
    seed.mount()?;
    let mut peers = Vec::new();
    for (i, (ns, ip)) in lab.members[1..].iter().enumerate() {
        let invite = seed.invite()?;
        let mut p = Member::join(&format!("peer{}", i + 1), Some(ns), (*ip).into(), &invite, DEFAULTS)?;
        p.mount()?;
        peers.push(p);
    }
    s.note(format!(
        "tracker manager in {} at {}; each member runs `nsenter --net=/run/netns/NS titorrent mount MNT --state DIR \
         --listen 10.231.0.X:0` (its mount visible to the bench)",
        lab.bridge_ns, tracker.addr
    ));

    let pattern = Pattern::new(0x7007);
    let sp = seed.path(NAME);
    pattern.write_file(&sp, f)?;
    measure::poll(Duration::from_secs(300), Duration::from_millis(20), || {
        measure::info_hash(&sp).filter(|_| measure::bytes_local(&sp) == f)
    })
    .ok_or_else(|| anyhow!("the seed's {NAME} was not published within 300 s"))?;
    for p in &peers {
        let pp = p.path(NAME);
        measure::poll(Duration::from_secs(60), Duration::from_millis(20), || measure::info_hash(&pp))
            .ok_or_else(|| anyhow!("{} does not see {NAME} within 60 s", p.name))?;
    }

    let fb = f as f64;
    let (us, ui) = (u as f64, u as f64);
    let bound_s = (fb / us).max(n as f64 * fb / (us + n as f64 * ui));
    let bound = Duration::from_secs_f64(bound_s);
    // Past this the figure is reported as "more than" (the seeder alone
    // uploading to every member takes N·F/u_seed = N × the bound).
    let deadline = bound * (n as u32 + 2) + Duration::from_secs(60);

    let t0 = Instant::now();
    for p in &peers {
        measure::setxattr(&p.path(NAME), measure::XATTR_PIN, b"1").map_err(|e| anyhow!("pin on {}: {e}", p.name))?;
    }
    let mut done: Vec<Option<Duration>> = vec![None; peers.len()];
    // Every member's uplink counter every `SAMPLE`, for the timeline note.
    const SAMPLE: Duration = Duration::from_secs(5);
    let sent = || -> Vec<u64> { lab.members.iter().map(|(ns, _)| super::netns::uplink(ns).map_or(0, |u| u.sent_bytes)).collect() };
    let mut samples = vec![sent()];
    while done.iter().any(Option::is_none) && t0.elapsed() < deadline {
        for (i, p) in peers.iter().enumerate() {
            if done[i].is_none() && measure::bytes_local(&p.path(NAME)) >= f {
                done[i] = Some(t0.elapsed());
            }
        }
        if t0.elapsed() >= SAMPLE * samples.len() as u32 {
            samples.push(sent());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    samples.push(sent());
    s.note(uplink_timeline(&samples, SAMPLE));
    let have: Vec<u64> = peers.iter().map(|p| measure::bytes_local(&p.path(NAME))).collect();
    let uploaded: Vec<String> = lab
        .members
        .iter()
        .map(|(ns, _)| {
            super::netns::uplink(ns).map_or("?".into(), |u| {
                format!("{} ({} packets dropped, {} TCP segments retransmitted)", size(u.sent_bytes), u.dropped, u.retransmitted)
            })
        })
        .collect();
    s.note(format!(
        "what each member's eth0 sent (tc -s qdisc, /proc/net/snmp in its namespace), seeder first: {}",
        uploaded.join(", ")
    ));
    let bound_row = |titorrent: String, ratio: String, met: Met| {
        Row::new("P7", &fig).titorrent(titorrent).reference(format!("{} (fluid bound)", measure::secs(bound))).ratio(ratio).target("≤ 1.5× the bound").met(met)
    };
    if done.iter().any(Option::is_none) {
        let finished = done.iter().filter(|d| d.is_some()).count();
        s.note(format!(
            "not every member was done after {}: {finished} of {n} were; bytes local then: {}",
            measure::secs(deadline),
            have.iter().map(|b| size(*b)).collect::<Vec<_>>().join(", ")
        ));
        s.row(bound_row(
            format!("> {} ({finished}/{n} members done)", measure::secs(deadline)),
            format!("> {:.2}×", deadline.as_secs_f64() / bound_s),
            Met::No,
        ));
        sink.push(s);
        return Ok(());
    }
    let times: Vec<Duration> = done.into_iter().flatten().collect();
    let all = *times.iter().max().expect("at least one peer");
    // Check the bytes on one member.
    let got = std::fs::read(peers[0].path(NAME))?;
    if got != pattern.bytes_at(0, f as usize) {
        return Err(anyhow!("{} read wrong bytes", peers[0].name));
    }
    s.note(format!(
        "the seed writes {NAME} ({}) through its mount and publishes it; once every member sees it, the bench \
         sets the xattr user.titorrent.pin=1 on each member's copy (fetch it all, as `titorrent pin` does) and \
         polls each member's user.titorrent.bytes_local until it is the whole file. Completion per member: {}",
        size(f),
        times.iter().map(|d| measure::secs(*d)).collect::<Vec<_>>().join(", ")
    ));
    s.note(format!(
        "bound: F = {}, N = {n}, u_seed = u_i = {} MiB/s (tbf on each namespace's uplink), downlinks not shaped \
         (d_min = ∞): max(F/u_seed = {:.1} s, N·F/(u_seed+Σu_i) = {:.1} s) = {:.1} s",
        size(f),
        u / MIB,
        fb / us,
        n as f64 * fb / (us + n as f64 * ui),
        bound_s
    ));
    // Where each member's bytes came from, as its daemon logs at completion
    // (at debug level only: without it the lines never come, so the wait
    // for them is short).
    let sources = |p: &Member| {
        let log = p.log_tail(400);
        log.lines().rev().find(|l| l.contains("fetched in the background")).map(|l| l.split("peers=").nth(1).unwrap_or(l).trim().to_string())
    };
    let found = measure::poll(Duration::from_secs(2), Duration::from_millis(50), || {
        let all: Vec<Option<String>> = peers.iter().map(sources).collect();
        all.iter().all(Option::is_some).then_some(all)
    })
    .unwrap_or_else(|| peers.iter().map(sources).collect());
    for (p, from) in peers.iter().zip(found) {
        if let Some(from) = from {
            s.note(format!("{} fetched from: {from}", p.name));
        }
    }
    let ratio = all.as_secs_f64() / bound_s;
    s.row(bound_row(format!("{} (last member done)", measure::secs(all)), format!("{ratio:.2}×"), Met::from_bool(ratio <= 1.5)));
    drop(peers);
    drop(seed);
    drop(tracker);
    drop(lab);
    sink.push(s);
    Ok(())
}

/// "uplink rates per 5 s: seeder 7.9, 8.0, ...; members (mean) 5.1, ..."
/// from cumulative byte counters taken every `every` (the last sample may
/// come sooner; its interval is counted as a whole one).
fn uplink_timeline(samples: &[Vec<u64>], every: Duration) -> String {
    let rate = |i: usize, w: &[Vec<u64>]| w[1].get(i).unwrap_or(&0).saturating_sub(*w[0].get(i).unwrap_or(&0)) as f64 / (1 << 20) as f64 / every.as_secs_f64();
    let seeder: Vec<String> = samples.windows(2).map(|w| format!("{:.1}", rate(0, w))).collect();
    let members: Vec<String> = samples
        .windows(2)
        .map(|w| {
            let n = w[0].len().saturating_sub(1).max(1);
            format!("{:.1}", (1..w[0].len()).map(|i| rate(i, w)).sum::<f64>() / n as f64)
        })
        .collect();
    format!(
        "uplink MiB/s in each {} s since the pins: seeder {}; members (mean) {}",
        every.as_secs(),
        seeder.join(", "),
        members.join(", ")
    )
}

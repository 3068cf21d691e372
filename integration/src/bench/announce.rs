//! P8: announces per second at the tracker. titorrent-tracker answers
//! HTTP announces (BEP 3, compact) on its own port at
//! `/announce/KEY`, KEY being an export key (one info hash, an expiry:
//! `Request::ExportKey`); opentracker is the
//! reference, both under the same wrk load in the same run. Debian builds
//! opentracker as a private tracker (an info hash whitelist): it is given
//! the script's 100,000 info hashes, so that it stores and returns peers
//! instead of refusing every announce. The script announces 1,000
//! info hashes, each exported by the bench's member with its own key.
//!
//! Smoke mode runs no wrk and no opentracker: a few announces with a
//! plain HTTP client of the bench, checking the bencoded replies (two
//! announcers see each other and the exporting member, a bad key is refused).

use super::measure;
use super::report::{Met, Row, Section};
use super::{Ctx, Sink};
use crate::process::Daemon;
use crate::raw::RawConn;
use crate::TrackerProc;
use anyhow::{anyhow, bail, ensure, Context};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use titorrent_tracker::proto::{InfoHash, Request, Response};

/// Info hashes the script announces (each with its own export key).
const INFO_HASHES: u32 = 1000;

/// wrk script: every request announces one of [`INFO_HASHES`] info hashes
/// in turn (and a new peer id), compact, as a started leecher. `PREFIX` is
/// replaced by the announce path, `KEYS` by a Lua list of the info
/// hashes' keys (empty for opentracker), `HEADERS` by a Lua table of
/// headers.
const WRK_SCRIPT: &str = r#"
local prefix = "PREFIX"
local keys = KEYS
local headers = HEADERS
local n = 0
local function enc4(x)
  local s = ""
  for i = 3, 0, -1 do s = s .. string.format("%%%02X", math.floor(x / 256 ^ i) % 256) end
  return s
end
request = function()
  n = n + 1
  local h = (n * 7919) % NIH
  local path = prefix .. (keys[h + 1] or "") .. "?info_hash=" .. string.rep("%AB", 16) .. enc4(h)
    .. "&peer_id=-BN0001-" .. string.rep("%CD", 8) .. enc4(n % 1000000)
    .. "&port=" .. (1024 + n % 60000) .. "&uploaded=0&downloaded=0&left=1000&compact=1&numwant=50&event=started"
  return wrk.format("GET", path, headers)
end
"#;

/// The script's info hashes, as opentracker's whitelist wants them.
fn script_info_hashes() -> String {
    (0..INFO_HASHES).map(|h| format!("{}{h:08x}\n", "ab".repeat(16))).collect()
}

/// The script's info hash number `h`.
fn script_info_hash(h: u32) -> InfoHash {
    let mut ih = [0xab; 20];
    ih[16..].copy_from_slice(&h.to_be_bytes());
    InfoHash(ih)
}

/// The export port of the member that exports every info hash (its IP is
/// its tracker connection's, 127.0.0.1).
const MEMBER_PEER: &str = "127.0.0.1:6881";

pub fn run(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let mut s = Section::new("P8: announces per second at the tracker");
    let row = Row::new("P8", "announces per second at the tracker (wrk, 1,000 exported info hashes)").target("≥ 1.0× opentracker");
    let tracker = TrackerProc::start();
    // The member stays online (this connection) for the whole run; every
    // info hash is exported by it, each with its own key.
    let (mut member, check_key) = member_key(&tracker)?;
    let keys = export_keys(&mut member)?;
    let path = "/announce/".to_string();
    check_replies(tracker.addr(), &check_key).context("announce replies")?;
    s.note(format!(
        "a fresh titorrent-tracker on 127.0.0.1; a group and its member created over the binary protocol (raw \
         client, src/raw.rs), exporting each of the script's {INFO_HASHES} info hashes at {MEMBER_PEER} with its \
         own key (Request::ExportKey); announces go to http://ADDR{} on the tracker's own port. Checked first with \
         the bench's own HTTP client: a bad key gets a failure reason; two announcers of one info hash each get \
         the exporter and the other in compact peers",
        "/announce/KEY"
    ));
    if ctx.smoke {
        s.note("smoke: replies checked; wrk and opentracker not run");
        s.row(row.titorrent("replies checked (smoke)").reference("skipped in smoke: needs opentracker, wrk").met(
            Met::Skipped("skipped in smoke: no rate measured".into()),
        ));
        sink.push(s);
        return Ok(());
    }
    for tool in ["opentracker", "wrk"] {
        if measure::have(tool).is_none() {
            s.note(format!("needs {tool} (`integration/bench-deps.sh`)"));
            s.row(row.met(Met::Skipped(format!("needs {tool}"))));
            sink.push(s);
            return Ok(());
        }
    }
    let dir = tempfile::Builder::new().prefix("titorrent-bench-p8-").tempdir()?;
    let secs = ctx.sizes.p8_duration.as_secs().max(1);
    let tpid = measure::pid_of("titorrent-tracker", &tracker.data_dir()).unwrap_or(0);
    let (ours, cpu) = measure::cpu_during(&[tpid], || wrk(dir.path(), tracker.addr(), &path, &keys, secs, false));
    let ours = ours.context("wrk against titorrent-tracker")?;
    // What wrk got were announces, not refusals.
    check_replies(tracker.addr(), &check_key).context("announce replies after the run")?;
    s.note(format!(
        "titorrent: `{}`: {:.0} requests/s; {}; the tracker used {:.1} CPU seconds ({:.0}% of one core)",
        ours.command,
        ours.rate,
        ours.non2xx,
        cpu[0],
        100.0 * cpu[0] / secs as f64
    ));
    // opentracker closes the connection after every reply; titorrent keeps
    // it open. The same load with a new connection per announce, for the
    // record (not the figure: the load is the same script for both).
    let closing = wrk(dir.path(), tracker.addr(), &path, &keys, secs, true);
    let reference = opentracker(dir.path(), secs, &mut s);
    match (&closing, &reference) {
        (Ok(w), Ok(r)) => s.note(format!(
            "titorrent again, every announce on a new connection (the script sending Connection: close, as \
             opentracker closes anyway): {:.0} requests/s, {:.2}× opentracker; {}",
            w.rate,
            w.rate / r,
            w.non2xx
        )),
        (Ok(w), Err(_)) => s.note(format!("titorrent with Connection: close: {:.0} requests/s; {}", w.rate, w.non2xx)),
        (Err(e), _) => s.note(format!("titorrent with Connection: close failed: {e:#}")),
    }
    let row = row.titorrent(format!("{:.0} /s", ours.rate));
    match reference {
        Ok(r) => {
            let ratio = ours.rate / r;
            s.row(
                row.reference(format!("{r:.0} /s (opentracker)"))
                    .ratio(format!("{ratio:.2}×"))
                    .met(Met::from_bool(ratio >= 1.0)),
            )
        }
        Err(e) => {
            s.note(format!("reference failed: {e:#}"));
            s.row(row.reference(format!("not measured: {e}")).met(Met::Error(format!("no reference: {e}"))))
        }
    }
    sink.push(s);
    Ok(())
}

/// Creates a group and its member; returns its connection (keep it: the
/// member is online while it is open) and its export key for the check's
/// info hash.
fn member_key(tracker: &TrackerProc) -> anyhow::Result<(RawConn, String)> {
    let mut c = RawConn::connect(tracker.addr());
    c.hello();
    let peer_addr = Some(MEMBER_PEER.parse()?);
    match c.request(1, Request::CreateGroup { admin_token: tracker.admin_token(), group_name: "p8".into(), member_name: "m".into(), peer_addr }) {
        Response::Created { .. } => {}
        other => bail!("CreateGroup answered {other:?}"),
    }
    let key = export(&mut c, 2, InfoHash(CHECK_IH))?;
    Ok((c, key))
}

/// The info hash `check_replies` announces.
const CHECK_IH: [u8; 20] = [0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xee, 0xee, 0xee, 0xee];

fn export(c: &mut RawConn, id: u64, info_hash: InfoHash) -> anyhow::Result<String> {
    let port: SocketAddr = MEMBER_PEER.parse()?;
    match c.request(id, Request::ExportKey { info_hash, ttl_ms: 3_600_000, port: port.port() }) {
        Response::AnnounceKey { key, .. } => Ok(key),
        other => bail!("ExportKey answered {other:?}"),
    }
}

/// One export key per script info hash, in order.
fn export_keys(c: &mut RawConn) -> anyhow::Result<Vec<String>> {
    (0..INFO_HASHES).map(|h| export(c, 10 + u64::from(h), script_info_hash(h))).collect()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A wrk run's outcome.
struct Wrk {
    rate: f64,
    non2xx: String,
    command: String,
}

/// `wrk -t2 -c64 -dSECSs` with [`WRK_SCRIPT`] announcing to `path`
/// (asking the server to close after each reply with `close`).
fn wrk(dir: &Path, addr: SocketAddr, path: &str, keys: &[String], secs: u64, close: bool) -> anyhow::Result<Wrk> {
    let script = dir.join(format!("announce-{}{}.lua", addr.port(), if close { "-close" } else { "" }));
    let headers = if close { r#"{["Connection"] = "close"}"# } else { "{}" };
    let lua_keys = format!("{{{}}}", keys.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(","));
    let text = WRK_SCRIPT
        .replace("PREFIX", path)
        .replace("KEYS", &lua_keys)
        .replace("NIH", &INFO_HASHES.to_string())
        .replace("HEADERS", headers);
    std::fs::write(&script, text)?;
    let args = ["-t2".to_string(), "-c64".into(), format!("-d{secs}s"), "-s".into()];
    let url = format!("http://{addr}/announce");
    let out = Command::new("wrk").args(&args).arg(&script).arg(&url).output().context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rate: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk's output: {text}"))?;
    let non2xx = text.lines().find(|l| l.contains("Non-2xx")).map(str::trim).unwrap_or("all responses 2xx").to_string();
    let command = format!(
        "wrk {} announce.lua {url} (the script: prefix {path}{}, each request the next of {INFO_HASHES} info \
         hashes and a new peer id, compact=1, numwant=50, left=1000, event=started)",
        args.join(" "),
        if keys.is_empty() { "" } else { "KEY (the info hash's own)" }
    );
    Ok(Wrk { rate, non2xx, command })
}

fn opentracker(dir: &Path, secs: u64, s: &mut Section) -> anyhow::Result<f64> {
    let data = dir.join("opentracker");
    std::fs::create_dir_all(&data)?;
    // Read after its chroot into `data`: the path is relative to it.
    std::fs::write(data.join("whitelist.txt"), script_info_hashes())?;
    let port = free_port()?;
    let mut cmd = Command::new("opentracker");
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string(), "-P", &port.to_string(), "-w", "whitelist.txt", "-d"])
        .arg(&data);
    let args = format!("opentracker -i 127.0.0.1 -p {port} -P {port} -w whitelist.txt -d DIR");
    let ot = Daemon::spawn("opentracker", cmd, &data, "opentracker");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Up once a whitelisted info hash is accepted (the list loads in the
    // background).
    let first = format!("/announce?info_hash={}%00%00%00%00&port=9000&left=0&compact=1", "%AB".repeat(16));
    measure::poll(Duration::from_secs(30), Duration::from_millis(50), || {
        get(addr, &first).ok().filter(|d| !d.contains_key("failure reason".as_bytes()))
    })
    .ok_or_else(|| {
        anyhow!("opentracker does not accept the whitelisted announces on {addr}: {}", crate::process::tail(&ot.stderr(), 5))
    })?;
    let pid = ot.pid();
    let (res, cpu) = measure::cpu_during(&[pid], || wrk(dir, addr, "/announce", &[], secs, false));
    let _ = ot.terminate(Duration::from_secs(5));
    let r = res?;
    s.note(format!(
        "reference: `{args}` (whitelist: the script's {INFO_HASHES} info hashes; it closes the connection after each \
         reply); `{}`: {:.0} requests/s; {}; opentracker used {:.1} CPU seconds",
        r.command, r.rate, r.non2xx, cpu[0]
    ));
    Ok(r.rate)
}

/// Announces with the bench's own HTTP client and checks the replies.
fn check_replies(addr: SocketAddr, key: &str) -> anyhow::Result<()> {
    let member: SocketAddr = MEMBER_PEER.parse()?;
    let ih = format!("{}{}", "%AB".repeat(16), "%EE%EE%EE%EE");
    let ask = |k: &str, port: u16| get(addr, &format!("/announce/{k}?info_hash={ih}&port={port}&left=0&compact=1"));
    let bad = ask("0123456789abcdef0123456789abcdef", 9001)?;
    ensure!(bad.contains_key("failure reason".as_bytes()), "a bad key was not refused: {bad:?}");
    let first = peers(&ask(key, 9001)?)?;
    ensure!(first.contains(&member), "the member is not in the reply: {first:?}");
    let second = peers(&ask(key, 9002)?)?;
    let want = [member, SocketAddr::from(([127, 0, 0, 1], 9001))];
    ensure!(want.iter().all(|a| second.contains(a)), "the second announcer got {second:?}, not {want:?}");
    let again = peers(&ask(key, 9001)?)?;
    ensure!(again.contains(&SocketAddr::from(([127, 0, 0, 1], 9002))), "the first did not see the second: {again:?}");
    ensure!(!again.contains(&SocketAddr::from(([127, 0, 0, 1], 9001))), "an announcer was given itself");
    Ok(())
}

type Dict = BTreeMap<Vec<u8>, Vec<u8>>;

/// The compact IPv4 peers of a reply.
fn peers(d: &Dict) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(f) = d.get("failure reason".as_bytes()) {
        bail!("refused: {}", String::from_utf8_lossy(f));
    }
    let p = d.get("peers".as_bytes()).ok_or_else(|| anyhow!("no peers in {d:?}"))?;
    ensure!(p.len() % 6 == 0, "peers of {} bytes", p.len());
    Ok(p.chunks(6).map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]])))).collect())
}

/// GET with `Connection: close`; the reply body read as a flat bencoded
/// dictionary (byte strings and integers; an integer is kept as its
/// digits).
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Dict> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("no HTTP reply"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    flat_dict(&raw[end + 4..])
}

fn flat_dict(b: &[u8]) -> anyhow::Result<Dict> {
    let bad = || anyhow!("not a flat bencoded dictionary: {}", String::from_utf8_lossy(b));
    ensure!(b.first() == Some(&b'd') && b.last() == Some(&b'e'), bad());
    let mut i = 1;
    let mut items = Vec::new();
    while i < b.len() - 1 {
        if b[i] == b'i' {
            let end = i + b[i..].iter().position(|c| *c == b'e').ok_or_else(bad)?;
            items.push(b[i + 1..end].to_vec());
            i = end + 1;
        } else {
            let colon = i + b[i..].iter().position(|c| *c == b':').ok_or_else(bad)?;
            let len: usize = std::str::from_utf8(&b[i..colon])?.parse()?;
            ensure!(colon + 1 + len <= b.len(), bad());
            items.push(b[colon + 1..colon + 1 + len].to_vec());
            i = colon + 1 + len;
        }
    }
    ensure!(items.len() % 2 == 0, bad());
    Ok(items.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect())
}

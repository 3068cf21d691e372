//! P8: announces per second at the tracker. titorrent's tracker manager has
//! no announce endpoint: members learn each other's addresses from its
//! member list, and each daemon's peer feed (a BEP 15 UDP tracker on its
//! own loopback, answering every info hash with the member list) serves
//! only its own librqbit session. So titorrent has no figure here; the
//! reference, opentracker under wrk, is still measured so that the report
//! says what an announce endpoint would have to reach.

use super::measure;
use super::report::{Met, Row, Section};
use super::{Ctx, Sink};
use crate::process::Daemon;
use anyhow::{anyhow, bail, Context};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

const NA: &str = "no announce endpoint (peers come from the tracker manager's member list)";

/// wrk script: every request announces a different one of 100,000 info
/// hashes (and peer ids), compact, as a started leecher.
const WRK_SCRIPT: &str = r#"
local n = 0
local function enc4(x)
  local s = ""
  for i = 3, 0, -1 do s = s .. string.format("%%%02X", math.floor(x / 256 ^ i) % 256) end
  return s
end
request = function()
  n = n + 1
  local h = (n * 7919) % 100000
  local path = "/announce?info_hash=" .. string.rep("%AB", 16) .. enc4(h)
    .. "&peer_id=-BN0001-" .. string.rep("%CD", 8) .. enc4(n % 1000000)
    .. "&port=" .. (1024 + n % 60000) .. "&uploaded=0&downloaded=0&left=1000&compact=1&numwant=50&event=started"
  return wrk.format("GET", path)
end
"#;

pub fn run(ctx: &Ctx, sink: &Sink) -> anyhow::Result<()> {
    let mut s = Section::new("P8: announces per second at the tracker");
    s.note(format!("titorrent: not applicable — {NA}. Nothing was faked."));
    let row = Row::new("P8", "announces per second at the tracker (wrk, 100,000 info hashes)")
        .titorrent("not applicable")
        .target("≥ 1.0× opentracker")
        .met(Met::NotApplicable(NA.into()));
    if ctx.smoke {
        s.note("reference skipped in smoke: needs opentracker and wrk");
        s.row(row.reference("skipped in smoke: needs opentracker, wrk"));
        sink.push(s);
        return Ok(());
    }
    match opentracker(ctx, &mut s) {
        Ok(rate) => s.row(row.reference(format!("{rate:.0} /s (opentracker)"))),
        Err(e) => {
            s.note(format!("reference failed: {e:#}"));
            s.row(row.reference(format!("not measured: {e}")))
        }
    }
    sink.push(s);
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn opentracker(ctx: &Ctx, s: &mut Section) -> anyhow::Result<f64> {
    for tool in ["opentracker", "wrk"] {
        if measure::have(tool).is_none() {
            bail!("needs {tool} (`integration/bench-deps.sh`)");
        }
    }
    let dir = tempfile::Builder::new().prefix("titorrent-bench-ot-").tempdir()?;
    let port = free_port()?;
    let mut cmd = Command::new("opentracker");
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string(), "-P", &port.to_string(), "-d"]).arg(dir.path());
    let args = format!("opentracker -i 127.0.0.1 -p {port} -P {port} -d {}", dir.path().display());
    let ot = Daemon::spawn("opentracker", cmd, dir.path(), "opentracker");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    measure::poll(Duration::from_secs(10), Duration::from_millis(20), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    })
    .ok_or_else(|| anyhow!("opentracker does not accept on {addr}: {}", crate::process::tail(&ot.stderr(), 5)))?;
    let script = dir.path().join("announce.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let secs = ctx.sizes.p8_duration.as_secs().max(1);
    let wrk_args = ["-t2", "-c64", &format!("-d{secs}s"), "-s"];
    let out = Command::new("wrk")
        .args(wrk_args)
        .arg(&script)
        .arg(format!("http://{addr}/announce"))
        .output()
        .context("run wrk")?;
    let _ = ot.terminate(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rate: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk's output: {text}"))?;
    let non2xx = text.lines().find(|l| l.contains("Non-2xx")).map(str::trim).unwrap_or("all responses 2xx");
    s.note(format!(
        "reference: `{args}`; `wrk {} {} http://{addr}/announce` (the script: each request a different info \
         hash of 100,000 and a new peer id, compact=1, numwant=50, event=started): {rate:.0} requests/s; {non2xx}",
        wrk_args.join(" "),
        "announce.lua"
    ));
    Ok(rate)
}

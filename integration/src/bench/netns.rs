//! A small lab of network namespaces for P7: one namespace holding a bridge
//! (and the tracker manager), and one per member, each joined to the bridge
//! by a veth pair whose member end is shaped with `tc ... tbf` (its
//! uplink). Addresses are 10.231.0.0/24 and exist only inside these
//! namespaces; nothing is added to the host's own namespace. Dropping the
//! lab deletes every namespace it made (which deletes the veths too).
//!
//! Members ([`super::member::Member`]) run their real daemons through
//! `nsenter --net=` (the network namespace only: their FUSE mounts stay
//! visible to the bench, which reads and writes them from the host).

use crate::bins;
use crate::process::{self, Daemon};
use anyhow::{anyhow, bail, Context};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

const PREFIX: &str = "tbench-";
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);

fn member_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 231, 0, 10 + i as u8)
}

/// Runs a command, failing with its stderr.
fn run(prog: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(prog).args(args).output().with_context(|| format!("cannot run {prog}"))?;
    if !out.status.success() {
        bail!("`{prog} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `nsenter --net=/run/netns/NS PROG`.
pub fn command_in(ns: &str, prog: &Path) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(prog);
    c
}

/// Runs `f` on a thread of its own whose network namespace is `ns` (what
/// a host on that network sees and can do), and returns its result.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{ns}")).with_context(|| format!("network namespace {ns}"))?;
    std::thread::spawn(move || {
        // setns(2) moves the calling thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(anyhow!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow!("the thread in {ns} panicked"))?
}

/// The TCP ports listening in a namespace: (address, port) of each.
pub fn tcp_listeners(ns: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let out = Command::new("ip").args(["netns", "exec", ns, "ss", "-Hltn"]).output().context("cannot run ss")?;
    if !out.status.success() {
        bail!("ss in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // State Recv-Q Send-Q Local-Address:Port Peer-Address:Port
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .map(|a| {
            let a = a.replace('*', "0.0.0.0").replace("%lo", "");
            a.parse::<SocketAddr>().with_context(|| format!("ss printed {a:?}"))
        })
        .collect()
}

pub struct Lab {
    made: Vec<String>,
    pub bridge_ns: String,
    /// (namespace, address) of each member, in order.
    pub members: Vec<(String, Ipv4Addr)>,
    /// The exact commands that built it, for the report.
    pub commands: Vec<String>,
}

impl Lab {
    /// Builds the bridge namespace and `n` member namespaces, each uplink
    /// limited to `uplink` bytes per second.
    pub fn new(n: usize, uplink: u64) -> anyhow::Result<Lab> {
        remove_stale();
        // The pid first (remove_stale reads it), then a counter: tests of
        // one binary run labs side by side.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut lab = Lab { made: Vec::new(), bridge_ns: format!("{PREFIX}{id}-br"), members: Vec::new(), commands: Vec::new() };
        let br = lab.bridge_ns.clone();
        lab.add_ns(&br)?;
        lab.ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        lab.ip(&["-n", &br, "addr", "add", &format!("{BRIDGE_IP}/24"), "dev", "br0"])?;
        lab.ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let bits = (uplink * 8).to_string() + "bit";
        for i in 0..n {
            let ns = format!("{PREFIX}{id}-m{i}");
            lab.add_ns(&ns)?;
            let v = format!("v{i}");
            lab.ip(&["-n", &br, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            lab.ip(&["-n", &br, "link", "set", &v, "master", "br0"])?;
            lab.ip(&["-n", &br, "link", "set", &v, "up"])?;
            let ip = member_ip(i);
            lab.ip(&["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            lab.ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            lab.tc(&["-n", &ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &bits, "burst", "128kb", "latency", "200ms"])?;
            lab.members.push((ns, ip));
        }
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        self.ip(&["netns", "add", ns])?;
        self.made.push(ns.to_string());
        self.ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// Records the commands of the bridge and the first two members only
    /// (the others repeat them).
    fn record(&mut self, cmd: String) {
        if self.members.len() < 2 {
            self.commands.push(cmd);
        }
    }

    fn ip(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.record(format!("ip {}", args.join(" ")));
        run("ip", args)
    }

    fn tc(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.record(format!("tc {}", args.join(" ")));
        run("tc", args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("cannot delete network namespace {ns}: {e}");
            }
        }
    }
}

/// Deletes namespaces an earlier run of the bench left behind (its pid is
/// gone).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// `titorrent-tracker` inside a namespace.
pub struct NsTracker {
    _dir: TempDir,
    pub addr: SocketAddr,
    /// Its admin token's file (what `create-group --admin-token` reads).
    pub admin_token: std::path::PathBuf,
    daemon: Daemon,
}

impl NsTracker {
    pub fn start(ns: &str, ip: Ipv4Addr) -> anyhow::Result<NsTracker> {
        NsTracker::start_with_lease_ttl(ns, ip, None)
    }

    /// Same, passing `--lease-ttl SECS` when given.
    pub fn start_with_lease_ttl(ns: &str, ip: Ipv4Addr, lease_ttl: Option<u64>) -> anyhow::Result<NsTracker> {
        let dir = tempfile::Builder::new().prefix("titorrent-bench-nstracker-").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let mut cmd = command_in(ns, &bins::bin(bins::TRACKER));
        cmd.arg("--listen").arg(format!("{ip}:0")).arg("--data").arg(&data);
        if let Some(ttl) = lease_ttl {
            cmd.arg("--lease-ttl").arg(ttl.to_string());
        }
        let daemon = Daemon::spawn("titorrent-tracker (netns)", cmd, dir.path(), "tracker");
        const LISTENING: &str = "titorrent-tracker listening on ";
        let addr = super::measure::poll(Duration::from_secs(20), Duration::from_millis(20), || {
            daemon.own_stdout().lines().find_map(|l| l.strip_prefix(LISTENING).and_then(|a| a.trim().parse().ok()))
        })
        .ok_or_else(|| anyhow!("the tracker in {ns} did not listen: {}", process::tail(&daemon.stderr(), 10)))?;
        let admin_token = data.join("admin-token");
        Ok(NsTracker { _dir: dir, addr, admin_token, daemon })
    }
}

impl Drop for NsTracker {
    fn drop(&mut self) {
        let _ = self.daemon.terminate(Duration::from_secs(10));
    }
}

/// What went out of a namespace's `eth0`: bytes and packets its tbf qdisc
/// sent and dropped, and the TCP segments the namespace retransmitted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Uplink {
    pub sent_bytes: u64,
    pub dropped: u64,
    pub retransmitted: u64,
}

/// The uplink counters of a namespace (`tc -s qdisc`, `/proc/net/snmp`).
pub fn uplink(ns: &str) -> Option<Uplink> {
    let out = Command::new("tc").args(["-n", ns, "-s", "qdisc", "show", "dev", "eth0"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // " Sent 123 bytes 45 pkt (dropped 6, overlimits 7 requeues 0)"
    let line = text.lines().find(|l| l.trim_start().starts_with("Sent "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let sent_bytes = words.get(1)?.parse().ok()?;
    let dropped = words
        .iter()
        .position(|w| *w == "(dropped")
        .and_then(|i| words.get(i + 1))
        .and_then(|w| w.trim_end_matches(',').parse().ok())
        .unwrap_or(0);
    let snmp = command_in(ns, Path::new("cat")).arg("/proc/net/snmp").output().ok()?;
    Some(Uplink { sent_bytes, dropped, retransmitted: retrans_segs(&String::from_utf8_lossy(&snmp.stdout)).unwrap_or(0) })
}

/// `Tcp: ... RetransSegs ...` of /proc/net/snmp (a header line, then values).
fn retrans_segs(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let i = names.split_whitespace().position(|w| w == "RetransSegs")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn retransmitted_segments_come_from_the_tcp_lines() {
        let snmp = "Ip: Forwarding DefaultTTL\\nIp: 1 64\\n\
                    Tcp: RtoAlgorithm RtoMin ActiveOpens RetransSegs InErrs\\nTcp: 1 200 7 4242 0\\n";
        assert_eq!(super::retrans_segs(&snmp.replace("\\n", "\n")), Some(4242));
        assert_eq!(super::retrans_segs("Ip: a\nIp: 1\n"), None);
    }
}

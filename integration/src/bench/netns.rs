//! A small lab of network namespaces for P7: one namespace holding a bridge
//! (and the tracker manager), and one per member, each joined to the bridge
//! by a veth pair whose member end is shaped with `tc ... tbf` (its
//! uplink). Addresses are 10.231.0.0/24 and exist only inside these
//! namespaces; nothing is added to the host's own namespace. Dropping the
//! lab deletes every namespace it made (which deletes the veths too).
//!
//! Members run their real daemons through `nsenter --net=` (the network
//! namespace only: their FUSE mounts stay visible to the bench, which
//! reads and writes them from the host).

use crate::mounts::{self, FSTYPE};
use crate::process::{self, CliOutput, Daemon};
use crate::scenario::{self, Registered};
use crate::bins;
use anyhow::{anyhow, bail, Context};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
        let pid = std::process::id();
        let mut lab = Lab { made: Vec::new(), bridge_ns: format!("{PREFIX}{pid}-br"), members: Vec::new(), commands: Vec::new() };
        let br = lab.bridge_ns.clone();
        lab.add_ns(&br)?;
        lab.ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        lab.ip(&["-n", &br, "addr", "add", &format!("{BRIDGE_IP}/24"), "dev", "br0"])?;
        lab.ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let bits = (uplink * 8).to_string() + "bit";
        for i in 0..n {
            let ns = format!("{PREFIX}{pid}-m{i}");
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

    fn ip(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.commands.push(format!("ip {}", args.join(" ")));
        run("ip", args)
    }

    fn tc(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.commands.push(format!("tc {}", args.join(" ")));
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
    daemon: Daemon,
}

impl NsTracker {
    pub fn start(ns: &str, ip: Ipv4Addr) -> anyhow::Result<NsTracker> {
        let dir = tempfile::Builder::new().prefix("titorrent-bench-nstracker-").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let mut cmd = command_in(ns, &bins::bin(bins::TRACKER));
        cmd.arg("--listen").arg(format!("{ip}:0")).arg("--data").arg(&data);
        let daemon = Daemon::spawn("titorrent-tracker (netns)", cmd, dir.path(), "tracker");
        const LISTENING: &str = "titorrent-tracker listening on ";
        let addr = super::measure::poll(Duration::from_secs(20), Duration::from_millis(20), || {
            daemon.own_stdout().lines().find_map(|l| l.strip_prefix(LISTENING).and_then(|a| a.trim().parse().ok()))
        })
        .ok_or_else(|| anyhow!("the tracker in {ns} did not listen: {}", process::tail(&daemon.stderr(), 10)))?;
        Ok(NsTracker { _dir: dir, addr, daemon })
    }
}

impl Drop for NsTracker {
    fn drop(&mut self) {
        let _ = self.daemon.terminate(Duration::from_secs(10));
    }
}

/// A member whose CLI and daemon run in a namespace.
pub struct NsMember {
    pub name: String,
    dir: TempDir,
    state: PathBuf,
    mnt: PathBuf,
    ns: String,
    ip: Ipv4Addr,
    daemon: Option<Daemon>,
    _mount_registered: Option<Registered>,
}

impl NsMember {
    fn new(name: &str, ns: &str, ip: Ipv4Addr) -> anyhow::Result<NsMember> {
        let dir = tempfile::Builder::new().prefix(&format!("titorrent-bench-{name}-")).tempdir()?;
        let root = dir.path().canonicalize()?;
        let (state, mnt) = (root.join("state"), root.join("mnt"));
        std::fs::create_dir(&state)?;
        std::fs::create_dir(&mnt)?;
        std::fs::write(root.join("config.toml"), "# titorrent-bench: defaults only\n")?;
        Ok(NsMember { name: name.into(), dir, state, mnt, ns: ns.into(), ip, daemon: None, _mount_registered: None })
    }

    fn command(&self) -> Command {
        let mut c = command_in(&self.ns, &bins::bin(bins::TITORRENT));
        c.env("TITORRENT_CONFIG", self.dir.path().join("config.toml")).env_remove("TITORRENT_STATE");
        c
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let mut c = self.command();
        c.args(args);
        let out = process::run(&mut c, Duration::from_secs(60));
        if !out.status.success() {
            bail!("`titorrent {}` for {} failed: {}", args.join(" "), self.name, out.stderr.trim());
        }
        Ok(out)
    }

    pub fn create_group(name: &str, ns: &str, ip: Ipv4Addr, tracker: SocketAddr) -> anyhow::Result<NsMember> {
        let m = NsMember::new(name, ns, ip)?;
        let state = m.state.to_string_lossy().to_string();
        m.cli(&["create-group", "--tracker", &tracker.to_string(), "--group", "p7", "--member", name, "--state", &state])?;
        Ok(m)
    }

    pub fn invite(&self) -> anyhow::Result<String> {
        let state = self.state.to_string_lossy().to_string();
        let out = self.cli(&["invite", "--state", &state])?;
        out.stdout.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string).ok_or_else(|| anyhow!("`titorrent invite` printed nothing"))
    }

    pub fn join(name: &str, ns: &str, ip: Ipv4Addr, invite: &str) -> anyhow::Result<NsMember> {
        let m = NsMember::new(name, ns, ip)?;
        let state = m.state.to_string_lossy().to_string();
        m.cli(&["join", invite, "--member", name, "--state", &state])?;
        Ok(m)
    }

    /// `titorrent mount MNT --state DIR --listen IP:0` in the namespace;
    /// waits until it is mounted and says so.
    pub fn mount(&mut self) -> anyhow::Result<()> {
        let mut c = self.command();
        c.arg("mount").arg(&self.mnt).arg("--state").arg(&self.state).arg("--listen").arg(format!("{}:0", self.ip));
        let d = Daemon::spawn(&format!("{} (netns mount)", self.name), c, self.dir.path(), "mount");
        self._mount_registered = Some(scenario::register_mount(self.mnt.clone()));
        let ready = format!("mounted {}", self.mnt.display());
        let ok = super::measure::poll(Duration::from_secs(30), Duration::from_millis(20), || {
            let shown = mounts::find(&self.mnt).is_some_and(|m| m.fstype == FSTYPE);
            (shown && d.own_stdout().lines().any(|l| l.trim() == ready)).then_some(())
        });
        let tail = process::tail(&d.stderr(), 10);
        self.daemon = Some(d);
        ok.ok_or_else(|| anyhow!("{}'s mount in {} did not come up: {tail}", self.name, self.ns))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn log_tail(&self, n: usize) -> String {
        process::tail(&process::read_lossy(&self.dir.path().join("mount.stderr")), n)
    }
}

impl Drop for NsMember {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            if d.terminate(Duration::from_secs(30)).is_err() {
                eprintln!("{}'s daemon did not stop on SIGTERM; killed it", self.name);
            }
        }
        if mounts::find(&self.mnt).is_some() {
            mounts::force_unmount(&self.mnt);
        }
    }
}

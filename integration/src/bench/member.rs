//! A member the bench drives itself, for what the harness's `Peer` does
//! not offer: a configuration file of the bench's choosing (an on-demand
//! member for P2/P3, whatever the default replication is) and daemons run
//! inside a network namespace (P7).

use super::netns::command_in;
use crate::bins;
use crate::mounts::{self, FSTYPE};
use crate::process::{self, CliOutput, Daemon};
use crate::scenario::{self, Registered};
use anyhow::{anyhow, bail};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// titorrent.conf(5) of a member that fetches only what is read or pinned.
pub const ON_DEMAND: &str = "replication = \"on-demand\"\n";
/// titorrent.conf(5) with nothing set: the build's defaults.
pub const DEFAULTS: &str = "# titorrent-bench: defaults only\n";

/// A member whose CLI and daemon run in a network namespace, or in the
/// bench's own when `ns` is `None`.
pub struct Member {
    pub name: String,
    dir: TempDir,
    state: PathBuf,
    mnt: PathBuf,
    ns: Option<String>,
    ip: IpAddr,
    daemon: Option<Daemon>,
    _mount_registered: Option<Registered>,
}

impl Member {
    fn new(name: &str, ns: Option<&str>, ip: IpAddr, config: &str) -> anyhow::Result<Member> {
        let dir = tempfile::Builder::new().prefix(&format!("titorrent-bench-{name}-")).tempdir()?;
        let root = dir.path().canonicalize()?;
        let (state, mnt) = (root.join("state"), root.join("mnt"));
        std::fs::create_dir(&state)?;
        std::fs::create_dir(&mnt)?;
        std::fs::write(root.join("config.toml"), config)?;
        Ok(Member { name: name.into(), dir, state, mnt, ns: ns.map(str::to_string), ip, daemon: None, _mount_registered: None })
    }

    fn command(&self) -> Command {
        let bin = bins::bin(bins::TITORRENT);
        let mut c = match &self.ns {
            Some(ns) => command_in(ns, &bin),
            None => Command::new(bin),
        };
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

    /// `admin_token`: the tracker's admin token file.
    pub fn create_group(
        name: &str,
        ns: Option<&str>,
        ip: IpAddr,
        tracker: SocketAddr,
        admin_token: &std::path::Path,
        config: &str,
    ) -> anyhow::Result<Member> {
        let m = Member::new(name, ns, ip, config)?;
        let state = m.state.to_string_lossy().to_string();
        let token = admin_token.to_string_lossy().to_string();
        let tracker = tracker.to_string();
        let args = ["create-group", "--tracker", &tracker, "--admin-token", &token, "--group", "p7", "--member", name, "--state", &state];
        m.cli(&args)?;
        Ok(m)
    }

    pub fn invite(&self) -> anyhow::Result<String> {
        let state = self.state.to_string_lossy().to_string();
        let out = self.cli(&["invite", "--state", &state])?;
        out.stdout.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string).ok_or_else(|| anyhow!("`titorrent invite` printed nothing"))
    }

    pub fn join(name: &str, ns: Option<&str>, ip: IpAddr, invite: &str, config: &str) -> anyhow::Result<Member> {
        let m = Member::new(name, ns, ip, config)?;
        let state = m.state.to_string_lossy().to_string();
        m.cli(&["join", invite, "--member", name, "--state", &state])?;
        Ok(m)
    }

    /// `titorrent mount MNT --state DIR --listen IP:0` (in the namespace);
    /// waits until it is mounted and says so.
    pub fn mount(&mut self) -> anyhow::Result<()> {
        let mut c = self.command();
        c.arg("mount").arg(&self.mnt).arg("--state").arg(&self.state).arg("--listen").arg(format!("{}:0", self.ip));
        let d = Daemon::spawn(&format!("{} (bench mount)", self.name), c, self.dir.path(), "mount");
        self._mount_registered = Some(scenario::register_mount(self.mnt.clone()));
        let ready = format!("mounted {}", self.mnt.display());
        let ok = super::measure::poll(Duration::from_secs(30), Duration::from_millis(20), || {
            let shown = mounts::find(&self.mnt).is_some_and(|m| m.fstype == FSTYPE);
            (shown && d.own_stdout().lines().any(|l| l.trim() == ready)).then_some(())
        });
        let tail = process::tail(&d.stderr(), 10);
        self.daemon = Some(d);
        ok.ok_or_else(|| anyhow!("{}'s mount ({:?}) did not come up: {tail}", self.name, self.ns))
    }

    /// Runs `titorrent ARGS --state STATE` as this member (in its
    /// namespace); its stdout, or why it failed.
    pub fn titorrent(&self, args: &[&str]) -> anyhow::Result<String> {
        let state = self.state.to_string_lossy().to_string();
        let mut all = args.to_vec();
        all.extend(["--state", state.as_str()]);
        Ok(self.cli(&all)?.stdout)
    }

    /// Its state directory (membership, key).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mnt
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The mount daemon's whole log (its stderr).
    pub fn log(&self) -> String {
        process::read_lossy(&self.dir.path().join("mount.stderr"))
    }

    pub fn log_tail(&self, n: usize) -> String {
        process::tail(&process::read_lossy(&self.dir.path().join("mount.stderr")), n)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            if d.terminate(Duration::from_secs(30)).is_err() {
                eprintln!("{}'s daemon did not stop on SIGTERM; killed it", self.name);
            }
        }
        // TITORRENT_BENCH_LOGS=DIR keeps each member's daemon log as DIR/NAME.log.
        if let Some(keep) = std::env::var_os("TITORRENT_BENCH_LOGS") {
            let to = Path::new(&keep).join(format!("{}.log", self.name));
            if let Err(e) = std::fs::create_dir_all(&keep).and_then(|()| std::fs::copy(self.dir.path().join("mount.stderr"), &to)) {
                eprintln!("could not keep {}'s log as {}: {e}", self.name, to.display());
            }
        }
        if mounts::find(&self.mnt).is_some() {
            mounts::force_unmount(&self.mnt);
        }
    }
}


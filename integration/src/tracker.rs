//! A real `titorrent-tracker` process on loopback with its own data dir.

use crate::bins;
use crate::process::{self, Daemon};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// How long a tracker may take to print its "listening on" line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
const LISTENING: &str = "titorrent-tracker listening on ";
const KEY: &str = "titorrent-tracker key fingerprint ";

pub struct TrackerProc {
    dir: TempDir,
    addr: SocketAddr,
    /// The fingerprint of its key, as it printed it (64 hex digits).
    key: String,
    lease_ttl: Option<u64>,
    daemon: Option<Daemon>,
}

impl TrackerProc {
    /// Starts a tracker on 127.0.0.1, port 0, with a fresh data dir.
    pub fn start() -> TrackerProc {
        TrackerProc::start_with_lease_ttl(None)
    }

    /// Same, passing `--lease-ttl SECS` when given.
    pub fn start_with_lease_ttl(lease_ttl: Option<u64>) -> TrackerProc {
        let dir = tempfile::Builder::new()
            .prefix("titorrent-tracker-")
            .tempdir()
            .expect("cannot create the tracker's temp dir");
        std::fs::create_dir(dir.path().join("data")).expect("cannot create the tracker's data dir");
        let mut t = TrackerProc {
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            key: String::new(),
            lease_ttl,
            daemon: None,
        };
        t.spawn();
        t
    }

    /// Where the tracker listens (never port 0 once started).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fingerprint of the tracker's key (what invitations carry).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The file holding its admin token (made at its first start), what
    /// `titorrent create-group --admin-token` reads.
    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir().join("admin-token")
    }

    /// The admin token itself (for raw-protocol clients).
    pub fn admin_token(&self) -> String {
        let p = self.admin_token_file();
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display())).trim().to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn is_running(&self) -> bool {
        self.daemon.as_ref().is_some_and(|d| d.exited().is_none())
    }

    /// SIGKILL, as a crash or power cut would: nothing gets to flush.
    pub fn kill9(&mut self) {
        if let Some(d) = &self.daemon {
            d.kill9();
        }
        self.check_no_panic();
    }

    /// SIGTERM, waiting for the exit; SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(d) = &self.daemon {
            if let Err(e) = d.terminate(Duration::from_secs(10)) {
                panic!("{e}\n{}", process::tail(&d.stderr(), 40));
            }
        }
        self.check_no_panic();
    }

    /// Starts the tracker again on the same data dir and the same port
    /// (killing it first if it still runs).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.kill9();
        }
        self.spawn();
    }

    /// All the tracker's stderr (its log) since the first start.
    pub fn log(&self) -> String {
        process::read_lossy(&self.dir.path().join("tracker.stderr"))
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(bins::bin(bins::TRACKER));
        cmd.arg("--listen").arg(self.addr.to_string()).arg("--data").arg(self.data_dir());
        if let Some(ttl) = self.lease_ttl {
            cmd.arg("--lease-ttl").arg(ttl.to_string());
        }
        let daemon = Daemon::spawn("titorrent-tracker", cmd, self.dir.path(), "tracker");
        let addr = crate::wait_for(START_TIMEOUT, "the tracker to print its listening address", || {
            if let Some(line) = daemon.own_stdout().lines().find(|l| l.starts_with(LISTENING)) {
                return match line[LISTENING.len()..].trim().parse::<SocketAddr>() {
                    Ok(addr) => Ok(addr),
                    Err(e) => panic!("tracker printed {line:?}: not an address: {e}"),
                };
            }
            if let Some(st) = daemon.exited() {
                panic!(
                    "the tracker exited ({st}) before listening:\n{}",
                    process::tail(&daemon.stderr(), 40)
                );
            }
            Err(format!("stdout so far: {:?}", daemon.own_stdout()))
        });
        if self.addr.port() != 0 && addr != self.addr {
            panic!("restarted tracker listens on {addr}, asked for {}", self.addr);
        }
        // Printed before the listening line.
        let out = daemon.own_stdout();
        let key = out.lines().find_map(|l| l.strip_prefix(KEY)).map(|k| k.trim().to_string());
        self.key = key.unwrap_or_else(|| panic!("the tracker printed no {KEY:?} line:\n{out}"));
        self.addr = addr;
        self.daemon = Some(daemon);
    }

    fn check_no_panic(&self) {
        if let Some(p) = self.daemon.as_ref().and_then(Daemon::find_panic) {
            if !std::thread::panicking() {
                panic!("the tracker panicked:\n{p}");
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TrackerProc {
    fn drop(&mut self) {
        let Some(d) = &self.daemon else { return };
        let stopped = d.terminate(Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("--- tracker log (last lines) ---\n{}", process::tail(&self.log(), 60));
            return;
        }
        if let Some(p) = d.find_panic() {
            panic!("the tracker panicked:\n{p}");
        }
        if let Err(e) = stopped {
            panic!("{e}\n{}", process::tail(&self.log(), 40));
        }
    }
}

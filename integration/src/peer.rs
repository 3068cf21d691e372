//! One member of a group: its state dir, its mountpoint and, while mounted,
//! its real `titorrent mount` daemon.

use crate::bins;
use crate::mounts::{self, FSTYPE};
use crate::process::{self, CliOutput, Daemon};
use crate::scenario::{self, Registered};
use crate::tracker::TrackerProc;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// How long a mount may take to show up and say it is ready.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon may take to finish its publishes and exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a one-shot CLI command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of `titorrent members`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberLine {
    pub name: String,
    pub online: bool,
    /// As printed (an address, or whatever the CLI prints for none).
    pub addr: String,
}

pub struct Peer {
    name: String,
    dir: TempDir,
    state: PathBuf,
    mnt: PathBuf,
    tracker: Option<SocketAddr>,
    daemon: Option<Daemon>,
    mount_registered: Option<Registered>,
}

/// How a mount daemon is asked to stop.
enum Stop {
    Signal(libc::c_int),
    UnmountCli,
}

impl Peer {
    fn new(name: &str, tracker: Option<SocketAddr>) -> Peer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("titorrent-{name}-"))
            .tempdir()
            .expect("cannot create a peer's temp dir");
        // Canonical, so it compares equal to what mountinfo shows.
        let root = dir.path().canonicalize().expect("cannot canonicalize the temp dir");
        let (state, mnt) = (root.join("state"), root.join("mnt"));
        for d in [&state, &mnt] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        }
        Peer { name: name.to_string(), dir, state, mnt, tracker, daemon: None, mount_registered: None }
    }

    /// `titorrent create-group`: a new group on `tracker` whose first
    /// member is `member`. Not mounted yet.
    pub fn create_group(tracker: &TrackerProc, member: &str) -> Peer {
        Peer::create_group_via(tracker, tracker.addr(), member)
    }

    /// Same, but the member reaches the tracker at `addr` (a proxy in
    /// front of it, say): the membership, and so every invite it makes,
    /// names `addr`.
    pub fn create_group_via(tracker: &TrackerProc, addr: SocketAddr, member: &str) -> Peer {
        let p = Peer::new(member, Some(addr));
        let group = format!("{member}-group");
        p.cli_ok(
            "create-group",
            [
                OsStr::new("create-group"),
                "--tracker".as_ref(),
                addr.to_string().as_ref(),
                "--admin-token".as_ref(),
                tracker.admin_token_file().as_os_str(),
                "--group".as_ref(),
                group.as_ref(),
                "--member".as_ref(),
                member.as_ref(),
                "--state".as_ref(),
                p.state.as_os_str(),
            ],
        );
        p
    }

    /// `titorrent invite` on `inviter`, then `titorrent join` as `member`.
    /// Not mounted yet.
    pub fn join(tracker: &TrackerProc, inviter: &Peer, member: &str) -> Peer {
        let invite = inviter.invite();
        Peer::join_with_invite(Some(tracker.addr()), &invite, member)
    }

    /// `titorrent join INVITE --member NAME`.
    pub fn join_with_invite(tracker: Option<SocketAddr>, invite: &str, member: &str) -> Peer {
        let p = Peer::new(member, tracker);
        p.cli_ok(
            "join",
            [
                OsStr::new("join"),
                invite.as_ref(),
                "--member".as_ref(),
                member.as_ref(),
                "--state".as_ref(),
                p.state.as_os_str(),
            ],
        );
        p
    }

    /// `titorrent up MOUNTPOINT --state DIR --listen 127.0.0.1:0
    /// --tracker-listen 127.0.0.1:0`: embedded tracker, new group, mount,
    /// all in one daemon. Waits for the mount.
    pub fn up(name: &str) -> Peer {
        let mut p = Peer::new(name, None);
        // Not the default 0.0.0.0:7070: tests run side by side.
        p.spawn_daemon("up", &["--tracker-listen", "127.0.0.1:0"], false);
        p
    }

    /// The join command `titorrent up` printed for a second machine:
    /// the invite argument of its `titorrent join` line.
    pub fn up_invite(&self) -> String {
        let out = self.daemon.as_ref().map(Daemon::own_stdout).unwrap_or_default();
        let line = out
            .lines()
            .find(|l| l.contains("titorrent join "))
            .unwrap_or_else(|| panic!("`titorrent up` printed no `titorrent join` line; stdout:\n{out}"));
        let after = line.split("titorrent join ").nth(1).unwrap_or_default();
        let invite = after.split_whitespace().next().unwrap_or_default();
        invite.trim_matches(|c| c == '\'' || c == '"').to_string()
    }

    /// `titorrent invite`: a fresh single-use invite to this member's group.
    pub fn invite(&self) -> String {
        self.invite_with(&[])
    }

    /// `titorrent invite` with extra flags (`--ttl`, `--uses`).
    pub fn invite_with(&self, extra: &[&str]) -> String {
        let mut args = vec![OsStr::new("invite"), "--state".as_ref(), self.state.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        let out = self.cli_ok("invite", args);
        let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        match lines.as_slice() {
            [one] => one.trim().to_string(),
            _ => panic!("`titorrent invite` must print exactly one line, printed:\n{}", out.stdout),
        }
    }

    /// `titorrent members` from this member's state dir.
    pub fn members(&self) -> Vec<MemberLine> {
        let out = self.cli_ok("members", [OsStr::new("members"), "--state".as_ref(), self.state.as_os_str()]);
        out.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut f = l.split_whitespace();
                let (name, status) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
                let online = match status {
                    "online" => true,
                    "offline" => false,
                    _ => panic!("`titorrent members` line {l:?} is not `NAME  online|offline  ADDR`"),
                };
                MemberLine { name: name.to_string(), online, addr: f.collect::<Vec<_>>().join(" ") }
            })
            .collect()
    }

    /// Mounts (`titorrent mount MNT --state DIR --listen 127.0.0.1:0`) and
    /// waits until the mount shows in mountinfo and the daemon says ready.
    pub fn mount(&mut self) -> &mut Peer {
        self.mount_with(&[])
    }

    /// Same, with extra flags for `titorrent mount` (`--upload-limit N`).
    pub fn mount_with(&mut self, extra: &[&str]) -> &mut Peer {
        self.spawn_daemon("mount", extra, true);
        self
    }

    fn spawn_daemon(&mut self, sub: &str, extra: &[&str], says_mounted: bool) {
        crate::require_fuse();
        assert!(self.daemon.is_none(), "{} is already mounted", self.name);
        let mut cmd = self.command();
        cmd.arg(sub)
            .arg(&self.mnt)
            .arg("--state")
            .arg(&self.state)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra);
        let daemon = Daemon::spawn(&format!("{} ({sub})", self.name), cmd, self.dir.path(), "mount");
        // Registered before it shows, so that a scenario timeout cleans it up.
        self.mount_registered = Some(scenario::register_mount(self.mnt.clone()));
        let ready_line = format!("mounted {}", self.mnt.display());
        let mnt = self.mnt.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::wait_for(MOUNT_TIMEOUT, &format!("{}'s mount at {}", self.name, mnt.display()), || {
                if let Some(st) = daemon.exited() {
                    panic!(
                        "`titorrent {sub}` for {} exited ({st}) before mounting:\n{}",
                        self.name,
                        process::tail(&daemon.stderr(), 40)
                    );
                }
                let entry = mounts::find(&mnt);
                let shown = entry.as_ref().is_some_and(|m| m.fstype == FSTYPE);
                let said = !says_mounted || daemon.own_stdout().lines().any(|l| l.trim() == ready_line);
                if shown && said {
                    Ok(())
                } else {
                    Err(format!(
                        "mountinfo: {entry:?}; stdout has {ready_line:?}: {said}; stderr tail:\n{}",
                        process::tail(&daemon.stderr(), 10)
                    ))
                }
            })
        }));
        self.daemon = Some(daemon);
        if let Err(panic) = result {
            let problems = self.shutdown(Stop::Signal(libc::SIGKILL));
            eprintln!("cleaning up after a failed mount: {problems:?}");
            std::panic::resume_unwind(panic);
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mnt
    }

    /// `rel` inside the mount.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The tracker this peer was made with (none for `up`).
    pub fn tracker(&self) -> Option<SocketAddr> {
        self.tracker
    }

    /// The mount daemon's pid while mounted (for its CPU time in /proc).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|d| d.pid())
    }

    pub fn is_mounted(&self) -> bool {
        self.daemon.is_some()
    }

    /// The mount daemon's log (stderr) over all its mounts so far.
    pub fn log(&self) -> String {
        process::read_lossy(&self.log_path())
    }

    /// A mark in the log: pass it to [`Peer::log_since`].
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0)
    }

    /// What the daemon logged after `mark`.
    pub fn log_since(&self, mark: u64) -> String {
        process::read_from(&self.log_path(), mark)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mount.stderr")
    }

    /// Bytes the cache under `STATE/cache` holds on disk (st_blocks, so the
    /// holes of sparse files do not count).
    pub fn cache_bytes_on_disk(&self) -> u64 {
        crate::bytes_on_disk(&self.state.join("cache"))
    }

    /// Replaces this peer's titorrent.conf(5) (read when it next mounts).
    pub fn set_config(&self, toml: &str) {
        let config = self.dir.path().join("config.toml");
        std::fs::write(&config, toml).unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
    }

    /// `titorrent`, isolated from the machine's own configuration: an empty
    /// config file of this peer's (root would read /etc/titorrent), and no
    /// `TITORRENT_STATE` from the caller's environment.
    fn command(&self) -> Command {
        let config = self.dir.path().join("config.toml");
        if !config.exists() {
            std::fs::write(&config, "# titorrent-integration: defaults only\n")
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        }
        let mut cmd = Command::new(bins::bin(bins::TITORRENT));
        cmd.env("TITORRENT_CONFIG", config).env_remove("TITORRENT_STATE");
        cmd
    }

    /// Runs `titorrent ARGS` (environment as for the daemon), any status.
    pub fn cli<I, S>(&self, args: I) -> CliOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args);
        process::run(&mut cmd, CLI_TIMEOUT)
    }

    fn cli_ok<I, S>(&self, what: &str, args: I) -> CliOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cli(args).ok(&format!("`titorrent {what}` for {}", self.name))
    }

    /// `titorrent unmount MNT`; asserts the daemon then exits 0 and the
    /// mount is gone.
    pub fn unmount(&mut self) {
        self.stop_with(Stop::UnmountCli);
    }

    /// SIGTERM; asserts the daemon finishes, unmounts and exits 0.
    pub fn stop(&mut self) {
        self.stop_with(Stop::Signal(libc::SIGTERM));
    }

    /// Sends `sig` to the mount daemon (SIGSTOP and SIGCONT pause it);
    /// false when it is not running.
    pub fn signal(&self, sig: libc::c_int) -> bool {
        self.daemon.as_ref().is_some_and(|d| d.signal(sig))
    }

    /// SIGKILL, as a crash would; then cleans up the dead mount.
    pub fn kill9(&mut self) {
        let problems = self.shutdown(Stop::Signal(libc::SIGKILL));
        // Only panics count: a killed daemon neither exits 0 nor unmounts.
        if let Some(p) = problems.iter().find(|p| p.contains("panicked at")) {
            panic!("{p}");
        }
    }

    fn stop_with(&mut self, how: Stop) {
        let problems = self.shutdown(how);
        if !problems.is_empty() {
            panic!("stopping {}'s mount: {}\n--- log tail ---\n{}", self.name, problems.join("; "), process::tail(&self.log(), 40));
        }
    }

    /// Stops the daemon if any; cleans up the mount whatever happened.
    /// Returns what went wrong (empty when all was as the contract says).
    fn shutdown(&mut self, how: Stop) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(daemon) = self.daemon.take() else {
            return problems;
        };
        let status = match how {
            Stop::Signal(libc::SIGKILL) => Ok(daemon.kill9()),
            Stop::Signal(sig) => {
                daemon.signal(sig);
                daemon.wait_exit(STOP_TIMEOUT).ok_or("no exit")
            }
            Stop::UnmountCli => {
                let out = self.cli([OsStr::new("unmount"), self.mnt.as_os_str()]);
                if !out.status.success() {
                    problems.push(format!("`titorrent unmount` failed ({}): {}", out.status, out.stderr.trim()));
                }
                daemon.wait_exit(STOP_TIMEOUT).ok_or("no exit")
            }
        };
        match status {
            Ok(st) if st.success() => {}
            Ok(_) if matches!(how, Stop::Signal(libc::SIGKILL)) => {}
            Ok(st) => problems.push(format!("the mount daemon exited with {st}, expected 0")),
            Err(_) => {
                daemon.kill9();
                problems.push(format!("the mount daemon did not exit within {STOP_TIMEOUT:?}; killed it"));
            }
        }
        if mounts::find(&self.mnt).is_some() {
            if !matches!(how, Stop::Signal(libc::SIGKILL)) {
                problems.push(format!("{} was still mounted after the daemon exited", self.mnt.display()));
            }
            if !mounts::force_unmount(&self.mnt) {
                problems.push(format!("could not unmount {} even lazily", self.mnt.display()));
            }
        }
        if let Some(p) = daemon.find_panic() {
            problems.push(format!("{}'s mount daemon panicked:\n{p}", self.name));
        }
        self.mount_registered = None;
        problems
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let problems = self.shutdown(Stop::Signal(libc::SIGTERM));
        if std::thread::panicking() {
            eprintln!(
                "--- {}'s mount log (last lines; problems stopping it: {problems:?}) ---\n{}",
                self.name,
                process::tail(&self.log(), 60)
            );
        } else if !problems.is_empty() {
            panic!("stopping {}'s mount: {}\n--- log tail ---\n{}", self.name, problems.join("; "), process::tail(&self.log(), 40));
        }
    }
}

/// A tracker, a group created by alice, bob joined; both mounted. Fails
/// (never skips) without FUSE.
pub fn alice_and_bob() -> (TrackerProc, Peer, Peer) {
    crate::require_fuse();
    let tracker = TrackerProc::start();
    let mut alice = Peer::create_group(&tracker, "alice");
    let mut bob = Peer::join(&tracker, &alice, "bob");
    alice.mount();
    bob.mount();
    (tracker, alice, bob)
}

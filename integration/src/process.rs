//! Child processes: long-running daemons whose output goes to log files,
//! and short CLI commands run to completion under a deadline.

use crate::scenario::{self, Registered};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `RUST_LOG` given to the processes under test, unless the caller's
/// environment sets one.
pub fn rust_log() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string())
}

/// A long-running child whose stdout and stderr are appended to
/// `<stem>.stdout` and `<stem>.stderr`. Respawning with the same stem keeps
/// the earlier output, after a marker line.
pub struct Daemon {
    name: String,
    child: Arc<Mutex<Child>>,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Length of the stdout file when this process started.
    stdout_start: u64,
    _registered: Registered,
}

impl Daemon {
    /// Spawns `cmd` (stdin closed, `RUST_LOG` and `RUST_BACKTRACE=1` set).
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path, stem: &str) -> Daemon {
        let stdout = log_dir.join(format!("{stem}.stdout"));
        let stderr = log_dir.join(format!("{stem}.stderr"));
        let stdout_start = std::fs::metadata(&stdout).map(|m| m.len()).unwrap_or(0);
        let mut err_file = append(&stderr);
        let _ = writeln!(err_file, "=== harness: starting {name}: {cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(append(&stdout))
            .stderr(err_file)
            .env("RUST_LOG", rust_log())
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let child = Arc::new(Mutex::new(child));
        let registered = scenario::register_process(name, &child, stderr.clone());
        Daemon { name: name.to_string(), child, stdout, stderr, stdout_start, _registered: registered }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn exited(&self) -> Option<ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// Sends `sig` unless the process was already reaped (so a reused pid
    /// is never signalled). Returns whether it was sent.
    pub fn signal(&self, sig: libc::c_int) -> bool {
        let mut child = self.lock();
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) == 0 }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(crate::wait::POLL);
        }
    }

    /// SIGTERM, then waits up to `timeout`; SIGKILL if it is still running.
    /// `Ok` with the status of a graceful exit, `Err` if it had to be killed.
    pub fn terminate(&self, timeout: Duration) -> Result<ExitStatus, String> {
        self.signal(libc::SIGTERM);
        match self.wait_exit(timeout) {
            Some(st) => Ok(st),
            None => {
                self.kill9();
                Err(format!("{} did not exit within {timeout:?} of SIGTERM; killed it", self.name))
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&self) -> ExitStatus {
        let mut child = self.lock();
        let _ = child.kill();
        child.wait().expect("cannot reap a killed child")
    }

    /// Everything the process (and earlier ones with the same stem) wrote.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// What this process wrote on stdout (not earlier ones with this stem).
    pub fn own_stdout(&self) -> String {
        read_from(&self.stdout, self.stdout_start)
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// The first panic found in either log, with the lines after it.
    pub fn find_panic(&self) -> Option<String> {
        find_panic(&self.stderr()).or_else(|| find_panic(&self.stdout()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Owners stop their daemons gracefully first; this is the backstop.
        if self.exited().is_none() {
            self.kill9();
        }
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open log {}: {e}", path.display()))
}

/// The file's contents, invalid UTF-8 replaced; empty if it does not exist.
pub fn read_lossy(path: &Path) -> String {
    read_from(path, 0)
}

/// The file's contents from byte `offset` on.
pub fn read_from(path: &Path, offset: u64) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The first Rust panic message in `text`, with up to 20 following lines.
pub fn find_panic(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let i = lines.iter().position(|l| l.contains("panicked at"))?;
    Some(lines[i..lines.len().min(i + 20)].join("\n"))
}

/// What a finished CLI command printed.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics, showing the output, unless the command exited 0.
    pub fn ok(self, what: &str) -> CliOutput {
        if !self.status.success() {
            panic!("{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr);
        }
        self
    }
}

/// Runs `cmd` to completion (stdin closed), killing it and panicking if it
/// takes longer than `timeout`. Panics if it panicked, whatever its status.
pub fn run(cmd: &mut Command, timeout: Duration) -> CliOutput {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", rust_log())
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(crate::wait::POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let (o, e) = (join(out), join(err));
                panic!("{cmd:?} did not finish within {timeout:?}; killed it\n--- stdout ---\n{o}\n--- stderr ---\n{e}");
            }
            Err(e) => panic!("cannot wait for {cmd:?}: {e}"),
        }
    };
    let output = CliOutput { status, stdout: join(out), stderr: join(err) };
    if let Some(p) = find_panic(&output.stderr) {
        panic!("{cmd:?} panicked:\n{p}");
    }
    output
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join(h: std::thread::JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_panic_and_what_follows() {
        let log = "INFO start\nthread 'main' panicked at src/x.rs:1:2:\nboom\nnote: backtrace";
        let p = find_panic(log).unwrap();
        assert!(p.starts_with("thread 'main' panicked at") && p.contains("boom"), "{p}");
        assert!(find_panic("all good\n").is_none());
    }

    #[test]
    fn run_captures_output_and_status() {
        let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn run_kills_a_command_past_its_deadline() {
        let r = std::panic::catch_unwind(|| run(Command::new("sleep").arg("30"), Duration::from_millis(200)));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("did not finish"), "{msg}");
    }

    #[test]
    fn daemon_terminates_and_keeps_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo ready; trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done"]);
        let d = Daemon::spawn("sh", cmd, dir.path(), "sh");
        crate::wait_until(Duration::from_secs(10), "sh says ready", || d.own_stdout().contains("ready"));
        let st = d.terminate(Duration::from_secs(10)).unwrap();
        assert!(st.success(), "{st}");
        assert!(d.stdout().contains("bye"));
        assert!(!d.signal(libc::SIGTERM), "a reaped child is never signalled");
    }
}

//! Measuring helpers: percentiles, sequential reads with a cap, dropping
//! the page cache, the mount's xattrs, and a process's memory and sockets.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Read size of every sequential read (what `dd bs=1M` does).
pub const READ_BUF: usize = 1 << 20;

/// The `p`-th percentile (0..=100) of `samples`, nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut v = samples.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50.0)
}

pub fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.0} ms")
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64().max(1e-9)
}

pub fn size(bytes: u64) -> String {
    if bytes >= GIB && bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / KIB)
    }
}

/// "1.23×" (or "—" when the reference is zero).
pub fn ratio(a: f64, b: f64) -> String {
    if b <= 0.0 || !a.is_finite() || !b.is_finite() {
        "—".into()
    } else {
        format!("{:.2}×", a / b)
    }
}

/// Result of a sequential read.
#[derive(Clone, Copy, Debug)]
pub struct SeqRead {
    pub bytes: u64,
    pub took: Duration,
    /// Whether it reached the end of the file (rather than the cap).
    pub finished: bool,
}

impl SeqRead {
    pub fn mib_s(&self) -> f64 {
        mib_s(self.bytes, self.took)
    }
}

/// Reads `path` from start to end in [`READ_BUF`] reads, timing from the
/// `open` to the last byte.
pub fn read_seq(path: &Path) -> std::io::Result<SeqRead> {
    let start = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; READ_BUF];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
    }
    Ok(SeqRead { bytes, took: start.elapsed(), finished: true })
}

/// Like [`read_seq`], but gives up after `cap` and `expected` bytes,
/// returning what was read by then. The read runs on its own thread; when
/// the cap passes, `abort` is called (which must make a blocked read
/// return, e.g. by unmounting) and the thread is left to finish.
pub fn read_seq_capped(path: &Path, expected: u64, cap: Duration, abort: impl FnOnce()) -> SeqRead {
    let done = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (p, d, b) = (path.to_path_buf(), done.clone(), bytes.clone());
    let reader = std::thread::spawn(move || {
        let r = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::open(&p)?;
            let mut buf = vec![0u8; READ_BUF];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                b.fetch_add(n as u64, Ordering::Relaxed);
            }
        })();
        if let Err(e) = r {
            eprintln!("  reading {}: {e}", p.display());
        }
        d.store(true, Ordering::Release);
    });
    let deadline = start + cap;
    while !done.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    let got = bytes.load(Ordering::Relaxed);
    let finished = done.load(Ordering::Acquire) && got >= expected;
    if !done.load(Ordering::Acquire) {
        abort();
    }
    // The reader ends once `abort` unblocked it; do not wait long for it.
    let until = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if reader.is_finished() {
        let _ = reader.join();
    }
    SeqRead { bytes: got, took, finished }
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: the next read comes from the
/// disk (or, through a mount, from its daemon). Best effort.
pub fn drop_caches() -> bool {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

/// An extended attribute as a string (`None` if absent).
pub fn getxattr(path: &Path, name: &str) -> std::io::Result<Option<String>> {
    let (p, n) = (cpath(path), CString::new(name).expect("xattr name with NUL"));
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) { Ok(None) } else { Err(e) };
    }
    buf.truncate(r as usize);
    Ok(Some(String::from_utf8_lossy(&buf).trim_end_matches('\0').to_string()))
}

pub fn setxattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let (p, n) = (cpath(path), CString::new(name).expect("xattr name with NUL"));
    // SAFETY: valid NUL-terminated strings and a value buffer of the given length.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub const XATTR_INFO_HASH: &str = "user.titorrent.info_hash";
pub const XATTR_BYTES_LOCAL: &str = "user.titorrent.bytes_local";
pub const XATTR_PIN: &str = "user.titorrent.pin";

/// Bytes of `path` its member has locally (the mount's xattr), 0 if unknown.
pub fn bytes_local(path: &Path) -> u64 {
    getxattr(path, XATTR_BYTES_LOCAL).ok().flatten().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The info hash of the current version of `path` (hex), if published.
pub fn info_hash(path: &Path) -> Option<String> {
    getxattr(path, XATTR_INFO_HASH).ok().flatten().filter(|h| h.len() == 40)
}

/// The pid of the `titorrent` daemon whose command line names `mountpoint`.
pub fn daemon_pid(mountpoint: &Path) -> Option<u32> {
    pid_of("titorrent", mountpoint)
}

/// The pid of a process running program `prog` whose command line has the
/// argument `arg`.
pub fn pid_of(prog: &str, arg: &Path) -> Option<u32> {
    let want = arg.as_os_str().as_bytes();
    let suffix = format!("/{prog}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let is_prog = args.first().is_some_and(|a| a.ends_with(suffix.as_bytes()) || *a == prog.as_bytes());
        if is_prog && args.iter().any(|a| *a == want) {
            return Some(pid);
        }
    }
    None
}

/// Resident memory of a process, in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// (open sockets, all open descriptors) of a process.
pub fn fd_counts(pid: u32) -> Option<(usize, usize)> {
    let mut sockets = 0;
    let mut all = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    Some((sockets, all))
}

/// Threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("Threads:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// First line of a command's stdout, or "?".
pub fn command_line(prog: &str, args: &[&str]) -> String {
    std::process::Command::new(prog)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Is `name` on the PATH?
pub fn have(name: &str) -> Option<PathBuf> {
    crate::env::which(name)
}

/// Seeded pseudo-random numbers for offsets and shuffles (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Polls `probe` every `every` until it returns `Some`, or `timeout` passes.
pub fn poll<T>(timeout: Duration, every: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    poll_result(timeout, every, || probe().ok_or(String::new())).ok()
}

/// Polls `probe` every `every` until it returns `Ok` or `timeout` passes;
/// then the last `Err` (what was seen instead).
pub fn poll_result<T>(timeout: Duration, every: Duration, mut probe: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let e = match probe() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[Duration::from_millis(7)], 99.0), Duration::from_millis(7));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..50).collect();
        Rng::new(3).shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz.max(1.0))
}

/// CPU seconds that `pids` used while `f` ran, in order.
///
/// With `TITORRENT_BENCH_PERF=DIR` in the environment, each process is also
/// profiled meanwhile (`perf record -g`, written to `DIR/<pid>.perf`), for
/// finding where the CPU seconds went; the figures then include perf's cost.
pub fn cpu_during<T>(pids: &[u32], f: impl FnOnce() -> T) -> (T, Vec<f64>) {
    let perf = std::env::var_os("TITORRENT_BENCH_PERF").map(std::path::PathBuf::from);
    let recorders: Vec<std::process::Child> = match &perf {
        Some(dir) => pids
            .iter()
            .filter(|p| **p != 0)
            .filter_map(|p| {
                std::process::Command::new("perf")
                    .args(["record", "-q", "-g", "-p", &p.to_string(), "-o"])
                    .arg(dir.join(format!("{p}.perf")))
                    .spawn()
                    .ok()
            })
            .collect(),
        None => Vec::new(),
    };
    let before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p).unwrap_or(0.0)).collect();
    let out = f();
    for mut r in recorders {
        // perf writes its file on SIGINT.
        unsafe { libc::kill(r.id() as i32, libc::SIGINT) };
        let _ = r.wait();
    }
    let after = pids.iter().map(|p| cpu_secs(*p).unwrap_or(0.0));
    (out, after.zip(before).map(|(a, b)| a - b).collect())
}

//! The operations members run, drawn from a seed, and how each is done on
//! a mount with plain system calls (as programs do: open, read, write,
//! close, rename...). Each returns one [`Outcome`]; a `close` that failed
//! makes the whole operation fail, since a program would not count it
//! as saved.

use super::history::Outcome;
use rand::rngs::StdRng;
use rand::Rng;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Files only appended to: every line written must survive.
pub const LOGS: [&str; 2] = ["logs/L0.log", "logs/L1.log"];
/// Files only incremented (read, +1, write back, under the lock).
pub const COUNTERS: [&str; 2] = ["counters/C0", "counters/C1"];
/// Where names come and go: creates, renames, unlinks, rewrites.
pub const SCRATCH_DIRS: [&str; 3] = ["scratch", "scratch/d0", "scratch/d1"];
pub const SCRATCH_NAMES: [&str; 3] = ["n0", "n1", "n2.txt"];
/// Directories made and removed.
pub const TEMP_DIRS: [&str; 2] = ["scratch/t0", "scratch/t1"];
/// Every directory the workload needs, made before it starts.
pub const SETUP_DIRS: [&str; 5] = ["logs", "counters", "scratch", "scratch/d0", "scratch/d1"];

/// How long an append or increment retries while the file is locked.
const LOCK_PATIENCE: Duration = Duration::from_secs(30);
/// Tries a scratch open for write makes while the file is locked.
const SCRATCH_TRIES: usize = 20;

#[derive(Clone, Debug)]
pub enum Op {
    Append { log: usize },
    Increment { counter: usize },
    Rewrite { path: String },
    Create { path: String, exclusive: bool },
    Rename { from: String, to: String },
    Unlink { path: String },
    Mkdir { dir: usize },
    Rmdir { dir: usize },
    Truncate { path: String, len: u64 },
    /// Open for write, write, keep it open for `ms`, close.
    Hold { path: String, ms: u64 },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Append { .. } => "append",
            Op::Increment { .. } => "increment",
            Op::Rewrite { .. } => "rewrite",
            Op::Create { exclusive: true, .. } => "create-x",
            Op::Create { .. } => "create",
            Op::Rename { .. } => "rename",
            Op::Unlink { .. } => "unlink",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Truncate { .. } => "truncate",
            Op::Hold { .. } => "hold",
        }
    }

    pub fn paths(&self) -> Vec<String> {
        match self {
            Op::Append { log } => vec![LOGS[*log].to_string()],
            Op::Increment { counter } => vec![COUNTERS[*counter].to_string()],
            Op::Rewrite { path } | Op::Create { path, .. } | Op::Unlink { path } | Op::Truncate { path, .. } | Op::Hold { path, .. } => {
                vec![path.clone()]
            }
            Op::Rename { from, to } => vec![from.clone(), to.clone()],
            Op::Mkdir { dir } | Op::Rmdir { dir } => vec![TEMP_DIRS[*dir].to_string()],
        }
    }
}

/// A scratch path: a name in one of the scratch directories, or in a temp
/// directory (which may not exist: ENOENT).
fn scratch_path(rng: &mut StdRng) -> String {
    let name = SCRATCH_NAMES[rng.gen_range(0..SCRATCH_NAMES.len())];
    if rng.gen_bool(0.15) {
        return format!("{}/{name}", TEMP_DIRS[rng.gen_range(0..TEMP_DIRS.len())]);
    }
    format!("{}/{name}", SCRATCH_DIRS[rng.gen_range(0..SCRATCH_DIRS.len())])
}

/// The next operation of a member's workload.
pub fn draw(rng: &mut StdRng) -> Op {
    match rng.gen_range(0..100) {
        0..=27 => Op::Append { log: rng.gen_range(0..LOGS.len()) },
        28..=45 => Op::Increment { counter: rng.gen_range(0..COUNTERS.len()) },
        46..=53 => Op::Rewrite { path: scratch_path(rng) },
        54..=61 => Op::Create { path: scratch_path(rng), exclusive: rng.gen_bool(0.5) },
        62..=71 => Op::Rename { from: scratch_path(rng), to: scratch_path(rng) },
        72..=77 => Op::Unlink { path: scratch_path(rng) },
        78..=81 => Op::Mkdir { dir: rng.gen_range(0..TEMP_DIRS.len()) },
        82..=85 => Op::Rmdir { dir: rng.gen_range(0..TEMP_DIRS.len()) },
        86..=92 => Op::Truncate { path: scratch_path(rng), len: rng.gen_range(0..64) },
        _ => Op::Hold { path: scratch_path(rng), ms: rng.gen_range(100..1200) },
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Closes explicitly, so that a failed close is seen (drop ignores it).
fn close(f: fs::File) -> std::io::Result<()> {
    let fd = f.into_raw_fd();
    // SAFETY: `fd` is ours, just taken out of the File, closed once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens, retrying while the file is locked by another member (EBUSY), up
/// to `patience` or `tries`.
fn open_patiently(path: &Path, open: &OpenOptions, patience: Duration, tries: usize) -> std::io::Result<fs::File> {
    let deadline = Instant::now() + patience;
    let mut n = 0;
    loop {
        match open.open(path) {
            Err(e) if errno(&e) == libc::EBUSY && Instant::now() < deadline && n < tries => {
                n += 1;
                // Polling the lock, as a program retrying EBUSY does.
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Runs `op` on the mount at `root`. `token` is unique in the run (the
/// appended line, the rewritten content).
pub fn execute(root: &Path, op: &Op, token: &str) -> Outcome {
    let p = |rel: &str| root.join(rel);
    let res: std::io::Result<String> = (|| match op {
        Op::Append { log } => {
            let mut open = OpenOptions::new();
            open.append(true);
            let mut f = open_patiently(&p(LOGS[*log]), &open, LOCK_PATIENCE, usize::MAX)?;
            f.write_all(format!("{token}\n").as_bytes())?;
            close(f)?;
            Ok(format!("line {token}"))
        }
        Op::Increment { counter } => {
            let mut open = OpenOptions::new();
            open.read(true).write(true);
            let mut f = open_patiently(&p(COUNTERS[*counter]), &open, LOCK_PATIENCE, usize::MAX)?;
            let mut s = String::new();
            f.read_to_string(&mut s)?;
            let n: u64 = s.trim().parse().map_err(|_| std::io::Error::other(format!("counter holds {s:?}")))?;
            f.seek(SeekFrom::Start(0))?;
            f.set_len(0)?;
            f.write_all(format!("{}\n", n + 1).as_bytes())?;
            close(f)?;
            Ok(format!("from {n}"))
        }
        Op::Rewrite { path } => {
            let mut open = OpenOptions::new();
            open.write(true).create(true).truncate(true).mode(0o644);
            let mut f = open_patiently(&p(path), &open, LOCK_PATIENCE, SCRATCH_TRIES)?;
            f.write_all(token.as_bytes())?;
            close(f)?;
            Ok(format!("wrote {token}"))
        }
        Op::Create { path, exclusive } => {
            let mut open = OpenOptions::new();
            open.write(true).mode(0o644);
            if *exclusive {
                open.create_new(true);
            } else {
                open.create(true);
            }
            close(open.open(p(path))?)?;
            Ok(String::new())
        }
        Op::Rename { from, to } => fs::rename(p(from), p(to)).map(|_| String::new()),
        Op::Unlink { path } => fs::remove_file(p(path)).map(|_| String::new()),
        Op::Mkdir { dir } => fs::create_dir(p(TEMP_DIRS[*dir])).map(|_| String::new()),
        Op::Rmdir { dir } => fs::remove_dir(p(TEMP_DIRS[*dir])).map(|_| String::new()),
        Op::Truncate { path, len } => {
            // truncate(2) on a path: the daemon takes the lock for it.
            let c = std::ffi::CString::new(p(path).into_os_string().into_encoded_bytes()).expect("no NUL in paths");
            // SAFETY: a valid C string.
            if unsafe { libc::truncate(c.as_ptr(), *len as libc::off_t) } == 0 {
                Ok(format!("to {len}"))
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        Op::Hold { path, ms } => {
            let mut open = OpenOptions::new();
            open.write(true).create(true).mode(0o644);
            let mut f = open_patiently(&p(path), &open, LOCK_PATIENCE, SCRATCH_TRIES)?;
            f.write_all(token.as_bytes())?;
            // Holding the file open is the operation: time is the condition.
            std::thread::sleep(Duration::from_millis(*ms));
            close(f)?;
            Ok(format!("held {ms} ms"))
        }
    })();
    match res {
        Ok(d) => Outcome::Ok(d),
        Err(e) => Outcome::Err(if e.raw_os_error().is_some() { errno(&e) } else { -1 }),
    }
}

/// `user.titorrent.version` of a file on a mount, if it has one.
pub fn version_of(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let name = c"user.titorrent.version";
    let mut buf = [0u8; 32];
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return None;
    }
    std::str::from_utf8(&buf[..n as usize]).ok()?.trim().parse().ok()
}

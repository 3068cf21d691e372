//! Provides what scenarios need to check a shared folder the way its users
//! do: run ordinary programs (vim, rsync, git, tar...) under a deadline,
//! snapshot a directory tree to compare it byte for byte across members,
//! wait until a member sees given bytes or a given tree, and read errno,
//! `stat` fields and xattrs (through `getfattr`, as a user would).

use crate::content::describe_difference;
use crate::peer::Peer;
use crate::process::{self, CliOutput};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long another member may take to see a small published change.
pub const SEE: Duration = Duration::from_secs(30);
/// How long one run of an ordinary program (vim, git, rsync...) may take.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of `name` on the PATH; panics saying which Debian package to
/// install (.ci/run installs them) when it is missing. Tests never skip.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    crate::env::which(name).unwrap_or_else(|| {
        panic!("this test runs `{name}`, which is not on the PATH: `apt-get install {package}` (.ci/run installs it)")
    })
}

/// A program run in `cwd` with its environment cleaned of the caller's
/// configuration: `HOME` is `home` (so no ~/.vimrc or ~/.gitconfig of the
/// machine's applies) and the locale is C.
pub fn program(prog: &str, cwd: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(prog);
    cmd.current_dir(cwd)
        .env("HOME", home)
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    cmd
}

/// Runs `cmd` to completion under [`PROGRAM_TIMEOUT`]; any exit status.
pub fn run(cmd: &mut Command) -> CliOutput {
    process::run(cmd, PROGRAM_TIMEOUT)
}

/// Runs `cmd` and panics, showing what it printed, unless it exits 0.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> CliOutput {
    let what = format!("{cmd:?}");
    run(cmd).ok(&what)
}

/// The errno of a failed operation, for `assert_eq!(errno(r), Some(EBUSY))`;
/// `None` when it succeeded.
pub fn errno<T>(r: &std::io::Result<T>) -> Option<i32> {
    r.as_ref().err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// One entry of a tree snapshot.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, mtime_s: i64, bytes: Vec<u8> },
    /// A symbolic link and its target (never followed).
    Symlink(String),
    Other(String),
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Dir { mode } => write!(f, "dir {mode:o}"),
            Node::File { mode, mtime_s, bytes } => write!(f, "file {mode:o} mtime {mtime_s} {} bytes", bytes.len()),
            Node::Symlink(t) => write!(f, "symlink -> {t}"),
            Node::Other(s) => f.write_str(s),
        }
    }
}

/// What of an entry a comparison looks at: kinds and bytes always.
#[derive(Clone, Copy, Debug)]
pub struct Compare {
    /// Permission bits of files and directories.
    pub mode: bool,
    /// Files' mtimes, to the second (what `cp -a`, `rsync -a`, `tar x` keep).
    pub mtime: bool,
}

impl Compare {
    pub const BYTES: Compare = Compare { mode: false, mtime: false };
    pub const BYTES_AND_MODES: Compare = Compare { mode: true, mtime: false };
    pub const ALL: Compare = Compare { mode: true, mtime: true };
}

/// A directory tree: every entry below a root by its relative path
/// (`a/b.txt`), with its kind, permission bits, mtime and bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, Node>);

impl Tree {
    /// Reads everything below `root` (not following symlinks).
    pub fn read(root: &Path) -> std::io::Result<Tree> {
        let mut t = Tree::default();
        read_into(root, "", &mut t.0)?;
        Ok(t)
    }

    /// Reads everything below `root` but the entries whose relative path
    /// starts with one of `skip` (".git/" say).
    pub fn read_without(root: &Path, skip: &[&str]) -> std::io::Result<Tree> {
        let mut t = Tree::read(root)?;
        t.0.retain(|k, _| !skip.iter().any(|s| k.starts_with(s) || format!("{k}/") == *s));
        Ok(t)
    }

    pub fn paths(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// `None` if `self` matches `expected` on what `how` compares, else the
    /// first few differences, each naming its path.
    pub fn difference(&self, expected: &Tree, how: Compare) -> Option<String> {
        let mut out = Vec::new();
        for (path, want) in &expected.0 {
            match self.0.get(path) {
                None => out.push(format!("{path}: missing (expected {want:?})")),
                Some(got) => {
                    if let Some(d) = node_difference(got, want, how) {
                        out.push(format!("{path}: {d}"));
                    }
                }
            }
        }
        for (path, got) in &self.0 {
            if !expected.0.contains_key(path) {
                out.push(format!("{path}: unexpected {got:?}"));
            }
        }
        if out.is_empty() {
            return None;
        }
        let n = out.len();
        out.truncate(8);
        if n > 8 {
            out.push(format!("... and {} more", n - 8));
        }
        Some(out.join("; "))
    }
}

fn node_difference(got: &Node, want: &Node, how: Compare) -> Option<String> {
    match (got, want) {
        (Node::Dir { mode: a }, Node::Dir { mode: b }) => (how.mode && a != b).then(|| format!("mode {a:o}, expected {b:o}")),
        (Node::File { mode: am, mtime_s: at, bytes: ab }, Node::File { mode: bm, mtime_s: bt, bytes: bb }) => {
            if let Some(d) = describe_difference(ab, bb) {
                Some(d)
            } else if how.mode && am != bm {
                Some(format!("mode {am:o}, expected {bm:o}"))
            } else if how.mtime && at != bt {
                Some(format!("mtime {at}, expected {bt}"))
            } else {
                None
            }
        }
        (Node::Symlink(a), Node::Symlink(b)) => (a != b).then(|| format!("symlink -> {a}, expected -> {b}")),
        (a, b) => (a != b).then(|| format!("{a:?}, expected {b:?}")),
    }
}

fn read_into(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Node>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let md = std::fs::symlink_metadata(e.path())?;
        let mode = md.permissions().mode() & 0o7777;
        if md.is_dir() {
            out.insert(rel.clone(), Node::Dir { mode });
            read_into(&e.path(), &rel, out)?;
        } else if md.is_file() {
            let bytes = std::fs::read(e.path())?;
            out.insert(rel, Node::File { mode, mtime_s: md.mtime(), bytes });
        } else if md.is_symlink() {
            out.insert(rel, Node::Symlink(std::fs::read_link(e.path())?.to_string_lossy().into_owned()));
        } else {
            out.insert(rel, Node::Other(format!("{:?}", md.file_type())));
        }
    }
    Ok(())
}

/// Waits until `peer` reads exactly `expected` at `rel` (inside its mount).
pub fn wait_for_content(peer: &Peer, rel: &str, expected: &[u8], timeout: Duration) {
    let path = peer.path(rel);
    crate::wait_for(timeout, &format!("{} reads the expected {} bytes of {rel}", peer.name(), expected.len()), || {
        let got = std::fs::read(&path).map_err(|e| format!("read: {e}"))?;
        describe_difference(&got, expected).map_or(Ok(()), Err)
    });
}

/// Waits until the tree under `dir` matches `expected` on what `how`
/// compares; returns the tree seen.
pub fn wait_for_tree(who: &str, dir: &Path, expected: &Tree, how: Compare, timeout: Duration) -> Tree {
    crate::wait_for(timeout, &format!("{who} sees the expected tree under {}", dir.display()), || {
        let got = Tree::read(dir).map_err(|e| format!("reading the tree: {e}"))?;
        match got.difference(expected, how) {
            None => Ok(got),
            Some(d) => Err(d),
        }
    })
}

/// Names in a directory, sorted (what `ls -A` shows).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir of {}: {e}", dir.display()))
        .map(|e| e.expect("readdir entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `getfattr --only-values -n NAME PATH`: the value, or what getfattr
/// said when it failed ("No such attribute").
pub fn getfattr(path: &Path, name: &str) -> Result<String, String> {
    require_program("getfattr", "attr");
    let out = process::run(
        Command::new("getfattr").args(["--only-values", "--absolute-names", "-n", name]).arg(path),
        Duration::from_secs(10),
    );
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(out.stderr.trim().to_string())
    }
}

/// The lines of `titorrent ARGS` run as `peer`, asserting exit 0.
pub fn titorrent_ok<I, S>(peer: &Peer, args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
    peer.cli(args).ok(&format!("`titorrent {}` as {}", shown.join(" "), peer.name()))
}

/// The conflict copies (`NAME (conflict from ...)`) in a listing.
pub fn conflict_copies(listing: &[String]) -> Vec<&String> {
    listing.iter().filter(|n| n.contains(" (conflict from ")).collect()
}

/// Writes a small tree such as people share into `root` (which must exist):
/// nested directories with different modes, an empty file, text, an
/// executable script, a binary of a bit over 1 MiB; files' mtimes in 2001,
/// so a copy that keeps them is told from one that does not. Returns it as
/// read back.
pub fn write_sample_tree(root: &Path, seed: u64) -> Tree {
    use std::fs;
    let file = |rel: &str, bytes: &[u8], mode: u32, mtime_s: u64| {
        let p = root.join(rel);
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        let t = std::time::UNIX_EPOCH + Duration::from_secs(mtime_s);
        fs::File::options().write(true).open(&p).unwrap().set_times(fs::FileTimes::new().set_modified(t)).unwrap();
    };
    let dir = |rel: &str, mode: u32| {
        let p = root.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    dir("docs", 0o755);
    dir("docs/private", 0o700);
    dir("bin", 0o755);
    dir("data/empty-dir", 0o755);
    file("docs/readme.txt", format!("readme of tree {seed}\n").as_bytes(), 0o644, 1_000_000_000);
    file("docs/empty.txt", b"", 0o644, 1_000_000_100);
    file("docs/private/secret.txt", b"only for the group\n", 0o600, 1_000_000_200);
    file("bin/run.sh", b"#!/bin/sh\necho run\n", 0o755, 1_000_000_300);
    let blob = crate::Pattern::new(seed).bytes_at(0, (1 << 20) + 123);
    file("data/blob.bin", &blob, 0o644, 1_000_000_400);
    Tree::read(root).expect("reading back the sample tree")
}

/// `titorrent members` as `peer` sees it: (name, online), sorted by name.
pub fn members_online(peer: &Peer) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = peer.members().into_iter().map(|m| (m.name, m.online)).collect();
    v.sort();
    v
}

/// Waits until `titorrent members` run as `peer` shows exactly `expected`
/// (name, online) pairs.
pub fn wait_for_members(peer: &Peer, expected: &[(&str, bool)], timeout: Duration) {
    let mut want: Vec<(String, bool)> = expected.iter().map(|(n, o)| (n.to_string(), *o)).collect();
    want.sort();
    crate::wait_for(timeout, &format!("`titorrent members` as {} shows {want:?}", peer.name()), || {
        let got = members_online(peer);
        if got == want { Ok(()) } else { Err(format!("{got:?}")) }
    });
}

/// Lazily unmounts a mount point on drop if something is still mounted
/// there: for a mount a test makes without a [`Peer`] (one that is expected
/// to fail, say).
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if crate::mounts::find(&self.0).is_some() {
            crate::mounts::force_unmount(&self.0);
        }
    }
}

/// Reads a file over and over on a thread of its own (every few ms) and
/// keeps each distinct thing seen, in order: what a member reading the file
/// while another one saves it could get.
pub struct Watcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Seen>>>,
}

/// One thing a [`Watcher`] saw.
#[derive(Clone, PartialEq, Eq)]
pub enum Seen {
    Bytes(Vec<u8>),
    Errno(i32),
}

impl fmt::Debug for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Seen::Errno(e) => write!(f, "errno {e} ({})", std::io::Error::from_raw_os_error(*e)),
        }
    }
}

impl Watcher {
    pub fn start(path: PathBuf) -> Watcher {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: Vec<Seen> = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let now = match std::fs::read(&path) {
                    Ok(b) => Seen::Bytes(b),
                    Err(e) => Seen::Errno(e.raw_os_error().unwrap_or(-1)),
                };
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
                std::thread::sleep(Duration::from_millis(3));
            }
            seen
        });
        Watcher { stop, thread: Some(thread) }
    }

    /// Stops and returns what was seen.
    pub fn stop(mut self) -> Vec<Seen> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map(|t| t.join().expect("the watcher thread panicked")).unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

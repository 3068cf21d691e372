//! Provides `mount.titorrent`, the helper mount(8) runs for `-t titorrent`
//! and for fstab lines of type `titorrent`: it turns `SOURCE DIR [-sfnv]
//! [-o OPTIONS]` into a `titorrent mount` command, starts that daemon
//! detached (its own session, output appended to a log file), and returns
//! only once the mount is ready, or with a one-line reason it is not.
//!
//! It links neither fuser nor librqbit: std and libc only.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// mount(8)'s exit status for a bad invocation or bad options.
pub const EX_USAGE: i32 = 1;
/// mount(8)'s exit status for "mount failure".
pub const EX_FAIL: i32 = 32;
/// The fstype the kernel records for a titorrent mount.
pub const FSTYPE: &str = "fuse.titorrent";
/// Where state directories named by NAME live when mounting as root.
pub const SYSTEM_STATE_ROOT: &str = "/var/lib/titorrent";
/// How long to wait for the mount when `timeout=` is not given: longer
/// than the daemon's own 20 s wait for the tracker, so that its reason
/// (tracker unreachable) is what the user sees.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The log file the daemon's output goes to, inside the state directory.
pub const LOG_FILE: &str = "mount.log";

/// Options this helper understands (`NAME` or `NAME=VALUE`); mount.titorrent(8)
/// documents each (a test checks). `-` and `_` are interchangeable.
pub const OWN_OPTIONS: &[&str] =
    &["ro", "allow_other", "noallow_other", "exec", "noexec", "listen", "upload_limit", "download_limit", "config", "timeout", "log"];

/// Generic mount(8) options that concern mount(8), systemd or the kernel's
/// defaults for FUSE, not titorrent: accepted and ignored.
/// `rw` is among them: mount(8) passes it whenever `ro` is not given, so it
/// cannot mean "override read_only from the config file".
pub const IGNORED_OPTIONS: &[&str] = &[
    "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "_rnetdev", "nofail",
    "suid", "nosuid", "dev", "nodev", "async", "sync", "dirsync", "atime", "noatime", "diratime",
    "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime", "silent",
    "loud", "iversion", "noiversion", "mand", "nomand",
];
/// Prefixes of ignored options: systemd's and other tools' `x-*`, fstab
/// comments, and the `user=NAME` mount(8) adds for user mounts.
pub const IGNORED_PREFIXES: &[&str] = &["x-", "X-", "comment=", "user=", "helper="];

/// A parsed command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    pub source: String,
    pub dir: PathBuf,
    /// `-f`: check everything, start nothing.
    pub fake: bool,
    /// `-v`: say what is run and when it is ready.
    pub verbose: bool,
    /// `-s`: tolerate unknown options (ignore them with a warning).
    pub sloppy: bool,
    pub opts: Options,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `ro`; `None` leaves it to the config file.
    pub read_only: Option<bool>,
    /// `allow_other` / `noallow_other`; `None` leaves it to the config file
    /// (and then to who mounts).
    pub allow_other: Option<bool>,
    /// `noexec` (which fstab's `user` and `users` imply; a later `exec`
    /// undoes it): programs in the folder cannot be executed.
    pub noexec: bool,
    pub listen: Option<String>,
    pub upload_limit: Option<String>,
    pub download_limit: Option<String>,
    pub config: Option<PathBuf>,
    pub timeout: Duration,
    pub log: Option<PathBuf>,
    /// Unknown options dropped under `-s`.
    pub dropped: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            read_only: None,
            allow_other: None,
            noexec: false,
            listen: None,
            upload_limit: None,
            download_limit: None,
            config: None,
            timeout: DEFAULT_TIMEOUT,
            log: None,
            dropped: Vec::new(),
        }
    }
}

pub const USAGE: &str = "usage: mount.titorrent SOURCE DIR [-sfnv] [-o OPTIONS]\n\
SOURCE is a member's state directory, or NAME for /var/lib/titorrent/NAME\n\
(as root; ~/.local/share/titorrent/NAME otherwise). See mount.titorrent(8).";

/// What went wrong, with the exit status mount(8) expects for it.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { code: EX_USAGE, message: message.into() }
    }
    pub fn mount(message: impl Into<String>) -> Failure {
        Failure { code: EX_FAIL, message: message.into() }
    }
}

/// Parses `SOURCE DIR [-sfnv] [-N NS] [-o OPTS] [-t TYPE]` in any order;
/// flags may be combined (`-sv`, `-oro`). `Ok(None)` for `-h`/`--help`.
pub fn parse_args(args: &[OsString]) -> Result<Option<Invocation>, Failure> {
    let mut inv = Invocation::default();
    let mut positional: Vec<OsString> = Vec::new();
    let mut opt_strings: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        if s == "-h" || s == "--help" {
            return Ok(None);
        }
        if !s.starts_with('-') || s == "-" {
            positional.push(arg.clone());
            continue;
        }
        let flags: Vec<char> = s[1..].chars().collect();
        let mut i = 0;
        while i < flags.len() {
            match flags[i] {
                's' => inv.sloppy = true,
                'f' => inv.fake = true,
                'n' => {} // no mtab: nothing to do since /etc/mtab is a symlink
                'v' => inv.verbose = true,
                c @ ('o' | 't' | 'N') => {
                    let rest: String = flags[i + 1..].iter().collect();
                    let value = if rest.is_empty() {
                        it.next().map(|v| v.to_string_lossy().into_owned()).ok_or_else(|| Failure::usage(format!("-{c} needs a value")))?
                    } else {
                        rest
                    };
                    match c {
                        'o' => opt_strings.push(value),
                        't' => {
                            if !matches!(value.as_str(), "titorrent" | "fuse.titorrent") {
                                return Err(Failure::usage(format!("-t {value}: this helper mounts only titorrent")));
                            }
                        }
                        _ => return Err(Failure::usage("-N (mount in another namespace) is not supported")),
                    }
                    break;
                }
                c => return Err(Failure::usage(format!("unknown flag -{c}\n{USAGE}"))),
            }
            i += 1;
        }
    }
    let [source, dir] = <[OsString; 2]>::try_from(positional)
        .map_err(|p| Failure::usage(format!("expected SOURCE and DIR, got {} arguments\n{USAGE}", p.len())))?;
    inv.source = source.to_string_lossy().into_owned();
    inv.dir = PathBuf::from(dir);
    for o in &opt_strings {
        parse_options(o, inv.sloppy, &mut inv.opts)?;
    }
    Ok(Some(inv))
}

/// Parses one `-o` string (comma-separated) into `opts`.
pub fn parse_options(s: &str, sloppy: bool, opts: &mut Options) -> Result<(), Failure> {
    for raw in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if IGNORED_OPTIONS.contains(&raw) || IGNORED_PREFIXES.iter().any(|p| raw.starts_with(p)) {
            continue;
        }
        let (key, value) = match raw.split_once('=') {
            Some((k, v)) => (k.replace('-', "_"), Some(v)),
            None => (raw.replace('-', "_"), None),
        };
        let need = |v: Option<&str>| -> Result<String, Failure> {
            match v {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(Failure::usage(format!("mount option {key} needs a value ({key}=...)"))),
            }
        };
        match key.as_str() {
            "ro" if value.is_none() => opts.read_only = Some(true),
            "allow_other" if value.is_none() => opts.allow_other = Some(true),
            "noallow_other" if value.is_none() => opts.allow_other = Some(false),
            "noexec" if value.is_none() => opts.noexec = true,
            "exec" if value.is_none() => opts.noexec = false,
            "listen" => opts.listen = Some(need(value)?),
            "upload_limit" => opts.upload_limit = Some(need(value)?),
            "download_limit" => opts.download_limit = Some(need(value)?),
            "config" => opts.config = Some(PathBuf::from(need(value)?)),
            "log" => opts.log = Some(PathBuf::from(need(value)?)),
            "timeout" => {
                let v = need(value)?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| Failure::usage(format!("mount option timeout={v}: expected a number of seconds")))?;
                opts.timeout = Duration::from_secs(secs);
            }
            _ if sloppy => opts.dropped.push(raw.to_string()),
            _ => return Err(Failure::usage(format!("unknown mount option {raw:?} (see mount.titorrent(8))"))),
        }
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The state directory SOURCE names: a path (anything with a `/`), or NAME
/// for `/var/lib/titorrent/NAME` as root and
/// `$XDG_DATA_HOME/titorrent/NAME` (default ~/.local/share/titorrent/NAME)
/// otherwise. The same rule as titorrent's `config::state_root`.
pub fn resolve_source(source: &str) -> Result<PathBuf, Failure> {
    if source.contains('/') {
        return Ok(PathBuf::from(source));
    }
    if source.is_empty() || source == "." || source == ".." {
        return Err(Failure::usage(format!("SOURCE {source:?} is neither a state directory nor a NAME")));
    }
    let root = if is_root() {
        PathBuf::from(SYSTEM_STATE_ROOT)
    } else {
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/share")))
            .ok_or_else(|| Failure::usage("neither XDG_DATA_HOME nor HOME is set: give SOURCE as a path"))?;
        data.join("titorrent")
    };
    Ok(root.join(source))
}

/// The `titorrent` binary: next to this helper (the real path, so a
/// symlink /sbin/mount.titorrent -> .../target/release/mount_titorrent finds
/// .../target/release/titorrent), then on PATH, then the usual places.
pub fn find_titorrent() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("titorrent")));
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("titorrent")).collect::<Vec<_>>());
    let usual = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin"].map(|d| Path::new(d).join("titorrent"));
    beside.into_iter().chain(on_path.unwrap_or_default()).chain(usual).find(|p| p.is_file())
}

/// The `titorrent mount` arguments for this invocation.
pub fn titorrent_args(inv: &Invocation, dir: &Path, state: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["mount".into(), dir.into(), "--state".into(), state.into()];
    let o = &inv.opts;
    match o.read_only {
        Some(true) => a.push("--read-only".into()),
        Some(false) => a.push("--read-write".into()),
        None => {}
    }
    match o.allow_other {
        Some(true) => a.push("--allow-other".into()),
        Some(false) => a.push("--no-allow-other".into()),
        None => {}
    }
    if o.noexec {
        a.push("--noexec".into());
    }
    for (flag, v) in [("--listen", &o.listen), ("--upload-limit", &o.upload_limit), ("--download-limit", &o.download_limit)] {
        if let Some(v) = v {
            a.push(flag.into());
            a.push(v.into());
        }
    }
    if let Some(c) = &o.config {
        a.push("--config".into());
        a.push(c.into());
    }
    a
}

/// The fstype of the topmost mount at `dir`, from /proc/self/mountinfo.
pub fn mounted_fstype(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines()
        .rev()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mp = unescape(left.split(' ').nth(4)?);
            let fstype = right.split(' ').next()?;
            (Path::new(&mp) == dir).then(|| unescape(fstype))
        })
        .next()
}

/// Undoes mountinfo's octal escapes (`\040` for a space). Shared with the
/// `titorrent` CLI and the test harness, which read mountinfo too.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).is_some_and(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if b[i] == b'\\' && octal {
            let d = |k: usize| u32::from(b[i + k] - b'0');
            out.push((d(1) * 64 + d(2) * 8 + d(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one line that says why `titorrent mount` failed, from what it wrote
/// to its log since it started: its own `titorrent: ...` error, else clap's
/// `error: ...`, else the last line, else its exit status.
pub fn failure_reason(log: &str, status: Option<ExitStatus>) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if let Some(l) = lines.iter().rev().find_map(|l| l.strip_prefix("titorrent: ")) {
        return l.to_string();
    }
    if let Some(l) = lines.iter().find_map(|l| l.strip_prefix("error: ")) {
        return l.to_string();
    }
    match (lines.last(), status) {
        (Some(l), _) => l.to_string(),
        (None, Some(st)) => format!("titorrent mount exited ({st}) without saying why"),
        (None, None) => "titorrent mount said nothing".to_string(),
    }
}

/// Checks, then starts the daemon and waits for the mount. Returns the
/// daemon's pid and the log path.
pub fn run(inv: &Invocation) -> Result<Option<(u32, PathBuf)>, Failure> {
    let state = resolve_source(&inv.source)?;
    let dir = std::fs::canonicalize(&inv.dir)
        .map_err(|e| Failure::mount(format!("mount point {}: {}", inv.dir.display(), strip_os_error(&e))))?;
    if !dir.is_dir() {
        return Err(Failure::mount(format!("mount point {} is not a directory", dir.display())));
    }
    if mounted_fstype(&dir).as_deref() == Some(FSTYPE) {
        return Err(Failure::mount(format!("{} is already mounted (fuse.titorrent)", dir.display())));
    }
    if !state.is_dir() {
        return Err(Failure::mount(format!(
            "{}: no such state directory (SOURCE is a member's state directory, or NAME for {}/NAME)",
            state.display(),
            resolve_source("NAME").map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default()).unwrap_or_default().display()
        )));
    }
    let titorrent = find_titorrent()
        .ok_or_else(|| Failure::mount("cannot find the titorrent binary (next to mount.titorrent, on PATH, or in /usr/local/bin)"))?;
    let args = titorrent_args(inv, &dir, &state);
    if inv.verbose {
        let shown: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        eprintln!("mount.titorrent: {} {}", titorrent.display(), shown.join(" "));
        for d in &inv.opts.dropped {
            eprintln!("mount.titorrent: ignoring unknown option {d:?} (-s)");
        }
    }
    if inv.fake {
        return Ok(None);
    }
    let log_path = inv.opts.log.clone().unwrap_or_else(|| state.join(LOG_FILE));
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Failure::mount(format!("cannot open log {}: {}", log_path.display(), strip_os_error(&e))))?;
    let _ = writeln!(log, "=== mount.titorrent: {} {:?}", titorrent.display(), args);
    let start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let err = log.try_clone().map_err(|e| Failure::mount(format!("log {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(&titorrent);
    cmd.args(&args).stdin(Stdio::null()).stdout(log).stderr(err).env("NO_COLOR", "1");
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from
    // mount(8)'s session and terminal so that it outlives both.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| Failure::mount(format!("cannot start {}: {e}", titorrent.display())))?;
    let pid = child.id();
    wait_ready(child, &dir, &log_path, start, inv.opts.timeout)?;
    Ok(Some((pid, log_path)))
}

/// Polls until the daemon has mounted `dir` and said so in its log, has
/// exited (a failure: its reason is in the log), or `timeout` passed (it is
/// stopped and any mount it made detached).
fn wait_ready(mut child: Child, dir: &Path, log: &Path, start: u64, timeout: Duration) -> Result<(), Failure> {
    let ready_line = format!("mounted {}", dir.display());
    let since = || {
        let bytes = std::fs::read(log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[(start as usize).min(bytes.len())..]).into_owned()
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure::mount(failure_reason(&since(), Some(status))));
        }
        if mounted_fstype(dir).as_deref() == Some(FSTYPE) && since().lines().any(|l| l.trim() == ready_line) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            // SAFETY: kill has no memory preconditions; the child is unreaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let stop_by = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < stop_by {
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if mounted_fstype(dir).as_deref() == Some(FSTYPE) {
                if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
                    // SAFETY: c is a valid C string.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
            let last = failure_reason(&since(), None);
            return Err(Failure::mount(format!(
                "{} not mounted within {}s; stopped titorrent; its last words: {last}",
                dir.display(),
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// "No such file or directory (os error 2)" without the errno suffix.
fn strip_os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, Failure> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_args(&v).map(|o| o.expect("not --help"))
    }

    #[test]
    fn mount8_argv_is_understood() {
        let inv = parse(&["/var/lib/titorrent/team", "/mnt/team", "-sv", "-o", "noauto,user,_netdev,ro,noallow_other,noexec,nosuid,listen=127.0.0.1:0,upload-limit=2M,x-systemd.automount,bogus"]).unwrap();
        assert_eq!(inv.source, "/var/lib/titorrent/team");
        assert_eq!(inv.dir, PathBuf::from("/mnt/team"));
        assert!(inv.sloppy && inv.verbose && !inv.fake);
        assert_eq!((inv.opts.read_only, inv.opts.allow_other), (Some(true), Some(false)));
        assert_eq!(inv.opts.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(inv.opts.upload_limit.as_deref(), Some("2M"));
        assert_eq!(inv.opts.dropped, ["bogus"]);
        let args = titorrent_args(&inv, Path::new("/mnt/team"), Path::new("/s"));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["mount", "/mnt/team", "--state", "/s", "--read-only", "--no-allow-other", "--noexec", "--listen", "127.0.0.1:0", "--upload-limit", "2M"]);
        // What mount(8) passes for `user,exec`: the later exec wins.
        let inv = parse(&["/s", "/mnt/team", "-o", "rw,noexec,nosuid,nodev,exec,user"]).unwrap();
        assert!(!inv.opts.noexec);
    }

    #[test]
    fn combined_and_inline_flags() {
        let inv = parse(&["-fnoconfig=/c.toml,rw", "team", "/m", "-t", "fuse.titorrent"]).unwrap();
        assert!(inv.fake);
        assert_eq!(inv.opts.config, Some(PathBuf::from("/c.toml")));
        assert_eq!(inv.opts.read_only, None, "rw is what mount(8) passes by default: no override");
        assert_eq!(parse(&["a", "/m", "-o", "timeout=5"]).unwrap().opts.timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_invocations_are_usage_errors() {
        for (args, what) in [
            (&["a", "/m", "-o", "bogus"][..], "unknown mount option \"bogus\""),
            (&["a", "/m", "-o", "listen"][..], "listen needs a value"),
            (&["a", "/m", "-o", "timeout=soon"][..], "timeout=soon"),
            (&["a"][..], "expected SOURCE and DIR"),
            (&["a", "/m", "-x"][..], "unknown flag -x"),
            (&["a", "/m", "-t", "nfs"][..], "only titorrent"),
            (&["a", "/m", "-o"][..], "-o needs a value"),
        ] {
            let f = parse(args).unwrap_err();
            assert_eq!(f.code, EX_USAGE, "{args:?}");
            assert!(f.message.contains(what), "{args:?}: {}", f.message);
        }
    }

    #[test]
    fn source_is_a_path_or_a_name() {
        assert_eq!(resolve_source("./st").unwrap(), PathBuf::from("./st"));
        let named = resolve_source("team").unwrap();
        assert!(named.ends_with("titorrent/team"), "{}", named.display());
        if is_root() {
            assert_eq!(named, PathBuf::from("/var/lib/titorrent/team"));
        }
        assert!(resolve_source("..").is_err());
    }

    #[test]
    fn the_reason_is_the_daemons_own_error_line() {
        let log = "2024 INFO starting\ntitorrent: tracker 127.0.0.1:9 unreachable or refused this member (waited 20s)\n";
        assert_eq!(failure_reason(log, None), "tracker 127.0.0.1:9 unreachable or refused this member (waited 20s)");
        let clap = "error: invalid value 'x' for '--upload-limit <B/S>': bad\n\nFor more information, try '--help'.\n";
        assert_eq!(failure_reason(clap, None), "invalid value 'x' for '--upload-limit <B/S>': bad");
        assert!(failure_reason("", None).contains("said nothing"));
    }

    #[test]
    fn mountinfo_sees_the_root() {
        assert!(mounted_fstype(Path::new("/")).is_some());
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn the_man_page_documents_every_option() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../man/mount.titorrent.8")).expect("man/mount.titorrent.8");
        for o in OWN_OPTIONS.iter().chain(IGNORED_OPTIONS.iter().filter(|o| ["noauto", "user", "_netdev", "nofail"].contains(o))) {
            let roff = o.replace('-', "\\-");
            assert!(page.contains(&roff), "mount.titorrent(8) does not mention option {o}");
        }
    }
}

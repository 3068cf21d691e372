//! The command line as a user meets it: mount(8) and /etc/fstab through
//! mount.titorrent, the configuration file and its errors, the commands
//! that act on files of a mount (lock, unlock, versions, restore, log,
//! status, trash, undelete), leaving a group, and the man pages.
//!
//! Needs root, /dev/fuse, fusermount3, mount(8) and man(1) (`man-db`), and
//! the binaries built (`cargo build --workspace`). The mount(8) tests make
//! /sbin/mount.titorrent a symlink to the mount_titorrent under test, as
//! README's install step would (they refuse to replace a real install).

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use titorrent_integration::bins;
use titorrent_integration::mounts;
use titorrent_integration::process::{self, CliOutput};
use titorrent_integration::{scenario, wait_for, wait_until, Peer, TrackerProc};

/// How long another member may take to see a small published change.
const SEE: Duration = Duration::from_secs(30);
const CMD: Duration = Duration::from_secs(90);
const EROFS: i32 = 30;
const EBUSY: i32 = 16;
/// mount(8)'s status for "mount failure".
const MOUNT_FAILED: i32 = 32;

fn run<I, S>(prog: impl AsRef<OsStr>, args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(prog);
    cmd.args(args);
    process::run(&mut cmd, CMD)
}

fn titorrent<I, S>(args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(bins::bin(bins::TITORRENT), args)
}

/// The one line a failed command printed on stderr.
fn one_line(out: &CliOutput) -> String {
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr ({}), got:\n{}", out.status, out.stderr);
    lines[0].to_string()
}

/// Whether process `pid` is still running (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The daemon pid `mount.titorrent -v` reported.
fn reported_pid(out: &CliOutput) -> u32 {
    let text = format!("{}{}", out.stdout, out.stderr);
    let after = text.split("titorrent pid ").nth(1).unwrap_or_else(|| panic!("no `titorrent pid` in:\n{text}"));
    after.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect("a pid")
}

/// A mount made through mount(8): on drop, unmounted and its daemon gone,
/// whatever happened to the test.
struct SystemMount {
    mnt: PathBuf,
    pid: Option<u32>,
}

impl SystemMount {
    fn new(mnt: &Path) -> SystemMount {
        SystemMount { mnt: mnt.to_path_buf(), pid: None }
    }

    /// `umount DIR`; asserts it succeeds and the daemon exits.
    fn umount(&mut self) {
        let out = run("umount", [&self.mnt]);
        assert!(out.status.success(), "umount {}: {}", self.mnt.display(), out.stderr);
        assert!(mounts::find(&self.mnt).is_none(), "still mounted after umount");
        if let Some(pid) = self.pid.take() {
            wait_until(Duration::from_secs(30), "the daemon to exit after umount", || !alive(pid));
        }
    }
}

impl Drop for SystemMount {
    fn drop(&mut self) {
        if mounts::find(&self.mnt).is_some() {
            let _ = run("umount", [&self.mnt]);
            mounts::force_unmount(&self.mnt);
        }
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + Duration::from_secs(30);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let ours = fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains(&*self.mnt.to_string_lossy()));
            if alive(pid) && ours {
                // SAFETY: kill has no memory preconditions; the pid runs our mount.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir")
}

#[test]
fn an_fstab_line_mounts_with_mount_dir_and_umount_ends_the_daemon() {
    scenario(Duration::from_secs(180), || {
        titorrent_integration::bins::install_mount_helper();
        let tracker = TrackerProc::start();
        let alice = Peer::create_group(&tracker, "alice");
        let mnt = alice.mountpoint().to_path_buf();
        let dir = temp_dir("titorrent-fstab-");
        let fstab = dir.path().join("fstab");
        fs::write(
            &fstab,
            format!(
                "# a test fstab\n{} {} titorrent noauto,user,_netdev,nofail,listen=127.0.0.1:0,upload_limit=4M 0 0\n",
                alice.state_dir().display(),
                mnt.display()
            ),
        )
        .unwrap();
        let mut m = SystemMount::new(&mnt);

        let out = run("mount", [OsStr::new("-v"), "--fstab".as_ref(), fstab.as_os_str(), mnt.as_os_str()]);
        assert!(out.status.success(), "mount --fstab: {}\n{}", out.status, out.stderr);
        m.pid = Some(reported_pid(&out));
        // mount returned: the folder is ready now, no waiting.
        let entry = mounts::find(&mnt).expect("mounted when mount(8) returns");
        assert_eq!(entry.fstype, "fuse.titorrent");
        fs::write(mnt.join("hello.txt"), b"from fstab\n").unwrap();
        assert_eq!(fs::read(mnt.join("hello.txt")).unwrap(), b"from fstab\n");

        // A second mount on the same directory is refused, in one line.
        let again = run("mount", [OsStr::new("-t"), "titorrent".as_ref(), alice.state_dir().as_os_str(), mnt.as_os_str()]);
        assert_eq!(again.status.code(), Some(MOUNT_FAILED));
        assert!(one_line(&again).contains("already mounted"), "{}", again.stderr);

        m.umount();
        let log = fs::read_to_string(alice.state_dir().join("mount.log")).unwrap();
        assert!(log.contains("offline"), "the daemon went offline cleanly; log:\n{}", process::tail(&log, 20));
        assert!(process::find_panic(&log).is_none(), "{log}");
        drop(tracker);
    });
}

#[test]
fn mount_t_titorrent_ro_reads_the_folder_and_refuses_writes_with_erofs() {
    scenario(Duration::from_secs(180), || {
        titorrent_integration::bins::install_mount_helper();
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        let bob = Peer::join(&tracker, &alice, "bob");
        alice.mount();
        fs::write(alice.path("hello.txt"), b"hi bob\n").unwrap();

        let mnt = bob.mountpoint().to_path_buf();
        let mut m = SystemMount::new(&mnt);
        let out = run(
            "mount",
            [OsStr::new("-v"), "-t".as_ref(), "titorrent".as_ref(), "-o".as_ref(), "ro,listen=127.0.0.1:0".as_ref(), bob.state_dir().as_os_str(), mnt.as_os_str()],
        );
        assert!(out.status.success(), "mount -o ro: {}\n{}", out.status, out.stderr);
        m.pid = Some(reported_pid(&out));
        let entry = mounts::find(&mnt).expect("mounted");
        assert_eq!(entry.fstype, "fuse.titorrent");

        wait_for(SEE, "bob reads alice's hello.txt through the read-only mount", || {
            fs::read(mnt.join("hello.txt")).map_err(|e| e.to_string()).and_then(|b| {
                if b == b"hi bob\n" { Ok(()) } else { Err(format!("{b:?}")) }
            })
        });
        let err = fs::write(mnt.join("new.txt"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EROFS), "creating a file on a ro mount: {err}");
        let err = fs::OpenOptions::new().write(true).open(mnt.join("hello.txt")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EROFS), "opening for write on a ro mount: {err}");

        let status = titorrent(["status"]).ok("titorrent status");
        assert!(
            status.stdout.contains(&format!("{}  (", mnt.display())) && status.stdout.contains("read-only"),
            "status lists bob's read-only mount:\n{}",
            status.stdout
        );
        m.umount();
    });
}

#[test]
fn mount_failures_say_why_in_one_line() {
    scenario(Duration::from_secs(180), || {
        titorrent_integration::bins::install_mount_helper();
        let mut tracker = TrackerProc::start();
        let alice = Peer::create_group(&tracker, "alice");
        let bob = Peer::join(&tracker, &alice, "bob");
        let dir = temp_dir("titorrent-mountfail-");
        let mnt = alice.mountpoint();
        let _guard = SystemMount::new(mnt);
        let mount = |args: &[&OsStr]| run("mount", args);
        let t = |s: &'static str| OsStr::new(s);

        // The mount point does not exist.
        let missing = dir.path().join("missing");
        let out = mount(&[t("-t"), t("titorrent"), alice.state_dir().as_os_str(), missing.as_os_str()]);
        assert_eq!(out.status.code(), Some(MOUNT_FAILED), "{}", out.stderr);
        assert!(one_line(&out).contains("No such file or directory"), "{}", out.stderr);

        // The source is not a member's state directory.
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let out = mount(&[t("-t"), t("titorrent"), empty.as_os_str(), mnt.as_os_str(), t("-o"), t("listen=127.0.0.1:0")]);
        assert_eq!(out.status.code(), Some(MOUNT_FAILED), "{}", out.stderr);
        assert!(one_line(&out).contains("holds no membership"), "{}", out.stderr);

        // An option nobody knows.
        let out = mount(&[t("-t"), t("titorrent"), t("-o"), t("noauto,bogus=1"), alice.state_dir().as_os_str(), mnt.as_os_str()]);
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(one_line(&out).contains("unknown mount option \"bogus=1\""), "{}", out.stderr);

        // A configuration file with a typo: file, line, what.
        let bad = dir.path().join("bad.toml");
        fs::write(&bad, "listen = \"127.0.0.1:0\"\nuplaod_limit = 5\n").unwrap();
        let opt = format!("config={}", bad.display());
        let out = mount(&[t("-t"), t("titorrent"), t("-o"), OsStr::new(&opt), alice.state_dir().as_os_str(), mnt.as_os_str()]);
        assert_eq!(out.status.code(), Some(MOUNT_FAILED), "{}", out.stderr);
        let line = one_line(&out);
        assert!(line.contains(&format!("{}:2:1:", bad.display())) && line.contains("unknown field `uplaod_limit`"), "{line}");

        // -f: checks only, mounts nothing.
        let out = mount(&[t("-f"), t("-t"), t("titorrent"), alice.state_dir().as_os_str(), mnt.as_os_str()]);
        assert!(out.status.success(), "{}", out.stderr);
        assert!(mounts::find(mnt).is_none(), "-f mounted something");

        // Tracker down, and bob never mounted (no cached table to start from).
        tracker.stop();
        let out = mount(&[t("-t"), t("titorrent"), t("-o"), t("listen=127.0.0.1:0"), bob.state_dir().as_os_str(), bob.mountpoint().as_os_str()]);
        let _bob_guard = SystemMount::new(bob.mountpoint());
        assert_eq!(out.status.code(), Some(MOUNT_FAILED), "{}\n{}", out.stdout, out.stderr);
        assert!(one_line(&out).contains("unreachable"), "{}", out.stderr);
        assert!(mounts::find(bob.mountpoint()).is_none());
    });
}

#[test]
fn config_errors_name_the_file_and_line_and_stop_every_command() {
    let dir = temp_dir("titorrent-config-");
    let bad = dir.path().join("config.toml");
    fs::write(&bad, "# mine\n[cache]\nmax_size = \"lots\"\n").unwrap();
    let (state, mnt) = (dir.path().join("st"), dir.path().join("mnt"));
    fs::create_dir(&mnt).unwrap();
    for args in [
        vec![OsStr::new("mount"), mnt.as_os_str(), "--state".as_ref(), state.as_os_str(), "--config".as_ref(), bad.as_os_str()],
        vec![OsStr::new("members"), "--state".as_ref(), state.as_os_str(), "--config".as_ref(), bad.as_os_str()],
    ] {
        let out = titorrent(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
        let line = one_line(&out);
        assert!(line.starts_with(&format!("titorrent: {}:3:12: ", bad.display())) && line.contains("not a size"), "{line}");
    }
    // TITORRENT_CONFIG names it too; a missing explicit file is an error.
    let mut cmd = Command::new(bins::bin(bins::TITORRENT));
    cmd.args(["members", "--state"]).arg(&state).env("TITORRENT_CONFIG", dir.path().join("nope.toml"));
    let out = process::run(&mut cmd, CMD);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out).contains("nope.toml: No such file"), "{}", out.stderr);
}

#[test]
fn read_only_from_the_config_file_and_read_write_overrides_it() {
    scenario(Duration::from_secs(180), || {
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        let dir = temp_dir("titorrent-config-");
        let cfg = dir.path().join("config.toml");
        // The state dir is called "state": its [share.state] table applies.
        fs::write(&cfg, "read_only = false\nupload_limit = \"8M\"\n\n[share.state]\nread_only = true\n").unwrap();
        let cfg_s = cfg.to_string_lossy().into_owned();

        alice.mount_with(&["--config", &cfg_s]);
        let err = fs::write(alice.path("a.txt"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EROFS), "config says read_only: {err}");
        alice.unmount();

        alice.mount_with(&["--config", &cfg_s, "--read-write"]);
        fs::write(alice.path("a.txt"), b"x").expect("--read-write overrides the config");
        alice.unmount();
    });
}

#[test]
fn lock_versions_restore_and_log_act_on_paths_inside_a_mount() {
    scenario(Duration::from_secs(240), || {
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        let mut bob = Peer::join(&tracker, &alice, "bob");
        alice.mount();
        bob.mount();
        let read = |p: &Peer, want: &'static [u8]| {
            let path = p.path("plan.txt");
            wait_for(SEE, &format!("{} reads {:?}", p.name(), String::from_utf8_lossy(want)), || {
                let got = fs::read(&path).map_err(|e| e.to_string())?;
                if got == want { Ok(()) } else { Err(format!("{:?}", String::from_utf8_lossy(&got))) }
            })
        };
        let plan = alice.path("plan.txt");
        let plan_s = plan.as_os_str();
        let state = alice.state_dir().as_os_str();
        fs::write(&plan, b"one\n").unwrap();
        read(&bob, b"one\n");

        // An explicit lock: bob cannot open for write until alice unlocks.
        // No --state: the mount says whose it is (xattr user.titorrent.state_dir).
        let out = titorrent([OsStr::new("lock"), plan_s, "--ttl".as_ref(), "10m".as_ref()]).ok("titorrent lock");
        assert!(out.stdout.starts_with(&format!("locked {} until ", plan.display())), "{}", out.stdout);
        let err = fs::OpenOptions::new().write(true).open(bob.path("plan.txt")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EBUSY), "bob's open for write while alice holds the lock: {err}");
        wait_for(SEE, "`titorrent status` shows alice's lock on bob's mount", || {
            let out = titorrent(["status"]).ok("titorrent status");
            let mine = out.stdout.split("\n\n").find(|b| b.starts_with(&format!("{}  (", bob.mountpoint().display())));
            match mine {
                Some(b) if b.contains("tracker: connected") && b.contains("plan.txt by alice since") => Ok(()),
                _ => Err(out.stdout),
            }
        });
        assert_eq!(fs::read(bob.path("plan.txt")).unwrap(), b"one\n", "reading is never blocked");
        let out = titorrent([OsStr::new("unlock"), plan_s]).ok("titorrent unlock");
        assert_eq!(out.stdout.trim(), format!("unlocked {}", plan.display()));
        wait_for(SEE, "bob can open plan.txt for write again", || {
            fs::OpenOptions::new().write(true).open(bob.path("plan.txt")).map(drop).map_err(|e| e.to_string())
        });

        // A second version, then back to the first. Bob's probe above took
        // the lock for an instant; his daemon releases it as the file closes.
        wait_for(SEE, "alice writes a second version", || fs::write(&plan, b"two\n").map_err(|e| e.to_string()));
        read(&bob, b"two\n");
        let out = titorrent([OsStr::new("versions"), plan_s, "--state".as_ref(), state]).ok("titorrent versions");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines.len() >= 3 && lines[0].starts_with("VERSION"), "{}", out.stdout);
        assert!(lines[1].starts_with("v2 ") && lines[1].contains("alice") && lines[1].ends_with("(current)"), "{}", out.stdout);
        assert!(lines.iter().any(|l| l.starts_with("v1 ")), "{}", out.stdout);
        let out = titorrent([OsStr::new("restore"), plan_s, "v1".as_ref(), "--state".as_ref(), state]).ok("titorrent restore");
        assert!(out.stdout.contains("restored") && out.stdout.contains("version 1"), "{}", out.stdout);
        read(&bob, b"one\n");
        read(&alice, b"one\n");

        // The log names who did what to which path.
        let out = titorrent([OsStr::new("log"), alice.mountpoint().as_os_str(), "--state".as_ref(), state]).ok("titorrent log");
        for action in ["created", "locked", "unlocked", "edited", "restored"] {
            assert!(
                out.stdout.lines().any(|l| l.contains(" alice ") && l.contains(action) && l.contains("/plan.txt")),
                "no `alice {action} /plan.txt` line in:\n{}",
                out.stdout
            );
        }
        assert!(out.stdout.lines().all(|l| l.starts_with('#')), "{}", out.stdout);

        // Paths outside a mount are refused in one line.
        let out = titorrent([OsStr::new("lock"), "/".as_ref()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(one_line(&out).contains("is not inside a titorrent mount"), "{}", out.stderr);
        bob.unmount();
        alice.unmount();
    });
}

#[test]
fn a_deleted_file_and_a_deleted_folder_come_back_from_the_trash_on_every_member() {
    scenario(Duration::from_secs(240), || {
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        let mut bob = Peer::join(&tracker, &alice, "bob");
        alice.mount();
        bob.mount();
        let report: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        fs::create_dir_all(alice.path("photos/2026")).unwrap();
        fs::write(alice.path("report.bin"), &report).unwrap();
        fs::write(alice.path("photos/2026/a.jpg"), b"first photo").unwrap();
        fs::write(alice.path("photos/2026/b.jpg"), b"second photo").unwrap();
        let same = |p: &Peer, rel: &str, want: &[u8]| {
            let path = p.path(rel);
            wait_for(SEE, &format!("{} reads {rel}", p.name()), || match fs::read(&path) {
                Ok(got) if got == want => Ok(()),
                Ok(got) => Err(format!("{} bytes, not the {} written", got.len(), want.len())),
                Err(e) => Err(e.to_string()),
            })
        };
        same(&bob, "report.bin", &report);
        same(&bob, "photos/2026/b.jpg", b"second photo");

        // Bob deletes a file and a whole folder; alice sees them go.
        fs::remove_file(bob.path("report.bin")).unwrap();
        fs::remove_dir_all(bob.path("photos")).unwrap();
        wait_until(SEE, "alice sees both go", || !alice.path("report.bin").exists() && !alice.path("photos").exists());

        // Alice lists the trash: who deleted what, where it was.
        let out = titorrent([OsStr::new("trash"), alice.mountpoint().as_os_str()]).ok("titorrent trash");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines[0].starts_with("DELETED") && lines[0].ends_with("PATH"), "{}", out.stdout);
        for path in ["report.bin", "photos/2026/a.jpg", "photos/2026/b.jpg"] {
            assert!(lines.iter().any(|l| l.contains(" bob ") && l.ends_with(&format!("  {path}"))), "no {path} by bob in:\n{}", out.stdout);
        }
        let out = titorrent([OsStr::new("trash"), alice.path("photos").as_os_str()]).ok("titorrent trash PATH");
        assert_eq!(out.stdout.lines().count(), 3, "only what was under photos/:\n{}", out.stdout);

        // Back where they were, bytes exact, on both members.
        let out = titorrent([OsStr::new("undelete"), alice.path("report.bin").as_os_str()]).ok("titorrent undelete FILE");
        assert_eq!(out.stdout.trim(), format!("brought back {}", alice.path("report.bin").display()));
        let out = titorrent([OsStr::new("undelete"), alice.path("photos").as_os_str()]).ok("titorrent undelete DIR");
        assert!(out.stdout.contains("brought back 2 files"), "{}", out.stdout);
        for p in [&alice, &bob] {
            same(p, "report.bin", &report);
            same(p, "photos/2026/a.jpg", b"first photo");
            same(p, "photos/2026/b.jpg", b"second photo");
        }
        let out = titorrent([OsStr::new("trash"), alice.mountpoint().as_os_str()]).ok("titorrent trash");
        assert_eq!(out.stdout.trim(), "the trash is empty", "{}", out.stdout);

        // Nothing there: refused in one line.
        let out = titorrent([OsStr::new("undelete"), alice.path("never.txt").as_os_str()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(one_line(&out).contains("nothing in the trash was at"), "{}", out.stderr);
        bob.unmount();
        alice.unmount();
    });
}

#[test]
fn pin_fetches_a_whole_folder_and_reports_progress() {
    scenario(Duration::from_secs(240), || {
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        let mut bob = Peer::join(&tracker, &alice, "bob");
        alice.mount();
        bob.mount();
        fs::create_dir(alice.path("docs")).unwrap();
        let body = vec![7u8; 3 << 20];
        fs::write(alice.path("docs/a.bin"), &body).unwrap();
        fs::write(alice.path("docs/b.bin"), &body).unwrap();
        wait_until(SEE, "bob sees both files", || {
            fs::metadata(bob.path("docs/b.bin")).is_ok_and(|m| m.len() == body.len() as u64)
        });
        let out = titorrent([OsStr::new("pin"), bob.path("docs").as_os_str(), "--timeout".as_ref(), "120".as_ref()]).ok("titorrent pin");
        let last = out.stdout.lines().last().unwrap_or_default();
        assert!(last.contains("pinned") && last.contains("6.00 MiB"), "{}", out.stdout);
        assert!(bob.cache_bytes_on_disk() >= 6 << 20, "the bytes are in bob's cache");
        let out = titorrent([OsStr::new("unpin"), bob.path("docs").as_os_str()]).ok("titorrent unpin");
        assert_eq!(out.stdout.trim(), format!("unpinned {}", bob.path("docs").display()));
        bob.unmount();
        alice.unmount();
    });
}

#[test]
fn leave_needs_confirmation_then_the_credential_stops_working() {
    scenario(Duration::from_secs(120), || {
        let tracker = TrackerProc::start();
        let alice = Peer::create_group(&tracker, "alice");
        let bob = Peer::join(&tracker, &alice, "bob");
        let bob_state = bob.state_dir().as_os_str();
        let out = titorrent([OsStr::new("leave"), "--state".as_ref(), bob_state]);
        assert_eq!(out.status.code(), Some(1));
        assert!(one_line(&out).contains("run again with --yes"), "{}", out.stderr);

        let out = titorrent([OsStr::new("leave"), "--state".as_ref(), bob_state, "--yes".as_ref()]).ok("titorrent leave");
        assert!(out.stdout.starts_with("left alice-group as bob"), "{}", out.stdout);
        let out = titorrent([OsStr::new("members"), "--state".as_ref(), bob_state]);
        assert_eq!(out.status.code(), Some(1));
        assert!(one_line(&out).contains("holds no membership"), "{}", out.stderr);
        let names: Vec<String> = alice.members().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["alice"], "bob is gone from the group");
    });
}

/// The rendered text of a man page, with the warnings groff gave.
fn render(page: &Path) -> (String, String) {
    let mut cmd = Command::new("man");
    cmd.args(["--warnings=w", "--nh", "--nj", "-l"]).arg(page).env("MANWIDTH", "100").env("LC_ALL", "C");
    let out = process::run(&mut cmd, CMD);
    assert!(out.status.success(), "man -l {}: {}\n{}", page.display(), out.status, out.stderr);
    (out.stdout, out.stderr)
}

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../man")
}

#[test]
fn man_pages_render_without_warnings() {
    assert!(titorrent_integration::env::which("man").is_some(), "man(1) is missing: apt-get install man-db groff-base");
    for page in ["titorrent.1", "titorrent-tracker.8", "mount.titorrent.8", "titorrent.conf.5"] {
        let (text, warnings) = render(&man_dir().join(page));
        assert!(warnings.trim().is_empty(), "man/{page} renders with warnings:\n{warnings}");
        assert!(text.contains("NAME") && text.contains("SEE ALSO"), "man/{page} rendered:\n{text}");
    }
}

/// Every flag `--help` shows, for every command, is in the rendered titorrent(1).
#[test]
fn every_flag_the_help_shows_is_in_the_man_page() {
    let (page, _) = render(&man_dir().join("titorrent.1"));
    let flags = |help: &str| -> Vec<String> {
        help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
            .filter(|w| w.starts_with("--") && w.len() > 2 && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .filter(|w| *w != "--help" && *w != "--version")
            .map(str::to_string)
            .collect()
    };
    let top = titorrent(["--help"]).ok("titorrent --help").stdout;
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    assert!(commands.len() >= 15, "commands in --help: {commands:?}");
    for c in &commands {
        let help = titorrent([c.as_str(), "--help"]).ok(&format!("titorrent {c} --help")).stdout;
        assert!(page.contains(&format!("titorrent {c}")), "titorrent(1) has no section for `titorrent {c}`");
        for f in flags(&help) {
            assert!(page.contains(&f), "`titorrent {c} {f}` is in --help but not in titorrent(1)");
        }
    }
    let mut tracker_page = render(&man_dir().join("titorrent-tracker.8")).0;
    tracker_page.push_str(&page);
    let help = run(bins::bin(bins::TRACKER), ["--help"]).ok("titorrent-tracker --help").stdout;
    for f in flags(&help) {
        assert!(tracker_page.contains(&f), "titorrent-tracker {f} is not in titorrent-tracker(8)");
    }
    let _ = std::io::stdout().flush();
}

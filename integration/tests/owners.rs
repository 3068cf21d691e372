//! Owners, other local users and times on real mounts (issue 14): a root
//! mount serves every local user as themselves (allow_other,
//! default_permissions): a file nobody (65534) makes is nobody's on both
//! members, the permission bits refuse it someone else's file, it cannot
//! chown, root can; an owner with no name on the machine travels as its
//! number; utimensat sets both times, UTIME_NOW and UTIME_OMIT; and a
//! member mounted by a user who is not root, through fusermount3, serves
//! that user, whether the user runs `titorrent mount` or `mount DIR` for
//! an fstab line with the `user` option (noexec, as that option says, and
//! `umount DIR` by the user ends it).
//!
//! Needs root, /dev/fuse, fusermount3 and the binaries built (`cargo build
//! --workspace`). The user mount needs /dev/fuse open to other users, as
//! distributions ship it (0666): where it is not, the test opens it for
//! the mount's few seconds and puts the mode back. The fstab test adds a
//! line to /etc/fstab (mount(8) takes user mounts from there only) and
//! takes it out again.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use titorrent_integration::programs::{errno, SEE};
use titorrent_integration::{alice_and_bob, bins, mounts, scenario, wait_for, Peer, TrackerProc};

const NOBODY: u32 = 65534;

/// Runs `f` on a thread whose filesystem ids are nobody's: the kernel
/// checks its calls (and the FUSE requests carry) uid and gid 65534, with
/// none of root's file capabilities. setfsuid is per thread.
fn as_nobody<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: plain syscalls on this thread's credentials.
        unsafe {
            libc::setfsgid(NOBODY);
            libc::setfsuid(NOBODY);
        }
        f()
    })
    .join()
    .expect("the thread acting as nobody panicked")
}

/// The mountinfo line of the mount at `path` (its options are in it).
fn mountinfo_line(path: &Path) -> String {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.to_string_lossy().into_owned();
    text.lines().find(|l| l.split(' ').nth(4) == Some(want.as_str())).unwrap_or_else(|| panic!("{want} not in mountinfo")).to_string()
}

fn owner(path: &Path) -> Result<(u32, u32), String> {
    fs::symlink_metadata(path).map(|m| (m.uid(), m.gid())).map_err(|e| format!("stat {}: {e}", path.display()))
}

fn wait_owner(who: &str, path: &Path, want: (u32, u32)) {
    wait_for(SEE, &format!("{who} sees {} owned by {want:?}", path.display()), || match owner(path)? {
        got if got == want => Ok(()),
        got => Err(format!("{got:?}")),
    });
}

#[test]
fn other_users_are_themselves_and_owners_are_seen_on_the_other_member() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let shown = mountinfo_line(alice.mountpoint());
        assert!(shown.contains("allow_other"), "a root mount serves every user: {shown}");
        // The peers' temp dirs are root's 0700: let nobody reach the mounts.
        for p in [&alice, &bob] {
            fs::set_permissions(p.mountpoint().parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::create_dir(alice.path("pub")).unwrap();
        fs::set_permissions(alice.path("pub"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(alice.path("pub/roots"), b"root's\n").unwrap();

        // nobody makes a file: it is nobody's, here and on bob.
        let (mine, roots) = (alice.path("pub/mine"), alice.path("pub/roots"));
        let (m, r) = (mine.clone(), roots.clone());
        let (made, append, chown_root) = as_nobody(move || {
            let made = fs::write(&m, b"nobody's\n");
            let append = fs::OpenOptions::new().append(true).open(&r).map(drop);
            let chown_root = std::os::unix::fs::chown(&m, Some(0), Some(0));
            (made, append, chown_root)
        });
        assert!(made.is_ok(), "nobody creates in a 0777 directory: {made:?}");
        assert_eq!(errno(&append), Some(libc::EACCES), "root's 0644 file is not nobody's to write");
        assert_eq!(errno(&chown_root), Some(libc::EPERM), "nobody cannot give a file away");
        assert_eq!(owner(&mine).unwrap(), (NOBODY, NOBODY));
        wait_owner("bob", &bob.path("pub/mine"), (NOBODY, NOBODY));
        wait_owner("bob", &bob.path("pub/roots"), (0, 0));
        let m = mine.clone();
        let chown_mine = as_nobody(move || std::os::unix::fs::chown(&m, Some(NOBODY), Some(NOBODY)));
        assert!(chown_mine.is_ok(), "chown of one's own file to oneself: {chown_mine:?}");

        // root gives files away; an id without a name travels as itself.
        let nameless = 3_999_999_001;
        std::os::unix::fs::chown(&roots, Some(NOBODY), Some(NOBODY)).unwrap();
        std::os::unix::fs::chown(&mine, Some(nameless), Some(0)).unwrap();
        wait_owner("bob", &bob.path("pub/roots"), (NOBODY, NOBODY));
        wait_owner("bob", &bob.path("pub/mine"), (nameless, 0));
        let r = bob.path("pub/roots");
        let now_nobodys = as_nobody(move || fs::OpenOptions::new().append(true).open(&r).map(drop));
        assert!(now_nobodys.is_ok(), "on bob, nobody now writes the file root gave it: {now_nobodys:?}");

        // Directories and symlinks nobody makes are its own too.
        let (d, l) = (alice.path("pub/dir"), alice.path("pub/link"));
        let made = as_nobody(move || fs::create_dir(&d).and_then(|()| std::os::unix::fs::symlink("dir", &l)));
        assert!(made.is_ok(), "{made:?}");
        wait_owner("bob", &bob.path("pub/dir"), (NOBODY, NOBODY));
        wait_owner("bob", &bob.path("pub/link"), (NOBODY, NOBODY));
    });
}

/// `--no-allow-other` (mount option `noallow_other`, config `allow_other =
/// false`): a root mount that serves root only; nobody is refused at the
/// mount point, while the default root mount serves nobody as itself.
#[test]
fn no_allow_other_serves_the_mounting_user_only() {
    scenario(Duration::from_secs(120), || {
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        alice.mount_with(&["--no-allow-other"]);
        fs::write(alice.path("mine"), b"root's").unwrap();
        fs::set_permissions(alice.path("mine"), fs::Permissions::from_mode(0o644)).unwrap();
        let p = alice.path("mine");
        let r = as_nobody(move || fs::read(p).map_err(|e| e.raw_os_error()));
        assert_eq!(r, Err(Some(libc::EACCES)), "a file readable by all is still refused to another user");
        assert!(!mountinfo_line(alice.mountpoint()).contains("allow_other"), "mounted without allow_other");
        assert_eq!(fs::read(alice.path("mine")).unwrap(), b"root's", "root, who mounted, is served");
    });
}

/// setuid and setgid never reach the group (a file copied out of bob's
/// mount with them would carry them off `nosuid`), but alice, who set
/// them, keeps them on her mount; a chmod without them clears them.
#[test]
fn setuid_stays_on_the_member_that_set_it_and_a_setgid_directory_works_on_every_member() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::write(alice.path("tool"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(alice.path("tool"), fs::Permissions::from_mode(0o6755)).unwrap();
        assert_eq!(fs::metadata(alice.path("tool")).unwrap().mode() & 0o7777, 0o6755, "alice sees what she set");
        let mode = |p: &Path| fs::metadata(p).map(|m| m.mode() & 0o7777).map_err(|e| e.to_string());
        wait_for(SEE, "bob sees tool 0755", || mode(&bob.path("tool")).and_then(|m| if m == 0o755 { Ok(m) } else { Err(format!("{m:o}")) }));
        // A setgid directory of group nogroup: what bob makes in it takes
        // its group, and his subdirectory its setgid bit, as on any disk.
        fs::create_dir(alice.path("team")).unwrap();
        std::os::unix::fs::chown(alice.path("team"), None, Some(NOBODY)).unwrap();
        fs::set_permissions(alice.path("team"), fs::Permissions::from_mode(0o2775)).unwrap();
        assert_eq!(fs::metadata(alice.path("team")).unwrap().mode() & 0o7777, 0o2775);
        wait_for(SEE, "bob sees team 02775, group nogroup", || match (mode(&bob.path("team")), owner(&bob.path("team"))) {
            (Ok(0o2775), Ok((_, NOBODY))) => Ok(()),
            other => Err(format!("{other:?}")),
        });
        fs::write(bob.path("team/notes"), b"by bob\n").unwrap();
        fs::create_dir(bob.path("team/sub")).unwrap();
        assert_eq!(owner(&bob.path("team/notes")).unwrap(), (0, NOBODY), "bob's file has the directory's group");
        assert_eq!((mode(&bob.path("team/sub")), owner(&bob.path("team/sub"))), (Ok(0o2755), Ok((0, NOBODY))), "bob's subdirectory");
        wait_owner("alice", &alice.path("team/notes"), (0, NOBODY));
        wait_for(SEE, "alice sees team/sub 02755", || mode(&alice.path("team/sub")).and_then(|m| if m == 0o2755 { Ok(m) } else { Err(format!("{m:o}")) }));
        fs::set_permissions(alice.path("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(fs::metadata(alice.path("tool")).unwrap().mode() & 0o7777, 0o755, "cleared by a chmod without them");
    });
}

fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec { tv_sec: sec, tv_nsec: nsec }
}

fn utimensat(path: &Path, atime: libc::timespec, mtime: libc::timespec) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [atime, mtime];
    // SAFETY: c and times live across the call.
    match unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn utimensat_sets_both_times_and_honours_now_and_omit() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let f = alice.path("f");
        fs::write(&f, b"x").unwrap();
        let before = fs::metadata(&f).unwrap();

        utimensat(&f, timespec(1_000_000, 0), timespec(2_000_000, 0)).unwrap();
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.atime(), md.mtime()), (1_000_000, 2_000_000), "both times, distinct");
        assert!(md.ctime() >= before.ctime(), "setting times is a change: ctime {} < {}", md.ctime(), before.ctime());
        wait_for(SEE, "bob sees the mtime alice set", || match fs::metadata(bob.path("f")).map(|m| m.mtime()) {
            Ok(2_000_000) => Ok(()),
            other => Err(format!("{other:?}")),
        });

        // UTIME_OMIT keeps one time; UTIME_NOW sets one to now.
        utimensat(&f, timespec(0, libc::UTIME_OMIT), timespec(3_000_000, 0)).unwrap();
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.atime(), md.mtime()), (1_000_000, 3_000_000), "atime omitted, mtime set");
        let t0 = now_secs();
        utimensat(&f, timespec(0, libc::UTIME_NOW), timespec(0, libc::UTIME_OMIT)).unwrap();
        let md = fs::metadata(&f).unwrap();
        assert!((t0 - 1..=now_secs() + 1).contains(&md.atime()), "atime now: {} (t0 {t0})", md.atime());
        assert_eq!(md.mtime(), 3_000_000, "mtime omitted");
        utimensat(&f, timespec(0, libc::UTIME_OMIT), timespec(0, libc::UTIME_NOW)).unwrap();
        let md = fs::metadata(&f).unwrap();
        assert!((t0 - 1..=now_secs() + 1).contains(&md.mtime()), "mtime now: {} (t0 {t0})", md.mtime());
        let mtime = md.mtime();
        wait_for(SEE, "bob sees the new mtime", || match fs::metadata(bob.path("f")).map(|m| m.mtime()) {
            Ok(t) if t == mtime => Ok(()),
            other => Err(format!("{other:?}")),
        });
        // Both omitted: nothing changes.
        utimensat(&f, timespec(0, libc::UTIME_OMIT), timespec(0, libc::UTIME_OMIT)).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().mtime(), mtime);

        // Only the file's owner (or root) sets times to chosen values.
        fs::set_permissions(alice.mountpoint().parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        let g = f.clone();
        let r = as_nobody(move || utimensat(&g, timespec(5, 0), timespec(5, 0)));
        assert_eq!(errno(&r), Some(libc::EPERM), "nobody sets times on root's file");
    });
}

/// A member mounted by nobody: the daemon, its state and its mount point
/// are nobody's, and it is stopped, /dev/fuse's mode restored and the
/// mount detached on drop.
struct UserMount {
    child: Child,
    mnt: PathBuf,
    dev_fuse_open: Option<DevFuseOpen>,
}

impl Drop for UserMount {
    fn drop(&mut self) {
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if mounts::find(&self.mnt).is_some() {
            let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(&self.mnt).status();
        }
        drop(self.dev_fuse_open.take());
    }
}

/// Runs a shell command as nobody (real and effective ids); whether it
/// succeeded and what it printed.
fn run_as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "sh", "-c", script])
        .output()
        .expect("setpriv");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

#[test]
fn a_user_mounts_through_fusermount3_and_the_group_sees_their_files() {
    scenario(Duration::from_secs(120), || {
        titorrent_integration::require_fuse();
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        alice.mount();
        let carol = Peer::join(&tracker, &alice, "carol");
        let home = carol.mountpoint().parent().unwrap().to_path_buf();
        fs::write(home.join("config.toml"), "# defaults only\n").unwrap();
        chown_tree(&home, NOBODY, NOBODY);
        fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();

        let dev_fuse_open = DevFuseOpen::new();
        let child = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(bins::bin(bins::TITORRENT))
            .arg("mount")
            .arg(carol.mountpoint())
            .arg("--state")
            .arg(carol.state_dir())
            .args(["--listen", "127.0.0.1:0"])
            .env("TITORRENT_CONFIG", home.join("config.toml"))
            .env("HOME", &home)
            .stdout(Stdio::null())
            .stderr(fs::File::create(home.join("mount.log")).unwrap())
            .spawn()
            .expect("setpriv");
        let mut m = UserMount { child, mnt: carol.mountpoint().to_path_buf(), dev_fuse_open: Some(dev_fuse_open) };
        wait_for(SEE, "carol's mount by nobody", || match mounts::find(&m.mnt) {
            Some(e) if e.fstype == "fuse.titorrent" => Ok(e),
            other => Err(format!("{other:?}")),
        });
        drop(m.dev_fuse_open.take());
        let shown = mountinfo_line(&m.mnt);
        assert!(shown.contains("user_id=65534"), "mounted by nobody: {shown}");
        assert!(!shown.contains("allow_other"), "a user's mount is the user's: {shown}");

        // The kernel lets only the mount's user (its real uid) into it.
        let f = m.mnt.join("from-carol");
        let wrote = run_as_nobody(&format!("printf 'made by a user mount\\n' > '{}'", f.display()));
        assert!(wrote.0, "{wrote:?}");
        wait_for(SEE, "alice reads carol's file", || match fs::read(alice.path("from-carol")) {
            Ok(b) if b == b"made by a user mount\n" => Ok(()),
            other => Err(format!("{other:?}")),
        });
        assert_eq!(owner(&alice.path("from-carol")).unwrap(), (NOBODY, NOBODY), "carol's user owns it on alice too");
        fs::write(alice.path("from-alice"), b"hi carol\n").unwrap();
        let h = m.mnt.join("from-alice");
        wait_for(SEE, "carol reads alice's file", || match run_as_nobody(&format!("cat '{}'", h.display())) {
            (true, out) if out == "hi carol\n" => Ok(()),
            other => Err(format!("{other:?}")),
        });
        let root_in = fs::read_dir(&m.mnt).map(drop);
        assert_eq!(errno(&root_in), Some(libc::EACCES), "root is not let into a user's mount");
        // Stopped, it unmounts itself (fusermount3 -u).
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(m.child.id() as i32, libc::SIGTERM) };
        wait_for(SEE, "carol's daemon to unmount and exit", || match (m.child.try_wait(), mounts::find(&m.mnt)) {
            (Ok(Some(st)), None) => Ok(st),
            other => Err(format!("{other:?}")),
        });
    });
}

/// Opens /dev/fuse to every user while it lives, where it is not already
/// (as distributions ship it): a user's mount needs fusermount3 to open it.
/// Counted across this file's tests (they run in parallel): the mode goes
/// back when the last one is done.
struct DevFuseOpen;

/// How many `DevFuseOpen` live, and the mode to put back after the last.
static DEV_FUSE: std::sync::Mutex<(usize, Option<u32>)> = std::sync::Mutex::new((0, None));

impl DevFuseOpen {
    fn new() -> DevFuseOpen {
        let mut st = DEV_FUSE.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 == 0 {
            let mode = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777;
            st.1 = (mode & 0o006 != 0o006).then(|| {
                fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
                mode
            });
        }
        st.0 += 1;
        DevFuseOpen
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        let mut st = DEV_FUSE.lock().unwrap_or_else(|e| e.into_inner());
        st.0 -= 1;
        if st.0 == 0 {
            if let Some(mode) = st.1.take() {
                let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(mode));
            }
        }
    }
}

/// A line in /etc/fstab for as long as it lives (written by rename, so
/// mount(8) never reads half a file); on drop the line goes, and a mount
/// left at its directory is detached and its daemon stopped.
struct FstabLine {
    line: String,
    mnt: PathBuf,
}

const FSTAB: &str = "/etc/fstab";

fn write_fstab(text: &str) {
    let tmp = format!("{FSTAB}.titorrent-test.{}", std::process::id());
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, FSTAB).unwrap();
}

impl FstabLine {
    fn add(line: String, mnt: &Path) -> FstabLine {
        let mut text = fs::read_to_string(FSTAB).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        write_fstab(&text);
        FstabLine { line, mnt: mnt.to_path_buf() }
    }
}

impl Drop for FstabLine {
    fn drop(&mut self) {
        if let Ok(text) = fs::read_to_string(FSTAB) {
            let kept: String = text.lines().filter(|l| *l != self.line).map(|l| format!("{l}\n")).collect();
            write_fstab(&kept);
        }
        if mounts::find(&self.mnt).is_some() {
            let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(&self.mnt).status();
        }
        let _ = Command::new("pkill").arg("-f").arg(format!("titorrent mount {}", self.mnt.display())).status();
    }
}

/// The pids of `titorrent mount DIR` daemons for `mnt`.
fn daemons_of(mnt: &Path) -> Vec<u32> {
    let want = format!("mount\0{}\0", mnt.display());
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&want)))
        .collect()
}

#[test]
fn a_user_mounts_an_fstab_line_with_the_user_option_and_umounts_it() {
    scenario(Duration::from_secs(120), || {
        titorrent_integration::require_fuse();
        bins::install_mount_helper();
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        alice.mount();
        let carol = Peer::join(&tracker, &alice, "carol");
        let home = carol.mountpoint().parent().unwrap().to_path_buf();
        let config = home.join("config.toml");
        fs::write(&config, "# defaults only\n").unwrap();
        chown_tree(&home, NOBODY, NOBODY);
        fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
        let mnt = carol.mountpoint().to_path_buf();
        let line = format!(
            "{} {} titorrent noauto,user,listen=127.0.0.1:0,config={} 0 0",
            carol.state_dir().display(),
            mnt.display(),
            config.display()
        );
        let _fstab = FstabLine::add(line, &mnt);

        // nobody runs mount(8) (setuid root), which runs mount.titorrent
        // and the daemon as nobody; the daemon mounts through fusermount3.
        {
            let _open = DevFuseOpen::new();
            let (ok, out) = run_as_nobody(&format!("mount '{}'", mnt.display()));
            assert!(ok, "mount DIR as nobody: {out}");
        }
        let shown = mountinfo_line(&mnt);
        assert!(shown.contains(" - fuse.titorrent "), "{shown}");
        assert!(shown.contains("user_id=65534"), "mounted by nobody: {shown}");
        let flags = shown.split(' ').nth(5).unwrap();
        for f in ["nosuid", "nodev", "noexec"] {
            assert!(flags.split(',').any(|x| x == f), "fstab's `user` makes the mount {f}: {shown}");
        }
        let daemons = daemons_of(&mnt);
        assert_eq!(daemons.len(), 1, "one daemon for the mount: {daemons:?}");
        let uid = fs::metadata(format!("/proc/{}", daemons[0])).unwrap().uid();
        assert_eq!(uid, NOBODY, "the daemon runs as the user who mounted");

        // The user's files reach alice as theirs; alice's program is
        // there but, noexec, does not run.
        let f = mnt.join("from-carol");
        let wrote = run_as_nobody(&format!("printf 'mounted from fstab\\n' > '{}'", f.display()));
        assert!(wrote.0, "{wrote:?}");
        wait_for(SEE, "alice reads carol's file", || match fs::read(alice.path("from-carol")) {
            Ok(b) if b == b"mounted from fstab\n" => Ok(()),
            other => Err(format!("{other:?}")),
        });
        assert_eq!(owner(&alice.path("from-carol")).unwrap(), (NOBODY, NOBODY));
        fs::write(alice.path("tool.sh"), b"#!/bin/sh\necho ran\n").unwrap();
        fs::set_permissions(alice.path("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let tool = mnt.join("tool.sh");
        wait_for(SEE, "carol reads alice's script", || match run_as_nobody(&format!("cat '{}'", tool.display())) {
            (true, out) if out == "#!/bin/sh\necho ran\n" => Ok(()),
            other => Err(format!("{other:?}")),
        });
        let (ran, out) = run_as_nobody(&format!("'{}'", tool.display()));
        assert!(!ran && out.contains("Permission denied"), "a program on a noexec mount does not run: {ran} {out}");

        // umount by the user ends the mount and its daemon.
        let (ok, out) = run_as_nobody(&format!("umount '{}'", mnt.display()));
        assert!(ok, "umount DIR as nobody: {out}");
        wait_for(SEE, "the mount gone and its daemon exited", || match (mounts::find(&mnt), daemons_of(&mnt)) {
            (None, d) if d.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        });
    });
}

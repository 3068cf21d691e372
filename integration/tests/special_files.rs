//! Every kind of file programs make, on real mounts: symbolic links are
//! shared (the same target on the other member, dangling ones included,
//! renamed and removed like files), FIFOs and Unix sockets work inside the
//! mount but stay on the member that made them, device nodes too (made
//! locally, never shared), and `utimensat` keeps distinct times, `UTIME_NOW` and
//! `UTIME_OMIT`; then `git clone`, `cp -a` and `rsync -a` of trees with
//! symlinks, checked on the other member.
//!
//! Needs root, /dev/fuse, fusermount3, the binaries built (`cargo build
//! --workspace`), git and rsync.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;
use titorrent_integration::programs::{errno, program, require_program, run_ok, wait_for_tree, Compare, Tree, SEE};
use titorrent_integration::{alice_and_bob, scenario, wait_for};

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("cannot create a temp dir")
}

/// Waits until `path` is a symlink to `target` (lstat and readlink).
fn wait_link(who: &str, path: &Path, target: &str) {
    wait_for(SEE, &format!("{who} reads {} -> {target}", path.display()), || {
        let md = fs::symlink_metadata(path).map_err(|e| format!("lstat: {e}"))?;
        let got = fs::read_link(path).map_err(|e| format!("readlink: {e}"))?;
        match (md.file_type().is_symlink(), md.len() == target.len() as u64, got.as_os_str().as_bytes() == target.as_bytes()) {
            (true, true, true) => Ok(()),
            _ => Err(format!("{:?}, {} bytes, -> {got:?}", md.file_type(), md.len())),
        }
    });
}

fn wait_gone(who: &str, path: &Path) {
    wait_for(SEE, &format!("{who} no longer sees {}", path.display()), || match fs::symlink_metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

#[test]
fn symlinks_are_shared_with_their_targets_dangling_or_not() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("docs")).unwrap();
        symlink("README", alice.path("to-readme")).unwrap();
        symlink("../no/such/file", alice.path("docs/dangling")).unwrap();
        symlink("/etc/hostname", alice.path("absolute")).unwrap();
        let long = "d/".repeat(2000) + "end";
        symlink(&long, alice.path("long")).unwrap();
        assert_eq!(errno(&symlink("x", alice.path("to-readme"))), Some(libc::EEXIST));
        wait_link("alice", &alice.path("to-readme"), "README");
        for (rel, target) in [("to-readme", "README"), ("docs/dangling", "../no/such/file"), ("absolute", "/etc/hostname"), ("long", long.as_str())] {
            wait_link("bob", &bob.path(rel), target);
        }
        assert_eq!(errno(&fs::read(bob.path("to-readme"))), Some(libc::ENOENT), "dangling until README exists");

        // Followed by the kernel, on each member, to what its target names.
        fs::write(alice.path("README"), b"read me\n").unwrap();
        wait_for(SEE, "bob reads README through the link", || {
            fs::read(bob.path("to-readme")).map_err(|e| e.to_string()).and_then(|d| if d == b"read me\n" { Ok(()) } else { Err(format!("{d:?}")) })
        });
        let listed: Vec<_> = fs::read_dir(bob.mountpoint()).unwrap().map(|e| e.unwrap()).filter(|e| e.file_name() == "to-readme").collect();
        assert!(listed[0].file_type().unwrap().is_symlink(), "readdir tells a symlink");
        assert_eq!(errno(&fs::read_link(bob.path("README"))), Some(libc::EINVAL), "readlink of a file");

        // Renamed and removed like files, on either member.
        fs::rename(alice.path("to-readme"), alice.path("docs/readme-link")).unwrap();
        wait_link("bob", &bob.path("docs/readme-link"), "README");
        wait_gone("bob", &bob.path("to-readme"));
        fs::remove_file(bob.path("docs/dangling")).unwrap();
        wait_gone("alice", &alice.path("docs/dangling"));
        // A file renamed over a link replaces it.
        fs::write(alice.path("plain"), b"plain\n").unwrap();
        fs::rename(alice.path("plain"), alice.path("absolute")).unwrap();
        wait_for(SEE, "bob sees the file that replaced the link", || {
            let md = fs::symlink_metadata(bob.path("absolute")).map_err(|e| e.to_string())?;
            if md.is_file() { Ok(()) } else { Err(format!("{:?}", md.file_type())) }
        });
        // lutimes on the link itself.
        let times = [libc::timespec { tv_sec: 1_000_000, tv_nsec: 0 }, libc::timespec { tv_sec: 2_000_000, tv_nsec: 0 }];
        let p = cstr(&alice.path("long"));
        // SAFETY: a valid C string and two timespecs.
        assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }, 0);
        wait_for(SEE, "bob sees the link's mtime", || {
            let md = fs::symlink_metadata(bob.path("long")).map_err(|e| e.to_string())?;
            if md.mtime() == 2_000_000 { Ok(()) } else { Err(format!("mtime {}", md.mtime())) }
        });
    });
}

#[test]
fn fifos_sockets_and_device_nodes_work_locally() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("run")).unwrap();
        let fifo = alice.path("run/pipe");
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(cstr(&fifo).as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
        let md = fs::symlink_metadata(&fifo).unwrap();
        assert!(md.file_type().is_fifo() && md.mode() & 0o777 == 0o600, "{:?} {:o}", md.file_type(), md.mode());
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::OpenOptions::new().write(true).open(fifo).unwrap().write_all(b"through the pipe").unwrap())
        };
        let mut got = String::new();
        fs::File::open(&fifo).unwrap().read_to_string(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, "through the pipe");

        let sock = alice.path("run/agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind a socket in the mount");
        assert!(fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
        let mut client = std::os::unix::net::UnixStream::connect(&sock).expect("connect to it");
        client.write_all(b"ping").unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        // mknod: a FIFO too, and a device node, local like the FIFO.
        let other = cstr(&alice.path("run/other"));
        // SAFETY: valid C strings.
        assert_eq!(unsafe { libc::mknod(other.as_ptr(), libc::S_IFIFO | 0o644, 0) }, 0);
        let dev = cstr(&alice.path("run/null"));
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0, "mknod of a char device");
        let meta = fs::symlink_metadata(alice.path("run/null")).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), libc::makedev(1, 3), "the device number is kept");
        // The mount is nodev: the node exists (tar of a root filesystem
        // keeps it) but cannot be opened as the device it names.
        assert_eq!(errno(&fs::File::open(alice.path("run/null"))), Some(libc::EACCES), "a nodev mount does not open devices");
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&alice.path("run")), ["agent.sock", "null", "other", "pipe"]);
        assert_eq!(errno(&fs::remove_dir(alice.path("run"))), Some(libc::ENOTEMPTY), "rmdir with local nodes in it");
        fs::rename(alice.path("run/other"), alice.path("run/renamed")).unwrap();
        assert!(fs::symlink_metadata(alice.path("run/renamed")).unwrap().file_type().is_fifo());
        // A hard link to a FIFO: one node with two local names.
        fs::hard_link(alice.path("run/renamed"), alice.path("run/twin")).expect("ln of a FIFO");
        let (a, b) = (fs::symlink_metadata(alice.path("run/renamed")).unwrap(), fs::symlink_metadata(alice.path("run/twin")).unwrap());
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "one inode, two names");
        fs::remove_file(alice.path("run/twin")).unwrap();
        assert_eq!(fs::symlink_metadata(alice.path("run/renamed")).unwrap().nlink(), 1);
        // A directory counts its subdirectories in st_nlink.
        fs::create_dir(alice.path("run/sub")).unwrap();
        assert_eq!(fs::metadata(alice.path("run")).unwrap().nlink(), 3);
        fs::remove_dir(alice.path("run/sub")).unwrap();

        // Bob never sees them: a file made after them arrives, they do not.
        fs::write(alice.path("run/marker"), b"m").unwrap();
        wait_for(SEE, "bob sees run/marker", || fs::read(bob.path("run/marker")).map_err(|e| e.to_string()));
        assert_eq!(names(&bob.path("run")), ["marker"]);
        assert_eq!(errno(&fs::symlink_metadata(bob.path("run/pipe"))), Some(libc::ENOENT));
        assert_eq!(errno(&fs::symlink_metadata(bob.path("run/null"))), Some(libc::ENOENT), "a device node is not shared");
        drop((client, server, listener));
        for n in ["pipe", "agent.sock", "renamed", "marker", "null"] {
            fs::remove_file(alice.path(format!("run/{n}"))).unwrap();
        }
        fs::remove_dir(alice.path("run")).unwrap();
    });
}

fn utimensat(p: &Path, atime: libc::timespec, mtime: libc::timespec) {
    let times = [atime, mtime];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, cstr(p).as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
}

#[test]
fn utimensat_keeps_distinct_times_now_and_omit() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let f = alice.path("t");
        fs::write(&f, b"times").unwrap();
        let ts = |s: i64| libc::timespec { tv_sec: s, tv_nsec: 0 };
        let special = |n: i64| libc::timespec { tv_sec: 0, tv_nsec: n };
        utimensat(&f, ts(1_000_000), ts(2_000_000));
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.atime(), md.mtime()), (1_000_000, 2_000_000));
        utimensat(&f, special(libc::UTIME_OMIT), ts(3_000_000));
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.atime(), md.mtime()), (1_000_000, 3_000_000), "UTIME_OMIT keeps atime");
        utimensat(&f, ts(1_500_000), special(libc::UTIME_OMIT));
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.atime(), md.mtime()), (1_500_000, 3_000_000), "UTIME_OMIT keeps mtime");
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        utimensat(&f, special(libc::UTIME_OMIT), special(libc::UTIME_NOW));
        let md = fs::metadata(&f).unwrap();
        assert!(md.mtime() >= before - 1 && md.atime() == 1_500_000, "UTIME_NOW: mtime {} atime {}", md.mtime(), md.atime());
        // The mtime is shared; the atime is each member's own.
        let want = md.mtime();
        wait_for(SEE, "bob sees the mtime", || {
            let m = fs::metadata(bob.path("t")).map_err(|e| e.to_string())?;
            if m.mtime() == want { Ok(()) } else { Err(format!("mtime {}", m.mtime())) }
        });
    });
}

#[test]
fn git_cp_a_and_rsync_a_carry_symlinks_to_the_other_member() {
    scenario(Duration::from_secs(180), || {
        require_program("git", "git");
        require_program("rsync", "rsync");
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-links-home-");
        let src = home.path().join("tree");
        fs::create_dir_all(src.join("node_modules/.bin")).unwrap();
        fs::create_dir_all(src.join("node_modules/tool/bin")).unwrap();
        fs::write(src.join("node_modules/tool/bin/tool.js"), b"#!/usr/bin/env node\n").unwrap();
        symlink("../tool/bin/tool.js", src.join("node_modules/.bin/tool")).unwrap();
        symlink("nowhere", src.join("dangling")).unwrap();
        fs::write(src.join("README"), b"readme\n").unwrap();
        symlink("README", src.join("README.md")).unwrap();
        let expected = Tree::read(&src).unwrap();

        run_ok(program("cp", home.path(), home.path()).arg("-a").arg(&src).arg(alice.path("cp")));
        wait_for_tree("bob", &bob.path("cp"), &expected, Compare::BYTES_AND_MODES, SEE);
        let mut rsync = program("rsync", home.path(), home.path());
        rsync.arg("-a").arg(format!("{}/", src.display())).arg(format!("{}/", alice.path("rsync").display()));
        run_ok(&mut rsync);
        wait_for_tree("bob", &bob.path("rsync"), &expected, Compare::ALL, SEE);

        // A repository with a symlink, committed outside, cloned into
        // alice's mount; bob's copy is a working repository.
        let git = |dir: &Path, args: &[&str]| {
            let mut cmd = program("git", dir, home.path());
            cmd.args(["-c", "user.name=alice", "-c", "user.email=alice@example.org", "-c", "init.defaultBranch=main"]).args(args);
            run_ok(&mut cmd)
        };
        git(&src, &["init", "-q"]);
        git(&src, &["add", "."]);
        git(&src, &["commit", "-q", "-m", "links"]);
        git(alice.mountpoint(), &["clone", "-q", src.to_str().unwrap(), "clone"]);
        let work = Tree::read_without(&alice.path("clone"), &[".git/"]).unwrap();
        assert_eq!(work.difference(&expected, Compare::BYTES), None, "alice's clone");
        let all = Tree::read(&alice.path("clone")).unwrap();
        wait_for_tree("bob", &bob.path("clone"), &all, Compare::BYTES, SEE);
        let status = git(&bob.path("clone"), &["status", "--porcelain"]);
        assert_eq!(status.stdout, "", "git status on bob's copy");
    });
}

//! What POSIX tools ask of any filesystem, on a real mount: `statfs` tells
//! the cache disk's real size (`df`), a name over 255 bytes is
//! `ENAMETOOLONG` for every call that takes one, a file removed or
//! replaced the moment it is closed stays removed or replaced, a
//! directory's mtime and ctime move with its entries on every member, and a
//! program inside a directory it just made can still ask where it is.
//!
//! Needs root, /dev/fuse, fusermount3 and the binaries built (`cargo build
//! --workspace`).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;
use titorrent_integration::programs::{conflict_copies, errno, names, program, run_ok, SEE};
use titorrent_integration::{alice_and_bob, scenario, wait_for, Peer, TrackerProc};

fn statvfs(p: &Path) -> libc::statvfs {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string and a plain struct for statvfs to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs {}: {}", p.display(), std::io::Error::last_os_error());
    st
}

#[test]
fn statfs_tells_the_cache_disk_and_long_names_are_enametoolong() {
    scenario(Duration::from_secs(120), || {
        titorrent_integration::require_fuse();
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        alice.mount();

        let (mnt, disk) = (statvfs(alice.mountpoint()), statvfs(alice.state_dir()));
        assert_eq!((mnt.f_blocks, mnt.f_frsize), (disk.f_blocks, disk.f_frsize), "the mount's size is the cache disk's");
        assert_eq!(mnt.f_namemax, 255);
        // Free space moves with other writers on this machine: near, not equal.
        let (a, b) = (mnt.f_bavail as f64, disk.f_bavail as f64);
        assert!((a - b).abs() <= 0.01 * b.max(1.0), "free blocks: mount {a}, cache disk {b}");

        let longest = "n".repeat(255);
        let too_long = "n".repeat(256);
        fs::write(alice.path(&longest), b"ok").expect("a 255-byte name is fine");
        wait_for(SEE, "alice reads the 255-byte name back", || {
            fs::read(alice.path(&longest)).map_err(|e| e.to_string()).and_then(|d| if d == b"ok" { Ok(()) } else { Err(format!("{d:?}")) })
        });
        let nametoolong = Some(libc::ENAMETOOLONG);
        assert_eq!(errno(&fs::write(alice.path(&too_long), b"x")), nametoolong, "creat");
        assert_eq!(errno(&fs::create_dir(alice.path(&too_long))), nametoolong, "mkdir");
        assert_eq!(errno(&fs::rename(alice.path(&longest), alice.path(&too_long))), nametoolong, "rename");
        assert_eq!(errno(&fs::metadata(alice.path(&too_long))), nametoolong, "stat");
    });
}

/// `rm` right after a write's close (a build removing a temp file, a test
/// suite cleaning up) and `mv` of another file over one just written: the
/// publish of the closed edit is still on its way when the delete reaches
/// the tracker, which then answers the publish "no such file". That is the
/// member's own delete, not a conflict: the edit goes, no copy of it comes
/// back, and the lock is not reported as lost.
#[test]
fn a_file_removed_or_replaced_the_moment_it_is_closed_stays_gone_with_no_conflict_copy() {
    scenario(Duration::from_secs(240), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("work")).unwrap();
        let mark = alice.log_len();
        const ROUNDS: usize = 25;
        for round in 0..ROUNDS {
            fs::write(alice.path(format!("work/tmp-{round}")), format!("scratch {round}\n")).unwrap();
            fs::remove_file(alice.path(format!("work/tmp-{round}"))).unwrap();
            fs::write(alice.path(format!("work/file-{round}")), b"first\n").unwrap();
            fs::write(alice.path(format!("work/new-{round}")), format!("second {round}\n")).unwrap();
            fs::rename(alice.path(format!("work/new-{round}")), alice.path(format!("work/file-{round}"))).unwrap();
        }
        let mut want: Vec<String> = (0..ROUNDS).map(|r| format!("file-{r}")).collect();
        want.sort();
        for peer in [&alice, &bob] {
            let dir = peer.path("work");
            wait_for(SEE, &format!("{} lists exactly the replaced files", peer.name()), || {
                let got = names(&dir);
                if got == want { Ok(()) } else { Err(format!("{got:?}")) }
            });
            for round in 0..ROUNDS {
                let path = dir.join(format!("file-{round}"));
                wait_for(SEE, &format!("{} reads {}", peer.name(), path.display()), || match fs::read_to_string(&path) {
                    Ok(t) if t == format!("second {round}\n") => Ok(()),
                    other => Err(format!("{other:?}")),
                });
            }
        }
        // Conflict copies would have been published a moment after the
        // deletes: what is checked is that none appears during 2 s, so the
        // sleep between looks is the condition, not a wait for one.
        let settle = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < settle {
            for peer in [&alice, &bob] {
                let got = names(&peer.path("work"));
                assert!(conflict_copies(&got).is_empty(), "{} has conflict copies: {got:?}", peer.name());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = alice.log_since(mark);
        assert!(!log.contains('\x1b'), "alice's log file has terminal colour codes:\n{log}");
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains("ERROR")).collect();
        assert!(warnings.is_empty(), "alice's log warns about her own deletes:\n{}", warnings.join("\n"));
    });
}

/// `ls -lt`, `make` and backup tools read a directory's mtime to know its
/// entries changed: creating, renaming and removing an entry moves it (and
/// the ctime), on the member that did it at once and on the others to the
/// same time.
#[test]
fn a_directorys_times_move_with_its_entries_on_every_member() {
    scenario(Duration::from_secs(120), || {
        use std::os::unix::fs::MetadataExt;
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir_all(alice.path("src/sub")).unwrap();
        fs::create_dir(alice.path("dst")).unwrap();
        let times = |p: &Path| fs::metadata(p).map(|m| (m.mtime() * 1000 + m.mtime_nsec() / 1_000_000, m.ctime() * 1000 + m.ctime_nsec() / 1_000_000));
        // Alice's own change shows at once with her clock's time, then the
        // tracker's time of the change, which is what bob gets.
        let same_on_bob = |rel: &str, what: &str| {
            wait_for(SEE, &format!("bob's {rel} has alice's times after {what}"), || {
                match (times(&alice.path(rel)), times(&bob.path(rel))) {
                    (Ok(a), Ok(b)) if a == b => Ok(a),
                    other => Err(format!("alice's and bob's: {other:?}")),
                }
            })
        };
        let (m0, _) = same_on_bob("src", "mkdir");
        let step = |what: &str, f: &dyn Fn()| {
            std::thread::sleep(Duration::from_millis(20)); // a later millisecond than the last change
            f();
            what.to_string()
        };
        let w = step("creating a file", &|| fs::write(alice.path("src/a"), b"a").unwrap());
        let (m1, c1) = same_on_bob("src", &w);
        assert!(m1 > m0 && c1 == m1, "creating src/a moved src's times: {m0} -> {m1} (ctime {c1})");
        let (d0, _) = same_on_bob("dst", "mkdir");
        let w = step("moving it to another directory", &|| fs::rename(alice.path("src/a"), alice.path("dst/a")).unwrap());
        let (m2, _) = same_on_bob("src", &w);
        let (d1, _) = same_on_bob("dst", &w);
        assert!(m2 > m1 && d1 > d0, "a move touches both directories: src {m1} -> {m2}, dst {d0} -> {d1}");
        let (sub0, _) = same_on_bob("src/sub", "mkdir");
        let w = step("removing it", &|| fs::remove_file(alice.path("dst/a")).unwrap());
        let (d2, _) = same_on_bob("dst", &w);
        assert!(d2 > d1, "a removal touches its directory: {d1} -> {d2}");
        assert_eq!(times(&alice.path("src/sub")).unwrap().0, sub0, "and no other directory");
    });
}

/// `git init repo` makes `repo`, changes into it and asks for its working
/// directory. Its own mkdir's event, coming back from the tracker around
/// the answer, once dropped the kernel's fresh dentry: getcwd(2) then
/// failed with ENOENT. Many rounds of the same in one process, with bob's
/// mount getting the events too.
#[test]
fn a_program_in_a_directory_it_just_made_can_still_get_its_working_directory() {
    scenario(Duration::from_secs(180), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let script = r#"
import os
for i in range(150):
    os.mkdir(f"d{i}")
    os.chdir(f"d{i}")
    os.mkdir("inner")
    os.chdir("inner")
    here = os.getcwd()
    assert here.endswith(f"/d{i}/inner"), here
    os.chdir("../..")
print("ok")
"#;
        let home = tempfile::tempdir().unwrap();
        let out = run_ok(program("/usr/bin/python3", alice.mountpoint(), home.path()).arg("-c").arg(script));
        assert_eq!(out.stdout.trim(), "ok");
        wait_for(SEE, "bob lists alice's 150 directories", || {
            let n = names(bob.mountpoint());
            if n.len() == 150 { Ok(()) } else { Err(format!("{} names", n.len())) }
        });
        assert!(bob.path("d149/inner").is_dir());
    });
}

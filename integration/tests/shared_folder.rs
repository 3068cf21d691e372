//! Everything a shared folder must do, on real mounts: a tracker and two or
//! three members, each assertion something a member checks by hand (bytes
//! read on another member, the errno a program gets, names listed, `stat`,
//! `getfattr`, `titorrent members`/`log`/`versions`).
//!
//! Needs root, /dev/fuse, fusermount3, the binaries built (`cargo build
//! --workspace`) and getfattr (package attr).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use titorrent_integration::content::describe_difference;
use titorrent_integration::programs::{
    conflict_copies, errno, getfattr, names, program, run, run_ok, titorrent_ok, wait_for_content, wait_for_members,
    wait_for_tree, write_sample_tree, Compare, Tree, SEE,
};
use titorrent_integration::process::{tail, Daemon};
use titorrent_integration::programs::UnmountOnDrop;
use titorrent_integration::{assert_same_bytes, bins, mounts, scenario, wait_for, wait_until, Pattern, Peer, TrackerProc};

use libc::{EBUSY, EEXIST, ENOENT, ENOTEMPTY, EROFS};

const MIB: u64 = 1 << 20;
/// Lease ttl of the trackers in lease scenarios: short, so they stay fast.
const LEASE_TTL_S: u64 = 3;

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("cannot create a temp dir")
}

/// A tracker (`--lease-ttl` when given) and members joined by the first,
/// all mounted.
fn group(lease_ttl: Option<u64>, who: &[&str]) -> (TrackerProc, Vec<Peer>) {
    titorrent_integration::require_fuse();
    let tracker = TrackerProc::start_with_lease_ttl(lease_ttl);
    let mut peers = vec![Peer::create_group(&tracker, who[0])];
    for name in &who[1..] {
        let p = Peer::join(&tracker, &peers[0], name);
        peers.push(p);
    }
    for p in &mut peers {
        p.mount();
    }
    (tracker, peers)
}

fn alice_and_bob() -> (TrackerProc, Peer, Peer) {
    let (t, mut v) = group(None, &["alice", "bob"]);
    let bob = v.pop().unwrap();
    (t, v.pop().unwrap(), bob)
}

fn open_for_write(p: &Path) -> std::io::Result<fs::File> {
    OpenOptions::new().write(true).open(p)
}

fn mode_of(p: &Path) -> Result<u32, String> {
    fs::metadata(p).map(|m| m.permissions().mode() & 0o7777).map_err(|e| format!("stat {}: {e}", p.display()))
}

/// Waits until `p` no longer exists for `who` (stat says ENOENT).
fn wait_gone(who: &str, p: &Path) {
    wait_for(SEE, &format!("{who} no longer sees {}", p.display()), || match fs::symlink_metadata(p) {
        Err(e) if e.raw_os_error() == Some(ENOENT) => Ok(()),
        Err(e) => Err(format!("stat: {e}")),
        Ok(m) => Err(format!("still there ({} bytes)", m.len())),
    });
}

/// Asserts that for all of `window`, `probe` keeps failing with `want`
/// (polled; returns as soon as the window is over).
#[track_caller]
fn keeps_failing_with(window: Duration, what: &str, want: i32, mut probe: impl FnMut() -> std::io::Result<()>) {
    let end = Instant::now() + window;
    let mut tries = 0;
    while Instant::now() < end {
        let r = probe();
        tries += 1;
        assert_eq!(errno(&r), Some(want), "{what} (try {tries}, {:?} into the window): {r:?}", window - (end - Instant::now()));
        std::thread::sleep(Duration::from_millis(250).min(end.saturating_duration_since(Instant::now())));
    }
}

#[test]
fn nested_directories_are_shared_and_rmdir_refuses_a_non_empty_one() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir_all(alice.path("projects/2025/q1")).unwrap();
        fs::write(alice.path("projects/top.txt"), b"top\n").unwrap();
        fs::write(alice.path("projects/2025/q1/deep.txt"), b"deep down\n").unwrap();
        wait_for_content(&bob, "projects/2025/q1/deep.txt", b"deep down\n", SEE);
        wait_for_content(&bob, "projects/top.txt", b"top\n", SEE);
        assert!(fs::metadata(bob.path("projects/2025")).unwrap().is_dir());
        assert_eq!(names(&bob.path("projects")), ["2025", "top.txt"]);

        for d in ["projects", "projects/2025", "projects/2025/q1"] {
            let r = fs::remove_dir(bob.path(d));
            assert_eq!(errno(&r), Some(ENOTEMPTY), "bob's rmdir {d}: {r:?}");
        }
        let r = fs::create_dir(bob.path("projects/2025"));
        assert_eq!(errno(&r), Some(EEXIST), "bob's mkdir of an existing directory: {r:?}");
        let r = fs::remove_file(bob.path("projects/2025"));
        assert!(r.is_err(), "unlink of a directory succeeded");

        // Bob empties and removes the inner two; alice sees them go.
        fs::remove_file(bob.path("projects/2025/q1/deep.txt")).unwrap();
        fs::remove_dir(bob.path("projects/2025/q1")).unwrap();
        fs::remove_dir(bob.path("projects/2025")).unwrap();
        wait_gone("alice", &alice.path("projects/2025"));
        assert_eq!(names(&alice.path("projects")), ["top.txt"]);
        let r = fs::remove_dir(alice.path("projects"));
        assert_eq!(errno(&r), Some(ENOTEMPTY), "alice's rmdir projects with top.txt in it: {r:?}");
        fs::remove_file(alice.path("projects/top.txt")).unwrap();
        fs::remove_dir(alice.path("projects")).unwrap();
        wait_until(SEE, "bob's root is empty", || names(bob.mountpoint()).is_empty());
    });
}

#[test]
fn an_unlink_on_one_member_is_seen_by_every_other() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, peers) = group(None, &["alice", "bob", "carol"]);
        let [alice, bob, carol] = &peers[..] else { unreachable!() };
        fs::write(alice.path("x.txt"), b"x\n").unwrap();
        fs::write(alice.path("y.txt"), b"y\n").unwrap();
        for p in [bob, carol] {
            wait_for_content(p, "x.txt", b"x\n", SEE);
            wait_for_content(p, "y.txt", b"y\n", SEE);
        }
        fs::remove_file(carol.path("x.txt")).unwrap();
        for p in [alice, bob] {
            wait_gone(p.name(), &p.path("x.txt"));
            assert_eq!(names(p.mountpoint()), ["y.txt"], "{}'s listing", p.name());
            let r = fs::read(p.path("x.txt"));
            assert_eq!(errno(&r), Some(ENOENT), "{} reads the deleted x.txt: {r:?}", p.name());
        }
        fs::remove_file(alice.path("y.txt")).unwrap();
        for p in [bob, carol] {
            wait_until(SEE, &format!("{}'s root is empty", p.name()), || names(p.mountpoint()).is_empty());
        }
    });
}

#[test]
fn a_rename_over_an_existing_file_replaces_it_for_everyone() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("d")).unwrap();
        fs::write(alice.path("d/report.txt"), b"the old report\n").unwrap();
        fs::write(alice.path("d/report.new"), b"the new report, longer than the old one\n").unwrap();
        wait_for_content(&bob, "d/report.new", b"the new report, longer than the old one\n", SEE);
        wait_for_content(&bob, "d/report.txt", b"the old report\n", SEE);

        fs::rename(bob.path("d/report.new"), bob.path("d/report.txt")).unwrap();
        assert_eq!(names(&bob.path("d")), ["report.txt"], "bob's listing right after his rename");
        assert_eq!(fs::read(bob.path("d/report.txt")).unwrap(), b"the new report, longer than the old one\n");
        wait_for(SEE, "alice sees only report.txt, with the new bytes", || {
            let n = names(&alice.path("d"));
            let b = fs::read(alice.path("d/report.txt")).map_err(|e| e.to_string())?;
            if n == ["report.txt"] && b == b"the new report, longer than the old one\n" {
                Ok(())
            } else {
                Err(format!("{n:?}, {:?}", String::from_utf8_lossy(&b)))
            }
        });

        // A directory renamed over an empty one, and into another directory.
        fs::create_dir(alice.path("empty")).unwrap();
        fs::rename(alice.path("d"), alice.path("empty")).unwrap();
        wait_for_content(&bob, "empty/report.txt", b"the new report, longer than the old one\n", SEE);
        assert_eq!(names(bob.mountpoint()), ["empty"]);
    });
}

#[test]
fn a_file_another_member_holds_open_for_write_cannot_be_renamed_or_deleted() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::write(alice.path("ledger.txt"), b"v1\n").unwrap();
        fs::write(alice.path("other.txt"), b"other\n").unwrap();
        wait_for_content(&bob, "ledger.txt", b"v1\n", SEE);
        wait_for_content(&bob, "other.txt", b"other\n", SEE);

        let mut held = OpenOptions::new().write(true).truncate(true).open(alice.path("ledger.txt")).unwrap();
        let r = fs::rename(bob.path("ledger.txt"), bob.path("renamed.txt"));
        assert_eq!(errno(&r), Some(EBUSY), "bob renames ledger.txt that alice holds open for write: {r:?}");
        let r = fs::remove_file(bob.path("ledger.txt"));
        assert_eq!(errno(&r), Some(EBUSY), "bob deletes ledger.txt that alice holds open for write: {r:?}");
        let r = fs::rename(bob.path("other.txt"), bob.path("ledger.txt"));
        assert_eq!(errno(&r), Some(EBUSY), "bob renames other.txt over the locked ledger.txt: {r:?}");
        assert_eq!(names(bob.mountpoint()), ["ledger.txt", "other.txt"], "bob's listing after the refusals");
        assert_eq!(names(alice.mountpoint()), ["ledger.txt", "other.txt"], "alice's listing after the refusals");

        held.write_all(b"v2 by alice\n").unwrap();
        drop(held);
        wait_for_content(&bob, "ledger.txt", b"v2 by alice\n", SEE);
        // Unlocked now: bob's rename and delete go through.
        wait_for(SEE, "bob renames ledger.txt once alice closed it", || {
            fs::rename(bob.path("ledger.txt"), bob.path("renamed.txt")).map_err(|e| e.to_string())
        });
        fs::remove_file(bob.path("renamed.txt")).unwrap();
        wait_until(SEE, "alice sees only other.txt", || names(alice.mountpoint()) == ["other.txt"]);
    });
}

#[test]
fn truncate_chmod_and_touch_are_shared_and_seen_by_stat() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        let home = temp_dir("titorrent-attrs-home-");
        let body: Vec<u8> = (0..100u8).collect();
        fs::create_dir(alice.path("tools")).unwrap();
        fs::write(alice.path("tools/data.bin"), &body).unwrap();
        wait_for_content(&bob, "tools/data.bin", &body, SEE);
        let cwd = alice.mountpoint();

        // truncate(1) shrinks and grows by path, without opening the file.
        run_ok(program("truncate", cwd, home.path()).args(["-s", "10", "tools/data.bin"]));
        wait_for_content(&bob, "tools/data.bin", &body[..10], SEE);
        run_ok(program("truncate", cwd, home.path()).args(["-s", "20", "tools/data.bin"]));
        let mut grown = body[..10].to_vec();
        grown.resize(20, 0);
        wait_for_content(&bob, "tools/data.bin", &grown, SEE);

        run_ok(program("chmod", cwd, home.path()).args(["0751", "tools"]));
        run_ok(program("chmod", cwd, home.path()).args(["0600", "tools/data.bin"]));
        wait_for(SEE, "bob's stat shows tools 0751 and data.bin 0600", || {
            match (mode_of(&bob.path("tools"))?, mode_of(&bob.path("tools/data.bin"))?) {
                (0o751, 0o600) => Ok(()),
                (d, f) => Err(format!("tools {d:o}, data.bin {f:o}")),
            }
        });

        // 2001-02-03 04:05:06 UTC
        run_ok(program("touch", cwd, home.path()).args(["-m", "-d", "2001-02-03 04:05:06 UTC", "tools/data.bin"]));
        wait_for(SEE, "bob's stat shows data.bin's mtime 981173106", || {
            let m = fs::metadata(bob.path("tools/data.bin")).map_err(|e| e.to_string())?.mtime();
            if m == 981_173_106 { Ok(()) } else { Err(format!("mtime {m}")) }
        });
        // And the other way, bob touching, alice's stat.
        run_ok(program("touch", bob.mountpoint(), home.path()).args(["-m", "-d", "@1234567890", "tools/data.bin"]));
        wait_for(SEE, "alice's stat shows data.bin's mtime 1234567890", || {
            let m = fs::metadata(alice.path("tools/data.bin")).map_err(|e| e.to_string())?.mtime();
            if m == 1_234_567_890 { Ok(()) } else { Err(format!("mtime {m}")) }
        });
        assert_eq!(fs::read(alice.path("tools/data.bin")).unwrap(), grown, "touch changed no byte");
        assert_eq!(mode_of(&alice.path("tools/data.bin")).unwrap(), 0o600, "touch kept the mode");

        // What scripts do all the time: touch a file, then append to it at once.
        let out = run(program("sh", bob.mountpoint(), home.path()).args(["-c", "touch tools/data.bin && echo appended >> tools/data.bin"]));
        assert!(out.status.success(), "`touch f && echo appended >> f` on bob's mount failed: {}", out.stderr.trim());
        let mut appended = grown.clone();
        appended.extend_from_slice(b"appended\n");
        wait_for_content(&alice, "tools/data.bin", &appended, SEE);
    });
}

#[test]
fn an_invitation_expires_after_its_ttl_and_works_only_once() {
    scenario(Duration::from_secs(120), || {
        titorrent_integration::require_fuse();
        let tracker = TrackerProc::start();
        let mut alice = Peer::create_group(&tracker, "alice");
        let join_fails = |invite: &str, member: &str| {
            let state = temp_dir("titorrent-refused-");
            let out = alice.cli(["join", invite, "--member", member, "--state", state.path().to_str().unwrap()]);
            assert!(!out.status.success(), "`titorrent join` as {member} with a spent invite succeeded:\n{}", out.stdout);
            assert!(
                out.stderr.contains("invite unknown, expired or used up"),
                "`titorrent join` as {member} does not say why it failed:\n{}",
                out.stderr
            );
        };

        let short = alice.invite_with(&["--ttl", "1"]);
        let issued = Instant::now();
        // Nothing to poll but the clock: the tracker keeps the expiry to itself.
        wait_until(Duration::from_secs(5), "the 1 s invitation to be past its expiry", || {
            issued.elapsed() >= Duration::from_millis(1500)
        });
        join_fails(&short, "mallory");

        let once = alice.invite();
        let mut bob = Peer::join_with_invite(Some(tracker.addr()), &once, "bob");
        join_fails(&once, "carol");

        alice.mount();
        bob.mount();
        wait_for_members(&alice, &[("alice", true), ("bob", true)], SEE);
        fs::write(bob.path("hello.txt"), b"bob joined\n").unwrap();
        wait_for_content(&alice, "hello.txt", b"bob joined\n", SEE);
    });
}

#[test]
fn a_member_who_leaves_disappears_and_its_credential_stops_working() {
    scenario(Duration::from_secs(150), || {
        let (_tracker, mut alice, mut bob) = alice_and_bob();
        wait_for_members(&alice, &[("alice", true), ("bob", true)], SEE);
        fs::write(bob.path("from-bob.txt"), b"bob's file stays\n").unwrap();
        wait_for_content(&alice, "from-bob.txt", b"bob's file stays\n", SEE);
        let keep = temp_dir("titorrent-old-credential-");
        let member_toml = bob.state_dir().join("member.toml");
        fs::copy(&member_toml, keep.path().join("member.toml")).unwrap();

        bob.unmount();
        let state = bob.state_dir().to_str().unwrap().to_string();
        let out = titorrent_ok(&bob, ["leave", "--state", &state, "--yes"]);
        assert!(out.stdout.starts_with("left "), "{}", out.stdout);
        wait_for_members(&alice, &[("alice", true)], SEE);
        assert_eq!(fs::read(alice.path("from-bob.txt")).unwrap(), b"bob's file stays\n", "bob's file after he left");

        // With the membership gone, bob's commands and mount fail.
        let out = bob.cli(["members", "--state", &state]);
        assert!(!out.status.success(), "`titorrent members` after leaving succeeded:\n{}", out.stdout);
        let mnt = bob.mountpoint().to_str().unwrap().to_string();
        let out = bob.cli(["mount", &mnt, "--state", &state, "--listen", "127.0.0.1:0"]);
        assert!(!out.status.success(), "`titorrent mount` after leaving succeeded:\n{}", out.stdout);
        assert!(mounts::find(bob.mountpoint()).is_none(), "bob's mount point is mounted");

        // A copy of the old credential is refused by the tracker itself.
        fs::copy(keep.path().join("member.toml"), &member_toml).unwrap();
        let out = bob.cli(["members", "--state", &state]);
        assert!(!out.status.success(), "`titorrent members` with the old credential succeeded:\n{}", out.stdout);
        assert!(out.stderr.contains("not authenticated"), "`titorrent members` with the old credential: {}", out.stderr);
        let out = bob.cli(["invite", "--state", &state]);
        assert!(!out.status.success(), "`titorrent invite` with the old credential succeeded:\n{}", out.stdout);
        // Its mount must not work as bob's: either the daemon gives up, or
        // (today) it shows the cached table read-only, every write refused,
        // and says the tracker refused it.
        let mut cmd = std::process::Command::new(bins::bin(bins::TITORRENT));
        cmd.env("TITORRENT_CONFIG", bob.state_dir().parent().unwrap().join("config.toml"))
            .args(["mount", &mnt, "--state", &state, "--listen", "127.0.0.1:0"]);
        let logs = temp_dir("titorrent-old-credential-logs-");
        let daemon = Daemon::spawn("bob's mount with the old credential", cmd, logs.path(), "mount");
        let _unmount = UnmountOnDrop(bob.mountpoint().to_path_buf());
        let mounted = wait_for(Duration::from_secs(30), "bob's mount with the old credential to exit or mount", || {
            if daemon.exited().is_some() {
                return Ok(false);
            }
            if mounts::find(bob.mountpoint()).is_some() && daemon.own_stdout().contains("mounted ") {
                return Ok(true);
            }
            Err(tail(&daemon.stderr(), 5))
        });
        if mounted {
            let r = fs::write(bob.path("sneaky.txt"), b"x");
            let stderr = daemon.stderr();
            daemon.terminate(Duration::from_secs(20)).ok();
            mounts::force_unmount(bob.mountpoint());
            assert_eq!(errno(&r), Some(EROFS), "a write on the mount of a member who left: {r:?}");
            assert!(stderr.contains("refused this member"), "the mount of a member who left does not say why it is read-only:\n{stderr}");
        } else {
            assert!(
                daemon.stderr().contains("not authenticated") || daemon.stderr().contains("refused"),
                "the mount with the old credential failed without saying why:\n{}",
                daemon.stderr()
            );
        }
        assert!(!names(alice.mountpoint()).contains(&"sneaky.txt".to_string()));
        alice.unmount();
    });
}

#[test]
fn members_show_who_is_online_and_unmount_goes_offline_releasing_the_lock() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, mut peers) = group(None, &["alice", "bob", "carol"]);
        let mut carol = peers.pop().unwrap();
        let mut bob = peers.pop().unwrap();
        let alice = peers.pop().unwrap();
        for p in [&alice, &bob, &carol] {
            wait_for_members(p, &[("alice", true), ("bob", true), ("carol", true)], SEE);
        }
        carol.unmount();
        wait_for_members(&alice, &[("alice", true), ("bob", true), ("carol", false)], SEE);

        fs::write(alice.path("shared.txt"), b"v1\n").unwrap();
        wait_for_content(&bob, "shared.txt", b"v1\n", SEE);
        let mut held = OpenOptions::new().write(true).truncate(true).open(bob.path("shared.txt")).unwrap();
        held.write_all(b"bob's edit\n").unwrap();
        let r = open_for_write(&alice.path("shared.txt"));
        assert_eq!(errno(&r), Some(EBUSY), "alice's open for write while bob holds it: {r:?}");
        wait_for(SEE, "alice's getfattr shows bob as the lock holder", || {
            let v = getfattr(&alice.path("shared.txt"), "user.titorrent.lock_holder")?;
            if v.starts_with("bob since ") { Ok(()) } else { Err(v) }
        });

        // Unmounting with a file open is refused, and changes nothing.
        let out = bob.cli([std::ffi::OsStr::new("unmount"), bob.mountpoint().as_os_str()]);
        assert!(!out.status.success(), "`titorrent unmount` with a file open for write succeeded");
        assert!(out.stderr.to_lowercase().contains("busy"), "`titorrent unmount` with a file open: {}", out.stderr);
        assert!(mounts::find(bob.mountpoint()).is_some(), "bob's mount is gone");

        drop(held);
        // Alice fetches bob's edit while he is online (an edit whose only
        // copy leaves with its author waits for him: see warn_sole_copies).
        wait_for_content(&alice, "shared.txt", b"bob's edit\n", SEE);
        bob.unmount();
        wait_for_members(&alice, &[("alice", true), ("bob", false), ("carol", false)], SEE);
        wait_for_content(&alice, "shared.txt", b"bob's edit\n", SEE);
        wait_for(SEE, "alice can open shared.txt for write: bob's lock is released", || {
            open_for_write(&alice.path("shared.txt")).map(drop).map_err(|e| e.to_string())
        });
        wait_for(SEE, "alice's getfattr shows no lock holder", || match getfattr(&alice.path("shared.txt"), "user.titorrent.lock_holder") {
            Err(e) if e.contains("No such attribute") => Ok(()),
            other => Err(format!("{other:?}")),
        });
    });
}

#[test]
fn a_member_back_from_offline_sees_exactly_the_tree_the_others_made_meanwhile() {
    scenario(Duration::from_secs(150), || {
        let (_tracker, alice, mut bob) = alice_and_bob();
        let start = write_sample_tree(alice.mountpoint(), 41);
        wait_for_tree("bob", bob.mountpoint(), &start, Compare::ALL, SEE);
        bob.unmount();

        // While bob is away, alice adds, edits, deletes and renames files
        // and directories.
        fs::create_dir_all(alice.path("new/inner")).unwrap();
        fs::write(alice.path("new/inner/added.txt"), b"added while bob was away\n").unwrap();
        fs::write(alice.path("docs/readme.txt"), b"edited while bob was away\n").unwrap();
        Pattern::new(42).write_file(&alice.path("data/blob.bin"), 2 * MIB + 7).unwrap();
        fs::remove_file(alice.path("docs/empty.txt")).unwrap();
        fs::remove_dir(alice.path("data/empty-dir")).unwrap();
        fs::rename(alice.path("bin"), alice.path("tools")).unwrap();
        fs::rename(alice.path("docs/private/secret.txt"), alice.path("new/secret.txt")).unwrap();
        fs::set_permissions(alice.path("tools/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        let expected = Tree::read(alice.mountpoint()).unwrap();
        assert!(expected.0.contains_key("tools/run.sh") && !expected.0.contains_key("bin"), "{:?}", expected.paths());

        bob.mount();
        wait_for_tree("bob, back", bob.mountpoint(), &expected, Compare::ALL, SEE);
    });
}

#[test]
fn a_mount_made_while_the_tracker_is_down_reads_its_cache_refuses_writes_then_goes_live() {
    scenario(Duration::from_secs(150), || {
        let (mut tracker, alice, mut bob) = alice_and_bob();
        fs::create_dir(alice.path("docs")).unwrap();
        fs::write(alice.path("docs/a.txt"), b"cached on bob\n").unwrap();
        let pattern = Pattern::random("cached.bin");
        pattern.write_file(&alice.path("cached.bin"), 2 * MIB).unwrap();
        let big = pattern.bytes_at(0, 2 * MIB as usize);
        wait_for_content(&bob, "docs/a.txt", b"cached on bob\n", SEE);
        wait_for_content(&bob, "cached.bin", &big, SEE);
        bob.unmount();

        tracker.kill9();
        let mark = bob.log_len();
        bob.mount();
        assert_eq!(fs::read(bob.path("docs/a.txt")).unwrap(), b"cached on bob\n", "bob reads his cache offline");
        assert_same_bytes("bob's cached.bin offline", &fs::read(bob.path("cached.bin")).unwrap(), &big);
        assert_eq!(names(bob.mountpoint()), ["cached.bin", "docs"]);
        let r = fs::write(bob.path("new.txt"), b"x");
        assert_eq!(errno(&r), Some(EROFS), "bob creates a file offline: {r:?}");
        let r = open_for_write(&bob.path("docs/a.txt"));
        assert_eq!(errno(&r), Some(EROFS), "bob opens a file for write offline: {r:?}");
        let r = fs::create_dir(bob.path("newdir"));
        assert_eq!(errno(&r), Some(EROFS), "bob's mkdir offline: {r:?}");
        let r = fs::remove_file(bob.path("docs/a.txt"));
        assert_eq!(errno(&r), Some(EROFS), "bob's unlink offline: {r:?}");
        let log = bob.log_since(mark);
        assert!(
            log.contains("tracker unreachable") && log.contains("read-only"),
            "bob's log does not say why the folder is read-only:\n{log}"
        );

        tracker.restart();
        wait_for(Duration::from_secs(60), "bob's write succeeds once the tracker is back", || {
            fs::write(bob.path("back.txt"), b"bob is live again\n").map_err(|e| e.to_string())
        });
        wait_for_content(&alice, "back.txt", b"bob is live again\n", SEE);
    });
}

#[test]
fn a_killed_writer_loses_its_lock_after_the_ttl_and_its_unpublished_edit_comes_back_as_a_conflict_copy() {
    scenario(Duration::from_secs(150), || {
        let (_tracker, mut v) = group(Some(LEASE_TTL_S), &["alice", "bob"]);
        let bob = v.pop().unwrap();
        let mut alice = v.pop().unwrap();
        fs::write(alice.path("report.txt"), b"published v1\n").unwrap();
        wait_for_content(&bob, "report.txt", b"published v1\n", SEE);

        // Alice's edit: written, never closed; her daemon dies.
        let edit = Pattern::random("alice's unpublished edit").bytes_at(0, 300_000);
        let mut held = OpenOptions::new().write(true).truncate(true).open(alice.path("report.txt")).unwrap();
        held.write_all(&edit).unwrap();
        let r = open_for_write(&bob.path("report.txt"));
        assert_eq!(errno(&r), Some(EBUSY), "bob's open for write while alice writes: {r:?}");
        alice.kill9();
        drop(held);

        // Nobody renews alice's lease: after the ttl, bob may write.
        let killed = Instant::now();
        let mut bobs = wait_for(Duration::from_secs(LEASE_TTL_S + 15), "bob opens report.txt for write", || {
            OpenOptions::new().write(true).truncate(true).open(bob.path("report.txt")).map_err(|e| e.to_string())
        });
        eprintln!("bob got the lock {:?} after alice's daemon was killed", killed.elapsed());
        bobs.write_all(b"bob's v2\n").unwrap();
        drop(bobs);
        assert_eq!(fs::read(bob.path("report.txt")).unwrap(), b"bob's v2\n");

        // Alice back: her bytes are published next to the file, not over bob's.
        alice.mount();
        let copy = wait_for(SEE, "bob sees alice's conflict copy next to report.txt", || {
            let n = names(bob.mountpoint());
            match conflict_copies(&n)[..] {
                [one] => Ok(one.clone()),
                _ => Err(format!("{n:?}")),
            }
        });
        assert!(copy.starts_with("report (conflict from alice ") && copy.ends_with(").txt"), "{copy}");
        wait_for_content(&bob, &copy, &edit, SEE);
        wait_for_content(&alice, &copy, &edit, SEE);
        wait_for_content(&alice, "report.txt", b"bob's v2\n", SEE);
        let mut want = vec![copy.clone(), "report.txt".to_string()];
        want.sort();
        assert_eq!(names(bob.mountpoint()), want, "bob's listing");
        assert_eq!(names(alice.mountpoint()), want, "alice's listing");
    });
}

/// Writes back and drops from the page cache every file called `name` in
/// the directories under `objects` (a member's object store).
fn drop_from_page_cache(objects: &Path, name: &str) {
    use std::os::fd::AsRawFd;
    let mut found = 0;
    for dir in fs::read_dir(objects).unwrap().flatten() {
        let Ok(f) = fs::File::open(dir.path().join(name)) else { continue };
        f.sync_all().unwrap();
        // SAFETY: an advisory call on a descriptor we own.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0, "posix_fadvise");
        found += 1;
    }
    assert!(found > 0, "no {name} under {}", objects.display());
}

#[test]
fn a_large_file_edited_in_place_by_a_killed_writer_comes_back_whole_as_a_conflict_copy() {
    use std::os::unix::fs::FileExt;
    scenario(Duration::from_secs(180), || {
        let (_tracker, mut v) = group(Some(LEASE_TTL_S), &["alice", "bob"]);
        let bob = v.pop().unwrap();
        let mut alice = v.pop().unwrap();
        // Large enough that the staging copy is copy-on-write over the
        // published version and its background copy takes a while.
        let size = 256 * MIB;
        let base = Pattern::random("a large file edited in place").bytes_at(0, size as usize);
        fs::write(alice.path("disk.img"), &base).unwrap();
        wait_for(SEE, "bob lists disk.img at its size", || match fs::metadata(bob.path("disk.img")) {
            Ok(m) if m.len() == size => Ok(()),
            other => Err(format!("{other:?}")),
        });

        // An edit in place (no O_TRUNC): 4 KiB in the middle, never closed,
        // and the daemon dies before its copy of the base can be complete:
        // with the base's pages out of the page cache, that copy reads
        // 256 MiB from disk.
        drop_from_page_cache(&alice.state_dir().join("cache/objects"), "disk.img");
        let held = OpenOptions::new().write(true).open(alice.path("disk.img")).unwrap();
        held.write_all_at(&[0xAB; 4096], 100 * MIB + 5).unwrap();
        alice.kill9();
        drop(held);
        let mut edit = base.clone();
        edit[(100 * MIB + 5) as usize..(100 * MIB + 5 + 4096) as usize].fill(0xAB);

        let mark = alice.log_len();
        alice.mount();
        let copy = wait_for(SEE, "alice's conflict copy of disk.img appears", || {
            let n = names(alice.mountpoint());
            match conflict_copies(&n)[..] {
                [one] => Ok(one.clone()),
                _ => Err(format!("{n:?}")),
            }
        });
        let log = alice.log_since(mark);
        assert!(
            log.contains("completed the staging copy the previous run left"),
            "the restarted daemon did not complete a copy-on-write staging copy (was it complete before the kill?):\n{log}"
        );
        // The copy's name is there before its bytes are published.
        let got = wait_for(SEE, "alice reads the conflict copy whole", || match fs::read(alice.path(&copy)) {
            Ok(b) if b.len() == edit.len() => Ok(b),
            other => Err(format!("{:?}", other.map(|b| b.len()))),
        });
        assert_same_bytes("alice's conflict copy: the version edited, with alice's 4 KiB", &got, &edit);
        let on_bob = wait_for(SEE, "bob reads the conflict copy whole", || match fs::read(bob.path(&copy)) {
            Ok(b) if b.len() == edit.len() => Ok(b),
            other => Err(format!("{:?}", other.map(|b| b.len()))),
        });
        assert_same_bytes("bob's read of the conflict copy", &on_bob, &edit);
        assert_same_bytes("disk.img on bob: the published version", &fs::read(bob.path("disk.img")).unwrap(), &base);
    });
}

#[test]
fn a_publish_in_flight_when_the_tracker_is_killed_lands_after_it_restarts() {
    scenario(Duration::from_secs(240), || {
        let (mut tracker, alice, bob) = alice_and_bob();
        let status = |p: &Peer| getfattr(p.mountpoint(), "user.titorrent.status").unwrap_or_default();
        // Kill the tracker between close() and the tracker's answer to the
        // publish. Hashing is fast, so the window can be missed: then try a
        // bigger file, and as a last resort kill it just before the close,
        // so that the publish is surely in flight (waiting in the outbox).
        let mut caught = None;
        for (k, mib) in [48u64, 128, 256].into_iter().enumerate() {
            let (name, size) = (format!("big{k}.bin"), mib * MIB);
            let pattern = Pattern::random(&name);
            pattern.write_file(&alice.path(&name), size).unwrap();
            // The kernel sends the release after close() returns: poll.
            wait_for(Duration::from_secs(10), "alice's status to show the publish", || {
                let s = status(&alice);
                if s.contains("publishing: 1") || getfattr(&alice.path(&name), "user.titorrent.version").as_deref() == Ok("1") {
                    Ok(())
                } else {
                    Err(s)
                }
            });
            tracker.kill9();
            if status(&alice).contains("publishing: 1") {
                caught = Some((name, size, pattern));
                break;
            }
            tracker.restart();
            wait_until(Duration::from_secs(30), "alice back online", || status(&alice).contains("tracker: connected"));
        }
        let (name, size, pattern) = caught.unwrap_or_else(|| {
            let (name, size) = ("late.bin".to_string(), 8 * MIB);
            let pattern = Pattern::random(&name);
            let mut f = fs::File::create(alice.path(&name)).unwrap();
            std::io::Write::write_all(&mut f, &pattern.bytes_at(0, size as usize)).unwrap();
            tracker.kill9();
            drop(f);
            wait_until(Duration::from_secs(10), "the publish waiting for the tracker", || status(&alice).contains("publishing: 1"));
            (name, size, pattern)
        });
        tracker.restart();

        let path = bob.path(&name);
        wait_until(Duration::from_secs(90), &format!("bob sees {name} at its full size"), || {
            fs::metadata(&path).is_ok_and(|m| m.len() == size)
        });
        let got = fs::read(&path).unwrap();
        if let Some(d) = describe_difference(&got, &pattern.bytes_at(0, size as usize)) {
            panic!("bob's {name}: {d}");
        }
        for p in [&alice, &bob] {
            wait_for(SEE, &format!("{}'s {name} at version 1", p.name()), || {
                let v = getfattr(&p.path(&name), "user.titorrent.version")?;
                if v == "1" { Ok(()) } else { Err(v) }
            });
            let listing = names(p.mountpoint());
            assert!(!listing.iter().any(|n| n.contains("conflict")), "{}'s listing has a conflict copy: {listing:?}", p.name());
        }
    });
}

#[test]
fn an_explicit_lock_keeps_others_out_past_the_lease_ttl_until_unlocked() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, mut v) = group(Some(LEASE_TTL_S), &["alice", "bob"]);
        let bob = v.pop().unwrap();
        let alice = v.pop().unwrap();
        fs::write(alice.path("plan.txt"), b"plan v1\n").unwrap();
        wait_for_content(&bob, "plan.txt", b"plan v1\n", SEE);
        let plan = alice.path("plan.txt");
        let out = titorrent_ok(&alice, [std::ffi::OsStr::new("lock"), plan.as_os_str()]);
        assert!(out.stdout.starts_with("locked "), "{}", out.stdout);

        for p in [&alice, &bob] {
            wait_for(SEE, &format!("{}'s getfattr shows alice as the lock holder", p.name()), || {
                let v = getfattr(&p.path("plan.txt"), "user.titorrent.lock_holder")?;
                if v.starts_with("alice since ") { Ok(()) } else { Err(v) }
            });
            assert_eq!(getfattr(&p.path("plan.txt"), "user.titorrent.version").as_deref(), Ok("1"), "{}'s version xattr", p.name());
            assert_eq!(getfattr(&p.path("plan.txt"), "user.titorrent.author").as_deref(), Ok("alice"), "{}'s author xattr", p.name());
        }
        // Well past the lease ttl, bob is still refused: the lock needs no renewal.
        keeps_failing_with(Duration::from_secs(2 * LEASE_TTL_S + 1), "bob's open for write of plan.txt", EBUSY, || {
            open_for_write(&bob.path("plan.txt")).map(drop)
        });
        let r = fs::remove_file(bob.path("plan.txt"));
        assert_eq!(errno(&r), Some(EBUSY), "bob deletes the locked plan.txt: {r:?}");
        assert_eq!(fs::read(bob.path("plan.txt")).unwrap(), b"plan v1\n", "reading is never blocked");

        titorrent_ok(&alice, [std::ffi::OsStr::new("unlock"), plan.as_os_str()]);
        let mut bobs = wait_for(SEE, "bob opens plan.txt for write once alice unlocked it", || {
            OpenOptions::new().append(true).open(bob.path("plan.txt")).map_err(|e| e.to_string())
        });
        wait_for(SEE, "alice's getfattr shows bob as the lock holder while he writes", || {
            let v = getfattr(&alice.path("plan.txt"), "user.titorrent.lock_holder")?;
            if v.starts_with("bob since ") { Ok(()) } else { Err(v) }
        });
        bobs.write_all(b"bob's line\n").unwrap();
        drop(bobs);
        wait_for_content(&alice, "plan.txt", b"plan v1\nbob's line\n", SEE);
        wait_for(SEE, "bob's getfattr shows no lock holder once he closed plan.txt", || {
            match getfattr(&bob.path("plan.txt"), "user.titorrent.lock_holder") {
                Err(e) if e.contains("No such attribute") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    });
}

#[test]
fn the_member_holding_an_explicit_lock_can_still_edit_the_file() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::write(alice.path("plan.txt"), b"plan v1\n").unwrap();
        wait_for_content(&bob, "plan.txt", b"plan v1\n", SEE);
        let plan = alice.path("plan.txt");
        titorrent_ok(&alice, [std::ffi::OsStr::new("lock"), plan.as_os_str()]);

        // `titorrent lock` is for a long edit: the holder is not locked out.
        let r = fs::write(&plan, b"plan v2 by alice, under her lock\n");
        assert!(r.is_ok(), "alice writes plan.txt while she holds its explicit lock: {r:?}");
        wait_for_content(&bob, "plan.txt", b"plan v2 by alice, under her lock\n", SEE);
        // And the edit did not end her lock: bob is still refused.
        let r = open_for_write(&bob.path("plan.txt"));
        assert_eq!(errno(&r), Some(EBUSY), "bob's open for write after alice's edit under her lock: {r:?}");
        titorrent_ok(&alice, [std::ffi::OsStr::new("unlock"), plan.as_os_str()]);
    });
}

#[test]
fn versions_are_listed_restored_and_only_the_last_k_kept() {
    scenario(Duration::from_secs(150), || {
        let (_tracker, alice, bob) = alice_and_bob();
        // The tracker's default: keep 10 versions of a file, the current one
        // included. v0 (created, empty) and v1..v12: v0, v1, v2 go.
        let k = 10;
        for i in 1..=12 {
            fs::write(alice.path("draft.txt"), format!("draft number {i}\n")).unwrap();
            // close(2) does not wait for FUSE's release: the next open can
            // join this session before its publish starts, and two writes
            // then make one version (CI saw v11 hold draft 12). Each write
            // is its own version once its publish is answered.
            wait_for(SEE, &format!("alice's version xattr says {i}"), || {
                let v = getfattr(&alice.path("draft.txt"), "user.titorrent.version")?;
                if v == i.to_string() { Ok(()) } else { Err(v) }
            });
        }
        wait_for_content(&bob, "draft.txt", b"draft number 12\n", SEE);
        // Bob may read v12 before alice's daemon has applied the answer to
        // her own publish of it (her reads show her bytes meanwhile).
        for p in [&alice, &bob] {
            wait_for(SEE, &format!("{}'s version xattr says 12", p.name()), || {
                let v = getfattr(&p.path("draft.txt"), "user.titorrent.version")?;
                if v == "12" { Ok(()) } else { Err(v) }
            });
        }
        let draft = bob.path("draft.txt");
        let out = titorrent_ok(&bob, [std::ffi::OsStr::new("versions"), draft.as_os_str()]);
        let listed: Vec<&str> = out.stdout.lines().skip(1).map(|l| l.split_whitespace().next().unwrap_or("")).collect();
        let want: Vec<String> = (3..=12).rev().map(|v| format!("v{v}")).collect();
        assert_eq!(listed, want, "`titorrent versions` keeps the last {k}:\n{}", out.stdout);
        assert!(out.stdout.lines().nth(1).is_some_and(|l| l.contains("alice") && l.ends_with("(current)")), "{}", out.stdout);

        let out = titorrent_ok(&bob, [std::ffi::OsStr::new("restore"), draft.as_os_str(), "v5".as_ref()]);
        assert!(out.stdout.contains("version 13"), "{}", out.stdout);
        wait_for_content(&bob, "draft.txt", b"draft number 5\n", SEE);
        wait_for_content(&alice, "draft.txt", b"draft number 5\n", SEE);
        for p in [&alice, &bob] {
            wait_for(SEE, &format!("{}'s version xattr says 13", p.name()), || {
                let v = getfattr(&p.path("draft.txt"), "user.titorrent.version")?;
                if v == "13" { Ok(()) } else { Err(v) }
            });
        }
        // A collected version cannot come back.
        let out = bob.cli([std::ffi::OsStr::new("restore"), draft.as_os_str(), "1".as_ref()]);
        assert!(!out.status.success(), "restoring the collected v1 succeeded:\n{}", out.stdout);
        assert!(out.stderr.contains("no torrent for that version"), "restoring the collected v1: {}", out.stderr.trim());
        let out = titorrent_ok(&alice, [std::ffi::OsStr::new("versions"), alice.path("draft.txt").as_os_str()]);
        assert_eq!(out.stdout.lines().count(), 1 + k, "{}", out.stdout);
        assert!(out.stdout.lines().nth(1).is_some_and(|l| l.starts_with("v13 ") && l.contains("bob")), "{}", out.stdout);
    });
}

#[test]
fn the_action_log_says_who_did_what_to_which_path() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("docs")).unwrap();
        fs::write(alice.path("docs/a.txt"), b"by alice\n").unwrap();
        wait_for_content(&bob, "docs/a.txt", b"by alice\n", SEE);
        fs::write(bob.path("docs/a.txt"), b"edited by bob\n").unwrap();
        wait_for_content(&alice, "docs/a.txt", b"edited by bob\n", SEE);
        wait_for(SEE, "bob renames a.txt", || fs::rename(bob.path("docs/a.txt"), bob.path("docs/b.txt")).map_err(|e| e.to_string()));
        wait_for_content(&alice, "docs/b.txt", b"edited by bob\n", SEE);
        fs::set_permissions(alice.path("docs/b.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_file(bob.path("docs/b.txt")).unwrap();
        wait_gone("alice", &alice.path("docs/b.txt"));

        let out = titorrent_ok(&alice, [std::ffi::OsStr::new("log"), alice.mountpoint().as_os_str()]);
        let lines: Vec<&str> = out.stdout.lines().collect();
        let has = |who: &str, action: &str, what: &str| {
            lines.iter().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // #SEQ DATE TIME MEMBER ACTION WHAT...
                f.len() >= 5 && f[3] == who && f[4] == action && f[5..].join(" ") == what
            })
        };
        for (who, action, what) in [
            ("bob", "joined", "bob"),
            ("alice", "created", "/docs"),
            ("alice", "created", "/docs/a.txt"),
            ("alice", "edited", "/docs/a.txt (v1)"),
            ("bob", "edited", "/docs/a.txt (v2)"),
            ("bob", "renamed", "/docs/a.txt -> /docs/b.txt"),
            ("alice", "chattr", "/docs/b.txt"),
            ("bob", "deleted", "/docs/b.txt"),
        ] {
            assert!(has(who, action, what), "no `{who} {action} {what}` line in `titorrent log`:\n{}", out.stdout);
        }
    });
}

/// A version nobody uses leaves the BitTorrent engine (the mount's status
/// counts live torrents), is still read locally, and is woken at its only
/// holder when another member reads it: the reader's want reaches it
/// through the tracker manager.
#[test]
fn versions_nobody_uses_go_dormant_and_wake_when_another_member_reads_them() {
    scenario(Duration::from_secs(180), || {
        titorrent_integration::require_fuse();
        let tracker = TrackerProc::start_with_lease_ttl(None);
        let mut alice = Peer::create_group(&tracker, "alice");
        let mut bob = Peer::join(&tracker, &alice, "bob");
        alice.set_config("[cache]\nidle = \"1s\"\n");
        bob.set_config("replication = \"on-demand\"\n[cache]\nidle = \"1s\"\n");
        alice.mount();
        bob.mount();
        let status = |p: &Peer| getfattr(p.mountpoint(), "user.titorrent.status").unwrap_or_default();
        let files: Vec<(String, Pattern)> = (0..3).map(|i| (format!("d{i}.bin"), Pattern::random(&format!("dormant{i}")))).collect();
        for (name, pattern) in &files {
            pattern.write_file(&alice.path(name), 2 * MIB + 17).unwrap();
        }
        for (name, _) in &files {
            wait_until(SEE, &format!("bob sees {name} published"), || {
                getfattr(&bob.path(name), "user.titorrent.version").as_deref() == Ok("1")
            });
        }
        wait_until(Duration::from_secs(30), "alice's versions to go dormant", || status(&alice).contains("live torrents: 0"));
        // Alice reads her dormant copy without waking it.
        assert_same_bytes("alice's dormant d0.bin", &fs::read(alice.path("d0.bin")).unwrap(), &files[0].1.bytes_at(0, (2 * MIB + 17) as usize));
        for (name, _) in &files {
            assert_eq!(getfattr(&bob.path(name), "user.titorrent.bytes_local").as_deref(), Ok("0"), "bob fetched {name} before reading it");
        }
        for (name, pattern) in &files {
            let got = fs::read(bob.path(name)).unwrap();
            assert_same_bytes(&format!("bob's {name}"), &got, &pattern.bytes_at(0, (2 * MIB + 17) as usize));
        }
        // Bob's copies go dormant too, and read back without alice.
        wait_until(Duration::from_secs(30), "bob's versions to go dormant", || status(&bob).contains("live torrents: 0"));
        alice.unmount();
        for (name, pattern) in &files {
            let got = fs::read(bob.path(name)).unwrap();
            assert_same_bytes(&format!("bob's dormant {name}"), &got, &pattern.bytes_at(0, (2 * MIB + 17) as usize));
        }
    });
}

/// A member that reads a file from the start (as cp or a player do) gets
/// the whole file fetched ahead of it, even with `replication = "on-demand"`
/// and even if it stops reading partway; random reads elsewhere fetch only
/// what they need.
#[test]
fn reading_a_file_in_order_fetches_all_of_it_on_an_on_demand_member() {
    scenario(Duration::from_secs(180), || {
        titorrent_integration::require_fuse();
        let tracker = TrackerProc::start_with_lease_ttl(None);
        let mut alice = Peer::create_group(&tracker, "alice");
        let mut bob = Peer::join(&tracker, &alice, "bob");
        bob.set_config("replication = \"on-demand\"\n");
        alice.mount();
        bob.mount();
        let size = 40 * MIB;
        let pattern = Pattern::random("in order");
        pattern.write_file(&alice.path("movie.bin"), size).unwrap();
        wait_until(SEE, "bob sees movie.bin published", || {
            getfattr(&bob.path("movie.bin"), "user.titorrent.version").as_deref() == Ok("1")
        });
        let mut f = fs::File::open(bob.path("movie.bin")).unwrap();
        let mut head = vec![0u8; (12 * MIB) as usize];
        for chunk in head.chunks_mut(MIB as usize) {
            std::io::Read::read_exact(&mut f, chunk).unwrap();
        }
        drop(f);
        assert_same_bytes("bob's first 12 MiB", &head, &pattern.bytes_at(0, head.len()));
        wait_until(Duration::from_secs(60), "bob to have all of movie.bin", || {
            getfattr(&bob.path("movie.bin"), "user.titorrent.bytes_local").as_deref() == Ok(&*size.to_string())
        });
        assert_same_bytes("bob's movie.bin", &fs::read(bob.path("movie.bin")).unwrap(), &pattern.bytes_at(0, size as usize));
    });
}

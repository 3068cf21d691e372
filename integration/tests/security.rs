//! Members only (issue 10), on real processes: what a group keeps at rest
//! is readable by its owner only; members pin the tracker's key.
//!
//! Needs root, /dev/fuse and fusermount3, and the binaries built
//! (`cargo build --workspace`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use titorrent_integration::{alice_and_bob, scenario, wait_for, Pattern, Peer, TrackerProc};

const MIB: u64 = 1 << 20;
const SEE: Duration = Duration::from_secs(30);

/// Every entry under `dir` (not following symlinks) whose mode lets group
/// or others in, as "path mode" lines.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        if md.file_type().is_symlink() {
            continue;
        }
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            bad.push(format!("{} {mode:o}", p.display()));
        }
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    bad
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn state_cache_staging_and_tracker_data_are_readable_by_their_owner_only() {
    scenario(Duration::from_secs(120), || {
        // The harness made both directories under the test's umask (0755);
        // the daemons tighten them when they start.
        let (tracker, alice, bob) = alice_and_bob();
        let marker = Pattern::random("secret.bin");
        marker.write_file(&alice.path("secret.bin"), 2 * MIB).unwrap();
        fs::write(alice.path("note.txt"), b"private\n").unwrap();
        wait_for(SEE, "bob reads alice's secret.bin", || {
            let got = fs::read(bob.path("secret.bin")).map_err(|e| e.to_string())?;
            if got.len() as u64 == 2 * MIB { Ok(()) } else { Err(format!("{} bytes", got.len())) }
        });
        for peer in [&alice, &bob] {
            let st = peer.state_dir();
            assert!(count(&st.join("cache")) > 0, "{}'s cache holds something to check", peer.name());
            let bad = open_to_others(st);
            assert!(bad.is_empty(), "{}'s state dir has entries open to others:\n{}", peer.name(), bad.join("\n"));
            assert!(
                peer.log().contains("readable by their owner only"),
                "{}'s mount logs that it tightened its state dir:\n{}",
                peer.name(),
                peer.log()
            );
        }
        let bad = open_to_others(&tracker.data_dir());
        assert!(bad.is_empty(), "the tracker's data dir has entries open to others:\n{}", bad.join("\n"));
        assert!(tracker.log().contains("readable by their owner only"), "{}", tracker.log());
    });
}

#[test]
fn join_and_every_later_connection_refuse_a_tracker_with_another_key() {
    scenario(Duration::from_secs(120), || {
        let real = TrackerProc::start();
        let impostor = TrackerProc::start();
        let alice = Peer::create_group(&real, "alice");
        let invite = alice.invite();
        let key = real.key().to_string();
        assert!(invite.ends_with(&format!("/{key}")), "the invitation ends with the tracker's key fingerprint: {invite}");
        assert_ne!(impostor.key(), key);

        // The same invitation, pointed at another tracker (a man in the
        // middle, or DNS gone wrong): refused before anything is sent.
        let forged = invite.replace(&real.addr().to_string(), &impostor.addr().to_string());
        let bob = tempfile::tempdir().unwrap();
        let bob_state = bob.path().display().to_string();
        let out = alice.cli(["join", forged.as_str(), "--member", "bob", "--state", bob_state.as_str()]);
        assert!(!out.status.success(), "join with a forged invitation succeeded:\n{}", out.stdout);
        let expected = format!("the tracker at {} is not the one this invite/state names", impostor.addr());
        assert!(out.stderr.contains(&expected) && out.stderr.contains(&key), "{}", out.stderr);
        assert!(!bob.path().join("member.toml").exists(), "nothing was joined");

        // A member's state pins the key too: pointed at the impostor, every
        // command refuses the same way.
        let member_toml = alice.state_dir().join("member.toml");
        let m = fs::read_to_string(&member_toml).unwrap();
        assert!(!m.contains("secret"), "no bearer secret is kept: {m}");
        fs::write(&member_toml, m.replace(&real.addr().to_string(), &impostor.addr().to_string())).unwrap();
        let state = alice.state_dir().display().to_string();
        let out = alice.cli(["members", "--state", state.as_str()]);
        assert!(!out.status.success());
        assert!(out.stderr.contains("is not the one this invite/state names") && out.stderr.contains(&key), "{}", out.stderr);
        fs::write(&member_toml, m).unwrap();
        assert_eq!(alice.members().len(), 1);
    });
}

#[test]
fn only_the_trackers_admin_creates_groups() {
    scenario(Duration::from_secs(120), || {
        let mut tracker = TrackerProc::start();
        let token_file = tracker.admin_token_file();
        let mode = fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", token_file.display());
        let stdout = fs::read_to_string(tracker.dir().join("tracker.stdout")).unwrap();
        assert_eq!(stdout.matches("admin token").count(), 1, "printed once at the first start:\n{stdout}");
        assert!(stdout.contains(&tracker.admin_token()));

        let wrong = tempfile::NamedTempFile::new().unwrap();
        fs::write(wrong.path(), "not-the-token\n").unwrap();
        let st = tempfile::tempdir().unwrap();
        let (addr, st_path, wrong_path) =
            (tracker.addr().to_string(), st.path().display().to_string(), wrong.path().display().to_string());
        let alice = Peer::create_group(&tracker, "alice");
        let out = alice.cli([
            "create-group", "--tracker", addr.as_str(), "--admin-token", wrong_path.as_str(), "--group", "free", "--member", "eve",
            "--state", st_path.as_str(),
        ]);
        assert!(!out.status.success(), "a group made with a wrong token:\n{}", out.stdout);
        assert!(out.stderr.contains("admin token"), "{}", out.stderr);
        assert!(!st.path().join("member.toml").exists());
        let out = alice.cli(["create-group", "--tracker", addr.as_str(), "--group", "free", "--member", "eve", "--state", st_path.as_str()]);
        assert!(!out.status.success() && out.stderr.contains("--admin-token"), "{}", out.stderr);

        // Not printed again at a restart; the same token still works.
        tracker.restart();
        let stdout = fs::read_to_string(tracker.dir().join("tracker.stdout")).unwrap();
        assert_eq!(stdout.matches("admin token").count(), 1, "{stdout}");
        let bob = Peer::create_group(&tracker, "bob");
        assert_eq!(bob.members().len(), 1);
    });
}

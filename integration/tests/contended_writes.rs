//! Members writing one file as fast as its lock allows, on real mounts:
//! appends land at the true end of the current version, read-modify-write
//! under the lock loses no increment, an open of an existing file never
//! fails because another member is publishing it, and the loser of an
//! `O_CREAT|O_EXCL` race gets `EEXIST`.
//!
//! Needs root, /dev/fuse, fusermount3 and the binaries built (`cargo build
//! --workspace`).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Duration;
use titorrent_integration::programs::{conflict_copies, names, SEE};
use titorrent_integration::{alice_and_bob, scenario, wait_for, Peer};

/// Lines (or increments) each member makes.
const EACH: usize = 60;

/// Runs `call` until it succeeds, retrying while another member holds the
/// lock (EBUSY, the one refusal a contended call may get). Any other error
/// is counted by errno, for the test to assert none happened.
fn retrying<T>(what: &str, errors: &mut BTreeMap<i32, usize>, mut call: impl FnMut() -> std::io::Result<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match call() {
            Ok(v) => return v,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                if errno != libc::EBUSY {
                    *errors.entry(errno).or_default() += 1;
                }
                assert!(std::time::Instant::now() < deadline, "{what} kept failing: {e}");
                // Polling the lock: the holder closes within milliseconds.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn open_retrying(path: &Path, open: &OpenOptions, errors: &mut BTreeMap<i32, usize>) -> fs::File {
    retrying(&format!("opening {}", path.display()), errors, || open.open(path))
}

/// Runs `work(peer index, mountpoint, errors)` on both members at once;
/// returns each one's errors and result.
fn on_both<R: Send>(
    peers: [&Peer; 2],
    work: impl Fn(usize, &Path, &mut BTreeMap<i32, usize>) -> R + Sync,
) -> Vec<(BTreeMap<i32, usize>, R)> {
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (start, work, root) = (&start, &work, p.mountpoint().to_path_buf());
                s.spawn(move || {
                    let mut errors = BTreeMap::new();
                    start.wait();
                    let r = work(i, &root, &mut errors);
                    (errors, r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a writer thread panicked")).collect()
    })
}

fn wait_same(what: &str, a: &Path, b: &Path, done: impl Fn(&str) -> bool) -> String {
    wait_for(SEE, what, || {
        let (x, y) = (fs::read_to_string(a).map_err(|e| e.to_string())?, fs::read_to_string(b).map_err(|e| e.to_string())?);
        if x == y && done(&x) {
            Ok(x)
        } else {
            Err(format!("alice has {} lines, bob {} lines", x.lines().count(), y.lines().count()))
        }
    })
}

#[test]
fn appends_from_two_members_land_at_the_true_end_and_none_is_lost() {
    scenario(Duration::from_secs(240), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::write(alice.path("shared.log"), "").unwrap();
        wait_for(SEE, "bob sees shared.log", || fs::metadata(bob.path("shared.log")).map_err(|e| e.to_string()));
        let who = ["alice", "bob"];
        let errors = on_both([&alice, &bob], |i, root, errors| {
            let path = root.join("shared.log");
            let mut open = OpenOptions::new();
            open.append(true);
            for n in 0..EACH {
                let mut f = open_retrying(&path, &open, errors);
                f.write_all(format!("{} {n}\n", who[i]).as_bytes()).expect("append");
                drop(f);
            }
        });
        for (i, (e, ())) in errors.iter().enumerate() {
            assert!(e.is_empty(), "{}'s opens failed with errno (count) {e:?}; only EBUSY is allowed", who[i]);
        }
        let text = wait_same("both members hold every line", &alice.path("shared.log"), &bob.path("shared.log"), |t| {
            t.lines().count() >= 2 * EACH
        });
        let mut want: Vec<String> = who.iter().flat_map(|w| (0..EACH).map(move |n| format!("{w} {n}"))).collect();
        let mut got: Vec<String> = text.lines().map(str::to_string).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "the lines in shared.log:\n{text}");
        for p in [&alice, &bob] {
            let listing = names(p.mountpoint());
            assert!(conflict_copies(&listing).is_empty(), "{} has conflict copies: {listing:?}", p.name());
        }
    });
}

#[test]
fn increments_under_the_lock_from_two_members_all_count() {
    scenario(Duration::from_secs(240), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::write(alice.path("counter"), "0\n").unwrap();
        wait_for(SEE, "bob sees counter", || match fs::read_to_string(bob.path("counter")) {
            Ok(s) if s == "0\n" => Ok(()),
            other => Err(format!("{other:?}")),
        });
        let errors = on_both([&alice, &bob], |_, root, errors| {
            let path = root.join("counter");
            let mut open = OpenOptions::new();
            open.read(true).write(true);
            for _ in 0..EACH {
                let mut f = open_retrying(&path, &open, errors);
                let mut s = String::new();
                f.read_to_string(&mut s).expect("read the counter");
                let n: u64 = s.trim().parse().unwrap_or_else(|e| panic!("counter holds {s:?}: {e}"));
                f.seek(SeekFrom::Start(0)).unwrap();
                f.set_len(0).unwrap();
                f.write_all(format!("{}\n", n + 1).as_bytes()).unwrap();
            }
        });
        for (e, ()) in &errors {
            assert!(e.is_empty(), "opens failed with errno (count) {e:?}; only EBUSY is allowed");
        }
        let want = format!("{}\n", 2 * EACH);
        wait_same("both members read the final count", &alice.path("counter"), &bob.path("counter"), |t| t == want);
    });
}

#[test]
fn the_loser_of_an_exclusive_create_race_gets_eexist() {
    scenario(Duration::from_secs(180), || {
        let (_tracker, alice, bob) = alice_and_bob();
        for round in 0..20 {
            let name = PathBuf::from(format!("race-{round}"));
            let results = on_both([&alice, &bob], |_, root, _| {
                // 0 for the winner, whose handle closes (publishing the
                // empty file) when it drops.
                let r = OpenOptions::new().write(true).create_new(true).mode(0o644).open(root.join(&name));
                r.map(|_| 0).unwrap_or_else(|e| e.raw_os_error().unwrap_or(-1))
            });
            let codes: Vec<i32> = results.iter().map(|(_, c)| *c).collect();
            let mut sorted = codes.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, libc::EEXIST], "round {round}: (alice, bob) got errno {codes:?}");
        }
    });
}

#[test]
fn opening_a_name_another_member_keeps_replacing_never_fails_with_enoent() {
    scenario(Duration::from_secs(240), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::write(alice.path("config"), "0\n").unwrap();
        wait_for(SEE, "bob sees config", || fs::metadata(bob.path("config")).map_err(|e| e.to_string()));
        let results = on_both([&alice, &bob], |i, root, errors| {
            let mut seen = Vec::new();
            for n in 1..=EACH {
                if i == 0 {
                    // alice saves the way editors do: a temporary file renamed over the name.
                    let tmp = root.join("config.tmp");
                    fs::write(&tmp, format!("{n}\n")).expect("write config.tmp");
                    // EBUSY while bob holds config open for write: retried.
                    retrying("renaming config.tmp over config", errors, || fs::rename(&tmp, root.join("config")));
                } else {
                    // bob opens the name for read and for write, and reads it.
                    let mut f = open_retrying(&root.join("config"), OpenOptions::new().read(true).write(true), errors);
                    let mut s = String::new();
                    f.read_to_string(&mut s).expect("read config");
                    drop(f);
                    match fs::read_to_string(root.join("config")) {
                        Ok(t) => seen.push(t),
                        Err(e) => *errors.entry(e.raw_os_error().unwrap_or(0)).or_default() += 1,
                    }
                    seen.push(s);
                }
            }
            seen
        });
        for (who, (e, seen)) in ["alice", "bob"].iter().zip(&results) {
            assert!(e.is_empty(), "{who}'s opens of config failed with errno (count) {e:?}; only EBUSY is allowed");
            for s in seen {
                assert!(s.ends_with('\n') && s.trim().parse::<usize>().is_ok(), "{who} read a torn or empty config: {s:?}");
            }
        }
        wait_same("both members read alice's last save", &alice.path("config"), &bob.path("config"), |t| {
            t == format!("{EACH}\n")
        });
    });
}

#[test]
fn a_create_of_a_name_another_member_just_unlinked_creates_it() {
    scenario(Duration::from_secs(180), || {
        let (_tracker, alice, bob) = alice_and_bob();
        for round in 0..20 {
            let name = format!("gone-{round}");
            fs::write(alice.path(&name), b"alice's\n").unwrap();
            // Bob's kernel caches the name (and its inode).
            wait_for(SEE, &format!("bob sees {name}"), || fs::metadata(bob.path(&name)).map_err(|e| e.to_string()));
            fs::remove_file(alice.path(&name)).unwrap();
            // At once, through the cached name: O_CREAT must create, never ENOENT.
            let mut errors = BTreeMap::new();
            let mut open = OpenOptions::new();
            open.write(true).create(true).truncate(true);
            let mut f = open_retrying(&bob.path(&name), &open, &mut errors);
            f.write_all(b"bob's\n").unwrap();
            drop(f);
            assert!(errors.is_empty(), "round {round}: bob's open(O_CREAT) of {name} failed with errno (count) {errors:?}");
            wait_for(SEE, &format!("alice reads bob's {name}"), || match fs::read(alice.path(&name)) {
                Ok(b) if b == b"bob's\n" => Ok(()),
                other => Err(format!("{other:?}")),
            });
        }
    });
}

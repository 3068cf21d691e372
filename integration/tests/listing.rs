//! Listing the folder on real mounts: `ls -l` and `stat` after a listing
//! (the kernel takes names and attributes from READDIRPLUS), another
//! member's change seen through what a listing cached, and the extended
//! attributes a listing program asks about (`user.titorrent.*` answered,
//! the `security.*` / `system.*` namespaces unsupported).
//!
//! Needs root, /dev/fuse, fusermount3, the binaries built (`cargo build
//! --workspace`) and getfattr (package attr).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use titorrent_integration::programs::{getfattr, names, program, run_ok, wait_for_content, SEE};
use titorrent_integration::{alice_and_bob, scenario, wait_for, Peer};

use libc::{ENODATA, ENOENT, EOPNOTSUPP};

/// getxattr(2) of `name` on `path`: the value, or the errno.
fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let n = CString::new(name).expect("name without NUL");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the length given.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// setxattr(2); the errno when it fails.
fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let n = CString::new(name).expect("name without NUL");
    // SAFETY: valid C strings and a value of the length given.
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1));
    }
    Ok(())
}

/// `ls -l DIR` on `peer`: (name, size) of each file line.
fn ls_l(peer: &Peer, dir: &Path) -> Vec<(String, u64)> {
    let out = run_ok(program("ls", peer.mountpoint(), peer.mountpoint()).arg("-l").arg(dir));
    assert!(out.stderr.trim().is_empty(), "`ls -l {}` complained: {}", dir.display(), out.stderr);
    out.stdout
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[f.len() - 1].to_string(), f[4].parse().unwrap_or_else(|_| panic!("no size in `{l}`")))
        })
        .collect()
}

#[test]
fn ls_l_lists_sizes_and_only_user_titorrent_attributes_exist() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("docs")).unwrap();
        fs::write(alice.path("docs/a.txt"), b"alpha\n").unwrap();
        fs::write(alice.path("docs/b.txt"), b"bravo bravo\n").unwrap();
        wait_for_content(&bob, "docs/a.txt", b"alpha\n", SEE);
        wait_for_content(&bob, "docs/b.txt", b"bravo bravo\n", SEE);

        for p in [&alice, &bob] {
            let mut got = ls_l(p, &p.path("docs"));
            got.sort();
            assert_eq!(got, [("a.txt".to_string(), 6), ("b.txt".to_string(), 12)], "{}'s ls -l docs", p.name());
            let a = p.path("docs/a.txt");
            for name in ["security.selinux", "system.posix_acl_access", "system.posix_acl_default", "trusted.x"] {
                assert_eq!(getxattr(&a, name), Err(EOPNOTSUPP), "{}'s getxattr {name}", p.name());
            }
            // (An ACL value is parsed by the kernel first: "x" would be EINVAL.)
            for name in ["security.selinux", "trusted.x"] {
                assert_eq!(setxattr(&a, name, b"x"), Err(EOPNOTSUPP), "{}'s setxattr {name}", p.name());
            }
            assert_eq!(getxattr(&p.path("docs"), "system.posix_acl_default"), Err(EOPNOTSUPP), "{}: on a directory", p.name());
            assert_eq!(getxattr(&a, "user.nothing"), Err(ENODATA), "{}'s getxattr of a user name it lacks", p.name());
            assert_eq!(getxattr(&a, "user.titorrent.version").as_deref(), Ok(&b"1"[..]), "{}'s version xattr", p.name());
            assert_eq!(getfattr(&a, "user.titorrent.author").as_deref(), Ok("alice"), "{}'s author xattr", p.name());
            let dump = run_ok(program("getfattr", p.mountpoint(), p.mountpoint()).args(["-d", "-m", "user.titorrent"]).arg(&a));
            for n in ["version", "info_hash", "author", "bytes_local", "holders"] {
                assert!(dump.stdout.contains(&format!("user.titorrent.{n}=")), "{}'s getfattr -d lacks {n}: {}", p.name(), dump.stdout);
            }
        }
        // Pinning is still set the usual way.
        setxattr(&bob.path("docs"), "user.titorrent.pin", b"1").expect("bob pins docs");
        assert_eq!(getfattr(&bob.path("docs"), "user.titorrent.pin").as_deref(), Ok("1"));
    });
}

#[test]
fn a_listed_file_another_member_changes_shows_its_new_attributes() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("d")).unwrap();
        fs::write(alice.path("d/f.txt"), b"one\n").unwrap();
        fs::write(alice.path("d/g.txt"), b"gee\n").unwrap();
        wait_for_content(&bob, "d/f.txt", b"one\n", SEE);
        wait_for_content(&bob, "d/g.txt", b"gee\n", SEE);

        // Bob lists (the kernel caches every entry's attributes) ...
        let listed: Vec<(String, u64, u32)> = fs::read_dir(bob.path("d"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (e.file_name().to_string_lossy().into_owned(), m.len(), m.permissions().mode() & 0o777)
            })
            .collect();
        assert_eq!(listed.len(), 2, "bob's listing of d: {listed:?}");
        assert!(listed.contains(&("f.txt".to_string(), 4, 0o644)), "bob's listing of d: {listed:?}");

        // ... then alice grows one file, chmods it and renames the other.
        fs::write(alice.path("d/f.txt"), b"one two three\n").unwrap();
        fs::set_permissions(alice.path("d/f.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::rename(alice.path("d/g.txt"), alice.path("d/h.txt")).unwrap();

        wait_for(SEE, "bob's stat of d/f.txt shows 14 bytes, mode 600", || {
            let m = fs::metadata(bob.path("d/f.txt")).map_err(|e| e.to_string())?;
            match (m.len(), m.permissions().mode() & 0o777) {
                (14, 0o600) => Ok(()),
                other => Err(format!("size, mode {other:?}")),
            }
        });
        wait_for(SEE, "bob sees g.txt renamed to h.txt", || {
            let n = names(&bob.path("d"));
            if n == ["f.txt", "h.txt"] { Ok(()) } else { Err(format!("names {n:?}")) }
        });
        let r = fs::metadata(bob.path("d/g.txt"));
        assert_eq!(r.as_ref().err().and_then(|e| e.raw_os_error()), Some(ENOENT), "bob's stat of the old name: {r:?}");
        assert_eq!(fs::read(bob.path("d/f.txt")).unwrap(), b"one two three\n");
        let mut got = ls_l(&bob, &bob.path("d"));
        got.sort();
        assert_eq!(got, [("f.txt".to_string(), 14), ("h.txt".to_string(), 4)], "bob's ls -l d");
    });
}

//! Hard links on real mounts (issue 14): `link(2)` on alice gives a second
//! name of the same file, and bob sees both names with one inode number,
//! `st_nlink` 2 and the same bytes; an edit through one name on alice is
//! read through the other on bob; unlinking either name keeps the other
//! (the file's own name: a link is promoted and keeps the inode, also
//! when another file is renamed over it); links
//! to directories are EPERM; a hard link to a symbolic link (not followed,
//! even when dangling) is the same symlink under two names on both
//! members; `cp -a` and `rsync -aH` of a tree with hard links keep them on
//! bob.
//!
//! Needs root, /dev/fuse, fusermount3, the binaries built (`cargo build
//! --workspace`), rsync.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;
use titorrent_integration::programs::{errno, program, require_program, run_ok, SEE};
use titorrent_integration::{alice_and_bob, scenario, wait_for};

/// (inode, nlink, bytes) of a path, as `stat` and `read` give them.
fn seen(path: &Path) -> Result<(u64, u64, Vec<u8>), String> {
    let md = fs::metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    let data = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok((md.ino(), md.nlink(), data))
}

/// Waits until every path in `names` is the one file with `nlink` names
/// and content `bytes`; returns its inode number.
fn wait_names(who: &str, names: &[&Path], nlink: u64, bytes: &[u8]) -> u64 {
    let mut ino = 0;
    wait_for(SEE, &format!("{who} sees {names:?} as one file, {nlink} names, {} bytes", bytes.len()), || {
        let all: Vec<_> = names.iter().map(|p| seen(p)).collect::<Result<_, _>>()?;
        ino = all[0].0;
        match all.iter().all(|s| s.0 == ino && s.1 == nlink && s.2 == bytes) {
            true => Ok(()),
            false => Err(format!("{:?}", all.iter().map(|s| (s.0, s.1, String::from_utf8_lossy(&s.2).into_owned())).collect::<Vec<_>>())),
        }
    });
    ino
}

fn wait_gone(who: &str, path: &Path) {
    wait_for(SEE, &format!("{who} no longer sees {}", path.display()), || match fs::symlink_metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

#[test]
fn a_hard_link_pair_is_one_file_on_both_members() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("docs")).unwrap();
        fs::write(alice.path("f"), b"one\n").unwrap();
        fs::hard_link(alice.path("f"), alice.path("docs/g")).unwrap();
        assert_eq!(errno(&fs::hard_link(alice.path("f"), alice.path("docs/g"))), Some(libc::EEXIST));
        assert_eq!(errno(&fs::hard_link(alice.path("docs"), alice.path("d2"))), Some(libc::EPERM), "a link to a directory");
        let a_ino = wait_names("alice", &[&alice.path("f"), &alice.path("docs/g")], 2, b"one\n");
        let b_ino = wait_names("bob", &[&bob.path("f"), &bob.path("docs/g")], 2, b"one\n");
        assert_eq!(a_ino, b_ino, "inode numbers are file ids, the same on each member");

        // An edit through one name on alice, read through the other on bob.
        fs::write(alice.path("docs/g"), b"two, longer\n").unwrap();
        wait_names("bob", &[&bob.path("f"), &bob.path("docs/g")], 2, b"two, longer\n");

        // A third name on bob, then a link's name renamed and removed.
        fs::hard_link(bob.path("docs/g"), bob.path("h")).unwrap();
        wait_names("alice", &[&alice.path("f"), &alice.path("docs/g"), &alice.path("h")], 3, b"two, longer\n");
        fs::rename(alice.path("h"), alice.path("docs/h2")).unwrap();
        wait_names("bob", &[&bob.path("f"), &bob.path("docs/h2")], 3, b"two, longer\n");
        wait_gone("bob", &bob.path("h"));
        fs::remove_file(bob.path("docs/h2")).unwrap();
        wait_names("alice", &[&alice.path("f"), &alice.path("docs/g")], 2, b"two, longer\n");

        // The file's own name: the link stays, the same inode, alone.
        fs::remove_file(alice.path("f")).unwrap();
        assert_eq!(wait_names("alice", &[&alice.path("docs/g")], 1, b"two, longer\n"), a_ino);
        wait_gone("bob", &bob.path("f"));
        assert_eq!(wait_names("bob", &[&bob.path("docs/g")], 1, b"two, longer\n"), a_ino);
        fs::write(bob.path("docs/g"), b"three\n").unwrap();
        wait_names("alice", &[&alice.path("docs/g")], 1, b"three\n");

        // A save by temp file and rename over one name (editors, rsync)
        // breaks the pair as on any filesystem: the other name keeps the
        // old file and its inode.
        fs::hard_link(alice.path("docs/g"), alice.path("k")).unwrap();
        fs::write(alice.path("docs/g.tmp"), b"saved\n").unwrap();
        fs::rename(alice.path("docs/g.tmp"), alice.path("docs/g")).unwrap();
        assert_eq!(wait_names("alice", &[&alice.path("k")], 1, b"three\n"), a_ino);
        assert_eq!(wait_names("bob", &[&bob.path("k")], 1, b"three\n"), a_ino);
        assert_ne!(wait_names("bob", &[&bob.path("docs/g")], 1, b"saved\n"), a_ino);
    });
}

/// (inode, nlink, target) of a symlink, as `lstat` and `readlink` give
/// them, and whether `readdir` lists it as a symlink.
fn seen_symlink(path: &Path) -> Result<(u64, u64, String, bool), String> {
    let md = fs::symlink_metadata(path).map_err(|e| format!("lstat {}: {e}", path.display()))?;
    if !md.file_type().is_symlink() {
        return Err(format!("{} is not a symlink: {:?}", path.display(), md.file_type()));
    }
    let target = fs::read_link(path).map_err(|e| format!("readlink {}: {e}", path.display()))?;
    let listed = fs::read_dir(path.parent().unwrap())
        .map_err(|e| format!("readdir: {e}"))?
        .filter_map(|d| d.ok())
        .find(|d| d.file_name() == path.file_name().unwrap())
        .is_some_and(|d| d.file_type().is_ok_and(|t| t.is_symlink()));
    Ok((md.ino(), md.nlink(), target.display().to_string(), listed))
}

/// Waits until every path in `names` is one symlink to `target` with
/// `nlink` names, listed as a symlink; returns its inode number.
fn wait_symlink_names(who: &str, names: &[&Path], nlink: u64, target: &str) -> u64 {
    let mut ino = 0;
    wait_for(SEE, &format!("{who} sees {names:?} as one symlink to {target}, {nlink} names"), || {
        let all: Vec<_> = names.iter().map(|p| seen_symlink(p)).collect::<Result<_, _>>()?;
        ino = all[0].0;
        match all.iter().all(|s| s.0 == ino && s.1 == nlink && s.2 == target && s.3) {
            true => Ok(()),
            false => Err(format!("{all:?}")),
        }
    });
    ino
}

/// `linkat(2)` without `AT_SYMLINK_FOLLOW`: a link to the symlink itself.
fn link_no_follow(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (from, to) = (c(from), c(to));
    match unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[test]
fn a_hard_link_to_a_symlink_is_the_symlink_under_two_names_on_both_members() {
    scenario(Duration::from_secs(120), || {
        let (_tracker, alice, bob) = alice_and_bob();
        fs::create_dir(alice.path("bin")).unwrap();
        std::os::unix::fs::symlink("../nowhere/tool", alice.path("tool")).unwrap();
        link_no_follow(&alice.path("tool"), &alice.path("bin/tool")).unwrap();
        let a_ino = wait_symlink_names("alice", &[&alice.path("tool"), &alice.path("bin/tool")], 2, "../nowhere/tool");
        let b_ino = wait_symlink_names("bob", &[&bob.path("tool"), &bob.path("bin/tool")], 2, "../nowhere/tool");
        assert_eq!(a_ino, b_ino, "one inode number on each member");

        // The symlink's own name goes on bob: alice keeps the other, the
        // same inode, alone.
        fs::remove_file(bob.path("tool")).unwrap();
        wait_gone("alice", &alice.path("tool"));
        assert_eq!(wait_symlink_names("alice", &[&alice.path("bin/tool")], 1, "../nowhere/tool"), a_ino);
        assert_eq!(wait_symlink_names("bob", &[&bob.path("bin/tool")], 1, "../nowhere/tool"), a_ino);
    });
}

#[test]
fn cp_a_and_rsync_ah_keep_hard_links_on_the_other_member() {
    scenario(Duration::from_secs(180), || {
        require_program("rsync", "rsync");
        let (_tracker, alice, bob) = alice_and_bob();
        let home = tempfile::Builder::new().prefix("titorrent-hardlinks-home-").tempdir().unwrap();
        let src = home.path().join("tree");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a"), b"shared bytes\n").unwrap();
        fs::hard_link(src.join("a"), src.join("sub/b")).unwrap();
        fs::write(src.join("alone"), b"alone\n").unwrap();

        run_ok(program("cp", home.path(), home.path()).arg("-a").arg(&src).arg(alice.path("cp")));
        let mut rsync = program("rsync", home.path(), home.path());
        rsync.arg("-aH").arg(format!("{}/", src.display())).arg(format!("{}/", alice.path("rsync").display()));
        run_ok(&mut rsync);
        for top in ["cp", "rsync"] {
            let names = [bob.path(&format!("{top}/a")), bob.path(&format!("{top}/sub/b"))];
            wait_names("bob", &[&names[0], &names[1]], 2, b"shared bytes\n");
            wait_names("bob", &[&bob.path(&format!("{top}/alone"))], 1, b"alone\n");
        }
    });
}

//! What POSIX tools ask of any filesystem, on a real mount: `statfs` tells
//! the cache disk's real size (`df`), and a name over 255 bytes is
//! `ENAMETOOLONG` for every call that takes one.
//!
//! Needs root, /dev/fuse, fusermount3 and the binaries built (`cargo build
//! --workspace`).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;
use titorrent_integration::programs::{errno, SEE};
use titorrent_integration::{scenario, wait_for, Peer, TrackerProc};

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

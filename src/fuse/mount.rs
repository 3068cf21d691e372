//! Mounting and unmounting with mount(2) directly, so that the filesystem
//! type is `fuse.titorrent` (fuser's own mount always says `fuse`): users
//! find it with `findmnt -t fuse.titorrent` and mount(8) with `-t titorrent`.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The filesystem type the kernel records for a titorrent mount.
pub const FSTYPE: &str = "fuse.titorrent";

/// The kernel's read-ahead for files of the mount, in KiB: the largest
/// READ one FUSE request carries (`max_pages` 256, the kernel's default
/// limit), so that sequential reads the daemon serves arrive as 1 MiB
/// requests rather than 128 KiB ones: an eighth of the round trips.
pub const READ_AHEAD_KIB: u32 = 1024;

#[derive(Clone, Debug, Default)]
pub struct MountFlags {
    pub read_only: bool,
    /// Let users other than the one mounting use the folder.
    pub allow_other: bool,
    /// MS_NOEXEC (mount option `noexec`).
    pub noexec: bool,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Opens /dev/fuse and mounts it on `mountpoint`; returns the session fd.
pub fn mount(source: &str, mountpoint: &Path, flags: &MountFlags) -> io::Result<OwnedFd> {
    let dev = CString::new("/dev/fuse").expect("static path");
    // SAFETY: dev is a valid C string; the returned fd is owned below.
    let raw = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("cannot open /dev/fuse: {e} (is the fuse module loaded?)")));
    }
    // SAFETY: raw is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut opts = format!("fd={raw},rootmode=40000,user_id={uid},group_id={gid},default_permissions");
    if flags.allow_other {
        opts.push_str(",allow_other");
    }
    let mut ms = libc::MS_NOSUID | libc::MS_NODEV;
    if flags.read_only {
        ms |= libc::MS_RDONLY;
    }
    if flags.noexec {
        ms |= libc::MS_NOEXEC;
    }
    let (src, target, fstype, data) = (
        CString::new(source.replace(['\0'], "")).expect("NUL removed"),
        cstr(mountpoint)?,
        CString::new(FSTYPE).expect("static"),
        CString::new(opts).expect("no NUL"),
    );
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), ms, data.as_ptr().cast()) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mount({}) failed: {e}", mountpoint.display())));
    }
    Ok(fd)
}

/// Mounts through fusermount3 (setuid root), for a user's own mount:
/// mount(2) needs root. fusermount3 opens /dev/fuse, mounts it with the
/// same type (`fuse.titorrent`) and the kernel checking permissions, and
/// hands the session fd back over a socket (`_FUSE_COMMFD`, as libfuse).
pub fn fusermount(source: &str, mountpoint: &Path, flags: &MountFlags) -> io::Result<OwnedFd> {
    let mut opts = format!("fsname={},subtype=titorrent,default_permissions,nosuid,nodev", source.replace([',', '\0'], "_"));
    if flags.read_only {
        opts.push_str(",ro");
    }
    if flags.noexec {
        opts.push_str(",noexec");
    }
    if flags.allow_other {
        opts.push_str(",allow_other");
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let theirs_fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
    // The child inherits its end: clear close-on-exec on it.
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(theirs_fd, libc::F_SETFD, 0) };
    let status = std::process::Command::new("fusermount3")
        .arg("-o")
        .arg(&opts)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", theirs_fd.to_string())
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run fusermount3: {e}")))?;
    drop(theirs);
    if !status.success() {
        return Err(io::Error::other(format!("fusermount3 could not mount {} ({status})", mountpoint.display())));
    }
    receive_fd(&ours)
}

/// The one fd fusermount3 sends (SCM_RIGHTS).
fn receive_fd(sock: &std::os::unix::net::UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // Room for one fd's control message (CMSG_SPACE(4) is at most 32 here).
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid start.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
    // SAFETY: msg points at buffers that live across the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::other("fusermount3 sent no file descriptor"));
        }
        let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(raw))
    }
}

/// Raises the read-ahead of a mount to [`READ_AHEAD_KIB`] through its
/// backing device info (/sys/class/bdi/MAJOR:MINOR, root only). The kernel
/// offers a FUSE filesystem at most 128 KiB at INIT and lowers the value to
/// what INIT answered, so this runs once the session serves: the stat of
/// the mount's root here waits for the INIT reply. A file keeps the
/// read-ahead it was opened with, so it runs before the mount is announced.
pub fn raise_read_ahead(mountpoint: &Path) {
    let res = std::fs::metadata(mountpoint).and_then(|m| {
        let (major, minor) = (libc::major(m.dev()), libc::minor(m.dev()));
        std::fs::write(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"), READ_AHEAD_KIB.to_string())
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot raise the read-ahead of {}: reads stay 128 KiB requests", mountpoint.display());
    }
}

/// Unmounts; with `lazy`, detaches a mount that is still in use.
pub fn unmount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let target = cstr(mountpoint)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: target is a valid C string.
    if unsafe { libc::umount2(target.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EPERM) {
        return Err(e);
    }
    // A user's own mount: fusermount3 (setuid) unmounts it.
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u").arg("-q");
    if lazy {
        cmd.arg("-z");
    }
    match cmd.arg(mountpoint).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(io::Error::other(format!("fusermount3 -u {} failed ({s})", mountpoint.display()))),
        Err(fe) => Err(io::Error::other(format!("{e}; fusermount3: {fe}"))),
    }
}

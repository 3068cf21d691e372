//! Copying a range of one file into another in the kernel where it can
//! (`copy_file_range`), for the version fills and the staging copies.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// `len` bytes from `from` at `src` to `to` at `dst`: in the kernel
/// (`copy_file_range`, a reflink on filesystems that share blocks), else
/// through a buffer.
pub fn copy_range(from: &File, mut src: u64, to: &File, mut dst: u64, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let (mut s, mut d) = (src as libc::loff_t, dst as libc::loff_t);
        // SAFETY: both descriptors are open; the offsets are ours.
        let n = unsafe { libc::copy_file_range(from.as_raw_fd(), &mut s, to.as_raw_fd(), &mut d, len as usize, 0) };
        if n > 0 {
            (src, dst, len) = (src + n as u64, dst + n as u64, len - n as u64);
            continue;
        }
        let err = io::Error::last_os_error();
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the source file ends before the range to copy"));
        }
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => return copy_buffered(from, src, to, dst, len),
            _ => return Err(err),
        }
    }
    Ok(())
}

fn copy_buffered(from: &File, mut src: u64, to: &File, mut dst: u64, mut len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    while len > 0 {
        let take = (len as usize).min(buf.len());
        from.read_exact_at(&mut buf[..take], src)?;
        to.write_all_at(&buf[..take], dst)?;
        (src, dst, len) = (src + take as u64, dst + take as u64, len - take as u64);
    }
    Ok(())
}

//! Provides the extended attributes a titorrent mount answers
//! (`user.titorrent.*`): the daemon's way of telling the CLI its state dir,
//! its status, and how much of a file is local, and the CLI's way of
//! pinning.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The member state directory of the mount (on the mount root).
pub const STATE_DIR: &str = "user.titorrent.state_dir";
/// A JSON or TOML text describing the mount (on the mount root).
pub const STATUS: &str = "user.titorrent.status";
/// "1" while a file or folder is pinned.
pub const PIN: &str = "user.titorrent.pin";
/// Seconds to serve a file's version to standard clients (`titorrent export`); reads back `ADDR UNTIL`.
pub const EXPORT: &str = "user.titorrent.export";
pub const INFO_HASH: &str = "user.titorrent.info_hash";
/// How many bytes of a file are in the local cache (decimal).
pub const BYTES_LOCAL: &str = "user.titorrent.bytes_local";

fn c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn cname(n: &str) -> CString {
    CString::new(n).expect("attribute names have no NUL")
}

/// The attribute's value; `None` when the file does not have it (ENODATA).
/// ENOTSUP (the mount does not do xattrs at all) is an error.
pub fn get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let (p, n) = (c(path)?, cname(name));
    loop {
        // SAFETY: p and n are valid C strings; a null buffer of size 0 asks for the size.
        let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return absent(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let got = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew between the two calls
            }
            return absent(e);
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

fn absent(e: io::Error) -> io::Result<Option<Vec<u8>>> {
    if e.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// The attribute as UTF-8 text, trimmed.
pub fn get_string(path: &Path, name: &str) -> io::Result<Option<String>> {
    Ok(get(path, name)?.map(|v| String::from_utf8_lossy(&v).trim().to_string()))
}

pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (c(path)?, cname(name));
    // SAFETY: valid C strings and a buffer of value.len() bytes.
    if unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes the attribute; `false` if it was not there.
pub fn remove(path: &Path, name: &str) -> io::Result<bool> {
    let (p, n) = (c(path)?, cname(name));
    // SAFETY: valid C strings.
    if unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } != 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) { Ok(false) } else { Err(e) };
    }
    Ok(true)
}

/// Whether `e` says the filesystem does not do this attribute at all.
pub fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_attribute_is_none() {
        let dir = tempfile::tempdir().unwrap();
        match get(dir.path(), "user.titorrent.nothing") {
            Ok(None) => {}
            Err(e) if unsupported(&e) => {} // a tmpfs without user xattrs
            other => panic!("{other:?}"),
        }
    }
}

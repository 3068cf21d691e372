//! Provides the titorrent mounts this process sees, from
//! /proc/self/mountinfo, and which of them holds a given path.

use mount_titorrent::unescape;
use std::path::{Path, PathBuf};

/// The fstype the kernel records for a titorrent mount.
pub const FSTYPE: &str = crate::fuse::mount::FSTYPE;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    /// Per-mount options (`rw`/`ro`, `nosuid`, ...).
    pub options: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Every titorrent mount, in mount order.
pub fn titorrent_mounts() -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_line).filter(|m| m.fstype == FSTYPE).collect())
}

/// The titorrent mount holding `path` (which must be absolute and
/// canonical): the one with the longest mount point that is a prefix.
pub fn mount_of(path: &Path) -> std::io::Result<Option<MountEntry>> {
    Ok(titorrent_mounts()?
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len()))
}

/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw`
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let mount_point = l.nth(4)?;
    let options = l.next().unwrap_or("");
    let mut r = right.split(' ');
    let fstype = r.next()?;
    let source = r.next().unwrap_or("");
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: unescape(fstype),
        source: unescape(source),
        options: options.to_string(),
    })
}



#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_titorrent_line() {
        let m = parse_line("812 29 0:97 / /tmp/a\\040b/mnt ro,nosuid,nodev shared:4 - fuse.titorrent titorrent:team rw,user_id=0").unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/tmp/a b/mnt"));
        assert_eq!(m.source, "titorrent:team");
        assert!(m.read_only());
    }
}

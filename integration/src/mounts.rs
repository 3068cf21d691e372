//! Reads the mount table (`/proc/self/mountinfo`) and removes stale mounts.

pub use mount_titorrent::FSTYPE;
use mount_titorrent::unescape;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Every mount this process sees.
pub fn all() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("cannot read /proc/self/mountinfo");
    text.lines().filter_map(parse_line).collect()
}

/// The mount at `path`, if any (the last one when mounts are stacked).
pub fn find(path: &Path) -> Option<MountEntry> {
    all().into_iter().rev().find(|m| m.mount_point == path)
}

/// Parses one mountinfo line:
/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw`
/// (optional fields end at ` - `; paths escape space, tab, newline and `\`
/// as octal `\040` etc.).
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let source = right.next().unwrap_or("");
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: unescape(fstype),
        source: unescape(source),
    })
}


/// Lazily unmounts `path` (`fusermount3 -uz`, then `umount -l`) until it no
/// longer shows in mountinfo. Returns whether it is gone.
pub fn force_unmount(path: &Path) -> bool {
    for (prog, args) in [("fusermount3", &["-uz"][..]), ("umount", &["-l"][..])] {
        if find(path).is_none() {
            return true;
        }
        let _ = Command::new(prog)
            .args(args)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    find(path).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fuse_line_with_escaped_space() {
        let line = "812 29 0:97 / /tmp/a\\040b/mnt rw,nosuid,nodev,relatime shared:456 - \
                    fuse.titorrent titorrent rw,user_id=0,group_id=0";
        let m = parse_line(line).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/tmp/a b/mnt"));
        assert_eq!(m.fstype, "fuse.titorrent");
        assert_eq!(m.source, "titorrent");
    }

    #[test]
    fn parses_a_line_without_optional_fields() {
        let m = parse_line("22 1 8:1 / / rw - ext4 /dev/sda1 rw").unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/"));
        assert_eq!(m.fstype, "ext4");
    }

    #[test]
    fn this_process_sees_its_root_mount() {
        assert!(all().iter().any(|m| m.mount_point == Path::new("/")));
    }
}

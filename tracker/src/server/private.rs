//! Owner-only files at rest: the tracker's data directory and a member's
//! state directory hold secrets (the tracker's keys, a member's key) and
//! the group's content, so directories are 0700 and files 0600.
//!
//! New files get this from the process umask ([`owner_only_umask`], set
//! by the daemons and the commands that write state before they create
//! anything: sled, librqbit and the cache create their own files), and
//! [`make_private`] creates a directory 0700 and tightens whatever an
//! older version left readable by others, logging it once.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Makes every file and directory this process creates from now on
/// private to its owner (umask 077). Process-wide: call it at start,
/// before other threads create files.
pub fn owner_only_umask() {
    // SAFETY: umask only sets the calling process's file mode mask.
    unsafe { libc::umask(0o077) };
}

/// Creates `dir` (and missing parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    Ok(())
}

/// Creates `dir` 0700 if missing, then takes group and other permission
/// bits off it and everything under it (on the same filesystem: a mount
/// inside is not entered; symlinks are not followed). Logs one info line
/// naming `what` when something was tightened.
pub fn make_private(dir: &Path, what: &str) -> io::Result<()> {
    create_private_dir(dir)?;
    let n = tighten(dir)?;
    if n > 0 {
        tracing::info!(dir = %dir.display(), entries = n, "{what}: made {n} files and directories readable by their owner only");
    }
    Ok(())
}

/// Takes group and other bits off `dir` and everything under it; returns
/// how many entries changed.
pub fn tighten(dir: &Path) -> io::Result<usize> {
    let root = std::fs::symlink_metadata(dir)?;
    let mut changed = 0;
    let mut todo = vec![(dir.to_path_buf(), root.clone())];
    while let Some((path, md)) = todo.pop() {
        if md.file_type().is_symlink() || md.dev() != root.dev() {
            continue;
        }
        let mode = md.permissions().mode();
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7700)) {
                Ok(()) => changed += 1,
                // Gone meanwhile (a cache eviction, say): nothing to protect.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if md.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                match entry.metadata() {
                    Ok(md) => todo.push((entry.path(), md)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn existing_entries_lose_group_and_other_bits() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("state");
        std::fs::create_dir_all(d.join("cache/objects")).unwrap();
        std::fs::write(d.join("cache/objects/a"), b"x").unwrap();
        std::fs::write(d.join("run.sh"), b"x").unwrap();
        for (p, m) in [("", 0o755), ("cache", 0o775), ("cache/objects", 0o777), ("cache/objects/a", 0o644), ("run.sh", 0o755)] {
            std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let before = mode(Path::new("/etc/passwd"));
        assert_eq!(tighten(&d).unwrap(), 5);
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("cache/objects")), 0o700);
        assert_eq!(mode(&d.join("cache/objects/a")), 0o600);
        assert_eq!(mode(&d.join("run.sh")), 0o700);
        assert_eq!(mode(Path::new("/etc/passwd")), before, "a symlink's target is not touched");
        assert_eq!(tighten(&d).unwrap(), 0);
    }

    #[test]
    fn created_directories_are_0700() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        make_private(&d, "test").unwrap();
        assert_eq!(mode(&d), 0o700);
    }
}

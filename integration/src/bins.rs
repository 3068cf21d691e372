//! Finds the binaries under test: the ones cargo built next to the test
//! executable, in `target/<profile>/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The member's CLI and mount daemon.
pub const TITORRENT: &str = "titorrent";
/// The tracker manager.
pub const TRACKER: &str = "titorrent-tracker";

/// `target/<profile>/` of the running test executable, or
/// `$TITORRENT_BIN_DIR` when set (to test installed binaries).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TITORRENT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("cannot find the test executable's path");
    // Integration tests live in target/<profile>/deps/NAME-HASH.
    let dir = exe.parent().expect("test executable has no parent directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps/ has no parent directory").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of binary `name`; panics, naming the path, when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary `{name}` not found at {}: run `cargo build --workspace` first \
             (`cargo test` alone does not build every binary these tests run)",
            path.display()
        );
    }
    path
}

/// Makes /sbin/mount.titorrent the helper under test (a symlink), once.
pub fn install_mount_helper() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = DONE.get_or_init(|| {
        crate::require_fuse();
        let ours = bin("mount_titorrent");
        let target = Path::new("/sbin/mount.titorrent");
        match fs::symlink_metadata(target) {
            Ok(md) if !md.file_type().is_symlink() => {
                let same = fs::canonicalize(target).ok() == fs::canonicalize(&ours).ok()
                    || std::env::var_os("TITORRENT_BIN_DIR").is_some();
                return if same {
                    Ok(())
                } else {
                    Err(format!(
                        "/sbin/mount.titorrent is an installed helper, not {}: remove it, or test the installed \
                         binaries with TITORRENT_BIN_DIR",
                        ours.display()
                    ))
                };
            }
            Ok(_) if fs::read_link(target).ok().as_deref() == Some(ours.as_path()) => return Ok(()),
            _ => {}
        }
        let tmp = PathBuf::from(format!("/sbin/.mount.titorrent.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&ours, &tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        fs::rename(&tmp, target).map_err(|e| format!("cannot install {}: {e}", target.display()))
    }) {
        panic!("{why}");
    }
}

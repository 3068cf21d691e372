//! Finds the binaries under test: the ones cargo built next to the test
//! executable, in `target/<profile>/`.

use std::path::PathBuf;

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

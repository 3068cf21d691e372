//! Checks that this machine can run FUSE tests, and says what is missing
//! when it cannot. Tests never skip silently.

use std::path::Path;
use std::sync::OnceLock;

/// Panics with a clear message unless `/dev/fuse` can be opened, we are
/// root, and `fusermount3` is on the PATH. Checked once per process.
pub fn require_fuse() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECK.get_or_init(check_fuse) {
        panic!("{why}");
    }
}

fn check_fuse() -> Result<(), String> {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Err("FUSE tests need /dev/fuse, which does not exist: load the module \
                    (`modprobe fuse`), or in a container pass `--device /dev/fuse \
                    --cap-add SYS_ADMIN`. .ci/run does the former."
            .into());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!(
            "FUSE tests need /dev/fuse, which exists but cannot be opened for read and \
             write ({e}): run as root, or in a container pass `--device /dev/fuse \
             --cap-add SYS_ADMIN`"
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("FUSE tests run as root (they mount, and unmount stale mounts with \
                    `umount -l`): run them with sudo, or as .ci/run does, as root"
            .into());
    }
    if which("fusermount3").is_none() {
        return Err("FUSE tests need `fusermount3` on the PATH: `apt-get install fuse3`".into());
    }
    Ok(())
}

/// First `name` found in `$PATH`.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

//! Replacing a file's contents in one step: the new bytes go to a temporary
//! file of a unique name beside it (mode 0600), which is then renamed over
//! it. Two writers of one path at once each rename a complete file of their
//! own; a fixed temporary name would let one rename the other's away and
//! fail with ENOENT (two tasks registering one version did, failing an
//! open for write).

use std::io::Write;
use std::path::Path;

/// Writes `data` to `path` atomically. With `durable`, the data is on disk
/// before the rename makes it visible.
pub fn write(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn concurrent_writers_of_one_path_all_succeed_and_one_wins_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        super::write(path, &[i; 4096], false).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 4096);
        assert!(got.iter().all(|b| *b == got[0]), "bytes of two writers mixed");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("f")], "temporary files left behind");
    }
}

//! File contents for tests: seekable pseudo-random bytes (so a 200 MiB
//! file's expected bytes at any offset are known without keeping it), byte
//! comparisons that say where things differ, and disk usage.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Pseudo-random bytes determined by a seed: byte `i` of the content is the
/// same whoever asks and in whatever order. Not for cryptography.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    pub seed: u64,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern { seed }
    }

    /// A seed from the clock, printed so that a failure can be replayed.
    pub fn random(what: &str) -> Pattern {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = splitmix64(nanos ^ (u64::from(std::process::id()) << 32));
        eprintln!("content seed for {what}: {seed:#x}");
        Pattern { seed }
    }

    fn word(&self, index: u64) -> [u8; 8] {
        splitmix64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes()
    }

    /// `len` bytes starting at `offset`.
    pub fn bytes_at(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 16);
        let first = offset / 8;
        let skip = (offset % 8) as usize;
        let mut i = first;
        while out.len() < len + skip {
            out.extend_from_slice(&self.word(i));
            i += 1;
        }
        out.drain(..skip);
        out.truncate(len);
        out
    }

    /// Writes `size` bytes of the pattern to `path` (create or truncate),
    /// in 1 MiB writes, and closes it.
    pub fn write_file(&self, path: &Path, size: u64) -> std::io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut f = std::fs::File::create(path)?;
        let mut off = 0;
        while off < size {
            let n = CHUNK.min(size - off);
            f.write_all(&self.bytes_at(off, n as usize))?;
            off += n;
        }
        f.flush()
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `None` if equal, else a description: lengths and first differing offset.
pub fn describe_difference(actual: &[u8], expected: &[u8]) -> Option<String> {
    if actual == expected {
        return None;
    }
    let first = actual.iter().zip(expected).position(|(a, b)| a != b);
    Some(match first {
        Some(i) => format!(
            "{} bytes (expected {}), first difference at offset {i}: {:#04x} instead of {:#04x}",
            actual.len(),
            expected.len(),
            actual[i],
            expected[i]
        ),
        None => format!("{} bytes, expected {} (one is a prefix of the other)", actual.len(), expected.len()),
    })
}

/// Asserts equal bytes without printing megabytes when they differ.
#[track_caller]
pub fn assert_same_bytes(what: &str, actual: &[u8], expected: &[u8]) {
    if let Some(d) = describe_difference(actual, expected) {
        panic!("{what}: {d}");
    }
}

/// Bytes actually allocated on disk under `dir` (st_blocks * 512, like
/// `du`), so sparse files count only what was written. 0 if `dir` is missing.
pub fn bytes_on_disk(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                total += bytes_on_disk(&e.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_seekable() {
        let p = Pattern::new(42);
        let whole = p.bytes_at(0, 1000);
        for (off, len) in [(0, 1), (3, 17), (8, 8), (13, 500), (999, 1)] {
            assert_eq!(p.bytes_at(off as u64, len), whole[off..off + len]);
        }
        assert_ne!(Pattern::new(43).bytes_at(0, 64), whole[..64]);
    }

    #[test]
    fn differences_are_located() {
        assert_eq!(describe_difference(b"abc", b"abc"), None);
        assert!(describe_difference(b"abd", b"abc").unwrap().contains("offset 2"));
        assert!(describe_difference(b"ab", b"abc").unwrap().contains("prefix"));
    }

    #[test]
    fn sparse_files_count_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        assert!(bytes_on_disk(dir.path()) < 1 << 20);
        Pattern::new(1).write_file(&dir.path().join("dense"), 4 << 20).unwrap();
        assert!(bytes_on_disk(dir.path()) >= 4 << 20);
    }
}

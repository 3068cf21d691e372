//! A staging copy that is ready at once where the cache's filesystem has no
//! reflinks (ext4): copy-on-write over the version the edit starts from.
//!
//! The staging file starts sparse, at the base's size. A block (16 KiB) of
//! it holds bytes only once they are there: copied from the base by a
//! background copy that starts with the session, or, for a write that
//! covers part of a block the copy has not reached yet, copied first by
//! that write. Reads take the blocks not there yet from the base. The
//! publish waits for the copy to be complete: only then is the staging
//! file the new version's object.
//!
//! Crash safety: the base is hard-linked beside the staging copy (`*.base`)
//! until the copy is complete. While that link exists, every hole of the
//! staging file below the base's size means "the base's bytes" (fills and
//! writes are whole blocks, and a truncate below the base's size waits for
//! the copy first), so a run that finds a staging copy with its link fills
//! the holes from it before it hashes the edit ([`fill_leftover`]).

use super::dirty::{Dirty, BLOCK};
use crate::file_copy::copy_range;
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bases smaller than this are copied whole at open (a few milliseconds).
pub(super) const OVERLAY_MIN: u64 = 4 << 20;

/// The background copy moves this much per turn of its lock.
const CHUNK: u64 = 1 << 20;

/// Where the base is linked beside a staging copy.
pub(super) fn base_link(staging: &Path) -> PathBuf {
    let mut p = staging.as_os_str().to_owned();
    p.push(".base");
    PathBuf::from(p)
}

#[derive(Debug)]
pub(super) struct Overlay {
    base: File,
    base_len: u64,
    link: PathBuf,
    /// The blocks of the staging file that hold their bytes. Held across
    /// the disk work of a fill, of a write that fills, and of a read that
    /// takes from the base, so none sees a block half there.
    present: Mutex<Dirty>,
    /// Every block below `base_len` is there (read without the lock).
    complete: AtomicBool,
    settled: Condvar,
    notify: tokio::sync::Notify,
    /// The session ended before the copy did: stop.
    cancelled: AtomicBool,
}

/// The staging copy's handle on its overlay: dropping it (the session's
/// end) stops the background copy.
#[derive(Debug)]
pub(super) struct OverlayHandle(pub Arc<Overlay>);

impl Drop for OverlayHandle {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }
}

impl Overlay {
    /// Makes `staging` (empty, at `staging_path`) a copy-on-write view of
    /// the object file at `base_path`, and starts the background copy on
    /// the blocking pool. Fails (and the caller copies instead) when the
    /// base cannot be linked beside the staging copy.
    pub fn start(staging_path: &Path, staging: &File, base_path: &Path) -> io::Result<OverlayHandle> {
        let o = Overlay::new(staging_path, staging, base_path)?;
        let (bg, out) = (o.clone(), staging.try_clone()?);
        tokio::task::spawn_blocking(move || bg.copy_all(&out));
        Ok(OverlayHandle(o))
    }

    fn new(staging_path: &Path, staging: &File, base_path: &Path) -> io::Result<Arc<Overlay>> {
        let link = base_link(staging_path);
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(base_path, &link)?;
        let base = File::open(&link)?;
        let base_len = base.metadata()?.len();
        staging.set_len(base_len)?;
        Ok(Arc::new(Overlay {
            base,
            base_len,
            link,
            present: Mutex::new(Dirty::default()),
            complete: AtomicBool::new(false),
            settled: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            cancelled: AtomicBool::new(false),
        }))
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// The background copy: every block not there yet, a chunk at a time.
    /// A failure (a full disk) is retried: the edit is not lost, it waits.
    fn copy_all(&self, out: &File) {
        let mut warned = false;
        loop {
            match self.copy_round(out) {
                Ok(()) => return,
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "copying the version an edit starts from into its staging copy failed; retrying");
                    warned = true;
                }
                Err(_) => {}
            }
            if self.cancelled.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn copy_round(&self, out: &File) -> io::Result<()> {
        let mut at = 0;
        while at < self.base_len {
            if self.cancelled.load(Ordering::Relaxed) {
                return Ok(());
            }
            let end = (at + CHUNK).min(self.base_len);
            let mut present = self.present.lock();
            for (s, e) in present.gaps(at, end) {
                copy_range(&self.base, s, out, s, e - s)?;
            }
            present.write(at, end - at);
            at = end;
        }
        let _ = std::fs::remove_file(&self.link);
        let _held = self.present.lock();
        self.complete.store(true, Ordering::Release);
        self.settled.notify_all();
        self.notify.notify_waiters();
        Ok(())
    }

    /// Waits until the copy is complete.
    pub async fn completed(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_complete() {
                return;
            }
            notified.await;
        }
    }

    /// Waits, blocking, until the copy is complete.
    fn wait_complete(&self) {
        let mut present = self.present.lock();
        while !self.is_complete() {
            self.settled.wait(&mut present);
        }
    }

    /// Makes the base's link beside the staging copy durable while the copy
    /// is not complete (for an `fsync`: the staging copy's holes mean the
    /// base's bytes only while the link is there).
    pub fn sync_base_link(&self) -> io::Result<()> {
        if self.is_complete() {
            return Ok(());
        }
        match self.link.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    /// Reads `size` bytes at `offset` of the staging copy `file`.
    pub fn read(&self, file: &File, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        if self.is_complete() {
            return super::pread(file, offset, size);
        }
        let present = self.present.lock();
        let mut buf = super::pread(file, offset, size)?;
        let end = (offset + buf.len() as u64).min(self.base_len);
        for (s, e) in present.gaps(offset, end) {
            let at = (s - offset) as usize;
            self.base.read_exact_at(&mut buf[at..at + (e - s) as usize], s)?;
        }
        Ok(buf)
    }

    /// Writes `data` at `offset` of `file`, first filling from the base the
    /// blocks at either end that the write covers only in part.
    pub fn write(&self, file: &File, data: &[u8], offset: u64) -> io::Result<()> {
        if self.is_complete() || data.is_empty() {
            return file.write_all_at(data, offset);
        }
        let mut present = self.present.lock();
        let end = offset + data.len() as u64;
        for block in [offset / BLOCK, (end - 1) / BLOCK] {
            let (s, e) = (block * BLOCK, ((block + 1) * BLOCK).min(self.base_len));
            if s < e && !present.gaps(s, e).is_empty() {
                copy_range(&self.base, s, file, s, e - s)?;
                present.write(s, e - s);
            }
        }
        file.write_all_at(data, offset)?;
        present.write(offset, data.len() as u64);
        Ok(())
    }

    /// Before the staging copy's size is set to `size`: below the base's
    /// size, the bytes cut must not be taken for the base's later, so the
    /// copy must be complete first.
    pub fn before_set_len(&self, size: u64) {
        if size < self.base_len {
            self.wait_complete();
        }
    }

    /// Whether setting the size to `size` would wait for the copy.
    pub fn set_len_waits(&self, size: u64) -> bool {
        size < self.base_len && !self.is_complete()
    }
}

/// Completes a staging copy that a previous run left with its base still
/// linked beside it: every hole below the base's size is the base's bytes.
/// Blocking.
pub(super) fn fill_leftover(staging: &Path) -> io::Result<bool> {
    let link = base_link(staging);
    let base = match File::open(&link) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let out = std::fs::OpenOptions::new().read(true).write(true).open(staging)?;
    let end = base.metadata()?.len().min(out.metadata()?.len());
    for (s, e) in holes(&out, end)? {
        copy_range(&base, s, &out, s, e - s)?;
    }
    std::fs::remove_file(&link)?;
    Ok(true)
}

/// The holes of `f` below `end` (`SEEK_HOLE`/`SEEK_DATA`).
fn holes(f: &File, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let seek = |at: u64, whence| {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let r = unsafe { libc::lseek(f.as_raw_fd(), at as libc::off_t, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = io::Error::last_os_error();
        // ENXIO: no data at or after `at` (all hole to the end).
        if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) }
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < end {
        let Some(hole) = seek(at, libc::SEEK_HOLE)? else { break };
        if hole >= end {
            break;
        }
        let data = seek(hole, libc::SEEK_DATA)?.unwrap_or(end).min(end);
        out.push((hole, data));
        at = data;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let p = dir.join("base");
        std::fs::write(&p, &bytes).unwrap();
        (p, bytes)
    }

    fn staging(dir: &Path) -> (PathBuf, File) {
        let p = dir.join("7-1");
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        (p, f)
    }

    #[test]
    fn reads_see_the_base_and_writes_keep_the_rest_of_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (bp, mut want) = base(dir.path(), 300_000);
        let (sp, sf) = staging(dir.path());
        let o = Overlay::new(&sp, &sf, &bp).unwrap();
        assert_eq!(sf.metadata().unwrap().len(), 300_000, "the base's size at once");
        assert_eq!(o.read(&sf, 0, 300_000).unwrap(), want, "nothing copied yet: the base's bytes");
        o.write(&sf, b"hello", 40_000).unwrap();
        o.write(&sf, &[1u8; 20_000], 299_990).unwrap();
        want[40_000..40_005].copy_from_slice(b"hello");
        want.truncate(299_990);
        want.extend_from_slice(&[1u8; 20_000]);
        assert_eq!(o.read(&sf, 0, 400_000).unwrap(), want, "read across copied, written and base blocks");
        assert_eq!(o.read(&sf, 32_768, 10).unwrap(), want[32_768..32_778], "a block filled by the write");
        o.copy_round(&sf).unwrap();
        assert!(o.is_complete() && !base_link(&sp).exists(), "complete: the base's link is gone");
        assert_eq!(std::fs::read(&sp).unwrap(), want, "the staging file itself holds every byte");
    }

    #[test]
    fn a_run_after_a_crash_fills_the_holes_from_the_linked_base() {
        let dir = tempfile::tempdir().unwrap();
        let (bp, mut want) = base(dir.path(), 5 * BLOCK as usize + 123);
        let (sp, sf) = staging(dir.path());
        let o = Overlay::new(&sp, &sf, &bp).unwrap();
        o.write(&sf, &[9u8; 100], BLOCK * 2 + 50).unwrap();
        o.write(&sf, &[8u8; 10], 5 * BLOCK + 200).unwrap();
        want[BLOCK as usize * 2 + 50..BLOCK as usize * 2 + 150].fill(9);
        want.resize(5 * BLOCK as usize + 200, 0);
        want.extend_from_slice(&[8u8; 10]);
        // The daemon dies here: the background copy never ran.
        drop((o, sf));
        assert!(fill_leftover(&sp).unwrap());
        assert_eq!(std::fs::read(&sp).unwrap(), want);
        assert!(!base_link(&sp).exists());
        assert!(!fill_leftover(&sp).unwrap(), "nothing left to fill");
    }

    #[test]
    fn a_cut_below_the_base_waits_for_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (bp, want) = base(dir.path(), 3 * CHUNK as usize);
        let (sp, sf) = staging(dir.path());
        let o = Overlay::new(&sp, &sf, &bp).unwrap();
        assert!(o.set_len_waits(10) && !o.set_len_waits(4 * CHUNK), "growing does not wait");
        let (bg, out) = (o.clone(), sf.try_clone().unwrap());
        let copier = std::thread::spawn(move || bg.copy_all(&out));
        o.before_set_len(10);
        assert!(o.is_complete());
        sf.set_len(10).unwrap();
        copier.join().unwrap();
        assert_eq!(std::fs::read(&sp).unwrap(), want[..10]);
    }

    #[test]
    fn holes_are_found_below_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (_, f) = staging(dir.path());
        f.set_len(BLOCK * 8).unwrap();
        f.write_all_at(&[1u8; BLOCK as usize], BLOCK * 2).unwrap();
        let h = holes(&f, BLOCK * 8).unwrap();
        assert_eq!(h, vec![(0, BLOCK * 2), (BLOCK * 3, BLOCK * 8)]);
        assert_eq!(holes(&f, BLOCK).unwrap(), vec![(0, BLOCK)]);
    }
}

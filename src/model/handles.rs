//! The file handles the kernel holds open: which file each is on and how it
//! was opened. Its own lock, taken by no other part.

use super::{Fh, OpenMode};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use titorrent_tracker::proto::FileId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Handle {
    pub file: FileId,
    pub write: bool,
    pub append: bool,
}

#[derive(Debug)]
struct HandleTable {
    by_fh: HashMap<Fh, Handle>,
    next: u64,
}

#[derive(Debug)]
pub(super) struct Handles {
    inner: Mutex<HandleTable>,
}

impl Default for Handles {
    fn default() -> Self {
        Handles { inner: Mutex::new(HandleTable { by_fh: HashMap::new(), next: 1 }) }
    }
}

impl Handles {
    /// A new handle on `file`, numbered from 1 up.
    pub fn open(&self, file: FileId, mode: OpenMode) -> Fh {
        let mut t = self.inner.lock();
        let fh = Fh(t.next);
        t.next += 1;
        t.by_fh.insert(fh, Handle { file, write: mode.write, append: mode.write && mode.append });
        fh
    }

    pub fn get(&self, fh: Fh) -> Option<Handle> {
        self.inner.lock().by_fh.get(&fh).copied()
    }

    /// Forgets a handle (the kernel released it).
    pub fn close(&self, fh: Fh) -> Option<Handle> {
        self.inner.lock().by_fh.remove(&fh)
    }

    /// The files some handle is open on.
    pub fn open_files(&self) -> HashSet<FileId> {
        self.inner.lock().by_fh.values().map(|h| h.file).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_numbered_from_one_and_append_needs_write() {
        let h = Handles::default();
        let a = h.open(FileId(5), OpenMode { append: true, ..OpenMode::default() });
        let b = h.open(FileId(6), OpenMode { write: true, append: true, truncate: false });
        assert_eq!((a, b), (Fh(1), Fh(2)));
        assert_eq!(h.get(a), Some(Handle { file: FileId(5), write: false, append: false }));
        assert_eq!(h.get(b), Some(Handle { file: FileId(6), write: true, append: true }));
        assert_eq!(h.open_files(), HashSet::from([FileId(5), FileId(6)]));
        assert_eq!(h.close(a).map(|h| h.file), Some(FileId(5)));
        assert!(h.close(a).is_none());
        assert_eq!(h.open_files(), HashSet::from([FileId(6)]));
    }
}

//! The versions of each file this member has seen as current, newest last,
//! the last K per file, with a count of how many files' histories name each
//! version: whether a version is still wanted is a lookup, not a scan of
//! every file's history.

use std::collections::{HashMap, VecDeque};
use titorrent_tracker::proto::{FileId, InfoHash};

#[derive(Debug, Default)]
pub struct History {
    per_file: HashMap<FileId, VecDeque<InfoHash>>,
    /// How many entries of `per_file` name each version.
    refs: HashMap<InfoHash, u32>,
}

impl History {
    /// Notes `ih` as `id`'s current version and returns the versions that
    /// fell out of its last `keep`.
    pub fn push(&mut self, id: FileId, ih: InfoHash, keep: usize) -> Vec<InfoHash> {
        let hist = self.per_file.entry(id).or_default();
        let mut out = Vec::new();
        if hist.back() != Some(&ih) {
            if let Some(at) = hist.iter().position(|h| *h == ih) {
                hist.remove(at);
            } else {
                *self.refs.entry(ih).or_default() += 1;
            }
            hist.push_back(ih);
        }
        while hist.len() > keep.max(1) {
            out.extend(hist.pop_front());
        }
        for h in &out {
            release(&mut self.refs, *h);
        }
        out
    }

    /// Forgets `id`'s history; returns the versions no other file's
    /// history names.
    pub fn remove(&mut self, id: FileId) -> Vec<InfoHash> {
        let mut out: Vec<InfoHash> = self.per_file.remove(&id).map(Vec::from).unwrap_or_default();
        for h in &out {
            release(&mut self.refs, *h);
        }
        out.retain(|h| !self.refs.contains_key(h));
        out
    }

    /// Whether some file's history still names `ih`.
    pub fn holds(&self, ih: &InfoHash) -> bool {
        self.refs.contains_key(ih)
    }
}

fn release(refs: &mut HashMap<InfoHash, u32>, ih: InfoHash) {
    if let Some(n) = refs.get_mut(&ih) {
        *n -= 1;
        if *n == 0 {
            refs.remove(&ih);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(n: u8) -> InfoHash {
        InfoHash([n; 20])
    }

    #[test]
    fn keeps_the_last_k_and_counts_versions_two_files_share() {
        let mut h = History::default();
        let (a, b) = (FileId(10), FileId(11));
        assert!(h.push(a, ih(1), 2).is_empty());
        assert!(h.push(a, ih(1), 2).is_empty(), "the same current version twice is one entry");
        assert!(h.push(b, ih(1), 2).is_empty());
        assert!(h.push(a, ih(2), 2).is_empty());
        assert_eq!(h.push(a, ih(3), 2), vec![ih(1)]);
        assert!(h.holds(&ih(1)), "b's history still names it");
        assert_eq!(h.push(b, ih(4), 1), vec![ih(1)]);
        assert!(!h.holds(&ih(1)));
        // A version made current again moves to the back, not in twice.
        assert!(h.push(a, ih(2), 2).is_empty());
        assert_eq!(h.push(a, ih(5), 2), vec![ih(3)]);
        assert!(h.holds(&ih(2)) && h.holds(&ih(5)) && !h.holds(&ih(3)));
        // A purged file's versions go, except those another file names.
        assert!(h.push(b, ih(2), 2).is_empty());
        assert_eq!(h.remove(a), vec![ih(5)]);
        assert!(h.holds(&ih(2)) && !h.holds(&ih(5)));
        assert!(h.remove(a).is_empty(), "already gone");
    }
}

//! The local version store part: which versions the swarm has been handed,
//! open files of complete local versions, pins, each file's recent versions
//! (to collect the older ones), who holds each file's current version, and
//! which completions this run reports. One lock, taken by no other part.

use super::history::History;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use titorrent_tracker::proto::{FileEntry, FileId, FileKind, InfoHash, MemberId, Version};

/// Open local files kept at most; beyond, the cache starts again.
const OPEN_FILES: usize = 512;

#[derive(Debug, Default)]
struct StoreState {
    /// Open files of complete local versions, so reads don't reopen them.
    local_files: HashMap<InfoHash, Arc<File>>,
    /// Versions already handed to the swarm.
    ensured: HashSet<InfoHash>,
    /// Files and directories this member keeps local whatever the policy.
    pins: HashSet<FileId>,
    /// Per file, the info hashes of its versions this member has seen,
    /// oldest first; beyond `keep` they are forgotten.
    history: History,
    /// Who holds a complete copy of each file's current version: its
    /// author, and every member that reported `Have` for it.
    holders: HashMap<FileId, (Version, HashSet<MemberId>)>,
    /// Versions whose completion this run reports (or has reported).
    reported: HashSet<InfoHash>,
}

#[derive(Debug)]
pub(super) struct VersionStore {
    inner: Mutex<StoreState>,
    /// How many versions of each file stay local (older ones are collected).
    keep: AtomicUsize,
}

impl Default for VersionStore {
    fn default() -> Self {
        VersionStore { inner: Mutex::default(), keep: AtomicUsize::new(10) }
    }
}

impl VersionStore {
    pub fn set_keep(&self, k: usize) {
        self.keep.store(k.max(1), Ordering::Relaxed);
    }

    // ---- versions handed to the swarm, local files --------------------------

    pub fn is_ensured(&self, ih: &InfoHash) -> bool {
        self.inner.lock().ensured.contains(ih)
    }

    pub fn mark_ensured(&self, ih: InfoHash) {
        self.inner.lock().ensured.insert(ih);
    }

    /// The open file of a complete local version, and whether the version
    /// was handed to the swarm.
    pub fn local_file(&self, ih: &InfoHash) -> (Option<Arc<File>>, bool) {
        let s = self.inner.lock();
        (s.local_files.get(ih).cloned(), s.ensured.contains(ih))
    }

    /// Keeps a complete local version's file open for the next reads.
    pub fn keep_open(&self, ih: InfoHash, f: Arc<File>) {
        // Declared before the guard, so dropped (closed) after it.
        let mut closed = HashMap::new();
        let mut s = self.inner.lock();
        if s.local_files.len() > OPEN_FILES {
            closed = std::mem::take(&mut s.local_files);
        }
        closed.extend(s.local_files.insert(ih, f).map(|old| (ih, old)));
    }

    /// Notes `ih` as `id`'s current version; returns the versions that fell
    /// out of its last K and no file's recent versions name any more. The
    /// caller drops those the table still has as some file's current
    /// version, and hands the rest to [`Self::forget`].
    pub fn push_current(&self, id: FileId, ih: InfoHash) -> Vec<InfoHash> {
        let keep = self.keep.load(Ordering::Relaxed);
        let mut s = self.inner.lock();
        let mut out = s.history.push(id, ih, keep);
        // Indexed, not scanned: this runs for every new version.
        out.retain(|h| !s.history.holds(h));
        out
    }

    /// Forgets a purged file's history; returns the versions no other
    /// file's history names (the caller checks the table, as for
    /// [`Self::push_current`]).
    pub fn drop_history(&self, id: FileId) -> Vec<InfoHash> {
        self.inner.lock().history.remove(id)
    }

    /// Versions collected: no longer handed to the swarm, nor open here.
    pub fn forget(&self, doomed: &[InfoHash]) {
        let mut closed = Vec::new(); // dropped (closed) after the guard
        let mut s = self.inner.lock();
        for h in doomed {
            s.ensured.remove(h);
            closed.extend(s.local_files.remove(h));
        }
    }

    // ---- pins --------------------------------------------------------------

    /// Sets or clears a pin.
    pub fn pin(&self, id: FileId, on: bool) {
        let mut s = self.inner.lock();
        if on {
            s.pins.insert(id);
        } else {
            s.pins.remove(&id);
        }
    }

    pub fn is_pin(&self, id: FileId) -> bool {
        self.inner.lock().pins.contains(&id)
    }

    /// Whether any of `ids` (a file and its directories) is pinned.
    pub fn any_pinned(&self, ids: &[FileId]) -> bool {
        let s = self.inner.lock();
        ids.iter().any(|id| s.pins.contains(id))
    }

    /// The pins file's text: one id a line.
    pub fn pins_text(&self) -> String {
        self.inner.lock().pins.iter().map(|p| format!("{p}\n")).collect()
    }

    pub fn add_pins(&self, pins: impl IntoIterator<Item = FileId>) {
        self.inner.lock().pins.extend(pins);
    }

    // ---- holders and reports -----------------------------------------------

    /// `member` holds a complete copy of `file`'s `version` (a newer version
    /// starts the list again).
    pub fn note_holder(&self, file: FileId, version: Version, member: MemberId) {
        let mut s = self.inner.lock();
        let h = s.holders.entry(file).or_insert_with(|| (version, HashSet::new()));
        if h.0 != version {
            *h = (version, HashSet::new());
        }
        h.1.insert(member);
    }

    /// The author of a new current version holds it.
    pub fn note_author(&self, e: &FileEntry) {
        if e.kind == FileKind::File && e.info_hash.is_some() {
            self.note_holder(e.id, e.version, e.author);
        }
    }

    /// Who is known to hold `file`'s `version`.
    pub fn holders(&self, file: FileId, version: Version) -> Vec<MemberId> {
        let s = self.inner.lock();
        s.holders.get(&file).filter(|(v, _)| *v == version).map(|(_, h)| h.iter().copied().collect()).unwrap_or_default()
    }

    /// Whether this run should report `ih`'s completion (once).
    pub fn start_report(&self, ih: InfoHash) -> bool {
        self.inner.lock().reported.insert(ih)
    }

    /// The report did not go out: a later ensure tries again.
    pub fn report_failed(&self, ih: &InfoHash) {
        self.inner.lock().reported.remove(ih);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(n: u8) -> InfoHash {
        InfoHash([n; 20])
    }

    #[test]
    fn old_versions_fall_out_unless_another_file_remembers_them() {
        let s = VersionStore::default();
        s.set_keep(1);
        s.mark_ensured(ih(1));
        assert!(s.push_current(FileId(2), ih(1)).is_empty());
        assert!(s.push_current(FileId(3), ih(1)).is_empty());
        assert!(s.push_current(FileId(2), ih(2)).is_empty(), "file 3's history still names it");
        assert_eq!(s.push_current(FileId(3), ih(3)), vec![ih(1)]);
        assert!(s.is_ensured(&ih(1)));
        s.forget(&[ih(1)]);
        assert!(!s.is_ensured(&ih(1)));
    }

    #[test]
    fn holders_start_again_with_a_new_version() {
        let s = VersionStore::default();
        let file = |v: u64| FileEntry {
            id: FileId(2),
            parent: FileId::ROOT,
            name: "a".into(),
            kind: FileKind::File,
            size: 1,
            mtime: 0,
            mode: 0o644,
            version: Version(v),
            info_hash: Some(ih(v as u8)),
            author: MemberId(9),
            owner: Default::default(),
            ctime: 0,
        };
        s.note_author(&file(1));
        s.note_holder(FileId(2), Version(1), MemberId(4));
        let mut h = s.holders(FileId(2), Version(1));
        h.sort();
        assert_eq!(h, vec![MemberId(4), MemberId(9)]);
        s.note_author(&file(2));
        assert_eq!(s.holders(FileId(2), Version(2)), vec![MemberId(9)]);
        assert!(s.holders(FileId(2), Version(1)).is_empty());
        assert!(s.start_report(ih(2)) && !s.start_report(ih(2)));
        s.report_failed(&ih(2));
        assert!(s.start_report(ih(2)));
    }

    #[test]
    fn pins_and_their_text() {
        let s = VersionStore::default();
        s.add_pins([FileId(4)]);
        s.pin(FileId(5), true);
        assert!(s.any_pinned(&[FileId(9), FileId(5)]));
        s.pin(FileId(5), false);
        assert!(!s.is_pin(FileId(5)) && s.is_pin(FileId(4)));
        assert_eq!(s.pins_text(), "4\n");
    }
}

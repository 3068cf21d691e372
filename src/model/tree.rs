//! The group's file table as this member last heard it from the tracker:
//! entries by id, children by name, kept consistent as events are applied.
//!
//! Invariants: every entry but the root has a parent that is a directory in
//! the tree, and appears in exactly that parent's `children` under its own
//! name. Inode numbers are file ids (the root is `FileId::ROOT` = 1, which is
//! also FUSE's root inode).

use std::collections::{BTreeMap, HashMap};
use titorrent_tracker::proto::{FileEntry, FileId, FileKind, InfoHash, MemberId, Version};

#[derive(Debug)]
struct Node {
    entry: FileEntry,
    children: BTreeMap<String, FileId>,
    /// How many of `children` are directories (a directory's `st_nlink` is
    /// 2 + this), kept as names come and go.
    subdirs: u32,
}

/// What applying an entry changed, so that the kernel's caches can be told.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Directory entries that appeared, moved or vanished: (parent, name).
    pub names: Vec<(FileId, String)>,
    /// The file's content changed (new version): its pages are stale.
    pub content_changed: bool,
}

#[derive(Debug)]
pub struct Tree {
    nodes: HashMap<FileId, Node>,
    /// How many entries have each info hash as their current version.
    by_hash: HashMap<InfoHash, u32>,
    /// How many hard links (`FileKind::Link`) name each file that has any.
    links: HashMap<FileId, u32>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

fn root_entry() -> FileEntry {
    FileEntry {
        id: FileId::ROOT,
        parent: FileId::ROOT,
        name: String::new(),
        kind: FileKind::Dir,
        size: 0,
        mtime: 0,
        mode: 0o755,
        version: Version(0),
        info_hash: None,
        author: MemberId(0),
        owner: Default::default(),
        ctime: 0,
    }
}

impl Tree {
    pub fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(FileId::ROOT, Node { entry: root_entry(), children: BTreeMap::new(), subdirs: 0 });
        Tree { nodes, by_hash: HashMap::new(), links: HashMap::new() }
    }

    /// Whether some entry's current version has this info hash.
    pub fn holds(&self, ih: &InfoHash) -> bool {
        self.by_hash.contains_key(ih)
    }

    /// How many hard links name `f` (its other names).
    pub fn links_to(&self, f: FileId) -> u32 {
        self.links.get(&f).copied().unwrap_or(0)
    }

    /// How many subdirectories a directory has (by name).
    pub fn subdirs(&self, dir: FileId) -> u32 {
        self.nodes.get(&dir).map_or(0, |n| n.subdirs)
    }

    fn is_dir(&self, id: FileId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.entry.kind == FileKind::Dir)
    }

    /// Takes `name` out of `parent`'s children if it names `id`.
    fn unname(&mut self, parent: FileId, name: &str, id: FileId) {
        let dir = self.is_dir(id);
        if let Some(p) = self.nodes.get_mut(&parent) {
            if p.children.get(name) == Some(&id) {
                p.children.remove(name);
                p.subdirs -= u32::from(dir);
            }
        }
    }

    /// Counts a link entry in or out (an entry's kind never changes).
    fn count_link(&mut self, e: &FileEntry, add: bool) {
        let Some(t) = e.kind.link_of() else { return };
        if add {
            *self.links.entry(t).or_default() += 1;
        } else if let Some(n) = self.links.get_mut(&t) {
            *n -= 1;
            if *n == 0 {
                self.links.remove(&t);
            }
        }
    }

    fn count(&mut self, old: Option<InfoHash>, new: Option<InfoHash>) {
        if old == new {
            return;
        }
        if let Some(ih) = old {
            if let Some(n) = self.by_hash.get_mut(&ih) {
                *n -= 1;
                if *n == 0 {
                    self.by_hash.remove(&ih);
                }
            }
        }
        if let Some(ih) = new {
            *self.by_hash.entry(ih).or_default() += 1;
        }
    }

    /// Builds a tree from a snapshot of the whole table. Entries whose parent
    /// is missing are kept out (and logged): they cannot be reached by path.
    pub fn from_snapshot(files: Vec<FileEntry>) -> Self {
        let mut tree = Tree::new();
        let mut pending: Vec<FileEntry> = files;
        // Parents may come after their children in the snapshot; apply in
        // rounds until nothing more can be placed.
        loop {
            let before = pending.len();
            pending.retain(|e| {
                if e.id == FileId::ROOT || tree.nodes.contains_key(&e.parent) {
                    tree.apply(e.clone());
                    false
                } else {
                    true
                }
            });
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        for orphan in pending {
            tracing::warn!(file = %orphan.id, name = %orphan.name, parent = %orphan.parent, "file table entry without a parent directory; ignored");
        }
        tree
    }

    pub fn get(&self, id: FileId) -> Option<&FileEntry> {
        self.nodes.get(&id).map(|n| &n.entry)
    }

    pub fn lookup(&self, parent: FileId, name: &str) -> Option<&FileEntry> {
        let id = self.nodes.get(&parent)?.children.get(name)?;
        self.get(*id)
    }

    /// Children of a directory in name order; `None` if `dir` is unknown or
    /// not a directory.
    pub fn children(&self, dir: FileId) -> Option<Vec<&FileEntry>> {
        let node = self.nodes.get(&dir)?;
        if node.entry.kind != FileKind::Dir {
            return None;
        }
        Some(node.children.values().filter_map(|id| self.get(*id)).collect())
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    pub fn entries(&self) -> impl Iterator<Item = &FileEntry> {
        self.nodes.values().map(|n| &n.entry)
    }

    /// Path of an entry from the root, for log lines ("docs/notes.txt").
    pub fn path(&self, id: FileId) -> String {
        let mut parts = Vec::new();
        let mut cur = id;
        while cur != FileId::ROOT {
            match self.get(cur) {
                Some(e) => {
                    parts.push(e.name.clone());
                    cur = e.parent;
                }
                None => break,
            }
            if parts.len() > 4096 {
                break; // a cycle would be a tracker bug; don't spin
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// Inserts or updates an entry. Older versions never replace newer ones,
    /// so a late event cannot roll a file back.
    pub fn apply(&mut self, entry: FileEntry) -> Applied {
        let mut applied = Applied::default();
        if entry.id == FileId::ROOT {
            if let Some(root) = self.nodes.get_mut(&FileId::ROOT) {
                root.entry.mtime = entry.mtime;
                root.entry.mode = entry.mode;
            }
            return applied;
        }
        if !self.nodes.get(&entry.parent).is_some_and(|p| p.entry.kind == FileKind::Dir) {
            tracing::warn!(file = %entry.id, parent = %entry.parent, "entry for an unknown parent directory; ignored");
            return applied;
        }
        match self.nodes.get_mut(&entry.id) {
            Some(node) => {
                if entry.version < node.entry.version {
                    return applied;
                }
                applied.content_changed = entry.version != node.entry.version
                    || entry.info_hash != node.entry.info_hash
                    || entry.size != node.entry.size;
                let old_parent = node.entry.parent;
                let old = std::mem::replace(&mut node.entry, entry.clone());
                let old_name = old.name;
                self.count(old.info_hash, entry.info_hash);
                if old_parent != entry.parent || old_name != entry.name {
                    self.unname(old_parent, &old_name, entry.id);
                    applied.names.push((old_parent, old_name));
                    self.link(&entry, &mut applied);
                }
            }
            None => {
                applied.content_changed = entry.info_hash.is_some();
                self.count(None, entry.info_hash);
                self.count_link(&entry, true);
                self.nodes.insert(entry.id, Node { entry: entry.clone(), children: BTreeMap::new(), subdirs: 0 });
                self.link(&entry, &mut applied);
            }
        }
        applied
    }

    /// A rename's event: the tracker says where the entry is now, so its
    /// name ends up naming it even when this tree already had it there. (A
    /// member that renamed Z over a name moves Z at once; another member's
    /// earlier rename of Y to that name then arrives and takes the name,
    /// Y's deletion by Z's rename frees it, and Z's own event must take it
    /// back.)
    ///
    /// The event may also be older than a version this member already
    /// applied (its own publish's answer, handled before the events ahead
    /// of it): the move still holds, with the newer content.
    pub fn apply_moved(&mut self, mut entry: FileEntry) -> Applied {
        if let Some(cur) = self.nodes.get(&entry.id).map(|n| &n.entry).filter(|cur| cur.version > entry.version) {
            let ctime = entry.ctime.max(cur.ctime);
            entry = FileEntry { parent: entry.parent, name: entry.name, ctime, ..cur.clone() };
        }
        let (id, parent, name) = (entry.id, entry.parent, entry.name.clone());
        let mut applied = self.apply(entry);
        let there = self.nodes.get(&id).filter(|n| n.entry.parent == parent && n.entry.name == name).map(|n| n.entry.clone());
        let named = self.nodes.get(&parent).is_some_and(|p| p.children.get(&name) == Some(&id));
        if let (Some(e), false) = (there, named) {
            self.link(&e, &mut applied);
        }
        applied
    }

    /// Like [`Tree::apply`], but keeps a known entry where it is: for what
    /// says nothing about a move (a new version, changed attributes, a
    /// restore), which may predate a rename this member already applied (a
    /// publish's event arriving after the temporary file was renamed over
    /// the original). Only renames and snapshots move entries.
    pub fn apply_in_place(&mut self, mut entry: FileEntry) -> Applied {
        if let Some(node) = self.nodes.get(&entry.id) {
            entry.parent = node.entry.parent;
            entry.name = node.entry.name.clone();
        }
        self.apply(entry)
    }

    /// Makes `entry`'s name in its parent name it. Only a name that named
    /// another file goes into `applied.names`: the kernel may hold a
    /// dentry for that one. A new name needs nothing (the kernel keeps no
    /// negative dentry past its lookup: fuse::lookup answers ENOENT, which
    /// the kernel looks up again next time), and a name that already named
    /// this entry must keep its dentry: invalidating a directory's dentry
    /// unhashes it, and every process whose working directory it is gets
    /// ENOENT from getcwd (`git init repo` in a mount did, when its own
    /// creation's event came before the answer).
    fn link(&mut self, entry: &FileEntry, applied: &mut Applied) {
        let prev = self.nodes.get(&entry.parent).and_then(|p| p.children.get(&entry.name)).copied();
        if prev == Some(entry.id) {
            return;
        }
        if let Some(prev) = prev {
            // The tracker decided the name now means another file;
            // the old one is no longer reachable under it.
            tracing::debug!(old = %prev, new = %entry.id, name = %entry.name, "name taken over");
            self.unname(entry.parent, &entry.name, prev);
            applied.names.push((entry.parent, entry.name.clone()));
        }
        let dir = self.is_dir(entry.id);
        if let Some(p) = self.nodes.get_mut(&entry.parent) {
            p.children.insert(entry.name.clone(), entry.id);
            p.subdirs += u32::from(dir);
        }
    }

    /// Removes an entry (and, for a directory, everything below it).
    /// Returns the names that vanished.
    pub fn remove(&mut self, id: FileId) -> Applied {
        let mut applied = Applied::default();
        if id == FileId::ROOT {
            return applied;
        }
        let Some((parent, name)) = self.get(id).map(|e| (e.parent, e.name.clone())) else { return applied };
        self.unname(parent, &name, id);
        let node = self.nodes.remove(&id).expect("just looked up");
        self.count(node.entry.info_hash, None);
        self.count_link(&node.entry, false);
        applied.names.push((node.entry.parent, node.entry.name.clone()));
        let mut stack: Vec<FileId> = node.children.into_values().collect();
        while let Some(c) = stack.pop() {
            if let Some(n) = self.nodes.remove(&c) {
                self.count(n.entry.info_hash, None);
                self.count_link(&n.entry, false);
                stack.extend(n.children.into_values());
            }
        }
        applied
    }

    /// Updates attributes of an entry this member changed itself, before the
    /// tracker's event confirms them.
    pub fn with_entry_mut<R>(&mut self, id: FileId, f: impl FnOnce(&mut FileEntry) -> R) -> Option<R> {
        let node = self.nodes.get_mut(&id)?;
        let before = node.entry.info_hash;
        let r = f(&mut node.entry);
        let after = node.entry.info_hash;
        self.count(before, after);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: u64, parent: u64, name: &str, version: u64) -> FileEntry {
        FileEntry {
            id: FileId(id),
            parent: FileId(parent),
            name: name.into(),
            kind: FileKind::File,
            size: version * 10,
            mtime: 0,
            mode: 0o644,
            version: Version(version),
            info_hash: None,
            author: MemberId(1),
            owner: Default::default(),
            ctime: 0,
        }
    }

    fn dir(id: u64, parent: u64, name: &str) -> FileEntry {
        FileEntry { kind: FileKind::Dir, ..file(id, parent, name, 0) }
    }

    #[test]
    fn holds_follows_every_change_as_a_scan_would() {
        let ih = |n: u8| Some(InfoHash([n; 20]));
        let with = |e: FileEntry, h: Option<InfoHash>| FileEntry { info_hash: h, ..e };
        let mut t = Tree::new();
        t.apply(dir(2, 1, "d"));
        t.apply(with(file(3, 2, "a", 1), ih(1)));
        t.apply(with(file(4, 1, "b", 1), ih(1)));
        t.apply(with(file(5, 2, "c", 1), ih(2)));
        let scan = |t: &Tree, h: u8| t.entries().any(|e| e.info_hash == ih(h));
        for h in [1, 2, 3] {
            assert_eq!(t.holds(&ih(h).unwrap()), scan(&t, h), "after creates, {h}");
        }
        t.apply(with(file(4, 1, "b", 2), ih(3))); // b's new version
        assert!(t.holds(&ih(1).unwrap()) && t.holds(&ih(3).unwrap()));
        t.apply(with(file(4, 1, "b", 1), ih(1))); // older: ignored, counts untouched
        assert!(t.holds(&ih(3).unwrap()));
        t.remove(FileId(2)); // d with a and c
        for h in [1, 2, 3] {
            assert_eq!(t.holds(&ih(h).unwrap()), scan(&t, h), "after the subtree went, {h}");
        }
        t.with_entry_mut(FileId(4), |e| e.info_hash = None);
        assert!(!t.holds(&ih(3).unwrap()));
    }

    /// Another member's rename of a file, older than the version this
    /// member's own publish made current here: the file moves, and keeps
    /// the newer version (before, the move was dropped and the file kept
    /// its old name here for good).
    #[test]
    fn a_rename_older_than_the_version_here_still_moves_the_file() {
        let mut t = Tree::from_snapshot(vec![file(2, 1, "draft", 1)]);
        t.apply_in_place(file(2, 1, "draft", 2)); // this member's publish answer
        t.apply_moved(file(2, 1, "final", 1));
        assert_eq!(t.lookup(FileId::ROOT, "final").map(|e| e.id), Some(FileId(2)));
        assert!(t.lookup(FileId::ROOT, "draft").is_none());
        let e = t.get(FileId(2)).unwrap();
        assert_eq!((e.version, e.size), (Version(2), 20), "the newer content stays");
    }

    #[test]
    fn snapshot_with_children_before_parents() {
        let t = Tree::from_snapshot(vec![file(3, 2, "a.txt", 1), dir(2, 1, "docs")]);
        assert_eq!(t.lookup(FileId(2), "a.txt").unwrap().id, FileId(3));
        assert_eq!(t.path(FileId(3)), "docs/a.txt");
        let names: Vec<_> = t.children(FileId::ROOT).unwrap().iter().map(|e| e.name.clone()).collect();
        assert_eq!(names, ["docs"]);
    }

    #[test]
    fn a_rename_takes_its_name_back_from_an_entry_that_held_it_in_between() {
        let mut t = Tree::new();
        t.apply(dir(2, 1, "d"));
        t.apply(file(3, 1, "y", 1));
        t.apply(file(4, 1, "z", 1));
        // This member renamed z over d/n: moved here at once.
        t.apply(file(4, 2, "n", 1));
        // Then the tracker's events: another member's earlier rename of y
        // to d/n, y's deletion by this member's rename, this rename.
        let over = t.apply_moved(file(3, 2, "n", 1));
        assert!(over.names.contains(&(FileId(2), "n".to_string())), "the kernel's dentry of d/n (z) must go");
        t.remove(FileId(3));
        let a = t.apply_moved(file(4, 2, "n", 1));
        assert_eq!(t.lookup(FileId(2), "n").map(|e| e.id), Some(FileId(4)));
        assert!(a.names.is_empty(), "the name was free again: no dentry to drop");
        // Nothing changes for a rename already in place.
        assert!(t.apply_moved(file(4, 2, "n", 1)).names.is_empty());
    }

    /// A directory's subdirectory count, as `st_nlink` shows it, follows
    /// creates, moves, take-overs and removals as a count of its children
    /// would.
    #[test]
    fn subdirectory_counts_follow_every_change_as_a_count_would() {
        let mut t = Tree::new();
        t.apply(dir(2, 1, "a"));
        t.apply(dir(3, 1, "b"));
        t.apply(file(4, 1, "f", 1));
        t.apply(dir(5, 2, "sub"));
        let count = |t: &Tree, d: u64| t.children(FileId(d)).unwrap().iter().filter(|e| e.kind == FileKind::Dir).count() as u32;
        let check = |t: &Tree, what: &str| {
            for d in [1, 2, 3] {
                if t.get(FileId(d)).is_some() {
                    assert_eq!(t.subdirs(FileId(d)), count(t, d), "{what}: directory {d}");
                }
            }
        };
        check(&t, "creates");
        assert_eq!(t.subdirs(FileId::ROOT), 2);
        t.apply_moved(dir(5, 3, "moved"));
        check(&t, "a move between directories");
        t.apply_moved(dir(5, 3, "again"));
        check(&t, "a rename in place");
        t.apply_moved(file(4, 3, "again", 1)); // a file takes the directory's name
        check(&t, "a take-over");
        t.remove(FileId(5)); // no longer named: nothing to count out
        t.remove(FileId(3));
        check(&t, "removals");
        assert_eq!(t.subdirs(FileId::ROOT), 1);
    }

    #[test]
    fn orphans_are_left_out() {
        let t = Tree::from_snapshot(vec![file(3, 9, "lost", 1)]);
        assert!(t.get(FileId(3)).is_none());
    }

    #[test]
    fn new_version_marks_content_changed_and_old_version_is_ignored() {
        let mut t = Tree::new();
        t.apply(file(2, 1, "a", 1));
        let a = t.apply(file(2, 1, "a", 2));
        assert!(a.content_changed);
        let mut with_content = file(3, 1, "b", 1);
        with_content.info_hash = Some(titorrent_tracker::proto::InfoHash([1; 20]));
        assert!(t.apply(with_content).content_changed, "a new file that already has content");
        let b = t.apply(file(2, 1, "a", 1));
        assert!(!b.content_changed);
        assert_eq!(t.get(FileId(2)).unwrap().version, Version(2));
    }

    #[test]
    fn a_directory_named_where_it_already_is_keeps_its_dentry() {
        // This member's mkdir: its answer first, then its own event (or
        // the other way round), then a snapshot's row. None may drop the
        // kernel's dentry, which may be a process's working directory.
        let mut t = Tree::new();
        assert!(t.apply(dir(2, 1, "repo")).names.is_empty());
        assert!(t.apply(dir(2, 1, "repo")).names.is_empty());
        assert!(t.apply_moved(dir(2, 1, "repo")).names.is_empty());
        assert!(t.apply_in_place(dir(2, 1, "repo")).names.is_empty());
        assert_eq!(t.lookup(FileId::ROOT, "repo").unwrap().id, FileId(2));
    }

    #[test]
    fn rename_moves_between_directories() {
        let mut t = Tree::new();
        t.apply(dir(2, 1, "d"));
        t.apply(file(3, 1, "a", 1));
        let mut moved = file(3, 2, "b", 1);
        moved.version = Version(1);
        let applied = t.apply(moved);
        assert!(t.lookup(FileId::ROOT, "a").is_none());
        assert_eq!(t.lookup(FileId(2), "b").unwrap().id, FileId(3));
        assert_eq!(applied.names, vec![(FileId::ROOT, "a".to_string())], "only the name that went");
    }

    #[test]
    fn an_update_from_before_a_rename_does_not_move_the_file_back() {
        let mut t = Tree::new();
        t.apply(file(3, 1, ".tmp", 1));
        t.apply(file(3, 1, "final", 1)); // renamed here
        let mut late = file(3, 1, ".tmp", 1); // e.g. the publish's event
        late.mtime = 77;
        let applied = t.apply_in_place(late);
        assert!(applied.names.is_empty());
        assert!(t.lookup(FileId::ROOT, ".tmp").is_none());
        let e = t.lookup(FileId::ROOT, "final").unwrap();
        assert_eq!((e.id, e.mtime), (FileId(3), 77));
        // A new entry is inserted where it says.
        t.apply_in_place(file(4, 1, "new", 1));
        assert_eq!(t.lookup(FileId::ROOT, "new").unwrap().id, FileId(4));
    }

    #[test]
    fn remove_takes_the_subtree() {
        let mut t = Tree::new();
        t.apply(dir(2, 1, "d"));
        t.apply(file(3, 2, "a", 1));
        let applied = t.remove(FileId(2));
        assert_eq!(applied.names, vec![(FileId::ROOT, "d".to_string())]);
        assert!(t.get(FileId(3)).is_none());
        assert!(t.children(FileId::ROOT).unwrap().is_empty());
    }

    #[test]
    fn children_of_a_file_is_none() {
        let mut t = Tree::new();
        t.apply(file(2, 1, "a", 1));
        assert!(t.children(FileId(2)).is_none());
        // a file cannot be a parent
        t.apply(file(3, 2, "x", 1));
        assert!(t.get(FileId(3)).is_none());
    }

    #[test]
    fn link_counts_follow_links_coming_renamed_and_going() {
        let link = |id: u64, parent: u64, name: &str, to: u64| FileEntry { kind: FileKind::Link(FileId(to)), ..file(id, parent, name, 0) };
        let mut t = Tree::from_snapshot(vec![link(4, 3, "l1", 2), dir(3, 1, "d"), file(2, 1, "f", 1)]);
        assert_eq!(t.links_to(FileId(2)), 1, "from a snapshot, children before parents");
        t.apply(link(5, 1, "l2", 2));
        t.apply(link(5, 3, "l2-renamed", 2));
        assert_eq!(t.links_to(FileId(2)), 2, "a rename is not a new link");
        t.remove(FileId(5));
        assert_eq!(t.links_to(FileId(2)), 1);
        t.remove(FileId(3));
        assert_eq!(t.links_to(FileId(2)), 0, "links in a removed subtree go with it");
    }
}

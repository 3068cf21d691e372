//! The file table part: the group's files as this member last heard them
//! (the tree), the last event applied, who holds which lock, the files this
//! member removed whose deletion's event is still to come, the files just
//! removed that stay openable through their inode, and this member's access
//! times. It applies the tracker's events and answers lookups; what the
//! kernel must forget, and what other parts must hear, it hands back as
//! [`Effects`] instead of doing it. One lock, taken by no other part.

use super::tree::{self, Tree};
use super::{ModelError, NodeType, Result};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use titorrent_tracker::proto::{
    Event, EventKind, FileEntry, FileId, FileKind, InfoHash, LockHolder, MemberId, Seq, Touch, shared_mode, UnixMillis, Version,
};

/// How long a removed file stays openable through its inode when no handle
/// holds it: longer than the kernel trusts a cached name (fuse::TTL).
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// What applying events changed, for the front to pass on.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Directory entries the kernel must look up again: (parent, name).
    pub names: Vec<(FileId, String)>,
    /// Files whose pages and attributes the kernel must drop.
    pub inodes: Vec<FileId>,
    /// Entries that got a new current version, in event order.
    pub new_versions: Vec<FileEntry>,
    /// (file, version, member): a member holds a complete copy of a
    /// current version (its author, or a `Have`), in event order.
    pub holders: Vec<(FileId, Version, MemberId)>,
    /// The member events among them, in order.
    pub members: Vec<EventKind>,
    /// Deleted files whose time in the tracker's trash ended: their
    /// versions may go from this member's cache.
    pub purged: Vec<FileId>,
}

/// A file whose place (or absence) this member applied from its own
/// change's answer, before that change's events: the table shows the file
/// where it is as of `seq`, so the events up to `seq` that create, move or
/// delete it are older news and skipped; the later ones apply as usual.
/// That is what keeps a `config.lock` renamed over `config` and created
/// again from reappearing, or vanishing, on its own late events.
#[derive(Debug, Clone, Copy)]
struct Own {
    seq: Seq,
    /// Deleted (or replaced) here: every event about it up to `seq` is
    /// skipped, not only those that move it.
    gone: bool,
    /// The file a deleted hard link named, for its deletion's event.
    link_of: Option<FileId>,
}

#[derive(Debug)]
struct TableState {
    tree: Tree,
    seq: Option<Seq>,
    locks: HashMap<FileId, LockHolder>,
    /// Where this member's own changes put files ahead of the events: for
    /// each file it created, renamed, deleted or replaced, the seq of that
    /// commit as the tracker's answer said (see [`Own`]). Dropped once the
    /// events reach it.
    own: HashMap<FileId, Own>,
    /// Files just removed from the table (deleted, or replaced by a rename),
    /// still readable through their inode: by handles opened before (as an
    /// unlinked file stays readable), and for [`ORPHAN_GRACE`] by opens
    /// through a name the kernel still caches (an open racing a replace
    /// gets the old file, not ENOENT).
    orphans: HashMap<FileId, (FileEntry, Instant)>,
    /// Access times on this member (not shared: a read here is nobody
    /// else's business), for the files whose atime differs from their
    /// mtime. Set by `utimensat` and by reads (relatime).
    atimes: HashMap<FileId, UnixMillis>,
    /// The setuid, setgid and sticky bits this member set and the group
    /// does not share (`proto::shared_mode`), for the files that have any:
    /// kept for this member alone, as on any disk (the mount is `nosuid`).
    own_bits: HashMap<FileId, u32>,
    /// The ctime of each attribute change this member made whose own event
    /// has not come back yet (`u64::MAX` while its answer is awaited): an
    /// event older than it (a change that landed just before, still queued
    /// here) must not undo the mode, mtime and owner this member already
    /// shows. The tracker's ctimes of one entry's attribute changes
    /// strictly increase.
    attrs_set_here: HashMap<FileId, UnixMillis>,
}

#[derive(Debug)]
pub(super) struct FileTable {
    inner: Mutex<TableState>,
}

impl Default for FileTable {
    fn default() -> Self {
        FileTable {
            inner: Mutex::new(TableState {
                tree: Tree::new(),
                seq: None,
                locks: HashMap::new(),
                own: HashMap::new(),
                orphans: HashMap::new(),
                atimes: HashMap::new(),
                own_bits: HashMap::new(),
                attrs_set_here: HashMap::new(),
            }),
        }
    }
}

impl TableState {
    /// Whether the table already shows `id` where it is as of `seq` (its
    /// events up to `seq` applied, or a newer change of this member's).
    fn is_past(&self, id: FileId, seq: Option<Seq>) -> bool {
        seq.is_some_and(|s| self.seq.is_some_and(|t| t >= s) || self.own.get(&id).is_some_and(|o| o.seq >= s))
    }

    /// Notes that this member's change at `seq` placed (or removed) `id`.
    fn mark(&mut self, id: FileId, seq: Option<Seq>, gone: bool, link_of: Option<FileId>) {
        if let Some(seq) = seq {
            self.own.insert(id, Own { seq, gone, link_of });
        }
    }

    /// Whether `ev` is older than what this member's own change shows.
    fn superseded(&self, ev: &Event) -> bool {
        let Some(o) = tree_subject(&ev.kind).and_then(|f| self.own.get(&f)) else { return false };
        let places = matches!(
            ev.kind,
            EventKind::FileCreated(_) | EventKind::FileRenamed { .. } | EventKind::FileDeleted { .. } | EventKind::Restored { .. }
        );
        ev.seq <= o.seq && (o.gone || places)
    }

    /// An event of the version shown here, older than an attribute change
    /// of this member: it brings the content's fields, not the old mode,
    /// mtime and owner.
    fn keep_attrs_set_here(&self, mut e: FileEntry) -> FileEntry {
        let newer_here = self.attrs_set_here.get(&e.id).is_some_and(|at| e.ctime < *at);
        if let Some(cur) = self.tree.get(e.id).filter(|cur| newer_here && cur.version == e.version) {
            (e.mode, e.mtime, e.owner) = (cur.mode, cur.mtime, cur.owner.clone());
        }
        e
    }

    /// A file's entry: in the table, or removed from it a moment ago.
    fn entry(&self, id: FileId) -> Option<&FileEntry> {
        self.tree.get(id).or_else(|| self.orphans.get(&id).map(|(e, _)| e))
    }

    /// Takes an entry out of the table, keeping a file as an orphan.
    /// `open`: the files some handle is open on.
    fn remove_from_tree(&mut self, id: FileId, open: &HashSet<FileId>) -> tree::Applied {
        let now = Instant::now();
        self.orphans.retain(|o, (_, at)| now.duration_since(*at) < ORPHAN_GRACE || open.contains(o));
        if let Some(e) = self.tree.get(id).filter(|e| e.kind == FileKind::File) {
            self.orphans.insert(id, (e.clone(), now));
        }
        self.atimes.remove(&id);
        self.own_bits.remove(&id);
        self.attrs_set_here.remove(&id);
        self.tree.remove(id)
    }

    /// Sets the times `touches` names (see [`EventKind::touches`]) to `at`;
    /// returns the entries it changed.
    fn touch(&mut self, touches: [Option<Touch>; 2], at: UnixMillis) -> Vec<FileId> {
        let touched = touches.into_iter().flatten();
        touched.filter_map(|t| self.tree.with_entry_mut(t.file(), |e| t.apply(e, at)).map(|()| t.file())).collect()
    }

    /// Applies one event that is newer than the last applied.
    fn apply(&mut self, kind: EventKind, open: &HashSet<FileId>, fx: &mut Effects) {
        match kind {
            EventKind::FileDeleted { file, .. } => {
                if let Some(t) = self.tree.get(file).and_then(|e| e.kind.link_of()) {
                    fx.inodes.push(t); // its link count changed
                }
                fx.names.extend(self.remove_from_tree(file, open).names);
            }
            EventKind::FileRenamed { entry, .. } => {
                let id = entry.id;
                fx.names.extend(self.tree.apply_moved(entry).names);
                fx.inodes.push(id);
            }
            // Not a creation: a file unknown here was deleted here
            // (its deletion's event follows); do not bring it back.
            EventKind::AttrChanged(entry) if self.tree.get(entry.id).is_none() => {}
            EventKind::FileUpdated(e) | EventKind::Restored { entry: e, .. } if self.tree.get(e.id).is_none() => {}
            // Older than this member's own change, already shown.
            EventKind::AttrChanged(entry) if self.attrs_set_here.get(&entry.id).is_some_and(|at| entry.ctime < *at) => {}
            EventKind::AttrChanged(entry) => {
                let id = entry.id;
                self.attrs_set_here.remove(&id);
                fx.names.extend(self.tree.apply_in_place(entry).names);
                fx.inodes.push(id);
            }
            EventKind::Have { file, version, member } => {
                if self.tree.get(file).is_some_and(|e| e.version == version) {
                    fx.holders.push((file, version, member));
                }
            }
            EventKind::FileCreated(e) | EventKind::FileUpdated(e) | EventKind::Restored { entry: e, .. } => {
                // Our own write session is the truth for this member
                // until its publish lands. Where the file is comes
                // from renames (this member's own may be newer).
                let e = self.keep_attrs_set_here(e);
                let applied = self.tree.apply_in_place(e.clone());
                if let Some(t) = e.kind.link_of() {
                    fx.inodes.push(t); // its link count changed
                }
                if e.kind == FileKind::File && e.info_hash.is_some() {
                    fx.holders.push((e.id, e.version, e.author)); // the author holds it
                }
                fx.names.extend(applied.names);
                if applied.content_changed {
                    fx.inodes.push(e.id);
                    fx.new_versions.push(e);
                }
            }
            EventKind::Locked { file, holder } => {
                self.locks.insert(file, holder);
            }
            EventKind::Unlocked { file } => {
                self.locks.remove(&file);
            }
            EventKind::Purged { file } => fx.purged.push(file),
            kind @ (EventKind::MemberJoined(_)
            | EventKind::MemberOnline(_)
            | EventKind::MemberOffline { .. }
            | EventKind::MemberLeft { .. }) => fx.members.push(kind),
        }
    }
}

/// The file a table entry stands for: a hard link's target, else itself.
fn named_file(e: &FileEntry) -> FileId {
    e.kind.link_of().unwrap_or(e.id)
}

/// The file an event changes in the table, if it changes one.
fn tree_subject(kind: &EventKind) -> Option<FileId> {
    match kind {
        EventKind::FileCreated(e) | EventKind::FileUpdated(e) | EventKind::AttrChanged(e) => Some(e.id),
        EventKind::Restored { entry, .. } | EventKind::FileRenamed { entry, .. } => Some(entry.id),
        EventKind::FileDeleted { file, .. } => Some(*file),
        _ => None,
    }
}

impl FileTable {
    // ---- the tracker's events ---------------------------------------------

    /// Applies events in one step: a reader never sees the table between
    /// two of them (a rename over an existing file is the target's deletion
    /// then the rename; between the two, the name would not exist).
    /// `open`: the files some handle is open on (they stay orphans).
    pub fn apply_events(&self, evs: Vec<Event>, open: &HashSet<FileId>) -> Effects {
        let mut fx = Effects::default();
        let mut t = self.inner.lock();
        for ev in evs {
            if t.seq.is_some_and(|s| ev.seq <= s) {
                continue; // already applied
            }
            t.seq = Some(ev.seq);
            let link_of = |f| t.tree.get(f).and_then(|e| e.kind.link_of()).or_else(|| t.own.get(&f).and_then(|o| o.link_of));
            let touches = ev.kind.touches(link_of);
            // Still touches: the times are the tracker's.
            if !t.superseded(&ev) {
                t.apply(ev.kind, open, &mut fx);
            }
            for id in t.touch(touches, ev.at) {
                if !fx.inodes.contains(&id) {
                    fx.inodes.push(id); // its times changed
                }
            }
        }
        if let Some(seq) = t.seq {
            t.own.retain(|_, o| o.seq > seq);
        }
        fx
    }

    /// Replaces the table with a snapshot. Returns the names that went or
    /// moved, and the entries that are new or have a new version.
    pub fn apply_snapshot(&self, seq: Seq, files: Vec<FileEntry>) -> (Vec<(FileId, String)>, Vec<FileEntry>) {
        let new_tree = Tree::from_snapshot(files);
        let mut t = self.inner.lock();
        let gone = t
            .tree
            .entries()
            .filter(|e| e.id != FileId::ROOT && new_tree.get(e.id).is_none_or(|n| n.parent != e.parent || n.name != e.name))
            .map(|e| (e.parent, e.name.clone()))
            .collect();
        let changed = new_tree
            .entries()
            .filter(|n| t.tree.get(n.id).is_none_or(|o| o.version != n.version || o.info_hash != n.info_hash))
            .cloned()
            .collect();
        t.tree = new_tree;
        // Newer than any answer of the connection before (a member asks
        // nothing before it).
        t.own.clear();
        // The snapshot has this member's changes that were answered.
        t.attrs_set_here.retain(|_, at| *at == u64::MAX);
        t.seq = Some(seq);
        (gone, changed)
    }

    // ---- this member's own changes, before their events -------------------

    /// A file or directory this member created, as the tracker answered
    /// (the table as of `seq`, its commit).
    pub fn insert(&self, e: FileEntry, seq: Option<Seq>) -> tree::Applied {
        let mut t = self.inner.lock();
        if t.is_past(e.id, seq) {
            return tree::Applied::default(); // its event came first
        }
        // An answer without a seq cannot tell: if the entry is here, its
        // event came first and touched the directory already.
        let touches = if t.tree.get(e.id).is_some() { [None, None] } else { EventKind::FileCreated(e.clone()).touches(|_| None) };
        let (id, at) = (e.id, e.ctime);
        let applied = t.tree.apply(e);
        t.touch(touches, at);
        t.mark(id, seq, false, None);
        applied
    }

    /// An entry the tracker answered that says nothing about where the file
    /// is (see [`Tree::apply_in_place`]).
    pub fn apply_in_place(&self, e: FileEntry) -> tree::Applied {
        self.inner.lock().tree.apply_in_place(e)
    }

    /// The tracker's answer to this member's attribute change.
    pub fn attrs_set(&self, e: FileEntry) -> tree::Applied {
        let mut t = self.inner.lock();
        t.attrs_set_here.insert(e.id, e.ctime);
        t.tree.apply_in_place(e)
    }

    /// This member shows attributes of its own whose change is on its way
    /// to the tracker ([`FileTable::attrs_set`] or
    /// [`FileTable::attrs_not_set`] follows).
    pub fn attrs_on_their_way(&self, id: FileId) {
        self.inner.lock().attrs_set_here.insert(id, u64::MAX);
    }

    /// Whether a change announced by [`FileTable::attrs_on_their_way`]
    /// still awaits its answer.
    pub fn attrs_in_flight(&self, id: FileId) -> bool {
        self.inner.lock().attrs_set_here.get(&id) == Some(&u64::MAX)
    }

    /// The change announced by [`FileTable::attrs_on_their_way`] failed.
    pub fn attrs_not_set(&self, id: FileId) {
        self.inner.lock().attrs_set_here.remove(&id);
    }

    /// This member's publish landed: the entry, and its lock is gone.
    pub fn published(&self, e: FileEntry) -> tree::Applied {
        let mut t = self.inner.lock();
        t.locks.remove(&e.id);
        if t.tree.get(e.id).is_none() {
            // Deleted after the publish landed (here: `rm` right after the
            // close; or by another member, or renamed over) and that
            // answer or event applied first: a publish never brings a file
            // back. (A file marked deleted here is never in the tree.)
            return tree::Applied::default();
        }
        t.tree.apply_in_place(e)
    }

    /// Mode and mtime set while the file is open for write here.
    pub fn set_attrs_here(&self, id: FileId, mode: Option<u32>, mtime: Option<UnixMillis>) {
        self.inner.lock().tree.with_entry_mut(id, |e| {
            if let Some(m) = mode {
                e.mode = m & 0o7777;
            }
            if let Some(t) = mtime {
                e.mtime = t;
            }
            e.ctime = super::now_ms();
        });
    }

    /// An entry only this member has (a FIFO or socket) was made, removed
    /// or moved in `dir`: its times change here (no event will).
    pub fn touch_dir_here(&self, dir: FileId) {
        self.inner.lock().touch([Some(Touch::Dir(dir)), None], super::now_ms());
    }

    /// This member deleted a file at the tracker, in the commit `seq`.
    /// (If the deletion's event came first, the file is gone already and
    /// its directory touched.)
    pub fn removed_here(&self, id: FileId, open: &HashSet<FileId>, seq: Option<Seq>) {
        let mut t = self.inner.lock();
        t.locks.remove(&id);
        if t.is_past(id, seq) {
            return;
        }
        let parent = t.tree.get(id).map(|e| Touch::Dir(e.parent));
        let link_of = t.tree.get(id).and_then(|e| e.kind.link_of());
        t.mark(id, seq, true, link_of);
        t.remove_from_tree(id, open);
        t.touch([parent, link_of.map(Touch::Ctime)], super::now_ms());
    }

    /// This member renamed `id` to `to` at the tracker (commit `seq`), over
    /// `replaced` if that is another file. A rename moves the entry and
    /// changes none of its attributes: the table's stay (they may be newer
    /// than what the tracker had then, such as a mode set here during a
    /// write session, shared when it ends). The kernel moves its dentry
    /// when the rename is answered: the table agrees before that.
    pub fn renamed_here(&self, id: FileId, to: (FileId, &str), replaced: Option<FileId>, open: &HashSet<FileId>, seq: Option<Seq>) {
        let mut t = self.inner.lock();
        if t.is_past(id, seq) {
            return; // its events came first (and maybe newer ones)
        }
        let Some(cur) = t.tree.get(id).cloned() else { return };
        if let Some(r) = replaced.filter(|r| *r != id) {
            t.mark(r, seq, true, None); // as in `removed_here`
            t.remove_from_tree(r, open);
        }
        t.mark(id, seq, false, None);
        let old_parent = ((cur.parent, cur.name.as_str()) != to).then_some(cur.parent);
        let new_parent = old_parent.filter(|p| *p != to.0).map(|_| to.0);
        t.tree.apply(FileEntry { parent: to.0, name: to.1.to_string(), ..cur });
        t.touch([old_parent.map(Touch::Dir), new_parent.map(Touch::Dir)], super::now_ms());
    }

    // ---- lookups -----------------------------------------------------------

    /// A file's entry, in the table or removed from it a moment ago.
    pub fn entry(&self, id: FileId) -> Option<FileEntry> {
        self.inner.lock().entry(id).cloned()
    }

    /// A file's entry in the table (not an orphan).
    pub fn current(&self, id: FileId) -> Option<FileEntry> {
        self.inner.lock().tree.get(id).cloned()
    }

    pub fn contains(&self, id: FileId) -> bool {
        self.inner.lock().tree.get(id).is_some()
    }

    /// Whether some entry's current version has this info hash.
    pub fn holds(&self, ih: &InfoHash) -> bool {
        self.inner.lock().tree.holds(ih)
    }

    pub fn lookup(&self, parent: FileId, name: &str) -> Result<FileId> {
        let t = self.inner.lock();
        let p = t.tree.get(parent).ok_or(ModelError::NotFound)?;
        if p.kind != FileKind::Dir {
            return Err(ModelError::NotDir);
        }
        Ok(named_file(t.tree.lookup(parent, name).ok_or(ModelError::NotFound)?))
    }

    /// The file a name means now, if any (no checks of `parent`); a hard
    /// link's name means the file it names.
    pub fn child(&self, parent: FileId, name: &str) -> Option<FileId> {
        self.inner.lock().tree.lookup(parent, name).map(named_file)
    }

    /// The entry under a name itself (a hard link's own entry, not its
    /// file's): what unlink and rename act on.
    pub fn name_entry(&self, parent: FileId, name: &str) -> Option<FileEntry> {
        self.inner.lock().tree.lookup(parent, name).cloned()
    }

    /// How many hard links name `f`, from the table's count.
    pub fn links_to(&self, f: FileId) -> u32 {
        self.inner.lock().tree.links_to(f)
    }

    /// How many subdirectories a directory has.
    pub fn subdirs(&self, dir: FileId) -> u32 {
        self.inner.lock().tree.subdirs(dir)
    }

    pub fn readdir(&self, dir: FileId) -> Result<Vec<(FileId, NodeType, String)>> {
        let t = self.inner.lock();
        let kids = t.tree.children(dir).ok_or_else(|| {
            if t.tree.get(dir).is_some() { ModelError::NotDir } else { ModelError::NotFound }
        })?;
        // A hard link's name has its file's type (a file or a symlink).
        let node_type = |e: &FileEntry| NodeType::of(&t.tree.get(named_file(e)).unwrap_or(e).kind);
        Ok(kids.into_iter().map(|e| (named_file(e), node_type(e), e.name.clone())).collect())
    }

    /// Whether `name` can be created in `parent` (the name itself checked already).
    pub fn check_new_name(&self, parent: FileId, name: &str) -> Result<()> {
        let t = self.inner.lock();
        match t.tree.get(parent) {
            None => Err(ModelError::NotFound),
            Some(p) if p.kind != FileKind::Dir => Err(ModelError::NotDir),
            Some(_) if t.tree.lookup(parent, name).is_some() => Err(ModelError::Exists),
            Some(_) => Ok(()),
        }
    }

    /// The file at a path relative to the folder's root ("docs/a.txt").
    pub fn resolve(&self, path: &std::path::Path) -> Option<FileId> {
        let t = self.inner.lock();
        let mut cur = FileId::ROOT;
        for comp in path.components() {
            match comp {
                std::path::Component::Normal(n) => cur = named_file(t.tree.lookup(cur, n.to_str()?)?),
                std::path::Component::RootDir | std::path::Component::CurDir => {}
                _ => return None,
            }
        }
        Some(cur)
    }

    pub fn path(&self, id: FileId) -> String {
        self.inner.lock().tree.path(id)
    }

    /// `id`, then its directories up to the root, as far as the table knows them.
    pub fn ancestors(&self, mut id: FileId) -> Vec<FileId> {
        let t = self.inner.lock();
        let mut out = Vec::new();
        for _ in 0..4096 {
            out.push(id);
            if id == FileId::ROOT {
                break;
            }
            match t.tree.get(id) {
                Some(e) => id = e.parent,
                None => break,
            }
        }
        out
    }

    /// Every file at or below `id`.
    pub fn files_under(&self, id: FileId) -> Vec<FileEntry> {
        let t = self.inner.lock();
        let mut out = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let Some(e) = t.tree.get(cur) else { continue };
            match e.kind {
                FileKind::File => out.push(e.clone()),
                FileKind::Dir => stack.extend(t.tree.children(cur).into_iter().flatten().map(|c| c.id)),
                // A hard link's content is its file's, found by id.
                FileKind::Symlink(_) | FileKind::Link(_) => {}
            }
        }
        out
    }

    /// The files that have content (a current version with an info hash).
    pub fn files_with_content(&self) -> Vec<FileEntry> {
        let t = self.inner.lock();
        t.tree.entries().filter(|e| e.kind == FileKind::File && e.info_hash.is_some()).cloned().collect()
    }

    /// How many entries, the root included.
    pub fn len(&self) -> usize {
        self.inner.lock().tree.len()
    }

    pub fn seq(&self) -> Option<Seq> {
        self.inner.lock().seq
    }

    /// What a saved table holds: the last applied event and every entry.
    pub fn saved_view(&self) -> Option<(Seq, Vec<FileEntry>)> {
        let t = self.inner.lock();
        Some((t.seq?, t.tree.entries().cloned().collect()))
    }

    #[cfg(test)]
    pub fn own_is_empty(&self) -> bool {
        self.inner.lock().own.is_empty()
    }

    // ---- locks as heard ----------------------------------------------------

    pub fn lock_holder(&self, id: FileId) -> Option<LockHolder> {
        self.inner.lock().locks.get(&id).cloned()
    }

    /// Every lock as (path, holder).
    pub fn locks(&self) -> Vec<(String, LockHolder)> {
        let t = self.inner.lock();
        t.locks.iter().map(|(id, h)| (t.tree.path(*id), h.clone())).collect()
    }

    // ---- this member's own mode bits -----------------------------------------

    /// Keeps the bits of `mode` the group does not share (setuid, setgid,
    /// sticky on a file) for this member: what a `chmod` or create here
    /// asked for. A mode without them clears them (as the kernel's chown
    /// and write do for setuid).
    pub fn set_own_bits(&self, id: FileId, mode: u32) {
        let mut t = self.inner.lock();
        let Some(kind) = t.entry(id).map(|e| e.kind.clone()) else { return };
        let bits = mode & 0o7000 & !shared_mode(&kind, mode);
        match bits {
            0 => drop(t.own_bits.remove(&id)),
            b => drop(t.own_bits.insert(id, b)),
        }
    }

    /// The bits [`FileTable::set_own_bits`] kept, to OR into the mode.
    pub fn own_bits(&self, id: FileId) -> u32 {
        self.inner.lock().own_bits.get(&id).copied().unwrap_or(0)
    }

    // ---- access times ------------------------------------------------------

    /// Notes a read as relatime does: when the last access noted is older
    /// than the file's last change, or a day old. `Replaced` when the file
    /// is unknown (the kernel's cached name is older than a removal here).
    pub fn note_read(&self, id: FileId, now: UnixMillis) -> Result<()> {
        let mut t = self.inner.lock();
        let mtime = t.entry(id).ok_or(ModelError::Replaced)?.mtime;
        let last = t.atimes.get(&id).copied().unwrap_or(mtime);
        if last <= mtime || now.saturating_sub(last) > 86_400_000 {
            t.atimes.insert(id, now);
        }
        Ok(())
    }

    /// This member's access time of a file: the last one noted, else its mtime.
    pub fn atime(&self, e: &FileEntry) -> UnixMillis {
        self.inner.lock().atimes.get(&e.id).copied().unwrap_or(e.mtime)
    }

    pub fn set_atime(&self, id: FileId, atime: UnixMillis) -> Result<()> {
        let mut t = self.inner.lock();
        t.entry(id).ok_or(ModelError::NotFound)?;
        t.atimes.insert(id, atime);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! The local nodes part: FIFOs, Unix sockets and device nodes made inside
//! the mount. They have no content to share (the kernel carries a FIFO's
//! bytes and a socket's connections itself, keyed by the inode, and a
//! device node names this machine's driver), so they live on this member
//! only: the tracker never hears of them, other members never list them,
//! and they are gone at the next mount (as a socket is useless once its
//! server exits, and a FIFO or device node is made again by whoever uses
//! it). Sharing a device node would hand every member's machine a door to
//! its own hardware; a local one is what `mknod` makes on any disk.
//!
//! Invariants: inode numbers are at or above [`LOCAL_BASE`], far above any
//! file id the tracker hands out, so a number says which part owns it; every
//! node appears exactly once in `names`, under its own (parent, name). A
//! shared entry that takes the same name (another member made it meanwhile)
//! hides the local node from lookups until it is renamed or removed. One
//! lock, taken by no other part.

use super::{AttrChange, ModelError, Result};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use titorrent_tracker::proto::{FileEntry, FileId, FileKind, MemberId, Owner, UnixMillis, Version};

/// The first inode number of a local node.
pub const LOCAL_BASE: u64 = 1 << 56;

/// Whether an inode number is a local node's.
pub fn is_local(id: FileId) -> bool {
    id.0 >= LOCAL_BASE
}

/// What a local node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Socket,
    /// With its device number (`st_rdev`).
    CharDevice(u32),
    BlockDevice(u32),
}

#[derive(Clone, Debug)]
struct Node {
    special: Special,
    /// As a table entry shows it (kind `File`, size 0): what the kernel's
    /// attributes are made from, with `special` for the type. Its parent
    /// and name are the node's first name still there.
    entry: FileEntry,
    atime: UnixMillis,
    /// Every (parent, name) of the node (`link(2)` adds one; the node goes
    /// with its last).
    names: Vec<(FileId, String)>,
}

#[derive(Debug, Default)]
struct LocalState {
    nodes: HashMap<FileId, Node>,
    /// By directory, then name (listings in name order).
    names: HashMap<FileId, BTreeMap<String, FileId>>,
    next: u64,
}

#[derive(Debug, Default)]
pub(super) struct LocalNodes {
    inner: Mutex<LocalState>,
}

impl LocalState {
    fn id_at(&self, parent: FileId, name: &str) -> Option<FileId> {
        self.names.get(&parent)?.get(name).copied()
    }

    /// Takes one name away; the node goes with its last name.
    fn unname(&mut self, parent: FileId, name: &str) -> Option<FileId> {
        let dir = self.names.get_mut(&parent)?;
        let id = dir.remove(name)?;
        if dir.is_empty() {
            self.names.remove(&parent);
        }
        let node = self.nodes.get_mut(&id)?;
        node.names.retain(|(p, n)| !(*p == parent && n == name));
        match node.names.first().cloned() {
            None => drop(self.nodes.remove(&id)),
            // The entry shows a name that is still there.
            Some((p, n)) => (node.entry.parent, node.entry.name) = (p, n),
        }
        Some(id)
    }

    fn name(&mut self, id: FileId, parent: FileId, name: &str) {
        self.names.entry(parent).or_default().insert(name.to_string(), id);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.names.push((parent, name.to_string()));
        }
    }
}

impl LocalNodes {
    /// Makes a node (the name checked free already). `me`: its author.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        parent: FileId,
        name: &str,
        special: Special,
        mode: u32,
        me: MemberId,
        now: UnixMillis,
        owner: Owner,
    ) -> Result<FileEntry> {
        let mut s = self.inner.lock();
        if s.id_at(parent, name).is_some() {
            return Err(ModelError::Exists);
        }
        let id = FileId(LOCAL_BASE + s.next);
        s.next += 1;
        let entry = FileEntry {
            id,
            parent,
            name: name.to_string(),
            kind: FileKind::File,
            size: 0,
            mtime: now,
            mode: mode & 0o7777,
            version: Version(0),
            info_hash: None,
            author: me,
            owner,
            ctime: now,
        };
        s.nodes.insert(id, Node { special, entry: entry.clone(), atime: now, names: Vec::new() });
        s.name(id, parent, name);
        Ok(entry)
    }

    /// `link(2)`: another name of a node (the name checked free of shared
    /// entries already); its ctime becomes `now`.
    pub fn link(&self, id: FileId, parent: FileId, name: &str, now: UnixMillis) -> Result<FileEntry> {
        let mut s = self.inner.lock();
        if s.id_at(parent, name).is_some() {
            return Err(ModelError::Exists);
        }
        let node = s.nodes.get_mut(&id).ok_or(ModelError::NotFound)?;
        node.entry.ctime = now;
        let entry = node.entry.clone();
        s.name(id, parent, name);
        Ok(entry)
    }

    pub fn entry(&self, id: FileId) -> Option<FileEntry> {
        self.inner.lock().nodes.get(&id).map(|n| n.entry.clone())
    }

    pub fn special(&self, id: FileId) -> Option<Special> {
        self.inner.lock().nodes.get(&id).map(|n| n.special)
    }

    pub fn atime(&self, id: FileId) -> Option<UnixMillis> {
        self.inner.lock().nodes.get(&id).map(|n| n.atime)
    }

    /// How many names a node has (`st_nlink`).
    pub fn nlink(&self, id: FileId) -> Option<u32> {
        self.inner.lock().nodes.get(&id).map(|n| n.names.len() as u32)
    }

    pub fn lookup(&self, parent: FileId, name: &str) -> Option<FileId> {
        self.inner.lock().id_at(parent, name)
    }

    pub fn has_children(&self, dir: FileId) -> bool {
        self.inner.lock().names.contains_key(&dir)
    }

    /// The nodes in a directory, in name order.
    pub fn children(&self, dir: FileId) -> Vec<(FileId, Special, String)> {
        let s = self.inner.lock();
        let Some(names) = s.names.get(&dir) else { return Vec::new() };
        names.iter().filter_map(|(n, id)| s.nodes.get(id).map(|node| (*id, node.special, n.clone()))).collect()
    }

    /// Removes the name `parent/name`; a node with other names keeps them
    /// (and its ctime becomes `now`). Whether there was such a name.
    pub fn remove(&self, parent: FileId, name: &str, now: UnixMillis) -> bool {
        let mut s = self.inner.lock();
        let Some(id) = s.unname(parent, name) else { return false };
        if let Some(node) = s.nodes.get_mut(&id) {
            node.entry.ctime = now;
        }
        true
    }

    /// Moves the name `parent/name` to `new_parent/new_name`, replacing the
    /// local node there, if any (the caller has removed a shared one and
    /// checked the two are not names of one node). The ctime becomes `now`.
    pub fn rename(&self, parent: FileId, name: &str, new_parent: FileId, new_name: &str, now: UnixMillis) -> Result<()> {
        let mut s = self.inner.lock();
        let id = s.id_at(parent, name).ok_or(ModelError::NotFound)?;
        // The node replaced loses a name: a change of its own (ctime).
        if let Some(old) = s.unname(new_parent, new_name) {
            if let Some(node) = s.nodes.get_mut(&old) {
                node.entry.ctime = now;
            }
        }
        // Named at the new place first, so the node outlives the move.
        s.name(id, new_parent, new_name);
        s.unname(parent, name);
        if let Some(node) = s.nodes.get_mut(&id) {
            node.entry.ctime = now;
        }
        Ok(())
    }

    /// `chmod`, `chown`, `utimensat` on a node; the ctime becomes `now`.
    pub fn set_attrs(&self, id: FileId, change: AttrChange, now: UnixMillis) -> Result<FileEntry> {
        let AttrChange { mode, mtime, atime, owner } = change;
        let mut s = self.inner.lock();
        let node = s.nodes.get_mut(&id).ok_or(ModelError::NotFound)?;
        node.entry.ctime = now;
        if let Some(o) = owner {
            node.entry.owner = o;
        }
        if let Some(m) = mode {
            node.entry.mode = m & 0o7777;
        }
        if let Some(t) = mtime {
            node.entry.mtime = t;
        }
        if let Some(t) = atime {
            node.atime = t;
        }
        Ok(node.entry.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_listed_moved_and_removed() {
        let l = LocalNodes::default();
        let d = FileId(7);
        let f = l.create(d, "fifo", Special::Fifo, 0o10644, MemberId(1), 5, Owner::default()).unwrap();
        assert!(is_local(f.id) && !is_local(d));
        assert_eq!(f.mode, 0o644);
        assert!(matches!(l.create(d, "fifo", Special::Socket, 0o600, MemberId(1), 5, Owner::default()), Err(ModelError::Exists)));
        let s = l.create(d, "sock", Special::Socket, 0o600, MemberId(1), 5, Owner::default()).unwrap();
        assert_ne!(f.id, s.id);
        let names: Vec<_> = l.children(d).into_iter().map(|(_, k, n)| (k, n)).collect();
        assert_eq!(names, [(Special::Fifo, "fifo".to_string()), (Special::Socket, "sock".to_string())]);

        // A rename over another node replaces it.
        l.rename(d, "fifo", d, "sock", 6).unwrap();
        assert_eq!(l.lookup(d, "sock"), Some(f.id));
        assert!(l.lookup(d, "fifo").is_none() && l.entry(s.id).is_none());
        l.rename(d, "sock", FileId::ROOT, "moved", 7).unwrap();
        assert!(l.children(d).is_empty());
        assert_eq!(l.set_attrs(f.id, AttrChange { mode: Some(0o600), mtime: Some(9), atime: Some(3), owner: None }, 10).unwrap().mtime, 9);
        assert_eq!((l.atime(f.id), l.special(f.id)), (Some(3), Some(Special::Fifo)));
        assert!(l.remove(FileId::ROOT, "moved", 11));
        assert!(l.children(FileId::ROOT).is_empty() && !l.remove(FileId::ROOT, "moved", 12));
    }

    #[test]
    fn hard_links_name_one_node_until_the_last_name_goes() {
        let l = LocalNodes::default();
        let (d, e) = (FileId(7), FileId(8));
        let f = l.create(d, "a", Special::Fifo, 0o644, MemberId(1), 5, Owner::default()).unwrap();
        assert_eq!(l.link(f.id, e, "b", 6).unwrap().ctime, 6);
        assert!(matches!(l.link(f.id, e, "b", 6), Err(ModelError::Exists)));
        l.link(f.id, d, "c", 7).unwrap();
        assert_eq!((l.lookup(e, "b"), l.lookup(d, "c"), l.nlink(f.id)), (Some(f.id), Some(f.id), Some(3)));
        // chmod through one name is seen through the others (one node).
        l.set_attrs(f.id, AttrChange { mode: Some(0o201), ..Default::default() }, 8).unwrap();
        assert!(l.remove(d, "a", 9));
        assert_eq!((l.nlink(f.id), l.entry(f.id).map(|e| e.mode)), (Some(2), Some(0o201)));
        assert_ne!(l.entry(f.id).map(|e| e.name), Some("a".to_string()), "the entry names a name still there");
        // A rename over another name of a different node replaces that node.
        let g = l.create(d, "g", Special::Socket, 0o600, MemberId(1), 10, Owner::default()).unwrap();
        l.rename(e, "b", d, "g", 11).unwrap();
        assert!(l.entry(g.id).is_none() && l.lookup(d, "g") == Some(f.id) && l.lookup(e, "b").is_none());
        assert!(l.remove(d, "c", 12) && l.nlink(f.id) == Some(1));
        assert!(l.remove(d, "g", 13) && l.entry(f.id).is_none());
    }
}

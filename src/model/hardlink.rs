//! Hard links: a second name of a regular file.
//!
//! The model (protocol 11): each extra name is its own file table entry,
//! `FileKind::Link(file)`, with its own id, parent and name and nothing
//! else; the file keeps one entry, its id (so its inode number), versions,
//! lock and attributes. A lookup or listing of a link's name answers with
//! the file's inode, so opening, reading, writing and locking through any
//! name act on the one file. `st_nlink` is 1 + the links naming the file,
//! from a count the tree keeps as entries come and go (no scans).
//!
//! Unlinking a link's name deletes the link entry. Unlinking the file's
//! own name while links exist makes the tracker promote one (the smallest
//! id) in the same batch: the link entry goes and the file moves to its
//! place, keeping its id; the `Delete` answer carries the moved file and
//! the others hear `FileDeleted` of the link then `FileRenamed` of the
//! file. Renaming another file over a file that has links promotes the
//! same way (the renamer does not drop the file: the tracker's events move
//! it). Renaming a link's name renames the link entry; renaming one name
//! of a file over another name of it does nothing, as rename(2) says.
//!
//! Hard links to this member's FIFOs, sockets and device nodes are local
//! names of the local node (`local.rs`). A hard link to a symbolic link
//! (`link(2)` does not follow one) is a link entry like a file's: its name
//! is the symlink, same inode, `st_nlink` counted the same way. Directories
//! have no hard links (EPERM).

use super::local::is_local;
use super::{Content, Coordinator, Folder, ModelError, Result};
use std::sync::Arc;
use titorrent_tracker::proto::{FileEntry, FileId, FileKind, Owner, Seq};

impl<C: Content, T: Coordinator> Folder<C, T> {
    /// Gives `file` another name, `new_parent/new_name`, at the tracker.
    /// Returns the file's entry (the kernel's entry for the new name).
    pub async fn link(self: &Arc<Self>, file: FileId, new_parent: FileId, new_name: &str) -> Result<FileEntry> {
        self.check_new_name(new_parent, new_name)?;
        if is_local(file) {
            // A FIFO, socket or device node of this member: a local name.
            let e = self.local.link(file, new_parent, new_name, super::now_ms())?;
            self.table.touch_dir_here(new_parent);
            return Ok(e);
        }
        let e = self.table.current(file).ok_or(ModelError::NotFound)?;
        if !matches!(e.kind, FileKind::File | FileKind::Symlink(_)) {
            return Err(ModelError::NotLinkable);
        }
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let kind = FileKind::Link(file);
        // A link entry's own owner is never shown: its name shows the file's.
        self.create_unlocked(new_parent, new_name, kind, 0, Owner::default()).await?;
        self.attr(file)
    }

    /// The kernel's link count of an entry.
    pub fn nlink(&self, e: &FileEntry) -> u32 {
        match e.kind {
            // Its own name, its ".", and each subdirectory's "..".
            FileKind::Dir => 2 + self.table.subdirs(e.id),
            // Unlinked but still open here (an orphan): no name left.
            FileKind::File if !is_local(e.id) && !self.table.contains(e.id) => 0,
            FileKind::File | FileKind::Symlink(_) if !is_local(e.id) => 1 + self.table.links_to(e.id),
            _ if is_local(e.id) => self.local.nlink(e.id).unwrap_or(0),
            _ => 1,
        }
    }

    /// After the tracker answered a delete of `file`'s own name with the
    /// file moved to a link's place (a promotion): the link entry under
    /// that name goes, the file takes its place, here as at the tracker.
    pub(super) fn promoted_here(&self, moved: FileEntry, seq: Option<Seq>) {
        let link = self.table.name_entry(moved.parent, &moved.name).filter(|l| l.kind.link_of() == Some(moved.id));
        let to = (moved.parent, moved.name.as_str());
        self.table.renamed_here(moved.id, to, link.map(|l| l.id), &self.handles.open_files(), seq);
        self.changed.notify_waiters();
    }
}

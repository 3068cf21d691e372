//! The front's other kinds of file: symbolic links (shared: the target is
//! the entry's content, kept in the file table, never followed here),
//! FIFOs, Unix sockets and device nodes (local to this member, see
//! `local.rs`).

use super::local::{is_local, Special};
use super::{Content, Coordinator, Folder, MknodKind, ModelError, OpenMode, Result};
use std::sync::Arc;
use titorrent_tracker::proto::{validate_link_target, FileEntry, FileId, FileKind, Owner, MAX_LINK_TARGET};

impl<C: Content, T: Coordinator> Folder<C, T> {
    /// Makes a symbolic link at the tracker: every member sees it at once.
    pub async fn symlink(self: &Arc<Self>, parent: FileId, name: &str, target: &str, owner: Owner) -> Result<FileEntry> {
        self.check_new_name(parent, name)?;
        if target.len() > MAX_LINK_TARGET {
            return Err(ModelError::NameTooLong);
        }
        validate_link_target(target).map_err(|_| ModelError::InvalidName)?;
        let owner = self.new_owner(parent, owner);
        if !self.is_online() {
            return Err(ModelError::Offline);
        }
        let kind = FileKind::Symlink(target.to_string());
        self.create_unlocked(parent, name, kind, 0o777, owner).await
    }

    /// A symbolic link's target, from memory.
    pub fn readlink(&self, id: FileId) -> Result<String> {
        if is_local(id) {
            return Err(ModelError::NotSymlink);
        }
        let e = self.table.entry(id).ok_or(ModelError::NotFound)?;
        e.kind.link_target().map(str::to_string).ok_or(ModelError::NotSymlink)
    }

    /// `mknod(2)`: a regular file is created as `open(O_CREAT|O_EXCL)` then
    /// closed would; a FIFO, socket or device node is made on this member
    /// only (the kernel has checked that the caller may make a device).
    pub async fn mknod(self: &Arc<Self>, parent: FileId, name: &str, kind: MknodKind, mode: u32, owner: Owner) -> Result<FileEntry> {
        let special = match kind {
            MknodKind::Regular => {
                let (e, fh) = self.create(parent, name, mode, OpenMode { write: true, ..OpenMode::default() }, true, owner).await?;
                self.release(fh);
                return Ok(e);
            }
            MknodKind::Fifo => Special::Fifo,
            MknodKind::Socket => Special::Socket,
            MknodKind::CharDevice(d) => Special::CharDevice(d),
            MknodKind::BlockDevice(d) => Special::BlockDevice(d),
        };
        self.check_new_name(parent, name)?;
        let owner = self.new_owner(parent, owner);
        let made = self.local.create(parent, name, special, mode, self.me, super::now_ms(), owner)?;
        self.table.touch_dir_here(parent);
        if let MknodKind::CharDevice(dev) | MknodKind::BlockDevice(dev) = kind {
            let path = self.path_of(parent);
            tracing::info!(dir = %path, name, dev, "device node made on this member only: never shared, and it does not open (the mount is nodev)");
        }
        Ok(made)
    }

    /// A rename that involves a local node of this member: `src` (named
    /// `from`) is one (moved here only; a shared entry it replaces is
    /// deleted at the tracker first), or the target is one (it goes, then
    /// the shared rename proceeds). Returns whether the rename is done.
    pub(super) async fn rename_local(
        self: &Arc<Self>,
        src: &FileEntry,
        from: (FileId, &str),
        (new_parent, new_name): (FileId, &str),
        replace: bool,
    ) -> Result<bool> {
        let shared_target = self.table.child(new_parent, new_name);
        let local_target = self.local.lookup(new_parent, new_name).filter(|_| shared_target.is_none());
        // A directory over a directory that holds local nodes: the tracker
        // sees it empty, this member does not.
        if src.kind.is_dir() && shared_target.is_some_and(|t| self.local.has_children(t)) {
            return Err(if replace { ModelError::NotEmpty } else { ModelError::Exists });
        }
        if !is_local(src.id) {
            if local_target.is_none() {
                return Ok(false);
            }
            match (replace, src.kind.is_dir()) {
                (false, _) => return Err(ModelError::Exists),
                (true, true) => return Err(ModelError::NotDir),
                (true, false) => self.local.remove(new_parent, new_name, super::now_ms()),
            };
            return Ok(false); // the shared rename touches the directory
        }
        if local_target == Some(src.id) {
            return Ok(true);
        }
        if !self.table.current(new_parent).is_some_and(|p| p.kind.is_dir()) {
            return Err(if self.table.contains(new_parent) { ModelError::NotDir } else { ModelError::NotFound });
        }
        if shared_target.is_some() || local_target.is_some() {
            if !replace {
                return Err(ModelError::Exists);
            }
            if shared_target.is_some() {
                self.remove(new_parent, new_name, false).await?;
            }
        }
        self.local.rename(from.0, from.1, new_parent, new_name, super::now_ms())?;
        self.table.touch_dir_here(from.0);
        self.table.touch_dir_here(new_parent);
        Ok(true)
    }
}

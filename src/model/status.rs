//! What a member can see about the folder's state through extended
//! attributes (`getfattr -d -m user.titorrent`): per file its version, info
//! hash, author, lock holder, bytes local, known holders and pin; on the
//! root, the mount's status (tracker connection, members online, locks,
//! transfers, versions only this member holds) and its state directory.
//! Pinning is set the same way (`setfattr -n user.titorrent.pin -v 1 PATH`).

use super::*;

pub const XATTR_PREFIX: &str = "user.titorrent.";
const FILE_ATTRS: &[&str] = &["version", "info_hash", "author", "lock_holder", "bytes_local", "holders", "pin"];
const ROOT_ATTRS: &[&str] = &["status", "state_dir"];

impl<C: Content, T: Coordinator> Folder<C, T> {
    fn member_name(&self, inner: &Inner, id: MemberId) -> String {
        inner.members.get(&id).map(|m| m.name.clone()).unwrap_or_else(|| {
            if id == self.me { self.me_name.clone() } else { format!("member-{id}") }
        })
    }

    /// Names of the attributes a file has.
    pub fn xattr_names(&self, id: FileId) -> Result<Vec<String>> {
        let inner = self.inner.lock();
        let e = inner.tree.get(id).ok_or(ModelError::NotFound)?;
        let mut names: Vec<&str> = Vec::new();
        if e.kind == FileKind::File {
            names.extend(FILE_ATTRS.iter().filter(|n| match **n {
                "lock_holder" => inner.locks.contains_key(&id),
                "pin" => inner.pins.contains(&id),
                _ => true,
            }));
        } else if inner.pins.contains(&id) {
            names.push("pin");
        }
        if id == FileId::ROOT {
            names.extend(ROOT_ATTRS);
        }
        Ok(names.into_iter().map(|n| format!("{XATTR_PREFIX}{n}")).collect())
    }

    /// One attribute's value; `Ok(None)` when the file does not have it.
    pub fn xattr(&self, id: FileId, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(key) = name.strip_prefix(XATTR_PREFIX) else { return Ok(None) };
        if id == FileId::ROOT {
            match key {
                "status" => return Ok(Some(self.status_text().into_bytes())),
                "state_dir" => return Ok(Some(self.dirs.state_root.to_string_lossy().into_owned().into_bytes())),
                _ => {}
            }
        }
        let inner = self.inner.lock();
        let e = inner.tree.get(id).ok_or(ModelError::NotFound)?.clone();
        if key == "pin" {
            return Ok(inner.pins.contains(&id).then(|| b"1".to_vec()));
        }
        if e.kind != FileKind::File {
            return Ok(None);
        }
        let value = match key {
            "version" => e.version.to_string(),
            "info_hash" => e.info_hash.map(|h| h.to_string()).unwrap_or_default(),
            "author" => self.member_name(&inner, e.author),
            "lock_holder" => match inner.locks.get(&id) {
                Some(h) => format!("{} since {}", h.member_name, fmt_time(h.since)),
                None => return Ok(None),
            },
            "bytes_local" => self.bytes_local(&inner, &e).to_string(),
            "holders" => {
                let mut ids: Vec<MemberId> = inner
                    .holders
                    .get(&id)
                    .filter(|(v, _)| *v == e.version)
                    .map(|(_, h)| h.iter().copied().collect())
                    .unwrap_or_default();
                if !ids.contains(&e.author) {
                    ids.push(e.author);
                }
                if self.bytes_local(&inner, &e) == e.size && !ids.contains(&self.me) {
                    ids.push(self.me);
                }
                // The author first, then the others by name.
                let author = self.member_name(&inner, e.author);
                let mut others: Vec<String> =
                    ids.into_iter().filter(|m| *m != e.author).map(|m| self.member_name(&inner, m)).collect();
                others.sort();
                std::iter::once(author).chain(others).collect::<Vec<_>>().join(", ")
            }
            _ => return Ok(None),
        };
        Ok(Some(value.into_bytes()))
    }

    fn bytes_local(&self, inner: &Inner, e: &FileEntry) -> u64 {
        if let Some(w) = inner.writes.get(&e.id) {
            return w.staging.file.metadata().map(|m| m.len()).unwrap_or(0);
        }
        match e.info_hash {
            None => 0,
            Some(ih) if self.content.local_path(ih).is_some() => e.size,
            Some(ih) => self.content.progress(ih).map(|(have, _)| have).unwrap_or(0),
        }
    }

    /// Sets or clears a pin (`user.titorrent.pin`); other names are refused.
    pub fn set_xattr(self: &Arc<Self>, id: FileId, name: &str, value: Option<&[u8]>) -> Result<()> {
        if name != format!("{XATTR_PREFIX}pin") {
            return Err(ModelError::Unsupported("only user.titorrent.pin can be set"));
        }
        let on = value.is_some_and(|v| v != b"0" && !v.is_empty());
        {
            let mut inner = self.inner.lock();
            inner.tree.get(id).ok_or(ModelError::NotFound)?;
            if on {
                inner.pins.insert(id);
            } else {
                inner.pins.remove(&id);
            }
        }
        self.save_pins();
        if on {
            for e in self.files_under(id) {
                self.fetch_in_background(&e);
            }
        }
        Ok(())
    }

    /// Every file at or below `id`.
    pub(super) fn files_under(&self, id: FileId) -> Vec<FileEntry> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let Some(e) = inner.tree.get(cur) else { continue };
            match e.kind {
                FileKind::File => out.push(e.clone()),
                FileKind::Dir => {
                    stack.extend(inner.tree.children(cur).into_iter().flatten().map(|c| c.id));
                }
            }
        }
        out
    }

    /// Whether a file or one of its directories is pinned.
    pub(super) fn is_pinned(&self, inner: &Inner, mut id: FileId) -> bool {
        for _ in 0..4096 {
            if inner.pins.contains(&id) {
                return true;
            }
            if id == FileId::ROOT {
                return false;
            }
            match inner.tree.get(id) {
                Some(e) => id = e.parent,
                None => return false,
            }
        }
        false
    }

    fn save_pins(&self) {
        let text: String = self.inner.lock().pins.iter().map(|p| format!("{p}\n")).collect();
        if let Err(e) = crate::atomic_file::write(&self.dirs.pins, text.as_bytes(), false) {
            tracing::warn!(file = %self.dirs.pins.display(), error = %e, "cannot save pins");
        }
    }

    pub(super) fn load_pins(&self) {
        let Ok(text) = std::fs::read_to_string(&self.dirs.pins) else { return };
        let pins = text.lines().filter_map(|l| l.trim().parse().ok()).map(FileId);
        self.inner.lock().pins.extend(pins);
    }

    /// The mount's status, one `key: value` line each (read by `titorrent status`).
    pub fn status_text(&self) -> String {
        let inner = self.inner.lock();
        let mut out = String::new();
        let online = self.is_online();
        out.push_str(&format!("tracker: {}\n", if online { "connected" } else { "unreachable (read-only)" }));
        out.push_str(&format!("member: {}\n", self.me_name));
        let mut on: Vec<&str> = inner.members.values().filter(|m| m.online).map(|m| m.name.as_str()).collect();
        on.sort();
        out.push_str(&format!("members online: {}\n", on.join(", ")));
        out.push_str(&format!("files: {}\n", inner.tree.len().saturating_sub(1)));
        let mut locks: Vec<String> = inner
            .locks
            .iter()
            .map(|(id, h)| format!("{} by {} since {}", inner.tree.path(*id), h.member_name, fmt_time(h.since)))
            .collect();
        locks.sort();
        out.push_str(&format!("locks: {}\n", if locks.is_empty() { "none".into() } else { locks.join("; ") }));
        let mut transfers = Vec::new();
        for e in inner.tree.entries().filter(|e| e.kind == FileKind::File) {
            let Some(ih) = e.info_hash else { continue };
            if self.content.local_path(ih).is_none() {
                if let Some((have, total)) = self.content.progress(ih) {
                    if have < total {
                        transfers.push(format!("{} {have}/{total}", inner.tree.path(e.id)));
                    }
                }
            }
        }
        transfers.sort();
        drop(inner);
        let only_here = self.sole_copies();
        out.push_str(&format!("transfers: {}\n", if transfers.is_empty() { "none".into() } else { transfers.join("; ") }));
        out.push_str(&format!(
            "only copy here: {}\n",
            if only_here.is_empty() { "none".into() } else { only_here.join("; ") }
        ));
        let publishing = self.inner.lock().writes.values().filter(|w| w.publishing).count();
        out.push_str(&format!("publishing: {publishing}\n"));
        out.push_str(&format!("live torrents: {}\n", self.content.live_count()));
        out
    }
}

/// Space on the disk that holds this member's cache, which is where a
/// folder's content lands here (`df` of the mount shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub frsize: u32,
}

impl<C: Content, T: Coordinator> Folder<C, T> {
    pub fn disk_space(&self) -> Result<DiskSpace> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dirs.state_root.as_os_str().as_bytes())
            .map_err(|_| ModelError::InvalidName)?;
        // SAFETY: `path` is a valid C string and `st` a plain struct that
        // statvfs fills in.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(ModelError::Io(std::io::Error::last_os_error()));
        }
        Ok(DiskSpace {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            frsize: st.f_frsize as u32,
        })
    }
}

//! What a member can see about the folder's state through extended
//! attributes (`getfattr -d -m user.titorrent`): per file its version, info
//! hash, author, lock holder, bytes local, known holders and pin; on the
//! root, the mount's status (tracker connection, members online, locks,
//! transfers, versions only this member holds) and its state directory.
//! Pinning is set the same way (`setfattr -n user.titorrent.pin -v 1 PATH`).

use super::{fmt_time, Content, Coordinator, Folder, ModelError, Result};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use titorrent_tracker::calls::ExportKey;
use titorrent_tracker::proto::{FileEntry, FileId, FileKind, MemberId};

pub const XATTR_PREFIX: &str = "user.titorrent.";
const FILE_ATTRS: &[&str] = &["version", "info_hash", "author", "lock_holder", "bytes_local", "holders", "pin"];
const ROOT_ATTRS: &[&str] = &["status", "state_dir"];

impl<C: Content, T: Coordinator> Folder<C, T> {
    /// Names of the attributes a file has.
    pub fn xattr_names(&self, id: FileId) -> Result<Vec<String>> {
        let e = self.table.current(id).ok_or(ModelError::NotFound)?;
        let mut names: Vec<&str> = Vec::new();
        if e.kind == FileKind::File {
            names.extend(FILE_ATTRS.iter().filter(|n| match **n {
                "lock_holder" => self.table.lock_holder(id).is_some(),
                "pin" => self.store.is_pin(id),
                _ => true,
            }));
        } else if self.store.is_pin(id) {
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
        let e = self.table.current(id).ok_or(ModelError::NotFound)?;
        if key == "pin" {
            return Ok(self.store.is_pin(id).then(|| b"1".to_vec()));
        }
        if e.kind != FileKind::File {
            return Ok(None);
        }
        let value = match key {
            "version" => e.version.to_string(),
            "info_hash" => e.info_hash.map(|h| h.to_string()).unwrap_or_default(),
            "author" => self.members.name(e.author),
            "lock_holder" => match self.table.lock_holder(id) {
                Some(h) => format!("{} since {}", h.member_name, fmt_time(h.since)),
                None => return Ok(None),
            },
            "bytes_local" => self.bytes_local(&e).to_string(),
            "holders" => self.holders_text(&e),
            "export" => match e.info_hash.and_then(|ih| self.content.exported(ih)) {
                Some((addr, until)) => {
                    let secs = until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    format!("{addr} {secs}")
                }
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(value.into_bytes()))
    }

    /// `user.titorrent.export`: seconds to serve the current version to
    /// standard BitTorrent clients; `0` or removing it stops.
    fn set_export(&self, id: FileId, value: Option<&[u8]>) -> Result<()> {
        let secs = match value {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(ModelError::Unsupported("user.titorrent.export takes a number of seconds"))?,
        };
        let e = self.table.current(id).ok_or(ModelError::NotFound)?;
        let ih = e.info_hash.ok_or(ModelError::Unsupported("only a published, non-empty file can be exported"))?;
        self.content.export(ih, (secs > 0).then(|| Duration::from_secs(secs)));
        Ok(())
    }

    /// Lists this member's exports at the tracker again, each for the time
    /// it has left: the tracker keeps its list of exporters in memory, so
    /// after a restart of the tracker or of this daemon (which serves the
    /// exports it saved) clients that announce would find nobody. Called
    /// each time the tracker link comes online.
    pub async fn register_exports(&self) {
        for (info_hash, addr, until) in self.content.exports() {
            let Ok(left) = until.duration_since(std::time::SystemTime::now()) else { continue };
            let call = ExportKey { info_hash, ttl_ms: left.as_millis().max(1) as u64, port: addr.port() };
            match self.coord.call(call).await {
                Ok(_) => tracing::info!(%info_hash, %addr, "export listed at the tracker again"),
                Err(e) => tracing::info!(%info_hash, error = %e, "export not listed at the tracker again"),
            }
        }
    }

    /// The author first, then the others by name.
    fn holders_text(&self, e: &FileEntry) -> String {
        let mut ids: Vec<MemberId> = self.store.holders(e.id, e.version);
        if !ids.contains(&e.author) {
            ids.push(e.author);
        }
        if self.bytes_local(e) == e.size && !ids.contains(&self.me) {
            ids.push(self.me);
        }
        let author = self.members.name(e.author);
        let mut others: Vec<String> = ids.into_iter().filter(|m| *m != e.author).map(|m| self.members.name(m)).collect();
        others.sort();
        std::iter::once(author).chain(others).collect::<Vec<_>>().join(", ")
    }

    fn bytes_local(&self, e: &FileEntry) -> u64 {
        if let Some(w) = self.writes.staging(e.id) {
            return w.file.metadata().map(|m| m.len()).unwrap_or(0);
        }
        match e.info_hash {
            None => 0,
            Some(ih) if self.content.local_path(ih).is_some() => e.size,
            Some(ih) => self.content.progress(ih).map(|(have, _)| have).unwrap_or(0),
        }
    }

    /// Sets or clears a pin (`user.titorrent.pin`); other names are refused.
    pub fn set_xattr(self: &Arc<Self>, id: FileId, name: &str, value: Option<&[u8]>) -> Result<()> {
        if name == format!("{XATTR_PREFIX}export") {
            return self.set_export(id, value);
        }
        if name != format!("{XATTR_PREFIX}pin") {
            return Err(ModelError::Unsupported("only user.titorrent.pin and user.titorrent.export can be set"));
        }
        let on = value.is_some_and(|v| v != b"0" && !v.is_empty());
        if !self.table.contains(id) {
            return Err(ModelError::NotFound);
        }
        self.store.pin(id, on);
        self.save_pins();
        if on {
            for e in self.table.files_under(id) {
                self.fetch_in_background(&e);
            }
        }
        Ok(())
    }

    /// The mount's status, one `key: value` line each (read by `titorrent status`).
    pub fn status_text(&self) -> String {
        let mut out = String::new();
        let online = self.is_online();
        out.push_str(&format!("tracker: {}\n", if online { "connected" } else { "unreachable (read-only)" }));
        out.push_str(&format!("member: {}\n", self.me_name));
        out.push_str(&format!("members online: {}\n", self.members.online_names().join(", ")));
        out.push_str(&format!("files: {}\n", self.table.len().saturating_sub(1)));
        let mut locks: Vec<String> = self
            .table
            .locks()
            .into_iter()
            .map(|(path, h)| format!("{path} by {} since {}", h.member_name, fmt_time(h.since)))
            .collect();
        locks.sort();
        out.push_str(&format!("locks: {}\n", if locks.is_empty() { "none".into() } else { locks.join("; ") }));
        let transfers = self.transfers();
        let only_here = self.sole_copies();
        out.push_str(&format!("transfers: {}\n", if transfers.is_empty() { "none".into() } else { transfers.join("; ") }));
        out.push_str(&format!(
            "only copy here: {}\n",
            if only_here.is_empty() { "none".into() } else { only_here.join("; ") }
        ));
        out.push_str(&format!("publishing: {}\n", self.writes.publishing_count()));
        out.push_str(&format!("live torrents: {}\n", self.content.live_count()));
        out
    }

    /// Files whose current version is on its way here: "path have/total".
    fn transfers(&self) -> Vec<String> {
        let mut transfers = Vec::new();
        for e in self.table.files_with_content() {
            let Some(ih) = e.info_hash else { continue };
            if self.content.local_path(ih).is_none() {
                if let Some((have, total)) = self.content.progress(ih) {
                    if have < total {
                        transfers.push(format!("{} {have}/{total}", self.table.path(e.id)));
                    }
                }
            }
        }
        transfers.sort();
        transfers
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

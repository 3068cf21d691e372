//! The shared folder as one member sees it. [`Folder`] is the front the
//! FUSE layer and the daemon call; it owns no map itself and delegates to
//! parts that each own their state behind their own lock:
//!
//! | part | file | owns | lock |
//! |------|------|------|------|
//! | [`table::FileTable`] | `table.rs` (+ `tree.rs`) | the file table, last applied event, locks as heard, orphans, where its own changes stand among the events (by seq), atimes | one `Mutex` |
//! | [`handles::Handles`] | `handles.rs` | open file handles | one `Mutex` |
//! | [`writes::WriteSessions`] | `writes.rs` | this member's write sessions (a state machine per file, see [`writes::WriteState`]) | one `Mutex` (+ each staging copy's append lock) |
//! | [`store::VersionStore`] | `store.rs` (+ `history.rs`) | what is local, pins, old versions to collect, holders, reports | one `Mutex` |
//! | [`members::Members`] | `members.rs` | the group's members as heard, stripes | one `Mutex` |
//! | [`outbox::Outbox`] | `outbox.rs` | edits waiting for the tracker, on disk | none |
//! | [`local::LocalNodes`] | `local.rs` | FIFOs and sockets made here (never shared) | one `Mutex` |
//!
//! The front's operations live beside it by theme: `folder.rs` (lookups
//! answered from memory), `open.rs` (opens, creates, closes, locks),
//! `edit.rs` (reads, writes, attributes, removes, renames), `special.rs`
//! (symbolic links, FIFOs and sockets, device nodes refused), `events.rs`
//! (the tracker's events, members, leases), `versions.rs` (handing versions
//! to the swarm, collecting old ones), `publish.rs` (the outbox's delivery),
//! `status.rs` (extended attributes).
//!
//! A read: `fuse` → `edit.rs` `read_plan` → `Handles::get` (which file) →
//! `WriteSessions::staging` (this member's edit, if any: read from it) →
//! `FileTable::entry` (the version) → `VersionStore::local_file` (an open
//! local copy) → else `Content::read_local`, else a `ReadPlan::Fetch` that
//! `fuse` runs as `fetch` (`versions.rs` `ensure_version`, `Content::read`).
//!
//! A publish: the last `release` (`open.rs`) → `WriteSessions::close` says
//! `Publish` (now `Publishing`) → `publish.rs` `publish` writes the outbox
//! entry (`outbox.rs`) → `hand_to_swarm` (`Content::publish`) →
//! `publish_until_answered` (`Coordinator`) → `finish`:
//! `WriteSessions::finish`, `VersionStore::note_author`,
//! `FileTable::published`, then the kernel and `collect_old_versions`.
//!
//! Lock order: there is none to keep, because no code path holds two of
//! these locks at once. Each part's methods take only the part's own lock
//! and call no other part; the front takes one part's lock at a time and
//! copies out what it needs. A staging copy's `appending` lock, and the
//! lock of its copy-on-write overlay (`overlay.rs`, held across that
//! staging copy's own disk work and no other), are taken with no part's
//! lock held; an append holds both, in that order. No part's lock is held across an `.await` or a
//! file system call: the staging copies and local versions are opened,
//! read, written, `stat`ed and closed after the lock is released (only
//! logging happens under a lock).

pub mod error;
mod edit;
mod events;
mod folder;
mod handles;
mod hardlink;
mod history;
mod local;
mod members;
mod open;
mod outbox;
mod overlay;
pub mod ports;
mod publish;
mod special;
mod status;
mod store;
mod table;
pub mod tree;
mod versions;
mod writes;
mod dirty;

pub use folder::{load_table, Folder};
pub use outbox::conflict_name;
pub use status::{DiskSpace, XATTR_PREFIX};

#[cfg(test)]
mod tests;

pub use error::{ModelError, Result};
pub use ports::{Content, ContentError, CoordError, Coordinator, Delta, Fetch, KernelCache, PublishedContent, Stripe};

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use titorrent_tracker::proto::{FileId, InfoHash, UnixMillis, Version};

/// Formats a time as the log lines show it ("12:03:04 UTC").
pub fn fmt_time(ms: UnixMillis) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, (s / 60) % 60, s % 60)
}

pub fn now_ms() -> UnixMillis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A `setattr` of the attributes that are not the content: what the kernel
/// asks for in one call (`chmod`, `chown`, `utimensat`; `None`: unchanged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub mtime: Option<UnixMillis>,
    /// This member's own (see `Folder::atime`), never shared.
    pub atime: Option<UnixMillis>,
    pub owner: Option<titorrent_tracker::proto::Owner>,
}

/// How a file is being opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
    /// `O_APPEND`: every write lands at the end of the staging copy,
    /// whatever offset the kernel sends (it computes one from the size it
    /// caches, which can predate the version this member's lock starts from).
    pub append: bool,
}

/// What a name in a listing is, as the kernel is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeType {
    File,
    Dir,
    Symlink,
    /// Local to this member (see `local.rs`), as are sockets and devices.
    Fifo,
    Socket,
    /// With its device number (`st_rdev`).
    CharDevice(u32),
    BlockDevice(u32),
}

impl NodeType {
    /// The device number the kernel is told (`st_rdev`): 0 but for devices.
    pub fn rdev(self) -> u32 {
        match self {
            NodeType::CharDevice(d) | NodeType::BlockDevice(d) => d,
            _ => 0,
        }
    }
}

impl NodeType {
    /// The type of a shared entry.
    pub fn of(kind: &titorrent_tracker::proto::FileKind) -> Self {
        use titorrent_tracker::proto::FileKind;
        match kind {
            FileKind::File => NodeType::File,
            FileKind::Dir => NodeType::Dir,
            FileKind::Symlink(_) => NodeType::Symlink,
            // Callers show the type of the file it names (see `hardlink.rs`).
            FileKind::Link(_) => NodeType::File,
        }
    }
}

/// What `mknod` is asked to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MknodKind {
    Regular,
    Fifo,
    Socket,
    /// With its device number; made on this member only, as FIFOs are.
    CharDevice(u32),
    BlockDevice(u32),
}

/// An open file handle's number, as handed to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

/// Where a read-only open finds a file's bytes.
#[derive(Debug)]
pub enum ReadSource {
    /// The complete local copy of the current version: the FUSE layer may
    /// hand it to the kernel for passthrough reads.
    Local(InfoHash, PathBuf),
    /// The current version has bytes not all here yet: reads fetch, and
    /// the open is direct I/O, so that the bytes land once, in the object
    /// file, not a second time in the mount's page cache.
    Elsewhere,
    /// Anything else (an empty file, this member's own write session): the
    /// daemon serves it through the page cache.
    Daemon,
}

/// What a read needs, decided from memory.
pub enum ReadPlan {
    /// The bytes, read from a local file.
    Data(Vec<u8>),
    /// Must be fetched from the swarm.
    Fetch { file: FileId, version: Version, info_hash: InfoHash },
}

/// Paths a folder keeps on local disk.
#[derive(Clone, Debug)]
pub struct FolderDirs {
    /// The member's state directory (shown as `user.titorrent.state_dir`).
    pub state_root: PathBuf,
    /// The list of pinned file ids.
    pub pins: PathBuf,
    pub staging: PathBuf,
    /// Edits waiting for the tracker; survives restarts.
    pub outbox: PathBuf,
    pub torrents: PathBuf,
    pub conflicts: PathBuf,
}

/// Longest name component, in bytes (POSIX NAME_MAX).
pub const NAME_MAX: usize = 255;

/// A name this member may create: too long is ENAMETOOLONG, as POSIX says,
/// the rest of the tracker's rules EINVAL.
fn check_name(name: &str) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(ModelError::NameTooLong);
    }
    titorrent_tracker::proto::validate_name(name).map_err(|_| ModelError::InvalidName)
}

fn pread(f: &File, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

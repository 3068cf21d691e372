//! Records as protocol 11 stored them (file entries without owner and
//! ctime), read back as today's types: a tracker upgraded in place keeps
//! its file table and its action log. Such an entry's owner is empty (each
//! member shows it as the mounting user's) and its ctime its mtime.

use crate::proto::{
    Event, EventKind, FileEntry, FileId, FileKind, InfoHash, LockHolder, MemberId, MemberInfo, Owner, Seq, UnixMillis,
    Version,
};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct FileEntryV11 {
    id: FileId,
    parent: FileId,
    name: String,
    kind: FileKind,
    size: u64,
    mtime: UnixMillis,
    mode: u32,
    version: Version,
    info_hash: Option<InfoHash>,
    author: MemberId,
}

impl From<FileEntryV11> for FileEntry {
    fn from(o: FileEntryV11) -> FileEntry {
        FileEntry {
            id: o.id,
            parent: o.parent,
            name: o.name,
            kind: o.kind,
            size: o.size,
            mtime: o.mtime,
            mode: o.mode,
            version: o.version,
            info_hash: o.info_hash,
            author: o.author,
            owner: Owner::default(),
            ctime: o.mtime,
        }
    }
}

/// `EventKind` of protocol 11: the same variants in the same order.
#[derive(Deserialize)]
enum EventKindV11 {
    FileCreated(FileEntryV11),
    FileUpdated(FileEntryV11),
    Locked { file: FileId, holder: LockHolder },
    Unlocked { file: FileId },
    MemberJoined(MemberInfo),
    MemberOnline(MemberInfo),
    MemberOffline { member: MemberId },
    FileDeleted { file: FileId, parent: FileId, name: String },
    FileRenamed { entry: FileEntryV11, old_parent: FileId, old_name: String },
    AttrChanged(FileEntryV11),
    MemberLeft { member: MemberId },
    Restored { entry: FileEntryV11, from: Version },
    Have { file: FileId, version: Version, member: MemberId },
}

#[derive(Deserialize)]
pub(crate) struct EventV11 {
    seq: Seq,
    at: UnixMillis,
    by: MemberId,
    kind: EventKindV11,
}

impl From<EventV11> for Event {
    fn from(o: EventV11) -> Event {
        use EventKindV11 as K;
        let kind = match o.kind {
            K::FileCreated(e) => EventKind::FileCreated(e.into()),
            K::FileUpdated(e) => EventKind::FileUpdated(e.into()),
            K::Locked { file, holder } => EventKind::Locked { file, holder },
            K::Unlocked { file } => EventKind::Unlocked { file },
            K::MemberJoined(m) => EventKind::MemberJoined(m),
            K::MemberOnline(m) => EventKind::MemberOnline(m),
            K::MemberOffline { member } => EventKind::MemberOffline { member },
            K::FileDeleted { file, parent, name } => EventKind::FileDeleted { file, parent, name },
            K::FileRenamed { entry, old_parent, old_name } => {
                EventKind::FileRenamed { entry: entry.into(), old_parent, old_name }
            }
            K::AttrChanged(e) => EventKind::AttrChanged(e.into()),
            K::MemberLeft { member } => EventKind::MemberLeft { member },
            K::Restored { entry, from } => EventKind::Restored { entry: entry.into(), from },
            K::Have { file, version, member } => EventKind::Have { file, version, member },
        };
        Event { seq: o.seq, at: o.at, by: o.by, kind }
    }
}

//! The tracker manager's client protocol: typed IDs, requests, responses,
//! pushed events, and the length-prefixed bincode framing they travel in.
//!
//! Transport: TLS 1.3 (see `tls`), both sides showing a self-signed
//! certificate; a client pins the tracker's [`Fingerprint`], the tracker
//! knows each member by its own. Plain HTTP announces share the port: a
//! connection whose first byte is a TLS handshake record (0x16) is the
//! client protocol, one that starts with a letter is HTTP, and a plaintext
//! frame (first byte 0, an older client) gets a plaintext Hello and
//! Goodbye saying that TLS is required.
//!
//! Wire format, inside TLS: every frame is a 4-byte big-endian length followed by that
//! many bytes of bincode (standard config) encoding one [`ClientFrame`] or
//! [`ServerFrame`]. The first frame each side sends is a `Hello` carrying
//! [`PROTOCOL_VERSION`]; a peer speaking another version is refused. The
//! client speaks first. A frame longer than [`MAX_FRAME`] is malformed and
//! closes the connection; so is one over 64 KiB before the connection has
//! authenticated, and a connection that has not authenticated within 10 s
//! (the tracker's defaults) is closed.
//!
//! Requests carry a client-chosen `id`; the matching response carries the
//! same `id`. An answer holding a group's file table (`Snapshot`, `Files`)
//! may be too large for one frame: it then comes as [`ServerFrame::Part`]s
//! with that `id` followed by the `Response`, which a client puts together
//! with a [`Reassembly`]. Events are pushed unsolicited, in sequence order, after a
//! `Subscribe` has been answered, whole commits at a time
//! ([`ServerFrame::Events`]): what one request changed (a rename over an
//! existing file is the target's `FileDeleted`, then the `FileRenamed`)
//! comes in one frame, so that a member can apply it in one step. `Wanted`
//! notices are pushed too; they are not events (no seq, never replayed).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// Bumped on every incompatible change of the types in this module.
/// (14: events come a commit at a time, [`ServerFrame::Events`]; 15: an
/// answer to a change says its commit's seq, [`ServerFrame::Response`].)
pub const PROTOCOL_VERSION: u32 = 15;

/// Largest frame either side accepts (torrent metainfo of a large file is
/// the biggest payload: 20 bytes per piece).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// Default lease time-to-live the tracker grants for a lock.
pub const DEFAULT_LEASE_TTL_MS: u64 = 30_000;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// A group: one shared folder and its members.
    GroupId
);
id_type!(
    /// A member of one group. Unique within the tracker.
    MemberId
);
id_type!(
    /// A file or directory of a group; stable across renames and edits.
    /// [`FileId::ROOT`] is the group's root directory.
    FileId
);
id_type!(
    /// A file's version number: 0 for a created, still empty file, then +1
    /// for every published edit.
    Version
);
id_type!(
    /// Position in a group's event log. The first event has `Seq(1)`.
    Seq
);
id_type!(
    /// One grant of a lock. Renew, unlock and publish must name it.
    LeaseId
);

impl FileId {
    /// The root directory of every group.
    pub const ROOT: FileId = FileId(1);
}

/// A BitTorrent v1 info hash (SHA-1 of the bencoded info dict).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InfoHash(pub [u8; 20]);

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", hex::encode(self.0))
    }
}

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// What a file table entry is. (Stored records of protocol 7 and before
/// hold `File` or `Dir`: new kinds are new variants only, so they stay
/// readable.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    /// A symbolic link (protocol 8). The target is its whole content,
    /// carried in the entry: no torrent, no version beyond 0, never
    /// followed by the tracker or a member's daemon (a dangling or
    /// absolute target is as good as any). 1 to [`MAX_LINK_TARGET`] bytes,
    /// no NUL (see [`validate_link_target`]); the entry's `size` is its
    /// length and its `mode` 0o777.
    Symlink(String),
    /// A second name of a file (protocol 11): a hard link. The entry has
    /// its own id, parent and name; everything else (content, versions,
    /// lock, mode, inode number on a member) is the target file's. The
    /// target is a `File` or a `Symlink` (never a directory or another
    /// link);
    /// `size` 0, `mode` 0. Deleting the target while links exist promotes
    /// the link with the smallest id in the same batch: that link entry is
    /// deleted (`FileDeleted`) and the file moves to its place
    /// (`FileRenamed`), keeping its id; the `Delete` answer is then
    /// `File { entry }` with the moved file. A rename over the target
    /// promotes the same way (before the rename's own `FileRenamed`).
    Link(FileId),
}

impl FileKind {
    pub fn is_dir(&self) -> bool {
        matches!(self, FileKind::Dir)
    }

    /// The target of a symbolic link.
    pub fn link_target(&self) -> Option<&str> {
        match self {
            FileKind::Symlink(t) => Some(t),
            _ => None,
        }
    }

    /// The file a hard link names.
    pub fn link_of(&self) -> Option<FileId> {
        match self {
            FileKind::Link(f) => Some(*f),
            _ => None,
        }
    }
}

/// Longest symbolic link target, in bytes: PATH_MAX (4096) less the NUL
/// that ends it in C, as symlink(2) allows.
pub const MAX_LINK_TARGET: usize = 4095;

/// Checks a symbolic link's target the way the tracker does: 1 to
/// [`MAX_LINK_TARGET`] bytes, no NUL. Anything else goes (`..`, absolute
/// paths, names that do not exist): it is never resolved.
/// The mode bits the group shares of an entry: permission bits, and on a
/// directory the sticky bit (it only narrows who may delete in it) and the
/// setgid bit (new entries in it take its group, on every member; it gives
/// no one a privilege). Never setuid, nor setgid on a file: a file with
/// them copied out of the folder (`cp -a` as root) would carry them off
/// the mount's `nosuid` onto another member's disk. (A member keeps the
/// bits it sets for itself; see the mount's file table.)
pub fn shared_mode(kind: &FileKind, mode: u32) -> u32 {
    match kind {
        FileKind::Dir => mode & 0o3777,
        _ => mode & 0o777,
    }
}

pub fn validate_link_target(target: &str) -> Result<(), ProtoError> {
    if target.is_empty() || target.len() > MAX_LINK_TARGET || target.contains('\0') {
        return Err(ProtoError::BadRequest(format!("a symbolic link's target is 1 to {MAX_LINK_TARGET} bytes without NUL")));
    }
    Ok(())
}

/// One row of a group's file table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub id: FileId,
    pub parent: FileId,
    /// One path component: never empty, never `.` or `..`, never contains
    /// `/` or a control character (NUL, escape, newline: what a terminal
    /// would act on when `titorrent log` prints it).
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub mtime: UnixMillis,
    /// Permission bits only (e.g. 0o644).
    pub mode: u32,
    pub version: Version,
    /// `None` for directories and for empty files (a zero-length file cannot
    /// be a torrent).
    pub info_hash: Option<InfoHash>,
    /// The member whose publish made this version.
    pub author: MemberId,
    /// Who owns it, by name (see [`Owner`]).
    pub owner: Owner,
    /// The last change of the entry or its content (tracker's clock): a
    /// publish, a rename, a change of mode, owner or times.
    pub ctime: UnixMillis,
}

/// A file's owner and group by *name*, as NFSv4 carries them: uids differ
/// between machines, names mostly do not. A member maps a name to its own
/// id; an id that has no name on the machine that set it travels as its
/// decimal digits ("65533") and is taken as that id; an empty name (an
/// entry from before protocol 12) or a name unknown locally is the
/// mounting user's (or group's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub user: String,
    pub group: String,
}

/// The longest user or group name an [`Owner`] carries (bytes).
pub const MAX_OWNER_NAME: usize = 64;

/// A user and group name must be short and printable (they reach
/// `titorrent log` and other members' name lookups).
pub fn validate_owner(o: &Owner) -> Result<(), ProtoError> {
    for n in [&o.user, &o.group] {
        if n.len() > MAX_OWNER_NAME || n.chars().any(|c| c.is_control() || c == ':' || c == '/') {
            return Err(ProtoError::BadRequest(format!("bad owner name {:?}", n.escape_debug().to_string())));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: MemberId,
    pub name: String,
    pub online: bool,
    /// Where this member's BitTorrent session listens, as it reported when it
    /// last authenticated.
    pub peer_addr: Option<SocketAddr>,
    /// The member's key: the fingerprint of the certificate it connects with.
    pub key: Fingerprint,
}

/// Who holds a lock, as the tracker tells someone who was refused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub member: MemberId,
    pub member_name: String,
    pub since: UnixMillis,
    pub expires: UnixMillis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub file: FileId,
    pub expires: UnixMillis,
    /// The file's current version when the lease was granted: the version
    /// an edit under this lease starts from (the `base` of its publish).
    pub version: Version,
}

/// The SHA-256 of a certificate (DER): who a tracker or a member is. Every
/// connection to the tracker is TLS 1.3 in which both sides show a
/// self-signed certificate and prove they hold its key; the member list
/// carries each member's, an invitation the tracker's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(self.0))
    }
}
impl std::str::FromStr for Fingerprint {
    type Err = String;
    /// 64 hex digits (`:` between bytes allowed, as `openssl x509
    /// -fingerprint` prints them).
    fn from_str(s: &str) -> Result<Self, String> {
        let digits: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&digits).map_err(|e| format!("a fingerprint is 64 hex digits: {e}"))?;
        bytes.try_into().map(Fingerprint).map_err(|_| "a fingerprint is 64 hex digits (SHA-256)".to_string())
    }
}

/// Every request a client may send (defined with its call type and answer
/// in [`crate::calls`]).
pub use crate::calls::Request;

/// A file in the trash: its entry as it was when it went, the path it had,
/// when and by whom. Its kept versions stay until the trash retention ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    pub entry: FileEntry,
    pub path: String,
    pub deleted_at: UnixMillis,
    pub by: MemberId,
}

/// One kept version of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: Version,
    pub size: u64,
    pub mtime: UnixMillis,
    pub info_hash: Option<InfoHash>,
    pub author: MemberId,
    /// When it was published.
    pub at: UnixMillis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    /// The caller's key is the certificate it showed on this connection.
    Created { group: GroupId, member: MemberId },
    Joined { member: MemberId },
    Authenticated { member: MemberInfo, group_name: String },
    Invite { code: String, expires: UnixMillis },
    Members(Vec<MemberInfo>),
    /// The whole file table as of `seq`, then events after `seq` follow.
    /// On the wire `files` holds the last rows only when the table came in
    /// [`ServerFrame::Part`]s first (see [`Reassembly`]).
    Snapshot { seq: Seq, files: Vec<FileEntry> },
    /// Events after the requested `Seq` follow; none were lost.
    Subscribed { seq: Seq },
    /// The whole file table as of `seq` (sent in parts like `Snapshot`).
    Files { seq: Seq, files: Vec<FileEntry> },
    File { entry: FileEntry, lease: Option<Lease> },
    Locked(Lease),
    Published(FileEntry),
    Torrent(Vec<u8>),
    Versions(Vec<VersionInfo>),
    /// Events of the action log, oldest first; `more` if `limit` cut it.
    Log { events: Vec<Event>, more: bool },
    /// An announce key scoped to one info hash and a time (hex): valid
    /// until `expires` while its member is a member, after a tracker
    /// restart too.
    AnnounceKey { key: String, expires: UnixMillis },
    Error(ProtoError),
    Trash(Vec<TrashEntry>),
}

/// Everything the tracker refuses, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProtoError {
    /// Not authenticated as a member of this group, bad credential, unknown
    /// member, unknown group: deliberately one answer for all of them.
    #[error("not authenticated as a member of this group")]
    NotAuthenticated,
    #[error("invite unknown, expired or used up")]
    BadInvite,
    #[error("creating a group needs this tracker's admin token (titorrent create-group --admin-token FILE)")]
    NotAdmin,
    #[error("only the group's owner or an admin may do that")]
    NotAllowed,
    #[error("no such member")]
    NoSuchMember,
    #[error("no such file")]
    NoSuchFile,
    #[error("a file with that name already exists")]
    AlreadyExists,
    #[error("not a directory")]
    NotADirectory,
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("locked by {} since {}", .0.member_name, .0.since)]
    Locked(LockHolder),
    #[error("lease unknown or expired")]
    NoLease,
    #[error("publish refused: based on version {base} but current is {current}")]
    StaleVersion { base: Version, current: Version },
    #[error("no torrent for that version")]
    NoTorrent,
    #[error("directory not empty")]
    NotEmpty,
    #[error("is a directory")]
    IsADirectory,
    #[error("request malformed: {0}")]
    BadRequest(String),
    #[error("tracker internal error: {0}")]
    Internal(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    FileCreated(FileEntry),
    /// A new version was published (or attributes changed).
    FileUpdated(FileEntry),
    Locked { file: FileId, holder: LockHolder },
    Unlocked { file: FileId },
    MemberJoined(MemberInfo),
    MemberOnline(MemberInfo),
    MemberOffline { member: MemberId },
    /// A file or directory was deleted (it was `name` in `parent`).
    FileDeleted { file: FileId, parent: FileId, name: String },
    /// Moved and/or renamed; the entry carries the new parent and name.
    FileRenamed { entry: FileEntry, old_parent: FileId, old_name: String },
    /// Mode or mtime changed (no new version).
    AttrChanged(FileEntry),
    MemberLeft { member: MemberId },
    /// An older version was made current again (the entry is the new one).
    Restored { entry: FileEntry, from: Version },
    /// `member` holds a complete copy of `version` of `file`.
    Have { file: FileId, version: Version, member: MemberId },
    /// A deleted file's trash retention ended: its versions are gone for
    /// good, and members may drop their copies.
    Purged { file: FileId },
}

/// A time an event changes on an entry other than its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// A directory's entries changed: its mtime and ctime become the
    /// event's time.
    Dir(FileId),
    /// A file's link count changed (a hard link to it was made): its ctime.
    Ctime(FileId),
}

impl EventKind {
    /// What the event touches besides its subject, as POSIX says: making,
    /// removing or renaming an entry updates its directory's mtime and
    /// ctime; making or removing a hard link, the file's ctime. The tracker
    /// writes these times in the event's own commit and every member
    /// applies this same rule to the event, so both agree with no event of
    /// their own. `link_of`: the file a table entry is a hard link to (each
    /// side answers from its table, before applying the event).
    pub fn touches(&self, link_of: impl Fn(FileId) -> Option<FileId>) -> [Option<Touch>; 2] {
        match self {
            EventKind::FileCreated(e) => [Some(Touch::Dir(e.parent)), e.kind.link_of().map(Touch::Ctime)],
            EventKind::FileDeleted { file, parent, .. } => [Some(Touch::Dir(*parent)), link_of(*file).map(Touch::Ctime)],
            EventKind::FileRenamed { entry, old_parent, .. } => {
                [Some(Touch::Dir(*old_parent)), (entry.parent != *old_parent).then_some(Touch::Dir(entry.parent))]
            }
            _ => [None, None],
        }
    }
}

impl Touch {
    /// Sets the touched times of `e` (the entry `self` names) to `at`.
    pub fn apply(self, e: &mut FileEntry, at: UnixMillis) {
        e.ctime = at;
        if matches!(self, Touch::Dir(_)) {
            e.mtime = at;
        }
    }

    pub fn file(self) -> FileId {
        match self {
            Touch::Dir(f) | Touch::Ctime(f) => f,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: Seq,
    /// When the tracker committed it (its clock). Every event of one
    /// commit has the same `at`: a replay from the log finds a commit's
    /// bounds by it (see [`ServerFrame::Events`]).
    pub at: UnixMillis,
    /// Who caused it (the tracker itself for lock expiry: `MemberId(0)`).
    pub by: MemberId,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    Hello { version: u32 },
    Request { id: u64, req: Request },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    Hello { version: u32 },
    /// The answer to request `id`. `seq`, on the answer to a change of the
    /// file table: the seq of the last event that change committed. What
    /// the answer says (an entry, a removal) is the table as of that seq:
    /// a member applies it unless it has applied a newer state of the file,
    /// and skips that file's events up to `seq`, so its own changes and
    /// the events take effect in commit order. `None` for anything else.
    Response { id: u64, seq: Option<Seq>, resp: Response },
    /// Events, in seq order, in whole commits: the frame ends with the last
    /// event of a commit unless `more` says that the commit goes on in the
    /// next `Events` frame (one too large for a frame: a sweep of many
    /// expired locks). A client applies what a frame (with those before it
    /// that had `more`) carries in one step, and never shows the table
    /// between two of its events. Live, a frame holds one commit; replayed
    /// from the log (a `Subscribe` from a seq, a subscriber that fell
    /// behind) it holds the events that share one `at`: one commit, or
    /// several committed in the same millisecond, never part of one.
    /// Never empty. (Before protocol 14: one `Event` frame per event.)
    Events { events: Vec<Event>, more: bool },
    /// Sent just before the server closes a connection it refuses.
    Goodbye { reason: String },
    /// Another member (`Request::Want`), or a BitTorrent client announcing
    /// to the tracker's HTTP endpoint, needs pieces of `info_hash` and
    /// listens at `peer`: a member holding that version should make it live
    /// (accept connections for it) and may connect to `peer`. Sent only to
    /// subscribed connections; not an event: no seq, not logged, not
    /// replayed after a reconnect.
    Wanted { info_hash: InfoHash, peer: SocketAddr },
    /// Rows of a file table answer to request `id` (`Snapshot` or `Files`)
    /// that is larger than one frame, in `FileId` order. The `Response`
    /// with the same `id` follows and carries the last rows; nothing else
    /// is sent on the connection from the first part until that
    /// `Response`. Every part is well under [`MAX_FRAME`].
    Part { id: u64, files: Vec<FileEntry> },
}

/// Puts an answer sent in [`ServerFrame::Part`]s back together: feed it
/// every `Part` and every `Response` in the order they arrive.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// The request whose parts are arriving, and its rows so far.
    open: Option<(u64, Vec<FileEntry>)>,
}

impl Reassembly {
    /// A part of the answer to `id`. Err if the parts of another answer
    /// are still open (the tracker never interleaves them).
    pub fn part(&mut self, id: u64, files: Vec<FileEntry>) -> Result<(), String> {
        match &mut self.open {
            None => self.open = Some((id, files)),
            Some((open, rows)) if *open == id => rows.extend(files),
            Some((open, _)) => return Err(format!("a part of answer {id} while answer {open} is open")),
        }
        Ok(())
    }

    /// The answer to `id` as the tracker meant it: a `Snapshot` or `Files`
    /// with every part's rows in front of its own; any other answer as it
    /// is. Err if parts of another answer are open, or parts came for an
    /// answer that cannot have them.
    pub fn finish(&mut self, id: u64, resp: Response) -> Result<Response, String> {
        let rows = match self.open.take() {
            None => return Ok(resp),
            Some((open, rows)) if open == id => rows,
            Some((open, rows)) => {
                self.open = Some((open, rows));
                return Err(format!("answer {id} while the parts of answer {open} are open"));
            }
        };
        let join = |mut rows: Vec<FileEntry>, files: Vec<FileEntry>| {
            rows.extend(files);
            rows
        };
        match resp {
            Response::Snapshot { seq, files } => Ok(Response::Snapshot { seq, files: join(rows, files) }),
            Response::Files { seq, files } => Ok(Response::Files { seq, files: join(rows, files) }),
            // A refusal after parts (the tracker could not finish): the
            // parts are dropped with it.
            Response::Error(e) => Ok(Response::Error(e)),
            other => Err(format!("parts came before {other:?}, which has no rows")),
        }
    }

    /// Whether parts of an answer are waiting for its `Response`.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("cannot encode frame: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `msg` as one frame: 4-byte big-endian length, then bincode.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_frame_into(&mut out, msg)?;
    Ok(out)
}

/// Appends `msg` to `out` as one frame (so that several frames go out in
/// one write). On error `out` is left as it was.
pub fn encode_frame_into<T: Serialize>(out: &mut Vec<u8>, msg: &T) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = bincode::serde::encode_into_std_write(msg, out, config()) {
        out.truncate(start);
        return Err(e.into());
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes one frame body (without its length prefix). Trailing bytes are
/// an error: a frame holds exactly one message.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let cfg = config().with_limit::<MAX_FRAME>();
    let (msg, used) = bincode::serde::decode_from_slice(body, cfg)?;
    if used != body.len() {
        return Err(FrameError::Decode(bincode::error::DecodeError::Other(
            "trailing bytes after message",
        )));
    }
    Ok(msg)
}

/// Checks one path component the way the tracker does.
pub fn validate_name(name: &str) -> Result<(), ProtoError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(char::is_control)
        || name.len() > 255;
    if bad {
        Err(ProtoError::InvalidName(name.escape_debug().to_string()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let f = ClientFrame::Request { id: 7, req: Request::Lock { file: FileId(3) } };
        let bytes = encode_frame(&f).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        let back: ClientFrame = decode_body(&bytes[4..]).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for body in [&b""[..], b"\xff\xff\xff\xff\xff", b"hello world"] {
            assert!(decode_body::<ClientFrame>(body).is_err());
        }
    }

    fn row(id: u64) -> FileEntry {
        FileEntry {
            id: FileId(id),
            parent: FileId::ROOT,
            name: format!("f{id}"),
            kind: FileKind::File,
            size: 0,
            mtime: 0,
            mode: 0o644,
            version: Version(0),
            info_hash: None,
            author: MemberId(1),
            owner: Default::default(),
            ctime: 0,
        }
    }

    #[test]
    fn reassembly_puts_parts_in_front_and_refuses_interleaving() {
        let mut r = Reassembly::default();
        assert_eq!(r.finish(1, Response::Ok), Ok(Response::Ok), "no parts: as it is");
        r.part(2, vec![row(1), row(2)]).unwrap();
        r.part(2, vec![row(3)]).unwrap();
        assert!(r.is_open());
        assert!(r.part(3, vec![row(9)]).is_err(), "a part of another answer");
        assert!(r.finish(3, Response::Ok).is_err(), "another answer while parts are open");
        let whole = r.finish(2, Response::Files { seq: Seq(5), files: vec![row(4)] }).unwrap();
        assert_eq!(whole, Response::Files { seq: Seq(5), files: (1..=4).map(row).collect() });
        assert!(!r.is_open());
        r.part(4, vec![row(1)]).unwrap();
        assert!(r.finish(4, Response::Ok).is_err(), "parts before an answer without rows");
        r.part(5, vec![row(1)]).unwrap();
        assert_eq!(r.finish(5, Response::Error(ProtoError::NoSuchFile)), Ok(Response::Error(ProtoError::NoSuchFile)));
    }

    #[test]
    fn names_with_slash_or_dots_are_refused() {
        for n in ["", ".", "..", "a/b", "a\0b", "a\x1b[2Jb", "line\nbreak", "tab\there", "del\x7f"] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
        assert!(validate_name("notes (1).txt").is_ok());
        assert!(validate_name("..hidden").is_ok());
    }
}

//! The protocol as typed calls: one struct per [`Request`], each naming the
//! one answer it gets, so that neither side can send or accept an answer of
//! the wrong shape without a compile error.
//!
//! The wire is the [`Request`] enum (defined here, with the calls, from one
//! list) and the [`Response`] enum of `proto`: a call becomes its `Request`
//! variant, an answer its `Response` variant, and these types decide which
//! variant answers which request. A client sends a call and turns the
//! `Response` back with [`Call::expect`], the one check of an answer's
//! shape, whose failure is the typed [`Mismatch`]. The server's handlers
//! return the call's [`Call::Answer`], and one place (the connection's
//! dispatch) turns it into a `Response` with [`Answer::into_response`].
//! The bincode of a `Request` is what it was before the calls existed.

use crate::proto::{
    Event, FileEntry, FileId, FileKind, GroupId, InfoHash, Lease, LeaseId, MemberId, MemberInfo, Owner, Response, Seq,
    TrashEntry, UnixMillis, Version, VersionInfo,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// What answers a call: one shape of [`Response`] (a refusal,
/// `Response::Error`, is not an answer; clients take it apart first).
pub trait Answer: Sized {
    /// The answer in `r`, or `r` back if it has another shape. (The `Err`
    /// is as large as a `Response`, the size of what came in anyway.)
    #[allow(clippy::result_large_err)]
    fn from_response(r: Response) -> Result<Self, Response>;
    fn into_response(self) -> Response;
}

/// A request, typed by the answer it gets.
pub trait Call: Into<Request> {
    type Answer: Answer;
    /// The request's name, for messages ("CreateFile answered ...").
    const NAME: &'static str;

    /// The answer in `r`, or `r` back if it has another shape.
    #[allow(clippy::result_large_err)]
    fn answer(r: Response) -> Result<Self::Answer, Response> {
        Self::Answer::from_response(r)
    }

    /// The answer in `r`, or the typed error for one of another shape.
    fn expect(r: Response) -> Result<Self::Answer, Mismatch> {
        Self::answer(r).map_err(|other| Mismatch { call: Self::NAME, answer: describe(&other) })
    }
}

/// An answer of another shape than its request's (a tracker that speaks
/// the same protocol version but another meaning of it: a bug).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{call} answered {answer}")]
pub struct Mismatch {
    pub call: &'static str,
    /// The start of the answer, as `Debug` shows it.
    pub answer: String,
}

/// A `Response` for messages: its start only (a file table can be
/// megabytes).
fn describe(r: &Response) -> String {
    const MAX: usize = 200;
    let s = format!("{r:?}");
    if s.len() <= MAX { s } else { format!("{}...", s.chars().take(MAX).collect::<String>()) }
}

/// Defines [`Request`] and, for each of its variants, a call struct of the
/// same name and fields, its conversion into the variant and the answer it
/// gets: one list, so that the wire and the calls cannot drift apart.
macro_rules! calls {
    (@struct $name:ident) => {
        #[doc = concat!("[`Request::", stringify!($name), "`] as a call.")]
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name;
    };
    (@struct $name:ident { $($(#[$fm:meta])* $f:ident: $t:ty),* }) => {
        #[doc = concat!("[`Request::", stringify!($name), "`] as a call.")]
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
    };
    ($($(#[$m:meta])* $name:ident $({ $($(#[$fm:meta])* $f:ident: $t:ty),* $(,)? })? -> $answer:ty;)*) => {
        /// What a client asks; each variant is also a call struct of this
        /// module, which names its answer.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Request {
            $($(#[$m])* $name $({ $($(#[$fm])* $f: $t),* })?,)*
        }
        $(
            calls!(@struct $name $({ $($(#[$fm])* $f: $t),* })?);
            impl From<$name> for Request {
                #[allow(unused_variables)]
                fn from(c: $name) -> Request {
                    Request::$name { $($($f: c.$f),*)? }
                }
            }
            impl Call for $name {
                type Answer = $answer;
                const NAME: &'static str = stringify!($name);
            }
        )*
    };
}

calls! {
    /// Allowed before authentication, with the tracker's admin token (made
    /// at its first start; refused `NotAdmin` otherwise). Creates a group
    /// whose first member is the caller; the connection is then
    /// authenticated as that member.
    CreateGroup { admin_token: String, group_name: String, member_name: String, peer_addr: Option<SocketAddr> } -> GroupCreated;
    /// Allowed before authentication. Redeems an invite; the connection is
    /// then authenticated as the new member.
    Join { group: GroupId, invite: String, member_name: String, peer_addr: Option<SocketAddr> } -> Joined;
    /// Succeeds only on a connection whose TLS client certificate is the
    /// member's (the one it created the group or joined with).
    Authenticate { group: GroupId, member: MemberId, peer_addr: Option<SocketAddr> } -> Authenticated;
    /// `ttl_ms` 0 means the tracker's default (one day); `uses` 0 means one.
    CreateInvite { ttl_ms: u64, uses: u32 } -> Invite;
    ListMembers -> Vec<MemberInfo>;
    /// Answers with `Snapshot` when `from` is `None` or older than the log
    /// reaches, then pushes every event after it.
    Subscribe { from: Option<Seq> } -> Subscription;
    ListFiles -> FileTable;
    /// Creates an empty file, a directory or a symbolic link (its target
    /// in `kind`; `mode` and `lock` ignored). With `lock`, a file is created
    /// already locked by the caller (an `open(O_CREAT)`).
    CreateFile { parent: FileId, name: String, kind: FileKind, mode: u32, lock: bool, owner: Owner } -> FileAnswer;
    Lock { file: FileId } -> Lease;
    Renew { lease: LeaseId } -> Lease;
    Unlock { lease: LeaseId } -> ();
    /// Compare-and-set: refused unless `base` is the current version and
    /// `lease` is a live lease of the caller on `file`.
    Publish {
        file: FileId,
        base: Version,
        lease: LeaseId,
        size: u64,
        mtime: UnixMillis,
        /// `None` with `torrent` empty for an empty file.
        info_hash: Option<InfoHash>,
        /// The whole .torrent file (bencoded metainfo) of the new content.
        torrent: Vec<u8>,
        /// Keep the lock after publishing (an fsync while still open).
        keep_lock: bool,
    } -> FileEntry;
    GetTorrent { file: FileId, version: Version } -> Vec<u8>;
    /// Deletes a file or an empty directory (the paper's delete permission).
    /// Refused with `Locked` while another member holds the file's lock,
    /// `NotEmpty` for a directory with children.
    Delete { file: FileId } -> Deleted;
    /// Moves and/or renames. If `new_name` exists in `new_parent`: with
    /// `replace`, an existing file (not locked by another member) or empty
    /// directory is deleted in the same step; without it, `AlreadyExists`.
    /// A directory cannot move into itself or a descendant (`BadRequest`).
    /// Refused with `Locked` while another member holds `file`'s lock.
    Rename { file: FileId, new_parent: FileId, new_name: String, replace: bool } -> ();
    /// Shares mode, mtime and/or owner changes; no new version. Refused
    /// with `Locked` while another member holds the lock.
    SetAttr { file: FileId, mode: Option<u32>, mtime: Option<UnixMillis>, owner: Option<Owner> } -> FileAnswer;
    /// Leaves the group: the caller's member record goes, its credential
    /// stops working, its locks are released; the others are told.
    Leave -> ();
    /// Removes another member (the group's owner or an admin only; an admin
    /// cannot remove the owner or another admin): as `Leave` for it, and
    /// every connection it has is closed. Members cut their peer links
    /// with it when they see `MemberLeft`.
    RemoveMember { member: MemberId } -> ();
    /// Makes a member an admin, or a plain member again (the owner only).
    SetAdmin { member: MemberId, admin: bool } -> ();
    /// The longest explicit lock a member of the group may take, in ms (0:
    /// the tracker's maximum, a week); the owner or an admin only.
    SetLockLimit { max_ms: u64 } -> ();
    /// Breaks whoever's lock is on `file` (owner or admin; logged as
    /// `Unlocked` by the caller). The holder's unpublished edit comes back
    /// to it as a conflict copy.
    ForceUnlock { file: FileId } -> ();
    /// The versions the tracker keeps of a file (newest first).
    ListVersions { file: FileId } -> Vec<VersionInfo>;
    /// Makes an older kept version current again, as a new version with the
    /// old content (same info hash and torrent: no bytes move). Needs the
    /// lock to be free or held by the caller under `lease`.
    Restore { file: FileId, version: Version, lease: Option<LeaseId> } -> FileEntry;
    /// An explicit lock (the paper's lock_file): held until `UnlockFile` or
    /// until `ttl_ms` runs out (0 = the tracker's maximum, one week); no
    /// renewal needed.
    LockExplicit { file: FileId, ttl_ms: u64 } -> Lease;
    /// Releases whatever lock the caller holds on `file` (for `titorrent
    /// unlock`, which does not know the lease id).
    UnlockFile { file: FileId } -> ();
    /// Reads the action log: up to `limit` events after `after` (from the
    /// oldest kept if `None`).
    ReadLog { after: Option<Seq>, limit: u32 } -> LogPage;
    /// The caller now holds a complete copy of `version` of `file` (the UDP
    /// seed's OWN). Logged as a `Have` event so that every member knows who
    /// can serve it; a report for a version that is no longer current is
    /// accepted and ignored.
    Have { file: FileId, version: Version } -> ();
    /// The caller needs pieces of the torrent `info_hash` (a version it
    /// does not hold complete): the tracker asks every other online,
    /// subscribed member of the group to wake that torrent, with a
    /// [`ServerFrame::Wanted`] naming the caller's BitTorrent address (the
    /// `peer_addr` this connection authenticated with; none given, nothing
    /// is sent). Answered `Ok` at once; nothing is stored.
    Want { info_hash: InfoHash } -> ();
    /// The caller exports `info_hash` (`titorrent export`): it serves that
    /// version in plain BitTorrent on `port` (of its connection's address)
    /// for `ttl_ms`. Answered `AnnounceKey`: a key for the HTTP announce URL
    /// `http://TRACKER/announce/KEY` (TRACKER: the address the caller
    /// connects to; the same port serves HTTP) that works for that one info
    /// hash until `expires`, and lists the version's exporters and the
    /// clients that announced it, never the group's members.
    ExportKey { info_hash: InfoHash, ttl_ms: u64, port: u16 } -> AnnounceKey;
    /// Ends the caller's export of `info_hash`: it is no longer listed.
    Unexport { info_hash: InfoHash } -> ();
    /// The group's trash: files deleted (or replaced by a rename) within
    /// the tracker's trash retention, newest first.
    ListTrash -> Vec<TrashEntry>;
    /// Brings a file back from the trash as `name` in `parent` (which must
    /// be a directory where `name` is free), with its last content as a new
    /// version: same info hash, so no bytes move. Answers `File`.
    Undelete { file: FileId, parent: FileId, name: String } -> FileAnswer;
}

/// `CreateFile` with `lock`: a file created already locked by the caller
/// (an `open(O_CREAT)`), answered with the entry and its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateLocked {
    pub parent: FileId,
    pub name: String,
    pub mode: u32,
    pub owner: Owner,
}

impl From<CreateLocked> for Request {
    fn from(c: CreateLocked) -> Request {
        Request::CreateFile { parent: c.parent, name: c.name, kind: FileKind::File, mode: c.mode, lock: true, owner: c.owner }
    }
}

impl Call for CreateLocked {
    type Answer = LockedFile;
    const NAME: &'static str = "CreateFile (locked)";
}

/// `Response::File` with a lease: the answer to [`CreateLocked`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedFile {
    pub entry: FileEntry,
    pub lease: Lease,
}

impl Answer for LockedFile {
    fn from_response(r: Response) -> Result<Self, Response> {
        match r {
            Response::File { entry, lease: Some(lease) } => Ok(LockedFile { entry, lease }),
            other => Err(other),
        }
    }
    fn into_response(self) -> Response {
        Response::File { entry: self.entry, lease: Some(self.lease) }
    }
}

/// Answers that are one `Response` variant holding one value.
macro_rules! tuple_answers {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl Answer for $ty {
            fn from_response(r: Response) -> Result<Self, Response> {
                match r {
                    Response::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
            fn into_response(self) -> Response {
                Response::$variant(self)
            }
        }
    )*};
}

tuple_answers! {
    Vec<MemberInfo> => Members,
    Lease => Locked,
    FileEntry => Published,
    Vec<u8> => Torrent,
    Vec<VersionInfo> => Versions,
    Vec<TrashEntry> => Trash,
}

/// Answers that are one `Response` variant with named fields: a struct
/// with the same fields.
macro_rules! struct_answers {
    ($($(#[$m:meta])* $ty:ident => $variant:ident { $($f:ident: $t:ty),* $(,)? })*) => {$(
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $ty { $(pub $f: $t),* }
        impl Answer for $ty {
            fn from_response(r: Response) -> Result<Self, Response> {
                match r {
                    Response::$variant { $($f),* } => Ok($ty { $($f),* }),
                    other => Err(other),
                }
            }
            fn into_response(self) -> Response {
                Response::$variant { $($f: self.$f),* }
            }
        }
    )*};
}

struct_answers! {
    /// `Response::Created`: the group, and the caller as its first member.
    GroupCreated => Created { group: GroupId, member: MemberId }
    /// `Response::Joined`.
    Joined => Joined { member: MemberId }
    /// `Response::Authenticated`.
    Authenticated => Authenticated { member: MemberInfo, group_name: String }
    /// `Response::Invite`.
    Invite => Invite { code: String, expires: UnixMillis }
    /// `Response::Files`: the whole file table as of `seq`.
    FileTable => Files { seq: Seq, files: Vec<FileEntry> }
    /// `Response::File`: an entry made or changed, with the lease a
    /// `CreateFile` with `lock` took.
    FileAnswer => File { entry: FileEntry, lease: Option<Lease> }
    /// `Response::Log`.
    LogPage => Log { events: Vec<Event>, more: bool }
    /// `Response::AnnounceKey`.
    AnnounceKey => AnnounceKey { key: String, expires: UnixMillis }
}

/// `Response::Ok`: done, nothing to tell.
impl Answer for () {
    fn from_response(r: Response) -> Result<Self, Response> {
        match r {
            Response::Ok => Ok(()),
            other => Err(other),
        }
    }
    fn into_response(self) -> Response {
        Response::Ok
    }
}

/// The answer to `Delete`: `Response::Ok`, or (a file with hard links)
/// `Response::File` with the link that took its place (see
/// [`FileKind::Link`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    pub promoted: Option<FileEntry>,
}

impl Answer for Deleted {
    fn from_response(r: Response) -> Result<Self, Response> {
        match r {
            Response::Ok => Ok(Deleted { promoted: None }),
            Response::File { entry, .. } => Ok(Deleted { promoted: Some(entry) }),
            other => Err(other),
        }
    }
    fn into_response(self) -> Response {
        match self.promoted {
            None => Response::Ok,
            Some(entry) => Response::File { entry, lease: None },
        }
    }
}

/// The answer to `Subscribe`: where the events that follow start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// `Response::Snapshot`: the whole table as of `seq`.
    Snapshot { seq: Seq, files: Vec<FileEntry> },
    /// `Response::Subscribed`: events after the requested `seq`, none lost.
    Resumed { seq: Seq },
}

impl Answer for Subscription {
    fn from_response(r: Response) -> Result<Self, Response> {
        match r {
            Response::Snapshot { seq, files } => Ok(Subscription::Snapshot { seq, files }),
            Response::Subscribed { seq } => Ok(Subscription::Resumed { seq }),
            other => Err(other),
        }
    }
    fn into_response(self) -> Response {
        match self {
            Subscription::Snapshot { seq, files } => Response::Snapshot { seq, files },
            Subscription::Resumed { seq } => Response::Subscribed { seq },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_its_request_and_takes_only_its_answer() {
        let c = Lock { file: FileId(3) };
        assert_eq!(Request::from(c), Request::Lock { file: FileId(3) });
        assert_eq!(Request::from(ListMembers), Request::ListMembers);
        let lease = Lease { id: LeaseId(1), file: FileId(3), expires: 9, version: Version(0) };
        assert_eq!(Lock::answer(Response::Locked(lease.clone())), Ok(lease.clone()));
        assert_eq!(Lock::answer(Response::Ok), Err(Response::Ok));
        assert_eq!(Unlock::answer(Response::Ok), Ok(()));
        assert_eq!(Delete::answer(Response::Ok), Ok(Deleted { promoted: None }));
        assert_eq!(Lock::expect(Response::Ok), Err(Mismatch { call: "Lock", answer: "Ok".into() }));
        for a in [Response::Locked(lease), Response::Subscribed { seq: Seq(4) }] {
            let back = match &a {
                Response::Locked(_) => Lock::answer(a.clone()).map(Answer::into_response),
                _ => Subscribe::answer(a.clone()).map(Answer::into_response),
            };
            assert_eq!(back, Ok(a));
        }
    }
}

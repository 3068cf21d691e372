//! The protocol as typed calls: one struct per [`Request`], each naming the
//! one answer it gets, so that neither side can send or accept an answer of
//! the wrong shape without a compile error.
//!
//! The wire is still the [`Request`] and [`Response`] enums of `proto` (a
//! call becomes its `Request` variant, an answer its `Response` variant):
//! these types decide which variant answers which request. A client sends a
//! call and turns the `Response` back with [`Call::answer`]; the one check
//! of an answer's shape is in the client's adapter. The server's handlers
//! return the call's [`Call::Answer`], and one place turns it into a
//! `Response` with [`Answer::into_response`].

use crate::proto::{
    Event, FileEntry, FileId, FileKind, GroupId, InfoHash, Lease, LeaseId, MemberId, MemberInfo, Owner, Request,
    Response, Seq, TrashEntry, UnixMillis, Version, VersionInfo,
};
use std::net::SocketAddr;

/// What answers a call: one shape of [`Response`] (a refusal,
/// `Response::Error`, is not an answer; clients take it apart first).
pub trait Answer: Sized {
    /// The answer in `r`, or `r` back if it has another shape.
    fn from_response(r: Response) -> Result<Self, Response>;
    fn into_response(self) -> Response;
}

/// A request, typed by the answer it gets.
pub trait Call: Into<Request> {
    type Answer: Answer;
    /// The request's name, for messages ("CreateFile answered ...").
    const NAME: &'static str;

    /// The answer in `r`, or `r` back if it has another shape.
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

macro_rules! calls {
    (@struct $(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name;
    };
    (@struct $(#[$m:meta])* $name:ident { $($f:ident: $t:ty),* }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name { $(pub $f: $t),* }
    };
    ($($(#[$m:meta])* $name:ident $({ $($f:ident: $t:ty),* $(,)? })? -> $answer:ty;)*) => {$(
        calls!(@struct
            #[doc = concat!("[`Request::", stringify!($name), "`] as a call.")]
            $(#[$m])* $name $({ $($f: $t),* })?);
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
    )*};
}

calls! {
    CreateGroup { admin_token: String, group_name: String, member_name: String, peer_addr: Option<SocketAddr> } -> GroupCreated;
    Join { group: GroupId, invite: String, member_name: String, peer_addr: Option<SocketAddr> } -> Joined;
    Authenticate { group: GroupId, member: MemberId, peer_addr: Option<SocketAddr> } -> Authenticated;
    CreateInvite { ttl_ms: u64, uses: u32 } -> Invite;
    ListMembers -> Vec<MemberInfo>;
    Subscribe { from: Option<Seq> } -> Subscription;
    ListFiles -> FileTable;
    CreateFile { parent: FileId, name: String, kind: FileKind, mode: u32, lock: bool, owner: Owner } -> FileAnswer;
    Lock { file: FileId } -> Lease;
    Renew { lease: LeaseId } -> Lease;
    Unlock { lease: LeaseId } -> ();
    Publish {
        file: FileId,
        base: Version,
        lease: LeaseId,
        size: u64,
        mtime: UnixMillis,
        info_hash: Option<InfoHash>,
        torrent: Vec<u8>,
        keep_lock: bool,
    } -> FileEntry;
    GetTorrent { file: FileId, version: Version } -> Vec<u8>;
    Delete { file: FileId } -> Deleted;
    Rename { file: FileId, new_parent: FileId, new_name: String, replace: bool } -> ();
    SetAttr { file: FileId, mode: Option<u32>, mtime: Option<UnixMillis>, owner: Option<Owner> } -> FileAnswer;
    Leave -> ();
    RemoveMember { member: MemberId } -> ();
    SetAdmin { member: MemberId, admin: bool } -> ();
    SetLockLimit { max_ms: u64 } -> ();
    ForceUnlock { file: FileId } -> ();
    ListVersions { file: FileId } -> Vec<VersionInfo>;
    Restore { file: FileId, version: Version, lease: Option<LeaseId> } -> FileEntry;
    LockExplicit { file: FileId, ttl_ms: u64 } -> Lease;
    UnlockFile { file: FileId } -> ();
    ReadLog { after: Option<Seq>, limit: u32 } -> LogPage;
    Have { file: FileId, version: Version } -> ();
    Want { info_hash: InfoHash } -> ();
    ExportKey { info_hash: InfoHash, ttl_ms: u64, port: u16 } -> AnnounceKey;
    Unexport { info_hash: InfoHash } -> ();
    ListTrash -> Vec<TrashEntry>;
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

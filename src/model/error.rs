//! The model's error type: every way a filesystem operation can fail, typed,
//! so that the FUSE layer can turn each into exactly one errno in one place.
//! The ports' own errors (`ContentError`, `CoordError`) are in `ports.rs`.

use super::ports::{ContentError, CoordError};
use titorrent_tracker::proto::{LockHolder, ProtoError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no such file or directory")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid name")]
    InvalidName,
    #[error("name longer than 255 bytes")]
    NameTooLong,
    #[error("{path} is locked by {} since {}", .holder.member_name, crate::model::fmt_time(.holder.since))]
    Locked { path: String, holder: LockHolder },
    #[error("the tracker is unreachable; the folder is read-only until it is back")]
    Offline,
    /// The connection to the tracker went away while a request was in
    /// flight: whether it was applied is unknown.
    #[error("the tracker connection was lost before it answered; the outcome is unknown")]
    Lost,
    #[error("stale file handle")]
    BadHandle,
    /// The inode is no longer in the table (another member replaced or
    /// removed the file since the kernel looked its name up): the kernel
    /// looks the name up again and retries the open (ESTALE, as NFS).
    #[error("the file was replaced or removed by another member; looking its name up again")]
    Replaced,
    #[error("file not open for writing")]
    NotWritable,
    /// link(2) to a directory, a symbolic link or a FIFO/socket: only
    /// regular files get second names here.
    #[error("only regular files can have hard links here")]
    NotLinkable,
    /// readlink of something that is not a symbolic link.
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("operation not supported yet: {0}")]
    Unsupported(&'static str),
    #[error("the tracker refused: {0}")]
    Refused(#[source] ProtoError),
    #[error("content unavailable: {0}")]
    Content(#[source] ContentError),
    /// The tracker answered out of protocol (an answer of another shape
    /// than the request's, a malformed frame).
    #[error("the tracker answered something unexpected: {0}")]
    Protocol(#[source] CoordError),
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<CoordError> for ModelError {
    fn from(e: CoordError) -> Self {
        match e {
            CoordError::Offline => ModelError::Offline,
            CoordError::Lost => ModelError::Lost,
            e @ (CoordError::Unexpected(_) | CoordError::Protocol(_)) => ModelError::Protocol(e),
            CoordError::Refused(ProtoError::NoSuchFile) => ModelError::NotFound,
            CoordError::Refused(ProtoError::AlreadyExists) => ModelError::Exists,
            CoordError::Refused(ProtoError::NotADirectory) => ModelError::NotDir,
            CoordError::Refused(ProtoError::NotEmpty) => ModelError::NotEmpty,
            CoordError::Refused(ProtoError::IsADirectory) => ModelError::IsDir,
            CoordError::Refused(ProtoError::InvalidName(_)) => ModelError::InvalidName,
            CoordError::Refused(p) => ModelError::Refused(p),
        }
    }
}

impl From<ContentError> for ModelError {
    fn from(e: ContentError) -> Self {
        ModelError::Content(e)
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

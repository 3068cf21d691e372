//! The swarm's error type: what went wrong, with librqbit's anyhow errors
//! turned into typed variants at the boundary.

use std::io;

/// How a swarm operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The torrent bytes are well formed but their info dict does not hash to
    /// the info hash they were offered under. Nothing was added.
    #[error("torrent does not match info hash {expected}")]
    HashMismatch {
        expected: titorrent_tracker::proto::InfoHash,
    },
    /// The torrent bytes are not a single-file BitTorrent v1 metainfo we can use.
    #[error("invalid torrent: {0}")]
    InvalidTorrent(String),
    /// Zero-length files have no torrent; the caller stores them without one.
    #[error("an empty file cannot be published as a torrent")]
    EmptyFile,
    /// The name cannot be a single path component (empty, `.`, `..`, or with `/` or NUL).
    #[error("invalid file name {0:?}")]
    InvalidName(String),
    /// This session does not know the version (never ensured, or forgotten).
    #[error("version not known to the swarm")]
    NotFound,
    /// The cache disk is full.
    #[error("no space left on the cache disk")]
    NoSpace,
    #[error("I/O: {0}")]
    Io(#[source] io::Error),
    /// librqbit reported an error (its errors are untyped).
    #[error("BitTorrent engine: {0}")]
    Engine(String),
    /// The peer links (TLS door, SOCKS5 door) could not be set up.
    #[error(transparent)]
    Link(#[from] super::LinkError),
    /// The swarm was shut down.
    #[error("the swarm is shut down")]
    ShutDown,
}

impl From<io::Error> for SwarmError {
    fn from(e: io::Error) -> Self {
        if is_no_space(&e) {
            SwarmError::NoSpace
        } else {
            SwarmError::Io(e)
        }
    }
}

fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC)
}

/// Converts a librqbit error, keeping a full disk recognisable: librqbit wraps
/// the `io::Error` of a failed write in its anyhow context chain.
pub(super) fn engine(e: impl Into<anyhow::Error>) -> SwarmError {
    engine_ref(&e.into())
}

pub(super) fn engine_ref(e: &anyhow::Error) -> SwarmError {
    if e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(is_no_space)
    {
        return SwarmError::NoSpace;
    }
    SwarmError::Engine(format!("{e:#}"))
}

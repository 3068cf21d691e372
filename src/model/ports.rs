//! The small interfaces the model needs from the outside world: content
//! (the swarm), coordination (the tracker), and the kernel's caches, with
//! the types and errors that cross them. The model names no librqbit or
//! fuser type; adapters implement these (`swarm/port.rs`,
//! `tracker_client/coordinator.rs`, `fuse::KernelNotifier`).

use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use titorrent_tracker::calls::{Call, Mismatch};
use titorrent_tracker::proto::{FileId, InfoHash, MemberId, MemberInfo, ProtoError, Seq};

/// A version's content as the swarm made it available.
#[derive(Clone, Debug)]
pub struct PublishedContent {
    pub info_hash: InfoHash,
    pub torrent: Vec<u8>,
    pub size: u64,
}

/// What an edit changed of the version it started from, so that the swarm
/// reuses the rest: the base's piece hashes when publishing, and on the
/// other members the bytes of the base they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// The version the edit started from (its bytes are where the staging
    /// copy came from).
    pub base: InfoHash,
    /// Sorted, disjoint `[start, end)` byte ranges that may differ from the
    /// base; every other byte below the base's size is the base's.
    pub dirty: Vec<(u64, u64)>,
}

/// How much of a version to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Only the pieces reads ask for.
    OnDemand,
    /// All of it, in the background, starting with this member's stripe.
    Background(Stripe),
}

/// Which part of a version this member fetches first when several members
/// fetch it at once: part `index` of `count` equal parts (then the rest, in
/// order from there). Members that start apart fetch different pieces from
/// the seeder and then trade them, instead of all asking the seeder for the
/// same ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stripe {
    pub index: u32,
    pub count: u32,
}

impl Stripe {
    pub const WHOLE: Stripe = Stripe { index: 0, count: 1 };

    /// Where this stripe starts in a file of `size` bytes, at a multiple of
    /// `align`.
    pub fn start(&self, size: u64, align: u64) -> u64 {
        if self.count <= 1 || size == 0 {
            return 0;
        }
        let at = (u128::from(size) * u128::from(self.index % self.count) / u128::from(self.count)) as u64;
        at / align * align
    }
}

/// Where file contents come from and go to.
pub trait Content: Send + Sync + 'static {
    /// Hashes a finished staging file, puts its bytes into the store (a hard
    /// link, not a copy) and seeds it. The staging file stays where it is:
    /// the caller removes it once it has noted the info hash durably.
    /// With a `delta`, only its dirty pieces are hashed and the version
    /// names its base, for the members to reuse what they hold of it.
    fn publish(&self, staging: &Path, name: &str, delta: Option<Delta>) -> impl Future<Output = Result<PublishedContent, ContentError>> + Send;
    /// Makes a version known (validating `torrent` against `info_hash`) and
    /// fetches all of it or only what reads ask for, as `fetch` says.
    fn ensure(
        &self,
        info_hash: InfoHash,
        torrent: &[u8],
        peers: Vec<SocketAddr>,
        fetch: Fetch,
    ) -> impl Future<Output = Result<(), ContentError>> + Send;
    /// Reads a range, returning once the pieces covering it are verified.
    fn read(&self, info_hash: InfoHash, offset: u64, len: u32) -> impl Future<Output = Result<Bytes, ContentError>> + Send;
    /// The range's bytes if every piece under it is here already (read from
    /// the local copy on the calling thread: no network, no task); `None`
    /// when some must be fetched (`read` does that).
    fn read_local(&self, info_hash: InfoHash, offset: u64, len: u32) -> Option<Vec<u8>>;
    /// The complete local copy of a version, if there is one.
    fn local_path(&self, info_hash: InfoHash) -> Option<PathBuf>;
    /// (bytes local, total) of a version this member knows.
    fn progress(&self, info_hash: InfoHash) -> Option<(u64, u64)>;
    /// A member is known or changed (joined, came online, went offline, has
    /// a new address): its key may open links to this member, and it is
    /// dialled while online.
    fn learn_member(&self, m: &MemberInfo);
    /// Serves a version to standard BitTorrent clients for `ttl`, or (with
    /// `None`) stops; returns where and until when it is served.
    fn export(&self, info_hash: InfoHash, ttl: Option<Duration>) -> Option<(SocketAddr, SystemTime)>;
    /// Where and until when a version is exported, if it is.
    fn exported(&self, info_hash: InfoHash) -> Option<(SocketAddr, SystemTime)>;
    /// Every version exported now: where and until when.
    fn exports(&self) -> Vec<(InfoHash, SocketAddr, SystemTime)>;
    /// A member left or was removed: its key is refused from now on and its
    /// open links are cut.
    fn forget_member(&self, id: MemberId, addr: Option<SocketAddr>);
    /// Resolves once a version is complete locally.
    fn wait_complete(&self, info_hash: InfoHash) -> impl Future<Output = Result<(), ContentError>> + Send;
    /// Versions live in the BitTorrent engine now (the others are dormant:
    /// on disk, costing no connection or task until used).
    fn live_count(&self) -> usize;
    /// Drops a version: stops sharing it and deletes its local bytes.
    fn forget(&self, info_hash: InfoHash) -> impl Future<Output = Result<(), ContentError>> + Send;
}

/// The tracker manager, as the model uses it: one typed call at a time,
/// answered with that call's own answer type.
pub trait Coordinator: Send + Sync + 'static {
    /// The call's answer, and for a change of the file table the seq of
    /// its commit: the answer is the table as of that seq.
    fn call_at<C: Call + Send>(&self, c: C) -> impl Future<Output = Result<(C::Answer, Option<Seq>), CoordError>> + Send;

    /// [`Coordinator::call_at`] without the seq.
    fn call<C: Call + Send>(&self, c: C) -> impl Future<Output = Result<C::Answer, CoordError>> + Send {
        let answer = self.call_at(c);
        async move { answer.await.map(|(a, _)| a) }
    }
}

/// The kernel's dentry and page caches, told when another member changed
/// something. Implemented over fuser's notifier.
pub trait KernelCache: Send + Sync + 'static {
    fn inval_entry(&self, parent: FileId, name: &str);
    fn inval_inode(&self, file: FileId);
    /// Drops the attributes (size, mtime) the kernel caches for `file`, and
    /// only those, before returning: the next `stat`, `lseek(SEEK_END)` or
    /// read past the cached size asks the daemon. Never waits on a page
    /// lock, so it is safe on any thread.
    fn inval_attrs(&self, file: FileId);
}

/// How fetching, storing or publishing content failed (implemented by the
/// swarm; fakes in tests).
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("torrent does not match its info hash")]
    HashMismatch,
    #[error("no space left on the cache disk")]
    NoSpace,
    #[error("version not known to the swarm")]
    NotFound,
    #[error("I/O: {0}")]
    Io(#[source] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// How a request to the tracker failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Not connected: the request was not sent.
    #[error("not connected to the tracker")]
    Offline,
    /// The connection went away while the request was in flight: it may or
    /// may not have been applied.
    #[error("the tracker connection was lost before the answer came")]
    Lost,
    #[error("refused: {0}")]
    Refused(#[source] ProtoError),
    /// The tracker answered with another shape than the call's.
    #[error("tracker protocol: {0}")]
    Unexpected(#[source] Mismatch),
    /// The tracker said something else out of protocol.
    #[error("tracker protocol: {0}")]
    Protocol(String),
}

#[cfg(test)]
mod tests {
    use super::Stripe;

    #[test]
    fn stripes_split_a_file_at_piece_boundaries() {
        let size = 10 * 1024 * 1024 + 7;
        let starts: Vec<u64> = (0..4).map(|i| Stripe { index: i, count: 4 }.start(size, 262144)).collect();
        assert_eq!(starts, vec![0, 2 * 1024 * 1024 + 524288, 5 * 1024 * 1024, 7 * 1024 * 1024 + 524288]);
        assert!(starts.iter().all(|s| s % 262144 == 0));
        assert_eq!(Stripe::WHOLE.start(size, 262144), 0);
        assert_eq!(Stripe { index: 5, count: 4 }.start(size, 262144), starts[1]);
        assert_eq!(Stripe { index: 1, count: 4 }.start(0, 262144), 0);
    }
}

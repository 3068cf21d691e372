//! The small interfaces the model needs from the outside world: content
//! (the swarm), coordination (the tracker), and the kernel's caches. The
//! model names no librqbit or fuser type; adapters implement these.

use super::error::{ContentError, CoordError};
use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use titorrent_tracker::proto::{FileId, InfoHash, Request, Response};

/// A version's content as the swarm made it available.
#[derive(Clone, Debug)]
pub struct PublishedContent {
    pub info_hash: InfoHash,
    pub torrent: Vec<u8>,
    pub size: u64,
}

/// Where file contents come from and go to.
pub trait Content: Send + Sync + 'static {
    /// Hashes a finished staging file, moves it into the store and seeds it.
    fn publish(&self, staging: &Path, name: &str) -> impl Future<Output = Result<PublishedContent, ContentError>> + Send;
    /// Makes a version known (validating `torrent` against `info_hash`);
    /// with `background`, fetches all of it, else only what reads ask for.
    fn ensure(
        &self,
        info_hash: InfoHash,
        torrent: &[u8],
        peers: Vec<SocketAddr>,
        background: bool,
    ) -> impl Future<Output = Result<(), ContentError>> + Send;
    /// Reads a range, returning once the pieces covering it are verified.
    fn read(&self, info_hash: InfoHash, offset: u64, len: u32) -> impl Future<Output = Result<Bytes, ContentError>> + Send;
    /// The complete local copy of a version, if there is one.
    fn local_path(&self, info_hash: InfoHash) -> Option<PathBuf>;
    /// (bytes local, total) of a version this member knows.
    fn progress(&self, info_hash: InfoHash) -> Option<(u64, u64)>;
    fn add_peers(&self, peers: &[SocketAddr]);
    /// Resolves once a version is complete locally.
    fn wait_complete(&self, info_hash: InfoHash) -> impl Future<Output = Result<(), ContentError>> + Send;
    /// Drops a version: stops sharing it and deletes its local bytes.
    fn forget(&self, info_hash: InfoHash) -> impl Future<Output = Result<(), ContentError>> + Send;
}

/// The tracker manager, as the model uses it.
pub trait Coordinator: Send + Sync + 'static {
    fn request(&self, req: Request) -> impl Future<Output = Result<Response, CoordError>> + Send;
}

/// The kernel's dentry and page caches, told when another member changed
/// something. Implemented over fuser's notifier.
pub trait KernelCache: Send + Sync + 'static {
    fn inval_entry(&self, parent: FileId, name: &str);
    fn inval_inode(&self, file: FileId);
}

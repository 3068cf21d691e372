//! The swarm as the model's `Content`: maps calls one to one and turns
//! `SwarmError` into the model's `ContentError`.

use super::{Swarm, SwarmError};
use crate::model::{Content, ContentError, Delta, Fetch, PublishedContent};
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use titorrent_tracker::proto::{InfoHash, MemberId, MemberInfo};

impl From<SwarmError> for ContentError {
    fn from(e: SwarmError) -> Self {
        match e {
            SwarmError::HashMismatch { .. } => ContentError::HashMismatch,
            SwarmError::NoSpace => ContentError::NoSpace,
            SwarmError::NotFound => ContentError::NotFound,
            SwarmError::Io(e) => ContentError::Io(e),
            e @ (SwarmError::InvalidTorrent(_)
            | SwarmError::EmptyFile
            | SwarmError::InvalidName(_)
            | SwarmError::Engine(_)
            | SwarmError::Link(_)
            | SwarmError::ShutDown) => ContentError::Other(e.to_string()),
        }
    }
}

impl Content for Swarm {
    async fn publish(&self, staging: &Path, name: &str, delta: Option<Delta>) -> Result<PublishedContent, ContentError> {
        let p = Swarm::publish_edit(self, staging, name, delta).await?;
        Ok(PublishedContent { info_hash: p.info_hash, torrent: p.torrent, size: p.size })
    }

    async fn ensure(
        &self,
        info_hash: InfoHash,
        torrent: &[u8],
        peers: Vec<SocketAddr>,
        fetch: Fetch,
    ) -> Result<(), ContentError> {
        Ok(Swarm::ensure(self, info_hash, torrent, peers, fetch).await?)
    }

    async fn read(&self, info_hash: InfoHash, offset: u64, len: u32) -> Result<Bytes, ContentError> {
        Ok(Swarm::read(self, info_hash, offset, len).await?)
    }

    fn local_path(&self, info_hash: InfoHash) -> Option<PathBuf> {
        Swarm::local_path(self, info_hash)
    }

    fn read_local(&self, info_hash: InfoHash, offset: u64, len: u32) -> Option<Vec<u8>> {
        Swarm::read_local(self, info_hash, offset, len)
    }

    fn live_count(&self) -> usize {
        Swarm::live_count(self)
    }

    fn progress(&self, info_hash: InfoHash) -> Option<(u64, u64)> {
        Swarm::progress(self, info_hash)
    }

    fn learn_member(&self, m: &MemberInfo) {
        Swarm::learn_member(self, m)
    }

    fn export(&self, info_hash: InfoHash, ttl: Option<std::time::Duration>) -> Option<(SocketAddr, std::time::SystemTime)> {
        match ttl {
            Some(ttl) => Some(Swarm::export(self, info_hash, ttl)),
            None => {
                Swarm::unexport(self, info_hash);
                None
            }
        }
    }

    fn exported(&self, info_hash: InfoHash) -> Option<(SocketAddr, std::time::SystemTime)> {
        Swarm::exported(self, info_hash)
    }

    fn exports(&self) -> Vec<(InfoHash, SocketAddr, std::time::SystemTime)> {
        Swarm::exports(self)
    }

    fn forget_member(&self, id: MemberId, addr: Option<SocketAddr>) {
        Swarm::forget_member(self, id, addr)
    }

    async fn wait_complete(&self, info_hash: InfoHash) -> Result<(), ContentError> {
        Ok(Swarm::wait_complete(self, info_hash).await?)
    }

    async fn forget(&self, info_hash: InfoHash) -> Result<(), ContentError> {
        Ok(Swarm::forget(self, info_hash).await?)
    }
}

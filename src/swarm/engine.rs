//! How the swarm sets librqbit up (its session options, the doors around
//! it) and the session-side operations of `Inner`: adding torrents,
//! looking versions up, the object store's paths.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use librqbit::api::TorrentIdOrHash;
use librqbit::limits::LimitsConfig;
use librqbit::{AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, ManagedTorrent, SessionOptions, SessionPersistenceConfig};
use titorrent_tracker::proto::InfoHash;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::error::engine;
use super::version::Version;
use super::{id20, join_error, Stripe, links, metainfo, Inner, SwarmConfig, SwarmError, DISK_PERMITS, MIN_RATE_LIMIT_BPS};

/// Chunk requests (16 KiB each) outstanding per peer connection, librqbit's
/// default (2 MiB): what one reader or one fetching member needs to keep a
/// fast link busy (on loopback, 32 gave a 1 GiB read 0.6–0.9× librqbit's
/// speed, 128 0.84–0.95×).
pub(super) const PEER_REQUEST_WINDOW: usize = 128;
/// The requests that all members fetching a version at once (each its own
/// stripe) keep outstanding at one source between them: each gets this
/// divided by their number, at least `MIN_SHARED_WINDOW`. The author's
/// uplink is the bottleneck of such a fetch; what is queued there beyond a
/// round trip's worth goes out in whatever order the requests came, so a
/// member that finished its stripe early pulls other stripes from the author
/// instead of from their members, and slow TCP flows through a narrow
/// uplink starve (P7 benchmark: 8 members with 128 each had the author send
/// 1.7× the file, with 8 each 1.5×).
const SHARED_SOURCE_WINDOW: usize = 64;
const MIN_SHARED_WINDOW: usize = 8;

/// The request window for a version fetched by `stripe.count` members at
/// once (see `SHARED_SOURCE_WINDOW`).
pub(super) fn request_window(stripe: Stripe) -> usize {
    if stripe.count <= 1 {
        PEER_REQUEST_WINDOW
    } else {
        (SHARED_SOURCE_WINDOW / stripe.count as usize).clamp(MIN_SHARED_WINDOW, PEER_REQUEST_WINDOW)
    }
}
/// librqbit's options: no DHT, LSD or UPnP; the peer feed as its only
/// tracker; listening on loopback and dialling out through the SOCKS5 door
/// (`proxy_url`), so that every connection goes through the links.
pub(super) fn session_options(
    cfg: &SwarmConfig,
    trackers: Vec<url::Url>,
    session_dir: &Path,
    proxy_url: String,
    cancel: CancellationToken,
) -> SessionOptions {
        let limit = |bps: Option<u32>| bps.and_then(|b| NonZeroU32::new(b.max(MIN_RATE_LIMIT_BPS)));
    SessionOptions {
            // Peers come from the member list only (through the peer feed).
            dht: None,
            disable_local_service_discovery: true,
            trackers: trackers.into_iter().collect(),
            persistence: Some(SessionPersistenceConfig::Json {
                folder: Some(session_dir.to_path_buf()),
            }),
            fastresume: true,
            // librqbit is reached only through the links: it listens on
            // loopback and dials out through their SOCKS5 door.
            listen: Some(ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
                enable_upnp_port_forwarding: false,
                ipv4_only: true,
                ..Default::default()
            }),
            connect: Some(librqbit::ConnectionOptions {
                proxy_url: Some(proxy_url),
                ..Default::default()
            }),
            ratelimits: LimitsConfig {
                upload_bps: limit(cfg.upload_limit_bps),
                download_bps: limit(cfg.download_limit_bps),
            },
            runtime_worker_threads: Some(DISK_PERMITS),
            cancellation_token: Some(cancel),
            root_span: Some(tracing::Span::current()),
            client_name_and_version: Some(metainfo::CREATED_BY.to_owned()),
            ..Default::default()
    }
}

/// Starts the doors, with a waker that makes an exported version live
/// before a standard client's link reaches librqbit, and the source of
/// the blobs other members ask for.
pub(super) fn spawn_links(inner: &Arc<Inner>, (links, doors, engine_addr): (Arc<links::Links>, links::Doors, SocketAddr)) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let waker: links::Waker = Box::new(move |ih| {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(inner) = weak.upgrade() {
                inner.wake_for_export(ih).await;
            }
        })
    });
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let blobs: super::blobs::Source = Box::new(move |ids| {
        let weak = weak.clone();
        Box::pin(async move {
            match weak.upgrade() {
                Some(inner) => inner.blobs_for(ids).await,
                None => vec![None; ids.len()],
            }
        })
    });
    links.spawn(doors, engine_addr, (waker, blobs), &tokio::runtime::Handle::current());
}

impl Inner {
    pub(super) fn check_running(&self) -> Result<(), SwarmError> {
        if self.shut.load(Ordering::Acquire) {
            Err(SwarmError::ShutDown)
        } else {
            Ok(())
        }
    }

    pub(super) fn object_dir(&self, ih: InfoHash) -> PathBuf {
        self.objects.join(ih.to_string())
    }

    /// librqbit's fastresume file for a torrent (see `JsonSessionPersistenceStore`).
    pub(super) fn bitv_path(&self, ih: InfoHash) -> PathBuf {
        self.session_dir.join(format!("{ih}.bitv"))
    }

    pub(super) async fn add(
        &self,
        ih: InfoHash,
        torrent: Vec<u8>,
        only_files: Option<Vec<usize>>,
        peers: Vec<SocketAddr>,
        request_window: usize,
    ) -> Result<Arc<ManagedTorrent>, SwarmError> {
        let dir = self.object_dir(ih);
        let opts = AddTorrentOptions {
            only_files,
            // Our own object directory: resuming a partial file is the point.
            overwrite: true,
            output_folder: Some(
                dir.to_str()
                    .ok_or_else(|| SwarmError::Engine("non-UTF-8 object directory".into()))?
                    .to_owned(),
            ),
            initial_peers: (!peers.is_empty()).then_some(peers),
            preferred_id: Some(self.next_id.fetch_add(1, Ordering::Relaxed)),
            peer_opts: Some(librqbit::PeerConnectionOptions {
                max_request_window: Some(request_window),
                ..Default::default()
            }),
            ..Default::default()
        };
        let handle = self
            .session
            .add_torrent(AddTorrent::from_bytes(torrent), Some(opts))
            .await
            .map_err(engine)?
            .into_handle()
            .ok_or_else(|| SwarmError::Engine("librqbit only listed the torrent".into()))?;
        if handle.info_hash() != id20(ih) {
            return Err(SwarmError::Engine(format!(
                "librqbit answered {:?} when adding {ih}",
                handle.info_hash()
            )));
        }
        Ok(handle)
    }

    /// Remembers a version (keeping an existing entry).
    pub(super) fn register(&self, v: Version) -> Arc<Version> {
        self.versions.write().entry(v.ih).or_insert_with(|| Arc::new(v)).clone()
    }

    /// The version, also when only its saved metadata is on disk (dormant).
    pub(super) fn lookup(&self, ih: InfoHash) -> Result<Arc<Version>, SwarmError> {
        if let Some(v) = self.versions.read().get(&ih) {
            if v.forgotten.load(Ordering::Acquire) {
                return Err(SwarmError::NotFound);
            }
            return Ok(v.clone());
        }
        match self.meta.load(ih, &self.objects)? {
            Some(v) => Ok(self.register(v)),
            None => Err(SwarmError::NotFound),
        }
    }

    /// A live torrent's have-bitfield (MSB first), if it is past its initial check.
    pub(super) fn haves_of(&self, handle: &ManagedTorrent) -> Option<Vec<u8>> {
        let (bits, _) = self
            .api
            .api_dump_haves(TorrentIdOrHash::Hash(handle.info_hash()))
            .ok()?;
        Some(bits.as_raw_slice().to_vec())
    }

    /// Whether every piece covering `start..end` is verified (noting
    /// completion when it sees it).
    pub(super) fn range_local(&self, v: &Version, start: u64, end: u64) -> bool {
        if v.is_complete() {
            return true;
        }
        let bits = match v.live_handle() {
            Some(h) => match self.haves_of(&h) {
                Some(b) => b,
                None => return false,
            },
            None => match v.dormant_haves() {
                Some(b) => b,
                None => return false,
            },
        };
        if v.all_in(&bits) {
            v.mark_complete();
            return true;
        }
        v.covers(&bits, start, end)
    }

    pub(super) async fn pread(&self, v: &Arc<Version>, offset: u64, end: u64) -> Result<Bytes, SwarmError> {
        let _slot = self
            .disk_reads
            .acquire()
            .await
            .map_err(|_| SwarmError::ShutDown)?;
        let v = v.clone();
        tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
            let file = v.reader()?;
            let mut buf = vec![0u8; (end - offset) as usize];
            file.read_exact_at(&mut buf, offset)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(join_error)?
        .map_err(SwarmError::from)
    }
}

/// Logs (at debug) what a live torrent sent to and got from each peer.
pub(super) fn log_traffic(handle: &librqbit::ManagedTorrent, what: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let Some(live) = handle.live() else { return };
    // Every peer it has talked to, not only those still connected (its
    // filter type is not exported; it deserializes from its HTTP API form).
    let all = serde_json::from_str(r#"{"state":"all"}"#).unwrap_or_default();
    let peers = live.per_peer_stats_snapshot(all);
    let mut each: Vec<String> = peers
        .peers
        .iter()
        .filter(|(_, p)| p.counters.uploaded_bytes + p.counters.fetched_bytes > 0)
        .map(|(a, p)| {
            format!(
                "{a}: up {} KiB, down {} KiB, stole {}, stolen {}",
                p.counters.uploaded_bytes / 1024,
                p.counters.fetched_bytes / 1024,
                p.counters.times_i_stole,
                p.counters.times_stolen_from_me
            )
        })
        .collect();
    each.sort();
    debug!(ih = ?handle.info_hash(), peers = %each.join("; "), "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Stripe;

    #[test]
    fn members_fetching_at_once_share_one_window_at_the_source() {
        assert_eq!(request_window(Stripe::WHOLE), PEER_REQUEST_WINDOW);
        assert_eq!(request_window(Stripe { index: 0, count: 2 }), 32);
        assert_eq!(request_window(Stripe { index: 7, count: 8 }), 8);
        // Never below the floor, however many fetch.
        assert_eq!(request_window(Stripe { index: 0, count: 100 }), MIN_SHARED_WINDOW);
    }
}

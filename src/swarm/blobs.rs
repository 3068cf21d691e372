//! Small versions moved whole, many to a round trip, over a member link:
//! a burst of small files (`tar -x`, `git checkout`, `npm install`) costs
//! neither member a live torrent, a BitTorrent connection or a TLS
//! handshake per file.
//!
//! A version of at most [`SMALL`] bytes that another member should fetch in
//! the background is queued here instead of in the torrent fetch queue. The
//! fetcher asks the version's holders (the publisher first) for up to
//! [`BATCH_FILES`] such versions in one request, on a kept-open link to
//! each holder, and checks every version's bytes against its piece hashes
//! before keeping them. Whatever a holder does not have whole, or sends
//! wrong, is asked of the next holder, and in the end fetched by
//! BitTorrent as any other version (`queue_fetch`), so nothing is lost by
//! this path, only time. A read of a small version not here yet asks its
//! holders at once the same way.
//!
//! The link is the member link (`links`): mutual TLS 1.3 between current
//! members' keys, on the member's public port; a handshake that names
//! [`ALPN`] reaches [`serve`] instead of librqbit. The protocol, inside it:
//! - request: a 4-byte big-endian length, then a bincode [`Request`] (the
//!   info hashes wanted, at most [`BATCH_FILES`]);
//! - answer: a 4-byte big-endian length, then a bincode [`Answer`] (one
//!   size per hash asked for, `None` for a version not whole here or past
//!   the answer's [`BATCH_BYTES`]), then those versions' bytes back to back.
//!
//! A holder serves only versions it has whole and of at most [`SMALL`]
//! bytes; an asker reads no more than the sizes it already knows from the
//! torrents. A malformed frame closes the link.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use librqbit_sha1_wrapper::{ISha1, Sha1};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use titorrent_tracker::proto::InfoHash;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::links::BlobLink;
use super::version::{full_bitfield, Engine, Version};
use super::{metainfo, spawn_task, Inner};

/// What a member link's TLS handshake names to reach the blob service.
pub(super) const ALPN: &[u8] = b"titorrent-blobs/1";
/// Versions of at most this many bytes (four pieces) go through blobs.
pub const SMALL: u64 = 1 << 20;
/// Versions asked for in one request.
pub(super) const BATCH_FILES: usize = 512;
/// Bytes in one answer, at most.
const BATCH_BYTES: u64 = 16 << 20;
/// A request or an answer's header: 512 hashes are ~10 KiB.
const MAX_HEADER: u32 = 32 * 1024;
/// How long one request and its answer may take, and how long a served
/// link may sit idle before it is closed.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(60);
/// Requests in flight at once (to all holders together).
const BATCHES_AT_ONCE: usize = 4;
/// How long a read waits for its blob before it goes by BitTorrent.
const READ_BUDGET: Duration = Duration::from_secs(5);
/// Idle links kept open per holder.
const POOLED: usize = 4;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(super) struct Request {
    pub ids: Vec<[u8; 20]>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(super) struct Answer {
    pub sizes: Vec<Option<u64>>,
}

/// What the holder side asks the swarm for: the bytes of each version, if
/// it is whole here (see `Inner::blobs_for`).
pub(super) type Source =
    Box<dyn Fn(Vec<InfoHash>) -> Pin<Box<dyn Future<Output = Vec<Option<Vec<u8>>>> + Send>> + Send + Sync>;

/// The asker's side: versions waiting for a request, and idle links.
#[derive(Default)]
pub(super) struct Queue {
    /// (version, index of the holder to ask next), and the set of those
    /// waiting (a version is queued once).
    waiting: Mutex<(VecDeque<(InfoHash, usize)>, HashSet<InfoHash>)>,
    kick: Arc<Notify>,
    pool: Mutex<HashMap<SocketAddr, Vec<BlobLink>>>,
}

async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, value: &T) -> io::Result<()> {
    let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len()).ok().filter(|n| *n <= MAX_HEADER).ok_or_else(|| io::Error::other("blob frame too big"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&bytes).await
}

async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> io::Result<T> {
    let len = r.read_u32().await?;
    if len > MAX_HEADER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("blob frame of {len} bytes")));
    }
    let mut bytes = vec![0; len as usize];
    r.read_exact(&mut bytes).await?;
    let (value, used) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("malformed blob frame: {e}")))?;
    if used != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "trailing bytes in a blob frame"));
    }
    Ok(value)
}

/// Serves one member's blob link until it closes, sits idle for [`IDLE`],
/// sends something malformed, or the member is cut off.
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut link: S, source: &Source, cut: CancellationToken) {
    loop {
        let req: Request = tokio::select! {
            r = tokio::time::timeout(IDLE, read_frame(&mut link)) => match r {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        debug!(error = %e, "blob link closed");
                    }
                    return;
                }
                Err(_) => return,
            },
            () = cut.cancelled() => return,
        };
        if req.ids.len() > BATCH_FILES {
            debug!(asked = req.ids.len(), "blob request over the bound: link closed");
            return;
        }
        let blobs = source(req.ids.into_iter().map(InfoHash).collect()).await;
        let answer = Answer { sizes: blobs.iter().map(|b| b.as_ref().map(|b| b.len() as u64)).collect() };
        let send = async {
            write_frame(&mut link, &answer).await?;
            for b in blobs.iter().flatten() {
                link.write_all(b).await?;
            }
            link.flush().await
        };
        tokio::select! {
            r = tokio::time::timeout(IO_TIMEOUT, send) => match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return debug!(error = %e, "blob answer not sent"),
                Err(_) => return debug!("blob answer timed out"),
            },
            () = cut.cancelled() => return,
        }
    }
}

/// One request on `link` for `versions`, and their bytes as answered (the
/// sizes are checked against the versions' own before a byte is read).
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(link: &mut S, versions: &[Arc<Version>]) -> io::Result<Vec<Option<Vec<u8>>>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    write_frame(link, &Request { ids: versions.iter().map(|v| v.ih.0).collect() }).await?;
    link.flush().await?;
    let answer: Answer = read_frame(link).await?;
    if answer.sizes.len() != versions.len() {
        return Err(bad("a blob answer with another number of versions"));
    }
    let mut total = 0u64;
    let mut got = Vec::with_capacity(versions.len());
    for (v, size) in versions.iter().zip(answer.sizes) {
        let Some(n) = size else {
            got.push(None);
            continue;
        };
        total += n;
        if n != v.size || total > BATCH_BYTES {
            return Err(bad("a blob answer with a size that is not the version's"));
        }
        let mut bytes = vec![0; n as usize];
        link.read_exact(&mut bytes).await?;
        got.push(Some(bytes));
    }
    Ok(got)
}

/// Whether `bytes` are the version's: every piece hashes to the torrent's.
pub(super) fn matches(v: &Version, bytes: &[u8]) -> bool {
    let Ok(c) = metainfo::check(v.ih, &v.torrent) else { return false };
    if bytes.len() as u64 != c.size || c.pieces.len() as u64 != c.size.div_ceil(u64::from(c.piece_length)) * 20 {
        return false;
    }
    bytes.chunks(c.piece_length as usize).zip(c.pieces.chunks(20)).all(|(piece, want)| {
        let mut h = Sha1::new();
        h.update(piece);
        h.finish()[..] == want[..]
    })
}

impl Inner {
    /// Queues a small version for a blob fetch from its holders.
    pub(super) fn queue_small(&self, v: &Arc<Version>) {
        v.background.store(true, Ordering::Release);
        self.requeue_small(v.ih, 0);
    }

    fn requeue_small(&self, ih: InfoHash, next: usize) {
        let mut w = self.blobs.waiting.lock();
        if w.1.insert(ih) {
            w.0.push_back((ih, next));
            drop(w);
            self.blobs.kick.notify_one();
        }
    }

    /// Whom to ask for a version: the members `ensure` named, else every
    /// member the peer feed knows.
    fn holders_of(&self, v: &Version) -> Vec<SocketAddr> {
        let named = v.holders.lock().clone();
        let all = if named.is_empty() { self.feed.peers() } else { named };
        all.into_iter().filter(|a| *a != self.listen).collect()
    }

    /// Runs the blob fetcher until the session stops: each round takes
    /// every version waiting, in batches per holder.
    pub(super) fn spawn_blob_fetcher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let kick = self.blobs.kick.clone();
        spawn_task(&self.rt, "blob_fetch", &self.cancel, async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let work = std::mem::take(&mut *inner.blobs.waiting.lock());
                if work.0.is_empty() {
                    drop(inner);
                    kick.notified().await;
                    continue;
                }
                inner.fetch_round(work.0).await;
            }
        });
    }

    /// Asks each holder for its share of `work` (versions with the index of
    /// the holder to ask), [`BATCHES_AT_ONCE`] requests at a time.
    async fn fetch_round(self: &Arc<Self>, work: VecDeque<(InfoHash, usize)>) {
        let mut per_holder: HashMap<SocketAddr, Vec<(Arc<Version>, usize)>> = HashMap::new();
        for (ih, next) in work {
            let Ok(v) = self.lookup(ih) else { continue };
            if v.is_complete() || v.live_handle().is_some() {
                continue;
            }
            match self.holders_of(&v).get(next) {
                Some(a) => per_holder.entry(*a).or_default().push((v, next)),
                None => self.fall_back(&v),
            }
        }
        let mut batches = Vec::new();
        for (addr, items) in per_holder {
            let mut batch: Vec<(Arc<Version>, usize)> = Vec::new();
            let mut bytes = 0;
            for item in items {
                if batch.len() == BATCH_FILES || (bytes + item.0.size > BATCH_BYTES && !batch.is_empty()) {
                    batches.push((addr, std::mem::take(&mut batch)));
                    bytes = 0;
                }
                bytes += item.0.size;
                batch.push(item);
            }
            batches.push((addr, batch));
        }
        futures::stream::iter(batches)
            .for_each_concurrent(BATCHES_AT_ONCE, |(addr, batch)| self.fetch_batch(addr, batch))
            .await;
    }

    async fn fetch_batch(self: &Arc<Self>, addr: SocketAddr, batch: Vec<(Arc<Version>, usize)>) {
        let versions: Vec<Arc<Version>> = batch.iter().map(|(v, _)| v.clone()).collect();
        let got = match self.ask_member(addr, &versions).await {
            Ok(g) => g,
            Err(e) => {
                debug!(%addr, versions = versions.len(), error = %e, "blob request failed: asking the next holder");
                vec![None; versions.len()]
            }
        };
        let mut fetched = Vec::new();
        for ((v, next), bytes) in batch.into_iter().zip(got) {
            match bytes {
                Some(b) => fetched.push((v, next, b)),
                None => self.requeue_small(v.ih, next + 1),
            }
        }
        let n = fetched.len();
        for (v, next) in self.store_blobs(fetched).await {
            self.requeue_small(v.ih, next + 1);
        }
        debug!(%addr, fetched = n, "blob batch");
    }

    /// The torrent path, for a small version no holder gave whole.
    fn fall_back(&self, v: &Arc<Version>) {
        debug!(ih = %v.ih, "no holder sent it whole: fetching it by BitTorrent");
        self.queue_fetch(v);
    }

    /// One request to the member at `addr`, on an idle link kept from an
    /// earlier one if there is one (once more on a new link if that one
    /// had been closed meanwhile).
    async fn ask_member(&self, addr: SocketAddr, versions: &[Arc<Version>]) -> Result<Vec<Option<Vec<u8>>>, super::LinkError> {
        let pooled = self.blobs.pool.lock().get_mut(&addr).and_then(Vec::pop);
        let pooled = pooled.filter(|_| self.links.is_member_at(addr));
        let timed = |r: Result<io::Result<_>, _>| r.unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "blob request timed out")));
        if let Some(mut link) = pooled {
            if let Ok(got) = timed(tokio::time::timeout(IO_TIMEOUT, ask(&mut link, versions)).await) {
                self.keep_link(addr, link);
                return Ok(got);
            }
        }
        let mut link = self.links.dial_blobs(addr).await?;
        let got = timed(tokio::time::timeout(IO_TIMEOUT, ask(&mut link, versions)).await)?;
        self.keep_link(addr, link);
        Ok(got)
    }

    fn keep_link(&self, addr: SocketAddr, link: BlobLink) {
        let mut pool = self.blobs.pool.lock();
        let links = pool.entry(addr).or_default();
        if links.len() < POOLED {
            links.push(link);
        }
    }

    /// Checks fetched versions against their hashes and makes the ones that
    /// match complete here (dormant, with every piece). Returns those that
    /// did not match, with the holder index they came with.
    async fn store_blobs(&self, fetched: Vec<(Arc<Version>, usize, Vec<u8>)>) -> Vec<(Arc<Version>, usize)> {
        if fetched.is_empty() {
            return Vec::new();
        }
        let objects = self.objects.clone();
        let checked = tokio::task::spawn_blocking(move || {
            fetched
                .into_iter()
                .map(|(v, next, bytes)| {
                    let written = if matches(&v, &bytes) { write_temp(&objects, &v, &bytes) } else { Err(io::Error::other("bytes do not match the version's pieces")) };
                    (v, next, written)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let (mut bad, mut done) = (Vec::new(), Vec::new());
        for (v, next, written) in checked {
            match written {
                Ok(tmp) => {
                    if self.adopt_blob(&v, tmp).await {
                        done.push(v);
                    }
                }
                Err(e) => {
                    info!(ih = %v.ih, "a member's copy of a version could not be kept ({e}): asking another");
                    bad.push((v, next));
                }
            }
        }
        if !done.is_empty() {
            let meta = self.meta.clone();
            let saved = tokio::task::spawn_blocking(move || {
                for v in &done {
                    if let Err(e) = meta.save_haves(v.ih, &full_bitfield(v.n_pieces)) {
                        // The next run fetches it again: slower, not wrong.
                        debug!(ih = %v.ih, "cannot save the pieces of a fetched version: {e}");
                    }
                }
            });
            let _ = saved.await;
        }
        bad
    }

    /// Moves a verified copy into place, unless the version woke, was
    /// forgotten or completed meanwhile (then the copy is removed). The
    /// rename runs on the blocking pool, under the version's transition
    /// lock.
    async fn adopt_blob(&self, v: &Arc<Version>, tmp: PathBuf) -> bool {
        let _t = v.transition.lock().await;
        let wanted = !(v.forgotten.load(Ordering::Acquire) || v.is_complete() || v.live_handle().is_some());
        let path = v.path.clone();
        let moved = tokio::task::spawn_blocking(move || {
            let r = if wanted { std::fs::rename(&tmp, &path) } else { Err(io::Error::other("not wanted any more")) };
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match moved {
            Ok(()) => {}
            Err(e) if wanted => {
                debug!(ih = %v.ih, "cannot move a fetched version into place: {e}");
                return false;
            }
            Err(_) => return false,
        }
        *v.file.lock() = None;
        self.set_engine(v, Engine::Dormant { haves: full_bitfield(v.n_pieces) });
        v.mark_complete();
        true
    }

    /// Fetches a small version now, for a read: asks its holders in turn,
    /// for [`READ_BUDGET`] at most (a holder listed online may be cut off;
    /// the read then goes by BitTorrent, which waits for any holder).
    /// Whether it is complete here after.
    pub(super) async fn fetch_small_now(&self, v: &Arc<Version>) -> bool {
        let _one = v.blob_fetch.lock().await;
        let _ = tokio::time::timeout(READ_BUDGET, self.ask_holders_for(v)).await;
        v.is_complete()
    }

    async fn ask_holders_for(&self, v: &Arc<Version>) {
        for addr in self.holders_of(v).into_iter().take(4) {
            if v.is_complete() || v.live_handle().is_some() {
                break;
            }
            match self.ask_member(addr, std::slice::from_ref(v)).await {
                Ok(mut got) => {
                    if let Some(bytes) = got.pop().flatten() {
                        self.store_blobs(vec![(v.clone(), 0, bytes)]).await;
                    }
                }
                Err(e) => debug!(%addr, ih = %v.ih, error = %e, "blob request for a read failed"),
            }
        }
    }

    /// The holder's side: the bytes of each version asked for that is whole
    /// here and small, up to [`BATCH_BYTES`] in all.
    pub(super) async fn blobs_for(self: Arc<Self>, ids: Vec<InfoHash>) -> Vec<Option<Vec<u8>>> {
        let n = ids.len();
        // On the blocking pool: a dormant version's lookup reads its
        // metadata from disk.
        tokio::task::spawn_blocking(move || {
            let mut budget = BATCH_BYTES;
            ids.into_iter()
                .map(|ih| {
                    let v = self.lookup(ih).ok()?;
                    if v.size > SMALL || v.size > budget || !self.range_local(&v, 0, v.size) {
                        return None;
                    }
                    budget -= v.size;
                    v.seen.lock().last_active = std::time::Instant::now();
                    std::fs::read(&v.path).ok()
                })
                .collect()
        })
        .await
        .unwrap_or_else(|_| vec![None; n])
    }
}

/// Writes a fetched version's bytes beside its object file, under a
/// temporary name (`adopt_blob` renames it into place).
fn write_temp(objects: &std::path::Path, v: &Version, bytes: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    let dir = objects.join(v.ih.to_string());
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".blob-").tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.into_temp_path().keep().map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_kept_only_if_every_piece_matches() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let built = metainfo::build_from(&path, "f", 0, None).unwrap();
        let checked = metainfo::check(built.info_hash, &built.torrent).unwrap();
        assert!(checked.pieces.len() > 20, "more than one piece");
        let v = Version::new(built.info_hash, &checked, dir.path(), Vec::new());
        assert!(matches(&v, &data));
        let mut other = data.clone();
        other[299_999] ^= 1;
        assert!(!matches(&v, &other), "a changed byte in the last piece");
        assert!(!matches(&v, &data[..data.len() - 1]), "one byte short");
    }

    #[tokio::test]
    async fn frames_round_trip_and_a_bad_one_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = Request { ids: vec![[7; 20], [9; 20]] };
        write_frame(&mut a, &req).await.unwrap();
        assert_eq!(read_frame::<_, Request>(&mut b).await.unwrap(), req);

        // A declared length over the bound is refused before it is read.
        a.write_all(&(MAX_HEADER + 1).to_be_bytes()).await.unwrap();
        let e = read_frame::<_, Request>(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        // Bytes that are no request.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(&[0xff, 0xff, 0xff]).await.unwrap();
        assert_eq!(read_frame::<_, Request>(&mut b).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}

//! The librqbit reference: a plain librqbit `Session` on 127.0.0.1 that is
//! given the seeder's address as its only peer and reads the torrent's one
//! file through `ManagedTorrent::stream` (librqbit's own `FileStream`), the
//! way rqbit's HTTP streaming does. No DHT, no LSD, no trackers, no
//! persistence: the same information titorrent's members have.

use super::measure::SeqRead;
use anyhow::{bail, Context};
use librqbit::{AddTorrent, AddTorrentOptions, ManagedTorrent, Session, SessionOptions};
use std::io::SeekFrom;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")
}

async fn session(dir: &Path) -> anyhow::Result<Arc<Session>> {
    let opts = SessionOptions {
        dht: None,
        disable_trackers: true,
        disable_local_service_discovery: true,
        persistence: None,
        fastresume: false,
        listen: None,
        ..Default::default()
    };
    Session::new_with_opts(dir.to_path_buf(), opts).await.context("librqbit Session::new_with_opts")
}

/// Adds the torrent; `on_demand` selects no file (only what streams ask
/// for is fetched, as titorrent's on-demand members do).
async fn add(session: &Arc<Session>, torrent: &[u8], peer: SocketAddr, dir: &Path, on_demand: bool) -> anyhow::Result<Arc<ManagedTorrent>> {
    let opts = AddTorrentOptions {
        initial_peers: Some(vec![peer]),
        output_folder: Some(dir.to_str().context("non-UTF-8 temp dir")?.to_string()),
        overwrite: true,
        disable_trackers: true,
        only_files: on_demand.then(Vec::new),
        ..Default::default()
    };
    let handle = session
        .add_torrent(AddTorrent::from_bytes(torrent.to_vec()), Some(opts))
        .await
        .context("librqbit add_torrent")?
        .into_handle()
        .context("librqbit only listed the torrent")?;
    handle.wait_until_initialized().await.context("librqbit wait_until_initialized")?;
    Ok(handle)
}

/// Reads the whole file from the seeder through a `FileStream`, timing
/// from `add_torrent` to the last byte; stops at `cap`.
pub fn stream_read_all(torrent: &[u8], peer: SocketAddr, dir: &Path, expected: u64, cap: Duration) -> anyhow::Result<SeqRead> {
    let rt = runtime()?;
    rt.block_on(async {
        let session = session(dir).await?;
        let start = Instant::now();
        let handle = add(&session, torrent, peer, dir, false).await?;
        let mut stream = handle.clone().stream(0).await.context("librqbit stream")?;
        let mut buf = vec![0u8; super::measure::READ_BUF];
        let mut bytes = 0u64;
        let deadline = start + cap;
        let finished = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) => break true,
                Ok(Ok(n)) => bytes += n as u64,
                Ok(Err(e)) => bail!("librqbit FileStream read at {bytes}: {e}"),
                Err(_) => break false,
            }
        };
        let took = start.elapsed();
        drop(stream);
        session.stop().await;
        Ok(SeqRead { bytes, took, finished: finished && bytes == expected })
    })
}

/// A fresh session reading 4 KiB at each of `offsets`, in order, through
/// one `FileStream` (seek, then read): the time of each read.
pub fn stream_samples(torrent: &[u8], peer: SocketAddr, dir: &Path, offsets: &[u64], timeout: Duration) -> anyhow::Result<Vec<Duration>> {
    let rt = runtime()?;
    rt.block_on(async {
        let session = session(dir).await?;
        let handle = add(&session, torrent, peer, dir, true).await?;
        let mut stream = handle.clone().stream(0).await.context("librqbit stream")?;
        let mut buf = vec![0u8; 4096];
        let mut out = Vec::with_capacity(offsets.len());
        for &off in offsets {
            let start = Instant::now();
            let read = async {
                stream.seek(SeekFrom::Start(off)).await?;
                stream.read_exact(&mut buf).await
            };
            match tokio::time::timeout(timeout, read).await {
                Ok(Ok(_)) => out.push(start.elapsed()),
                Ok(Err(e)) => bail!("librqbit FileStream 4 KiB read at {off}: {e}"),
                Err(_) => bail!("librqbit FileStream 4 KiB read at {off} took over {timeout:?}"),
            }
        }
        drop(stream);
        session.stop().await;
        Ok(out)
    })
}

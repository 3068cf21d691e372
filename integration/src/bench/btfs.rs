//! The btfs reference: btfs (libtorrent behind a FUSE mount) on the
//! seeder's own .torrent.
//!
//! Edit torrents are private and carry no announce URL (peers come from the
//! group's member list), and btfs takes nothing but a .torrent or magnet:
//! no peer option. With DHT, PEX and LSD off for a private torrent, btfs
//! given the file as it is finds no peer at all. So the bench adds an
//! `announce` key (outside the info dict: same info hash) naming a tiny
//! HTTP tracker of its own on 127.0.0.1 that answers every announce with
//! the seeder's address, and nothing else.

use crate::mounts;
use crate::process::Daemon;
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An HTTP tracker on 127.0.0.1 that hands out one peer.
pub struct OnePeerTracker {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    announces: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl OnePeerTracker {
    pub fn start(peer: SocketAddr) -> anyhow::Result<OnePeerTracker> {
        let std::net::IpAddr::V4(ip) = peer.ip() else { bail!("the seeder's address {peer} is not IPv4") };
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the one-peer tracker")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let announces = Arc::new(AtomicU64::new(0));
        let mut body = b"d8:intervali30e12:min intervali5e5:peers6:".to_vec();
        body.extend_from_slice(&ip.octets());
        body.extend_from_slice(&peer.port().to_be_bytes());
        body.push(b'e');
        let (s, n) = (stop.clone(), announces.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if answer(conn, &body).is_ok() {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(OnePeerTracker { addr, stop, announces, thread: Some(thread) })
    }

    pub fn announce_url(&self) -> String {
        format!("http://{}/announce", self.addr)
    }

    pub fn announces(&self) -> u64 {
        self.announces.load(Ordering::Relaxed)
    }
}

fn answer(mut conn: TcpStream, body: &[u8]) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let head = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)
}

impl Drop for OnePeerTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `torrent` with an `announce` key added (the info dict, hence the info
/// hash, unchanged). Keys of a bencoded dict are sorted and "announce"
/// sorts before every key an edit torrent has.
pub fn with_announce(torrent: &[u8], url: &str) -> anyhow::Result<Vec<u8>> {
    if torrent.first() != Some(&b'd') || torrent.starts_with(b"d8:announce") {
        bail!("not a .torrent without announce");
    }
    let mut out = b"d8:announce".to_vec();
    out.extend_from_slice(format!("{}:{url}", url.len()).as_bytes());
    out.extend_from_slice(&torrent[1..]);
    Ok(out)
}

/// A running `btfs -f` mount.
pub struct BtfsMount {
    pub mnt: PathBuf,
    daemon: Option<Daemon>,
}

impl BtfsMount {
    /// `btfs -f --data-directory=DIR TORRENT MNT`; waits until `file`
    /// shows in the mount.
    pub fn mount(torrent: &Path, data: &Path, mnt: &Path, log_dir: &Path, file: &str) -> anyhow::Result<BtfsMount> {
        let mut cmd = Command::new("btfs");
        cmd.arg("-f").arg(format!("--data-directory={}", data.display())).arg(torrent).arg(mnt);
        let daemon = Daemon::spawn("btfs", cmd, log_dir, "btfs");
        let m = BtfsMount { mnt: mnt.to_path_buf(), daemon: Some(daemon) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if mounts::find(mnt).is_some() && mnt.join(file).exists() {
                return Ok(m);
            }
            if let Some(st) = m.daemon.as_ref().and_then(Daemon::exited) {
                bail!("btfs exited ({st}) before mounting: {}", crate::process::tail(&m.daemon.as_ref().map(Daemon::stderr).unwrap_or_default(), 10));
            }
            if Instant::now() > deadline {
                bail!("btfs did not show {file} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        self.daemon.as_ref().map(Daemon::stderr).unwrap_or_default()
    }

    /// Lazily unmounts, which makes a blocked read return.
    pub fn abort(mnt: &Path) {
        mounts::force_unmount(mnt);
    }
}

impl Drop for BtfsMount {
    fn drop(&mut self) {
        mounts::force_unmount(&self.mnt);
        if let Some(d) = self.daemon.take() {
            let _ = d.terminate(Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_goes_first_and_keeps_the_rest() {
        let t = b"d10:created by3:abc4:infod1:xi1eee";
        let got = with_announce(t, "http://h/a").unwrap();
        assert_eq!(got, b"d8:announce10:http://h/a10:created by3:abc4:infod1:xi1eee");
    }
}

//! A UDP tracker (BEP 15) on loopback through which this member's own
//! torrents learn the other members' addresses.
//!
//! librqbit 9.1 has no public call to hand a peer to a running torrent: peers
//! reach a torrent only through its `initial_peers` (fixed when it is added),
//! DHT, LSD or trackers. DHT and LSD are off (the group is private), so the
//! session is given this tracker as its only one (`SessionOptions::trackers`
//! also applies to torrents the session restores from its persistence, and to
//! private torrents without an announce URL, which ours are). `add_peers`
//! changes the set it answers with; each incomplete torrent re-announces every
//! `INCOMPLETE_INTERVAL` seconds (librqbit's floor for UDP trackers is 5), so
//! a member that comes online is dialled within a few seconds.
//!
//! The addresses are the group's members, the same for every info hash;
//! complete versions are told to come back rarely, since a seed needs no
//! outgoing connections (the members that lack pieces dial it).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use titorrent_tracker::proto::InfoHash;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// BEP 15's magic protocol id of a connect request.
const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;
const ANNOUNCE_LEN: usize = 98;
const INCOMPLETE_INTERVAL: u32 = 5;
const COMPLETE_INTERVAL: u32 = 3600;
/// Keeps a reply within one unfragmented datagram (18 bytes per IPv6 peer).
const MAX_PEERS_PER_REPLY: usize = 70;

type IsComplete = Box<dyn Fn(InfoHash) -> bool + Send + Sync>;

pub(super) struct PeerFeed {
    peers: RwLock<BTreeSet<SocketAddr>>,
    /// This session's own listening address, never handed to itself.
    own: OnceLock<SocketAddr>,
    is_complete: OnceLock<IsComplete>,
    connection_id: u64,
    sockets: Vec<Arc<UdpSocket>>,
}

impl PeerFeed {
    /// Binds the tracker on 127.0.0.1 and, where the host has it, on ::1
    /// (a UDP tracker reply carries addresses of its own family only).
    pub async fn bind() -> std::io::Result<Arc<PeerFeed>> {
        let mut sockets = vec![Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?)];
        match UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).await {
            Ok(s) => sockets.push(Arc::new(s)),
            Err(e) => debug!("no IPv6 loopback for the peer feed: {e}"),
        }
        Ok(Arc::new(PeerFeed {
            peers: RwLock::default(),
            own: OnceLock::new(),
            is_complete: OnceLock::new(),
            connection_id: rand::random::<u64>() | 1,
            sockets,
        }))
    }

    /// The tracker URLs to give the session.
    pub fn urls(&self) -> Vec<url::Url> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .filter_map(|a| format!("udp://{a}/announce").parse().ok())
            .collect()
    }

    pub fn set_own(&self, own: SocketAddr) {
        let _ = self.own.set(own);
    }

    pub fn set_is_complete(&self, f: IsComplete) {
        let _ = self.is_complete.set(f);
    }

    pub fn add(&self, peers: &[SocketAddr]) {
        if peers.is_empty() {
            return;
        }
        let mut g = self.peers.write();
        g.extend(peers.iter().copied().filter(|p| p.port() != 0));
    }

    /// The member addresses it answers with (never this session's own).
    pub fn peers(&self) -> Vec<SocketAddr> {
        let own = self.own.get();
        self.peers.read().iter().filter(|p| Some(*p) != own).copied().collect()
    }

    /// A member went offline or left: torrents stop being told about it.
    pub fn remove(&self, peer: SocketAddr) {
        self.peers.write().remove(&peer);
    }

    /// Serves announces until `cancel` fires.
    pub fn spawn(self: &Arc<Self>, rt: &tokio::runtime::Handle, cancel: &CancellationToken) {
        for sock in &self.sockets {
            let (feed, sock) = (self.clone(), sock.clone());
            super::spawn_task(rt, "peer_feed", cancel, async move { feed.serve(&sock).await });
        }
    }

    async fn serve(&self, sock: &UdpSocket) {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier replies surface here on Linux.
                    debug!("recv: {e}");
                    continue;
                }
            };
            if !from.ip().is_loopback() {
                continue;
            }
            let reply = self.answer(&buf[..n], sock.local_addr().is_ok_and(|a| a.is_ipv6()));
            if let Some(reply) = reply {
                if let Err(e) = sock.send_to(&reply, from).await {
                    debug!(?from, "send: {e}");
                }
            }
        }
    }

    /// The reply to one request datagram, if it deserves one.
    fn answer(&self, req: &[u8], v6: bool) -> Option<Vec<u8>> {
        if req.len() < 16 {
            return None;
        }
        let conn = u64::from_be_bytes(req[0..8].try_into().ok()?);
        let action = u32::from_be_bytes(req[8..12].try_into().ok()?);
        let tid: [u8; 4] = req[12..16].try_into().ok()?;
        let mut out = Vec::with_capacity(20 + MAX_PEERS_PER_REPLY * 18);
        match action {
            ACTION_CONNECT if conn == PROTOCOL_ID => {
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&tid);
                out.extend_from_slice(&self.connection_id.to_be_bytes());
            }
            ACTION_ANNOUNCE if req.len() >= ANNOUNCE_LEN && conn == self.connection_id => {
                let info_hash = InfoHash(req[16..36].try_into().ok()?);
                let complete = self.is_complete.get().is_some_and(|f| f(info_hash));
                let interval = if complete {
                    COMPLETE_INTERVAL
                } else {
                    INCOMPLETE_INTERVAL
                };
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&tid);
                out.extend_from_slice(&interval.to_be_bytes());
                out.extend_from_slice(&0u32.to_be_bytes()); // leechers
                out.extend_from_slice(&0u32.to_be_bytes()); // seeders
                if !complete {
                    self.put_peers(&mut out, v6);
                }
            }
            ACTION_CONNECT | ACTION_ANNOUNCE => {
                out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
                out.extend_from_slice(&tid);
                out.extend_from_slice(b"bad connection id\0");
            }
            _ => return None,
        }
        Some(out)
    }

    fn put_peers(&self, out: &mut Vec<u8>, v6: bool) {
        let own = self.own.get();
        let peers = self.peers.read();
        let mut n = 0;
        for p in peers.iter().filter(|p| Some(*p) != own) {
            if n == MAX_PEERS_PER_REPLY {
                break;
            }
            match (p, v6) {
                (SocketAddr::V4(a), false) => out.extend_from_slice(&a.ip().octets()),
                (SocketAddr::V6(a), true) => out.extend_from_slice(&a.ip().octets()),
                _ => continue,
            }
            out.extend_from_slice(&p.port().to_be_bytes());
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> PeerFeed {
        PeerFeed {
            peers: RwLock::default(),
            own: OnceLock::new(),
            is_complete: OnceLock::new(),
            connection_id: 42,
            sockets: Vec::new(),
        }
    }

    fn announce(conn: u64, ih: [u8; 20]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&conn.to_be_bytes());
        r.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        r.extend_from_slice(&[9, 9, 9, 9]);
        r.extend_from_slice(&ih);
        r.resize(ANNOUNCE_LEN, 0);
        r
    }

    #[test]
    fn connect_then_announce() {
        let f = feed();
        f.add(&[
            "10.0.0.1:7000".parse().unwrap(),
            "[::2]:7001".parse().unwrap(),
        ]);
        f.set_own("10.0.0.9:1".parse().unwrap());
        f.add(&["10.0.0.9:1".parse().unwrap()]);

        let mut c = PROTOCOL_ID.to_be_bytes().to_vec();
        c.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        let r = f.answer(&c, false).unwrap();
        assert_eq!(&r[..8], &[0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(u64::from_be_bytes(r[8..16].try_into().unwrap()), 42);

        let r = f.answer(&announce(42, [5; 20]), false).unwrap();
        assert_eq!(&r[4..8], &[9, 9, 9, 9]);
        assert_eq!(
            u32::from_be_bytes(r[8..12].try_into().unwrap()),
            INCOMPLETE_INTERVAL
        );
        assert_eq!(&r[20..], &[10, 0, 0, 1, 0x1b, 0x58]);

        let r6 = f.answer(&announce(42, [5; 20]), true).unwrap();
        assert_eq!(r6.len(), 20 + 18);

        let bad = f.answer(&announce(7, [5; 20]), false).unwrap();
        assert_eq!(&bad[..4], &ACTION_ERROR.to_be_bytes());

        f.set_is_complete(Box::new(|_| true));
        let r = f.answer(&announce(42, [5; 20]), false).unwrap();
        assert_eq!(r.len(), 20);
        assert_eq!(
            u32::from_be_bytes(r[8..12].try_into().unwrap()),
            COMPLETE_INTERVAL
        );
    }
}

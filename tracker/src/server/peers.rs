//! Who needs which torrent, from memory only.
//!
//! - A member's `Want` becomes a `Wanted` notice to the other subscribed
//!   members of its group, so that a member keeping a complete version
//!   dormant (no live torrent, incoming connections for it refused) wakes
//!   it and serves the asker.
//! - The HTTP announce endpoint (`http.rs`; BEP 3, compact peers of BEP 23
//!   and BEP 7) keeps a swarm per (group, info hash) of the BitTorrent
//!   clients that announce with a member's announce key. Its reply lists
//!   the group's online members (they do not announce: the tracker knows
//!   their addresses) and then the swarm, never the announcer itself. An
//!   announcer that still needs pieces is also a `Wanted` notice to the
//!   group, at most once per (info hash, address) per [`WANTED_EVERY`], so
//!   that a standard client given a version's .torrent downloads it from
//!   members. Nothing here touches the disk: swarms are lost with a
//!   restart, and clients re-announce.
//!
//! Announce keys: a member's key is an HMAC of its id with the tracker's
//! secret (kept in sled), so it is checked against an in-memory index,
//! never stored per member; the key of a member that left is dropped from
//! the index, and member ids are never reused.
//!
//! Notices are hints, not events: nothing is stored, and one missed is
//! asked for again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use parking_lot::{Mutex, RwLock};
use sha2::Sha256;

use super::group::Notice;
use super::ops::{Auth, Outcome};
use super::Tracker;
use crate::proto::{GroupId, InfoHash, MemberId, Response};

/// How often announcers are asked to come back.
pub(crate) const INTERVAL: Duration = Duration::from_secs(300);
/// How soon they may.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// An announcer not heard from for this long (two intervals) is dropped.
const PEER_TTL: Duration = Duration::from_secs(2 * INTERVAL.as_secs());
/// At most one `Wanted` per (info hash, announcer address) this often.
pub(crate) const WANTED_EVERY: Duration = Duration::from_secs(30);
/// Peers returned when the announce does not say (`numwant`).
const DEFAULT_NUMWANT: usize = 50;
/// Most peers returned, whatever `numwant` asks.
pub(crate) const MAX_NUMWANT: usize = 200;
/// Most announcers kept per swarm (others are answered, not kept).
const MAX_SWARM: usize = 10_000;
/// Swarm shards: announces of different info hashes rarely wait for each
/// other.
const SHARDS: usize = 16;
/// Bytes of an announce key (hex in the URL).
const KEY_LEN: usize = 16;

/// `event=` of an announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AnnounceEvent {
    None,
    Started,
    Stopped,
    Completed,
}

/// What an announce says, already checked.
#[derive(Clone, Debug)]
pub(crate) struct Announce {
    pub info_hash: InfoHash,
    pub port: u16,
    /// Bytes the announcer still needs; `None` when it did not say.
    pub left: Option<u64>,
    pub event: AnnounceEvent,
    pub numwant: Option<usize>,
}

/// The answer to an announce: counts and compact peer lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AnnounceReply {
    pub complete: usize,
    pub incomplete: usize,
    /// 6 bytes per IPv4 peer (BEP 23).
    pub peers: Vec<u8>,
    /// 18 bytes per IPv6 peer (BEP 7).
    pub peers6: Vec<u8>,
}

/// Why an announce was refused (its `failure reason`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnnounceError {
    #[error("unknown announce key")]
    UnknownKey,
}

struct PeerEntry {
    seen: Instant,
    seeder: bool,
    /// `event=stopped` came: not listed, kept only to remember `wanted`.
    stopped: bool,
    /// When this address last caused a `Wanted`.
    wanted: Option<Instant>,
}

#[derive(Default)]
struct Swarm {
    peers: HashMap<SocketAddr, PeerEntry>,
}

/// The HTTP announce side's state: keys and swarms.
pub(crate) struct Announces {
    secret: [u8; 32],
    keys: RwLock<HashMap<[u8; KEY_LEN], (GroupId, MemberId)>>,
    shards: Vec<Mutex<HashMap<(GroupId, InfoHash), Swarm>>>,
}

impl Announces {
    pub fn new(secret: [u8; 32]) -> Announces {
        Announces {
            secret,
            keys: RwLock::new(HashMap::new()),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn key_of(&self, m: MemberId) -> [u8; KEY_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(b"titorrent announce key\0");
        mac.update(&m.0.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&full[..KEY_LEN]);
        key
    }

    /// Makes `m`'s key valid (a member created, joined, or loaded at open);
    /// returns it, as it goes in the URL.
    pub fn admit(&self, g: GroupId, m: MemberId) -> String {
        let key = self.key_of(m);
        self.keys.write().insert(key, (g, m));
        hex::encode(key)
    }

    /// `m` left: its key stops working.
    pub fn revoke(&self, m: MemberId) {
        let key = self.key_of(m);
        self.keys.write().remove(&key);
    }

    fn lookup(&self, key: &str) -> Option<(GroupId, MemberId)> {
        let mut raw = [0u8; KEY_LEN];
        hex::decode_to_slice(key, &mut raw).ok()?;
        self.keys.read().get(&raw).copied()
    }

    fn shard(&self, info_hash: &InfoHash) -> &Mutex<HashMap<(GroupId, InfoHash), Swarm>> {
        &self.shards[usize::from(info_hash.0[19]) % SHARDS]
    }

    /// Drops announcers not heard from for [`PEER_TTL`] and empty swarms.
    pub fn expire(&self, now: Instant) {
        for shard in &self.shards {
            let mut swarms = shard.lock();
            swarms.retain(|_, s| {
                s.peers.retain(|_, p| now.duration_since(p.seen) < PEER_TTL);
                !s.peers.is_empty()
            });
        }
    }
}

/// The address as a client should be given it: an IPv4-mapped IPv6
/// address becomes IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

impl AnnounceReply {
    fn push(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.peers.extend_from_slice(&ip.octets());
                self.peers.extend_from_slice(&a.port().to_be_bytes());
            }
            IpAddr::V6(ip) => {
                self.peers6.extend_from_slice(&ip.octets());
                self.peers6.extend_from_slice(&a.port().to_be_bytes());
            }
        }
    }
}

impl Tracker {
    /// Tells the caller's group that it needs `info_hash`, at the
    /// BitTorrent address its connection authenticated with; with none,
    /// there is nowhere to send the others, and nothing is sent.
    pub(crate) fn want(&self, auth: &Auth, info_hash: InfoHash) -> Outcome {
        if let Some(peer) = auth.peer {
            // No receiver is fine: nobody else is subscribed.
            let _ = auth.group.notices.send(Notice { info_hash, peer, from: Some(auth.member) });
        }
        Ok((Response::Ok, None))
    }

    /// The caller's announce key: its HTTP announce URL is
    /// `http://TRACKER/announce/KEY`.
    pub(crate) fn announce_key(&self, auth: &Auth) -> Outcome {
        let key = self.announces.admit(auth.group.id, auth.member);
        Ok((Response::AnnounceKey { key }, None))
    }

    /// One announce from `from` with announce key `key`.
    pub(crate) fn announce(&self, key: &str, a: &Announce, from: SocketAddr) -> Result<AnnounceReply, AnnounceError> {
        let (g, _) = self.announces.lookup(key).ok_or(AnnounceError::UnknownKey)?;
        let group = self.group(g).ok_or(AnnounceError::UnknownKey)?;
        let peer = canonical(SocketAddr::new(from.ip(), a.port));
        let numwant = a.numwant.unwrap_or(DEFAULT_NUMWANT).min(MAX_NUMWANT);
        let mut reply = AnnounceReply::default();
        let stopped = a.event == AnnounceEvent::Stopped;
        // Members' addresses given (a member's own client may announce
        // too: it is listed once).
        let mut members: Vec<SocketAddr> = Vec::new();
        if !stopped {
            let st = group.state.lock();
            for ms in st.members.values() {
                if members.len() >= numwant {
                    break;
                }
                match ms.rec.peer_addr.map(canonical) {
                    Some(addr) if ms.conns > 0 && addr != peer && !members.contains(&addr) => {
                        members.push(addr);
                        reply.push(addr);
                    }
                    _ => {}
                }
            }
        }
        let now = Instant::now();
        let mut wanted = false;
        {
            let mut swarms = self.announces.shard(&a.info_hash).lock();
            let swarm = swarms.entry((g, a.info_hash)).or_default();
            let seeder = a.left == Some(0) || a.event == AnnounceEvent::Completed;
            let keep = swarm.peers.len() < MAX_SWARM || swarm.peers.contains_key(&peer);
            if keep {
                let e = swarm.peers.entry(peer).or_insert(PeerEntry { seen: now, seeder, stopped, wanted: None });
                e.seen = now;
                e.seeder = seeder;
                e.stopped = stopped;
                if !stopped && !seeder && a.left.is_some() && e.wanted.is_none_or(|w| now - w >= WANTED_EVERY) {
                    e.wanted = Some(now);
                    wanted = true;
                }
            }
            swarm.peers.retain(|addr, p| {
                let live = now.duration_since(p.seen) < PEER_TTL;
                if live && !p.stopped {
                    if p.seeder {
                        reply.complete += 1;
                    } else {
                        reply.incomplete += 1;
                    }
                    if !stopped && *addr != peer && reply_len(&reply) < numwant && !members.contains(addr) {
                        reply.push(*addr);
                    }
                }
                live
            });
            if swarm.peers.is_empty() {
                swarms.remove(&(g, a.info_hash));
            }
        }
        if wanted {
            // No receiver is fine: no member is subscribed.
            let _ = group.notices.send(Notice { info_hash: a.info_hash, peer, from: None });
        }
        Ok(reply)
    }
}

fn reply_len(r: &AnnounceReply) -> usize {
    r.peers.len() / 6 + r.peers6.len() / 18
}

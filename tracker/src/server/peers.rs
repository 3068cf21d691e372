//! Who needs which torrent, from memory only.
//!
//! - A member's `Want` becomes a `Wanted` notice to the other subscribed
//!   members of its group, so that a member keeping a complete version
//!   dormant (no live torrent) wakes it and serves the asker.
//! - The HTTP announce endpoint (`http.rs`; BEP 3, compact peers of BEP 23
//!   and BEP 7) is for standard BitTorrent clients given an *exported*
//!   version (`titorrent export`). Members' own links are TLS between
//!   members' keys and never listed here. An export key is scoped to one
//!   (group, info hash) and an expiry; its reply lists the members that
//!   export that version (at the export port they gave, with the IP their
//!   tracker connection comes from) and the clients that announced it,
//!   never the announcer itself. Nothing here touches the disk: exports
//!   and swarms are lost with a restart (keys stay valid: they are checked,
//!   not stored), and members export again when asked.
//!
//! Export keys: `MEMBER | EXPIRES | MAC`, the MAC an HMAC of the group,
//! member, info hash and expiry with the tracker's secret (kept in sled):
//! checked from memory, never stored; a member that leaves or is removed
//! is dropped from the admitted set and its keys stop working at once.
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
use super::{now_ms, Tracker};
use crate::calls::AnnounceKey;
use crate::proto::{GroupId, InfoHash, MemberId, ProtoError, UnixMillis};

/// How often announcers are asked to come back.
pub(crate) const INTERVAL: Duration = Duration::from_secs(300);
/// How soon they may.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// An announcer not heard from for this long (two intervals) is dropped.
const PEER_TTL: Duration = Duration::from_secs(2 * INTERVAL.as_secs());
/// The longest an export lasts (`titorrent export --ttl`).
pub(crate) const MAX_EXPORT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Peers returned when the announce does not say (`numwant`).
const DEFAULT_NUMWANT: usize = 50;
/// Most peers returned, whatever `numwant` asks.
pub(crate) const MAX_NUMWANT: usize = 200;
/// Most announcers kept per swarm (others are answered, not kept).
const MAX_SWARM: usize = 10_000;
/// Swarm shards: announces of different info hashes rarely wait for each
/// other.
const SHARDS: usize = 16;
/// Bytes of an export key's MAC.
const MAC_LEN: usize = 16;
/// Bytes of an export key (member, expiry, MAC; hex in the URL).
const KEY_LEN: usize = 8 + 8 + MAC_LEN;

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
    /// Malformed, forged, of a member that left, or for another torrent.
    #[error("unknown announce key, or not for this torrent")]
    UnknownKey,
    #[error("this export has expired: ask its member to export it again")]
    Expired,
}

struct PeerEntry {
    seen: Instant,
    seeder: bool,
}

/// One member's export of a version.
struct Exporter {
    member: MemberId,
    addr: SocketAddr,
    until: UnixMillis,
}

#[derive(Default)]
struct Swarm {
    exporters: Vec<Exporter>,
    peers: HashMap<SocketAddr, PeerEntry>,
}

/// The HTTP announce side's state: who may hold keys, and swarms.
pub(crate) struct Announces {
    secret: [u8; 32],
    /// Members whose export keys work.
    admitted: RwLock<HashMap<MemberId, GroupId>>,
    shards: Vec<Mutex<HashMap<(GroupId, InfoHash), Swarm>>>,
}

impl Announces {
    pub fn new(secret: [u8; 32]) -> Announces {
        Announces {
            secret,
            admitted: RwLock::new(HashMap::new()),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn mac(&self, g: GroupId, m: MemberId, ih: &InfoHash, until: UnixMillis) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(b"titorrent export key\0");
        mac.update(&g.0.to_be_bytes());
        mac.update(&m.0.to_be_bytes());
        mac.update(&ih.0);
        mac.update(&until.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// `m`'s export keys work (a member created, joined, or loaded at open).
    pub fn admit(&self, g: GroupId, m: MemberId) {
        self.admitted.write().insert(m, g);
    }

    /// `m` left or was removed: its keys stop working, its exports end.
    pub fn revoke(&self, m: MemberId) {
        self.admitted.write().remove(&m);
        for shard in &self.shards {
            for s in shard.lock().values_mut() {
                s.exporters.retain(|e| e.member != m);
            }
        }
    }

    /// The key for `m`'s export of `ih` until `until`, as it goes in the URL.
    fn key(&self, g: GroupId, m: MemberId, ih: &InfoHash, until: UnixMillis) -> String {
        let mut raw = Vec::with_capacity(KEY_LEN);
        raw.extend_from_slice(&m.0.to_be_bytes());
        raw.extend_from_slice(&until.to_be_bytes());
        raw.extend_from_slice(&self.mac(g, m, ih, until));
        hex::encode(raw)
    }

    /// The group a key for `ih` belongs to, if it is genuine, its member
    /// still admitted, and it has not expired at `now`.
    fn check(&self, key: &str, ih: &InfoHash, now: UnixMillis) -> Result<GroupId, AnnounceError> {
        let mut raw = [0u8; KEY_LEN];
        hex::decode_to_slice(key, &mut raw).map_err(|_| AnnounceError::UnknownKey)?;
        let m = MemberId(u64::from_be_bytes(raw[..8].try_into().expect("8 bytes")));
        let until = u64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
        let g = *self.admitted.read().get(&m).ok_or(AnnounceError::UnknownKey)?;
        if self.mac(g, m, ih, until) != raw[16..] {
            return Err(AnnounceError::UnknownKey);
        }
        if until <= now {
            return Err(AnnounceError::Expired);
        }
        Ok(g)
    }

    fn shard(&self, info_hash: &InfoHash) -> &Mutex<HashMap<(GroupId, InfoHash), Swarm>> {
        &self.shards[usize::from(info_hash.0[19]) % SHARDS]
    }

    /// Drops announcers not heard from for [`PEER_TTL`], exports that
    /// ran out, and empty swarms.
    pub fn expire(&self, now: Instant) {
        let wall = super::now_ms();
        for shard in &self.shards {
            let mut swarms = shard.lock();
            swarms.retain(|_, s| {
                s.peers.retain(|_, p| now.duration_since(p.seen) < PEER_TTL);
                s.exporters.retain(|e| e.until > wall);
                !s.peers.is_empty() || !s.exporters.is_empty()
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
    pub(crate) fn want(&self, auth: &Auth, info_hash: InfoHash) -> Outcome<()> {
        if let Some(peer) = auth.peer {
            // No receiver is fine: nobody else is subscribed.
            let _ = auth.group.notices.send(Notice { info_hash, peer, from: Some(auth.member) });
        }
        Ok(((), None))
    }

    /// The caller exports `info_hash` on `port` for `ttl_ms` (at most
    /// [`MAX_EXPORT`]): it is listed to announcers with a key for it, and
    /// the key is returned.
    pub(crate) fn export_key(&self, auth: &Auth, info_hash: InfoHash, ttl_ms: u64, port: u16) -> Outcome<AnnounceKey> {
        // The IP is the connection's: nobody sends strangers to a third party.
        let ip = auth.remote.ip();
        if port == 0 {
            return Err(ProtoError::BadRequest("export port 0".into()));
        }
        let until = now_ms().saturating_add(ttl_ms.clamp(1, MAX_EXPORT.as_millis() as u64));
        let addr = canonical(SocketAddr::new(ip, port));
        let (g, m) = (auth.group.id, auth.member);
        {
            let mut swarms = self.announces.shard(&info_hash).lock();
            let swarm = swarms.entry((g, info_hash)).or_default();
            swarm.exporters.retain(|e| e.member != m);
            swarm.exporters.push(Exporter { member: m, addr, until });
        }
        let key = self.announces.key(g, m, &info_hash, until);
        tracing::info!(group = %g, member = %m, %info_hash, %addr, "version exported");
        Ok((AnnounceKey { key, expires: until }, None))
    }

    /// The caller no longer exports `info_hash`.
    pub(crate) fn unexport(&self, auth: &Auth, info_hash: InfoHash) -> Outcome<()> {
        let mut swarms = self.announces.shard(&info_hash).lock();
        if let Some(s) = swarms.get_mut(&(auth.group.id, info_hash)) {
            s.exporters.retain(|e| e.member != auth.member);
        }
        Ok(((), None))
    }

    /// One announce from `from` with export key `key`.
    pub(crate) fn announce(&self, key: &str, a: &Announce, from: SocketAddr) -> Result<AnnounceReply, AnnounceError> {
        let now_wall = now_ms();
        let g = self.announces.check(key, &a.info_hash, now_wall)?;
        let peer = canonical(SocketAddr::new(from.ip(), a.port));
        let numwant = a.numwant.unwrap_or(DEFAULT_NUMWANT).min(MAX_NUMWANT);
        let stopped = a.event == AnnounceEvent::Stopped;
        let now = Instant::now();
        let mut reply = AnnounceReply::default();
        let mut swarms = self.announces.shard(&a.info_hash).lock();
        let swarm = swarms.entry((g, a.info_hash)).or_default();
        swarm.exporters.retain(|e| e.until > now_wall);
        let mut listed: Vec<SocketAddr> = Vec::new();
        for e in &swarm.exporters {
            reply.complete += 1;
            if !stopped && e.addr != peer && listed.len() < numwant && !listed.contains(&e.addr) {
                listed.push(e.addr);
                reply.push(e.addr);
            }
        }
        let seeder = a.left == Some(0) || a.event == AnnounceEvent::Completed;
        if stopped {
            swarm.peers.remove(&peer);
        } else if swarm.peers.len() < MAX_SWARM || swarm.peers.contains_key(&peer) {
            swarm.peers.insert(peer, PeerEntry { seen: now, seeder });
        }
        swarm.peers.retain(|addr, p| {
            let live = now.duration_since(p.seen) < PEER_TTL;
            if live {
                if p.seeder {
                    reply.complete += 1;
                } else {
                    reply.incomplete += 1;
                }
                if !stopped && *addr != peer && reply_len(&reply) < numwant && !listed.contains(addr) {
                    reply.push(*addr);
                }
            }
            live
        });
        if swarm.peers.is_empty() && swarm.exporters.is_empty() {
            swarms.remove(&(g, a.info_hash));
        }
        Ok(reply)
    }
}

fn reply_len(r: &AnnounceReply) -> usize {
    r.peers.len() / 6 + r.peers6.len() / 18
}

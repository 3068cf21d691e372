//! Who needs which torrent: a member's `Want` becomes a `Wanted` notice to
//! the other subscribed members of its group, so that a member keeping a
//! complete version dormant (no live torrent, incoming connections for it
//! refused) wakes it and serves the asker. Notices are hints, not events:
//! nothing is stored, and one missed is asked for again.

use super::group::Notice;
use super::ops::{Auth, Outcome};
use super::Tracker;
use crate::proto::{InfoHash, Response};

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
}

//! The group's members as last heard from the tracker: names, who is
//! online and where its peer listens; and this member's stripe of a
//! version several members fetch at once. Its own lock, taken by no other
//! part.

use super::Stripe;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use titorrent_tracker::proto::{MemberId, MemberInfo};

pub(super) struct Members {
    me: MemberId,
    /// This member's name, until the tracker's list names it.
    me_name: String,
    by_id: Mutex<HashMap<MemberId, MemberInfo>>,
}

impl Members {
    pub fn new(me: MemberId, me_name: String) -> Self {
        Members { me, me_name, by_id: Mutex::new(HashMap::new()) }
    }

    /// Replaces the list with the tracker's (`ListMembers`); returns the
    /// members that are no longer in it.
    pub fn replace_all(&self, ms: Vec<MemberInfo>) -> Vec<MemberInfo> {
        let fresh: HashMap<MemberId, MemberInfo> = ms.into_iter().map(|m| (m.id, m)).collect();
        let mut by_id = self.by_id.lock();
        let old = std::mem::replace(&mut *by_id, fresh);
        old.into_values().filter(|m| !by_id.contains_key(&m.id)).collect()
    }

    /// A member joined or came online.
    pub fn upsert(&self, m: MemberInfo) {
        self.by_id.lock().insert(m.id, m);
    }

    /// Returns the member as it is now, if known.
    pub fn set_offline(&self, id: MemberId) -> Option<MemberInfo> {
        let mut by_id = self.by_id.lock();
        let m = by_id.get_mut(&id)?;
        m.online = false;
        Some(m.clone())
    }

    pub fn remove(&self, id: MemberId) -> Option<MemberInfo> {
        self.by_id.lock().remove(&id)
    }

    pub fn list(&self) -> Vec<MemberInfo> {
        self.by_id.lock().values().cloned().collect()
    }

    /// A member's name; "member-N" for one not heard of.
    pub fn name(&self, id: MemberId) -> String {
        self.by_id.lock().get(&id).map(|m| m.name.clone()).unwrap_or_else(|| {
            if id == self.me { self.me_name.clone() } else { format!("member-{id}") }
        })
    }

    /// Names of the members online, sorted.
    pub fn online_names(&self) -> Vec<String> {
        let mut on: Vec<String> = self.by_id.lock().values().filter(|m| m.online).map(|m| m.name.clone()).collect();
        on.sort();
        on
    }

    /// Where the other online members' peers listen, those of `first`
    /// ahead of the others in its order (a version's author and the members known to hold it: whom a small
    /// version's fetch asks first).
    pub fn peers_first(&self, first: &[MemberId]) -> Vec<SocketAddr> {
        let mut online: Vec<(usize, SocketAddr)> = self
            .by_id
            .lock()
            .values()
            .filter(|m| m.online && m.id != self.me)
            .filter_map(|m| Some((first.iter().position(|f| *f == m.id).unwrap_or(usize::MAX), m.peer_addr?)))
            .collect();
        online.sort_by_key(|(rank, _)| *rank);
        online.into_iter().map(|(_, a)| a).collect()
    }

    /// This member's stripe of a version `author` published: its rank among
    /// the online members other than the author, by member id. Those are the
    /// members that fetch it at the same time when replication is on.
    pub fn stripe(&self, author: Option<MemberId>) -> Stripe {
        let mut fetchers: Vec<MemberId> = self
            .by_id
            .lock()
            .values()
            .filter(|m| (m.online || m.id == self.me) && Some(m.id) != author)
            .map(|m| m.id)
            .collect();
        if !fetchers.contains(&self.me) {
            fetchers.push(self.me);
        }
        fetchers.sort_unstable();
        let index = fetchers.iter().position(|m| *m == self.me).unwrap_or(0);
        Stripe { index: index as u32, count: fetchers.len() as u32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, online: bool) -> MemberInfo {
        MemberInfo {
            id: MemberId(id),
            name: name.into(),
            online,
            peer_addr: Some(SocketAddr::from(([127, 0, 0, 1], 4000 + id as u16))),
            key: titorrent_tracker::proto::Fingerprint([0; 32]),
        }
    }

    #[test]
    fn stripes_rank_the_online_fetchers_but_the_author() {
        let ms = Members::new(MemberId(5), "me".into());
        assert_eq!(ms.stripe(None), Stripe::WHOLE, "alone");
        ms.replace_all(vec![member(2, "ana", true), member(3, "bob", true), member(9, "cy", false)]);
        assert_eq!(ms.stripe(Some(MemberId(2))), Stripe { index: 1, count: 2 });
        assert_eq!(ms.stripe(None), Stripe { index: 2, count: 3 });
        ms.set_offline(MemberId(3));
        assert_eq!(ms.stripe(Some(MemberId(2))), Stripe { index: 0, count: 1 });
    }

    #[test]
    fn the_author_and_holders_come_first_among_the_online_peers() {
        let ms = Members::new(MemberId(5), "me".into());
        let ms_list = (1..=8).map(|i| member(i, "m", i != 4)).collect();
        ms.replace_all(ms_list);
        let addr = |id: u16| SocketAddr::from(([127, 0, 0, 1], 4000 + id));
        let got = ms.peers_first(&[MemberId(7), MemberId(4), MemberId(2)]);
        assert_eq!(&got[..2], &[addr(7), addr(2)], "author, then the online holder");
        assert_eq!(got.len(), 6, "every online member but me, once");
        assert!(!got.contains(&addr(4)) && !got.contains(&addr(5)));
    }

    #[test]
    fn names_peers_and_leaving() {
        let ms = Members::new(MemberId(5), "me".into());
        ms.replace_all(vec![member(2, "ana", true), member(5, "me", true)]);
        ms.upsert(member(3, "bob", false));
        assert_eq!(ms.name(MemberId(3)), "bob");
        assert_eq!(ms.name(MemberId(8)), "member-8");
        assert_eq!(ms.online_names(), vec!["ana".to_string(), "me".to_string()]);
        assert_eq!(ms.peers_first(&[]), vec![SocketAddr::from(([127, 0, 0, 1], 4002))], "online others only");
        ms.remove(MemberId(2));
        assert!(ms.peers_first(&[]).is_empty());
        assert_eq!(ms.list().len(), 2);
    }
}

//! What each request does: membership (create group, invite, join,
//! authenticate, presence, leave) and the file table (create, lock, renew,
//! unlock, explicit locks, publish, torrents); deletes and renames are in
//! [`super::tree`], versions in [`super::versions`], the log in
//! [`super::log`]. Every operation here is synchronous: it runs
//! under one group mutex and returns its call's answer (the type
//! `crate::calls` names for the request; the connection makes it a
//! `Response`) plus, when the answer promises durability, a [`Ticket`] the
//! connection waits on before writing it.
//!
//! A member locking a file it already holds is refused like anyone else
//! (`Locked` naming itself): a lease is owned by one writer, and the
//! mount daemon shares it between its own handles. A daemon that lost its
//! lease id (crash) waits for the lease to run out. The same holds for an
//! explicit lock: it is refused while the caller holds an ordinary lease.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::commit::Ticket;
use super::group::{Group, GroupState, MemberState, Txn};
use super::store::{InviteRec, LockRec, MemberRec, Role, WriteSet};
use super::{now_ms, Tracker};
use crate::calls::{Authenticated, FileAnswer, GroupCreated, Invite, Joined};
use crate::proto::{
    EventKind, FileEntry, Owner, FileId, FileKind, Fingerprint, GroupId, InfoHash, Lease, LeaseId, MemberId, MemberInfo,
    ProtoError, Seq, shared_mode, UnixMillis, Version, VersionInfo,
};

/// The longest an explicit lock lasts (and what `ttl_ms` 0 asks for).
pub(crate) const MAX_EXPLICIT_LOCK_MS: u64 = 7 * 24 * 3600 * 1000;
const DEFAULT_INVITE_TTL_MS: u64 = 24 * 3600 * 1000;
const MAX_INVITE_TTL_MS: u64 = 365 * 24 * 3600 * 1000;
const MAX_LABEL_LEN: usize = 128;

/// A handler's result: the answer of its call, and the ticket to wait on
/// before sending it when it promises durability.
pub(crate) type Outcome<A> = Result<(A, Option<Ticket>), ProtoError>;

/// A connection's authenticated identity. While it exists the member counts
/// as online; dropping it may take the member offline.
pub(crate) struct Auth {
    tracker: Arc<Tracker>,
    pub group: Arc<Group>,
    pub member: MemberId,
    /// Cancelled when the member leaves the group (the same token for all
    /// its connections): the identity is no longer good for anything.
    pub revoked: CancellationToken,
    /// The BitTorrent address this connection authenticated with (an
    /// unspecified IP replaced by the connection's), if it gave one.
    pub peer: Option<SocketAddr>,
    /// Where the connection comes from.
    pub remote: SocketAddr,
}

impl Auth {
    /// The group's state, locked, for a request of this member; refused
    /// once it has left. `leave` revokes under this same mutex, so a
    /// request that passed the connection's check just before cannot act
    /// (take a lock, create a file) for a member that is gone.
    pub fn state(&self) -> Result<MutexGuard<'_, GroupState>, ProtoError> {
        let st = self.group.state.lock();
        if self.revoked.is_cancelled() {
            return Err(ProtoError::NotAuthenticated);
        }
        Ok(st)
    }
}

impl Drop for Auth {
    fn drop(&mut self) {
        self.tracker.detach(&self.group, self.member);
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_label(what: &str, s: &str) -> Result<(), ProtoError> {
    if s.trim().is_empty() || s.len() > MAX_LABEL_LEN || s.chars().any(char::is_control) {
        return Err(ProtoError::BadRequest(format!(
            "{what} must be 1 to {MAX_LABEL_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// A member's BitTorrent address: the IP its connection comes from (a
/// member cannot send the others to dial someone else's address), the
/// port it reports.
fn fix_peer(given: Option<SocketAddr>, remote: SocketAddr) -> Option<SocketAddr> {
    given.map(|a| SocketAddr::new(remote.ip(), a.port()))
}

/// A new entry's size and mode. A symbolic link's content is its target:
/// its length is its size, and its permission bits mean nothing (always
/// 0o777, as on Linux). Other modes keep what [`shared_mode`] keeps.
fn size_and_mode(kind: &FileKind, mode: u32) -> Result<(u64, u32), ProtoError> {
    match kind {
        FileKind::Symlink(target) => {
            crate::proto::validate_link_target(target)?;
            Ok((target.len() as u64, 0o777))
        }
        FileKind::Link(_) => Ok((0, 0)),
        FileKind::File | FileKind::Dir => Ok((0, shared_mode(kind, mode))),
    }
}

fn lease_of(f: FileId, rec: &LockRec, version: Version) -> Lease {
    Lease { id: rec.lease, file: f, expires: rec.expires, version }
}

impl Tracker {
    // ---- membership -------------------------------------------------

    pub(crate) fn create_group(
        self: &Arc<Self>,
        group_name: String,
        member_name: String,
        key: Fingerprint,
        peer_addr: Option<SocketAddr>,
        remote: SocketAddr,
    ) -> Result<(GroupCreated, Option<Ticket>, Auth), ProtoError> {
        check_label("group name", &group_name)?;
        check_label("member name", &member_name)?;
        let now = now_ms();
        let g = GroupId(self.next_group.fetch_add(1, Ordering::Relaxed));
        let m = MemberId(self.next_member.fetch_add(1, Ordering::Relaxed));
        let rec = MemberRec { group: g, name: member_name, key, peer_addr: fix_peer(peer_addr, remote), role: Role::Owner };
        let root = FileEntry {
            id: FileId::ROOT,
            parent: FileId::ROOT,
            name: String::new(),
            kind: FileKind::Dir,
            size: 0,
            mtime: now,
            mode: 0o755,
            version: Version(0),
            info_hash: None,
            author: m,
            owner: Owner::default(),
            ctime: now,
        };
        let group = Arc::new(Group::new(g, GroupState::new(group_name)));
        {
            let mut st = group.state.lock();
            let mut txn = Txn::new(g, &st, now);
            txn.write_group_rec();
            txn.w.put_member(m, &rec)?;
            txn.w.put_file(g, &root)?;
            txn.event(m, EventKind::FileCreated(root.clone()))?;
            let joined =
                MemberInfo { id: m, name: rec.name.clone(), online: false, peer_addr: rec.peer_addr, key: rec.key };
            txn.event(m, EventKind::MemberJoined(joined))?;
            self.commit(&group, &mut st, txn, false)?;
            st.insert_file(root);
            st.members.insert(m, MemberState::new(rec));
        }
        self.groups.write().insert(g, group.clone());
        self.announces.admit(g, m);
        tracing::info!(group = %g, member = %m, "group created");
        let (ticket, auth) = self.attach(&group, m, peer_addr, remote, true)?;
        Ok((GroupCreated { group: g, member: m }, ticket, auth))
    }

    pub(crate) fn join(
        self: &Arc<Self>,
        g: GroupId,
        invite: &str,
        member_name: String,
        key: Fingerprint,
        peer_addr: Option<SocketAddr>,
        remote: SocketAddr,
    ) -> Result<(Joined, Option<Ticket>, Auth), ProtoError> {
        check_label("member name", &member_name)?;
        let group = self.group(g).ok_or(ProtoError::BadInvite)?;
        let code_hash = sha256(invite.as_bytes());
        let now = now_ms();
        let m;
        {
            let mut st = group.state.lock();
            let inv = match self.store.invite(&code_hash)? {
                Some(inv) if inv.group == g && inv.expires > now && inv.uses_left > 0 => inv,
                _ => return Err(ProtoError::BadInvite),
            };
            m = MemberId(self.next_member.fetch_add(1, Ordering::Relaxed));
            let rec = MemberRec { group: g, name: member_name, key, peer_addr: fix_peer(peer_addr, remote), role: Role::Member };
            let mut txn = Txn::new(g, &st, now);
            if inv.uses_left <= 1 {
                txn.w.del_invite(&code_hash);
            } else {
                txn.w.put_invite(&code_hash, &InviteRec { uses_left: inv.uses_left - 1, ..inv })?;
            }
            txn.w.put_member(m, &rec)?;
            let joined =
                MemberInfo { id: m, name: rec.name.clone(), online: false, peer_addr: rec.peer_addr, key: rec.key };
            txn.event(m, EventKind::MemberJoined(joined))?;
            self.commit(&group, &mut st, txn, false)?;
            st.members.insert(m, MemberState::new(rec));
        }
        self.announces.admit(g, m);
        tracing::info!(group = %g, member = %m, "member joined");
        let (ticket, auth) = self.attach(&group, m, peer_addr, remote, true)?;
        Ok((Joined { member: m }, ticket, auth))
    }

    /// `key` is the fingerprint of the certificate the connection showed
    /// (and proved it holds the key of) in its TLS handshake.
    pub(crate) fn authenticate(
        self: &Arc<Self>,
        g: GroupId,
        m: MemberId,
        key: &Fingerprint,
        peer_addr: Option<SocketAddr>,
        remote: SocketAddr,
    ) -> Result<(Authenticated, Auth), ProtoError> {
        // Same work whether or not group and member exist: compare.
        const NO_MEMBER: [u8; 32] = [0xa5; 32];
        let group = self.group(g);
        let stored = group.as_ref().and_then(|gr| gr.state.lock().members.get(&m).map(|ms| ms.rec.key.0));
        let matches = ct_eq(&key.0, stored.as_ref().unwrap_or(&NO_MEMBER));
        let group = match group {
            Some(gr) if matches && stored.is_some() => gr,
            _ => return Err(ProtoError::NotAuthenticated),
        };
        let (_, auth) = self.attach(&group, m, peer_addr, remote, false)?;
        // (The guard is released before `auth` could drop: its Drop locks.)
        let answer = {
            let st = group.state.lock();
            st.member_info(m).map(|member| Authenticated { member, group_name: st.name.clone() })
        };
        Ok((answer.ok_or(ProtoError::NotAuthenticated)?, auth))
    }

    /// Counts one more connection of `m`; emits `MemberOnline` when it comes
    /// online or reports a new peer address.
    fn attach(
        self: &Arc<Self>,
        group: &Arc<Group>,
        m: MemberId,
        peer_addr: Option<SocketAddr>,
        remote: SocketAddr,
        want_ticket: bool,
    ) -> Result<(Option<Ticket>, Auth), ProtoError> {
        let mut st = group.state.lock();
        let ms = st.members.get(&m).ok_or(ProtoError::NotAuthenticated)?;
        let given = fix_peer(peer_addr, remote);
        let peer = given.or(ms.rec.peer_addr);
        let changed = peer != ms.rec.peer_addr;
        let coming_online = ms.conns == 0;
        let mut txn = Txn::new(group.id, &st, now_ms());
        let mut rec = ms.rec.clone();
        rec.peer_addr = peer;
        if changed {
            txn.w.put_member(m, &rec)?;
        }
        if changed || coming_online {
            let info = MemberInfo { id: m, name: rec.name.clone(), online: true, peer_addr: peer, key: rec.key };
            txn.event(m, EventKind::MemberOnline(info))?;
        }
        let ticket = self.commit(group, &mut st, txn, want_ticket)?;
        let ms = st.members.get_mut(&m).ok_or(ProtoError::NotAuthenticated)?;
        ms.rec = rec;
        ms.conns += 1;
        let revoked = ms.revoked.clone();
        Ok((ticket, Auth { tracker: self.clone(), group: group.clone(), member: m, revoked, peer: given, remote }))
    }

    /// Counts one connection of `m` less; emits `MemberOffline` at zero.
    fn detach(&self, group: &Arc<Group>, m: MemberId) {
        let mut st = group.state.lock();
        let Some(ms) = st.members.get_mut(&m) else { return };
        ms.conns = ms.conns.saturating_sub(1);
        if ms.conns > 0 {
            return;
        }
        let mut txn = Txn::new(group.id, &st, now_ms());
        let res = txn
            .event(m, EventKind::MemberOffline { member: m })
            .map_err(ProtoError::from)
            .and_then(|()| self.commit(group, &mut st, txn, false));
        if let Err(e) = res {
            tracing::warn!(member = %m, error = %e, "cannot record member offline");
        }
    }

    pub(crate) fn create_invite(&self, auth: &Auth, ttl_ms: u64, uses: u32) -> Outcome<Invite> {
        let ttl = if ttl_ms == 0 { DEFAULT_INVITE_TTL_MS } else { ttl_ms.min(MAX_INVITE_TTL_MS) };
        let expires = now_ms().saturating_add(ttl);
        let mut raw = [0u8; 16];
        OsRng.fill_bytes(&mut raw);
        let code = hex::encode(raw);
        let rec = InviteRec { group: auth.group.id, expires, uses_left: uses.max(1), by: auth.member };
        let mut w = WriteSet::new();
        w.put_invite(&sha256(code.as_bytes()), &rec)?;
        self.store.apply(w)?;
        let ticket = self.committer.submit(None, Vec::new(), true);
        tracing::info!(group = %auth.group.id, member = %auth.member, uses = rec.uses_left, "invite created");
        Ok((Invite { code, expires }, ticket))
    }

    pub(crate) fn list_members(&self, auth: &Auth) -> Outcome<Vec<MemberInfo>> {
        let st = auth.state()?;
        let members = st.members.keys().filter_map(|m| st.member_info(*m)).collect();
        Ok((members, None))
    }

    /// Removes the caller from its group: its locks are released (one
    /// `Unlocked` each), its record goes (`MemberLeft`), the invites it
    /// made die, and every connection authenticated as it stops being so
    /// (the caller's own connection stays open, unauthenticated; the
    /// others are closed).
    pub(crate) fn leave(&self, auth: &Auth) -> Outcome<()> {
        let mut st = auth.state()?;
        if !st.members.contains_key(&auth.member) {
            return Err(ProtoError::NotAuthenticated);
        }
        self.drop_member(&auth.group, &mut st, auth.member, auth.member)
    }

    /// Another member goes, as if it had left (`leave`), at the owner's or
    /// an admin's word; an admin cannot remove the owner or another admin.
    pub(crate) fn remove_member(&self, auth: &Auth, member: MemberId) -> Outcome<()> {
        let mut st = auth.state()?;
        let caller = st.members.get(&auth.member).map(|m| m.rec.role).ok_or(ProtoError::NotAuthenticated)?;
        let target = st.members.get(&member).map(|m| m.rec.role).ok_or(ProtoError::NoSuchMember)?;
        if caller < Role::Admin || (target >= Role::Admin && caller != Role::Owner) || member == auth.member {
            return Err(ProtoError::NotAllowed);
        }
        tracing::info!(group = %auth.group.id, member = %member, by = %auth.member, "member removed");
        self.drop_member(&auth.group, &mut st, member, auth.member)
    }

    /// Makes a member an admin or a plain member again (the owner only).
    pub(crate) fn set_admin(&self, auth: &Auth, member: MemberId, admin: bool) -> Outcome<()> {
        let (group, mut st) = (&auth.group, auth.state()?);
        if st.members.get(&auth.member).map(|m| m.rec.role) != Some(Role::Owner) || member == auth.member {
            return Err(ProtoError::NotAllowed);
        }
        let mut rec = st.members.get(&member).map(|m| m.rec.clone()).ok_or(ProtoError::NoSuchMember)?;
        rec.role = if admin { Role::Admin } else { Role::Member };
        let mut w = WriteSet::new();
        w.put_member(member, &rec)?;
        self.store.apply(w)?;
        if let Some(ms) = st.members.get_mut(&member) {
            ms.rec.role = rec.role;
        }
        tracing::info!(group = %group.id, %member, admin, "role changed");
        Ok(((), None))
    }

    /// Breaks whoever's lock is on `file` (owner or admin).
    pub(crate) fn force_unlock(&self, auth: &Auth, file: FileId) -> Outcome<()> {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        if st.members.get(&m).map(|ms| ms.rec.role) < Some(Role::Admin) {
            return Err(ProtoError::NotAllowed);
        }
        if !st.files.contains_key(&file) {
            return Err(ProtoError::NoSuchFile);
        }
        let Some(holder) = st.locks.get(&file).map(|r| r.holder) else { return Err(ProtoError::NoLease) };
        let mut txn = Txn::new(group.id, &st, now_ms());
        txn.w.del_lock(group.id, file);
        txn.event(m, EventKind::Unlocked { file })?;
        self.commit(group, &mut st, txn, false)?;
        st.remove_lock(file);
        tracing::info!(group = %group.id, %file, %holder, by = %m, "lock broken");
        Ok(((), None))
    }

    /// `m`'s locks are released (one `Unlocked` each), its record goes
    /// (`MemberLeft`, caused by `by`), and every connection authenticated
    /// as it is closed or unauthenticated.
    fn drop_member(&self, group: &Arc<Group>, st: &mut GroupState, m: MemberId, by: MemberId) -> Outcome<()> {
        let mut held: Vec<FileId> = st.locks.iter().filter(|(_, r)| r.holder == m).map(|(f, _)| *f).collect();
        held.sort();
        let mut txn = Txn::new(group.id, st, now_ms());
        for f in &held {
            txn.w.del_lock(group.id, *f);
            txn.event(by, EventKind::Unlocked { file: *f })?;
        }
        txn.w.del_member(m);
        // Its invites die with it.
        for k in self.store.invites_by(m)? {
            txn.w.del_invite_key(&k);
        }
        // Ids are never reused, even the highest after a reopen.
        txn.w.put_next_member(self.next_member.load(Ordering::Relaxed))?;
        txn.event(by, EventKind::MemberLeft { member: m })?;
        let ticket = self.commit(group, st, txn, true)?;
        for f in held {
            st.remove_lock(f);
        }
        if let Some(ms) = st.members.remove(&m) {
            ms.revoked.cancel();
        }
        self.announces.revoke(m);
        tracing::info!(group = %group.id, member = %m, "member left");
        Ok(((), ticket))
    }

    // ---- file table -------------------------------------------------

    /// The whole file table and the seq it is current at; the reply waits
    /// until that seq is durable.
    pub(crate) fn file_table(&self, group: &Group) -> (Seq, Vec<crate::proto::FileEntry>, Option<Ticket>) {
        let (seq, files) = {
            let st = group.state.lock();
            (st.current_seq(), st.files.values().cloned().collect())
        };
        (seq, files, self.committer.durable_at(group, seq))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_file(
        &self,
        auth: &Auth,
        parent: FileId,
        name: String,
        kind: FileKind,
        mode: u32,
        lock: bool,
        owner: Owner,
    ) -> Outcome<FileAnswer> {
        crate::proto::validate_name(&name)?;
        crate::proto::validate_owner(&owner)?;
        let (size, mode) = size_and_mode(&kind, mode)?;
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        st.check_free_name(parent, &name)?;
        if let FileKind::Link(target) = kind {
            match st.files.get(&target) {
                None => return Err(ProtoError::NoSuchFile),
                Some(t) if !matches!(t.kind, FileKind::File | FileKind::Symlink(_)) => {
                    return Err(ProtoError::BadRequest("a hard link names a regular file or a symbolic link".into()))
                }
                Some(_) => {}
            }
        }
        let now = now_ms();
        let mut txn = Txn::new(group.id, &st, now);
        let id = txn.alloc_file();
        let entry = FileEntry {
            id,
            parent,
            name,
            kind,
            size,
            mtime: now,
            mode,
            version: Version(0),
            info_hash: None,
            author: m,
            owner,
            ctime: now,
        };
        txn.w.put_file(group.id, &entry)?;
        let is_file = entry.kind == FileKind::File;
        let v0 = is_file.then_some(VersionInfo {
            version: entry.version,
            size: 0,
            mtime: now,
            info_hash: None,
            author: m,
            at: now,
        });
        if let Some(v0) = &v0 {
            txn.w.put_version(group.id, id, v0)?;
        }
        txn.event(m, EventKind::FileCreated(entry.clone()))?;
        let lock = if lock && is_file {
            let rec = LockRec {
                holder: m,
                lease: st.new_lease_id(),
                since: now,
                expires: now.saturating_add(self.lease_ttl_ms()),
                explicit: false,
            };
            txn.w.put_lock(group.id, id, &rec)?;
            txn.event(m, EventKind::Locked { file: id, holder: st.holder(&rec) })?;
            Some(rec)
        } else {
            None
        };
        let ticket = self.commit(group, &mut st, txn, true)?;
        st.insert_file(entry.clone());
        if let Some(v0) = v0 {
            st.versions.insert(id, [(v0.version, v0)].into());
        }
        let lease = lock.map(|rec| {
            let lease = lease_of(id, &rec, Version(0));
            st.insert_lock(id, rec);
            lease
        });
        Ok((FileAnswer { entry, lease }, ticket))
    }

    /// A lease-length lock, answered from memory: the grant's event and
    /// record wait in the group for its next write (see `group.rs`). A
    /// grant lost in a crash only makes the holder's publish fail with
    /// `NoLease`, and that edit becomes a conflict copy, so no content is
    /// at risk and opening for write does not wait for the disk. (Its
    /// `Locked` event still reaches other members only once flushed.)
    pub(crate) fn lock(&self, auth: &Auth, file: FileId) -> Outcome<Lease> {
        self.lock_for(auth, file, self.lease_ttl_ms(), false)
    }

    /// A lock that lasts `ttl_ms` (0: the longest allowed: the group's
    /// limit, else a week) without renewal.
    pub(crate) fn lock_explicit(&self, auth: &Auth, file: FileId, ttl_ms: u64) -> Outcome<Lease> {
        let limit = match auth.state()?.max_lock_ms {
            0 => MAX_EXPLICIT_LOCK_MS,
            l => l.min(MAX_EXPLICIT_LOCK_MS),
        };
        let ttl = if ttl_ms == 0 { limit } else { ttl_ms.min(limit) };
        // A user's explicit lock is meant to survive anything: durable first.
        self.lock_for(auth, file, ttl, true)
    }

    /// Sets the longest explicit lock of the group (owner or admin; 0:
    /// the tracker's maximum). Locks already held keep their expiry.
    pub(crate) fn set_lock_limit(&self, auth: &Auth, max_ms: u64) -> Outcome<()> {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        if st.members.get(&m).map(|ms| ms.rec.role) < Some(Role::Admin) {
            return Err(ProtoError::NotAllowed);
        }
        st.max_lock_ms = max_ms.min(MAX_EXPLICIT_LOCK_MS);
        let mut txn = Txn::new(group.id, &st, now_ms());
        txn.write_group_rec();
        self.commit(group, &mut st, txn, false)?;
        tracing::info!(group = %group.id, max_ms, by = %m, "lock limit set");
        Ok(((), None))
    }

    /// `explicit` locks are durable before the reply; ordinary ones are not.
    fn lock_for(&self, auth: &Auth, file: FileId, ttl_ms: u64, explicit: bool) -> Outcome<Lease> {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let version = match st.files.get(&file) {
            None => return Err(ProtoError::NoSuchFile),
            Some(e) if e.kind == FileKind::Dir => {
                return Err(ProtoError::BadRequest("a directory cannot be locked".into()))
            }
            Some(e) => e.version,
        };
        let now = now_ms();
        let mut txn = if explicit { Txn::new(group.id, &st, now) } else { Txn::lazy(group.id, &st, now) };
        if let Some(cur) = st.locks.get(&file) {
            if cur.expires > now && cur.explicit && cur.holder == m && !explicit {
                // The holder of an explicit lock writes under it.
                return Ok((lease_of(file, cur, version), None));
            }
            if cur.expires > now {
                return Err(ProtoError::Locked(st.holder(cur)));
            }
            // Expired but not swept yet: release it the way the sweeper would.
            txn.event(MemberId(0), EventKind::Unlocked { file })?;
        }
        let rec =
            LockRec { holder: m, lease: st.new_lease_id(), since: now, expires: now.saturating_add(ttl_ms), explicit };
        if explicit {
            txn.w.put_lock(group.id, file, &rec)?;
        }
        txn.event(m, EventKind::Locked { file, holder: st.holder(&rec) })?;
        let ticket = self.commit(group, &mut st, txn, explicit)?;
        let lease = lease_of(file, &rec, version);
        st.insert_lock(file, rec);
        if !explicit {
            st.dirty_locks.insert(file);
        }
        Ok((lease, ticket))
    }

    /// Extends a live lease of the caller (never shortens one: an explicit
    /// lock may run longer than the ttl). Answered from memory, written
    /// before the next flush: a renewal lost in a crash is covered by the
    /// grace period at open.
    pub(crate) fn renew(&self, auth: &Auth, lease: LeaseId) -> Outcome<Lease> {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let now = now_ms();
        let (file, cur) = st.live_lease(lease, m, now).ok_or(ProtoError::NoLease)?;
        let rec = LockRec { expires: now.saturating_add(self.lease_ttl_ms()).max(cur.expires), ..cur.clone() };
        let version = st.files.get(&file).map(|e| e.version).unwrap_or(Version(0));
        let reply = lease_of(file, &rec, version);
        st.insert_lock(file, rec);
        st.dirty_locks.insert(file);
        // Tells the committer that this group has a lease to write.
        self.committer.submit(Some(group.clone()), Vec::new(), false);
        Ok((reply, None))
    }

    /// Releases a lease of the caller (also one that just expired and was
    /// not swept yet: the caller wanted it released either way). Answered
    /// from memory; the record goes before the next flush.
    pub(crate) fn unlock(&self, auth: &Auth, lease: LeaseId) -> Outcome<()> {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let file = *st.leases.get(&lease).ok_or(ProtoError::NoLease)?;
        match st.locks.get(&file) {
            // A close under an explicit lock leaves it held.
            Some(rec) if rec.holder == m && rec.lease == lease && rec.explicit => return Ok(((), None)),
            Some(rec) if rec.holder == m && rec.lease == lease => {}
            _ => return Err(ProtoError::NoLease),
        }
        let mut txn = Txn::lazy(group.id, &st, now_ms());
        txn.event(m, EventKind::Unlocked { file })?;
        self.commit(group, &mut st, txn, false)?;
        st.remove_lock(file);
        st.dirty_locks.insert(file);
        Ok(((), None))
    }

    /// Releases the caller's lock on `file` whatever its lease (also one
    /// that just expired and was not swept yet). Not flushed, like
    /// `unlock`, but written with its event (it may end an explicit lock).
    pub(crate) fn unlock_file(&self, auth: &Auth, file: FileId) -> Outcome<()> {
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        if !st.files.contains_key(&file) {
            return Err(ProtoError::NoSuchFile);
        }
        match st.locks.get(&file) {
            Some(rec) if rec.holder == m => {}
            _ => return Err(ProtoError::NoLease),
        }
        let mut txn = Txn::new(group.id, &st, now_ms());
        txn.w.del_lock(group.id, file);
        txn.event(m, EventKind::Unlocked { file })?;
        self.commit(group, &mut st, txn, false)?;
        st.remove_lock(file);
        Ok(((), None))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn publish(
        &self,
        auth: &Auth,
        file: FileId,
        base: Version,
        lease: LeaseId,
        size: u64,
        mtime: UnixMillis,
        info_hash: Option<InfoHash>,
        torrent: Vec<u8>,
        keep_lock: bool,
    ) -> Outcome<FileEntry> {
        match (info_hash.is_some(), size > 0, torrent.is_empty()) {
            (true, true, false) | (false, false, true) => {}
            (true, false, _) => return Err(ProtoError::BadRequest("an empty file has no info hash".into())),
            (false, true, _) => return Err(ProtoError::BadRequest("a non-empty file needs an info hash".into())),
            (true, true, true) => return Err(ProtoError::BadRequest("info hash given without a torrent".into())),
            (false, false, false) => return Err(ProtoError::BadRequest("torrent given for an empty file".into())),
        }
        let (group, m) = (&auth.group, auth.member);
        let mut st = auth.state()?;
        let cur = match st.files.get(&file) {
            None => return Err(ProtoError::NoSuchFile),
            Some(e) if e.kind != FileKind::File => {
                return Err(ProtoError::BadRequest("only a regular file has content to publish".into()))
            }
            Some(e) => e.clone(),
        };
        // A retry of the publish that made the current version, whose reply
        // was lost with its connection (or with a tracker crash, which
        // forgets `published_by`: then the same author, base and content
        // identify it).
        if base.0.checked_add(1) == Some(cur.version.0)
            && cur.author == m
            && (st.published_by.get(&file) == Some(&lease) || (cur.info_hash == info_hash && cur.size == size))
        {
            let ticket = self.committer.durable_at(group, st.current_seq());
            return Ok((cur, ticket));
        }
        if base != cur.version {
            return Err(ProtoError::StaleVersion { base, current: cur.version });
        }
        let now = now_ms();
        match st.live_lease(lease, m, now) {
            Some((f, _)) if f == file => {}
            _ => return Err(ProtoError::NoLease),
        }
        if let Some(ih) = info_hash {
            super::metainfo::check(&torrent, size, ih)?;
        }
        let new = FileEntry {
            version: Version(cur.version.0 + 1),
            size,
            mtime,
            info_hash,
            author: m,
            ctime: now,
            ..cur
        };
        // Publishing under an explicit lock keeps it.
        let keep_lock = keep_lock || st.locks.get(&file).is_some_and(|r| r.explicit);
        let mut txn = Txn::new(group.id, &st, now);
        txn.w.put_file(group.id, &new)?;
        let pushed_out = self.add_version(&mut txn, &st, &new, torrent)?;
        txn.event(m, EventKind::FileUpdated(new.clone()))?;
        if !keep_lock {
            txn.w.del_lock(group.id, file);
            txn.event(m, EventKind::Unlocked { file })?;
        }
        let ticket = self.commit(group, &mut st, txn, true)?;
        st.files.insert(file, new.clone());
        st.keep_version(&new, now, &pushed_out);
        st.published_by.insert(file, lease);
        if !keep_lock {
            st.remove_lock(file);
        }
        Ok((new, ticket))
    }

    pub(crate) fn get_torrent(&self, auth: &Auth, file: FileId, version: Version) -> Outcome<Vec<u8>> {
        if !auth.state()?.files.contains_key(&file) {
            return Err(ProtoError::NoSuchFile);
        }
        match self.store.torrent(auth.group.id, file, version)? {
            Some(bytes) => Ok((bytes, None)),
            None => Err(ProtoError::NoTorrent),
        }
    }

    // ---- background -------------------------------------------------

    /// Releases every lease that expired by `now`, as `MemberId(0)`.
    pub(crate) fn sweep_leases(&self, now: UnixMillis) {
        for group in self.all_groups() {
            let mut st = group.state.lock();
            let expired: Vec<FileId> =
                st.locks.iter().filter(|(_, r)| r.expires <= now).map(|(f, _)| *f).collect();
            if expired.is_empty() {
                continue;
            }
            let mut txn = Txn::new(group.id, &st, now);
            let mut res = Ok(());
            for f in &expired {
                txn.w.del_lock(group.id, *f);
                res = res.and(txn.event(MemberId(0), EventKind::Unlocked { file: *f }));
            }
            let res = res.map_err(ProtoError::from).and_then(|()| self.commit(&group, &mut st, txn, false));
            match res {
                Ok(_) => {
                    for f in expired {
                        tracing::debug!(group = %group.id, file = %f, "lease expired");
                        st.remove_lock(f);
                    }
                }
                Err(e) => tracing::warn!(group = %group.id, error = %e, "cannot release expired leases"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_ip_is_the_connections() {
        let remote: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let fixed = fix_peer(Some("0.0.0.0:6881".parse().unwrap()), remote);
        assert_eq!(fixed, Some("10.1.2.3:6881".parse().unwrap()));
        // Another address than the connection's is not believed.
        let claimed = fix_peer(Some("192.168.1.9:6881".parse().unwrap()), remote);
        assert_eq!(claimed, Some("10.1.2.3:6881".parse().unwrap()));
        assert_eq!(fix_peer(None, remote), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(&[1; 32], &[1; 32]));
        let mut b = [1; 32];
        b[31] = 2;
        assert!(!ct_eq(&[1; 32], &b));
    }

    #[test]
    fn labels() {
        assert!(check_label("x", "alice").is_ok());
        assert!(check_label("x", "  ").is_err());
        assert!(check_label("x", "a\nb").is_err());
        assert!(check_label("x", &"a".repeat(200)).is_err());
    }
}

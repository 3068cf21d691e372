//! The fakes the folder's tests run against: content kept in memory and a
//! tracker that keeps one file table and lock table in memory.

use super::super::*;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use titorrent_tracker::calls::Call;
use titorrent_tracker::proto::{FileEntry, FileKind, Lease, LeaseId, LockHolder, MemberId, MemberInfo, Owner, ProtoError, Request, Response, Seq};

/// Content kept in memory, addressed by a fake info hash (first bytes of a
/// counter); `local` decides whether a version counts as complete here.
#[derive(Default)]
pub(super) struct FakeContent {
    pub(super) store: Mutex<HashMap<InfoHash, Vec<u8>>>,
    pub(super) local: Mutex<HashSet<InfoHash>>,
    pub(super) dir: Mutex<Option<PathBuf>>,
    pub(super) next: Mutex<u8>,
    /// The delta of every publish, in order.
    pub(super) deltas: Mutex<Vec<Option<Delta>>>,
}

impl Content for Arc<FakeContent> {
    async fn publish(&self, staging: &Path, _name: &str, delta: Option<Delta>) -> Result<PublishedContent, ContentError> {
        self.deltas.lock().push(delta);
        // As the swarm: the bytes are taken, the staging file stays.
        let data = std::fs::read(staging).map_err(ContentError::Io)?;
        let mut n = self.next.lock();
        *n += 1;
        let ih = InfoHash([*n; 20]);
        let size = data.len() as u64;
        self.store.lock().insert(ih, data);
        self.local.lock().insert(ih);
        Ok(PublishedContent { info_hash: ih, torrent: vec![b'd', *n, b'e'], size })
    }
    async fn ensure(&self, info_hash: InfoHash, torrent: &[u8], _peers: Vec<SocketAddr>, _fetch: Fetch) -> Result<(), ContentError> {
        if torrent.get(1) != Some(&info_hash.0[0]) {
            return Err(ContentError::HashMismatch);
        }
        Ok(())
    }
    async fn read(&self, info_hash: InfoHash, offset: u64, len: u32) -> Result<Bytes, ContentError> {
        let store = self.store.lock();
        let d = store.get(&info_hash).ok_or(ContentError::NotFound)?;
        let start = (offset as usize).min(d.len());
        let end = (start + len as usize).min(d.len());
        Ok(Bytes::copy_from_slice(&d[start..end]))
    }
    fn live_count(&self) -> usize {
        0
    }

    fn read_local(&self, _info_hash: InfoHash, _offset: u64, _len: u32) -> Option<Vec<u8>> {
        None
    }

    fn local_path(&self, info_hash: InfoHash) -> Option<PathBuf> {
        if !self.local.lock().contains(&info_hash) {
            return None;
        }
        let dir = self.dir.lock().clone()?;
        let p = dir.join(info_hash.to_string());
        std::fs::write(&p, self.store.lock().get(&info_hash)?).ok()?;
        Some(p)
    }
    fn progress(&self, _info_hash: InfoHash) -> Option<(u64, u64)> {
        None
    }
    fn learn_member(&self, _m: &MemberInfo) {}
    fn forget_member(&self, _id: MemberId, _addr: Option<SocketAddr>) {}
    fn export(&self, _ih: InfoHash, _ttl: Option<Duration>) -> Option<(SocketAddr, SystemTime)> {
        None
    }
    fn exported(&self, _ih: InfoHash) -> Option<(SocketAddr, SystemTime)> {
        None
    }
    fn exports(&self) -> Vec<(InfoHash, SocketAddr, SystemTime)> {
        Vec::new()
    }
    async fn wait_complete(&self, info_hash: InfoHash) -> Result<(), ContentError> {
        self.local.lock().insert(info_hash);
        Ok(())
    }
    async fn forget(&self, info_hash: InfoHash) -> Result<(), ContentError> {
        self.store.lock().remove(&info_hash);
        self.local.lock().remove(&info_hash);
        Ok(())
    }
}

/// A tracker that keeps one file table and lock table in memory.
#[derive(Default)]
pub(super) struct FakeTracker {
    pub(super) files: Mutex<HashMap<FileId, FileEntry>>,
    pub(super) locks: Mutex<HashMap<FileId, (LeaseId, MemberId)>>,
    pub(super) next: Mutex<u64>,
    pub(super) offline: AtomicBool,
    /// Every request is sent and the connection then lost, unanswered.
    pub(super) cut_off: AtomicBool,
    pub(super) publishes: Mutex<Vec<Request>>,
    /// Member name the fake reports as holding foreign locks.
    pub(super) foreign_holder: Mutex<Option<LockHolder>>,
    pub(super) torrents: Mutex<HashMap<(FileId, Version), Vec<u8>>>,
    pub(super) haves: Mutex<Vec<(FileId, Version)>>,
}

pub(super) const ME: MemberId = MemberId(7);

type Answer = Result<Response, CoordError>;

fn refuse(e: ProtoError) -> Answer {
    Err(CoordError::Refused(e))
}

impl Coordinator for Arc<FakeTracker> {
    /// As the tracker link does: the request on the wire, the answer back
    /// through the call's type.
    async fn call_at<C: Call + Send>(&self, c: C) -> Result<(C::Answer, Option<Seq>), CoordError> {
        let answer = C::expect(self.answer(c.into())?).map_err(CoordError::Unexpected)?;
        // Each request is a commit of its own, numbered in order.
        Ok((answer, Some(Seq(*self.next.lock()))))
    }
}

impl FakeTracker {
    fn answer(&self, req: Request) -> Answer {
        if self.offline.load(Ordering::SeqCst) {
            return Err(CoordError::Offline);
        }
        if self.cut_off.load(Ordering::SeqCst) {
            return Err(CoordError::Lost);
        }
        let mut next = self.next.lock();
        *next += 1;
        let n = *next;
        drop(next);
        match req {
            Request::CreateFile { parent, name, kind, mode, lock, owner } => self.create_file(n, parent, name, kind, mode, lock, owner),
            Request::Lock { file } => self.lock_file(n, file),
            Request::Unlock { lease } => {
                self.locks.lock().retain(|_, (l, _)| *l != lease);
                Ok(Response::Ok)
            }
            Request::Renew { lease } => self.renew(lease),
            Request::Publish { .. } => self.publish(req),
            Request::GetTorrent { file, version } => {
                self.torrents.lock().get(&(file, version)).cloned().map(Response::Torrent).ok_or(CoordError::Refused(ProtoError::NoTorrent))
            }
            Request::ListMembers => Ok(Response::Members(vec![])),
            Request::Delete { file } => {
                self.files.lock().remove(&file).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
                Ok(Response::Ok)
            }
            Request::Rename { file, new_parent, new_name, replace } => self.rename(file, new_parent, new_name, replace),
            Request::Have { file, version } => {
                self.haves.lock().push((file, version));
                Ok(Response::Ok)
            }
            Request::SetAttr { file, mode, mtime, owner } => {
                let mut files = self.files.lock();
                let e = files.get_mut(&file).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
                if let Some(m) = mode {
                    e.mode = titorrent_tracker::proto::shared_mode(&e.kind, m);
                }
                e.mtime = mtime.unwrap_or(e.mtime);
                e.owner = owner.unwrap_or_else(|| e.owner.clone());
                e.ctime = e.ctime.max(n);
                Ok(Response::File { entry: e.clone(), lease: None })
            }
            other => Err(CoordError::Protocol(format!("fake tracker does not do {other:?}"))),
        }
    }

    /// Renews any lease, known or not (the model's tests do not test
    /// renewal refusals).
    fn renew(&self, lease: LeaseId) -> Answer {
        let file = self.locks.lock().iter().find(|(_, (l, _))| *l == lease).map_or(FileId(0), |(f, _)| *f);
        let version = self.files.lock().get(&file).map_or(Version(0), |e| e.version);
        Ok(Response::Locked(Lease { id: lease, file, expires: now_ms() + 30_000, version }))
    }

    #[allow(clippy::too_many_arguments)]
    fn create_file(&self, n: u64, parent: FileId, name: String, kind: FileKind, mode: u32, lock: bool, owner: Owner) -> Answer {
        if self.files.lock().values().any(|e| e.parent == parent && e.name == name) {
            return refuse(ProtoError::AlreadyExists);
        }
        let id = FileId(100 + n);
        let mode = titorrent_tracker::proto::shared_mode(&kind, mode); // as the tracker keeps it
        let entry = FileEntry {
            id,
            parent,
            name,
            kind,
            size: 0,
            mtime: 0,
            mode,
            version: Version(0),
            info_hash: None,
            author: ME,
            owner,
            ctime: 0,
        };
        self.files.lock().insert(id, entry.clone());
        let lease = lock.then(|| {
            self.locks.lock().insert(id, (LeaseId(n), ME));
            Lease { id: LeaseId(n), file: id, expires: now_ms() + 30_000, version: Version(0) }
        });
        Ok(Response::File { entry, lease })
    }

    fn lock_file(&self, n: u64, file: FileId) -> Answer {
        if let Some(h) = self.foreign_holder.lock().clone() {
            return refuse(ProtoError::Locked(h));
        }
        if let Some((_, holder)) = self.locks.lock().get(&file) {
            // As the real tracker: locked is locked, whoever asks.
            let h = LockHolder { member: *holder, member_name: "me".into(), since: 0, expires: now_ms() + 30_000 };
            return refuse(ProtoError::Locked(h));
        }
        let version = self.files.lock().get(&file).map(|e| e.version).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
        self.locks.lock().insert(file, (LeaseId(n), ME));
        Ok(Response::Locked(Lease { id: LeaseId(n), file, expires: now_ms() + 30_000, version }))
    }

    fn publish(&self, req: Request) -> Answer {
        let Request::Publish { file, base, lease, size, mtime, info_hash, ref torrent, .. } = req else { unreachable!() };
        self.publishes.lock().push(req.clone());
        let mut files = self.files.lock();
        let e = files.get_mut(&file).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
        if e.version != base {
            return refuse(ProtoError::StaleVersion { base, current: e.version });
        }
        if self.locks.lock().get(&file).map(|(l, _)| *l) != Some(lease) {
            return refuse(ProtoError::NoLease);
        }
        e.version = Version(e.version.0 + 1);
        e.size = size;
        e.mtime = mtime;
        e.info_hash = info_hash;
        self.torrents.lock().insert((file, e.version), torrent.clone());
        self.locks.lock().remove(&file);
        Ok(Response::Published(e.clone()))
    }

    fn rename(&self, file: FileId, new_parent: FileId, new_name: String, replace: bool) -> Answer {
        let mut files = self.files.lock();
        let target = files.values().find(|e| e.parent == new_parent && e.name == new_name).map(|e| e.id);
        match target {
            Some(t) if t != file && !replace => return refuse(ProtoError::AlreadyExists),
            Some(t) if t != file => {
                files.remove(&t);
            }
            _ => {}
        }
        let e = files.get_mut(&file).ok_or(CoordError::Refused(ProtoError::NoSuchFile))?;
        e.parent = new_parent;
        e.name = new_name;
        Ok(Response::Ok)
    }
}

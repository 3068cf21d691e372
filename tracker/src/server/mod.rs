//! The tracker server: sled-backed state, the connection handler, the HTTP
//! announce endpoint and lease expiry.
//!
//! Layout:
//! - [`store`]: sled key layout and records; one atomic batch per request.
//! - [`group`]: a group's in-memory state (file table, locks, members)
//!   behind one mutex; the lock state machine is documented there.
//! - [`ops`]: what each request does to a group: membership and locks.
//! - [`tree`]: delete, rename and shared attributes.
//! - [`versions`]: kept versions of each file, listing and restoring them.
//! - [`peers`]: who needs which torrent, from memory: `Want` requests and
//!   HTTP announces become `Wanted` notices to the group's members;
//!   announce keys and swarms.
//! - [`http`]: the HTTP announce endpoint, on the same port as the binary
//!   protocol (told apart by the first byte).
//! - [`metainfo`]: what a published torrent must be.
//! - [`log`]: reading the action log and pruning it past its retention.
//! - [`commit`]: group commit, then release of events in seq order.
//! - [`conn`] / [`subscribe`]: one client connection; event streaming.
//! - [`table`]: file table answers (snapshots, listings) in bounded parts.
//! - [`sweep`]: lease expiry and log retention.
//! - [`limits`]: connection caps, the pre-authentication deadline and
//!   frame limit, the admin token that creating a group needs.
//! - [`cli`]: the `titorrent-tracker` flags, shared with `titorrent tracker`.
//! - [`private`]: owner-only modes for the data directory (and members' state).
//!
//! Durability: a reply that promises durability (group created, joined,
//! file created, explicit lock granted, published, invite created,
//! deleted, renamed, attributes set, left, restored) and every event a
//! subscriber sees wait for a sled flush; several requests share one
//! flush. Ordinary leases (`Lock`, `Renew`, `Unlock`) and presence changes
//! are answered at once from memory and become durable with the next
//! flush, at most `commit::LAZY_FLUSH` (10 ms) later, or with the first
//! reply after them that waits for one. Losing one in a crash is safe: a
//! lost grant makes its holder's publish fail with `NoLease`, so the edit
//! becomes a conflict copy and no content is lost; a lost renewal or
//! release makes a lease last shorter or longer, and every lock found at
//! open gets one full lease ttl of grace so that holders that reconnect
//! and renew in time keep it. Announce swarms and `Wanted` notices live in
//! memory only (clients re-announce; members ask again).

mod cli;
mod commit;
mod conn;
mod group;
mod http;
mod legacy;
mod limits;
mod log;
mod metainfo;
mod ops;
mod peers;
pub mod private;
mod store;
mod subscribe;
mod sweep;
mod table;
mod trash;
mod tree;
mod versions;

pub use cli::{run, ServeArgs};
pub use limits::Limits;
pub use metainfo::test_torrent;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::proto::{
    FileId, FileKind, Fingerprint, GroupId, ProtoError, ServerFrame, UnixMillis, Version, VersionInfo,
    DEFAULT_LEASE_TTL_MS, PROTOCOL_VERSION,
};
use commit::{CommitQueue, Committer, Ticket};
use group::{Group, GroupState, MemberState, Txn};
use crate::tls::Identity;
use store::{Store, WriteSet};

/// How the tracker is run.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// Where sled keeps the state.
    pub data_dir: PathBuf,
    /// How long a lock lasts unless renewed.
    pub lease_ttl: Duration,
    /// Events older than this are dropped from the log (a subscriber that
    /// far behind gets a snapshot instead).
    pub log_retention: Duration,
    /// Versions kept per file, the current one included (at least 1): each
    /// with its torrent, listed by `ListVersions`, restorable.
    pub keep_versions: usize,
    /// How long a deleted (or replaced) file stays in the trash, restorable
    /// with `Undelete`, before its versions are dropped for good.
    pub trash_retention: Duration,
    /// The file holding the admin token (made at first start if missing);
    /// `None`: `admin-token` in `data_dir`.
    pub admin_token_file: Option<PathBuf>,
    /// Connection caps and what a connection may do before it
    /// authenticates.
    pub limits: Limits,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            data_dir: PathBuf::from("./titorrent-tracker"),
            lease_ttl: Duration::from_millis(DEFAULT_LEASE_TTL_MS),
            log_retention: Duration::from_secs(30 * 24 * 3600),
            keep_versions: 10,
            trash_retention: Duration::from_secs(30 * 24 * 3600),
            admin_token_file: None,
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("cannot open the tracker database in {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("tracker database error")]
    Db(#[from] sled::Error),
    #[error("tracker database is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("the admin token file {path}")]
    AdminToken {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the tracker's key: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The tracker's key and certificate, in its data directory (0600).
pub const IDENTITY_FILE: &str = "tracker-identity.pem";
/// The admin token's file in the data directory, unless configured.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The tracker manager: groups, members, file tables, locks and event logs.
pub struct Tracker {
    cfg: TrackerConfig,
    store: Store,
    groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    next_group: AtomicU64,
    next_member: AtomicU64,
    committer: Committer,
    /// Announce keys and swarms (memory only).
    announces: peers::Announces,
    /// TLS for every client connection: the tracker's identity, a client
    /// certificate required (see `tls`).
    tls: tokio_rustls::TlsAcceptor,
    fingerprint: Fingerprint,
    admin: limits::AdminToken,
    /// Whether this start made the admin token (it is printed once).
    admin_made: bool,
    gate: Arc<limits::Gate>,
    /// Taken by the first `serve`, which starts the background tasks.
    commit_rx: Mutex<Option<CommitQueue>>,
    cancel: CancellationToken,
}

impl Tracker {
    /// Opens (or creates) the state in `cfg.data_dir`. Every member starts
    /// offline. Locks held when the tracker stopped get one full lease ttl
    /// from now, so a restart does not take them from holders that
    /// reconnect and renew in time.
    ///
    /// Also brings kept versions in line with `cfg.keep_versions` (a data
    /// dir from before version records gets one for each file's current
    /// version; a smaller K than last time drops the excess), in one batch.
    pub fn open(cfg: TrackerConfig) -> Result<Arc<Tracker>, TrackerError> {
        let store = Store::open(&cfg.data_dir)?;
        let (identity, made) = Identity::load_or_create(&cfg.data_dir.join(IDENTITY_FILE))?;
        if made {
            tracing::info!(fingerprint = %identity.fingerprint(), "made the tracker's key");
        }
        let tls = tokio_rustls::TlsAcceptor::from(crate::tls::server_config(&identity)?);
        let admin_path = cfg.admin_token_file.clone().unwrap_or_else(|| cfg.data_dir.join(ADMIN_TOKEN_FILE));
        let (admin, admin_made) = limits::AdminToken::load_or_create(&admin_path)
            .map_err(|source| TrackerError::AdminToken { path: admin_path.clone(), source })?;
        if admin_made {
            tracing::info!(file = %admin_path.display(), "made the admin token (needed to create a group)");
        }
        let loaded = store.load()?;
        let now = now_ms();
        let grace_until = now.saturating_add(duration_ms(cfg.lease_ttl));
        let keep = keep_versions(&cfg);
        let mut fixups = WriteSet::new();
        let mut groups = HashMap::new();
        let announces = peers::Announces::new(store.tracker_secret()?);
        let (mut max_group, mut max_member) = (0u64, loaded.next_member.saturating_sub(1));
        for (g, lg) in loaded.groups {
            max_group = max_group.max(g.0);
            let mut st = GroupState::new(lg.rec.name.clone());
            st.max_lock_ms = lg.rec.max_lock_ms;
            let last_logged = lg.log.map(|(_, last)| last).unwrap_or(0);
            st.next_seq = lg.rec.next_seq.max(last_logged + 1).max(1);
            st.log_start = lg.log.map(|(first, _)| first).unwrap_or(st.next_seq);
            let max_file = lg.files.keys().next_back().map(|f| f.0).unwrap_or(FileId::ROOT.0);
            st.next_file = lg.rec.next_file.max(max_file + 1);
            let mut versions = lg.versions;
            for (f, e) in lg.files {
                if e.kind == FileKind::File {
                    let kept = versions.remove(&f).unwrap_or_default();
                    st.versions.insert(f, kept_at_open(&mut fixups, g, &e, kept, keep)?);
                }
                st.insert_file(e);
            }
            for (f, t) in lg.trash {
                // A trashed file keeps its versions until it is purged.
                st.versions.insert(f, versions.remove(&f).unwrap_or_default());
                st.trash.insert(f, t);
            }
            for (f, vs) in versions {
                // Records of a file no longer in the table nor in the trash.
                for v in vs.into_keys() {
                    fixups.del_version(g, f, v);
                }
            }
            for (f, mut rec) in lg.locks {
                if st.files.contains_key(&f) {
                    rec.expires = rec.expires.max(grace_until);
                    st.insert_lock(f, rec);
                }
            }
            for (m, rec) in lg.members {
                max_member = max_member.max(m.0);
                announces.admit(g, m);
                st.members.insert(m, MemberState::new(rec));
            }
            if !st.files.contains_key(&FileId::ROOT) {
                return Err(TrackerError::Corrupt(format!("group {g} has no root directory")));
            }
            groups.insert(g, Arc::new(Group::new(g, st)));
        }
        store.apply(fixups).map_err(|e| match e {
            store::StoreError::Sled(e) => TrackerError::Db(e),
            other => TrackerError::Corrupt(other.to_string()),
        })?;
        tracing::info!(dir = %cfg.data_dir.display(), groups = groups.len(), "tracker state opened");
        let (committer, commit_rx) = Committer::new();
        Ok(Arc::new(Tracker {
            cfg: cfg.clone(),
            store,
            groups: RwLock::new(groups),
            next_group: AtomicU64::new(max_group + 1),
            next_member: AtomicU64::new(max_member + 1),
            committer,
            announces,
            tls,
            fingerprint: identity.fingerprint(),
            admin,
            admin_made,
            gate: limits::Gate::new(cfg.limits.clone()),
            commit_rx: Mutex::new(Some(commit_rx)),
            cancel: CancellationToken::new(),
        }))
    }

    /// Accepts connections until [`Tracker::shutdown`]; each connection runs
    /// in its own task. Accept errors (e.g. out of file descriptors) are
    /// logged and retried.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        self.start_background();
        let local = listener.local_addr()?;
        tracing::info!(%local, "tracker serving");
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, remote)) => {
                    let span = tracing::info_span!("conn", %remote);
                    spawn(span, accept(self.clone(), stream, remote));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    /// The tracker's key fingerprint (SHA-256 of its certificate): what
    /// invitations carry and members pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The admin token (what `CreateGroup` needs), for a process that
    /// embeds the tracker; and the file it is kept in.
    pub fn admin_token(&self) -> (&str, &std::path::Path) {
        (self.admin.token(), &self.admin.path)
    }

    /// Whether this start made the admin token (print it once).
    pub fn admin_token_made(&self) -> bool {
        self.admin_made
    }

    /// Stops serving: listeners return, connections close, background
    /// tasks end. The sled database closes when the last `Arc<Tracker>`
    /// is dropped (the committer flushes once more first).
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    fn start_background(self: &Arc<Self>) {
        if let Some(rx) = self.commit_rx.lock().take() {
            spawn(tracing::info_span!("committer"), commit::run(self.store.clone(), rx));
            spawn(
                tracing::info_span!("sweeper"),
                sweep::run(Arc::downgrade(self), self.cfg.clone(), self.cancel.clone()),
            );
        }
    }

    fn group(&self, g: GroupId) -> Option<Arc<Group>> {
        self.groups.read().get(&g).cloned()
    }

    fn all_groups(&self) -> Vec<Arc<Group>> {
        self.groups.read().values().cloned().collect()
    }

    /// Applies a mutation's batch, advances the group's counters and queues
    /// its events. Call with the group mutex held, before changing memory
    /// (a failed write leaves memory as it was).
    fn commit(
        &self,
        group: &Arc<Group>,
        st: &mut GroupState,
        txn: Txn,
        want_ticket: bool,
    ) -> Result<Option<Ticket>, ProtoError> {
        let f = txn.finish(st)?;
        let has_events = !f.events.is_empty();
        if f.lazy {
            st.add_unwritten(&f.events)?;
        } else {
            // What ordinary leases left waiting goes first, in the same batch.
            let pending = st.pending_writes(group.id)?;
            self.store.apply_all(&[&pending, &f.w])?;
            st.written();
            st.take_times(&f.touched);
        }
        st.next_seq = f.next_seq;
        st.next_file = f.next_file;
        if has_events || want_ticket {
            Ok(self.committer.submit(Some(group.clone()), f.events, want_ticket))
        } else {
            Ok(None)
        }
    }

    fn lease_ttl_ms(&self) -> u64 {
        duration_ms(self.cfg.lease_ttl).max(1)
    }

    fn keep_versions(&self) -> u64 {
        keep_versions(&self.cfg)
    }
}

fn keep_versions(cfg: &TrackerConfig) -> u64 {
    u64::try_from(cfg.keep_versions).unwrap_or(u64::MAX).max(1)
}

/// A file's kept versions at open: the current one always (made up from the
/// entry if it has no record), at most `keep`; fixes go into `w`.
fn kept_at_open(
    w: &mut WriteSet,
    g: GroupId,
    e: &crate::proto::FileEntry,
    mut kept: std::collections::BTreeMap<Version, VersionInfo>,
    keep: u64,
) -> Result<std::collections::BTreeMap<Version, VersionInfo>, TrackerError> {
    let corrupt = |err: store::StoreError| TrackerError::Corrupt(err.to_string());
    if let std::collections::btree_map::Entry::Vacant(slot) = kept.entry(e.version) {
        let info = VersionInfo {
            version: e.version,
            size: e.size,
            mtime: e.mtime,
            info_hash: e.info_hash,
            author: e.author,
            at: e.mtime,
        };
        w.put_version(g, e.id, &info).map_err(corrupt)?;
        slot.insert(info);
    }
    let keep_from = Version(e.version.0.saturating_add(1).saturating_sub(keep));
    let newer = kept.split_off(&keep_from);
    for v in kept.into_keys() {
        w.del_version(g, e.id, v);
    }
    Ok(newer)
}

/// One accepted connection: HTTP (an announce), TLS (the client
/// protocol), or an older client's plaintext frames, told apart by the
/// first byte (see `http.rs` and `proto.rs`). Clients of the protocol speak
/// first (the TLS handshake, then their Hello); one that has not
/// authenticated within the pre-authentication timeout is closed. Over a
/// cap (see `limits.rs`), a connection is closed at once.
async fn accept(t: Arc<Tracker>, stream: TcpStream, remote: std::net::SocketAddr) {
    let (slot, preauth) = match t.gate.admit(remote.ip()) {
        Ok(x) => x,
        // A flood would flood the log too: not above debug.
        Err(full) => return tracing::debug!(%remote, "closing connection: {full}"),
    };
    let auth_by = tokio::time::Instant::now() + t.gate.limits().preauth_timeout;
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        _ = t.cancel.cancelled() => return,
        r = tokio::time::timeout_at(auth_by, stream.peek(&mut first)) => r,
    };
    match peeked {
        // Closed (or failed) before saying anything.
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(_)) if http::is_http(first[0]) => {
            // Announces need no authentication (their key is in the URL);
            // hyper bounds how long the headers may take.
            drop(preauth);
            http::serve(t, stream, remote).await
        }
        Ok(Ok(_)) if first[0] == TLS_HANDSHAKE => {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let handshake = tokio::select! {
                _ = t.cancel.cancelled() => return,
                r = tokio::time::timeout_at(auth_by, t.tls.accept(stream)) => r,
            };
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::info!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::info!(%remote, "closing connection: no TLS handshake in time"),
            };
            let Some(key) = crate::tls::peer_fingerprint(tls.get_ref().1) else {
                return tracing::info!(%remote, "closing connection: no client certificate");
            };
            conn::run(t, tls, remote, key, preauth, auth_by).await
        }
        Ok(Ok(_)) => plaintext_refused(stream, remote).await,
        Err(_) => tracing::debug!(%remote, "closing connection: silent"),
    }
    drop(slot);
}

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

/// An older client speaking frames in the clear: it is told why, in frames
/// it can read, and nothing it sent is looked at.
async fn plaintext_refused(mut stream: TcpStream, remote: std::net::SocketAddr) {
    use tokio::io::AsyncWriteExt;
    tracing::info!(%remote, "refusing a plaintext client connection");
    let mut out = Vec::new();
    let reason = format!("this tracker speaks protocol {PROTOCOL_VERSION} over TLS only: upgrade titorrent");
    let frames = [ServerFrame::Hello { version: PROTOCOL_VERSION }, ServerFrame::Goodbye { reason }];
    for f in &frames {
        if crate::proto::encode_frame_into(&mut out, f).is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Spawns a task in `span`. The tasks here handle their own errors.
fn spawn<F>(span: tracing::Span, fut: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(fut.instrument(span))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn now_ms() -> UnixMillis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(duration_ms).unwrap_or(0)
}


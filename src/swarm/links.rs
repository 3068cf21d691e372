//! Member-only, encrypted peer links: every BitTorrent byte between members
//! travels inside mutual TLS 1.3, and only current members' keys get in.
//!
//! librqbit 9.1 cannot authenticate a peer or wrap its connections, so it is
//! put behind two doors this module keeps:
//!
//! - **In**: librqbit listens on loopback only. The member's public peer
//!   port is a TLS server here ([`Links::serve_members`]) that requires a
//!   client certificate whose fingerprint is a current member's key (the
//!   check runs inside the handshake: a stranger gets a TLS alert and not a
//!   single BitTorrent byte), then forwards the decrypted stream to librqbit.
//! - **Out**: librqbit dials peers only through a SOCKS5 endpoint on
//!   loopback (`ConnectionOptions::proxy_url`), which asks for a random
//!   password so that other local users cannot borrow it
//!   ([`Links::serve_engine`]). A CONNECT must name a member's address; the
//!   link dials it over TLS with this member's certificate, pinning that
//!   member's key, and only then tells librqbit it is connected. Anything
//!   else (an address learnt from a peer, a stranger) is refused.
//!
//! The keys come from the tracker's member list (`MemberInfo::key`, the
//! fingerprint each member's tracker connection proves). A member that
//! leaves or is removed is dropped from it ([`Links::forget`]): new
//! handshakes with its key fail and every open link with it is cut at once.
//!
//! - **Exports** (`titorrent export`): a third door, plaintext BitTorrent
//!   for standard clients, on its own port. It reads the peer's handshake
//!   and forwards it to librqbit only when it names a version this member
//!   exported and the export has not expired or been revoked; anything else
//!   is closed unanswered. Nothing but exported versions is ever served
//!   without a member's key.
//!
//! Residual trust: a local user who knows a version's 20-byte info hash
//! could still speak BitTorrent to librqbit's loopback port. Info hashes
//! travel only inside TLS and sit in files readable by the member alone.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use parking_lot::RwLock;
use titorrent_tracker::proto::{Fingerprint, InfoHash, MemberId, MemberInfo};
use titorrent_tracker::tls::{self, Identity, TlsError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::exports::{ExportsFile, SavedExports};
use super::greedy::Greedy;

/// How long a peer may take over its TLS handshake (or librqbit over its
/// SOCKS5 request) before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialling a member may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on the public port: a flood of strangers
/// waits here instead of costing memory and CPU without bound.
const MAX_HANDSHAKES: usize = 64;
/// Copy buffer per direction: four TLS records, fewer syscalls.
const COPY_BUF: usize = 256 * 1024;
/// What one read from a member's socket may take in. rustls asks for at
/// most 4 KiB at a time (its deframer shrinks back to 4 KiB whenever it is
/// empty), so a TLS stream straight on the socket costs four recv(2)s
/// and a buffer resize per 16 KiB record; reading through this buffer, one
/// recv takes whatever has arrived.
const SOCKET_READ_BUF: usize = 256 * 1024;

/// A member's socket as TLS sees it: reads buffered, writes straight through.
type MemberSocket = tokio::io::BufReader<TcpStream>;

/// A link dialled to another member's blob service (`blobs`).
pub(super) type BlobLink = tokio_rustls::client::TlsStream<MemberSocket>;

fn member_socket(tcp: TcpStream) -> MemberSocket {
    tokio::io::BufReader::with_capacity(SOCKET_READ_BUF, tcp)
}
/// The SOCKS5 user name librqbit presents (the password is the secret).
const SOCKS_USER: &str = "titorrent";

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("peer link TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("peer link: {0}")]
    Io(#[from] std::io::Error),
}

/// One member as the links know it.
struct Known {
    key: Fingerprint,
    addr: Option<SocketAddr>,
    /// Cancelled when the member goes: cuts every open link with it.
    cut: CancellationToken,
}

/// The group's members, indexed the three ways a link asks.
#[derive(Default)]
struct Members {
    by_id: HashMap<MemberId, Known>,
    by_key: HashMap<Fingerprint, MemberId>,
    by_addr: HashMap<SocketAddr, MemberId>,
}

impl Members {
    fn upsert(&mut self, m: &MemberInfo, parent: &CancellationToken) {
        let addr = m.peer_addr.map(canonical);
        if let Some(old) = self.by_id.get(&m.id) {
            if old.key == m.key && old.addr == addr {
                return;
            }
        }
        let cut = match self.remove(m.id) {
            Some(old) if old.key == m.key => old.cut,
            Some(old) => {
                old.cut.cancel();
                parent.child_token()
            }
            None => parent.child_token(),
        };
        self.by_key.insert(m.key, m.id);
        if let Some(a) = addr {
            self.by_addr.insert(a, m.id);
        }
        self.by_id.insert(m.id, Known { key: m.key, addr, cut });
    }

    fn remove(&mut self, id: MemberId) -> Option<Known> {
        let k = self.by_id.remove(&id)?;
        self.by_key.remove(&k.key);
        if let Some(a) = k.addr {
            if self.by_addr.get(&a) == Some(&id) {
                self.by_addr.remove(&a);
            }
        }
        Some(k)
    }

    fn at(&self, addr: SocketAddr) -> Option<(MemberId, Fingerprint, CancellationToken)> {
        let id = *self.by_addr.get(&canonical(addr))?;
        let k = self.by_id.get(&id)?;
        Some((id, k.key, k.cut.clone()))
    }

    fn with_key(&self, key: &Fingerprint) -> Option<(MemberId, CancellationToken)> {
        let id = *self.by_key.get(key)?;
        Some((id, self.by_id.get(&id)?.cut.clone()))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// One exported version: until when, and the token that cuts its links
/// when the export is revoked or replaced.
struct Export {
    until: Instant,
    until_wall: SystemTime,
    cut: CancellationToken,
}

/// A BitTorrent handshake's length: pstrlen, pstr, reserved, info hash,
/// peer id.
const HANDSHAKE_LEN: usize = 1 + 19 + 8 + 20 + 20;

/// The doors around this member's librqbit session.
pub(super) struct Links {
    identity: Arc<Identity>,
    members: Arc<RwLock<Members>>,
    server: Arc<rustls::ServerConfig>,
    /// The SOCKS5 password librqbit is given.
    secret: String,
    /// librqbit's own listener, on loopback.
    engine: OnceLock<SocketAddr>,
    handshakes: Semaphore,
    exports: RwLock<HashMap<InfoHash, Export>>,
    export_addr: SocketAddr,
    /// Where `exports` and `export_addr`'s port are kept across restarts.
    exports_file: ExportsFile,
    /// Where the exports file is written: off the caller's thread (a FUSE
    /// thread, for `setxattr`), one write at a time.
    rt: OnceLock<tokio::runtime::Handle>,
    saving: parking_lot::Mutex<()>,
    /// Makes a version live in librqbit before an export link reaches it
    /// (a dormant version is unknown to librqbit).
    waker: OnceLock<Waker>,
    /// Answers members' blob requests (`blobs::serve`).
    blobs: OnceLock<super::blobs::Source>,
    cancel: CancellationToken,
}

/// See `Links::waker`.
pub(super) type Waker =
    Box<dyn Fn(InfoHash) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// The listeners `Links::bind` opened, for `Links::spawn`.
pub(super) struct Doors {
    public: TcpListener,
    socks: TcpListener,
    export: TcpListener,
}

impl Links {
    /// Opens the public peer port (`listen`) and the loopback SOCKS5
    /// endpoint. Nothing is served until `spawn`.
    /// Exports saved in `exports_file` by the last run are served again,
    /// on its export port when that is free.
    pub async fn bind(
        identity: Arc<Identity>,
        listen: SocketAddr,
        exports_file: ExportsFile,
        cancel: CancellationToken,
    ) -> Result<(Arc<Links>, Doors), LinkError> {
        let members: Arc<RwLock<Members>> = Arc::default();
        let filter = {
            let members = members.clone();
            Arc::new(move |key: &Fingerprint| members.read().by_key.contains_key(key))
        };
        // A link that names the blob protocol in its handshake (ALPN) is
        // served here (`blobs`); one that names none is BitTorrent.
        let mut server = Arc::unwrap_or_clone(tls::member_server_config(&identity, filter)?);
        server.alpn_protocols = vec![super::blobs::ALPN.to_vec()];
        let server = Arc::new(server);
        let public = TcpListener::bind(listen).await?;
        let socks = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let saved = exports_file.load();
        let ip = public.local_addr()?.ip();
        let export = match TcpListener::bind(SocketAddr::new(ip, saved.port)).await {
            Ok(l) => l,
            Err(e) if saved.port != 0 => {
                info!(port = saved.port, error = %e, "the last run's export port is taken: exports move to another");
                TcpListener::bind(SocketAddr::new(ip, 0)).await?
            }
            Err(e) => return Err(e.into()),
        };
        let export_addr = export.local_addr()?;
        let now = (Instant::now(), SystemTime::now());
        let kept: HashMap<InfoHash, Export> = saved
            .live(now.1)
            .into_iter()
            .map(|(ih, until_wall)| {
                let left = until_wall.duration_since(now.1).unwrap_or_default();
                (ih, Export { until: now.0 + left, until_wall, cut: cancel.child_token() })
            })
            .collect();
        if !kept.is_empty() {
            info!(versions = kept.len(), addr = %export_addr, "exports of the last run served again");
        }
        let links = Arc::new(Links {
            identity,
            members,
            server,
            secret: hex::encode(rand::random::<[u8; 32]>()),
            engine: OnceLock::new(),
            handshakes: Semaphore::new(MAX_HANDSHAKES),
            exports: RwLock::new(kept),
            export_addr,
            exports_file,
            rt: OnceLock::new(),
            saving: parking_lot::Mutex::new(()),
            waker: OnceLock::new(),
            blobs: OnceLock::new(),
            cancel,
        });
        Ok((links, Doors { public, socks, export }))
    }

    /// Where other members reach this one.
    pub fn public_addr(doors: &Doors) -> std::io::Result<SocketAddr> {
        doors.public.local_addr()
    }

    /// The proxy URL to give librqbit (`ConnectionOptions::proxy_url`).
    pub fn proxy_url(&self, doors: &Doors) -> std::io::Result<String> {
        Ok(format!("socks5://{SOCKS_USER}:{}@{}", self.secret, doors.socks.local_addr()?))
    }

    /// Starts serving the doors; `engine` is librqbit's loopback listener,
    /// `blobs` what answers blob links.
    pub fn spawn(self: &Arc<Self>, doors: Doors, engine: SocketAddr, (waker, blobs): (Waker, super::blobs::Source), rt: &tokio::runtime::Handle) {
        let _ = self.engine.set(engine);
        let _ = self.waker.set(waker);
        let _ = self.blobs.set(blobs);
        let _ = self.rt.set(rt.clone());
        let (this, cancel) = (self.clone(), self.cancel.clone());
        super::spawn_task(rt, "member_links", &cancel, async move { this.serve_members(doors.public).await });
        let (this, cancel) = (self.clone(), self.cancel.clone());
        super::spawn_task(rt, "engine_links", &cancel, async move { this.serve_engine(doors.socks).await });
        let (this, cancel) = (self.clone(), self.cancel.clone());
        super::spawn_task(rt, "export_links", &cancel, async move { this.serve_exports(doors.export).await });
    }

    /// Serves `ih` to standard BitTorrent clients on the export port for
    /// `ttl`; returns that port's address and when the export ends.
    pub fn export(self: &Arc<Self>, ih: InfoHash, ttl: Duration) -> (SocketAddr, SystemTime) {
        let until_wall = SystemTime::now() + ttl;
        let export = Export { until: Instant::now() + ttl, until_wall, cut: self.cancel.child_token() };
        if let Some(old) = self.exports.write().insert(ih, export) {
            old.cut.cancel();
        }
        info!(%ih, ttl_s = ttl.as_secs(), addr = %self.export_addr, "version exported to standard BitTorrent clients");
        self.save_exports();
        (self.export_addr, until_wall)
    }

    /// The export port's address.
    pub fn export_addr(&self) -> SocketAddr {
        self.export_addr
    }

    /// The versions exported now, each with when its export ends.
    pub fn exports(&self) -> Vec<(InfoHash, SystemTime)> {
        let now = Instant::now();
        self.exports.read().iter().filter(|(_, e)| e.until > now).map(|(ih, e)| (*ih, e.until_wall)).collect()
    }

    /// Writes the exports that have not ended to the exports file, on the
    /// blocking pool; each write takes the exports as they are when it
    /// runs, so the last one written is the latest.
    fn save_exports(self: &Arc<Self>) {
        let this = self.clone();
        let save = move || {
            let _one = this.saving.lock();
            let ms = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let versions = this.exports().into_iter().map(|(ih, until)| (ih, ms(until))).collect();
            this.exports_file.save(&SavedExports { port: this.export_addr.port(), versions });
        };
        match self.rt.get() {
            Some(rt) => drop(rt.spawn_blocking(save)),
            None => save(),
        }
    }

    /// Ends an export now: its connections are cut.
    pub fn unexport(self: &Arc<Self>, ih: InfoHash) -> bool {
        let old = self.exports.write().remove(&ih);
        if let Some(e) = &old {
            e.cut.cancel();
            info!(%ih, "export revoked");
            self.save_exports();
        }
        old.is_some()
    }

    /// Where and until when `ih` is exported, if it is.
    pub fn exported(&self, ih: InfoHash) -> Option<(SocketAddr, SystemTime)> {
        let ex = self.exports.read();
        ex.get(&ih).filter(|e| e.until > Instant::now()).map(|e| (self.export_addr, e.until_wall))
    }

    async fn serve_exports(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((tcp, from)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.serve_export(tcp).await {
                    debug!(%from, error = %e, "export connection refused");
                }
            });
        }
    }

    /// One standard client: its handshake must name an exported version.
    async fn serve_export(&self, mut tcp: TcpStream) -> Result<(), LinkError> {
        let _permit = self.handshakes.acquire().await.map_err(std::io::Error::other)?;
        tcp.set_nodelay(true)?;
        let mut hs = [0u8; HANDSHAKE_LEN];
        tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.read_exact(&mut hs))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no handshake"))??;
        if hs[0] != 19 || &hs[1..20] != b"BitTorrent protocol" {
            return Err(std::io::Error::other("not a BitTorrent handshake").into());
        }
        let ih = InfoHash(hs[28..48].try_into().expect("20 bytes"));
        let cut = {
            let ex = self.exports.read();
            match ex.get(&ih) {
                Some(e) if e.until > Instant::now() => e.cut.clone(),
                _ => return Err(std::io::Error::other(format!("{ih} is not exported")).into()),
            }
        };
        drop(_permit);
        if let Some(wake) = self.waker.get() {
            wake(ih).await;
        }
        let engine = *self.engine.get().ok_or_else(|| std::io::Error::other("engine not listening yet"))?;
        let mut local = TcpStream::connect(engine).await?;
        local.set_nodelay(true)?;
        local.write_all(&hs).await?;
        debug!(%ih, "export link in");
        splice(tcp, local, cut).await;
        Ok(())
    }

    /// A member is known (joined, came online, changed address or key).
    pub fn learn(&self, m: &MemberInfo) {
        self.members.write().upsert(m, &self.cancel);
    }

    /// A member left or was removed: its key stops working and its open
    /// links are cut now.
    pub fn forget(&self, id: MemberId) {
        if let Some(k) = self.members.write().remove(id) {
            k.cut.cancel();
            info!(member = %id, "member gone: its peer links are closed and its key refused");
        }
    }

    async fn serve_members(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "peer port accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.accept_member(tcp).await {
                    debug!(%from, error = %e, "peer link refused");
                }
            });
        }
    }

    /// One connection to the public port: TLS with a member's key, then
    /// librqbit, or the blob service if the handshake named it.
    async fn accept_member(&self, tcp: TcpStream) -> Result<(), LinkError> {
        let (tls, id, cut) = {
            let _permit = self.handshakes.acquire().await.map_err(std::io::Error::other)?;
            tcp.set_nodelay(true)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(member_socket(tcp)))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            // The verifier accepted the key; it may have left since.
            let key = tls::peer_fingerprint(tls.get_ref().1).ok_or_else(|| std::io::Error::other("no certificate"))?;
            let (id, cut) = self.members.read().with_key(&key).ok_or_else(|| std::io::Error::other("not a member"))?;
            (tls, id, cut)
        };
        if tls.get_ref().1.alpn_protocol() == Some(super::blobs::ALPN) {
            let source = self.blobs.get().ok_or_else(|| std::io::Error::other("blob service not started yet"))?;
            debug!(member = %id, "blob link in");
            super::blobs::serve(tls, source, cut).await;
            return Ok(());
        }
        let engine = *self.engine.get().ok_or_else(|| std::io::Error::other("engine not listening yet"))?;
        let local = TcpStream::connect(engine).await?;
        local.set_nodelay(true)?;
        debug!(member = %id, "peer link in");
        splice(tls, local, cut).await;
        Ok(())
    }

    async fn serve_engine(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.dial_member(tcp).await {
                    debug!(error = %e, "outgoing peer link not made");
                }
            });
        }
    }

    /// One outgoing connection librqbit asked for: SOCKS5 from librqbit,
    /// then TLS to the member at the address it names.
    async fn dial_member(&self, tcp: TcpStream) -> Result<(), LinkError> {
        let io = |e: fast_socks5::server::SocksServerError| std::io::Error::other(e.to_string());
        tcp.set_nodelay(true)?;
        let secret = self.secret.as_str();
        let request = async {
            let (proto, _) = Socks5ServerProtocol::accept_password_auth(tcp, |user, pass| {
                (user == SOCKS_USER && pass == secret).then_some(())
            })
            .await?;
            proto.read_command().await
        };
        let (proto, cmd, target) = tokio::time::timeout(HANDSHAKE_TIMEOUT, request)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "SOCKS5 request timed out"))?
            .map_err(io)?;
        let addr = match (cmd, target) {
            (Socks5Command::TCPConnect, TargetAddr::Ip(a)) => a,
            _ => {
                proto.reply_error(&ReplyError::CommandNotSupported).await.map_err(io)?;
                return Ok(());
            }
        };
        let Some((id, key, cut)) = self.members.read().at(addr) else {
            debug!(%addr, "librqbit asked to dial an address that is no member's: refused");
            proto.reply_error(&ReplyError::ConnectionNotAllowed).await.map_err(io)?;
            return Ok(());
        };
        let tls = match self.connect(addr, key, None).await {
            Ok(t) => t,
            Err(e) => {
                proto.reply_error(&ReplyError::HostUnreachable).await.map_err(io)?;
                return Err(e);
            }
        };
        let local = tls.get_ref().0.get_ref().local_addr()?;
        let inner = proto.reply_success(local).await.map_err(io)?;
        debug!(member = %id, %addr, "peer link out");
        splice(inner, tls, cut).await;
        Ok(())
    }

    /// A link to the blob service of the member at `addr` (its key pinned).
    /// Refused for an address that is no member's, and for a member whose
    /// daemon does not speak the protocol.
    pub async fn dial_blobs(&self, addr: SocketAddr) -> Result<BlobLink, LinkError> {
        let (_, key, _) = self.members.read().at(addr).ok_or_else(|| std::io::Error::other("no member at that address"))?;
        let tls = self.connect(addr, key, Some(super::blobs::ALPN)).await?;
        if tls.get_ref().1.alpn_protocol() != Some(super::blobs::ALPN) {
            return Err(std::io::Error::other("the member does not serve blobs").into());
        }
        Ok(tls)
    }

    /// Whether `addr` is a current member's (a pooled blob link to one
    /// that left is not used again).
    pub fn is_member_at(&self, addr: SocketAddr) -> bool {
        self.members.read().at(addr).is_some()
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        key: Fingerprint,
        alpn: Option<&[u8]>,
    ) -> Result<tokio_rustls::client::TlsStream<MemberSocket>, LinkError> {
        let timed_out = |what| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("dialling a member timed out"))??;
        tcp.set_nodelay(true)?;
        let mut cfg = tls::member_client_config(&self.identity, key)?;
        if let Some(p) = alpn {
            Arc::make_mut(&mut cfg).alpn_protocols = vec![p.to_vec()];
        }
        let connector = tokio_rustls::TlsConnector::from(cfg);
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(tls::server_name()?, member_socket(tcp)))
            .await
            .map_err(|_| timed_out("TLS handshake with a member timed out"))??;
        Ok(tls)
    }
}

/// Copies both ways until either side closes or the member is cut off.
/// Each side is read greedily ([`Greedy`]): one write hands on every
/// record that has arrived, not one TLS record (16 KiB) per write and
/// wake-up of the reader behind it.
async fn splice<A, B>(a: A, b: B, cut: CancellationToken)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, mut b) = (Greedy::new(a), Greedy::new(b));
    tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUF, COPY_BUF) => {
            if let Err(e) = r {
                debug!(error = %e, "peer link closed");
            }
        }
        () = cut.cancelled() => debug!("peer link cut: the member is gone"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, key: u8, addr: &str) -> MemberInfo {
        MemberInfo {
            id: MemberId(id),
            name: format!("m{id}"),
            online: true,
            peer_addr: Some(addr.parse().unwrap()),
            key: Fingerprint([key; 32]),
        }
    }

    #[test]
    fn members_are_found_by_key_and_by_address_until_they_go() {
        let root = CancellationToken::new();
        let mut ms = Members::default();
        ms.upsert(&info(1, 1, "10.0.0.1:6881"), &root);
        ms.upsert(&info(2, 2, "10.0.0.2:6881"), &root);
        assert_eq!(ms.at("10.0.0.2:6881".parse().unwrap()).unwrap().0, MemberId(2));
        // A v4-mapped v6 address is the same member.
        assert_eq!(ms.at("[::ffff:10.0.0.1]:6881".parse().unwrap()).unwrap().0, MemberId(1));
        assert!(ms.at("10.0.0.3:6881".parse().unwrap()).is_none());
        let (_, cut) = ms.with_key(&Fingerprint([2; 32])).unwrap();
        let gone = ms.remove(MemberId(2)).unwrap();
        gone.cut.cancel();
        assert!(cut.is_cancelled());
        assert!(ms.with_key(&Fingerprint([2; 32])).is_none());
        assert!(ms.at("10.0.0.2:6881".parse().unwrap()).is_none());
    }

    #[test]
    fn a_new_key_for_a_member_cuts_the_links_made_with_the_old_one() {
        let root = CancellationToken::new();
        let mut ms = Members::default();
        ms.upsert(&info(1, 1, "10.0.0.1:6881"), &root);
        let (_, old) = ms.with_key(&Fingerprint([1; 32])).unwrap();
        // Same key, new address: links stay.
        ms.upsert(&info(1, 1, "10.0.0.9:6881"), &root);
        assert!(!old.is_cancelled());
        assert!(ms.at("10.0.0.1:6881".parse().unwrap()).is_none());
        ms.upsert(&info(1, 7, "10.0.0.9:6881"), &root);
        assert!(old.is_cancelled());
        assert!(ms.with_key(&Fingerprint([1; 32])).is_none());
        assert_eq!(ms.with_key(&Fingerprint([7; 32])).unwrap().0, MemberId(1));
    }
}

//! TLS 1.3 on the tracker link, for the server and its clients.
//!
//! Each side has an [`Identity`]: a private key and a self-signed
//! certificate for it (rcgen), kept in one PEM file readable by its owner
//! only. Nobody's certificate is checked against a CA: an identity *is*
//! its certificate's [`Fingerprint`] (SHA-256 of the DER), as a Syncthing
//! device ID is. The TLS handshake proves that each side holds the key of
//! the certificate it showed (its CertificateVerify signature over the
//! handshake), so:
//!
//! - a client pins the tracker's fingerprint (from the invitation, then
//!   from its state) and refuses any other ([`TlsError::WrongTracker`]);
//! - the tracker asks every client for a certificate (mutual TLS) and
//!   accepts any, then knows the connection's fingerprint: creating a
//!   group or joining records it as the member's key, and `Authenticate`
//!   succeeds only on a connection whose fingerprint is the member's. No
//!   reusable secret ever crosses the wire.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

pub use crate::proto::Fingerprint;

/// The name both sides put in their certificates and the client asks for
/// (not checked: the fingerprint is what counts).
const NAME: &str = "titorrent";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not an identity file (a PEM certificate and PKCS#8 key): {msg}")]
    BadIdentity { path: PathBuf, msg: String },
    #[error("cannot make a key: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS setup: {0}")]
    Config(#[from] rustls::Error),
    #[error("the tracker at {addr} is not the one this invite/state names: fingerprint {got}, expected {expected}")]
    WrongTracker { addr: String, got: Fingerprint, expected: Fingerprint },
    #[error("TLS handshake with {addr}: {source}")]
    Handshake { addr: String, source: io::Error },
}

/// A private key and the self-signed certificate that carries its public key.
#[derive(Debug)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: Fingerprint,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { cert: self.cert.clone(), key: self.key.clone_key(), fingerprint: self.fingerprint }
    }
}

/// SHA-256 of a certificate's DER.
pub fn fingerprint_of(cert: &[u8]) -> Fingerprint {
    Fingerprint(Sha256::digest(cert).into())
}

impl Identity {
    /// A new ECDSA P-256 key with a self-signed certificate.
    pub fn generate() -> Result<Identity, TlsError> {
        Ok(Identity::generate_pem()?.0)
    }

    /// A new identity and its PEM file text (certificate, then key).
    fn generate_pem() -> Result<(Identity, String), TlsError> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec![NAME.to_string()])?.self_signed(&key)?;
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        let cert = cert.der().clone();
        let fingerprint = fingerprint_of(&cert);
        Ok((Identity { cert, key: PrivatePkcs8KeyDer::from(key.serialize_der()), fingerprint }, pem))
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    fn from_pem(path: &Path, text: &[u8]) -> Result<Identity, TlsError> {
        let bad = |msg: String| TlsError::BadIdentity { path: path.to_path_buf(), msg };
        let cert = CertificateDer::from_pem_slice(text).map_err(|e| bad(e.to_string()))?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(text).map_err(|e| bad(e.to_string()))?;
        let fingerprint = fingerprint_of(&cert);
        Ok(Identity { cert, key, fingerprint })
    }

    /// Reads the identity at `path`, or makes one and writes it there (mode
    /// 0600, created exclusively: two racing starts do not both win).
    /// Returns whether it was made now.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), TlsError> {
        let io_err = |source| TlsError::Io { path: path.to_path_buf(), source };
        match std::fs::read(path) {
            Ok(text) => return Ok((Identity::from_pem(path, &text)?, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let (id, pem) = Identity::generate_pem()?;
        write_private(path, pem.as_bytes()).map_err(io_err)?;
        Ok((id, true))
    }

    /// Reads the identity at `path`.
    pub fn load(path: &Path) -> Result<Identity, TlsError> {
        let text = std::fs::read(path).map_err(|source| TlsError::Io { path: path.to_path_buf(), source })?;
        Identity::from_pem(path, &text)
    }
}

/// Writes a new file `path` with mode 0600, failing if it exists; synced.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The tracker's TLS configuration: TLS 1.3 only, its identity, and a
/// certificate required of every client (any certificate: the tracker
/// decides what a fingerprint may do).
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(MemberKeys { accept: Arc::new(|_| true), provider }))
        .with_single_cert(vec![id.cert.clone()], PrivateKeyDer::Pkcs8(id.key.clone_key()))?;
    Ok(Arc::new(cfg))
}

/// A member's TLS configuration for the connections other members open to
/// it (its peer port): TLS 1.3 only, no session resumption (a resumed
/// session would skip `accept`, and a removed member must not get back in
/// with an old ticket), and a certificate required whose fingerprint
/// `accept` says is a current member's.
pub fn member_server_config(id: &Identity, accept: KeyFilter) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(MemberKeys { accept, provider }))
        .with_single_cert(vec![id.cert.clone()], PrivateKeyDer::Pkcs8(id.key.clone_key()))?;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// A member's TLS configuration for dialling the member whose key is
/// `expect`: any other certificate is refused before a byte is sent.
pub fn member_client_config(id: &Identity, expect: Fingerprint) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedTracker { pin: Some(expect), seen: Arc::default(), provider: provider.clone() });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![id.cert.clone()], PrivateKeyDer::Pkcs8(id.key.clone_key()))?;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// The name a client asks for (not checked by either side).
pub fn server_name() -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(NAME).map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))
}

/// Says whether a certificate fingerprint may connect (see
/// [`member_server_config`]); asked once per handshake.
pub type KeyFilter = Arc<dyn Fn(&Fingerprint) -> bool + Send + Sync>;

/// The fingerprint of the certificate a TLS peer showed.
pub fn peer_fingerprint(conn: &rustls::CommonState) -> Option<Fingerprint> {
    conn.peer_certificates().and_then(|c| c.first()).map(|c| fingerprint_of(c))
}

/// A client of the tracker: its identity and the tracker it trusts.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub identity: Arc<Identity>,
    /// The tracker's fingerprint; `None` trusts whichever answers (only to
    /// create a group on a tracker named by hand, whose fingerprint the
    /// caller then keeps).
    pub pin: Option<Fingerprint>,
}

impl ClientTls {
    /// Dials `addr` over TLS 1.3; returns the stream and the tracker's
    /// fingerprint. A tracker with another key than the pinned one is
    /// refused ([`TlsError::WrongTracker`]) before anything is sent.
    pub async fn connect(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Fingerprint), TlsError> {
        let (cfg, seen) = self.config()?;
        let connector = tokio_rustls::TlsConnector::from(cfg);
        let res = connector.connect(server_name()?, tcp).await;
        self.outcome(addr, res, &seen)
    }

    /// The same over a blocking socket (tools and test harnesses): the
    /// handshake is done before this returns.
    pub fn connect_blocking(
        &self,
        addr: &str,
        mut tcp: std::net::TcpStream,
    ) -> Result<(rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, Fingerprint), TlsError> {
        let (cfg, seen) = self.config()?;
        let mut conn = rustls::ClientConnection::new(cfg, server_name()?)?;
        let mut res = Ok(());
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                res = Err(e);
                break;
            }
        }
        let res = res.map(|()| rustls::StreamOwned::new(conn, tcp));
        self.outcome(addr, res, &seen)
    }

    fn config(&self) -> Result<(Arc<rustls::ClientConfig>, Arc<Mutex<Option<Fingerprint>>>), TlsError> {
        let provider = provider();
        let seen = Arc::new(Mutex::new(None));
        let verifier = Arc::new(PinnedTracker { pin: self.pin, seen: seen.clone(), provider: provider.clone() });
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.identity.cert.clone()], PrivateKeyDer::Pkcs8(self.identity.key.clone_key()))?;
        Ok((Arc::new(cfg), seen))
    }

    /// A wrong tracker is named as such whatever the handshake's error.
    fn outcome<S>(
        &self,
        addr: &str,
        res: io::Result<S>,
        seen: &Mutex<Option<Fingerprint>>,
    ) -> Result<(S, Fingerprint), TlsError> {
        let got = *seen.lock().unwrap_or_else(|p| p.into_inner());
        match (res, got, self.pin) {
            (_, Some(got), Some(expected)) if got != expected => {
                Err(TlsError::WrongTracker { addr: addr.to_string(), got, expected })
            }
            (Ok(s), Some(got), _) => Ok((s, got)),
            (Ok(_), None, _) => Err(TlsError::Handshake {
                addr: addr.to_string(),
                source: io::Error::other("the tracker showed no certificate"),
            }),
            (Err(source), _, _) => Err(TlsError::Handshake { addr: addr.to_string(), source }),
        }
    }
}

/// Accepts exactly the pinned certificate (any when none is pinned), and
/// notes which one it saw so that a refusal can name it. (Also the check of
/// a member dialling another member, whose key is pinned the same way.)
#[derive(Debug)]
struct PinnedTracker {
    pin: Option<Fingerprint>,
    seen: Arc<Mutex<Option<Fingerprint>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedTracker {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint_of(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(got);
        match self.pin {
            Some(pin) if pin != got => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Requires a client certificate, its proof of possession (the TLS 1.3
/// CertificateVerify signature), and a fingerprint the filter accepts: a
/// stranger's handshake fails with a TLS alert, before the application
/// sees a byte. (The tracker's filter accepts any key: it decides what a
/// fingerprint may do after the handshake.)
struct MemberKeys {
    accept: KeyFilter,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for MemberKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberKeys")
    }
}

impl ClientCertVerifier for MemberKeys {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if (self.accept)(&fingerprint_of(end_entity)) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_round_trips_through_its_file_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.pem");
        let (a, made) = Identity::load_or_create(&p).unwrap();
        assert!(made);
        let (b, made) = Identity::load_or_create(&p).unwrap();
        assert!(!made);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_ne!(Identity::generate().unwrap().fingerprint(), a.fingerprint());
    }
}

//! What a stranger can make the tracker spend before it knows who is
//! there: how many connections are open at all, how many are not
//! authenticated yet (in all and per source address), and the admin token
//! that creating a group needs.
//!
//! A connection holds a [`Slot`] for as long as it is open and a
//! [`PreAuth`] from accept until it first authenticates (creating a group
//! or joining counts); both give their place back when dropped. A
//! connection over a cap is closed at once, before TLS.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// The caps; see [`super::TrackerConfig`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once (members, strangers and HTTP announces).
    pub max_conns: usize,
    /// Connections not authenticated yet, in all.
    pub max_preauth: usize,
    /// Connections not authenticated yet from one IP address.
    pub max_preauth_per_ip: usize,
    /// From accept to authenticated (TLS, Hello and CreateGroup, Join or
    /// Authenticate): past it the connection is closed.
    pub preauth_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_conns: 4096, max_preauth: 512, max_preauth_per_ip: 32, preauth_timeout: Duration::from_secs(10) }
    }
}

/// The largest frame a connection may send before it authenticates: the
/// requests allowed then are a few hundred bytes.
pub(crate) const PREAUTH_MAX_FRAME: usize = 64 * 1024;

/// Counts of open connections, shared by the connections' guards.
pub(crate) struct Gate {
    limits: Limits,
    open: AtomicUsize,
    preauth: Mutex<PreAuthCounts>,
}

#[derive(Default)]
struct PreAuthCounts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Full {
    Conns,
    PreAuth,
    PreAuthFromIp,
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Full::Conns => "too many connections",
            Full::PreAuth => "too many unauthenticated connections",
            Full::PreAuthFromIp => "too many unauthenticated connections from this address",
        })
    }
}

/// One open connection.
pub(crate) struct Slot {
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection that has not authenticated yet.
pub(crate) struct PreAuth {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for PreAuth {
    fn drop(&mut self) {
        let mut c = self.gate.preauth.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate { limits, open: AtomicUsize::new(0), preauth: Mutex::new(PreAuthCounts::default()) })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A place for a new connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Slot, PreAuth), Full> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.limits.max_conns {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Conns);
        }
        let slot = Slot { gate: self.clone() };
        let mut c = self.preauth.lock();
        if c.total >= self.limits.max_preauth {
            return Err(Full::PreAuth);
        }
        let n = c.by_ip.entry(ip).or_insert(0);
        if *n >= self.limits.max_preauth_per_ip {
            return Err(Full::PreAuthFromIp);
        }
        *n += 1;
        c.total += 1;
        Ok((slot, PreAuth { gate: self.clone(), ip }))
    }
}

/// The tracker's admin token: who may create groups. Made (random) at
/// first start and written 0600; only its hash is kept in memory.
pub(crate) struct AdminToken {
    pub path: PathBuf,
    hash: [u8; 32],
    /// The token itself, for an embedding process (`titorrent up`).
    token: String,
}

impl AdminToken {
    /// Reads `path`, or makes a token and writes it there. Returns whether
    /// it was made now.
    pub fn load_or_create(path: &Path) -> std::io::Result<(AdminToken, bool)> {
        let (token, made) = match std::fs::read_to_string(path) {
            Ok(t) => (t.trim().to_string(), false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
                let token = hex::encode(raw);
                crate::tls::write_private(path, format!("{token}\n").as_bytes())?;
                (token, true)
            }
            Err(e) => return Err(e),
        };
        if token.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is empty", path.display())));
        }
        let hash = Sha256::digest(token.as_bytes()).into();
        Ok((AdminToken { path: path.to_path_buf(), hash, token }, made))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Compares in constant time (of the hashes).
    pub fn matches(&self, given: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        h.iter().zip(self.hash.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_and_give_back() {
        let g = Gate::new(Limits { max_conns: 3, max_preauth: 2, max_preauth_per_ip: 1, ..Limits::default() });
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let first = g.admit(ip(1)).unwrap();
        assert_eq!(g.admit(ip(1)).err(), Some(Full::PreAuthFromIp));
        let (slot_b, pre_b) = g.admit(ip(2)).unwrap();
        assert_eq!(g.admit(ip(3)).err(), Some(Full::PreAuth));
        // Authenticated: b's unauthenticated place goes, its connection stays.
        drop(pre_b);
        let third = g.admit(ip(3)).unwrap();
        assert_eq!(g.admit(ip(4)).err(), Some(Full::Conns));
        drop(first);
        assert!(g.admit(ip(1)).is_ok());
        drop((third, slot_b));
        assert!(g.admit(ip(2)).is_ok());
    }

    #[test]
    fn the_admin_token_is_made_once_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin-token");
        let (t, made) = AdminToken::load_or_create(&p).unwrap();
        assert!(made);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, made) = AdminToken::load_or_create(&p).unwrap();
        assert!(!made);
        assert!(again.matches(t.token()) && again.matches(&format!("{}\n", t.token())));
        assert!(!again.matches("guess") && !again.matches(""));
    }
}

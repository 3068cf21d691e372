//! A member's local state directory: who it is in which group (its ids,
//! its key, the tracker's pinned fingerprint; readable by its owner only)
//! and where its cache, staging copies and torrents live.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use titorrent_tracker::proto::{Fingerprint, GroupId, MemberId};
use titorrent_tracker::tls::{ClientTls, Identity, TlsError};

use crate::tracker_client::Login;

const MEMBER_FILE: &str = "member.toml";
/// The member's key and its self-signed certificate (PEM, 0600).
const IDENTITY_FILE: &str = "member-identity.pem";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{0} holds no membership yet: run `titorrent create-group` or `titorrent join` with --state {0}")]
    NotAMember(PathBuf),
    #[error("{0}")]
    Key(#[from] TlsError),
}

/// This member's identity in one group, as stored in `member.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Membership {
    /// host:port of the tracker manager.
    pub tracker: String,
    pub group: u64,
    pub group_name: String,
    pub member: u64,
    pub member_name: String,
    /// The tracker's key fingerprint (hex), pinned at create-group/join:
    /// every connection checks it. (Absent in a file written before TLS,
    /// whose `secret` the tracker no longer accepts: such a state must
    /// join again.)
    #[serde(default)]
    pub tracker_key: Option<String>,
}

impl Membership {
    /// The pinned tracker fingerprint.
    pub fn tracker_key(&self) -> Result<Fingerprint, String> {
        let hex = self.tracker_key.as_deref().ok_or(
            "no tracker key: this membership predates TLS (titorrent before protocol 5); join the group again with a new invitation",
        )?;
        hex.parse().map_err(|e| format!("tracker_key: {e}"))
    }
}

/// The layout of a state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    /// The file table and last applied event, saved by the mount.
    pub fn table(&self) -> PathBuf {
        self.root.join("table.bin")
    }
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }
    pub fn torrents(&self) -> PathBuf {
        self.root.join("torrents")
    }
    /// The versions exported to standard clients, kept across restarts.
    pub fn exports(&self) -> PathBuf {
        self.root.join("exports.bin")
    }
    pub fn conflicts(&self) -> PathBuf {
        self.root.join("conflicts")
    }
    pub fn tracker_data(&self) -> PathBuf {
        self.root.join("tracker")
    }

    pub fn identity_file(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// This member's key, made (0600) on first use: at create-group or join.
    pub fn identity(&self) -> Result<Arc<Identity>, StateError> {
        titorrent_tracker::server::private::create_private_dir(&self.root)
            .map_err(|source| StateError::Io { path: self.root.clone(), source })?;
        Ok(Arc::new(Identity::load_or_create(&self.identity_file())?.0))
    }

    /// What a connection to the tracker needs: ids, key and pin.
    pub fn login(&self, m: &Membership) -> Result<Login, StateError> {
        let pin = m.tracker_key().map_err(|msg| StateError::Invalid { path: self.root.join(MEMBER_FILE), msg })?;
        let identity = Arc::new(Identity::load(&self.identity_file())?);
        Ok(Login { group: GroupId(m.group), member: MemberId(m.member), tls: ClientTls { identity, pin: Some(pin) } })
    }

    pub fn has_membership(&self) -> bool {
        self.root.join(MEMBER_FILE).exists()
    }

    pub fn load(&self) -> Result<Membership, StateError> {
        let path = self.root.join(MEMBER_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StateError::NotAMember(self.root.clone())),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let m: Membership = toml::from_str(&text).map_err(|e| StateError::Invalid { path: path.clone(), msg: e.to_string() })?;
        m.tracker_key().map_err(|msg| StateError::Invalid { path, msg })?;
        Ok(m)
    }

    /// Writes the membership with mode 0600.
    pub fn save(&self, m: &Membership) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        titorrent_tracker::server::private::create_private_dir(&self.root).map_err(io(&self.root))?;
        let path = self.root.join(MEMBER_FILE);
        let text = toml::to_string(m).map_err(|e| StateError::Invalid { path: path.clone(), msg: e.to_string() })?;
        // Durable: it holds the member's identity (the temporary file is 0600).
        crate::atomic_file::write(&path, text.as_bytes(), true).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn membership_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(dir.path().join("st"));
        assert!(matches!(s.load(), Err(StateError::NotAMember(_))));
        let m = Membership {
            tracker: "127.0.0.1:7070".into(),
            group: 1,
            group_name: "g".into(),
            member: 2,
            member_name: "ana".into(),
            tracker_key: Some(hex::encode([7u8; 32])),
        };
        s.save(&m).unwrap();
        let back = s.load().unwrap();
        assert_eq!(back.tracker_key().unwrap(), Fingerprint([7; 32]));
        let key = s.identity().unwrap();
        assert_eq!(s.login(&back).unwrap().tls.identity.fingerprint(), key.fingerprint());
        let mode = std::fs::metadata(s.identity_file()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(dir.path().join("st/member.toml")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_bad_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("member.toml"), "tracker = 3").unwrap();
        let err = StateDir::new(dir.path()).load().unwrap_err().to_string();
        assert!(err.contains("member.toml"), "{err}");
    }
}

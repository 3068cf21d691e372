//! The outbox: edits waiting for the tracker, one TOML file each, written
//! durably before anything else happens to an edit so that it survives a
//! crash or restart of the daemon. No lock: each entry is its own file.
//!
//! An outbox entry goes through two phases, recorded in its file:
//! `content: None` (the bytes are in `staging`) and `content: Some` (the
//! swarm holds and seeds them; the torrent is in the torrents directory).
//! The entry is deleted only once the tracker has taken the edit, as the file
//! itself or as a conflict copy, or its bytes are safe in `conflicts/`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use titorrent_tracker::proto::{InfoHash, UnixMillis};

/// One edit waiting to be published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct OutboxEntry {
    pub file: u64,
    pub parent: u64,
    pub name: String,
    /// Lease ids are random u64s and TOML integers are i64: kept as text.
    #[serde(with = "u64_text")]
    pub lease: u64,
    pub base: u64,
    pub mode: u32,
    pub mtime: UnixMillis,
    pub staging: PathBuf,
    pub size: u64,
    /// Hex info hash once the swarm holds the bytes.
    pub info_hash: Option<String>,
    /// The program closed the file. An edit found unclosed by the next run
    /// (the daemon died while it was open) may be half-written: it becomes a
    /// conflict copy, never the file itself.
    #[serde(default)]
    pub closed: bool,
}

/// A u64 written as a decimal string; read from a string or an integer
/// (entries written before lease ids were kept as text).
mod u64_text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Int(u64),
            Str(String),
        }
        match Text::deserialize(d)? {
            Text::Int(n) => Ok(n),
            Text::Str(s) => s.parse().map_err(D::Error::custom),
        }
    }
}

impl OutboxEntry {
    pub fn info_hash(&self) -> Option<InfoHash> {
        let bytes = hex::decode(self.info_hash.as_ref()?).ok()?;
        Some(InfoHash(bytes.try_into().ok()?))
    }
}

/// "notes (conflict from ana 2026-11-21 140305).txt"
pub fn conflict_name(name: &str, member: &str, at: UnixMillis) -> String {
    let secs = at / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    let stamp = format!("{y:04}-{m:02}-{d:02} {:02}{:02}{:02}", t / 3600, (t / 60) % 60, t % 60);
    let member: String = member.chars().filter(|c| *c != '/' && *c != '\0').collect();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let mut out = format!("{stem} (conflict from {member} {stamp}){ext}");
    while out.len() > 255 {
        out.remove(0);
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The outbox directory.
#[derive(Debug)]
pub(super) struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(dir: PathBuf) -> Self {
        Outbox { dir }
    }

    fn path(&self, file: u64, lease: u64) -> PathBuf {
        self.dir.join(format!("{file}-{lease}.toml"))
    }

    /// Writes an entry durably, on the blocking pool: an fsync must not
    /// hold a runtime worker.
    pub async fn save(&self, e: &OutboxEntry) -> std::io::Result<()> {
        self.write(e, true).await
    }

    /// [`Self::save`] of a session that is still open, without waiting for
    /// the disk: what it describes (the staging copy's bytes, written as
    /// the program writes) is in the page cache only too, so it outlives a
    /// killed daemon as they do. The close's save is durable.
    pub async fn save_open(&self, e: &OutboxEntry) -> std::io::Result<()> {
        self.write(e, false).await
    }

    async fn write(&self, e: &OutboxEntry, durable: bool) -> std::io::Result<()> {
        let text = toml::to_string(e).map_err(std::io::Error::other)?;
        let path = self.path(e.file, e.lease);
        tokio::task::spawn_blocking(move || crate::atomic_file::write(&path, text.as_bytes(), durable))
            .await
            .map_err(std::io::Error::other)?
    }

    /// [`Self::save`] on the calling thread, for the last-resort path.
    pub fn save_here(&self, e: &OutboxEntry) -> std::io::Result<()> {
        let text = toml::to_string(e).map_err(std::io::Error::other)?;
        crate::atomic_file::write(&self.path(e.file, e.lease), text.as_bytes(), true)
    }

    /// Makes the entry of `file`'s edit under `lease` durable, if there is
    /// one (an `fsync` of the file being written: its bytes and the entry
    /// that says whose they are reach the disk together).
    pub fn make_durable(&self, file: u64, lease: u64) -> std::io::Result<()> {
        match std::fs::File::open(self.path(file, lease)) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Forgets the entry of `file`'s edit under `lease`.
    pub fn remove(&self, file: u64, lease: u64) {
        let _ = std::fs::remove_file(self.path(file, lease));
    }

    /// The entries a previous run left, each parsed or with why not.
    pub fn entries(&self) -> Vec<(PathBuf, Result<OutboxEntry, String>)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        dir.flatten()
            .map(|ent| ent.path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("toml"))
            .map(|p| {
                let parsed = std::fs::read_to_string(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|t| toml::from_str::<OutboxEntry>(&t).map_err(|e| e.to_string()));
                (p, parsed)
            })
            .collect()
    }
}

/// Removes a staging copy whose bytes the store holds now.
pub(super) fn remove_staging(path: &Path) {
    for p in [path.to_path_buf(), super::overlay::base_link(path)] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(staging = %p.display(), error = %e, "could not remove a published staging copy")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension() {
        // 2026-11-21 14:03:05 UTC
        let at = 1_795_269_785_000;
        assert_eq!(conflict_name("notes.txt", "ana", at), "notes (conflict from ana 2026-11-21 140305).txt");
        assert_eq!(conflict_name("Makefile", "bob", at), "Makefile (conflict from bob 2026-11-21 140305)");
        assert_eq!(conflict_name(".bashrc", "bob", at), ".bashrc (conflict from bob 2026-11-21 140305)");
        assert!(conflict_name(&"x".repeat(300), "bob", at).len() <= 255);
    }

    #[test]
    fn outbox_entries_keep_any_lease_id() {
        let e = OutboxEntry {
            file: 7,
            parent: 1,
            name: "a.txt".into(),
            lease: u64::MAX - 5,
            base: 3,
            mode: 0o644,
            mtime: 1_795_269_785_000,
            staging: PathBuf::from("/s/7-1"),
            size: 12,
            info_hash: None,
            closed: true,
        };
        let text = toml::to_string(&e).expect("a lease id over i64::MAX serializes");
        let back: OutboxEntry = toml::from_str(&text).unwrap();
        assert_eq!(back.lease, u64::MAX - 5);
        // Entries written before, with the lease as an integer, still read.
        let old = text.replace(&format!("lease = \"{}\"", u64::MAX - 5), "lease = 42");
        assert_eq!(toml::from_str::<OutboxEntry>(&old).unwrap().lease, 42);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}


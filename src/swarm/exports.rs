//! Exports kept across restarts of the daemon: which versions are served to
//! standard BitTorrent clients and until when, and the export port, in one
//! small file of the state directory (owner-only, as all state is). A
//! restarted daemon serves them again on the same port when it is free, so
//! the magnet links and .torrent files `titorrent export` handed out keep
//! working until they expire.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use titorrent_tracker::proto::InfoHash;

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedExports {
    /// The export port the last run had (0: none yet).
    pub port: u16,
    /// Each exported version and when its export ends, unix ms.
    pub versions: Vec<(InfoHash, u64)>,
}

impl SavedExports {
    /// The exports that have not ended at `now`, each with its end.
    pub fn live(&self, now: SystemTime) -> Vec<(InfoHash, SystemTime)> {
        self.versions
            .iter()
            .map(|(ih, ms)| (*ih, UNIX_EPOCH + Duration::from_millis(*ms)))
            .filter(|(_, until)| *until > now)
            .collect()
    }
}

/// Where exports are kept, if anywhere (tests run swarms without a file).
#[derive(Clone, Debug)]
pub(super) struct ExportsFile(pub Option<PathBuf>);

impl ExportsFile {
    /// What the file holds; nothing when it is missing or unreadable (an
    /// export is then simply not served again, with one log line).
    pub fn load(&self) -> SavedExports {
        let Some(path) = &self.0 else { return SavedExports::default() };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SavedExports::default(),
            Err(e) => {
                tracing::info!(file = %path.display(), error = %e, "saved exports not read: export again");
                return SavedExports::default();
            }
        };
        match bincode::serde::decode_from_slice(&bytes, bincode::config::standard()) {
            Ok((saved, _)) => saved,
            Err(e) => {
                tracing::info!(file = %path.display(), error = %e, "saved exports not understood: export again");
                SavedExports::default()
            }
        }
    }

    /// Replaces the file with `saved` (written beside it, then renamed).
    pub fn save(&self, saved: &SavedExports) {
        let Some(path) = &self.0 else { return };
        let written = bincode::serde::encode_to_vec(saved, bincode::config::standard())
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::atomic_file::write(path, &bytes, true));
        if let Err(e) = written {
            tracing::info!(file = %path.display(), error = %e, "exports not saved: they end with this run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_exports_come_back_and_ended_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = ExportsFile(Some(dir.path().join("exports")));
        assert_eq!(file.load(), SavedExports::default(), "no file yet");
        let now = SystemTime::now();
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let saved = SavedExports {
            port: 40123,
            versions: vec![(InfoHash([1; 20]), ms(now + Duration::from_secs(600))), (InfoHash([2; 20]), ms(now - Duration::from_secs(1)))],
        };
        file.save(&saved);
        let back = file.load();
        assert_eq!(back, saved);
        let live = back.live(now);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].0, InfoHash([1; 20]));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("exports")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "owner only");
        std::fs::write(dir.path().join("exports"), b"\xff\xff garbage").unwrap();
        assert_eq!(file.load(), SavedExports::default(), "garbage is no export");
    }
}

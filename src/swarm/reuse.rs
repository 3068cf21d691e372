//! A new version filled from the versions it names as `similar` (BEP 38)
//! that this member holds, before librqbit fetches the rest: every piece
//! whose hash is one of a held piece's (at the same index first, else at
//! any index, so a piece that moved is found) is copied from that object
//! file, and the new version starts with those pieces in its haves. Only
//! pieces the old version verified are copied, and they are copied
//! verbatim: equal SHA-1 and length mean the bytes of the new piece.
//! librqbit takes the haves as fastresume data (QUIRKS.md #4) and fetches
//! only the missing pieces.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use titorrent_tracker::proto::InfoHash;
use tracing::{info, warn};

use crate::file_copy::copy_range;

use super::metainfo::{self, Checked};
use super::version::{bit, full_bitfield, Version};
use super::{join_error, Inner, SwarmError};

/// A version held here that the new one may take pieces from.
pub(super) struct Source {
    pub path: PathBuf,
    pub size: u64,
    pub piece_length: u64,
    pub pieces: Vec<u8>,
    /// Its verified pieces (MSB first).
    pub haves: Vec<u8>,
}

impl Source {
    fn piece_len(&self, j: u64) -> u64 {
        (self.size - j * self.piece_length).min(self.piece_length)
    }

    fn hash(&self, j: u64) -> Option<&[u8]> {
        self.pieces.get(j as usize * 20..j as usize * 20 + 20)
    }
}

/// What a fill did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Filled {
    /// The new version's haves (MSB first): the pieces copied.
    pub haves: Vec<u8>,
    pub pieces: u64,
    pub bytes: u64,
}

/// Copies into `dest` (the new version's object file, created if need be)
/// every piece of `new` found in `sources`. Blocking.
pub(super) fn fill(new: &Checked, dest: &Path, sources: &[Source]) -> io::Result<Filled> {
    let pl = u64::from(new.piece_length);
    let n = new.size.div_ceil(pl);
    let mut haves = vec![0u8; n.div_ceil(8) as usize];
    // Where each piece comes from: (source, piece there).
    let mut plan: Vec<(u64, usize, u64)> = Vec::new();
    let mut by_hash: Option<HashMap<&[u8], (usize, u64)>> = None;
    for i in 0..n {
        let len = (new.size - i * pl).min(pl);
        let want = &new.pieces[i as usize * 20..i as usize * 20 + 20];
        let same_index = sources.iter().position(|s| {
            s.piece_length == pl && i * pl < s.size && bit(&s.haves, i) && s.piece_len(i) == len && s.hash(i) == Some(want)
        });
        let found = same_index.map(|k| (k, i)).or_else(|| {
            let map = by_hash.get_or_insert_with(|| index(sources));
            map.get(want).copied().filter(|&(k, j)| sources[k].piece_len(j) == len)
        });
        if let Some((k, j)) = found {
            plan.push((i, k, j));
        }
    }
    if plan.is_empty() {
        return Ok(Filled { haves, ..Filled::default() });
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dest)?;
    if out.metadata()?.len() != new.size {
        out.set_len(new.size)?;
    }
    let files: Vec<File> = sources.iter().map(|s| File::open(&s.path)).collect::<io::Result<_>>()?;
    let mut bytes = 0;
    // Runs of consecutive pieces from consecutive pieces of one source are
    // one copy.
    let mut r = 0;
    while r < plan.len() {
        let (i0, k, j0) = plan[r];
        let mut e = r + 1;
        while e < plan.len() && plan[e].1 == k && plan[e].0 == i0 + (e - r) as u64 && plan[e].2 == j0 + (e - r) as u64 {
            e += 1;
        }
        let (i_last, _, _) = plan[e - 1];
        let len = (i_last * pl + (new.size - i_last * pl).min(pl)) - i0 * pl;
        copy_range(&files[k], j0 * pl, &out, i0 * pl, len)?;
        bytes += len;
        for &(i, _, _) in &plan[r..e] {
            haves[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
        r = e;
    }
    Ok(Filled { haves, pieces: plan.len() as u64, bytes })
}

impl Inner {
    /// Records a version this swarm did not know, filled first from the
    /// versions it names as `similar` that are here. One fill at a time,
    /// and a second ensure of the version waits for it: were the version
    /// known before its fill is done, a read would wake it without those
    /// pieces and librqbit would fetch them all.
    pub(super) async fn add_new(self: &Arc<Self>, ih: InfoHash, checked: &Checked) -> Result<Arc<Version>, SwarmError> {
        let _fill = if checked.similar.is_empty() { None } else { Some(self.filling.lock().await) };
        match self.lookup(ih) {
            Err(SwarmError::NotFound) => {}
            other => return other,
        }
        // The haves are saved before the torrent: until both are, the
        // version is unknown here.
        let haves = self.fill_from_similar(ih, checked).await;
        let (inner, minimal) = (self.clone(), checked.minimal.clone());
        tokio::task::spawn_blocking(move || inner.meta.save_torrent(ih, &minimal)).await.map_err(join_error)??;
        Ok(self.register(Version::new(ih, checked, &self.objects, haves)))
    }

    /// Copies into a new version's object file the pieces it shares with
    /// the versions it names as `similar` that are here (see `reuse`), and
    /// returns its haves. A fill that fails leaves the pieces to the fetch.
    pub(super) async fn fill_from_similar(self: &Arc<Self>, ih: InfoHash, checked: &metainfo::Checked) -> Vec<u8> {
        let sources: Vec<Source> = checked.similar.iter().filter_map(|old| self.reuse_source(*old)).collect();
        if sources.is_empty() {
            if !checked.similar.is_empty() {
                info!(%ih, similar = ?checked.similar, "none of the versions it names is here: fetching all of it");
            }
            return Vec::new();
        }
        let (inner, checked) = (self.clone(), checked.clone());
        let dest = self.object_dir(ih).join(&checked.name);
        let started = std::time::Instant::now();
        let filled = tokio::task::spawn_blocking(move || -> io::Result<Filled> {
            let f = fill(&checked, &dest, &sources)?;
            if f.pieces > 0 {
                inner.meta.save_haves(ih, &f.haves)?;
            }
            Ok(f)
        })
        .await;
        match filled {
            Ok(Ok(f)) => {
                info!(%ih, pieces = f.pieces, bytes = f.bytes, ms = started.elapsed().as_millis() as u64, "filled from the previous version");
                f.haves
            }
            Ok(Err(e)) => {
                warn!(%ih, "could not fill from the previous version; fetching all of it: {e}");
                Vec::new()
            }
            Err(e) => {
                warn!(%ih, "could not fill from the previous version: {e}");
                Vec::new()
            }
        }
    }

    /// A version held here (in part or whole) as a source of pieces.
    fn reuse_source(&self, ih: InfoHash) -> Option<Source> {
        let v = self.lookup(ih).ok()?;
        let haves = if self.range_local(&v, 0, v.size) {
            full_bitfield(v.n_pieces)
        } else {
            match v.live_handle() {
                Some(h) => self.haves_of(&h)?,
                None => v.dormant_haves()?,
            }
        };
        if !haves.iter().any(|b| *b != 0) {
            return None;
        }
        let c = metainfo::check(ih, &v.torrent).ok()?;
        Some(Source { path: v.path.clone(), size: v.size, piece_length: v.piece_length, pieces: c.pieces, haves })
    }
}

/// Every verified piece of the sources by hash.
fn index(sources: &[Source]) -> HashMap<&[u8], (usize, u64)> {
    let mut map = HashMap::new();
    for (k, s) in sources.iter().enumerate() {
        for j in 0..s.size.div_ceil(s.piece_length) {
            if let (true, Some(h)) = (bit(&s.haves, j), s.hash(j)) {
                map.entry(h).or_insert((k, j));
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::metainfo::{check, info_dict, sha1, torrent_file};
    use titorrent_tracker::proto::InfoHash;

    const PL: usize = 16 * 1024;

    fn checked(data: &[u8]) -> Checked {
        let pieces: Vec<u8> = data.chunks(PL).flat_map(sha1).collect();
        let info = info_dict("f", data.len() as u64, PL as u32, &pieces, None);
        check(InfoHash(sha1(&info)), &torrent_file(&info, 0)).unwrap()
    }

    fn source(dir: &Path, name: &str, data: &[u8], haves: Vec<u8>) -> Source {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        let c = checked(data);
        Source { path, size: c.size, piece_length: PL as u64, pieces: c.pieces, haves }
    }

    fn piece(tag: u8) -> Vec<u8> {
        (0..PL).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
    }

    #[test]
    fn fills_same_index_and_moved_pieces_and_leaves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        // Old: pieces A B C D + a short tail; only A, B, D and the tail verified.
        let mut old: Vec<u8> = [piece(1), piece(2), piece(3), piece(4)].concat();
        old.extend_from_slice(&[9u8; 100]);
        let src = source(dir.path(), "old", &old, vec![0b1101_1000]);
        // New: A X B D C + the tail at a new place (not a whole piece there: not taken).
        let mut new: Vec<u8> = [piece(1), piece(7), piece(2), piece(4), piece(3)].concat();
        new.extend_from_slice(&[9u8; 100]);
        let c = checked(&new);
        let dest = dir.path().join("obj").join("f");
        let f = fill(&c, &dest, &[src]).unwrap();
        // A and D at their index, B and the tail moved; X is new and C was
        // not verified: those two are left for the fetch.
        assert_eq!(f.haves, vec![0b1011_0100]);
        assert_eq!((f.pieces, f.bytes), (4, 3 * PL as u64 + 100));
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len(), new.len());
        for i in [0usize, 2, 3] {
            assert_eq!(&got[i * PL..(i + 1) * PL], &new[i * PL..(i + 1) * PL], "piece {i}");
        }
        assert_eq!(&got[5 * PL..], &new[5 * PL..], "the short tail");
        assert!(got[PL..2 * PL].iter().all(|b| *b == 0), "a new piece is left for the fetch");
    }

    #[test]
    fn nothing_in_common_creates_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), "old", &piece(1), vec![0x80]);
        let dest = dir.path().join("obj").join("f");
        let f = fill(&checked(&piece(2)), &dest, &[src]).unwrap();
        assert_eq!((f.haves, f.pieces), (vec![0], 0));
        assert!(!dest.exists());
    }
}

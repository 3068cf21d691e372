//! Edit-torrent metainfo: hashing a finished file into a private single-file
//! BEP 3 torrent, and checking torrent bytes offered under an info hash.
//!
//! We hash and build the dicts ourselves instead of using librqbit's
//! `create_torrent`, which appends a hash of empty data when the size is a
//! multiple of the piece length, always writes `private = 0` and hashes with
//! 8 KiB reads (QUIRKS.md #3); the bencode itself is librqbit's (serde
//! structs whose fields are declared in sorted key order, as bencode
//! requires).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use librqbit_bencode::raw_value::RawValue;
use librqbit_bencode::ByteBuf;
use librqbit_sha1_wrapper::{ISha1, Sha1};
use serde::{Deserialize, Serialize};
use titorrent_tracker::proto::InfoHash;

use super::error::SwarmError;

/// Smallest piece length; doubled until the file has at most `MAX_PIECES`.
pub const MIN_PIECE_LENGTH: u32 = 256 * 1024;
pub const MAX_PIECES: u64 = 16384;
/// Read size while hashing.
const HASH_BUF: usize = 1024 * 1024;
/// Files at least this large are hashed on several threads.
const PARALLEL_HASH_MIN: u64 = 32 * 1024 * 1024;
const MAX_HASH_THREADS: usize = 4;
pub const CREATED_BY: &str = concat!("titorrent/", env!("CARGO_PKG_VERSION"));

pub fn piece_length_for(size: u64) -> u32 {
    let mut pl = MIN_PIECE_LENGTH;
    while size.div_ceil(u64::from(pl)) > MAX_PIECES && pl < (1 << 30) {
        pl *= 2;
    }
    pl
}

/// The piece length of a new version of a file whose previous version had
/// `base` pieces: the same, so that its untouched pieces keep their hashes
/// (and members keep their bytes), unless the file grew or shrank past a
/// factor of four of what `piece_length_for` would choose.
pub fn piece_length_after(base: u32, size: u64) -> u32 {
    let fresh = piece_length_for(size);
    if base >= fresh / 4 && base <= fresh.saturating_mul(4) {
        base
    } else {
        fresh
    }
}

/// What a new version may take from the version it was edited from: that
/// version's geometry and piece hashes, and the byte ranges of the new file
/// that may differ from it (everything else is the base's bytes at the same
/// offsets).
pub struct Reuse {
    pub base: InfoHash,
    pub base_size: u64,
    pub piece_length: u32,
    /// The base's piece hashes, 20 bytes each.
    pub pieces: Vec<u8>,
    /// Sorted, disjoint `[start, end)` ranges.
    pub dirty: Vec<(u64, u64)>,
}

impl Reuse {
    /// The hash of each piece of a new file of `size` bytes and piece length
    /// `pl` that is known without reading it: its range is a whole piece of
    /// the base (same start, same length) that no write touched.
    fn known(&self, size: u64, pl: u32) -> Vec<Option<[u8; 20]>> {
        let pl = u64::from(pl);
        let n = size.div_ceil(pl);
        if pl != u64::from(self.piece_length) {
            return vec![None; n as usize];
        }
        let base_n = self.base_size.div_ceil(pl);
        let mut d = 0usize;
        (0..n)
            .map(|i| {
                let (start, end) = (i * pl, ((i + 1) * pl).min(size));
                let base_end = ((i + 1) * pl).min(self.base_size);
                if i >= base_n || end != base_end {
                    return None;
                }
                while d < self.dirty.len() && self.dirty[d].1 <= start {
                    d += 1;
                }
                if d < self.dirty.len() && self.dirty[d].0 < end {
                    return None;
                }
                let h = self.pieces.get(i as usize * 20..i as usize * 20 + 20)?;
                h.try_into().ok()
            })
            .collect()
    }
}

/// A torrent built for a local file.
pub struct Built {
    pub info_hash: InfoHash,
    /// The whole bencoded .torrent.
    pub torrent: Vec<u8>,
    pub size: u64,
    pub piece_length: u32,
    /// Pieces read and hashed (the others' hashes were known).
    pub hashed: u64,
}

/// Hashes `path` (blocking: call from a blocking thread) and builds its torrent.
#[cfg(test)]
pub fn build(path: &Path, name: &str, creation_date: u64) -> Result<Built, SwarmError> {
    build_from(path, name, creation_date, None)
}

/// [`build`] for an edit of `reuse.base`: the pieces no write touched keep
/// the base's hashes (only the others are read and hashed), and the info
/// dict names the base as `similar` (BEP 38). Also returns how many pieces
/// were hashed.
pub fn build_from(path: &Path, name: &str, creation_date: u64, reuse: Option<&Reuse>) -> Result<Built, SwarmError> {
    check_name(name)?;
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(SwarmError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        )));
    }
    let size = meta.len();
    if size == 0 {
        return Err(SwarmError::EmptyFile);
    }
    let piece_length = reuse.map_or_else(|| piece_length_for(size), |r| piece_length_after(r.piece_length, size));
    let known = reuse.map(|r| r.known(size, piece_length));
    let pieces = hash_pieces(&file, size, piece_length, known.as_deref())?;
    let hashed = known.as_ref().map_or(size.div_ceil(u64::from(piece_length)), |k| k.iter().filter(|h| h.is_none()).count() as u64);
    // The caller promised not to touch the file; a changed length means it did.
    if file.metadata()?.len() != size {
        return Err(SwarmError::Io(io::Error::other(
            "the file changed size while it was being hashed",
        )));
    }
    let info = info_dict(name, size, piece_length, &pieces, reuse.map(|r| r.base));
    let info_hash = InfoHash(sha1(&info));
    Ok(Built {
        info_hash,
        torrent: torrent_file(&info, creation_date),
        size,
        piece_length,
        hashed,
    })
}

/// SHA-1 of every piece, concatenated. Pieces are split into contiguous runs,
/// one per thread, each read with large positioned reads.
/// `known[i]`, when given and `Some`, is piece `i`'s hash: it is not read.
fn hash_pieces(file: &File, size: u64, piece_length: u32, known: Option<&[Option<[u8; 20]>]>) -> io::Result<Vec<u8>> {
    let pl = u64::from(piece_length);
    let n_pieces = size.div_ceil(pl);
    let to_read = known.map_or(size, |k| k.iter().filter(|h| h.is_none()).count() as u64 * pl);
    let threads = if to_read >= PARALLEL_HASH_MIN {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_HASH_THREADS)
    } else {
        1
    } as u64;
    let per_thread = n_pieces.div_ceil(threads);
    let runs: Vec<(u64, u64)> = (0..threads)
        .map(|t| (t * per_thread, ((t + 1) * per_thread).min(n_pieces)))
        .filter(|(a, b)| a < b)
        .collect();
    if runs.len() == 1 {
        return hash_run(file, size, pl, 0, n_pieces, known);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|&(a, b)| s.spawn(move || hash_run(file, size, pl, a, b, known)))
            .collect();
        let mut out = Vec::with_capacity(n_pieces as usize * 20);
        for h in handles {
            let part = h
                .join()
                .map_err(|_| io::Error::other("a hashing thread panicked"))??;
            out.extend_from_slice(&part);
        }
        Ok(out)
    })
}

/// Hashes pieces `first..end` of the file, reading only those whose hash
/// is not `known`.
fn hash_run(file: &File, size: u64, pl: u64, first: u64, end: u64, known: Option<&[Option<[u8; 20]>]>) -> io::Result<Vec<u8>> {
    let Some(known) = known else { return hash_span(file, size, pl, first, end) };
    let mut out = Vec::with_capacity((end - first) as usize * 20);
    let mut i = first;
    while i < end {
        if let Some(h) = known.get(i as usize).copied().flatten() {
            out.extend_from_slice(&h);
            i += 1;
            continue;
        }
        // A run of pieces to read, hashed in large reads.
        let mut j = i + 1;
        while j < end && known.get(j as usize).copied().flatten().is_none() {
            j += 1;
        }
        out.extend_from_slice(&hash_span(file, size, pl, i, j)?);
        i = j;
    }
    Ok(out)
}

/// Hashes every piece of `first..end`.
fn hash_span(file: &File, size: u64, pl: u64, first: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity((end - first) as usize * 20);
    let mut buf = vec![0u8; HASH_BUF];
    let mut pos = first * pl;
    let stop = (end * pl).min(size);
    let mut hasher = Sha1::new();
    let mut in_piece = 0u64;
    while pos < stop {
        let want = (stop - pos).min(buf.len() as u64) as usize;
        let got = file.read_at(&mut buf[..want], pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was being hashed",
            ));
        }
        let mut chunk = &buf[..got];
        pos += got as u64;
        while !chunk.is_empty() {
            let take = (pl - in_piece).min(chunk.len() as u64) as usize;
            hasher.update(&chunk[..take]);
            in_piece += take as u64;
            chunk = &chunk[take..];
            if in_piece == pl {
                out.extend_from_slice(&finish_reset(&mut hasher));
                in_piece = 0;
            }
        }
    }
    if in_piece > 0 {
        // The short last piece of the file.
        out.extend_from_slice(&finish_reset(&mut hasher));
    }
    Ok(out)
}

/// The digest so far, leaving a fresh hasher in its place.
fn finish_reset(h: &mut Sha1) -> [u8; 20] {
    std::mem::replace(h, Sha1::new()).finish()
}

/// SHA-1 of `data` (librqbit's implementation: aws-lc, fast in debug builds too).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(data);
    h.finish()
}

/// A name that is one path component, as librqbit and other clients will
/// use it as the file name.
pub fn check_name(name: &str) -> Result<(), SwarmError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(SwarmError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// Bencodes a dict of plain fields (cannot fail).
fn bencode(v: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    librqbit_bencode::bencode_serialize_to_writer(v, &mut out).expect("a dict of plain fields serializes");
    out
}

/// The info dict, keys in sorted (raw byte) order as bencode requires.
/// `similar` (BEP 38) names the version this one was edited from, so that a
/// client holding it can reuse its pieces.
pub fn info_dict(name: &str, length: u64, piece_length: u32, pieces: &[u8], similar: Option<InfoHash>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Info<'a> {
        length: u64,
        name: &'a str,
        #[serde(rename = "piece length")]
        piece_length: u32,
        pieces: ByteBuf<'a>,
        private: u8,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        similar: Vec<ByteBuf<'a>>,
    }
    let similar = similar.as_ref().map(|s| ByteBuf(&s.0[..])).into_iter().collect();
    bencode(&Info { length, name, piece_length, pieces: ByteBuf(pieces), private: 1, similar })
}

/// The info hashes a raw info dict names under `similar` (BEP 38); none if
/// the key is missing or is not a list of 20-byte strings.
fn similar_of(info: &[u8]) -> Vec<InfoHash> {
    #[derive(Deserialize)]
    struct Similar<'a> {
        #[serde(borrow, default)]
        similar: Vec<ByteBuf<'a>>,
    }
    let Ok(d) = librqbit_bencode::from_bytes::<Similar<'_>>(info) else { return Vec::new() };
    d.similar.iter().filter_map(|h| <[u8; 20]>::try_from(h.0).ok()).map(InfoHash).collect()
}

/// The .torrent around an info dict. No `announce`: peers come from the
/// group's member list, never from public trackers.
pub fn torrent_file(info: &[u8], creation_date: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Torrent<'a> {
        #[serde(rename = "created by")]
        created_by: &'a str,
        #[serde(rename = "creation date")]
        creation_date: u64,
        info: RawValue<ByteBuf<'a>>,
    }
    bencode(&Torrent { created_by: CREATED_BY, creation_date, info: RawValue(ByteBuf(info)) })
}

/// A torrent that passed [`check`]: what the swarm needs to know of it.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The minimal .torrent to give librqbit: just the info dict, so that no
    /// announce URL in the offered bytes can make us talk to a public tracker.
    pub minimal: Vec<u8>,
    pub size: u64,
    pub piece_length: u32,
    /// The file's name in the info dict (one path component).
    pub name: String,
    /// The piece hashes, 20 bytes each.
    pub pieces: Vec<u8>,
    /// The versions it names as `similar` (BEP 38): the one it was edited from.
    pub similar: Vec<InfoHash>,
}

/// Checks that `torrent` is a single-file v1 torrent whose info dict hashes
/// to `info_hash`, and returns it in the form the swarm keeps.
pub fn check(info_hash: InfoHash, torrent: &[u8]) -> Result<Checked, SwarmError> {
    let meta = librqbit::torrent_from_bytes(torrent)
        .map_err(|e| SwarmError::InvalidTorrent(e.to_string()))?;
    if meta.info_hash.0 != info_hash.0 {
        return Err(SwarmError::HashMismatch {
            expected: info_hash,
        });
    }
    let info = &meta.info.data;
    let invalid = |why: &str| SwarmError::InvalidTorrent(why.to_owned());
    if info.files.is_some() {
        return Err(invalid("multi-file torrents are not edit torrents"));
    }
    let size = info.length.ok_or_else(|| invalid("no length"))?;
    if size == 0 {
        return Err(invalid("zero length"));
    }
    let piece_length = info.piece_length;
    if piece_length == 0 || piece_length % (16 * 1024) != 0 {
        return Err(invalid("piece length is not a positive multiple of 16 KiB"));
    }
    if info.pieces.as_ref().len() as u64 != size.div_ceil(u64::from(piece_length)) * 20 {
        return Err(invalid("piece hashes do not match the length"));
    }
    let name = info
        .name
        .as_ref()
        .and_then(|n| std::str::from_utf8(n.as_ref()).ok())
        .ok_or_else(|| invalid("no UTF-8 name"))?;
    check_name(name)?;
    let raw_info: &[u8] = meta.info.raw_bytes.as_ref();
    let mut minimal = Vec::with_capacity(raw_info.len() + 8);
    minimal.extend_from_slice(b"d4:info");
    minimal.extend_from_slice(raw_info);
    minimal.push(b'e');
    Ok(Checked {
        minimal,
        size,
        piece_length,
        name: name.to_owned(),
        pieces: info.pieces.as_ref().to_vec(),
        similar: similar_of(raw_info),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn piece_length_doubles_past_16384_pieces() {
        let k256 = 256 * 1024u64;
        assert_eq!(piece_length_for(1), MIN_PIECE_LENGTH);
        assert_eq!(piece_length_for(k256 * 16384), MIN_PIECE_LENGTH);
        assert_eq!(piece_length_for(k256 * 16384 + 1), 2 * MIN_PIECE_LENGTH);
        assert_eq!(piece_length_for(k256 * 16384 * 4), 4 * MIN_PIECE_LENGTH);
    }

    #[test]
    fn info_dict_is_canonical_bencode() {
        let d = info_dict("a.txt", 5, 262144, &[7u8; 20], None);
        let mut want = b"d6:lengthi5e4:name5:a.txt12:piece lengthi262144e6:pieces20:".to_vec();
        want.extend_from_slice(&[7u8; 20]);
        want.extend_from_slice(b"7:privatei1ee");
        assert_eq!(d, want);
    }

    fn hashes_of(data: &[u8], pl: usize) -> Vec<u8> {
        data.chunks(pl).flat_map(sha1).collect()
    }

    #[test]
    fn build_hashes_pieces_and_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            1usize,
            262144,
            262144 * 3,
            262144 * 3 + 17,
            40 * 1024 * 1024 + 5,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 1000) as u8).collect();
            let p = dir.path().join("f");
            File::create(&p).unwrap().write_all(&data).unwrap();
            let b = build(&p, "f", 1).unwrap();
            assert_eq!(b.size, size as u64);
            let checked = check(b.info_hash, &b.torrent).unwrap();
            assert_eq!((checked.size, checked.piece_length, checked.name.as_str()), (b.size, b.piece_length, "f"));
            let m = librqbit::torrent_from_bytes(&checked.minimal).unwrap();
            assert_eq!(m.info_hash.0, b.info_hash.0);
            let meta = librqbit::torrent_from_bytes(&b.torrent).unwrap();
            assert!(meta.info.data.private);
            assert_eq!(
                meta.info.data.pieces.as_ref(),
                &hashes_of(&data, b.piece_length as usize)[..]
            );
        }
    }

    #[test]
    fn check_rejects_other_hash_and_bad_names() {
        let info = info_dict("x", 3, 262144, &[0u8; 20], None);
        let t = torrent_file(&info, 0);
        let right = InfoHash(sha1(&info));
        assert!(check(right, &t).is_ok());
        assert!(matches!(
            check(InfoHash([1; 20]), &t),
            Err(SwarmError::HashMismatch { .. })
        ));
        assert!(matches!(
            check(right, b"garbage"),
            Err(SwarmError::InvalidTorrent(_))
        ));
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(matches!(check_name(bad), Err(SwarmError::InvalidName(_))));
        }
    }

    /// An edit of a base file: `build_from` gives the hashes a full build
    /// of the new bytes gives, hashing only the pieces under the dirty
    /// ranges (and those past the base's end), and names the base.
    #[test]
    fn an_edit_reuses_the_hashes_of_untouched_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let pl = MIN_PIECE_LENGTH as usize;
        let base: Vec<u8> = (0..pl * 10 + 100).map(|i| (i * 13 + i / 777) as u8).collect();
        let bp = dir.path().join("base");
        std::fs::write(&bp, &base).unwrap();
        let b = build(&bp, "f", 1).unwrap();
        let base_pieces = librqbit::torrent_from_bytes(&b.torrent).unwrap().info.data.pieces.as_ref().to_vec();
        let cases: Vec<(&str, Box<dyn Fn(&mut Vec<u8>) -> Vec<(u64, u64)>>, u64)> = vec![
            ("4 KiB in place", Box::new(|d: &mut Vec<u8>| { d[pl * 5 + 10..pl * 5 + 10 + 4096].fill(1); vec![(pl as u64 * 5 + 10, pl as u64 * 5 + 4106)] }), 1),
            ("over a piece boundary", Box::new(|d: &mut Vec<u8>| { d[pl * 3 - 5..pl * 3 + 5].fill(2); vec![(pl as u64 * 3 - 5, pl as u64 * 3 + 5)] }), 2),
            // The short last piece grows: it and the new one are hashed.
            ("append", Box::new(|d: &mut Vec<u8>| { d.extend_from_slice(&vec![3u8; pl + 7]); vec![(pl as u64 * 10 + 100, u64::MAX)] }), 2),
            // Truncated into piece 4, then extended: everything from there.
            ("truncate then extend", Box::new(|d: &mut Vec<u8>| { d.truncate(pl * 4 + 9); d.resize(pl * 6, 0); vec![(pl as u64 * 4 + 9, u64::MAX)] }), 2),
            ("nothing", Box::new(|_d: &mut Vec<u8>| vec![]), 0),
        ];
        for (what, edit, want_hashed) in cases {
            let mut data = base.clone();
            let dirty = edit(&mut data);
            let np = dir.path().join("new");
            std::fs::write(&np, &data).unwrap();
            let reuse = Reuse { base: b.info_hash, base_size: base.len() as u64, piece_length: b.piece_length, pieces: base_pieces.clone(), dirty };
            let n = build_from(&np, "f", 1, Some(&reuse)).unwrap();
            assert_eq!(n.hashed, want_hashed, "{what}: pieces hashed");
            let checked = check(n.info_hash, &n.torrent).unwrap();
            assert_eq!(checked.pieces, hashes_of(&data, pl), "{what}: the hashes of the new bytes");
            assert_eq!(checked.similar, vec![b.info_hash], "{what}: names its base");
        }
        // A torrent without `similar` names none.
        assert!(check(b.info_hash, &b.torrent).unwrap().similar.is_empty());
    }

    #[test]
    fn the_piece_length_stays_across_versions_within_a_factor_of_four() {
        let k256 = 256 * 1024u64;
        assert_eq!(piece_length_after(MIN_PIECE_LENGTH, k256 * 16384 * 3), MIN_PIECE_LENGTH);
        assert_eq!(piece_length_after(MIN_PIECE_LENGTH, k256 * 16384 * 8), 8 * MIN_PIECE_LENGTH);
        assert_eq!(piece_length_after(4 * MIN_PIECE_LENGTH, 10), 4 * MIN_PIECE_LENGTH);
        assert_eq!(piece_length_after(64 * MIN_PIECE_LENGTH, 10), MIN_PIECE_LENGTH);
    }
}

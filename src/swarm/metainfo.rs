//! Edit-torrent metainfo: hashing a finished file into a private single-file
//! BEP 3 torrent, and checking torrent bytes offered under an info hash.
//!
//! We build the bencode ourselves instead of using librqbit's
//! `create_torrent`, which appends a hash of empty data when the size is a
//! multiple of the piece length, always writes `private = 0` and hashes with
//! 8 KiB reads. The dicts here have a fixed set of keys, so a few lines that
//! write them in sorted order are easier to check against BEP 3 than a serde
//! mapping (which would also need care to encode `pieces` as a byte string).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use librqbit_sha1_wrapper::{ISha1, Sha1};
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

/// A torrent built for a local file.
pub struct Built {
    pub info_hash: InfoHash,
    /// The whole bencoded .torrent.
    pub torrent: Vec<u8>,
    pub size: u64,
    pub piece_length: u32,
}

/// Hashes `path` (blocking: call from a blocking thread) and builds its torrent.
pub fn build(path: &Path, name: &str, creation_date: u64) -> Result<Built, SwarmError> {
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
    let piece_length = piece_length_for(size);
    let pieces = hash_pieces(&file, size, piece_length)?;
    // The caller promised not to touch the file; a changed length means it did.
    if file.metadata()?.len() != size {
        return Err(SwarmError::Io(io::Error::other(
            "the file changed size while it was being hashed",
        )));
    }
    let info = info_dict(name, size, piece_length, &pieces);
    let info_hash = InfoHash(sha1(&info));
    Ok(Built {
        info_hash,
        torrent: torrent_file(&info, creation_date),
        size,
        piece_length,
    })
}

/// SHA-1 of every piece, concatenated. Pieces are split into contiguous runs,
/// one per thread, each read with large positioned reads.
fn hash_pieces(file: &File, size: u64, piece_length: u32) -> io::Result<Vec<u8>> {
    let pl = u64::from(piece_length);
    let n_pieces = size.div_ceil(pl);
    let threads = if size >= PARALLEL_HASH_MIN {
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
        return hash_run(file, size, pl, 0, n_pieces);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|&(a, b)| s.spawn(move || hash_run(file, size, pl, a, b)))
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

/// Hashes pieces `first..end` of the file.
fn hash_run(file: &File, size: u64, pl: u64, first: u64, end: u64) -> io::Result<Vec<u8>> {
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

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

fn put_int(out: &mut Vec<u8>, i: u64) {
    out.push(b'i');
    out.extend_from_slice(i.to_string().as_bytes());
    out.push(b'e');
}

/// The info dict, keys in sorted (raw byte) order as bencode requires.
pub fn info_dict(name: &str, length: u64, piece_length: u32, pieces: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(pieces.len() + name.len() + 96);
    d.push(b'd');
    put_bytes(&mut d, b"length");
    put_int(&mut d, length);
    put_bytes(&mut d, b"name");
    put_bytes(&mut d, name.as_bytes());
    put_bytes(&mut d, b"piece length");
    put_int(&mut d, u64::from(piece_length));
    put_bytes(&mut d, b"pieces");
    put_bytes(&mut d, pieces);
    put_bytes(&mut d, b"private");
    put_int(&mut d, 1);
    d.push(b'e');
    d
}

/// The .torrent around an info dict. No `announce`: peers come from the
/// group's member list, never from public trackers.
pub fn torrent_file(info: &[u8], creation_date: u64) -> Vec<u8> {
    let mut t = Vec::with_capacity(info.len() + 64);
    t.push(b'd');
    put_bytes(&mut t, b"created by");
    put_bytes(&mut t, CREATED_BY.as_bytes());
    put_bytes(&mut t, b"creation date");
    put_int(&mut t, creation_date);
    put_bytes(&mut t, b"info");
    t.extend_from_slice(info);
    t.push(b'e');
    t
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
        let d = info_dict("a.txt", 5, 262144, &[7u8; 20]);
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
        let info = info_dict("x", 3, 262144, &[0u8; 20]);
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
}

//! What the tracker checks of a published torrent before members act on
//! it: one file whose length is the entry's size, a sane piece length and
//! piece count, and an info hash that is the SHA-1 of its info dict. A
//! member that publishes a 10 TiB torrent for a small file would otherwise
//! make every other member create a 10 TiB sparse object.

use librqbit_bencode::{ByteBuf, WithRawBytes};
use serde::de::IgnoredAny;
use serde::Deserialize;
use sha1::{Digest, Sha1};

use crate::proto::{InfoHash, ProtoError};

/// The largest file a group may share (1 TiB).
pub(crate) const MAX_FILE_SIZE: u64 = 1 << 40;
/// Piece lengths allowed: powers of two in this range (titorrent itself
/// uses 256 KiB and up, see `src/swarm/metainfo.rs`).
pub(crate) const MIN_PIECE_LENGTH: u64 = 16 * 1024;
pub(crate) const MAX_PIECE_LENGTH: u64 = 1 << 30;

fn bad(why: impl Into<String>) -> ProtoError {
    ProtoError::BadRequest(format!("torrent refused: {}", why.into()))
}

/// The parts of a .torrent the tracker checks. Parsed with librqbit's
/// bencode (serde; bounded nesting, so a hostile torrent cannot exhaust
/// the stack; trailing bytes refused); other keys are ignored.
#[derive(Deserialize)]
struct Torrent<'a> {
    #[serde(borrow)]
    info: Option<WithRawBytes<Info<'a>, ByteBuf<'a>>>,
}

#[derive(Deserialize)]
struct Info<'a> {
    length: Option<i64>,
    files: Option<IgnoredAny>,
    #[serde(rename = "piece length")]
    piece_length: Option<i64>,
    #[serde(borrow)]
    pieces: Option<ByteBuf<'a>>,
}

/// Refuses `torrent` unless it describes one file of `size` bytes with
/// `info_hash`, within the bounds above.
pub(crate) fn check(torrent: &[u8], size: u64, info_hash: InfoHash) -> Result<(), ProtoError> {
    if size > MAX_FILE_SIZE {
        return Err(bad(format!("a file of {size} bytes is over the limit of {MAX_FILE_SIZE}")));
    }
    let top: Torrent<'_> = librqbit_bencode::from_bytes(torrent).map_err(|e| bad(format!("not a bencoded dict: {e}")))?;
    let WithRawBytes { data: info, raw_bytes } = top.info.ok_or_else(|| bad("no info dict"))?;
    let hash: [u8; 20] = Sha1::digest(raw_bytes.0).into();
    if hash != info_hash.0 {
        return Err(bad("the info hash is not the SHA-1 of its info dict"));
    }
    if info.files.is_some() {
        return Err(bad("a torrent of several files"));
    }
    let length = info.length.ok_or_else(|| bad("no length"))?;
    if u64::try_from(length).ok() != Some(size) {
        return Err(bad(format!("its length {length} is not the file's size {size}")));
    }
    let pl = info.piece_length.ok_or_else(|| bad("no piece length"))?;
    let pl = u64::try_from(pl).map_err(|_| bad("piece length"))?;
    if !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&pl) || !pl.is_power_of_two() {
        return Err(bad(format!("piece length {pl} (a power of two from {MIN_PIECE_LENGTH} to {MAX_PIECE_LENGTH})")));
    }
    let pieces = info.pieces.ok_or_else(|| bad("no pieces"))?;
    if pieces.0.len() as u64 != 20 * size.div_ceil(pl) {
        return Err(bad(format!("{} bytes of piece hashes for {} pieces", pieces.0.len(), size.div_ceil(pl))));
    }
    Ok(())
}

/// A valid single-file torrent of `size` bytes (for tests): its info hash
/// and bytes. Keys in bencode order.
pub fn test_torrent(tag: u8, size: u64) -> (InfoHash, Vec<u8>) {
    let pl = MIN_PIECE_LENGTH;
    let pieces = vec![tag; 20 * size.div_ceil(pl) as usize];
    let mut info = format!("d6:lengthi{size}e4:name1:{}12:piece lengthi{pl}e6:pieces{}:", tag as char, pieces.len()).into_bytes();
    info.extend_from_slice(&pieces);
    info.push(b'e');
    let ih = InfoHash(Sha1::digest(&info).into());
    let mut t = b"d4:info".to_vec();
    t.extend_from_slice(&info);
    t.push(b'e');
    (ih, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torrent_must_match_the_entry_and_stay_in_bounds() {
        let (ih, t) = test_torrent(b'a', 100_000);
        check(&t, 100_000, ih).unwrap();
        let refused = |t: &[u8], size, ih| check(t, size, ih).unwrap_err().to_string();
        assert!(refused(&t, 5, ih).contains("not the file's size"));
        assert!(refused(&t, 100_000, InfoHash([0; 20])).contains("SHA-1"));
        assert!(refused(&t, 1 << 41, ih).contains("over the limit"));
        // A 10 TiB torrent for a small file.
        let big = 10u64 << 40;
        let mut info = format!("d6:lengthi{big}e4:name1:x12:piece lengthi{}e6:pieces20:", 1u64 << 30).into_bytes();
        info.extend_from_slice(&[0; 20]);
        info.push(b'e');
        let mut t2 = b"d4:info".to_vec();
        t2.extend_from_slice(&info);
        t2.push(b'e');
        let ih2 = InfoHash(Sha1::digest(&info).into());
        assert!(refused(&t2, 5, ih2).contains("not the file's size"));
        assert!(refused(&t2, big, ih2).contains("over the limit"));
        for garbage in [&b""[..], b"d4:infodee", b"d4:infoi3ee", b"ddddddddddddddddddddddddddddddddddddddddd", b"d4:info99999:x"] {
            assert!(check(garbage, 5, ih).is_err());
        }
        // Nested past any torrent's depth under a key nobody reads.
        let mut deep = t[..t.len() - 1].to_vec();
        deep.extend_from_slice(b"4:zzzz");
        deep.extend(std::iter::repeat_n(b'l', 100_000));
        deep.extend(std::iter::repeat_n(b'e', 100_000));
        deep.push(b'e');
        assert!(refused(&deep, 100_000, ih).contains("torrent refused"));
        // Trailing bytes after the dict.
        let mut trailing = t.clone();
        trailing.push(b'x');
        assert!(refused(&trailing, 100_000, ih).contains("not a bencoded dict"));
    }
}

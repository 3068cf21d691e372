//! What the tracker checks of a published torrent before members act on
//! it: one file whose length is the entry's size, a sane piece length and
//! piece count, and an info hash that is the SHA-1 of its info dict. A
//! member that publishes a 10 TiB torrent for a small file would otherwise
//! make every other member create a 10 TiB sparse object.

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

/// A bencoded value, borrowing from the input.
enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List,
    /// Keys and values, and the dict's own bytes.
    Dict(Vec<(&'a [u8], Value<'a>)>, &'a [u8]),
}

/// Parses one value at `b[at..]`; returns it and where it ends. Nesting is
/// bounded so that a hostile torrent cannot exhaust the stack.
fn parse(b: &[u8], at: usize, depth: u32) -> Result<(Value<'_>, usize), ProtoError> {
    if depth > 32 {
        return Err(bad("nested too deep"));
    }
    match b.get(at) {
        Some(b'i') => {
            let end = b[at..].iter().position(|c| *c == b'e').ok_or_else(|| bad("unterminated integer"))? + at;
            let s = std::str::from_utf8(&b[at + 1..end]).map_err(|_| bad("integer"))?;
            Ok((Value::Int(s.parse().map_err(|_| bad("integer"))?), end + 1))
        }
        Some(b'l') => {
            let mut i = at + 1;
            while b.get(i) != Some(&b'e') {
                i = parse(b, i, depth + 1)?.1;
            }
            Ok((Value::List, i + 1))
        }
        Some(b'd') => {
            let mut i = at + 1;
            let mut items = Vec::new();
            while b.get(i) != Some(&b'e') {
                let (k, next) = parse(b, i, depth + 1)?;
                let Value::Bytes(k) = k else { return Err(bad("a dict key is not a string")) };
                let (v, next) = parse(b, next, depth + 1)?;
                items.push((k, v));
                i = next;
            }
            Ok((Value::Dict(items, &b[at..i + 1]), i + 1))
        }
        Some(c) if c.is_ascii_digit() => {
            let colon = b[at..].iter().position(|c| *c == b':').ok_or_else(|| bad("string"))? + at;
            let len: usize = std::str::from_utf8(&b[at..colon]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad("string"))?;
            let end = colon.checked_add(1 + len).filter(|e| *e <= b.len()).ok_or_else(|| bad("string past the end"))?;
            Ok((Value::Bytes(&b[colon + 1..end]), end))
        }
        _ => Err(bad("not bencode")),
    }
}

fn get<'v, 'a>(d: &'v [(&'a [u8], Value<'a>)], key: &[u8]) -> Option<&'v Value<'a>> {
    d.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Refuses `torrent` unless it describes one file of `size` bytes with
/// `info_hash`, within the bounds above.
pub(crate) fn check(torrent: &[u8], size: u64, info_hash: InfoHash) -> Result<(), ProtoError> {
    if size > MAX_FILE_SIZE {
        return Err(bad(format!("a file of {size} bytes is over the limit of {MAX_FILE_SIZE}")));
    }
    let (top, end) = parse(torrent, 0, 0)?;
    if end != torrent.len() {
        return Err(bad("trailing bytes"));
    }
    let Value::Dict(top, _) = top else { return Err(bad("not a dict")) };
    let Some(Value::Dict(info, info_bytes)) = get(&top, b"info") else { return Err(bad("no info dict")) };
    let hash: [u8; 20] = Sha1::digest(info_bytes).into();
    if hash != info_hash.0 {
        return Err(bad("the info hash is not the SHA-1 of its info dict"));
    }
    if get(info, b"files").is_some() {
        return Err(bad("a torrent of several files"));
    }
    let Some(Value::Int(length)) = get(info, b"length") else { return Err(bad("no length")) };
    if u64::try_from(*length).ok() != Some(size) {
        return Err(bad(format!("its length {length} is not the file's size {size}")));
    }
    let Some(Value::Int(pl)) = get(info, b"piece length") else { return Err(bad("no piece length")) };
    let pl = u64::try_from(*pl).map_err(|_| bad("piece length"))?;
    if !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&pl) || !pl.is_power_of_two() {
        return Err(bad(format!("piece length {pl} (a power of two from {MIN_PIECE_LENGTH} to {MAX_PIECE_LENGTH})")));
    }
    let Some(Value::Bytes(pieces)) = get(info, b"pieces") else { return Err(bad("no pieces")) };
    if pieces.len() as u64 != 20 * size.div_ceil(pl) {
        return Err(bad(format!("{} bytes of piece hashes for {} pieces", pieces.len(), size.div_ceil(pl))));
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
    }
}

//! `titorrent export`: serves one version of a file to standard BitTorrent
//! clients for a while, and hands out its .torrent with an announce URL
//! scoped to that version and that time.
//!
//! The daemon opens the version on its export port (xattr
//! user.titorrent.export); the tracker, asked for an export key
//! (`calls::ExportKey`), lists this member's export address to clients
//! that announce that one info hash with that key until it expires.

use super::files::{authenticated, mount_holding};
use super::xattr;
use crate::state::StateDir;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Duration;
use titorrent_tracker::calls;
use titorrent_tracker::proto::InfoHash;

pub async fn export(path: &Path, ttl: Duration, revoke: bool, out: Option<PathBuf>) -> anyhow::Result<()> {
    let (_, mount) = mount_holding(path)?;
    let shown = path.display();
    let state = xattr::get_string(&mount.mount_point, xattr::STATE_DIR)?.context("the mount's state directory")?;
    let st = StateDir::new(&state);
    let Some(hex) = xattr::get_string(path, xattr::INFO_HASH)?.filter(|h| !h.is_empty()) else {
        bail!("{shown} has no published version (an empty file or a directory cannot be exported)")
    };
    let mut raw = [0u8; 20];
    hex::decode_to_slice(&hex, &mut raw).with_context(|| format!("info hash {hex}"))?;
    let info_hash = InfoHash(raw);
    let m = st.load()?;
    let mut conn = authenticated(&st, &m).await?;
    if revoke {
        xattr::remove(path, xattr::EXPORT).with_context(|| format!("cannot revoke the export of {shown}"))?;
        conn.call(calls::Unexport { info_hash }).await.context("telling the tracker")?;
        println!("{shown} is no longer exported");
        return Ok(());
    }
    let secs = ttl.as_secs().max(1).to_string();
    xattr::set(path, xattr::EXPORT, secs.as_bytes()).with_context(|| format!("cannot export {shown}"))?;
    let Some(served) = xattr::get_string(path, xattr::EXPORT)? else { bail!("the daemon did not export {shown}") };
    let (addr, _) = served.split_once(' ').context("the daemon's export answer")?;
    let port: u16 = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).context("the export port")?;
    let call = calls::ExportKey { info_hash, ttl_ms: ttl.as_millis() as u64, port };
    let calls::AnnounceKey { key, expires } = conn.call(call).await.context("asking the tracker for an export key")?;
    let url = format!("http://{}/announce/{key}", m.tracker);
    let torrent = std::fs::read(st.torrents().join(format!("{hex}.torrent"))).context("the version's .torrent")?;
    let exported = with_announce(&torrent, &url).context("the version's .torrent is not a bencoded dictionary")?;
    let out = out.unwrap_or_else(|| st.root().join("exports").join(format!("{hex}.torrent")));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    std::fs::write(&out, exported).with_context(|| format!("writing {}", out.display()))?;
    println!("exported {shown} until {} (unix ms {expires})", until_text(expires));
    println!("torrent: {}", out.display());
    println!("announce: {url}");
    println!("magnet:?xt=urn:btih:{hex}&x.pe={addr}");
    Ok(())
}

/// `torrent` (a bencoded dictionary) with its `announce` key set to `url`:
/// dictionary keys are sorted, and "announce" comes before every key our
/// torrents have ("created by", "creation date", "info"), so it goes
/// first; an existing one is replaced. `None` if `torrent` is not a
/// dictionary whose first key sorts at or after "announce".
fn with_announce(torrent: &[u8], url: &str) -> Option<Vec<u8>> {
    let body = torrent.strip_prefix(b"d")?;
    let (first, rest) = bytes_at(body)?;
    let tail = match first {
        b"announce" => bytes_at(rest)?.1,
        k if k > b"announce".as_slice() => body,
        _ => return None,
    };
    let mut out = b"d8:announce".to_vec();
    out.extend_from_slice(format!("{}:{url}", url.len()).as_bytes());
    out.extend_from_slice(tail);
    Some(out)
}

/// A bencoded byte string at the start of `b`, and what follows it.
fn bytes_at(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = b.iter().position(|c| *c == b':')?;
    let len: usize = std::str::from_utf8(&b[..colon]).ok()?.parse().ok()?;
    let rest = &b[colon + 1..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn until_text(unix_ms: u64) -> String {
    std::time::UNIX_EPOCH
        .checked_add(Duration::from_millis(unix_ms))
        .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
        .map(|d| format!("{} min from now", d.as_secs().div_ceil(60)))
        .unwrap_or_else(|| "now".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announce_key_goes_first_or_replaces_the_old_one() {
        let t = b"d10:created by9:titorrent4:infod4:name1:aee";
        assert_eq!(with_announce(t, "http://t/a").unwrap(), b"d8:announce10:http://t/a10:created by9:titorrent4:infod4:name1:aee");
        let again = with_announce(&with_announce(t, "http://t/a").unwrap(), "http://t/bb").unwrap();
        assert_eq!(again, b"d8:announce11:http://t/bb10:created by9:titorrent4:infod4:name1:aee");
        assert!(with_announce(b"d1:ai1ee", "u").is_none(), "a key before announce");
        assert!(with_announce(b"l4:spame", "u").is_none());
        assert!(with_announce(b"d99:x", "u").is_none());
    }
}

//! Provides `titorrent pin` and `unpin`: they set or remove the xattr
//! user.titorrent.pin on a path inside a mount (the daemon keeps pinned
//! files local), and pin waits, showing progress, until every byte under
//! the path is local (xattr user.titorrent.bytes_local of each file
//! against its size).

use super::files::mount_holding;
use super::progress::Progress;
use super::xattr;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often pin re-reads the files' local byte counts.
const POLL: Duration = Duration::from_millis(500);

pub fn pin(path: &Path, no_wait: bool, timeout: Option<Duration>) -> anyhow::Result<()> {
    mount_holding(path)?;
    let shown = path.display();
    if let Err(e) = xattr::set(path, xattr::PIN, b"1") {
        if xattr::unsupported(&e) {
            bail!("cannot pin {shown}: this titorrent mount does not support pinning (its daemon predates it)");
        }
        return Err(e).with_context(|| format!("cannot pin {shown}"));
    }
    if no_wait {
        println!("pinned {shown}");
        return Ok(());
    }
    let started = Instant::now();
    let mut progress: Option<Progress> = None;
    loop {
        let (local, total) = match local_bytes(path)? {
            Some(t) => t,
            None => {
                if let Some(p) = progress {
                    p.finish("");
                }
                println!("pinned {shown}; this mount does not report how much is local (user.titorrent.bytes_local), so not waiting");
                return Ok(());
            }
        };
        let p = progress.get_or_insert_with(|| Progress::new(&format!("{shown}"), total));
        p.set(local, total);
        if local >= total {
            let p = progress.take().expect("set above");
            p.finish(&format!("pinned {shown}: all {} local", indicatif::HumanBytes(total)));
            return Ok(());
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            let line = progress.as_ref().map(Progress::line).unwrap_or_default();
            if let Some(p) = progress.take() {
                p.finish("");
            }
            bail!("gave up waiting after {:?} ({line}); {shown} stays pinned and keeps fetching", timeout.unwrap_or_default());
        }
        std::thread::sleep(POLL);
    }
}

pub fn unpin(path: &Path) -> anyhow::Result<()> {
    mount_holding(path)?;
    let shown = path.display();
    match xattr::remove(path, xattr::PIN) {
        Ok(true) => println!("unpinned {shown}"),
        Ok(false) => println!("{shown} was not pinned"),
        Err(e) if xattr::unsupported(&e) => bail!("cannot unpin {shown}: this titorrent mount does not support pinning"),
        Err(e) => return Err(e).with_context(|| format!("cannot unpin {shown}")),
    }
    Ok(())
}

/// (bytes local, bytes in total) over the regular files under `path`;
/// `None` when the mount does not report bytes_local.
fn local_bytes(path: &Path) -> anyhow::Result<Option<(u64, u64)>> {
    let mut files = Vec::new();
    walk(path, &mut files)?;
    let (mut local, mut total, mut reported) = (0u64, 0u64, files.is_empty());
    for (f, size) in files {
        total += size;
        match xattr::get_string(&f, xattr::BYTES_LOCAL) {
            Ok(Some(v)) => {
                reported = true;
                local += v.parse::<u64>().unwrap_or(0).min(size);
            }
            Ok(None) => {}
            Err(e) if xattr::unsupported(&e) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // deleted meanwhile
            Err(e) => return Err(e).with_context(|| format!("{}", f.display())),
        }
    }
    Ok(reported.then_some((local, total)))
}

fn walk(path: &Path, out: &mut Vec<(PathBuf, u64)>) -> anyhow::Result<()> {
    let md = std::fs::symlink_metadata(path).with_context(|| format!("{}", path.display()))?;
    if md.is_file() {
        out.push((path.to_path_buf(), md.len()));
    } else if md.is_dir() {
        for e in std::fs::read_dir(path).with_context(|| format!("{}", path.display()))? {
            walk(&e?.path(), out)?;
        }
    }
    Ok(())
}

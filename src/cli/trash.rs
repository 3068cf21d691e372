//! `titorrent trash` and `titorrent undelete`: what was deleted (or replaced
//! by a rename) in the group within the tracker's trash retention, and
//! bringing it back where it was.

use super::files::{self, authenticated, local_time};
use crate::config::Config;
use anyhow::{bail, Context};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use titorrent_tracker::calls;
use titorrent_tracker::proto::{FileId, TrashEntry};

/// A path inside a mount that may no longer exist: the mount, the member,
/// and the path from the group's root ("a/b").
struct Place {
    mount_point: PathBuf,
    state: crate::state::StateDir,
    rel: String,
}

/// Resolves `path` through its nearest existing ancestor.
fn place(path: &Path, state: Option<&Path>, config: &Config) -> anyhow::Result<Place> {
    let abs = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
            bail!("{} is not inside a titorrent mount", path.display());
        };
        rest.push(name.to_owned());
        existing = parent;
    }
    let (canon, mount) = files::mount_holding(existing)?;
    let state = files::state_of(&mount, state, config)?;
    let mut rel = canon.strip_prefix(&mount.mount_point).map(Path::to_path_buf).unwrap_or_default();
    rel.extend(rest.iter().rev());
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => bail!("{}: give a path without ..", path.display()),
        }
    }
    Ok(Place { mount_point: mount.mount_point, state, rel: parts.join("/") })
}

/// Whether `entry_path` is `rel` or below it ("" is the whole group).
fn under(entry_path: &str, rel: &str) -> bool {
    rel.is_empty() || entry_path == rel || entry_path.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
}

async fn list(conn: &mut crate::tracker_client::Connection) -> anyhow::Result<Vec<TrashEntry>> {
    conn.call(calls::ListTrash).await.context("reading the trash")
}

/// `titorrent trash [PATH]`: the trash of the group (or of what was under
/// PATH), newest first.
pub async fn show(path: &Path, state: Option<&Path>, config: &Config) -> anyhow::Result<()> {
    let at = place(path, state, config)?;
    let m = at.state.load()?;
    let mut conn = authenticated(&at.state, &m).await?;
    let entries: Vec<TrashEntry> = list(&mut conn).await?.into_iter().filter(|t| under(&t.path, &at.rel)).collect();
    if entries.is_empty() {
        println!("the trash is empty{}", if at.rel.is_empty() { String::new() } else { format!(" under {}", at.rel) });
        return Ok(());
    }
    let names = files::member_names(&mut conn).await?;
    println!("{:<19}  {:<12} {:>10}  PATH", "DELETED", "BY", "SIZE");
    for t in entries {
        println!(
            "{:<19}  {:<12} {:>10}  {}",
            local_time(t.deleted_at),
            files::name_of(&names, t.by),
            indicatif::HumanBytes(t.entry.size).to_string(),
            t.path
        );
    }
    Ok(())
}

/// `titorrent undelete PATH`: brings back the file that was at PATH (the
/// newest, if several were), or every file that was under PATH, making
/// the directories they were in again.
pub async fn undelete(path: &Path, state: Option<&Path>, config: &Config) -> anyhow::Result<()> {
    let at = place(path, state, config)?;
    let m = at.state.load()?;
    let mut conn = authenticated(&at.state, &m).await?;
    let trash = list(&mut conn).await?;
    // Newest first: the first of each path is the one to bring back.
    let chosen: Vec<&TrashEntry> = match trash.iter().find(|t| t.path == at.rel) {
        Some(file) => vec![file],
        None => {
            let mut seen = std::collections::HashSet::new();
            trash.iter().filter(|t| under(&t.path, &at.rel) && seen.insert(t.path.as_str())).collect()
        }
    };
    if chosen.is_empty() {
        bail!("nothing in the trash was at {} (see `titorrent trash`)", path.display());
    }
    let mut done = 0usize;
    for t in &chosen {
        let (dir, name) = match t.path.rsplit_once('/') {
            Some((d, n)) => (at.mount_point.join(d), n),
            None => (at.mount_point.clone(), t.path.as_str()),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("making {} again", dir.display()))?;
        let parent = FileId(std::fs::metadata(&dir).with_context(|| format!("{}", dir.display()))?.ino());
        let shown = at.mount_point.join(&t.path);
        let call = calls::Undelete { file: t.entry.id, parent, name: name.to_string() };
        match conn.call(call).await {
            Ok(_) => done += 1,
            Err(e) => bail!("{}: {e} ({done} of {} brought back)", shown.display(), chosen.len()),
        }
        if chosen.len() == 1 {
            println!("brought back {}", shown.display());
        }
    }
    if chosen.len() > 1 {
        println!("brought back {done} files under {}", at.mount_point.join(&at.rel).display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn a_path_is_under_itself_and_its_directories_only() {
        assert!(under("a/b", "a"));
        assert!(under("a/b", "a/b"));
        assert!(under("a/b", ""));
        assert!(!under("ab/c", "a"), "a name that only starts the same is not below");
        assert!(!under("a", "a/b"));
    }
}

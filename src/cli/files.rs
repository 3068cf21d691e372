//! Provides the commands that ask the tracker about one file of a mount
//! (lock, unlock, versions, restore) and the group's action log. A path
//! inside a mount names its file by inode number: a titorrent mount's
//! inode number is the file's `FileId`.

use super::mountinfo::{self, MountEntry};
use super::xattr;
use crate::config::Config;
use crate::state::{Membership, StateDir};
use crate::tracker_client::{ClientError, Connection};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use titorrent_tracker::calls;
use titorrent_tracker::proto::{
    Event, EventKind, FileEntry, FileId, MemberId, ProtoError, Seq, UnixMillis, Version,
};

/// A path inside a titorrent mount, resolved.
#[derive(Debug)]
pub struct Located {
    pub mount: MountEntry,
    pub file: FileId,
    /// Relative to the mount point ("" for its root).
    pub rel: PathBuf,
    pub state: StateDir,
}

impl Located {
    /// How to show the file to the user: its path as given.
    pub fn shown(&self) -> String {
        self.mount.mount_point.join(&self.rel).display().to_string()
    }
}

/// The mount holding `path`, or an error saying it is not in one.
pub fn mount_holding(path: &Path) -> anyhow::Result<(PathBuf, MountEntry)> {
    let canon = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    match mountinfo::mount_of(&canon).context("reading /proc/self/mountinfo")? {
        Some(m) => Ok((canon, m)),
        None => bail!("{} is not inside a titorrent mount (`titorrent status` lists them)", path.display()),
    }
}

/// The member state directory of `mount`: what the mount says (xattr
/// user.titorrent.state_dir on its root), else `flag`, else the config's.
pub fn state_of(mount: &MountEntry, flag: Option<&Path>, config: &Config) -> anyhow::Result<StateDir> {
    if let Ok(Some(s)) = xattr::get_string(&mount.mount_point, xattr::STATE_DIR) {
        if !s.is_empty() {
            return Ok(StateDir::new(s));
        }
    }
    match flag.map(Path::to_path_buf).or_else(|| config.state()) {
        Some(s) => Ok(StateDir::new(s)),
        None => bail!(
            "cannot tell which member's mount {} is (it does not say): pass --state DIR",
            mount.mount_point.display()
        ),
    }
}

/// Resolves a path inside a mount to its file and member.
pub fn locate(path: &Path, flag: Option<&Path>, config: &Config) -> anyhow::Result<Located> {
    let (canon, mount) = mount_holding(path)?;
    let md = std::fs::metadata(&canon).with_context(|| format!("{}", path.display()))?;
    let rel = canon.strip_prefix(&mount.mount_point).map(Path::to_path_buf).unwrap_or_default();
    let state = state_of(&mount, flag, config)?;
    Ok(Located { mount, file: FileId(md.ino()), rel, state })
}

/// An authenticated one-shot connection for `m`, whose key is in `st`.
pub async fn authenticated(st: &StateDir, m: &Membership) -> anyhow::Result<Connection> {
    let login = st.login(m)?;
    let mut conn =
        Connection::connect(&m.tracker, &login.tls).await.with_context(|| format!("connecting to the tracker {}", m.tracker))?;
    let auth = calls::Authenticate { group: login.group, member: login.member, peer_addr: None };
    conn.call(auth).await.context("authenticating")?;
    Ok(conn)
}

/// Turns a refusal about `what` into the sentence a user reads.
fn refusal(what: &str, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Refused(ProtoError::Locked(h)) => {
            anyhow::anyhow!("{what} is locked by {} since {}", h.member_name, local_time(h.since))
        }
        ClientError::Refused(ProtoError::NoSuchFile) => anyhow::anyhow!("{what}: the tracker has no such file"),
        e => anyhow::Error::new(e).context(what.to_string()),
    }
}

pub async fn lock(target: &Located, ttl: Option<Duration>, config: &Config) -> anyhow::Result<()> {
    let m = target.state.load()?;
    let ttl = ttl.or(config.for_state(target.state.root()).policy.lock_ttl);
    let mut conn = authenticated(&target.state, &m).await?;
    let ttl_ms = ttl.map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64);
    let shown = target.shown();
    let lease = conn.call(calls::LockExplicit { file: target.file, ttl_ms }).await.map_err(|e| refusal(&shown, e))?;
    println!("locked {shown} until {} (release it with `titorrent unlock {shown}`)", local_time(lease.expires));
    Ok(())
}

pub async fn unlock(target: &Located, force: bool) -> anyhow::Result<()> {
    let m = target.state.load()?;
    let mut conn = authenticated(&target.state, &m).await?;
    let shown = target.shown();
    let file = target.file;
    let done = if force { conn.call(calls::ForceUnlock { file }).await } else { conn.call(calls::UnlockFile { file }).await };
    done.map_err(|e| refusal(&shown, e))?;
    println!("unlocked {shown}");
    Ok(())
}

pub(crate) async fn member_names(conn: &mut Connection) -> anyhow::Result<HashMap<MemberId, String>> {
    let ms = conn.call(calls::ListMembers).await?;
    Ok(ms.into_iter().map(|m| (m.id, m.name)).collect())
}

pub(crate) fn name_of(names: &HashMap<MemberId, String>, id: MemberId) -> String {
    match names.get(&id) {
        Some(n) => n.clone(),
        None if id == MemberId(0) => "(tracker)".into(),
        None => format!("member#{id}"),
    }
}

pub async fn versions(target: &Located) -> anyhow::Result<()> {
    let m = target.state.load()?;
    let mut conn = authenticated(&target.state, &m).await?;
    let shown = target.shown();
    let vs = conn.call(calls::ListVersions { file: target.file }).await.map_err(|e| refusal(&shown, e))?;
    let names = member_names(&mut conn).await?;
    println!("{:<8} {:<19}  {:>10}  BY", "VERSION", "PUBLISHED", "SIZE");
    for (i, v) in vs.iter().enumerate() {
        let current = if i == 0 { "  (current)" } else { "" };
        println!(
            "{:<8} {:<19}  {:>10}  {}{current}",
            format!("v{}", v.version),
            local_time(v.at),
            indicatif::HumanBytes(v.size).to_string(),
            name_of(&names, v.author)
        );
    }
    Ok(())
}

pub async fn restore(target: &Located, version: u64) -> anyhow::Result<()> {
    let m = target.state.load()?;
    let mut conn = authenticated(&target.state, &m).await?;
    let shown = target.shown();
    let e = conn
        .call(calls::Restore { file: target.file, version: Version(version), lease: None })
        .await
        .map_err(|e| refusal(&shown, e))?;
    println!("restored {shown} to version {version}: it is now version {}", e.version);
    Ok(())
}

/// Paths of the files the tracker knows, for naming them in the log.
struct Paths(HashMap<FileId, (FileId, String)>);

impl Paths {
    fn new(files: Vec<FileEntry>) -> Paths {
        Paths(files.into_iter().map(|f| (f.id, (f.parent, f.name))).collect())
    }

    fn path(&self, id: FileId) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = id;
        while cur != FileId::ROOT {
            let (parent, name) = self.0.get(&cur)?;
            parts.push(name.as_str());
            cur = *parent;
            if parts.len() > 512 {
                return None; // a cycle: never from a sane tracker
            }
        }
        parts.reverse();
        Some(format!("/{}", parts.join("/")))
    }

    fn in_dir(&self, parent: FileId, name: &str) -> String {
        match self.path(parent) {
            Some(p) if p == "/" => format!("/{name}"),
            Some(p) => format!("{p}/{name}"),
            None => format!(".../{name}"),
        }
    }

    fn or_id(&self, id: FileId) -> String {
        self.path(id).unwrap_or_else(|| format!("file#{id}"))
    }
}

/// Prints the action log: every event after `after`, or the last `limit`.
pub async fn log(state: &StateDir, after: Option<u64>, limit: usize) -> anyhow::Result<()> {
    let m = state.load()?;
    let mut conn = authenticated(state, &m).await?;
    let names = member_names(&mut conn).await?;
    let files = conn.call(calls::ListFiles).await?.files;
    let paths = Paths::new(files);
    let mut cursor = after.map(Seq);
    let mut kept: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    loop {
        let calls::LogPage { events, more } =
            conn.call(calls::ReadLog { after: cursor, limit: 1000 }).await.context("reading the log")?;
        cursor = events.last().map(|e| e.seq).or(cursor);
        for e in events {
            if after.is_some() {
                println!("{}", log_line(&e, &names, &paths));
            } else {
                kept.push_back(e);
                if kept.len() > limit {
                    kept.pop_front();
                }
            }
        }
        if !more {
            break;
        }
    }
    for e in kept {
        println!("{}", log_line(&e, &names, &paths));
    }
    Ok(())
}

/// `#SEQ  TIME  MEMBER  ACTION  PATH`
fn log_line(e: &Event, names: &HashMap<MemberId, String>, paths: &Paths) -> String {
    let who = name_of(names, e.by);
    let (action, what) = match &e.kind {
        EventKind::FileCreated(f) => ("created", paths.in_dir(f.parent, &f.name)),
        EventKind::FileUpdated(f) => ("edited", format!("{} (v{})", paths.in_dir(f.parent, &f.name), f.version)),
        EventKind::Locked { file, .. } => ("locked", paths.or_id(*file)),
        EventKind::Unlocked { file } => ("unlocked", paths.or_id(*file)),
        EventKind::MemberJoined(mi) => ("joined", mi.name.clone()),
        EventKind::MemberOnline(mi) => ("online", mi.peer_addr.map(|a| a.to_string()).unwrap_or_default()),
        EventKind::MemberOffline { .. } => ("offline", String::new()),
        EventKind::FileDeleted { parent, name, .. } => ("deleted", paths.in_dir(*parent, name)),
        EventKind::FileRenamed { entry, old_parent, old_name } => {
            ("renamed", format!("{} -> {}", paths.in_dir(*old_parent, old_name), paths.in_dir(entry.parent, &entry.name)))
        }
        EventKind::AttrChanged(f) => ("chattr", paths.in_dir(f.parent, &f.name)),
        EventKind::MemberLeft { member } => ("left", name_of(names, *member)),
        EventKind::Restored { entry, from } => {
            ("restored", format!("{} (v{from} as v{})", paths.in_dir(entry.parent, &entry.name), entry.version))
        }
        EventKind::Have { file, version, .. } => ("has", format!("{} (v{version})", paths.or_id(*file))),
        EventKind::Purged { file } => ("purged", format!("file #{file} (its time in the trash ended)")),
    };
    format!("#{:<5} {}  {:<12} {:<9} {what}", e.seq.0, local_time(e.at), who, action).trim_end().to_string()
}

/// `YYYY-MM-DD HH:MM:SS` in local time.
pub fn local_time(ms: UnixMillis) -> String {
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: tm is plain data; localtime_r fills it from a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return format!("@{}", ms / 1000);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use titorrent_tracker::proto::{FileKind, InfoHash};

    fn entry(id: u64, parent: u64, name: &str, version: u64) -> FileEntry {
        FileEntry {
            id: FileId(id),
            parent: FileId(parent),
            name: name.into(),
            kind: if version == 0 { FileKind::Dir } else { FileKind::File },
            size: 3,
            mtime: 0,
            mode: 0o644,
            version: Version(version),
            info_hash: Some(InfoHash([0; 20])),
            author: MemberId(2),
            owner: Default::default(),
            ctime: 0,
        }
    }

    #[test]
    fn log_lines_name_the_member_and_the_path() {
        let paths = Paths::new(vec![entry(2, 1, "docs", 0), entry(3, 2, "a.txt", 4)]);
        let names = HashMap::from([(MemberId(2), "ana".to_string())]);
        let ev = |kind| Event { seq: Seq(7), at: 0, by: MemberId(2), kind };
        let line = log_line(&ev(EventKind::FileUpdated(entry(3, 2, "a.txt", 4))), &names, &paths);
        assert!(line.starts_with("#7     19") && line.contains(" ana ") && line.ends_with("edited    /docs/a.txt (v4)"), "{line}");
        let line = log_line(&ev(EventKind::FileDeleted { file: FileId(9), parent: FileId(1), name: "old".into() }), &names, &paths);
        assert!(line.ends_with("deleted   /old"), "{line}");
        let line = log_line(&Event { by: MemberId(0), ..ev(EventKind::Unlocked { file: FileId(3) }) }, &names, &paths);
        assert!(line.contains("(tracker)") && line.ends_with("/docs/a.txt"), "{line}");
        let line = log_line(&ev(EventKind::Locked { file: FileId(99), holder: titorrent_tracker::proto::LockHolder { member: MemberId(2), member_name: "ana".into(), since: 0, expires: 0 } }), &names, &paths);
        assert!(line.ends_with("file#99"), "{line}");
    }

    #[test]
    fn local_time_is_a_date() {
        let t = local_time(86_400_000 * 365);
        assert_eq!(t.len(), 19, "{t}");
        assert!(t.starts_with("1970-12-31") || t.starts_with("1971-01-01"), "{t}");
    }
}

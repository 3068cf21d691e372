//! The mount daemon (`titorrent mount`): a member's life from its state
//! directory to a mounted, live folder and back offline, as the phases of
//! [`run_mount`], in order:
//!
//! 1. `open_state`: who this member is, the tracker it trusts, and the
//!    checks that must pass before anything starts;
//! 2. `start_swarm`: the BitTorrent session;
//! 3. `connect_tracker`: the link to the tracker, resuming after the
//!    table the last mount saved;
//! 4. `open_folder`: the folder model over the swarm and the link;
//! 5. `events::first_table`: a file table to show before the kernel asks;
//! 6. `apply_policy`: the config's replication and pins, and the edits a
//!    previous run left in the outbox;
//! 7. `Background::start`: the event loop (every commit of the tracker
//!    applied in one step), the table saver and lease renewals;
//! 8. `session::mount`: the FUSE session, announced by `mounted DIR`;
//! 9. `session::wait_for_stop`: until `stop`, SIGTERM, SIGINT or an
//!    umount from outside;
//! 10. `go_offline`: the orderly shutdown.
//!
//! `events.rs` is how the tracker's events reach the folder, `session.rs`
//! how the folder is mounted and unmounted.

mod events;
mod session;

use crate::model::{Folder, FolderDirs};
use crate::state::{Membership, StateDir};
use crate::swarm::{Swarm, SwarmConfig};
use crate::tracker_client::{LinkEvent, Login, TrackerLink};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use titorrent_tracker::proto::{FileEntry, MemberId, Seq};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

/// Everything `titorrent mount` needs.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub mountpoint: PathBuf,
    pub state: StateDir,
    /// Where this member's BitTorrent session listens.
    pub peer_listen: SocketAddr,
    pub upload_limit: Option<u32>,
    pub download_limit: Option<u32>,
    /// How long to wait for the tracker before giving up.
    pub connect_timeout: Duration,
    /// Mount with MS_RDONLY: writes fail with EROFS.
    pub read_only: bool,
    /// Serve every local user (FUSE `allow_other`); `None`: when root mounts.
    pub allow_other: Option<bool>,
    /// Mount with MS_NOEXEC: programs in the folder cannot be executed.
    pub noexec: bool,
    /// From the config file: tracker override, cache dir, replication,
    /// pins. (cache.max_size and lease.renew_interval are not acted on yet.)
    pub policy: crate::config::MountPolicy,
    /// On unmount, how long to wait for versions only this member holds to
    /// reach another member.
    pub wait_replication: Option<Duration>,
}

type LiveFolder = Folder<Swarm, TrackerLink>;

/// What the tracker link tells the daemon, in order.
type LinkEvents = UnboundedReceiver<LinkEvent>;

/// The file table a previous mount saved: its last seq and its rows.
type SavedTable = (Seq, Vec<FileEntry>);

/// How long going offline waits for publishes in flight to land.
const DRAIN: Duration = Duration::from_secs(60);

/// Mounts, prints `mounted DIR` when ready, and runs until `stop` resolves,
/// a signal arrives, or the filesystem is unmounted from outside; then goes
/// offline cleanly. The phases are listed in the module docs.
pub async fn run_mount(cfg: MountConfig, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let Member { membership, login, cache_dir } = open_state(&cfg)?;
    let swarm = start_swarm(&cfg, &login, cache_dir).await?;
    let (link, mut events, saved) = connect_tracker(&cfg, &membership, login, &swarm);
    let folder = open_folder(&cfg, &membership, &swarm, &link)?;
    if let Err(e) = events::first_table(&folder, &mut events, saved, &membership.tracker, cfg.connect_timeout).await {
        link.shutdown();
        swarm.shutdown().await;
        return Err(e);
    }
    apply_policy(&folder, &cfg.policy).await;
    let background = Background::start(&folder, events, cfg.state.table());
    let session = session::mount(&cfg, &membership, folder.clone()).await?;
    session::wait_for_stop(&session, stop).await?;
    go_offline(&cfg, &folder, session, background, &link, &swarm).await
}

/// Who this member is, as its state directory says.
struct Member {
    membership: Membership,
    /// Its ids and its key, for the tracker.
    login: Login,
    /// Where its versions are kept.
    cache_dir: PathBuf,
}

/// Phase 1: reads the membership (with the config's tracker, if it names
/// one, in place of the saved one) and the member's key; checks that the
/// mount point is a directory and that /dev/fuse exists; takes the whole
/// open-file allowance; makes the state and cache directories private.
/// Hands on the [`Member`].
fn open_state(cfg: &MountConfig) -> anyhow::Result<Member> {
    let mut membership = cfg.state.load()?;
    if let Some(t) = &cfg.policy.tracker {
        membership.tracker = t.clone();
    }
    let login = cfg.state.login(&membership)?;
    let md = std::fs::metadata(&cfg.mountpoint)
        .with_context(|| format!("mount point {}", cfg.mountpoint.display()))?;
    if !md.is_dir() {
        bail!("mount point {} is not a directory", cfg.mountpoint.display());
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse kernel module (modprobe fuse)");
    }

    raise_fd_limit();
    // The state and the cache hold the member's key and the group's files.
    let cache_dir = cfg.policy.cache_dir.clone().unwrap_or_else(|| cfg.state.cache());
    for (dir, what) in [(cfg.state.root(), "state directory"), (cache_dir.as_path(), "cache")] {
        titorrent_tracker::server::private::make_private(dir, what)
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(Member { membership, login, cache_dir })
}

/// Phase 2: starts the BitTorrent session with the member's key, on its
/// listen address and rate limits, keeping versions in `cache_dir`. Hands
/// on the [`Swarm`].
async fn start_swarm(cfg: &MountConfig, login: &Login, cache_dir: PathBuf) -> anyhow::Result<Swarm> {
    Swarm::start(SwarmConfig {
        identity: login.tls.identity.clone(),
        cache_dir,
        listen: cfg.peer_listen,
        upload_limit_bps: cfg.upload_limit,
        download_limit_bps: cfg.download_limit,
        idle: cfg.policy.cache_idle.unwrap_or(crate::swarm::DEFAULT_IDLE),
        exports_file: Some(cfg.state.exports()),
    })
    .await
    .context("starting the BitTorrent session")
}

/// Phase 3: loads the table the last mount saved, if any, and starts the
/// tracker link (in the background: it connects, and reconnects, on its
/// own), subscribing after the saved table's last event; versions the
/// others hold asleep wake when this member's swarm wants them. Hands on
/// the link, the events it will send and the saved table.
fn connect_tracker(
    cfg: &MountConfig,
    membership: &Membership,
    login: Login,
    swarm: &Swarm,
) -> (TrackerLink, LinkEvents, Option<SavedTable>) {
    // A table saved by the last mount lets us show the folder at once (read
    // only until the tracker answers) and catch up from its last event.
    let saved = crate::model::load_table(&cfg.state.table());
    let (link, events) =
        TrackerLink::start(membership.tracker.clone(), login, swarm.listen_port(), saved.as_ref().map(|(seq, _)| *seq));
    {
        // Versions the others hold asleep wake when this member wants them.
        let link = link.clone();
        swarm.set_want_hook(Box::new(move |ih| link.want(ih)));
    }
    (link, events, saved)
}

/// Phase 4: the folder model over the swarm and the link, with its
/// directories in the state directory. Hands on the folder (empty until
/// [`events::first_table`]).
fn open_folder(
    cfg: &MountConfig,
    membership: &Membership,
    swarm: &Swarm,
    link: &TrackerLink,
) -> anyhow::Result<Arc<LiveFolder>> {
    let dirs = FolderDirs {
        state_root: cfg.state.root().to_path_buf(),
        pins: cfg.state.root().join("pins"),
        staging: cfg.state.staging(),
        outbox: cfg.state.outbox(),
        torrents: cfg.state.torrents(),
        conflicts: cfg.state.conflicts(),
    };
    let me = (MemberId(membership.member), membership.member_name.clone());
    let rt = tokio::runtime::Handle::current();
    Ok(Folder::new(swarm.clone(), link.clone(), me, dirs, rt)?)
}

/// Phase 6: what the config asks of the folder (background fetching of
/// new versions, the pinned paths; a pin that cannot be set is a warning,
/// not a failure), then publishes the edits a previous run left in the
/// outbox.
async fn apply_policy(folder: &Arc<LiveFolder>, policy: &crate::config::MountPolicy) {
    folder.set_background_fetch(policy.replication == crate::config::Replication::Background);
    for p in &policy.pins {
        match folder.resolve(p) {
            Some(id) => {
                if let Err(e) = folder.set_xattr(id, &format!("{}pin", crate::model::XATTR_PREFIX), Some(b"1")) {
                    tracing::warn!(path = %p.display(), error = %e, "cannot pin");
                }
            }
            None => tracing::warn!(path = %p.display(), "pinned path from the config is not in the folder"),
        }
    }
    folder.resume_outbox().await;
}

/// The daemon's tasks while mounted (phase 7), stopped by [`go_offline`].
struct Background {
    /// Applies the tracker's events ([`events::run`]).
    events: JoinHandle<()>,
    /// Saves the file table while it changes ([`events::save_table`]).
    save: JoinHandle<()>,
    /// Renews the leases of files being written here.
    renew: JoinHandle<()>,
}

impl Background {
    /// Phase 7: starts the event loop on the link's `events`, the saving of
    /// the table to `table`, and lease renewals.
    fn start(folder: &Arc<LiveFolder>, events: LinkEvents, table: PathBuf) -> Background {
        Background {
            events: tokio::spawn(events::run(folder.clone(), events)),
            save: tokio::spawn(events::save_table(folder.clone(), table)),
            renew: tokio::spawn(folder.clone().renew_leases()),
        }
    }
}

/// Phase 10, offline cleanly: lets publishes in flight land (an edit that
/// does not stays in the outbox), warns about versions only this member
/// holds (and waits for them with `--wait-replication`), unmounts, gives
/// back the leases it holds, stops its tasks and the link, saves the file
/// table for the next mount and stops the swarm.
async fn go_offline(
    cfg: &MountConfig,
    folder: &Arc<LiveFolder>,
    session: fuser::BackgroundSession,
    background: Background,
    link: &TrackerLink,
    swarm: &Swarm,
) -> anyhow::Result<()> {
    if !folder.drain(DRAIN).await {
        tracing::warn!("some publishes did not finish; their edits stay in {}", cfg.state.outbox().display());
    }
    warn_sole_copies(folder, cfg.wait_replication).await;
    session::unmount(session, cfg.mountpoint.clone()).await?;
    for lease in folder.held_leases() {
        let _ = folder.tracker().call(titorrent_tracker::calls::Unlock { lease }).await;
    }
    background.renew.abort();
    background.save.abort();
    link.shutdown();
    background.events.abort();
    if let Err(e) = folder.save_table(&cfg.state.table()) {
        tracing::warn!(error = %e, "cannot save the file table");
    }
    swarm.shutdown().await;
    tracing::info!("offline");
    Ok(())
}

/// Going offline with the only complete copy of a version strands it: say
/// so, and with `--wait-replication` give the others time to fetch it.
async fn warn_sole_copies(folder: &Arc<LiveFolder>, wait: Option<Duration>) {
    let sole = folder.sole_copies();
    if sole.is_empty() {
        return;
    }
    tracing::warn!(files = %sole.join(", "), "this member holds the only complete copy of {} file(s); others cannot fetch them while it is offline", sole.len());
    let Some(wait) = wait else { return };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = folder.sole_copies();
        if left.is_empty() {
            tracing::info!("every version is now held by another member too");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(files = %left.join(", "), "still the only holder after waiting {:?}", wait);
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every version being seeded holds files open: take the whole allowance
/// the system grants (the soft limit up to the hard one).
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: lim is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("could not raise the open-file limit");
            }
        }
    }
}

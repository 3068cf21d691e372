//! The mount daemon: wires a state directory, the swarm, the tracker link,
//! the folder model and the FUSE session together, applies the tracker's
//! events, and goes offline cleanly on SIGTERM, SIGINT or an external umount.

use crate::fuse::mount::{self, MountFlags};
use crate::fuse::{KernelNotifier, TitorrentFs};
use crate::model::{Folder, FolderDirs};
use crate::state::StateDir;
use crate::swarm::{Swarm, SwarmConfig};
use crate::tracker_client::{LinkEvent, TrackerLink};
use anyhow::{bail, Context};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use titorrent_tracker::proto::{MemberId, Request};

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
    /// From the config file: tracker override, cache dir, replication,
    /// pins. (cache.max_size and lease.renew_interval are not acted on yet.)
    pub policy: crate::config::MountPolicy,
    /// On unmount, how long to wait for versions only this member holds to
    /// reach another member.
    pub wait_replication: Option<Duration>,
}

type LiveFolder = Folder<Swarm, TrackerLink>;

/// Mounts, prints `mounted DIR` when ready, and runs until `stop` resolves,
/// a signal arrives, or the filesystem is unmounted from outside.
pub async fn run_mount(cfg: MountConfig, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
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
    let swarm = Swarm::start(SwarmConfig {
        cache_dir,
        listen: cfg.peer_listen,
        upload_limit_bps: cfg.upload_limit,
        download_limit_bps: cfg.download_limit,
        idle: cfg.policy.cache_idle.unwrap_or(crate::swarm::DEFAULT_IDLE),
    })
    .await
    .context("starting the BitTorrent session")?;
    // A table saved by the last mount lets us show the folder at once (read
    // only until the tracker answers) and catch up from its last event.
    let saved = crate::model::load_table(&cfg.state.table());
    let (link, mut events) =
        TrackerLink::start(membership.tracker.clone(), login, swarm.listen_port(), saved.as_ref().map(|(seq, _)| *seq));
    {
        // Versions the others hold asleep wake when this member wants them.
        let link = link.clone();
        swarm.set_want_hook(Box::new(move |ih| link.want(ih)));
    }
    let rt = tokio::runtime::Handle::current();
    let dirs = FolderDirs {
        state_root: cfg.state.root().to_path_buf(),
        pins: cfg.state.root().join("pins"),
        staging: cfg.state.staging(),
        outbox: cfg.state.outbox(),
        torrents: cfg.state.torrents(),
        conflicts: cfg.state.conflicts(),
    };
    let me = (MemberId(membership.member), membership.member_name.clone());
    let folder: Arc<LiveFolder> = Folder::new(swarm.clone(), link.clone(), me, dirs, rt.clone())?;

    match saved {
        Some((seq, files)) => {
            folder.apply_snapshot(seq, files);
            // Give the tracker a moment so that a healthy mount starts live.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(ev) = events.recv().await {
                    let online = matches!(ev, LinkEvent::Online);
                    apply(&folder, ev);
                    if online {
                        return;
                    }
                }
            })
            .await;
            if !folder.is_online() {
                tracing::warn!(tracker = %membership.tracker, "tracker unreachable: the folder is read-only (cached table) until it is back");
            }
        }
        None => {
            // Nothing cached: the tree must be known before the kernel asks.
            let first = tokio::time::timeout(cfg.connect_timeout, async {
                while let Some(ev) = events.recv().await {
                    let snapshot = matches!(ev, LinkEvent::Snapshot { .. });
                    apply(&folder, ev);
                    if snapshot {
                        return true;
                    }
                }
                false
            })
            .await;
            if !matches!(first, Ok(true)) {
                link.shutdown();
                swarm.shutdown().await;
                bail!("tracker {} unreachable or refused this member (waited {:?})", membership.tracker, cfg.connect_timeout);
            }
        }
    }
    folder.set_background_fetch(cfg.policy.replication == crate::config::Replication::Background);
    for p in &cfg.policy.pins {
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

    let events_task = {
        let folder = folder.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let batch = gather(ev, &mut events).await;
                apply_batch(&folder, batch);
            }
        })
    };
    let save_task = {
        let (folder, path) = (folder.clone(), cfg.state.table());
        tokio::spawn(async move {
            let mut last = None;
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let seq = folder.last_seq();
                if seq != last {
                    if let Err(e) = folder.save_table(&path) {
                        tracing::warn!(error = %e, "cannot save the file table to {}", path.display());
                    }
                    last = seq;
                }
            }
        })
    };
    let renew_task = tokio::spawn(folder.clone().renew_leases());

    let fs = TitorrentFs::new(folder.clone(), rt.clone());
    let mut config = fuser::Config::default();
    config.n_threads = Some(4);
    let mountpoint = cfg.mountpoint.clone();
    let source = format!("titorrent:{}", membership.group_name);
    let flags = MountFlags { read_only: cfg.read_only, ..MountFlags::default() };
    let session = tokio::task::spawn_blocking(move || {
        let fd = mount::mount(&source, &mountpoint, &flags)?;
        let session = fuser::Session::from_fd(fs, fd, fuser::SessionACL::Owner, config);
        if session.is_err() {
            let _ = mount::unmount(&mountpoint, true);
        }
        let session = session?.spawn()?;
        mount::raise_read_ahead(&mountpoint);
        Ok::<_, std::io::Error>(session)
    })
    .await?
    .with_context(|| format!("mounting {}", cfg.mountpoint.display()))?;
    folder.set_kernel(Box::new(KernelNotifier::new(session.notifier()).context("starting the kernel cache invalidation thread")?));
    tracing::info!(mountpoint = %cfg.mountpoint.display(), group = %membership.group_name, member = %membership.member_name, "mounted");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mounted {}", cfg.mountpoint.display());
        let _ = out.flush();
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let unmounted_outside = async {
        loop {
            if session.guard.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = stop => tracing::info!("stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: going offline"),
        _ = int.recv() => tracing::info!("SIGINT: going offline"),
        _ = unmounted_outside => tracing::info!("unmounted from outside: going offline"),
    }

    // Offline cleanly: let publishes in flight land, then unmount.
    if !folder.drain(Duration::from_secs(60)).await {
        tracing::warn!("some publishes did not finish; their edits stay in {}", cfg.state.outbox().display());
    }
    warn_sole_copies(&folder, cfg.wait_replication).await;
    let mp = cfg.mountpoint.clone();
    tokio::task::spawn_blocking(move || {
        if !session.guard.is_finished() {
            if let Err(e) = mount::unmount(&mp, false) {
                tracing::warn!(error = %e, "unmount failed; detaching {}", mp.display());
                let _ = mount::unmount(&mp, true);
            }
        }
        if let Err(e) = session.join() {
            tracing::debug!(error = %e, "FUSE session ended with an error");
        }
    })
    .await?;
    for lease in folder.held_leases() {
        let _ = folder.tracker().request(Request::Unlock { lease }).await;
    }
    renew_task.abort();
    save_task.abort();
    link.shutdown();
    events_task.abort();
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

/// How long a deletion waits for the events of the same commit at the
/// tracker: a rename over an existing file is the target's deletion, then
/// the rename, sent back to back.
const DELETE_HOLDBACK: Duration = Duration::from_millis(50);

/// `first` and the events already queued behind it; after a deletion, also
/// what follows within [`DELETE_HOLDBACK`], so that a replace is applied in
/// one step (between its two events, the name would not exist).
async fn gather(first: LinkEvent, events: &mut tokio::sync::mpsc::UnboundedReceiver<LinkEvent>) -> Vec<LinkEvent> {
    let mut batch = vec![first];
    loop {
        while let Ok(ev) = events.try_recv() {
            batch.push(ev);
        }
        let deletion_last = matches!(
            batch.last(),
            Some(LinkEvent::Event(titorrent_tracker::proto::Event {
                kind: titorrent_tracker::proto::EventKind::FileDeleted { .. },
                ..
            }))
        );
        if !deletion_last {
            return batch;
        }
        match tokio::time::timeout(DELETE_HOLDBACK, events.recv()).await {
            Ok(Some(ev)) => batch.push(ev),
            _ => return batch,
        }
    }
}

/// Applies a batch in order, the tracker's events of each run together.
fn apply_batch(folder: &Arc<LiveFolder>, batch: Vec<LinkEvent>) {
    let mut run = Vec::new();
    for ev in batch {
        match ev {
            LinkEvent::Event(e) => run.push(e),
            other => {
                if !run.is_empty() {
                    folder.apply_events(std::mem::take(&mut run));
                }
                apply(folder, other);
            }
        }
    }
    if !run.is_empty() {
        folder.apply_events(run);
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

fn apply(folder: &Arc<LiveFolder>, ev: LinkEvent) {
    match ev {
        LinkEvent::Online => folder.set_online(true),
        LinkEvent::Offline => folder.set_online(false),
        LinkEvent::Snapshot { seq, files } => folder.apply_snapshot(seq, files),
        LinkEvent::Event(e) => folder.apply_event(e),
        // Another member needs a version this one may hold asleep.
        LinkEvent::Wanted { info_hash, peer } => {
            tracing::debug!(%info_hash, %peer, "wanted by another member");
            folder.content().wanted(info_hash, peer);
        }
    }
}

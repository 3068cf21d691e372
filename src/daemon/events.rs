//! How the tracker's events reach the folder: a first file table before
//! the kernel may ask (the one the last mount saved, or the tracker's
//! snapshot), then everything the link hands on, in order, each commit of
//! the tracker (with those queued behind it) applied in one step, with no
//! timer; and the table saved while it changes, so that the next mount
//! can start from it.

use super::{LinkEvents, LiveFolder, SavedTable};
use crate::tracker_client::LinkEvent;
use anyhow::bail;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a mount with a saved table waits for the tracker, so that a
/// healthy mount starts live, before it shows the folder read-only.
const LIVE_START: Duration = Duration::from_secs(2);

/// How often the file table is saved (when it changed since).
const SAVE_EVERY: Duration = Duration::from_secs(2);

/// Phase 5: gives the folder a table before it is mounted. With a saved
/// one, shows it at once and waits [`LIVE_START`] for the link to come
/// online (warning that the folder is read-only if it does not); without
/// one, waits up to `connect_timeout` for the tracker's snapshot, and is an
/// error if it does not come (the caller then stops the link and the
/// swarm). Events that come meanwhile are applied; the rest wait in
/// `events` for [`run`].
pub(super) async fn first_table(
    folder: &Arc<LiveFolder>,
    events: &mut LinkEvents,
    saved: Option<SavedTable>,
    tracker: &str,
    connect_timeout: Duration,
) -> anyhow::Result<()> {
    match saved {
        Some((seq, files)) => {
            folder.apply_snapshot(seq, files);
            let online = |ev: &LinkEvent| matches!(ev, LinkEvent::Online);
            let _ = tokio::time::timeout(LIVE_START, apply_until(folder, events, online)).await;
            if !folder.is_online() {
                tracing::warn!(%tracker, "tracker unreachable: the folder is read-only (cached table) until it is back");
            }
        }
        None => {
            // Nothing cached: the tree must be known before the kernel asks.
            let snapshot = |ev: &LinkEvent| matches!(ev, LinkEvent::Snapshot { .. });
            let first = tokio::time::timeout(connect_timeout, apply_until(folder, events, snapshot)).await;
            if !matches!(first, Ok(true)) {
                bail!("tracker {tracker} unreachable or refused this member (waited {connect_timeout:?})");
            }
        }
    }
    Ok(())
}

/// Applies the link's events in order until one that `done` picks has been
/// applied (true), or the link ends (false).
async fn apply_until(folder: &Arc<LiveFolder>, events: &mut LinkEvents, done: impl Fn(&LinkEvent) -> bool) -> bool {
    while let Some(ev) = events.recv().await {
        let last = done(&ev);
        apply(folder, ev);
        if last {
            return true;
        }
    }
    false
}

/// The event loop: applies what the link hands on, in order, until the
/// link ends or the task is aborted (when going offline). What is already
/// queued goes in one step (see [`apply_batch`]); nothing waits for more.
pub(super) async fn run(folder: Arc<LiveFolder>, mut events: LinkEvents) {
    while let Some(first) = events.recv().await {
        let mut batch = vec![first];
        while let Ok(ev) = events.try_recv() {
            batch.push(ev);
        }
        apply_batch(&folder, batch);
    }
}

/// Applies a batch in order; the commits of each run of `Events` in one
/// step, as one: a burst (the replay after a reconnect, a busy group)
/// changes the table once instead of commit by commit, so the versions it
/// replaces are not made current here in turn, each to be collected (its
/// torrent dropped) a moment later. A commit is never split: the link
/// hands on only whole ones.
fn apply_batch(folder: &Arc<LiveFolder>, batch: Vec<LinkEvent>) {
    let mut run = Vec::new();
    for ev in batch {
        match ev {
            LinkEvent::Events(evs) => run.extend(evs),
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

/// One thing the link handed on.
fn apply(folder: &Arc<LiveFolder>, ev: LinkEvent) {
    match ev {
        LinkEvent::Online => {
            folder.set_online(true);
            let folder = folder.clone();
            tokio::spawn(async move { folder.register_exports().await });
        }
        LinkEvent::Offline => folder.set_online(false),
        LinkEvent::Snapshot { seq, files } => folder.apply_snapshot(seq, files),
        // One commit at the tracker, in one step: a rename over a file
        // (the target's deletion, then the rename) never shows the name
        // missing in between.
        LinkEvent::Events(evs) => folder.apply_events(evs),
        // Another member needs a version this one may hold asleep.
        LinkEvent::Wanted { info_hash, peer } => {
            tracing::debug!(%info_hash, %peer, "wanted by another member");
            folder.content().wanted(info_hash, peer);
        }
    }
}

/// Saves the file table to `path` every [`SAVE_EVERY`] when its last seq
/// moved, until the task is aborted (going offline saves it once more).
pub(super) async fn save_table(folder: Arc<LiveFolder>, path: PathBuf) {
    let mut last = None;
    let mut tick = tokio::time::interval(SAVE_EVERY);
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
}

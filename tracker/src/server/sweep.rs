//! Background upkeep: releases expired leases about every second (sooner
//! for short ttls) and, at start and then every minute (sooner for short
//! retentions, and again at once while a backlog remains), drops events
//! past the log retention, files past the trash retention and expired
//! invites; every minute, announcers
//! not heard from for two announce intervals.

use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{duration_ms, now_ms, Tracker, TrackerConfig};

const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often leases are checked: a quarter of the ttl, within [20 ms, 1 s].
fn sweep_interval(lease_ttl: Duration) -> Duration {
    (lease_ttl / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// How often the log is pruned: a quarter of the retention, within
/// [20 ms, 1 min].
fn prune_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(20), PRUNE_EVERY)
}

/// Runs until `cancel` or until the tracker is dropped; holds the tracker
/// only while sweeping.
pub(crate) async fn run(tracker: Weak<Tracker>, cfg: TrackerConfig, cancel: CancellationToken) {
    let prune_every = prune_interval(cfg.log_retention.min(cfg.trash_retention));
    let mut tick = tokio::time::interval(sweep_interval(cfg.lease_ttl).min(prune_every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention = duration_ms(cfg.log_retention);
    let mut last_prune = Instant::now();
    let mut last_expire = Instant::now();
    let mut prune_due = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(t) = tracker.upgrade() else { return };
        let now = now_ms();
        t.sweep_leases(now);
        if prune_due || last_prune.elapsed() >= prune_every {
            last_prune = Instant::now();
            prune_due = t.prune(now, now.saturating_sub(retention));
            prune_due |= t.purge_trash(now);
        }
        if last_expire.elapsed() >= PRUNE_EVERY {
            last_expire = Instant::now();
            t.announces.expire(last_expire);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_bounds() {
        assert_eq!(sweep_interval(Duration::from_secs(30)), Duration::from_secs(1));
        assert_eq!(sweep_interval(Duration::from_millis(300)), Duration::from_millis(75));
        assert_eq!(sweep_interval(Duration::from_millis(10)), Duration::from_millis(20));
        assert_eq!(prune_interval(Duration::from_secs(30 * 24 * 3600)), PRUNE_EVERY);
        assert_eq!(prune_interval(Duration::from_millis(400)), Duration::from_millis(100));
    }
}

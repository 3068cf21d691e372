//! Background upkeep: releases expired leases about every second (sooner
//! for short ttls) and, every minute, drops events past the log retention
//! and expired invites.

use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{duration_ms, now_ms, Tracker, TrackerConfig};

const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often leases are checked: a quarter of the ttl, within [20 ms, 1 s].
fn sweep_interval(lease_ttl: Duration) -> Duration {
    (lease_ttl / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Runs until `cancel` or until the tracker is dropped; holds the tracker
/// only while sweeping.
pub(crate) async fn run(tracker: Weak<Tracker>, cfg: TrackerConfig, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(sweep_interval(cfg.lease_ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention = duration_ms(cfg.log_retention);
    let mut last_prune = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(t) = tracker.upgrade() else { return };
        let now = now_ms();
        t.sweep_leases(now);
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            t.prune(now, now.saturating_sub(retention));
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
    }
}

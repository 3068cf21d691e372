//! The action log: reading it (`ReadLog`) and dropping events older than
//! the retention.
//!
//! The log is a group's events in sled, `log_start..=current`. Pruning
//! deletes from the front, never the last event (it marks where the log
//! ends), and raises `log_start`; a subscriber asking to resume before
//! `log_start` gets a snapshot instead (see `conn.rs`). A log read that
//! starts before `log_start` starts at it: the caller sees the jump in seq.

use super::group::Group;
use super::ops::{Auth, Outcome};
use super::store::{StoreError, WriteSet};
use super::Tracker;
use crate::calls::LogPage;
use crate::proto::{Event, Seq, UnixMillis, MAX_FRAME};

/// Most events one `ReadLog` returns (also what `limit` 0 asks for).
pub(crate) const MAX_LOG_EVENTS: u32 = 10_000;
/// Room left in a `Log` reply's frame for everything but the events.
const FRAME_OVERHEAD: usize = 64;
/// Events deleted per batch when pruning.
const PRUNE_CHUNK: usize = 1024;
/// Chunks one prune pass deletes per group before letting the sweeper
/// release leases; the rest waits for the next pass, which comes soon.
const PRUNE_BUDGET: usize = 64;

fn encoded_len(ev: &Event) -> Result<usize, StoreError> {
    Ok(bincode::serde::encode_to_vec(ev, bincode::config::standard())?.len())
}

impl Tracker {
    /// Events after `after` (from the oldest kept without it), oldest
    /// first: at most `limit` (0 or above [`MAX_LOG_EVENTS`]: that many)
    /// and no more than fit in one frame; `more` if the log goes on. The
    /// reply waits until the last event returned is durable.
    pub(crate) fn read_log(&self, auth: &Auth, after: Option<Seq>, limit: u32) -> Outcome<LogPage> {
        let group = &auth.group;
        let limit = if limit == 0 { MAX_LOG_EVENTS } else { limit.min(MAX_LOG_EVENTS) } as usize;
        let (start, current) = {
            let mut st = auth.state()?;
            st.write_unwritten(group.id, &self.store)?;
            (st.log_start, st.current_seq().0)
        };
        let from = after.map_or(start, |a| a.0.saturating_add(1).max(start));
        let mut size = FRAME_OVERHEAD;
        let mut events = Vec::new();
        for ev in self.store.events(group.id, from, current, limit)? {
            size += encoded_len(&ev)?;
            if size > MAX_FRAME {
                break;
            }
            events.push(ev);
        }
        let last = events.last().map_or(from.saturating_sub(1), |e: &Event| e.seq.0);
        let more = last < current;
        let ticket = self.committer.durable_at(group, Seq(last.min(current)));
        Ok((LogPage { events, more }, ticket))
    }

    /// Drops events older than `cutoff` (always keeping the latest one, so
    /// the log's end stays known) and expired invites. Returns whether a
    /// group still has old events left because the pass hit its budget.
    pub(crate) fn prune(&self, now: UnixMillis, cutoff: UnixMillis) -> bool {
        let mut unfinished = false;
        for group in self.all_groups() {
            let mut done = false;
            for _ in 0..PRUNE_BUDGET {
                match self.prune_chunk(&group, cutoff) {
                    Ok(true) => {}
                    Ok(false) => {
                        done = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(group = %group.id, error = %e, "cannot prune the log");
                        done = true;
                        break;
                    }
                }
            }
            unfinished |= !done;
        }
        match self.store.expired_invites(now, 1024) {
            Ok(keys) if !keys.is_empty() => {
                let mut w = WriteSet::new();
                for k in &keys {
                    w.del_invite_key(k);
                }
                if let Err(e) = self.store.apply(w) {
                    tracing::warn!(error = %e, "cannot drop expired invites");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot scan invites"),
        }
        unfinished
    }

    /// Deletes up to one chunk of events older than `cutoff` from the front
    /// of `group`'s log. `Ok(true)`: the whole chunk was old, there may be
    /// more.
    fn prune_chunk(&self, group: &Group, cutoff: UnixMillis) -> Result<bool, StoreError> {
        let (start, current) = {
            let mut st = group.state.lock();
            // The log's last event must be in sled before any is pruned.
            st.write_unwritten(group.id, &self.store)?;
            (st.log_start, st.current_seq().0)
        };
        if current == 0 || start >= current {
            return Ok(false);
        }
        let (w, new_start, more) = self.store.prune_front(group.id, start, current - 1, cutoff, PRUNE_CHUNK)?;
        let Some(new_start) = new_start else { return Ok(false) };
        // Under the mutex, so `log_start` and the log change together for
        // a subscriber deciding between resume and snapshot.
        let mut st = group.state.lock();
        self.store.apply(w)?;
        st.log_start = st.log_start.max(new_start);
        Ok(more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::FileAnswer;
    use crate::proto::{FileId, FileKind, Owner};
    use crate::server::store::RUN_MAX;
    use crate::server::{now_ms, TrackerConfig};

    /// A backlog of several chunks goes in one pass (pruning used to drop
    /// one chunk a minute, less than a busy group writes), except the last
    /// event (with the run it is stored in); a later cutoff than every
    /// event prunes nothing more.
    #[test]
    fn one_pass_prunes_a_backlog_of_several_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(TrackerConfig { data_dir: dir.path().into(), ..TrackerConfig::default() }).unwrap();
        let (_, _, auth) = t.create_group("g".into(), "alice".into(), crate::proto::Fingerprint([7; 32]), None, "127.0.0.1:1".parse().unwrap()).unwrap();
        let Ok((FileAnswer { entry: f, .. }, _)) =
            t.create_file(&auth, FileId::ROOT, "f".into(), FileKind::File, 0o644, false, Owner::default())
        else {
            panic!()
        };
        for _ in 0..2 * PRUNE_CHUNK {
            let Ok((l, _)) = t.lock(&auth, f.id) else { panic!() };
            t.unlock(&auth, l.id).unwrap();
        }
        let current = auth.group.state.lock().current_seq().0;
        assert!(current > 4 * PRUNE_CHUNK as u64);
        assert!(!t.prune(now_ms(), now_ms() + 1), "within one pass's budget");
        // Lease events are stored in runs: the one holding the last event
        // stays whole.
        let left = t.store.events(auth.group.id, 0, u64::MAX, usize::MAX).unwrap();
        let seqs: Vec<u64> = left.iter().map(|e| e.seq.0).collect();
        assert_eq!(seqs.last(), Some(&current));
        assert!(seqs.len() <= RUN_MAX as usize, "{} events left", seqs.len());
        assert_eq!(seqs, (seqs[0]..=current).collect::<Vec<_>>());
        assert_eq!(auth.group.state.lock().log_start, seqs[0]);
        // With a single event last, everything before it goes.
        t.create_file(&auth, FileId::ROOT, "g".into(), FileKind::File, 0o644, false, Owner::default()).unwrap();
        let current = auth.group.state.lock().current_seq().0;
        assert!(!t.prune(now_ms(), now_ms() + 1));
        let left = t.store.events(auth.group.id, 0, u64::MAX, usize::MAX).unwrap();
        assert_eq!(left.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [current]);
        assert_eq!(auth.group.state.lock().log_start, current);
        assert!(!t.prune(now_ms(), now_ms() + 1));
        assert_eq!(auth.group.state.lock().log_start, current);
    }
}

//! Streams a group's events to one subscribed connection: the backlog from
//! sled, then live broadcasts, with no gaps or duplicates, in whole
//! commits (`ServerFrame::Events`); and the group's `Wanted` notices meant
//! for it, as they come (best effort: a notice missed while the connection
//! lags is not sent later).
//!
//! Race-freedom: the pump's broadcast receiver is created before the
//! subscription's starting point is read, and the committer raises a
//! group's `durable` watermark before broadcasting. So every event after
//! the starting point is either at or below the watermark the pump reads
//! (it is in sled, the pump reads it there) or arrives on the receiver.
//! Commits are filtered by seq: one that ends at or before `last` is a
//! duplicate, one that does not start at `last + 1` (or a `Lagged`
//! receiver) means "fill from sled up to the watermark".
//!
//! Commits stay whole: a live one is a broadcast message of its own. The
//! log does not mark where a commit ends, but all its events carry the
//! commit's `at` (`Txn::event`), the watermark is always the end of a
//! commit, and so is every starting point (a snapshot's seq, or the last
//! seq the client was sent whole). So the backlog goes out cut where `at`
//! changes: each frame is one commit, or several of the same millisecond.
//! A commit of more than [`FRAME_EVENTS`] events goes as several frames,
//! all but the last marked `more`.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::conn::Out;
use super::group::{Committed, Group, Notice};
use super::store::Store;
use crate::proto::{Event, MemberId, ServerFrame};

/// Events read from sled per step (the writer queue bounds memory further).
const CHUNK: usize = 256;

/// Most events in one `Events` frame: a few KiB each at the very most (a
/// rename of a symbolic link with the longest target and names), so a full
/// frame stays far under `MAX_FRAME`.
pub(crate) const FRAME_EVENTS: usize = 256;

pub(crate) struct Pump {
    pub store: Store,
    pub group: Arc<Group>,
    pub rx: broadcast::Receiver<Committed>,
    pub notices: broadcast::Receiver<Notice>,
    /// The connection's member: notices it caused are not sent back.
    pub me: MemberId,
    /// Last seq the client has (from the Subscribe reply); always the end
    /// of a commit once the frames sent are whole.
    pub last: u64,
    pub out: mpsc::Sender<Out>,
    /// Cancelled when the connection ends; cancelled by the pump if it
    /// cannot continue without a gap (the client then resubscribes).
    pub conn: CancellationToken,
}

impl Pump {
    pub async fn run(mut self) {
        let conn = self.conn.clone();
        let res = tokio::select! {
            _ = conn.cancelled() => return,
            r = self.pump() => r,
        };
        if let Err(PumpEnd::Gap(why)) = res {
            tracing::warn!(group = %self.group.id, "closing subscription: {why}");
            conn.cancel();
        }
    }

    async fn pump(&mut self) -> Result<(), PumpEnd> {
        loop {
            self.catch_up().await?;
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(c) if c.last().is_none_or(|ev| ev.seq.0 <= self.last) => {}
                    Ok(c) if c[0].seq.0 == self.last + 1 => self.send(c.to_vec()).await?,
                    // A gap on the receiver (cannot happen without lag) or a
                    // lag: the next catch_up reads the missing range from sled.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(PumpEnd::Closed),
                },
                r = self.notices.recv() => match r {
                    Ok(n) if n.from != Some(self.me) => {
                        let f = ServerFrame::Wanted { info_hash: n.info_hash, peer: n.peer };
                        self.out.send(Out::Frame(f)).await.map_err(|_| PumpEnd::Closed)?;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(PumpEnd::Closed),
                },
            }
        }
    }

    /// Sends everything durable after `last` from sled, cut into commits
    /// by `at` (see the module docs).
    async fn catch_up(&mut self) -> Result<(), PumpEnd> {
        // Read, not yet sent: events sharing one `at`, whose commit may go
        // on in the next chunk.
        let mut run: Vec<Event> = Vec::new();
        loop {
            let durable = self.group.durable.borrow().0;
            let from = run.last().map_or(self.last, |ev| ev.seq.0) + 1;
            if from > durable {
                // The watermark ends a commit: what was read is whole.
                return self.send(run).await;
            }
            let evs = self
                .store
                .events(self.group.id, from, durable, CHUNK)
                .map_err(|e| PumpEnd::Gap(format!("cannot read the log: {e}")))?;
            if evs.first().map(|e| e.seq.0) != Some(from) {
                return Err(PumpEnd::Gap(format!("event {from} is no longer in the log")));
            }
            for (expect, ev) in (from..).zip(evs) {
                if ev.seq.0 != expect {
                    return Err(PumpEnd::Gap(format!("log jumps from {} to {}", expect - 1, ev.seq)));
                }
                if run.last().is_some_and(|prev| prev.at != ev.at) {
                    self.send(std::mem::take(&mut run)).await?;
                }
                run.push(ev);
                if run.len() > FRAME_EVENTS {
                    // A long commit: its head goes now, marked `more`.
                    let tail = run.split_off(FRAME_EVENTS);
                    self.send_frame(std::mem::replace(&mut run, tail), true).await?;
                }
            }
        }
    }

    /// Sends whole commits (nothing when `events` is empty): one frame, or
    /// several of [`FRAME_EVENTS`] at most, all but the last marked `more`.
    async fn send(&mut self, mut events: Vec<Event>) -> Result<(), PumpEnd> {
        while events.len() > FRAME_EVENTS {
            let tail = events.split_off(FRAME_EVENTS);
            self.send_frame(std::mem::replace(&mut events, tail), true).await?;
        }
        if events.is_empty() {
            return Ok(());
        }
        self.send_frame(events, false).await
    }

    async fn send_frame(&mut self, events: Vec<Event>, more: bool) -> Result<(), PumpEnd> {
        let Some(seq) = events.last().map(|ev| ev.seq.0) else { return Ok(()) };
        self.out.send(Out::Frame(ServerFrame::Events { events, more })).await.map_err(|_| PumpEnd::Closed)?;
        self.last = seq;
        Ok(())
    }
}

enum PumpEnd {
    Closed,
    Gap(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{EventKind, FileId, GroupId, MemberId, Seq};
    use crate::server::group::GroupState;
    use crate::server::store::WriteSet;

    fn unlocked(seq: u64, at: u64) -> Event {
        Event { seq: Seq(seq), at, by: MemberId(1), kind: EventKind::Unlocked { file: FileId(2) } }
    }

    /// A pump for `group` from `last`, and what it sends.
    fn pump(store: &Store, group: &Arc<Group>, last: u64) -> (Pump, mpsc::Receiver<Out>, CancellationToken) {
        let (out, out_rx) = mpsc::channel(4);
        let conn = CancellationToken::new();
        let pump = Pump {
            store: store.clone(),
            group: group.clone(),
            rx: group.events.subscribe(),
            notices: group.notices.subscribe(),
            me: MemberId(1),
            last,
            out,
            conn: conn.clone(),
        };
        (pump, out_rx, conn)
    }

    /// Logs one commit and makes it durable, without broadcasting it.
    fn log_commit(store: &Store, group: &Group, evs: &[Event]) {
        let mut w = WriteSet::new();
        for ev in evs {
            w.put_event(group.id, ev).unwrap();
        }
        store.apply(w).unwrap();
        group.durable.send_replace(evs.last().unwrap().seq);
    }

    /// The next `Events` frame: its seqs and `more`.
    async fn frame(out_rx: &mut mpsc::Receiver<Out>) -> (Vec<u64>, bool) {
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), out_rx.recv()).await;
        match got.expect("no frame in time") {
            Some(Out::Frame(ServerFrame::Events { events, more })) => {
                assert!(!events.is_empty(), "an empty Events frame");
                (events.iter().map(|e| e.seq.0).collect(), more)
            }
            _ => panic!("expected an Events frame"),
        }
    }

    /// The pump's broadcast receiver overflows while its client does not
    /// read; it must fill the hole from the log, in order, exactly once.
    #[tokio::test]
    async fn a_lagging_pump_reads_the_missed_range_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let group = Arc::new(Group::new(GroupId(1), GroupState::new("g".into())));
        let (pump, mut out_rx, conn) = pump(&store, &group, 0);
        let task = tokio::spawn(pump.run());
        let n = 3000u64;
        for s in 1..=n {
            let ev = unlocked(s, 0);
            log_commit(&store, &group, std::slice::from_ref(&ev));
            let _ = group.events.send(vec![ev].into());
        }
        let mut want = 1;
        while want <= n {
            let (seqs, _) = frame(&mut out_rx).await;
            for s in seqs {
                assert_eq!(s, want);
                want += 1;
            }
        }
        assert!(out_rx.try_recv().is_err(), "duplicate events");
        conn.cancel();
        task.await.unwrap();
    }

    /// A commit broadcast live (a rename over a file: the target's
    /// deletion, then the rename) goes out as one frame, and the next
    /// commit as another although it has the same `at`. (Not in the log:
    /// the pump must take them from the broadcast.)
    #[tokio::test]
    async fn a_live_commit_goes_in_one_frame() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let group = Arc::new(Group::new(GroupId(1), GroupState::new("g".into())));
        let (pump, mut out_rx, conn) = pump(&store, &group, 0);
        let task = tokio::spawn(pump.run());
        let e = |seq, kind| Event { seq: Seq(seq), at: 7, by: MemberId(1), kind };
        let commits = [
            vec![
                e(1, EventKind::FileDeleted { file: FileId(3), parent: FileId::ROOT, name: "z".into() }),
                e(2, EventKind::Unlocked { file: FileId(4) }),
            ],
            vec![unlocked(3, 7)],
        ];
        for (c, want) in commits.iter().zip([vec![1, 2], vec![3]]) {
            // The pump waits on the broadcast (this runtime has one thread).
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            // As the committer does it: durable first, then the broadcast.
            group.durable.send_replace(c.last().unwrap().seq);
            let _ = group.events.send(c.to_vec().into());
            assert_eq!(frame(&mut out_rx).await, (want, false));
        }
        conn.cancel();
        task.await.unwrap();
    }

    /// Replayed from the log, commits stay whole: cut where `at` changes,
    /// also when a commit straddles two reads of the log, and a commit
    /// longer than a frame goes in frames marked `more`.
    #[tokio::test]
    async fn the_backlog_goes_in_whole_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let group = Arc::new(Group::new(GroupId(1), GroupState::new("g".into())));
        let long = FRAME_EVENTS as u64 + 10;
        // 1..=255 at 10; 256..=257 at 20 (across the first read's end);
        // a long one at 30; one more at 40.
        let commits: Vec<Vec<Event>> = vec![
            (1..=255).map(|s| unlocked(s, 10)).collect(),
            (256..=257).map(|s| unlocked(s, 20)).collect(),
            (258..258 + long).map(|s| unlocked(s, 30)).collect(),
            vec![unlocked(258 + long, 40)],
        ];
        for c in &commits {
            log_commit(&store, &group, c);
        }
        let (pump, mut out_rx, conn) = pump(&store, &group, 0);
        let task = tokio::spawn(pump.run());
        assert_eq!(frame(&mut out_rx).await, ((1..=255).collect(), false));
        assert_eq!(frame(&mut out_rx).await, (vec![256, 257], false), "a commit across two reads of the log");
        let head = 258..258 + FRAME_EVENTS as u64;
        assert_eq!(frame(&mut out_rx).await, (head.clone().collect(), true), "a long commit's first frame");
        assert_eq!(frame(&mut out_rx).await, ((head.end..258 + long).collect(), false), "and its last");
        assert_eq!(frame(&mut out_rx).await, (vec![258 + long], false));
        assert!(out_rx.try_recv().is_err(), "nothing more");
        conn.cancel();
        task.await.unwrap();
    }

    /// The largest events there are, a frame of them: under `MAX_FRAME`.
    #[test]
    fn a_full_frame_of_the_largest_events_fits() {
        use crate::proto::{encode_frame, FileEntry, FileKind, Owner, Version, MAX_LINK_TARGET, MAX_OWNER_NAME};
        let entry = FileEntry {
            id: FileId(u64::MAX),
            parent: FileId(u64::MAX),
            name: "n".repeat(255),
            kind: FileKind::Symlink("t".repeat(MAX_LINK_TARGET)),
            size: u64::MAX,
            mtime: u64::MAX,
            mode: u32::MAX,
            version: Version(u64::MAX),
            info_hash: Some(crate::proto::InfoHash([0xff; 20])),
            author: MemberId(u64::MAX),
            owner: Owner { user: "u".repeat(MAX_OWNER_NAME), group: "g".repeat(MAX_OWNER_NAME) },
            ctime: u64::MAX,
        };
        let kind = EventKind::FileRenamed { entry, old_parent: FileId(u64::MAX), old_name: "o".repeat(255) };
        let ev = Event { seq: Seq(u64::MAX), at: u64::MAX, by: MemberId(u64::MAX), kind };
        let frame = ServerFrame::Events { events: vec![ev; FRAME_EVENTS], more: true };
        let len = encode_frame(&frame).unwrap().len();
        assert!(len < crate::proto::MAX_FRAME / 4, "{len} bytes");
    }
}

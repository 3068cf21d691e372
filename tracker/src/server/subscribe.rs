//! Streams a group's events to one subscribed connection: the backlog from
//! sled, then live broadcasts, with no gaps or duplicates; and the group's
//! `Wanted` notices meant for it, as they come (best effort: a notice
//! missed while the connection lags is not sent later).
//!
//! Race-freedom: the pump's broadcast receiver is created before the
//! subscription's starting point is read, and the committer raises a
//! group's `durable` watermark before broadcasting. So every event after
//! the starting point is either at or below the watermark the pump reads
//! (it is in sled, the pump reads it there) or arrives on the receiver.
//! Events are filtered by seq: `seq <= last` is a duplicate, `seq > last+1`
//! (or a `Lagged` receiver) means "fill from sled up to the watermark".

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::conn::Out;
use super::group::{Group, Notice};
use super::store::Store;
use crate::proto::{Event, MemberId, ServerFrame};

/// Events read from sled per step (the writer queue bounds memory further).
const CHUNK: usize = 256;

pub(crate) struct Pump {
    pub store: Store,
    pub group: Arc<Group>,
    pub rx: broadcast::Receiver<Event>,
    pub notices: broadcast::Receiver<Notice>,
    /// The connection's member: notices it caused are not sent back.
    pub me: MemberId,
    /// Last seq the client has (from the Subscribe reply).
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
                    Ok(ev) if ev.seq.0 <= self.last => {}
                    Ok(ev) if ev.seq.0 == self.last + 1 => self.send(ev).await?,
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

    /// Sends everything durable after `last` from sled.
    async fn catch_up(&mut self) -> Result<(), PumpEnd> {
        loop {
            let durable = self.group.durable.borrow().0;
            if self.last >= durable {
                return Ok(());
            }
            let evs = self
                .store
                .events(self.group.id, self.last + 1, durable, CHUNK)
                .map_err(|e| PumpEnd::Gap(format!("cannot read the log: {e}")))?;
            if evs.first().map(|e| e.seq.0) != Some(self.last + 1) {
                return Err(PumpEnd::Gap(format!("event {} is no longer in the log", self.last + 1)));
            }
            for ev in evs {
                if ev.seq.0 != self.last + 1 {
                    return Err(PumpEnd::Gap(format!("log jumps from {} to {}", self.last, ev.seq)));
                }
                self.send(ev).await?;
            }
        }
    }

    async fn send(&mut self, ev: Event) -> Result<(), PumpEnd> {
        let seq = ev.seq.0;
        self.out.send(Out::Frame(ServerFrame::Event(ev))).await.map_err(|_| PumpEnd::Closed)?;
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

    /// The pump's broadcast receiver overflows while its client does not
    /// read; it must fill the hole from the log, in order, exactly once.
    #[tokio::test]
    async fn a_lagging_pump_reads_the_missed_range_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let group = Arc::new(Group::new(GroupId(1), GroupState::new("g".into())));
        let (out, mut out_rx) = mpsc::channel(4);
        let conn = CancellationToken::new();
        let pump = Pump {
            store: store.clone(),
            group: group.clone(),
            rx: group.events.subscribe(),
            notices: group.notices.subscribe(),
            me: MemberId(1),
            last: 0,
            out,
            conn: conn.clone(),
        };
        let task = tokio::spawn(pump.run());
        let n = 3000u64;
        for s in 1..=n {
            let ev = Event { seq: Seq(s), at: 0, by: MemberId(1), kind: EventKind::Unlocked { file: FileId(2) } };
            let mut w = WriteSet::new();
            w.put_event(group.id, &ev).unwrap();
            store.apply(w).unwrap();
            group.durable.send_replace(Seq(s));
            let _ = group.events.send(ev);
        }
        for want in 1..=n {
            match out_rx.recv().await {
                Some(Out::Frame(ServerFrame::Event(ev))) => assert_eq!(ev.seq.0, want),
                _ => panic!("expected event {want}"),
            }
        }
        assert!(out_rx.try_recv().is_err(), "duplicate events");
        conn.cancel();
        task.await.unwrap();
    }
}

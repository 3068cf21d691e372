//! Group commit: one sled flush makes a whole batch of applied writes
//! durable; only then are their events released to subscribers and the
//! replies that promised durability let go.
//!
//! When to flush: at once when a commit in the queue has a reply waiting
//! for it (a [`Ticket`]), or when a reply waits for a group's log to be
//! durable ([`Committer::durable_at`]). A batch nobody waits for (lock
//! grants, unlocks, renewals, presence) is flushed [`LAZY_FLUSH`] after its
//! first commit, together with whatever came meanwhile: under a stream of
//! lock+unlock pairs the tracker flushes about a hundred times a second,
//! not once per request, and their events still reach subscribers within
//! milliseconds. Submitting does not wake the committer while it gathers
//! such a batch (only the first commit after a flush and urgent ones do),
//! so a request costs no task hand-off.
//!
//! Ordinary leases reach sled no later than here: just before each flush,
//! what they left waiting in each group of the batch is written (see
//! `group.rs`). A flush thus makes them durable together with every event
//! before it, and a reply that waited for durability never leaves an
//! earlier lease change behind.
//!
//! Invariants:
//! - A subscriber never sees an event that a crash could still take back,
//!   so "no gaps, no duplicates" holds across a kill -9 of the tracker too.
//! - Commits are released in the order they were submitted, and a group
//!   submits under its mutex, so events leave in seq order, each commit's
//!   as one broadcast (its subscribers send it in one frame).
//! - A group's `durable` watermark is raised *before* its events are
//!   broadcast; a subscriber that registers for broadcasts and then reads
//!   the watermark therefore misses nothing (see `subscribe.rs`). It is
//!   raised to the last seq of a whole commit, so it never stands inside
//!   one.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch, Notify};

use super::group::Group;
use super::store::Store;
use crate::proto::{Event, Seq};

/// How long a batch that no reply waits for may wait for company before
/// it is flushed.
pub(crate) const LAZY_FLUSH: Duration = Duration::from_millis(10);

pub(crate) type Done = oneshot::Sender<Result<(), String>>;

/// Applied (not yet durable) writes of one request.
pub(crate) struct Commit {
    pub group: Option<Arc<Group>>,
    pub events: Vec<Event>,
    pub done: Option<Done>,
}

/// Something a reply waits for before it is written to the client.
pub(crate) enum Ticket {
    /// The flush covering one commit, and the seq of its last event.
    Flush(oneshot::Receiver<Result<(), String>>, Option<Seq>),
    /// A group's log being durable up to this seq.
    Seq(watch::Receiver<Seq>, Seq),
}

impl Ticket {
    /// The seq of the commit whose answer it holds back
    /// ([`crate::proto::ServerFrame::Response`]); none for an answer that
    /// only waits for the log to be durable (it committed nothing).
    pub fn seq(&self) -> Option<Seq> {
        match self {
            Ticket::Flush(_, seq) => *seq,
            Ticket::Seq(..) => None,
        }
    }

    pub async fn wait(self) -> Result<(), String> {
        match self {
            Ticket::Flush(rx, _) => rx.await.unwrap_or_else(|_| Err("tracker shutting down".into())),
            Ticket::Seq(mut rx, seq) => rx
                .wait_for(|s| *s >= seq)
                .await
                .map(|_| ())
                .map_err(|_| "tracker shutting down".into()),
        }
    }
}

/// Commits waiting for the committer.
struct Queue {
    state: Mutex<QueueState>,
    wake: Notify,
}

#[derive(Default)]
struct QueueState {
    commits: Vec<Commit>,
    /// A queued commit (or a reply) waits for the next flush.
    urgent: bool,
    /// The tracker is gone: flush what is queued and stop.
    closed: bool,
}

/// The submitting side; dropping it (with the tracker) ends the committer.
pub(crate) struct Committer {
    q: Arc<Queue>,
}

/// The committer task's side of the queue.
pub(crate) struct CommitQueue {
    q: Arc<Queue>,
}

impl QueueState {
    /// The queued commits; the queue keeps room for as many.
    fn take(&mut self) -> Vec<Commit> {
        let room = self.commits.len();
        std::mem::replace(&mut self.commits, Vec::with_capacity(room))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.q.state.lock().closed = true;
        self.q.wake.notify_one();
    }
}

impl Committer {
    pub fn new() -> (Committer, CommitQueue) {
        let q = Arc::new(Queue { state: Mutex::new(QueueState::default()), wake: Notify::new() });
        (Committer { q: q.clone() }, CommitQueue { q })
    }

    /// Queues a commit; with `want_ticket`, returns what resolves once it is durable.
    pub fn submit(&self, group: Option<Arc<Group>>, events: Vec<Event>, want_ticket: bool) -> Option<Ticket> {
        let (done, ticket) = if want_ticket {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(Ticket::Flush(rx, events.last().map(|e| e.seq))))
        } else {
            (None, None)
        };
        let urgent = done.is_some();
        let wake = {
            let mut st = self.q.state.lock();
            let was_empty = st.commits.is_empty();
            st.commits.push(Commit { group, events, done });
            st.urgent |= urgent;
            was_empty || urgent
        };
        if wake {
            self.q.wake.notify_one();
        }
        ticket
    }

    /// What a reply waits for so that it shows nothing a crash could take
    /// back: `group`'s log durable up to `seq`. `None` when it already is;
    /// otherwise the committer is told to flush now rather than lazily.
    pub fn durable_at(&self, group: &Group, seq: Seq) -> Option<Ticket> {
        if *group.durable.borrow() >= seq {
            return None;
        }
        let rx = group.durable.subscribe();
        // Every commit up to `seq` was submitted before `seq` could be
        // read: it is queued (and this makes the next flush come at once)
        // or already in the flush under way.
        self.q.state.lock().urgent = true;
        self.q.wake.notify_one();
        Some(Ticket::Seq(rx, seq))
    }
}

impl CommitQueue {
    /// Whatever is queued, without waiting.
    fn take_now(&self) -> Vec<Commit> {
        let mut st = self.q.state.lock();
        st.urgent = false;
        st.take()
    }

    /// The next batch: waits for a first commit, then (unless one is
    /// urgent) up to [`LAZY_FLUSH`] for more. `None` once the tracker is
    /// gone and nothing is left.
    async fn next_batch(&self) -> Option<Vec<Commit>> {
        loop {
            {
                let mut st = self.q.state.lock();
                if st.commits.is_empty() {
                    if st.closed {
                        return None;
                    }
                } else if st.urgent || st.closed {
                    st.urgent = false;
                    return Some(st.take());
                } else {
                    break;
                }
            }
            self.q.wake.notified().await;
        }
        let deadline = tokio::time::Instant::now() + LAZY_FLUSH;
        loop {
            let timed_out = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => true,
                _ = self.q.wake.notified() => false,
            };
            let mut st = self.q.state.lock();
            if timed_out || st.urgent || st.closed {
                st.urgent = false;
                return Some(st.take());
            }
        }
    }
}

/// Runs until the tracker is gone (its `Committer` dropped), then flushes
/// once more.
pub(crate) async fn run(store: Store, queue: CommitQueue) {
    let mut retry = Duration::from_millis(50);
    let mut failed: Vec<Commit> = Vec::new();
    loop {
        let batch = if failed.is_empty() {
            match queue.next_batch().await {
                Some(b) => b,
                None => break,
            }
        } else {
            let mut b = std::mem::take(&mut failed);
            b.extend(queue.take_now());
            b
        };
        match persist(&store, &batch).await {
            Ok(()) => {
                retry = Duration::from_millis(50);
                for c in batch {
                    release(c);
                }
            }
            Err(e) => {
                // The writes stay applied; a later successful flush covers
                // them and releases the events then, still in order.
                tracing::error!(error = %e, "tracker flush failed; retrying");
                for mut c in batch {
                    if let Some(d) = c.done.take() {
                        let _ = d.send(Err(format!("flush failed: {e}")));
                    }
                    failed.push(c);
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "final tracker flush failed");
    }
}

/// Writes what the batch's groups left waiting, then flushes.
async fn persist(store: &Store, batch: &[Commit]) -> Result<(), String> {
    let mut groups: Vec<&Arc<Group>> = batch.iter().filter_map(|c| c.group.as_ref()).collect();
    groups.sort_by_key(|g| g.id);
    groups.dedup_by_key(|g| g.id);
    for g in groups {
        g.write_unwritten(store).map_err(|e| format!("cannot write lease changes: {e}"))?;
    }
    store.flush().await.map_err(|e| e.to_string())
}

fn release(c: Commit) {
    if let Some(g) = c.group {
        if let Some(last) = c.events.last() {
            let seq = last.seq;
            g.durable.send_if_modified(|s| {
                let raise = seq > *s;
                if raise {
                    *s = seq;
                }
                raise
            });
        }
        if !c.events.is_empty() {
            // One message per commit: subscribers send it whole. No
            // receivers is fine: nobody is subscribed.
            let _ = g.events.send(c.events.into());
        }
    }
    if let Some(d) = c.done {
        let _ = d.send(Ok(()));
    }
}

//! Group commit: one sled flush makes a whole batch of applied writes
//! durable; only then are their events released to subscribers and the
//! replies that promised durability let go.
//!
//! Invariants:
//! - A subscriber never sees an event that a crash could still take back,
//!   so "no gaps, no duplicates" holds across a kill -9 of the tracker too.
//! - Commits are released in the order they were submitted, and a group
//!   submits under its mutex, so events leave in seq order.
//! - A group's `durable` watermark is raised *before* its events are
//!   broadcast; a subscriber that registers for broadcasts and then reads
//!   the watermark therefore misses nothing (see `subscribe.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::group::Group;
use super::store::Store;
use crate::proto::{Event, Seq};

/// Most commits released by one flush.
const MAX_BATCH: usize = 4096;

pub(crate) type Done = oneshot::Sender<Result<(), String>>;

/// Applied (not yet durable) writes of one request.
pub(crate) struct Commit {
    pub group: Option<Arc<Group>>,
    pub events: Vec<Event>,
    pub done: Option<Done>,
}

/// Something a reply waits for before it is written to the client.
pub(crate) enum Ticket {
    /// The flush covering one commit.
    Flush(oneshot::Receiver<Result<(), String>>),
    /// A group's log being durable up to this seq.
    Seq(watch::Receiver<Seq>, Seq),
}

impl Ticket {
    pub async fn wait(self) -> Result<(), String> {
        match self {
            Ticket::Flush(rx) => rx.await.unwrap_or_else(|_| Err("tracker shutting down".into())),
            Ticket::Seq(mut rx, seq) => rx
                .wait_for(|s| *s >= seq)
                .await
                .map(|_| ())
                .map_err(|_| "tracker shutting down".into()),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<Commit>,
}

impl Committer {
    pub fn new() -> (Committer, mpsc::UnboundedReceiver<Commit>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Committer { tx }, rx)
    }

    /// Queues a commit; with `want_ticket`, returns what resolves once it is durable.
    pub fn submit(&self, group: Option<Arc<Group>>, events: Vec<Event>, want_ticket: bool) -> Option<Ticket> {
        let (done, ticket) = if want_ticket {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(Ticket::Flush(rx)))
        } else {
            (None, None)
        };
        // A closed channel means the tracker is going away; the dropped
        // `done` then answers the ticket with an error.
        let _ = self.tx.send(Commit { group, events, done });
        ticket
    }
}

/// Runs until every `Committer` is dropped (the tracker is gone).
pub(crate) async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Commit>) {
    let mut batch: Vec<Commit> = Vec::new();
    let mut retry = Duration::from_millis(50);
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(c) => batch.push(c),
                None => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        match store.flush().await {
            Ok(()) => {
                retry = Duration::from_millis(50);
                for c in batch.drain(..) {
                    release(c);
                }
            }
            Err(e) => {
                // The writes stay applied; a later successful flush covers
                // them and releases the events then, still in order.
                tracing::error!(error = %e, "tracker flush failed; retrying");
                for c in batch.iter_mut() {
                    if let Some(d) = c.done.take() {
                        let _ = d.send(Err(format!("flush failed: {e}")));
                    }
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
        for ev in c.events {
            // No receivers is fine: nobody is subscribed.
            let _ = g.events.send(ev);
        }
    }
    if let Some(d) = c.done {
        let _ = d.send(Ok(()));
    }
}

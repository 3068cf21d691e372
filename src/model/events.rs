//! The front's side of the tracker's event stream: the connection going up
//! and down, snapshots and events (applied by the file table, then passed
//! on to the kernel, the version store, the member list and the swarm), and
//! the renewal of this member's leases.

use super::table::Effects;
use super::{now_ms, Content, Coordinator, CoordError, Folder};
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use titorrent_tracker::calls::{ListMembers, Renew};
use titorrent_tracker::proto::{Event, EventKind, FileEntry, FileId, Lease, MemberId, MemberInfo, Seq};

/// Lease renewals sent at once.
const RENEWALS_IN_FLIGHT: usize = 64;

impl<C: Content, T: Coordinator> Folder<C, T> {
    pub fn set_online(self: &Arc<Self>, online: bool) {
        self.online.store(online, Ordering::Relaxed);
        if online {
            let this = self.clone();
            self.tasks.spawn_on(async move { this.refresh_members().await }, &self.rt);
        }
    }

    // ---- members ---------------------------------------------------------

    /// Takes the member list from the tracker and hands the swarm the
    /// online members' peers.
    async fn refresh_members(&self) {
        match self.coord.call(ListMembers).await {
            Ok(ms) => {
                for m in &ms {
                    self.content.learn_member(m);
                }
                for gone in self.members.replace_all(ms) {
                    self.content.forget_member(gone.id, gone.peer_addr);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot list members"),
        }
    }

    /// `MemberJoined` and `MemberOnline`.
    fn member_online(&self, m: MemberInfo) {
        self.content.learn_member(&m);
        self.members.upsert(m);
    }

    /// `MemberOffline`: no longer dialled.
    fn member_offline(&self, member: MemberId) {
        if let Some(m) = self.members.set_offline(member) {
            self.content.learn_member(&m);
        }
    }

    /// `MemberLeft` (left or removed): its key is refused and its links cut.
    fn member_left(&self, member: MemberId) {
        let addr = self.members.remove(member).and_then(|m| m.peer_addr);
        self.content.forget_member(member, addr);
    }

    fn member_event(&self, kind: EventKind) {
        match kind {
            EventKind::MemberJoined(m) | EventKind::MemberOnline(m) => self.member_online(m),
            EventKind::MemberOffline { member } => self.member_offline(member),
            EventKind::MemberLeft { member } => self.member_left(member),
            _ => {}
        }
    }

    // ---- the file table --------------------------------------------------

    /// Replaces the table with a snapshot from the tracker.
    pub fn apply_snapshot(self: &Arc<Self>, seq: Seq, files: Vec<FileEntry>) {
        let (gone, changed) = self.table.apply_snapshot(seq, files);
        self.changed.notify_waiters();
        for (parent, name) in gone {
            self.kernel_inval_entry(parent, &name);
        }
        // Only the names that went or moved: a new name has no dentry to
        // drop, and an unchanged one keeps its own (see `Tree::link`).
        for e in &changed {
            self.kernel_inval_inode(e.id);
            self.fetch_in_background(e);
        }
    }

    pub fn apply_event(self: &Arc<Self>, ev: Event) {
        self.apply_events(vec![ev]);
    }

    /// Applies events in one step (see [`super::table::FileTable::apply_events`]),
    /// then tells the others what changed.
    pub fn apply_events(self: &Arc<Self>, evs: Vec<Event>) {
        let fx = self.table.apply_events(evs, &self.handles.open_files());
        self.pass_on(fx);
    }

    fn pass_on(self: &Arc<Self>, fx: Effects) {
        for (file, version, member) in fx.holders {
            self.store.note_holder(file, version, member);
        }
        for kind in fx.members {
            self.member_event(kind);
        }
        self.changed.notify_waiters();
        for (parent, name) in fx.names {
            self.kernel_inval_entry(parent, &name);
        }
        for id in fx.inodes {
            self.kernel_inval_inode(id);
        }
        for e in &fx.new_versions {
            self.collect_old_versions(e.id);
        }
        for id in fx.purged {
            self.collect_purged(id);
        }
        for e in fx.new_versions {
            if e.author != self.me {
                self.fetch_in_background(&e);
            }
        }
    }

    // ---- leases ----------------------------------------------------------

    /// Renews the leases of files being written here, well before they run
    /// out. Runs until the folder shuts down.
    pub async fn renew_leases(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let due = self.writes.due_renewals(now_ms());
            // Concurrently: a burst of writes holds many leases, and one
            // round trip each in turn would outlast them on a slow link.
            futures::stream::iter(due)
                .for_each_concurrent(RENEWALS_IN_FLIGHT, |(id, lease)| self.renew(id, lease))
                .await;
        }
    }

    async fn renew(&self, id: FileId, lease: Lease) {
        match self.coord.call(Renew { lease: lease.id }).await {
            Ok(l) => self.writes.renewed(id, lease.id, Some(l.expires)),
            Err(CoordError::Refused(e)) => {
                self.writes.renewed(id, lease.id, None);
                tracing::error!(file = %self.path_of(id), error = %e, "lease lost: the edit will be kept as a conflict copy if the publish is refused");
            }
            Err(e) => tracing::debug!(error = %e, "lease renewal failed; retrying"),
        }
    }
}

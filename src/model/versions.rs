//! The front's handling of versions: handing them to the swarm (once, with
//! this member's stripe), reporting complete copies, fetching in the
//! background, collecting old versions, and which files only this member
//! holds.

use super::{Content, ContentError, Coordinator, Fetch, Folder, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use titorrent_tracker::calls::{GetTorrent, Have};
use titorrent_tracker::proto::{FileEntry, FileId, InfoHash, MemberId, Version};

impl<C: Content, T: Coordinator> Folder<C, T> {
    /// Records a file's new current version and forgets local versions of
    /// it beyond the last K, unless another file's current version has the
    /// same content.
    pub(super) fn collect_old_versions(self: &Arc<Self>, id: FileId) {
        let Some(ih) = self.table.current(id).and_then(|e| e.info_hash) else { return };
        let doomed = self.store.push_current(id, ih);
        self.collect(doomed);
    }

    /// Forgets the versions of a deleted file whose time in the trash
    /// ended (the tracker's `Purged`).
    pub(super) fn collect_purged(self: &Arc<Self>, id: FileId) {
        let doomed = self.store.drop_history(id);
        self.collect(doomed);
    }

    /// Drops `doomed` versions from the swarm and the cache, except those
    /// that are some file's current version.
    fn collect(self: &Arc<Self>, mut doomed: Vec<InfoHash>) {
        doomed.retain(|h| !self.table.holds(h));
        self.store.forget(&doomed);
        for ih in doomed {
            let this = self.clone();
            self.tasks.spawn_on(
                async move {
                    match this.content.forget(ih).await {
                        Ok(()) => tracing::debug!(%ih, "old version collected"),
                        Err(e) => tracing::warn!(%ih, error = %e, "could not collect an old version"),
                    }
                },
                &self.rt,
            );
        }
    }

    /// Whether a file or one of its directories is pinned.
    pub(super) fn is_pinned(&self, id: FileId) -> bool {
        self.store.any_pinned(&self.table.ancestors(id))
    }

    /// Hands a version to the swarm once: its torrent comes from the local
    /// cache or the tracker.
    pub(super) async fn ensure_version(self: &Arc<Self>, file: FileId, version: Version, ih: InfoHash) -> Result<()> {
        if self.store.is_ensured(&ih) {
            return Ok(());
        }
        let tpath = self.dirs.torrents.join(format!("{ih}.torrent"));
        let torrent = match std::fs::read(&tpath) {
            Ok(t) => t,
            Err(_) => {
                let t = self.coord.call(GetTorrent { file, version }).await?;
                let _ = crate::atomic_file::write(&tpath, &t, false);
                t
            }
        };
        let author = self.table.current(file).map(|e| e.author);
        let first: Vec<MemberId> = author.into_iter().chain(self.store.holders(file, version)).collect();
        let peers = self.members.peers_first(&first);
        let fetch = if self.background.load(Ordering::Relaxed) || self.is_pinned(file) {
            Fetch::Background(self.members.stripe(author))
        } else {
            Fetch::OnDemand
        };
        match self.content.ensure(ih, &torrent, peers, fetch).await {
            Ok(()) => {
                self.store.mark_ensured(ih);
                self.report_when_complete(file, version, ih);
                Ok(())
            }
            Err(e) => {
                if matches!(e, ContentError::HashMismatch) {
                    let _ = std::fs::remove_file(&tpath);
                }
                Err(e.into())
            }
        }
    }

    /// Tells the tracker once this member holds a complete copy, so that
    /// the others know who can serve it (and who is the only one).
    fn report_when_complete(self: &Arc<Self>, file: FileId, version: Version, ih: InfoHash) {
        if !self.store.start_report(ih) {
            return;
        }
        let this = self.clone();
        self.tasks.spawn_on(
            async move {
                if this.content.wait_complete(ih).await.is_err() {
                    this.store.report_failed(&ih);
                    return;
                }
                let current = this.table.current(file).is_some_and(|e| e.version == version);
                if current {
                    if let Err(e) = this.coord.call(Have { file, version }).await {
                        tracing::debug!(%file, error = %e, "could not report a complete copy");
                        this.store.report_failed(&ih);
                    }
                }
            },
            &self.rt,
        );
    }

    /// Files whose current version no other member is known to hold.
    pub fn sole_copies(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .table
            .files_with_content()
            .into_iter()
            .filter(|e| {
                let hs = self.store.holders(e.id, e.version);
                let i_have = hs.contains(&self.me) || e.author == self.me;
                let others = hs.iter().any(|m| *m != self.me);
                i_have && !others
            })
            .map(|e| self.table.path(e.id))
            .collect();
        out.sort();
        out
    }

    pub(super) fn fetch_in_background(self: &Arc<Self>, e: &FileEntry) {
        let Some(ih) = e.info_hash else { return };
        if self.store.is_ensured(&ih) {
            return;
        }
        if !self.background.load(Ordering::Relaxed) && !self.is_pinned(e.id) {
            return;
        }
        let (this, file, version) = (self.clone(), e.id, e.version);
        self.tasks.spawn_on(
            async move {
                if let Err(err) = this.ensure_version(file, version, ih).await {
                    tracing::warn!(file = %this.path_of(file), %version, error = %err, "cannot fetch version");
                }
            },
            &self.rt,
        );
    }
}

//! The file table on its own: events applied once and in order, this
//! member's own changes against late events, directory times, snapshots
//! and locks.

use super::*;

fn file(id: u64, name: &str, version: u64, ih: Option<u8>) -> FileEntry {
    FileEntry {
        id: FileId(id),
        parent: FileId::ROOT,
        name: name.into(),
        kind: FileKind::File,
        size: 3,
        mtime: 10,
        mode: 0o644,
        version: Version(version),
        info_hash: ih.map(|n| InfoHash([n; 20])),
        author: MemberId(9),
        owner: Default::default(),
        ctime: 0,
    }
}

fn ev(seq: u64, kind: EventKind) -> Event {
    Event { seq: Seq(seq), at: 0, by: MemberId(9), kind }
}

#[test]
fn events_are_applied_once_in_order_and_say_what_changed() {
    let t = FileTable::default();
    t.apply_snapshot(Seq(0), vec![]);
    let none = HashSet::new();
    let fx = t.apply_events(
        vec![
            ev(1, EventKind::FileCreated(file(2, "a", 1, Some(1)))),
            ev(2, EventKind::Have { file: FileId(2), version: Version(1), member: MemberId(4) }),
            ev(3, EventKind::Have { file: FileId(2), version: Version(0), member: MemberId(5) }),
            ev(4, EventKind::MemberOffline { member: MemberId(4) }),
        ],
        &none,
    );
    assert!(fx.names.is_empty(), "a new name has no dentry to drop: {:?}", fx.names);
    assert_eq!(fx.inodes, vec![FileId(2), FileId::ROOT], "the new file, and the directory whose times it changed");
    assert_eq!(fx.new_versions.len(), 1);
    assert_eq!(fx.holders, vec![(FileId(2), Version(1), MemberId(9)), (FileId(2), Version(1), MemberId(4))]);
    assert!(matches!(fx.members[..], [EventKind::MemberOffline { .. }]));
    // Again: already applied, nothing happens.
    let fx = t.apply_events(vec![ev(1, EventKind::FileDeleted { file: FileId(2), parent: FileId::ROOT, name: "a".into() })], &none);
    assert!(fx.names.is_empty() && t.contains(FileId(2)));
    assert_eq!(t.seq(), Some(Seq(4)));
}

/// pjdfstest open/07: chmod 0477 then at once chmod 0747 here; the
/// first change's event is handled after the second's answer. It must
/// not bring 0477 back (the kernel would let the group write), and the
/// change's own event, and any later one, still apply.
#[test]
fn an_older_attribute_event_does_not_undo_this_members_change() {
    let t = FileTable::default();
    t.apply_snapshot(Seq(0), vec![file(2, "a", 1, Some(1))]);
    let none = HashSet::new();
    let with = |mode, ctime| FileEntry { mode, ctime, ..file(2, "a", 1, Some(1)) };
    t.attrs_set(with(0o747, 11));
    t.apply_events(vec![ev(1, EventKind::AttrChanged(with(0o477, 10)))], &none);
    assert_eq!(t.entry(FileId(2)).unwrap().mode, 0o747, "the older change stays undone");
    t.apply_events(vec![ev(2, EventKind::AttrChanged(with(0o747, 11)))], &none);
    t.apply_events(vec![ev(3, EventKind::AttrChanged(with(0o600, 12)))], &none);
    assert_eq!(t.entry(FileId(2)).unwrap().mode, 0o600, "another member's later change applies");
    assert!(t.inner.lock().attrs_set_here.is_empty(), "the record goes with its own event");

    // A chmod set while the file was being written rides after the
    // publish: the publish's own event (same version, older) does not
    // bring the old mode back while the chmod is on its way.
    t.attrs_on_their_way(FileId(2));
    t.apply_events(vec![ev(4, EventKind::FileUpdated(FileEntry { size: 9, ..with(0o644, 13) }))], &none);
    assert_eq!(t.entry(FileId(2)).map(|e| (e.mode, e.size)), Some((0o600, 9)), "the content's fields, not the mode");
    t.attrs_set(with(0o400, 14));
    t.apply_events(vec![ev(5, EventKind::AttrChanged(with(0o400, 14)))], &none);
    assert!(t.inner.lock().attrs_set_here.is_empty());
}

/// The answer to this member's publish is handled after the event of
/// another member's delete that came after the publish (`rm` on one
/// member right after a close on another): it does not bring the file
/// back, nor take its name from a file renamed over it.
#[test]
fn a_publish_answer_after_another_members_delete_does_not_bring_the_file_back() {
    let t = FileTable::default();
    t.apply_snapshot(Seq(0), vec![file(2, "a", 0, None), file(3, "b", 1, Some(3))]);
    let none = HashSet::new();
    t.apply_events(vec![ev(1, EventKind::FileDeleted { file: FileId(2), parent: FileId::ROOT, name: "a".into() })], &none);
    assert_eq!(t.published(file(2, "a", 1, Some(1))), tree::Applied::default());
    assert!(t.lookup(FileId::ROOT, "a").is_err(), "brought back by the late answer");
    // Renamed over: b takes the name a, the answer names the old a.
    let moved = FileEntry { name: "a".into(), ..file(3, "a", 1, Some(3)) };
    let renamed = EventKind::FileRenamed { entry: moved, old_parent: FileId::ROOT, old_name: "b".into() };
    t.apply_snapshot(Seq(1), vec![file(2, "a", 0, None), file(3, "b", 1, Some(3))]);
    let gone = EventKind::FileDeleted { file: FileId(2), parent: FileId::ROOT, name: "a".into() };
    t.apply_events(vec![ev(2, gone), ev(3, renamed)], &none);
    t.published(file(2, "a", 1, Some(1)));
    assert_eq!(t.lookup(FileId::ROOT, "a").unwrap(), FileId(3), "the name taken back by the late answer");
}

#[test]
fn a_file_deleted_here_ignores_its_late_events_and_publish_until_its_deletion() {
    let t = FileTable::default();
    t.apply_snapshot(Seq(0), vec![file(2, "a", 1, None)]);
    let none = HashSet::new();
    // Deleted in the tracker's commit 2.
    t.removed_here(FileId(2), &none, Some(Seq(2)));
    assert!(t.lookup(FileId::ROOT, "a").is_err());
    assert!(t.entry(FileId(2)).is_some(), "an orphan, still openable by inode");
    t.apply_events(vec![ev(1, EventKind::FileUpdated(file(2, "a", 2, None)))], &none);
    assert!(t.lookup(FileId::ROOT, "a").is_err(), "not brought back");
    // The answer to this member's publish, handled after the delete's.
    assert_eq!(t.published(file(2, "a", 3, Some(3))), tree::Applied::default());
    assert!(t.lookup(FileId::ROOT, "a").is_err(), "not brought back by the publish either");
    assert!(!t.own_is_empty());
    t.apply_events(vec![ev(2, EventKind::FileDeleted { file: FileId(2), parent: FileId::ROOT, name: "a".into() })], &none);
    assert!(t.own_is_empty(), "forgotten once the events reached the delete");
}

/// This member's own changes and the events take effect in commit order,
/// whichever reaches the table first: `config.lock` renamed over `config`
/// (commit 3) and a new `config.lock` made (commit 4), with the events of
/// commits 2 to 4 arriving only after both answers.
#[test]
fn own_changes_and_late_events_apply_in_commit_order() {
    let t = FileTable::default();
    let none = HashSet::new();
    t.apply_snapshot(Seq(1), vec![file(2, "config", 1, None)]);
    let lock = file(3, "config.lock", 1, None);
    let created = EventKind::FileCreated(lock.clone());
    t.insert(lock.clone(), Some(Seq(2)));
    let moved = FileEntry { name: "config".into(), ..lock.clone() };
    t.renamed_here(FileId(3), (FileId::ROOT, "config"), Some(FileId(2)), &none, Some(Seq(3)));
    let again = file(4, "config.lock", 1, None);
    t.insert(again.clone(), Some(Seq(4)));
    let shown = |t: &FileTable| (t.lookup(FileId::ROOT, "config").ok(), t.lookup(FileId::ROOT, "config.lock").ok());
    assert_eq!(shown(&t), (Some(FileId(3)), Some(FileId(4))));
    // The late events: the first creation of config.lock would take the
    // name back from the second; the rename would be done twice.
    t.apply_events(vec![ev(2, created)], &none);
    assert_eq!(shown(&t), (Some(FileId(3)), Some(FileId(4))), "a late creation changes nothing");
    let gone = EventKind::FileDeleted { file: FileId(2), parent: FileId::ROOT, name: "config".into() };
    let renamed = EventKind::FileRenamed { entry: moved, old_parent: FileId::ROOT, old_name: "config.lock".into() };
    t.apply_events(vec![ev(3, gone), ev(3, renamed)], &none);
    t.apply_events(vec![ev(4, EventKind::FileCreated(again))], &none);
    assert_eq!(shown(&t), (Some(FileId(3)), Some(FileId(4))));
    assert!(t.own_is_empty());
    // An answer older than the events already applied changes nothing.
    t.renamed_here(FileId(3), (FileId::ROOT, "old"), None, &none, Some(Seq(3)));
    assert_eq!(shown(&t), (Some(FileId(3)), Some(FileId(4))), "an answer the events overtook is not applied");
    // Events after this member's changes apply as usual.
    let later = EventKind::FileRenamed { entry: file(4, "other", 1, None), old_parent: FileId::ROOT, old_name: "config.lock".into() };
    t.apply_events(vec![ev(5, later)], &none);
    assert_eq!(t.lookup(FileId::ROOT, "other").ok(), Some(FileId(4)));
}

#[test]
fn entries_made_removed_and_moved_touch_their_directories_times() {
    let t = FileTable::default();
    let dir = |id: u64, name: &str| FileEntry { kind: FileKind::Dir, ..file(id, name, 0, None) };
    t.apply_snapshot(Seq(0), vec![dir(2, "d1"), dir(3, "d2"), file(4, "f", 1, None)]);
    let times = |id: u64| t.current(FileId(id)).map(|e| (e.mtime, e.ctime)).unwrap();
    let moved = FileEntry { parent: FileId(2), ..file(4, "f", 1, None) };
    let rename = EventKind::FileRenamed { entry: moved, old_parent: FileId::ROOT, old_name: "f".into() };
    let fx = t.apply_events(vec![Event { seq: Seq(1), at: 500, by: MemberId(9), kind: rename }], &HashSet::new());
    assert_eq!((times(1), times(2), times(3)), ((500, 500), (500, 500), (10, 0)), "both directories of a move, no other");
    assert!(fx.inodes.contains(&FileId(2)) && fx.inodes.contains(&FileId::ROOT), "the kernel is told: {:?}", fx.inodes);
    let before = super::super::now_ms();
    t.removed_here(FileId(4), &HashSet::new(), None);
    assert!(times(2).0 >= before && times(2).1 >= before, "a removal here touches the directory at once");
    t.insert(FileEntry { parent: FileId(3), ctime: 700, ..file(5, "g", 0, None) }, None);
    assert_eq!(times(3), (700, 700), "a creation here: at the tracker's time");
}

#[test]
fn a_rename_here_over_another_file_keeps_the_tables_attributes() {
    let t = FileTable::default();
    t.apply_snapshot(Seq(0), vec![file(2, "tmp", 1, None), file(3, "final", 1, None)]);
    t.set_attrs_here(FileId(2), Some(0o600), None);
    t.renamed_here(FileId(2), (FileId::ROOT, "final"), Some(FileId(3)), &HashSet::new(), None);
    assert_eq!(t.lookup(FileId::ROOT, "final").unwrap(), FileId(2));
    assert_eq!(t.current(FileId(2)).unwrap().mode, 0o600);
    assert!(t.current(FileId(3)).is_none());
    assert_eq!(t.ancestors(FileId(2)), vec![FileId(2), FileId::ROOT]);
}

#[test]
fn snapshots_report_what_went_and_what_is_new() {
    let t = FileTable::default();
    t.apply_snapshot(Seq(0), vec![file(2, "a", 1, None), file(3, "b", 1, None)]);
    let (gone, changed) = t.apply_snapshot(Seq(5), vec![file(2, "a", 2, None), file(4, "c", 1, None)]);
    assert_eq!(gone, vec![(FileId::ROOT, "b".to_string())]);
    let mut ids: Vec<FileId> = changed.iter().map(|e| e.id).collect();
    ids.sort();
    assert_eq!(ids, vec![FileId(2), FileId(4)]);
    assert_eq!(t.seq(), Some(Seq(5)));
}

#[test]
fn locks_are_tracked_from_events() {
    let t = FileTable::default();
    t.apply_snapshot(Seq(0), vec![file(2, "a", 1, None)]);
    let holder = LockHolder { member: MemberId(9), member_name: "ana".into(), since: 0, expires: 0 };
    t.apply_events(vec![ev(1, EventKind::Locked { file: FileId(2), holder: holder.clone() })], &HashSet::new());
    assert_eq!(t.lock_holder(FileId(2)), Some(holder));
    assert_eq!(t.locks().len(), 1);
    t.apply_events(vec![ev(2, EventKind::Unlocked { file: FileId(2) })], &HashSet::new());
    assert!(t.lock_holder(FileId(2)).is_none());
}

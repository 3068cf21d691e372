//! Answers that carry a group's whole file table (`Subscribe`'s
//! `Snapshot`, `ListFiles`'s `Files`), sent as bounded
//! [`ServerFrame::Part`]s and then the `Response`, so that no group size
//! makes a frame exceed [`MAX_FRAME`](crate::proto::MAX_FRAME).
//!
//! Consistency: the rows are copied out of the group's table in one step
//! under its mutex, at the `seq` the answer names; events after `seq`
//! reach a subscriber only after the last part (the connection sends
//! nothing else in between), so it sees the table as of `seq` and then
//! every later event, as with a one-frame snapshot.
//!
//! Memory: one copy of the rows per answer in flight (moved out row by row
//! as parts are encoded, so names are freed as they go), plus one encoded
//! part in the connection's write buffer; never the whole table encoded.

use crate::calls::{Answer, FileTable, Subscription};
use crate::proto::{FileEntry, Seq, ServerFrame};

/// Budget of one part, by an upper bound of each row's encoded size: under
/// the connection's kept write buffer (`conn::OUT_KEEP`), so streaming a
/// table reuses one buffer, and far under `MAX_FRAME` whatever the names.
pub(crate) const PART_BYTES: usize = 192 * 1024;
const _: () = assert!(PART_BYTES + 4096 <= super::conn::OUT_KEEP);

/// An upper bound of a row's bincode size (varints at their widest: nine
/// 64-bit fields, the mode, the kind, the info hash, the name's length).
fn row_bound(e: &FileEntry) -> usize {
    96 + e.name.len()
}

/// Which answer the rows make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableKind {
    /// `Response::Snapshot` (a subscription's starting point).
    Snapshot,
    /// `Response::Files` (`ListFiles`).
    Files,
}

/// A file table answer to request `id`, partly sent.
pub(crate) struct TableAnswer {
    pub id: u64,
    seq: Seq,
    kind: TableKind,
    rows: std::vec::IntoIter<FileEntry>,
}

impl TableAnswer {
    pub fn new(id: u64, kind: TableKind, seq: Seq, rows: Vec<FileEntry>) -> TableAnswer {
        TableAnswer { id, seq, kind, rows: rows.into_iter() }
    }

    /// The next frame to send, and whether it is the last (the `Response`).
    /// A table that fits one part is the `Response` alone, as before parts
    /// existed.
    pub fn next_frame(&mut self) -> (ServerFrame, bool) {
        let mut files = Vec::new();
        let mut bytes = 0;
        while let Some(row) = self.rows.as_slice().first() {
            let cost = row_bound(row);
            if !files.is_empty() && bytes + cost > PART_BYTES {
                break;
            }
            bytes += cost;
            files.extend(self.rows.next());
        }
        if self.rows.len() > 0 {
            return (ServerFrame::Part { id: self.id, files }, false);
        }
        let resp = match self.kind {
            TableKind::Snapshot => Subscription::Snapshot { seq: self.seq, files }.into_response(),
            TableKind::Files => FileTable { seq: self.seq, files }.into_response(),
        };
        (ServerFrame::Response { id: self.id, seq: None, resp }, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{encode_frame, FileId, FileKind, InfoHash, MemberId, Reassembly, Response, Version};

    /// Every field at its widest encoding.
    fn widest(id: u64, name_len: usize) -> FileEntry {
        FileEntry {
            id: FileId(u64::MAX - id),
            parent: FileId(u64::MAX),
            name: "n".repeat(name_len),
            kind: FileKind::File,
            size: u64::MAX,
            mtime: u64::MAX,
            mode: u32::MAX,
            version: Version(u64::MAX),
            info_hash: Some(InfoHash([0xff; 20])),
            author: MemberId(u64::MAX),
            owner: Default::default(),
            ctime: 0,
        }
    }

    #[test]
    fn the_row_bound_is_an_upper_bound() {
        for len in [1, 17, 255] {
            let one = encode_frame(&vec![widest(0, len)]).unwrap().len() - 4;
            let empty = encode_frame(&Vec::<FileEntry>::new()).unwrap().len() - 4;
            assert!(one - empty <= row_bound(&widest(0, len)), "name of {len}: {} bytes", one - empty);
        }
    }

    #[test]
    fn parts_stay_in_budget_and_reassemble_to_the_table_once_each() {
        let rows: Vec<FileEntry> = (0..5000).map(|i| widest(i, 1 + (i as usize * 7) % 255)).collect();
        let mut answer = TableAnswer::new(9, TableKind::Files, Seq(42), rows.clone());
        let mut re = Reassembly::default();
        let mut frames = 0;
        let resp = loop {
            let (frame, last) = answer.next_frame();
            frames += 1;
            assert!(encode_frame(&frame).unwrap().len() <= PART_BYTES + 64, "part over budget");
            match frame {
                ServerFrame::Part { id, files } => re.part(id, files).unwrap(),
                ServerFrame::Response { id, resp, .. } => {
                    assert!(last);
                    break re.finish(id, resp).unwrap();
                }
                other => panic!("{other:?}"),
            }
        };
        assert!(frames > 3, "{frames} frames");
        assert_eq!(resp, Response::Files { seq: Seq(42), files: rows });
    }

    #[test]
    fn a_small_table_is_one_response() {
        let mut answer = TableAnswer::new(3, TableKind::Snapshot, Seq(1), vec![widest(0, 4)]);
        let (frame, last) = answer.next_frame();
        assert!(last);
        assert!(matches!(frame, ServerFrame::Response { id: 3, resp: Response::Snapshot { ref files, .. }, .. } if files.len() == 1));
        let mut empty = TableAnswer::new(4, TableKind::Files, Seq(1), vec![]);
        assert!(matches!(empty.next_frame(), (ServerFrame::Response { id: 4, .. }, true)));
    }
}

//! Which kernel I/O mode each open asks for, so that no open ever asks for
//! one the kernel must refuse.
//!
//! The kernel keeps one I/O mode per inode (fs/fuse/iomode.c, 6.9+): while
//! any open file of an inode goes through the page cache ("cached"), an open
//! asking for passthrough fails; while a passthrough open is live, every
//! other open of the inode must be passthrough too, on the same backing
//! file. A refused open fails with `EIO` for the program calling open(2).
//! `FOPEN_PASSTHROUGH | FOPEN_DIRECT_IO` is a passthrough open whose reads
//! and writes still come to the daemon (direct I/O overrides passthrough for
//! them; only mmap uses the backing file).
//!
//! So, per open:
//! - a read-only open of a complete local version is passthrough when no
//!   cached open of the inode is live and any live passthrough open reads
//!   the same version (they share one backing id);
//! - any other open while passthrough opens are live (a write beside
//!   readers, a newer version opened while an older one is read) is
//!   passthrough + direct I/O on the live backing: the daemon serves it. Its
//!   mmap would map the backing file: read-only (the backing file is opened
//!   read-only, so a writable shared mapping is refused), and the version
//!   the passthrough readers read;
//! - an open for appending (`O_APPEND`) is direct I/O: the daemon decides
//!   where each append lands (the true end of the file, which the size the
//!   kernel caches may not be), so the page cache must not keep the bytes
//!   at the offset the kernel guessed. A direct-I/O open takes no mode of
//!   the inode (iomode.c), so it fits beside cached opens; beside
//!   passthrough ones it is passthrough + direct I/O, as above;
//! - a read-only open of a version not complete here is direct I/O: its
//!   bytes come from the network into the object file, and a second copy
//!   in this inode's page cache would cost as much again (twice the memory
//!   traffic of a cold read; P2a). Its mmap puts the inode in the kernel's
//!   cached mode (`FUSE_DIRECT_IO_ALLOW_MMAP`), so it counts as cached
//!   here: no passthrough open is offered beside it;
//! - otherwise it is cached.
//!
//! Our view of what is open trails the kernel's: the kernel drops an open's
//! mode before its RELEASE reaches us, so what we count always covers what
//! the kernel holds, and an answer that fits our count fits the kernel's.
//! The decision and the count change under one lock, so two opens decided
//! at once see each other.

use std::collections::HashMap;
use std::sync::Arc;
use titorrent_tracker::proto::InfoHash;

/// What an open asks the kernel for. `B` is the kernel's backing id
/// (`fuser::BackingId`; a stand-in in the tests).
pub enum Mode<B> {
    /// Through the page cache, read and written by the daemon.
    Cached,
    /// Read by the kernel straight from the backing file.
    Passthrough(Arc<B>),
    /// Passthrough + `FOPEN_DIRECT_IO` on the inode's live backing: reads
    /// and writes to the daemon, no page cache.
    BesidePassthrough(Arc<B>),
    /// `FOPEN_DIRECT_IO` alone: reads and writes to the daemon, no page
    /// cache, no mode of the inode taken.
    Direct,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cached,
    Direct,
    /// Plain or beside: either holds the inode's backing in the kernel.
    Passthrough,
}

struct InodeIo<B> {
    cached: u32,
    passthrough: u32,
    /// The version live passthrough opens read and its backing id; kept
    /// while `passthrough > 0`.
    backing: Option<(InfoHash, Arc<B>)>,
}

impl<B> Default for InodeIo<B> {
    fn default() -> Self {
        InodeIo { cached: 0, passthrough: 0, backing: None }
    }
}

/// Open handles and the mode each asked for, per inode.
pub struct IoModes<B> {
    handles: HashMap<u64, (u64, Kind)>,
    inodes: HashMap<u64, InodeIo<B>>,
}

impl<B> Default for IoModes<B> {
    fn default() -> Self {
        IoModes { handles: HashMap::new(), inodes: HashMap::new() }
    }
}

impl<B> IoModes<B> {
    /// A read-only open of `ino` as handle `fh`. `local` is the version
    /// when it is complete here (and passthrough is on); `remote`, that the
    /// version's bytes are not all here yet; `open_backing` registers its
    /// object file with the kernel, `None` when refused.
    pub fn open_read(
        &mut self,
        ino: u64,
        fh: u64,
        local: Option<InfoHash>,
        remote: bool,
        open_backing: impl FnOnce() -> Option<B>,
    ) -> Mode<B> {
        let io = self.inodes.entry(ino).or_default();
        // (A live backing means no cached open is live.)
        let mode = match (local, &io.backing) {
            (Some(ih), Some((live, backing))) if *live == ih => Mode::Passthrough(backing.clone()),
            (_, Some((_, backing))) => Mode::BesidePassthrough(backing.clone()),
            (Some(ih), None) if io.cached == 0 => match open_backing() {
                Some(b) => {
                    let b = Arc::new(b);
                    io.backing = Some((ih, b.clone()));
                    Mode::Passthrough(b)
                }
                None => Mode::Cached,
            },
            _ => Mode::Cached,
        };
        self.add(ino, fh, &mode);
        match mode {
            // Counted as cached (above): its mmap would make it so.
            Mode::Cached if remote => Mode::Direct,
            mode => mode,
        }
    }

    /// An open for writing (or a create) of `ino` as handle `fh`: the
    /// daemon serves it, through the page cache unless passthrough readers
    /// of the inode are live or it appends.
    pub fn open_write(&mut self, ino: u64, fh: u64, append: bool) -> Mode<B> {
        let mode = match self.inodes.get(&ino).and_then(|io| io.backing.as_ref()) {
            Some((_, backing)) => Mode::BesidePassthrough(backing.clone()),
            None if append => Mode::Direct,
            None => Mode::Cached,
        };
        self.add(ino, fh, &mode);
        mode
    }

    fn add(&mut self, ino: u64, fh: u64, mode: &Mode<B>) {
        let io = self.inodes.entry(ino).or_default();
        let kind = match mode {
            Mode::Cached => {
                io.cached += 1;
                Kind::Cached
            }
            Mode::Direct => Kind::Direct,
            Mode::Passthrough(_) | Mode::BesidePassthrough(_) => {
                io.passthrough += 1;
                Kind::Passthrough
            }
        };
        if let Some((old_ino, old)) = self.handles.insert(fh, (ino, kind)) {
            // Handles are never reused while open; keep the counts right anyway.
            self.forget(old_ino, old);
        }
    }

    /// The kernel released handle `fh`.
    pub fn release(&mut self, fh: u64) {
        if let Some((ino, kind)) = self.handles.remove(&fh) {
            self.forget(ino, kind);
        }
    }

    fn forget(&mut self, ino: u64, kind: Kind) {
        let Some(io) = self.inodes.get_mut(&ino) else { return };
        match kind {
            Kind::Cached => io.cached = io.cached.saturating_sub(1),
            Kind::Direct => {}
            Kind::Passthrough => {
                io.passthrough = io.passthrough.saturating_sub(1);
                if io.passthrough == 0 {
                    io.backing = None; // closes the backing id
                }
            }
        }
        if io.cached == 0 && io.passthrough == 0 {
            self.inodes.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: InfoHash = InfoHash([1; 20]);
    const V2: InfoHash = InfoHash([2; 20]);

    /// What a mode is, and which backing id it names.
    fn show(m: &Mode<u32>) -> (&'static str, Option<u32>) {
        match m {
            Mode::Cached => ("cached", None),
            Mode::Passthrough(b) => ("passthrough", Some(**b)),
            Mode::BesidePassthrough(b) => ("beside", Some(**b)),
            Mode::Direct => ("direct", None),
        }
    }

    /// A backing id maker that counts the ids it made (1, 2, ...).
    fn backing(made: &mut u32) -> impl FnOnce() -> Option<u32> + '_ {
        move || {
            *made += 1;
            Some(*made)
        }
    }

    #[test]
    fn complete_local_reads_share_one_backing_id() {
        let mut io = IoModes::default();
        let mut made = 0;
        let a = io.open_read(7, 1, Some(V1), false, backing(&mut made));
        let b = io.open_read(7, 2, Some(V1), false, backing(&mut made));
        match (&a, &b) {
            (Mode::Passthrough(x), Mode::Passthrough(y)) => assert!(Arc::ptr_eq(x, y)),
            _ => panic!("both opens should be passthrough"),
        }
        assert_eq!(made, 1);
        io.release(1);
        io.release(2);
        // All closed: the next open registers the file again.
        assert_eq!(show(&io.open_read(7, 3, Some(V1), false, backing(&mut made))), ("passthrough", Some(2)));
    }

    #[test]
    fn a_read_opened_before_the_file_was_local_keeps_later_reads_cached() {
        let mut io = IoModes::default();
        let mut made = 0;
        assert_eq!(show(&io.open_read(7, 1, None, false, backing(&mut made))), ("cached", None));
        // Complete now, but the first open still uses the page cache.
        assert_eq!(show(&io.open_read(7, 2, Some(V1), false, backing(&mut made))), ("cached", None));
        assert_eq!(made, 0);
        io.release(1);
        io.release(2);
        assert_eq!(show(&io.open_read(7, 3, Some(V1), false, backing(&mut made))), ("passthrough", Some(1)));
    }

    #[test]
    fn a_write_open_beside_passthrough_readers_keeps_their_backing_and_is_cached_once_they_close() {
        let mut io = IoModes::default();
        let mut made = 0;
        assert_eq!(show(&io.open_read(7, 1, Some(V1), false, backing(&mut made))), ("passthrough", Some(1)));
        assert_eq!(show(&io.open_write(7, 2, false)), ("beside", Some(1)));
        // Another inode is unaffected.
        assert_eq!(show(&io.open_write(8, 3, false)), ("cached", None));
        io.release(1);
        // The write still holds the backing: a new read shares it.
        assert_eq!(show(&io.open_read(7, 4, Some(V1), false, backing(&mut made))), ("passthrough", Some(1)));
        io.release(2);
        io.release(4);
        assert_eq!(show(&io.open_write(7, 5, false)), ("cached", None));
        // And a read of 7 cannot be passthrough while that write is open.
        assert_eq!(show(&io.open_read(7, 6, Some(V1), false, backing(&mut made))), ("cached", None));
        assert_eq!(made, 1);
    }

    #[test]
    fn a_new_version_opened_while_the_old_one_is_read_by_passthrough_is_served_beside_it() {
        let mut io = IoModes::default();
        let mut made = 0;
        assert_eq!(show(&io.open_read(7, 1, Some(V1), false, backing(&mut made))), ("passthrough", Some(1)));
        assert_eq!(show(&io.open_read(7, 2, Some(V2), false, backing(&mut made))), ("beside", Some(1)));
        assert_eq!(show(&io.open_read(7, 3, None, false, backing(&mut made))), ("beside", Some(1)));
        assert_eq!(made, 1);
        io.release(1);
        io.release(2);
        io.release(3);
        assert_eq!(show(&io.open_read(7, 4, Some(V2), false, backing(&mut made))), ("passthrough", Some(2)));
    }

    #[test]
    fn an_append_is_direct_io_beside_cached_opens_and_beside_passthrough_beside_passthrough_ones() {
        let mut io = IoModes::default();
        let mut made = 0;
        assert_eq!(show(&io.open_read(7, 1, None, false, backing(&mut made))), ("cached", None));
        assert_eq!(show(&io.open_write(7, 2, true)), ("direct", None));
        io.release(1);
        // The direct open holds no mode: a local read may be passthrough.
        assert_eq!(show(&io.open_read(7, 3, Some(V1), false, backing(&mut made))), ("passthrough", Some(1)));
        assert_eq!(show(&io.open_write(7, 4, true)), ("beside", Some(1)));
        io.release(2);
        io.release(3);
        io.release(4);
        assert!(io.inodes.is_empty() && io.handles.is_empty());
    }

    #[test]
    fn a_refused_backing_id_falls_back_to_the_page_cache() {
        let mut io = IoModes::<u32>::default();
        assert_eq!(show(&io.open_read(7, 1, Some(V1), false, || None)), ("cached", None));
        io.release(1);
        io.release(1); // a second release of the same handle changes nothing
        assert!(io.inodes.is_empty() && io.handles.is_empty());
    }

    #[test]
    fn a_version_not_here_is_read_direct_and_keeps_passthrough_away_while_open() {
        let mut io = IoModes::default();
        let mut made = 0;
        // Still being fetched: direct I/O, but counted as cached (its mmap
        // would put the inode in the kernel's cached mode).
        assert_eq!(show(&io.open_read(7, 1, None, true, backing(&mut made))), ("direct", None));
        // Now complete here: no passthrough beside it, the page cache.
        assert_eq!(show(&io.open_read(7, 2, Some(V1), false, backing(&mut made))), ("cached", None));
        io.release(1);
        io.release(2);
        assert_eq!(show(&io.open_read(7, 3, Some(V1), false, backing(&mut made))), ("passthrough", Some(1)));
        // Beside passthrough readers, a remote open reads through them.
        assert_eq!(show(&io.open_read(7, 4, None, true, backing(&mut made))), ("beside", Some(1)));
        assert_eq!(made, 1);
    }
}

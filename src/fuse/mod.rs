//! FUSE glue only: each fuser callback becomes one model call and exactly
//! one reply. Callbacks answer from memory; anything that waits on the
//! network moves its reply into a task on the tokio runtime and returns, so
//! the dispatch threads never wait on the tracker or the swarm.

pub mod errno;
mod iomode;
pub mod mount;
mod owners;

use crate::model::{AttrChange, Content, Coordinator, Fh, Folder, KernelCache, MknodKind, ModelError, NodeType, OpenMode, ReadPlan, ReadSource};
use iomode::{IoModes, Mode};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    BackingId, Notifier, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use owners::Owners;
use titorrent_tracker::proto::{FileEntry, FileId, Owner};

/// How long the kernel may trust attributes and names without asking. Other
/// members' changes are pushed into the kernel by invalidation, so this only
/// bounds how stale a missed notification can make things.
const TTL: Duration = Duration::from_secs(1);

/// Longest name component, in bytes, as statfs tells it.
const NAME_MAX: u32 = crate::model::NAME_MAX as u32;

pub struct TitorrentFs<C: Content, T: Coordinator> {
    folder: Arc<Folder<C, T>>,
    rt: tokio::runtime::Handle,
    owners: Arc<Owners>,
    /// Whether the kernel accepted FUSE passthrough at init.
    passthrough: bool,
    /// The I/O mode of every open handle, and the backing ids of the
    /// passthrough ones (kept while they are open).
    io: Arc<Mutex<IoModes<BackingId>>>,
}

impl<C: Content, T: Coordinator> TitorrentFs<C, T> {
    pub fn new(folder: Arc<Folder<C, T>>, rt: tokio::runtime::Handle) -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        TitorrentFs { folder, rt, owners: Arc::new(Owners::new(uid, gid)), passthrough: false, io: Arc::default() }
    }

    fn attr(&self, e: &FileEntry) -> FileAttr {
        file_attr(e, self.folder.node_type(e), self.folder.atime(e), self.folder.nlink(e), &self.owners)
    }
}

/// Who a file made by this request belongs to: the caller's fsuid and fsgid.
fn owner_of(owners: &Owners, req: &Request) -> Owner {
    owners.owner(req.uid(), req.gid())
}

fn file_type(ty: NodeType) -> FileType {
    match ty {
        NodeType::File => FileType::RegularFile,
        NodeType::Dir => FileType::Directory,
        NodeType::Symlink => FileType::Symlink,
        NodeType::Fifo => FileType::NamedPipe,
        NodeType::Socket => FileType::Socket,
        NodeType::CharDevice(_) => FileType::CharDevice,
        NodeType::BlockDevice(_) => FileType::BlockDevice,
    }
}

/// A file's attributes as the kernel gets them; `atime` is this member's
/// own (see `Folder::atime`).
pub fn file_attr(e: &FileEntry, ty: NodeType, atime: u64, nlink: u32, owners: &Owners) -> FileAttr {
    let mtime = UNIX_EPOCH + Duration::from_millis(e.mtime);
    let atime = UNIX_EPOCH + Duration::from_millis(atime);
    // An entry from before protocol 12 has no ctime: its mtime stands in.
    let ctime = UNIX_EPOCH + Duration::from_millis(if e.ctime == 0 { e.mtime } else { e.ctime });
    let (uid, gid) = owners.ids(&e.owner);
    let kind = file_type(ty);
    FileAttr {
        ino: INodeNo(e.id.0),
        size: e.size,
        blocks: e.size.div_ceil(512),
        atime,
        mtime,
        ctime,
        crtime: mtime,
        kind,
        perm: (e.mode & 0o7777) as u16,
        nlink,
        uid,
        gid,
        rdev: ty.rdev(),
        blksize: 4096,
        flags: 0,
    }
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

fn fid(ino: INodeNo) -> FileId {
    FileId(ino.0)
}

fn millis(t: TimeOrNow) -> u64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl<C: Content, T: Coordinator> Filesystem for TitorrentFs<C, T> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with open() instead of as a separate setattr, so a
        // truncating open is one locked edit.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC | InitFlags::FUSE_PARALLEL_DIROPS);
        // A symbolic link's target never changes (a new one is a new
        // entry): the kernel may keep it in its page cache.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        // Listings carry every entry's attributes (READDIRPLUS): `ls -l` and
        // `find -ls` then stat from the kernel's cache instead of sending a
        // LOOKUP per name. The table is in memory, so attributes cost us
        // nothing to add.
        let readdirplus = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS).is_ok();
        // Local, complete versions are read by the kernel straight from the
        // object file (kernel 6.9+; see `open`).
        self.passthrough = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        // A direct-I/O open (appends, and reads of versions not complete
        // here: see `iomode`) may still be mmapped, shared too.
        let direct_mmap = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP).is_ok();
        tracing::debug!(passthrough = self.passthrough, readdirplus, direct_mmap, "FUSE init");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = name_str(name).and_then(|n| self.folder.lookup(fid(parent), n).map_err(|e| errno::to_errno("lookup", &e)));
        match res {
            Ok(e) => reply.entry(&TTL, &self.attr(&e), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.folder.attr(fid(ino)) {
            Ok(e) => reply.attr(&TTL, &self.attr(&e)),
            Err(e) => reply.error(errno::to_errno("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let folder = self.folder.clone();
        let owners = self.owners.clone();
        let id = fid(ino);
        let fh = fh.map(|f| Fh(f.0));
        // Whether the caller may chown, chmod or set times is the kernel's
        // check (default_permissions) before this is called.
        let owner = match (uid, gid) {
            (None, None) => None,
            _ => match self.folder.attr(id) {
                Ok(cur) => Some(Owner {
                    user: uid.map_or(cur.owner.user.clone(), |u| self.owners.user_name(u)),
                    group: gid.map_or(cur.owner.group.clone(), |g| self.owners.group_name(g)),
                }),
                Err(e) => return reply.error(errno::to_errno("setattr", &e)),
            },
        };
        self.rt.spawn(async move {
            let res: Result<FileEntry, ModelError> = async {
                if let Some(size) = size {
                    folder.set_size(id, fh, size).await?;
                }
                let change = AttrChange { mode, mtime: mtime.map(millis), atime: atime.map(millis), owner };
                folder.set_attrs(id, change).await
            }
            .await;
            match res {
                Ok(e) => reply.attr(&TTL, &file_attr(&e, folder.node_type(&e), folder.atime(&e), folder.nlink(&e), &owners)),
                Err(e) => reply.error(errno::to_errno("setattr", &e)),
            }
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let folder = self.folder.clone();
        let owners = self.owners.clone();
        let owner = owner_of(&owners, req);
        self.rt.spawn(async move {
            match folder.mkdir(fid(parent), &name, mode & !umask, owner).await {
                Ok(e) => reply.entry(&TTL, &file_attr(&e, NodeType::Dir, e.mtime, 2, &owners), Generation(0)),
                Err(e) => reply.error(errno::to_errno("mkdir", &e)),
            }
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (name, target) = match (name_str(link_name), name_str(target.as_os_str())) {
            (Ok(n), Ok(t)) => (n.to_string(), t.to_string()),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let folder = self.folder.clone();
        let owners = self.owners.clone();
        let owner = owner_of(&owners, req);
        self.rt.spawn(async move {
            match folder.symlink(fid(parent), &name, &target, owner).await {
                Ok(e) => reply.entry(&TTL, &file_attr(&e, NodeType::Symlink, e.mtime, 1, &owners), Generation(0)),
                Err(e) => reply.error(errno::to_errno("symlink", &e)),
            }
        });
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let name = match name_str(newname) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let folder = self.folder.clone();
        let owners = self.owners.clone();
        self.rt.spawn(async move {
            match folder.link(fid(ino), fid(newparent), &name).await {
                Ok(e) => reply.entry(&TTL, &file_attr(&e, folder.node_type(&e), folder.atime(&e), folder.nlink(&e), &owners), Generation(0)),
                Err(e) => reply.error(errno::to_errno("link", &e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.folder.readlink(fid(ino)) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno::to_errno("readlink", &e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => MknodKind::Regular,
            libc::S_IFIFO => MknodKind::Fifo,
            libc::S_IFSOCK => MknodKind::Socket,
            libc::S_IFCHR => MknodKind::CharDevice(rdev),
            libc::S_IFBLK => MknodKind::BlockDevice(rdev),
            _ => return reply.error(Errno::EINVAL),
        };
        let folder = self.folder.clone();
        let owners = self.owners.clone();
        let owner = owner_of(&owners, req);
        self.rt.spawn(async move {
            match folder.mknod(fid(parent), &name, kind, mode & !umask & 0o7777, owner).await {
                Ok(e) => reply.entry(&TTL, &file_attr(&e, folder.node_type(&e), e.mtime, folder.nlink(&e), &owners), Generation(0)),
                Err(e) => reply.error(errno::to_errno("mknod", &e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, true, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_str(name), name_str(newname)) {
            (Ok(a), Ok(b)) => (a.to_string(), b.to_string()),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let replace = !flags.contains(RenameFlags::RENAME_NOREPLACE);
        let folder = self.folder.clone();
        self.rt.spawn(async move {
            match folder.rename(fid(parent), &name, fid(newparent), &newname, replace).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno::to_errno("rename", &e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = open_mode(flags);
        let folder = self.folder.clone();
        let id = fid(ino);
        if !mode.write {
            // Reads never need the network to open.
            let fh = match folder.open_read(id) {
                Ok(fh) => fh,
                Err(e) => return reply.error(errno::to_errno("open", &e)),
            };
            // Local, complete versions are read by the kernel straight from
            // the object file (passthrough): reads at disk speed.
            let (local, remote) = match folder.read_source(id) {
                ReadSource::Local(ih, path) if self.passthrough => (Some((ih, path)), false),
                ReadSource::Elsewhere => (None, true),
                ReadSource::Local(..) | ReadSource::Daemon => (None, false),
            };
            let version = local.as_ref().map(|(ih, _)| *ih);
            let io = self.io.lock().open_read(id.0, fh.0, version, remote, || {
                let (_, path) = local.as_ref()?;
                let file = std::fs::File::open(path).ok()?;
                reply
                    .open_backing(&file)
                    .map_err(|e| tracing::debug!(error = %e, "passthrough refused; serving reads ourselves"))
                    .ok()
            });
            return match io {
                Mode::Passthrough(backing) => reply.opened_passthrough(FileHandle(fh.0), FopenFlags::empty(), &backing),
                Mode::BesidePassthrough(backing) => {
                    reply.opened_passthrough(FileHandle(fh.0), FopenFlags::FOPEN_DIRECT_IO, &backing)
                }
                Mode::Direct => reply.opened(FileHandle(fh.0), FopenFlags::FOPEN_DIRECT_IO),
                Mode::Cached => reply.opened(FileHandle(fh.0), FopenFlags::FOPEN_KEEP_CACHE),
            };
        }
        let io = self.io.clone();
        self.rt.spawn(async move {
            match folder.open(id, mode).await {
                Ok(fh) => match io.lock().open_write(id.0, fh.0, mode.append) {
                    Mode::BesidePassthrough(b) | Mode::Passthrough(b) => {
                        reply.opened_passthrough(FileHandle(fh.0), FopenFlags::FOPEN_DIRECT_IO, &b)
                    }
                    Mode::Direct => reply.opened(FileHandle(fh.0), FopenFlags::FOPEN_DIRECT_IO),
                    Mode::Cached => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
                },
                Err(e) => reply.error(errno::to_errno("open", &e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let folder = self.folder.clone();
        let owners = self.owners.clone();
        let owner = owner_of(&owners, req);
        let io = self.io.clone();
        let open = open_mode(OpenFlags(flags));
        let exclusive = flags & libc::O_EXCL != 0;
        self.rt.spawn(async move {
            match folder.create(fid(parent), &name, mode & !umask, open, exclusive, owner).await {
                Ok((e, fh)) => {
                    let (attr, fh) = (file_attr(&e, NodeType::File, e.mtime, folder.nlink(&e), &owners), FileHandle(fh.0));
                    match io.lock().open_write(e.id.0, fh.0, open.append) {
                        Mode::BesidePassthrough(b) | Mode::Passthrough(b) => {
                            reply.created_passthrough(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO, &b)
                        }
                        Mode::Direct => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO),
                        Mode::Cached => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::empty()),
                    }
                }
                Err(e) => reply.error(errno::to_errno("create", &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.folder.read_plan(Fh(fh.0), offset, size) {
            Ok(ReadPlan::Data(d)) => reply.data(&d),
            Ok(ReadPlan::Fetch { file, version, info_hash }) => {
                let folder = self.folder.clone();
                self.rt.spawn(async move {
                    match folder.fetch(file, version, info_hash, offset, size).await {
                        Ok(d) => reply.data(&d),
                        Err(e) => reply.error(errno::to_errno("read", &e)),
                    }
                });
            }
            Err(e) => reply.error(errno::to_errno("read", &e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.folder.write(Fh(fh.0), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno::to_errno("write", &e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: fuser::LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.folder.release(Fh(fh.0));
        self.io.lock().release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.folder.fsync(Fh(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno::to_errno("fsync", &e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.folder.attr(fid(ino)) {
            Ok(e) if e.kind.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno::to_errno("opendir", &e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.dir_entries(ino) {
            Ok(e) => e,
            Err(e) => return reply.error(errno::to_errno("readdir", &e)),
        };
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child.0), (i + 1) as u64, file_type(kind), &name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let entries = match self.dir_entries(ino) {
            Ok(e) => e,
            Err(e) => return reply.error(errno::to_errno("readdirplus", &e)),
        };
        for (i, (child, _, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            // Gone since the listing was taken (a concurrent event): skip it
            // as a later readdir would.
            let Ok(e) = self.folder.attr(child) else { continue };
            if reply.add(INodeNo(child.0), (i + 1) as u64, &name, &TTL, &self.attr(&e), Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str() else { return reply.error(Errno::ENODATA) };
        match self.folder.xattr(fid(ino), name) {
            Ok(Some(v)) => xattr_reply(reply, size, &v),
            Ok(None) => reply.error(errno::missing_xattr(name)),
            Err(e) => reply.error(errno::to_errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.folder.xattr_names(fid(ino)) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                xattr_reply(reply, size, &buf)
            }
            Err(e) => reply.error(errno::to_errno("listxattr", &e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name.to_str() else { return reply.error(Errno::EOPNOTSUPP) };
        match self.folder.set_xattr(fid(ino), name, Some(value)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno::to_errno("setxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str() else { return reply.error(Errno::ENODATA) };
        match self.folder.set_xattr(fid(ino), name, None) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno::to_errno("removexattr", &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The cache disk's space: that is where fetched content lands.
        match self.folder.disk_space() {
            Ok(d) => reply.statfs(d.blocks, d.bfree, d.bavail, d.files, d.ffree, d.bsize, NAME_MAX, d.frsize),
            Err(e) => reply.error(errno::to_errno("statfs", &e)),
        }
    }
}

/// Answers a size probe (`size == 0`) or the value, per getxattr(2).
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

impl<C: Content, T: Coordinator> TitorrentFs<C, T> {
    /// A directory's entries, `.` and `..` first, in the order offsets count.
    fn dir_entries(&self, ino: INodeNo) -> Result<Vec<(FileId, NodeType, String)>, ModelError> {
        let id = fid(ino);
        let kids = self.folder.readdir(id)?;
        let parent = self.folder.attr(id).map(|e| e.parent).unwrap_or(FileId::ROOT);
        let dots = [(id, NodeType::Dir, ".".to_string()), (parent, NodeType::Dir, "..".to_string())];
        Ok(dots.into_iter().chain(kids).collect())
    }

    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let folder = self.folder.clone();
        self.rt.spawn(async move {
            match folder.remove(fid(parent), &name, dir).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno::to_errno(if dir { "rmdir" } else { "unlink" }, &e)),
            }
        });
    }
}

fn open_mode(flags: OpenFlags) -> OpenMode {
    let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY) || flags.0 & libc::O_TRUNC != 0;
    OpenMode { write, truncate: flags.0 & libc::O_TRUNC != 0, append: flags.0 & libc::O_APPEND != 0 }
}

/// The kernel's caches, invalidated through fuser's notifier on a thread of
/// their own. An inode invalidation waits in the kernel for the lock of each
/// cached page it drops, and a page being read stays locked until its READ
/// is answered, which may take a task on the runtime (a fetch). Issued from
/// a runtime worker, it could wait for that very worker forever (the mount
/// and every reader of the file hang); queued here, it waits on this thread
/// only, until the READ is answered.
pub struct KernelNotifier {
    queue: std::sync::mpsc::Sender<Inval>,
    /// For attribute-only invalidations, sent at once (see `inval_attrs`).
    direct: Notifier,
}

enum Inval {
    Entry(FileId, String),
    Inode(FileId),
}

impl KernelNotifier {
    /// Starts the thread that performs the invalidations, in the order asked.
    pub fn new(notifier: Notifier) -> std::io::Result<Self> {
        let (queue, rx) = std::sync::mpsc::channel::<Inval>();
        let direct = notifier.clone();
        std::thread::Builder::new().name("kernel-inval".into()).spawn(move || {
            // Ends when the folder drops its KernelNotifier.
            for inval in rx {
                match inval {
                    Inval::Entry(parent, name) => {
                        if let Err(e) = notifier.inval_entry(INodeNo(parent.0), OsStr::new(&name)) {
                            // ENOENT: the kernel had nothing cached under that name.
                            if e.raw_os_error() != Some(libc::ENOENT) {
                                tracing::debug!(%parent, name, error = %e, "inval_entry failed");
                            }
                        }
                    }
                    Inval::Inode(file) => {
                        if let Err(e) = notifier.inval_inode(INodeNo(file.0), 0, 0) {
                            if e.raw_os_error() != Some(libc::ENOENT) {
                                tracing::debug!(%file, error = %e, "inval_inode failed");
                            }
                        }
                    }
                }
            }
        })?;
        Ok(KernelNotifier { queue, direct })
    }
}

impl KernelCache for KernelNotifier {
    fn inval_entry(&self, parent: FileId, name: &str) {
        // Fails only once the thread is gone, at shutdown: nothing to drop then.
        let _ = self.queue.send(Inval::Entry(parent, name.to_string()));
    }

    fn inval_inode(&self, file: FileId) {
        let _ = self.queue.send(Inval::Inode(file));
    }

    fn inval_attrs(&self, file: FileId) {
        // A negative offset invalidates no page (fuse_reverse_inval_inode):
        // nothing here waits for a READ to be answered.
        if let Err(e) = self.direct.inval_inode(INodeNo(file.0), -1, 0) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::debug!(%file, error = %e, "attribute invalidation failed");
            }
        }
    }
}

//! The one place where the model's errors become errno values. Every variant
//! is mapped explicitly; anything that becomes EIO is logged with its cause.

use crate::model::{ContentError, ModelError};
use fuser::Errno;
use titorrent_tracker::proto::ProtoError;

/// Maps an error to the errno the calling program sees, logging refusals a
/// user would want explained ("notes.txt is locked by ana since 12:03").
pub fn to_errno(op: &str, err: &ModelError) -> Errno {
    let errno = match err {
        ModelError::NotFound => Errno::ENOENT,
        ModelError::Exists => Errno::EEXIST,
        ModelError::NotDir => Errno::ENOTDIR,
        ModelError::IsDir => Errno::EISDIR,
        ModelError::NotEmpty => Errno::ENOTEMPTY,
        ModelError::InvalidName => Errno::EINVAL,
        ModelError::NameTooLong => Errno::ENAMETOOLONG,
        ModelError::Locked { .. } => Errno::EBUSY,
        ModelError::Offline => Errno::EROFS,
        // The connection went with the answer: the folder is read-only now,
        // as for `Offline`, and the next call of the program sees the same.
        // Whether the change was applied is unknown; if it was, its event
        // reaches this member when the link is back (a lock granted so
        // lapses with its lease). EIO would tell a program its disk broke.
        ModelError::Lost => Errno::EROFS,
        ModelError::BadHandle => Errno::EBADF,
        // The VFS retries an open that fails with ESTALE once, with a fresh
        // lookup of every name on the path (LOOKUP_REVAL).
        ModelError::Replaced => Errno::ESTALE,
        ModelError::NotWritable => Errno::EBADF,
        ModelError::Unsupported(_) => Errno::EOPNOTSUPP,
        ModelError::NotLinkable => Errno::EPERM,
        ModelError::NotSymlink => Errno::EINVAL,
        ModelError::Refused(p) => match p {
            ProtoError::NotAuthenticated | ProtoError::NotAdmin | ProtoError::NotAllowed => Errno::EACCES,
            ProtoError::NoSuchFile | ProtoError::NoSuchMember => Errno::ENOENT,
            ProtoError::AlreadyExists => Errno::EEXIST,
            ProtoError::NotADirectory => Errno::ENOTDIR,
            ProtoError::NotEmpty => Errno::ENOTEMPTY,
            ProtoError::IsADirectory => Errno::EISDIR,
            ProtoError::InvalidName(_) => Errno::EINVAL,
            ProtoError::Locked(_) => Errno::EBUSY,
            ProtoError::NoLease | ProtoError::StaleVersion { .. } => Errno::ESTALE,
            ProtoError::BadInvite
            | ProtoError::NoTorrent
            | ProtoError::BadRequest(_)
            | ProtoError::Internal(_) => Errno::EIO,
        },
        ModelError::Content(c) => match c {
            ContentError::NoSpace => Errno::ENOSPC,
            ContentError::Io(e) => Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)),
            ContentError::HashMismatch | ContentError::NotFound | ContentError::Other(_) => Errno::EIO,
        },
        ModelError::Protocol(_) => Errno::EIO,
        ModelError::Io(e) => Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    match err {
        ModelError::NotFound | ModelError::Exists | ModelError::Replaced => tracing::debug!(op, "{err}"),
        // Contention is normal operation: said, not warned about.
        ModelError::Locked { .. } => tracing::info!(op, "refused: {err}"),
        ModelError::Offline | ModelError::Unsupported(_) => tracing::warn!(op, "refused: {err}"),
        ModelError::Lost => tracing::warn!(op, "{err}; answered as read-only"),
        _ if errno == Errno::EIO => tracing::warn!(op, error = ?err, "I/O error: {err}"),
        _ => tracing::info!(op, "{err}"),
    }
    errno
}

/// The answer for an extended attribute a file does not have. The folder
/// keeps only `user.*` attributes (`user.titorrent.*`): a name in another
/// namespace (`security.selinux`, `system.posix_acl_access`, ...) is not
/// supported at all (`EOPNOTSUPP`, as on a filesystem mounted without ACLs
/// or labels), which tells callers to stop asking: coreutils' `ls -l`
/// remembers a device that answered so and asks it no more (its
/// `getfilecon_cache` / `file_has_acl_cache`), where `ENODATA` made it ask
/// twice for every file listed. The kernel does not cache xattrs of a FUSE
/// filesystem, so each of those questions was a round trip.
pub fn missing_xattr(name: &str) -> Errno {
    if name.starts_with("user.") { Errno::ENODATA } else { Errno::EOPNOTSUPP }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CoordError;
    use titorrent_tracker::calls::Mismatch;
    use titorrent_tracker::proto::{LockHolder, MemberId};

    #[test]
    fn lock_conflicts_are_ebusy_and_offline_is_erofs() {
        assert_eq!(to_errno("mkdir", &ModelError::from(CoordError::Offline)), Errno::EROFS);
        assert_eq!(to_errno("mkdir", &ModelError::from(CoordError::Lost)), Errno::EROFS, "offline now");
        let mismatch = Mismatch { call: "CreateFile", answer: "Ok".into() };
        assert_eq!(to_errno("mkdir", &ModelError::from(CoordError::Unexpected(mismatch))), Errno::EIO);
        let holder = LockHolder { member: MemberId(2), member_name: "ana".into(), since: 0, expires: 1 };
        assert_eq!(to_errno("open", &ModelError::Locked { path: "a".into(), holder }), Errno::EBUSY);
        assert_eq!(to_errno("open", &ModelError::Offline), Errno::EROFS);
        assert_eq!(to_errno("read", &ModelError::Content(ContentError::NoSpace)), Errno::ENOSPC);
        assert_eq!(to_errno("readlink", &ModelError::NotSymlink), Errno::EINVAL);
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(to_errno("write", &ModelError::Io(enospc)), Errno::ENOSPC);
    }

    #[test]
    fn only_the_user_namespace_exists() {
        assert_eq!(missing_xattr("user.titorrent.lock_holder"), Errno::ENODATA);
        assert_eq!(missing_xattr("user.other"), Errno::ENODATA);
        assert_eq!(missing_xattr("security.selinux"), Errno::EOPNOTSUPP);
        assert_eq!(missing_xattr("system.posix_acl_access"), Errno::EOPNOTSUPP);
        assert_eq!(missing_xattr("system.posix_acl_default"), Errno::EOPNOTSUPP);
        assert_eq!(missing_xattr("trusted.x"), Errno::EOPNOTSUPP);
    }
}

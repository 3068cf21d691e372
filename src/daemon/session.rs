//! The folder's FUSE session: mounting it (mount(2) as root, fusermount3
//! otherwise) and saying so, waiting for the reason to stop, and
//! unmounting.

use super::{LiveFolder, MountConfig};
use crate::fuse::mount::{self, MountFlags};
use crate::fuse::{KernelNotifier, TitorrentFs};
use crate::state::Membership;
use anyhow::Context;
use fuser::BackgroundSession;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// FUSE requests served at once.
const FUSE_THREADS: usize = 4;

/// How often the daemon looks whether the filesystem was unmounted from
/// outside (`umount`, `fusermount3 -u`).
const UNMOUNT_CHECK: Duration = Duration::from_millis(200);

/// Phase 8: mounts `folder` on the mount point, read-only if asked; gives
/// the folder the kernel's cache to invalidate; logs `mounted` and prints
/// `mounted DIR` on standard output (what `mount.titorrent` and scripts
/// wait for). A mount by root is the machine's (fstab, systemd): every
/// local user uses it as themselves, the kernel checking permission bits.
/// A user's own mount serves that user only (allow_other needs
/// user_allow_other in /etc/fuse.conf for them). `allow_other` in the
/// config or the mount options says otherwise. Hands on the session.
pub(super) async fn mount(cfg: &MountConfig, membership: &Membership, folder: Arc<LiveFolder>) -> anyhow::Result<BackgroundSession> {
    let fs = TitorrentFs::new(folder.clone(), tokio::runtime::Handle::current());
    let mut config = fuser::Config::default();
    config.n_threads = Some(FUSE_THREADS);
    let mountpoint = cfg.mountpoint.clone();
    let source = format!("titorrent:{}", membership.group_name);
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let flags = MountFlags { read_only: cfg.read_only, allow_other: cfg.allow_other.unwrap_or(root), noexec: cfg.noexec };
    config.acl = if flags.allow_other { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    let session = tokio::task::spawn_blocking(move || {
        // Not root: mount(2) is refused; fusermount3 (setuid) mounts.
        let fd = if root { mount::mount(&source, &mountpoint, &flags)? } else { mount::fusermount(&source, &mountpoint, &flags)? };
        let session = fuser::Session::from_fd(fs, fd, config.acl, config);
        if session.is_err() {
            let _ = mount::unmount(&mountpoint, true);
        }
        let session = session?.spawn()?;
        if root {
            mount::raise_read_ahead(&mountpoint);
        }
        Ok::<_, std::io::Error>(session)
    })
    .await?
    .with_context(|| format!("mounting {}", cfg.mountpoint.display()))?;
    folder.set_kernel(Box::new(KernelNotifier::new(session.notifier()).context("starting the kernel cache invalidation thread")?));
    tracing::info!(mountpoint = %cfg.mountpoint.display(), group = %membership.group_name, member = %membership.member_name, "mounted");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mounted {}", cfg.mountpoint.display());
        let _ = out.flush();
    }
    Ok(session)
}

/// Phase 9: returns when `stop` resolves, on SIGTERM or SIGINT, or once
/// the filesystem was unmounted from outside, saying which in the log.
pub(super) async fn wait_for_stop(session: &BackgroundSession, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let unmounted_outside = async {
        loop {
            if session.guard.is_finished() {
                return;
            }
            tokio::time::sleep(UNMOUNT_CHECK).await;
        }
    };
    tokio::select! {
        _ = stop => tracing::info!("stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: going offline"),
        _ = int.recv() => tracing::info!("SIGINT: going offline"),
        _ = unmounted_outside => tracing::info!("unmounted from outside: going offline"),
    }
    Ok(())
}

/// Unmounts `mountpoint` unless it was unmounted from outside (lazily if a
/// plain unmount fails: something still has it open), and waits for the
/// session's threads to end.
pub(super) async fn unmount(session: BackgroundSession, mountpoint: PathBuf) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        if !session.guard.is_finished() {
            if let Err(e) = mount::unmount(&mountpoint, false) {
                tracing::warn!(error = %e, "unmount failed; detaching {}", mountpoint.display());
                let _ = mount::unmount(&mountpoint, true);
            }
        }
        if let Err(e) = session.join() {
            tracing::debug!(error = %e, "FUSE session ended with an error");
        }
    })
    .await?;
    Ok(())
}

//! `titorrent up` (an embedded tracker, a group and a mount in one process) and how `mount` and `up` turn flags and the config file into a mount's configuration.

use super::files::authenticated;
use super::group::save_membership;
use super::{InviteUrl, MountArgs, PeerArgs, UpArgs};
use crate::config::Config;
use crate::daemon::{run_mount, MountConfig};
use crate::state::StateDir;
use crate::tracker_client::Connection;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use titorrent_tracker::calls::{self, GroupCreated};
use titorrent_tracker::tls::ClientTls;

/// Flags over the config file over the defaults.
pub fn mount_config(args: MountArgs, state: StateDir, config: &Config) -> MountConfig {
    // Absolute, so that what the mount reports (user.titorrent.state_dir)
    // works from any directory.
    let state = StateDir::new(std::fs::canonicalize(state.root()).unwrap_or_else(|_| state.root().to_path_buf()));
    let read_only = if args.read_only {
        Some(true)
    } else if args.read_write {
        Some(false)
    } else {
        None
    };
    let allow_other = match (args.allow_other, args.no_allow_other) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let noexec = args.noexec;
    MountConfig { noexec, ..mount_config_for(args.mountpoint, state, &args.peer, (read_only, allow_other), config) }
}

fn mount_config_for(
    mountpoint: PathBuf,
    state: StateDir,
    peer: &PeerArgs,
    (read_only, allow_other): (Option<bool>, Option<bool>),
    config: &Config,
) -> MountConfig {
    let share = config.for_state(state.root());
    MountConfig {
        mountpoint,
        peer_listen: peer.listen.or(share.listen).unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
        upload_limit: peer.upload_limit.or(share.upload_limit),
        download_limit: peer.download_limit.or(share.download_limit),
        connect_timeout: Duration::from_secs(20),
        read_only: read_only.or(share.read_only).unwrap_or(false),
        allow_other: allow_other.or(share.allow_other),
        noexec: false,
        policy: share.policy,
        wait_replication: peer.wait_replication.map(Duration::from_secs),
        state,
    }
}

/// Embedded tracker, a group, and a mount, all in this process.
pub async fn up(args: UpArgs, config: &Config) -> anyhow::Result<()> {
    let state_root = match args.state {
        Some(s) => s,
        None => {
            let base = crate::config::user_data_dir().context("no home directory (HOME unset, no passwd entry): pass --state")?;
            base.join("titorrent/up")
        }
    };
    let st = StateDir::new(&state_root);
    std::fs::create_dir_all(&args.mountpoint).with_context(|| format!("creating {}", args.mountpoint.display()))?;

    let tracker = titorrent_tracker::server::Tracker::open(titorrent_tracker::server::TrackerConfig {
        data_dir: st.tracker_data(),
        ..Default::default()
    })?;
    let tracker_key = tracker.fingerprint();
    // The embedded tracker's admin is this process.
    let admin_token = tracker.admin_token().0.to_string();
    let listener = tokio::net::TcpListener::bind(args.tracker_listen)
        .await
        .with_context(|| format!("embedded tracker cannot listen on {}", args.tracker_listen))?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        if let Err(e) = tracker.serve(listener).await {
            tracing::error!(error = %e, "embedded tracker stopped");
        }
    });
    let local_tracker = format!("127.0.0.1:{port}");
    let host = hostname();
    if !st.has_membership() {
        // Our own tracker: its key is known without asking the network.
        let tls = ClientTls { identity: st.identity()?, pin: Some(tracker_key) };
        let mut conn = Connection::connect(&local_tracker, &tls).await?;
        let GroupCreated { group, member } = conn
            .call(calls::CreateGroup {
                admin_token,
                group_name: "shared".into(),
                member_name: host.clone(),
                peer_addr: None,
            })
            .await?;
        save_membership(&st, &local_tracker, tracker_key, "shared", &host, group, member)?;
    }
    let m = st.load()?;
    let mut conn = authenticated(&st, &m).await?;
    if let Ok(calls::Invite { code, .. }) = conn.call(calls::CreateInvite { ttl_ms: 86_400_000, uses: 1 }).await {
        // A specific listen address is what others dial; for "any address"
        // the host name is the best guess at a name others can resolve.
        let ip = args.tracker_listen.ip();
        let tracker =
            if ip.is_unspecified() { format!("{host}:{port}") } else { std::net::SocketAddr::new(ip, port).to_string() };
        let invite = InviteUrl { tracker, group: m.group, code, tracker_key };
        println!("titorrent is up: group {:?}, tracker on port {port}, state in {}", m.group_name, state_root.display());
        println!("On a second machine, run:");
        println!("  titorrent join {invite} --member NAME --state ~/.local/share/titorrent/shared");
        println!("  titorrent mount /mnt/shared --state ~/.local/share/titorrent/shared");
    }
    drop(conn);
    run_mount(mount_config_for(args.mountpoint, st, &args.peer, (None, None), config), std::future::pending()).await
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name = if ok {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if name.is_empty() { "localhost".into() } else { name }
}

//! The `titorrent` binary: parses the command line and runs one command.

use anyhow::{bail, Context};
use clap::Parser;
use std::time::Duration;
use titorrent::cli::{Cli, Command, InviteUrl, MemberArgs, PeerArgs, UpArgs};
use titorrent::daemon::{run_mount, MountConfig};
use titorrent::state::{Membership, StateDir};
use titorrent::tracker_client::Connection;
use titorrent_tracker::proto::{Credential, Request, Response};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librqbit=warn,librqbit_core=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("titorrent: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("titorrent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Tracker(args) => Ok(titorrent_tracker::server::run(args).await?),
        Command::CreateGroup { tracker, group, who } => {
            let MemberArgs { member, state } = who;
            let mut conn = Connection::connect(&tracker).await.with_context(|| format!("connecting to {tracker}"))?;
            let resp = conn
                .request(Request::CreateGroup { group_name: group.clone(), member_name: member.clone(), peer_addr: None })
                .await?;
            let Response::Created { credential, .. } = resp else { bail!("unexpected answer: {resp:?}") };
            save_membership(&StateDir::new(state.state), &tracker, &group, &member, &credential)?;
            println!("created group {group}; you are {member}");
            Ok(())
        }
        Command::Invite { state, ttl, uses } => {
            let st = StateDir::new(state.state);
            let m = st.load()?;
            let mut conn = authenticated(&m).await?;
            let resp = conn.request(Request::CreateInvite { ttl_ms: ttl.saturating_mul(1000), uses }).await?;
            let Response::Invite { code, .. } = resp else { bail!("unexpected answer: {resp:?}") };
            println!("{}", InviteUrl { tracker: m.tracker, group: m.group, code });
            Ok(())
        }
        Command::Join { invite, who } => {
            let inv = InviteUrl::parse(&invite).map_err(|e| anyhow::anyhow!("invitation {invite:?}: {e}"))?;
            let mut conn = Connection::connect(&inv.tracker).await.with_context(|| format!("connecting to {}", inv.tracker))?;
            let resp = conn
                .request(Request::Join {
                    group: titorrent_tracker::proto::GroupId(inv.group),
                    invite: inv.code.clone(),
                    member_name: who.member.clone(),
                    peer_addr: None,
                })
                .await?;
            let Response::Joined { credential } = resp else { bail!("unexpected answer: {resp:?}") };
            let group_name = match conn.request(Request::Authenticate { credential: credential.clone(), peer_addr: None }).await {
                Ok(Response::Authenticated { group_name, .. }) => group_name,
                _ => format!("group-{}", inv.group),
            };
            save_membership(&StateDir::new(who.state.state), &inv.tracker, &group_name, &who.member, &credential)?;
            println!("joined {group_name} as {}", who.member);
            Ok(())
        }
        Command::Members { state } => {
            let m = StateDir::new(state.state).load()?;
            let mut conn = authenticated(&m).await?;
            let resp = conn.request(Request::ListMembers).await?;
            let Response::Members(ms) = resp else { bail!("unexpected answer: {resp:?}") };
            for mem in ms {
                let addr = mem.peer_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
                println!("{}  {}  {}", mem.name, if mem.online { "online" } else { "offline" }, addr);
            }
            Ok(())
        }
        Command::Mount(args) => {
            let cfg = mount_config(args.mountpoint, StateDir::new(args.state.state), &args.peer);
            run_mount(cfg, std::future::pending()).await
        }
        Command::Unmount { mountpoint } => titorrent::fuse::mount::unmount(&mountpoint, false)
            .with_context(|| format!("cannot unmount {}", mountpoint.display())),
    }
}

fn mount_config(mountpoint: std::path::PathBuf, state: StateDir, peer: &PeerArgs) -> MountConfig {
    MountConfig {
        mountpoint,
        state,
        peer_listen: peer.listen,
        upload_limit: peer.upload_limit,
        download_limit: peer.download_limit,
        connect_timeout: Duration::from_secs(20),
    }
}

async fn authenticated(m: &Membership) -> anyhow::Result<Connection> {
    let credential = m.credential().map_err(anyhow::Error::msg)?;
    let mut conn = Connection::connect(&m.tracker).await.with_context(|| format!("connecting to {}", m.tracker))?;
    conn.request(Request::Authenticate { credential, peer_addr: None }).await.context("authenticating")?;
    Ok(conn)
}

fn save_membership(st: &StateDir, tracker: &str, group: &str, member: &str, c: &Credential) -> anyhow::Result<()> {
    st.save(&Membership {
        tracker: tracker.to_string(),
        group: c.group.0,
        group_name: group.to_string(),
        member: c.member.0,
        member_name: member.to_string(),
        secret: hex::encode(c.secret.0),
    })?;
    Ok(())
}

/// Embedded tracker, a group, and a mount, all in this process.
async fn up(args: UpArgs) -> anyhow::Result<()> {
    let state_root = match args.state {
        Some(s) => s,
        None => {
            let base = std::env::var_os("XDG_DATA_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share")))
                .context("neither XDG_DATA_HOME nor HOME is set: pass --state")?;
            base.join("titorrent/up")
        }
    };
    let st = StateDir::new(&state_root);
    std::fs::create_dir_all(&args.mountpoint).with_context(|| format!("creating {}", args.mountpoint.display()))?;

    let tracker = titorrent_tracker::server::Tracker::open(titorrent_tracker::server::TrackerConfig {
        data_dir: st.tracker_data(),
        ..Default::default()
    })?;
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
        let mut conn = Connection::connect(&local_tracker).await?;
        let resp = conn
            .request(Request::CreateGroup { group_name: "shared".into(), member_name: host.clone(), peer_addr: None })
            .await?;
        let Response::Created { credential, .. } = resp else { bail!("unexpected answer: {resp:?}") };
        save_membership(&st, &local_tracker, "shared", &host, &credential)?;
    }
    let m = st.load()?;
    let mut conn = authenticated(&m).await?;
    if let Ok(Response::Invite { code, .. }) = conn.request(Request::CreateInvite { ttl_ms: 86_400_000, uses: 1 }).await {
        let invite = InviteUrl { tracker: format!("{host}:{port}"), group: m.group, code };
        println!("titorrent is up: group {:?}, tracker on port {port}, state in {}", m.group_name, state_root.display());
        println!("On a second machine, run:");
        println!("  titorrent join {invite} --member NAME --state ~/.local/share/titorrent/shared");
        println!("  titorrent mount /mnt/shared --state ~/.local/share/titorrent/shared");
    }
    drop(conn);
    run_mount(mount_config(args.mountpoint, st, &args.peer), std::future::pending()).await
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

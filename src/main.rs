//! The `titorrent` binary: parses the command line and runs one command.

use anyhow::{bail, Context};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use titorrent::cli::files::{self, authenticated};
use titorrent::cli::{Cli, Command, InviteUrl, MemberArgs, MountArgs, PeerArgs, StateArg, UpArgs};
use titorrent::config::Config;
use titorrent::daemon::{run_mount, MountConfig};
use titorrent::state::{Membership, StateDir};
use titorrent::tracker_client::Connection;
use titorrent_tracker::proto::{Fingerprint, GroupId, MemberId, Request, Response};
use titorrent_tracker::tls::ClientTls;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Up(_) | Command::Tracker(_) | Command::Mount(_)) {
        // A one-shot command piped into `head` ends quietly, as Unix tools
        // do, instead of panicking on EPIPE. Not for the daemons: a peer
        // closing a socket must not kill them.
        // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if matches!(
        cli.command,
        Command::Up(_) | Command::Tracker(_) | Command::Mount(_) | Command::CreateGroup { .. } | Command::Join { .. }
    ) {
        // What these write (state, cache, staging, the tracker's data) is
        // the member's key and the group's files: owner only.
        titorrent_tracker::server::private::owner_only_umask();
    }
    if matches!(cli.command, Command::Up(_) | Command::Mount(_)) {
        // Two malloc arenas instead of glibc's 8 per core: a daemon that
        // wakes and puts to sleep thousands of torrents from many threads
        // otherwise keeps the memory it freed scattered over 16 arenas, and
        // its RSS stays high long after it went idle (P9 benchmark).
        // SAFETY: mallopt only sets a tunable; called before other threads.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
    titorrent::logging::init();
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
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Up(args) => up(args, &config).await,
        Command::Tracker(args) => Ok(titorrent_tracker::server::run(args).await?),
        Command::CreateGroup { tracker, group, tracker_key, admin_token, who } => {
            let MemberArgs { member, state } = who;
            let st = state_dir(&state, &config)?;
            let admin_token = std::fs::read_to_string(&admin_token)
                .with_context(|| format!("reading the admin token from {}", admin_token.display()))?
                .trim()
                .to_string();
            let tls = ClientTls { identity: st.identity()?, pin: tracker_key };
            let mut conn = Connection::connect(&tracker, &tls).await.with_context(|| format!("connecting to {tracker}"))?;
            let resp = conn
                .request(Request::CreateGroup {
                    admin_token,
                    group_name: group.clone(),
                    member_name: member.clone(),
                    peer_addr: None,
                })
                .await?;
            let Response::Created { group: g, member: m } = resp else { bail!("unexpected answer: {resp:?}") };
            save_membership(&st, &tracker, conn.tracker_key(), &group, &member, g, m)?;
            println!("created group {group}; you are {member}");
            if tracker_key.is_none() {
                println!("pinned the tracker's key {} (compare it with what the tracker printed)", conn.tracker_key());
            }
            Ok(())
        }
        Command::Invite { state, ttl, uses } => {
            let st = state_dir(&state, &config)?;
            let m = st.load()?;
            let mut conn = authenticated(&st, &m).await?;
            let resp = conn.request(Request::CreateInvite { ttl_ms: ttl.saturating_mul(1000), uses }).await?;
            let Response::Invite { code, .. } = resp else { bail!("unexpected answer: {resp:?}") };
            println!("{}", InviteUrl { tracker: m.tracker.clone(), group: m.group, code, tracker_key: m.tracker_key().map_err(anyhow::Error::msg)? });
            Ok(())
        }
        Command::Join { invite, who } => {
            let st = state_dir(&who.state, &config)?;
            let inv = InviteUrl::parse(&invite).map_err(|e| anyhow::anyhow!("invitation {invite:?}: {e}"))?;
            let tls = ClientTls { identity: st.identity()?, pin: Some(inv.tracker_key) };
            let mut conn =
                Connection::connect(&inv.tracker, &tls).await.with_context(|| format!("connecting to {}", inv.tracker))?;
            let group = titorrent_tracker::proto::GroupId(inv.group);
            let resp = conn
                .request(Request::Join { group, invite: inv.code.clone(), member_name: who.member.clone(), peer_addr: None })
                .await?;
            let Response::Joined { member } = resp else { bail!("unexpected answer: {resp:?}") };
            let group_name = match conn.request(Request::Authenticate { group, member, peer_addr: None }).await {
                Ok(Response::Authenticated { group_name, .. }) => group_name,
                _ => format!("group-{}", inv.group),
            };
            save_membership(&st, &inv.tracker, inv.tracker_key, &group_name, &who.member, group, member)?;
            println!("joined {group_name} as {}", who.member);
            Ok(())
        }
        Command::Members { state } => {
            let st = state_dir(&state, &config)?;
            let m = st.load()?;
            let mut conn = authenticated(&st, &m).await?;
            let resp = conn.request(Request::ListMembers).await?;
            let Response::Members(ms) = resp else { bail!("unexpected answer: {resp:?}") };
            for mem in ms {
                let addr = mem.peer_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
                println!("{}  {}  {}", mem.name, if mem.online { "online" } else { "offline" }, addr);
            }
            Ok(())
        }
        Command::Leave { state, yes } => leave(state_dir(&state, &config)?, yes).await,
        Command::Mount(args) => {
            let cfg = mount_config(args, &config)?;
            run_mount(cfg, std::future::pending()).await
        }
        Command::Unmount { mountpoint } => titorrent::fuse::mount::unmount(&mountpoint, false)
            .with_context(|| format!("cannot unmount {}", mountpoint.display())),
        Command::Status => titorrent::cli::status::status(),
        Command::Lock { target, ttl } => {
            files::lock(&files::locate(&target.path, target.state.as_deref(), &config)?, ttl, &config).await
        }
        Command::Unlock { target } => files::unlock(&files::locate(&target.path, target.state.as_deref(), &config)?).await,
        Command::Versions { target } => {
            files::versions(&files::locate(&target.path, target.state.as_deref(), &config)?).await
        }
        Command::Restore { target, version } => {
            files::restore(&files::locate(&target.path, target.state.as_deref(), &config)?, version).await
        }
        Command::Log { path, state, after, limit } => {
            let st = match path {
                Some(p) => files::state_of(&files::mount_holding(&p)?.1, state.as_deref(), &config)?,
                None => state_dir(&StateArg { state }, &config)?,
            };
            files::log(&st, after, limit).await
        }
        Command::Pin { path, no_wait, timeout } => {
            tokio::task::spawn_blocking(move || titorrent::cli::pin::pin(&path, no_wait, timeout)).await?
        }
        Command::Unpin { path } => titorrent::cli::pin::unpin(&path),
        Command::Man { out } => {
            titorrent::cli::man::write_pages(&out).with_context(|| format!("writing man pages into {}", out.display()))?;
            println!("wrote titorrent.1 and titorrent-tracker.8 into {}", out.display());
            Ok(())
        }
    }
}

/// --state, else the config file's `state`.
fn state_dir(arg: &StateArg, config: &Config) -> anyhow::Result<StateDir> {
    match arg.state.clone().or_else(|| config.state()) {
        Some(s) => Ok(StateDir::new(s)),
        None => bail!(
            "no state directory: pass --state DIR, set TITORRENT_STATE, or set `state` in {}",
            config
                .path
                .clone()
                .or_else(titorrent::config::default_path)
                .unwrap_or_else(|| PathBuf::from("~/.config/titorrent/config.toml"))
                .display()
        ),
    }
}

/// Flags over the config file over the defaults.
fn mount_config(args: MountArgs, config: &Config) -> anyhow::Result<MountConfig> {
    // Absolute, so that what the mount reports (user.titorrent.state_dir)
    // works from any directory.
    let state = state_dir(&args.state, config)?;
    let state = StateDir::new(std::fs::canonicalize(state.root()).unwrap_or_else(|_| state.root().to_path_buf()));
    let read_only = if args.read_only {
        Some(true)
    } else if args.read_write {
        Some(false)
    } else {
        None
    };
    Ok(mount_config_for(args.mountpoint, state, &args.peer, read_only, config))
}

fn mount_config_for(
    mountpoint: PathBuf,
    state: StateDir,
    peer: &PeerArgs,
    read_only: Option<bool>,
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
        policy: share.policy,
        wait_replication: peer.wait_replication.map(Duration::from_secs),
        state,
    }
}

async fn leave(st: StateDir, yes: bool) -> anyhow::Result<()> {
    let m = st.load()?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("leaving {} is permanent: run again with --yes", m.group_name);
        }
        eprint!("Leave group {:?} as {:?} for good? Type the group name to confirm: ", m.group_name, m.member_name);
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != m.group_name {
            bail!("not confirmed: still a member of {}", m.group_name);
        }
    }
    let mut conn = authenticated(&st, &m).await?;
    conn.request(Request::Leave).await.context("leaving")?;
    let member_file = st.root().join("member.toml");
    std::fs::remove_file(&member_file).with_context(|| format!("left, but cannot remove {}", member_file.display()))?;
    println!("left {} as {}; {} holds no membership any more", m.group_name, m.member_name, st.root().display());
    Ok(())
}

fn save_membership(
    st: &StateDir,
    tracker: &str,
    tracker_key: Fingerprint,
    group_name: &str,
    member_name: &str,
    group: GroupId,
    member: MemberId,
) -> anyhow::Result<()> {
    st.save(&Membership {
        tracker: tracker.to_string(),
        group: group.0,
        group_name: group_name.to_string(),
        member: member.0,
        member_name: member_name.to_string(),
        tracker_key: Some(tracker_key.to_string()),
    })?;
    Ok(())
}

/// Embedded tracker, a group, and a mount, all in this process.
async fn up(args: UpArgs, config: &Config) -> anyhow::Result<()> {
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
        let resp = conn
            .request(Request::CreateGroup {
                admin_token,
                group_name: "shared".into(),
                member_name: host.clone(),
                peer_addr: None,
            })
            .await?;
        let Response::Created { group, member } = resp else { bail!("unexpected answer: {resp:?}") };
        save_membership(&st, &local_tracker, tracker_key, "shared", &host, group, member)?;
    }
    let m = st.load()?;
    let mut conn = authenticated(&st, &m).await?;
    if let Ok(Response::Invite { code, .. }) = conn.request(Request::CreateInvite { ttl_ms: 86_400_000, uses: 1 }).await {
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
    run_mount(mount_config_for(args.mountpoint, st, &args.peer, None, config), std::future::pending()).await
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

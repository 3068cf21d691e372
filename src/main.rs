//! The `titorrent` binary: parses the command line and runs one command.

use anyhow::{bail, Context};
use clap::Parser;
use std::path::PathBuf;
use titorrent::cli::files;
use titorrent::cli::{group, up, Cli, Command, StateArg};
use titorrent::config::Config;
use titorrent::daemon::run_mount;
use titorrent::state::StateDir;

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
        Command::Up(args) => up::up(args, &config).await,
        Command::Tracker(args) => Ok(titorrent_tracker::server::run(args).await?),
        Command::CreateGroup { tracker, group, tracker_key, admin_token, who } => {
            group::create_group(&state_dir(&who.state, &config)?, &tracker, &group, tracker_key, &admin_token, &who.member).await
        }
        Command::Invite { state, ttl, uses } => group::invite(&state_dir(&state, &config)?, ttl, uses).await,
        Command::Join { invite, who } => group::join(&state_dir(&who.state, &config)?, &invite, &who.member).await,
        Command::Members { state } => group::members(&state_dir(&state, &config)?).await,
        Command::Leave { state, yes } => group::leave(state_dir(&state, &config)?, yes).await,
        Command::Mount(args) => {
            let state = state_dir(&args.state, &config)?;
            run_mount(up::mount_config(args, state, &config), std::future::pending()).await
        }
        Command::Unmount { mountpoint } => titorrent::fuse::mount::unmount(&mountpoint, false)
            .with_context(|| format!("cannot unmount {}", mountpoint.display())),
        Command::Status => titorrent::cli::status::status(),
        Command::Lock { target, ttl } => {
            files::lock(&files::locate(&target.path, target.state.as_deref(), &config)?, ttl, &config).await
        }
        Command::Unlock { target, force } => {
            files::unlock(&files::locate(&target.path, target.state.as_deref(), &config)?, force).await
        }
        Command::Remove { member, state } => titorrent::cli::members::remove(&state_dir(&state, &config)?, &member).await,
        Command::LockLimit { limit, state } => titorrent::cli::members::lock_limit(&state_dir(&state, &config)?, limit).await,
        Command::Admin { member, revoke, state } => {
            titorrent::cli::members::set_admin(&state_dir(&state, &config)?, &member, !revoke).await
        }
        Command::Versions { target } => {
            files::versions(&files::locate(&target.path, target.state.as_deref(), &config)?).await
        }
        Command::Restore { target, version } => {
            files::restore(&files::locate(&target.path, target.state.as_deref(), &config)?, version).await
        }
        Command::Trash { path, state } => titorrent::cli::trash::show(&path, state.as_deref(), &config).await,
        Command::Undelete { path, state } => titorrent::cli::trash::undelete(&path, state.as_deref(), &config).await,
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
        Command::Export { path, ttl, revoke, out } => titorrent::cli::export::export(&path, ttl, revoke, out).await,
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

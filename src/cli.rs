//! The `titorrent` command line, defined once with clap: every subcommand,
//! its flags, help and examples. `main.rs` only dispatches.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "titorrent",
    version,
    about = "Share a folder peer-to-peer: a FUSE mount kept in sync over BitTorrent",
    long_about = "titorrent mounts a group's shared folder. Opening a file for write takes its lock from the \
tracker manager; closing it publishes the new content as a BitTorrent torrent that this member seeds; the other \
members see the new version at once and fetch its pieces from whoever has them.",
    after_help = "Start here:\n  titorrent up /mnt/shared        one machine: embedded tracker + group + mount\n  \
titorrent join INVITE --member bob --state ~/.local/share/titorrent/bob\n  \
titorrent mount /mnt/shared --state ~/.local/share/titorrent/bob"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this machine: an embedded tracker, a group and a mount.
    #[command(after_help = "Example:\n  titorrent up /mnt/shared\n\nPrints the command another machine runs to join.")]
    Up(UpArgs),
    /// Run the tracker manager (the same as the titorrent-tracker binary).
    Tracker(titorrent_tracker::server::ServeArgs),
    /// Create a group on a tracker; this state directory becomes its first member.
    #[command(after_help = "Example:\n  titorrent create-group --tracker tracker.lan:7070 --group team --member ana --state ~/.local/share/titorrent/team")]
    CreateGroup {
        /// host:port of the tracker manager.
        #[arg(long)]
        tracker: String,
        /// Name of the new group.
        #[arg(long)]
        group: String,
        #[command(flatten)]
        who: MemberArgs,
    },
    /// Print an invitation another machine can join with.
    #[command(after_help = "Example:\n  titorrent invite --state ~/.local/share/titorrent/team --ttl 3600")]
    Invite {
        #[command(flatten)]
        state: StateArg,
        /// Seconds the invitation stays valid.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        /// How many machines may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// Join a group with an invitation (titorrent://HOST:PORT/GROUP/CODE).
    #[command(after_help = "Example:\n  titorrent join titorrent://10.0.0.5:7070/1/3f2a... --member bob --state ~/.local/share/titorrent/team")]
    Join {
        invite: String,
        #[command(flatten)]
        who: MemberArgs,
    },
    /// List the group's members and who is online.
    Members {
        #[command(flatten)]
        state: StateArg,
    },
    /// Mount the group's folder (runs in the foreground until unmounted).
    #[command(after_help = "Example:\n  titorrent mount /mnt/shared --state ~/.local/share/titorrent/team")]
    Mount(MountArgs),
    /// Unmount a titorrent folder; its daemon goes offline cleanly.
    Unmount {
        mountpoint: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct StateArg {
    /// This member's state directory (credential, cache).
    #[arg(long, env = "TITORRENT_STATE")]
    pub state: PathBuf,
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    /// This member's name, as others see it in locks and logs.
    #[arg(long)]
    pub member: String,
    #[command(flatten)]
    pub state: StateArg,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Where to mount the folder (an existing directory).
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub peer: PeerArgs,
}

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Where this member's BitTorrent session listens for other members.
    #[arg(long = "listen", default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// Upload rate limit in bytes per second.
    #[arg(long)]
    pub upload_limit: Option<u32>,
    /// Download rate limit in bytes per second.
    #[arg(long)]
    pub download_limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where to mount the folder (created if missing).
    pub mountpoint: PathBuf,
    /// State directory (default: $XDG_DATA_HOME/titorrent/up).
    #[arg(long, env = "TITORRENT_STATE")]
    pub state: Option<PathBuf>,
    /// Where the embedded tracker listens.
    #[arg(long, default_value = "0.0.0.0:7070")]
    pub tracker_listen: SocketAddr,
    #[command(flatten)]
    pub peer: PeerArgs,
}

/// An invitation as users pass it around: `titorrent://HOST:PORT/GROUP/CODE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteUrl {
    pub tracker: String,
    pub group: u64,
    pub code: String,
}

impl InviteUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("titorrent://").ok_or("an invitation starts with titorrent://")?;
        let mut parts = rest.split('/');
        let (Some(tracker), Some(group), Some(code), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("expected titorrent://HOST:PORT/GROUP/CODE".into());
        };
        if !tracker.contains(':') {
            return Err(format!("{tracker:?} has no port"));
        }
        let group = group.parse().map_err(|_| format!("group {group:?} is not a number"))?;
        if code.is_empty() {
            return Err("the invitation code is empty".into());
        }
        Ok(InviteUrl { tracker: tracker.to_string(), group, code: code.to_string() })
    }
}

impl std::fmt::Display for InviteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "titorrent://{}/{}/{}", self.tracker, self.group, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn invite_round_trip_and_errors() {
        let i = InviteUrl { tracker: "10.0.0.5:7070".into(), group: 3, code: "abc".into() };
        assert_eq!(InviteUrl::parse(&i.to_string()).unwrap(), i);
        for bad in ["http://x:1/1/a", "titorrent://x/1/a", "titorrent://x:1/g/a", "titorrent://x:1/1/", "titorrent://x:1/1/a/b"] {
            assert!(InviteUrl::parse(bad).is_err(), "{bad}");
        }
    }
}

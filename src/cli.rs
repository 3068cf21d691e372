//! The `titorrent` command line, defined once with clap: every subcommand,
//! its flags, help and examples. `main.rs` only dispatches.

pub mod export;
pub mod files;
pub mod group;
pub mod man;
pub mod members;
pub mod mountinfo;
pub mod pin;
pub mod progress;
pub mod status;
pub mod trash;
pub mod up;
pub mod xattr;

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
    /// Configuration file (default: /etc/titorrent/config.toml for root,
    /// ~/.config/titorrent/config.toml otherwise; see titorrent.conf(5)).
    #[arg(long, global = true, value_name = "PATH", env = "TITORRENT_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this machine: an embedded tracker, a group and a mount.
    #[command(after_help = "Example:\n  titorrent up /mnt/shared\n\nPrints the command another machine runs to join.")]
    Up(UpArgs),
    /// Run the tracker manager (the same as the titorrent-tracker binary).
    #[command(after_help = "Example:\n  titorrent tracker --listen 0.0.0.0:7070 --data /var/lib/titorrent-tracker")]
    Tracker(titorrent_tracker::server::ServeArgs),
    /// Create a group on a tracker; this state directory becomes its first member.
    #[command(after_help = "Example:\n  titorrent create-group --tracker tracker.lan:7070 --admin-token /var/lib/titorrent-tracker/admin-token \\\n      --group team --member ana --state ~/.local/share/titorrent/team")]
    CreateGroup {
        /// host:port of the tracker manager.
        #[arg(long, value_name = "HOST:PORT")]
        tracker: String,
        /// Name of the new group.
        #[arg(long, value_name = "NAME")]
        group: String,
        /// The tracker's key fingerprint (64 hex digits, printed by the
        /// tracker at start: `titorrent-tracker key fingerprint HEX`). The
        /// connection is refused if the tracker has another key. Without
        /// it, the key the tracker shows now is trusted and pinned (and
        /// printed: compare it with the tracker's).
        #[arg(long, value_name = "HEX")]
        tracker_key: Option<titorrent_tracker::proto::Fingerprint>,
        /// File holding the tracker's admin token (the tracker's
        /// DATA/admin-token, or its --admin-token-file): only its admin may
        /// create groups.
        #[arg(long, value_name = "FILE", env = "TITORRENT_ADMIN_TOKEN_FILE")]
        admin_token: PathBuf,
        #[command(flatten)]
        who: MemberArgs,
    },
    /// Print an invitation another machine can join with.
    #[command(after_help = "Example:\n  titorrent invite --state ~/.local/share/titorrent/team --ttl 3600")]
    Invite {
        #[command(flatten)]
        state: StateArg,
        /// Seconds the invitation stays valid.
        #[arg(long, value_name = "SECS", default_value_t = 86_400)]
        ttl: u64,
        /// How many machines may join with it.
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: u32,
    },
    /// Join a group with an invitation (titorrent://HOST:PORT/GROUP/CODE/TRACKER-KEY).
    #[command(after_help = "Example:\n  titorrent join titorrent://10.0.0.5:7070/1/3f2a.../9c41... --member bob --state ~/.local/share/titorrent/team\n\n\
The invitation names the tracker's key: join refuses a tracker with another key, and the membership keeps it.")]
    Join {
        /// The invitation `titorrent invite` printed.
        #[arg(value_name = "INVITE")]
        invite: String,
        #[command(flatten)]
        who: MemberArgs,
    },
    /// List the group's members and who is online.
    #[command(after_help = "Example:\n  titorrent members --state ~/.local/share/titorrent/team\n\nPrints NAME  online|offline  ADDR, one member a line.")]
    Members {
        #[command(flatten)]
        state: StateArg,
    },
    /// Leave the group for good: this member's key stops working.
    #[command(after_help = "Example:\n  titorrent leave --state ~/.local/share/titorrent/team --yes\n\n\
Unmount first. Asks for confirmation on a terminal; elsewhere needs --yes. The cache stays in the state \
directory until you delete it.")]
    Leave {
        #[command(flatten)]
        state: StateArg,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Remove another member from the group (the owner or an admin).
    #[command(after_help = "Example:\n  titorrent remove bob --state ~/.local/share/titorrent/team\n\n\
Its key stops working at once: the tracker closes its connections, every other member cuts its peer links \
with it and refuses it from then on, and its locks are released. An admin cannot remove the owner or \
another admin.")]
    Remove {
        /// The member's name, as `titorrent members` prints it.
        #[arg(value_name = "MEMBER")]
        member: String,
        #[command(flatten)]
        state: StateArg,
    },
    /// Make a member an admin, or (with --revoke) a plain member again (the owner only).
    #[command(after_help = "Example:\n  titorrent admin carol --state ~/.local/share/titorrent/team\n\n\
The group's creator is its owner. Admins remove members and break locks (titorrent unlock --force).")]
    Admin {
        #[arg(value_name = "MEMBER")]
        member: String,
        /// Take the role away instead.
        #[arg(long)]
        revoke: bool,
        #[command(flatten)]
        state: StateArg,
    },
    /// Set the longest explicit lock (titorrent lock) a member may take (the owner or an admin).
    #[command(after_help = "Example:\n  titorrent lock-limit 8h --state ~/.local/share/titorrent/team\n\n\
0 sets it back to the tracker's maximum, one week. Locks already held keep their expiry.")]
    LockLimit {
        /// The limit (e.g. 30m, 8h, 2d; 0: the tracker's maximum).
        #[arg(value_name = "DURATION", value_parser = parse_duration)]
        limit: std::time::Duration,
        #[command(flatten)]
        state: StateArg,
    },
    /// Mount the group's folder (runs in the foreground until unmounted).
    #[command(after_help = "Examples:\n  titorrent mount /mnt/shared --state ~/.local/share/titorrent/team\n  \
titorrent mount /mnt/shared --state /var/lib/titorrent/team --read-only --upload-limit 1M\n\n\
To mount in the background, use mount(8): mount -t titorrent team /mnt/shared (see mount.titorrent(8)).")]
    Mount(MountArgs),
    /// Unmount a titorrent folder; its daemon goes offline cleanly.
    #[command(after_help = "Example:\n  titorrent unmount /mnt/shared     (the same as umount /mnt/shared)")]
    Unmount {
        /// The mount point.
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
    },
    /// Show each titorrent mount: tracker link, members online, locks, transfers.
    #[command(after_help = "Example:\n  titorrent status")]
    Status,
    /// Lock a file until `titorrent unlock` (or --ttl): others cannot write it.
    #[command(after_help = "Examples:\n  titorrent lock /mnt/shared/plan.odt\n  titorrent lock /mnt/shared/plan.odt --ttl 8h\n\n\
Others' opens for write fail with EBUSY while the lock is held; reading is never blocked.")]
    Lock {
        #[command(flatten)]
        target: PathInMount,
        /// How long the lock lasts (e.g. 90, 30m, 8h, 7d; default: lease.lock_ttl from the config, else the
        /// tracker's maximum, one week).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Release a lock this member holds on a file (or, with --force, anyone's).
    #[command(after_help = "Examples:\n  titorrent unlock /mnt/shared/plan.odt\n  titorrent unlock --force /mnt/shared/plan.odt\n\n\
--force (the owner or an admin) breaks another member's lock; the action log records who did it, and the \
holder's unpublished edit comes back to it as a conflict copy.")]
    Unlock {
        #[command(flatten)]
        target: PathInMount,
        /// Break the lock whoever holds it.
        #[arg(long)]
        force: bool,
    },
    /// Print the group's action log: time, member, action, path.
    #[command(after_help = "Examples:\n  titorrent log /mnt/shared\n  titorrent log --state ~/.local/share/titorrent/team --after 120")]
    Log {
        /// A path inside the mount whose log to read (default: --state or the config's state).
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
        /// This member's state directory, when PATH is not given.
        #[arg(long, value_name = "DIR", env = "TITORRENT_STATE")]
        state: Option<PathBuf>,
        /// Print every event after this sequence number (the first column).
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// Print the last N events (when --after is not given).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
    /// List the versions the tracker keeps of a file.
    #[command(after_help = "Example:\n  titorrent versions /mnt/shared/plan.odt")]
    Versions {
        #[command(flatten)]
        target: PathInMount,
    },
    /// Make an older version of a file current again (as a new version).
    #[command(after_help = "Example:\n  titorrent restore /mnt/shared/plan.odt 3\n\nNo bytes move: the old version's torrent becomes current.")]
    Restore {
        #[command(flatten)]
        target: PathInMount,
        /// The version to restore (as `titorrent versions` prints it: 3 or v3).
        #[arg(value_name = "VERSION", value_parser = parse_version)]
        version: u64,
    },
    /// List what was deleted (or replaced by a rename) in the group and can still be brought back.
    #[command(after_help = "Examples:\n  titorrent trash /mnt/shared\n  titorrent trash /mnt/shared/photos\n\n\
A deleted file stays in the trash for the tracker's --trash-retention (30 days unless set), \
with the versions the tracker kept of it.")]
    Trash {
        /// A directory inside a titorrent mount: what was under it (default: the whole group).
        #[arg(value_name = "PATH", default_value = ".")]
        path: PathBuf,
        /// This member's state directory, if the mount does not say.
        #[arg(long, value_name = "DIR", env = "TITORRENT_STATE")]
        state: Option<PathBuf>,
    },
    /// Bring a deleted file, or everything that was under a deleted directory, back from the trash.
    #[command(after_help = "Examples:\n  titorrent undelete /mnt/shared/plan.odt\n  titorrent undelete /mnt/shared/photos\n\n\
The file comes back where it was, with its last content (no bytes move); \
directories it was in are made again. A name that is taken again is refused: rename that file first.")]
    Undelete {
        /// Where the file (or directory) was, inside a titorrent mount.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// This member's state directory, if the mount does not say.
        #[arg(long, value_name = "DIR", env = "TITORRENT_STATE")]
        state: Option<PathBuf>,
    },
    /// Keep a file or folder local: fetch it all now and keep it in the cache.
    #[command(after_help = "Examples:\n  titorrent pin /mnt/shared/photos\n  titorrent pin /mnt/shared/big.iso --no-wait\n\n\
Shows bytes, rate and time left while fetching (a bar on a terminal, a line every few seconds otherwise).")]
    Pin {
        /// A file or folder inside a titorrent mount.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Return once pinned, without waiting for the bytes.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this long (e.g. 600, 30m); the pin stays.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Serve a file's current version to standard BitTorrent clients for a while.
    #[command(after_help = "Examples:\n  titorrent export /mnt/shared/release.iso --ttl 2h\n  titorrent export /mnt/shared/release.iso --revoke\n\n\
Members' links are TLS and refuse everyone else; an export is the one, explicit way in for a standard client \
(transmission, libtorrent, aria2): this member serves that one version, in plain BitTorrent, on its export \
port until the time runs out or --revoke. Writes the version's .torrent with an announce URL that works for \
that one version until then (the tracker lists this member's export address to clients that announce it), \
and prints it with a magnet link naming the export address (x.pe). The export outlives a restart of the \
mount or of the tracker (served again on the same port, listed at the tracker again). Other versions and files \
are never served to non-members.")]
    Export {
        /// A file inside a titorrent mount.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// How long to serve it (e.g. 600, 30m, 2h; default 1h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
        ttl: std::time::Duration,
        /// Stop serving it now.
        #[arg(long)]
        revoke: bool,
        /// Where to write the .torrent (default: exports/INFO_HASH.torrent in the state directory).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Stop keeping a file or folder local; its cached pieces may be evicted.
    #[command(after_help = "Example:\n  titorrent unpin /mnt/shared/photos")]
    Unpin {
        /// A file or folder inside a titorrent mount.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Write the man pages generated from this definition (for packagers).
    #[command(hide = true)]
    Man {
        /// Directory to write titorrent.1 and titorrent-tracker.8 into.
        #[arg(long, value_name = "DIR", default_value = "man")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct StateArg {
    /// This member's state directory (key, membership, cache; default: `state` in the config file).
    #[arg(long, value_name = "DIR", env = "TITORRENT_STATE")]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    /// This member's name, as others see it in locks and logs.
    #[arg(long, value_name = "NAME")]
    pub member: String,
    #[command(flatten)]
    pub state: StateArg,
}

/// A path inside a titorrent mount; the mount says which state directory is
/// its member's (xattr user.titorrent.state_dir), else --state is used.
#[derive(Debug, Args)]
pub struct PathInMount {
    /// A file inside a titorrent mount.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// This member's state directory, if the mount does not say.
    #[arg(long, value_name = "DIR", env = "TITORRENT_STATE")]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// Where to mount the folder (an existing directory).
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Mount read-only: reading works, writes fail with EROFS (mount option `ro`).
    #[arg(long, conflicts_with = "read_write")]
    pub read_only: bool,
    /// Mount read-write even if the config says read_only (mount option `rw`).
    #[arg(long)]
    pub read_write: bool,
    /// Serve every local user, each as themselves (mount option `allow_other`; the default for a mount by root; a user's mount needs user_allow_other in /etc/fuse.conf).
    #[arg(long, conflicts_with = "no_allow_other")]
    pub allow_other: bool,
    /// Serve the mounting user only, even as root (mount option `noallow_other`).
    #[arg(long)]
    pub no_allow_other: bool,
    /// Do not let programs in the folder be executed (mount option `noexec`, which fstab's `user` option implies).
    #[arg(long)]
    pub noexec: bool,
}

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Where this member's BitTorrent session listens for other members (default 0.0.0.0:0: any free port).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Upload rate limit in bytes per second (suffixes k, M, G: 512k, 2M).
    #[arg(long, value_name = "B/S", value_parser = parse_rate)]
    pub upload_limit: Option<u32>,
    /// Download rate limit in bytes per second (suffixes k, M, G).
    #[arg(long, value_name = "B/S", value_parser = parse_rate)]
    pub download_limit: Option<u32>,
    /// On unmount, wait up to SECS for another member to hold a complete copy
    /// of every version only this member has (it always warns about them).
    #[arg(long, value_name = "SECS")]
    pub wait_replication: Option<u64>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where to mount the folder (created if missing).
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// State directory (default: $XDG_DATA_HOME/titorrent/up).
    #[arg(long, value_name = "DIR", env = "TITORRENT_STATE")]
    pub state: Option<PathBuf>,
    /// Where the embedded tracker listens.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7070")]
    pub tracker_listen: SocketAddr,
    #[command(flatten)]
    pub peer: PeerArgs,
}

fn parse_rate(s: &str) -> Result<u32, String> {
    let n = crate::config::parse_bytes(s)?;
    u32::try_from(n).map_err(|_| format!("{n} B/s is over the limit of {} B/s", u32::MAX))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}

fn parse_version(s: &str) -> Result<u64, String> {
    s.strip_prefix('v').unwrap_or(s).parse().map_err(|_| format!("{s:?} is not a version number (e.g. 3 or v3)"))
}

/// An invitation as users pass it around: `titorrent://HOST:PORT/GROUP/CODE/TRACKER-KEY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteUrl {
    pub tracker: String,
    pub group: u64,
    pub code: String,
    /// The tracker's key fingerprint: `join` pins it.
    pub tracker_key: titorrent_tracker::proto::Fingerprint,
}

impl InviteUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("titorrent://").ok_or("an invitation starts with titorrent://")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (tracker, group, code, key) = match parts.as_slice() {
            [t, g, c, k] => (*t, *g, *c, *k),
            [_, _, _] => {
                return Err("this invitation names no tracker key (made by a titorrent before TLS): ask for a new one".into())
            }
            _ => return Err("expected titorrent://HOST:PORT/GROUP/CODE/TRACKER-KEY".into()),
        };
        if !tracker.contains(':') {
            return Err(format!("{tracker:?} has no port"));
        }
        let group = group.parse().map_err(|_| format!("group {group:?} is not a number"))?;
        if code.is_empty() {
            return Err("the invitation code is empty".into());
        }
        let tracker_key = key.parse().map_err(|e| format!("tracker key: {e}"))?;
        Ok(InviteUrl { tracker: tracker.to_string(), group, code: code.to_string(), tracker_key })
    }
}

impl std::fmt::Display for InviteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "titorrent://{}/{}/{}/{}", self.tracker, self.group, self.code, self.tracker_key)
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
    fn old_command_lines_still_parse() {
        for argv in [
            &["titorrent", "mount", "/m", "--state", "/s", "--listen", "127.0.0.1:0", "--upload-limit", "4194304"][..],
            &["titorrent", "members", "--state", "/s"],
            &["titorrent", "invite", "--state", "/s", "--ttl", "60", "--uses", "2"],
            &["titorrent", "join", "titorrent://h:1/1/c/00", "--member", "b", "--state", "/s"],
            &["titorrent", "create-group", "--tracker", "h:1", "--admin-token", "/t", "--group", "g", "--member", "a", "--state", "/s"],
            &["titorrent", "up", "/m", "--state", "/s", "--listen", "127.0.0.1:0", "--tracker-listen", "127.0.0.1:0"],
            &["titorrent", "unmount", "/m"],
            &["titorrent", "tracker", "--listen", "127.0.0.1:0", "--data", "/d"],
        ] {
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{argv:?}: {e}");
            }
        }
        let cli = Cli::try_parse_from(["titorrent", "mount", "/m", "--upload-limit", "2M", "--read-only"]).unwrap();
        let Command::Mount(m) = cli.command else { panic!() };
        assert_eq!(m.peer.upload_limit, Some(2 << 20));
        assert!(m.read_only);
        assert!(Cli::try_parse_from(["titorrent", "mount", "/m", "--read-only", "--read-write"]).is_err());
    }

    #[test]
    fn invite_round_trip_and_errors() {
        let key = titorrent_tracker::proto::Fingerprint([0xab; 32]);
        let i = InviteUrl { tracker: "10.0.0.5:7070".into(), group: 3, code: "abc".into(), tracker_key: key };
        assert_eq!(InviteUrl::parse(&i.to_string()).unwrap(), i);
        let k = key.to_string();
        for bad in [
            format!("http://x:1/1/a/{k}"),
            format!("titorrent://x/1/a/{k}"),
            format!("titorrent://x:1/g/a/{k}"),
            format!("titorrent://x:1/1//{k}"),
            format!("titorrent://x:1/1/a/{k}/b"),
            "titorrent://x:1/1/a/b".into(),
        ] {
            assert!(InviteUrl::parse(&bad).is_err(), "{bad}");
        }
        let old = InviteUrl::parse("titorrent://x:1/1/a").unwrap_err();
        assert!(old.contains("names no tracker key"), "{old}");
    }
}

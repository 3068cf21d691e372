//! Provides titorrent's one configuration file: where it is looked for,
//! what each key means (see titorrent.conf(5)), and errors that name the
//! file, line and column of a bad key. Mount options and command-line
//! flags override what it says; [`Config::for_state`] gives the settings
//! of one share.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The configuration of system mounts (when running as root).
pub const SYSTEM_CONFIG: &str = "/etc/titorrent/config.toml";
/// Where a share given by NAME keeps its state when running as root.
pub const SYSTEM_STATE_ROOT: &str = "/var/lib/titorrent";
/// Every key the file accepts, as `table.key` for nested ones; the man page
/// titorrent.conf(5) must document each (a test checks).
pub const KEYS: &[&str] = &[
    "state",
    "tracker",
    "listen",
    "upload_limit",
    "download_limit",
    "read_only",
    "allow_other",
    "replication",
    "pin",
    "cache.dir",
    "cache.max_size",
    "cache.idle",
    "lease.renew_interval",
    "lease.lock_ttl",
    "share",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// `line` and `column` count from 1.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{}: {message}", path.display())]
    InvalidNoSpan { path: PathBuf, message: String },
}

/// How a member keeps files local.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Replication {
    /// Fetch pieces only when they are read (and whatever is pinned).
    OnDemand,
    /// Fetch every new version in the background as soon as it is
    /// published, serving reads by programs first (the default).
    #[default]
    Background,
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Replication::OnDemand => "on-demand",
            Replication::Background => "background",
        })
    }
}

/// The keys of the file: at the top level (defaults for every share) and in
/// `[share.NAME]` tables (`state` and `share` only at the top level).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub state: Option<Spanned<PathBuf>>,
    pub tracker: Option<TrackerAddr>,
    pub listen: Option<SocketAddr>,
    pub upload_limit: Option<Rate>,
    pub download_limit: Option<Rate>,
    pub read_only: Option<bool>,
    /// Serve every local user (FUSE `allow_other`); unset: when root mounts.
    pub allow_other: Option<bool>,
    pub replication: Option<Replication>,
    pub pin: Option<Vec<PinPath>>,
    pub cache: Option<CacheSettings>,
    pub lease: Option<LeaseSettings>,
    #[serde(default)]
    pub share: BTreeMap<String, Spanned<Settings>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub dir: Option<PathBuf>,
    pub max_size: Option<ByteSize>,
    /// How long a version nobody reads, fetches or wants stays live in the
    /// BitTorrent engine before it goes dormant.
    pub idle: Option<Secs>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSettings {
    /// How often an open file's lock is renewed.
    pub renew_interval: Option<Secs>,
    /// How long `titorrent lock` holds a lock unless told otherwise.
    pub lock_ttl: Option<Secs>,
}

/// host:port of a tracker manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerAddr(pub String);

impl<'de> Deserialize<'de> for TrackerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => Ok(TrackerAddr(s)),
            _ => Err(de::Error::custom(format!("tracker {s:?} is not HOST:PORT"))),
        }
    }
}

/// Bytes per second; 0 means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(pub u32);

impl Rate {
    pub fn limit(self) -> Option<u32> {
        (self.0 != 0).then_some(self.0)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = ByteSize::deserialize(d)?.0;
        u32::try_from(n)
            .map(Rate)
            .map_err(|_| de::Error::custom(format!("rate {n} B/s is over the limit of {} B/s (4 GiB/s)", u32::MAX)))
    }
}

/// A size in bytes: an integer, or a string with a unit (`"20GiB"`, `"500M"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let raw = Raw::deserialize(d)
            .map_err(|_: D::Error| de::Error::custom("expected a number of bytes or a size like \"20GiB\""))?;
        match raw {
            Raw::Int(n) => u64::try_from(n).map(ByteSize).map_err(|_| de::Error::custom("a size cannot be negative")),
            Raw::Text(s) => parse_bytes(&s).map(ByteSize).map_err(de::Error::custom),
        }
    }
}

/// Parses `123`, `500k`, `2M`, `1.5GiB`, `20 GB`: k, M, G, T are powers of 1024.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (examples: 1048576, \"512k\", \"20GiB\")"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use k, M, G or T)")),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// A duration: whole seconds, or a string like `"30s"`, `"5m"`, `"8h"`, `"7d"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let raw = Raw::deserialize(d)
            .map_err(|_: D::Error| de::Error::custom("expected a number of seconds or a duration like \"30s\", \"8h\""))?;
        let d = match raw {
            Raw::Int(n) if n > 0 => Duration::from_secs(n as u64),
            Raw::Int(_) => return Err(de::Error::custom("a duration must be more than 0 seconds")),
            Raw::Text(s) => parse_duration(&s).map_err(de::Error::custom)?,
        };
        Ok(Secs(d))
    }
}

/// Parses `90`, `30s`, `5m`, `8h`, `7d` (a whole number and one unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().map_err(|_| format!("{s:?} is not a duration (examples: 90, \"30s\", \"8h\", \"7d\")"))?;
    let mult = match t[split..].trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use s, m, h or d)")),
    };
    if n == 0 {
        return Err("a duration must be more than 0 seconds".into());
    }
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

/// A path inside the shared folder, relative to its root, without `..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinPath(pub PathBuf);

impl<'de> Deserialize<'de> for PinPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let p = PathBuf::from(s.trim_start_matches('/'));
        let ok = !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if ok {
            Ok(PinPath(p))
        } else {
            Err(de::Error::custom(format!("pin {s:?} must be a path inside the shared folder (no `..`, not empty)")))
        }
    }
}

/// Everything the daemon is told that it does not act on yet (see
/// `MountConfig::policy`): parsed and validated here so that a bad value is
/// refused now rather than silently ignored later.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountPolicy {
    /// Overrides the tracker address in member.toml.
    pub tracker: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub cache_max_size: Option<u64>,
    /// `cache.idle`: see `CacheSettings::idle`.
    pub cache_idle: Option<Duration>,
    pub replication: Replication,
    /// Relative to the folder's root.
    pub pins: Vec<PathBuf>,
    pub lease_renew_interval: Option<Duration>,
    pub lock_ttl: Option<Duration>,
}

/// One share's settings after merging the top level with its `[share.NAME]`.
#[derive(Clone, Debug, Default)]
pub struct ShareSettings {
    pub listen: Option<SocketAddr>,
    pub upload_limit: Option<u32>,
    pub download_limit: Option<u32>,
    pub read_only: Option<bool>,
    pub allow_other: Option<bool>,
    pub policy: MountPolicy,
}

/// The parsed file (or defaults when there is none).
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    pub top: Settings,
}

impl Config {
    /// Reads `explicit` (which must exist), else the default file for this
    /// user if it exists, else returns the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match default_path() {
                Some(p) if p.exists() => p,
                _ => return Ok(Config::default()),
            },
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io { path: path.clone(), source })?;
        Config::parse(&text, &path)
    }

    /// Parses `text`; errors name `path` and the line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, message: String| match span {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                ConfigError::Invalid { path: path.to_path_buf(), line, column, message }
            }
            None => ConfigError::InvalidNoSpan { path: path.to_path_buf(), message },
        };
        let top: Settings = toml::from_str(text).map_err(|e| at(e.span(), e.message().trim().replace('\n', "; ")))?;
        for (name, share) in &top.share {
            let s = share.get_ref();
            if let Some(state) = &s.state {
                return Err(at(Some(state.span()), format!("`state` belongs at the top level, not in [share.{name}]: a share's state directory is the one named {name}")));
            }
            if !s.share.is_empty() {
                return Err(at(Some(share.span()), format!("[share.{name}] cannot contain other shares")));
            }
            if name.is_empty() || name.contains('/') {
                return Err(at(Some(share.span()), format!("share name {name:?} must be a directory name, without `/`")));
            }
        }
        Ok(Config { path: Some(path.to_path_buf()), top })
    }

    /// The top-level `state`: the member identity commands use without --state.
    pub fn state(&self) -> Option<PathBuf> {
        self.top.state.as_ref().map(|s| expand_home(s.get_ref()))
    }

    /// The settings for the share whose state directory is `state`: the top
    /// level, overridden by `[share.NAME]` where NAME is the directory's name.
    pub fn for_state(&self, state: &Path) -> ShareSettings {
        let name = state.file_name().map(|n| n.to_string_lossy().into_owned());
        let share = name.and_then(|n| self.top.share.get(&n)).map(Spanned::get_ref);
        // The share's value if it sets one, else the top level's.
        macro_rules! pick {
            (|$s:ident| $e:expr) => {
                share.and_then(|$s: &Settings| $e).or_else(|| {
                    let $s = &self.top;
                    $e
                })
            };
        }
        ShareSettings {
            listen: pick!(|s| s.listen),
            upload_limit: pick!(|s| s.upload_limit).and_then(Rate::limit),
            download_limit: pick!(|s| s.download_limit).and_then(Rate::limit),
            read_only: pick!(|s| s.read_only),
            allow_other: pick!(|s| s.allow_other),
            policy: MountPolicy {
                tracker: pick!(|s| s.tracker.as_ref().map(|t| t.0.clone())),
                cache_dir: pick!(|s| s.cache.as_ref().and_then(|c| c.dir.as_deref()).map(expand_home)),
                cache_max_size: pick!(|s| s.cache.as_ref().and_then(|c| c.max_size)).map(|b| b.0),
                cache_idle: pick!(|s| s.cache.as_ref().and_then(|c| c.idle)).map(|d| d.0),
                replication: pick!(|s| s.replication).unwrap_or_default(),
                pins: pick!(|s| s.pin.clone()).unwrap_or_default().into_iter().map(|p| p.0).collect(),
                lease_renew_interval: pick!(|s| s.lease.as_ref().and_then(|l| l.renew_interval)).map(|d| d.0),
                lock_ttl: pick!(|s| s.lease.as_ref().and_then(|l| l.lock_ttl)).map(|d| d.0),
            },
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn home() -> Option<PathBuf> {
    dirs::home_dir()
}

fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), home()) {
        (Ok(rest), Some(h)) => h.join(rest),
        _ => p.to_path_buf(),
    }
}

/// The file read when no `--config` is given: /etc/titorrent/config.toml
/// for root, `$XDG_CONFIG_HOME/titorrent/config.toml` (default
/// `~/.config/...`) for everyone else.
pub fn default_path() -> Option<PathBuf> {
    if is_root() {
        return Some(PathBuf::from(SYSTEM_CONFIG));
    }
    Some(dirs::config_dir()?.join("titorrent/config.toml"))
}

/// Where state directories named by NAME live: /var/lib/titorrent for
/// root, `$XDG_DATA_HOME/titorrent` (default ~/.local/share/titorrent)
/// for everyone else. mount.titorrent(8) applies the same rule.
pub fn state_root() -> Option<PathBuf> {
    if is_root() {
        return Some(PathBuf::from(SYSTEM_STATE_ROOT));
    }
    Some(user_data_dir()?.join("titorrent"))
}

/// The user's data directory: `$XDG_DATA_HOME`, else ~/.local/share.
pub fn user_data_dir() -> Option<PathBuf> {
    dirs::data_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/titorrent/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_file_parses_and_shares_override_the_top_level() {
        let c = parse(
            r#"
state = "/var/lib/titorrent/team"
tracker = "tracker.lan:7070"
listen = "0.0.0.0:6881"
upload_limit = "2MiB"
download_limit = 0
replication = "on-demand"
pin = ["docs", "/photos/2024"]
[cache]
dir = "/srv/cache"
max_size = "20GiB"
[lease]
renew_interval = "10s"
lock_ttl = "8h"
[share.team]
upload_limit = 1000
read_only = true
allow_other = false
pin = ["only/this"]
"#,
        )
        .unwrap();
        assert_eq!(c.state(), Some(PathBuf::from("/var/lib/titorrent/team")));
        let team = c.for_state(Path::new("/var/lib/titorrent/team"));
        assert_eq!(team.upload_limit, Some(1000));
        assert_eq!(team.download_limit, None, "0 is unlimited");
        assert_eq!(team.read_only, Some(true));
        assert_eq!(team.allow_other, Some(false));
        assert_eq!(team.listen, Some("0.0.0.0:6881".parse().unwrap()));
        assert_eq!(team.policy.pins, [PathBuf::from("only/this")]);
        assert_eq!(team.policy.cache_max_size, Some(20 << 30));
        assert_eq!(team.policy.cache_dir, Some(PathBuf::from("/srv/cache")));
        assert_eq!(team.policy.replication, Replication::OnDemand);
        assert_eq!(team.policy.lock_ttl, Some(Duration::from_secs(8 * 3600)));
        assert_eq!(team.policy.lease_renew_interval, Some(Duration::from_secs(10)));
        assert_eq!(team.policy.tracker.as_deref(), Some("tracker.lan:7070"));
        let other = c.for_state(Path::new("/x/other"));
        assert_eq!(other.upload_limit, Some(2 << 20));
        assert_eq!((other.read_only, other.allow_other), (None, None));
        assert_eq!(other.policy.pins, [PathBuf::from("docs"), PathBuf::from("photos/2024")]);
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let s = parse("").unwrap().for_state(Path::new("/x"));
        assert_eq!(s.policy, MountPolicy::default());
        assert_eq!(s.policy.replication, Replication::Background);
    }

    #[test]
    fn errors_name_the_file_the_line_and_what_is_wrong() {
        let cases: &[(&str, &str, &str)] = &[
            ("listen = \"0.0.0.0:0\"\nuplod_limit = 5\n", ":2:1:", "unknown field `uplod_limit`"),
            ("[cache]\nmax_size = \"lots\"\n", ":2:12:", "not a size"),
            ("upload_limit = \"5 parsecs\"\n", ":1:16:", "unknown unit"),
            ("replication = \"eager\"\n", ":1:15:", "unknown variant `eager`"),
            ("\n\ntracker = \"nohost\"\n", ":3:11:", "not HOST:PORT"),
            ("pin = [\"../etc\"]\n", ":1:7:", "inside the shared folder"),
            ("[lease]\nlock_ttl = -3\n", ":2:12:", "more than 0"),
            ("[share.team]\nstate = \"/x\"\n", ":2:9:", "top level"),
            ("listen = \n", ":1:10:", "invalid string; expected"),
            ("read_only = \"yes\"\n", ":1:13:", "expected a boolean"),
        ];
        for (text, at, what) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with("/etc/titorrent/config.toml:"), "{err}");
            assert!(err.contains(at) && err.contains(what), "{text:?}: expected {at} and {what:?} in {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("20 GB"), Ok(20 << 30));
        assert!(parse_bytes("-1").is_err());
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn the_man_page_documents_every_key() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/titorrent.conf.5")).expect("man/titorrent.conf.5");
        for key in KEYS {
            let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
            let documented = match (table, *key) {
                (_, "share") => page.contains(".BI [share. NAME ]"),
                ("", _) => page.contains(&format!(".B {leaf}\n")),
                (t, _) => page.contains(&format!(".B [{t}]\n")) && page.contains(&format!(".B {leaf}\n")),
            };
            assert!(documented, "titorrent.conf(5) does not document key {key}");
        }
    }

    #[test]
    fn every_key_is_in_the_keys_list() {
        // A new field in Settings must be added to KEYS (and so to the man page).
        let s = Settings::default();
        let Settings { state: _, tracker: _, listen: _, upload_limit: _, download_limit: _, read_only: _, allow_other: _, replication: _, pin: _, cache: _, lease: _, share: _ } = s;
        let CacheSettings { dir: _, max_size: _, idle: _ } = CacheSettings::default();
        let LeaseSettings { renew_interval: _, lock_ttl: _ } = LeaseSettings::default();
        assert_eq!(KEYS.len(), 15);
    }
}

//! The tracker's command-line flags, defined once: `titorrent-tracker` uses
//! them directly and `titorrent tracker` flattens the same [`ServeArgs`].

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use super::{Tracker, TrackerConfig, TrackerError};

/// Run the tracker manager: group members, file table, locks and event log.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to listen on (host:port; port 0 picks a free one). It serves
    /// both the members' protocol and BitTorrent clients' HTTP announces
    /// (BEP 3, compact replies) at http://ADDR/announce/KEY, KEY being a
    /// member's announce key; a connection's first bytes tell which.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7070")]
    pub listen: String,
    /// Directory holding the tracker's database (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./titorrent-tracker-data")]
    pub data: PathBuf,
    /// How long a lock lasts unless renewed, in seconds (fractions allowed;
    /// default 30).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub lease_ttl: Option<Duration>,
    /// How long the action log keeps events, in seconds (fractions allowed;
    /// default 2592000, 30 days). A member away longer resynchronizes from
    /// a snapshot.
    #[arg(long, value_name = "SECS", value_parser = parse_retention)]
    pub log_retention: Option<Duration>,
    /// Versions kept per file, the current one included (default 10): each
    /// can be listed, fetched and restored.
    #[arg(long, value_name = "K", value_parser = parse_keep_versions)]
    pub keep_versions: Option<usize>,
    /// How long a deleted or replaced file stays in the trash, restorable
    /// with `titorrent undelete`, in seconds (fractions allowed; default
    /// 2592000, 30 days).
    #[arg(long, value_name = "SECS", value_parser = parse_retention)]
    pub trash_retention: Option<Duration>,
    /// File holding the admin token that creating a group needs (default:
    /// DIR/admin-token). Made at first start if missing (mode 0600), and
    /// then printed once; give it to `titorrent create-group --admin-token`.
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
}

const MAX_RETENTION_SECS: f64 = 100.0 * 365.0 * 86_400.0;
const MAX_KEEP_VERSIONS: usize = 10_000;

fn parse_secs_up_to(s: &str, max: f64) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("not a number of seconds: {e}"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= max) {
        return Err(format!("must be more than 0 and at most {max} seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    parse_secs_up_to(s, 86_400.0)
}

fn parse_retention(s: &str) -> Result<Duration, String> {
    parse_secs_up_to(s, MAX_RETENTION_SECS)
}

fn parse_keep_versions(s: &str) -> Result<usize, String> {
    let k: usize = s.parse().map_err(|e| format!("not a count: {e}"))?;
    if !(1..=MAX_KEEP_VERSIONS).contains(&k) {
        return Err(format!("must be from 1 to {MAX_KEEP_VERSIONS}"));
    }
    Ok(k)
}

impl ServeArgs {
    pub fn config(&self) -> TrackerConfig {
        let mut cfg = TrackerConfig { data_dir: self.data.clone(), ..TrackerConfig::default() };
        if let Some(ttl) = self.lease_ttl {
            cfg.lease_ttl = ttl;
        }
        if let Some(r) = self.log_retention {
            cfg.log_retention = r;
        }
        if let Some(r) = self.trash_retention {
            cfg.trash_retention = r;
        }
        if let Some(k) = self.keep_versions {
            cfg.keep_versions = k;
        }
        cfg.admin_token_file = self.admin_token_file.clone();
        cfg
    }
}

/// Opens the state, binds, prints `titorrent-tracker key fingerprint HEX`,
/// at the first start `titorrent-tracker admin token TOKEN (kept in FILE)`,
/// and `titorrent-tracker listening on ADDR` (the bound address) on stdout, and serves until Ctrl-C / SIGTERM. The
/// caller sets up logging.
pub async fn run(args: ServeArgs) -> Result<(), TrackerError> {
    let tracker = Tracker::open(args.config())?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|source| TrackerError::Bind { addr: args.listen.clone(), source })?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "titorrent-tracker key fingerprint {}", tracker.fingerprint())?;
        let (token, file) = tracker.admin_token();
        if tracker.admin_token_made() {
            // Once: it stays in its file (0600) for create-group.
            writeln!(out, "titorrent-tracker admin token {token} (kept in {})", file.display())?;
        }
        writeln!(out, "titorrent-tracker listening on {addr}")?;
        out.flush()?;
    }
    let serve = tokio::spawn(tracker.clone().serve(listener));
    stop_signal().await;
    tracing::info!("stopping");
    tracker.shutdown();
    let _ = serve.await;
    drop(tracker);
    Ok(())
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn defaults_and_ttl() {
        let cli = Cli::parse_from(["t"]);
        assert_eq!(cli.serve.listen, "0.0.0.0:7070");
        assert_eq!(cli.serve.data, PathBuf::from("./titorrent-tracker-data"));
        assert_eq!(cli.serve.config().lease_ttl, Duration::from_secs(30));
        let cli = Cli::parse_from(["t", "--lease-ttl", "0.3", "--listen", "127.0.0.1:0", "--data", "/x"]);
        assert_eq!(cli.serve.config().lease_ttl, Duration::from_millis(300));
        assert!(Cli::try_parse_from(["t", "--lease-ttl", "-1"]).is_err());
    }

    #[test]
    fn retention_and_kept_versions() {
        let cfg = Cli::parse_from(["t"]).serve.config();
        assert_eq!((cfg.log_retention, cfg.keep_versions), (Duration::from_secs(30 * 24 * 3600), 10));
        let cfg = Cli::parse_from(["t", "--log-retention", "604800", "--keep-versions", "3"]).serve.config();
        assert_eq!((cfg.log_retention, cfg.keep_versions), (Duration::from_secs(7 * 24 * 3600), 3));
        let half = Cli::parse_from(["t", "--log-retention", "0.5"]).serve.config();
        assert_eq!(half.log_retention, Duration::from_millis(500));
        let bad_args =
            [["--keep-versions", "0"], ["--keep-versions", "x"], ["--log-retention", "0"], ["--log-retention", "-3"]];
        for bad in bad_args {
            assert!(Cli::try_parse_from(["t", bad[0], bad[1]]).is_err(), "{bad:?}");
        }
    }
}

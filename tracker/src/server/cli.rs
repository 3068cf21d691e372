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
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7070")]
    pub listen: String,
    /// Directory holding the tracker's database (created if missing).
    #[arg(long, value_name = "DIR", default_value = "./titorrent-tracker-data")]
    pub data: PathBuf,
    /// How long a lock lasts unless renewed, in seconds (fractions allowed;
    /// default 30).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub lease_ttl: Option<Duration>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("not a number of seconds: {e}"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err("must be more than 0 and at most 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

impl ServeArgs {
    pub fn config(&self) -> TrackerConfig {
        let mut cfg = TrackerConfig { data_dir: self.data.clone(), ..TrackerConfig::default() };
        if let Some(ttl) = self.lease_ttl {
            cfg.lease_ttl = ttl;
        }
        cfg
    }
}

/// Opens the state, binds, prints `titorrent-tracker listening on ADDR`
/// (the bound address) on stdout, and serves until Ctrl-C / SIGTERM. The
/// caller sets up logging.
pub async fn run(args: ServeArgs) -> Result<(), TrackerError> {
    let tracker = Tracker::open(args.config())?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|source| TrackerError::Bind { addr: args.listen.clone(), source })?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
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
}

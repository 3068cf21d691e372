//! `titorrent-tracker`: runs the tracker manager (flags in `server::ServeArgs`).

use clap::Parser;
use titorrent_tracker::server::{self, ServeArgs};

/// titorrent's tracker manager: group members, file table, locks and event log.
#[derive(Parser, Debug)]
#[command(name = "titorrent-tracker", version, about)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Its data directory holds keys and every group's file table.
    server::private::owner_only_umask();
    // Colour only on a terminal: a log file or journal gets plain text.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Tokio's multi-thread runtime (a worker per core): a current-thread
    // runtime did no better on lock+unlock pairs on 2 cores (a request
    // costs no task hand-off either way, see server/conn.rs), and HTTP
    // announces use every core.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(server::run(cli.serve))?;
    Ok(())
}

//! The daemons' and commands' log output: one line per event on stderr,
//! filtered by `RUST_LOG`, in colour only when stderr is a terminal (a log
//! file, `journalctl` or `grep` gets plain text), without librqbit's report
//! of its own normal operation as an error.
//!
//! librqbit 9.1 ends a torrent's per-torrent tasks with an error when the
//! torrent is paused ("speed_estimator_updater finished with error: chunk
//! tracker empty, torrent was paused", logged at ERROR by
//! `librqbit_core::spawn_utils`). titorrent pauses every version that goes
//! dormant, so a user's log filled with ERROR lines for nothing (544 for one
//! `tar -x`). Exactly that message is dropped; every other error of that
//! target still shows.

use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterExt};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// What the daemons log when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,librqbit=warn,librqbit_core=warn";

/// Where librqbit logs a background task's end.
const SPAWN_UTILS: &str = "librqbit_core::spawn_utils";
/// How librqbit's error for a task of a paused torrent reads.
const PAUSED: &str = "torrent was paused";

/// Installs the global subscriber (stderr; `RUST_LOG`, else the default).
pub fn init() {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(env.and(PausedTaskNoise));
    tracing_subscriber::registry().with(layer).init();
}

/// Drops librqbit's "finished with error ... torrent was paused" events.
struct PausedTaskNoise;

impl<S> Filter<S> for PausedTaskNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        !is_paused_task_noise(event)
    }
}

fn is_paused_task_noise(event: &Event<'_>) -> bool {
    if event.metadata().target() != SPAWN_UTILS {
        return false;
    }
    struct Message(bool);
    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" && format!("{value:?}").contains(PAUSED) {
                self.0 = true;
            }
        }
    }
    let mut m = Message(false);
    event.record(&mut m);
    m.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what passes the filter.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl std::io::Write for Seen {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn drops_only_the_paused_task_error() {
        let seen = Seen::default();
        let writer = seen.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_filter(EnvFilter::new("info").and(PausedTaskNoise));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "librqbit_core::spawn_utils", "[81]speed_estimator_updater finished with error: chunk tracker empty, torrent was paused");
            tracing::error!(target: "librqbit_core::spawn_utils", "[3]peer_adder finished with error: disk full");
            tracing::info!(target: "titorrent::model", "torrent was paused (our own line stays)");
        });
        let lines = seen.0.lock().unwrap().concat();
        assert!(!lines.contains("speed_estimator_updater"), "{lines}");
        assert!(lines.contains("disk full"), "{lines}");
        assert!(lines.contains("our own line stays"), "{lines}");
    }
}

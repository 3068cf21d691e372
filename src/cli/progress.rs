//! Provides progress for CLI commands that wait for bytes to arrive: a bar
//! with bytes, rate and time left on a terminal, a plain line every few
//! seconds otherwise (logs and scripts).
//!
//! The bar is indicatif's: the de-facto standard terminal progress crate
//! (console-rs, used by cargo-binstall, rustup-init and uv), maintained,
//! and it handles terminal width, redraw rate and non-UTF-8 terminals,
//! which we would otherwise get wrong ourselves.

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain line is printed when not on a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
    first: u64,
    last_line: Option<Instant>,
    total: u64,
    done: u64,
}

impl Progress {
    /// A bar on stderr when it is a terminal, plain lines on stdout otherwise.
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.set_message(label.to_string());
            b
        });
        Progress { label: label.to_string(), bar, started: Instant::now(), first: 0, last_line: None, total, done: 0 }
    }

    /// Sets how many of `total` bytes are done (`total` may change as
    /// files appear).
    pub fn set(&mut self, done: u64, total: u64) {
        if self.last_line.is_none() && self.done == 0 {
            self.first = done;
        }
        self.done = done;
        self.total = total;
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
            return;
        }
        let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if due {
            println!("{}", self.line());
            self.last_line = Some(Instant::now());
        }
    }

    /// "photos: 12.0 MiB of 40.0 MiB local, 3.1 MiB/s, 9s left"
    pub fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.5 { (self.done.saturating_sub(self.first)) as f64 / secs } else { 0.0 };
        let left = self.total.saturating_sub(self.done);
        let eta = if rate > 0.0 && left > 0 {
            format!(", {} left", HumanDuration(Duration::from_secs_f64(left as f64 / rate)))
        } else {
            String::new()
        };
        format!(
            "{}: {} of {} local, {}/s{eta}",
            self.label,
            HumanBytes(self.done),
            HumanBytes(self.total),
            HumanBytes(rate as u64)
        )
    }

    /// Clears the bar and prints `msg` as the last line.
    pub fn finish(self, msg: &str) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        println!("{msg}");
    }
}

//! `titorrent-bench`: runs the benchmark figures (see `titorrent_integration::bench`)
//! and writes the markdown report.
//!
//! ```text
//! titorrent-bench [--smoke] [--only P1,P3] [--out docs/benchmarks.md]
//! ```
//!
//! Needs root, /dev/fuse, fusermount3 and release builds of titorrent next
//! to this binary (`cargo build --release --workspace`); the full run also
//! btfs, opentracker, wrk and iproute2 (`integration/bench-deps.sh`), and
//! bindfs for the references of P11 and P12 (without it those rows say
//! "skipped").

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use titorrent_integration::bench::{self, Options, FIGURES};

const USAGE: &str = "usage: titorrent-bench [--smoke] [--only P1,P3,...] [--out FILE]

  --smoke      small sizes, no external references (what CI runs)
  --only LIST  run only these figures (P1..P9, P11, P12, or parts such as P2a),
               comma-separated
  --out FILE   where to write the markdown report (default docs/benchmarks.md)";

fn parse() -> Result<Options, String> {
    let mut opts = Options {
        smoke: false,
        only: BTreeSet::new(),
        out: PathBuf::from("docs/benchmarks.md"),
        command: String::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut shown = vec!["titorrent-bench".to_string()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| inline.clone().or_else(|| it.next().cloned()).ok_or(format!("{name} needs a value"));
        match flag {
            "--smoke" => {
                opts.smoke = true;
                shown.push("--smoke".into());
            }
            "--only" => {
                let v = value("--only")?;
                for f in v.split(',').map(normalize_figure).filter(|f| !f.is_empty()) {
                    let figure = f.trim_end_matches(|c: char| c.is_ascii_lowercase());
                    if !FIGURES.iter().any(|(id, _)| *id == figure) {
                        return Err(format!("unknown figure {f:?} (P1..P9, P11, P12, or a part such as P2a)"));
                    }
                    opts.only.insert(f);
                }
                shown.push(format!("--only {v}"));
            }
            "--out" => {
                opts.out = PathBuf::from(value("--out")?);
                shown.push(format!("--out {}", opts.out.display()));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    opts.command = shown.join(" ");
    Ok(opts)
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("titorrent-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    titorrent_integration::require_fuse();
    match bench::run(&opts) {
        Ok(md) => {
            println!("{md}");
            eprintln!("report written to {}", opts.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("titorrent-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// " p2A " → "P2a": figures are upper case, their parts' letters lower case.
fn normalize_figure(f: &str) -> String {
    let f = f.trim();
    let digits_end = f.char_indices().skip(1).find(|(_, c)| !c.is_ascii_digit()).map_or(f.len(), |(i, _)| i);
    format!("{}{}", f[..digits_end].to_uppercase(), f[digits_end..].to_lowercase())
}

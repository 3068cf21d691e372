//! What the workloads did: one record per call, with its member, its
//! operation, its path, when it started and ended, and its result.

use std::fmt;

/// What a call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded; `detail` says what it saw or wrote ("read 41", "line m1-7").
    Ok(String),
    /// Failed with this errno.
    Err(i32),
}

#[derive(Clone, Debug)]
pub struct Record {
    pub member: usize,
    /// Which kind of call ("append", "increment", "rename", ...).
    pub op: &'static str,
    /// Paths relative to the mount; a rename has two.
    pub paths: Vec<String>,
    /// What it wrote that must be found again (an appended line).
    pub token: Option<String>,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
    /// During a fault that touches this member (its daemon down or
    /// stopped, the tracker away): refusals are expected then.
    pub in_fault: bool,
}

impl Record {
    pub fn errno(&self) -> Option<i32> {
        match self.outcome {
            Outcome::Err(e) => Some(e),
            Outcome::Ok(_) => None,
        }
    }

    pub fn touches(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path || p.starts_with(&format!("{path}/")) || path.starts_with(&format!("{p}/")))
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Ok(d) => format!("ok {d}"),
            Outcome::Err(e) => format!("errno {e} ({})", std::io::Error::from_raw_os_error(*e)),
        };
        write!(
            f,
            "{:>7}..{:<7} m{} {:<9} {:<40} {}{}",
            self.start_ms,
            self.end_ms,
            self.member,
            self.op,
            self.paths.join(" -> "),
            outcome,
            if self.in_fault { "  [fault]" } else { "" }
        )
    }
}

/// The records of calls touching `path`, in start order: the shortest part
/// of the history that shows what happened to it (the last `max`).
pub fn excerpt(records: &[Record], path: &str, max: usize) -> String {
    let mut hits: Vec<&Record> = records.iter().filter(|r| r.touches(path)).collect();
    hits.sort_by_key(|r| (r.start_ms, r.member));
    let skip = hits.len().saturating_sub(max);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("  ... {skip} earlier calls on {path}\n"));
    }
    for r in &hits[skip..] {
        out.push_str(&format!("  {r}\n"));
    }
    out
}

//! The checks a history must pass, written as the README states the
//! semantics ("What a program can rely on"):
//!
//! - **errno**: every call fails only with an errno allowed for it:
//!   appends and increments retry `EBUSY` and must then succeed; name
//!   operations may see `EBUSY`, `EEXIST`, `ENOENT`, `ENOTEMPTY`,
//!   `ENOTDIR`, `EISDIR`, except that an `O_CREAT` open in a directory that
//!   always exists never gets `ENOENT`. During a fault that touches the member (its daemon
//!   stopped, the tracker away) `EROFS` and `ENOTCONN` are allowed too.
//!   `EIO` and `ESTALE` never are.
//! - **appends**: every acknowledged line (its close returned 0) is in the
//!   log exactly once, or, when not there, in a conflict copy of the log
//!   (a conflict copy holds the writer's whole file, so the lines before it
//!   are there again: copies are not counted for duplicates). No line that
//!   nobody wrote, and no line twice in the log.
//! - **counters**: with A acknowledged increments, T attempted and K
//!   conflict copies of the counter, its final value F has F <= T and
//!   F + K >= A: an increment is lost only into a conflict copy.
//! - **listings**: once quiet, every member has the same tree, byte for byte.
//! - **versions**: the version a member reads after its own appends never
//!   goes backwards.
//! - **faults**: an edit open when its daemon was killed survives, in the
//!   file or a conflict copy next to it; a writer stopped past its lease
//!   never overwrites the version written meanwhile (its bytes are a
//!   conflict copy).

use super::history::{excerpt, Outcome, Record};
use super::workload::{COUNTERS, LOGS, TEMP_DIRS};
use std::collections::{BTreeMap, HashMap};

/// Everything a run observed.
#[derive(Debug, Default)]
pub struct Observed {
    pub records: Vec<Record>,
    /// Each member's tree once quiet: path -> content (`None` for a directory).
    pub trees: Vec<BTreeMap<String, Option<Vec<u8>>>>,
    /// (member, path, version) read right after each acknowledged append.
    pub versions: Vec<(usize, String, u64)>,
    /// (path, marker): the marker must be in the file or in a conflict copy next to it.
    pub must_survive: Vec<(String, String)>,
    /// (path, content): the file must hold exactly this.
    pub must_equal: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub rule: &'static str,
    pub path: String,
    pub what: String,
}

/// Conflict copies of `path` in a tree (`dir/stem (conflict from ...)ext`).
pub fn conflict_copies<'a>(tree: &'a BTreeMap<String, Option<Vec<u8>>>, path: &str) -> Vec<(&'a String, &'a [u8])> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let stem = match name.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s,
        _ => name,
    };
    let prefix = if dir.is_empty() { format!("{stem} (conflict from ") } else { format!("{dir}/{stem} (conflict from ") };
    tree.iter()
        .filter(|(p, c)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/') && c.is_some())
        .map(|(p, c)| (p, c.as_deref().unwrap_or_default()))
        .collect()
}

fn allowed(r: &Record, errno: i32) -> bool {
    let name_ops = [libc::EBUSY, libc::EEXIST, libc::ENOENT, libc::ENOTEMPTY, libc::ENOTDIR, libc::EISDIR];
    let fault = [libc::EROFS, libc::ENOTCONN, libc::EBUSY];
    let in_fault = r.in_fault && fault.contains(&errno);
    // An open with O_CREAT in a directory that always exists never gets
    // ENOENT (it did, for a name another member had just unlinked).
    let creates = matches!(r.op, "create" | "create-x" | "rewrite" | "hold");
    let parent_may_be_gone = r.paths[0].rsplit_once('/').is_some_and(|(dir, _)| TEMP_DIRS.contains(&dir));
    match r.op {
        "append" | "increment" => in_fault,
        _ if creates && errno == libc::ENOENT => parent_may_be_gone,
        _ => name_ops.contains(&errno) || in_fault,
    }
}

pub fn check(o: &Observed) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut v = |rule, path: &str, what: String| out.push(Violation { rule, path: path.to_string(), what });
    for r in &o.records {
        match r.outcome {
            Outcome::Err(e) if !allowed(r, e) => {
                v("errno", &r.paths[0], format!("{} failed with errno {e} ({}): {r}", r.op, std::io::Error::from_raw_os_error(e)))
            }
            _ => {}
        }
    }
    let Some(first) = o.trees.first() else {
        v("listings", "", "no member's tree was read".into());
        return out;
    };
    for (i, t) in o.trees.iter().enumerate().skip(1) {
        if let Some(d) = first_difference(first, t) {
            v("listings", &d, format!("member 0 and member {i} differ at {d}"));
        }
    }
    let lines_of = |path: &str| -> Vec<String> {
        first.get(path).cloned().flatten().map(|c| String::from_utf8_lossy(&c).lines().map(str::to_string).collect()).unwrap_or_default()
    };
    for log in LOGS {
        let lines = lines_of(log);
        let mut count: HashMap<&str, usize> = HashMap::new();
        for l in &lines {
            *count.entry(l.as_str()).or_default() += 1;
        }
        let written: HashMap<&str, &Record> = o
            .records
            .iter()
            .filter(|r| r.op == "append" && r.paths[0] == log)
            .filter_map(|r| r.token.as_deref().map(|t| (t, r)))
            .collect();
        let copies = conflict_copies(first, log);
        for (token, r) in &written {
            let acked = matches!(r.outcome, Outcome::Ok(_));
            match count.get(token).copied().unwrap_or(0) {
                1 => {}
                0 if !acked => {}
                0 => {
                    let kept = copies.iter().any(|(_, c)| String::from_utf8_lossy(c).lines().any(|l| l == *token));
                    if !kept {
                        v("appends", log, format!("acknowledged line {token} is in neither {log} nor a conflict copy: {r}"));
                    }
                }
                n => v("appends", log, format!("line {token} is in {log} {n} times: {r}")),
            }
        }
        for l in count.keys() {
            if !written.contains_key(l) {
                v("appends", log, format!("{log} holds a line nobody wrote: {l:?}"));
            }
        }
    }
    for counter in COUNTERS {
        let recs: Vec<&Record> = o.records.iter().filter(|r| r.op == "increment" && r.paths[0] == counter).collect();
        let acked = recs.iter().filter(|r| matches!(r.outcome, Outcome::Ok(_))).count() as u64;
        let tried = recs.len() as u64;
        let k = conflict_copies(first, counter).len() as u64;
        let text = first.get(counter).cloned().flatten().unwrap_or_default();
        match String::from_utf8_lossy(&text).trim().parse::<u64>() {
            Ok(f) if f <= tried && f + k >= acked => {}
            Ok(f) => v("counters", counter, format!("{counter} is {f}: {acked} increments acknowledged, {tried} tried, {k} conflict copies")),
            Err(_) => v("counters", counter, format!("{counter} holds {:?}", String::from_utf8_lossy(&text))),
        }
    }
    let mut last: HashMap<(usize, &str), u64> = HashMap::new();
    for (m, path, ver) in &o.versions {
        let prev = last.insert((*m, path.as_str()), *ver);
        if prev.is_some_and(|p| p > *ver) {
            v("versions", path, format!("member {m} read version {ver} of {path} after version {}", prev.unwrap_or(0)));
        }
    }
    for (path, marker) in &o.must_survive {
        let here = first.get(path).cloned().flatten().is_some_and(|c| String::from_utf8_lossy(&c).contains(marker.as_str()));
        let copied = conflict_copies(first, path).iter().any(|(_, c)| String::from_utf8_lossy(c).contains(marker.as_str()));
        if !here && !copied {
            v("faults", path, format!("{marker:?}, written before a fault, is in neither {path} nor a conflict copy"));
        }
    }
    for (path, want) in &o.must_equal {
        let got = first.get(path).cloned().flatten();
        if got.as_deref() != Some(want.as_slice()) {
            v("faults", path, format!("{path} holds {:?}, expected {:?}", got.map(|g| String::from_utf8_lossy(&g).into_owned()), String::from_utf8_lossy(want)));
        }
    }
    out
}

fn first_difference(a: &BTreeMap<String, Option<Vec<u8>>>, b: &BTreeMap<String, Option<Vec<u8>>>) -> Option<String> {
    for (p, c) in a {
        if b.get(p) != Some(c) {
            return Some(p.clone());
        }
    }
    b.keys().find(|p| !a.contains_key(*p)).cloned()
}

/// The violations with the history that shows each, for a failure message.
pub fn explain(violations: &[Violation], records: &[Record]) -> String {
    let mut out = String::new();
    for viol in violations {
        out.push_str(&format!("[{}] {}\n", viol.rule, viol.what));
        if !viol.path.is_empty() {
            out.push_str(&excerpt(records, &viol.path, 30));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(member: usize, op: &'static str, path: &str, token: &str, outcome: Outcome) -> Record {
        Record {
            member,
            op,
            paths: vec![path.to_string()],
            token: Some(token.to_string()),
            start_ms: 0,
            end_ms: 1,
            outcome,
            in_fault: false,
        }
    }

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, Option<Vec<u8>>> {
        let mut t: BTreeMap<String, Option<Vec<u8>>> = files.iter().map(|(p, c)| (p.to_string(), Some(c.as_bytes().to_vec()))).collect();
        for c in COUNTERS {
            t.entry(c.to_string()).or_insert(Some(b"0\n".to_vec()));
        }
        t
    }

    fn rules(o: &Observed) -> Vec<&'static str> {
        check(o).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_lost_acknowledged_append_fails_and_one_kept_in_a_conflict_copy_passes() {
        let records = vec![rec(0, "append", LOGS[0], "m0-1", Outcome::Ok("".into())), rec(1, "append", LOGS[0], "m1-1", Outcome::Ok("".into()))];
        let lost = Observed { records: records.clone(), trees: vec![tree(&[(LOGS[0], "m0-1\n")])], ..Default::default() };
        assert_eq!(rules(&lost), vec!["appends"]);
        let copy = "logs/L0 (conflict from bob 2026-12-02 10.00.00).log";
        let kept = Observed { records, trees: vec![tree(&[(LOGS[0], "m0-1\n"), (copy, "m0-1\nm1-1\n")])], ..Default::default() };
        assert!(check(&kept).is_empty(), "{:?}", check(&kept));
    }

    #[test]
    fn a_line_twice_or_from_nobody_fails() {
        let records = vec![rec(0, "append", LOGS[1], "m0-1", Outcome::Ok("".into()))];
        let twice = Observed { records: records.clone(), trees: vec![tree(&[(LOGS[1], "m0-1\nm0-1\n")])], ..Default::default() };
        assert_eq!(rules(&twice), vec!["appends"]);
        let phantom = Observed { records, trees: vec![tree(&[(LOGS[1], "m0-1\nbo\n")])], ..Default::default() };
        assert_eq!(rules(&phantom), vec!["appends"]);
    }

    #[test]
    fn counters_lose_increments_only_into_conflict_copies() {
        let inc = |m| rec(m, "increment", COUNTERS[0], "", Outcome::Ok("".into()));
        let records = vec![inc(0), inc(1), inc(2)];
        let short = Observed { records: records.clone(), trees: vec![tree(&[(COUNTERS[0], "2\n")])], ..Default::default() };
        assert_eq!(rules(&short), vec!["counters"]);
        let copy = "counters/C0 (conflict from ana 2026-12-02 10.00.00)";
        let kept = Observed { records, trees: vec![tree(&[(COUNTERS[0], "2\n"), (copy, "2\n")])], ..Default::default() };
        assert!(check(&kept).is_empty(), "{:?}", check(&kept));
    }

    #[test]
    fn eio_is_never_allowed_and_erofs_only_during_a_fault() {
        let mut r = rec(0, "rename", "scratch/n0", "", Outcome::Err(libc::EIO));
        let o = |r: &Record| Observed { records: vec![r.clone()], trees: vec![tree(&[])], ..Default::default() };
        assert_eq!(rules(&o(&r)), vec!["errno"]);
        r.outcome = Outcome::Err(libc::EROFS);
        assert_eq!(rules(&o(&r)), vec!["errno"]);
        r.in_fault = true;
        assert!(rules(&o(&r)).is_empty());
        r.outcome = Outcome::Err(libc::ENOENT);
        r.in_fault = false;
        assert!(rules(&o(&r)).is_empty());
        // A create in a directory that always exists: never ENOENT.
        let mut c = rec(1, "create", "scratch/d0/n0", "", Outcome::Err(libc::ENOENT));
        assert_eq!(rules(&o(&c)), vec!["errno"]);
        c.paths = vec!["scratch/t0/n0".into()];
        assert!(rules(&o(&c)).is_empty(), "t0 comes and goes");
    }

    #[test]
    fn members_that_differ_versions_that_go_back_and_lost_markers_fail() {
        let differ = Observed { trees: vec![tree(&[("a", "1")]), tree(&[("a", "2")])], ..Default::default() };
        assert_eq!(rules(&differ), vec!["listings"]);
        let back = Observed {
            trees: vec![tree(&[])],
            versions: vec![(0, LOGS[0].into(), 5), (0, LOGS[0].into(), 4)],
            ..Default::default()
        };
        assert_eq!(rules(&back), vec!["versions"]);
        let lost = Observed { trees: vec![tree(&[("scratch/k0", "")])], must_survive: vec![("scratch/k0".into(), "kill-0".into())], ..Default::default() };
        assert_eq!(rules(&lost), vec!["faults"]);
        let overwritten = Observed {
            trees: vec![tree(&[("scratch/p0", "late")])],
            must_equal: vec![("scratch/p0".into(), b"meanwhile".to_vec())],
            ..Default::default()
        };
        assert_eq!(rules(&overwritten), vec!["faults"]);
    }
}

//! Provides `titorrent status`: every titorrent mount this process sees,
//! with what its daemon reports in the xattr user.titorrent.status on the
//! mount root (a small JSON or TOML document), printed as indented
//! `key: value` lines.

use super::mountinfo;
use super::xattr;
use serde_json::Value;

pub fn status() -> anyhow::Result<()> {
    let mounts = mountinfo::titorrent_mounts()?;
    if mounts.is_empty() {
        println!("no titorrent mounts");
        return Ok(());
    }
    for (i, m) in mounts.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let mp = &m.mount_point;
        println!("{}  ({}, {})", mp.display(), m.source, if m.read_only() { "read-only" } else { "read-write" });
        match xattr::get_string(mp, xattr::STATE_DIR) {
            Ok(Some(s)) => println!("  state: {s}"),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                println!("  status: unavailable: its daemon is gone (clean up with `umount -l {}`)", mp.display());
                continue;
            }
            Err(_) => {}
        }
        match xattr::get_string(mp, xattr::STATUS) {
            Ok(Some(text)) => print!("{}", render(&text)),
            Ok(None) => println!("  status: unavailable (this daemon does not report user.titorrent.status yet)"),
            Err(e) if xattr::unsupported(&e) => {
                println!("  status: unavailable (this daemon does not report user.titorrent.status yet)")
            }
            Err(e) => println!("  status: unavailable ({e})"),
        }
    }
    Ok(())
}

/// The status document as indented lines: JSON, else TOML, else as is.
pub fn render(text: &str) -> String {
    let value = serde_json::from_str::<Value>(text)
        .ok()
        .or_else(|| toml::from_str::<toml::Value>(text).ok().and_then(|v| serde_json::to_value(v).ok()));
    let mut out = String::new();
    match value {
        Some(Value::Object(map)) => {
            for (k, v) in &map {
                item(&mut out, 1, k, v);
            }
        }
        Some(v) => item(&mut out, 1, "status", &v),
        None => {
            // The daemon's own format: `key: value` lines, lists joined by "; ".
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                match l.split_once(": ") {
                    Some((k, v)) if v.contains("; ") => {
                        out.push_str(&format!("  {k}:\n"));
                        for item in v.split("; ") {
                            out.push_str(&format!("    - {item}\n"));
                        }
                    }
                    _ => out.push_str(&format!("  {l}\n")),
                }
            }
        }
    }
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("-".into()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn item(out: &mut String, depth: usize, key: &str, v: &Value) {
    let pad = "  ".repeat(depth);
    let key = key.replace('_', " ");
    if let Some(s) = scalar(v) {
        out.push_str(&format!("{pad}{key}: {s}\n"));
        return;
    }
    match v {
        Value::Array(items) if items.is_empty() => out.push_str(&format!("{pad}{key}: none\n")),
        Value::Array(items) => {
            out.push_str(&format!("{pad}{key}:\n"));
            for it in items {
                match it {
                    Value::Object(map) => {
                        let line: Vec<String> =
                            map.iter().map(|(k, v)| format!("{}: {}", k.replace('_', " "), scalar(v).unwrap_or_else(|| v.to_string()))).collect();
                        out.push_str(&format!("{pad}  - {}\n", line.join(", ")));
                    }
                    other => out.push_str(&format!("{pad}  - {}\n", scalar(other).unwrap_or_else(|| other.to_string()))),
                }
            }
        }
        Value::Object(map) => {
            out.push_str(&format!("{pad}{key}:\n"));
            for (k, v) in map {
                item(out, depth + 1, k, v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_toml_render_as_indented_lines() {
        let j = r#"{"tracker":"online","members_online":["ana","bob"],"locks":[{"path":"/a.txt","holder":"ana","since":"12:00"}],"transfers":[]}"#;
        let out = render(j);
        assert!(out.contains("  tracker: online\n"), "{out}");
        assert!(out.contains("  members online:\n    - ana\n    - bob\n"), "{out}");
        assert!(out.contains("    - holder: ana, path: /a.txt, since: 12:00\n"), "{out}");
        assert!(out.contains("  transfers: none\n"), "{out}");
        let t = render("tracker = \"offline\"\n[cache]\nbytes = 10\n");
        assert!(t.contains("  tracker: offline\n") && t.contains("  cache:\n    bytes: 10\n"), "{t}");
        assert_eq!(render("just words"), "  just words\n");
        let plain = render("tracker: connected\nlocks: /a by ana since 12:00; /b by bob since 12:01\ntransfers: none\n");
        assert_eq!(plain, "  tracker: connected\n  locks:\n    - /a by ana since 12:00\n    - /b by bob since 12:01\n  transfers: none\n");
    }
}

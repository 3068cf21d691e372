//! Provides titorrent(1) and titorrent-tracker(8), rendered as roff from
//! the clap definitions, so that the pages in man/ cannot drift from the
//! flags: `titorrent man --out man` rewrites them and a test fails when the
//! committed pages differ from what this renders.
//!
//! A small renderer of our own rather than clap_mangen: clap_mangen puts
//! each subcommand on its own page, and titorrent(1) documents every
//! command with its flags and examples on one page.

use clap::{Arg, ArgAction, Command, CommandFactory};
use std::fmt::Write as _;
use std::path::Path;

/// (file name, contents) of every generated page.
pub fn pages() -> Vec<(&'static str, String)> {
    vec![("titorrent.1", titorrent_page()), ("titorrent-tracker.8", tracker_page())]
}

/// Writes every generated page into `dir`.
pub fn write_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in pages() {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// The tracker's command line as its binary defines it (tracker/src/main.rs).
pub fn tracker_command() -> Command {
    use clap::Args;
    let cmd = Command::new("titorrent-tracker")
        .version(env!("CARGO_PKG_VERSION"))
        .about("titorrent's tracker manager: group members, file table, locks and event log.");
    titorrent_tracker::server::ServeArgs::augment_args(cmd)
}

/// Escapes text for roff: backslashes, hyphens (so that options are
/// minus signs a reader can copy), and a leading `.` or `'`.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split('\n') {
        if !out.is_empty() {
            out.push('\n');
        }
        let t = line.replace('\\', "\\e").replace('-', "\\-");
        if t.starts_with('.') || t.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&t);
    }
    out
}

fn shown_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
}

fn takes_value(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Set | ArgAction::Append)
}

fn value_name(a: &Arg) -> String {
    a.get_value_names().and_then(|v| v.first()).map(|v| v.to_string()).unwrap_or_else(|| a.get_id().as_str().to_uppercase())
}

/// `\fB\-\-listen\fR \fIADDR\fR`, or `\fIPATH\fR` for a positional.
fn arg_form(a: &Arg) -> String {
    if a.is_positional() {
        return format!("\\fI{}\\fR", esc(&value_name(a)));
    }
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("\\fB\\-{s}\\fR"));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
    }
    let mut f = names.join(", ");
    if takes_value(a) {
        let _ = write!(f, " \\fI{}\\fR", esc(&value_name(a)));
    }
    f
}

fn synopsis(prefix: &str, cmd: &Command) -> String {
    let mut s = format!(".B {}\n", esc(prefix));
    let args: Vec<&Arg> = shown_args(cmd).collect();
    for a in args.iter().filter(|a| a.is_positional()) {
        let form = arg_form(a);
        s.push_str(&if a.is_required_set() { format!("{form}\n") } else { format!("[{form}]\n") });
    }
    for a in args.iter().filter(|a| !a.is_positional() && !a.is_global_set()) {
        let form = arg_form(a);
        s.push_str(&if a.is_required_set() { format!("{form}\n") } else { format!("[{form}]\n") });
    }
    s
}

fn help_text(a: &Arg) -> String {
    let mut h = a.get_long_help().or(a.get_help()).map(|h| h.to_string()).unwrap_or_default();
    let defaults: Vec<String> = a.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    if !defaults.is_empty() && takes_value(a) {
        let _ = write!(h, " [default: {}]", defaults.join(", "));
    }
    if let Some(env) = a.get_env() {
        let _ = write!(h, " [env: {}]", env.to_string_lossy());
    }
    h
}

fn options(cmd: &Command, out: &mut String) {
    for a in shown_args(cmd).filter(|a| !a.is_global_set() || cmd.get_name() == "titorrent") {
        let _ = write!(out, ".TP\n{}\n{}\n", arg_form(a), esc(&help_text(a)));
    }
}

/// `after_help` text as a no-fill block (examples keep their layout).
fn verbatim(text: &str, out: &mut String) {
    out.push_str(".PP\n.nf\n");
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push_str(".sp\n");
        } else {
            out.push_str(&esc(line));
            out.push('\n');
        }
    }
    out.push_str(".fi\n");
}

fn header(name: &str, section: u8, manual: &str, about: &str) -> String {
    format!(
        ".\\\" Generated from the clap definitions by `titorrent man --out man`: do not edit.\n\
.TH {} {section} \"\" \"titorrent {}\" \"{manual}\"\n.SH NAME\n{} \\- {}\n",
        name.to_uppercase().replace('-', "\\-"),
        env!("CARGO_PKG_VERSION"),
        esc(name),
        esc(about.trim_end_matches('.'))
    )
}

fn titorrent_page() -> String {
    let cmd = crate::cli::Cli::command();
    let about = cmd.get_about().map(|s| s.to_string()).unwrap_or_default();
    let mut p = header("titorrent", 1, "User Commands", &about);
    p.push_str(".SH SYNOPSIS\n.B titorrent\n[\\fB\\-\\-config\\fR \\fIPATH\\fR]\n\\fICOMMAND\\fR\n[\\fIOPTIONS\\fR]\n");
    p.push_str(".SH DESCRIPTION\n");
    p.push_str(&esc(&cmd.get_long_about().map(|s| s.to_string()).unwrap_or(about)));
    p.push_str("\n.PP\n");
    p.push_str(&esc(
        "A member's state directory holds its key (member-identity.pem), its membership with the tracker's pinned key \
(member.toml) and its cache, all readable by their owner only (0700/0600); each mount has its own. Every command takes -h or --help. Flags override the configuration file, titorrent.conf(5).",
    ));
    p.push('\n');
    if let Some(after) = cmd.get_after_help() {
        verbatim(&after.to_string(), &mut p);
    }
    p.push_str(".SH GLOBAL OPTIONS\n");
    for a in shown_args(&cmd) {
        let _ = write!(p, ".TP\n{}\n{}\n", arg_form(a), esc(&help_text(a)));
    }
    p.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("titorrent {}", sub.get_name());
        let _ = writeln!(p, ".SS \"{}\"", esc(&name));
        p.push_str(&synopsis(&name, sub));
        p.push_str(".PP\n");
        let text = sub.get_long_about().or(sub.get_about()).map(|s| s.to_string()).unwrap_or_default();
        p.push_str(&esc(&text));
        p.push('\n');
        options(sub, &mut p);
        if let Some(after) = sub.get_after_help() {
            verbatim(&after.to_string(), &mut p);
        }
    }
    p.push_str(TITORRENT_EXTRA);
    p
}

fn tracker_page() -> String {
    let cmd = tracker_command();
    let about = cmd.get_about().map(|s| s.to_string()).unwrap_or_default();
    let mut p = header("titorrent-tracker", 8, "System Administration", &about);
    p.push_str(".SH SYNOPSIS\n");
    p.push_str(&synopsis("titorrent-tracker", &cmd));
    p.push_str(".SH DESCRIPTION\n");
    p.push_str(&esc(TRACKER_DESCRIPTION));
    p.push_str("\n.SH OPTIONS\n");
    options(&cmd, &mut p);
    p.push_str(TRACKER_EXTRA);
    p
}

const TRACKER_DESCRIPTION: &str = "The tracker manager of titorrent groups. It keeps each group's members, \
file table (names, sizes, versions and the torrent of each version), per-file locks and event log in a sled \
database under --data, answers members from memory, and never carries file contents: members exchange those \
over BitTorrent. Once bound it prints one line, titorrent-tracker listening on HOST:PORT, on standard output. \
The same port answers HTTP announces of standard BitTorrent clients (GET /announce/KEY, with a member's announce \
key) from memory: each reply lists the group's online members and the other clients of that torrent, and a client \
that still needs pieces is signalled to the members so that they serve it. \
`titorrent up` runs the same tracker embedded; `titorrent tracker` takes the same options.";

const TITORRENT_EXTRA: &str = r#".SH MOUNTING WITH MOUNT(8)
A mount can also be started by
.BR mount (8)
or an
.BR fstab (5)
line through
.BR mount.titorrent (8):
.PP
.nf
mount \-t titorrent team /mnt/team \-o ro,upload_limit=1M
/var/lib/titorrent/team  /mnt/team  titorrent  noauto,_netdev,listen=0.0.0.0:6881  0 0
.fi
.PP
and stopped with
.BR umount (8);
the daemon then goes offline cleanly.
.SH FILE TYPES
Regular files, directories and symbolic links are shared with the group. A
symbolic link's target is kept in the tracker's file table (up to 4095 bytes)
and is never followed by the daemon: another member reads the same target,
dangling or not. FIFOs, Unix sockets and device nodes made in the mount
(mkfifo, mknod, bind) work there but belong to the member that made them:
the others never list them, and they are gone at the next mount. A device
node is never shared, and the mount is nodev (and nosuid): a device node in
it keeps its number, for tar and backups, but cannot be opened (EACCES). Hard links (ln, link(2)) to regular files and symbolic links are shared too: every
name is the same file on every member (one inode number, st_nlink counting
the names, an edit through one name read through the others), and removing
one name keeps the others. A hard link to a FIFO, socket or device node is
another local name of it. Hard links to directories are refused (EPERM). Setuid, and a file's setgid and sticky bits, are never shared
with the group; the member that sets them keeps them for itself. A
directory's setgid and sticky bits are shared: on every member a setgid
directory gives new entries its group and new subdirectories its setgid
bit.
.SH ENVIRONMENT
.TP
.B TITORRENT_STATE
The state directory, when \-\-state is not given.
.TP
.B TITORRENT_CONFIG
The configuration file, when \-\-config is not given.
.TP
.B RUST_LOG
Log filter of the mount daemon and tracker (default info).
.TP
.B XDG_CONFIG_HOME\fR, \fBXDG_DATA_HOME
Where a user's configuration file and named state directories are (default ~/.config and ~/.local/share).
.SH FILES
.TP
.I /etc/titorrent/config.toml
Configuration for root and system mounts; see
.BR titorrent.conf (5).
.TP
.I ~/.config/titorrent/config.toml
Configuration for other users.
.TP
.I /var/lib/titorrent/NAME
State directory of the share called NAME when mounting as root (~/.local/share/titorrent/NAME otherwise).
.TP
.I STATE/member.toml
This member's tracker address, group and secret (mode 0600).
.TP
.I STATE/cache
Fetched pieces, seeded to the other members.
.TP
.I STATE/mount.log
The daemon's log when started by mount.titorrent.
.SH EXIT STATUS
0 on success, 1 on any error (the reason is one line on standard error, starting with titorrent:), 2 for a
command line clap cannot parse.
.SH SEE ALSO
.BR titorrent\-tracker (8),
.BR mount.titorrent (8),
.BR titorrent.conf (5),
.BR mount (8),
.BR fstab (5)
"#;

const TRACKER_EXTRA: &str = r#".SH SIGNALS
SIGTERM or SIGINT stop the tracker after flushing its database. Members reconnect when it is back and catch up
from the last event they saw.
.SH FILES
.TP
.I DATA/
The sled database given by \-\-data: groups, members (hashed secrets only), files, locks and the event log.
.SH EXAMPLES
.nf
titorrent\-tracker \-\-listen 0.0.0.0:7070 \-\-data /var/lib/titorrent\-tracker
titorrent\-tracker \-\-listen 127.0.0.1:0 \-\-data ./t \-\-lease\-ttl 5
.fi
.SH SEE ALSO
.BR titorrent (1),
.BR mount.titorrent (8),
.BR titorrent.conf (5)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn man_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
    }

    /// The committed pages are what the clap definitions render. With
    /// TITORRENT_BLESS=1 the test rewrites them instead.
    #[test]
    fn committed_pages_match_the_clap_definitions() {
        if std::env::var_os("TITORRENT_BLESS").is_some() {
            write_pages(&man_dir()).unwrap();
        }
        for (name, text) in pages() {
            let path = man_dir().join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "man/{name} is out of date with the clap definitions: run `cargo run -- man --out man` \
                 (or this test with TITORRENT_BLESS=1) and commit the result"
            );
        }
    }

    /// Every flag of every command appears in the committed page.
    #[test]
    fn every_flag_is_in_its_page() {
        let check = |page: &str, cmd: &Command, file: &str| {
            let text = std::fs::read_to_string(man_dir().join(file)).unwrap_or_default();
            let mut cmds = vec![cmd.clone()];
            cmds.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
            for c in &cmds {
                for a in shown_args(c) {
                    if let Some(l) = a.get_long() {
                        let roff = format!("\\fB\\-\\-{}\\fR", l.replace('-', "\\-"));
                        assert!(text.contains(&roff), "{page}: flag --{l} of `{}` is not in man/{file}", c.get_name());
                    }
                }
                if c.get_name() != cmd.get_name() {
                    let heading = format!(".SS \"titorrent {}\"", c.get_name().replace('-', "\\-"));
                    assert!(text.contains(&heading), "{page}: command {} has no section in man/{file}", c.get_name());
                }
            }
        };
        check("titorrent(1)", &crate::cli::Cli::command(), "titorrent.1");
        check("titorrent-tracker(8)", &tracker_command(), "titorrent-tracker.8");
    }

    #[test]
    fn escaping() {
        assert_eq!(esc(".hidden -x a\\b"), "\\&.hidden \\-x a\\eb");
    }
}

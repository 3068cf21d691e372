//! A standard BitTorrent client (libtorrent) given the .torrent that
//! `titorrent export` writes finds the exporting member through the
//! tracker's HTTP announce (an announce URL scoped to that one version and
//! time) and downloads the file from it byte for byte; once the export is
//! revoked, the announce no longer names the member and the member serves
//! nothing. Members' own peer ports are TLS between members' keys and are
//! never announced. An export outlives a restart of the member's daemon
//! (served again on the same port) and of the tracker (the member lists it
//! again when its link comes back): the same .torrent keeps working.

use std::process::Command;
use std::time::Duration;
use titorrent_integration::{assert_same_bytes, scenario, wait_for, Pattern, Peer, TrackerProc};

/// Debian's python3-libtorrent is built for /usr/bin/python3 only.
const PYTHON: &str = "/usr/bin/python3";

/// libtorrent with the torrent at `torrent` (its own announce URL only),
/// saving into `save`, for at most `secs`: `Ok` once it seeds, else what
/// it saw ("found N" peers from the announce, bytes done).
fn fetch_through_announce(torrent: &std::path::Path, save: &std::path::Path, secs: u64) -> Result<String, String> {
    let script = r#"
import libtorrent as lt, sys, time
torrent, save, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
ses = lt.session({'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
                  'enable_upnp': False, 'enable_natpmp': False,
                  'enable_outgoing_utp': False, 'enable_incoming_utp': False})
h = ses.add_torrent({'ti': lt.torrent_info(torrent), 'save_path': save})
deadline = time.time() + secs
found = 0
while not h.status().is_seeding:
    found = max(found, h.status().list_peers)
    if time.time() > deadline:
        print('found %d, %d bytes' % (found, h.status().total_wanted_done))
        sys.exit(3)
    time.sleep(0.2)
print('done', h.status().total_wanted)
"#;
    let out = Command::new(PYTHON).args(["-c", script]).arg(torrent).arg(save).arg(secs.to_string()).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(said) } else { Err(said) }
}

#[test]
fn libtorrent_finds_an_exported_version_through_its_announce_url_and_nothing_once_revoked() {
    let ok = Command::new(PYTHON).args(["-c", "import libtorrent"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "install the Debian package python3-libtorrent (.ci/run does)");
    scenario(Duration::from_secs(180), || {
        let tracker = TrackerProc::start();
        let mut ana = Peer::create_group(&tracker, "ana");
        ana.mount();
        let pattern = Pattern::random("announce");
        let size = 3 * 1024 * 1024 + 17;
        let path = ana.path("notes.bin");
        pattern.write_file(&path, size).unwrap();
        wait_for(Duration::from_secs(30), "the file's info hash xattr", || {
            let out = Command::new("getfattr").args(["--only-values", "-n", "user.titorrent.info_hash"]).arg(&path).output();
            let v = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).map_err(|e| e.to_string())?;
            if v.len() == 40 { Ok(v) } else { Err(format!("{v:?}")) }
        });
        let dir = tempfile::tempdir().unwrap();
        let torrent = dir.path().join("notes.torrent");
        let out = ana.cli(["export".as_ref(), path.as_os_str(), "--ttl".as_ref(), "10m".as_ref(), "--out".as_ref(), torrent.as_os_str()]);
        assert!(out.status.success(), "titorrent export: {}", out.stderr);
        let announce = out.stdout.lines().find_map(|l| l.strip_prefix("announce: ")).expect("an announce URL").to_string();
        assert!(announce.starts_with(&format!("http://{}/announce/", tracker.addr())), "{announce}");
        let bytes = std::fs::read(&torrent).unwrap();
        assert!(bytes.windows(announce.len()).any(|w| w == announce.as_bytes()), "the .torrent carries the announce URL");

        let save = tempfile::tempdir().unwrap();
        let r = fetch_through_announce(&torrent, save.path(), 120);
        assert!(r.is_ok(), "libtorrent could not download through the export's announce: {r:?}");
        let got = std::fs::read(save.path().join("notes.bin")).unwrap();
        assert_same_bytes("libtorrent's copy", &got, &pattern.bytes_at(0, size as usize));

        let out = ana.cli(["export".as_ref(), path.as_os_str(), "--revoke".as_ref()]);
        assert!(out.status.success(), "titorrent export --revoke: {}", out.stderr);
        let after = tempfile::tempdir().unwrap();
        let r = fetch_through_announce(&torrent, after.path(), 10);
        assert_eq!(r, Err("found 0, 0 bytes\n".to_string()), "after --revoke the announce names nobody and nothing is served");
    });
}

/// Writes a file on `ana`, waits for its published version and exports it
/// for ten minutes into `torrent`; returns the file's bytes.
fn export_a_file(ana: &Peer, name: &str, size: u64, torrent: &std::path::Path) -> Vec<u8> {
    let pattern = Pattern::random(name);
    let path = ana.path(name);
    pattern.write_file(&path, size).unwrap();
    wait_for(Duration::from_secs(30), "the file's info hash xattr", || {
        let out = Command::new("getfattr").args(["--only-values", "-n", "user.titorrent.info_hash"]).arg(&path).output();
        let v = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).map_err(|e| e.to_string())?;
        if v.len() == 40 { Ok(v) } else { Err(format!("{v:?}")) }
    });
    let out = ana.cli(["export".as_ref(), path.as_os_str(), "--ttl".as_ref(), "10m".as_ref(), "--out".as_ref(), torrent.as_os_str()]);
    assert!(out.status.success(), "titorrent export: {}", out.stderr);
    pattern.bytes_at(0, size as usize)
}

/// The daemon's export port, as `user.titorrent.export` reports it.
fn export_addr(ana: &Peer, name: &str) -> Option<String> {
    let out = Command::new("getfattr").args(["--only-values", "-n", "user.titorrent.export"]).arg(ana.path(name)).output().ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    v.split_once(' ').map(|(addr, _)| addr.to_string())
}

#[test]
fn an_export_outlives_a_restart_of_the_members_daemon_and_of_the_tracker() {
    let ok = Command::new(PYTHON).args(["-c", "import libtorrent"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "install the Debian package python3-libtorrent (.ci/run does)");
    scenario(Duration::from_secs(240), || {
        let mut tracker = TrackerProc::start();
        let mut ana = Peer::create_group(&tracker, "ana");
        ana.mount();
        let dir = tempfile::tempdir().unwrap();
        let torrent = dir.path().join("kept.torrent");
        let want = export_a_file(&ana, "kept.bin", 2 * 1024 * 1024 + 5, &torrent);
        let before = export_addr(&ana, "kept.bin").expect("exported");

        // The daemon stops and starts again: the export is served again,
        // on the same port, and listed at the tracker again.
        ana.unmount();
        let mark = ana.log_len();
        ana.mount();
        wait_for(Duration::from_secs(30), "ana lists her export at the tracker again", || {
            if ana.log_since(mark).contains("export listed at the tracker again") { Ok(()) } else { Err("not yet".to_string()) }
        });
        assert_eq!(export_addr(&ana, "kept.bin").as_deref(), Some(before.as_str()), "the same export port after the restart");
        let save = tempfile::tempdir().unwrap();
        let r = fetch_through_announce(&torrent, save.path(), 120);
        assert!(r.is_ok(), "libtorrent could not download after ana's daemon restarted: {r:?}");
        assert_same_bytes("libtorrent's copy", &std::fs::read(save.path().join("kept.bin")).unwrap(), &want);

        // The tracker is killed and started again: its list of exporters
        // is gone until ana's link comes back and lists the export again.
        let mark = ana.log_len();
        tracker.restart();
        wait_for(Duration::from_secs(60), "ana lists her export at the new tracker", || {
            if ana.log_since(mark).contains("export listed at the tracker again") { Ok(()) } else { Err("not yet".to_string()) }
        });
        let save = tempfile::tempdir().unwrap();
        let r = fetch_through_announce(&torrent, save.path(), 120);
        assert!(r.is_ok(), "libtorrent could not download after the tracker restarted: {r:?}");
        assert_same_bytes("libtorrent's copy", &std::fs::read(save.path().join("kept.bin")).unwrap(), &want);
    });
}

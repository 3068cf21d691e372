//! Standard BitTorrent clients and titorrent's edit torrents: transmission
//! reads the .torrent a member published, and libtorrent (a different
//! engine from librqbit) downloads the file from that member byte for byte.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use titorrent_integration::{assert_same_bytes, scenario, wait_for, Pattern, Peer, TrackerProc};

/// Debian's python3-libtorrent is built for /usr/bin/python3 only.
const PYTHON: &str = "/usr/bin/python3";

fn require(cmd: &str, probe: &[&str], package: &str) {
    let ok = Command::new(cmd).args(probe).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "{cmd} {probe:?} failed: install the Debian package {package} (.ci/run does)");
}

fn published_torrent(peer: &Peer, name: &str) -> (String, PathBuf) {
    let ih = wait_for(Duration::from_secs(30), "the file's info hash xattr", || {
        let out = Command::new("getfattr")
            .args(["--only-values", "-n", "user.titorrent.info_hash"])
            .arg(peer.path(name))
            .output()
            .map_err(|e| e.to_string())?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if v.len() == 40 { Ok(v) } else { Err(format!("{v:?}")) }
    });
    let t = peer.state_dir().join("torrents").join(format!("{ih}.torrent"));
    assert!(t.exists(), "{} missing", t.display());
    (ih, t)
}

#[test]
fn transmission_reads_an_edit_torrent() {
    require("transmission-show", &["--version"], "transmission-cli");
    scenario(Duration::from_secs(120), || {
        let tracker = TrackerProc::start();
        let mut ana = Peer::create_group(&tracker, "ana");
        ana.mount();
        // An exact multiple of the piece length: the case librqbit's own
        // create_torrent gets wrong.
        let size = 4 * 256 * 1024;
        Pattern::random("interop").write_file(&ana.path("exact.bin"), size).unwrap();
        let (ih, torrent) = published_torrent(&ana, "exact.bin");
        let out = Command::new("transmission-show").arg(&torrent).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "transmission-show failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&format!("Hash: {ih}")), "{text}");
        assert!(text.contains("Name: exact.bin"), "{text}");
        assert!(text.contains("Piece Count: 4"), "{text}");
        assert!(text.contains("Private torrent"), "{text}");
    });
}

/// libtorrent (a different engine from librqbit) fetching `torrent` from
/// `addr` into `save`, giving up after `secs`: its output, or why not.
fn libtorrent_fetch(torrent: &std::path::Path, save: &std::path::Path, addr: &str, secs: u64) -> Result<String, String> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = r#"
import libtorrent as lt, sys, time
torrent, save, host, port, secs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
# Members listen on TCP (not uTP): a libtorrent that tries uTP first
# would spend the deadline on uTP timeouts to a manually added peer.
ses = lt.session({'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
                  'enable_upnp': False, 'enable_natpmp': False,
                  'enable_outgoing_utp': False, 'enable_incoming_utp': False})
h = ses.add_torrent({'ti': lt.torrent_info(torrent), 'save_path': save})
deadline = time.time() + secs
while not h.status().is_seeding:
    if time.time() > deadline:
        sys.exit('timed out: %s, %d bytes' % (h.status().state, h.status().total_wanted_done))
    if h.status().num_peers == 0:
        h.connect_peer((host, port))
    time.sleep(0.2)
print('done', h.status().total_wanted)
"#;
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .arg(torrent)
        .arg(save)
        .args([host, port, &secs.to_string()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(text) }
}

/// Members' links are TLS between members' keys: a standard client gets
/// nothing from a member's peer port, and a version only once it is
/// exported (`titorrent export`), until the export is revoked.
#[test]
fn libtorrent_downloads_from_a_member_only_what_it_exported() {
    require(PYTHON, &["-c", "import libtorrent"], "python3-libtorrent");
    scenario(Duration::from_secs(180), || {
        let tracker = TrackerProc::start();
        let mut ana = Peer::create_group(&tracker, "ana");
        ana.mount();
        let pattern = Pattern::random("libtorrent");
        let size = 5 * 1024 * 1024 + 123;
        pattern.write_file(&ana.path("report.pdf"), size).unwrap();
        let (_ih, torrent) = published_torrent(&ana, "report.pdf");
        let peer_port = wait_for(Duration::from_secs(30), "ana's peer address", || {
            ana.members()
                .into_iter()
                .find(|m| m.name == "ana" && m.online && m.addr.contains(':'))
                .map(|m| m.addr)
                .ok_or_else(|| "not listed yet".to_string())
        });

        let refused = tempfile::tempdir().unwrap();
        let r = libtorrent_fetch(&torrent, refused.path(), &peer_port, 8);
        assert!(r.is_err(), "libtorrent downloaded from a member's TLS peer port: {r:?}");

        let path = ana.path("report.pdf");
        let out = ana.cli(["export".as_ref(), path.as_os_str(), "--ttl".as_ref(), "10m".as_ref()]);
        assert!(out.status.success(), "titorrent export: {}", out.stderr);
        let export = out
            .stdout
            .lines()
            .find_map(|l| l.split("x.pe=").nth(1))
            .unwrap_or_else(|| panic!("no magnet with x.pe in {:?}", out.stdout))
            .trim()
            .to_string();
        assert_ne!(export, peer_port, "exports have a port of their own");
        let save = tempfile::tempdir().unwrap();
        let r = libtorrent_fetch(&torrent, save.path(), &export, 120);
        assert!(r.is_ok(), "libtorrent could not download the exported version: {r:?}");
        let got = std::fs::read(save.path().join("report.pdf")).unwrap();
        assert_same_bytes("libtorrent's copy", &got, &pattern.bytes_at(0, size as usize));

        let out = ana.cli(["export".as_ref(), path.as_os_str(), "--revoke".as_ref()]);
        assert!(out.status.success(), "titorrent export --revoke: {}", out.stderr);
        let after = tempfile::tempdir().unwrap();
        let r = libtorrent_fetch(&torrent, after.path(), &export, 8);
        assert!(r.is_err(), "libtorrent downloaded after the export was revoked: {r:?}");
    });
}

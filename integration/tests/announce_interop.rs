//! A standard BitTorrent client (libtorrent) given a member's published
//! .torrent and the group's announce URL finds the member through the
//! tracker's HTTP announce and downloads the file from it: no peer given
//! by hand.

use std::process::Command;
use std::time::Duration;
use titorrent_integration::raw::RawConn;
use titorrent_integration::{assert_same_bytes, scenario, wait_for, Pattern, Peer, TrackerProc};
use titorrent_tracker::proto::{GroupId, MemberId, Request, Response};
use titorrent_tracker::tls::Identity;

/// Debian's python3-libtorrent is built for /usr/bin/python3 only.
const PYTHON: &str = "/usr/bin/python3";

/// `key = value` of a flat TOML file (member.toml).
fn toml_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == key).map(|(_, v)| v.trim().trim_matches('"').to_string()))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn libtorrent_finds_a_member_through_the_announce_url() {
    let ok = Command::new(PYTHON).args(["-c", "import libtorrent"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "install the Debian package python3-libtorrent (.ci/run does)");
    scenario(Duration::from_secs(180), || {
        let tracker = TrackerProc::start();
        let mut ana = Peer::create_group(&tracker, "ana");
        ana.mount();
        let pattern = Pattern::random("announce");
        let size = 3 * 1024 * 1024 + 17;
        pattern.write_file(&ana.path("notes.bin"), size).unwrap();
        let ih = wait_for(Duration::from_secs(30), "the file's info hash xattr", || {
            let out = Command::new("getfattr")
                .args(["--only-values", "-n", "user.titorrent.info_hash"])
                .arg(ana.path("notes.bin"))
                .output()
                .map_err(|e| e.to_string())?;
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if v.len() == 40 { Ok(v) } else { Err(format!("{v:?}")) }
        });
        let torrent = ana.state_dir().join("torrents").join(format!("{ih}.torrent"));
        // Ana's announce key, asked over the binary protocol with her key.
        let m = std::fs::read_to_string(ana.state_dir().join("member.toml")).unwrap();
        let group = GroupId(toml_value(&m, "group").parse().unwrap());
        let member = MemberId(toml_value(&m, "member").parse().unwrap());
        let key = Identity::load(&ana.state_dir().join("member-identity.pem")).unwrap();
        let mut c = RawConn::connect_as(tracker.addr(), std::sync::Arc::new(key));
        c.hello();
        assert!(matches!(c.request(1, Request::Authenticate { group, member, peer_addr: None }), Response::Authenticated { .. }));
        let Response::AnnounceKey { key } = c.request(2, Request::AnnounceKey) else { panic!() };
        let url = format!("http://{}/announce/{key}", tracker.addr());
        let save = tempfile::tempdir().unwrap();
        let script = r#"
import libtorrent as lt, sys, time
torrent, save, url = sys.argv[1], sys.argv[2], sys.argv[3]
ses = lt.session({'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
                  'enable_upnp': False, 'enable_natpmp': False,
                  'enable_outgoing_utp': False, 'enable_incoming_utp': False})
h = ses.add_torrent({'ti': lt.torrent_info(torrent), 'save_path': save, 'trackers': [url]})
deadline = time.time() + 120
while not h.status().is_seeding:
    if time.time() > deadline:
        sys.exit('timed out: %s, trackers %s' % (h.status().state, h.trackers()))
    time.sleep(0.2)
print('done', h.status().total_wanted)
"#;
        let out = Command::new(PYTHON).args(["-c", script]).arg(&torrent).arg(save.path()).arg(&url).output().unwrap();
        assert!(
            out.status.success(),
            "libtorrent could not download through the announce: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let got = std::fs::read(save.path().join("notes.bin")).unwrap();
        assert_same_bytes("libtorrent's copy", &got, &pattern.bytes_at(0, size as usize));
    });
}

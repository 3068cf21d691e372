//! What an outsider gets from a group's members, tried as an attacker
//! would: real daemons, each member in its own network namespace on a
//! bridge the test makes, the outsider on that bridge.
//!
//! - A plain BitTorrent handshake naming a real info hash of the group, to
//!   every TCP port a member listens on, gets no BitTorrent byte back.
//! - A TLS client with a key of its own (not a member's) gets nothing
//!   either; the same client with a member's key is served (so the knock
//!   would see a leak).
//! - A member the owner removes is refused by the tracker and by the other
//!   members within 5 s, and the links it had open are cut.
//! - A capture of the wire while one member writes a file and another
//!   reads it holds no byte of the file, its name, its info hash, or any
//!   member's private key.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use titorrent_integration::bench::measure;
use titorrent_integration::bench::member::{Member, DEFAULTS};
use titorrent_integration::bench::netns::{self, Lab, NsTracker, BRIDGE_IP};
use titorrent_integration::{assert_same_bytes, require_fuse, wait_for, wait_until};
use titorrent_tracker::tls::{ClientTls, Identity};

const PSTR: &[u8] = b"BitTorrent protocol";

/// A group of two members in their own namespaces, with a file the author
/// wrote and the reader has read.
struct Group {
    lab: Lab,
    _tracker: NsTracker,
    author: Member,
    reader: Member,
}

fn group() -> Group {
    group_with_uplinks(200 << 20)
}

/// The same, each member's uplink limited to `uplink` bytes per second.
fn group_with_uplinks(uplink: u64) -> Group {
    require_fuse();
    let lab = Lab::new(2, uplink).expect("network namespaces (ip netns; run as root)");
    let tracker = NsTracker::start(&lab.bridge_ns, BRIDGE_IP).expect("tracker manager in the bridge namespace");
    let (ns, ip) = lab.members[0].clone();
    let mut author = Member::create_group("author", Some(&ns), ip.into(), tracker.addr, &tracker.admin_token, DEFAULTS).expect("create the group");
    author.mount().expect("author's mount");
    let invite = author.invite().expect("invite");
    let (ns, ip) = lab.members[1].clone();
    let mut reader = Member::join("reader", Some(&ns), ip.into(), &invite, DEFAULTS).expect("join");
    reader.mount().expect("reader's mount");
    Group { lab, _tracker: tracker, author, reader }
}

impl Group {
    /// The author writes `data` as `name`; the reader reads it back whole.
    fn share(&self, name: &str, data: &[u8]) -> [u8; 20] {
        std::fs::write(self.author.path(name), data).expect("write through the author's mount");
        let hex = wait_for(Duration::from_secs(30), "the author publishes it", || {
            measure::info_hash(&self.author.path(name)).ok_or_else(|| "no info hash yet".to_string())
        });
        wait_until(Duration::from_secs(30), "the reader sees it", || {
            measure::info_hash(&self.reader.path(name)).as_deref() == Some(hex.as_str())
        });
        let got = std::fs::read(self.reader.path(name)).expect("the reader reads it");
        assert_same_bytes("the reader's copy", &got, data);
        let mut ih = [0u8; 20];
        hex::decode_to_slice(&hex, &mut ih).expect("hex info hash");
        ih
    }
}

fn handshake(ih: &[u8; 20]) -> Vec<u8> {
    let mut h = vec![PSTR.len() as u8];
    h.extend_from_slice(PSTR);
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(ih);
    h.extend_from_slice(b"-OU0001-outsider0000");
    h
}

/// Everything `s` says until it closes or is silent for its read timeout.
fn drain(s: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok(s)
}

/// What a plain BitTorrent client gets from `addr`: `None` if the port
/// cannot be reached, else every byte it answered.
fn knock_plain(addr: SocketAddr, ih: [u8; 20]) -> Option<Vec<u8>> {
    let mut s = connect(addr).ok()?;
    let _ = s.write_all(&handshake(&ih));
    Some(drain(&mut s))
}

/// What a TLS client holding `identity` gets after sending a BitTorrent
/// handshake inside TLS: `Err` if the TLS session failed.
fn knock_tls(addr: SocketAddr, identity: Identity, ih: [u8; 20]) -> Result<Vec<u8>, String> {
    let tcp = connect(addr).map_err(|e| e.to_string())?;
    let tls = ClientTls { identity: Arc::new(identity), pin: None };
    let (mut s, _) = tls.connect_blocking(&addr.to_string(), tcp).map_err(|e| e.to_string())?;
    s.write_all(&handshake(&ih)).map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())?;
    let got = drain(&mut s);
    Ok(got)
}

/// The peer address `titorrent members` lists for `name`.
fn peer_addr_of(m: &Member, name: &str) -> SocketAddr {
    let out = m.titorrent(&["members"]).expect("titorrent members");
    let line = out.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name} in {out:?}"));
    let addr = line.split_whitespace().nth(2).unwrap_or_default();
    addr.parse().unwrap_or_else(|_| panic!("{name}'s peer address in {line:?}"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_outsider_gets_no_bittorrent_byte_from_any_port_a_member_listens_on() {
    let g = group();
    let mut data = vec![0u8; 3 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let ih = g.share("private.bin", &data);

    let (author_ns, author_ip) = g.lab.members[0].clone();
    let listeners = netns::tcp_listeners(&author_ns).expect("the author's listening ports");
    assert!(listeners.len() >= 2, "the author's daemon listens (peer port, loopback doors): {listeners:?}");
    let bridge = g.lab.bridge_ns.clone();
    let targets: Vec<SocketAddr> = listeners.iter().map(|l| SocketAddr::new(author_ip.into(), l.port())).collect();
    let answers = netns::in_ns(&bridge, move || {
        targets.iter().map(|a| (*a, knock_plain(*a, ih))).collect::<Vec<_>>()
    })
    .expect("outsider on the bridge");
    let mut reached = 0;
    for (addr, got) in &answers {
        let Some(got) = got else { continue };
        reached += 1;
        assert!(!contains(got, PSTR) && !contains(got, &ih), "{addr} answered a BitTorrent handshake to an outsider: {got:02x?}");
        assert!(got.len() < 64, "{addr} sent an outsider {} bytes", got.len());
    }
    assert!(reached >= 1, "the author's peer port is reachable from the bridge: {answers:?}");

    // A TLS client with a key of its own: refused in the handshake. With
    // the reader's key, the same client is served: the door is the key.
    // The peer port is the one the tracker lists (the export door listens
    // on the same address, so ss alone cannot tell them apart).
    let door = peer_addr_of(&g.author, "author");
    assert!(listeners.iter().any(|l| l.port() == door.port()), "the listed peer port {door} is one the author listens on: {listeners:?}");
    let reader_key = Identity::load(&g.reader.state_dir().join("member-identity.pem")).expect("the reader's key");
    let (stranger, member) = netns::in_ns(&bridge, move || {
        (knock_tls(door, Identity::generate().unwrap(), ih), knock_tls(door, reader_key, ih))
    })
    .expect("outsider on the bridge");
    match stranger {
        Err(_) => {}
        Ok(got) => assert!(got.is_empty(), "a stranger's key got {} bytes over TLS: {got:02x?}", got.len()),
    }
    let member = member.expect("a member's key gets a TLS session");
    assert!(contains(&member, PSTR) && contains(&member, &ih), "a member's key is served BitTorrent: {member:02x?}");
}

/// tcpdump on the bridge, writing every packet to a file.
struct Capture {
    child: Child,
    file: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    fn start(ns: &str) -> Capture {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wire.pcap");
        let err = dir.path().join("tcpdump.stderr");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", "br0", "-U", "-B", "16384", "-s", "0", "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("tcpdump (apt-get install tcpdump)");
        wait_until(Duration::from_secs(10), "tcpdump listens", || {
            std::fs::read_to_string(&err).is_ok_and(|e| e.contains("listening on"))
        });
        Capture { child, file, err, _dir: dir }
    }

    /// Stops tcpdump once the capture holds at least `bytes` (packets are
    /// written a moment after they cross); returns the capture and what
    /// tcpdump said about it.
    fn stop_after(mut self, bytes: usize) -> (Vec<u8>, String) {
        let size = || std::fs::metadata(&self.file).map_or(0, |m| m.len() as usize);
        let _ = titorrent_integration::bench::measure::poll(Duration::from_secs(10), Duration::from_millis(50), || (size() > bytes).then_some(()));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        (std::fs::read(&self.file).expect("the capture file"), std::fs::read_to_string(&self.err).unwrap_or_default())
    }
}

/// The 32-byte EC private scalar of a member's PKCS#8 key (ECPrivateKey's
/// `privateKey OCTET STRING`, after `version INTEGER 1`).
fn private_scalar(pem_file: &Path) -> Vec<u8> {
    let text = std::fs::read(pem_file).expect("identity file");
    let der = PrivatePkcs8KeyDer::from_pem_slice(&text).expect("a PKCS#8 key");
    let der = der.secret_pkcs8_der();
    let at = der.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("an EC private key");
    der[at + 5..at + 5 + 32].to_vec()
}

#[test]
fn a_capture_of_the_wire_holds_no_file_byte_no_name_no_info_hash_and_no_key() {
    let g = group();
    let capture = Capture::start(&g.lab.bridge_ns);
    let mut marker = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut marker);
    let mut data = vec![0u8; 2 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    for chunk in data.chunks_mut(64 << 10) {
        chunk[..marker.len()].copy_from_slice(&marker);
    }
    let name = format!("secret-{}.bin", hex::encode(&marker[..6]));
    let ih = g.share(&name, &data);
    let (wire, said) = capture.stop_after(data.len());

    assert!(wire.len() > data.len(), "the capture saw the file cross the wire: {} bytes captured; tcpdump: {said}", wire.len());
    assert!(!contains(&wire, &marker), "the file's bytes are on the wire in clear");
    assert!(!contains(&wire, name.as_bytes()), "the file's name is on the wire in clear");
    assert!(!contains(&wire, &ih), "the info hash is on the wire in clear");
    assert!(!contains(&wire, hex::encode(ih).as_bytes()), "the info hash (hex) is on the wire in clear");
    assert!(!contains(&wire, PSTR), "a BitTorrent handshake is on the wire in clear");
    for m in [&g.author, &g.reader] {
        let key = private_scalar(&m.state_dir().join("member-identity.pem"));
        assert!(!contains(&wire, &key), "{}'s private key is on the wire", m.name);
    }
}

/// Established TCP connections in `ns` with `peer` at either end.
fn connections_with(ns: &str, peer: SocketAddr) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "exec", ns, "ss", "-Htn", "state", "established"]).output().expect("ss");
    let p = peer.to_string();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.split_whitespace().any(|w| w == p)).map(str::to_string).collect()
}

#[test]
fn a_removed_member_is_refused_by_the_tracker_and_cut_off_by_every_member_within_5_s() {
    // The author's uplink is slow, so the reader's fetch is still running
    // (its link open) when it is removed.
    let g = group_with_uplinks(1 << 20);
    let data = vec![0x5a; 24 << 20];
    std::fs::write(g.author.path("big.bin"), &data).expect("write through the author's mount");
    wait_until(Duration::from_secs(30), "the reader sees it", || measure::info_hash(&g.reader.path("big.bin")).is_some());
    let path = g.reader.path("big.bin");
    let _reading = std::thread::spawn(move || std::fs::read(path));
    wait_until(Duration::from_secs(30), "the reader fetches", || measure::bytes_local(&g.reader.path("big.bin")) > 0);

    let (reader_ns, _) = g.lab.members[1].clone();
    let door = peer_addr_of(&g.author, "author");
    assert!(!connections_with(&reader_ns, door).is_empty(), "the reader has a link open to the author's peer port");
    let mut ih = [0u8; 20];
    hex::decode_to_slice(measure::info_hash(&g.author.path("big.bin")).unwrap(), &mut ih).unwrap();
    let key = g.reader.state_dir().join("member-identity.pem");
    let knock = |key: &Path| {
        let id = Identity::load(key).expect("the reader's key");
        netns::in_ns(&g.lab.bridge_ns, move || knock_tls(door, id, ih)).expect("bridge")
    };
    let served = knock(&key).expect("a member's key gets a TLS session");
    assert!(contains(&served, PSTR), "the reader's key is served while it is a member");

    g.author.titorrent(&["remove", "reader"]).expect("the owner removes the reader");
    let removed = Instant::now();
    wait_for(Duration::from_secs(5), "the reader's links to the author are cut", || {
        let open = connections_with(&reader_ns, door);
        if open.is_empty() { Ok(()) } else { Err(format!("still open: {open:?}")) }
    });
    wait_for(Duration::from_secs(5), "the author refuses the reader's key", || {
        match knock(&key) {
            Err(_) => Ok(()),
            Ok(b) if b.is_empty() => Ok(()),
            Ok(b) => Err(format!("served {} bytes", b.len())),
        }
    });
    let refused = g.reader.titorrent(&["members"]);
    assert!(refused.is_err(), "the tracker still answers the removed reader: {refused:?}");
    assert!(removed.elapsed() < Duration::from_secs(5), "cut off in {:?}", removed.elapsed());
}

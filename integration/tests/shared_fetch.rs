//! Members that fetch a new version at the same time trade its pieces
//! instead of each taking all of it from its author: real mounts, each
//! member in its own network namespace behind an uplink shaped with tbf,
//! the author's uplink counted by its qdisc.

use std::time::Duration;
use titorrent_integration::bench::measure::{self, MIB};
use titorrent_integration::bench::member::{Member, DEFAULTS};
use titorrent_integration::bench::netns::{self, Lab, NsTracker, BRIDGE_IP};
use titorrent_integration::{require_fuse, wait_for, wait_until, Pattern};

const NAME: &str = "shared.bin";

#[test]
fn members_fetching_together_trade_pieces() {
    require_fuse();
    let (fetchers, size, uplink) = (3usize, 24 * MIB, 4 * MIB);
    let lab = Lab::new(fetchers + 1, uplink).expect("network namespaces with tbf (ip netns, tc; run as root)");
    let tracker = NsTracker::start(&lab.bridge_ns, BRIDGE_IP).expect("tracker manager in the bridge namespace");
    let (author_ns, author_ip) = lab.members[0].clone();
    let mut author = Member::create_group("author", Some(&author_ns), author_ip.into(), tracker.addr, &tracker.admin_token, DEFAULTS).expect("author's group");
    author.mount().expect("author's mount");
    let mut members = Vec::new();
    for (i, (ns, ip)) in lab.members[1..].iter().enumerate() {
        let invite = author.invite().expect("invite");
        let mut m = Member::join(&format!("member{}", i + 1), Some(ns), (*ip).into(), &invite, DEFAULTS).expect("join");
        m.mount().expect("member's mount");
        members.push(m);
    }

    let pattern = Pattern::new(0x5ea4ed);
    let path = author.path(NAME);
    pattern.write_file(&path, size).expect("write through the author's mount");
    wait_until(Duration::from_secs(60), "the author publishes it", || {
        measure::info_hash(&path).is_some() && measure::bytes_local(&path) == size
    });
    for m in &members {
        wait_until(Duration::from_secs(30), &format!("{} sees it", m.name), || measure::info_hash(&m.path(NAME)).is_some());
    }
    let sent = || -> Vec<u64> { lab.members.iter().map(|(ns, _)| netns::uplink(ns).expect("uplink counters").sent_bytes).collect() };
    let before = sent();

    // All of them ask for all of it at once (`titorrent pin`).
    for m in &members {
        measure::setxattr(&m.path(NAME), measure::XATTR_PIN, b"1").expect("pin");
    }
    for m in &members {
        wait_for(Duration::from_secs(120), &format!("{} has all of it", m.name), || {
            let have = measure::bytes_local(&m.path(NAME));
            if have == size { Ok(()) } else { Err(format!("{have} of {size} bytes local")) }
        });
    }
    for m in &members {
        let got = std::fs::read(m.path(NAME)).expect("read the fetched file");
        titorrent_integration::assert_same_bytes(&format!("{}'s copy", m.name), &got, &pattern.bytes_at(0, size as usize));
    }

    // Every member needed the whole file. Had each taken it from the author
    // alone, the author's uplink would have carried it three times and the
    // members' nothing: what the members sent each other is what they
    // traded.
    let sent: Vec<u64> = sent().iter().zip(&before).map(|(a, b)| a - b).collect();
    let (by_author, by_members) = (sent[0], sent[1..].iter().sum::<u64>());
    let report = format!(
        "the author sent {} MiB, the members {}, for {fetchers} members fetching a {} MiB file together",
        by_author / MIB,
        sent[1..].iter().map(|b| format!("{} MiB", b / MIB)).collect::<Vec<_>>().join(", "),
        size / MIB
    );
    assert!(by_members >= size, "the members traded less than the file's size: {report}");
    assert!(by_author < size * fetchers as u64 * 3 / 4, "the author served nearly every copy itself: {report}");
    eprintln!("{report}");
}

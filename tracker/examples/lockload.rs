//! Load generator for profiling the tracker: N blocking clients, each
//! locking and unlocking a file of its own over one TLS connection, one
//! request in flight (what `titorrent-bench --only P4` measures).
//! `cargo run --release -p titorrent-tracker --example lockload -- ADDR ADMIN-TOKEN-FILE [CLIENTS] [SECS]`

use std::io::{Read, Write};
use std::net::TcpStream;
use titorrent_tracker::tls::{ClientTls, Identity};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use titorrent_tracker::proto::*;

struct C {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    id: u64,
}

impl C {
    fn connect(addr: &str) -> C {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        let tls = ClientTls { identity: Arc::new(Identity::generate().unwrap()), pin: None };
        let (s, _) = tls.connect_blocking(addr, s).expect("TLS");
        let mut c = C { s, id: 0 };
        c.send(&ClientFrame::Hello { version: PROTOCOL_VERSION });
        assert!(matches!(c.recv(), ServerFrame::Hello { .. }));
        c
    }
    fn send(&mut self, f: &ClientFrame) {
        self.s.write_all(&encode_frame(f).unwrap()).unwrap();
        self.s.flush().unwrap();
    }
    fn recv(&mut self) -> ServerFrame {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).unwrap();
        decode_body(&body).unwrap()
    }
    fn req(&mut self, req: Request) -> Response {
        self.id += 1;
        self.send(&ClientFrame::Request { id: self.id, req });
        loop {
            if let ServerFrame::Response { resp, .. } = self.recv() {
                return resp;
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).expect("ADDR").clone();
    let admin_token = std::fs::read_to_string(args.get(2).expect("ADMIN-TOKEN-FILE")).expect("admin token").trim().to_string();
    let n: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(8);
    let secs: u64 = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(10);
    let mut first = C::connect(&addr);
    let Response::Created { group, .. } =
        first.req(Request::CreateGroup { admin_token, group_name: "load".into(), member_name: "c0".into(), peer_addr: None })
    else {
        panic!()
    };
    let Response::Invite { code, .. } = first.req(Request::CreateInvite { ttl_ms: 0, uses: n as u32 }) else { panic!() };
    let mut cs = vec![first];
    for i in 1..n {
        let mut c = C::connect(&addr);
        let r = c.req(Request::Join { group, invite: code.clone(), member_name: format!("c{i}"), peer_addr: None });
        assert!(matches!(r, Response::Joined { .. }), "{r:?}");
        cs.push(c);
    }
    let b = Arc::new(Barrier::new(n + 1));
    let ts: Vec<_> = cs
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let b = b.clone();
            std::thread::spawn(move || {
                let Response::File { entry, .. } = c.req(Request::CreateFile {
                    parent: FileId::ROOT,
                    name: format!("f{i}"),
                    kind: FileKind::File,
                    mode: 0o644,
                    lock: false,
                    owner: Default::default(),
                }) else {
                    panic!()
                };
                b.wait();
                let end = Instant::now() + Duration::from_secs(secs);
                let mut pairs = 0u64;
                while Instant::now() < end {
                    let Response::Locked(l) = c.req(Request::Lock { file: entry.id }) else { panic!() };
                    assert_eq!(c.req(Request::Unlock { lease: l.id }), Response::Ok);
                    pairs += 1;
                }
                pairs
            })
        })
        .collect();
    b.wait();
    let t = Instant::now();
    let total: u64 = ts.into_iter().map(|t| t.join().unwrap()).sum();
    println!("{n} clients: {total} pairs in {:.2?} = {:.0} pairs/s", t.elapsed(), total as f64 / t.elapsed().as_secs_f64());
}

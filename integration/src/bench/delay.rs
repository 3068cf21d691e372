//! A TCP proxy on 127.0.0.1 that delivers every chunk it reads a fixed
//! time after reading it, in order, both ways: a round trip added to one
//! link (the members' tracker link in P12) where netem is not available.
//! The tracker link is TLS pinned by the tracker's key fingerprint, so a
//! byte pipe in the middle changes nothing but the timing.

use anyhow::Context;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Listens on 127.0.0.1:0; each connection accepted is dialled through to
/// `upstream`, and each chunk read from either side is written to the
/// other `one_way` after it was read. Dropping it closes every connection.
pub struct DelayProxy {
    addr: SocketAddr,
    one_way: Duration,
    stop: Arc<AtomicBool>,
    /// Both ends of every connection, to shut down on drop.
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl DelayProxy {
    pub fn start(upstream: SocketAddr, one_way: Duration) -> anyhow::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the delaying proxy")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let (s, o, n) = (stop.clone(), open.clone(), accepted.clone());
        let thread = std::thread::Builder::new().name("delay-proxy".into()).spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                n.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = splice(client, server, one_way, &o) {
                    eprintln!("  delay proxy: cannot forward a connection: {e}");
                }
            }
        })?;
        Ok(DelayProxy { addr, one_way, stop, open, accepted, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn one_way(&self) -> Duration {
        self.one_way
    }

    /// Connections accepted (and dialled through) so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in self.open.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Forwards `a` ⇄ `b` on threads of their own, each direction delayed.
fn splice(a: TcpStream, b: TcpStream, delay: Duration, open: &Mutex<Vec<TcpStream>>) -> std::io::Result<()> {
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    {
        let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
        o.retain(|s| s.peer_addr().is_ok());
        o.push(a.try_clone()?);
        o.push(b.try_clone()?);
    }
    let (a2, b2) = (a.try_clone()?, b.try_clone()?);
    std::thread::Builder::new().name("delay-up".into()).spawn(move || pump(a, b, delay))?;
    std::thread::Builder::new().name("delay-down".into()).spawn(move || pump(b2, a2, delay))?;
    Ok(())
}

/// Reads `from` until it ends; a writer thread writes each chunk to `to`
/// once `delay` has passed since it was read, then half-closes `to`. A
/// failed write closes both sockets, which ends the other direction too.
fn pump(mut from: TcpStream, to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    let from_clone = from.try_clone();
    let writer = std::thread::Builder::new().name("delay-write".into()).spawn(move || {
        let mut to = to;
        for (due, chunk) in rx {
            // The delay itself: this chunk is due `delay` after it was read.
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).is_err() {
                        break;
                    }
                }
                None => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        if let Ok(f) = &from_clone {
            let _ = f.shutdown(Shutdown::Both);
        }
    });
    let Ok(writer) = writer else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send((Instant::now() + delay, None));
                break;
            }
            Ok(n) => {
                if tx.send((Instant::now() + delay, Some(buf[..n].to_vec()))).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = tx.send((Instant::now() + delay, None));
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

/// Round trips of one byte to an echo server on 127.0.0.1, `rounds` of
/// them directly and `rounds` through a [`DelayProxy`] of `one_way`:
/// (direct, through the proxy), each sorted.
pub fn ping_pong(one_way: Duration, rounds: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let echo = TcpListener::bind("127.0.0.1:0").context("bind the echo server")?;
    let echo_addr = echo.local_addr()?;
    let server = std::thread::spawn(move || {
        // One connection direct, one through the proxy.
        for conn in echo.incoming().take(2) {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let _ = c.set_nodelay(true);
                let mut b = [0u8; 1];
                while matches!(c.read(&mut b), Ok(1)) {
                    if c.write_all(&b).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = DelayProxy::start(echo_addr, one_way)?;
    let time = |addr: SocketAddr| -> anyhow::Result<Vec<Duration>> {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut v = Vec::with_capacity(rounds);
        let mut b = [0u8; 1];
        for i in 0..rounds {
            let t = Instant::now();
            c.write_all(&[i as u8])?;
            c.read_exact(&mut b)?;
            v.push(t.elapsed());
        }
        v.sort();
        Ok(v)
    };
    let direct = time(echo_addr)?;
    let via = time(proxy.addr())?;
    drop(proxy);
    let _ = server.join();
    Ok((direct, via))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_through_the_proxy_takes_at_least_twice_its_delay() {
        let (direct, via) = ping_pong(Duration::from_millis(10), 5).unwrap();
        // What the proxy is for: no round trip through it is shorter than
        // its two delays (how much longer depends on the machine's load).
        assert!(via[0] >= Duration::from_millis(20), "{via:?}");
        assert_eq!(direct.len(), via.len());
    }
}

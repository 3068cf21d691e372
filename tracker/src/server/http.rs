//! The HTTP announce endpoint (BEP 3, compact replies as in BEP 23 and
//! BEP 7), served by hyper on the tracker's own port: a connection whose
//! first byte is an ASCII capital letter ("GET ...") is HTTP, anything else
//! is the binary protocol, whose frames start with a length below
//! `MAX_FRAME` (so with a zero byte).
//!
//! `GET /announce/KEY?info_hash=...&port=...&left=...` with an export's
//! announce key (`Request::ExportKey`: one info hash, until a time). The key is in the path, not in
//! the query: BitTorrent clients add a `key` parameter of their own to
//! every announce. Every answer to a well-formed request for
//! `/announce...` is HTTP 200 with a bencoded body, a refusal (unknown key,
//! malformed query) being a `failure reason` as BEP 3 says; the reply is
//! always compact (`peers`, and `peers6` for IPv6 peers), whatever
//! `compact` asks. Anything else is a 404 and closes the connection.

use librqbit_bencode::ByteBuf;
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::percent_decode_str;
use tokio::net::TcpStream;

use super::peers::{Announce, AnnounceEvent, AnnounceReply, INTERVAL, MIN_INTERVAL};
use super::Tracker;
use crate::proto::InfoHash;

/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a connection that starts with `first` speaks HTTP.
pub(crate) fn is_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Serves HTTP/1.1 on one connection until the client closes it (or the
/// tracker stops).
pub(crate) async fn serve(tracker: Arc<Tracker>, stream: TcpStream, remote: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let t = tracker.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let resp = answer(&t, &req, remote);
        async move { Ok::<_, Infallible>(resp) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = tracker.cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(Duration::from_secs(1), conn).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = res {
        tracing::debug!(%remote, error = %e, "HTTP connection ended");
    }
}

fn answer(t: &Tracker, req: &Request<Incoming>, remote: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/announce") else { return not_found() };
    if req.method() != Method::GET {
        return not_found();
    }
    let Some(key) = rest.strip_prefix('/').filter(|k| !k.is_empty() && !k.contains('/')) else {
        return bencoded(failure("no announce key: the URL is http://TRACKER/announce/KEY"));
    };
    let announce = match parse_query(req.uri().query().unwrap_or("")) {
        Ok(a) => a,
        Err(why) => return bencoded(failure(&why)),
    };
    match t.announce(key, &announce, remote) {
        Ok(reply) => bencoded(encode_reply(&reply)),
        Err(e) => bencoded(failure(&e.to_string())),
    }
}

fn bencoded(body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

fn not_found() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"not found\n")));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Reads an announce's query string. Parameters it does not use
/// (`peer_id`, `uploaded`, `downloaded`, `compact`, `key`, `ip`, ...) are
/// ignored; the address announced is the connection's, with `port`.
pub(crate) fn parse_query(query: &str) -> Result<Announce, String> {
    let (mut info_hash, mut port, mut left, mut event, mut numwant) = (None, None, None, AnnounceEvent::None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "info_hash" => {
                let mut h = [0u8; 20];
                let mut n = 0;
                for b in percent_decode_str(v) {
                    if n == h.len() {
                        return Err("info_hash is not 20 bytes".into());
                    }
                    h[n] = b;
                    n += 1;
                }
                if n != h.len() {
                    return Err("info_hash is not 20 bytes".into());
                }
                info_hash = Some(InfoHash(h));
            }
            "port" => match v.parse::<u16>() {
                Ok(p) if p != 0 => port = Some(p),
                _ => return Err(format!("bad port {:?}", truncate(v))),
            },
            "left" => match v.parse::<u64>() {
                Ok(l) => left = Some(l),
                Err(_) => return Err(format!("bad left {:?}", truncate(v))),
            },
            "event" => {
                event = match v {
                    "" | "empty" => AnnounceEvent::None,
                    "started" => AnnounceEvent::Started,
                    "stopped" => AnnounceEvent::Stopped,
                    "completed" => AnnounceEvent::Completed,
                    other => return Err(format!("unknown event {:?}", truncate(other))),
                }
            }
            // Negative or junk: the default, as most trackers do.
            "numwant" => numwant = v.parse::<usize>().ok(),
            _ => {}
        }
    }
    Ok(Announce {
        info_hash: info_hash.ok_or("missing info_hash")?,
        port: port.ok_or("missing port")?,
        left,
        event,
        numwant,
    })
}

/// At most 40 characters of a client's input in a reason.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `d14:failure reason...e`
pub(crate) fn failure(reason: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Failure<'a> {
        #[serde(rename = "failure reason")]
        reason: &'a str,
    }
    bencode(&Failure { reason })
}

/// The bencoded dictionary of a reply. Bencode wants a dictionary's keys
/// in sorted order: the fields are declared in that order.
pub(crate) fn encode_reply(r: &AnnounceReply) -> Vec<u8> {
    #[derive(Serialize)]
    struct Reply<'a> {
        complete: usize,
        incomplete: usize,
        interval: u64,
        #[serde(rename = "min interval")]
        min_interval: u64,
        peers: ByteBuf<'a>,
        #[serde(skip_serializing_if = "is_empty")]
        peers6: ByteBuf<'a>,
    }
    fn is_empty(b: &ByteBuf<'_>) -> bool {
        b.0.is_empty()
    }
    bencode(&Reply {
        complete: r.complete,
        incomplete: r.incomplete,
        interval: INTERVAL.as_secs(),
        min_interval: MIN_INTERVAL.as_secs(),
        peers: ByteBuf(&r.peers),
        peers6: ByteBuf(&r.peers6),
    })
}

/// Bencodes a reply (librqbit's bencode; a struct of plain fields cannot
/// fail to serialize).
fn bencode(v: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    librqbit_bencode::bencode_serialize_to_writer(v, &mut out).expect("a reply of plain fields serializes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = "info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%ABabcd&peer_id=x&port=6881&left=10\
                 &compact=1&numwant=7&event=started&key=zz";
        let a = parse_query(q).unwrap();
        let mut h = [0xab; 20];
        h[16..].copy_from_slice(b"abcd");
        assert_eq!((a.info_hash, a.port, a.left, a.event, a.numwant), (InfoHash(h), 6881, Some(10), AnnounceEvent::Started, Some(7)));
        let ok = "info_hash=aaaaaaaaaaaaaaaaaaaa&port=1";
        assert_eq!(parse_query(ok).unwrap().left, None);
        assert_eq!(parse_query(&format!("{ok}&numwant=-1")).unwrap().numwant, None);
        for (bad, why) in [
            ("port=1", "missing info_hash"),
            ("info_hash=aaaaaaaaaaaaaaaaaaaa", "missing port"),
            ("info_hash=aaaa&port=1", "20 bytes"),
            ("info_hash=aaaaaaaaaaaaaaaaaaaaa&port=1", "20 bytes"),
            ("info_hash=aaaaaaaaaaaaaaaaaaaa&port=0", "bad port"),
            ("info_hash=aaaaaaaaaaaaaaaaaaaa&port=70000", "bad port"),
            ("info_hash=aaaaaaaaaaaaaaaaaaaa&port=1&left=x", "bad left"),
            ("info_hash=aaaaaaaaaaaaaaaaaaaa&port=1&event=paused", "unknown event"),
        ] {
            let err = parse_query(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn bencoding() {
        assert_eq!(failure("no"), b"d14:failure reason2:noe");
        let r = AnnounceReply { complete: 1, incomplete: 2, peers: vec![127, 0, 0, 1, 0x1a, 0xe1], peers6: vec![] };
        let mut want = b"d8:completei1e10:incompletei2e8:intervali300e12:min intervali60e5:peers6:".to_vec();
        want.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        want.push(b'e');
        assert_eq!(encode_reply(&r), want);
    }
}

//! Talks to the tracker manager: one multiplexed connection, reconnecting, authenticated, subscribed.
//!
//! - [`Connection`]: a one-shot, sequential connection for CLI commands
//!   (create-group, join, invite, members).
//!
//! Both send typed calls (`titorrent_tracker::calls`): `call` answers with
//! the call's own answer type, and an answer of another shape is
//! [`ClientError::Unexpected`], checked in `Call::expect` and nowhere else.
//! - [`TrackerLink`]: the mount daemon's long-lived link. It authenticates,
//!   subscribes from the last seq it delivered, reconnects with backoff,
//!   and multiplexes concurrent requests over one connection. It is the
//!   model's [`crate::model::Coordinator`].

mod connection;
mod coordinator;
mod frame;
mod link;

#[cfg(test)]
mod tests;

pub use connection::Connection;
pub use link::{LinkEvent, TrackerLink};

use titorrent_tracker::calls::Mismatch;
use titorrent_tracker::proto::{FrameError, GroupId, MemberId, ProtoError};
use titorrent_tracker::tls::{ClientTls, TlsError};

/// Who this member is to the tracker, and which tracker it trusts: its
/// ids, its key (the TLS client certificate that authenticates it) and the
/// tracker's pinned fingerprint.
#[derive(Clone, Debug)]
pub struct Login {
    pub group: GroupId,
    pub member: MemberId,
    pub tls: ClientTls,
}

/// How a request to the tracker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not connected (the link is reconnecting): the request was not sent.
    #[error("not connected to the tracker")]
    Offline,
    /// The connection was lost after the request went out and before its
    /// answer came: it may or may not have been applied.
    #[error("the tracker connection was lost before the answer came; the request may or may not have been applied")]
    Lost,
    /// The tracker answered with a refusal.
    #[error("the tracker refused: {0}")]
    Refused(#[source] ProtoError),
    #[error("tracker connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("tracker frame: {0}")]
    Frame(#[from] FrameError),
    /// TLS failed, or the tracker is not the pinned one.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The tracker said something out of protocol, or said goodbye.
    #[error("tracker protocol: {0}")]
    Protocol(String),
    /// The tracker answered a request with an answer of another shape.
    #[error("tracker protocol: {0}")]
    Unexpected(#[from] Mismatch),
}

//! titorrent's tracker manager: the protocol its clients speak (always
//! built, light dependencies) and, with the `server` feature, the server that
//! keeps groups, members, the file table, locks and the event log in sled.

pub mod calls;
pub mod proto;

#[cfg(feature = "io")]
pub mod frame_io;

#[cfg(feature = "io")]
pub mod tls;

#[cfg(feature = "server")]
pub mod server;

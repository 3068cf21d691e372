//! Multi-process test harness: runs the real `titorrent-tracker` and real
//! `titorrent mount` daemons on loopback, each in its own temp dir with
//! port 0, and tears them down so that no test leaves a process or a mount
//! behind.
//!
//! A scenario reads like what a user does:
//!
//! ```no_run
//! use std::time::Duration;
//! use titorrent_integration::{scenario, wait_for, Peer, TrackerProc};
//!
//! scenario(Duration::from_secs(120), || {
//!     let tracker = TrackerProc::start();
//!     let mut alice = Peer::create_group(&tracker, "alice");
//!     let mut bob = Peer::join(&tracker, &alice, "bob");
//!     alice.mount();
//!     bob.mount();
//!     std::fs::write(alice.path("hello.txt"), "hi\n").unwrap();
//!     wait_for(Duration::from_secs(30), "bob sees alice's hello.txt", || {
//!         std::fs::read(bob.path("hello.txt")).map_err(|e| e.to_string())
//!     });
//! });
//! ```
//!
//! Rules the harness keeps so that tests can rely on them:
//! - every wait polls a condition against a deadline ([`wait_until`],
//!   [`wait_for`]); nothing sleeps a fixed time;
//! - every process and mount belongs to the [`scenario`] that made it; a
//!   scenario past its deadline kills its processes and lazily unmounts;
//! - dropping a [`Peer`] or [`TrackerProc`] stops it, unmounts with a
//!   fallback, and fails the test if its logs contain a panic.

pub mod bench;
pub mod bins;
pub mod checker;
pub mod content;
pub mod env;
pub mod mounts;
pub mod peer;
pub mod process;
pub mod programs;
pub mod raw;
pub mod scenario;
pub mod tracker;
pub mod wait;

pub use content::{assert_same_bytes, bytes_on_disk, Pattern};
pub use env::require_fuse;
pub use peer::{alice_and_bob, MemberLine, Peer};
pub use raw::RawConn;
pub use scenario::scenario;
pub use tracker::TrackerProc;
pub use wait::{wait_for, wait_until};

//! titorrent: a group's shared folder, mounted with FUSE and kept in sync
//! peer-to-peer over BitTorrent, with a tracker manager for locks and events.
//!
//! Dependencies point one way: `fuse -> model -> {swarm, tracker_client} ->
//! titorrent_tracker::proto`. The model names no fuser or librqbit type.

pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod file_copy;
pub mod fuse;
pub mod logging;
pub mod model;
pub mod state;
pub mod swarm;
pub mod tracker_client;

//! In-process tests of the `titorrent` package: real tracker, real
//! librqbit sessions on loopback, temp dirs; one test binary.

#[path = "it/swarm.rs"]
mod swarm;

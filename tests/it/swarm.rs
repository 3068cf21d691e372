//! Swarm tests: two sessions on loopback.

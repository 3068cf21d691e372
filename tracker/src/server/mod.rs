//! The tracker server: sled-backed state, the connection handler and lease expiry.

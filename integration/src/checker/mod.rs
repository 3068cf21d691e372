//! A randomized multi-member contention checker, in the spirit of Jepsen:
//! three members on real mounts run workloads drawn from a seed (appends,
//! read-modify-write increments, rewrites, creates with and without
//! `O_EXCL`, renames over names and across directories, unlinks,
//! mkdir/rmdir, truncates, opens held for a while) while faults are
//! injected (a member's daemon killed and remounted, the tracker killed
//! and restarted, a member's daemon stopped past its lease and resumed).
//! Every call is recorded with its result and errno; once the group is
//! quiet the history is checked against the semantics the README states
//! ("What a program can rely on"): see [`verify`].
//!
//! The same seed draws the same operations and fault times; what
//! interleaves is up to the machine, so a seed finds a bug often, not
//! always. [`run`] returns the violations with the seed and the part of the
//! history that shows each.

pub mod history;
pub mod run;
pub mod verify;
pub mod workload;

pub use run::{run, Fault, Plan, Report};

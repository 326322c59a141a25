//! Checkpoint coordination that applications reuse instead of writing their own.
//!
//! Backends and strategies never depend on this crate: they write snapshots and return
//! handles. Whoever triggers checkpoints on every instance and retains the completed ones
//! (the coordinator of a job) keeps the bookkeeping here:
//!
//! - [`SharedStateRegistry`]: who owns the shared files of incremental checkpoints, so a
//!   file is deleted when no retained checkpoint refers to it any more, never earlier.
//!
//! It depends on `state-api` only, so a distributed engine can use it with any storage and
//! any backend.

mod shared_registry;

pub use shared_registry::SharedStateRegistry;

//! Checkpoint coordination that applications reuse instead of writing their own.
//!
//! Backends and strategies never depend on this crate: they write snapshots and return
//! handles. Whoever triggers checkpoints on every instance and retains the completed ones
//! (the coordinator of a job) keeps the bookkeeping here:
//!
//! - [`CheckpointCoordinator`]: the lifecycle of a job's checkpoints (trigger, acknowledge
//!   or decline, complete or abort, time out, retain and subsume), as Flink's
//!   `CheckpointCoordinator` keeps it.
//! - [`CheckpointCoordinator::recover`] and [`collect_garbage`]: after a crash, the
//!   committed checkpoints are read back and what the crash left behind is removed.
//! - [`SharedStateRegistry`]: who owns the shared files of incremental checkpoints, so a
//!   file is deleted when no retained checkpoint refers to it any more, never earlier.
//! - [`plan_restore`]: what each instance of a job restores from a checkpoint, at any
//!   parallelism, as Flink's `StateAssignmentOperation` assigns it (operator state by
//!   [`repartition_operator_state`]); its shares never delete the checkpoint's files.
//!
//! It depends on `state-api` only, so a distributed engine can use it with any storage and
//! any backend.

mod assignment;
mod coordinator;
mod recovery;
mod shared_registry;

pub use assignment::{
    InstanceAssignment, KeyedShare, RestorePlan, StreamShare, plan_restore,
    repartition_operator_state,
};
pub use coordinator::{
    Aborted, Acknowledged, Acknowledgement, CheckpointCoordinator, CheckpointStats,
    CheckpointStatus, Completed, CoordinatorConfig, InstanceStats, TriggerRefused,
};
pub use recovery::{Garbage, Recovered, Writers, collect_garbage, find_garbage};
pub use shared_registry::SharedStateRegistry;

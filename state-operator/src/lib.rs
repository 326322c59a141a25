//! Operator state of snapstate: named list and broadcast states of one operator instance,
//! their snapshot strategy, and the restore of an instance's share when the parallelism
//! changes.
//!
//! - [`DefaultOperatorStateBackend`] (`operator`) holds, in memory, list states whose mode
//!   says how they are redistributed on restore (split-distribute: each new instance gets
//!   an even share of the elements; union: every new instance gets all of them) and
//!   broadcast map states (identical on every instance).
//! - [`OperatorSnapshotStrategy`] (`operator`): the synchronous part deep-copies the state
//!   (it is small: offsets, rules, buffered elements; the copy costs O(bytes held)); the
//!   asynchronous part writes a versioned header with every state's meta info and then each
//!   state's partitions with checksums ([`mod@format`]), recording per state the partition
//!   offsets and mode in a [`state_api::OperatorStreamStateHandle`]. No states: no file and
//!   an empty result.
//! - [`DefaultOperatorStateBackend::restore`] reads the share of one instance, as the
//!   coordinator planned it from the handles of N old instances for M new ones
//!   (`state_coordinator::plan_restore`, or `repartition_operator_state` for operator
//!   handles alone).
//!
//! # Example
//!
//! Scale a source's offsets from one instance to two:
//!
//! ```
//! use std::sync::Arc;
//! use state_api::{CheckpointId, SnapshotRequest, OperatorBackendParams, OperatorStateBackend, OperatorStateMetaInfo, Registry};
//! use state_storage_local::MemoryCheckpointStreamFactory;
//!
//! state_operator::link();
//! let registry = Registry::global();
//! let factory = registry.operator_backend("operator")?;
//! let mut backend = factory.create(OperatorBackendParams::new(0, 1), registry)?;
//! backend.register_state(&OperatorStateMetaInfo::split_list("partition-offsets", "bytes"))?;
//! for partition in ["p0=17", "p1=4", "p2=99"] {
//!     backend.append_to_list("partition-offsets", partition.as_bytes())?;
//! }
//! let storage = Arc::new(MemoryCheckpointStreamFactory::default());
//! let request = SnapshotRequest::checkpoint(CheckpointId::new(1), 0);
//! let result = backend.snapshot(&request, storage)?.run()?;
//! let old = vec![result.job_manager_owned().into_iter().cloned().collect()];
//!
//! let plan = state_coordinator::repartition_operator_state(&old, 2)?;
//! let mut shares = Vec::new();
//! for (index, handles) in (0..).zip(&plan) {
//!     let restored = factory.restore(OperatorBackendParams::new(index, 2), registry, handles)?;
//!     shares.push(restored.list("partition-offsets")?.len());
//! }
//! assert_eq!(shares, [2, 1]);
//! # Ok::<(), state_api::Error>(())
//! ```
//!
//! The crate registers operator backend `operator` and operator strategy `operator` with
//! [`state_api::Registry`] at link time; call [`link`] (or `use state_operator as _;`) from a
//! binary that names nothing else of it, or call [`register`] yourself.

mod backend;
pub mod format;
mod snapshot;

pub use backend::{
    DefaultOperatorStateBackend, DefaultOperatorStateBackendFactory, OperatorSnapshotSource,
    OperatorState, OperatorStateData, OperatorStates,
};
pub use snapshot::{DefaultOperatorSnapshotStrategyFactory, OperatorSnapshotStrategy};

/// Name of the operator state backend and of its snapshot strategy.
pub const OPERATOR: &str = "operator";

/// Registers operator backend `operator` and operator strategy `operator` in `registry`.
///
/// # Errors
///
/// [`Error::DuplicatePlugin`](state_api::Error) if a name is already taken.
pub fn register(registry: &mut state_api::Registry) -> state_api::Result<()> {
    registry.register_operator_backend(DefaultOperatorStateBackendFactory)?;
    registry.register_operator_strategy(DefaultOperatorSnapshotStrategyFactory)
}

state_api::submit_registration!(register);

/// Does nothing; reference it from a binary or test so the linker keeps this crate's
/// link-time registrations.
pub fn link() {}

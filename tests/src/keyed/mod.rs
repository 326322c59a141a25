//! Conformance of [`KeyedStateBackend`]s, driven by name through the [`Registry`].
//!
//! Every contract is one public function taking the [`KeyedTarget`] under test: the
//! backend's registered name, the checkpoint strategy when it is not the backend's default
//! (e.g. `rocksdb-incremental` for `rocksdb`), the compression decorator its snapshots use,
//! what the backend can do beyond the basic contract as [`KeyedBackendCapabilities`], and
//! the registry it is linked into. [`run_all`] runs every contract that applies, printing
//! the ones it skips; [`keyed_contracts!`](crate::keyed_contracts) gives each contract a
//! test of its own.
//!
//! The kit only uses the byte-level contract of `state-api`: backends are created with
//! `registry.keyed_backend(name)?.create(params, registry)` and restored with
//! `.restore(params, registry, &handles)`, snapshots go to a
//! [`LocalCheckpointStorage`](state_storage_local::LocalCheckpointStorage) in a temporary directory
//! (or the storage [`with_storage`](crate::storage::with_storage) names), and every check
//! compares the backend with a `BTreeMap` model of what was written. A broken rule panics
//! with a message naming the backend, the strategy (when the target sets one), the
//! decorator, the contract and the rule.
//!
//! Priority-queue (timer) state has contracts of its own: [`timers`] (set semantics, peek,
//! poll with a watermark and a limit, counts and per-key-group listings, wrong-kind use,
//! timers through checkpoints and savepoints), [`timers_model`] (random timer operations,
//! checkpoints and rescaled restores against a model of the whole job's timers) and
//! [`timers_rescale`] (timers follow their key's key group into another number of
//! instances); [`timer_savepoint_portability`] moves a savepoint's timers between two
//! backends. Timers of one timestamp may come in any order: the kit compares what polls
//! return by timestamp only, and which timers they are with the model.
//!
//! Backends are created with max parallelism [`MAX_PARALLELISM`], key serializer `bytes`
//! and a fresh working directory each (see [`KeyedBackendParams::working_dir`]).
//!
//! ```no_run
//! use snapstate_tests::keyed::{run_all, KeyedBackendCapabilities, KeyedTarget};
//! use state_api::Registry;
//!
//! state_heap::link();
//! let capabilities = KeyedBackendCapabilities { rescaling: true, local_recovery: true };
//! run_all(&KeyedTarget::new(Registry::global(), "heap").capabilities(capabilities));
//! // A strategy other than the backend's default, and another decorator:
//! run_all(
//!     &KeyedTarget::new(Registry::global(), "heap")
//!         .strategy("heap-incremental")
//!         .compression("lz4")
//!         .capabilities(KeyedBackendCapabilities { rescaling: true, local_recovery: false }),
//! );
//! ```
//!
//! [`KeyedStateBackend`]: state_api::KeyedStateBackend
//! [`Registry`]: state_api::Registry
//! [`KeyedBackendParams::working_dir`]: state_api::KeyedBackendParams::working_dir

// `target.rs` holds the target, the contract list, `run_all` and `keyed_contracts!`;
// `contracts/` one file per contract (with the helpers only that contract uses); `bed.rs`
// the test bed and the helpers several contracts share; `model.rs` the model every check
// compares with (timers included) and the model-based sequences of keyed state (those of
// timers are the `timers_model` contract).
mod bed;
mod contracts;
mod model;
mod target;

use state_api::MaxParallelism;

pub use contracts::{
    EVERY_BYTE_UP_TO, SPREAD_CUTS, TIMERS_MODEL_CASES, TimerOp, TimerStep,
    cancelled_snapshot_leaves_nothing, compression_is_read_from_the_snapshot,
    corrupt_snapshot_is_reported, empty_state, huge_values, incompatible_serializers_are_rejected,
    large_max_parallelism, local_recovery, map_entries_are_ordered, rescale, rescale_chain,
    round_trip, run_timer_steps, savepoint_portability, savepoints_are_canonical,
    snapshot_is_consistent, storage_faults_are_contained, timer_savepoint_portability, timer_steps,
    timers, timers_model, timers_rescale, truncated_snapshot_is_detected, ttl_contract,
};
pub use model::{ModelStep, ModelWrite, model_based, model_steps, run_model_steps};
pub use target::{KeyedContract, KeyedTarget, run_all};

/// Max parallelism (number of key groups) of every backend the kit creates.
pub const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);

/// What a keyed backend can promise beyond the basic contract.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyedBackendCapabilities {
    /// Restore takes the handles of any number of old instances and keeps exactly the key
    /// groups of the new instance's range.
    pub rescaling: bool,
    /// With [`KeyedBackendParams::local_recovery`] enabled, snapshots also write a
    /// task-local copy that restores on its own.
    ///
    /// [`KeyedBackendParams::local_recovery`]: state_api::KeyedBackendParams::local_recovery
    pub local_recovery: bool,
}

/// The rescalings [`run_all`] checks: (old parallelism, new parallelism).
pub const RESCALINGS: [(u32, u32); 4] = [(1, 3), (3, 2), (4, 1), (2, 5)];

/// The rescalings [`run_all`] checks timers with ([`timers_rescale`]): (old parallelism,
/// new parallelism).
pub const TIMER_RESCALINGS: [(u32, u32); 3] = [(1, 3), (2, 1), (4, 3)];

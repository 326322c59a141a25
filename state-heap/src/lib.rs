//! The heap keyed state backend of snapstate: keyed value, list and map state in memory,
//! and its snapshot strategy. It is the backend most users start with.
//!
//! - [`HeapKeyedStateBackend`] holds the state of one key-group range. Each state lives in
//!   copy-on-write maps, one per key group ([`HeapSnapshotSource`]).
//! - [`HeapSnapshotStrategy`] (`heap`): the synchronous part takes a version of every map in
//!   O(states × key groups), copying no entries; writers then copy only the trie nodes on the
//!   path to entries they touch while a version is held. The asynchronous part writes the
//!   canonical keyed format of `state-api` (header, every key group in order through the
//!   compression decorator, offsets and a CRC-32C per key group), so heap savepoints restore
//!   into any keyed backend. How heap entries map onto that format: [`mod@format`].
//! - [`HeapIncrementalSnapshotStrategy`] (`heap-incremental`): checkpoints that write only
//!   the entries changed since the last completed checkpoint (with tombstones) as a delta
//!   on a full base, rewriting the base when the deltas grow past a fraction of it; the
//!   backend tracks changes per state and key group at O(1) per write. Savepoints stay
//!   full canonical snapshots.
//! - Restore reads any set of key-groups and `heap-incremental` handles and keeps the key
//!   groups of the new range, which is how a job rescales.
//!
//! # Example
//!
//! Typed state ([`state_format::typed`]) over a heap backend picked by name:
//!
//! ```
//! use state_format::typed::{self, ListState, StringSerializer, U64Serializer, ValueState, VoidSerializer};
//! use state_api::{KeyGroupRange, KeyedBackendParams, Registry};
//!
//! state_heap::link();
//! let registry = Registry::global();
//! let params = KeyedBackendParams::new(state_api::MaxParallelism::new(128)?, KeyGroupRange::new(0, 127)?);
//! let mut backend = registry.keyed_backend("heap")?.create(params, registry)?;
//!
//! let count = ValueState::register(&mut *backend, "count", VoidSerializer, U64Serializer)?;
//! let seen = ListState::register(&mut *backend, "seen", VoidSerializer, StringSerializer)?;
//! typed::set_current_key(&mut *backend, &StringSerializer, &"alice".to_owned())?;
//! for page in ["home", "cart"] {
//!     let next = count.value(&*backend, &())?.unwrap_or(0) + 1;
//!     count.update(&mut *backend, &(), &next)?;
//!     seen.add(&mut *backend, &(), &page.to_owned())?;
//! }
//! assert_eq!(count.value(&*backend, &())?, Some(2));
//! assert_eq!(seen.get(&*backend, &())?, ["home", "cart"]);
//! # Ok::<(), state_api::Error>(())
//! ```
//!
//! The crate registers keyed backend `heap` and keyed strategies `heap` and
//! `heap-incremental` with
//! [`state_api::Registry`] at link time; call [`link`] (or `use state_heap as _;`) from a
//! binary that names nothing else of it, or call [`register`] yourself.

mod backend;
mod chain;
mod changes;
pub mod format;
mod incremental;
mod key_group_map;
mod restore;
mod snapshot;
mod table;
mod ttl_cleanup;
mod value_entry;

pub use backend::{HeapKeyedStateBackend, HeapSnapshotSource, HeapSnapshotVersion};
pub use incremental::{
    HeapIncrementalOptions, HeapIncrementalSnapshotStrategy,
    HeapIncrementalSnapshotStrategyFactory, MATERIALIZATION_FRACTION_OPTION,
};
pub use snapshot::{HeapSnapshotStrategy, HeapSnapshotStrategyFactory};

/// Name of the heap keyed backend and of its snapshot strategy.
pub const HEAP: &str = "heap";

/// Name of the heap backend's incremental snapshot strategy.
pub const HEAP_INCREMENTAL: &str = "heap-incremental";

/// Registers keyed backend `heap` and keyed strategies `heap` and `heap-incremental` in
/// `registry`.
///
/// # Errors
///
/// [`Error::DuplicatePlugin`](state_api::Error) if a name is already taken.
pub fn register(registry: &mut state_api::Registry) -> state_api::Result<()> {
    registry.register_keyed_backend(state_format::KeyedStateBackendConstructors::new(
        HEAP,
        "keyed state in copy-on-write heap maps sharded by key group; snapshots take O(states x key groups)",
        HeapKeyedStateBackend::new,
        HeapKeyedStateBackend::restore,
    ))?;
    registry.register_keyed_strategy(HeapSnapshotStrategyFactory)?;
    registry.register_keyed_strategy(HeapIncrementalSnapshotStrategyFactory)
}

state_api::submit_registration!(register);

/// Does nothing; reference it from a binary or test so the linker keeps this crate's
/// link-time registrations.
pub fn link() {}

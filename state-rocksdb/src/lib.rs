//! The RocksDB keyed state backend of snapstate, for state larger than memory.
//!
//! - [`RocksDBKeyedStateBackend`] (`rocksdb`) keeps each state in its own column family,
//!   keyed by the canonical composite key (key-group prefix first), so a key group is a
//!   contiguous key range; list appends go through a merge operator. Its layout and options:
//!   [`RocksDBOptions`] and the `backend` module documentation.
//! - [`RocksFullSnapshotStrategy`] (`rocksdb-full`): the synchronous part takes a lease on
//!   the database and a RocksDB snapshot; the asynchronous part writes the canonical keyed
//!   format of `state-api`, so a RocksDB savepoint restores into the heap backend and back.
//!   Savepoints always use it.
//! - Restore reads any set of key-groups handles (its own, or a heap savepoint) and keeps
//!   the key groups of the new range.
//!
//! Closing the backend cancels running snapshots and waits for their leases before the
//! database closes; a backend that made its own directory removes it.
//!
//! The crate registers keyed backend `rocksdb` and keyed strategy `rocksdb-full` with
//! [`state_api::Registry`] at link time; call [`link`] (or `use state_rocksdb as _;`) from
//! a binary that names nothing else of it, or call [`register`] yourself.

mod backend;
mod compactions;
mod cut;
mod full;
mod heap_timers;
mod history;
mod incremental;
mod local_handle;
mod native;
mod resource_guard;
mod restore;
mod timers;
mod ttl_filter;

pub use backend::{
    CompactionPriority, CompactionStyle, RocksDBKeyedStateBackend, RocksDBOptions,
    RocksDBSnapshotSource, SstCompression, TimerServiceFactory,
};
pub use full::{RocksFullSnapshotStrategy, RocksFullSnapshotStrategyFactory};
pub use incremental::{RocksIncrementalSnapshotStrategy, RocksIncrementalSnapshotStrategyFactory};
pub use local_handle::{DirectoryStateHandle, IncrementalLocalKeyedStateHandle};
pub use resource_guard::{Lease, ResourceGuard};
pub use state_format::file_manifest::{FileManifest, ManifestEntry};

/// Name of the RocksDB keyed backend.
pub const ROCKSDB: &str = "rocksdb";

/// Name of the full snapshot strategy of the RocksDB backend.
pub const ROCKSDB_FULL: &str = "rocksdb-full";

/// Name of the incremental snapshot strategy of the RocksDB backend.
pub const ROCKSDB_INCREMENTAL: &str = "rocksdb-incremental";

/// Registers keyed backend `rocksdb` and keyed strategies `rocksdb-full` and
/// `rocksdb-incremental` in `registry`.
///
/// # Errors
///
/// [`Error::DuplicatePlugin`](state_api::Error) if a name is already taken.
pub fn register(registry: &mut state_api::Registry) -> state_api::Result<()> {
    registry.register_keyed_backend(state_format::KeyedStateBackendConstructors::new(
        ROCKSDB,
        "keyed state in embedded RocksDB, one column family per state, key groups as key ranges",
        RocksDBKeyedStateBackend::new,
        RocksDBKeyedStateBackend::restore,
    ))?;
    registry.register_keyed_strategy(RocksFullSnapshotStrategyFactory)?;
    registry.register_keyed_strategy(RocksIncrementalSnapshotStrategyFactory)
}

state_api::submit_registration!(register);

/// Does nothing; reference it from a binary or test so the linker keeps this crate's
/// link-time registrations.
pub fn link() {}

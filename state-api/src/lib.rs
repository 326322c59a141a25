//! The snapshot contract of snapstate: what every state backend, snapshot strategy and
//! compression decorator implements, and what applications and coordinators program
//! against.
//!
//! Depend on this crate to write a plugin (a backend, a strategy, a decorator, a storage)
//! or to drive plugins by name. It has no heavy dependencies (no RocksDB, no codecs, no
//! file-system helpers) and changes rarely. The byte formats (the keyed header, the
//! canonical key-group format, checkpoint metadata files) live in the `state-format` crate;
//! storages in `state-storage-local` and `state-storage-object`.
//!
//! The pieces, in the order a snapshot meets them:
//!
//! - [`KeyGroup`], [`KeyGroupRange`], [`MaxParallelism`]: which key groups exist, which one a key is in,
//!   which ones an instance owns.
//! - [`KeyedStateBackend`], [`OperatorStateBackend`]: the state, driven through bytes.
//! - [`SnapshotStrategy`]: its call is the synchronous part; it returns an
//!   [`AsyncSnapshotCallable`], run as an [`AsyncSnapshotTask`] with an exact
//!   cancel/cleanup lifecycle, owned by a [`CloseableRegistry`].
//! - [`StreamCompressionDecorator`]: wraps each key group's bytes.
//! - [`CheckpointStreamFactory`]: where bytes go; [`CheckpointStorage`]: a factory per checkpoint and the committed
//!   [`CheckpointMetadata`], on any medium (the `state-storage-local` and
//!   `state-storage-object` crates implement them); [`TaskLocalStorage`]: task-local copies.
//! - Handles ([`StreamStateHandle`], [`KeyedStateHandle`], ...) in a [`SnapshotResult`].
//! - [`Registry`]: plugins by name, collected at link time.

mod async_snapshot;
mod backend;
mod checkpoint;
pub mod checkpoint_metadata;
mod closeable;
mod compression;
mod error;
mod handle;
pub mod key_group;
mod meta;
mod registry;
mod state_object;
mod storage;
mod strategy;
mod stream;
#[cfg(test)]
mod test_file;
mod ttl;

pub use async_snapshot::{
    AsyncSnapshotCallable, AsyncSnapshotTask, SnapshotCanceller, SnapshotContext,
};
pub use backend::{
    KeyedBackendParams, KeyedSnapshotResult, KeyedSnapshotStrategyFactory, KeyedStateBackend,
    KeyedStateBackendFactory, OperatorBackendParams, OperatorSnapshotResult,
    OperatorSnapshotStrategyFactory, OperatorStateBackend, OperatorStateBackendFactory,
    backend_state_as,
};
pub use checkpoint::{
    CheckpointId, CheckpointListener, CheckpointOptions, CheckpointType, LocalRecoveryConfig,
    SnapshotRequest, TaskLocalStorage,
};
pub use checkpoint_metadata::{CheckpointMetadata, InstanceSnapshot, JobId};
pub use closeable::{Closeable, CloseableRegistry, RegistrationKey};
pub use compression::{
    CompressingWriter, StreamCompressionDecorator, UNCOMPRESSED,
    UncompressedStreamCompressionDecorator,
};
pub use error::{BoxError, Error, Result};
pub use handle::{
    ByteStreamStateHandle, DistributionMode, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle,
    KeyedStateHandle, OperatorStatePartitions, OperatorStreamStateHandle,
    PlaceholderStreamStateHandle, StateInputStream, StreamStateHandle, new_backend_identifier,
    seek_position,
};
pub use key_group::{KeyGroup, KeyGroupRange, KeyGroups, MaxParallelism};
pub use meta::{OperatorStateMetaInfo, SerializerId, StateKind, StateMetaInfo, Timer};
pub use registry::{PluginInfo, PluginKind, Registration, Registry, register};
pub use state_object::{SnapshotResult, StateObject};
pub use storage::{CheckpointStorage, StorageClaim, StoredFile};
pub use strategy::{SnapshotStrategy, run_snapshot_strategy};
pub use stream::{CheckpointStateOutputStream, CheckpointStreamFactory, CheckpointedStateScope};
pub use ttl::{StateTtlConfig, SystemClock, TtlClock, TtlUpdate, TtlVisibility};

/// Re-exports for macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

/// Keeps this crate's link-time registrations in a binary that names no other item of it.
pub fn link() {}

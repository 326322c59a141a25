//! The byte formats of snapstate, each written and read in exactly one place.
//!
//! Depend on this crate (beside `state-api`) to write or read snapshots in the canonical
//! format: a keyed backend's full-snapshot strategy feeds entries to
//! [`write_full_snapshot`] and its restore takes entries
//! from a [`KeyedSnapshotReader`]; a savepoint written by
//! one backend then restores into any other. Every format carries a version; old versions
//! stay readable, and the checked-in fixtures under `tests/fixtures/` pin the bytes.
//!
//! - [`frame`]: the versioned, checksummed frame every header shares.
//! - [`key_groups`]: the handle of a canonical-format snapshot ([`KeyGroupsStateHandle`])
//!   and its per-key-group offsets.
//! - [`key_group_prefix`]: the key-group prefix of keys in a key-value store.
//! - [`proxy`]: the keyed snapshot header ([`KeyedBackendSerializationProxy`]).
//! - [`keyed_format`]: the canonical key-group data: writer, reader, the parallel
//!   key-group driver.
//! - [`backend_support`]: what keyed backends share: their factory
//!   ([`KeyedStateBackendConstructors`]), snapshot side ([`KeyedSnapshots`]) and state
//!   look-up ([`find_state`]).
//! - [`canonical_backend`]: a whole keyed backend over any store of canonical entries
//!   ([`CanonicalKeyedBackend`] over a [`CanonicalStore`]).
//! - [`full_snapshot`]: the asynchronous part of a full snapshot for any backend
//!   ([`FullSnapshotCallable`] over a [`KeyGroupSource`]).
//! - [`restore`]: restoring full snapshots into any keyed backend, with rescaling
//!   ([`restore_full_snapshots`]).
//! - [`parallel`]: the parallel key-group driver the writer and restores share.
//! - [`file_manifest`]: the file list of multi-file (incremental) snapshots;
//!   [`incremental_meta`]: the meta data stream of incremental snapshots.
//! - [`metadata`]: the bytes of a checkpoint's `_metadata` file; [`storage_root`]: how
//!   handles read from it stay inside the storage that reads them.
//! - [`snapshot_stream`]: the stream a strategy writes a snapshot to, with its task-local
//!   copy ([`CheckpointStreamWithResultProvider`]).
//! - [`ttl`]: how states with a time to live store, read and snapshot their entries
//!   ([`TtlBackend`](ttl::TtlBackend)).
//! - [`typed`]: value serializers and typed state over any keyed backend.

pub mod backend_support;
pub mod canonical_backend;
pub mod file_manifest;
pub mod frame;
pub mod full_snapshot;
pub mod incremental_meta;
pub mod key_group_prefix;
pub mod key_groups;
pub mod keyed_format;
pub mod metadata;
pub mod parallel;
pub mod proxy;
pub mod restore;
pub mod snapshot_stream;
pub mod storage_root;
pub mod timer;
pub mod timer_service;
pub mod ttl;
pub mod typed;

pub use backend_support::{KeyedSnapshots, KeyedStateBackendConstructors, RestoreFn, find_state};
pub use canonical_backend::{CanonicalKeyedBackend, CanonicalStore};
pub use file_manifest::{FileManifest, ManifestEntry};
pub use full_snapshot::{FullSnapshotCallable, KeyGroupSource};
pub use key_groups::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
pub use keyed_format::{
    KeyedEntry, KeyedSnapshotReader, KeyedSnapshotWriter, write_full_snapshot,
    write_full_snapshot_parallel,
};
pub use proxy::KeyedBackendSerializationProxy;
pub use restore::{
    RestoreTarget, check_entry, check_key_groups_fit, check_restore_handles, restore_full_snapshots,
};
pub use snapshot_stream::CheckpointStreamWithResultProvider;
pub use storage_root::{AbsoluteLocations, HandleScope, StorageRoot};

/// Keeps this crate's link-time registrations (the `key-groups` handle tag) in a binary
/// that names no other item of it.
pub fn link() {}

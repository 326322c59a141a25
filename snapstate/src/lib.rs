//! The snapstate facade: one dependency for applications, which pick the plugins they link
//! by Cargo feature and build from [`config`] (Flink-style keys), plus [`inspect`], the
//! library behind the `snapstate` command line.
//!
//! Applications depend on this crate instead of on the plugin crates one by one. The
//! contract crate is always there as [`api`]; each plugin crate comes with a feature and is
//! re-exported under a short name:
//!
//! | feature | re-export | registers |
//! | --- | --- | --- |
//! | `heap` (default) | `heap` (`state-heap`) | keyed backend and strategy `heap` |
//! | `operator` (default) | `operator` (`state-operator`) | operator backend and strategy `operator` |
//! | `rocksdb` | `rocksdb` (`state-rocksdb`) | keyed backend `rocksdb`, strategies `rocksdb-full`, `rocksdb-incremental` |
//! | `snappy`, `lz4` | `compress` (`state-compress`) | decorators `snappy` *and* `lz4` |
//! | `object-storage` | `object_storage` (`state-storage-object`) | the `object` handle kind; `s3://` and `memory://` checkpoint storage in [`config`] |
//! | `full` | all of the above | |
//! | `cli` | | nothing: builds the `snapstate` binary |
//!
//! `snappy` and `lz4` both live in `state-compress`, which registers both decorators:
//! enabling either feature links both. `none` comes with `state-api` and is always linked.
//!
//! Plugins register themselves at link time, but `rustc` drops a crate that no code names,
//! and its registrations with it. [`link`] names every enabled plugin crate, and
//! [`registry`] calls it before handing out the process-wide [`Registry`], so a binary
//! that looks plugins up through [`registry`] finds exactly what its features enable.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "heap")]
//! # {
//! use snapstate::api::{KeyGroupRange, KeyedBackendParams, PluginKind};
//!
//! let registry = snapstate::registry();
//! assert!(registry.names(PluginKind::KeyedBackend).contains(&"heap".to_owned()));
//! let params = KeyedBackendParams::new(snapstate::api::MaxParallelism::new(128)?, KeyGroupRange::new(0, 127)?);
//! let backend = registry.keyed_backend("heap")?.create(params, registry)?;
//! assert_eq!(backend.backend_name(), "heap");
//! # }
//! # Ok::<(), snapstate::api::Error>(())
//! ```

pub mod config;
mod error;
pub mod inspect;

pub use error::{Error, Result};

/// The contract crate, `state-api`: key groups, streams, handles, strategies, the registry.
pub use state_api as api;
pub use state_api::checkpoint_metadata::{CheckpointMetadata, InstanceSnapshot};
pub use state_api::{
    CheckpointOptions, CheckpointStorage, CheckpointType, KeyGroupRange, KeyedBackendParams,
    OperatorBackendParams, Registry,
};
/// The byte formats, `state-format`: the keyed header, the canonical key-group format,
/// file manifests, checkpoint metadata files, typed state.
pub use state_format as format;
/// The embedded default checkpoint storage, `state-storage-local`: a local directory,
/// memory, task-local copies.
pub use state_storage_local as local_storage;
pub use state_storage_local::LocalCheckpointStorage;

/// The compression decorators `snappy` and `lz4` (`state-compress`).
#[cfg(any(feature = "snappy", feature = "lz4"))]
pub use state_compress as compress;
/// Checkpoint coordination applications reuse, `state-coordinator`: the checkpoint
/// lifecycle (`CheckpointCoordinator`) and the shared-state registry of incremental
/// checkpoints.
#[cfg(feature = "coordinator")]
pub use state_coordinator as coordinator;
/// The heap keyed state backend (`state-heap`).
#[cfg(feature = "heap")]
pub use state_heap as heap;
/// The operator state backend (`state-operator`).
#[cfg(feature = "operator")]
pub use state_operator as operator;
/// The RocksDB keyed state backend (`state-rocksdb`).
#[cfg(feature = "rocksdb")]
pub use state_rocksdb as rocksdb;
/// Checkpoint storage on object storage (`state-storage-object`).
#[cfg(feature = "object-storage")]
pub use state_storage_object as object_storage;

/// Keeps the link-time registrations of `state-api` and of every plugin crate the enabled
/// features bring in.
pub fn link() {
    state_api::link();
    state_format::link();
    #[cfg(any(feature = "snappy", feature = "lz4"))]
    state_compress::link();
    #[cfg(feature = "heap")]
    state_heap::link();
    #[cfg(feature = "operator")]
    state_operator::link();
    #[cfg(feature = "rocksdb")]
    state_rocksdb::link();
    #[cfg(feature = "object-storage")]
    state_storage_object::link();
}

/// The process-wide registry of every linked plugin ([`Registry::global`]), after [`link`].
pub fn registry() -> &'static Registry {
    link();
    Registry::global()
}

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

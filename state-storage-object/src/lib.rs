//! Checkpoint storage of snapstate on object storage: S3 and S3-compatible servers, the
//! local file system and in-memory stores, through the [`object_store`] crate, chosen by
//! URL (`s3://bucket/prefix`, `file:///path`, `memory://name/prefix`).
//!
//! Depend on this crate (or on the facade's `object-storage` feature) to checkpoint to
//! shared storage: many instances of a job, each owning a key-group range, write to one
//! prefix, and rescaling reads any instance's handles from any machine. No strategy
//! changes: [`ObjectCheckpointStorage`] implements [`state_api::CheckpointStorage`] and
//! its factories implement [`state_api::CheckpointStreamFactory`].
//!
//! - [`ObjectCheckpointStorage`]: `chk-<id>/` per checkpoint, `shared/` for incremental
//!   files, `chk-<id>/_metadata` committed with one PUT that never overwrites.
//! - [`ObjectOutputStream`]: inline under the file-state threshold, one PUT up to the
//!   part size, a multipart upload beyond it (parts uploaded while writing, a bounded
//!   number in flight); dropping or closing it aborts the upload and deletes what it put.
//! - [`ObjectStateHandle`] (serde tag `object`): store URL, key and size, readable with
//!   ranged GETs and read-ahead ([`ObjectInputStream`]), deletable, in any process.
//! - [`ObjectStores`]: the process-wide stores, where handles find their endpoint and
//!   credentials.
//! - [`ObjectStoreOptions`]: endpoint, region, credentials ([`Secret`]: never printed),
//!   part size, retries with exponential backoff bounded in count and time.
//!
//! # Synchronous callers, asynchronous store
//!
//! `object_store` is async; strategies are not. This crate owns one small tokio runtime
//! per process (two worker threads named `snapstate-object-io`, started on first use), and
//! every request runs there: a caller hands over the request and blocks on a channel until
//! its result arrives. No caller needs a runtime of its own, and a caller that is itself on
//! a tokio thread does not nest `block_on` (it blocks like any blocking i/o would; call
//! from `spawn_blocking` in async code). Requests can be aborted from another thread,
//! which is how closing a stream unblocks a writer waiting on the network.
//!
//! # Errors and retries
//!
//! HTTP requests are retried by `object_store` on 5xx answers, connection errors and
//! timeouts, with exponential backoff and jitter, up to [`RetryOptions::max_retries`] and
//! never starting after [`RetryOptions::timeout`]. What still fails maps onto
//! [`state_api::Error`]: a missing bucket or object is `NotFound`, 401/403 is
//! `AccessDenied`, the rest is `Io` with the object's URL as path (see `error.rs`).
//! Credentials never appear in errors, logs or `Debug` output.
//!
//! # Credentials for handles read back
//!
//! A handle stores no credentials. In the process that opened the storage, handles use its
//! store. A process that only restores opens the storage with the same URL and options, or
//! calls [`ObjectStores::configure`]; otherwise the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, ...) are used.

mod error;
mod handle;
mod location;
mod options;
mod runtime;
mod storage;
mod stores;
mod stream;
mod transport;

pub use error::StorageFailure;
pub use handle::{ObjectInputStream, ObjectRoot, ObjectStateHandle};
pub use options::{KEYS as OPTION_KEYS, ObjectStoreOptions, RetryOptions, Secret};
pub use storage::{ObjectCheckpointStorage, ObjectStreamFactory};
pub use stores::ObjectStores;
pub use stream::ObjectOutputStream;

/// Keeps this crate's link-time registrations (the `object` handle kind) in a binary that
/// names no other item of it: without them, metadata holding object handles does not
/// deserialize.
pub fn link() {}

//! Checkpoint options, local recovery configuration and the checkpoint listener.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{CheckpointStateOutputStream, Result, StreamStateHandle};

/// The id of a checkpoint or savepoint, ascending in the order a job takes them; it
/// serializes as the bare number and is written as the number (`chk-7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckpointId(u64);

impl CheckpointId {
    /// Checkpoint `id`.
    pub const fn new(id: u64) -> Self {
        CheckpointId(id)
    }

    /// The id as a number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The id after this one.
    pub const fn next(self) -> Self {
        CheckpointId(self.0.saturating_add(1))
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A checkpoint id equals its number: `assert_eq!(storage.completed_checkpoints()?, [3])`.
impl PartialEq<u64> for CheckpointId {
    fn eq(&self, other: &u64) -> bool {
        self.0 == *other
    }
}

impl From<CheckpointId> for u64 {
    fn from(id: CheckpointId) -> u64 {
        id.0
    }
}

/// What a snapshot is asked to be: its checkpoint id, when it was triggered and its
/// options. Every snapshot entry point (strategies, backends, the runner) takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The checkpoint (or savepoint) id.
    pub id: CheckpointId,
    /// When it was triggered, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Checkpoint or savepoint.
    pub options: CheckpointOptions,
}

impl SnapshotRequest {
    /// A snapshot `id` triggered at `timestamp` with `options`.
    pub fn new(id: CheckpointId, timestamp: u64, options: CheckpointOptions) -> Self {
        SnapshotRequest {
            id,
            timestamp,
            options,
        }
    }

    /// A periodic checkpoint `id` triggered at `timestamp`.
    pub fn checkpoint(id: CheckpointId, timestamp: u64) -> Self {
        Self::new(id, timestamp, CheckpointOptions::checkpoint())
    }

    /// A savepoint `id` triggered at `timestamp`.
    pub fn savepoint(id: CheckpointId, timestamp: u64) -> Self {
        Self::new(id, timestamp, CheckpointOptions::savepoint())
    }

    /// True for savepoints.
    pub fn is_savepoint(&self) -> bool {
        self.options.is_savepoint()
    }
}

/// Whether a snapshot is a checkpoint or a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum CheckpointType {
    /// A periodic checkpoint: may be incremental and may share files with earlier ones.
    #[default]
    Checkpoint,
    /// A savepoint: always full, self-contained and in the canonical, portable format.
    Savepoint,
}

/// Options of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckpointOptions {
    /// Checkpoint or savepoint.
    pub checkpoint_type: CheckpointType,
}

impl CheckpointOptions {
    /// Options of a periodic checkpoint.
    pub fn checkpoint() -> Self {
        CheckpointOptions {
            checkpoint_type: CheckpointType::Checkpoint,
        }
    }

    /// Options of a savepoint.
    pub fn savepoint() -> Self {
        CheckpointOptions {
            checkpoint_type: CheckpointType::Savepoint,
        }
    }

    /// True for savepoints.
    pub fn is_savepoint(&self) -> bool {
        self.checkpoint_type == CheckpointType::Savepoint
    }
}

/// Where snapshots keep their task-local copies for local recovery: a directory per
/// checkpoint on the task's own disk. The `state-storage-local` crate implements it
/// (`TaskLocalDirectory`); backends only call it, so they write task-local copies without
/// knowing how files are written. A backend restores a task-local copy only when the
/// restoring job runs with local recovery on (it may need this storage to read the copy),
/// and says so with [`Error::Unsupported`](crate::Error::Unsupported) otherwise.
pub trait TaskLocalStorage: Send + Sync + fmt::Debug {
    /// The root directory of all task-local copies.
    fn root(&self) -> &Path;

    /// The directory of checkpoint `checkpoint_id`'s task-local copy (not created).
    fn checkpoint_dir(&self, checkpoint_id: CheckpointId) -> PathBuf {
        self.root().join(format!("chk_{checkpoint_id}"))
    }

    /// A stream writing a new task-local file in `dir`; like every checkpoint stream, it
    /// leaves no file behind unless it is completed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) naming the directory.
    fn create_stream(&self, dir: &Path) -> Result<Box<dyn CheckpointStateOutputStream>>;

    /// A handle to the task-local file at `path` of `size` bytes: readable, discarded by
    /// deleting the file, and refused in checkpoint metadata.
    fn file_handle(&self, path: PathBuf, size: u64) -> Arc<dyn StreamStateHandle>;
}

/// Whether, and where, snapshots also keep a task-local copy for fast local recovery: that
/// of checkpoint `n` under `<local root>/chk_<n>/`.
#[derive(Debug, Clone, Default)]
pub struct LocalRecoveryConfig {
    storage: Option<Arc<dyn TaskLocalStorage>>,
}

impl LocalRecoveryConfig {
    /// Local recovery off: only the job-manager-owned copy is written.
    pub fn disabled() -> Self {
        LocalRecoveryConfig { storage: None }
    }

    /// Local recovery on, task-local copies in `storage`.
    pub fn enabled(storage: Arc<dyn TaskLocalStorage>) -> Self {
        LocalRecoveryConfig {
            storage: Some(storage),
        }
    }

    /// Where task-local copies go, when enabled.
    pub fn storage(&self) -> Option<&Arc<dyn TaskLocalStorage>> {
        self.storage.as_ref()
    }

    /// The root directory of task-local copies, when enabled.
    pub fn local_root(&self) -> Option<&Path> {
        self.storage.as_deref().map(TaskLocalStorage::root)
    }

    /// The directory of checkpoint `checkpoint_id`'s task-local copy, when enabled.
    pub fn checkpoint_dir(&self, checkpoint_id: CheckpointId) -> Option<PathBuf> {
        self.storage().map(|s| s.checkpoint_dir(checkpoint_id))
    }
}

/// Told when checkpoints complete or are aborted, so incremental strategies can prune the
/// history they keep and forget snapshots that will never complete.
pub trait CheckpointListener {
    /// Checkpoint `checkpoint_id` completed: every instance's snapshot was stored and the
    /// checkpoint is now the latest that restore may use. The default does nothing, for
    /// backends whose snapshots keep no history.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        let _ = checkpoint_id;
        Ok(())
    }

    /// Checkpoint `checkpoint_id` was aborted and will never complete.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        let _ = checkpoint_id;
        Ok(())
    }
}

//! Checkpoint options, local recovery configuration and the checkpoint listener.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Result;

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

/// Whether, and where, snapshots also keep a task-local copy for fast local recovery.
///
/// With local recovery on, the task-local copy of checkpoint `n` is written under
/// `<local root>/chk_<n>/`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocalRecoveryConfig {
    local_root: Option<PathBuf>,
}

impl LocalRecoveryConfig {
    /// Local recovery off: only the job-manager-owned copy is written.
    pub fn disabled() -> Self {
        LocalRecoveryConfig { local_root: None }
    }

    /// Local recovery on, task-local copies under `local_root`.
    pub fn enabled(local_root: impl Into<PathBuf>) -> Self {
        LocalRecoveryConfig {
            local_root: Some(local_root.into()),
        }
    }

    /// Whether task-local copies are written.
    pub fn is_enabled(&self) -> bool {
        self.local_root.is_some()
    }

    /// The root directory of task-local copies, when enabled.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// The directory of checkpoint `checkpoint_id`'s task-local copy, when enabled.
    pub fn checkpoint_dir(&self, checkpoint_id: u64) -> Option<PathBuf> {
        self.local_root
            .as_ref()
            .map(|root| root.join(format!("chk_{checkpoint_id}")))
    }
}

/// Told when checkpoints complete or are aborted, so incremental strategies can prune the
/// history they keep and forget snapshots that will never complete.
pub trait CheckpointListener {
    /// Checkpoint `checkpoint_id` completed: every instance's snapshot was stored and the
    /// checkpoint is now the latest that restore may use.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()>;

    /// Checkpoint `checkpoint_id` was aborted and will never complete.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) -> Result<()> {
        let _ = checkpoint_id;
        Ok(())
    }
}

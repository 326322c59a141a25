//! [`StateObject`] and [`SnapshotResult`]: what a snapshot produces and who owns it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Result;

/// Anything a snapshot stores: it can report its size and delete what it stored.
pub trait StateObject {
    /// Deletes the stored data. Deleting data that is already gone is not an error, so a
    /// discard can be retried after a partial failure.
    fn discard(&self) -> Result<()>;

    /// Size in bytes of the stored data (file bytes plus bytes kept inline).
    fn state_size(&self) -> u64;
}

impl<T: StateObject + ?Sized> StateObject for Arc<T> {
    fn discard(&self) -> Result<()> {
        (**self).discard()
    }

    fn state_size(&self) -> u64 {
        (**self).state_size()
    }
}

impl<T: StateObject + ?Sized> StateObject for Box<T> {
    fn discard(&self) -> Result<()> {
        (**self).discard()
    }

    fn state_size(&self) -> u64 {
        (**self).state_size()
    }
}

/// The outcome of one snapshot: the handle the coordinator owns (job-manager-owned) and,
/// with local recovery, a task-local copy. Both absent means nothing was written.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use state_api::{ByteStreamStateHandle, SnapshotResult, StateObject};
///
/// let empty: SnapshotResult<ByteStreamStateHandle> = SnapshotResult::empty();
/// assert!(empty.is_empty());
/// let result = SnapshotResult::of(ByteStreamStateHandle::new("meta", b"abc".to_vec()));
/// assert_eq!(result.state_size(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResult<H> {
    job_manager_owned: Option<H>,
    task_local: Option<H>,
}

impl<H> Default for SnapshotResult<H> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<H> SnapshotResult<H> {
    /// The result of a snapshot that had nothing to write.
    pub fn empty() -> Self {
        SnapshotResult {
            job_manager_owned: None,
            task_local: None,
        }
    }

    /// A result without a task-local copy.
    pub fn of(job_manager_owned: H) -> Self {
        SnapshotResult {
            job_manager_owned: Some(job_manager_owned),
            task_local: None,
        }
    }

    /// A result with a task-local copy for local recovery.
    pub fn with_local_state(job_manager_owned: H, task_local: H) -> Self {
        SnapshotResult {
            job_manager_owned: Some(job_manager_owned),
            task_local: Some(task_local),
        }
    }

    /// The handle reported to the coordinator.
    pub fn job_manager_owned(&self) -> Option<&H> {
        self.job_manager_owned.as_ref()
    }

    /// The task-local copy, if local recovery wrote one.
    pub fn task_local(&self) -> Option<&H> {
        self.task_local.as_ref()
    }

    /// Both parts, by value.
    pub fn into_parts(self) -> (Option<H>, Option<H>) {
        (self.job_manager_owned, self.task_local)
    }

    /// True when the snapshot wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.job_manager_owned.is_none() && self.task_local.is_none()
    }

    /// Converts both handles with `f`.
    pub fn map<U>(self, mut f: impl FnMut(H) -> U) -> SnapshotResult<U> {
        SnapshotResult {
            job_manager_owned: self.job_manager_owned.map(&mut f),
            task_local: self.task_local.map(f),
        }
    }
}

impl<H: StateObject> StateObject for SnapshotResult<H> {
    /// Discards both parts; the first failure is returned after trying both.
    fn discard(&self) -> Result<()> {
        let remote = self.job_manager_owned.as_ref().map_or(Ok(()), H::discard);
        let local = self.task_local.as_ref().map_or(Ok(()), H::discard);
        remote.and(local)
    }

    /// The size of the job-manager-owned part.
    fn state_size(&self) -> u64 {
        self.job_manager_owned.as_ref().map_or(0, H::state_size)
    }
}

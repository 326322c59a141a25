//! [`CheckpointStorage`]: where a job's checkpoints live, whatever the medium.

use std::fmt;
use std::sync::Arc;

use crate::CheckpointId;
use crate::checkpoint_metadata::JobId;
use crate::{CheckpointMetadata, CheckpointStreamFactory, Error, Result};

/// A file in a [`CheckpointStorage`], as [`CheckpointStorage::list_files`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredFile {
    /// Its path relative to the storage root, `/`-separated: `chk-7/…`, `shared/chk-5-…`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A job's claim on a checkpoint storage (see [`CheckpointStorage::claim`]): the storage
/// is the job's until the claim is dropped.
pub struct StorageClaim {
    held: Option<Box<dyn Send + Sync>>,
}

impl StorageClaim {
    /// A claim that keeps `guard` (a locked file, a lease) until dropped.
    pub fn held(guard: impl Send + Sync + 'static) -> Self {
        StorageClaim {
            held: Some(Box::new(guard)),
        }
    }

    /// No claim: the storage cannot lock out other writers.
    pub fn unenforced() -> Self {
        StorageClaim { held: None }
    }

    /// Whether the storage enforces the claim.
    pub fn is_enforced(&self) -> bool {
        self.held.is_some()
    }
}

impl fmt::Debug for StorageClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageClaim")
            .field("enforced", &self.is_enforced())
            .finish()
    }
}

/// Checkpoint storage: one [`CheckpointStreamFactory`] per checkpoint, and the committed
/// [`CheckpointMetadata`] that makes a checkpoint complete. Every in-tree storage (a local
/// directory in `state-storage-local`, the embedded default; object storage in
/// `state-storage-object`) lays out its root as below; code that only checkpoints, commits
/// and restores (a coordinator, a job) programs against `dyn CheckpointStorage` and runs on
/// any of them.
///
/// | name | holds |
/// | --- | --- |
/// | `chk-<id>/` | exclusive streams of checkpoint `<id>` |
/// | `chk-<id>/_metadata` | the checkpoint's metadata: present once it completed |
/// | `shared/chk-<id>-*` | shared streams (incremental files) first written by checkpoint `<id>`, reused by later ones |
///
/// Files whose names start with `.inprogress-` are being written (by the same rules); the
/// checkpoint id in every name is what lets a clean-up after a crash tell the files of a
/// checkpoint still being written from those a crash left behind.
///
/// # Example
///
/// ```
/// use std::io::Write;
/// use std::sync::Arc;
/// use state_api::{CheckpointId, CheckpointMetadata, CheckpointStorage, CheckpointType};
/// use state_api::{CheckpointedStateScope, MaxParallelism};
/// use state_storage_local::LocalCheckpointStorage;
///
/// let root = tempfile::tempdir().unwrap();
/// let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalCheckpointStorage::new(root.path())?);
/// let id = CheckpointId::new(3);
/// let factory = storage.stream_factory(id)?;
/// let mut out = factory.create_output_stream(CheckpointedStateScope::Exclusive)?;
/// out.write_all(b"state").unwrap();
/// out.close_and_get_handle()?;
/// let max_parallelism = MaxParallelism::new(128)?;
/// storage.commit_checkpoint(&CheckpointMetadata::new(id, 0, CheckpointType::Checkpoint, max_parallelism))?;
/// assert_eq!(storage.completed_checkpoints()?, [3]);
/// storage.discard_checkpoint(id)?;
/// assert!(storage.completed_checkpoints()?.is_empty());
/// # Ok::<(), state_api::Error>(())
/// ```
pub trait CheckpointStorage: Send + Sync + fmt::Debug {
    /// Where the storage is, for messages and listings: a directory, or a URL without
    /// credentials.
    fn location(&self) -> String;

    /// The stream factory of checkpoint `checkpoint_id`: exclusive streams go under
    /// `chk-<id>/`, shared streams under `shared/`.
    fn stream_factory(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<Arc<dyn CheckpointStreamFactory>>;

    /// Commits `metadata` as `chk-<id>/_metadata` in one step: the checkpoint becomes
    /// complete and visible to [`completed_checkpoints`](Self::completed_checkpoints), whole
    /// or not at all.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the checkpoint is
    /// committed already (metadata is never replaced); a storage error otherwise.
    fn commit_checkpoint(&self, metadata: &CheckpointMetadata) -> Result<()>;

    /// Ids of the committed checkpoints, ascending.
    fn completed_checkpoints(&self) -> Result<Vec<CheckpointId>>;

    /// The metadata of committed checkpoint `checkpoint_id`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) for a checkpoint that was never
    /// committed; [`Error::Snapshot`](crate::Error::Snapshot) around a corruption for a
    /// damaged one.
    fn load_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<CheckpointMetadata>;

    /// Deletes everything under `chk-<id>/`, its metadata first, so a half-discarded
    /// checkpoint is never taken for a complete one. Shared streams are not touched: their
    /// lifetime is the coordinator's `SharedStateRegistry` (`state-coordinator`). Discarding a
    /// checkpoint that is not there does nothing.
    fn discard_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<()>;

    /// Claims the storage for the writing job `job` until the returned claim is dropped: a
    /// second job claiming it meanwhile gets [`Error::InUse`](crate::Error::InUse) instead
    /// of interleaving its checkpoints with the first one's. The default claims nothing
    /// ([`StorageClaim::unenforced`]); a local directory locks a file, released also when
    /// the process is killed.
    ///
    /// # Errors
    ///
    /// [`Error::InUse`](crate::Error::InUse) naming the holder; a storage error.
    fn claim(&self, job: &JobId) -> Result<StorageClaim> {
        let _ = job;
        Ok(StorageClaim::unenforced())
    }

    /// Every file under the root but the claim's lock, for the clean-up after crashes
    /// (`state-coordinator`'s `recover`, `snapstate gc`).
    ///
    /// # Errors
    ///
    /// A storage error; by default [`Error::Unsupported`]: a storage that cannot list is
    /// never cleaned up.
    fn list_files(&self) -> Result<Vec<StoredFile>> {
        Err(Error::Unsupported(format!("listing {}", self.location())))
    }

    /// Deletes the file at `path` ([`StoredFile::path`]); a missing file is no error.
    ///
    /// # Errors
    ///
    /// As [`list_files`](Self::list_files).
    fn delete_file(&self, path: &str) -> Result<()> {
        Err(Error::Unsupported(format!(
            "deleting {path} in {}",
            self.location()
        )))
    }
}

impl<T: CheckpointStorage + ?Sized> CheckpointStorage for Arc<T> {
    fn location(&self) -> String {
        (**self).location()
    }

    fn stream_factory(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<Arc<dyn CheckpointStreamFactory>> {
        (**self).stream_factory(checkpoint_id)
    }

    fn commit_checkpoint(&self, metadata: &CheckpointMetadata) -> Result<()> {
        (**self).commit_checkpoint(metadata)
    }

    fn completed_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        (**self).completed_checkpoints()
    }

    fn load_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<CheckpointMetadata> {
        (**self).load_checkpoint(checkpoint_id)
    }

    fn discard_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<()> {
        (**self).discard_checkpoint(checkpoint_id)
    }

    fn claim(&self, job: &JobId) -> Result<StorageClaim> {
        (**self).claim(job)
    }

    fn list_files(&self) -> Result<Vec<StoredFile>> {
        (**self).list_files()
    }

    fn delete_file(&self, path: &str) -> Result<()> {
        (**self).delete_file(path)
    }
}

//! Checkpoint storage for the coordinator's tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use state_api::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, CheckpointStreamFactory, Error, JobId,
    Result, StorageClaim,
};
use state_storage_local::LocalCheckpointStorage;

/// Local storage whose commits fail while `refuse` is set.
#[derive(Debug)]
pub(crate) struct Flaky {
    /// The storage that does the work.
    pub(crate) inner: Arc<LocalCheckpointStorage>,
    /// Whether commits fail.
    pub(crate) refuse: AtomicBool,
    /// Whether discarding a checkpoint's directory fails.
    pub(crate) refuse_discards: AtomicBool,
}

impl Flaky {
    /// `inner`, its commits failing when `refuse`.
    pub(crate) fn new(inner: Arc<LocalCheckpointStorage>, refuse: bool) -> Self {
        Flaky {
            inner,
            refuse: AtomicBool::new(refuse),
            refuse_discards: AtomicBool::new(false),
        }
    }
}

impl CheckpointStorage for Flaky {
    fn location(&self) -> String {
        CheckpointStorage::location(&*self.inner)
    }
    fn stream_factory(&self, id: CheckpointId) -> Result<Arc<dyn CheckpointStreamFactory>> {
        CheckpointStorage::stream_factory(&*self.inner, id)
    }
    fn commit_checkpoint(&self, metadata: &CheckpointMetadata) -> Result<()> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Error::io(
                "_metadata",
                std::io::Error::other("injected commit failure"),
            ));
        }
        CheckpointStorage::commit_checkpoint(&*self.inner, metadata)
    }
    fn completed_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        CheckpointStorage::completed_checkpoints(&*self.inner)
    }
    fn load_checkpoint(&self, id: CheckpointId) -> Result<CheckpointMetadata> {
        CheckpointStorage::load_checkpoint(&*self.inner, id)
    }
    fn discard_checkpoint(&self, id: CheckpointId) -> Result<()> {
        if self.refuse_discards.load(Ordering::SeqCst) {
            return Err(Error::io(
                format!("chk-{id}"),
                std::io::Error::other("injected discard failure"),
            ));
        }
        CheckpointStorage::discard_checkpoint(&*self.inner, id)
    }
    fn claim(&self, job: &JobId) -> Result<StorageClaim> {
        CheckpointStorage::claim(&*self.inner, job)
    }
}

//! [`Job`]: the part of a checkpoint coordinator the benchmark and the demo need.
//!
//! A checkpoint completes when the job commits its metadata: incremental handles are
//! registered with the job's [`SharedStateRegistry`] first (so shared files are counted
//! and placeholders resolve), and the metadata holds the resolved handles, so the
//! `snapstate` tool and a restore read it without the registry. Subsuming a checkpoint
//! discards what only it held: its own files, its metadata, and shared files no retained
//! checkpoint refers to any more.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use state_api::CheckpointId;
use state_api::{
    CheckpointMetadata, CheckpointStorage, CheckpointType, IncrementalRemoteKeyedStateHandle,
    InstanceSnapshot, KeyedStateHandle, Result, StateObject,
};
use state_coordinator::SharedStateRegistry;

use crate::counting::CountingStreamFactory;
use crate::workload::MAX_PARALLELISM;

/// Checkpoint storage, its shared state registry and the retained checkpoints of one job.
#[derive(Debug)]
pub(crate) struct Job {
    storage: Arc<dyn CheckpointStorage>,
    shared: SharedStateRegistry,
    properties: BTreeMap<String, String>,
    /// Retained checkpoints as the registry returned them (shared files as placeholders).
    retained: Mutex<BTreeMap<CheckpointId, Vec<Arc<dyn KeyedStateHandle>>>>,
}

impl Job {
    /// A job storing checkpoints in `storage`, describing itself with `properties` in
    /// every checkpoint's metadata.
    pub(crate) fn new(
        storage: Arc<dyn CheckpointStorage>,
        properties: BTreeMap<String, String>,
    ) -> Self {
        Job {
            storage,
            shared: SharedStateRegistry::default(),
            properties,
            retained: Mutex::default(),
        }
    }

    /// A byte-counting stream factory for checkpoint `checkpoint_id`.
    pub(crate) fn factory(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<Arc<CountingStreamFactory>> {
        Ok(Arc::new(CountingStreamFactory::new(
            self.storage.stream_factory(checkpoint_id)?,
        )))
    }

    /// Completes checkpoint `checkpoint_id` whose instance `i` stored `handles[i]`:
    /// registers incremental handles, commits the metadata, and returns the handles to
    /// restore from.
    pub(crate) fn complete(
        &self,
        checkpoint_id: CheckpointId,
        checkpoint_type: CheckpointType,
        handles: Vec<Arc<dyn KeyedStateHandle>>,
    ) -> Result<Vec<Arc<dyn KeyedStateHandle>>> {
        let mut retained = Vec::new();
        let mut restorable = Vec::new();
        for handle in handles {
            match handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
                Some(incremental) => {
                    let kept = self.shared.register(incremental)?;
                    restorable.push(Arc::new(self.shared.resolve(&kept)?) as Arc<_>);
                    retained.push(Arc::new(kept) as Arc<dyn KeyedStateHandle>);
                }
                None => {
                    restorable.push(handle.clone());
                    retained.push(handle);
                }
            }
        }
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut metadata =
            CheckpointMetadata::new(checkpoint_id, timestamp, checkpoint_type, MAX_PARALLELISM);
        metadata.properties = self.properties.clone();
        metadata.instances = (0u32..)
            .zip(&restorable)
            .map(|(index, handle)| InstanceSnapshot {
                index,
                keyed: vec![handle.clone()],
                operator: Vec::new(),
            })
            .collect();
        self.storage.commit_checkpoint(&metadata)?;
        self.retained
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(checkpoint_id, retained);
        Ok(restorable)
    }

    /// Checkpoint `checkpoint_id` is subsumed: discards its own files and metadata and the
    /// shared files no other retained checkpoint refers to; returns how many shared files
    /// went.
    pub(crate) fn subsume(&self, checkpoint_id: CheckpointId) -> Result<usize> {
        let handles = self
            .retained
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&checkpoint_id)
            .unwrap_or_default();
        for handle in &handles {
            handle.discard()?;
        }
        let pruned = self.shared.release(checkpoint_id)?;
        self.storage.discard_checkpoint(checkpoint_id)?;
        Ok(pruned)
    }
}

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

use std::time::Instant;

use state_api::CheckpointId;
use state_api::{
    CheckpointMetadata, CheckpointOptions, CheckpointStorage, CheckpointType,
    IncrementalRemoteKeyedStateHandle, InstanceSnapshot, KeyedStateBackend, KeyedStateHandle,
    Result, SnapshotRequest, StateObject,
};
use state_coordinator::SharedStateRegistry;

use crate::DynResult;
use crate::counting::CountingStreamFactory;
use crate::workload::MAX_PARALLELISM;

/// A checkpoint of every instance of a job: figures summed over the instances.
#[derive(Debug)]
pub(crate) struct Taken {
    /// Milliseconds of the synchronous parts.
    pub(crate) sync_ms: f64,
    /// Milliseconds of the asynchronous parts.
    pub(crate) async_ms: f64,
    /// Bytes written.
    pub(crate) bytes: u64,
    /// The handles to restore from, one per instance.
    pub(crate) handles: Vec<Arc<dyn KeyedStateHandle>>,
}

impl Taken {
    /// Bytes of everything the checkpoint refers to.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.handles.iter().map(|handle| handle.state_size()).sum()
    }
}

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

    /// Snapshots every instance, one after the other, as checkpoint `checkpoint_id` with
    /// `options`, completes the checkpoint and notifies the instances.
    pub(crate) fn checkpoint_all(
        &self,
        instances: &mut [Box<dyn KeyedStateBackend>],
        checkpoint_id: CheckpointId,
        options: &CheckpointOptions,
    ) -> DynResult<Taken> {
        let factory = self.factory(checkpoint_id)?;
        let millis = |started: Instant| started.elapsed().as_secs_f64() * 1000.0;
        let (mut sync_ms, mut async_ms) = (0.0, 0.0);
        let mut handles = Vec::new();
        for instance in instances.iter_mut() {
            let started = Instant::now();
            let task = instance.snapshot(
                &SnapshotRequest::new(checkpoint_id, checkpoint_id.get(), options.clone()),
                factory.clone(),
            )?;
            sync_ms += millis(started);
            let started = Instant::now();
            let result = task.run()?;
            async_ms += millis(started);
            handles.push(
                result
                    .job_manager_owned()
                    .cloned()
                    .ok_or("a snapshot of filled state stored nothing")?,
            );
        }
        let checkpoint_type = match options.is_savepoint() {
            true => CheckpointType::Savepoint,
            false => CheckpointType::Checkpoint,
        };
        let handles = self.complete(checkpoint_id, checkpoint_type, handles)?;
        for instance in instances.iter_mut() {
            instance.notify_checkpoint_complete(checkpoint_id)?;
        }
        Ok(Taken {
            sync_ms,
            async_ms,
            bytes: factory.bytes(),
            handles,
        })
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

//! [`Job`]: the in-process driver the benchmark and the demo share over a
//! [`CheckpointCoordinator`]: it snapshots every instance, acknowledges each part and
//! tells the instances when a checkpoint completed. Registering shared files, committing
//! the metadata and subsuming older checkpoints are the coordinator's.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use std::time::Instant;

use state_api::CheckpointId;
use state_api::{
    CheckpointOptions, CheckpointStorage, InstanceSnapshot, KeyedStateBackend, StateObject,
};
use state_coordinator::{
    Acknowledged, Acknowledgement, CheckpointCoordinator, Completed, CoordinatorConfig,
    InstanceStats,
};

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
    /// What completing it did: the checkpoints it subsumed and the shared files pruned.
    pub(crate) completed: Completed,
    /// Shared files deleted because of it: no retained checkpoint refers to them any more.
    pub(crate) pruned: usize,
}

impl Taken {
    /// Bytes of everything the checkpoint refers to.
    pub(crate) fn total_bytes(&self) -> u64 {
        (self.completed.metadata.keyed_handles().iter())
            .map(|handle| handle.state_size())
            .sum()
    }
}

/// The checkpoints of one job, kept by a [`CheckpointCoordinator`] over its storage.
#[derive(Debug)]
pub(crate) struct Job {
    storage: Arc<dyn CheckpointStorage>,
    coordinator: CheckpointCoordinator,
}

impl Job {
    /// A job of `instances` instances storing checkpoints in `storage` (one retained),
    /// describing itself with `properties` in every checkpoint's metadata.
    pub(crate) fn new(
        storage: Arc<dyn CheckpointStorage>,
        instances: u32,
        properties: BTreeMap<String, String>,
    ) -> DynResult<Self> {
        let instances = NonZeroU32::new(instances).ok_or("a job has at least one instance")?;
        let mut config = CoordinatorConfig::new(instances, MAX_PARALLELISM);
        config.properties = properties;
        Ok(Job {
            coordinator: CheckpointCoordinator::new(storage.clone(), config),
            storage,
        })
    }

    /// Snapshots every instance, one after the other, as the next checkpoint with
    /// `options`, completes it and notifies the instances. A job restored with another
    /// parallelism is rescaled first.
    pub(crate) fn checkpoint_all(
        &self,
        instances: &mut [Box<dyn KeyedStateBackend>],
        options: &CheckpointOptions,
    ) -> DynResult<Taken> {
        let parallelism = u32::try_from(instances.len())?;
        self.coordinator
            .rescale(NonZeroU32::new(parallelism).ok_or("no instance to checkpoint")?)?;
        let request = self
            .coordinator
            .trigger(options.checkpoint_type, Instant::now())?;
        let checkpoint_id: CheckpointId = request.id;
        let factory = Arc::new(CountingStreamFactory::new(
            self.storage.stream_factory(checkpoint_id)?,
        ));
        let millis = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
        let (mut sync_ms, mut async_ms) = (0.0, 0.0);
        let mut completed = None;
        for (index, instance) in (0u32..).zip(instances.iter_mut()) {
            let written = factory.bytes();
            let started = Instant::now();
            let task = instance.snapshot(&request, factory.clone())?;
            let sync = started.elapsed();
            let started = Instant::now();
            let result = task.run()?;
            let asynchronous = started.elapsed();
            sync_ms += millis(sync);
            async_ms += millis(asynchronous);
            let handle = (result.job_manager_owned().cloned())
                .ok_or("a snapshot of filled state stored nothing")?;
            let ack = Acknowledgement {
                snapshot: InstanceSnapshot {
                    index,
                    keyed: vec![handle],
                    operator: Vec::new(),
                },
                stats: InstanceStats {
                    sync,
                    asynchronous,
                    bytes: factory.bytes() - written,
                },
            };
            match self.coordinator.acknowledge(checkpoint_id, ack)? {
                Acknowledged::Completed(done) => completed = Some(*done),
                Acknowledged::Pending { .. } => {}
                Acknowledged::Late => {
                    return Err(format!("checkpoint {checkpoint_id} aborted").into());
                }
            }
        }
        let completed = completed.ok_or("the checkpoint did not complete")?;
        for instance in instances.iter_mut() {
            instance.notify_checkpoint_complete(checkpoint_id)?;
        }
        // Every instance knows now: what was held for a late one goes.
        let released = self.coordinator.all_instances_notified()?;
        Ok(Taken {
            sync_ms,
            async_ms,
            bytes: factory.bytes(),
            pruned: completed.pruned + released,
            completed,
        })
    }

    /// The job ends without keeping its checkpoints: every retained one goes with its
    /// shared files (savepoints stay).
    pub(crate) fn discard_checkpoints(&self) -> DynResult {
        Ok(self.coordinator.discard_all()?)
    }
}

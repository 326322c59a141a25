//! [`CheckpointCoordinator`]: the lifecycle of a job's checkpoints, as Flink's
//! `CheckpointCoordinator` and `CompletedCheckpointStore` keep it.
//!
//! - [`trigger`](CheckpointCoordinator::trigger) opens a pending checkpoint and returns the
//!   [`SnapshotRequest`] every instance snapshots with; it refuses while
//!   `max-concurrent-checkpoints` are pending, before `min-pause` has passed since the last
//!   completion, and once the job failed ([`TriggerRefused`]).
//! - Each instance [`acknowledge`](CheckpointCoordinator::acknowledge)s with what it stored
//!   or [`decline`](CheckpointCoordinator::decline)s. The last acknowledgement completes the
//!   checkpoint: incremental handles are registered with the [`SharedStateRegistry`], the
//!   metadata (with the registry's resolved handles, so tools and restores read it alone)
//!   is committed through [`CheckpointStorage::commit_checkpoint`], pending checkpoints
//!   older than it are aborted, and retained checkpoints beyond `num-retained` are subsumed.
//! - A declined, timed-out ([`abort_expired`](CheckpointCoordinator::abort_expired)) or
//!   older pending checkpoint is aborted: what its instances acknowledged is discarded and
//!   its directory removed. More than `tolerable-failed-checkpoints` failures in a row fail
//!   the job ([`Aborted::job_failed`]).
//! - Subsuming a checkpoint discards its own files and metadata and releases its shared
//!   files, which the registry deletes once no retained checkpoint refers to them.
//!   Savepoints are never subsumed nor discarded.
//! - The release waits for the next completion: an instance is told of a completion
//!   (`notify_checkpoint_complete`) some time after it, and one that snapshots the next
//!   checkpoint before it is told builds on the checkpoint just subsumed, referring to its
//!   shared files. Instances must be told of checkpoint N's completion before they
//!   snapshot the checkpoint after the next one.
//!
//! The coordinator never calls an instance: [`Completed`] and [`Aborted`] say which
//! checkpoints the instances are to be told about (`notify_checkpoint_complete`,
//! `notify_checkpoint_aborted`), so a distributed engine carries them, as it carries
//! [`Acknowledgement`]s, which serialize.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use state_api::{
    CheckpointId, CheckpointMetadata, CheckpointOptions, CheckpointStorage, CheckpointType, Error,
    IncrementalRemoteKeyedStateHandle, InstanceSnapshot, JobId, KeyedStateHandle, MaxParallelism,
    OperatorStreamStateHandle, Result, SnapshotRequest, StateObject,
};

use crate::SharedStateRegistry;

/// How many [`CheckpointStats`] the coordinator keeps, newest last.
const STATS_KEPT: usize = 100;

/// How many ids of aborted checkpoints the coordinator remembers, to discard what their
/// late acknowledgements stored.
const ABORTED_KEPT: usize = 1000;

/// What governs a [`CheckpointCoordinator`], under the names Flink's configuration uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// The job's parallelism: the instances that acknowledge every checkpoint (see
    /// [`CheckpointCoordinator::rescale`]).
    pub instances: NonZeroU32,
    /// Max parallelism (number of key groups) recorded in every checkpoint.
    pub max_parallelism: MaxParallelism,
    /// `execution.checkpointing.timeout`: a checkpoint still pending this long after its
    /// trigger is aborted by [`CheckpointCoordinator::abort_expired`]. Default 10 minutes.
    pub timeout: Duration,
    /// `execution.checkpointing.max-concurrent-checkpoints`. Default 1.
    pub max_concurrent: NonZeroUsize,
    /// `execution.checkpointing.min-pause`: least time from a completion to the next
    /// trigger. Default none.
    pub min_pause: Duration,
    /// `execution.checkpointing.tolerable-failed-checkpoints`: failures in a row the job
    /// survives. Default 0.
    pub tolerable_failures: u32,
    /// `execution.checkpointing.num-retained`: completed checkpoints kept. Default 1.
    pub num_retained: NonZeroUsize,
    /// The job recorded in every checkpoint's metadata.
    pub job_id: Option<JobId>,
    /// Facts about the job recorded in every checkpoint's metadata.
    pub properties: BTreeMap<String, String>,
}

impl CoordinatorConfig {
    /// Flink's defaults for a job of `instances` instances and `max_parallelism` key groups.
    pub fn new(instances: NonZeroU32, max_parallelism: MaxParallelism) -> Self {
        CoordinatorConfig {
            instances,
            max_parallelism,
            timeout: Duration::from_secs(600),
            max_concurrent: NonZeroUsize::MIN,
            min_pause: Duration::ZERO,
            tolerable_failures: 0,
            num_retained: NonZeroUsize::MIN,
            job_id: None,
            properties: BTreeMap::new(),
        }
    }
}

/// What one instance reports of its part of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStats {
    /// Its synchronous part.
    pub sync: Duration,
    /// Its asynchronous part.
    pub asynchronous: Duration,
    /// Bytes it wrote.
    pub bytes: u64,
}

/// An instance's part of a checkpoint: the handles it stored and its figures. Handles
/// deserialize within the storage's handle scope, as the metadata's do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// The handles, under the instance's index.
    pub snapshot: InstanceSnapshot,
    /// Its figures.
    pub stats: InstanceStats,
}

/// Why [`CheckpointCoordinator::trigger`] started no checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerRefused {
    /// `max-concurrent-checkpoints` are pending.
    #[error("{pending} checkpoints are pending, the most max-concurrent-checkpoints allows")]
    TooManyPending {
        /// Pending checkpoints.
        pending: usize,
    },
    /// The last checkpoint completed less than `min-pause` ago.
    #[error("the last checkpoint completed {since:?} ago, min-pause is {min_pause:?}")]
    MinPause {
        /// Time since the last completion.
        since: Duration,
        /// The configured pause.
        min_pause: Duration,
    },
    /// More checkpoints failed in a row than `tolerable-failed-checkpoints`.
    #[error("the job failed: {failures} checkpoints failed in a row, {tolerable} are tolerated")]
    JobFailed {
        /// Failures in a row.
        failures: u32,
        /// The configured tolerance.
        tolerable: u32,
    },
}

/// Where a checkpoint is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CheckpointStatus {
    /// Waiting for acknowledgements.
    Pending,
    /// Committed.
    Completed,
    /// Aborted, with the reason.
    Failed(String),
}

/// The figures of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointStats {
    /// Its id.
    pub id: CheckpointId,
    /// Checkpoint or savepoint.
    pub checkpoint_type: CheckpointType,
    /// Where it is.
    pub status: CheckpointStatus,
    /// From the trigger to the completion or abortion.
    pub duration: Option<Duration>,
    /// Each acknowledged instance's figures, by instance index.
    pub instances: BTreeMap<u32, InstanceStats>,
    /// Bytes the instances wrote.
    pub bytes: u64,
    /// Bytes of everything the completed checkpoint refers to, shared files included.
    pub state_size: u64,
}

/// A completed checkpoint: tell every instance `notify_checkpoint_complete(id)` and
/// `notify_checkpoint_aborted` for each of `aborted`.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The committed metadata, with the handles a restore reads.
    pub metadata: CheckpointMetadata,
    /// Older pending checkpoints it aborted.
    pub aborted: Vec<CheckpointId>,
    /// Retained checkpoints it subsumed (discarded).
    pub subsumed: Vec<CheckpointId>,
    /// Shared files deleted with them: no retained checkpoint refers to them any more.
    pub pruned: usize,
    /// Deletions of aborted or subsumed checkpoints' files that failed after the commit:
    /// those files are left behind, the checkpoint is complete all the same.
    pub cleanup_errors: Vec<String>,
    /// Its figures.
    pub stats: CheckpointStats,
}

/// An aborted checkpoint: tell every instance `notify_checkpoint_aborted(id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aborted {
    /// The checkpoint.
    pub id: CheckpointId,
    /// Why.
    pub reason: String,
    /// Whether more checkpoints failed in a row than tolerated: the job should fail.
    pub job_failed: bool,
}

/// What an acknowledgement did.
#[derive(Debug, Clone)]
pub enum Acknowledged {
    /// The checkpoint waits for `missing` more instances.
    Pending {
        /// Instances yet to acknowledge.
        missing: usize,
    },
    /// It was the last one: the checkpoint completed.
    Completed(Box<Completed>),
    /// The checkpoint was aborted (declined, timed out, superseded): what the instance
    /// stored was discarded.
    Late,
}

struct Pending {
    request: SnapshotRequest,
    triggered: Instant,
    acks: BTreeMap<u32, Acknowledgement>,
}

/// A completed checkpoint as the coordinator keeps it: shared files as placeholders, so
/// discarding it never deletes a file another checkpoint needs.
struct Retained {
    id: CheckpointId,
    savepoint: bool,
    keyed: Vec<Arc<dyn KeyedStateHandle>>,
    operator: Vec<OperatorStreamStateHandle>,
}

struct Inner {
    instances: NonZeroU32,
    next_id: CheckpointId,
    pending: BTreeMap<CheckpointId, Pending>,
    retained: VecDeque<Retained>,
    /// Recently aborted checkpoints, oldest first.
    aborted: VecDeque<CheckpointId>,
    last_completion: Option<Instant>,
    latest: Option<CheckpointMetadata>,
    failures: u32,
    stats: VecDeque<CheckpointStats>,
    /// Checkpoints subsumed at the last completion whose shared files are still held: an
    /// instance that had not yet been told of that completion when it snapshotted the
    /// next checkpoint builds on the subsumed one and refers to its files. Released at the
    /// next completion, after the new checkpoint's references are registered.
    subsumed_held: Vec<CheckpointId>,
}

/// The checkpoints of one job: pending ones, retained ones and their shared files.
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use std::time::Instant;
/// use state_api::{CheckpointType, InstanceSnapshot, MaxParallelism};
/// use state_coordinator::{Acknowledged, Acknowledgement, CheckpointCoordinator, CoordinatorConfig};
///
/// let dir = tempfile::tempdir()?;
/// let storage = Arc::new(state_storage_local::LocalCheckpointStorage::new(dir.path())?);
/// let config = CoordinatorConfig::new(NonZeroU32::MIN, MaxParallelism::new(128)?);
/// let coordinator = CheckpointCoordinator::new(storage, config);
/// let request = coordinator.trigger(CheckpointType::Checkpoint, Instant::now())?;
/// // ... every instance snapshots with `request` and acknowledges what it stored:
/// let snapshot = InstanceSnapshot { index: 0, keyed: vec![], operator: vec![] };
/// let acknowledged = coordinator.acknowledge(
///     request.id,
///     Acknowledgement { snapshot, stats: Default::default() },
/// )?;
/// let Acknowledged::Completed(completed) = acknowledged else { panic!("one instance") };
/// assert_eq!(completed.metadata.checkpoint_id, request.id);
/// assert_eq!(coordinator.latest_completed().unwrap().checkpoint_id, request.id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CheckpointCoordinator {
    storage: Arc<dyn CheckpointStorage>,
    shared: SharedStateRegistry,
    config: CoordinatorConfig,
    inner: Mutex<Inner>,
}

impl fmt::Debug for CheckpointCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("CheckpointCoordinator")
            .field("storage", &self.storage.location())
            .field("pending", &inner.pending.keys().collect::<Vec<_>>())
            .field(
                "retained",
                &inner.retained.iter().map(|r| r.id).collect::<Vec<_>>(),
            )
            .field("shared", &self.shared)
            .finish()
    }
}

impl CheckpointCoordinator {
    /// A coordinator of a new job storing its checkpoints in `storage`, numbering them
    /// from 1.
    pub fn new(storage: Arc<dyn CheckpointStorage>, config: CoordinatorConfig) -> Self {
        let instances = config.instances;
        CheckpointCoordinator {
            storage,
            shared: SharedStateRegistry::default(),
            config,
            inner: Mutex::new(Inner {
                instances,
                next_id: CheckpointId::new(1),
                pending: BTreeMap::new(),
                retained: VecDeque::new(),
                aborted: VecDeque::new(),
                last_completion: None,
                latest: None,
                failures: 0,
                stats: VecDeque::new(),
                subsumed_held: Vec::new(),
            }),
        }
    }

    /// A coordinator of a job resumed from `restored`, the checkpoint its instances restore
    /// from: its shared files are registered (later checkpoints refer to them by
    /// placeholder), it is retained and subsumed like any completed checkpoint (a restored
    /// savepoint is kept), and checkpoints continue from the id after it.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for a checkpoint of another max parallelism; errors of
    /// [`SharedStateRegistry::register_restored`] (validation, unknown placeholders).
    pub fn resume(
        storage: Arc<dyn CheckpointStorage>,
        config: CoordinatorConfig,
        restored: &CheckpointMetadata,
    ) -> Result<Self> {
        let restored = std::slice::from_ref(restored);
        let (coordinator, _) = Self::resume_all(storage, config, restored, &mut Vec::new())?;
        Ok(coordinator)
    }

    /// A coordinator of a job resumed with `committed` retained (ascending ids; the last is
    /// the restore point), as [`resume`](Self::resume) does for one; those beyond
    /// `num-retained` are subsumed at once. Returns it with the ids subsumed; failures
    /// deleting their files are added to `errors`.
    pub(crate) fn resume_all(
        storage: Arc<dyn CheckpointStorage>,
        config: CoordinatorConfig,
        committed: &[CheckpointMetadata],
        errors: &mut Vec<String>,
    ) -> Result<(Self, Vec<CheckpointId>)> {
        for metadata in committed {
            metadata.check_max_parallelism(config.max_parallelism)?;
        }
        let coordinator = Self::new(storage, config);
        let mut retained = Vec::new();
        for restored in committed {
            retained.push(Retained {
                id: restored.checkpoint_id,
                savepoint: restored.checkpoint_type == CheckpointType::Savepoint,
                keyed: coordinator.shared.register_restored(restored)?,
                operator: restored.operator_handles().into_iter().flatten().collect(),
            });
        }
        let subsumed = {
            let mut inner = coordinator.lock();
            if let Some(latest) = committed.last() {
                inner.next_id = latest.checkpoint_id.next();
                inner.latest = Some(latest.clone());
                tracing::info!(checkpoint = %latest.checkpoint_id, "resumed from checkpoint");
            }
            inner.retained.extend(retained);
            // No instance builds on a checkpoint older than the one it restores: nothing
            // subsumed here is held.
            coordinator.subsume(&mut inner, errors, Hold::No).0
        };
        Ok((coordinator, subsumed))
    }

    /// Numbers the next checkpoint `id` at the least (ids of checkpoints a crash left
    /// unfinished are not reused).
    pub(crate) fn skip_ids_below(&self, id: CheckpointId) {
        let mut inner = self.lock();
        inner.next_id = inner.next_id.max(id);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every transition below is made in full before the lock is released.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configuration it was created with.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The job now runs `instances` instances (it was restored with another parallelism):
    /// checkpoints triggered from now on wait for that many acknowledgements.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] while checkpoints are pending.
    pub fn rescale(&self, instances: NonZeroU32) -> Result<()> {
        let mut inner = self.lock();
        if !inner.pending.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "cannot rescale to {instances} instances while checkpoints {:?} are pending",
                inner.pending.keys().collect::<Vec<_>>()
            )));
        }
        inner.instances = instances;
        Ok(())
    }

    /// The job ended and its checkpoints are not kept: aborts the pending checkpoints and
    /// discards every retained checkpoint with its shared files. Savepoints stay.
    ///
    /// # Errors
    ///
    /// The first error discarding (the rest is still discarded).
    pub fn discard_all(&self) -> Result<()> {
        let mut inner = self.lock();
        let mut outcome = Ok(());
        let pending: Vec<CheckpointId> = inner.pending.keys().copied().collect();
        for id in pending {
            if let Some(pending) = inner.pending.remove(&id) {
                let reason = "the job ended".to_owned();
                outcome = outcome.and(self.abort(&mut inner, pending, reason, false).map(|_| ()));
            }
        }
        for held in std::mem::take(&mut inner.subsumed_held) {
            outcome = outcome.and(self.shared.release(held).map(|_| ()));
        }
        let retained = std::mem::take(&mut inner.retained);
        for old in retained {
            if old.savepoint {
                inner.retained.push_back(old);
                continue;
            }
            outcome = outcome.and(self.discard_retained(&old).map(|_| ()));
        }
        outcome
    }

    /// Every instance has been told of every completion so far (a driver that notifies
    /// before it triggers again, or a job whose instances stopped): no instance is late to
    /// learn of the last completion, so the shared files held for one go now. Returns how
    /// many.
    ///
    /// # Errors
    ///
    /// The first error deleting a file (the others are still deleted).
    pub fn all_instances_notified(&self) -> Result<usize> {
        let mut inner = self.lock();
        let mut outcome = Ok(0);
        for held in std::mem::take(&mut inner.subsumed_held) {
            let released = self.shared.release(held);
            outcome = match (outcome, released) {
                (Ok(total), Ok(count)) => Ok(total + count),
                (Err(err), _) | (Ok(_), Err(err)) => Err(err),
            };
        }
        outcome
    }

    /// The registry of the retained checkpoints' shared files.
    pub fn shared_state(&self) -> &SharedStateRegistry {
        &self.shared
    }

    /// Starts checkpoint (or savepoint) number next at `now`: the request every instance
    /// snapshots with.
    ///
    /// # Errors
    ///
    /// [`TriggerRefused`] saying why no checkpoint started.
    pub fn trigger(
        &self,
        checkpoint_type: CheckpointType,
        now: Instant,
    ) -> std::result::Result<SnapshotRequest, TriggerRefused> {
        let mut inner = self.lock();
        if inner.failures > self.config.tolerable_failures {
            return Err(TriggerRefused::JobFailed {
                failures: inner.failures,
                tolerable: self.config.tolerable_failures,
            });
        }
        if inner.pending.len() >= self.config.max_concurrent.get() {
            return Err(TriggerRefused::TooManyPending {
                pending: inner.pending.len(),
            });
        }
        if let Some(since) = inner
            .last_completion
            .map(|at| now.saturating_duration_since(at))
            && since < self.config.min_pause
        {
            return Err(TriggerRefused::MinPause {
                since,
                min_pause: self.config.min_pause,
            });
        }
        let id = inner.next_id;
        inner.next_id = id.next();
        let options = match checkpoint_type {
            CheckpointType::Checkpoint => CheckpointOptions::checkpoint(),
            CheckpointType::Savepoint => CheckpointOptions::savepoint(),
        };
        let request = SnapshotRequest::new(id, epoch_millis(), options);
        inner.pending.insert(
            id,
            Pending {
                request: request.clone(),
                triggered: now,
                acks: BTreeMap::new(),
            },
        );
        push_stats(&mut inner, stats_of(&request, CheckpointStatus::Pending));
        tracing::info!(checkpoint = %id, ?checkpoint_type, "checkpoint triggered");
        Ok(request)
    }

    /// Records instance `ack.snapshot.index`'s part of checkpoint `id`; the last one
    /// completes the checkpoint.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an instance index outside the job, an instance that
    /// already acknowledged and a checkpoint that is neither pending nor recently aborted
    /// (completed, long gone or never triggered): nothing changes and nothing is discarded,
    /// as the handles may be a completed checkpoint's. An error of registering the shared files or
    /// committing the metadata aborts the checkpoint (its files are discarded) and is
    /// returned; the instances are then to be told it aborted.
    pub fn acknowledge(&self, id: CheckpointId, ack: Acknowledgement) -> Result<Acknowledged> {
        let index = ack.snapshot.index;
        let mut inner = self.lock();
        if index >= inner.instances.get() {
            return Err(Error::InvalidArgument(format!(
                "instance {index} acknowledged checkpoint {id}, but the job has {} instances",
                inner.instances
            )));
        }
        let instances = inner.instances.get() as usize;
        let Some(pending) = inner.pending.get_mut(&id) else {
            if !inner.aborted.contains(&id) {
                return Err(Error::InvalidArgument(format!(
                    "instance {index} acknowledged checkpoint {id}, which is not pending"
                )));
            }
            drop(inner);
            tracing::info!(checkpoint = %id, instance = index, "late acknowledgement discarded");
            discard_all(&ack.snapshot.keyed, &ack.snapshot.operator)?;
            // The late instance's streams may have made the checkpoint's directory again.
            self.storage.discard_checkpoint(id)?;
            return Ok(Acknowledged::Late);
        };
        if pending.acks.contains_key(&index) {
            return Err(Error::InvalidArgument(format!(
                "instance {index} acknowledged checkpoint {id} twice"
            )));
        }
        pending.acks.insert(index, ack);
        let missing = instances.saturating_sub(pending.acks.len());
        if missing > 0 {
            return Ok(Acknowledged::Pending { missing });
        }
        let Some(pending) = inner.pending.remove(&id) else {
            unreachable!("checked above")
        };
        match self.complete(&mut inner, &pending) {
            Ok(completed) => Ok(Acknowledged::Completed(Box::new(completed))),
            Err(err) => {
                self.abort(&mut inner, pending, err.to_string(), true)?;
                Err(err)
            }
        }
    }

    /// Aborts checkpoint `id` because instance `instance` could not take its part.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when `id` is not pending (completed, aborted or never triggered);
    /// an error discarding what the instances stored.
    pub fn decline(&self, id: CheckpointId, instance: u32, reason: &str) -> Result<Aborted> {
        let mut inner = self.lock();
        let pending = inner.pending.remove(&id).ok_or_else(|| Error::NotFound {
            what: format!("pending checkpoint {id} declined by instance {instance}"),
        })?;
        tracing::warn!(checkpoint = %id, instance, reason, "checkpoint declined");
        self.abort(
            &mut inner,
            pending,
            format!("declined by instance {instance}: {reason}"),
            true,
        )
    }

    /// Aborts every checkpoint pending longer than the timeout at `now`.
    ///
    /// # Errors
    ///
    /// The first error discarding what the instances stored (the others are still aborted).
    pub fn abort_expired(&self, now: Instant) -> Result<Vec<Aborted>> {
        let mut inner = self.lock();
        let timeout = self.config.timeout;
        let expired: Vec<CheckpointId> = (inner.pending.iter())
            .filter(|(_, p)| now.saturating_duration_since(p.triggered) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        let mut aborted = Vec::new();
        let mut first_error = None;
        for id in expired {
            let Some(pending) = inner.pending.remove(&id) else {
                continue;
            };
            let reason = format!("not complete within the timeout of {timeout:?}");
            match self.abort(&mut inner, pending, reason, true) {
                Ok(one) => aborted.push(one),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(aborted), Err)
    }

    /// The metadata of the latest completed checkpoint or savepoint: the restore point.
    pub fn latest_completed(&self) -> Option<CheckpointMetadata> {
        self.lock().latest.clone()
    }

    /// Ids of the retained checkpoints and savepoints, oldest first.
    pub fn retained(&self) -> Vec<CheckpointId> {
        self.lock().retained.iter().map(|r| r.id).collect()
    }

    /// Ids of the pending checkpoints.
    pub fn pending(&self) -> Vec<CheckpointId> {
        self.lock().pending.keys().copied().collect()
    }

    /// Figures of the last 100 checkpoints, oldest first.
    pub fn stats(&self) -> Vec<CheckpointStats> {
        self.lock().stats.iter().cloned().collect()
    }

    fn complete(&self, inner: &mut Inner, pending: &Pending) -> Result<Completed> {
        let id = pending.request.id;
        let checkpoint_type = pending.request.options.checkpoint_type;
        let mut metadata = CheckpointMetadata::new(
            id,
            pending.request.timestamp,
            checkpoint_type,
            self.config.max_parallelism,
        );
        metadata.properties = self.config.properties.clone();
        metadata.job_id = self.config.job_id.clone();
        let mut retained = Retained {
            id,
            savepoint: checkpoint_type == CheckpointType::Savepoint,
            keyed: Vec::new(),
            operator: Vec::new(),
        };
        for ack in pending.acks.values() {
            let mut keyed = Vec::new();
            for handle in &ack.snapshot.keyed {
                match handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
                    Some(incremental) => {
                        let kept = self.shared.register(incremental)?;
                        keyed.push(Arc::new(self.shared.resolve(&kept)?) as Arc<_>);
                        retained
                            .keyed
                            .push(Arc::new(kept) as Arc<dyn KeyedStateHandle>);
                    }
                    None => {
                        keyed.push(handle.clone());
                        retained.keyed.push(handle.clone());
                    }
                }
            }
            retained
                .operator
                .extend(ack.snapshot.operator.iter().cloned());
            metadata.instances.push(InstanceSnapshot {
                index: ack.snapshot.index,
                keyed,
                operator: ack.snapshot.operator.clone(),
            });
        }
        self.storage.commit_checkpoint(&metadata)?;
        let now = Instant::now();
        inner.last_completion = Some(now);
        inner.failures = 0;
        inner.latest = Some(metadata.clone());
        inner.retained.push_back(retained);
        let mut stats = stats_of(&pending.request, CheckpointStatus::Completed);
        stats.duration = Some(now.saturating_duration_since(pending.triggered));
        stats.instances = (pending.acks.iter())
            .map(|(index, ack)| (*index, ack.stats.clone()))
            .collect();
        stats.bytes = stats.instances.values().map(|s| s.bytes).sum();
        stats.state_size = (metadata.keyed_handles().iter())
            .map(|handle| handle.state_size())
            .sum::<u64>()
            + (metadata.operator_handles().iter().flatten())
                .map(StateObject::state_size)
                .sum::<u64>();
        push_stats(inner, stats.clone());
        tracing::info!(checkpoint = %id, bytes = stats.bytes, "checkpoint completed");

        // The checkpoint stands from here on: a deletion that fails below leaves files
        // behind (reported in `cleanup_errors`), it never undoes the completion.
        let mut cleanup_errors = Vec::new();
        // Older pending checkpoints are superseded by this one.
        let older: Vec<CheckpointId> = inner.pending.range(..id).map(|(id, _)| *id).collect();
        let mut aborted = Vec::new();
        for old in older {
            if let Some(pending) = inner.pending.remove(&old) {
                let reason = format!("subsumed by checkpoint {id}");
                if let Err(err) = self.abort(inner, pending, reason, false) {
                    cleanup_errors.push(format!("aborting checkpoint {old}: {err}"));
                }
                aborted.push(old);
            }
        }
        // Shared files held for instances that were late to learn of the last completion
        // go now, unless this checkpoint refers to them too.
        let mut pruned = 0;
        for held in std::mem::take(&mut inner.subsumed_held) {
            match self.shared.release(held) {
                Ok(count) => pruned += count,
                Err(err) => cleanup_errors.push(format!("releasing checkpoint {held}: {err}")),
            }
        }
        let (subsumed, subsumed_pruned) = self.subsume(inner, &mut cleanup_errors, Hold::Shared);
        pruned += subsumed_pruned;
        for error in &cleanup_errors {
            tracing::warn!(checkpoint = %id, error, "files left behind after a completion");
        }
        Ok(Completed {
            metadata,
            aborted,
            subsumed,
            pruned,
            cleanup_errors,
            stats,
        })
    }

    /// Discards the oldest retained checkpoints beyond `num-retained` (savepoints never);
    /// returns their ids and how many shared files went with them. With
    /// [`Hold::Shared`] their shared files are held until the next completion
    /// (`Inner::subsumed_held`). A checkpoint whose files cannot all be deleted is still no
    /// longer retained; the failure is added to `errors`.
    fn subsume(
        &self,
        inner: &mut Inner,
        errors: &mut Vec<String>,
        hold: Hold,
    ) -> (Vec<CheckpointId>, usize) {
        let mut subsumed = Vec::new();
        let mut pruned = 0;
        while inner.retained.iter().filter(|r| !r.savepoint).count()
            > self.config.num_retained.get()
        {
            let Some(position) = inner.retained.iter().position(|r| !r.savepoint) else {
                break;
            };
            let Some(old) = inner.retained.remove(position) else {
                break;
            };
            let discarded = match hold {
                Hold::No => self.discard_retained(&old),
                Hold::Shared => {
                    inner.subsumed_held.push(old.id);
                    self.discard_own(&old).map(|()| 0)
                }
            };
            match discarded {
                Ok(count) => pruned += count,
                Err(err) => errors.push(format!("subsuming checkpoint {}: {err}", old.id)),
            }
            tracing::info!(checkpoint = %old.id, "checkpoint subsumed");
            subsumed.push(old.id);
        }
        (subsumed, pruned)
    }

    /// Discards a retained checkpoint's own files and metadata and releases its shared
    /// files; returns how many of those no retained checkpoint needed any more.
    fn discard_retained(&self, old: &Retained) -> Result<usize> {
        discard_all(&old.keyed, &old.operator)?;
        let pruned = self.shared.release(old.id)?;
        self.storage.discard_checkpoint(old.id)?;
        Ok(pruned)
    }

    /// Discards a retained checkpoint's own files and metadata; its shared files stay
    /// registered.
    fn discard_own(&self, old: &Retained) -> Result<()> {
        discard_all(&old.keyed, &old.operator)?;
        self.storage.discard_checkpoint(old.id)
    }

    /// Discards what the instances of `pending` stored; a `failure` (not a checkpoint
    /// superseded by a newer completed one) counts towards `tolerable-failed-checkpoints`.
    fn abort(
        &self,
        inner: &mut Inner,
        pending: Pending,
        reason: String,
        failure: bool,
    ) -> Result<Aborted> {
        let id = pending.request.id;
        // A registration that went through before a failed commit is undone first, so the
        // registry deletes exactly the shared files only this checkpoint held.
        self.shared.release(id)?;
        let mut outcome = Ok(());
        for ack in pending.acks.values() {
            outcome = outcome.and(discard_all(&ack.snapshot.keyed, &ack.snapshot.operator));
        }
        outcome = outcome.and(self.storage.discard_checkpoint(id));
        if failure {
            inner.failures = inner.failures.saturating_add(1);
        }
        inner.aborted.push_back(id);
        if inner.aborted.len() > ABORTED_KEPT {
            inner.aborted.pop_front();
        }
        let mut stats = stats_of(&pending.request, CheckpointStatus::Failed(reason.clone()));
        stats.duration = Some(pending.triggered.elapsed());
        push_stats(inner, stats);
        let job_failed = inner.failures > self.config.tolerable_failures;
        tracing::warn!(checkpoint = %id, reason, job_failed, "checkpoint aborted");
        outcome.map(|()| Aborted {
            id,
            reason,
            job_failed,
        })
    }
}

/// Whether subsuming holds the subsumed checkpoints' shared files until the next
/// completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    No,
    Shared,
}

fn discard_all(
    keyed: &[Arc<dyn KeyedStateHandle>],
    operator: &[OperatorStreamStateHandle],
) -> Result<()> {
    let mut outcome = Ok(());
    for handle in keyed {
        outcome = outcome.and(handle.discard());
    }
    for handle in operator {
        outcome = outcome.and(handle.discard());
    }
    outcome
}

fn stats_of(request: &SnapshotRequest, status: CheckpointStatus) -> CheckpointStats {
    CheckpointStats {
        id: request.id,
        checkpoint_type: request.options.checkpoint_type,
        status,
        duration: None,
        instances: BTreeMap::new(),
        bytes: 0,
        state_size: 0,
    }
}

/// Replaces the checkpoint's earlier figures (its pending entry) and keeps the last
/// [`STATS_KEPT`].
fn push_stats(inner: &mut Inner, stats: CheckpointStats) {
    inner.stats.retain(|old| old.id != stats.id);
    inner.stats.push_back(stats);
    while inner.stats.len() > STATS_KEPT {
        inner.stats.pop_front();
    }
}

fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

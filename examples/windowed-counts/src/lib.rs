//! Windowed counts over a generated event stream, the way a keyed stream-processing job
//! uses snapstate: a keyed backend per parallel instance (counts per user and window), an
//! operator backend holding the source offset, periodic checkpoints whose synchronous part
//! runs on the processing thread and whose asynchronous part runs on a checkpointing thread
//! while processing goes on, and recovery from the last completed checkpoint, also with
//! another parallelism.
//!
//! Event `i` of the stream belongs to user `user_of(i)` at time `7 * i` ms; a tumbling
//! window of `window_ms` counts a user's events. The result of a run is every (window,
//! user, count), which depends only on which events were applied: a job that crashes and
//! resumes from a checkpoint applies every event exactly once and ends with the same result
//! as one that never crashed.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Instant;

use snapstate::api::CheckpointId;
use snapstate::api::{
    AsyncSnapshotTask, CheckpointMetadata, CheckpointStorage, CheckpointType, InstanceSnapshot,
    JobId, KeyGroupRange, KeyedSnapshotResult, KeyedStateBackend, MaxParallelism,
    OperatorBackendParams, OperatorSnapshotResult, OperatorStateBackend, OperatorStateMetaInfo,
    Registry, StateMetaInfo,
};
use snapstate::config::StateConfig;
use snapstate::coordinator::{
    Acknowledged, Acknowledgement, CheckpointCoordinator, Garbage, InstanceStats, TriggerRefused,
    Writers, plan_restore,
};

/// Errors of the job, as text for the command line.
pub type JobResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const COUNTS: &str = "counts";
const SOURCE_OFFSET: &str = "source-offset";
const TIME_STEP_MS: u64 = 7;

/// Whether a run starts from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Start from the beginning of the stream.
    No,
    /// Resume from the last completed checkpoint; [`NothingToResume`] when there is none.
    Latest,
    /// Resume from the last completed checkpoint if there is one, else start from the
    /// beginning ([`Report::restored_from`] tells which happened).
    IfAny,
}

/// `Resume::Latest` found no completed checkpoint in the storage.
#[derive(Debug, thiserror::Error)]
#[error(
    "nothing to resume: {location} holds no completed checkpoint (start without resuming, or resume only if there is one)"
)]
pub struct NothingToResume {
    /// The checkpoint storage.
    pub location: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job's identity, recorded in its checkpoints: resuming from another job's
    /// checkpoints is refused, and a second job on the same storage is locked out.
    pub job_id: JobId,
    /// Events in the stream.
    pub events: u64,
    /// Distinct users.
    pub users: u64,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Parallel instances.
    pub parallelism: u32,
    /// Events between checkpoints.
    pub checkpoint_every: u64,
    /// Stop abruptly after this many events of this run, as a killed process would.
    pub crash_after: Option<u64>,
    /// Whether to resume from the last completed checkpoint in the storage.
    pub resume: Resume,
    /// At the crash, end the process at once (exit status 137, as `kill -9` reports),
    /// running no destructor: backends are not closed, in-flight uploads are cut off.
    pub kill_process: bool,
}

/// What a run did: the checkpoint it started from, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The checkpoint the run restored, or `None` when it started from the beginning.
    pub restored_from: Option<CheckpointId>,
    /// What the recovery removed from the checkpoint storage (files a crash left behind).
    pub cleaned: Garbage,
    /// How it ended.
    pub outcome: Outcome,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every event was processed: the counts per (window, user).
    Finished(BTreeMap<(u64, u64), u64>),
    /// The run stopped after `processed` events; the last completed checkpoint is
    /// `last_checkpoint`.
    Crashed {
        /// Events processed by this run.
        processed: u64,
        /// The last checkpoint committed before the crash.
        last_checkpoint: Option<CheckpointId>,
    },
}

/// The user of event `i`: a fixed scramble, so users spread over key groups.
pub fn user_of(event: u64, users: u64) -> u64 {
    let mut x = event.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x % users.max(1)
}

/// The result computed directly, without state: what every run must end with.
pub fn expected(spec: &JobSpec) -> BTreeMap<(u64, u64), u64> {
    let mut counts = BTreeMap::new();
    for event in 0..spec.events {
        let window = event * TIME_STEP_MS / spec.window_ms;
        *counts
            .entry((window, user_of(event, spec.users)))
            .or_insert(0) += 1;
    }
    counts
}

/// One parallel instance: its keyed and operator state.
struct Instance {
    range: KeyGroupRange,
    keyed: Box<dyn KeyedStateBackend>,
    operator: Box<dyn OperatorStateBackend>,
}

/// A checkpoint whose synchronous parts ran, handed to the checkpointing thread.
struct Pending {
    checkpoint_id: CheckpointId,
    keyed: Vec<AsyncSnapshotTask<KeyedSnapshotResult>>,
    operator: Vec<AsyncSnapshotTask<OperatorSnapshotResult>>,
}

/// The checkpointing thread: runs the asynchronous parts and acknowledges each instance's
/// part to the coordinator (or declines the checkpoint when one fails), and reports every
/// completed checkpoint back to the processing thread, which notifies the backends.
fn checkpointer(
    coordinator: Arc<CheckpointCoordinator>,
    pending: Receiver<Pending>,
    completed: Sender<JobResult<CheckpointId>>,
) {
    for checkpoint in pending {
        let id = checkpoint.checkpoint_id;
        let mut index = 0;
        let outcome = (|| -> JobResult<Option<CheckpointId>> {
            let parts = checkpoint.keyed.into_iter().zip(checkpoint.operator);
            for (keyed, operator) in parts {
                let started = Instant::now();
                let keyed = keyed.run()?;
                let operator = operator.run()?;
                let snapshot = InstanceSnapshot {
                    index,
                    keyed: keyed.job_manager_owned().cloned().into_iter().collect(),
                    operator: operator.job_manager_owned().cloned().into_iter().collect(),
                };
                let stats = InstanceStats {
                    asynchronous: started.elapsed(),
                    ..InstanceStats::default()
                };
                let acknowledged =
                    coordinator.acknowledge(id, Acknowledgement { snapshot, stats })?;
                index += 1;
                if let Acknowledged::Completed(done) = acknowledged {
                    return Ok(Some(done.metadata.checkpoint_id));
                }
            }
            Ok(None)
        })();
        let outcome = match outcome {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(format!("checkpoint {id} did not complete").into()),
            Err(error) => {
                // What the other instances stored goes with the checkpoint.
                let _ = coordinator.decline(id, index, &error.to_string());
                Err(error)
            }
        };
        if completed.send(outcome).is_err() {
            return;
        }
    }
}

/// Tells every instance that checkpoint `id` was aborted.
fn notify_aborted(instances: &mut [Instance], id: CheckpointId) -> JobResult<()> {
    for instance in instances {
        instance.keyed.notify_checkpoint_aborted(id)?;
        instance.operator.notify_checkpoint_aborted(id)?;
    }
    Ok(())
}

/// True when a checkpoint failed only because its backends were dropped under it.
fn cut_off_by_the_crash(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<snapstate::api::Error>()
        .is_some_and(snapstate::api::Error::is_cancelled)
}

fn range_of(
    max_parallelism: MaxParallelism,
    parallelism: u32,
    index: u32,
) -> JobResult<KeyGroupRange> {
    Ok(max_parallelism.range_for(index, parallelism)?)
}

/// The checkpoint to restore, as `spec.resume` asks: its metadata, checked to be this
/// job's and of this job's max parallelism before anything is read.
fn checkpoint_to_restore(
    spec: &JobSpec,
    storage: &dyn CheckpointStorage,
    max_parallelism: MaxParallelism,
) -> JobResult<Option<CheckpointMetadata>> {
    let latest = match spec.resume {
        Resume::No => return Ok(None),
        Resume::Latest | Resume::IfAny => storage.completed_checkpoints()?.last().copied(),
    };
    let Some(id) = latest else {
        return match spec.resume {
            Resume::Latest => Err(Box::new(NothingToResume {
                location: storage.location(),
            })),
            _ => Ok(None),
        };
    };
    let metadata = storage.load_checkpoint(id)?;
    if let Some(owner) = &metadata.job_id
        && *owner != spec.job_id
    {
        return Err(format!(
            "checkpoint {id} in {} belongs to job `{owner}`, not `{}`: resume it with that job id, or give this job its own directory",
            storage.location(),
            spec.job_id
        )
        .into());
    }
    metadata.check_max_parallelism(max_parallelism)?;
    Ok(Some(metadata))
}

/// Runs the job with the state configuration `config` (checkpoint storage included).
///
/// The job claims the checkpoint storage for the run (a second job on the same directory is
/// refused), and with `spec.resume` restores the last completed checkpoint after checking
/// that it is this job's and was taken with this max parallelism.
///
/// # Errors
///
/// Configuration, state and storage errors, as text; [`NothingToResume`] for
/// [`Resume::Latest`] on a storage without checkpoints.
pub fn run(spec: &JobSpec, config: &StateConfig, work_dir: PathBuf) -> JobResult<Report> {
    let registry: &Registry = snapstate::registry();
    let storage = config.storage()?;
    let _claim = storage.claim(&spec.job_id)?;
    let max_parallelism = config.max_parallelism;
    let operator_factory = registry.operator_backend("operator")?;
    let keyed_factory = config.keyed_backend(registry)?;

    // The checkpoint to resume from, checked to be this job's (and of its max parallelism)
    // before recovery touches the storage.
    let latest = checkpoint_to_restore(spec, &*storage, max_parallelism)?;
    let instances_count =
        NonZeroU32::new(spec.parallelism).ok_or("a job runs at least one instance")?;
    // `execution.checkpointing.*` of the configuration: timeout, retention, ...
    let mut coordination = config.coordinator_config(instances_count);
    coordination.job_id = Some(spec.job_id.clone());
    let (coordinator, metadata, cleaned) = match latest {
        None => (
            CheckpointCoordinator::new(storage.clone(), coordination),
            None,
            Garbage::default(),
        ),
        // Every committed checkpoint is retained again (its shared files known, so later
        // checkpoints refer to them by placeholder) and what a crash left behind goes. This
        // job runs as one process: when it starts, the one before it is gone, so no other
        // writer is cut (a local directory's claim also enforces that).
        Some(_) => {
            let recovered =
                CheckpointCoordinator::recover(storage.clone(), coordination, Writers::Exclusive)?;
            for error in &recovered.cleanup_errors {
                eprintln!("warning: left behind by the recovery: {error}");
            }
            (
                recovered.coordinator,
                recovered.restore_from,
                recovered.garbage,
            )
        }
    };
    let coordinator = Arc::new(coordinator);
    let restored = metadata.as_ref().map(|metadata| metadata.checkpoint_id);
    // What each instance restores (key groups, keyed parts, operator share), planned from
    // the checkpoint's handles alone; the shares never delete the checkpoint's files.
    let plan = (metadata.as_ref())
        .map(|metadata| plan_restore(metadata, instances_count, max_parallelism))
        .transpose()?;
    let mut instances = Vec::new();
    for index in 0..spec.parallelism {
        let assignment = plan.as_ref().map(|plan| &plan.instances[index as usize]);
        let range = match assignment {
            Some(assignment) => assignment.key_groups,
            None => range_of(max_parallelism, spec.parallelism, index)?,
        };
        let mut params = config.keyed_params(range, registry)?;
        params.key_serializer = "u64-be".into();
        let dir = work_dir.join(format!(
            "instance-{index}-{}",
            restored.map_or(0, CheckpointId::get)
        ));
        std::fs::create_dir_all(&dir)?;
        params.working_dir = Some(dir);
        let mut keyed = match assignment {
            Some(assignment) => keyed_factory.restore(params, registry, &assignment.keyed)?,
            None => keyed_factory.create(params, registry)?,
        };
        keyed.register_state(&StateMetaInfo::value(COUNTS, "u64-be", "u64-be"))?;
        let operator_params = OperatorBackendParams::new(index, spec.parallelism);
        let mut operator = match assignment {
            Some(assignment) => {
                operator_factory.restore(operator_params, registry, &assignment.operator)?
            }
            None => operator_factory.create(operator_params, registry)?,
        };
        operator.register_state(&OperatorStateMetaInfo::union_list(SOURCE_OFFSET, "u64-be"))?;
        instances.push(Instance {
            range,
            keyed,
            operator,
        });
    }
    // Every instance holds the offset (union list); instance 0 keeps it current.
    let mut offset =
        match instances[0].operator.list(SOURCE_OFFSET)?.first() {
            Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                format!("source offset of {} bytes in the checkpoint", bytes.len())
            })?),
            None => 0,
        };

    let (to_checkpointer, pending) = mpsc::channel();
    let (completions, completed) = mpsc::channel();
    let checkpointing = {
        let coordinator = coordinator.clone();
        std::thread::spawn(move || checkpointer(coordinator, pending, completions))
    };
    let mut last_completed = restored;
    let mut processed = 0;
    while offset < spec.events {
        if spec.crash_after == Some(processed) {
            if spec.kill_process {
                std::process::exit(137);
            }
            // Killed: nothing is flushed, in-flight checkpoints never commit.
            drop(instances);
            drop(to_checkpointer);
            let _ = checkpointing.join();
            // A checkpoint still in flight is cancelled when its backends are dropped:
            // it never commits, and the crash does not turn that into a job error.
            while let Ok(outcome) = completed.try_recv() {
                match outcome {
                    Ok(checkpoint_id) => last_completed = Some(checkpoint_id),
                    Err(error) if cut_off_by_the_crash(error.as_ref()) => {}
                    Err(error) => return Err(error),
                }
            }
            return Ok(Report {
                restored_from: restored,
                cleaned: cleaned.clone(),
                outcome: Outcome::Crashed {
                    processed,
                    last_checkpoint: last_completed,
                },
            });
        }
        let user = user_of(offset, spec.users);
        let key = user.to_be_bytes();
        let group = max_parallelism.key_group_of(&key);
        let instance = instances
            .iter_mut()
            .find(|instance| instance.range.contains(group))
            .ok_or("no instance owns a key group")?;
        let window = (offset * TIME_STEP_MS / spec.window_ms).to_be_bytes();
        instance.keyed.set_current_key(&key)?;
        let count = match instance.keyed.value(COUNTS, &window)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| "a count of another size")?,
            ),
            None => 0,
        };
        instance
            .keyed
            .put_value(COUNTS, &window, &(count + 1).to_be_bytes())?;
        offset += 1;
        processed += 1;

        while let Ok(outcome) = completed.try_recv() {
            let checkpoint_id = outcome?;
            for instance in &mut instances {
                instance.keyed.notify_checkpoint_complete(checkpoint_id)?;
                instance
                    .operator
                    .notify_checkpoint_complete(checkpoint_id)?;
            }
            last_completed = Some(checkpoint_id);
        }
        if offset % spec.checkpoint_every == 0 {
            instances[0]
                .operator
                .update_list(SOURCE_OFFSET, &[offset.to_be_bytes().to_vec()])?;
            for aborted in coordinator.abort_expired(Instant::now())? {
                notify_aborted(&mut instances, aborted.id)?;
            }
            let request = match coordinator.trigger(CheckpointType::Checkpoint, Instant::now()) {
                Ok(request) => request,
                // The previous checkpoint is still running: this one is skipped.
                Err(TriggerRefused::TooManyPending { .. } | TriggerRefused::MinPause { .. }) => {
                    continue;
                }
                Err(refused) => return Err(refused.into()),
            };
            let factory = storage.stream_factory(request.id)?;
            let mut checkpoint = Pending {
                checkpoint_id: request.id,
                keyed: Vec::new(),
                operator: Vec::new(),
            };
            for instance in &mut instances {
                checkpoint
                    .keyed
                    .push(instance.keyed.snapshot(&request, factory.clone())?);
                checkpoint
                    .operator
                    .push(instance.operator.snapshot(&request, factory.clone())?);
            }
            to_checkpointer
                .send(checkpoint)
                .map_err(|_| "the checkpointing thread stopped")?;
        }
    }
    drop(to_checkpointer);
    let _ = checkpointing.join();
    while let Ok(outcome) = completed.try_recv() {
        outcome?;
    }
    // Every instance has been told of every completion: nothing is held for a late one.
    coordinator.all_instances_notified()?;

    let mut counts = BTreeMap::new();
    let windows = spec.events * TIME_STEP_MS / spec.window_ms;
    for instance in &mut instances {
        for window in 0..=windows {
            let namespace = window.to_be_bytes();
            for key in instance.keyed.keys(COUNTS, &namespace)? {
                instance.keyed.set_current_key(&key)?;
                let user = u64::from_be_bytes(
                    key.as_slice()
                        .try_into()
                        .map_err(|_| "a user key of another size")?,
                );
                if let Some(bytes) = instance.keyed.value(COUNTS, &namespace)? {
                    let count = u64::from_be_bytes(
                        bytes
                            .as_slice()
                            .try_into()
                            .map_err(|_| "a count of another size")?,
                    );
                    counts.insert((window, user), count);
                }
            }
        }
    }
    Ok(Report {
        restored_from: restored,
        cleaned,
        outcome: Outcome::Finished(counts),
    })
}

//! Windowed counts over a generated event stream, the way a keyed stream-processing job
//! uses snapstate: a keyed backend per parallel instance (counts per user and window, and
//! the event-time timers that fire the windows), an operator backend holding the source
//! offset and the sink's open transactions, periodic checkpoints whose synchronous part
//! runs on the processing thread and whose asynchronous part runs on a checkpointing thread
//! while processing goes on, and recovery from the last completed checkpoint, also with
//! another parallelism.
//!
//! Event `i` of the stream belongs to user `user_of(i)` at time `7 * i` ms; a tumbling
//! window of `window_ms` counts a user's events. Each event registers an event-time timer
//! for (user, window) at the window's last millisecond (`TimerService`: registering it
//! again is a no-op). Events come in time order, so after the event at `t` the watermark is
//! `t - 1`; when it passes a window's end, every instance fires its due timers: each one
//! reads the count of its (user, window), clears it and emits the row (window, user,
//! count). At the end of the stream the watermark goes to `i64::MAX` and the rest fires,
//! so the keyed state holds only the windows still open, and nothing after the run
//! ([`Report::held`]).
//!
//! The rows go to a two-phase-commit sink, as Flink's `TwoPhaseCommitSinkFunction`: the
//! rows between two checkpoint triggers are the next checkpoint's transaction, kept in
//! instance 0's operator state until a checkpoint at least as new completes, then
//! committed atomically as one file `txn-<id>` of `<work dir>/output` (see [`sink`]). The
//! end of the stream takes a final checkpoint, which commits the last rows. A run resumed
//! from a checkpoint commits the transactions it stored again (skipping the ones already
//! there) and replays the events after it; a run from the beginning starts with an empty
//! output directory. The result of a run, [`Outcome::Finished`], is the output directory
//! read back: it depends only on which events were applied and which windows fired, so a
//! job that crashes and resumes fires each window exactly once and ends with the same
//! result as one that never crashed.

pub mod sink;

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
    Registry, SnapshotRequest, StateMetaInfo,
};
use snapstate::config::StateConfig;
use snapstate::coordinator::{
    Acknowledged, Acknowledgement, CheckpointCoordinator, Garbage, InstanceStats, TriggerRefused,
    Writers, plan_restore,
};
use snapstate::format::timer_service::{TimeDomain, TimerService};
use snapstate::format::typed::U64Serializer;

pub use sink::{OutputError, Row, TwoPhaseCommitSink};

/// Errors of the job, as text for the command line.
pub type JobResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const COUNTS: &str = "counts";
/// The timer service firing the windows: (user, window) timers at each window's end.
const WINDOW_TIMERS: &str = "window-timers";
const SOURCE_OFFSET: &str = "source-offset";
/// The sink's transactions not yet committed ([`sink`] describes the elements).
const TRANSACTIONS: &str = "sink-transactions";
/// The directory of the work dir the sink commits its transactions to.
const OUTPUT_DIR: &str = "output";
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
    /// What the keyed state of all instances held when the run ended: the windows not yet
    /// fired, none after a finished run.
    pub held: Held,
    /// How it ended.
    pub outcome: Outcome,
}

/// What the keyed state of a job's instances holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Counts: the (user, window)s with events whose window has not fired.
    pub counts: usize,
    /// Event-time timers: one per count, at its window's end.
    pub timers: usize,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every event was processed and every window fired: the counts per (window, user)
    /// committed to the output directory, read back.
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
    /// The event-time timers of (user, window) in `keyed`.
    timers: TimerService<u64, u64>,
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

/// The last millisecond of window `window`: where its timer fires.
fn window_end(window: u64, window_ms: u64) -> JobResult<i64> {
    let end = (window + 1)
        .checked_mul(window_ms)
        .and_then(|end| i64::try_from(end - 1).ok())
        .ok_or_else(|| format!("window {window} of {window_ms} ms ends after i64::MAX ms"))?;
    Ok(end)
}

/// The count of the current key in `namespace`.
fn count_of(keyed: &dyn KeyedStateBackend, namespace: &[u8]) -> JobResult<Option<u64>> {
    keyed
        .value(COUNTS, namespace)?
        .map(|bytes| {
            let bytes: [u8; 8] = (bytes.as_slice().try_into())
                .map_err(|_| format!("a count of {} bytes in the state", bytes.len()))?;
            Ok(u64::from_be_bytes(bytes))
        })
        .transpose()
}

/// The job while it runs: its instances, its sink and the checkpoints in flight.
struct Running {
    instances: Vec<Instance>,
    sink: TwoPhaseCommitSink,
    coordinator: Arc<CheckpointCoordinator>,
    storage: Arc<dyn CheckpointStorage>,
    to_checkpointer: Sender<Pending>,
    completed: Receiver<JobResult<CheckpointId>>,
    /// Checkpoints handed to the checkpointing thread whose outcome has not come back.
    in_flight: usize,
    last_completed: Option<CheckpointId>,
}

impl Running {
    /// Fires every timer of every instance due at `watermark`: each clears its (user,
    /// window)'s count and emits it.
    fn fire(&mut self, watermark: i64) -> JobResult<()> {
        for instance in &mut self.instances {
            let keyed = &mut *instance.keyed;
            for fired in instance
                .timers
                .all_due(keyed, TimeDomain::EventTime, watermark)?
            {
                let (user, window) = (fired.key, fired.namespace);
                let namespace = window.to_be_bytes();
                keyed.set_current_key(&user.to_be_bytes())?;
                let count = count_of(keyed, &namespace)?.ok_or_else(|| {
                    format!("the timer of window {window} of user {user} fired, but the window holds no count")
                })?;
                keyed.clear(COUNTS, &namespace)?;
                self.sink.emit(Row {
                    window,
                    user,
                    count,
                });
            }
        }
        Ok(())
    }

    /// Takes checkpoint `request` with the source at `offset`: the open transaction
    /// becomes the checkpoint's and goes, with every other one not yet committed, into
    /// instance 0's operator state before the snapshots.
    fn checkpoint(&mut self, request: &SnapshotRequest, offset: u64) -> JobResult<()> {
        self.sink.pre_commit(request.id);
        let first = &mut self.instances[0].operator;
        first.update_list(SOURCE_OFFSET, &[offset.to_be_bytes().to_vec()])?;
        first.update_list(TRANSACTIONS, &self.sink.state())?;
        let factory = self.storage.stream_factory(request.id)?;
        let mut checkpoint = Pending {
            checkpoint_id: request.id,
            keyed: Vec::new(),
            operator: Vec::new(),
        };
        for instance in &mut self.instances {
            checkpoint
                .keyed
                .push(instance.keyed.snapshot(request, factory.clone())?);
            checkpoint
                .operator
                .push(instance.operator.snapshot(request, factory.clone())?);
        }
        self.to_checkpointer
            .send(checkpoint)
            .map_err(|_| "the checkpointing thread stopped")?;
        self.in_flight += 1;
        Ok(())
    }

    /// Handles the outcome of a checkpoint in flight: a completion is told to every
    /// backend and commits the transactions up to it; a failure fails the job.
    fn outcome(&mut self, outcome: JobResult<CheckpointId>) -> JobResult<()> {
        self.in_flight -= 1;
        let checkpoint_id = outcome?;
        for instance in &mut self.instances {
            instance.keyed.notify_checkpoint_complete(checkpoint_id)?;
            instance
                .operator
                .notify_checkpoint_complete(checkpoint_id)?;
        }
        self.sink.commit(checkpoint_id)?;
        self.last_completed = Some(checkpoint_id);
        Ok(())
    }

    /// Handles the outcomes that came back, without waiting.
    fn poll_outcomes(&mut self) -> JobResult<()> {
        while let Ok(outcome) = self.completed.try_recv() {
            self.outcome(outcome)?;
        }
        Ok(())
    }

    /// Waits for the outcome of every checkpoint in flight.
    fn wait_for_checkpoints(&mut self) -> JobResult<()> {
        while self.in_flight > 0 {
            let outcome = (self.completed.recv())
                .map_err(|_| "the checkpointing thread stopped with checkpoints in flight")?;
            self.outcome(outcome)?;
        }
        Ok(())
    }

    /// Triggers a checkpoint if the coordinator allows one now; a refused trigger is
    /// skipped, and its rows wait in the open transaction for the next one.
    fn maybe_checkpoint(&mut self, offset: u64) -> JobResult<()> {
        for aborted in self.coordinator.abort_expired(Instant::now())? {
            notify_aborted(&mut self.instances, aborted.id)?;
        }
        match (self.coordinator).trigger(CheckpointType::Checkpoint, Instant::now()) {
            Ok(request) => self.checkpoint(&request, offset),
            // The previous checkpoint is still running: this one is skipped.
            Err(TriggerRefused::TooManyPending { .. } | TriggerRefused::MinPause { .. }) => Ok(()),
            Err(refused) => Err(refused.into()),
        }
    }

    /// The end of the stream: every checkpoint in flight comes back, then a final
    /// checkpoint with the source at `offset` commits the last rows (as Flink's final
    /// checkpoint does for a finished task), so a job resumed from it replays nothing.
    fn final_checkpoint(&mut self, offset: u64) -> JobResult<()> {
        self.wait_for_checkpoints()?;
        let request = loop {
            match (self.coordinator).trigger(CheckpointType::Checkpoint, Instant::now()) {
                Ok(request) => break request,
                Err(TriggerRefused::MinPause { since, min_pause }) => {
                    std::thread::sleep(min_pause.saturating_sub(since));
                }
                Err(refused) => return Err(format!("the final checkpoint: {refused}").into()),
            }
        };
        self.checkpoint(&request, offset)?;
        self.wait_for_checkpoints()
    }

    /// What the keyed state of every instance holds, windows up to `last_window`.
    fn held(&self, last_window: u64) -> JobResult<Held> {
        let mut held = Held::default();
        for instance in &self.instances {
            for window in 0..=last_window {
                held.counts += (instance.keyed.keys(COUNTS, &window.to_be_bytes())?).len();
            }
            held.timers += (instance.timers).len(&*instance.keyed, TimeDomain::EventTime)?;
        }
        Ok(held)
    }
}

/// Runs the job with the state configuration `config` (checkpoint storage included),
/// keeping the backends' working files and the sink's output directory in `work_dir`.
///
/// The job claims the checkpoint storage for the run (a second job on the same directory is
/// refused), and with `spec.resume` restores the last completed checkpoint after checking
/// that it is this job's and was taken with this max parallelism. A run that starts from
/// the beginning of the stream empties `work_dir/output`; a resumed run keeps what it
/// holds: the transactions committed before the crash.
///
/// # Errors
///
/// Configuration, state and storage errors, as text; [`NothingToResume`] for
/// [`Resume::Latest`] on a storage without checkpoints; [`OutputError::FiredTwice`] when
/// the output holds a window twice.
pub fn run(spec: &JobSpec, config: &StateConfig, work_dir: PathBuf) -> JobResult<Report> {
    if spec.window_ms == 0 || spec.checkpoint_every == 0 {
        return Err("the window length and the events between checkpoints are at least 1".into());
    }
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
        // Timers of user keys in window namespaces.
        let timers =
            TimerService::register(&mut *keyed, WINDOW_TIMERS, U64Serializer, U64Serializer)?;
        let operator_params = OperatorBackendParams::new(index, spec.parallelism);
        let mut operator = match assignment {
            Some(assignment) => {
                operator_factory.restore(operator_params, registry, &assignment.operator)?
            }
            None => operator_factory.create(operator_params, registry)?,
        };
        operator.register_state(&OperatorStateMetaInfo::union_list(SOURCE_OFFSET, "u64-be"))?;
        operator.register_state(&OperatorStateMetaInfo::union_list(
            TRANSACTIONS,
            "windowed-counts-transaction-v1",
        ))?;
        instances.push(Instance {
            range,
            keyed,
            timers,
            operator,
        });
    }
    // Every instance gets the union lists whole; instance 0 reads them and keeps them
    // current, the others hold none, so a later restore does not get stale copies.
    let mut offset =
        match instances[0].operator.list(SOURCE_OFFSET)?.first() {
            Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                format!("source offset of {} bytes in the checkpoint", bytes.len())
            })?),
            None => 0,
        };
    let output = work_dir.join(OUTPUT_DIR);
    let sink = match restored {
        None => TwoPhaseCommitSink::fresh(output.clone())?,
        Some(_) => {
            TwoPhaseCommitSink::resume(output.clone(), &instances[0].operator.list(TRANSACTIONS)?)?
        }
    };
    for instance in &mut instances[1..] {
        instance.operator.update_list(SOURCE_OFFSET, &[])?;
        instance.operator.update_list(TRANSACTIONS, &[])?;
    }

    let (to_checkpointer, pending) = mpsc::channel();
    let (completions, completed) = mpsc::channel();
    let checkpointing = {
        let coordinator = coordinator.clone();
        std::thread::spawn(move || checkpointer(coordinator, pending, completions))
    };
    let mut job = Running {
        instances,
        sink,
        coordinator,
        storage,
        to_checkpointer,
        completed,
        in_flight: 0,
        last_completed: restored,
    };
    let last_window = spec.events * TIME_STEP_MS / spec.window_ms;
    // The window of the last event applied: its firing went with it into the checkpoint.
    let mut previous_window =
        (offset.checked_sub(1)).map_or(0, |last| last * TIME_STEP_MS / spec.window_ms);
    let mut processed = 0;
    while offset < spec.events {
        if spec.crash_after == Some(processed) {
            if spec.kill_process {
                std::process::exit(137);
            }
            let held = job.held(last_window)?;
            // Killed: nothing is flushed or committed, in-flight checkpoints never commit.
            let Running {
                instances,
                to_checkpointer,
                completed,
                mut last_completed,
                ..
            } = job;
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
                cleaned,
                held,
                outcome: Outcome::Crashed {
                    processed,
                    last_checkpoint: last_completed,
                },
            });
        }
        let user = user_of(offset, spec.users);
        let key = user.to_be_bytes();
        let group = max_parallelism.key_group_of(&key);
        let instance = (job.instances.iter_mut())
            .find(|instance| instance.range.contains(group))
            .ok_or("no instance owns a key group")?;
        let time = offset * TIME_STEP_MS;
        let window = time / spec.window_ms;
        let namespace = window.to_be_bytes();
        let keyed = &mut *instance.keyed;
        keyed.set_current_key(&key)?;
        let count = count_of(keyed, &namespace)?.unwrap_or(0);
        keyed.put_value(COUNTS, &namespace, &(count + 1).to_be_bytes())?;
        // A timer that is there already (the user's earlier events in the window) stays.
        (instance.timers).register_timer(
            keyed,
            TimeDomain::EventTime,
            &user,
            &window,
            window_end(window, spec.window_ms)?,
        )?;
        offset += 1;
        processed += 1;
        // After the event at `time` the watermark is `time - 1`: the first event of a
        // window takes it past the end of every earlier window.
        if window > previous_window {
            let watermark = i64::try_from(time).map_err(|_| "event time after i64::MAX ms")? - 1;
            job.fire(watermark)?;
            previous_window = window;
        }

        job.poll_outcomes()?;
        if offset % spec.checkpoint_every == 0 {
            job.maybe_checkpoint(offset)?;
        }
    }
    // The end of the stream: the watermark goes to the end of time and every window left
    // fires; the final checkpoint commits the rows.
    job.fire(i64::MAX)?;
    job.final_checkpoint(offset)?;
    let held = job.held(last_window)?;
    let Running {
        coordinator,
        to_checkpointer,
        ..
    } = job;
    drop(to_checkpointer);
    let _ = checkpointing.join();
    // Every instance has been told of every completion: nothing is held for a late one.
    coordinator.all_instances_notified()?;
    Ok(Report {
        restored_from: restored,
        cleaned,
        held,
        outcome: Outcome::Finished(sink::committed_rows(&output)?),
    })
}

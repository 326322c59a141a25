//! The bed every keyed contract runs on, and what several contracts share: the states
//! they register, keys covering key groups, the write and timer workloads, state and timers
//! moved from old instances into new ones, handles kept as a coordinator keeps them, and the
//! files a snapshot wrote.

use std::cell::Cell;
use std::fmt;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;

use state_api::{
    AsyncSnapshotTask, CheckpointId, CheckpointOptions, CheckpointStreamFactory, Error,
    IncrementalRemoteKeyedStateHandle, KeyGroup, KeyGroupRange, KeyedBackendParams,
    KeyedSnapshotResult, KeyedStateBackend, KeyedStateHandle, Registry, Result, SnapshotRequest,
    StateMetaInfo, Timer,
};
use state_coordinator::SharedStateRegistry;
use state_format::KeyGroupsStateHandle;
use state_storage_local::FileStateHandle;
use tempfile::TempDir;

use super::model::Model;
use super::{KeyedTarget, MAX_PARALLELISM};
use crate::support::{self, KitStorage};

// The states every contract registers: one of each kind, and a second value state with
// another namespace serializer.
pub(crate) const COUNT: &str = "count";
pub(crate) const WINDOW_SUM: &str = "window-sum";
pub(crate) const EVENTS: &str = "events";
pub(crate) const ATTRIBUTES: &str = "attributes";
/// Namespaces of [`COUNT`]; the empty one included.
pub(crate) const NAMESPACES: [&[u8]; 3] = [b"", b"window-1", b"window-2"];

pub(crate) fn standard_states() -> [StateMetaInfo; 4] {
    [
        StateMetaInfo::value(COUNT, "bytes", "bytes"),
        StateMetaInfo::value(WINDOW_SUM, "window", "u64-be"),
        StateMetaInfo::list(EVENTS, "bytes", "bytes"),
        StateMetaInfo::map(ATTRIBUTES, "bytes", "bytes", "bytes"),
    ]
}

// The priority-queue (timer) states the timer contracts register: event-time timers
// namespaced by window, processing-time timers with byte namespaces.
pub(crate) const EVENT_TIMERS: &str = "event-timers";
pub(crate) const PROCESSING_TIMERS: &str = "processing-timers";

pub(crate) fn timer_states() -> [StateMetaInfo; 2] {
    [
        StateMetaInfo::priority_queue(EVENT_TIMERS, "window"),
        StateMetaInfo::priority_queue(PROCESSING_TIMERS, "bytes"),
    ]
}

pub(crate) fn timer(timestamp: i64, key: &[u8], namespace: &[u8]) -> Timer {
    Timer {
        timestamp,
        key: key.to_vec(),
        namespace: namespace.to_vec(),
    }
}

pub(crate) fn full_range() -> KeyGroupRange {
    KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1)
        .expect("invariant: 0..=127 is a valid key-group range")
}

pub(crate) fn key_group(key: &[u8]) -> KeyGroup {
    MAX_PARALLELISM.key_group_of(key)
}

/// Keys, in a fixed order, such that every key group of `range` holds `per_group` of them;
/// the empty key is the first one when its key group is in `range`.
pub(crate) fn keys_covering(range: KeyGroupRange, per_group: usize) -> Vec<Vec<u8>> {
    let mut counts = vec![0usize; MAX_PARALLELISM.get() as usize];
    let mut missing = range.len() as usize * per_group;
    let mut keys = Vec::with_capacity(missing);
    let candidates = std::iter::once(Vec::new())
        .chain((0u32..).map(|i| format!("key-{i}").into_bytes()))
        .take(1_000_000);
    for key in candidates {
        let group = key_group(&key);
        if range.contains(group) && counts[group.get() as usize] < per_group {
            counts[group.get() as usize] += 1;
            keys.push(key);
            missing -= 1;
            if missing == 0 {
                return keys;
            }
        }
    }
    panic!("invariant: a million keys cover every key group of {range} {per_group} times")
}

/// The root of a contract run: the target, a label naming it and the contract, a
/// temporary directory, and the ways to create, snapshot and restore backends.
pub(crate) struct TestBed<'t> {
    backend: &'t str,
    /// The checkpoint strategy, when the target names one.
    strategy: Option<&'t str>,
    registry: &'t Registry,
    compression: &'t str,
    /// Backend options every instance is created with.
    options: &'t std::collections::BTreeMap<String, String>,
    pub(crate) label: String,
    dir: TempDir,
    instances: Cell<u32>,
}

impl fmt::Debug for TestBed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBed")
            .field("label", &self.label)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl<'t> TestBed<'t> {
    /// A bed for running `contract` on `target`.
    pub(crate) fn new(target: &'t KeyedTarget<'t>, contract: &str) -> Self {
        let label = target.label(contract);
        let dir = support::temp_dir("snapstate-keyed-kit-", &label);
        TestBed {
            backend: &target.backend,
            strategy: target.strategy.as_deref(),
            registry: target.registry,
            compression: &target.compression,
            options: &target.options,
            label,
            dir,
            instances: Cell::new(0),
        }
    }

    /// Unwraps `result` or panics naming the contract and `what` was done.
    #[track_caller]
    pub(crate) fn ok<T>(&self, result: Result<T>, what: impl fmt::Display) -> T {
        result.unwrap_or_else(|err| panic!("{}: {what}: {err}", self.label))
    }

    pub(crate) fn model(&self) -> Model {
        Model::new(&self.label)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Checkpoint storage under `name`; `file_state_threshold` 0 writes every stream to a
    /// file, `None` keeps the default.
    pub(crate) fn storage(&self, name: &str, file_state_threshold: Option<usize>) -> KitStorage {
        support::storage(&self.label, self.path(name), file_state_threshold)
    }

    /// Parameters for `range` with this bed's compression and a fresh working directory.
    pub(crate) fn params(&self, range: KeyGroupRange) -> KeyedBackendParams {
        let instance = self.instances.get();
        self.instances.set(instance + 1);
        let working_dir = self.path(&format!("work-{instance}"));
        if let Err(err) = fs::create_dir_all(&working_dir) {
            panic!("{}: creating {}: {err}", self.label, working_dir.display());
        }
        KeyedBackendParams {
            compression: self.compression.to_owned(),
            working_dir: Some(working_dir),
            strategy: self.strategy.map(str::to_owned),
            options: self.options.clone(),
            ..KeyedBackendParams::new(MAX_PARALLELISM, range)
        }
    }

    pub(crate) fn try_create(
        &self,
        params: KeyedBackendParams,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        self.registry
            .keyed_backend(self.backend)?
            .create(params, self.registry)
    }

    pub(crate) fn create(&self, range: KeyGroupRange) -> Box<dyn KeyedStateBackend> {
        let backend = self.ok(self.try_create(self.params(range)), "creating a backend");
        assert_eq!(
            backend.backend_name(),
            self.backend,
            "{}: the backend reports another name than it is registered under",
            self.label
        );
        assert_eq!(
            backend.key_group_range(),
            range,
            "{}: the backend reports another key-group range than it was given",
            self.label
        );
        backend
    }

    /// Creates a backend of the full range with the standard states registered.
    pub(crate) fn create_with_states(&self, model: &mut Model) -> Box<dyn KeyedStateBackend> {
        let mut backend = self.create(full_range());
        for meta in standard_states() {
            model.register(&mut *backend, &meta);
        }
        backend
    }

    /// Restores with `params`; a panic of the backend is reported as a broken contract
    /// for `case`.
    pub(crate) fn try_restore(
        &self,
        params: KeyedBackendParams,
        handles: &[Arc<dyn KeyedStateHandle>],
        case: &str,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.registry
                .keyed_backend(self.backend)?
                .restore(params, self.registry, handles)
        }));
        outcome.unwrap_or_else(|_| panic!("{}: restore panicked on {case}", self.label))
    }

    pub(crate) fn restore(
        &self,
        range: KeyGroupRange,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Box<dyn KeyedStateBackend> {
        let backend = self.ok(
            self.try_restore(self.params(range), handles, "a valid snapshot"),
            format_args!("restoring {range} from {} handles", handles.len()),
        );
        assert_eq!(
            backend.key_group_range(),
            range,
            "{}: the restored backend reports another key-group range than it was given",
            self.label
        );
        backend
    }

    /// Takes a checkpoint into `storage` and runs its asynchronous part.
    pub(crate) fn snapshot(
        &self,
        backend: &mut dyn KeyedStateBackend,
        storage: &KitStorage,
        checkpoint_id: CheckpointId,
    ) -> KeyedSnapshotResult {
        self.snapshot_with(
            backend,
            storage,
            checkpoint_id,
            &CheckpointOptions::checkpoint(),
        )
    }

    pub(crate) fn snapshot_with(
        &self,
        backend: &mut dyn KeyedStateBackend,
        storage: &KitStorage,
        checkpoint_id: CheckpointId,
        options: &CheckpointOptions,
    ) -> KeyedSnapshotResult {
        let factory = self.ok(
            storage.stream_factory(checkpoint_id),
            "opening a stream factory",
        );
        let task = self.ok(
            backend.snapshot(
                &SnapshotRequest::new(checkpoint_id, checkpoint_id.get() * 1000, options.clone()),
                Arc::new(factory),
            ),
            format_args!("synchronous part of checkpoint {checkpoint_id}"),
        );
        self.ok(
            task.run(),
            format_args!("asynchronous part of checkpoint {checkpoint_id}"),
        )
    }

    /// Runs the synchronous part of checkpoint `id` of `owner` (shared with a check of its
    /// pending snapshots) into the factory given.
    pub(crate) fn checkpoints_of<'s>(
        &'s self,
        owner: &'s std::cell::RefCell<Box<dyn KeyedStateBackend>>,
    ) -> impl FnMut(u64, Arc<dyn CheckpointStreamFactory>) -> AsyncSnapshotTask<KeyedSnapshotResult> + 's
    {
        move |checkpoint_id, factory| {
            self.ok(
                owner.borrow_mut().snapshot(
                    &SnapshotRequest::checkpoint(CheckpointId::new(checkpoint_id), 0),
                    factory,
                ),
                format_args!("synchronous part of checkpoint {checkpoint_id}"),
            )
        }
    }

    /// The job-manager-owned handle of a snapshot of state that is not empty.
    pub(crate) fn handle(&self, result: &KeyedSnapshotResult) -> Arc<dyn KeyedStateHandle> {
        result
            .job_manager_owned()
            .cloned()
            .unwrap_or_else(|| panic!("{}: a snapshot of state returned no handle", self.label))
    }
}

/// Bytes for messages: text when printable and short, else a length and a hex prefix.
pub(crate) fn show(bytes: &[u8]) -> String {
    let printable = bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    if printable && bytes.len() <= 64 {
        return format!("{:?}", String::from_utf8_lossy(bytes));
    }
    let prefix: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes 0x{prefix}..", bytes.len())
}

pub(crate) fn show_option(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "absent".to_owned(), show)
}

/// A timer for messages: its timestamp, key (with key group) and namespace.
pub(crate) fn show_timer(timer: &Timer) -> String {
    format!(
        "the timer at {} for key {} (key group {}) in namespace {}",
        timer.timestamp,
        show(&timer.key),
        key_group(&timer.key),
        show(&timer.namespace)
    )
}

/// Panics naming `case` unless `outcome` failed with [`Error::KeyGroupOutOfRange`].
#[track_caller]
pub(crate) fn assert_out_of_range<T>(label: &str, outcome: Result<T>, case: &str) {
    match outcome {
        Ok(_) => panic!("{label}: {case} was accepted"),
        Err(err) => assert!(
            matches!(err.root(), Error::KeyGroupOutOfRange { .. }),
            "{label}: {case}: {err} (expected a key group out of range)"
        ),
    }
}

/// Writes every kind of change to `keys`: values in several namespaces (the empty value
/// included), appended and replaced lists (an emptied one, an empty element), map puts and
/// removes (maps emptied by them), and clears. `round` shifts which keys get what, so a
/// second round changes most entries.
pub(crate) fn write_workload(
    model: &mut Model,
    backend: &mut dyn KeyedStateBackend,
    keys: &[Vec<u8>],
    round: usize,
) {
    for (i, key) in keys.iter().enumerate() {
        let n = i + round * 7;
        let ns = NAMESPACES[n % 3];
        model.put_value(backend, COUNT, ns, key, format!("v{round}-{i}").as_bytes());
        if n % 11 == 1 {
            model.put_value(backend, COUNT, NAMESPACES[(n + 1) % 3], key, b"");
        }
        model.put_value(backend, WINDOW_SUM, b"w1", key, &(n as u64).to_be_bytes());
        if n.is_multiple_of(2) {
            model.put_value(
                backend,
                WINDOW_SUM,
                b"w2",
                key,
                &(n as u64 * 3).to_be_bytes(),
            );
        }
        for e in 0..n % 4 {
            let element = format!("e{round}-{i}-{e}");
            model.append(backend, EVENTS, b"", key, element.as_bytes());
        }
        if n.is_multiple_of(5) {
            model.update_list(backend, EVENTS, b"", key, &[]);
        }
        if n.is_multiple_of(7) {
            model.update_list(
                backend,
                EVENTS,
                b"",
                key,
                &[b"replaced".to_vec(), Vec::new()],
            );
        }
        model.put_map(
            backend,
            ATTRIBUTES,
            b"",
            key,
            b"a",
            format!("a{round}-{i}").as_bytes(),
        );
        model.put_map(
            backend,
            ATTRIBUTES,
            b"",
            key,
            b"",
            b"under the empty user key",
        );
        if n % 4 == 1 {
            model.put_map(backend, ATTRIBUTES, b"ns", key, b"b", b"");
        }
        if n.is_multiple_of(3) {
            model.remove_map(backend, ATTRIBUTES, b"", key, b"a");
        }
        if n.is_multiple_of(6) {
            // Removes the last user key: the map is gone.
            model.remove_map(backend, ATTRIBUTES, b"", key, b"");
        }
        if n.is_multiple_of(9) {
            model.clear(backend, COUNT, ns, key);
        }
        if n.is_multiple_of(13) {
            model.clear(backend, ATTRIBUTES, b"", key);
        }
    }
}

/// Adds timers for `keys` to both timer states: two namespaces per key at one timestamp
/// (negative ones included), a timestamp shared by a quarter of the keys, `i64::MIN` and
/// `i64::MAX`; removes some again and fires the earliest event timers due at a watermark.
/// `round` shifts the timestamps, so a second round adds other timers (and some it added
/// already, which `add_timer` reports).
pub(crate) fn write_timers(
    model: &mut Model,
    backend: &mut dyn KeyedStateBackend,
    keys: &[Vec<u8>],
    round: usize,
) {
    let shift = round as i64;
    for (i, key) in keys.iter().enumerate() {
        let at = (i as i64 % 7) * 10 - 30 + shift;
        let first = timer(at, key, NAMESPACES[i % 3]);
        model.add_timer(backend, EVENT_TIMERS, &first);
        model.add_timer(
            backend,
            EVENT_TIMERS,
            &timer(at, key, NAMESPACES[(i + 1) % 3]),
        );
        if i % 4 == 0 {
            model.add_timer(backend, EVENT_TIMERS, &timer(1_000, key, b""));
        }
        if i % 17 == 0 {
            model.add_timer(backend, EVENT_TIMERS, &timer(i64::MIN, key, b"window-1"));
        }
        if i % 19 == 1 {
            model.add_timer(backend, EVENT_TIMERS, &timer(i64::MAX, key, b"window-2"));
        }
        if i.is_multiple_of(2) {
            let at = i as i64 * 1_000 + shift;
            model.add_timer(backend, PROCESSING_TIMERS, &timer(at, key, b"p"));
        }
        if i.is_multiple_of(6) {
            model.remove_timer(backend, EVENT_TIMERS, &first);
        }
    }
    model.poll_timers(backend, EVENT_TIMERS, -15 + shift, 8);
}

pub(crate) fn range_of(bed: &TestBed<'_>, parallelism: u32, index: u32) -> KeyGroupRange {
    bed.ok(
        MAX_PARALLELISM.range_for(index, parallelism),
        format_args!("range of instance {index} of {parallelism}"),
    )
}

/// What [`move_state`] writes before the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moved {
    /// The standard keyed states.
    State,
    /// The standard keyed states and the timer states.
    StateAndTimers,
}

/// Fills `old_parallelism` instances of `source`'s backend with what `moved` says,
/// snapshots them with `options` and restores `new_parallelism` instances of `target`'s
/// backend from all the handles: each holds exactly the state of its key groups and, with
/// timers, every timer is in exactly one instance and polling fires them earliest first.
pub(crate) fn move_state(
    source: &TestBed<'_>,
    target: &TestBed<'_>,
    (old_parallelism, new_parallelism): (u32, u32),
    options: &CheckpointOptions,
    moved: Moved,
) {
    let bed = source;
    let timers = moved == Moved::StateAndTimers;
    let keys = keys_covering(full_range(), 2);
    let storage = bed.storage("checkpoints", None);
    // One model for the whole job: each instance checks the part in its range.
    let mut model = bed.model();
    let mut handles = Vec::new();
    for index in 0..old_parallelism {
        let range = range_of(bed, old_parallelism, index);
        let mut instance = bed.create(range);
        let timer_states = timer_states().into_iter().filter(|_| timers);
        for meta in standard_states().into_iter().chain(timer_states) {
            model.register(&mut *instance, &meta);
        }
        let owned: Vec<Vec<u8>> = keys
            .iter()
            .filter(|key| range.contains(key_group(key)))
            .cloned()
            .collect();
        write_workload(&mut model, &mut *instance, &owned, index as usize);
        if timers {
            write_timers(&mut model, &mut *instance, &owned, index as usize);
        }
        if let Some(foreign) = keys.iter().find(|key| !range.contains(key_group(key))) {
            let step = format!("instance {index} of {range} setting key {}", show(foreign));
            assert_out_of_range(&bed.label, instance.set_current_key(foreign), &step);
            if timers {
                let foreign = timer(1, foreign, b"");
                let step = format!(
                    "instance {index} of {range} adding {}",
                    show_timer(&foreign)
                );
                assert_out_of_range(
                    &bed.label,
                    instance.add_timer(EVENT_TIMERS, &foreign),
                    &step,
                );
            }
        }
        model.check(&mut *instance, &format!("old instance {index} of {range}"));
        let result = bed.snapshot_with(&mut *instance, &storage, CheckpointId::new(1), options);
        handles.push(bed.handle(&result));
    }
    let total = model.timer_total();
    let mut restored = 0;
    for index in 0..new_parallelism {
        let range = range_of(target, new_parallelism, index);
        let mut instance = target.restore(range, &handles);
        let step = format!("new instance {index} of {range} of `{}`", target.backend);
        model.check(&mut *instance, &step);
        if !timers {
            continue;
        }
        for state in [EVENT_TIMERS, PROCESSING_TIMERS] {
            restored += target.ok(
                instance.timer_count(state),
                format_args!("{step}: timer_count of `{state}`"),
            );
            model.poll_timers(&mut *instance, state, i64::MAX, usize::MAX);
        }
        model.check(&mut *instance, &format!("{step}, every timer polled"));
    }
    assert!(
        restored == total,
        "{}: the {new_parallelism} new instances hold {restored} timers, the \
         {old_parallelism} old ones held {total}",
        target.label
    );
}

/// Handles kept as a coordinator keeps them: incremental ones registered with a
/// [`SharedStateRegistry`] (files of earlier checkpoints become placeholders) and resolved
/// again for restore, the others as they are.
#[derive(Debug, Default)]
pub(crate) struct RetainedHandles {
    shared: SharedStateRegistry,
}

impl RetainedHandles {
    /// The handle to keep of the snapshot `result` of state that is not empty.
    pub(crate) fn retain(
        &self,
        bed: &TestBed<'_>,
        result: &KeyedSnapshotResult,
    ) -> Arc<dyn KeyedStateHandle> {
        let handle = bed.handle(result);
        match handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
            Some(incremental) => Arc::new(bed.ok(
                self.shared.register(incremental),
                "registering an incremental checkpoint",
            )),
            None => handle,
        }
    }

    /// The kept `handle` ready for restore.
    pub(crate) fn resolve(
        &self,
        bed: &TestBed<'_>,
        handle: &Arc<dyn KeyedStateHandle>,
    ) -> Arc<dyn KeyedStateHandle> {
        match handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
            Some(incremental) => Arc::new(bed.ok(
                self.shared.resolve(incremental),
                "resolving an incremental checkpoint",
            )),
            None => Arc::clone(handle),
        }
    }
}

/// The files of an incremental handle (shared, private, meta data) stored as files.
pub(crate) fn incremental_files(handle: &Arc<dyn KeyedStateHandle>) -> Vec<PathBuf> {
    let Some(incremental) = handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>() else {
        return Vec::new();
    };
    incremental
        .shared_state
        .iter()
        .chain(&incremental.private_state)
        .map(|file| &file.handle)
        .chain(std::iter::once(&incremental.meta_state))
        .filter_map(|h| h.downcast_ref::<FileStateHandle>())
        .map(|file| file.path().to_path_buf())
        .collect()
}

/// The snapshot file of a key-groups handle, or why there is none.
pub(crate) fn snapshot_file(
    handle: &Arc<dyn KeyedStateHandle>,
) -> Result<(KeyGroupsStateHandle, PathBuf), String> {
    let key_groups = handle
        .downcast_ref::<KeyGroupsStateHandle>()
        .ok_or_else(|| format!("the handle is not a key-groups handle: {handle:?}"))?;
    let file = key_groups
        .delegate()
        .downcast_ref::<FileStateHandle>()
        .ok_or_else(|| {
            format!(
                "the key groups are not in a file: {:?}",
                key_groups.delegate()
            )
        })?;
    Ok((key_groups.clone(), file.path().to_path_buf()))
}

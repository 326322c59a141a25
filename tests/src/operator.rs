//! Conformance of [`OperatorStateBackend`]s, driven by name through the [`Registry`].
//!
//! Every contract is one public function taking the backend's registered name and the
//! registry it is linked into; [`run_all`] runs them all. Backends are created with
//! `registry.operator_backend(name)?.create(params, registry)`, snapshots go to a
//! [`LocalCheckpointStorage`](state_storage_local::LocalCheckpointStorage) in a temporary directory
//! (or the storage [`with_storage`](crate::storage::with_storage) names; every stream a
//! file or object), and restores
//! take the share [`repartition_operator_state`] plans for each new instance from the
//! handles alone. A broken rule panics naming the backend, the contract and the rule.
//!
//! ```no_run
//! use snapstate_tests::operator::{run_all, OperatorBackendCapabilities};
//! use state_api::Registry;
//!
//! state_operator::link();
//! run_all("operator", Registry::global(), OperatorBackendCapabilities { local_recovery: true });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    AsyncSnapshotTask, CheckpointOptions, CheckpointStreamFactory, DistributionMode, Error,
    LocalRecoveryConfig, OperatorBackendParams, OperatorSnapshotResult, OperatorStateBackend,
    OperatorStateMetaInfo, OperatorStatePartitions, OperatorStreamStateHandle, Registry, Result,
    StateObject,
};
use state_coordinator::repartition_operator_state;
use state_storage_local::{FileStateHandle, TaskLocalDirectory};
use tempfile::TempDir;

use crate::support::{self, KitStorage};

/// What an operator backend can promise beyond the basic contract.
#[derive(Debug, Clone, Copy, Default)]
pub struct OperatorBackendCapabilities {
    /// With [`OperatorBackendParams::local_recovery`] enabled, snapshots also write a
    /// task-local copy that restores on its own.
    pub local_recovery: bool,
}

/// Rescalings [`run_all`] checks: up, down, uneven, and unchanged.
pub const RESCALINGS: [(u32, u32); 4] = [(1, 4), (4, 1), (3, 5), (2, 2)];

// The states every contract registers: one of each mode.
const OFFSETS: &str = "offsets";
const WATERMARKS: &str = "watermarks";
const RULES: &str = "rules";

/// The standard states, ordered by name as `states()` lists them.
fn standard_states() -> Vec<OperatorStateMetaInfo> {
    vec![
        OperatorStateMetaInfo::split_list(OFFSETS, "bytes"),
        OperatorStateMetaInfo::broadcast(RULES, "string", "bytes"),
        OperatorStateMetaInfo::union_list(WATERMARKS, "u64-be"),
    ]
}

/// What one instance holds, read through the byte-level contract.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Contents {
    states: Vec<OperatorStateMetaInfo>,
    lists: BTreeMap<String, Vec<Vec<u8>>>,
    broadcast: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

struct Bed<'r> {
    backend: &'r str,
    registry: &'r Registry,
    label: String,
    dir: TempDir,
}

impl fmt::Debug for Bed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bed").field("label", &self.label).finish()
    }
}

impl<'r> Bed<'r> {
    fn new(backend: &'r str, registry: &'r Registry, contract: &str) -> Self {
        let label = format!("operator backend `{backend}`: {contract}");
        let dir = support::temp_dir("snapstate-operator-kit-", &label);
        Bed {
            backend,
            registry,
            label,
            dir,
        }
    }

    #[track_caller]
    fn ok<T>(&self, result: Result<T>, what: impl fmt::Display) -> T {
        result.unwrap_or_else(|err| panic!("{}: {what}: {err}", self.label))
    }

    /// Runs the synchronous part of checkpoint `id` of `owner` (shared with a check of its
    /// pending snapshots) into the factory given.
    fn checkpoints_of<'s>(
        &'s self,
        owner: &'s std::cell::RefCell<Box<dyn OperatorStateBackend>>,
    ) -> impl FnMut(
        u64,
        Arc<dyn CheckpointStreamFactory>,
    ) -> AsyncSnapshotTask<OperatorSnapshotResult>
    + 's {
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Checkpoint storage under `name` writing every stream to a file.
    fn storage(&self, name: &str) -> KitStorage {
        support::storage(&self.label, self.path(name), Some(0))
    }

    fn create_with(&self, params: OperatorBackendParams) -> Box<dyn OperatorStateBackend> {
        let backend = self.ok(
            self.registry
                .operator_backend(self.backend)
                .and_then(|factory| factory.create(params, self.registry)),
            "creating a backend",
        );
        assert_eq!(
            backend.backend_name(),
            self.backend,
            "{}: the backend reports another name than it is registered under",
            self.label
        );
        backend
    }

    /// Instance `index` of `parallelism` with the standard states registered.
    fn create_with_states(&self, index: u32, parallelism: u32) -> Box<dyn OperatorStateBackend> {
        let mut backend = self.create_with(OperatorBackendParams::new(index, parallelism));
        for meta in standard_states() {
            self.ok(
                backend.register_state(&meta),
                format_args!("registering `{}`", meta.name),
            );
        }
        backend
    }

    fn try_restore(
        &self,
        params: OperatorBackendParams,
        handles: &[OperatorStreamStateHandle],
        case: &str,
    ) -> Result<Box<dyn OperatorStateBackend>> {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.registry
                .operator_backend(self.backend)?
                .restore(params, self.registry, handles)
        }));
        outcome.unwrap_or_else(|_| panic!("{}: restore panicked on {case}", self.label))
    }

    fn restore(
        &self,
        index: u32,
        parallelism: u32,
        handles: &[OperatorStreamStateHandle],
    ) -> Box<dyn OperatorStateBackend> {
        self.ok(
            self.try_restore(
                OperatorBackendParams::new(index, parallelism),
                handles,
                "a valid snapshot",
            ),
            format_args!(
                "restoring instance {index} of {parallelism} from {} handles",
                handles.len()
            ),
        )
    }

    fn snapshot_with(
        &self,
        backend: &mut dyn OperatorStateBackend,
        storage: &KitStorage,
        checkpoint_id: CheckpointId,
        options: &CheckpointOptions,
    ) -> OperatorSnapshotResult {
        let factory = self.ok(
            storage.stream_factory(checkpoint_id),
            "opening a stream factory",
        );
        let task = self.ok(
            backend.snapshot(
                &SnapshotRequest::new(checkpoint_id, 0, options.clone()),
                Arc::new(factory),
            ),
            format_args!("synchronous part of checkpoint {checkpoint_id}"),
        );
        self.ok(
            task.run(),
            format_args!("asynchronous part of checkpoint {checkpoint_id}"),
        )
    }

    fn snapshot(
        &self,
        backend: &mut dyn OperatorStateBackend,
        storage: &KitStorage,
        checkpoint_id: CheckpointId,
    ) -> OperatorSnapshotResult {
        self.snapshot_with(
            backend,
            storage,
            checkpoint_id,
            &CheckpointOptions::checkpoint(),
        )
    }

    /// The job-manager-owned handle of a snapshot of registered state.
    fn handle(&self, result: &OperatorSnapshotResult) -> OperatorStreamStateHandle {
        result.job_manager_owned().cloned().unwrap_or_else(|| {
            panic!(
                "{}: a snapshot of registered state returned no handle",
                self.label
            )
        })
    }

    /// Every state of `backend`.
    fn read(&self, backend: &dyn OperatorStateBackend) -> Contents {
        let mut contents = Contents {
            states: backend.states(),
            ..Contents::default()
        };
        for meta in &contents.states {
            let name = meta.name.clone();
            match meta.mode {
                DistributionMode::Broadcast => {
                    let entries = self.ok(
                        backend.broadcast_entries(&name),
                        format_args!("reading `{name}`"),
                    );
                    contents
                        .broadcast
                        .insert(name, entries.into_iter().collect());
                }
                DistributionMode::SplitDistribute | DistributionMode::Union => {
                    let elements = self.ok(backend.list(&name), format_args!("reading `{name}`"));
                    contents.lists.insert(name, elements);
                }
            }
        }
        contents
    }

    /// Plans `old` onto `new` instances with the repartitioning rules.
    fn plan(
        &self,
        old: &[Vec<OperatorStreamStateHandle>],
        new: u32,
    ) -> Vec<Vec<OperatorStreamStateHandle>> {
        self.ok(
            repartition_operator_state(old, new),
            format_args!("repartitioning {} old instances to {new}", old.len()),
        )
    }

    /// The stream file of `handle`.
    fn file_of(&self, handle: &OperatorStreamStateHandle) -> PathBuf {
        handle
            .delegate()
            .downcast_ref::<FileStateHandle>()
            .map(|file| file.path().to_path_buf())
            .unwrap_or_else(|| {
                panic!(
                    "{}: a snapshot to file storage with threshold 0 is not a file",
                    self.label
                )
            })
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fills instance `instance`'s standard states: `split` distinct split elements, two
/// distinct union elements, and the broadcast rules every instance shares.
fn fill(bed: &Bed<'_>, backend: &mut dyn OperatorStateBackend, instance: u32, split: usize) {
    for k in 0..split {
        bed.ok(
            backend.append_to_list(OFFSETS, format!("i{instance}-e{k}").as_bytes()),
            "appending to the split list",
        );
    }
    for k in 0..2u64 {
        let watermark = u64::from(instance) * 100 + k;
        bed.ok(
            backend.append_to_list(WATERMARKS, &watermark.to_be_bytes()),
            "appending to the union list",
        );
    }
    for (key, value) in [
        ("max", "10"),
        ("min", "1"),
        ("", "empty key"),
        ("empty", ""),
    ] {
        bed.ok(
            backend.put_broadcast_value(RULES, key.as_bytes(), value.as_bytes()),
            "putting a broadcast entry",
        );
    }
}

/// Every state kind, with empty, binary and large elements, survives a checkpoint and a
/// savepoint unchanged, meta info included.
pub fn round_trip(backend: &str, registry: &Registry) {
    let bed = Bed::new(backend, registry, "round trip");
    let mut live = bed.create_with_states(0, 1);
    fill(&bed, &mut *live, 0, 5);
    let big: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    for element in [Vec::new(), vec![0, 0xFF, 0x80, 0x7F], big] {
        bed.ok(live.append_to_list(OFFSETS, &element), "appending");
    }
    bed.ok(
        live.update_list(WATERMARKS, &[9u64.to_be_bytes().to_vec(), Vec::new()]),
        "replacing the union list",
    );
    bed.ok(
        live.remove_broadcast_value(RULES, b"min"),
        "removing a broadcast entry",
    );
    let expected = bed.read(&*live);
    assert_eq!(
        expected.states,
        standard_states(),
        "{}: states() lists other meta info than was registered (ordered by name)",
        bed.label
    );
    let storage = bed.storage("checkpoints");
    for (checkpoint_id, options) in [
        (1, CheckpointOptions::checkpoint()),
        (2, CheckpointOptions::savepoint()),
    ] {
        let result = bed.snapshot_with(
            &mut *live,
            &storage,
            CheckpointId::new(checkpoint_id),
            &options,
        );
        let old = vec![vec![bed.handle(&result)]];
        let plan = bed.plan(&old, 1);
        let restored = bed.restore(0, 1, &plan[0]);
        assert_eq!(
            bed.read(&*restored),
            expected,
            "{}: restored state differs after checkpoint {checkpoint_id}",
            bed.label
        );
    }
    assert_eq!(
        bed.read(&*live),
        expected,
        "{}: snapshots changed the live state",
        bed.label
    );
}

/// Without registered states a snapshot writes no file and returns an empty result;
/// registered empty states come back registered and empty on every instance.
pub fn empty_state(backend: &str, registry: &Registry) {
    let bed = Bed::new(backend, registry, "empty state");
    let storage = bed.storage("checkpoints");
    let mut nothing = bed.create_with(OperatorBackendParams::new(0, 1));
    let result = bed.snapshot(&mut *nothing, &storage, CheckpointId::new(1));
    assert!(
        result.is_empty(),
        "{}: a snapshot of no states returned a handle",
        bed.label
    );
    storage.assert_empty(None, "a snapshot of no states");

    let mut empty = bed.create_with_states(0, 1);
    let result = bed.snapshot(&mut *empty, &storage, CheckpointId::new(2));
    let old = vec![vec![bed.handle(&result)]];
    let expected = bed.read(&*empty);
    for new in [1, 3] {
        for (index, handles) in (0..).zip(bed.plan(&old, new)) {
            let restored = bed.restore(index, new, &handles);
            assert_eq!(
                bed.read(&*restored),
                expected,
                "{}: instance {index} of {new} restored from empty states",
                bed.label
            );
        }
    }
}

/// From `from` instances to `to`: every split element lands on exactly one new instance in
/// even shares (each keeps its own at unchanged parallelism), every new instance gets every
/// union element and the broadcast state.
pub fn rescale(backend: &str, registry: &Registry, from: u32, to: u32) {
    let bed = Bed::new(backend, registry, &format!("rescaling {from} -> {to}"));
    let storage = bed.storage("checkpoints");
    let mut old = Vec::new();
    let mut old_contents = Vec::new();
    for instance in 0..from {
        let mut live = bed.create_with_states(instance, from);
        fill(&bed, &mut *live, instance, 2 * instance as usize + 3);
        old_contents.push(bed.read(&*live));
        let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
        old.push(vec![bed.handle(&result)]);
    }
    let all = |name: &str| -> Vec<Vec<u8>> {
        let mut elements: Vec<Vec<u8>> = old_contents
            .iter()
            .flat_map(|c| c.lists[name].clone())
            .collect();
        elements.sort();
        elements
    };
    let (all_split, all_union) = (all(OFFSETS), all(WATERMARKS));
    let rules = old_contents[0].broadcast[RULES].clone();

    let mut split = Vec::new();
    let mut shares = Vec::new();
    for (index, handles) in (0..).zip(bed.plan(&old, to)) {
        let restored = bed.read(&*bed.restore(index, to, &handles));
        let at = format!("{}: instance {index} of {to}", bed.label);
        assert_eq!(
            restored.states,
            standard_states(),
            "{at}: registered states"
        );
        let mut union = restored.lists[WATERMARKS].clone();
        union.sort();
        assert_eq!(
            union, all_union,
            "{at}: the union list is not the union of all"
        );
        assert_eq!(
            restored.broadcast[RULES], rules,
            "{at}: the broadcast state"
        );
        let share = &restored.lists[OFFSETS];
        if from == to {
            assert_eq!(
                share, &old_contents[index as usize].lists[OFFSETS],
                "{at}: at unchanged parallelism an instance keeps its split elements"
            );
        }
        shares.push(share.len());
        split.extend(share.iter().cloned());
    }
    split.sort();
    let shown: Vec<String> = split.iter().map(|e| show(e)).collect();
    assert_eq!(
        split, all_split,
        "{}: split elements are not each restored exactly once: {shown:?}",
        bed.label
    );
    let (min, max) = (shares.iter().min(), shares.iter().max());
    if from != to {
        assert!(
            max.zip(min).is_some_and(|(max, min)| max - min <= 1),
            "{}: uneven split shares {shares:?}",
            bed.label
        );
    }
}

/// Writes after the synchronous part are not in the snapshot, and the snapshot does not
/// change the live state.
pub fn snapshot_is_isolated(backend: &str, registry: &Registry) {
    let bed = Bed::new(backend, registry, "snapshot isolation");
    let storage = bed.storage("checkpoints");
    let mut live = bed.create_with_states(0, 1);
    fill(&bed, &mut *live, 0, 4);
    let before = bed.read(&*live);
    let factory = bed.ok(
        storage.stream_factory(CheckpointId::new(1)),
        "opening a stream factory",
    );
    let task = bed.ok(
        live.snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            Arc::new(factory),
        ),
        "synchronous part",
    );
    bed.ok(
        live.append_to_list(OFFSETS, b"after"),
        "appending after the sync part",
    );
    bed.ok(
        live.update_list(WATERMARKS, &[]),
        "clearing after the sync part",
    );
    bed.ok(
        live.put_broadcast_value(RULES, b"max", b"99"),
        "overwriting",
    );
    bed.ok(live.remove_broadcast_value(RULES, b"min"), "removing");
    bed.ok(
        live.register_state(&OperatorStateMetaInfo::union_list("late", "bytes")),
        "registering after the sync part",
    );
    let after = bed.read(&*live);
    let result = bed.ok(task.run(), "asynchronous part");
    let restored = bed.restore(0, 1, &[bed.handle(&result)]);
    assert_eq!(
        bed.read(&*restored),
        before,
        "{}: the snapshot holds writes made after its synchronous part",
        bed.label
    );
    assert_eq!(
        bed.read(&*live),
        after,
        "{}: the snapshot changed the live state",
        bed.label
    );
}

#[track_caller]
fn assert_damage_reported(
    bed: &Bed<'_>,
    outcome: Result<Box<dyn OperatorStateBackend>>,
    file: &Path,
    case: &str,
) {
    let err = match outcome {
        Ok(restored) => panic!(
            "{}: {case}: restore succeeded with {:?}",
            bed.label,
            bed.read(&*restored)
        ),
        Err(err) => err,
    };
    assert!(
        matches!(
            err.root(),
            Error::Corrupted { .. } | Error::Truncated { .. } | Error::UnsupportedVersion { .. }
        ),
        "{}: {case}: not a corruption or truncation: {err}",
        bed.label
    );
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{}: {case}: the error does not name the file: {err}",
        bed.label
    );
}

/// Restoring a snapshot with any single byte changed, cut at any length, replaced by a
/// foreign file, missing, or described by a handle whose offsets or states do not match it
/// fails with a typed error naming the file; it never panics or restores wrong data.
pub fn corrupt_snapshot_is_reported(backend: &str, registry: &Registry) {
    let bed = Bed::new(backend, registry, "corrupt snapshots");
    let storage = bed.storage("checkpoints");
    if storage.local_root().is_none() {
        println!(
            "{}: skipped: files are damaged on local storage only",
            bed.label
        );
        return;
    }
    let mut live = bed.create_with_states(0, 1);
    fill(&bed, &mut *live, 0, 3);
    let handle = bed.handle(&bed.snapshot(&mut *live, &storage, CheckpointId::new(1)));
    let file = bed.file_of(&handle);
    let original = bed.ok(
        fs::read(&file).map_err(|e| Error::io(&file, e)),
        "reading the snapshot",
    );
    let params = || OperatorBackendParams::new(0, 1);
    let handles = std::slice::from_ref(&handle);
    let check = |bytes: &[u8], case: &str| {
        bed.ok(
            fs::write(&file, bytes).map_err(|e| Error::io(&file, e)),
            "writing",
        );
        let outcome = bed.try_restore(params(), handles, case);
        assert_damage_reported(&bed, outcome, &file, case);
    };
    for position in 0..original.len() {
        for flip in [0x01u8, 0x80] {
            let mut bytes = original.clone();
            bytes[position] ^= flip;
            check(&bytes, &format!("byte {position} xor {flip:#04x}"));
        }
    }
    for len in 0..original.len() {
        check(
            &original[..len],
            &format!("cut to {len} of {} bytes", original.len()),
        );
    }
    check(b"{\"not\": \"a snapshot\"}", "a json file");
    check(&[0u8; 64], "zeros");

    bed.ok(
        fs::write(&file, &original).map_err(|e| Error::io(&file, e)),
        "writing",
    );
    let doctored = |edit: &dyn Fn(&mut BTreeMap<String, OperatorStatePartitions>)| {
        let mut states = handle.states().clone();
        edit(&mut states);
        OperatorStreamStateHandle::new(states, handle.delegate().clone())
    };
    let past_end = doctored(&|states| {
        if let Some(p) = states.get_mut(OFFSETS) {
            p.offsets.push(original.len() as u64 + 10);
        }
    });
    let mid_partition = doctored(&|states| {
        if let Some(p) = states.get_mut(OFFSETS) {
            p.offsets = p.offsets.iter().map(|o| o + 1).collect();
        }
    });
    let unknown_state = doctored(&|states| {
        states.insert(
            "not-in-header".into(),
            OperatorStatePartitions {
                offsets: vec![],
                mode: DistributionMode::Union,
            },
        );
    });
    let wrong_mode = doctored(&|states| {
        if let Some(p) = states.get_mut(WATERMARKS) {
            p.mode = DistributionMode::SplitDistribute;
        }
    });
    for (doctored, case) in [
        (past_end, "an offset past the end"),
        (mid_partition, "offsets inside partitions"),
        (unknown_state, "a state the header does not have"),
        (wrong_mode, "a mode the header does not record"),
    ] {
        let outcome = bed.try_restore(params(), &[doctored], case);
        assert_damage_reported(&bed, outcome, &file, case);
    }
    let intact = bed.restore(0, 1, handles);
    assert_eq!(
        bed.read(&*intact),
        bed.read(&*live),
        "{}: the repaired snapshot does not restore",
        bed.label
    );

    bed.ok(
        fs::remove_file(&file).map_err(|e| Error::io(&file, e)),
        "removing",
    );
    match bed.try_restore(params(), handles, "a missing file") {
        Ok(_) => panic!("{}: restore from a missing file succeeded", bed.label),
        Err(err) => assert!(
            matches!(err.root(), Error::NotFound { .. }),
            "{}: a missing file: {err}",
            bed.label
        ),
    }
}

/// A snapshot cancelled before it runs, cancelled while it writes, dropped without running,
/// or pending when its backend closes, fails with [`Error::Cancelled`] (where it runs) and
/// leaves no file; a completed snapshot's files go when it is discarded.
pub fn cancelled_snapshot_leaves_nothing(backend: &str, registry: &Registry) {
    let bed = Bed::new(backend, registry, "cancellation");
    let storage = bed.storage("checkpoints");
    let mut live = bed.create_with_states(0, 1);
    fill(&bed, &mut *live, 0, 50);
    let shared = std::cell::RefCell::new(live);
    support::check_cancellations(&bed.label, &storage, bed.checkpoints_of(&shared), || {
        shared.borrow().pending_snapshots()
    });
    let mut live = shared.into_inner();

    let completed = support::CANCELLATION_CHECKPOINTS + 1;
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(completed));
    let restored = bed.restore(0, 1, &[bed.handle(&result)]);
    assert_eq!(
        bed.read(&*restored),
        bed.read(&*live),
        "{}: after cancellations",
        bed.label
    );
    bed.ok(result.discard(), "discarding a completed snapshot");
    storage.assert_empty(None, "discarded after completing");

    let pending = completed + 1;
    let factory = bed.ok(
        storage.stream_factory(CheckpointId::new(pending)),
        "opening a stream factory",
    );
    let task = bed.ok(
        live.snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(pending), 0),
            Arc::new(factory),
        ),
        format_args!("synchronous part of checkpoint {pending}"),
    );
    bed.ok(live.close(), "closing the backend");
    support::expect_cancelled(&bed.label, task.run(), "pending when its backend closed");
    storage.assert_empty(None, "pending when its backend closed");
    match live.append_to_list(OFFSETS, b"after close") {
        Ok(()) => panic!("{}: a closed backend took a write", bed.label),
        Err(err) => assert!(
            matches!(err, Error::Closed { .. }),
            "{}: writing to a closed backend: {err}",
            bed.label
        ),
    }

    let mut other = bed.create_with_states(0, 1);
    fill(&bed, &mut *other, 0, 50);
    let closing = std::cell::RefCell::new(other);
    support::check_close_while_writing(
        &bed.label,
        &storage,
        CheckpointId::new(pending + 1),
        |factory| bed.checkpoints_of(&closing)(pending + 1, factory),
        || closing.borrow_mut().close(),
        || closing.borrow().pending_snapshots(),
    );
}

/// Storage that fails after some bytes or on close fails the snapshot with a typed error
/// and leaves no file; short writes still give a correct snapshot; a snapshot that lost the
/// tail of its stream does not restore. The backend goes on afterwards.
pub fn storage_faults_are_contained(backend: &str, registry: &Registry) {
    let bed = Bed::new(backend, registry, "storage faults");
    let storage = bed.storage("checkpoints");
    let mut live = bed.create_with_states(0, 1);
    fill(&bed, &mut *live, 0, 20);
    // Larger than the largest byte budget of the faults.
    bed.ok(live.append_to_list(OFFSETS, &[7; 10_000]), "appending");
    let expected = bed.read(&*live);
    let shared = std::cell::RefCell::new(live);
    support::check_storage_faults(
        &bed.label,
        &storage,
        bed.checkpoints_of(&shared),
        || shared.borrow().pending_snapshots(),
        |case, result, intact| {
            let handles = [bed.handle(result)];
            let outcome = bed.try_restore(OperatorBackendParams::new(0, 1), &handles, case);
            match intact {
                true => {
                    let restored = bed.ok(outcome, case);
                    assert_eq!(bed.read(&*restored), expected, "{}: {case}", bed.label);
                }
                false => support::expect_damage_detected(&bed.label, case, outcome),
            }
        },
    );
    let mut live = shared.into_inner();
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(100));
    let restored = bed.restore(0, 1, &[bed.handle(&result)]);
    assert_eq!(
        bed.read(&*restored),
        expected,
        "{}: after the faults",
        bed.label
    );
}

#[track_caller]
fn assert_rejected<T>(bed: &Bed<'_>, outcome: Result<T>, case: &str, incompatible: bool) {
    match outcome {
        Ok(_) => panic!("{}: {case} was accepted", bed.label),
        Err(err) => {
            let fits = match incompatible {
                true => matches!(err.root(), Error::Incompatible { .. }),
                false => matches!(err.root(), Error::NotFound { .. }),
            };
            assert!(fits, "{}: {case}: {err}", bed.label);
        }
    }
}

/// Re-registering a state with another mode or serializer, using a list as a broadcast map
/// or the other way round, and using an unregistered name are refused with typed errors,
/// also against state that came back from a snapshot.
pub fn incompatible_meta_is_rejected(backend: &str, registry: &Registry) {
    let bed = Bed::new(backend, registry, "incompatible meta info");
    let storage = bed.storage("checkpoints");
    let mut live = bed.create_with_states(0, 1);
    fill(&bed, &mut *live, 0, 2);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let mut restored = bed.restore(0, 1, &[bed.handle(&result)]);
    for backend in [&mut live, &mut restored] {
        for meta in standard_states() {
            bed.ok(
                backend.register_state(&meta),
                "registering the same meta info again",
            );
        }
        let cases = [
            (
                OperatorStateMetaInfo::union_list(OFFSETS, "bytes"),
                "another mode",
            ),
            (
                OperatorStateMetaInfo::union_list(WATERMARKS, "string"),
                "another element serializer",
            ),
            (
                OperatorStateMetaInfo::broadcast(RULES, "bytes", "bytes"),
                "another key serializer",
            ),
            (
                OperatorStateMetaInfo::split_list(RULES, "bytes"),
                "a list over a broadcast state",
            ),
        ];
        for (meta, case) in cases {
            assert_rejected(&bed, backend.register_state(&meta), case, true);
        }
        assert_rejected(
            &bed,
            backend.list(RULES),
            "reading a broadcast state as a list",
            true,
        );
        assert_rejected(
            &bed,
            backend.broadcast_entries(OFFSETS),
            "reading a list as broadcast",
            true,
        );
        assert_rejected(
            &bed,
            backend.append_to_list("nope", b"x"),
            "an unregistered list",
            false,
        );
        assert_rejected(
            &bed,
            backend.broadcast_value("nope", b"x"),
            "an unregistered map",
            false,
        );
    }
}

/// With local recovery enabled a snapshot also writes a task-local copy that restores on
/// its own to the same state.
pub fn local_recovery(backend: &str, registry: &Registry) {
    let bed = Bed::new(backend, registry, "local recovery");
    let storage = bed.storage("checkpoints");
    let local_root = bed.path("local");
    let mut live = bed.create_with(OperatorBackendParams {
        local_recovery: LocalRecoveryConfig::enabled(Arc::new(TaskLocalDirectory::new(
            &local_root,
        ))),
        ..OperatorBackendParams::new(0, 1)
    });
    for meta in standard_states() {
        bed.ok(live.register_state(&meta), "registering");
    }
    fill(&bed, &mut *live, 0, 6);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let local = result.task_local().cloned().unwrap_or_else(|| {
        panic!(
            "{}: local recovery is enabled but no local copy was written",
            bed.label
        )
    });
    assert!(
        !support::files_under(&bed.label, &local_root).is_empty(),
        "{}: the local copy is not under the local recovery root",
        bed.label
    );
    let restored = bed.restore(0, 1, &[local]);
    assert_eq!(
        bed.read(&*restored),
        bed.read(&*live),
        "{}: restored from the local copy",
        bed.label
    );
}

/// Runs every contract on operator backend `backend`.
pub fn run_all(backend: &str, registry: &Registry, capabilities: OperatorBackendCapabilities) {
    round_trip(backend, registry);
    empty_state(backend, registry);
    for (from, to) in RESCALINGS {
        rescale(backend, registry, from, to);
    }
    snapshot_is_isolated(backend, registry);
    corrupt_snapshot_is_reported(backend, registry);
    cancelled_snapshot_leaves_nothing(backend, registry);
    storage_faults_are_contained(backend, registry);
    incompatible_meta_is_rejected(backend, registry);
    match capabilities.local_recovery {
        true => local_recovery(backend, registry),
        false => println!("operator backend `{backend}`: skipping local recovery (not declared)"),
    }
}

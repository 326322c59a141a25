//! The `heap-incremental` strategy: checkpoints hold only the changes since the last
//! completed checkpoint, aborted and failed checkpoints lose no change, the shared state
//! registry keeps exactly the files retained checkpoints need, the chain is rewritten as a
//! new base when it grows, and damaged chain files are reported naming the file. A
//! model-based sequence runs writes, checkpoints completed, aborted and failed in any order,
//! pruning, and restores at any point with any parallelism against a `BTreeMap` model.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use snapstate_tests::faults::{Fault, FaultyStreamFactory};
use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    AsyncSnapshotTask, Error, IncrementalRemoteKeyedStateHandle, KeyGroupRange, KeyedBackendParams,
    KeyedSnapshotResult, KeyedStateBackend, KeyedStateHandle, MaxParallelism,
    PlaceholderStreamStateHandle, PluginKind, Registry, StateMetaInfo, StateObject,
};
use state_coordinator::SharedStateRegistry;
use state_format::KeyGroupsStateHandle;
use state_storage_local::{FileStateHandle, LocalCheckpointStorage};

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);
const VALUES: &str = "values";
const LISTS: &str = "lists";
const MAPS: &str = "maps";

fn registry() -> &'static Registry {
    // The linker drops the link-time registrations of crates nothing names.
    state_compress::link();
    state_heap::link();
    state_rocksdb::link();
    Registry::global()
}

fn full_range() -> KeyGroupRange {
    KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1).unwrap()
}

fn params(range: KeyGroupRange, compression: &str) -> KeyedBackendParams {
    KeyedBackendParams {
        strategy: Some("heap-incremental".into()),
        compression: compression.into(),
        ..KeyedBackendParams::new(MAX_PARALLELISM, range)
    }
}

fn create(params: KeyedBackendParams) -> Box<dyn KeyedStateBackend> {
    let registry = registry();
    let mut backend = registry
        .keyed_backend("heap")
        .unwrap()
        .create(params, registry)
        .unwrap();
    for meta in [
        StateMetaInfo::value(VALUES, "bytes", "bytes"),
        StateMetaInfo::list(LISTS, "bytes", "bytes"),
        StateMetaInfo::map(MAPS, "bytes", "bytes", "bytes"),
    ] {
        backend.register_state(&meta).unwrap();
    }
    backend
}

fn restore(
    params: KeyedBackendParams,
    handles: &[Arc<dyn KeyedStateHandle>],
) -> state_api::Result<Box<dyn KeyedStateBackend>> {
    let registry = registry();
    registry
        .keyed_backend("heap")?
        .restore(params, registry, handles)
}

/// What a backend should hold, by state and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    values: BTreeMap<Vec<u8>, Vec<u8>>,
    lists: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    maps: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Model {
    fn apply(&mut self, backend: &mut dyn KeyedStateBackend, write: &Write) {
        let key = write.key();
        backend.set_current_key(&key).unwrap();
        match *write {
            Write::Put { value, .. } => {
                backend.put_value(VALUES, b"", &[value]).unwrap();
                self.values.insert(key, vec![value]);
            }
            Write::Delete { .. } => {
                backend.clear(VALUES, b"").unwrap();
                self.values.remove(&key);
            }
            Write::Append { element, .. } => {
                backend.append_to_list(LISTS, b"", &[element]).unwrap();
                self.lists.entry(key).or_default().push(vec![element]);
            }
            Write::ClearList { .. } => {
                backend.clear(LISTS, b"").unwrap();
                self.lists.remove(&key);
            }
            Write::MapPut {
                user_key, value, ..
            } => {
                backend
                    .put_map_value(MAPS, b"", &[user_key], &[value])
                    .unwrap();
                self.maps
                    .entry(key)
                    .or_default()
                    .insert(vec![user_key], vec![value]);
            }
            Write::MapRemove { user_key, .. } => {
                backend.remove_map_value(MAPS, b"", &[user_key]).unwrap();
                if let Some(map) = self.maps.get_mut(&key) {
                    map.remove(&[user_key][..]);
                    if map.is_empty() {
                        self.maps.remove(&key);
                    }
                }
            }
            Write::MapClear { .. } => {
                backend.clear(MAPS, b"").unwrap();
                self.maps.remove(&key);
            }
        }
    }

    /// The part of the model in `range`.
    fn in_range(&self, range: KeyGroupRange) -> Model {
        let keep = |key: &Vec<u8>| range.contains(MAX_PARALLELISM.key_group_of(key));
        Model {
            values: self
                .values
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            lists: self
                .lists
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            maps: self
                .maps
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// What `backend` holds, read through the byte-level contract.
    fn read(backend: &mut dyn KeyedStateBackend) -> Model {
        let mut model = Model::default();
        for key in backend.keys(VALUES, b"").unwrap() {
            backend.set_current_key(&key).unwrap();
            if let Some(value) = backend.value(VALUES, b"").unwrap() {
                model.values.insert(key, value);
            }
        }
        for key in backend.keys(LISTS, b"").unwrap() {
            backend.set_current_key(&key).unwrap();
            let list = backend.list(LISTS, b"").unwrap();
            if !list.is_empty() {
                model.lists.insert(key, list);
            }
        }
        for key in backend.keys(MAPS, b"").unwrap() {
            backend.set_current_key(&key).unwrap();
            let entries: BTreeMap<_, _> = backend
                .map_entries(MAPS, b"")
                .unwrap()
                .into_iter()
                .collect();
            if !entries.is_empty() {
                model.maps.insert(key, entries);
            }
        }
        model
    }
}

/// One write of the model-based sequences; keys come from a small space so that entries
/// are changed, removed and written again across checkpoints.
#[derive(Debug, Clone, Copy)]
enum Write {
    Put { key: u16, value: u8 },
    Delete { key: u16 },
    Append { key: u16, element: u8 },
    ClearList { key: u16 },
    MapPut { key: u16, user_key: u8, value: u8 },
    MapRemove { key: u16, user_key: u8 },
    MapClear { key: u16 },
}

impl Write {
    fn key(&self) -> Vec<u8> {
        let key = match *self {
            Write::Put { key, .. }
            | Write::Delete { key }
            | Write::Append { key, .. }
            | Write::ClearList { key }
            | Write::MapPut { key, .. }
            | Write::MapRemove { key, .. }
            | Write::MapClear { key } => key,
        };
        format!("key-{key}").into_bytes()
    }
}

/// A coordinator for one backend: checkpoint storage in a temporary directory, a shared
/// state registry, and the retained checkpoints with the model state each one holds.
struct Job {
    _dir: tempfile::TempDir,
    storage: LocalCheckpointStorage,
    shared: SharedStateRegistry,
    /// Registered checkpoints: the retained handle (placeholders) and the model at their
    /// synchronous part.
    retained: BTreeMap<u64, (IncrementalRemoteKeyedStateHandle, Model)>,
}

impl Job {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalCheckpointStorage::new(dir.path().join("checkpoints"))
            .unwrap()
            .with_file_state_threshold(0);
        Job {
            _dir: dir,
            storage,
            shared: SharedStateRegistry::default(),
            retained: BTreeMap::new(),
        }
    }

    fn start(
        &self,
        backend: &mut dyn KeyedStateBackend,
        id: u64,
        fault: Option<Fault>,
    ) -> AsyncSnapshotTask<KeyedSnapshotResult> {
        let factory = self.storage.stream_factory(CheckpointId::new(id)).unwrap();
        let factory: Arc<dyn state_api::CheckpointStreamFactory> = match fault {
            None => Arc::new(factory),
            Some(fault) => Arc::new(FaultyStreamFactory::new(Box::new(factory), fault)),
        };
        backend
            .snapshot(
                &SnapshotRequest::checkpoint(CheckpointId::new(id), 0),
                factory,
            )
            .unwrap()
    }

    /// Registers checkpoint `id` whose result is `result`, as the coordinator does when
    /// every instance acknowledged it.
    fn register(
        &mut self,
        id: u64,
        result: &KeyedSnapshotResult,
        model: Model,
    ) -> IncrementalRemoteKeyedStateHandle {
        self.try_register(id, result, model).unwrap()
    }

    fn try_register(
        &mut self,
        id: u64,
        result: &KeyedSnapshotResult,
        model: Model,
    ) -> state_api::Result<IncrementalRemoteKeyedStateHandle> {
        let handle = incremental(result);
        let retained = self.shared.register(&handle)?;
        self.retained.insert(id, (retained, model));
        Ok(handle)
    }

    /// Checkpoint `id`, resolved for restore.
    fn restorable(&self, id: u64) -> Arc<dyn KeyedStateHandle> {
        let (retained, _) = &self.retained[&id];
        Arc::new(self.shared.resolve(retained).unwrap())
    }

    /// Checkpoint `id` is no longer retained: its own files and shared files no other
    /// retained checkpoint needs are deleted.
    fn release(&mut self, id: u64) {
        if let Some((retained, _)) = self.retained.remove(&id) {
            retained.discard().unwrap();
            self.shared.release(CheckpointId::new(id)).unwrap();
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        files_under(self.storage.root())
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn incremental(result: &KeyedSnapshotResult) -> IncrementalRemoteKeyedStateHandle {
    let handle = result
        .job_manager_owned()
        .expect("a checkpoint of state has a handle");
    handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .unwrap_or_else(|| {
            panic!("heap-incremental checkpoints are incremental handles: {handle:?}")
        })
        .clone()
}

/// Bytes a checkpoint wrote itself (placeholders are files of earlier checkpoints).
fn written_bytes(handle: &IncrementalRemoteKeyedStateHandle) -> u64 {
    handle
        .shared_state
        .iter()
        .filter(|f| !f.handle.is::<PlaceholderStreamStateHandle>())
        .map(|f| f.handle.state_size())
        .sum()
}

/// Bytes of every file a resolved checkpoint refers to.
fn referenced_bytes(handle: &dyn KeyedStateHandle) -> u64 {
    let handle = handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .unwrap();
    handle
        .shared_state
        .iter()
        .map(|f| f.handle.state_size())
        .sum()
}

fn file_path(file: &state_api::HandleAndLocalPath) -> PathBuf {
    file.handle
        .downcast_ref::<FileStateHandle>()
        .unwrap_or_else(|| panic!("a file: {:?}", file.handle))
        .path()
        .to_path_buf()
}

fn fill(model: &mut Model, backend: &mut dyn KeyedStateBackend, keys: u16, round: u8) {
    for key in 0..keys {
        let value = (key as u8).wrapping_mul(7).wrapping_add(round);
        for write in [
            Write::Put { key, value },
            Write::Append {
                key,
                element: value,
            },
            Write::MapPut {
                key,
                user_key: (key % 5) as u8,
                value,
            },
            Write::MapPut {
                key,
                user_key: 9,
                value,
            },
        ] {
            model.apply(backend, &write);
        }
    }
}

/// A backend with `compression` filled with `keys` keys, and a job in which its checkpoint
/// 1 (a base) completed.
fn completed_base(
    compression: &str,
    keys: u16,
) -> (
    Job,
    Box<dyn KeyedStateBackend>,
    Model,
    IncrementalRemoteKeyedStateHandle,
) {
    let mut job = Job::new();
    let mut backend = create(params(full_range(), compression));
    let mut model = Model::default();
    fill(&mut model, &mut *backend, keys, 0);
    let first = job.start(&mut *backend, 1, None).run().unwrap();
    let first = job.register(1, &first, model.clone());
    backend
        .notify_checkpoint_complete(CheckpointId::new(1))
        .unwrap();
    (job, backend, model, first)
}

#[test]
fn heap_incremental_is_a_registered_strategy_of_the_heap_backend() {
    let registry = registry();
    assert!(
        registry.conflicts().is_empty(),
        "{:?}",
        registry.conflicts()
    );
    let strategies = registry.names(PluginKind::KeyedStrategy);
    assert!(
        strategies.contains(&"heap-incremental".to_owned()),
        "{strategies:?}"
    );
    assert_eq!(
        registry
            .keyed_strategy("heap-incremental")
            .unwrap()
            .backend(),
        "heap"
    );
}

#[test]
fn the_second_checkpoint_holds_only_the_changes_and_tombstones() {
    let (mut job, mut backend, mut model, first) = completed_base("lz4", 2000);
    assert_eq!(
        first.shared_state.len(),
        1,
        "the first checkpoint is a base alone"
    );

    // Change 2 keys, remove a value, a list and a map entry, clear a map.
    for write in [
        Write::Put { key: 3, value: 99 },
        Write::Append {
            key: 4,
            element: 98,
        },
        Write::Delete { key: 5 },
        Write::ClearList { key: 6 },
        Write::MapRemove {
            key: 7,
            user_key: 9,
        },
        Write::MapClear { key: 8 },
        Write::MapPut {
            key: 8,
            user_key: 1,
            value: 1,
        },
    ] {
        model.apply(&mut *backend, &write);
    }
    let second = job.start(&mut *backend, 2, None).run().unwrap();
    let second = job.register(2, &second, model.clone());
    backend
        .notify_checkpoint_complete(CheckpointId::new(2))
        .unwrap();
    assert_eq!(
        second.shared_state.len(),
        2,
        "base by placeholder, then the delta"
    );
    assert!(
        second.shared_state[0]
            .handle
            .is::<PlaceholderStreamStateHandle>(),
        "the base is referred to, not written again: {:?}",
        second.shared_state[0]
    );
    let (base, delta) = (written_bytes(&first), written_bytes(&second));
    assert!(
        delta * 10 < base,
        "a delta of 7 changes is {delta} bytes, the base {base}"
    );

    job.release(1);
    let mut restored = restore(params(full_range(), "none"), &[job.restorable(2)]).unwrap();
    assert_eq!(
        Model::read(&mut *restored),
        model,
        "checkpoint 2 restores the changes"
    );
}

#[test]
fn aborted_and_failed_checkpoints_lose_no_change() {
    let (mut job, mut backend, mut model, _) = completed_base("none", 50);

    model.apply(&mut *backend, &Write::Put { key: 1, value: 201 });
    // Checkpoint 2 fails in its asynchronous part.
    let failed = job
        .start(&mut *backend, 2, Some(Fault::FailOnWrite(2)))
        .run();
    assert!(failed.is_err(), "the injected fault fails checkpoint 2");
    model.apply(&mut *backend, &Write::MapClear { key: 2 });
    // Checkpoint 3 completes its asynchronous part but is aborted.
    let aborted = job.start(&mut *backend, 3, None).run().unwrap();
    backend
        .notify_checkpoint_aborted(CheckpointId::new(3))
        .unwrap();
    aborted.discard().unwrap();
    model.apply(&mut *backend, &Write::Delete { key: 3 });
    // Checkpoint 4 runs and then a late notification for the failed checkpoint 2 arrives.
    let fourth = job.start(&mut *backend, 4, None).run().unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(2))
        .unwrap();
    job.register(4, &fourth, model.clone());
    backend
        .notify_checkpoint_complete(CheckpointId::new(4))
        .unwrap();

    let mut restored = restore(params(full_range(), "none"), &[job.restorable(4)]).unwrap();
    assert_eq!(
        Model::read(&mut *restored),
        model,
        "checkpoint 4 holds the changes of 2, 3 and 4"
    );
    job.release(1);
    job.release(4);
    assert_eq!(
        job.files(),
        Vec::<PathBuf>::new(),
        "no file outlives the checkpoints"
    );
}

#[test]
fn a_late_notification_does_not_move_the_base_back() {
    let (mut job, mut backend, mut model, _) = completed_base("none", 2000);
    model.apply(&mut *backend, &Write::Put { key: 1, value: 1 });
    let second_task = job.start(&mut *backend, 2, None);
    let model_2 = model.clone();
    model.apply(&mut *backend, &Write::Put { key: 2, value: 2 });
    let third_task = job.start(&mut *backend, 3, None);
    let model_3 = model.clone();
    let third = third_task.run().unwrap();
    let second = second_task.run().unwrap();
    job.register(3, &third, model_3.clone());
    backend
        .notify_checkpoint_complete(CheckpointId::new(3))
        .unwrap();
    job.register(2, &second, model_2);
    backend
        .notify_checkpoint_complete(CheckpointId::new(2))
        .unwrap();

    model.apply(&mut *backend, &Write::Put { key: 3, value: 3 });
    let fourth = job.start(&mut *backend, 4, None).run().unwrap();
    let fourth = job.register(4, &fourth, model.clone());
    let third = incremental(&third);
    let names = |h: &IncrementalRemoteKeyedStateHandle| -> Vec<String> {
        h.shared_state
            .iter()
            .map(|f| f.local_path.clone())
            .collect()
    };
    assert_eq!(
        names(&fourth)[..names(&third).len()],
        names(&third)[..],
        "checkpoint 4 builds on 3, the last completed, not on the late 2"
    );
    for id in [2, 3, 4] {
        let (_, expected) = job.retained[&id].clone();
        let mut restored = restore(params(full_range(), "none"), &[job.restorable(id)]).unwrap();
        assert_eq!(Model::read(&mut *restored), expected, "checkpoint {id}");
    }
}

#[test]
fn the_chain_is_rewritten_as_a_base_when_its_deltas_grow() {
    let mut job = Job::new();
    let mut params = params(full_range(), "snappy");
    params.options.insert(
        state_heap::MATERIALIZATION_FRACTION_OPTION.into(),
        "0.1".into(),
    );
    let mut backend = create(params.clone());
    let mut model = Model::default();
    fill(&mut model, &mut *backend, 1000, 0);
    let mut bases = 0;
    let mut longest = 0;
    for id in 1..=30u64 {
        // 3% of the keys change per checkpoint.
        for key in 0..30u16 {
            model.apply(
                &mut *backend,
                &Write::Put {
                    key: key * 33 + id as u16,
                    value: id as u8,
                },
            );
        }
        let result = job.start(&mut *backend, id, None).run().unwrap();
        let handle = job.register(id, &result, model.clone());
        backend
            .notify_checkpoint_complete(CheckpointId::new(id))
            .unwrap();
        if handle.shared_state.len() == 1 {
            bases += 1;
        }
        longest = longest.max(handle.shared_state.len());
        let restorable = job.restorable(id);
        let referenced = referenced_bytes(&*restorable);
        let base = handle.shared_state[0].handle.state_size();
        assert!(
            referenced as f64 <= base as f64 * 1.3,
            "checkpoint {id} refers to {referenced} bytes on a base of {base}"
        );
        if id > 1 {
            job.release(id - 1);
        }
    }
    assert!(
        bases >= 3,
        "30 checkpoints at 3% each rewrite the base with fraction 0.1: {bases} bases"
    );
    assert!(longest >= 2, "some checkpoints are deltas");
    let mut restored = restore(params, &[job.restorable(30)]).unwrap();
    assert_eq!(Model::read(&mut *restored), model);
    job.release(30);
    assert_eq!(
        job.files(),
        Vec::<PathBuf>::new(),
        "pruning leaves no orphan"
    );
}

#[test]
fn a_malformed_materialization_fraction_is_refused() {
    let mut params = params(full_range(), "none");
    params.options.insert(
        state_heap::MATERIALIZATION_FRACTION_OPTION.into(),
        "lots".into(),
    );
    let registry = registry();
    let err = registry
        .keyed_backend("heap")
        .unwrap()
        .create(params, registry)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string()
            .contains(state_heap::MATERIALIZATION_FRACTION_OPTION),
        "{err}"
    );
}

#[test]
fn a_restored_backend_continues_the_chain() {
    let (mut job, backend, mut model, first) = completed_base("none", 2000);
    drop(backend);

    let mut restored = restore(params(full_range(), "none"), &[job.restorable(1)]).unwrap();
    model.apply(&mut *restored, &Write::MapClear { key: 4 });
    model.apply(&mut *restored, &Write::Put { key: 5, value: 5 });
    let second = job.start(&mut *restored, 2, None).run().unwrap();
    let second = job.register(2, &second, model.clone());
    restored
        .notify_checkpoint_complete(CheckpointId::new(2))
        .unwrap();
    assert_eq!(
        second.shared_state.len(),
        2,
        "the restored backend writes a delta on the base it restored"
    );
    assert!(written_bytes(&second) * 10 < written_bytes(&first));

    // Two incarnations restored from checkpoint 1 write deltas of their own; neither
    // disturbs the other.
    let mut other = restore(params(full_range(), "none"), &[job.restorable(1)]).unwrap();
    let mut other_model = job.retained[&1].1.clone();
    other_model.apply(&mut *other, &Write::Put { key: 5, value: 77 });
    let third = job.start(&mut *other, 3, None).run().unwrap();
    job.register(3, &third, other_model.clone());

    job.release(1);
    let mut again = restore(params(full_range(), "none"), &[job.restorable(2)]).unwrap();
    assert_eq!(Model::read(&mut *again), model);
    let mut again = restore(params(full_range(), "none"), &[job.restorable(3)]).unwrap();
    assert_eq!(Model::read(&mut *again), other_model);
}

#[test]
fn damaged_or_missing_chain_files_are_reported_naming_the_file() {
    let (mut job, mut backend, mut model, _) = completed_base("lz4", 60);
    for key in 0..20 {
        model.apply(&mut *backend, &Write::Put { key, value: 200 });
    }
    let second = job.start(&mut *backend, 2, None).run().unwrap();
    job.register(2, &second, model.clone());
    let handle = job.restorable(2);
    let resolved = handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .unwrap();
    let files: Vec<PathBuf> = resolved
        .shared_state
        .iter()
        .map(file_path)
        .chain(std::iter::once(
            resolved
                .meta_state
                .downcast_ref::<FileStateHandle>()
                .unwrap()
                .path()
                .to_path_buf(),
        ))
        .collect();
    assert_eq!(files.len(), 3, "base, delta and meta data");
    for path in &files {
        let original = fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut flipped = original.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x04;
        for (case, bytes) in [
            ("a flipped byte", Some(flipped)),
            ("cut short", Some(original[..original.len() - 3].to_vec())),
            ("removed", None),
        ] {
            match bytes {
                Some(bytes) => fs::write(path, bytes).unwrap(),
                None => fs::remove_file(path).unwrap(),
            }
            let err = restore(params(full_range(), "none"), std::slice::from_ref(&handle))
                .map(|_| ())
                .expect_err("a damaged chain file is found");
            assert!(
                matches!(
                    err.root(),
                    Error::Corrupted { .. } | Error::Truncated { .. } | Error::NotFound { .. }
                ),
                "{name} {case}: {err}"
            );
            assert!(
                err.to_string().contains(&name),
                "{name} {case}: the error does not name the file: {err}"
            );
            fs::write(path, &original).unwrap();
        }
    }
    let mut restored = restore(params(full_range(), "none"), &[handle]).unwrap();
    assert_eq!(
        Model::read(&mut *restored),
        model,
        "restored after repairing every file"
    );
}

#[test]
fn savepoints_stay_full_and_portable() {
    let job = Job::new();
    let mut backend = create(params(full_range(), "snappy"));
    let mut model = Model::default();
    fill(&mut model, &mut *backend, 40, 0);
    let factory = Arc::new(job.storage.stream_factory(CheckpointId::new(9)).unwrap());
    let savepoint = backend
        .snapshot(
            &SnapshotRequest::savepoint(CheckpointId::new(9), 0),
            factory,
        )
        .unwrap()
        .run()
        .unwrap();
    let handle = savepoint.job_manager_owned().unwrap().clone();
    assert!(
        handle.is::<KeyGroupsStateHandle>(),
        "a savepoint is a full snapshot: {handle:?}"
    );
    let registry = registry();
    let mut rocks_params = KeyedBackendParams::new(MAX_PARALLELISM, full_range());
    let work = tempfile::tempdir().unwrap();
    rocks_params.working_dir = Some(work.path().to_path_buf());
    let mut rocks = registry
        .keyed_backend("rocksdb")
        .unwrap()
        .restore(rocks_params, registry, &[handle])
        .unwrap();
    assert_eq!(
        Model::read(&mut *rocks),
        model,
        "the savepoint restores into RocksDB"
    );
}

#[test]
fn each_backend_refuses_the_other_backends_incremental_checkpoints() {
    let mut job = Job::new();
    let mut backend = create(params(full_range(), "none"));
    let mut model = Model::default();
    fill(&mut model, &mut *backend, 10, 0);
    let result = job.start(&mut *backend, 1, None).run().unwrap();
    job.register(1, &result, model.clone());
    let registry = registry();
    let work = tempfile::tempdir().unwrap();
    let mut rocks_params = KeyedBackendParams::new(MAX_PARALLELISM, full_range());
    rocks_params.working_dir = Some(work.path().to_path_buf());
    rocks_params.strategy = Some("rocksdb-incremental".into());
    let heap_handle = job.restorable(1);
    let err = registry
        .keyed_backend("rocksdb")
        .unwrap()
        .restore(
            rocks_params.clone(),
            registry,
            std::slice::from_ref(&heap_handle),
        )
        .unwrap_err();
    assert!(matches!(err.root(), Error::Unsupported(_)), "{err}");
    assert!(
        err.to_string()
            .contains("written by strategy `heap-incremental`"),
        "the handle names its strategy: {err}"
    );
    // Metadata of earlier releases records no strategy: the meta data tells them apart.
    let err = registry
        .keyed_backend("rocksdb")
        .unwrap()
        .restore(
            rocks_params.clone(),
            registry,
            &[without_strategy(&heap_handle)],
        )
        .unwrap_err();
    assert!(matches!(err.root(), Error::Unsupported(_)), "{err}");

    let mut rocks = registry
        .keyed_backend("rocksdb")
        .unwrap()
        .create(rocks_params, registry)
        .unwrap();
    rocks
        .register_state(&StateMetaInfo::value(VALUES, "bytes", "bytes"))
        .unwrap();
    rocks.set_current_key(b"k").unwrap();
    rocks.put_value(VALUES, b"", b"v").unwrap();
    let rocks_result = job.start(&mut *rocks, 2, None).run().unwrap();
    let handle = rocks_result.job_manager_owned().unwrap().clone();
    let err = restore(params(full_range(), "none"), std::slice::from_ref(&handle))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err.root(), Error::Unsupported(_)), "{err}");
    assert!(
        err.to_string()
            .contains("written by strategy `rocksdb-incremental`"),
        "the handle names its strategy: {err}"
    );
    let err = restore(params(full_range(), "none"), &[without_strategy(&handle)])
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err.root(), Error::Unsupported(_)), "{err}");
}

/// `handle` as metadata of earlier releases stored it: without the strategy that wrote it.
fn without_strategy(handle: &Arc<dyn KeyedStateHandle>) -> Arc<dyn KeyedStateHandle> {
    let mut handle = handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .expect("an incremental handle")
        .clone();
    handle.strategy = None;
    Arc::new(handle)
}

/// One step of a model-based sequence.
#[derive(Debug, Clone)]
enum Step {
    Write(Write),
    /// The synchronous part of the next checkpoint.
    Start,
    /// Runs the asynchronous part of the `n`-th running checkpoint, with failing storage
    /// when `fail`.
    Finish {
        which: usize,
        fail: bool,
    },
    /// The coordinator completes the `n`-th finished checkpoint (registers it, notifies).
    Complete {
        which: usize,
    },
    /// The coordinator aborts the `n`-th finished checkpoint.
    Abort {
        which: usize,
    },
    /// Restores the `n`-th retained checkpoint into `parallelism` instances.
    Restore {
        which: usize,
        parallelism: u32,
    },
    /// The coordinator keeps only the newest retained checkpoint.
    Prune,
}

fn write_strategy() -> impl Strategy<Value = Write> {
    let key = 0..24u16;
    prop_oneof![
        4 => (key.clone(), any::<u8>()).prop_map(|(key, value)| Write::Put { key, value }),
        1 => key.clone().prop_map(|key| Write::Delete { key }),
        2 => (key.clone(), any::<u8>()).prop_map(|(key, element)| Write::Append { key, element }),
        1 => key.clone().prop_map(|key| Write::ClearList { key }),
        3 => (key.clone(), 0..4u8, any::<u8>()).prop_map(|(key, user_key, value)| Write::MapPut { key, user_key, value }),
        1 => (key.clone(), 0..4u8).prop_map(|(key, user_key)| Write::MapRemove { key, user_key }),
        1 => key.prop_map(|key| Write::MapClear { key }),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => write_strategy().prop_map(Step::Write),
        2 => Just(Step::Start),
        2 => (0..3usize, prop::bool::weighted(0.2)).prop_map(|(which, fail)| Step::Finish { which, fail }),
        2 => (0..3usize).prop_map(|which| Step::Complete { which }),
        1 => (0..3usize).prop_map(|which| Step::Abort { which }),
        1 => (0..3usize, 1..=3u32).prop_map(|(which, parallelism)| Step::Restore { which, parallelism }),
        1 => Just(Step::Prune),
    ]
}

fn check_restore(job: &Job, id: u64, parallelism: u32) -> Result<(), TestCaseError> {
    let (_, expected) = &job.retained[&id];
    let handle = job.restorable(id);
    for index in 0..parallelism {
        let range = MAX_PARALLELISM.range_for(index, parallelism).unwrap();
        let mut restored =
            restore(params(range, "none"), std::slice::from_ref(&handle)).map_err(|err| {
                TestCaseError::fail(format!("restoring checkpoint {id} into {range}: {err}"))
            })?;
        prop_assert_eq!(
            Model::read(&mut *restored),
            expected.in_range(range),
            "checkpoint {} in {}",
            id,
            range
        );
    }
    Ok(())
}

fn run_steps(fraction: &str, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut job = Job::new();
    let mut params = params(full_range(), "lz4");
    params.options.insert(
        state_heap::MATERIALIZATION_FRACTION_OPTION.into(),
        fraction.into(),
    );
    let mut backend = create(params);
    let mut model = Model::default();
    let mut next_id = 1u64;
    let mut running: Vec<(u64, AsyncSnapshotTask<KeyedSnapshotResult>, Model)> = Vec::new();
    let mut finished: Vec<(u64, KeyedSnapshotResult, Model)> = Vec::new();
    for step in steps {
        match step {
            Step::Write(write) => model.apply(&mut *backend, write),
            Step::Start => {
                running.push((
                    next_id,
                    job.start(&mut *backend, next_id, None),
                    model.clone(),
                ));
                next_id += 1;
            }
            Step::Finish { which, fail } => {
                if running.is_empty() {
                    continue;
                }
                let (id, task, snapshot) = running.remove(which % running.len());
                if *fail {
                    // The same synchronous part, its files going to failing storage: a
                    // new attempt of the checkpoint replaces the one just started.
                    drop(task);
                    let failed = job
                        .start(&mut *backend, id, Some(Fault::FailOnWrite(1)))
                        .run();
                    prop_assert!(
                        failed.is_err(),
                        "the injected fault fails checkpoint {}",
                        id
                    );
                    continue;
                }
                let result = task
                    .run()
                    .map_err(|e| TestCaseError::fail(format!("checkpoint {id}: {e}")))?;
                finished.push((id, result, snapshot));
            }
            Step::Complete { which } => {
                if finished.is_empty() {
                    continue;
                }
                let (id, result, snapshot) = finished.remove(which % finished.len());
                if let Err(err) = job.try_register(id, &result, snapshot) {
                    // The checkpoint built on one the coordinator released while it ran
                    // (a newer checkpoint completed in between): it is declined, as in
                    // Flink, and its changes go into the next one.
                    prop_assert!(
                        matches!(err, Error::NotFound { .. }),
                        "registering {}: {}",
                        id,
                        err
                    );
                    result.discard().unwrap();
                    backend
                        .notify_checkpoint_aborted(CheckpointId::new(id))
                        .unwrap();
                    continue;
                }
                backend
                    .notify_checkpoint_complete(CheckpointId::new(id))
                    .unwrap();
                // As a coordinator does, checkpoints older than a completed one are aborted.
                for (older, result, _) in finished.extract_if(.., |(older, ..)| *older < id) {
                    backend
                        .notify_checkpoint_aborted(CheckpointId::new(older))
                        .unwrap();
                    result.discard().unwrap();
                }
                for (older, task, _) in running.extract_if(.., |(older, ..)| *older < id) {
                    drop(task);
                    backend
                        .notify_checkpoint_aborted(CheckpointId::new(older))
                        .unwrap();
                }
            }
            Step::Abort { which } => {
                if finished.is_empty() {
                    continue;
                }
                let (id, result, _) = finished.remove(which % finished.len());
                backend
                    .notify_checkpoint_aborted(CheckpointId::new(id))
                    .unwrap();
                result.discard().unwrap();
            }
            Step::Restore { which, parallelism } => {
                let ids: Vec<u64> = job.retained.keys().copied().collect();
                if ids.is_empty() {
                    continue;
                }
                check_restore(&job, ids[which % ids.len()], *parallelism)?;
            }
            Step::Prune => {
                let ids: Vec<u64> = job.retained.keys().copied().collect();
                for &id in ids.iter().rev().skip(1) {
                    job.release(id);
                }
                for &id in &ids[ids.len().saturating_sub(1)..] {
                    check_restore(&job, id, 1)?;
                }
            }
        }
    }
    // Every retained checkpoint still restores: pruning never deleted a file one needs.
    let ids: Vec<u64> = job.retained.keys().copied().collect();
    for id in ids {
        check_restore(&job, id, 2)?;
    }
    // And once nothing is retained or running, nothing is left.
    drop(running);
    for (_, result, _) in finished {
        result.discard().unwrap();
    }
    let ids: Vec<u64> = job.retained.keys().copied().collect();
    for id in ids {
        job.release(id);
    }
    prop_assert_eq!(
        job.files(),
        Vec::<PathBuf>::new(),
        "files left after releasing every checkpoint"
    );
    Ok(())
}

#[test]
fn model_based_sequences_of_writes_checkpoints_aborts_failures_and_restores() {
    // `SNAPSTATE_PROPTEST_CASES` raises the number of sequences for long runs.
    let cases = std::env::var("SNAPSTATE_PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    // Small states make every delta large next to its base: the fraction decides between
    // long chains of deltas (100), a mix (0.5) and a new base every time (0).
    let fractions = prop::sample::select(vec!["100", "0.5", "0"]);
    let cases = (fractions, prop::collection::vec(step_strategy(), 1..120));
    let outcome = runner.run(&cases, |(fraction, steps)| run_steps(fraction, &steps));
    if let Err(err) = outcome {
        panic!("heap-incremental model-based sequences: {err}");
    }
}

//! Conformance of [`KeyedStateBackend`]s, driven by name through the [`Registry`].
//!
//! Every contract is one public function taking the backend's registered name (or
//! `backend/strategy` to take checkpoints with a registered strategy other than the
//! backend's default, e.g. `rocksdb/rocksdb-incremental`), the registry it is linked into
//! and the compression decorator its snapshots use; a backend
//! declares what it can do beyond the basic contract as [`KeyedBackendCapabilities`], and
//! [`run_all`] runs every contract that applies, printing the ones it skips.
//!
//! The kit only uses the byte-level contract of `state-api`: backends are created with
//! `registry.keyed_backend(name)?.create(params, registry)` and restored with
//! `.restore(params, registry, &handles)`, snapshots go to a
//! [`LocalCheckpointStorage`](state_storage_local::LocalCheckpointStorage) in a temporary directory
//! (or the storage [`with_storage`](crate::storage::with_storage) names), and every check
//! compares the backend with a `BTreeMap` model of what was written. A broken rule panics with a message naming the backend, the
//! decorator, the contract and the rule.
//!
//! Backends are created with max parallelism [`MAX_PARALLELISM`], key serializer `bytes`
//! and a fresh working directory each (see [`KeyedBackendParams::working_dir`]).
//!
//! ```no_run
//! use snapstate_tests::keyed::{run_all, KeyedBackendCapabilities};
//! use state_api::Registry;
//!
//! state_heap::link();
//! let capabilities = KeyedBackendCapabilities { rescaling: true, local_recovery: true };
//! run_all("heap", Registry::global(), "none", capabilities);
//! ```

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use state_api::CheckpointId;
use state_api::MaxParallelism;
use state_api::SnapshotRequest;
use state_api::UNCOMPRESSED;
use state_api::{
    AsyncSnapshotTask, CheckpointOptions, CheckpointStreamFactory, Error,
    IncrementalRemoteKeyedStateHandle, KeyGroupRange, KeyedBackendParams, KeyedSnapshotResult,
    KeyedStateBackend, KeyedStateHandle, LocalRecoveryConfig, PluginKind, Registry, Result,
    StateKind, StateMetaInfo, StateObject,
};
use state_coordinator::SharedStateRegistry;
use state_format::KeyGroupsStateHandle;
use state_format::keyed_format::KeyedSnapshotReader;
use state_storage_local::{FileStateHandle, TaskLocalDirectory};
use tempfile::TempDir;

use crate::compression::{random_bytes, text_bytes};
use crate::support::{self, KitStorage};

/// Max parallelism (number of key groups) of every backend the kit creates.
pub const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);

/// What a keyed backend can promise beyond the basic contract.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyedBackendCapabilities {
    /// Restore takes the handles of any number of old instances and keeps exactly the key
    /// groups of the new instance's range.
    pub rescaling: bool,
    /// With [`KeyedBackendParams::local_recovery`] enabled, snapshots also write a
    /// task-local copy that restores on its own.
    pub local_recovery: bool,
}

// The states every contract registers: one of each kind, and a second value state with
// another namespace serializer.
const COUNT: &str = "count";
const WINDOW_SUM: &str = "window-sum";
const EVENTS: &str = "events";
const ATTRIBUTES: &str = "attributes";
/// Namespaces of [`COUNT`]; the empty one included.
const NAMESPACES: [&[u8]; 3] = [b"", b"window-1", b"window-2"];

fn standard_states() -> [StateMetaInfo; 4] {
    [
        StateMetaInfo::value(COUNT, "bytes", "bytes"),
        StateMetaInfo::value(WINDOW_SUM, "window", "u64-be"),
        StateMetaInfo::list(EVENTS, "bytes", "bytes"),
        StateMetaInfo::map(ATTRIBUTES, "bytes", "bytes", "bytes"),
    ]
}

fn full_range() -> KeyGroupRange {
    KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1)
        .expect("invariant: 0..=127 is a valid key-group range")
}

fn key_group(key: &[u8]) -> u32 {
    MAX_PARALLELISM.key_group_of(key)
}

/// Keys, in a fixed order, such that every key group of `range` holds `per_group` of them;
/// the empty key is the first one when its key group is in `range`.
fn keys_covering(range: KeyGroupRange, per_group: usize) -> Vec<Vec<u8>> {
    let mut counts = vec![0usize; MAX_PARALLELISM.get() as usize];
    let mut missing = range.len() as usize * per_group;
    let mut keys = Vec::with_capacity(missing);
    let candidates = std::iter::once(Vec::new())
        .chain((0u32..).map(|i| format!("key-{i}").into_bytes()))
        .take(1_000_000);
    for key in candidates {
        let group = key_group(&key);
        if range.contains(group) && counts[group as usize] < per_group {
            counts[group as usize] += 1;
            keys.push(key);
            missing -= 1;
            if missing == 0 {
                return keys;
            }
        }
    }
    panic!("invariant: a million keys cover every key group of {range} {per_group} times")
}

/// The first key (`<prefix>-<i>`) of key group `group`.
fn key_in_group(prefix: &str, group: u32) -> Vec<u8> {
    (0u32..1_000_000)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .find(|key| key_group(key) == group)
        .expect("invariant: a million keys hit every one of 128 key groups")
}

/// The root of a contract run: names, a temporary directory, and the ways to create,
/// snapshot and restore backends.
struct TestBed<'r> {
    backend: &'r str,
    /// The checkpoint strategy, when the target names one (`backend/strategy`).
    strategy: Option<&'r str>,
    registry: &'r Registry,
    compression: String,
    label: String,
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

impl<'r> TestBed<'r> {
    fn new(backend: &'r str, registry: &'r Registry, compression: &str, contract: &str) -> Self {
        let label =
            format!("keyed backend `{backend}` with compression `{compression}`: {contract}");
        let dir = support::temp_dir("snapstate-keyed-kit-", &label);
        let (backend, strategy) = match backend.split_once('/') {
            Some((backend, strategy)) => (backend, Some(strategy)),
            None => (backend, None),
        };
        TestBed {
            backend,
            strategy,
            registry,
            compression: compression.to_owned(),
            label,
            dir,
            instances: Cell::new(0),
        }
    }

    /// Unwraps `result` or panics naming the contract and `what` was done.
    #[track_caller]
    fn ok<T>(&self, result: Result<T>, what: impl fmt::Display) -> T {
        result.unwrap_or_else(|err| panic!("{}: {what}: {err}", self.label))
    }

    fn model(&self) -> Model {
        Model {
            label: Arc::from(self.label.as_str()),
            ..Model::default()
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Checkpoint storage under `name`; `file_state_threshold` 0 writes every stream to a
    /// file, `None` keeps the default.
    fn storage(&self, name: &str, file_state_threshold: Option<usize>) -> KitStorage {
        support::storage(&self.label, self.path(name), file_state_threshold)
    }

    /// Parameters for `range` with this bed's compression and a fresh working directory.
    fn params(&self, range: KeyGroupRange) -> KeyedBackendParams {
        let instance = self.instances.get();
        self.instances.set(instance + 1);
        let working_dir = self.path(&format!("work-{instance}"));
        if let Err(err) = fs::create_dir_all(&working_dir) {
            panic!("{}: creating {}: {err}", self.label, working_dir.display());
        }
        KeyedBackendParams {
            compression: self.compression.clone(),
            working_dir: Some(working_dir),
            strategy: self.strategy.map(str::to_owned),
            ..KeyedBackendParams::new(MAX_PARALLELISM, range)
        }
    }

    fn try_create(&self, params: KeyedBackendParams) -> Result<Box<dyn KeyedStateBackend>> {
        self.registry
            .keyed_backend(self.backend)?
            .create(params, self.registry)
    }

    fn create(&self, range: KeyGroupRange) -> Box<dyn KeyedStateBackend> {
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
    fn create_with_states(&self, model: &mut Model) -> Box<dyn KeyedStateBackend> {
        let mut backend = self.create(full_range());
        for meta in standard_states() {
            model.register(&mut *backend, &meta);
        }
        backend
    }

    /// Restores with `params`; a panic of the backend is reported as a broken contract
    /// for `case`.
    fn try_restore(
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

    fn restore(
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
    fn snapshot(
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

    fn snapshot_with(
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
    fn checkpoints_of<'s>(
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
    fn handle(&self, result: &KeyedSnapshotResult) -> Arc<dyn KeyedStateHandle> {
        result
            .job_manager_owned()
            .cloned()
            .unwrap_or_else(|| panic!("{}: a snapshot of state returned no handle", self.label))
    }

    /// Files (not directories) anywhere under `dir`, relative to it, sorted.
    fn files_under(&self, dir: &Path) -> Vec<PathBuf> {
        support::files_under(&self.label, dir)
    }

    #[track_caller]
    fn assert_no_files(&self, dir: &Path, case: &str) {
        support::assert_no_files(&self.label, dir, case);
    }
}

/// What the model holds for one (state, namespace, key).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    Value(Vec<u8>),
    List(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

/// (state, namespace, key).
type Slot = (String, Vec<u8>, Vec<u8>);

fn slot(state: &str, namespace: &[u8], key: &[u8]) -> Slot {
    (state.to_owned(), namespace.to_vec(), key.to_vec())
}

/// What a backend should hold: every write goes to the backend and to the model.
#[derive(Debug, Clone, Default)]
struct Model {
    label: Arc<str>,
    states: BTreeMap<String, StateMetaInfo>,
    entries: BTreeMap<Slot, Stored>,
    /// Every slot ever written, removed ones included, so checks read them back too.
    touched: BTreeSet<Slot>,
}

impl Model {
    #[track_caller]
    fn ok<T>(&self, result: Result<T>, what: impl fmt::Display) -> T {
        result.unwrap_or_else(|err| panic!("{}: {what}: {err}", self.label))
    }

    fn register(&mut self, backend: &mut dyn KeyedStateBackend, meta: &StateMetaInfo) {
        self.ok(
            backend.register_state(meta),
            format_args!("registering state `{}`", meta.name),
        );
        self.states.insert(meta.name.clone(), meta.clone());
    }

    fn at(&mut self, backend: &mut dyn KeyedStateBackend, state: &str, ns: &[u8], key: &[u8]) {
        self.ok(
            backend.set_current_key(key),
            format_args!("setting current key {}", show(key)),
        );
        self.touched.insert(slot(state, ns, key));
    }

    fn put_value(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        value: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.put_value(state, ns, value),
            format_args!("put_value on `{state}`"),
        );
        self.entries
            .insert(slot(state, ns, key), Stored::Value(value.to_vec()));
    }

    fn append(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        element: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.append_to_list(state, ns, element),
            format_args!("append_to_list on `{state}`"),
        );
        let entry = self
            .entries
            .entry(slot(state, ns, key))
            .or_insert_with(|| Stored::List(Vec::new()));
        match entry {
            Stored::List(elements) => elements.push(element.to_vec()),
            other => panic!("invariant: the kit appends only to list states, found {other:?}"),
        }
    }

    fn update_list(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        elements: &[Vec<u8>],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.update_list(state, ns, elements),
            format_args!("update_list on `{state}`"),
        );
        let slot = slot(state, ns, key);
        if elements.is_empty() {
            self.entries.remove(&slot);
        } else {
            self.entries.insert(slot, Stored::List(elements.to_vec()));
        }
    }

    fn put_map(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.put_map_value(state, ns, user_key, value),
            format_args!("put_map_value on `{state}`"),
        );
        let entry = self
            .entries
            .entry(slot(state, ns, key))
            .or_insert_with(|| Stored::Map(BTreeMap::new()));
        match entry {
            Stored::Map(map) => {
                map.insert(user_key.to_vec(), value.to_vec());
            }
            other => {
                panic!("invariant: the kit puts map values only into map states, found {other:?}")
            }
        }
    }

    fn remove_map(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        user_key: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.remove_map_value(state, ns, user_key),
            format_args!("remove_map_value on `{state}`"),
        );
        let slot = slot(state, ns, key);
        if let Some(Stored::Map(map)) = self.entries.get_mut(&slot) {
            map.remove(user_key);
            if map.is_empty() {
                self.entries.remove(&slot);
            }
        }
    }

    fn clear(&mut self, backend: &mut dyn KeyedStateBackend, state: &str, ns: &[u8], key: &[u8]) {
        self.at(backend, state, ns, key);
        self.ok(backend.clear(state, ns), format_args!("clear on `{state}`"));
        self.entries.remove(&slot(state, ns, key));
    }

    /// Checks that `backend` holds exactly the model's state and entries of the key groups
    /// of its range: registered states, `keys` of every state and namespace written, and
    /// every slot ever written read back (removed ones as absent).
    fn check(&self, backend: &mut dyn KeyedStateBackend, what: &str) {
        let label = &self.label;
        let range = backend.key_group_range();
        let held: BTreeMap<String, StateMetaInfo> = backend
            .states()
            .into_iter()
            .map(|meta| (meta.name.clone(), meta))
            .collect();
        assert!(
            held == self.states,
            "{label}: {what}: the backend has states {:?}, expected {:?}",
            held.values().collect::<Vec<_>>(),
            self.states.values().collect::<Vec<_>>()
        );

        let namespaces: BTreeSet<(&str, &[u8])> = self
            .touched
            .iter()
            .map(|(state, ns, _)| (state.as_str(), ns.as_slice()))
            .collect();
        for (state, ns) in namespaces {
            let mut expected: Vec<&[u8]> = self
                .entries
                .keys()
                .filter(|(s, n, key)| s == state && n == ns && range.contains(key_group(key)))
                .map(|(_, _, key)| key.as_slice())
                .collect();
            expected.sort();
            let mut found = self.ok(
                backend.keys(state, ns),
                format_args!("{what}: keys of `{state}` in namespace {}", show(ns)),
            );
            found.sort();
            if found != expected {
                let found: BTreeSet<&[u8]> = found.iter().map(Vec::as_slice).collect();
                let expected: BTreeSet<&[u8]> = expected.into_iter().collect();
                let extra: Vec<String> = found.difference(&expected).map(|k| show(k)).collect();
                let missing: Vec<String> = expected.difference(&found).map(|k| show(k)).collect();
                panic!(
                    "{label}: {what}: keys of `{state}` in namespace {} in {range}: \
                     unexpected {extra:?}, missing {missing:?} (or listed twice)",
                    show(ns)
                );
            }
        }

        for slot @ (state, ns, key) in &self.touched {
            if !range.contains(key_group(key)) {
                continue;
            }
            let kind = self
                .states
                .get(state)
                .map(|meta| meta.kind)
                .unwrap_or_else(|| panic!("invariant: the kit writes registered states only"));
            self.ok(
                backend.set_current_key(key),
                format_args!("{what}: setting current key {}", show(key)),
            );
            let stored = self.entries.get(slot);
            let place = || {
                format!(
                    "{label}: {what}: `{state}`, namespace {}, key {} (key group {})",
                    show(ns),
                    show(key),
                    key_group(key)
                )
            };
            match kind {
                StateKind::Value => {
                    let found = self.ok(backend.value(state, ns), place());
                    let expected = match stored {
                        Some(Stored::Value(value)) => Some(value),
                        _ => None,
                    };
                    assert!(
                        found.as_ref() == expected,
                        "{}: value is {}, expected {}",
                        place(),
                        show_option(found.as_deref()),
                        show_option(expected.map(Vec::as_slice))
                    );
                }
                StateKind::List => {
                    let found = self.ok(backend.list(state, ns), place());
                    let expected: &[Vec<u8>] = match stored {
                        Some(Stored::List(elements)) => elements,
                        _ => &[],
                    };
                    assert!(
                        found == expected,
                        "{}: list of {} elements differs from the expected {} elements",
                        place(),
                        found.len(),
                        expected.len()
                    );
                }
                StateKind::Map => {
                    let found = self.ok(backend.map_entries(state, ns), place());
                    let empty = BTreeMap::new();
                    let expected = match stored {
                        Some(Stored::Map(map)) => map,
                        _ => &empty,
                    };
                    let found_map: BTreeMap<Vec<u8>, Vec<u8>> = found.iter().cloned().collect();
                    assert!(
                        found_map == *expected && found.len() == expected.len(),
                        "{}: map of {} entries differs from the expected {} entries",
                        place(),
                        found.len(),
                        expected.len()
                    );
                    for (user_key, value) in expected {
                        let found = self.ok(backend.map_value(state, ns, user_key), place());
                        assert!(
                            found.as_ref() == Some(value),
                            "{}: map_value of user key {} is {}",
                            place(),
                            show(user_key),
                            show_option(found.as_deref())
                        );
                    }
                }
            }
        }
    }
}

/// Bytes for messages: text when printable and short, else a length and a hex prefix.
fn show(bytes: &[u8]) -> String {
    let printable = bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    if printable && bytes.len() <= 64 {
        return format!("{:?}", String::from_utf8_lossy(bytes));
    }
    let prefix: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes 0x{prefix}..", bytes.len())
}

fn show_option(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "absent".to_owned(), show)
}

/// Writes every kind of change to `keys`: values in several namespaces (the empty value
/// included), appended and replaced lists (an emptied one, an empty element), map puts and
/// removes (maps emptied by them), and clears. `round` shifts which keys get what, so a
/// second round changes most entries.
fn write_workload(
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

/// Value, list and map state of several namespaces and states, with keys in every key
/// group, removed entries and emptied lists and maps, come back from a checkpoint exactly;
/// the restored backend takes more writes and a savepoint of it restores exactly too.
pub fn round_trip(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "round trip");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    let keys = keys_covering(full_range(), 3);
    write_workload(&mut model, &mut *live, &keys, 0);
    model.check(&mut *live, "the live backend");

    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let handle = bed.handle(&result);
    let mut restored = bed.restore(full_range(), &[handle]);
    model.check(&mut *restored, "restored from checkpoint 1");
    // Registering a restored state again is a no-op.
    for meta in standard_states() {
        bed.ok(
            restored.register_state(&meta),
            format_args!("registering restored state `{}` again", meta.name),
        );
    }

    write_workload(&mut model, &mut *restored, &keys, 1);
    let result = bed.snapshot_with(
        &mut *restored,
        &storage,
        CheckpointId::new(2),
        &CheckpointOptions::savepoint(),
    );
    let mut again = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(
        &mut *again,
        "restored from savepoint 2 of the restored backend",
    );
    for mut backend in [live, restored, again] {
        bed.ok(backend.close(), "closing a backend");
    }
}

/// [`KeyedStateBackend::map_entries`] lists a map's entries ordered by user key bytes, in
/// the live backend and after a restore.
pub fn map_entries_are_ordered(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "map entry order");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    // Inserted out of order; user keys of several lengths, the empty one included.
    let mut user_keys: Vec<Vec<u8>> = (0..300u32)
        .map(|i| random_bytes((i % 7) as usize, u64::from(i) + 1000))
        .collect();
    user_keys.push(Vec::new());
    user_keys.push(vec![0xFF; 3]);
    for user_key in &user_keys {
        model.put_map(&mut *live, ATTRIBUTES, b"", b"ordered", user_key, user_key);
    }
    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let restored = bed.restore(full_range(), &[bed.handle(&result)]);
    for (what, mut backend) in [("the live backend", live), ("restored", restored)] {
        bed.ok(
            backend.set_current_key(b"ordered"),
            "setting the current key",
        );
        let entries = bed.ok(backend.map_entries(ATTRIBUTES, b""), "map_entries");
        let out_of_order = entries.windows(2).position(|pair| pair[0].0 >= pair[1].0);
        if let Some(index) = out_of_order {
            panic!(
                "{}: {what}: map_entries of {} entries is not ordered by user key: entry {index} is {}, entry {} is {}",
                bed.label,
                entries.len(),
                show(&entries[index].0),
                index + 1,
                show(&entries[index + 1].0)
            );
        }
        model.check(&mut *backend, what);
    }
}

/// A backend without states and one whose states hold no entries snapshot and restore: a
/// snapshot that returns no handle writes no file, and restoring from no handles gives an
/// empty backend.
pub fn empty_state(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "empty state");
    let storage = bed.storage("checkpoints", Some(0));

    // No registered states.
    let mut none = bed.create(full_range());
    let result = bed.snapshot(&mut *none, &storage, CheckpointId::new(1));
    let mut restored = match result.job_manager_owned() {
        None => {
            storage.assert_empty(
                Some(1),
                "a snapshot without handle of a backend without states",
            );
            bed.restore(full_range(), &[])
        }
        Some(handle) => bed.restore(full_range(), std::slice::from_ref(handle)),
    };
    bed.model()
        .check(&mut *restored, "restored from a snapshot of no states");

    // States registered, entries written and all removed again.
    let mut model = bed.model();
    let mut backend = bed.create_with_states(&mut model);
    for key in keys_covering(full_range(), 1).iter().step_by(9) {
        model.put_value(&mut *backend, COUNT, b"", key, b"1");
        model.clear(&mut *backend, COUNT, b"", key);
        model.append(&mut *backend, EVENTS, b"", key, b"x");
        model.update_list(&mut *backend, EVENTS, b"", key, &[]);
        model.put_map(&mut *backend, ATTRIBUTES, b"", key, b"k", b"v");
        model.remove_map(&mut *backend, ATTRIBUTES, b"", key, b"k");
    }
    assert!(
        model.entries.is_empty(),
        "invariant: the workload removes what it writes"
    );
    model.check(&mut *backend, "the live backend after removing everything");
    let result = bed.snapshot(&mut *backend, &storage, CheckpointId::new(2));
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(&mut *restored, "restored from a snapshot of empty states");

    // Restoring from no handles at all.
    let mut fresh = bed.restore(full_range(), &[]);
    bed.model()
        .check(&mut *fresh, "restored from an empty list of handles");
}

/// A 5 MiB value, a 64 KiB key and namespace, a list of 10,000 elements and a map of
/// 10,000 user keys round trip.
pub fn huge_values(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "huge values");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    model.put_value(&mut *live, COUNT, b"", b"random", &random_bytes(5 << 20, 5));
    model.put_value(&mut *live, COUNT, b"", b"text", &text_bytes(5 << 20));
    let long_key = text_bytes(64 << 10);
    let long_ns = random_bytes(64 << 10, 6);
    model.put_value(
        &mut *live,
        COUNT,
        &long_ns,
        &long_key,
        b"long key and namespace",
    );
    let elements: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| format!("element {i}").into_bytes())
        .collect();
    model.update_list(&mut *live, EVENTS, b"", b"list", &elements);
    for element in elements.iter().take(100) {
        model.append(&mut *live, EVENTS, b"", b"list", element);
    }
    for i in 0..10_000u32 {
        model.put_map(
            &mut *live,
            ATTRIBUTES,
            b"",
            b"map",
            &i.to_be_bytes(),
            &random_bytes(16, u64::from(i)),
        );
    }
    model.check(&mut *live, "the live backend");
    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(&mut *restored, "restored");
}

/// A snapshot written with `compression` restores into a backend configured with another
/// decorator: the snapshot names its decorator (in a key-groups handle, in the header). A
/// decorator name that is not linked is reported as [`Error::UnknownPlugin`], never used.
pub fn compression_is_read_from_the_snapshot(
    backend: &str,
    registry: &Registry,
    compression: &str,
) {
    let bed = TestBed::new(
        backend,
        registry,
        compression,
        "decorator named by the snapshot",
    );
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 1), 0);
    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let handle = bed.handle(&result);

    match handle.downcast_ref::<KeyGroupsStateHandle>() {
        Some(key_groups) => {
            let reader = bed.ok(
                KeyedSnapshotReader::open(key_groups, registry, MAX_PARALLELISM),
                "reading the snapshot header",
            );
            assert_eq!(
                reader.header().compression(),
                compression,
                "{}: the snapshot header names another decorator",
                bed.label
            );
        }
        None => println!(
            "{}: the handle is not a key-groups handle ({handle:?}): not reading its header",
            bed.label
        ),
    }

    let other = registry
        .names(PluginKind::Compression)
        .into_iter()
        .find(|name| name != compression)
        .unwrap_or_else(|| compression.to_owned());
    let params = KeyedBackendParams {
        compression: other.clone(),
        ..bed.params(full_range())
    };
    let mut restored = bed.ok(
        bed.try_restore(params, &[handle], "a valid snapshot"),
        format_args!("restoring with compression `{other}` configured"),
    );
    model.check(
        &mut *restored,
        &format!("restored with compression `{other}` configured"),
    );

    // An unknown decorator fails when the backend is created or when it snapshots.
    let params = KeyedBackendParams {
        compression: "no-such-codec".into(),
        ..bed.params(full_range())
    };
    let failure = match bed.try_create(params) {
        Err(err) => err,
        Ok(mut backend) => {
            let mut model = bed.model();
            model.register(
                &mut *backend,
                &StateMetaInfo::value(COUNT, "bytes", "bytes"),
            );
            model.put_value(&mut *backend, COUNT, b"", b"k", b"v");
            let factory = bed.ok(
                storage.stream_factory(CheckpointId::new(2)),
                "opening a stream factory",
            );
            match backend.snapshot(
                &SnapshotRequest::checkpoint(CheckpointId::new(2), 0),
                Arc::new(factory),
            ) {
                Err(err) => err,
                Ok(task) => match task.run() {
                    Err(err) => err,
                    Ok(_) => panic!(
                        "{}: a snapshot with unknown compression `no-such-codec` succeeded",
                        bed.label
                    ),
                },
            }
        }
    };
    assert!(
        matches!(failure.root(), Error::UnknownPlugin { .. }),
        "{}: unknown compression: {failure}",
        bed.label
    );
}

/// What a snapshot holds is the state when [`KeyedStateBackend::snapshot`] returned: writes,
/// updates, deletes, new keys and a new state after it, and writes while the asynchronous
/// part runs on another thread, are not in it.
pub fn snapshot_is_consistent(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "snapshot consistency");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    let keys = keys_covering(full_range(), 2);
    write_workload(&mut model, &mut *live, &keys, 0);
    let storage = bed.storage("checkpoints", None);
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
    let at_snapshot = model.clone();

    // After the synchronous part, before the asynchronous part starts.
    write_workload(&mut model, &mut *live, &keys, 1);
    for (i, key) in keys.iter().enumerate().step_by(2) {
        for ns in NAMESPACES {
            model.clear(&mut *live, COUNT, ns, key);
        }
        model.update_list(&mut *live, EVENTS, b"", key, &[]);
        model.put_map(
            &mut *live,
            ATTRIBUTES,
            b"",
            key,
            b"after",
            format!("{i}").as_bytes(),
        );
    }
    let late = StateMetaInfo::value("late", "bytes", "bytes");
    model.register(&mut *live, &late);
    for i in 0..200u32 {
        let key = format!("late-key-{i}").into_bytes();
        model.put_value(&mut *live, "late", b"", &key, b"late");
        model.put_value(&mut *live, COUNT, b"", &key, b"late");
    }

    // While the asynchronous part runs.
    let running = bed.ok(task.spawn(), "starting the asynchronous part");
    write_workload(&mut model, &mut *live, &keys, 2);
    let result = running
        .join()
        .unwrap_or_else(|_| panic!("{}: the asynchronous part panicked", bed.label));
    let result = bed.ok(result, "asynchronous part");

    model.check(&mut *live, "the live backend after the snapshot");
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    at_snapshot.check(
        &mut *restored,
        "restored: the state at the synchronous part",
    );
}

/// Snapshots of `old_parallelism` instances, each owning its share of the key groups,
/// restore into `new_parallelism` instances, each given every old handle: each key is in
/// exactly the instance whose range holds its key group, with its state, and nowhere else.
/// Setting a key of another instance's range fails with [`Error::KeyGroupOutOfRange`].
pub fn rescale(
    backend: &str,
    registry: &Registry,
    compression: &str,
    capabilities: KeyedBackendCapabilities,
    old_parallelism: u32,
    new_parallelism: u32,
) {
    let contract = format!("rescale {old_parallelism} -> {new_parallelism}");
    let bed = TestBed::new(backend, registry, compression, &contract);
    if !capabilities.rescaling {
        println!(
            "{}: skipped: the backend does not declare rescaling",
            bed.label
        );
        return;
    }
    move_state(
        &bed,
        &bed,
        old_parallelism,
        new_parallelism,
        &CheckpointOptions::checkpoint(),
    );
}

fn range_of(bed: &TestBed<'_>, parallelism: u32, index: u32) -> KeyGroupRange {
    bed.ok(
        MAX_PARALLELISM.range_for(index, parallelism),
        format_args!("range of instance {index} of {parallelism}"),
    )
}

/// A job rescaled twice keeps its state: one instance's checkpoint restores into three,
/// each of the three takes writes and checkpoints (continuing from a rescaled restore),
/// those three checkpoints restore into two, and the two checkpoint again and restore into
/// one. Every instance holds exactly the model's state of its range at every step.
pub fn rescale_chain(
    backend: &str,
    registry: &Registry,
    compression: &str,
    capabilities: KeyedBackendCapabilities,
) {
    let bed = TestBed::new(backend, registry, compression, "rescale 1 -> 3 -> 2 -> 1");
    if !capabilities.rescaling {
        println!(
            "{}: skipped: the backend does not declare rescaling",
            bed.label
        );
        return;
    }
    let keys = keys_covering(full_range(), 2);
    let storage = bed.storage("checkpoints", None);
    let mut model = bed.model();
    let mut one = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *one, &keys, 0);
    let mut handles = vec![bed.handle(&bed.snapshot(&mut *one, &storage, CheckpointId::new(1)))];
    bed.ok(
        one.notify_checkpoint_complete(CheckpointId::new(1)),
        "notifying checkpoint 1",
    );
    let mut checkpoint_id = 1;
    for (round, parallelism) in [(1, 3u32), (2, 2), (3, 1)] {
        let mut next = Vec::new();
        checkpoint_id += 1;
        for index in 0..parallelism {
            let range = range_of(&bed, parallelism, index);
            let mut instance = bed.restore(range, &handles);
            let step = format!("instance {index} of {parallelism} ({range})");
            model.check(&mut *instance, &format!("{step}, restored"));
            let owned: Vec<Vec<u8>> = keys
                .iter()
                .filter(|key| range.contains(key_group(key)))
                .cloned()
                .collect();
            write_workload(&mut model, &mut *instance, &owned, round);
            let result = bed.snapshot(&mut *instance, &storage, CheckpointId::new(checkpoint_id));
            bed.ok(
                instance.notify_checkpoint_complete(CheckpointId::new(checkpoint_id)),
                format_args!("{step}: notifying checkpoint {checkpoint_id}"),
            );
            next.push(bed.handle(&result));
        }
        handles = next;
    }
    let mut last = bed.restore(full_range(), &handles);
    model.check(
        &mut *last,
        "one instance restored after rescaling 1 -> 3 -> 2 -> 1",
    );
}

/// Max parallelism above 128 puts two-byte key-group prefixes in front of keys: a
/// backend with 1024 key groups round trips every key and splits into two instances, each
/// holding exactly the keys of its key groups.
pub fn large_max_parallelism(backend: &str, registry: &Registry, compression: &str) {
    const LARGE: MaxParallelism = MaxParallelism::of(1024);
    let bed = TestBed::new(backend, registry, compression, "max parallelism 1024");
    let params = |range: KeyGroupRange| KeyedBackendParams {
        max_parallelism: LARGE,
        ..bed.params(range)
    };
    let range = |start: u32, end: u32| bed.ok(KeyGroupRange::new(start, end), "a key-group range");
    let all = range(0, LARGE.get() - 1);
    let mut live = bed.ok(bed.try_create(params(all)), "creating a backend");
    let meta = StateMetaInfo::value(COUNT, "bytes", "bytes");
    bed.ok(live.register_state(&meta), "registering a state");
    let keys: Vec<Vec<u8>> = (0..3000).map(|i| format!("key-{i}").into_bytes()).collect();
    for key in &keys {
        bed.ok(live.set_current_key(key), "setting a key");
        bed.ok(
            live.put_value(COUNT, b"", &[key.as_slice(), b"!"].concat()),
            "writing",
        );
    }
    let storage = bed.storage("checkpoints", None);
    let handles = [bed.handle(&bed.snapshot(&mut *live, &storage, CheckpointId::new(1)))];
    let halves = [
        range(0, LARGE.get() / 2 - 1),
        range(LARGE.get() / 2, LARGE.get() - 1),
    ];
    let mut restored_keys = 0;
    for part in std::iter::once(all).chain(halves) {
        let mut restored = bed.ok(
            bed.try_restore(params(part), &handles, "a valid snapshot"),
            format_args!("restoring {part}"),
        );
        let owned: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|key| part.contains(LARGE.key_group_of(key)))
            .collect();
        let mut listed = bed.ok(restored.keys(COUNT, b""), "listing keys");
        listed.sort();
        let mut expected: Vec<Vec<u8>> = owned.iter().map(|key| key.to_vec()).collect();
        expected.sort();
        assert!(
            listed == expected,
            "{}: {part} holds {} keys, expected the {} of its key groups",
            bed.label,
            listed.len(),
            expected.len()
        );
        for key in owned {
            bed.ok(restored.set_current_key(key), "setting a key");
            let value = bed.ok(restored.value(COUNT, b""), "reading");
            assert!(
                value.as_deref() == Some([key.as_slice(), b"!"].concat().as_slice()),
                "{}: {part}: key {} restored as {}",
                bed.label,
                show(key),
                show_option(value.as_deref())
            );
        }
        if part != all {
            restored_keys += listed.len();
        }
    }
    assert_eq!(
        restored_keys,
        keys.len(),
        "{}: the halves lost or doubled keys",
        bed.label
    );
}

/// Files up to this size are cut at every byte by [`truncated_snapshot_is_detected`];
/// larger ones (RocksDB's `OPTIONS` and sst files) at [`SPREAD_CUTS`] positions spread over
/// them plus each of their last 32 bytes.
pub const EVERY_BYTE_UP_TO: usize = 2048;

/// Cut positions of a file larger than [`EVERY_BYTE_UP_TO`].
pub const SPREAD_CUTS: usize = 256;

/// A small snapshot (two key groups, a few keys of every state kind) cut at every byte
/// boundary of each of its files never restores wrong state: every cut restore fails with
/// [`Error::Truncated`], [`Error::Corrupted`] or [`Error::NotFound`] (never a panic), or,
/// should it succeed, holds exactly the snapshot's state.
pub fn truncated_snapshot_is_detected(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "truncated at every byte");
    let range = bed.ok(KeyGroupRange::new(0, 1), "a key-group range");
    let mut model = bed.model();
    let mut live = bed.create(range);
    for meta in standard_states() {
        model.register(&mut *live, &meta);
    }
    write_workload(&mut model, &mut *live, &keys_covering(range, 2), 0);
    let storage = bed.storage("checkpoints", Some(0));
    if storage.local_root().is_none() {
        println!(
            "{}: skipped: files are cut on local storage only",
            bed.label
        );
        return;
    }
    let handle = bed.handle(&bed.snapshot(&mut *live, &storage, CheckpointId::new(1)));
    let files = match snapshot_file(&handle) {
        Ok((_, path)) => vec![path],
        Err(_) => incremental_files(&handle),
    };
    assert!(
        !files.is_empty(),
        "{}: the snapshot wrote no file to cut: {handle:?}",
        bed.label
    );
    let handles = [handle];
    let mut cuts_tried = 0;
    for path in &files {
        let original = bed.ok(fs::read(path).map_err(|e| Error::io(path, e)), "reading");
        let len = original.len();
        let cuts: BTreeSet<usize> = match len <= EVERY_BYTE_UP_TO {
            true => (0..len).collect(),
            false => (0..SPREAD_CUTS)
                .map(|i| i * len / SPREAD_CUTS)
                .chain(len.saturating_sub(32)..len)
                .collect(),
        };
        for cut in cuts {
            let case = format!("{} cut at byte {cut} of {len}", path.display());
            bed.ok(
                fs::write(path, &original[..cut]).map_err(|e| Error::io(path, e)),
                "cutting a file",
            );
            match bed.try_restore(bed.params(range), &handles, &case) {
                Ok(mut restored) => {
                    model.check(&mut *restored, &format!("restore that succeeded on {case}"))
                }
                Err(err) => assert!(
                    matches!(
                        err.root(),
                        Error::Truncated { .. } | Error::Corrupted { .. } | Error::NotFound { .. }
                    ),
                    "{}: {case}: not a typed truncation: {err}",
                    bed.label
                ),
            }
            cuts_tried += 1;
        }
        bed.ok(
            fs::write(path, &original).map_err(|e| Error::io(path, e)),
            "repairing",
        );
    }
    println!(
        "{}: {cuts_tried} cut restores over {} files",
        bed.label,
        files.len()
    );
    let mut restored = bed.restore(range, &handles);
    model.check(&mut *restored, "restored after repairing every file");
}

/// A savepoint is a full snapshot in the canonical format, whatever strategy the backend
/// takes checkpoints with: a key-groups handle whose header names the decorator, restoring
/// exactly; checkpoints taken around it restore too; and it is self-contained: it restores
/// after its backend closed and the checkpoint before it was discarded.
pub fn savepoints_are_canonical(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "checkpoint vs savepoint");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 1), 0);
    let storage = bed.storage("checkpoints", None);
    let checkpoint = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    bed.ok(
        live.notify_checkpoint_complete(CheckpointId::new(1)),
        "notifying",
    );
    let savepoint = bed.snapshot_with(
        &mut *live,
        &storage,
        CheckpointId::new(2),
        &CheckpointOptions::savepoint(),
    );
    let handle = bed.handle(&savepoint);
    let key_groups = handle
        .downcast_ref::<KeyGroupsStateHandle>()
        .unwrap_or_else(|| {
            panic!(
                "{}: a savepoint is not a key-groups handle: {handle:?}",
                bed.label
            )
        });
    let reader = bed.ok(
        KeyedSnapshotReader::open(key_groups, registry, MAX_PARALLELISM),
        "reading the savepoint header",
    );
    assert_eq!(
        reader.header().compression(),
        compression,
        "{}: the savepoint header names another decorator",
        bed.label
    );
    for (result, what) in [(&checkpoint, "checkpoint"), (&savepoint, "savepoint")] {
        let mut restored = bed.restore(full_range(), &[bed.handle(result)]);
        model.check(&mut *restored, &format!("restored from the {what}"));
    }
    // Self-contained: with the backend closed and the checkpoint (and every file it
    // uploaded) discarded, the savepoint alone still restores.
    bed.ok(live.close(), "closing the backend");
    bed.ok(checkpoint.discard(), "discarding the checkpoint");
    let mut restored = bed.restore(full_range(), &[bed.handle(&savepoint)]);
    model.check(
        &mut *restored,
        "restored from the savepoint after its checkpoint was discarded",
    );
}

/// A savepoint of keyed backend `from` (taken by `old_parallelism` instances) restores into
/// keyed backend `to` at `new_parallelism` instances, every key in exactly its new
/// instance: the canonical format makes savepoints portable between backends.
pub fn savepoint_portability(
    from: &str,
    to: &str,
    registry: &Registry,
    compression: &str,
    old_parallelism: u32,
    new_parallelism: u32,
) {
    let contract =
        format!("savepoint into `{to}`, {old_parallelism} -> {new_parallelism} instances");
    let source = TestBed::new(from, registry, compression, &contract);
    let target = TestBed::new(to, registry, compression, &contract);
    move_state(
        &source,
        &target,
        old_parallelism,
        new_parallelism,
        &CheckpointOptions::savepoint(),
    );
}

/// Fills `old_parallelism` instances of `source`'s backend, snapshots them with `options`
/// and restores `new_parallelism` instances of `target`'s backend from all the handles.
fn move_state(
    source: &TestBed<'_>,
    target: &TestBed<'_>,
    old_parallelism: u32,
    new_parallelism: u32,
    options: &CheckpointOptions,
) {
    let bed = source;
    let keys = keys_covering(full_range(), 2);
    let storage = bed.storage("checkpoints", None);
    // One model for the whole job: each instance checks the part in its range.
    let mut model = bed.model();
    let mut handles = Vec::new();
    for index in 0..old_parallelism {
        let range = range_of(bed, old_parallelism, index);
        let mut instance = bed.create(range);
        for meta in standard_states() {
            model.register(&mut *instance, &meta);
        }
        let owned: Vec<Vec<u8>> = keys
            .iter()
            .filter(|key| range.contains(key_group(key)))
            .cloned()
            .collect();
        write_workload(&mut model, &mut *instance, &owned, index as usize);
        if let Some(foreign) = keys.iter().find(|key| !range.contains(key_group(key))) {
            let err = instance.set_current_key(foreign).err().unwrap_or_else(|| {
                panic!(
                    "{}: instance {index} of {range} accepted key {} of key group {}",
                    bed.label,
                    show(foreign),
                    key_group(foreign)
                )
            });
            assert!(
                matches!(err, Error::KeyGroupOutOfRange { .. }),
                "{}: setting a key of another instance: {err}",
                bed.label
            );
        }
        model.check(&mut *instance, &format!("old instance {index} of {range}"));
        let result = bed.snapshot_with(&mut *instance, &storage, CheckpointId::new(1), options);
        handles.push(bed.handle(&result));
    }
    for index in 0..new_parallelism {
        let range = range_of(bed, new_parallelism, index);
        let mut instance = target.restore(range, &handles);
        model.check(
            &mut *instance,
            &format!("new instance {index} of {range} of `{}`", target.backend),
        );
    }
}

/// The snapshot file of a key-groups handle, or why there is none.
/// The files of an incremental handle (shared, private, meta data) stored as files.
fn incremental_files(handle: &Arc<dyn KeyedStateHandle>) -> Vec<PathBuf> {
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

/// Flips a byte of, halves, empties and removes each file of a multi-file snapshot in
/// turn: every restore must fail with a typed error that names the file.
fn corrupt_every_file(
    bed: &TestBed<'_>,
    model: &Model,
    handle: &Arc<dyn KeyedStateHandle>,
    files: &[PathBuf],
) {
    let handles = [handle.clone()];
    for path in files {
        let original = bed.ok(fs::read(path).map_err(|e| Error::io(path, e)), "reading");
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut flipped = original.clone();
        if let Some(byte) = flipped.get_mut(original.len() / 2) {
            *byte ^= 0x20;
        }
        let cases: [(&str, Option<&[u8]>); 4] = [
            ("a flipped byte", Some(&flipped)),
            ("cut in half", Some(&original[..original.len() / 2])),
            ("emptied", Some(&[])),
            ("removed", None),
        ];
        for (case, bytes) in cases {
            if bytes == Some(original.as_slice()) {
                continue;
            }
            let written = match bytes {
                Some(bytes) => fs::write(path, bytes),
                None => fs::remove_file(path),
            };
            bed.ok(written.map_err(|e| Error::io(path, e)), "damaging a file");
            let case = format!("{name} {case}");
            match bed.try_restore(bed.params(full_range()), &handles, &case) {
                Ok(_) => panic!("{}: {case}: restore succeeded", bed.label),
                Err(err) => {
                    assert!(
                        matches!(
                            err.root(),
                            Error::Corrupted { .. }
                                | Error::Truncated { .. }
                                | Error::NotFound { .. }
                        ),
                        "{}: {case}: not a typed corruption: {err}",
                        bed.label
                    );
                    assert!(
                        err.to_string().contains(&name),
                        "{}: {case}: the error does not name the file: {err}",
                        bed.label
                    );
                }
            }
            bed.ok(
                fs::write(path, &original).map_err(|e| Error::io(path, e)),
                "repairing",
            );
        }
    }
    let mut restored = bed.restore(full_range(), &handles);
    model.check(&mut *restored, "restored after repairing every file");
}

fn snapshot_file(
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

/// Where each key group's section starts and ends in a key-groups file of `len` bytes.
fn sections(handle: &KeyGroupsStateHandle, len: u64) -> Vec<(u32, u64, u64)> {
    let offsets: Vec<(u32, u64)> = handle.offsets().iter().collect();
    offsets
        .iter()
        .enumerate()
        .map(|(i, &(group, start))| {
            let end = offsets.get(i + 1).map_or(len, |&(_, next)| next);
            (group, start, end)
        })
        .collect()
}

/// Changed, cut, foreign and missing snapshot bytes give typed errors, never a panic and
/// never wrong state: a changed byte of a key group's data is [`Error::KeyGroup`] naming
/// that key group around [`Error::Corrupted`]; a file cut inside a key group is
/// [`Error::KeyGroup`] around [`Error::Truncated`] or [`Error::Corrupted`]; bytes that are
/// not a snapshot are [`Error::Snapshot`] around [`Error::Corrupted`]; a missing file is
/// [`Error::NotFound`]. A restore that succeeds anyway must hold exactly the snapshot's
/// state.
pub fn corrupt_snapshot_is_reported(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "corrupt snapshot");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    for key in keys_covering(full_range(), 1) {
        model.put_value(&mut *live, COUNT, b"", &key, b"small");
    }
    // Incompressible, so its bytes appear as they are in the file whatever the decorator.
    let marker = random_bytes(4096, 77);
    let target_group = 77;
    let marker_key = key_in_group("marker", target_group);
    model.put_value(&mut *live, COUNT, b"", &marker_key, &marker);
    let storage = bed.storage("checkpoints", Some(0));
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let handle = bed.handle(&result);
    let (key_groups, path) = match snapshot_file(&handle) {
        Ok(found) => found,
        Err(reason) => {
            let files = incremental_files(&handle);
            if files.is_empty() {
                println!("{}: skipped: {reason}", bed.label);
            } else {
                corrupt_every_file(&bed, &model, &handle, &files);
            }
            return;
        }
    };
    let original = bed.ok(
        fs::read(&path).map_err(|err| Error::io(&path, err)),
        "reading the snapshot file",
    );
    let len = original.len() as u64;
    let sections = sections(&key_groups, len);
    let header_end = sections.first().map_or(len, |&(_, start, _)| start);
    let section_of = |pos: u64| {
        sections
            .iter()
            .find(|&&(_, start, end)| start <= pos && pos < end)
            .map(|&(group, _, _)| group)
    };
    let handles = [handle.clone()];

    // Restores `bytes` in place of the file; `Ok` must hold the snapshot's state exactly.
    let restore_bytes = |bytes: &[u8], case: &str| -> Option<Error> {
        if let Err(err) = fs::write(&path, bytes) {
            panic!("{}: writing {}: {err}", bed.label, path.display());
        }
        match bed.try_restore(bed.params(full_range()), &handles, case) {
            Err(err) => Some(err),
            Ok(mut restored) => {
                model.check(&mut *restored, &format!("restore that succeeded on {case}"));
                None
            }
        }
    };
    let must_fail = |bytes: &[u8], case: &str| -> Error {
        restore_bytes(bytes, case)
            .unwrap_or_else(|| panic!("{}: restore succeeded on {case}", bed.label))
    };

    // A changed byte of the marker value, inside key group `target_group`.
    let window = &marker[1000..1032];
    let found = original
        .windows(window.len())
        .position(|w| w == window)
        .map(|pos| pos as u64 + 16);
    let flip_at = match found {
        Some(pos) => {
            assert_eq!(
                section_of(pos),
                Some(target_group),
                "{}: the value of a key of key group {target_group} was written into the section of another key group",
                bed.label
            );
            pos
        }
        None => {
            let &(_, start, end) = sections
                .iter()
                .find(|(group, _, _)| *group == target_group)
                .unwrap_or_else(|| {
                    panic!("{}: the handle has no key group {target_group}", bed.label)
                });
            (start + end) / 2
        }
    };
    let mut flipped = original.clone();
    flipped[flip_at as usize] ^= 0x20;
    let case = format!("byte {flip_at} of key group {target_group} changed");
    let err = must_fail(&flipped, &case);
    assert!(
        matches!(err, Error::KeyGroup { key_group, .. } if key_group == target_group),
        "{}: {case}: {err}",
        bed.label
    );
    match (found, err.root()) {
        (Some(_), Error::Corrupted { .. }) => {}
        (None, Error::Corrupted { .. } | Error::Truncated { .. }) => {}
        _ => panic!("{}: {case}: untyped error {err}", bed.label),
    }

    // Changed bytes all over the file: typed errors naming the right place, or the exact
    // state.
    let step = (original.len() / 150).max(1);
    for pos in (0..original.len()).step_by(step) {
        let mut changed = original.clone();
        changed[pos] ^= 0xA5;
        let case = format!("byte {pos} of {len} changed");
        let Some(err) = restore_bytes(&changed, &case) else {
            continue;
        };
        let typed = matches!(
            err.root(),
            Error::Corrupted { .. } | Error::Truncated { .. } | Error::UnsupportedVersion { .. }
        );
        let placed = match section_of(pos as u64) {
            Some(group) => matches!(err, Error::KeyGroup { key_group, .. } if key_group == group),
            None => matches!(err, Error::Snapshot { .. }),
        };
        assert!(
            typed && placed,
            "{}: {case} (header ends at {header_end}): {err}",
            bed.label
        );
    }

    // Cut inside the marker value, and at other places.
    let case = format!("file cut at byte {flip_at} of {len}");
    let err = must_fail(&original[..flip_at as usize], &case);
    let last_group = key_groups.key_group_range().end();
    assert!(
        matches!(err, Error::KeyGroup { key_group, .. } if (target_group..=last_group).contains(&key_group))
            && matches!(
                err.root(),
                Error::Truncated { .. } | Error::Corrupted { .. }
            ),
        "{}: {case}: {err}",
        bed.label
    );
    for cut in [0, 3, header_end / 2, header_end, header_end + 2, len - 1] {
        let case = format!("file cut at byte {cut} of {len}");
        let Some(err) = restore_bytes(&original[..cut as usize], &case) else {
            continue;
        };
        let placed = match section_of(cut) {
            Some(_) => matches!(err, Error::KeyGroup { .. }),
            None => matches!(err, Error::Snapshot { .. }),
        };
        assert!(
            placed
                && matches!(
                    err.root(),
                    Error::Truncated { .. } | Error::Corrupted { .. }
                ),
            "{}: {case} (header ends at {header_end}): {err}",
            bed.label
        );
    }

    // Foreign bytes.
    let foreign: [(&str, Vec<u8>); 2] = [
        ("random bytes", random_bytes(original.len(), 3)),
        (
            "text",
            b"this is not a keyed snapshot, just some text\n".repeat(50),
        ),
    ];
    for (what, bytes) in foreign {
        let case = format!("a file of {what}");
        let err = must_fail(&bytes, &case);
        assert!(
            matches!(err, Error::Snapshot { .. }) && matches!(err.root(), Error::Corrupted { .. }),
            "{}: {case}: {err}",
            bed.label
        );
    }

    // Another snapshot's file in place of this one's.
    write_workload(
        &mut bed.model(),
        &mut *live,
        &keys_covering(full_range(), 1),
        3,
    );
    let other = bed.snapshot(&mut *live, &storage, CheckpointId::new(2));
    match snapshot_file(&bed.handle(&other)) {
        Ok((_, other_path)) => {
            let bytes = bed.ok(
                fs::read(&other_path).map_err(|err| Error::io(&other_path, err)),
                "reading the other snapshot",
            );
            let case = "the file of another snapshot";
            if let Some(err) = restore_bytes(&bytes, case) {
                assert!(
                    matches!(err, Error::KeyGroup { .. } | Error::Snapshot { .. })
                        && matches!(
                            err.root(),
                            Error::Corrupted { .. } | Error::Truncated { .. }
                        ),
                    "{}: {case}: {err}",
                    bed.label
                );
            }
        }
        Err(reason) => println!("{}: not swapping snapshot files: {reason}", bed.label),
    }

    // A missing file.
    if let Err(err) = fs::remove_file(&path) {
        panic!("{}: removing {}: {err}", bed.label, path.display());
    }
    let err = bed
        .try_restore(bed.params(full_range()), &handles, "a missing file")
        .err()
        .unwrap_or_else(|| panic!("{}: restore succeeded without its file", bed.label));
    assert!(
        matches!(err.root(), Error::NotFound { .. }),
        "{}: a missing file: {err}",
        bed.label
    );
}

/// Storage that fails after some bytes or on close makes the snapshot fail with a typed
/// error and leave no file; storage that writes short still yields a correct snapshot;
/// storage that loses the tail of its streams yields a snapshot whose restore fails with a
/// corruption or truncation instead of wrong data. After every fault the backend goes on
/// and its next checkpoint restores.
pub fn storage_faults_are_contained(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "storage faults");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 2), 0);
    let storage = bed.storage("checkpoints", Some(0));
    let shared = std::cell::RefCell::new(live);
    support::check_storage_faults(
        &bed.label,
        &storage,
        bed.checkpoints_of(&shared),
        || shared.borrow().pending_snapshots(),
        |case, result, intact| {
            let handles = [bed.handle(result)];
            match intact {
                true => {
                    let mut restored = bed.restore(full_range(), &handles);
                    model.check(&mut *restored, &format!("restored from {case}"));
                }
                false => support::expect_damage_detected(
                    &bed.label,
                    case,
                    bed.try_restore(bed.params(full_range()), &handles, case),
                ),
            }
        },
    );
    let mut live = shared.into_inner();
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(100));
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(&mut *restored, "restored after the faults");
}

/// A snapshot cancelled before it runs, cancelled while it writes, dropped without running,
/// or pending when its backend closes, fails with [`Error::Cancelled`] (where it runs) and
/// leaves no file; a completed snapshot's files go when its result is discarded.
pub fn cancelled_snapshot_leaves_nothing(backend: &str, registry: &Registry, compression: &str) {
    let bed = TestBed::new(backend, registry, compression, "cancellation");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 2), 0);
    let storage = bed.storage("checkpoints", Some(0));
    let shared = std::cell::RefCell::new(live);
    support::check_cancellations(&bed.label, &storage, bed.checkpoints_of(&shared), || {
        shared.borrow().pending_snapshots()
    });
    let mut live = shared.into_inner();

    // Completed, then discarded.
    let completed = support::CANCELLATION_CHECKPOINTS + 1;
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(completed));
    assert!(
        !storage.stored(Some(completed)).is_empty(),
        "{}: a snapshot with a file threshold of 0 wrote no file",
        bed.label
    );
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(&mut *restored, "restored after cancelled snapshots");
    bed.ok(result.discard(), "discarding a completed snapshot");
    storage.assert_empty(None, "discarded after completing");

    // Pending when the backend closes.
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
    let err = live
        .set_current_key(b"after close")
        .err()
        .unwrap_or_else(|| panic!("{}: a closed backend took a call", bed.label));
    assert!(
        matches!(err, Error::Closed { .. }),
        "{}: calling a closed backend: {err}",
        bed.label
    );

    // Running, blocked in a write, when its backend closes.
    let mut other = bed.create_with_states(&mut bed.model());
    write_workload(
        &mut bed.model(),
        &mut *other,
        &keys_covering(full_range(), 2),
        0,
    );
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

#[track_caller]
fn assert_incompatible(bed: &TestBed<'_>, outcome: Result<()>, case: &str) {
    match outcome {
        Ok(()) => panic!("{}: {case} was accepted", bed.label),
        Err(err) => assert!(
            matches!(err.root(), Error::Incompatible { .. }),
            "{}: {case}: {err}",
            bed.label
        ),
    }
}

/// Registering a state again with another kind or serializer, and restoring with another
/// key serializer than the snapshot's, fail with [`Error::Incompatible`] and change
/// nothing; registering the same meta info again is a no-op.
pub fn incompatible_serializers_are_rejected(
    backend: &str,
    registry: &Registry,
    compression: &str,
) {
    let bed = TestBed::new(backend, registry, compression, "incompatible serializers");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 1), 0);

    let changed = [
        (
            "a value state with another value serializer",
            StateMetaInfo::value(COUNT, "bytes", "u64-be"),
        ),
        (
            "a value state with another namespace serializer",
            StateMetaInfo::value(COUNT, "window", "bytes"),
        ),
        (
            "a value state as a list state",
            StateMetaInfo::list(COUNT, "bytes", "bytes"),
        ),
        (
            "a list state with another element serializer",
            StateMetaInfo::list(EVENTS, "bytes", "string"),
        ),
        (
            "a map state with another user-key serializer",
            StateMetaInfo::map(ATTRIBUTES, "bytes", "string", "bytes"),
        ),
        (
            "a map state with another value serializer",
            StateMetaInfo::map(ATTRIBUTES, "bytes", "bytes", "u64-be"),
        ),
    ];
    for (case, meta) in &changed {
        assert_incompatible(
            &bed,
            live.register_state(meta),
            &format!("registering {case}"),
        );
    }
    for meta in standard_states() {
        bed.ok(
            live.register_state(&meta),
            format_args!("registering state `{}` again unchanged", meta.name),
        );
    }
    model.check(&mut *live, "after rejected registrations");

    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let handle = bed.handle(&result);
    let params = KeyedBackendParams {
        key_serializer: "u64-be".into(),
        ..bed.params(full_range())
    };
    let outcome = bed
        .try_restore(
            params,
            std::slice::from_ref(&handle),
            "another key serializer",
        )
        .map(drop);
    assert_incompatible(&bed, outcome, "restoring with another key serializer");

    let mut restored = bed.restore(full_range(), &[handle]);
    for (case, meta) in &changed {
        assert_incompatible(
            &bed,
            restored.register_state(meta),
            &format!("registering {case} on a restored backend"),
        );
    }
    model.check(&mut *restored, "restored, after rejected registrations");
}

/// With local recovery enabled, a snapshot also returns a task-local copy under the local
/// root that restores the same state on its own (with the job-manager-owned copy gone);
/// discarding the result removes both.
pub fn local_recovery(
    backend: &str,
    registry: &Registry,
    compression: &str,
    capabilities: KeyedBackendCapabilities,
) {
    let bed = TestBed::new(backend, registry, compression, "local recovery");
    if !capabilities.local_recovery {
        println!(
            "{}: skipped: the backend does not declare local recovery",
            bed.label
        );
        return;
    }
    let local_root = bed.path("local");
    let params = KeyedBackendParams {
        local_recovery: LocalRecoveryConfig::enabled(Arc::new(TaskLocalDirectory::new(
            &local_root,
        ))),
        ..bed.params(full_range())
    };
    let mut live = bed.ok(
        bed.try_create(params.clone()),
        "creating a backend with local recovery",
    );
    let mut model = bed.model();
    for meta in standard_states() {
        model.register(&mut *live, &meta);
    }
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 2), 0);
    let storage = bed.storage("checkpoints", Some(0));
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(7));
    let remote = bed.handle(&result);
    let local = result
        .task_local()
        .cloned()
        .unwrap_or_else(|| panic!("{}: the result has no task-local copy", bed.label));
    assert!(
        !bed.files_under(&local_root).is_empty(),
        "{}: no task-local file under {}",
        bed.label,
        local_root.display()
    );

    bed.ok(remote.discard(), "discarding the job-manager-owned copy");
    // A task-local copy is restored by a job that runs with local recovery on.
    let mut restored = bed.ok(
        bed.try_restore(params, &[local], "a task-local copy"),
        "restoring from the task-local copy",
    );
    model.check(&mut *restored, "restored from the task-local copy alone");

    bed.ok(result.discard(), "discarding the snapshot");
    bed.assert_no_files(&local_root, "task-local copy discarded");
    storage.assert_empty(None, "snapshot discarded");
}

/// The rescalings [`run_all`] checks: (old parallelism, new parallelism).
pub const RESCALINGS: [(u32, u32); 4] = [(1, 3), (3, 2), (4, 1), (2, 5)];

/// One write of a [`model_based`] sequence; small numbers pick keys, namespaces and bytes
/// so that sequences collide on the same slots.
#[derive(Debug, Clone)]
pub enum ModelWrite {
    /// `put_value` of `count` for key `k<key>` in namespace `namespace % 3`.
    Put {
        /// Key number.
        key: u8,
        /// Namespace number.
        namespace: u8,
        /// Value byte.
        value: u8,
    },
    /// `append_to_list` of `events`.
    Append {
        /// Key number.
        key: u8,
        /// Element byte.
        element: u8,
    },
    /// `update_list` of `events` with no elements.
    ClearList {
        /// Key number.
        key: u8,
    },
    /// `put_map_value` of `attributes`.
    MapPut {
        /// Key number.
        key: u8,
        /// User key byte.
        user_key: u8,
        /// Value byte.
        value: u8,
    },
    /// `remove_map_value` of `attributes`.
    MapRemove {
        /// Key number.
        key: u8,
        /// User key byte.
        user_key: u8,
    },
    /// `clear` of the value state in namespace `namespace % 3`.
    Clear {
        /// Key number.
        key: u8,
        /// Namespace number.
        namespace: u8,
    },
}

/// One step of a [`model_based`] sequence.
#[derive(Debug, Clone)]
pub enum ModelStep {
    /// A write.
    Write(ModelWrite),
    /// A checkpoint: the synchronous part, then `during` (not in the snapshot), then the
    /// asynchronous part; the checkpoint then completes.
    Checkpoint {
        /// Writes between the two parts.
        during: Vec<ModelWrite>,
    },
    /// Restore the last checkpoint into `parallelism` instances and check each, then go on
    /// with one instance of the whole range restored from it.
    Restore {
        /// Instances to restore into.
        parallelism: u32,
    },
}

fn model_write() -> impl Strategy<Value = ModelWrite> {
    let key = 0u8..12;
    prop_oneof![
        (key.clone(), 0u8..3, any::<u8>()).prop_map(|(key, namespace, value)| ModelWrite::Put {
            key,
            namespace,
            value
        }),
        (key.clone(), any::<u8>()).prop_map(|(key, element)| ModelWrite::Append { key, element }),
        key.clone().prop_map(|key| ModelWrite::ClearList { key }),
        (key.clone(), 0u8..4, any::<u8>()).prop_map(|(key, user_key, value)| ModelWrite::MapPut {
            key,
            user_key,
            value
        }),
        (key.clone(), 0u8..4).prop_map(|(key, user_key)| ModelWrite::MapRemove { key, user_key }),
        (key, 0u8..3).prop_map(|(key, namespace)| ModelWrite::Clear { key, namespace }),
    ]
}

/// Sequences of up to 40 steps, writes most often.
pub fn model_steps() -> impl Strategy<Value = Vec<ModelStep>> {
    let step = prop_oneof![
        6 => model_write().prop_map(ModelStep::Write),
        2 => proptest::collection::vec(model_write(), 0..4)
            .prop_map(|during| ModelStep::Checkpoint { during }),
        1 => (1u32..=3).prop_map(|parallelism| ModelStep::Restore { parallelism }),
    ];
    proptest::collection::vec(step, 1..40)
}

fn apply(model: &mut Model, backend: &mut dyn KeyedStateBackend, write: &ModelWrite) {
    let key = |k: u8| format!("k{k}").into_bytes();
    match *write {
        ModelWrite::Put {
            key: k,
            namespace,
            value,
        } => {
            let ns = NAMESPACES[usize::from(namespace % 3)];
            model.put_value(backend, COUNT, ns, &key(k), &[value]);
        }
        ModelWrite::Append { key: k, element } => {
            model.append(backend, EVENTS, b"", &key(k), &[element]);
        }
        ModelWrite::ClearList { key: k } => model.update_list(backend, EVENTS, b"", &key(k), &[]),
        ModelWrite::MapPut {
            key: k,
            user_key,
            value,
        } => {
            model.put_map(backend, ATTRIBUTES, b"", &key(k), &[user_key], &[value]);
        }
        ModelWrite::MapRemove { key: k, user_key } => {
            model.remove_map(backend, ATTRIBUTES, b"", &key(k), &[user_key]);
        }
        ModelWrite::Clear { key: k, namespace } => {
            let ns = NAMESPACES[usize::from(namespace % 3)];
            model.clear(backend, COUNT, ns, &key(k));
        }
    }
}

/// Runs `steps` on a fresh backend and a model side by side; panics at the first
/// difference. Incremental handles are registered with a [`SharedStateRegistry`] as a
/// coordinator would, and resolved for restore.
pub fn run_model_steps(backend: &str, registry: &Registry, compression: &str, steps: &[ModelStep]) {
    let bed = TestBed::new(backend, registry, compression, "model-based sequence");
    let storage = bed.storage("checkpoints", None);
    let shared = SharedStateRegistry::default();
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    let mut last: Option<(Model, Arc<dyn KeyedStateHandle>)> = None;
    for (checkpoint_id, step) in (1u64..).zip(steps) {
        match step {
            ModelStep::Write(write) => apply(&mut model, &mut *live, write),
            ModelStep::Checkpoint { during } => {
                let factory = bed.ok(
                    storage.stream_factory(CheckpointId::new(checkpoint_id)),
                    "opening a factory",
                );
                let task = bed.ok(
                    live.snapshot(
                        &SnapshotRequest::checkpoint(CheckpointId::new(checkpoint_id), 0),
                        Arc::new(factory),
                    ),
                    "synchronous part",
                );
                let at_sync = model.clone();
                for write in during {
                    apply(&mut model, &mut *live, write);
                }
                let result = bed.ok(task.run(), "asynchronous part");
                let handle = bed.handle(&result);
                let handle = match handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
                    Some(incremental) => {
                        Arc::new(bed.ok(shared.register(incremental), "registering the checkpoint"))
                            as Arc<dyn KeyedStateHandle>
                    }
                    None => handle,
                };
                bed.ok(
                    live.notify_checkpoint_complete(CheckpointId::new(checkpoint_id)),
                    "notifying",
                );
                last = Some((at_sync, handle));
            }
            ModelStep::Restore { parallelism } => {
                let Some((at_sync, handle)) = &last else {
                    continue;
                };
                let handle = match handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
                    Some(incremental) => Arc::new(bed.ok(shared.resolve(incremental), "resolving"))
                        as Arc<dyn KeyedStateHandle>,
                    None => handle.clone(),
                };
                for index in 0..*parallelism {
                    let range = bed.ok(
                        MAX_PARALLELISM.range_for(index, *parallelism),
                        "computing a range",
                    );
                    let mut instance = bed.restore(range, std::slice::from_ref(&handle));
                    at_sync.check(
                        &mut *instance,
                        &format!("step {checkpoint_id}: instance {index} of {parallelism}"),
                    );
                }
                bed.ok(live.close(), "closing the replaced backend");
                live = bed.restore(full_range(), std::slice::from_ref(&handle));
                model = at_sync.clone();
            }
        }
    }
    model.check(&mut *live, "after the last step");
}

/// Random sequences of writes, checkpoints (with writes between their two parts) and
/// restores at parallelism 1 to 3, checked against the model; `cases` sequences. A failure
/// shrinks to a short sequence printed with the panic.
pub fn model_based(backend: &str, registry: &Registry, compression: &str, cases: u32) {
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&model_steps(), |steps| {
        run_model_steps(backend, registry, compression, &steps);
        Ok(())
    });
    if let Err(err) = outcome {
        panic!(
            "keyed backend `{backend}` with compression `{compression}`: model-based sequences: {err}"
        );
    }
}

/// A keyed backend under test: the backend and checkpoint strategy by registered name, the
/// decorator its key-group sections are written with, what it promises beyond the basic
/// contract, and the registry that links it.
#[derive(Debug, Clone)]
pub struct KeyedTarget<'r> {
    /// The registry the backend is linked into.
    pub registry: &'r Registry,
    /// The keyed backend's registered name (`heap`, `rocksdb`, a third-party one).
    pub backend: String,
    /// The checkpoint strategy's registered name; `None` picks the backend's default.
    pub strategy: Option<String>,
    /// The compression decorator's registered name.
    pub compression: String,
    /// What the backend promises beyond the basic contract.
    pub capabilities: KeyedBackendCapabilities,
}

impl<'r> KeyedTarget<'r> {
    /// `backend` with its default strategy, no compression and no capabilities.
    pub fn new(registry: &'r Registry, backend: impl Into<String>) -> Self {
        KeyedTarget {
            registry,
            backend: backend.into(),
            strategy: None,
            compression: UNCOMPRESSED.to_owned(),
            capabilities: KeyedBackendCapabilities::default(),
        }
    }

    /// Checkpoints with strategy `strategy`.
    pub fn strategy(mut self, strategy: impl Into<String>) -> Self {
        self.strategy = Some(strategy.into());
        self
    }

    /// Key-group sections written with decorator `compression`.
    pub fn compression(mut self, compression: impl Into<String>) -> Self {
        self.compression = compression.into();
        self
    }

    /// The backend promises `capabilities`.
    pub fn capabilities(mut self, capabilities: KeyedBackendCapabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The `backend` or `backend/strategy` the contract functions take.
    fn spec(&self) -> String {
        match &self.strategy {
            Some(strategy) => format!("{}/{strategy}", self.backend),
            None => self.backend.clone(),
        }
    }
}

/// One contract of the keyed-backend kit, as [`keyed_contracts!`](crate::keyed_contracts)
/// turns each into a test of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedContract {
    /// [`round_trip`].
    RoundTrip,
    /// [`map_entries_are_ordered`].
    MapEntriesAreOrdered,
    /// [`empty_state`].
    EmptyState,
    /// [`huge_values`].
    HugeValues,
    /// [`compression_is_read_from_the_snapshot`].
    CompressionIsReadFromTheSnapshot,
    /// [`savepoints_are_canonical`].
    SavepointsAreCanonical,
    /// [`snapshot_is_consistent`].
    SnapshotIsConsistent,
    /// [`rescale`] for every pair of [`RESCALINGS`]; needs `rescaling`.
    Rescale,
    /// [`rescale_chain`]; needs `rescaling`.
    RescaleChain,
    /// [`large_max_parallelism`].
    LargeMaxParallelism,
    /// [`corrupt_snapshot_is_reported`].
    CorruptSnapshotIsReported,
    /// [`truncated_snapshot_is_detected`].
    TruncatedSnapshotIsDetected,
    /// [`cancelled_snapshot_leaves_nothing`].
    CancelledSnapshotLeavesNothing,
    /// [`storage_faults_are_contained`].
    StorageFaultsAreContained,
    /// [`incompatible_serializers_are_rejected`].
    IncompatibleSerializersAreRejected,
    /// [`local_recovery`]; needs `local_recovery`.
    LocalRecovery,
}

impl KeyedContract {
    /// Every contract, in the order [`run_all`] runs them.
    pub const ALL: [KeyedContract; 16] = [
        KeyedContract::RoundTrip,
        KeyedContract::MapEntriesAreOrdered,
        KeyedContract::EmptyState,
        KeyedContract::HugeValues,
        KeyedContract::CompressionIsReadFromTheSnapshot,
        KeyedContract::SavepointsAreCanonical,
        KeyedContract::SnapshotIsConsistent,
        KeyedContract::Rescale,
        KeyedContract::RescaleChain,
        KeyedContract::LargeMaxParallelism,
        KeyedContract::CorruptSnapshotIsReported,
        KeyedContract::TruncatedSnapshotIsDetected,
        KeyedContract::CancelledSnapshotLeavesNothing,
        KeyedContract::StorageFaultsAreContained,
        KeyedContract::IncompatibleSerializersAreRejected,
        KeyedContract::LocalRecovery,
    ];

    /// Whether a backend with `capabilities` is held to this contract.
    pub fn applies_to(self, capabilities: KeyedBackendCapabilities) -> bool {
        match self {
            KeyedContract::Rescale | KeyedContract::RescaleChain => capabilities.rescaling,
            KeyedContract::LocalRecovery => capabilities.local_recovery,
            _ => true,
        }
    }

    /// Runs the contract on `target`, or prints why it does not apply. A broken rule panics
    /// naming the backend, the contract and the rule.
    pub fn run(self, target: &KeyedTarget<'_>) {
        let (spec, registry, compression) = (target.spec(), target.registry, &target.compression);
        let capabilities = target.capabilities;
        if !self.applies_to(capabilities) {
            println!("keyed backend `{spec}`: {self:?} skipped: the backend does not declare it");
            return;
        }
        match self {
            KeyedContract::RoundTrip => round_trip(&spec, registry, compression),
            KeyedContract::MapEntriesAreOrdered => {
                map_entries_are_ordered(&spec, registry, compression)
            }
            KeyedContract::EmptyState => empty_state(&spec, registry, compression),
            KeyedContract::HugeValues => huge_values(&spec, registry, compression),
            KeyedContract::CompressionIsReadFromTheSnapshot => {
                compression_is_read_from_the_snapshot(&spec, registry, compression)
            }
            KeyedContract::SavepointsAreCanonical => {
                savepoints_are_canonical(&spec, registry, compression)
            }
            KeyedContract::SnapshotIsConsistent => {
                snapshot_is_consistent(&spec, registry, compression)
            }
            KeyedContract::Rescale => {
                for (old, new) in RESCALINGS {
                    rescale(&spec, registry, compression, capabilities, old, new);
                }
            }
            KeyedContract::RescaleChain => {
                rescale_chain(&spec, registry, compression, capabilities)
            }
            KeyedContract::LargeMaxParallelism => {
                large_max_parallelism(&spec, registry, compression)
            }
            KeyedContract::CorruptSnapshotIsReported => {
                corrupt_snapshot_is_reported(&spec, registry, compression)
            }
            KeyedContract::TruncatedSnapshotIsDetected => {
                truncated_snapshot_is_detected(&spec, registry, compression)
            }
            KeyedContract::CancelledSnapshotLeavesNothing => {
                cancelled_snapshot_leaves_nothing(&spec, registry, compression)
            }
            KeyedContract::StorageFaultsAreContained => {
                storage_faults_are_contained(&spec, registry, compression)
            }
            KeyedContract::IncompatibleSerializersAreRejected => {
                incompatible_serializers_are_rejected(&spec, registry, compression)
            }
            KeyedContract::LocalRecovery => {
                local_recovery(&spec, registry, compression, capabilities)
            }
        }
    }
}

/// One `#[test]` per keyed contract on a [`KeyedTarget`], in a module of the given name, so
/// a broken contract fails its own test and hides none of the others:
///
/// ```ignore
/// snapstate_tests::keyed_contracts!(heap_lz4, KeyedTarget::new(registry(), "heap").compression("lz4"));
/// ```
///
/// Contracts the target's capabilities do not include pass after printing why.
#[macro_export]
macro_rules! keyed_contracts {
    ($module:ident, $target:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            fn target() -> $crate::keyed::KeyedTarget<'static> {
                $target
            }

            $crate::keyed_contracts!(@tests
                round_trip RoundTrip,
                map_entries_are_ordered MapEntriesAreOrdered,
                empty_state EmptyState,
                huge_values HugeValues,
                compression_is_read_from_the_snapshot CompressionIsReadFromTheSnapshot,
                savepoints_are_canonical SavepointsAreCanonical,
                snapshot_is_consistent SnapshotIsConsistent,
                rescale Rescale,
                rescale_chain RescaleChain,
                large_max_parallelism LargeMaxParallelism,
                corrupt_snapshot_is_reported CorruptSnapshotIsReported,
                truncated_snapshot_is_detected TruncatedSnapshotIsDetected,
                cancelled_snapshot_leaves_nothing CancelledSnapshotLeavesNothing,
                storage_faults_are_contained StorageFaultsAreContained,
                incompatible_serializers_are_rejected IncompatibleSerializersAreRejected,
                local_recovery LocalRecovery,
            );
        }
    };
    (@tests $($name:ident $contract:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::keyed::KeyedContract::$contract.run(&target());
            }
        )*
    };
}

/// Runs every keyed contract that `capabilities` include on `backend` (a registered name,
/// or `backend/strategy`) with `compression`, in one test: [`keyed_contracts!`] gives each
/// contract a test of its own instead.
pub fn run_all(
    backend: &str,
    registry: &Registry,
    compression: &str,
    capabilities: KeyedBackendCapabilities,
) {
    let (backend, strategy) = match backend.split_once('/') {
        Some((backend, strategy)) => (backend, Some(strategy.to_owned())),
        None => (backend, None),
    };
    let mut target = KeyedTarget::new(registry, backend)
        .compression(compression)
        .capabilities(capabilities);
    target.strategy = strategy;
    for contract in KeyedContract::ALL {
        contract.run(&target);
    }
}

//! Format stability: keyed, heap-incremental and operator snapshots written by earlier
//! releases, checked in under `tests/fixtures/keyed-v<N>/`,
//! `tests/fixtures/heap-incremental-v<N>/` and `tests/fixtures/operator-v<N>/`, still
//! restore with the same contents. A format change adds a new fixture folder and never
//! edits an old one.
//!
//! Each fixture is the checkpoint metadata of one snapshot (`handle.json`, the handle as a
//! coordinator stores it, the stream inline) written from the state [`expected`] describes,
//! once per decorator. Set `SNAPSTATE_WRITE_FIXTURES=1` to write the fixtures of the current
//! format version into a folder that does not exist yet.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    IncrementalRemoteKeyedStateHandle, KeyGroupRange, KeyedBackendParams, KeyedStateBackend,
    KeyedStateHandle, OperatorBackendParams, OperatorStateMetaInfo, OperatorStreamStateHandle,
    Registry, StateMetaInfo, StateTtlConfig, Timer,
};
use state_api::{KeyGroup, MaxParallelism};
use state_coordinator::SharedStateRegistry;
use state_format::keyed_format::KeyedSnapshotReader;
use state_format::proxy::CURRENT_VERSION;
use state_format::ttl::ManualClock;
use state_format::{KeyGroupsStateHandle, KeyedBackendSerializationProxy};
use state_storage_local::MemoryCheckpointStreamFactory;

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);
const DECORATORS: [&str; 3] = ["none", "snappy", "lz4"];

fn fixtures(format: &str, version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("{format}-v{version}"))
}

fn registry() -> &'static Registry {
    state_compress::link();
    state_heap::link();
    state_operator::link();
    Registry::global()
}

fn params(compression: &str) -> KeyedBackendParams {
    let mut params = KeyedBackendParams::new(
        MAX_PARALLELISM,
        KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1).unwrap(),
    );
    params.compression = compression.to_owned();
    params.key_serializer = "u64-be".to_owned();
    params
}

/// What every fixture holds, per key: a value, a list and a map, in two namespaces.
struct Expected {
    key: u64,
    namespace: &'static [u8],
    value: Vec<u8>,
    list: Vec<Vec<u8>>,
    map: Vec<(Vec<u8>, Vec<u8>)>,
}

fn expected() -> Vec<Expected> {
    let mut all = Vec::new();
    for key in 0..100u64 {
        for namespace in [&b""[..], b"window-7"] {
            let tag = format!("{key}/{}", String::from_utf8_lossy(namespace));
            all.push(Expected {
                key,
                namespace,
                value: format!("value {tag}").into_bytes(),
                list: (0..key % 4)
                    .map(|i| format!("element {i} of {tag}").into_bytes())
                    .collect(),
                map: (0..key % 3)
                    .map(|i| {
                        (
                            format!("user {i}").into_bytes(),
                            format!("{tag}:{i}").into_bytes(),
                        )
                    })
                    .collect(),
            });
        }
    }
    all
}

/// The first keyed format version with timers; its fixtures hold [`expected_timers`] too.
const TIMERS_FROM: u32 = 4;

/// The first keyed format version with time to live; its fixtures hold [`TTL_STATES`] too.
const TTL_FROM: u32 = 5;

/// A value and a list state with a time to live of [`TTL`] ms, holding the value and the
/// list of [`expected`] written at [`WRITTEN_AT`].
const TTL_STATES: [&str; 2] = ["ttl-value", "ttl-list"];
const TTL: u64 = 60_000;
const WRITTEN_AT: i64 = 1_700_000_000_000;

/// What a fixture holds beyond values, lists and maps.
#[derive(Debug, Clone, Copy)]
struct Holds {
    timers: bool,
    ttl: bool,
}

impl Holds {
    /// What the keyed fixtures of `version` hold.
    fn keyed(version: u32) -> Self {
        Holds {
            timers: version >= TIMERS_FROM,
            ttl: version >= TTL_FROM,
        }
    }

    /// Values, lists and maps only (the heap-incremental fixtures).
    const PLAIN: Holds = Holds {
        timers: false,
        ttl: false,
    };
}

/// The fixture's states: a value, a list, a map and what `holds` adds.
fn states(holds: Holds) -> Vec<StateMetaInfo> {
    let mut states = vec![
        StateMetaInfo::value("value", "bytes", "bytes"),
        StateMetaInfo::list("list", "bytes", "bytes"),
        StateMetaInfo::map("map", "bytes", "bytes", "bytes"),
    ];
    if holds.timers {
        states.push(StateMetaInfo::priority_queue("timers", "bytes"));
    }
    if holds.ttl {
        let ttl = StateTtlConfig::new(TTL).unwrap();
        states.push(StateMetaInfo::value(TTL_STATES[0], "bytes", "bytes").with_ttl(ttl));
        states.push(StateMetaInfo::list(TTL_STATES[1], "bytes", "bytes").with_ttl(ttl));
    }
    states
}

/// The timers of the fixtures from [`TIMERS_FROM`] on: for every other key one in a
/// window, for every fifth one near the end of time, and one at its start.
fn expected_timers() -> Vec<Timer> {
    let timer = |timestamp: i64, key: u64, namespace: &[u8]| Timer {
        timestamp,
        key: key.to_be_bytes().to_vec(),
        namespace: namespace.to_vec(),
    };
    let mut timers = Vec::new();
    for key in 0..100u64 {
        if key % 2 == 0 {
            timers.push(timer(key as i64 * 1000 - 50_000, key, b"window-7"));
        }
        if key % 5 == 0 {
            timers.push(timer(i64::MAX - key as i64, key, b""));
        }
    }
    timers.push(timer(i64::MIN, 7, b"window-7"));
    timers.sort();
    timers
}

/// Writes what [`expected`] describes into `backend`, and with `timers` the
/// [`expected_timers`].
fn write_expected(backend: &mut dyn KeyedStateBackend, holds: Holds) {
    for timer in expected_timers().iter().filter(|_| holds.timers) {
        assert!(backend.add_timer("timers", timer).unwrap());
    }
    for entry in expected() {
        backend.set_current_key(&entry.key.to_be_bytes()).unwrap();
        backend
            .put_value("value", entry.namespace, &entry.value)
            .unwrap();
        backend
            .update_list("list", entry.namespace, &entry.list)
            .unwrap();
        for (user_key, value) in &entry.map {
            backend
                .put_map_value("map", entry.namespace, user_key, value)
                .unwrap();
        }
        if holds.ttl {
            let [value, list] = TTL_STATES;
            backend
                .put_value(value, entry.namespace, &entry.value)
                .unwrap();
            backend
                .update_list(list, entry.namespace, &entry.list)
                .unwrap();
        }
    }
}

fn write_fixture(dir: &Path, compression: &str) {
    let registry = registry();
    let factory = registry.keyed_backend("heap").unwrap();
    let mut params = params(compression);
    params.clock = Arc::new(ManualClock::new(WRITTEN_AT));
    let mut backend = factory.create(params, registry).unwrap();
    for state in states(Holds::keyed(CURRENT_VERSION)) {
        backend.register_state(&state).unwrap();
    }
    write_expected(&mut *backend, Holds::keyed(CURRENT_VERSION));
    let streams = Arc::new(MemoryCheckpointStreamFactory::default());
    let task = backend
        .snapshot(
            &SnapshotRequest::savepoint(CheckpointId::new(1), 0),
            streams,
        )
        .unwrap();
    let handle = task.run().unwrap().job_manager_owned().unwrap().clone();
    let json = serde_json::to_string(&handle).unwrap();
    std::fs::write(dir.join(format!("{compression}.json")), json).unwrap();
}

fn check_fixture(dir: &Path, compression: &str, holds: Holds) {
    check_fixture_with(dir, compression, params(compression), holds);
}

fn check_fixture_with(dir: &Path, compression: &str, mut params: KeyedBackendParams, holds: Holds) {
    let clock = Arc::new(ManualClock::new(WRITTEN_AT + TTL as i64 - 1));
    params.clock = clock.clone();
    let path = dir.join(format!("{compression}.json"));
    let json = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let handle: Arc<dyn KeyedStateHandle> = serde_json::from_slice(&json).unwrap();
    let registry = registry();
    let factory = registry.keyed_backend("heap").unwrap();
    let mut backend = factory.restore(params, registry, &[handle]).unwrap();
    check_contents(&mut *backend, &path.display().to_string(), holds, &clock);
}

/// Checks that `backend`, restored from what `what` names, holds what [`expected`]
/// describes and no [`EXTRA_KEY`], and with `timers` the [`expected_timers`].
/// With `holds.ttl`, the TTL states hold the same until `clock` reaches their expiry, and
/// nothing after.
fn check_contents(
    backend: &mut dyn KeyedStateBackend,
    what: &str,
    holds: Holds,
    clock: &ManualClock,
) {
    // Keys the fixture's first checkpoint held and its delta removed are gone.
    backend.set_current_key(&EXTRA_KEY.to_be_bytes()).unwrap();
    assert_eq!(
        backend.value("value", b"").unwrap(),
        None,
        "{what}: removed key"
    );
    assert!(
        backend.map_entries("map", b"").unwrap().is_empty(),
        "{what}: removed key"
    );
    let restored: Vec<_> = backend.states().into_iter().collect();
    assert_eq!(restored, states(holds), "{what}: states");
    if holds.timers {
        let range = backend.key_group_range();
        let mut restored: Vec<Timer> = range
            .iter()
            .flat_map(|group| backend.timers_of("timers", group).unwrap())
            .collect();
        restored.sort();
        let expected = expected_timers();
        assert_eq!(restored, expected, "{what}: timers");
        let polled = backend.poll_timers("timers", 0, usize::MAX).unwrap();
        let due: Vec<&Timer> = expected.iter().filter(|t| t.timestamp <= 0).collect();
        assert_eq!(
            polled,
            due.into_iter().cloned().collect::<Vec<_>>(),
            "{what}: timers due at 0"
        );
        assert!(
            polled.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
            "{what}: poll order"
        );
    }
    for entry in expected() {
        backend.set_current_key(&entry.key.to_be_bytes()).unwrap();
        let what = format!("{what} key {} namespace {:?}", entry.key, entry.namespace);
        assert_eq!(
            backend.value("value", entry.namespace).unwrap(),
            Some(entry.value.clone()),
            "{what}"
        );
        assert_eq!(
            backend.list("list", entry.namespace).unwrap(),
            entry.list.clone(),
            "{what}"
        );
        let mut map = backend.map_entries("map", entry.namespace).unwrap();
        map.sort();
        assert_eq!(map, entry.map, "{what}");
        if holds.ttl {
            let [value, list] = TTL_STATES;
            let stored = backend.value(value, entry.namespace).unwrap();
            assert_eq!(stored, Some(entry.value), "{what}: `{value}`");
            let elements = backend.list(list, entry.namespace).unwrap();
            assert_eq!(elements, entry.list, "{what}: `{list}`");
        }
    }
    if holds.ttl {
        clock.advance(1);
        for entry in expected() {
            backend.set_current_key(&entry.key.to_be_bytes()).unwrap();
            let [value, list] = TTL_STATES;
            assert_eq!(
                backend.value(value, entry.namespace).unwrap(),
                None,
                "{what}: expired"
            );
            assert!(
                backend.list(list, entry.namespace).unwrap().is_empty(),
                "{what}: expired"
            );
        }
    }
}

fn check_keyed_version(version: u32) {
    let dir = fixtures("keyed", version);
    if std::env::var_os("SNAPSTATE_WRITE_FIXTURES").is_some() && !dir.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        for compression in DECORATORS {
            write_fixture(&dir, compression);
        }
    }
    for compression in DECORATORS {
        check_fixture(&dir, compression, Holds::keyed(version));
    }
}

#[test]
fn keyed_v1_snapshots_restore_with_their_contents() {
    check_keyed_version(1);
}

/// Version 2: the keyed header records the number of key groups.
#[test]
fn keyed_v2_snapshots_restore_with_their_contents() {
    check_keyed_version(2);
}

/// Version 3: variable-length lengths and compact keys in the key-group data; the header
/// repeats its version in its body.
#[test]
fn keyed_v3_snapshots_restore_with_their_contents() {
    check_keyed_version(3);
}

/// Version 4: priority-queue states, whose entries are timers.
#[test]
fn keyed_v4_snapshots_restore_with_their_contents() {
    check_keyed_version(4);
}

/// Version 5: states with a time to live, whose values carry timestamps.
#[test]
fn keyed_v5_snapshots_restore_with_their_contents() {
    check_keyed_version(5);
}

/// A key the heap-incremental fixture's base holds and its delta removes.
const EXTRA_KEY: u64 = 1000;

fn incremental_params(compression: &str) -> KeyedBackendParams {
    KeyedBackendParams {
        strategy: Some("heap-incremental".into()),
        ..params(compression)
    }
}

/// A heap-incremental checkpoint of a base and a delta holding puts, deletes and clears:
/// the base holds other values for some keys, other map entries and an extra key; the
/// delta writes [`expected`] over them. The handle is stored resolved, as for restore.
fn write_incremental_fixture(dir: &Path, compression: &str) {
    let registry = registry();
    let factory = registry.keyed_backend("heap").unwrap();
    let mut params = incremental_params(compression);
    // A third of the keys change: keep the delta rather than a new base.
    params.options.insert(
        state_heap::MATERIALIZATION_FRACTION_OPTION.into(),
        "10".into(),
    );
    let mut backend = factory.create(params, registry).unwrap();
    for state in states(Holds::PLAIN) {
        backend.register_state(&state).unwrap();
    }
    write_expected(&mut *backend, Holds::PLAIN);
    for key in (0..100u64).step_by(3) {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend.put_value("value", b"", b"before").unwrap();
        backend
            .put_map_value("map", b"window-7", b"stale", b"x")
            .unwrap();
    }
    backend.set_current_key(&EXTRA_KEY.to_be_bytes()).unwrap();
    backend.put_value("value", b"", b"extra").unwrap();
    backend.put_map_value("map", b"", b"extra", b"x").unwrap();
    let streams = Arc::new(MemoryCheckpointStreamFactory::default());
    let shared = SharedStateRegistry::default();
    let checkpoint = |backend: &mut dyn KeyedStateBackend, id: u64| {
        incremental_checkpoint(backend, streams.clone(), &shared, id)
    };
    checkpoint(&mut *backend, 1);
    backend.set_current_key(&EXTRA_KEY.to_be_bytes()).unwrap();
    backend.clear("value", b"").unwrap();
    backend.clear("map", b"").unwrap();
    for entry in expected().into_iter().filter(|e| e.key % 3 == 0) {
        backend.set_current_key(&entry.key.to_be_bytes()).unwrap();
        backend
            .put_value("value", entry.namespace, &entry.value)
            .unwrap();
        backend.clear("map", entry.namespace).unwrap();
        for (user_key, value) in &entry.map {
            backend
                .put_map_value("map", entry.namespace, user_key, value)
                .unwrap();
        }
    }
    let handle = checkpoint(&mut *backend, 2);
    assert_eq!(handle.shared_state.len(), 2, "a base and a delta");
    let handle: Arc<dyn KeyedStateHandle> = Arc::new(handle);
    let json = serde_json::to_string(&handle).unwrap();
    std::fs::write(dir.join(format!("{compression}.json")), json).unwrap();
}

/// Takes incremental checkpoint `id` of `backend` into `streams`, registers it with
/// `shared`, completes it, and returns it with its shared files resolved.
fn incremental_checkpoint(
    backend: &mut dyn KeyedStateBackend,
    streams: Arc<MemoryCheckpointStreamFactory>,
    shared: &SharedStateRegistry,
    id: u64,
) -> IncrementalRemoteKeyedStateHandle {
    let result = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(id), 0),
            streams,
        )
        .unwrap()
        .run()
        .unwrap();
    let handle = result.job_manager_owned().unwrap().clone();
    let handle = handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .unwrap()
        .clone();
    let retained = shared.register(&handle).unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(id))
        .unwrap();
    shared.resolve(&retained).unwrap()
}

fn check_incremental_version(version: u32) {
    let dir = fixtures("heap-incremental", version);
    if std::env::var_os("SNAPSTATE_WRITE_FIXTURES").is_some() && !dir.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        write_incremental_fixture(&dir, "lz4");
    }
    check_fixture_with(&dir, "lz4", incremental_params("lz4"), Holds::PLAIN);
}

#[test]
fn heap_incremental_v1_checkpoints_restore_with_their_contents() {
    check_incremental_version(1);
}

/// Version 2: the headers of the meta stream and every chain file record the number of
/// key groups.
#[test]
fn heap_incremental_v2_checkpoints_restore_with_their_contents() {
    check_incremental_version(2);
}

/// Version 3: the handle records the strategy that wrote it.
#[test]
fn heap_incremental_v3_checkpoints_restore_with_their_contents() {
    check_incremental_version(3);
}

/// Version 4: the chain files are keyed snapshot streams of keyed format version 3.
#[test]
fn heap_incremental_v4_checkpoints_restore_with_their_contents() {
    check_incremental_version(4);
}

/// The keyed format version of each file of `handle`'s chain, as its header records it.
fn chain_file_versions(handle: &IncrementalRemoteKeyedStateHandle) -> Vec<u32> {
    handle
        .shared_state
        .iter()
        .map(|file| {
            let mut input = file.handle.open().unwrap();
            KeyedBackendSerializationProxy::read_from(&mut input)
                .unwrap()
                .version()
        })
        .collect()
}

/// A backend restored from a chain an older release wrote goes on with delta files of the
/// current format on top of the old files: each file is read in the version its own
/// header records.
#[test]
fn a_chain_of_older_files_goes_on_with_files_of_the_current_format() {
    let path = fixtures("heap-incremental", 3).join("lz4.json");
    let json = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let old: Arc<dyn KeyedStateHandle> = serde_json::from_slice(&json).unwrap();
    let old_incremental = old
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .unwrap()
        .clone();
    assert_eq!(
        chain_file_versions(&old_incremental),
        [2, 2],
        "a base and a delta"
    );
    let shared = SharedStateRegistry::default();
    shared.register(&old_incremental).unwrap();

    let registry = registry();
    let factory = registry.keyed_backend("heap").unwrap();
    let mut params = incremental_params("lz4");
    // The old delta is a third of the base: keep it rather than write a new base.
    params.options.insert(
        state_heap::MATERIALIZATION_FRACTION_OPTION.into(),
        "10".into(),
    );
    let mut backend = factory.restore(params, registry, &[old]).unwrap();
    backend.set_current_key(&NEW_KEY.to_be_bytes()).unwrap();
    backend.put_value("value", b"", b"new").unwrap();
    let streams = Arc::new(MemoryCheckpointStreamFactory::default());
    let resolved = incremental_checkpoint(&mut *backend, streams, &shared, 3);
    let mut versions = chain_file_versions(&resolved);
    versions.sort_unstable();
    assert_eq!(
        versions,
        [2, 2, CURRENT_VERSION],
        "the old base and delta, and a delta of the current format"
    );

    let what = "a chain of old and current files";
    let resolved: Arc<dyn KeyedStateHandle> = Arc::new(resolved);
    let mut restored = factory
        .restore(incremental_params("lz4"), registry, &[resolved])
        .unwrap();
    check_contents(&mut *restored, what, Holds::PLAIN, &ManualClock::default());
    restored.set_current_key(&NEW_KEY.to_be_bytes()).unwrap();
    assert_eq!(
        restored.value("value", b"").unwrap(),
        Some(b"new".to_vec()),
        "{what}: the key of the new delta"
    );
}

/// A key none of the fixtures holds.
const NEW_KEY: u64 = 2000;

/// The states of the operator fixture, ordered by name (as `states()` lists them).
fn operator_states() -> [OperatorStateMetaInfo; 3] {
    [
        OperatorStateMetaInfo::split_list("offsets", "u64-be"),
        OperatorStateMetaInfo::broadcast("rules", "string", "bytes"),
        OperatorStateMetaInfo::union_list("watermarks", "u64-be"),
    ]
}

/// Elements of each list state of the operator fixture, by name.
type Lists = Vec<(&'static str, Vec<Vec<u8>>)>;

/// Entries of the operator fixture's broadcast state.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Lists and broadcast entries of the operator fixture.
fn operator_contents() -> (Lists, Entries) {
    let offsets = (0..20u64)
        .map(|i| (i * 1000).to_be_bytes().to_vec())
        .collect();
    let watermarks = vec![7u64.to_be_bytes().to_vec(), Vec::new()];
    let rules = (0..5)
        .map(|i| (format!("rule-{i}").into_bytes(), vec![i as u8; i]))
        .collect();
    (
        vec![("offsets", offsets), ("watermarks", watermarks)],
        rules,
    )
}

fn write_operator_fixture(dir: &Path) {
    let registry = registry();
    let mut backend = registry
        .operator_backend("operator")
        .unwrap()
        .create(OperatorBackendParams::new(0, 1), registry)
        .unwrap();
    for state in operator_states() {
        backend.register_state(&state).unwrap();
    }
    let (lists, rules) = operator_contents();
    for (name, elements) in &lists {
        backend.update_list(name, elements).unwrap();
    }
    for (key, value) in &rules {
        backend.put_broadcast_value("rules", key, value).unwrap();
    }
    let streams = Arc::new(MemoryCheckpointStreamFactory::default());
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            streams,
        )
        .unwrap();
    let handle = task.run().unwrap().job_manager_owned().unwrap().clone();
    let json = serde_json::to_string(&handle).unwrap();
    std::fs::write(dir.join("operator.json"), json).unwrap();
}

#[test]
fn operator_v1_snapshots_restore_with_their_contents() {
    let dir = fixtures("operator", 1);
    if std::env::var_os("SNAPSTATE_WRITE_FIXTURES").is_some() && !dir.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        write_operator_fixture(&dir);
    }
    let path = dir.join("operator.json");
    let json = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let handle: OperatorStreamStateHandle = serde_json::from_slice(&json).unwrap();
    let registry = registry();
    let backend = registry
        .operator_backend("operator")
        .unwrap()
        .restore(OperatorBackendParams::new(0, 1), registry, &[handle])
        .unwrap();
    assert_eq!(backend.states(), operator_states(), "{}", path.display());
    let (lists, rules) = operator_contents();
    for (name, elements) in lists {
        assert_eq!(
            backend.list(name).unwrap(),
            elements,
            "{}: {name}",
            path.display()
        );
    }
    assert_eq!(
        backend.broadcast_entries("rules").unwrap(),
        rules,
        "{}",
        path.display()
    );
}

/// The bytes of every stream a handle's JSON holds inline, in order: the snapshot data
/// without the names (backend identifiers, shared keys) that differ from run to run.
fn inline_streams(json: &[u8]) -> Vec<Vec<u8>> {
    fn walk(value: &serde_json::Value, out: &mut Vec<Vec<u8>>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(bytes)) = map.get("bytes")
                    && let Some(serde_json::Value::Array(data)) = bytes.get("data")
                {
                    out.push(data.iter().map(|b| b.as_u64().unwrap() as u8).collect());
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&serde_json::from_slice(json).unwrap(), &mut out);
    out
}

/// What a full keyed snapshot pins of its format: the header bytes, the key groups and,
/// per key group, its entries (state id, key, value), and without compression every key
/// group's offset. The heap backend writes a key group's entries in hash order, so their
/// order (and with it the compressed sizes) is left out; everything else must be the same
/// byte for byte.
type KeyedImage = (
    Vec<u8>,
    Vec<(KeyGroup, Option<u64>)>,
    Vec<Vec<(u16, Vec<u8>, Vec<u8>)>>,
);

fn keyed_image(json: &[u8], compression: &str) -> KeyedImage {
    let handle: Arc<dyn KeyedStateHandle> = serde_json::from_slice(json).unwrap();
    let handle = handle
        .downcast_ref::<KeyGroupsStateHandle>()
        .unwrap()
        .clone();
    let offsets: Vec<(KeyGroup, u64)> = handle.offsets().iter().collect();
    let data = inline_streams(json).remove(0);
    let header = data[..offsets[0].1 as usize].to_vec();
    let mut reader = KeyedSnapshotReader::open(&handle, registry(), MAX_PARALLELISM).unwrap();
    let mut groups = Vec::new();
    for (key_group, _) in &offsets {
        let mut entries = Vec::new();
        reader
            .read_key_group(*key_group, &mut |entry| {
                entries.push((entry.state_id, entry.key.to_vec(), entry.value.to_vec()));
                Ok(())
            })
            .unwrap();
        entries.sort();
        groups.push(entries);
    }
    let offsets = offsets
        .into_iter()
        .map(|(key_group, offset)| (key_group, (compression == "none").then_some(offset)))
        .collect();
    (header, offsets, groups)
}

#[test]
fn the_current_formats_write_the_checked_in_bytes() {
    let written = tempfile::tempdir().unwrap();
    for compression in DECORATORS {
        write_fixture(written.path(), compression);
        let name = format!("{compression}.json");
        let expected = std::fs::read(fixtures("keyed", CURRENT_VERSION).join(&name)).unwrap();
        let actual = std::fs::read(written.path().join(&name)).unwrap();
        assert!(
            keyed_image(&actual, compression) == keyed_image(&expected, compression),
            "keyed-v{CURRENT_VERSION}/{name} differs when written again"
        );
    }
    write_operator_fixture(written.path());
    let expected = std::fs::read(fixtures("operator", 1).join("operator.json")).unwrap();
    let actual = std::fs::read(written.path().join("operator.json")).unwrap();
    assert!(actual == expected, "operator-v1 differs when written again");
}

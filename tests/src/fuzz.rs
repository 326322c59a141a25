//! Restore paths fed with arbitrary bytes: the bodies of the fuzz targets under `fuzz/`,
//! also run by a short property test in CI.
//!
//! Each function builds (once per process) a small valid snapshot with the named backend,
//! then restores `data` as if it were that snapshot's stream, with the valid snapshot's
//! layout (key-group offsets, or operator partitions). Whatever `data` is,
//! restore must return, with the state or with an error; it must never panic, hang or
//! allocate without bound.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use state_api::CheckpointId;
use state_api::MaxParallelism;
use state_api::SnapshotRequest;
use state_api::{
    ByteStreamStateHandle, KeyGroupRange, KeyedBackendParams, KeyedStateHandle,
    OperatorBackendParams, OperatorStateMetaInfo, OperatorStreamStateHandle, Registry,
    StateMetaInfo, StreamStateHandle,
};
use state_format::KeyGroupsStateHandle;
use state_format::KeyedBackendSerializationProxy;
use state_format::keyed_format::KeyedSnapshotReader;
use state_storage_local::MemoryCheckpointStreamFactory;

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(8);

/// A valid snapshot: its handle (layout) and its stream's bytes.
struct Template<H> {
    handle: H,
    bytes: Vec<u8>,
}

fn stream_bytes(stream: &Arc<dyn StreamStateHandle>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut input = stream
        .open()
        .unwrap_or_else(|e| panic!("reading a template: {e}"));
    std::io::Read::read_to_end(&mut input, &mut bytes)
        .unwrap_or_else(|e| panic!("reading a template: {e}"));
    bytes
}

fn keyed_template(registry: &Registry, backend: &str) -> Template<KeyGroupsStateHandle> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let range = KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1)
        .unwrap_or_else(|e| panic!("invariant: a valid range: {e}"));
    let params = KeyedBackendParams {
        working_dir: Some(dir.path().to_path_buf()),
        ..KeyedBackendParams::new(MAX_PARALLELISM, range)
    };
    let ok = |what: &str, outcome: state_api::Result<()>| {
        outcome.unwrap_or_else(|e| panic!("building the {backend} template: {what}: {e}"))
    };
    let mut live = registry
        .keyed_backend(backend)
        .and_then(|factory| factory.create(params, registry))
        .unwrap_or_else(|e| panic!("creating `{backend}`: {e}"));
    for meta in [
        StateMetaInfo::value("v", "bytes", "bytes"),
        StateMetaInfo::list("l", "bytes", "bytes"),
        StateMetaInfo::map("m", "bytes", "bytes", "bytes"),
    ] {
        ok("register", live.register_state(&meta));
    }
    for i in 0..12u8 {
        ok("key", live.set_current_key(&[i]));
        ok("value", live.put_value("v", b"ns", &[i; 3]));
        ok("list", live.append_to_list("l", b"", &[i]));
        ok("map", live.put_map_value("m", b"", &[i], &[i, i]));
    }
    let factory = Arc::new(MemoryCheckpointStreamFactory::default());
    let result = live
        .snapshot(
            &SnapshotRequest::savepoint(CheckpointId::new(1), 0),
            factory,
        )
        .and_then(|task| task.run())
        .unwrap_or_else(|e| panic!("snapshot of the {backend} template: {e}"));
    let handle = result
        .job_manager_owned()
        .and_then(|h| h.downcast_ref::<KeyGroupsStateHandle>().cloned())
        .unwrap_or_else(|| panic!("a savepoint of `{backend}` is a key-groups handle"));
    let bytes = stream_bytes(handle.delegate());
    Template { handle, bytes }
}

fn operator_template(registry: &Registry, backend: &str) -> Template<OperatorStreamStateHandle> {
    let mut live = registry
        .operator_backend(backend)
        .and_then(|factory| factory.create(OperatorBackendParams::new(0, 1), registry))
        .unwrap_or_else(|e| panic!("creating `{backend}`: {e}"));
    let ok = |outcome: state_api::Result<()>| {
        outcome.unwrap_or_else(|e| panic!("building the {backend} template: {e}"))
    };
    ok(live.register_state(&OperatorStateMetaInfo::split_list("s", "bytes")));
    ok(live.register_state(&OperatorStateMetaInfo::union_list("u", "bytes")));
    ok(live.register_state(&OperatorStateMetaInfo::broadcast("b", "bytes", "bytes")));
    for i in 0..5u8 {
        ok(live.append_to_list("s", &[i; 4]));
        ok(live.append_to_list("u", &[i]));
        ok(live.put_broadcast_value("b", &[i], &[i, i]));
    }
    let factory = Arc::new(MemoryCheckpointStreamFactory::default());
    let result = live
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            factory,
        )
        .and_then(|task| task.run())
        .unwrap_or_else(|e| panic!("snapshot of the {backend} template: {e}"));
    let handle = result
        .job_manager_owned()
        .cloned()
        .unwrap_or_else(|| panic!("a snapshot of `{backend}` with states has a handle"));
    let bytes = stream_bytes(handle.delegate());
    Template { handle, bytes }
}

type Cache<H> = Mutex<BTreeMap<String, Arc<Template<H>>>>;

fn cached<H>(
    cache: &'static OnceLock<Cache<H>>,
    backend: &str,
    build: impl FnOnce() -> Template<H>,
) -> Arc<Template<H>> {
    let cache = cache.get_or_init(Cache::default);
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    cache
        .entry(backend.to_owned())
        .or_insert_with(|| Arc::new(build()))
        .clone()
}

fn keyed(registry: &Registry, backend: &str) -> Arc<Template<KeyGroupsStateHandle>> {
    static CACHE: OnceLock<Cache<KeyGroupsStateHandle>> = OnceLock::new();
    cached(&CACHE, backend, || keyed_template(registry, backend))
}

fn operator(registry: &Registry, backend: &str) -> Arc<Template<OperatorStreamStateHandle>> {
    static CACHE: OnceLock<Cache<OperatorStreamStateHandle>> = OnceLock::new();
    cached(&CACHE, backend, || operator_template(registry, backend))
}

/// The stream bytes of the valid keyed snapshot the keyed target mutates (a corpus seed).
pub fn keyed_seed(registry: &Registry, backend: &str) -> Vec<u8> {
    keyed(registry, backend).bytes.clone()
}

/// The stream bytes of the valid operator snapshot the operator target mutates.
pub fn operator_seed(registry: &Registry, backend: &str) -> Vec<u8> {
    operator(registry, backend).bytes.clone()
}

/// Reads `data` as a keyed snapshot header, as a keyed snapshot with the template's layout
/// (every key group), and restores it into keyed backend `backend`; returns whether the
/// restore succeeded.
pub fn keyed_restore(registry: &Registry, backend: &str, data: &[u8]) -> bool {
    let _ = KeyedBackendSerializationProxy::read_from(&mut &data[..]);
    let template = keyed(registry, backend);
    let stream: Arc<dyn StreamStateHandle> =
        Arc::new(ByteStreamStateHandle::new("fuzz input", data.to_vec()));
    // Offsets only: entry order inside a key group (and so the checksums) may differ
    // between processes, and the fuzzer should reach the parsing behind the checksum.
    let handle = KeyGroupsStateHandle::new(template.handle.offsets().clone(), stream)
        .with_end(data.len() as u64);
    let range = template.handle.offsets().range();
    if let Ok(mut reader) = KeyedSnapshotReader::open(&handle, registry, MAX_PARALLELISM) {
        for key_group in range.iter() {
            let _ = reader.read_key_group(key_group, &mut |_| Ok(()));
        }
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let params = KeyedBackendParams {
        working_dir: Some(dir.path().to_path_buf()),
        ..KeyedBackendParams::new(MAX_PARALLELISM, range)
    };
    let handles: [Arc<dyn KeyedStateHandle>; 1] = [Arc::new(handle)];
    registry
        .keyed_backend(backend)
        .and_then(|factory| factory.restore(params, registry, &handles))
        .is_ok()
}

/// Restores `data` as an operator snapshot with the template's partitions into operator
/// backend `backend`; returns whether the restore succeeded.
pub fn operator_restore(registry: &Registry, backend: &str, data: &[u8]) -> bool {
    let template = operator(registry, backend);
    let stream: Arc<dyn StreamStateHandle> =
        Arc::new(ByteStreamStateHandle::new("fuzz input", data.to_vec()));
    let handle = OperatorStreamStateHandle::new(template.handle.states().clone(), stream);
    registry
        .operator_backend(backend)
        .and_then(|factory| factory.restore(OperatorBackendParams::new(0, 1), registry, &[handle]))
        .is_ok()
}

/// A checkpoint storage root holding a complete checkpoint 1 (a heap full snapshot and a
/// heap-incremental one, each with operator state), beside a planted file outside it.
struct StoredTemplate {
    /// Keeps the directories alive.
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    metadata: Vec<u8>,
}

/// What the planted file outside the root holds; a restore must never change it.
const PLANTED: &[u8] = b"outside the storage root";

fn stored_template(registry: &Registry) -> &'static StoredTemplate {
    static TEMPLATE: OnceLock<StoredTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        use state_api::checkpoint_metadata::METADATA_FILE;
        use state_api::{CheckpointMetadata, CheckpointType, InstanceSnapshot};
        use state_storage_local::LocalCheckpointStorage;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let root = dir.path().join("root");
        let outside = dir.path().join("planted");
        std::fs::write(&outside, PLANTED).unwrap_or_else(|e| panic!("planting: {e}"));
        let storage = LocalCheckpointStorage::new(&root)
            .unwrap_or_else(|e| panic!("storage: {e}"))
            .with_file_state_threshold(0);
        let factory: Arc<dyn state_api::CheckpointStreamFactory> = Arc::new(
            storage
                .stream_factory(CheckpointId::new(1))
                .unwrap_or_else(|e| panic!("stream factory: {e}")),
        );
        let mut metadata = CheckpointMetadata::new(
            CheckpointId::new(1),
            0,
            CheckpointType::Checkpoint,
            MAX_PARALLELISM,
        );
        for (index, strategy) in [(0u32, "heap"), (1, "heap-incremental")] {
            let range = MAX_PARALLELISM
                .range_for(index, 2)
                .unwrap_or_else(|e| panic!("invariant: a valid range: {e}"));
            let mut params = KeyedBackendParams::new(MAX_PARALLELISM, range);
            params.strategy = Some(strategy.to_owned());
            let mut live = registry
                .keyed_backend("heap")
                .and_then(|factory| factory.create(params, registry))
                .unwrap_or_else(|e| panic!("creating heap: {e}"));
            live.register_state(&StateMetaInfo::value("v", "bytes", "bytes"))
                .unwrap_or_else(|e| panic!("register: {e}"));
            for key in 0..64u64 {
                let key = key.to_be_bytes();
                let group = MAX_PARALLELISM.key_group_of(&key);
                if range.contains(group) {
                    live.set_current_key(&key)
                        .and_then(|()| live.put_value("v", b"", &[7; 16]))
                        .unwrap_or_else(|e| panic!("writing: {e}"));
                }
            }
            let keyed = live
                .snapshot(
                    &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
                    factory.clone(),
                )
                .and_then(|task| task.run())
                .unwrap_or_else(|e| panic!("snapshot: {e}"));
            let mut operator = registry
                .operator_backend("operator")
                .and_then(|f| f.create(OperatorBackendParams::new(index, 2), registry))
                .unwrap_or_else(|e| panic!("operator backend: {e}"));
            operator
                .register_state(&OperatorStateMetaInfo::split_list("o", "bytes"))
                .and_then(|()| operator.update_list("o", &[vec![1; 8]]))
                .unwrap_or_else(|e| panic!("operator state: {e}"));
            let operator = operator
                .snapshot(
                    &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
                    factory.clone(),
                )
                .and_then(|task| task.run())
                .unwrap_or_else(|e| panic!("operator snapshot: {e}"));
            metadata.instances.push(InstanceSnapshot {
                index,
                keyed: keyed.job_manager_owned().cloned().into_iter().collect(),
                operator: operator.job_manager_owned().cloned().into_iter().collect(),
            });
        }
        storage
            .commit_checkpoint(&metadata)
            .unwrap_or_else(|e| panic!("commit: {e}"));
        let metadata = std::fs::read(root.join("chk-1").join(METADATA_FILE))
            .unwrap_or_else(|e| panic!("reading the metadata: {e}"));
        StoredTemplate {
            _dir: dir,
            root,
            outside,
            metadata,
        }
    })
}

/// The JSON body of the stored template checkpoint's `_metadata` (a corpus seed for
/// [`metadata_restore`]).
pub fn metadata_seed(registry: &Registry) -> Vec<u8> {
    let metadata = &stored_template(registry).metadata;
    metadata[12..metadata.len() - 4].to_vec()
}

/// `body` framed as a `_metadata` file of format `version` (a valid checksum, so the
/// fuzzer reaches the JSON and the handles behind it).
fn framed_metadata(body: &[u8], version: u32) -> Vec<u8> {
    state_format::metadata::frame_body(body, version).unwrap_or_default()
}

/// Reads `data` as the JSON body of a `_metadata` of the template storage (every handle
/// resolved against its root; framed as format version 1 and 2), registers it with a
/// shared state registry and restores every instance into the heap and operator
/// backends; returns whether all of it succeeded. Whatever `data` is, nothing outside the
/// root may change: the planted file beside the root is checked after every input (a
/// change panics: a finding).
pub fn metadata_restore(registry: &Registry, data: &[u8]) -> bool {
    let template = stored_template(registry);
    let root: Arc<dyn state_format::StorageRoot> =
        match state_storage_local::LocalRoot::new(&template.root) {
            Ok(root) => Arc::new(root),
            Err(e) => panic!("the template root: {e}"),
        };
    let _ = state_format::metadata::from_bytes(&framed_metadata(data, 1), &root);
    let framed = framed_metadata(data, 2);
    let restored = state_format::metadata::from_bytes(&framed, &root).is_ok_and(|metadata| {
        let registered =
            state_coordinator::SharedStateRegistry::default().register_restored(&metadata);
        let handles = metadata.keyed_handles();
        let operators = metadata.operator_handles();
        registered.is_ok()
            && (0..2u32).all(|index| {
                let Ok(range) = MAX_PARALLELISM.range_for(index, 2) else {
                    return false;
                };
                let keyed = registry.keyed_backend("heap").and_then(|factory| {
                    factory.restore(
                        KeyedBackendParams::new(MAX_PARALLELISM, range),
                        registry,
                        &handles,
                    )
                });
                let operator = registry.operator_backend("operator").and_then(|factory| {
                    factory.restore(
                        OperatorBackendParams::new(index, 2),
                        registry,
                        operators.get(index as usize).map_or(&[][..], Vec::as_slice),
                    )
                });
                keyed.is_ok() && operator.is_ok()
            })
    });
    check_planted(template);
    restored
}

/// Reads `data` as a keyed handle's JSON, as checkpoint metadata carries it, inside the
/// template storage's scope, and restores it into the heap backend; returns whether both
/// succeeded. Like [`metadata_restore`], never touches anything outside the root.
pub fn handle_restore(registry: &Registry, data: &[u8]) -> bool {
    let template = stored_template(registry);
    let root: Arc<dyn state_format::StorageRoot> =
        match state_storage_local::LocalRoot::new(&template.root) {
            Ok(root) => Arc::new(root),
            Err(e) => panic!("the template root: {e}"),
        };
    let scope = state_format::HandleScope::new(root, state_format::AbsoluteLocations::Refused);
    let (handle, _) = scope.enter(|| serde_json::from_slice::<Arc<dyn KeyedStateHandle>>(data));
    let restored = handle.is_ok_and(|handle| {
        let range = handle.key_group_range();
        registry
            .keyed_backend("heap")
            .and_then(|factory| {
                factory.restore(
                    KeyedBackendParams::new(MAX_PARALLELISM, range),
                    registry,
                    &[handle],
                )
            })
            .is_ok()
    });
    check_planted(template);
    restored
}

/// The JSON of the template's first keyed handle (a corpus seed for [`handle_restore`]).
pub fn handle_seed(registry: &Registry) -> Vec<u8> {
    let template = stored_template(registry);
    let body: serde_json::Value =
        serde_json::from_slice(&template.metadata[12..template.metadata.len() - 4])
            .unwrap_or_else(|e| panic!("the template metadata: {e}"));
    serde_json::to_vec(&body["instances"][0]["keyed"][0])
        .unwrap_or_else(|e| panic!("the template handle: {e}"))
}

fn check_planted(template: &StoredTemplate) {
    match std::fs::read(&template.outside) {
        Ok(bytes) if bytes == PLANTED => {}
        other => panic!("a restore changed the file outside the storage root: {other:?}"),
    }
}

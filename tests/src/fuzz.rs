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

use state_api::keyed_format::KeyedSnapshotReader;
use state_api::{
    ByteStreamStateHandle, CheckpointOptions, KeyGroupRange, KeyGroupsStateHandle,
    KeyedBackendParams, KeyedBackendSerializationProxy, KeyedStateHandle,
    MemoryCheckpointStreamFactory, OperatorBackendParams, OperatorStateMetaInfo,
    OperatorStreamStateHandle, Registry, StateMetaInfo, StreamStateHandle,
};

const MAX_PARALLELISM: u32 = 8;

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
    let range = KeyGroupRange::new(0, MAX_PARALLELISM - 1)
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
        .snapshot(1, 0, factory, &CheckpointOptions::savepoint())
        .and_then(|task| task.run())
        .unwrap_or_else(|e| panic!("snapshot of the {backend} template: {e}"));
    let handle = result
        .job_manager_owned()
        .and_then(|h| h.as_any().downcast_ref::<KeyGroupsStateHandle>().cloned())
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
        .snapshot(1, 0, factory, &CheckpointOptions::checkpoint())
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

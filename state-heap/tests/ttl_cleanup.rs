//! The incremental clean-up of states with a time to live: accesses to a state remove the
//! expired entries of keys nobody reads again, a few per access, and `heap-incremental`
//! checkpoints taken after that hold them no more.

#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;
use std::sync::Arc;

use state_api::{
    CheckpointId, IncrementalRemoteKeyedStateHandle, KeyGroupRange, KeyedBackendParams,
    KeyedStateBackend, KeyedStateHandle, MaxParallelism, Registry, SnapshotRequest, StateMetaInfo,
    StateTtlConfig, TtlVisibility,
};
use state_coordinator::SharedStateRegistry;
use state_format::ttl::ManualClock;
use state_storage_local::MemoryCheckpointStreamFactory;

const KEYS: u64 = 300;
const HOT: u64 = 1_000_000;

/// Expired entries stay visible until removed: reads show whether they were.
fn ttl(incremental: Option<u32>) -> StateTtlConfig {
    let mut ttl = StateTtlConfig::new(1000)
        .unwrap()
        .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp);
    ttl.cleanup_incrementally = incremental.and_then(NonZeroU32::new);
    ttl
}

fn states(incremental: Option<u32>) -> [StateMetaInfo; 3] {
    let ttl = ttl(incremental);
    [
        StateMetaInfo::value("value", "void", "bytes").with_ttl(ttl),
        StateMetaInfo::list("list", "void", "bytes").with_ttl(ttl),
        StateMetaInfo::map("map", "void", "bytes", "bytes").with_ttl(ttl),
    ]
}

fn params(clock: &Arc<ManualClock>) -> KeyedBackendParams {
    let mut params =
        KeyedBackendParams::new(MaxParallelism::of(128), KeyGroupRange::new(0, 127).unwrap());
    params.strategy = Some(state_heap::HEAP_INCREMENTAL.into());
    params.clock = clock.clone();
    params
}

fn checkpoint(
    backend: &mut dyn KeyedStateBackend,
    streams: &Arc<MemoryCheckpointStreamFactory>,
    shared: &SharedStateRegistry,
    id: u64,
) -> Arc<dyn KeyedStateHandle> {
    let request = SnapshotRequest::checkpoint(CheckpointId::new(id), 0);
    let result = backend
        .snapshot(&request, streams.clone())
        .unwrap()
        .run()
        .unwrap();
    let handle = result.job_manager_owned().unwrap().clone();
    let incremental = handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .unwrap();
    let retained = shared.register(incremental).unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(id))
        .unwrap();
    Arc::new(shared.resolve(&retained).unwrap())
}

/// Writes every key's entries at 0 (the list also gets an element at 900), checkpoints,
/// lets the first entries expire at 1000, and accesses one other key 300 times; returns
/// the backend and a checkpoint taken after that.
fn expire_and_access(
    incremental: Option<u32>,
) -> (
    Box<dyn KeyedStateBackend>,
    Arc<dyn KeyedStateHandle>,
    Arc<ManualClock>,
) {
    state_heap::link();
    let registry = Registry::global();
    let clock = Arc::new(ManualClock::new(0));
    let factory = registry.keyed_backend(state_heap::HEAP).unwrap();
    let mut backend = factory.create(params(&clock), registry).unwrap();
    for state in states(incremental) {
        backend.register_state(&state).unwrap();
    }
    for key in 0..KEYS {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend.put_value("value", b"", b"old").unwrap();
        backend.append_to_list("list", b"", b"old").unwrap();
        backend.put_map_value("map", b"", b"old", b"x").unwrap();
    }
    clock.set(900);
    for key in 0..KEYS {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend.append_to_list("list", b"", b"new").unwrap();
    }
    let streams = Arc::new(MemoryCheckpointStreamFactory::default());
    let shared = SharedStateRegistry::default();
    checkpoint(&mut *backend, &streams, &shared, 1);
    clock.set(1000);
    backend.set_current_key(&HOT.to_be_bytes()).unwrap();
    for round in 0..KEYS {
        let value = round.to_be_bytes();
        backend.put_value("value", b"", &value).unwrap();
        backend.append_to_list("list", b"", &value).unwrap();
        backend.put_map_value("map", b"", b"hot", &value).unwrap();
    }
    let handle = checkpoint(&mut *backend, &streams, &shared, 2);
    (backend, handle, clock)
}

/// What reads of every cold key return, in order: value, list, map entries.
type Seen = (Option<Vec<u8>>, Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

fn cold_keys(backend: &mut dyn KeyedStateBackend) -> Vec<Seen> {
    (0..KEYS)
        .map(|key| {
            backend.set_current_key(&key.to_be_bytes()).unwrap();
            (
                backend.value("value", b"").unwrap(),
                backend.list("list", b"").unwrap(),
                backend.map_entries("map", b"").unwrap(),
            )
        })
        .collect()
}

#[test]
fn accesses_remove_expired_entries_of_other_keys_a_few_at_a_time() {
    let (mut live, handle, clock) = expire_and_access(Some(4));
    let cleaned: Seen = (None, vec![b"new".to_vec()], Vec::new());
    let restored_params = params(&clock);
    let registry = Registry::global();
    let factory = registry.keyed_backend(state_heap::HEAP).unwrap();
    let mut restored = factory
        .restore(restored_params, registry, &[handle])
        .unwrap();
    for state in states(Some(4)) {
        restored.register_state(&state).unwrap();
    }
    for (what, backend) in [
        ("live", &mut live),
        ("restored from the delta", &mut restored),
    ] {
        let seen = cold_keys(&mut **backend);
        let left = seen.iter().filter(|seen| **seen != cleaned).count();
        assert_eq!(
            left, 0,
            "{what}: cold keys whose expired entries are still there"
        );
    }
}

#[test]
fn without_the_incremental_clean_up_expired_entries_stay_until_read() {
    let (mut live, _, _) = expire_and_access(None);
    let first = cold_keys(&mut *live);
    let old: Seen = (
        Some(b"old".to_vec()),
        vec![b"old".to_vec(), b"new".to_vec()],
        vec![(b"old".to_vec(), b"x".to_vec())],
    );
    assert!(first.iter().all(|seen| *seen == old), "{:?}", &first[..2]);
    let cleaned: Seen = (None, vec![b"new".to_vec()], Vec::new());
    assert!(
        cold_keys(&mut *live).iter().all(|seen| *seen == cleaned),
        "reads removed them"
    );
}

#[test]
fn typed_states_registered_with_a_time_to_live_expire() {
    use state_format::typed::{self, MapState, StringSerializer, U64Serializer, VoidSerializer};

    state_heap::link();
    let registry = Registry::global();
    let clock = Arc::new(ManualClock::new(0));
    let factory = registry.keyed_backend(state_heap::HEAP).unwrap();
    let mut backend = factory.create(params(&clock), registry).unwrap();
    let ttl = Some(StateTtlConfig::new(1000).unwrap());
    let sessions: MapState<(), String, u64> = MapState::register_with(
        &mut *backend,
        "sessions",
        VoidSerializer,
        StringSerializer,
        U64Serializer,
        ttl,
    )
    .unwrap();
    typed::set_current_key(&mut *backend, &StringSerializer, &"alice".to_owned()).unwrap();
    sessions
        .put(&mut *backend, &(), &"web".to_owned(), &7)
        .unwrap();
    clock.set(999);
    assert_eq!(
        sessions.get(&*backend, &(), &"web".to_owned()).unwrap(),
        Some(7)
    );
    clock.set(1000);
    assert_eq!(
        sessions.get(&*backend, &(), &"web".to_owned()).unwrap(),
        None
    );
    let again = MapState::<(), String, u64>::register(
        &mut *backend,
        "sessions",
        VoidSerializer,
        StringSerializer,
        U64Serializer,
    );
    let err = again.unwrap_err();
    assert!(
        matches!(err, state_api::Error::Incompatible { .. }),
        "{err}"
    );
}

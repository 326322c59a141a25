//! The in-tree keyed backend `rocksdb` (strategy `rocksdb-full`) passes the keyed-backend
//! conformance kit, and savepoints move between it and the heap backend.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use snapstate_tests::keyed::{self, KeyedBackendCapabilities, KeyedTarget, RESCALINGS};
use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    KeyGroupRange, KeyedBackendParams, KeyedStateBackend, KeyedStateHandle, MaxParallelism,
    PluginKind, Registry, StateMetaInfo,
};
use state_storage_local::MemoryCheckpointStreamFactory;

const ROCKSDB: &str = "rocksdb";

const CAPABILITIES: KeyedBackendCapabilities = KeyedBackendCapabilities {
    rescaling: true,
    local_recovery: true,
};

fn registry() -> &'static Registry {
    // The linker drops the link-time registrations of crates nothing names.
    state_compress::link();
    state_heap::link();
    state_rocksdb::link();
    Registry::global()
}

/// `rocksdb` with its full strategy and sections written with `compression`.
fn rocksdb(compression: &str) -> KeyedTarget<'static> {
    KeyedTarget::new(registry(), ROCKSDB)
        .compression(compression)
        .capabilities(CAPABILITIES)
}

#[test]
fn rocksdb_backend_and_full_strategy_are_linked() {
    let registry = registry();
    assert!(
        registry.conflicts().is_empty(),
        "{:?}",
        registry.conflicts()
    );
    assert!(
        registry
            .names(PluginKind::KeyedBackend)
            .contains(&ROCKSDB.to_owned())
    );
    let strategies = registry.names(PluginKind::KeyedStrategy);
    assert!(
        strategies.contains(&"rocksdb-full".to_owned()),
        "{strategies:?}"
    );
}

#[test]
fn rocksdb_round_trip_every_decorator() {
    for compression in ["none", "snappy", "lz4"] {
        keyed::round_trip(&rocksdb(compression));
    }
}

#[test]
fn rocksdb_map_entries_are_ordered() {
    keyed::map_entries_are_ordered(&rocksdb("none"));
}

#[test]
fn rocksdb_empty_state() {
    keyed::empty_state(&rocksdb("none"));
}

#[test]
fn rocksdb_huge_values() {
    keyed::huge_values(&rocksdb("lz4"));
}

#[test]
fn rocksdb_compression_is_read_from_the_snapshot() {
    keyed::compression_is_read_from_the_snapshot(&rocksdb("snappy"));
}

#[test]
fn rocksdb_snapshot_is_consistent() {
    keyed::snapshot_is_consistent(&rocksdb("none"));
}

#[test]
fn rocksdb_rescale() {
    for (from, to) in RESCALINGS {
        keyed::rescale(&rocksdb("none"), from, to);
    }
}

#[test]
fn rocksdb_corrupt_snapshot() {
    keyed::corrupt_snapshot_is_reported(&rocksdb("lz4"));
}

#[test]
fn rocksdb_cancelled_snapshot_leaves_nothing() {
    keyed::cancelled_snapshot_leaves_nothing(&rocksdb("none"));
}

#[test]
fn rocksdb_storage_faults_are_contained() {
    keyed::storage_faults_are_contained(&rocksdb("snappy"));
}

#[test]
fn rocksdb_incompatible_serializers_are_rejected() {
    keyed::incompatible_serializers_are_rejected(&rocksdb("none"));
}

#[test]
fn rocksdb_local_recovery() {
    keyed::local_recovery(&rocksdb("none"));
}

// Savepoints between backends.

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);

fn params(range: KeyGroupRange, dir: &tempfile::TempDir) -> KeyedBackendParams {
    KeyedBackendParams {
        working_dir: Some(dir.path().to_path_buf()),
        compression: "snappy".into(),
        ..KeyedBackendParams::new(MAX_PARALLELISM, range)
    }
}

fn states() -> [StateMetaInfo; 3] {
    [
        StateMetaInfo::value("count", "void", "u64-be"),
        StateMetaInfo::list("events", "void", "bytes"),
        StateMetaInfo::map("attributes", "void", "bytes", "bytes"),
    ]
}

fn keys() -> Vec<Vec<u8>> {
    (0..300).map(|i| format!("user-{i}").into_bytes()).collect()
}

fn fill(backend: &mut dyn KeyedStateBackend) {
    for meta in states() {
        backend.register_state(&meta).unwrap();
    }
    for (i, key) in (0u64..).zip(keys()) {
        backend.set_current_key(&key).unwrap();
        backend.put_value("count", b"", &i.to_be_bytes()).unwrap();
        for e in 0..i % 4 {
            backend
                .append_to_list("events", b"", format!("event-{e}").as_bytes())
                .unwrap();
        }
        backend
            .put_map_value("attributes", b"", b"name", &key)
            .unwrap();
    }
}

/// Every key of `backend`'s range holds what `fill` wrote, and nothing else is there.
fn check(backend: &mut dyn KeyedStateBackend, case: &str) {
    let range = backend.key_group_range();
    let mut expected = 0;
    for (i, key) in (0u64..).zip(keys()) {
        let group = MAX_PARALLELISM.key_group_of(&key);
        if !range.contains(group) {
            continue;
        }
        expected += 1;
        backend.set_current_key(&key).unwrap();
        assert_eq!(
            backend.value("count", b"").unwrap(),
            Some(i.to_be_bytes().to_vec()),
            "{case}"
        );
        let events: Vec<Vec<u8>> = (0..i % 4)
            .map(|e| format!("event-{e}").into_bytes())
            .collect();
        assert_eq!(backend.list("events", b"").unwrap(), events, "{case}");
        assert_eq!(
            backend.map_entries("attributes", b"").unwrap(),
            [(b"name".to_vec(), key.clone())],
            "{case}"
        );
    }
    assert_eq!(
        backend.keys("count", b"").unwrap().len(),
        expected,
        "{case}"
    );
}

fn savepoint(backend: &mut dyn KeyedStateBackend) -> Arc<dyn KeyedStateHandle> {
    let factory = Arc::new(MemoryCheckpointStreamFactory::default());
    let task = backend
        .snapshot(
            &SnapshotRequest::savepoint(CheckpointId::new(1), 0),
            factory,
        )
        .unwrap();
    task.run().unwrap().job_manager_owned().unwrap().clone()
}

#[test]
fn savepoints_move_between_heap_and_rocksdb_also_when_rescaling() {
    let registry = registry();
    let dir = tempfile::tempdir().unwrap();
    let full = KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1).unwrap();
    let halves = [
        KeyGroupRange::new(0, 63).unwrap(),
        KeyGroupRange::new(64, 127).unwrap(),
    ];
    for (from, to) in [("heap", ROCKSDB), (ROCKSDB, "heap")] {
        let mut source = registry
            .keyed_backend(from)
            .unwrap()
            .create(params(full, &dir), registry)
            .unwrap();
        fill(&mut *source);
        let handle = savepoint(&mut *source);
        let target = registry.keyed_backend(to).unwrap();
        for range in std::iter::once(full).chain(halves) {
            let mut restored = target
                .restore(params(range, &dir), registry, std::slice::from_ref(&handle))
                .unwrap();
            check(
                &mut *restored,
                &format!("{from} savepoint into {to} {range}"),
            );
            restored.close().unwrap();
        }
        source.close().unwrap();
    }
}

snapstate_tests::keyed_contracts!(
    rocksdb_lz4,
    KeyedTarget::new(registry(), ROCKSDB)
        .compression("lz4")
        .capabilities(CAPABILITIES)
);

#[test]
fn closing_while_a_snapshot_holds_its_lease_waits_for_it_and_leaks_nothing() {
    use snapstate_tests::faults::{GatePoint, GatedStreamFactory};
    use state_storage_local::LocalCheckpointStorage;

    let registry = registry();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let storage = LocalCheckpointStorage::new(dir.path().join("checkpoints")).unwrap();
    let mut backend = state_rocksdb::RocksDBKeyedStateBackend::new(
        KeyedBackendParams {
            working_dir: Some(work.clone()),
            ..KeyedBackendParams::new(MAX_PARALLELISM, KeyGroupRange::new(0, 127).unwrap())
        },
        registry,
    )
    .unwrap();
    fill(&mut backend);
    let source = backend.snapshot_source().clone();
    // Held while completing its stream: no longer registered for cancellation (a close
    // must not be interrupted half-way), still holding the lease on the database.
    let (factory, gate) = GatedStreamFactory::at(
        Box::new(storage.stream_factory(CheckpointId::new(1)).unwrap()),
        GatePoint::Close,
    );
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            Arc::new(factory),
        )
        .unwrap();
    let running = task.spawn().unwrap();
    assert!(gate.wait_started(), "the snapshot never closed its stream");

    let closing = std::thread::spawn(move || backend.close());
    // Once leases are refused the close is waiting for the snapshot's lease.
    while source.lease().is_ok() {
        std::thread::yield_now();
    }
    assert!(
        !closing.is_finished(),
        "the backend closed while a snapshot held a lease on its database"
    );
    gate.resume();
    closing.join().unwrap().unwrap();
    let err = running.join().unwrap().unwrap_err();
    assert!(
        err.is_cancelled(),
        "closing the backend cancels its snapshots: {err}"
    );
    assert!(
        source.db().is_err(),
        "a closed backend hands out its database"
    );
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "the database directory is left: {left:?}");
    let files: Vec<_> = walk(storage.root());
    assert!(files.is_empty(), "checkpoint files are left: {files:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

// The incremental strategy.

snapstate_tests::keyed_contracts!(
    rocksdb_incremental,
    KeyedTarget::new(registry(), ROCKSDB)
        .strategy("rocksdb-incremental")
        .capabilities(CAPABILITIES)
);

// Timers kept in memory (`rocksdb.timer-service.factory = heap`), with either strategy.

snapstate_tests::keyed_contracts!(
    rocksdb_heap_timers,
    KeyedTarget::new(registry(), ROCKSDB)
        .option("rocksdb.timer-service.factory", "heap")
        .capabilities(CAPABILITIES)
);

snapstate_tests::keyed_contracts!(
    rocksdb_incremental_heap_timers,
    KeyedTarget::new(registry(), ROCKSDB)
        .strategy("rocksdb-incremental")
        .option("rocksdb.timer-service.factory", "heap")
        .capabilities(CAPABILITIES)
);

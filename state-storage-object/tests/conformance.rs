//! The backend conformance kits through object storage: every keyed backend and strategy
//! (`heap` with strategies `heap` and `heap-incremental`, `rocksdb` with `rocksdb-full` and
//! `rocksdb-incremental`) and the
//! operator backend checkpoint,
//! restore, rescale, cancel and meet failing storage with every snapshot stored on a real
//! S3-compatible server (moto on loopback) and on the in-memory store; a coordinator's
//! round of incremental checkpoints commits, subsumes and discards through S3 and leaves no
//! object behind.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use snapstate_tests::keyed::{self, KeyedBackendCapabilities, KeyedTarget};
use snapstate_tests::operator;
use snapstate_tests::storage::{StorageProvider, StorageUnderTest, with_storage};
use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    CheckpointMetadata, CheckpointStorage, CheckpointStreamFactory, CheckpointType,
    IncrementalRemoteKeyedStateHandle, InstanceSnapshot, KeyGroupRange, KeyedBackendParams,
    KeyedStateBackend, KeyedStateHandle, MaxParallelism, Registry, Result, StateMetaInfo,
};
use state_coordinator::SharedStateRegistry;
use state_storage_object::{ObjectCheckpointStorage, ObjectStoreOptions};
use support::MotoServer;

const CAPABILITIES: KeyedBackendCapabilities = KeyedBackendCapabilities {
    rescaling: true,
    local_recovery: true,
};

fn registry() -> &'static Registry {
    state_heap::link();
    state_rocksdb::link();
    state_operator::link();
    state_storage_object::link();
    Registry::global()
}

/// A unique prefix per storage the kit opens, named after the contract's directory.
fn prefix(root: &Path) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = root
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("kit-{}-{name}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Object storage as the kits see it: its objects, plus incomplete uploads on S3.
#[derive(Debug)]
struct UnderTest {
    storage: ObjectCheckpointStorage,
    /// Port and bucket of the S3 server, to list incomplete uploads.
    server: Option<(u16, String)>,
    prefix: String,
}

impl CheckpointStorage for UnderTest {
    fn location(&self) -> String {
        CheckpointStorage::location(&self.storage)
    }
    fn stream_factory(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<Arc<dyn CheckpointStreamFactory>> {
        CheckpointStorage::stream_factory(&self.storage, checkpoint_id)
    }
    fn commit_checkpoint(&self, metadata: &CheckpointMetadata) -> Result<()> {
        CheckpointStorage::commit_checkpoint(&self.storage, metadata)
    }
    fn completed_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        self.storage.completed_checkpoints()
    }
    fn load_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<CheckpointMetadata> {
        self.storage.load_checkpoint(checkpoint_id)
    }
    fn discard_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<()> {
        self.storage.discard_checkpoint(checkpoint_id)
    }
}

impl StorageUnderTest for UnderTest {
    fn stored(&self, checkpoint_id: Option<u64>) -> Result<Vec<String>> {
        let mut stored = self.storage.stored_objects(checkpoint_id)?;
        if let Some((port, bucket)) = &self.server {
            let under = match checkpoint_id {
                Some(id) => format!("{}/chk-{id}/", self.prefix),
                None => format!("{}/", self.prefix),
            };
            let (status, body) = support::http(*port, "GET", &format!("/{bucket}?uploads"), b"");
            assert_eq!(status, 200, "listing uploads: {body}");
            stored.extend(
                body.split("<Key>")
                    .skip(1)
                    .filter_map(|rest| rest.split("</Key>").next())
                    .filter(|key| key.starts_with(&under))
                    .map(|key| format!("incomplete upload {key}")),
            );
        }
        Ok(stored)
    }
}

/// Opens storage under a fresh prefix of `base` (`s3://bucket`, `memory://name`).
#[derive(Debug)]
struct Provider {
    base: String,
    options: ObjectStoreOptions,
    server: Option<(u16, String)>,
}

impl StorageProvider for Provider {
    fn open(
        &self,
        root: &Path,
        file_state_threshold: Option<usize>,
    ) -> Result<Arc<dyn StorageUnderTest>> {
        let prefix = prefix(root);
        let storage = ObjectCheckpointStorage::open(
            &format!("{}/{prefix}", self.base),
            self.options.clone(),
        )?;
        Ok(Arc::new(UnderTest {
            storage: match file_state_threshold {
                Some(bytes) => storage.with_file_state_threshold(bytes),
                None => storage,
            },
            server: self.server.clone(),
            prefix,
        }))
    }
}

fn s3(server: &MotoServer) -> Arc<Provider> {
    let bucket = server.fresh_bucket("kit");
    Arc::new(Provider {
        base: format!("s3://{bucket}"),
        options: support::options(&server.endpoint()),
        server: Some((server.port(), bucket)),
    })
}

fn memory(name: &str) -> Arc<Provider> {
    Arc::new(Provider {
        base: format!("memory://{name}"),
        options: ObjectStoreOptions::default(),
        server: None,
    })
}

/// `heap-incremental` keeps no task-local copy.
const HEAP_INCREMENTAL_CAPABILITIES: KeyedBackendCapabilities = KeyedBackendCapabilities {
    rescaling: true,
    local_recovery: false,
};

/// `backend` with its default strategy, uncompressed, promising [`CAPABILITIES`].
fn target(backend: &str) -> KeyedTarget<'static> {
    KeyedTarget::new(registry(), backend).capabilities(CAPABILITIES)
}

/// The keyed contracts that involve storage, on `target`.
fn keyed_contracts(target: &KeyedTarget<'_>) {
    keyed::round_trip(target);
    keyed::empty_state(target);
    keyed::huge_values(target);
    keyed::snapshot_is_consistent(target);
    keyed::savepoints_are_canonical(target);
    keyed::rescale(target, 1, 3);
    keyed::rescale(target, 3, 2);
    keyed::rescale_chain(target);
    keyed::cancelled_snapshot_leaves_nothing(target);
    keyed::storage_faults_are_contained(target);
    keyed::local_recovery(target);
}

fn on_s3(test: &str, contracts: impl FnOnce()) {
    let Some(server) = MotoServer::start(test) else {
        return;
    };
    with_storage(s3(&server), contracts);
}

#[test]
fn heap_on_s3() {
    on_s3("heap_on_s3", || keyed_contracts(&target("heap")));
}

#[test]
fn heap_incremental_on_s3() {
    on_s3("heap_incremental_on_s3", || {
        keyed_contracts(
            &target("heap")
                .strategy("heap-incremental")
                .capabilities(HEAP_INCREMENTAL_CAPABILITIES),
        )
    });
}

#[test]
fn rocksdb_full_on_s3() {
    on_s3("rocksdb_full_on_s3", || keyed_contracts(&target("rocksdb")));
}

#[test]
fn rocksdb_incremental_on_s3() {
    on_s3("rocksdb_incremental_on_s3", || {
        keyed_contracts(&target("rocksdb").strategy("rocksdb-incremental"))
    });
}

#[test]
fn heap_on_the_in_memory_store() {
    with_storage(memory("heap"), || keyed_contracts(&target("heap")));
}

#[test]
fn rocksdb_incremental_on_the_in_memory_store() {
    with_storage(memory("rocksdb-incremental"), || {
        keyed_contracts(&target("rocksdb").strategy("rocksdb-incremental"))
    });
}

fn operator_contracts() {
    let registry = registry();
    operator::round_trip("operator", registry);
    operator::empty_state("operator", registry);
    operator::rescale("operator", registry, 1, 4);
    operator::rescale("operator", registry, 3, 2);
    operator::snapshot_is_isolated("operator", registry);
    operator::cancelled_snapshot_leaves_nothing("operator", registry);
    operator::storage_faults_are_contained("operator", registry);
}

#[test]
fn operator_on_s3() {
    on_s3("operator_on_s3", operator_contracts);
}

#[test]
fn operator_on_the_in_memory_store() {
    with_storage(memory("operator"), operator_contracts);
}

fn params(range: KeyGroupRange, dir: &Path, name: &str) -> KeyedBackendParams {
    let working_dir = dir.join(name);
    std::fs::create_dir_all(&working_dir).unwrap();
    KeyedBackendParams {
        strategy: Some("rocksdb-incremental".into()),
        working_dir: Some(working_dir),
        ..KeyedBackendParams::new(MaxParallelism::of(128), range)
    }
}

fn fill(backend: &mut dyn KeyedStateBackend, keys: std::ops::Range<u32>, round: u32) {
    for key in keys {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        let value = format!("value {key} of round {round}");
        backend.put_value("count", b"", value.as_bytes()).unwrap();
    }
}

#[track_caller]
fn check(
    backend: &mut dyn KeyedStateBackend,
    keys: impl Iterator<Item = u32>,
    round: impl Fn(u32) -> u32,
) {
    for key in keys {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        let value = backend.value("count", b"").unwrap();
        let expected = format!("value {key} of round {}", round(key));
        assert_eq!(value.as_deref(), Some(expected.as_bytes()), "key {key}");
    }
}

/// Checkpoint `id` of `live` as a coordinator takes it: the snapshot, its incremental
/// handle registered, the metadata committed, the backend notified; returns the handle.
fn checkpoint(
    live: &mut dyn KeyedStateBackend,
    storage: &ObjectCheckpointStorage,
    shared: &SharedStateRegistry,
    id: u64,
) -> Arc<dyn KeyedStateHandle> {
    let result = live
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(id), id),
            Arc::new(storage.stream_factory(CheckpointId::new(id))),
        )
        .unwrap()
        .run()
        .unwrap();
    let handle = result.job_manager_owned().unwrap().clone();
    let incremental = handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .expect("an incremental checkpoint");
    let retained = shared.register(incremental).unwrap();
    let mut metadata = CheckpointMetadata::new(
        CheckpointId::new(id),
        id,
        CheckpointType::Checkpoint,
        MaxParallelism::of(128),
    );
    metadata.instances.push(InstanceSnapshot {
        index: 0,
        keyed: vec![Arc::new(shared.resolve(&retained).unwrap())],
        operator: Vec::new(),
    });
    storage.commit_checkpoint(&metadata).unwrap();
    live.notify_checkpoint_complete(CheckpointId::new(id))
        .unwrap();
    handle
}

#[test]
fn incremental_checkpoints_commit_restore_rescale_and_discard_on_s3() {
    let Some(server) = MotoServer::start("incremental_checkpoints_on_s3") else {
        return;
    };
    let registry = registry();
    let bucket = server.fresh_bucket("coordinator");
    let storage = support::storage(&server.endpoint(), &bucket, "job").with_file_state_threshold(0);
    let dir = tempfile::tempdir().unwrap();
    let full = KeyGroupRange::new(0, 127).unwrap();
    let factory = registry.keyed_backend("rocksdb").unwrap();
    let mut live = factory
        .create(params(full, dir.path(), "live"), registry)
        .unwrap();
    live.register_state(&StateMetaInfo::value("count", "bytes", "bytes"))
        .unwrap();
    let shared = SharedStateRegistry::default();

    fill(&mut *live, 0..5000, 1);
    checkpoint(&mut *live, &storage, &shared, 1);
    let after_first = storage.stored_objects(None).unwrap();

    fill(&mut *live, 0..50, 2);
    let second_handle = checkpoint(&mut *live, &storage, &shared, 2);
    let reused = second_handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .unwrap()
        .shared_state
        .iter()
        .filter(|file| file.handle.is::<state_api::PlaceholderStreamStateHandle>())
        .count();
    assert!(reused > 0, "checkpoint 2 uploaded every file again");
    live.close().unwrap();

    // Checkpoint 2 subsumes 1: its own objects and the shared ones only it used go.
    shared.release(CheckpointId::new(1)).unwrap();
    storage.discard_checkpoint(CheckpointId::new(1)).unwrap();
    assert_eq!(storage.completed_checkpoints().unwrap(), [2]);
    let stored = storage.stored_objects(None).unwrap();
    assert!(
        stored.iter().all(|name| !name.starts_with("chk-1/")),
        "{stored:?}"
    );
    assert!(
        stored.iter().any(|name| after_first.contains(name)),
        "checkpoint 2 kept none of the shared files of checkpoint 1"
    );

    // A restore reads only what the storage holds: metadata and deserialized handles.
    let metadata = storage.load_checkpoint(CheckpointId::new(2)).unwrap();
    let handles = metadata.keyed_handles();
    let round = |key: u32| if key < 50 { 2 } else { 1 };
    let mut restored = factory
        .restore(params(full, dir.path(), "restored"), registry, &handles)
        .unwrap();
    check(&mut *restored, (0..5000).step_by(7).chain(0..50), round);
    restored.close().unwrap();
    for index in 0..2 {
        let range = MaxParallelism::of(128).range_for(index, 2).unwrap();
        let mut half = factory
            .restore(
                params(range, dir.path(), &format!("half-{index}")),
                registry,
                &handles,
            )
            .unwrap();
        let owned = (0..5000u32)
            .filter(|key| range.contains(MaxParallelism::of(128).key_group_of(&key.to_be_bytes())));
        check(&mut *half, owned, round);
        half.close().unwrap();
    }

    shared.release(CheckpointId::new(2)).unwrap();
    storage.discard_checkpoint(CheckpointId::new(2)).unwrap();
    server.assert_clean(&bucket, "every checkpoint subsumed and discarded");
}

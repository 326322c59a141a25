//! Real checkpoint directories for the inspector's tests: a heap backend (and, with the
//! `operator` feature, an operator backend) snapshotted into a `LocalCheckpointStorage`
//! and committed, as a job would leave them.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use snapstate::api::CheckpointId;
use snapstate::api::MaxParallelism;
use snapstate::api::SnapshotRequest;
use snapstate::api::{KeyedStateHandle, StateMetaInfo, StreamStateHandle};
use snapstate::format::KeyGroupsStateHandle;
use snapstate::local_storage::FileStateHandle;
use snapstate::{
    CheckpointMetadata, CheckpointType, InstanceSnapshot, KeyGroupRange, KeyedBackendParams,
    LocalCheckpointStorage,
};

/// Max parallelism of every fixture.
pub const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);

/// The id of the checkpoint every fixture commits.
pub const CHECKPOINT_ID: u64 = 3;

/// Keys written; each has one value, one list (two elements) and two map entries: four
/// canonical entries.
pub const KEYS: u64 = 300;

/// Canonical entries of the keyed snapshot.
pub const KEYED_ENTRIES: u64 = KEYS * 4;

/// Elements and broadcast entries of the operator snapshot.
pub const OPERATOR_ENTRIES: u64 = 5 + 3;

/// A committed checkpoint in a temporary storage root.
pub struct Fixture {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The keyed handle of instance 0.
    pub keyed: KeyGroupsStateHandle,
    /// The file holding the keyed stream.
    pub keyed_file: PathBuf,
    /// The file holding the operator stream, with the `operator` feature.
    pub operator_file: Option<PathBuf>,
}

impl Fixture {
    /// The storage root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

fn file_of(stream: &dyn StreamStateHandle) -> PathBuf {
    stream
        .downcast_ref::<FileStateHandle>()
        .expect("the file state threshold is 0: every stream is a file")
        .path()
        .to_path_buf()
}

/// The metadata of checkpoint `checkpoint_id`, taken at `timestamp`, of one instance that
/// holds the keyed handle `keyed` and no operator state.
pub fn one_instance(
    checkpoint_id: CheckpointId,
    timestamp: u64,
    keyed: Arc<dyn KeyedStateHandle>,
) -> CheckpointMetadata {
    let mut metadata = CheckpointMetadata::new(
        checkpoint_id,
        timestamp,
        CheckpointType::Checkpoint,
        MAX_PARALLELISM,
    );
    metadata.instances.push(InstanceSnapshot {
        index: 0,
        keyed: vec![keyed],
        operator: vec![],
    });
    metadata
}

/// Parameters of a backend of all 128 key groups.
pub fn heap_params() -> KeyedBackendParams {
    KeyedBackendParams::new(
        MAX_PARALLELISM,
        KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1).unwrap(),
    )
}

/// A heap backend created with `params`, with value state `count` registered.
pub fn heap_backend(params: KeyedBackendParams) -> Box<dyn snapstate::api::KeyedStateBackend> {
    let registry = snapstate::registry();
    let mut backend = registry
        .keyed_backend("heap")
        .unwrap()
        .create(params, registry)
        .unwrap();
    backend
        .register_state(&StateMetaInfo::value("count", "void", "u64-be"))
        .unwrap();
    backend
}

/// The time to live of the fixture's map state `seen`: a day.
pub fn seen_ttl() -> snapstate::api::StateTtlConfig {
    snapstate::api::StateTtlConfig::new(86_400_000).unwrap()
}

/// A heap checkpoint of all 128 key groups written with `compression`, and an operator
/// snapshot when the `operator` feature is on, committed as checkpoint [`CHECKPOINT_ID`].
pub fn checkpoint(compression: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalCheckpointStorage::new(dir.path())
        .unwrap()
        .with_file_state_threshold(0);

    let mut params = heap_params();
    params.compression = compression.to_owned();
    params.key_serializer = "u64-be".to_owned();
    let mut backend = heap_backend(params);
    backend
        .register_state(&StateMetaInfo::list("pages", "void", "string"))
        .unwrap();
    backend
        .register_state(
            &StateMetaInfo::map("seen", "void", "string", "u64-be").with_ttl(seen_ttl()),
        )
        .unwrap();
    for key in 0..KEYS {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend.put_value("count", b"", &key.to_be_bytes()).unwrap();
        backend
            .update_list("pages", b"", &[b"home".to_vec(), b"cart".to_vec()])
            .unwrap();
        for page in [&b"home"[..], b"cart"] {
            backend
                .put_map_value("seen", b"", page, &key.to_be_bytes())
                .unwrap();
        }
    }
    let factory = Arc::new(
        storage
            .stream_factory(CheckpointId::new(CHECKPOINT_ID))
            .unwrap(),
    );
    let result = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(CHECKPOINT_ID), 1_700_000_000_000),
            factory.clone(),
        )
        .unwrap()
        .run()
        .unwrap();
    let keyed = result.job_manager_owned().unwrap().clone();
    let keyed_handle = keyed
        .downcast_ref::<KeyGroupsStateHandle>()
        .expect("the heap backend writes key-groups handles")
        .clone();
    let keyed_file = file_of(&**keyed_handle.delegate());

    let mut metadata = CheckpointMetadata::new(
        CheckpointId::new(CHECKPOINT_ID),
        1_700_000_000_000,
        CheckpointType::Checkpoint,
        MAX_PARALLELISM,
    );
    metadata.properties.insert("backend".into(), "heap".into());
    metadata
        .properties
        .insert("compression".into(), compression.into());
    let mut instance = InstanceSnapshot {
        index: 0,
        keyed: vec![keyed],
        operator: vec![],
    };
    let operator_file = operator_snapshot(factory, &mut instance);
    metadata.instances.push(instance);
    storage.commit_checkpoint(&metadata).unwrap();
    Fixture {
        dir,
        keyed: keyed_handle,
        keyed_file,
        operator_file,
    }
}

#[cfg(feature = "operator")]
fn operator_snapshot(
    factory: Arc<snapstate::local_storage::LocalDirectoryStreamFactory>,
    instance: &mut InstanceSnapshot,
) -> Option<PathBuf> {
    use snapstate::api::OperatorStateMetaInfo;
    let registry = snapstate::registry();
    let mut backend = registry
        .operator_backend("operator")
        .unwrap()
        .create(snapstate::OperatorBackendParams::new(0, 1), registry)
        .unwrap();
    backend
        .register_state(&OperatorStateMetaInfo::split_list("offsets", "u64-be"))
        .unwrap();
    backend
        .register_state(&OperatorStateMetaInfo::broadcast(
            "rules", "string", "bytes",
        ))
        .unwrap();
    for partition in 0..5u64 {
        backend
            .append_to_list("offsets", &(partition * 100).to_be_bytes())
            .unwrap();
    }
    for rule in ["a", "b", "c"] {
        backend
            .put_broadcast_value("rules", rule.as_bytes(), b"on")
            .unwrap();
    }
    let result = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(CHECKPOINT_ID), 0),
            factory,
        )
        .unwrap()
        .run()
        .unwrap();
    let handle = result.job_manager_owned().unwrap().clone();
    let file = file_of(&**handle.delegate());
    instance.operator.push(handle);
    Some(file)
}

#[cfg(not(feature = "operator"))]
fn operator_snapshot(
    _factory: Arc<snapstate::local_storage::LocalDirectoryStreamFactory>,
    _instance: &mut InstanceSnapshot,
) -> Option<PathBuf> {
    None
}

/// Flips one bit of byte `pos` of `path`.
pub fn flip_byte(path: &Path, pos: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[pos as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Where key group `key_group`'s section is in the keyed file: offset and length.
pub fn section(fixture: &Fixture, key_group: u32) -> (u64, u64) {
    let key_group = snapstate::api::KeyGroup::new(key_group).unwrap();
    let offset = fixture.keyed.offsets().offset(key_group).unwrap();
    let end = fixture
        .keyed
        .section_end(key_group)
        .expect("the heap strategy records where the last section ends");
    (offset, end - offset)
}

/// The key group with the longest section.
pub fn largest_key_group(fixture: &Fixture) -> u32 {
    (0..MAX_PARALLELISM.get())
        .max_by_key(|&kg| section(fixture, kg).1)
        .unwrap()
}

//! `snapstate::inspect` on a chain of real RocksDB incremental checkpoints: the second
//! refers to the first one's sst files by placeholder. Verification passes on the intact
//! chain and names the damaged sst file otherwise.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use snapstate::api::CheckpointId;
use snapstate::api::SnapshotRequest;
use snapstate::api::{IncrementalRemoteKeyedStateHandle, KeyedStateBackend, StateMetaInfo};
use snapstate::inspect::{self, HandleKind, ProblemKind};
use snapstate::local_storage::FileStateHandle;
use snapstate::{KeyGroupRange, KeyedBackendParams, LocalCheckpointStorage};
use support::MAX_PARALLELISM;

fn checkpoint(
    backend: &mut dyn KeyedStateBackend,
    storage: &LocalCheckpointStorage,
    checkpoint_id: CheckpointId,
) -> IncrementalRemoteKeyedStateHandle {
    let factory = Arc::new(storage.stream_factory(checkpoint_id).unwrap());
    let result = backend
        .snapshot(&SnapshotRequest::checkpoint(checkpoint_id, 0), factory)
        .unwrap()
        .run()
        .unwrap();
    let handle = result.job_manager_owned().unwrap().clone();
    let metadata = support::one_instance(checkpoint_id, 0, handle.clone());
    storage.commit_checkpoint(&metadata).unwrap();
    backend.notify_checkpoint_complete(checkpoint_id).unwrap();
    handle
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .expect("an incremental checkpoint")
        .clone()
}

#[test]
fn an_incremental_chain_verifies_and_a_damaged_sst_file_is_named() {
    let registry = snapstate::registry();
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalCheckpointStorage::new(dir.path().join("checkpoints"))
        .unwrap()
        .with_file_state_threshold(0);
    let params = KeyedBackendParams {
        working_dir: Some(dir.path().join("work")),
        strategy: Some("rocksdb-incremental".into()),
        ..KeyedBackendParams::new(
            MAX_PARALLELISM,
            KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1).unwrap(),
        )
    };
    let mut backend = registry
        .keyed_backend("rocksdb")
        .unwrap()
        .create(params, registry)
        .unwrap();
    backend
        .register_state(&StateMetaInfo::value("count", "void", "u64-be"))
        .unwrap();
    let mut handles = Vec::new();
    for (checkpoint_id, keys) in [(1u64, 0..200u64), (2, 200..300)] {
        for key in keys {
            backend.set_current_key(&key.to_be_bytes()).unwrap();
            backend.put_value("count", b"", &key.to_be_bytes()).unwrap();
        }
        handles.push(checkpoint(
            &mut *backend,
            &storage,
            CheckpointId::new(checkpoint_id),
        ));
    }
    backend.close().unwrap();

    let root = storage.root();
    let report = inspect::verify(root, None, registry).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.checkpoints.len(), 2);
    for checkpoint in &report.checkpoints {
        let handle = &checkpoint.handles[0];
        assert_eq!(handle.summary.kind, HandleKind::IncrementalRemote);
        assert!(handle.files.iter().all(|f| f.ok), "{handle:?}");
    }
    let second = &report.checkpoints[1].handles[0].files;
    assert!(
        second.iter().any(|f| f.bytes_read.is_none()),
        "checkpoint 2 refers to checkpoint 1's sst files by placeholder: {second:?}"
    );

    let sst = handles[0]
        .shared_state
        .iter()
        .find_map(|f| f.handle.downcast_ref::<FileStateHandle>())
        .expect("checkpoint 1 uploaded an sst file");
    let mut bytes = std::fs::read(sst.path()).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(sst.path(), bytes).unwrap();
    let report = inspect::verify(root, Some(1), registry).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(problem.kind, ProblemKind::Corrupted, "{problem}");
    assert!(
        problem
            .file
            .as_deref()
            .is_some_and(|f| f.contains(&*sst.path().to_string_lossy())),
        "{problem:?}"
    );
}

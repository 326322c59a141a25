//! Incremental RocksDB checkpoints with a coordinator's `SharedStateRegistry`: what a
//! second checkpoint uploads, how notifications move the base, what pruning deletes, how
//! restore continues the chain, and how damaged files are reported.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use snapstate_tests::faults::{Fault, FaultyStreamFactory, is_injected};
use state_api::CheckpointId;
use state_api::MaxParallelism;
use state_api::SnapshotRequest;
use state_api::{
    CheckpointListener, Error, IncrementalRemoteKeyedStateHandle, KeyGroupRange,
    KeyedBackendParams, KeyedStateBackend, KeyedStateHandle, PlaceholderStreamStateHandle,
    Registry, StateMetaInfo, StateObject, Timer,
};
use state_coordinator::SharedStateRegistry;
use state_rocksdb::RocksDBKeyedStateBackend;
use state_storage_local::{FileStateHandle, LocalCheckpointStorage};
use tempfile::TempDir;

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);
const KEYS: u64 = 20_000;

fn registry() -> &'static Registry {
    state_rocksdb::link();
    Registry::global()
}

struct Setup {
    dir: TempDir,
    storage: LocalCheckpointStorage,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalCheckpointStorage::new(dir.path().join("checkpoints"))
            .unwrap()
            .with_file_state_threshold(0);
        Setup { dir, storage }
    }

    fn params(&self, range: KeyGroupRange) -> KeyedBackendParams {
        KeyedBackendParams {
            working_dir: Some(self.dir.path().join("work")),
            strategy: Some("rocksdb-incremental".into()),
            ..KeyedBackendParams::new(MAX_PARALLELISM, range)
        }
    }

    fn backend(&self) -> RocksDBKeyedStateBackend {
        let mut backend = RocksDBKeyedStateBackend::new(self.params(full()), registry()).unwrap();
        backend
            .register_state(&StateMetaInfo::value("count", "void", "u64-be"))
            .unwrap();
        backend
    }

    fn checkpoint(
        &self,
        backend: &mut RocksDBKeyedStateBackend,
        checkpoint_id: CheckpointId,
    ) -> IncrementalRemoteKeyedStateHandle {
        let factory = Arc::new(self.storage.stream_factory(checkpoint_id).unwrap());
        let task = backend
            .snapshot(&SnapshotRequest::checkpoint(checkpoint_id, 0), factory)
            .unwrap();
        let result = task.run().unwrap();
        let handle = result.job_manager_owned().unwrap();
        handle
            .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
            .expect("an incremental checkpoint")
            .clone()
    }

    fn files(&self) -> Vec<PathBuf> {
        walk(self.storage.root())
    }

    /// A backend of every key group restored from `handle`.
    fn restored(&self, handle: impl KeyedStateHandle + 'static) -> RocksDBKeyedStateBackend {
        RocksDBKeyedStateBackend::restore(self.params(full()), registry(), &[Arc::new(handle)])
            .unwrap()
    }

    /// A backend with 64 KiB memtables, holding round 0 of every key: many sst files.
    fn small_memtable_backend(&self) -> RocksDBKeyedStateBackend {
        let mut params = self.params(full());
        params
            .options
            .insert("rocksdb.write-buffer-size".into(), "65536".into());
        let mut backend = RocksDBKeyedStateBackend::new(params, registry()).unwrap();
        backend
            .register_state(&StateMetaInfo::value("count", "void", "u64-be"))
            .unwrap();
        write(&mut backend, 0..KEYS, 0);
        backend
    }
}

/// The snapshot directories (`chk-*`) in a backend's instance directory.
fn snapshot_directories(instance: &Path) -> Vec<std::ffi::OsString> {
    (std::fs::read_dir(instance).unwrap().flatten())
        .map(|entry| entry.file_name())
        .filter(|name| name.to_string_lossy().starts_with("chk-"))
        .collect()
}

fn full() -> KeyGroupRange {
    KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1).unwrap()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files.sort();
    files
}

fn write(backend: &mut dyn KeyedStateBackend, keys: impl Iterator<Item = u64>, round: u64) {
    for i in keys {
        backend
            .set_current_key(format!("key-{i}").as_bytes())
            .unwrap();
        let mut value = (i * 10 + round).to_be_bytes().to_vec();
        value.resize(100, b'x');
        backend.put_value("count", b"", &value).unwrap();
    }
}

fn check(backend: &mut dyn KeyedStateBackend, round_of: impl Fn(u64) -> u64) {
    for i in 0..KEYS {
        backend
            .set_current_key(format!("key-{i}").as_bytes())
            .unwrap();
        let value = backend.value("count", b"").unwrap().unwrap();
        assert_eq!(value[..8], (i * 10 + round_of(i)).to_be_bytes(), "key-{i}");
    }
}

/// Takes checkpoint 1 of `backend` into the storage of `setup` misbehaving as `fault`
/// says: a failure must be the injected one, a success must have seen no fault (and is
/// discarded). True if the checkpoint failed.
fn faulted_checkpoint(
    setup: &Setup,
    backend: &mut RocksDBKeyedStateBackend,
    fault: Fault,
    case: &str,
) -> bool {
    let factory = FaultyStreamFactory::new(
        Box::new(setup.storage.stream_factory(CheckpointId::new(1)).unwrap()),
        fault,
    );
    let probe = factory.probe();
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            Arc::new(factory),
        )
        .unwrap();
    match task.run() {
        Err(err) => {
            assert!(
                probe.fired() && is_injected(&err),
                "{case}, {fault:?}: {err}"
            );
            true
        }
        Ok(result) => {
            assert!(!probe.fired(), "{case}, {fault:?}: succeeded");
            result.discard().unwrap();
            false
        }
    }
}

fn placeholders(handle: &IncrementalRemoteKeyedStateHandle) -> Vec<String> {
    handle
        .shared_state
        .iter()
        .filter(|f| f.handle.is::<PlaceholderStreamStateHandle>())
        .map(|f| f.local_path.clone())
        .collect()
}

fn uploaded_bytes(handle: &IncrementalRemoteKeyedStateHandle) -> u64 {
    handle
        .shared_state
        .iter()
        .chain(&handle.private_state)
        .filter(|f| !f.handle.is::<PlaceholderStreamStateHandle>())
        .map(|f| f.handle.state_size())
        .sum::<u64>()
        + handle.meta_state.state_size()
}

/// 1% of the keys.
fn updated(i: u64) -> bool {
    i % 100 == 7
}

#[test]
fn a_small_update_uploads_only_new_files_and_pruning_keeps_what_is_referenced() {
    let setup = Setup::new();
    let shared = SharedStateRegistry::default();
    let mut backend = setup.backend();
    write(&mut backend, 0..KEYS, 0);
    let first = setup.checkpoint(&mut backend, CheckpointId::new(1));
    assert!(placeholders(&first).is_empty(), "nothing to refer to yet");
    let retained_1 = shared.register(&first).unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(1))
        .unwrap();

    write(&mut backend, (0..KEYS).filter(|&i| updated(i)), 1);
    let second = setup.checkpoint(&mut backend, CheckpointId::new(2));
    let first_files: Vec<String> = first
        .shared_state
        .iter()
        .map(|f| f.local_path.clone())
        .collect();
    assert_eq!(
        placeholders(&second),
        first_files,
        "checkpoint 1's sst files by placeholder"
    );
    let (bytes_1, bytes_2) = (uploaded_bytes(&first), uploaded_bytes(&second));
    println!("checkpoint 1 uploaded {bytes_1} bytes, checkpoint 2 (1% updated) {bytes_2} bytes");
    assert!(
        bytes_2 * 5 < bytes_1,
        "checkpoint 2 uploaded {bytes_2} bytes after a 1% update, checkpoint 1 {bytes_1}"
    );
    let retained_2 = shared.register(&second).unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(2))
        .unwrap();

    // Checkpoint 2 subsumes checkpoint 1: its own files go, the shared ones stay.
    let before = setup.files();
    retained_1.discard().unwrap();
    assert_eq!(
        shared.release(CheckpointId::new(1)).unwrap(),
        0,
        "checkpoint 2 refers to every sst file of 1"
    );
    let after = setup.files();
    assert!(
        after.len() < before.len(),
        "checkpoint 1's private files are gone"
    );
    for file in &first.shared_state {
        let path = file
            .handle
            .downcast_ref::<FileStateHandle>()
            .unwrap()
            .path();
        assert!(
            path.exists(),
            "{} was deleted while checkpoint 2 needs it",
            path.display()
        );
    }

    let mut restored = setup.restored(shared.resolve(&retained_2).unwrap());
    check(&mut restored, |i| u64::from(updated(i)));
    restored.close().unwrap();

    retained_2.discard().unwrap();
    shared.release(CheckpointId::new(2)).unwrap();
    backend.close().unwrap();
    assert!(setup.files().is_empty(), "orphans: {:?}", setup.files());
    assert!(shared.keys().is_empty());
}

#[test]
fn an_aborted_checkpoint_never_becomes_the_base() {
    let setup = Setup::new();
    let shared = SharedStateRegistry::default();
    let mut backend = setup.backend();
    write(&mut backend, 0..KEYS, 0);
    shared
        .register(&setup.checkpoint(&mut backend, CheckpointId::new(1)))
        .unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(1))
        .unwrap();

    write(&mut backend, 0..100, 1);
    let aborted = setup.checkpoint(&mut backend, CheckpointId::new(2));
    backend
        .notify_checkpoint_aborted(CheckpointId::new(2))
        .unwrap();
    aborted.discard().unwrap();
    // A contradicting late notification must not revive it: its files are gone.
    backend
        .notify_checkpoint_complete(CheckpointId::new(2))
        .unwrap();

    write(&mut backend, 100..200, 1);
    let third = setup.checkpoint(&mut backend, CheckpointId::new(3));
    // Placeholders may only name checkpoint 1's files: registering proves it.
    let retained = shared.register(&third).unwrap();
    let resolved = shared.resolve(&retained).unwrap();
    let mut restored = RocksDBKeyedStateBackend::restore(
        setup.params(full()),
        registry(),
        &[Arc::new(resolved) as Arc<dyn KeyedStateHandle>],
    )
    .unwrap();
    check(&mut restored, |i| u64::from(i < 200));
}

#[test]
fn restore_without_rescaling_continues_the_chain() {
    let setup = Setup::new();
    let shared = SharedStateRegistry::default();
    let mut backend = setup.backend();
    write(&mut backend, 0..KEYS, 0);
    let first = setup.checkpoint(&mut backend, CheckpointId::new(1));
    let retained = shared.register(&first).unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(1))
        .unwrap();
    let original_id = backend.snapshot_source().backend_identifier();
    backend.close().unwrap();

    let resolved = shared.resolve(&retained).unwrap();
    let mut restored = RocksDBKeyedStateBackend::restore(
        setup.params(full()),
        registry(),
        &[Arc::new(resolved) as Arc<dyn KeyedStateHandle>],
    )
    .unwrap();
    let source = restored.snapshot_source().clone();
    assert_ne!(
        source.backend_identifier(),
        original_id,
        "a restored instance uploads under an identifier of its own"
    );
    assert_eq!(source.last_completed_checkpoint(), Some(1));
    write(&mut restored, (0..KEYS).filter(|&i| updated(i)), 1);
    let second = setup.checkpoint(&mut restored, CheckpointId::new(2));
    let first_files: Vec<String> = first
        .shared_state
        .iter()
        .map(|f| f.local_path.clone())
        .collect();
    assert_eq!(placeholders(&second), first_files);
    shared.register(&second).unwrap();
}

#[test]
fn damaged_or_missing_files_are_reported_by_name() {
    let setup = Setup::new();
    let mut backend = setup.backend();
    write(&mut backend, 0..KEYS, 0);
    let handle = setup.checkpoint(&mut backend, CheckpointId::new(1));
    let restore = |handle: &IncrementalRemoteKeyedStateHandle| {
        RocksDBKeyedStateBackend::restore(
            setup.params(full()),
            registry(),
            &[Arc::new(handle.clone()) as Arc<dyn KeyedStateHandle>],
        )
        .map(|_| ())
    };
    let path_of = |file: &state_api::HandleAndLocalPath| {
        file.handle
            .downcast_ref::<FileStateHandle>()
            .unwrap()
            .path()
            .to_path_buf()
    };
    let sst = path_of(&handle.shared_state[0]);
    let original = std::fs::read(&sst).unwrap();

    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x10;
    std::fs::write(&sst, &flipped).unwrap();
    let err = restore(&handle).unwrap_err();
    assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
    assert!(
        err.to_string().contains(&handle.shared_state[0].local_path),
        "{err}"
    );

    std::fs::write(&sst, &original[..original.len() - 1]).unwrap();
    let err = restore(&handle).unwrap_err();
    assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");

    std::fs::write(&sst, &original).unwrap();
    restore(&handle).unwrap();

    let private = handle
        .private_state
        .iter()
        .find(|f| f.local_path.starts_with("MANIFEST"))
        .map(path_of)
        .unwrap();
    let manifest = std::fs::read(&private).unwrap();
    std::fs::remove_file(&private).unwrap();
    let err = restore(&handle).unwrap_err();
    assert!(matches!(err.root(), Error::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains(&private.display().to_string()),
        "{err}"
    );
    // Back in place: files are fetched by several threads, so with two faults either
    // could be reported first.
    std::fs::write(&private, manifest).unwrap();

    let mut unresolved = handle.clone();
    unresolved.shared_state[0].handle = Arc::new(PlaceholderStreamStateHandle::new("x/y.sst", 1));
    let err = restore(&unresolved).unwrap_err();
    assert!(matches!(err.root(), Error::Unsupported(_)), "{err}");
}

#[test]
fn snapshot_directories_are_removed_in_every_outcome() {
    let setup = Setup::new();
    let mut backend = setup.backend();
    write(&mut backend, 0..1000, 0);
    let instance = backend.snapshot_source().instance_dir().to_path_buf();
    let snapshot_dirs = || snapshot_directories(&instance).len();
    setup.checkpoint(&mut backend, CheckpointId::new(1));
    assert_eq!(snapshot_dirs(), 0, "after a completed checkpoint");

    let factory = Arc::new(setup.storage.stream_factory(CheckpointId::new(2)).unwrap());
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(2), 0),
            factory,
        )
        .unwrap();
    assert_eq!(
        snapshot_dirs(),
        0,
        "the synchronous part only seals memtables; the asynchronous part makes the \
         RocksDB checkpoint"
    );
    assert!(task.cancel());
    assert!(task.run().unwrap_err().is_cancelled());
    assert_eq!(snapshot_dirs(), 0, "after a cancelled checkpoint");
    assert!(
        walk(&setup.storage.checkpoint_dir(CheckpointId::new(2))).is_empty(),
        "a cancelled checkpoint left files"
    );
}

/// The synchronous part only seals the memtables, so writes made after it are never in
/// the checkpoint. When RocksDB flushes such writes before the asynchronous part captured
/// the files (small write buffers filled by many writes), that checkpoint fails, naming
/// it, and leaves nothing; the next one flushes in its synchronous part and holds exactly
/// its cut, and the one after seals again.
#[test]
fn writes_flushed_before_the_capture_fail_that_checkpoint_and_the_next_is_exact() {
    let setup = Setup::new();
    let mut backend = setup.small_memtable_backend();
    let instance = backend.snapshot_source().instance_dir().to_path_buf();
    let snapshot_directories = || snapshot_directories(&instance);
    let start = |backend: &mut RocksDBKeyedStateBackend, id: u64| {
        let id = CheckpointId::new(id);
        let factory = Arc::new(setup.storage.stream_factory(id).unwrap());
        let request = SnapshotRequest::checkpoint(id, 0);
        backend.snapshot(&request, factory).unwrap()
    };

    // 2 MB of writes after the cut of checkpoint 1: dozens of 64 KiB memtables, flushed
    // while the writes go on.
    let first = start(&mut backend, 1);
    write(&mut backend, 0..KEYS, 1);
    let err = first.run().unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("checkpoint 1") && message.contains("after the synchronous part"),
        "{message}"
    );
    assert!(setup.files().is_empty(), "left {:?}", setup.files());
    assert!(
        snapshot_directories().is_empty(),
        "{:?}",
        snapshot_directories()
    );

    let second = start(&mut backend, 2);
    write(&mut backend, 0..KEYS, 2);
    let second = second.run().unwrap().job_manager_owned().unwrap().clone();
    let mut restored =
        RocksDBKeyedStateBackend::restore(setup.params(full()), registry(), &[second]).unwrap();
    check(&mut restored, |_| 1);

    // A few writes after the cut fill no memtable: the checkpoint succeeds without them.
    let third = start(&mut backend, 3);
    write(&mut backend, (0..KEYS).filter(|&i| updated(i)), 3);
    let third = third.run().unwrap().job_manager_owned().unwrap().clone();
    let mut restored =
        RocksDBKeyedStateBackend::restore(setup.params(full()), registry(), &[third]).unwrap();
    check(&mut restored, |_| 2);
    assert!(
        snapshot_directories().is_empty(),
        "{:?}",
        snapshot_directories()
    );
}

/// A checkpoint taken while RocksDB merges files no checkpoint stored yet waits for the
/// merge and stores its output, not its inputs: otherwise the next checkpoint, with nothing
/// written in between, would store the same data a second time.
#[test]
fn a_checkpoint_stores_the_output_of_a_merge_of_unstored_files_once() {
    const MANY: u64 = 240_000;
    let setup = Setup::new();
    let shared = SharedStateRegistry::default();
    let mut params = setup.params(full());
    // 26 MB in 16 MiB memtables: a few sst files, fewer than universal compaction merges
    // on its own.
    (params.options).insert("rocksdb.write-buffer-size".into(), "16777216".into());
    let mut backend = RocksDBKeyedStateBackend::new(params, registry()).unwrap();
    backend
        .register_state(&StateMetaInfo::value("count", "void", "u64-be"))
        .unwrap();
    write(&mut backend, 0..MANY, 0);
    let db = backend.snapshot_source().db().unwrap();
    db.flush_cf(&db.cf_handle("state:count").unwrap()).unwrap();
    let running = || {
        db.property_int_value("rocksdb.num-running-compactions")
            .unwrap()
            .unwrap_or(0)
    };
    assert_eq!(running(), 0, "no compaction of its own");

    let merge = {
        let db = db.clone();
        std::thread::spawn(move || {
            let family = db.cf_handle("state:count").unwrap();
            db.compact_range_cf(&family, None::<&[u8]>, None::<&[u8]>);
        })
    };
    // (A merge that ends before it is seen makes checkpoint 1 hold its output anyway.)
    while running() == 0 && !merge.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let first = setup.checkpoint(&mut backend, CheckpointId::new(1));
    merge.join().unwrap();
    shared.register(&first).unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(1))
        .unwrap();

    let second = setup.checkpoint(&mut backend, CheckpointId::new(2));
    let new: Vec<&str> = (second.shared_state.iter())
        .filter(|f| !f.handle.is::<PlaceholderStreamStateHandle>())
        .map(|f| f.local_path.as_str())
        .collect();
    assert!(new.is_empty(), "checkpoint 2 stores {new:?} again");
    let retained = shared.register(&second).unwrap();
    let mut restored = setup.restored(shared.resolve(&retained).unwrap());
    for i in (0..MANY).step_by(997) {
        restored
            .set_current_key(format!("key-{i}").as_bytes())
            .unwrap();
        let value = restored.value("count", b"").unwrap().unwrap();
        assert_eq!(value[..8], (i * 10).to_be_bytes(), "key-{i}");
    }
}

/// The sst files a compaction replaced are deleted in the background, not kept: soon
/// the database directory holds exactly the live ones, and no renamed file waits to go.
#[test]
fn files_a_compaction_replaced_are_deleted() {
    let setup = Setup::new();
    let mut backend = setup.backend();
    let db = backend.snapshot_source().db().unwrap();
    let dir = backend.snapshot_source().db_path().to_path_buf();
    for half in [0..KEYS / 2, KEYS / 2..KEYS] {
        write(&mut backend, half, 0);
        db.flush_cf(&db.cf_handle("state:count").unwrap()).unwrap();
    }
    let family = db.cf_handle("state:count").unwrap();
    db.compact_range_cf(&family, None::<&[u8]>, None::<&[u8]>);
    let mut live: Vec<String> = (db.live_files().unwrap().into_iter())
        .map(|file| file.name.trim_start_matches('/').to_owned())
        .collect();
    live.sort();
    let on_disk = || {
        let mut names: Vec<String> = (std::fs::read_dir(&dir).unwrap().flatten())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sst") || name.ends_with(".trash"))
            .collect();
        names.sort();
        names
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while on_disk() != live && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(on_disk(), live, "files in {}", dir.display());
    check(&mut backend, |_| 0);
}

#[test]
fn a_failing_upload_leaves_nothing_and_the_next_checkpoint_succeeds() {
    for strategy in ["rocksdb-full", "rocksdb-incremental"] {
        let setup = Setup::new();
        let mut backend = RocksDBKeyedStateBackend::new(
            KeyedBackendParams {
                strategy: Some(strategy.into()),
                ..setup.params(full())
            },
            registry(),
        )
        .unwrap();
        backend
            .register_state(&StateMetaInfo::value("count", "void", "u64-be"))
            .unwrap();
        write(&mut backend, 0..KEYS, 0);
        let instance = backend.snapshot_source().instance_dir().to_path_buf();
        // Failing streams after the first: earlier uploads completed and must go again.
        let faults = [0, 10, 5_000, 100_000]
            .map(Fault::FailAfter)
            .into_iter()
            .chain((1..=4).map(Fault::FailOnStream));
        for fault in faults {
            // The full strategy writes one stream: later streams never fail.
            faulted_checkpoint(&setup, &mut backend, fault, strategy);
            assert!(
                setup.files().is_empty(),
                "{strategy}, {fault:?}, left {:?}",
                setup.files()
            );
            let leftovers = snapshot_directories(&instance);
            assert!(leftovers.is_empty(), "{strategy}, {fault:?}: {leftovers:?}");
        }
        let handle = {
            let factory = Arc::new(setup.storage.stream_factory(CheckpointId::new(2)).unwrap());
            let task = backend
                .snapshot(
                    &SnapshotRequest::checkpoint(CheckpointId::new(2), 0),
                    factory,
                )
                .unwrap();
            task.run().unwrap().job_manager_owned().unwrap().clone()
        };
        let mut restored =
            RocksDBKeyedStateBackend::restore(setup.params(full()), registry(), &[handle]).unwrap();
        check(&mut restored, |_| 0);
    }
}

#[test]
fn closing_while_an_incremental_snapshot_uploads_cancels_it_and_leaks_nothing() {
    use snapstate_tests::faults::GatedStreamFactory;

    let setup = Setup::new();
    let mut backend = setup.backend();
    write(&mut backend, 0..KEYS, 0);
    let source = backend.snapshot_source().clone();
    let (factory, gate) = GatedStreamFactory::new(Box::new(
        setup.storage.stream_factory(CheckpointId::new(1)).unwrap(),
    ));
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            Arc::new(factory),
        )
        .unwrap();
    let running = task.spawn().unwrap();
    assert!(gate.wait_started());
    // Nothing resumes the upload but the close, which closes its stream.
    backend.close().unwrap();
    let err = running.join().unwrap().unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert!(source.lease().is_err());
    assert!(setup.files().is_empty(), "{:?}", setup.files());
    assert!(
        !source.instance_dir().exists(),
        "the instance directory is left"
    );
}

/// Regression: two backends restored from the same checkpoint (a failover, then another)
/// write new sst files under the same RocksDB file numbers with other contents. Keyed by a
/// backend identifier both share (as in Flink before FLINK-29913), the second upload would
/// be taken for the first and its checkpoint would restore the first one's bytes.
#[test]
fn two_restores_of_one_checkpoint_never_share_uploads() {
    let setup = Setup::new();
    let shared = SharedStateRegistry::default();
    let mut backend = setup.backend();
    write(&mut backend, 0..KEYS, 0);
    let retained_1 = shared
        .register(&setup.checkpoint(&mut backend, CheckpointId::new(1)))
        .unwrap();
    backend
        .notify_checkpoint_complete(CheckpointId::new(1))
        .unwrap();
    backend.close().unwrap();
    let restore = |retained: &IncrementalRemoteKeyedStateHandle| {
        let resolved = shared.resolve(retained).unwrap();
        RocksDBKeyedStateBackend::restore(
            setup.params(full()),
            registry(),
            &[Arc::new(resolved) as Arc<dyn KeyedStateHandle>],
        )
        .unwrap()
    };

    // Two incarnations from checkpoint 1, each writing other values, each checkpointing.
    let mut first = restore(&retained_1);
    write(&mut first, (0..KEYS).filter(|&i| updated(i)), 1);
    let retained_2 = shared
        .register(&setup.checkpoint(&mut first, CheckpointId::new(2)))
        .unwrap();
    first.close().unwrap();
    let mut second = restore(&retained_1);
    write(&mut second, (0..KEYS).filter(|&i| updated(i)), 2);
    let retained_3 = shared
        .register(&setup.checkpoint(&mut second, CheckpointId::new(3)))
        .unwrap();
    second.close().unwrap();

    let mut from_2 = restore(&retained_2);
    check(&mut from_2, |i| u64::from(updated(i)));
    from_2.close().unwrap();
    let mut from_3 = restore(&retained_3);
    check(&mut from_3, |i| if updated(i) { 2 } else { 0 });
    from_3.close().unwrap();

    for (id, retained) in [(1, retained_1), (2, retained_2), (3, retained_3)] {
        retained.discard().unwrap();
        shared.release(CheckpointId::new(id)).unwrap();
    }
    assert!(setup.files().is_empty(), "orphans: {:?}", setup.files());
}

/// A handle that lost one of the files its manifest lists (a `CURRENT` dropped from
/// checkpoint metadata) is reported naming the file, instead of opening an empty database.
#[test]
fn a_handle_missing_a_listed_file_is_corrupted_not_empty() {
    let setup = Setup::new();
    let mut backend = setup.backend();
    write(&mut backend, 0..1000, 0);
    let handle = setup.checkpoint(&mut backend, CheckpointId::new(1));
    for name in ["CURRENT", "MANIFEST"] {
        let mut damaged = handle.clone();
        damaged
            .private_state
            .retain(|f| !f.local_path.starts_with(name));
        let err = RocksDBKeyedStateBackend::restore(
            setup.params(full()),
            registry(),
            &[Arc::new(damaged) as Arc<dyn KeyedStateHandle>],
        )
        .unwrap_err();
        assert!(
            matches!(err.root(), Error::Corrupted { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
    let mut damaged = handle.clone();
    let sst = damaged.shared_state.remove(0);
    let err = RocksDBKeyedStateBackend::restore(
        setup.params(full()),
        registry(),
        &[Arc::new(damaged) as Arc<dyn KeyedStateHandle>],
    )
    .unwrap_err();
    assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains(&sst.local_path), "{err}");
}

#[test]
fn sst_files_are_linked_into_a_local_directory_and_a_refused_one_leaves_nothing() {
    use std::os::unix::fs::MetadataExt;

    let setup = Setup::new();
    // Small memtables: the keys end up in many sst files, stored by several threads.
    let mut backend = setup.small_memtable_backend();

    // Refuse each file in turn (sst files are stored by several threads at once): every
    // refusal fails the snapshot and leaves nothing. Empty files (RocksDB's write-ahead
    // log, unused here) write nothing a fault could refuse.
    let reference = setup.checkpoint(&mut backend, CheckpointId::new(1));
    let stored = reference.shared_state.len() + reference.private_state.len() + 1;
    reference.discard().unwrap();
    assert!(setup.files().is_empty(), "{:?}", setup.files());
    let mut refused = 0;
    for number in 1..=stored as u64 {
        let fault = Fault::FailOnStream(number);
        refused += usize::from(faulted_checkpoint(&setup, &mut backend, fault, "linked"));
        assert!(
            setup.files().is_empty(),
            "file {number} refused, left {:?}",
            setup.files()
        );
    }
    // The files written through streams (the meta data and the non-empty private files)
    // account for fewer refusals: the others refused sst files stored without a stream.
    let streamed = 1
        + (reference.private_state.iter())
            .filter(|file| file.handle.state_size() > 0)
            .count();
    assert!(
        refused > streamed,
        "{refused} of {stored} refusals failed the snapshot, {streamed} through streams"
    );

    let handle = setup.checkpoint(&mut backend, CheckpointId::new(2));
    // Background compactions may have merged the files into one by now.
    assert!(!handle.shared_state.is_empty(), "{:?}", handle.shared_state);
    let db = backend.snapshot_source().db_path().to_path_buf();
    let mut linked = 0;
    for file in &handle.shared_state {
        let path = file
            .handle
            .downcast_ref::<FileStateHandle>()
            .expect("a stored file")
            .path()
            .to_path_buf();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.permissions().readonly(), "{}", path.display());
        // Linked, not copied: the same file as the live database's, unless a compaction
        // has deleted that one since.
        if let Ok(live) = std::fs::metadata(db.join(&file.local_path)) {
            assert_eq!(live.ino(), meta.ino(), "{} is a copy", path.display());
            linked += 1;
        }
    }
    assert!(
        linked > 0,
        "no stored sst file is still live: nothing checked"
    );
    let restored = RocksDBKeyedStateBackend::restore(
        setup.params(full()),
        registry(),
        &[Arc::new(handle) as Arc<dyn KeyedStateHandle>],
    );
    check(&mut restored.unwrap(), |_| 0);
}

/// One instance's checkpoint restores into two. Each opens the checkpoint's own sst files
/// (hard-linked from the local directory, not copied), starts a new incremental history,
/// and holds only its half: the keys of the other half are deleted from its database, so
/// a key the other instance removes later never comes back when the two halves' next
/// checkpoints restore into one instance again.
#[test]
fn a_rescaled_restore_opens_the_linked_files_and_keeps_only_its_key_groups() {
    use std::os::unix::fs::MetadataExt;

    let setup = Setup::new();
    let mut backend = setup.backend();
    write(&mut backend, 0..KEYS, 0);
    let handle = setup.checkpoint(&mut backend, CheckpointId::new(1));
    backend.close().unwrap();
    let stored: Vec<u64> = (handle.shared_state.iter())
        .map(|file| {
            let path = file
                .handle
                .downcast_ref::<FileStateHandle>()
                .unwrap()
                .path();
            std::fs::metadata(path).unwrap().ino()
        })
        .collect();
    let handles = [Arc::new(handle) as Arc<dyn KeyedStateHandle>];
    let removed = |i: u64| i % 10 == 3;
    let mut halves = Vec::new();
    let mut held = 0;
    for index in 0..2 {
        let range = MAX_PARALLELISM.range_for(index, 2).unwrap();
        let mut half =
            RocksDBKeyedStateBackend::restore(setup.params(range), registry(), &handles).unwrap();
        let source = half.snapshot_source().clone();
        let linked = (walk(source.db_path()).iter())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sst"))
            .filter(|path| stored.contains(&std::fs::metadata(path).unwrap().ino()))
            .count();
        assert!(linked > 0, "instance {index} copied every sst file");
        assert_eq!(source.last_completed_checkpoint(), None, "instance {index}");
        let owned: Vec<u64> = (0..KEYS)
            .filter(|i| range.contains(MAX_PARALLELISM.key_group_of(format!("key-{i}").as_bytes())))
            .collect();
        assert_eq!(half.keys("count", b"").unwrap().len(), owned.len());
        held += owned.len() as u64;
        write(&mut half, owned.iter().copied().filter(|&i| updated(i)), 1);
        for &i in owned.iter().filter(|&&i| removed(i)) {
            half.set_current_key(format!("key-{i}").as_bytes()).unwrap();
            half.clear("count", b"").unwrap();
        }
        let next = setup.checkpoint(&mut half, CheckpointId::new(2));
        assert!(
            placeholders(&next).is_empty(),
            "the first checkpoint of a new history refers to no earlier one"
        );
        halves.push(Arc::new(next) as Arc<dyn KeyedStateHandle>);
        half.close().unwrap();
    }
    assert_eq!(held, KEYS);
    let mut whole =
        RocksDBKeyedStateBackend::restore(setup.params(full()), registry(), &halves).unwrap();
    for i in 0..KEYS {
        whole
            .set_current_key(format!("key-{i}").as_bytes())
            .unwrap();
        let value = whole.value("count", b"").unwrap();
        match removed(i) {
            true => assert_eq!(value, None, "key-{i} was removed"),
            false => {
                let round = u64::from(updated(i));
                assert_eq!(
                    value.unwrap()[..8],
                    (i * 10 + round).to_be_bytes(),
                    "key-{i}"
                );
            }
        }
    }
}

/// Restoring the checkpoints of instances that only ever held their own key groups into
/// fewer or other instances takes the other instances' sst files in as they are (linked,
/// not rewritten); the restored instance holds exactly its key groups, and its own writes
/// after the restore win over the ingested entries, in it and in its next checkpoint.
#[test]
fn a_restore_into_fewer_instances_links_the_other_instances_sst_files() {
    use std::os::unix::fs::MetadataExt;

    let setup = Setup::new();
    let mut halves = Vec::new();
    let mut stored = Vec::new();
    for index in 0..2 {
        let range = MAX_PARALLELISM.range_for(index, 2).unwrap();
        let mut half = RocksDBKeyedStateBackend::new(setup.params(range), registry()).unwrap();
        half.register_state(&StateMetaInfo::value("count", "void", "u64-be"))
            .unwrap();
        let owned = (0..KEYS).filter(|i| {
            range.contains(MAX_PARALLELISM.key_group_of(format!("key-{i}").as_bytes()))
        });
        write(&mut half, owned, 0);
        let handle = setup.checkpoint(&mut half, CheckpointId::new(1));
        half.close().unwrap();
        stored.push(
            (handle.shared_state.iter())
                .map(|file| {
                    let file = file.handle.downcast_ref::<FileStateHandle>().unwrap();
                    std::fs::metadata(file.path()).unwrap().ino()
                })
                .collect::<Vec<u64>>(),
        );
        halves.push(Arc::new(handle) as Arc<dyn KeyedStateHandle>);
    }
    let linked_from = |backend: &RocksDBKeyedStateBackend, half: usize| {
        (walk(backend.snapshot_source().db_path()).iter())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sst"))
            .filter(|path| stored[half].contains(&std::fs::metadata(path).unwrap().ino()))
            .count()
    };

    let mut whole =
        RocksDBKeyedStateBackend::restore(setup.params(full()), registry(), &halves).unwrap();
    for (half, files) in stored.iter().enumerate() {
        assert_eq!(
            linked_from(&whole, half),
            files.len(),
            "half {half}'s sst files are not all linked"
        );
    }
    check(&mut whole, |_| 0);
    write(&mut whole, (0..KEYS).filter(|&i| updated(i)), 1);
    check(&mut whole, |i| u64::from(updated(i)));
    let next = setup.checkpoint(&mut whole, CheckpointId::new(2));
    whole.close().unwrap();
    let mut again = setup.restored(next);
    check(&mut again, |i| u64::from(updated(i)));

    // Into three instances: each keeps exactly its key groups.
    for index in 0..3 {
        let range = MAX_PARALLELISM.range_for(index, 3).unwrap();
        let mut third =
            RocksDBKeyedStateBackend::restore(setup.params(range), registry(), &halves).unwrap();
        let owned: Vec<u64> = (0..KEYS)
            .filter(|i| range.contains(MAX_PARALLELISM.key_group_of(format!("key-{i}").as_bytes())))
            .collect();
        assert_eq!(
            third.keys("count", b"").unwrap().len(),
            owned.len(),
            "instance {index}"
        );
        for &i in &owned {
            third
                .set_current_key(format!("key-{i}").as_bytes())
                .unwrap();
            let value = third.value("count", b"").unwrap().unwrap();
            assert_eq!(
                value[..8],
                (i * 10).to_be_bytes(),
                "instance {index}, key-{i}"
            );
        }
    }
}

/// The timer of number `i`: timestamps repeat, so one timestamp holds several keys.
fn timer(i: u64) -> Timer {
    Timer {
        timestamp: (i * 7919 % 1000) as i64 - 500,
        key: format!("key-{i}").into_bytes(),
        namespace: b"window".to_vec(),
    }
}

/// Fires every timer of `backend`, checking they come earliest first.
fn fire_all(backend: &mut dyn KeyedStateBackend) -> Vec<Timer> {
    let fired = backend.poll_timers("timers", i64::MAX, usize::MAX).unwrap();
    assert!(
        fired
            .windows(2)
            .all(|pair| pair[0].timestamp <= pair[1].timestamp),
        "timers fire earliest first"
    );
    assert_eq!(backend.timer_count("timers").unwrap(), 0);
    fired
}

#[test]
fn incremental_checkpoints_move_timers_between_heap_and_rocksdb_storage() {
    const TIMERS: u64 = 3_000;
    let sorted = |mut timers: Vec<Timer>| {
        timers.sort_by(|a, b| (a.timestamp, &a.key).cmp(&(b.timestamp, &b.key)));
        timers
    };
    let kept = |i: &u64| !i.is_multiple_of(3);
    let expected = sorted((0..TIMERS).filter(kept).map(timer).collect());
    for (from, to) in [("heap", "rocksdb"), ("rocksdb", "heap"), ("heap", "heap")] {
        let setup = Setup::new();
        let params = |factory: &str, range: KeyGroupRange| {
            let mut params = setup.params(range);
            (params.options).insert("rocksdb.timer-service.factory".into(), factory.into());
            params
        };
        let mut backend = RocksDBKeyedStateBackend::new(params(from, full()), registry()).unwrap();
        backend
            .register_state(&StateMetaInfo::value("count", "void", "u64-be"))
            .unwrap();
        backend
            .register_state(&StateMetaInfo::priority_queue("timers", "window"))
            .unwrap();
        write(&mut backend, 0..KEYS, 0);
        for i in 0..TIMERS {
            backend.set_current_key(&timer(i).key).unwrap();
            assert!(backend.add_timer("timers", &timer(i)).unwrap());
        }
        let shared = SharedStateRegistry::default();
        let first = setup.checkpoint(&mut backend, CheckpointId::new(1));
        shared.register(&first).unwrap();
        backend
            .notify_checkpoint_complete(CheckpointId::new(1))
            .unwrap();
        for i in (0..TIMERS).filter(|i| !kept(i)) {
            assert!(backend.remove_timer("timers", &timer(i)).unwrap());
        }
        let second = setup.checkpoint(&mut backend, CheckpointId::new(2));
        assert_eq!(
            (second.private_state.iter()).any(|file| file.local_path == "SNAPSTATE-TIMERS"),
            from == "heap",
            "{from}: timers in memory are written as a file of their own, and only they"
        );
        // Timers added after the synchronous part are not in the checkpoint.
        backend.add_timer("timers", &timer(TIMERS)).unwrap();
        backend.close().unwrap();
        let label = format!("{from} timers restored as {to} timers");

        // 1 -> 1, then 1 -> 2, each instance checkpointed again.
        let second = shared.resolve(&shared.register(&second).unwrap()).unwrap();
        let whole = [Arc::new(second) as Arc<dyn KeyedStateHandle>];
        let mut restored =
            RocksDBKeyedStateBackend::restore(params(to, full()), registry(), &whole).unwrap();
        assert_eq!(
            restored.timer_count("timers").unwrap(),
            expected.len(),
            "{label}"
        );
        assert_eq!(
            restored.peek_timer("timers").unwrap().as_ref(),
            expected.first()
        );
        check(&mut restored, |_| 0);
        assert_eq!(sorted(fire_all(&mut restored)), expected, "{label}");
        restored.close().unwrap();
        let mut halves = Vec::new();
        for index in 0..2 {
            let range = MAX_PARALLELISM.range_for(index, 2).unwrap();
            let mut half =
                RocksDBKeyedStateBackend::restore(params(to, range), registry(), &whole).unwrap();
            for key_group in range.iter() {
                let mine: Vec<&Timer> = (expected.iter())
                    .filter(|t| MAX_PARALLELISM.key_group_of(&t.key) == key_group)
                    .collect();
                let held = half.timers_of("timers", key_group).unwrap();
                assert_eq!(held.len(), mine.len(), "{label}: key group {key_group}");
            }
            let next = setup.checkpoint(&mut half, CheckpointId::new(3));
            halves.push(Arc::new(next) as Arc<dyn KeyedStateHandle>);
            half.close().unwrap();
        }
        // 2 -> 1 back into the first storage: one half opened, the other copied in.
        let mut merged =
            RocksDBKeyedStateBackend::restore(params(from, full()), registry(), &halves).unwrap();
        check(&mut merged, |_| 0);
        assert_eq!(sorted(fire_all(&mut merged)), expected, "{label}, 2 -> 1");
        merged.close().unwrap();
    }
}

/// Checkpoint 1 of a RocksDB backend keeping `count` timers in memory, and its parameters.
fn heap_timers_checkpoint(
    setup: &Setup,
    count: u64,
) -> (KeyedBackendParams, IncrementalRemoteKeyedStateHandle) {
    let mut params = setup.params(full());
    (params.options).insert("rocksdb.timer-service.factory".into(), "heap".into());
    let mut backend = RocksDBKeyedStateBackend::new(params.clone(), registry()).unwrap();
    backend
        .register_state(&StateMetaInfo::priority_queue("timers", "window"))
        .unwrap();
    for i in 0..count {
        backend.add_timer("timers", &timer(i)).unwrap();
    }
    let handle = setup.checkpoint(&mut backend, CheckpointId::new(1));
    backend.close().unwrap();
    (params, handle)
}

#[test]
fn a_damaged_or_missing_timers_file_is_reported_by_name() {
    let setup = Setup::new();
    let (params, handle) = heap_timers_checkpoint(&setup, 2_000);
    let restore = || {
        RocksDBKeyedStateBackend::restore(
            params.clone(),
            registry(),
            &[Arc::new(handle.clone()) as Arc<dyn KeyedStateHandle>],
        )
        .map(|backend| backend.timer_count("timers").unwrap())
    };
    let file = (handle.private_state.iter())
        .find(|file| file.local_path == "SNAPSTATE-TIMERS")
        .expect("timers in memory are written to a file of their own");
    let path = file
        .handle
        .downcast_ref::<FileStateHandle>()
        .unwrap()
        .path()
        .to_path_buf();
    let original = std::fs::read(&path).unwrap();
    assert_eq!(restore().unwrap(), 2_000);

    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let err = restore().unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "a damaged timers file is named: {err}"
    );

    std::fs::write(&path, &original[..original.len() - 1]).unwrap();
    let err = restore().unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "a truncated timers file is named: {err}"
    );

    std::fs::remove_file(&path).unwrap();
    let err = restore().unwrap_err();
    assert!(matches!(err.root(), Error::NotFound { .. }), "{err}");

    let mut unlisted = handle.clone();
    unlisted
        .private_state
        .retain(|file| file.local_path != "SNAPSTATE-TIMERS");
    let err = RocksDBKeyedStateBackend::restore(
        params.clone(),
        registry(),
        &[Arc::new(unlisted) as Arc<dyn KeyedStateHandle>],
    )
    .map(|_| ())
    .unwrap_err();
    assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
}

/// Whatever byte of the timers index (the section after the file manifest) is damaged,
/// restore either fails with an error or, where the damage changed nothing it reads,
/// restores every timer: it never panics and never restores other timers.
#[test]
fn a_damaged_timers_index_never_restores_other_timers() {
    let setup = Setup::new();
    let (params, handle) = heap_timers_checkpoint(&setup, 500);
    let meta = handle
        .meta_state
        .downcast_ref::<FileStateHandle>()
        .unwrap()
        .path()
        .to_path_buf();
    let original = std::fs::read(&meta).unwrap();
    // Tag, key-group count, 128 offsets and 128 checksums end the meta data.
    let index = original.len() - (1 + 4 + 128 * 12);
    assert_eq!(original[index], 1, "the timers index starts with its tag");
    let expected = (0..500).map(timer).collect::<Vec<_>>();
    for position in (index..original.len()).step_by(5) {
        let mut damaged = original.clone();
        damaged[position] ^= 0x41;
        std::fs::write(&meta, &damaged).unwrap();
        let restored = RocksDBKeyedStateBackend::restore(
            params.clone(),
            registry(),
            &[Arc::new(handle.clone()) as Arc<dyn KeyedStateHandle>],
        );
        if let Ok(mut restored) = restored {
            let mut fired = fire_all(&mut restored);
            fired.sort_by(|a, b| a.key.cmp(&b.key));
            let mut want = expected.clone();
            want.sort_by(|a, b| a.key.cmp(&b.key));
            assert_eq!(fired, want, "byte {position} of the meta data damaged");
        }
    }
    // Cut short or lengthened, the index is refused.
    for damaged in [
        &original[..original.len() - 1],
        &[&original[..], &[0]].concat()[..],
    ] {
        std::fs::write(&meta, damaged).unwrap();
        let restored = RocksDBKeyedStateBackend::restore(
            params.clone(),
            registry(),
            &[Arc::new(handle.clone()) as Arc<dyn KeyedStateHandle>],
        );
        let err = restored.map(|_| ()).unwrap_err();
        assert!(
            matches!(err.root(), Error::Corrupted { .. }),
            "a timers index of {} bytes: {err}",
            damaged.len() - index
        );
    }
}

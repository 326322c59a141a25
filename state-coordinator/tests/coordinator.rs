//! The checkpoint lifecycle on a real local checkpoint directory: what is committed, what
//! is retained, and which files go when a checkpoint is subsumed, declined, timed out or
//! fails to commit; and what recovery after a crash removes and keeps.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use state_api::{
    ByteStreamStateHandle, CheckpointId, CheckpointStorage, CheckpointStreamFactory,
    CheckpointType, CheckpointedStateScope, Error, HandleAndLocalPath,
    IncrementalRemoteKeyedStateHandle, InstanceSnapshot, JobId, KeyGroupRange, KeyedStateHandle,
    MaxParallelism, PlaceholderStreamStateHandle, StreamStateHandle,
};
use state_coordinator::{
    Acknowledged, Acknowledgement, CheckpointCoordinator, CheckpointStatus, CoordinatorConfig,
    InstanceStats, Recovered, TriggerRefused, Writers, collect_garbage, find_garbage,
};
use state_storage_local::LocalCheckpointStorage;
use support::Flaky;

struct Bed {
    _dir: tempfile::TempDir,
    root: PathBuf,
    storage: Arc<LocalCheckpointStorage>,
}

impl Bed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let storage = Arc::new(
            LocalCheckpointStorage::new(&root)
                .unwrap()
                .with_file_state_threshold(0),
        );
        Bed {
            _dir: dir,
            root,
            storage,
        }
    }

    fn coordinator(&self, change: impl FnOnce(&mut CoordinatorConfig)) -> CheckpointCoordinator {
        self.coordinator_on(self.storage.clone(), change)
    }

    fn coordinator_on(
        &self,
        storage: Arc<dyn CheckpointStorage>,
        change: impl FnOnce(&mut CoordinatorConfig),
    ) -> CheckpointCoordinator {
        let mut config = CoordinatorConfig::new(
            NonZeroU32::new(2).unwrap(),
            MaxParallelism::new(128).unwrap(),
        );
        change(&mut config);
        CheckpointCoordinator::new(storage, config)
    }

    /// A file written through the storage for checkpoint `id`.
    fn file(&self, id: CheckpointId, scope: CheckpointedStateScope) -> Arc<dyn StreamStateHandle> {
        let mut stream = CheckpointStorage::stream_factory(&*self.storage, id)
            .unwrap()
            .create_output_stream(scope)
            .unwrap();
        stream.write_all(b"state bytes").unwrap();
        stream.close_and_get_handle().unwrap()
    }

    /// Instance `index`'s incremental snapshot for checkpoint `id`: `new` files uploaded
    /// now, `old` ones referred to by placeholder.
    fn ack(&self, id: CheckpointId, index: u32, new: &[&str], old: &[&str]) -> Acknowledgement {
        let backend = format!("instance-{index}");
        let mut shared: Vec<HandleAndLocalPath> = (new.iter())
            .map(|name| {
                HandleAndLocalPath::shared(
                    self.file(id, CheckpointedStateScope::Shared),
                    *name,
                    format!("{backend}/{name}"),
                )
            })
            .collect();
        shared.extend(old.iter().map(|name| {
            HandleAndLocalPath::new(
                Arc::new(PlaceholderStreamStateHandle::new(
                    format!("{backend}/{name}"),
                    11,
                )),
                *name,
            )
        }));
        let handle = IncrementalRemoteKeyedStateHandle {
            backend_identifier: backend,
            key_group_range: MaxParallelism::new(128)
                .unwrap()
                .range_for(index % 2, 2)
                .unwrap(),
            checkpoint_id: id,
            strategy: Some("rocksdb-incremental".into()),
            shared_state: shared,
            private_state: vec![],
            meta_state: self.file(id, CheckpointedStateScope::Exclusive),
        };
        Acknowledgement {
            snapshot: InstanceSnapshot {
                index,
                keyed: vec![Arc::new(handle) as Arc<dyn KeyedStateHandle>],
                operator: vec![],
            },
            stats: InstanceStats {
                sync: Duration::from_millis(1),
                asynchronous: Duration::from_millis(2),
                bytes: 11 * (new.len() as u64 + 1),
            },
        }
    }

    /// Every file and directory (with a trailing `/`) under the storage root, relative to
    /// it.
    fn files(&self) -> BTreeSet<String> {
        fn walk(root: &Path, dir: &Path, found: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let relative = path.strip_prefix(root).unwrap().to_string_lossy();
                if path.is_dir() {
                    found.insert(format!("{relative}/"));
                    walk(root, &path, found);
                } else {
                    found.insert(relative.into_owned());
                }
            }
        }
        let mut found = BTreeSet::new();
        walk(&self.root, &self.root, &mut found);
        found
    }

    fn shared_files(&self) -> usize {
        (self.files().iter())
            .filter(|f| f.starts_with("shared/") && !f.ends_with('/'))
            .count()
    }

    /// Whether nothing but empty top-level directories (`shared/`) is left.
    fn nothing_stored(&self) -> bool {
        self.files().iter().all(|f| f == "shared/")
    }
}

fn completed(outcome: Acknowledged) -> state_coordinator::Completed {
    match outcome {
        Acknowledged::Completed(completed) => *completed,
        other => panic!("not completed: {other:?}"),
    }
}

/// Triggers a checkpoint and acknowledges it from both instances with `new` files each.
fn checkpoint(
    bed: &Bed,
    coordinator: &CheckpointCoordinator,
    new: &[&str],
    old: &[&str],
) -> state_coordinator::Completed {
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    for index in 0..2 {
        let outcome = coordinator
            .acknowledge(request.id, bed.ack(request.id, index, new, old))
            .unwrap();
        if index == 1 {
            return completed(outcome);
        }
    }
    unreachable!()
}

#[test]
fn the_last_acknowledgement_commits_the_checkpoint_with_readable_handles() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| {
        c.properties.insert("backend".into(), "rocksdb".into());
    });
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    assert_eq!(request.id, CheckpointId::new(1));
    let first = coordinator
        .acknowledge(request.id, bed.ack(request.id, 0, &["a.sst"], &[]))
        .unwrap();
    assert!(
        matches!(first, Acknowledged::Pending { missing: 1 }),
        "{first:?}"
    );
    assert!(bed.storage.completed_checkpoints().unwrap().is_empty());
    assert!(coordinator.latest_completed().is_none());

    let done = completed(
        coordinator
            .acknowledge(request.id, bed.ack(request.id, 1, &["a.sst"], &[]))
            .unwrap(),
    );
    assert_eq!(bed.storage.completed_checkpoints().unwrap(), [1]);
    let stored = bed.storage.load_checkpoint(request.id).unwrap();
    assert_eq!(stored.instances.len(), 2);
    assert_eq!(stored.properties["backend"], "rocksdb");
    // The committed handles hold real shared handles, not placeholders: a restore reads
    // the metadata alone.
    for handle in stored.keyed_handles() {
        let incremental = handle
            .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
            .unwrap();
        for file in &incremental.shared_state {
            assert!(
                file.handle
                    .downcast_ref::<PlaceholderStreamStateHandle>()
                    .is_none()
            );
        }
    }
    assert_eq!(done.stats.status, CheckpointStatus::Completed);
    assert_eq!(done.stats.bytes, 44);
    assert_eq!(done.stats.instances.len(), 2);
    assert_eq!(done.metadata.checkpoint_id, request.id);
    assert_eq!(
        coordinator.latest_completed().unwrap().checkpoint_id,
        request.id
    );
    assert_eq!(coordinator.retained(), [request.id]);
}

#[test]
fn subsuming_keeps_the_shared_files_a_retained_checkpoint_refers_to() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|_| {});
    checkpoint(&bed, &coordinator, &["a.sst", "b.sst"], &[]);
    assert_eq!(bed.shared_files(), 4);
    // Checkpoint 2 keeps a.sst by placeholder, drops b.sst and adds c.sst.
    let second = checkpoint(&bed, &coordinator, &["c.sst"], &["a.sst"]);
    assert_eq!(second.subsumed, [CheckpointId::new(1)]);
    assert_eq!(second.pruned, 0, "b.sst is held until the next completion");
    assert_eq!(coordinator.retained(), [CheckpointId::new(2)]);
    assert_eq!(bed.storage.completed_checkpoints().unwrap(), [2]);
    assert_eq!(
        bed.shared_files(),
        6,
        "a.sst, b.sst and c.sst of both instances"
    );
    assert!(
        !bed.files().iter().any(|f| f.starts_with("chk-1/")),
        "{:?}",
        bed.files()
    );
    // Every shared handle of the restore point is still readable.
    for handle in coordinator.latest_completed().unwrap().keyed_handles() {
        let incremental = handle
            .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
            .unwrap();
        for file in &incremental.shared_state {
            file.handle.open().unwrap();
        }
    }
    let third = checkpoint(&bed, &coordinator, &[], &["a.sst", "c.sst"]);
    assert_eq!(
        third.pruned, 2,
        "b.sst of both instances, at the completion after"
    );
    assert_eq!(bed.shared_files(), 4, "a.sst and c.sst of both instances");
}

/// An instance told of checkpoint 2's completion only after it snapshotted checkpoint 3
/// builds checkpoint 3 on checkpoint 1, which checkpoint 2 subsumed.
#[test]
fn an_instance_late_to_learn_of_a_completion_may_refer_to_the_subsumed_checkpoint() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|_| {});
    checkpoint(&bed, &coordinator, &["a.sst", "b.sst"], &[]);
    checkpoint(&bed, &coordinator, &["c.sst"], &["a.sst"]);
    // Built on checkpoint 1: b.sst by placeholder, which checkpoint 2 does not have.
    let third = checkpoint(&bed, &coordinator, &["d.sst"], &["a.sst", "b.sst"]);
    assert_eq!(third.subsumed, [CheckpointId::new(2)]);
    assert_eq!(
        third.pruned, 0,
        "checkpoint 1's b.sst is checkpoint 3's now"
    );
    read_every_file(&bed.storage, CheckpointId::new(3));
    let fourth = checkpoint(&bed, &coordinator, &[], &["a.sst", "b.sst", "d.sst"]);
    assert_eq!(fourth.pruned, 2, "c.sst of both instances");
    assert_eq!(
        bed.shared_files(),
        6,
        "a.sst, b.sst and d.sst of both instances"
    );
    read_every_file(&bed.storage, CheckpointId::new(4));
}

#[test]
fn more_retained_checkpoints_and_savepoints_are_kept_until_subsumed() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| c.num_retained = NonZeroUsize::new(2).unwrap());
    checkpoint(&bed, &coordinator, &["a.sst"], &[]);
    let savepoint = coordinator
        .trigger(CheckpointType::Savepoint, Instant::now())
        .unwrap();
    for index in 0..2 {
        let snapshot = InstanceSnapshot {
            index,
            keyed: vec![],
            operator: vec![],
        };
        let stats = InstanceStats::default();
        coordinator
            .acknowledge(savepoint.id, Acknowledgement { snapshot, stats })
            .unwrap();
    }
    checkpoint(&bed, &coordinator, &["b.sst"], &["a.sst"]);
    checkpoint(&bed, &coordinator, &["c.sst"], &["b.sst"]);
    let ids = |raw: &[u64]| {
        raw.iter()
            .map(|&id| CheckpointId::new(id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        coordinator.retained(),
        ids(&[2, 3, 4]),
        "two checkpoints and the savepoint"
    );
    assert_eq!(bed.storage.completed_checkpoints().unwrap(), [2, 3, 4]);
    let last = checkpoint(&bed, &coordinator, &[], &["c.sst"]);
    assert_eq!(last.subsumed, ids(&[3]));
    assert_eq!(coordinator.retained(), ids(&[2, 4, 5]));
    assert_eq!(
        bed.shared_files(),
        6,
        "a.sst (subsumed checkpoint 3, held until the next completion), b.sst (4) and c.sst (4, 5)"
    );
}

#[test]
fn a_declined_checkpoint_leaves_no_file_and_fails_the_job_beyond_the_tolerance() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| c.tolerable_failures = 1);
    checkpoint(&bed, &coordinator, &["a.sst"], &[]);
    let before = bed.files();
    for round in 0..2 {
        let request = coordinator
            .trigger(CheckpointType::Checkpoint, Instant::now())
            .unwrap();
        coordinator
            .acknowledge(request.id, bed.ack(request.id, 0, &["b.sst"], &["a.sst"]))
            .unwrap();
        let aborted = coordinator.decline(request.id, 1, "disk full").unwrap();
        assert_eq!(aborted.id, request.id);
        assert!(aborted.reason.contains("disk full"), "{}", aborted.reason);
        assert_eq!(aborted.job_failed, round == 1, "round {round}");
        assert_eq!(
            bed.files(),
            before,
            "round {round}: what instance 0 stored is gone"
        );
        let stats = coordinator.stats();
        let last = stats.last().unwrap();
        assert_eq!(last.id, request.id);
        assert!(matches!(last.status, CheckpointStatus::Failed(_)));
    }
    let refused = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap_err();
    assert_eq!(
        refused,
        TriggerRefused::JobFailed {
            failures: 2,
            tolerable: 1
        }
    );
    assert_eq!(bed.storage.completed_checkpoints().unwrap(), [1]);
    let err = coordinator
        .decline(CheckpointId::new(9), 0, "never triggered")
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn a_completion_resets_the_failures_in_a_row() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| c.tolerable_failures = 1);
    for _ in 0..3 {
        let request = coordinator
            .trigger(CheckpointType::Checkpoint, Instant::now())
            .unwrap();
        let aborted = coordinator.decline(request.id, 0, "busy").unwrap();
        assert!(!aborted.job_failed);
        checkpoint(&bed, &coordinator, &["a.sst"], &[]);
    }
}

#[test]
fn a_timed_out_checkpoint_is_aborted_and_a_late_acknowledgement_discarded() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| c.timeout = Duration::from_secs(10));
    let start = Instant::now();
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, start)
        .unwrap();
    coordinator
        .acknowledge(request.id, bed.ack(request.id, 0, &["a.sst"], &[]))
        .unwrap();
    assert!(
        coordinator
            .abort_expired(start + Duration::from_secs(9))
            .unwrap()
            .is_empty()
    );
    let aborted = coordinator
        .abort_expired(start + Duration::from_secs(10))
        .unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].id, request.id);
    assert!(aborted[0].job_failed, "no failure is tolerated by default");
    assert!(coordinator.pending().is_empty());
    let late = coordinator
        .acknowledge(request.id, bed.ack(request.id, 1, &["b.sst"], &[]))
        .unwrap();
    assert!(matches!(late, Acknowledged::Late), "{late:?}");
    assert!(bed.nothing_stored(), "{:?}", bed.files());
}

#[test]
fn triggers_wait_for_max_concurrent_and_min_pause() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| c.min_pause = Duration::from_secs(5));
    let start = Instant::now();
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, start)
        .unwrap();
    assert_eq!(
        coordinator.trigger(CheckpointType::Checkpoint, start),
        Err(TriggerRefused::TooManyPending { pending: 1 })
    );
    for index in 0..2 {
        coordinator
            .acknowledge(request.id, bed.ack(request.id, index, &[], &[]))
            .unwrap();
    }
    let completed_at = Instant::now();
    let refused = coordinator
        .trigger(
            CheckpointType::Checkpoint,
            completed_at + Duration::from_secs(4),
        )
        .unwrap_err();
    assert!(
        matches!(refused, TriggerRefused::MinPause { .. }),
        "{refused}"
    );
    let next = coordinator
        .trigger(
            CheckpointType::Checkpoint,
            completed_at + Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(next.id, CheckpointId::new(2));
}

#[test]
fn a_completed_checkpoint_aborts_older_pending_ones_without_counting_a_failure() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| c.max_concurrent = NonZeroUsize::new(2).unwrap());
    let older = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    coordinator
        .acknowledge(older.id, bed.ack(older.id, 0, &["a.sst"], &[]))
        .unwrap();
    let newer = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    let mut last = None;
    for index in 0..2 {
        last = Some(
            coordinator
                .acknowledge(newer.id, bed.ack(newer.id, index, &["b.sst"], &[]))
                .unwrap(),
        );
    }
    let done = completed(last.unwrap());
    assert_eq!(done.aborted, [older.id]);
    assert!(coordinator.pending().is_empty());
    assert_eq!(
        bed.shared_files(),
        2,
        "only checkpoint 2's files: {:?}",
        bed.files()
    );
    coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .expect("an aborted older checkpoint is no failure");
}

#[test]
fn foreign_and_repeated_acknowledgements_are_refused() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|_| {});
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    let err = coordinator
        .acknowledge(request.id, bed.ack(request.id, 2, &[], &[]))
        .unwrap_err();
    assert!(err.to_string().contains("instance 2"), "{err}");
    coordinator
        .acknowledge(request.id, bed.ack(request.id, 0, &[], &[]))
        .unwrap();
    let err = coordinator
        .acknowledge(request.id, bed.ack(request.id, 0, &[], &[]))
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    assert_eq!(
        coordinator.pending(),
        [request.id],
        "still waiting for instance 1"
    );
}

#[test]
fn an_acknowledgement_repeated_after_completion_deletes_nothing() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|_| {});
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    let acks: Vec<Acknowledgement> = (0..2)
        .map(|index| bed.ack(request.id, index, &["a.sst"], &[]))
        .collect();
    for ack in &acks {
        coordinator.acknowledge(request.id, ack.clone()).unwrap();
    }
    // Checkpoint 2 keeps checkpoint 1's files by placeholder; checkpoint 1 is subsumed.
    checkpoint(&bed, &coordinator, &[], &["a.sst"]);
    let before = bed.files();
    for id in [request.id, CheckpointId::new(2), CheckpointId::new(7)] {
        // A message delivered twice, or an acknowledgement of a checkpoint never triggered.
        let err = coordinator.acknowledge(id, acks[0].clone()).unwrap_err();
        assert!(err.to_string().contains("not pending"), "{err}");
    }
    assert_eq!(bed.files(), before, "checkpoint 2 still needs a.sst");
}

#[test]
fn a_failed_commit_aborts_the_checkpoint_and_deletes_its_files() {
    let bed = Bed::new();
    let coordinator = bed.coordinator_on(Arc::new(Flaky::new(bed.storage.clone(), true)), |_| {});
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    coordinator
        .acknowledge(request.id, bed.ack(request.id, 0, &["a.sst"], &[]))
        .unwrap();
    let err = coordinator
        .acknowledge(request.id, bed.ack(request.id, 1, &["a.sst"], &[]))
        .unwrap_err();
    assert!(err.to_string().contains("injected commit failure"), "{err}");
    assert!(bed.nothing_stored(), "{:?}", bed.files());
    assert!(coordinator.pending().is_empty());
    assert!(coordinator.retained().is_empty());
    assert!(coordinator.shared_state().keys().is_empty());
    assert!(matches!(
        coordinator.stats().last().unwrap().status,
        CheckpointStatus::Failed(_)
    ));
}

#[test]
fn acknowledgements_travel_as_json() {
    let handle = IncrementalRemoteKeyedStateHandle {
        backend_identifier: "instance-0".into(),
        key_group_range: KeyGroupRange::new(0, 63).unwrap(),
        checkpoint_id: CheckpointId::new(3),
        strategy: Some("rocksdb-incremental".into()),
        shared_state: vec![],
        private_state: vec![],
        meta_state: Arc::new(ByteStreamStateHandle::new("meta", b"header".to_vec())),
    };
    let ack = Acknowledgement {
        snapshot: InstanceSnapshot {
            index: 0,
            keyed: vec![Arc::new(handle) as Arc<dyn KeyedStateHandle>],
            operator: vec![],
        },
        stats: InstanceStats {
            sync: Duration::from_micros(1500),
            asynchronous: Duration::from_millis(20),
            bytes: 6,
        },
    };
    let json = serde_json::to_string(&ack).unwrap();
    let back: Acknowledgement = serde_json::from_str(&json).unwrap();
    assert_eq!(back.stats, ack.stats);
    assert_eq!(back.snapshot.index, 0);
    let keyed = back.snapshot.keyed[0]
        .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
        .unwrap();
    assert_eq!(keyed.checkpoint_id, CheckpointId::new(3));
    assert_eq!(keyed.key_group_range, KeyGroupRange::new(0, 63).unwrap());
}

#[test]
fn a_rescaled_job_waits_for_its_new_parallelism_and_discard_all_leaves_only_savepoints() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| c.tolerable_failures = 1);
    checkpoint(&bed, &coordinator, &["a.sst"], &[]);
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    let err = coordinator.rescale(NonZeroU32::MIN).unwrap_err();
    assert!(err.to_string().contains("pending"), "{err}");
    coordinator.decline(request.id, 0, "rescaling").unwrap();
    coordinator.rescale(NonZeroU32::MIN).unwrap();
    let request = coordinator
        .trigger(CheckpointType::Savepoint, Instant::now())
        .unwrap();
    let savepoint = bed.ack(request.id, 0, &["s.sst"], &[]);
    let done = completed(coordinator.acknowledge(request.id, savepoint).unwrap());
    assert_eq!(done.metadata.instances.len(), 1, "one instance now");
    let pending = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    coordinator
        .acknowledge(pending.id, bed.ack(pending.id, 0, &["p.sst"], &[]))
        .unwrap_or_else(|e| panic!("{e}"));

    coordinator.discard_all().unwrap();
    assert!(coordinator.pending().is_empty());
    assert_eq!(coordinator.retained(), [request.id], "the savepoint stays");
    assert_eq!(
        bed.storage.completed_checkpoints().unwrap(),
        [request.id.get()]
    );
    let left: Vec<String> = (bed.files().into_iter())
        .filter(|f| !f.ends_with('/'))
        .filter(|f| !f.starts_with(&format!("chk-{}/", request.id)))
        .collect();
    assert_eq!(left.len(), 1, "the savepoint's shared file only: {left:?}");
}

#[test]
fn a_resumed_job_continues_the_ids_and_subsumes_the_restored_checkpoint_in_turn() {
    let bed = Bed::new();
    let before_crash = bed.coordinator(|c| c.job_id = Some(JobId::new("job-a").unwrap()));
    checkpoint(&bed, &before_crash, &["a.sst", "b.sst"], &[]);
    checkpoint(&bed, &before_crash, &[], &["a.sst", "b.sst"]);
    drop(before_crash);

    let restored = bed.storage.load_checkpoint(CheckpointId::new(2)).unwrap();
    assert_eq!(restored.job_id, Some(JobId::new("job-a").unwrap()));
    let mut config = CoordinatorConfig::new(
        NonZeroU32::new(2).unwrap(),
        MaxParallelism::new(128).unwrap(),
    );
    let resumed =
        CheckpointCoordinator::resume(bed.storage.clone(), config.clone(), &restored).unwrap();
    assert_eq!(resumed.retained(), [CheckpointId::new(2)]);
    assert_eq!(
        resumed.latest_completed().unwrap().checkpoint_id,
        CheckpointId::new(2)
    );
    // Checkpoint 3 keeps a.sst (uploaded by checkpoint 1) by placeholder, drops b.sst.
    let third = checkpoint(&bed, &resumed, &["c.sst"], &["a.sst"]);
    assert_eq!(third.metadata.checkpoint_id, CheckpointId::new(3));
    assert_eq!(third.subsumed, [CheckpointId::new(2)]);
    assert_eq!(third.pruned, 0, "b.sst is held until the next completion");
    assert_eq!(bed.storage.completed_checkpoints().unwrap(), [3]);
    for handle in third.metadata.keyed_handles() {
        let incremental = handle
            .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
            .unwrap();
        for file in &incremental.shared_state {
            file.handle.open().unwrap();
        }
    }
    assert_eq!(
        bed.shared_files(),
        6,
        "a.sst, b.sst (held) and c.sst of both instances"
    );

    config.max_parallelism = MaxParallelism::new(256).unwrap();
    let err =
        CheckpointCoordinator::resume(bed.storage.clone(), config, &third.metadata).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
}

#[test]
fn a_failed_deletion_after_the_commit_leaves_files_but_never_undoes_the_checkpoint() {
    let bed = Bed::new();
    let storage = Arc::new(Flaky::new(bed.storage.clone(), false));
    let coordinator = bed.coordinator_on(storage.clone(), |_| {});
    checkpoint(&bed, &coordinator, &["a.sst"], &[]);
    storage
        .refuse_discards
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let second = checkpoint(&bed, &coordinator, &["b.sst"], &["a.sst"]);
    assert_eq!(second.subsumed, [CheckpointId::new(1)]);
    assert_eq!(
        second.cleanup_errors.len(),
        1,
        "{:?}",
        second.cleanup_errors
    );
    assert!(
        second.cleanup_errors[0].contains("injected discard failure"),
        "{:?}",
        second.cleanup_errors
    );
    assert_eq!(coordinator.retained(), [CheckpointId::new(2)]);
    // Checkpoint 2 is committed and every file it reads is there.
    let stored = bed.storage.load_checkpoint(CheckpointId::new(2)).unwrap();
    for handle in stored.keyed_handles() {
        let incremental = handle
            .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
            .unwrap();
        for file in &incremental.shared_state {
            file.handle.open().unwrap();
        }
        incremental.meta_state.open().unwrap();
    }
}

/// Every file a committed checkpoint refers to is readable, with its metadata.
fn read_every_file(storage: &LocalCheckpointStorage, id: CheckpointId) {
    let metadata = storage.load_checkpoint(id).unwrap();
    for handle in metadata.keyed_handles() {
        for stream in handle.streams().unwrap() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut stream.open().unwrap(), &mut bytes)
                .unwrap_or_else(|e| panic!("checkpoint {id}: {e}"));
        }
    }
}

fn recover(bed: &Bed, writers: Writers, retained: usize) -> Recovered {
    let mut config = CoordinatorConfig::new(
        NonZeroU32::new(2).unwrap(),
        MaxParallelism::new(128).unwrap(),
    );
    config.num_retained = NonZeroUsize::new(retained).unwrap();
    CheckpointCoordinator::recover(bed.storage.clone(), config, writers).unwrap()
}

#[test]
fn recovery_removes_what_a_killed_job_left_and_keeps_every_committed_file() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|_| {});
    checkpoint(&bed, &coordinator, &["a.sst"], &[]);
    checkpoint(&bed, &coordinator, &["b.sst"], &["a.sst"]);
    // Killed while checkpoint 3 was being written: one instance acknowledged, the other
    // uploaded without acknowledging, a stream was half written, and checkpoint 2's
    // directory holds a stream nobody refers to (an upload retried after a timeout).
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    let ack = bed.ack(request.id, 0, &["c.sst"], &["a.sst"]);
    coordinator.acknowledge(request.id, ack).unwrap();
    drop(bed.ack(request.id, 1, &["d.sst"], &[]));
    std::fs::write(bed.root.join("shared/.inprogress-chk-3-x1"), b"half").unwrap();
    bed.file(CheckpointId::new(2), CheckpointedStateScope::Exclusive);
    drop(coordinator);
    let left = bed.files();

    // A dry run deletes nothing and finds the same files recovery removes.
    let found = find_garbage(&*bed.storage, Writers::Exclusive).unwrap();
    assert_eq!(bed.files(), left);
    assert_eq!(found.committed, [CheckpointId::new(2)]);
    assert_eq!(found.files.len(), 6, "{found:#?}");
    assert!(found.kept.is_empty(), "{found:#?}");

    let recovered = recover(&bed, Writers::Exclusive, 1);
    assert_eq!(
        recovered.restore_from.map(|m| m.checkpoint_id),
        Some(CheckpointId::new(2))
    );
    assert_eq!(recovered.garbage, found);
    assert!(recovered.cleanup_errors.is_empty());
    let after = bed.files();
    assert!(!after.iter().any(|f| f.contains("chk-3")), "{after:#?}");
    assert!(
        !after.iter().any(|f| f.contains(".inprogress")),
        "{after:#?}"
    );
    // What is left is exactly checkpoint 2: its metadata, two meta streams, a, b.
    assert_eq!(
        after.iter().filter(|f| !f.ends_with('/')).count(),
        1 + 2 + 2 * 2,
        "{after:#?}"
    );
    read_every_file(&bed.storage, CheckpointId::new(2));
    // The id of the checkpoint the crash left unfinished is not reused.
    let next = recovered
        .coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    assert_eq!(next.id, CheckpointId::new(4));
}

#[test]
fn a_clean_up_beside_a_running_job_keeps_the_files_of_newer_checkpoints() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|_| {});
    checkpoint(&bed, &coordinator, &["a.sst"], &[]);
    // Leftovers of checkpoint 1 (a stream nobody refers to, a half-written shared file).
    bed.file(CheckpointId::new(1), CheckpointedStateScope::Exclusive);
    std::fs::write(bed.root.join("shared/.inprogress-chk-1-x1"), b"half").unwrap();
    // Checkpoint 2 is being written while the clean-up runs.
    let request = coordinator
        .trigger(CheckpointType::Checkpoint, Instant::now())
        .unwrap();
    let first = bed.ack(request.id, 0, &["b.sst"], &["a.sst"]);
    coordinator.acknowledge(request.id, first).unwrap();
    let second = bed.ack(request.id, 1, &["c.sst"], &[]);

    let garbage = collect_garbage(&*bed.storage, Writers::Possible).unwrap();
    assert_eq!(garbage.files.len(), 2, "{garbage:#?}");
    assert!(
        (garbage.files.iter()).all(|f| f.path.contains("chk-1")),
        "{garbage:#?}"
    );
    // Both instances' uploads for checkpoint 2 are not referred to yet, and kept.
    assert_eq!(garbage.kept.len(), 4, "{garbage:#?}");
    assert!(
        (garbage.kept.iter()).all(|f| f.path.contains("chk-2")),
        "{garbage:#?}"
    );
    completed(coordinator.acknowledge(request.id, second).unwrap());
    read_every_file(&bed.storage, CheckpointId::new(2));
}

#[test]
fn recovery_subsumes_the_checkpoints_a_crash_kept_beyond_num_retained() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|c| c.num_retained = NonZeroUsize::new(3).unwrap());
    checkpoint(&bed, &coordinator, &["a.sst"], &[]);
    checkpoint(&bed, &coordinator, &["b.sst"], &[]);
    checkpoint(&bed, &coordinator, &["c.sst"], &["a.sst"]);
    drop(coordinator);
    let recovered = recover(&bed, Writers::Exclusive, 1);
    assert_eq!(
        recovered.subsumed,
        [CheckpointId::new(1), CheckpointId::new(2)]
    );
    assert_eq!(
        bed.storage.completed_checkpoints().unwrap(),
        [CheckpointId::new(3)]
    );
    // b.sst went with checkpoint 2; a.sst stays for checkpoint 3.
    assert_eq!(bed.shared_files(), 4, "{:#?}", bed.files());
    read_every_file(&bed.storage, CheckpointId::new(3));
}

/// A keyed handle of a third-party kind that does not list its streams.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Opaque {
    range: KeyGroupRange,
}

impl state_api::StateObject for Opaque {
    fn discard(&self) -> state_api::Result<()> {
        Ok(())
    }

    fn state_size(&self) -> u64 {
        0
    }
}

#[typetag::serde(name = "opaque-test")]
impl KeyedStateHandle for Opaque {
    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn intersection(&self, _: &KeyGroupRange) -> Option<Arc<dyn KeyedStateHandle>> {
        None
    }
}

#[test]
fn a_checkpoint_whose_files_cannot_be_listed_stops_every_clean_up() {
    let bed = Bed::new();
    let mut metadata = state_api::CheckpointMetadata::new(
        CheckpointId::new(1),
        0,
        CheckpointType::Checkpoint,
        MaxParallelism::new(128).unwrap(),
    );
    metadata.instances.push(InstanceSnapshot {
        index: 0,
        keyed: vec![Arc::new(Opaque {
            range: KeyGroupRange::new(0, 127).unwrap(),
        })],
        operator: vec![],
    });
    bed.file(CheckpointId::new(1), CheckpointedStateScope::Shared);
    bed.storage.commit_checkpoint(&metadata).unwrap();
    let before = bed.files();
    let err = collect_garbage(&*bed.storage, Writers::Exclusive).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("checkpoint 1"), "{err}");
    assert_eq!(bed.files(), before, "nothing is deleted");
}

#[test]
fn once_every_instance_is_told_the_held_files_go() {
    let bed = Bed::new();
    let coordinator = bed.coordinator(|_| {});
    checkpoint(&bed, &coordinator, &["a.sst", "b.sst"], &[]);
    checkpoint(&bed, &coordinator, &["c.sst"], &["a.sst"]);
    assert_eq!(bed.shared_files(), 6, "b.sst is held");
    assert_eq!(coordinator.all_instances_notified().unwrap(), 2);
    assert_eq!(bed.shared_files(), 4, "a.sst and c.sst of both instances");
    assert_eq!(coordinator.all_instances_notified().unwrap(), 0);
    read_every_file(&bed.storage, CheckpointId::new(2));
}

//! Model-based test of the checkpoint lifecycle: random sequences of triggers,
//! acknowledgements, declines, timeouts and failing commits on a real local checkpoint
//! directory, with the invariants checked after every step:
//!
//! - every file a retained checkpoint refers to is there and readable;
//! - nothing else is stored but what pending checkpoints' instances wrote (no orphan);
//! - the storage commits exactly the retained checkpoints, at most `num-retained` of them
//!   besides every savepoint;
//! - once the job discards its checkpoints, only the savepoints' files are left.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use state_api::{
    CheckpointId, CheckpointStorage, CheckpointStreamFactory, CheckpointType,
    CheckpointedStateScope, Error, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle,
    InstanceSnapshot, KeyedStateHandle, MaxParallelism, PlaceholderStreamStateHandle,
    StreamStateHandle,
};
use state_coordinator::{
    Acknowledged, Acknowledgement, CheckpointCoordinator, CoordinatorConfig, InstanceStats,
};
use state_storage_local::{FileStateHandle, LocalCheckpointStorage};
use support::Flaky;

const INSTANCES: u32 = 2;
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Step {
    Trigger {
        savepoint: bool,
    },
    /// Instance `instance` of the `pending`-th pending checkpoint (modulo) acknowledges,
    /// uploading `new` files; `late`: it was not yet told of the last completion, and
    /// builds on the completed checkpoint before.
    Acknowledge {
        pending: usize,
        instance: u32,
        new: u8,
        late: bool,
    },
    Decline {
        pending: usize,
        instance: u32,
    },
    /// An instance acknowledges the checkpoint aborted last.
    Late {
        instance: u32,
    },
    /// Time passes beyond the timeout of every pending checkpoint.
    Expire,
    /// Commits fail from now on, or work again.
    Commits {
        fail: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Trigger { savepoint: false }),
        1 => Just(Step::Trigger { savepoint: true }),
        8 => (0..3usize, 0..INSTANCES, 0..3u8, prop::bool::weighted(0.25))
            .prop_map(|(pending, instance, new, late)| Step::Acknowledge { pending, instance, new, late }),
        1 => (0..3usize, 0..INSTANCES).prop_map(|(pending, instance)| Step::Decline { pending, instance }),
        1 => (0..INSTANCES).prop_map(|instance| Step::Late { instance }),
        1 => Just(Step::Expire),
        1 => any::<bool>().prop_map(|fail| Step::Commits { fail }),
    ]
}

/// The files of one instance's part: (local name, size) of its shared files.
type Files = Vec<(String, u64)>;

struct Run {
    _dir: tempfile::TempDir,
    root: PathBuf,
    local: Arc<LocalCheckpointStorage>,
    storage: Arc<Flaky>,
    coordinator: CheckpointCoordinator,
    num_retained: usize,
    now: Instant,
    /// Per instance: the shared files of its part of the last completed checkpoint.
    base: BTreeMap<u32, Files>,
    /// The same for the completed checkpoint before it.
    previous_base: BTreeMap<u32, Files>,
    /// Files of the checkpoints the last completion subsumed, which the coordinator holds
    /// until the next completion for instances late to learn of it.
    held: BTreeSet<PathBuf>,
    /// Per pending checkpoint: each acknowledged instance's shared files.
    parts: BTreeMap<CheckpointId, BTreeMap<u32, Files>>,
    /// Files the instances wrote for each pending checkpoint.
    written: BTreeMap<CheckpointId, Vec<PathBuf>>,
    savepoints: BTreeSet<CheckpointId>,
    aborted: Vec<CheckpointId>,
    uploads: u64,
}

fn path_of(handle: &Arc<dyn StreamStateHandle>) -> PathBuf {
    handle.downcast_ref::<FileStateHandle>().unwrap().path()
}

impl Run {
    fn new(num_retained: usize, max_concurrent: usize) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let local = Arc::new(
            LocalCheckpointStorage::new(&root)
                .unwrap()
                .with_file_state_threshold(0),
        );
        let storage = Arc::new(Flaky::new(local.clone(), false));
        let mut config = CoordinatorConfig::new(
            NonZeroU32::new(INSTANCES).unwrap(),
            MaxParallelism::new(128).unwrap(),
        );
        config.num_retained = NonZeroUsize::new(num_retained).unwrap();
        config.max_concurrent = NonZeroUsize::new(max_concurrent).unwrap();
        config.tolerable_failures = u32::MAX;
        config.timeout = TIMEOUT;
        Run {
            _dir: dir,
            root,
            local,
            coordinator: CheckpointCoordinator::new(storage.clone(), config),
            storage,
            num_retained,
            now: Instant::now(),
            base: BTreeMap::new(),
            previous_base: BTreeMap::new(),
            held: BTreeSet::new(),
            parts: BTreeMap::new(),
            written: BTreeMap::new(),
            savepoints: BTreeSet::new(),
            aborted: Vec::new(),
            uploads: 0,
        }
    }

    fn write(
        &mut self,
        id: CheckpointId,
        scope: CheckpointedStateScope,
    ) -> Arc<dyn StreamStateHandle> {
        let mut stream = CheckpointStorage::stream_factory(&*self.local, id)
            .unwrap()
            .create_output_stream(scope)
            .unwrap();
        self.uploads += 1;
        stream
            .write_all(format!("upload {}", self.uploads).as_bytes())
            .unwrap();
        let handle = stream.close_and_get_handle().unwrap();
        self.written.entry(id).or_default().push(path_of(&handle));
        handle
    }

    /// Instance `instance`'s part of checkpoint `id`: `new` new shared files and, for a
    /// checkpoint, its base's files by placeholder, as an incremental backend uploads.
    fn part(
        &mut self,
        id: CheckpointId,
        instance: u32,
        new: u8,
        late: bool,
    ) -> (Acknowledgement, Files) {
        let backend = format!("instance-{instance}");
        let savepoint = self.savepoints.contains(&id);
        let mut shared = Vec::new();
        let mut files = Vec::new();
        for _ in 0..new.max(u8::from(savepoint)) {
            let name = format!("{}.sst", self.uploads + 1);
            let handle = self.write(id, CheckpointedStateScope::Shared);
            files.push((name.clone(), handle.state_size()));
            shared.push(HandleAndLocalPath::shared(
                handle,
                name.clone(),
                format!("{backend}/{name}"),
            ));
        }
        if !savepoint {
            let base = match late {
                true => &self.previous_base,
                false => &self.base,
            };
            for (name, size) in base.get(&instance).cloned().unwrap_or_default() {
                shared.push(HandleAndLocalPath::new(
                    Arc::new(PlaceholderStreamStateHandle::new(
                        format!("{backend}/{name}"),
                        size,
                    )),
                    name.clone(),
                ));
                files.push((name, size));
            }
        }
        let meta_state = self.write(id, CheckpointedStateScope::Exclusive);
        let handle = IncrementalRemoteKeyedStateHandle {
            backend_identifier: backend,
            key_group_range: MaxParallelism::new(128)
                .unwrap()
                .range_for(instance, INSTANCES)
                .unwrap(),
            checkpoint_id: id,
            strategy: Some("rocksdb-incremental".into()),
            shared_state: shared,
            private_state: vec![],
            meta_state,
        };
        let ack = Acknowledgement {
            snapshot: InstanceSnapshot {
                index: instance,
                keyed: vec![Arc::new(handle) as Arc<dyn KeyedStateHandle>],
                operator: vec![],
            },
            stats: InstanceStats::default(),
        };
        (ack, files)
    }

    fn pick(&self, pending: usize) -> Option<CheckpointId> {
        let ids = self.coordinator.pending();
        (!ids.is_empty()).then(|| ids[pending % ids.len()])
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Trigger { savepoint } => {
                let kind = match savepoint {
                    true => CheckpointType::Savepoint,
                    false => CheckpointType::Checkpoint,
                };
                if let Ok(request) = self.coordinator.trigger(kind, self.now) {
                    self.parts.insert(request.id, BTreeMap::new());
                    if savepoint {
                        self.savepoints.insert(request.id);
                    }
                }
            }
            Step::Acknowledge {
                pending,
                instance,
                new,
                late,
            } => {
                let Some(id) = self.pick(pending) else { return };
                if self.parts[&id].contains_key(&instance) {
                    return;
                }
                let (ack, files) = self.part(id, instance, new, late);
                self.parts.get_mut(&id).unwrap().insert(instance, files);
                // What each retained checkpoint refers to now, before this may subsume it.
                let before: BTreeMap<CheckpointId, BTreeSet<PathBuf>> =
                    (self.coordinator.retained())
                        .into_iter()
                        .map(|retained| (retained, self.referenced(&[retained])))
                        .collect();
                match self.coordinator.acknowledge(id, ack) {
                    Ok(Acknowledged::Completed(done)) => {
                        assert_eq!(done.metadata.checkpoint_id, id);
                        if !self.savepoints.contains(&id) {
                            self.previous_base = std::mem::take(&mut self.base);
                            self.base = self.parts[&id].clone();
                        }
                        self.held = (done.subsumed.iter())
                            .flat_map(|subsumed| before[subsumed].iter().cloned())
                            .collect();
                        self.aborted.extend(done.aborted.iter().copied());
                    }
                    Ok(Acknowledged::Pending { .. }) => {}
                    Ok(Acknowledged::Late) => panic!("checkpoint {id} was pending"),
                    // An injected commit failure, or a base released under a running
                    // checkpoint: either way the checkpoint is aborted.
                    Err(err) => {
                        assert!(
                            matches!(err, Error::Io { .. } | Error::NotFound { .. }),
                            "{err}"
                        );
                        self.aborted.push(id);
                    }
                }
            }
            Step::Decline { pending, instance } => {
                let Some(id) = self.pick(pending) else { return };
                let aborted = self.coordinator.decline(id, instance, "model").unwrap();
                assert_eq!(aborted.id, id);
                self.aborted.push(id);
            }
            Step::Late { instance } => {
                let Some(&id) = self.aborted.last() else {
                    return;
                };
                let (ack, _) = self.part(id, instance, 1, false);
                let outcome = self.coordinator.acknowledge(id, ack).unwrap();
                assert!(matches!(outcome, Acknowledged::Late), "{outcome:?}");
            }
            Step::Expire => {
                self.now += TIMEOUT;
                for aborted in self.coordinator.abort_expired(self.now).unwrap() {
                    self.aborted.push(aborted.id);
                }
            }
            Step::Commits { fail } => self.storage.refuse.store(fail, Ordering::SeqCst),
        }
        // Forget the parts of checkpoints that are no longer pending.
        let pending: BTreeSet<CheckpointId> = self.coordinator.pending().into_iter().collect();
        self.parts.retain(|id, _| pending.contains(id));
        self.written.retain(|id, _| pending.contains(id));
    }

    /// Every path a retained checkpoint refers to (its metadata included), each checked to
    /// be readable.
    fn referenced(&self, ids: &[CheckpointId]) -> BTreeSet<PathBuf> {
        let mut paths = BTreeSet::new();
        for &id in ids {
            let metadata = self.local.load_checkpoint(id).unwrap();
            paths.insert(self.local.checkpoint_dir(id).join("_metadata"));
            for handle in metadata.keyed_handles() {
                let handle = handle
                    .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
                    .unwrap();
                let streams = (handle.shared_state.iter().chain(&handle.private_state))
                    .map(|file| &file.handle)
                    .chain([&handle.meta_state]);
                for stream in streams {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut stream.open().unwrap(), &mut bytes)
                        .unwrap_or_else(|e| panic!("checkpoint {id}: {e}"));
                    paths.insert(path_of(stream));
                }
            }
        }
        paths
    }

    fn stored(&self) -> (BTreeSet<PathBuf>, BTreeSet<PathBuf>) {
        fn walk(dir: &Path, files: &mut BTreeSet<PathBuf>, dirs: &mut BTreeSet<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.insert(path.clone());
                    walk(&path, files, dirs);
                } else {
                    files.insert(path);
                }
            }
        }
        let (mut files, mut dirs) = (BTreeSet::new(), BTreeSet::new());
        walk(&self.root, &mut files, &mut dirs);
        (files, dirs)
    }

    fn check(&self, after: &Step) {
        let retained = self.coordinator.retained();
        let committed = self.local.completed_checkpoints().unwrap();
        assert_eq!(committed, retained, "after {after:?}");
        let checkpoints = (retained.iter())
            .filter(|id| !self.savepoints.contains(id))
            .count();
        assert!(
            checkpoints <= self.num_retained,
            "after {after:?}: {retained:?}"
        );
        let mut expected = self.referenced(&retained);
        expected.extend(self.written.values().flatten().cloned());
        expected.extend(self.held.iter().cloned());
        let (files, dirs) = self.stored();
        let orphans: Vec<_> = files.difference(&expected).collect();
        assert!(orphans.is_empty(), "after {after:?}: orphans {orphans:?}");
        // No checkpoint directory of an aborted or subsumed checkpoint is left.
        let pending = self.coordinator.pending();
        for dir in dirs {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(id) = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                let id = CheckpointId::new(id);
                assert!(
                    retained.contains(&id) || pending.contains(&id),
                    "after {after:?}: directory {name} of no live checkpoint"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_step_loses_a_retained_file_or_leaves_an_orphan(
        steps in prop::collection::vec(step(), 1..40),
        num_retained in 1..3usize,
        max_concurrent in 1..3usize,
    ) {
        let mut run = Run::new(num_retained, max_concurrent);
        for step in &steps {
            run.apply(step);
            run.check(step);
        }
        run.storage.refuse.store(false, Ordering::SeqCst);
        run.coordinator.discard_all().unwrap();
        prop_assert!(run.coordinator.pending().is_empty());
        let savepoints: Vec<CheckpointId> = run.coordinator.retained();
        for id in &savepoints {
            prop_assert!(run.savepoints.contains(id), "checkpoint {} kept", id);
        }
        let kept = run.referenced(&savepoints);
        let (files, _) = run.stored();
        prop_assert_eq!(files, kept, "only the savepoints' files stay");
    }
}

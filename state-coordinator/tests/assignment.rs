//! `plan_restore` on a checkpoint written to a real local directory: every key group and
//! operator state element lands where it must at any parallelism, discarding a planned
//! share deletes no file (the shares read the checkpoint's files, which the coordinator
//! owns), and a plan ships through serde with its shares still downcasting to the handles
//! backends restore.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::{
    CheckpointId, CheckpointMetadata, CheckpointStreamFactory, CheckpointType,
    CheckpointedStateScope, DistributionMode, Error, InstanceSnapshot, KeyGroup, KeyedStateHandle,
    MaxParallelism, OperatorStatePartitions, OperatorStreamStateHandle, StateObject,
    StreamStateHandle,
};
use state_coordinator::{KeyedShare, RestorePlan, StreamShare, plan_restore};
use state_format::key_groups::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
use state_format::storage_root::{AbsoluteLocations, HandleScope, StorageRoot};
use state_storage_local::LocalCheckpointStorage;

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(16);
const CHECKPOINT: CheckpointId = CheckpointId::new(1);
const SPLIT: &str = "split";
const UNION: &str = "union";
const BROADCAST: &str = "broadcast";
/// Bytes of one key group's record, `kg-00007`.
const RECORD: usize = 8;

/// A checkpoint of two old instances committed to a local directory.
struct Bed {
    _dir: tempfile::TempDir,
    storage: LocalCheckpointStorage,
    checkpoint: CheckpointMetadata,
}

impl Bed {
    /// Old instance `i` holds key groups `range_for(i, 2)`, each as its record, and an
    /// operator stream with `3 - i` split elements, one union element and one broadcast
    /// copy.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalCheckpointStorage::new(dir.path())
            .unwrap()
            .with_file_state_threshold(0);
        let mut checkpoint =
            CheckpointMetadata::new(CHECKPOINT, 0, CheckpointType::Checkpoint, MAX_PARALLELISM);
        for index in 0..2 {
            let range = MAX_PARALLELISM.range_for(index, 2).unwrap();
            let records: Vec<u8> = range.iter().flat_map(record).collect();
            let offsets = (0..u64::from(range.len())).map(|i| i * RECORD as u64);
            let offsets = KeyGroupRangeOffsets::with_offsets(range, offsets.collect()).unwrap();
            let keyed = KeyGroupsStateHandle::new(offsets, write(&storage, &records));

            let base = u64::from(index) * 100;
            let split = (0..3 - u64::from(index)).map(|i| base + i).collect();
            let states = BTreeMap::from([
                (
                    SPLIT.to_owned(),
                    partitions(split, DistributionMode::SplitDistribute),
                ),
                (
                    UNION.to_owned(),
                    partitions(vec![base + 50], DistributionMode::Union),
                ),
                (
                    BROADCAST.to_owned(),
                    partitions(vec![base + 90], DistributionMode::Broadcast),
                ),
            ]);
            let operator = OperatorStreamStateHandle::new(states, write(&storage, &[7; 200]));
            checkpoint.instances.push(InstanceSnapshot {
                index,
                keyed: vec![Arc::new(keyed)],
                operator: vec![operator],
            });
        }
        storage.commit_checkpoint(&checkpoint).unwrap();
        // Planned from what a restoring job reads back.
        let checkpoint = storage.load_checkpoint(CHECKPOINT).unwrap();
        Bed {
            _dir: dir,
            storage,
            checkpoint,
        }
    }

    fn plan(&self, parallelism: u32) -> RestorePlan {
        let parallelism = NonZeroU32::new(parallelism).unwrap();
        plan_restore(&self.checkpoint, parallelism, MAX_PARALLELISM).unwrap()
    }

    /// `f` with the storage's handle scope entered, as its metadata is read and written.
    fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        let root: Arc<dyn StorageRoot> = self.storage.local_root().clone();
        let (value, violation) = HandleScope::new(root, AbsoluteLocations::Refused).enter(f);
        assert!(violation.is_none(), "{violation:?}");
        value
    }

    /// Every file under the storage root, with its size.
    fn files(&self) -> BTreeSet<(PathBuf, u64)> {
        fn walk(dir: &Path, files: &mut BTreeSet<(PathBuf, u64)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let metadata = entry.metadata().unwrap();
                if metadata.is_dir() {
                    walk(&entry.path(), files);
                } else {
                    files.insert((entry.path(), metadata.len()));
                }
            }
        }
        let mut files = BTreeSet::new();
        walk(self.storage.root(), &mut files);
        files
    }
}

fn record(key_group: KeyGroup) -> Vec<u8> {
    format!("kg-{:05}", key_group.get()).into_bytes()
}

fn partitions(offsets: Vec<u64>, mode: DistributionMode) -> OperatorStatePartitions {
    OperatorStatePartitions { offsets, mode }
}

/// `bytes` written to a file of the checkpoint.
fn write(storage: &LocalCheckpointStorage, bytes: &[u8]) -> Arc<dyn StreamStateHandle> {
    let factory = storage.stream_factory(CHECKPOINT).unwrap();
    let mut stream = factory
        .create_output_stream(CheckpointedStateScope::Exclusive)
        .unwrap();
    stream.write_all(bytes).unwrap();
    stream.close_and_get_handle().unwrap()
}

/// The record of `key_group` as the keyed handles of one instance read it.
fn read_key_group(handles: &[Arc<dyn KeyedStateHandle>], key_group: KeyGroup) -> Vec<u8> {
    let handle = handles
        .iter()
        .filter_map(|handle| handle.downcast_ref::<KeyGroupsStateHandle>())
        .find(|handle| handle.offsets().range().contains(key_group))
        .unwrap_or_else(|| panic!("no keyed handle covers key group {key_group}"));
    let mut stream = handle.delegate().open().unwrap();
    stream
        .seek(SeekFrom::Start(handle.offsets().offset(key_group).unwrap()))
        .unwrap();
    let mut bytes = vec![0; RECORD];
    stream.read_exact(&mut bytes).unwrap();
    bytes
}

/// (stream, offset) of every partition of `state` in `handles`.
fn elements(handles: &[OperatorStreamStateHandle], state: &str) -> Vec<(String, u64)> {
    handles
        .iter()
        .flat_map(|handle| {
            let stream = handle.delegate().describe();
            let offsets = handle.states().get(state).map(|p| p.offsets.clone());
            offsets
                .unwrap_or_default()
                .into_iter()
                .map(move |offset| (stream.clone(), offset))
        })
        .collect()
}

/// Checks the plan of `bed`'s checkpoint for `parallelism` instances.
fn check(bed: &Bed, parallelism: u32) {
    let plan = bed.plan(parallelism);
    let case = format!("2 -> {parallelism}");
    assert_eq!(plan.checkpoint_id, CHECKPOINT, "{case}");
    assert_eq!(plan.instances.len(), parallelism as usize, "{case}");
    for key_group in MAX_PARALLELISM.all().iter() {
        let owners = plan
            .instances
            .iter()
            .filter(|i| i.key_groups.contains(key_group));
        assert_eq!(owners.count(), 1, "{case}: owners of key group {key_group}");
    }

    let old = bed.checkpoint.operator_handles().concat();
    let mut split = Vec::new();
    for (index, instance) in (0..).zip(&plan.instances) {
        assert_eq!(instance.index, index, "{case}");
        let range = MAX_PARALLELISM.range_for(index, parallelism).unwrap();
        assert_eq!(instance.key_groups, range, "{case}: instance {index}");
        for handle in &instance.keyed {
            let held = handle.key_group_range();
            assert_eq!(
                held.intersection(&range),
                held,
                "{case}: {held} beyond {range}"
            );
        }
        for key_group in range.iter() {
            let bytes = read_key_group(&instance.keyed, key_group);
            assert_eq!(bytes, record(key_group), "{case}: instance {index}");
        }

        split.extend(elements(&instance.operator, SPLIT));
        let union: BTreeSet<_> = elements(&instance.operator, UNION).into_iter().collect();
        let all_union: BTreeSet<_> = elements(&old, UNION).into_iter().collect();
        assert_eq!(union, all_union, "{case}: union at instance {index}");
        let broadcast = elements(&instance.operator, BROADCAST);
        assert_eq!(broadcast.len(), 1, "{case}: broadcast copies at {index}");
    }
    let all_split = elements(&old, SPLIT);
    assert_eq!(
        split.len(),
        all_split.len(),
        "{case}: split elements lost or doubled"
    );
    assert_eq!(
        split.into_iter().collect::<BTreeSet<_>>(),
        all_split.into_iter().collect::<BTreeSet<_>>(),
        "{case}"
    );
}

#[test]
fn every_key_group_and_operator_element_is_assigned_as_its_mode_says() {
    let bed = Bed::new();
    for parallelism in [3, 1, 2, 16] {
        check(&bed, parallelism);
    }
}

#[test]
fn discarding_planned_shares_deletes_no_file() {
    let bed = Bed::new();
    let before = bed.files();
    assert!(before.len() >= 5, "four streams and _metadata: {before:?}");
    let plan = bed.plan(3);
    let first = &plan.instances[0];

    for handle in &first.keyed {
        assert!(handle.is::<KeyedShare>(), "{handle:?}");
        handle.discard().unwrap();
        // A backend narrows a share again before reading it: still a share.
        let narrowed = handle.intersection(&first.key_groups).unwrap();
        narrowed.discard().unwrap();
    }
    for handle in &first.operator {
        let stream = handle.delegate();
        assert!(stream.is::<StreamShare>(), "{stream:?}");
        assert!(!stream.written_by_this_process(), "{stream:?}");
        handle.discard().unwrap();
    }
    assert_eq!(bed.files(), before, "discarding shares deleted files");

    for instance in &plan.instances {
        for key_group in instance.key_groups.iter() {
            let bytes = read_key_group(&instance.keyed, key_group);
            assert_eq!(bytes, record(key_group), "instance {}", instance.index);
        }
        for handle in &instance.operator {
            let mut bytes = Vec::new();
            handle
                .delegate()
                .open()
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            assert_eq!(bytes, [7; 200], "{}", handle.delegate().describe());
            assert_eq!(handle.state_size(), 200);
        }
    }
}

#[test]
fn a_plan_survives_serde_and_its_shares_downcast_to_what_they_show() {
    let bed = Bed::new();
    let plan = bed.plan(3);
    let json = bed.in_scope(|| serde_json::to_string(&plan).unwrap());
    assert!(json.contains("planned-keyed-share"), "{json}");
    assert!(json.contains("planned-share"), "{json}");
    let back: RestorePlan = bed.in_scope(|| serde_json::from_str(&json).unwrap());
    assert_eq!(bed.in_scope(|| serde_json::to_string(&back).unwrap()), json);

    assert_eq!(back.checkpoint_id, plan.checkpoint_id);
    for instance in &back.instances {
        assert!(!instance.keyed.is_empty(), "instance {}", instance.index);
        for handle in &instance.keyed {
            let shown = <dyn KeyedStateHandle>::downcast_ref::<KeyGroupsStateHandle>(&**handle);
            assert!(shown.is_some(), "{handle:?}");
            assert!(handle.is::<KeyGroupsStateHandle>(), "{handle:?}");
        }
        for key_group in instance.key_groups.iter() {
            assert_eq!(
                read_key_group(&instance.keyed, key_group),
                record(key_group)
            );
        }
        for handle in &instance.operator {
            assert!(handle.delegate().is::<StreamShare>(), "{handle:?}");
        }
    }
    let before = bed.files();
    for handle in back.instances.iter().flat_map(|i| &i.keyed) {
        handle.discard().unwrap();
    }
    for handle in back.instances.iter().flat_map(|i| &i.operator) {
        handle.discard().unwrap();
    }
    assert_eq!(bed.files(), before, "deserialized shares deleted files");
}

#[test]
fn another_max_parallelism_is_refused() {
    let bed = Bed::new();
    let other = MaxParallelism::new(32).unwrap();
    let err = plan_restore(&bed.checkpoint, NonZeroU32::MIN, other).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("32"), "{err}");
}

#[test]
fn a_parallelism_above_the_max_parallelism_is_refused() {
    let bed = Bed::new();
    let parallelism = NonZeroU32::new(MAX_PARALLELISM.get() + 1).unwrap();
    let err = plan_restore(&bed.checkpoint, parallelism, MAX_PARALLELISM).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("17"), "{err}");
}

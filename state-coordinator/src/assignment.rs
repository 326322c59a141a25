//! Restore planning, Flink's `StateAssignmentOperation`: from the handles of a completed
//! checkpoint alone, what each instance of a job restores, at any parallelism.
//!
//! - [`plan_restore`] assigns every new instance its key groups, the parts of the old keyed
//!   handles that cover them and its share of the operator state, as a [`RestorePlan`] a
//!   coordinator computes before any instance starts and ships to the instances.
//! - [`repartition_operator_state`] is the round-robin repartitioning of operator list and
//!   broadcast state from N old instances onto M new ones.
//!
//! The shares of a plan point at the files of the checkpoint they come from, which other
//! shares, other plans and the retained checkpoint read too. Those files belong to the
//! coordinator (its retained checkpoints and the [`SharedStateRegistry`](crate::SharedStateRegistry)),
//! so a planned share never deletes anything: the plan wraps each handle in a view,
//! [`KeyedShare`] or [`StreamShare`], whose `discard` does nothing.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use state_api::{
    CheckpointId, CheckpointMetadata, DistributionMode, Error, KeyGroupRange, KeyedStateHandle,
    MaxParallelism, OperatorStatePartitions, OperatorStreamStateHandle, Result, StateInputStream,
    StateObject, StreamStateHandle,
};

/// What every instance of a job restores from one checkpoint: [`plan_restore`]'s answer.
///
/// It serializes (handles through their `typetag` tags), so a distributed engine computes
/// it once and ships each instance its [`InstanceAssignment`]. Handles of a checkpoint
/// storage serialize relative to their storage's root: (de)serialize a plan the way the
/// storage's checkpoint metadata is, in the storage's handle scope (`state-format`'s
/// `HandleScope`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorePlan {
    /// The checkpoint the instances restore.
    pub checkpoint_id: CheckpointId,
    /// One assignment per new instance, by index: `instances[i].index == i`.
    pub instances: Vec<InstanceAssignment>,
}

/// What one new instance restores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceAssignment {
    /// The instance's index among the new parallelism.
    pub index: u32,
    /// The key groups it owns: `max_parallelism.range_for(index, new_parallelism)`.
    pub key_groups: KeyGroupRange,
    /// The parts of the old keyed handles that cover [`key_groups`](Self::key_groups), each
    /// a [`KeyedShare`]; what `KeyedStateBackendFactory::restore` takes.
    pub keyed: Vec<Arc<dyn KeyedStateHandle>>,
    /// Its share of the operator state, each handle over a [`StreamShare`]; what
    /// `OperatorStateBackendFactory::restore` takes.
    pub operator: Vec<OperatorStreamStateHandle>,
}

/// Plans the restore of `checkpoint` by `new_parallelism` instances of a job with
/// `max_parallelism` key groups: for each new instance, its key groups, the parts of every
/// old instance's keyed handles that cover them, and its share of the operator state as
/// [`repartition_operator_state`] distributes it.
///
/// The plan works on handles alone (no backend, no i/o) and is deterministic. Every
/// handle in it is a view that deletes nothing when discarded ([`KeyedShare`],
/// [`StreamShare`]): the checkpoint's files stay the coordinator's.
///
/// # Errors
///
/// [`Error::Incompatible`] when the checkpoint was taken with another max parallelism
/// ([`CheckpointMetadata::check_max_parallelism`]) or old instances record different modes
/// for one operator state; [`Error::InvalidArgument`] for a parallelism above the max
/// parallelism.
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use state_api::checkpoint_metadata::{CheckpointMetadata, InstanceSnapshot};
/// use state_api::{
///     ByteStreamStateHandle, CheckpointId, CheckpointType, KeyGroupRange, MaxParallelism,
/// };
/// use state_coordinator::plan_restore;
/// use state_format::key_groups::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
///
/// // Two old instances of a job with 4 key groups, each holding two of them.
/// let max_parallelism = MaxParallelism::new(4)?;
/// let mut checkpoint =
///     CheckpointMetadata::new(CheckpointId::new(3), 0, CheckpointType::Checkpoint, max_parallelism);
/// for index in 0..2 {
///     let range = max_parallelism.range_for(index, 2)?;
///     let offsets = KeyGroupRangeOffsets::with_offsets(range, vec![0, 8])?;
///     let stream = Arc::new(ByteStreamStateHandle::new(format!("instance-{index}"), vec![0; 16]));
///     checkpoint.instances.push(InstanceSnapshot {
///         index,
///         keyed: vec![Arc::new(KeyGroupsStateHandle::new(offsets, stream))],
///         operator: vec![],
///     });
/// }
///
/// // Restored by one instance: it owns every key group and reads both old handles.
/// let plan = plan_restore(&checkpoint, NonZeroU32::MIN, max_parallelism)?;
/// assert_eq!(plan.instances[0].key_groups, KeyGroupRange::new(0, 3)?);
/// assert_eq!(plan.instances[0].keyed.len(), 2);
/// // Backends downcast a share to the handle it shows.
/// assert!(plan.instances[0].keyed[0].is::<KeyGroupsStateHandle>());
/// # Ok::<(), state_api::Error>(())
/// ```
pub fn plan_restore(
    checkpoint: &CheckpointMetadata,
    new_parallelism: NonZeroU32,
    max_parallelism: MaxParallelism,
) -> Result<RestorePlan> {
    checkpoint.check_max_parallelism(max_parallelism)?;
    let parallelism = new_parallelism.get();
    // Before anything is sized by the parallelism: it is at most the max parallelism.
    let ranges = (0..parallelism)
        .map(|index| max_parallelism.range_for(index, parallelism))
        .collect::<Result<Vec<_>>>()?;
    let keyed = checkpoint.keyed_handles();
    let operator = repartition_operator_state(&checkpoint.operator_handles(), parallelism)?;
    let instances = (0..)
        .zip(ranges)
        .zip(operator)
        .map(|((index, key_groups), operator)| InstanceAssignment {
            index,
            key_groups,
            keyed: (keyed.iter())
                .filter_map(|handle| handle.intersection(&key_groups))
                .map(|part| Arc::new(KeyedShare::new(part)) as Arc<dyn KeyedStateHandle>)
                .collect(),
            operator: (operator.into_iter())
                .map(|handle| {
                    let stream = StreamShare::new(handle.delegate().clone());
                    OperatorStreamStateHandle::new(handle.states().clone(), Arc::new(stream))
                })
                .collect(),
        })
        .collect();
    Ok(RestorePlan {
        checkpoint_id: checkpoint.checkpoint_id,
        instances,
    })
}

/// A view of a keyed handle in a [`RestorePlan`]: it reads what the handle reads, and
/// [`discard`](StateObject::discard) deletes nothing, because the files belong to the
/// checkpoint the plan comes from. Downcasts of `dyn KeyedStateHandle` see through it
/// ([`KeyedStateHandle::viewed`]), so backends restore it as the handle it shows. Serde
/// tag `planned-keyed-share`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyedShare(Arc<dyn KeyedStateHandle>);

impl KeyedShare {
    /// A view of `handle` that deletes nothing.
    pub fn new(handle: Arc<dyn KeyedStateHandle>) -> Self {
        KeyedShare(handle)
    }
}

impl StateObject for KeyedShare {
    /// Deletes nothing: the checkpoint's files are the coordinator's.
    fn discard(&self) -> Result<()> {
        Ok(())
    }

    fn state_size(&self) -> u64 {
        self.0.state_size()
    }
}

#[typetag::serde(name = "planned-keyed-share")]
impl KeyedStateHandle for KeyedShare {
    fn key_group_range(&self) -> KeyGroupRange {
        self.0.key_group_range()
    }

    fn intersection(&self, range: &KeyGroupRange) -> Option<Arc<dyn KeyedStateHandle>> {
        let part = self.0.intersection(range)?;
        Some(Arc::new(KeyedShare(part)))
    }

    fn streams(&self) -> Option<Vec<&Arc<dyn StreamStateHandle>>> {
        self.0.streams()
    }

    fn viewed(&self) -> Option<&dyn KeyedStateHandle> {
        Some(&*self.0)
    }
}

/// A view of a stream in a [`RestorePlan`] (the stream of an operator share): it reads the
/// stream, and [`discard`](StateObject::discard) deletes nothing, because the stream is
/// shared by the shares of every new instance and belongs to the checkpoint the plan comes
/// from. Serde tag `planned-share`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamShare(Arc<dyn StreamStateHandle>);

impl StreamShare {
    /// A view of `stream` that deletes nothing.
    pub fn new(stream: Arc<dyn StreamStateHandle>) -> Self {
        StreamShare(stream)
    }

    /// The stream it shows.
    pub fn stream(&self) -> &Arc<dyn StreamStateHandle> {
        &self.0
    }
}

impl StateObject for StreamShare {
    /// Deletes nothing: the stream is the coordinator's.
    fn discard(&self) -> Result<()> {
        Ok(())
    }

    fn state_size(&self) -> u64 {
        self.0.state_size()
    }
}

#[typetag::serde(name = "planned-share")]
impl StreamStateHandle for StreamShare {
    fn open(&self) -> Result<Box<dyn StateInputStream>> {
        self.0.open()
    }

    fn describe(&self) -> String {
        self.0.describe()
    }

    /// Never: a share was not written by anyone, so no registry may delete it.
    fn written_by_this_process(&self) -> bool {
        false
    }

    fn local_file(&self) -> Option<std::path::PathBuf> {
        self.0.local_file()
    }

    fn stored_path(&self) -> Option<&str> {
        self.0.stored_path()
    }
}

/// For each of `new_parallelism` new instances, the handles it restores from, given the
/// handles of every old instance (`old[i]`: what old instance `i` snapshotted, empty when
/// it had no state).
///
/// The plan works on handles alone (no backend, no i/o), so a coordinator can compute it
/// before any instance starts. Each new instance receives handles over the old streams
/// (the very handles: discarding one deletes a stream other shares read, which is why
/// [`plan_restore`] wraps them in a [`StreamShare`]) that list just the partitions it
/// restores:
///
/// - **split-distribute** lists: every element of every old instance lands on exactly one
///   new instance. When the parallelism is unchanged each instance keeps its own elements;
///   otherwise the elements, in old-instance order, are cut into M contiguous runs whose
///   sizes differ by at most one. Contiguous runs keep an instance's reads to few streams;
///   which instances get the one extra element rotates from state to state, so many small
///   lists do not all pile onto instance 0.
/// - **union** lists: every new instance gets every element of every old instance.
/// - **broadcast** maps: identical on every old instance, so each new instance reads one
///   copy: new instance `j` reads that of the `j mod k`-th of the `k` old instances holding
///   it, spreading the reads.
///
/// Every new instance's handles name every state, with no partitions where it gets none,
/// so an instance that receives no element still knows the state and its serializers. The
/// plan is deterministic: the same handles and parallelism give the same plan.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a parallelism of 0; [`Error::Incompatible`] when old
/// instances record different modes for one state.
///
/// # Example
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Arc;
/// use state_api::{
///     ByteStreamStateHandle, DistributionMode, OperatorStatePartitions, OperatorStreamStateHandle,
/// };
///
/// // One old instance whose split list has three elements at offsets 10, 20 and 30.
/// let partitions = OperatorStatePartitions {
///     offsets: vec![10, 20, 30],
///     mode: DistributionMode::SplitDistribute,
/// };
/// let stream = Arc::new(ByteStreamStateHandle::new("old-0", vec![0; 40]));
/// let handle = OperatorStreamStateHandle::new(BTreeMap::from([("offsets".into(), partitions)]), stream);
///
/// let plan = state_coordinator::repartition_operator_state(&[vec![handle]], 2)?;
/// let offsets = |instance: usize| plan[instance][0].states()["offsets"].offsets.clone();
/// assert_eq!(offsets(0), [10, 20]);
/// assert_eq!(offsets(1), [30]);
/// # Ok::<(), state_api::Error>(())
/// ```
pub fn repartition_operator_state(
    old: &[Vec<OperatorStreamStateHandle>],
    new_parallelism: u32,
) -> Result<Vec<Vec<OperatorStreamStateHandle>>> {
    let new = usize::try_from(new_parallelism)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "cannot repartition operator state to parallelism {new_parallelism}"
            ))
        })?;
    // Every old handle once, with the index of its old instance; plans refer to positions.
    let sources: Vec<(usize, &OperatorStreamStateHandle)> = old
        .iter()
        .enumerate()
        .flat_map(|(instance, handles)| handles.iter().map(move |h| (instance, h)))
        .collect();
    let modes = modes_by_name(&sources)?;

    let mut plan = vec![Plan::new(); new];
    let mut extras_start = 0;
    for (&name, &mode) in &modes {
        let holders = || {
            sources
                .iter()
                .enumerate()
                .filter_map(move |(source, (instance, handle))| {
                    Some((source, *instance, handle.states().get(name)?))
                })
        };
        match mode {
            DistributionMode::SplitDistribute if old.len() == new => {
                for (source, instance, partitions) in holders() {
                    plan[instance].add(source, name, &partitions.offsets);
                }
            }
            DistributionMode::SplitDistribute => {
                let elements: Vec<(usize, u64)> = holders()
                    .flat_map(|(source, _, p)| p.offsets.iter().map(move |&o| (source, o)))
                    .collect();
                let (base, extras) = (elements.len() / new, elements.len() % new);
                let mut rest = elements.as_slice();
                for (index, instance) in plan.iter_mut().enumerate() {
                    // Instances extras_start, extras_start + 1, ... get one more.
                    let extra = (index + new - extras_start) % new < extras;
                    let (run, after) = rest.split_at(base + usize::from(extra));
                    rest = after;
                    for &(source, offset) in run {
                        instance.add(source, name, &[offset]);
                    }
                }
                extras_start = (extras_start + extras) % new;
            }
            DistributionMode::Union => {
                for instance in &mut plan {
                    for (source, _, partitions) in holders() {
                        instance.add(source, name, &partitions.offsets);
                    }
                }
            }
            DistributionMode::Broadcast => {
                let mut copies: Vec<usize> = holders().map(|(_, instance, _)| instance).collect();
                copies.dedup();
                for (index, instance) in plan.iter_mut().enumerate() {
                    let copy = copies[index % copies.len()];
                    for (source, _, partitions) in holders().filter(|h| h.1 == copy) {
                        instance.add(source, name, &partitions.offsets);
                    }
                }
            }
        }
    }

    Ok(plan
        .into_iter()
        .map(|mut instance| {
            for &name in modes.keys() {
                instance.ensure_named(name, &sources);
            }
            instance.into_handles(&sources, &modes)
        })
        .collect())
}

/// The mode of every state named by any handle.
fn modes_by_name<'h>(
    sources: &[(usize, &'h OperatorStreamStateHandle)],
) -> Result<BTreeMap<&'h str, DistributionMode>> {
    let mut modes = BTreeMap::new();
    for (instance, handle) in sources {
        for (name, partitions) in handle.states() {
            let held = *modes.entry(name.as_str()).or_insert(partitions.mode);
            if held != partitions.mode {
                return Err(Error::Incompatible {
                    what: format!(
                        "distribution mode of operator state `{name}` (old instance {instance} differs from an earlier one)"
                    ),
                    held: held.to_string(),
                    requested: partitions.mode.to_string(),
                });
            }
        }
    }
    Ok(modes)
}

/// What one new instance reads: by source position, by state name, the offsets.
#[derive(Debug, Clone)]
struct Plan<'h> {
    sources: BTreeMap<usize, BTreeMap<&'h str, Vec<u64>>>,
}

impl<'h> Plan<'h> {
    fn new() -> Self {
        Plan {
            sources: BTreeMap::new(),
        }
    }

    fn add(&mut self, source: usize, name: &'h str, offsets: &[u64]) {
        self.sources
            .entry(source)
            .or_default()
            .entry(name)
            .or_default()
            .extend_from_slice(offsets);
    }

    /// Names state `name` in some handle of this instance, with no partitions if it got
    /// none: preferably in a handle it reads anyway, else in the first old handle that has
    /// the state.
    fn ensure_named(&mut self, name: &'h str, sources: &[(usize, &OperatorStreamStateHandle)]) {
        if self
            .sources
            .values()
            .any(|states| states.contains_key(name))
        {
            return;
        }
        let has = |source: &usize| sources[*source].1.states().contains_key(name);
        let source = self
            .sources
            .keys()
            .copied()
            .find(has)
            .or_else(|| (0..sources.len()).find(has));
        if let Some(source) = source {
            self.add(source, name, &[]);
        }
    }

    fn into_handles(
        self,
        sources: &[(usize, &OperatorStreamStateHandle)],
        modes: &BTreeMap<&str, DistributionMode>,
    ) -> Vec<OperatorStreamStateHandle> {
        self.sources
            .into_iter()
            .map(|(source, states)| {
                let states = states
                    .into_iter()
                    .map(|(name, offsets)| {
                        let mode = modes[name];
                        (name.to_owned(), OperatorStatePartitions { offsets, mode })
                    })
                    .collect();
                OperatorStreamStateHandle::new(states, sources[source].1.delegate().clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use state_api::{ByteStreamStateHandle, StreamStateHandle};

    use super::*;

    const SPLIT: &str = "split";
    const UNION: &str = "union";
    const BROADCAST: &str = "broadcast";

    /// Old instance `instance`'s handle: `elements` split and union elements, one broadcast.
    /// Offsets are `instance * 1000 + i` so every partition is distinguishable.
    fn old_handle(instance: u64, elements: u64) -> OperatorStreamStateHandle {
        let offsets = |first: u64| (0..elements).map(|i| instance * 1000 + first + i).collect();
        let states = BTreeMap::from([
            (
                SPLIT.to_owned(),
                OperatorStatePartitions {
                    offsets: offsets(0),
                    mode: DistributionMode::SplitDistribute,
                },
            ),
            (
                UNION.to_owned(),
                OperatorStatePartitions {
                    offsets: offsets(500),
                    mode: DistributionMode::Union,
                },
            ),
            (
                BROADCAST.to_owned(),
                OperatorStatePartitions {
                    offsets: vec![instance * 1000 + 999],
                    mode: DistributionMode::Broadcast,
                },
            ),
        ]);
        let stream: Arc<dyn StreamStateHandle> = Arc::new(ByteStreamStateHandle::new(
            format!("old-{instance}"),
            vec![0; 1000],
        ));
        OperatorStreamStateHandle::new(states, stream)
    }

    fn old_instances(elements: &[u64]) -> Vec<Vec<OperatorStreamStateHandle>> {
        (0..)
            .zip(elements)
            .map(|(instance, &n)| vec![old_handle(instance, n)])
            .collect()
    }

    /// (stream name, offset) of every partition of `state` one new instance reads.
    fn partitions(handles: &[OperatorStreamStateHandle], state: &str) -> Vec<(String, u64)> {
        handles
            .iter()
            .flat_map(|h| {
                let stream = h.delegate().describe();
                let offsets = h.states().get(state).map(|p| p.offsets.clone());
                offsets
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |o| (stream.clone(), o))
            })
            .collect()
    }

    fn all_partitions(
        old: &[Vec<OperatorStreamStateHandle>],
        state: &str,
    ) -> BTreeSet<(String, u64)> {
        old.iter().flat_map(|h| partitions(h, state)).collect()
    }

    fn check(elements: &[u64], new: u32) {
        let old = old_instances(elements);
        let plan = repartition_operator_state(&old, new).unwrap();
        let case = format!("{elements:?} -> {new}");
        assert_eq!(plan.len(), new as usize, "{case}");

        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        for (index, handles) in plan.iter().enumerate() {
            let split = partitions(handles, SPLIT);
            sizes.push(split.len());
            seen.extend(split);
            let union: BTreeSet<_> = partitions(handles, UNION).into_iter().collect();
            assert_eq!(
                union,
                all_partitions(&old, UNION),
                "{case}: union at {index}"
            );
            let broadcast = partitions(handles, BROADCAST);
            assert_eq!(broadcast.len(), 1, "{case}: broadcast copies at {index}");
            for state in [SPLIT, UNION, BROADCAST] {
                assert!(
                    handles.iter().any(|h| h.states().contains_key(state)),
                    "{case}: instance {index} does not know `{state}`"
                );
            }
        }
        let expected = all_partitions(&old, SPLIT);
        assert_eq!(
            seen.len(),
            expected.len(),
            "{case}: split elements duplicated or lost"
        );
        assert_eq!(
            seen.into_iter().collect::<BTreeSet<_>>(),
            expected,
            "{case}"
        );
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        if elements.len() != new as usize {
            assert!(max - min <= 1, "{case}: uneven shares {sizes:?}");
        }
        assert_eq!(
            format!("{plan:?}"),
            format!("{:?}", repartition_operator_state(&old, new).unwrap()),
            "{case}: not deterministic"
        );
    }

    #[test]
    fn scaling_up_and_down_places_every_element_exactly_once() {
        for (elements, new) in [
            (&[10][..], 4),
            (&[3, 4, 5, 6][..], 1),
            (&[7, 0, 9][..], 5),
            (&[2][..], 5),
            (&[0, 0][..], 3),
            (&[1, 1, 1, 1, 1][..], 2),
        ] {
            check(elements, new);
        }
    }

    #[test]
    fn unchanged_parallelism_keeps_split_elements_in_place() {
        let old = old_instances(&[5, 0, 2]);
        let plan = repartition_operator_state(&old, 3).unwrap();
        for (index, handles) in plan.iter().enumerate() {
            assert_eq!(
                partitions(handles, SPLIT),
                partitions(&old[index], SPLIT),
                "instance {index}"
            );
            assert_eq!(
                partitions(handles, UNION).len(),
                7,
                "union still goes everywhere"
            );
        }
    }

    #[test]
    fn extra_elements_rotate_between_states() {
        // Two split states of one element each over two instances: one each, not both on 0.
        let mut handle = old_handle(0, 1);
        let mut states = handle.states().clone();
        states.insert(
            "split-2".into(),
            OperatorStatePartitions {
                offsets: vec![7],
                mode: DistributionMode::SplitDistribute,
            },
        );
        handle = OperatorStreamStateHandle::new(states, handle.delegate().clone());
        let plan = repartition_operator_state(&[vec![handle]], 2).unwrap();
        let counts: Vec<usize> = plan
            .iter()
            .map(|h| partitions(h, SPLIT).len() + partitions(h, "split-2").len())
            .collect();
        assert_eq!(counts, [1, 1]);
    }

    #[test]
    fn broadcast_reads_spread_over_old_copies() {
        let old = old_instances(&[1, 1, 1]);
        let plan = repartition_operator_state(&old, 3).unwrap();
        let copies: Vec<_> = plan.iter().map(|h| partitions(h, BROADCAST)).collect();
        let distinct: BTreeSet<_> = copies.iter().collect();
        assert_eq!(distinct.len(), 3, "{copies:?}");
    }

    #[test]
    fn no_state_gives_no_handles() {
        let plan = repartition_operator_state(&[vec![], vec![]], 3).unwrap();
        assert_eq!(plan.len(), 3);
        assert!(plan.iter().all(Vec::is_empty), "{plan:?}");
    }

    #[test]
    fn zero_parallelism_is_refused() {
        let err = repartition_operator_state(&old_instances(&[1]), 0).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn conflicting_modes_are_refused() {
        let mut second = old_handle(1, 1);
        let mut states = second.states().clone();
        if let Some(p) = states.get_mut(SPLIT) {
            p.mode = DistributionMode::Union;
        }
        second = OperatorStreamStateHandle::new(states, second.delegate().clone());
        let err =
            repartition_operator_state(&[vec![old_handle(0, 1)], vec![second]], 2).unwrap_err();
        assert!(matches!(err, Error::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("`split`"), "{err}");
    }
}

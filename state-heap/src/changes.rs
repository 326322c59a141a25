//! Change tracking for incremental heap checkpoints: which entries of which state and key
//! group changed, at O(1) per write, so a checkpoint writes only what changed since the last
//! *completed* checkpoint.
//!
//! Writes record into the *live* [`Segment`]. Each checkpoint's synchronous part seals the
//! live segment under the next sequence number (one move per state and key group, no
//! entries copied) and starts an empty one, so a segment holds exactly the changes between
//! two synchronous parts. The delta of a checkpoint is the union of the sealed segments
//! after the one its base sealed, up to its own; a checkpoint that is aborted or fails
//! leaves its segment in place for the next one. Segments are forgotten only when a
//! checkpoint that covers them completes.
//!
//! What is recorded, per state and key group:
//!
//! | state kind | recorded | the delta writes |
//! |---|---|---|
//! | value, list | the state key (key and namespace) | its current entry, or a tombstone |
//! | map | the state key, and per state key the user keys put or removed, or that the whole map was cleared (after which the user keys start again) | each recorded user key's current entry or a tombstone; for a cleared map a clear mark and every current user key |
//! | priority queue | each timer added or removed: its timestamp's 8 bytes then its state key, one changed key | a put if the queue holds it, else a delete |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::table::Bytes;

/// What changed under one state key of a map state.
#[derive(Debug, Default)]
pub(crate) struct MapChange {
    /// The whole map was cleared (the user keys below came after).
    pub(crate) cleared: bool,
    /// User keys put or removed (since the clear, if any).
    pub(crate) user_keys: HashSet<Bytes>,
}

/// The changes of one state in one key group.
#[derive(Debug)]
pub(crate) enum ShardChanges {
    /// Value and list states: the changed state keys.
    Keys(HashSet<Bytes>),
    /// Map states: the changed state keys and what changed under each.
    Map(HashMap<Bytes, MapChange>),
}

impl ShardChanges {
    fn len(&self) -> usize {
        match self {
            ShardChanges::Keys(keys) => keys.len(),
            ShardChanges::Map(maps) => maps.values().map(|m| m.user_keys.len().max(1)).sum(),
        }
    }
}

/// The changes made between two synchronous parts: per state (by header id), per shard
/// (key group of the backend's range). A state nothing was written to has no shards.
#[derive(Debug, Default)]
pub(crate) struct Segment {
    states: Vec<Vec<Option<ShardChanges>>>,
}

impl Segment {
    /// The changes of state `state` in shard `shard`.
    pub(crate) fn shard(&self, state: usize, shard: usize) -> Option<&ShardChanges> {
        self.states.get(state)?.get(shard)?.as_ref()
    }

    /// Number of changed entries (a cleared map counts once).
    pub(crate) fn len(&self) -> usize {
        self.states
            .iter()
            .flatten()
            .flatten()
            .map(ShardChanges::len)
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    fn slot(&mut self, state: usize, shards: usize, shard: usize) -> &mut Option<ShardChanges> {
        if self.states.len() <= state {
            self.states.resize_with(state + 1, Vec::new);
        }
        let per_shard = &mut self.states[state];
        if per_shard.is_empty() {
            per_shard.resize_with(shards, || None);
        }
        &mut per_shard[shard]
    }
}

/// The live changes of a backend and the sealed segments a checkpoint may still need.
#[derive(Debug)]
pub(crate) struct ChangeLog {
    shards: usize,
    /// Whether writes are recorded: from the first synchronous part on (changes before it
    /// are part of every checkpoint's base anyway).
    recording: bool,
    live: Segment,
    sealed: BTreeMap<u64, Arc<Segment>>,
    next_sequence: u64,
}

impl ChangeLog {
    /// A log for a backend of `shards` key groups that records nothing until the first
    /// [`seal`](Self::seal) (or [`record_from_now`](Self::record_from_now)).
    pub(crate) fn new(shards: usize) -> Self {
        ChangeLog {
            shards,
            recording: false,
            live: Segment::default(),
            sealed: BTreeMap::new(),
            next_sequence: 1,
        }
    }

    /// Records writes from now on (a backend restored as the continuation of a checkpoint:
    /// the next checkpoint is a delta of what changes after the restore).
    pub(crate) fn record_from_now(&mut self) {
        self.recording = true;
    }

    /// The value or list under `key` of state `state` in shard `shard` was put, changed or
    /// removed.
    pub(crate) fn key_changed(&mut self, state: usize, shard: usize, key: &[u8]) {
        if !self.recording {
            return;
        }
        let slot = self.live.slot(state, self.shards, shard);
        if let ShardChanges::Keys(keys) =
            slot.get_or_insert_with(|| ShardChanges::Keys(HashSet::new()))
            && !keys.contains(key)
        {
            keys.insert(Arc::from(key));
        }
    }

    /// User key `user_key` of the map under `key` of state `state` in shard `shard` was put
    /// or removed.
    pub(crate) fn user_key_changed(
        &mut self,
        state: usize,
        shard: usize,
        key: &[u8],
        user_key: &[u8],
    ) {
        if let Some(change) = self.map_change(state, shard, key)
            && !change.user_keys.contains(user_key)
        {
            change.user_keys.insert(Arc::from(user_key));
        }
    }

    /// The whole map under `key` of state `state` in shard `shard` was cleared.
    pub(crate) fn map_cleared(&mut self, state: usize, shard: usize, key: &[u8]) {
        if let Some(change) = self.map_change(state, shard, key) {
            change.cleared = true;
            change.user_keys = HashSet::new();
        }
    }

    fn map_change(&mut self, state: usize, shard: usize, key: &[u8]) -> Option<&mut MapChange> {
        if !self.recording {
            return None;
        }
        let slot = self.live.slot(state, self.shards, shard);
        let ShardChanges::Map(maps) = slot.get_or_insert_with(|| ShardChanges::Map(HashMap::new()))
        else {
            return None;
        };
        if !maps.contains_key(key) {
            maps.insert(Arc::from(key), MapChange::default());
        }
        maps.get_mut(key)
    }

    /// Seals the live changes (one move per state) and returns their sequence number;
    /// recording starts with the first seal.
    pub(crate) fn seal(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.recording = true;
        let segment = std::mem::take(&mut self.live);
        if !segment.is_empty() {
            self.sealed.insert(sequence, Arc::new(segment));
        }
        sequence
    }

    /// The sealed segments after sequence `after` up to and including `upto`, oldest first.
    pub(crate) fn segments(&self, after: u64, upto: u64) -> Vec<Arc<Segment>> {
        if after >= upto {
            return Vec::new();
        }
        self.sealed
            .range(after + 1..=upto)
            .map(|(_, segment)| segment.clone())
            .collect()
    }

    /// Forgets the segments up to and including `sequence`: a checkpoint covering them
    /// completed, so no later checkpoint builds on anything older.
    pub(crate) fn forget_through(&mut self, sequence: u64) {
        self.sealed = self.sealed.split_off(&(sequence + 1));
    }

    /// The number of sealed segments kept.
    #[cfg(test)]
    pub(crate) fn sealed_count(&self) -> usize {
        self.sealed.len()
    }
}

/// The union of the changes of several segments in one state and shard, as the delta
/// writer walks them.
#[derive(Debug)]
pub(crate) enum MergedChanges<'a> {
    /// Value and list states: each changed state key once.
    Keys(Vec<&'a Bytes>),
    /// Map states: each changed state key once, with the union of what changed under it.
    Map(Vec<(&'a Bytes, MergedMapChange<'a>)>),
}

/// The union of the [`MapChange`]s of one state key.
#[derive(Debug, Default)]
pub(crate) struct MergedMapChange<'a> {
    /// Some segment cleared the map: the delta rewrites it whole.
    pub(crate) cleared: bool,
    /// The user keys changed (meaningless when `cleared`).
    pub(crate) user_keys: Vec<&'a Bytes>,
}

/// The union of `segments`' changes of state `state` in shard `shard`; `None` when nothing
/// changed there.
pub(crate) fn merged(
    segments: &[Arc<Segment>],
    state: usize,
    shard: usize,
) -> Option<MergedChanges<'_>> {
    let mut parts = segments
        .iter()
        .filter_map(|segment| segment.shard(state, shard))
        .peekable();
    match parts.peek()? {
        // One segment holds each key once: no set to build.
        ShardChanges::Keys(changed) if segments.len() == 1 => {
            Some(MergedChanges::Keys(changed.iter().collect()))
        }
        ShardChanges::Keys(_) => {
            let mut seen: HashSet<&Bytes> = HashSet::new();
            let mut keys = Vec::new();
            for part in parts {
                if let ShardChanges::Keys(changed) = part {
                    keys.extend(changed.iter().filter(|key| seen.insert(*key)));
                }
            }
            Some(MergedChanges::Keys(keys))
        }
        ShardChanges::Map(_) => {
            let mut merged: HashMap<&Bytes, MergedMapChange<'_>> = HashMap::new();
            let mut seen: HashSet<(&Bytes, &Bytes)> = HashSet::new();
            for part in parts {
                let ShardChanges::Map(changed) = part else {
                    continue;
                };
                for (key, change) in changed {
                    let entry = merged.entry(key).or_default();
                    entry.cleared |= change.cleared;
                    entry.user_keys.extend(
                        change
                            .user_keys
                            .iter()
                            .filter(|user_key| seen.insert((key, *user_key))),
                    );
                }
            }
            Some(MergedChanges::Map(merged.into_iter().collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(merged: Option<MergedChanges<'_>>) -> Vec<Vec<u8>> {
        let Some(MergedChanges::Keys(keys)) = merged else {
            panic!("expected value changes, got {merged:?}");
        };
        let mut keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.to_vec()).collect();
        keys.sort();
        keys
    }

    #[test]
    fn nothing_is_recorded_before_the_first_seal() {
        let mut log = ChangeLog::new(4);
        log.key_changed(0, 1, b"a");
        assert_eq!(log.seal(), 1);
        assert!(
            log.segments(0, 1).is_empty(),
            "changes before the first seal are in every base"
        );
        log.key_changed(0, 1, b"b");
        assert_eq!(log.seal(), 2);
        assert_eq!(keys_of(merged(&log.segments(1, 2), 0, 1)), [b"b".to_vec()]);
    }

    #[test]
    fn segments_merge_without_duplicates_and_are_forgotten_on_completion() {
        let mut log = ChangeLog::new(2);
        log.record_from_now();
        log.key_changed(0, 0, b"a");
        log.key_changed(0, 0, b"a");
        let first = log.seal();
        log.key_changed(0, 0, b"a");
        log.key_changed(0, 0, b"b");
        let second = log.seal();
        let segments = log.segments(0, second);
        assert_eq!(segments.len(), 2);
        assert_eq!(segments.iter().map(|s| s.len()).sum::<usize>(), 3);
        assert_eq!(
            keys_of(merged(&segments, 0, 0)),
            [b"a".to_vec(), b"b".to_vec()]
        );
        assert!(merged(&segments, 0, 1).is_none(), "shard 1 has no changes");
        assert!(merged(&segments, 1, 0).is_none(), "state 1 has no changes");
        log.forget_through(first);
        assert_eq!(log.sealed_count(), 1);
        assert_eq!(
            keys_of(merged(&log.segments(first, second), 0, 0)),
            [b"a".to_vec(), b"b".to_vec()]
        );
    }

    #[test]
    fn a_clear_in_any_segment_rewrites_the_map() {
        let mut log = ChangeLog::new(1);
        log.record_from_now();
        log.user_key_changed(0, 0, b"k", b"u1");
        log.seal();
        log.map_cleared(0, 0, b"k");
        log.user_key_changed(0, 0, b"k", b"u2");
        log.user_key_changed(0, 0, b"j", b"u1");
        let last = log.seal();
        let segments = log.segments(0, last);
        let Some(MergedChanges::Map(mut maps)) = merged(&segments, 0, 0) else {
            panic!("expected map changes");
        };
        maps.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(maps.len(), 2);
        assert_eq!(&**maps[0].0, b"j");
        assert!(!maps[0].1.cleared);
        assert_eq!(&**maps[1].0, b"k");
        assert!(maps[1].1.cleared, "the clear of the second segment wins");
    }
}

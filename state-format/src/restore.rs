//! [`restore_full_snapshots`]: what every keyed backend does to restore full snapshots in
//! the canonical format (savepoints, and checkpoints of full strategies), with rescaling.

use std::sync::Arc;

use state_api::{
    Error, KeyGroupRange, KeyedBackendParams, KeyedStateHandle, MaxParallelism, Registry, Result,
    StateKind, StateMetaInfo,
};

use crate::KeyGroupsStateHandle;
use crate::keyed_format::{CompositeKey, KeyedSnapshotReader, decode_list};
use crate::timer::TimerKey;

/// Checks that the key groups `range` of the snapshot at `location` exist in a job of
/// `max_parallelism` key groups.
///
/// # Errors
///
/// [`Error::Incompatible`] naming the range's end and the max
/// parallelism.
pub fn check_key_groups_fit(
    range: KeyGroupRange,
    max_parallelism: MaxParallelism,
    location: &str,
) -> Result<()> {
    if range.is_empty() || range.end().get() < max_parallelism.get() {
        return Ok(());
    }
    Err(Error::Incompatible {
        what: format!("key groups {range} of snapshot {location}: the number of key groups"),
        held: format!("at least {}", u64::from(range.end().get()) + 1),
        requested: max_parallelism.to_string(),
    })
}

/// Checks, before a restore reads anything, that every handle's key groups exist in a job
/// of `params.max_parallelism` key groups: a handle of a job with more key groups
/// would otherwise be restored in part, the rest silently lost.
///
/// # Errors
///
/// [`Error::Incompatible`] for the first handle that does not fit.
pub fn check_restore_handles(
    params: &KeyedBackendParams,
    handles: &[Arc<dyn KeyedStateHandle>],
) -> Result<()> {
    for handle in handles {
        check_key_groups_fit(
            handle.key_group_range(),
            params.max_parallelism,
            "to restore",
        )?;
    }
    Ok(())
}

/// Where [`restore_full_snapshots`] puts what it reads: a keyed backend's state.
pub trait RestoreTarget {
    /// Registers the states of a snapshot header (or checks them against the registered
    /// ones of the same names) and returns the backend's slot for each, in header order.
    fn register_states(&mut self, states: &[StateMetaInfo]) -> Result<Vec<usize>>;

    /// Stores one entry of the state in `slot`: the canonical composite key and value.
    fn put(&mut self, slot: usize, key: &[u8], value: &[u8]) -> Result<()>;
}

/// Reads every entry of `handles` (full snapshots of one or many old instances of any keyed
/// backend) that lies in `params.key_group_range`, for backend `backend`.
///
/// In order, it checks every handle's key groups against the max parallelism
/// ([`check_restore_handles`]); narrows each handle to the range (handles of other key
/// groups are skipped unread); refuses a handle that is not a [`KeyGroupsStateHandle`] with
/// [`Error::Unsupported`]; opens it, checking its header against `params` (max
/// parallelism, key serializer); registers the header's states with `target`; and hands
/// every entry of the range to `target`. Entries are checked on the way ([`check_entry`]),
/// and empty lists (never
/// written by a correct writer) are skipped.
///
/// # Errors
///
/// Those above, [`Error::Incompatible`] for another key serializer or max parallelism,
/// the reader's [`Error::KeyGroup`] and [`Error::Snapshot`] for damaged snapshots, and
/// the target's errors.
pub fn restore_full_snapshots(
    params: &KeyedBackendParams,
    registry: &Registry,
    handles: &[Arc<dyn KeyedStateHandle>],
    backend: &str,
    target: &mut dyn RestoreTarget,
) -> Result<()> {
    check_restore_handles(params, handles)?;
    let composite = CompositeKey::new(params.max_parallelism);
    let timers = TimerKey::new(params.max_parallelism);
    for handle in handles {
        let Some(part) = handle.intersection(&params.key_group_range) else {
            continue;
        };
        let full = part.downcast_ref::<KeyGroupsStateHandle>().ok_or_else(|| {
            Error::Unsupported(format!(
                "the {backend} backend restores full keyed snapshots (key-groups handles); got {part:?}"
            ))
        })?;
        let mut reader = KeyedSnapshotReader::open(full, registry, params.max_parallelism)?;
        let header = reader.header();
        header.check_key_serializer(&params.key_serializer, &full.delegate().describe())?;
        let states = header.states().to_vec();
        let slots = target.register_states(&states)?;
        for key_group in reader.key_group_range().iter() {
            reader.read_key_group(key_group, &mut |entry| {
                // The reader checked the state id against the header and the key's group.
                let id = usize::from(entry.state_id);
                let meta = &states[id];
                check_entry(meta, composite, timers, entry.key, entry.value)?;
                if meta.kind == StateKind::List && decode_list(entry.value)?.is_empty() {
                    return Ok(());
                }
                target.put(slots[id], entry.key, entry.value)
            })?;
        }
    }
    Ok(())
}

/// Checks that an entry read for state `meta` has the layout of its kind: a value or list
/// entry no user key, a timer a [timer key](crate::timer) and no value, and the value of a
/// state with a time to live its [timestamps](crate::ttl).
///
/// # Errors
///
/// [`Error::Corrupted`] naming the state.
pub fn check_entry(
    meta: &StateMetaInfo,
    composite: CompositeKey,
    timers: TimerKey,
    key: &[u8],
    value: &[u8],
) -> Result<()> {
    let wrong = |reason: &str| Error::Corrupted {
        what: format!("entry of {} state `{}`", meta.kind, meta.name),
        reason: reason.into(),
    };
    crate::ttl::check_stored(meta, value)?;
    match meta.kind {
        StateKind::Map => Ok(()),
        StateKind::PriorityQueue if !value.is_empty() => Err(wrong("a timer carries a value")),
        StateKind::PriorityQueue => timers.split(key).map(drop),
        StateKind::Value | StateKind::List => match composite.split(key)?.user_key.is_empty() {
            true => Ok(()),
            false => Err(wrong("the key carries a user key")),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use state_api::{
        ByteStreamStateHandle, CheckpointId, IncrementalRemoteKeyedStateHandle, KeyGroup,
        KeyGroupRange, MaxParallelism, UncompressedStreamCompressionDecorator,
    };

    use super::*;
    use crate::KeyedBackendSerializationProxy;
    use crate::keyed_format::{KeyedSnapshotWriter, encode_list};

    const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);

    fn states() -> Vec<StateMetaInfo> {
        vec![
            StateMetaInfo::value("count", "void", "u64"),
            StateMetaInfo::list("seen", "void", "string"),
        ]
    }

    fn composite(key_group: u32, key: &[u8], user_key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        CompositeKey::new(MAX_PARALLELISM)
            .build_into(
                KeyGroup::new(key_group).unwrap(),
                key,
                b"",
                user_key,
                &mut out,
            )
            .unwrap();
        out
    }

    /// A full snapshot of `range` in which every key group holds `entries(key_group)`.
    fn snapshot(
        range: KeyGroupRange,
        key_serializer: &str,
        entries: impl Fn(u32) -> Vec<(u16, Vec<u8>, Vec<u8>)>,
    ) -> Arc<dyn KeyedStateHandle> {
        let header =
            KeyedBackendSerializationProxy::new(key_serializer, states(), "none", MAX_PARALLELISM);
        let mut bytes = Vec::new();
        let decorator = UncompressedStreamCompressionDecorator;
        let mut writer =
            KeyedSnapshotWriter::new(&mut bytes, 0, &header, &decorator, range, MAX_PARALLELISM)
                .unwrap();
        for key_group in range.iter() {
            let group_entries = entries(key_group.get());
            writer
                .write_key_group(key_group, |group| {
                    for (state, key, value) in &group_entries {
                        group.write_entry(*state, key, value)?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        let (offsets, checksums) = writer.finish().unwrap();
        let stream = Arc::new(ByteStreamStateHandle::new("snapshot", bytes));
        let handle = KeyGroupsStateHandle::new(offsets, stream).with_checksums(checksums);
        Arc::new(handle.unwrap())
    }

    /// One counter per key group, and a list for every even key group.
    fn counters(key_group: u32) -> Vec<(u16, Vec<u8>, Vec<u8>)> {
        let mut entries = vec![(
            0,
            composite(key_group, b"k", b""),
            key_group.to_be_bytes().to_vec(),
        )];
        if key_group.is_multiple_of(2) {
            let mut list = Vec::new();
            encode_list([&b"a"[..], b"b"], &mut list).unwrap();
            entries.push((1, composite(key_group, b"k", b""), list));
        }
        entries
    }

    #[derive(Default)]
    struct Collected {
        registered: Vec<String>,
        entries: Vec<(usize, Vec<u8>, Vec<u8>)>,
    }

    impl RestoreTarget for Collected {
        fn register_states(&mut self, states: &[StateMetaInfo]) -> Result<Vec<usize>> {
            // Registered in reverse: slots need not be header ids.
            self.registered = states.iter().rev().map(|s| s.name.clone()).collect();
            Ok((0..states.len()).rev().collect())
        }

        fn put(&mut self, slot: usize, key: &[u8], value: &[u8]) -> Result<()> {
            self.entries.push((slot, key.to_vec(), value.to_vec()));
            Ok(())
        }
    }

    fn params(range: KeyGroupRange) -> KeyedBackendParams {
        KeyedBackendParams::new(MAX_PARALLELISM, range)
    }

    fn restore(range: KeyGroupRange, handles: &[Arc<dyn KeyedStateHandle>]) -> Result<Collected> {
        let mut target = Collected::default();
        let registry = Registry::global();
        restore_full_snapshots(&params(range), registry, handles, "test", &mut target)?;
        Ok(target)
    }

    #[test]
    fn entries_of_the_new_range_reach_their_slots() {
        let old = [
            snapshot(KeyGroupRange::new(0, 63).unwrap(), "bytes", counters),
            snapshot(KeyGroupRange::new(64, 127).unwrap(), "bytes", counters),
        ];
        let restored = restore(KeyGroupRange::new(32, 95).unwrap(), &old).unwrap();
        assert_eq!(restored.registered, ["seen", "count"]);
        let composite = CompositeKey::new(MAX_PARALLELISM);
        let groups: BTreeSet<u32> = (restored.entries.iter())
            .map(|(_, key, _)| composite.split(key).unwrap().key_group.get())
            .collect();
        assert_eq!(groups, (32..=95).collect());
        let counts = restored
            .entries
            .iter()
            .filter(|(slot, ..)| *slot == 1)
            .count();
        let lists = restored
            .entries
            .iter()
            .filter(|(slot, ..)| *slot == 0)
            .count();
        assert_eq!(
            (counts, lists),
            (64, 32),
            "state 0 in slot 1, state 1 in slot 0"
        );
    }

    #[test]
    fn other_handle_kinds_are_unsupported() {
        let incremental: Arc<dyn KeyedStateHandle> = Arc::new(IncrementalRemoteKeyedStateHandle {
            backend_identifier: "b".into(),
            key_group_range: KeyGroupRange::new(0, 127).unwrap(),
            checkpoint_id: CheckpointId::new(1),
            strategy: Some("rocksdb-incremental".into()),
            shared_state: vec![],
            private_state: vec![],
            meta_state: Arc::new(ByteStreamStateHandle::new("meta", vec![])),
        });
        let err = restore(KeyGroupRange::new(0, 127).unwrap(), &[incremental])
            .err()
            .unwrap();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("the test backend"), "{err}");
    }

    #[test]
    fn another_key_serializer_is_incompatible() {
        let old = [snapshot(
            KeyGroupRange::new(0, 127).unwrap(),
            "string",
            counters,
        )];
        let err = restore(KeyGroupRange::new(0, 127).unwrap(), &old)
            .err()
            .unwrap();
        assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    }

    /// Version 3 cannot lay out a user key in a value state's entry; version 2 could.
    #[test]
    fn a_value_entry_with_a_user_key_is_corrupted() {
        let header =
            KeyedBackendSerializationProxy::new("bytes", states(), "none", MAX_PARALLELISM);
        let old: [Arc<dyn KeyedStateHandle>; 1] = [Arc::new(
            crate::keyed_format::fixed_lengths::write_version_2(
                &header,
                KeyGroupRange::new(0, 3).unwrap(),
                |key_group| vec![(0, composite(key_group.get(), b"k", b"user"), vec![1])],
            ),
        )];
        let err = restore(KeyGroupRange::new(0, 3).unwrap(), &old)
            .err()
            .unwrap();
        assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains("carries a user key"), "{err}");
    }

    #[test]
    fn empty_lists_are_skipped() {
        let old = [snapshot(
            KeyGroupRange::new(0, 3).unwrap(),
            "bytes",
            |key_group| vec![(1, composite(key_group, b"k", b""), vec![])],
        )];
        let restored = restore(KeyGroupRange::new(0, 3).unwrap(), &old).unwrap();
        assert!(restored.entries.is_empty(), "{:?}", restored.entries);
    }
}

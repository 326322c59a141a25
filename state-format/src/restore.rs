//! [`restore_full_snapshots`]: what every keyed backend does to restore full snapshots in
//! the canonical format (savepoints, and checkpoints of full strategies), with rescaling.

use std::sync::Arc;

use state_api::{
    Error, KeyedBackendParams, KeyedStateHandle, Registry, Result, StateKind, StateMetaInfo,
    check_restore_handles,
};

use crate::KeyGroupsStateHandle;
use crate::keyed_format::{CompositeKey, KeyedSnapshotReader, decode_list};

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
/// every entry of the range to `target`. Entries are checked on the way: a value or
/// list entry whose key carries a user key is [`Error::Corrupted`], and empty lists (never
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
                if meta.kind != StateKind::Map && !composite.split(entry.key)?.user_key.is_empty() {
                    return Err(Error::Corrupted {
                        what: format!("entry of {} state `{}`", meta.kind, meta.name),
                        reason: "the key carries a user key".into(),
                    });
                }
                if meta.kind == StateKind::List && decode_list(entry.value)?.is_empty() {
                    return Ok(());
                }
                target.put(slots[id], entry.key, entry.value)
            })?;
        }
    }
    Ok(())
}

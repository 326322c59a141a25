//! Restoring an `ordered` backend, with rescaling, from full keyed snapshots of any keyed
//! backend: only the key groups of the new range are read.

use std::sync::Arc;

use state_api::{Error, KeyedBackendParams, KeyedStateHandle, Registry, Result, StateKind};
use state_format::KeyGroupsStateHandle;
use state_format::keyed_format::{CompositeKey, KeyedSnapshotReader, decode_list};

use crate::backend::{OrderedKeyedStateBackend, States, register};

impl OrderedKeyedStateBackend {
    /// A backend holding the state of `handles` (from one or many old instances of any
    /// keyed backend) restricted to `params.key_group_range`.
    ///
    /// # Errors
    ///
    /// Those of [`new`](Self::new); handles that are not key-groups handles
    /// ([`Error::Unsupported`]); handles of more key groups, another key serializer or
    /// other state meta info ([`Error::Incompatible`]); damaged snapshots (the reader's
    /// [`Error::KeyGroup`] and [`Error::Snapshot`]).
    pub fn restore(
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Self> {
        state_api::check_restore_handles(&params, handles)?;
        let backend = Self::new(params.clone(), registry)?;
        {
            let mut states = backend.snapshot_source().lock();
            for handle in handles {
                let Some(part) = handle.intersection(&params.key_group_range) else {
                    continue;
                };
                let full = part.downcast_ref::<KeyGroupsStateHandle>().ok_or_else(|| {
                    Error::Unsupported(format!(
                        "the ordered backend restores full keyed snapshots (key-groups handles); got {part:?}"
                    ))
                })?;
                restore_handle(&mut states, &params, registry, full)?;
            }
        }
        Ok(backend)
    }
}

/// Reads every key group of `handle` (already narrowed to the backend's range) into
/// `states`, registering the snapshot's states first.
fn restore_handle(
    states: &mut States,
    params: &KeyedBackendParams,
    registry: &Registry,
    handle: &KeyGroupsStateHandle,
) -> Result<()> {
    let mut reader = KeyedSnapshotReader::open(handle, registry, params.max_parallelism)?;
    let header = reader.header();
    header.check_key_serializer(&params.key_serializer, &handle.delegate().describe())?;
    // Header id -> position in `states`.
    let ids = (header.states().iter())
        .map(|meta| register(states, meta))
        .collect::<Result<Vec<_>>>()?;
    let composite = CompositeKey::new(params.max_parallelism);
    for key_group in reader.key_group_range().iter() {
        reader.read_key_group(key_group, &mut |entry| {
            // The reader checked the state id against the header and the key's key group.
            let state = &mut states[ids[usize::from(entry.state_id)]];
            let kind = state.meta.kind;
            let parts = composite.split(entry.key)?;
            if kind != StateKind::Map && !parts.user_key.is_empty() {
                return Err(Error::Corrupted {
                    what: format!("entry of {kind} state `{}`", state.meta.name),
                    reason: "the key carries a user key".into(),
                });
            }
            // Lists are checked as they are read; empty ones are never stored.
            if kind == StateKind::List && decode_list(entry.value)?.is_empty() {
                return Ok(());
            }
            let entries = Arc::make_mut(&mut state.entries);
            entries.insert(entry.key.to_vec(), entry.value.to_vec());
            Ok(())
        })?;
    }
    Ok(())
}

//! Restoring a heap backend from full keyed snapshots, with rescaling: any set of
//! key-groups handles (from one or many old instances) is read, and only the key groups of
//! the new range are kept.

use std::sync::Arc;

use state_api::keyed_format::KeyedSnapshotReader;
use state_api::{Error, KeyGroupsStateHandle, KeyedStateHandle, Registry, Result};

use crate::format::restore_entry;
use crate::table::HeapTables;

/// Reads the part of every handle that intersects `tables.range` into `tables`.
pub(crate) fn restore(
    tables: &mut HeapTables,
    key_serializer: &str,
    registry: &Registry,
    handles: &[Arc<dyn KeyedStateHandle>],
) -> Result<()> {
    for handle in handles {
        let Some(part) = handle.intersection(&tables.range) else {
            continue;
        };
        let part = part
            .as_any()
            .downcast_ref::<KeyGroupsStateHandle>()
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "the heap backend restores full keyed snapshots (key-groups handles); got {part:?}"
                ))
            })?;
        restore_handle(tables, key_serializer, registry, part)?;
    }
    Ok(())
}

fn restore_handle(
    tables: &mut HeapTables,
    key_serializer: &str,
    registry: &Registry,
    handle: &KeyGroupsStateHandle,
) -> Result<()> {
    let mut reader = KeyedSnapshotReader::open(handle, registry, tables.max_parallelism)?;
    let header = reader.header();
    if header.key_serializer() != key_serializer {
        return Err(Error::Incompatible {
            what: format!(
                "key serializer of snapshot {}",
                handle.delegate().describe()
            ),
            held: header.key_serializer().to_owned(),
            requested: key_serializer.to_owned(),
        });
    }
    // Header id -> index of the state in this backend.
    let ids = header
        .states()
        .iter()
        .map(|meta| tables.register(meta))
        .collect::<Result<Vec<_>>>()?;
    let composite = reader.composite_key();
    for key_group in reader.key_group_range().iter() {
        let shard = tables.shard(key_group)?;
        reader.read_key_group(key_group, &mut |entry| {
            // The reader checked the id against the header.
            let state = &mut tables.states[ids[usize::from(entry.state_id)]];
            restore_entry(state, shard, composite, entry)
        })?;
    }
    Ok(())
}

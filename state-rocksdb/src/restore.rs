//! Full restore of a RocksDB backend from canonical keyed snapshots (its own full
//! snapshots, or another backend's savepoints), with rescaling: only the key groups of the
//! new range are read, from any number of old instances' handles.

use std::sync::Arc;

use rocksdb::WriteBatch;
use state_api::keyed_format::{KeyedSnapshotReader, decode_list};
use state_api::{Error, KeyGroupsStateHandle, KeyedStateHandle, Registry, Result, StateKind};

use crate::backend::{RocksDBKeyedStateBackend, db_error};

/// Bytes collected in a write batch before it is written.
const BATCH_BYTES: usize = 4 << 20;

/// Reads the part of every handle that intersects the backend's range into the backend.
pub(crate) fn restore_full(
    backend: &mut RocksDBKeyedStateBackend,
    registry: &Registry,
    handles: &[Arc<dyn KeyedStateHandle>],
) -> Result<()> {
    for handle in handles {
        let Some(part) = handle.intersection(&backend.key_group_range()) else {
            continue;
        };
        let part = part
            .as_any()
            .downcast_ref::<KeyGroupsStateHandle>()
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "the RocksDB backend restores full keyed snapshots (key-groups handles) here; got {part:?}"
                ))
            })?;
        restore_handle(backend, registry, part)?;
    }
    Ok(())
}

fn restore_handle(
    backend: &RocksDBKeyedStateBackend,
    registry: &Registry,
    handle: &KeyGroupsStateHandle,
) -> Result<()> {
    let composite = backend.composite_key();
    let max_parallelism = backend.number_of_key_groups_internal();
    let mut reader = KeyedSnapshotReader::open(handle, registry, max_parallelism)?;
    let header = reader.header().clone();
    if header.key_serializer() != backend.key_serializer() {
        return Err(Error::Incompatible {
            what: format!(
                "key serializer of snapshot {}",
                handle.delegate().describe()
            ),
            held: header.key_serializer().to_owned(),
            requested: backend.key_serializer().to_owned(),
        });
    }
    // Header id -> (column family, kind).
    let families = header
        .states()
        .iter()
        .map(|meta| Ok((backend.register(meta)?, meta.kind)))
        .collect::<Result<Vec<_>>>()?;
    let db = backend.db()?;
    let mut batch = WriteBatch::default();
    for key_group in reader.key_group_range().iter() {
        reader.read_key_group(key_group, &mut |entry| {
            // The reader checked the id against the header and the key's key group.
            let (family, kind) = &families[usize::from(entry.state_id)];
            let parts = composite.split(entry.key)?;
            match kind {
                StateKind::Value | StateKind::List if !parts.user_key.is_empty() => {
                    return Err(Error::Corrupted {
                        what: format!("entry of {kind} state id {}", entry.state_id),
                        reason: "the key carries a user key".into(),
                    });
                }
                StateKind::List => {
                    decode_list(entry.value)?;
                }
                StateKind::Value | StateKind::Map => {}
            }
            batch.put_cf(family, entry.key, entry.value);
            if batch.size_in_bytes() >= BATCH_BYTES {
                db.write_opt(std::mem::take(&mut batch), backend.write_options())
                    .map_err(db_error("writing restored entries"))?;
            }
            Ok(())
        })?;
    }
    db.write_opt(batch, backend.write_options())
        .map_err(db_error("writing restored entries"))
}

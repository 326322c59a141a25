//! Restoring a heap backend, with rescaling: any set of full key-groups handles and
//! `heap-incremental` handles (from one or many old instances) is read, and only the key
//! groups of the new range are kept.
//!
//! An incremental handle is read file by file in chain order (the base, then each delta),
//! each file key group by key group with its checksums, so the last change wins. When the
//! backend checkpoints incrementally and is restored from exactly one incremental handle of
//! exactly its range, its next checkpoint continues that chain instead of starting a new
//! base.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use state_api::file_manifest::FileManifest;
use state_api::keyed_format::{CompositeKey, KeyedEntry, KeyedSnapshotReader};
use state_api::{
    Error, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle, KeyGroupsStateHandle,
    KeyedBackendSerializationProxy, KeyedStateHandle, Registry, Result, StreamStateHandle,
};

use crate::backend::Heap;
use crate::chain::{Chain, FileKind};
use crate::format::{apply_delta_entry, restore_entry};
use crate::table::{HeapTables, StateTable};

/// How entries of a file change the state.
type Apply = fn(&mut StateTable, usize, CompositeKey, KeyedEntry<'_>) -> Result<()>;

/// Reads the part of every handle that intersects the backend's range into `heap`.
pub(crate) fn restore(
    heap: &mut Heap,
    key_serializer: &str,
    registry: &Registry,
    handles: &[Arc<dyn KeyedStateHandle>],
) -> Result<()> {
    let tables = &mut heap.tables;
    let mut continuation = None;
    for handle in handles {
        let Some(part) = handle.intersection(&tables.range) else {
            continue;
        };
        let any = part.as_any();
        if let Some(full) = any.downcast_ref::<KeyGroupsStateHandle>() {
            restore_handle(tables, key_serializer, registry, full, restore_entry)?;
        } else if let Some(incremental) = any.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
            let chain = restore_incremental(tables, key_serializer, registry, incremental)?;
            if handles.len() == 1 && incremental.key_group_range == tables.range {
                continuation = Some((incremental.checkpoint_id, chain));
            }
        } else {
            return Err(Error::Unsupported(format!(
                "the heap backend restores full keyed snapshots (key-groups handles) and heap-incremental checkpoints; got {part:?}"
            )));
        }
    }
    if let (Some(incremental), Some((checkpoint_id, chain))) = (&mut heap.incremental, continuation)
    {
        incremental.history.continue_from(checkpoint_id, chain);
        incremental.changes.record_from_now();
    }
    Ok(())
}

/// Reads the key groups of `handle` that the backend owns, handing each entry to `apply`.
fn restore_handle(
    tables: &mut HeapTables,
    key_serializer: &str,
    registry: &Registry,
    handle: &KeyGroupsStateHandle,
    apply: Apply,
) -> Result<()> {
    let mut reader = KeyedSnapshotReader::open(handle, registry, tables.max_parallelism)?;
    let header = reader.header();
    check_key_serializer(header, key_serializer, &handle.delegate().describe())?;
    // Header id -> index of the state in this backend.
    let ids = header
        .states()
        .iter()
        .map(|meta| tables.register(meta))
        .collect::<Result<Vec<_>>>()?;
    let composite = reader.composite_key();
    let groups = reader.key_group_range().intersection(&tables.range);
    for key_group in groups.iter() {
        let shard = tables.shard(key_group)?;
        reader.read_key_group(key_group, &mut |entry| {
            // The reader checked the id against the header.
            let state = &mut tables.states[ids[usize::from(entry.state_id)]];
            apply(state, shard, composite, entry)
        })?;
    }
    Ok(())
}

fn check_key_serializer(
    header: &KeyedBackendSerializationProxy,
    key_serializer: &str,
    location: &str,
) -> Result<()> {
    if header.key_serializer() != key_serializer {
        return Err(Error::Incompatible {
            what: format!("key serializer of snapshot {location}"),
            held: header.key_serializer().to_owned(),
            requested: key_serializer.to_owned(),
        });
    }
    Ok(())
}

/// The meta data of a `heap-incremental` checkpoint: header, file manifest, chain.
pub(crate) struct IncrementalMeta {
    pub(crate) header: KeyedBackendSerializationProxy,
    pub(crate) manifest: FileManifest,
    pub(crate) chain: Chain,
}

/// Reads the meta data stream of `handle`.
///
/// # Errors
///
/// [`Error::Snapshot`] naming the stream around what is wrong with it;
/// [`Error::Unsupported`] for the incremental snapshot of another backend.
pub(crate) fn read_meta(handle: &IncrementalRemoteKeyedStateHandle) -> Result<IncrementalMeta> {
    let location = handle.meta_state.describe();
    let wrap = |source: Error| Error::Snapshot {
        location: location.clone(),
        source: Box::new(source),
    };
    let mut input = handle.meta_state.open().map_err(wrap)?;
    let header = KeyedBackendSerializationProxy::read_from(&mut input).map_err(wrap)?;
    let manifest = FileManifest::read_from(&mut input).map_err(wrap)?;
    let mut first = [0u8; 1];
    let read = input
        .read(&mut first)
        .map_err(|e| wrap(Error::stream("reading the heap incremental chain", e)))?;
    if read == 0 {
        // A RocksDB checkpoint always lists its CURRENT file; a heap chain never does.
        if manifest.get("CURRENT").is_some() {
            return Err(Error::Unsupported(format!(
                "incremental snapshot {location} of checkpoint {} is a RocksDB checkpoint, not a heap chain: restore it with backend rocksdb, or restore a savepoint",
                handle.checkpoint_id
            )));
        }
        return Err(wrap(Error::Truncated {
            what: "heap incremental chain".into(),
            reason: "the meta data ends before it".into(),
        }));
    }
    let chain = Chain::read_from(&mut first.as_slice().chain(input)).map_err(wrap)?;
    Ok(IncrementalMeta {
        header,
        manifest,
        chain,
    })
}

/// The files of `handle` by name, checked against its manifest and chain; returns the chain
/// with every file's registry key and checksum filled in, and the files' streams in chain
/// order.
///
/// # Errors
///
/// [`Error::Corrupted`] naming the file and checkpoint for a file the handle lacks, one the
/// manifest does not list, or a chain file whose size the manifest contradicts.
pub(crate) fn chain_files(
    handle: &IncrementalRemoteKeyedStateHandle,
    meta: &IncrementalMeta,
) -> Result<(Chain, Vec<Arc<dyn StreamStateHandle>>)> {
    let checkpoint_id = handle.checkpoint_id;
    let corrupted = |name: &str, reason: &str| Error::Corrupted {
        what: format!("file `{name}` of heap-incremental checkpoint {checkpoint_id}"),
        reason: reason.to_owned(),
    };
    let mut by_name: BTreeMap<&str, &HandleAndLocalPath> = BTreeMap::new();
    for file in handle.shared_state.iter().chain(&handle.private_state) {
        if meta.manifest.get(&file.local_path).is_none() {
            return Err(corrupted(
                &file.local_path,
                "the snapshot's file list does not name it",
            ));
        }
        if by_name.insert(&file.local_path, file).is_some() {
            return Err(corrupted(&file.local_path, "the handle lists it twice"));
        }
    }
    for entry in &meta.manifest.files {
        if !by_name.contains_key(entry.name.as_str()) {
            return Err(corrupted(&entry.name, "the handle does not carry it"));
        }
    }
    let mut chain = meta.chain.clone();
    let mut streams = Vec::with_capacity(chain.files.len());
    for file in &mut chain.files {
        let (Some(stored), Some(listed)) = (
            by_name.get(file.name.as_str()),
            meta.manifest.get(&file.name),
        ) else {
            return Err(corrupted(
                &file.name,
                "the chain names a file the snapshot does not list",
            ));
        };
        if listed.size != file.end {
            return Err(corrupted(
                &file.name,
                &format!(
                    "the file list records {} bytes, the chain {}",
                    listed.size, file.end
                ),
            ));
        }
        file.key = handle.shared_key(stored);
        file.crc = listed.crc;
        streams.push(stored.handle.clone());
    }
    Ok((chain, streams))
}

/// Reads the chain of `handle` into `tables`, file by file; returns the chain.
fn restore_incremental(
    tables: &mut HeapTables,
    key_serializer: &str,
    registry: &Registry,
    handle: &IncrementalRemoteKeyedStateHandle,
) -> Result<Chain> {
    let meta = read_meta(handle)?;
    check_key_serializer(&meta.header, key_serializer, &handle.meta_state.describe())?;
    let (chain, streams) = chain_files(handle, &meta)?;
    for (file, stream) in chain.files.iter().zip(streams) {
        let (apply, kind): (Apply, _) = match file.kind {
            FileKind::Base => (restore_entry, "base"),
            FileKind::Delta => (apply_delta_entry, "delta"),
        };
        let location = format!(
            "{kind} file `{}` ({}) of heap-incremental checkpoint {}",
            file.name,
            stream.describe(),
            handle.checkpoint_id
        );
        let key_groups = file.key_groups_handle(stream)?;
        restore_handle(tables, key_serializer, registry, &key_groups, apply).map_err(|source| {
            Error::Snapshot {
                location,
                source: Box::new(source),
            }
        })?;
    }
    Ok(chain)
}

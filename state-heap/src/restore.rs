//! Restoring a heap backend, with rescaling: any set of full key-groups handles and
//! `heap-incremental` handles (from one or many old instances) is read, and only the key
//! groups of the new range are kept.
//!
//! An incremental handle is read in chain order (the base, then each delta), each file key
//! group by key group with its checksums, so the last change wins. Key groups are
//! independent, so two threads read them (see [`restore`]). When the
//! backend checkpoints incrementally and is restored from exactly one incremental handle of
//! exactly its range, its next checkpoint continues that chain instead of starting a new
//! base.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use state_api::{
    Error, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle, KeyGroup, KeyedBackendParams,
    KeyedStateHandle, MaxParallelism, Registry, Result, StreamStateHandle,
};
use state_format::KeyGroupsStateHandle;
use state_format::KeyedBackendSerializationProxy;
use state_format::file_manifest::FileManifest;
use state_format::incremental_meta;
use state_format::keyed_format::{CompositeKey, KeyedEntry, KeyedSnapshotReader};
use state_format::parallel::{KeyGroupShare, run_in_two, split_by_weight};

use crate::backend::{Heap, HeapKeyedStateBackend};
use crate::chain::{Chain, FileKind};
use crate::format::{apply_delta_entry, restore_entry};
use crate::table::{HeapTables, StateTable};

/// How entries of a file change the state.
type Apply = fn(&mut StateTable, usize, CompositeKey, KeyedEntry<'_>) -> Result<()>;

/// One stream to read: a full snapshot, or one file of an incremental chain.
struct Source {
    handle: KeyGroupsStateHandle,
    /// Header id -> index of the state in the backend.
    ids: Vec<usize>,
    apply: Apply,
    /// Named around its errors (the files of a chain).
    location: Option<String>,
}

impl Source {
    fn wrap(&self, source: Error) -> Error {
        match &self.location {
            Some(location) => Error::Snapshot {
                location: location.clone(),
                source: Box::new(source),
            },
            None => source,
        }
    }
}

impl HeapKeyedStateBackend {
    /// A backend holding the state of `handles` restricted to `params.key_group_range`.
    ///
    /// # Errors
    ///
    /// Those of [`new`](Self::new), and of restore: handles that are not full keyed
    /// snapshots ([`Error::Unsupported`]), a different key serializer or state meta info
    /// ([`Error::Incompatible`]), damaged snapshots ([`Error::KeyGroup`] and
    /// [`Error::Snapshot`] naming the key group or header).
    pub fn restore(
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Self> {
        state_format::check_restore_handles(&params, handles)?;
        let key_serializer = params.key_serializer.clone();
        let backend = Self::new(params, registry)?;
        {
            let mut heap = backend.snapshot_source().lock();
            restore(&mut heap, &key_serializer, registry, handles)?;
        }
        Ok(backend)
    }
}

/// Reads the part of every handle that intersects the backend's range into `heap`.
///
/// Headers are read and states registered first, on this thread; then this thread and a
/// helper each read one half of the range (see [`read_key_groups`]), each key group from
/// every stream that holds it, in handle and chain order, into its own maps (the helper's
/// move into the backend at the end). Key groups are independent, so the result is the one
/// a single thread reads.
fn restore(
    heap: &mut Heap,
    key_serializer: &str,
    registry: &Registry,
    handles: &[Arc<dyn KeyedStateHandle>],
) -> Result<()> {
    let tables = &mut heap.tables;
    let mut continuation = None;
    let mut sources = Vec::new();
    let mut readers = Vec::new();
    for handle in handles {
        let Some(part) = handle.intersection(&tables.range) else {
            continue;
        };
        let any = &*part;
        if let Some(full) = any.downcast_ref::<KeyGroupsStateHandle>() {
            let reader = open_source(tables, key_serializer, registry, full, restore_entry, None)?;
            sources.push(reader.0);
            readers.push(Some(reader.1));
        } else if let Some(incremental) = any.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
            let chain = open_incremental(
                tables,
                key_serializer,
                registry,
                incremental,
                &mut sources,
                &mut readers,
            )?;
            if handles.len() == 1 && incremental.key_group_range == tables.range {
                continuation = Some((incremental.checkpoint_id, chain));
            }
        } else {
            return Err(Error::Unsupported(format!(
                "the heap backend restores full keyed snapshots (key-groups handles) and heap-incremental checkpoints; got {part:?}"
            )));
        }
    }
    read_key_groups(tables, registry, &sources, readers)?;
    if let (Some(incremental), Some((checkpoint_id, chain))) = (&mut heap.incremental, continuation)
    {
        incremental.history.continue_from(checkpoint_id, chain);
        incremental.changes.record_from_now();
    }
    Ok(())
}

/// Opens `handle`, checks its header and registers its states; returns it as a source,
/// with the reader this thread reads it with.
fn open_source(
    tables: &mut HeapTables,
    key_serializer: &str,
    registry: &Registry,
    handle: &KeyGroupsStateHandle,
    apply: Apply,
    location: Option<String>,
) -> Result<(Source, KeyedSnapshotReader)> {
    let mut source = Source {
        handle: handle.clone(),
        ids: Vec::new(),
        apply,
        location,
    };
    let opened = (|| {
        let reader = KeyedSnapshotReader::open(handle, registry, tables.max_parallelism)?;
        let header = reader.header();
        header.check_key_serializer(key_serializer, &handle.delegate().describe())?;
        let ids = header
            .states()
            .iter()
            .map(|meta| tables.register(meta))
            .collect::<Result<Vec<_>>>()?;
        Ok((reader, ids))
    })();
    let (reader, ids) = opened.map_err(|err| source.wrap(err))?;
    source.ids = ids;
    Ok((source, reader))
}

/// Reads every key group of the backend's range from the `sources` that hold it, on this
/// thread (with `readers`, one per source) and a helper, through the parallel key-group
/// driver of `state_format::parallel` (see [`restore`]).
///
/// Each thread reads one contiguous half of the range, the halves holding about as many
/// bytes ([`split_by_weight`]), in ascending order: each stream is read front to back by each thread, so object
/// storage's read-ahead fetches every byte once (taking key groups in turns from a counter
/// made each thread's read-ahead fetch the other's key groups too).
///
/// # Errors
///
/// Of several damaged key groups, the error of the first in key-group order, as one
/// thread reading them in order would meet it: this thread reads its half until its first
/// error; the helper stops when this thread failed. A helper that panicked is
/// [`Error::WorkerStopped`](state_api::Error::WorkerStopped).
fn read_key_groups(
    tables: &mut HeapTables,
    registry: &Registry,
    sources: &[Source],
    mut readers: Vec<Option<KeyedSnapshotReader>>,
) -> Result<()> {
    if sources.is_empty() {
        return Ok(());
    }
    let key_groups: Vec<KeyGroup> = tables.range.iter().collect();
    let weights = section_weights(&key_groups, sources);
    let split = split_by_weight(&weights);
    let max_parallelism = tables.max_parallelism;
    // Only the failure flag of the share is used: each thread reads a fixed half.
    let share = KeyGroupShare::new(key_groups.len());
    // Reads the key groups at `positions` into `states` in order, until the first error
    // (or, for the helper, until this thread failed).
    let work = |states: &mut [StateTable],
                readers: &mut Vec<Option<KeyedSnapshotReader>>,
                positions: std::ops::Range<usize>,
                helper: bool|
     -> Result<()> {
        let mut estimate = EntryEstimate::new(states.len());
        for shard in positions {
            if helper && share.failed() {
                break;
            }
            let bytes = weights[shard];
            estimate.reserve(states, shard, bytes);
            let read = read_key_group(
                states,
                shard,
                key_groups[shard],
                sources,
                readers,
                registry,
                max_parallelism,
            );
            if read.is_err() && !helper {
                share.fail();
            }
            read?;
            estimate.learn(states, shard, bytes);
        }
        Ok(())
    };
    let mut helper_states: Vec<StateTable> =
        tables.states.iter().map(StateTable::empty_like).collect();
    let (helper, mine) = run_in_two(
        "the reader of the second half of the key groups",
        || {
            let mut readers = sources.iter().map(|_| None).collect();
            work(
                &mut helper_states,
                &mut readers,
                split..key_groups.len(),
                true,
            )
        },
        || work(&mut tables.states, &mut readers, 0..split, false),
    );
    match (mine, helper.and_then(|read| read)) {
        (Ok(()), Ok(())) => {}
        (Err(first), _) | (Ok(()), Err(first)) => return Err(first),
    }
    for shard in split..key_groups.len() {
        for (state, helper_state) in tables.states.iter_mut().zip(&mut helper_states) {
            state.shards.swap_shard(&mut helper_state.shards, shard);
        }
    }
    Ok(())
}

/// Entries per byte of the key-group sections one thread has read so far, state by state,
/// to size each next key group's maps before reading it.
///
/// A key group's map grows past [`PART_ENTRIES`](crate::key_group_map::PART_ENTRIES) by
/// splitting, each split moving half of a part to a new one; at 10,000,000 keys of the
/// benchmark (78,000 per key group) that moving was a fifth of the restore. Key groups
/// hold keys hashed alike, so the ones read before tell how many entries a key group of
/// so many bytes holds, and the maps are split before reading instead.
struct EntryEstimate {
    /// Section bytes read so far.
    bytes: u64,
    /// Entries read so far, by state.
    entries: Vec<u64>,
}

impl EntryEstimate {
    fn new(states: usize) -> Self {
        EntryEstimate {
            bytes: 0,
            entries: vec![0; states],
        }
    }

    /// Prepares each state's empty shard `shard` for the entries `bytes` of sections hold
    /// at the rate read so far.
    fn reserve(&self, states: &mut [StateTable], shard: usize, bytes: u64) {
        if self.bytes == 0 {
            return;
        }
        for (state, entries) in states.iter_mut().zip(&self.entries) {
            let expected = u128::from(*entries) * u128::from(bytes) / u128::from(self.bytes);
            state
                .shards
                .reserve(shard, usize::try_from(expected).unwrap_or(usize::MAX));
        }
    }

    /// Counts the entries read into shard `shard` from sections of `bytes` bytes.
    fn learn(&mut self, states: &[StateTable], shard: usize, bytes: u64) {
        self.bytes += bytes;
        for (state, entries) in states.iter().zip(&mut self.entries) {
            *entries += state.shards.len_of(shard) as u64;
        }
    }
}

/// The bytes the sources hold of each of `key_groups`: what splits the key groups between
/// the two reading threads (at half of the bytes) and sizes each one's maps ahead.
fn section_weights(key_groups: &[KeyGroup], sources: &[Source]) -> Vec<u64> {
    key_groups
        .iter()
        .map(|&key_group| {
            (sources.iter())
                .map(|source| source.handle.section_size(key_group))
                .sum()
        })
        .collect()
}

/// Reads `key_group` (shard `shard`) from every source that holds it, in order, and closes
/// the readers of sources whose key groups all lie before it, so a restore from many old
/// instances holds open only the streams of the key groups at hand.
fn read_key_group(
    states: &mut [StateTable],
    shard: usize,
    key_group: KeyGroup,
    sources: &[Source],
    readers: &mut [Option<KeyedSnapshotReader>],
    registry: &Registry,
    max_parallelism: MaxParallelism,
) -> Result<()> {
    for (source, reader) in sources.iter().zip(readers.iter_mut()) {
        let range = source.handle.key_group_range();
        if !range.contains(key_group) {
            if range.is_empty() || range.end() < key_group {
                // Key groups are taken in ascending order: this stream is done with.
                *reader = None;
            }
            continue;
        }
        let read = (|| {
            let reader = match reader {
                Some(reader) => reader,
                None => reader.insert(KeyedSnapshotReader::open(
                    &source.handle,
                    registry,
                    max_parallelism,
                )?),
            };
            let composite = reader.composite_key();
            reader.read_key_group(key_group, &mut |entry| {
                // The reader checked the id against the header.
                let state = &mut states[source.ids[usize::from(entry.state_id)]];
                (source.apply)(state, shard, composite, entry)
            })
        })();
        read.map_err(|error| source.wrap(error))?;
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
pub(crate) fn read_meta(
    handle: &IncrementalRemoteKeyedStateHandle,
    max_parallelism: MaxParallelism,
) -> Result<IncrementalMeta> {
    handle.check_strategy(crate::HEAP_INCREMENTAL)?;
    let incremental_meta::IncrementalMeta {
        header,
        manifest,
        rest: mut input,
        location,
    } = incremental_meta::read(&*handle.meta_state, Some(max_parallelism))?;
    let wrap = |source: Error| Error::Snapshot {
        location: location.clone(),
        source: Box::new(source),
    };
    let mut first = [0u8; 1];
    let read = input
        .read(&mut first)
        .map_err(|e| wrap(Error::stream("reading the heap incremental chain", e)))?;
    if read == 0 {
        // Metadata of earlier releases records no strategy: a meta data stream without a
        // chain after its file list is a RocksDB checkpoint's.
        if handle.strategy.is_none() {
            return Err(Error::Unsupported(format!(
                "incremental snapshot {location} of checkpoint {} is not a heap chain (nothing follows its file list): restore it with backend rocksdb, or restore a savepoint",
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

/// Opens every file of the chain of `handle` as a source, in chain order; returns the chain.
fn open_incremental(
    tables: &mut HeapTables,
    key_serializer: &str,
    registry: &Registry,
    handle: &IncrementalRemoteKeyedStateHandle,
    sources: &mut Vec<Source>,
    readers: &mut Vec<Option<KeyedSnapshotReader>>,
) -> Result<Chain> {
    let meta = read_meta(handle, tables.max_parallelism)?;
    meta.header
        .check_key_serializer(key_serializer, &handle.meta_state.describe())?;
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
        let (source, reader) = open_source(
            tables,
            key_serializer,
            registry,
            &key_groups,
            apply,
            Some(location),
        )?;
        sources.push(source);
        readers.push(Some(reader));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use state_api::{KeyGroupRange, MaxParallelism, StateMetaInfo};

    use super::*;
    use crate::key_group_map::PART_ENTRIES;
    use crate::table::{HeapTables, Shards};

    /// A table of one value state over key groups 0..3.
    fn value_state() -> Vec<StateTable> {
        let mut tables = HeapTables::new(KeyGroupRange::new(0, 3).unwrap(), MaxParallelism::of(4));
        tables
            .register(&StateMetaInfo::value("value", "void", "bytes"))
            .unwrap();
        tables.states
    }

    fn parts_of(states: &[StateTable], shard: usize) -> Vec<usize> {
        match &states[0].shards {
            Shards::Value(maps) => maps[shard].part_sizes(),
            _ => unreachable!("a value state"),
        }
    }

    /// After one key group of 3 × `PART_ENTRIES` entries in 1,000 bytes, a key group of
    /// 2,000 bytes is expected to hold twice as many: its map is split into 8 parts before
    /// any entry is read. Nothing is reserved before anything was read.
    #[test]
    fn later_key_groups_are_sized_from_the_entries_per_byte_of_earlier_ones() {
        let mut states = value_state();
        let mut estimate = EntryEstimate::new(states.len());
        estimate.reserve(&mut states, 0, 1_000);
        assert_eq!(parts_of(&states, 0).len(), 1);
        if let Shards::Value(maps) = &mut states[0].shards {
            for i in 0..(3 * PART_ENTRIES) as u64 {
                maps[0].set(&i.to_be_bytes(), &[1]);
            }
        }
        estimate.learn(&states, 0, 1_000);
        estimate.reserve(&mut states, 1, 2_000);
        assert_eq!(parts_of(&states, 1), vec![0; 8]);
        // A small key group stays one part.
        estimate.reserve(&mut states, 2, 100);
        assert_eq!(parts_of(&states, 2).len(), 1);
    }
}

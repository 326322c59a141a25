//! Restoring a RocksDB backend, with or without rescaling, from full keyed snapshots (its
//! own, or another backend's savepoints) and from incremental RocksDB checkpoints.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::local_handle::IncrementalLocalKeyedStateHandle;
use rocksdb::{
    ColumnFamilyDescriptor, DB, IngestExternalFileOptions, Options, ReadOptions, SstFileWriter,
    WriteBatch,
};
use state_api::{
    Error, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle, KeyGroup, KeyGroupRange,
    KeyedBackendParams, KeyedStateBackend, KeyedStateHandle, MaxParallelism, Registry, Result,
    StateKind, StateMetaInfo,
};
use state_format::file_manifest::FileManifest;
use state_format::incremental_meta;
use state_format::keyed_format::{KeyedSnapshotReader, decode_list};
use state_format::parallel::{run_in_two, split_by_weight};
use state_format::timer::TimerKey;
use state_format::{KeyGroupsStateHandle, KeyedBackendSerializationProxy};

use crate::heap_timers::{KeyGroupTimers, TIMERS_FILE, TimerFileIndex};

use crate::backend::{Opened, RocksDBKeyedStateBackend, cf, cf_name, db_error, key_group_start};
use crate::history::{IncrementalHistory, UploadedFile};
use crate::incremental::{LOCAL_META_FILE, STORE_THREADS, download, run_parallel};
use crate::native::{LiveSst, ingest_database_files, live_ssts};

/// Bytes collected in a write batch before it is written.
const BATCH_BYTES: usize = 4 << 20;

impl RocksDBKeyedStateBackend {
    /// A backend holding the state of `handles` restricted to `params.key_group_range`:
    /// full snapshots of any keyed backend, or incremental RocksDB checkpoints (with
    /// placeholders resolved). The incremental handle sharing the most key groups with the
    /// new range is downloaded (hard-linked from a local directory) and opened as the
    /// database; when its range is another, the keys outside the new range are deleted
    /// and the next incremental checkpoint starts afresh, else it builds on the handle.
    /// Every other incremental handle is opened in a temporary database and the keys of
    /// the new range copied over; full snapshots are read key group by key group. Timers
    /// move between column families and memory as `rocksdb.timer-service.factory` says,
    /// whichever way the snapshot kept them.
    ///
    /// # Errors
    ///
    /// Those of [`new`](Self::new), and of restore: unknown handle kinds or unresolved
    /// placeholders ([`Error::Unsupported`]), a different key serializer or state meta info
    /// ([`Error::Incompatible`]), damaged snapshots ([`Error::KeyGroup`] and
    /// [`Error::Snapshot`] naming the key group or header, [`Error::Corrupted`] and
    /// [`Error::NotFound`] naming the file of an incremental snapshot).
    pub fn restore(
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Self> {
        restore(params, registry, handles)
    }
}

/// Restores a backend for `params` from `handles`.
fn restore(
    params: KeyedBackendParams,
    registry: &Registry,
    handles: &[Arc<dyn KeyedStateHandle>],
) -> Result<RocksDBKeyedStateBackend> {
    state_format::check_restore_handles(&params, handles)?;
    let range = params.key_group_range;
    let parts = handles
        .iter()
        .filter_map(|handle| handle.intersection(&range))
        .map(|part| local_as_remote(&params, &part).map(|remote| remote.unwrap_or(part)))
        .collect::<Result<Vec<Arc<dyn KeyedStateHandle>>>>()?;
    // The incremental part with the most key groups of the new range is opened as the
    // database itself, the keys of other ranges deleted; the other parts are copied in.
    let base = parts
        .iter()
        .enumerate()
        .filter_map(|(index, part)| {
            let incremental = part.downcast_ref::<IncrementalRemoteKeyedStateHandle>()?;
            Some((
                incremental.key_group_range.intersection(&range).len(),
                index,
            ))
        })
        .max()
        .map(|(_, index)| index);
    // The base's timers kept in memory, restored after the database opened.
    let mut base_timers = None;
    // Whether the database opened from a checkpoint may hold keys outside the range.
    let rescaled = base.is_some_and(|index| {
        parts.len() > 1
            || parts[index]
                .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
                .is_some_and(|incremental| incremental.key_group_range != range)
    });
    let mut backend = match base.and_then(|index| parts[index].downcast_ref()) {
        Some(incremental) => {
            let (key_serializer, max_parallelism) =
                (params.key_serializer.clone(), params.max_parallelism);
            RocksDBKeyedStateBackend::open(params, registry, |db_path| {
                let (opened, timers) = open_incremental(
                    incremental,
                    &key_serializer,
                    max_parallelism,
                    db_path,
                    range,
                )?;
                base_timers = timers;
                Ok(opened)
            })?
        }
        None => RocksDBKeyedStateBackend::new(params, registry)?,
    };
    backend.begin_bulk_load();
    let base_timers = (base_timers.iter()).filter_map(|timers| timers.intersection(&range));
    let outcome = (parts.iter().enumerate())
        .filter(|(index, _)| Some(*index) != base)
        .map(|(_, part)| part.clone())
        .chain(base_timers)
        .try_for_each(|part| restore_part(&mut backend, registry, &*part))
        // Last: other checkpoints' sst files come in whole, their keys outside the range
        // too, and an ingestion never overlaps a range tombstone.
        .and_then(|()| match rescaled {
            true => delete_other_key_groups(&backend),
            false => Ok(()),
        })
        .and_then(|()| backend.end_bulk_load());
    if let Err(err) = outcome {
        // Do not leave a half-restored database behind.
        let _ = backend.close();
        return Err(err);
    }
    Ok(backend)
}

/// Deletes, in every column family, the keys of the key groups outside the backend's
/// range: what a database opened from another range's checkpoint holds beyond its own.
/// RocksDB records each side as one range tombstone; compactions drop the keys later.
fn delete_other_key_groups(backend: &RocksDBKeyedStateBackend) -> Result<()> {
    let range = backend.key_group_range();
    let prefix_bytes = backend.composite_key().prefix_bytes();
    let start = |key_group: u32| key_group_start(key_group, prefix_bytes);
    let last = backend.max_parallelism_internal().get();
    let mut others = Vec::new();
    if range.start().get() > 0 {
        others.push((start(0), start(range.start().get())));
    }
    if range.end().get() + 1 < last {
        others.push((start(range.end().get() + 1), start(last)));
    }
    let db = backend.db()?;
    let states = backend.snapshot_source().states();
    for meta in states
        .iter()
        .filter(|meta| !backend.snapshot_source().in_memory(meta))
    {
        let family = cf(db, &meta.name)?;
        for (from, to) in &others {
            db.delete_range_cf_opt(&family, from, to, backend.write_options())
                .map_err(db_error(format_args!(
                    "deleting the key groups outside {range} from state `{}`",
                    meta.name
                )))?;
        }
    }
    Ok(())
}

/// A task-local incremental copy as the remote handle of the same files, read from its
/// directory; `None` for any other handle.
fn local_as_remote(
    params: &KeyedBackendParams,
    part: &Arc<dyn KeyedStateHandle>,
) -> Result<Option<Arc<dyn KeyedStateHandle>>> {
    let Some(local) = part.downcast_ref::<IncrementalLocalKeyedStateHandle>() else {
        return Ok(None);
    };
    let Some(storage) = params.local_recovery.storage() else {
        return Err(Error::Unsupported(format!(
            "task-local copy of checkpoint {} restores only with local recovery enabled",
            local.checkpoint_id
        )));
    };
    let dir = local.directory.directory();
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                what: format!("task-local snapshot directory {}", dir.display()),
            },
            _ => Error::io(dir, e),
        })?
        .map(|entry| {
            entry
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| Error::io(dir, e))
        })
        .collect::<Result<_>>()?;
    names.sort();
    let (mut shared, mut private) = (Vec::new(), Vec::new());
    for name in names.into_iter().filter(|name| name != LOCAL_META_FILE) {
        let path = dir.join(&name);
        let len = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
        let file = HandleAndLocalPath::new(storage.file_handle(path, len), name.clone());
        match name.ends_with(".sst") {
            true => shared.push(file),
            false => private.push(file),
        }
    }
    Ok(Some(Arc::new(IncrementalRemoteKeyedStateHandle {
        backend_identifier: local.backend_identifier.clone(),
        key_group_range: local.key_group_range,
        checkpoint_id: local.checkpoint_id,
        strategy: Some(crate::ROCKSDB_INCREMENTAL.into()),
        shared_state: shared,
        private_state: private,
        meta_state: local.meta_state.clone(),
    })))
}

fn restore_part(
    backend: &mut RocksDBKeyedStateBackend,
    registry: &Registry,
    part: &dyn KeyedStateHandle,
) -> Result<()> {
    if let Some(full) = part.downcast_ref::<KeyGroupsStateHandle>() {
        return restore_handle(backend, registry, full);
    }
    if let Some(incremental) = part.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
        return copy_incremental(backend, registry, incremental);
    }
    Err(Error::Unsupported(format!(
        "the RocksDB backend restores key-groups and incremental RocksDB handles; got {part:?}"
    )))
}

/// What [`download_all`] found in an incremental snapshot.
struct Downloaded {
    /// Its states, in id order.
    states: Vec<StateMetaInfo>,
    /// The states whose column families its database holds.
    families: Vec<StateMetaInfo>,
    /// Its shared files.
    shared: BTreeMap<String, UploadedFile>,
    /// The timers it kept in memory ([`TIMERS_FILE`]), read from the snapshot's storage.
    timers: Option<KeyGroupsStateHandle>,
}

/// Downloads every file of `handle` into `dir` (created) after checking the key serializer
/// and the number of key groups, all but the timers kept in memory, which restore reads
/// from the snapshot's storage like a full snapshot.
fn download_all(
    handle: &IncrementalRemoteKeyedStateHandle,
    key_serializer: &str,
    max_parallelism: MaxParallelism,
    dir: &Path,
) -> Result<Downloaded> {
    handle.check_strategy(crate::ROCKSDB_INCREMENTAL)?;
    let mut meta = incremental_meta::read(&*handle.meta_state, Some(max_parallelism))?;
    // Metadata of earlier releases records no strategy: a heap-incremental snapshot's meta
    // data goes on with its chain after the file list, a RocksDB one ends there.
    let mut next = [0u8; 1];
    if handle.strategy.is_none() && meta.rest.read(&mut next).unwrap_or(0) > 0 {
        return Err(Error::Unsupported(format!(
            "incremental snapshot {} of checkpoint {} is not a RocksDB checkpoint (a heap chain follows its file list): restore it with backend heap, or restore a savepoint",
            meta.location, handle.checkpoint_id
        )));
    }
    let (header, manifest) = (meta.header, meta.manifest);
    header.check_key_serializer(key_serializer, &handle.meta_state.describe())?;
    check_files_listed(handle, &manifest)?;
    let timers = match handle.strategy {
        Some(_) => {
            let timer_file = || {
                let file = (handle.private_state.iter())
                    .find(|file| file.local_path == TIMERS_FILE)
                    .zip(manifest.get(TIMERS_FILE))
                    .ok_or_else(|| Error::Corrupted {
                        what: format!(
                            "checkpoint {} ({})",
                            handle.checkpoint_id,
                            handle.meta_state.describe()
                        ),
                        reason: format!("its meta data indexes timers, it has no `{TIMERS_FILE}`"),
                    })?;
                Ok((file.0.handle.clone(), file.1.size))
            };
            TimerFileIndex::read_handle(
                &mut meta.rest,
                handle.key_group_range,
                timer_file,
                &meta.location,
            )?
        }
        None => None,
    };
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let files: Vec<&HandleAndLocalPath> = handle
        .shared_state
        .iter()
        .chain(&handle.private_state)
        .filter(|file| file.local_path != TIMERS_FILE)
        .collect();
    let (done, panicked) = run_parallel(
        &files,
        || Ok(()),
        |file| download(file, &manifest, dir, handle.checkpoint_id),
    );
    if let Some((_, Err(err))) = done.into_iter().find(|(_, outcome)| outcome.is_err()) {
        return Err(err);
    }
    if panicked {
        return Err(Error::WorkerStopped {
            worker: "a thread downloading snapshot files".into(),
        });
    }
    let shared = handle
        .shared_state
        .iter()
        .filter_map(|file| {
            let entry = manifest.get(&file.local_path)?;
            Some((
                file.local_path.clone(),
                UploadedFile {
                    key: handle.shared_key(file),
                    size: entry.size,
                    crc: entry.crc,
                },
            ))
        })
        .collect();
    let states = header.states().to_vec();
    // With timers in memory, no priority-queue state has a column family.
    let families = (states.iter())
        .filter(|meta| timers.is_none() || meta.kind != StateKind::PriorityQueue)
        .cloned()
        .collect();
    Ok(Downloaded {
        states,
        families,
        shared,
        timers,
    })
}

/// Checks that `handle` carries exactly the files its manifest lists, each in the scope the
/// manifest records: a handle that lost a file (say `CURRENT`) would otherwise open as a
/// different, possibly empty, database.
fn check_files_listed(
    handle: &IncrementalRemoteKeyedStateHandle,
    manifest: &FileManifest,
) -> Result<()> {
    let corrupted = |name: &str, reason: &str| Error::Corrupted {
        what: format!(
            "file `{name}` of checkpoint {} ({})",
            handle.checkpoint_id,
            handle.meta_state.describe()
        ),
        reason: reason.to_owned(),
    };
    let mut carried = BTreeMap::new();
    let files = (handle.shared_state.iter().map(|file| (file, true)))
        .chain(handle.private_state.iter().map(|file| (file, false)));
    for (file, shared) in files {
        if carried.insert(file.local_path.as_str(), shared).is_some() {
            return Err(corrupted(&file.local_path, "the handle lists it twice"));
        }
    }
    for entry in &manifest.files {
        match carried.get(entry.name.as_str()) {
            None => {
                return Err(corrupted(
                    &entry.name,
                    "the snapshot's file list names it, the handle does not carry it",
                ));
            }
            Some(&shared) if shared != entry.shared => {
                return Err(corrupted(
                    &entry.name,
                    "the handle and the snapshot's file list disagree on whether it is shared",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Fills `db_path` with the files of `handle`, and returns the handle's timers kept in
/// memory. A restore into the handle's own range continues its incremental history; one
/// into another `range` starts a new one.
fn open_incremental(
    handle: &IncrementalRemoteKeyedStateHandle,
    key_serializer: &str,
    max_parallelism: MaxParallelism,
    db_path: &Path,
    range: KeyGroupRange,
) -> Result<(Opened, Option<KeyGroupsStateHandle>)> {
    let downloaded = download_all(handle, key_serializer, max_parallelism, db_path)?;
    let history = match handle.key_group_range == range {
        true => IncrementalHistory::continuing(handle.checkpoint_id, downloaded.shared),
        false => IncrementalHistory::fresh(),
    };
    let opened = Opened {
        states: downloaded.states,
        families: downloaded.families,
        existing: true,
        history,
    };
    Ok((opened, downloaded.timers))
}

/// Opens `handle` in a temporary database and moves the keys of `backend`'s range (and
/// the handle's) over, as sst files the database ingests.
fn copy_incremental(
    backend: &mut RocksDBKeyedStateBackend,
    registry: &Registry,
    handle: &IncrementalRemoteKeyedStateHandle,
) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("restore-")
        .tempdir_in(backend.snapshot_source().instance_dir())
        .map_err(|e| Error::io(backend.snapshot_source().instance_dir(), e))?;
    let dir = temp.path().join("db");
    let Downloaded {
        states,
        families: states_in_db,
        timers,
        ..
    } = download_all(
        handle,
        backend.key_serializer(),
        backend.max_parallelism_internal(),
        &dir,
    )?;
    for meta in &states {
        backend.register(meta)?;
    }
    // Column families of the snapshot's database, all of which open; timers of a family
    // the backend keeps in memory are read, not ingested.
    let (memory, states): (Vec<StateMetaInfo>, Vec<StateMetaInfo>) = (states_in_db.iter())
        .cloned()
        .partition(|meta| backend.snapshot_source().in_memory(meta));
    let opened_families: Vec<&StateMetaInfo> = states.iter().chain(&memory).collect();
    let mut options = Options::default();
    options.create_if_missing(false);
    let cache = rocksdb::Cache::new_lru_cache(8 << 20);
    let file_options: Vec<Options> = (opened_families.iter())
        .map(|meta| backend.options().cf_options(&cache, meta.kind))
        .collect();
    let families: Vec<ColumnFamilyDescriptor> = (opened_families.iter().zip(&file_options))
        .map(|(meta, options)| ColumnFamilyDescriptor::new(cf_name(&meta.name), options.clone()))
        .collect();
    // Read-only: nothing is written next to the (linked) files, nothing compacts.
    let source = DB::open_cf_descriptors_read_only(&options, &dir, families, false).map_err(
        db_error(format_args!(
            "opening checkpoint {} of {} in {}",
            handle.checkpoint_id,
            handle.backend_identifier,
            dir.display()
        )),
    )?;
    // Only the key groups the handle is for: its database may hold others' keys.
    let range = backend
        .key_group_range()
        .intersection(&handle.key_group_range);
    // Slices of the range, each read by a thread of its own into an sst file of its own:
    // the keys come sorted, and the files of one state do not overlap, so the database
    // ingests them together, with no memtable, write-ahead log or compaction on the way.
    let prefix_bytes = backend.composite_key().prefix_bytes();
    let count = range.len().min(STORE_THREADS as u32);
    let slices: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
        .map(|slice| {
            let start = |n: u32| range.start().get() + n * range.len() / count;
            let from = key_group_start(start(slice), prefix_bytes);
            (from, key_group_start(start(slice + 1), prefix_bytes))
        })
        .collect();
    if let Some(mut heap) = backend.snapshot_source().heap_timers() {
        for meta in &memory {
            heap.read_family(&source, &meta.name, range)?;
        }
    }
    // Each state's files go in as they are when they touch none of the database's keys
    // (the handle's key groups are not the base's, and neither database holds others'
    // keys); the keys of states whose files RocksDB refuses are read and written anew.
    let db = backend.db()?.clone();
    let live = live_ssts(&source);
    let mut rewrite = Vec::new();
    for (index, meta) in states.iter().enumerate() {
        let family = cf_name(&meta.name);
        let mut files: Vec<&LiveSst> = live.iter().filter(|file| file.family == family).collect();
        files.sort_by_key(|file| (std::cmp::Reverse(file.level), file.largest_sequence_number));
        let paths: Vec<PathBuf> = files.iter().map(|file| dir.join(&file.name)).collect();
        if paths.is_empty() {
            continue;
        }
        if let Err(reason) = ingest_database_files(&db, &cf(&db, &meta.name)?, &paths) {
            tracing::debug!(state = %meta.name, %reason, "sst files not ingested as they are; rewriting their keys");
            rewrite.push(index);
        }
    }
    let tasks: Vec<(usize, usize)> = (rewrite.iter().copied())
        .flat_map(|state| (0..slices.len()).map(move |slice| (state, slice)))
        .collect();
    let (done, panicked) = run_parallel(
        &tasks,
        || Ok(()),
        |&(state, slice)| {
            let file = temp.path().join(format!("ingest-{state}-{slice}.sst"));
            let family = cf(&source, &states[state].name)?;
            let written = write_sst(
                &source,
                &family,
                &slices[slice],
                &file_options[state],
                &file,
            )
            .map_err(db_error(format_args!(
                "moving the keys of state `{}` of checkpoint {} into {}",
                states[state].name,
                handle.checkpoint_id,
                file.display()
            )))?;
            Ok(written.then_some((state, file)))
        },
    );
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for (_, outcome) in done {
        files.extend(outcome?);
    }
    if panicked {
        return Err(Error::WorkerStopped {
            worker: "a thread moving restored keys".into(),
        });
    }
    files.sort();
    for (index, meta) in states.iter().enumerate() {
        let own: Vec<&PathBuf> = (files.iter())
            .filter(|(state, _)| *state == index)
            .map(|(_, file)| file)
            .collect();
        if own.is_empty() {
            continue;
        }
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_cf_opts(&cf(&db, &meta.name)?, &ingest, own)
            .map_err(db_error(format_args!(
                "ingesting the keys of state `{}` from checkpoint {}",
                meta.name, handle.checkpoint_id
            )))?;
    }
    drop(source);
    let path = temp.path().to_path_buf();
    temp.close().map_err(|e| Error::io(path, e))?;
    match timers.and_then(|timers| timers.intersection(&range)) {
        Some(timers) => restore_part(backend, registry, &*timers),
        None => Ok(()),
    }
}

/// Writes the entries of `family` in `source` from `slice.0` up to `slice.1` into a new
/// sst file `file`; false when there are none, and then nothing is to be ingested.
fn write_sst(
    source: &DB,
    family: &impl rocksdb::AsColumnFamilyRef,
    (from, to): &(Vec<u8>, Vec<u8>),
    options: &Options,
    file: &Path,
) -> std::result::Result<bool, rocksdb::Error> {
    let mut read = ReadOptions::default();
    read.set_iterate_lower_bound(from.clone());
    read.set_iterate_upper_bound(to.clone());
    // Each block is read once: caching it would only evict others.
    read.fill_cache(false);
    let mut iter = source.raw_iterator_cf_opt(family, read);
    iter.seek_to_first();
    let mut writer = SstFileWriter::create(options);
    let mut entries = 0u64;
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if entries == 0 {
            writer.open(file)?;
        }
        writer.put(key, value)?;
        entries += 1;
        iter.next();
    }
    iter.status()?;
    if entries > 0 {
        writer.finish()?;
    }
    Ok(entries > 0)
}

fn restore_handle(
    backend: &RocksDBKeyedStateBackend,
    registry: &Registry,
    handle: &KeyGroupsStateHandle,
) -> Result<()> {
    let composite = backend.composite_key();
    let max_parallelism = backend.max_parallelism_internal();
    let mut reader = KeyedSnapshotReader::open(handle, registry, max_parallelism)?;
    let header = reader.header().clone();
    header.check_key_serializer(backend.key_serializer(), &handle.delegate().describe())?;
    let timers = TimerKey::new(max_parallelism);
    // Header id -> (column family, meta info).
    let families = header
        .states()
        .iter()
        .map(|meta| Ok((backend.register(meta)?, meta)))
        .collect::<Result<Vec<_>>>()?;
    if families.iter().all(|(family, _)| family.is_none()) {
        drop(reader);
        return restore_timers_in_two(backend, registry, handle, &header);
    }
    let db = backend.db()?;
    let mut heap = backend.snapshot_source().heap_timers();
    let range = backend.key_group_range();
    let mut batch = WriteBatch::default();
    for key_group in reader.key_group_range().iter() {
        let shard = range
            .position(key_group)
            .ok_or(Error::KeyGroupOutOfRange { key_group, range })?;
        reader.read_key_group(key_group, &mut |entry| {
            // The reader checked the id against the header and the key's key group.
            let (family, meta) = &families[usize::from(entry.state_id)];
            state_format::check_entry(meta, composite, timers, entry.key, entry.value)?;
            if meta.kind == StateKind::List {
                decode_list(entry.value)?;
            }
            let Some(family) = family else {
                // A priority-queue state kept in memory.
                if let Some(heap) = &mut heap {
                    heap.change(&meta.name, shard, entry.key, true)?;
                }
                return Ok(());
            };
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

/// Restores a snapshot of priority-queue states the backend keeps in memory and nothing
/// else (the timers file of an incremental checkpoint, a savepoint of timers alone): this
/// thread and a helper each read one half of the key groups (halves of about equal bytes)
/// into sets of their own, which then move into the backend's queues.
fn restore_timers_in_two(
    backend: &RocksDBKeyedStateBackend,
    registry: &Registry,
    handle: &KeyGroupsStateHandle,
    header: &KeyedBackendSerializationProxy,
) -> Result<()> {
    let max_parallelism = backend.max_parallelism_internal();
    let (composite, timers) = (backend.composite_key(), TimerKey::new(max_parallelism));
    let states = header.states();
    let key_groups: Vec<KeyGroup> = handle.offsets().range().iter().collect();
    let weights: Vec<u64> = (key_groups.iter())
        .map(|&key_group| handle.section_size(key_group))
        .collect();
    let split = split_by_weight(&weights);
    let read = |part: &[KeyGroup]| -> Result<Vec<(KeyGroup, Vec<KeyGroupTimers>)>> {
        let mut reader = KeyedSnapshotReader::open(handle, registry, max_parallelism)?;
        let mut read = Vec::with_capacity(part.len());
        for &key_group in part {
            let mut sets = vec![KeyGroupTimers::new(); states.len()];
            reader.read_key_group(key_group, &mut |entry| {
                // The reader checked the id against the header and the key's key group.
                let id = usize::from(entry.state_id);
                state_format::check_entry(&states[id], composite, timers, entry.key, entry.value)?;
                sets[id].insert(Arc::from(entry.key));
                Ok(())
            })?;
            read.push((key_group, sets));
        }
        Ok(read)
    };
    let (helper, mine) = run_in_two(
        "the reader of the second half of the timers",
        || read(&key_groups[split..]),
        || read(&key_groups[..split]),
    );
    let (mine, theirs) = (mine?, helper??);
    let range = backend.key_group_range();
    let Some(mut heap) = backend.snapshot_source().heap_timers() else {
        return Ok(());
    };
    for (key_group, sets) in mine.into_iter().chain(theirs) {
        let shard = range
            .position(key_group)
            .ok_or(Error::KeyGroupOutOfRange { key_group, range })?;
        for (meta, set) in states.iter().zip(sets) {
            heap.merge(&meta.name, shard, set)?;
        }
    }
    Ok(())
}

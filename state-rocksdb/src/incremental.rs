//! [`RocksIncrementalSnapshotStrategy`] (`rocksdb-incremental`): checkpoints that upload
//! only the sst files the last completed checkpoint did not have.
//!
//! The synchronous part takes a lease, seals the memtables and holds a RocksDB snapshot
//! (the cut, [`crate::cut`]), and captures the states' meta info and the sst files the last
//! *completed* checkpoint uploaded. The asynchronous part captures the cut as a native
//! RocksDB checkpoint (hard links of the live files, no flush) in a snapshot directory next
//! to the database (after a failed capture, the next synchronous part creates it itself,
//! with a flush), then stores new sst files in the shared scope (as hard links
//! where the storage is a local directory on the same file system, else copied through a
//! stream; with the CRC-32C RocksDB computed when it wrote the file, checked against the
//! bytes when they are copied, or read once where RocksDB recorded none), refers to
//! the others by [`PlaceholderStreamStateHandle`], uploads the other files (`MANIFEST-*`,
//! `CURRENT`, `OPTIONS-*`) to the exclusive scope, and writes the meta data stream: the
//! keyed snapshot header followed by a [`FileManifest`] with every file's size and CRC-32C,
//! which restore checks each downloaded file against. Timers kept in memory
//! (`rocksdb.timer-service.factory = heap`) are cloned in the synchronous part and written
//! by the asynchronous part into one more private file, a canonical key-group stream
//! ([`crate::heap_timers`]), whose key-group offsets and checksums follow the manifest in
//! the meta data. The snapshot directory is deleted in every outcome; on failure or
//! cancellation every file uploaded so far is deleted.
//!
//! `notify_checkpoint_complete(id)` makes `id`'s files the base of the next checkpoint and
//! forgets older pending ones; `notify_checkpoint_aborted(id)` forgets `id`. Files are
//! never deleted here: the coordinator's `SharedStateRegistry` (`state-coordinator`)
//! owns shared files once it registered a checkpoint. It must register a checkpoint before
//! it releases the one that checkpoint built on.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Lease;
use crate::local_handle::{DirectoryStateHandle, IncrementalLocalKeyedStateHandle};
use rocksdb::checkpoint::Checkpoint;
use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    AsyncSnapshotCallable, CheckpointStreamFactory, CheckpointedStateScope, Error,
    HandleAndLocalPath, IncrementalRemoteKeyedStateHandle, KeyedBackendParams, KeyedSnapshotResult,
    KeyedSnapshotStrategyFactory, KeyedStateHandle, LocalRecoveryConfig,
    PlaceholderStreamStateHandle, Registry, Result, SnapshotContext, SnapshotResult,
    SnapshotStrategy, StateMetaInfo, StateObject, StreamStateHandle, backend_state_as,
};
use state_api::{UNCOMPRESSED, UncompressedStreamCompressionDecorator};
use state_format::KeyedBackendSerializationProxy;
use state_format::file_manifest::{FileManifest, ManifestEntry};
use state_format::keyed_format::{KeyedSnapshotWriter, write_key_groups_parallel};

use crate::backend::{RocksDBSnapshotSource, cf_name, db_error};
use crate::cut::Cut;
use crate::heap_timers::{HeapTimerSnapshot, KeyGroupTimers, TIMERS_FILE, TimerFileIndex};
use crate::history::UploadedFile;
use crate::native::{WrittenChecksum, live_sst_checksums};
use crate::{ROCKSDB, ROCKSDB_INCREMENTAL};

/// Copies `from` into `out` and returns the byte count and CRC-32C.
fn copy_checked(from: &mut dyn Read, out: &mut dyn Write) -> io::Result<(u64, u32)> {
    let mut buffer = vec![0; 256 * 1024];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok((size, crc)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buffer[..n])?;
        crc = crc32c::crc32c_append(crc, &buffer[..n]);
        size += n as u64;
    }
}

/// Downloads `file` of checkpoint `checkpoint_id` into `dir`, checking its size and
/// checksum against `manifest`. A file the storage holds on this machine
/// ([`StreamStateHandle::local_file`]) is hard-linked rather than copied (RocksDB never
/// changes an sst file, and checkpoint files are read-only) and read once for its
/// checksum; a link across file systems falls back to copying. The copy is not synced:
/// the database directory is a working copy that a crash throws away.
///
/// # Errors
///
/// [`Error::NotFound`] for a missing file, [`Error::Corrupted`] naming the file for a size
/// or checksum mismatch, a file the manifest does not list or a linked file that is not a
/// regular file, [`Error::Unsupported`] for an unresolved placeholder.
pub(crate) fn download(
    file: &HandleAndLocalPath,
    manifest: &FileManifest,
    dir: &Path,
    checkpoint_id: CheckpointId,
) -> Result<()> {
    let what = || {
        format!(
            "file `{}` ({}) of checkpoint {checkpoint_id}",
            file.local_path,
            file.handle.describe()
        )
    };
    let corrupted = |reason: String| Error::Corrupted {
        what: what(),
        reason,
    };
    let expected = manifest
        .get(&file.local_path)
        .ok_or_else(|| corrupted("the snapshot's file list does not name it".into()))?;
    if file.local_path.contains('/') || file.local_path.contains("..") {
        return Err(corrupted(
            "a file name must not leave the database directory".into(),
        ));
    }
    let target = dir.join(&file.local_path);
    let linked = file
        .handle
        .local_file()
        .filter(|_| file.local_path.ends_with(".sst"));
    let (size, crc) = match linked.map(|source| fs::hard_link(&source, &target)) {
        Some(Ok(())) => {
            let regular = fs::symlink_metadata(&target).is_ok_and(|meta| meta.is_file());
            if !regular {
                return Err(corrupted("it is not a regular file".into()));
            }
            File::open(&target)
                .and_then(|read| copy_checked(&mut BufReader::new(read), &mut io::sink()))
                .map_err(|e| Error::io(&target, e))?
        }
        Some(Err(err)) if err.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotFound { what: what() });
        }
        // No link (another file system, no hard links, another storage): a copy.
        Some(Err(_)) | None => {
            let mut input = file.handle.open()?;
            let mut out = File::create(&target).map_err(|e| Error::io(&target, e))?;
            copy_checked(&mut input, &mut out)
                .map_err(|e| Error::stream(format!("downloading {}", what()), e))?
        }
    };
    if size != expected.size || crc != expected.crc {
        return Err(corrupted(format!(
            "{size} bytes with crc32c {crc:#010x}, the snapshot recorded {} bytes with {:#010x}",
            expected.size, expected.crc
        )));
    }
    Ok(())
}

/// Runs `task` on every item of `items` from up to [`STORE_THREADS`] threads, stopping
/// early once `stop` says so or a task failed. Returns each outcome as soon as it is known
/// (a task done by a thread that then panics is still reported), by index, and whether a
/// thread panicked.
pub(crate) fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    stop: impl Fn() -> Result<()> + Sync,
    task: impl Fn(&T) -> Result<R> + Sync,
) -> (Vec<(usize, Result<R>)>, bool) {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let done = Mutex::new(Vec::new());
    let work = || {
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else {
                break;
            };
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let outcome = stop().and_then(|()| task(item));
            failed.fetch_or(outcome.is_err(), Ordering::Relaxed);
            (done.lock().unwrap_or_else(PoisonError::into_inner)).push((index, outcome));
        }
    };
    let panicked = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..STORE_THREADS.min(items.len()))
            .map(|_| scope.spawn(work))
            .collect();
        work();
        // Every helper is joined, so none panics the scope.
        let joined = helpers.into_iter().map(std::thread::ScopedJoinHandle::join);
        joined.filter(Result::is_err).count() > 0
    });
    let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    (done, panicked)
}

/// Files of one snapshot stored at once, at most.
pub(crate) const STORE_THREADS: usize = 4;

/// A stored file: its handle, size and CRC-32C.
type Stored = (Arc<dyn StreamStateHandle>, u64, u32);

/// Stores `files` (path and scope) through `factory` with up to [`STORE_THREADS`]
/// threads; `written` holds the checksums RocksDB recorded, by file name. Returns what
/// each file became, in order (`None` for files not stored because another failed or the
/// snapshot was cancelled), and the first error.
fn store_files(
    factory: &dyn CheckpointStreamFactory,
    context: &SnapshotContext,
    files: &[(PathBuf, CheckpointedStateScope)],
    written: &HashMap<String, WrittenChecksum>,
) -> (Vec<Option<Stored>>, Option<Error>) {
    let (done, panicked) = run_parallel(
        files,
        || context.check_cancelled(),
        |(path, scope)| {
            let name = path.file_name().map(|name| name.to_string_lossy());
            let known = name.and_then(|name| written.get(name.as_ref()).copied());
            store_file(factory, context, path, *scope, known)
        },
    );
    let stopped = || Error::WorkerStopped {
        worker: "a thread storing snapshot files".into(),
    };
    let mut stored: Vec<Option<Stored>> = files.iter().map(|_| None).collect();
    let mut first_error = panicked.then(stopped);
    for (index, outcome) in done {
        match outcome {
            Ok(file) => stored[index] = Some(file),
            Err(err) => drop(first_error.get_or_insert(err)),
        }
    }
    if first_error.is_none() && stored.iter().any(Option::is_none) {
        first_error = Some(stopped());
    }
    (stored, first_error)
}

/// Stores `path` in `scope`; returns its handle, size and checksum. An sst file, which
/// RocksDB never changes, and the timers file, which nothing changes once written, are
/// stored without copying where the storage can (a hard link); any other file is copied
/// through a stream. `known` is the size and CRC-32C RocksDB recorded when it wrote the
/// file: a linked file is then not read at all, a copied one is checked against it. Other
/// files are read once for their checksums.
fn store_file(
    factory: &dyn CheckpointStreamFactory,
    context: &SnapshotContext,
    path: &Path,
    scope: CheckpointedStateScope,
    known: Option<WrittenChecksum>,
) -> Result<Stored> {
    let immutable = scope == CheckpointedStateScope::Shared
        || path.file_name().is_some_and(|name| name == TIMERS_FILE);
    if immutable && let Some(handle) = factory.store_immutable_file(path, scope)? {
        let checked = match known {
            Some(known) => fs::metadata(path).map(|meta| (meta.len(), known.crc)),
            None => File::open(path)
                .and_then(|file| copy_checked(&mut BufReader::new(file), &mut io::sink())),
        };
        let checked = checked
            .map_err(|err| Error::io(path, err))
            .and_then(|(size, crc)| check_written(path, size, crc, known));
        return match checked {
            Ok((size, crc)) => Ok((handle, size, crc)),
            Err(err) => {
                let _ = handle.discard();
                Err(err)
            }
        };
    }
    let mut stream = factory.create_output_stream(scope)?;
    let registration = context.register(stream.closer())?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let (size, crc) = copy_checked(&mut BufReader::new(file), &mut stream)
        .map_err(|e| Error::stream(format!("uploading {}", path.display()), e))?;
    context.unregister(registration);
    let handle = stream.close_and_get_handle()?;
    match check_written(path, size, crc, known) {
        Ok((size, crc)) => Ok((handle, size, crc)),
        Err(err) => {
            let _ = handle.discard();
            Err(err)
        }
    }
}

/// `(size, crc)` if they match what RocksDB recorded when it wrote `path` (or it recorded
/// nothing), else [`Error::Corrupted`] naming the file: it changed after it was written.
fn check_written(
    path: &Path,
    size: u64,
    crc: u32,
    known: Option<WrittenChecksum>,
) -> Result<(u64, u32)> {
    match known {
        Some(known) if known != (WrittenChecksum { size, crc }) => Err(Error::Corrupted {
            what: format!("sst file {}", path.display()),
            reason: format!(
                "{size} bytes with crc32c {crc:#010x}, RocksDB wrote {} bytes with {:#010x}",
                known.size, known.crc
            ),
        }),
        _ => Ok((size, crc)),
    }
}

/// The incremental snapshot strategy of the RocksDB backend; registered as keyed strategy
/// `rocksdb-incremental`.
#[derive(Debug)]
pub struct RocksIncrementalSnapshotStrategy {
    source: RocksDBSnapshotSource,
    local_recovery: LocalRecoveryConfig,
}

impl RocksIncrementalSnapshotStrategy {
    /// A strategy over `source`; with `local_recovery` enabled the snapshot directory is
    /// kept as a task-local copy instead of being deleted.
    pub fn new(source: RocksDBSnapshotSource, local_recovery: LocalRecoveryConfig) -> Self {
        RocksIncrementalSnapshotStrategy {
            source,
            local_recovery,
        }
    }
}

impl SnapshotStrategy<Arc<dyn KeyedStateHandle>> for RocksIncrementalSnapshotStrategy {
    fn description(&self) -> &str {
        "RocksDB incremental checkpoint"
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<Box<dyn AsyncSnapshotCallable<KeyedSnapshotResult>>> {
        let (checkpoint_id, _timestamp, _options) =
            (request.id, request.timestamp, &request.options);
        let states = self.source.states();
        let (backend_id, base) = {
            let history = self.source.incremental();
            (history.backend_id.clone(), history.base())
        };
        let mut snapshot = RocksIncrementalAsyncSnapshot {
            directory: None,
            lease: None,
            cut: None,
            written: HashMap::new(),
            uploaded: Vec::new(),
            heap_timers: self.source.heap_timer_snapshot(),
            states,
            base,
            backend_id,
            source: self.source.clone(),
            factory,
            local_recovery: self.local_recovery.clone(),
            checkpoint_id,
        };
        if snapshot.states.is_empty() {
            return Ok(Box::new(snapshot));
        }
        snapshot.lease = Some(self.source.lease()?);
        let db = self.source.db()?;
        let cuts = self.source.cuts();
        if let Some(earlier) = cuts.waiting() {
            // Sealing now would flush writes made after the earlier cut before it is
            // captured; its own task reads the outcome.
            let _ = earlier.capture(&db, None, &|| Ok(()));
        }
        // A name of its own, so a snapshot of a reused checkpoint id never touches the
        // directory of one still running.
        let sequence = SNAPSHOT_DIRECTORIES.fetch_add(1, Ordering::Relaxed);
        let directory = self
            .source
            .instance_dir()
            .join(format!("chk-{checkpoint_id}-{sequence}"));
        // Set before creating, so cleanup removes a partly created directory too.
        snapshot.directory = Some(directory.clone());
        if !cuts.take_flush_next() {
            let families = (snapshot.states.iter())
                .map(|meta| cf_name(&meta.name))
                .collect();
            match Cut::seal(&db, cuts.compactions(), checkpoint_id, directory, families) {
                Ok(cut) => {
                    let cut = Arc::new(cut);
                    cuts.set_waiting(&cut);
                    snapshot.cut = Some(cut);
                    return Ok(Box::new(snapshot));
                }
                Err(err) => {
                    snapshot.cleanup_provided_resources();
                    return Err(err);
                }
            }
        }
        let created = Checkpoint::new(&db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(&directory))
            .map_err(db_error(format_args!(
                "creating the RocksDB checkpoint of checkpoint {checkpoint_id} in {}",
                directory.display()
            )));
        if let Err(err) = created {
            // No task owns the snapshot yet: release what the synchronous part took.
            snapshot.cleanup_provided_resources();
            return Err(err);
        }
        // Files the checkpoint holds that a compaction has since removed are missing here;
        // the asynchronous part reads those for their checksums.
        snapshot.written = live_sst_checksums(&db).unwrap_or_else(|err| {
            tracing::warn!(%err, "RocksDB did not list its files' checksums; reading the files");
            HashMap::new()
        });
        Ok(Box::new(snapshot))
    }
}

struct RocksIncrementalAsyncSnapshot {
    directory: Option<PathBuf>,
    lease: Option<Lease>,
    /// The cut to capture into `directory`, unless the synchronous part created the
    /// checkpoint itself (with a flush).
    cut: Option<Arc<Cut>>,
    /// Size and CRC-32C of the live sst files, as RocksDB recorded them when it wrote them.
    written: HashMap<String, WrittenChecksum>,
    /// Handles uploaded so far, deleted again if the snapshot fails.
    uploaded: Vec<Arc<dyn StreamStateHandle>>,
    /// The timers of the states kept in memory, as the synchronous part found them.
    heap_timers: HeapTimerSnapshot,
    states: Vec<StateMetaInfo>,
    base: BTreeMap<String, UploadedFile>,
    backend_id: String,
    source: RocksDBSnapshotSource,
    factory: Arc<dyn CheckpointStreamFactory>,
    local_recovery: LocalRecoveryConfig,
    checkpoint_id: CheckpointId,
}

/// Numbers snapshot directories (`chk-<checkpoint id>-<n>`) within the process.
static SNAPSHOT_DIRECTORIES: AtomicU64 = AtomicU64::new(0);

/// Name of the meta data file in a task-local copy.
pub(crate) const LOCAL_META_FILE: &str = "SNAPSTATE-META";

impl RocksIncrementalAsyncSnapshot {
    /// Turns the snapshot directory into the task-local copy under the local recovery root:
    /// the files plus a copy of the meta data.
    fn keep_local(
        &mut self,
        remote: &IncrementalRemoteKeyedStateHandle,
        meta: &[u8],
    ) -> Result<Option<IncrementalLocalKeyedStateHandle>> {
        let (Some(local), Some(directory)) = (
            self.local_recovery.storage().cloned(),
            self.directory.as_ref(),
        ) else {
            return Ok(None);
        };
        let root = local.checkpoint_dir(self.checkpoint_id);
        let target = root.join(format!(
            "{}-kg{}",
            self.backend_id,
            remote.key_group_range.start()
        ));
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        if target.exists() {
            fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        }
        fs::rename(directory, &target).map_err(|e| Error::io(&target, e))?;
        self.directory = Some(target.clone());
        let meta_path = target.join(LOCAL_META_FILE);
        fs::write(&meta_path, meta).map_err(|e| Error::io(&meta_path, e))?;
        let mut size = 0;
        let mut shared = Vec::new();
        for file in &remote.shared_state {
            let path = target.join(&file.local_path);
            let len = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
            size += len;
            shared.push(HandleAndLocalPath::new(
                local.file_handle(path, len),
                file.local_path.clone(),
            ));
        }
        // The directory now belongs to the handle.
        self.directory = None;
        Ok(Some(IncrementalLocalKeyedStateHandle {
            backend_identifier: self.backend_id.clone(),
            checkpoint_id: self.checkpoint_id,
            directory: DirectoryStateHandle::new(target, size),
            key_group_range: remote.key_group_range,
            meta_state: local.file_handle(meta_path, meta.len() as u64),
            shared_state: shared,
        }))
    }

    /// Writes the timers kept in memory into [`TIMERS_FILE`] in the snapshot directory, as
    /// a canonical key-group stream of those states alone; returns its key groups' offsets
    /// and checksums, `None` when no state is kept in memory.
    fn write_timers(
        &self,
        context: &SnapshotContext,
        directory: &Path,
    ) -> Result<Option<TimerFileIndex>> {
        if self.heap_timers.is_empty() {
            return Ok(None);
        }
        let states: Vec<StateMetaInfo> = (self.states.iter())
            .filter(|meta| self.heap_timers.contains_key(&meta.name))
            .cloned()
            .collect();
        let sets: Vec<&[KeyGroupTimers]> = (states.iter())
            .filter_map(|meta| self.heap_timers.get(&meta.name).map(Vec::as_slice))
            .collect();
        let range = self.source.key_group_range();
        let max_parallelism = self.source.max_parallelism();
        let header = KeyedBackendSerializationProxy::new(
            self.source.key_serializer(),
            states,
            UNCOMPRESSED,
            max_parallelism,
        );
        let path = directory.join(TIMERS_FILE);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut out = io::BufWriter::with_capacity(256 * 1024, file);
        let (offsets, checksums) = {
            let mut writer = KeyedSnapshotWriter::new(
                &mut out,
                0,
                &header,
                &UncompressedStreamCompressionDecorator,
                range,
                max_parallelism,
            )?;
            write_key_groups_parallel(context, &mut writer, |group| {
                let shard = range.position(group.key_group());
                for (id, groups) in (0u16..).zip(&sets) {
                    let timers = shard.and_then(|shard| groups.get(shard));
                    for key in timers.into_iter().flatten() {
                        group.write_entry(id, key, &[])?;
                    }
                }
                Ok(())
            })?;
            writer.finish()?
        };
        out.flush().map_err(|e| Error::io(&path, e))?;
        Ok(Some(TimerFileIndex {
            offsets: offsets.offsets().to_vec(),
            checksums,
        }))
    }

    fn run(&mut self, context: &SnapshotContext) -> Result<KeyedSnapshotResult> {
        let Some(directory) = self.directory.clone() else {
            return Ok(SnapshotResult::empty());
        };
        if let Some(cut) = self.cut.take() {
            let db = self.source.db()?;
            let base = &self.base;
            let stored = |name: &str| base.contains_key(name);
            match cut.capture(&db, Some(&stored), &|| context.check_cancelled()) {
                Ok(written) => self.written = written,
                Err(err) => {
                    if !matches!(err, Error::Cancelled { .. }) {
                        self.source.cuts().flush_next();
                    }
                    cut.abandon();
                    return Err(err);
                }
            }
        }
        let timers = self.write_timers(context, &directory)?;
        let mut names: Vec<String> = fs::read_dir(&directory)
            .map_err(|e| Error::io(&directory, e))?
            .map(|entry| {
                entry
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .map_err(|e| Error::io(&directory, e))
            })
            .collect::<Result<_>>()?;
        names.sort();
        // Files the base does not hold, stored by several threads at once.
        let new: Vec<(PathBuf, CheckpointedStateScope)> = (names.iter())
            .filter(|name| !name.ends_with(".sst") || !self.base.contains_key(*name))
            .map(|name| {
                let scope = match name.ends_with(".sst") {
                    true => CheckpointedStateScope::Shared,
                    false => CheckpointedStateScope::Exclusive,
                };
                (directory.join(name), scope)
            })
            .collect();
        let (stored, failure) = store_files(&*self.factory, context, &new, &self.written);
        self.uploaded
            .extend(stored.iter().flatten().map(|(handle, _, _)| handle.clone()));
        if let Some(err) = failure {
            return Err(err);
        }
        let mut stored = stored.into_iter().flatten();
        let mut manifest = FileManifest::default();
        let mut shared = Vec::new();
        let mut private = Vec::new();
        let mut files = BTreeMap::new();
        for name in names {
            let is_sst = name.ends_with(".sst");
            let known = self.base.get(&name).filter(|_| is_sst).cloned();
            let (handle, size, crc): (Arc<dyn StreamStateHandle>, u64, u32) = match &known {
                Some(known) => (
                    Arc::new(PlaceholderStreamStateHandle::new(&known.key, known.size)),
                    known.size,
                    known.crc,
                ),
                // In the order of `new`, which holds every file not in the base.
                None => stored.next().ok_or_else(|| Error::WorkerStopped {
                    worker: format!("the upload of {name}"),
                })?,
            };
            if is_sst {
                // A file this instance uploads is keyed by this instance's identifier; a
                // file of the base keeps the key it was registered under.
                let key = known.map_or_else(|| format!("{}/{name}", self.backend_id), |k| k.key);
                files.insert(
                    name.clone(),
                    UploadedFile {
                        key: key.clone(),
                        size,
                        crc,
                    },
                );
                shared.push(HandleAndLocalPath::shared(handle, name.clone(), key));
            } else {
                private.push(HandleAndLocalPath::new(handle, name.clone()));
            }
            manifest.files.push(ManifestEntry {
                name,
                size,
                crc,
                shared: is_sst,
            });
        }
        context.check_cancelled()?;
        let header = KeyedBackendSerializationProxy::new(
            self.source.key_serializer(),
            self.states.clone(),
            "none",
            self.source.max_parallelism(),
        );
        let mut meta = Vec::new();
        header.write_to(&mut meta)?;
        manifest.write_to(&mut meta)?;
        if let Some(timers) = &timers {
            timers.write_to(&mut meta);
        }
        let meta_state = state_format::snapshot_stream::write_stream(
            context,
            &*self.factory,
            CheckpointedStateScope::Exclusive,
            &meta,
            "incremental snapshot meta data",
        )?;
        self.uploaded.push(meta_state.clone());
        let handle = IncrementalRemoteKeyedStateHandle {
            backend_identifier: self.backend_id.clone(),
            key_group_range: self.source.key_group_range(),
            checkpoint_id: self.checkpoint_id,
            strategy: Some(ROCKSDB_INCREMENTAL.into()),
            shared_state: shared,
            private_state: private,
            meta_state,
        };
        let local = match self.keep_local(&handle, &meta) {
            Ok(local) => local,
            Err(err) => {
                tracing::warn!(error = %err, "task-local snapshot copy failed; continuing without local recovery");
                None
            }
        };
        self.source
            .incremental()
            .pending
            .insert(self.checkpoint_id, files);
        // From here on the result owns the uploads.
        self.uploaded.clear();
        let remote: Arc<dyn KeyedStateHandle> = Arc::new(handle);
        Ok(match local {
            None => SnapshotResult::of(remote),
            Some(local) => SnapshotResult::with_local_state(remote, Arc::new(local)),
        })
    }
}

impl AsyncSnapshotCallable<KeyedSnapshotResult> for RocksIncrementalAsyncSnapshot {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<KeyedSnapshotResult> {
        let outcome = self.run(context);
        if outcome.is_err() {
            for handle in self.uploaded.drain(..) {
                if let Err(err) = handle.discard() {
                    tracing::warn!(error = %err, file = %handle.describe(), "deleting an upload of a failed snapshot failed");
                }
            }
        }
        outcome
    }

    fn cleanup_provided_resources(&mut self) {
        if let Some(cut) = self.cut.take() {
            cut.abandon();
        }
        if let Some(directory) = self.directory.take()
            && let Err(err) = fs::remove_dir_all(&directory)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(error = %err, directory = %directory.display(), "removing a snapshot directory failed");
        }
        self.lease = None;
    }
}

/// Creates [`RocksIncrementalSnapshotStrategy`]s; registered as keyed strategy
/// `rocksdb-incremental`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RocksIncrementalSnapshotStrategyFactory;

impl KeyedSnapshotStrategyFactory for RocksIncrementalSnapshotStrategyFactory {
    fn name(&self) -> &'static str {
        ROCKSDB_INCREMENTAL
    }

    fn description(&self) -> &'static str {
        "incremental RocksDB checkpoints: new sst files shared, the rest by placeholder"
    }

    fn backend(&self) -> &'static str {
        ROCKSDB
    }

    fn create(
        &self,
        backend_state: &dyn Any,
        params: &KeyedBackendParams,
        _registry: &Registry,
    ) -> Result<Box<dyn SnapshotStrategy<Arc<dyn KeyedStateHandle>>>> {
        let source =
            backend_state_as::<RocksDBSnapshotSource>(backend_state, ROCKSDB_INCREMENTAL, ROCKSDB)?;
        Ok(Box::new(RocksIncrementalSnapshotStrategy::new(
            source.clone(),
            params.local_recovery.clone(),
        )))
    }
}

impl fmt::Debug for RocksIncrementalAsyncSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksIncrementalAsyncSnapshot")
            .field("checkpoint_id", &self.checkpoint_id)
            .field("directory", &self.directory)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_storage_local::{LocalCheckpointStorage, MemoryCheckpointStreamFactory};

    /// An sst file whose bytes changed after RocksDB wrote them is refused by name, whether
    /// it is copied through a stream (checked against RocksDB's checksum) or linked (checked
    /// against RocksDB's size), and no stored copy is left behind.
    #[test]
    fn a_file_that_changed_after_rocksdb_wrote_it_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000042.sst");
        fs::write(&path, b"sst bytes as RocksDB wrote them").unwrap();
        let written = WrittenChecksum {
            size: 31,
            crc: crc32c::crc32c(b"sst bytes as RocksDB wrote them"),
        };
        let context = SnapshotContext::new(CheckpointId::new(1));
        let memory = MemoryCheckpointStreamFactory::default();
        let shared = CheckpointedStateScope::Shared;
        let (_, size, crc) = store_file(&memory, &context, &path, shared, Some(written)).unwrap();
        assert_eq!((size, crc), (written.size, written.crc));

        fs::write(&path, b"sst bytes as RocksDB wrote them, then damaged").unwrap();
        let err = store_file(&memory, &context, &path, shared, Some(written)).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupted { what, .. } if what.contains("000042.sst")),
            "{err}"
        );

        let storage = LocalCheckpointStorage::new(dir.path().join("checkpoints")).unwrap();
        let local = storage.stream_factory(CheckpointId::new(1)).unwrap();
        let err = store_file(&local, &context, &path, shared, Some(written)).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupted { what, .. } if what.contains("000042.sst")),
            "{err}"
        );
        let left: Vec<_> = fs::read_dir(storage.shared_dir()).unwrap().collect();
        assert!(left.is_empty(), "a refused file stays stored: {left:?}");

        // Without RocksDB's record the file is read for its checksum.
        let (_, size, crc) = store_file(&local, &context, &path, shared, None).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!((size, crc), (bytes.len() as u64, crc32c::crc32c(&bytes)));
    }

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let manifest = FileManifest {
            files: vec![
                ManifestEntry {
                    name: "000012.sst".into(),
                    size: 4096,
                    crc: 0xDEAD_BEEF,
                    shared: true,
                },
                ManifestEntry {
                    name: "CURRENT".into(),
                    size: 16,
                    crc: 7,
                    shared: false,
                },
            ],
        };
        let mut bytes = Vec::new();
        manifest.write_to(&mut bytes).unwrap();
        assert_eq!(FileManifest::read_from(&mut &bytes[..]).unwrap(), manifest);
        assert_eq!(manifest.get("CURRENT").map(|e| e.size), Some(16));
        for cut in 0..bytes.len() {
            let err = FileManifest::read_from(&mut &bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. } | Error::Corrupted { .. }),
                "cut at {cut}: {err}"
            );
        }
        for pos in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[pos] ^= 0x01;
            let err = FileManifest::read_from(&mut &flipped[..]).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Corrupted { .. }
                        | Error::Truncated { .. }
                        | Error::UnsupportedVersion { .. }
                ),
                "byte {pos} flipped: {err}"
            );
        }
    }
}

//! [`HeapIncrementalSnapshotStrategy`] (`heap-incremental`): checkpoints of the heap backend
//! that write only what changed since the last *completed* checkpoint.
//!
//! The backend records which entries change ([`crate::changes`], O(1) per write). The
//! synchronous part takes the same copy-on-write version the full strategy takes and seals
//! the changes recorded since the previous synchronous part (one move per state and key
//! group). The asynchronous part then writes either
//!
//! - a **delta**: for every changed entry its value in the version or a tombstone, per key
//!   group through the compression decorator with a CRC-32C per key group
//!   ([`crate::format`]'s delta entries), to the shared scope; the handle lists the last
//!   completed checkpoint's files (by placeholder) and the new delta; or
//! - a new **base** (materialization): the full canonical snapshot, to the shared scope,
//!   when there is no completed checkpoint to build on, or when the deltas would exceed
//!   [`HeapIncrementalOptions::materialization_fraction`] of the base's bytes, so the bytes a
//!   checkpoint refers to and the time to restore it stay bounded.
//!
//! The handle is an [`IncrementalRemoteKeyedStateHandle`]: chain files are shared files
//! under keys unique to the backend instance, so the coordinator's
//! `SharedStateRegistry` (`state-coordinator`) keeps each file while a retained
//! checkpoint needs it and deletes it when none does. Its meta data stream holds the keyed
//! header, a [`FileManifest`] and the chain description ([`crate::chain`]).
//!
//! `notify_checkpoint_complete(id)` makes `id`'s chain the base of the next checkpoint and
//! forgets the changes it covers; an aborted or failed checkpoint changes nothing, so its
//! changes go into the next delta. Savepoints are always full canonical snapshots, written
//! by the `heap` strategy, and leave the chain alone. Local recovery copies are not written
//! by this strategy.

use std::any::Any;
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::TtlClock;
use state_api::{
    AsyncSnapshotCallable, CheckpointStreamFactory, CheckpointedStateScope, Error,
    HandleAndLocalPath, IncrementalRemoteKeyedStateHandle, KeyedBackendParams, KeyedSnapshotResult,
    KeyedSnapshotStrategyFactory, KeyedStateHandle, LocalRecoveryConfig,
    PlaceholderStreamStateHandle, Registry, Result, SnapshotContext, SnapshotResult,
    SnapshotStrategy, StreamCompressionDecorator, StreamStateHandle, backend_state_as,
};
use state_format::KeyedBackendSerializationProxy;
use state_format::file_manifest::{FileManifest, ManifestEntry};
use state_format::keyed_format::{KeyedSnapshotWriter, write_key_groups_parallel};

use crate::backend::{HeapSnapshotSource, HeapSnapshotVersion};
use crate::chain::{Chain, ChainFile, Completed, FileKind};
use crate::changes::Segment;
use crate::format::{EntryBuffers, write_delta_key_group, write_key_group};
use crate::snapshot::HeapSnapshotStrategy;
use crate::{HEAP, HEAP_INCREMENTAL};

/// Backend option (`KeyedBackendParams::options`) that sets
/// [`HeapIncrementalOptions::materialization_fraction`].
pub const MATERIALIZATION_FRACTION_OPTION: &str = "heap.incremental.materialization-fraction";

/// Tuning of [`HeapIncrementalSnapshotStrategy`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeapIncrementalOptions {
    /// A checkpoint writes a new base instead of a delta when the deltas of its chain,
    /// this one's estimated size included, would exceed this fraction of the base's bytes.
    /// It bounds what a checkpoint refers to (at most about `1 + fraction` times a full
    /// snapshot) and how much more than a full snapshot a restore reads. Default 0.2,
    /// chosen on the benchmark's 61-checkpoint chains (`bench/results/README.md`): the chain
    /// stays within 1.2x a full snapshot while a 1%-per-checkpoint change rate rewrites the
    /// base every 20th checkpoint, writing 40% less than 0.1 over a long run.
    pub materialization_fraction: f64,
}

impl Default for HeapIncrementalOptions {
    fn default() -> Self {
        HeapIncrementalOptions {
            materialization_fraction: 0.2,
        }
    }
}

impl HeapIncrementalOptions {
    /// The options in `params.options`, defaults for those not given.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the option for a value that is not a number of at
    /// least 0.
    pub fn from_params(params: &KeyedBackendParams) -> Result<Self> {
        let mut options = Self::default();
        if let Some(value) = params.options.get(MATERIALIZATION_FRACTION_OPTION) {
            options.materialization_fraction = value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|fraction| fraction.is_finite() && *fraction >= 0.0)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "option `{MATERIALIZATION_FRACTION_OPTION}` is `{value}`: give a number of at least 0 (0 writes a new base every checkpoint)"
                    ))
                })?;
        }
        Ok(options)
    }
}

/// The heap backend's incremental snapshot strategy; registered as keyed strategy
/// `heap-incremental`.
///
/// The synchronous part takes the copy-on-write version the full strategy takes and seals
/// the changes the backend recorded since the previous synchronous part. The asynchronous
/// part writes to the shared scope either a *delta* (each changed entry's current value or
/// a tombstone, per key group through the decorator with a CRC-32C; see
/// [`format`](crate::format#delta-entries)) on the chain of the last completed checkpoint,
/// or a new full *base* when there is none or the deltas would exceed
/// [`HeapIncrementalOptions::materialization_fraction`] of the base. The result is an
/// [`IncrementalRemoteKeyedStateHandle`] to register with the coordinator's
/// `SharedStateRegistry` (`state-coordinator`).
/// `notify_checkpoint_complete` moves the base; aborted and failed checkpoints lose no
/// change. Savepoints are full canonical snapshots. No task-local copies are written.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use state_api::{CheckpointId, CheckpointListener, SnapshotRequest, IncrementalRemoteKeyedStateHandle, KeyGroupRange, KeyedBackendParams, KeyedStateBackend, KeyedStateHandle, Registry, StateMetaInfo};
/// use state_coordinator::SharedStateRegistry;
/// use state_storage_local::MemoryCheckpointStreamFactory;
/// use state_heap::HeapKeyedStateBackend;
///
/// state_heap::link();
/// let registry = Registry::global();
/// let mut params = KeyedBackendParams::new(state_api::MaxParallelism::new(128)?, KeyGroupRange::new(0, 127)?);
/// params.strategy = Some("heap-incremental".into());
/// let mut backend = HeapKeyedStateBackend::new(params.clone(), registry)?;
/// backend.register_state(&StateMetaInfo::value("count", "void", "u64-be"))?;
/// for user in 0..2000u64 {
///     backend.set_current_key(&user.to_be_bytes())?;
///     backend.put_value("count", b"", &1u64.to_be_bytes())?;
/// }
/// let factory = Arc::new(MemoryCheckpointStreamFactory::default());
/// let shared = SharedStateRegistry::default();
/// let mut checkpoint = |backend: &mut HeapKeyedStateBackend, id: u64| -> state_api::Result<_> {
///     let id = CheckpointId::new(id);
///     let result = backend.snapshot(&SnapshotRequest::checkpoint(id, 0), factory.clone())?.run()?;
///     let handle = result.job_manager_owned().expect("state was written").clone();
///     let handle = handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>().expect("incremental");
///     let retained = shared.register(handle)?;
///     backend.notify_checkpoint_complete(id)?;
///     Ok((handle.clone(), retained))
/// };
/// let (first, _) = checkpoint(&mut backend, 1)?; // the base: every entry
/// backend.set_current_key(&7u64.to_be_bytes())?;
/// backend.put_value("count", b"", &2u64.to_be_bytes())?;
/// let (_, second) = checkpoint(&mut backend, 2)?; // a delta of one entry, on the base
/// assert_eq!(second.shared_state.len(), 2);
/// assert!(second.shared_state[1].handle.state_size() < first.shared_state[0].handle.state_size() / 10);
///
/// let restorable: Arc<dyn KeyedStateHandle> = Arc::new(shared.resolve(&second)?);
/// let mut restored = HeapKeyedStateBackend::restore(params, registry, &[restorable])?;
/// restored.set_current_key(&7u64.to_be_bytes())?;
/// assert_eq!(restored.value("count", b"")?, Some(2u64.to_be_bytes().to_vec()));
/// # Ok::<(), state_api::Error>(())
/// ```
pub struct HeapIncrementalSnapshotStrategy {
    source: HeapSnapshotSource,
    /// Savepoints: full canonical snapshots.
    full: HeapSnapshotStrategy,
    compression: Arc<dyn StreamCompressionDecorator>,
    options: HeapIncrementalOptions,
}

impl fmt::Debug for HeapIncrementalSnapshotStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapIncrementalSnapshotStrategy")
            .field("compression", &self.compression.name())
            .field("options", &self.options)
            .finish()
    }
}

impl HeapIncrementalSnapshotStrategy {
    /// A strategy over `source` writing key groups with `compression`; the backend starts
    /// tracking changes. Its savepoints leave out what expired by `clock`.
    pub fn new(
        source: HeapSnapshotSource,
        compression: Arc<dyn StreamCompressionDecorator>,
        options: HeapIncrementalOptions,
        clock: Arc<dyn TtlClock>,
    ) -> Self {
        source.track_changes();
        HeapIncrementalSnapshotStrategy {
            full: HeapSnapshotStrategy::new(
                source.clone(),
                compression.clone(),
                LocalRecoveryConfig::disabled(),
                clock,
            ),
            source,
            compression,
            options,
        }
    }
}

impl SnapshotStrategy<Arc<dyn KeyedStateHandle>> for HeapIncrementalSnapshotStrategy {
    fn description(&self) -> &str {
        "heap incremental checkpoint"
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<Box<dyn AsyncSnapshotCallable<KeyedSnapshotResult>>> {
        if request.is_savepoint() {
            return self.full.snapshot(request, factory);
        }
        let checkpoint_id = request.id;
        let mut heap = self.source.lock();
        let version = self.source.version_of(&heap);
        let incremental = heap.incremental.as_mut().ok_or_else(|| {
            Error::InvalidArgument("the heap backend does not track changes".into())
        })?;
        let sequence = incremental.changes.seal();
        let base = incremental.history.start(checkpoint_id, sequence);
        let segments = base.as_ref().map_or_else(Vec::new, |base| {
            incremental.changes.segments(base.sequence, sequence)
        });
        let backend_id = incremental.history.backend_id.clone();
        drop(heap);
        Ok(Box::new(HeapIncrementalAsyncSnapshot {
            version: Some(version),
            segments,
            base,
            sequence,
            backend_id,
            source: self.source.clone(),
            factory,
            compression: self.compression.clone(),
            options: self.options,
            checkpoint_id,
            uploaded: Vec::new(),
        }))
    }
}

/// The asynchronous part: owns the version and the sealed segments until cleanup.
struct HeapIncrementalAsyncSnapshot {
    version: Option<HeapSnapshotVersion>,
    /// The changes since the base, oldest first.
    segments: Vec<Arc<Segment>>,
    /// The last completed checkpoint at the synchronous part, if any.
    base: Option<Completed>,
    /// The sequence number of this checkpoint's segment.
    sequence: u64,
    backend_id: String,
    source: HeapSnapshotSource,
    factory: Arc<dyn CheckpointStreamFactory>,
    compression: Arc<dyn StreamCompressionDecorator>,
    options: HeapIncrementalOptions,
    checkpoint_id: CheckpointId,
    /// Streams written so far, deleted again if the snapshot fails.
    uploaded: Vec<Arc<dyn StreamStateHandle>>,
}

impl fmt::Debug for HeapIncrementalAsyncSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapIncrementalAsyncSnapshot")
            .field("checkpoint_id", &self.checkpoint_id)
            .field("segments", &self.segments.len())
            .field("base", &self.base.as_ref().map(|base| base.checkpoint_id))
            .finish()
    }
}

/// Counts and checksums the bytes of a stream as they are written.
struct Checksummed<'a> {
    inner: &'a mut dyn Write,
    crc: u32,
}

impl Write for Checksummed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..written]);
        Ok(written)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl HeapIncrementalAsyncSnapshot {
    /// Whether this checkpoint writes a new base: there is nothing to build on, or the
    /// chain's deltas with this one would pass the materialization fraction of the base.
    fn materializes(&self, version: &HeapSnapshotVersion) -> bool {
        let Some(base) = &self.base else {
            return true;
        };
        let base_bytes = base.chain.base_bytes() as f64;
        let changed = self.segments.iter().map(|s| s.len()).sum::<usize>() as f64;
        let entries = version.entry_count().max(1) as f64;
        // A changed entry costs about what an average entry costs in a base.
        let estimate = base_bytes * (changed / entries).min(1.0);
        let deltas = base.chain.delta_bytes() as f64 + estimate;
        deltas > self.options.materialization_fraction * base_bytes
    }

    /// Writes one chain file of `kind` to the shared scope.
    fn write_file(
        &mut self,
        context: &SnapshotContext,
        version: &HeapSnapshotVersion,
        header: &KeyedBackendSerializationProxy,
        kind: FileKind,
    ) -> Result<(ChainFile, Arc<dyn StreamStateHandle>)> {
        let tables = &version.tables;
        let mut stream = self
            .factory
            .create_output_stream(CheckpointedStateScope::Shared)?;
        let registration = context.register(stream.closer())?;
        let (offsets, checksums, crc) = {
            let mut out = Checksummed {
                inner: &mut stream,
                crc: 0,
            };
            let mut writer = KeyedSnapshotWriter::new(
                &mut out,
                0,
                header,
                &*self.compression,
                tables.range,
                tables.max_parallelism,
            )?;
            let segments = &self.segments;
            write_key_groups_parallel(context, &mut writer, |group| {
                let shard = (group.key_group().get() - tables.range.start().get()) as usize;
                let buffers = &mut EntryBuffers::default();
                match kind {
                    FileKind::Base => write_key_group(&tables.states, shard, group, buffers),
                    FileKind::Delta => {
                        write_delta_key_group(&tables.states, segments, shard, group, buffers)
                    }
                }
            })?;
            let (offsets, checksums) = writer.finish()?;
            (offsets, checksums, out.crc)
        };
        context.unregister(registration);
        let handle = stream.close_and_get_handle()?;
        self.uploaded.push(handle.clone());
        let suffix = match kind {
            FileKind::Base => "base",
            FileKind::Delta => "delta",
        };
        let name = format!(
            "{}-{}-{}.{suffix}",
            self.backend_id, self.checkpoint_id, self.sequence
        );
        let file = ChainFile {
            key: name.clone(),
            name,
            kind,
            checkpoint_id: self.checkpoint_id,
            offsets,
            checksums,
            end: handle.state_size(),
            crc,
        };
        Ok((file, handle))
    }

    fn run(&mut self, context: &SnapshotContext) -> Result<KeyedSnapshotResult> {
        let version = self.version.take().ok_or_else(|| Error::Closed {
            what: format!("snapshot version of checkpoint {}", self.checkpoint_id),
        })?;
        let outcome = self.write(context, &version);
        self.version = Some(version);
        outcome
    }

    fn write(
        &mut self,
        context: &SnapshotContext,
        version: &HeapSnapshotVersion,
    ) -> Result<KeyedSnapshotResult> {
        let tables = &version.tables;
        if tables.states.is_empty() || tables.range.is_empty() {
            return Ok(SnapshotResult::empty());
        }
        let header = KeyedBackendSerializationProxy::new(
            &*version.key_serializer,
            version.states(),
            self.compression.name(),
            tables.max_parallelism,
        );
        // The files this checkpoint refers to: the base's chain continued by a delta, or a
        // new base alone. Files of the base are referred to by placeholder.
        let mut chain = Chain::default();
        let mut shared = Vec::new();
        let kind = match self.materializes(version) {
            true => FileKind::Base,
            false => {
                let base = self.base.as_ref().map(|base| base.chain.clone());
                for file in base.iter().flat_map(|chain| &chain.files) {
                    let placeholder = PlaceholderStreamStateHandle::new(&file.key, file.end);
                    shared.push(HandleAndLocalPath::shared(
                        Arc::new(placeholder),
                        file.name.clone(),
                        file.key.clone(),
                    ));
                    chain.files.push(file.clone());
                }
                FileKind::Delta
            }
        };
        context.check_cancelled()?;
        let (file, handle) = self.write_file(context, version, &header, kind)?;
        shared.push(HandleAndLocalPath::shared(
            handle,
            file.name.clone(),
            file.key.clone(),
        ));
        chain.files.push(file);
        context.check_cancelled()?;

        let manifest = FileManifest {
            files: chain
                .files
                .iter()
                .map(|file| ManifestEntry {
                    name: file.name.clone(),
                    size: file.end,
                    crc: file.crc,
                    shared: true,
                })
                .collect(),
        };
        let mut meta = Vec::new();
        header.write_to(&mut meta)?;
        manifest.write_to(&mut meta)?;
        chain.write_to(&mut meta)?;
        let meta_state = state_format::snapshot_stream::write_stream(
            context,
            &*self.factory,
            CheckpointedStateScope::Exclusive,
            &meta,
            "heap incremental snapshot meta data",
        )?;
        self.uploaded.push(meta_state.clone());

        let handle = IncrementalRemoteKeyedStateHandle {
            backend_identifier: self.backend_id.clone(),
            key_group_range: tables.range,
            checkpoint_id: self.checkpoint_id,
            strategy: Some(crate::HEAP_INCREMENTAL.into()),
            shared_state: shared,
            private_state: Vec::new(),
            meta_state,
        };
        if let Some(incremental) = &mut self.source.lock().incremental {
            incremental
                .history
                .written(self.checkpoint_id, self.sequence, Arc::new(chain));
        }
        // From here on the result owns the files.
        self.uploaded.clear();
        Ok(SnapshotResult::of(Arc::new(handle)))
    }
}

impl AsyncSnapshotCallable<KeyedSnapshotResult> for HeapIncrementalAsyncSnapshot {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<KeyedSnapshotResult> {
        let outcome = self.run(context);
        if outcome.is_err() {
            for handle in self.uploaded.drain(..) {
                if let Err(err) = handle.discard() {
                    tracing::warn!(error = %err, file = %handle.describe(), "deleting a file of a failed snapshot failed");
                }
            }
        }
        outcome
    }

    fn cleanup_provided_resources(&mut self) {
        // Releases the version and the segments: nodes and changes only they refer to are
        // freed.
        self.version = None;
        self.segments = Vec::new();
    }
}

/// Creates [`HeapIncrementalSnapshotStrategy`]s; registered as keyed strategy
/// `heap-incremental`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapIncrementalSnapshotStrategyFactory;

impl KeyedSnapshotStrategyFactory for HeapIncrementalSnapshotStrategyFactory {
    fn name(&self) -> &'static str {
        HEAP_INCREMENTAL
    }

    fn description(&self) -> &'static str {
        "incremental heap checkpoints: deltas of changed entries on a full base, rewritten when the deltas grow"
    }

    fn backend(&self) -> &'static str {
        HEAP
    }

    fn create(
        &self,
        backend_state: &dyn Any,
        params: &KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn SnapshotStrategy<Arc<dyn KeyedStateHandle>>>> {
        let source = backend_state_as::<HeapSnapshotSource>(backend_state, HEAP_INCREMENTAL, HEAP)?;
        Ok(Box::new(HeapIncrementalSnapshotStrategy::new(
            source.clone(),
            registry.compression(&params.compression)?,
            HeapIncrementalOptions::from_params(params)?,
            params.clock.clone(),
        )))
    }
}

//! [`HeapSnapshotStrategy`]: the full snapshot of a heap backend, for checkpoints and
//! savepoints alike.
//!
//! The synchronous part takes a [`HeapSnapshotVersion`] (no data copied). The asynchronous
//! part writes it in the canonical keyed format ([`state_format::keyed_format`]): the header,
//! then every key group of the range in order, each through the configured compression
//! decorator, recording offsets and a CRC-32C per key group in a
//! [`KeyGroupsStateHandle`](state_format::KeyGroupsStateHandle). With local recovery enabled
//! the same bytes also go to a task-local file.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::TtlClock;
use state_api::{
    AsyncSnapshotCallable, CheckpointStreamFactory, Error, KeyedBackendParams, KeyedSnapshotResult,
    KeyedSnapshotStrategyFactory, KeyedStateHandle, LocalRecoveryConfig, Registry, Result,
    SnapshotContext, SnapshotResult, SnapshotStrategy, StreamCompressionDecorator,
    backend_state_as,
};
use state_format::KeyedBackendSerializationProxy;
use state_format::keyed_format::{FullSnapshotTarget, write_full_snapshot_parallel};

use crate::HEAP;
use crate::backend::{HeapSnapshotSource, HeapSnapshotVersion};
use crate::format::{EntryBuffers, write_key_group};

/// The heap backend's snapshot strategy; registered as keyed strategy `heap`.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use state_api::{CheckpointId, SnapshotRequest, KeyGroupRange, KeyedBackendParams, KeyedStateBackend, Registry, StateMetaInfo};
/// use state_storage_local::MemoryCheckpointStreamFactory;
/// use state_heap::HeapKeyedStateBackend;
///
/// state_heap::link();
/// let registry = Registry::global();
/// let params = KeyedBackendParams::new(state_api::MaxParallelism::new(128)?, KeyGroupRange::new(0, 127)?);
/// let mut backend = HeapKeyedStateBackend::new(params.clone(), registry)?;
/// backend.register_state(&StateMetaInfo::value("count", "void", "u64-be"))?;
/// backend.set_current_key(b"alice")?;
/// backend.put_value("count", b"", &1u64.to_be_bytes())?;
///
/// // The synchronous part: a copy-on-write version, no data copied.
/// let factory = Arc::new(MemoryCheckpointStreamFactory::default());
/// let task = backend.snapshot(&SnapshotRequest::checkpoint(CheckpointId::new(1), 0), factory)?;
/// // Writes after it are not in the snapshot.
/// backend.put_value("count", b"", &2u64.to_be_bytes())?;
/// // The asynchronous part, usually on another thread.
/// let result = task.run()?;
///
/// let handle = result.job_manager_owned().expect("state was written").clone();
/// let restored = HeapKeyedStateBackend::restore(params, registry, &[handle])?;
/// let mut restored = restored;
/// restored.set_current_key(b"alice")?;
/// assert_eq!(restored.value("count", b"")?, Some(1u64.to_be_bytes().to_vec()));
/// # Ok::<(), state_api::Error>(())
/// ```
pub struct HeapSnapshotStrategy {
    source: HeapSnapshotSource,
    compression: Arc<dyn StreamCompressionDecorator>,
    local_recovery: LocalRecoveryConfig,
    clock: Arc<dyn TtlClock>,
}

impl fmt::Debug for HeapSnapshotStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapSnapshotStrategy")
            .field("compression", &self.compression.name())
            .field("local_recovery", &self.local_recovery)
            .finish()
    }
}

impl HeapSnapshotStrategy {
    /// A strategy writing the state of `source` with `compression`, and a task-local copy
    /// when `local_recovery` is enabled, leaving out what expired by `clock` when a state's
    /// time to live says so.
    pub fn new(
        source: HeapSnapshotSource,
        compression: Arc<dyn StreamCompressionDecorator>,
        local_recovery: LocalRecoveryConfig,
        clock: Arc<dyn TtlClock>,
    ) -> Self {
        HeapSnapshotStrategy {
            source,
            compression,
            local_recovery,
            clock,
        }
    }
}

impl SnapshotStrategy<Arc<dyn KeyedStateHandle>> for HeapSnapshotStrategy {
    fn description(&self) -> &str {
        "heap full snapshot"
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<Box<dyn AsyncSnapshotCallable<KeyedSnapshotResult>>> {
        let (checkpoint_id, _timestamp, _options) =
            (request.id, request.timestamp, &request.options);
        // Checkpoints and savepoints are the same full, self-contained snapshot here.
        Ok(Box::new(HeapAsyncSnapshot {
            version: Some(self.source.snapshot_version()),
            factory,
            compression: self.compression.clone(),
            local_recovery: self.local_recovery.clone(),
            checkpoint_id,
            now: self.clock.now(),
        }))
    }
}

/// The asynchronous part: owns the version until cleanup releases it.
struct HeapAsyncSnapshot {
    version: Option<HeapSnapshotVersion>,
    factory: Arc<dyn CheckpointStreamFactory>,
    compression: Arc<dyn StreamCompressionDecorator>,
    local_recovery: LocalRecoveryConfig,
    checkpoint_id: CheckpointId,
    /// The time of the synchronous part: what expired by then is left out.
    now: i64,
}

impl AsyncSnapshotCallable<KeyedSnapshotResult> for HeapAsyncSnapshot {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<KeyedSnapshotResult> {
        let version = self.version.as_ref().ok_or_else(|| Error::Closed {
            what: format!("snapshot version of checkpoint {}", self.checkpoint_id),
        })?;
        let tables = &version.tables;
        if tables.states.is_empty() {
            return Ok(SnapshotResult::empty());
        }
        let header = KeyedBackendSerializationProxy::new(
            &*version.key_serializer,
            version.states(),
            self.compression.name(),
            tables.max_parallelism,
        );
        let target = FullSnapshotTarget {
            checkpoint_id: self.checkpoint_id,
            factory: &*self.factory,
            local_recovery: &self.local_recovery,
            compression: &*self.compression,
            range: tables.range,
            max_parallelism: tables.max_parallelism,
            now: self.now,
        };
        // Two threads encode key groups of the immutable version; each call has its own
        // scratch buffers.
        write_full_snapshot_parallel(context, target, &header, |group| {
            let shard = (group.key_group().get() - tables.range.start().get()) as usize;
            write_key_group(&tables.states, shard, group, &mut EntryBuffers::default())
        })
    }

    fn cleanup_provided_resources(&mut self) {
        // Releases the version: nodes only it refers to are freed.
        self.version = None;
    }
}

/// Creates [`HeapSnapshotStrategy`]s; registered as keyed strategy `heap`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapSnapshotStrategyFactory;

impl KeyedSnapshotStrategyFactory for HeapSnapshotStrategyFactory {
    fn name(&self) -> &'static str {
        HEAP
    }

    fn description(&self) -> &'static str {
        "full snapshot of heap state in the canonical key-group format (checkpoints and savepoints)"
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
        let source = backend_state_as::<HeapSnapshotSource>(backend_state, HEAP, HEAP)?;
        Ok(Box::new(HeapSnapshotStrategy::new(
            source.clone(),
            registry.compression(&params.compression)?,
            params.local_recovery.clone(),
            params.clock.clone(),
        )))
    }
}

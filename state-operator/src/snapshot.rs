//! [`OperatorSnapshotStrategy`]: the snapshot of operator list and broadcast state.
//!
//! The synchronous part deep-copies every state ([`OperatorSnapshotSource::deep_copy`]):
//! operator state is small, a copy is the simplest way to isolate the snapshot from later
//! writes, and it costs O(bytes held) on the processing thread. The asynchronous part
//! writes the copy in the [`format`](crate::format): header, then every state's partitions,
//! recording each partition's offset and the state's mode in an
//! [`OperatorStreamStateHandle`]. Without registered states it writes nothing and returns
//! an empty result.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    AsyncSnapshotCallable, CheckpointStreamFactory, CheckpointedStateScope, Error,
    LocalRecoveryConfig, OperatorBackendParams, OperatorSnapshotResult,
    OperatorSnapshotStrategyFactory, OperatorStatePartitions, OperatorStreamStateHandle, Registry,
    Result, SnapshotContext, SnapshotResult, SnapshotStrategy, backend_state_as,
};
use state_format::CheckpointStreamWithResultProvider;

use crate::OPERATOR;
use crate::backend::{OperatorSnapshotSource, OperatorStateData, OperatorStates};
use crate::format::{OperatorSnapshotHeader, PartitionWriter};

/// The operator backend's snapshot strategy; registered as operator strategy `operator`.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use state_api::{CheckpointId, SnapshotRequest, OperatorBackendParams, OperatorStateBackend, OperatorStateMetaInfo, Registry};
/// use state_storage_local::MemoryCheckpointStreamFactory;
/// use state_operator::DefaultOperatorStateBackend;
///
/// state_operator::link();
/// let registry = Registry::global();
/// let mut backend = DefaultOperatorStateBackend::new(OperatorBackendParams::new(0, 1), registry)?;
/// backend.register_state(&OperatorStateMetaInfo::union_list("watermarks", "u64-be"))?;
/// backend.append_to_list("watermarks", &7u64.to_be_bytes())?;
///
/// // The synchronous part copies the state; later writes are not in the snapshot.
/// let factory = Arc::new(MemoryCheckpointStreamFactory::default());
/// let task = backend.snapshot(&SnapshotRequest::checkpoint(CheckpointId::new(1), 0), factory)?;
/// backend.append_to_list("watermarks", &8u64.to_be_bytes())?;
/// let result = task.run()?;
///
/// let handle = result.job_manager_owned().expect("state was written").clone();
/// let restored = DefaultOperatorStateBackend::restore(OperatorBackendParams::new(0, 1), registry, &[handle])?;
/// assert_eq!(restored.list("watermarks")?, [7u64.to_be_bytes().to_vec()]);
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug)]
pub struct OperatorSnapshotStrategy {
    source: OperatorSnapshotSource,
    local_recovery: LocalRecoveryConfig,
}

impl OperatorSnapshotStrategy {
    /// A strategy over `source`, also writing a task-local copy when `local_recovery` is
    /// enabled.
    pub fn new(source: OperatorSnapshotSource, local_recovery: LocalRecoveryConfig) -> Self {
        OperatorSnapshotStrategy {
            source,
            local_recovery,
        }
    }
}

impl SnapshotStrategy<OperatorStreamStateHandle> for OperatorSnapshotStrategy {
    fn description(&self) -> &str {
        "operator state snapshot (deep copy)"
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<Box<dyn AsyncSnapshotCallable<OperatorSnapshotResult>>> {
        let (checkpoint_id, _timestamp, _options) =
            (request.id, request.timestamp, &request.options);
        // Checkpoints and savepoints write the same self-contained snapshot.
        Ok(Box::new(OperatorAsyncSnapshot {
            states: Some(self.source.deep_copy()),
            factory,
            local_recovery: self.local_recovery.clone(),
            checkpoint_id,
        }))
    }
}

/// The asynchronous part: owns the copy until cleanup drops it.
struct OperatorAsyncSnapshot {
    states: Option<OperatorStates>,
    factory: Arc<dyn CheckpointStreamFactory>,
    local_recovery: LocalRecoveryConfig,
    checkpoint_id: CheckpointId,
}

impl AsyncSnapshotCallable<OperatorSnapshotResult> for OperatorAsyncSnapshot {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<OperatorSnapshotResult> {
        let states = self.states.as_ref().ok_or_else(|| Error::Closed {
            what: format!("operator state copy of checkpoint {}", self.checkpoint_id),
        })?;
        if states.is_empty() {
            return Ok(SnapshotResult::empty());
        }
        let mut stream = CheckpointStreamWithResultProvider::create(
            self.checkpoint_id,
            CheckpointedStateScope::Exclusive,
            &*self.factory,
            &self.local_recovery,
        )?;
        let registration = context.register(stream.closer())?;
        let header =
            OperatorSnapshotHeader::new(states.values().map(|state| state.meta.clone()).collect());
        let header_len = header.write_to(&mut stream)?;
        let mut partitions = BTreeMap::new();
        {
            let mut writer = PartitionWriter::new(&mut stream, header_len);
            for (name, state) in states {
                context.check_cancelled()?;
                let offsets = match &state.data {
                    OperatorStateData::List(elements) => elements
                        .iter()
                        .map(|element| writer.write_list_element(element))
                        .collect::<Result<Vec<u64>>>()?,
                    OperatorStateData::Broadcast(entries) => {
                        vec![writer.write_broadcast(
                            entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                        )?]
                    }
                };
                let mode = state.meta.mode;
                partitions.insert(name.clone(), OperatorStatePartitions { offsets, mode });
            }
        }
        context.unregister(registration);
        let result = stream.close_and_finalize()?;
        Ok(result.map(|stream| OperatorStreamStateHandle::new(partitions.clone(), stream)))
    }

    fn cleanup_provided_resources(&mut self) {
        self.states = None;
    }
}

/// Creates [`OperatorSnapshotStrategy`]s; registered as operator strategy `operator`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultOperatorSnapshotStrategyFactory;

impl OperatorSnapshotStrategyFactory for DefaultOperatorSnapshotStrategyFactory {
    fn name(&self) -> &'static str {
        OPERATOR
    }

    fn description(&self) -> &'static str {
        "operator list and broadcast state: deep copy, then header and checksummed partitions"
    }

    fn backend(&self) -> &'static str {
        OPERATOR
    }

    fn create(
        &self,
        backend_state: &dyn Any,
        params: &OperatorBackendParams,
        _registry: &Registry,
    ) -> Result<Box<dyn SnapshotStrategy<OperatorStreamStateHandle>>> {
        let source = backend_state_as::<OperatorSnapshotSource>(backend_state, OPERATOR, OPERATOR)?;
        Ok(Box::new(OperatorSnapshotStrategy::new(
            source.clone(),
            params.local_recovery.clone(),
        )))
    }
}

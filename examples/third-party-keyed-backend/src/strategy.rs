//! [`OrderedFullSnapshotStrategy`]: the full snapshot of an `ordered` backend, for
//! checkpoints and savepoints alike.

use std::any::Any;
use std::sync::Arc;

use state_api::{
    AsyncSnapshotCallable, CheckpointId, CheckpointStreamFactory, Error, KeyedBackendParams,
    KeyedSnapshotResult, KeyedSnapshotStrategyFactory, KeyedStateHandle, Registry, Result,
    SnapshotContext, SnapshotRequest, SnapshotResult, SnapshotStrategy, StreamCompressionDecorator,
    backend_state_as,
};
use state_format::KeyedBackendSerializationProxy;
use state_format::key_group_prefix::write_key_group_prefix;
use state_format::keyed_format::{FullSnapshotTarget, KeyGroupEntryWriter, write_full_snapshot};

use crate::backend::{OrderedSnapshotSource, States, scan};
use crate::{ORDERED, ORDERED_FULL};

/// The `ordered` backend's full snapshot strategy; registered as keyed strategy
/// `ordered-full`, the backend's default.
///
/// The synchronous part clones the list of states: one reference count per state, no
/// entry copied. A write to a state while a snapshot holds it copies that state's map
/// once (copy on write at map granularity, the price of plain `BTreeMap`s; the `heap`
/// backend's persistent maps copy only the touched path). The asynchronous part writes
/// the canonical format with [`write_full_snapshot`].
#[derive(Debug)]
pub struct OrderedFullSnapshotStrategy {
    source: OrderedSnapshotSource,
    compression: Arc<dyn StreamCompressionDecorator>,
    params: KeyedBackendParams,
}

impl SnapshotStrategy<Arc<dyn KeyedStateHandle>> for OrderedFullSnapshotStrategy {
    fn description(&self) -> &str {
        "ordered full snapshot"
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<Box<dyn AsyncSnapshotCallable<KeyedSnapshotResult>>> {
        // Checkpoints and savepoints are the same full, self-contained snapshot here.
        Ok(Box::new(OrderedAsyncSnapshot {
            states: Some(self.source.lock().clone()),
            factory,
            compression: self.compression.clone(),
            params: self.params.clone(),
            checkpoint_id: request.id,
        }))
    }
}

/// The asynchronous part: owns its view of the maps until cleanup releases it.
struct OrderedAsyncSnapshot {
    states: Option<States>,
    factory: Arc<dyn CheckpointStreamFactory>,
    compression: Arc<dyn StreamCompressionDecorator>,
    params: KeyedBackendParams,
    checkpoint_id: CheckpointId,
}

impl AsyncSnapshotCallable<KeyedSnapshotResult> for OrderedAsyncSnapshot {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<KeyedSnapshotResult> {
        let states = self.states.as_ref().ok_or_else(|| Error::Closed {
            what: format!("state view of checkpoint {}", self.checkpoint_id),
        })?;
        // No states, no snapshot; registered states without entries still write one.
        if states.is_empty() {
            return Ok(SnapshotResult::empty());
        }
        let params = &self.params;
        let header = KeyedBackendSerializationProxy::new(
            params.key_serializer.as_str(),
            states.iter().map(|s| s.meta.clone()).collect(),
            self.compression.name(),
            params.max_parallelism,
        );
        let target = FullSnapshotTarget::new(
            self.checkpoint_id,
            &*self.factory,
            params,
            &*self.compression,
        );
        let prefix_bytes = params.max_parallelism.prefix_bytes();
        let mut prefix = Vec::with_capacity(prefix_bytes);
        write_full_snapshot(
            context,
            target,
            &header,
            |group: &mut KeyGroupEntryWriter<'_>| {
                prefix.clear();
                write_key_group_prefix(group.key_group(), prefix_bytes, &mut prefix);
                // A state's id is its position; the key group's entries are one range per map.
                for (id, state) in (0u16..).zip(states) {
                    for (key, value) in scan(&state.entries, &prefix) {
                        group.write_entry(id, key, value)?;
                    }
                }
                Ok(())
            },
        )
    }

    fn cleanup_provided_resources(&mut self) {
        // Releases the view: later writes no longer copy the maps.
        self.states = None;
    }
}

/// Creates [`OrderedFullSnapshotStrategy`]s; registered as keyed strategy `ordered-full`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderedFullSnapshotStrategyFactory;

impl KeyedSnapshotStrategyFactory for OrderedFullSnapshotStrategyFactory {
    fn name(&self) -> &'static str {
        ORDERED_FULL
    }

    fn description(&self) -> &'static str {
        "full snapshot of ordered state in the canonical key-group format (checkpoints and savepoints)"
    }

    fn backend(&self) -> &'static str {
        ORDERED
    }

    fn create(
        &self,
        backend_state: &dyn Any,
        params: &KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn SnapshotStrategy<Arc<dyn KeyedStateHandle>>>> {
        let source =
            backend_state_as::<OrderedSnapshotSource>(backend_state, ORDERED_FULL, ORDERED)?;
        Ok(Box::new(OrderedFullSnapshotStrategy {
            source: source.clone(),
            compression: registry.compression(&params.compression)?,
            params: params.clone(),
        }))
    }
}

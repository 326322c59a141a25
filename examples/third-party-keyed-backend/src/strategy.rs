//! [`OrderedFullSnapshotStrategy`]: the full snapshot of an `ordered` backend, for
//! checkpoints and savepoints alike.

use std::any::Any;
use std::sync::Arc;

use state_api::{
    AsyncSnapshotCallable, CheckpointStreamFactory, KeyedBackendParams, KeyedSnapshotResult,
    KeyedSnapshotStrategyFactory, KeyedStateHandle, Registry, Result, SnapshotRequest,
    SnapshotStrategy, StateMetaInfo, StreamCompressionDecorator, backend_state_as,
};
use state_format::keyed_format::KeyGroupEntryWriter;
use state_format::{FullSnapshotCallable, KeyGroupSource};

use crate::store::{OrderedStore, States, scan};
use crate::{ORDERED, ORDERED_FULL};

/// The `ordered` backend's full snapshot strategy; registered as keyed strategy
/// `ordered-full`, the backend's default.
///
/// The synchronous part clones the list of states: one reference count per state, no
/// entry copied. A write to a state while a snapshot holds it copies that state's map
/// once (copy on write at map granularity, the price of plain `BTreeMap`s; the `heap`
/// backend's persistent maps copy only the touched path). The asynchronous part is a
/// [`FullSnapshotCallable`], which writes the canonical format.
#[derive(Debug)]
pub struct OrderedFullSnapshotStrategy {
    source: OrderedStore,
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
        let view = OrderedView(self.source.lock().clone());
        let (compression, params) = (self.compression.clone(), self.params.clone());
        Ok(Box::new(FullSnapshotCallable::new(
            view,
            request,
            factory,
            compression,
            params,
        )))
    }
}

/// The maps as the synchronous part saw them; dropping it lets later writes stop copying.
struct OrderedView(States);

impl KeyGroupSource for OrderedView {
    fn states(&self) -> Vec<StateMetaInfo> {
        self.0.iter().map(|s| s.meta.clone()).collect()
    }

    fn write_key_group(&self, group: &mut KeyGroupEntryWriter<'_>) -> Result<()> {
        let prefix = group.key_group_prefix();
        // A state's id is its position; the key group's entries are one range per map.
        for (id, state) in (0u16..).zip(&self.0) {
            for (key, value) in scan(&state.entries, &prefix) {
                group.write_entry(id, key, value)?;
            }
        }
        Ok(())
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
        let source = backend_state_as::<OrderedStore>(backend_state, ORDERED_FULL, ORDERED)?;
        Ok(Box::new(OrderedFullSnapshotStrategy {
            source: source.clone(),
            compression: registry.compression(&params.compression)?,
            params: params.clone(),
        }))
    }
}

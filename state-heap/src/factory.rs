//! [`HeapKeyedStateBackendFactory`]: how the registry creates and restores heap backends.

use std::sync::Arc;

use state_api::{
    KeyedBackendParams, KeyedStateBackend, KeyedStateBackendFactory, KeyedStateHandle, Registry,
    Result,
};

use crate::HEAP;
use crate::backend::HeapKeyedStateBackend;

/// Creates and restores [`HeapKeyedStateBackend`]s; registered as keyed backend `heap`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapKeyedStateBackendFactory;

impl KeyedStateBackendFactory for HeapKeyedStateBackendFactory {
    fn name(&self) -> &'static str {
        HEAP
    }

    fn description(&self) -> &'static str {
        "keyed state in copy-on-write heap maps sharded by key group; snapshots take O(states x key groups)"
    }

    fn create(
        &self,
        params: KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(HeapKeyedStateBackend::new(params, registry)?))
    }

    fn restore(
        &self,
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(HeapKeyedStateBackend::restore(
            params, registry, handles,
        )?))
    }
}

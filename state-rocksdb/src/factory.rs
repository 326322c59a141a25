//! [`RocksDBKeyedStateBackendFactory`]: how the registry creates and restores RocksDB
//! backends.

use std::sync::Arc;

use state_api::{
    KeyedBackendParams, KeyedStateBackend, KeyedStateBackendFactory, KeyedStateHandle, Registry,
    Result,
};

use crate::ROCKSDB;
use crate::backend::RocksDBKeyedStateBackend;

/// Creates and restores [`RocksDBKeyedStateBackend`]s; registered as keyed backend
/// `rocksdb`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RocksDBKeyedStateBackendFactory;

impl KeyedStateBackendFactory for RocksDBKeyedStateBackendFactory {
    fn name(&self) -> &'static str {
        ROCKSDB
    }

    fn description(&self) -> &'static str {
        "keyed state in embedded RocksDB, one column family per state, key groups as key ranges"
    }

    fn create(
        &self,
        params: KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(RocksDBKeyedStateBackend::new(params, registry)?))
    }

    fn restore(
        &self,
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(RocksDBKeyedStateBackend::restore(
            params, registry, handles,
        )?))
    }
}

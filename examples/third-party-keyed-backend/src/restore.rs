//! Restoring an `ordered` backend, with rescaling, from full keyed snapshots of any keyed
//! backend: only the key groups of the new range are read.

use std::sync::Arc;

use state_api::{KeyedBackendParams, KeyedStateHandle, Registry, Result, StateMetaInfo};
use state_format::{RestoreTarget, restore_full_snapshots};

use crate::ORDERED;
use crate::backend::{OrderedKeyedStateBackend, OrderedSnapshotSource, register};

impl OrderedKeyedStateBackend {
    /// A backend holding the state of `handles` (from one or many old instances of any
    /// keyed backend) restricted to `params.key_group_range`.
    ///
    /// # Errors
    ///
    /// Those of [`new`](Self::new) and of
    /// [`restore_full_snapshots`](state_format::restore_full_snapshots) (other handle
    /// kinds, other key serializers or max parallelism, damaged snapshots), and other state
    /// meta info under a registered name ([`Error::Incompatible`](state_api::Error)).
    pub fn restore(
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Self> {
        let backend = Self::new(params.clone(), registry)?;
        let mut source = backend.snapshot_source().clone();
        restore_full_snapshots(&params, registry, handles, ORDERED, &mut source)?;
        Ok(backend)
    }
}

/// Entries are stored as the canonical format writes them: no conversion.
impl RestoreTarget for OrderedSnapshotSource {
    fn register_states(&mut self, states: &[StateMetaInfo]) -> Result<Vec<usize>> {
        let mut registered = self.lock();
        states
            .iter()
            .map(|meta| register(&mut registered, meta))
            .collect()
    }

    fn put(&mut self, slot: usize, key: &[u8], value: &[u8]) -> Result<()> {
        let entries = &mut self.lock()[slot].entries;
        Arc::make_mut(entries).insert(key.to_vec(), value.to_vec());
        Ok(())
    }
}

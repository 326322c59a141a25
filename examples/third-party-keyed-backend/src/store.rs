//! [`OrderedStore`]: one ordered map of canonical entries per state, shared copy-on-write
//! with the snapshots taken since its last write.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use state_api::{Result, StateMetaInfo};
use state_format::CanonicalStore;

/// Canonical composite key -> canonical value, in key order (so by key group first).
pub(crate) type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// One registered state. The map is shared with the snapshots taken since its last write:
/// a write copies it first if a snapshot still holds it ([`Arc::make_mut`]).
#[derive(Debug, Clone)]
pub(crate) struct OrderedState {
    pub(crate) meta: StateMetaInfo,
    pub(crate) entries: Arc<Entries>,
}

/// The states of a backend in registration order: a state's position is its id in a
/// snapshot header.
pub(crate) type States = Vec<OrderedState>;

/// The `ordered` backend's store, which its snapshot strategies also receive (as
/// [`KeyedSnapshotStrategyFactory::create`](state_api::KeyedSnapshotStrategyFactory::create)'s
/// `backend_state`): clones share the states.
#[derive(Debug, Clone, Default)]
pub struct OrderedStore {
    states: Arc<Mutex<States>>,
}

impl OrderedStore {
    pub(crate) fn lock(&self) -> MutexGuard<'_, States> {
        // Every change is one map call: the maps stay consistent when a holder panics.
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entries_mut(&mut self, state: usize, change: impl FnOnce(&mut Entries)) {
        change(Arc::make_mut(&mut self.lock()[state].entries));
    }
}

/// The entries whose keys start with `prefix`: one contiguous range of the map.
pub(crate) fn scan<'a>(
    entries: &'a Entries,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> {
    let from: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Included(prefix), Bound::Unbounded);
    entries
        .range::<[u8], _>(from)
        .take_while(move |(key, _)| key.starts_with(prefix))
}

impl CanonicalStore for OrderedStore {
    fn states(&self) -> Vec<StateMetaInfo> {
        self.lock().iter().map(|s| s.meta.clone()).collect()
    }

    fn register(&mut self, meta: &StateMetaInfo) -> Result<usize> {
        let mut states = self.lock();
        if let Some(index) = states.iter().position(|s| s.meta.name == meta.name) {
            let held = &mut states[index].meta;
            held.check_compatible(meta)?;
            // A compatible registration may change the time to live.
            held.ttl = meta.ttl;
            return Ok(index);
        }
        let entries = Arc::default();
        states.push(OrderedState {
            meta: meta.clone(),
            entries,
        });
        Ok(states.len() - 1)
    }

    fn get(&self, state: usize, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock()[state].entries.get(key).cloned())
    }

    fn put(&mut self, state: usize, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.entries_mut(state, |entries| drop(entries.insert(key.to_vec(), value)));
        Ok(())
    }

    fn delete(&mut self, state: usize, key: &[u8]) -> Result<()> {
        self.entries_mut(state, |entries| drop(entries.remove(key)));
        Ok(())
    }

    fn scan(&self, state: usize, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let states = self.lock();
        let found = scan(&states[state].entries, prefix);
        Ok(found.map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn first(&self, state: usize, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        let states = self.lock();
        Ok(scan(&states[state].entries, prefix)
            .next()
            .map(|(k, _)| k.clone()))
    }

    fn clear(&mut self) {
        self.lock().clear();
    }
}

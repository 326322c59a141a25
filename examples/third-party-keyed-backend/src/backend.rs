//! [`OrderedKeyedStateBackend`]: one ordered map of canonical entries per state.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use state_api::{
    AsyncSnapshotTask, CheckpointListener, CheckpointStreamFactory, Error, KeyGroupRange,
    KeyedBackendParams, KeyedSnapshotResult, KeyedSnapshots, KeyedStateBackend, MaxParallelism,
    Registry, Result, SnapshotRequest, StateKind, StateMetaInfo,
};
use state_format::keyed_format::{CompositeKey, decode_list, encode_list};

use crate::{ORDERED, ORDERED_FULL};

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

/// The state an `ordered` backend shares with its snapshot strategies: what
/// [`KeyedSnapshotStrategyFactory::create`](state_api::KeyedSnapshotStrategyFactory::create)
/// receives as `backend_state` for backend `ordered`.
#[derive(Debug, Clone, Default)]
pub struct OrderedSnapshotSource {
    states: Arc<Mutex<States>>,
}

impl OrderedSnapshotSource {
    pub(crate) fn lock(&self) -> MutexGuard<'_, States> {
        // Every change is one map call: the maps stay consistent when a holder panics.
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Registers `meta` in `states`, or checks it against the state of that name; returns the
/// state's position.
pub(crate) fn register(states: &mut States, meta: &StateMetaInfo) -> Result<usize> {
    if let Some(index) = states.iter().position(|s| s.meta.name == meta.name) {
        states[index].meta.check_compatible(meta)?;
        return Ok(index);
    }
    if states.len() >= state_format::proxy::MAX_STATES {
        return Err(Error::InvalidArgument(format!(
            "cannot register state `{}`: a keyed backend holds at most {} states",
            meta.name,
            state_format::proxy::MAX_STATES
        )));
    }
    states.push(OrderedState {
        meta: meta.clone(),
        entries: Arc::default(),
    });
    Ok(states.len() - 1)
}

/// The position of state `name`, which must be of `kind` (when given).
fn find(states: &States, name: &str, kind: Option<StateKind>) -> Result<usize> {
    state_api::find_state(states.iter().map(|s| &s.meta), name, kind)
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

/// The `ordered` keyed state backend: each state in one `BTreeMap` keyed by the canonical
/// composite key and holding the canonical value, so snapshots and restores copy entries
/// as they are (see the crate docs).
#[derive(Debug)]
pub struct OrderedKeyedStateBackend {
    source: OrderedSnapshotSource,
    params: KeyedBackendParams,
    composite: CompositeKey,
    /// The current key's key group and bytes.
    current: Option<(u32, Vec<u8>)>,
    /// Its strategies (checkpoints with `params.strategy`, savepoints with `ordered-full`),
    /// running snapshots and closed flag.
    snapshots: KeyedSnapshots,
}

impl OrderedKeyedStateBackend {
    /// An empty backend for `params`, checkpointing with strategy `params.strategy`
    /// (default `ordered-full`) looked up in `registry`.
    ///
    /// # Errors
    ///
    /// A range outside the max parallelism or a strategy of another backend
    /// ([`Error::InvalidArgument`]); an unknown strategy or decorator
    /// ([`Error::UnknownPlugin`]).
    pub fn new(params: KeyedBackendParams, registry: &Registry) -> Result<Self> {
        params.check_range()?;
        let source = OrderedSnapshotSource::default();
        let snapshots = KeyedSnapshots::new(ORDERED, ORDERED_FULL, &source, &params, registry)?;
        Ok(OrderedKeyedStateBackend {
            composite: CompositeKey::new(params.max_parallelism),
            source,
            params,
            current: None,
            snapshots,
        })
    }

    /// The state this backend's snapshot strategies work from.
    pub fn snapshot_source(&self) -> &OrderedSnapshotSource {
        &self.source
    }

    /// The composite key of the current key in `namespace`, followed by `user_key`.
    fn key(&self, namespace: &[u8], user_key: &[u8]) -> Result<Vec<u8>> {
        self.snapshots.check_open()?;
        let (key_group, key) = self.current.as_ref().ok_or_else(Error::no_current_key)?;
        let mut out = Vec::new();
        self.composite
            .build_into(*key_group, key, namespace, user_key, &mut out)?;
        Ok(out)
    }

    /// Runs `read` on the entries of state `name` of `kind` with the current key's
    /// composite key in `namespace` (followed by `user_key`).
    fn read<T>(
        &self,
        name: &str,
        kind: StateKind,
        namespace: &[u8],
        user_key: &[u8],
        read: impl FnOnce(&Entries, &[u8]) -> T,
    ) -> Result<T> {
        let key = self.key(namespace, user_key)?;
        let states = self.source.lock();
        Ok(read(
            &states[find(&states, name, Some(kind))?].entries,
            &key,
        ))
    }

    /// As [`read`](Self::read), for a write (any kind when `kind` is `None`).
    fn write<T>(
        &mut self,
        name: &str,
        kind: Option<StateKind>,
        namespace: &[u8],
        user_key: &[u8],
        write: impl FnOnce(&mut Entries, Vec<u8>) -> T,
    ) -> Result<T> {
        let key = self.key(namespace, user_key)?;
        let mut states = self.source.lock();
        let index = find(&states, name, kind)?;
        Ok(write(Arc::make_mut(&mut states[index].entries), key))
    }
}

/// Full snapshots keep no history: the default notifications do nothing.
impl CheckpointListener for OrderedKeyedStateBackend {}

impl KeyedStateBackend for OrderedKeyedStateBackend {
    fn backend_name(&self) -> &str {
        ORDERED
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.params.key_group_range
    }

    fn max_parallelism(&self) -> MaxParallelism {
        self.params.max_parallelism
    }

    fn register_state(&mut self, meta: &StateMetaInfo) -> Result<()> {
        self.snapshots.check_open()?;
        register(&mut self.source.lock(), meta).map(drop)
    }

    fn states(&self) -> Vec<StateMetaInfo> {
        self.source.lock().iter().map(|s| s.meta.clone()).collect()
    }

    fn set_current_key(&mut self, key: &[u8]) -> Result<()> {
        self.snapshots.check_open()?;
        let key_group = self.params.key_group_of(key)?;
        self.current = Some((key_group, key.to_vec()));
        Ok(())
    }

    fn value(&self, state: &str, namespace: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(state, StateKind::Value, namespace, &[], |m, k| {
            m.get(k).cloned()
        })
    }

    fn put_value(&mut self, state: &str, namespace: &[u8], value: &[u8]) -> Result<()> {
        self.write(state, Some(StateKind::Value), namespace, &[], |m, k| {
            m.insert(k, value.to_vec());
        })
    }

    fn list(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.read(state, StateKind::List, namespace, &[], |m, k| {
            match m.get(k) {
                Some(bytes) => Ok(decode_list(bytes)?
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect()),
                None => Ok(Vec::new()),
            }
        })?
    }

    fn append_to_list(&mut self, state: &str, namespace: &[u8], element: &[u8]) -> Result<()> {
        // A list's bytes are its elements' encodings one after the other: append one.
        let mut encoded = Vec::new();
        encode_list([element], &mut encoded)?;
        self.write(state, Some(StateKind::List), namespace, &[], |m, k| {
            m.entry(k).or_default().extend_from_slice(&encoded);
        })
    }

    fn update_list(&mut self, state: &str, namespace: &[u8], elements: &[Vec<u8>]) -> Result<()> {
        self.write(state, Some(StateKind::List), namespace, &[], |m, k| {
            if elements.is_empty() {
                m.remove(&k);
                return Ok(());
            }
            let mut value = Vec::new();
            encode_list(elements.iter().map(Vec::as_slice), &mut value)?;
            m.insert(k, value);
            Ok(())
        })?
    }

    fn map_value(&self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(state, StateKind::Map, namespace, user_key, |m, k| {
            m.get(k).cloned()
        })
    }

    fn put_map_value(
        &mut self,
        state: &str,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.write(state, Some(StateKind::Map), namespace, user_key, |m, k| {
            m.insert(k, value.to_vec());
        })
    }

    fn remove_map_value(&mut self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<()> {
        self.write(state, Some(StateKind::Map), namespace, user_key, |m, k| {
            m.remove(&k);
        })
    }

    fn map_entries(&self, state: &str, namespace: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        // The user keys of one key and namespace share its composite key as their prefix,
        // so key order is user-key order.
        self.read(state, StateKind::Map, namespace, &[], |m, prefix| {
            let entry = |(k, v): (&Vec<u8>, &Vec<u8>)| (k[prefix.len()..].to_vec(), v.clone());
            scan(m, prefix).map(entry).collect()
        })
    }

    fn clear(&mut self, state: &str, namespace: &[u8]) -> Result<()> {
        // A value or list is the one entry under the prefix, a map every user key's.
        self.write(state, None, namespace, &[], |m, prefix| {
            let doomed: Vec<Vec<u8>> = scan(m, &prefix).map(|(k, _)| k.clone()).collect();
            for key in doomed {
                m.remove(&key);
            }
        })
    }

    fn keys(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.snapshots.check_open()?;
        let states = self.source.lock();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for composite in states[find(&states, state, None)?].entries.keys() {
            let parts = self.composite.split(composite)?;
            // A map's user keys of one key and namespace are adjacent: list the key once.
            if parts.namespace == namespace && keys.last().map(Vec::as_slice) != Some(parts.key) {
                keys.push(parts.key.to_vec());
            }
        }
        Ok(keys)
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<AsyncSnapshotTask<KeyedSnapshotResult>> {
        self.snapshots.snapshot(request, factory)
    }

    fn pending_snapshots(&self) -> usize {
        self.snapshots.pending()
    }

    fn close(&mut self) -> Result<()> {
        // Cancels running snapshots; each holds its own view of the maps.
        let closed = self.snapshots.close();
        self.source.lock().clear();
        closed
    }
}

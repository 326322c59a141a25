//! [`CanonicalKeyedBackend`]: a whole keyed state backend over any [`CanonicalStore`], a
//! store that keeps each state's entries exactly as the canonical format writes them.
//!
//! A store keeps, per registered state, an ordered map from the composite key
//! ([`CompositeKey`]: key-group prefix, key, namespace, and for map states the user key) to
//! the canonical value (the value, the map value, or the whole list as [`encode_list`]
//! lays it out). Because the key-group prefix comes first, one key group's entries are one
//! contiguous range of each map, so a full snapshot writes them without conversion and a
//! restore puts them back as it reads them ([`RestoreTarget`]). The backend adds the rest
//! of [`KeyedStateBackend`]: the current key and its key-group check, the state kinds, and
//! the snapshot side ([`KeyedSnapshots`]). A third-party backend then writes only its
//! store and its full strategy.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use state_api::{
    AsyncSnapshotTask, CheckpointListener, CheckpointStreamFactory, Error, KeyGroup, KeyGroupRange,
    KeyedBackendParams, KeyedSnapshotResult, KeyedStateBackend, KeyedStateHandle, MaxParallelism,
    Registry, Result, SnapshotRequest, StateKind, StateMetaInfo, Timer,
};

use crate::KeyedSnapshots;
use crate::key_group_prefix::write_key_group_prefix;
use crate::keyed_format::{CompositeKey, decode_list, encode_list};
use crate::restore::{RestoreTarget, restore_full_snapshots};
use crate::timer::{TimerHeads, TimerKey};

/// A store of canonical entries, one ordered map per registered state (by position).
pub trait CanonicalStore: fmt::Debug + Send + 'static {
    /// The registered states, by position.
    fn states(&self) -> Vec<StateMetaInfo>;

    /// Registers `meta` at the next position, or, when a state of that name exists, checks
    /// `meta` against it ([`StateMetaInfo::check_compatible`]) and takes its time to live;
    /// returns its position.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for other meta info under a registered name.
    fn register(&mut self, meta: &StateMetaInfo) -> Result<usize>;

    /// The value stored under `key` in state `state`.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn get(&self, state: usize, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key` in state `state`.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn put(&mut self, state: usize, key: &[u8], value: Vec<u8>) -> Result<()>;

    /// Removes `key` from state `state`, if present.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn delete(&mut self, state: usize, key: &[u8]) -> Result<()>;

    /// The entries of state `state` whose keys start with `prefix`, in key order.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn scan(&self, state: usize, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// The first key of state `state` that starts with `prefix`: a priority queue's
    /// earliest timer of a key group. The default scans; an ordered store seeks.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn first(&self, state: usize, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .scan(state, prefix)?
            .into_iter()
            .next()
            .map(|(key, _)| key))
    }

    /// Drops every entry and state: the backend was closed.
    fn clear(&mut self);
}

/// The keyed backend registered as `name` over store `S` (see the [module](self)).
#[derive(Debug)]
pub struct CanonicalKeyedBackend<S> {
    name: &'static str,
    store: S,
    params: KeyedBackendParams,
    composite: CompositeKey,
    timers: TimerKey,
    /// The current key's key group and bytes.
    current: Option<(KeyGroup, Vec<u8>)>,
    /// The store's states as of its last registration: looked up on every access.
    states: Vec<StateMetaInfo>,
    /// Per priority-queue state (by position), its key groups' earliest timers, built on
    /// first use.
    timer_heads: BTreeMap<usize, TimerHeads>,
    snapshots: KeyedSnapshots,
}

impl<S: CanonicalStore> CanonicalKeyedBackend<S> {
    /// An empty backend `name` for `params` over `store`, checkpointing with strategy
    /// `params.strategy` (default `full`) and taking savepoints with `full`; its strategies
    /// receive `store` as the backend's state.
    ///
    /// # Errors
    ///
    /// A range outside the max parallelism ([`Error::InvalidArgument`]), and those of
    /// [`KeyedSnapshots::new`].
    pub fn new(
        name: &'static str,
        full: &str,
        store: S,
        params: KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Self> {
        params.check_range()?;
        let snapshots = KeyedSnapshots::new(name, full, &store, &params, registry)?;
        Ok(CanonicalKeyedBackend {
            name,
            composite: CompositeKey::new(params.max_parallelism),
            timers: TimerKey::new(params.max_parallelism),
            store,
            params,
            current: None,
            states: Vec::new(),
            timer_heads: BTreeMap::new(),
            snapshots,
        })
    }

    /// [`new`](Self::new), holding the state of `handles` (full snapshots of any keyed
    /// backend) restricted to `params.key_group_range`.
    ///
    /// # Errors
    ///
    /// Those of [`new`](Self::new) and of [`restore_full_snapshots`].
    pub fn restore(
        name: &'static str,
        full: &str,
        store: S,
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Self> {
        let mut backend = Self::new(name, full, store, params.clone(), registry)?;
        let mut target = StoreTarget(&mut backend.store);
        restore_full_snapshots(&params, registry, handles, name, &mut target)?;
        backend.states = backend.store.states();
        Ok(backend)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The position of state `name`, which must be of `kind` when given, and the composite
    /// key of the current key in `namespace` followed by `user_key`.
    fn locate(
        &self,
        name: &str,
        kind: Option<StateKind>,
        namespace: &[u8],
        user_key: &[u8],
    ) -> Result<(usize, Vec<u8>)> {
        self.snapshots.check_open()?;
        let (key_group, key) = self.current.as_ref().ok_or_else(Error::no_current_key)?;
        let state = self.keyed_state(name, kind)?;
        let mut composite = Vec::new();
        (self.composite).build_into(*key_group, key, namespace, user_key, &mut composite)?;
        Ok((state, composite))
    }

    /// The position of state `name`, of `kind` when given, else of any kind but a queue.
    fn keyed_state(&self, name: &str, kind: Option<StateKind>) -> Result<usize> {
        let state = crate::find_state(&self.states, name, kind)?;
        match self.states[state].kind {
            StateKind::PriorityQueue if kind.is_none() => Err(crate::timer::not_keyed_state(name)),
            _ => Ok(state),
        }
    }

    /// The position of priority-queue state `name`, with its heads built.
    fn timer_state(&mut self, name: &str) -> Result<usize> {
        self.snapshots.check_open()?;
        let state = crate::find_state(&self.states, name, Some(StateKind::PriorityQueue))?;
        if !self.timer_heads.contains_key(&state) {
            let range = self.params.key_group_range;
            let mut heads = TimerHeads::new(range.len() as usize);
            for (shard, key_group) in range.iter().enumerate() {
                heads.set(shard, self.first_timer(state, key_group)?);
            }
            self.timer_heads.insert(state, heads);
        }
        Ok(state)
    }

    fn key_group_prefix(&self, key_group: KeyGroup) -> Vec<u8> {
        let mut prefix = Vec::with_capacity(2);
        write_key_group_prefix(key_group.get(), self.composite.prefix_bytes(), &mut prefix);
        prefix
    }

    /// The earliest timer of `state` in `key_group`.
    fn first_timer(&self, state: usize, key_group: KeyGroup) -> Result<Option<Timer>> {
        let first = self.store.first(state, &self.key_group_prefix(key_group))?;
        first.map(|key| Ok(self.timers.split(&key)?.1)).transpose()
    }

    /// Adds or removes `timer`; whether that changed the queue.
    fn change_timer(&mut self, name: &str, timer: &Timer, add: bool) -> Result<bool> {
        let state = self.timer_state(name)?;
        let key_group = self.params.key_group_of(&timer.key)?;
        let key = self.timers.build(key_group, timer)?;
        if self.store.get(state, &key)?.is_some() == add {
            return Ok(false);
        }
        match add {
            true => self.store.put(state, &key, Vec::new())?,
            false => self.store.delete(state, &key)?,
        }
        let head = self.first_timer(state, key_group)?;
        let shard = self.params.key_group_range.position(key_group);
        if let (Some(shard), Some(heads)) = (shard, self.timer_heads.get_mut(&state)) {
            heads.set(shard, head);
        }
        Ok(true)
    }

    fn get(
        &self,
        name: &str,
        kind: StateKind,
        namespace: &[u8],
        user: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let (state, key) = self.locate(name, Some(kind), namespace, user)?;
        self.store.get(state, &key)
    }

    fn put(
        &mut self,
        name: &str,
        kind: StateKind,
        namespace: &[u8],
        user: &[u8],
        value: Vec<u8>,
    ) -> Result<()> {
        let (state, key) = self.locate(name, Some(kind), namespace, user)?;
        self.store.put(state, &key, value)
    }
}

/// A store as a restore's target: entries go in as they are read.
struct StoreTarget<'s, S>(&'s mut S);

impl<S: CanonicalStore> RestoreTarget for StoreTarget<'_, S> {
    fn register_states(&mut self, states: &[StateMetaInfo]) -> Result<Vec<usize>> {
        states.iter().map(|meta| self.0.register(meta)).collect()
    }

    fn put(&mut self, slot: usize, key: &[u8], value: &[u8]) -> Result<()> {
        self.0.put(slot, key, value.to_vec())
    }
}

/// Full snapshots keep no history: the default notifications do nothing.
impl<S> CheckpointListener for CanonicalKeyedBackend<S> {}

impl<S: CanonicalStore> KeyedStateBackend for CanonicalKeyedBackend<S> {
    fn backend_name(&self) -> &str {
        self.name
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.params.key_group_range
    }

    fn max_parallelism(&self) -> MaxParallelism {
        self.params.max_parallelism
    }

    fn register_state(&mut self, meta: &StateMetaInfo) -> Result<()> {
        self.snapshots.check_open()?;
        let known = self.states.iter().any(|state| state.name == meta.name);
        if !known && self.states.len() >= crate::proxy::MAX_STATES {
            return Err(Error::InvalidArgument(format!(
                "cannot register state `{}`: a keyed backend holds at most {} states",
                meta.name,
                crate::proxy::MAX_STATES
            )));
        }
        self.store.register(meta)?;
        self.states = self.store.states();
        Ok(())
    }

    fn states(&self) -> Vec<StateMetaInfo> {
        self.states.clone()
    }

    fn set_current_key(&mut self, key: &[u8]) -> Result<()> {
        self.snapshots.check_open()?;
        let key_group = self.params.key_group_of(key)?;
        self.current = Some((key_group, key.to_vec()));
        Ok(())
    }

    fn value(&self, state: &str, namespace: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(state, StateKind::Value, namespace, &[])
    }

    fn put_value(&mut self, state: &str, namespace: &[u8], value: &[u8]) -> Result<()> {
        self.put(state, StateKind::Value, namespace, &[], value.to_vec())
    }

    fn list(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        match self.get(state, StateKind::List, namespace, &[])? {
            Some(bytes) => Ok(decode_list(&bytes)?
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    fn append_to_list(&mut self, state: &str, namespace: &[u8], element: &[u8]) -> Result<()> {
        // A list's bytes are its elements' encodings one after the other: append one.
        let mut value = self
            .get(state, StateKind::List, namespace, &[])?
            .unwrap_or_default();
        encode_list([element], &mut value)?;
        self.put(state, StateKind::List, namespace, &[], value)
    }

    fn update_list(&mut self, state: &str, namespace: &[u8], elements: &[Vec<u8>]) -> Result<()> {
        if elements.is_empty() {
            return self.clear(state, namespace);
        }
        let mut value = Vec::new();
        encode_list(elements.iter().map(Vec::as_slice), &mut value)?;
        self.put(state, StateKind::List, namespace, &[], value)
    }

    fn map_value(&self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(state, StateKind::Map, namespace, user_key)
    }

    fn put_map_value(
        &mut self,
        state: &str,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.put(state, StateKind::Map, namespace, user_key, value.to_vec())
    }

    fn remove_map_value(&mut self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<()> {
        let (state, key) = self.locate(state, Some(StateKind::Map), namespace, user_key)?;
        self.store.delete(state, &key)
    }

    fn map_entries(&self, state: &str, namespace: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        // The user keys of one key and namespace share its composite key as their prefix,
        // so key order is user-key order.
        let (state, prefix) = self.locate(state, Some(StateKind::Map), namespace, &[])?;
        let entries = self.store.scan(state, &prefix)?;
        Ok(entries
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_vec(), v))
            .collect())
    }

    fn clear(&mut self, state: &str, namespace: &[u8]) -> Result<()> {
        // A value or list is the one entry under the prefix, a map every user key's.
        let (state, prefix) = self.locate(state, None, namespace, &[])?;
        for (key, _) in self.store.scan(state, &prefix)? {
            self.store.delete(state, &key)?;
        }
        Ok(())
    }

    fn keys(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.snapshots.check_open()?;
        let state = self.keyed_state(state, None)?;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (composite, _) in self.store.scan(state, &[])? {
            let parts = self.composite.split(&composite)?;
            // A map's user keys of one key and namespace are adjacent: list the key once.
            if parts.namespace == namespace && keys.last().map(Vec::as_slice) != Some(parts.key) {
                keys.push(parts.key.to_vec());
            }
        }
        Ok(keys)
    }

    fn add_timer(&mut self, state: &str, timer: &Timer) -> Result<bool> {
        self.change_timer(state, timer, true)
    }

    fn remove_timer(&mut self, state: &str, timer: &Timer) -> Result<bool> {
        self.change_timer(state, timer, false)
    }

    fn peek_timer(&self, state: &str) -> Result<Option<Timer>> {
        self.snapshots.check_open()?;
        let state = crate::find_state(&self.states, state, Some(StateKind::PriorityQueue))?;
        match self.timer_heads.get(&state) {
            Some(heads) => Ok(heads.first().map(|(_, timer)| timer.clone())),
            None => {
                let range = self.params.key_group_range.iter();
                let heads: Result<Vec<Option<Timer>>> =
                    range.map(|group| self.first_timer(state, group)).collect();
                Ok(heads?.into_iter().flatten().min())
            }
        }
    }

    fn poll_timers(&mut self, state: &str, until: i64, limit: usize) -> Result<Vec<Timer>> {
        let state = self.timer_state(state)?;
        let mut heads = self.timer_heads.remove(&state).unwrap_or_default();
        let range = self.params.key_group_range;
        let due = heads.poll(until, limit, |shard, head| {
            let key_group = KeyGroup::new(range.start().get() + shard as u32)?;
            self.store
                .delete(state, &self.timers.build(key_group, head)?)?;
            self.first_timer(state, key_group)
        });
        self.timer_heads.insert(state, heads);
        due
    }

    fn timer_count(&self, state: &str) -> Result<usize> {
        self.snapshots.check_open()?;
        let state = crate::find_state(&self.states, state, Some(StateKind::PriorityQueue))?;
        Ok(self.store.scan(state, &[])?.len())
    }

    fn timers_of(&self, state: &str, key_group: KeyGroup) -> Result<Vec<Timer>> {
        self.snapshots.check_open()?;
        let state = crate::find_state(&self.states, state, Some(StateKind::PriorityQueue))?;
        let range = self.params.key_group_range;
        if !range.contains(key_group) {
            return Err(Error::KeyGroupOutOfRange { key_group, range });
        }
        let entries = self.store.scan(state, &self.key_group_prefix(key_group))?;
        entries
            .into_iter()
            .map(|(key, _)| Ok(self.timers.split(&key)?.1))
            .collect()
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
        // Cancels running snapshots; each holds its own view of the store.
        let closed = self.snapshots.close();
        self.store.clear();
        self.states.clear();
        self.timer_heads.clear();
        closed
    }
}

//! [`HeapKeyedStateBackend`]: keyed value, list and map state in copy-on-write maps.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    AsyncSnapshotTask, CheckpointListener, CheckpointStreamFactory, Error, KeyGroup, KeyGroupRange,
    KeyedBackendParams, KeyedSnapshotResult, KeyedStateBackend, MaxParallelism, Registry, Result,
    StateKind, StateMetaInfo, Timer,
};
use state_format::KeyedSnapshots;
use state_format::timer::{TIMESTAMP_BYTES, TimerHeads, not_keyed_state, timestamp_bytes};

use crate::HEAP;
use crate::chain::ChainHistory;
use crate::changes::ChangeLog;
use crate::format::{key_part_into, namespace_part_into, split_state_key};
use crate::table::{Bytes, CowMap, HeapTables, Shards, TimerEntry, TimerSet};
use crate::ttl_cleanup::{Cursors, clean_incrementally};

/// What the backend's lock guards: the state, and what incremental checkpoints track.
#[derive(Debug)]
pub(crate) struct Heap {
    pub(crate) tables: HeapTables,
    /// Per priority-queue state (by index), its key groups' earliest timers: derived from
    /// the tables on first use, kept by every change after.
    pub(crate) timer_heads: BTreeMap<usize, TimerHeads>,
    /// Set when the backend checkpoints incrementally.
    pub(crate) incremental: Option<IncrementalState>,
    /// Where the incremental clean-up of each state with a time to live is.
    pub(crate) ttl_cursors: Cursors,
}

/// The change log and the chain history of a backend that checkpoints incrementally.
#[derive(Debug)]
pub(crate) struct IncrementalState {
    pub(crate) changes: ChangeLog,
    pub(crate) history: ChainHistory,
}

/// What a write changed, for the change log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// The value or list under the state key.
    Key,
    /// One user key of the map under the state key.
    UserKey(&'a [u8]),
    /// The whole map under the state key.
    Cleared,
}

/// The state a heap backend shares with its snapshot strategies: what
/// [`KeyedSnapshotStrategyFactory::create`](state_api::KeyedSnapshotStrategyFactory::create)
/// receives as `backend_state` for backend `heap`.
///
/// A strategy calls [`snapshot_version`](Self::snapshot_version) in its synchronous part.
#[derive(Clone)]
pub struct HeapSnapshotSource {
    heap: Arc<Mutex<Heap>>,
    key_serializer: Arc<str>,
}

impl fmt::Debug for HeapSnapshotSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let heap = self.lock();
        f.debug_struct("HeapSnapshotSource")
            .field("range", &heap.tables.range)
            .field("states", &heap.tables.states.len())
            .field("incremental", &heap.incremental.is_some())
            .finish()
    }
}

impl HeapSnapshotSource {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Heap> {
        // The tables stay consistent when a holder panics: every change is one map call.
        self.heap.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy-on-write version of every state: O(states × key groups), sharing all
    /// entries with the live state. Hold it as long as the snapshot needs it; dropping it
    /// releases what only it still refers to.
    pub fn snapshot_version(&self) -> HeapSnapshotVersion {
        self.version_of(&self.lock())
    }

    /// A version of `heap`, which the caller has locked.
    pub(crate) fn version_of(&self, heap: &Heap) -> HeapSnapshotVersion {
        HeapSnapshotVersion {
            tables: heap.tables.clone(),
            key_serializer: self.key_serializer.clone(),
        }
    }

    /// Makes the backend track changes for incremental checkpoints (from the first
    /// checkpoint's synchronous part on); does nothing if it does already.
    pub(crate) fn track_changes(&self) {
        let mut heap = self.lock();
        if heap.incremental.is_none() {
            let shards = heap.tables.range.len() as usize;
            heap.incremental = Some(IncrementalState {
                changes: ChangeLog::new(shards),
                history: ChainHistory::fresh(),
            });
        }
    }
}

/// A consistent, immutable version of a heap backend's state (see
/// [`HeapSnapshotSource::snapshot_version`]).
#[derive(Debug, Clone)]
pub struct HeapSnapshotVersion {
    pub(crate) tables: HeapTables,
    pub(crate) key_serializer: Arc<str>,
}

impl HeapSnapshotVersion {
    /// The meta info of every state, in header-id order.
    pub fn states(&self) -> Vec<StateMetaInfo> {
        self.tables.states.iter().map(|s| s.meta.clone()).collect()
    }

    /// The key groups the version covers.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.tables.range
    }

    /// The number of (key, namespace) entries of all states in the version.
    pub fn entry_count(&self) -> usize {
        let shards = self.tables.range.len() as usize;
        self.tables
            .states
            .iter()
            .map(|state| (0..shards).map(|i| state.shards.len_of(i)).sum::<usize>())
            .sum()
    }
}

/// The current key: its key group's shard and the key part of its state keys.
#[derive(Debug, Clone)]
struct CurrentKey {
    shard: usize,
    key_part: Vec<u8>,
}

/// The heap keyed state backend: the state of one key-group range of one operator instance,
/// in memory.
///
/// Each registered state has one copy-on-write map per key group (see the crate docs).
/// Access goes through serialized bytes (the [`KeyedStateBackend`] contract); typed access
/// is layered on top by [`state_format::typed`].
///
/// # Example
///
/// ```
/// use state_api::{KeyGroupRange, KeyedBackendParams, KeyedStateBackend, Registry, StateMetaInfo};
/// use state_heap::HeapKeyedStateBackend;
///
/// state_heap::link();
/// let params = KeyedBackendParams::new(state_api::MaxParallelism::new(128)?, KeyGroupRange::new(0, 127)?);
/// let mut backend = HeapKeyedStateBackend::new(params, Registry::global())?;
/// backend.register_state(&StateMetaInfo::value("count", "void", "u64-be"))?;
/// backend.set_current_key(b"alice")?;
/// backend.put_value("count", b"", &3u64.to_be_bytes())?;
/// assert_eq!(backend.value("count", b"")?, Some(3u64.to_be_bytes().to_vec()));
/// # Ok::<(), state_api::Error>(())
/// ```
pub struct HeapKeyedStateBackend {
    source: HeapSnapshotSource,
    params: KeyedBackendParams,
    current: Option<CurrentKey>,
    snapshots: KeyedSnapshots,
    scratch: Vec<u8>,
}

impl fmt::Debug for HeapKeyedStateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapKeyedStateBackend")
            .field("range", &self.params.key_group_range)
            .field("snapshots", &self.snapshots)
            .finish()
    }
}

impl HeapKeyedStateBackend {
    /// An empty backend for `params`, snapshotting with the strategy `params.strategy`
    /// (default `heap`) looked up in `registry`, with compression `params.compression`.
    ///
    /// # Errors
    ///
    /// An unknown strategy or decorator ([`Error::UnknownPlugin`]); a strategy of another
    /// backend or a range outside the max parallelism ([`Error::InvalidArgument`]).
    pub fn new(params: KeyedBackendParams, registry: &Registry) -> Result<Self> {
        params.check_range()?;
        let range = params.key_group_range;
        let source = HeapSnapshotSource {
            heap: Arc::new(Mutex::new(Heap {
                tables: HeapTables::new(range, params.max_parallelism),
                timer_heads: BTreeMap::new(),
                incremental: None,
                ttl_cursors: Cursors::new(),
            })),
            key_serializer: Arc::from(params.key_serializer.as_str()),
        };
        let snapshots = KeyedSnapshots::new(HEAP, HEAP, &source, &params, registry)?;
        Ok(HeapKeyedStateBackend {
            source,
            params,
            current: None,
            snapshots,
            scratch: Vec::new(),
        })
    }

    /// The state a snapshot strategy of this backend works from.
    pub fn snapshot_source(&self) -> &HeapSnapshotSource {
        &self.source
    }

    fn check_open(&self) -> Result<()> {
        self.snapshots.check_open()
    }

    /// Appends the state key of the current key and `namespace` to `out`; returns the
    /// current key's shard.
    fn current_state_key(&self, namespace: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        self.check_open()?;
        let current = self.current.as_ref().ok_or_else(Error::no_current_key)?;
        out.extend_from_slice(&current.key_part);
        namespace_part_into(namespace, out)?;
        Ok(current.shard)
    }

    /// The state key of the current key and `namespace` in `self.scratch`, and the shard.
    fn state_key(&mut self, namespace: &[u8]) -> Result<usize> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let shard = self.current_state_key(namespace, &mut scratch);
        self.scratch = scratch;
        shard
    }

    /// Runs `read` on the state `name` of `kind`, with the state key of the current key and
    /// `namespace` and its shard.
    fn read<T>(
        &self,
        name: &str,
        kind: StateKind,
        namespace: &[u8],
        read: impl FnOnce(&Shards, usize, &[u8]) -> T,
    ) -> Result<T> {
        let mut state_key = Vec::new();
        let shard = self.current_state_key(namespace, &mut state_key)?;
        let mut heap = self.source.lock();
        let index = index_of(&heap.tables, name, kind)?;
        let read = read(&heap.tables.states[index].shards, shard, &state_key);
        clean_incrementally(&mut heap, index, &*self.params.clock);
        Ok(read)
    }

    /// Runs `write` on the state `name` of `kind`, with the state key of the current key
    /// and `namespace` and its shard, and records `change` for incremental checkpoints.
    fn write<T>(
        &mut self,
        name: &str,
        kind: StateKind,
        namespace: &[u8],
        change: Change<'_>,
        write: impl FnOnce(&mut Shards, usize, &[u8]) -> T,
    ) -> Result<T> {
        let shard = self.state_key(namespace)?;
        let mut heap = self.source.lock();
        let index = index_of(&heap.tables, name, kind)?;
        let written = write(&mut heap.tables.states[index].shards, shard, &self.scratch);
        record(&mut heap.incremental, index, shard, &self.scratch, change);
        clean_incrementally(&mut heap, index, &*self.params.clock);
        Ok(written)
    }
}

impl HeapKeyedStateBackend {
    /// Adds (`add`) or removes `timer`; whether that changed the queue.
    fn change_timer(&mut self, name: &str, timer: &Timer, add: bool) -> Result<bool> {
        self.check_open()?;
        let key_group = self.params.key_group_of(&timer.key)?;
        let shard = (key_group.get() - self.params.key_group_range.start().get()) as usize;
        let mut state_key = Vec::with_capacity(8 + timer.key.len() + timer.namespace.len());
        key_part_into(&timer.key, &mut state_key)?;
        namespace_part_into(&timer.namespace, &mut state_key)?;
        let entry = TimerEntry {
            timestamp: timer.timestamp,
            state_key: Arc::from(state_key),
        };
        let mut guard = self.source.lock();
        let heap = &mut *guard;
        let index = index_of(&heap.tables, name, StateKind::PriorityQueue)?;
        let heads = heads_of(&heap.tables, &mut heap.timer_heads, index);
        let Shards::Timers(sets) = &mut heap.tables.states[index].shards else {
            unreachable!("kind checked by index_of")
        };
        let set = &mut sets[shard];
        if add {
            if set.insert(entry.clone()).is_some() {
                return Ok(false);
            }
            if set.get_min() == Some(&entry) {
                heads.set(shard, Some(timer.clone()));
            }
        } else {
            if set.remove(&entry).is_none() {
                return Ok(false);
            }
            if heads.head(shard) == Some(timer) {
                heads.set(shard, set.get_min().map(timer_of));
            }
        }
        record_timer(&mut heap.incremental, index, shard, &entry);
        Ok(true)
    }

    /// Runs `read` on the timer sets of priority-queue state `name`.
    fn read_timers<T>(&self, name: &str, read: impl FnOnce(&[TimerSet]) -> T) -> Result<T> {
        self.check_open()?;
        let heap = self.source.lock();
        let index = index_of(&heap.tables, name, StateKind::PriorityQueue)?;
        let Shards::Timers(sets) = &heap.tables.states[index].shards else {
            unreachable!("kind checked by index_of")
        };
        Ok(read(sets))
    }
}

/// The heads of priority-queue state `index` of `tables`, built from its sets on first use.
fn heads_of<'a>(
    tables: &HeapTables,
    timer_heads: &'a mut BTreeMap<usize, TimerHeads>,
    index: usize,
) -> &'a mut TimerHeads {
    timer_heads.entry(index).or_insert_with(|| {
        let Shards::Timers(sets) = &tables.states[index].shards else {
            return TimerHeads::default();
        };
        let mut heads = TimerHeads::new(sets.len());
        for (shard, set) in sets.iter().enumerate() {
            heads.set(shard, set.get_min().map(timer_of));
        }
        heads
    })
}

/// The timer of a heap timer entry.
pub(crate) fn timer_of(entry: &TimerEntry) -> Timer {
    // Entries are built from a key and a namespace: their state keys always split.
    let (key, namespace) = split_state_key(&entry.state_key).unwrap_or_default();
    Timer {
        timestamp: entry.timestamp,
        key: key.to_vec(),
        namespace: namespace.to_vec(),
    }
}

/// Records that `entry` of state `index` in `shard` was added or removed: as one changed
/// key, its timestamp's 8 bytes then its state key.
fn record_timer(
    incremental: &mut Option<IncrementalState>,
    index: usize,
    shard: usize,
    entry: &TimerEntry,
) {
    if let Some(incremental) = incremental {
        let mut recorded = Vec::with_capacity(TIMESTAMP_BYTES + entry.state_key.len());
        recorded.extend_from_slice(&timestamp_bytes(entry.timestamp));
        recorded.extend_from_slice(&entry.state_key);
        incremental.changes.key_changed(index, shard, &recorded);
    }
}

/// Records `change` of state `index` under `key` in `shard` when the backend tracks
/// changes: O(1), no entry copied.
pub(crate) fn record(
    incremental: &mut Option<IncrementalState>,
    index: usize,
    shard: usize,
    key: &[u8],
    change: Change<'_>,
) {
    if let Some(incremental) = incremental {
        let changes = &mut incremental.changes;
        match change {
            Change::Key => changes.key_changed(index, shard, key),
            Change::UserKey(user_key) => changes.user_key_changed(index, shard, key, user_key),
            Change::Cleared => changes.map_cleared(index, shard, key),
        }
    }
}

/// The index of registered state `name`, of any kind.
fn find(tables: &HeapTables, name: &str) -> Result<usize> {
    state_format::find_state(tables.states.iter().map(|s| &s.meta), name, None)
}

/// The index of registered state `name`, which must be of `kind`.
fn index_of(tables: &HeapTables, name: &str, kind: StateKind) -> Result<usize> {
    state_format::find_state(tables.states.iter().map(|s| &s.meta), name, Some(kind))
}

fn bytes(value: &[u8]) -> Bytes {
    Arc::from(value)
}

impl CheckpointListener for HeapKeyedStateBackend {
    /// With incremental checkpoints, a completed checkpoint becomes the base of the next
    /// one and the changes it covers are forgotten; full snapshots keep no history.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        let mut heap = self.source.lock();
        if let Some(incremental) = &mut heap.incremental
            && let Some(sequence) = incremental.history.complete(checkpoint_id)
        {
            incremental.changes.forget_through(sequence);
        }
        Ok(())
    }

    /// An aborted checkpoint never becomes a base; its changes go into the next one.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        if let Some(incremental) = &mut self.source.lock().incremental {
            incremental.history.abort(checkpoint_id);
        }
        Ok(())
    }
}

impl KeyedStateBackend for HeapKeyedStateBackend {
    fn backend_name(&self) -> &str {
        HEAP
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.params.key_group_range
    }

    fn max_parallelism(&self) -> MaxParallelism {
        self.params.max_parallelism
    }

    fn register_state(&mut self, meta: &StateMetaInfo) -> Result<()> {
        self.check_open()?;
        self.source.lock().tables.register(meta).map(|_| ())
    }

    fn states(&self) -> Vec<StateMetaInfo> {
        let heap = self.source.lock();
        heap.tables.states.iter().map(|s| s.meta.clone()).collect()
    }

    fn set_current_key(&mut self, key: &[u8]) -> Result<()> {
        self.check_open()?;
        let key_group = self.params.key_group_of(key)?;
        let current = self.current.get_or_insert_with(|| CurrentKey {
            shard: 0,
            key_part: Vec::new(),
        });
        current.key_part.clear();
        key_part_into(key, &mut current.key_part)?;
        current.shard = (key_group.get() - self.params.key_group_range.start().get()) as usize;
        Ok(())
    }

    fn value(&self, state: &str, namespace: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(state, StateKind::Value, namespace, |shards, shard, key| {
            let Shards::Value(maps) = shards else {
                unreachable!("kind checked by index_of")
            };
            maps[shard].value(key).map(<[u8]>::to_vec)
        })
    }

    fn put_value(&mut self, state: &str, namespace: &[u8], value: &[u8]) -> Result<()> {
        self.write(
            state,
            StateKind::Value,
            namespace,
            Change::Key,
            |shards, shard, key| {
                let Shards::Value(maps) = shards else {
                    unreachable!("kind checked by index_of")
                };
                maps[shard].set(key, value);
            },
        )
    }

    fn list(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.read(state, StateKind::List, namespace, |shards, shard, key| {
            let Shards::List(maps) = shards else {
                unreachable!("kind checked by index_of")
            };
            maps[shard]
                .get(key)
                .map(|elements| elements.iter().map(|e| e.to_vec()).collect())
                .unwrap_or_default()
        })
    }

    fn append_to_list(&mut self, state: &str, namespace: &[u8], element: &[u8]) -> Result<()> {
        self.write(
            state,
            StateKind::List,
            namespace,
            Change::Key,
            |shards, shard, key| {
                let Shards::List(maps) = shards else {
                    unreachable!("kind checked by index_of")
                };
                match maps[shard].get_mut(key) {
                    // Copies the element pointers only if a snapshot still holds this list.
                    Some(elements) => Arc::make_mut(elements).push(bytes(element)),
                    None => {
                        maps[shard].insert(bytes(key), Arc::new(vec![bytes(element)]));
                    }
                }
            },
        )
    }

    fn update_list(&mut self, state: &str, namespace: &[u8], elements: &[Vec<u8>]) -> Result<()> {
        self.write(
            state,
            StateKind::List,
            namespace,
            Change::Key,
            |shards, shard, key| {
                let Shards::List(maps) = shards else {
                    unreachable!("kind checked by index_of")
                };
                if elements.is_empty() {
                    maps[shard].remove(key);
                } else {
                    let elements = elements.iter().map(|e| bytes(e)).collect();
                    maps[shard].insert(bytes(key), Arc::new(elements));
                }
            },
        )
    }

    fn map_value(&self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(state, StateKind::Map, namespace, |shards, shard, key| {
            let Shards::Map(maps) = shards else {
                unreachable!("kind checked by index_of")
            };
            maps[shard]
                .get(key)
                .and_then(|entries| entries.get(user_key))
                .map(|value| value.to_vec())
        })
    }

    fn put_map_value(
        &mut self,
        state: &str,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.write(
            state,
            StateKind::Map,
            namespace,
            Change::UserKey(user_key),
            |shards, shard, key| {
                let Shards::Map(maps) = shards else {
                    unreachable!("kind checked by index_of")
                };
                match maps[shard].get_mut(key) {
                    Some(entries) => {
                        entries.insert(bytes(user_key), bytes(value));
                    }
                    None => {
                        maps[shard].insert(bytes(key), CowMap::unit(bytes(user_key), bytes(value)));
                    }
                }
            },
        )
    }

    fn remove_map_value(&mut self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<()> {
        self.write(
            state,
            StateKind::Map,
            namespace,
            Change::UserKey(user_key),
            |shards, shard, key| {
                let Shards::Map(maps) = shards else {
                    unreachable!("kind checked by index_of")
                };
                let now_empty = match maps[shard].get_mut(key) {
                    Some(entries) => {
                        entries.remove(user_key);
                        entries.is_empty()
                    }
                    None => false,
                };
                if now_empty {
                    maps[shard].remove(key);
                }
            },
        )
    }

    fn map_entries(&self, state: &str, namespace: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read(state, StateKind::Map, namespace, |shards, shard, key| {
            let Shards::Map(maps) = shards else {
                unreachable!("kind checked by index_of")
            };
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = maps[shard]
                .get(key)
                .map(|entries| {
                    entries
                        .iter()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            // The contract orders entries by user key bytes; the hash map has no order.
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            entries
        })
    }

    fn clear(&mut self, state: &str, namespace: &[u8]) -> Result<()> {
        let shard = self.state_key(namespace)?;
        let mut heap = self.source.lock();
        let index = find(&heap.tables, state)?;
        let key = &self.scratch[..];
        let change = match &mut heap.tables.states[index].shards {
            Shards::Value(maps) => {
                maps[shard].remove(key);
                Change::Key
            }
            Shards::List(maps) => {
                maps[shard].remove(key);
                Change::Key
            }
            Shards::Map(maps) => {
                maps[shard].remove(key);
                Change::Cleared
            }
            Shards::Timers(_) => return Err(not_keyed_state(state)),
        };
        record(&mut heap.incremental, index, shard, key, change);
        Ok(())
    }

    fn keys(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.check_open()?;
        let heap = self.source.lock();
        let tables = &heap.tables;
        let index = find(tables, state)?;
        let mut keys = Vec::new();
        let mut collect = |state_key: &[u8]| {
            if let Some((key, ns)) = split_state_key(state_key)
                && ns == namespace
            {
                keys.push(key.to_vec());
            }
        };
        match &tables.states[index].shards {
            Shards::Value(maps) => {
                (maps.iter().flat_map(|m| m.entries())).for_each(|entry| collect(entry.key()))
            }
            Shards::List(maps) => (maps.iter().flat_map(|m| m.keys())).for_each(|k| collect(k)),
            Shards::Map(maps) => (maps.iter().flat_map(|m| m.keys())).for_each(|k| collect(k)),
            Shards::Timers(_) => return Err(not_keyed_state(state)),
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
        self.check_open()?;
        let mut heap = self.source.lock();
        let index = index_of(&heap.tables, state, StateKind::PriorityQueue)?;
        let heap = &mut *heap;
        let heads = heads_of(&heap.tables, &mut heap.timer_heads, index);
        Ok(heads.first().map(|(_, timer)| timer.clone()))
    }

    fn poll_timers(&mut self, state: &str, until: i64, limit: usize) -> Result<Vec<Timer>> {
        self.check_open()?;
        let mut guard = self.source.lock();
        let heap = &mut *guard;
        let index = index_of(&heap.tables, state, StateKind::PriorityQueue)?;
        let heads = heads_of(&heap.tables, &mut heap.timer_heads, index);
        let Shards::Timers(sets) = &mut heap.tables.states[index].shards else {
            unreachable!("kind checked by index_of")
        };
        let incremental = &mut heap.incremental;
        heads.poll(until, limit, |shard, _| {
            if let Some(entry) = sets[shard].remove_min() {
                record_timer(incremental, index, shard, &entry);
            }
            Ok(sets[shard].get_min().map(timer_of))
        })
    }

    fn timer_count(&self, state: &str) -> Result<usize> {
        self.read_timers(state, |sets| sets.iter().map(TimerSet::len).sum())
    }

    fn timers_of(&self, state: &str, key_group: KeyGroup) -> Result<Vec<Timer>> {
        let range = self.params.key_group_range;
        let shard = range
            .position(key_group)
            .ok_or(Error::KeyGroupOutOfRange { key_group, range })?;
        self.read_timers(state, |sets| sets[shard].iter().map(timer_of).collect())
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
        // Cancels running snapshots; their versions are released by their cleanup.
        self.snapshots.close()
    }
}

//! Copy-on-write state tables: one per registered state, one persistent hash map per key
//! group of the backend's range (split into parts when large: [`KeyGroupMap`]).
//!
//! The maps are hash array mapped tries (`imbl`), whose clone shares every node. A snapshot
//! version of a table is a clone of its per-key-group maps: O(number of key groups) pointer
//! copies, independent of the number of entries. While a version is held, a writer that
//! touches an entry copies the nodes on the path from the root to that entry (about
//! `log32(n)` nodes of at most 32 slots each, pointers and hashes, never the key or value
//! bytes) and shares the rest; an entry's bytes are never copied, a new value is a new
//! allocation. Dropping the version frees the nodes only it still refers to, so memory
//! returns to the live size once the asynchronous part is done.
//!
//! Flink's `CopyOnWriteStateMap` copies its bucket array in the synchronous part
//! (O(buckets)) and then copies touched entries with their chain predecessors; here the
//! synchronous part does no work that grows with the state.

use std::sync::Arc;

use state_api::{Error, KeyGroupRange, MaxParallelism, Result, StateKind, StateMetaInfo};

/// Serialized bytes, shared between versions.
pub(crate) type Bytes = Arc<[u8]>;

/// A persistent hash map whose clone is O(1) and shares all nodes: a map state's entries
/// under one key and namespace.
pub(crate) type CowMap<V> = imbl::HashMap<Bytes, V>;

pub(crate) use crate::key_group_map::KeyGroupMap;
pub(crate) use crate::value_entry::ValueEntry;

/// A value state's map of one key group: entries holding key and value together.
pub(crate) type ValueMap = KeyGroupMap<(), ValueEntry>;

/// A list state's value: elements shared between versions; the vector itself is copied when
/// a writer changes a list a version still holds.
pub(crate) type ListValue = Arc<Vec<Bytes>>;

/// A timer of a heap priority queue, ordered as its [timer key](state_format::timer) is:
/// by timestamp, then by state key bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TimerEntry {
    pub(crate) timestamp: i64,
    /// The timer's key and namespace as a state key ([`crate::format`]).
    pub(crate) state_key: Bytes,
}

/// A persistent ordered set (a B-tree whose clone shares every node): one key group's
/// timers, snapshotted in O(1) like the maps.
pub(crate) type TimerSet = imbl::OrdSet<TimerEntry>;

/// The per-key-group maps of one state, by kind. Maps are keyed by the state key
/// ([`crate::format`]: key and namespace, without key-group prefix or user key).
#[derive(Debug, Clone)]
pub(crate) enum Shards {
    /// Value state: state key -> value, in one allocation per entry.
    Value(Vec<ValueMap>),
    /// List state: state key -> elements.
    List(Vec<KeyGroupMap<ListValue>>),
    /// Map state: state key -> (user key -> value), the inner maps copy-on-write too.
    Map(Vec<KeyGroupMap<CowMap<Bytes>>>),
    /// Priority-queue state: the timers of each key group.
    Timers(Vec<TimerSet>),
}

impl Shards {
    fn new(kind: StateKind, key_groups: usize) -> Self {
        match kind {
            StateKind::Value => Shards::Value(vec![ValueMap::new(); key_groups]),
            StateKind::List => Shards::List(vec![KeyGroupMap::new(); key_groups]),
            StateKind::Map => Shards::Map(vec![KeyGroupMap::new(); key_groups]),
            StateKind::PriorityQueue => Shards::Timers(vec![TimerSet::new(); key_groups]),
        }
    }

    /// Exchanges shard `index` with `other`'s, a table of the same kind.
    pub(crate) fn swap_shard(&mut self, other: &mut Shards, index: usize) {
        match (self, other) {
            (Shards::Value(mine), Shards::Value(theirs)) => {
                std::mem::swap(&mut mine[index], &mut theirs[index]);
            }
            (Shards::List(mine), Shards::List(theirs)) => {
                std::mem::swap(&mut mine[index], &mut theirs[index]);
            }
            (Shards::Map(mine), Shards::Map(theirs)) => {
                std::mem::swap(&mut mine[index], &mut theirs[index]);
            }
            (Shards::Timers(mine), Shards::Timers(theirs)) => {
                std::mem::swap(&mut mine[index], &mut theirs[index]);
            }
            // Tables built alike (`StateTable::empty_like`) are always of one kind.
            _ => {}
        }
    }

    /// Prepares shard `index`, if empty, for about `entries` (key, namespace) entries (see
    /// [`KeyGroupMap::reserve`]).
    pub(crate) fn reserve(&mut self, index: usize, entries: usize) {
        match self {
            Shards::Value(shards) => shards[index].reserve(entries),
            Shards::List(shards) => shards[index].reserve(entries),
            Shards::Map(shards) => shards[index].reserve(entries),
            Shards::Timers(_) => {}
        }
    }

    /// Number of (key, namespace) entries in shard `index`.
    pub(crate) fn len_of(&self, index: usize) -> usize {
        match self {
            Shards::Value(shards) => shards[index].len(),
            Shards::List(shards) => shards[index].len(),
            Shards::Map(shards) => shards[index].len(),
            Shards::Timers(shards) => shards[index].len(),
        }
    }
}

/// One registered state: its meta info and its maps.
#[derive(Debug, Clone)]
pub(crate) struct StateTable {
    pub(crate) meta: StateMetaInfo,
    pub(crate) shards: Shards,
}

impl StateTable {
    /// A table of the same state with as many shards, all empty.
    pub(crate) fn empty_like(&self) -> StateTable {
        let key_groups = match &self.shards {
            Shards::Value(shards) => shards.len(),
            Shards::List(shards) => shards.len(),
            Shards::Map(shards) => shards.len(),
            Shards::Timers(shards) => shards.len(),
        };
        StateTable {
            meta: self.meta.clone(),
            shards: Shards::new(self.meta.kind, key_groups),
        }
    }
}

/// Every state of a backend, in registration order (the order their ids in a snapshot
/// header follow).
#[derive(Debug, Clone)]
pub(crate) struct HeapTables {
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: MaxParallelism,
    pub(crate) states: Vec<StateTable>,
}

impl HeapTables {
    pub(crate) fn new(range: KeyGroupRange, max_parallelism: MaxParallelism) -> Self {
        HeapTables {
            range,
            max_parallelism,
            states: Vec::new(),
        }
    }

    /// Registers `meta`, or checks it against the state of that name already registered.
    pub(crate) fn register(&mut self, meta: &StateMetaInfo) -> Result<usize> {
        if let Some(index) = self.index_of(&meta.name) {
            let held = &mut self.states[index].meta;
            held.check_compatible(meta)?;
            // A compatible registration may change the time to live.
            held.ttl = meta.ttl;
            return Ok(index);
        }
        if self.states.len() >= state_format::proxy::MAX_STATES {
            return Err(Error::InvalidArgument(format!(
                "cannot register state `{}`: a keyed backend holds at most {} states",
                meta.name,
                state_format::proxy::MAX_STATES
            )));
        }
        self.states.push(StateTable {
            meta: meta.clone(),
            shards: Shards::new(meta.kind, self.range.len() as usize),
        });
        Ok(self.states.len() - 1)
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|state| state.meta.name == name)
    }
}

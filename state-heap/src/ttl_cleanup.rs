//! Incremental clean-up of states with a time to live (`cleanup_incrementally`, Flink's
//! `cleanupIncrementally`): every access to such a state also checks the next entries of
//! its table, a few per access, and removes what expired, so state nobody reads again
//! still goes away between full snapshots (and from `heap-incremental` checkpoints, whose
//! deltas record the removals).
//!
//! A state's cursor walks its key groups in turn over the entries a key group held when the
//! cursor reached it (shared pointers to keys and values, taken once per pass), so checking
//! an entry that has not expired costs no map look-up; an expired one is removed only if the
//! live map still holds that very value. Entries added later are checked on the next pass,
//! entries changed or removed meanwhile are left to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use state_api::{StateTtlConfig, TtlClock};
use state_format::ttl::split;

use crate::backend::{Change, Heap, record};
use crate::table::{Bytes, CowMap, ListValue, Shards, ValueEntry};

/// Where the clean-up of one state is: a key group (by shard) and the entries left to check.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    shard: usize,
    entries: Vec<Held>,
    started: bool,
}

/// An entry as the cursor took it: its state key and value.
#[derive(Debug)]
enum Held {
    Value(ValueEntry),
    List(Bytes, ListValue),
    Map(Bytes, CowMap<Bytes>),
}

impl Held {
    /// The entry's state key.
    fn key(&self) -> &[u8] {
        match self {
            Held::Value(entry) => entry.key(),
            Held::List(key, _) | Held::Map(key, _) => key,
        }
    }

    /// Whether anything in it expired at `now`.
    fn any_expired(&self, ttl: &StateTtlConfig, now: i64) -> bool {
        match self {
            Held::Value(entry) => expired(ttl, now, entry.value()),
            Held::List(_, list) => list.iter().any(|element| expired(ttl, now, element)),
            Held::Map(_, entries) => entries.values().any(|value| expired(ttl, now, value)),
        }
    }

    /// Whether `shards` still holds this very value under its key in `shard`.
    fn is_live(&self, shards: &Shards, shard: usize) -> bool {
        match (self, shards) {
            (Held::Value(held), Shards::Value(maps)) => maps[shard]
                .entry(held.key())
                .is_some_and(|live| live.ptr_eq(held)),
            (Held::List(key, held), Shards::List(maps)) => maps[shard]
                .get(key)
                .is_some_and(|live| Arc::ptr_eq(live, held)),
            (Held::Map(key, held), Shards::Map(maps)) => {
                maps[shard].get(key).is_some_and(|live| live.ptr_eq(held))
            }
            _ => false,
        }
    }
}

/// The cursors of every state with incremental clean-up, by state index.
pub(crate) type Cursors = BTreeMap<usize, Cursor>;

/// Checks the next entries of state `index` for expiry by `clock`, as many as its time to
/// live asks per access, removing (and recording for incremental checkpoints) what expired.
pub(crate) fn clean_incrementally(heap: &mut Heap, index: usize, clock: &dyn TtlClock) {
    let Some(ttl) = heap.tables.states[index].meta.ttl else {
        return;
    };
    let Some(budget) = ttl.cleanup_incrementally else {
        return;
    };
    let now = clock.now();
    let shards = heap.tables.range.len() as usize;
    let cursor = heap.ttl_cursors.entry(index).or_default();
    let mut budget = budget.get();
    // Every key group is refilled at most once per call: empty tables end the call.
    let mut refills = 0;
    while budget > 0 {
        let Some(held) = cursor.entries.pop() else {
            if refills == shards {
                return;
            }
            refills += 1;
            cursor.shard = match cursor.started {
                true => (cursor.shard + 1) % shards,
                false => 0,
            };
            cursor.started = true;
            cursor.entries = entries_of(&heap.tables.states[index].shards, cursor.shard);
            continue;
        };
        budget -= 1;
        let shard = cursor.shard;
        let shards = &heap.tables.states[index].shards;
        if !held.any_expired(&ttl, now) || !held.is_live(shards, shard) {
            continue;
        }
        let key = held.key();
        let changes = clean_entry(&mut heap.tables.states[index].shards, shard, key, &ttl, now);
        for change in changes {
            let change = match &change {
                Cleaned::Key => Change::Key,
                Cleaned::UserKey(user_key) => Change::UserKey(user_key),
            };
            record(&mut heap.incremental, index, shard, key, change);
        }
    }
}

/// The entries of `shard`, in the order the cursor pops them.
fn entries_of(shards: &Shards, shard: usize) -> Vec<Held> {
    match shards {
        Shards::Value(maps) => (maps[shard].entries())
            .map(|entry| Held::Value(entry.clone()))
            .collect(),
        Shards::List(maps) => (maps[shard].iter())
            .map(|(key, list)| Held::List(key.clone(), list.clone()))
            .collect(),
        Shards::Map(maps) => (maps[shard].iter())
            .map(|(key, entries)| Held::Map(key.clone(), entries.clone()))
            .collect(),
        Shards::Timers(_) => Vec::new(),
    }
}

/// What cleaning one entry changed.
enum Cleaned {
    /// The value or list under the key.
    Key,
    /// One user key of the map under the key.
    UserKey(Bytes),
}

/// Whether stored TTL bytes expired at `now`; bytes without a timestamp are left alone.
fn expired(ttl: &StateTtlConfig, now: i64, stored: &[u8]) -> bool {
    split(stored).is_ok_and(|(_, last_access)| ttl.is_expired(last_access, now))
}

/// Removes what expired at `now` of the entry under `key`.
fn clean_entry(
    shards: &mut Shards,
    shard: usize,
    key: &[u8],
    ttl: &StateTtlConfig,
    now: i64,
) -> Vec<Cleaned> {
    match shards {
        Shards::Value(maps) => {
            let map = &mut maps[shard];
            match map.value(key).is_some_and(|value| expired(ttl, now, value)) {
                true => {
                    map.remove(key);
                    vec![Cleaned::Key]
                }
                false => Vec::new(),
            }
        }
        Shards::List(maps) => {
            let map = &mut maps[shard];
            let Some(list) = map.get(key) else {
                return Vec::new();
            };
            let fresh: Vec<Bytes> = (list.iter())
                .filter(|element| !expired(ttl, now, element))
                .cloned()
                .collect();
            match (fresh.len(), list.len()) {
                (kept, all) if kept == all => return Vec::new(),
                (0, _) => drop(map.remove(key)),
                _ => drop(map.insert(Arc::from(key), Arc::new(fresh))),
            }
            vec![Cleaned::Key]
        }
        Shards::Map(maps) => {
            let map = &mut maps[shard];
            let Some(entries) = map.get_mut(key) else {
                return Vec::new();
            };
            let gone: Vec<Bytes> = (entries.iter())
                .filter(|(_, value)| expired(ttl, now, value))
                .map(|(user_key, _)| user_key.clone())
                .collect();
            for user_key in &gone {
                entries.remove(user_key);
            }
            if entries.is_empty() {
                map.remove(key);
            }
            gone.into_iter().map(Cleaned::UserKey).collect()
        }
        Shards::Timers(_) => Vec::new(),
    }
}

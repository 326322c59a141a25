//! Incremental clean-up of states with a time to live (`cleanup_incrementally`, Flink's
//! `cleanupIncrementally`): every access to such a state also checks the next entries of
//! its table, a few per access, and removes what expired, so state nobody reads again
//! still goes away between full snapshots (and from `heap-incremental` checkpoints, whose
//! deltas record the removals).
//!
//! A state's cursor walks its key groups in turn over the keys a key group held when the
//! cursor reached it (a list of shared key pointers, taken once per pass); keys added later
//! are checked on the next pass, keys removed meanwhile are skipped.

use std::collections::BTreeMap;

use state_api::{StateTtlConfig, TtlClock};
use state_format::ttl::split;

use crate::backend::{Change, Heap, record};
use crate::table::{Bytes, Shards};

/// Where the clean-up of one state is: a key group (by shard) and the keys left to check.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    shard: usize,
    keys: Vec<Bytes>,
    started: bool,
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
        let Some(key) = cursor.keys.pop() else {
            if refills == shards {
                return;
            }
            refills += 1;
            cursor.shard = match cursor.started {
                true => (cursor.shard + 1) % shards,
                false => 0,
            };
            cursor.started = true;
            cursor.keys = keys_of(&heap.tables.states[index].shards, cursor.shard);
            continue;
        };
        budget -= 1;
        let shard = cursor.shard;
        let changes = clean_entry(
            &mut heap.tables.states[index].shards,
            shard,
            &key,
            &ttl,
            now,
        );
        for change in changes {
            let change = match &change {
                Cleaned::Key => Change::Key,
                Cleaned::UserKey(user_key) => Change::UserKey(user_key),
            };
            record(&mut heap.incremental, index, shard, &key, change);
        }
    }
}

/// The keys of `shard`, in the order the cursor pops them.
fn keys_of(shards: &Shards, shard: usize) -> Vec<Bytes> {
    match shards {
        Shards::Value(maps) => maps[shard].keys().cloned().collect(),
        Shards::List(maps) => maps[shard].keys().cloned().collect(),
        Shards::Map(maps) => maps[shard].keys().cloned().collect(),
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
    key: &Bytes,
    ttl: &StateTtlConfig,
    now: i64,
) -> Vec<Cleaned> {
    match shards {
        Shards::Value(maps) => {
            let map = &mut maps[shard];
            match map.get(key).is_some_and(|value| expired(ttl, now, value)) {
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
                _ => drop(map.insert(key.clone(), std::sync::Arc::new(fresh))),
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

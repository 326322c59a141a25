//! Priority-queue (timer) states of the RocksDB backend.
//!
//! A timer state's column family holds one entry per timer: its
//! [timer key](state_format::timer) (key group, timestamp, key, namespace) and an empty
//! value, so one key group's timers are one key range in timestamp order, and full and
//! incremental snapshots, restores and rescaling treat the family like any other.
//!
//! Per state and key group the backend caches the earliest [`CACHED`] timer keys, as
//! Flink's `RocksDBCachingPriorityQueueSet` does: `peek` reads no database, `poll` seeks
//! once per [`CACHED`] timers it fires, and adding or removing a timer below the cache's
//! last key needs no read to know whether it is present. A refill seeks to the key group's
//! *floor*, the smallest key its timers may have (the last polled one, or an earlier one
//! added since), never to the key group's start: the tombstones of fired timers stay
//! behind until compaction, and skipping them on every refill would make firing every
//! timer quadratic. The number of timers is counted once, on first request.
//!
//! With `rocksdb.timer-service.factory = heap` the operations go to
//! [`crate::heap_timers`] instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, MutexGuard};

use rocksdb::{BoundColumnFamily, ReadOptions, WriteBatch};
use state_api::{Error, KeyGroup, Result, StateKind, Timer};
use state_format::timer::TimerHeads;

use crate::ROCKSDB;
use crate::backend::{RocksDBKeyedStateBackend, db_error, key_group_start, prefix_successor};
use crate::heap_timers::HeapTimers;

/// The timer keys cached per key group.
pub(crate) const CACHED: usize = 128;

/// What the backend holds in memory of one key group's timers.
#[derive(Debug)]
struct GroupCache {
    /// The key group's earliest timer keys, in order; every one of them when `complete`.
    keys: BTreeSet<Vec<u8>>,
    /// Whether `keys` holds every timer of the key group.
    complete: bool,
    /// Whether `keys` reflects the database; `false` once it emptied while incomplete.
    loaded: bool,
    /// No timer key of the key group is below this.
    floor: Vec<u8>,
    /// The key group's end: the smallest key above all of its keys (`None`: none).
    end: Option<Vec<u8>>,
}

impl GroupCache {
    fn new(start: Vec<u8>) -> Self {
        GroupCache {
            keys: BTreeSet::new(),
            complete: false,
            loaded: false,
            end: prefix_successor(&start),
            floor: start,
        }
    }

    /// Whether `key` is a timer of the key group, when the cache knows.
    fn knows(&self, key: &[u8]) -> Option<bool> {
        let below_last = self.keys.last().is_some_and(|last| key <= last.as_slice());
        (self.complete || below_last).then(|| self.keys.contains(key))
    }

    /// Records that `key` was added to the database.
    fn added(&mut self, key: Vec<u8>) {
        if key < self.floor {
            self.floor.clone_from(&key);
        }
        if self.knows(&key).is_none() {
            return;
        }
        self.keys.insert(key);
        if self.keys.len() > CACHED {
            self.keys.pop_last();
            self.complete = false;
        }
    }

    /// Records that `key` was removed from the database.
    fn removed(&mut self, key: &[u8]) {
        self.keys.remove(key);
        if self.keys.is_empty() && !self.complete {
            self.loaded = false;
        }
    }
}

/// The error of a cache that does not hold what the heads say: a bug, reported.
fn lost_cache(name: &str) -> Error {
    Error::Backend {
        backend: ROCKSDB.to_owned(),
        source: format!("the timer cache of state `{name}` lost its place").into(),
    }
}

/// What the backend caches of one timer state.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    /// Each key group's earliest timer, decoded.
    heads: TimerHeads,
    /// Per key group of the backend's range.
    groups: Vec<GroupCache>,
    /// The number of timers, once counted.
    count: Option<usize>,
}

/// The caches of every timer state used since the backend opened, by state name.
pub(crate) type TimerQueues = BTreeMap<String, TimerQueue>;

impl RocksDBKeyedStateBackend {
    /// The column family of priority-queue state `name`, its cache made.
    fn queue(&self, name: &str) -> Result<Arc<BoundColumnFamily<'_>>> {
        let cf = self.state_cf(name, StateKind::PriorityQueue)?;
        if !self.timer_queues().borrow().contains_key(name) {
            let range = self.key_group_range();
            let prefix_bytes = self.composite_key().prefix_bytes();
            let mut queue = TimerQueue {
                heads: TimerHeads::new(range.len() as usize),
                groups: (range.iter())
                    .map(|group| GroupCache::new(key_group_start(group.get(), prefix_bytes)))
                    .collect(),
                count: None,
            };
            for shard in 0..queue.groups.len() {
                self.refill(&cf, &mut queue.groups[shard])?;
                self.update_head(&mut queue, shard)?;
            }
            self.timer_queues()
                .borrow_mut()
                .insert(name.to_owned(), queue);
        }
        Ok(cf)
    }

    /// Reads the earliest [`CACHED`] timer keys of a key group from its floor on: one seek.
    fn refill(&self, cf: &Arc<BoundColumnFamily<'_>>, group: &mut GroupCache) -> Result<()> {
        let mut read = ReadOptions::default();
        if let Some(end) = &group.end {
            read.set_iterate_upper_bound(end.clone());
        }
        read.set_iterate_lower_bound(group.floor.clone());
        let mut iter = self.db()?.raw_iterator_cf_opt(cf, read);
        iter.seek_to_first();
        group.keys.clear();
        while let Some(key) = iter.key() {
            if group.keys.len() == CACHED {
                break;
            }
            group.keys.insert(key.to_vec());
            iter.next();
        }
        iter.status()
            .map_err(db_error("reading the earliest timers"))?;
        group.complete = group.keys.len() < CACHED;
        group.loaded = true;
        if let Some(first) = group.keys.first() {
            group.floor.clone_from(first);
        }
        Ok(())
    }

    /// Sets `queue`'s head of key group `shard` from its cache, refilling it first when it
    /// emptied.
    fn update_head(&self, queue: &mut TimerQueue, shard: usize) -> Result<()> {
        let group = &queue.groups[shard];
        let head = match group.keys.first() {
            Some(first) => Some(self.timer_keys().split(first)?.1),
            None => None,
        };
        if queue.heads.head(shard) != head.as_ref() {
            queue.heads.set(shard, head);
        }
        Ok(())
    }

    /// The position of `key_group` in the backend's range.
    fn shard_of(&self, key_group: KeyGroup) -> Result<usize> {
        let range = self.key_group_range();
        range
            .position(key_group)
            .ok_or(Error::KeyGroupOutOfRange { key_group, range })
    }

    /// The in-memory timers when the backend keeps them there, after checking that `name`
    /// is a registered priority-queue state; `None` when timers live in column families.
    fn in_memory(&self, name: &str) -> Result<Option<MutexGuard<'_, HeapTimers>>> {
        let source = self.snapshot_source();
        if !source.timers_in_memory() {
            return Ok(None);
        }
        self.db()?;
        source.find_state(name, Some(StateKind::PriorityQueue))?;
        Ok(source.heap_timers())
    }

    /// Adds (`add`) or removes `timer` from state `name`; whether that changed the queue.
    pub(crate) fn change_timer(&self, name: &str, timer: &Timer, add: bool) -> Result<bool> {
        let key_group = self.params_key_group_of(&timer.key)?;
        let shard = self.shard_of(key_group)?;
        let key = self.timer_keys().build(key_group, timer)?;
        if let Some(mut timers) = self.in_memory(name)? {
            return timers.change(name, shard, &key, add);
        }
        let cf = self.queue(name)?;
        let mut queues = self.timer_queues().borrow_mut();
        let queue = queues.get_mut(name).ok_or_else(|| lost_cache(name))?;
        let group = &mut queue.groups[shard];
        if !group.loaded {
            self.refill(&cf, group)?;
        }
        let present = match group.knows(&key) {
            Some(present) => present,
            None => (self.db()?.get_pinned_cf(&cf, &key))
                .map_err(db_error("reading a timer"))?
                .is_some(),
        };
        if present == add {
            return Ok(false);
        }
        match add {
            true => {
                self.write("adding a timer", |db, o| db.put_cf_opt(&cf, &key, [], o))?;
                group.added(key);
            }
            false => {
                self.write("removing a timer", |db, o| db.delete_cf_opt(&cf, &key, o))?;
                group.removed(&key);
                if !group.loaded {
                    self.refill(&cf, group)?;
                }
            }
        }
        if let Some(count) = &mut queue.count {
            *count = if add {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
        }
        self.update_head(queue, shard)?;
        Ok(true)
    }

    /// The earliest timer of state `name`.
    pub(crate) fn peek(&self, name: &str) -> Result<Option<Timer>> {
        if let Some(timers) = self.in_memory(name)? {
            return Ok(timers.peek(name));
        }
        self.queue(name)?;
        let queues = self.timer_queues().borrow();
        let first = queues.get(name).and_then(|queue| queue.heads.first());
        Ok(first.map(|(_, timer)| timer.clone()))
    }

    /// Removes and returns the timers of state `name` due at `until`, at most `limit`.
    ///
    /// The deletes go to the database as one batch, written before any refill (which must
    /// not see the fired timers) and at the end. Should a read or the write fail, the
    /// state's cache is dropped, to be rebuilt from the database on next use.
    pub(crate) fn poll(&self, name: &str, until: i64, limit: usize) -> Result<Vec<Timer>> {
        if let Some(mut timers) = self.in_memory(name)? {
            return timers.poll(name, until, limit);
        }
        let cf = self.queue(name)?;
        let mut queues = self.timer_queues().borrow_mut();
        let Some(TimerQueue {
            heads,
            groups,
            count,
        }) = queues.get_mut(name)
        else {
            return Ok(Vec::new());
        };
        let mut batch = WriteBatch::default();
        let write = |batch: WriteBatch| self.write("firing timers", |db, o| db.write_opt(batch, o));
        let fired = heads.poll(until, limit, |shard, _| {
            let group = &mut groups[shard];
            let key = group.keys.pop_first().ok_or_else(|| lost_cache(name))?;
            batch.delete_cf(&cf, &key);
            // Every other timer of the key group is above the one fired.
            group.floor = key;
            if let Some(count) = count {
                *count = count.saturating_sub(1);
            }
            if group.keys.is_empty() && !group.complete {
                write(std::mem::take(&mut batch))?;
                self.refill(&cf, group)?;
            }
            match group.keys.first() {
                Some(first) => Ok(Some(self.timer_keys().split(first)?.1)),
                None => Ok(None),
            }
        });
        let fired = fired.and_then(|fired| write(batch).map(|()| fired));
        if fired.is_err() {
            queues.remove(name);
        }
        fired
    }

    /// The number of timers of state `name`: counted with one scan on first request.
    pub(crate) fn count(&self, name: &str) -> Result<usize> {
        if let Some(timers) = self.in_memory(name)? {
            return Ok(timers.count(name));
        }
        let cf = self.queue(name)?;
        let mut queues = self.timer_queues().borrow_mut();
        let queue = queues.get_mut(name).ok_or_else(|| lost_cache(name))?;
        if let Some(count) = queue.count {
            return Ok(count);
        }
        let mut count = 0;
        self.scan(&cf, &[], |_, _| count += 1)?;
        queue.count = Some(count);
        Ok(count)
    }

    /// The timers of state `name` in `key_group`, earliest first.
    pub(crate) fn timers_in(&self, name: &str, key_group: KeyGroup) -> Result<Vec<Timer>> {
        let shard = self.shard_of(key_group)?;
        if let Some(timers) = self.in_memory(name)? {
            return timers.timers_in(name, shard);
        }
        let cf = self.queue(name)?;
        let prefix = key_group_start(key_group.get(), self.composite_key().prefix_bytes());
        let mut timers = Vec::new();
        let mut failure = None;
        self.scan(&cf, &prefix, |key, _| match self.timer_keys().split(key) {
            Ok((_, timer)) => timers.push(timer),
            Err(err) => {
                failure.get_or_insert(err);
            }
        })?;
        match failure {
            Some(err) => Err(err),
            None => Ok(timers),
        }
    }
}

//! Priority-queue (timer) states of the RocksDB backend.
//!
//! A timer state's column family holds one entry per timer: its
//! [timer key](state_format::timer) (key group, timestamp, key, namespace) and an empty
//! value, so one key group's timers are one key range in timestamp order, and full and
//! incremental snapshots, restores and rescaling treat the family like any other.
//!
//! Per state the backend caches each key group's earliest timer ([`TimerHeads`]) and the
//! number of timers, built with one seek per key group on first use: `peek` and
//! `timer_count` read no database, `add` compares with the cached head, and only removing
//! a key group's head seeks its next timer (Flink's `RocksDBCachingPriorityQueueSet`
//! caches a few head elements per key group for the same reason).

use std::collections::BTreeMap;
use std::sync::Arc;

use rocksdb::{BoundColumnFamily, ReadOptions};
use state_api::{Error, KeyGroup, Result, StateKind, Timer};
use state_format::timer::TimerHeads;

use crate::backend::{RocksDBKeyedStateBackend, db_error, key_group_start, prefix_successor};

/// What the backend caches of one timer state.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heads: TimerHeads,
    count: usize,
}

/// The caches of every timer state used since the backend opened, by state name.
pub(crate) type TimerQueues = BTreeMap<String, TimerQueue>;

impl RocksDBKeyedStateBackend {
    /// The column family of priority-queue state `name`, its cache built.
    fn queue(&self, name: &str) -> Result<Arc<BoundColumnFamily<'_>>> {
        let cf = self.state_cf(name, StateKind::PriorityQueue)?;
        if !self.timer_queues().borrow().contains_key(name) {
            let range = self.key_group_range();
            let mut queue = TimerQueue {
                heads: TimerHeads::new(range.len() as usize),
                count: 0,
            };
            for (shard, key_group) in range.iter().enumerate() {
                queue.heads.set(shard, self.first_timer(&cf, key_group)?);
            }
            self.scan(&cf, &[], |_, _| queue.count += 1)?;
            self.timer_queues()
                .borrow_mut()
                .insert(name.to_owned(), queue);
        }
        Ok(cf)
    }

    /// The earliest timer of `key_group` in `cf`: one seek.
    fn first_timer(
        &self,
        cf: &Arc<BoundColumnFamily<'_>>,
        key_group: KeyGroup,
    ) -> Result<Option<Timer>> {
        let prefix = key_group_start(key_group.get(), self.composite_key().prefix_bytes());
        let mut read = ReadOptions::default();
        if let Some(end) = prefix_successor(&prefix) {
            read.set_iterate_upper_bound(end);
        }
        read.set_iterate_lower_bound(prefix);
        let mut iter = self.db()?.raw_iterator_cf_opt(cf, read);
        iter.seek_to_first();
        let first = match iter.key() {
            Some(key) => Some(self.timer_keys().split(key)?.1),
            None => None,
        };
        iter.status()
            .map_err(db_error("seeking the earliest timer"))?;
        Ok(first)
    }

    /// The position of `key_group` in the backend's range.
    fn shard_of(&self, key_group: KeyGroup) -> Result<usize> {
        let range = self.key_group_range();
        range
            .position(key_group)
            .ok_or(Error::KeyGroupOutOfRange { key_group, range })
    }

    /// Adds (`add`) or removes `timer` from state `name`; whether that changed the queue.
    pub(crate) fn change_timer(&self, name: &str, timer: &Timer, add: bool) -> Result<bool> {
        let cf = self.queue(name)?;
        let key_group = self.params_key_group_of(&timer.key)?;
        let shard = self.shard_of(key_group)?;
        let keys = self.timer_keys();
        let key = keys.build(key_group, timer)?;
        let present = (self.db()?.get_pinned_cf(&cf, &key))
            .map_err(db_error("reading a timer"))?
            .is_some();
        if present == add {
            return Ok(false);
        }
        match add {
            true => self.write("adding a timer", |db, o| db.put_cf_opt(&cf, &key, [], o))?,
            false => self.write("removing a timer", |db, o| db.delete_cf_opt(&cf, &key, o))?,
        }
        let mut queues = self.timer_queues().borrow_mut();
        let Some(queue) = queues.get_mut(name) else {
            return Ok(true);
        };
        if add {
            queue.count += 1;
            let earlier = match queue.heads.head(shard) {
                Some(head) => key < keys.build(key_group, head)?,
                None => true,
            };
            if earlier {
                queue.heads.set(shard, Some(timer.clone()));
            }
        } else {
            queue.count -= 1;
            if queue.heads.head(shard) == Some(timer) {
                queue.heads.set(shard, self.first_timer(&cf, key_group)?);
            }
        }
        Ok(true)
    }

    /// The earliest timer of state `name`.
    pub(crate) fn peek(&self, name: &str) -> Result<Option<Timer>> {
        self.queue(name)?;
        let queues = self.timer_queues().borrow();
        let first = queues.get(name).and_then(|queue| queue.heads.first());
        Ok(first.map(|(_, timer)| timer.clone()))
    }

    /// Removes and returns the timers of state `name` due at `until`, at most `limit`.
    pub(crate) fn poll(&self, name: &str, until: i64, limit: usize) -> Result<Vec<Timer>> {
        let cf = self.queue(name)?;
        let mut queues = self.timer_queues().borrow_mut();
        let Some(TimerQueue { heads, count }) = queues.get_mut(name) else {
            return Ok(Vec::new());
        };
        let start = self.key_group_range().start().get();
        heads.poll(until, limit, |shard, head| {
            let key_group = KeyGroup::new(start + shard as u32)?;
            let key = self.timer_keys().build(key_group, head)?;
            self.write("removing a timer", |db, o| db.delete_cf_opt(&cf, &key, o))?;
            *count -= 1;
            self.first_timer(&cf, key_group)
        })
    }

    /// The number of timers of state `name`.
    pub(crate) fn count(&self, name: &str) -> Result<usize> {
        self.queue(name)?;
        let queues = self.timer_queues().borrow();
        Ok(queues.get(name).map_or(0, |queue| queue.count))
    }

    /// The timers of state `name` in `key_group`, earliest first.
    pub(crate) fn timers_in(&self, name: &str, key_group: KeyGroup) -> Result<Vec<Timer>> {
        let cf = self.queue(name)?;
        self.shard_of(key_group)?;
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

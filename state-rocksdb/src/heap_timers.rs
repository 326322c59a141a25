//! Timers of the RocksDB backend kept in memory (`rocksdb.timer-service.factory = heap`,
//! Flink's `HEAP` priority-queue state type).
//!
//! Each priority-queue state holds, per key group of the backend's range, a persistent
//! ordered set (a B-tree whose clone shares every node) of its timers'
//! [timer keys](state_format::timer): the bytes a timer column family would hold, in the
//! same order. A snapshot's synchronous part clones every set (O(states x key groups),
//! no timer copied); the full strategy writes the clones as it writes a column family,
//! and the incremental one writes them as a canonical key-group file next to the sst files
//! ([`crate::incremental`]), so every strategy snapshots heap timers asynchronously.
//! Restores move timers between heap and column-family storage either way.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use rocksdb::{DB, ReadOptions};
use state_api::{Error, KeyGroupRange, Result, StreamStateHandle, Timer};
use state_format::KeyGroupsStateHandle;
use state_format::key_groups::KeyGroupRangeOffsets;
use state_format::timer::{TimerHeads, TimerKey};

use crate::backend::{cf, cf_name, db_error};

/// One key group's timers, as timer keys.
pub(crate) type KeyGroupTimers = imbl::OrdSet<Arc<[u8]>>;

/// The timers of every in-memory priority-queue state at a snapshot's synchronous part,
/// by state name: per key group of the range, in order.
pub(crate) type HeapTimerSnapshot = BTreeMap<String, Vec<KeyGroupTimers>>;

/// One priority-queue state held in memory.
#[derive(Debug, Clone)]
struct HeapQueue {
    groups: Vec<KeyGroupTimers>,
    heads: TimerHeads,
}

/// The in-memory priority-queue states of a backend, by name.
#[derive(Debug)]
pub(crate) struct HeapTimers {
    queues: BTreeMap<String, HeapQueue>,
    keys: TimerKey,
    key_groups: usize,
}

impl HeapTimers {
    /// No states, for a range of `key_groups` key groups with timer keys `keys`.
    pub(crate) fn new(keys: TimerKey, key_groups: usize) -> Self {
        HeapTimers {
            queues: BTreeMap::new(),
            keys,
            key_groups,
        }
    }

    /// Makes state `name` known (empty) unless it is. The other methods treat a state
    /// never registered as empty.
    pub(crate) fn register(&mut self, name: &str) {
        if !self.queues.contains_key(name) {
            let queue = HeapQueue {
                groups: vec![KeyGroupTimers::new(); self.key_groups],
                heads: TimerHeads::new(self.key_groups),
            };
            self.queues.insert(name.to_owned(), queue);
        }
    }

    /// Adds (`add`) or removes the timer of timer key `key` in key group `shard` (the
    /// position in the range); whether that changed the queue.
    pub(crate) fn change(
        &mut self,
        name: &str,
        shard: usize,
        key: &[u8],
        add: bool,
    ) -> Result<bool> {
        let keys = self.keys;
        let Some(queue) = self.queues.get_mut(name) else {
            return Ok(false);
        };
        let Some(group) = queue.groups.get_mut(shard) else {
            return Ok(false);
        };
        let changed = match add {
            true => group.insert(Arc::from(key)).is_none(),
            false => group.remove(key).is_some(),
        };
        let first = group.get_min();
        // Only a change at the front moves the key group's head.
        if changed && first.is_none_or(|first| **first >= *key) {
            let head = first.map(|first| keys.split(first)).transpose()?;
            queue.heads.set(shard, head.map(|(_, timer)| timer));
        }
        Ok(changed)
    }

    /// Adds `timers`, timer keys of key group `shard` of state `name`, read by a restore.
    pub(crate) fn merge(&mut self, name: &str, shard: usize, timers: KeyGroupTimers) -> Result<()> {
        let keys = self.keys;
        let Some(queue) = self.queues.get_mut(name) else {
            return Ok(());
        };
        let Some(group) = queue.groups.get_mut(shard) else {
            return Ok(());
        };
        match group.is_empty() {
            true => *group = timers,
            false => group.extend(timers),
        }
        let head = group.get_min().map(|first| keys.split(first)).transpose()?;
        queue.heads.set(shard, head.map(|(_, timer)| timer));
        Ok(())
    }

    /// The earliest timer of state `name`.
    pub(crate) fn peek(&self, name: &str) -> Option<Timer> {
        let queue = self.queues.get(name)?;
        queue.heads.first().map(|(_, timer)| timer.clone())
    }

    /// Removes and returns the timers of state `name` due at `until`, at most `limit`,
    /// earliest first.
    pub(crate) fn poll(&mut self, name: &str, until: i64, limit: usize) -> Result<Vec<Timer>> {
        let keys = self.keys;
        let Some(HeapQueue { groups, heads }) = self.queues.get_mut(name) else {
            return Ok(Vec::new());
        };
        heads.poll(until, limit, |shard, _| {
            let group = &mut groups[shard];
            group.remove_min();
            let next = group.get_min().map(|first| keys.split(first));
            Ok(next.transpose()?.map(|(_, timer)| timer))
        })
    }

    /// The number of timers of state `name`.
    pub(crate) fn count(&self, name: &str) -> usize {
        let queue = self.queues.get(name);
        queue.map_or(0, |queue| {
            queue.groups.iter().map(KeyGroupTimers::len).sum()
        })
    }

    /// The timers of state `name` in key group `shard`, earliest first.
    pub(crate) fn timers_in(&self, name: &str, shard: usize) -> Result<Vec<Timer>> {
        let group = self
            .queues
            .get(name)
            .and_then(|queue| queue.groups.get(shard));
        (group.into_iter().flatten())
            .map(|key| Ok(self.keys.split(key)?.1))
            .collect()
    }

    /// Every state's timers now, sharing all nodes with the live sets.
    pub(crate) fn snapshot(&self) -> HeapTimerSnapshot {
        (self.queues.iter())
            .map(|(name, queue)| (name.clone(), queue.groups.clone()))
            .collect()
    }

    /// Adds the timers of state `name` that its column family in `db` holds for key groups
    /// of `range` (the backend's): a restore from a snapshot that kept them in RocksDB.
    pub(crate) fn read_family(&mut self, db: &DB, name: &str, range: KeyGroupRange) -> Result<()> {
        self.register(name);
        let family = cf(db, name)?;
        let keys = self.keys;
        let Some(queue) = self.queues.get_mut(name) else {
            return Ok(());
        };
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        let mut iter = db.raw_iterator_cf_opt(&family, read);
        iter.seek_to_first();
        while let Some(key) = iter.key() {
            let (key_group, _) = keys.split(key)?;
            // A database of another range's snapshot holds others' timers too.
            let shard = range.position(key_group);
            if let Some(group) = shard.and_then(|shard| queue.groups.get_mut(shard)) {
                group.insert(key.into());
            }
            iter.next();
        }
        iter.status().map_err(db_error(format_args!(
            "reading the timers of state `{name}`"
        )))?;
        for (shard, group) in queue.groups.iter().enumerate() {
            let head = group.get_min().map(|first| keys.split(first)).transpose()?;
            queue.heads.set(shard, head.map(|(_, timer)| timer));
        }
        Ok(())
    }

    /// [`read_family`](Self::read_family), then drops the column family: a database
    /// opened from a snapshot that kept timers in RocksDB, by a backend keeping them in
    /// memory.
    pub(crate) fn move_family(&mut self, db: &DB, name: &str, range: KeyGroupRange) -> Result<()> {
        self.read_family(db, name, range)?;
        db.drop_cf(&cf_name(name)).map_err(db_error(format_args!(
            "dropping the timer column family of state `{name}`"
        )))
    }

    /// Forgets every timer (the backend closed).
    pub(crate) fn clear(&mut self) {
        self.queues.clear();
    }
}

/// Name of the file of an incremental snapshot that holds the timers kept in memory: a
/// canonical key-group stream (header, then each key group of the range) of the
/// priority-queue states alone, uncompressed, uploaded as a private file.
pub(crate) const TIMERS_FILE: &str = "SNAPSTATE-TIMERS";

/// Tag of the timers section that follows the file manifest in an incremental snapshot's
/// meta data.
const TIMERS_SECTION: u8 = 1;

/// Where each key group of [`TIMERS_FILE`] starts and its checksum: the section the meta
/// data of an incremental snapshot with timers in memory ends with.
///
/// | field | type |
/// |---|---|
/// | tag | `u8` = 1 |
/// | key groups `n` | `u32`, the snapshot's range's |
/// | offsets | `n` x `u64` |
/// | checksums (CRC-32C of each key group's section) | `n` x `u32` |
///
/// All integers big-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimerFileIndex {
    pub(crate) offsets: Vec<u64>,
    pub(crate) checksums: Vec<u32>,
}

impl TimerFileIndex {
    /// Appends the section to `out`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.push(TIMERS_SECTION);
        // One offset per key group: at most 32,768.
        out.extend_from_slice(&(self.offsets.len() as u32).to_be_bytes());
        for offset in &self.offsets {
            out.extend_from_slice(&offset.to_be_bytes());
        }
        for checksum in &self.checksums {
            out.extend_from_slice(&checksum.to_be_bytes());
        }
    }

    /// Reads the section from what follows the manifest (`Ok(None)` when nothing does) and
    /// turns it into the key-groups handle of `file`, [`TIMERS_FILE`] of `size` bytes of a
    /// snapshot of `range`; `location` names the meta data in errors.
    pub(crate) fn read_handle(
        rest: &mut dyn Read,
        range: KeyGroupRange,
        file: impl FnOnce() -> Result<(Arc<dyn StreamStateHandle>, u64)>,
        location: &str,
    ) -> Result<Option<KeyGroupsStateHandle>> {
        let damaged = |reason: String| Error::Corrupted {
            what: format!("timers section of {location}"),
            reason,
        };
        let mut bytes = Vec::new();
        rest.read_to_end(&mut bytes)
            .map_err(|e| Error::stream(format!("reading {location}"), e))?;
        let Some((&tag, body)) = bytes.split_first() else {
            return Ok(None);
        };
        if tag != TIMERS_SECTION {
            return Err(damaged(format!("unknown section tag {tag}")));
        }
        let count = range.len() as usize;
        let expected = 4 + count * 12;
        if body.len() != expected {
            return Err(damaged(format!(
                "{} bytes, {expected} expected for the {count} key groups of {range}",
                body.len()
            )));
        }
        let (declared, body) = body.split_at(4);
        let declared = u32::from_be_bytes([declared[0], declared[1], declared[2], declared[3]]);
        if declared as usize != count {
            return Err(damaged(format!(
                "{declared} key groups, the snapshot is of {range}"
            )));
        }
        let (offsets, checksums) = body.split_at(count * 8);
        let offsets: Vec<u64> = (offsets.chunks_exact(8))
            .map(|chunk| u64::from_be_bytes(chunk.try_into().unwrap_or_default()))
            .collect();
        let checksums: Vec<u32> = (checksums.chunks_exact(4))
            .map(|chunk| u32::from_be_bytes(chunk.try_into().unwrap_or_default()))
            .collect();
        let (handle, size) = file()?;
        let offsets = KeyGroupRangeOffsets::with_offsets(range, offsets)?;
        let handle = KeyGroupsStateHandle::new(offsets, handle)
            .with_end(size)
            .with_checksums(checksums)?;
        Ok(Some(handle))
    }
}

//! Timers (the elements of priority-queue states) as every backend stores them and the
//! canonical format writes them, and [`TimerHeads`], the index that makes a key-grouped
//! priority queue's `peek` a look-up.
//!
//! # Timer keys
//!
//! A timer is stored as a key without a value, laid out so that one key group's timers
//! are one contiguous key range, ordered by timestamp:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | key group | 1 or 2 bytes | [`MaxParallelism::prefix_bytes`] |
//! | timestamp | 8 bytes | the `i64` timestamp as big-endian `u64` with the sign bit flipped, so that the bytes sort as the numbers do ([`timestamp_bytes`]) |
//! | key length | `u32` | |
//! | key | bytes | the serialized key |
//! | namespace length | `u32` | |
//! | namespace | bytes | the serialized namespace |
//!
//! RocksDB holds this layout in a timer state's column family; the canonical format's
//! stream rebuilds it for every entry of a priority-queue state
//! ([`crate::keyed_format`], version 4 on), so a savepoint's timers move between backends.
//! Timers of one timestamp sort by key length, then key bytes, then namespace: an order
//! the contract leaves to each backend.

use std::collections::BTreeSet;

use state_api::{Error, KeyGroup, MaxParallelism, Result, StateKind, Timer};

use crate::key_group_prefix::{read_key_group_prefix, write_key_group_prefix};

/// Bytes of a timestamp in a timer key.
pub const TIMESTAMP_BYTES: usize = 8;

/// [`Error::Incompatible`] for priority-queue state `name` used as value, list or map state:
/// what every backend answers then.
pub fn not_keyed_state(name: &str) -> Error {
    Error::Incompatible {
        what: format!("kind of state `{name}`"),
        held: StateKind::PriorityQueue.to_string(),
        requested: "value, list or map".into(),
    }
}

/// The bytes of `timestamp` in a timer key: they sort as the numbers do.
///
/// ```
/// use state_format::timer::timestamp_bytes;
/// assert!(timestamp_bytes(-1) < timestamp_bytes(0));
/// assert!(timestamp_bytes(i64::MIN) < timestamp_bytes(-1));
/// assert!(timestamp_bytes(1) < timestamp_bytes(i64::MAX));
/// ```
pub fn timestamp_bytes(timestamp: i64) -> [u8; TIMESTAMP_BYTES] {
    ((timestamp as u64) ^ (1 << 63)).to_be_bytes()
}

/// The timestamp [`timestamp_bytes`] wrote.
pub fn timestamp_from_bytes(bytes: [u8; TIMESTAMP_BYTES]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// Builds and splits [timer keys](self#timer-keys) of a job's number of key groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey {
    prefix_bytes: usize,
}

impl TimerKey {
    /// Timer keys for `max_parallelism` key groups (which fixes the prefix width).
    pub fn new(max_parallelism: MaxParallelism) -> Self {
        TimerKey {
            prefix_bytes: max_parallelism.prefix_bytes(),
        }
    }

    /// The timer key of `timer` in `key_group`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a key or namespace of 4 GiB or more.
    pub fn build(&self, key_group: KeyGroup, timer: &Timer) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.prefix_bytes + 16 + timer.key.len());
        write_key_group_prefix(key_group.get(), self.prefix_bytes, &mut out);
        out.extend_from_slice(&timestamp_bytes(timer.timestamp));
        for (what, bytes) in [("key", &timer.key), ("namespace", &timer.namespace)] {
            let len = u32::try_from(bytes.len()).map_err(|_| {
                Error::InvalidArgument(format!(
                    "a timer {what} of {} bytes: keys and namespaces must stay below 4 GiB",
                    bytes.len()
                ))
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// The key group and timer of a timer key.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when `bytes` are not a timer key of this prefix width.
    pub fn split(&self, bytes: &[u8]) -> Result<(KeyGroup, Timer)> {
        let corrupt = |reason: &str| Error::Corrupted {
            what: format!("timer key of {} bytes", bytes.len()),
            reason: reason.into(),
        };
        let prefix = read_key_group_prefix(bytes, self.prefix_bytes)?;
        let key_group = KeyGroup::new(prefix).map_err(|_| corrupt("key group above 32767"))?;
        let rest = &bytes[self.prefix_bytes..];
        let (timestamp, rest) = rest
            .split_first_chunk::<TIMESTAMP_BYTES>()
            .ok_or_else(|| corrupt("timestamp cut short"))?;
        let (key, rest) = take_length_prefixed(rest).ok_or_else(|| corrupt("key cut short"))?;
        let (namespace, rest) =
            take_length_prefixed(rest).ok_or_else(|| corrupt("namespace cut short"))?;
        if !rest.is_empty() {
            return Err(corrupt("bytes follow the namespace"));
        }
        let timer = Timer {
            timestamp: timestamp_from_bytes(*timestamp),
            key: key.to_vec(),
            namespace: namespace.to_vec(),
        };
        Ok((key_group, timer))
    }
}

fn take_length_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The earliest timer of each shard (key group) of a priority queue, and the earliest of
/// those: `peek` is a look-up, and a change to one key group's head costs O(log key groups),
/// as Flink's `KeyGroupPartitionedPriorityQueue` keeps a heap of its key groups' heads.
#[derive(Debug, Clone, Default)]
pub struct TimerHeads {
    heads: Vec<Option<Timer>>,
    order: BTreeSet<(Timer, usize)>,
}

impl TimerHeads {
    /// Heads of `shards` empty shards.
    pub fn new(shards: usize) -> Self {
        TimerHeads {
            heads: vec![None; shards],
            order: BTreeSet::new(),
        }
    }

    /// Records `head` as the earliest timer of `shard` (`None`: the shard is empty).
    pub fn set(&mut self, shard: usize, head: Option<Timer>) {
        let Some(slot) = self.heads.get_mut(shard) else {
            return;
        };
        if *slot == head {
            return;
        }
        if let Some(old) = slot.take() {
            self.order.remove(&(old, shard));
        }
        if let Some(new) = &head {
            self.order.insert((new.clone(), shard));
        }
        *slot = head;
    }

    /// The earliest timer of `shard`.
    pub fn head(&self, shard: usize) -> Option<&Timer> {
        self.heads.get(shard)?.as_ref()
    }

    /// The earliest timer of all shards, and its shard.
    pub fn first(&self) -> Option<(usize, &Timer)> {
        self.order.first().map(|(timer, shard)| (*shard, timer))
    }

    /// Removes and returns, earliest first, at most `limit` timers due at `until`:
    /// `remove(shard, timer)` takes the head `timer` out of `shard` and returns the shard's
    /// new head.
    ///
    /// # Errors
    ///
    /// Those of `remove`; the timers removed before it failed stay removed.
    pub fn poll(
        &mut self,
        until: i64,
        limit: usize,
        mut remove: impl FnMut(usize, &Timer) -> Result<Option<Timer>>,
    ) -> Result<Vec<Timer>> {
        let mut due = Vec::new();
        while due.len() < limit {
            let Some((shard, head)) = self.first() else {
                break;
            };
            if head.timestamp > until {
                break;
            }
            let head = head.clone();
            let next = remove(shard, &head)?;
            self.set(shard, next);
            due.push(head);
        }
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(timestamp: i64, key: &[u8]) -> Timer {
        Timer {
            timestamp,
            key: key.to_vec(),
            namespace: b"w".to_vec(),
        }
    }

    #[test]
    fn timer_keys_round_trip_and_sort_by_time_within_a_key_group() {
        let keys = TimerKey::new(MaxParallelism::new(300).unwrap());
        let group = KeyGroup::new(257).unwrap();
        let times = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let built: Vec<Vec<u8>> = times
            .iter()
            .map(|&t| keys.build(group, &timer(t, b"zz")).unwrap())
            .collect();
        assert!(built.windows(2).all(|pair| pair[0] < pair[1]));
        for (bytes, &t) in built.iter().zip(&times) {
            assert_eq!(keys.split(bytes).unwrap(), (group, timer(t, b"zz")));
        }
        let mut cut = built[3].clone();
        cut.pop();
        assert!(matches!(keys.split(&cut), Err(Error::Corrupted { .. })));
    }

    #[test]
    fn heads_poll_the_earliest_timers_across_shards() {
        let mut shards: Vec<BTreeSet<Timer>> = vec![BTreeSet::new(); 3];
        let mut heads = TimerHeads::new(3);
        for (shard, t) in [(0, 5), (1, 3), (2, 9), (0, 1), (1, 4)] {
            shards[shard].insert(timer(t, b"k"));
            heads.set(shard, shards[shard].first().cloned());
        }
        assert_eq!(heads.first().map(|(s, t)| (s, t.timestamp)), Some((0, 1)));
        let due = heads
            .poll(5, usize::MAX, |shard, head| {
                shards[shard].remove(head);
                Ok(shards[shard].first().cloned())
            })
            .unwrap();
        let times: Vec<i64> = due.iter().map(|t| t.timestamp).collect();
        assert_eq!(times, [1, 3, 4, 5]);
        assert_eq!(heads.first().map(|(s, t)| (s, t.timestamp)), Some((2, 9)));
        assert_eq!(heads.head(0), None);
    }
}

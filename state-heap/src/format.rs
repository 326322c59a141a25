//! How heap state maps onto the entries of the canonical keyed format
//! ([`state_format::keyed_format`]), which this crate writes and reads through `state-api`'s
//! one implementation, so that a heap savepoint restores into any keyed backend and back.
//!
//! # Heap state keys
//!
//! Each state's per-key-group map is keyed by the *state key*: the composite key of the
//! canonical format without its key-group prefix (the shard is the key group) and without a
//! user key.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | key length | `u32` (big-endian) | |
//! | key | bytes | the serialized key |
//! | namespace length | `u32` (big-endian) | |
//! | namespace | bytes | the serialized namespace |
//!
//! # Entries written per key group
//!
//! States are written in registration order (their header ids); within a state, entries
//! come in the map's iteration order (restore does not depend on it).
//!
//! | state kind | heap entry | canonical key | canonical value |
//! |---|---|---|---|
//! | value | state key -> value | prefix ‖ state key | the value |
//! | list | state key -> elements | prefix ‖ state key | the elements, each as `u32` length and bytes ([`encode_list`]) |
//! | map | state key -> (user key -> value) | prefix ‖ state key ‖ user key, one entry per user key | the map value |
//! | priority queue | per key group an ordered set of (timestamp, state key) | prefix ‖ timestamp ‖ state key ([timer key](state_format::timer)) | empty |
//!
//! Empty lists and empty maps are never stored (removing the last element or user key
//! removes the entry), so nothing empty is written either.
//!
//! # Delta entries
//!
//! The delta files of `heap-incremental` checkpoints ([`crate::HeapIncrementalSnapshotStrategy`])
//! are keyed snapshot streams of the same format, header and checksums included, whose
//! entries are changes: the canonical composite key as above, and a value that starts with
//! an operation byte.
//!
//! | operation | first value byte | key | rest of the value | restore |
//! |---|---|---|---|---|
//! | put | [`DELTA_PUT`] (0) | the canonical key | the canonical value | sets the entry |
//! | delete | [`DELTA_DELETE`] (1) | the canonical key | nothing | removes the entry (a map's user key; a value; a whole list; a timer) |
//! | clear | [`DELTA_CLEAR`] (2) | prefix ‖ state key, no user key (map states only) | nothing | removes every user key of that key and namespace |
//!
//! Within a key group a clear comes before the puts of the same map, and restore applies
//! a file's entries in order, files in chain order, so the last change wins.

use std::sync::Arc;

use state_api::{Error, Result};
use state_format::key_group_prefix::write_key_group_prefix;
use state_format::keyed_format::{
    CompositeKey, KeyGroupEntryWriter, KeyedEntry, decode_list, encode_list,
};
use state_format::timer::{timestamp_bytes, timestamp_from_bytes};

use crate::changes::{MergedChanges, Segment, merged};
use crate::table::{Bytes, CowMap, ListValue, Shards, StateTable, TimerEntry};

/// First value byte of a delta entry that sets the entry.
pub const DELTA_PUT: u8 = 0;
/// First value byte of a delta entry that removes the entry.
pub const DELTA_DELETE: u8 = 1;
/// First value byte of a delta entry that removes every user key of a map.
pub const DELTA_CLEAR: u8 = 2;

/// Appends the part of a state key that depends on the key alone (its length and bytes).
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a key of 4 GiB or more.
pub(crate) fn key_part_into(key: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(&length("key", key.len())?.to_be_bytes());
    out.extend_from_slice(key);
    Ok(())
}

/// Appends the namespace part of a state key to `out`, which holds the key part.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a namespace of 4 GiB or more.
pub(crate) fn namespace_part_into(namespace: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(&length("namespace", namespace.len())?.to_be_bytes());
    out.extend_from_slice(namespace);
    Ok(())
}

fn length(what: &str, len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        Error::InvalidArgument(format!(
            "a {what} of {len} bytes: keys and namespaces must stay below 4 GiB"
        ))
    })
}

/// The (key, namespace) of a state key.
pub(crate) fn split_state_key(state_key: &[u8]) -> Option<(&[u8], &[u8])> {
    let (key, rest) = take_length_prefixed(state_key)?;
    let (namespace, rest) = take_length_prefixed(rest)?;
    rest.is_empty().then_some((key, namespace))
}

fn take_length_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let rest = &bytes[4..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Scratch buffers reused across the entries of a snapshot.
#[derive(Debug, Default)]
pub(crate) struct EntryBuffers {
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Entries whose bytes are loaded together before they are encoded.
const PREFETCH_BATCH: usize = 32;

/// Cache lines of one entry that [`prefetch`] asks for, from its start; the processor's
/// own prefetcher follows a longer one.
const PREFETCH_LINES: usize = 4;

/// Starts loading the bytes of each of `slices` into the cache, without waiting for them.
///
/// Entries live in allocations all over the heap, so encoding them one by one waits for a
/// cache miss per entry. The snapshot encodes entries in batches and calls this for the
/// next batch before it encodes the current one, so the misses of one batch are served
/// while the other is encoded (at 10,000,000 keys, waiting for them had been about a
/// quarter of the encoding threads' time).
#[cfg(target_arch = "x86_64")]
fn prefetch<'a>(slices: impl Iterator<Item = &'a [u8]>) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    for bytes in slices {
        let start = bytes.as_ptr() as usize & !63;
        let end = (bytes.as_ptr() as usize).saturating_add(bytes.len());
        for line in (start..end).step_by(64).take(PREFETCH_LINES) {
            // SAFETY: a prefetch is a hint that never faults and reads nothing the
            // program sees; the addresses are those of a live slice anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
        }
    }
}

/// Loads the first and last byte of each of `slices` (where the target has no prefetch
/// instruction of ours): the loads are independent, so the processor has a batch's
/// misses in flight at once, though it waits for them before encoding.
#[cfg(not(target_arch = "x86_64"))]
fn prefetch<'a>(slices: impl Iterator<Item = &'a [u8]>) {
    let mut sum = 0u8;
    for bytes in slices {
        sum ^= bytes.first().copied().unwrap_or(0) ^ bytes.last().copied().unwrap_or(0);
    }
    std::hint::black_box(sum);
}

/// Sets a buffer to the canonical key of a state key in `group`'s key group: the
/// key-group prefix, then the state key.
fn key_starter(group: &KeyGroupEntryWriter<'_>) -> impl Fn(&mut Vec<u8>, &[u8]) + use<> {
    let key_group = group.key_group();
    let prefix_bytes = group.composite_key().prefix_bytes();
    move |key: &mut Vec<u8>, state_key: &[u8]| {
        key.clear();
        write_key_group_prefix(key_group.get(), prefix_bytes, key);
        key.extend_from_slice(state_key);
    }
}

/// Writes the entries of shard `shard` of every state into `group`.
pub(crate) fn write_key_group(
    states: &[StateTable],
    shard: usize,
    group: &mut KeyGroupEntryWriter<'_>,
    buffers: &mut EntryBuffers,
) -> Result<()> {
    let start_key = key_starter(group);
    let EntryBuffers { key, value } = buffers;
    for (id, state) in states.iter().enumerate() {
        // Header ids are registration positions, below `MAX_STATES` (checked on register).
        let id = id as u16;
        match &state.shards {
            Shards::Value(shards) => {
                // The next batch is prefetched while the current one is encoded.
                let mut entries = shards[shard].entries();
                let mut next = Vec::with_capacity(PREFETCH_BATCH);
                let mut batch = Vec::with_capacity(PREFETCH_BATCH);
                batch.extend(entries.by_ref().take(PREFETCH_BATCH));
                prefetch(batch.iter().map(|entry| entry.stored()));
                while !batch.is_empty() {
                    next.extend(entries.by_ref().take(PREFETCH_BATCH));
                    prefetch(next.iter().map(|entry| entry.stored()));
                    for entry in batch.drain(..) {
                        start_key(key, entry.key());
                        group.write_entry(id, key, entry.value())?;
                    }
                    std::mem::swap(&mut batch, &mut next);
                }
            }
            Shards::List(shards) => {
                for (state_key, elements) in shards[shard].iter() {
                    start_key(key, state_key);
                    value.clear();
                    encode_list(elements.iter().map(|element| &**element), value)?;
                    group.write_entry(id, key, value)?;
                }
            }
            Shards::Map(shards) => {
                for (state_key, entries) in shards[shard].iter() {
                    for (user_key, stored) in entries.iter() {
                        start_key(key, state_key);
                        key.extend_from_slice(user_key);
                        group.write_entry(id, key, stored)?;
                    }
                }
            }
            Shards::Timers(shards) => {
                for timer in shards[shard].iter() {
                    timer_key(key, group, timer.timestamp, &timer.state_key);
                    group.write_entry(id, key, &[])?;
                }
            }
        }
    }
    Ok(())
}

/// Sets `key` to the [timer key](state_format::timer) of a timer in `group`'s key group.
fn timer_key(key: &mut Vec<u8>, group: &KeyGroupEntryWriter<'_>, timestamp: i64, state_key: &[u8]) {
    key.clear();
    let prefix_bytes = group.composite_key().prefix_bytes();
    write_key_group_prefix(group.key_group().get(), prefix_bytes, key);
    key.extend_from_slice(&timestamp_bytes(timestamp));
    key.extend_from_slice(state_key);
}

/// The timer of a timer key read from a snapshot.
fn timer_entry(composite: CompositeKey, key: &[u8], state: &StateTable) -> Result<TimerEntry> {
    let corrupt = || Error::Corrupted {
        what: format!("timer of state `{}`", state.meta.name),
        reason: format!("a timer key of {} bytes does not split", key.len()),
    };
    let rest = key.get(composite.prefix_bytes()..).ok_or_else(corrupt)?;
    let (timestamp, state_key) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
    split_state_key(state_key).ok_or_else(corrupt)?;
    Ok(TimerEntry {
        timestamp: timestamp_from_bytes(*timestamp),
        state_key: Arc::from(state_key),
    })
}

/// Puts one entry read from a snapshot into shard `shard` of `state`.
pub(crate) fn restore_entry(
    state: &mut StateTable,
    shard: usize,
    composite: CompositeKey,
    entry: KeyedEntry<'_>,
) -> Result<()> {
    if let Shards::Timers(_) = &state.shards {
        let timer = timer_entry(composite, entry.key, state)?;
        if !entry.value.is_empty() {
            return Err(Error::Corrupted {
                what: format!("timer of state `{}`", state.meta.name),
                reason: format!("it carries a value of {} bytes", entry.value.len()),
            });
        }
        if let Shards::Timers(shards) = &mut state.shards {
            shards[shard].insert(timer);
        }
        return Ok(());
    }
    let parts = composite.split(entry.key)?;
    let state_key_len = 8 + parts.key.len() + parts.namespace.len();
    let prefix_bytes = composite.prefix_bytes();
    let state_key_bytes = &entry.key[prefix_bytes..prefix_bytes + state_key_len];
    let state_key = || -> Bytes { Arc::from(state_key_bytes) };
    let not_a_map = || Error::Corrupted {
        what: format!("entry of {} state `{}`", state.meta.kind, state.meta.name),
        reason: "the key carries a user key".into(),
    };
    match &mut state.shards {
        Shards::Value(shards) => {
            if !parts.user_key.is_empty() {
                return Err(not_a_map());
            }
            shards[shard].set(state_key_bytes, entry.value);
        }
        Shards::List(shards) => {
            if !parts.user_key.is_empty() {
                return Err(not_a_map());
            }
            let elements: ListValue = Arc::new(
                decode_list(entry.value)?
                    .into_iter()
                    .map(Arc::from)
                    .collect(),
            );
            if !elements.is_empty() {
                shards[shard].insert(state_key(), elements);
            }
        }
        Shards::Map(shards) => {
            let user_key: Bytes = Arc::from(parts.user_key);
            let value: Bytes = Arc::from(entry.value);
            match shards[shard].get_mut(state_key_bytes) {
                Some(entries) => {
                    entries.insert(user_key, value);
                }
                None => {
                    shards[shard].insert(state_key(), imbl::HashMap::unit(user_key, value));
                }
            }
        }
        Shards::Timers(_) => {}
    }
    Ok(())
}

/// Writes the changes of `segments` to shard `shard` of every state into `group`: each
/// changed entry's current value in `states` (the snapshot version) or a tombstone.
pub(crate) fn write_delta_key_group(
    states: &[StateTable],
    segments: &[std::sync::Arc<Segment>],
    shard: usize,
    group: &mut KeyGroupEntryWriter<'_>,
    buffers: &mut EntryBuffers,
) -> Result<()> {
    let start_key = key_starter(group);
    let EntryBuffers { key, value } = buffers;
    let put = |value: &mut Vec<u8>, bytes: &[u8]| {
        value.clear();
        value.push(DELTA_PUT);
        value.extend_from_slice(bytes);
    };
    for (id, state) in states.iter().enumerate() {
        let Some(changes) = merged(segments, id, shard) else {
            continue;
        };
        // Header ids are registration positions, below `MAX_STATES` (checked on register).
        let id = id as u16;
        match (&state.shards, changes) {
            (Shards::Value(shards), MergedChanges::Keys(keys)) => {
                for state_key in keys {
                    start_key(key, state_key);
                    match shards[shard].value(state_key) {
                        Some(stored) => put(value, stored),
                        None => *value = vec![DELTA_DELETE],
                    }
                    group.write_entry(id, key, value)?;
                }
            }
            (Shards::List(shards), MergedChanges::Keys(keys)) => {
                for state_key in keys {
                    start_key(key, state_key);
                    value.clear();
                    match shards[shard].get(state_key) {
                        Some(elements) => {
                            value.push(DELTA_PUT);
                            encode_list(elements.iter().map(|element| &**element), value)?;
                        }
                        None => value.push(DELTA_DELETE),
                    }
                    group.write_entry(id, key, value)?;
                }
            }
            (Shards::Map(shards), MergedChanges::Map(maps)) => {
                for (state_key, change) in maps {
                    let current = shards[shard].get(state_key);
                    if change.cleared {
                        start_key(key, state_key);
                        group.write_entry(id, key, &[DELTA_CLEAR])?;
                        for (user_key, stored) in current.into_iter().flat_map(CowMap::iter) {
                            start_key(key, state_key);
                            key.extend_from_slice(user_key);
                            put(value, stored);
                            group.write_entry(id, key, value)?;
                        }
                        continue;
                    }
                    for user_key in change.user_keys {
                        start_key(key, state_key);
                        key.extend_from_slice(user_key);
                        match current.and_then(|entries| entries.get(user_key)) {
                            Some(stored) => put(value, stored),
                            None => *value = vec![DELTA_DELETE],
                        }
                        group.write_entry(id, key, value)?;
                    }
                }
            }
            (Shards::Timers(shards), MergedChanges::Keys(timers)) => {
                for recorded in timers {
                    let Some((timestamp, state_key)) = recorded.split_first_chunk::<8>() else {
                        continue;
                    };
                    let timestamp = timestamp_from_bytes(*timestamp);
                    timer_key(key, group, timestamp, state_key);
                    let timer = TimerEntry {
                        timestamp,
                        state_key: Arc::from(state_key),
                    };
                    let operation = match shards[shard].contains(&timer) {
                        true => DELTA_PUT,
                        false => DELTA_DELETE,
                    };
                    group.write_entry(id, key, &[operation])?;
                }
            }
            // The log records by the kind of the state written to.
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "changes of state `{}` do not match its kind {}",
                    state.meta.name, state.meta.kind
                )));
            }
        }
    }
    Ok(())
}

/// Applies one delta entry read from a delta file to shard `shard` of `state`.
pub(crate) fn apply_delta_entry(
    state: &mut StateTable,
    shard: usize,
    composite: CompositeKey,
    entry: KeyedEntry<'_>,
) -> Result<()> {
    let Some((&operation, rest)) = entry.value.split_first() else {
        return Err(Error::Corrupted {
            what: format!("delta entry of state `{}`", state.meta.name),
            reason: "the value has no operation byte".into(),
        });
    };
    if let Shards::Timers(_) = &state.shards {
        let timer = timer_entry(composite, entry.key, state)?;
        let name = &state.meta.name;
        let Shards::Timers(shards) = &mut state.shards else {
            return Ok(());
        };
        match (operation, rest.is_empty()) {
            (DELTA_PUT, true) => shards[shard].insert(timer),
            (DELTA_DELETE, true) => shards[shard].remove(&timer),
            _ => {
                return Err(Error::Corrupted {
                    what: format!("delta entry of timer state `{name}`"),
                    reason: format!("operation {operation} with {} value bytes", rest.len()),
                });
            }
        };
        return Ok(());
    }
    let parts = composite.split(entry.key)?;
    let prefix_bytes = composite.prefix_bytes();
    let state_key =
        &entry.key[prefix_bytes..prefix_bytes + 8 + parts.key.len() + parts.namespace.len()];
    let invalid = |reason: String| Error::Corrupted {
        what: format!(
            "delta entry of {} state `{}`",
            state.meta.kind, state.meta.name
        ),
        reason,
    };
    if operation == DELTA_PUT {
        return restore_entry(
            state,
            shard,
            composite,
            KeyedEntry {
                value: rest,
                ..entry
            },
        );
    }
    if !rest.is_empty() {
        return Err(invalid(format!(
            "operation {operation} carries {} value bytes",
            rest.len()
        )));
    }
    match (&mut state.shards, operation) {
        (Shards::Value(shards), DELTA_DELETE) if parts.user_key.is_empty() => {
            shards[shard].remove(state_key);
        }
        (Shards::List(shards), DELTA_DELETE) if parts.user_key.is_empty() => {
            shards[shard].remove(state_key);
        }
        (Shards::Map(shards), DELTA_DELETE) => {
            let now_empty = match shards[shard].get_mut(state_key) {
                Some(entries) => {
                    entries.remove(parts.user_key);
                    entries.is_empty()
                }
                None => false,
            };
            if now_empty {
                shards[shard].remove(state_key);
            }
        }
        (Shards::Map(shards), DELTA_CLEAR) if parts.user_key.is_empty() => {
            shards[shard].remove(state_key);
        }
        _ => {
            return Err(invalid(format!(
                "operation {operation} does not apply to this key"
            )));
        }
    }
    Ok(())
}

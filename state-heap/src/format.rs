//! How heap state maps onto the entries of the canonical keyed format
//! ([`state_api::keyed_format`]), which this crate writes and reads through `state-api`'s
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
//!
//! Empty lists and empty maps are never stored (removing the last element or user key
//! removes the entry), so nothing empty is written either.

use std::sync::Arc;

use state_api::key_group::KeyGroupRangeAssignment;
use state_api::keyed_format::{
    CompositeKey, KeyGroupEntryWriter, KeyedEntry, decode_list, encode_list,
};
use state_api::{Error, Result};

use crate::table::{Bytes, ListValue, Shards, StateTable};

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

/// Writes the entries of shard `shard` of every state into `group`.
pub(crate) fn write_key_group(
    states: &[StateTable],
    shard: usize,
    group: &mut KeyGroupEntryWriter<'_>,
    buffers: &mut EntryBuffers,
) -> Result<()> {
    let key_group = group.key_group();
    let prefix_bytes = group.composite_key().prefix_bytes();
    let EntryBuffers { key, value } = buffers;
    let start_key = |key: &mut Vec<u8>, state_key: &[u8]| {
        key.clear();
        KeyGroupRangeAssignment::write_key_group_prefix(key_group, prefix_bytes, key);
        key.extend_from_slice(state_key);
    };
    for (id, state) in states.iter().enumerate() {
        // Header ids are registration positions, below `MAX_STATES` (checked on register).
        let id = id as u16;
        match &state.shards {
            Shards::Value(shards) => {
                for (state_key, stored) in shards[shard].iter() {
                    start_key(key, state_key);
                    group.write_entry(id, key, stored)?;
                }
            }
            Shards::List(shards) => {
                for (state_key, elements) in shards[shard].iter() {
                    start_key(key, state_key);
                    value.clear();
                    encode_list(elements.iter().map(|element| &**element), value);
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
        }
    }
    Ok(())
}

/// Puts one entry read from a snapshot into shard `shard` of `state`.
pub(crate) fn restore_entry(
    state: &mut StateTable,
    shard: usize,
    composite: CompositeKey,
    entry: KeyedEntry<'_>,
) -> Result<()> {
    let parts = composite.split(entry.key)?;
    let state_key_len = 8 + parts.key.len() + parts.namespace.len();
    let prefix_bytes = composite.prefix_bytes();
    let state_key: Bytes = Arc::from(&entry.key[prefix_bytes..prefix_bytes + state_key_len]);
    let not_a_map = || Error::Corrupted {
        what: format!("entry of {} state `{}`", state.meta.kind, state.meta.name),
        reason: "the key carries a user key".into(),
    };
    match &mut state.shards {
        Shards::Value(shards) => {
            if !parts.user_key.is_empty() {
                return Err(not_a_map());
            }
            shards[shard].insert(state_key, Arc::from(entry.value));
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
                shards[shard].insert(state_key, elements);
            }
        }
        Shards::Map(shards) => {
            let user_key: Bytes = Arc::from(parts.user_key);
            let value: Bytes = Arc::from(entry.value);
            match shards[shard].get_mut(&state_key) {
                Some(entries) => {
                    entries.insert(user_key, value);
                }
                None => {
                    shards[shard].insert(state_key, imbl::HashMap::unit(user_key, value));
                }
            }
        }
    }
    Ok(())
}

//! A writer of version 2's key-group data (`u32` lengths around whole composite keys and
//! values), for tests: this build writes the current version only, and streams of older
//! versions must still read.

use std::sync::Arc;

use state_api::{ByteStreamStateHandle, KeyGroup, KeyGroupRange};

use super::{END_OF_KEY_GROUP_MARK, META_DATA_FOLLOWS};
use crate::{KeyGroupRangeOffsets, KeyGroupsStateHandle, KeyedBackendSerializationProxy};

/// Entries of one key group: state id, composite key, value; those of a state together.
pub(crate) type GroupEntries = Vec<(u16, Vec<u8>, Vec<u8>)>;

/// A version-2 stream of `header` (whose decorator must be `none`) over `range`, each key
/// group holding `entries(key_group)`, as version 2 wrote it; its handle records the
/// offsets, the checksums and the end.
pub(crate) fn write_version_2(
    header: &KeyedBackendSerializationProxy,
    range: KeyGroupRange,
    entries: impl Fn(KeyGroup) -> GroupEntries,
) -> KeyGroupsStateHandle {
    assert_eq!(
        header.compression(),
        "none",
        "sections are written as they are"
    );
    // Version 2's body: no time to live per state, no repeated version at its end.
    let mut body = Vec::new();
    let string = |body: &mut Vec<u8>, value: &str| {
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value.as_bytes());
    };
    string(&mut body, header.key_serializer());
    string(&mut body, header.compression());
    let max_parallelism = header
        .max_parallelism()
        .expect("a header made by this build");
    body.extend_from_slice(&max_parallelism.get().to_be_bytes());
    body.extend_from_slice(&(header.states().len() as u16).to_be_bytes());
    for state in header.states() {
        assert!(state.ttl.is_none(), "version 2 has no time to live");
        string(&mut body, &state.name);
        body.push(state.kind.code());
        string(&mut body, &state.namespace_serializer);
        string(&mut body, &state.value_serializer);
        string(&mut body, &state.user_key_serializer);
    }
    let body = &body[..];
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&crate::proxy::MAGIC.to_be_bytes());
    bytes.extend_from_slice(&2u32.to_be_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    let mut offsets = KeyGroupRangeOffsets::new(range);
    let mut checksums = Vec::new();
    for key_group in range.iter() {
        offsets
            .set_offset(key_group, bytes.len() as u64)
            .expect("the key group is in the range");
        let section_start = bytes.len();
        bytes.extend_from_slice(&key_group.get().to_be_bytes());
        let group = entries(key_group);
        let mut previous_state = None;
        let mut last_key = None;
        for (state, key, value) in &group {
            if previous_state != Some(*state) {
                if let Some(position) = last_key {
                    bytes[position] |= META_DATA_FOLLOWS;
                }
                bytes.extend_from_slice(&state.to_be_bytes());
                previous_state = Some(*state);
            }
            bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
            last_key = Some(bytes.len());
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
            bytes.extend_from_slice(value);
        }
        if let Some(position) = last_key {
            bytes[position] |= META_DATA_FOLLOWS;
        }
        bytes.extend_from_slice(&END_OF_KEY_GROUP_MARK.to_be_bytes());
        checksums.push(crc32c::crc32c(&bytes[section_start..]));
    }
    let end = bytes.len() as u64;
    let stream = Arc::new(ByteStreamStateHandle::new("version 2", bytes));
    KeyGroupsStateHandle::new(offsets, stream)
        .with_end(end)
        .with_checksums(checksums)
        .expect("one checksum per key group")
}

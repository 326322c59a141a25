//! The canonical keyed snapshot format: the one writer ([`KeyedSnapshotWriter`]) and the one
//! reader ([`KeyedSnapshotReader`]) of the key-group data that full snapshots and savepoints
//! of every keyed backend consist of. Backends feed entries in and take entries out; none
//! carries its own copy of the format, so a savepoint moves between backends.
//!
//! An *entry* is a key/value pair of one state, laid out as RocksDB stores it: the
//! [composite key](CompositeKey) starts with the key-group prefix, so that one key group is
//! one contiguous key range.
//!
//! # Format
//!
//! This is the one place the key-group format is written down. Fixed-width integers are
//! big-endian; a *varint* is a variable-length `u32` (see [below](#varints)).
//!
//! The stream:
//!
//! | part | meaning |
//! |---|---|
//! | header | a [`KeyedBackendSerializationProxy`] (version, states, serializers, compression) |
//! | key group *s* | the section of the range's first key group |
//! | ... | one section per key group of the range, in key-group order, empty ones included |
//!
//! The offset of every section is recorded in the [`KeyGroupsStateHandle`]'s
//! [`KeyGroupRangeOffsets`], with a CRC-32C per key group. A section:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | key group | `u32` | the key group's id, not compressed |
//! | data | | the fields below, through the compression decorator named in the header, one compressed stream per section |
//!
//! The data of a section (versions 3 and 4):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | first state | `u16` | the id (position in the header) of the first state with entries here, or [`END_OF_KEY_GROUP_MARK`] for an empty key group |
//! | per entry: key | see the next table | the entry's composite key, compactly; the top bit of its first byte is the *meta data follows* flag ([`META_DATA_FOLLOWS`]) |
//! | per entry: value length | varint | |
//! | per entry: value | bytes | see the value layouts below |
//! | after a flagged entry | `u16` | the id of the next state with entries, or [`END_OF_KEY_GROUP_MARK`] |
//!
//! An entry's key in the data (version 3): the fields of its [composite key](CompositeKey),
//! each length a varint.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | key group | 1 or 2 bytes | the composite key's key-group prefix ([`MaxParallelism::prefix_bytes`]), flag in the top bit of its first byte |
//! | timestamp | 8 bytes | priority-queue states only: the timer's timestamp as its [timer key](crate::timer) holds it |
//! | key length | varint | |
//! | key | bytes | the serialized key |
//! | namespace length | varint | |
//! | namespace | bytes | the serialized namespace |
//! | user-key length | varint | map states only (the kind the header records for the entry's state) |
//! | user key | bytes | map states only: the serialized user key |
//!
//! A timer (an entry of a priority-queue state) has a [timer key](crate::timer) as its
//! composite key, ordered by time within its key group, and an empty value in full
//! snapshots (restore checks it).
//!
//! A value or list state's key ends with its namespace: its composite key has no user key,
//! and the writer refuses one that has. The reader rebuilds the composite key, `u32`
//! lengths and all, from these fields, so a backend is handed the same key bytes whichever
//! version wrote the snapshot. An entry of the benchmark's workload (an 8-byte key, the
//! empty namespace, a 100-byte value, a 1-byte prefix) takes 1 + 1 + 8 + 1 + 0 + 1 + 100 =
//! 112 bytes.
//!
//! Entries of one state are contiguous; each state appears at most once per key group. The
//! last entry of each state has the flag set in its key, and a `u16` follows it. The
//! flag cannot clash with key bytes: a key starts with its key-group prefix, whose top bit
//! is always clear (key groups are below 32768).
//!
//! The checksum of a key group is the CRC-32C of its id (the 4 bytes of the section's
//! first field) followed by the section's data bytes exactly as the table lays them out
//! before compression, from the first state id up to and including the end mark: state
//! ids, varints, the compact keys with their flag bits as written, values. (Not the
//! composite keys the reader rebuilds from them.) It is taken before compression so that a
//! reader verifies it while decoding, whatever the decorator.
//!
//! A section ends where the next one starts; the last ends at the end of the stream, which
//! the handle records ([`KeyGroupsStateHandle::section_end`]). The reader reads every
//! section to that end after the end mark, so the decorator checks its own trailer (LZ4's
//! end mark and content checksum) and a stream that lost bytes after the last end mark is
//! reported instead of silently accepted.
//!
//! ## Varints
//!
//! Unsigned LEB128 of a `u32`: seven bits per byte, least significant group first, the
//! top bit (`0x80`) set on every byte but the last. A value below 128 takes one byte, any
//! `u32` at most 5. Only the shortest form is valid: a reader refuses a varint whose last
//! byte is `0x00` after other bytes, one that runs past 5 bytes and one above `u32::MAX`
//! ([`Error::Corrupted`]).
//!
//! ## Composite keys
//!
//! The layout in which backends store and exchange keys ([`CompositeKey`]); RocksDB's
//! column families and the heap's maps hold it, so it does not change with the stream's
//! version.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | key group | 1 or 2 bytes | [`MaxParallelism::prefix_bytes`] |
//! | key length | `u32` | |
//! | key | bytes | the serialized key |
//! | namespace length | `u32` | |
//! | namespace | bytes | the serialized namespace |
//! | user key | bytes | map states only: the serialized user key, to the end of the composite key |
//!
//! Values: a value state's entry holds the serialized value; a map state's entry the
//! serialized map value of one user key; a list state's entry the whole list, each element
//! as a `u32` length and its bytes ([`encode_list`], [`decode_list`]: RocksDB stores list
//! values and merges their operands in this layout, so it is the same in every version).
//!
//! # Versions
//!
//! The format is versioned with the header ([`crate::proxy::CURRENT_VERSION`]): any change
//! to these tables increments it. The reader reads the key-group data of every version the
//! header reads; the writer writes the current one.
//!
//! | version | data of a section |
//! |---|---|
//! | 1, 2 | as in version 3, but per entry a `u32` key length, the whole composite key (flag in its first byte), a `u32` value length and the value (125 bytes for the benchmark's entry) |
//! | 3 | varint lengths and the compact key of the tables above |
//! | 4 | as 3, with priority-queue states (timers) |
//!
//! # Example
//!
//! ```
//! use state_format::keyed_format::{CompositeKey, KeyedSnapshotReader, KeyedSnapshotWriter};
//! use state_api::{ByteStreamStateHandle, KeyGroup, KeyGroupRange, Registry, StateMetaInfo, UncompressedStreamCompressionDecorator};
//! use state_format::KeyGroupsStateHandle;
//! use state_format::KeyedBackendSerializationProxy;
//! use std::sync::Arc;
//!
//! let header = KeyedBackendSerializationProxy::new(
//!     "bytes",
//!     vec![StateMetaInfo::value("count", "void", "u64")],
//!     "none",
//!     state_api::MaxParallelism::new(128)?,
//! );
//! let range = KeyGroupRange::new(0, 1)?;
//! let mut bytes = Vec::new();
//! let mut writer = KeyedSnapshotWriter::new(
//!     &mut bytes, 0, &header, &UncompressedStreamCompressionDecorator, range, state_api::MaxParallelism::new(128)?,
//! )?;
//! let (first, second) = (KeyGroup::new(0)?, KeyGroup::new(1)?);
//! let key = CompositeKey::new(state_api::MaxParallelism::new(128)?).build(second, b"alice", b"")?;
//! writer.write_key_group(first, |_| Ok(()))?;
//! writer.write_key_group(second, |group| group.write_entry(0, &key, &7u64.to_be_bytes()))?;
//! let (offsets, checksums) = writer.finish()?;
//!
//! let stream = Arc::new(ByteStreamStateHandle::new("example", bytes));
//! let handle = KeyGroupsStateHandle::new(offsets, stream).with_checksums(checksums)?;
//! let mut reader = KeyedSnapshotReader::open(&handle, Registry::global(), state_api::MaxParallelism::new(128)?)?;
//! let mut found = Vec::new();
//! reader.read_key_group(second, &mut |entry| {
//!     found.push((entry.state_id, entry.key.to_vec(), entry.value.to_vec()));
//!     Ok(())
//! })?;
//! assert_eq!(found, [(0, key, 7u64.to_be_bytes().to_vec())]);
//! # Ok::<(), state_api::Error>(())
//! ```

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::parallel::{KeyGroupShare, run_in_two};

use crate::CheckpointStreamWithResultProvider;
use crate::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
use state_api::CheckpointId;
use state_api::{
    CheckpointStreamFactory, CheckpointedStateScope, Error, KeyGroup, KeyGroupRange,
    KeyedBackendParams, KeyedSnapshotResult, LocalRecoveryConfig, MaxParallelism, Registry, Result,
    SnapshotContext, StateInputStream, StateKind, StateMetaInfo, StateTtlConfig,
    StreamCompressionDecorator,
};

use crate::key_group_prefix::{read_key_group_prefix, write_key_group_prefix};
use crate::proxy::KeyedBackendSerializationProxy;
use crate::timer::TIMESTAMP_BYTES;

#[cfg(test)]
pub(crate) mod fixed_lengths;
mod varint;

/// The `u16` that ends the data of a key group.
pub const END_OF_KEY_GROUP_MARK: u16 = 0xFFFF;

/// The flag in a key's first byte that says a state id or the end mark follows the entry.
pub const META_DATA_FOLLOWS: u8 = 0x80;

/// Lengths up to this are read into a buffer sized at once; longer ones grow as bytes
/// arrive, so a corrupt length cannot make the reader allocate more than the stream holds.
const DIRECT_READ_LIMIT: usize = 1 << 20;

/// Decompressed bytes of a section the reader reads ahead.
const READ_BUFFER: usize = 64 * 1024;

/// The writer hands encoded entries to the compression decorator in pieces of about this
/// size: one checksum update and one write per piece instead of several per entry.
const SECTION_BUFFER: usize = 64 * 1024;

/// Builds and splits [composite keys](self#format): key-group prefix, key, namespace and,
/// for map states, the user key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompositeKey {
    prefix_bytes: usize,
}

/// The parts of a composite key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompositeKeyParts<'a> {
    /// The key group of the prefix.
    pub key_group: KeyGroup,
    /// The serialized key.
    pub key: &'a [u8],
    /// The serialized namespace.
    pub namespace: &'a [u8],
    /// The serialized user key (empty for value and list states).
    pub user_key: &'a [u8],
}

impl CompositeKey {
    /// Composite keys for `max_parallelism` key groups (which fixes the prefix width).
    pub fn new(max_parallelism: MaxParallelism) -> Self {
        CompositeKey {
            prefix_bytes: max_parallelism.prefix_bytes(),
        }
    }

    /// The width of the key-group prefix in bytes.
    pub fn prefix_bytes(&self) -> usize {
        self.prefix_bytes
    }

    /// The composite key of (`key_group`, `key`, `namespace`).
    ///
    /// # Errors
    ///
    /// As [`build_into`](Self::build_into).
    pub fn build(&self, key_group: KeyGroup, key: &[u8], namespace: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.prefix_bytes + 8 + key.len() + namespace.len());
        self.build_into(key_group, key, namespace, &[], &mut out)?;
        Ok(out)
    }

    /// Appends the composite key of (`key_group`, `key`, `namespace`, `user_key`) to `out`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a key or namespace of 4 GiB or more, whose length the
    /// format cannot record; `out` is left as it was.
    pub fn build_into(
        &self,
        key_group: KeyGroup,
        key: &[u8],
        namespace: &[u8],
        user_key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let field_len = |what: &str, bytes: &[u8]| {
            u32::try_from(bytes.len()).map_err(|_| {
                Error::InvalidArgument(format!(
                    "a {what} of {} bytes: keys and namespaces must stay below 4 GiB",
                    bytes.len()
                ))
            })
        };
        let (key_len, namespace_len) = (field_len("key", key)?, field_len("namespace", namespace)?);
        write_key_group_prefix(key_group.get(), self.prefix_bytes, out);
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&namespace_len.to_be_bytes());
        out.extend_from_slice(namespace);
        out.extend_from_slice(user_key);
        Ok(())
    }

    /// Splits a composite key into its parts.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when the bytes are not a composite key of this prefix width.
    pub fn split<'a>(&self, bytes: &'a [u8]) -> Result<CompositeKeyParts<'a>> {
        let corrupt = |reason: &str| Error::Corrupted {
            what: "composite key".into(),
            reason: reason.into(),
        };
        let prefix = read_key_group_prefix(bytes, self.prefix_bytes)?;
        let key_group =
            KeyGroup::new(prefix).map_err(|_| corrupt("key-group prefix above 32767"))?;
        let rest = &bytes[self.prefix_bytes..];
        let (key, rest) = take_length_prefixed(rest).ok_or_else(|| corrupt("key cut short"))?;
        let (namespace, user_key) =
            take_length_prefixed(rest).ok_or_else(|| corrupt("namespace cut short"))?;
        Ok(CompositeKeyParts {
            key_group,
            key,
            namespace,
            user_key,
        })
    }
}

/// The key, namespace and user key of the composite key `bytes`, whose key-group prefix is
/// `prefix_bytes` long; `None` when its key or namespace runs past its end.
#[inline]
fn split_after_prefix(bytes: &[u8], prefix_bytes: usize) -> Option<(&[u8], &[u8], &[u8])> {
    let (key, rest) = take_length_prefixed(bytes.get(prefix_bytes..)?)?;
    let (namespace, user_key) = take_length_prefixed(rest)?;
    Some((key, namespace, user_key))
}

#[inline]
fn take_length_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len_bytes: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let rest = &bytes[4..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// `len` as the format's `u32` length. Callers check lengths against `u32::MAX` first where
/// the input is user data ([`KeyGroupEntryWriter::write_entry`]); keys and namespaces that
/// large cannot be held in a composite key in memory next to the rest.
fn length(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Serializes list elements as a list state's value, appending to `out`.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an element of 4 GiB or more, which the format's `u32`
/// length cannot record; `out` then holds the elements before it.
pub fn encode_list<'a>(
    elements: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<()> {
    for element in elements {
        let len = u32::try_from(element.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "list element of {} bytes: elements must stay below 4 GiB",
                element.len()
            ))
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(element);
    }
    Ok(())
}

/// Splits a list state's value into its elements.
///
/// # Errors
///
/// [`Error::Corrupted`] when an element's length runs past the end of the value.
pub fn decode_list(mut bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let mut elements = Vec::new();
    while !bytes.is_empty() {
        let (element, rest) = take_length_prefixed(bytes).ok_or_else(|| Error::Corrupted {
            what: "list value".into(),
            reason: format!("element {} runs past the end of the value", elements.len()),
        })?;
        elements.push(element);
        bytes = rest;
    }
    Ok(elements)
}

/// Counts the bytes written to the checkpoint stream.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    pos: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.pos += written as u64;
        Ok(written)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a keyed snapshot stream in the canonical format: the header, then every key group
/// of the range in order through [`write_key_group`](Self::write_key_group).
pub struct KeyedSnapshotWriter<'a> {
    out: Counting<'a>,
    decorator: &'a dyn StreamCompressionDecorator,
    composite: CompositeKey,
    states: StateLayouts,
    offsets: KeyGroupRangeOffsets,
    checksums: Vec<u32>,
    next_key_group: u32,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for KeyedSnapshotWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedSnapshotWriter")
            .field("pos", &self.out.pos)
            .field("decorator", &self.decorator.name())
            .field("range", &self.offsets.range())
            .field("next_key_group", &self.next_key_group)
            .finish()
    }
}

impl<'a> KeyedSnapshotWriter<'a> {
    /// Writes `header` to `out`, whose position is `start_pos`, and prepares to write the key
    /// groups of `range` with `decorator`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the header names another decorator than `decorator`;
    /// [`Error::Stream`] when writing fails.
    pub fn new(
        out: &'a mut dyn Write,
        start_pos: u64,
        header: &KeyedBackendSerializationProxy,
        decorator: &'a dyn StreamCompressionDecorator,
        range: KeyGroupRange,
        max_parallelism: MaxParallelism,
    ) -> Result<Self> {
        if header.compression() != decorator.name() {
            return Err(Error::InvalidArgument(format!(
                "the snapshot header names compression `{}` but the data is written with `{}`",
                header.compression(),
                decorator.name()
            )));
        }
        if !range.is_empty() && range.end().get() >= max_parallelism.get() {
            return Err(Error::KeyGroupOutOfRange {
                key_group: range.end(),
                range: max_parallelism.all(),
            });
        }
        let mut out = Counting {
            inner: out,
            pos: start_pos,
        };
        header.write_to(&mut out)?;
        Ok(KeyedSnapshotWriter {
            out,
            decorator,
            composite: CompositeKey::new(max_parallelism),
            states: StateLayouts::of(header),
            offsets: KeyGroupRangeOffsets::new(range),
            checksums: Vec::with_capacity(range.len() as usize),
            next_key_group: range.start().get(),
            buffer: Vec::with_capacity(SECTION_BUFFER + 4096),
        })
    }

    /// Leaves out what expired at `now` of the states whose time to live says so
    /// (`cleanup_in_full_snapshot`): the snapshot transformer of full snapshots
    /// ([`crate::ttl::transform`]). Without this call every entry is written as given.
    pub fn leave_out_expired(&mut self, now: i64) {
        self.states.now = Some(now);
    }

    /// The stream position: bytes written so far, counted from `start_pos`.
    pub fn pos(&self) -> u64 {
        self.out.pos
    }

    /// Writes the section of `key_group`, which must be the next key group of the range;
    /// `entries` writes its entries through the [`KeyGroupEntryWriter`] it is given.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when key groups come out of order or an entry breaks the
    /// format's rules; errors of `entries` and of the stream are returned as they are.
    pub fn write_key_group(
        &mut self,
        key_group: KeyGroup,
        entries: impl FnOnce(&mut KeyGroupEntryWriter<'_>) -> Result<()>,
    ) -> Result<()> {
        let id = self.begin_key_group(key_group)?;
        let mut section = self.decorator.compress(&mut self.out);
        self.buffer.clear();
        let mut writer = KeyGroupEntryWriter {
            section: &mut *section,
            crc: crc32c::crc32c(&id),
            key_group,
            composite: self.composite,
            states: &self.states,
            current_state: None,
            seen: vec![false; self.states.count()],
            buffer: &mut self.buffer,
            last_key: None,
        };
        entries(&mut writer)?;
        let crc = writer.end()?;
        section
            .finish()
            .map_err(|err| Error::stream(format!("finishing key group {key_group}"), err))?;
        self.checksums.push(crc);
        self.next_key_group = key_group.get() + 1;
        Ok(())
    }

    /// Checks that `key_group` is the next one, records its offset and writes its
    /// (uncompressed) id; returns the id's bytes, which its checksum starts with.
    fn begin_key_group(&mut self, key_group: KeyGroup) -> Result<[u8; 4]> {
        let range = self.offsets.range();
        if key_group.get() != self.next_key_group || !range.contains(key_group) {
            return Err(Error::InvalidArgument(format!(
                "key group {key_group} written out of order: expected {} of {range}",
                self.next_key_group
            )));
        }
        self.offsets.set_offset(key_group, self.out.pos)?;
        let id = key_group.get().to_be_bytes();
        self.out
            .write_all(&id)
            .map_err(|err| Error::stream(format!("writing key group {key_group}"), err))?;
        Ok(id)
    }

    /// What encodes a key group's section apart from the stream (see
    /// [`write_full_snapshot_parallel`]).
    fn section_encoder(&self) -> SectionEncoder<'a> {
        SectionEncoder {
            decorator: self.decorator,
            composite: self.composite,
            states: self.states.clone(),
        }
    }

    /// Writes the section of `key_group` that [`SectionEncoder::encode`] produced: the
    /// same bytes [`write_key_group`](Self::write_key_group) would have written.
    fn write_encoded(&mut self, key_group: KeyGroup, section: &EncodedSection) -> Result<()> {
        self.begin_key_group(key_group)?;
        self.out
            .write_all(&section.bytes)
            .map_err(|err| Error::stream(format!("writing key group {key_group}"), err))?;
        self.checksums.push(section.crc);
        self.next_key_group = key_group.get() + 1;
        Ok(())
    }

    /// Ends the stream and returns the offset and the checksum of every key group.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when a key group of the range was not written.
    pub fn finish(self) -> Result<(KeyGroupRangeOffsets, Vec<u32>)> {
        let range = self.offsets.range();
        if !range.is_empty() && self.next_key_group != range.end().get() + 1 {
            return Err(Error::InvalidArgument(format!(
                "keyed snapshot ended after key group {} of {range}",
                self.next_key_group as i64 - 1
            )));
        }
        Ok((self.offsets, self.checksums))
    }
}

/// A key group's section encoded in memory: its bytes after the key-group id, and its
/// checksum.
struct EncodedSection {
    bytes: Vec<u8>,
    crc: u32,
}

/// Encodes key-group sections into memory, on any thread.
#[derive(Clone)]
struct SectionEncoder<'a> {
    decorator: &'a dyn StreamCompressionDecorator,
    composite: CompositeKey,
    states: StateLayouts,
}

/// What a state's kind adds to its entries' keys: the one thing about a state that the
/// entries' encoding depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EntryLayout {
    /// Map states: a user key after the namespace.
    user_key: bool,
    /// Priority-queue states: a timestamp of [`TIMESTAMP_BYTES`] right after the prefix.
    timestamp: bool,
}

impl EntryLayout {
    /// Bytes of a composite key after its prefix and before the key's length.
    fn fixed_bytes(self) -> usize {
        if self.timestamp { TIMESTAMP_BYTES } else { 0 }
    }
}

/// The [`EntryLayout`] of every state id of a header, shared by the threads that encode
/// sections.
#[derive(Debug, Clone)]
struct StateLayouts {
    layouts: Arc<[EntryLayout]>,
    /// The kind and time to live of states whose expired entries full snapshots leave out.
    expiring: Arc<[Option<(StateKind, StateTtlConfig)>]>,
    /// The time entries are left out at when they expired; `None` writes every entry.
    now: Option<i64>,
}

impl StateLayouts {
    fn of(header: &KeyedBackendSerializationProxy) -> Self {
        let layout = |kind| EntryLayout {
            user_key: kind == StateKind::Map,
            timestamp: kind == StateKind::PriorityQueue,
        };
        let expiring = |state: &StateMetaInfo| {
            let ttl = state.ttl.filter(|ttl| ttl.cleanup_in_full_snapshot)?;
            Some((state.kind, ttl))
        };
        StateLayouts {
            layouts: header.states().iter().map(|s| layout(s.kind)).collect(),
            expiring: header.states().iter().map(expiring).collect(),
            now: None,
        }
    }

    /// What the snapshot transformer needs for an entry of `state_id`, when it applies.
    fn expiring(&self, state_id: u16) -> Option<(StateKind, StateTtlConfig, i64)> {
        let now = self.now?;
        let (kind, ttl) = (*self.expiring.get(usize::from(state_id))?)?;
        Some((kind, ttl, now))
    }

    /// How many states the header has.
    fn count(&self) -> usize {
        self.layouts.len()
    }

    /// The layout of the entries of state `state_id`, which must be below
    /// [`count`](Self::count).
    fn layout(&self, state_id: u16) -> EntryLayout {
        let layout = self.layouts.get(usize::from(state_id));
        layout.copied().unwrap_or_default()
    }
}

/// A buffer that refuses to grow past a limit: a section too large to hold in memory is
/// left to the streaming path.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "section over the limit",
            ));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Section buffers handed back once written, so that encoding reuses memory it already
/// touched instead of growing a fresh allocation (page faults, copies) for every key group.
#[derive(Default)]
struct SectionBuffers {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
    allocated: AtomicUsize,
}

impl SectionBuffers {
    /// An empty buffer, with the capacity of one handed back if there is one.
    fn take(&self) -> Vec<u8> {
        let reused = match self.free.lock() {
            Ok(mut free) => free.pop(),
            Err(_) => None,
        };
        reused.unwrap_or_else(|| {
            self.allocated.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        })
    }

    /// How many buffers [`take`](Self::take) made rather than reused.
    fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Hands `bytes` back for reuse.
    fn give(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        if let Ok(mut free) = self.free.lock() {
            free.push(bytes);
        }
    }
}

impl SectionEncoder<'_> {
    /// Encodes `key_group`'s section with `entries` into `into` (emptied first), staging
    /// entries in `staging`; `None` when it would exceed `limit` bytes.
    fn encode(
        &self,
        key_group: KeyGroup,
        entries: &(impl Fn(&mut KeyGroupEntryWriter<'_>) -> Result<()> + ?Sized),
        limit: usize,
        mut into: Vec<u8>,
        staging: &mut Vec<u8>,
    ) -> Result<Option<EncodedSection>> {
        into.clear();
        staging.clear();
        let mut out = Capped { bytes: into, limit };
        let buffer = staging;
        let outcome = {
            let mut section = self.decorator.compress(&mut out);
            let mut writer = KeyGroupEntryWriter {
                section: &mut *section,
                crc: crc32c::crc32c(&key_group.get().to_be_bytes()),
                key_group,
                composite: self.composite,
                states: &self.states,
                current_state: None,
                seen: vec![false; self.states.count()],
                buffer,
                last_key: None,
            };
            entries(&mut writer)
                .and_then(|()| writer.end())
                .and_then(|crc| {
                    section
                        .finish()
                        .map_err(|err| Error::stream("finishing a section", err))?;
                    Ok(crc)
                })
        };
        match outcome {
            Ok(crc) => Ok(Some(EncodedSection {
                bytes: out.bytes,
                crc,
            })),
            Err(err) if over_limit(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// Whether `err` is a [`Capped`] buffer refusing to grow.
fn over_limit(err: &Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::OutOfMemory
        {
            return true;
        }
        source = current.source();
    }
    false
}

/// Writes the entries of one key group; see [`KeyedSnapshotWriter::write_key_group`].
pub struct KeyGroupEntryWriter<'s> {
    section: &'s mut dyn Write,
    crc: u32,
    key_group: KeyGroup,
    composite: CompositeKey,
    states: &'s StateLayouts,
    current_state: Option<u16>,
    seen: Vec<bool>,
    /// Encoded bytes not yet passed to the section (checksummed when passed).
    buffer: &'s mut Vec<u8>,
    /// Position in `buffer` of the first byte of the last entry's key: the byte that gets
    /// the meta-data-follows flag when the state changes or the key group ends. The buffer
    /// is never drained past it.
    last_key: Option<usize>,
}

impl std::fmt::Debug for KeyGroupEntryWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyGroupEntryWriter")
            .field("key_group", &self.key_group)
            .field("current_state", &self.current_state)
            .finish()
    }
}

impl KeyGroupEntryWriter<'_> {
    /// The key group being written.
    pub fn key_group(&self) -> KeyGroup {
        self.key_group
    }

    /// The composite-key layout of this snapshot.
    pub fn composite_key(&self) -> CompositeKey {
        self.composite
    }

    /// The prefix every composite key of this key group starts with: in a store ordered by
    /// composite key, the key group's entries are the range of keys with this prefix.
    pub fn key_group_prefix(&self) -> Vec<u8> {
        let mut prefix = Vec::with_capacity(self.composite.prefix_bytes);
        write_key_group_prefix(
            self.key_group.get(),
            self.composite.prefix_bytes,
            &mut prefix,
        );
        prefix
    }

    /// Writes one entry of state `state_id` (its position in the header). `key` is the
    /// composite key, starting with this key group's prefix, with a user key only if the
    /// state is a map state. Entries of one state must be written together.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an unknown state id, a state written in two runs, a key
    /// of another key group, a key that is not a composite key, a user key in the key of a
    /// value or list state, or a key or value of 4 GiB or more; [`Error::Stream`] when
    /// writing fails.
    pub fn write_entry(&mut self, state_id: u16, key: &[u8], value: &[u8]) -> Result<()> {
        if usize::from(state_id) >= self.states.count() {
            return Err(Error::InvalidArgument(format!(
                "state id {state_id} written to key group {}, the header has {} states",
                self.key_group,
                self.states.count()
            )));
        }
        let prefix = read_key_group_prefix(key, self.composite.prefix_bytes).map_err(|_| {
            Error::InvalidArgument(format!(
                "entry key of {} bytes written to key group {} has no key-group prefix",
                key.len(),
                self.key_group
            ))
        })?;
        if prefix != self.key_group.get() {
            return Err(Error::InvalidArgument(format!(
                "entry of key group {prefix} written to key group {}",
                self.key_group
            )));
        }
        if key.len() > u32::MAX as usize || value.len() > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "entry of {} key bytes and {} value bytes in key group {}: keys and values must stay below 4 GiB",
                key.len(),
                value.len(),
                self.key_group
            )));
        }
        let transformed;
        let value = match self.states.expiring(state_id) {
            None => value,
            Some((kind, ttl, now)) => match crate::ttl::transform(kind, &ttl, now, value) {
                Ok(None) => return Ok(()),
                Ok(Some(kept)) => {
                    transformed = kept;
                    &transformed[..]
                }
                Err(err) => {
                    return Err(Error::InvalidArgument(format!(
                        "entry of state {state_id} written to key group {}: {err}",
                        self.key_group
                    )));
                }
            },
        };
        let prefix_bytes = self.composite.prefix_bytes;
        let layout = self.states.layout(state_id);
        let fixed_end = prefix_bytes + layout.fixed_bytes();
        let (key_part, namespace, user_key) =
            split_after_prefix(key, fixed_end).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "entry key of {} bytes written to key group {} is not a composite key: its key or namespace runs past its end",
                    key.len(),
                    self.key_group
                ))
            })?;
        let has_user_key = layout.user_key;
        if !has_user_key && !user_key.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "entry of state {state_id} in key group {} has a user key of {} bytes: only the keys of map states have one",
                self.key_group,
                user_key.len()
            )));
        }
        if self.current_state != Some(state_id) {
            let seen = &mut self.seen[usize::from(state_id)];
            if *seen {
                return Err(Error::InvalidArgument(format!(
                    "entries of state {state_id} in key group {} were not written together",
                    self.key_group
                )));
            }
            *seen = true;
            self.flag_last_key();
            self.buffer.extend_from_slice(&state_id.to_be_bytes());
            self.current_state = Some(state_id);
        }
        let buffer = &mut *self.buffer;
        let entry_key = buffer.len();
        // At most 4 varints of 5 bytes: one reservation for the whole entry.
        buffer.reserve(key.len() + value.len() + 4 * varint::MAX_LEN);
        // The prefix is 1 or 2 bytes: pushed, not copied.
        for &byte in &key[..prefix_bytes] {
            buffer.push(byte);
        }
        buffer.extend_from_slice(&key[prefix_bytes..fixed_end]);
        // Lengths below 4 GiB: the key's whole length is, and so are its parts'.
        varint::put(buffer, length(key_part.len()));
        buffer.extend_from_slice(key_part);
        varint::put(buffer, length(namespace.len()));
        if !namespace.is_empty() {
            buffer.extend_from_slice(namespace);
        }
        if has_user_key {
            varint::put(buffer, length(user_key.len()));
            buffer.extend_from_slice(user_key);
        }
        varint::put(buffer, length(value.len()));
        buffer.extend_from_slice(value);
        self.last_key = Some(entry_key);
        if entry_key >= SECTION_BUFFER {
            // Pass on everything before the last entry's key, which may still get its flag.
            self.drain(entry_key)?;
        }
        Ok(())
    }

    fn flag_last_key(&mut self) {
        if let Some(position) = self.last_key.take() {
            self.buffer[position] |= META_DATA_FOLLOWS;
        }
    }

    /// Checksums and writes the first `len` buffered bytes.
    fn drain(&mut self, len: usize) -> Result<()> {
        let bytes = &self.buffer[..len];
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.section
            .write_all(bytes)
            .map_err(|err| Error::stream(format!("writing key group {}", self.key_group), err))?;
        self.buffer.drain(..len);
        if let Some(position) = &mut self.last_key {
            *position -= len;
        }
        Ok(())
    }

    /// Writes the end mark and returns the key group's checksum.
    fn end(mut self) -> Result<u32> {
        self.flag_last_key();
        self.buffer
            .extend_from_slice(&END_OF_KEY_GROUP_MARK.to_be_bytes());
        self.drain(self.buffer.len())?;
        Ok(self.crc)
    }
}

/// Where and how [`write_full_snapshot`] writes.
#[derive(Clone, Copy)]
pub struct FullSnapshotTarget<'a> {
    /// The checkpoint being written.
    pub checkpoint_id: CheckpointId,
    /// Where the stream goes.
    pub factory: &'a dyn CheckpointStreamFactory,
    /// Whether a task-local copy is written too.
    pub local_recovery: &'a LocalRecoveryConfig,
    /// The decorator of the key-group sections (named in the header).
    pub compression: &'a dyn StreamCompressionDecorator,
    /// The key groups written, in order.
    pub range: KeyGroupRange,
    /// Max parallelism of the job.
    pub max_parallelism: MaxParallelism,
    /// The time the snapshot transformer leaves out what expired at
    /// ([`KeyedSnapshotWriter::leave_out_expired`]).
    pub now: i64,
}

impl<'a> FullSnapshotTarget<'a> {
    /// The target of a backend created with `params`: its key groups, max parallelism and
    /// local recovery, the stream from `factory`, sections through `compression`.
    pub fn new(
        checkpoint_id: CheckpointId,
        factory: &'a dyn CheckpointStreamFactory,
        params: &'a KeyedBackendParams,
        compression: &'a dyn StreamCompressionDecorator,
    ) -> Self {
        FullSnapshotTarget {
            checkpoint_id,
            factory,
            local_recovery: &params.local_recovery,
            compression,
            range: params.key_group_range,
            max_parallelism: params.max_parallelism,
            now: params.clock.now(),
        }
    }
}

impl std::fmt::Debug for FullSnapshotTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FullSnapshotTarget")
            .field("checkpoint_id", &self.checkpoint_id)
            .field("compression", &self.compression.name())
            .field("range", &self.range)
            .finish()
    }
}

/// The asynchronous part every full keyed strategy shares: opens an exclusive stream (and a
/// task-local copy), registers it with `context` so cancellation closes it, writes `header`
/// and every key group of the range with the entries `write_group` gives, checking for
/// cancellation between key groups, and returns the key-groups handle(s).
///
/// # Errors
///
/// [`Error::Cancelled`] when cancelled, and the errors of the stream, the writer and
/// `write_group`. Nothing becomes visible on an error.
pub fn write_full_snapshot(
    context: &SnapshotContext,
    target: FullSnapshotTarget<'_>,
    header: &KeyedBackendSerializationProxy,
    mut write_group: impl FnMut(&mut KeyGroupEntryWriter<'_>) -> Result<()>,
) -> Result<KeyedSnapshotResult> {
    with_snapshot_stream(context, target, header, |writer| {
        for key_group in target.range.iter() {
            context.check_cancelled()?;
            writer.write_key_group(key_group, &mut write_group)?;
        }
        Ok(())
    })
}

/// Opens the stream of a full snapshot, registers it for cancellation, lets `write` write
/// the key groups through a [`KeyedSnapshotWriter`] holding `header`, and completes the
/// stream into the key-groups handle(s).
fn with_snapshot_stream(
    context: &SnapshotContext,
    target: FullSnapshotTarget<'_>,
    header: &KeyedBackendSerializationProxy,
    write: impl FnOnce(&mut KeyedSnapshotWriter<'_>) -> Result<()>,
) -> Result<KeyedSnapshotResult> {
    let mut stream = CheckpointStreamWithResultProvider::create(
        target.checkpoint_id,
        CheckpointedStateScope::Exclusive,
        target.factory,
        target.local_recovery,
    )?;
    let registration = context.register(stream.closer())?;
    let (offsets, checksums) = {
        let mut writer = KeyedSnapshotWriter::new(
            &mut stream,
            0,
            header,
            target.compression,
            target.range,
            target.max_parallelism,
        )?;
        writer.leave_out_expired(target.now);
        write(&mut writer)?;
        writer.finish()?
    };
    context.unregister(registration);
    let result = stream.close_and_finalize()?;
    crate::key_groups::keyed_snapshot_result(result, &offsets, Some(&checksums))
}

/// Sections up to this size are encoded ahead on the helper thread of
/// [`write_full_snapshot_parallel`]; a larger one is encoded again, streaming, in order.
const PARALLEL_SECTION_LIMIT: usize = 64 << 20;

/// Key groups past the one being written that the strategy's thread of
/// [`write_key_groups_parallel`] may encode ahead while it waits for the helper.
const ENCODE_AHEAD: usize = 6;

/// Bytes of sections encoded ahead past which the strategy's thread of
/// [`write_key_groups_parallel`] encodes no more ahead but waits for the helper.
const ENCODE_AHEAD_BYTES: usize = 64 << 20;

/// [`write_full_snapshot`] with the key groups encoded by two threads: the strategy's
/// thread and a helper share the key groups, each taking the next one nobody took yet, so
/// both stay busy whatever each one's share of the work costs (see
/// [`write_key_groups_parallel`]). The stream's bytes are exactly those of
/// [`write_full_snapshot`].
///
/// `write_group` must be callable from two threads at once and, for one key group, more
/// than once with the same result (it reads an immutable snapshot).
///
/// # Errors
///
/// As [`write_full_snapshot`].
pub fn write_full_snapshot_parallel(
    context: &SnapshotContext,
    target: FullSnapshotTarget<'_>,
    header: &KeyedBackendSerializationProxy,
    write_group: impl Fn(&mut KeyGroupEntryWriter<'_>) -> Result<()> + Sync,
) -> Result<KeyedSnapshotResult> {
    with_snapshot_stream(context, target, header, |writer| {
        write_key_groups_parallel(context, writer, write_group)
    })
}

/// Writes every key group of `writer`'s range that it has not written yet, in order, with
/// the entries `write_group` gives, on the strategy's thread and a helper thread (see
/// [`write_full_snapshot_parallel`], which is this function over a stream of its own; a
/// strategy that manages its own streams calls it directly). Checks `context` for
/// cancellation between key groups.
///
/// The two threads take key groups in order from a shared counter. The helper encodes
/// the ones it takes into memory. The strategy's thread writes the key groups in order:
/// a section the helper finished, or the next key group itself, streaming, when nobody
/// took it yet; while the helper is still encoding the next one, it encodes up to
/// six later ones into memory instead of waiting, as long as those it holds stay under
/// 64 MiB. So at most nine encoded sections wait in memory (six of this thread's, two in
/// the channel, one the helper holds), at most 64 MiB plus three sections of them however
/// slow the stream is, and a section over 64 MiB is not held but encoded again by the
/// strategy's thread, streaming. (With two sections ahead, the strategy's thread, which
/// also writes the helper's sections to the stream, often waited for the helper.)
///
/// `write_group` must be callable from two threads at once and, for one key group, more
/// than once with the same result (it reads an immutable snapshot).
///
/// # Errors
///
/// [`Error::Cancelled`] when cancelled, and the errors of the writer and `write_group`.
pub fn write_key_groups_parallel(
    context: &SnapshotContext,
    writer: &mut KeyedSnapshotWriter<'_>,
    write_group: impl Fn(&mut KeyGroupEntryWriter<'_>) -> Result<()> + Sync,
) -> Result<()> {
    let limits = SectionLimits {
        section: PARALLEL_SECTION_LIMIT,
        ahead: ENCODE_AHEAD_BYTES,
    };
    write_key_groups_in_two(context, writer, write_group, limits).map(|_| ())
}

/// How many bytes [`write_key_groups_in_two`] holds in memory.
#[derive(Debug, Clone, Copy)]
struct SectionLimits {
    /// The largest section held; a larger one is encoded again, streaming.
    section: usize,
    /// The bytes of sections encoded ahead past which the strategy's thread waits.
    ahead: usize,
}

/// [`write_key_groups_parallel`] holding sections of up to `limits.section` bytes in
/// memory, and encoding ahead while it holds fewer than `limits.ahead` bytes; returns how many section buffers it allocated (buffers are reused once written, so
/// this is the most sections that were held at once, plus those over the limit).
fn write_key_groups_in_two(
    context: &SnapshotContext,
    writer: &mut KeyedSnapshotWriter<'_>,
    write_group: impl Fn(&mut KeyGroupEntryWriter<'_>) -> Result<()> + Sync,
    limits: SectionLimits,
) -> Result<usize> {
    let section_limit = limits.section;
    let range = writer.offsets.range();
    let first = writer.next_key_group;
    let remaining: Vec<KeyGroup> = range.iter().filter(|group| group.get() >= first).collect();
    let encoder = writer.section_encoder();
    let helper_encoder = encoder.clone();
    let write_group = &write_group;
    let share = KeyGroupShare::new(remaining.len());
    let buffers = SectionBuffers::default();
    let (remaining, share, buffers) = (&remaining, &share, &buffers);
    let (sections, encoded) = std::sync::mpsc::sync_channel(2);
    let helper = move || {
        let mut staging = Vec::with_capacity(SECTION_BUFFER + 4096);
        while let Some(position) = share.take() {
            let key_group = remaining[position];
            let section = helper_encoder.encode(
                key_group,
                write_group,
                section_limit,
                buffers.take(),
                &mut staging,
            );
            // The strategy's thread stopped (an error, a cancellation): so do we.
            if sections.send((position, section)).is_err() {
                return;
            }
        }
    };
    let main = move || -> Result<usize> {
        // Sections encoded ahead by this thread, and at most one from the helper.
        let mut ready = std::collections::BTreeMap::new();
        let mut staging = Vec::new();
        let mut position = 0;
        while let Some(&key_group) = remaining.get(position) {
            context.check_cancelled()?;
            if let Some(section) = ready.remove(&position) {
                match section {
                    Some(section) => {
                        writer.write_encoded(key_group, &section)?;
                        buffers.give(section.bytes);
                    }
                    None => writer.write_key_group(key_group, write_group)?,
                }
                position += 1;
                continue;
            }
            if share.take_exactly(position) {
                writer.write_key_group(key_group, write_group)?;
                position += 1;
                continue;
            }
            // The helper took this key group; it sends its sections in the order it took
            // them, so the next one it sends is this one. Sections are received only here,
            // so the helper never runs more than the channel's two sections ahead.
            let received = match encoded.try_recv() {
                Ok(received) => received,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    // While the helper finishes it, encode a later key group.
                    let held: usize = ready.values().flatten().map(|s| s.bytes.len()).sum();
                    let ahead = match held < limits.ahead {
                        true => share.take_below(position + 1 + ENCODE_AHEAD),
                        false => None,
                    };
                    if let Some(ahead) = ahead {
                        let section = encoder.encode(
                            remaining[ahead],
                            write_group,
                            section_limit,
                            buffers.take(),
                            &mut staging,
                        )?;
                        ready.insert(ahead, section);
                        continue;
                    }
                    encoded.recv().map_err(|_| helper_stopped(key_group))?
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(helper_stopped(key_group));
                }
            };
            let (at, section) = received;
            ready.insert(at, section?);
        }
        Ok(buffers.allocated())
    };
    // `main` owns the receiving end: when it returns, the helper's next send fails and the
    // helper stops.
    let (helper, allocated) = run_in_two("the key-group encoder", helper, main);
    let allocated = allocated?;
    helper?;
    Ok(allocated)
}

/// The helper of [`write_key_groups_parallel`] ended without the section of `key_group`.
fn helper_stopped(key_group: KeyGroup) -> Error {
    Error::WorkerStopped {
        worker: format!("the encoder of key group {key_group}"),
    }
}

/// One entry read from a key group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedEntry<'a> {
    /// The state's id: its position in the header.
    pub state_id: u16,
    /// The composite key, flag cleared.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

/// Reads a keyed snapshot stream written by [`KeyedSnapshotWriter`]: the header, then any
/// key group of the handle, each verified against its checksum.
pub struct KeyedSnapshotReader {
    header: KeyedBackendSerializationProxy,
    decorator: Arc<dyn StreamCompressionDecorator>,
    input: Box<dyn StateInputStream>,
    handle: KeyGroupsStateHandle,
    location: String,
    composite: CompositeKey,
    encoding: EntryEncoding,
    states: StateLayouts,
    /// Bytes of decompressed data read ahead.
    read_buffer: usize,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// How a snapshot's version lays out its entries (see [the versions](self#versions)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryEncoding {
    /// Versions 1 and 2: `u32` lengths around the whole composite key and the value.
    FixedLengths,
    /// Version 3 on: the compact key and varint lengths.
    Compact,
}

impl EntryEncoding {
    fn of(version: u32) -> Self {
        match version {
            ..=2 => EntryEncoding::FixedLengths,
            _ => EntryEncoding::Compact,
        }
    }
}

impl std::fmt::Debug for KeyedSnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedSnapshotReader")
            .field("location", &self.location)
            .field("decorator", &self.decorator.name())
            .field("range", &self.handle.offsets().range())
            .finish()
    }
}

impl KeyedSnapshotReader {
    /// Opens the stream of `handle`, reads its header and looks up its compression
    /// decorator in `registry`. `max_parallelism` is the reader's number of key groups:
    /// the handle's key groups must lie below it and the header must record the same
    /// number (a version-1 header records none), before a byte of key-group data is read.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] naming both numbers when the handle's range or the header's
    /// number of key groups does not fit `max_parallelism`; the header's errors (see
    /// [`crate::proxy`]), named after the stream; an unknown decorator
    /// ([`Error::UnknownPlugin`]); errors opening the stream.
    pub fn open(
        handle: &KeyGroupsStateHandle,
        registry: &Registry,
        max_parallelism: MaxParallelism,
    ) -> Result<Self> {
        let location = handle.delegate().describe();
        crate::check_key_groups_fit(handle.offsets().range(), max_parallelism, &location)?;
        let mut input = handle.delegate().open().map_err(|err| match err {
            // The stream is not the one the handle recorded (a longer file, a FIFO).
            Error::Corrupted { .. } | Error::Truncated { .. } => Error::Snapshot {
                location: location.clone(),
                source: Box::new(err),
            },
            other => other,
        })?;
        let header = KeyedBackendSerializationProxy::read_from(&mut input)
            .and_then(|header| {
                header.check_max_parallelism(max_parallelism, &location)?;
                Ok(header)
            })
            .map_err(|err| Error::Snapshot {
                location: location.clone(),
                source: Box::new(err),
            })?;
        let decorator = registry.compression(header.compression())?;
        Ok(KeyedSnapshotReader {
            encoding: EntryEncoding::of(header.version()),
            states: StateLayouts::of(&header),
            header,
            decorator,
            input,
            handle: handle.clone(),
            location,
            composite: CompositeKey::new(max_parallelism),
            read_buffer: READ_BUFFER,
            key: Vec::new(),
            value: Vec::new(),
        })
    }

    /// The reader with `bytes` of decompressed data read ahead, so that tests reach the
    /// paths of entries that cross the read-ahead buffer's refills.
    #[cfg(test)]
    fn with_read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    /// The header of the snapshot.
    pub fn header(&self) -> &KeyedBackendSerializationProxy {
        &self.header
    }

    /// The key groups the handle holds.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.handle.offsets().range()
    }

    /// The composite-key layout of this snapshot.
    pub fn composite_key(&self) -> CompositeKey {
        self.composite
    }

    /// Reads the entries of `key_group`, handing each to `visit`, and verifies the key
    /// group's checksum when the handle has one. The checksum is checked at the end of the
    /// key group: a caller must not keep what it was given when this returns an error.
    ///
    /// # Errors
    ///
    /// [`Error::KeyGroup`] naming the key group and the stream, around:
    /// [`Error::Corrupted`] (checksum mismatch, wrong key-group id, unknown state id, a key
    /// of another key group, a state in two runs), [`Error::Truncated`] (the stream ends
    /// inside the key group), the decorator's and the stream's errors, or an error of
    /// `visit` (an entry the caller cannot take is named by key group too).
    pub fn read_key_group(
        &mut self,
        key_group: KeyGroup,
        visit: &mut dyn FnMut(KeyedEntry<'_>) -> Result<()>,
    ) -> Result<()> {
        self.read_key_group_inner(key_group, visit)
            .map_err(|err| Error::KeyGroup {
                key_group,
                location: self.location.clone(),
                source: Box::new(err),
            })
    }

    fn read_key_group_inner(
        &mut self,
        key_group: KeyGroup,
        visit: &mut dyn FnMut(KeyedEntry<'_>) -> Result<()>,
    ) -> Result<()> {
        let offset = self.handle.offsets().offset(key_group)?;
        self.input
            .seek(SeekFrom::Start(offset))
            .map_err(|err| Error::stream(format!("seeking to offset {offset}"), err))?;
        let mut id = [0; 4];
        read_exact(&mut self.input, &mut id, "key-group id")?;
        let found = u32::from_be_bytes(id);
        if found != key_group.get() {
            return Err(Error::Corrupted {
                what: format!("key-group id at offset {offset}"),
                reason: format!("found {found}"),
            });
        }
        // The section's compressed bytes, when the handle knows where they end.
        let limit = match self.handle.section_end(key_group) {
            Some(end) => Some(
                end.checked_sub(offset + 4)
                    .ok_or_else(|| Error::Corrupted {
                        what: format!("offsets of key groups {key_group} and after"),
                        reason: format!("the data ends at {end}, before its start {offset} + 4"),
                    })?,
            ),
            None => None,
        };
        let mut bounded = Read::take(&mut self.input, limit.unwrap_or(u64::MAX));
        let decompressed = self.decorator.decompress(&mut bounded);
        let mut section = CrcReader {
            inner: BufReader::with_capacity(self.read_buffer, decompressed),
            crc: crc32c::crc32c(&id),
        };
        let state_count = self.header.states().len();
        let mut seen = vec![false; state_count];
        let mut next = section.read_u16("first state id")?;
        while next != END_OF_KEY_GROUP_MARK {
            let state_id = next;
            let seen_before =
                seen.get_mut(usize::from(state_id))
                    .ok_or_else(|| Error::Corrupted {
                        what: "state id".into(),
                        reason: format!(
                            "{state_id} is not among the header's {state_count} states"
                        ),
                    })?;
            if std::mem::replace(seen_before, true) {
                return Err(Error::Corrupted {
                    what: format!("entries of state {state_id}"),
                    reason: "the state appears twice in the key group".into(),
                });
            }
            let layout = self.states.layout(state_id);
            loop {
                let meta_data_follows = match self.encoding {
                    EntryEncoding::FixedLengths => {
                        let flag = section.read_whole_key(&mut self.key)?;
                        section.read_bytes(&mut self.value, "entry value")?;
                        flag
                    }
                    EntryEncoding::Compact => section.read_compact_entry(
                        self.composite.prefix_bytes,
                        layout,
                        &mut self.key,
                        &mut self.value,
                    )?,
                };
                let prefix = read_key_group_prefix(&self.key, self.composite.prefix_bytes)?;
                if prefix != key_group.get() {
                    return Err(Error::Corrupted {
                        what: "entry key".into(),
                        reason: format!("the key has the prefix of key group {prefix}"),
                    });
                }
                visit(KeyedEntry {
                    state_id,
                    key: &self.key,
                    value: &self.value,
                })?;
                if meta_data_follows {
                    break;
                }
            }
            next = section.read_u16("state id or end mark")?;
        }
        if let Some(expected) = self.handle.checksum(key_group)
            && section.crc != expected
        {
            return Err(Error::Corrupted {
                what: "key-group data".into(),
                reason: format!(
                    "checksum {:#010x} does not match the recorded {expected:#010x}",
                    section.crc
                ),
            });
        }
        if limit.is_some() {
            // Read the section to its end: the decorator checks its own trailer (frame end
            // marks, content checksums), and nothing may follow the end mark.
            let mut probe = [0; 64];
            let extra = read_to_end_counting(&mut section.inner, &mut probe)?;
            if extra > 0 {
                return Err(Error::Corrupted {
                    what: "key-group data".into(),
                    reason: format!("{extra} bytes follow the end-of-key-group mark"),
                });
            }
            drop(section);
            if bounded.limit() > 0 {
                return Err(Error::Corrupted {
                    what: "key-group section".into(),
                    reason: format!(
                        "{} stored bytes of the section are not part of its compressed data",
                        bounded.limit()
                    ),
                });
            }
        }
        Ok(())
    }
}

fn read_exact(input: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    input.read_exact(buf).map_err(|err| read_error(err, what))
}

/// The error of reading `what` that failed with `err`.
fn read_error(err: io::Error, what: &str) -> Error {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated {
            what: what.into(),
            reason: "the stream ends inside the key group".into(),
        },
        _ => Error::stream(format!("reading {what}"), err),
    }
}

/// Reads `input` to its end; returns how many bytes came (an `UnexpectedEof` is a
/// truncation, `InvalidData` from a decompressing reader a corruption).
fn read_to_end_counting(input: &mut dyn Read, probe: &mut [u8]) -> Result<u64> {
    let mut count = 0;
    loop {
        match input.read(probe) {
            Ok(0) => return Ok(count),
            Ok(n) => count += n as u64,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Error::Truncated {
                    what: "key-group section".into(),
                    reason: format!("the stream ends before the section does: {err}"),
                });
            }
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::Corrupted {
                    what: "key-group section".into(),
                    reason: format!("the end of the section does not decode: {err}"),
                });
            }
            Err(err) => return Err(Error::stream("reading the end of a key-group section", err)),
        }
    }
}

/// Checksums the decompressed bytes of a section as they are read.
struct CrcReader<R> {
    inner: R,
    crc: u32,
}

impl<R: BufRead> CrcReader<R> {
    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        read_exact(&mut self.inner, buf, what)?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn read_u16(&mut self, what: &str) -> Result<u16> {
        let mut bytes = [0; 2];
        self.read_exact(&mut bytes, what)?;
        Ok(u16::from_be_bytes(bytes))
    }

    /// Reads a `u32` length and that many bytes into `buf`.
    fn read_bytes(&mut self, buf: &mut Vec<u8>, what: &str) -> Result<()> {
        let mut len = [0; 4];
        self.read_exact(&mut len, what)?;
        buf.clear();
        self.read_appending(buf, u32::from_be_bytes(len), what)
    }

    /// Appends the next `len` bytes to `buf`.
    fn read_appending(&mut self, buf: &mut Vec<u8>, len: u32, what: &str) -> Result<()> {
        let len = len as usize;
        let start = buf.len();
        if len <= DIRECT_READ_LIMIT {
            buf.resize(start + len, 0);
            return self.read_exact(&mut buf[start..], what);
        }
        // A length this large may be corrupt: take what the stream holds, not what it says.
        let read = (&mut self.inner)
            .take(len as u64)
            .read_to_end(buf)
            .map_err(|err| read_error(err, what))?;
        if read < len {
            return Err(Error::Truncated {
                what: what.into(),
                reason: format!("{read} of {len} bytes before the stream ends"),
            });
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[start..]);
        Ok(())
    }

    /// Reads a [varint](self#varints).
    fn read_varint(&mut self, what: &str) -> Result<u32> {
        let buffered = self.inner.fill_buf().map_err(|err| read_error(err, what))?;
        match varint::decode(buffered) {
            Ok(Some((value, len))) => {
                self.crc = crc32c::crc32c_append(self.crc, &buffered[..len]);
                self.inner.consume(len);
                Ok(value)
            }
            // The buffer ends inside the varint: byte by byte, across refills.
            Ok(None) => self.read_varint_bytewise(what),
            Err(malformed) => Err(malformed_varint(malformed, what)),
        }
    }

    fn read_varint_bytewise(&mut self, what: &str) -> Result<u32> {
        let mut bytes = [0; varint::MAX_LEN];
        for len in 1..=varint::MAX_LEN {
            self.read_exact(&mut bytes[len - 1..len], what)?;
            match varint::decode(&bytes[..len]) {
                Ok(Some((value, _))) => return Ok(value),
                Ok(None) => {}
                Err(malformed) => return Err(malformed_varint(malformed, what)),
            }
        }
        // `decode` settles every sequence of `MAX_LEN` bytes.
        Err(malformed_varint(varint::Malformed::TooLong, what))
    }

    /// Reads an entry of [version 3](self#format): its composite key, rebuilt, into `key`,
    /// flag cleared, and its value into `value`; returns whether the flag was set.
    /// `prefix_bytes` is at most 4.
    fn read_compact_entry(
        &mut self,
        prefix_bytes: usize,
        layout: EntryLayout,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool> {
        // Nearly every entry lies within the read-ahead buffer: decoded there, it takes one
        // checksum update instead of one per field. Anything else (an entry that crosses a
        // refill or is larger than the buffer, a read error, damaged bytes) is read field
        // by field, which reports what is wrong.
        if let Ok(buffered) = self.inner.fill_buf()
            && let Some((meta_data_follows, len)) =
                decode_compact_entry(buffered, prefix_bytes, layout, key, value)
        {
            self.crc = crc32c::crc32c_append(self.crc, &buffered[..len]);
            self.inner.consume(len);
            return Ok(meta_data_follows);
        }
        let meta_data_follows = self.read_compact_key(prefix_bytes, layout, key)?;
        let len = self.read_varint("entry value length")?;
        value.clear();
        self.read_appending(value, len, "entry value")?;
        Ok(meta_data_follows)
    }

    /// Reads an entry's key of [version 3](self#format) and rebuilds its composite key in
    /// `key`, flag cleared; returns whether the flag was set. `prefix_bytes` is at most 4.
    fn read_compact_key(
        &mut self,
        prefix_bytes: usize,
        layout: EntryLayout,
        key: &mut Vec<u8>,
    ) -> Result<bool> {
        let mut prefix = [0; 4];
        let prefix = &mut prefix[..prefix_bytes.clamp(1, 4)];
        self.read_exact(prefix, "entry key-group prefix")?;
        let meta_data_follows = prefix[0] & META_DATA_FOLLOWS != 0;
        prefix[0] &= !META_DATA_FOLLOWS;
        key.clear();
        key.extend_from_slice(prefix);
        let fixed = layout.fixed_bytes();
        key.resize(key.len() + fixed, 0);
        let start = key.len() - fixed;
        self.read_exact(&mut key[start..], "entry timestamp")?;
        let len = self.read_varint("entry key length")?;
        key.extend_from_slice(&len.to_be_bytes());
        self.read_appending(key, len, "entry key")?;
        let len = self.read_varint("entry namespace length")?;
        key.extend_from_slice(&len.to_be_bytes());
        self.read_appending(key, len, "entry namespace")?;
        if layout.user_key {
            let len = self.read_varint("entry user-key length")?;
            self.read_appending(key, len, "entry user key")?;
        }
        Ok(meta_data_follows)
    }

    /// Reads an entry's key of versions 1 and 2 (a `u32` length and the composite key) into
    /// `key`, flag cleared; returns whether the flag was set.
    fn read_whole_key(&mut self, key: &mut Vec<u8>) -> Result<bool> {
        self.read_bytes(key, "entry key")?;
        let Some(first) = key.first_mut() else {
            return Err(Error::Corrupted {
                what: "entry key".into(),
                reason: "empty key".into(),
            });
        };
        let meta_data_follows = *first & META_DATA_FOLLOWS != 0;
        *first &= !META_DATA_FOLLOWS;
        Ok(meta_data_follows)
    }
}

/// Decodes the [version-3](self#format) entry at the start of `bytes` as
/// [`CrcReader::read_compact_entry`] reads it: whether its flag is set and how many bytes
/// it takes. `None` when `bytes` end inside the entry or a varint is malformed.
fn decode_compact_entry(
    bytes: &[u8],
    prefix_bytes: usize,
    layout: EntryLayout,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
) -> Option<(bool, usize)> {
    let prefix = bytes.get(..prefix_bytes.max(1))?;
    let fixed = bytes.get(prefix.len()..prefix.len() + layout.fixed_bytes())?;
    let mut at = prefix.len() + fixed.len();
    let mut field = || {
        let (len, varint_len) = varint::decode(bytes.get(at..)?).ok()??;
        let start = at + varint_len;
        let end = start.checked_add(len as usize)?;
        let field = bytes.get(start..end)?;
        at = end;
        Some(field)
    };
    let key_bytes = field()?;
    let namespace = field()?;
    let user_key = match layout.user_key {
        true => field()?,
        false => &[],
    };
    let value_bytes = field()?;
    key.clear();
    key.extend_from_slice(prefix);
    key[0] &= !META_DATA_FOLLOWS;
    key.extend_from_slice(fixed);
    key.extend_from_slice(&length(key_bytes.len()).to_be_bytes());
    key.extend_from_slice(key_bytes);
    key.extend_from_slice(&length(namespace.len()).to_be_bytes());
    key.extend_from_slice(namespace);
    key.extend_from_slice(user_key);
    value.clear();
    value.extend_from_slice(value_bytes);
    Some((prefix[0] & META_DATA_FOLLOWS != 0, at))
}

fn malformed_varint(malformed: varint::Malformed, what: &str) -> Error {
    Error::Corrupted {
        what: what.into(),
        reason: malformed.to_string(),
    }
}

#[cfg(test)]
mod tests;

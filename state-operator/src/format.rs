//! The operator snapshot format: a versioned header with the meta info of every state,
//! then the states' partitions, each with its own checksum.
//!
//! Integers are big-endian; a *string* is a `u16` byte length followed by that many bytes
//! of UTF-8.
//!
//! # Header
//!
//! A frame of [`state_format::frame`] (magic [`MAGIC`], `"SNPO"`; version [`CURRENT_VERSION`])
//! around this body:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | state count | `u16` | number of states that follow |
//! | per state: name | string | registered name, unique within the header |
//! | per state: mode | `u8` | [`DistributionMode::code`]: 0 split-distribute, 1 union, 2 broadcast |
//! | per state: value serializer | string | of list elements, or of broadcast values |
//! | per state: key serializer | string | of broadcast keys; empty for lists |
//!
//! # Partitions
//!
//! After the header come the states in header order. A list state is one partition per
//! element (what split-distribute redistributes); a broadcast state is one partition holding
//! the whole map. The [`OperatorStreamStateHandle`] records each partition's stream offset
//! per state name, with the state's mode.
//!
//! | partition | layout |
//! |---|---|
//! | list element | `u32` length, the element's bytes, `u32` CRC-32C of the length and bytes |
//! | broadcast map | `u32` entry count, per entry (`u32` key length, key, `u32` value length, value) in key order, `u32` CRC-32C of everything before it in the partition |
//!
//! Every partition is read at its offset and checked on its own, so an instance reads just
//! the partitions a repartitioning gave it. A length that reaches past the recorded stream
//! size is reported as corrupt before anything is allocated for it.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use state_api::{
    DistributionMode, Error, OperatorStateMetaInfo, OperatorStreamStateHandle, Result,
    StateInputStream,
};
use state_format::frame::{BodyCursor, BodyError, FrameFormat, put_str};

/// First four bytes of every operator snapshot: `"SNPO"` in ASCII.
pub const MAGIC: u32 = 0x534E_504F;

/// The format version this build writes, and the newest one it reads.
pub const CURRENT_VERSION: u32 = 1;

/// Largest header body, in bytes (1 MiB): room for thousands of states.
pub const MAX_BODY_LEN: u32 = 1024 * 1024;

const HEADER: &str = "operator snapshot header";

const FORMAT: FrameFormat = FrameFormat {
    magic: MAGIC,
    current_version: CURRENT_VERSION,
    max_body_len: MAX_BODY_LEN,
    what: HEADER,
    kind: "snapstate operator snapshot",
};

/// Bytes one state takes in the header at least: three empty strings and the mode.
const MIN_STATE_LEN: usize = 3 * 2 + 1;

/// The versioned header of an operator snapshot: the meta info of every state, in the order
/// the partitions follow.
///
/// ```
/// use state_api::OperatorStateMetaInfo;
/// use state_operator::format::OperatorSnapshotHeader;
///
/// let header = OperatorSnapshotHeader::new(vec![
///     OperatorStateMetaInfo::split_list("offsets", "u64-be"),
///     OperatorStateMetaInfo::broadcast("rules", "string", "bytes"),
/// ]);
/// let mut bytes = Vec::new();
/// header.write_to(&mut bytes)?;
/// assert_eq!(OperatorSnapshotHeader::read_from(&mut bytes.as_slice())?, header);
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSnapshotHeader {
    states: Vec<OperatorStateMetaInfo>,
}

impl OperatorSnapshotHeader {
    /// A header describing `states`.
    pub fn new(states: Vec<OperatorStateMetaInfo>) -> Self {
        OperatorSnapshotHeader { states }
    }

    /// The meta info of every state, in partition order.
    pub fn states(&self) -> &[OperatorStateMetaInfo] {
        &self.states
    }

    /// The meta info of the state named `name`.
    pub fn state(&self, name: &str) -> Option<&OperatorStateMetaInfo> {
        self.states.iter().find(|state| state.name == name)
    }

    /// Writes the header; returns the bytes written.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a header that could not be read back (more than
    /// 65535 states, duplicate names, a string over 65535 bytes, a body over
    /// [`MAX_BODY_LEN`]); [`Error::Stream`] when `out` fails.
    pub fn write_to(&self, out: &mut dyn Write) -> Result<u64> {
        let count = u16::try_from(self.states.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "{HEADER} cannot describe {} states, at most {} are allowed",
                self.states.len(),
                u16::MAX
            ))
        })?;
        if let Some(name) = first_duplicate(&self.states) {
            return Err(Error::InvalidArgument(format!(
                "{HEADER}: two states are named `{name}`"
            )));
        }
        let mut body = count.to_be_bytes().to_vec();
        for (index, state) in self.states.iter().enumerate() {
            let field = |part| StateField(index, part);
            put_str(&mut body, &state.name, &field("name"))?;
            body.push(state.mode.code());
            put_str(
                &mut body,
                &state.value_serializer,
                &field("value serializer"),
            )?;
            put_str(&mut body, &state.key_serializer, &field("key serializer"))?;
        }
        FORMAT.write(out, &body)
    }

    /// Reads a header written by [`write_to`](Self::write_to), leaving `input` at the first
    /// partition.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], [`Error::Corrupted`] and [`Error::UnsupportedVersion`] naming
    /// the header field (see [`state_format::frame`]), [`Error::Stream`] when `input` fails.
    pub fn read_from(input: &mut dyn Read) -> Result<Self> {
        FORMAT.read(input, |_version, body| parse_body(body))
    }
}

/// `operator snapshot header: state <index> <part>`.
struct StateField(usize, &'static str);

impl fmt::Display for StateField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HEADER}: state {} {}", self.0, self.1)
    }
}

fn first_duplicate(states: &[OperatorStateMetaInfo]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(states.len());
    states
        .iter()
        .map(|state| state.name.as_str())
        .find(|name| !seen.insert(*name))
}

fn parse_body(bytes: &[u8]) -> Result<OperatorSnapshotHeader, BodyError> {
    let mut body = BodyCursor::new(bytes);
    let count = u16::from_be_bytes(body.array(&format_args!("{HEADER}: state count"))?);
    let mut states = Vec::with_capacity(usize::from(count).min(body.rest().len() / MIN_STATE_LEN));
    for index in 0..usize::from(count) {
        let field = |part| StateField(index, part);
        let name = body.string(&field("name"))?;
        let [code] = body.array(&field("mode"))?;
        let mode = DistributionMode::from_code(code).ok_or_else(|| Error::Corrupted {
            what: field("mode").to_string(),
            reason: format!("unknown distribution mode code {code}, known are 0, 1 and 2"),
        })?;
        states.push(OperatorStateMetaInfo {
            name,
            mode,
            value_serializer: body.string(&field("value serializer"))?,
            key_serializer: body.string(&field("key serializer"))?,
        });
    }
    if !body.rest().is_empty() {
        return Err(BodyError::Invalid(Error::Corrupted {
            what: format!("{HEADER}: body"),
            reason: format!(
                "{} bytes left over after the last of {count} states, at body offset {}",
                body.rest().len(),
                body.offset()
            ),
        }));
    }
    if let Some(name) = first_duplicate(&states) {
        return Err(BodyError::Invalid(Error::Corrupted {
            what: format!("{HEADER}: body"),
            reason: format!("two states are named `{name}`"),
        }));
    }
    Ok(OperatorSnapshotHeader { states })
}

/// Writes partitions after a header and tracks their offsets.
pub struct PartitionWriter<'a> {
    out: &'a mut dyn Write,
    pos: u64,
    buffer: Vec<u8>,
}

impl fmt::Debug for PartitionWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("pos", &self.pos)
            .finish()
    }
}

impl<'a> PartitionWriter<'a> {
    /// A writer whose next byte lands at stream offset `pos`.
    pub fn new(out: &'a mut dyn Write, pos: u64) -> Self {
        PartitionWriter {
            out,
            pos,
            buffer: Vec::new(),
        }
    }

    /// Writes one list element partition; returns its offset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an element over 4 GiB, [`Error::Stream`] when the
    /// stream fails.
    pub fn write_list_element(&mut self, element: &[u8]) -> Result<u64> {
        self.buffer.clear();
        put_len(&mut self.buffer, element.len(), "list element")?;
        self.buffer.extend_from_slice(element);
        self.flush_partition()
    }

    /// Writes one broadcast map partition; returns its offset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a map of more than `u32::MAX` entries or a key or
    /// value over 4 GiB, [`Error::Stream`] when the stream fails.
    pub fn write_broadcast<'e>(
        &mut self,
        entries: impl ExactSizeIterator<Item = (&'e [u8], &'e [u8])>,
    ) -> Result<u64> {
        self.buffer.clear();
        put_len(&mut self.buffer, entries.len(), "broadcast map")?;
        for (key, value) in entries {
            put_len(&mut self.buffer, key.len(), "broadcast key")?;
            self.buffer.extend_from_slice(key);
            put_len(&mut self.buffer, value.len(), "broadcast value")?;
            self.buffer.extend_from_slice(value);
        }
        self.flush_partition()
    }

    /// Appends the checksum to the buffered partition and writes it.
    fn flush_partition(&mut self) -> Result<u64> {
        let crc = crc32c::crc32c(&self.buffer);
        self.buffer.extend_from_slice(&crc.to_be_bytes());
        self.out
            .write_all(&self.buffer)
            .map_err(|e| Error::stream("writing an operator state partition", e))?;
        let offset = self.pos;
        self.pos += self.buffer.len() as u64;
        Ok(offset)
    }
}

fn put_len(out: &mut Vec<u8>, len: usize, what: &str) -> Result<()> {
    let len = u32::try_from(len).map_err(|_| {
        Error::InvalidArgument(format!(
            "{what} of {len} is over the format's limit of {}",
            u32::MAX
        ))
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Reads the header and partitions of one [`OperatorStreamStateHandle`].
///
/// Every error names the stream (`Error::Snapshot { location, .. }`) and, for a partition,
/// the state, the partition's index and its offset.
pub struct OperatorSnapshotReader {
    location: String,
    header: OperatorSnapshotHeader,
    input: Box<dyn StateInputStream>,
    size: u64,
}

impl fmt::Debug for OperatorSnapshotReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorSnapshotReader")
            .field("location", &self.location)
            .field("size", &self.size)
            .finish()
    }
}

impl OperatorSnapshotReader {
    /// Opens the stream of `handle` and reads its header.
    ///
    /// # Errors
    ///
    /// [`Error::Snapshot`] around the header's error, or [`Error::NotFound`] for a missing
    /// file.
    pub fn open(handle: &OperatorStreamStateHandle) -> Result<Self> {
        let delegate = handle.delegate();
        let location = delegate.describe();
        let mut input = delegate.open()?;
        let header =
            OperatorSnapshotHeader::read_from(&mut input).map_err(|source| Error::Snapshot {
                location: location.clone(),
                source: Box::new(source),
            })?;
        Ok(OperatorSnapshotReader {
            location,
            header,
            input,
            size: delegate.state_size(),
        })
    }

    /// The header.
    pub fn header(&self) -> &OperatorSnapshotHeader {
        &self.header
    }

    /// The stream, as errors name it.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Reads the list element partition `index` of `state` at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::Snapshot`] around [`Error::Truncated`] or [`Error::Corrupted`] naming the
    /// partition.
    pub fn read_list_element(&mut self, state: &str, index: usize, offset: u64) -> Result<Vec<u8>> {
        let mut partition = self.partition(state, index, offset)?;
        let len = partition.len("element length")?;
        let element = partition.bytes(len, "element")?;
        partition.finish()?;
        Ok(element)
    }

    /// Reads the broadcast map partition of `state` at `offset`.
    ///
    /// # Errors
    ///
    /// As [`read_list_element`](Self::read_list_element).
    pub fn read_broadcast(&mut self, state: &str, offset: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut partition = self.partition(state, 0, offset)?;
        let count = partition.u32("entry count")?;
        // Each entry takes at least its two lengths.
        partition.check_fits(u64::from(count) * 8, "entry count")?;
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let key_len = partition.len("key length")?;
            let key = partition.bytes(key_len, "key")?;
            let value_len = partition.len("value length")?;
            let value = partition.bytes(value_len, "value")?;
            entries.push((key, value));
        }
        partition.finish()?;
        Ok(entries)
    }

    fn partition(&mut self, state: &str, index: usize, offset: u64) -> Result<Partition<'_>> {
        let what = format!("operator state `{state}` partition {index} at offset {offset}");
        let left = self
            .size
            .checked_sub(offset)
            .ok_or_else(|| Error::Snapshot {
                location: self.location.clone(),
                source: Box::new(Error::Corrupted {
                    what: what.clone(),
                    reason: format!(
                        "the offset is past the end of the {}-byte stream",
                        self.size
                    ),
                }),
            })?;
        self.input
            .seek(SeekFrom::Start(offset))
            .map_err(|e| Error::Snapshot {
                location: self.location.clone(),
                source: Box::new(Error::stream(format!("seeking to {what}"), e)),
            })?;
        Ok(Partition {
            input: &mut self.input,
            location: &self.location,
            what,
            crc: 0,
            left,
        })
    }
}

/// One partition being read: accumulates its checksum and bounds lengths by what is left
/// of the stream.
struct Partition<'a> {
    input: &'a mut Box<dyn StateInputStream>,
    location: &'a str,
    what: String,
    crc: u32,
    left: u64,
}

impl Partition<'_> {
    fn error(&self, error: Error) -> Error {
        Error::Snapshot {
            location: self.location.to_owned(),
            source: Box::new(error),
        }
    }

    fn check_fits(&self, len: u64, field: &str) -> Result<()> {
        if len > self.left {
            return Err(self.error(Error::Corrupted {
                what: format!("{} {field}", self.what),
                reason: format!(
                    "declares {len} bytes, but only {} are left in the stream",
                    self.left
                ),
            }));
        }
        Ok(())
    }

    fn raw(&mut self, len: usize, field: &str) -> Result<Vec<u8>> {
        self.check_fits(len as u64, field)?;
        let mut bytes = vec![0; len];
        self.input.read_exact(&mut bytes).map_err(|e| {
            let what = format!("{} {field}", self.what);
            self.error(match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::Truncated {
                    what,
                    reason: format!("the stream ends inside this {len}-byte field"),
                },
                _ => Error::stream(format!("reading {what}"), e),
            })
        })?;
        self.left -= len as u64;
        Ok(bytes)
    }

    fn bytes(&mut self, len: usize, field: &str) -> Result<Vec<u8>> {
        let bytes = self.raw(len, field)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes);
        Ok(bytes)
    }

    fn u32(&mut self, field: &str) -> Result<u32> {
        let bytes = self.bytes(4, field)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn len(&mut self, field: &str) -> Result<usize> {
        let len = self.u32(field)?;
        // The bytes and the trailing checksum must fit.
        self.check_fits(u64::from(len) + 4, field)?;
        Ok(len as usize)
    }

    fn finish(mut self) -> Result<()> {
        let actual = self.crc;
        let bytes = self.raw(4, "checksum")?;
        let recorded = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if recorded != actual {
            return Err(self.error(Error::Corrupted {
                what: self.what.clone(),
                reason: format!(
                    "crc32c of the partition is {actual:#010x}, the stream records {recorded:#010x}"
                ),
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `body` as a header with a valid checksum, so the body's own checks are reached.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        FORMAT.write(&mut bytes, body).unwrap();
        bytes
    }

    fn state(body: &mut Vec<u8>, name: &str, mode: u8, value: &str, key: &str) {
        for (i, part) in [name, "", value, key].iter().enumerate() {
            if i == 1 {
                body.push(mode);
                continue;
            }
            body.extend_from_slice(&(part.len() as u16).to_be_bytes());
            body.extend_from_slice(part.as_bytes());
        }
    }

    #[track_caller]
    fn check(body: &[u8], expected: &str) {
        let err = OperatorSnapshotHeader::read_from(&mut framed(body).as_slice()).unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }

    #[test]
    fn a_well_formed_body_reads_back() {
        let mut body = 2u16.to_be_bytes().to_vec();
        state(&mut body, "offsets", 0, "u64-be", "");
        state(&mut body, "rules", 2, "bytes", "string");
        let header = OperatorSnapshotHeader::read_from(&mut framed(&body).as_slice()).unwrap();
        assert_eq!(
            header.states(),
            [
                OperatorStateMetaInfo::split_list("offsets", "u64-be"),
                OperatorStateMetaInfo::broadcast("rules", "string", "bytes"),
            ]
        );
    }

    #[test]
    fn an_unknown_mode_is_corrupted() {
        let mut body = 1u16.to_be_bytes().to_vec();
        state(&mut body, "offsets", 9, "u64-be", "");
        check(&body, "unknown distribution mode code 9");
    }

    #[test]
    fn bytes_after_the_last_state_are_corrupted() {
        let mut body = 1u16.to_be_bytes().to_vec();
        state(&mut body, "offsets", 0, "u64-be", "");
        body.push(0);
        check(&body, "1 bytes left over");
    }

    #[test]
    fn a_duplicate_name_is_corrupted() {
        let mut body = 2u16.to_be_bytes().to_vec();
        state(&mut body, "offsets", 0, "u64-be", "");
        state(&mut body, "offsets", 1, "u64-be", "");
        check(&body, "two states are named `offsets`");
    }

    #[test]
    fn a_count_beyond_the_body_is_reported_not_allocated() {
        let body = u16::MAX.to_be_bytes().to_vec();
        let err = OperatorSnapshotHeader::read_from(&mut framed(&body).as_slice()).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { .. } | Error::Corrupted { .. }),
            "{err}"
        );
    }

    #[test]
    fn headers_that_could_not_be_read_back_are_refused() {
        let duplicate = OperatorSnapshotHeader::new(vec![
            OperatorStateMetaInfo::split_list("a", "bytes"),
            OperatorStateMetaInfo::union_list("a", "bytes"),
        ]);
        let err = duplicate.write_to(&mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let long = OperatorSnapshotHeader::new(vec![OperatorStateMetaInfo::split_list(
            "x".repeat(70_000),
            "bytes",
        )]);
        let err = long.write_to(&mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}

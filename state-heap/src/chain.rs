//! The chain of an incremental heap checkpoint: the full *base* file it builds on and the
//! *delta* files after it, in order, and the history of which chain the next checkpoint
//! builds on.
//!
//! # The chain description
//!
//! The meta data stream of a `heap-incremental` checkpoint is the keyed snapshot header
//! ([`KeyedBackendSerializationProxy`](state_format::KeyedBackendSerializationProxy): the
//! states and the decorator), the [`FileManifest`](state_format::file_manifest::FileManifest)
//! (size and CRC-32C of every file, for tools), then this frame ([`state_format::frame`], magic
//! `"SNPH"`, version 1). Integers are big-endian; a string is a `u16` length and UTF-8.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | file count | `u32` | files of the chain, base first, then deltas oldest first |
//! | per file: name | string | its name in the handle (`HandleAndLocalPath::local_path`) |
//! | per file: kind | `u8` | 0 base (a full snapshot), 1 delta ([`crate::format`]'s delta entries) |
//! | per file: checkpoint | `u64` | the checkpoint that wrote it |
//! | per file: first key group | `u32` | the file covers this key group ... |
//! | per file: key-group count | `u32` | ... and this many after it, at least 1 |
//! | per file, per key group: offset | `u64` | where the key group's section starts |
//! | per file, per key group: checksum | `u32` | CRC-32C of the key group's id and data |
//! | per file: end | `u64` | where the last section ends (the file's length) |
//!
//! Every file is a keyed snapshot stream of the canonical format
//! ([`state_format::keyed_format`]) with its own header, so restore reads each file's key
//! groups with their checksums exactly as it reads a full snapshot, in the format version
//! that file's header records: a backend restored from a chain an older release wrote goes
//! on with files of the current version after the old ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::{Error, KeyGroupRange, Result, StreamStateHandle};
use state_format::frame::{BodyCursor, BodyError, FrameFormat, put_str};
use state_format::{KeyGroupRangeOffsets, KeyGroupsStateHandle};

/// Whether a chain file holds a full snapshot or the changes after the files before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A full snapshot in the canonical format.
    Base,
    /// Puts, deletes and clears in the canonical entry encoding ([`crate::format`]).
    Delta,
}

/// One file of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainFile {
    /// The file's name in the handle.
    pub(crate) name: String,
    /// Its shared state registry key.
    pub(crate) key: String,
    pub(crate) kind: FileKind,
    /// The checkpoint that wrote it.
    pub(crate) checkpoint_id: CheckpointId,
    /// Where each key group's section starts.
    pub(crate) offsets: KeyGroupRangeOffsets,
    /// CRC-32C of each key group.
    pub(crate) checksums: Vec<u32>,
    /// Where the last section ends: the file's size.
    pub(crate) end: u64,
    /// CRC-32C of the whole file.
    pub(crate) crc: u32,
}

impl ChainFile {
    /// The key-groups handle to read this file's sections through.
    pub(crate) fn key_groups_handle(
        &self,
        stream: Arc<dyn StreamStateHandle>,
    ) -> Result<KeyGroupsStateHandle> {
        KeyGroupsStateHandle::new(self.offsets.clone(), stream)
            .with_end(self.end)
            .with_checksums(self.checksums.clone())
    }
}

/// A base and the deltas after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) files: Vec<ChainFile>,
}

impl Chain {
    /// Bytes of the base file.
    pub(crate) fn base_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|file| file.kind == FileKind::Base)
            .map(|file| file.end)
            .sum()
    }

    /// Bytes of the delta files.
    pub(crate) fn delta_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|file| file.kind == FileKind::Delta)
            .map(|file| file.end)
            .sum()
    }

    /// Writes the chain description frame.
    pub(crate) fn write_to(&self, out: &mut dyn std::io::Write) -> Result<u64> {
        let count = u32::try_from(self.files.len())
            .map_err(|_| Error::InvalidArgument("a chain of over 2^32 files".into()))?;
        let mut body = count.to_be_bytes().to_vec();
        for file in &self.files {
            put_str(&mut body, &file.name, &"chain file name")?;
            body.push(match file.kind {
                FileKind::Base => 0,
                FileKind::Delta => 1,
            });
            body.extend_from_slice(&file.checkpoint_id.get().to_be_bytes());
            let range = file.offsets.range();
            body.extend_from_slice(&range.start().get().to_be_bytes());
            body.extend_from_slice(&range.len().to_be_bytes());
            for (group, crc) in range.iter().zip(&file.checksums) {
                body.extend_from_slice(&file.offsets.offset(group)?.to_be_bytes());
                body.extend_from_slice(&crc.to_be_bytes());
            }
            body.extend_from_slice(&file.end.to_be_bytes());
        }
        CHAIN_FORMAT.write(out, &body)
    }

    /// Reads a chain description written by [`write_to`](Self::write_to). Registry keys
    /// and file checksums are not part of it: the caller fills them in from the handle
    /// and the manifest.
    pub(crate) fn read_from(input: &mut dyn std::io::Read) -> Result<Self> {
        CHAIN_FORMAT.read(input, |_, body| {
            let what = CHAIN_FORMAT.what;
            let mut cursor = BodyCursor::new(body);
            let count = u32::from_be_bytes(cursor.array(&format_args!("{what}: file count"))?);
            let mut files = Vec::new();
            for index in 0..count {
                let field = |part: &str| format!("{what}: file {index} {part}");
                let name = cursor.string(&field("name"))?;
                let kind = match cursor.array::<1>(&field("kind"))?[0] {
                    0 => FileKind::Base,
                    1 => FileKind::Delta,
                    other => {
                        return Err(BodyError::Invalid(Error::Corrupted {
                            what: field("kind"),
                            reason: format!("unknown kind {other}"),
                        }));
                    }
                };
                let checkpoint_id = u64::from_be_bytes(cursor.array(&field("checkpoint"))?);
                let start = u32::from_be_bytes(cursor.array(&field("first key group"))?);
                let len = u32::from_be_bytes(cursor.array(&field("key-group count"))?);
                let invalid_range = || {
                    BodyError::Invalid(Error::Corrupted {
                        what: field("key groups"),
                        reason: format!("{len} key groups from {start}"),
                    })
                };
                let end_group = start
                    .checked_add(len)
                    .and_then(|end| end.checked_sub(1))
                    .filter(|_| len > 0)
                    .ok_or_else(invalid_range)?;
                let range = KeyGroupRange::new(start, end_group).map_err(|_| invalid_range())?;
                // Each key group takes 12 bytes: refuse counts the body cannot hold before
                // allocating for them.
                if cursor.rest().len() / 12 < len as usize {
                    return Err(invalid_range());
                }
                let mut offsets = Vec::with_capacity(len as usize);
                let mut checksums = Vec::with_capacity(len as usize);
                for group in range.iter() {
                    let at = |part: &str| field(&format!("key group {group} {part}"));
                    offsets.push(u64::from_be_bytes(cursor.array(&at("offset"))?));
                    checksums.push(u32::from_be_bytes(cursor.array(&at("checksum"))?));
                }
                let end = u64::from_be_bytes(cursor.array(&field("end"))?);
                let offsets = KeyGroupRangeOffsets::with_offsets(range, offsets)
                    .map_err(BodyError::Invalid)?;
                files.push(ChainFile {
                    name,
                    key: String::new(),
                    kind,
                    checkpoint_id: CheckpointId::new(checkpoint_id),
                    offsets,
                    checksums,
                    end,
                    crc: 0,
                });
            }
            if !cursor.rest().is_empty() {
                return Err(BodyError::Invalid(Error::Corrupted {
                    what: format!("{what}: body"),
                    reason: format!("{} bytes left over", cursor.rest().len()),
                }));
            }
            Ok(Chain { files })
        })
    }
}

const CHAIN_FORMAT: FrameFormat = FrameFormat {
    magic: 0x534E_5048,
    current_version: 1,
    max_body_len: 64 * 1024 * 1024,
    what: "heap incremental chain",
    kind: "snapstate heap incremental chain",
};

/// A checkpoint whose synchronous part ran and that has not completed yet.
#[derive(Debug)]
struct Pending {
    /// The sequence number of the segment its synchronous part sealed.
    sequence: u64,
    /// Its chain, once its asynchronous part wrote it.
    chain: Option<Arc<Chain>>,
}

/// The last completed checkpoint: what the next checkpoint builds on.
#[derive(Debug, Clone)]
pub(crate) struct Completed {
    pub(crate) checkpoint_id: CheckpointId,
    /// The sequence number of the segment its synchronous part sealed: the next delta holds
    /// the segments after it.
    pub(crate) sequence: u64,
    pub(crate) chain: Arc<Chain>,
}

/// Which chain each checkpoint of one backend instance wrote, and which one the next
/// checkpoint builds on.
#[derive(Debug)]
pub(crate) struct ChainHistory {
    /// Identifies the backend instance in file names and registry keys.
    pub(crate) backend_id: String,
    pending: BTreeMap<CheckpointId, Pending>,
    last_completed: Option<Completed>,
}

impl ChainHistory {
    /// A history for a fresh backend instance with a new identifier.
    pub(crate) fn fresh() -> Self {
        ChainHistory {
            backend_id: state_api::new_backend_identifier("heap"),
            pending: BTreeMap::new(),
            last_completed: None,
        }
    }

    /// Continues from checkpoint `checkpoint_id` (restored, its chain `chain`) under a new
    /// identifier.
    pub(crate) fn continue_from(&mut self, checkpoint_id: CheckpointId, chain: Chain) {
        self.pending.clear();
        self.last_completed = Some(Completed {
            checkpoint_id,
            sequence: 0,
            chain: Arc::new(chain),
        });
    }

    /// What checkpoint `checkpoint_id`, whose synchronous part sealed segment `sequence`,
    /// builds on; records it as pending.
    pub(crate) fn start(
        &mut self,
        checkpoint_id: CheckpointId,
        sequence: u64,
    ) -> Option<Completed> {
        self.pending.insert(
            checkpoint_id,
            Pending {
                sequence,
                chain: None,
            },
        );
        self.last_completed.clone()
    }

    /// The asynchronous part of checkpoint `checkpoint_id` (segment `sequence`) wrote
    /// `chain`. A checkpoint id taken again since keeps the newer attempt.
    pub(crate) fn written(
        &mut self,
        checkpoint_id: CheckpointId,
        sequence: u64,
        chain: Arc<Chain>,
    ) {
        if let Some(pending) = self.pending.get_mut(&checkpoint_id)
            && pending.sequence == sequence
        {
            pending.chain = Some(chain);
        }
    }

    /// Checkpoint `checkpoint_id` completed: if this instance wrote it, its chain becomes
    /// the base of the next checkpoint and older pending checkpoints are forgotten; returns
    /// the sequence number of its segment, through which changes are no longer needed. A
    /// checkpoint not written here (a savepoint, an aborted one, one still running or
    /// older than the last completed) changes nothing.
    pub(crate) fn complete(&mut self, checkpoint_id: CheckpointId) -> Option<u64> {
        let pending = self.pending.get(&checkpoint_id)?;
        let chain = pending.chain.clone()?;
        let sequence = pending.sequence;
        if self
            .last_completed
            .as_ref()
            .is_some_and(|last| last.sequence > sequence)
        {
            self.pending.remove(&checkpoint_id);
            return None;
        }
        self.last_completed = Some(Completed {
            checkpoint_id,
            sequence,
            chain,
        });
        self.pending
            .retain(|_, pending| pending.sequence > sequence);
        Some(sequence)
    }

    /// Checkpoint `checkpoint_id` was aborted: it will never be a base. Its changes stay
    /// for the next checkpoint.
    pub(crate) fn abort(&mut self, checkpoint_id: CheckpointId) {
        self.pending.remove(&checkpoint_id);
    }

    /// The checkpoint the next one builds on.
    #[cfg(test)]
    pub(crate) fn last_completed(&self) -> Option<u64> {
        self.last_completed
            .as_ref()
            .map(|last| last.checkpoint_id)
            .map(CheckpointId::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, kind: FileKind, range: KeyGroupRange) -> ChainFile {
        let offsets: Vec<u64> = range
            .iter()
            .map(|g| 100 + u64::from(g.get()) * 10)
            .collect();
        ChainFile {
            name: name.into(),
            key: String::new(),
            kind,
            checkpoint_id: CheckpointId::new(7),
            offsets: KeyGroupRangeOffsets::with_offsets(range, offsets).expect("one per group"),
            checksums: range.iter().map(|g| g.get() * 3).collect(),
            end: 5000,
            crc: 0,
        }
    }

    fn chain() -> Chain {
        let range = KeyGroupRange::new(3, 9).expect("valid range");
        Chain {
            files: vec![
                file("a.base", FileKind::Base, range),
                file("b.delta", FileKind::Delta, range),
            ],
        }
    }

    #[test]
    fn the_description_round_trips() {
        let mut bytes = Vec::new();
        chain().write_to(&mut bytes).expect("writes");
        let back = Chain::read_from(&mut bytes.as_slice()).expect("reads");
        assert_eq!(back, chain());
    }

    #[test]
    fn damage_to_the_description_is_reported() {
        let mut bytes = Vec::new();
        chain().write_to(&mut bytes).expect("writes");
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            let err =
                Chain::read_from(&mut damaged.as_slice()).expect_err("a flipped bit is found");
            assert!(
                matches!(
                    err,
                    Error::Corrupted { .. }
                        | Error::Truncated { .. }
                        | Error::UnsupportedVersion { .. }
                ),
                "byte {at}: {err}"
            );
        }
        for cut in 0..bytes.len() {
            let err = Chain::read_from(&mut &bytes[..cut]).expect_err("a cut is found");
            assert!(
                matches!(err, Error::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn completion_moves_the_base_only_forward() {
        let mut history = ChainHistory::fresh();
        assert!(
            history.start(CheckpointId::new(1), 1).is_none(),
            "the first checkpoint has no base"
        );
        assert!(history.start(CheckpointId::new(2), 2).is_none());
        history.written(CheckpointId::new(2), 2, Arc::new(chain()));
        assert_eq!(
            history.complete(CheckpointId::new(1)),
            None,
            "checkpoint 1 has not written its chain"
        );
        assert_eq!(history.complete(CheckpointId::new(2)), Some(2));
        assert_eq!(history.last_completed(), Some(2));
        history.written(CheckpointId::new(1), 1, Arc::new(Chain::default()));
        assert_eq!(
            history.complete(CheckpointId::new(1)),
            None,
            "checkpoint 1 was forgotten when 2 completed"
        );
        let base = history
            .start(CheckpointId::new(3), 3)
            .expect("checkpoint 3 builds on 2");
        assert_eq!((base.checkpoint_id.get(), base.sequence), (2, 2));
    }

    #[test]
    fn an_aborted_checkpoint_never_becomes_the_base() {
        let mut history = ChainHistory::fresh();
        history.start(CheckpointId::new(4), 1);
        history.written(CheckpointId::new(4), 1, Arc::new(chain()));
        history.abort(CheckpointId::new(4));
        assert_eq!(history.complete(CheckpointId::new(4)), None);
        assert_eq!(history.last_completed(), None);
    }

    #[test]
    fn a_checkpoint_id_taken_again_keeps_the_newer_attempt() {
        let mut history = ChainHistory::fresh();
        history.start(CheckpointId::new(5), 1);
        history.start(CheckpointId::new(5), 2);
        // The first attempt's asynchronous part finishes late.
        history.written(CheckpointId::new(5), 1, Arc::new(Chain::default()));
        assert_eq!(
            history.complete(CheckpointId::new(5)),
            None,
            "the newer attempt has not written yet"
        );
        history.written(CheckpointId::new(5), 2, Arc::new(chain()));
        assert_eq!(history.complete(CheckpointId::new(5)), Some(2));
    }
}

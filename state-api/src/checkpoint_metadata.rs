//! [`CheckpointMetadata`]: what a coordinator records of a completed checkpoint, and how a
//! local checkpoint directory keeps it.
//!
//! A checkpoint is complete when every instance's snapshot is stored *and* its metadata
//! (the handles of all instances) is committed: before that, restore cannot find it. In a
//! [`LocalCheckpointStorage`](crate::LocalCheckpointStorage) the metadata of checkpoint
//! `<id>` is the file `chk-<id>/_metadata` ([`METADATA_FILE`]), written to a hidden
//! temporary name, synced and renamed into place, so a crash leaves either no metadata or
//! all of it. Tools (the `snapstate` command line) list, inspect and verify checkpoints
//! from these files alone.
//!
//! # Format
//!
//! A frame of [`crate::frame`] (magic `"SNMD"`, version 1) around a JSON body: the
//! [`CheckpointMetadata`] as serde writes it, with handles under their stable tags
//! (`key-groups`, `incremental-remote`, `file`, `bytes`, ...). JSON keeps the metadata
//! readable by other tools; the frame's CRC-32C makes a damaged file an error instead of
//! wrong handles.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::frame::{BodyError, FrameFormat};
use crate::{CheckpointType, Error, KeyedStateHandle, OperatorStreamStateHandle, Result};

/// Name of the metadata file inside a checkpoint's directory.
pub const METADATA_FILE: &str = "_metadata";

/// The frame of a metadata file.
const FORMAT: FrameFormat = FrameFormat {
    magic: 0x534E_4D44,
    current_version: 1,
    max_body_len: 256 * 1024 * 1024,
    what: "checkpoint metadata",
    kind: "snapstate checkpoint metadata file",
};

/// The snapshots one parallel instance contributed to a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceSnapshot {
    /// The instance's index among the job's parallelism.
    pub index: u32,
    /// Its keyed state handles (job-manager-owned), usually one.
    #[serde(default)]
    pub keyed: Vec<Arc<dyn KeyedStateHandle>>,
    /// Its operator state handles, usually none or one.
    #[serde(default)]
    pub operator: Vec<OperatorStreamStateHandle>,
}

/// A completed checkpoint or savepoint: which instances stored what.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use state_api::checkpoint_metadata::{CheckpointMetadata, InstanceSnapshot};
/// use state_api::{ByteStreamStateHandle, CheckpointType, KeyGroupRange, KeyGroupRangeOffsets};
/// use state_api::{KeyGroupsStateHandle, LocalCheckpointStorage};
///
/// let root = tempfile::tempdir().unwrap();
/// let storage = LocalCheckpointStorage::new(root.path())?;
/// let stream = Arc::new(ByteStreamStateHandle::new("state", vec![0; 8]));
/// let offsets = KeyGroupRangeOffsets::with_offsets(KeyGroupRange::new(0, 1)?, vec![0, 4])?;
/// let mut metadata = CheckpointMetadata::new(7, 1_700_000_000_000, CheckpointType::Checkpoint, 128);
/// metadata.instances.push(InstanceSnapshot {
///     index: 0,
///     keyed: vec![Arc::new(KeyGroupsStateHandle::new(offsets, stream))],
///     operator: vec![],
/// });
/// storage.commit_checkpoint(&metadata)?;
/// assert_eq!(storage.completed_checkpoints()?, [7]);
/// assert_eq!(storage.load_checkpoint(7)?.instances[0].keyed[0].state_size(), 8);
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint's id.
    pub checkpoint_id: u64,
    /// When it was triggered, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Checkpoint or savepoint.
    pub checkpoint_type: CheckpointType,
    /// Max parallelism (number of key groups) of the job.
    pub max_parallelism: u32,
    /// Free-form facts about the job for tools and people (`backend`, `strategy`,
    /// `compression`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// What each instance stored, by instance.
    #[serde(default)]
    pub instances: Vec<InstanceSnapshot>,
}

impl CheckpointMetadata {
    /// Metadata of a checkpoint without instances or properties yet.
    pub fn new(
        checkpoint_id: u64,
        timestamp: u64,
        checkpoint_type: CheckpointType,
        max_parallelism: u32,
    ) -> Self {
        CheckpointMetadata {
            checkpoint_id,
            timestamp,
            checkpoint_type,
            max_parallelism,
            properties: BTreeMap::new(),
            instances: Vec::new(),
        }
    }

    /// Every keyed handle of every instance.
    pub fn keyed_handles(&self) -> Vec<Arc<dyn KeyedStateHandle>> {
        self.instances
            .iter()
            .flat_map(|instance| instance.keyed.iter().cloned())
            .collect()
    }

    /// Every operator handle of every instance, by instance.
    pub fn operator_handles(&self) -> Vec<Vec<OperatorStreamStateHandle>> {
        self.instances
            .iter()
            .map(|instance| instance.operator.clone())
            .collect()
    }

    /// The metadata as stored: a frame around its JSON.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when a handle cannot be serialized or the JSON exceeds
    /// 256 MiB.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self).map_err(|err| {
            Error::InvalidArgument(format!(
                "checkpoint {} metadata does not serialize: {err}",
                self.checkpoint_id
            ))
        })?;
        let mut bytes = Vec::with_capacity(body.len() + 16);
        FORMAT.write(&mut bytes, &body)?;
        Ok(bytes)
    }

    /// Reads metadata written by [`to_bytes`](Self::to_bytes).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], [`Error::Corrupted`] (also for JSON that is not metadata, or
    /// names a handle tag no linked crate registers) and [`Error::UnsupportedVersion`],
    /// as [`crate::frame`] describes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut input = bytes;
        let metadata = FORMAT.read(&mut input, |_version, body| {
            serde_json::from_slice(body).map_err(|err| {
                BodyError::Invalid(Error::Corrupted {
                    what: "checkpoint metadata: body".into(),
                    reason: format!("not checkpoint metadata JSON: {err}"),
                })
            })
        })?;
        if !input.is_empty() {
            return Err(Error::Corrupted {
                what: "checkpoint metadata".into(),
                reason: format!("{} bytes follow the metadata frame", input.len()),
            });
        }
        Ok(metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ByteStreamStateHandle, KeyGroupRange, KeyGroupRangeOffsets, KeyGroupsStateHandle};

    fn metadata() -> CheckpointMetadata {
        let stream = Arc::new(ByteStreamStateHandle::new("state", vec![1; 6]));
        let offsets =
            KeyGroupRangeOffsets::with_offsets(KeyGroupRange::new(0, 2).unwrap(), vec![0, 2, 4])
                .unwrap();
        let mut metadata = CheckpointMetadata::new(3, 42, CheckpointType::Savepoint, 128);
        metadata.properties.insert("backend".into(), "heap".into());
        metadata.instances.push(InstanceSnapshot {
            index: 0,
            keyed: vec![Arc::new(KeyGroupsStateHandle::new(offsets, stream))],
            operator: vec![],
        });
        metadata
    }

    #[test]
    fn round_trips_through_bytes() {
        let bytes = metadata().to_bytes().unwrap();
        let back = CheckpointMetadata::from_bytes(&bytes).unwrap();
        assert_eq!(back.checkpoint_id, 3);
        assert_eq!(back.checkpoint_type, CheckpointType::Savepoint);
        assert_eq!(back.properties["backend"], "heap");
        assert_eq!(back.keyed_handles().len(), 1);
        assert_eq!(back.keyed_handles()[0].state_size(), 6);
    }

    #[test]
    fn damage_is_an_error_never_wrong_handles() {
        let bytes = metadata().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            let err = CheckpointMetadata::from_bytes(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. } | Error::Corrupted { .. }),
                "cut at {cut}: {err}"
            );
        }
        for pos in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[pos] ^= 0x04;
            let err = CheckpointMetadata::from_bytes(&flipped).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Truncated { .. }
                        | Error::Corrupted { .. }
                        | Error::UnsupportedVersion { .. }
                ),
                "byte {pos}: {err}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CheckpointMetadata::from_bytes(&longer).is_err());
    }
}

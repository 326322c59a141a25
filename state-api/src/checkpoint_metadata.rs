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
//! A frame of [`crate::frame`] (magic `"SNMD"`) around a JSON body: the
//! [`CheckpointMetadata`] as serde writes it, with handles under their stable tags
//! (`key-groups`, `incremental-remote`, `file`, `bytes`, ...). JSON keeps the metadata
//! readable by other tools; the frame's CRC-32C makes a damaged file an error instead of
//! wrong handles.
//!
//! | version | handles name their files |
//! | --- | --- |
//! | 1 | by absolute path (`/var/ck/chk-3/ab12`) or full object key |
//! | 2 | relative to the storage root (`chk-3/ab12`, `shared/cd34`); `job_id` recorded |
//!
//! Metadata is read inside a [`HandleScope`] of the storage that reads it (see
//! [`crate::storage_root`]): version 2 refuses every location outside the root; version 1's
//! absolute locations are re-rooted by their `chk-<id>/<name>` or `shared/<name>` tail, so
//! old checkpoints restore where they are and from a copy. Reading then validates the whole
//! checkpoint ([`CheckpointMetadata::validate`]) before anything uses a handle.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::frame::{BodyError, FRAME_LEN, FrameFormat};
use crate::storage_root::{AbsoluteLocations, HandleScope, StorageRoot};
use crate::{
    CheckpointType, Error, IncrementalRemoteKeyedStateHandle, KeyGroupRangeAssignment,
    KeyedStateHandle, OperatorStreamStateHandle, PlaceholderStreamStateHandle, Result,
};

/// Name of the metadata file inside a checkpoint's directory.
pub const METADATA_FILE: &str = "_metadata";

/// The frame of a metadata file.
const FORMAT: FrameFormat = FrameFormat {
    magic: 0x534E_4D44,
    current_version: 2,
    max_body_len: MAX_BODY_LEN,
    what: "checkpoint metadata",
    kind: "snapstate checkpoint metadata file",
};

/// Largest metadata body (JSON) a metadata file may hold.
const MAX_BODY_LEN: u32 = 256 * 1024 * 1024;

/// Largest metadata file: a frame around the largest body.
pub const MAX_METADATA_FILE_LEN: u64 = MAX_BODY_LEN as u64 + FRAME_LEN;

/// The identity of the job that writes a checkpoint storage: recorded in every checkpoint's
/// metadata, so a job resuming from a directory can tell its own checkpoints from another
/// job's. Not empty, at most 200 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// `id` as a job identity.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an empty id, one over 200 bytes or one with control
    /// characters.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "job id {id:?}: give 1 to 200 bytes without control characters"
            )));
        }
        Ok(JobId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        JobId::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// `body` (metadata JSON) framed as a metadata file of format `version`, as a tool that
/// edits metadata (a repair, a test crafting damaged checkpoints) writes it back; the JSON
/// is not checked.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for version 0, a version newer than this build writes, or
/// a body over 256 MiB.
pub fn frame_body(body: &[u8], version: u32) -> Result<Vec<u8>> {
    if version == 0 || version > FORMAT.current_version {
        return Err(Error::InvalidArgument(format!(
            "checkpoint metadata version {version}: this build writes 1..={}",
            FORMAT.current_version
        )));
    }
    let format = FrameFormat {
        current_version: version,
        ..FORMAT
    };
    let mut bytes = Vec::with_capacity(body.len() + FRAME_LEN as usize);
    format.write(&mut bytes, body)?;
    Ok(bytes)
}

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
    /// The job that wrote the checkpoint, when it said (always from format version 2 on
    /// for jobs that set one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
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
            job_id: None,
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

    /// Checks that the checkpoint was taken with `max_parallelism` key groups, the number
    /// the restoring job runs with: restoring it with another number would put keys into
    /// other key groups and silently lose state.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] naming both numbers.
    pub fn check_max_parallelism(&self, max_parallelism: u32) -> Result<()> {
        if self.max_parallelism == max_parallelism {
            return Ok(());
        }
        Err(Error::Incompatible {
            what: format!(
                "max parallelism (number of key groups) of checkpoint {}",
                self.checkpoint_id
            ),
            held: self.max_parallelism.to_string(),
            requested: max_parallelism.to_string(),
        })
    }

    /// Checks that this is the metadata of checkpoint `checkpoint_id`, the one whose
    /// `chk-<id>/_metadata` it was read from.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] naming both ids.
    pub fn check_checkpoint_id(&self, checkpoint_id: u64) -> Result<()> {
        match self.checkpoint_id == checkpoint_id {
            true => Ok(()),
            false => Err(Error::Corrupted {
                what: "checkpoint metadata".into(),
                reason: format!(
                    "it describes checkpoint {}, but is the metadata of checkpoint {checkpoint_id}",
                    self.checkpoint_id
                ),
            }),
        }
    }

    /// Checks what a checkpoint's parts must agree on before any handle is used: max
    /// parallelism in range, distinct instances, every keyed handle's key groups within the
    /// max parallelism and no key group held by two instances, and every shared file key
    /// naming one file.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] naming the checkpoint and what disagrees.
    pub fn validate(&self) -> Result<()> {
        let what = || format!("checkpoint {} metadata", self.checkpoint_id);
        let corrupted = |reason: String| Error::Corrupted {
            what: what(),
            reason,
        };
        KeyGroupRangeAssignment::check_max_parallelism(self.max_parallelism)
            .map_err(|err| corrupted(err.to_string()))?;
        let mut indexes = std::collections::BTreeSet::new();
        let mut ranges = Vec::new();
        let mut shared_files: BTreeMap<String, String> = BTreeMap::new();
        for instance in &self.instances {
            if !indexes.insert(instance.index) {
                return Err(corrupted(format!(
                    "instance {} appears twice",
                    instance.index
                )));
            }
            for handle in &instance.keyed {
                let range = handle.key_group_range();
                if range.is_empty() {
                    continue;
                }
                if range.end() >= self.max_parallelism {
                    return Err(corrupted(format!(
                        "instance {} holds key groups {range}, beyond the checkpoint's {} key groups",
                        instance.index, self.max_parallelism
                    )));
                }
                ranges.push((range.start(), range.end(), instance.index));
                let Some(incremental) = handle
                    .as_any()
                    .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
                else {
                    continue;
                };
                for file in &incremental.shared_state {
                    if file.handle.as_any().is::<PlaceholderStreamStateHandle>() {
                        continue;
                    }
                    let key = incremental.shared_key(file);
                    let location = file.handle.describe();
                    match shared_files.get(&key) {
                        Some(known) if *known != location => {
                            return Err(corrupted(format!(
                                "shared file key `{key}` names both {known} and {location}"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            shared_files.insert(key, location);
                        }
                    }
                }
            }
        }
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            let [(_, end, first), (start, _, second)] = [pair[0], pair[1]];
            if start <= end {
                return Err(corrupted(format!(
                    "instances {first} and {second} both hold key group {start}"
                )));
            }
        }
        Ok(())
    }

    /// The metadata as stored: a frame around its JSON, every handle's location written
    /// relative to `root`, the storage it is committed to.
    ///
    /// # Errors
    ///
    /// [`Error::OutsideStorage`] for a handle of another storage or a task-local one;
    /// [`Error::InvalidArgument`] when a handle cannot be serialized or the JSON exceeds
    /// 256 MiB.
    pub fn to_bytes(&self, root: &Arc<dyn StorageRoot>) -> Result<Vec<u8>> {
        let scope = HandleScope::new(root.clone(), AbsoluteLocations::Refused);
        let (body, violation) = scope.enter(|| serde_json::to_vec(self));
        if let Some(violation) = violation {
            return Err(violation);
        }
        let body = body.map_err(|err| {
            Error::InvalidArgument(format!(
                "checkpoint {} metadata does not serialize: {err}",
                self.checkpoint_id
            ))
        })?;
        let mut bytes = Vec::with_capacity(body.len() + 16);
        FORMAT.write(&mut bytes, &body)?;
        Ok(bytes)
    }

    /// Reads metadata written by [`to_bytes`](Self::to_bytes) for the storage at `root`,
    /// and [validates](Self::validate) it.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], [`Error::Corrupted`] (also for JSON that is not metadata, or
    /// names a handle tag no linked crate registers, and for metadata that does not
    /// validate) and [`Error::UnsupportedVersion`], as [`crate::frame`] describes;
    /// [`Error::OutsideStorage`] for a handle naming a location outside `root`.
    pub fn from_bytes(bytes: &[u8], root: &Arc<dyn StorageRoot>) -> Result<Self> {
        let mut input = bytes;
        let metadata = Self::read(&mut input, root)?;
        if !input.is_empty() {
            return Err(Error::Corrupted {
                what: "checkpoint metadata".into(),
                reason: format!("{} bytes follow the metadata frame", input.len()),
            });
        }
        Ok(metadata)
    }

    /// Reads one metadata frame from `input` (see [`from_bytes`](Self::from_bytes)); the
    /// body is buffered only after magic, version and length are checked.
    ///
    /// # Errors
    ///
    /// As [`from_bytes`](Self::from_bytes).
    pub fn read(input: &mut dyn Read, root: &Arc<dyn StorageRoot>) -> Result<Self> {
        let metadata: CheckpointMetadata = FORMAT.read(input, |version, body| {
            let absolute = match version {
                1 => AbsoluteLocations::Relocated,
                _ => AbsoluteLocations::Refused,
            };
            let scope = HandleScope::new(root.clone(), absolute);
            let (parsed, violation) =
                scope.enter(|| serde_json::from_slice::<CheckpointMetadata>(body));
            if let Some(violation) = violation {
                return Err(BodyError::Invalid(violation));
            }
            parsed.map_err(|err| {
                BodyError::Invalid(Error::Corrupted {
                    what: "checkpoint metadata: body".into(),
                    reason: format!("not checkpoint metadata JSON: {err}"),
                })
            })
        })?;
        metadata.validate()?;
        Ok(metadata)
    }

    /// Reads the metadata file at `path` of the storage at `root`: it must be a regular
    /// file of at most [`MAX_METADATA_FILE_LEN`] bytes (checked before anything is read),
    /// holding exactly one metadata frame.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the file; [`Error::Snapshot`] naming the file around
    /// what [`read`](Self::read) reports, or around [`Error::Corrupted`] for a file that is
    /// not regular, too long, or goes on after the frame.
    pub fn read_file(path: &Path, root: &Arc<dyn StorageRoot>) -> Result<Self> {
        let at_path = |source: Error| Error::Snapshot {
            location: path.display().to_string(),
            source: Box::new(source),
        };
        let file =
            crate::open_regular_file(path, &format!("checkpoint metadata {}", path.display()))
                .map_err(|err| match err {
                    Error::NotFound { .. } | Error::Io { .. } => err,
                    other => at_path(other),
                })?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > MAX_METADATA_FILE_LEN {
            return Err(at_path(Error::Corrupted {
                what: "checkpoint metadata".into(),
                reason: format!(
                    "the file has {len} bytes, metadata files have at most {MAX_METADATA_FILE_LEN}"
                ),
            }));
        }
        let mut input = std::io::BufReader::new(file.take(len));
        let metadata = Self::read(&mut input, root).map_err(at_path)?;
        let mut rest = [0u8; 1];
        match input.read(&mut rest) {
            Ok(0) => Ok(metadata),
            Ok(_) => Err(at_path(Error::Corrupted {
                what: "checkpoint metadata".into(),
                reason: "bytes follow the metadata frame".into(),
            })),
            Err(err) => Err(Error::io(path, err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ByteStreamStateHandle, HandleAndLocalPath, KeyGroupRange, KeyGroupRangeOffsets,
        KeyGroupsStateHandle, LocalRoot,
    };

    fn root() -> (tempfile::TempDir, Arc<dyn StorageRoot>) {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<dyn StorageRoot> = Arc::new(LocalRoot::new(dir.path()).unwrap());
        (dir, root)
    }

    fn key_groups(start: u32, end: u32) -> Arc<dyn KeyedStateHandle> {
        let stream = Arc::new(ByteStreamStateHandle::new("state", vec![1; 6]));
        let range = KeyGroupRange::new(start, end).unwrap();
        let offsets = (0..range.len() as u64).map(|i| i * 2).collect();
        Arc::new(KeyGroupsStateHandle::new(
            KeyGroupRangeOffsets::with_offsets(range, offsets).unwrap(),
            stream,
        ))
    }

    fn metadata() -> CheckpointMetadata {
        let mut metadata = CheckpointMetadata::new(3, 42, CheckpointType::Savepoint, 128);
        metadata.properties.insert("backend".into(), "heap".into());
        metadata.job_id = Some(JobId::new("job-a").unwrap());
        metadata.instances.push(InstanceSnapshot {
            index: 0,
            keyed: vec![key_groups(0, 2)],
            operator: vec![],
        });
        metadata
    }

    #[test]
    fn round_trips_through_bytes() {
        let (_dir, root) = root();
        let bytes = metadata().to_bytes(&root).unwrap();
        let back = CheckpointMetadata::from_bytes(&bytes, &root).unwrap();
        assert_eq!(back.checkpoint_id, 3);
        assert_eq!(back.checkpoint_type, CheckpointType::Savepoint);
        assert_eq!(back.properties["backend"], "heap");
        assert_eq!(back.job_id.as_ref().map(JobId::as_str), Some("job-a"));
        assert_eq!(back.keyed_handles().len(), 1);
        assert_eq!(back.keyed_handles()[0].state_size(), 6);
    }

    #[test]
    fn damage_is_an_error_never_wrong_handles() {
        let (_dir, root) = root();
        let bytes = metadata().to_bytes(&root).unwrap();
        for cut in 0..bytes.len() {
            let err = CheckpointMetadata::from_bytes(&bytes[..cut], &root).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. } | Error::Corrupted { .. }),
                "cut at {cut}: {err}"
            );
        }
        for pos in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[pos] ^= 0x04;
            let err = CheckpointMetadata::from_bytes(&flipped, &root).unwrap_err();
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
        assert!(CheckpointMetadata::from_bytes(&longer, &root).is_err());
    }

    fn check_invalid(metadata: &CheckpointMetadata, expected: &str) {
        let (_dir, root) = root();
        let bytes = metadata.to_bytes(&root).unwrap();
        let err = CheckpointMetadata::from_bytes(&bytes, &root).unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }

    #[test]
    fn key_groups_beyond_the_max_parallelism_are_refused() {
        let mut edited = metadata();
        edited.max_parallelism = 2;
        check_invalid(&edited, "beyond the checkpoint's 2 key groups");
        for max_parallelism in [0, 32769, u32::MAX] {
            let mut edited = metadata();
            edited.max_parallelism = max_parallelism;
            check_invalid(&edited, "max parallelism");
        }
    }

    #[test]
    fn instances_sharing_a_key_group_are_refused() {
        let mut edited = metadata();
        edited.instances.push(InstanceSnapshot {
            index: 1,
            keyed: vec![key_groups(2, 5)],
            operator: vec![],
        });
        check_invalid(&edited, "both hold key group 2");
        edited.instances[1].index = 0;
        check_invalid(&edited, "instance 0 appears twice");
    }

    #[test]
    fn one_shared_key_naming_two_files_is_refused() {
        let file = |name: &str| {
            HandleAndLocalPath::shared(
                Arc::new(ByteStreamStateHandle::new(name, vec![1])),
                "000001.sst",
                "backend-1/000001.sst",
            )
        };
        let incremental = |range: (u32, u32), name: &str| IncrementalRemoteKeyedStateHandle {
            backend_identifier: "backend-1".into(),
            key_group_range: KeyGroupRange::new(range.0, range.1).unwrap(),
            checkpoint_id: 3,
            shared_state: vec![file(name)],
            private_state: vec![],
            meta_state: Arc::new(ByteStreamStateHandle::new("meta", vec![])),
        };
        let mut edited = metadata();
        edited.instances[0].keyed = vec![Arc::new(incremental((0, 9), "a"))];
        edited.instances.push(InstanceSnapshot {
            index: 1,
            keyed: vec![Arc::new(incremental((10, 19), "b"))],
            operator: vec![],
        });
        check_invalid(&edited, "`backend-1/000001.sst` names both");
    }

    #[test]
    fn the_max_parallelism_must_be_the_restoring_jobs() {
        let err = metadata().check_max_parallelism(64).unwrap_err();
        assert!(matches!(err, Error::Incompatible { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("128") && message.contains("64"),
            "{message}"
        );
        metadata().check_max_parallelism(128).unwrap();
    }

    #[test]
    fn metadata_copied_under_another_checkpoint_id_is_refused() {
        metadata().check_checkpoint_id(3).unwrap();
        let err = metadata().check_checkpoint_id(4).unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains("checkpoint 3"), "{err}");
    }

    #[test]
    fn job_ids_are_validated() {
        for bad in ["", "a\nb", &"x".repeat(201)] {
            assert!(JobId::new(bad).is_err(), "{bad:?}");
        }
        let err = serde_json::from_str::<JobId>("\"\"").unwrap_err();
        assert!(err.to_string().contains("job id"), "{err}");
    }
}

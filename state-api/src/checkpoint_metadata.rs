//! [`CheckpointMetadata`]: what a coordinator records of a completed checkpoint: which
//! instance stored which handles, with the job's max parallelism and identity.
//!
//! A checkpoint is complete when every instance's snapshot is stored *and* its metadata is
//! committed through [`CheckpointStorage::commit_checkpoint`](crate::CheckpointStorage):
//! before that, restore cannot find it. The bytes of a metadata file (a checksummed frame
//! around JSON, handles relative to the storage root) are defined by the `state-format`
//! crate's `metadata` module; this module holds the values and the checks every reader runs
//! ([`CheckpointMetadata::validate`]) before a handle is used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::CheckpointId;
use crate::{
    CheckpointType, Error, IncrementalRemoteKeyedStateHandle, KeyedStateHandle, MaxParallelism,
    OperatorStreamStateHandle, PlaceholderStreamStateHandle, Result,
};

/// Name of the metadata file inside a checkpoint's directory.
pub const METADATA_FILE: &str = "_metadata";

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
/// use state_api::{ByteStreamStateHandle, CheckpointId, CheckpointType, KeyGroupRange, MaxParallelism};
/// use state_format::key_groups::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
///
/// let stream = Arc::new(ByteStreamStateHandle::new("state", vec![0; 8]));
/// let offsets = KeyGroupRangeOffsets::with_offsets(KeyGroupRange::new(0, 1)?, vec![0, 4])?;
/// let max_parallelism = MaxParallelism::new(128)?;
/// let mut metadata =
///     CheckpointMetadata::new(CheckpointId::new(7), 1_700_000_000_000, CheckpointType::Checkpoint, max_parallelism);
/// metadata.instances.push(InstanceSnapshot {
///     index: 0,
///     keyed: vec![Arc::new(KeyGroupsStateHandle::new(offsets, stream))],
///     operator: vec![],
/// });
/// metadata.validate()?;
/// assert_eq!(metadata.keyed_handles()[0].state_size(), 8);
/// metadata.check_max_parallelism(max_parallelism)?;
/// assert!(metadata.check_max_parallelism(MaxParallelism::new(256)?).is_err());
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint's id.
    pub checkpoint_id: CheckpointId,
    /// When it was triggered, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Checkpoint or savepoint.
    pub checkpoint_type: CheckpointType,
    /// Max parallelism (number of key groups) of the job.
    pub max_parallelism: MaxParallelism,
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
        checkpoint_id: CheckpointId,
        timestamp: u64,
        checkpoint_type: CheckpointType,
        max_parallelism: MaxParallelism,
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
    pub fn check_max_parallelism(&self, max_parallelism: MaxParallelism) -> Result<()> {
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
    pub fn check_checkpoint_id(&self, checkpoint_id: CheckpointId) -> Result<()> {
        if self.checkpoint_id == checkpoint_id {
            return Ok(());
        }
        Err(Error::Corrupted {
            what: "checkpoint metadata".into(),
            reason: format!(
                "it describes checkpoint {}, but is the metadata of checkpoint {checkpoint_id}",
                self.checkpoint_id
            ),
        })
    }

    /// Checks what a checkpoint's parts must agree on before any handle is used: distinct
    /// instances, every keyed handle's key groups within the max parallelism and no key
    /// group held by two instances, and every shared file key naming one file.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] naming the checkpoint and what disagrees.
    pub fn validate(&self) -> Result<()> {
        let corrupted = |reason: String| Error::Corrupted {
            what: format!("checkpoint {} metadata", self.checkpoint_id),
            reason,
        };
        let mut indexes = BTreeSet::new();
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
                if range.end().get() >= self.max_parallelism.get() {
                    return Err(corrupted(format!(
                        "instance {} holds key groups {range}, beyond the checkpoint's {} key groups",
                        instance.index, self.max_parallelism
                    )));
                }
                ranges.push((range.start(), range.end(), instance.index));
                let Some(incremental) = handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>()
                else {
                    continue;
                };
                let files = incremental.shared_state.iter();
                for file in files.filter(|f| !f.handle.is::<PlaceholderStreamStateHandle>()) {
                    let key = incremental.shared_key(file);
                    let location = file.handle.describe();
                    let known = shared_files.entry(key.clone()).or_insert(location.clone());
                    if *known != location {
                        return Err(corrupted(format!(
                            "shared file key `{key}` names both {known} and {location}"
                        )));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ByteStreamStateHandle, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle, KeyGroupRange,
    };

    fn mp(max_parallelism: u32) -> MaxParallelism {
        MaxParallelism::new(max_parallelism).unwrap()
    }

    fn key_groups(
        start: u32,
        end: u32,
        files: Vec<HandleAndLocalPath>,
    ) -> Arc<dyn KeyedStateHandle> {
        Arc::new(IncrementalRemoteKeyedStateHandle {
            backend_identifier: "backend".to_owned(),
            key_group_range: KeyGroupRange::new(start, end).unwrap(),
            checkpoint_id: CheckpointId::new(3),
            strategy: None,
            shared_state: files,
            private_state: vec![],
            meta_state: Arc::new(ByteStreamStateHandle::new("state", vec![1; 6])),
        })
    }

    fn metadata() -> CheckpointMetadata {
        let mut metadata =
            CheckpointMetadata::new(CheckpointId::new(3), 42, CheckpointType::Savepoint, mp(128));
        metadata.job_id = Some(JobId::new("job-a").unwrap());
        metadata.instances.push(InstanceSnapshot {
            index: 0,
            keyed: vec![key_groups(0, 2, vec![])],
            operator: vec![],
        });
        metadata
    }

    fn check_invalid(metadata: &CheckpointMetadata, expected: &str) {
        let err = metadata.validate().unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }

    #[test]
    fn key_groups_beyond_the_max_parallelism_are_refused() {
        metadata().validate().unwrap();
        let mut edited = metadata();
        edited.max_parallelism = mp(2);
        check_invalid(&edited, "beyond the checkpoint's 2 key groups");
    }

    #[test]
    fn instances_sharing_a_key_group_are_refused() {
        let mut edited = metadata();
        edited.instances.push(InstanceSnapshot {
            index: 1,
            keyed: vec![key_groups(2, 5, vec![])],
            operator: vec![],
        });
        check_invalid(&edited, "both hold key group 2");
        edited.instances[1].index = 0;
        check_invalid(&edited, "instance 0 appears twice");
    }

    #[test]
    fn one_shared_key_naming_two_files_is_refused() {
        let file = |name: &str| {
            let handle = Arc::new(ByteStreamStateHandle::new(name, vec![1]));
            let file = HandleAndLocalPath::shared(handle, "000001.sst", "backend-1/000001.sst");
            vec![file]
        };
        let mut edited = metadata();
        edited.instances[0].keyed = vec![key_groups(0, 9, file("a"))];
        edited.instances.push(InstanceSnapshot {
            index: 1,
            keyed: vec![key_groups(10, 19, file("b"))],
            operator: vec![],
        });
        check_invalid(&edited, "`backend-1/000001.sst` names both");
    }

    #[test]
    fn the_max_parallelism_must_be_the_restoring_jobs() {
        let err = metadata().check_max_parallelism(mp(64)).unwrap_err();
        assert!(matches!(err, Error::Incompatible { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("128") && message.contains("64"),
            "{message}"
        );
        metadata().check_max_parallelism(mp(128)).unwrap();
    }

    #[test]
    fn metadata_copied_under_another_checkpoint_id_is_refused() {
        metadata()
            .check_checkpoint_id(CheckpointId::new(3))
            .unwrap();
        let err = metadata()
            .check_checkpoint_id(CheckpointId::new(4))
            .unwrap_err();
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

//! The bytes of a checkpoint's metadata file (`chk-<id>/_metadata`): how a
//! [`CheckpointMetadata`] is stored by every checkpoint storage.
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
//! [`crate::storage_root`]): version 2 refuses every location outside the root; version
//! 1's absolute locations are re-rooted by their `chk-<id>/<name>` or `shared/<name>` tail,
//! so old checkpoints restore where they are and from a copy. Reading then validates the
//! whole checkpoint ([`CheckpointMetadata::validate`]) before anything uses a handle.

use std::io::Read;
use std::sync::Arc;

use state_api::{CheckpointMetadata, Error, Result};

use crate::storage_root::{AbsoluteLocations, HandleScope, StorageRoot};

use crate::frame::{BodyError, FRAME_LEN, FrameFormat};

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

/// The metadata as stored: a frame around its JSON, every handle's location written
/// relative to `root`, the storage it is committed to.
///
/// # Errors
///
/// [`Error::OutsideStorage`] for a handle of another storage or a task-local one;
/// [`Error::InvalidArgument`] when a handle cannot be serialized or the JSON exceeds
/// 256 MiB.
pub fn to_bytes(metadata: &CheckpointMetadata, root: &Arc<dyn StorageRoot>) -> Result<Vec<u8>> {
    let scope = HandleScope::new(root.clone(), AbsoluteLocations::Refused);
    let (body, violation) = scope.enter(|| serde_json::to_vec(metadata));
    if let Some(violation) = violation {
        return Err(violation);
    }
    let body = body.map_err(|err| {
        Error::InvalidArgument(format!(
            "checkpoint {} metadata does not serialize: {err}",
            metadata.checkpoint_id
        ))
    })?;
    let mut bytes = Vec::with_capacity(body.len() + 16);
    FORMAT.write(&mut bytes, &body)?;
    Ok(bytes)
}

/// Reads metadata written by [`to_bytes`] for the storage at `root`,
/// and [validates](CheckpointMetadata::validate) it.
///
/// # Errors
///
/// [`Error::Truncated`], [`Error::Corrupted`] (also for JSON that is not metadata, or
/// names a handle tag no linked crate registers, and for metadata that does not
/// validate) and [`Error::UnsupportedVersion`], as [`crate::frame`] describes;
/// [`Error::OutsideStorage`] for a handle naming a location outside `root`.
pub fn from_bytes(bytes: &[u8], root: &Arc<dyn StorageRoot>) -> Result<CheckpointMetadata> {
    let mut input = bytes;
    let metadata = read(&mut input, root)?;
    if !input.is_empty() {
        return Err(Error::Corrupted {
            what: "checkpoint metadata".into(),
            reason: format!("{} bytes follow the metadata frame", input.len()),
        });
    }
    Ok(metadata)
}

/// Reads one metadata frame from `input` (see [`from_bytes`]); the
/// body is buffered only after magic, version and length are checked.
///
/// # Errors
///
/// As [`from_bytes`].
pub fn read(input: &mut dyn Read, root: &Arc<dyn StorageRoot>) -> Result<CheckpointMetadata> {
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
        let metadata = parsed.map_err(|err| {
            BodyError::Invalid(Error::Corrupted {
                what: "checkpoint metadata: body".into(),
                reason: format!("not checkpoint metadata JSON: {err}"),
            })
        })?;
        Ok(metadata)
    })?;
    metadata.validate()?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use state_api::CheckpointId;
    use std::sync::Arc;

    use crate::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
    use state_api::checkpoint_metadata::{InstanceSnapshot, JobId};
    use state_api::{
        ByteStreamStateHandle, CheckpointType, KeyGroupRange, KeyedStateHandle, MaxParallelism,
    };

    use super::*;

    #[derive(Debug)]
    struct Root;

    impl StorageRoot for Root {
        fn describe(&self) -> String {
            "test root".into()
        }
    }

    fn root() -> Arc<dyn StorageRoot> {
        Arc::new(Root)
    }

    fn metadata() -> CheckpointMetadata {
        let stream = Arc::new(ByteStreamStateHandle::new("state", vec![1; 6]));
        let range = KeyGroupRange::new(0, 2).unwrap();
        let offsets = KeyGroupRangeOffsets::with_offsets(range, vec![0, 2, 4]).unwrap();
        let keyed: Arc<dyn KeyedStateHandle> = Arc::new(KeyGroupsStateHandle::new(offsets, stream));
        let mut metadata = CheckpointMetadata::new(
            CheckpointId::new(3),
            42,
            CheckpointType::Savepoint,
            MaxParallelism::of(128),
        );
        metadata.properties.insert("backend".into(), "heap".into());
        metadata.job_id = Some(JobId::new("job-a").unwrap());
        metadata.instances.push(InstanceSnapshot {
            index: 0,
            keyed: vec![keyed],
            operator: vec![],
        });
        metadata
    }

    #[test]
    fn round_trips_through_bytes() {
        let bytes = to_bytes(&metadata(), &root()).unwrap();
        let back = from_bytes(&bytes, &root()).unwrap();
        assert_eq!(back.checkpoint_id, CheckpointId::new(3));
        assert_eq!(back.checkpoint_type, CheckpointType::Savepoint);
        assert_eq!(back.properties["backend"], "heap");
        assert_eq!(back.job_id.as_ref().map(JobId::as_str), Some("job-a"));
        assert_eq!(back.keyed_handles().len(), 1);
        assert_eq!(back.keyed_handles()[0].state_size(), 6);
    }

    #[test]
    fn damage_is_an_error_never_wrong_handles() {
        let bytes = to_bytes(&metadata(), &root()).unwrap();
        for cut in 0..bytes.len() {
            let err = from_bytes(&bytes[..cut], &root()).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. } | Error::Corrupted { .. }),
                "cut at {cut}: {err}"
            );
        }
        for pos in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[pos] ^= 0x04;
            let err = from_bytes(&flipped, &root()).unwrap_err();
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
        assert!(from_bytes(&longer, &root()).is_err());
    }

    #[test]
    fn metadata_that_does_not_validate_is_not_read() {
        let mut edited = metadata();
        edited.max_parallelism = MaxParallelism::of(2);
        let bytes = to_bytes(&edited, &root()).unwrap();
        let err = from_bytes(&bytes, &root()).unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains("beyond"), "{err}");
    }
}

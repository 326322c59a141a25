//! Lists, inspects and verifies the checkpoints of a local checkpoint directory, or (feature
//! `object-storage`) of checkpoint storage on object storage, from the stored bytes alone:
//! the library behind the `snapstate` command line. Where to read is a [`Location`]; a path
//! converts into one.
//!
//! The directory is the storage root a [`LocalCheckpointStorage`](state_storage_local::LocalCheckpointStorage)
//! was created with: `chk-<id>/_metadata` holds each committed checkpoint's
//! [`CheckpointMetadata`] with every instance's handles (see
//! [`state_api::checkpoint_metadata`]). A `chk-<id>` directory itself is accepted too: its
//! parent is the root and checkpoint `<id>` is selected. Nothing is ever written: unlike
//! `LocalCheckpointStorage::new`, the inspector does not create the `shared/` directory.
//!
//! - [`list`]: one [`CheckpointSummary`] per committed checkpoint, and the `chk-<id>`
//!   directories without metadata (in progress, or abandoned) or with unreadable metadata.
//! - [`inspect`]: a [`CheckpointReport`]: per key-groups handle the snapshot header and
//!   every key group's offset, section length and recorded CRC-32C; per incremental handle
//!   the header and the file manifest of its meta stream, and every file; per operator
//!   handle its states.
//! - [`verify`]: re-reads everything and collects every [`Problem`] in a [`VerifyReport`],
//!   never stopping at the first.
//!
//! This module depends on `state-api` only (and, with `object-storage`, on
//! `state-storage-object` to list and read checkpoint storage by URL). Key-group data and incremental file manifests
//! are formats `state-api` defines, so they are checked without the backend that wrote
//! them; what does need a plugin is looked up in the [`Registry`] given: the compression
//! decorator a keyed header names, and the operator backend that reads operator
//! partitions (without it, operator streams are checked for size only).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use snapstate::api::{ByteStreamStateHandle, CheckpointId, CheckpointType, KeyGroupRange};
//! use snapstate::api::MaxParallelism;
//! use snapstate::format::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
//! use snapstate::local_storage::LocalCheckpointStorage;
//! use snapstate::{CheckpointMetadata, InstanceSnapshot, inspect};
//!
//! let root = tempfile::tempdir().unwrap();
//! let storage = LocalCheckpointStorage::new(root.path())?;
//! let stream = Arc::new(ByteStreamStateHandle::new("state", vec![0; 8]));
//! let offsets = KeyGroupRangeOffsets::with_offsets(KeyGroupRange::new(0, 1)?, vec![0, 4])?;
//! let (id, max_parallelism) = (CheckpointId::new(7), MaxParallelism::new(128)?);
//! let mut metadata = CheckpointMetadata::new(id, 0, CheckpointType::Checkpoint, max_parallelism);
//! metadata.instances.push(InstanceSnapshot {
//!     index: 0,
//!     keyed: vec![Arc::new(KeyGroupsStateHandle::new(offsets, stream))],
//!     operator: vec![],
//! });
//! storage.commit_checkpoint(&metadata)?;
//!
//! let listing = inspect::list(root.path()).unwrap();
//! assert_eq!(listing.checkpoints[0].checkpoint_id, 7);
//! assert_eq!(listing.checkpoints[0].state_size, 8);
//! // Eight zero bytes are no keyed snapshot: verify names the stream.
//! let report = inspect::verify(root.path(), None, snapstate::registry()).unwrap();
//! assert!(!report.is_ok());
//! assert!(report.problems[0].message.contains("inline bytes `state`"), "{:?}", report.problems);
//! # Ok::<(), snapstate::api::Error>(())
//! ```

mod report;
mod storage;
mod verify;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use state_api::CheckpointId;
use state_api::checkpoint_metadata::CheckpointMetadata;
use state_api::{
    Error as StateError, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle, KeyedStateHandle,
    OperatorStreamStateHandle, PlaceholderStreamStateHandle, Registry, StateInputStream,
    StreamStateHandle,
};
use state_format::KeyGroupsStateHandle;
use state_format::KeyedBackendSerializationProxy;
use state_format::file_manifest::FileManifest;

pub use report::{
    CheckpointReport, CheckpointSummary, CheckpointVerification, FileCheck, FileScope,
    HandleDetail, HandleKind, HandleReport, HandleSummary, HandleVerification,
    IncompleteCheckpoint, IncrementalDetail, IncrementalFile, KeyGroupCheck, KeyGroupRow,
    KeyGroupsDetail, KeyedHeader, Leftover, LeftoverKind, Listing, OperatorDetail,
    OperatorStateCheck, OperatorStateRow, Problem, ProblemKind, StateRow, UnreadableCheckpoint,
    VerifyReport, checkpoint_type_str,
};
pub use verify::verify;

use crate::{Error, Result};
use storage::Storage;

/// The metadata property naming the operator backend that wrote the operator handles;
/// [`DEFAULT_OPERATOR_BACKEND`] when absent.
pub const OPERATOR_BACKEND_PROPERTY: &str = "operator-backend";

/// The operator backend [`verify`] reads operator partitions with when the checkpoint's
/// properties name none.
pub const DEFAULT_OPERATOR_BACKEND: &str = "operator";

/// Where the inspector reads checkpoints: a local storage root, or (feature
/// `object-storage`) a prefix on object storage. Paths convert into it, so
/// `inspect::list(dir)` reads a local directory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Location {
    /// The root directory of a `LocalCheckpointStorage`, or one `chk-<id>` directory in it.
    Dir(PathBuf),
    /// The URL an `ObjectCheckpointStorage` was opened with (`s3://bucket/prefix`,
    /// `memory://name/prefix`, `file:///path`), or that URL followed by `/chk-<id>`, with
    /// the options to reach the store (endpoint, credentials; unset credentials come from
    /// the `AWS_*` environment variables). Reports name the root and the checkpoints by
    /// URL in place of a directory.
    #[cfg(feature = "object-storage")]
    Object {
        /// The storage's URL, never with credentials.
        url: String,
        /// How to reach the store.
        options: Box<state_storage_object::ObjectStoreOptions>,
    },
}

impl From<&Path> for Location {
    fn from(dir: &Path) -> Self {
        Location::Dir(dir.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(dir: &PathBuf) -> Self {
        Location::Dir(dir.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(dir: PathBuf) -> Self {
        Location::Dir(dir)
    }
}

/// The checkpoints at `location` (a storage root, or one `chk-<id>` directory).
///
/// # Errors
///
/// [`Error::Unreadable`] for a directory that does not exist or cannot be listed,
/// [`Error::NotACheckpointDirectory`] for one without any `chk-<id>` directory. Damaged
/// metadata is no error: the checkpoint is listed under [`Listing::unreadable`].
pub fn list(location: impl Into<Location>) -> Result<Listing> {
    let storage = Storage::open(&location.into())?;
    let mut listing = Listing {
        root: storage.root.clone(),
        checkpoints: Vec::new(),
        incomplete: storage.incomplete().collect(),
        unreadable: Vec::new(),
    };
    for id in storage.committed() {
        if storage.selected.is_some_and(|selected| selected != id) {
            continue;
        }
        match storage.load(CheckpointId::new(id)) {
            Ok(metadata) => listing.checkpoints.push(summarize(
                &metadata,
                storage.checkpoint_dir(CheckpointId::new(id)),
            )),
            Err(err) => listing.unreadable.push(UnreadableCheckpoint {
                checkpoint_id: CheckpointId::new(id),
                directory: storage.checkpoint_dir(CheckpointId::new(id)),
                error: err.to_string(),
            }),
        }
    }
    Ok(listing)
}

fn summarize(metadata: &CheckpointMetadata, directory: PathBuf) -> CheckpointSummary {
    let mut handles = Vec::new();
    for instance in &metadata.instances {
        for (n, handle) in instance.keyed.iter().enumerate() {
            handles.push(HandleSummary {
                instance: instance.index,
                handle: format!("keyed {n}"),
                kind: HandleKind::of(&**handle),
                key_group_range: Some(handle.key_group_range()),
                state_size: handle.state_size(),
            });
        }
        for (n, handle) in instance.operator.iter().enumerate() {
            handles.push(HandleSummary {
                instance: instance.index,
                handle: format!("operator {n}"),
                kind: HandleKind::Operator,
                key_group_range: None,
                state_size: state_api::StateObject::state_size(handle),
            });
        }
    }
    CheckpointSummary {
        checkpoint_id: metadata.checkpoint_id,
        directory,
        checkpoint_type: metadata.checkpoint_type,
        timestamp: metadata.timestamp,
        max_parallelism: metadata.max_parallelism.get(),
        properties: metadata.properties.clone(),
        instances: metadata.instances.len(),
        state_size: handles
            .iter()
            .fold(0u64, |total, h| total.saturating_add(h.state_size)),
        handles,
    }
}

/// The keyed handles and operator handles of `metadata`, with their summaries, in
/// [`CheckpointSummary::handles`] order.
enum AnyHandle<'a> {
    Keyed(&'a dyn KeyedStateHandle),
    Operator(&'a OperatorStreamStateHandle),
}

fn handles_of(metadata: &CheckpointMetadata) -> Vec<AnyHandle<'_>> {
    let mut all = Vec::new();
    for instance in &metadata.instances {
        all.extend(instance.keyed.iter().map(|h| AnyHandle::Keyed(&**h)));
        all.extend(instance.operator.iter().map(AnyHandle::Operator));
    }
    all
}

// ---------------------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------------------

/// Everything the handles of one checkpoint record: `checkpoint_id`, or the checkpoint a
/// `chk-<id>` path names, or else the latest committed one. `registry` says whether the
/// decorators that headers name are linked.
///
/// What cannot be read (a missing stream, a damaged header) is shown in the report
/// ([`KeyGroupsDetail::header_error`], [`IncrementalDetail::meta_error`]); [`verify`]
/// checks the data itself.
///
/// # Errors
///
/// Those of [`list`]; [`Error::CheckpointNotFound`] when the checkpoint is not committed,
/// [`Error::NoCommittedCheckpoint`] when none is, [`Error::ConflictingCheckpoint`] for a
/// `chk-<id>` path with another id, [`Error::Storage`] when its metadata cannot be read.
pub fn inspect(
    location: impl Into<Location>,
    checkpoint_id: Option<u64>,
    registry: &Registry,
) -> Result<CheckpointReport> {
    let storage = Storage::open(&location.into())?;
    let id = match storage.require(checkpoint_id)? {
        Some(id) => id,
        None => storage
            .committed()
            .last()
            .ok_or_else(|| Error::NoCommittedCheckpoint {
                root: storage.root.clone(),
            })?,
    };
    let metadata = storage
        .load(CheckpointId::new(id))
        .map_err(|source| Error::Storage {
            root: storage.root.clone(),
            source,
        })?;
    let summary = summarize(&metadata, storage.checkpoint_dir(CheckpointId::new(id)));
    let handles = handles_of(&metadata)
        .into_iter()
        .zip(&summary.handles)
        .map(|(handle, summary)| HandleReport {
            summary: summary.clone(),
            detail: match handle {
                AnyHandle::Keyed(handle) => keyed_detail(handle, registry),
                AnyHandle::Operator(handle) => HandleDetail::Operator(operator_detail(handle)),
            },
        })
        .collect();
    Ok(CheckpointReport { summary, handles })
}

fn keyed_detail(handle: &dyn KeyedStateHandle, registry: &Registry) -> HandleDetail {
    let any = handle;
    if let Some(handle) = any.downcast_ref::<KeyGroupsStateHandle>() {
        HandleDetail::KeyGroups(key_groups_detail(handle, registry))
    } else if let Some(handle) = any.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
        HandleDetail::IncrementalRemote(incremental_detail(handle, registry))
    } else {
        HandleDetail::Opaque
    }
}

fn header_of(proxy: &KeyedBackendSerializationProxy, registry: &Registry) -> KeyedHeader {
    KeyedHeader {
        version: proxy.version(),
        key_serializer: proxy.key_serializer().to_owned(),
        compression: proxy.compression().to_owned(),
        compression_linked: registry.compression(proxy.compression()).is_ok(),
        states: (0u16..)
            .zip(proxy.states())
            .map(|(id, state)| StateRow {
                id,
                name: state.name.clone(),
                kind: state.kind,
                namespace_serializer: state.namespace_serializer.clone(),
                value_serializer: state.value_serializer.clone(),
                user_key_serializer: state.user_key_serializer.clone(),
                time_to_live_ms: state.ttl.map(|ttl| ttl.time_to_live()),
            })
            .collect(),
    }
}

/// Opens `stream` and reads the keyed header at its start, naming the stream in errors.
fn read_header(
    stream: &dyn StreamStateHandle,
) -> Result<(KeyedBackendSerializationProxy, Box<dyn StateInputStream>), StateError> {
    let mut input = stream.open()?;
    let header = KeyedBackendSerializationProxy::read_from(&mut input).map_err(|source| {
        StateError::Snapshot {
            location: stream.describe(),
            source: Box::new(source),
        }
    })?;
    Ok((header, input))
}

fn key_groups_detail(handle: &KeyGroupsStateHandle, registry: &Registry) -> KeyGroupsDetail {
    let stream = handle.delegate();
    let (header, header_error) = match read_header(&**stream) {
        Ok((header, _)) => (Some(header_of(&header, registry)), None),
        Err(err) => (None, Some(err.to_string())),
    };
    let range = handle.offsets().range();
    let key_groups = handle
        .offsets()
        .iter()
        .map(|(key_group, offset)| {
            let end = handle.section_end(key_group).or_else(|| {
                // Handles of older builds record no end: the last section ends with the stream.
                (key_group == range.end()).then(|| stream.state_size())
            });
            KeyGroupRow {
                key_group: key_group.get(),
                offset,
                length: end.and_then(|end| end.checked_sub(offset)),
                checksum: handle.checksum(key_group),
            }
        })
        .collect();
    KeyGroupsDetail {
        stream: stream.describe(),
        header,
        header_error,
        key_groups,
    }
}

/// The meta stream of an incremental handle: its header and file manifest.
fn read_meta(
    handle: &IncrementalRemoteKeyedStateHandle,
) -> Result<(KeyedBackendSerializationProxy, FileManifest), StateError> {
    let meta = state_format::incremental_meta::read(&*handle.meta_state, None)?;
    Ok((meta.header, meta.manifest))
}

/// The files of an incremental handle with their scope, shared ones first.
fn files_of(
    handle: &IncrementalRemoteKeyedStateHandle,
) -> impl Iterator<Item = (FileScope, &HandleAndLocalPath)> {
    let shared = handle.shared_state.iter().map(|f| (FileScope::Shared, f));
    let private = handle.private_state.iter().map(|f| (FileScope::Private, f));
    shared.chain(private)
}

fn is_placeholder(file: &HandleAndLocalPath) -> bool {
    file.handle.is::<PlaceholderStreamStateHandle>()
}

fn incremental_detail(
    handle: &IncrementalRemoteKeyedStateHandle,
    registry: &Registry,
) -> IncrementalDetail {
    let (header, manifest, meta_error) = match read_meta(handle) {
        Ok((header, manifest)) => (Some(header_of(&header, registry)), Some(manifest), None),
        Err(err) => (None, None, Some(err.to_string())),
    };
    let entry = |name: &str| manifest.as_ref().and_then(|m| m.get(name));
    let files: Vec<IncrementalFile> = files_of(handle)
        .map(|(scope, file)| IncrementalFile {
            local_path: file.local_path.clone(),
            scope,
            stream: file.handle.describe(),
            size: file.handle.state_size(),
            manifest_size: entry(&file.local_path).map(|e| e.size),
            manifest_crc: entry(&file.local_path).map(|e| e.crc),
            placeholder: is_placeholder(file),
            shared_key: (scope == FileScope::Shared).then(|| handle.shared_key(file)),
        })
        .collect();
    let carried: BTreeSet<&str> = files.iter().map(|f| f.local_path.as_str()).collect();
    let missing_from_handle = manifest
        .iter()
        .flat_map(|m| &m.files)
        .filter(|e| !carried.contains(e.name.as_str()))
        .map(|e| e.name.clone())
        .collect();
    IncrementalDetail {
        backend_identifier: handle.backend_identifier.clone(),
        checkpoint_id: handle.checkpoint_id,
        key_group_range: handle.key_group_range,
        meta_stream: handle.meta_state.describe(),
        header,
        meta_error,
        files,
        missing_from_handle,
    }
}

fn operator_detail(handle: &OperatorStreamStateHandle) -> OperatorDetail {
    OperatorDetail {
        stream: handle.delegate().describe(),
        states: handle
            .states()
            .iter()
            .map(|(name, partitions)| OperatorStateRow {
                name: name.clone(),
                mode: partitions.mode,
                partitions: partitions.offsets.len(),
            })
            .collect(),
    }
}

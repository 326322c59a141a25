//! The reports of [`list`](super::list), [`inspect`](super::inspect) and
//! [`verify`](super::verify()): plain data that serializes with serde (the `snapstate`
//! binary's `--json` output) and that tests and tools read field by field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Serialize, Serializer};
use state_api::CheckpointId;
use state_api::{
    CheckpointType, DistributionMode, Error as StateError, IncrementalRemoteKeyedStateHandle,
    KeyGroupRange, KeyedStateHandle, StateKind,
};
use state_format::KeyGroupsStateHandle;

/// The checkpoints of one storage root, as [`list`](super::list) finds them.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The storage root.
    pub root: PathBuf,
    /// The committed checkpoints, ascending by id.
    pub checkpoints: Vec<CheckpointSummary>,
    /// `chk-<id>` directories without `_metadata`: in progress, or abandoned before they
    /// completed. Restore cannot use them.
    pub incomplete: Vec<IncompleteCheckpoint>,
    /// Committed checkpoints whose `_metadata` cannot be read.
    pub unreadable: Vec<UnreadableCheckpoint>,
}

/// A checkpoint directory without `_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncompleteCheckpoint {
    /// The id in the directory's name.
    pub checkpoint_id: CheckpointId,
    /// The `chk-<id>` directory.
    pub directory: PathBuf,
}

/// A committed checkpoint whose metadata cannot be read.
#[derive(Debug, Clone, Serialize)]
pub struct UnreadableCheckpoint {
    /// The checkpoint's id.
    pub checkpoint_id: CheckpointId,
    /// The `chk-<id>` directory.
    pub directory: PathBuf,
    /// Why the metadata cannot be read (a rendered [`state_api::Error`]).
    pub error: String,
}

/// One committed checkpoint, from its metadata alone.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    /// The checkpoint's id.
    pub checkpoint_id: CheckpointId,
    /// The `chk-<id>` directory.
    pub directory: PathBuf,
    /// Checkpoint or savepoint (`checkpoint`, `savepoint` in JSON).
    #[serde(serialize_with = "checkpoint_type_name")]
    pub checkpoint_type: CheckpointType,
    /// When it was triggered, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Max parallelism (number of key groups) of the job.
    pub max_parallelism: u32,
    /// The free-form properties of the metadata.
    pub properties: BTreeMap<String, String>,
    /// Number of instances that contributed.
    pub instances: usize,
    /// Sum of every handle's [`state_size`](state_api::StateObject::state_size).
    pub state_size: u64,
    /// Every handle, by instance: keyed handles first, then operator handles.
    pub handles: Vec<HandleSummary>,
}

/// One handle of a checkpoint in one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandleSummary {
    /// Index of the instance that wrote it.
    pub instance: u32,
    /// Its place in the instance: `keyed <n>` or `operator <n>`.
    pub handle: String,
    /// What kind of handle it is.
    pub kind: HandleKind,
    /// The key groups it holds; `None` for operator handles.
    pub key_group_range: Option<KeyGroupRange>,
    /// Its stored size in bytes.
    pub state_size: u64,
}

/// The kind of a handle, by its serde tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandleKind {
    /// A [`KeyGroupsStateHandle`]: one stream in the canonical keyed format.
    KeyGroups,
    /// An [`IncrementalRemoteKeyedStateHandle`]: files plus a meta stream.
    IncrementalRemote,
    /// An [`OperatorStreamStateHandle`](state_api::OperatorStreamStateHandle).
    Operator,
    /// A keyed handle of a kind this build does not know (a third-party plugin's).
    Other,
}

impl HandleKind {
    /// The kind of a keyed handle.
    pub fn of(handle: &dyn KeyedStateHandle) -> Self {
        let any = handle;
        if any.is::<KeyGroupsStateHandle>() {
            HandleKind::KeyGroups
        } else if any.is::<IncrementalRemoteKeyedStateHandle>() {
            HandleKind::IncrementalRemote
        } else {
            HandleKind::Other
        }
    }

    /// The kind's name: its handle's serde tag, or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandleKind::KeyGroups => "key-groups",
            HandleKind::IncrementalRemote => "incremental-remote",
            HandleKind::Operator => "operator",
            HandleKind::Other => "other",
        }
    }
}

impl fmt::Display for HandleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything [`inspect`](super::inspect) shows of one checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    /// What [`list`](super::list) shows of it.
    pub summary: CheckpointSummary,
    /// Every handle in detail, in the order of [`CheckpointSummary::handles`].
    pub handles: Vec<HandleReport>,
}

/// One handle in detail.
#[derive(Debug, Clone, Serialize)]
pub struct HandleReport {
    /// The handle in one line.
    pub summary: HandleSummary,
    /// What its kind records.
    pub detail: HandleDetail,
}

/// What a handle records, by kind.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandleDetail {
    /// A key-groups handle.
    KeyGroups(KeyGroupsDetail),
    /// An incremental handle.
    IncrementalRemote(IncrementalDetail),
    /// An operator handle.
    Operator(OperatorDetail),
    /// A kind the inspector cannot look into.
    Opaque,
}

/// A key-groups handle: its stream, the header at the stream's start and its key groups.
#[derive(Debug, Clone, Serialize)]
pub struct KeyGroupsDetail {
    /// The stream ([`StreamStateHandle::describe`](state_api::StreamStateHandle::describe)).
    pub stream: String,
    /// The keyed snapshot header, when it can be read.
    pub header: Option<KeyedHeader>,
    /// Why the header cannot be read (a rendered [`state_api::Error`]).
    pub header_error: Option<String>,
    /// One row per key group of the handle's range.
    pub key_groups: Vec<KeyGroupRow>,
}

/// Where one key group is in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyGroupRow {
    /// The key group.
    pub key_group: u32,
    /// Stream offset of its section.
    pub offset: u64,
    /// Bytes of its section (the key-group id and the compressed data): up to the next
    /// key group's offset, or to the recorded end (the stream's size for handles that
    /// record none). `None` when the offsets contradict each other.
    pub length: Option<u64>,
    /// The CRC-32C recorded for it; `None` for handles written without checksums.
    pub checksum: Option<u32>,
}

/// A keyed snapshot header ([`KeyedBackendSerializationProxy`](state_format::KeyedBackendSerializationProxy)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyedHeader {
    /// The format version the snapshot was written with (its key-group data is in that
    /// version's layout).
    pub version: u32,
    /// Serializer of the keys.
    pub key_serializer: String,
    /// Name of the compression decorator of the key-group data.
    pub compression: String,
    /// Whether that decorator is linked in the registry given (without it the data cannot
    /// be decoded).
    pub compression_linked: bool,
    /// The states, in state-id order.
    pub states: Vec<StateRow>,
}

/// One state of a keyed header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateRow {
    /// Its id: its position in the header.
    pub id: u16,
    /// Its registered name.
    pub name: String,
    /// Value, list or map (`value`, `list`, `map` in JSON).
    #[serde(serialize_with = "display")]
    pub kind: StateKind,
    /// Serializer of the namespace.
    pub namespace_serializer: String,
    /// Serializer of values (list elements, map values).
    pub value_serializer: String,
    /// Serializer of map user keys; empty for value and list states.
    pub user_key_serializer: String,
    /// The time to live of its entries in milliseconds; `None` (JSON `null`) when they
    /// never expire.
    pub time_to_live_ms: Option<i64>,
}

/// An incremental handle: its meta stream's header and manifest, and its files.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalDetail {
    /// The backend instance whose files these are.
    pub backend_identifier: String,
    /// The checkpoint the snapshot belongs to.
    pub checkpoint_id: CheckpointId,
    /// The key groups covered.
    pub key_group_range: KeyGroupRange,
    /// The meta stream ([`StreamStateHandle::describe`](state_api::StreamStateHandle::describe)).
    pub meta_stream: String,
    /// The keyed header of the meta stream, when it can be read.
    pub header: Option<KeyedHeader>,
    /// Why the meta stream (header or manifest) cannot be read.
    pub meta_error: Option<String>,
    /// The files the handle carries, shared ones first.
    pub files: Vec<IncrementalFile>,
    /// Files the manifest lists that the handle does not carry.
    pub missing_from_handle: Vec<String>,
}

/// Whether a file of an incremental snapshot is shared across checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileScope {
    /// Shared (sst files), counted by the shared state registry.
    Shared,
    /// This checkpoint's own (`MANIFEST`, `CURRENT`, `OPTIONS`).
    Private,
}

impl FileScope {
    /// `shared` or `private`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileScope::Shared => "shared",
            FileScope::Private => "private",
        }
    }
}

impl fmt::Display for FileScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file of an incremental handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncrementalFile {
    /// Its name in the backend's local directory.
    pub local_path: String,
    /// Shared or private.
    pub scope: FileScope,
    /// Where its bytes are stored ([`StreamStateHandle::describe`](state_api::StreamStateHandle::describe)).
    pub stream: String,
    /// Its size as the handle records it.
    pub size: u64,
    /// Its size as the manifest records it; `None` when the manifest does not list it.
    pub manifest_size: Option<u64>,
    /// Its CRC-32C as the manifest records it.
    pub manifest_crc: Option<u32>,
    /// Whether the handle holds only a placeholder for it (uploaded by an earlier
    /// checkpoint; it cannot be read through this handle).
    pub placeholder: bool,
    /// Its shared state registry key, for shared files.
    pub shared_key: Option<String>,
}

/// An operator handle: its stream and states.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorDetail {
    /// The stream ([`StreamStateHandle::describe`](state_api::StreamStateHandle::describe)).
    pub stream: String,
    /// Its states, by name.
    pub states: Vec<OperatorStateRow>,
}

/// One operator state of a handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorStateRow {
    /// The state's name.
    pub name: String,
    /// How it is redistributed (`split-distribute`, `union`, `broadcast` in JSON).
    #[serde(serialize_with = "display")]
    pub mode: DistributionMode,
    /// Number of partitions (list elements; one for a broadcast map).
    pub partitions: usize,
}

/// What [`verify`](super::verify()) found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The storage root.
    pub root: PathBuf,
    /// The checkpoints verified, ascending by id.
    pub checkpoints: Vec<CheckpointVerification>,
    /// Checkpoint directories without metadata, not verified (in progress or abandoned).
    pub skipped: Vec<IncompleteCheckpoint>,
    /// Every problem found, in the order found.
    pub problems: Vec<Problem>,
    /// What a restore would never read (in-progress files, files no committed checkpoint
    /// refers to), when every checkpoint was verified and every metadata read; `None`
    /// otherwise. Not problems of the checkpoints: a crash leaves them, and removing them
    /// is garbage collection's job.
    pub leftovers: Option<Vec<Leftover>>,
}

/// A stored file that no restore reads.
#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    /// Its location relative to the storage root (`shared/ab12`, `chk-7/.inprogress-x`).
    pub path: String,
    /// Its size, when the storage listing says.
    pub size: Option<u64>,
    /// Why no restore reads it.
    pub kind: LeftoverKind,
}

/// Why a [`Leftover`] is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeftoverKind {
    /// A file being written, or left by a writer that died (`.inprogress-*`).
    InProgress,
    /// A complete file that no committed checkpoint refers to.
    Unreferenced,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The handles of one checkpoint as [`verify`](super::verify()) checked them.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointVerification {
    /// The checkpoint's id.
    pub checkpoint_id: CheckpointId,
    /// Every handle (none when the metadata cannot be read).
    pub handles: Vec<HandleVerification>,
    /// Number of problems found in this checkpoint.
    pub problems: usize,
}

/// What was checked of one handle.
#[derive(Debug, Clone, Serialize)]
pub struct HandleVerification {
    /// The handle in one line.
    pub summary: HandleSummary,
    /// Its stream (the meta stream of an incremental handle); `None` for opaque kinds.
    pub stream: Option<String>,
    /// What was checked, in one sentence.
    pub checked: String,
    /// False for handle kinds the inspector cannot look into: nothing was checked.
    pub verified: bool,
    /// Entries (key-groups handles) or elements and broadcast entries (operator handles)
    /// read.
    pub entries: u64,
    /// Per key group of a key-groups handle, the entries read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_groups: Vec<KeyGroupCheck>,
    /// Per file of an incremental handle, what was found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileCheck>,
    /// Per state of an operator handle, what was read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operator_states: Vec<OperatorStateCheck>,
    /// Number of problems found in this handle.
    pub problems: usize,
}

/// One key group as [`verify`](super::verify()) read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyGroupCheck {
    /// The key group.
    pub key_group: u32,
    /// Entries read; `None` when the key group could not be read (see the problems).
    pub entries: Option<u64>,
}

/// One file of an incremental handle as [`verify`](super::verify()) read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCheck {
    /// Its name in the backend's local directory.
    pub local_path: String,
    /// Shared or private.
    pub scope: FileScope,
    /// Bytes read; `None` for placeholders and files that could not be read.
    pub bytes_read: Option<u64>,
    /// CRC-32C of the bytes read.
    pub crc: Option<u32>,
    /// Whether size and CRC-32C matched the manifest.
    pub ok: bool,
}

/// One state of an operator handle as [`verify`](super::verify()) read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorStateCheck {
    /// The state's name.
    pub name: String,
    /// Partitions the handle lists.
    pub partitions: usize,
    /// Elements (or broadcast entries) read; `None` when the partitions were not decoded.
    pub entries: Option<u64>,
}

/// One problem found by [`verify`](super::verify()), naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The checkpoint.
    pub checkpoint_id: CheckpointId,
    /// The instance whose handle it is in, if it is in a handle.
    pub instance: Option<u32>,
    /// The handle (`keyed <n>`, `operator <n>`), if it is in a handle.
    pub handle: Option<String>,
    /// The stream or file ([`StreamStateHandle::describe`](state_api::StreamStateHandle::describe)), if it is in one.
    pub file: Option<String>,
    /// The key group, if it is in one.
    pub key_group: Option<u32>,
    /// What kind of problem it is.
    pub kind: ProblemKind,
    /// The [`state_api::Error`] that describes it, rendered.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checkpoint {}", self.checkpoint_id)?;
        if let Some(instance) = self.instance {
            write!(f, ", instance {instance}")?;
        }
        if let Some(handle) = &self.handle {
            write!(f, ", {handle}")?;
        }
        if let Some(key_group) = self.key_group {
            write!(f, ", key group {key_group}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The kind of a [`Problem`], after the [`state_api::Error`] under its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Bytes are not what they should be (checksum, structure, size over the record,
    /// handle and manifest disagreeing).
    Corrupted,
    /// Bytes end before they should.
    Truncated,
    /// A file is missing.
    NotFound,
    /// Written by a newer format version than this build reads.
    UnsupportedVersion,
    /// A plugin the data needs (a decorator) is not linked.
    UnknownPlugin,
    /// Reading failed.
    Io,
    /// Anything else.
    Other,
}

impl ProblemKind {
    /// The kind of `error`, judged by [`state_api::Error::root`].
    pub fn of(error: &StateError) -> Self {
        match error.root() {
            StateError::Corrupted { .. } => ProblemKind::Corrupted,
            StateError::Truncated { .. } => ProblemKind::Truncated,
            StateError::NotFound { .. } => ProblemKind::NotFound,
            StateError::UnsupportedVersion { .. } => ProblemKind::UnsupportedVersion,
            StateError::UnknownPlugin { .. } => ProblemKind::UnknownPlugin,
            StateError::Io { .. } | StateError::Stream { .. } => ProblemKind::Io,
            _ => ProblemKind::Other,
        }
    }

    /// The kind's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Corrupted => "corrupted",
            ProblemKind::Truncated => "truncated",
            ProblemKind::NotFound => "not-found",
            ProblemKind::UnsupportedVersion => "unsupported-version",
            ProblemKind::UnknownPlugin => "unknown-plugin",
            ProblemKind::Io => "io",
            ProblemKind::Other => "other",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn display<T: fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn checkpoint_type_name<S: Serializer>(
    value: &CheckpointType,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(checkpoint_type_str(*value))
}

/// `checkpoint` or `savepoint`.
pub fn checkpoint_type_str(checkpoint_type: CheckpointType) -> &'static str {
    match checkpoint_type {
        CheckpointType::Checkpoint => "checkpoint",
        CheckpointType::Savepoint => "savepoint",
    }
}

//! State handles: where the bytes of a snapshot are and how to read or delete them.
//!
//! Handles are what the coordinator stores in checkpoint metadata and hands back on
//! restore, so they serialize with `serde`. The two open families are trait objects,
//! [`StreamStateHandle`] (one readable stream of bytes) and [`KeyedStateHandle`] (the keyed
//! state of one key-group range), serialized through `typetag` (`erased-serde` plus an
//! `inventory` registry of constructors) under explicit, stable tags such as `"file"` or
//! `"key-groups"`: a third-party crate adds its own handle kind by implementing the trait
//! with its own tag. Tags are never derived from Rust type names, so renaming a type does
//! not break stored checkpoints.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use state_api::{ByteStreamStateHandle, KeyGroupRange, KeyedStateHandle, StreamStateHandle};
//! // The canonical format's handle, one keyed handle kind among others.
//! use state_format::key_groups::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
//!
//! let range = KeyGroupRange::new(0, 3)?;
//! let stream: Arc<dyn StreamStateHandle> =
//!     Arc::new(ByteStreamStateHandle::new("kg", vec![0; 40]));
//! let handle: Arc<dyn KeyedStateHandle> = Arc::new(KeyGroupsStateHandle::new(
//!     KeyGroupRangeOffsets::with_offsets(range, vec![0, 10, 20, 30])?,
//!     stream,
//! ));
//! let json = serde_json::to_string(&handle).unwrap();
//! let back: Arc<dyn KeyedStateHandle> = serde_json::from_str(&json).unwrap();
//! assert_eq!(back.key_group_range(), range);
//! let half = back.intersection(&KeyGroupRange::new(2, 9)?).expect("groups 2 and 3 intersect");
//! assert_eq!(half.key_group_range(), KeyGroupRange::new(2, 3)?);
//! # Ok::<(), state_api::Error>(())
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::CheckpointId;
use crate::{Error, KeyGroupRange, Result, StateObject};

/// A readable, seekable stream of snapshot bytes.
pub trait StateInputStream: Read + Seek + Send {}

impl<T: Read + Seek + Send> StateInputStream for T {}

/// Where a seek `to` lands in a stream of `len` bytes read up to `pos`; `None` before the
/// start. For readers that implement `Seek` over a known length (files, objects).
pub fn seek_position(to: io::SeekFrom, pos: u64, len: u64) -> Option<u64> {
    match to {
        io::SeekFrom::Start(offset) => Some(offset),
        io::SeekFrom::End(delta) => len.checked_add_signed(delta),
        io::SeekFrom::Current(delta) => pos.checked_add_signed(delta),
    }
}

/// A handle to one stream of snapshot bytes. `dyn StreamStateHandle` downcasts to the
/// concrete handle with [`downcast_ref`](#method.downcast_ref).
#[typetag::serde]
pub trait StreamStateHandle: StateObject + Any + fmt::Debug + Send + Sync + 'static {
    /// Opens the bytes for reading from the start.
    fn open(&self) -> Result<Box<dyn StateInputStream>>;

    /// A short description for errors and listings (a path, an object key, a name).
    fn describe(&self) -> String;

    /// Whether this process wrote the stream in this run: a handle a stream's
    /// `close_and_get_handle` returned, not one read back from storage. Only such a stream
    /// may be discarded as a duplicate upload by
    /// `SharedStateRegistry::register` (`state-coordinator`); the
    /// default, `false`, never lets a registry delete it.
    fn written_by_this_process(&self) -> bool {
        false
    }
}

/// A handle to the keyed state of one key-group range. `dyn KeyedStateHandle` downcasts to
/// the concrete handle with [`downcast_ref`](#method.downcast_ref).
#[typetag::serde]
pub trait KeyedStateHandle: StateObject + Any + fmt::Debug + Send + Sync + 'static {
    /// The key groups this handle holds state for.
    fn key_group_range(&self) -> KeyGroupRange;

    /// The part of this handle that covers `range`, or `None` if they do not intersect.
    /// Restore uses it to pick, from the handles of the old instances, what a new
    /// instance's range needs.
    fn intersection(&self, range: &KeyGroupRange) -> Option<Arc<dyn KeyedStateHandle>>;
}

impl dyn StreamStateHandle {
    /// The handle as the concrete handle type `T`, if it is one.
    pub fn downcast_ref<T: StreamStateHandle>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref()
    }

    /// Whether the handle is of the concrete handle type `T`.
    pub fn is<T: StreamStateHandle>(&self) -> bool {
        (self as &dyn Any).is::<T>()
    }
}

impl dyn KeyedStateHandle {
    /// The handle as the concrete handle type `T`, if it is one.
    pub fn downcast_ref<T: KeyedStateHandle>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref()
    }

    /// Whether the handle is of the concrete handle type `T`.
    pub fn is<T: KeyedStateHandle>(&self) -> bool {
        (self as &dyn Any).is::<T>()
    }
}

/// Snapshot bytes kept inline in the handle (small state, in-memory storage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteStreamStateHandle {
    name: String,
    data: Arc<[u8]>,
}

impl ByteStreamStateHandle {
    /// A handle holding `data`, called `name` in errors and listings.
    pub fn new(name: impl Into<String>, data: impl Into<Arc<[u8]>>) -> Self {
        ByteStreamStateHandle {
            name: name.into(),
            data: data.into(),
        }
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The handle's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl StateObject for ByteStreamStateHandle {
    fn discard(&self) -> Result<()> {
        Ok(())
    }

    fn state_size(&self) -> u64 {
        self.data.len() as u64
    }
}

#[typetag::serde(name = "bytes")]
impl StreamStateHandle for ByteStreamStateHandle {
    fn open(&self) -> Result<Box<dyn StateInputStream>> {
        Ok(Box::new(Cursor::new(self.data.clone())))
    }

    fn describe(&self) -> String {
        format!("inline bytes `{}`", self.name)
    }
}

/// Stands for a shared file that an earlier checkpoint already uploaded; the shared state
/// registry resolves it to the real handle. It cannot be read itself, and discarding it
/// deletes nothing (the registry owns the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceholderStreamStateHandle {
    key: String,
    size: u64,
}

impl PlaceholderStreamStateHandle {
    /// A placeholder for the shared file registered under `key`, of `size` bytes.
    pub fn new(key: impl Into<String>, size: u64) -> Self {
        PlaceholderStreamStateHandle {
            key: key.into(),
            size,
        }
    }

    /// The shared state registry key of the file it stands for.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl StateObject for PlaceholderStreamStateHandle {
    fn discard(&self) -> Result<()> {
        Ok(())
    }

    fn state_size(&self) -> u64 {
        self.size
    }
}

#[typetag::serde(name = "placeholder")]
impl StreamStateHandle for PlaceholderStreamStateHandle {
    fn open(&self) -> Result<Box<dyn StateInputStream>> {
        Err(Error::Unsupported(format!(
            "placeholder for shared file `{}` cannot be read: resolve it through the shared state registry first",
            self.key
        )))
    }

    fn describe(&self) -> String {
        format!("placeholder for shared file `{}`", self.key)
    }
}

/// A directory of snapshot files (a local RocksDB checkpoint, a task-local copy).
///
/// Task-local: it names a local directory by absolute path and is never part of checkpoint
/// storage; the checkpoint metadata reader refuses one with [`Error::OutsideStorage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryStateHandle {
    directory: PathBuf,
    size: u64,
}

impl DirectoryStateHandle {
    /// A handle to `directory`, whose files add up to `size` bytes.
    pub fn new(directory: impl Into<PathBuf>, size: u64) -> Self {
        DirectoryStateHandle {
            directory: directory.into(),
            size,
        }
    }

    /// The directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

impl StateObject for DirectoryStateHandle {
    fn discard(&self) -> Result<()> {
        match fs::remove_dir_all(&self.directory) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(Error::io(&self.directory, err))
            }
            _ => Ok(()),
        }
    }

    fn state_size(&self) -> u64 {
        self.size
    }
}

/// A file of an incremental snapshot and the name it has in the backend's local directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandleAndLocalPath {
    /// Where the file's bytes are stored.
    pub handle: Arc<dyn StreamStateHandle>,
    /// The file's name relative to the backend's instance directory (`000042.sst`).
    pub local_path: String,
    /// For a shared file, its `SharedStateRegistry` key (`state-coordinator`) as
    /// the writer chose it; it travels with the file through placeholders and
    /// `resolve`, so a restored backend refers to
    /// the file under the key it was registered with. `None` for private files and for
    /// writers that leave the key to [`IncrementalRemoteKeyedStateHandle::shared_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_key: Option<String>,
}

impl HandleAndLocalPath {
    /// Pairs a stored file with its local name.
    pub fn new(handle: Arc<dyn StreamStateHandle>, local_path: impl Into<String>) -> Self {
        HandleAndLocalPath {
            handle,
            local_path: local_path.into(),
            shared_key: None,
        }
    }

    /// Pairs a stored shared file with its local name and its registry key.
    pub fn shared(
        handle: Arc<dyn StreamStateHandle>,
        local_path: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        HandleAndLocalPath {
            handle,
            local_path: local_path.into(),
            shared_key: Some(key.into()),
        }
    }
}

fn discard_all<'a>(objects: impl IntoIterator<Item = &'a dyn StateObject>) -> Result<()> {
    let mut first_error = None;
    for object in objects {
        if let Err(err) = object.discard() {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// An incremental keyed snapshot in checkpoint storage: shared files (immutable, reused
/// across checkpoints and counted by the shared state registry), private files (this
/// checkpoint's own) and the meta data stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncrementalRemoteKeyedStateHandle {
    /// Identifies the backend instance whose files these are.
    pub backend_identifier: String,
    /// The key groups covered.
    pub key_group_range: KeyGroupRange,
    /// The checkpoint this snapshot belongs to.
    pub checkpoint_id: CheckpointId,
    /// The registered name of the strategy that wrote it (`rocksdb-incremental`,
    /// `heap-incremental`): a backend restores only its own strategy's files. `None` in
    /// metadata written before strategies were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Shared files (sst files, deltas), possibly placeholders for already uploaded ones.
    pub shared_state: Vec<HandleAndLocalPath>,
    /// Files only this checkpoint uses (MANIFEST, CURRENT, OPTIONS).
    pub private_state: Vec<HandleAndLocalPath>,
    /// The meta data stream (serialization proxy).
    pub meta_state: Arc<dyn StreamStateHandle>,
}

impl StateObject for IncrementalRemoteKeyedStateHandle {
    /// Discards the meta data, the private files and the shared files this handle holds
    /// itself. Placeholders delete nothing, so a handle returned by
    /// `SharedStateRegistry::register` (`state-coordinator`) (all shared
    /// files placeholders) leaves shared files to the registry, while a snapshot that was
    /// never registered (failed, cancelled, declined) takes its new uploads with it.
    fn discard(&self) -> Result<()> {
        discard_all(
            std::iter::once(&*self.meta_state as &dyn StateObject).chain(
                self.private_state
                    .iter()
                    .chain(&self.shared_state)
                    .map(|f| &*f.handle as &dyn StateObject),
            ),
        )
    }

    fn state_size(&self) -> u64 {
        // Sizes come from stored metadata: a crafted one may not add up within a u64.
        self.shared_state
            .iter()
            .chain(&self.private_state)
            .fold(self.meta_state.state_size(), |total, f| {
                total.saturating_add(f.handle.state_size())
            })
    }
}

impl IncrementalRemoteKeyedStateHandle {
    /// Checks that the snapshot was written by `strategy`, the strategy whose backend is
    /// restoring it: another strategy's files (a heap chain, a RocksDB checkpoint) share
    /// this handle type but nothing else. A handle that records no strategy (metadata of
    /// earlier releases) passes; its reader tells the kinds apart by the meta data stream.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] naming both strategies and what to do instead.
    pub fn check_strategy(&self, strategy: &str) -> Result<()> {
        match self.strategy.as_deref() {
            Some(written) if written != strategy => Err(Error::Unsupported(format!(
                "incremental snapshot {} of checkpoint {} was written by strategy `{written}`, not `{strategy}`: restore it with the backend of `{written}`, or restore a savepoint",
                self.meta_state.describe(),
                self.checkpoint_id
            ))),
            _ => Ok(()),
        }
    }

    /// The `SharedStateRegistry` key (`state-coordinator`) of shared file `file`:
    /// a placeholder's key, else the key its writer recorded
    /// ([`HandleAndLocalPath::shared_key`]), else `<backend identifier>/<local path>`.
    ///
    /// Writers must make keys unique per distinct file content: a backend that continues
    /// from a restored checkpoint can produce a file under a name an earlier incarnation
    /// already used for other bytes (RocksDB reuses file numbers after a restore), so the
    /// RocksDB strategy keys new uploads by a backend identifier that is new for every
    /// backend instance, restored or not.
    pub fn shared_key(&self, file: &HandleAndLocalPath) -> String {
        if let Some(placeholder) = file.handle.downcast_ref::<PlaceholderStreamStateHandle>() {
            return placeholder.key().to_owned();
        }
        match &file.shared_key {
            Some(key) => key.clone(),
            None => format!("{}/{}", self.backend_identifier, file.local_path),
        }
    }
}

#[typetag::serde(name = "incremental-remote")]
impl KeyedStateHandle for IncrementalRemoteKeyedStateHandle {
    fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }

    /// Files cannot be split by key group: an intersecting handle is returned whole and
    /// restore keeps only the keys of its range.
    fn intersection(&self, range: &KeyGroupRange) -> Option<Arc<dyn KeyedStateHandle>> {
        (!self.key_group_range.intersection(range).is_empty())
            .then(|| Arc::new(self.clone()) as Arc<dyn KeyedStateHandle>)
    }
}

/// The task-local copy of an incremental keyed snapshot: a local directory of files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncrementalLocalKeyedStateHandle {
    /// Identifies the backend instance whose files these are.
    pub backend_identifier: String,
    /// The checkpoint this snapshot belongs to.
    pub checkpoint_id: CheckpointId,
    /// The directory holding the files.
    pub directory: DirectoryStateHandle,
    /// The key groups covered.
    pub key_group_range: KeyGroupRange,
    /// The meta data stream (serialization proxy).
    pub meta_state: Arc<dyn StreamStateHandle>,
    /// The shared files of the snapshot, by local name.
    pub shared_state: Vec<HandleAndLocalPath>,
}

impl StateObject for IncrementalLocalKeyedStateHandle {
    fn discard(&self) -> Result<()> {
        discard_all([
            &self.directory as &dyn StateObject,
            &*self.meta_state as &dyn StateObject,
        ])
    }

    fn state_size(&self) -> u64 {
        self.directory
            .state_size()
            .saturating_add(self.meta_state.state_size())
    }
}

#[typetag::serde(name = "incremental-local")]
impl KeyedStateHandle for IncrementalLocalKeyedStateHandle {
    fn key_group_range(&self) -> KeyGroupRange {
        self.key_group_range
    }

    fn intersection(&self, range: &KeyGroupRange) -> Option<Arc<dyn KeyedStateHandle>> {
        (!self.key_group_range.intersection(range).is_empty())
            .then(|| Arc::new(self.clone()) as Arc<dyn KeyedStateHandle>)
    }
}

/// How an operator list state is redistributed when parallelism changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DistributionMode {
    /// The list is split: each new instance gets an even share of all elements.
    SplitDistribute,
    /// Every new instance gets the union of all elements.
    Union,
    /// A broadcast map state: identical on every instance, restored whole everywhere.
    Broadcast,
}

impl DistributionMode {
    /// Every mode, in code order.
    pub const ALL: [DistributionMode; 3] = [
        DistributionMode::SplitDistribute,
        DistributionMode::Union,
        DistributionMode::Broadcast,
    ];

    /// The byte that encodes this mode in snapshot headers.
    pub fn code(self) -> u8 {
        match self {
            DistributionMode::SplitDistribute => 0,
            DistributionMode::Union => 1,
            DistributionMode::Broadcast => 2,
        }
    }

    /// The mode written as `code` in a snapshot header, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.code() == code)
    }

    /// The mode's name (`split-distribute`, `union`, `broadcast`).
    pub fn as_str(self) -> &'static str {
        match self {
            DistributionMode::SplitDistribute => "split-distribute",
            DistributionMode::Union => "union",
            DistributionMode::Broadcast => "broadcast",
        }
    }

    /// Whether this is a list state's mode (split-distribute or union).
    pub fn is_list(self) -> bool {
        self != DistributionMode::Broadcast
    }
}

impl fmt::Display for DistributionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one operator state's partitions are inside an [`OperatorStreamStateHandle`]'s stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStatePartitions {
    /// Stream offset of each partition (one list element, or one broadcast map).
    pub offsets: Vec<u64>,
    /// How the state is redistributed.
    pub mode: DistributionMode,
}

/// An operator state snapshot: one stream plus, per state name, partition offsets and mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorStreamStateHandle {
    states: BTreeMap<String, OperatorStatePartitions>,
    delegate: Arc<dyn StreamStateHandle>,
}

impl OperatorStreamStateHandle {
    /// A handle over `delegate` with the given per-state partitions.
    pub fn new(
        states: BTreeMap<String, OperatorStatePartitions>,
        delegate: Arc<dyn StreamStateHandle>,
    ) -> Self {
        OperatorStreamStateHandle { states, delegate }
    }

    /// Partitions by state name.
    pub fn states(&self) -> &BTreeMap<String, OperatorStatePartitions> {
        &self.states
    }

    /// The stream holding the states.
    pub fn delegate(&self) -> &Arc<dyn StreamStateHandle> {
        &self.delegate
    }
}

impl StateObject for OperatorStreamStateHandle {
    fn discard(&self) -> Result<()> {
        self.delegate.discard()
    }

    fn state_size(&self) -> u64 {
        self.delegate.state_size()
    }
}

/// A backend instance identifier starting with `prefix` (`heap`, `rocksdb`), unique across
/// instances, processes and restarts: incremental strategies key their shared files by it,
/// so two incarnations restored from one checkpoint never register different bytes under
/// one `SharedStateRegistry` key (`state-coordinator`).
pub fn new_backend_identifier(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // A random-keyed hasher over the time and the process: unique without an RNG crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!(
        "{prefix}-{:016x}{:08x}",
        hasher.finish(),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_file::TestFile;

    #[test]
    fn backend_identifiers_are_distinct_and_carry_their_prefix() {
        let ids: std::collections::BTreeSet<String> =
            (0..100).map(|_| new_backend_identifier("heap")).collect();
        assert_eq!(ids.len(), 100, "{ids:?}");
        assert!(ids.iter().all(|id| id.starts_with("heap-")), "{ids:?}");
    }

    fn bytes(data: &[u8]) -> Arc<dyn StreamStateHandle> {
        Arc::new(ByteStreamStateHandle::new("test", data.to_vec()))
    }

    #[test]
    fn operator_handle_serializes_with_offsets_modes_and_its_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator-state");
        fs::write(&path, b"partitions").unwrap();
        let states = BTreeMap::from([
            (
                "offsets".to_owned(),
                OperatorStatePartitions {
                    offsets: vec![12, 40, 77],
                    mode: DistributionMode::SplitDistribute,
                },
            ),
            (
                "rules".to_owned(),
                OperatorStatePartitions {
                    offsets: vec![100],
                    mode: DistributionMode::Broadcast,
                },
            ),
        ]);
        let handle = OperatorStreamStateHandle::new(
            states.clone(),
            Arc::new(TestFile::read_back(&path, 10)),
        );
        let json = serde_json::to_string(&handle).unwrap();
        assert!(
            json.contains("\"test-file\""),
            "the stream keeps its stable tag: {json}"
        );
        let back: OperatorStreamStateHandle = serde_json::from_str(&json).unwrap();
        assert_eq!(back.states(), &states);
        assert_eq!(back.state_size(), 10);
        let mut data = Vec::new();
        back.delegate()
            .open()
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data, b"partitions");
    }

    #[test]
    fn shared_keys_travel_with_files_and_default_to_the_backend_and_name() {
        let handle = IncrementalRemoteKeyedStateHandle {
            strategy: None,
            backend_identifier: "b2".into(),
            key_group_range: KeyGroupRange::new(0, 7).unwrap(),
            checkpoint_id: CheckpointId::new(3),
            shared_state: vec![
                HandleAndLocalPath::new(bytes(b"x"), "000001.sst"),
                HandleAndLocalPath::shared(bytes(b"y"), "000002.sst", "b1/000002.sst"),
                HandleAndLocalPath::new(
                    Arc::new(PlaceholderStreamStateHandle::new("b0/000003.sst", 1)),
                    "000003.sst",
                ),
            ],
            private_state: vec![],
            meta_state: bytes(b"meta"),
        };
        let keys: Vec<String> = handle
            .shared_state
            .iter()
            .map(|file| handle.shared_key(file))
            .collect();
        assert_eq!(keys, ["b2/000001.sst", "b1/000002.sst", "b0/000003.sst"]);
        let json = serde_json::to_string(&handle).unwrap();
        let back: IncrementalRemoteKeyedStateHandle = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.shared_state[1].shared_key.as_deref(),
            Some("b1/000002.sst")
        );
        assert_eq!(back.shared_state[0].shared_key, None);
    }

    #[test]
    fn unknown_handle_tag_is_a_deserialization_error() {
        let result: std::result::Result<Arc<dyn StreamStateHandle>, _> =
            serde_json::from_str(r#"{"s3-object":{"key":"x"}}"#);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("s3-object"), "{err}");
    }

    #[test]
    fn incremental_handle_discards_its_own_files_but_not_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let path = dir.path().join(name);
            fs::write(&path, b"data").unwrap();
            Arc::new(TestFile::read_back(path, 4)) as Arc<dyn StreamStateHandle>
        };
        // 000001.sst was uploaded by an earlier checkpoint and is owned by the registry.
        let earlier = file("1.sst");
        let handle = IncrementalRemoteKeyedStateHandle {
            strategy: None,
            backend_identifier: "b".into(),
            key_group_range: KeyGroupRange::new(0, 7).unwrap(),
            checkpoint_id: CheckpointId::new(3),
            shared_state: vec![
                HandleAndLocalPath::new(
                    Arc::new(PlaceholderStreamStateHandle::new("b/000001.sst", 4)),
                    "000001.sst",
                ),
                HandleAndLocalPath::new(file("2.sst"), "000002.sst"),
            ],
            private_state: vec![HandleAndLocalPath::new(file("MANIFEST"), "MANIFEST-000004")],
            meta_state: file("meta"),
        };
        assert_eq!(handle.state_size(), 16);
        handle.discard().unwrap();
        assert!(
            dir.path().join("1.sst").exists(),
            "{earlier:?} is the registry's"
        );
        assert!(!dir.path().join("2.sst").exists());
        assert!(!dir.path().join("MANIFEST").exists());
        assert!(!dir.path().join("meta").exists());
        // A second discard finds nothing and is fine.
        handle.discard().unwrap();
        assert!(
            handle
                .intersection(&KeyGroupRange::new(7, 9).unwrap())
                .is_some()
        );
    }

    #[test]
    fn placeholder_cannot_be_opened() {
        let err = PlaceholderStreamStateHandle::new("b-000001.sst", 10)
            .open()
            .err()
            .unwrap();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("b-000001.sst"), "{err}");
    }
}

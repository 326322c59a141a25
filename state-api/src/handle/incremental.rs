//! Handles of incremental keyed snapshots in checkpoint storage, and the backend
//! identifiers their shared files are keyed by.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    CheckpointId, Error, KeyGroupRange, KeyedStateHandle, PlaceholderStreamStateHandle, Result,
    StateObject, StreamStateHandle,
};

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
            shared_key: Some(key.into()),
            ..Self::new(handle, local_path)
        }
    }
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
        // Every part is tried, the meta data first; `Result::and` keeps the first failure.
        let meta = self.meta_state.discard();
        let files = self.private_state.iter().chain(&self.shared_state);
        files.map(|f| f.handle.discard()).fold(meta, Result::and)
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
    fn streams(&self) -> Option<Vec<&Arc<dyn StreamStateHandle>>> {
        let files = self.shared_state.iter().chain(&self.private_state);
        Some(files.map(|f| &f.handle).chain([&self.meta_state]).collect())
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
    let pid = std::process::id();
    // A random-keyed hasher over the time and the process: unique without an RNG crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.write_u32(pid);
    format!("{prefix}-{:016x}{pid:08x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::ByteStreamStateHandle;
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

    fn placeholder(key: &str, size: u64, local_path: &str) -> HandleAndLocalPath {
        let handle = Arc::new(PlaceholderStreamStateHandle::new(key, size));
        HandleAndLocalPath::new(handle, local_path)
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
                placeholder("b0/000003.sst", 1, "000003.sst"),
            ],
            private_state: vec![],
            meta_state: bytes(b"meta"),
        };
        let shared = &handle.shared_state;
        let keys: Vec<String> = shared.iter().map(|file| handle.shared_key(file)).collect();
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
    fn incremental_handle_discards_its_own_files_but_not_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let file = |name: &str| {
            let path = path(name);
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
                placeholder("b/000001.sst", 4, "000001.sst"),
                HandleAndLocalPath::new(file("2.sst"), "000002.sst"),
            ],
            private_state: vec![HandleAndLocalPath::new(file("MANIFEST"), "MANIFEST-000004")],
            meta_state: file("meta"),
        };
        assert_eq!(handle.state_size(), 16);
        handle.discard().unwrap();
        assert!(path("1.sst").exists(), "{earlier:?} is the registry's");
        assert!(!path("2.sst").exists());
        assert!(!path("MANIFEST").exists());
        assert!(!path("meta").exists());
        // A second discard finds nothing and is fine.
        handle.discard().unwrap();
        let range = KeyGroupRange::new(7, 9).unwrap();
        assert!(handle.intersection(&range).is_some());
    }
}

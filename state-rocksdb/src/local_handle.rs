//! The task-local copy of an incremental snapshot (local recovery): a directory on this
//! machine. Its handles name absolute paths and are never part of checkpoint storage: read
//! inside checkpoint metadata (a [`HandleScope`] is entered), a [`DirectoryStateHandle`]
//! refuses to deserialize with [`Error::OutsideStorage`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use state_api::{
    CheckpointId, Error, HandleAndLocalPath, KeyGroupRange, KeyedStateHandle, Result, StateObject,
    StreamStateHandle,
};
use state_format::storage_root::HandleScope;

/// A directory of snapshot files on this machine (a task-local copy of a checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

impl<'de> Deserialize<'de> for DirectoryStateHandle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            directory: PathBuf,
            size: u64,
        }
        let Fields { directory, size } = Fields::deserialize(deserializer)?;
        if let Some(scope) = HandleScope::current() {
            let location = directory.display().to_string();
            let reason = "a task-local directory is never part of checkpoint storage";
            return Err(serde::de::Error::custom(HandleScope::reject(
                scope.outside(location, reason),
            )));
        }
        Ok(DirectoryStateHandle { directory, size })
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
        let (directory, meta) = (self.directory.discard(), self.meta_state.discard());
        directory.and(meta)
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

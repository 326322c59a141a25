//! [`TaskLocalDirectory`]: task-local copies for local recovery in a directory of the
//! task's own disk.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::{CheckpointStateOutputStream, Error, Result, StreamStateHandle, TaskLocalStorage};

use crate::{FileStateHandle, LocalFileOutputStream};

/// Task-local copies under a root directory: checkpoint `n`'s copy in `<root>/chk_<n>/`,
/// each stream a file written like a checkpoint storage's (hidden while in progress, never
/// left behind unless completed), named by absolute path in its handle.
///
/// # Example
///
/// ```
/// use std::io::Write;
/// use std::sync::Arc;
/// use state_api::{LocalRecoveryConfig, StreamStateHandle};
/// use state_storage_local::TaskLocalDirectory;
///
/// let dir = tempfile::tempdir().unwrap();
/// let local = LocalRecoveryConfig::enabled(Arc::new(TaskLocalDirectory::new(dir.path())));
/// let storage = local.storage().unwrap();
/// let id = state_api::CheckpointId::new(4);
/// let mut stream = storage.create_stream(&storage.checkpoint_dir(id))?;
/// stream.write_all(b"copy").unwrap();
/// let handle = stream.close_and_get_handle()?;
/// assert_eq!(handle.state_size(), 4);
/// assert!(dir.path().join("chk_4").is_dir());
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TaskLocalDirectory {
    root: PathBuf,
}

impl TaskLocalDirectory {
    /// Task-local copies under `root` (created when the first copy is written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TaskLocalDirectory { root: root.into() }
    }
}

impl TaskLocalStorage for TaskLocalDirectory {
    fn root(&self) -> &Path {
        &self.root
    }

    fn create_stream(&self, dir: &Path) -> Result<Box<dyn CheckpointStateOutputStream>> {
        fs::create_dir_all(dir).map_err(|err| Error::io(dir, err))?;
        Ok(Box::new(LocalFileOutputStream::create(
            dir.to_path_buf(),
            0,
            None,
        )?))
    }

    fn file_handle(&self, path: PathBuf, size: u64) -> Arc<dyn StreamStateHandle> {
        Arc::new(FileStateHandle::local(path, size))
    }
}

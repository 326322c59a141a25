//! The storage root a [`Location`] names: its `chk-<id>` directories (or, on object
//! storage, prefixes) and their metadata, read without creating anything.

use std::fs;
use std::path::{Path, PathBuf};

use state_api::CheckpointId;
use state_api::Error as StateError;
use state_api::checkpoint_metadata::{CheckpointMetadata, METADATA_FILE};
use state_storage_local::LocalCheckpointStorage;

use super::{IncompleteCheckpoint, Location};
use crate::{Error, Result};

/// Prefix of a checkpoint's directory name: `chk-<id>`.
const CHECKPOINT_DIR_PREFIX: &str = "chk-";

/// A storage root, and the checkpoint a `chk-<id>` path selected.
pub(super) struct Storage {
    /// The root directory, or the URL of the root prefix on object storage.
    pub(super) root: PathBuf,
    pub(super) selected: Option<u64>,
    /// Every `chk-<id>` directory, ascending by id, with whether it is committed.
    directories: Vec<(u64, bool)>,
    /// Where metadata is read from when not from the local directory.
    #[cfg(feature = "object-storage")]
    object: Option<state_storage_object::ObjectCheckpointStorage>,
}

fn checkpoint_id_of(name: &std::ffi::OsStr) -> Option<u64> {
    name.to_str()?
        .strip_prefix(CHECKPOINT_DIR_PREFIX)?
        .parse()
        .ok()
}

/// The `chk-<id>` directories under `root`, ascending, with whether each is committed.
fn checkpoint_directories(root: &Path) -> Result<Vec<(u64, bool)>> {
    let unreadable = |source| Error::Unreadable {
        path: root.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(root).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let Some(id) = checkpoint_id_of(&entry.file_name()) else {
            continue;
        };
        let path = entry.path();
        if path.is_dir() {
            found.push((id, path.join(METADATA_FILE).is_file()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

impl Storage {
    pub(super) fn open(location: &Location) -> Result<Self> {
        match location {
            Location::Dir(dir) => Self::open_dir(dir),
            #[cfg(feature = "object-storage")]
            Location::Object { url, options } => Self::open_object(url, options),
        }
    }

    /// Storage under `url`, or the checkpoint `url` names when it ends in `/chk-<id>`.
    #[cfg(feature = "object-storage")]
    fn open_object(url: &str, options: &state_storage_object::ObjectStoreOptions) -> Result<Self> {
        use state_storage_object::ObjectCheckpointStorage;
        let trimmed = url.trim_end_matches('/');
        let (root, selected) = match trimmed.rsplit_once('/') {
            Some((parent, name)) if !parent.ends_with('/') => {
                match checkpoint_id_of(std::ffi::OsStr::new(name)) {
                    Some(id) => (parent, Some(id)),
                    None => (trimmed, None),
                }
            }
            _ => (trimmed, None),
        };
        let failed = |source| Error::Storage {
            root: PathBuf::from(root),
            source,
        };
        let object = ObjectCheckpointStorage::open(root, options.clone()).map_err(failed)?;
        let directories = object.checkpoint_directories().map_err(failed)?;
        let absent = match selected {
            Some(id) => !directories.iter().any(|(found, _)| *found == id),
            None => directories.is_empty(),
        };
        if absent {
            return Err(Error::NotACheckpointDirectory {
                path: PathBuf::from(url),
            });
        }
        Ok(Storage {
            root: PathBuf::from(object.url()),
            selected,
            directories,
            object: Some(object),
        })
    }

    fn open_dir(dir: &Path) -> Result<Self> {
        let metadata = fs::metadata(dir).map_err(|source| Error::Unreadable {
            path: dir.to_path_buf(),
            source,
        })?;
        if !metadata.is_dir() {
            return Err(Error::NotACheckpointDirectory {
                path: dir.to_path_buf(),
            });
        }
        let directories = checkpoint_directories(dir)?;
        if directories.is_empty() {
            // A `chk-<id>` directory given directly: its parent is the root.
            if let Some(id) = dir.file_name().and_then(checkpoint_id_of) {
                let root = match dir.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let directories = checkpoint_directories(&root)?;
                return Ok(Storage {
                    root,
                    selected: Some(id),
                    directories,
                    #[cfg(feature = "object-storage")]
                    object: None,
                });
            }
            return Err(Error::NotACheckpointDirectory {
                path: dir.to_path_buf(),
            });
        }
        Ok(Storage {
            root: dir.to_path_buf(),
            selected: None,
            directories,
            #[cfg(feature = "object-storage")]
            object: None,
        })
    }

    /// The checkpoint's directory, or the URL of its prefix on object storage.
    pub(super) fn checkpoint_dir(&self, checkpoint_id: CheckpointId) -> PathBuf {
        let name = format!("{CHECKPOINT_DIR_PREFIX}{checkpoint_id}");
        #[cfg(feature = "object-storage")]
        if self.object.is_some() {
            return PathBuf::from(format!("{}/{name}", self.root.display()));
        }
        self.root.join(name)
    }

    pub(super) fn committed(&self) -> impl Iterator<Item = u64> + '_ {
        self.directories
            .iter()
            .filter(|(_, committed)| *committed)
            .map(|(id, _)| *id)
    }

    pub(super) fn incomplete(&self) -> impl Iterator<Item = IncompleteCheckpoint> + '_ {
        self.directories
            .iter()
            .filter(|(id, committed)| !committed && self.selected.is_none_or(|s| s == *id))
            .map(|(id, _)| IncompleteCheckpoint {
                checkpoint_id: CheckpointId::new(*id),
                directory: self.checkpoint_dir(CheckpointId::new(*id)),
            })
    }

    /// The checkpoint `requested` (or the one the path selected) must be committed.
    pub(super) fn require(&self, requested: Option<u64>) -> Result<Option<u64>> {
        let id = match (self.selected, requested) {
            (Some(directory_id), Some(requested)) if directory_id != requested => {
                return Err(Error::ConflictingCheckpoint {
                    path: self.checkpoint_dir(CheckpointId::new(directory_id)),
                    directory_id,
                    requested,
                });
            }
            (selected, requested) => requested.or(selected),
        };
        match id {
            Some(id) if !self.committed().any(|c| c == id) => {
                let committed: Vec<String> = self.committed().map(|c| c.to_string()).collect();
                Err(Error::CheckpointNotFound {
                    root: self.root.clone(),
                    checkpoint_id: CheckpointId::new(id),
                    committed: match committed.is_empty() {
                        true => "none".to_owned(),
                        false => committed.join(", "),
                    },
                })
            }
            id => Ok(id),
        }
    }

    /// Reads committed checkpoint `checkpoint_id`'s metadata as the storage does
    /// (`CheckpointMetadata::read_file` for a directory), creating nothing.
    pub(super) fn load(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<CheckpointMetadata, StateError> {
        #[cfg(feature = "object-storage")]
        if let Some(object) = &self.object {
            return object.load_checkpoint(checkpoint_id);
        }
        LocalCheckpointStorage::open(&self.root)?.load_checkpoint(checkpoint_id)
    }

    /// Every file (or object) stored under the root, by its location relative to the root,
    /// with its size when known.
    pub(super) fn stored_files(&self) -> Result<Vec<(String, Option<u64>)>> {
        #[cfg(feature = "object-storage")]
        if let Some(object) = &self.object {
            return object
                .stored_objects(None)
                .map(|names| names.into_iter().map(|name| (name, None)).collect())
                .map_err(|source| Error::Storage {
                    root: self.root.clone(),
                    source,
                });
        }
        let mut found = Vec::new();
        walk(&self.root, "", &mut found)?;
        found.sort();
        Ok(found)
    }
}

/// Lists the files under `dir` (which is `prefix` under the root) into `found`.
fn walk(dir: &Path, prefix: &str, found: &mut Vec<(String, Option<u64>)>) -> Result<()> {
    let unreadable = |source| Error::Unreadable {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = match prefix {
            "" => name,
            prefix => format!("{prefix}/{name}"),
        };
        let kind = entry.file_type().map_err(unreadable)?;
        if kind.is_dir() {
            walk(&entry.path(), &relative, found)?;
        } else {
            let size = entry.metadata().ok().map(|meta| meta.len());
            found.push((relative, size));
        }
    }
    Ok(())
}

//! The storage root a path names: its `chk-<id>` directories and their metadata, read
//! without creating anything.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use state_api::Error as StateError;
use state_api::checkpoint_metadata::{CheckpointMetadata, METADATA_FILE};

use super::IncompleteCheckpoint;
use crate::{Error, Result};

/// Prefix of a checkpoint's directory name: `chk-<id>`.
const CHECKPOINT_DIR_PREFIX: &str = "chk-";

/// A storage root, and the checkpoint a `chk-<id>` path selected.
pub(super) struct Storage {
    pub(super) root: PathBuf,
    pub(super) selected: Option<u64>,
    /// Every `chk-<id>` directory, ascending by id, with whether it is committed.
    directories: Vec<(u64, bool)>,
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
    pub(super) fn open(dir: &Path) -> Result<Self> {
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
        })
    }

    pub(super) fn checkpoint_dir(&self, checkpoint_id: u64) -> PathBuf {
        self.root
            .join(format!("{CHECKPOINT_DIR_PREFIX}{checkpoint_id}"))
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
                checkpoint_id: *id,
                directory: self.checkpoint_dir(*id),
            })
    }

    /// The checkpoint `requested` (or the one the path selected) must be committed.
    pub(super) fn require(&self, requested: Option<u64>) -> Result<Option<u64>> {
        let id = match (self.selected, requested) {
            (Some(directory_id), Some(requested)) if directory_id != requested => {
                return Err(Error::ConflictingCheckpoint {
                    path: self.checkpoint_dir(directory_id),
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
                    checkpoint_id: id,
                    committed: match committed.is_empty() {
                        true => "none".to_owned(),
                        false => committed.join(", "),
                    },
                })
            }
            id => Ok(id),
        }
    }

    /// Reads committed checkpoint `checkpoint_id`'s metadata, as
    /// `LocalCheckpointStorage::load_checkpoint` does, without creating anything.
    pub(super) fn load(&self, checkpoint_id: u64) -> Result<CheckpointMetadata, StateError> {
        let path = self.checkpoint_dir(checkpoint_id).join(METADATA_FILE);
        let bytes = fs::read(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => StateError::NotFound {
                what: format!("checkpoint {checkpoint_id} ({})", path.display()),
            },
            _ => StateError::io(&path, err),
        })?;
        CheckpointMetadata::from_bytes(&bytes).map_err(|source| StateError::Snapshot {
            location: path.display().to_string(),
            source: Box::new(source),
        })
    }
}

//! Listing and deleting the files of a [`LocalCheckpointStorage`], for the clean-up after
//! crashes (`CheckpointStorage::list_files`).

use std::fs;
use std::io;
use std::path::Path;

use state_api::{Error, Result, StoredFile};

use crate::local_storage::{LOCK_FILE, LocalCheckpointStorage};

impl LocalCheckpointStorage {
    /// Every file under the root but the lock file, by path relative to the root, sorted;
    /// an empty directory is listed too, its path ending in `/`. Symbolic links are listed
    /// as files and never followed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the directory that cannot be read.
    pub fn list_files(&self) -> Result<Vec<StoredFile>> {
        let mut files = Vec::new();
        list_dir(self.root(), "", &mut files)?;
        files.retain(|file| file.path != LOCK_FILE);
        files.sort();
        Ok(files)
    }

    /// Deletes the file (or the empty directory, its path ending in `/`) at `path`, as
    /// [`list_files`](Self::list_files) names it, never following a symbolic link; a
    /// checkpoint directory emptied by it goes too. A missing file is no error.
    ///
    /// # Errors
    ///
    /// [`Error::OutsideStorage`] for a path that leaves the root; [`Error::Io`] naming
    /// what cannot be deleted.
    pub fn delete_file(&self, path: &str) -> Result<()> {
        let (relative, is_dir) = match path.strip_suffix('/') {
            Some(dir) => (dir, true),
            None => (path, false),
        };
        let entry = match self.local_root().locate(relative) {
            Ok(entry) => entry,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let removed = match is_dir {
            true => fs::remove_dir(&entry),
            false => fs::remove_file(&entry),
        };
        match removed {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io(&entry, err));
            }
            _ => {}
        }
        // A checkpoint directory (`chk-<id>`, at the root) is removed with its last file;
        // `remove_dir` refuses a directory that is not empty.
        if let Some((dir, _)) = relative.split_once('/')
            && dir.starts_with("chk-")
            && !relative[dir.len() + 1..].contains('/')
        {
            let _ = fs::remove_dir(self.root().join(dir));
        }
        Ok(())
    }
}

/// Adds the files under `dir` (named `prefix` relative to the root) to `files`.
fn list_dir(dir: &Path, prefix: &str, files: &mut Vec<StoredFile>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|err| Error::io(dir, err))?;
    let mut empty = true;
    for entry in entries {
        let entry = entry.map_err(|err| Error::io(dir, err))?;
        empty = false;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}{name}");
        let meta = match fs::symlink_metadata(entry.path()) {
            Ok(meta) => meta,
            // Deleted since the directory was read.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::io(entry.path(), err)),
        };
        if meta.is_dir() {
            list_dir(&entry.path(), &format!("{path}/"), files)?;
        } else {
            files.push(StoredFile {
                path,
                size: meta.len(),
            });
        }
    }
    if empty && !prefix.is_empty() {
        files.push(StoredFile {
            path: prefix.to_owned(),
            size: 0,
        });
    }
    Ok(())
}

//! Helpers the kits share: scratch directories, checkpoint storage, file listings.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use state_api::LocalCheckpointStorage;
use tempfile::TempDir;

/// A fresh temporary directory named after `prefix`; panics naming `label` if it cannot be
/// created.
pub(crate) fn temp_dir(prefix: &str, label: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|err| panic!("{label}: cannot create a temporary directory: {err}"))
}

/// Checkpoint storage rooted at `root`; `file_state_threshold` 0 writes every stream to a
/// file, `None` keeps the default.
pub(crate) fn storage(
    label: &str,
    root: PathBuf,
    file_state_threshold: Option<usize>,
) -> LocalCheckpointStorage {
    let storage = LocalCheckpointStorage::new(root)
        .unwrap_or_else(|err| panic!("{label}: creating checkpoint storage: {err}"));
    match file_state_threshold {
        Some(bytes) => storage.with_file_state_threshold(bytes),
        None => storage,
    }
}

/// Files (not directories) anywhere under `dir`, relative to it, sorted; none if `dir`
/// does not exist.
pub(crate) fn files_under(label: &str, dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    match walk(dir, dir, &mut files) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => panic!("{label}: listing {}: {err}", dir.display()),
    }
    files.sort();
    files
}

/// Panics naming `label` and `case` if any file is left under `dir`.
#[track_caller]
pub(crate) fn assert_no_files(label: &str, dir: &Path, case: &str) {
    let files = files_under(label, dir);
    assert!(
        files.is_empty(),
        "{label}: {case}: files left in {}: {files:?}",
        dir.display()
    );
}

//! Which checkpoint storage the keyed and operator kits snapshot into.
//!
//! By default every contract snapshots into a fresh [`LocalCheckpointStorage`] in its
//! temporary directory. A storage implementation runs the same contracts on itself by
//! implementing [`StorageUnderTest`] and [`StorageProvider`] and calling the contracts
//! inside [`with_storage`]:
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use snapstate_tests::keyed::KeyedTarget;
//! use snapstate_tests::storage::{
//!     with_storage, LocalStorageProvider, StorageProvider, StorageUnderTest,
//! };
//!
//! /// Stands for a storage of your own: local directories one level deeper.
//! #[derive(Debug)]
//! struct Nested;
//!
//! impl StorageProvider for Nested {
//!     fn open(&self, root: &Path, file_state_threshold: Option<usize>)
//!         -> state_api::Result<Arc<dyn StorageUnderTest>> {
//!         LocalStorageProvider.open(&root.join("nested"), file_state_threshold)
//!     }
//! }
//!
//! state_heap::link();
//! let target = KeyedTarget::new(state_api::Registry::global(), "heap");
//! with_storage(Arc::new(Nested), || {
//!     snapstate_tests::keyed::round_trip(&target);
//! });
//! ```
//!
//! Contracts that damage snapshot files on disk (truncation, corruption) need
//! [`StorageUnderTest::local_root`] and print a skip line on other storage.

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::{CheckpointStorage, Error, Result};
use state_storage_local::LocalCheckpointStorage;

/// A storage the kits can also look into: what is stored, and where on disk.
pub trait StorageUnderTest: CheckpointStorage {
    /// Everything stored (files, objects, incomplete uploads), as names relative to the
    /// storage root, sorted; with `Some(id)` only what lies under checkpoint `id`'s
    /// exclusive location. The kits assert on it that failed, cancelled and discarded
    /// snapshots leave nothing behind.
    fn stored(&self, checkpoint_id: Option<u64>) -> Result<Vec<String>>;

    /// The local directory the storage keeps its files in, if it is one.
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// Makes the storage of one contract.
pub trait StorageProvider: Send + Sync + fmt::Debug {
    /// A fresh, empty storage. `root` is a fresh path in the contract's temporary
    /// directory: local storage lives there, other storage names a fresh location after
    /// it. `file_state_threshold`: `Some(0)` stores every non-empty stream as a file or
    /// object, `None` keeps the storage's default.
    fn open(
        &self,
        root: &Path,
        file_state_threshold: Option<usize>,
    ) -> Result<Arc<dyn StorageUnderTest>>;
}

/// Files (not directories) anywhere under `dir`, relative to `root`, sorted; none if `dir`
/// does not exist.
pub(crate) fn files_under(root: &Path, dir: &Path) -> io::Result<Vec<PathBuf>> {
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
    match walk(root, dir, &mut files) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    files.sort();
    Ok(files)
}

impl StorageUnderTest for LocalCheckpointStorage {
    fn stored(&self, checkpoint_id: Option<u64>) -> Result<Vec<String>> {
        let dir = match checkpoint_id {
            Some(id) => self.checkpoint_dir(CheckpointId::new(id)),
            None => self.root().to_path_buf(),
        };
        let files = files_under(self.root(), &dir).map_err(|err| Error::io(&dir, err))?;
        Ok(files
            .iter()
            .map(|file| file.display().to_string())
            .collect())
    }

    fn local_root(&self) -> Option<&Path> {
        Some(self.root())
    }
}

/// The default provider: a [`LocalCheckpointStorage`] at `root`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorageProvider;

impl StorageProvider for LocalStorageProvider {
    fn open(
        &self,
        root: &Path,
        file_state_threshold: Option<usize>,
    ) -> Result<Arc<dyn StorageUnderTest>> {
        let storage = LocalCheckpointStorage::new(PathBuf::from(root))?;
        Ok(Arc::new(match file_state_threshold {
            Some(bytes) => storage.with_file_state_threshold(bytes),
            None => storage,
        }))
    }
}

thread_local! {
    static PROVIDER: RefCell<Option<Arc<dyn StorageProvider>>> = const { RefCell::new(None) };
}

/// Runs `contracts` with every storage the kits open on this thread coming from
/// `provider`; the previous provider is back afterwards, also when `contracts` panics.
pub fn with_storage<R>(provider: Arc<dyn StorageProvider>, contracts: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn StorageProvider>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            PROVIDER.with(|current| *current.borrow_mut() = previous);
        }
    }
    let previous = PROVIDER.with(|current| current.borrow_mut().replace(provider));
    let _restore = Restore(previous);
    contracts()
}

/// The provider in force on this thread.
pub(crate) fn provider() -> Arc<dyn StorageProvider> {
    PROVIDER
        .with(|current| current.borrow().clone())
        .unwrap_or_else(|| Arc::new(LocalStorageProvider))
}

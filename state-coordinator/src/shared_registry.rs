//! [`SharedStateRegistry`]: who owns the shared files of incremental checkpoints.
//!
//! An incremental checkpoint uploads only files the last completed checkpoint did not have
//! and refers to the others by [`PlaceholderStreamStateHandle`]. A shared file therefore
//! belongs to every retained checkpoint that refers to it, and to none of them alone. The
//! registry, kept by whoever retains checkpoints (the coordinator), counts those references:
//!
//! - [`register`](SharedStateRegistry::register) takes a completed checkpoint's handle,
//!   adopts its new shared files, adds a reference from the checkpoint to every shared file
//!   it names (placeholders included), and returns the handle to retain, whose shared files
//!   are all placeholders: discarding it later never deletes a shared file.
//! - [`resolve`](SharedStateRegistry::resolve) turns a retained handle back into one with
//!   real, readable shared handles for restore.
//! - [`release`](SharedStateRegistry::release) drops a checkpoint's references when it is
//!   no longer retained (subsumed or discarded) and deletes each shared file no retained
//!   checkpoint refers to any more: never earlier, and never later.
//!
//! Keys are [`IncrementalRemoteKeyedStateHandle::shared_key`]: the key the writer recorded
//! with the file (by default the backend instance's identifier and the file's local name).
//! The registry trusts a key to name one immutable content: writers make keys unique per
//! backend instance, so two incarnations restored from the same checkpoint never register
//! different bytes under one key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use state_api::{
    CheckpointId, CheckpointMetadata, Error, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle,
    KeyedStateHandle, PlaceholderStreamStateHandle, Result, StreamStateHandle,
};

struct Entry {
    handle: Arc<dyn StreamStateHandle>,
    references: BTreeSet<CheckpointId>,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<String, Entry>,
    /// Shared keys each registered checkpoint refers to (from all its instances).
    checkpoints: BTreeMap<CheckpointId, Vec<String>>,
    /// (checkpoint, backend instance) pairs registered.
    registered: BTreeSet<(CheckpointId, String)>,
}

/// Reference counts of the shared files of retained incremental checkpoints.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use state_api::{
///     ByteStreamStateHandle, CheckpointId, HandleAndLocalPath, IncrementalRemoteKeyedStateHandle,
///     KeyGroupRange, PlaceholderStreamStateHandle,
/// };
/// use state_coordinator::SharedStateRegistry;
///
/// let snapshot = |id: u64, shared: Vec<HandleAndLocalPath>| IncrementalRemoteKeyedStateHandle {
///     backend_identifier: "backend-1".into(),
///     key_group_range: KeyGroupRange::new(0, 127).unwrap(),
///     checkpoint_id: CheckpointId::new(id),
///     strategy: Some("rocksdb-incremental".into()),
///     shared_state: shared,
///     private_state: vec![],
///     meta_state: Arc::new(ByteStreamStateHandle::new("meta", vec![])),
/// };
/// let registry = SharedStateRegistry::default();
/// let sst = Arc::new(ByteStreamStateHandle::new("000007.sst", vec![1, 2, 3]));
/// registry.register(&snapshot(1, vec![HandleAndLocalPath::new(sst, "000007.sst")]))?;
/// // Checkpoint 2 refers to the same file by placeholder.
/// let placeholder = PlaceholderStreamStateHandle::new("backend-1/000007.sst", 3);
/// registry.register(&snapshot(2, vec![HandleAndLocalPath::new(Arc::new(placeholder), "000007.sst")]))?;
/// assert_eq!(registry.release(CheckpointId::new(1))?, 0, "checkpoint 2 still needs the file");
/// assert_eq!(registry.release(CheckpointId::new(2))?, 1, "now nobody does");
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Default)]
pub struct SharedStateRegistry {
    inner: Mutex<Inner>,
}

impl fmt::Debug for SharedStateRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("SharedStateRegistry")
            .field("files", &inner.entries.len())
            .field("checkpoints", &inner.checkpoints.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SharedStateRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below is made in full before the lock is released.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the completed checkpoint `handle` and returns the handle to retain, whose
    /// shared files are all placeholders.
    ///
    /// A new shared file under a key that is already registered (the same immutable file
    /// uploaded again) is discarded in favour of the registered one, but only when this
    /// process wrote it in this run
    /// ([`StreamStateHandle::written_by_this_process`]): a handle read back from storage
    /// never makes the registry delete anything.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a placeholder whose key is not registered (its file was
    /// released, or never uploaded): nothing is registered then. [`Error::InvalidArgument`]
    /// for a checkpoint registered twice.
    pub fn register(
        &self,
        handle: &IncrementalRemoteKeyedStateHandle,
    ) -> Result<IncrementalRemoteKeyedStateHandle> {
        let mut inner = self.lock();
        let checkpoint_id = handle.checkpoint_id;
        let owner = format!("{}/{checkpoint_id}", handle.backend_identifier);
        if inner
            .registered
            .contains(&(checkpoint_id, handle.backend_identifier.clone()))
        {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {owner} is registered already"
            )));
        }
        // Check every placeholder first, so a failure registers nothing.
        for file in &handle.shared_state {
            if let Some(placeholder) = placeholder(&file.handle)
                && !inner.entries.contains_key(placeholder.key())
            {
                return Err(Error::NotFound {
                    what: format!(
                        "shared file `{}` that checkpoint {owner} refers to (it was released or never uploaded)",
                        placeholder.key()
                    ),
                });
            }
        }
        let mut retained = handle.clone();
        retained.shared_state.clear();
        let mut duplicates = Vec::new();
        for file in &handle.shared_state {
            let key = handle.shared_key(file);
            let entry = inner.entries.entry(key.clone()).or_insert_with(|| Entry {
                handle: file.handle.clone(),
                references: BTreeSet::new(),
            });
            if placeholder(&file.handle).is_none()
                && entry.handle.describe() != file.handle.describe()
            {
                // Only an upload this process has just made is its own to delete; a file
                // named by handles read back from storage is never deleted here.
                match file.handle.written_by_this_process() {
                    true => duplicates.push(file.handle.clone()),
                    false => tracing::debug!(
                        key = %key,
                        file = %file.handle.describe(),
                        "a second file under a registered shared key is kept: this process did not write it"
                    ),
                }
            }
            entry.references.insert(checkpoint_id);
            let size = entry.handle.state_size();
            inner
                .checkpoints
                .entry(checkpoint_id)
                .or_default()
                .push(key.clone());
            retained.shared_state.push(HandleAndLocalPath::shared(
                Arc::new(PlaceholderStreamStateHandle::new(key.clone(), size)),
                file.local_path.clone(),
                key,
            ));
        }
        inner.checkpoints.entry(checkpoint_id).or_default();
        inner
            .registered
            .insert((checkpoint_id, handle.backend_identifier.clone()));
        drop(inner);
        for duplicate in duplicates {
            if let Err(err) = duplicate.discard() {
                tracing::warn!(error = %err, file = %duplicate.describe(), "discarding a duplicate shared file failed");
            }
        }
        Ok(retained)
    }

    /// Registers every incremental handle of the restored checkpoint `metadata`, so later
    /// checkpoints may refer to its shared files by placeholder (Flink's
    /// `registerAllAfterRestored`), and returns the checkpoint's keyed handles to retain
    /// (incremental ones with placeholders, as [`register`](Self::register) returns them).
    /// The whole checkpoint is [validated](CheckpointMetadata::validate) and every
    /// placeholder checked before anything is registered, and nothing is deleted while
    /// registering: handles read back from storage are not this process's uploads.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] from validation; [`Error::NotFound`] for a placeholder neither
    /// registered nor named by the checkpoint; [`Error::InvalidArgument`] for a checkpoint
    /// registered already. Nothing is registered then.
    pub fn register_restored(
        &self,
        metadata: &CheckpointMetadata,
    ) -> Result<Vec<Arc<dyn KeyedStateHandle>>> {
        metadata.validate()?;
        let handles: Vec<Arc<dyn KeyedStateHandle>> = metadata.keyed_handles();
        let incremental: Vec<&IncrementalRemoteKeyedStateHandle> = handles
            .iter()
            .filter_map(|handle| handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>())
            .collect();
        {
            let inner = self.lock();
            let provided: BTreeSet<String> = incremental
                .iter()
                .flat_map(|handle| {
                    handle
                        .shared_state
                        .iter()
                        .filter(|file| placeholder(&file.handle).is_none())
                        .map(|file| handle.shared_key(file))
                })
                .collect();
            for handle in &incremental {
                let owner = (handle.checkpoint_id, handle.backend_identifier.clone());
                if inner.registered.contains(&owner) {
                    return Err(Error::InvalidArgument(format!(
                        "checkpoint {}/{} is registered already",
                        owner.1, owner.0
                    )));
                }
                for file in &handle.shared_state {
                    if let Some(placeholder) = placeholder(&file.handle)
                        && !inner.entries.contains_key(placeholder.key())
                        && !provided.contains(placeholder.key())
                    {
                        return Err(Error::NotFound {
                            what: format!(
                                "shared file `{}` that restored checkpoint {} refers to",
                                placeholder.key(),
                                metadata.checkpoint_id
                            ),
                        });
                    }
                }
            }
        }
        // Real files first, so placeholders among the handles resolve in any order.
        let mut ordered: Vec<usize> = (0..handles.len()).collect();
        ordered.sort_by_key(|&index| {
            handles[index]
                .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
                .is_some_and(|handle| {
                    (handle.shared_state.iter()).any(|file| placeholder(&file.handle).is_some())
                })
        });
        let mut retained = handles.clone();
        for index in ordered {
            if let Some(handle) = handles[index].downcast_ref::<IncrementalRemoteKeyedStateHandle>()
            {
                retained[index] = Arc::new(self.register(handle)?);
            }
        }
        Ok(retained)
    }

    /// `handle` with every placeholder replaced by the registered shared file, for restore.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming the key of a placeholder that is not registered.
    pub fn resolve(
        &self,
        handle: &IncrementalRemoteKeyedStateHandle,
    ) -> Result<IncrementalRemoteKeyedStateHandle> {
        let inner = self.lock();
        let mut resolved = handle.clone();
        for file in &mut resolved.shared_state {
            if let Some(placeholder) = placeholder(&file.handle) {
                let entry =
                    inner
                        .entries
                        .get(placeholder.key())
                        .ok_or_else(|| Error::NotFound {
                            what: format!(
                                "shared file `{}` of checkpoint {} (it was released)",
                                placeholder.key(),
                                handle.checkpoint_id
                            ),
                        })?;
                file.shared_key = Some(placeholder.key().to_owned());
                file.handle = entry.handle.clone();
            }
        }
        Ok(resolved)
    }

    /// Drops every reference of checkpoint `checkpoint_id` and deletes the shared files no
    /// registered checkpoint refers to any more; returns how many were deleted.
    ///
    /// Releasing a checkpoint that is not registered does nothing.
    ///
    /// # Errors
    ///
    /// The first error of deleting a file; the others are still deleted and every file is
    /// unregistered.
    pub fn release(&self, checkpoint_id: CheckpointId) -> Result<usize> {
        let unreferenced: Vec<Arc<dyn StreamStateHandle>> = {
            let mut inner = self.lock();
            let keys = inner.checkpoints.remove(&checkpoint_id).unwrap_or_default();
            inner.registered.retain(|(id, _)| *id != checkpoint_id);
            let mut unreferenced = Vec::new();
            for key in keys {
                let Some(entry) = inner.entries.get_mut(&key) else {
                    continue;
                };
                entry.references.remove(&checkpoint_id);
                if entry.references.is_empty()
                    && let Some(entry) = inner.entries.remove(&key)
                {
                    unreferenced.push(entry.handle);
                }
            }
            unreferenced
        };
        let mut first_error = None;
        for handle in &unreferenced {
            if let Err(err) = handle.discard() {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(unreferenced.len()), Err)
    }

    /// The keys of the registered shared files.
    pub fn keys(&self) -> Vec<String> {
        self.lock().entries.keys().cloned().collect()
    }

    /// The checkpoints that hold references, in id order.
    pub fn checkpoints(&self) -> Vec<CheckpointId> {
        self.lock().checkpoints.keys().copied().collect()
    }
}

fn placeholder(handle: &Arc<dyn StreamStateHandle>) -> Option<&PlaceholderStreamStateHandle> {
    handle.downcast_ref::<PlaceholderStreamStateHandle>()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    use state_api::{ByteStreamStateHandle, KeyGroupRange};
    use state_storage_local::FileStateHandle;

    const BACKEND: &str = "backend-a";

    fn file(dir: &Path, name: &str) -> HandleAndLocalPath {
        let path = dir.join(name);
        std::fs::write(&path, name.as_bytes()).unwrap();
        HandleAndLocalPath::new(
            Arc::new(FileStateHandle::local(path, name.len() as u64).written_by_this_process()),
            name,
        )
    }

    fn placeholder_for(name: &str) -> HandleAndLocalPath {
        HandleAndLocalPath::new(
            Arc::new(PlaceholderStreamStateHandle::new(
                format!("{BACKEND}/{name}"),
                0,
            )),
            name,
        )
    }

    fn snapshot(
        checkpoint_id: CheckpointId,
        shared: Vec<HandleAndLocalPath>,
    ) -> IncrementalRemoteKeyedStateHandle {
        IncrementalRemoteKeyedStateHandle {
            strategy: None,
            backend_identifier: BACKEND.into(),
            key_group_range: KeyGroupRange::new(0, 9).unwrap(),
            checkpoint_id,
            shared_state: shared,
            private_state: vec![],
            meta_state: Arc::new(ByteStreamStateHandle::new("meta", vec![])),
        }
    }

    fn exists(dir: &Path, name: &str) -> bool {
        dir.join(name).exists()
    }

    #[test]
    fn a_file_goes_when_the_last_checkpoint_referring_to_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let registry = SharedStateRegistry::default();
        registry
            .register(&snapshot(
                CheckpointId::new(1),
                vec![file(dir, "a.sst"), file(dir, "b.sst")],
            ))
            .unwrap();
        registry
            .register(&snapshot(
                CheckpointId::new(2),
                vec![placeholder_for("a.sst"), file(dir, "c.sst")],
            ))
            .unwrap();
        registry
            .register(&snapshot(
                CheckpointId::new(3),
                vec![placeholder_for("c.sst")],
            ))
            .unwrap();

        assert_eq!(registry.release(CheckpointId::new(1)).unwrap(), 1);
        assert!(!exists(dir, "b.sst"), "b.sst is only in checkpoint 1");
        assert!(exists(dir, "a.sst"), "checkpoint 2 still refers to a.sst");
        assert_eq!(registry.release(CheckpointId::new(2)).unwrap(), 1);
        assert!(!exists(dir, "a.sst"));
        assert!(exists(dir, "c.sst"), "checkpoint 3 still refers to c.sst");
        assert_eq!(registry.release(CheckpointId::new(3)).unwrap(), 1);
        assert!(registry.keys().is_empty(), "{:?}", registry.keys());
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            0,
            "no orphan is left"
        );
        assert_eq!(
            registry.release(CheckpointId::new(3)).unwrap(),
            0,
            "releasing twice does nothing"
        );
    }

    #[test]
    fn the_retained_handle_holds_placeholders_only_and_resolves_back() {
        let dir = tempfile::tempdir().unwrap();
        let registry = SharedStateRegistry::default();
        let original = snapshot(CheckpointId::new(1), vec![file(dir.path(), "a.sst")]);
        let retained = registry.register(&original).unwrap();
        assert!(
            retained
                .shared_state
                .iter()
                .all(|f| placeholder(&f.handle).is_some())
        );
        // Discarding the retained handle leaves the shared file to the registry.
        state_api::StateObject::discard(&retained).unwrap();
        assert!(exists(dir.path(), "a.sst"));
        let resolved = registry.resolve(&retained).unwrap();
        assert_eq!(
            resolved.shared_state[0].handle.describe(),
            original.shared_state[0].handle.describe()
        );
        registry.release(CheckpointId::new(1)).unwrap();
        let err = registry.resolve(&retained).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
    }

    #[test]
    fn a_placeholder_of_an_unknown_file_registers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let registry = SharedStateRegistry::default();
        let err = registry
            .register(&snapshot(
                CheckpointId::new(1),
                vec![file(dir.path(), "b.sst"), placeholder_for("gone.sst")],
            ))
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("backend-a/gone.sst"), "{err}");
        assert!(registry.keys().is_empty());
        assert!(registry.checkpoints().is_empty());
    }

    #[test]
    fn an_unregistered_snapshot_discards_its_own_uploads_but_not_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let registry = SharedStateRegistry::default();
        registry
            .register(&snapshot(
                CheckpointId::new(1),
                vec![file(dir.path(), "a.sst")],
            ))
            .unwrap();
        let declined = snapshot(
            CheckpointId::new(2),
            vec![placeholder_for("a.sst"), file(dir.path(), "b.sst")],
        );
        state_api::StateObject::discard(&declined).unwrap();
        assert!(!exists(dir.path(), "b.sst"));
        assert!(exists(dir.path(), "a.sst"));
    }

    #[test]
    fn a_second_upload_of_a_registered_file_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let registry = SharedStateRegistry::default();
        registry
            .register(&snapshot(
                CheckpointId::new(1),
                vec![file(dir.path(), "a.sst")],
            ))
            .unwrap();
        let again = file(dir.path(), "a-again.sst");
        let mut second = snapshot(CheckpointId::new(2), vec![]);
        second
            .shared_state
            .push(HandleAndLocalPath::new(again.handle, "a.sst"));
        registry.register(&second).unwrap();
        assert!(!exists(dir.path(), "a-again.sst"));
        assert_eq!(registry.release(CheckpointId::new(1)).unwrap(), 0);
        assert_eq!(registry.release(CheckpointId::new(2)).unwrap(), 1);
        assert!(!exists(dir.path(), "a.sst"));
    }

    #[test]
    fn registering_a_checkpoint_twice_is_refused() {
        let registry = SharedStateRegistry::default();
        registry
            .register(&snapshot(CheckpointId::new(1), vec![]))
            .unwrap();
        let err = registry
            .register(&snapshot(CheckpointId::new(1), vec![]))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn a_second_file_this_process_did_not_write_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let registry = SharedStateRegistry::default();
        registry
            .register(&snapshot(
                CheckpointId::new(1),
                vec![file(dir.path(), "a.sst")],
            ))
            .unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // As a handle read back from crafted metadata would name it.
        let mut second = snapshot(CheckpointId::new(2), vec![]);
        second.shared_state.push(HandleAndLocalPath::new(
            Arc::new(FileStateHandle::local(&victim, 8)),
            "a.sst",
        ));
        registry.register(&second).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_restored_checkpoint_is_validated_whole_and_deletes_nothing() {
        use state_api::{CheckpointType, InstanceSnapshot};
        let dir = tempfile::tempdir().unwrap();
        let registry = SharedStateRegistry::default();
        let mut metadata = CheckpointMetadata::new(
            CheckpointId::new(4),
            0,
            CheckpointType::Checkpoint,
            state_api::MaxParallelism::of(128),
        );
        let mut first = snapshot(CheckpointId::new(4), vec![file(dir.path(), "a.sst")]);
        first.backend_identifier = "backend-b".into();
        first.key_group_range = KeyGroupRange::new(10, 19).unwrap();
        // The second instance refers to the first one's file by placeholder.
        let mut second = snapshot(CheckpointId::new(4), vec![placeholder_for("x.sst")]);
        second.shared_state[0].handle =
            Arc::new(PlaceholderStreamStateHandle::new("backend-b/a.sst", 5));
        for (index, handle) in [(0, second), (1, first)] {
            metadata.instances.push(InstanceSnapshot {
                index,
                keyed: vec![Arc::new(handle)],
                operator: vec![],
            });
        }
        registry.register_restored(&metadata).unwrap();
        assert_eq!(registry.keys(), ["backend-b/a.sst"]);
        let err = registry.register_restored(&metadata).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

        let fresh = SharedStateRegistry::default();
        let mut gone = metadata.clone();
        gone.instances.truncate(1);
        let err = fresh.register_restored(&gone).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(fresh.keys().is_empty(), "nothing registered");
        assert!(exists(dir.path(), "a.sst"));
    }
}

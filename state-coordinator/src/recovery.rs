//! Recovery after a crash: the committed checkpoints are the truth, and whatever else a
//! killed process left in the checkpoint storage (files of checkpoints that never
//! completed, shared files no committed checkpoint refers to, `.inprogress-*` files) is
//! garbage, removed by [`collect_garbage`] and by [`CheckpointCoordinator::recover`].
//!
//! A file's checkpoint is read from its name (see [`CheckpointStorage`]'s layout):
//! `chk-<id>/…` and `shared/chk-<id>-…` (also behind `.inprogress-`). That is what lets a
//! clean-up run while a job writes: with [`Writers::Possible`] only files of checkpoints up
//! to the latest committed one go, never those of a newer checkpoint still in progress.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use state_api::{
    CheckpointId, CheckpointMetadata, CheckpointStorage, Error, IncrementalRemoteKeyedStateHandle,
    PlaceholderStreamStateHandle, Result, StoredFile, StreamStateHandle,
    checkpoint_metadata::METADATA_FILE,
};

use crate::{CheckpointCoordinator, CoordinatorConfig};

/// Who may be writing into a checkpoint storage while it is cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// Nobody else: the cleaning process holds the storage's enforced claim
    /// ([`StorageClaim::is_enforced`](state_api::StorageClaim::is_enforced)), or the
    /// deployment guarantees that no other process of the job runs. Every file no committed
    /// checkpoint refers to goes.
    Exclusive,
    /// A job may be writing (object storage cannot lock writers out): only files of
    /// checkpoints up to the latest committed one go. Files of newer checkpoints, and
    /// shared files whose name carries no checkpoint, are kept.
    Possible,
}

/// What a clean-up found and, unless it was a dry run, deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Garbage {
    /// The committed checkpoints, ascending: everything they refer to is kept.
    pub committed: Vec<CheckpointId>,
    /// The files no committed checkpoint refers to (deleted unless a dry run).
    pub files: Vec<StoredFile>,
    /// Files no committed checkpoint refers to that were kept because a writer may still
    /// be writing them ([`Writers::Possible`]).
    pub kept: Vec<StoredFile>,
}

impl Garbage {
    /// The bytes of [`files`](Self::files).
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|file| file.size).sum()
    }
}

/// Finds the garbage in `storage` without deleting anything: every committed checkpoint's
/// metadata is read, and every listed file it does not refer to is garbage when
/// `writers` allows.
///
/// # Errors
///
/// Errors listing the storage or loading a committed checkpoint (a damaged one names its
/// file); [`Error::Unsupported`] for a checkpoint holding a keyed handle that cannot list
/// its streams, and [`Error::NotFound`] for one referring to a shared file by a key no
/// committed checkpoint holds. Nothing is garbage then: a clean-up that cannot tell what
/// is in use deletes nothing.
pub fn find_garbage(storage: &dyn CheckpointStorage, writers: Writers) -> Result<Garbage> {
    let committed = load_committed(storage)?;
    // Listed after the metadata was read: a checkpoint committed in between has its files
    // listed but not its metadata read, so they are newer than the latest read (kept).
    let files = storage.list_files()?;
    find_in(&committed, files, writers)
}

/// [`find_garbage`] and then deletes each file found.
///
/// # Errors
///
/// As [`find_garbage`]; the first error deleting a file (the others are still deleted).
pub fn collect_garbage(storage: &dyn CheckpointStorage, writers: Writers) -> Result<Garbage> {
    let garbage = find_garbage(storage, writers)?;
    delete(storage, &garbage)?;
    Ok(garbage)
}

fn load_committed(storage: &dyn CheckpointStorage) -> Result<Vec<CheckpointMetadata>> {
    let ids = storage.completed_checkpoints()?;
    ids.into_iter()
        .map(|id| storage.load_checkpoint(id))
        .collect()
}

fn delete(storage: &dyn CheckpointStorage, garbage: &Garbage) -> Result<()> {
    let mut outcome = Ok(());
    for file in &garbage.files {
        outcome = outcome.and(storage.delete_file(&file.path));
    }
    if !garbage.files.is_empty() {
        tracing::info!(
            files = garbage.files.len(),
            bytes = garbage.bytes(),
            kept = garbage.kept.len(),
            "removed files no committed checkpoint refers to"
        );
    }
    outcome
}

fn find_in(
    committed: &[CheckpointMetadata],
    files: Vec<StoredFile>,
    writers: Writers,
) -> Result<Garbage> {
    let referenced = referenced_paths(committed)?;
    let latest = committed.last().map(|metadata| metadata.checkpoint_id);
    let mut garbage = Garbage {
        committed: committed.iter().map(|m| m.checkpoint_id).collect(),
        ..Garbage::default()
    };
    for file in files {
        let Some(owner) = owner_of(&file.path) else {
            // Not a checkpoint's file: not this layout's to delete.
            continue;
        };
        if referenced.contains(file.path.as_str()) {
            continue;
        }
        let collectable = match writers {
            Writers::Exclusive => true,
            Writers::Possible => owner.zip(latest).is_some_and(|(id, latest)| id <= latest),
        };
        match collectable {
            true => garbage.files.push(file),
            false => garbage.kept.push(file),
        }
    }
    Ok(garbage)
}

/// The checkpoint a file of the storage layout belongs to: `Some(Some(id))` for
/// `chk-<id>/…` and `shared/chk-<id>-…`, `Some(None)` for a shared file whose name
/// carries no checkpoint, `None` for a file outside the layout.
fn owner_of(path: &str) -> Option<Option<CheckpointId>> {
    let parse = |digits: &str| digits.parse::<u64>().ok().map(CheckpointId::new);
    if let Some(rest) = path.strip_prefix("chk-") {
        let (digits, _) = rest.split_once('/')?;
        return Some(Some(parse(digits)?));
    }
    let name = path
        .strip_prefix("shared/")
        .filter(|name| !name.is_empty())?;
    let name = name.strip_prefix(".inprogress-").unwrap_or(name);
    let id = name
        .strip_prefix("chk-")
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(digits, _)| parse(digits));
    Some(id)
}

/// Every stored path the committed checkpoints refer to, their metadata included.
fn referenced_paths(committed: &[CheckpointMetadata]) -> Result<BTreeSet<String>> {
    let mut paths = BTreeSet::new();
    // Shared files by registry key, to resolve placeholders of metadata that kept them.
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    let mut placeholders = Vec::new();
    for metadata in committed {
        let id = metadata.checkpoint_id;
        paths.insert(format!("chk-{id}/{METADATA_FILE}"));
        let mut streams: Vec<&Arc<dyn StreamStateHandle>> = Vec::new();
        for instance in &metadata.instances {
            for handle in &instance.keyed {
                let Some(handle_streams) = handle.streams() else {
                    return Err(Error::Unsupported(format!(
                        "checkpoint {id} holds a keyed handle ({handle:?}) that cannot list \
                         the files it reads, so no clean-up can tell which files are in use"
                    )));
                };
                streams.extend(handle_streams);
                let Some(incremental) = handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>()
                else {
                    continue;
                };
                for file in &incremental.shared_state {
                    let key = incremental.shared_key(file);
                    match file.handle.stored_path() {
                        Some(path) => {
                            by_key.insert(key, path.to_owned());
                        }
                        None if file.handle.is::<PlaceholderStreamStateHandle>() => {
                            placeholders.push((id, key));
                        }
                        None => {}
                    }
                }
            }
            streams.extend(instance.operator.iter().map(|handle| handle.delegate()));
        }
        paths.extend(
            streams
                .into_iter()
                .filter_map(|stream| stream.stored_path().map(str::to_owned)),
        );
    }
    for (id, key) in placeholders {
        let path = by_key.get(&key).ok_or_else(|| Error::NotFound {
            what: format!(
                "shared file `{key}` that checkpoint {id} refers to (no committed checkpoint holds it)"
            ),
        })?;
        paths.insert(path.clone());
    }
    Ok(paths)
}

/// What [`CheckpointCoordinator::recover`] found and did.
#[derive(Debug)]
pub struct Recovered {
    /// The coordinator, resumed with the committed checkpoints retained.
    pub coordinator: CheckpointCoordinator,
    /// The checkpoint to restore the instances from: the latest committed one, `None` for
    /// a job with no committed checkpoint (a fresh start).
    pub restore_from: Option<CheckpointMetadata>,
    /// Committed checkpoints beyond `num-retained` (a crash between a commit and the
    /// subsumption it causes) discarded now.
    pub subsumed: Vec<CheckpointId>,
    /// What the clean-up removed and kept.
    pub garbage: Garbage,
    /// Failures deleting files of subsumed checkpoints or garbage: the recovery stands,
    /// the files stay behind for the next clean-up.
    pub cleanup_errors: Vec<String>,
}

impl CheckpointCoordinator {
    /// Recovers a job from its checkpoint storage after a crash (or any restart): reads
    /// every committed checkpoint, retains them in a coordinator (the shared-state registry
    /// rebuilt from their metadata; those beyond `num-retained` subsumed), removes what a
    /// crash left behind as [`collect_garbage`] does with `writers`, and continues the
    /// checkpoint ids after every id the storage holds.
    ///
    /// # Errors
    ///
    /// Errors reading the storage or a committed checkpoint, and those of
    /// [`find_garbage`] and [`resume`](Self::resume): nothing is deleted then.
    ///
    /// # Example
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use std::sync::Arc;
    /// use state_api::{CheckpointId, CheckpointStorage, MaxParallelism};
    /// use state_coordinator::{CheckpointCoordinator, CoordinatorConfig, Writers};
    /// use state_storage_local::LocalCheckpointStorage;
    ///
    /// let root = tempfile::tempdir().unwrap();
    /// let storage: Arc<dyn CheckpointStorage> = Arc::new(LocalCheckpointStorage::new(root.path())?);
    /// // A process killed while it wrote checkpoint 1 left this behind.
    /// std::fs::create_dir(root.path().join("chk-1")).unwrap();
    /// std::fs::write(root.path().join("chk-1/.inprogress-a1b2"), b"half").unwrap();
    ///
    /// let config = CoordinatorConfig::new(NonZeroU32::MIN, MaxParallelism::new(128)?);
    /// let recovered = CheckpointCoordinator::recover(storage, config, Writers::Exclusive)?;
    /// assert!(recovered.restore_from.is_none(), "nothing was committed");
    /// assert_eq!(recovered.garbage.bytes(), 4);
    /// assert!(!root.path().join("chk-1").exists());
    /// # Ok::<(), state_api::Error>(())
    /// ```
    pub fn recover(
        storage: Arc<dyn CheckpointStorage>,
        config: CoordinatorConfig,
        writers: Writers,
    ) -> Result<Recovered> {
        let committed = load_committed(&*storage)?;
        let files = storage.list_files()?;
        let highest = files
            .iter()
            .filter_map(|file| owner_of(&file.path).flatten())
            .max();
        let garbage = find_in(&committed, files, writers)?;
        let mut cleanup_errors = Vec::new();
        let (coordinator, subsumed) =
            Self::resume_all(storage.clone(), config, &committed, &mut cleanup_errors)?;
        if let Some(highest) = highest {
            coordinator.skip_ids_below(highest.next());
        }
        if let Err(err) = delete(&*storage, &garbage) {
            cleanup_errors.push(format!("removing garbage: {err}"));
        }
        let restore_from = committed.into_iter().last();
        tracing::info!(
            restore_from = ?restore_from.as_ref().map(|m| m.checkpoint_id),
            garbage_files = garbage.files.len(),
            garbage_bytes = garbage.bytes(),
            "recovered from checkpoint storage"
        );
        Ok(Recovered {
            coordinator,
            restore_from,
            subsumed,
            garbage,
            cleanup_errors,
        })
    }
}

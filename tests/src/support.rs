//! Helpers the kits share: scratch directories, checkpoint storage, file listings.

use std::fs;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::{
    AsyncSnapshotTask, CheckpointStreamFactory, LocalCheckpointStorage, Result, StateObject,
};
use tempfile::TempDir;

use crate::faults::{Fault, FaultyStreamFactory, GatedStreamFactory};

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

/// Panics naming `label` and `case` unless `outcome` is [`Error::Cancelled`].
#[track_caller]
pub(crate) fn expect_cancelled<T>(label: &str, outcome: Result<T>, case: &str) {
    match outcome {
        Ok(_) => panic!("{label}: {case}: the snapshot completed"),
        Err(err) => assert!(err.is_cancelled(), "{label}: {case}: {err}"),
    }
}

/// The cancellation cases every backend meets alike, as checkpoints 1 to 4 into `storage`:
/// cancelled before it runs, cancelled through its canceller, dropped without running, and
/// cancelled while held at its first write. Each must end [`Error::Cancelled`] (where it
/// runs) and leave no file under the storage root. `start` runs a synchronous part.
pub(crate) fn check_cancellations<T: StateObject + Send + 'static>(
    label: &str,
    storage: &LocalCheckpointStorage,
    mut start: impl FnMut(u64, Arc<dyn CheckpointStreamFactory>) -> AsyncSnapshotTask<T>,
) {
    let root = storage.root();
    let factory = |checkpoint_id: u64| {
        storage
            .stream_factory(checkpoint_id)
            .unwrap_or_else(|err| panic!("{label}: opening a stream factory: {err}"))
    };

    let task = start(1, Arc::new(factory(1)));
    assert!(
        task.cancel(),
        "{label}: cancelling a task that did not run had no effect"
    );
    expect_cancelled(label, task.run(), "cancelled before it ran");
    assert_no_files(label, root, "cancelled before it ran");

    let task = start(2, Arc::new(factory(2)));
    let canceller = task.canceller();
    assert!(
        canceller.cancel(),
        "{label}: cancelling through a canceller had no effect"
    );
    assert!(canceller.is_done(), "{label}: a cancelled task is not done");
    expect_cancelled(label, task.run(), "cancelled through its canceller");
    assert_no_files(label, root, "cancelled through its canceller");

    drop(start(3, Arc::new(factory(3))));
    assert_no_files(label, root, "dropped without running");

    // Held at its first write until the cancel is done.
    let (gated, gate) = GatedStreamFactory::new(Box::new(factory(4)));
    let task = start(4, Arc::new(gated));
    let canceller = task.canceller();
    let running = task
        .spawn()
        .unwrap_or_else(|err| panic!("{label}: starting the asynchronous part: {err}"));
    assert!(
        gate.wait_started(),
        "{label}: the snapshot finished without writing a byte"
    );
    assert!(
        canceller.cancel(),
        "{label}: cancelling a running snapshot had no effect"
    );
    gate.resume();
    let outcome = running
        .join()
        .unwrap_or_else(|_| panic!("{label}: the asynchronous part panicked"));
    expect_cancelled(label, outcome, "cancelled while writing");
    assert_no_files(label, root, "cancelled while writing");
}

/// Every [`Fault`] the storage-fault contracts inject, in checkpoint order.
const FAULTS: [Fault; 8] = [
    Fault::FailAfter(0),
    Fault::FailAfter(1),
    Fault::FailAfter(100),
    Fault::FailAfter(5_000),
    Fault::FailOnClose,
    Fault::ShortWrites(7),
    Fault::DropTail(1),
    Fault::DropTail(100),
];

/// Takes one snapshot per [`Fault`] (checkpoints 1 to 8) into `storage` through `start`
/// (which runs a synchronous part). Failing storage must fail the snapshot with the
/// injected cause; for a snapshot that completes, `check(case, result, intact)` verifies
/// that it restores exactly (`intact`, short writes) or that its restore fails with a
/// corruption or truncation (a lost tail). Every snapshot is then discarded and no file may
/// remain under the storage root.
pub(crate) fn check_storage_faults<T: StateObject + Send + 'static>(
    label: &str,
    storage: &LocalCheckpointStorage,
    mut start: impl FnMut(u64, Arc<dyn CheckpointStreamFactory>) -> AsyncSnapshotTask<T>,
    mut check: impl FnMut(&str, &T, bool),
) {
    for (checkpoint_id, fault) in (1u64..).zip(FAULTS) {
        let case = format!("checkpoint {checkpoint_id} with {fault:?}");
        let inner = storage
            .stream_factory(checkpoint_id)
            .unwrap_or_else(|err| panic!("{label}: opening a stream factory: {err}"));
        let task = start(
            checkpoint_id,
            Arc::new(FaultyStreamFactory::new(Box::new(inner), fault)),
        );
        let outcome = catch_unwind(AssertUnwindSafe(|| task.run()))
            .unwrap_or_else(|_| panic!("{label}: {case}: the asynchronous part panicked"));
        match (fault, outcome) {
            (Fault::FailAfter(_) | Fault::FailOnClose, Ok(_)) => {
                panic!("{label}: {case}: the snapshot succeeded")
            }
            (Fault::FailAfter(_) | Fault::FailOnClose, Err(err)) => assert!(
                err.to_string().contains("injected failure"),
                "{label}: {case}: the error does not carry the cause: {err}"
            ),
            (Fault::ShortWrites(_), Err(err)) => {
                panic!("{label}: {case}: short writes failed the snapshot: {err}")
            }
            // A storage losing bytes may also be noticed while writing.
            (Fault::DropTail(_), Err(_)) => {}
            (Fault::ShortWrites(_) | Fault::DropTail(_), Ok(result)) => {
                check(&case, &result, matches!(fault, Fault::ShortWrites(_)));
                result
                    .discard()
                    .unwrap_or_else(|err| panic!("{label}: {case}: discarding: {err}"));
            }
        }
        assert_no_files(label, storage.root(), &case);
    }
}

/// Panics unless `outcome` failed with a corruption or truncation.
#[track_caller]
pub(crate) fn expect_damage_detected<T>(label: &str, case: &str, outcome: Result<T>) {
    match outcome {
        Ok(_) => panic!("{label}: {case}: a damaged snapshot restored"),
        Err(err) => assert!(
            matches!(
                err.root(),
                state_api::Error::Corrupted { .. } | state_api::Error::Truncated { .. }
            ),
            "{label}: {case}: not a corruption or truncation: {err}"
        ),
    }
}

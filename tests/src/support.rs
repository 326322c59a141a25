//! Helpers the kits share: scratch directories, checkpoint storage, file listings.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::{AsyncSnapshotTask, CheckpointStreamFactory, Result, StateObject};
use tempfile::TempDir;

use crate::faults::{Fault, FaultyStreamFactory, GatePoint, GatedStreamFactory, is_injected};
use crate::storage::StorageUnderTest;

/// A fresh temporary directory named after `prefix`; panics naming `label` if it cannot be
/// created.
pub(crate) fn temp_dir(prefix: &str, label: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|err| panic!("{label}: cannot create a temporary directory: {err}"))
}

/// The checkpoint storage of one contract, from the provider in force
/// ([`with_storage`](crate::storage::with_storage)), named after `root`.
#[derive(Clone)]
pub(crate) struct KitStorage {
    label: String,
    inner: Arc<dyn StorageUnderTest>,
}

impl std::fmt::Debug for KitStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitStorage")
            .field("location", &self.inner.location())
            .finish()
    }
}

impl KitStorage {
    /// The stream factory of checkpoint `checkpoint_id`.
    pub(crate) fn stream_factory(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<Arc<dyn CheckpointStreamFactory>> {
        self.inner.stream_factory(checkpoint_id)
    }

    /// The local directory of the storage, for contracts that damage files.
    pub(crate) fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }

    /// What is stored (under checkpoint `checkpoint_id`, or anywhere).
    pub(crate) fn stored(&self, checkpoint_id: Option<u64>) -> Vec<String> {
        self.inner.stored(checkpoint_id).unwrap_or_else(|err| {
            panic!("{}: listing {}: {err}", self.label, self.inner.location())
        })
    }

    /// Panics naming `case` if anything is stored (under checkpoint `checkpoint_id`, or
    /// anywhere).
    #[track_caller]
    pub(crate) fn assert_empty(&self, checkpoint_id: Option<u64>, case: &str) {
        let stored = self.stored(checkpoint_id);
        assert!(
            stored.is_empty(),
            "{}: {case}: left in {}: {stored:?}",
            self.label,
            self.inner.location()
        );
    }
}

/// Checkpoint storage named after `root`; `file_state_threshold` 0 stores every stream as
/// a file or object, `None` keeps the default.
pub(crate) fn storage(
    label: &str,
    root: PathBuf,
    file_state_threshold: Option<usize>,
) -> KitStorage {
    let inner = crate::storage::provider()
        .open(&root, file_state_threshold)
        .unwrap_or_else(|err| panic!("{label}: creating checkpoint storage: {err}"));
    KitStorage {
        label: label.to_owned(),
        inner,
    }
}

/// Files (not directories) anywhere under `dir`, relative to it, sorted; none if `dir`
/// does not exist.
pub(crate) fn files_under(label: &str, dir: &Path) -> Vec<PathBuf> {
    crate::storage::files_under(dir, dir)
        .unwrap_or_else(|err| panic!("{label}: listing {}: {err}", dir.display()))
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

/// Checkpoint ids [`check_cancellations`] uses (1 to this); callers go on above it.
pub(crate) const CANCELLATION_CHECKPOINTS: u64 = 6;

/// The cancellation cases every backend meets alike, as checkpoints 1 to
/// [`CANCELLATION_CHECKPOINTS`] into `storage`: cancelled before it runs, cancelled through
/// its canceller, dropped without running, cancelled while held at its first write, at its
/// second write, and in the close of its first stream. Each must end
/// [`Error::Cancelled`](state_api::Error::Cancelled) (where it runs) and leave no file
/// under the storage root, and nothing of it may stay registered with its owner
/// (`pending` reads the owner's count of registered snapshots). `start` runs a synchronous
/// part.
pub(crate) fn check_cancellations<T: StateObject + Send + 'static>(
    label: &str,
    storage: &KitStorage,
    mut start: impl FnMut(u64, Arc<dyn CheckpointStreamFactory>) -> AsyncSnapshotTask<T>,
    pending: impl Fn() -> usize,
) {
    let assert_no_files = |label: &str, case: &str| {
        storage.assert_empty(None, case);
        assert_nothing_pending(label, pending(), case);
    };
    let factory = |checkpoint_id: CheckpointId| {
        storage
            .stream_factory(checkpoint_id)
            .unwrap_or_else(|err| panic!("{label}: opening a stream factory: {err}"))
    };

    let task = start(1, Arc::new(factory(CheckpointId::new(1))));
    assert!(
        task.cancel(),
        "{label}: cancelling a task that did not run had no effect"
    );
    expect_cancelled(label, task.run(), "cancelled before it ran");
    assert_no_files(label, "cancelled before it ran");

    let task = start(2, Arc::new(factory(CheckpointId::new(2))));
    let canceller = task.canceller();
    assert!(
        canceller.cancel(),
        "{label}: cancelling through a canceller had no effect"
    );
    assert!(canceller.is_done(), "{label}: a cancelled task is not done");
    expect_cancelled(label, task.run(), "cancelled through its canceller");
    assert_no_files(label, "cancelled through its canceller");

    drop(start(3, Arc::new(factory(CheckpointId::new(3)))));
    assert_no_files(label, "dropped without running");

    // Held at a gate until the cancel is done.
    let gated = [
        (
            4,
            GatePoint::Write(1),
            "cancelled while held at its first write",
        ),
        (
            5,
            GatePoint::Write(2),
            "cancelled while held at its second write",
        ),
        (6, GatePoint::Close, "cancelled while held closing a stream"),
    ];
    for (checkpoint_id, point, case) in gated {
        let (gated, gate) =
            GatedStreamFactory::at(Box::new(factory(CheckpointId::new(checkpoint_id))), point);
        let task = start(checkpoint_id, Arc::new(gated));
        let canceller = task.canceller();
        let running = task
            .spawn()
            .unwrap_or_else(|err| panic!("{label}: {case}: starting the asynchronous part: {err}"));
        assert!(
            gate.wait_started(),
            "{label}: {case}: the snapshot finished without reaching {point:?}"
        );
        assert!(
            canceller.cancel(),
            "{label}: {case}: cancelling a running snapshot had no effect"
        );
        gate.resume();
        let outcome = running
            .join()
            .unwrap_or_else(|_| panic!("{label}: {case}: the asynchronous part panicked"));
        expect_cancelled(label, outcome, case);
        assert_no_files(label, case);
    }
}

/// Closes a snapshot's owner while the snapshot is blocked in a write: `start` runs the
/// synchronous part of checkpoint `checkpoint_id` into `storage`, `close` closes the owner
/// (a backend) on this thread while the asynchronous part runs on another. Closing must
/// unblock the write (it closes the snapshot's streams), the snapshot must end
/// [`Error::Cancelled`](state_api::Error::Cancelled), the close must succeed, nothing may
/// stay registered with the closed owner (`pending`), and no file may remain.
pub(crate) fn check_close_while_writing<T: StateObject + Send + 'static>(
    label: &str,
    storage: &KitStorage,
    checkpoint_id: CheckpointId,
    start: impl FnOnce(Arc<dyn CheckpointStreamFactory>) -> AsyncSnapshotTask<T>,
    close: impl FnOnce() -> Result<()>,
    pending: impl Fn() -> usize,
) {
    let case = "owner closed while the snapshot is blocked in a write";
    let inner = storage
        .stream_factory(checkpoint_id)
        .unwrap_or_else(|err| panic!("{label}: opening a stream factory: {err}"));
    let (gated, gate) = GatedStreamFactory::new(Box::new(inner));
    let running = start(Arc::new(gated))
        .spawn()
        .unwrap_or_else(|err| panic!("{label}: {case}: starting the asynchronous part: {err}"));
    assert!(
        gate.wait_started(),
        "{label}: {case}: the snapshot finished without writing"
    );
    // No resume: only the close can let the write go on.
    close().unwrap_or_else(|err| panic!("{label}: {case}: closing failed: {err}"));
    assert_nothing_pending(label, pending(), case);
    let outcome = running
        .join()
        .unwrap_or_else(|_| panic!("{label}: {case}: the asynchronous part panicked"));
    expect_cancelled(label, outcome, case);
    storage.assert_empty(None, case);
}

/// Panics naming `label` and `case` unless the owner holds no registered snapshot.
#[track_caller]
pub(crate) fn assert_nothing_pending(label: &str, pending: usize, case: &str) {
    assert_eq!(
        pending, 0,
        "{label}: {case}: {pending} snapshots are still registered with their owner"
    );
}

/// Every [`Fault`] the storage-fault contracts inject, in checkpoint order.
const FAULTS: [Fault; 11] = [
    Fault::FailAfter(0),
    Fault::FailAfter(1),
    Fault::FailAfter(100),
    Fault::FailAfter(5_000),
    Fault::FailOnWrite(1),
    Fault::FailOnWrite(3),
    Fault::FailOnStream(2),
    Fault::FailOnClose,
    Fault::ShortWrites(7),
    Fault::DropTail(1),
    Fault::DropTail(100),
];

/// Checkpoint ids of the good checkpoints [`check_storage_faults`] takes after each fault
/// start above this.
const HEALTHY_CHECKPOINTS: u64 = 1000;

/// Takes one snapshot per [`Fault`] (checkpoints 1 to 11) into `storage` through `start`
/// (which runs a synchronous part), each followed by a snapshot to healthy storage.
///
/// A fault that took effect (see [`FaultProbe`](crate::faults::FaultProbe)) on a write or
/// close must fail the snapshot with the injected cause; a lost tail may fail it only with
/// a corruption or truncation. A snapshot that completes goes to `check(case, result,
/// intact)`, which verifies that it restores exactly (`intact`: short writes, a fault that
/// never fired, every healthy snapshot) or that its restore fails with a corruption or
/// truncation (a lost tail). Every snapshot is then discarded and no file may remain under
/// the storage root and nothing may stay registered with the owner (`pending`): a fault
/// leaves nothing behind and the owner goes on working.
pub(crate) fn check_storage_faults<T: StateObject + Send + 'static>(
    label: &str,
    storage: &KitStorage,
    mut start: impl FnMut(u64, Arc<dyn CheckpointStreamFactory>) -> AsyncSnapshotTask<T>,
    pending: impl Fn() -> usize,
    mut check: impl FnMut(&str, &T, bool),
) {
    let mut run =
        |checkpoint_id: CheckpointId, factory: Arc<dyn CheckpointStreamFactory>, case: &str| {
            let task = start(checkpoint_id.get(), factory);
            catch_unwind(AssertUnwindSafe(|| task.run()))
                .unwrap_or_else(|_| panic!("{label}: {case}: the asynchronous part panicked"))
        };
    for (checkpoint_id, fault) in (1u64..).zip(FAULTS) {
        let case = format!("checkpoint {checkpoint_id} with {fault:?}");
        let inner = storage
            .stream_factory(CheckpointId::new(checkpoint_id))
            .unwrap_or_else(|err| panic!("{label}: opening a stream factory: {err}"));
        let faulty = FaultyStreamFactory::new(Box::new(inner), fault);
        let probe = faulty.probe();
        let outcome = run(CheckpointId::new(checkpoint_id), Arc::new(faulty), &case);
        let losing = matches!(fault, Fault::DropTail(_));
        match (outcome, probe.fired()) {
            (Err(err), true) if losing => assert!(
                matches!(
                    err.root(),
                    state_api::Error::Corrupted { .. } | state_api::Error::Truncated { .. }
                ),
                "{label}: {case}: a lost tail failed the snapshot with an untyped error: {err}"
            ),
            (Err(err), true) => assert!(
                is_injected(&err)
                    && matches!(
                        err.root(),
                        state_api::Error::Stream { .. } | state_api::Error::Io { .. }
                    ),
                "{label}: {case}: the error is not the injected storage failure: {err}"
            ),
            (Err(err), false) => {
                panic!("{label}: {case}: the snapshot failed without a fault: {err}")
            }
            (Ok(_), true) if !losing => panic!("{label}: {case}: the snapshot succeeded"),
            (Ok(result), fired) => {
                check(&case, &result, !fired);
                result
                    .discard()
                    .unwrap_or_else(|err| panic!("{label}: {case}: discarding: {err}"));
            }
        }
        storage.assert_empty(None, &case);
        assert_nothing_pending(label, pending(), &case);

        let healthy_id = HEALTHY_CHECKPOINTS + checkpoint_id;
        let healthy = format!("healthy checkpoint {healthy_id} after {fault:?}");
        let factory = storage
            .stream_factory(CheckpointId::new(healthy_id))
            .unwrap_or_else(|err| panic!("{label}: opening a stream factory: {err}"));
        let result = run(CheckpointId::new(healthy_id), Arc::new(factory), &healthy)
            .unwrap_or_else(|err| panic!("{label}: {healthy}: {err}"));
        check(&healthy, &result, true);
        result
            .discard()
            .unwrap_or_else(|err| panic!("{label}: {healthy}: discarding: {err}"));
        storage.assert_empty(None, &healthy);
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

//! Cancelled, dropped and discarded snapshots leave nothing behind.

use std::sync::Arc;

use state_api::{CheckpointId, Error, SnapshotRequest, StateObject};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{TestBed, full_range, keys_covering, write_workload};
use crate::support;

/// A snapshot cancelled before it runs, cancelled while it writes, dropped without running,
/// or pending when its backend closes, fails with [`Error::Cancelled`] (where it runs) and
/// leaves no file; a completed snapshot's files go when its result is discarded.
pub fn cancelled_snapshot_leaves_nothing(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "cancellation");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 2), 0);
    let storage = bed.storage("checkpoints", Some(0));
    let shared = std::cell::RefCell::new(live);
    support::check_cancellations(&bed.label, &storage, bed.checkpoints_of(&shared), || {
        shared.borrow().pending_snapshots()
    });
    let mut live = shared.into_inner();

    // Completed, then discarded.
    let completed = support::CANCELLATION_CHECKPOINTS + 1;
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(completed));
    assert!(
        !storage.stored(Some(completed)).is_empty(),
        "{}: a snapshot with a file threshold of 0 wrote no file",
        bed.label
    );
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(&mut *restored, "restored after cancelled snapshots");
    bed.ok(result.discard(), "discarding a completed snapshot");
    storage.assert_empty(None, "discarded after completing");

    // Pending when the backend closes.
    let pending = completed + 1;
    let factory = bed.ok(
        storage.stream_factory(CheckpointId::new(pending)),
        "opening a stream factory",
    );
    let task = bed.ok(
        live.snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(pending), 0),
            Arc::new(factory),
        ),
        format_args!("synchronous part of checkpoint {pending}"),
    );
    bed.ok(live.close(), "closing the backend");
    support::expect_cancelled(&bed.label, task.run(), "pending when its backend closed");
    storage.assert_empty(None, "pending when its backend closed");
    let err = live
        .set_current_key(b"after close")
        .err()
        .unwrap_or_else(|| panic!("{}: a closed backend took a call", bed.label));
    assert!(
        matches!(err, Error::Closed { .. }),
        "{}: calling a closed backend: {err}",
        bed.label
    );

    // Running, blocked in a write, when its backend closes.
    let mut other = bed.create_with_states(&mut bed.model());
    write_workload(
        &mut bed.model(),
        &mut *other,
        &keys_covering(full_range(), 2),
        0,
    );
    let closing = std::cell::RefCell::new(other);
    support::check_close_while_writing(
        &bed.label,
        &storage,
        CheckpointId::new(pending + 1),
        |factory| bed.checkpoints_of(&closing)(pending + 1, factory),
        || closing.borrow_mut().close(),
        || closing.borrow().pending_snapshots(),
    );
}

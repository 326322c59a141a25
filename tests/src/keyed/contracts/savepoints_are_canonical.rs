//! Savepoints are canonical full snapshots, whatever the checkpoint strategy.

use state_api::{CheckpointId, CheckpointOptions, StateObject};
use state_format::KeyGroupsStateHandle;
use state_format::keyed_format::KeyedSnapshotReader;

use crate::keyed::bed::{TestBed, full_range, keys_covering, write_workload};
use crate::keyed::{KeyedTarget, MAX_PARALLELISM};

/// A savepoint is a full snapshot in the canonical format, whatever strategy the backend
/// takes checkpoints with: a key-groups handle whose header names the decorator, restoring
/// exactly; checkpoints taken around it restore too; and it is self-contained: it restores
/// after its backend closed and the checkpoint before it was discarded.
pub fn savepoints_are_canonical(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "checkpoint vs savepoint");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 1), 0);
    let storage = bed.storage("checkpoints", None);
    let checkpoint = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    bed.ok(
        live.notify_checkpoint_complete(CheckpointId::new(1)),
        "notifying",
    );
    let savepoint = bed.snapshot_with(
        &mut *live,
        &storage,
        CheckpointId::new(2),
        &CheckpointOptions::savepoint(),
    );
    let handle = bed.handle(&savepoint);
    let key_groups = handle
        .downcast_ref::<KeyGroupsStateHandle>()
        .unwrap_or_else(|| {
            panic!(
                "{}: a savepoint is not a key-groups handle: {handle:?}",
                bed.label
            )
        });
    let reader = bed.ok(
        KeyedSnapshotReader::open(key_groups, target.registry, MAX_PARALLELISM),
        "reading the savepoint header",
    );
    assert_eq!(
        reader.header().compression(),
        target.compression.as_str(),
        "{}: the savepoint header names another decorator",
        bed.label
    );
    for (result, what) in [(&checkpoint, "checkpoint"), (&savepoint, "savepoint")] {
        let mut restored = bed.restore(full_range(), &[bed.handle(result)]);
        model.check(&mut *restored, &format!("restored from the {what}"));
    }
    // Self-contained: with the backend closed and the checkpoint (and every file it
    // uploaded) discarded, the savepoint alone still restores.
    bed.ok(live.close(), "closing the backend");
    bed.ok(checkpoint.discard(), "discarding the checkpoint");
    let mut restored = bed.restore(full_range(), &[bed.handle(&savepoint)]);
    model.check(
        &mut *restored,
        "restored from the savepoint after its checkpoint was discarded",
    );
}

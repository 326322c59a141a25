//! The round trip: every kind of state written, checkpointed, restored, written again,
//! saved and restored again.

use state_api::{CheckpointId, CheckpointOptions};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{TestBed, full_range, keys_covering, standard_states, write_workload};

/// Value, list and map state of several namespaces and states, with keys in every key
/// group, removed entries and emptied lists and maps, come back from a checkpoint exactly;
/// the restored backend takes more writes and a savepoint of it restores exactly too.
pub fn round_trip(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "round trip");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    let keys = keys_covering(full_range(), 3);
    write_workload(&mut model, &mut *live, &keys, 0);
    model.check(&mut *live, "the live backend");

    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let handle = bed.handle(&result);
    let mut restored = bed.restore(full_range(), &[handle]);
    model.check(&mut *restored, "restored from checkpoint 1");
    // Registering a restored state again is a no-op.
    for meta in standard_states() {
        bed.ok(
            restored.register_state(&meta),
            format_args!("registering restored state `{}` again", meta.name),
        );
    }

    write_workload(&mut model, &mut *restored, &keys, 1);
    let result = bed.snapshot_with(
        &mut *restored,
        &storage,
        CheckpointId::new(2),
        &CheckpointOptions::savepoint(),
    );
    let mut again = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(
        &mut *again,
        "restored from savepoint 2 of the restored backend",
    );
    for mut backend in [live, restored, again] {
        bed.ok(backend.close(), "closing a backend");
    }
}

//! Backends without states, or whose states hold nothing, snapshot and restore.

use state_api::CheckpointId;

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{ATTRIBUTES, COUNT, EVENTS, TestBed, full_range, keys_covering};

/// A backend without states and one whose states hold no entries snapshot and restore: a
/// snapshot that returns no handle writes no file, and restoring from no handles gives an
/// empty backend.
pub fn empty_state(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "empty state");
    let storage = bed.storage("checkpoints", Some(0));

    // No registered states.
    let mut none = bed.create(full_range());
    let result = bed.snapshot(&mut *none, &storage, CheckpointId::new(1));
    let mut restored = match result.job_manager_owned() {
        None => {
            storage.assert_empty(
                Some(1),
                "a snapshot without handle of a backend without states",
            );
            bed.restore(full_range(), &[])
        }
        Some(handle) => bed.restore(full_range(), std::slice::from_ref(handle)),
    };
    bed.model()
        .check(&mut *restored, "restored from a snapshot of no states");

    // States registered, entries written and all removed again.
    let mut model = bed.model();
    let mut backend = bed.create_with_states(&mut model);
    for key in keys_covering(full_range(), 1).iter().step_by(9) {
        model.put_value(&mut *backend, COUNT, b"", key, b"1");
        model.clear(&mut *backend, COUNT, b"", key);
        model.append(&mut *backend, EVENTS, b"", key, b"x");
        model.update_list(&mut *backend, EVENTS, b"", key, &[]);
        model.put_map(&mut *backend, ATTRIBUTES, b"", key, b"k", b"v");
        model.remove_map(&mut *backend, ATTRIBUTES, b"", key, b"k");
    }
    assert!(
        model.entries.is_empty(),
        "invariant: the workload removes what it writes"
    );
    model.check(&mut *backend, "the live backend after removing everything");
    let result = bed.snapshot(&mut *backend, &storage, CheckpointId::new(2));
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(&mut *restored, "restored from a snapshot of empty states");

    // Restoring from no handles at all.
    let mut fresh = bed.restore(full_range(), &[]);
    bed.model()
        .check(&mut *fresh, "restored from an empty list of handles");
}

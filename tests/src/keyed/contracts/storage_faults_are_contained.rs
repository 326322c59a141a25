//! Failing, short-writing and tail-losing storage never yields wrong state.

use state_api::CheckpointId;

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{TestBed, full_range, keys_covering, write_workload};
use crate::support;

/// Storage that fails after some bytes or on close makes the snapshot fail with a typed
/// error and leave no file; storage that writes short still yields a correct snapshot;
/// storage that loses the tail of its streams yields a snapshot whose restore fails with a
/// corruption or truncation instead of wrong data. After every fault the backend goes on
/// and its next checkpoint restores.
pub fn storage_faults_are_contained(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "storage faults");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 2), 0);
    let storage = bed.storage("checkpoints", Some(0));
    let shared = std::cell::RefCell::new(live);
    support::check_storage_faults(
        &bed.label,
        &storage,
        bed.checkpoints_of(&shared),
        || shared.borrow().pending_snapshots(),
        |case, result, intact| {
            let handles = [bed.handle(result)];
            match intact {
                true => {
                    let mut restored = bed.restore(full_range(), &handles);
                    model.check(&mut *restored, &format!("restored from {case}"));
                }
                false => support::expect_damage_detected(
                    &bed.label,
                    case,
                    bed.try_restore(bed.params(full_range()), &handles, case),
                ),
            }
        },
    );
    let mut live = shared.into_inner();
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(100));
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(&mut *restored, "restored after the faults");
}

//! Another kind or serializer for a registered state, or another key serializer on
//! restore, is rejected.

use state_api::{CheckpointId, Error, KeyedBackendParams, Result, StateMetaInfo};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{
    ATTRIBUTES, COUNT, EVENTS, TestBed, full_range, keys_covering, standard_states, write_workload,
};

/// Registering a state again with another kind or serializer, and restoring with another
/// key serializer than the snapshot's, fail with [`Error::Incompatible`] and change
/// nothing; registering the same meta info again is a no-op.
pub fn incompatible_serializers_are_rejected(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "incompatible serializers");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 1), 0);

    let changed = [
        (
            "a value state with another value serializer",
            StateMetaInfo::value(COUNT, "bytes", "u64-be"),
        ),
        (
            "a value state with another namespace serializer",
            StateMetaInfo::value(COUNT, "window", "bytes"),
        ),
        (
            "a value state as a list state",
            StateMetaInfo::list(COUNT, "bytes", "bytes"),
        ),
        (
            "a list state with another element serializer",
            StateMetaInfo::list(EVENTS, "bytes", "string"),
        ),
        (
            "a map state with another user-key serializer",
            StateMetaInfo::map(ATTRIBUTES, "bytes", "string", "bytes"),
        ),
        (
            "a map state with another value serializer",
            StateMetaInfo::map(ATTRIBUTES, "bytes", "bytes", "u64-be"),
        ),
    ];
    for (case, meta) in &changed {
        assert_incompatible(
            &bed,
            live.register_state(meta),
            &format!("registering {case}"),
        );
    }
    for meta in standard_states() {
        bed.ok(
            live.register_state(&meta),
            format_args!("registering state `{}` again unchanged", meta.name),
        );
    }
    model.check(&mut *live, "after rejected registrations");

    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let handle = bed.handle(&result);
    let params = KeyedBackendParams {
        key_serializer: "u64-be".into(),
        ..bed.params(full_range())
    };
    let outcome = bed
        .try_restore(
            params,
            std::slice::from_ref(&handle),
            "another key serializer",
        )
        .map(drop);
    assert_incompatible(&bed, outcome, "restoring with another key serializer");

    let mut restored = bed.restore(full_range(), &[handle]);
    for (case, meta) in &changed {
        assert_incompatible(
            &bed,
            restored.register_state(meta),
            &format!("registering {case} on a restored backend"),
        );
    }
    model.check(&mut *restored, "restored, after rejected registrations");
}

#[track_caller]
fn assert_incompatible(bed: &TestBed<'_>, outcome: Result<()>, case: &str) {
    match outcome {
        Ok(()) => panic!("{}: {case} was accepted", bed.label),
        Err(err) => assert!(
            matches!(err.root(), Error::Incompatible { .. }),
            "{}: {case}: {err}",
            bed.label
        ),
    }
}

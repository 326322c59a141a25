//! A snapshot holds the state at its synchronous part, whatever is written after it.

use std::sync::Arc;

use state_api::{CheckpointId, SnapshotRequest, StateMetaInfo};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{
    ATTRIBUTES, COUNT, EVENTS, NAMESPACES, TestBed, full_range, keys_covering, write_workload,
};

/// What a snapshot holds is the state when [`KeyedStateBackend::snapshot`] returned: writes,
/// updates, deletes, new keys and a new state after it, and writes while the asynchronous
/// part runs on another thread, are not in it.
///
/// [`KeyedStateBackend::snapshot`]: state_api::KeyedStateBackend::snapshot
pub fn snapshot_is_consistent(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "snapshot consistency");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    let keys = keys_covering(full_range(), 2);
    write_workload(&mut model, &mut *live, &keys, 0);
    let storage = bed.storage("checkpoints", None);
    let factory = bed.ok(
        storage.stream_factory(CheckpointId::new(1)),
        "opening a stream factory",
    );
    let task = bed.ok(
        live.snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            Arc::new(factory),
        ),
        "synchronous part",
    );
    let at_snapshot = model.clone();

    // After the synchronous part, before the asynchronous part starts.
    write_workload(&mut model, &mut *live, &keys, 1);
    for (i, key) in keys.iter().enumerate().step_by(2) {
        for ns in NAMESPACES {
            model.clear(&mut *live, COUNT, ns, key);
        }
        model.update_list(&mut *live, EVENTS, b"", key, &[]);
        model.put_map(
            &mut *live,
            ATTRIBUTES,
            b"",
            key,
            b"after",
            format!("{i}").as_bytes(),
        );
    }
    let late = StateMetaInfo::value("late", "bytes", "bytes");
    model.register(&mut *live, &late);
    for i in 0..200u32 {
        let key = format!("late-key-{i}").into_bytes();
        model.put_value(&mut *live, "late", b"", &key, b"late");
        model.put_value(&mut *live, COUNT, b"", &key, b"late");
    }

    // While the asynchronous part runs.
    let running = bed.ok(task.spawn(), "starting the asynchronous part");
    write_workload(&mut model, &mut *live, &keys, 2);
    let result = running
        .join()
        .unwrap_or_else(|_| panic!("{}: the asynchronous part panicked", bed.label));
    let result = bed.ok(result, "asynchronous part");

    model.check(&mut *live, "the live backend after the snapshot");
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    at_snapshot.check(
        &mut *restored,
        "restored: the state at the synchronous part",
    );
}

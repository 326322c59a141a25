//! Rescaling: snapshots of some instances restore into another number of instances, once
//! ([`rescale`]) and twice in a row ([`rescale_chain`]).

use state_api::{CheckpointId, CheckpointOptions};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{
    Moved, TestBed, full_range, key_group, keys_covering, move_state, range_of, write_workload,
};

/// Snapshots of `old_parallelism` instances, each owning its share of the key groups,
/// restore into `new_parallelism` instances, each given every old handle: each key is in
/// exactly the instance whose range holds its key group, with its state, and nowhere else.
/// Setting a key of another instance's range fails with [`Error::KeyGroupOutOfRange`].
///
/// [`Error::KeyGroupOutOfRange`]: state_api::Error::KeyGroupOutOfRange
pub fn rescale(target: &KeyedTarget<'_>, old_parallelism: u32, new_parallelism: u32) {
    let contract = format!("rescale {old_parallelism} -> {new_parallelism}");
    rescale_once(
        target,
        &contract,
        (old_parallelism, new_parallelism),
        Moved::State,
    );
}

/// The checkpoints of `parallelism.0` instances holding what `moved` says restore into
/// `parallelism.1` instances (skipped for a backend that does not declare rescaling).
pub(crate) fn rescale_once(
    target: &KeyedTarget<'_>,
    contract: &str,
    parallelism: (u32, u32),
    moved: Moved,
) {
    let bed = TestBed::new(target, contract);
    if !target.capabilities.rescaling {
        println!(
            "{}: skipped: the backend does not declare rescaling",
            bed.label
        );
        return;
    }
    let checkpoint = CheckpointOptions::checkpoint();
    move_state(&bed, &bed, parallelism, &checkpoint, moved);
}

/// A job rescaled twice keeps its state: one instance's checkpoint restores into three,
/// each of the three takes writes and checkpoints (continuing from a rescaled restore),
/// those three checkpoints restore into two, and the two checkpoint again and restore into
/// one. Every instance holds exactly the model's state of its range at every step.
pub fn rescale_chain(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "rescale 1 -> 3 -> 2 -> 1");
    if !target.capabilities.rescaling {
        println!(
            "{}: skipped: the backend does not declare rescaling",
            bed.label
        );
        return;
    }
    let keys = keys_covering(full_range(), 2);
    let storage = bed.storage("checkpoints", None);
    let mut model = bed.model();
    let mut one = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *one, &keys, 0);
    let mut handles = vec![bed.handle(&bed.snapshot(&mut *one, &storage, CheckpointId::new(1)))];
    bed.ok(
        one.notify_checkpoint_complete(CheckpointId::new(1)),
        "notifying checkpoint 1",
    );
    let mut checkpoint_id = 1;
    for (round, parallelism) in [(1, 3u32), (2, 2), (3, 1)] {
        let mut next = Vec::new();
        checkpoint_id += 1;
        for index in 0..parallelism {
            let range = range_of(&bed, parallelism, index);
            let mut instance = bed.restore(range, &handles);
            let step = format!("instance {index} of {parallelism} ({range})");
            model.check(&mut *instance, &format!("{step}, restored"));
            let owned: Vec<Vec<u8>> = keys
                .iter()
                .filter(|key| range.contains(key_group(key)))
                .cloned()
                .collect();
            write_workload(&mut model, &mut *instance, &owned, round);
            let result = bed.snapshot(&mut *instance, &storage, CheckpointId::new(checkpoint_id));
            bed.ok(
                instance.notify_checkpoint_complete(CheckpointId::new(checkpoint_id)),
                format_args!("{step}: notifying checkpoint {checkpoint_id}"),
            );
            next.push(bed.handle(&result));
        }
        handles = next;
    }
    let mut last = bed.restore(full_range(), &handles);
    model.check(
        &mut *last,
        "one instance restored after rescaling 1 -> 3 -> 2 -> 1",
    );
}

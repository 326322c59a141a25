//! Savepoints, with their keyed state and timers, move between keyed backends.

use state_api::CheckpointOptions;

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{Moved, TestBed, move_state};

/// A savepoint of keyed backend `from` (taken by `old_parallelism` instances, written with
/// `from`'s strategy and decorator) restores into keyed backend `to` at `new_parallelism`
/// instances (created with `to`'s strategy and decorator), every key in exactly its new
/// instance: the canonical format makes savepoints portable between backends.
pub fn savepoint_portability(
    from: &KeyedTarget<'_>,
    to: &KeyedTarget<'_>,
    old_parallelism: u32,
    new_parallelism: u32,
) {
    let contract = format!(
        "savepoint into {}, {old_parallelism} -> {new_parallelism} instances",
        to.name()
    );
    move_savepoint(
        from,
        to,
        &contract,
        (old_parallelism, new_parallelism),
        Moved::State,
    );
}

/// A savepoint holding timers (and keyed state) of keyed backend `from`, taken by
/// `old_parallelism` instances, restores into keyed backend `to` at `new_parallelism`
/// instances: every timer is in exactly the instance owning its key's key group, and
/// polling each instance fires its timers earliest first.
pub fn timer_savepoint_portability(
    from: &KeyedTarget<'_>,
    to: &KeyedTarget<'_>,
    old_parallelism: u32,
    new_parallelism: u32,
) {
    let contract = format!(
        "timers in a savepoint into {}, {old_parallelism} -> {new_parallelism} instances",
        to.name()
    );
    let parallelism = (old_parallelism, new_parallelism);
    move_savepoint(from, to, &contract, parallelism, Moved::StateAndTimers);
}

/// A savepoint of `parallelism.0` instances of `from` holding what `moved` says, restored
/// into `parallelism.1` instances of `to`.
fn move_savepoint(
    from: &KeyedTarget<'_>,
    to: &KeyedTarget<'_>,
    contract: &str,
    parallelism: (u32, u32),
    moved: Moved,
) {
    let source = TestBed::new(from, contract);
    let target = TestBed::new(to, contract);
    let savepoint = CheckpointOptions::savepoint();
    move_state(&source, &target, parallelism, &savepoint, moved);
}

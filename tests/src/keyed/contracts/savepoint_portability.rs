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
    let source = TestBed::new(from, &contract);
    let target = TestBed::new(to, &contract);
    move_state(
        &source,
        &target,
        (old_parallelism, new_parallelism),
        &CheckpointOptions::savepoint(),
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
    let source = TestBed::new(from, &contract);
    let target = TestBed::new(to, &contract);
    move_state(
        &source,
        &target,
        (old_parallelism, new_parallelism),
        &CheckpointOptions::savepoint(),
        Moved::StateAndTimers,
    );
}

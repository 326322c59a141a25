//! Timers follow their key's key group when snapshots of some instances restore into
//! another number of instances.

use crate::keyed::KeyedTarget;
use crate::keyed::bed::Moved;
use crate::keyed::contracts::rescale::rescale_once;

/// Checkpoints of `old_parallelism` instances holding timers (and keyed state) restore into
/// `new_parallelism` instances, each given every old handle: every timer is in exactly the
/// instance owning its key's key group (`timer_count`, `timers_of` and `peek_timer` there,
/// [`Error::KeyGroupOutOfRange`] for other key groups), and polling each instance fires its
/// timers earliest first.
///
/// [`Error::KeyGroupOutOfRange`]: state_api::Error::KeyGroupOutOfRange
pub fn timers_rescale(target: &KeyedTarget<'_>, old_parallelism: u32, new_parallelism: u32) {
    let contract = format!("timers rescale {old_parallelism} -> {new_parallelism}");
    let parallelism = (old_parallelism, new_parallelism);
    rescale_once(target, &contract, parallelism, Moved::StateAndTimers);
}

//! The keyed contracts, one file each; helpers only one contract uses live in its file.

mod cancelled_snapshot_leaves_nothing;
mod compression_is_read_from_the_snapshot;
mod corrupt_snapshot_is_reported;
mod empty_state;
mod huge_values;
mod incompatible_serializers_are_rejected;
mod large_max_parallelism;
mod local_recovery;
mod map_entries_are_ordered;
mod rescale;
mod round_trip;
mod savepoint_portability;
mod savepoints_are_canonical;
mod snapshot_is_consistent;
mod storage_faults_are_contained;
mod timers;
mod timers_model;
mod timers_rescale;
mod truncated_snapshot_is_detected;
mod ttl;

pub use cancelled_snapshot_leaves_nothing::cancelled_snapshot_leaves_nothing;
pub use compression_is_read_from_the_snapshot::compression_is_read_from_the_snapshot;
pub use corrupt_snapshot_is_reported::corrupt_snapshot_is_reported;
pub use empty_state::empty_state;
pub use huge_values::huge_values;
pub use incompatible_serializers_are_rejected::incompatible_serializers_are_rejected;
pub use large_max_parallelism::large_max_parallelism;
pub use local_recovery::local_recovery;
pub use map_entries_are_ordered::map_entries_are_ordered;
pub use rescale::{rescale, rescale_chain};
pub use round_trip::round_trip;
pub use savepoint_portability::{savepoint_portability, timer_savepoint_portability};
pub use savepoints_are_canonical::savepoints_are_canonical;
pub use snapshot_is_consistent::snapshot_is_consistent;
pub use storage_faults_are_contained::storage_faults_are_contained;
pub use timers::timers;
pub use timers_model::{
    TIMERS_MODEL_CASES, TimerOp, TimerStep, run_timer_steps, timer_steps, timers_model,
};
pub use timers_rescale::timers_rescale;
pub use truncated_snapshot_is_detected::{
    EVERY_BYTE_UP_TO, SPREAD_CUTS, truncated_snapshot_is_detected,
};
pub use ttl::ttl_contract;

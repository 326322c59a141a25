//! Cross-crate tests of snapstate and the conformance kit that plugins run.
//!
//! The kit turns the contract of `state-api` into public functions, one per contract
//! area, that any implementation calls on itself: in-tree plugins from this crate's
//! tests, third-party plugins from theirs (add this crate as a dev-dependency). Each
//! function panics with a message naming the plugin and the broken rule. Plugins declare
//! what they can do as data; cases that do not apply are skipped and printed.
//!
//! The kit covers compression decorators ([`compression`]) and keyed state backends
//! ([`keyed`]: round trip, empty and huge state, decorators, checkpoint vs savepoint,
//! snapshot consistency, rescaling, savepoint portability between backends, corrupt input,
//! cancellation, storage faults, incompatible serializers, local recovery, model-based
//! operation sequences, and priority-queue (timer) state: its operations, snapshots,
//! rescaling, savepoints between backends and model-based sequences) and operator state backends ([`operator`]: round trip, empty
//! state, rescaling of split, union and broadcast state, snapshot isolation, corrupt input,
//! cancellation, storage faults, incompatible meta info, local recovery). [`faults`] has the misbehaving stream
//! factories the lifecycle contracts use, [`fuzz`] the bodies of the fuzz targets;
//! [`storage`] lets a checkpoint storage run the backend kits on itself.

pub mod compression;
pub mod faults;
pub mod fuzz;
pub mod keyed;
pub mod operator;
pub mod storage;
mod support;

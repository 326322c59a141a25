//! The heap keyed state backend of snapstate (not yet implemented in this release).
//!
//! This crate will hold the backend most users start with: keyed value, list and map
//! state in copy-on-write maps, one per state, sharded by key group, whose synchronous
//! snapshot takes a version without copying data; the `heap` snapshot strategy writing the
//! canonical key-group format through a compression decorator; restore and rescaling
//! from any set of key-group handles; and the `heap-incremental` strategy. It will
//! register itself with [`state_api::Registry`] as keyed backend `heap`.
//!
//! Today it only depends on the contract crate, so the workspace layout and its
//! dependency rules are in place.

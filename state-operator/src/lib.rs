//! Operator state of snapstate (not yet implemented in this release).
//!
//! This crate will hold the operator state backend: named list states that are split or
//! unioned across instances on restore, named broadcast map states replicated to every
//! instance, the `operator` snapshot strategy that deep-copies this small state in its
//! synchronous part and writes an [`state_api::OperatorStreamStateHandle`], and the
//! round-robin repartitioning of handles from N old instances to M new ones.
//!
//! Today it only depends on the contract crate, so the workspace layout and its
//! dependency rules are in place.

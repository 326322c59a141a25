//! Cross-crate tests of snapstate and the conformance kit that plugins run.
//!
//! The kit turns the contract of `state-api` into public functions, one per contract
//! area, that any implementation calls on itself: in-tree plugins from this crate's
//! tests, third-party plugins from theirs (add this crate as a dev-dependency). Each
//! function panics with a message naming the plugin and the broken rule. Plugins declare
//! what they can do as data; cases that do not apply are skipped and printed.
//!
//! Today the kit covers compression decorators ([`compression`]); the backend areas
//! (round trip, rescale, isolation, lifecycle, corrupt input) join as backends land.

pub mod compression;

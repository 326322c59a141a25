//! Fuzz target: arbitrary bytes as a checkpoint's `_metadata` in a local storage root
//! (handles resolved against it), registered and restored. Must never panic, and never
//! touch a file outside the root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use state_api::Registry;

fuzz_target!(|data: &[u8]| {
    state_compress::link();
    state_heap::link();
    state_operator::link();
    let _restored = snapstate_tests::fuzz::metadata_restore(Registry::global(), data);
});

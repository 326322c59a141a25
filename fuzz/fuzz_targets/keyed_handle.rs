//! Fuzz target: arbitrary bytes as the JSON of a keyed handle read back from checkpoint
//! storage, restored into the heap backend. Must never panic, and never touch a file
//! outside the storage root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use state_api::Registry;

fuzz_target!(|data: &[u8]| {
    state_compress::link();
    state_heap::link();
    let _restored = snapstate_tests::fuzz::handle_restore(Registry::global(), data);
});

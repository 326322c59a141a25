//! Fuzz target: arbitrary bytes as the stream of a keyed snapshot (header, key groups,
//! decorators), restored into the heap backend. Must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use state_api::Registry;

fuzz_target!(|data: &[u8]| {
    state_compress::link();
    state_heap::link();
    let _restored = snapstate_tests::fuzz::keyed_restore(Registry::global(), "heap", data);
});

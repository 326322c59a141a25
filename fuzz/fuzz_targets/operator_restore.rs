//! Fuzz target: arbitrary bytes as the stream of an operator snapshot (header and
//! partitions), restored into the operator backend. Must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use state_api::Registry;

fuzz_target!(|data: &[u8]| {
    state_operator::link();
    let _restored = snapstate_tests::fuzz::operator_restore(Registry::global(), "operator", data);
});

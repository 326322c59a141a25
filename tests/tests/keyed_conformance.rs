//! The in-tree keyed backend `heap` passes the keyed-backend conformance kit with every
//! linked compression decorator, with its full strategy and with `heap-incremental`.

use snapstate_tests::keyed::{self, KeyedBackendCapabilities, KeyedTarget};
use state_api::{PluginKind, Registry};

const HEAP: &str = "heap";

const HEAP_CAPABILITIES: KeyedBackendCapabilities = KeyedBackendCapabilities {
    rescaling: true,
    local_recovery: true,
};

/// `heap-incremental` writes no task-local copies.
const HEAP_INCREMENTAL_CAPABILITIES: KeyedBackendCapabilities = KeyedBackendCapabilities {
    rescaling: true,
    local_recovery: false,
};

fn registry() -> &'static Registry {
    // The linker drops the link-time registrations of crates nothing names.
    state_compress::link();
    state_heap::link();
    Registry::global()
}

/// `heap` with its full strategy and sections written with `compression`.
fn heap(compression: &str) -> KeyedTarget<'static> {
    KeyedTarget::new(registry(), HEAP)
        .compression(compression)
        .capabilities(HEAP_CAPABILITIES)
}

#[test]
fn heap_is_a_linked_keyed_backend() {
    let registry = registry();
    assert!(
        registry.conflicts().is_empty(),
        "{:?}",
        registry.conflicts()
    );
    let names = registry.names(PluginKind::KeyedBackend);
    assert!(names.iter().any(|name| name == HEAP), "{names:?}");
}

#[test]
fn heap_round_trip_none() {
    keyed::round_trip(&heap("none"));
}

#[test]
fn heap_round_trip_snappy() {
    keyed::round_trip(&heap("snappy"));
}

#[test]
fn heap_round_trip_lz4() {
    keyed::round_trip(&heap("lz4"));
}

#[test]
fn heap_map_entries_are_ordered() {
    keyed::map_entries_are_ordered(&heap("none"));
}

#[test]
fn heap_empty_state() {
    keyed::empty_state(&heap("none"));
}

#[test]
fn heap_huge_values_none() {
    keyed::huge_values(&heap("none"));
}

#[test]
fn heap_huge_values_lz4() {
    keyed::huge_values(&heap("lz4"));
}

#[test]
fn heap_compression_is_read_from_the_snapshot_none() {
    keyed::compression_is_read_from_the_snapshot(&heap("none"));
}

#[test]
fn heap_compression_is_read_from_the_snapshot_snappy() {
    keyed::compression_is_read_from_the_snapshot(&heap("snappy"));
}

#[test]
fn heap_compression_is_read_from_the_snapshot_lz4() {
    keyed::compression_is_read_from_the_snapshot(&heap("lz4"));
}

#[test]
fn heap_snapshot_is_consistent() {
    keyed::snapshot_is_consistent(&heap("none"));
}

fn check_rescale(old_parallelism: u32, new_parallelism: u32) {
    keyed::rescale(&heap("none"), old_parallelism, new_parallelism);
}

#[test]
fn heap_rescale_1_to_3() {
    check_rescale(1, 3);
}

#[test]
fn heap_rescale_3_to_2() {
    check_rescale(3, 2);
}

#[test]
fn heap_rescale_4_to_1() {
    check_rescale(4, 1);
}

#[test]
fn heap_rescale_2_to_5() {
    check_rescale(2, 5);
}

#[test]
fn heap_corrupt_snapshot_none() {
    keyed::corrupt_snapshot_is_reported(&heap("none"));
}

#[test]
fn heap_corrupt_snapshot_snappy() {
    keyed::corrupt_snapshot_is_reported(&heap("snappy"));
}

#[test]
fn heap_corrupt_snapshot_lz4() {
    keyed::corrupt_snapshot_is_reported(&heap("lz4"));
}

#[test]
fn heap_cancelled_snapshot_leaves_nothing() {
    keyed::cancelled_snapshot_leaves_nothing(&heap("none"));
}

#[test]
fn heap_storage_faults_are_contained() {
    keyed::storage_faults_are_contained(&heap("lz4"));
}

#[test]
fn heap_incompatible_serializers_are_rejected() {
    keyed::incompatible_serializers_are_rejected(&heap("none"));
}

#[test]
fn heap_local_recovery() {
    keyed::local_recovery(&heap("none"));
}

// Every contract, one test each: heap with snappy, heap-incremental with lz4 and without
// compression.
snapstate_tests::keyed_contracts!(
    heap_snappy,
    KeyedTarget::new(registry(), HEAP)
        .compression("snappy")
        .capabilities(HEAP_CAPABILITIES)
);
snapstate_tests::keyed_contracts!(
    heap_incremental_lz4,
    KeyedTarget::new(registry(), HEAP)
        .strategy("heap-incremental")
        .compression("lz4")
        .capabilities(HEAP_INCREMENTAL_CAPABILITIES)
);
snapstate_tests::keyed_contracts!(
    heap_incremental_none,
    KeyedTarget::new(registry(), HEAP)
        .strategy("heap-incremental")
        .capabilities(HEAP_INCREMENTAL_CAPABILITIES)
);

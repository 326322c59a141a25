//! The `ordered` backend against the keyed conformance kit: every contract, savepoints
//! moving to and from `heap` (with rescaling), and link-time registration.

use snapstate_example_ordered::{ORDERED, ORDERED_FULL};
use snapstate_tests::keyed::{KeyedBackendCapabilities, KeyedTarget};
use state_api::{PluginKind, Registry};

fn registry() -> &'static Registry {
    snapstate_example_ordered::link();
    state_heap::link();
    Registry::global()
}

// The whole keyed-backend contract, one test per contract.
snapstate_tests::keyed_contracts!(
    ordered,
    KeyedTarget::new(registry(), "ordered").capabilities(KeyedBackendCapabilities {
        rescaling: true,
        local_recovery: false,
    })
);

fn heap() -> KeyedTarget<'static> {
    KeyedTarget::new(registry(), "heap")
}

fn ordered() -> KeyedTarget<'static> {
    KeyedTarget::new(registry(), ORDERED)
}

#[test]
fn heap_savepoints_restore_into_ordered() {
    snapstate_tests::keyed::savepoint_portability(&heap(), &ordered(), 1, 2);
    snapstate_tests::keyed::savepoint_portability(&heap(), &ordered(), 3, 2);
}

#[test]
fn ordered_savepoints_restore_into_heap() {
    snapstate_tests::keyed::savepoint_portability(&ordered(), &heap(), 1, 2);
    snapstate_tests::keyed::savepoint_portability(&ordered(), &heap(), 2, 3);
}

#[test]
fn ordered_is_registered_at_link_time() {
    let registry = registry();
    let backends = registry.names(PluginKind::KeyedBackend);
    assert!(
        backends.contains(&ORDERED.to_owned()),
        "linked: {backends:?}"
    );
    let strategy = registry.keyed_strategy(ORDERED_FULL).unwrap();
    assert_eq!(strategy.backend(), ORDERED);
}

#[test]
fn random_sequences_match_the_model() {
    // Writes, checkpoints with writes between their two parts, and rescaled restores.
    snapstate_tests::keyed::model_based(&ordered(), 32);
}

//! The in-tree operator backend `operator` passes the operator-backend conformance kit.

use snapstate_tests::operator::{self, OperatorBackendCapabilities, RESCALINGS};
use state_api::{PluginKind, Registry};

const OPERATOR: &str = "operator";

fn registry() -> &'static Registry {
    // The linker drops the link-time registrations of crates nothing names.
    state_operator::link();
    Registry::global()
}

#[test]
fn operator_is_a_linked_operator_backend_and_strategy() {
    let registry = registry();
    assert!(
        registry.conflicts().is_empty(),
        "{:?}",
        registry.conflicts()
    );
    for kind in [PluginKind::OperatorBackend, PluginKind::OperatorStrategy] {
        let names = registry.names(kind);
        assert!(
            names.iter().any(|name| name == OPERATOR),
            "{kind}: {names:?}"
        );
    }
}

#[test]
fn operator_round_trip() {
    operator::round_trip(OPERATOR, registry());
}

#[test]
fn operator_empty_state() {
    operator::empty_state(OPERATOR, registry());
}

#[test]
fn operator_rescale() {
    for (from, to) in RESCALINGS {
        operator::rescale(OPERATOR, registry(), from, to);
    }
}

#[test]
fn operator_snapshot_is_isolated() {
    operator::snapshot_is_isolated(OPERATOR, registry());
}

#[test]
fn operator_corrupt_snapshot_is_reported() {
    operator::corrupt_snapshot_is_reported(OPERATOR, registry());
}

#[test]
fn operator_cancelled_snapshot_leaves_nothing() {
    operator::cancelled_snapshot_leaves_nothing(OPERATOR, registry());
}

#[test]
fn operator_storage_faults_are_contained() {
    operator::storage_faults_are_contained(OPERATOR, registry());
}

#[test]
fn operator_incompatible_meta_is_rejected() {
    operator::incompatible_meta_is_rejected(OPERATOR, registry());
}

#[test]
fn operator_local_recovery() {
    operator::local_recovery(OPERATOR, registry());
}

#[test]
fn operator_passes_the_whole_kit() {
    // What a third-party backend calls; each contract above also runs on its own.
    let capabilities = OperatorBackendCapabilities {
        local_recovery: true,
    };
    operator::run_all(OPERATOR, registry(), capabilities);
}

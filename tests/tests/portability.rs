//! Savepoints are portable: a savepoint of every linked keyed backend (whatever strategy it
//! checkpoints with) restores into every linked keyed backend, with every decorator, at the
//! same and at another parallelism.

use snapstate_tests::keyed;
use state_api::{PluginKind, Registry};

fn registry() -> &'static Registry {
    // The linker drops the link-time registrations of crates nothing names.
    state_compress::link();
    state_heap::link();
    state_rocksdb::link();
    Registry::global()
}

/// Every linked keyed backend, and every backend/strategy pair of a non-default strategy.
fn sources(registry: &Registry) -> Vec<String> {
    let mut sources = registry.names(PluginKind::KeyedBackend);
    for strategy in registry.names(PluginKind::KeyedStrategy) {
        let backend = registry
            .keyed_strategy(&strategy)
            .unwrap_or_else(|e| panic!("{e}"))
            .backend();
        if strategy != backend && !strategy.ends_with("-full") {
            sources.push(format!("{backend}/{strategy}"));
        }
    }
    sources
}

fn check(compression: &str) {
    let registry = registry();
    let targets = registry.names(PluginKind::KeyedBackend);
    assert!(
        targets.len() >= 2,
        "portability needs two backends: {targets:?}"
    );
    for from in sources(registry) {
        for to in &targets {
            for (old, new) in [(1, 1), (2, 3)] {
                keyed::savepoint_portability(&from, to, registry, compression, old, new);
            }
        }
    }
}

#[test]
fn savepoints_move_between_every_backend_uncompressed() {
    check("none");
}

#[test]
fn savepoints_move_between_every_backend_with_snappy() {
    check("snappy");
}

#[test]
fn savepoints_move_between_every_backend_with_lz4() {
    check("lz4");
}

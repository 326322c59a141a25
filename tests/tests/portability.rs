//! Savepoints are portable: a savepoint of every linked keyed backend (whatever strategy it
//! checkpoints with) restores into every linked keyed backend, with every decorator, at the
//! same and at another parallelism; its timers too, each into the instance owning its key's
//! key group.

use snapstate_tests::keyed::{self, KeyedTarget};
use state_api::{PluginKind, Registry};

fn registry() -> &'static Registry {
    // The linker drops the link-time registrations of crates nothing names.
    state_compress::link();
    state_heap::link();
    state_rocksdb::link();
    Registry::global()
}

/// Every linked keyed backend with its default strategy, and every backend with each of its
/// non-default strategies, writing sections with `compression`.
fn sources<'r>(registry: &'r Registry, compression: &str) -> Vec<KeyedTarget<'r>> {
    let mut sources: Vec<KeyedTarget<'r>> = registry
        .names(PluginKind::KeyedBackend)
        .into_iter()
        .map(|backend| KeyedTarget::new(registry, backend))
        .collect();
    for strategy in registry.names(PluginKind::KeyedStrategy) {
        let backend = registry
            .keyed_strategy(&strategy)
            .unwrap_or_else(|e| panic!("{e}"))
            .backend();
        if strategy != backend && !strategy.ends_with("-full") {
            sources.push(KeyedTarget::new(registry, backend).strategy(strategy));
        }
    }
    sources
        .into_iter()
        .map(|source| source.compression(compression))
        .collect()
}

/// Every pair of (source, target) backend moves a savepoint when rescaling: its keyed
/// state, and with `timers` its timers too.
fn check(compression: &str, timers: bool) {
    let registry = registry();
    let backends = registry.names(PluginKind::KeyedBackend);
    assert!(
        backends.len() >= 2,
        "portability needs two backends: {backends:?}"
    );
    let mut targets: Vec<KeyedTarget<'_>> = backends
        .into_iter()
        .map(|backend| KeyedTarget::new(registry, backend).compression(compression))
        .collect();
    let mut sources = sources(registry, compression);
    if timers {
        // RocksDB with its timers in memory, on both sides.
        let heap_timers = KeyedTarget::new(registry, "rocksdb")
            .compression(compression)
            .option("rocksdb.timer-service.factory", "heap");
        sources.push(heap_timers.clone());
        targets.push(heap_timers);
    }
    for from in sources {
        for to in &targets {
            match timers {
                false => [(1, 1), (2, 3)].into_iter().for_each(|(old, new)| {
                    keyed::savepoint_portability(&from, to, old, new);
                }),
                true => keyed::TIMER_RESCALINGS.into_iter().for_each(|(old, new)| {
                    keyed::timer_savepoint_portability(&from, to, old, new);
                }),
            }
        }
    }
}

#[test]
fn savepoint_timers_move_between_every_backend_uncompressed() {
    check("none", true);
}

#[test]
fn savepoint_timers_move_between_every_backend_with_lz4() {
    check("lz4", true);
}

#[test]
fn savepoints_move_between_every_backend_uncompressed() {
    check("none", false);
}

#[test]
fn savepoints_move_between_every_backend_with_snappy() {
    check("snappy", false);
}

#[test]
fn savepoints_move_between_every_backend_with_lz4() {
    check("lz4", false);
}

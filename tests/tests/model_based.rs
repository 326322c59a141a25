//! Random sequences of writes, checkpoints and restores, and of timer operations,
//! checkpoints and rescaled restores, checked against a model, for every in-tree keyed
//! backend and strategy. `SNAPSTATE_PROPTEST_CASES` sets the number of sequences per
//! backend (default 16; CI keeps the default, long runs raise it).

use snapstate_tests::keyed::{self, KeyedBackendCapabilities, KeyedTarget};
use state_api::Registry;

fn registry() -> &'static Registry {
    // The linker drops the link-time registrations of crates nothing names.
    state_compress::link();
    state_heap::link();
    state_rocksdb::link();
    Registry::global()
}

fn cases() -> u32 {
    match std::env::var("SNAPSTATE_PROPTEST_CASES") {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("SNAPSTATE_PROPTEST_CASES={value} is not a number")),
        Err(_) => 16,
    }
}

#[test]
fn heap_follows_the_model() {
    let target = KeyedTarget::new(registry(), "heap").compression("lz4");
    keyed::model_based(&target, cases());
}

#[test]
fn heap_incremental_follows_the_model() {
    let target = KeyedTarget::new(registry(), "heap")
        .strategy("heap-incremental")
        .compression("snappy");
    keyed::model_based(&target, cases());
}

#[test]
fn rocksdb_full_follows_the_model() {
    let target = KeyedTarget::new(registry(), "rocksdb").compression("snappy");
    keyed::model_based(&target, cases());
}

#[test]
fn rocksdb_incremental_follows_the_model() {
    let target = KeyedTarget::new(registry(), "rocksdb").strategy("rocksdb-incremental");
    keyed::model_based(&target, cases());
}

/// Every in-tree backend and strategy restores into other numbers of instances.
const RESCALING: KeyedBackendCapabilities = KeyedBackendCapabilities {
    rescaling: true,
    local_recovery: false,
};

#[test]
fn heap_timers_follow_the_model() {
    let target = KeyedTarget::new(registry(), "heap").capabilities(RESCALING);
    keyed::timers_model(&target, cases());
}

#[test]
fn heap_incremental_timers_follow_the_model() {
    let target = KeyedTarget::new(registry(), "heap")
        .strategy("heap-incremental")
        .compression("lz4")
        .capabilities(RESCALING);
    keyed::timers_model(&target, cases());
}

#[test]
fn rocksdb_full_timers_follow_the_model() {
    let target = KeyedTarget::new(registry(), "rocksdb")
        .compression("snappy")
        .capabilities(RESCALING);
    keyed::timers_model(&target, cases());
}

#[test]
fn rocksdb_incremental_timers_follow_the_model() {
    let target = KeyedTarget::new(registry(), "rocksdb")
        .strategy("rocksdb-incremental")
        .capabilities(RESCALING);
    keyed::timers_model(&target, cases());
}

//! A short run of the fuzz targets' bodies in CI: mutations of valid snapshots and
//! arbitrary bytes never make a restore panic. `cargo fuzz` runs the same bodies for long
//! (see `fuzz/`). `SNAPSTATE_WRITE_FUZZ_CORPUS=DIR` writes the valid seeds to `DIR`.

use proptest::prelude::*;
use snapstate_tests::fuzz;
use state_api::Registry;

fn registry() -> &'static Registry {
    // The linker drops the link-time registrations of crates nothing names.
    state_compress::link();
    state_heap::link();
    state_operator::link();
    Registry::global()
}

/// Flips, cuts and splices applied to `seed`.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    prop_oneof![
        prop::collection::vec((0..len, any::<u8>()), 1..4).prop_map({
            let seed = seed.clone();
            move |flips| {
                let mut bytes = seed.clone();
                for (at, value) in flips {
                    bytes[at] = value;
                }
                bytes
            }
        }),
        (0..len).prop_map({
            let seed = seed.clone();
            move |cut| seed[..cut].to_vec()
        }),
        (0..len, prop::collection::vec(any::<u8>(), 1..16)).prop_map(move |(at, insert)| {
            let mut bytes = seed.clone();
            bytes.splice(at..at, insert);
            bytes
        }),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

#[test]
fn seeds_restore_cleanly() {
    let registry = registry();
    let seeds = [
        ("keyed_restore", fuzz::keyed_seed(registry, "heap")),
        (
            "operator_restore",
            fuzz::operator_seed(registry, "operator"),
        ),
        ("checkpoint_metadata", fuzz::metadata_seed(registry)),
        ("keyed_handle", fuzz::handle_seed(registry)),
    ];
    if let Ok(dir) = std::env::var("SNAPSTATE_WRITE_FUZZ_CORPUS") {
        for (target, seed) in &seeds {
            let dir = std::path::Path::new(&dir).join(target);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            std::fs::write(dir.join("seed"), seed).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert!(
        fuzz::keyed_restore(registry, "heap", &seeds[0].1),
        "the keyed seed restores"
    );
    assert!(
        fuzz::operator_restore(registry, "operator", &seeds[1].1),
        "the operator seed restores"
    );
    assert!(
        fuzz::metadata_restore(registry, &seeds[2].1),
        "the metadata seed restores"
    );
    assert!(
        fuzz::handle_restore(registry, &seeds[3].1),
        "the handle seed restores"
    );
    let mut cut = seeds[0].1.clone();
    cut.pop();
    assert!(
        !fuzz::keyed_restore(registry, "heap", &cut),
        "a cut keyed seed is refused"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_keyed_snapshots_never_panic(bytes in mutated(fuzz::keyed_seed(registry(), "heap"))) {
        let _restored = fuzz::keyed_restore(registry(), "heap", &bytes);
    }

    #[test]
    fn damaged_operator_snapshots_never_panic(bytes in mutated(fuzz::operator_seed(registry(), "operator"))) {
        let _restored = fuzz::operator_restore(registry(), "operator", &bytes);
    }

    #[test]
    fn damaged_checkpoint_metadata_never_panics(bytes in mutated(fuzz::metadata_seed(registry()))) {
        let _restored = fuzz::metadata_restore(registry(), &bytes);
    }

    #[test]
    fn damaged_keyed_handles_never_panic(bytes in mutated(fuzz::handle_seed(registry()))) {
        let _restored = fuzz::handle_restore(registry(), &bytes);
    }
}

//! Every linked compression decorator passes the conformance kit, and the linked set of
//! plugins is exactly the expected one.

use snapstate_tests::compression::{DecoratorCapabilities, run_all};
use state_api::{PluginKind, Registry};

fn registry() -> &'static Registry {
    state_compress::link();
    Registry::global()
}

#[test]
fn linked_plugins_are_exactly_the_in_tree_ones() {
    let registry = registry();
    assert!(
        registry.conflicts().is_empty(),
        "{:?}",
        registry.conflicts()
    );
    assert_eq!(
        registry.names(PluginKind::Compression),
        ["lz4", "none", "snappy"]
    );
}

fn check(name: &str, capabilities: DecoratorCapabilities) {
    let decorator = registry()
        .compression(name)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        decorator.name(),
        name,
        "registered under a name it does not report"
    );
    run_all(decorator.as_ref(), capabilities);
}

#[test]
fn none_conforms() {
    check("none", DecoratorCapabilities::default());
}

#[test]
fn snappy_conforms() {
    // Chunk checksums catch most changed bytes, but a chunk-type byte flipped into the
    // reserved-skippable range (0x80..=0xfd) makes the reader skip that chunk silently, and
    // the framing format has no end mark. Snapshots therefore rely on the per-key-group
    // CRC32C kept in the handle, not on the decorator.
    check(
        "snappy",
        DecoratorCapabilities {
            detects_corruption: false,
            detects_truncation: false,
        },
    );
}

#[test]
fn lz4_conforms() {
    check(
        "lz4",
        DecoratorCapabilities {
            detects_corruption: true,
            detects_truncation: true,
        },
    );
}

//! Crate-level tests: registration, and the re-exported identity decorator `none` put
//! through the conformance kit's decorator contracts, as the codecs are.

use proptest::prelude::*;
use snapstate_tests::compression::{self, DecoratorCapabilities};
use state_api::{Error, Registry, StreamCompressionDecorator};

use crate::{LZ4, SNAPPY, UNCOMPRESSED, UncompressedStreamCompressionDecorator};

#[test]
fn registered_names_are_the_names_written_into_snapshots() {
    let mut registry = Registry::default();
    crate::register(&mut registry).unwrap();
    for name in [SNAPPY, LZ4] {
        let decorator = registry.compression(name).unwrap();
        assert_eq!(decorator.name(), name);
    }
}

#[test]
fn link_time_registration_provides_the_codecs() {
    let registry = Registry::linked();
    assert!(
        registry.conflicts().is_empty(),
        "{:?}",
        registry.conflicts()
    );
    for name in [UNCOMPRESSED, SNAPPY, LZ4] {
        let decorator = registry.compression(name).unwrap();
        assert_eq!(decorator.name(), name);
    }
}

#[test]
fn registers_only_its_own_codecs() {
    let mut registry = Registry::default();
    crate::register(&mut registry).unwrap();
    let err = registry.compression(UNCOMPRESSED).unwrap_err();
    assert!(matches!(err, Error::UnknownPlugin { .. }), "{err}");
}

#[test]
fn registering_twice_is_a_duplicate() {
    let mut registry = Registry::default();
    crate::register(&mut registry).unwrap();
    let err = crate::register(&mut registry).unwrap_err();
    assert!(
        matches!(&err, Error::DuplicatePlugin { name, .. } if name == SNAPPY),
        "{err}"
    );
}

#[test]
fn none_is_re_exported_under_its_name() {
    assert_eq!(UncompressedStreamCompressionDecorator.name(), "none");
    assert_eq!(UNCOMPRESSED, "none");
}

// `none` through every decorator contract of the kit, one test per contract. The identity
// has no redundancy to check, so it claims to detect neither corruption nor truncation.
snapstate_tests::decorator_contracts!(
    none_contracts,
    UncompressedStreamCompressionDecorator,
    DecoratorCapabilities::default()
);

/// The identity has no redundancy to check, so the corruption check does not apply: a
/// flipped byte comes back flipped, and the keyed format's per-key-group checksum is what
/// catches it.
#[test]
fn none_cannot_see_corruption() {
    let mut stream = compression::compress_section(&UncompressedStreamCompressionDecorator, b"abc");
    stream[1] ^= 0xff;
    let restored =
        compression::decompress_section(&UncompressedStreamCompressionDecorator, &stream);
    assert_eq!(restored.unwrap(), [b'a', !b'b', b'c']);
}

/// Likewise every cut reads as the bytes before it; never different bytes.
#[test]
fn none_reads_a_cut_as_the_prefix_before_it() {
    let original = compression::multi_chunk_pieces().concat();
    let stream = compression::compress_section(&UncompressedStreamCompressionDecorator, &original);
    let findings = compression::truncation_at_every_byte(
        &UncompressedStreamCompressionDecorator,
        &stream,
        &original,
        Some,
    );
    assert!(findings.is_empty(), "{findings:?}");
}

proptest! {
    #[test]
    fn none_reads_arbitrary_bytes_as_they_are(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let restored = compression::arbitrary_input(&UncompressedStreamCompressionDecorator, &bytes);
        prop_assert_eq!(restored.unwrap(), bytes);
    }
}

//! Crate-level tests: registration, and the re-exported identity decorator `none` put
//! through the same checks as the codecs where they apply.

use proptest::prelude::*;
use state_api::{Error, Registry, StreamCompressionDecorator};

use crate::testkit;
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

#[test]
fn none_round_trips_empty() {
    testkit::check_round_trip(&UncompressedStreamCompressionDecorator, b"");
}

#[test]
fn none_round_trips_small() {
    testkit::check_round_trip(&UncompressedStreamCompressionDecorator, b"abc");
}

#[test]
fn none_round_trips_multi_mib_random() {
    testkit::check_round_trip(
        &UncompressedStreamCompressionDecorator,
        &testkit::pseudo_random(5 << 20, 1),
    );
}

#[test]
fn none_round_trips_multi_mib_text() {
    testkit::check_round_trip(
        &UncompressedStreamCompressionDecorator,
        &testkit::text(5 << 20),
    );
}

#[test]
fn none_reads_sections_independently() {
    testkit::check_sections(&UncompressedStreamCompressionDecorator, false);
}

/// The identity has no redundancy to check, so the corruption check does not apply: a
/// flipped byte comes back flipped, and the keyed format's per-key-group checksum is what
/// catches it.
#[test]
fn none_cannot_see_corruption() {
    let mut stream = testkit::compress(&UncompressedStreamCompressionDecorator, b"abc");
    stream[1] ^= 0xff;
    let restored = testkit::decompress(&UncompressedStreamCompressionDecorator, &stream);
    assert_eq!(restored.unwrap(), [b'a', !b'b', b'c']);
}

/// Likewise every cut reads as the bytes before it; never different bytes.
#[test]
fn none_reads_a_cut_as_the_prefix_before_it() {
    let original = testkit::multi_chunk_pieces().concat();
    let stream = testkit::compress(&UncompressedStreamCompressionDecorator, &original);
    testkit::check_truncation(
        &UncompressedStreamCompressionDecorator,
        &stream,
        &original,
        Some,
    );
}

proptest! {
    #[test]
    fn none_reads_arbitrary_bytes_as_they_are(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let restored = testkit::decompress(&UncompressedStreamCompressionDecorator, &bytes);
        prop_assert_eq!(restored.unwrap(), bytes);
    }
}

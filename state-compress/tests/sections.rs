//! Where this crate's readers leave the input: none of them reads ahead, so a section's
//! reader takes nothing of the next section, and `lz4`, whose frames end themselves, stops
//! at its section's end by itself.
//!
//! Not a contract of every decorator (a reader may buffer ahead: the keyed format seeks to
//! each section's offset anyway), so not in the conformance kit, whose
//! `sections_read_independently` checks the data the same sections read back.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use snapstate_tests::compression::{random_bytes, text_bytes};
use state_api::StreamCompressionDecorator;
use state_compress::{
    Lz4StreamCompressionDecorator, SnappyStreamCompressionDecorator,
    UncompressedStreamCompressionDecorator,
};

/// Writes several sections into one stream, each after a raw 4-byte key-group id as the
/// keyed format does, and reads each back on its own from its offset, last first, checking
/// where the reader stopped. `self_delimiting` codecs must also stop by themselves at the
/// section's end when the input goes on.
fn check_read_positions(decorator: &dyn StreamCompressionDecorator, self_delimiting: bool) {
    let sections = [
        Vec::new(),
        b"a few bytes".to_vec(),
        text_bytes(200_000),
        random_bytes(70_000, 5),
        Vec::new(),
        text_bytes(1),
    ];
    let mut stream = Vec::new();
    let mut offsets = Vec::new();
    for (key_group, section) in (0u32..).zip(&sections) {
        offsets.push(stream.len());
        stream.extend_from_slice(&key_group.to_be_bytes());
        let mut writer = decorator.compress(&mut stream);
        writer.write_all(section).expect("compressing into memory");
        writer.finish().expect("finishing a section in memory");
    }
    offsets.push(stream.len());

    for (index, section) in sections.iter().enumerate().rev() {
        let (start, end) = (offsets[index], offsets[index + 1]);
        let context = format!("{} key group {index}", decorator.name());

        let mut input = Cursor::new(&stream[..]);
        input
            .seek(SeekFrom::Start(start as u64))
            .expect("seeking in memory");
        input
            .read_exact(&mut [0; 4])
            .expect("the key-group id is in the stream");
        {
            let mut reader = decorator.decompress(&mut input);
            let mut restored = vec![0; section.len()];
            reader
                .read_exact(&mut restored)
                .unwrap_or_else(|err| panic!("{context}: {err}"));
            assert!(restored == *section, "{context}: different bytes");
            if self_delimiting {
                let mut rest = Vec::new();
                reader
                    .read_to_end(&mut rest)
                    .unwrap_or_else(|err| panic!("{context}: reading on after the section: {err}"));
                assert!(rest.is_empty(), "{context}: read on past the section");
            }
        }
        // The reader takes nothing of the next section. Without an end mark, reading the zero
        // bytes of an empty section reads nothing, not even its stream header.
        let stopped_at = usize::try_from(input.position()).expect("a position in memory");
        let header_left = !self_delimiting && section.is_empty();
        assert!(
            stopped_at == end || (header_left && stopped_at == start + 4),
            "{context}: stopped at {stopped_at}, the section is {start}..{end}"
        );
    }
}

#[test]
fn none_reads_exactly_its_section() {
    check_read_positions(&UncompressedStreamCompressionDecorator, false);
}

#[test]
fn snappy_reads_exactly_its_section() {
    check_read_positions(&SnappyStreamCompressionDecorator, false);
}

#[test]
fn lz4_stops_at_the_end_of_its_section() {
    check_read_positions(&Lz4StreamCompressionDecorator, true);
}

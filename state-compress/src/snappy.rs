//! `snappy`: key-group sections in the x-snappy-framed format.

use std::error::Error as StdError;
use std::io::{self, Read, Write};

use state_api::{CompressingWriter, StreamCompressionDecorator};

use crate::io_error::{Codec, SectionDecoder, SectionReader, Source};

/// Compresses each key-group section as one Snappy framed stream
/// (`application/x-snappy-framed`, google/snappy `framing_format.txt`), through the `snap`
/// crate's `FrameEncoder`/`FrameDecoder`.
///
/// # Compatibility with Flink
///
/// Flink's `SnappyStreamCompressionDecorator` wraps each section in xerial's
/// `SnappyFramedOutputStream` (64 KiB blocks) and reads it with `SnappyFramedInputStream`.
/// Both sides implement the same framing spec: a stream identifier chunk
/// `ff 06 00 00 73 4e 61 50 70 59`, then chunks of at most 64 KiB of uncompressed data, each
/// carrying the masked CRC-32C of its uncompressed data. So each side decodes the other's
/// sections (checked here against the spec with hand-built streams, see the tests). The
/// differences:
///
/// - xerial writes the stream identifier as soon as a stream opens, and its reader demands
///   it, failing on a section of zero bytes. `snap` writes it only with the first chunk, so
///   for an empty section this decorator writes the identifier itself; its own reader takes
///   either.
/// - A chunk is stored uncompressed here when Snappy saves less than 1/8 of it, in Flink when
///   it saves less than 15%: the two may pick different chunk types for the same data, both
///   valid.
/// - Flink reads without verifying the checksums; this decoder always verifies them.
///
/// # Section boundaries and what the format cannot see
///
/// The framing format has no end mark. A section ends where its last chunk ends; a reader
/// must know where its data stops (the keyed format's end-of-key-group mark does) or be given
/// only the section's bytes. Read past its end, the decoder goes on into the next section (a
/// stream identifier may appear mid-stream). For the same reason a cut that falls exactly
/// between two chunks reads as a shorter section; a cut anywhere else is reported as
/// [`Error::Truncated`](state_api::Error). Flipped bits in a chunk's data or checksum fail
/// the CRC and are reported as [`Error::Corrupted`](state_api::Error), except one case the
/// spec makes undetectable: a chunk type byte turned into a padding or reserved-skippable
/// type (`0x80..=0xfe`) makes the decoder skip that chunk. The keyed format's per-key-group
/// checksum catches both.
///
/// [`flush`](Write::flush) ends the current chunk early and flushes the underlying stream.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use state_api::StreamCompressionDecorator;
/// use state_compress::SnappyStreamCompressionDecorator;
///
/// let snappy = SnappyStreamCompressionDecorator;
/// let mut stream = Vec::new();
/// let mut section = snappy.compress(&mut stream);
/// section.write_all(b"key group 12, key group 12, key group 12")?;
/// section.finish()?;
/// assert_eq!(&stream[..10], b"\xff\x06\x00\x00sNaPpY");
///
/// let mut restored = Vec::new();
/// snappy.decompress(&mut &stream[..]).read_to_end(&mut restored)?;
/// assert_eq!(restored, b"key group 12, key group 12, key group 12");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SnappyStreamCompressionDecorator;

impl StreamCompressionDecorator for SnappyStreamCompressionDecorator {
    fn name(&self) -> &'static str {
        crate::SNAPPY
    }

    fn description(&self) -> &'static str {
        "snappy, x-snappy-framed with a crc-32c per chunk; reads and writes flink's snappy sections"
    }

    fn compress<'a>(&self, out: &'a mut dyn Write) -> Box<dyn CompressingWriter + 'a> {
        Box::new(SnappySectionWriter {
            encoder: snap::write::FrameEncoder::new(out),
            wrote_data: false,
        })
    }

    fn decompress<'a>(&self, input: &'a mut dyn Read) -> Box<dyn Read + 'a> {
        let decoder = snap::read::FrameDecoder::new(Source::new(input));
        Box::new(SectionReader::new(decoder, &CODEC))
    }
}

/// The chunk every framed stream starts with: type `0xff`, length 6, `sNaPpY`.
const STREAM_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";

static CODEC: Codec = Codec {
    what: "snappy compressed section",
    truncated: "the stream ends inside a chunk",
    describe,
};

fn describe(error: &(dyn StdError + Send + Sync + 'static)) -> Option<String> {
    let text = error.downcast_ref::<snap::Error>()?.to_string();
    // snap prefixes every message with the codec name, which `what` already gives.
    Some(match text.strip_prefix("snappy: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

impl<R: Read> SectionDecoder for snap::read::FrameDecoder<R> {
    fn ended_early(&self) -> bool {
        // No end mark: an end of input between two chunks is indistinguishable from the end
        // of the section, and one inside a chunk already failed with `UnexpectedEof`.
        false
    }
}

struct SnappySectionWriter<'a> {
    encoder: snap::write::FrameEncoder<&'a mut dyn Write>,
    /// Whether any data went in, after which `snap` writes the stream identifier itself.
    wrote_data: bool,
}

impl Write for SnappySectionWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.encoder.write(buf)?;
        self.wrote_data |= written > 0;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        // snap's flush writes the pending chunk but leaves the underlying writer alone.
        self.encoder.flush()?;
        self.encoder.get_mut().flush()
    }
}

impl CompressingWriter for SnappySectionWriter<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let out = self
            .encoder
            .into_inner()
            .map_err(snap::write::IntoInnerError::into_error)?;
        if !self.wrote_data {
            out.write_all(STREAM_IDENTIFIER)?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use proptest::prelude::*;
    use snapstate_tests::compression::{self, DecoratorCapabilities, assert_findings_about};
    use state_api::Error;

    use super::*;

    const WHAT: &str = "snappy compressed section";
    /// Spelled out again, byte by byte from the spec, rather than taken from the code.
    const IDENTIFIER: &[u8] = &[0xff, 0x06, 0x00, 0x00, 0x73, 0x4e, 0x61, 0x50, 0x70, 0x59];

    // Every decorator contract of the kit, one test per contract. The framing format has no
    // end mark, and a chunk type turned skippable hides a chunk (see below).
    snapstate_tests::decorator_contracts!(
        contracts,
        SnappyStreamCompressionDecorator,
        DecoratorCapabilities {
            detects_corruption: false,
            detects_truncation: false,
        }
    );

    /// CRC-32C (Castagnoli, reflected, polynomial 0x82f63b78), bit by bit: slow, obviously
    /// right, and independent of the codec crates' own tables.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// The masked CRC-32C the Snappy framing format stores per chunk.
    fn crc32c_masked(data: &[u8]) -> u32 {
        crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
    }

    /// One chunk of a framed stream, as the spec lays it out.
    #[derive(Debug)]
    struct Chunk {
        kind: u8,
        /// Where the chunk (header included) sits in the compressed stream.
        bytes: Range<usize>,
        /// Which part of the uncompressed data it carries.
        data: Range<usize>,
    }

    /// Walks the chunk headers of a well-formed framed stream.
    fn chunks(stream: &[u8]) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let (mut at, mut data_end) = (0, 0);
        while at < stream.len() {
            let kind = stream[at];
            let len = usize::from(stream[at + 1])
                | usize::from(stream[at + 2]) << 8
                | usize::from(stream[at + 3]) << 16;
            let body = &stream[at + 4..at + 4 + len];
            let data_len = match kind {
                0x00 => snap::raw::decompress_len(&body[4..]).unwrap(),
                0x01 => len - 4,
                _ => 0,
            };
            chunks.push(Chunk {
                kind,
                bytes: at..at + 4 + len,
                data: data_end..data_end + data_len,
            });
            at += 4 + len;
            data_end += data_len;
        }
        chunks
    }

    /// A stream of several small chunks of both types, with the data it carries.
    fn multi_chunk_stream() -> (Vec<u8>, Vec<u8>) {
        let pieces = compression::multi_chunk_pieces();
        let stream = compression::compress_pieces(&SnappyStreamCompressionDecorator, &pieces);
        let kinds: Vec<u8> = chunks(&stream).iter().map(|chunk| chunk.kind).collect();
        assert_eq!(
            kinds,
            [0xff, 0x00, 0x01, 0x01, 0x00],
            "chunk layout changed"
        );
        (stream, pieces.concat())
    }

    /// As xerial does, whose reader fails on a section without the identifier.
    #[test]
    fn empty_section_is_the_stream_identifier() {
        let stream = compression::compress_section(&SnappyStreamCompressionDecorator, b"");
        assert_eq!(stream, IDENTIFIER);
        let stream = compression::compress_pieces(&SnappyStreamCompressionDecorator, &[Vec::new()]);
        assert_eq!(stream, IDENTIFIER);
    }

    #[test]
    fn reads_a_section_of_zero_bytes_as_empty() {
        let restored = compression::decompress_section(&SnappyStreamCompressionDecorator, b"");
        assert_eq!(restored.unwrap(), b"");
    }

    #[test]
    fn writes_spec_conformant_chunks() {
        let data = [
            compression::text_bytes(300_000),
            compression::random_bytes(200_000, 2),
        ]
        .concat();
        let stream = compression::compress_section(&SnappyStreamCompressionDecorator, &data);
        assert!(stream.starts_with(IDENTIFIER), "{:x?}", &stream[..10]);
        let chunks = chunks(&stream);
        assert_eq!(chunks.last().unwrap().data.end, data.len());
        for chunk in &chunks[1..] {
            let body = &stream[chunk.bytes.start + 4..chunk.bytes.end];
            let crc = u32::from_le_bytes(body[..4].try_into().unwrap());
            let data_in_chunk = match chunk.kind {
                0x00 => snap::raw::Decoder::new()
                    .decompress_vec(&body[4..])
                    .unwrap(),
                0x01 => body[4..].to_vec(),
                kind => panic!("unexpected chunk type {kind:#04x}"),
            };
            assert!(data_in_chunk.len() <= 64 << 10, "{chunk:?}");
            assert!(data_in_chunk == data[chunk.data.clone()], "{chunk:?}");
            assert_eq!(crc, crc32c_masked(&data_in_chunk), "{chunk:?}");
        }
        let kinds: Vec<u8> = chunks.iter().map(|chunk| chunk.kind).collect();
        assert!(kinds.contains(&0x00) && kinds.contains(&0x01), "{kinds:x?}");
    }

    /// A stream built by hand from the spec, as another writer (xerial's) may lay it out:
    /// an uncompressed chunk, padding, a reserved skippable chunk, a second stream identifier
    /// (concatenated streams) and a compressed chunk with a literal and a back-reference.
    #[test]
    fn decodes_a_foreign_framed_stream() {
        fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
            let len = u32::try_from(body.len()).unwrap().to_le_bytes();
            [&[kind], &len[..3], body].concat()
        }
        let plain = b"hello, flink";
        // Raw snappy for "abcabcabcabc": length 12, literal "abc", copy 9 bytes from 3 back.
        let compressed = [0x0c, 0x08, b'a', b'b', b'c', 0x15, 0x03];
        let stream = [
            IDENTIFIER.to_vec(),
            chunk(
                0x01,
                &[&crc32c_masked(plain).to_le_bytes()[..], plain].concat(),
            ),
            chunk(0xfe, &[0; 5]),
            chunk(0x80, b"skip"),
            IDENTIFIER.to_vec(),
            chunk(
                0x00,
                &[
                    &crc32c_masked(b"abcabcabcabc").to_le_bytes()[..],
                    &compressed,
                ]
                .concat(),
            ),
        ]
        .concat();
        let restored = compression::decompress_section(&SnappyStreamCompressionDecorator, &stream);
        assert_eq!(restored.unwrap(), b"hello, flinkabcabcabcabc");
    }

    #[test]
    fn decodes_xerial_empty_section() {
        let restored =
            compression::decompress_section(&SnappyStreamCompressionDecorator, IDENTIFIER);
        assert_eq!(restored.unwrap(), b"");
    }

    #[test]
    fn rejects_a_wrong_checksum_in_a_foreign_stream() {
        let plain = b"hello";
        let wrong = crc32c_masked(plain) ^ 1;
        let stream = [IDENTIFIER, &[0x01, 9, 0, 0], &wrong.to_le_bytes(), plain].concat();
        let err = compression::decompress_section(&SnappyStreamCompressionDecorator, &stream)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Corrupted { what, .. } if what == WHAT),
            "{err}"
        );
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn rejects_a_stream_without_identifier() {
        let plain = b"hello";
        let stream = [
            &[0x01, 9, 0, 0],
            &crc32c_masked(plain).to_le_bytes()[..],
            plain,
        ]
        .concat();
        let err = compression::decompress_section(&SnappyStreamCompressionDecorator, &stream)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Corrupted { what, .. } if what == WHAT),
            "{err}"
        );
    }

    /// Documents the missing end mark: unbounded, a section's reader runs on into the next
    /// section, so readers stop at their own end-of-key-group mark or get a bounded input.
    #[test]
    fn reads_on_into_the_next_section_when_unbounded() {
        let mut stream = compression::compress_section(&SnappyStreamCompressionDecorator, b"first");
        stream.extend(compression::compress_section(
            &SnappyStreamCompressionDecorator,
            b"second",
        ));
        let restored = compression::decompress_section(&SnappyStreamCompressionDecorator, &stream);
        assert_eq!(restored.unwrap(), b"firstsecond");
    }

    /// What a flip of `position` to `byte` decodes to when the format cannot see it: the
    /// spec tells decoders to skip padding (0xfe) and reserved 0x80..=0xfd chunks, so a data
    /// chunk whose type byte became one of these vanishes.
    fn skipped_chunk(stream: &[u8], original: &[u8], position: usize, byte: u8) -> Option<Vec<u8>> {
        let chunks = chunks(stream);
        let chunk = chunks.iter().find(|chunk| chunk.bytes.start == position)?;
        let skipped = chunk.kind != 0xff && (0x80..=0xfe).contains(&byte);
        skipped.then(|| [&original[..chunk.data.start], &original[chunk.data.end..]].concat())
    }

    /// The CRC covers the uncompressed data, so a flip that only re-encodes the same data
    /// (a copy offset moved to an identical earlier run) passes, harmlessly; the check allows it.
    #[test]
    fn detects_corruption_except_chunks_turned_skippable() {
        let (stream, original) = multi_chunk_stream();
        let report = compression::corruption_at_every_byte(
            &SnappyStreamCompressionDecorator,
            &stream,
            |position, byte| skipped_chunk(&stream, &original, position, byte),
        );
        assert_findings_about(WHAT, &report.findings);
    }

    #[test]
    fn a_chunk_turned_skippable_is_skipped() {
        let (mut stream, original) = multi_chunk_stream();
        let chunk = chunks(&stream).swap_remove(2);
        assert_eq!(chunk.kind, 0x01);
        stream[chunk.bytes.start] = 0x81;
        let restored =
            compression::decompress_section(&SnappyStreamCompressionDecorator, &stream).unwrap();
        let expected = [&original[..chunk.data.start], &original[chunk.data.end..]].concat();
        assert!(restored == expected, "{} bytes read", restored.len());
    }

    #[test]
    fn detects_corruption_in_a_large_stream() {
        let original = [
            compression::text_bytes(150_000),
            compression::random_bytes(150_000, 3),
        ]
        .concat();
        let stream = compression::compress_section(&SnappyStreamCompressionDecorator, &original);
        let report = compression::corruption_at_every_byte(
            &SnappyStreamCompressionDecorator,
            &stream,
            |position, byte| skipped_chunk(&stream, &original, position, byte),
        );
        assert_findings_about(WHAT, &report.findings);
    }

    #[test]
    fn truncation_is_reported_or_ends_on_a_chunk_boundary() {
        let (stream, original) = multi_chunk_stream();
        let chunks = chunks(&stream);
        let findings = compression::truncation_at_every_byte(
            &SnappyStreamCompressionDecorator,
            &stream,
            &original,
            |cut| {
                if cut == 0 {
                    return Some(0);
                }
                let chunk = chunks.iter().find(|chunk| chunk.bytes.end == cut)?;
                Some(chunk.data.end)
            },
        );
        assert_findings_about(WHAT, &findings);
    }

    #[test]
    fn failure_is_latched() {
        let (mut stream, _) = multi_chunk_stream();
        let second_chunk = chunks(&stream)[1].bytes.clone();
        stream[second_chunk.end - 1] ^= 0x55;
        let failure = compression::failure_is_latched(&SnappyStreamCompressionDecorator, &stream);
        assert_findings_about(WHAT, [&failure]);
    }

    #[test]
    fn crc32c_helper_matches_the_check_value() {
        // The standard CRC-32C check value, so the hand-built streams above are trustworthy.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    // Arbitrary bytes, arbitrary data and changed sections in general are the kit's
    // contracts (`contracts` above); these also check what the findings name, and feed
    // arbitrary chunks behind a valid stream identifier.
    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let outcome = compression::arbitrary_input(&SnappyStreamCompressionDecorator, &bytes);
            assert_findings_about(WHAT, outcome.as_ref().err());
        }

        #[test]
        fn arbitrary_chunks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let stream = [IDENTIFIER, &bytes].concat();
            let outcome = compression::arbitrary_input(&SnappyStreamCompressionDecorator, &stream);
            assert_findings_about(WHAT, outcome.as_ref().err());
        }

        #[test]
        fn mutated_streams_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..8),
        ) {
            let outcome = compression::mutated_section(&SnappyStreamCompressionDecorator, &data, &flips);
            assert_findings_about(WHAT, outcome.as_ref().and_then(|outcome| outcome.as_ref().err()));
        }
    }
}

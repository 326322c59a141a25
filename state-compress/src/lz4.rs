//! `lz4`: key-group sections as LZ4 frames with block and content checksums.

use std::error::Error as StdError;
use std::io::{self, Read, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameInfo};
use state_api::{CompressingWriter, StreamCompressionDecorator};

use crate::io_error::{Codec, SectionDecoder, SectionReader, Source};

/// Compresses each key-group section as one LZ4 frame (lz4 `lz4_Frame_format.md`, readable
/// by `lz4 -d`), through the `lz4_flex` crate.
///
/// # Frame settings
///
/// - 64 KiB blocks, compressed independently: the format's smallest block size, the same as
///   Snappy's chunks, and the memory a section costs on either side (one block of input and
///   one of output) stays small however many sections a snapshot writes. Key-group sections
///   are often small, where larger blocks gain nothing. The block size is recorded in each
///   frame's descriptor, so changing it later keeps old snapshots readable.
/// - Block checksums and the content checksum (xxHash32) are on, so corruption is detected:
///   a bad block fails its checksum before it is decompressed, and the content checksum at
///   the end mark covers what block checksums cannot see (a flipped "stored uncompressed"
///   bit). The content size is not recorded (it is not known when the section starts).
///
/// Unlike the Snappy framing format, a frame has an end mark: the reader stops by itself at
/// the end of its section, and every cut of a section, even one between two blocks, is
/// reported as [`Error::Truncated`](state_api::Error). Corruption is reported as
/// [`Error::Corrupted`](state_api::Error). As with any streaming codec, bytes of earlier,
/// intact blocks reach the caller before a later block fails.
///
/// [`finish`](CompressingWriter::finish) writes the end mark and content checksum; a section
/// dropped without it reads as truncated. [`flush`](Write::flush) ends the current block
/// early and flushes the underlying stream.
///
/// Flink's own snapshot compression is Snappy only; an LZ4 decorator found in a Flink
/// branch wraps lz4-java's `LZ4BlockOutputStream`, whose `LZ4Block` format is not the LZ4
/// frame format, so sections written here are not readable by it, nor the other way round.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use state_api::StreamCompressionDecorator;
/// use state_compress::Lz4StreamCompressionDecorator;
///
/// let lz4 = Lz4StreamCompressionDecorator;
/// let mut stream = Vec::new();
/// let mut section = lz4.compress(&mut stream);
/// section.write_all(b"key group 5, key group 5, key group 5")?;
/// section.finish()?;
/// assert_eq!(&stream[..4], &[0x04, 0x22, 0x4d, 0x18]); // the lz4 frame magic number
///
/// // The frame ends itself: bytes after the section are left alone.
/// stream.extend_from_slice(b"next section");
/// let mut input = &stream[..];
/// let mut restored = Vec::new();
/// lz4.decompress(&mut input).read_to_end(&mut restored)?;
/// assert_eq!(restored, b"key group 5, key group 5, key group 5");
/// assert_eq!(input, b"next section");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Lz4StreamCompressionDecorator;

impl Lz4StreamCompressionDecorator {
    fn frame_info() -> FrameInfo {
        FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Independent)
            .block_checksums(true)
            .content_checksum(true)
    }
}

impl StreamCompressionDecorator for Lz4StreamCompressionDecorator {
    fn name(&self) -> &'static str {
        crate::LZ4
    }

    fn description(&self) -> &'static str {
        "lz4 frame format, 64 KiB independent blocks, block and content checksums"
    }

    fn compress<'a>(&self, out: &'a mut dyn Write) -> Box<dyn CompressingWriter + 'a> {
        Box::new(Lz4SectionWriter {
            encoder: lz4_flex::frame::FrameEncoder::with_frame_info(Self::frame_info(), out),
        })
    }

    fn decompress<'a>(&self, input: &'a mut dyn Read) -> Box<dyn Read + 'a> {
        let decoder = lz4_flex::frame::FrameDecoder::new(Source::new(input));
        Box::new(SectionReader::new(decoder, &CODEC))
    }
}

static CODEC: Codec = Codec {
    what: "lz4 compressed section",
    truncated: "the stream ends before the frame's end mark",
    describe,
};

/// lz4_flex's own messages are its variant names; these say what was found.
fn describe(error: &(dyn StdError + Send + Sync + 'static)) -> Option<String> {
    use lz4_flex::frame::Error as Lz4Error;

    let reason = match error.downcast_ref::<Lz4Error>()? {
        Lz4Error::DecompressionError(error) => format!("malformed block: {error}"),
        Lz4Error::WrongMagicNumber => "not an lz4 frame (wrong magic number)".to_owned(),
        Lz4Error::UnsupportedBlocksize(code) => format!("unsupported block size code {code}"),
        Lz4Error::UnsupportedVersion(bits) => format!("unsupported frame version bits {bits:#04x}"),
        Lz4Error::ReservedBitsSet => "reserved bits set in the frame descriptor".to_owned(),
        Lz4Error::InvalidBlockInfo => "malformed block header".to_owned(),
        Lz4Error::BlockTooBig => "block larger than the frame's maximum block size".to_owned(),
        Lz4Error::HeaderChecksumError => "frame descriptor checksum mismatch".to_owned(),
        Lz4Error::BlockChecksumError => "block checksum mismatch".to_owned(),
        Lz4Error::ContentChecksumError => "content checksum mismatch".to_owned(),
        Lz4Error::SkippableFrame(len) => format!("unexpected skippable frame of {len} bytes"),
        Lz4Error::DictionaryNotSupported => "frame needs an external dictionary".to_owned(),
        Lz4Error::ContentLengthError { expected, actual } => {
            format!("content is {actual} bytes, the frame descriptor says {expected}")
        }
        other => format!("{other}"),
    };
    Some(reason)
}

impl<R: Read> SectionDecoder for lz4_flex::frame::FrameDecoder<Source<R>> {
    fn ended_early(&self) -> bool {
        // lz4_flex reports an input that ends where a block header should be as a clean end
        // of data; the frame only really ended if the end mark was read, which never reads
        // past the content checksum, so an input that ran dry means a cut.
        self.get_ref().ended()
    }
}

struct Lz4SectionWriter<'a> {
    encoder: lz4_flex::frame::FrameEncoder<&'a mut dyn Write>,
}

impl Write for Lz4SectionWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // lz4_flex's flush writes the pending block but leaves the underlying writer alone.
        self.encoder.flush()?;
        self.encoder.get_mut().flush()
    }
}

impl CompressingWriter for Lz4SectionWriter<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let out = self.encoder.finish().map_err(io::Error::from)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use proptest::prelude::*;
    use snapstate_tests::compression::{self, DecoratorCapabilities, assert_findings_about};
    use state_api::Error;

    use super::*;

    const WHAT: &str = "lz4 compressed section";

    // Every decorator contract of the kit, one test per contract: block and content
    // checksums and the end mark let it claim both.
    snapstate_tests::decorator_contracts!(
        contracts,
        Lz4StreamCompressionDecorator,
        DecoratorCapabilities {
            detects_corruption: true,
            detects_truncation: true,
        }
    );

    /// A frame of several small blocks, stored both compressed and uncompressed, with the
    /// data it carries.
    fn multi_block_stream() -> (Vec<u8>, Vec<u8>) {
        let pieces = compression::multi_chunk_pieces();
        let stream = compression::compress_pieces(&Lz4StreamCompressionDecorator, &pieces);
        (stream, pieces.concat())
    }

    #[test]
    fn writes_the_configured_frame_descriptor() {
        let stream = compression::compress_section(&Lz4StreamCompressionDecorator, b"");
        // magic, FLG = version 01 | independent blocks | block checksums | content checksum,
        // BD = 64 KiB blocks, then the descriptor checksum.
        assert_eq!(&stream[..6], &[0x04, 0x22, 0x4d, 0x18, 0x74, 0x40]);
        // descriptor checksum, end mark, content checksum of nothing.
        assert_eq!(stream.len(), 7 + 4 + 4, "{stream:x?}");
        assert_eq!(&stream[7..11], &[0, 0, 0, 0]);
    }

    #[test]
    fn detects_corruption_at_every_position() {
        let (stream, _) = multi_block_stream();
        let report = compression::corruption_at_every_byte(
            &Lz4StreamCompressionDecorator,
            &stream,
            |_, _| None,
        );
        // Block checksums cover the compressed bytes, so not even a harmless flip passes.
        assert_eq!(report.same_data, 0);
        assert_findings_about(WHAT, &report.findings);
    }

    #[test]
    fn detects_corruption_in_a_large_stream() {
        let data = [
            compression::text_bytes(150_000),
            compression::random_bytes(150_000, 3),
        ]
        .concat();
        let stream = compression::compress_section(&Lz4StreamCompressionDecorator, &data);
        let report = compression::corruption_at_every_byte(
            &Lz4StreamCompressionDecorator,
            &stream,
            |_, _| None,
        );
        // Block checksums cover the compressed bytes, so not even a harmless flip passes.
        assert_eq!(report.same_data, 0);
        assert_findings_about(WHAT, &report.findings);
    }

    #[test]
    fn reports_every_truncation() {
        let (stream, original) = multi_block_stream();
        let findings = compression::truncation_at_every_byte(
            &Lz4StreamCompressionDecorator,
            &stream,
            &original,
            |_| None,
        );
        assert_findings_about(WHAT, &findings);
    }

    #[test]
    fn reports_a_truncated_empty_section() {
        let stream = compression::compress_section(&Lz4StreamCompressionDecorator, b"");
        let findings = compression::truncation_at_every_byte(
            &Lz4StreamCompressionDecorator,
            &stream,
            b"",
            |_| None,
        );
        assert_findings_about(WHAT, &findings);
    }

    #[test]
    fn section_dropped_without_finish_reads_as_truncated() {
        let mut stream = Vec::new();
        {
            let mut section = Lz4StreamCompressionDecorator.compress(&mut stream);
            section.write_all(b"never finished").unwrap();
            section.flush().unwrap();
        }
        let err =
            compression::decompress_section(&Lz4StreamCompressionDecorator, &stream).unwrap_err();
        assert!(
            matches!(&err, Error::Truncated { what, .. } if what == WHAT),
            "{err}"
        );
    }

    #[test]
    fn failure_is_latched() {
        let (mut stream, _) = multi_block_stream();
        // A byte inside the first block's data: its block checksum fails.
        stream[7 + 4 + 10] ^= 0x55;
        let failure = compression::failure_is_latched(&Lz4StreamCompressionDecorator, &stream);
        assert_findings_about(WHAT, [&failure]);
    }

    #[test]
    fn reasons_are_lowercase_descriptions() {
        let mut stream = compression::compress_section(
            &Lz4StreamCompressionDecorator,
            &compression::text_bytes(1000),
        );
        let last = stream.len() - 1;
        stream[last] ^= 1;
        let err =
            compression::decompress_section(&Lz4StreamCompressionDecorator, &stream).unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupted lz4 compressed section: content checksum mismatch"
        );
    }

    #[test]
    fn stops_at_the_end_mark_when_read_again() {
        let mut stream = compression::compress_section(&Lz4StreamCompressionDecorator, b"first");
        stream.extend(compression::compress_section(
            &Lz4StreamCompressionDecorator,
            b"second",
        ));
        let mut input = &stream[..];
        let mut reader = Lz4StreamCompressionDecorator.decompress(&mut input);
        let mut restored = Vec::new();
        reader.read_to_end(&mut restored).unwrap();
        // lz4_flex alone would start on the next frame here.
        reader.read_to_end(&mut restored).unwrap();
        assert_eq!(restored, b"first");
    }

    // Arbitrary bytes, arbitrary data and changed sections in general are the kit's
    // contracts (`contracts` above); these also check what the findings name, and feed
    // arbitrary blocks behind a valid frame descriptor.
    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let outcome = compression::arbitrary_input(&Lz4StreamCompressionDecorator, &bytes);
            assert_findings_about(WHAT, outcome.as_ref().err());
        }

        #[test]
        fn arbitrary_blocks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let header = compression::compress_section(&Lz4StreamCompressionDecorator, b"");
            let stream = [&header[..7], &bytes].concat();
            let outcome = compression::arbitrary_input(&Lz4StreamCompressionDecorator, &stream);
            assert_findings_about(WHAT, outcome.as_ref().err());
        }

        #[test]
        fn mutated_streams_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..8),
        ) {
            let outcome = compression::mutated_section(&Lz4StreamCompressionDecorator, &data, &flips);
            assert_findings_about(WHAT, outcome.as_ref().and_then(|outcome| outcome.as_ref().err()));
        }
    }
}

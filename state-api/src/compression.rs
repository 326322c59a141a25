//! The stream compression decorator contract, and the identity decorator `none`.

use std::fmt;
use std::io::{self, Read, Write};

/// Name of the identity decorator, [`UncompressedStreamCompressionDecorator`].
pub const UNCOMPRESSED: &str = "none";

/// A compressing writer over one section.
pub trait CompressingWriter: Write {
    /// Flushes all buffered data and writes the codec's end-of-section bytes to the
    /// underlying stream, which stays open. Dropping the writer without calling this leaves
    /// an incomplete section.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// Wraps key-group sections of a snapshot stream in a compression codec.
///
/// The writer of a snapshot opens a compressing writer over the raw checkpoint stream at
/// the start of each key group and [`finish`](CompressingWriter::finish)es it at the end,
/// so every key group can be read on its own by seeking to its offset and opening a
/// decompressing reader there; the decorator never closes or finishes the underlying stream.
/// The [`name`](Self::name) written into the snapshot header picks the same decorator from
/// the [`Registry`](crate::Registry) on restore.
///
/// Decorators detect corruption as far as their codec can (checksums, malformed frames) and
/// report it as an `io::Error` of kind `InvalidData` carrying an [`Error::Corrupted`](crate::Error)
/// (`UnexpectedEof` with [`Error::Truncated`](crate::Error) for input cut short inside a
/// frame). A cut exactly between two frames is invisible to a framing format; the canonical
/// keyed format catches it with its end-of-key-group mark and per-key-group checksum.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use state_api::{StreamCompressionDecorator, UncompressedStreamCompressionDecorator};
///
/// let decorator = UncompressedStreamCompressionDecorator;
/// let mut stream = Vec::new();
/// let mut section = decorator.compress(&mut stream);
/// section.write_all(b"key group 7").unwrap();
/// section.finish().unwrap();
///
/// let mut input = &stream[..];
/// let mut restored = Vec::new();
/// decorator.decompress(&mut input).read_to_end(&mut restored).unwrap();
/// assert_eq!(restored, b"key group 7");
/// ```
pub trait StreamCompressionDecorator: Send + Sync + fmt::Debug + 'static {
    /// The registered name, written into snapshot headers (`none`, `snappy`, `lz4`, ...).
    fn name(&self) -> &'static str;

    /// One line for listings.
    fn description(&self) -> &'static str;

    /// Opens a compressing writer for one section over `out`.
    fn compress<'a>(&self, out: &'a mut dyn Write) -> Box<dyn CompressingWriter + 'a>;

    /// Opens a decompressing reader for one section starting at the current position of `input`.
    fn decompress<'a>(&self, input: &'a mut dyn Read) -> Box<dyn Read + 'a>;
}

/// The identity decorator: sections are stored as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct UncompressedStreamCompressionDecorator;

impl StreamCompressionDecorator for UncompressedStreamCompressionDecorator {
    fn name(&self) -> &'static str {
        UNCOMPRESSED
    }

    fn description(&self) -> &'static str {
        "no compression: key-group sections are stored as written"
    }

    fn compress<'a>(&self, out: &'a mut dyn Write) -> Box<dyn CompressingWriter + 'a> {
        Box::new(Passthrough(out))
    }

    fn decompress<'a>(&self, input: &'a mut dyn Read) -> Box<dyn Read + 'a> {
        Box::new(input)
    }
}

struct Passthrough<'a>(&'a mut dyn Write);

impl Write for Passthrough<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl CompressingWriter for Passthrough<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

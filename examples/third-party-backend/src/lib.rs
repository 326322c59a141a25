//! A third-party snapstate plugin, the starting point for plugin authors: a key-group
//! compression decorator named `deflate` (zlib streams through `flate2`), written against
//! `state-api` alone.
//!
//! What makes it a plugin, in the order a plugin author writes it:
//!
//! 1. a type implementing the contract ([`DeflateStreamCompressionDecorator`], a
//!    [`StreamCompressionDecorator`]) with a name that is stable forever (`deflate`: it is
//!    written into every snapshot header and picks the decorator on restore);
//! 2. [`register`], which adds it to a [`Registry`](state_api::Registry), submitted for
//!    link-time registration with [`state_api::submit_registration!`];
//! 3. [`link`], which binaries and tests call so the linker keeps the registration;
//! 4. tests that run the conformance kit on it (`tests/conformance.rs`) and pick it by name
//!    from configuration.
//!
//! Applications then select it with `execution.checkpointing.snapshot-compression =
//! "deflate"`.
//!
//! # Format
//!
//! Each key-group section is one zlib stream (RFC 1950: deflate data and an Adler-32 of the
//! uncompressed bytes), so a section ends itself and a cut section is reported as
//! truncated. Adler-32 is weak; snapshots also carry a CRC-32C per key group, which the
//! reader checks whatever the decorator.

use std::io::{self, Read, Write};

use state_api::{CompressingWriter, Error, StreamCompressionDecorator};

/// The decorator's registered name, written into snapshot headers.
pub const DEFLATE: &str = "deflate";

/// Compresses each key-group section as one zlib stream.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use snapstate_example_deflate::DeflateStreamCompressionDecorator;
/// use state_api::StreamCompressionDecorator;
///
/// let deflate = DeflateStreamCompressionDecorator;
/// let mut stream = Vec::new();
/// let mut section = deflate.compress(&mut stream);
/// section.write_all(&b"key group 3 ".repeat(100))?;
/// section.finish()?;
/// assert!(stream.len() < 100);
/// let mut back = Vec::new();
/// deflate.decompress(&mut stream.as_slice()).read_to_end(&mut back)?;
/// assert_eq!(back, b"key group 3 ".repeat(100));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DeflateStreamCompressionDecorator;

struct Section<'a> {
    encoder: flate2::write::ZlibEncoder<&'a mut dyn Write>,
}

impl Write for Section<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

impl CompressingWriter for Section<'_> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        self.encoder.finish()?.flush()
    }
}

/// Reads one zlib section and maps the codec's complaints onto the contract's errors.
struct SectionReader<'a> {
    decoder: flate2::read::ZlibDecoder<&'a mut dyn Read>,
}

impl Read for SectionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf).map_err(|err| {
            let what = "deflate section".to_owned();
            let reason = err.to_string();
            match err.kind() {
                io::ErrorKind::UnexpectedEof => Error::Truncated { what, reason }.into_io(),
                _ => Error::Corrupted { what, reason }.into_io(),
            }
        })
    }
}

impl StreamCompressionDecorator for DeflateStreamCompressionDecorator {
    fn name(&self) -> &'static str {
        DEFLATE
    }

    fn description(&self) -> &'static str {
        "zlib (deflate + adler-32) per key-group section, through flate2"
    }

    fn compress<'a>(&self, out: &'a mut dyn Write) -> Box<dyn CompressingWriter + 'a> {
        Box::new(Section {
            encoder: flate2::write::ZlibEncoder::new(out, flate2::Compression::fast()),
        })
    }

    fn decompress<'a>(&self, input: &'a mut dyn Read) -> Box<dyn Read + 'a> {
        Box::new(SectionReader {
            decoder: flate2::read::ZlibDecoder::new(input),
        })
    }
}

/// Registers decorator `deflate` in `registry`.
///
/// # Errors
///
/// [`Error::DuplicatePlugin`](state_api::Error) if the name is taken.
pub fn register(registry: &mut state_api::Registry) -> state_api::Result<()> {
    registry.register_compression(DeflateStreamCompressionDecorator)
}

state_api::submit_registration!(register);

/// Does nothing; call it from binaries and tests so the linker keeps this crate's
/// link-time registration.
pub fn link() {}

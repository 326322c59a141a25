//! Stream compression decorators for snapstate snapshots.
//!
//! A [`StreamCompressionDecorator`](state_api::StreamCompressionDecorator) wraps each
//! key-group section of a snapshot stream in a codec, so every key group can still be read
//! on its own by seeking to its offset. This crate provides the codecs; the contract, and
//! the identity decorator, live in `state-api`.
//!
//! | name | type | format |
//! | --- | --- | --- |
//! | `none` ([`UNCOMPRESSED`]) | [`UncompressedStreamCompressionDecorator`] | the bytes as written |
//! | `snappy` ([`SNAPPY`]) | [`SnappyStreamCompressionDecorator`] | x-snappy-framed, readable by Flink's Snappy decorator and back |
//! | `lz4` ([`LZ4`]) | [`Lz4StreamCompressionDecorator`] | LZ4 frame with block and content checksums |
//!
//! The decorator's name is written into the snapshot header. Restore reads that name and
//! looks the decorator up in the [`Registry`](state_api::Registry), so a snapshot is always
//! read with the codec that wrote it, whatever the current configuration says.
//!
//! `none` lives in `state-api` so that a backend works without linking any codec; it is
//! re-exported here so one `use state_compress::...` names all three. [`register`] adds
//! `snappy` and `lz4` (state-api registers `none` itself), and the crate submits the same
//! function for link-time registration: a binary or test that only looks decorators up by
//! name must still reference this crate, for instance by calling [`link`].
//!
//! Corrupt or cut-short sections come out of the decompressing reader as `io::Error`s
//! carrying [`Error::Corrupted`](state_api::Error) (kind `InvalidData`) or
//! [`Error::Truncated`](state_api::Error) (kind `UnexpectedEof`); the decoders never panic
//! on any input.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use state_api::Registry;
//!
//! let mut registry = Registry::default();
//! state_compress::register(&mut registry)?;
//!
//! // Writing: the name goes into the header, the section through the decorator.
//! let decorator = registry.compression(state_compress::LZ4)?;
//! let mut stream = Vec::new();
//! let mut section = decorator.compress(&mut stream);
//! section.write_all(b"key group 3")?;
//! section.finish()?;
//!
//! // Restoring: the name read back from the header picks the decorator.
//! let decorator = registry.compression("lz4")?;
//! let mut input = &stream[..];
//! let mut restored = Vec::new();
//! decorator.decompress(&mut input).read_to_end(&mut restored)?;
//! assert_eq!(restored, b"key group 3");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod io_error;
mod lz4;
mod snappy;

#[cfg(test)]
mod tests;

pub use lz4::Lz4StreamCompressionDecorator;
pub use snappy::SnappyStreamCompressionDecorator;
pub use state_api::{UNCOMPRESSED, UncompressedStreamCompressionDecorator};

/// Name of [`SnappyStreamCompressionDecorator`], as written into snapshot headers.
pub const SNAPPY: &str = "snappy";

/// Name of [`Lz4StreamCompressionDecorator`], as written into snapshot headers.
pub const LZ4: &str = "lz4";

/// Registers this crate's decorators (`snappy`, `lz4`) in `registry`.
///
/// `none` is not registered here: `state-api` registers it itself. Fails with
/// [`Error::DuplicatePlugin`](state_api::Error) if a name is already taken.
pub fn register(registry: &mut state_api::Registry) -> state_api::Result<()> {
    registry.register_compression(SnappyStreamCompressionDecorator)?;
    registry.register_compression(Lz4StreamCompressionDecorator)
}

state_api::submit_registration!(register);

/// Does nothing; reference this from a binary/test so the linker keeps the crate's
/// registrations.
///
/// rustc drops a dependency nothing refers to, and with it the link-time registration of
/// `snappy` and `lz4`; calling this function (or writing `use state_compress as _;`) keeps it.
pub fn link() {}

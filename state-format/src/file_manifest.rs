//! [`FileManifest`]: the list of files of a multi-file (incremental) snapshot, with each
//! file's size and CRC-32C, so restore and tools check every file they read.
//!
//! Strategies that snapshot into several files (RocksDB's incremental checkpoints) write it
//! into their meta data stream after the keyed snapshot header; the `snapstate` tool reads
//! it to verify a checkpoint without the backend that wrote it.

use std::io::{Read, Write};

use crate::frame::{BodyCursor, BodyError, FrameFormat, put_str};
use state_api::{Error, Result};

/// One file of an incremental snapshot in its [`FileManifest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The file's name in the database directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// CRC-32C of its bytes.
    pub crc: u32,
    /// Whether it is a shared (sst) file.
    pub shared: bool,
}

/// The list of files of an incremental snapshot, written after the keyed snapshot header in
/// its meta data stream.
///
/// A frame of [`crate::frame`] (magic `"SNPF"`, version 1) around: `u32` file count, then
/// per file its name (string), `u64` size, `u32` CRC-32C and a `u8` (1 shared, 0 private).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileManifest {
    /// The files, by name.
    pub files: Vec<ManifestEntry>,
}

const MANIFEST_FORMAT: FrameFormat = FrameFormat {
    magic: 0x534E_5046,
    current_version: 1,
    max_body_len: 64 * 1024 * 1024,
    what: "incremental snapshot file list",
    kind: "snapstate incremental snapshot file list",
};

impl FileManifest {
    /// Writes the manifest.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for names over 65535 bytes, [`Error::Stream`] when `out`
    /// fails.
    pub fn write_to(&self, out: &mut dyn Write) -> Result<u64> {
        let count = u32::try_from(self.files.len())
            .map_err(|_| Error::InvalidArgument("too many files".into()))?;
        let mut body = count.to_be_bytes().to_vec();
        for file in &self.files {
            put_str(&mut body, &file.name, &"file name")?;
            body.extend_from_slice(&file.size.to_be_bytes());
            body.extend_from_slice(&file.crc.to_be_bytes());
            body.push(u8::from(file.shared));
        }
        MANIFEST_FORMAT.write(out, &body)
    }

    /// Reads a manifest written by [`write_to`](Self::write_to).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], [`Error::Corrupted`], [`Error::UnsupportedVersion`] naming the
    /// field, [`Error::Stream`] when `input` fails.
    pub fn read_from(input: &mut dyn Read) -> Result<Self> {
        MANIFEST_FORMAT.read(input, |_, body| {
            let what = MANIFEST_FORMAT.what;
            let mut cursor = BodyCursor::new(body);
            let count = u32::from_be_bytes(cursor.array(&format_args!("{what}: file count"))?);
            let mut files = Vec::new();
            for index in 0..count {
                let field = |part: &str| format!("{what}: file {index} {part}");
                files.push(ManifestEntry {
                    name: cursor.string(&field("name"))?,
                    size: u64::from_be_bytes(cursor.array(&field("size"))?),
                    crc: u32::from_be_bytes(cursor.array(&field("checksum"))?),
                    shared: cursor.array::<1>(&field("scope"))?[0] == 1,
                });
            }
            if !cursor.rest().is_empty() {
                return Err(BodyError::Invalid(Error::Corrupted {
                    what: format!("{what}: body"),
                    reason: format!("{} bytes left over", cursor.rest().len()),
                }));
            }
            Ok(FileManifest { files })
        })
    }

    /// The entry of file `name`.
    pub fn get(&self, name: &str) -> Option<&ManifestEntry> {
        self.files.iter().find(|file| file.name == name)
    }
}

//! The meta data stream of an incremental snapshot, read the same way by every strategy
//! and tool: the keyed header ([`KeyedBackendSerializationProxy`]), then the
//! [`FileManifest`] of its files, then whatever the strategy appends (the heap chain of
//! `heap-incremental`; nothing for RocksDB).

use std::fmt;

use state_api::{Error, MaxParallelism, Result, StateInputStream, StreamStateHandle};

use crate::file_manifest::FileManifest;
use crate::proxy::KeyedBackendSerializationProxy;

/// The meta data of one incremental snapshot, with the rest of its stream.
pub struct IncrementalMeta {
    /// The keyed header.
    pub header: KeyedBackendSerializationProxy,
    /// The files of the snapshot with their sizes and checksums.
    pub manifest: FileManifest,
    /// The stream after the manifest: what the strategy appended.
    pub rest: Box<dyn StateInputStream>,
    /// Where the meta data stream is, for messages.
    pub location: String,
}

impl fmt::Debug for IncrementalMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncrementalMeta")
            .field("header", &self.header)
            .field("manifest", &self.manifest)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Reads the header and the manifest of the meta data stream `meta`; with
/// `max_parallelism`, checks the header's number of key groups before the manifest is
/// read.
///
/// # Errors
///
/// [`Error::Snapshot`] naming the stream around what went wrong: the stream does not open,
/// is damaged or truncated, or was taken with another number of key groups
/// ([`Error::Incompatible`]).
pub fn read(
    meta: &dyn StreamStateHandle,
    max_parallelism: Option<MaxParallelism>,
) -> Result<IncrementalMeta> {
    let location = meta.describe();
    let wrap = |source: Error| Error::Snapshot {
        location: location.clone(),
        source: Box::new(source),
    };
    let mut rest = meta.open().map_err(wrap)?;
    let header = KeyedBackendSerializationProxy::read_from(&mut rest).map_err(wrap)?;
    if let Some(max_parallelism) = max_parallelism {
        header
            .check_max_parallelism(max_parallelism, &location)
            .map_err(wrap)?;
    }
    let manifest = FileManifest::read_from(&mut rest).map_err(wrap)?;
    Ok(IncrementalMeta {
        header,
        manifest,
        rest,
        location,
    })
}

//! Checkpoint streams: where snapshot bytes go.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::{Closeable, Result, StreamStateHandle};

/// Where a stream's file goes: owned by one checkpoint, or shared across checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointedStateScope {
    /// Owned by the one checkpoint that wrote it; discarded with it.
    Exclusive,
    /// Possibly referenced by several checkpoints (incremental files); its lifetime is
    /// governed by the shared state registry.
    Shared,
}

/// An output stream for snapshot bytes. Writes go through `std::io::Write`; an error of
/// ours (cancellation, closed stream) travels inside the `io::Error` and is recovered by
/// [`Error::io`](crate::Error::io)/[`Error::stream`](crate::Error::stream). A stream that
/// is dropped, or closed from another thread through its [`closer`](Self::closer), deletes
/// what it wrote, so a failed or cancelled snapshot leaves nothing behind.
pub trait CheckpointStateOutputStream: Write + Send + fmt::Debug {
    /// Number of bytes written so far; the offset the next byte will have.
    fn pos(&self) -> u64;

    /// Makes everything written durable and visible and returns its handle. Until this
    /// returns, nothing of the stream is visible to a reader of the storage.
    fn close_and_get_handle(self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>>;

    /// A handle that closes this stream from another thread: writes in progress or later
    /// fail, [`close_and_get_handle`](Self::close_and_get_handle) fails, and what was
    /// written is deleted. Snapshot tasks register it so that cancelling unblocks them.
    fn closer(&self) -> Arc<dyn Closeable>;
}

/// Opens checkpoint streams; one factory serves one checkpoint's location.
pub trait CheckpointStreamFactory: Send + Sync + fmt::Debug {
    /// Opens a new stream in `scope`.
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>>;

    /// Stores the complete local file at `path`, which nobody changes any more (an sst
    /// file), in `scope` without copying its bytes where the storage can: a hard link
    /// into a local directory on the same file system. `None` when it cannot; the caller
    /// then writes the file through [`create_output_stream`](Self::create_output_stream).
    fn store_immutable_file(
        &self,
        _path: &Path,
        _scope: CheckpointedStateScope,
    ) -> Result<Option<Arc<dyn StreamStateHandle>>> {
        Ok(None)
    }
}

macro_rules! forward_factory {
    ($($pointer:ident),*) => {$(
        impl<T: CheckpointStreamFactory + ?Sized> CheckpointStreamFactory for $pointer<T> {
            fn create_output_stream(
                &self,
                scope: CheckpointedStateScope,
            ) -> Result<Box<dyn CheckpointStateOutputStream>> {
                (**self).create_output_stream(scope)
            }

            fn store_immutable_file(
                &self,
                path: &Path,
                scope: CheckpointedStateScope,
            ) -> Result<Option<Arc<dyn StreamStateHandle>>> {
                (**self).store_immutable_file(path, scope)
            }
        }
    )*};
}

forward_factory!(Arc, Box);

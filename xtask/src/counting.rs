//! [`CountingStreamFactory`]: counts the bytes a checkpoint wrote to its storage.
//!
//! A checkpoint's `bytes` (BENCHMARK.md) is everything it wrote to checkpoint storage,
//! files and inline handles alike. Counting at the stream factory measures exactly that,
//! whatever the strategy: only streams that completed count, so a reused (placeholder)
//! file of an incremental checkpoint costs nothing; a file the storage stored without a
//! stream (a hard link) counts its size.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use state_api::{
    CheckpointStateOutputStream, CheckpointStreamFactory, CheckpointedStateScope, Closeable,
    Result, StreamStateHandle,
};

/// Wraps a stream factory and adds up the bytes of every stream that completed.
#[derive(Debug)]
pub(crate) struct CountingStreamFactory {
    inner: Box<dyn CheckpointStreamFactory>,
    completed: Arc<AtomicU64>,
}

impl CountingStreamFactory {
    pub(crate) fn new(inner: impl CheckpointStreamFactory + 'static) -> Self {
        CountingStreamFactory {
            inner: Box::new(inner),
            completed: Arc::default(),
        }
    }

    /// Bytes of the streams completed so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }
}

impl CheckpointStreamFactory for CountingStreamFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        Ok(Box::new(CountingStream {
            inner: self.inner.create_output_stream(scope)?,
            written: 0,
            completed: self.completed.clone(),
        }))
    }

    /// The storage's own way of storing a finished file (a hard link into a local
    /// directory), so the benchmark measures what a job gets; the file's bytes count.
    fn store_immutable_file(
        &self,
        path: &Path,
        scope: CheckpointedStateScope,
    ) -> Result<Option<Arc<dyn StreamStateHandle>>> {
        let stored = self.inner.store_immutable_file(path, scope)?;
        if let Some(handle) = &stored {
            self.completed
                .fetch_add(handle.state_size(), Ordering::AcqRel);
        }
        Ok(stored)
    }
}

#[derive(Debug)]
struct CountingStream {
    inner: Box<dyn CheckpointStateOutputStream>,
    written: u64,
    completed: Arc<AtomicU64>,
}

impl Write for CountingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointStateOutputStream for CountingStream {
    fn pos(&self) -> u64 {
        self.inner.pos()
    }

    fn close_and_get_handle(self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        let handle = self.inner.close_and_get_handle()?;
        self.completed.fetch_add(self.written, Ordering::AcqRel);
        Ok(handle)
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        self.inner.closer()
    }
}

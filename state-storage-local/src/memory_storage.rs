//! In-memory checkpoint storage for tests: every stream becomes a
//! [`ByteStreamStateHandle`] holding its bytes.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use state_api::{
    ByteStreamStateHandle, CheckpointStateOutputStream, CheckpointStreamFactory,
    CheckpointedStateScope, Closeable, Error, Result, StreamStateHandle,
};

/// Opens in-memory streams, optionally refusing state above a size limit.
///
/// # Example
///
/// ```
/// use std::io::Write;
/// use state_api::{CheckpointStreamFactory, CheckpointedStateScope, StateObject};
/// use state_storage_local::MemoryCheckpointStreamFactory;
///
/// let factory = MemoryCheckpointStreamFactory::default();
/// let mut out = factory.create_output_stream(CheckpointedStateScope::Exclusive)?;
/// out.write_all(b"abc").unwrap();
/// assert_eq!(out.close_and_get_handle()?.state_size(), 3);
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct MemoryCheckpointStreamFactory {
    max_state_size: Option<usize>,
    next_id: AtomicU64,
}

impl MemoryCheckpointStreamFactory {
    /// A factory whose streams fail once they exceed `bytes`.
    pub fn with_max_state_size(bytes: usize) -> Self {
        MemoryCheckpointStreamFactory {
            max_state_size: Some(bytes),
            next_id: AtomicU64::new(0),
        }
    }
}

impl CheckpointStreamFactory for MemoryCheckpointStreamFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let scope = match scope {
            CheckpointedStateScope::Exclusive => "exclusive",
            CheckpointedStateScope::Shared => "shared",
        };
        Ok(Box::new(MemoryOutputStream {
            name: format!("memory-{scope}-{id}"),
            data: Vec::new(),
            max_state_size: self.max_state_size,
            closed: Arc::default(),
        }))
    }
}

/// A stream collecting its bytes in memory.
#[derive(Debug)]
pub struct MemoryOutputStream {
    name: String,
    data: Vec<u8>,
    max_state_size: Option<usize>,
    closed: Arc<AtomicBool>,
}

impl MemoryOutputStream {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                what: format!("in-memory checkpoint stream `{}`", self.name),
            });
        }
        Ok(())
    }
}

impl Write for MemoryOutputStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_open().map_err(Error::into_io)?;
        if let Some(max) = self.max_state_size
            && self.data.len() + buf.len() > max
        {
            return Err(Error::Unsupported(format!(
                "in-memory checkpoint stream `{}` would exceed its limit of {max} bytes: use directory or object storage for state this large",
                self.name
            ))
            .into_io());
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CheckpointStateOutputStream for MemoryOutputStream {
    fn pos(&self) -> u64 {
        self.data.len() as u64
    }

    fn close_and_get_handle(self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        self.check_open()?;
        let MemoryOutputStream { name, data, .. } = *self;
        Ok(Arc::new(ByteStreamStateHandle::new(name, data)))
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        let closed = self.closed.clone();
        Arc::new(move || {
            closed.store(true, Ordering::Release);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_enforced_with_a_clear_error() {
        let factory = MemoryCheckpointStreamFactory::with_max_state_size(4);
        let mut out = factory
            .create_output_stream(CheckpointedStateScope::Exclusive)
            .unwrap();
        out.write_all(b"1234").unwrap();
        let err = Error::stream("writing", out.write_all(b"5").unwrap_err());
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("limit of 4 bytes"), "{err}");
    }

    #[test]
    fn closed_stream_refuses_writes_and_completion() {
        let factory = MemoryCheckpointStreamFactory::default();
        let mut out = factory
            .create_output_stream(CheckpointedStateScope::Shared)
            .unwrap();
        out.closer().close().unwrap();
        let err = Error::stream("writing", out.write_all(b"x").unwrap_err());
        assert!(matches!(err, Error::Closed { .. }), "{err}");
        let err = out.close_and_get_handle().unwrap_err();
        assert!(matches!(err, Error::Closed { .. }), "{err}");
    }
}

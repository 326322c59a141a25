//! Stream factories that misbehave on purpose, for the lifecycle contracts of the kit.
//!
//! [`GatedStreamFactory`] holds a snapshot at its first write until the test has done
//! something (cancel it, close its backend), so "cancelled while writing" is a certainty
//! instead of a race. [`FailingStreamFactory`] fails writes after a byte budget.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use state_api::{
    CheckpointStateOutputStream, CheckpointStreamFactory, CheckpointedStateScope, Closeable,
    Result, StreamStateHandle,
};

/// Where the first write of any stream of a [`GatedStreamFactory`] waits.
#[derive(Debug)]
struct Gate {
    started: Mutex<Option<Sender<()>>>,
    resume: Mutex<Receiver<()>>,
}

impl Gate {
    fn pass(&self) {
        let started = self
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(started) = started {
            // The test may have given up waiting; then there is nobody to wait for.
            if started.send(()).is_ok() {
                let _ = self
                    .resume
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .recv();
            }
        }
    }
}

/// The test's side of a [`GatedStreamFactory`].
#[derive(Debug)]
pub struct GateControl {
    started: Receiver<()>,
    resume: Sender<()>,
}

impl GateControl {
    /// Waits until a stream's first write is held; `false` if the factory and every stream
    /// were dropped without one (the snapshot wrote nothing).
    pub fn wait_started(&self) -> bool {
        self.started.recv().is_ok()
    }

    /// Lets the held write go on.
    pub fn resume(&self) {
        // The writer may already have failed and gone; then nobody waits for this.
        let _ = self.resume.send(());
    }
}

/// A stream factory whose first written stream stops after its first write until
/// [`GateControl::resume`].
#[derive(Debug)]
pub struct GatedStreamFactory {
    inner: Box<dyn CheckpointStreamFactory>,
    gate: Arc<Gate>,
}

impl GatedStreamFactory {
    /// Wraps `inner`; returns the factory and the test's control of its gate.
    pub fn new(inner: Box<dyn CheckpointStreamFactory>) -> (Self, GateControl) {
        let (started_tx, started_rx) = mpsc::channel();
        let (resume_tx, resume_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            started: Mutex::new(Some(started_tx)),
            resume: Mutex::new(resume_rx),
        });
        let control = GateControl {
            started: started_rx,
            resume: resume_tx,
        };
        (GatedStreamFactory { inner, gate }, control)
    }
}

impl CheckpointStreamFactory for GatedStreamFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        Ok(Box::new(GatedStream {
            inner: self.inner.create_output_stream(scope)?,
            gate: self.gate.clone(),
        }))
    }
}

#[derive(Debug)]
struct GatedStream {
    inner: Box<dyn CheckpointStateOutputStream>,
    gate: Arc<Gate>,
}

impl Write for GatedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.gate.pass();
        Ok(written)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.gate.pass();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointStateOutputStream for GatedStream {
    fn pos(&self) -> u64 {
        self.inner.pos()
    }

    fn close_and_get_handle(self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        self.inner.close_and_get_handle()
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        self.inner.closer()
    }
}

/// A stream factory whose streams fail once `limit` bytes were written through the factory
/// in total (the write that crosses the limit fails, and every later one), like a disk that
/// fills up or a connection that breaks in the middle of a snapshot.
#[derive(Debug)]
pub struct FailingStreamFactory {
    inner: Box<dyn CheckpointStreamFactory>,
    budget: Arc<Mutex<u64>>,
}

impl FailingStreamFactory {
    /// Wraps `inner`, failing writes after `limit` bytes.
    pub fn new(inner: Box<dyn CheckpointStreamFactory>, limit: u64) -> Self {
        FailingStreamFactory {
            inner,
            budget: Arc::new(Mutex::new(limit)),
        }
    }
}

impl CheckpointStreamFactory for FailingStreamFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        Ok(Box::new(FailingStream {
            inner: self.inner.create_output_stream(scope)?,
            budget: self.budget.clone(),
        }))
    }
}

#[derive(Debug)]
struct FailingStream {
    inner: Box<dyn CheckpointStateOutputStream>,
    budget: Arc<Mutex<u64>>,
}

impl Write for FailingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        {
            let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
            if (buf.len() as u64) > *budget {
                *budget = 0;
                return Err(io::Error::other(
                    "injected failure: the storage stopped taking bytes",
                ));
            }
            *budget -= buf.len() as u64;
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointStateOutputStream for FailingStream {
    fn pos(&self) -> u64 {
        self.inner.pos()
    }

    fn close_and_get_handle(self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        self.inner.close_and_get_handle()
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        self.inner.closer()
    }
}

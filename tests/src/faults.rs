//! Stream factories that misbehave on purpose, for the lifecycle contracts of the kit.
//!
//! [`GatedStreamFactory`] holds a snapshot at its first write until the test has done
//! something (cancel it, close its backend), so "cancelled while writing" is a certainty
//! instead of a race. [`FaultyStreamFactory`] fails writes after a byte budget, fails on
//! close, writes short, or loses the tail of every stream.

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

/// What a [`FaultyStreamFactory`]'s streams do wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writes fail once this many bytes went through the factory in total (a full disk, a
    /// broken connection); the write that crosses the limit fails, and every later one.
    FailAfter(u64),
    /// Every write succeeds, closing fails (the final flush or rename is refused).
    FailOnClose,
    /// Every write takes at most this many bytes (a pipe, a socket): callers must loop.
    ShortWrites(usize),
    /// The last this many bytes of every stream are lost while closing reports success (a
    /// storage that acknowledges too early): restore must notice.
    DropTail(usize),
}

/// A stream factory whose streams misbehave as its [`Fault`] says.
#[derive(Debug)]
pub struct FaultyStreamFactory {
    inner: Box<dyn CheckpointStreamFactory>,
    fault: Fault,
    budget: Arc<Mutex<u64>>,
}

impl FaultyStreamFactory {
    /// Wraps `inner` with `fault`.
    pub fn new(inner: Box<dyn CheckpointStreamFactory>, fault: Fault) -> Self {
        let budget = match fault {
            Fault::FailAfter(limit) => limit,
            _ => u64::MAX,
        };
        FaultyStreamFactory {
            inner,
            fault,
            budget: Arc::new(Mutex::new(budget)),
        }
    }
}

impl CheckpointStreamFactory for FaultyStreamFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        Ok(Box::new(FaultyStream {
            inner: self.inner.create_output_stream(scope)?,
            fault: self.fault,
            budget: self.budget.clone(),
            tail: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct FaultyStream {
    inner: Box<dyn CheckpointStateOutputStream>,
    fault: Fault,
    budget: Arc<Mutex<u64>>,
    /// With [`Fault::DropTail`], the bytes held back (never written).
    tail: Vec<u8>,
}

impl Write for FaultyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
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
        match self.fault {
            Fault::ShortWrites(most) => self.inner.write(&buf[..buf.len().min(most.max(1))]),
            Fault::DropTail(keep_back) => {
                self.tail.extend_from_slice(buf);
                if self.tail.len() > keep_back {
                    let excess = self.tail.len() - keep_back;
                    self.inner.write_all(&self.tail[..excess])?;
                    self.tail.drain(..excess);
                }
                Ok(buf.len())
            }
            Fault::FailAfter(_) | Fault::FailOnClose => self.inner.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointStateOutputStream for FaultyStream {
    fn pos(&self) -> u64 {
        self.inner.pos() + self.tail.len() as u64
    }

    fn close_and_get_handle(self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        match self.fault {
            // Dropping the stream unclosed deletes what it wrote.
            Fault::FailOnClose => Err(state_api::Error::stream(
                "closing a checkpoint stream",
                io::Error::other("injected failure: the storage refused to close the stream"),
            )),
            _ => self.inner.close_and_get_handle(),
        }
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        self.inner.closer()
    }
}

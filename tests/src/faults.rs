//! Stream factories that misbehave on purpose, for the lifecycle contracts of the kit.
//!
//! [`GatedStreamFactory`] holds a snapshot at its n-th write or in its close until the test
//! has done something (cancel it, close its backend), so "cancelled while writing" is a
//! certainty instead of a race. [`FaultyStreamFactory`] fails writes after a byte budget,
//! fails the n-th write or the n-th stream, fails on close, writes short, or loses the tail
//! of every stream. Injected failures are `io::Error`s whose message starts with
//! [`INJECTED`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use state_api::{
    CheckpointStateOutputStream, CheckpointStreamFactory, CheckpointedStateScope, Closeable,
    Result, StreamStateHandle,
};

/// Where a [`GatedStreamFactory`] holds a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatePoint {
    /// After the n-th write (counted from 1 over every stream of the factory) went through.
    Write(u64),
    /// In the first `close_and_get_handle`, before the stream completes.
    Close,
}

#[derive(Debug, Default)]
struct GateState {
    writes: u64,
    fired: bool,
    released: bool,
}

/// Where a held write or close of a [`GatedStreamFactory`] waits.
#[derive(Debug)]
struct Gate {
    point: GatePoint,
    state: Mutex<GateState>,
    released: Condvar,
    started: Mutex<Option<Sender<()>>>,
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the caller if `reached` says this is the gate's point, until released.
    fn pass(&self, reached: impl FnOnce(&mut GateState) -> bool) {
        let mut state = self.state();
        if state.fired || !reached(&mut state) {
            return;
        }
        state.fired = true;
        let started = self
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The test may have given up waiting; then there is nobody to wait for.
        if started.is_some_and(|started| started.send(()).is_ok()) {
            while !state.released {
                state = self
                    .released
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    fn pass_write(&self) {
        let point = self.point;
        self.pass(|state| {
            state.writes += 1;
            point == GatePoint::Write(state.writes)
        });
    }

    fn pass_close(&self) {
        self.pass(|_| self.point == GatePoint::Close);
    }

    fn release(&self) {
        self.state().released = true;
        self.released.notify_all();
    }
}

/// The test's side of a [`GatedStreamFactory`].
#[derive(Debug)]
pub struct GateControl {
    started: Receiver<()>,
    gate: Arc<Gate>,
}

impl GateControl {
    /// Waits until a write or close is held at the gate's point; `false` if the factory and
    /// every stream were dropped without reaching it (the snapshot wrote less).
    pub fn wait_started(&self) -> bool {
        self.started.recv().is_ok()
    }

    /// Lets the held write or close go on.
    pub fn resume(&self) {
        self.gate.release();
    }
}

/// A stream factory whose streams stop at a [`GatePoint`] until [`GateControl::resume`],
/// or until a stream of the factory is closed through its
/// [`closer`](CheckpointStateOutputStream::closer): closing unblocks blocked i/o, as a
/// real storage's streams do, so "closed while blocked" ends without the test's help.
#[derive(Debug)]
pub struct GatedStreamFactory {
    inner: Box<dyn CheckpointStreamFactory>,
    gate: Arc<Gate>,
}

impl GatedStreamFactory {
    /// Wraps `inner`, holding the first write; returns the factory and the test's control
    /// of its gate.
    pub fn new(inner: Box<dyn CheckpointStreamFactory>) -> (Self, GateControl) {
        Self::at(inner, GatePoint::Write(1))
    }

    /// Wraps `inner`, holding at `point`.
    pub fn at(inner: Box<dyn CheckpointStreamFactory>, point: GatePoint) -> (Self, GateControl) {
        let (started_tx, started_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            point,
            state: Mutex::default(),
            released: Condvar::new(),
            started: Mutex::new(Some(started_tx)),
        });
        let control = GateControl {
            started: started_rx,
            gate: gate.clone(),
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
        self.gate.pass_write();
        Ok(written)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.gate.pass_write();
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
        self.gate.pass_close();
        self.inner.close_and_get_handle()
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        let inner = self.inner.closer();
        let gate = self.gate.clone();
        Arc::new(move || {
            let closed = inner.close();
            gate.release();
            closed
        })
    }
}

/// What a [`FaultyStreamFactory`]'s streams do wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writes fail once this many bytes went through the factory in total (a full disk, a
    /// broken connection); the write that crosses the limit fails, and every later one.
    FailAfter(u64),
    /// The n-th write (counted from 1 over every stream of the factory) fails, and every
    /// later one.
    FailOnWrite(u64),
    /// Every write of the n-th stream the factory opens (counted from 1, with the files
    /// it is asked to store without a stream) fails: one upload of several is refused,
    /// after the earlier ones completed.
    FailOnStream(u64),
    /// Every write succeeds, closing fails (the final flush or rename is refused).
    FailOnClose,
    /// Every write takes at most this many bytes (a pipe, a socket): callers must loop.
    ShortWrites(usize),
    /// The last this many bytes of every stream are lost while closing reports success (a
    /// storage that acknowledges too early): restore must notice.
    DropTail(usize),
}

/// How every injected failure's message starts.
pub const INJECTED: &str = "injected failure";

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("{INJECTED}: {what}"))
}

/// Whether `err` (or what it wraps) is a failure a [`FaultyStreamFactory`] injected.
pub fn is_injected(err: &state_api::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.to_string().starts_with(INJECTED) {
            return true;
        }
        source = current.source();
    }
    false
}

/// A stream factory whose streams misbehave as its [`Fault`] says.
#[derive(Debug)]
pub struct FaultyStreamFactory {
    inner: Box<dyn CheckpointStreamFactory>,
    fault: Fault,
    budget: Arc<Mutex<u64>>,
    writes: Arc<AtomicU64>,
    streams: AtomicU64,
    probe: FaultProbe,
}

/// Tells whether a [`FaultyStreamFactory`]'s fault took effect (a write or close failed, a
/// tail was lost): a snapshot that wrote less than the fault waits for is not faulted.
#[derive(Debug, Clone, Default)]
pub struct FaultProbe(Arc<AtomicBool>);

impl FaultProbe {
    /// Whether the fault took effect at least once.
    pub fn fired(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn fire(&self) {
        self.0.store(true, Ordering::Release);
    }
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
            writes: Arc::default(),
            streams: AtomicU64::new(0),
            probe: FaultProbe::default(),
        }
    }

    /// A probe that tells, after the snapshot, whether the fault took effect.
    pub fn probe(&self) -> FaultProbe {
        self.probe.clone()
    }
}

impl CheckpointStreamFactory for FaultyStreamFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        let number = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Box::new(FaultyStream {
            inner: self.inner.create_output_stream(scope)?,
            fault: self.fault,
            refused: self.fault == Fault::FailOnStream(number),
            budget: self.budget.clone(),
            writes: self.writes.clone(),
            probe: self.probe.clone(),
            tail: Vec::new(),
        }))
    }

    /// Counts as a stream: [`Fault::FailOnStream`] of its number refuses the file, other
    /// faults let the inner storage store it (its bytes pass through no stream).
    fn store_immutable_file(
        &self,
        path: &std::path::Path,
        scope: CheckpointedStateScope,
    ) -> Result<Option<Arc<dyn StreamStateHandle>>> {
        let number = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fault == Fault::FailOnStream(number) {
            self.probe.fire();
            let err = injected(&format!("the storage refused {}", path.display()));
            return Err(state_api::Error::io(path, err));
        }
        self.inner.store_immutable_file(path, scope)
    }
}

#[derive(Debug)]
struct FaultyStream {
    inner: Box<dyn CheckpointStateOutputStream>,
    fault: Fault,
    /// With [`Fault::FailOnStream`], whether this is the stream whose writes fail.
    refused: bool,
    budget: Arc<Mutex<u64>>,
    writes: Arc<AtomicU64>,
    probe: FaultProbe,
    /// With [`Fault::DropTail`], the bytes held back (never written).
    tail: Vec<u8>,
}

impl Write for FaultyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.refused {
            self.probe.fire();
            return Err(injected("the storage refused this stream"));
        }
        let write = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if matches!(self.fault, Fault::FailOnWrite(n) if write >= n) {
            self.probe.fire();
            return Err(injected("the storage failed a write"));
        }
        {
            let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
            if (buf.len() as u64) > *budget {
                *budget = 0;
                self.probe.fire();
                return Err(injected("the storage stopped taking bytes"));
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
            Fault::FailAfter(_)
            | Fault::FailOnWrite(_)
            | Fault::FailOnStream(_)
            | Fault::FailOnClose => self.inner.write(buf),
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
        if self.fault == Fault::FailOnClose
            || (matches!(self.fault, Fault::DropTail(_)) && !self.tail.is_empty())
        {
            self.probe.fire();
        }
        match self.fault {
            // Dropping the stream unclosed deletes what it wrote.
            Fault::FailOnClose => Err(state_api::Error::stream(
                "closing a checkpoint stream",
                injected("the storage refused to close the stream"),
            )),
            _ => self.inner.close_and_get_handle(),
        }
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        self.inner.closer()
    }
}

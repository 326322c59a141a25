//! The asynchronous part of a snapshot: [`AsyncSnapshotCallable`] and the runnable,
//! cancellable [`AsyncSnapshotTask`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::closeable::lock;
use crate::{
    CheckpointId, Closeable, CloseableRegistry, Error, RegistrationKey, Result, StateObject,
};

/// The asynchronous part of one snapshot. A strategy's synchronous part captures everything
/// this needs (a copy-on-write version, a RocksDB snapshot and its lease, hard-linked
/// files) in a value implementing this trait.
pub trait AsyncSnapshotCallable<T>: Send {
    /// Writes the snapshot. Streams it opens must be registered with `context` (see
    /// [`SnapshotContext::register`]) so that cancellation can close them, and unregistered
    /// once they are complete.
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<T>;

    /// Releases what the synchronous part provided (versions, leases, directories). Runs
    /// exactly once, whatever the outcome, and never before `call_internal` returned.
    fn cleanup_provided_resources(&mut self);

    /// Called after a successful `call_internal`, before cleanup, with its duration.
    fn log_async_snapshot_complete(&mut self, elapsed: Duration) {
        let _ = elapsed;
    }
}

impl<T, C: AsyncSnapshotCallable<T> + ?Sized> AsyncSnapshotCallable<T> for Box<C> {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<T> {
        (**self).call_internal(context)
    }

    fn cleanup_provided_resources(&mut self) {
        (**self).cleanup_provided_resources()
    }

    fn log_async_snapshot_complete(&mut self, elapsed: Duration) {
        (**self).log_async_snapshot_complete(elapsed)
    }
}

/// What a running callable sees of its task: the checkpoint id, cancellation, and the
/// registry for its streams.
#[derive(Debug)]
pub struct SnapshotContext {
    checkpoint_id: CheckpointId,
    cancelled: AtomicBool,
    snapshot_io: CloseableRegistry,
}

impl SnapshotContext {
    /// A context of checkpoint `checkpoint_id` that nothing cancels: what an
    /// [`AsyncSnapshotTask`] creates for its callable, and what code that drives a writer
    /// outside a task (a test, a tool) passes.
    pub fn new(checkpoint_id: CheckpointId) -> Self {
        SnapshotContext {
            checkpoint_id,
            cancelled: AtomicBool::new(false),
            snapshot_io: CloseableRegistry::default(),
        }
    }

    /// The checkpoint being written.
    pub fn checkpoint_id(&self) -> CheckpointId {
        self.checkpoint_id
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Returns [`Error::Cancelled`] once the task is cancelled; long loops call it between
    /// units of work.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::Cancelled {
                checkpoint_id: self.checkpoint_id,
            });
        }
        Ok(())
    }

    /// Registers a stream's closer so that cancelling closes it. Fails with
    /// [`Error::Cancelled`] (after closing it) when the task is already cancelled.
    pub fn register(&self, closeable: Arc<dyn Closeable>) -> Result<RegistrationKey> {
        self.snapshot_io
            .register(closeable)
            .map_err(|_| Error::Cancelled {
                checkpoint_id: self.checkpoint_id,
            })
    }

    /// Removes a registration once its stream is complete (so that a late cancel does not
    /// delete a finished stream).
    pub fn unregister(&self, key: RegistrationKey) -> bool {
        self.snapshot_io.unregister(key)
    }
}

enum Phase<T> {
    Created(Box<dyn AsyncSnapshotCallable<T>>),
    Running,
    Finished,
}

struct Shared<T> {
    phase: Mutex<Phase<T>>,
    context: SnapshotContext,
    owner: CloseableRegistry,
    owner_key: Mutex<Option<RegistrationKey>>,
}

impl<T> Shared<T> {
    fn leave_owner(&self) {
        let key = lock(&self.owner_key).take();
        if let Some(key) = key {
            self.owner.unregister(key);
        }
    }

    /// Cancels; returns whether this call changed the outcome.
    fn cancel(&self) -> bool {
        let mut phase = lock(&self.phase);
        match std::mem::replace(&mut *phase, Phase::Finished) {
            Phase::Created(mut callable) => {
                drop(phase);
                self.context.cancelled.store(true, Ordering::Release);
                callable.cleanup_provided_resources();
                self.leave_owner();
                true
            }
            Phase::Running => {
                *phase = Phase::Running;
                self.context.cancelled.store(true, Ordering::Release);
                drop(phase);
                if let Err(err) = self.context.snapshot_io.close() {
                    tracing::warn!(checkpoint_id = self.context.checkpoint_id.get(), error = %err,
                        "closing snapshot streams on cancel failed");
                }
                true
            }
            Phase::Finished => false,
        }
    }
}

/// Cancels an [`AsyncSnapshotTask`] from any thread.
pub struct SnapshotCanceller<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for SnapshotCanceller<T> {
    fn clone(&self) -> Self {
        SnapshotCanceller {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for SnapshotCanceller<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCanceller")
            .field("checkpoint_id", &self.shared.context.checkpoint_id)
            .finish()
    }
}

impl<T> SnapshotCanceller<T> {
    /// Cancels the task. Returns `false` if it had already finished (then nothing changes).
    pub fn cancel(&self) -> bool {
        self.shared.cancel()
    }

    /// Whether the task finished, was cancelled or was dropped.
    pub fn is_done(&self) -> bool {
        matches!(*lock(&self.shared.phase), Phase::Finished)
    }
}

/// The runnable, cancellable asynchronous part of a snapshot: created by the synchronous
/// part (see [`run_snapshot_strategy`](crate::run_snapshot_strategy)), registered with
/// its owner's [`CloseableRegistry`] until done, and run once on any thread. Its lifecycle
/// is exactly Flink's `AsyncSnapshotCallable` contract:
///
/// | what happens | calls | outcome of [`AsyncSnapshotTask::run`] |
/// | --- | --- | --- |
/// | normal run | `call_internal`, `log_async_snapshot_complete`, `cleanup_provided_resources` | `Ok(result)` |
/// | `call_internal` fails | `call_internal`, `cleanup_provided_resources` | the error |
/// | cancelled while running | streams registered with the [`SnapshotContext`] are closed (blocked i/o returns), `cleanup_provided_resources` | [`Error::Cancelled`] (a result that was produced anyway is discarded) |
/// | owner's registry closed while running | as cancelled | [`Error::Cancelled`] |
/// | cancelled before it ran | `cleanup_provided_resources` (at cancel time), never `call_internal` | [`Error::Cancelled`] |
/// | dropped without running | `cleanup_provided_resources` | — |
///
/// In every case the provided resources are released exactly once and the owner's registry
/// holds nothing of the task afterwards.
///
/// # Example
///
/// ```
/// use state_api::{AsyncSnapshotCallable, AsyncSnapshotTask, ByteStreamStateHandle,
///     CloseableRegistry, Result, SnapshotContext, SnapshotResult};
///
/// struct WriteMeta;
/// impl AsyncSnapshotCallable<SnapshotResult<ByteStreamStateHandle>> for WriteMeta {
///     fn call_internal(&mut self, _: &SnapshotContext) -> Result<SnapshotResult<ByteStreamStateHandle>> {
///         Ok(SnapshotResult::of(ByteStreamStateHandle::new("meta", b"m".to_vec())))
///     }
///     fn cleanup_provided_resources(&mut self) {}
/// }
///
/// let owner = CloseableRegistry::default();
/// let task = AsyncSnapshotTask::new(state_api::CheckpointId::new(1), Box::new(WriteMeta), &owner)?;
/// assert_eq!(owner.len(), 1);
/// let result = task.spawn()?.join().unwrap()?;
/// assert!(!result.is_empty());
/// assert!(owner.is_empty());
/// # Ok::<(), state_api::Error>(())
/// ```
pub struct AsyncSnapshotTask<T> {
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for AsyncSnapshotTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSnapshotTask")
            .field("checkpoint_id", &self.shared.context.checkpoint_id)
            .finish()
    }
}

struct OwnerHook<T>(Weak<Shared<T>>);

impl<T> Closeable for OwnerHook<T> {
    fn close(&self) -> Result<()> {
        if let Some(shared) = self.0.upgrade() {
            shared.cancel();
        }
        Ok(())
    }
}

impl<T: StateObject + Send + 'static> AsyncSnapshotTask<T> {
    /// Wraps `callable` for checkpoint `checkpoint_id` and registers the task with `owner`,
    /// so that closing the owner cancels it. If `owner` is already closed, the callable's
    /// resources are released at once and [`Error::Closed`] is returned.
    pub fn new(
        checkpoint_id: CheckpointId,
        callable: Box<dyn AsyncSnapshotCallable<T>>,
        owner: &CloseableRegistry,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            phase: Mutex::new(Phase::Created(callable)),
            context: SnapshotContext::new(checkpoint_id),
            owner: owner.clone(),
            owner_key: Mutex::new(None),
        });
        let hook: Arc<dyn Closeable> = Arc::new(OwnerHook(Arc::downgrade(&shared)));
        let key = owner.register(hook)?;
        *lock(&shared.owner_key) = Some(key);
        Ok(AsyncSnapshotTask { shared })
    }

    /// The checkpoint this task writes.
    pub fn checkpoint_id(&self) -> CheckpointId {
        self.shared.context.checkpoint_id
    }

    /// A handle to cancel this task from another thread.
    pub fn canceller(&self) -> SnapshotCanceller<T> {
        SnapshotCanceller {
            shared: self.shared.clone(),
        }
    }

    /// Cancels the task (see [`AsyncSnapshotTask`] for what runs when).
    pub fn cancel(&self) -> bool {
        self.shared.cancel()
    }

    /// Runs the asynchronous part on the calling thread.
    pub fn run(self) -> Result<T> {
        let shared = &self.shared;
        let checkpoint_id = shared.context.checkpoint_id;
        let mut callable = {
            let mut phase = lock(&shared.phase);
            match std::mem::replace(&mut *phase, Phase::Running) {
                Phase::Created(callable) => callable,
                other => {
                    *phase = other;
                    return Err(Error::Cancelled { checkpoint_id });
                }
            }
        };

        let started = Instant::now();
        let outcome = callable.call_internal(&shared.context);
        let elapsed = started.elapsed();

        // Decide under the lock, so that a concurrent `cancel` either happened before (and
        // wins) or finds the task finished (and reports so).
        let cancelled = {
            let mut phase = lock(&shared.phase);
            *phase = Phase::Finished;
            shared.context.is_cancelled()
        };
        // Streams the callable left registered are incomplete: close (delete) them.
        if let Err(err) = shared.context.snapshot_io.close() {
            tracing::warn!(checkpoint_id = checkpoint_id.get(), error = %err, "closing snapshot streams failed");
        }
        let result = match outcome {
            Ok(result) if cancelled => {
                if let Err(err) = result.discard() {
                    tracing::warn!(checkpoint_id = checkpoint_id.get(), error = %err,
                        "discarding the result of a cancelled snapshot failed");
                }
                Err(Error::Cancelled { checkpoint_id })
            }
            Ok(result) => {
                callable.log_async_snapshot_complete(elapsed);
                Ok(result)
            }
            Err(_) if cancelled => Err(Error::Cancelled { checkpoint_id }),
            Err(err) => Err(err),
        };
        callable.cleanup_provided_resources();
        shared.leave_owner();
        result
    }

    /// Runs the asynchronous part on a new thread named after the checkpoint. If no thread
    /// can be started, the task is dropped (releasing its resources) and the error returned.
    pub fn spawn(self) -> Result<JoinHandle<Result<T>>> {
        let name = format!("snapshot-{}", self.checkpoint_id());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || self.run())
            .map_err(|err| Error::stream("starting a snapshot thread", err))
    }
}

impl<T> Drop for AsyncSnapshotTask<T> {
    /// A task dropped without running releases its resources like a cancelled one.
    fn drop(&mut self) {
        self.shared.cancel();
    }
}

//! [`SnapshotStrategy`]: a snapshot algorithm separated from its backend;
//! [`SnapshotStrategyRunner`], which runs its synchronous part and traces both parts; and
//! [`KeyedSnapshots`], the snapshot side every keyed backend shares.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    AsyncSnapshotCallable, AsyncSnapshotTask, CheckpointId, CheckpointStreamFactory,
    CloseableRegistry, Error, KeyedBackendParams, KeyedSnapshotResult, KeyedStateHandle, Registry,
    Result, SnapshotContext, SnapshotRequest, SnapshotResult, StateObject,
};

/// A snapshot algorithm. Calling [`snapshot`](SnapshotStrategy::snapshot) *is* the
/// synchronous part: it runs on the processing thread while processing is paused, must not
/// do work proportional to the state size, and returns the asynchronous part.
///
/// `H` is the handle type the strategy produces (`Arc<dyn KeyedStateHandle>` for keyed
/// strategies, `OperatorStreamStateHandle` for operator state).
pub trait SnapshotStrategy<H>: Send + fmt::Debug {
    /// A short description for traces and listings (`"heap full snapshot"`).
    fn description(&self) -> &str;

    /// Takes a consistent view of the state for `request` and returns the asynchronous
    /// part that writes it through `factory`.
    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<Box<dyn AsyncSnapshotCallable<SnapshotResult<H>>>>;
}

/// Runs a strategy's synchronous part, wraps the asynchronous part in an
/// [`AsyncSnapshotTask`] registered with the owner's registry, and traces the duration of
/// both parts (`tracing` events at `debug` level on target `state_api::snapshot`, with
/// fields `strategy`, `checkpoint_id`, `sync_ms` / `async_ms`).
#[derive(Debug)]
pub struct SnapshotStrategyRunner<'a, H> {
    strategy: &'a mut dyn SnapshotStrategy<H>,
    owner: &'a CloseableRegistry,
}

impl<'a, H: Send + 'static> SnapshotStrategyRunner<'a, H>
where
    SnapshotResult<H>: StateObject,
{
    /// A runner for `strategy` whose tasks are owned by `owner`.
    pub fn new(strategy: &'a mut dyn SnapshotStrategy<H>, owner: &'a CloseableRegistry) -> Self {
        SnapshotStrategyRunner { strategy, owner }
    }

    /// Runs the synchronous part and returns the asynchronous task.
    pub fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<AsyncSnapshotTask<SnapshotResult<H>>> {
        let started = Instant::now();
        let callable = self.strategy.snapshot(request, factory)?;
        let checkpoint_id = request.id;
        let sync = started.elapsed();
        let description = self.strategy.description().to_owned();
        tracing::debug!(
            target: "state_api::snapshot",
            strategy = %description,
            checkpoint_id = checkpoint_id.get(),
            sync_ms = millis(sync),
            "synchronous part done"
        );
        AsyncSnapshotTask::new(
            checkpoint_id,
            Box::new(Traced {
                inner: callable,
                description,
                checkpoint_id,
            }),
            self.owner,
        )
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

struct Traced<T> {
    inner: Box<dyn AsyncSnapshotCallable<T>>,
    description: String,
    checkpoint_id: CheckpointId,
}

impl<T> AsyncSnapshotCallable<T> for Traced<T> {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<T> {
        self.inner.call_internal(context)
    }

    fn cleanup_provided_resources(&mut self) {
        self.inner.cleanup_provided_resources()
    }

    fn log_async_snapshot_complete(&mut self, elapsed: Duration) {
        tracing::debug!(
            target: "state_api::snapshot",
            strategy = %self.description,
            checkpoint_id = self.checkpoint_id.get(),
            async_ms = millis(elapsed),
            "asynchronous part done"
        );
        self.inner.log_async_snapshot_complete(elapsed)
    }
}

/// A keyed strategy as a backend holds it.
type KeyedStrategy = Box<dyn SnapshotStrategy<Arc<dyn KeyedStateHandle>>>;

/// The snapshot side of a keyed backend: its checkpoint strategy (`params.strategy`, by
/// default the backend's full strategy) and savepoint strategy (always the full one, which
/// writes the canonical format), the registry of its running snapshots, and whether it is
/// closed. A backend keeps one and forwards `snapshot`, `pending_snapshots` and `close`.
pub struct KeyedSnapshots {
    checkpoint: KeyedStrategy,
    /// `None` when checkpoints already use the full strategy.
    savepoint: Option<KeyedStrategy>,
    owner: CloseableRegistry,
    what: String,
}

impl fmt::Debug for KeyedSnapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedSnapshots")
            .field("strategy", &self.checkpoint.description())
            .field("pending", &self.owner.len())
            .field("closed", &self.owner.is_closed())
            .finish()
    }
}

impl KeyedSnapshots {
    /// The strategies of backend `backend` whose full strategy is `full`, created from
    /// `registry` with `source`, the state the backend shares with them (what
    /// [`KeyedSnapshotStrategyFactory::create`](crate::KeyedSnapshotStrategyFactory::create)
    /// receives).
    ///
    /// # Errors
    ///
    /// An unknown strategy or decorator ([`Error::UnknownPlugin`]); a strategy registered
    /// for another backend ([`Error::InvalidArgument`]); the strategy factory's errors.
    pub fn new(
        backend: &str,
        full: &str,
        source: &dyn Any,
        params: &KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Self> {
        let create = |name: &str| -> Result<KeyedStrategy> {
            let factory = registry.keyed_strategy(name)?;
            if factory.backend() != backend {
                return Err(Error::InvalidArgument(format!(
                    "snapshot strategy `{name}` is for backend `{}`, not `{backend}`",
                    factory.backend()
                )));
            }
            factory.create(source, params, registry)
        };
        let checkpoint_name = params.strategy.as_deref().unwrap_or(full);
        Ok(KeyedSnapshots {
            checkpoint: create(checkpoint_name)?,
            savepoint: (checkpoint_name != full)
                .then(|| create(full))
                .transpose()?,
            owner: CloseableRegistry::default(),
            what: format!("{backend} backend of {}", params.key_group_range),
        })
    }

    /// [`Error::Closed`] once the backend is closed.
    pub fn check_open(&self) -> Result<()> {
        match self.owner.is_closed() {
            true => Err(Error::Closed {
                what: self.what.clone(),
            }),
            false => Ok(()),
        }
    }

    /// Takes a snapshot for `request` with the strategy its kind asks for (see
    /// [`KeyedStateBackend::snapshot`](crate::KeyedStateBackend::snapshot)).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], and the strategy's errors.
    pub fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<AsyncSnapshotTask<KeyedSnapshotResult>> {
        self.check_open()?;
        let strategy = match (&mut self.savepoint, request.is_savepoint()) {
            (Some(savepoint), true) => savepoint,
            _ => &mut self.checkpoint,
        };
        SnapshotStrategyRunner::new(&mut **strategy, &self.owner).snapshot(request, factory)
    }

    /// Snapshots started and not yet finished or cancelled.
    pub fn pending(&self) -> usize {
        self.owner.len()
    }

    /// Closes the backend's snapshot side: running snapshots are cancelled, later calls
    /// fail with [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// The first error of closing a running snapshot's streams.
    pub fn close(&self) -> Result<()> {
        self.owner.close()
    }
}

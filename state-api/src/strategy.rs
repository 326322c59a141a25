//! [`SnapshotStrategy`]: a snapshot algorithm separated from its backend;
//! [`run_snapshot_strategy`], which runs its synchronous part and traces both parts; and
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

/// Runs `strategy`'s synchronous part for `request`, wraps the asynchronous part in an
/// [`AsyncSnapshotTask`] registered with `owner`, and traces the duration of both parts
/// (`tracing` events at `debug` level on target `state_api::snapshot`, with fields
/// `strategy`, `checkpoint_id`, `sync_ms` / `async_ms`).
///
/// # Errors
///
/// The strategy's errors, and [`Error::Closed`] when `owner` is closed.
pub fn run_snapshot_strategy<H: Send + 'static>(
    strategy: &mut dyn SnapshotStrategy<H>,
    owner: &CloseableRegistry,
    request: &SnapshotRequest,
    factory: Arc<dyn CheckpointStreamFactory>,
) -> Result<AsyncSnapshotTask<SnapshotResult<H>>>
where
    SnapshotResult<H>: StateObject,
{
    let started = Instant::now();
    let callable = strategy.snapshot(request, factory)?;
    let (checkpoint_id, sync) = (request.id, started.elapsed());
    let description = strategy.description().to_owned();
    tracing::debug!(
        target: "state_api::snapshot",
        strategy = %description,
        checkpoint_id = checkpoint_id.get(),
        sync_ms = millis(sync),
        "synchronous part done"
    );
    let traced = Traced {
        inner: callable,
        description,
        checkpoint_id,
    };
    AsyncSnapshotTask::new(checkpoint_id, Box::new(traced), owner)
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
#[derive(Debug)]
pub struct KeyedSnapshots {
    checkpoint: KeyedStrategy,
    /// `None` when checkpoints already use the full strategy.
    savepoint: Option<KeyedStrategy>,
    owner: CloseableRegistry,
    what: String,
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
        let what = || self.what.clone();
        (!self.owner.is_closed())
            .then_some(())
            .ok_or_else(|| Error::Closed { what: what() })
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
        run_snapshot_strategy(&mut **strategy, &self.owner, request, factory)
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

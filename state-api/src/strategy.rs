//! [`SnapshotStrategy`]: a snapshot algorithm separated from its backend, and
//! [`run_snapshot_strategy`], which runs its synchronous part and traces both parts.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    AsyncSnapshotCallable, AsyncSnapshotTask, CheckpointId, CheckpointStreamFactory,
    CloseableRegistry, Result, SnapshotContext, SnapshotRequest, SnapshotResult, StateObject,
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
/// The strategy's errors, and [`Error::Closed`](crate::Error::Closed) when `owner` is closed.
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

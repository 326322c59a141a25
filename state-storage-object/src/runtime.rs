//! The bridge from synchronous callers to `object_store`'s async API.
//!
//! One tokio runtime per process, owned by this crate and started on first use, runs every
//! request: [`IO_THREADS`] worker threads named `snapstate-object-io`. A synchronous caller
//! never enters it: [`Pending::spawn`] hands a future to the runtime and returns at once,
//! and [`Pending::wait`] blocks the calling thread on a plain channel until the task sends
//! its output. The caller may be any thread: a snapshot's asynchronous part on a plain
//! thread, a thread of another tokio runtime (there is no nested `block_on`, so no panic;
//! the waiting thread is blocked like in any other blocking i/o, so async applications call
//! storage from `spawn_blocking`), or a test's main thread.
//!
//! Every task can be aborted through its [`AbortHandle`]; a waiter of an aborted task wakes
//! with `None`. That is how closing a stream from another thread unblocks a writer stuck on
//! the network.

use std::future::Future;
use std::io;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, sync_channel};

use state_api::{Error, Result};
use tokio::runtime::{Builder, Runtime};
use tokio::task::AbortHandle;

/// Worker threads of the i/o runtime: requests are async, so a few threads keep many
/// uploads in flight.
pub(crate) const IO_THREADS: usize = 2;

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(IO_THREADS)
                .thread_name("snapstate-object-io")
                .enable_io()
                .enable_time()
                .build()
                .map_err(|err| err.to_string())
        })
        .as_ref()
        .map_err(|reason| Error::Stream {
            context: "starting the object storage i/o runtime".into(),
            source: io::Error::other(reason.clone()),
        })
}

/// A task running on the i/o runtime, and the channel its output arrives on.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    output: Receiver<T>,
    abort: AbortHandle,
}

impl<T: Send + 'static> Pending<T> {
    /// Starts `future` on the i/o runtime.
    pub(crate) fn spawn<F>(future: F) -> Result<Self>
    where
        F: Future<Output = T> + Send + 'static,
    {
        // Capacity 1 and one send: the task never blocks on the channel.
        let (sender, output) = sync_channel(1);
        let task = runtime()?.spawn(async move {
            // The waiter may be gone (a dropped stream); then the output is dropped.
            let _ = sender.send(future.await);
        });
        Ok(Pending {
            output,
            abort: task.abort_handle(),
        })
    }

    /// The handle that aborts the task.
    pub(crate) fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Blocks until the task's output arrives; `None` if the task was aborted (or
    /// panicked) before producing it.
    pub(crate) fn wait(self) -> Option<T> {
        self.output.recv().ok()
    }

    /// Aborts the task; its output, if already sent, is dropped.
    pub(crate) fn abort(self) {
        self.abort.abort();
    }
}

/// Runs `future` on the i/o runtime and waits for its output.
pub(crate) fn block_on<F>(future: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Pending::spawn(future)?.wait().ok_or_else(|| Error::Stream {
        context: "running an object storage request".into(),
        source: io::Error::other("the request's task stopped without a result"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_works_inside_another_tokio_runtime() {
        let outer = Builder::new_current_thread().build().unwrap();
        let inner = outer.block_on(async { block_on(async { 40 + 2 }).unwrap() });
        assert_eq!(inner, 42);
    }

    #[test]
    fn waiting_on_an_aborted_task_returns_none() {
        let (_hold, never) = tokio::sync::oneshot::channel::<()>();
        let pending = Pending::spawn(async move { never.await.is_ok() }).unwrap();
        pending.abort_handle().abort();
        assert_eq!(pending.wait(), None, "an aborted task produced output");
    }
}

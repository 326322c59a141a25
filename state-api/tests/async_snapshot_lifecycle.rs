//! The five lifecycle cases of an asynchronous snapshot part (Flink's
//! `AsyncSnapshotCallableTest`), plus drop and late-cancel: the order of calls, exactly-once
//! cleanup, the kind of outcome, and an owner registry that holds nothing afterwards.

#![allow(clippy::unwrap_used)]

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

use state_api::CheckpointId;
use state_api::{
    AsyncSnapshotCallable, AsyncSnapshotTask, CheckpointStateOutputStream, CheckpointStreamFactory,
    CheckpointedStateScope, Closeable, CloseableRegistry, Error, Result, SnapshotContext,
    SnapshotResult, StreamStateHandle,
};
use state_storage_local::LocalCheckpointStorage;

type Log = Arc<Mutex<Vec<&'static str>>>;
type Output = SnapshotResult<Arc<dyn StreamStateHandle>>;

/// A stream whose writes block until it is closed from another thread.
struct BlockingStream {
    closed: Arc<(Mutex<bool>, Condvar)>,
    closes: Arc<AtomicUsize>,
    entered_write: Sender<()>,
}

impl fmt::Debug for BlockingStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlockingStream")
    }
}

impl Write for BlockingStream {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        let _ = self.entered_write.send(());
        let (lock, cvar) = &*self.closed;
        let mut closed = lock.lock().unwrap();
        while !*closed {
            closed = cvar.wait(closed).unwrap();
        }
        Err(Error::Closed {
            what: "blocking test stream".into(),
        }
        .into_io())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CheckpointStateOutputStream for BlockingStream {
    fn pos(&self) -> u64 {
        0
    }

    fn close_and_get_handle(self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        Err(Error::Closed {
            what: "blocking test stream".into(),
        })
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        let closed = self.closed.clone();
        let closes = self.closes.clone();
        Arc::new(move || {
            let (lock, cvar) = &*closed;
            let mut closed = lock.lock().unwrap();
            if !*closed {
                *closed = true;
                closes.fetch_add(1, Ordering::SeqCst);
            }
            cvar.notify_all();
            Ok(())
        })
    }
}

enum Behaviour {
    /// Writes `data` to a stream of the factory and returns its handle.
    Succeed(Arc<dyn CheckpointStreamFactory>, Vec<u8>),
    /// Fails with an error of its own.
    Fail,
    /// Writes to a blocking stream until closed.
    Block(BlockingStream),
    /// Completes a stream of the factory, then waits for a go signal before returning.
    SucceedAfter(Arc<dyn CheckpointStreamFactory>, Sender<()>, Receiver<()>),
}

struct TestCallable {
    log: Log,
    cleanups: Arc<AtomicUsize>,
    behaviour: Option<Behaviour>,
}

impl AsyncSnapshotCallable<Output> for TestCallable {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<Output> {
        self.log.lock().unwrap().push("call_internal");
        let write = |factory: &Arc<dyn CheckpointStreamFactory>,
                     data: &[u8]|
         -> Result<Arc<dyn StreamStateHandle>> {
            let mut stream = factory.create_output_stream(CheckpointedStateScope::Exclusive)?;
            let key = context.register(stream.closer())?;
            stream
                .write_all(data)
                .map_err(|e| Error::stream("writing", e))?;
            let handle = stream.close_and_get_handle()?;
            context.unregister(key);
            Ok(handle)
        };
        match self.behaviour.take().unwrap() {
            Behaviour::Succeed(factory, data) => Ok(SnapshotResult::of(write(&factory, &data)?)),
            Behaviour::Fail => Err(Error::Unsupported("test failure".into())),
            Behaviour::Block(mut stream) => {
                context.register(stream.closer())?;
                stream
                    .write_all(b"never lands")
                    .map_err(|e| Error::stream("writing", e))?;
                unreachable!("the blocking stream only returns errors")
            }
            Behaviour::SucceedAfter(factory, done, go) => {
                let handle = write(&factory, &[5; 4096])?;
                done.send(()).unwrap();
                go.recv().unwrap();
                Ok(SnapshotResult::of(handle))
            }
        }
    }

    fn cleanup_provided_resources(&mut self) {
        self.log.lock().unwrap().push("cleanup");
        self.cleanups.fetch_add(1, Ordering::SeqCst);
    }

    fn log_async_snapshot_complete(&mut self, _elapsed: std::time::Duration) {
        self.log.lock().unwrap().push("log_complete");
    }
}

struct Fixture {
    owner: CloseableRegistry,
    log: Log,
    cleanups: Arc<AtomicUsize>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            owner: CloseableRegistry::default(),
            log: Log::default(),
            cleanups: Arc::default(),
        }
    }

    fn task(&self, behaviour: Behaviour) -> AsyncSnapshotTask<Output> {
        let callable = TestCallable {
            log: self.log.clone(),
            cleanups: self.cleanups.clone(),
            behaviour: Some(behaviour),
        };
        let task =
            AsyncSnapshotTask::new(CheckpointId::new(42), Box::new(callable), &self.owner).unwrap();
        assert_eq!(
            self.owner.len(),
            1,
            "a created task is registered with its owner"
        );
        task
    }

    fn assert_finished(&self, expected_log: &[&str]) {
        assert_eq!(*self.log.lock().unwrap(), expected_log);
        assert_eq!(
            self.cleanups.load(Ordering::SeqCst),
            1,
            "cleanup runs exactly once"
        );
        assert!(
            self.owner.is_empty(),
            "the owner's registry still holds the task"
        );
    }

    fn blocking(&self) -> (Behaviour, Arc<AtomicUsize>, Receiver<()>) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let closes = Arc::new(AtomicUsize::new(0));
        let stream = BlockingStream {
            closed: Arc::default(),
            closes: closes.clone(),
            entered_write: entered_tx,
        };
        (Behaviour::Block(stream), closes, entered_rx)
    }
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn normal_run_calls_internal_then_logs_then_cleans_up() {
    let fixture = Fixture::new();
    let root = tempfile::tempdir().unwrap();
    let storage = LocalCheckpointStorage::new(root.path())
        .unwrap()
        .with_file_state_threshold(0);
    let factory: Arc<dyn CheckpointStreamFactory> =
        Arc::new(storage.stream_factory(CheckpointId::new(42)).unwrap());
    let task = fixture.task(Behaviour::Succeed(factory, b"state bytes".to_vec()));
    let result = task.spawn().unwrap().join().unwrap().unwrap();
    let handle = result.job_manager_owned().unwrap();
    assert_eq!(handle.state_size(), 11);
    assert_eq!(
        files_under(&storage.checkpoint_dir(CheckpointId::new(42))),
        1
    );
    fixture.assert_finished(&["call_internal", "log_complete", "cleanup"]);
}

#[test]
fn error_in_call_internal_is_returned_and_cleanup_still_runs() {
    let fixture = Fixture::new();
    let err = fixture.task(Behaviour::Fail).run().unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(
        !err.is_cancelled(),
        "a failure is not a cancellation: {err}"
    );
    fixture.assert_finished(&["call_internal", "cleanup"]);
}

#[test]
fn cancel_while_running_closes_the_blocked_stream_and_reports_cancellation() {
    let fixture = Fixture::new();
    let (behaviour, closes, entered_write) = fixture.blocking();
    let task = fixture.task(behaviour);
    let canceller = task.canceller();
    let running = task.spawn().unwrap();
    entered_write.recv().unwrap();
    assert!(canceller.cancel(), "cancel of a running task takes effect");
    let err = running.join().unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Cancelled { checkpoint_id } if checkpoint_id == 42),
        "{err}"
    );
    assert_eq!(
        closes.load(Ordering::SeqCst),
        1,
        "the blocked stream is closed once"
    );
    assert!(canceller.is_done());
    assert!(
        !canceller.cancel(),
        "a finished task cannot be cancelled again"
    );
    fixture.assert_finished(&["call_internal", "cleanup"]);
}

#[test]
fn closing_the_owner_registry_while_running_cancels() {
    let fixture = Fixture::new();
    let (behaviour, closes, entered_write) = fixture.blocking();
    let running = fixture.task(behaviour).spawn().unwrap();
    entered_write.recv().unwrap();
    fixture.owner.close().unwrap();
    let err = running.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert_eq!(closes.load(Ordering::SeqCst), 1);
    fixture.assert_finished(&["call_internal", "cleanup"]);
}

#[test]
fn cancel_before_run_cleans_up_at_once_and_never_calls_internal() {
    let fixture = Fixture::new();
    let task = fixture.task(Behaviour::Fail);
    assert!(task.cancel());
    assert_eq!(
        *fixture.log.lock().unwrap(),
        ["cleanup"],
        "cleanup runs at cancel time"
    );
    let err = task.run().unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    fixture.assert_finished(&["cleanup"]);
}

#[test]
fn dropping_a_task_that_never_ran_releases_its_resources() {
    let fixture = Fixture::new();
    drop(fixture.task(Behaviour::Fail));
    fixture.assert_finished(&["cleanup"]);
}

#[test]
fn task_for_a_closed_owner_is_refused_and_cleaned_up() {
    let fixture = Fixture::new();
    fixture.owner.close().unwrap();
    let callable = TestCallable {
        log: fixture.log.clone(),
        cleanups: fixture.cleanups.clone(),
        behaviour: Some(Behaviour::Fail),
    };
    let err = AsyncSnapshotTask::new(CheckpointId::new(42), Box::new(callable), &fixture.owner)
        .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err}");
    fixture.assert_finished(&["cleanup"]);
}

#[test]
fn cancel_after_the_stream_completed_discards_the_result() {
    let fixture = Fixture::new();
    let root = tempfile::tempdir().unwrap();
    let storage = LocalCheckpointStorage::new(root.path())
        .unwrap()
        .with_file_state_threshold(0);
    let factory: Arc<dyn CheckpointStreamFactory> =
        Arc::new(storage.stream_factory(CheckpointId::new(42)).unwrap());
    let (done_tx, done_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let task = fixture.task(Behaviour::SucceedAfter(factory, done_tx, go_rx));
    let canceller = task.canceller();
    let running = task.spawn().unwrap();
    done_rx.recv().unwrap();
    assert_eq!(
        files_under(&storage.checkpoint_dir(CheckpointId::new(42))),
        1,
        "the stream completed"
    );
    assert!(canceller.cancel());
    go_tx.send(()).unwrap();
    let err = running.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert_eq!(
        files_under(&storage.checkpoint_dir(CheckpointId::new(42))),
        0,
        "a cancelled snapshot leaves no file"
    );
    fixture.assert_finished(&["call_internal", "cleanup"]);
}

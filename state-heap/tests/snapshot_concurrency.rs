//! The heap snapshot while the processing thread keeps writing: the asynchronous part runs
//! on another thread and sees exactly the state of the synchronous part, the live state
//! sees every later write, and closing the backend while a snapshot is blocked in i/o
//! cancels it without leaving files behind.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use state_api::CheckpointId;
use state_api::MaxParallelism;
use state_api::SnapshotRequest;
use state_api::{
    CheckpointStateOutputStream, CheckpointStreamFactory, CheckpointedStateScope, Closeable, Error,
    KeyGroupRange, KeyedBackendParams, KeyedStateBackend, Registry, Result, StateMetaInfo,
    StreamStateHandle,
};
use state_heap::HeapKeyedStateBackend;
use state_storage_local::{LocalCheckpointStorage, LocalDirectoryStreamFactory};

const STATE: &str = "counts";
const LISTS: &str = "events";

fn params() -> KeyedBackendParams {
    params_of(128)
}

/// Parameters of a backend owning all `key_groups` key groups.
fn params_of(key_groups: u32) -> KeyedBackendParams {
    let range = KeyGroupRange::new(0, key_groups - 1).unwrap();
    KeyedBackendParams::new(MaxParallelism::of(key_groups), range)
}

fn backend() -> HeapKeyedStateBackend {
    backend_with(params())
}

fn backend_with(params: KeyedBackendParams) -> HeapKeyedStateBackend {
    state_heap::link();
    let mut backend = HeapKeyedStateBackend::new(params, Registry::global()).unwrap();
    backend
        .register_state(&StateMetaInfo::value(STATE, "void", "u64-be"))
        .unwrap();
    backend
        .register_state(&StateMetaInfo::list(LISTS, "void", "bytes"))
        .unwrap();
    backend
}

type Model = BTreeMap<u64, (u64, Vec<Vec<u8>>)>;

fn apply(backend: &mut HeapKeyedStateBackend, model: &mut Model, key: u64, round: u64) {
    backend.set_current_key(&key.to_be_bytes()).unwrap();
    let entry = model.entry(key).or_default();
    if round > 0 && key % 7 == round % 7 {
        backend.clear(STATE, b"").unwrap();
        backend.clear(LISTS, b"").unwrap();
        model.remove(&key);
        return;
    }
    entry.0 = key * 1000 + round;
    let element = format!("{key}@{round}").into_bytes();
    entry.1.push(element.clone());
    backend
        .put_value(STATE, b"", &entry.0.to_be_bytes())
        .unwrap();
    backend.append_to_list(LISTS, b"", &element).unwrap();
}

fn check(backend: &mut HeapKeyedStateBackend, model: &Model, keys: u64) {
    for key in 0..keys {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        let expected = model.get(&key);
        let value = backend.value(STATE, b"").unwrap();
        assert_eq!(
            value,
            expected.map(|(v, _)| v.to_be_bytes().to_vec()),
            "value of key {key}"
        );
        let list = backend.list(LISTS, b"").unwrap();
        assert_eq!(
            list,
            expected.map(|(_, l)| l.clone()).unwrap_or_default(),
            "list of key {key}"
        );
    }
}

#[test]
fn writes_during_the_asynchronous_part_reach_the_live_state_but_not_the_snapshot() {
    writes_during_the_asynchronous_part(params(), 20_000);
}

/// The same with every key in one key group, whose map is split into parts (and splits
/// again when cleared keys come back while the snapshot holds the older parts).
#[test]
fn one_key_group_split_into_parts_snapshots_and_restores_exactly() {
    writes_during_the_asynchronous_part(params_of(1), 50_000);
}

/// The same over four key groups of 25,000 keys each: a restoring thread sizes the maps of
/// its second key group ahead from what its first one held.
#[test]
fn key_groups_restored_into_maps_sized_ahead_hold_exactly_their_entries() {
    writes_during_the_asynchronous_part(params_of(4), 100_000);
}

fn writes_during_the_asynchronous_part(params: KeyedBackendParams, keys: u64) {
    let mut backend = backend_with(params.clone());
    let mut model = Model::new();
    for key in 0..keys {
        apply(&mut backend, &mut model, key, 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalCheckpointStorage::new(dir.path()).unwrap();
    let factory = Arc::new(storage.stream_factory(CheckpointId::new(1)).unwrap());
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            factory,
        )
        .unwrap();
    let at_snapshot = model.clone();
    let running = task.spawn().unwrap();
    // Overwrite, append to and delete entries while the other thread writes the snapshot.
    for round in 1..=3 {
        for key in 0..keys {
            apply(&mut backend, &mut model, key, round);
        }
    }
    let result = running.join().unwrap().unwrap();
    check(&mut backend, &model, keys);

    let handle = result.job_manager_owned().unwrap().clone();
    let mut restored =
        HeapKeyedStateBackend::restore(params, Registry::global(), &[handle]).unwrap();
    check(&mut restored, &at_snapshot, keys);
}

/// A stream that signals its first write, then blocks it until the stream is closed.
#[derive(Debug)]
struct BlockingStream {
    inner: Box<dyn CheckpointStateOutputStream>,
    started: Option<mpsc::Sender<()>>,
    closed: Arc<(Mutex<bool>, Condvar)>,
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(started) = self.started.take() {
            started.send(()).unwrap();
            let (lock, signal) = &*self.closed;
            let mut closed = lock.lock().unwrap();
            while !*closed {
                closed = signal.wait(closed).unwrap();
            }
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl CheckpointStateOutputStream for BlockingStream {
    fn pos(&self) -> u64 {
        self.inner.pos()
    }

    fn close_and_get_handle(self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        self.inner.close_and_get_handle()
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        let inner = self.inner.closer();
        let closed = self.closed.clone();
        Arc::new(move || {
            let result = inner.close();
            let (lock, signal) = &*closed;
            *lock.lock().unwrap() = true;
            signal.notify_all();
            result
        })
    }
}

#[derive(Debug)]
struct BlockingFactory {
    inner: LocalDirectoryStreamFactory,
    started: Mutex<Option<mpsc::Sender<()>>>,
}

impl CheckpointStreamFactory for BlockingFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        Ok(Box::new(BlockingStream {
            inner: self.inner.create_output_stream(scope)?,
            started: self.started.lock().unwrap().take(),
            closed: Arc::default(),
        }))
    }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => files.extend(files_under(&path)),
            false => files.push(path),
        }
    }
    files
}

#[test]
fn closing_the_backend_cancels_a_blocked_snapshot_and_leaves_no_files() {
    let mut backend = backend();
    let mut model = Model::new();
    for key in 0..1_000 {
        apply(&mut backend, &mut model, key, 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalCheckpointStorage::new(dir.path())
        .unwrap()
        .with_file_state_threshold(0);
    let (started_tx, started) = mpsc::channel();
    let factory = Arc::new(BlockingFactory {
        inner: storage.stream_factory(CheckpointId::new(7)).unwrap(),
        started: Mutex::new(Some(started_tx)),
    });
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(7), 0),
            factory,
        )
        .unwrap();
    let running = task.spawn().unwrap();
    started.recv().unwrap();
    backend.close().unwrap();
    let err = running.join().unwrap().unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert_eq!(files_under(dir.path()), Vec::<std::path::PathBuf>::new());

    let err = backend.put_value(STATE, b"", b"late").unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err}");
}

//! `KeyedSnapshots`, what every keyed backend does around its strategies: strategies picked
//! by name and checked against the backend, savepoints always with the full strategy, and
//! a closed backend that refuses snapshots.

#![allow(clippy::unwrap_used)]

use std::any::Any;
use std::sync::{Arc, Mutex};

use state_api::{
    AsyncSnapshotCallable, CheckpointId, CheckpointStreamFactory, Error, KeyGroupRange,
    KeyedBackendParams, KeyedSnapshotResult, KeyedSnapshotStrategyFactory, KeyedStateHandle,
    MaxParallelism, Registry, Result, SnapshotContext, SnapshotRequest, SnapshotResult,
    SnapshotStrategy,
};
use state_format::KeyedSnapshots;
use state_storage_local::MemoryCheckpointStreamFactory;

/// Which strategies took snapshots, in order: the state the backend shares with them.
type Log = Arc<Mutex<Vec<&'static str>>>;

/// A strategy that records, in the backend's shared log, which strategy took a snapshot.
#[derive(Debug)]
struct Recording {
    name: &'static str,
    log: Log,
}

struct Nothing;

impl AsyncSnapshotCallable<KeyedSnapshotResult> for Nothing {
    fn call_internal(&mut self, _: &SnapshotContext) -> Result<KeyedSnapshotResult> {
        Ok(SnapshotResult::empty())
    }

    fn cleanup_provided_resources(&mut self) {}
}

impl SnapshotStrategy<Arc<dyn KeyedStateHandle>> for Recording {
    fn description(&self) -> &str {
        self.name
    }

    fn snapshot(
        &mut self,
        _: &SnapshotRequest,
        _: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<Box<dyn AsyncSnapshotCallable<KeyedSnapshotResult>>> {
        self.log.lock().unwrap().push(self.name);
        Ok(Box::new(Nothing))
    }
}

#[derive(Debug)]
struct Factory {
    name: &'static str,
    backend: &'static str,
}

impl KeyedSnapshotStrategyFactory for Factory {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        "test strategy"
    }

    fn backend(&self) -> &'static str {
        self.backend
    }

    fn create(
        &self,
        backend_state: &dyn Any,
        _: &KeyedBackendParams,
        _: &Registry,
    ) -> Result<Box<dyn SnapshotStrategy<Arc<dyn KeyedStateHandle>>>> {
        let log = state_api::backend_state_as::<Log>(backend_state, self.name, self.backend)?;
        Ok(Box::new(Recording {
            name: self.name,
            log: log.clone(),
        }))
    }
}

fn registry() -> Registry {
    let mut registry = Registry::default();
    for (name, backend) in [
        ("mine-full", "mine"),
        ("mine-delta", "mine"),
        ("theirs", "other"),
    ] {
        registry
            .register_keyed_strategy(Factory { name, backend })
            .unwrap();
    }
    registry
}

fn params(strategy: Option<&str>) -> KeyedBackendParams {
    let mut params =
        KeyedBackendParams::new(MaxParallelism::of(128), KeyGroupRange::new(0, 127).unwrap());
    params.strategy = strategy.map(str::to_owned);
    params
}

fn run(snapshots: &mut KeyedSnapshots, request: SnapshotRequest) -> Result<()> {
    let factory = Arc::new(MemoryCheckpointStreamFactory::default());
    snapshots.snapshot(&request, factory)?.run().map(drop)
}

#[test]
fn checkpoints_use_the_configured_strategy_and_savepoints_the_full_one() {
    let log = Log::default();
    let registry = registry();
    let mut snapshots = KeyedSnapshots::new(
        "mine",
        "mine-full",
        &log,
        &params(Some("mine-delta")),
        &registry,
    )
    .unwrap();
    for request in [
        SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
        SnapshotRequest::savepoint(CheckpointId::new(2), 0),
        SnapshotRequest::checkpoint(CheckpointId::new(3), 0),
    ] {
        run(&mut snapshots, request).unwrap();
    }
    assert_eq!(
        *log.lock().unwrap(),
        ["mine-delta", "mine-full", "mine-delta"]
    );
    assert_eq!(snapshots.pending(), 0);

    // Without a configured strategy both kinds use the full one.
    let log = Log::default();
    let mut snapshots =
        KeyedSnapshots::new("mine", "mine-full", &log, &params(None), &registry).unwrap();
    for request in [
        SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
        SnapshotRequest::savepoint(CheckpointId::new(2), 0),
    ] {
        run(&mut snapshots, request).unwrap();
    }
    assert_eq!(*log.lock().unwrap(), ["mine-full", "mine-full"]);
}

#[test]
fn a_strategy_of_another_backend_or_an_unknown_one_is_refused() {
    let log = Log::default();
    let registry = registry();
    let err = KeyedSnapshots::new(
        "mine",
        "mine-full",
        &log,
        &params(Some("theirs")),
        &registry,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string().contains("`theirs` is for backend `other`"),
        "{err}"
    );
    let err = KeyedSnapshots::new("mine", "mine-full", &log, &params(Some("nope")), &registry)
        .unwrap_err();
    assert!(matches!(err, Error::UnknownPlugin { .. }), "{err}");
    // The strategy gets the backend's state, or refuses another backend's.
    let err = KeyedSnapshots::new("mine", "mine-full", &"not a log", &params(None), &registry)
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

#[test]
fn a_closed_backend_takes_no_snapshot() {
    let log = Log::default();
    let registry = registry();
    let mut snapshots =
        KeyedSnapshots::new("mine", "mine-full", &log, &params(None), &registry).unwrap();
    snapshots.check_open().unwrap();
    snapshots.close().unwrap();
    let err = snapshots.check_open().unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("mine backend of key groups 0..=127"),
        "{err}"
    );
    let err = run(
        &mut snapshots,
        SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err}");
    assert!(log.lock().unwrap().is_empty(), "no strategy ran");
}

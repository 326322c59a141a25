//! The byte-level backend contracts that configuration, the conformance kit and the
//! benchmark drive by name: [`KeyedStateBackend`] and [`OperatorStateBackend`], and the
//! factories plugins register to create and restore them.
//!
//! Keys, namespaces, values, list elements and map user keys cross this boundary as
//! serialized bytes; which serializer produced them is recorded per state in
//! [`StateMetaInfo`]. Backends may offer typed accessors on top.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::SnapshotRequest;
use crate::{
    AsyncSnapshotTask, CheckpointListener, CheckpointStreamFactory, KeyGroup, KeyGroupRange,
    KeyedStateHandle, LocalRecoveryConfig, MaxParallelism, OperatorStateMetaInfo,
    OperatorStreamStateHandle, Registry, Result, SnapshotResult, SnapshotStrategy, StateMetaInfo,
    SystemClock, Timer, TtlClock, UNCOMPRESSED,
};

/// The result of a keyed snapshot.
pub type KeyedSnapshotResult = SnapshotResult<Arc<dyn KeyedStateHandle>>;

/// The result of an operator state snapshot.
pub type OperatorSnapshotResult = SnapshotResult<OperatorStreamStateHandle>;

/// Everything needed to create or restore a keyed backend for one operator instance.
#[derive(Debug, Clone)]
pub struct KeyedBackendParams {
    /// Max parallelism: the number of key groups of the job.
    pub max_parallelism: MaxParallelism,
    /// The key groups this instance owns.
    pub key_group_range: KeyGroupRange,
    /// Stable id of the key serializer (recorded in snapshots and checked on restore).
    pub key_serializer: String,
    /// Registered name of the snapshot strategy for checkpoints; `None` picks the
    /// backend's default. Savepoints always use the backend's full, canonical strategy.
    pub strategy: Option<String>,
    /// Registered name of the compression decorator for key-group sections.
    pub compression: String,
    /// Whether and where task-local copies are kept.
    pub local_recovery: LocalRecoveryConfig,
    /// A directory the backend may use for its working files (RocksDB instance files).
    pub working_dir: Option<PathBuf>,
    /// Backend-specific options by key (`rocksdb.block-cache-size`, ...).
    pub options: BTreeMap<String, String>,
    /// The time states' time to live is measured by ([`SystemClock`] by default).
    pub clock: Arc<dyn TtlClock>,
}

impl KeyedBackendParams {
    /// Checks that the owned key groups exist among the max parallelism's: what every
    /// backend checks when it is created.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming both.
    pub fn check_range(&self) -> Result<()> {
        let range = self.key_group_range;
        if range.is_empty() || range.end().get() < self.max_parallelism.get() {
            return Ok(());
        }
        Err(crate::Error::InvalidArgument(format!(
            "key-group range {range} does not fit max parallelism {}",
            self.max_parallelism
        )))
    }

    /// The key group of `key`, checked to be one this instance owns: what every backend's
    /// `set_current_key` computes first.
    ///
    /// # Errors
    ///
    /// [`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange) for a key of another
    /// instance.
    pub fn key_group_of(&self, key: &[u8]) -> Result<KeyGroup> {
        let key_group = self.max_parallelism.key_group_of(key);
        match self.key_group_range.contains(key_group) {
            true => Ok(key_group),
            false => Err(crate::Error::KeyGroupOutOfRange {
                key_group,
                range: self.key_group_range,
            }),
        }
    }

    /// Parameters for `key_group_range` of `max_parallelism` key groups, with the default
    /// strategy, no compression, no local recovery and raw byte keys.
    pub fn new(max_parallelism: MaxParallelism, key_group_range: KeyGroupRange) -> Self {
        KeyedBackendParams {
            max_parallelism,
            key_group_range,
            key_serializer: "bytes".into(),
            strategy: None,
            compression: UNCOMPRESSED.into(),
            local_recovery: LocalRecoveryConfig::disabled(),
            working_dir: None,
            options: BTreeMap::new(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A keyed state backend for one key-group range of one operator instance.
///
/// Operations act on the current key set by [`set_current_key`](Self::set_current_key),
/// whose key group is computed once per key ([`KeyedBackendParams::key_group_of`]).
///
/// The rules every backend keeps (the conformance kit checks them):
///
/// - A key of another instance's key groups is [`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange);
///   an access before any `set_current_key` is [`Error::InvalidArgument`](crate::Error::InvalidArgument);
///   a state that is not registered is [`Error::NotFound`](crate::Error::NotFound); a state
///   used as another kind (a list as a map) is [`Error::Incompatible`](crate::Error::Incompatible);
///   any call after [`close`](Self::close) is [`Error::Closed`](crate::Error::Closed).
/// - A snapshot of a backend with registered states returns a handle even when they hold
///   no entries, so restore gets the states' meta info back.
/// - Restore checks every handle's key groups against the max parallelism first, then each snapshot's
///   header against `params`: the backend (not the caller) refuses another key serializer
///   or max parallelism with [`Error::Incompatible`](crate::Error::Incompatible), and a
///   handle kind it cannot read with [`Error::Unsupported`](crate::Error::Unsupported).
pub trait KeyedStateBackend: CheckpointListener + Send + fmt::Debug {
    /// The registered name of the backend (`heap`, `rocksdb`).
    fn backend_name(&self) -> &str;

    /// The key groups this instance owns.
    fn key_group_range(&self) -> KeyGroupRange;

    /// Max parallelism of the job: its number of key groups.
    fn max_parallelism(&self) -> MaxParallelism;

    /// Registers a state; registering the same meta info again is a no-op, registering a
    /// different kind or serializers under a used name is an error.
    fn register_state(&mut self, meta: &StateMetaInfo) -> Result<()>;

    /// Meta info of every registered state.
    fn states(&self) -> Vec<StateMetaInfo>;

    /// Sets the key later operations act on; fails with
    /// [`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange) for a key of a key
    /// group this instance does not own.
    fn set_current_key(&mut self, key: &[u8]) -> Result<()>;

    /// The value of value state `state` for the current key in `namespace`.
    fn value(&self, state: &str, namespace: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets the value of value state `state` for the current key in `namespace`.
    fn put_value(&mut self, state: &str, namespace: &[u8], value: &[u8]) -> Result<()>;

    /// The elements of list state `state` (empty when absent).
    fn list(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Appends one element to list state `state`.
    fn append_to_list(&mut self, state: &str, namespace: &[u8], element: &[u8]) -> Result<()>;

    /// Replaces the elements of list state `state` (an empty slice removes the entry).
    fn update_list(&mut self, state: &str, namespace: &[u8], elements: &[Vec<u8>]) -> Result<()>;

    /// The value under `user_key` in map state `state`.
    fn map_value(&self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Puts `user_key -> value` into map state `state`.
    fn put_map_value(
        &mut self,
        state: &str,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()>;

    /// Removes `user_key` from map state `state`.
    fn remove_map_value(&mut self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<()>;

    /// All entries of map state `state`, ordered by user key bytes.
    fn map_entries(&self, state: &str, namespace: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Removes the current key's entry of `state` in `namespace`, whatever its kind.
    fn clear(&mut self, state: &str, namespace: &[u8]) -> Result<()>;

    /// Every key that has an entry in `state` under `namespace`.
    fn keys(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Adds `timer` (whose key must be of this instance's key groups) to priority-queue
    /// state `state`; `false` when it was there already.
    fn add_timer(&mut self, state: &str, timer: &Timer) -> Result<bool>;

    /// Removes `timer` from priority-queue state `state`; `false` when it was not there.
    fn remove_timer(&mut self, state: &str, timer: &Timer) -> Result<bool>;

    /// The earliest timer of `state`, without removing it.
    fn peek_timer(&self, state: &str) -> Result<Option<Timer>>;

    /// Removes and returns, earliest first, at most `limit` timers of `state` due at
    /// `until` (timestamp at most `until`): `poll` is `(i64::MAX, 1)`, the timers a
    /// watermark fires are `(watermark, usize::MAX)`.
    fn poll_timers(&mut self, state: &str, until: i64, limit: usize) -> Result<Vec<Timer>>;

    /// The number of timers in `state`.
    fn timer_count(&self, state: &str) -> Result<usize>;

    /// The timers of `state` in `key_group`, earliest first; a key group this instance
    /// does not own is [`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange).
    fn timers_of(&self, state: &str, key_group: KeyGroup) -> Result<Vec<Timer>>;

    /// Runs the synchronous part of a snapshot with the configured strategy (the full,
    /// canonical one for savepoints) and returns the asynchronous part.
    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<AsyncSnapshotTask<KeyedSnapshotResult>>;

    /// The number of asynchronous snapshot parts this backend's closeable registry holds:
    /// tasks [`snapshot`](Self::snapshot) returned that have not finished, been cancelled
    /// or been dropped. It returns to zero after every outcome of a snapshot (the
    /// conformance kit checks that nothing of a finished snapshot stays registered).
    fn pending_snapshots(&self) -> usize;

    /// Cancels running snapshots, waits for their leases and releases the backend's
    /// resources. Later calls fail with [`Error::Closed`](crate::Error::Closed).
    fn close(&mut self) -> Result<()>;
}

/// Creates and restores one kind of keyed backend; registered by name.
pub trait KeyedStateBackendFactory: Send + Sync + fmt::Debug + 'static {
    /// The registered name (`heap`, `rocksdb`).
    fn name(&self) -> &'static str;

    /// One line for listings.
    fn description(&self) -> &'static str;

    /// Creates an empty backend.
    fn create(
        &self,
        params: KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn KeyedStateBackend>>;

    /// Creates a backend holding the state of `handles` (from one or many old instances)
    /// restricted to `params.key_group_range`.
    fn restore(
        &self,
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Box<dyn KeyedStateBackend>>;
}

/// Creates a keyed snapshot strategy for a backend of the kind it names; registered by
/// name so configuration can pick, say, `rocksdb-incremental` over `rocksdb-full`.
pub trait KeyedSnapshotStrategyFactory: Send + Sync + fmt::Debug + 'static {
    /// The registered name (`heap`, `rocksdb-full`, `rocksdb-incremental`).
    fn name(&self) -> &'static str;

    /// One line for listings.
    fn description(&self) -> &'static str;

    /// The registered name of the keyed backend this strategy snapshots.
    fn backend(&self) -> &'static str;

    /// Creates the strategy over `backend_state`, the state the backend shares with its
    /// strategies (each backend documents its type); a mismatched type is
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    fn create(
        &self,
        backend_state: &dyn Any,
        params: &KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn SnapshotStrategy<Arc<dyn KeyedStateHandle>>>>;
}

/// The state a backend shares with its strategies, as the type `T` strategy `strategy`
/// expects: strategy factories call this on the `backend_state` they are given.
///
/// # Errors
///
/// [`Error::Unsupported`](crate::Error::Unsupported) naming the strategy and the backend it
/// is for, when the state is another backend's.
pub fn backend_state_as<'a, T: 'static>(
    backend_state: &'a dyn Any,
    strategy: &str,
    backend: &str,
) -> Result<&'a T> {
    backend_state.downcast_ref::<T>().ok_or_else(|| {
        crate::Error::Unsupported(format!(
            "strategy `{strategy}` snapshots `{backend}` backends only (given another backend's state)"
        ))
    })
}

/// Everything needed to create or restore an operator state backend.
#[derive(Debug, Clone, Default)]
pub struct OperatorBackendParams {
    /// Index of this instance among `parallelism`.
    pub operator_index: u32,
    /// Number of parallel instances.
    pub parallelism: u32,
    /// Registered name of the snapshot strategy; `None` picks the backend's default.
    pub strategy: Option<String>,
    /// Whether and where task-local copies are kept.
    pub local_recovery: LocalRecoveryConfig,
}

impl OperatorBackendParams {
    /// Parameters for instance `operator_index` of `parallelism`, with the default strategy
    /// and no local recovery.
    pub fn new(operator_index: u32, parallelism: u32) -> Self {
        OperatorBackendParams {
            operator_index,
            parallelism,
            ..Self::default()
        }
    }
}

/// Operator (non-keyed) state of one instance: named list states with a distribution
/// mode and named broadcast map states, each registered with its meta info.
///
/// List and broadcast states share one name space. Using a name that is not registered is
/// [`Error::NotFound`](crate::Error::NotFound); using a list as a broadcast map or the other
/// way round is [`Error::Incompatible`](crate::Error::Incompatible).
pub trait OperatorStateBackend: CheckpointListener + Send + fmt::Debug {
    /// The registered name of the backend.
    fn backend_name(&self) -> &str;

    /// Registers a state; registering the same meta info again is a no-op (also for a state
    /// that came back from a snapshot), a different mode or serializer under a used name is
    /// [`Error::Incompatible`](crate::Error::Incompatible).
    fn register_state(&mut self, meta: &OperatorStateMetaInfo) -> Result<()>;

    /// Meta info of every registered state, ordered by name.
    fn states(&self) -> Vec<OperatorStateMetaInfo>;

    /// The elements of list state `name`.
    fn list(&self, name: &str) -> Result<Vec<Vec<u8>>>;

    /// Replaces the elements of list state `name`.
    fn update_list(&mut self, name: &str, elements: &[Vec<u8>]) -> Result<()>;

    /// Appends one element to list state `name`.
    fn append_to_list(&mut self, name: &str, element: &[u8]) -> Result<()>;

    /// The value under `key` in broadcast state `name`.
    fn broadcast_value(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Puts `key -> value` into broadcast state `name`.
    fn put_broadcast_value(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key` from broadcast state `name`.
    fn remove_broadcast_value(&mut self, name: &str, key: &[u8]) -> Result<()>;

    /// All entries of broadcast state `name`, ordered by key bytes.
    fn broadcast_entries(&self, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Runs the synchronous part of a snapshot and returns the asynchronous part.
    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<AsyncSnapshotTask<OperatorSnapshotResult>>;

    /// The number of asynchronous snapshot parts this backend's closeable registry holds;
    /// zero again after every outcome of a snapshot (see
    /// [`KeyedStateBackend::pending_snapshots`]).
    fn pending_snapshots(&self) -> usize;

    /// Cancels running snapshots and releases the backend's resources. Later calls fail
    /// with [`Error::Closed`](crate::Error::Closed).
    fn close(&mut self) -> Result<()>;
}

/// Creates and restores one kind of operator state backend; registered by name.
pub trait OperatorStateBackendFactory: Send + Sync + fmt::Debug + 'static {
    /// The registered name (`operator`).
    fn name(&self) -> &'static str;

    /// One line for listings.
    fn description(&self) -> &'static str;

    /// Creates an empty backend.
    fn create(
        &self,
        params: OperatorBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn OperatorStateBackend>>;

    /// Creates a backend from the handles redistributed to this instance (see
    /// `state_coordinator::plan_restore` for how a coordinator plans that).
    fn restore(
        &self,
        params: OperatorBackendParams,
        registry: &Registry,
        handles: &[OperatorStreamStateHandle],
    ) -> Result<Box<dyn OperatorStateBackend>>;
}

/// Creates an operator snapshot strategy for an operator backend; registered by name.
pub trait OperatorSnapshotStrategyFactory: Send + Sync + fmt::Debug + 'static {
    /// The registered name (`operator`).
    fn name(&self) -> &'static str;

    /// One line for listings.
    fn description(&self) -> &'static str;

    /// The registered name of the operator backend this strategy snapshots.
    fn backend(&self) -> &'static str;

    /// Creates the strategy over `backend_state`, the state the backend shares with its
    /// strategies (each backend documents its type), for the backend of `params`.
    fn create(
        &self,
        backend_state: &dyn Any,
        params: &OperatorBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn SnapshotStrategy<OperatorStreamStateHandle>>>;
}

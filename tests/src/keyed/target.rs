//! The keyed backend under test ([`KeyedTarget`]), the list of contracts
//! ([`KeyedContract`]), [`run_all`] and the [`keyed_contracts!`](crate::keyed_contracts)
//! macro.

use std::collections::BTreeMap;

use state_api::{Registry, UNCOMPRESSED};

use super::contracts::{
    TIMERS_MODEL_CASES, cancelled_snapshot_leaves_nothing, compression_is_read_from_the_snapshot,
    corrupt_snapshot_is_reported, empty_state, huge_values, incompatible_serializers_are_rejected,
    large_max_parallelism, local_recovery, map_entries_are_ordered, rescale, rescale_chain,
    round_trip, savepoints_are_canonical, snapshot_is_consistent, storage_faults_are_contained,
    timer_savepoint_portability, timers, timers_model, timers_rescale,
    truncated_snapshot_is_detected, ttl_contract,
};
use super::{KeyedBackendCapabilities, RESCALINGS, TIMER_RESCALINGS};

/// A keyed backend under test: the backend and checkpoint strategy by registered name, the
/// decorator its key-group sections are written with, what it promises beyond the basic
/// contract, and the registry that links it.
#[derive(Debug, Clone)]
pub struct KeyedTarget<'r> {
    /// The registry the backend is linked into.
    pub registry: &'r Registry,
    /// The keyed backend's registered name (`heap`, `rocksdb`, a third-party one).
    pub backend: String,
    /// The checkpoint strategy's registered name; `None` picks the backend's default.
    pub strategy: Option<String>,
    /// The compression decorator's registered name.
    pub compression: String,
    /// What the backend promises beyond the basic contract.
    pub capabilities: KeyedBackendCapabilities,
    /// Backend options ([`KeyedBackendParams::options`](state_api::KeyedBackendParams))
    /// every instance is created and restored with.
    pub options: BTreeMap<String, String>,
}

impl<'r> KeyedTarget<'r> {
    /// `backend` with its default strategy, no compression and no capabilities.
    pub fn new(registry: &'r Registry, backend: impl Into<String>) -> Self {
        KeyedTarget {
            registry,
            backend: backend.into(),
            strategy: None,
            compression: UNCOMPRESSED.to_owned(),
            capabilities: KeyedBackendCapabilities::default(),
            options: BTreeMap::new(),
        }
    }

    /// Creates and restores every instance with backend option `key` set to `value`.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }

    /// Checkpoints with strategy `strategy`.
    pub fn strategy(mut self, strategy: impl Into<String>) -> Self {
        self.strategy = Some(strategy.into());
        self
    }

    /// Key-group sections written with decorator `compression`.
    pub fn compression(mut self, compression: impl Into<String>) -> Self {
        self.compression = compression.into();
        self
    }

    /// The backend promises `capabilities`.
    pub fn capabilities(mut self, capabilities: KeyedBackendCapabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The backend and, when set, the strategy and options, as messages name them:
    /// `` `heap` `` or `` `heap` (strategy `heap-incremental`) ``.
    pub(crate) fn name(&self) -> String {
        let mut name = match &self.strategy {
            Some(strategy) => format!("`{}` (strategy `{strategy}`)", self.backend),
            None => format!("`{}`", self.backend),
        };
        for (key, value) in &self.options {
            name.push_str(&format!(" ({key} = {value})"));
        }
        name
    }

    /// What the kit's messages start with: the backend, the strategy (when set), the
    /// decorator and `contract`.
    pub(crate) fn label(&self, contract: &str) -> String {
        format!(
            "keyed backend {} with compression `{}`: {contract}",
            self.name(),
            self.compression
        )
    }
}

/// One contract of the keyed-backend kit, as [`keyed_contracts!`](crate::keyed_contracts)
/// turns each into a test of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedContract {
    /// [`round_trip`].
    RoundTrip,
    /// [`map_entries_are_ordered`].
    MapEntriesAreOrdered,
    /// [`empty_state`].
    EmptyState,
    /// [`huge_values`].
    HugeValues,
    /// [`compression_is_read_from_the_snapshot`].
    CompressionIsReadFromTheSnapshot,
    /// [`savepoints_are_canonical`].
    SavepointsAreCanonical,
    /// [`snapshot_is_consistent`].
    SnapshotIsConsistent,
    /// [`rescale`] for every pair of [`RESCALINGS`]; needs `rescaling`.
    Rescale,
    /// [`rescale_chain`]; needs `rescaling`.
    RescaleChain,
    /// [`large_max_parallelism`].
    LargeMaxParallelism,
    /// [`corrupt_snapshot_is_reported`].
    CorruptSnapshotIsReported,
    /// [`truncated_snapshot_is_detected`].
    TruncatedSnapshotIsDetected,
    /// [`cancelled_snapshot_leaves_nothing`].
    CancelledSnapshotLeavesNothing,
    /// [`storage_faults_are_contained`].
    StorageFaultsAreContained,
    /// [`incompatible_serializers_are_rejected`].
    IncompatibleSerializersAreRejected,
    /// [`local_recovery`]; needs `local_recovery`.
    LocalRecovery,
    /// [`timers`].
    Timers,
    /// [`timers_model`] with [`TIMERS_MODEL_CASES`] sequences; restores into more than one
    /// instance only with `rescaling`.
    TimersModel,
    /// [`timers_rescale`] for every pair of [`TIMER_RESCALINGS`], and a savepoint's timers
    /// from 2 instances into 3 ([`timer_savepoint_portability`] of the backend to itself);
    /// needs `rescaling`.
    TimersRescale,
    /// [`ttl_contract`].
    Ttl,
}

impl KeyedContract {
    /// Every contract, in the order [`run_all`] runs them.
    pub const ALL: [KeyedContract; 20] = [
        KeyedContract::RoundTrip,
        KeyedContract::MapEntriesAreOrdered,
        KeyedContract::EmptyState,
        KeyedContract::HugeValues,
        KeyedContract::CompressionIsReadFromTheSnapshot,
        KeyedContract::SavepointsAreCanonical,
        KeyedContract::SnapshotIsConsistent,
        KeyedContract::Rescale,
        KeyedContract::RescaleChain,
        KeyedContract::LargeMaxParallelism,
        KeyedContract::CorruptSnapshotIsReported,
        KeyedContract::TruncatedSnapshotIsDetected,
        KeyedContract::CancelledSnapshotLeavesNothing,
        KeyedContract::StorageFaultsAreContained,
        KeyedContract::IncompatibleSerializersAreRejected,
        KeyedContract::LocalRecovery,
        KeyedContract::Timers,
        KeyedContract::TimersModel,
        KeyedContract::TimersRescale,
        KeyedContract::Ttl,
    ];

    /// Whether a backend with `capabilities` is held to this contract.
    pub fn applies_to(self, capabilities: KeyedBackendCapabilities) -> bool {
        match self {
            KeyedContract::Rescale | KeyedContract::RescaleChain | KeyedContract::TimersRescale => {
                capabilities.rescaling
            }
            KeyedContract::LocalRecovery => capabilities.local_recovery,
            _ => true,
        }
    }

    /// Runs the contract on `target`, or prints why it does not apply. A broken rule panics
    /// naming the backend, the strategy (when set), the decorator, the contract and the rule.
    pub fn run(self, target: &KeyedTarget<'_>) {
        if !self.applies_to(target.capabilities) {
            self.print_skipped(target);
            return;
        }
        match self {
            KeyedContract::RoundTrip => round_trip(target),
            KeyedContract::MapEntriesAreOrdered => map_entries_are_ordered(target),
            KeyedContract::EmptyState => empty_state(target),
            KeyedContract::HugeValues => huge_values(target),
            KeyedContract::CompressionIsReadFromTheSnapshot => {
                compression_is_read_from_the_snapshot(target)
            }
            KeyedContract::SavepointsAreCanonical => savepoints_are_canonical(target),
            KeyedContract::SnapshotIsConsistent => snapshot_is_consistent(target),
            KeyedContract::Rescale => {
                for (old, new) in RESCALINGS {
                    rescale(target, old, new);
                }
            }
            KeyedContract::RescaleChain => rescale_chain(target),
            KeyedContract::LargeMaxParallelism => large_max_parallelism(target),
            KeyedContract::CorruptSnapshotIsReported => corrupt_snapshot_is_reported(target),
            KeyedContract::TruncatedSnapshotIsDetected => truncated_snapshot_is_detected(target),
            KeyedContract::CancelledSnapshotLeavesNothing => {
                cancelled_snapshot_leaves_nothing(target)
            }
            KeyedContract::StorageFaultsAreContained => storage_faults_are_contained(target),
            KeyedContract::IncompatibleSerializersAreRejected => {
                incompatible_serializers_are_rejected(target)
            }
            KeyedContract::LocalRecovery => local_recovery(target),
            KeyedContract::Timers => timers(target),
            KeyedContract::TimersModel => timers_model(target, TIMERS_MODEL_CASES),
            KeyedContract::TimersRescale => {
                for (old, new) in TIMER_RESCALINGS {
                    timers_rescale(target, old, new);
                }
                timer_savepoint_portability(target, target, 2, 3);
            }
            KeyedContract::Ttl => ttl_contract(target),
        }
    }

    /// Prints that `target` is not held to this contract.
    fn print_skipped(self, target: &KeyedTarget<'_>) {
        println!(
            "{}: skipped: the backend does not declare it",
            target.label(&format!("{self:?}"))
        );
    }
}

/// One `#[test]` per keyed contract on a [`KeyedTarget`], in a module of the given name, so
/// a broken contract fails its own test and hides none of the others:
///
/// ```ignore
/// snapstate_tests::keyed_contracts!(heap_lz4, KeyedTarget::new(registry(), "heap").compression("lz4"));
/// ```
///
/// Contracts the target's capabilities do not include pass after printing why.
#[macro_export]
macro_rules! keyed_contracts {
    ($module:ident, $target:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            fn target() -> $crate::keyed::KeyedTarget<'static> {
                $target
            }

            $crate::keyed_contracts!(@tests
                round_trip RoundTrip,
                map_entries_are_ordered MapEntriesAreOrdered,
                empty_state EmptyState,
                huge_values HugeValues,
                compression_is_read_from_the_snapshot CompressionIsReadFromTheSnapshot,
                savepoints_are_canonical SavepointsAreCanonical,
                snapshot_is_consistent SnapshotIsConsistent,
                rescale Rescale,
                rescale_chain RescaleChain,
                large_max_parallelism LargeMaxParallelism,
                corrupt_snapshot_is_reported CorruptSnapshotIsReported,
                truncated_snapshot_is_detected TruncatedSnapshotIsDetected,
                cancelled_snapshot_leaves_nothing CancelledSnapshotLeavesNothing,
                storage_faults_are_contained StorageFaultsAreContained,
                incompatible_serializers_are_rejected IncompatibleSerializersAreRejected,
                local_recovery LocalRecovery,
                timers Timers,
                timers_model TimersModel,
                timers_rescale TimersRescale,
                ttl Ttl,
            );
        }
    };
    (@tests $($name:ident $contract:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::keyed::KeyedContract::$contract.run(&target());
            }
        )*
    };
}

/// Runs every keyed contract that applies to `target` (see [`KeyedContract::applies_to`])
/// in one test, after printing the ones its capabilities rule out:
/// [`keyed_contracts!`](crate::keyed_contracts) gives each contract a test of its own
/// instead.
pub fn run_all(target: &KeyedTarget<'_>) {
    let (applying, skipped): (Vec<KeyedContract>, Vec<KeyedContract>) = KeyedContract::ALL
        .into_iter()
        .partition(|contract| contract.applies_to(target.capabilities));
    for contract in skipped {
        contract.print_skipped(target);
    }
    for contract in applying {
        contract.run(target);
    }
}

//! The compaction filter of states with a time to live: RocksDB drops a value, a map entry
//! or a whole list whose time to live ran out while it compacts the files holding it
//! (`cleanup_in_compaction`), so expired state leaves the disk without being read.
//!
//! A list is dropped once its latest element expired; one with fresh elements is left
//! whole (reads and full snapshots drop its expired elements). Values a compaction makes
//! by merging list appends are not shown to filters (RocksDB's rule), so a list built by
//! appends alone is cleaned up when it is read or rewritten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rocksdb::{CompactionDecision, Options};
use state_api::{StateMetaInfo, StateTtlConfig, TtlClock};
use state_format::ttl::stored_expiry;

/// The filters of one database's column families, by state: each reads its state's time to
/// live from a cell that registering the state again updates.
///
/// It must outlive the database: the filters live in the column-family options it keeps,
/// which RocksDB's options only point to (and `DB::create_cf` does not keep them alive).
pub(crate) struct TtlFilters {
    clock: Arc<dyn TtlClock>,
    /// Per state with a time to live: its milliseconds, `0` when compactions keep
    /// everything.
    cells: Mutex<HashMap<String, Arc<AtomicI64>>>,
    /// The options holding the filters.
    kept: Mutex<Vec<Options>>,
}

impl std::fmt::Debug for TtlFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TtlFilters")
            .field("states", &cells.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TtlFilters {
    /// Filters measuring time by `clock`.
    pub(crate) fn new(clock: Arc<dyn TtlClock>) -> Self {
        TtlFilters {
            clock,
            cells: Mutex::new(HashMap::new()),
            kept: Mutex::new(Vec::new()),
        }
    }

    /// Sets the compaction filter of state `meta` on the options of its column family,
    /// when it has a time to live.
    pub(crate) fn install(&self, options: &mut Options, meta: &StateMetaInfo) {
        if meta.ttl.is_none() {
            return;
        }
        let cell = Arc::new(AtomicI64::new(millis(meta)));
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        cells.insert(meta.name.clone(), cell.clone());
        let (kind, clock) = (meta.kind, self.clock.clone());
        options.set_compaction_filter("snapstate-ttl", move |_level, _key, value| {
            let ttl = u64::try_from(cell.load(Ordering::Relaxed)).unwrap_or(0);
            let Ok(ttl) = StateTtlConfig::new(ttl) else {
                return CompactionDecision::Keep;
            };
            match stored_expiry(kind, &ttl, value) {
                Some(expiry) if expiry <= clock.now() => CompactionDecision::Remove,
                _ => CompactionDecision::Keep,
            }
        });
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.push(options.clone());
    }

    /// Takes the time to live of state `meta`, registered again, from now on.
    pub(crate) fn update(&self, meta: &StateMetaInfo) {
        let cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = cells.get(&meta.name) {
            cell.store(millis(meta), Ordering::Relaxed);
        }
    }
}

/// The milliseconds a filter of `meta` drops entries after, `0` for none.
fn millis(meta: &StateMetaInfo) -> i64 {
    meta.ttl
        .filter(|ttl| ttl.cleanup_in_compaction)
        .map_or(0, |ttl| ttl.time_to_live())
}

#[cfg(test)]
mod tests {
    use state_api::{
        KeyGroupRange, KeyedBackendParams, KeyedStateBackend, MaxParallelism, Registry,
        TtlVisibility,
    };
    use state_format::ttl::{ManualClock, TtlBackend};

    use super::*;
    use crate::RocksDBKeyedStateBackend;

    /// A value state whose expired values stay visible until cleaned up, with or without
    /// the compaction clean-up.
    fn visible(name: &str, in_compaction: bool) -> StateMetaInfo {
        let mut ttl = StateTtlConfig::new(1000)
            .expect("a positive time to live")
            .visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp);
        ttl.cleanup_in_compaction = in_compaction;
        StateMetaInfo::value(name, "void", "bytes").with_ttl(ttl)
    }

    /// Writes `keys` values into `states` and a list with an element of each age, lets
    /// them expire, then compacts every column family.
    fn expire_and_compact(
        backend: &mut TtlBackend<RocksDBKeyedStateBackend>,
        clock: &ManualClock,
        keys: u32,
    ) {
        for key in 0..keys {
            backend.set_current_key(&key.to_be_bytes()).expect("a key");
            for state in ["cleaned", "kept"] {
                backend.put_value(state, b"", b"old").expect("a put");
            }
        }
        clock.advance(1000);
        let inner = backend.inner();
        let db = inner.db().expect("an open database");
        for state in ["cleaned", "kept"] {
            let family = db
                .cf_handle(&crate::backend::cf_name(state))
                .expect("a family");
            db.flush_cf(&family).expect("a flush");
            db.compact_range_cf(&family, None::<&[u8]>, None::<&[u8]>);
        }
    }

    #[test]
    fn compactions_drop_expired_values_of_states_that_ask() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = Arc::new(ManualClock::new(5_000));
        let mut params = KeyedBackendParams::new(
            MaxParallelism::of(128),
            KeyGroupRange::new(0, 127).expect("a range"),
        );
        params.working_dir = Some(dir.path().to_path_buf());
        params.clock = clock.clone();
        crate::link();
        let inner = RocksDBKeyedStateBackend::new(params, Registry::global()).expect("opens");
        let mut backend = TtlBackend::new(inner, clock.clone());
        // Registered after the database opened: the filter of a family created later.
        backend
            .register_state(&visible("cleaned", true))
            .expect("registers");
        backend
            .register_state(&visible("kept", false))
            .expect("registers");
        expire_and_compact(&mut backend, &clock, 200);
        for key in 0..200u32 {
            backend.set_current_key(&key.to_be_bytes()).expect("a key");
            let cleaned = backend.value("cleaned", b"").expect("a read");
            assert_eq!(cleaned, None, "key {key}: the compaction dropped it");
            let kept = backend.value("kept", b"").expect("a read");
            assert_eq!(
                kept.as_deref(),
                Some(&b"old"[..]),
                "key {key}: no compaction clean-up"
            );
        }
        backend.close().expect("closes");
    }
}

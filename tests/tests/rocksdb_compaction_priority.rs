//! `rocksdb.compaction.cpu-priority = low`: RocksDB's compaction threads, which every
//! database of the process shares, run at the lowest CPU priority. A test binary of its
//! own, since the priority stays lowered for the rest of the process.

#![allow(clippy::unwrap_used)]

use state_api::{
    KeyGroupRange, KeyedBackendParams, KeyedStateBackend, MaxParallelism, Registry, StateMetaInfo,
};
use state_rocksdb::RocksDBKeyedStateBackend;

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);
const KEYS: u64 = 20_000;

/// The nice values of this process's threads named `comm`, from `/proc`.
#[cfg(target_os = "linux")]
fn thread_nice_values(comm: &str) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the name's closing parenthesis: the state is field 3, nice 19.
        let fields = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        if name.trim_end() == comm
            && let Some(value) = fields.split_whitespace().nth(16)
        {
            nice.push(value.parse().unwrap());
        }
    }
    nice
}

/// With `low`, the thread that ran a compaction runs at nice 19, and the compacted state
/// reads back whole.
#[cfg(target_os = "linux")]
#[test]
fn compactions_run_at_the_lowest_cpu_priority_when_configured() {
    state_rocksdb::link();
    let dir = tempfile::tempdir().unwrap();
    let mut params = KeyedBackendParams {
        working_dir: Some(dir.path().join("work")),
        ..KeyedBackendParams::new(MAX_PARALLELISM, KeyGroupRange::new(0, 127).unwrap())
    };
    (params.options).insert("rocksdb.compaction.cpu-priority".into(), "low".into());
    let mut backend = RocksDBKeyedStateBackend::new(params, Registry::global()).unwrap();
    backend
        .register_state(&StateMetaInfo::value("count", "void", "u64-be"))
        .unwrap();
    let db = backend.snapshot_source().db().unwrap();
    for half in [0..KEYS / 2, KEYS / 2..KEYS] {
        for i in half {
            backend
                .set_current_key(format!("key-{i}").as_bytes())
                .unwrap();
            backend.put_value("count", b"", &i.to_be_bytes()).unwrap();
        }
        db.flush_cf(&db.cf_handle("state:count").unwrap()).unwrap();
    }
    let family = db.cf_handle("state:count").unwrap();
    db.compact_range_cf(&family, None::<&[u8]>, None::<&[u8]>);
    let nice = thread_nice_values("rocksdb:low");
    assert!(
        nice.contains(&19),
        "compaction threads' nice values: {nice:?}"
    );
    for i in (0..KEYS).step_by(97) {
        backend
            .set_current_key(format!("key-{i}").as_bytes())
            .unwrap();
        let value = backend.value("count", b"").unwrap().unwrap();
        assert_eq!(value, i.to_be_bytes(), "key-{i}");
    }
}

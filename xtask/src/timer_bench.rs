//! `cargo xtask bench --workload timers`: the snapshot cycle of `../shared/BENCHMARK.md`
//! over priority-queue state instead of value states.
//!
//! Key `k` of `0..n` (8 bytes big-endian) has one event-time timer in state `timers`, as a
//! tumbling window of one second would register it: the window ends at
//! `(r % windows + 1) * 1000` with `windows = max(n / 1000, 1)` and `r` the first output
//! of the workload's xorshift64* generator seeded with `k * 1_000_003 + 1` (plus 7 once
//! modified); the namespace is that end as 8 bytes big-endian and the timestamp is
//! `end - 1` (the window's last millisecond). About 1,000 timers share each timestamp.
//!
//! 1. Fill: add every key's timer (`add_ops_per_s`).
//! 2. Checkpoint 1 (`sync_ms`, `async_ms`, `bytes`).
//! 3. The keys with `k % 100 == 0` move their timer: the old one removed, the modified one
//!    added.
//! 4. Checkpoint 2, as in the values workload (`total_bytes` for incremental strategies).
//! 5. Restore checkpoint 2 into a fresh backend (`restore_ms`), then fire every timer with
//!    a watermark advancing one window at a time (`poll_ops_per_s`): each timer must come
//!    exactly once, earliest first, with its key's expected timestamp and namespace.
//! 6. `peak_rss_mb`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use state_api::{CheckpointStorage, KeyedStateBackend, StateMetaInfo, Timer};
use state_coordinator::plan_restore;
use state_storage_local::LocalCheckpointStorage;

use crate::DynResult;
use crate::bench::{
    OneArgs, checkpoint, disk_speed, millis, params, peak_rss_mb, print_record, registry,
    release_freed_memory, round,
};
use crate::job::Job;
use crate::workload::{MAX_PARALLELISM, Workload};

/// The priority-queue state of the workload.
const STATE: &str = "timers";

/// Window length in milliseconds.
const WINDOW_MS: i64 = 1000;

/// The timers of `n` keys.
#[derive(Debug, Clone, Copy)]
struct Timers {
    n: u64,
}

impl Timers {
    /// The number of one-second windows the timers fall into.
    fn windows(self) -> u64 {
        (self.n / 1000).max(1)
    }

    /// The end of key `key`'s window, as filled or, with `modified`, as step 3 moves it.
    fn window_end(self, key: u64, modified: bool) -> i64 {
        let mut x = key
            .wrapping_mul(1_000_003)
            .wrapping_add(1)
            .wrapping_add(if modified { 7 } else { 0 });
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // At most n / 1000 + 1 windows: far below i64::MAX / 1000.
        (r % self.windows() + 1) as i64 * WINDOW_MS
    }

    /// Key `key`'s timer, as filled or, with `modified`, as step 3 moves it.
    fn timer(self, key: u64, modified: bool) -> Timer {
        let end = self.window_end(key, modified);
        Timer {
            timestamp: end - 1,
            key: key.to_be_bytes().to_vec(),
            namespace: end.to_be_bytes().to_vec(),
        }
    }

    /// The timer key `key` holds after step 3.
    fn expected(self, key: u64) -> Timer {
        self.timer(key, Workload::is_modified(key))
    }

    /// The keys step 3 moves.
    fn modified(self) -> impl Iterator<Item = u64> {
        (0..self.n).filter(|&key| Workload::is_modified(key))
    }
}

/// Fires every timer of `backend`, one window's watermark after the other, and checks each
/// against `timers`: returns the number fired, or the first problem.
fn fire_all(backend: &mut dyn KeyedStateBackend, timers: Timers) -> DynResult<u64> {
    let mut seen = vec![false; usize::try_from(timers.n)?];
    let mut fired: u64 = 0;
    let mut last = i64::MIN;
    for window in 1..=timers.windows() as i64 + 1 {
        let watermark = window * WINDOW_MS - 1;
        for timer in backend.poll_timers(STATE, watermark, usize::MAX)? {
            let key = <[u8; 8]>::try_from(timer.key.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| format!("a fired timer has a {}-byte key", timer.key.len()))?;
            let slot = seen
                .get_mut(usize::try_from(key)?)
                .ok_or_else(|| format!("a fired timer has key {key}, beyond n"))?;
            if std::mem::replace(slot, true) {
                return Err(format!("key {key}'s timer fired twice").into());
            }
            if timer != timers.expected(key) {
                return Err(format!("key {key}: fired {timer:?}, expected another timer").into());
            }
            if timer.timestamp < last || timer.timestamp > watermark {
                return Err(format!(
                    "key {key}: timestamp {} fired after {last} at watermark {watermark}",
                    timer.timestamp
                )
                .into());
            }
            last = timer.timestamp;
            fired += 1;
        }
    }
    let left = backend.timer_count(STATE)?;
    if fired != timers.n || left != 0 {
        return Err(format!("{fired} of {} timers fired, {left} left", timers.n).into());
    }
    Ok(fired)
}

/// Runs the timers workload for one configuration and prints its JSON lines.
pub(crate) fn run_one(args: &OneArgs) -> DynResult {
    if args.rescale.is_some() || args.storage.is_some() {
        return Err("--workload timers runs on one instance and a local directory".into());
    }
    if !args.checkpoints.is_multiple_of(2) {
        return Err("--workload timers takes an even number of checkpoints".into());
    }
    let registry = registry();
    let timers = Timers { n: args.n };
    let strategy = registry.keyed_strategy(&args.backend)?;
    let factory = registry.keyed_backend(strategy.backend())?;
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalCheckpointStorage::new(args.dir.join("checkpoints"))?);
    let job = Job::new(storage, 1, BTreeMap::new())?;
    let all = MAX_PARALLELISM.range_for(0, 1)?;
    let meta = StateMetaInfo::priority_queue(STATE, "u64-be");
    let mut instance = factory.create(params(args, all, &args.dir.join("work"))?, registry)?;
    instance.register_state(&meta)?;

    eprintln!("adding {} timers", timers.n);
    let started = Instant::now();
    for key in 0..timers.n {
        instance.add_timer(STATE, &timers.timer(key, false))?;
    }
    let add_ops_per_s = timers.n as f64 / started.elapsed().as_secs_f64();

    eprintln!("checkpoint 1");
    let mut instances = vec![instance];
    let first = checkpoint(&mut instances, &job)?;
    let disk_mb_per_s = disk_speed(&args.dir.join("checkpoints"), first.bytes)?;
    let mut later = Vec::new();
    for checkpoint_id in 2..=args.checkpoints {
        let forward = checkpoint_id.is_multiple_of(2);
        for key in timers.modified() {
            let instance = &mut instances[0];
            instance.remove_timer(STATE, &timers.timer(key, !forward))?;
            instance.add_timer(STATE, &timers.timer(key, forward))?;
        }
        eprintln!("checkpoint {checkpoint_id}");
        later.push(checkpoint(&mut instances, &job)?);
    }
    let last = later.pop().ok_or("at least two checkpoints are taken")?;
    for instance in &mut instances {
        instance.close()?;
    }
    drop(instances);
    release_freed_memory();

    eprintln!("restore");
    let plan = plan_restore(
        &last.completed.metadata,
        std::num::NonZeroU32::MIN,
        MAX_PARALLELISM,
    )?;
    let part = plan.instances.first().ok_or("the plan has no instance")?;
    let started = Instant::now();
    let mut restored = factory.restore(
        params(args, part.key_groups, &args.dir.join("restore"))?,
        registry,
        &part.keyed,
    )?;
    let restore_ms = millis(started);
    let count = restored.timer_count(STATE)?;
    if count as u64 != timers.n {
        return Err(format!("restored {count} of {} timers", timers.n).into());
    }
    eprintln!("firing every timer");
    let started = Instant::now();
    let fired = fire_all(&mut *restored, timers)?;
    let poll_ops_per_s = fired as f64 / started.elapsed().as_secs_f64();
    restored.close()?;
    drop(restored);
    let peak_rss_mb = peak_rss_mb();
    job.discard_checkpoints()?;

    let mut base = json!({
        "system": format!("snapstate-{}", env!("CARGO_PKG_VERSION")),
        "workload": "timers",
        "storage": "local directory",
        "backend": args.backend,
        "n": timers.n,
        "compression": args.compression,
    });
    if !args.options.is_empty() {
        base["options"] = json!(args.options);
    }
    let line = |fields: Value| print_record(&base, fields);
    line(json!({
        "cp": 1,
        "sync_ms": round(first.sync_ms, 4),
        "async_ms": round(first.async_ms, 1),
        "bytes": first.bytes,
        "add_ops_per_s": add_ops_per_s.round(),
        "disk_mb_per_s": round(disk_mb_per_s, 1),
    }));
    for (taken, cp) in later.iter().zip(2..) {
        line(json!({
            "cp": cp,
            "sync_ms": round(taken.sync_ms, 4),
            "async_ms": round(taken.async_ms, 1),
            "bytes": taken.bytes,
            "total_bytes": taken.total_bytes(),
        }));
    }
    line(json!({
        "cp": args.checkpoints,
        "sync_ms": round(last.sync_ms, 4),
        "async_ms": round(last.async_ms, 1),
        "bytes": last.bytes,
        "total_bytes": last.total_bytes(),
        "restore_ms": round(restore_ms, 1),
        "poll_ops_per_s": poll_ops_per_s.round(),
        "verified_timers": fired,
        "peak_rss_mb": peak_rss_mb.map(f64::round),
    }));
    Ok(())
}

/// The table of `--workload timers` records.
pub(crate) fn print_table(records: &[Value]) {
    let number = |record: &Value, field: &str| {
        (record.get(field).and_then(Value::as_f64)).map_or(String::new(), |v| format!("{v:.0}"))
    };
    println!();
    println!(
        "{:<20} {:<7} {:>9} {:>2} {:>9} {:>10} {:>9} {:>9} {:>10} {:>10} {:>10} {:>8}",
        "backend",
        "codec",
        "timers",
        "cp",
        "sync ms",
        "async ms",
        "MB",
        "total MB",
        "restore ms",
        "add k/s",
        "poll k/s",
        "RSS MB"
    );
    for record in records {
        let thousands = |field: &str| {
            (record.get(field).and_then(Value::as_f64))
                .map_or(String::new(), |v| format!("{:.0}", v / 1000.0))
        };
        let megabytes = |field: &str| {
            (record.get(field).and_then(Value::as_f64))
                .map_or(String::new(), |v| format!("{:.1}", v / 1e6))
        };
        println!(
            "{:<20} {:<7} {:>9} {:>2} {:>9.3} {:>10.1} {:>9} {:>9} {:>10} {:>10} {:>10} {:>8}",
            record["backend"].as_str().unwrap_or("?"),
            record["compression"].as_str().unwrap_or("?"),
            record["n"],
            record["cp"],
            record["sync_ms"].as_f64().unwrap_or(f64::NAN),
            record["async_ms"].as_f64().unwrap_or(f64::NAN),
            megabytes("bytes"),
            megabytes("total_bytes"),
            number(record, "restore_ms"),
            thousands("add_ops_per_s"),
            thousands("poll_ops_per_s"),
            number(record, "peak_rss_mb"),
        );
    }
    println!();
    println!(
        "add, poll k/s = thousands of timers added (fill) and fired (restored backend, a watermark advancing one window at a time) per second"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fall_into_the_windows_and_modified_ones_move() {
        let timers = Timers { n: 100_000 };
        let mut moved = 0;
        for key in 0..timers.n {
            let timer = timers.timer(key, false);
            let end = timer.timestamp + 1;
            assert!(end >= WINDOW_MS && end <= timers.windows() as i64 * WINDOW_MS);
            assert_eq!(end % WINDOW_MS, 0);
            assert_eq!(timer.namespace, end.to_be_bytes());
            if Workload::is_modified(key) && timers.expected(key) != timer {
                moved += 1;
            }
        }
        // Nearly every modified key lands in another of the 100 windows.
        assert!(moved > 900, "{moved} of 1,000 modified timers moved");
    }
}

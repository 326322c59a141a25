//! `cargo xtask bench`: the snapshot workload of `../shared/BENCHMARK.md`, in release mode,
//! for every linked keyed strategy.
//!
//! Each configuration (backend × kind × compression) runs in a child process of its own
//! (`cargo xtask bench-one ...`), so `peak_rss_mb` is that configuration's peak and no
//! backend's memory or background threads bleed into the next. The parent prints every
//! child's JSON lines as they come, then a table with each asynchronous part as a fraction
//! of the storage's raw speed.
//!
//! Checkpoint storage is a fresh temporary directory per configuration, or, with
//! `--storage s3://bucket/prefix` (or `memory://name`), a fresh prefix under that URL per
//! configuration on object storage (`--s3-endpoint` names an S3-compatible server; the
//! credentials come from the AWS environment variables). Each configuration discards its
//! checkpoints at the end.
//!
//! Reference points, measured by each child after its run:
//!
//! - `disk_mb_per_s` (local storage): writing a file of checkpoint 1's size (1 MiB writes
//!   of random bytes) into the checkpoint directory and syncing it, as a checkpoint stream
//!   does, right after checkpoint 1; the median of three runs;
//! - `storage_mb_per_s` (object storage): uploading an object of checkpoint 1's size
//!   through a checkpoint stream of the same storage (1 MiB writes, multipart beyond the
//!   part size), right after checkpoint 1; the median of three runs;
//! - `codec_mb_per_s` (compressed configurations): the decorator compressing the same
//!   entries in the same per-key-group sections the canonical format writes, in memory:
//!   uncompressed bytes per second.
//!
//! Between dropping the checkpointed backend and timing the restore, the child has glibc
//! consolidate and return the memory that backend freed (`malloc_trim`): glibc otherwise
//! does that work in the next large allocation, inside the timed restore.
//!
//! Beyond the spec, for incremental strategies: `--checkpoints K` repeats steps 3 and 4
//! (the same 1% of keys written again, then a checkpoint, the previous one subsumed) up to
//! checkpoint K, printing a line per checkpoint and restoring the last, and `--option
//! KEY=VALUE` passes backend options (`heap.incremental.materialization-fraction=0.1`), so
//! a long chain's bytes and restore time can be compared across settings.
//! `--pause-after-fill-ms M` waits M ms between the fill and checkpoint 1, so checkpoint 1
//! can also be timed once RocksDB has flushed the fill's last memtable (a flush that
//! otherwise takes one of the two cores for most of checkpoint 1). The defaults run the
//! spec exactly; a run beyond it names its settings (`options`, `pause_after_fill_ms`) in
//! every JSON line.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use state_api::CheckpointId;
use state_api::{
    CheckpointOptions, CheckpointStorage, CheckpointedStateScope, KeyGroupRange,
    KeyedBackendParams, KeyedStateBackend, KeyedStateBackendFactory, PluginKind, Registry,
    StateMetaInfo, StateObject, StateTtlConfig, UncompressedStreamCompressionDecorator,
};
use state_format::KeyedBackendSerializationProxy;
use state_format::keyed_format::{CompositeKey, KeyedSnapshotWriter};
use state_storage_local::LocalCheckpointStorage;
use state_storage_object::{ObjectCheckpointStorage, ObjectStoreOptions};

use crate::DynResult;
use crate::job::{Job, Taken};
use crate::workload::{MAX_PARALLELISM, ValueKind, Workload};

/// What `cargo xtask bench` runs.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// What state the workload fills: value states (BENCHMARK.md) or one timer per key.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Values)]
    pub(crate) workload: WorkloadKind,
    /// Number of keys.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) n: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub(crate) v: usize,
    /// Number of value states.
    #[arg(long, default_value_t = 1)]
    pub(crate) s: u32,
    /// Keyed strategies to run (default: every linked one).
    #[arg(long = "backend")]
    pub(crate) backends: Vec<String>,
    /// Value kinds (default: random and text).
    #[arg(long = "kind", value_enum)]
    pub(crate) kinds: Vec<ValueKind>,
    /// Compressions (default: none and snappy).
    #[arg(long = "compression")]
    pub(crate) compressions: Vec<String>,
    /// Directory for the checkpoint storage and the backends' working directories
    /// (default: the system's temporary directory).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Checkpoint storage: `s3://bucket/prefix` or `memory://name` (object storage; a
    /// fresh prefix under it per configuration), or `file:///path` (a local directory, as
    /// `--dir`). Default: a temporary directory under `--dir`.
    #[arg(long)]
    pub(crate) storage: Option<String>,
    /// Endpoint of an S3-compatible server for `--storage s3://...` (`http://` allowed);
    /// credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[arg(long)]
    pub(crate) s3_endpoint: Option<String>,
    /// Also write the JSON lines to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Checkpoints to take (the spec takes 2); each after the first follows a write of
    /// the same 1% of keys.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(2..))]
    pub(crate) checkpoints: u64,
    /// Backend options as KEY=VALUE (repeatable).
    #[arg(long = "option")]
    pub(crate) options: Vec<String>,
    /// Registers the value states with this time to live in milliseconds (the spec's have
    /// none): every value carries its 8-byte timestamp, reads and full snapshots check it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) ttl_ms: Option<u64>,
    /// Milliseconds to wait between the fill and checkpoint 1 (the spec waits none), so
    /// that the backend's own background work after the fill (RocksDB flushing its last
    /// memtable) is over before checkpoint 1 is timed.
    #[arg(long, default_value_t = 0)]
    pub(crate) pause_after_fill_ms: u64,
    /// `N:M`: fill and checkpoint N instances, each owning an equal share of the key
    /// groups, then restore the last checkpoint into N instances (the plain restore) and
    /// into M (the rescaling restore). Default: one instance, no rescaling.
    #[arg(long)]
    pub(crate) rescale: Option<Rescale>,
}

/// The state a benchmark run fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum WorkloadKind {
    /// BENCHMARK.md: `s` value states of `v` bytes per key.
    Values,
    /// One event-time timer per key in a priority-queue state (`timer_bench`).
    Timers,
}

impl WorkloadKind {
    fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Values => "values",
            WorkloadKind::Timers => "timers",
        }
    }
}

/// `N:M` of `--rescale`: checkpoint N instances, restore into M.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rescale {
    /// Instances checkpointed.
    from: u32,
    /// Instances restored.
    to: u32,
}

impl FromStr for Rescale {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parallelism = |part: &str| match part.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_PARALLELISM.get()).contains(&n) => Ok(n),
            _ => Err(format!(
                "`{text}`: expected N:M, each a parallelism from 1 to {MAX_PARALLELISM}"
            )),
        };
        let (from, to) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: expected N:M, say 4:3"))?;
        Ok(Rescale {
            from: parallelism(from)?,
            to: parallelism(to)?,
        })
    }
}

impl fmt::Display for Rescale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.from, self.to)
    }
}

/// One configuration, as `cargo xtask bench-one` takes it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OneArgs {
    #[arg(long, value_enum, default_value_t = WorkloadKind::Values)]
    pub(crate) workload: WorkloadKind,
    #[arg(long)]
    pub(crate) backend: String,
    #[arg(long, value_enum)]
    kind: ValueKind,
    #[arg(long)]
    pub(crate) compression: String,
    #[arg(long)]
    pub(crate) n: u64,
    #[arg(long)]
    v: usize,
    #[arg(long)]
    s: u32,
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// Object storage for the checkpoints (default: `dir/checkpoints`).
    #[arg(long)]
    pub(crate) storage: Option<String>,
    #[arg(long)]
    s3_endpoint: Option<String>,
    #[arg(long, default_value_t = 2)]
    pub(crate) checkpoints: u64,
    #[arg(long = "option")]
    pub(crate) options: Vec<String>,
    #[arg(long)]
    ttl_ms: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pause_after_fill_ms: u64,
    #[arg(long)]
    pub(crate) rescale: Option<Rescale>,
}

pub(crate) fn registry() -> &'static Registry {
    state_compress::link();
    state_heap::link();
    state_rocksdb::link();
    Registry::global()
}

pub(crate) fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

pub(crate) fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Runs every selected configuration in a child process and prints the table.
pub(crate) fn run(args: BenchArgs) -> DynResult {
    let registry = registry();
    let backends = match args.backends.is_empty() {
        true => registry.names(PluginKind::KeyedStrategy),
        false => args.backends.clone(),
    };
    for backend in &backends {
        registry.keyed_strategy(backend)?;
    }
    let kinds = match args.kinds.is_empty() {
        // Timers have no value bytes: one kind, not reported.
        _ if args.workload == WorkloadKind::Timers => vec![ValueKind::Random],
        true => vec![ValueKind::Random, ValueKind::Text],
        false => args.kinds.clone(),
    };
    let compressions = match args.compressions.is_empty() {
        true => vec!["none".to_owned(), "snappy".to_owned()],
        false => args.compressions.clone(),
    };
    for compression in &compressions {
        registry.compression(compression)?;
    }
    for option in &args.options {
        parse_option(option)?;
    }
    let object_url = match args.storage.as_deref() {
        Some(url) if url.starts_with("file://") => None,
        other => other.map(|url| url.trim_end_matches('/').to_owned()),
    };
    let root = match (&args.dir, args.storage.as_deref()) {
        (Some(dir), _) => dir.clone(),
        (None, Some(url)) if url.starts_with("file://") => {
            PathBuf::from(url.trim_start_matches("file://"))
        }
        (None, _) => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&root)?;
    let mut out = args.out.as_ref().map(File::create).transpose()?;
    let mut configurations: Vec<(String, ValueKind, String)> = Vec::new();
    for backend in &backends {
        for kind in &kinds {
            for compression in &compressions {
                configurations.push((backend.clone(), *kind, compression.clone()));
            }
        }
    }
    let exe = std::env::current_exe()?;
    let mut records = Vec::new();
    for (index, (backend, kind, compression)) in configurations.iter().enumerate() {
        eprintln!(
            "[{}/{}] {backend}, {}, {compression}: n={} v={} s={}",
            index + 1,
            configurations.len(),
            kind.as_str(),
            args.n,
            args.v,
            args.s
        );
        let dir = tempfile::Builder::new()
            .prefix("snapstate-bench-")
            .tempdir_in(&root)?;
        let mut command = Command::new(&exe);
        command.arg("bench-one");
        if let Some(url) = &object_url {
            let prefix = format!("{url}/snapstate-bench-{}-{index}", std::process::id());
            command.args(["--storage", &prefix]);
        }
        if let Some(endpoint) = &args.s3_endpoint {
            command.args(["--s3-endpoint", endpoint]);
        }
        let mut child = command
            .args(["--workload", args.workload.as_str()])
            .args(["--backend", backend, "--compression", compression])
            .args(["--kind", kind.as_str()])
            .args(["--n", &args.n.to_string(), "--v", &args.v.to_string()])
            .args(["--s", &args.s.to_string()])
            .args(["--checkpoints", &args.checkpoints.to_string()])
            .args(args.options.iter().flat_map(|o| ["--option", o]))
            .args(
                args.ttl_ms
                    .iter()
                    .flat_map(|ms| ["--ttl-ms".to_owned(), ms.to_string()]),
            )
            .args([
                "--pause-after-fill-ms",
                &args.pause_after_fill_ms.to_string(),
            ])
            .args(
                args.rescale
                    .iter()
                    .flat_map(|r| ["--rescale".to_owned(), r.to_string()]),
            )
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the benchmark child has no stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(out) = &mut out {
                writeln!(out, "{line}")?;
            }
            records.push(serde_json::from_str::<Value>(&line)?);
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(format!(
                "{backend}, {}, {compression} failed ({status})",
                kind.as_str()
            )
            .into());
        }
        dir.close()?;
    }
    match args.workload {
        WorkloadKind::Values => print_table(&records),
        WorkloadKind::Timers => crate::timer_bench::print_table(&records),
    }
    Ok(())
}

fn number(record: &Value, field: &str) -> f64 {
    record
        .get(field)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn print_table(records: &[Value]) {
    println!();
    println!(
        "{:<20} {:<6} {:<7} {:>2} {:>9} {:>10} {:>9} {:>9} {:>7} {:>9} {:>10} {:>10} {:>8}",
        "backend",
        "kind",
        "codec",
        "cp",
        "sync ms",
        "async ms",
        "MB",
        "MB/s",
        "ref %",
        "total MB",
        "restore ms",
        "fill k/s",
        "RSS MB"
    );
    let mut disk = BTreeMap::new();
    for record in records {
        let key = (
            record["backend"].to_string(),
            record["kind"].to_string(),
            record["compression"].to_string(),
        );
        let reference = record
            .get("disk_mb_per_s")
            .or_else(|| record.get("storage_mb_per_s"))
            .and_then(Value::as_f64);
        if let Some(speed) = reference {
            disk.insert(key.clone(), speed);
        }
        let mb = number(record, "bytes") / 1e6;
        let speed = mb / (number(record, "async_ms") / 1000.0);
        let fraction = disk.get(&key).map_or(f64::NAN, |d| 100.0 * speed / d);
        let optional = |field: &str, scale: f64, digits: usize| match record.get(field) {
            Some(value) => format!("{:.digits$}", value.as_f64().unwrap_or(f64::NAN) / scale),
            None => String::new(),
        };
        println!(
            "{:<20} {:<6} {:<7} {:>2} {:>9.3} {:>10.1} {:>9.1} {:>9.1} {:>6.0}% {:>9} {:>10} {:>10} {:>8}",
            record["backend"].as_str().unwrap_or("?"),
            record["kind"].as_str().unwrap_or("?"),
            record["compression"].as_str().unwrap_or("?"),
            record["cp"],
            number(record, "sync_ms"),
            number(record, "async_ms"),
            mb,
            speed,
            fraction,
            optional("total_bytes", 1e6, 1),
            optional("restore_ms", 1.0, 1),
            optional("fill_keys_per_s", 1000.0, 0),
            optional("peak_rss_mb", 1.0, 0),
        );
    }
    print_rescale_table(records);
    println!();
    println!(
        "ref % = the asynchronous part's MB/s as a share of the storage's raw speed for checkpoint 1's size: disk write+fsync of a file (disk_mb_per_s) or one upload through a checkpoint stream (storage_mb_per_s)"
    );
}

/// The restores of `--rescale N:M` runs, beside the plain restores of the same checkpoint.
fn print_rescale_table(records: &[Value]) {
    let rescaled: Vec<&Value> = records
        .iter()
        .filter(|record| record.get("rescale_restore_ms").is_some())
        .collect();
    if rescaled.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:<7} {:>7} {:>14} {:>14} {:>7} {:>14} {:>14} {:>7}",
        "backend",
        "codec",
        "N:M",
        "N restore ms",
        "M restore ms",
        "ratio",
        "N slowest ms",
        "M slowest ms",
        "ratio"
    );
    for record in rescaled {
        let (plain, rescaled) = (
            number(record, "restore_ms"),
            number(record, "rescale_restore_ms"),
        );
        let (plain_max, rescaled_max) = (
            number(record, "restore_max_ms"),
            number(record, "rescale_restore_max_ms"),
        );
        println!(
            "{:<20} {:<7} {:>7} {:>14.1} {:>14.1} {:>6.2}x {:>14.1} {:>14.1} {:>6.2}x",
            record["backend"].as_str().unwrap_or("?"),
            record["compression"].as_str().unwrap_or("?"),
            record["rescale"].as_str().unwrap_or("?"),
            plain,
            rescaled,
            rescaled / plain,
            plain_max,
            rescaled_max,
            rescaled_max / plain_max,
        );
    }
    println!(
        "N restore = the checkpoint of N instances restored into N, one instance after the other (summed); M restore = the same checkpoint into M; slowest = the longest single instance"
    );
}

/// The process's peak resident memory, in MiB (Linux `VmHWM`).
pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `KEY=VALUE`, split.
fn parse_option(option: &str) -> DynResult<(String, String)> {
    let (key, value) = option
        .split_once('=')
        .ok_or_else(|| format!("--option `{option}`: expected KEY=VALUE"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

pub(crate) fn params(
    args: &OneArgs,
    range: KeyGroupRange,
    work: &Path,
) -> DynResult<KeyedBackendParams> {
    let mut params = KeyedBackendParams::new(MAX_PARALLELISM, range);
    for option in &args.options {
        let (key, value) = parse_option(option)?;
        params.options.insert(key, value);
    }
    params.key_serializer = "u64-be".into();
    params.compression = args.compression.clone();
    params.strategy = Some(args.backend.clone());
    std::fs::create_dir_all(work)?;
    params.working_dir = Some(work.to_path_buf());
    Ok(params)
}

/// The key-group ranges of `parallelism` instances.
fn ranges(parallelism: u32) -> DynResult<Vec<KeyGroupRange>> {
    Ok((0..parallelism)
        .map(|index| MAX_PARALLELISM.range_for(index, parallelism))
        .collect::<state_api::Result<_>>()?)
}

/// The keys of `keys` that `range` owns; every key when `range` is all key groups.
fn owned(keys: impl Iterator<Item = u64>, range: KeyGroupRange) -> impl Iterator<Item = u64> {
    let all = range.len() == MAX_PARALLELISM.get();
    keys.filter(move |key| all || range.contains(MAX_PARALLELISM.key_group_of(&key.to_be_bytes())))
}

/// Checkpoints every instance and completes the checkpoint; the figures are summed over
/// the instances.
pub(crate) fn checkpoint(
    instances: &mut [Box<dyn KeyedStateBackend>],
    job: &Job,
) -> DynResult<Taken> {
    job.checkpoint_all(instances, &CheckpointOptions::checkpoint())
}

/// Figures of restoring one checkpoint into some instances, one after the other.
struct Restored {
    /// The sum of every instance's restore.
    total_ms: f64,
    /// The slowest instance's restore: what a job restoring its instances at once waits.
    max_ms: f64,
    /// Sampled keys checked, over every instance.
    verified: u64,
}

/// Restores `checkpoint` into `parallelism` instances as `plan_restore` assigns it, checking `sample` on the instance
/// owning each key; every instance is closed after its check.
fn restore(
    args: &OneArgs,
    factory: &dyn KeyedStateBackendFactory,
    (workload, states): (&Workload, &[String]),
    checkpoint: &state_api::CheckpointMetadata,
    parallelism: u32,
    sample: &[u64],
) -> DynResult<Restored> {
    let mut figures = Restored {
        total_ms: 0.0,
        max_ms: 0.0,
        verified: 0,
    };
    let instances = std::num::NonZeroU32::new(parallelism).ok_or("no instance to restore")?;
    let plan = state_coordinator::plan_restore(checkpoint, instances, MAX_PARALLELISM)?;
    for (index, part) in plan.instances.iter().enumerate() {
        let range = part.key_groups;
        let work = args.dir.join(format!("restore-{parallelism}-{index}"));
        let params = params(args, range, &work)?;
        let started = Instant::now();
        let mut restored = factory.restore(params, registry(), &part.keyed)?;
        let ms = millis(started);
        figures.total_ms += ms;
        figures.max_ms = figures.max_ms.max(ms);
        figures.verified += workload
            .verify(
                &mut *restored,
                states,
                owned(sample.iter().copied(), range),
                true,
            )
            .map_err(|err| format!("instance {index} of {parallelism}: {err}"))?;
        restored.close()?;
        drop(restored);
        std::fs::remove_dir_all(&work)?;
        release_freed_memory();
    }
    if figures.verified != sample.len() as u64 {
        return Err(format!(
            "{parallelism} restored instances hold {} of {} sampled keys",
            figures.verified,
            sample.len()
        )
        .into());
    }
    Ok(figures)
}

/// Runs one configuration and prints its JSON lines.
pub(crate) fn run_one(args: OneArgs) -> DynResult {
    if args.workload == WorkloadKind::Timers {
        return crate::timer_bench::run_one(&args);
    }
    let registry = registry();
    let workload = Workload {
        n: args.n,
        v: args.v,
        s: args.s,
        kind: args.kind,
        ttl: args.ttl_ms.map(StateTtlConfig::new).transpose()?,
    };
    let strategy = registry.keyed_strategy(&args.backend)?;
    let factory = registry.keyed_backend(strategy.backend())?;
    let storage: Arc<dyn CheckpointStorage> = match &args.storage {
        Some(url) => {
            let options = ObjectStoreOptions {
                endpoint: args.s3_endpoint.clone(),
                ..ObjectStoreOptions::default()
            };
            Arc::new(ObjectCheckpointStorage::open(url, options)?)
        }
        None => Arc::new(LocalCheckpointStorage::new(args.dir.join("checkpoints"))?),
    };
    let parallelism = args.rescale.map_or(1, |rescale| rescale.from);
    let job = Job::new(storage.clone(), parallelism, BTreeMap::new())?;
    let ranges = ranges(parallelism)?;
    let mut instances = Vec::new();
    let mut states = Vec::new();
    for (index, range) in ranges.iter().enumerate() {
        let work = args.dir.join(format!("work-{index}"));
        let mut instance = factory.create(params(&args, *range, &work)?, registry)?;
        states = workload.register(&mut *instance)?;
        instances.push(instance);
    }

    let bar = ProgressBar::new(workload.n).with_message("fill");
    bar.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} keys ({eta})")?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut filled = 0;
    for (instance, range) in instances.iter_mut().zip(&ranges) {
        filled += workload.write(
            &mut **instance,
            &states,
            owned(0..workload.n, *range),
            false,
            |n| bar.set_position(filled + n),
        )?;
    }
    let fill_keys_per_s = workload.n as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    // The storage reference is taken right after checkpoint 1, with the storage as it was
    // for it: checkpoint 1's size written three times, the median kept.
    std::thread::sleep(std::time::Duration::from_millis(args.pause_after_fill_ms));
    eprintln!("checkpoint 1");
    let first = checkpoint(&mut instances, &job)?;
    let reference = match &args.storage {
        Some(_) => ("storage_mb_per_s", storage_speed(&*storage, first.bytes)?),
        None => (
            "disk_mb_per_s",
            disk_speed(&args.dir.join("checkpoints"), first.bytes)?,
        ),
    };
    let mut later = Vec::new();
    for checkpoint_id in 2..=args.checkpoints {
        for (instance, range) in instances.iter_mut().zip(&ranges) {
            let modified = (0..workload.n).filter(|&k| Workload::is_modified(k));
            workload.write(
                &mut **instance,
                &states,
                owned(modified, *range),
                true,
                |_| {},
            )?;
        }
        eprintln!("checkpoint {checkpoint_id}");
        // The coordinator retains the last checkpoint: each one subsumes the one before.
        later.push(checkpoint(&mut instances, &job)?);
    }
    let second = later.pop().ok_or("at least two checkpoints are taken")?;
    for instance in &mut instances {
        instance.close()?;
    }
    drop(instances);
    release_freed_memory();

    let step = (workload.n / 1000).max(1);
    let sample: Vec<u64> = (0..workload.n)
        .step_by(step as usize)
        .chain((0..workload.n).step_by(100).take(500))
        .collect();
    let this = (&workload, states.as_slice());
    eprintln!("restore");
    let plain = restore(
        &args,
        &*factory,
        this,
        &second.completed.metadata,
        parallelism,
        &sample,
    )?;
    let rescaled = match args.rescale {
        Some(rescale) => {
            eprintln!("restore into {} instances", rescale.to);
            Some(restore(
                &args,
                &*factory,
                this,
                &second.completed.metadata,
                rescale.to,
                &sample,
            )?)
        }
        None => None,
    };
    let peak_rss_mb = peak_rss_mb();
    // The storage is left as it was found.
    job.discard_checkpoints()?;

    eprintln!("reference points");
    let codec_mb_per_s = match args.compression.as_str() {
        "none" => None,
        name => Some(codec_speed(registry, name, &workload)?),
    };

    let system = format!("snapstate-{}", env!("CARGO_PKG_VERSION"));
    let mut base = json!({
        "system": system,
        "storage": args.storage.as_deref().unwrap_or("local directory"),
        "backend": args.backend,
        "n": workload.n,
        "v": workload.v,
        "s": workload.s,
        "kind": workload.kind.as_str(),
        "compression": args.compression,
    });
    // Runs beyond the spec say how they differ from it.
    if let Some(record) = base.as_object_mut() {
        if !args.options.is_empty() {
            record.insert("options".to_owned(), json!(args.options));
        }
        if args.pause_after_fill_ms > 0 {
            record.insert(
                "pause_after_fill_ms".to_owned(),
                json!(args.pause_after_fill_ms),
            );
        }
        if let Some(rescale) = args.rescale {
            record.insert("rescale".to_owned(), json!(rescale.to_string()));
        }
        if let Some(ttl_ms) = args.ttl_ms {
            record.insert("ttl_ms".to_owned(), json!(ttl_ms));
        }
    }
    let line = |fields: Value| print_record(&base, fields);
    line(json!({
        "cp": 1,
        "sync_ms": round(first.sync_ms, 4),
        "async_ms": round(first.async_ms, 1),
        "bytes": first.bytes,
        "fill_keys_per_s": fill_keys_per_s.round(),
        reference.0: round(reference.1, 1),
        "codec_mb_per_s": codec_mb_per_s.map(|speed| round(speed, 1)),
    }));
    for (checkpoint, cp) in later.iter().zip(2..) {
        line(json!({
            "cp": cp,
            "sync_ms": round(checkpoint.sync_ms, 4),
            "async_ms": round(checkpoint.async_ms, 1),
            "bytes": checkpoint.bytes,
            "total_bytes": checkpoint.total_bytes(),
        }));
    }
    let mut last = json!({
        "cp": args.checkpoints,
        "sync_ms": round(second.sync_ms, 4),
        "async_ms": round(second.async_ms, 1),
        "bytes": second.bytes,
        "total_bytes": second.total_bytes(),
        "restore_ms": round(plain.total_ms, 1),
        "verified_keys": plain.verified,
        "peak_rss_mb": peak_rss_mb.map(f64::round),
    });
    if let (Some(record), Some(rescaled)) = (last.as_object_mut(), rescaled) {
        record.insert("restore_max_ms".to_owned(), json!(round(plain.max_ms, 1)));
        record.insert(
            "rescale_restore_ms".to_owned(),
            json!(round(rescaled.total_ms, 1)),
        );
        record.insert(
            "rescale_restore_max_ms".to_owned(),
            json!(round(rescaled.max_ms, 1)),
        );
    }
    line(last);
    Ok(())
}

/// Prints one JSON line: `base`'s fields, then `fields`.
pub(crate) fn print_record(base: &Value, fields: Value) {
    let mut record = base.clone();
    if let (Some(record), Some(fields)) = (record.as_object_mut(), fields.as_object()) {
        record.extend(fields.clone());
    }
    println!("{record}");
}

/// The median of three uploads of `bytes` random bytes through a checkpoint stream of
/// `storage` (1 MiB writes), each discarded after: MB/s.
fn storage_speed(storage: &dyn CheckpointStorage, bytes: u64) -> DynResult<f64> {
    let chunk = random_chunk();
    let factory = storage.stream_factory(CheckpointId::new(u64::MAX))?;
    let mut runs = [0.0; 3];
    for run in &mut runs {
        let started = Instant::now();
        let mut stream = factory.create_output_stream(CheckpointedStateScope::Exclusive)?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        let handle = stream.close_and_get_handle()?;
        *run = bytes as f64 / 1e6 / started.elapsed().as_secs_f64();
        handle.discard()?;
    }
    storage.discard_checkpoint(CheckpointId::new(u64::MAX))?;
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}

/// 1 MiB of xorshift bytes (incompressible, as checkpoint data of random values is).
fn random_chunk() -> Vec<u8> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for byte in &mut chunk {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *byte = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
    }
    chunk
}

/// The median of three runs of [`disk_speed_once`]: this machine's virtual disk absorbs
/// some writes in a host cache, and single runs vary severalfold.
pub(crate) fn disk_speed(dir: &Path, bytes: u64) -> DynResult<f64> {
    let mut runs = [0.0; 3];
    for run in &mut runs {
        *run = disk_speed_once(dir, bytes)?;
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}

/// Writes and syncs a file of `bytes` bytes (random, in 1 MiB writes) in `dir`; MB/s.
fn disk_speed_once(dir: &Path, bytes: u64) -> DynResult<f64> {
    let chunk = random_chunk();
    let path = dir.join("disk-reference");
    let started = Instant::now();
    let mut file = File::create(&path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(bytes as f64 / 1e6 / seconds)
}

/// The decorator's speed over the workload's entries, section by section as the canonical
/// format lays them out: uncompressed MB/s.
fn codec_speed(registry: &Registry, name: &str, workload: &Workload) -> DynResult<f64> {
    let decorator = registry.compression(name)?;
    let (stream, sections) = canonical_sections(workload)?;
    let input: usize = sections.iter().map(|section| section.len()).sum();
    let mut out = Vec::with_capacity(input);
    let started = Instant::now();
    for section in sections {
        let mut writer = decorator.compress(&mut out);
        writer.write_all(&stream[section])?;
        writer.finish()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(input as f64 / 1e6 / seconds)
}

/// The workload's entries as an uncompressed stream of the canonical format, written by its
/// own writer, and where in it each key group's data lies (after the key group's id, which
/// is not compressed).
fn canonical_sections(workload: &Workload) -> DynResult<(Vec<u8>, Vec<Range<usize>>)> {
    let composite = CompositeKey::new(MAX_PARALLELISM);
    let mut keys = vec![Vec::new(); MAX_PARALLELISM.get() as usize];
    for key in 0..workload.n {
        let group = MAX_PARALLELISM.key_group_of(&key.to_be_bytes());
        keys[group.get() as usize].push(key);
    }
    let states = (0..workload.s)
        .map(|state| StateMetaInfo::value(Workload::state_name(state), "void", "bytes"))
        .collect();
    let header = KeyedBackendSerializationProxy::new("u64-be", states, "none", MAX_PARALLELISM);
    let range = MAX_PARALLELISM.all();
    let mut stream = Vec::new();
    let (offsets, _) = {
        let mut writer = KeyedSnapshotWriter::new(
            &mut stream,
            0,
            &header,
            &UncompressedStreamCompressionDecorator,
            range,
            MAX_PARALLELISM,
        )?;
        let (mut composite_key, mut value) = (Vec::new(), Vec::new());
        for group in range.iter() {
            writer.write_key_group(group, |entries| {
                for state in 0..workload.s {
                    // Header ids: at most `MAX_STATES` states are registered.
                    let id = state as u16;
                    for &key in &keys[group.get() as usize] {
                        composite_key.clear();
                        composite.build_into(
                            group,
                            &key.to_be_bytes(),
                            b"",
                            &[],
                            &mut composite_key,
                        )?;
                        workload.value_into(key, state, false, &mut value);
                        entries.write_entry(id, &composite_key, &value)?;
                    }
                }
                Ok(())
            })?;
        }
        writer.finish()?
    };
    let starts: Vec<usize> = offsets.iter().map(|(_, offset)| offset as usize).collect();
    let ends = starts.iter().skip(1).copied().chain([stream.len()]);
    let sections = starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| start + 4..end)
        .collect();
    Ok((stream, sections))
}

/// Has the allocator consolidate and return what the dropped backend freed, before the
/// restore is timed. glibc defers that work to the next large allocation, which would
/// charge the first backend's millions of small frees to the restore (more than half of a
/// heap restore's time, and the reason single runs swung by up to 3x). A recovering job
/// restores in a process its failed backend no longer burdens.
#[cfg(target_os = "linux")]
pub(crate) fn release_freed_memory() {
    // SAFETY: `malloc_trim` takes no pointer; glibc locks each arena while it trims.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn release_freed_memory() {}

//! `cargo xtask demo`: the main job, on the embedded default storage (a local directory).
//!
//! For every linked keyed backend: fill it with the benchmark's keys, checkpoint,
//! modify 1% of the keys, checkpoint again (with the backend's incremental strategy where
//! it has one, pruning what the first checkpoint alone held), "crash" (drop the backend),
//! restore and verify every key, rescale from 1 to 4 instances and from those 4 to 2
//! (verifying every key on the instance that owns it), then take a savepoint of the 2 and
//! restore it into the next backend. Every checkpoint is committed with its metadata, so
//! `snapstate list|inspect|verify` reads the directories the demo leaves.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use state_api::{
    CheckpointMetadata, CheckpointOptions, KeyGroupRange, KeyedBackendParams, KeyedStateBackend,
    KeyedStateHandle, PluginKind, Registry,
};

use state_coordinator::plan_restore;

use crate::DynResult;
use crate::job::{Job, Taken};
use crate::workload::{MAX_PARALLELISM, ValueKind, Workload};

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// One row of the demo's table.
#[derive(Debug)]
struct Row {
    phase: String,
    backend: String,
    sync_ms: Option<f64>,
    async_ms: Option<f64>,
    /// Milliseconds of a restore (all instances of the phase).
    restore_ms: Option<f64>,
    bytes: Option<u64>,
    verified: Option<u64>,
    note: String,
}

/// The phase running now, on a spinner (drawn only when stderr is a terminal).
static PROGRESS: std::sync::LazyLock<ProgressBar> = std::sync::LazyLock::new(|| {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
});

impl Row {
    /// A row for `phase` of `backend`, which starts now.
    fn new(phase: &str, backend: &str) -> Self {
        PROGRESS.set_message(format!("{backend}: {phase}"));
        Row {
            phase: phase.to_owned(),
            backend: backend.to_owned(),
            sync_ms: None,
            async_ms: None,
            restore_ms: None,
            bytes: None,
            verified: None,
            note: String::new(),
        }
    }
}

/// A keyed backend as the demo runs it: its registered name and checkpoint strategy.
struct Target<'r> {
    registry: &'r Registry,
    backend: String,
    strategy: String,
    work: PathBuf,
    instances: std::cell::Cell<u32>,
}

impl Target<'_> {
    fn params(&self, range: KeyGroupRange) -> DynResult<KeyedBackendParams> {
        let instance = self.instances.get();
        self.instances.set(instance + 1);
        let work = self.work.join(format!("instance-{instance}"));
        std::fs::create_dir_all(&work)?;
        let mut params = KeyedBackendParams::new(MAX_PARALLELISM, range);
        params.key_serializer = "u64-be".into();
        params.strategy = Some(self.strategy.clone());
        params.compression = "lz4".into();
        params.working_dir = Some(work);
        Ok(params)
    }

    fn restore(
        &self,
        range: KeyGroupRange,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> DynResult<Box<dyn KeyedStateBackend>> {
        let factory = self.registry.keyed_backend(&self.backend)?;
        Ok(factory.restore(self.params(range)?, self.registry, handles)?)
    }
}

fn owned_keys(workload: &Workload, range: KeyGroupRange) -> impl Iterator<Item = u64> + '_ {
    (0..workload.n)
        .filter(move |key| range.contains(MAX_PARALLELISM.key_group_of(&key.to_be_bytes())))
}

/// Checkpoints every instance as the next checkpoint of `job`; returns what completing
/// it did and fills a row with the summed figures.
fn checkpoint_all(
    instances: &mut [Box<dyn KeyedStateBackend>],
    job: &Job,
    options: &CheckpointOptions,
    row: &mut Row,
) -> DynResult<Taken> {
    let taken = job.checkpoint_all(instances, options)?;
    row.sync_ms = Some(taken.sync_ms);
    row.async_ms = Some(taken.async_ms);
    row.bytes = Some(taken.bytes);
    // The coordinator's figures of the checkpoint.
    let stats = &taken.completed.stats;
    row.note = format!(
        "id {}: {} bytes referenced, {:.0} ms from trigger to commit",
        stats.id,
        stats.state_size,
        stats.duration.unwrap_or_default().as_secs_f64() * 1000.0
    );
    Ok(taken)
}

/// Restores `checkpoint` into `parallelism` instances of `target` as `plan_restore` assigns
/// it, verifying every key on the instance that owns it.
fn restore_all(
    target: &Target<'_>,
    workload: &Workload,
    states: &[String],
    checkpoint: &CheckpointMetadata,
    parallelism: u32,
    row: &mut Row,
) -> DynResult<Vec<Box<dyn KeyedStateBackend>>> {
    let mut instances = Vec::new();
    let mut restore_ms = 0.0;
    let mut verified = 0;
    let mut per_instance = Vec::new();
    let instances_count = NonZeroU32::new(parallelism).ok_or("no instance to restore")?;
    let plan = plan_restore(checkpoint, instances_count, MAX_PARALLELISM)?;
    for (index, part) in (0..).zip(&plan.instances) {
        let range = part.key_groups;
        let started = Instant::now();
        let mut instance = target.restore(range, &part.keyed)?;
        restore_ms += millis(started);
        let checked = workload
            .verify(&mut *instance, states, owned_keys(workload, range), true)
            .map_err(|err| format!("{}: instance {index} of {parallelism}: {err}", row.phase))?;
        let listed = instance.keys(&states[0], b"")?.len() as u64;
        if listed != checked {
            return Err(format!(
                "{}: instance {index} of {parallelism} holds {listed} keys, owns {checked}",
                row.phase
            )
            .into());
        }
        verified += checked;
        per_instance.push(checked.to_string());
        instances.push(instance);
    }
    if verified != workload.n {
        return Err(format!("{}: {verified} of {} keys restored", row.phase, workload.n).into());
    }
    row.restore_ms = Some(restore_ms);
    row.verified = Some(verified);
    if parallelism > 1 {
        row.note = format!("keys per instance: {}", per_instance.join(" + "));
    }
    Ok(instances)
}

/// A backend's last savepoint: the names of its states and its metadata.
type Savepoint = (Vec<String>, CheckpointMetadata);

/// The demo of one backend; adds its rows and returns its last savepoint.
fn run_backend(
    target: &Target<'_>,
    job: &Job,
    workload: &Workload,
    rows: &mut Vec<Row>,
) -> DynResult<Savepoint> {
    let name = target.strategy.as_str();
    let factory = target.registry.keyed_backend(&target.backend)?;
    let all = KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1)?;
    let mut backend = factory.create(target.params(all)?, target.registry)?;
    let states = workload.register(&mut *backend)?;

    let mut row = Row::new("fill", name);
    let started = Instant::now();
    let filled = workload.write(&mut *backend, &states, 0..workload.n, false, |n| {
        PROGRESS.set_message(format!("{name}: fill, {n} of {} keys", workload.n));
    })?;
    row.note = format!("{filled} keys in {:.0} ms", millis(started));
    rows.push(row);

    let mut instances = vec![backend];
    let mut row = Row::new("checkpoint 1", name);
    checkpoint_all(
        &mut instances,
        job,
        &CheckpointOptions::checkpoint(),
        &mut row,
    )?;
    rows.push(row);

    let modified = (0..workload.n).filter(|&k| Workload::is_modified(k));
    let changed = workload.write(&mut *instances[0], &states, modified, true, |_| {})?;
    let mut row = Row::new("checkpoint 2", name);
    let second = checkpoint_all(
        &mut instances,
        job,
        &CheckpointOptions::checkpoint(),
        &mut row,
    )?;
    row.note = format!(
        "{}; after changing {changed} keys; subsuming checkpoint 1 pruned {} shared files",
        row.note, second.pruned
    );
    let second = second.completed.metadata;
    rows.push(row);

    // The crash: the backend goes away without a goodbye.
    drop(instances);
    let mut row = Row::new("crash, restore 1", name);
    let restored = restore_all(target, workload, &states, &second, 1, &mut row)?;
    rows.push(row);
    drop(restored);

    let mut row = Row::new("rescale 1 -> 4", name);
    let mut four = restore_all(target, workload, &states, &second, 4, &mut row)?;
    rows.push(row);
    let mut row = Row::new("checkpoint 3 (4 inst.)", name);
    let third = checkpoint_all(&mut four, job, &CheckpointOptions::checkpoint(), &mut row)?
        .completed
        .metadata;
    rows.push(row);
    drop(four);

    let mut row = Row::new("rescale 4 -> 2", name);
    let mut two = restore_all(target, workload, &states, &third, 2, &mut row)?;
    rows.push(row);
    let mut row = Row::new("savepoint 4 (2 inst.)", name);
    let savepoint = checkpoint_all(&mut two, job, &CheckpointOptions::savepoint(), &mut row)?
        .completed
        .metadata;
    row.note = format!("{}; canonical format, portable to every backend", row.note);
    rows.push(row);
    Ok((states, savepoint))
}

/// Runs the demo with `keys` keys; checkpoint files go under `dir` (or a fresh temporary
/// directory, kept).
pub(crate) fn run(dir: Option<PathBuf>, keys: u64) -> DynResult {
    state_compress::link();
    state_heap::link();
    state_rocksdb::link();
    let registry = Registry::global();
    if let Some(conflict) = registry.conflicts().first() {
        return Err(format!("{conflict}").into());
    }
    println!("linked plugins:");
    println!(
        "  {:<26} {:<20} {:<16} description",
        "kind", "name", "crate"
    );
    for plugin in registry.plugins() {
        println!(
            "  {:<26} {:<20} {:<16} {}",
            plugin.kind.as_str(),
            plugin.name,
            plugin.registered_by,
            plugin.description
        );
    }
    let root = match dir {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("snapstate-demo-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&root)?;
    let workload = Workload {
        n: keys,
        v: 100,
        s: 1,
        kind: ValueKind::Text,
        ttl: None,
    };

    // Every keyed backend, checkpointing with its incremental strategy where it has one.
    let strategies: Vec<(String, String)> = registry
        .names(PluginKind::KeyedStrategy)
        .into_iter()
        .filter_map(|name| {
            let backend = registry.keyed_strategy(&name).ok()?.backend().to_owned();
            Some((backend, name))
        })
        .collect();
    let mut targets = Vec::new();
    for backend in registry.names(PluginKind::KeyedBackend) {
        let own: Vec<&String> = strategies
            .iter()
            .filter(|(b, _)| *b == backend)
            .map(|(_, s)| s)
            .collect();
        let strategy = own
            .iter()
            .find(|s| s.ends_with("-incremental"))
            .or(own.first())
            .map(|s| s.to_string())
            .ok_or_else(|| format!("keyed backend `{backend}` has no linked strategy"))?;
        targets.push(Target {
            registry,
            work: root.join("work").join(&strategy),
            backend,
            strategy,
            instances: std::cell::Cell::new(0),
        });
    }

    println!();
    println!(
        "{keys} keys x {} bytes ({}), max parallelism {MAX_PARALLELISM}, key-group compression lz4, storage {}",
        workload.v,
        workload.kind.as_str(),
        root.display()
    );
    let mut rows = Vec::new();
    let mut savepoints = Vec::new();
    let mut jobs = Vec::new();
    for target in &targets {
        let mut properties = BTreeMap::new();
        properties.insert("backend".to_owned(), target.backend.clone());
        properties.insert("strategy".to_owned(), target.strategy.clone());
        properties.insert("compression".to_owned(), "lz4".to_owned());
        let job_dir = root.join(&target.strategy);
        let storage = state_storage_local::LocalCheckpointStorage::new(&job_dir)?;
        let job = Job::new(Arc::new(storage), 1, properties)?;
        let (states, savepoint) = run_backend(target, &job, &workload, &mut rows)?;
        savepoints.push((target.strategy.clone(), states, savepoint));
        jobs.push(job_dir);
    }
    // Each backend's savepoint restores into the next backend.
    for (index, (from, states, handles)) in savepoints.iter().enumerate() {
        let Some(target) = targets.get((index + 1) % targets.len()) else {
            continue;
        };
        let mut row = Row::new("savepoint -> 3 inst.", &target.strategy);
        restore_all(target, &workload, states, handles, 3, &mut row)?;
        row.note = format!("savepoint 4 of {from}; {}", row.note);
        rows.push(row);
    }

    PROGRESS.finish_and_clear();
    println!();
    println!(
        "  {:<24} {:<20} {:>9} {:>10} {:>11} {:>12} {:>9}  notes",
        "phase", "backend", "sync ms", "async ms", "restore ms", "bytes", "verified"
    );
    let show = |value: Option<f64>, digits: usize| {
        value.map_or_else(String::new, |v| format!("{v:.digits$}"))
    };
    for row in &rows {
        println!(
            "  {:<24} {:<20} {:>9} {:>10} {:>11} {:>12} {:>9}  {}",
            row.phase,
            row.backend,
            show(row.sync_ms, 3),
            show(row.async_ms, 1),
            show(row.restore_ms, 1),
            row.bytes.map_or_else(String::new, |b| b.to_string()),
            row.verified.map_or_else(String::new, |v| v.to_string()),
            row.note
        );
    }
    println!();
    println!("every key verified after every restore; checkpoint directories:");
    for dir in &jobs {
        println!("  {}", dir.display());
    }
    if let Some(first) = jobs.first() {
        println!(
            "inspect them with: cargo run -p snapstate --features cli,full -- list {}",
            first.display()
        );
    }
    std::fs::remove_dir_all(root.join("work"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_verifies_every_backend_and_leaves_committed_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        run(Some(dir.path().to_path_buf()), 3_000).unwrap();
        for job in ["heap-incremental", "rocksdb-incremental"] {
            let storage =
                state_storage_local::LocalCheckpointStorage::new(dir.path().join(job)).unwrap();
            assert_eq!(
                storage.completed_checkpoints().unwrap(),
                [3, 4],
                "{job}: one checkpoint is retained (1 and 2 were subsumed) and the savepoint"
            );
            let savepoint = storage
                .load_checkpoint(state_api::CheckpointId::new(4))
                .unwrap();
            assert_eq!(
                savepoint.checkpoint_type,
                state_api::CheckpointType::Savepoint
            );
            assert_eq!(savepoint.instances.len(), 2);
            assert_eq!(savepoint.properties["strategy"], job);
        }
        assert!(
            !dir.path().join("work").exists(),
            "working directories are removed"
        );
    }
}

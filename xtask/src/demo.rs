//! `cargo xtask demo`: the main job, on the embedded default storage (a local directory).
//!
//! Lists the linked plugins, then for every linked compression decorator fills a heap
//! backend with the benchmark's keys and values, takes a checkpoint (timing the
//! synchronous and asynchronous parts), stores the handle as checkpoint metadata (JSON),
//! reads it back, restores every key and verifies it, and restores the same checkpoint
//! into two instances to show rescaling.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use state_api::key_group::KeyGroupRangeAssignment;
use state_api::{
    CheckpointOptions, KeyGroupRange, KeyedBackendParams, KeyedStateHandle, LocalCheckpointStorage,
    Registry, StateMetaInfo, StateObject,
};

use crate::DynResult;

const MAX_PARALLELISM: u32 = 128;
const VALUE_SIZE: usize = 100;
const STATE: &str = "s0";

/// The benchmark's value generator (BENCHMARK.md): xorshift64*, `text` kind.
fn value(key: u64) -> Vec<u8> {
    let mut x = key.wrapping_mul(1_000_003).wrapping_add(1);
    (0..VALUE_SIZE)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            b'a' + (x.wrapping_mul(0x2545_F491_4F6C_DD1D) & 7) as u8
        })
        .collect()
}

/// Milliseconds since `started`.
fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn params(compression: &str, range: KeyGroupRange) -> KeyedBackendParams {
    let mut params = KeyedBackendParams::new(MAX_PARALLELISM, range);
    params.compression = compression.to_owned();
    params.key_serializer = "u64-be".to_owned();
    params
}

/// Figures of one decorator's run.
struct Figures {
    sync_ms: f64,
    async_ms: f64,
    bytes: u64,
    restore_ms: f64,
    verified: u64,
    per_instance: Vec<u64>,
}

/// Fills a heap backend, checkpoints it, keeps the handle as checkpoint metadata, restores
/// it into one instance (verifying every key) and into two (rescaling).
fn run_one(
    registry: &Registry,
    compression: &str,
    storage: &LocalCheckpointStorage,
    checkpoint_id: u64,
    keys: u64,
) -> DynResult<Figures> {
    let heap = registry.keyed_backend("heap")?;
    let all = KeyGroupRange::new(0, MAX_PARALLELISM - 1)?;
    let mut backend = heap.create(params(compression, all), registry)?;
    backend.register_state(&StateMetaInfo::value(STATE, "void", "bytes"))?;
    for key in 0..keys {
        backend.set_current_key(&key.to_be_bytes())?;
        backend.put_value(STATE, b"", &value(key))?;
    }

    let factory = Arc::new(storage.stream_factory(checkpoint_id)?);
    let started = Instant::now();
    let task = backend.snapshot(checkpoint_id, 0, factory, &CheckpointOptions::checkpoint())?;
    let sync_ms = millis(started);
    let started = Instant::now();
    let result = task.run()?;
    let async_ms = millis(started);
    let handle = result
        .job_manager_owned()
        .ok_or("the checkpoint of a non-empty backend wrote nothing")?
        .clone();

    // The coordinator keeps handles as checkpoint metadata and hands them back.
    let metadata_path = storage.checkpoint_dir(checkpoint_id).join("_metadata.json");
    std::fs::write(&metadata_path, serde_json::to_vec_pretty(&handle)?)?;
    let handle: Arc<dyn KeyedStateHandle> =
        serde_json::from_slice(&std::fs::read(&metadata_path)?)?;

    let started = Instant::now();
    let mut restored = heap.restore(
        params(compression, all),
        registry,
        std::slice::from_ref(&handle),
    )?;
    let restore_ms = millis(started);
    let mut verified = 0;
    for key in 0..keys {
        restored.set_current_key(&key.to_be_bytes())?;
        match restored.value(STATE, b"")? {
            Some(stored) if stored == value(key) => verified += 1,
            _ => return Err(format!("{compression}: key {key} restored wrongly").into()),
        }
    }

    // Rescaling: the same checkpoint restored into two instances, each keeping its range.
    let mut per_instance = Vec::new();
    for index in 0..2 {
        let range = KeyGroupRangeAssignment::compute_key_group_range_for_operator_index(
            MAX_PARALLELISM,
            2,
            index,
        )?;
        let instance = heap.restore(
            params(compression, range),
            registry,
            std::slice::from_ref(&handle),
        )?;
        per_instance.push(instance.keys(STATE, b"")?.len() as u64);
    }
    Ok(Figures {
        sync_ms,
        async_ms,
        bytes: handle.state_size(),
        restore_ms,
        verified,
        per_instance,
    })
}

/// Runs the demo; checkpoint files go under `dir` (or a fresh temporary directory).
pub(crate) fn run(dir: Option<PathBuf>, keys: u64) -> DynResult {
    state_compress::link();
    state_heap::link();
    let registry = Registry::global();
    if let Some(conflict) = registry.conflicts().first() {
        return Err(format!("{conflict}").into());
    }
    println!("linked plugins:");
    println!(
        "  {:<26} {:<12} {:<16} description",
        "kind", "name", "crate"
    );
    for plugin in registry.plugins() {
        println!(
            "  {:<26} {:<12} {:<16} {}",
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
    let storage = LocalCheckpointStorage::new(&root)?;
    println!();
    println!(
        "{keys} keys of {VALUE_SIZE} bytes in a heap backend, max parallelism {MAX_PARALLELISM}, one checkpoint per decorator:"
    );
    println!(
        "  {:<12} {:>10} {:>10} {:>10} {:>11} {:>9}  rescaled to 2",
        "compression", "bytes", "sync ms", "async ms", "restore ms", "verified"
    );
    for (index, name) in registry
        .names(state_api::PluginKind::Compression)
        .iter()
        .enumerate()
    {
        let figures = run_one(registry, name, &storage, index as u64 + 1, keys)?;
        let rescaled: u64 = figures.per_instance.iter().sum();
        if figures.verified != keys || rescaled != keys {
            return Err(format!(
                "{name}: {} keys restored, {rescaled} after rescaling, of {keys}",
                figures.verified
            )
            .into());
        }
        println!(
            "  {:<12} {:>10} {:>10.3} {:>10.1} {:>11.1} {:>9}  {:?}",
            name,
            figures.bytes,
            figures.sync_ms,
            figures.async_ms,
            figures.restore_ms,
            figures.verified,
            figures.per_instance
        );
    }
    println!();
    println!("checkpoint files are in {}", root.display());
    Ok(())
}

//! `cargo xtask demo`: the main job, on the embedded default storage (a local directory).
//!
//! Lists the linked plugins, then for every linked compression decorator writes a small
//! keyed snapshot (a serialization-proxy header, then one compressed section per key
//! group with its offset and CRC-32C recorded in a `KeyGroupsStateHandle`), stores the
//! handle as checkpoint metadata (JSON), reads the metadata back, restores every key and
//! verifies it. Until the backends land, the snapshot is written here with the
//! benchmark's key and value generator.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use state_api::key_group::KeyGroupRangeAssignment;
use state_api::{
    CheckpointStreamFactory, CheckpointedStateScope, Error, KeyGroupRange, KeyGroupRangeOffsets,
    KeyGroupsStateHandle, KeyedBackendSerializationProxy, KeyedStateHandle, LocalCheckpointStorage,
    Registry, StateMetaInfo, StateObject, StreamCompressionDecorator,
};

use crate::DynResult;

const MAX_PARALLELISM: u32 = 128;
const KEYS: u64 = 20_000;
const VALUE_SIZE: usize = 100;

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

/// Counts bytes and checksums them on their way to the stream.
struct Tap<'a> {
    inner: &'a mut dyn Write,
    crc: u32,
}

impl Write for Tap<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_snapshot(
    decorator: &dyn StreamCompressionDecorator,
    factory: &dyn CheckpointStreamFactory,
) -> DynResult<KeyGroupsStateHandle> {
    let range = KeyGroupRange::new(0, MAX_PARALLELISM - 1)?;
    let mut by_group: Vec<Vec<u64>> = vec![Vec::new(); MAX_PARALLELISM as usize];
    for key in 0..KEYS {
        let group =
            KeyGroupRangeAssignment::assign_to_key_group(&key.to_be_bytes(), MAX_PARALLELISM);
        by_group[group as usize].push(key);
    }
    let mut stream = factory.create_output_stream(CheckpointedStateScope::Exclusive)?;
    let header = KeyedBackendSerializationProxy::new(
        "u64-be",
        vec![StateMetaInfo::value("s0", "void", "bytes")],
        decorator.name(),
    );
    header.write_to(&mut stream)?;
    let mut offsets = KeyGroupRangeOffsets::new(range);
    let mut checksums = Vec::new();
    for group in range.iter() {
        offsets.set_offset(group, stream.pos())?;
        let mut tap = Tap {
            inner: &mut stream,
            crc: 0,
        };
        let mut section = decorator.compress(&mut tap);
        let keys = &by_group[group as usize];
        section.write_all(&(keys.len() as u32).to_be_bytes())?;
        for key in keys {
            section.write_all(&key.to_be_bytes())?;
            section.write_all(&value(*key))?;
        }
        section.finish()?;
        checksums.push(tap.crc);
    }
    let handle = stream.close_and_get_handle()?;
    Ok(KeyGroupsStateHandle::new(offsets, handle).with_checksums(checksums)?)
}

fn restore_and_verify(registry: &Registry, handle: &KeyGroupsStateHandle) -> DynResult<u64> {
    let mut input = handle.delegate().open()?;
    let header = KeyedBackendSerializationProxy::read_from(&mut input)?;
    let decorator = registry.compression(header.compression())?;
    let range = handle.key_group_range();
    let mut verified = 0;
    for (group, offset) in handle.offsets().iter() {
        let end = match range.contains(group + 1) {
            true => handle.offsets().offset(group + 1)?,
            false => handle.state_size(),
        };
        input.seek(SeekFrom::Start(offset))?;
        let mut raw = vec![0; (end - offset) as usize];
        input.read_exact(&mut raw)?;
        if Some(crc32c::crc32c(&raw)) != handle.checksum(group) {
            return Err(Error::Corrupted {
                what: format!("key group {group}"),
                reason: "checksum mismatch".into(),
            }
            .into());
        }
        let mut section_input = &raw[..];
        let mut section = decorator.decompress(&mut section_input);
        let mut word = [0; 4];
        section.read_exact(&mut word)?;
        for _ in 0..u32::from_be_bytes(word) {
            let mut key = [0; 8];
            let mut stored = vec![0; VALUE_SIZE];
            section.read_exact(&mut key)?;
            section.read_exact(&mut stored)?;
            let key = u64::from_be_bytes(key);
            let expected_group =
                KeyGroupRangeAssignment::assign_to_key_group(&key.to_be_bytes(), MAX_PARALLELISM);
            if expected_group != group || stored != value(key) {
                return Err(format!("key {key} restored wrongly from key group {group}").into());
            }
            verified += 1;
        }
    }
    Ok(verified)
}

/// Runs the demo; checkpoint files go under `dir` (or a fresh temporary directory).
pub(crate) fn run(dir: Option<PathBuf>) -> DynResult {
    state_compress::link();
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
        "{KEYS} keys of {VALUE_SIZE} bytes, max parallelism {MAX_PARALLELISM}, one snapshot per decorator:"
    );
    println!(
        "  {:<12} {:>12} {:>10} {:>10} {:>14}",
        "compression", "bytes", "write ms", "read ms", "verified keys"
    );
    for (index, name) in registry
        .names(state_api::PluginKind::Compression)
        .iter()
        .enumerate()
    {
        let decorator = registry.compression(name)?;
        let checkpoint_id = index as u64 + 1;
        let factory = storage.stream_factory(checkpoint_id)?;
        let started = Instant::now();
        let handle = write_snapshot(decorator.as_ref(), &factory)?;
        let write_ms = started.elapsed().as_secs_f64() * 1000.0;

        // The coordinator keeps handles as checkpoint metadata and hands them back.
        let keyed: Arc<dyn KeyedStateHandle> = Arc::new(handle);
        let metadata = serde_json::to_vec_pretty(&keyed)?;
        let metadata_path = storage.checkpoint_dir(checkpoint_id).join("_metadata.json");
        std::fs::write(&metadata_path, &metadata)?;
        let restored: Arc<dyn KeyedStateHandle> =
            serde_json::from_slice(&std::fs::read(&metadata_path)?)?;
        let restored = restored
            .as_any()
            .downcast_ref::<KeyGroupsStateHandle>()
            .ok_or("checkpoint metadata does not hold a key-groups handle")?;

        let started = Instant::now();
        let verified = restore_and_verify(registry, restored)?;
        let read_ms = started.elapsed().as_secs_f64() * 1000.0;
        if verified != KEYS {
            return Err(format!("{name}: restored {verified} of {KEYS} keys").into());
        }
        println!(
            "  {:<12} {:>12} {:>10.1} {:>10.1} {:>14}",
            name,
            restored.state_size(),
            write_ms,
            read_ms,
            verified
        );
    }
    println!();
    println!("checkpoint files are in {}", root.display());
    Ok(())
}

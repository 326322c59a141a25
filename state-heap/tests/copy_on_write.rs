//! The copy-on-write cost of a held snapshot version, measured through an allocation
//! counter: writers touching `k` entries while a version is held allocate in proportion to
//! `k`, not to the size of the state, and once the snapshot is written and released, memory
//! returns to the live size.
//!
//! Allocations are counted per thread (what the synchronous part costs the processing
//! thread) and live bytes across all threads (the asynchronous part encodes on a helper
//! thread, whose buffers the strategy's thread frees); the tests of this file take one lock,
//! so no other test's allocations mix into the live count.

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use state_api::CheckpointId;
use state_api::MaxParallelism;
use state_api::SnapshotRequest;
use state_api::{KeyGroupRange, KeyedBackendParams, KeyedStateBackend, Registry, StateMetaInfo};
use state_heap::HeapKeyedStateBackend;
use state_storage_local::MemoryCheckpointStreamFactory;

struct CountingAllocator;

thread_local! {
    /// Bytes allocated by this thread so far.
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

/// Bytes allocated minus bytes freed, by every thread.
static LIVE: AtomicI64 = AtomicI64::new(0);

/// Held by every test of this file while it measures.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn count(allocated: u64, freed: u64) {
    // `try_with`: the thread-local may already be gone while a thread shuts down.
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + allocated));
    LIVE.fetch_add(allocated as i64 - freed as i64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counting touches only a
// const-initialised thread-local and an atomic, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as u64, 0);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, layout.size() as u64);
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as u64, layout.size() as u64);
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocated() -> u64 {
    ALLOCATED.with(Cell::get)
}

fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

const STATE: &str = "s0";
const VALUE: usize = 100;

fn value(key: u64, generation: u8) -> Vec<u8> {
    let mut value = vec![generation; VALUE];
    value[..8].copy_from_slice(&key.to_be_bytes());
    value
}

fn filled(n: u64) -> HeapKeyedStateBackend {
    state_heap::link();
    let registry = Registry::global();
    let params =
        KeyedBackendParams::new(MaxParallelism::of(128), KeyGroupRange::new(0, 127).unwrap());
    let mut backend = HeapKeyedStateBackend::new(params, registry).unwrap();
    backend
        .register_state(&StateMetaInfo::value(STATE, "void", "bytes"))
        .unwrap();
    for key in 0..n {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend.put_value(STATE, b"", &value(key, 0)).unwrap();
    }
    backend
}

/// Bytes allocated while overwriting `k` keys spread over the whole key space.
fn touch(backend: &mut HeapKeyedStateBackend, n: u64, k: u64, generation: u8) -> u64 {
    let values: Vec<(u64, Vec<u8>)> = (0..k)
        .map(|i| {
            let key = i * (n / k);
            (key, value(key, generation))
        })
        .collect();
    let before = allocated();
    for (key, value) in &values {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend.put_value(STATE, b"", value).unwrap();
    }
    allocated() - before
}

/// The bytes that copying on write cost for `k` touched entries of a state of `n` entries:
/// what the same writes allocate while a snapshot version is held, minus what they
/// allocate without one (the new values themselves).
fn copy_cost(n: u64, k: u64) -> u64 {
    let mut backend = filled(n);
    let plain = touch(&mut backend, n, k, 1);
    let factory = Arc::new(MemoryCheckpointStreamFactory::default());
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            factory,
        )
        .unwrap();
    let held = touch(&mut backend, n, k, 2);
    drop(task);
    held.saturating_sub(plain)
}

#[test]
fn touching_k_entries_copies_in_proportion_to_k_not_to_the_state() {
    let _serial = serial();
    let k = 500;
    let small = copy_cost(20_000, k);
    let large = copy_cost(200_000, k);
    let per_entry_large = large / k;
    println!(
        "copy cost per touched entry: {} B at 20k entries, {per_entry_large} B at 200k",
        small / k
    );
    // The state of 200k entries holds over 20 MB; copying on write must not come near it.
    let state_bytes = 200_000 * VALUE as u64;
    assert!(
        large < state_bytes / 10,
        "touching {k} entries copied {large} B of a {state_bytes} B state"
    );
    // Only the trie path to each touched entry is copied: nodes of at most 32 slots of
    // pointers and hashes, two or three levels at this size, never the entries' bytes.
    assert!(
        per_entry_large <= 4 * 1024,
        "{per_entry_large} B copied per touched entry"
    );
    // Ten times the entries add at most one trie level to each path (32 times the entries
    // fill one more level), so the cost grows with the logarithm of the state.
    assert!(
        large <= small * 3,
        "copy cost grew from {small} B to {large} B with ten times the entries"
    );
}

#[test]
fn the_synchronous_part_allocates_per_key_group_not_per_entry() {
    let _serial = serial();
    let mut small = filled(1_000);
    let mut large = filled(100_000);
    let cost = |backend: &mut HeapKeyedStateBackend| {
        let factory = Arc::new(MemoryCheckpointStreamFactory::default());
        let before = allocated();
        let task = backend
            .snapshot(
                &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
                factory,
            )
            .unwrap();
        let cost = allocated() - before;
        drop(task);
        cost
    };
    let (small, large) = (cost(&mut small), cost(&mut large));
    println!("synchronous part allocated {small} B at 1k entries, {large} B at 100k");
    assert_eq!(
        small, large,
        "the synchronous part's allocations depend on the number of entries"
    );
}

#[test]
fn memory_returns_to_the_live_size_after_the_snapshot_is_written() {
    let _serial = serial();
    let n = 50_000;
    let k = 2_000;
    let mut backend = filled(n);
    // Warm up: the first touch of the rebalanced trie and the scratch buffers.
    touch(&mut backend, n, k, 1);
    let baseline = live();

    let factory = Arc::new(MemoryCheckpointStreamFactory::default());
    let task = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            factory,
        )
        .unwrap();
    touch(&mut backend, n, k, 2);
    let while_held = live();
    let result = task.run().unwrap();
    drop(result);
    let after = live();
    println!(
        "live bytes: {baseline} before, +{} while the version was held, {:+} after",
        while_held - baseline,
        after - baseline
    );
    assert!(
        while_held - baseline >= k as i64 * VALUE as i64,
        "the held version should keep the {k} overwritten values alive"
    );
    // Same-size values replaced the old ones: what is left over is noise of the
    // allocator's bookkeeping, not the version's nodes or values.
    assert!(
        (after - baseline).abs() < 16 * 1024,
        "{} B still live after the snapshot was released",
        after - baseline
    );
}

//! A third-party keyed state backend for snapstate, the starting point for backend authors:
//! `ordered`, which keeps each state in one ordered map (`BTreeMap`) of canonical entries,
//! written against `state-api` and `state-format` alone.
//!
//! # The idea
//!
//! Every entry is stored exactly as the canonical keyed format
//! ([`state_format::keyed_format`]) writes it: the key is the composite key
//! ([`CompositeKey`](state_format::keyed_format::CompositeKey): key-group prefix, key,
//! namespace, and for map states the user key), the value is the value, the map value, or
//! the whole list as [`encode_list`](state_format::keyed_format::encode_list) lays it out.
//! Because the key-group prefix comes first, the entries of one key group are one
//! contiguous range of each map, and a snapshot writes them in order without any
//! conversion; a restore puts entries back as it reads them. Savepoints therefore move
//! between `ordered` and any other keyed backend (`heap`, `rocksdb`).
//!
//! # What a keyed backend author writes
//!
//! 1. the store ([`OrderedStore`], a [`CanonicalStore`](state_format::CanonicalStore): get,
//!    put, delete and prefix scans of canonical entries per state).
//!    [`CanonicalKeyedBackend`] turns it into a whole
//!    [`KeyedStateBackend`](state_api::KeyedStateBackend): current key and key-group checks,
//!    value, list and map states, the strategies by name (checkpoints with
//!    `params.strategy`, savepoints with the full one), the closed flag, and restore with
//!    rescaling through [`restore_full_snapshots`](state_format::restore_full_snapshots);
//! 2. a full snapshot strategy ([`OrderedFullSnapshotStrategy`], registered as
//!    `ordered-full`), whose synchronous part takes a copy-on-write view of the maps and
//!    whose asynchronous part is a [`FullSnapshotCallable`](state_format::FullSnapshotCallable)
//!    over it (the view lists each key group's entries; the callable writes the header,
//!    sections, offsets and checksums);
//! 3. [`register`] (the backend's two constructors and the strategy), submitted for
//!    link-time registration, and [`link`];
//! 4. tests that run the keyed conformance kit on it (`tests/conformance.rs`).
//!
//! # Example
//!
//! ```
//! use state_api::{KeyGroupRange, KeyedBackendParams, MaxParallelism, Registry, StateMetaInfo};
//!
//! snapstate_example_ordered::link();
//! let registry = Registry::global();
//! let params = KeyedBackendParams::new(MaxParallelism::new(128)?, KeyGroupRange::new(0, 127)?);
//! let mut backend = registry.keyed_backend("ordered")?.create(params, registry)?;
//! backend.register_state(&StateMetaInfo::list("seen", "void", "string"))?;
//! backend.set_current_key(b"alice")?;
//! backend.append_to_list("seen", b"", b"home")?;
//! backend.append_to_list("seen", b"", b"cart")?;
//! assert_eq!(backend.list("seen", b"")?, [b"home".to_vec(), b"cart".to_vec()]);
//! # Ok::<(), state_api::Error>(())
//! ```

mod store;
mod strategy;

use state_api::{KeyedBackendParams, KeyedStateHandle, Registry, Result};
use state_format::CanonicalKeyedBackend;

pub use store::OrderedStore;
pub use strategy::{OrderedFullSnapshotStrategy, OrderedFullSnapshotStrategyFactory};

/// The `ordered` keyed state backend: the canonical backend over an [`OrderedStore`].
pub type OrderedKeyedStateBackend = CanonicalKeyedBackend<OrderedStore>;

/// The keyed backend's registered name.
pub const ORDERED: &str = "ordered";

/// The registered name of the backend's full snapshot strategy, its default.
pub const ORDERED_FULL: &str = "ordered-full";

/// Registers keyed backend `ordered` and keyed strategy `ordered-full` in `registry`.
///
/// # Errors
///
/// [`Error::DuplicatePlugin`](state_api::Error) if a name is taken.
pub fn register(registry: &mut Registry) -> Result<()> {
    registry.register_keyed_backend(state_format::KeyedStateBackendConstructors::new(
        ORDERED,
        "example: keyed state in ordered maps of canonical entries (a third-party backend)",
        create,
        restore,
    ))?;
    registry.register_keyed_strategy(OrderedFullSnapshotStrategyFactory)
}

state_api::submit_registration!(register);

/// An empty `ordered` backend, checkpointing with `params.strategy` (default
/// `ordered-full`).
fn create(params: KeyedBackendParams, registry: &Registry) -> Result<OrderedKeyedStateBackend> {
    let store = OrderedStore::default();
    CanonicalKeyedBackend::new(ORDERED, ORDERED_FULL, store, params, registry)
}

/// An `ordered` backend holding the key groups of `params` from full snapshots of any
/// keyed backend.
fn restore(
    params: KeyedBackendParams,
    registry: &Registry,
    handles: &[std::sync::Arc<dyn KeyedStateHandle>],
) -> Result<OrderedKeyedStateBackend> {
    let store = OrderedStore::default();
    CanonicalKeyedBackend::restore(ORDERED, ORDERED_FULL, store, params, registry, handles)
}

/// Does nothing; call it from binaries and tests so the linker keeps this crate's
/// link-time registration.
pub fn link() {}

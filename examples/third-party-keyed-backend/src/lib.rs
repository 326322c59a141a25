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
//! 1. the backend ([`OrderedKeyedStateBackend`], a [`KeyedStateBackend`](state_api::KeyedStateBackend))
//!    registered as `ordered` through its constructors
//!    ([`KeyedStateBackendConstructors`](state_api::KeyedStateBackendConstructors));
//! 2. the state it shares with its strategies ([`OrderedSnapshotSource`]);
//! 3. a full snapshot strategy ([`OrderedFullSnapshotStrategy`], registered as
//!    `ordered-full`), whose synchronous part takes a copy-on-write view of the maps and
//!    whose asynchronous part hands the entries of each key group to
//!    [`write_full_snapshot`](state_format::keyed_format::write_full_snapshot), which writes
//!    the header, sections, offsets and checksums;
//! 4. restore, which opens each handle with
//!    [`KeyedSnapshotReader`](state_format::keyed_format::KeyedSnapshotReader), checks the
//!    header, registers its states and puts back every entry of the key groups it owns
//!    (which is how a job rescales);
//! 5. [`register`], submitted for link-time registration, and [`link`];
//! 6. tests that run the keyed conformance kit on it (`tests/conformance.rs`).
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

mod backend;
mod restore;
mod strategy;

pub use backend::{OrderedKeyedStateBackend, OrderedSnapshotSource};
pub use strategy::{OrderedFullSnapshotStrategy, OrderedFullSnapshotStrategyFactory};

/// The keyed backend's registered name.
pub const ORDERED: &str = "ordered";

/// The registered name of the backend's full snapshot strategy, its default.
pub const ORDERED_FULL: &str = "ordered-full";

/// Registers keyed backend `ordered` and keyed strategy `ordered-full` in `registry`.
///
/// # Errors
///
/// [`Error::DuplicatePlugin`](state_api::Error) if a name is taken.
pub fn register(registry: &mut state_api::Registry) -> state_api::Result<()> {
    registry.register_keyed_backend(state_api::KeyedStateBackendConstructors::new(
        ORDERED,
        "example: keyed state in ordered maps of canonical entries (a third-party backend)",
        OrderedKeyedStateBackend::new,
        OrderedKeyedStateBackend::restore,
    ))?;
    registry.register_keyed_strategy(OrderedFullSnapshotStrategyFactory)
}

state_api::submit_registration!(register);

/// Does nothing; call it from binaries and tests so the linker keeps this crate's
/// link-time registration.
pub fn link() {}

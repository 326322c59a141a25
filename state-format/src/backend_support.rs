//! What every keyed backend implementation shares: the factory it registers
//! ([`KeyedStateBackendConstructors`], whose backends keep the time-to-live rules of their
//! states through a [`TtlBackend`]), its snapshot side ([`KeyedSnapshots`]) and the look-up
//! of a registered state ([`find_state`]).

use std::any::Any;
use std::sync::Arc;

use state_api::{
    AsyncSnapshotTask, CheckpointStreamFactory, CloseableRegistry, Error, KeyedBackendParams,
    KeyedSnapshotResult, KeyedStateBackend, KeyedStateBackendFactory, KeyedStateHandle, Registry,
    Result, SnapshotRequest, SnapshotStrategy, StateKind, StateMetaInfo, run_snapshot_strategy,
};

use crate::ttl::TtlBackend;

/// How [`KeyedStateBackendConstructors`] restores a backend `B` from handles.
pub type RestoreFn<B> =
    fn(KeyedBackendParams, &Registry, &[Arc<dyn KeyedStateHandle>]) -> Result<B>;

/// The [`KeyedStateBackendFactory`] of a backend type `B`, made of its two constructors: a
/// backend registers this instead of writing a factory type by hand, and its backends come
/// wrapped in a [`TtlBackend`] measuring time by the parameters' clock.
///
/// # Example
///
/// ```ignore
/// registry.register_keyed_backend(KeyedStateBackendConstructors::new(
///     "my-backend",
///     "keyed state in my store",
///     MyBackend::new,     // fn(KeyedBackendParams, &Registry) -> Result<MyBackend>
///     MyBackend::restore, // fn(KeyedBackendParams, &Registry, &[Arc<dyn KeyedStateHandle>]) -> Result<MyBackend>
/// ))?;
/// ```
#[derive(Debug)]
pub struct KeyedStateBackendConstructors<B> {
    name: &'static str,
    description: &'static str,
    create: fn(KeyedBackendParams, &Registry) -> Result<B>,
    restore: RestoreFn<B>,
}

impl<B> KeyedStateBackendConstructors<B> {
    /// The factory registered as `name`, listed with `description`, creating backends with
    /// `create` and restoring them with `restore`.
    pub fn new(
        name: &'static str,
        description: &'static str,
        create: fn(KeyedBackendParams, &Registry) -> Result<B>,
        restore: RestoreFn<B>,
    ) -> Self {
        KeyedStateBackendConstructors {
            name,
            description,
            create,
            restore,
        }
    }
}

impl<B: KeyedStateBackend + 'static> KeyedStateBackendFactory for KeyedStateBackendConstructors<B> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn create(
        &self,
        params: KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn KeyedStateBackend>> {
        let clock = params.clock.clone();
        let backend = (self.create)(params, registry)?;
        Ok(Box::new(TtlBackend::new(backend, clock)))
    }

    fn restore(
        &self,
        params: KeyedBackendParams,
        registry: &Registry,
        handles: &[Arc<dyn KeyedStateHandle>],
    ) -> Result<Box<dyn KeyedStateBackend>> {
        let clock = params.clock.clone();
        let backend = (self.restore)(params, registry, handles)?;
        Ok(Box::new(TtlBackend::new(backend, clock)))
    }
}

/// A keyed strategy as a backend holds it.
type KeyedStrategy = Box<dyn SnapshotStrategy<Arc<dyn KeyedStateHandle>>>;

/// The snapshot side of a keyed backend: its checkpoint strategy (`params.strategy`, by
/// default the backend's full strategy) and savepoint strategy (always the full one, which
/// writes the canonical format), the registry of its running snapshots, and whether it is
/// closed. A backend keeps one and forwards `snapshot`, `pending_snapshots` and `close`.
#[derive(Debug)]
pub struct KeyedSnapshots {
    checkpoint: KeyedStrategy,
    /// `None` when checkpoints already use the full strategy.
    savepoint: Option<KeyedStrategy>,
    owner: CloseableRegistry,
    what: String,
}

impl KeyedSnapshots {
    /// The strategies of backend `backend` whose full strategy is `full`, created from
    /// `registry` with `source`, the state the backend shares with them (what
    /// [`KeyedSnapshotStrategyFactory::create`](state_api::KeyedSnapshotStrategyFactory::create)
    /// receives).
    ///
    /// # Errors
    ///
    /// An unknown strategy or decorator ([`Error::UnknownPlugin`]); a strategy registered
    /// for another backend ([`Error::InvalidArgument`]); the strategy factory's errors.
    pub fn new(
        backend: &str,
        full: &str,
        source: &dyn Any,
        params: &KeyedBackendParams,
        registry: &Registry,
    ) -> Result<Self> {
        let create = |name: &str| -> Result<KeyedStrategy> {
            let factory = registry.keyed_strategy(name)?;
            if factory.backend() != backend {
                return Err(Error::InvalidArgument(format!(
                    "snapshot strategy `{name}` is for backend `{}`, not `{backend}`",
                    factory.backend()
                )));
            }
            factory.create(source, params, registry)
        };
        let checkpoint_name = params.strategy.as_deref().unwrap_or(full);
        Ok(KeyedSnapshots {
            checkpoint: create(checkpoint_name)?,
            savepoint: (checkpoint_name != full)
                .then(|| create(full))
                .transpose()?,
            owner: CloseableRegistry::default(),
            what: format!("{backend} backend of {}", params.key_group_range),
        })
    }

    /// [`Error::Closed`] once the backend is closed.
    pub fn check_open(&self) -> Result<()> {
        let what = || self.what.clone();
        (!self.owner.is_closed())
            .then_some(())
            .ok_or_else(|| Error::Closed { what: what() })
    }

    /// Takes a snapshot for `request` with the strategy its kind asks for (see
    /// [`KeyedStateBackend::snapshot`]).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], and the strategy's errors.
    pub fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<AsyncSnapshotTask<KeyedSnapshotResult>> {
        self.check_open()?;
        let strategy = match (&mut self.savepoint, request.is_savepoint()) {
            (Some(savepoint), true) => savepoint,
            _ => &mut self.checkpoint,
        };
        run_snapshot_strategy(&mut **strategy, &self.owner, request, factory)
    }

    /// Snapshots started and not yet finished or cancelled.
    pub fn pending(&self) -> usize {
        self.owner.len()
    }

    /// Closes the backend's snapshot side: running snapshots are cancelled, later calls
    /// fail with [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// The first error of closing a running snapshot's streams.
    pub fn close(&self) -> Result<()> {
        self.owner.close()
    }
}

/// The position of keyed state `name` among `states` (a backend's registered meta infos,
/// in registration order), checked to be of `kind` when one is given: the look-up every
/// keyed backend's accessors start with.
///
/// # Errors
///
/// [`Error::NotFound`] for a state that is not registered; [`Error::Incompatible`] for one
/// of another kind.
pub fn find_state<'a>(
    states: impl IntoIterator<Item = &'a StateMetaInfo>,
    name: &str,
    kind: Option<StateKind>,
) -> Result<usize> {
    let (index, held) = states
        .into_iter()
        .enumerate()
        .find(|(_, state)| state.name == name)
        .ok_or_else(|| Error::NotFound {
            what: format!("state `{name}` (register it first)"),
        })?;
    match kind {
        Some(kind) if kind != held.kind => Err(Error::Incompatible {
            what: format!("kind of state `{name}`"),
            held: held.kind.to_string(),
            requested: kind.to_string(),
        }),
        _ => Ok(index),
    }
}

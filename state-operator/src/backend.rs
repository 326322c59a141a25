//! [`DefaultOperatorStateBackend`]: operator list and broadcast state in memory.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    AsyncSnapshotTask, CheckpointListener, CheckpointStreamFactory, CloseableRegistry,
    DistributionMode, Error, OperatorBackendParams, OperatorSnapshotResult, OperatorStateBackend,
    OperatorStateBackendFactory, OperatorStateMetaInfo, OperatorStatePartitions,
    OperatorStreamStateHandle, Registry, Result, SnapshotStrategy, run_snapshot_strategy,
};

use crate::OPERATOR;
use crate::format::OperatorSnapshotReader;

/// The data of one operator state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorStateData {
    /// The elements of a list state (split-distribute or union).
    List(Vec<Vec<u8>>),
    /// The entries of a broadcast map state.
    Broadcast(BTreeMap<Vec<u8>, Vec<u8>>),
}

/// One registered operator state: its meta info and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorState {
    /// Name, mode and serializers.
    pub meta: OperatorStateMetaInfo,
    /// The elements or entries.
    pub data: OperatorStateData,
}

impl OperatorState {
    fn empty(meta: OperatorStateMetaInfo) -> Self {
        let data = match meta.mode {
            DistributionMode::Broadcast => OperatorStateData::Broadcast(BTreeMap::new()),
            DistributionMode::SplitDistribute | DistributionMode::Union => {
                OperatorStateData::List(Vec::new())
            }
        };
        OperatorState { meta, data }
    }
}

/// Every operator state of one instance, by name.
pub type OperatorStates = BTreeMap<String, OperatorState>;

/// The state an operator backend shares with its snapshot strategies (the `backend_state`
/// an [`OperatorSnapshotStrategyFactory`](state_api::OperatorSnapshotStrategyFactory) for
/// backend `operator` receives).
#[derive(Debug, Clone, Default)]
pub struct OperatorSnapshotSource {
    states: Arc<Mutex<OperatorStates>>,
}

impl OperatorSnapshotSource {
    fn lock(&self) -> MutexGuard<'_, OperatorStates> {
        // Every change is one call on the map or one element vector: a panicking holder
        // leaves consistent state behind.
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A deep copy of every state: the synchronous part of a snapshot.
    ///
    /// It costs time and memory in proportion to the bytes held, which is why operator
    /// state is meant to be small (offsets, buffered elements, broadcast rules: kilobytes
    /// to a few megabytes); large state belongs in a keyed backend.
    pub fn deep_copy(&self) -> OperatorStates {
        self.lock().clone()
    }
}

/// Operator list and broadcast state of one instance, held in memory.
///
/// # Example
///
/// ```
/// use state_api::{OperatorBackendParams, OperatorStateBackend, OperatorStateMetaInfo, Registry};
/// use state_operator::DefaultOperatorStateBackend;
///
/// state_operator::link();
/// let registry = Registry::global();
/// let mut backend = DefaultOperatorStateBackend::new(OperatorBackendParams::new(0, 1), registry)?;
/// backend.register_state(&OperatorStateMetaInfo::split_list("offsets", "u64-be"))?;
/// backend.append_to_list("offsets", &42u64.to_be_bytes())?;
/// backend.register_state(&OperatorStateMetaInfo::broadcast("rules", "string", "string"))?;
/// backend.put_broadcast_value("rules", b"max", b"10")?;
/// assert_eq!(backend.list("offsets")?, [42u64.to_be_bytes().to_vec()]);
/// assert_eq!(backend.broadcast_value("rules", b"max")?, Some(b"10".to_vec()));
/// # Ok::<(), state_api::Error>(())
/// ```
pub struct DefaultOperatorStateBackend {
    source: OperatorSnapshotSource,
    params: OperatorBackendParams,
    strategy: Box<dyn SnapshotStrategy<OperatorStreamStateHandle>>,
    owner: CloseableRegistry,
}

impl fmt::Debug for DefaultOperatorStateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultOperatorStateBackend")
            .field("operator_index", &self.params.operator_index)
            .field("parallelism", &self.params.parallelism)
            .field("strategy", &self.strategy.description())
            .field("closed", &self.owner.is_closed())
            .finish()
    }
}

impl DefaultOperatorStateBackend {
    /// An empty backend snapshotting with strategy `params.strategy` (default `operator`).
    ///
    /// # Errors
    ///
    /// An unknown strategy ([`Error::UnknownPlugin`]) or one for another backend
    /// ([`Error::InvalidArgument`]).
    pub fn new(params: OperatorBackendParams, registry: &Registry) -> Result<Self> {
        let source = OperatorSnapshotSource::default();
        let name = params.strategy.as_deref().unwrap_or(OPERATOR);
        let factory = registry.operator_strategy(name)?;
        if factory.backend() != OPERATOR {
            return Err(Error::InvalidArgument(format!(
                "snapshot strategy `{name}` is for backend `{}`, not `{OPERATOR}`",
                factory.backend()
            )));
        }
        let strategy = factory.create(&source as &dyn Any, &params, registry)?;
        Ok(DefaultOperatorStateBackend {
            source,
            params,
            strategy,
            owner: CloseableRegistry::default(),
        })
    }

    /// A backend holding the states of `handles`, the share of this instance as the
    /// coordinator planned it (`state_coordinator::repartition_operator_state`): split lists
    /// get the elements the handles list, union lists and broadcast maps come whole.
    ///
    /// # Errors
    ///
    /// Those of [`new`](Self::new); damaged or foreign snapshots ([`Error::Snapshot`]
    /// naming the file and the state, partition or header field); handles that disagree
    /// about a state's mode or serializers ([`Error::Incompatible`]).
    pub fn restore(
        params: OperatorBackendParams,
        registry: &Registry,
        handles: &[OperatorStreamStateHandle],
    ) -> Result<Self> {
        let backend = Self::new(params, registry)?;
        {
            let mut states = backend.source.lock();
            for handle in handles {
                restore_handle(&mut states, handle)?;
            }
        }
        Ok(backend)
    }

    /// The state a snapshot strategy of this backend works from.
    pub fn snapshot_source(&self) -> &OperatorSnapshotSource {
        &self.source
    }

    fn check_open(&self) -> Result<()> {
        match self.owner.is_closed() {
            true => Err(Error::Closed {
                what: format!(
                    "operator backend of instance {} of {}",
                    self.params.operator_index, self.params.parallelism
                ),
            }),
            false => Ok(()),
        }
    }

    /// Runs `f` on the elements of list state `name`.
    fn with_list<T>(&self, name: &str, f: impl FnOnce(&mut Vec<Vec<u8>>) -> T) -> Result<T> {
        self.check_open()?;
        let mut states = self.source.lock();
        match &mut find(&mut states, name)?.data {
            OperatorStateData::List(elements) => Ok(f(elements)),
            OperatorStateData::Broadcast(_) => Err(wrong_kind(name, "broadcast", "list")),
        }
    }

    /// Runs `f` on the entries of broadcast state `name`.
    fn with_broadcast<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut BTreeMap<Vec<u8>, Vec<u8>>) -> T,
    ) -> Result<T> {
        self.check_open()?;
        let mut states = self.source.lock();
        match &mut find(&mut states, name)?.data {
            OperatorStateData::Broadcast(entries) => Ok(f(entries)),
            OperatorStateData::List(_) => Err(wrong_kind(name, "list", "broadcast")),
        }
    }
}

fn find<'s>(states: &'s mut OperatorStates, name: &str) -> Result<&'s mut OperatorState> {
    states.get_mut(name).ok_or_else(|| Error::NotFound {
        what: format!("operator state `{name}` (register it first)"),
    })
}

fn wrong_kind(name: &str, held: &str, requested: &str) -> Error {
    Error::Incompatible {
        what: format!("kind of operator state `{name}`"),
        held: held.to_owned(),
        requested: requested.to_owned(),
    }
}

/// Registers `meta`, or checks it against the state already registered under its name.
///
/// A new state must fit the snapshot header (see [`crate::format`]), so that a state that
/// registers is a state that checkpoints: at most 65535 states, names and serializer ids of
/// at most 65535 bytes.
fn register(states: &mut OperatorStates, meta: &OperatorStateMetaInfo) -> Result<()> {
    match states.get(&meta.name) {
        Some(held) => held.meta.check_compatible(meta),
        None => {
            if states.len() >= usize::from(u16::MAX) {
                return Err(Error::InvalidArgument(format!(
                    "operator state `{}`: a backend holds at most {} states",
                    meta.name,
                    u16::MAX
                )));
            }
            let fields = [
                ("name", &meta.name),
                ("value serializer", &meta.value_serializer),
                ("key serializer", &meta.key_serializer),
            ];
            if let Some((field, value)) = fields
                .iter()
                .find(|(_, value)| value.len() > usize::from(u16::MAX))
            {
                let shown: String = meta.name.chars().take(40).collect();
                return Err(Error::InvalidArgument(format!(
                    "operator state `{shown}`: its {field} has {} bytes, at most {} fit a snapshot",
                    value.len(),
                    u16::MAX
                )));
            }
            states.insert(meta.name.clone(), OperatorState::empty(meta.clone()));
            Ok(())
        }
    }
}

/// Adds what `handle` holds for this instance to `states`.
fn restore_handle(states: &mut OperatorStates, handle: &OperatorStreamStateHandle) -> Result<()> {
    let mut reader = OperatorSnapshotReader::open(handle)?;
    for (name, partitions) in handle.states() {
        let meta = checked_meta(&reader, name, partitions)?;
        register(states, &meta)?;
        let state = find(states, name)?;
        match &mut state.data {
            OperatorStateData::List(elements) => {
                for (index, &offset) in partitions.offsets.iter().enumerate() {
                    elements.push(reader.read_list_element(name, index, offset)?);
                }
            }
            OperatorStateData::Broadcast(entries) => {
                // Copies of one broadcast state are identical; a handle normally holds one.
                for &offset in &partitions.offsets {
                    entries.extend(reader.read_broadcast(name, offset)?);
                }
            }
        }
    }
    Ok(())
}

/// The header's meta info of state `name`, which the handle's partitions must agree with.
fn checked_meta(
    reader: &OperatorSnapshotReader,
    name: &str,
    partitions: &OperatorStatePartitions,
) -> Result<OperatorStateMetaInfo> {
    let corrupted = |reason: String| Error::Snapshot {
        location: reader.location().to_owned(),
        source: Box::new(Error::Corrupted {
            what: format!("operator state `{name}`"),
            reason,
        }),
    };
    let meta = reader
        .header()
        .state(name)
        .ok_or_else(|| corrupted("the handle lists it, the snapshot header does not".to_owned()))?;
    if meta.mode != partitions.mode {
        return Err(corrupted(format!(
            "the handle records mode {}, the snapshot header {}",
            partitions.mode, meta.mode
        )));
    }
    if meta.mode == DistributionMode::Broadcast && partitions.offsets.len() > 1 {
        return Err(corrupted(format!(
            "the handle records {} partitions of a broadcast state, which has one",
            partitions.offsets.len()
        )));
    }
    Ok(meta.clone())
}

impl CheckpointListener for DefaultOperatorStateBackend {
    fn notify_checkpoint_complete(&mut self, _checkpoint_id: CheckpointId) -> Result<()> {
        // Every snapshot is self-contained: there is no history to prune.
        Ok(())
    }
}

impl OperatorStateBackend for DefaultOperatorStateBackend {
    fn backend_name(&self) -> &str {
        OPERATOR
    }

    fn register_state(&mut self, meta: &OperatorStateMetaInfo) -> Result<()> {
        self.check_open()?;
        register(&mut self.source.lock(), meta)
    }

    fn states(&self) -> Vec<OperatorStateMetaInfo> {
        self.source
            .lock()
            .values()
            .map(|state| state.meta.clone())
            .collect()
    }

    fn list(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        self.with_list(name, |elements| elements.clone())
    }

    fn update_list(&mut self, name: &str, elements: &[Vec<u8>]) -> Result<()> {
        self.with_list(name, |held| *held = elements.to_vec())
    }

    fn append_to_list(&mut self, name: &str, element: &[u8]) -> Result<()> {
        self.with_list(name, |held| held.push(element.to_vec()))
    }

    fn broadcast_value(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_broadcast(name, |entries| entries.get(key).cloned())
    }

    fn put_broadcast_value(&mut self, name: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.with_broadcast(name, |entries| {
            entries.insert(key.to_vec(), value.to_vec());
        })
    }

    fn remove_broadcast_value(&mut self, name: &str, key: &[u8]) -> Result<()> {
        self.with_broadcast(name, |entries| {
            entries.remove(key);
        })
    }

    fn broadcast_entries(&self, name: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with_broadcast(name, |entries| {
            entries
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<AsyncSnapshotTask<OperatorSnapshotResult>> {
        self.check_open()?;
        run_snapshot_strategy(&mut *self.strategy, &self.owner, request, factory)
    }

    fn pending_snapshots(&self) -> usize {
        self.owner.len()
    }

    fn close(&mut self) -> Result<()> {
        // Cancels running snapshots; they own deep copies, so nothing else is held.
        self.owner.close()
    }
}

/// Creates and restores [`DefaultOperatorStateBackend`]s; registered as operator backend
/// `operator`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultOperatorStateBackendFactory;

impl OperatorStateBackendFactory for DefaultOperatorStateBackendFactory {
    fn name(&self) -> &'static str {
        OPERATOR
    }

    fn description(&self) -> &'static str {
        "operator list (split-distribute, union) and broadcast state in memory"
    }

    fn create(
        &self,
        params: OperatorBackendParams,
        registry: &Registry,
    ) -> Result<Box<dyn OperatorStateBackend>> {
        Ok(Box::new(DefaultOperatorStateBackend::new(
            params, registry,
        )?))
    }

    fn restore(
        &self,
        params: OperatorBackendParams,
        registry: &Registry,
        handles: &[OperatorStreamStateHandle],
    ) -> Result<Box<dyn OperatorStateBackend>> {
        Ok(Box::new(DefaultOperatorStateBackend::restore(
            params, registry, handles,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> DefaultOperatorStateBackend {
        let mut registry = Registry::default();
        crate::register(&mut registry).unwrap();
        DefaultOperatorStateBackend::new(OperatorBackendParams::new(0, 1), &registry).unwrap()
    }

    #[test]
    fn a_state_that_could_not_be_snapshotted_is_refused_at_registration() {
        let mut backend = backend();
        let long_name = OperatorStateMetaInfo::split_list("n".repeat(70_000), "bytes");
        let err = backend.register_state(&long_name).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("name has 70000 bytes"), "{err}");
        let long_serializer = OperatorStateMetaInfo::broadcast("rules", "k".repeat(65_536), "v");
        let err = backend.register_state(&long_serializer).unwrap_err();
        assert!(err.to_string().contains("key serializer"), "{err}");
        assert!(backend.states().is_empty(), "nothing was registered");
        let fits = OperatorStateMetaInfo::split_list("n".repeat(65_535), "bytes");
        backend.register_state(&fits).unwrap();
        assert_eq!(backend.states(), [fits]);
    }
}

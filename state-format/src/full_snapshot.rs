//! [`FullSnapshotCallable`]: the asynchronous part of a full snapshot in the canonical
//! format, for any keyed backend whose synchronous part took a [`KeyGroupSource`] (a
//! consistent view of its state).

use std::sync::Arc;

use state_api::{
    AsyncSnapshotCallable, CheckpointId, CheckpointStreamFactory, Error, KeyedBackendParams,
    KeyedSnapshotResult, Result, SnapshotContext, SnapshotRequest, SnapshotResult, StateMetaInfo,
    StreamCompressionDecorator,
};

use crate::KeyedBackendSerializationProxy;
use crate::keyed_format::{FullSnapshotTarget, KeyGroupEntryWriter, write_full_snapshot};

/// A consistent view of a keyed backend's state that a full snapshot writes, key group by
/// key group, after the synchronous part returned.
pub trait KeyGroupSource: Send {
    /// The registered states; a state's id in the snapshot is its position here.
    fn states(&self) -> Vec<StateMetaInfo>;

    /// Writes every entry of key group `group.key_group()`, in canonical order (by state
    /// id, then composite key), with [`KeyGroupEntryWriter::write_entry`].
    ///
    /// # Errors
    ///
    /// The writer's errors, and the view's own.
    fn write_key_group(&self, group: &mut KeyGroupEntryWriter<'_>) -> Result<()>;
}

/// Writes a [`KeyGroupSource`] as one full snapshot of `params.key_group_range` with
/// [`write_full_snapshot`]: the header of its states, then every key group through the
/// decorator. No states, no snapshot (an empty result); registered states without entries
/// still write one. Cleanup drops the view, releasing what it holds.
pub struct FullSnapshotCallable<S> {
    source: Option<S>,
    checkpoint_id: CheckpointId,
    factory: Arc<dyn CheckpointStreamFactory>,
    compression: Arc<dyn StreamCompressionDecorator>,
    params: KeyedBackendParams,
}

impl<S> std::fmt::Debug for FullSnapshotCallable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FullSnapshotCallable")
            .field("checkpoint_id", &self.checkpoint_id)
            .field("range", &self.params.key_group_range)
            .field("released", &self.source.is_none())
            .finish()
    }
}

impl<S> FullSnapshotCallable<S> {
    /// The asynchronous part of `request` writing `source` through `factory`, for a backend
    /// created with `params`, sections through `compression`.
    pub fn new(
        source: S,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
        compression: Arc<dyn StreamCompressionDecorator>,
        params: KeyedBackendParams,
    ) -> Self {
        FullSnapshotCallable {
            source: Some(source),
            checkpoint_id: request.id,
            factory,
            compression,
            params,
        }
    }
}

impl<S: KeyGroupSource> AsyncSnapshotCallable<KeyedSnapshotResult> for FullSnapshotCallable<S> {
    fn call_internal(&mut self, context: &SnapshotContext) -> Result<KeyedSnapshotResult> {
        let source = self.source.as_ref().ok_or_else(|| Error::Closed {
            what: format!("state view of checkpoint {}", self.checkpoint_id),
        })?;
        let states = source.states();
        if states.is_empty() {
            return Ok(SnapshotResult::empty());
        }
        let params = &self.params;
        let header = KeyedBackendSerializationProxy::new(
            params.key_serializer.as_str(),
            states,
            self.compression.name(),
            params.max_parallelism,
        );
        let target = FullSnapshotTarget::new(
            self.checkpoint_id,
            &*self.factory,
            params,
            &*self.compression,
        );
        write_full_snapshot(context, target, &header, |group| {
            source.write_key_group(group)
        })
    }

    fn cleanup_provided_resources(&mut self) {
        self.source = None;
    }
}

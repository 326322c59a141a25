//! [`CheckpointStreamWithResultProvider`]: the stream a snapshot strategy writes to, the
//! primary checkpoint stream paired with the task-local copy that local recovery asks for.

use std::io::{self, Write};
use std::sync::Arc;

use state_api::{
    CheckpointId, CheckpointStateOutputStream, CheckpointStreamFactory, CheckpointedStateScope,
    Closeable, Error, LocalRecoveryConfig, Result, SnapshotContext, SnapshotResult,
    StreamStateHandle,
};

/// The stream a snapshot writes to: the primary (job-manager-owned) stream alone, or the
/// primary plus a secondary task-local copy for local recovery.
///
/// The copy is best-effort: if writing the secondary fails, the snapshot goes on with the
/// primary alone (the local copy is deleted and a warning traced), because local recovery
/// is an optimisation and must never fail a checkpoint.
///
/// # Example
///
/// ```
/// use std::io::Write;
/// use std::sync::Arc;
/// use state_api::{CheckpointedStateScope, LocalRecoveryConfig, StateObject};
/// use state_format::CheckpointStreamWithResultProvider;
/// use state_storage_local::{MemoryCheckpointStreamFactory, TaskLocalDirectory};
///
/// let factory = MemoryCheckpointStreamFactory::default();
/// let local = tempfile::tempdir().unwrap();
/// let mut out = CheckpointStreamWithResultProvider::create(
///     state_api::CheckpointId::new(7),
///     CheckpointedStateScope::Exclusive,
///     &factory,
///     &LocalRecoveryConfig::enabled(Arc::new(TaskLocalDirectory::new(local.path()))),
/// )?;
/// out.write_all(b"state").unwrap();
/// let result = out.close_and_finalize()?;
/// assert_eq!(result.state_size(), 5);
/// assert!(result.task_local().is_some());
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug)]
pub struct CheckpointStreamWithResultProvider {
    primary: Box<dyn CheckpointStateOutputStream>,
    secondary: Option<Box<dyn CheckpointStateOutputStream>>,
}

impl CheckpointStreamWithResultProvider {
    /// Writes to `primary` only.
    pub fn primary_only(primary: Box<dyn CheckpointStateOutputStream>) -> Self {
        CheckpointStreamWithResultProvider {
            primary,
            secondary: None,
        }
    }

    /// Writes to `primary` and duplicates every byte into `secondary`.
    pub fn primary_and_secondary(
        primary: Box<dyn CheckpointStateOutputStream>,
        secondary: Box<dyn CheckpointStateOutputStream>,
    ) -> Self {
        CheckpointStreamWithResultProvider {
            primary,
            secondary: Some(secondary),
        }
    }

    /// Opens the primary stream from `factory` and, when `local_recovery` is enabled, a
    /// task-local file under its directory for `checkpoint_id`.
    pub fn create(
        checkpoint_id: CheckpointId,
        scope: CheckpointedStateScope,
        factory: &dyn CheckpointStreamFactory,
        local_recovery: &LocalRecoveryConfig,
    ) -> Result<Self> {
        let primary = factory.create_output_stream(scope)?;
        match local_recovery.storage() {
            None => Ok(Self::primary_only(primary)),
            Some(storage) => {
                let dir = storage.checkpoint_dir(checkpoint_id);
                let secondary = storage.create_stream(&dir)?;
                Ok(Self::primary_and_secondary(primary, secondary))
            }
        }
    }

    /// Bytes written so far.
    pub fn pos(&self) -> u64 {
        self.primary.pos()
    }

    /// Whether a task-local copy is still being written.
    pub fn has_secondary(&self) -> bool {
        self.secondary.is_some()
    }

    /// Closes both streams from another thread (see [`CheckpointStateOutputStream::closer`]).
    pub fn closer(&self) -> Arc<dyn Closeable> {
        let primary = self.primary.closer();
        let secondary = self.secondary.as_ref().map(|s| s.closer());
        Arc::new(move || {
            let first = primary.close();
            let second = secondary.as_ref().map_or(Ok(()), |s| s.close());
            first.and(second)
        })
    }

    /// Completes the streams and returns their handles as a [`SnapshotResult`]. A failure of
    /// the primary fails the snapshot (and deletes the local copy); a failure of the
    /// secondary only drops the local copy.
    pub fn close_and_finalize(self) -> Result<SnapshotResult<Arc<dyn StreamStateHandle>>> {
        // On failure, dropping `secondary` deletes the local copy.
        let primary = self.primary.close_and_get_handle()?;
        match self.secondary.map(|s| s.close_and_get_handle()) {
            None => Ok(SnapshotResult::of(primary)),
            Some(Ok(local)) => Ok(SnapshotResult::with_local_state(primary, local)),
            Some(Err(err)) => {
                tracing::warn!(error = %err, "task-local snapshot copy failed; continuing without local recovery");
                Ok(SnapshotResult::of(primary))
            }
        }
    }
}

impl Write for CheckpointStreamWithResultProvider {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.primary.write(buf)?;
        self.duplicate(&buf[..written]);
        Ok(written)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.primary.write_all(buf)?;
        self.duplicate(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.primary.flush()?;
        if let Some(secondary) = &mut self.secondary
            && let Err(err) = secondary.flush()
        {
            self.drop_secondary(err);
        }
        Ok(())
    }
}

impl CheckpointStreamWithResultProvider {
    fn duplicate(&mut self, buf: &[u8]) {
        if let Some(secondary) = &mut self.secondary
            && let Err(err) = secondary.write_all(buf)
        {
            self.drop_secondary(err);
        }
    }

    fn drop_secondary(&mut self, err: io::Error) {
        tracing::warn!(error = %err, "task-local snapshot copy failed; continuing without local recovery");
        // Dropping the stream deletes what it wrote.
        self.secondary = None;
    }
}

/// Writes `bytes` as one stream of `scope` through `factory`, closed by cancellation of
/// `context` while it is written, and returns its handle; `what` names the bytes in errors
/// (`"incremental snapshot meta data"`).
///
/// # Errors
///
/// [`Error::Cancelled`], and the factory's and the stream's
/// errors; nothing of the stream stays visible on an error.
pub fn write_stream(
    context: &SnapshotContext,
    factory: &dyn CheckpointStreamFactory,
    scope: CheckpointedStateScope,
    bytes: &[u8],
    what: &str,
) -> Result<Arc<dyn StreamStateHandle>> {
    let mut stream = factory.create_output_stream(scope)?;
    let registration = context.register(stream.closer())?;
    stream
        .write_all(bytes)
        .map_err(|e| Error::stream(format!("writing {what}"), e))?;
    context.unregister(registration);
    stream.close_and_get_handle()
}

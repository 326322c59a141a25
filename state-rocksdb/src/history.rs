//! [`IncrementalHistory`]: which sst files the incremental checkpoints of one RocksDB
//! backend instance uploaded, and which completed checkpoint the next one builds on.

use state_api::CheckpointId;
use std::collections::BTreeMap;

/// An sst file a checkpoint uploaded (or referred to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadedFile {
    /// Its shared state registry key.
    pub(crate) key: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// CRC-32C of its bytes.
    pub(crate) crc: u32,
}

/// Which sst files the checkpoints of one backend instance uploaded.
#[derive(Debug, Default)]
pub(crate) struct IncrementalHistory {
    /// Identifies the backend instance in shared keys.
    pub(crate) backend_id: String,
    /// Checkpoints whose asynchronous part completed, not yet confirmed: their sst files.
    pub(crate) pending: BTreeMap<CheckpointId, BTreeMap<String, UploadedFile>>,
    /// The last confirmed checkpoint and its sst files: what the next one builds on.
    last_completed: Option<(u64, BTreeMap<String, UploadedFile>)>,
}

impl IncrementalHistory {
    /// A history for a fresh backend instance with a new identifier.
    pub(crate) fn fresh() -> Self {
        IncrementalHistory {
            backend_id: state_api::new_backend_identifier("rocksdb"),
            ..Self::default()
        }
    }

    /// A history continuing from checkpoint `checkpoint_id`, whose sst files (with the
    /// keys they are registered under) are `files`, under a new identifier: the restored
    /// instance may write files under names the old one used for other bytes.
    pub(crate) fn continuing(
        checkpoint_id: CheckpointId,
        files: BTreeMap<String, UploadedFile>,
    ) -> Self {
        IncrementalHistory {
            backend_id: state_api::new_backend_identifier("rocksdb"),
            pending: BTreeMap::new(),
            last_completed: Some((checkpoint_id.get(), files)),
        }
    }

    /// The sst files of the last confirmed checkpoint, by name.
    pub(crate) fn base(&self) -> BTreeMap<String, UploadedFile> {
        self.last_completed
            .as_ref()
            .map(|(_, files)| files.clone())
            .unwrap_or_default()
    }

    /// Checkpoint `checkpoint_id` completed: if this instance took it, its files become
    /// the base and older pending checkpoints are forgotten. A notification for a
    /// checkpoint this instance did not take incrementally (a savepoint, one aborted
    /// here, one from before a restore) changes nothing, so a late notification for an
    /// earlier pending checkpoint still finds it.
    pub(crate) fn complete(&mut self, checkpoint_id: CheckpointId) {
        let Some(files) = self.pending.remove(&checkpoint_id) else {
            return;
        };
        if self
            .last_completed
            .as_ref()
            .is_none_or(|(last, _)| *last < checkpoint_id.get())
        {
            self.last_completed = Some((checkpoint_id.get(), files));
        }
        self.pending.retain(|&id, _| id > checkpoint_id);
    }

    pub(crate) fn abort(&mut self, checkpoint_id: CheckpointId) {
        self.pending.remove(&checkpoint_id);
    }

    /// The checkpoint the next incremental checkpoint builds on.
    pub(crate) fn last_completed(&self) -> Option<u64> {
        self.last_completed.as_ref().map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> BTreeMap<String, UploadedFile> {
        names
            .iter()
            .map(|name| {
                let file = UploadedFile {
                    key: format!("b/{name}"),
                    size: name.len() as u64,
                    crc: 0,
                };
                (name.to_string(), file)
            })
            .collect()
    }

    fn base_names(history: &IncrementalHistory) -> Vec<String> {
        history.base().into_keys().collect()
    }

    #[test]
    fn completing_moves_the_base_and_forgets_older_pending_checkpoints() {
        let mut history = IncrementalHistory::fresh();
        history
            .pending
            .insert(CheckpointId::new(1), files(&["1.sst"]));
        history
            .pending
            .insert(CheckpointId::new(2), files(&["2.sst"]));
        history
            .pending
            .insert(CheckpointId::new(3), files(&["3.sst"]));
        history.complete(CheckpointId::new(2));
        assert_eq!(history.last_completed(), Some(2));
        assert_eq!(base_names(&history), ["2.sst"]);
        assert_eq!(history.pending.keys().copied().collect::<Vec<_>>(), [3]);
        // A late notification of a forgotten, older checkpoint does not move the base back.
        history.complete(CheckpointId::new(1));
        assert_eq!(history.last_completed(), Some(2));
    }

    #[test]
    fn a_notification_for_a_checkpoint_not_taken_here_keeps_pending_ones() {
        let mut history = IncrementalHistory::fresh();
        history
            .pending
            .insert(CheckpointId::new(4), files(&["4.sst"]));
        // Checkpoint 5 was a savepoint (full strategy): nothing recorded for it.
        history.complete(CheckpointId::new(5));
        assert_eq!(history.last_completed(), None);
        history.complete(CheckpointId::new(4));
        assert_eq!(
            history.last_completed(),
            Some(4),
            "checkpoint 4 was not forgotten"
        );
    }

    #[test]
    fn an_aborted_checkpoint_cannot_complete_later() {
        let mut history = IncrementalHistory::fresh();
        history
            .pending
            .insert(CheckpointId::new(1), files(&["1.sst"]));
        history.complete(CheckpointId::new(1));
        history
            .pending
            .insert(CheckpointId::new(2), files(&["1.sst", "2.sst"]));
        history.abort(CheckpointId::new(2));
        history.complete(CheckpointId::new(2));
        assert_eq!(history.last_completed(), Some(1));
        assert_eq!(base_names(&history), ["1.sst"]);
    }

    #[test]
    fn a_restored_history_continues_under_a_new_identifier() {
        let first = IncrementalHistory::continuing(CheckpointId::new(7), files(&["7.sst"]));
        let second = IncrementalHistory::continuing(CheckpointId::new(7), files(&["7.sst"]));
        assert_eq!(first.last_completed(), Some(7));
        assert_eq!(base_names(&first), ["7.sst"]);
        assert_ne!(
            first.backend_id, second.backend_id,
            "two restores of one checkpoint must not share upload keys"
        );
    }
}

//! The error type of the facade and its checkpoint inspector.
//!
//! Problems *inside* a checkpoint (a corrupt key group, a missing file) are not errors:
//! [`verify`](crate::inspect::verify) reports them as
//! [`Problem`](crate::inspect::Problem)s and goes on. An [`Error`] means the request itself
//! cannot be served: the directory is not checkpoint storage, the checkpoint asked for is
//! not there, or the storage cannot be listed.

use state_api::CheckpointId;
use std::io;
use std::path::PathBuf;

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an inspection could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory given does not exist or cannot be read.
    #[error(
        "cannot read `{}`: {source} (expected the storage root given to LocalCheckpointStorage)",
        path.display()
    )]
    Unreadable {
        /// The directory given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// The directory exists but holds no checkpoint at all.
    #[error(
        "`{}` is not a snapstate checkpoint directory: it holds no chk-<id>/_metadata (expected the storage root given to LocalCheckpointStorage)",
        path.display()
    )]
    NotACheckpointDirectory {
        /// The directory given.
        path: PathBuf,
    },

    /// The checkpoint asked for has no committed metadata in the storage.
    #[error(
        "checkpoint {checkpoint_id} is not committed in `{}` (committed: {committed})",
        root.display()
    )]
    CheckpointNotFound {
        /// The storage root.
        root: PathBuf,
        /// The checkpoint asked for.
        checkpoint_id: CheckpointId,
        /// The committed checkpoint ids, comma separated (`none` if there are none).
        committed: String,
    },

    /// A checkpoint directory was given together with another checkpoint id.
    #[error(
        "`{}` is the directory of checkpoint {directory_id}, but checkpoint {requested} was asked for: give the storage root instead",
        path.display()
    )]
    ConflictingCheckpoint {
        /// The `chk-<id>` directory given.
        path: PathBuf,
        /// The id of that directory.
        directory_id: u64,
        /// The id asked for.
        requested: u64,
    },

    /// The storage holds checkpoint directories but none is committed.
    #[error(
        "no checkpoint in `{}` is committed yet (every chk-<id> directory lacks its _metadata)",
        root.display()
    )]
    NoCommittedCheckpoint {
        /// The storage root.
        root: PathBuf,
    },

    /// Reading the storage or a checkpoint's metadata failed.
    #[error("checkpoint storage `{}`: {source}", root.display())]
    Storage {
        /// The storage root.
        root: PathBuf,
        /// What went wrong.
        #[source]
        source: state_api::Error,
    },
}

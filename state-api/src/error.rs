//! The error type of the contract crate, shared by every plugin.

use crate::CheckpointId;
use std::io;
use std::path::PathBuf;

/// A boxed error from a plugin or a codec, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while taking, storing or restoring a snapshot. Plugins map
/// their private failures onto these meanings and fall back to [`Error::Backend`] for the
/// rest, so callers can react to the kind of failure without knowing which plugin failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing checkpoint storage failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// An i/o error outside of a named file (an in-memory stream, a socket, a pipe).
    #[error("i/o error while {context}: {source}")]
    Stream {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// Checkpoint storage refused the request: the credentials are unknown or lack the
    /// permission (an object store's 401 or 403).
    #[error(
        "access to {what} was denied: check the credentials and permissions configured for this storage"
    )]
    AccessDenied {
        /// What was accessed (a bucket, an object URL), never a credential.
        what: String,
    },

    /// Something that should exist does not (a file, a state, a checkpoint).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },

    /// Stored bytes are not what they should be: bad magic, failed checksum, malformed field.
    #[error("corrupted {what}: {reason}")]
    Corrupted {
        /// The object and position that is corrupt (file, header field, key group).
        what: String,
        /// Why it is judged corrupt.
        reason: String,
    },

    /// Stored bytes end before the format says they should.
    #[error("truncated {what}: {reason}")]
    Truncated {
        /// The object and position that is cut short.
        what: String,
        /// What was expected at the cut.
        reason: String,
    },

    /// A handle read back from checkpoint storage names a location outside the storage it
    /// was read from: an absolute path, a `..`, a symbolic link that leaves the root, a file
    /// of another storage. Nothing at that location is read, written or deleted.
    #[error(
        "{location} is outside the checkpoint storage {root} ({reason}): handles read back from storage name only locations under its root"
    )]
    OutsideStorage {
        /// The location the handle names.
        location: String,
        /// The root of the storage that read it.
        root: String,
        /// Why it is outside.
        reason: String,
    },

    /// The bytes were written by a newer format version than this build reads.
    #[error(
        "{what} has format version {found}, this build reads versions up to {supported}: upgrade snapstate to restore it"
    )]
    UnsupportedVersion {
        /// What carries the version.
        what: String,
        /// The version found in the bytes.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },

    /// A request the implementation cannot serve (wrong backend for a strategy, unknown serializer).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// An argument is out of its allowed range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A key belongs to a key group outside the range this instance owns.
    #[error("key group {key_group} is outside of {range}")]
    KeyGroupOutOfRange {
        /// The key group of the key.
        key_group: crate::KeyGroup,
        /// The range it should lie in (the instance's, or all key groups of the job).
        range: crate::KeyGroupRange,
    },

    /// A state, key or snapshot does not match what is asked of it (another kind, another
    /// serializer).
    #[error(
        "{what} is `{held}` but `{requested}` was requested: restore with the setting the snapshot was taken with, or migrate the state"
    )]
    Incompatible {
        /// What differs (`value serializer of state \`count\``, `key serializer`).
        what: String,
        /// What the backend or snapshot holds.
        held: String,
        /// What was asked for.
        requested: String,
    },

    /// Reading one key group of a keyed snapshot failed; `source` says how.
    #[error("key group {key_group} of {location}: {source}")]
    KeyGroup {
        /// The key group being read.
        key_group: crate::KeyGroup,
        /// The snapshot stream (see `StreamStateHandle::describe`).
        location: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// Reading a snapshot stream's header or layout failed; `source` says how.
    #[error("snapshot {location}: {source}")]
    Snapshot {
        /// The snapshot stream (see `StreamStateHandle::describe`).
        location: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// The operation was cancelled (by the task's canceller or by its owner closing).
    #[error("snapshot of checkpoint {checkpoint_id} was cancelled")]
    Cancelled {
        /// The checkpoint whose snapshot was cancelled.
        checkpoint_id: CheckpointId,
    },

    /// A helper thread of a snapshot or restore (an encoder, a reader) stopped without its
    /// result: it panicked. Not the caller's fault; the snapshot or restore failed.
    #[error("{worker} stopped without a result")]
    WorkerStopped {
        /// Which helper, and what it was working on.
        worker: String,
    },

    /// The object was closed (a registry, a stream, a resource guard) and cannot be used.
    #[error("{what} is closed")]
    Closed {
        /// What is closed.
        what: String,
    },

    /// Another job holds what was asked for (a checkpoint storage claimed by a running job).
    #[error("{what} is in use by {holder}: stop that job, or give this one another directory")]
    InUse {
        /// What is held.
        what: String,
        /// Who holds it (a job and its process), as it recorded itself.
        holder: String,
    },

    /// A plugin name that is not linked into this binary.
    #[error("no {kind} named `{name}` is linked; linked: {available}")]
    UnknownPlugin {
        /// The kind of plugin (`keyed state backend`, `compression decorator`, ...).
        kind: &'static str,
        /// The name that was asked for.
        name: String,
        /// The names that are linked, comma separated.
        available: String,
    },

    /// Two linked plugins of one kind claim the same name.
    #[error(
        "{kind} `{name}` is registered twice (by `{first}` and by `{second}`): rename one of them"
    )]
    DuplicatePlugin {
        /// The kind of plugin.
        kind: &'static str,
        /// The contested name.
        name: String,
        /// The crate (or caller) that registered it first.
        first: String,
        /// The crate (or caller) that registered it again.
        second: String,
    },

    /// A checkpoint's metadata could not be (de)serialized.
    #[error("cannot {action} checkpoint metadata: {source}")]
    Metadata {
        /// `encode` or `decode`.
        action: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A backend-specific failure that has no more precise meaning above.
    #[error("backend `{backend}` failed: {source}")]
    Backend {
        /// The backend's registered name.
        backend: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// The error of a keyed state access before any key was set: what every backend returns
    /// then.
    pub fn no_current_key() -> Self {
        Error::InvalidArgument("no current key: call set_current_key first".into())
    }

    /// Wraps an i/o error on `path`. Streams surface failures through `std::io::Error`;
    /// when the failure was one of ours (a cancellation, a corruption found by a codec), it
    /// is unwrapped instead of being reported as plain i/o.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        source.downcast().unwrap_or_else(|source| Error::Io {
            path: path.into(),
            source,
        })
    }

    /// Wraps an i/o error that happened while doing `context` on an unnamed stream,
    /// unwrapping one of ours like [`Error::io`].
    pub fn stream(context: impl Into<String>, source: io::Error) -> Self {
        source.downcast().unwrap_or_else(|source| Error::Stream {
            context: context.into(),
            source,
        })
    }

    /// Packs this error into an `std::io::Error` so it can cross a `Read`/`Write` boundary;
    /// [`Error::io`] and [`Error::stream`] unpack it again.
    pub fn into_io(self) -> io::Error {
        let kind = match self.root() {
            Error::Io { source, .. } | Error::Stream { source, .. } => source.kind(),
            Error::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            Error::Corrupted { .. } | Error::UnsupportedVersion { .. } => {
                io::ErrorKind::InvalidData
            }
            Error::NotFound { .. } => io::ErrorKind::NotFound,
            Error::AccessDenied { .. } => io::ErrorKind::PermissionDenied,
            Error::Closed { .. } => io::ErrorKind::BrokenPipe,
            // Also `Cancelled`, not `Interrupted`: `write_all` and `read_exact` retry on that.
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }

    /// The error under the context wrappers ([`Error::KeyGroup`], [`Error::Snapshot`]): what
    /// actually went wrong.
    ///
    /// ```
    /// use state_api::{Error, KeyGroup};
    ///
    /// let err = Error::KeyGroup {
    ///     key_group: KeyGroup::new(7).expect("below 32768"),
    ///     location: "file /tmp/chk-1/state".into(),
    ///     source: Box::new(Error::Corrupted { what: "key-group data".into(), reason: "checksum".into() }),
    /// };
    /// assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
    /// ```
    pub fn root(&self) -> &Error {
        match self {
            Error::KeyGroup { source, .. } | Error::Snapshot { source, .. } => source.root(),
            other => other,
        }
    }

    /// True for [`Error::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self.root(), Error::Cancelled { .. })
    }
}

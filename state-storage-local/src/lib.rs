//! Checkpoint storage of snapstate on the local machine: a directory (the embedded default
//! of the facade and the demo), memory, and the task-local copies of local recovery.
//!
//! - [`LocalCheckpointStorage`]: a [`CheckpointStorage`](state_api::CheckpointStorage) in a
//!   directory (`chk-<id>/`, `shared/`, `_metadata` committed last), its streams written by a
//!   thread of their own; [`FileStateHandle`]s name files relative to the directory.
//! - [`MemoryCheckpointStreamFactory`]: streams kept in memory, for tests and small state.
//! - [`TaskLocalDirectory`]: where snapshots keep task-local copies for local recovery.
//!
//! Backends never depend on this crate: they write to whatever
//! [`CheckpointStreamFactory`](state_api::CheckpointStreamFactory) the application hands them.

mod background_file;
mod file_handle;
mod listing;
mod local_storage;
mod memory_storage;
mod task_local;

pub use file_handle::{FileStateHandle, LocalRoot, open_regular_file};
pub use local_storage::{
    IN_PROGRESS_PREFIX, LOCK_FILE, LocalCheckpointStorage, LocalDirectoryStreamFactory,
    LocalFileOutputStream,
};
pub use memory_storage::{MemoryCheckpointStreamFactory, MemoryOutputStream};
pub use task_local::TaskLocalDirectory;

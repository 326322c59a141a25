//! The embedded default checkpoint storage: a local directory.
//!
//! Layout under the storage root (the same shape as Flink's file-system storage):
//!
//! | path | holds |
//! | --- | --- |
//! | `chk-<id>/` | exclusive streams of checkpoint `<id>` |
//! | `chk-<id>/_metadata` | the checkpoint's [`CheckpointMetadata`]: present once it completed |
//! | `shared/` | shared streams (incremental files), reused across checkpoints |
//!
//! A stream first collects bytes in memory; streams that stay at or under the file-state
//! threshold (20 KiB by default) are returned inline as a [`ByteStreamStateHandle`] and
//! never touch the disk. Larger streams are written to a hidden `.inprogress-*` file, which is
//! written by a thread of its own (encoding and disk writes overlap, see
//! `background_file.rs`), fsynced, and renamed to its final name only in
//! [`close_and_get_handle`](CheckpointStateOutputStream::close_and_get_handle) (then the
//! directory is fsynced), so a half-written stream is never visible under a final name.
//! Dropping or closing a stream without completing it deletes its in-progress file.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use state_api::CheckpointId;
use state_api::checkpoint_metadata::{CheckpointMetadata, JobId, METADATA_FILE};
use state_api::{
    ByteStreamStateHandle, CheckpointStateOutputStream, CheckpointStorage, CheckpointStreamFactory,
    CheckpointedStateScope, Closeable, Error, Result, StorageClaim, StoredFile, StreamStateHandle,
};
use state_format::StorageRoot;
use state_format::metadata::{self, MAX_METADATA_FILE_LEN};

use crate::background_file::BackgroundFile;
use crate::file_handle::{FileStateHandle, LocalRoot};

/// Name prefix of files being written: never a complete stream.
pub const IN_PROGRESS_PREFIX: &str = ".inprogress-";

/// The file a writing job holds locked in the storage root (see
/// [`CheckpointStorage::claim`]).
pub const LOCK_FILE: &str = "_lock";

/// Directory of the shared streams under the root.
const SHARED_DIR: &str = "shared";

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|err| Error::io(path, err))
}

/// Checkpoint storage in a local directory: hands out one stream factory per checkpoint.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use state_api::{CheckpointStreamFactory, CheckpointedStateScope};
/// use state_storage_local::LocalCheckpointStorage;
///
/// let root = tempfile::tempdir().unwrap();
/// let storage = LocalCheckpointStorage::new(root.path())?.with_file_state_threshold(0);
/// let factory = storage.stream_factory(state_api::CheckpointId::new(1))?;
/// let mut stream = factory.create_output_stream(CheckpointedStateScope::Exclusive)?;
/// stream.write_all(b"key groups").unwrap();
/// let handle = stream.close_and_get_handle()?;
/// let mut back = String::new();
/// handle.open()?.read_to_string(&mut back).unwrap();
/// assert_eq!(back, "key groups");
/// assert!(handle.describe().contains("chk-1"));
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LocalCheckpointStorage {
    root: Arc<LocalRoot>,
    file_state_threshold: usize,
    write_buffer_size: usize,
}

impl LocalCheckpointStorage {
    /// Streams up to this many bytes are kept inline in their handle (Flink's default).
    pub const DEFAULT_FILE_STATE_THRESHOLD: usize = 20 * 1024;
    /// Size of the write buffer in front of each file.
    pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 1024 * 1024;

    /// Storage under `root` (created if missing).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the directory that cannot be created or resolved (a read-only
    /// parent, a file in the way).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        create_dir(&root.join(SHARED_DIR))?;
        Self::open(root)
    }

    /// Storage under the existing directory `root`, creating nothing (for tools that only
    /// read).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming `root` when it cannot be resolved.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Ok(LocalCheckpointStorage {
            root: Arc::new(LocalRoot::new(root)?),
            file_state_threshold: Self::DEFAULT_FILE_STATE_THRESHOLD,
            write_buffer_size: Self::DEFAULT_WRITE_BUFFER_SIZE,
        })
    }

    /// Sets the inline threshold; `0` writes every non-empty stream to a file.
    pub fn with_file_state_threshold(mut self, bytes: usize) -> Self {
        self.file_state_threshold = bytes;
        self
    }

    /// Sets the write buffer size in front of each file.
    pub fn with_write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes.max(1);
        self
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The storage root as handles resolve against it.
    pub fn local_root(&self) -> &Arc<LocalRoot> {
        &self.root
    }

    /// The root as the metadata reader and writer take it.
    fn storage_root(&self) -> Arc<dyn StorageRoot> {
        self.root.clone()
    }

    /// The directory of checkpoint `checkpoint_id`'s exclusive streams.
    pub fn checkpoint_dir(&self, checkpoint_id: CheckpointId) -> PathBuf {
        self.root.path().join(checkpoint_dir_name(checkpoint_id))
    }

    /// The directory of shared streams.
    pub fn shared_dir(&self) -> PathBuf {
        self.root.path().join(SHARED_DIR)
    }

    /// The stream factory of checkpoint `checkpoint_id` (creates its directory).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the directory that cannot be created.
    pub fn stream_factory(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<LocalDirectoryStreamFactory> {
        create_dir(&self.checkpoint_dir(checkpoint_id))?;
        create_dir(&self.shared_dir())?;
        Ok(LocalDirectoryStreamFactory {
            root: self.root.clone(),
            exclusive_dir: checkpoint_dir_name(checkpoint_id),
            file_state_threshold: self.file_state_threshold,
            write_buffer_size: self.write_buffer_size,
        })
    }

    /// Claims the storage for `job` (see [`CheckpointStorage::claim`]): an exclusive lock
    /// on [`LOCK_FILE`] in the root, released when the claim is dropped or the process
    /// ends, however it ends.
    ///
    /// # Errors
    ///
    /// [`Error::InUse`] naming the job and process that hold the storage; [`Error::Io`]
    /// naming the lock file when it cannot be created (a read-only directory).
    pub fn claim(&self, job: &JobId) -> Result<StorageClaim> {
        let path = self.root.path().join(LOCK_FILE);
        let in_use = |holder: String| Error::InUse {
            what: format!("checkpoint storage {}", self.root.describe()),
            holder: match holder.trim() {
                "" => "another process".to_owned(),
                holder => holder.to_owned(),
            },
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let root = self.root.canonical().to_path_buf();
        if !claimed_here().insert(root.clone()) {
            return Err(in_use(fs::read_to_string(&path).unwrap_or_default()));
        }
        // From here on, dropping `registered` (an error below) forgets the claim again.
        let registered = ClaimedHere(root);
        let mut waited = Duration::ZERO;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    // This process holds no claim on the root, yet the lock names it: a
                    // child being spawned holds a copy of a dropped claim's descriptor until
                    // it executes its program. That passes within moments.
                    let own = format!("(process {})", std::process::id());
                    if holder.trim().ends_with(&own) && waited < CLAIM_RELEASE_WAIT {
                        std::thread::sleep(Duration::from_millis(10));
                        waited += Duration::from_millis(10);
                        continue;
                    }
                    return Err(in_use(holder));
                }
                Err(fs::TryLockError::Error(err)) => return Err(Error::io(&path, err)),
            }
        }
        let holder = format!("job {job} (process {})", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        Ok(StorageClaim::held(LocalClaim {
            _file: file,
            _registered: registered,
        }))
    }
}

/// How long a claim waits for a lock that a dropped claim of this same process still holds
/// through a child process being spawned.
const CLAIM_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The storage roots this process holds claims on.
fn claimed_here() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<PathBuf>> {
    static CLAIMED: Mutex<std::collections::BTreeSet<PathBuf>> =
        Mutex::new(std::collections::BTreeSet::new());
    // A set of paths cannot be left torn by a panic elsewhere.
    CLAIMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A root registered in [`claimed_here`], forgotten when dropped.
#[derive(Debug)]
struct ClaimedHere(PathBuf);

impl Drop for ClaimedHere {
    fn drop(&mut self) {
        claimed_here().remove(&self.0);
    }
}

/// A held claim: the locked file, then the registration (dropped in this order, so the
/// lock is released before the root is forgotten).
#[derive(Debug)]
struct LocalClaim {
    _file: File,
    _registered: ClaimedHere,
}

/// `chk-<id>`: the directory of a checkpoint's exclusive streams, relative to the root.
fn checkpoint_dir_name(checkpoint_id: CheckpointId) -> String {
    format!("chk-{checkpoint_id}")
}

impl LocalCheckpointStorage {
    /// Commits `metadata` as `chk-<id>/_metadata`: the checkpoint becomes complete and
    /// visible to [`completed_checkpoints`](Self::completed_checkpoints). The file is written
    /// under a hidden name, synced, renamed into place and its directory synced, so it is
    /// there whole or not at all. Returns its path.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the checkpoint is committed already (metadata is never
    /// replaced), [`Error::Io`] naming the file when writing fails.
    pub fn commit_checkpoint(&self, metadata: &CheckpointMetadata) -> Result<PathBuf> {
        let dir = self.checkpoint_dir(metadata.checkpoint_id);
        create_dir(&dir)?;
        let target = dir.join(METADATA_FILE);
        let bytes = metadata::to_bytes(metadata, &self.storage_root())?;
        let mut temp = tempfile::Builder::new()
            .prefix(IN_PROGRESS_PREFIX)
            .tempfile_in(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        temp.write_all(&bytes)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| Error::io(temp.path(), e))?;
        temp.persist_noclobber(&target)
            .map_err(|err| match err.error.kind() {
                io::ErrorKind::AlreadyExists => Error::InvalidArgument(format!(
                    "checkpoint {} is committed already ({})",
                    metadata.checkpoint_id,
                    target.display()
                )),
                _ => Error::io(&target, err.error),
            })?;
        sync_dir(&dir)?;
        Ok(target)
    }

    /// Ids of the committed checkpoints (those with a `_metadata` file), ascending.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the root cannot be listed.
    pub fn completed_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        let mut ids = Vec::new();
        let root = self.root.path();
        let entries = fs::read_dir(root).map_err(|e| Error::io(root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(root, e))?;
            let name = entry.file_name();
            let id = name
                .to_str()
                .and_then(|name| name.strip_prefix("chk-"))
                .and_then(|id| id.parse::<u64>().ok());
            if let Some(id) = id
                && entry.path().join(METADATA_FILE).is_file()
            {
                ids.push(CheckpointId::new(id));
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The metadata of committed checkpoint `checkpoint_id`, read as
    /// `read_metadata_file` does, its handles resolved under this storage's
    /// root wherever the directory was written.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a checkpoint that was never committed; [`Error::Snapshot`]
    /// naming the file around [`Error::Corrupted`] / [`Error::Truncated`] for a damaged one
    /// (also one whose metadata names another checkpoint id) and around
    /// [`Error::OutsideStorage`] for a handle outside the root.
    pub fn load_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<CheckpointMetadata> {
        let path = self.checkpoint_dir(checkpoint_id).join(METADATA_FILE);
        let metadata =
            read_metadata_file(&path, &self.storage_root()).map_err(|err| match err {
                Error::NotFound { .. } => Error::NotFound {
                    what: format!("checkpoint {checkpoint_id} ({})", path.display()),
                },
                other => other,
            })?;
        metadata
            .check_checkpoint_id(checkpoint_id)
            .map_err(|source| Error::Snapshot {
                location: path.display().to_string(),
                source: Box::new(source),
            })?;
        Ok(metadata)
    }
}

impl LocalCheckpointStorage {
    /// Deletes checkpoint `checkpoint_id`'s directory, its `_metadata` first (see
    /// [`CheckpointStorage::discard_checkpoint`]); a missing directory is no error.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming what could not be deleted.
    pub fn discard_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<()> {
        let dir = self.checkpoint_dir(checkpoint_id);
        let metadata = dir.join(METADATA_FILE);
        for outcome in [
            fs::remove_file(&metadata).map_err(|e| (metadata.clone(), e)),
            fs::remove_dir_all(&dir).map_err(|e| (dir.clone(), e)),
        ] {
            match outcome {
                Err((path, err)) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io(path, err));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The trait's view of the same operations: factories come boxed, commits return nothing.
impl CheckpointStorage for LocalCheckpointStorage {
    fn location(&self) -> String {
        self.root.describe()
    }

    fn stream_factory(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<Arc<dyn CheckpointStreamFactory>> {
        Ok(Arc::new(LocalCheckpointStorage::stream_factory(
            self,
            checkpoint_id,
        )?))
    }

    fn commit_checkpoint(&self, metadata: &CheckpointMetadata) -> Result<()> {
        LocalCheckpointStorage::commit_checkpoint(self, metadata).map(drop)
    }

    fn completed_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        LocalCheckpointStorage::completed_checkpoints(self)
    }

    fn load_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<CheckpointMetadata> {
        LocalCheckpointStorage::load_checkpoint(self, checkpoint_id)
    }

    fn discard_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<()> {
        LocalCheckpointStorage::discard_checkpoint(self, checkpoint_id)
    }

    fn claim(&self, job: &JobId) -> Result<StorageClaim> {
        LocalCheckpointStorage::claim(self, job)
    }

    fn list_files(&self) -> Result<Vec<StoredFile>> {
        LocalCheckpointStorage::list_files(self)
    }

    fn delete_file(&self, path: &str) -> Result<()> {
        LocalCheckpointStorage::delete_file(self, path)
    }
}

/// Opens streams as files in a checkpoint's directory (exclusive) or the shared directory
/// of a [`LocalCheckpointStorage`].
#[derive(Debug, Clone)]
pub struct LocalDirectoryStreamFactory {
    root: Arc<LocalRoot>,
    /// `chk-<id>`, relative to the root.
    exclusive_dir: String,
    file_state_threshold: usize,
    write_buffer_size: usize,
}

impl LocalDirectoryStreamFactory {
    /// The directory of exclusive streams.
    pub fn exclusive_dir(&self) -> PathBuf {
        self.root.path().join(&self.exclusive_dir)
    }
}

impl LocalDirectoryStreamFactory {
    fn destination(&self, scope: CheckpointedStateScope) -> Destination {
        let (dir, prefix) = match scope {
            CheckpointedStateScope::Exclusive => (self.exclusive_dir.clone(), String::new()),
            // `chk-<id>-`: clean-up after a crash tells whose file it is by its name.
            CheckpointedStateScope::Shared => {
                (SHARED_DIR.to_owned(), format!("{}-", self.exclusive_dir))
            }
        };
        Destination::Stored {
            root: self.root.clone(),
            dir,
            prefix,
        }
    }
}

impl CheckpointStreamFactory for LocalDirectoryStreamFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        Ok(Box::new(LocalFileOutputStream {
            destination: self.destination(scope),
            threshold: self.file_state_threshold,
            write_buffer_size: self.write_buffer_size,
            inline: Vec::new(),
            file: None,
            pos: 0,
            state: Arc::default(),
        }))
    }

    /// A hard link under a fresh name in the scope's directory, made read-only and synced
    /// with its directory; `None` when the file is on another file system or the file
    /// system has no hard links. The file shares its bytes with `path`, so whoever wrote
    /// `path` must never change it in place (RocksDB never changes an sst file).
    fn store_immutable_file(
        &self,
        path: &Path,
        scope: CheckpointedStateScope,
    ) -> Result<Option<Arc<dyn StreamStateHandle>>> {
        let destination = self.destination(scope);
        let dir = destination.dir();
        let size = fs::metadata(path)
            .map_err(|err| Error::io(path, err))?
            .len();
        let linked = tempfile::Builder::new()
            .prefix(destination.prefix())
            .rand_bytes(16)
            .make_in(&dir, |target| fs::hard_link(path, target));
        let link = match linked {
            Ok(link) => link.into_temp_path(),
            Err(err) if no_hard_link(&err) => return Ok(None),
            Err(err) => return Err(Error::io(path, err)),
        };
        // Until kept, dropping `link` on an error below removes it again.
        let mut permissions = fs::metadata(&link)
            .map_err(|e| Error::io(&link, e))?
            .permissions();
        permissions.set_readonly(true);
        fs::set_permissions(&link, permissions).map_err(|e| Error::io(&link, e))?;
        File::open(&link)
            .and_then(|file| file.sync_all())
            .map_err(|e| Error::io(&link, e))?;
        sync_dir(&dir)?;
        let name = link
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::io(&link, io::ErrorKind::InvalidFilename.into()))?;
        let handle = destination.handle(&name, size)?;
        link.keep().map_err(|err| Error::io(path, err.error))?;
        Ok(Some(Arc::new(handle)))
    }
}

/// Whether a failed hard link means the storage cannot link (another file system, none
/// supported) rather than an error of the file.
fn no_hard_link(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::CrossesDevices
            | io::ErrorKind::Unsupported
            | io::ErrorKind::PermissionDenied
    )
}

/// What the closer shares with the stream.
#[derive(Debug, Default)]
struct CloseState {
    /// Checked on every write without locking.
    closed: AtomicBool,
    /// The in-progress file, until it is completed (`None` after completion).
    in_progress: Mutex<Option<PathBuf>>,
}

impl CloseState {
    fn in_progress(&self) -> std::sync::MutexGuard<'_, Option<PathBuf>> {
        // The guarded value is a plain path: a panic elsewhere cannot leave it torn.
        self.in_progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where a stream's file goes.
#[derive(Debug, Clone)]
enum Destination {
    /// A directory of a checkpoint storage, relative to its root, and the prefix of the
    /// names of the files written there.
    Stored {
        root: Arc<LocalRoot>,
        dir: String,
        prefix: String,
    },
    /// A task-local directory.
    Local(PathBuf),
}

impl Destination {
    fn dir(&self) -> PathBuf {
        match self {
            Destination::Stored { root, dir, .. } => root.path().join(dir),
            Destination::Local(dir) => dir.clone(),
        }
    }

    fn prefix(&self) -> &str {
        match self {
            Destination::Stored { prefix, .. } => prefix,
            Destination::Local(_) => "",
        }
    }

    /// The handle of the complete file `name` of `size` bytes in this directory.
    fn handle(&self, name: &str, size: u64) -> Result<FileStateHandle> {
        let handle = match self {
            Destination::Stored { root, dir, .. } => {
                FileStateHandle::stored(root.clone(), format!("{dir}/{name}"), size)?
            }
            Destination::Local(dir) => FileStateHandle::local(dir.join(name), size),
        };
        Ok(handle.written_by_this_process())
    }
}

/// A stream into a local directory: inline up to a threshold, then an in-progress file
/// renamed into place on completion.
#[derive(Debug)]
pub struct LocalFileOutputStream {
    destination: Destination,
    threshold: usize,
    write_buffer_size: usize,
    inline: Vec<u8>,
    file: Option<BackgroundFile>,
    pos: u64,
    state: Arc<CloseState>,
}

impl LocalFileOutputStream {
    /// A stream into the task-local directory `dir` (which must exist): its handle names
    /// the file by absolute path and never belongs in checkpoint metadata. Streams of at
    /// most `threshold` bytes are returned inline. `write_buffer_size` defaults to
    /// [`LocalCheckpointStorage::DEFAULT_WRITE_BUFFER_SIZE`].
    pub fn create(
        dir: PathBuf,
        threshold: usize,
        write_buffer_size: Option<usize>,
    ) -> Result<Self> {
        Ok(LocalFileOutputStream {
            destination: Destination::Local(dir),
            threshold,
            write_buffer_size: write_buffer_size
                .unwrap_or(LocalCheckpointStorage::DEFAULT_WRITE_BUFFER_SIZE),
            inline: Vec::new(),
            file: None,
            pos: 0,
            state: Arc::default(),
        })
    }

    fn closed_error(&self) -> Error {
        Error::Closed {
            what: format!("checkpoint stream in {}", self.destination.dir().display()),
        }
    }

    fn open_file(&mut self) -> io::Result<&mut BackgroundFile> {
        let dir = self.destination.dir();
        let prefix = format!("{IN_PROGRESS_PREFIX}{}", self.destination.prefix());
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(16)
            .tempfile_in(&dir)
            .map_err(|err| Error::io(&dir, err).into_io())?;
        {
            let mut in_progress = self.state.in_progress();
            if self.state.closed.load(Ordering::Acquire) {
                // `temp` is deleted when dropped here.
                return Err(self.closed_error().into_io());
            }
            *in_progress = Some(temp.path().to_path_buf());
        }
        let mut writer = BackgroundFile::spawn(temp, self.write_buffer_size)?;
        writer.write_all(&self.inline)?;
        self.inline = Vec::new();
        Ok(self.file.insert(writer))
    }
}

impl Write for LocalFileOutputStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.state.closed.load(Ordering::Acquire) {
            return Err(self.closed_error().into_io());
        }
        match &mut self.file {
            Some(file) => file.write_all(buf)?,
            None if self.inline.len() + buf.len() <= self.threshold => {
                self.inline.extend_from_slice(buf)
            }
            None => self.open_file()?.write_all(buf)?,
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| Error::io(dir, err))
}

impl CheckpointStateOutputStream for LocalFileOutputStream {
    fn pos(&self) -> u64 {
        self.pos
    }

    fn close_and_get_handle(mut self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        if self.state.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let dir = self.destination.dir();
        let Some(writer) = self.file.take() else {
            let name = format!("{}/inline-{}-bytes", dir.display(), self.pos);
            let data = std::mem::take(&mut self.inline);
            return Ok(Arc::new(ByteStreamStateHandle::new(name, data)));
        };
        let path = writer.path().clone();
        // Writes what is buffered and syncs the file.
        let temp = writer.finish().map_err(|err| Error::io(path, err))?;
        let file_name = temp
            .path()
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix(IN_PROGRESS_PREFIX))
            .map(str::to_owned)
            .ok_or_else(|| self.closed_error())?;
        let final_path = dir.join(&file_name);
        {
            let mut in_progress = self.state.in_progress();
            if self.state.closed.load(Ordering::Acquire) {
                return Err(self.closed_error());
            }
            temp.persist_noclobber(&final_path)
                .map_err(|err| Error::io(&final_path, err.error))?;
            *in_progress = None;
        }
        let handle = sync_dir(&dir).and_then(|()| self.destination.handle(&file_name, self.pos));
        match handle {
            Ok(handle) => Ok(Arc::new(handle)),
            Err(err) => {
                // Not durable, or not a file of the storage: do not hand out a handle to it.
                let _ = fs::remove_file(&final_path);
                Err(err)
            }
        }
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        let state = self.state.clone();
        Arc::new(move || {
            let mut in_progress = state.in_progress();
            state.closed.store(true, Ordering::Release);
            if let Some(path) = in_progress.take() {
                match fs::remove_file(&path) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => {
                        return Err(Error::io(path, err));
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }
}

/// Reads the metadata file at `path` of the storage at `root`: it must be a regular
/// file of at most [`MAX_METADATA_FILE_LEN`] bytes (checked before anything is read),
/// holding exactly one metadata frame.
///
/// # Errors
///
/// [`Error::NotFound`] naming the file; [`Error::Snapshot`] naming the file around
/// what [`metadata::read`] reports, or around [`Error::Corrupted`] for a file that is
/// not regular, too long, or goes on after the frame.
fn read_metadata_file(path: &Path, root: &Arc<dyn StorageRoot>) -> Result<CheckpointMetadata> {
    let at_path = |source: Error| Error::Snapshot {
        location: path.display().to_string(),
        source: Box::new(source),
    };
    let file = crate::open_regular_file(path, &format!("checkpoint metadata {}", path.display()))
        .map_err(|err| match err {
        Error::NotFound { .. } | Error::Io { .. } => err,
        other => at_path(other),
    })?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > MAX_METADATA_FILE_LEN {
        return Err(at_path(Error::Corrupted {
            what: "checkpoint metadata".into(),
            reason: format!(
                "the file has {len} bytes, metadata files have at most {MAX_METADATA_FILE_LEN}"
            ),
        }));
    }
    let mut input = std::io::BufReader::new(file.take(len));
    let metadata = metadata::read(&mut input, root).map_err(at_path)?;
    let mut rest = [0u8; 1];
    match input.read(&mut rest) {
        Ok(0) => Ok(metadata),
        Ok(_) => Err(at_path(Error::Corrupted {
            what: "checkpoint metadata".into(),
            reason: "bytes follow the metadata frame".into(),
        })),
        Err(err) => Err(Error::io(path, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn read_all(handle: &Arc<dyn StreamStateHandle>) -> Vec<u8> {
        let mut data = Vec::new();
        handle.open().unwrap().read_to_end(&mut data).unwrap();
        data
    }

    fn storage(threshold: usize) -> (tempfile::TempDir, LocalCheckpointStorage) {
        let root = tempfile::tempdir().unwrap();
        let storage = LocalCheckpointStorage::new(root.path())
            .unwrap()
            .with_file_state_threshold(threshold)
            .with_write_buffer_size(64);
        (root, storage)
    }

    #[test]
    fn small_stream_stays_inline_and_writes_no_file() {
        let (_root, storage) = storage(100);
        let factory = storage.stream_factory(CheckpointId::new(1)).unwrap();
        let mut out = factory
            .create_output_stream(CheckpointedStateScope::Exclusive)
            .unwrap();
        out.write_all(b"tiny").unwrap();
        let handle = out.close_and_get_handle().unwrap();
        assert!(handle.is::<ByteStreamStateHandle>(), "{handle:?}");
        assert_eq!(read_all(&handle), b"tiny");
        assert!(files_in(&storage.checkpoint_dir(CheckpointId::new(1))).is_empty());
    }

    #[test]
    fn large_stream_is_invisible_until_completed() {
        let (_root, storage) = storage(10);
        let factory = storage.stream_factory(CheckpointId::new(2)).unwrap();
        let mut out = factory
            .create_output_stream(CheckpointedStateScope::Exclusive)
            .unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        out.write_all(&data).unwrap();
        assert_eq!(out.pos(), 10_000);
        let names = files_in(&storage.checkpoint_dir(CheckpointId::new(2)));
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with(IN_PROGRESS_PREFIX), "{names:?}");
        let handle = out.close_and_get_handle().unwrap();
        let names = files_in(&storage.checkpoint_dir(CheckpointId::new(2)));
        assert_eq!(names.len(), 1);
        assert!(!names[0].starts_with('.'), "{names:?}");
        assert_eq!(handle.state_size(), 10_000);
        assert_eq!(read_all(&handle), data);
        handle.discard().unwrap();
        assert!(files_in(&storage.checkpoint_dir(CheckpointId::new(2))).is_empty());
    }

    #[test]
    fn shared_scope_writes_to_the_shared_directory() {
        let (_root, storage) = storage(0);
        let factory = storage.stream_factory(CheckpointId::new(3)).unwrap();
        let mut out = factory
            .create_output_stream(CheckpointedStateScope::Shared)
            .unwrap();
        out.write_all(b"sst").unwrap();
        let handle = out.close_and_get_handle().unwrap();
        assert!(
            handle.describe().contains("shared"),
            "{}",
            handle.describe()
        );
        assert_eq!(files_in(&storage.shared_dir()).len(), 1);
        assert!(files_in(&storage.checkpoint_dir(CheckpointId::new(3))).is_empty());
    }

    #[test]
    fn immutable_files_are_stored_as_read_only_links_without_copying() {
        let (root, storage) = storage(0);
        let factory = storage.stream_factory(CheckpointId::new(5)).unwrap();
        let source = root.path().join("000042.sst");
        fs::write(&source, b"sorted string table").unwrap();
        let handle = factory
            .store_immutable_file(&source, CheckpointedStateScope::Shared)
            .unwrap()
            .expect("a directory on one file system links");
        let stored = files_in(&storage.shared_dir());
        assert_eq!(stored.len(), 1, "{stored:?}");
        let path = storage.shared_dir().join(&stored[0]);
        assert!(fs::metadata(&path).unwrap().permissions().readonly());
        assert_eq!(handle.state_size(), 19);
        assert_eq!(read_all(&handle), b"sorted string table");
        // The source goes (RocksDB deletes a compacted file): the stored file stays.
        fs::remove_file(&source).unwrap();
        assert_eq!(read_all(&handle), b"sorted string table");
        handle.discard().unwrap();
        assert!(files_in(&storage.shared_dir()).is_empty());

        let missing = factory.store_immutable_file(&source, CheckpointedStateScope::Exclusive);
        let err = missing.expect_err("a missing file is an error, not a fallback");
        assert!(err.to_string().contains("000042.sst"), "{err}");
        assert!(files_in(&storage.checkpoint_dir(CheckpointId::new(5))).is_empty());
    }

    #[test]
    fn dropping_an_unfinished_stream_deletes_it() {
        let (_root, storage) = storage(0);
        let factory = storage.stream_factory(CheckpointId::new(4)).unwrap();
        let mut out = factory
            .create_output_stream(CheckpointedStateScope::Exclusive)
            .unwrap();
        out.write_all(&[1; 5000]).unwrap();
        drop(out);
        assert!(files_in(&storage.checkpoint_dir(CheckpointId::new(4))).is_empty());
    }

    #[test]
    fn closing_from_another_thread_fails_writes_and_deletes_the_file() {
        let (_root, storage) = storage(0);
        let factory = storage.stream_factory(CheckpointId::new(5)).unwrap();
        let mut out = factory
            .create_output_stream(CheckpointedStateScope::Exclusive)
            .unwrap();
        out.write_all(&[1; 5000]).unwrap();
        let closer = out.closer();
        std::thread::spawn(move || closer.close().unwrap())
            .join()
            .unwrap();
        assert!(files_in(&storage.checkpoint_dir(CheckpointId::new(5))).is_empty());
        let err = Error::stream("writing", out.write_all(b"more").unwrap_err());
        assert!(matches!(err, Error::Closed { .. }), "{err}");
        let err = out.close_and_get_handle().unwrap_err();
        assert!(matches!(err, Error::Closed { .. }), "{err}");
        assert!(files_in(&storage.checkpoint_dir(CheckpointId::new(5))).is_empty());
    }

    #[test]
    fn closing_after_completion_keeps_the_file() {
        let (_root, storage) = storage(0);
        let factory = storage.stream_factory(CheckpointId::new(6)).unwrap();
        let mut out = factory
            .create_output_stream(CheckpointedStateScope::Exclusive)
            .unwrap();
        out.write_all(b"done").unwrap();
        let closer = out.closer();
        let handle = out.close_and_get_handle().unwrap();
        closer.close().unwrap();
        assert_eq!(read_all(&handle), b"done");
    }

    /// Locks the root's lock file through a descriptor of its own, as a child process being
    /// spawned holds a copy of a dropped claim's, with `holder` written in it.
    fn foreign_lock(root: &Path, holder: &str) -> File {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(root.join(LOCK_FILE))
            .unwrap();
        file.try_lock().unwrap();
        (&file).write_all(holder.as_bytes()).unwrap();
        file
    }

    #[test]
    fn a_lock_another_process_holds_refuses_the_claim_at_once() {
        let (root, storage) = storage(0);
        let _held = foreign_lock(root.path(), "job other (process 1)");
        let job = JobId::new("mine").unwrap();
        let err = storage.claim(&job).unwrap_err();
        assert!(
            matches!(err, Error::InUse { ref holder, .. } if holder == "job other (process 1)"),
            "{err}"
        );
    }

    #[test]
    fn a_lock_left_to_a_child_of_this_process_is_waited_for_then_refused() {
        let (root, storage) = storage(0);
        let own = format!("job gone (process {})", std::process::id());
        let held = foreign_lock(root.path(), &own);
        let job = JobId::new("mine").unwrap();
        // Never released: refused after the wait, naming the holder.
        let err = storage.claim(&job).unwrap_err();
        assert!(
            matches!(err, Error::InUse { ref holder, .. } if *holder == own),
            "{err}"
        );
        // Released while a claim waits (or before it starts): the claim gets the storage.
        let claimer = {
            let storage = storage.clone();
            std::thread::spawn(move || storage.claim(&JobId::new("mine").unwrap()))
        };
        drop(held);
        let claim = claimer.join().unwrap().unwrap();
        assert!(claim.is_enforced());
        // And while it is held, this process cannot claim the storage a second time.
        let err = storage.claim(&job).unwrap_err();
        assert!(
            matches!(err, Error::InUse { ref holder, .. } if holder.contains("job mine")),
            "{err}"
        );
        drop(claim);
        storage.claim(&job).unwrap();
    }
}

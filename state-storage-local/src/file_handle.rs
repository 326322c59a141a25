//! [`FileStateHandle`] (serde tag `file`): a snapshot stream stored as a file, either in a
//! local checkpoint storage under its [`LocalRoot`] (by a path relative to the root), or
//! as a task-local copy (by absolute path, never read back from checkpoint storage).
//!
//! A stored file handle serializes its path relative to the storage root
//! (`chk-<id>/<name>`, `shared/<name>`) and deserializes only inside a
//! [`HandleScope`] of a [`LocalRoot`], against which it resolves (see
//! [`state_format::storage_root`]): a checkpoint directory restores wherever it is moved or
//! copied, and no metadata makes a reader open or delete a file outside the root.
//!
//! Reading opens exactly a regular file (never a FIFO or a device: on Linux the file is
//! opened non-blocking, so a FIFO put in a file's place cannot hang the reader), refuses
//! one longer than the handle records, and never reads past the recorded size (a shorter
//! one ends early, and its reader names what is missing).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use state_api::{Error, Result, StateInputStream, StateObject, StreamStateHandle};
use state_format::storage_root::{HandleScope, StorageRoot, check_relative};

/// The root directory of a local checkpoint storage, as file handles resolve against it.
///
/// The root is canonicalized once (it must exist); a relative location resolves under the
/// canonical root, and a symbolic link on the way (a directory or the file itself) that
/// leads outside the root makes it an [`Error::OutsideStorage`].
#[derive(Debug, Clone)]
pub struct LocalRoot {
    path: PathBuf,
    canonical: PathBuf,
}

/// Two roots are the same directory when their canonical paths are equal, however they
/// were given.
impl PartialEq for LocalRoot {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for LocalRoot {}

impl LocalRoot {
    /// The root at `path`, which must exist.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming `path` when it cannot be resolved.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let canonical = fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?;
        Ok(LocalRoot { path, canonical })
    }

    /// The root as it was given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root with every symbolic link resolved.
    pub fn canonical(&self) -> &Path {
        &self.canonical
    }

    fn outside(&self, location: &str, reason: impl Into<String>) -> Error {
        Error::OutsideStorage {
            location: location.to_owned(),
            root: self.describe(),
            reason: reason.into(),
        }
    }

    /// The path of the directory entry `relative` names under the root: its directories
    /// resolved, the entry itself not followed.
    ///
    /// # Errors
    ///
    /// [`Error::OutsideStorage`] when `relative` is not a relative location under the root
    /// (see [`check_relative`]) or a symbolic link on the way, or the entry itself, leads
    /// outside the root; [`Error::Io`] when a directory on the way cannot be read.
    pub fn locate(&self, relative: &str) -> Result<PathBuf> {
        check_relative(relative).map_err(|reason| self.outside(relative, reason))?;
        let joined = self.canonical.join(relative);
        let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
            return Err(self.outside(relative, "the location names no file"));
        };
        let entry = self.resolve_directory(relative, parent)?.join(name);
        match fs::symlink_metadata(&entry) {
            Ok(meta) if meta.file_type().is_symlink() => match fs::canonicalize(&entry) {
                Ok(target) if target.starts_with(&self.canonical) => {}
                Ok(target) => {
                    return Err(self.outside(
                        relative,
                        format!("it is a symbolic link to {}", target.display()),
                    ));
                }
                Err(_) => {
                    return Err(self.outside(relative, "it is a symbolic link to nothing"));
                }
            },
            _ => {}
        }
        Ok(entry)
    }

    /// `directory` (under the root) with every symbolic link resolved, checked to stay
    /// under the root; parts that do not exist yet are kept as they are.
    fn resolve_directory(&self, relative: &str, directory: &Path) -> Result<PathBuf> {
        let mut probe = directory;
        let mut missing = Vec::new();
        loop {
            match fs::canonicalize(probe) {
                Ok(real) if real.starts_with(&self.canonical) => {
                    return Ok(missing
                        .iter()
                        .rev()
                        .fold(real, |path, part| path.join(part)));
                }
                Ok(real) => {
                    return Err(self.outside(
                        relative,
                        format!("a directory on the way leads to {}", real.display()),
                    ));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    match (probe.parent(), probe.file_name()) {
                        (Some(parent), Some(name)) if parent.starts_with(&self.canonical) => {
                            missing.push(name.to_owned());
                            probe = parent;
                        }
                        _ => return Err(Error::io(probe, err)),
                    }
                }
                Err(err) => return Err(Error::io(probe, err)),
            }
        }
    }

    /// `relative` under the root, as the path a reader opens: the entry with every
    /// symbolic link resolved (each checked by [`locate`](Self::locate)).
    fn target(&self, relative: &str) -> Result<PathBuf> {
        let entry = self.locate(relative)?;
        Ok(fs::canonicalize(&entry).unwrap_or(entry))
    }
}

impl StorageRoot for LocalRoot {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Where a file handle's file is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileLocation {
    /// In a local checkpoint storage, relative to its root.
    Stored {
        root: Arc<LocalRoot>,
        relative: String,
    },
    /// A task-local file, by absolute path.
    Local(PathBuf),
}

/// A snapshot stream stored as a file.
///
/// # Example
///
/// ```
/// use std::io::Read;
/// use std::sync::Arc;
/// use state_api::StreamStateHandle;
/// use state_storage_local::{FileStateHandle, LocalRoot};
///
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("chk-1")).unwrap();
/// std::fs::write(dir.path().join("chk-1/state"), b"bytes").unwrap();
/// let root = Arc::new(LocalRoot::new(dir.path())?);
/// let handle = FileStateHandle::stored(root, "chk-1/state", 5)?;
/// let mut back = String::new();
/// handle.open()?.read_to_string(&mut back).unwrap();
/// assert_eq!(back, "bytes");
/// assert_eq!(handle.relative_path(), Some("chk-1/state"));
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FileStateHandle {
    location: FileLocation,
    size: u64,
    /// Written by this process in this run (not read back from storage).
    written_here: bool,
}

impl PartialEq for FileStateHandle {
    fn eq(&self, other: &Self) -> bool {
        self.location == other.location && self.size == other.size
    }
}

impl Eq for FileStateHandle {}

impl FileStateHandle {
    /// A handle to the file at `relative` (`chk-<id>/<name>`, `shared/<name>`) under
    /// `root`, of `size` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::OutsideStorage`] when `relative` does not stay under `root`.
    pub fn stored(root: Arc<LocalRoot>, relative: impl Into<String>, size: u64) -> Result<Self> {
        let relative = relative.into();
        root.locate(&relative)?;
        Ok(FileStateHandle {
            location: FileLocation::Stored { root, relative },
            size,
            written_here: false,
        })
    }

    /// A handle to a task-local file (a local-recovery copy) at `path`, of `size` bytes.
    /// It serializes its absolute path and is refused in checkpoint metadata.
    pub fn local(path: impl Into<PathBuf>, size: u64) -> Self {
        FileStateHandle {
            location: FileLocation::Local(path.into()),
            size,
            written_here: false,
        }
    }

    /// Marks the handle as one whose file this process has just written (see
    /// [`StreamStateHandle::written_by_this_process`]).
    pub fn written_by_this_process(mut self) -> Self {
        self.written_here = true;
        self
    }

    /// The file's path: under its storage root, or the task-local path.
    pub fn path(&self) -> PathBuf {
        match &self.location {
            FileLocation::Stored { root, relative } => root.path().join(relative),
            FileLocation::Local(path) => path.clone(),
        }
    }

    /// The path relative to the storage root, for a file in checkpoint storage.
    pub fn relative_path(&self) -> Option<&str> {
        match &self.location {
            FileLocation::Stored { relative, .. } => Some(relative),
            FileLocation::Local(_) => None,
        }
    }

    /// The storage root, for a file in checkpoint storage.
    pub fn root(&self) -> Option<&Arc<LocalRoot>> {
        match &self.location {
            FileLocation::Stored { root, .. } => Some(root),
            FileLocation::Local(_) => None,
        }
    }

    /// The path a reader opens, checked to stay under the root.
    fn readable_path(&self) -> Result<PathBuf> {
        match &self.location {
            FileLocation::Stored { root, relative } => root.target(relative),
            FileLocation::Local(path) => Ok(path.clone()),
        }
    }
}

/// How a file handle is written in metadata.
#[derive(Serialize, Deserialize)]
struct FileRepr {
    path: String,
    size: u64,
}

impl Serialize for FileStateHandle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let path = match &self.location {
            FileLocation::Stored { root, relative } => {
                HandleScope::serializing(&**root, || self.path().display().to_string())
                    .map_err(S::Error::custom)?;
                relative.clone()
            }
            FileLocation::Local(path) => {
                if let Some(scope) = HandleScope::current() {
                    return Err(S::Error::custom(HandleScope::reject(scope.outside(
                        path.display().to_string(),
                        "a task-local file is never part of checkpoint storage",
                    ))));
                }
                path.to_str()
                    .ok_or_else(|| {
                        S::Error::custom(format!("path {} is not UTF-8", path.display()))
                    })?
                    .to_owned()
            }
        };
        FileRepr {
            path,
            size: self.size,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FileStateHandle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let FileRepr { path, size } = FileRepr::deserialize(deserializer)?;
        let absolute = Path::new(&path).is_absolute();
        match HandleScope::deserializing::<LocalRoot>(&path, absolute, "a local file handle")
            .map_err(D::Error::custom)?
        {
            Some((root, relative)) => FileStateHandle::stored(root, relative, size)
                .map_err(|err| D::Error::custom(HandleScope::reject(err))),
            // Outside checkpoint storage only task-local files, by absolute path, exist.
            None if absolute => Ok(FileStateHandle::local(path, size)),
            None => Err(D::Error::custom(format!(
                "file `{path}` is relative to a checkpoint storage: read it through that storage"
            ))),
        }
    }
}

fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(Error::io(path, err)),
        _ => Ok(()),
    }
}

impl StateObject for FileStateHandle {
    fn discard(&self) -> Result<()> {
        match &self.location {
            // The entry itself is removed, never what a link points to.
            FileLocation::Stored { root, relative } => {
                remove_file_if_exists(&root.locate(relative)?)
            }
            FileLocation::Local(path) => remove_file_if_exists(path),
        }
    }

    fn state_size(&self) -> u64 {
        self.size
    }
}

#[typetag::serde(name = "file")]
impl StreamStateHandle for FileStateHandle {
    fn open(&self) -> Result<Box<dyn StateInputStream>> {
        let path = self.readable_path()?;
        let file = open_regular_file(&path, &format!("snapshot file {}", path.display()))?;
        let what = || format!("snapshot file {}", path.display());
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        // A shorter file is read to where it ends, so the reader names what is missing
        // (the key groups past the cut); a longer one is not the file the handle recorded.
        if len > self.size {
            return Err(Error::Corrupted {
                what: what(),
                reason: format!("the file has {len} bytes, its handle records {}", self.size),
            });
        }
        if let Some(direct) = DirectFile::open(&path, &file, self.size) {
            return Ok(Box::new(direct));
        }
        Ok(Box::new(io::BufReader::with_capacity(
            READ_BUFFER,
            BoundedFile {
                file,
                len: self.size,
                pos: 0,
            },
        )))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path().display())
    }

    fn written_by_this_process(&self) -> bool {
        self.written_here
    }

    fn local_file(&self) -> Option<PathBuf> {
        self.readable_path().ok()
    }

    fn stored_path(&self) -> Option<&str> {
        match &self.location {
            FileLocation::Stored { relative, .. } => Some(relative),
            FileLocation::Local(_) => None,
        }
    }
}

/// Opens `path` for reading if it is a regular file; `what` names it in errors.
///
/// On Linux the file is opened non-blocking (opening a FIFO for reading otherwise waits for
/// a writer) and its type checked on the open descriptor; elsewhere it is checked first.
///
/// # Errors
///
/// [`Error::NotFound`] naming `what`; [`Error::Corrupted`] for anything that is not a
/// regular file (a FIFO, a device, a directory); [`Error::Io`] naming `path`.
pub fn open_regular_file(path: &Path, what: &str) -> Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    #[cfg(not(target_os = "linux"))]
    if let Ok(meta) = fs::metadata(path)
        && !meta.is_file()
    {
        return Err(not_a_regular_file(what, &meta));
    }
    let file = options.open(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            what: what.to_owned(),
        },
        _ => Error::io(path, err),
    })?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_a_regular_file(what, &meta));
    }
    Ok(file)
}

fn not_a_regular_file(what: &str, meta: &fs::Metadata) -> Error {
    let kind = meta.file_type();
    let found = if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "a FIFO, socket or device"
    };
    Error::Corrupted {
        what: what.to_owned(),
        reason: format!("it is {found}, not a regular file"),
    }
}

/// Bytes read from a snapshot file at a time through the cache.
const READ_BUFFER: usize = 256 * 1024;

/// Bytes read from a snapshot file at a time past the cache: a block.
const DIRECT_BLOCK: usize = 1 << 20;

/// Alignment of direct reads: of the buffer's address, the file offset and the length.
const ALIGN: usize = 4096;

/// A block-sized, 4 KiB-aligned buffer and what it holds.
struct Block {
    bytes: Vec<u8>,
    /// Where the aligned region starts in `bytes`.
    start: usize,
    /// File offset of the block, and how many of its bytes were read (fewer at the end).
    offset: u64,
    valid: usize,
}

impl Block {
    fn new() -> Block {
        let bytes = vec![0; DIRECT_BLOCK + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN);
        Block {
            bytes,
            start,
            offset: 0,
            valid: 0,
        }
    }

    /// Reads the block at `offset` (aligned) of `file`.
    fn read(&mut self, file: &File, offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.offset = offset;
        self.valid = 0;
        let region = &mut self.bytes[self.start..self.start + DIRECT_BLOCK];
        loop {
            match file.read_at(region, offset) {
                // Short only where the file ends: a second read there would start at an
                // offset direct i/o refuses.
                Ok(n) => {
                    self.valid = n;
                    return Ok(());
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    fn holds(&self, pos: u64) -> bool {
        pos >= self.offset && pos < self.offset + self.valid as u64
    }
}

/// A helper thread reading the next block while the current one is consumed.
struct Prefetch {
    requests: mpsc::Sender<Block>,
    blocks: mpsc::Receiver<io::Result<Block>>,
    /// The offset of the block asked for and not yet received.
    pending: Option<u64>,
}

impl Prefetch {
    fn spawn(file: &File) -> Option<Prefetch> {
        let file = file.try_clone().ok()?;
        let (requests, requested) = mpsc::channel::<Block>();
        let (done, blocks) = mpsc::channel();
        std::thread::Builder::new()
            .name("snapstate-file-reader".into())
            .spawn(move || {
                for mut block in requested {
                    let offset = block.offset;
                    let read = block.read(&file, offset).map(|()| block);
                    if done.send(read).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Prefetch {
            requests,
            blocks,
            pending: None,
        })
    }

    /// Asks for the block at `offset`, to be read into `block`'s buffer.
    fn ask(&mut self, mut block: Block, offset: u64) {
        block.offset = offset;
        if self.requests.send(block).is_ok() {
            self.pending = Some(offset);
        }
    }

    /// The block asked for last, if one was (and the helper thread still runs).
    fn take(&mut self) -> Option<io::Result<Block>> {
        self.pending.take()?;
        self.blocks.recv().ok()
    }
}

/// A snapshot file read as exactly its first `len` bytes past the page cache (`O_DIRECT`),
/// in aligned blocks of [`DIRECT_BLOCK`] bytes, the next block read by a helper thread
/// while the current one is consumed. Snapshot files are written past the cache too
/// (`background_file`) and read once on restore: through the cache, each byte would take
/// a page to be found and filled first (on this project's test machine 550-820 MB/s for
/// pages touched the first time against 1.6 GB/s direct), and evict the application's.
struct DirectFile {
    file: File,
    current: Block,
    /// A buffer for the next block, unless one is being read.
    spare: Option<Block>,
    /// Started with the second block a reader reaches (files of one block need none).
    prefetch: Option<Prefetch>,
    len: u64,
    pos: u64,
}

impl DirectFile {
    /// `path` opened for direct reads, when the file system allows them and it is still
    /// the file `checked` (opened and checked to be a regular file) refers to.
    #[cfg(target_os = "linux")]
    fn open(path: &Path, checked: &File, len: u64) -> Option<DirectFile> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let (meta, expected) = (file.metadata().ok()?, checked.metadata().ok()?);
        if !meta.is_file() || (meta.dev(), meta.ino()) != (expected.dev(), expected.ino()) {
            return None;
        }
        let mut current = Block::new();
        // A file system that accepts the flag but not the reads is read through the cache.
        current.read(&file, 0).ok()?;
        Some(DirectFile {
            file,
            current,
            spare: Some(Block::new()),
            prefetch: None,
            len,
            pos: 0,
        })
    }

    /// Elsewhere snapshot files are read through the cache.
    #[cfg(not(target_os = "linux"))]
    fn open(_path: &Path, _checked: &File, _len: u64) -> Option<DirectFile> {
        None
    }

    /// Makes the block holding `pos` current, then asks for the one after it.
    fn load(&mut self) -> io::Result<()> {
        let prefetched = self
            .prefetch
            .as_mut()
            .and_then(Prefetch::take)
            .transpose()?;
        let block = match prefetched {
            Some(block) if block.holds(self.pos) => block,
            // Nothing read ahead, or a seek elsewhere: a block read ahead only gives its buffer.
            other => {
                let mut block = other
                    .or_else(|| self.spare.take())
                    .unwrap_or_else(Block::new);
                block.read(&self.file, self.pos / ALIGN as u64 * ALIGN as u64)?;
                block
            }
        };
        let previous = std::mem::replace(&mut self.current, block);
        self.spare = Some(previous);
        let following = self.current.offset + DIRECT_BLOCK as u64;
        if self.current.valid == DIRECT_BLOCK && following < self.len {
            if self.prefetch.is_none() {
                self.prefetch = Prefetch::spawn(&self.file);
            }
            if let (Some(prefetch), Some(spare)) = (self.prefetch.as_mut(), self.spare.take()) {
                prefetch.ask(spare, following);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectFile")
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish()
    }
}

impl Read for DirectFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if !self.current.holds(self.pos) {
            self.load()?;
        }
        // In the block now, unless the file ends before `pos` (then it reads as ended).
        if !self.current.holds(self.pos) {
            return Ok(0);
        }
        let offset = (self.pos - self.current.offset) as usize;
        let left = usize::try_from(self.len - self.pos).unwrap_or(usize::MAX);
        let n = buf.len().min(self.current.valid - offset).min(left);
        let at = self.current.start + offset;
        buf[..n].copy_from_slice(&self.current.bytes[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for DirectFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = state_api::seek_position(to, self.pos, self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// A file read as exactly its first `len` bytes.
struct BoundedFile {
    file: File,
    len: u64,
    pos: u64,
}

impl fmt::Debug for BoundedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedFile")
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish()
    }
}

impl Read for BoundedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BoundedFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = state_api::seek_position(to, self.pos, self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = self.file.seek(SeekFrom::Start(target))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads and seeks anywhere in a snapshot file return its bytes, up to where the file
    /// ends when it is shorter than its handle says (the reader then names what is missing).
    #[test]
    fn reads_and_seeks_return_the_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot");
        let data: Vec<u8> = (0..(3 * DIRECT_BLOCK as u32 + 1234))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(&path, &data).unwrap();
        let block = DIRECT_BLOCK as u64;
        // Forwards, backwards, within a block and across one (a block read ahead is then
        // either used or given up).
        let seeks = [
            0,
            1,
            4095,
            4096,
            block - 3,
            2 * block + 17,
            5000,
            block,
            3 * block,
        ];
        for len in [data.len() as u64, data.len() as u64 + 5000] {
            let handle = FileStateHandle::local(&path, len);
            let mut stream = handle.open().unwrap();
            let mut all = Vec::new();
            stream.read_to_end(&mut all).unwrap();
            assert_eq!(all, data, "whole file, handle of {len} bytes");
            for &at in &seeks {
                stream.seek(SeekFrom::Start(at)).unwrap();
                let mut piece = vec![0; 10_000];
                let mut got = 0;
                while got < piece.len() {
                    match stream.read(&mut piece[got..]).unwrap() {
                        0 => break,
                        n => got += n,
                    }
                }
                let end = (at as usize + 10_000).min(data.len());
                assert_eq!(&piece[..got], &data[at as usize..end], "at {at}");
            }
            stream
                .seek(SeekFrom::Start(data.len() as u64 + 10))
                .unwrap();
            assert_eq!(stream.read(&mut [0; 16]).unwrap(), 0, "past the end");
        }
    }

    #[test]
    fn missing_file_is_not_found_naming_the_path() {
        let err = FileStateHandle::local("/nonexistent/snapstate/x", 1)
            .open()
            .err()
            .unwrap();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/snapstate/x"),
            "{err}"
        );
    }
}

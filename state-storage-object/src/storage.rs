//! [`ObjectCheckpointStorage`]: checkpoint storage under a prefix of an object store, in
//! the layout of [`CheckpointStorage`] (`chk-<id>/`, `chk-<id>/_metadata`, `shared/`).
//!
//! A checkpoint is visible only when its `_metadata` object exists, and that object is
//! written with one PUT that refuses to replace an existing one: a checkpoint is complete
//! or absent, never half there, and committed metadata is never overwritten. Streams get
//! fresh random names, so writers never collide, whatever the number of instances.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use state_api::CheckpointId;
use state_api::checkpoint_metadata::METADATA_FILE;
use state_api::{
    CheckpointMetadata, CheckpointStateOutputStream, CheckpointStorage, CheckpointStreamFactory,
    CheckpointedStateScope, Error, Result, StoredFile,
};
use state_format::StorageRoot;
use state_format::storage_root::check_relative;

use crate::handle::ObjectRoot;
use crate::location::{ObjectUrl, Scheme};
use crate::options::ObjectStoreOptions;
use crate::runtime::block_on;
use crate::stores::{ObjectStores, Store};
use crate::stream::ObjectOutputStream;

const SHARED: &str = "shared";

/// A fresh object name: random per process, counted within it.
fn fresh_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        RandomState::new().hash_one((nanos, std::process::id()))
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = RandomState::new().hash_one((seed, count));
    format!("{seed:016x}{mixed:016x}-{count}")
}

/// Checkpoint storage on object storage.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use state_api::{CheckpointStreamFactory, CheckpointedStateScope, StateObject};
/// use state_storage_object::{ObjectCheckpointStorage, ObjectStoreOptions};
///
/// let storage = ObjectCheckpointStorage::open("memory://doc/job-1", ObjectStoreOptions::default())?
///     .with_file_state_threshold(0);
/// let factory = storage.stream_factory(state_api::CheckpointId::new(1));
/// let mut stream = factory.create_output_stream(CheckpointedStateScope::Exclusive)?;
/// stream.write_all(b"key groups").unwrap();
/// let handle = stream.close_and_get_handle()?;
/// assert!(handle.describe().starts_with("object memory://doc/job-1/chk-1/"));
/// let mut back = String::new();
/// handle.open()?.read_to_string(&mut back).unwrap();
/// assert_eq!(back, "key groups");
/// handle.discard()?;
/// assert!(storage.stored_objects(None)?.is_empty());
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ObjectCheckpointStorage {
    store: Arc<Store>,
    prefix: Path,
    /// The store and prefix as handles resolve against them.
    root: Arc<ObjectRoot>,
    url: String,
    file_state_threshold: usize,
}

impl ObjectCheckpointStorage {
    /// Streams up to this many bytes are kept inline in their handle (Flink's default).
    pub const DEFAULT_FILE_STATE_THRESHOLD: usize = 20 * 1024;

    /// Storage under `url` (`s3://bucket/prefix`, `file:///path`, `memory://name/prefix`),
    /// its store configured with `options` in [`ObjectStores::global`]. Checks that the
    /// store answers (lists the prefix), so a missing bucket or refused credentials are
    /// reported here rather than at the first checkpoint.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] / [`Error::Unsupported`] for a bad URL;
    /// [`Error::NotFound`] naming a missing bucket; [`Error::AccessDenied`];
    /// [`Error::Io`] when the store cannot be reached (after retries).
    pub fn open(url: &str, options: ObjectStoreOptions) -> Result<Self> {
        let parsed = ObjectUrl::parse(url)?;
        let store = ObjectStores::global().store(&parsed.root, Some(options))?;
        let storage = ObjectCheckpointStorage {
            url: parsed.to_string().trim_end_matches('/').to_owned(),
            root: Arc::new(ObjectRoot::new(
                parsed.root.to_string(),
                parsed.path.to_string(),
            )),
            store,
            prefix: parsed.path,
            file_state_threshold: Self::DEFAULT_FILE_STATE_THRESHOLD,
        };
        let inner = storage.store.inner.clone();
        let prefix = storage.prefix.clone();
        block_on(async move { inner.list_with_delimiter(Some(&prefix)).await })?
            .map_err(|err| storage.store.error(err, &storage.url))?;
        Ok(storage)
    }

    /// Sets the inline threshold; `0` stores every non-empty stream as an object.
    pub fn with_file_state_threshold(mut self, bytes: usize) -> Self {
        self.file_state_threshold = bytes;
        self
    }

    /// The storage's URL (never with credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, relative: &str) -> Path {
        relative
            .split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    fn url_of(&self, key: &Path) -> String {
        match self.store.root.scheme {
            Scheme::File => format!("file:///{key}"),
            _ => format!("{}/{key}", self.store.root),
        }
    }

    fn checkpoint_key(&self, checkpoint_id: CheckpointId) -> Path {
        self.key(&format!("chk-{checkpoint_id}"))
    }

    /// The stream factory of checkpoint `checkpoint_id`.
    pub fn stream_factory(&self, checkpoint_id: CheckpointId) -> ObjectStreamFactory {
        ObjectStreamFactory {
            storage: self.clone(),
            exclusive: format!("chk-{checkpoint_id}"),
        }
    }

    /// Commits `metadata` as `chk-<id>/_metadata` with one PUT that never replaces an
    /// existing object; returns its URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the checkpoint is committed already; storage errors.
    pub fn commit_checkpoint(&self, metadata: &CheckpointMetadata) -> Result<String> {
        let key = self
            .checkpoint_key(metadata.checkpoint_id)
            .join(METADATA_FILE);
        let url = self.url_of(&key);
        let payload = PutPayload::from(Bytes::from(state_format::metadata::to_bytes(
            metadata,
            &self.storage_root(),
        )?));
        let inner = self.store.inner.clone();
        let target = key.clone();
        let options = PutOptions::from(PutMode::Create);
        match block_on(async move { inner.put_opts(&target, payload, options).await })? {
            Ok(_) => Ok(url),
            Err(object_store::Error::AlreadyExists { .. }) => Err(Error::InvalidArgument(format!(
                "checkpoint {} is committed already ({url})",
                metadata.checkpoint_id
            ))),
            Err(err) => Err(self.store.error(err, &url)),
        }
    }

    /// Ids of the committed checkpoints (those with a `_metadata` object), ascending.
    ///
    /// # Errors
    ///
    /// Storage errors of the listing.
    pub fn completed_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        Ok(self
            .checkpoint_directories()?
            .into_iter()
            .filter_map(|(id, committed)| committed.then_some(CheckpointId::new(id)))
            .collect())
    }

    /// Every `chk-<id>` prefix under the storage's, ascending by id, with whether it holds
    /// a `_metadata` object (committed) or not (in progress, or abandoned).
    ///
    /// # Errors
    ///
    /// Storage errors of the listing.
    pub fn checkpoint_directories(&self) -> Result<Vec<(u64, bool)>> {
        let inner = self.store.inner.clone();
        let prefix = self.prefix.clone();
        let listed = block_on(async move {
            let listing = inner.list_with_delimiter(Some(&prefix)).await?;
            let mut found = Vec::new();
            for dir in listing.common_prefixes {
                let id = dir
                    .filename()
                    .and_then(|name| name.strip_prefix("chk-"))
                    .and_then(|id| id.parse::<u64>().ok());
                let Some(id) = id else { continue };
                match inner.head(&dir.clone().join(METADATA_FILE)).await {
                    Ok(_) => found.push((id, true)),
                    Err(object_store::Error::NotFound { .. }) => found.push((id, false)),
                    Err(err) => return Err(err),
                }
            }
            Ok(found)
        })?;
        let mut found = listed.map_err(|err| self.store.error(err, &self.url))?;
        found.sort_unstable();
        Ok(found)
    }

    /// The metadata of committed checkpoint `checkpoint_id`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a checkpoint never committed; [`Error::Snapshot`] naming
    /// the object around a corruption; storage errors.
    pub fn load_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<CheckpointMetadata> {
        let key = self.checkpoint_key(checkpoint_id).join(METADATA_FILE);
        let url = self.url_of(&key);
        let inner = self.store.inner.clone();
        let read = block_on(async move { inner.get(&key).await?.bytes().await })?;
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    what: format!("checkpoint {checkpoint_id} ({url})"),
                });
            }
            Err(err) => return Err(self.store.error(err, &url)),
        };
        let metadata = state_format::metadata::from_bytes(&bytes, &self.storage_root())
            .and_then(|metadata| {
                metadata.check_checkpoint_id(checkpoint_id)?;
                Ok(metadata)
            })
            .map_err(|source| Error::Snapshot {
                location: url,
                source: Box::new(source),
            })?;
        Ok(metadata)
    }

    /// The storage root as metadata reads and writes it.
    fn storage_root(&self) -> Arc<dyn StorageRoot> {
        self.root.clone()
    }

    /// The store and prefix as handles of this storage resolve against them.
    pub fn root(&self) -> &Arc<ObjectRoot> {
        &self.root
    }

    /// Deletes every object under `chk-<id>/`, its `_metadata` first.
    ///
    /// # Errors
    ///
    /// Storage errors naming the object.
    pub fn discard_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<()> {
        let dir = self.checkpoint_key(checkpoint_id);
        self.delete(&dir.clone().join(METADATA_FILE))?;
        let inner = self.store.inner.clone();
        let listed = dir.clone();
        let keys = block_on(async move {
            inner
                .list(Some(&listed))
                .map_ok(|meta| meta.location)
                .try_collect::<Vec<_>>()
                .await
        })?
        .map_err(|err| self.store.error(err, &self.url_of(&dir)))?;
        for key in keys {
            self.delete(&key)?;
        }
        Ok(())
    }

    fn delete(&self, key: &Path) -> Result<()> {
        let inner = self.store.inner.clone();
        let target = key.clone();
        match block_on(async move { inner.delete(&target).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.store.error(err, &self.url_of(key))),
        }
    }

    /// The names of every object stored under the storage (or, with `Some(id)`, under
    /// checkpoint `id`'s exclusive prefix), relative to the storage's URL, sorted.
    /// Incomplete multipart uploads are not objects and are not listed.
    ///
    /// # Errors
    ///
    /// Storage errors of the listing.
    pub fn stored_objects(&self, checkpoint_id: Option<u64>) -> Result<Vec<String>> {
        let under = match checkpoint_id {
            Some(id) => self.checkpoint_key(CheckpointId::new(id)),
            None => self.prefix.clone(),
        };
        let inner = self.store.inner.clone();
        let listed = under.clone();
        let metas =
            block_on(async move { inner.list(Some(&listed)).try_collect::<Vec<_>>().await })?
                .map_err(|err| self.store.error(err, &self.url_of(&under)))?;
        let mut names: Vec<String> = metas
            .into_iter()
            .filter_map(|meta| {
                meta.location.prefix_match(&self.prefix).map(|parts| {
                    parts
                        .map(|part| part.as_ref().to_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                })
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

impl ObjectCheckpointStorage {
    /// Every object under the storage's prefix, by path relative to it, with its size,
    /// sorted. Incomplete multipart uploads are not objects and are not listed (a bucket
    /// lifecycle rule expires those).
    ///
    /// # Errors
    ///
    /// Storage errors of the listing.
    pub fn list_files(&self) -> Result<Vec<StoredFile>> {
        let inner = self.store.inner.clone();
        let prefix = self.prefix.clone();
        let metas =
            block_on(async move { inner.list(Some(&prefix)).try_collect::<Vec<_>>().await })?
                .map_err(|err| self.store.error(err, &self.url))?;
        let mut files: Vec<StoredFile> = metas
            .into_iter()
            .filter_map(|meta| {
                let parts = meta.location.prefix_match(&self.prefix)?;
                let path = parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>();
                Some(StoredFile {
                    path: path.join("/"),
                    size: meta.size,
                })
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Deletes the object at `path` (relative to the storage's prefix); a missing object
    /// is no error.
    ///
    /// # Errors
    ///
    /// [`Error::OutsideStorage`] for a path that leaves the prefix; storage errors naming
    /// the object.
    pub fn delete_file(&self, path: &str) -> Result<()> {
        check_relative(path).map_err(|reason| Error::OutsideStorage {
            location: path.to_owned(),
            root: self.url.clone(),
            reason: reason.to_owned(),
        })?;
        self.delete(&self.key(path))
    }
}

impl CheckpointStorage for ObjectCheckpointStorage {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn stream_factory(
        &self,
        checkpoint_id: CheckpointId,
    ) -> Result<Arc<dyn CheckpointStreamFactory>> {
        Ok(Arc::new(ObjectCheckpointStorage::stream_factory(
            self,
            checkpoint_id,
        )))
    }

    fn commit_checkpoint(&self, metadata: &CheckpointMetadata) -> Result<()> {
        ObjectCheckpointStorage::commit_checkpoint(self, metadata).map(drop)
    }

    fn completed_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        ObjectCheckpointStorage::completed_checkpoints(self)
    }

    fn load_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<CheckpointMetadata> {
        ObjectCheckpointStorage::load_checkpoint(self, checkpoint_id)
    }

    fn discard_checkpoint(&self, checkpoint_id: CheckpointId) -> Result<()> {
        ObjectCheckpointStorage::discard_checkpoint(self, checkpoint_id)
    }
    fn list_files(&self) -> Result<Vec<StoredFile>> {
        ObjectCheckpointStorage::list_files(self)
    }

    fn delete_file(&self, path: &str) -> Result<()> {
        ObjectCheckpointStorage::delete_file(self, path)
    }
}

/// Opens streams as objects under a checkpoint's prefix (exclusive) or `shared/`.
#[derive(Debug, Clone)]
pub struct ObjectStreamFactory {
    storage: ObjectCheckpointStorage,
    /// `chk-<id>`, relative to the storage's root.
    exclusive: String,
}

impl CheckpointStreamFactory for ObjectStreamFactory {
    fn create_output_stream(
        &self,
        scope: CheckpointedStateScope,
    ) -> Result<Box<dyn CheckpointStateOutputStream>> {
        let relative = match scope {
            CheckpointedStateScope::Exclusive => format!("{}/{}", self.exclusive, fresh_name()),
            // `chk-<id>-`: clean-up after a crash tells whose object it is by its name.
            CheckpointedStateScope::Shared => {
                format!("{SHARED}/{}-{}", self.exclusive, fresh_name())
            }
        };
        let url = self
            .storage
            .url_of(&Path::from(self.storage.root.key(&relative)));
        Ok(Box::new(ObjectOutputStream::new(
            self.storage.store.clone(),
            self.storage.root.clone(),
            relative,
            url,
            self.storage.file_state_threshold,
        )))
    }
}

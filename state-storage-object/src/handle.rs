//! [`ObjectStateHandle`] (serde tag `object`): a completed stream stored as one object, and
//! [`ObjectInputStream`], its reader.
//!
//! The handle holds the store's URL (`s3://bucket`, `file://`, `memory://name`), the
//! object's key and its size: no endpoint and no credentials, which come from the
//! process's [`ObjectStores`](crate::ObjectStores) when the handle is opened or discarded.
//!
//! Reading fetches the object in windows of the store's read-ahead size with ranged GETs;
//! while the caller consumes one window, the next is already being fetched. A seek within
//! the current window costs nothing; a seek elsewhere drops the prefetch and fetches the
//! window at the new position, never the whole object.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use state_api::{Error, Result, StateInputStream, StateObject, StreamStateHandle};
use state_format::storage_root::check_relative;
use state_format::{HandleScope, StorageRoot};

use crate::location::ObjectUrl;
use crate::runtime::{Pending, block_on};
use crate::stores::{ObjectStores, Store};

/// The root of an object checkpoint storage: its store and the prefix under it. Handles
/// of the storage name objects relative to it, so a prefix copied or moved elsewhere (in
/// the same or another store) restores from its new place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRoot {
    store: String,
    prefix: String,
}

impl ObjectRoot {
    /// The root `prefix` (without leading or trailing `/`; empty for the whole store) in
    /// the store at `store` (`s3://bucket`, `file://`, `memory://name`).
    pub fn new(store: impl Into<String>, prefix: impl Into<String>) -> Self {
        ObjectRoot {
            store: store.into(),
            prefix: prefix.into().trim_matches('/').to_owned(),
        }
    }

    /// The store's URL.
    pub fn store_url(&self) -> &str {
        &self.store
    }

    /// The prefix of the storage in its store.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of `relative` in the store.
    pub fn key(&self, relative: &str) -> String {
        match self.prefix.is_empty() {
            true => relative.to_owned(),
            false => format!("{}/{relative}", self.prefix),
        }
    }

    /// The URL of `key` (a full key) in the store.
    fn url_of(&self, key: &str) -> String {
        match self.store.as_str() {
            "file://" => format!("file:///{key}"),
            store => format!("{store}/{key}"),
        }
    }
}

impl StorageRoot for ObjectRoot {
    fn describe(&self) -> String {
        self.url_of(&self.prefix)
    }
}

/// A snapshot stream stored as one object.
///
/// In checkpoint metadata the handle is written as its key relative to the storage's
/// [`ObjectRoot`] and read back only inside a [`HandleScope`] of an object root, against
/// which it resolves (see `state_format::storage_root`). Outside a scope it is written whole
/// (store URL, full key), and read back so only as written outside one.
#[derive(Debug, Clone)]
pub struct ObjectStateHandle {
    root: Arc<ObjectRoot>,
    relative: String,
    size: u64,
    written_here: bool,
}

impl PartialEq for ObjectStateHandle {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root && self.relative == other.relative && self.size == other.size
    }
}

impl Eq for ObjectStateHandle {}

impl ObjectStateHandle {
    /// A handle to object `key` of `size` bytes in the store at `store` (`s3://bucket`,
    /// `file://`, `memory://name`), relative to the store's root.
    pub fn new(store: impl Into<String>, key: impl Into<String>, size: u64) -> Self {
        ObjectStateHandle {
            root: Arc::new(ObjectRoot::new(store, "")),
            relative: key.into(),
            size,
            written_here: false,
        }
    }

    /// A handle to the object at `relative` (`chk-<id>/<name>`, `shared/<name>`) under
    /// `root`, of `size` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::OutsideStorage`] when `relative` does not stay under the root.
    pub fn stored(root: Arc<ObjectRoot>, relative: impl Into<String>, size: u64) -> Result<Self> {
        let relative = relative.into();
        check_relative(&relative).map_err(|reason| Error::OutsideStorage {
            location: relative.clone(),
            root: root.describe(),
            reason: reason.to_owned(),
        })?;
        Ok(ObjectStateHandle {
            root,
            relative,
            size,
            written_here: false,
        })
    }

    /// Marks the handle as one whose object this process has just written.
    pub(crate) fn written_by_this_process(mut self) -> Self {
        self.written_here = true;
        self
    }

    /// The store's URL.
    pub fn store_url(&self) -> &str {
        self.root.store_url()
    }

    /// The object's key in its store.
    pub fn key(&self) -> String {
        self.root.key(&self.relative)
    }

    /// The object's key relative to its storage's root.
    pub fn relative_key(&self) -> &str {
        &self.relative
    }

    /// The object's full URL.
    pub fn url(&self) -> String {
        self.root.url_of(&self.key())
    }

    fn resolve(&self) -> Result<(Arc<Store>, Path)> {
        let url = ObjectUrl::parse(self.root.store_url()).map_err(|err| Error::Corrupted {
            what: format!("object handle {}", self.url()),
            reason: err.to_string(),
        })?;
        let key = Path::parse(self.key()).map_err(|err| Error::Corrupted {
            what: format!("object handle {}", self.url()),
            reason: err.to_string(),
        })?;
        Ok((ObjectStores::global().store(&url.root, None)?, key))
    }
}

/// How an object handle is written: relative (`key` only) inside a scope, whole outside.
#[derive(Serialize, Deserialize)]
struct ObjectRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    key: String,
    size: u64,
}

impl Serialize for ObjectStateHandle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let in_scope =
            HandleScope::serializing(&*self.root, || self.url()).map_err(S::Error::custom)?;
        let repr = match in_scope {
            true => ObjectRepr {
                store: None,
                key: self.relative.clone(),
                size: self.size,
            },
            false => ObjectRepr {
                store: Some(self.root.store_url().to_owned()),
                key: self.key(),
                size: self.size,
            },
        };
        repr.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ObjectStateHandle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ObjectRepr { store, key, size } = ObjectRepr::deserialize(deserializer)?;
        // A handle with its store is a whole URL: format 1's, or one written outside a scope.
        let scoped =
            HandleScope::deserializing::<ObjectRoot>(&key, store.is_some(), "an object handle")
                .map_err(D::Error::custom)?;
        let (root, relative) = match (scoped, store) {
            (Some(scoped), _) => scoped,
            (None, Some(store)) => (Arc::new(ObjectRoot::new(store, "")), key),
            (None, None) => {
                return Err(D::Error::custom(format!(
                    "object `{key}` is relative to a checkpoint storage: read it through that storage"
                )));
            }
        };
        ObjectStateHandle::stored(root, relative, size).map_err(D::Error::custom)
    }
}

impl StateObject for ObjectStateHandle {
    fn discard(&self) -> Result<()> {
        let (store, key) = self.resolve()?;
        let inner = store.inner.clone();
        match block_on(async move { inner.delete(&key).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(store.error(err, &self.url())),
        }
    }

    fn state_size(&self) -> u64 {
        self.size
    }
}

#[typetag::serde(name = "object")]
impl StreamStateHandle for ObjectStateHandle {
    fn open(&self) -> Result<Box<dyn StateInputStream>> {
        let (store, key) = self.resolve()?;
        Ok(Box::new(ObjectInputStream {
            window_size: store.options.read_ahead.max(1) as u64,
            store,
            key,
            url: self.url(),
            size: self.size,
            pos: 0,
            window: Bytes::new(),
            window_start: 0,
            next: None,
        }))
    }

    fn describe(&self) -> String {
        format!("object {}", self.url())
    }

    fn written_by_this_process(&self) -> bool {
        self.written_here
    }

    fn stored_path(&self) -> Option<&str> {
        Some(&self.relative)
    }
}

type Fetch = Pending<object_store::Result<Bytes>>;

/// Reads an object through ranged GETs with read-ahead, one window of the store's
/// read-ahead size at a time while the next one is fetched; a seek within the window costs
/// nothing, a seek elsewhere fetches the window there, never the whole object.
#[derive(Debug)]
pub struct ObjectInputStream {
    store: Arc<Store>,
    key: Path,
    url: String,
    size: u64,
    window_size: u64,
    pos: u64,
    window: Bytes,
    window_start: u64,
    /// The window being fetched ahead, by its start.
    next: Option<(u64, Fetch)>,
}

impl ObjectInputStream {
    fn fetch(&self, start: u64) -> Result<Fetch> {
        let end = (start + self.window_size).min(self.size);
        let inner = self.store.inner.clone();
        let key = self.key.clone();
        Pending::spawn(async move { inner.get_range(&key, start..end).await })
    }

    /// Makes the window hold `self.pos` (which is below the size).
    fn load(&mut self) -> Result<()> {
        let start = self.pos;
        let fetch = match self.next.take() {
            Some((next_start, fetch)) if next_start == start => fetch,
            Some((_, stale)) => {
                stale.abort();
                self.fetch(start)?
            }
            None => self.fetch(start)?,
        };
        let bytes = fetch
            .wait()
            .ok_or_else(|| Error::Stream {
                context: format!("reading {}", self.url),
                source: io::Error::other("the read request stopped without a result"),
            })?
            .map_err(|err| self.store.error(err, &self.url))?;
        let expected = (start + self.window_size).min(self.size) - start;
        if (bytes.len() as u64) < expected {
            return Err(Error::Truncated {
                what: self.url.clone(),
                reason: format!(
                    "the object ends at byte {}, its handle says {}",
                    start + bytes.len() as u64,
                    self.size
                ),
            });
        }
        self.window = bytes;
        self.window_start = start;
        let following = start + self.window.len() as u64;
        if following < self.size {
            self.next = Some((following, self.fetch(following)?));
        }
        Ok(())
    }
}

impl Read for ObjectInputStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let window_end = self.window_start + self.window.len() as u64;
        if !(self.window_start..window_end).contains(&self.pos) {
            self.load().map_err(Error::into_io)?;
        }
        let offset = (self.pos - self.window_start) as usize;
        let available = &self.window[offset..];
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectInputStream {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = state_api::seek_position(to, self.pos, self.size).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("seek before the start of {}", self.url),
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}

impl Drop for ObjectInputStream {
    fn drop(&mut self) {
        if let Some((_, fetch)) = self.next.take() {
            fetch.abort();
        }
    }
}

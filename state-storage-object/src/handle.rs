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

use std::any::Any;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use state_api::{Error, Result, StateInputStream, StateObject, StreamStateHandle};

use crate::location::ObjectUrl;
use crate::runtime::{Pending, block_on};
use crate::stores::{ObjectStores, Store};

/// A snapshot stream stored as one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStateHandle {
    store: String,
    key: String,
    size: u64,
}

impl ObjectStateHandle {
    /// A handle to object `key` of `size` bytes in the store at `store` (`s3://bucket`,
    /// `file://`, `memory://name`).
    pub fn new(store: impl Into<String>, key: impl Into<String>, size: u64) -> Self {
        ObjectStateHandle {
            store: store.into(),
            key: key.into(),
            size,
        }
    }

    /// The store's URL.
    pub fn store_url(&self) -> &str {
        &self.store
    }

    /// The object's key in its store.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's full URL.
    pub fn url(&self) -> String {
        match self.store.as_str() {
            "file://" => format!("file:///{}", self.key),
            store => format!("{store}/{}", self.key),
        }
    }

    fn resolve(&self) -> Result<(Arc<Store>, Path)> {
        let url = ObjectUrl::parse(&self.store).map_err(|err| Error::Corrupted {
            what: format!("object handle {}", self.url()),
            reason: err.to_string(),
        })?;
        let key = Path::parse(&self.key).map_err(|err| Error::Corrupted {
            what: format!("object handle {}", self.url()),
            reason: err.to_string(),
        })?;
        Ok((ObjectStores::global().store(&url.root, None)?, key))
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

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn describe(&self) -> String {
        format!("object {}", self.url())
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
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
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

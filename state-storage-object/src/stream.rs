//! [`ObjectOutputStream`]: a checkpoint stream uploaded to object storage.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use state_api::{
    ByteStreamStateHandle, CheckpointStateOutputStream, Closeable, Error, Result, StreamStateHandle,
};
use tokio::task::AbortHandle;

use crate::handle::{ObjectRoot, ObjectStateHandle};
use crate::runtime::{Pending, block_on};
use crate::stores::Store;

type Upload = Arc<tokio::sync::Mutex<Box<dyn MultipartUpload>>>;

/// What the stream shares with its closer.
#[derive(Debug, Default)]
struct Requests {
    /// Requests sent and maybe still running; aborted on close.
    running: Vec<AbortHandle>,
    /// The multipart upload, once started.
    upload: Option<Upload>,
    /// A PUT or a completion was sent: the object may exist.
    object_sent: bool,
    /// The handle was handed out: closing changes nothing any more.
    completed: bool,
    /// Cleanup ran (it runs once).
    cleaned: bool,
}

#[derive(Debug)]
struct Shared {
    store: Arc<Store>,
    key: Path,
    url: String,
    /// Checked on every write without locking.
    closed: AtomicBool,
    requests: Mutex<Requests>,
}

impl Shared {
    fn requests(&self) -> MutexGuard<'_, Requests> {
        // Plain flags and handles: a panic elsewhere cannot leave them torn.
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_error(&self) -> Error {
        Error::Closed {
            what: format!("checkpoint stream to {}", self.url),
        }
    }

    /// Starts `future` unless the stream is closed, registering it for abortion; with
    /// `sends_object` the object may exist from now on.
    fn start<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
        sends_object: bool,
    ) -> Result<Pending<T>> {
        let mut requests = self.requests();
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let pending = Pending::spawn(future)?;
        requests.running.retain(|task| !task.is_finished());
        requests.running.push(pending.abort_handle());
        requests.object_sent |= sends_object;
        Ok(pending)
    }

    /// Waits for `pending`; an aborted request means the stream was closed.
    fn wait<T: Send + 'static>(&self, pending: Pending<T>) -> Result<T> {
        pending.wait().ok_or_else(|| self.closed_error())
    }

    /// Marks the stream closed and removes what it stored, once: aborts running requests,
    /// aborts the multipart upload, deletes the object if it may exist. Nothing happens
    /// after completion.
    fn close(&self) -> Result<()> {
        let (upload, object_sent) = {
            let mut requests = self.requests();
            self.closed.store(true, Ordering::Release);
            if requests.completed || requests.cleaned {
                return Ok(());
            }
            requests.cleaned = true;
            for task in requests.running.drain(..) {
                task.abort();
            }
            (requests.upload.take(), requests.object_sent)
        };
        if upload.is_none() && !object_sent {
            return Ok(());
        }
        let store = self.store.clone();
        let key = self.key.clone();
        let outcome = block_on(async move {
            if let Some(upload) = upload {
                // Waits for a completion in flight to give the upload back, then aborts
                // it; an upload completed or gone already is deleted below.
                match upload.lock().await.abort().await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            match object_sent {
                true => match store.inner.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(err) => Err(err),
                },
                false => Ok(()),
            }
        })?;
        outcome.map_err(|err| self.store.error(err, &self.url))
    }

    /// Hands out the handle unless the stream was closed meanwhile.
    fn complete(&self) -> Result<()> {
        let mut requests = self.requests();
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        requests.completed = true;
        Ok(())
    }
}

/// [`ObjectOutputStream`]: a checkpoint stream uploaded to object storage.
///
/// Bytes collect in a buffer of the store's part size. A stream that stays at or under the
/// file-state threshold becomes an inline [`ByteStreamStateHandle`] and touches no store; one
/// that stays within one part is a single PUT in
/// [`close_and_get_handle`](CheckpointStateOutputStream::close_and_get_handle). Once the
/// buffer fills, a multipart upload starts and every full part is uploaded while writing
/// goes on, at most `parts_in_flight` at a time (a writer waits for the oldest part beyond
/// that, so memory stays within `(parts_in_flight + 1) × part_size`). Completing uploads the
/// last part and completes the upload: only then is the object visible.
///
/// Closing from another thread ([`closer`](CheckpointStateOutputStream::closer)), dropping
/// the stream, or any failure aborts every request in flight (a writer waiting on one wakes
/// with [`Error::Closed`]), aborts the multipart upload and deletes the object if a PUT or
/// a completion was already sent, before returning. If the store cannot be reached for
/// that, an incomplete multipart upload may remain; a bucket lifecycle rule
/// (`AbortIncompleteMultipartUpload`) removes those.
#[derive(Debug)]
pub struct ObjectOutputStream {
    shared: Arc<Shared>,
    /// The storage root the handle names the object under, and the object's key there.
    root: Arc<ObjectRoot>,
    relative: String,
    threshold: usize,
    part_size: usize,
    parts_in_flight: usize,
    buffer: Vec<u8>,
    parts: VecDeque<Pending<object_store::Result<()>>>,
    pos: u64,
}

impl ObjectOutputStream {
    /// A stream into object `key` of `store`, inline up to `threshold` bytes.
    pub(crate) fn new(
        store: Arc<Store>,
        root: Arc<ObjectRoot>,
        relative: String,
        url: String,
        threshold: usize,
    ) -> Self {
        let key = Path::from(root.key(&relative));
        let part_size = store.options.part_size;
        let parts_in_flight = store.options.parts_in_flight.max(1);
        ObjectOutputStream {
            shared: Arc::new(Shared {
                store,
                key,
                url,
                closed: AtomicBool::new(false),
                requests: Mutex::default(),
            }),
            root,
            relative,
            threshold,
            part_size,
            parts_in_flight,
            buffer: Vec::new(),
            parts: VecDeque::new(),
            pos: 0,
        }
    }

    fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Waits for the oldest part in flight.
    fn wait_oldest_part(&mut self) -> Result<()> {
        if let Some(part) = self.parts.pop_front() {
            self.shared
                .wait(part)?
                .map_err(|err| self.store().error(err, &self.shared.url))?;
        }
        Ok(())
    }

    /// The multipart upload, started on first use.
    fn upload(&mut self) -> Result<Upload> {
        if let Some(upload) = &self.shared.requests().upload {
            return Ok(upload.clone());
        }
        let store = self.shared.store.inner.clone();
        let key = self.shared.key.clone();
        let started = self
            .shared
            .start(async move { store.put_multipart(&key).await }, false)?;
        let upload = self
            .shared
            .wait(started)?
            .map_err(|err| self.store().error(err, &self.shared.url))?;
        let upload: Upload = Arc::new(tokio::sync::Mutex::new(upload));
        let mut requests = self.shared.requests();
        if self.shared.closed.load(Ordering::Acquire) {
            // The closer ran before the upload was known to it: abort it here.
            drop(requests);
            let abandoned = upload.clone();
            let _ = block_on(async move { abandoned.lock().await.abort().await });
            return Err(self.shared.closed_error());
        }
        requests.upload = Some(upload.clone());
        Ok(upload)
    }

    /// Uploads the buffer as the next part, waiting first if too many are in flight.
    fn send_part(&mut self) -> Result<()> {
        while self.parts.len() >= self.parts_in_flight {
            self.wait_oldest_part()?;
        }
        let upload = self.upload()?;
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part_size));
        let payload = PutPayload::from(Bytes::from(data));
        // Only a completion or an abort holds the lock, and neither runs while writing.
        let part = match upload.try_lock() {
            Ok(mut upload) => upload.put_part(payload),
            Err(_) => return Err(self.shared.closed_error()),
        };
        let pending = self.shared.start(part, false)?;
        self.parts.push_back(pending);
        Ok(())
    }

    fn write_bytes(&mut self, mut buf: &[u8]) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(self.shared.closed_error());
        }
        while !buf.is_empty() {
            if self.buffer.capacity() == 0 {
                self.buffer.reserve_exact(self.part_size.min(1 << 20));
            }
            let room = self.part_size - self.buffer.len();
            let (now, later) = buf.split_at(room.min(buf.len()));
            self.buffer.extend_from_slice(now);
            self.pos += now.len() as u64;
            buf = later;
            if self.buffer.len() == self.part_size {
                self.send_part()?;
            }
        }
        Ok(())
    }

    fn handle(&self) -> Result<Arc<dyn StreamStateHandle>> {
        Ok(Arc::new(
            ObjectStateHandle::stored(self.root.clone(), self.relative.clone(), self.pos)?
                .written_by_this_process(),
        ))
    }

    fn put_whole(&mut self) -> Result<()> {
        let store = self.shared.store.inner.clone();
        let key = self.shared.key.clone();
        let payload = PutPayload::from(Bytes::from(std::mem::take(&mut self.buffer)));
        let put = self
            .shared
            .start(async move { store.put(&key, payload).await }, true)?;
        self.shared
            .wait(put)?
            .map(drop)
            .map_err(|err| self.store().error(err, &self.shared.url))
    }

    fn complete_upload(&mut self) -> Result<()> {
        if !self.buffer.is_empty() {
            self.send_part()?;
        }
        while !self.parts.is_empty() {
            self.wait_oldest_part()?;
        }
        let upload = self.upload()?;
        let completed = self
            .shared
            .start(async move { upload.lock().await.complete().await }, true)?;
        self.shared
            .wait(completed)?
            .map(drop)
            .map_err(|err| self.store().error(err, &self.shared.url))
    }
}

impl Write for ObjectOutputStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_bytes(buf).map_err(Error::into_io)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_bytes(buf).map_err(Error::into_io)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Durability and visibility come with `close_and_get_handle`.
        Ok(())
    }
}

impl CheckpointStateOutputStream for ObjectOutputStream {
    fn pos(&self) -> u64 {
        self.pos
    }

    fn close_and_get_handle(mut self: Box<Self>) -> Result<Arc<dyn StreamStateHandle>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(self.shared.closed_error());
        }
        let multipart = self.shared.requests().upload.is_some();
        if !multipart && self.pos <= self.threshold as u64 {
            self.shared.complete()?;
            let name = format!("{}/inline-{}-bytes", self.shared.url, self.pos);
            let data = std::mem::take(&mut self.buffer);
            return Ok(Arc::new(ByteStreamStateHandle::new(name, data)));
        }
        // On failure `self` is dropped, which cleans up what was sent.
        match multipart {
            false => self.put_whole()?,
            true => self.complete_upload()?,
        }
        self.shared.complete()?;
        self.handle()
    }

    fn closer(&self) -> Arc<dyn Closeable> {
        let shared = self.shared.clone();
        Arc::new(move || shared.close())
    }
}

impl Drop for ObjectOutputStream {
    fn drop(&mut self) {
        for part in self.parts.drain(..) {
            part.abort();
        }
        if let Err(err) = self.shared.close() {
            tracing::warn!(error = %err, "cleaning up an abandoned checkpoint stream failed");
        }
    }
}

//! [`BackgroundFile`]: a file written by a thread of its own, so that encoding a snapshot
//! and writing it to disk overlap instead of taking turns.
//!
//! The producer fills buffers of a fixed size and hands each full one to the writer thread
//! over a bounded channel (at most [`QUEUED`] buffers wait, so memory stays bounded and a
//! slow disk slows the producer down); the thread writes them in order and hands them
//! back for reuse. Every [`WRITE_BACK_EVERY`] bytes the thread asks the kernel to start
//! writing what it wrote to disk (Linux's `sync_file_range`, which does not wait), so the
//! disk works while the producer encodes and the final sync has little left to do. The
//! thread never waits for the disk before that final sync: a sync in between would stall
//! the producer as soon as the few queued buffers are full. The first error the thread
//! meets is returned by the producer's next call.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use tempfile::NamedTempFile;

/// Full buffers that may wait for the writer thread.
const QUEUED: usize = 3;

/// Bytes the writer thread writes between two requests to start write-back.
const WRITE_BACK_EVERY: u64 = 8 << 20;

/// A temporary file written on a background thread.
#[derive(Debug)]
pub(crate) struct BackgroundFile {
    buffer: Vec<u8>,
    capacity: usize,
    full: Option<SyncSender<Vec<u8>>>,
    empty: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<NamedTempFile>>>,
    path: PathBuf,
}

impl BackgroundFile {
    /// Starts writing `file` in buffers of `capacity` bytes.
    pub(crate) fn spawn(file: NamedTempFile, capacity: usize) -> io::Result<Self> {
        let capacity = capacity.max(4096);
        let path = file.path().to_path_buf();
        let (full, full_rx) = mpsc::sync_channel::<Vec<u8>>(QUEUED);
        let (empty_tx, empty) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("snapstate-file-writer".into())
            .spawn(move || {
                let mut file = file;
                let (mut written, mut written_back) = (0u64, 0u64);
                for mut chunk in full_rx {
                    file.write_all(&chunk)?;
                    written += chunk.len() as u64;
                    if written - written_back >= WRITE_BACK_EVERY {
                        start_write_back(file.as_file(), written_back, written - written_back);
                        written_back = written;
                    }
                    chunk.clear();
                    // The producer may be gone; then the buffer is simply dropped.
                    let _ = empty_tx.send(chunk);
                }
                file.as_file().sync_all()?;
                Ok(file)
            })?;
        Ok(BackgroundFile {
            buffer: Vec::with_capacity(capacity),
            capacity,
            full: Some(full),
            empty,
            thread: Some(thread),
            path,
        })
    }

    /// The file's (temporary) path.
    pub(crate) fn path(&self) -> &PathBuf {
        &self.path
    }

    /// The writer thread's error, once it stopped.
    fn thread_error(&mut self) -> io::Error {
        self.full = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(err))) => err,
            Some(Err(_)) => io::Error::other("the file writer thread panicked"),
            Some(Ok(Ok(_))) | None => io::Error::other("the file writer thread stopped"),
        }
    }

    /// Hands the current buffer to the writer thread.
    fn send(&mut self) -> io::Result<()> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.capacity));
        let chunk = std::mem::replace(&mut self.buffer, next);
        let sent = match &self.full {
            Some(full) => full.send(chunk).is_ok(),
            None => false,
        };
        match sent {
            true => Ok(()),
            false => Err(self.thread_error()),
        }
    }

    /// Writes everything, syncs the file and returns it.
    pub(crate) fn finish(mut self) -> io::Result<NamedTempFile> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        self.full = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the file writer thread panicked")),
            None => Err(io::Error::other("the file writer thread stopped")),
        }
    }
}

impl Write for BackgroundFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let room = self.capacity - self.buffer.len();
            let (now, later) = buf.split_at(room.min(buf.len()));
            self.buffer.extend_from_slice(now);
            buf = later;
            if self.buffer.len() == self.capacity {
                self.send()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Durability comes with `finish`; flushing hands over what is buffered.
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

impl Drop for BackgroundFile {
    fn drop(&mut self) {
        // Stop the thread and wait for it: its temporary file is deleted before the
        // stream's drop returns, so a dropped stream leaves nothing behind.
        self.full = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Asks the kernel to start writing `len` bytes from `offset` of `file` to disk, without
/// waiting for it. Only a hint: the final `sync_all` makes the file durable and reports
/// the disk's errors, so a refusal here (a file system without support) changes nothing.
#[cfg(target_os = "linux")]
fn start_write_back(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the whole call (`file` is borrowed), and the call
    // takes no pointer.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Elsewhere there is no way to start write-back without waiting: the final sync does it
/// all.
#[cfg(not(target_os = "linux"))]
fn start_write_back(_file: &std::fs::File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let temp = NamedTempFile::new_in(dir.path()).unwrap();
        let mut file = BackgroundFile::spawn(temp, 4096).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(777) {
            file.write_all(piece).unwrap();
        }
        let temp = file.finish().unwrap();
        let mut back = Vec::new();
        std::fs::File::open(temp.path())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn dropping_deletes_the_file_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let temp = NamedTempFile::new_in(dir.path()).unwrap();
        let mut file = BackgroundFile::spawn(temp, 4096).unwrap();
        file.write_all(&[7; 50_000]).unwrap();
        drop(file);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

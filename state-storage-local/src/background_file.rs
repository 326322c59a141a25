//! [`BackgroundFile`]: a file written by a thread of its own, so that encoding a snapshot
//! and writing it to disk overlap instead of taking turns.
//!
//! The producer fills buffers of a fixed size and hands each full one to the writer thread
//! over a bounded channel (at most [`QUEUED_BYTES`] wait, so memory stays bounded and a
//! slow disk slows the producer down); the thread writes them in order and hands them
//! back for reuse. Every [`WRITE_BACK_EVERY`] bytes the thread asks the kernel to start
//! writing what it wrote to disk (Linux's `sync_file_range`, which does not wait), so the
//! disk works while the producer encodes and the final sync has little left to do. The
//! thread never waits for the disk before that final sync: a sync in between would stall
//! the producer as soon as the few queued buffers are full. The first error the thread
//! meets is returned by the producer's next call.
//!
//! On Linux the thread writes past the page cache (`O_DIRECT`) where the file system
//! allows it, in aligned blocks, and only the last partial block through it. A checkpoint
//! file is written once and read back only on restore: through the cache, every byte
//! would take a page the application's own data (RocksDB's files, say) could use, and a
//! page the kernel has to find first (on this project's test machine 380 MB/s for pages
//! touched the first time against 2.8 GB/s direct). A file system that refuses direct
//! i/o, at open or at the first write, gets the buffered writes of before.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use tempfile::NamedTempFile;

/// Bytes of full buffers that may wait for the writer thread (at least two buffers, at
/// most 64). A producer that hands over a key group's section of several MiB at once
/// (the two-thread encoder of a full snapshot) goes back to encoding while the
/// thread writes it, instead of waiting for the disk (a 10,000,000-key heap checkpoint's
/// asynchronous part: 1.0-1.2 s with 3 MiB, 0.85-0.97 s with 16 MiB).
const QUEUED_BYTES: usize = 16 << 20;

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
        let queued = (QUEUED_BYTES / capacity).clamp(2, 64);
        let (full, full_rx) = mpsc::sync_channel::<Vec<u8>>(queued);
        let (empty_tx, empty) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("snapstate-file-writer".into())
            .spawn(move || {
                let mut out = Output::open(file, capacity);
                for mut chunk in full_rx {
                    out.write(&chunk)?;
                    chunk.clear();
                    // The producer may be gone; then the buffer is simply dropped.
                    let _ = empty_tx.send(chunk);
                }
                out.finish()
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

/// Alignment of direct writes: of the buffer's address, the file offset and the length.
/// 4 KiB covers the logical block sizes of disks (512 or 4096 bytes).
const ALIGN: usize = 4096;

/// Where the writer thread puts the bytes: the file, through a direct descriptor where
/// the file system allows one.
struct Output {
    file: NamedTempFile,
    direct: Option<Direct>,
    /// Bytes written at their place in the file so far (positional writes).
    written: u64,
    written_back: u64,
}

/// A descriptor of the file opened with `O_DIRECT` and its aligned staging buffer.
struct Direct {
    file: std::fs::File,
    /// `len` bytes from `start` are 4 KiB-aligned in memory.
    buffer: Vec<u8>,
    start: usize,
    len: usize,
    /// Bytes waiting in the staging buffer.
    filled: usize,
}

impl Output {
    fn open(file: NamedTempFile, capacity: usize) -> Output {
        let len = capacity.div_ceil(ALIGN) * ALIGN;
        let direct = open_direct(file.path()).map(|direct| {
            let buffer = vec![0; len + ALIGN];
            let start = buffer.as_ptr().align_offset(ALIGN);
            Direct {
                file: direct,
                buffer,
                start,
                len,
                filled: 0,
            }
        });
        Output {
            file,
            direct,
            written: 0,
            written_back: 0,
        }
    }

    /// Writes `data` after what was written before.
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let Some(direct) = &mut self.direct else {
                return self.write_buffered(data);
            };
            let room = direct.len - direct.filled;
            let (now, later) = data.split_at(room.min(data.len()));
            let at = direct.start + direct.filled;
            direct.buffer[at..at + now.len()].copy_from_slice(now);
            direct.filled += now.len();
            data = later;
            if direct.filled == direct.len {
                let full = direct.len;
                self.write_staged(full)?;
            }
        }
        Ok(())
    }

    /// Writes the first `len` (aligned) staged bytes directly, keeping the rest staged;
    /// if the file system refuses, writes everything staged through the cache and stops
    /// writing directly.
    fn write_staged(&mut self, len: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(direct) = &mut self.direct else {
            return Ok(());
        };
        let staged = &direct.buffer[direct.start..direct.start + direct.filled];
        if direct
            .file
            .write_all_at(&staged[..len], self.written)
            .is_err()
        {
            let staged = staged.to_vec();
            self.direct = None;
            return self.write_buffered(&staged);
        }
        direct.buffer.copy_within(
            direct.start + len..direct.start + direct.filled,
            direct.start,
        );
        direct.filled -= len;
        self.written += len as u64;
        Ok(())
    }

    fn write_buffered(&mut self, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.as_file().write_all_at(data, self.written)?;
        self.written += data.len() as u64;
        if self.written - self.written_back >= WRITE_BACK_EVERY {
            start_write_back(
                self.file.as_file(),
                self.written_back,
                self.written - self.written_back,
            );
            self.written_back = self.written;
        }
        Ok(())
    }

    /// Writes what is staged (the aligned part directly, the last partial block through
    /// the cache), syncs the file and returns it.
    fn finish(mut self) -> io::Result<NamedTempFile> {
        if let Some(direct) = &self.direct {
            let aligned = direct_len(direct.filled);
            if aligned > 0 {
                self.write_staged(aligned)?;
            }
        }
        if let Some(direct) = self.direct.take() {
            let tail = &direct.buffer[direct.start..direct.start + direct.filled];
            self.write_buffered(tail)?;
        }
        self.file.as_file().sync_all()?;
        Ok(self.file)
    }
}

/// The largest multiple of [`ALIGN`] in `len`.
fn direct_len(len: usize) -> usize {
    len / ALIGN * ALIGN
}

/// `path` opened for direct writes, if the file system allows them.
#[cfg(target_os = "linux")]
fn open_direct(path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Elsewhere every write goes through the cache.
#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &std::path::Path) -> Option<std::fs::File> {
    None
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

    /// Whatever the buffer size and however the producer flushes (partial buffers, which
    /// direct writes must stage into aligned blocks), the file holds every byte in order.
    #[test]
    fn writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for capacity in [4096, 5000, 1 << 20] {
            for flush_every in [None, Some(3)] {
                let temp = NamedTempFile::new_in(dir.path()).unwrap();
                let mut file = BackgroundFile::spawn(temp, capacity).unwrap();
                for (index, piece) in data.chunks(777).enumerate() {
                    file.write_all(piece).unwrap();
                    if flush_every.is_some_and(|every| index % every == 0) {
                        file.flush().unwrap();
                    }
                }
                let temp = file.finish().unwrap();
                let mut back = Vec::new();
                std::fs::File::open(temp.path())
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
                assert!(back == data, "capacity {capacity}, flushes {flush_every:?}");
            }
        }
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

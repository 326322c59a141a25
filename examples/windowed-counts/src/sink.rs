//! [`TwoPhaseCommitSink`]: the job's exactly-once output, as Flink's
//! `TwoPhaseCommitSinkFunction` writes it.
//!
//! - The rows emitted between two checkpoint triggers form one transaction, named by the
//!   next triggered checkpoint's id ([`pre_commit`](TwoPhaseCommitSink::pre_commit)).
//! - A checkpoint stores every transaction not yet committed in operator state
//!   ([`state`](TwoPhaseCommitSink::state)), so the transactions survive a crash with the
//!   state that emitted them.
//! - When checkpoint `N` completes, every transaction up to `N` is committed
//!   ([`commit`](TwoPhaseCommitSink::commit)): written to `txn-<id>.tmp`, synced and
//!   renamed to `txn-<id>` in the output directory, so a reader sees a transaction whole or
//!   not at all. An aborted or declined checkpoint's transaction waits for a later
//!   completion.
//! - A run resumed from checkpoint `M` commits the transactions `M` stored again
//!   ([`resume`](TwoPhaseCommitSink::resume)): a transaction already there is skipped, so
//!   committing twice is committing once. Rows emitted after the last completed checkpoint
//!   were never committed; the resumed run replays their events and emits them again.
//!
//! # Formats
//!
//! A transaction in operator state (one element of a union list), big-endian:
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | id | `u64` | the checkpoint id naming the transaction |
//! | rows | `[u64; 3]` × n | (window, user, count) of each row, up to the element's end |
//!
//! A committed transaction `txn-<id>` is text: one line `<window> <user> <count>` per row.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use snapstate::api::CheckpointId;

/// The bytes of one row in operator state: window, user and count.
const ROW_BYTES: usize = 24;

/// One fired window: the events of `user` in window `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// The window's number: it spans `window * window_ms` to `(window + 1) * window_ms - 1`.
    pub window: u64,
    /// The user.
    pub user: u64,
    /// The user's events in the window.
    pub count: u64,
}

/// What went wrong writing or reading the job's output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// Two committed rows hold the same window of the same user: the window fired twice.
    #[error("window {window} of user {user} fired twice: {first} and {second} both hold it")]
    FiredTwice {
        /// The window.
        window: u64,
        /// The user.
        user: u64,
        /// The transaction file of one row.
        first: PathBuf,
        /// The transaction file of the other.
        second: PathBuf,
    },
    /// A file or directory of the output could not be written or read.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A committed transaction file is not rows of three numbers.
    #[error("corrupted transaction {path}, line {line}: {reason}")]
    CorruptedFile {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A transaction stored in a checkpoint's operator state has a length no rows make.
    #[error(
        "corrupted transaction in the checkpoint's operator state: {len} bytes is not an id and rows of {ROW_BYTES} bytes"
    )]
    CorruptedState {
        /// The element's length.
        len: usize,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The job's sink: rows of fired windows, committed when the checkpoint after them
/// completes (see the [module](self)).
#[derive(Debug)]
pub struct TwoPhaseCommitSink {
    dir: PathBuf,
    /// Rows emitted since the last trigger: the next triggered checkpoint's transaction.
    open: Vec<Row>,
    /// Transactions of triggered checkpoints, waiting for one at least as new to complete.
    pending: BTreeMap<CheckpointId, Vec<Row>>,
}

impl TwoPhaseCommitSink {
    /// A sink for a job that starts from the beginning of its stream: the output directory
    /// `dir` is emptied, as nothing of an earlier run of the job counts.
    ///
    /// # Errors
    ///
    /// [`OutputError::Io`] when `dir` cannot be emptied or made.
    pub fn fresh(dir: PathBuf) -> Result<Self, OutputError> {
        match fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(io_error(&dir)(err));
            }
            _ => {}
        }
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        Ok(TwoPhaseCommitSink {
            dir,
            open: Vec::new(),
            pending: BTreeMap::new(),
        })
    }

    /// A sink for a job resumed from a checkpoint whose operator state held `stored`
    /// (elements written by [`state`](Self::state)): those transactions are committed
    /// now, the ones committed before the crash skipped, and what a crash left half
    /// written removed.
    ///
    /// # Errors
    ///
    /// [`OutputError::CorruptedState`] for an element of another format;
    /// [`OutputError::Io`].
    pub fn resume(dir: PathBuf, stored: &[Vec<u8>]) -> Result<Self, OutputError> {
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let path = entry.map_err(io_error(&dir))?.path();
            if path.extension().is_some_and(|ext| ext == "tmp") {
                fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        let mut sink = TwoPhaseCommitSink {
            dir,
            open: Vec::new(),
            pending: BTreeMap::new(),
        };
        for element in stored {
            let (id, rows) = decode(element)?;
            sink.pending.insert(id, rows);
        }
        if let Some(&last) = sink.pending.keys().next_back() {
            sink.commit(last)?;
        }
        Ok(sink)
    }

    /// Adds `row` to the open transaction.
    pub fn emit(&mut self, row: Row) {
        self.open.push(row);
    }

    /// Closes the open transaction as checkpoint `id`'s, before that checkpoint's
    /// snapshot stores [`state`](Self::state).
    pub fn pre_commit(&mut self, id: CheckpointId) {
        let rows = std::mem::take(&mut self.open);
        if !rows.is_empty() {
            self.pending.insert(id, rows);
        }
    }

    /// Every transaction not yet committed, as operator state elements.
    pub fn state(&self) -> Vec<Vec<u8>> {
        (self.pending.iter())
            .map(|(id, rows)| encode(*id, rows))
            .collect()
    }

    /// Commits every transaction up to `completed` (checkpoint `completed` is complete);
    /// returns how many it committed.
    ///
    /// # Errors
    ///
    /// [`OutputError::Io`] when a transaction cannot be written: it and the later ones
    /// stay pending, for the next completion (or a resumed run) to commit.
    pub fn commit(&mut self, completed: CheckpointId) -> Result<usize, OutputError> {
        let due: Vec<CheckpointId> = self
            .pending
            .range(..=completed)
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            if let Some(rows) = self.pending.get(id) {
                self.write(*id, rows)?;
            }
            self.pending.remove(id);
        }
        Ok(due.len())
    }

    /// Writes transaction `id` as a whole, unless it is there already.
    fn write(&self, id: CheckpointId, rows: &[Row]) -> Result<(), OutputError> {
        let path = self.dir.join(format!("txn-{id}"));
        if path.exists() {
            return Ok(());
        }
        let temp = self.dir.join(format!("txn-{id}.tmp"));
        let mut text = String::with_capacity(rows.len() * 16);
        for row in rows {
            text.push_str(&format!("{} {} {}\n", row.window, row.user, row.count));
        }
        let mut file = fs::File::create(&temp).map_err(io_error(&temp))?;
        file.write_all(text.as_bytes()).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
        drop(file);
        fs::rename(&temp, &path).map_err(io_error(&path))?;
        // The rename is durable once the directory is.
        fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.dir))
    }
}

/// Every row committed to the output directory `dir`, by (window, user).
///
/// # Errors
///
/// [`OutputError::FiredTwice`] when two rows hold the same window of the same user;
/// [`OutputError::CorruptedFile`] for a line that is not three numbers;
/// [`OutputError::Io`].
pub fn committed_rows(dir: &Path) -> Result<BTreeMap<(u64, u64), u64>, OutputError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let name = path.file_name().and_then(|name| name.to_str());
        if name.is_some_and(|name| name.starts_with("txn-") && !name.ends_with(".tmp")) {
            files.push(path);
        }
    }
    files.sort();
    let mut rows = BTreeMap::new();
    let mut held_by: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for (index, path) in files.iter().enumerate() {
        let text = fs::read_to_string(path).map_err(io_error(path))?;
        for (number, line) in text.lines().enumerate() {
            let corrupted = |reason: String| OutputError::CorruptedFile {
                path: path.clone(),
                line: number + 1,
                reason,
            };
            let fields = (line.split(' '))
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| corrupted(err.to_string()))?;
            let [window, user, count] = fields[..] else {
                return Err(corrupted(format!("{} fields, not 3", fields.len())));
            };
            if let Some(first) = held_by.insert((window, user), index) {
                return Err(OutputError::FiredTwice {
                    window,
                    user,
                    first: files[first].clone(),
                    second: path.clone(),
                });
            }
            rows.insert((window, user), count);
        }
    }
    Ok(rows)
}

fn encode(id: CheckpointId, rows: &[Row]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + rows.len() * ROW_BYTES);
    bytes.extend_from_slice(&id.get().to_be_bytes());
    for row in rows {
        bytes.extend_from_slice(&row.window.to_be_bytes());
        bytes.extend_from_slice(&row.user.to_be_bytes());
        bytes.extend_from_slice(&row.count.to_be_bytes());
    }
    bytes
}

fn decode(element: &[u8]) -> Result<(CheckpointId, Vec<Row>), OutputError> {
    let corrupted = || OutputError::CorruptedState { len: element.len() };
    let (id, rows) = element.split_first_chunk::<8>().ok_or_else(corrupted)?;
    if rows.len() % ROW_BYTES != 0 {
        return Err(corrupted());
    }
    let number = |bytes: &[u8]| -> u64 {
        let mut array = [0; 8];
        array.copy_from_slice(bytes);
        u64::from_be_bytes(array)
    };
    let rows = (rows.chunks_exact(ROW_BYTES))
        .map(|row| Row {
            window: number(&row[..8]),
            user: number(&row[8..16]),
            count: number(&row[16..]),
        })
        .collect();
    Ok((CheckpointId::new(u64::from_be_bytes(*id)), rows))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(window: u64, user: u64, count: u64) -> Row {
        Row {
            window,
            user,
            count,
        }
    }

    fn id(id: u64) -> CheckpointId {
        CheckpointId::new(id)
    }

    #[test]
    fn a_transaction_commits_when_its_checkpoint_or_a_later_one_completes() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("output");
        let mut sink = TwoPhaseCommitSink::fresh(output.clone()).unwrap();
        sink.emit(row(0, 1, 3));
        sink.pre_commit(id(1));
        sink.emit(row(0, 2, 4));
        sink.pre_commit(id(2));
        sink.emit(row(1, 1, 5));
        // Checkpoint 1 completes: only its transaction is written.
        assert_eq!(sink.commit(id(1)).unwrap(), 1);
        assert_eq!(
            committed_rows(&output).unwrap(),
            BTreeMap::from([((0, 1), 3)])
        );
        // Checkpoint 3 completes (2 was aborted): 2 and 3 are written, the open row not.
        sink.pre_commit(id(3));
        assert_eq!(sink.commit(id(3)).unwrap(), 2);
        assert_eq!(
            committed_rows(&output).unwrap(),
            BTreeMap::from([((0, 1), 3), ((0, 2), 4), ((1, 1), 5)])
        );
        assert!(sink.state().is_empty());
    }

    #[test]
    fn a_resumed_sink_commits_what_the_checkpoint_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("output");
        let mut sink = TwoPhaseCommitSink::fresh(output.clone()).unwrap();
        sink.emit(row(0, 1, 3));
        sink.pre_commit(id(1));
        sink.emit(row(0, 2, 4));
        sink.pre_commit(id(2));
        let stored = sink.state();
        // Transaction 1 was committed before the crash, 2 was not; a commit was cut off.
        sink.commit(id(1)).unwrap();
        fs::write(output.join("txn-2.tmp"), b"0 2").unwrap();
        let resumed = TwoPhaseCommitSink::resume(output.clone(), &stored).unwrap();
        assert!(resumed.state().is_empty());
        assert_eq!(
            committed_rows(&output).unwrap(),
            BTreeMap::from([((0, 1), 3), ((0, 2), 4)])
        );
        assert!(!output.join("txn-2.tmp").exists());
        // A fresh run of the job starts with no output.
        TwoPhaseCommitSink::fresh(output.clone()).unwrap();
        assert!(committed_rows(&output).unwrap().is_empty());
    }

    #[test]
    fn a_window_committed_twice_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("txn-1"), b"4 7 2\n").unwrap();
        fs::write(dir.path().join("txn-2"), b"5 7 1\n4 7 2\n").unwrap();
        let err = committed_rows(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                OutputError::FiredTwice {
                    window: 4,
                    user: 7,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("window 4 of user 7 fired twice"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_transaction_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("txn-1"), b"4 7\n").unwrap();
        let err = committed_rows(dir.path()).unwrap_err();
        assert!(
            matches!(err, OutputError::CorruptedFile { line: 1, .. }),
            "{err}"
        );
        let err = decode(&[0; 8 + ROW_BYTES + 1]).unwrap_err();
        assert!(
            matches!(err, OutputError::CorruptedState { len: 33 }),
            "{err}"
        );
    }
}

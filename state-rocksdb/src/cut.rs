//! The consistent cut of a `rocksdb-incremental` checkpoint, taken without a flush in the
//! synchronous part.
//!
//! The synchronous part seals the memtables of every column family (RocksDB flushes them
//! in the background) and takes a RocksDB snapshot. The processing thread is the
//! database's only writer, so the snapshot's sequence number `S` separates the writes the
//! checkpoint holds (at most `S`: in sst files or in the sealed memtables) from later ones.
//!
//! Capturing the cut, in the asynchronous part, waits until no sealed memtable is left
//! unflushed and, within a bound, for the compactions of the cut's files that read files no
//! earlier checkpoint stored, running or about to begin ([`crate::compactions`]: their
//! inputs would be stored now and their output again with the next checkpoint). It then
//! creates the native checkpoint without flushing, and proves it exact:
//! - every sst file it holds has a largest sequence number of at most `S` (the held
//!   snapshot keeps compactions from setting later writes' sequence numbers to 0), so no
//!   later write is in it; every write up to `S` is, since every sealed memtable was
//!   flushed first;
//! - its column families are the cut's (a state registered after the cut is not in it).
//!
//! A later write that RocksDB flushed before the capture (a memtable filled up) fails the
//! proof: that checkpoint fails and leaves nothing behind, and the next one flushes in its
//! synchronous part, as every checkpoint did before ([`Cuts::take_flush_next`]).
//!
//! At most one cut per backend waits to be captured: a synchronous part that finds an
//! earlier cut still waiting captures it first, because its own seal would flush writes
//! made after that earlier cut, and so does registering a state (a new column family),
//! which would otherwise be in the earlier cut's files. Either pauses the processing thread
//! for that capture, which only happens when checkpoints overlap or states are registered
//! while one runs.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{AsColumnFamilyRef, DB, Options};
use state_api::{CheckpointId, Error, Result};

use crate::ROCKSDB;
use crate::backend::lock;
use crate::compactions::{Compactions, Waited};
use crate::native::{
    HeldSnapshot, WrittenChecksum, live_sst_checksums, live_sst_sequence_numbers, seal_memtables,
};

/// How often capturing polls for the sealed memtables' flush.
const FLUSH_POLL: Duration = Duration::from_millis(1);

/// What a capture found: the checksums RocksDB recorded of the live sst files, or why the
/// checkpoint cannot be taken.
type Captured = std::result::Result<HashMap<String, WrittenChecksum>, String>;

/// A cut waiting to be captured into its snapshot directory.
#[derive(Debug)]
pub(crate) struct Cut {
    checkpoint_id: CheckpointId,
    directory: PathBuf,
    /// Names of the column families the checkpoint must hold, `default` included.
    families: BTreeSet<String>,
    /// Released once captured.
    snapshot: Mutex<Option<HeldSnapshot>>,
    sequence_number: u64,
    compactions: Arc<Compactions>,
    /// Set by a capture on the processing thread: a capture waiting for compactions stops
    /// waiting, so that the processing thread is not held up by them.
    preempted: AtomicBool,
    /// Set once, by whoever captures first (or abandons the cut).
    captured: Mutex<Option<Captured>>,
}

impl Cut {
    /// Seals the memtables of those of `families` (column family names) that `db` holds
    /// and takes the snapshot that marks the cut of checkpoint `checkpoint_id`, to be
    /// captured into `directory`. `compactions` reports what `db` compacts.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when RocksDB cannot seal a memtable.
    pub(crate) fn seal(
        db: &Arc<DB>,
        compactions: &Arc<Compactions>,
        checkpoint_id: CheckpointId,
        directory: PathBuf,
        families: Vec<String>,
    ) -> Result<Cut> {
        let (mut families, handles): (BTreeSet<String>, Vec<_>) = (families.into_iter())
            .filter_map(|name| db.cf_handle(&name).map(|handle| (name, handle)))
            .unzip();
        let refs: Vec<&dyn AsColumnFamilyRef> = (handles.iter())
            .map(|handle| handle as &dyn AsColumnFamilyRef)
            .collect();
        seal_memtables(db, &refs).map_err(|reason| {
            backend_error(format!(
                "sealing the memtables for checkpoint {checkpoint_id}: {reason}"
            ))
        })?;
        let snapshot = HeldSnapshot::take(db.clone());
        families.insert(rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_owned());
        Ok(Cut {
            checkpoint_id,
            directory,
            families,
            sequence_number: snapshot.sequence_number(),
            snapshot: Mutex::new(Some(snapshot)),
            compactions: compactions.clone(),
            preempted: AtomicBool::new(false),
            captured: Mutex::new(None),
        })
    }

    /// Captures the cut into its directory (once; later calls return the first outcome):
    /// the checksums RocksDB recorded of the live sst files. With `stored`, it first waits
    /// for the compactions of the cut's files that read a file `stored` does not know
    /// (by name, `000042.sst`); without, for none (the processing thread is waiting), and
    /// a capture waiting for them on another thread stops waiting within 10 ms.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] naming the checkpoint when RocksDB fails or the files are not
    /// exactly the cut (see the module documentation); `cancelled`'s error when it
    /// reports one while waiting.
    pub(crate) fn capture(
        &self,
        db: &DB,
        stored: Option<&dyn Fn(&str) -> bool>,
        cancelled: &dyn Fn() -> Result<()>,
    ) -> Result<HashMap<String, WrittenChecksum>> {
        if stored.is_none() {
            self.preempted.store(true, Ordering::Release);
        }
        let mut captured = lock(&self.captured);
        let outcome = match &*captured {
            Some(outcome) => outcome.clone(),
            None => {
                let waited = (self.wait_for_flush(db, cancelled))
                    .and_then(|()| self.wait_for_compactions(db, stored, cancelled));
                let outcome = match waited {
                    Ok(()) => self.create(db),
                    // Cancellation is not an outcome: whoever comes next may still capture.
                    Err(err @ Error::Cancelled { .. }) => return Err(err),
                    Err(err) => Err(err.to_string()),
                };
                lock(&self.snapshot).take();
                captured.insert(outcome).clone()
            }
        };
        let checkpoint_id = self.checkpoint_id;
        outcome.map_err(|reason| {
            backend_error(format!(
                "checkpoint {checkpoint_id} without a flush: {reason}"
            ))
        })
    }

    /// Makes every later capture fail: the checkpoint was cancelled or failed, and its
    /// directory is gone.
    pub(crate) fn abandon(&self) {
        let mut captured = lock(&self.captured);
        if captured.is_none() {
            *captured = Some(Err("the checkpoint was abandoned".into()));
        }
        lock(&self.snapshot).take();
    }

    /// RocksDB's integer property `name` of column family `handle`.
    fn property(
        &self,
        db: &DB,
        handle: &Arc<rocksdb::BoundColumnFamily<'_>>,
        name: &str,
    ) -> Result<u64> {
        let value = (db.property_int_value_cf(handle, name)).map_err(crate::backend::db_error(
            format_args!("reading `{name}` for checkpoint {}", self.checkpoint_id),
        ))?;
        Ok(value.unwrap_or(0))
    }

    /// Waits until no sealed memtable of the cut's column families is left unflushed.
    fn wait_for_flush(&self, db: &DB, cancelled: &dyn Fn() -> Result<()>) -> Result<()> {
        loop {
            cancelled()?;
            let mut unflushed = 0;
            for family in &self.families {
                let Some(handle) = db.cf_handle(family) else {
                    continue;
                };
                if self.property(db, &handle, "rocksdb.background-errors")? > 0 {
                    return Err(backend_error(format!(
                        "RocksDB reports background errors (column family `{family}`)"
                    )));
                }
                unflushed += self.property(db, &handle, "rocksdb.num-immutable-mem-table")?;
            }
            if unflushed == 0 {
                return Ok(());
            }
            std::thread::sleep(FLUSH_POLL);
        }
    }

    /// Waits, within the bound of [`Compactions`], for the compactions of the cut's files
    /// that read a file `stored` does not know: those running, and those RocksDB is about
    /// to begin (the cut's own flush may have started one).
    fn wait_for_compactions(
        &self,
        db: &DB,
        stored: Option<&dyn Fn(&str) -> bool>,
        cancelled: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let Some(stored) = stored else {
            return Ok(());
        };
        let pending = || {
            for family in &self.families {
                if let Some(handle) = db.cf_handle(family)
                    && self.property(db, &handle, "rocksdb.compaction-pending")? > 0
                {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let started = std::time::Instant::now();
        let preempted = || self.preempted.load(Ordering::Acquire);
        let unstored = |name: &str| !stored(name);
        let waited = (self.compactions).wait(
            &unstored,
            &pending,
            self.sequence_number,
            cancelled,
            &preempted,
        )?;
        let checkpoint_id = self.checkpoint_id;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match waited {
            Waited::Ended => tracing::debug!(%checkpoint_id, ms, "compactions of the cut ended"),
            Waited::WritesAfterCut | Waited::TimedOut | Waited::Preempted => tracing::info!(
                %checkpoint_id,
                ms,
                ?waited,
                "capturing while compactions of unstored files still run: their output \
                 will be stored with a later checkpoint"
            ),
        }
        Ok(())
    }

    /// Creates the native checkpoint without a flush and proves it is the cut.
    fn create(&self, db: &DB) -> Captured {
        let before = live_sst_sequence_numbers(db);
        Checkpoint::new(db)
            .and_then(|checkpoint| {
                checkpoint.create_checkpoint_with_log_size(&self.directory, u64::MAX)
            })
            .map_err(|err| {
                format!(
                    "creating the RocksDB checkpoint in {}: {err}",
                    self.directory.display()
                )
            })?;
        let after = live_sst_sequence_numbers(db);
        let written = live_sst_checksums(db).unwrap_or_else(|err| {
            tracing::warn!(%err, "RocksDB did not list its files' checksums; reading the files");
            HashMap::new()
        });
        for name in sst_files(&self.directory)? {
            let largest = before.get(&name).or_else(|| after.get(&name));
            match largest {
                Some(&largest) if largest <= self.sequence_number => {}
                Some(&largest) => {
                    return Err(format!(
                        "RocksDB flushed writes made after the synchronous part into {name} \
                         (sequence numbers up to {largest}, the cut is {}) before the files \
                         were captured; the next checkpoint flushes in its synchronous part",
                        self.sequence_number
                    ));
                }
                None => {
                    return Err(format!(
                        "{name} was written and removed while the files were captured; \
                         the next checkpoint flushes in its synchronous part"
                    ));
                }
            }
        }
        let families: BTreeSet<String> = DB::list_cf(&Options::default(), &self.directory)
            .map_err(|err| {
                format!(
                    "listing the column families of {}: {err}",
                    self.directory.display()
                )
            })?
            .into_iter()
            .collect();
        if families != self.families {
            return Err(format!(
                "the column families changed after the synchronous part ({:?} at the cut, \
                 {families:?} captured); the next checkpoint flushes in its synchronous part",
                self.families
            ));
        }
        Ok(written)
    }
}

/// Names of the sst files in `directory`.
fn sst_files(directory: &Path) -> std::result::Result<Vec<String>, String> {
    let entries =
        fs::read_dir(directory).map_err(|err| format!("listing {}: {err}", directory.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| format!("listing {}: {err}", directory.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sst") {
            names.push(name);
        }
    }
    Ok(names)
}

fn backend_error(reason: String) -> Error {
    Error::Backend {
        backend: ROCKSDB.to_owned(),
        source: reason.into(),
    }
}

/// The cuts of one backend instance: the one waiting to be captured, and whether the next
/// checkpoint flushes in its synchronous part instead.
#[derive(Debug)]
pub(crate) struct Cuts {
    waiting: Mutex<Weak<Cut>>,
    flush_next: AtomicBool,
    compactions: Arc<Compactions>,
}

impl Cuts {
    /// The cuts of a database whose compactions `compactions` reports.
    pub(crate) fn new(compactions: Arc<Compactions>) -> Self {
        Cuts {
            waiting: Mutex::new(Weak::new()),
            flush_next: AtomicBool::new(false),
            compactions,
        }
    }

    /// What the database reports of its compactions.
    pub(crate) fn compactions(&self) -> &Arc<Compactions> {
        &self.compactions
    }

    /// The cut still waiting to be captured, if its checkpoint is still running.
    pub(crate) fn waiting(&self) -> Option<Arc<Cut>> {
        lock(&self.waiting).upgrade()
    }

    /// `cut` is now the one waiting.
    pub(crate) fn set_waiting(&self, cut: &Arc<Cut>) {
        *lock(&self.waiting) = Arc::downgrade(cut);
    }

    /// A capture failed: the next checkpoint flushes in its synchronous part.
    pub(crate) fn flush_next(&self) {
        self.flush_next.store(true, Ordering::Release);
    }

    /// Whether this checkpoint flushes in its synchronous part (once after a failed
    /// capture), clearing the request.
    pub(crate) fn take_flush_next(&self) -> bool {
        self.flush_next.swap(false, Ordering::AcqRel)
    }
}

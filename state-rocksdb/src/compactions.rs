//! The compactions RocksDB runs, as its event listener reports them ([`crate::native::listen`]),
//! so that an incremental checkpoint can wait for the ones that would otherwise make it
//! upload their inputs now and their output with the next checkpoint.
//!
//! Until a memtable holding writes made after a checkpoint's cut is flushed, every sst file
//! holds writes up to the cut only, and so does the output of any compaction of them,
//! whether it began before the cut or after it (the cut's own flush often starts one). When
//! some of a compaction's inputs are not stored by an earlier checkpoint, capturing the cut
//! before it ends stores those inputs, and the next checkpoint stores the output that
//! replaced them: the same data twice. Capturing after it ends stores the output once.
//! After a bulk load, that difference is most of the database (the last merges of the load
//! still run).
//!
//! Waiting is bounded: by [`RocksDBOptions::compaction_wait`](crate::RocksDBOptions), and by
//! the first memtable sealed with writes made after the cut, whose flush would put later
//! writes into the files before the capture (which then fails).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use state_api::Result;

use crate::backend::lock;

/// How long a waiter sleeps at most before it checks for cancellation again.
const CANCEL_POLL: Duration = Duration::from_millis(10);

/// How long a waiter waits for a compaction RocksDB reports pending to begin. One that
/// does not begin by then waits for a busy background thread, and is left to a later
/// checkpoint.
const BEGIN_WAIT: Duration = Duration::from_millis(100);

/// Why [`Compactions::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// No compaction of an unstored file runs, and none is about to begin.
    Ended,
    /// A memtable holding writes after the cut was sealed.
    WritesAfterCut,
    /// The bound passed first.
    TimedOut,
    /// The processing thread needs the capture now.
    Preempted,
}

#[derive(Debug, Default)]
struct Running {
    /// The input file names (`000042.sst`) of each running compaction, by job id (unique
    /// within one database).
    jobs: HashMap<i32, Vec<String>>,
    /// Compactions begun so far.
    begun: u64,
    /// Changes reported so far (compactions begun or ended, memtables sealed).
    changes: u64,
    /// The largest first sequence number of a memtable sealed so far.
    newest_sealed: u64,
}

/// What RocksDB reported of its compactions and memtables, for one database.
#[derive(Debug)]
pub(crate) struct Compactions {
    running: Mutex<Running>,
    changed: Condvar,
    /// The longest a checkpoint waits for them.
    limit: Duration,
    /// How long a compaction reported pending is given to begin.
    begin_wait: Duration,
}

impl Compactions {
    /// Tracks the compactions of one database; checkpoints wait at most `limit` for them.
    pub(crate) fn new(limit: Duration) -> Self {
        Compactions {
            running: Mutex::new(Running::default()),
            changed: Condvar::new(),
            limit,
            begin_wait: BEGIN_WAIT,
        }
    }

    /// The same, giving a compaction reported pending `begin_wait` to begin.
    #[cfg(test)]
    fn with_begin_wait(self, begin_wait: Duration) -> Self {
        Compactions { begin_wait, ..self }
    }

    /// Applies `change` and wakes the waiters.
    fn report(&self, change: impl FnOnce(&mut Running)) {
        let mut running = lock(&self.running);
        change(&mut running);
        running.changes += 1;
        drop(running);
        self.changed.notify_all();
    }

    /// RocksDB began compaction `job` of `inputs` (paths or file names).
    pub(crate) fn began(&self, job: i32, inputs: Vec<String>) {
        let names = (inputs.iter())
            .map(|path| match path.rsplit_once('/') {
                Some((_, name)) => name.to_owned(),
                None => path.clone(),
            })
            .collect();
        self.report(|running| {
            running.jobs.insert(job, names);
            running.begun += 1;
        });
    }

    /// RocksDB ended compaction `job`, with its output installed or not.
    pub(crate) fn ended(&self, job: i32) {
        self.report(|running| drop(running.jobs.remove(&job)));
    }

    /// RocksDB sealed a memtable whose first write has `first_sequence_number`.
    pub(crate) fn sealed(&self, first_sequence_number: u64) {
        self.report(|running| {
            running.newest_sealed = running.newest_sealed.max(first_sequence_number);
        });
    }

    /// Waits until no running compaction reads a file `unstored` says no earlier
    /// checkpoint stored, nor is one about to begin (`pending` says RocksDB has a
    /// compaction to pick; it is given [`BEGIN_WAIT`] to begin); or until a memtable whose
    /// writes all come after sequence number `cut` is sealed, the bound passes, or
    /// `preempted` says to stop.
    ///
    /// # Errors
    ///
    /// `cancelled`'s and `pending`'s errors. `cancelled` and `preempted` are checked at
    /// least every 10 ms.
    pub(crate) fn wait(
        &self,
        unstored: &dyn Fn(&str) -> bool,
        pending: &dyn Fn() -> Result<bool>,
        cut: u64,
        cancelled: &dyn Fn() -> Result<()>,
        preempted: &dyn Fn() -> bool,
    ) -> Result<Waited> {
        let deadline = Instant::now() + self.limit;
        // While a compaction reported pending is given time to begin: the compactions
        // begun by then, and until when.
        let mut expected: Option<(u64, Instant)> = None;
        loop {
            let (busy, begun, changes) = {
                let running = lock(&self.running);
                if running.newest_sealed > cut {
                    return Ok(Waited::WritesAfterCut);
                }
                let busy = (running.jobs.values()).any(|inputs| inputs.iter().any(|f| unstored(f)));
                (busy, running.begun, running.changes)
            };
            let now = Instant::now();
            if !busy {
                match expected {
                    Some((before, until)) if before == begun => {
                        if now >= until {
                            return Ok(Waited::Ended);
                        }
                    }
                    _ if pending()? => expected = Some((begun, now + self.begin_wait)),
                    _ => return Ok(Waited::Ended),
                }
            }
            if now >= deadline {
                return Ok(Waited::TimedOut);
            }
            cancelled()?;
            if preempted() {
                return Ok(Waited::Preempted);
            }
            let running = lock(&self.running);
            if running.changes == changes {
                let slice = CANCEL_POLL.min(deadline - now);
                drop(self.changed.wait_timeout(running, slice));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Files `000010.sst` to `000019.sst` are unstored, others stored.
    fn unstored(name: &str) -> bool {
        name.starts_with("00001")
    }

    fn waiting(
        compactions: &Arc<Compactions>,
        pending: &Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<Waited> {
        let (compactions, pending) = (compactions.clone(), pending.clone());
        std::thread::spawn(move || {
            let pending = || Ok(pending.load(Ordering::SeqCst));
            (compactions.wait(&unstored, &pending, 100, &|| Ok(()), &|| false)).expect("wait")
        })
    }

    /// A waiter waits for every compaction reading an unstored file, also one that began
    /// after it started waiting, and for none that reads only stored files.
    #[test]
    fn waits_for_the_compactions_of_unstored_files_only() {
        let compactions = Arc::new(Compactions::new(Duration::from_secs(600)));
        let pending = Arc::new(AtomicBool::new(false));
        compactions.began(1, vec!["/db/000010.sst".into(), "000021.sst".into()]);
        compactions.began(2, vec!["/db/000022.sst".into()]);
        let waiter = waiting(&compactions, &pending);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "returned while compaction 1 runs");
        compactions.began(3, vec!["/db/000013.sst".into()]);
        compactions.ended(1);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "returned while compaction 3 runs");
        compactions.ended(3);
        // Compaction 2 reads stored files only.
        assert_eq!(waiter.join().expect("waiter"), Waited::Ended);
    }

    /// A compaction RocksDB reports pending is given time to begin, and then waited for;
    /// one that does not begin is not waited for beyond that time.
    #[test]
    fn a_pending_compaction_is_given_time_to_begin() {
        let compactions = Compactions::new(Duration::from_secs(600));
        let compactions = Arc::new(compactions.with_begin_wait(Duration::from_secs(300)));
        let pending = Arc::new(AtomicBool::new(true));
        let waiter = waiting(&compactions, &pending);
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !waiter.is_finished(),
            "returned before the compaction began"
        );
        compactions.began(5, vec!["000011.sst".into()]);
        pending.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "returned while the compaction runs");
        compactions.ended(5);
        assert_eq!(waiter.join().expect("waiter"), Waited::Ended);

        let begin_wait = Duration::from_millis(50);
        let compactions = Compactions::new(Duration::from_secs(600));
        let compactions = Arc::new(compactions.with_begin_wait(begin_wait));
        pending.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let waiter = waiting(&compactions, &pending);
        assert_eq!(waiter.join().expect("waiter"), Waited::Ended);
        assert!(started.elapsed() >= begin_wait, "{:?}", started.elapsed());
    }

    /// A memtable sealed with writes after the cut ends the wait at once; one sealed with
    /// earlier writes (the cut's own) does not.
    #[test]
    fn a_memtable_sealed_after_the_cut_ends_the_wait() {
        let compactions = Arc::new(Compactions::new(Duration::from_secs(600)));
        compactions.began(7, vec!["000010.sst".into()]);
        compactions.sealed(90);
        let waiter = waiting(&compactions, &Arc::new(AtomicBool::new(false)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "returned for a memtable of the cut");
        compactions.sealed(101);
        assert_eq!(waiter.join().expect("waiter"), Waited::WritesAfterCut);
    }

    /// The bound, preemption, cancellation and a failing `pending` each end the wait.
    #[test]
    fn the_bound_preemption_and_cancellation_end_the_wait() {
        let (never, idle) = (|| false, || Ok(false));
        let compactions = Compactions::new(Duration::from_millis(20));
        compactions.began(1, vec!["000010.sst".into()]);
        let waited = compactions.wait(&unstored, &idle, 0, &|| Ok(()), &never);
        assert_eq!(waited.expect("wait"), Waited::TimedOut);
        let compactions = Compactions::new(Duration::from_secs(600));
        compactions.began(1, vec!["000010.sst".into()]);
        let waited = compactions.wait(&unstored, &idle, 0, &|| Ok(()), &|| true);
        assert_eq!(waited.expect("wait"), Waited::Preempted);
        let cancelled = || {
            Err(state_api::Error::Cancelled {
                checkpoint_id: state_api::CheckpointId::new(3),
            })
        };
        let err =
            (compactions.wait(&unstored, &idle, 0, &cancelled, &never)).expect_err("cancelled");
        assert!(matches!(err, state_api::Error::Cancelled { .. }), "{err}");
        let compactions = Compactions::new(Duration::from_secs(600));
        let failing = || Err(state_api::Error::InvalidArgument("no property".into()));
        let err =
            (compactions.wait(&unstored, &failing, 0, &|| Ok(()), &never)).expect_err("failed");
        assert!(matches!(err, state_api::Error::InvalidArgument(_)), "{err}");
        assert_eq!(
            (compactions.wait(&unstored, &idle, 0, &|| Ok(()), &never)).expect("wait"),
            Waited::Ended
        );
    }
}

//! The compactions RocksDB runs, as its event listener reports them ([`crate::native::listen`]),
//! so that an incremental checkpoint can wait for the ones that would otherwise make it
//! upload their inputs now and their output with the next checkpoint.
//!
//! A compaction that runs when a checkpoint's synchronous part takes its cut reads only
//! files written before the cut, so its output holds nothing after the cut either. When
//! some of its inputs are not stored by an earlier checkpoint, capturing the cut before it
//! ends stores those inputs, and the next checkpoint stores the output that replaced them:
//! the same data twice. Capturing after it ends stores the output once. After a bulk load,
//! that difference is most of the database (the last merges of the load still run).
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

/// A compaction RocksDB was running: its job id (unique within one database) and the file
/// names (`000042.sst`) it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunningCompaction {
    pub(crate) job: i32,
    pub(crate) inputs: Vec<String>,
}

/// Why [`Compactions::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// None of the compactions runs any more.
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
    jobs: HashMap<i32, Vec<String>>,
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
}

impl Compactions {
    /// Tracks the compactions of one database; checkpoints wait at most `limit` for them.
    pub(crate) fn new(limit: Duration) -> Self {
        Compactions {
            running: Mutex::new(Running::default()),
            changed: Condvar::new(),
            limit,
        }
    }

    /// RocksDB began compaction `job` of `inputs` (paths or file names).
    pub(crate) fn began(&self, job: i32, inputs: Vec<String>) {
        let names = (inputs.iter())
            .map(|path| match path.rsplit_once('/') {
                Some((_, name)) => name.to_owned(),
                None => path.clone(),
            })
            .collect();
        lock(&self.running).jobs.insert(job, names);
        self.changed.notify_all();
    }

    /// RocksDB ended compaction `job`, with its output installed or not.
    pub(crate) fn ended(&self, job: i32) {
        lock(&self.running).jobs.remove(&job);
        self.changed.notify_all();
    }

    /// RocksDB sealed a memtable whose first write has `first_sequence_number`.
    pub(crate) fn sealed(&self, first_sequence_number: u64) {
        let mut running = lock(&self.running);
        running.newest_sealed = running.newest_sealed.max(first_sequence_number);
        drop(running);
        self.changed.notify_all();
    }

    /// The compactions running now.
    pub(crate) fn running(&self) -> Vec<RunningCompaction> {
        let running = lock(&self.running);
        (running.jobs.iter())
            .map(|(&job, inputs)| RunningCompaction {
                job,
                inputs: inputs.clone(),
            })
            .collect()
    }

    /// Waits until none of `jobs` runs, a memtable whose writes all come after sequence
    /// number `cut` is sealed, the bound passes, or `preempted` says to stop.
    ///
    /// # Errors
    ///
    /// `cancelled`'s error. Both it and `preempted` are checked at least every 10 ms.
    pub(crate) fn wait(
        &self,
        jobs: &[i32],
        cut: u64,
        cancelled: &dyn Fn() -> Result<()>,
        preempted: &dyn Fn() -> bool,
    ) -> Result<Waited> {
        let deadline = Instant::now() + self.limit;
        let mut running = lock(&self.running);
        loop {
            if running.newest_sealed > cut {
                return Ok(Waited::WritesAfterCut);
            }
            if !jobs.iter().any(|job| running.jobs.contains_key(job)) {
                return Ok(Waited::Ended);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Waited::TimedOut);
            }
            drop(running);
            cancelled()?;
            if preempted() {
                return Ok(Waited::Preempted);
            }
            running = lock(&self.running);
            let slice = CANCEL_POLL.min(deadline - now);
            running = (self.changed.wait_timeout(running, slice))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn waiting(compactions: &Arc<Compactions>, jobs: Vec<i32>) -> std::thread::JoinHandle<Waited> {
        let compactions = compactions.clone();
        std::thread::spawn(move || {
            (compactions.wait(&jobs, 100, &|| Ok(()), &|| false)).expect("wait")
        })
    }

    /// A waiter returns when the compactions it waits for end, whatever others do.
    #[test]
    fn waits_for_the_given_compactions_only() {
        let compactions = Arc::new(Compactions::new(Duration::from_secs(600)));
        compactions.began(1, vec!["/db/000010.sst".into(), "000011.sst".into()]);
        compactions.began(2, vec!["/db/000012.sst".into()]);
        assert_eq!(
            compactions
                .running()
                .iter()
                .find(|c| c.job == 1)
                .map(|c| c.inputs.clone()),
            Some(vec!["000010.sst".to_owned(), "000011.sst".to_owned()])
        );
        let waiter = waiting(&compactions, vec![1]);
        compactions.ended(2);
        compactions.began(3, vec!["000013.sst".into()]);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "returned while compaction 1 runs");
        compactions.ended(1);
        assert_eq!(waiter.join().expect("waiter"), Waited::Ended);
        assert_eq!(compactions.running().len(), 1, "compaction 3 still runs");
    }

    /// A memtable sealed with writes after the cut ends the wait at once; one sealed with
    /// earlier writes (the cut's own) does not.
    #[test]
    fn a_memtable_sealed_after_the_cut_ends_the_wait() {
        let compactions = Arc::new(Compactions::new(Duration::from_secs(600)));
        compactions.began(7, vec!["000001.sst".into()]);
        compactions.sealed(90);
        let waiter = waiting(&compactions, vec![7]);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "returned for a memtable of the cut");
        compactions.sealed(101);
        assert_eq!(waiter.join().expect("waiter"), Waited::WritesAfterCut);
    }

    /// The bound, preemption and cancellation each end the wait.
    #[test]
    fn the_bound_preemption_and_cancellation_end_the_wait() {
        let never = || false;
        let compactions = Compactions::new(Duration::from_millis(20));
        compactions.began(1, vec!["000001.sst".into()]);
        let waited = compactions.wait(&[1], 0, &|| Ok(()), &never);
        assert_eq!(waited.expect("wait"), Waited::TimedOut);
        let compactions = Compactions::new(Duration::from_secs(600));
        compactions.began(1, vec!["000001.sst".into()]);
        let waited = compactions.wait(&[1], 0, &|| Ok(()), &|| true);
        assert_eq!(waited.expect("wait"), Waited::Preempted);
        let compactions = Compactions::new(Duration::from_secs(600));
        compactions.began(1, vec!["000001.sst".into()]);
        let err = compactions
            .wait(
                &[1],
                0,
                &|| {
                    Err(state_api::Error::Cancelled {
                        checkpoint_id: state_api::CheckpointId::new(3),
                    })
                },
                &never,
            )
            .expect_err("cancelled");
        assert!(matches!(err, state_api::Error::Cancelled { .. }), "{err}");
        assert_eq!(
            compactions.wait(&[], 0, &|| Ok(()), &never).expect("wait"),
            Waited::Ended
        );
    }
}

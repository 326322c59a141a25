//! The parallel key-group driver: how key groups are shared between the calling thread and
//! one helper thread, for the canonical format's writer
//! ([`write_key_groups_parallel`](crate::keyed_format::write_key_groups_parallel)) and for a
//! backend's restore (the heap backend reads a snapshot's two halves at once).
//!
//! - [`KeyGroupShare`]: positions in a list of key groups that the two threads take in
//!   order, each the next one nobody took yet, until one of them fails.
//! - [`split_by_weight`]: two contiguous halves of about the same weight, for readers that
//!   must read each stream front to back (object storage's read-ahead then fetches every
//!   byte once).
//! - [`run_in_two`]: runs both threads and joins the helper; a helper that panicked is an
//!   [`Error::WorkerStopped`], never a panic of the caller.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use state_api::{Error, Result};

/// Positions `0..len` of a list of key groups, taken in order by two threads.
#[derive(Debug)]
pub struct KeyGroupShare {
    len: usize,
    /// The first position nobody took yet.
    untaken: AtomicUsize,
    failed: AtomicBool,
}

impl KeyGroupShare {
    /// `len` positions, none taken.
    pub fn new(len: usize) -> Self {
        KeyGroupShare {
            len,
            untaken: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Takes the first position nobody took yet, if it is below `limit` (and `len`) and no
    /// thread failed.
    pub fn take_below(&self, limit: usize) -> Option<usize> {
        if self.failed() {
            return None;
        }
        let limit = limit.min(self.len);
        self.untaken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
                (next < limit).then_some(next + 1)
            })
            .ok()
    }

    /// Takes the next position nobody took yet (see [`take_below`](Self::take_below)).
    pub fn take(&self) -> Option<usize> {
        self.take_below(self.len)
    }

    /// Takes `position` if it is the first one nobody took yet.
    pub fn take_exactly(&self, position: usize) -> bool {
        self.untaken
            .compare_exchange(position, position + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Records that a thread failed: no position is taken any more.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Whether a thread failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Where the second of two contiguous halves of `weights` starts: the position that makes
/// the heavier half lightest, the last such so that this thread takes the larger share of
/// a tie (every weight counts at least 1).
pub fn split_by_weight(weights: &[u64]) -> usize {
    let total: u64 = weights.iter().map(|&w| w.max(1)).sum();
    let mut best = (u64::MAX, 0);
    let mut before = 0;
    for position in 0..=weights.len() {
        let heavier = before.max(total - before);
        if heavier <= best.0 {
            best = (heavier, position);
        }
        before += weights.get(position).map_or(0, |&w| w.max(1));
    }
    best.1
}

/// Runs `helper` on a helper thread and `main` on this one, then joins the helper. Returns
/// both results; a helper that panicked is [`Error::WorkerStopped`] naming `worker`.
///
/// `main` must make the helper finish (close what it waits on, or
/// [`fail`](KeyGroupShare::fail) its share) before it returns, or the join waits for it.
pub fn run_in_two<H: Send, M>(
    worker: &str,
    helper: impl FnOnce() -> H + Send,
    main: impl FnOnce() -> M,
) -> (Result<H>, M) {
    std::thread::scope(|scope| {
        let handle = scope.spawn(helper);
        let mine = main();
        let helper = handle.join().map_err(|_| Error::WorkerStopped {
            worker: worker.to_owned(),
        });
        (helper, mine)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn every_position_is_taken_once_in_order() {
        let share = KeyGroupShare::new(1000);
        let taken = Mutex::new(Vec::new());
        let work = || {
            let mut mine = Vec::new();
            while let Some(position) = share.take() {
                mine.push(position);
            }
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "in order");
            taken.lock().unwrap().extend(mine);
        };
        let (helper, ()) = run_in_two("test helper", work, work);
        helper.unwrap();
        let mut taken = taken.into_inner().unwrap();
        taken.sort_unstable();
        assert_eq!(taken, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn limits_exact_takes_and_failure() {
        let share = KeyGroupShare::new(5);
        assert_eq!(share.take_below(1), Some(0));
        assert_eq!(share.take_below(1), None, "position 1 is not below 1");
        assert!(!share.take_exactly(2), "1 is the first untaken");
        assert!(share.take_exactly(1));
        assert_eq!(share.take_below(100), Some(2), "never past len");
        share.fail();
        assert_eq!(share.take(), None);
        assert!(share.failed());
    }

    #[test]
    fn halves_hold_about_the_same_weight() {
        assert_eq!(split_by_weight(&[]), 0);
        assert_eq!(
            split_by_weight(&[5]),
            1,
            "one key group: this thread reads it"
        );
        assert_eq!(split_by_weight(&[1, 1, 1, 1]), 2);
        assert_eq!(
            split_by_weight(&[1, 1, 1, 1, 1]),
            3,
            "a tie goes to this thread"
        );
        assert_eq!(split_by_weight(&[10, 1, 1, 1]), 1);
        assert_eq!(
            split_by_weight(&[1, 1, 10, 1]),
            2,
            "the heavy one with the light end"
        );
        assert_eq!(
            split_by_weight(&[1, 1, 1, 10]),
            3,
            "the helper reads the heavy one"
        );
        assert_eq!(
            split_by_weight(&[0, 0, 0, 0]),
            2,
            "empty key groups count 1"
        );
    }

    #[test]
    fn a_panicking_helper_is_a_stopped_worker() {
        let (helper, mine) = run_in_two("the reader of key groups 7..=9", || panic!("boom"), || 42);
        assert_eq!(mine, 42);
        let err = helper.unwrap_err();
        assert!(matches!(err, Error::WorkerStopped { .. }), "{err}");
        assert!(err.to_string().contains("key groups 7..=9"), "{err}");
    }
}

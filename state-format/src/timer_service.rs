//! [`TimerService`]: typed event-time and processing-time timers per key and namespace,
//! over the priority-queue states of any [`KeyedStateBackend`].
//!
//! A service registers two priority-queue states, `<name>/event-time` and
//! `<name>/processing-time`, whose namespaces use the service's namespace serializer. Timers
//! are sets: registering a timer that is there is a no-op, as in Flink's
//! `InternalTimerService`. They are state like any other: every strategy snapshots them,
//! and a savepoint moves them between backends and parallelisms with their keys.
//!
//! # Example
//!
//! ```
//! use state_format::timer_service::{TimeDomain, TimerService};
//! use state_format::typed::{StringSerializer, U64Serializer};
//!
//! fn fire_windows(backend: &mut dyn state_api::KeyedStateBackend) -> state_api::Result<()> {
//!     let timers = TimerService::register(backend, "windows", U64Serializer, StringSerializer)?;
//!     timers.register_timer(backend, TimeDomain::EventTime, &7, &"w-1000".to_owned(), 1000)?;
//!     // Nothing is due before the watermark passes 1000.
//!     assert!(timers.next_due(backend, TimeDomain::EventTime, 999)?.is_none());
//!     // Fire one timer at a time: one that a firing registers at or before the
//!     // watermark fires in the same loop.
//!     while let Some(fired) = timers.next_due(backend, TimeDomain::EventTime, 1000)? {
//!         assert_eq!((fired.key, fired.namespace.as_str()), (7, "w-1000"));
//!     }
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use state_api::{KeyedStateBackend, Result, StateMetaInfo, Timer};

use crate::typed::TypeSerializer;

/// The clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timer's timestamp.
    EventTime,
    /// Fires when the wall clock reaches the timer's timestamp.
    ProcessingTime,
}

impl TimeDomain {
    fn suffix(self) -> &'static str {
        match self {
            TimeDomain::EventTime => "event-time",
            TimeDomain::ProcessingTime => "processing-time",
        }
    }
}

/// A timer that came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTimer<K, N> {
    /// The time it was registered for.
    pub timestamp: i64,
    /// The key it was registered for.
    pub key: K,
    /// The namespace it was registered in.
    pub namespace: N,
}

/// Typed timers of keys `K` in namespaces `N` (see the [module](self)).
pub struct TimerService<K, N> {
    states: [String; 2],
    key: Arc<dyn TypeSerializer<K>>,
    namespace: Arc<dyn TypeSerializer<N>>,
}

impl<K, N> fmt::Debug for TimerService<K, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerService")
            .field("states", &self.states)
            .field("key", &self.key.id())
            .field("namespace", &self.namespace.id())
            .finish()
    }
}

impl<K, N> Clone for TimerService<K, N> {
    fn clone(&self) -> Self {
        TimerService {
            states: self.states.clone(),
            key: self.key.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

impl<K, N> TimerService<K, N> {
    /// Registers the two timer states of service `name` in `backend` (or checks the ones
    /// already there, from a restore).
    ///
    /// # Errors
    ///
    /// [`state_api::Error::Incompatible`] when a state of those names has another kind or
    /// namespace serializer.
    pub fn register(
        backend: &mut dyn KeyedStateBackend,
        name: &str,
        key: impl TypeSerializer<K> + 'static,
        namespace: impl TypeSerializer<N> + 'static,
    ) -> Result<Self> {
        let states = [TimeDomain::EventTime, TimeDomain::ProcessingTime]
            .map(|domain| format!("{name}/{}", domain.suffix()));
        for state in &states {
            backend.register_state(&StateMetaInfo::priority_queue(state, namespace.id()))?;
        }
        Ok(TimerService {
            states,
            key: Arc::new(key),
            namespace: Arc::new(namespace),
        })
    }

    fn state(&self, domain: TimeDomain) -> &str {
        match domain {
            TimeDomain::EventTime => &self.states[0],
            TimeDomain::ProcessingTime => &self.states[1],
        }
    }

    fn timer(&self, key: &K, namespace: &N, timestamp: i64) -> Timer {
        let mut timer = Timer {
            timestamp,
            key: Vec::new(),
            namespace: Vec::new(),
        };
        self.key.serialize(key, &mut timer.key);
        self.namespace.serialize(namespace, &mut timer.namespace);
        timer
    }

    fn fired(&self, timer: Timer) -> Result<FiredTimer<K, N>> {
        Ok(FiredTimer {
            timestamp: timer.timestamp,
            key: self.key.deserialize(&timer.key)?,
            namespace: self.namespace.deserialize(&timer.namespace)?,
        })
    }

    /// Registers a timer of `domain` at `timestamp` for `key` in `namespace`; `false` when
    /// it was registered already.
    ///
    /// # Errors
    ///
    /// Those of [`KeyedStateBackend::add_timer`] (a key of another instance's key groups).
    pub fn register_timer(
        &self,
        backend: &mut dyn KeyedStateBackend,
        domain: TimeDomain,
        key: &K,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        backend.add_timer(self.state(domain), &self.timer(key, namespace, timestamp))
    }

    /// Deletes a timer registered with [`register_timer`](Self::register_timer); `false`
    /// when there was none.
    ///
    /// # Errors
    ///
    /// Those of [`KeyedStateBackend::remove_timer`].
    pub fn delete_timer(
        &self,
        backend: &mut dyn KeyedStateBackend,
        domain: TimeDomain,
        key: &K,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool> {
        backend.remove_timer(self.state(domain), &self.timer(key, namespace, timestamp))
    }

    /// Removes and returns the earliest timer of `domain` due at `time` (the watermark, or
    /// the wall clock): firing one at a time lets a timer registered while firing come due
    /// in the same round, as Flink's timer services do.
    ///
    /// # Errors
    ///
    /// Those of [`KeyedStateBackend::poll_timers`], and a serializer's for bytes it cannot
    /// read.
    pub fn next_due(
        &self,
        backend: &mut dyn KeyedStateBackend,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Option<FiredTimer<K, N>>> {
        let mut due = backend.poll_timers(self.state(domain), time, 1)?;
        due.pop().map(|timer| self.fired(timer)).transpose()
    }

    /// Removes and returns every timer of `domain` due at `time`, earliest first.
    ///
    /// # Errors
    ///
    /// As [`next_due`](Self::next_due).
    pub fn all_due(
        &self,
        backend: &mut dyn KeyedStateBackend,
        domain: TimeDomain,
        time: i64,
    ) -> Result<Vec<FiredTimer<K, N>>> {
        let due = backend.poll_timers(self.state(domain), time, usize::MAX)?;
        due.into_iter().map(|timer| self.fired(timer)).collect()
    }

    /// The timestamp of the earliest timer of `domain`, if any.
    ///
    /// # Errors
    ///
    /// Those of [`KeyedStateBackend::peek_timer`].
    pub fn next_timestamp(
        &self,
        backend: &dyn KeyedStateBackend,
        domain: TimeDomain,
    ) -> Result<Option<i64>> {
        Ok(backend.peek_timer(self.state(domain))?.map(|t| t.timestamp))
    }

    /// The number of timers of `domain`.
    ///
    /// # Errors
    ///
    /// Those of [`KeyedStateBackend::timer_count`].
    pub fn len(&self, backend: &dyn KeyedStateBackend, domain: TimeDomain) -> Result<usize> {
        backend.timer_count(self.state(domain))
    }
}

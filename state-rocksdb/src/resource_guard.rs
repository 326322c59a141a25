//! [`ResourceGuard`]: leases that keep a shared resource alive while async parts use it.
//!
//! The RocksDB backend guards its database with one: every asynchronous snapshot part
//! holds a [`Lease`] while it reads a RocksDB snapshot, and closing the backend first
//! cancels running snapshots through its [`CloseableRegistry`](state_api::CloseableRegistry)
//! and then [`close`](ResourceGuard::close)s the guard, which blocks until every lease is
//! returned. Once closed, no new lease is granted.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use state_api::{Error, Result};

#[derive(Debug, Default)]
struct State {
    leases: usize,
    closed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    released: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a counter or flag update: a poisoned lock holds
        // consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Grants leases on a resource and lets its owner wait until all are returned.
///
/// # Example
///
/// ```
/// use state_rocksdb::ResourceGuard;
///
/// let guard = ResourceGuard::new("rocksdb instance");
/// let lease = guard.acquire()?;
/// assert_eq!(guard.lease_count(), 1);
/// let async_part = std::thread::spawn(move || {
///     // ... read the resource ...
///     drop(lease);
/// });
/// guard.close(); // blocks until the lease above is dropped
/// assert!(guard.acquire().is_err());
/// async_part.join().unwrap();
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Clone)]
pub struct ResourceGuard {
    name: Arc<str>,
    inner: Arc<Inner>,
}

impl fmt::Debug for ResourceGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("ResourceGuard")
            .field("name", &self.name)
            .field("leases", &state.leases)
            .field("closed", &state.closed)
            .finish()
    }
}

impl ResourceGuard {
    /// A guard for the resource called `name` (used in errors).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ResourceGuard {
            name: name.into(),
            inner: Arc::default(),
        }
    }

    /// Takes a lease; fails with [`Error::Closed`] once the guard is closing or closed.
    pub fn acquire(&self) -> Result<Lease> {
        let mut state = self.inner.lock();
        if state.closed {
            return Err(Error::Closed {
                what: self.name.to_string(),
            });
        }
        state.leases += 1;
        Ok(Lease {
            inner: self.inner.clone(),
        })
    }

    /// Refuses new leases and blocks until every outstanding lease is returned.
    pub fn close(&self) {
        let mut state = self.inner.lock();
        state.closed = true;
        while state.leases > 0 {
            state = self
                .inner
                .released
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Number of leases currently held.
    pub fn lease_count(&self) -> usize {
        self.inner.lock().leases
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }
}

/// A lease on a [`ResourceGuard`]'s resource; returned when dropped.
#[must_use = "the lease is returned as soon as it is dropped"]
pub struct Lease {
    inner: Arc<Inner>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.leases -= 1;
        if state.leases == 0 {
            self.inner.released.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn close_waits_for_outstanding_leases() {
        let guard = ResourceGuard::new("db");
        let lease = guard.acquire().unwrap();
        let (closed_tx, closed_rx) = mpsc::channel();
        let closer = {
            let guard = guard.clone();
            std::thread::spawn(move || {
                guard.close();
                closed_tx.send(()).unwrap();
            })
        };
        // The closer marks the guard closed before waiting: wait for that, then check it
        // has not finished while the lease is held.
        while !guard.is_closed() {
            std::thread::yield_now();
        }
        assert!(
            closed_rx.try_recv().is_err(),
            "close returned while a lease was held"
        );
        let err = guard.acquire().unwrap_err();
        assert!(matches!(err, Error::Closed { .. }), "{err}");
        drop(lease);
        closed_rx.recv().unwrap();
        closer.join().unwrap();
        assert_eq!(guard.lease_count(), 0);
    }

    #[test]
    fn close_without_leases_returns_at_once() {
        let guard = ResourceGuard::new("db");
        drop(guard.acquire().unwrap());
        guard.close();
        assert!(guard.is_closed());
    }
}

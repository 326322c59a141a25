//! [`CloseableRegistry`]: closes everything registered with it when its owner closes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::{Error, Result};

/// Something that can be closed from another thread, at most once in effect: `close` takes
/// `&self` because the object is shared between its user and the registry.
pub trait Closeable: Send + Sync {
    /// Closes the object; later calls do nothing.
    fn close(&self) -> Result<()>;
}

impl<F: Fn() -> Result<()> + Send + Sync> Closeable for F {
    fn close(&self) -> Result<()> {
        self()
    }
}

/// The key of one registration, used to unregister it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegistrationKey(u64);

#[derive(Default)]
struct Inner {
    closed: bool,
    next_key: u64,
    entries: BTreeMap<u64, Arc<dyn Closeable>>,
}

/// A thread-safe set of [`Closeable`]s that are closed together. Cloning shares the registry.
///
/// A backend or task owns a registry; snapshot streams and running snapshot tasks register
/// with it, so closing the owner makes blocked stream i/o return and running tasks cancel.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use state_api::CloseableRegistry;
///
/// let registry = CloseableRegistry::default();
/// let closed = Arc::new(AtomicBool::new(false));
/// let flag = closed.clone();
/// registry.register(Arc::new(move || {
///     flag.store(true, Ordering::SeqCst);
///     Ok(())
/// }))?;
/// registry.close()?;
/// assert!(closed.load(Ordering::SeqCst));
/// assert!(registry.is_empty());
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct CloseableRegistry {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for CloseableRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = lock(&self.inner);
        f.debug_struct("CloseableRegistry")
            .field("closed", &inner.closed)
            .field("registered", &inner.entries.len())
            .finish()
    }
}

/// Locks `mutex` even if a holder panicked: the crate keeps every critical section a single
/// assignment, map or flag operation, so a poisoned lock still holds a valid value.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CloseableRegistry {
    /// Registers `closeable`. If the registry is already closed, `closeable` is closed now
    /// and [`Error::Closed`] is returned.
    pub fn register(&self, closeable: Arc<dyn Closeable>) -> Result<RegistrationKey> {
        let mut inner = lock(&self.inner);
        if inner.closed {
            drop(inner);
            closeable.close()?;
            return Err(Error::Closed {
                what: "closeable registry".into(),
            });
        }
        let key = inner.next_key;
        inner.next_key += 1;
        inner.entries.insert(key, closeable);
        Ok(RegistrationKey(key))
    }

    /// Removes a registration without closing it; returns whether it was registered.
    pub fn unregister(&self, key: RegistrationKey) -> bool {
        lock(&self.inner).entries.remove(&key.0).is_some()
    }

    /// Closes the registry and everything registered, latest registration first. All
    /// objects are closed even if some fail; the first failure is returned.
    pub fn close(&self) -> Result<()> {
        let entries = {
            let mut inner = lock(&self.inner);
            inner.closed = true;
            std::mem::take(&mut inner.entries)
        };
        let closeables = entries.into_values().rev();
        // Every object is closed; `Result::and` keeps the first failure.
        closeables.map(|c| c.close()).fold(Ok(()), Result::and)
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner).closed
    }

    /// Number of objects currently registered.
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn recorder(log: &Arc<Mutex<Vec<u32>>>, id: u32) -> Arc<dyn Closeable> {
        let log = log.clone();
        Arc::new(move || {
            log.lock().unwrap().push(id);
            Ok(())
        })
    }

    #[test]
    fn close_closes_latest_first_and_empties() {
        let registry = CloseableRegistry::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        for id in 0..3 {
            registry.register(recorder(&log, id)).unwrap();
        }
        registry.close().unwrap();
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
        assert!(registry.is_empty());
        assert!(registry.is_closed());
    }

    #[test]
    fn register_after_close_closes_argument() {
        let registry = CloseableRegistry::default();
        registry.close().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = registry.register(recorder(&log, 7)).unwrap_err();
        assert!(matches!(err, Error::Closed { .. }), "{err}");
        assert_eq!(*log.lock().unwrap(), vec![7]);
        assert!(registry.is_empty());
    }

    #[test]
    fn unregistered_object_is_not_closed() {
        let registry = CloseableRegistry::default();
        let log = Arc::new(Mutex::new(Vec::new()));
        let key = registry.register(recorder(&log, 1)).unwrap();
        assert!(registry.unregister(key));
        assert!(!registry.unregister(key));
        registry.close().unwrap();
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn close_continues_after_a_failure_and_reports_it() {
        let registry = CloseableRegistry::default();
        let closed = Arc::new(AtomicUsize::new(0));
        let counter = closed.clone();
        registry
            .register(Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }))
            .unwrap();
        registry
            .register(Arc::new(|| Err(Error::Unsupported("boom".into()))))
            .unwrap();
        let err = registry.close().unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert_eq!(closed.load(Ordering::SeqCst), 1);
    }
}

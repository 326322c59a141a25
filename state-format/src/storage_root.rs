//! [`StorageRoot`] and [`HandleScope`]: handles read back from checkpoint storage name
//! locations *relative to the storage that reads them*, and never a location outside it.
//!
//! Checkpoint metadata is data anyone who can write into the checkpoint directory (or
//! bucket) can change. A handle in it that named `/etc/passwd` or `../../elsewhere` would
//! make a restore read, and a discard delete, whatever the job's user can reach. So
//! handles that live in checkpoint storage (`state-storage-local`'s `FileStateHandle`,
//! the object storage crate's handles) hold locations relative to their storage's root
//! (`chk-<id>/<name>`, `shared/<name>`), and serialize only that: a checkpoint directory
//! restores from wherever it is copied or moved.
//!
//! Deserializing such a handle needs to know which storage reads it. Serde (and `typetag`,
//! through which handle trait objects deserialize) passes no context, so the reader enters
//! a [`HandleScope`] for the current thread around the deserialization
//! ([`metadata::from_bytes`](crate::metadata::from_bytes) does): a
//! handle resolves its relative location against the scope's root, refuses `..`, absolute
//! locations and symbolic links that leave the root, and records the typed
//! [`Error::OutsideStorage`] in the scope, which the reader returns instead of serde's
//! message. Serializing inside a scope checks that every handle belongs to the scope's
//! root, so metadata never names another storage's files by a relative location that would
//! resolve to the wrong ones.
//!
//! Metadata of format version 1 named files by absolute path. Its scope accepts absolute
//! locations ([`AbsoluteLocations::Relocated`]) when they end in the storage layout
//! (`chk-<id>/<name>` or `shared/<name>`), re-rooted under the reading storage: old
//! checkpoints restore where they are, and from a copy.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use state_api::Error;

/// The root of one checkpoint storage, as handles of that storage resolve against it: a
/// local directory (`state-storage-local`'s `LocalRoot`), an object store prefix, a
/// third-party storage's own root.
pub trait StorageRoot: Any + fmt::Debug + Send + Sync {
    /// Where the root is, for messages: a directory or a URL without credentials.
    fn describe(&self) -> String;
}

/// What a [`HandleScope`] does with handles that name an absolute location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbsoluteLocations {
    /// Refused: the metadata's format names locations relative to the root only.
    Refused,
    /// Metadata of format version 1: an absolute location is accepted when its last two
    /// parts are `chk-<id>/<name>` or `shared/<name>`, and resolved to those parts under
    /// the reading storage's root, never outside it.
    Relocated,
}

/// The storage root handles are read from or written to on the current thread.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use state_api::{Error, StateObject, StreamStateHandle};
/// use state_format::storage_root::{AbsoluteLocations, HandleScope};
/// use state_storage_local::{FileStateHandle, LocalRoot};
///
/// let dir = tempfile::tempdir().unwrap();
/// let root = Arc::new(LocalRoot::new(dir.path())?);
/// let scope = HandleScope::new(root.clone(), AbsoluteLocations::Refused);
///
/// let (handle, violation) = scope.enter(|| {
///     serde_json::from_str::<Arc<dyn StreamStateHandle>>(r#"{"file":{"path":"chk-1/a","size":3}}"#)
/// });
/// assert!(violation.is_none());
/// assert_eq!(handle.unwrap().state_size(), 3);
///
/// let (handle, violation) = scope.enter(|| {
///     serde_json::from_str::<Arc<dyn StreamStateHandle>>(r#"{"file":{"path":"../secret","size":3}}"#)
/// });
/// assert!(handle.is_err());
/// assert!(matches!(violation, Some(Error::OutsideStorage { .. })));
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Clone)]
pub struct HandleScope {
    root: Arc<dyn StorageRoot>,
    absolute: AbsoluteLocations,
}

impl fmt::Debug for HandleScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandleScope")
            .field("root", &self.root.describe())
            .field("absolute", &self.absolute)
            .finish()
    }
}

struct Current {
    scope: HandleScope,
    violation: Option<Error>,
}

thread_local! {
    static CURRENT: RefCell<Vec<Current>> = const { RefCell::new(Vec::new()) };
}

/// Leaves the scope when dropped, also when the closure panics.
struct Entered;

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| current.borrow_mut().pop());
    }
}

impl HandleScope {
    /// A scope over `root` that treats absolute locations as `absolute` says.
    pub fn new(root: Arc<dyn StorageRoot>, absolute: AbsoluteLocations) -> Self {
        HandleScope { root, absolute }
    }

    /// Runs `f` with this scope entered on the current thread; returns what `f` returned
    /// and the first violation a handle recorded ([`reject`](Self::reject)) while it ran.
    /// Scopes nest: the innermost one is current.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> (T, Option<Error>) {
        CURRENT.with(|current| {
            current.borrow_mut().push(Current {
                scope: self.clone(),
                violation: None,
            })
        });
        let entered = Entered;
        let value = f();
        let violation = CURRENT.with(|current| {
            current
                .borrow_mut()
                .last_mut()
                .and_then(|entry| entry.violation.take())
        });
        drop(entered);
        (value, violation)
    }

    /// The scope entered on the current thread, if any.
    pub fn current() -> Option<HandleScope> {
        CURRENT.with(|current| current.borrow().last().map(|entry| entry.scope.clone()))
    }

    /// The scope's root.
    pub fn root(&self) -> &Arc<dyn StorageRoot> {
        &self.root
    }

    /// The scope's root as the concrete type `R`, when it is one.
    pub fn root_as<R: StorageRoot>(&self) -> Option<Arc<R>> {
        let any: Arc<dyn Any + Send + Sync> = self.root.clone();
        any.downcast::<R>().ok()
    }

    /// What the scope does with absolute locations.
    pub fn absolute_locations(&self) -> AbsoluteLocations {
        self.absolute
    }

    /// Records `error` as the current scope's violation (the first one wins) and returns
    /// its message, for a handle's `Deserialize` or `Serialize` to fail with.
    pub fn reject(error: Error) -> String {
        let message = error.to_string();
        CURRENT.with(|current| {
            if let Some(entry) = current.borrow_mut().last_mut() {
                entry.violation.get_or_insert(error);
            }
        });
        message
    }

    /// For a handle of storage `root` being serialized: `Ok(true)` inside a scope of that
    /// same root (write the location relative to it), `Ok(false)` outside any scope, and,
    /// inside a scope of another storage, the violation's message (recorded) for
    /// `S::Error::custom`. `location` names the handle's file in the violation.
    ///
    /// # Errors
    ///
    /// The message of the recorded [`Error::OutsideStorage`].
    pub fn serializing<R: StorageRoot + PartialEq>(
        root: &R,
        location: impl FnOnce() -> String,
    ) -> Result<bool, String> {
        match HandleScope::current() {
            None => Ok(false),
            Some(scope) if scope.root_as::<R>().is_some_and(|own| *own == *root) => Ok(true),
            Some(scope) => Err(HandleScope::reject(
                scope.outside(location(), "it belongs to another checkpoint storage"),
            )),
        }
    }

    /// For a handle naming `location` being deserialized (`absolute` when it is not
    /// relative to a root): `Ok(None)` outside any scope (the handle decides what such a
    /// location means), and inside a scope of an `R` root that root and the location
    /// relative to it: re-rooted by its layout tail for format-1 metadata
    /// ([`AbsoluteLocations::Relocated`]) and checked with [`check_relative`]. `kind` names
    /// the handle kind when the scope's root is not an `R`.
    ///
    /// # Errors
    ///
    /// The message of the recorded [`Error::OutsideStorage`], for `D::Error::custom`.
    pub fn deserializing<R: StorageRoot>(
        location: &str,
        absolute: bool,
        kind: &str,
    ) -> Result<Option<(Arc<R>, String)>, String> {
        let Some(scope) = HandleScope::current() else {
            return Ok(None);
        };
        let reject = |reason: &str| HandleScope::reject(scope.outside(location, reason));
        let Some(root) = scope.root_as::<R>() else {
            return Err(reject(&format!("{kind} in storage of another kind")));
        };
        let relative = match (absolute, scope.absolute) {
            (false, _) => location.to_owned(),
            (true, AbsoluteLocations::Relocated) => layout_tail(location).ok_or_else(|| {
                reject("an absolute location that does not end in chk-<id>/<name> or shared/<name>")
            })?,
            (true, AbsoluteLocations::Refused) => {
                return Err(reject(
                    "an absolute location (handles name files relative to the storage root)",
                ));
            }
        };
        check_relative(&relative).map_err(reject)?;
        Ok(Some((root, relative)))
    }

    /// [`Error::OutsideStorage`] for `location`, found in this scope, for `reason`.
    pub fn outside(&self, location: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::OutsideStorage {
            location: location.into(),
            root: self.root.describe(),
            reason: reason.into(),
        }
    }
}

/// Checks that `location` is a location relative to a storage root that stays under it:
/// not empty, not absolute, `/`-separated parts that are none of empty, `.` or `..`, and
/// no backslash or NUL. Returns why not.
///
/// # Errors
///
/// The reason, for [`Error::OutsideStorage`].
pub fn check_relative(location: &str) -> Result<(), &'static str> {
    if location.is_empty() {
        return Err("the location is empty");
    }
    if location.starts_with('/') {
        return Err("the location is absolute");
    }
    if location.contains(['\\', '\0']) {
        return Err("the location contains a backslash or NUL");
    }
    for part in location.split('/') {
        match part {
            "" => return Err("the location has an empty part"),
            "." | ".." => return Err("the location has a `.` or `..` part"),
            _ => {}
        }
    }
    Ok(())
}

/// For format-version-1 metadata: the part of the absolute `location` that the storage
/// layout names (`chk-<id>/<name>` or `shared/<name>`), if it ends in one.
pub fn layout_tail(location: &str) -> Option<String> {
    let mut parts = location.rsplit('/');
    let name = parts.next()?;
    let directory = parts.next()?;
    let in_layout = directory == "shared"
        || directory
            .strip_prefix("chk-")
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    let tail = format!("{directory}/{name}");
    (in_layout && check_relative(&tail).is_ok()).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_locations_stay_under_the_root() {
        for good in ["chk-1/a", "shared/x.sst", "a"] {
            assert!(check_relative(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "chk-1/../../x",
            "chk-1//x",
            "./x",
            "chk-1/",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn layout_tails_of_old_absolute_paths() {
        assert_eq!(
            layout_tail("/var/ck/chk-12/abc").as_deref(),
            Some("chk-12/abc")
        );
        assert_eq!(
            layout_tail("/var/ck/shared/abc").as_deref(),
            Some("shared/abc")
        );
        for outside in [
            "/etc/passwd",
            "/tmp/x/secret",
            "/var/chk-/x",
            "/var/chk-1a/x",
            "/chk-1/..",
            "secret",
        ] {
            assert_eq!(layout_tail(outside), None, "{outside}");
        }
    }

    #[derive(Debug)]
    struct Named(&'static str);

    impl StorageRoot for Named {
        fn describe(&self) -> String {
            self.0.to_owned()
        }
    }

    #[test]
    fn scopes_nest_record_their_first_violation_and_end_on_panic() {
        let outer = HandleScope::new(Arc::new(Named("outer")), AbsoluteLocations::Refused);
        let inner = HandleScope::new(Arc::new(Named("inner")), AbsoluteLocations::Relocated);
        let ((), violation) = outer.enter(|| {
            let ((), inner_violation) = inner.enter(|| {
                let current = HandleScope::current().unwrap();
                assert_eq!(current.root().describe(), "inner");
                HandleScope::reject(current.outside("a", "first"));
                HandleScope::reject(current.outside("b", "second"));
            });
            let inner_violation = inner_violation.unwrap();
            assert!(
                inner_violation.to_string().contains("first"),
                "{inner_violation}"
            );
            assert_eq!(HandleScope::current().unwrap().root().describe(), "outer");
        });
        assert!(
            violation.is_none(),
            "the inner scope's violation stays there"
        );
        assert!(HandleScope::current().is_none());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            outer.enter(|| panic!("while reading"))
        }));
        assert!(panicked.is_err());
        assert!(HandleScope::current().is_none(), "a panic leaves the scope");
        assert!(outer.root_as::<Named>().is_some());
    }
}

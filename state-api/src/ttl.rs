//! State time-to-live: what a keyed state's registration says about expiring its entries,
//! and the clock that measures it. The stored layout and the logic are in
//! `state_format::ttl`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// When an entry of a TTL state gets a new last-access timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TtlUpdate {
    /// When it is written (put, added, updated).
    OnCreateAndWrite = 0,
    /// When it is written or read.
    OnReadAndWrite = 1,
}

/// Whether a read may return an expired entry that is still stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TtlVisibility {
    /// An expired entry is never returned (and a read removes it).
    NeverReturnExpired = 0,
    /// An expired entry is returned until a clean-up removed it.
    ReturnExpiredIfNotCleanedUp = 1,
}

/// The time-to-live of a keyed state's entries: a value, each list element or each map
/// value expires `time_to_live` milliseconds after its last access (as [`TtlUpdate`] counts
/// accesses), measured by the backend's [`TtlClock`]. Registered with
/// [`StateMetaInfo::with_ttl`](crate::StateMetaInfo::with_ttl); snapshots record it.
///
/// ```
/// use state_api::{StateTtlConfig, TtlUpdate};
///
/// let ttl = StateTtlConfig::new(60_000)?.update(TtlUpdate::OnReadAndWrite);
/// assert_eq!(ttl.time_to_live(), 60_000);
/// assert!(ttl.cleanup_in_full_snapshot && ttl.cleanup_in_compaction);
/// assert!(StateTtlConfig::new(0).is_err());
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateTtlConfig {
    time_to_live: i64,
    /// When the last-access timestamp is renewed.
    pub update: TtlUpdate,
    /// Whether reads return expired entries not yet removed.
    pub visibility: TtlVisibility,
    /// Full snapshots and savepoints leave expired entries out.
    pub cleanup_in_full_snapshot: bool,
    /// RocksDB drops expired entries when it compacts their files.
    pub cleanup_in_compaction: bool,
    /// The heap backend checks this many more entries of the state for expiry on every
    /// access to it, removing what expired; `None` checks only the entries accessed.
    pub cleanup_incrementally: Option<NonZeroU32>,
}

impl StateTtlConfig {
    /// Entries live `millis` milliseconds after their last write; expired ones are never
    /// returned and are cleaned up in full snapshots, RocksDB compactions and, five entries
    /// per access, on the heap.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless `millis` is in `1..=i64::MAX`.
    pub fn new(millis: u64) -> Result<Self> {
        match i64::try_from(millis) {
            Ok(time_to_live) if time_to_live > 0 => Ok(StateTtlConfig {
                time_to_live,
                update: TtlUpdate::OnCreateAndWrite,
                visibility: TtlVisibility::NeverReturnExpired,
                cleanup_in_full_snapshot: true,
                cleanup_in_compaction: true,
                cleanup_incrementally: NonZeroU32::new(5),
            }),
            _ => Err(Error::InvalidArgument(format!(
                "time to live of {millis} ms is outside of 1..={}",
                i64::MAX
            ))),
        }
    }

    /// The time to live in milliseconds, at least 1.
    pub fn time_to_live(&self) -> i64 {
        self.time_to_live
    }

    /// This configuration renewing timestamps on `update`.
    pub fn update(self, update: TtlUpdate) -> Self {
        StateTtlConfig { update, ..self }
    }

    /// This configuration with `visibility`.
    pub fn visibility(self, visibility: TtlVisibility) -> Self {
        StateTtlConfig { visibility, ..self }
    }

    /// Whether an entry last accessed at `last_access` has expired at `now`.
    pub fn is_expired(&self, last_access: i64, now: i64) -> bool {
        last_access.saturating_add(self.time_to_live) <= now
    }
}

/// The time TTL is measured by, in milliseconds. Backends read it through
/// [`KeyedBackendParams::clock`](crate::KeyedBackendParams::clock); tests give a clock
/// they move by hand.
pub trait TtlClock: Send + Sync + fmt::Debug {
    /// The current time in milliseconds.
    fn now(&self) -> i64;
}

/// Wall-clock time: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl TtlClock for SystemClock {
    fn now(&self) -> i64 {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
        since_epoch.map_or(0, |time| {
            i64::try_from(time.as_millis()).unwrap_or(i64::MAX)
        })
    }
}

//! Time to live of keyed state ([`StateTtlConfig`]): how a TTL state's entries are stored,
//! the backend wrapper that keeps the TTL rules on any keyed backend ([`TtlBackend`]), and
//! the snapshot transformer full snapshots apply ([`transform`]).
//!
//! # Layout
//!
//! A stored value of a TTL state is the user's bytes followed by their last-access
//! timestamp, an `i64` of 8 big-endian bytes, in the milliseconds of the backend's
//! [`TtlClock`]:
//!
//! | state kind | what carries a timestamp |
//! | --- | --- |
//! | value | the value |
//! | list | each element (the list value is [`encode_list`] of the stamped elements) |
//! | map | each map value (user keys are unchanged) |
//!
//! Keys never change, so a TTL state is stored, snapshotted, rescaled and restored by every
//! backend and strategy as any other state; the keyed header records which states have a
//! time to live ([`crate::proxy`], version 5), and restore refuses to read such a state as
//! one without (and back) with [`Error::Incompatible`]. Priority-queue states have no time
//! to live.
//!
//! An entry last accessed at `t` has expired at `now` when `t + time_to_live <= now`
//! ([`StateTtlConfig::is_expired`]).
//!
//! # Where expired entries go
//!
//! - Reads through a [`TtlBackend`] never return an expired entry under
//!   [`TtlVisibility::NeverReturnExpired`], and remove what they find expired.
//! - Full snapshots and savepoints leave expired entries out when the state's
//!   `cleanup_in_full_snapshot` is set: values and map entries whole, list elements one by
//!   one ([`transform`], applied by the canonical writer).
//! - RocksDB drops them while compacting when `cleanup_in_compaction` is set ([`stored_expiry`]
//!   is what its compaction filter asks).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use state_api::{
    CheckpointId, CheckpointListener, CheckpointStreamFactory, Error, KeyGroup, KeyGroupRange,
    KeyedSnapshotResult, KeyedStateBackend, MaxParallelism, Result, SnapshotRequest, StateKind,
    StateMetaInfo, StateTtlConfig, Timer, TtlClock, TtlUpdate, TtlVisibility,
};

use crate::keyed_format::{decode_list, encode_list};

/// Bytes of the last-access timestamp at the end of every stored TTL value.
pub const TIMESTAMP_BYTES: usize = 8;

/// `value` stamped with last-access time `now`: what a TTL state stores.
pub fn stamp(value: &[u8], now: i64) -> Vec<u8> {
    let mut stored = Vec::with_capacity(value.len() + TIMESTAMP_BYTES);
    stored.extend_from_slice(value);
    stored.extend_from_slice(&now.to_be_bytes());
    stored
}

/// The user's bytes and the last-access timestamp of a stored TTL value.
///
/// # Errors
///
/// [`Error::Corrupted`] for a value shorter than its timestamp.
pub fn split(stored: &[u8]) -> Result<(&[u8], i64)> {
    match stored.split_last_chunk::<TIMESTAMP_BYTES>() {
        Some((value, timestamp)) => Ok((value, i64::from_be_bytes(*timestamp))),
        None => Err(Error::Corrupted {
            what: "value of a state with a time to live".into(),
            reason: format!(
                "{} bytes cannot hold its {TIMESTAMP_BYTES}-byte timestamp",
                stored.len()
            ),
        }),
    }
}

/// What a full snapshot writes at `now` of `stored`, a value of TTL state `kind`: `None`
/// when it expired (a value, a map value, or a list whose elements all expired), the list
/// without its expired elements, or `stored` itself.
///
/// # Errors
///
/// [`Error::Corrupted`] for a value or list element without its timestamp.
pub fn transform<'a>(
    kind: StateKind,
    ttl: &StateTtlConfig,
    now: i64,
    stored: &'a [u8],
) -> Result<Option<Cow<'a, [u8]>>> {
    if kind != StateKind::List {
        let (_, last_access) = split(stored)?;
        return Ok((!ttl.is_expired(last_access, now)).then_some(Cow::Borrowed(stored)));
    }
    let elements = decode_list(stored)?;
    let mut fresh = Vec::with_capacity(elements.len());
    for element in &elements {
        if !ttl.is_expired(split(element)?.1, now) {
            fresh.push(*element);
        }
    }
    Ok(match fresh.len() {
        0 => None,
        kept if kept == elements.len() => Some(Cow::Borrowed(stored)),
        _ => {
            let mut list = Vec::with_capacity(stored.len());
            encode_list(fresh, &mut list)?;
            Some(Cow::Owned(list))
        }
    })
}

/// When `stored`, a value of TTL state `kind`, expires as a whole: its timestamp plus the
/// time to live, for a list its latest element's; `None` for bytes that are no TTL value
/// (left alone by a compaction filter).
pub fn stored_expiry(kind: StateKind, ttl: &StateTtlConfig, stored: &[u8]) -> Option<i64> {
    let last_access = match kind {
        StateKind::List => decode_list(stored)
            .ok()?
            .into_iter()
            .map(|element| split(element).map(|(_, timestamp)| timestamp).ok())
            .try_fold(i64::MIN, |latest, timestamp| Some(latest.max(timestamp?)))?,
        _ => split(stored).ok()?.1,
    };
    Some(last_access.saturating_add(ttl.time_to_live()))
}

/// Checks that `value`, read from a snapshot for state `meta`, carries timestamps where its
/// time to live says.
///
/// # Errors
///
/// [`Error::Corrupted`] naming the state.
pub fn check_stored(meta: &StateMetaInfo, value: &[u8]) -> Result<()> {
    let Some(ttl) = &meta.ttl else {
        return Ok(());
    };
    transform(meta.kind, ttl, i64::MIN, value)
        .map(drop)
        .map_err(|err| Error::Corrupted {
            what: format!(
                "entry of {} state `{}` with a time to live",
                meta.kind, meta.name
            ),
            reason: err.to_string(),
        })
}

/// A clock that stands still until moved: tests and replays measure time to live with it.
///
/// ```
/// use state_api::TtlClock;
/// use state_format::ttl::ManualClock;
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(500);
/// assert_eq!(clock.now(), 1_500);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: i64) -> Self {
        ManualClock(AtomicI64::new(now))
    }

    /// Sets the time to `now`.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time on by `millis`.
    pub fn advance(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl TtlClock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A keyed backend that keeps the time-to-live rules of its states: it stamps what is
/// written with the clock's time, and checks, renews and cleans up what is read, as each
/// state's [`StateTtlConfig`] says. States without a time to live pass straight through.
///
/// Backends registered through [`KeyedStateBackendConstructors`](crate::KeyedStateBackendConstructors)
/// are wrapped in it, so every backend, a third party's too, offers TTL states by the same
/// rules. `keys` lists keys whatever their entries' age.
#[derive(Debug)]
pub struct TtlBackend<B> {
    /// Reads may write: renewing a timestamp, removing what expired.
    inner: RefCell<B>,
    /// The wrapped backend's name.
    name: String,
    clock: Arc<dyn TtlClock>,
    /// The time to live of every registered state that has one.
    ttl: HashMap<String, StateTtlConfig>,
}

impl<B: KeyedStateBackend> TtlBackend<B> {
    /// `inner`, keeping the time to live of the states it holds by `clock`.
    pub fn new(inner: B, clock: Arc<dyn TtlClock>) -> Self {
        let ttl = inner
            .states()
            .into_iter()
            .filter_map(|state| Some((state.name, state.ttl?)))
            .collect();
        TtlBackend {
            name: inner.backend_name().to_owned(),
            inner: RefCell::new(inner),
            clock,
            ttl,
        }
    }

    /// The wrapped backend. Drop the guard before the next call to this backend: reads
    /// write back through it.
    pub fn inner(&self) -> std::cell::Ref<'_, B> {
        self.inner.borrow()
    }

    /// The time to live of `state`, if it has one.
    fn ttl_of(&self, state: &str) -> Option<StateTtlConfig> {
        match self.ttl.is_empty() {
            true => None,
            false => self.ttl.get(state).copied(),
        }
    }

    /// What a read of `stored` at `now` returns, and what it writes back.
    fn read_one(
        ttl: &StateTtlConfig,
        now: i64,
        stored: &[u8],
    ) -> Result<(Option<Vec<u8>>, Option<WriteBack>)> {
        let (value, last_access) = split(stored)?;
        if ttl.is_expired(last_access, now) {
            let visible = ttl.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp;
            return Ok((visible.then(|| value.to_vec()), Some(WriteBack::Remove)));
        }
        let renew = ttl.update == TtlUpdate::OnReadAndWrite && last_access != now;
        let renewed = renew.then(|| WriteBack::Renew(stamp(value, now)));
        Ok((Some(value.to_vec()), renewed))
    }
}

/// What a read writes back to the entry it read.
enum WriteBack {
    /// The entry with a new last-access timestamp.
    Renew(Vec<u8>),
    /// Nothing: the entry expired.
    Remove,
}

impl<B: KeyedStateBackend> CheckpointListener for TtlBackend<B> {
    fn notify_checkpoint_complete(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        self.inner
            .get_mut()
            .notify_checkpoint_complete(checkpoint_id)
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        self.inner
            .get_mut()
            .notify_checkpoint_aborted(checkpoint_id)
    }
}

impl<B: KeyedStateBackend> KeyedStateBackend for TtlBackend<B> {
    fn backend_name(&self) -> &str {
        &self.name
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.inner.borrow().key_group_range()
    }

    fn max_parallelism(&self) -> MaxParallelism {
        self.inner.borrow().max_parallelism()
    }

    fn register_state(&mut self, meta: &StateMetaInfo) -> Result<()> {
        if meta.ttl.is_some() && meta.kind == StateKind::PriorityQueue {
            return Err(Error::InvalidArgument(format!(
                "priority-queue state `{}` cannot have a time to live: timers fire, they do not expire",
                meta.name
            )));
        }
        self.inner.get_mut().register_state(meta)?;
        match meta.ttl {
            Some(ttl) => self.ttl.insert(meta.name.clone(), ttl),
            None => self.ttl.remove(&meta.name),
        };
        Ok(())
    }

    fn states(&self) -> Vec<StateMetaInfo> {
        self.inner.borrow().states()
    }

    fn set_current_key(&mut self, key: &[u8]) -> Result<()> {
        self.inner.get_mut().set_current_key(key)
    }

    fn value(&self, state: &str, namespace: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(ttl) = self.ttl_of(state) else {
            return self.inner.borrow().value(state, namespace);
        };
        let Some(stored) = self.inner.borrow().value(state, namespace)? else {
            return Ok(None);
        };
        let (value, write_back) = Self::read_one(&ttl, self.clock.now(), &stored)?;
        let mut inner = self.inner.borrow_mut();
        match write_back {
            Some(WriteBack::Renew(renewed)) => inner.put_value(state, namespace, &renewed)?,
            Some(WriteBack::Remove) => inner.clear(state, namespace)?,
            None => {}
        }
        Ok(value)
    }

    fn put_value(&mut self, state: &str, namespace: &[u8], value: &[u8]) -> Result<()> {
        let inner = self.inner.get_mut();
        match self.ttl.get(state) {
            None => inner.put_value(state, namespace, value),
            Some(_) => inner.put_value(state, namespace, &stamp(value, self.clock.now())),
        }
    }

    fn list(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Some(ttl) = self.ttl_of(state) else {
            return self.inner.borrow().list(state, namespace);
        };
        let stored = self.inner.borrow().list(state, namespace)?;
        let now = self.clock.now();
        let (mut visible, mut kept, mut changed) = (Vec::new(), Vec::new(), false);
        for element in &stored {
            let (value, write_back) = Self::read_one(&ttl, now, element)?;
            visible.extend(value);
            changed |= write_back.is_some();
            match write_back {
                None => kept.push(element.clone()),
                Some(WriteBack::Renew(renewed)) => kept.push(renewed),
                Some(WriteBack::Remove) => {}
            }
        }
        if changed {
            self.inner
                .borrow_mut()
                .update_list(state, namespace, &kept)?;
        }
        Ok(visible)
    }

    fn append_to_list(&mut self, state: &str, namespace: &[u8], element: &[u8]) -> Result<()> {
        let inner = self.inner.get_mut();
        match self.ttl.get(state) {
            None => inner.append_to_list(state, namespace, element),
            Some(_) => inner.append_to_list(state, namespace, &stamp(element, self.clock.now())),
        }
    }

    fn update_list(&mut self, state: &str, namespace: &[u8], elements: &[Vec<u8>]) -> Result<()> {
        let inner = self.inner.get_mut();
        if !self.ttl.contains_key(state) {
            return inner.update_list(state, namespace, elements);
        }
        let now = self.clock.now();
        let stamped: Vec<Vec<u8>> = elements.iter().map(|e| stamp(e, now)).collect();
        inner.update_list(state, namespace, &stamped)
    }

    fn map_value(&self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(ttl) = self.ttl_of(state) else {
            return self.inner.borrow().map_value(state, namespace, user_key);
        };
        let Some(stored) = self.inner.borrow().map_value(state, namespace, user_key)? else {
            return Ok(None);
        };
        let (value, write_back) = Self::read_one(&ttl, self.clock.now(), &stored)?;
        let mut inner = self.inner.borrow_mut();
        match write_back {
            Some(WriteBack::Renew(renewed)) => {
                inner.put_map_value(state, namespace, user_key, &renewed)?;
            }
            Some(WriteBack::Remove) => inner.remove_map_value(state, namespace, user_key)?,
            None => {}
        }
        Ok(value)
    }

    fn put_map_value(
        &mut self,
        state: &str,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let inner = self.inner.get_mut();
        match self.ttl.get(state) {
            None => inner.put_map_value(state, namespace, user_key, value),
            Some(_) => {
                let stored = stamp(value, self.clock.now());
                inner.put_map_value(state, namespace, user_key, &stored)
            }
        }
    }

    fn remove_map_value(&mut self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<()> {
        self.inner
            .get_mut()
            .remove_map_value(state, namespace, user_key)
    }

    fn map_entries(&self, state: &str, namespace: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(ttl) = self.ttl_of(state) else {
            return self.inner.borrow().map_entries(state, namespace);
        };
        let stored = self.inner.borrow().map_entries(state, namespace)?;
        let now = self.clock.now();
        let mut entries = Vec::with_capacity(stored.len());
        let mut write_backs = Vec::new();
        for (user_key, stored) in stored {
            let (value, write_back) = Self::read_one(&ttl, now, &stored)?;
            if let Some(value) = value {
                entries.push((user_key.clone(), value));
            }
            if let Some(write_back) = write_back {
                write_backs.push((user_key, write_back));
            }
        }
        let mut inner = self.inner.borrow_mut();
        for (user_key, write_back) in write_backs {
            match write_back {
                WriteBack::Renew(renewed) => {
                    inner.put_map_value(state, namespace, &user_key, &renewed)?;
                }
                WriteBack::Remove => inner.remove_map_value(state, namespace, &user_key)?,
            }
        }
        Ok(entries)
    }

    fn clear(&mut self, state: &str, namespace: &[u8]) -> Result<()> {
        self.inner.get_mut().clear(state, namespace)
    }

    fn keys(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.inner.borrow().keys(state, namespace)
    }

    fn add_timer(&mut self, state: &str, timer: &Timer) -> Result<bool> {
        self.inner.get_mut().add_timer(state, timer)
    }

    fn remove_timer(&mut self, state: &str, timer: &Timer) -> Result<bool> {
        self.inner.get_mut().remove_timer(state, timer)
    }

    fn peek_timer(&self, state: &str) -> Result<Option<Timer>> {
        self.inner.borrow().peek_timer(state)
    }

    fn poll_timers(&mut self, state: &str, until: i64, limit: usize) -> Result<Vec<Timer>> {
        self.inner.get_mut().poll_timers(state, until, limit)
    }

    fn timer_count(&self, state: &str) -> Result<usize> {
        self.inner.borrow().timer_count(state)
    }

    fn timers_of(&self, state: &str, key_group: KeyGroup) -> Result<Vec<Timer>> {
        self.inner.borrow().timers_of(state, key_group)
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<state_api::AsyncSnapshotTask<KeyedSnapshotResult>> {
        self.inner.get_mut().snapshot(request, factory)
    }

    fn pending_snapshots(&self) -> usize {
        self.inner.borrow().pending_snapshots()
    }

    fn close(&mut self) -> Result<()> {
        self.inner.get_mut().close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl() -> StateTtlConfig {
        StateTtlConfig::new(100).expect("a positive time to live")
    }

    fn list(elements: &[(&[u8], i64)]) -> Vec<u8> {
        let stamped: Vec<Vec<u8>> = elements.iter().map(|(e, at)| stamp(e, *at)).collect();
        let mut list = Vec::new();
        encode_list(stamped.iter().map(Vec::as_slice), &mut list).expect("small elements");
        list
    }

    #[test]
    fn a_stamp_is_the_value_then_eight_big_endian_bytes() {
        let stored = stamp(b"abc", 0x0102_0304_0506_0708);
        assert_eq!(stored, b"abc\x01\x02\x03\x04\x05\x06\x07\x08");
        assert_eq!(
            split(&stored).expect("stamped"),
            (&b"abc"[..], 0x0102_0304_0506_0708)
        );
        assert_eq!(split(&stamp(b"", -1)).expect("stamped"), (&b""[..], -1));
        let err = split(b"short").expect_err("no room for a timestamp");
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    }

    #[test]
    fn values_are_kept_until_their_expiry_and_left_out_from_it() {
        let stored = stamp(b"v", 1000);
        for kind in [StateKind::Value, StateKind::Map] {
            let kept = transform(kind, &ttl(), 1099, &stored).expect("stamped");
            assert_eq!(kept.as_deref(), Some(&stored[..]));
            assert_eq!(
                transform(kind, &ttl(), 1100, &stored).expect("stamped"),
                None
            );
        }
        assert_eq!(stored_expiry(StateKind::Value, &ttl(), &stored), Some(1100));
        assert_eq!(stored_expiry(StateKind::Value, &ttl(), b"x"), None);
    }

    #[test]
    fn list_elements_are_left_out_one_by_one() {
        let stored = list(&[(b"a", 1000), (b"b", 1050), (b"c", 1001)]);
        let whole = transform(StateKind::List, &ttl(), 1099, &stored).expect("stamped");
        assert!(
            matches!(whole, Some(Cow::Borrowed(_))),
            "nothing expired: no copy"
        );
        let kept = transform(StateKind::List, &ttl(), 1101, &stored).expect("stamped");
        assert_eq!(kept.as_deref(), Some(&list(&[(b"b", 1050)])[..]));
        assert_eq!(
            transform(StateKind::List, &ttl(), 1150, &stored).expect("ok"),
            None
        );
        assert_eq!(stored_expiry(StateKind::List, &ttl(), &stored), Some(1150));
        let unstamped = list(&[(b"", 0)])[..4 + 4].to_vec();
        let err = transform(StateKind::List, &ttl(), 0, &unstamped).expect_err("no stamp");
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    }

    #[test]
    fn restored_values_without_their_timestamps_are_corrupted() {
        let meta = StateMetaInfo::map("m", "void", "bytes", "bytes").with_ttl(ttl());
        check_stored(&meta, &stamp(b"v", 5)).expect("a stamped value");
        let err = check_stored(&meta, b"v").expect_err("no timestamp");
        assert!(err.to_string().contains("`m`"), "{err}");
        check_stored(&StateMetaInfo::map("m", "void", "bytes", "bytes"), b"v").expect("no ttl");
    }

    #[test]
    fn expiry_saturates_at_the_end_of_time() {
        assert!(!ttl().is_expired(i64::MAX - 10, i64::MAX - 1));
        assert!(ttl().is_expired(i64::MIN, i64::MIN + 100));
    }
}

//! State with a time to live, measured by a manual clock: what reads return as entries
//! expire, what snapshots keep, and which registrations a restore refuses.

use std::collections::BTreeMap;
use std::sync::Arc;

use state_api::{
    CheckpointId, CheckpointOptions, Error, KeyGroupRange, KeyedStateBackend, KeyedStateHandle,
    StateMetaInfo, StateTtlConfig, TtlUpdate, TtlVisibility,
};
use state_format::ttl::ManualClock;

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{TestBed, full_range, key_group, keys_covering, range_of, show};
use crate::support::KitStorage;

/// When the contract starts, in the clock's milliseconds.
const T0: i64 = 1_000_000;
/// The time to live of every TTL state, in milliseconds.
const TTL: u64 = 1000;

// A value, a list and a map state with a time to live; a value state renewed by reads; a
// value state whose expired values are returned until cleaned up; one without.
const VALUE: &str = "ttl-value";
const LIST: &str = "ttl-list";
const MAP: &str = "ttl-map";
const READ: &str = "ttl-renewed-by-reads";
const VISIBLE: &str = "ttl-visible-until-cleaned";
const PLAIN: &str = "no-ttl";

/// A time to live of [`TTL`] without the heap's incremental clean-up, so that what reads
/// find depends on the clock alone (the clean-up has tests of its own in `state-heap`).
fn ttl() -> StateTtlConfig {
    let mut ttl = StateTtlConfig::new(TTL).expect("invariant: a positive time to live");
    ttl.cleanup_incrementally = None;
    ttl
}

fn states() -> [StateMetaInfo; 6] {
    let read = ttl().update(TtlUpdate::OnReadAndWrite);
    let visible = ttl().visibility(TtlVisibility::ReturnExpiredIfNotCleanedUp);
    [
        StateMetaInfo::value(VALUE, "bytes", "bytes").with_ttl(ttl()),
        StateMetaInfo::list(LIST, "bytes", "bytes").with_ttl(ttl()),
        StateMetaInfo::map(MAP, "bytes", "bytes", "bytes").with_ttl(ttl()),
        StateMetaInfo::value(READ, "bytes", "bytes").with_ttl(read),
        StateMetaInfo::value(VISIBLE, "bytes", "bytes").with_ttl(visible),
        StateMetaInfo::value(PLAIN, "bytes", "bytes"),
    ]
}

/// Entries of a state with a time to live expire `time_to_live` after their last access,
/// by the clock in the backend's parameters:
///
/// - a value, each list element and each map value written at `t` is returned up to
///   `t + ttl - 1` and never from `t + ttl` on (`NeverReturnExpired`); writing again
///   renews it, and with `OnReadAndWrite` so does reading; a state without a time to live
///   keeps everything;
/// - with `ReturnExpiredIfNotCleanedUp`, an expired value is returned by the read that
///   finds it, which removes it;
/// - a savepoint leaves out what expired at its synchronous part (so it is smaller than
///   one taken a millisecond earlier), and nothing expired comes back from it even where
///   expired values would be visible; a checkpoint of the target's strategy restores so
///   that reads return exactly what the live backend returns;
/// - restored into 3 instances (with `rescaling`), each key's entries keep their timestamps;
/// - a restore refuses a state with a time to live registered without one, and back, with
///   [`Error::Incompatible`]; another time to live is taken; a priority-queue state with a
///   time to live is [`Error::InvalidArgument`].
pub fn ttl_contract(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "ttl");
    let clock = Arc::new(ManualClock::new(T0));
    let mut live = create(&bed, &clock);
    let keys = keys_covering(full_range(), 2);
    write(&bed, &mut *live, &keys, &clock);

    let storage = bed.storage("ttl", None);
    clock.set(T0 + TTL as i64 - 1);
    let before = savepoint(&bed, &mut *live, &storage, 1);
    clock.set(T0 + TTL as i64);
    let after = savepoint(&bed, &mut *live, &storage, 2);
    let checkpoint = bed.handle(&bed.snapshot(&mut *live, &storage, CheckpointId::new(3)));
    assert!(
        after.state_size() < before.state_size(),
        "{}: a savepoint after half the entries expired holds {} bytes, one a millisecond before {}: expired entries must be left out",
        bed.label,
        after.state_size(),
        before.state_size()
    );

    // The live backend cleaned nothing up yet: its first reads see expired visible values.
    check(&bed, &mut *live, &keys, "the live backend", Some(false));
    let restored = |handle| restore(&bed, &clock, handle, &states());
    check(
        &bed,
        &mut *restored(&after),
        &keys,
        "the savepoint",
        Some(true),
    );
    // Incremental strategies copy what they hold; full ones leave expired entries out.
    check(
        &bed,
        &mut *restored(&checkpoint),
        &keys,
        "the checkpoint",
        None,
    );
    if target.capabilities.rescaling {
        rescaled(&bed, &clock, &after, &keys);
    }
    let mut restored = restore(&bed, &clock, &after, &states());
    later(&bed, &mut *restored, &keys, &clock);
    refused(&bed, &clock, &after);
}

fn create(bed: &TestBed<'_>, clock: &Arc<ManualClock>) -> Box<dyn KeyedStateBackend> {
    let mut params = bed.params(full_range());
    params.clock = clock.clone();
    let mut backend = bed.ok(bed.try_create(params), "creating a backend");
    for meta in states() {
        bed.ok(
            backend.register_state(&meta),
            format_args!("registering `{}`", meta.name),
        );
    }
    backend
}

fn restore(
    bed: &TestBed<'_>,
    clock: &Arc<ManualClock>,
    handle: &Arc<dyn KeyedStateHandle>,
    states: &[StateMetaInfo],
) -> Box<dyn KeyedStateBackend> {
    bed.ok(try_restore(bed, clock, handle, states), "restoring")
}

fn try_restore(
    bed: &TestBed<'_>,
    clock: &Arc<ManualClock>,
    handle: &Arc<dyn KeyedStateHandle>,
    states: &[StateMetaInfo],
) -> state_api::Result<Box<dyn KeyedStateBackend>> {
    try_restore_range(bed, clock, handle, states, full_range())
}

fn try_restore_range(
    bed: &TestBed<'_>,
    clock: &Arc<ManualClock>,
    handle: &Arc<dyn KeyedStateHandle>,
    states: &[StateMetaInfo],
    range: KeyGroupRange,
) -> state_api::Result<Box<dyn KeyedStateBackend>> {
    let mut params = bed.params(range);
    params.clock = clock.clone();
    let mut backend = bed.try_restore(params, std::slice::from_ref(handle), "a TTL snapshot")?;
    for meta in states {
        backend.register_state(meta)?;
    }
    Ok(backend)
}

fn savepoint(
    bed: &TestBed<'_>,
    backend: &mut dyn KeyedStateBackend,
    storage: &KitStorage,
    id: u64,
) -> Arc<dyn KeyedStateHandle> {
    let options = CheckpointOptions::savepoint();
    bed.handle(&bed.snapshot_with(backend, storage, CheckpointId::new(id), &options))
}

/// Every key gets each state's entries at `T0`; every even key is read at `T0 + 500` (only
/// [`READ`] renews on reads) and written again at `T0 + 600`.
fn write(
    bed: &TestBed<'_>,
    backend: &mut dyn KeyedStateBackend,
    keys: &[Vec<u8>],
    clock: &ManualClock,
) {
    for key in keys {
        bed.ok(backend.set_current_key(key), "setting a key");
        for state in [VALUE, READ, VISIBLE, PLAIN] {
            bed.ok(backend.put_value(state, b"", b"old"), "putting a value");
        }
        bed.ok(backend.append_to_list(LIST, b"", b"a"), "appending");
        bed.ok(
            backend.put_map_value(MAP, b"", b"u1", b"x"),
            "putting a map value",
        );
    }
    clock.set(T0 + 500);
    for key in keys.iter().step_by(2) {
        bed.ok(backend.set_current_key(key), "setting a key");
        for state in [VALUE, READ, VISIBLE] {
            let value = bed.ok(backend.value(state, b""), "reading a value");
            assert_eq!(
                value.as_deref(),
                Some(&b"old"[..]),
                "{}: `{state}` of {} before it expired",
                bed.label,
                show(key)
            );
        }
    }
    clock.set(T0 + 600);
    for key in keys.iter().step_by(2) {
        bed.ok(backend.set_current_key(key), "setting a key");
        for state in [VALUE, VISIBLE] {
            bed.ok(backend.put_value(state, b"", b"new"), "putting a value");
        }
        bed.ok(backend.append_to_list(LIST, b"", b"b"), "appending");
        bed.ok(
            backend.put_map_value(MAP, b"", b"u2", b"y"),
            "putting a map value",
        );
    }
}

/// At `T0 + TTL`, what was last accessed at `T0` expired, the rest did not: even keys keep
/// their second writes (and [`READ`] its value), odd keys only [`PLAIN`]. `cleaned` says
/// whether expired [`VISIBLE`] values are gone (the snapshot left them out) or the first
/// read returns them; `None` allows either.
fn check(
    bed: &TestBed<'_>,
    backend: &mut dyn KeyedStateBackend,
    keys: &[Vec<u8>],
    what: &str,
    cleaned: Option<bool>,
) {
    for (index, key) in keys.iter().enumerate() {
        let even = index % 2 == 0;
        let case = format!("{}: {what}: key {} at T0 + {TTL}", bed.label, show(key));
        bed.ok(backend.set_current_key(key), "setting a key");
        let value = |state: &str| bed.ok(backend.value(state, b""), "reading a value");
        let fresh = |value: &[u8]| Some(value.to_vec()).filter(|_| even);
        assert_eq!(value(VALUE), fresh(b"new"), "{case}: `{VALUE}`");
        assert_eq!(
            value(READ),
            fresh(b"old"),
            "{case}: `{READ}` (read at T0 + 500)"
        );
        assert_eq!(
            value(PLAIN),
            Some(b"old".to_vec()),
            "{case}: `{PLAIN}` never expires"
        );
        let first = value(VISIBLE);
        let visible = match (even, cleaned) {
            (true, _) => Some(b"new".to_vec()),
            (false, Some(true)) => None,
            (false, Some(false)) => Some(b"old".to_vec()),
            (false, None) => first.clone().filter(|old| old == b"old"),
        };
        assert_eq!(first, visible, "{case}: `{VISIBLE}`, first read");
        assert_eq!(
            value(VISIBLE),
            fresh(b"new"),
            "{case}: `{VISIBLE}`, second read"
        );
        let list = bed.ok(backend.list(LIST, b""), "reading a list");
        let expected: Vec<Vec<u8>> = fresh(b"b").into_iter().collect();
        assert_eq!(
            list, expected,
            "{case}: `{LIST}` keeps the elements added at T0 + 600"
        );
        let map: BTreeMap<Vec<u8>, Vec<u8>> = bed
            .ok(backend.map_entries(MAP, b""), "reading a map")
            .into_iter()
            .collect();
        let expected: BTreeMap<Vec<u8>, Vec<u8>> = fresh(b"y")
            .map(|y| (b"u2".to_vec(), y))
            .into_iter()
            .collect();
        assert_eq!(map, expected, "{case}: `{MAP}` entries");
        let u1 = bed.ok(backend.map_value(MAP, b"", b"u1"), "reading a map value");
        assert_eq!(u1, None, "{case}: `{MAP}` value put at T0");
    }
}

/// The savepoint restored into 3 instances: each key's entries are in the instance of its
/// key group, with their timestamps, so what expired stays expired and the rest lives.
fn rescaled(
    bed: &TestBed<'_>,
    clock: &Arc<ManualClock>,
    handle: &Arc<dyn KeyedStateHandle>,
    keys: &[Vec<u8>],
) {
    let mut instances: Vec<Box<dyn KeyedStateBackend>> = (0..3)
        .map(|index| {
            let range = range_of(bed, 3, index);
            let outcome = try_restore_range(bed, clock, handle, &states(), range);
            bed.ok(outcome, format_args!("restoring instance {index} of 3"))
        })
        .collect();
    for (index, key) in keys.iter().enumerate() {
        let case = format!("{}: instance of 3 holding key {}", bed.label, show(key));
        let owner = instances
            .iter_mut()
            .find(|instance| instance.key_group_range().contains(key_group(key)))
            .unwrap_or_else(|| panic!("{case}: no instance owns its key group"));
        bed.ok(owner.set_current_key(key), "setting a key");
        let value = bed.ok(owner.value(VALUE, b""), "reading a value");
        let expected = Some(b"new".to_vec()).filter(|_| index % 2 == 0);
        assert_eq!(value, expected, "{case}: `{VALUE}` at T0 + {TTL}");
        let list = bed.ok(owner.list(LIST, b""), "reading a list");
        let expected: Vec<Vec<u8>> = expected.map(|_| b"b".to_vec()).into_iter().collect();
        assert_eq!(list, expected, "{case}: `{LIST}` at T0 + {TTL}");
    }
}

/// Later, a backend restored from the savepoint: at `T0 + 1600` the second writes expired
/// too, unless the state was registered again with a longer time to live.
fn later(
    bed: &TestBed<'_>,
    backend: &mut dyn KeyedStateBackend,
    keys: &[Vec<u8>],
    clock: &ManualClock,
) {
    let mut longer = StateTtlConfig::new(10 * TTL).expect("invariant: a positive time to live");
    longer.cleanup_incrementally = None;
    let meta = StateMetaInfo::list(LIST, "bytes", "bytes").with_ttl(longer);
    bed.ok(
        backend.register_state(&meta),
        "registering a list with a longer time to live",
    );
    clock.set(T0 + 1600);
    for (index, key) in keys.iter().enumerate() {
        let case = format!("{}: restored: key {} at T0 + 1600", bed.label, show(key));
        bed.ok(backend.set_current_key(key), "setting a key");
        let value = bed.ok(backend.value(VALUE, b""), "reading a value");
        assert_eq!(value, None, "{case}: `{VALUE}` written at T0 + 600 expired");
        let list = bed.ok(backend.list(LIST, b""), "reading a list");
        let expected: Vec<Vec<u8>> = match index % 2 {
            0 => vec![b"b".to_vec()],
            _ => Vec::new(),
        };
        assert_eq!(list, expected, "{case}: `{LIST}` lives {} ms now", 10 * TTL);
        let plain = bed.ok(backend.value(PLAIN, b""), "reading a value");
        assert_eq!(plain.as_deref(), Some(&b"old"[..]), "{case}: `{PLAIN}`");
    }
}

/// Restores that register a state with a time to live without one, or back, fail with
/// `Incompatible`; so does the live registration; a timer state cannot have one.
fn refused(bed: &TestBed<'_>, clock: &Arc<ManualClock>, handle: &Arc<dyn KeyedStateHandle>) {
    let without = StateMetaInfo::value(VALUE, "bytes", "bytes");
    let with = StateMetaInfo::value(PLAIN, "bytes", "bytes").with_ttl(ttl());
    for (meta, case) in [
        (without, "without its time to live"),
        (with, "with a time to live"),
    ] {
        let outcome = try_restore(bed, clock, handle, std::slice::from_ref(&meta));
        match outcome {
            Err(Error::Incompatible { .. }) => {}
            Err(err) => panic!(
                "{}: `{}` registered {case}: {err}, expected Incompatible",
                bed.label, meta.name
            ),
            Ok(_) => panic!(
                "{}: `{}` registered {case} was accepted after a restore",
                bed.label, meta.name
            ),
        }
    }
    let mut backend = create(bed, clock);
    let again = StateMetaInfo::map(MAP, "bytes", "bytes", "bytes");
    let outcome = backend.register_state(&again);
    assert!(
        matches!(outcome, Err(Error::Incompatible { .. })),
        "{}: `{MAP}` registered again without its time to live: {outcome:?}",
        bed.label
    );
    let timers = StateMetaInfo::priority_queue("ttl-timers", "bytes").with_ttl(ttl());
    let outcome = backend.register_state(&timers);
    assert!(
        matches!(outcome, Err(Error::InvalidArgument(_))),
        "{}: a priority-queue state with a time to live: {outcome:?}",
        bed.label
    );
}

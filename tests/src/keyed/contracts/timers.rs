//! Priority-queue (timer) state on one instance: set semantics, peek, poll with a watermark
//! and a limit, counts and per-key-group listings, wrong-kind use, and timers through
//! checkpoints and savepoints.

use std::sync::Arc;

use state_api::{
    CheckpointId, CheckpointOptions, Error, KeyedStateBackend, Result, SnapshotRequest, Timer,
};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{
    ATTRIBUTES, COUNT, EVENT_TIMERS, EVENTS, PROCESSING_TIMERS, RetainedHandles, TestBed,
    assert_out_of_range, full_range, key_group, keys_covering, range_of, show_timer, timer,
    timer_states, write_timers,
};
use crate::keyed::model::Model;

/// A priority-queue state holds each [`Timer`] once and hands them out earliest first:
///
/// - `add_timer` is `true` only for a timer the queue does not hold (timers differing in
///   timestamp, key or namespace alone are distinct; queues are independent), `remove_timer`
///   only for one it holds; `timer_count`, `timers_of` every key group (earliest first) and
///   `peek_timer` (one of the earliest) agree with what was added and removed, at
///   `i64::MIN`, `i64::MAX` and negative timestamps too, with many keys sharing a timestamp;
/// - `poll_timers(until, limit)` removes and returns the earliest timers due at `until`,
///   at most `limit` of them (none for a limit of 0 or a watermark before the earliest);
/// - a timer of a key of another instance's key groups is [`Error::KeyGroupOutOfRange`]; a
///   priority queue used as value, list or map state (or by `clear` and `keys`), and such a
///   state used as a queue, is [`Error::Incompatible`]; an unregistered queue is
///   [`Error::NotFound`]; any timer call after `close` is [`Error::Closed`];
/// - a checkpoint holds the timers at its synchronous part: timers removed or polled before
///   it do not come back, timers added, removed or polled after it (also while its
///   asynchronous part runs) do not change it, and polling the restored backend fires every
///   timer in timestamp order. A later checkpoint (incremental strategies write the changes
///   since the first) and a savepoint of a restored backend restore exactly too.
pub fn timers(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "timers");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    for meta in timer_states() {
        model.register(&mut *live, &meta);
    }
    model.check(&mut *live, "no timer added yet");
    for state in [EVENT_TIMERS, PROCESSING_TIMERS] {
        model.poll_timers(&mut *live, state, i64::MAX, usize::MAX);
    }

    set_semantics(&mut model, &mut *live);
    model.check(&mut *live, "after adding and removing timers");
    extreme_timestamps(&mut model, &mut *live);
    shared_timestamp(&mut model, &mut *live);
    polls(&mut model, &mut *live);
    model.check(&mut *live, "after polling");
    crowded_key_group(&mut model, &mut *live);
    wrong_kind(&bed, &mut *live);
    model.check(&mut *live, "after the rejected calls");
    another_instance(&bed);
    snapshots(&bed, model, live);
}

/// Adds and removes timers differing in one part only; the model checks every answer.
fn set_semantics(model: &mut Model, live: &mut dyn KeyedStateBackend) {
    let first = timer(5, b"alice", b"window-1");
    let distinct = [
        timer(5, b"alice", b"window-2"),
        timer(5, b"alice", b""),
        timer(6, b"alice", b"window-1"),
        timer(-5, b"alice", b"window-1"),
        timer(5, b"bob", b"window-1"),
        timer(5, b"", b"window-1"),
    ];
    model.add_timer(live, EVENT_TIMERS, &first);
    model.add_timer(live, EVENT_TIMERS, &first);
    for other in &distinct {
        model.add_timer(live, EVENT_TIMERS, other);
    }
    // The same timer in another queue.
    model.add_timer(live, PROCESSING_TIMERS, &first);
    model.remove_timer(live, EVENT_TIMERS, &timer(7, b"alice", b"window-1"));
    model.remove_timer(live, EVENT_TIMERS, &first);
    model.remove_timer(live, EVENT_TIMERS, &first);
    model.check(live, "after removing a timer another queue holds too");
    model.add_timer(live, EVENT_TIMERS, &first);
    model.remove_timer(live, EVENT_TIMERS, &distinct[1]);
    model.remove_timer(live, PROCESSING_TIMERS, &timer(5, b"alice", b"window-2"));
}

/// Timers at the ends of the `i64` range and around zero: they sort as the numbers do.
fn extreme_timestamps(model: &mut Model, live: &mut dyn KeyedStateBackend) {
    let extremes = [
        i64::MAX,
        0,
        i64::MIN + 1,
        -1,
        1,
        i64::MAX - 1,
        -1_000_000,
        i64::MIN,
    ];
    for timestamp in extremes {
        model.add_timer(live, EVENT_TIMERS, &timer(timestamp, b"extreme", b""));
    }
    model.add_timer(live, PROCESSING_TIMERS, &timer(i64::MAX, b"extreme", b"p"));
    model.check(live, "with timers at i64::MIN and i64::MAX");
    // Exactly the timer at i64::MIN is due at i64::MIN, and only once.
    model.poll_timers(live, EVENT_TIMERS, i64::MIN, usize::MAX);
    model.poll_timers(live, EVENT_TIMERS, i64::MIN, usize::MAX);
    model.poll_timers(live, PROCESSING_TIMERS, i64::MAX - 1, usize::MAX);
    model.check(live, "after polling the timer at i64::MIN");
}

/// Two timers (two namespaces) at one timestamp for a key of every key group.
fn shared_timestamp(model: &mut Model, live: &mut dyn KeyedStateBackend) {
    for key in keys_covering(full_range(), 1) {
        model.add_timer(live, EVENT_TIMERS, &timer(42, &key, b""));
        model.add_timer(live, EVENT_TIMERS, &timer(42, &key, b"window-1"));
    }
    model.check(live, "with 256 timers at timestamp 42");
}

/// Polls with limits and watermarks: the model checks what each returns.
fn polls(model: &mut Model, live: &mut dyn KeyedStateBackend) {
    // A limit of 0 and a watermark before the earliest timer return nothing.
    model.poll_timers(live, EVENT_TIMERS, i64::MAX, 0);
    model.poll_timers(live, EVENT_TIMERS, i64::MIN, usize::MAX);
    model.check(live, "after polls that fire nothing");
    // The earliest 3 (i64::MIN + 1, -1_000_000, -5), then up to 10 more due at 42: the
    // rest of the timers before 42 and some of the ties at 42.
    model.poll_timers(live, EVENT_TIMERS, 0, 3);
    model.poll_timers(live, EVENT_TIMERS, 42, 10);
    model.check(live, "after polling part of the timers at 42");
    // The watermark passes 42: every timer due fires, the one at 43 stays.
    model.add_timer(live, EVENT_TIMERS, &timer(43, b"late", b""));
    model.poll_timers(live, EVENT_TIMERS, 42, usize::MAX);
    model.poll_timers(live, PROCESSING_TIMERS, i64::MAX, 1);
}

/// Hundreds of timers of one key, more than a backend may keep in memory per key group:
/// polls in watermark steps, each followed by a late timer (below what fired; once 300 of
/// them), a timer ahead, and removals of a held and of a maybe-absent timer. The model
/// checks every step.
fn crowded_key_group(model: &mut Model, live: &mut dyn KeyedStateBackend) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 5_000) as i64 + 1_000
    };
    for i in 0..700 {
        let namespace = format!("w{}", i % 3);
        model.add_timer(
            live,
            EVENT_TIMERS,
            &timer(next(), b"crowded", namespace.as_bytes()),
        );
    }
    model.check(live, "with about 700 timers of key `crowded`");
    for watermark in (1_500..=6_000).step_by(500) {
        model.poll_timers(live, EVENT_TIMERS, watermark, 150);
        model.add_timer(
            live,
            EVENT_TIMERS,
            &timer(watermark - 400, b"crowded", b"late"),
        );
        if watermark == 4_000 {
            // More late timers at once than a key group's cache may hold, the earliest
            // half removed again (not polled).
            let late = |i: i64| timer(i, b"crowded", format!("late-{i}").as_bytes());
            for i in 0..300 {
                model.add_timer(live, EVENT_TIMERS, &late(i));
            }
            for i in 0..150 {
                model.remove_timer(live, EVENT_TIMERS, &late(i));
            }
        }
        model.add_timer(
            live,
            EVENT_TIMERS,
            &timer(watermark + 3_000, b"crowded", b"ahead"),
        );
        model.remove_timer(
            live,
            EVENT_TIMERS,
            &timer(watermark + 2_500, b"crowded", b"ahead"),
        );
        model.remove_timer(live, EVENT_TIMERS, &timer(next(), b"crowded", b"w0"));
        model.check(live, &format!("crowded key group at watermark {watermark}"));
    }
}

/// Value, list and map accessors on a queue, queue calls on value, list and map states,
/// and queue calls on an unregistered state.
fn wrong_kind(bed: &TestBed<'_>, live: &mut dyn KeyedStateBackend) {
    bed.ok(live.set_current_key(b"alice"), "setting current key alice");
    let queue = EVENT_TIMERS;
    let as_keyed_state: Vec<(&str, Result<()>)> = vec![
        ("value", live.value(queue, b"").map(drop)),
        ("put_value", live.put_value(queue, b"", b"v")),
        ("list", live.list(queue, b"").map(drop)),
        ("append_to_list", live.append_to_list(queue, b"", b"e")),
        (
            "update_list",
            live.update_list(queue, b"", &[b"e".to_vec()]),
        ),
        ("map_value", live.map_value(queue, b"", b"k").map(drop)),
        ("put_map_value", live.put_map_value(queue, b"", b"k", b"v")),
        ("remove_map_value", live.remove_map_value(queue, b"", b"k")),
        ("map_entries", live.map_entries(queue, b"").map(drop)),
        ("clear", live.clear(queue, b"")),
        ("keys", live.keys(queue, b"").map(drop)),
    ];
    for (call, outcome) in as_keyed_state {
        assert_error(
            bed,
            outcome,
            |err| matches!(err, Error::Incompatible { .. }),
            &format!("{call} on priority-queue state `{queue}`"),
            "incompatible",
        );
    }

    let alice = timer(1, b"alice", b"");
    let group = key_group(b"alice");
    for state in [COUNT, EVENTS, ATTRIBUTES, "no-such-timers"] {
        let as_queue: Vec<(&str, Result<()>)> = vec![
            ("add_timer", live.add_timer(state, &alice).map(drop)),
            ("remove_timer", live.remove_timer(state, &alice).map(drop)),
            ("peek_timer", live.peek_timer(state).map(drop)),
            (
                "poll_timers",
                live.poll_timers(state, i64::MAX, 1).map(drop),
            ),
            ("timer_count", live.timer_count(state).map(drop)),
            ("timers_of", live.timers_of(state, group).map(drop)),
        ];
        for (call, outcome) in as_queue {
            let case = format!("{call} on state `{state}`");
            match state {
                "no-such-timers" => assert_error(
                    bed,
                    outcome,
                    |err| matches!(err, Error::NotFound { .. }),
                    &format!("{case}, which is not registered"),
                    "not found",
                ),
                _ => assert_error(
                    bed,
                    outcome,
                    |err| matches!(err, Error::Incompatible { .. }),
                    &format!("{case}, which is not a priority queue"),
                    "incompatible",
                ),
            }
        }
    }
}

#[track_caller]
fn assert_error(
    bed: &TestBed<'_>,
    outcome: Result<()>,
    expected: impl Fn(&Error) -> bool,
    case: &str,
    expected_name: &str,
) {
    match outcome {
        Ok(()) => panic!("{}: {case} was accepted", bed.label),
        Err(err) => assert!(
            expected(err.root()),
            "{}: {case}: {err} (expected {expected_name})",
            bed.label
        ),
    }
}

/// An instance of half the key groups refuses timers of the other half's keys, and holds
/// and polls timers of its own.
fn another_instance(bed: &TestBed<'_>) {
    let range = range_of(bed, 2, 0);
    let mut model = bed.model();
    let mut half = bed.create(range);
    for meta in timer_states() {
        model.register(&mut *half, &meta);
    }
    let keys = keys_covering(full_range(), 1);
    for key in keys
        .iter()
        .filter(|key| !range.contains(key_group(key)))
        .take(3)
    {
        let foreign = timer(1, key, b"");
        assert_out_of_range(
            &bed.label,
            half.add_timer(EVENT_TIMERS, &foreign),
            &format!("an instance of {range} adding {}", show_timer(&foreign)),
        );
    }
    for (i, key) in keys
        .iter()
        .filter(|key| range.contains(key_group(key)))
        .enumerate()
    {
        model.add_timer(&mut *half, EVENT_TIMERS, &timer(i as i64 % 5, key, b""));
    }
    model.check(&mut *half, &format!("an instance of {range}"));
    model.poll_timers(&mut *half, EVENT_TIMERS, 2, usize::MAX);
    model.check(&mut *half, &format!("an instance of {range}, polled"));
}

/// Checkpoints and a savepoint with timers changed around them.
fn snapshots(bed: &TestBed<'_>, mut model: Model, mut live: Box<dyn KeyedStateBackend>) {
    let keys = keys_covering(full_range(), 2);
    write_timers(&mut model, &mut *live, &keys, 0);
    model.check(&mut *live, "before checkpoint 1");
    let storage = bed.storage("checkpoints", None);
    let retained = RetainedHandles::default();

    let factory = bed.ok(
        storage.stream_factory(CheckpointId::new(1)),
        "opening a stream factory",
    );
    let task = bed.ok(
        live.snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(1), 0),
            Arc::new(factory),
        ),
        "synchronous part of checkpoint 1",
    );
    let at_1 = model.clone();
    // After the synchronous part, before the asynchronous part starts: timers of the
    // snapshot removed and fired, new ones added.
    let held: Vec<Timer> = at_1.timers[EVENT_TIMERS]
        .iter()
        .step_by(5)
        .cloned()
        .collect();
    for timer in &held {
        model.remove_timer(&mut *live, EVENT_TIMERS, timer);
    }
    model.poll_timers(&mut *live, EVENT_TIMERS, 0, 10);
    model.poll_timers(&mut *live, PROCESSING_TIMERS, 20_000, usize::MAX);
    for key in keys.iter().step_by(3) {
        model.add_timer(&mut *live, EVENT_TIMERS, &timer(-7_000, key, b"late"));
    }
    // While the asynchronous part runs.
    let running = bed.ok(
        task.spawn(),
        "starting the asynchronous part of checkpoint 1",
    );
    write_timers(&mut model, &mut *live, &keys, 1);
    let result = running
        .join()
        .unwrap_or_else(|_| panic!("{}: the asynchronous part panicked", bed.label));
    let result = bed.ok(result, "asynchronous part of checkpoint 1");
    let handle_1 = retained.retain(bed, &result);
    bed.ok(
        live.notify_checkpoint_complete(CheckpointId::new(1)),
        "notifying checkpoint 1",
    );
    model.check(&mut *live, "the live backend after checkpoint 1");

    let mut restored = bed.restore(full_range(), &[retained.resolve(bed, &handle_1)]);
    at_1.check(
        &mut *restored,
        "restored from checkpoint 1: the timers at its synchronous part",
    );
    drain(&at_1, &mut *restored, "restored from checkpoint 1");
    bed.ok(restored.close(), "closing a restored backend");

    // Checkpoint 2: incremental strategies write what changed since checkpoint 1.
    let held: Vec<Timer> = model.timers[EVENT_TIMERS]
        .iter()
        .skip(2)
        .step_by(7)
        .cloned()
        .collect();
    for timer in &held {
        model.remove_timer(&mut *live, EVENT_TIMERS, timer);
    }
    model.poll_timers(&mut *live, EVENT_TIMERS, 500, usize::MAX);
    model.poll_timers(&mut *live, PROCESSING_TIMERS, 60_000, 7);
    write_timers(&mut model, &mut *live, &keys[..40], 2);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(2));
    let handle_2 = retained.retain(bed, &result);
    bed.ok(
        live.notify_checkpoint_complete(CheckpointId::new(2)),
        "notifying checkpoint 2",
    );
    let mut restored = bed.restore(full_range(), &[retained.resolve(bed, &handle_2)]);
    model.check(&mut *restored, "restored from checkpoint 2");

    // A savepoint of the restored backend, after more changes.
    write_timers(&mut model, &mut *restored, &keys, 3);
    let result = bed.snapshot_with(
        &mut *restored,
        &storage,
        CheckpointId::new(3),
        &CheckpointOptions::savepoint(),
    );
    let mut again = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(
        &mut *again,
        "restored from savepoint 3 of the restored backend",
    );
    drain(&model, &mut *again, "restored from savepoint 3");

    for mut backend in [live, restored] {
        bed.ok(backend.close(), "closing a backend");
    }
    closed_backend(bed, again);
}

/// Polls every timer of `backend` (which holds what `model` does): they come earliest
/// first, and none is left.
fn drain(model: &Model, backend: &mut dyn KeyedStateBackend, what: &str) {
    let mut model = model.clone();
    let total = model.timer_total();
    let mut polled = 0;
    for state in [EVENT_TIMERS, PROCESSING_TIMERS] {
        polled += model
            .poll_timers(backend, state, i64::MAX, usize::MAX)
            .len();
    }
    assert!(
        polled == total && total > 0,
        "invariant: the model polls every one of its {total} timers, polled {polled}"
    );
    model.check(backend, &format!("{what}, every timer polled"));
}

/// Every timer call on a closed backend is [`Error::Closed`].
fn closed_backend(bed: &TestBed<'_>, mut backend: Box<dyn KeyedStateBackend>) {
    bed.ok(backend.close(), "closing a backend");
    let any = timer(1, b"alice", b"");
    let group = key_group(b"alice");
    let calls: Vec<(&str, Result<()>)> = vec![
        ("add_timer", backend.add_timer(EVENT_TIMERS, &any).map(drop)),
        (
            "remove_timer",
            backend.remove_timer(EVENT_TIMERS, &any).map(drop),
        ),
        ("peek_timer", backend.peek_timer(EVENT_TIMERS).map(drop)),
        (
            "poll_timers",
            backend.poll_timers(EVENT_TIMERS, i64::MAX, 1).map(drop),
        ),
        ("timer_count", backend.timer_count(EVENT_TIMERS).map(drop)),
        (
            "timers_of",
            backend.timers_of(EVENT_TIMERS, group).map(drop),
        ),
    ];
    for (call, outcome) in calls {
        assert_error(
            bed,
            outcome,
            |err| matches!(err, Error::Closed { .. }),
            &format!("{call} after close"),
            "closed",
        );
    }
}

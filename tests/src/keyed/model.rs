//! The model every check compares a backend with (a `BTreeMap` of what was written and a
//! `BTreeSet` of the timers of each priority-queue state), and model-based sequences:
//! random writes, checkpoints and restores run on a backend and the model side by side.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use state_api::{
    CheckpointId, Error, KeyGroup, KeyedStateBackend, KeyedStateHandle, Result, SnapshotRequest,
    StateKind, StateMetaInfo, Timer,
};

use super::bed::{
    ATTRIBUTES, COUNT, EVENTS, NAMESPACES, RetainedHandles, TestBed, full_range, key_group, show,
    show_option, show_timer,
};
use super::{KeyedTarget, MAX_PARALLELISM};

/// What the model holds for one (state, namespace, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    Value(Vec<u8>),
    List(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

/// (state, namespace, key).
pub(crate) type Slot = (String, Vec<u8>, Vec<u8>);

pub(crate) fn slot(state: &str, namespace: &[u8], key: &[u8]) -> Slot {
    (state.to_owned(), namespace.to_vec(), key.to_vec())
}

/// What a backend should hold: every write goes to the backend and to the model.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    label: Arc<str>,
    states: BTreeMap<String, StateMetaInfo>,
    pub(crate) entries: BTreeMap<Slot, Stored>,
    /// Every slot ever written, removed ones included, so checks read them back too.
    touched: BTreeSet<Slot>,
    /// The timers of each priority-queue state, of every instance the model stands for.
    pub(crate) timers: BTreeMap<String, BTreeSet<Timer>>,
}

impl Model {
    /// An empty model whose messages start with `label`.
    pub(crate) fn new(label: &str) -> Self {
        Model {
            label: Arc::from(label),
            ..Model::default()
        }
    }

    #[track_caller]
    fn ok<T>(&self, result: Result<T>, what: impl fmt::Display) -> T {
        result.unwrap_or_else(|err| panic!("{}: {what}: {err}", self.label))
    }

    pub(crate) fn register(&mut self, backend: &mut dyn KeyedStateBackend, meta: &StateMetaInfo) {
        self.ok(
            backend.register_state(meta),
            format_args!("registering state `{}`", meta.name),
        );
        self.states.insert(meta.name.clone(), meta.clone());
    }

    fn at(&mut self, backend: &mut dyn KeyedStateBackend, state: &str, ns: &[u8], key: &[u8]) {
        self.ok(
            backend.set_current_key(key),
            format_args!("setting current key {}", show(key)),
        );
        self.touched.insert(slot(state, ns, key));
    }

    pub(crate) fn put_value(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        value: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.put_value(state, ns, value),
            format_args!("put_value on `{state}`"),
        );
        self.entries
            .insert(slot(state, ns, key), Stored::Value(value.to_vec()));
    }

    pub(crate) fn append(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        element: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.append_to_list(state, ns, element),
            format_args!("append_to_list on `{state}`"),
        );
        let entry = self
            .entries
            .entry(slot(state, ns, key))
            .or_insert_with(|| Stored::List(Vec::new()));
        match entry {
            Stored::List(elements) => elements.push(element.to_vec()),
            other => panic!("invariant: the kit appends only to list states, found {other:?}"),
        }
    }

    pub(crate) fn update_list(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        elements: &[Vec<u8>],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.update_list(state, ns, elements),
            format_args!("update_list on `{state}`"),
        );
        let slot = slot(state, ns, key);
        if elements.is_empty() {
            self.entries.remove(&slot);
        } else {
            self.entries.insert(slot, Stored::List(elements.to_vec()));
        }
    }

    pub(crate) fn put_map(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.put_map_value(state, ns, user_key, value),
            format_args!("put_map_value on `{state}`"),
        );
        let entry = self
            .entries
            .entry(slot(state, ns, key))
            .or_insert_with(|| Stored::Map(BTreeMap::new()));
        match entry {
            Stored::Map(map) => {
                map.insert(user_key.to_vec(), value.to_vec());
            }
            other => {
                panic!("invariant: the kit puts map values only into map states, found {other:?}")
            }
        }
    }

    pub(crate) fn remove_map(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
        user_key: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(
            backend.remove_map_value(state, ns, user_key),
            format_args!("remove_map_value on `{state}`"),
        );
        let slot = slot(state, ns, key);
        if let Some(Stored::Map(map)) = self.entries.get_mut(&slot) {
            map.remove(user_key);
            if map.is_empty() {
                self.entries.remove(&slot);
            }
        }
    }

    pub(crate) fn clear(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        ns: &[u8],
        key: &[u8],
    ) {
        self.at(backend, state, ns, key);
        self.ok(backend.clear(state, ns), format_args!("clear on `{state}`"));
        self.entries.remove(&slot(state, ns, key));
    }

    /// Adds `timer` to priority-queue state `state` of `backend` (which must own its key
    /// group) and checks the answer: `true` exactly when the queue did not hold it.
    pub(crate) fn add_timer(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        timer: &Timer,
    ) -> bool {
        let added = self.ok(
            backend.add_timer(state, timer),
            format_args!("add_timer of {} to `{state}`", show_timer(timer)),
        );
        let absent = self
            .timers
            .entry(state.to_owned())
            .or_default()
            .insert(timer.clone());
        assert!(
            added == absent,
            "{}: add_timer of {} to `{state}` returned {added}, but the queue {} it",
            self.label,
            show_timer(timer),
            if absent { "did not hold" } else { "held" }
        );
        added
    }

    /// Removes `timer` from priority-queue state `state` of `backend` and checks the
    /// answer: `true` exactly when the queue held it.
    pub(crate) fn remove_timer(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        timer: &Timer,
    ) -> bool {
        let removed = self.ok(
            backend.remove_timer(state, timer),
            format_args!("remove_timer of {} from `{state}`", show_timer(timer)),
        );
        let held = self
            .timers
            .entry(state.to_owned())
            .or_default()
            .remove(timer);
        assert!(
            removed == held,
            "{}: remove_timer of {} from `{state}` returned {removed}, but the queue {} it",
            self.label,
            show_timer(timer),
            if held { "held" } else { "did not hold" }
        );
        removed
    }

    /// Polls at most `limit` timers due at `until` from priority-queue state `state` of
    /// `backend` and checks them: as many as the model has due in the backend's key groups
    /// (up to `limit`), timers the queue held, with the timestamps of the earliest due ones
    /// in order. Which of several timers of one timestamp come first is the backend's
    /// choice: the model removes the ones returned.
    pub(crate) fn poll_timers(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: &str,
        until: i64,
        limit: usize,
    ) -> Vec<Timer> {
        let range = backend.key_group_range();
        let limit_text = match limit {
            usize::MAX => "any number".to_owned(),
            limit => format!("at most {limit}"),
        };
        let what = format!("poll_timers of `{state}` in {range} until {until}, {limit_text}");
        let polled = self.ok(backend.poll_timers(state, until, limit), &what);
        let label = Arc::clone(&self.label);
        let queue = self.timers.entry(state.to_owned()).or_default();
        let due: Vec<i64> = queue
            .iter()
            .filter(|timer| timer.timestamp <= until && range.contains(key_group(&timer.key)))
            .take(limit)
            .map(|timer| timer.timestamp)
            .collect();
        let returned: Vec<i64> = polled.iter().map(|timer| timer.timestamp).collect();
        if returned != due {
            let at = returned
                .iter()
                .zip(&due)
                .take_while(|(r, d)| r == d)
                .count();
            panic!(
                "{label}: {what}: returned {} timers, expected {} (the earliest due, earliest \
                 first); from position {at} the timestamps are {:?}, expected {:?}",
                returned.len(),
                due.len(),
                &returned[at..returned.len().min(at + 8)],
                &due[at..due.len().min(at + 8)]
            );
        }
        for timer in &polled {
            let group = key_group(&timer.key);
            assert!(
                range.contains(group) && queue.remove(timer),
                "{label}: {what}: returned {} (key group {group}), which the queue did not \
                 hold (or returned it twice)",
                show_timer(timer)
            );
        }
        polled
    }

    /// The number of timers of every priority-queue state.
    pub(crate) fn timer_total(&self) -> usize {
        self.timers.values().map(BTreeSet::len).sum()
    }

    /// Checks that priority-queue state `state` of `backend` holds exactly the model's
    /// timers of the backend's key groups: `timer_count`, `timers_of` of every key group
    /// (earliest first), `peek_timer` (one of the earliest), and that `timers_of` of a key
    /// group of another instance fails with [`Error::KeyGroupOutOfRange`].
    fn check_timers(&self, backend: &dyn KeyedStateBackend, state: &str, what: &str) {
        let label = &self.label;
        let range = backend.key_group_range();
        let mut expected: BTreeMap<KeyGroup, Vec<&Timer>> = BTreeMap::new();
        for timer in self.timers.get(state).into_iter().flatten() {
            let group = key_group(&timer.key);
            if range.contains(group) {
                expected.entry(group).or_default().push(timer);
            }
        }
        let held: usize = expected.values().map(Vec::len).sum();
        let count = self.ok(
            backend.timer_count(state),
            format_args!("{what}: timer_count of `{state}`"),
        );
        assert!(
            count == held,
            "{label}: {what}: timer_count of `{state}` in {range} is {count}, expected {held}"
        );

        for group in range.iter() {
            let found = self.ok(
                backend.timers_of(state, group),
                format_args!("{what}: timers_of `{state}` in key group {group}"),
            );
            let place = || format!("{label}: {what}: timers of `{state}` in key group {group}");
            if let Some(pair) = found.windows(2).find(|p| p[0].timestamp > p[1].timestamp) {
                panic!(
                    "{}: not earliest first: {} before {}",
                    place(),
                    show_timer(&pair[0]),
                    show_timer(&pair[1])
                );
            }
            let mut sorted: Vec<&Timer> = found.iter().collect();
            sorted.sort();
            let wanted = expected.get(&group).map_or(&[][..], Vec::as_slice);
            if sorted != wanted {
                let found_set: BTreeSet<&Timer> = sorted.iter().copied().collect();
                let wanted_set: BTreeSet<&Timer> = wanted.iter().copied().collect();
                let extra: Vec<String> = found_set
                    .difference(&wanted_set)
                    .take(8)
                    .map(|t| show_timer(t))
                    .collect();
                let missing: Vec<String> = wanted_set
                    .difference(&found_set)
                    .take(8)
                    .map(|t| show_timer(t))
                    .collect();
                panic!(
                    "{}: {} listed, expected {}: unexpected {extra:?}, missing {missing:?} \
                     (or listed twice)",
                    place(),
                    found.len(),
                    wanted.len()
                );
            }
        }

        let peeked = self.ok(
            backend.peek_timer(state),
            format_args!("{what}: peek_timer of `{state}`"),
        );
        let earliest = expected
            .values()
            .flatten()
            .map(|timer| timer.timestamp)
            .min();
        let fits = match (&peeked, earliest) {
            (None, None) => true,
            (Some(timer), Some(earliest)) => {
                timer.timestamp == earliest
                    && expected
                        .get(&key_group(&timer.key))
                        .is_some_and(|timers| timers.contains(&timer))
            }
            _ => false,
        };
        assert!(
            fits,
            "{label}: {what}: peek_timer of `{state}` in {range} is {}, expected one of the \
             timers at {}",
            peeked
                .as_ref()
                .map_or_else(|| "none".to_owned(), show_timer),
            earliest.map_or_else(|| "none (the queue is empty)".to_owned(), |t| t.to_string())
        );

        let outside = match range.start().get() {
            0 => range.end().get() + 1,
            start => start - 1,
        };
        if outside < MAX_PARALLELISM.get() {
            let group = KeyGroup::new(outside)
                .unwrap_or_else(|err| panic!("invariant: key group {outside} exists: {err}"));
            match backend.timers_of(state, group) {
                Err(err) if matches!(err.root(), Error::KeyGroupOutOfRange { .. }) => {}
                Err(err) => panic!(
                    "{label}: {what}: timers_of `{state}` in key group {group} of another \
                     instance than {range}: {err} (expected a key group out of range)"
                ),
                Ok(timers) => panic!(
                    "{label}: {what}: timers_of `{state}` in key group {group} of another \
                     instance than {range} listed {} timers instead of failing",
                    timers.len()
                ),
            }
        }
    }

    /// Checks that `backend` holds exactly the model's state and entries of the key groups
    /// of its range: registered states, `keys` of every state and namespace written, every
    /// slot ever written read back (removed ones as absent), and the timers of every
    /// priority-queue state.
    pub(crate) fn check(&self, backend: &mut dyn KeyedStateBackend, what: &str) {
        let label = &self.label;
        let range = backend.key_group_range();
        let held: BTreeMap<String, StateMetaInfo> = backend
            .states()
            .into_iter()
            .map(|meta| (meta.name.clone(), meta))
            .collect();
        assert!(
            held == self.states,
            "{label}: {what}: the backend has states {:?}, expected {:?}",
            held.values().collect::<Vec<_>>(),
            self.states.values().collect::<Vec<_>>()
        );

        for meta in held.values() {
            if meta.kind == StateKind::PriorityQueue {
                self.check_timers(backend, &meta.name, what);
            }
        }

        let namespaces: BTreeSet<(&str, &[u8])> = self
            .touched
            .iter()
            .map(|(state, ns, _)| (state.as_str(), ns.as_slice()))
            .collect();
        for (state, ns) in namespaces {
            let mut expected: Vec<&[u8]> = self
                .entries
                .keys()
                .filter(|(s, n, key)| s == state && n == ns && range.contains(key_group(key)))
                .map(|(_, _, key)| key.as_slice())
                .collect();
            expected.sort();
            let mut found = self.ok(
                backend.keys(state, ns),
                format_args!("{what}: keys of `{state}` in namespace {}", show(ns)),
            );
            found.sort();
            if found != expected {
                let found: BTreeSet<&[u8]> = found.iter().map(Vec::as_slice).collect();
                let expected: BTreeSet<&[u8]> = expected.into_iter().collect();
                let extra: Vec<String> = found.difference(&expected).map(|k| show(k)).collect();
                let missing: Vec<String> = expected.difference(&found).map(|k| show(k)).collect();
                panic!(
                    "{label}: {what}: keys of `{state}` in namespace {} in {range}: \
                     unexpected {extra:?}, missing {missing:?} (or listed twice)",
                    show(ns)
                );
            }
        }

        for slot @ (state, ns, key) in &self.touched {
            if !range.contains(key_group(key)) {
                continue;
            }
            let kind = self
                .states
                .get(state)
                .map(|meta| meta.kind)
                .unwrap_or_else(|| panic!("invariant: the kit writes registered states only"));
            self.ok(
                backend.set_current_key(key),
                format_args!("{what}: setting current key {}", show(key)),
            );
            let stored = self.entries.get(slot);
            let place = || {
                format!(
                    "{label}: {what}: `{state}`, namespace {}, key {} (key group {})",
                    show(ns),
                    show(key),
                    key_group(key)
                )
            };
            match kind {
                StateKind::Value => {
                    let found = self.ok(backend.value(state, ns), place());
                    let expected = match stored {
                        Some(Stored::Value(value)) => Some(value),
                        _ => None,
                    };
                    assert!(
                        found.as_ref() == expected,
                        "{}: value is {}, expected {}",
                        place(),
                        show_option(found.as_deref()),
                        show_option(expected.map(Vec::as_slice))
                    );
                }
                StateKind::List => {
                    let found = self.ok(backend.list(state, ns), place());
                    let expected: &[Vec<u8>] = match stored {
                        Some(Stored::List(elements)) => elements,
                        _ => &[],
                    };
                    assert!(
                        found == expected,
                        "{}: list of {} elements differs from the expected {} elements",
                        place(),
                        found.len(),
                        expected.len()
                    );
                }
                StateKind::Map => {
                    let found = self.ok(backend.map_entries(state, ns), place());
                    let empty = BTreeMap::new();
                    let expected = match stored {
                        Some(Stored::Map(map)) => map,
                        _ => &empty,
                    };
                    let found_map: BTreeMap<Vec<u8>, Vec<u8>> = found.iter().cloned().collect();
                    assert!(
                        found_map == *expected && found.len() == expected.len(),
                        "{}: map of {} entries differs from the expected {} entries",
                        place(),
                        found.len(),
                        expected.len()
                    );
                    for (user_key, value) in expected {
                        let found = self.ok(backend.map_value(state, ns, user_key), place());
                        assert!(
                            found.as_ref() == Some(value),
                            "{}: map_value of user key {} is {}",
                            place(),
                            show(user_key),
                            show_option(found.as_deref())
                        );
                    }
                }
                StateKind::PriorityQueue => {
                    panic!("invariant: the kit writes timers through add_timer only, not `{state}`")
                }
            }
        }
    }
}

/// One write of a [`model_based`] sequence; small numbers pick keys, namespaces and bytes
/// so that sequences collide on the same slots.
#[derive(Debug, Clone)]
pub enum ModelWrite {
    /// `put_value` of `count` for key `k<key>` in namespace `namespace % 3`.
    Put {
        /// Key number.
        key: u8,
        /// Namespace number.
        namespace: u8,
        /// Value byte.
        value: u8,
    },
    /// `append_to_list` of `events`.
    Append {
        /// Key number.
        key: u8,
        /// Element byte.
        element: u8,
    },
    /// `update_list` of `events` with no elements.
    ClearList {
        /// Key number.
        key: u8,
    },
    /// `put_map_value` of `attributes`.
    MapPut {
        /// Key number.
        key: u8,
        /// User key byte.
        user_key: u8,
        /// Value byte.
        value: u8,
    },
    /// `remove_map_value` of `attributes`.
    MapRemove {
        /// Key number.
        key: u8,
        /// User key byte.
        user_key: u8,
    },
    /// `clear` of the value state in namespace `namespace % 3`.
    Clear {
        /// Key number.
        key: u8,
        /// Namespace number.
        namespace: u8,
    },
}

/// One step of a [`model_based`] sequence.
#[derive(Debug, Clone)]
pub enum ModelStep {
    /// A write.
    Write(ModelWrite),
    /// A checkpoint: the synchronous part, then `during` (not in the snapshot), then the
    /// asynchronous part; the checkpoint then completes.
    Checkpoint {
        /// Writes between the two parts.
        during: Vec<ModelWrite>,
    },
    /// Restore the last checkpoint into `parallelism` instances and check each, then go on
    /// with one instance of the whole range restored from it.
    Restore {
        /// Instances to restore into.
        parallelism: u32,
    },
}

fn model_write() -> impl Strategy<Value = ModelWrite> {
    let key = 0u8..12;
    prop_oneof![
        (key.clone(), 0u8..3, any::<u8>()).prop_map(|(key, namespace, value)| ModelWrite::Put {
            key,
            namespace,
            value
        }),
        (key.clone(), any::<u8>()).prop_map(|(key, element)| ModelWrite::Append { key, element }),
        key.clone().prop_map(|key| ModelWrite::ClearList { key }),
        (key.clone(), 0u8..4, any::<u8>()).prop_map(|(key, user_key, value)| ModelWrite::MapPut {
            key,
            user_key,
            value
        }),
        (key.clone(), 0u8..4).prop_map(|(key, user_key)| ModelWrite::MapRemove { key, user_key }),
        (key, 0u8..3).prop_map(|(key, namespace)| ModelWrite::Clear { key, namespace }),
    ]
}

/// Sequences of up to 40 steps, writes most often.
pub fn model_steps() -> impl Strategy<Value = Vec<ModelStep>> {
    let step = prop_oneof![
        6 => model_write().prop_map(ModelStep::Write),
        2 => proptest::collection::vec(model_write(), 0..4)
            .prop_map(|during| ModelStep::Checkpoint { during }),
        1 => (1u32..=3).prop_map(|parallelism| ModelStep::Restore { parallelism }),
    ];
    proptest::collection::vec(step, 1..40)
}

fn apply(model: &mut Model, backend: &mut dyn KeyedStateBackend, write: &ModelWrite) {
    let key = |k: u8| format!("k{k}").into_bytes();
    match *write {
        ModelWrite::Put {
            key: k,
            namespace,
            value,
        } => {
            let ns = NAMESPACES[usize::from(namespace % 3)];
            model.put_value(backend, COUNT, ns, &key(k), &[value]);
        }
        ModelWrite::Append { key: k, element } => {
            model.append(backend, EVENTS, b"", &key(k), &[element]);
        }
        ModelWrite::ClearList { key: k } => model.update_list(backend, EVENTS, b"", &key(k), &[]),
        ModelWrite::MapPut {
            key: k,
            user_key,
            value,
        } => {
            model.put_map(backend, ATTRIBUTES, b"", &key(k), &[user_key], &[value]);
        }
        ModelWrite::MapRemove { key: k, user_key } => {
            model.remove_map(backend, ATTRIBUTES, b"", &key(k), &[user_key]);
        }
        ModelWrite::Clear { key: k, namespace } => {
            let ns = NAMESPACES[usize::from(namespace % 3)];
            model.clear(backend, COUNT, ns, &key(k));
        }
    }
}

/// Runs `steps` on a fresh backend of `target` and a model side by side; panics at the
/// first difference. Incremental handles are registered with a
/// [`SharedStateRegistry`](state_coordinator::SharedStateRegistry) as a coordinator would, and
/// resolved for restore.
pub fn run_model_steps(target: &KeyedTarget<'_>, steps: &[ModelStep]) {
    let bed = TestBed::new(target, "model-based sequence");
    let storage = bed.storage("checkpoints", None);
    let retained = RetainedHandles::default();
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    let mut last: Option<(Model, Arc<dyn KeyedStateHandle>)> = None;
    for (checkpoint_id, step) in (1u64..).zip(steps) {
        match step {
            ModelStep::Write(write) => apply(&mut model, &mut *live, write),
            ModelStep::Checkpoint { during } => {
                let factory = bed.ok(
                    storage.stream_factory(CheckpointId::new(checkpoint_id)),
                    "opening a factory",
                );
                let task = bed.ok(
                    live.snapshot(
                        &SnapshotRequest::checkpoint(CheckpointId::new(checkpoint_id), 0),
                        Arc::new(factory),
                    ),
                    "synchronous part",
                );
                let at_sync = model.clone();
                for write in during {
                    apply(&mut model, &mut *live, write);
                }
                let result = bed.ok(task.run(), "asynchronous part");
                let handle = retained.retain(&bed, &result);
                bed.ok(
                    live.notify_checkpoint_complete(CheckpointId::new(checkpoint_id)),
                    "notifying",
                );
                last = Some((at_sync, handle));
            }
            ModelStep::Restore { parallelism } => {
                let Some((at_sync, handle)) = &last else {
                    continue;
                };
                let handle = retained.resolve(&bed, handle);
                for index in 0..*parallelism {
                    let range = bed.ok(
                        MAX_PARALLELISM.range_for(index, *parallelism),
                        "computing a range",
                    );
                    let mut instance = bed.restore(range, std::slice::from_ref(&handle));
                    at_sync.check(
                        &mut *instance,
                        &format!("step {checkpoint_id}: instance {index} of {parallelism}"),
                    );
                }
                bed.ok(live.close(), "closing the replaced backend");
                live = bed.restore(full_range(), std::slice::from_ref(&handle));
                model = at_sync.clone();
            }
        }
    }
    model.check(&mut *live, "after the last step");
}

/// Random sequences of writes, checkpoints (with writes between their two parts) and
/// restores at parallelism 1 to 3, checked against the model; `cases` sequences. A failure
/// shrinks to a short sequence printed with the panic.
pub fn model_based(target: &KeyedTarget<'_>, cases: u32) {
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&model_steps(), |steps| {
        run_model_steps(target, &steps);
        Ok(())
    });
    if let Err(err) = outcome {
        panic!("{}: {err}", target.label("model-based sequences"));
    }
}

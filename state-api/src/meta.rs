//! Meta information of registered states: what a snapshot header records per state.

use serde::{Deserialize, Serialize};

use crate::{DistributionMode, Error, Result, StateTtlConfig};

/// The kind of a keyed state; its discriminant is its [`code`](Self::code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateKind {
    /// One value per (key, namespace).
    Value = 0,
    /// A list of elements per (key, namespace).
    List = 1,
    /// A map from user key to value per (key, namespace).
    Map = 2,
    /// A set of [`Timer`]s per key group, polled in timestamp order.
    PriorityQueue = 3,
}

impl StateKind {
    /// The byte that encodes this kind in snapshot headers.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind's name (`value`, `list`, `map`, `priority-queue`).
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
            StateKind::PriorityQueue => "priority-queue",
        }
    }

    /// The kind written as `code` in a snapshot header, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        [Self::Value, Self::List, Self::Map, Self::PriorityQueue]
            .into_iter()
            .find(|kind| kind.code() == code)
    }
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One element of a priority-queue state: due at `timestamp` for `key` in `namespace`. A
/// queue holds each timer once; timers are polled by timestamp (ties in any order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer {
    /// When the timer is due (event or processing time, by convention milliseconds).
    pub timestamp: i64,
    /// The serialized key it is for; its key group is the key's.
    pub key: Vec<u8>,
    /// The serialized namespace (a window, say).
    pub namespace: Vec<u8>,
}

/// Identifies a serializer by a stable name (`"bytes"`, `"u64-be"`, `"serde-json"`, ...).
/// Restore compares the ids recorded in a snapshot with the ids of the states the job
/// registers; a mismatch is reported instead of misreading bytes. The id is a name, not a
/// Rust type name, so renaming a type does not break old snapshots.
pub type SerializerId = String;

/// What a snapshot records about one keyed state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateMetaInfo {
    /// The state's registered name, unique within a backend.
    pub name: String,
    /// Value, list or map.
    pub kind: StateKind,
    /// Serializer of the namespace.
    pub namespace_serializer: SerializerId,
    /// Serializer of the value (of list elements for lists, of map values for maps; empty
    /// for priority queues, whose timers hold a key, a namespace and an `i64` timestamp).
    pub value_serializer: SerializerId,
    /// Serializer of map user keys; empty for other kinds.
    pub user_key_serializer: SerializerId,
    /// The entries' time to live; `None` for states whose entries never expire.
    pub ttl: Option<StateTtlConfig>,
}

impl StateMetaInfo {
    /// Meta info of a value state with the given serializers.
    pub fn value(
        name: impl Into<String>,
        namespace: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Self::new(name, StateKind::Value, namespace, value, "")
    }

    /// Meta info of a list state with the given serializers.
    pub fn list(
        name: impl Into<String>,
        namespace: impl Into<String>,
        element: impl Into<String>,
    ) -> Self {
        Self::new(name, StateKind::List, namespace, element, "")
    }

    /// Meta info of a map state with the given serializers.
    pub fn map(
        name: impl Into<String>,
        namespace: impl Into<String>,
        user_key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Self::new(name, StateKind::Map, namespace, value, user_key)
    }

    /// Meta info of a priority-queue (timer) state whose namespaces use `namespace`.
    pub fn priority_queue(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self::new(name, StateKind::PriorityQueue, namespace, "", "")
    }

    fn new(
        name: impl Into<String>,
        kind: StateKind,
        namespace: impl Into<String>,
        value: impl Into<String>,
        user_key: impl Into<String>,
    ) -> Self {
        StateMetaInfo {
            name: name.into(),
            kind,
            namespace_serializer: namespace.into(),
            value_serializer: value.into(),
            user_key_serializer: user_key.into(),
            ttl: None,
        }
    }

    /// This state with entries that expire as `ttl` says.
    pub fn with_ttl(self, ttl: StateTtlConfig) -> Self {
        StateMetaInfo {
            ttl: Some(ttl),
            ..self
        }
    }

    /// Checks that `requested` (a state registered again, or a job's state meeting the one
    /// restored from a snapshot) keeps this state's kind and serializers, and has a time to
    /// live if and only if this one has (its stored values carry timestamps then; the
    /// time to live itself may change).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] naming the first field that differs.
    ///
    /// ```
    /// use state_api::{Error, StateMetaInfo};
    ///
    /// let held = StateMetaInfo::value("count", "void", "u64-be");
    /// assert!(held.check_compatible(&held.clone()).is_ok());
    /// let err = held.check_compatible(&StateMetaInfo::value("count", "void", "string")).unwrap_err();
    /// assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    /// ```
    pub fn check_compatible(&self, requested: &StateMetaInfo) -> Result<()> {
        let fields: [Field<Self>; 5] = [
            ("kind", |state| state.kind.as_str()),
            ("namespace serializer", |state| &state.namespace_serializer),
            ("value serializer", |state| &state.value_serializer),
            ("user-key serializer", |state| &state.user_key_serializer),
            ("time to live", |state| match state.ttl {
                Some(_) => "enabled",
                None => "disabled",
            }),
        ];
        first_difference("state", &self.name, (self, requested), &fields)
    }
}

/// What a snapshot records about one operator state: a list state (split-distribute or
/// union) or a broadcast map state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OperatorStateMetaInfo {
    /// The state's registered name, unique within a backend across lists and broadcast maps.
    pub name: String,
    /// How the state is redistributed on restore; [`DistributionMode::Broadcast`] for a
    /// broadcast map.
    pub mode: DistributionMode,
    /// Serializer of list elements, or of broadcast map values.
    pub value_serializer: SerializerId,
    /// Serializer of broadcast map keys; empty for list states.
    pub key_serializer: SerializerId,
}

impl OperatorStateMetaInfo {
    /// A list state whose elements are split evenly across instances on restore.
    pub fn split_list(name: impl Into<String>, element: impl Into<String>) -> Self {
        Self::new(name, DistributionMode::SplitDistribute, element, "")
    }

    /// A list state of which every instance gets the union of all elements on restore.
    pub fn union_list(name: impl Into<String>, element: impl Into<String>) -> Self {
        Self::new(name, DistributionMode::Union, element, "")
    }

    /// A broadcast map state, identical on every instance.
    pub fn broadcast(
        name: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Self::new(name, DistributionMode::Broadcast, value, key)
    }

    fn new(
        name: impl Into<String>,
        mode: DistributionMode,
        value: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        OperatorStateMetaInfo {
            name: name.into(),
            mode,
            value_serializer: value.into(),
            key_serializer: key.into(),
        }
    }

    /// Checks that `requested` keeps this state's mode and serializers.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] naming the first field that differs.
    ///
    /// ```
    /// use state_api::{Error, OperatorStateMetaInfo};
    ///
    /// let held = OperatorStateMetaInfo::split_list("offsets", "u64-be");
    /// assert!(held.check_compatible(&held.clone()).is_ok());
    /// let other = OperatorStateMetaInfo::union_list("offsets", "u64-be");
    /// let err = held.check_compatible(&other).unwrap_err();
    /// assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    /// ```
    pub fn check_compatible(&self, requested: &OperatorStateMetaInfo) -> Result<()> {
        let fields: [Field<Self>; 3] = [
            ("distribution mode", |state| state.mode.as_str()),
            ("value serializer", |state| &state.value_serializer),
            ("key serializer", |state| &state.key_serializer),
        ];
        first_difference("operator state", &self.name, (self, requested), &fields)
    }
}

/// A field's name and how to read it.
type Field<T> = (&'static str, fn(&T) -> &str);

/// [`Error::Incompatible`] for the first of `fields` in which `held` and `requested` differ.
fn first_difference<T>(
    what: &str,
    name: &str,
    (held, requested): (&T, &T),
    fields: &[Field<T>],
) -> Result<()> {
    match fields.iter().find(|(_, get)| get(held) != get(requested)) {
        None => Ok(()),
        Some((field, get)) => Err(Error::Incompatible {
            what: format!("{field} of {what} `{name}`"),
            held: get(held).to_owned(),
            requested: get(requested).to_owned(),
        }),
    }
}

//! Typed access to keyed state, over any [`KeyedStateBackend`].
//!
//! Backends store bytes; the application picks a [`TypeSerializer`] per key, namespace,
//! value, list element and map user key. A serializer has a stable [id](TypeSerializer::id)
//! that is recorded in the state's [`StateMetaInfo`] and in every snapshot header, so a
//! restore that meets a state written with another serializer fails with
//! [`Error::Incompatible`] instead of misreading bytes.
//!
//! Why byte-level serializers and not `serde`: the bytes of keys are hashed into key groups
//! and must never change between releases, and the id must name the exact encoding. A
//! `serde` format crate would make both depend on that crate's version. Applications that
//! want `serde` write a three-method serializer around their format of choice.
//!
//! # Example
//!
//! ```
//! use state_format::typed::{StringSerializer, TypeSerializer, U64Serializer};
//!
//! let mut bytes = Vec::new();
//! U64Serializer.serialize(&42, &mut bytes);
//! assert_eq!(bytes, 42u64.to_be_bytes());
//! assert_eq!(U64Serializer.deserialize(&bytes)?, 42);
//! assert!(StringSerializer.deserialize(&[0xFF]).is_err());
//! # Ok::<(), state_api::Error>(())
//! ```
//!
//! The state handles ([`ValueState`], [`ListState`], [`MapState`]) work over any backend;
//! the heap backend's crate docs show them in use.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use state_api::{Error, KeyedStateBackend, Result, StateMetaInfo, StateTtlConfig};

/// Turns values of `T` into bytes and back; its [`id`](Self::id) names the encoding.
pub trait TypeSerializer<T>: Send + Sync + fmt::Debug {
    /// The stable name of the encoding, recorded in snapshots (`u64-be`, `string`).
    fn id(&self) -> &str;

    /// Appends the bytes of `value` to `out`.
    fn serialize(&self, value: &T, out: &mut Vec<u8>);

    /// Reads a value from exactly `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] when the bytes are not a value of this encoding.
    fn deserialize(&self, bytes: &[u8]) -> Result<T>;
}

fn corrupted(id: &str, bytes: &[u8], reason: impl fmt::Display) -> Error {
    Error::Corrupted {
        what: format!("{}-byte value of serializer `{id}`", bytes.len()),
        reason: reason.to_string(),
    }
}

/// `u64` as 8 big-endian bytes (`u64-be`), the key encoding of the benchmark workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct U64Serializer;

impl TypeSerializer<u64> for U64Serializer {
    fn id(&self) -> &str {
        "u64-be"
    }

    fn serialize(&self, value: &u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&value.to_be_bytes());
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<u64> {
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| corrupted(self.id(), bytes, "expected 8 bytes"))?;
        Ok(u64::from_be_bytes(array))
    }
}

/// `String` as its UTF-8 bytes (`string`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerializer;

impl TypeSerializer<String> for StringSerializer {
    fn id(&self) -> &str {
        "string"
    }

    fn serialize(&self, value: &String, out: &mut Vec<u8>) {
        out.extend_from_slice(value.as_bytes());
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|err| corrupted(self.id(), bytes, err))
    }
}

/// `Vec<u8>` as itself (`bytes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesSerializer;

impl TypeSerializer<Vec<u8>> for BytesSerializer {
    fn id(&self) -> &str {
        "bytes"
    }

    fn serialize(&self, value: &Vec<u8>, out: &mut Vec<u8>) {
        out.extend_from_slice(value);
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(bytes.to_vec())
    }
}

/// `()` as no bytes (`void`): the namespace of state that has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct VoidSerializer;

impl TypeSerializer<()> for VoidSerializer {
    fn id(&self) -> &str {
        "void"
    }

    fn serialize(&self, _value: &(), _out: &mut Vec<u8>) {}

    fn deserialize(&self, bytes: &[u8]) -> Result<()> {
        match bytes.is_empty() {
            true => Ok(()),
            false => Err(corrupted(self.id(), bytes, "expected no bytes")),
        }
    }
}

fn to_bytes<T>(serializer: &dyn TypeSerializer<T>, value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    serializer.serialize(value, &mut out);
    out
}

/// Makes the key `key`, serialized by `serializer`, the backend's current key.
///
/// # Errors
///
/// Those of [`KeyedStateBackend::set_current_key`] (a key of another key-group range).
pub fn set_current_key<K>(
    backend: &mut dyn KeyedStateBackend,
    serializer: &dyn TypeSerializer<K>,
    key: &K,
) -> Result<()> {
    backend.set_current_key(&to_bytes(serializer, key))
}

/// A registered value state: one `V` per (key, namespace `N`).
#[derive(Debug, Clone)]
pub struct ValueState<N, V> {
    name: String,
    namespace: Arc<dyn TypeSerializer<N>>,
    value: Arc<dyn TypeSerializer<V>>,
}

impl<N, V> ValueState<N, V> {
    /// Registers value state `name` in `backend` (or checks the one already there).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] when a state of that name has another kind or serializer.
    pub fn register(
        backend: &mut dyn KeyedStateBackend,
        name: &str,
        namespace: impl TypeSerializer<N> + 'static,
        value: impl TypeSerializer<V> + 'static,
    ) -> Result<Self> {
        Self::register_with(backend, name, namespace, value, None)
    }

    /// Registers value state `name` whose values expire as `ttl` says (see
    /// [`crate::ttl`]), or none when `None`.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register); also a time to live other than the registered
    /// state's presence of one.
    pub fn register_with(
        backend: &mut dyn KeyedStateBackend,
        name: &str,
        namespace: impl TypeSerializer<N> + 'static,
        value: impl TypeSerializer<V> + 'static,
        ttl: Option<StateTtlConfig>,
    ) -> Result<Self> {
        let mut meta = StateMetaInfo::value(name, namespace.id(), value.id());
        meta.ttl = ttl;
        backend.register_state(&meta)?;
        Ok(ValueState {
            name: name.to_owned(),
            namespace: Arc::new(namespace),
            value: Arc::new(value),
        })
    }

    /// The value of the current key in `namespace`.
    pub fn value(&self, backend: &dyn KeyedStateBackend, namespace: &N) -> Result<Option<V>> {
        let ns = to_bytes(&*self.namespace, namespace);
        backend
            .value(&self.name, &ns)?
            .map(|bytes| self.value.deserialize(&bytes))
            .transpose()
    }

    /// Sets the value of the current key in `namespace`.
    pub fn update(
        &self,
        backend: &mut dyn KeyedStateBackend,
        namespace: &N,
        value: &V,
    ) -> Result<()> {
        let ns = to_bytes(&*self.namespace, namespace);
        backend.put_value(&self.name, &ns, &to_bytes(&*self.value, value))
    }

    /// Removes the value of the current key in `namespace`.
    pub fn clear(&self, backend: &mut dyn KeyedStateBackend, namespace: &N) -> Result<()> {
        backend.clear(&self.name, &to_bytes(&*self.namespace, namespace))
    }
}

/// A registered list state: a list of `E` per (key, namespace `N`).
#[derive(Debug, Clone)]
pub struct ListState<N, E> {
    name: String,
    namespace: Arc<dyn TypeSerializer<N>>,
    element: Arc<dyn TypeSerializer<E>>,
}

impl<N, E> ListState<N, E> {
    /// Registers list state `name` in `backend` (or checks the one already there).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] when a state of that name has another kind or serializer.
    pub fn register(
        backend: &mut dyn KeyedStateBackend,
        name: &str,
        namespace: impl TypeSerializer<N> + 'static,
        element: impl TypeSerializer<E> + 'static,
    ) -> Result<Self> {
        Self::register_with(backend, name, namespace, element, None)
    }

    /// Registers list state `name` whose elements expire one by one as `ttl` says, or
    /// never when `None`.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register); also a time to live other than the registered
    /// state's presence of one.
    pub fn register_with(
        backend: &mut dyn KeyedStateBackend,
        name: &str,
        namespace: impl TypeSerializer<N> + 'static,
        element: impl TypeSerializer<E> + 'static,
        ttl: Option<StateTtlConfig>,
    ) -> Result<Self> {
        let mut meta = StateMetaInfo::list(name, namespace.id(), element.id());
        meta.ttl = ttl;
        backend.register_state(&meta)?;
        Ok(ListState {
            name: name.to_owned(),
            namespace: Arc::new(namespace),
            element: Arc::new(element),
        })
    }

    /// The elements of the current key in `namespace` (empty when there are none).
    pub fn get(&self, backend: &dyn KeyedStateBackend, namespace: &N) -> Result<Vec<E>> {
        let ns = to_bytes(&*self.namespace, namespace);
        backend
            .list(&self.name, &ns)?
            .iter()
            .map(|bytes| self.element.deserialize(bytes))
            .collect()
    }

    /// Appends `element` to the list of the current key in `namespace`.
    pub fn add(
        &self,
        backend: &mut dyn KeyedStateBackend,
        namespace: &N,
        element: &E,
    ) -> Result<()> {
        let ns = to_bytes(&*self.namespace, namespace);
        backend.append_to_list(&self.name, &ns, &to_bytes(&*self.element, element))
    }

    /// Replaces the list of the current key in `namespace`.
    pub fn update(
        &self,
        backend: &mut dyn KeyedStateBackend,
        namespace: &N,
        elements: &[E],
    ) -> Result<()> {
        let ns = to_bytes(&*self.namespace, namespace);
        let elements: Vec<Vec<u8>> = elements
            .iter()
            .map(|e| to_bytes(&*self.element, e))
            .collect();
        backend.update_list(&self.name, &ns, &elements)
    }

    /// Removes the list of the current key in `namespace`.
    pub fn clear(&self, backend: &mut dyn KeyedStateBackend, namespace: &N) -> Result<()> {
        backend.clear(&self.name, &to_bytes(&*self.namespace, namespace))
    }
}

/// A registered map state: a map from `K` to `V` per (key, namespace `N`).
#[derive(Debug, Clone)]
pub struct MapState<N, K, V> {
    name: String,
    namespace: Arc<dyn TypeSerializer<N>>,
    user_key: Arc<dyn TypeSerializer<K>>,
    value: Arc<dyn TypeSerializer<V>>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<N, K, V> MapState<N, K, V> {
    /// Registers map state `name` in `backend` (or checks the one already there).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] when a state of that name has another kind or serializer.
    pub fn register(
        backend: &mut dyn KeyedStateBackend,
        name: &str,
        namespace: impl TypeSerializer<N> + 'static,
        user_key: impl TypeSerializer<K> + 'static,
        value: impl TypeSerializer<V> + 'static,
    ) -> Result<Self> {
        Self::register_with(backend, name, namespace, user_key, value, None)
    }

    /// Registers map state `name` whose entries expire one by one as `ttl` says, or never
    /// when `None`.
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register); also a time to live other than the registered
    /// state's presence of one.
    pub fn register_with(
        backend: &mut dyn KeyedStateBackend,
        name: &str,
        namespace: impl TypeSerializer<N> + 'static,
        user_key: impl TypeSerializer<K> + 'static,
        value: impl TypeSerializer<V> + 'static,
        ttl: Option<StateTtlConfig>,
    ) -> Result<Self> {
        let mut meta = StateMetaInfo::map(name, namespace.id(), user_key.id(), value.id());
        meta.ttl = ttl;
        backend.register_state(&meta)?;
        Ok(MapState {
            name: name.to_owned(),
            namespace: Arc::new(namespace),
            user_key: Arc::new(user_key),
            value: Arc::new(value),
            _types: PhantomData,
        })
    }

    /// The value under `user_key` for the current key in `namespace`.
    pub fn get(
        &self,
        backend: &dyn KeyedStateBackend,
        namespace: &N,
        user_key: &K,
    ) -> Result<Option<V>> {
        let ns = to_bytes(&*self.namespace, namespace);
        backend
            .map_value(&self.name, &ns, &to_bytes(&*self.user_key, user_key))?
            .map(|bytes| self.value.deserialize(&bytes))
            .transpose()
    }

    /// Puts `value` under `user_key` for the current key in `namespace`.
    pub fn put(
        &self,
        backend: &mut dyn KeyedStateBackend,
        namespace: &N,
        user_key: &K,
        value: &V,
    ) -> Result<()> {
        let ns = to_bytes(&*self.namespace, namespace);
        let user_key = to_bytes(&*self.user_key, user_key);
        backend.put_map_value(&self.name, &ns, &user_key, &to_bytes(&*self.value, value))
    }

    /// Removes `user_key` for the current key in `namespace`.
    pub fn remove(
        &self,
        backend: &mut dyn KeyedStateBackend,
        namespace: &N,
        user_key: &K,
    ) -> Result<()> {
        let ns = to_bytes(&*self.namespace, namespace);
        backend.remove_map_value(&self.name, &ns, &to_bytes(&*self.user_key, user_key))
    }

    /// Every (user key, value) of the current key in `namespace`, ordered by the user keys' bytes.
    pub fn entries(&self, backend: &dyn KeyedStateBackend, namespace: &N) -> Result<Vec<(K, V)>> {
        let ns = to_bytes(&*self.namespace, namespace);
        backend
            .map_entries(&self.name, &ns)?
            .iter()
            .map(|(k, v)| Ok((self.user_key.deserialize(k)?, self.value.deserialize(v)?)))
            .collect()
    }

    /// Removes the whole map of the current key in `namespace`.
    pub fn clear(&self, backend: &mut dyn KeyedStateBackend, namespace: &N) -> Result<()> {
        backend.clear(&self.name, &to_bytes(&*self.namespace, namespace))
    }
}

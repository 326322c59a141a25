//! [`ValueEntry`]: a value state's entry, its state key and its value in one allocation.
//!
//! A value state's map held the key and the value as two shared byte slices: two
//! allocations per entry (each with its reference counts and the allocator's header) and
//! two places in memory for a snapshot to load per entry. One allocation holds both here:
//! one allocation less per entry restored, one cache miss less per entry encoded, and
//! about 40 bytes less per entry (the benchmark at 10,000,000 keys: a peak of 210 bytes
//! per key against 251). The map is a set of entries, hashed and compared by key
//! only, looked up by the key's bytes ([`Borrow<[u8]>`](Borrow)); writing a value replaces
//! the entry.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::key_group_map::KeyGroupMap;

/// Bytes of the key length that starts an entry.
const LEN: usize = size_of::<usize>();

/// A state key and its value, shared between versions (see the module documentation).
/// Equal, hashed and borrowed as its key alone.
#[derive(Clone)]
pub(crate) struct ValueEntry(Arc<[u8]>);

impl ValueEntry {
    /// The entry of `key` holding `value`.
    pub(crate) fn new(key: &[u8], value: &[u8]) -> Self {
        // Zeroed in place, then filled: one allocation (`Arc::from` a vector would copy).
        let mut bytes: Arc<[u8]> = std::iter::repeat_n(0, LEN + key.len() + value.len()).collect();
        let slot = Arc::get_mut(&mut bytes).expect("invariant: a new allocation is not shared");
        let (len, rest) = slot.split_at_mut(LEN);
        len.copy_from_slice(&key.len().to_ne_bytes());
        let (key_slot, value_slot) = rest.split_at_mut(key.len());
        key_slot.copy_from_slice(key);
        value_slot.copy_from_slice(value);
        ValueEntry(bytes)
    }

    fn key_len(&self) -> usize {
        let mut len = [0u8; LEN];
        len.copy_from_slice(&self.0[..LEN]);
        usize::from_ne_bytes(len)
    }

    /// The state key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0[LEN..LEN + self.key_len()]
    }

    /// The value.
    pub(crate) fn value(&self) -> &[u8] {
        &self.0[LEN + self.key_len()..]
    }

    /// Key and value as stored: the one allocation a snapshot loads.
    pub(crate) fn stored(&self) -> &[u8] {
        &self.0
    }

    /// Whether `self` and `other` are the same allocation (the same write).
    pub(crate) fn ptr_eq(&self, other: &ValueEntry) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl KeyGroupMap<(), ValueEntry> {
    /// The entry of `key`.
    pub(crate) fn entry(&self, key: &[u8]) -> Option<&ValueEntry> {
        self.get_key_value(key).map(|(entry, ())| entry)
    }

    /// The value of `key`.
    pub(crate) fn value(&self, key: &[u8]) -> Option<&[u8]> {
        self.entry(key).map(ValueEntry::value)
    }

    /// Sets `key` to `value`.
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        self.insert(ValueEntry::new(key, value), ());
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &ValueEntry> {
        self.keys()
    }
}

impl std::fmt::Debug for ValueEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueEntry")
            .field("key", &self.key())
            .field("value_len", &self.value().len())
            .finish()
    }
}

impl PartialEq for ValueEntry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ValueEntry {}

impl Hash for ValueEntry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes: `Borrow<[u8]>` requires the same hash for lookups by key.
        self.key().hash(state);
    }
}

impl Borrow<[u8]> for ValueEntry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn an_entry_gives_back_its_key_and_value_and_is_found_by_its_key() {
        for (key, value) in [
            (&b""[..], &b""[..]),
            (b"k", b""),
            (b"", b"v"),
            (b"key", b"value"),
        ] {
            let entry = ValueEntry::new(key, value);
            assert_eq!(entry.key(), key);
            assert_eq!(entry.value(), value);
            assert_eq!(entry.stored().len(), LEN + key.len() + value.len());
            let hasher = std::collections::hash_map::RandomState::new();
            assert_eq!(hasher.hash_one(&entry), hasher.hash_one(key));
        }
        let mut set = imbl::HashSet::new();
        set.insert(ValueEntry::new(b"a", b"1"));
        set.insert(ValueEntry::new(b"b", b"2"));
        // The same key with another value is the same entry.
        assert_eq!(ValueEntry::new(b"a", b"1"), ValueEntry::new(b"a", b"9"));
        assert!(set.contains(&b"a"[..]));
        assert!(!set.contains(&b"c"[..]));
        let mut map = imbl::HashMap::new();
        map.insert(ValueEntry::new(b"a", b"1"), ());
        map.insert(ValueEntry::new(b"a", b"2"), ());
        assert_eq!(map.len(), 1);
        let (entry, ()) = map.get_key_value(&b"a"[..]).unwrap();
        assert_eq!(entry.value(), b"2", "a write replaces the entry");
    }
}

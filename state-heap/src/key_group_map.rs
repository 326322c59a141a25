//! The map of one state's entries in one key group: persistent hash maps (`imbl`) split by
//! extendible hashing so that each holds a number of entries at which its trie is dense.
//!
//! A hash array mapped trie spends memory on the nodes of its last, partly filled level:
//! with `imbl`'s 32-way nodes, between about 64 and 230 bytes per entry (besides the
//! entry), depending on where the entry count falls between two powers of 32 (measured:
//! about 66 bytes at 12,000-18,000 entries, 230 at 45,000-55,000, 220 at 78,000). One map
//! per key group made the memory per key of a 10,000,000-key backend a third higher than
//! at 1,000,000 keys. Here a key group's map is split into parts: a part that grows past
//! [`PART_ENTRIES`] gives the entries whose hash has the next bit set to a new part, so
//! parts hold between about half and all of that, where the tries are densest, and no
//! write moves more than one part's entries, however large the key group.
//!
//! Parts are found through a directory indexed by the low bits of a hash independent of
//! the tries' own, with keys random per map, so that keys chosen to collide cannot make a
//! part split over and over; past [`MAX_DEPTH`] bits a part only grows. Parts are never merged back: a key group that shrinks keeps its parts.
//! Directory and parts are shared between clones, so a clone (a snapshot's version) is
//! O(1); the first write after it copies the list of part roots (O(parts)), not entries.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use crate::table::Bytes;

/// Entries past which a part splits in two.
pub(crate) const PART_ENTRIES: usize = 20_000;

/// Hash bits a directory uses at most: a million parts, billions of entries per key group.
const MAX_DEPTH: u32 = 20;

/// One part: a trie and how many low hash bits all its keys share (its depth).
#[derive(Debug, Clone)]
struct Part<K, V> {
    map: imbl::HashMap<K, V>,
    depth: u32,
}

/// One state's entries of one key group (see the module documentation), keyed by `K`: the
/// state key, or an entry that holds it ([`ValueEntry`](crate::value_entry::ValueEntry)),
/// found by the key's bytes either way.
#[derive(Debug, Clone)]
pub(crate) struct KeyGroupMap<V, K = Bytes> {
    /// Part index by the low `log2(len)` bits of a key's hash.
    directory: Arc<Vec<u32>>,
    parts: Arc<Vec<Part<K, V>>>,
    /// The hash that picks a part (SipHash with keys of this map's own).
    hasher: RandomState,
}

impl<V: Clone, K: Borrow<[u8]> + Hash + Eq + Clone> Default for KeyGroupMap<V, K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone, K: Borrow<[u8]> + Hash + Eq + Clone> KeyGroupMap<V, K> {
    /// An empty map of one part.
    pub(crate) fn new() -> Self {
        KeyGroupMap {
            directory: Arc::new(vec![0]),
            parts: Arc::new(vec![Part {
                map: imbl::HashMap::new(),
                depth: 0,
            }]),
            hasher: RandomState::new(),
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|part| part.map.len()).sum()
    }

    /// The index of the part holding `key`.
    fn part_of(&self, key: &[u8]) -> usize {
        match self.directory.len() {
            1 => 0,
            len => self.directory[self.part_hash(key) & (len - 1)] as usize,
        }
    }

    /// The hash that picks the part of `key`.
    fn part_hash(&self, key: &[u8]) -> usize {
        self.hasher.hash_one(key) as usize
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&V> {
        self.parts[self.part_of(key)].map.get(key)
    }

    /// The stored key equal to `key`, with its value.
    pub(crate) fn get_key_value(&self, key: &[u8]) -> Option<(&K, &V)> {
        self.parts[self.part_of(key)].map.get_key_value(key)
    }

    /// The value of `key`, to change in place (its trie path is copied first if a clone
    /// still shares it).
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let part = self.part_of(key);
        Arc::make_mut(&mut self.parts)[part].map.get_mut(key)
    }

    /// Sets `key` to `value`, returning the value it replaced (the key is replaced too).
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let part = self.part_of(key.borrow());
        let map = &mut Arc::make_mut(&mut self.parts)[part].map;
        let old = map.insert(key, value);
        if old.is_none() && map.len() > PART_ENTRIES && self.parts[part].depth < MAX_DEPTH {
            self.split(part);
        }
        old
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let part = self.part_of(key);
        Arc::make_mut(&mut self.parts)[part].map.remove(key)
    }

    /// Every entry, part by part, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|part| part.map.iter())
    }

    /// Prepares an empty map for about `entries` entries (a restore's estimate): splits it
    /// up front into the fewest parts that hold them at [`PART_ENTRIES`] each, so that
    /// loading them moves no entry from part to part. A map that is not empty, or
    /// already split, is left alone. An estimate too low only leaves splits to come; one
    /// too high leaves parts emptier than splitting would (parts are never merged).
    pub(crate) fn reserve(&mut self, entries: usize) {
        if self.directory.len() != 1 || !self.parts[0].map.is_empty() {
            return;
        }
        let mut depth = 0;
        while depth < MAX_DEPTH && entries > PART_ENTRIES << depth {
            depth += 1;
        }
        if depth == 0 {
            return;
        }
        let count = 1u32 << depth;
        self.directory = Arc::new((0..count).collect());
        self.parts = Arc::new(
            (0..count)
                .map(|_| Part {
                    map: imbl::HashMap::new(),
                    depth,
                })
                .collect(),
        );
    }

    /// Every key, in the order of [`iter`](Self::iter).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.parts.iter().flat_map(|part| part.map.keys())
    }

    /// Moves the entries of part `index` whose hash has bit `depth` set into a new part.
    fn split(&mut self, index: usize) {
        let hasher = &self.hasher;
        let parts = Arc::make_mut(&mut self.parts);
        let directory = Arc::make_mut(&mut self.directory);
        let depth = parts[index].depth;
        if 1usize << depth == directory.len() {
            directory.extend_from_within(..);
        }
        let bit = 1usize << depth;
        let moving: Vec<K> = (parts[index].map.keys())
            .filter(|key| hasher.hash_one::<&[u8]>((*key).borrow()) as usize & bit != 0)
            .cloned()
            .collect();
        let mut moved = imbl::HashMap::new();
        let old = &mut parts[index];
        for key in moving {
            if let Some((key, value)) = old.map.remove_with_key::<[u8]>(key.borrow()) {
                moved.insert(key, value);
            }
        }
        old.depth = depth + 1;
        // Directories index parts by u32: 4 billion parts of 10,000 entries is past any heap.
        let new = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        parts.push(Part {
            map: moved,
            depth: depth + 1,
        });
        for (slot, part) in directory.iter_mut().enumerate() {
            if *part as usize == index && slot & bit != 0 {
                *part = new;
            }
        }
    }

    /// Entries of each part.
    #[cfg(test)]
    pub(crate) fn part_sizes(&self) -> Vec<usize> {
        self.parts.iter().map(|part| part.map.len()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn key(i: u64) -> Bytes {
        Arc::from(&i.to_be_bytes()[..])
    }

    /// Through splits, removals and overwrites the map holds exactly what a plain map
    /// does, and a clone taken before keeps its entries.
    #[test]
    fn splits_keep_every_entry_and_clones_keep_theirs() {
        let mut map = KeyGroupMap::new();
        let mut model = HashMap::new();
        let mut snapshot = None;
        for i in 0..(PART_ENTRIES as u64 * 5) {
            assert_eq!(map.insert(key(i), i), None);
            model.insert(i, i);
            if i % 3 == 0 {
                assert_eq!(map.insert(key(i / 2), i), model.insert(i / 2, i));
            }
            if i % 7 == 0 {
                assert_eq!(map.remove(&key(i / 3)[..]), model.remove(&(i / 3)));
            }
            if i == PART_ENTRIES as u64 {
                snapshot = Some((map.clone(), model.clone()));
            }
        }
        assert!(map.part_sizes().len() >= 4, "{:?}", map.part_sizes());
        assert_eq!(map.len(), model.len());
        assert_eq!(map.iter().count(), model.len());
        for (k, v) in &model {
            assert_eq!(map.get(&key(*k)[..]), Some(v), "key {k}");
        }
        for (k, v) in map.iter() {
            let k = u64::from_be_bytes(k[..].try_into().unwrap());
            assert_eq!(model.get(&k), Some(v), "key {k}");
        }
        if let Some(value) = map.get_mut(&key(1)[..]) {
            *value = 42;
        }
        assert_eq!(map.get(&key(1)[..]), Some(&42));

        let (held, held_model) = snapshot.unwrap();
        assert_eq!(held.len(), held_model.len());
        for (k, v) in &held_model {
            assert_eq!(held.get(&key(*k)[..]), Some(v), "held key {k}");
        }
        assert!(held.get(&key(PART_ENTRIES as u64 * 4)[..]).is_none());
    }

    /// A map reserved for its entries holds them in as many parts as splitting would
    /// make, none moved (each part's depth is the reserved one) and none over the limit;
    /// it behaves as any other map afterwards.
    #[test]
    fn a_reserved_map_holds_its_entries_without_splitting() {
        let entries = PART_ENTRIES * 7 / 2;
        let mut map = KeyGroupMap::new();
        map.reserve(entries);
        assert_eq!(map.part_sizes().len(), 4);
        for i in 0..entries as u64 {
            map.insert(key(i), i);
        }
        let sizes = map.part_sizes();
        assert_eq!(sizes.len(), 4, "{sizes:?}");
        assert!(map.parts.iter().all(|part| part.depth == 2));
        assert!(sizes.iter().all(|size| *size <= PART_ENTRIES), "{sizes:?}");
        assert_eq!(map.len(), entries);
        for i in 0..entries as u64 {
            assert_eq!(map.get(&key(i)[..]), Some(&i), "key {i}");
        }
        // More than reserved: parts split as usual.
        for i in entries as u64..(entries * 2) as u64 {
            map.insert(key(i), i);
        }
        assert!(map.part_sizes().len() > 4);
        assert!(map.part_sizes().iter().all(|size| *size <= PART_ENTRIES));
        assert_eq!(map.iter().count(), entries * 2);

        // A map holding entries is not reserved again.
        let mut small = KeyGroupMap::new();
        small.insert(key(1), 1);
        small.reserve(entries);
        assert_eq!(small.part_sizes(), vec![1]);
        let mut tiny = KeyGroupMap::<u64>::new();
        tiny.reserve(10);
        assert_eq!(tiny.part_sizes(), vec![0]);
    }

    /// Every part holds between about half of and all of [`PART_ENTRIES`].
    #[test]
    fn parts_stay_in_their_band() {
        let mut map = KeyGroupMap::new();
        for i in 0..(PART_ENTRIES as u64 * 6) {
            map.insert(key(i), ());
        }
        let sizes = map.part_sizes();
        let (least, most) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*most <= PART_ENTRIES, "{sizes:?}");
        assert!(*least >= PART_ENTRIES * 2 / 5, "{sizes:?}");
    }
}

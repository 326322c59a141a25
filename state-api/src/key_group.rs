//! Key groups: the unit in which keyed state is partitioned, snapshotted and rescaled.
//!
//! Every key is hashed into one of `max_parallelism` key groups, and every parallel
//! instance of an operator owns one contiguous [`KeyGroupRange`] of them. Snapshots are
//! written key group by key group, so that a restore after rescaling reads only the key
//! groups the new instance owns. The formulas of [`MaxParallelism`] follow Flink's, except
//! that snapstate hashes the *serialized* key ([`key_hash`]), not the key's `hashCode()`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The largest key group that can exist.
const MAX_KEY_GROUP: u32 = MaxParallelism::UPPER_BOUND - 1;

/// One key group: a number below [`MaxParallelism::UPPER_BOUND`], so at most 32767.
///
/// Made by [`KeyGroup::new`], by [`MaxParallelism::key_group_of`] for a key, or by
/// iterating a [`KeyGroupRange`]; it displays as the bare number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyGroup(u32);

impl KeyGroup {
    /// `key_group`, checked to be at most 32767 ([`Error::InvalidArgument`] if not).
    pub fn new(key_group: u32) -> Result<Self> {
        match key_group <= MAX_KEY_GROUP {
            true => Ok(KeyGroup(key_group)),
            false => Err(Error::InvalidArgument(format!(
                "key group {key_group} is above the largest possible key group {MAX_KEY_GROUP}"
            ))),
        }
    }

    /// The key group's number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for KeyGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The key groups of a [`KeyGroupRange`] in ascending order: [`KeyGroupRange::iter`].
pub type KeyGroups = std::iter::Map<std::ops::RangeInclusive<u32>, fn(u32) -> KeyGroup>;

/// An inclusive range of key groups, possibly empty.
///
/// A non-empty range is built with [`KeyGroupRange::new`]; the only empty range is
/// [`KeyGroupRange::EMPTY`]. Key groups are below [`MaxParallelism::UPPER_BOUND`], so a
/// range holds at most 32768 key groups and its [`len`](Self::len) always fits in a `u32`.
/// It serializes as `{"start": s, "end": e}`; the empty range as `{"start": 1, "end": 0}`.
///
/// # Examples
///
/// ```
/// use state_api::{KeyGroup, KeyGroupRange};
///
/// let range = KeyGroupRange::new(0, 127)?;
/// assert_eq!(range.len(), 128);
/// assert!(range.contains(KeyGroup::new(42)?));
/// assert_eq!(range.position(KeyGroup::new(42)?), Some(42));
/// assert_eq!(range.to_string(), "key groups 0..=127");
///
/// let upper = KeyGroupRange::new(100, 200)?;
/// assert_eq!(range.intersection(&upper), KeyGroupRange::new(100, 127)?);
///
/// let disjoint = KeyGroupRange::new(128, 255)?;
/// assert!(range.intersection(&disjoint).is_empty());
/// assert_eq!(KeyGroupRange::EMPTY.iter().count(), 0);
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawKeyGroupRange")]
pub struct KeyGroupRange {
    start: u32,
    end: u32,
}

/// The serialized shape of a [`KeyGroupRange`], validated on deserialization.
#[derive(Debug, Deserialize)]
#[serde(rename = "KeyGroupRange")]
struct RawKeyGroupRange {
    start: u32,
    end: u32,
}

impl TryFrom<RawKeyGroupRange> for KeyGroupRange {
    type Error = Error;

    fn try_from(raw: RawKeyGroupRange) -> Result<Self> {
        if raw.start == Self::EMPTY.start && raw.end == Self::EMPTY.end {
            Ok(Self::EMPTY)
        } else {
            Self::new(raw.start, raw.end)
        }
    }
}

impl KeyGroupRange {
    /// The range without any key group: its [`start`](Self::start) is 1 and its
    /// [`end`](Self::end) 0, so that iterating it yields nothing.
    pub const EMPTY: Self = Self { start: 1, end: 0 };

    /// The non-empty range `start..=end`. [`Error::InvalidArgument`] if `end < start` (use
    /// [`KeyGroupRange::EMPTY`] for the empty range) or `end` is above the largest possible
    /// key group, `MaxParallelism::UPPER_BOUND - 1` (32767).
    pub fn new(start: u32, end: u32) -> Result<Self> {
        if end < start {
            return Err(Error::InvalidArgument(format!(
                "key-group range {start}..={end} ends before it starts"
            )));
        }
        KeyGroup::new(end)?;
        Ok(Self { start, end })
    }

    /// The first key group of the range; 1 for the empty range.
    pub const fn start(&self) -> KeyGroup {
        KeyGroup(self.start)
    }

    /// The last key group of the range (inclusive); 0 for the empty range.
    pub const fn end(&self) -> KeyGroup {
        KeyGroup(self.end)
    }

    /// True if the range holds no key group.
    pub const fn is_empty(&self) -> bool {
        self.end < self.start
    }

    /// The number of key groups in the range.
    pub const fn len(&self) -> u32 {
        if self.is_empty() {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// True if `key_group` lies in the range.
    pub const fn contains(&self, key_group: KeyGroup) -> bool {
        self.start <= key_group.0 && key_group.0 <= self.end
    }

    /// The index of `key_group` in the range (0 for its start); `None` outside of it.
    pub fn position(&self, key_group: KeyGroup) -> Option<usize> {
        self.contains(key_group)
            .then(|| (key_group.0 - self.start) as usize)
    }

    /// The key groups in both ranges; [`KeyGroupRange::EMPTY`] if they are disjoint.
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        if start <= end {
            Self { start, end }
        } else {
            Self::EMPTY
        }
    }

    /// The key groups of the range, in ascending order.
    pub fn iter(&self) -> KeyGroups {
        (self.start..=self.end).map(KeyGroup)
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("empty key-group range")
        } else {
            write!(f, "key groups {}..={}", self.start, self.end)
        }
    }
}

/// A job's max parallelism: its number of key groups, in `1..=MaxParallelism::UPPER_BOUND`,
/// with the formulas (Flink's `KeyGroupRangeAssignment`) that map keys to key groups and
/// key groups to operator instances:
///
/// - a key's key group is `murmur_hash(key_hash(key)) % max_parallelism`
///   ([`key_group_of`](Self::key_group_of));
/// - operator instance `i` of `parallelism` owns the key groups
///   `ceil(i * max_parallelism / parallelism) ..= ceil((i + 1) * max_parallelism / parallelism) - 1`
///   ([`range_for`](Self::range_for));
/// - key group `g` belongs to instance `g * parallelism / max_parallelism`
///   ([`operator_of`](Self::operator_of)).
///
/// The formulas are part of the snapshot format: changing one moves keys between key groups
/// and breaks restoring existing snapshots. A value is valid by construction, so the
/// formulas on the hot path of every state access check nothing again. It serializes as the
/// bare number and refuses an invalid one when deserialized.
///
/// # Examples
///
/// ```
/// use state_api::{KeyGroupRange, MaxParallelism};
///
/// let max_parallelism = MaxParallelism::new(128)?;
/// let key_group = max_parallelism.key_group_of(b"hello");
/// assert_eq!(key_group.get(), 63);
///
/// let operator = max_parallelism.operator_of(key_group, 3)?;
/// let owned = max_parallelism.range_for(operator, 3)?;
/// assert_eq!(owned, KeyGroupRange::new(43, 85)?);
/// assert!(owned.contains(key_group));
/// assert!(MaxParallelism::new(0).is_err());
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MaxParallelism(u32);

impl<'de> Deserialize<'de> for MaxParallelism {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        MaxParallelism::new(u32::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<u32> for MaxParallelism {
    type Error = Error;

    fn try_from(value: u32) -> Result<Self> {
        MaxParallelism::new(value)
    }
}

impl fmt::Display for MaxParallelism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl MaxParallelism {
    /// The largest max parallelism, `1 << 15`: key groups are numbered below it and fit
    /// in a two-byte key prefix.
    pub const UPPER_BOUND: u32 = 1 << 15;

    /// The smallest max parallelism [`default_for`](Self::default_for) picks, `1 << 7`.
    pub const DEFAULT_LOWER_BOUND: u32 = 1 << 7;

    /// `max_parallelism`, checked to be in `1..=UPPER_BOUND`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the value and the bound.
    pub fn new(max_parallelism: u32) -> Result<Self> {
        match (1..=Self::UPPER_BOUND).contains(&max_parallelism) {
            true => Ok(MaxParallelism(max_parallelism)),
            false => Err(Error::InvalidArgument(format!(
                "max parallelism {max_parallelism} is outside of 1..={}",
                Self::UPPER_BOUND
            ))),
        }
    }

    /// `max_parallelism` for constants (`const MAX: MaxParallelism = MaxParallelism::of(128);`);
    /// use [`new`](Self::new) for values read at run time.
    ///
    /// # Panics
    ///
    /// For a value outside `1..=UPPER_BOUND`: in a constant, at compile time.
    pub const fn of(max_parallelism: u32) -> Self {
        assert!(
            max_parallelism >= 1 && max_parallelism <= Self::UPPER_BOUND,
            "max parallelism outside of 1..=32768"
        );
        MaxParallelism(max_parallelism)
    }

    /// The number of key groups.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The max parallelism of an operator of `parallelism` when none is configured:
    /// `1.5 * parallelism` rounded up to a power of two, clamped to
    /// `DEFAULT_LOWER_BOUND..=UPPER_BOUND`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless `parallelism` is in `1..=UPPER_BOUND`.
    pub fn default_for(parallelism: u32) -> Result<Self> {
        if !(1..=Self::UPPER_BOUND).contains(&parallelism) {
            return Err(Error::InvalidArgument(format!(
                "parallelism {parallelism} is outside of 1..={}",
                Self::UPPER_BOUND
            )));
        }
        // At most 49152, so neither the sum nor its power of two overflows.
        Ok(MaxParallelism(
            (parallelism + parallelism / 2)
                .next_power_of_two()
                .clamp(Self::DEFAULT_LOWER_BOUND, Self::UPPER_BOUND),
        ))
    }

    /// Every key group: `0..=max_parallelism - 1`.
    pub fn all(self) -> KeyGroupRange {
        KeyGroupRange {
            start: 0,
            end: self.0 - 1,
        }
    }

    /// The key group of the key hash `hash`: `murmur_hash(hash) % max_parallelism`.
    pub const fn key_group_of_hash(self, hash: i32) -> KeyGroup {
        KeyGroup(murmur_hash(hash) % self.0)
    }

    /// The key group of the serialized key `key`.
    pub fn key_group_of(self, key: &[u8]) -> KeyGroup {
        self.key_group_of_hash(key_hash(key))
    }

    /// The key groups owned by operator instance `operator` out of `parallelism`. The
    /// ranges of all instances are contiguous, disjoint, non-empty and together cover
    /// every key group.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless `1 <= parallelism <= max_parallelism` and
    /// `operator < parallelism`.
    pub fn range_for(self, operator: u32, parallelism: u32) -> Result<KeyGroupRange> {
        self.check_parallelism(parallelism)?;
        if operator >= parallelism {
            return Err(Error::InvalidArgument(format!(
                "operator index {operator} is not below the parallelism {parallelism}"
            )));
        }
        let (max, parallelism, index) = (
            u64::from(self.0),
            u64::from(parallelism),
            u64::from(operator),
        );
        // Both ends are below the max parallelism, so they fit in a u32.
        let start = (index * max).div_ceil(parallelism) as u32;
        let end = (((index + 1) * max).div_ceil(parallelism) - 1) as u32;
        KeyGroupRange::new(start, end)
    }

    /// The operator instance, out of `parallelism`, that owns `key_group`:
    /// `key_group * parallelism / max_parallelism`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless `1 <= parallelism <= max_parallelism` and
    /// `key_group < max_parallelism`.
    pub fn operator_of(self, key_group: KeyGroup, parallelism: u32) -> Result<u32> {
        self.check_parallelism(parallelism)?;
        if key_group.0 >= self.0 {
            return Err(Error::InvalidArgument(format!(
                "key group {key_group} is not below the max parallelism {self}"
            )));
        }
        // Below `parallelism`, so it fits in a u32.
        Ok((u64::from(key_group.0) * u64::from(parallelism) / u64::from(self.0)) as u32)
    }

    /// The number of bytes of the key-group prefix of keys in a key-value store: 1 up to
    /// 128 key groups, else 2.
    pub const fn prefix_bytes(self) -> usize {
        if self.0 > 128 { 2 } else { 1 }
    }

    fn check_parallelism(self, parallelism: u32) -> Result<()> {
        match (1..=self.0).contains(&parallelism) {
            true => Ok(()),
            false => Err(Error::InvalidArgument(format!(
                "parallelism {parallelism} is outside of 1..={} (the max parallelism)",
                self.0
            ))),
        }
    }
}

/// The multiplication constants of murmur3_x86_32.
const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Scrambles one 4-byte block of murmur3_x86_32.
const fn mix_k1(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

/// Folds a scrambled block into the murmur3_x86_32 state.
const fn mix_h1(h: u32, k: u32) -> u32 {
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// The murmur3 finalization mix.
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Flink's `MathUtils.murmurHash(int)`, which spreads a 32-bit hash code: murmur3_x86_32
/// with seed 0 over the four little-endian bytes of `code`, read as an `i32` `h` and made
/// non-negative (`-h` if `h < 0`, 0 for `i32::MIN`), so below `2^31`.
pub const fn murmur_hash(code: i32) -> u32 {
    let h = fmix32(mix_h1(0, mix_k1(code.cast_unsigned())) ^ 4);
    match h.cast_signed() {
        i32::MIN => 0,
        signed => signed.unsigned_abs(),
    }
}

/// The stable hash of a serialized key, part of the snapshot format since it decides the
/// key's key group: murmur3_x86_32 with seed 0, read as an `i32`.
///
/// Precisely, the standard algorithm: with `h = 0`, each full 4-byte block of `key`,
/// read little-endian as `k`, is mixed in as `k *= 0xcc9e2d51; k = rotl(k, 15);
/// k *= 0x1b873593; h ^= k; h = rotl(h, 13); h = h * 5 + 0xe6546b64`; the 1 to 3
/// remaining bytes, packed little-endian into `k`, are mixed in as
/// `k *= 0xcc9e2d51; k = rotl(k, 15); k *= 0x1b873593; h ^= k`; then
/// `h ^= key.len()` (modulo `2^32`) and the finalization `h ^= h >> 16;
/// h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16`. All arithmetic wraps
/// at 32 bits, shifts are logical, and the final `u32` is reinterpreted as an `i32`.
///
/// # Examples
///
/// ```
/// use state_api::key_group::key_hash;
///
/// assert_eq!(key_hash(b""), 0);
/// assert_eq!(key_hash(b"hello"), 0x248b_fa47);
/// ```
pub fn key_hash(key: &[u8]) -> i32 {
    let (blocks, tail) = key.as_chunks::<4>();
    let mut h = blocks
        .iter()
        .fold(0, |h, block| mix_h1(h, mix_k1(u32::from_le_bytes(*block))));
    if !tail.is_empty() {
        let k = tail
            .iter()
            .rev()
            .fold(0, |k, &byte| (k << 8) | u32::from(byte));
        h ^= mix_k1(k);
    }
    // The standard algorithm takes the length as a 32-bit integer.
    h ^= key.len() as u32;
    fmix32(h).cast_signed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mp(max_parallelism: u32) -> MaxParallelism {
        MaxParallelism::new(max_parallelism).unwrap()
    }

    fn kg(key_group: u32) -> KeyGroup {
        KeyGroup::new(key_group).unwrap()
    }

    fn range(start: u32, end: u32) -> KeyGroupRange {
        KeyGroupRange::new(start, end).unwrap()
    }

    /// Asserts that `result` is an `InvalidArgument` whose message mentions every one of
    /// `values`.
    #[track_caller]
    fn check_invalid<T: fmt::Debug>(result: Result<T>, values: &[&str]) {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let message = err.to_string();
        assert_eq!(message, message.to_lowercase(), "{message}");
        for value in values {
            assert!(message.contains(value), "{message:?} lacks {value:?}");
        }
    }

    // ---- hash vectors ----
    //
    // The murmur_hash vectors were cross-checked against Flink's formula with a separate
    // Python implementation of `MathUtils.murmurHash(int)` and, independently, as
    // `abs(mmh3.hash(struct.pack('<i', code), 0))` with the `mmh3` package. The key_hash
    // vectors are standard murmur3_x86_32 (seed 0) vectors, checked with the same Python
    // implementation and with `mmh3.hash(bytes, 0, signed=True)`.

    #[track_caller]
    fn check_murmur(code: i32, expected: u32) {
        assert_eq!(murmur_hash(code), expected, "murmur_hash({code})");
    }

    #[test]
    fn murmur_hash_matches_flink() {
        check_murmur(1, 68_075_478);
        check_murmur(-1, 1_982_413_648);
        check_murmur(0, 593_689_054);
        check_murmur(42, 1_134_849_565);
        check_murmur(128, 132_521_001);
        check_murmur(-128, 1_319_572_171);
        check_murmur(123_456_789, 1_088_346_449);
        check_murmur(i32::MAX, 1_653_689_534);
        check_murmur(i32::MIN, 1_718_298_732);
    }

    #[track_caller]
    fn check_key_hash(key: &[u8], expected: u32) {
        assert_eq!(key_hash(key), expected.cast_signed(), "key_hash({key:?})");
    }

    #[test]
    fn key_hash_is_murmur3_x86_32() {
        check_key_hash(b"", 0);
        check_key_hash(b"a", 0x3c25_69b2);
        check_key_hash(b"ab", 0x9bbf_d75f);
        check_key_hash(b"abc", 0xb3dd_93fa);
        check_key_hash(b"abcd", 0x43ed_676a);
        check_key_hash(b"abcde", 0xe89b_9af6);
        check_key_hash(b"hello", 0x248b_fa47);
        check_key_hash(b"The quick brown fox jumps over the lazy dog", 0x2e4f_f723);
        check_key_hash(&[0xff], 0xfd6c_f10d);
        check_key_hash(&[0, 0, 0, 0], 0x2362_f9de);
        let bytes: Vec<u8> = (0..17).collect();
        check_key_hash(&bytes, 0xcbe5_8dc6);
    }

    #[track_caller]
    fn check_key_group(key: &[u8], max_parallelism: u32, expected: u32) {
        assert_eq!(
            mp(max_parallelism).key_group_of(key),
            kg(expected),
            "assign_to_key_group({key:?}, {max_parallelism})"
        );
    }

    /// Pins the key-to-key-group mapping, which snapshots depend on (cross-checked with
    /// the same Python implementation).
    #[test]
    fn assign_to_key_group_is_stable() {
        check_key_group(b"", 128, 94);
        check_key_group(b"hello", 128, 63);
        check_key_group(b"hello", 32768, 31_807);
        check_key_group(b"a", 10, 1);
        check_key_group(b"The quick brown fox jumps over the lazy dog", 4096, 929);
        check_key_group(b"anything", 1, 0);
    }

    #[test]
    fn compute_key_group_for_key_hash_reduces_murmur_hash() {
        assert_eq!(mp(128).key_group_of_hash(1), kg(68_075_478 % 128));
        assert_eq!(mp(1000).key_group_of_hash(-1), kg(1_982_413_648 % 1000));
    }

    // ---- KeyGroupRange ----

    #[test]
    fn empty_range() {
        let empty = KeyGroupRange::EMPTY;
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!((empty.start(), empty.end()), (kg(1), kg(0)));
        assert!(!empty.contains(kg(0)));
        assert!(!empty.contains(kg(1)));
        assert_eq!(empty.position(kg(1)), None);
        assert_eq!(empty.iter().count(), 0);
        assert_eq!(empty.to_string(), "empty key-group range");
    }

    #[test]
    fn non_empty_range() {
        let r = range(3, 7);
        assert!(!r.is_empty());
        assert_eq!(r.len(), 5);
        assert_eq!((r.start(), r.end()), (kg(3), kg(7)));
        let numbers = |groups: &mut dyn Iterator<Item = KeyGroup>| -> Vec<u32> {
            groups.map(KeyGroup::get).collect()
        };
        assert_eq!(numbers(&mut r.iter()), [3, 4, 5, 6, 7]);
        assert_eq!(numbers(&mut r.iter().rev()), [7, 6, 5, 4, 3]);
        let positions: Vec<_> = (2..=8).map(|n| r.position(kg(n))).collect();
        assert_eq!(
            positions,
            [None, Some(0), Some(1), Some(2), Some(3), Some(4), None]
        );
        assert_eq!(r.to_string(), "key groups 3..=7");
    }

    #[test]
    fn single_and_full_ranges() {
        let single = range(9, 9);
        assert_eq!(single.len(), 1);
        assert_eq!(single.iter().collect::<Vec<_>>(), [kg(9)]);
        let full = range(0, MAX_KEY_GROUP);
        assert_eq!(full.len(), MaxParallelism::UPPER_BOUND);
    }

    #[test]
    fn contains() {
        let r = range(3, 7);
        let inside: Vec<u32> = (0..=9).filter(|&n| r.contains(kg(n))).collect();
        assert_eq!(inside, [3, 4, 5, 6, 7]);
        assert!(range(0, 0).contains(kg(0)) && !range(0, 0).contains(kg(1)));
        assert!(!KeyGroupRange::EMPTY.contains(kg(MAX_KEY_GROUP)));
    }

    #[track_caller]
    fn check_intersection(a: KeyGroupRange, b: KeyGroupRange, expected: KeyGroupRange) {
        assert_eq!(a.intersection(&b), expected, "{a} ∩ {b}");
        assert_eq!(b.intersection(&a), expected, "{b} ∩ {a}");
    }

    #[test]
    fn intersection() {
        let empty = KeyGroupRange::EMPTY;
        // disjoint
        check_intersection(range(0, 3), range(4, 9), empty);
        check_intersection(range(0, 3), range(10, 20), empty);
        // overlapping
        check_intersection(range(0, 5), range(3, 9), range(3, 5));
        check_intersection(range(0, 5), range(5, 9), range(5, 5));
        // contained
        check_intersection(range(0, 100), range(10, 20), range(10, 20));
        check_intersection(range(10, 20), range(10, 20), range(10, 20));
        // with the empty range
        check_intersection(range(0, 5), empty, empty);
        check_intersection(range(1, 1), empty, empty);
        check_intersection(range(0, 0), empty, empty);
        check_intersection(empty, empty, empty);
    }

    #[test]
    fn invalid_ranges() {
        check_invalid(KeyGroupRange::new(5, 4), &["5..=4"]);
        check_invalid(KeyGroupRange::new(1, 0), &["1..=0"]);
        check_invalid(KeyGroupRange::new(0, 32_768), &["32768", "32767"]);
        check_invalid(KeyGroupRange::new(0, u32::MAX), &["4294967295"]);
        check_invalid(KeyGroup::new(40_000), &["40000", "32767"]);
        assert_eq!(KeyGroup::new(32_767).map(KeyGroup::get).ok(), Some(32_767));
    }

    #[track_caller]
    fn check_range_json(r: KeyGroupRange, json: &str) {
        assert_eq!(serde_json::to_string(&r).unwrap(), json);
        assert_eq!(serde_json::from_str::<KeyGroupRange>(json).unwrap(), r);
    }

    #[test]
    fn range_serde_round_trip() {
        check_range_json(range(0, 127), r#"{"start":0,"end":127}"#);
        check_range_json(range(5, 5), r#"{"start":5,"end":5}"#);
        check_range_json(KeyGroupRange::EMPTY, r#"{"start":1,"end":0}"#);
    }

    #[test]
    fn range_serde_rejects_invalid_ranges() {
        for json in [
            r#"{"start":5,"end":4}"#,
            r#"{"start":0,"end":40000}"#,
            r#"{"start":0}"#,
        ] {
            let err = serde_json::from_str::<KeyGroupRange>(json).unwrap_err();
            assert!(err.is_data(), "{json}: {err}");
        }
    }

    // ---- MaxParallelism ----

    #[test]
    fn check_max_parallelism_bounds() {
        assert_eq!(mp(1).get(), 1);
        assert_eq!(mp(128).all(), range(0, 127));
        assert_eq!(mp(32_768).get(), 32_768);
        check_invalid(MaxParallelism::new(0), &["max parallelism 0", "32768"]);
        check_invalid(MaxParallelism::new(32_769), &["32769"]);
        check_invalid(MaxParallelism::new(u32::MAX), &["4294967295"]);
        assert_eq!(serde_json::to_string(&mp(256)).unwrap(), "256");
        assert_eq!(
            serde_json::from_str::<MaxParallelism>("256").unwrap(),
            mp(256)
        );
        let err = serde_json::from_str::<MaxParallelism>("0").unwrap_err();
        assert!(err.to_string().contains("max parallelism 0"), "{err}");
    }

    #[track_caller]
    fn check_default_max_parallelism(parallelism: u32, expected: u32) {
        let found = MaxParallelism::default_for(parallelism).unwrap().get();
        assert_eq!(found, expected, "default_max_parallelism({parallelism})");
    }

    #[test]
    fn default_max_parallelism() {
        check_default_max_parallelism(1, 128);
        check_default_max_parallelism(85, 128);
        check_default_max_parallelism(86, 256);
        check_default_max_parallelism(100, 256);
        check_default_max_parallelism(1000, 2048);
        check_default_max_parallelism(21_845, 32_768);
        check_default_max_parallelism(32_768, 32_768);
        check_invalid(MaxParallelism::default_for(0), &["parallelism 0"]);
        check_invalid(MaxParallelism::default_for(32_769), &["32769"]);
    }

    #[track_caller]
    fn check_operator_range(max: u32, parallelism: u32, index: u32, expected: KeyGroupRange) {
        let found = mp(max).range_for(index, parallelism).unwrap();
        assert_eq!(
            found, expected,
            "operator {index} of {parallelism} with max parallelism {max}"
        );
    }

    #[test]
    fn operator_ranges_match_flink() {
        check_operator_range(128, 1, 0, range(0, 127));
        check_operator_range(128, 3, 0, range(0, 42));
        check_operator_range(128, 3, 1, range(43, 85));
        check_operator_range(128, 3, 2, range(86, 127));
        check_operator_range(128, 4, 1, range(32, 63));
        check_operator_range(10, 3, 0, range(0, 3));
        check_operator_range(10, 3, 1, range(4, 6));
        check_operator_range(10, 3, 2, range(7, 9));
        check_operator_range(5, 5, 4, range(4, 4));
        check_operator_range(32_768, 7, 6, range(28_087, 32_767));
    }

    /// Checks that the operator ranges for `(max_parallelism, parallelism)` are
    /// contiguous, disjoint and non-empty, cover `0..max_parallelism` exactly, and agree
    /// with `compute_operator_index_for_key_group` on every key group.
    fn check_partition(max_parallelism: u32, parallelism: u32) -> std::result::Result<(), String> {
        let context = format!("max parallelism {max_parallelism}, parallelism {parallelism}");
        let mut next = 0;
        for operator_index in 0..parallelism {
            let r = mp(max_parallelism)
                .range_for(operator_index, parallelism)
                .map_err(|err| format!("{context}: {err}"))?;
            if r.is_empty() || r.start().get() != next {
                return Err(format!(
                    "{context}: operator {operator_index} owns {r}, expected a range from {next}"
                ));
            }
            for key_group in r.iter() {
                let owner = mp(max_parallelism)
                    .operator_of(key_group, parallelism)
                    .map_err(|err| format!("{context}: {err}"))?;
                if owner != operator_index {
                    return Err(format!(
                        "{context}: key group {key_group} in {r} of operator {operator_index} is assigned to operator {owner}"
                    ));
                }
            }
            next = r.end().get() + 1;
        }
        if next != max_parallelism {
            return Err(format!("{context}: the ranges end at {next}"));
        }
        Ok(())
    }

    #[test]
    fn operator_ranges_partition_the_key_groups() {
        let cases: [(u32, &[u32]); 9] = [
            (1, &[1]),
            (2, &[1, 2]),
            (5, &[5]),
            (10, &[3, 7]),
            (128, &[1, 3, 4, 127, 128]),
            (129, &[2]),
            (1000, &[999]),
            (4096, &[13]),
            (32_768, &[1, 7, 1000, 32_767, 32_768]),
        ];
        for (max_parallelism, parallelisms) in cases {
            for &parallelism in parallelisms {
                check_partition(max_parallelism, parallelism).unwrap();
            }
        }
    }

    #[test]
    fn operator_range_rejects_invalid_arguments() {
        let compute = |operator, parallelism| mp(128).range_for(operator, parallelism);
        check_invalid(compute(0, 0), &["parallelism 0", "128"]);
        check_invalid(compute(0, 129), &["parallelism 129", "128"]);
        check_invalid(compute(4, 4), &["operator index 4", "parallelism 4"]);
        check_invalid(compute(u32::MAX, 4), &["4294967295"]);
        check_invalid(mp(128).operator_of(kg(128), 4), &["key group 128", "128"]);
        check_invalid(mp(128).operator_of(kg(0), 0), &["parallelism 0"]);
    }

    proptest! {
        #[test]
        fn prop_operator_ranges_partition_the_key_groups(
            (max_parallelism, parallelism) in (1..=32_768u32)
                .prop_flat_map(|max_p| (Just(max_p), 1..=max_p.min(300)))
        ) {
            check_partition(max_parallelism, parallelism).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn prop_key_group_is_below_max_parallelism(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            max_parallelism in 1..=32_768u32,
        ) {
            let key_group = mp(max_parallelism).key_group_of(&key);
            prop_assert!(key_group.get() < max_parallelism);
            let parallelism = (max_parallelism / 3).max(1);
            let operator = mp(max_parallelism).operator_of(key_group, parallelism).unwrap();
            let owned = mp(max_parallelism).range_for(operator, parallelism).unwrap();
            prop_assert!(owned.contains(key_group));
        }

        /// `murmur_hash` is the absolute value of murmur3_x86_32 over the code's
        /// little-endian bytes (0 for `i32::MIN`): the two hashes share their rounds.
        #[test]
        fn prop_murmur_hash_is_abs_of_key_hash(code in any::<i32>()) {
            let expected = match key_hash(&code.to_le_bytes()) {
                i32::MIN => 0,
                hash => hash.unsigned_abs(),
            };
            prop_assert_eq!(murmur_hash(code), expected);
        }

        #[test]
        fn prop_murmur_hash_is_non_negative(code in any::<i32>()) {
            prop_assert!(murmur_hash(code) <= i32::MAX.unsigned_abs());
        }
    }
}

//! The handle of a canonical-format keyed snapshot: one stream, the offset of every key
//! group in it and, optionally, a CRC-32C per key group.
//!
//! [`KeyGroupsStateHandle`] is what [`write_full_snapshot`](crate::write_full_snapshot)
//! returns and what [`KeyedSnapshotReader`](crate::KeyedSnapshotReader) reads: a restore
//! after rescaling seeks straight to the key groups the new instance owns through
//! [`KeyGroupRangeOffsets`]. Its serialized tag is `"key-groups"`.

use std::iter::FusedIterator;
use std::slice;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use state_api::{
    Error, KeyGroup, KeyGroupRange, KeyGroups, KeyedStateHandle, Result, SnapshotResult,
    StateObject, StreamStateHandle,
};

/// One stream offset per key group of a [`KeyGroupRange`]: where each key group's state
/// starts in a snapshot stream.
///
/// The number of offsets always equals the range's [`len`](KeyGroupRange::len);
/// deserialization rejects bytes that break this.
///
/// # Examples
///
/// ```
/// use state_api::{KeyGroup, KeyGroupRange};
/// use state_format::KeyGroupRangeOffsets;
///
/// let kg = KeyGroup::new;
/// let mut offsets = KeyGroupRangeOffsets::new(KeyGroupRange::new(4, 7)?);
/// offsets.set_offset(kg(5)?, 100)?;
/// offsets.set_offset(kg(6)?, 250)?;
/// assert_eq!(offsets.offset(kg(5)?)?, 100);
/// assert!(offsets.offset(kg(8)?).is_err());
///
/// // A restoring instance that owns key groups 5..=9 reads only 5 and 6 of this stream.
/// let mine = offsets.intersection(&KeyGroupRange::new(5, 9)?);
/// let pairs: Vec<_> = mine.iter().map(|(key_group, at)| (key_group.get(), at)).collect();
/// assert_eq!(pairs, [(5, 100), (6, 250), (7, 0)]);
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawKeyGroupRangeOffsets")]
pub struct KeyGroupRangeOffsets {
    range: KeyGroupRange,
    offsets: Vec<u64>,
}

/// The serialized shape of [`KeyGroupRangeOffsets`], validated on deserialization.
#[derive(Debug, Deserialize)]
#[serde(rename = "KeyGroupRangeOffsets")]
struct RawKeyGroupRangeOffsets {
    range: KeyGroupRange,
    offsets: Vec<u64>,
}

impl TryFrom<RawKeyGroupRangeOffsets> for KeyGroupRangeOffsets {
    type Error = Error;

    fn try_from(raw: RawKeyGroupRangeOffsets) -> Result<Self> {
        Self::with_offsets(raw.range, raw.offsets)
    }
}

impl KeyGroupRangeOffsets {
    /// Offsets for `range`, all zero.
    pub fn new(range: KeyGroupRange) -> Self {
        Self {
            range,
            offsets: vec![0; range.len() as usize],
        }
    }

    /// Offsets for `range`, one per key group in ascending key-group order.
    ///
    /// Fails with [`Error::InvalidArgument`] if there are not exactly `range.len()`
    /// offsets.
    pub fn with_offsets(range: KeyGroupRange, offsets: Vec<u64>) -> Result<Self> {
        if offsets.len() != range.len() as usize {
            return Err(Error::InvalidArgument(format!(
                "{} offsets given for {range}, which has {} key groups",
                offsets.len(),
                range.len()
            )));
        }
        Ok(Self { range, offsets })
    }

    /// The key groups these offsets are for.
    pub fn range(&self) -> KeyGroupRange {
        self.range
    }

    /// The offsets, one per key group of [`range`](Self::range) in ascending order.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// The offset of `key_group`.
    ///
    /// Fails with [`Error::KeyGroupOutOfRange`] if `key_group` is not in the range.
    pub fn offset(&self, key_group: KeyGroup) -> Result<u64> {
        (self.range.position(key_group))
            .and_then(|index| self.offsets.get(index).copied())
            .ok_or_else(|| self.out_of_range(key_group))
    }

    /// Sets the offset of `key_group`.
    ///
    /// Fails with [`Error::KeyGroupOutOfRange`] if `key_group` is not in the range.
    pub fn set_offset(&mut self, key_group: KeyGroup, offset: u64) -> Result<()> {
        match (self.range.position(key_group)).and_then(|index| self.offsets.get_mut(index)) {
            Some(slot) => {
                *slot = offset;
                Ok(())
            }
            None => Err(self.out_of_range(key_group)),
        }
    }

    /// The `(key_group, offset)` pairs in ascending key-group order.
    pub fn iter(&self) -> KeyGroupOffsetsIter<'_> {
        KeyGroupOffsetsIter {
            key_groups: self.range.iter(),
            offsets: self.offsets.iter(),
        }
    }

    /// A copy narrowed to the key groups that also lie in `range`, keeping their offsets.
    ///
    /// The result is empty (over [`KeyGroupRange::EMPTY`]) if the ranges are disjoint.
    pub fn intersection(&self, range: &KeyGroupRange) -> KeyGroupRangeOffsets {
        let narrowed = self.range.intersection(range);
        let Some(skip) = (self.range.position(narrowed.start())).filter(|_| !narrowed.is_empty())
        else {
            return Self::new(KeyGroupRange::EMPTY);
        };
        let offsets = self
            .offsets
            .iter()
            .skip(skip)
            .take(narrowed.len() as usize)
            .copied()
            .collect();
        Self {
            range: narrowed,
            offsets,
        }
    }

    fn out_of_range(&self, key_group: KeyGroup) -> Error {
        Error::KeyGroupOutOfRange {
            key_group,
            range: self.range,
        }
    }
}

impl<'a> IntoIterator for &'a KeyGroupRangeOffsets {
    type Item = (KeyGroup, u64);
    type IntoIter = KeyGroupOffsetsIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The `(key_group, offset)` pairs of a [`KeyGroupRangeOffsets`], in ascending
/// key-group order; made by [`KeyGroupRangeOffsets::iter`].
#[derive(Debug, Clone)]
pub struct KeyGroupOffsetsIter<'a> {
    key_groups: KeyGroups,
    offsets: slice::Iter<'a, u64>,
}

impl Iterator for KeyGroupOffsetsIter<'_> {
    type Item = (KeyGroup, u64);

    fn next(&mut self) -> Option<Self::Item> {
        Some((self.key_groups.next()?, *self.offsets.next()?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.offsets.size_hint()
    }
}

impl DoubleEndedIterator for KeyGroupOffsetsIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        Some((self.key_groups.next_back()?, *self.offsets.next_back()?))
    }
}

impl ExactSizeIterator for KeyGroupOffsetsIter<'_> {}

impl FusedIterator for KeyGroupOffsetsIter<'_> {}

/// Turns a stream result into a keyed result: both copies share the key-group offsets
/// (the task-local copy is byte-identical) and the optional per-key-group checksums.
pub fn keyed_snapshot_result(
    result: SnapshotResult<Arc<dyn StreamStateHandle>>,
    offsets: &KeyGroupRangeOffsets,
    checksums: Option<&[u32]>,
) -> Result<SnapshotResult<Arc<dyn KeyedStateHandle>>> {
    let wrap = |stream: Arc<dyn StreamStateHandle>| -> Result<Arc<dyn KeyedStateHandle>> {
        // Nothing follows the last key group: its data ends where the stream does.
        let end = stream.state_size();
        let handle = KeyGroupsStateHandle::new(offsets.clone(), stream).with_end(end);
        let handle = match checksums {
            Some(sums) => handle.with_checksums(sums.to_vec())?,
            None => handle,
        };
        Ok(Arc::new(handle))
    };
    let (remote, local) = result.into_parts();
    Ok(match (remote, local) {
        (None, _) => SnapshotResult::empty(),
        (Some(remote), None) => SnapshotResult::of(wrap(remote)?),
        (Some(remote), Some(local)) => {
            SnapshotResult::with_local_state(wrap(remote)?, wrap(local)?)
        }
    })
}

/// A key-group-partitioned snapshot stream: one stream plus the offset of every key
/// group in it (the canonical keyed format) and, optionally, a CRC-32C per key group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyGroupsStateHandle {
    offsets: KeyGroupRangeOffsets,
    delegate: Arc<dyn StreamStateHandle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checksums: Option<Vec<u32>>,
    /// Stream offset where the data of the range's last key group ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<u64>,
}

impl KeyGroupsStateHandle {
    /// A handle over `delegate` with the given key-group offsets.
    pub fn new(offsets: KeyGroupRangeOffsets, delegate: Arc<dyn StreamStateHandle>) -> Self {
        KeyGroupsStateHandle {
            offsets,
            delegate,
            checksums: None,
            end: None,
        }
    }

    /// Records where the data of the range's last key group ends (the stream's length for
    /// a snapshot written by one writer), so restore can check that every section is read
    /// to its last byte.
    pub fn with_end(mut self, end: u64) -> Self {
        self.end = Some(end);
        self
    }

    /// The bytes of `key_group`'s section: up to the next key group's offset, or to the
    /// recorded end (else the stream's size) for the last one; 0 for a key group outside
    /// the range. What splitting key groups between threads by weight uses.
    pub fn section_size(&self, key_group: KeyGroup) -> u64 {
        if !self.offsets.range().contains(key_group) {
            return 0;
        }
        let end = self
            .section_end(key_group)
            .unwrap_or_else(|| self.delegate.state_size());
        match self.offsets.offset(key_group) {
            Ok(start) => end.saturating_sub(start),
            Err(_) => 0,
        }
    }

    /// Where the data of `key_group` ends: the next key group's offset, or the recorded
    /// end for the last one (`None` when not recorded, as in handles of older builds).
    pub fn section_end(&self, key_group: KeyGroup) -> Option<u64> {
        self.offset_after(key_group)
    }

    /// The offset of the key group after `key_group` in the handle's stream, or the
    /// recorded end if `key_group` is the last of the range.
    fn offset_after(&self, key_group: KeyGroup) -> Option<u64> {
        match key_group < self.offsets.range().end() {
            true => KeyGroup::new(key_group.get() + 1)
                .and_then(|next| self.offsets.offset(next))
                .ok(),
            false => self.end,
        }
    }

    /// Adds one checksum per key group of the range, in key-group order.
    pub fn with_checksums(mut self, checksums: Vec<u32>) -> Result<Self> {
        let expected = self.offsets.range().len() as usize;
        if checksums.len() != expected {
            return Err(Error::InvalidArgument(format!(
                "{} checksums given for {} ({expected} key groups)",
                checksums.len(),
                self.offsets.range()
            )));
        }
        self.checksums = Some(checksums);
        Ok(self)
    }

    /// The key-group offsets.
    pub fn offsets(&self) -> &KeyGroupRangeOffsets {
        &self.offsets
    }

    /// The stream holding the key groups.
    pub fn delegate(&self) -> &Arc<dyn StreamStateHandle> {
        &self.delegate
    }

    /// The checksum recorded for `key_group`, if checksums were recorded.
    pub fn checksum(&self, key_group: KeyGroup) -> Option<u32> {
        let index = self.offsets.range().position(key_group)?;
        self.checksums
            .as_ref()
            .and_then(|all| all.get(index).copied())
    }
}

impl StateObject for KeyGroupsStateHandle {
    fn discard(&self) -> Result<()> {
        self.delegate.discard()
    }

    fn state_size(&self) -> u64 {
        self.delegate.state_size()
    }
}

#[typetag::serde(name = "key-groups")]
impl KeyedStateHandle for KeyGroupsStateHandle {
    fn key_group_range(&self) -> KeyGroupRange {
        self.offsets.range()
    }

    fn intersection(&self, range: &KeyGroupRange) -> Option<Arc<dyn KeyedStateHandle>> {
        let offsets = self.offsets.intersection(range);
        let narrowed = offsets.range();
        // None for an empty intersection, whose start lies outside of the range.
        let skip = self.offsets.range().position(narrowed.start())?;
        let checksums = self.checksums.as_ref().map(|all| {
            all.iter()
                .skip(skip)
                .take(narrowed.len() as usize)
                .copied()
                .collect()
        });
        let end = self.offset_after(narrowed.end());
        Some(Arc::new(KeyGroupsStateHandle {
            offsets,
            delegate: self.delegate.clone(),
            checksums,
            end,
        }))
    }

    fn streams(&self) -> Option<Vec<&Arc<dyn StreamStateHandle>>> {
        Some(vec![&self.delegate])
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::io::Read;

    use proptest::prelude::*;
    use state_api::ByteStreamStateHandle;

    use super::*;

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
        for value in values {
            assert!(message.contains(value), "{message:?} lacks {value:?}");
        }
    }

    // ---- KeyGroupRangeOffsets ----

    fn kg(key_group: u32) -> KeyGroup {
        KeyGroup::new(key_group).unwrap()
    }

    /// The `(key group, offset)` pairs of `o`, with the key groups as numbers.
    fn pairs(o: &KeyGroupRangeOffsets) -> Vec<(u32, u64)> {
        o.iter()
            .map(|(key_group, at)| (key_group.get(), at))
            .collect()
    }

    fn offsets(start: u32, end: u32, values: &[u64]) -> KeyGroupRangeOffsets {
        KeyGroupRangeOffsets::with_offsets(range(start, end), values.to_vec()).unwrap()
    }

    #[test]
    fn new_offsets_are_zero() {
        let o = KeyGroupRangeOffsets::new(range(2, 4));
        assert_eq!(o.range(), range(2, 4));
        assert_eq!(o.offsets(), [0, 0, 0]);
        assert_eq!(pairs(&o), [(2, 0), (3, 0), (4, 0)]);
        let empty = KeyGroupRangeOffsets::new(KeyGroupRange::EMPTY);
        assert!(empty.offsets().is_empty());
        assert_eq!(empty.iter().count(), 0);
    }

    #[test]
    fn offsets_get_and_set() {
        let mut o = offsets(10, 12, &[100, 200, 300]);
        assert_eq!(o.offset(kg(10)).unwrap(), 100);
        assert_eq!(o.offset(kg(12)).unwrap(), 300);
        o.set_offset(kg(11), 250).unwrap();
        assert_eq!(o.offset(kg(11)).unwrap(), 250);
        assert_eq!(o.offsets(), [100, 250, 300]);
    }

    #[track_caller]
    fn check_out_of_range<T: fmt::Debug>(result: Result<T>, key_group: u32, range: &str) {
        let err = result.unwrap_err();
        match &err {
            Error::KeyGroupOutOfRange {
                key_group: found,
                range: found_range,
            } => {
                assert_eq!(found.get(), key_group, "{err}");
                assert_eq!(found_range.to_string(), range, "{err}");
            }
            other => panic!("expected KeyGroupOutOfRange, got {other}"),
        }
    }

    #[test]
    fn offsets_out_of_range() {
        let mut o = offsets(10, 12, &[100, 200, 300]);
        check_out_of_range(o.offset(kg(9)), 9, "key groups 10..=12");
        check_out_of_range(o.offset(kg(13)), 13, "key groups 10..=12");
        check_out_of_range(o.set_offset(kg(13), 1), 13, "key groups 10..=12");
        assert_eq!(o.offsets(), [100, 200, 300]);
        let mut empty = KeyGroupRangeOffsets::new(KeyGroupRange::EMPTY);
        check_out_of_range(empty.offset(kg(0)), 0, "empty key-group range");
        check_out_of_range(empty.set_offset(kg(1), 5), 1, "empty key-group range");
    }

    #[test]
    fn offsets_length_must_match() {
        let result = KeyGroupRangeOffsets::with_offsets(range(0, 3), vec![1, 2, 3]);
        check_invalid(result, &["3 offsets", "4 key groups", "0..=3"]);
        let result = KeyGroupRangeOffsets::with_offsets(KeyGroupRange::EMPTY, vec![1]);
        check_invalid(result, &["1 offsets", "0 key groups"]);
        assert!(KeyGroupRangeOffsets::with_offsets(KeyGroupRange::EMPTY, vec![]).is_ok());
    }

    #[test]
    fn offsets_iteration() {
        let o = offsets(5, 8, &[1, 2, 3, 4]);
        let pairs = [(5, 1), (6, 2), (7, 3), (8, 4)];
        assert_eq!(self::pairs(&o), pairs);
        assert_eq!(o.iter().len(), 4);
        let reversed: Vec<_> = (&o)
            .into_iter()
            .rev()
            .map(|(g, at)| (g.get(), at))
            .collect();
        assert_eq!(reversed, [(8, 4), (7, 3), (6, 2), (5, 1)]);
        let mut iter = o.iter();
        assert_eq!(iter.next(), Some((kg(5), 1)));
        assert_eq!(iter.next_back(), Some((kg(8), 4)));
        assert_eq!(iter.len(), 2);
    }

    #[track_caller]
    fn check_narrowed(
        o: &KeyGroupRangeOffsets,
        to: KeyGroupRange,
        expected: &[(u32, u64)],
        expected_range: KeyGroupRange,
    ) {
        let narrowed = o.intersection(&to);
        assert_eq!(narrowed.range(), expected_range, "narrowing to {to}");
        assert_eq!(pairs(&narrowed), expected, "narrowing to {to}");
    }

    #[test]
    fn offsets_intersection() {
        let o = offsets(10, 14, &[100, 110, 120, 130, 140]);
        check_narrowed(
            &o,
            range(12, 20),
            &[(12, 120), (13, 130), (14, 140)],
            range(12, 14),
        );
        check_narrowed(&o, range(0, 10), &[(10, 100)], range(10, 10));
        check_narrowed(&o, range(11, 12), &[(11, 110), (12, 120)], range(11, 12));
        check_narrowed(&o, range(0, 100), &pairs(&o), range(10, 14));
        check_narrowed(&o, range(15, 20), &[], KeyGroupRange::EMPTY);
        check_narrowed(&o, range(0, 9), &[], KeyGroupRange::EMPTY);
        check_narrowed(&o, KeyGroupRange::EMPTY, &[], KeyGroupRange::EMPTY);
        let empty = KeyGroupRangeOffsets::new(KeyGroupRange::EMPTY);
        check_narrowed(&empty, range(0, 5), &[], KeyGroupRange::EMPTY);
    }

    #[test]
    fn offsets_serde_round_trip() {
        let o = offsets(3, 5, &[7, 0, u64::MAX]);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            r#"{"range":{"start":3,"end":5},"offsets":[7,0,18446744073709551615]}"#
        );
        assert_eq!(
            serde_json::from_str::<KeyGroupRangeOffsets>(&json).unwrap(),
            o
        );

        let empty = KeyGroupRangeOffsets::new(KeyGroupRange::EMPTY);
        let json = serde_json::to_string(&empty).unwrap();
        assert_eq!(json, r#"{"range":{"start":1,"end":0},"offsets":[]}"#);
        assert_eq!(
            serde_json::from_str::<KeyGroupRangeOffsets>(&json).unwrap(),
            empty
        );
    }

    #[test]
    fn offsets_serde_rejects_length_mismatch() {
        let json = r#"{"range":{"start":3,"end":5},"offsets":[7,0]}"#;
        let err = serde_json::from_str::<KeyGroupRangeOffsets>(json).unwrap_err();
        assert!(err.to_string().contains("2 offsets"), "{err}");
    }

    fn bytes(data: &[u8]) -> Arc<dyn StreamStateHandle> {
        Arc::new(ByteStreamStateHandle::new("test", data.to_vec()))
    }

    fn key_groups(start: u32, end: u32) -> KeyGroupsStateHandle {
        let range = KeyGroupRange::new(start, end).unwrap();
        let offsets: Vec<u64> = (0..range.len() as u64).map(|i| i * 10).collect();
        KeyGroupsStateHandle::new(
            KeyGroupRangeOffsets::with_offsets(range, offsets).unwrap(),
            bytes(&[7; 100]),
        )
        .with_checksums((start..=end).map(|kg| kg * 1000).collect())
        .unwrap()
    }

    #[test]
    fn narrowed_handles_know_where_their_last_section_ends() {
        let handle = key_groups(10, 19).with_end(1000);
        assert_eq!(
            handle.section_end(kg(12)),
            Some(30),
            "the next key group's offset"
        );
        assert_eq!(handle.section_end(kg(19)), Some(1000));
        let tail = handle
            .intersection(&KeyGroupRange::new(15, 40).unwrap())
            .unwrap();
        let tail = tail.downcast_ref::<KeyGroupsStateHandle>().unwrap();
        assert_eq!(tail.section_end(kg(19)), Some(1000));
        let head = handle
            .intersection(&KeyGroupRange::new(0, 14).unwrap())
            .unwrap();
        let head = head.downcast_ref::<KeyGroupsStateHandle>().unwrap();
        assert_eq!(
            head.section_end(kg(14)),
            Some(50),
            "where key group 15 starts"
        );
        assert_eq!(key_groups(10, 19).section_end(kg(19)), None, "not recorded");
    }

    #[test]
    fn key_groups_handle_narrows_offsets_and_checksums() {
        let handle = key_groups(10, 19);
        let narrowed = handle
            .intersection(&KeyGroupRange::new(15, 40).unwrap())
            .unwrap();
        let narrowed = narrowed.downcast_ref::<KeyGroupsStateHandle>().unwrap();
        assert_eq!(
            narrowed.key_group_range(),
            KeyGroupRange::new(15, 19).unwrap()
        );
        assert_eq!(narrowed.offsets().offset(kg(15)).unwrap(), 50);
        assert_eq!(narrowed.checksum(kg(15)), Some(15_000));
        assert_eq!(narrowed.checksum(kg(19)), Some(19_000));
        assert_eq!(narrowed.checksum(kg(14)), None);
        assert!(
            handle
                .intersection(&KeyGroupRange::new(20, 30).unwrap())
                .is_none()
        );
    }

    #[test]
    fn checksums_must_match_the_range() {
        let range = KeyGroupRange::new(0, 3).unwrap();
        let err = KeyGroupsStateHandle::new(KeyGroupRangeOffsets::new(range), bytes(b""))
            .with_checksums(vec![1, 2])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn handles_round_trip_through_serde_with_stable_tags() {
        let handle: Arc<dyn KeyedStateHandle> = Arc::new(key_groups(0, 3));
        let json = serde_json::to_string(&handle).unwrap();
        assert!(json.contains("\"key-groups\""), "{json}");
        assert!(json.contains("\"bytes\""), "{json}");
        let back: Arc<dyn KeyedStateHandle> = serde_json::from_str(&json).unwrap();
        let back = back.downcast_ref::<KeyGroupsStateHandle>().unwrap();
        assert_eq!(back.checksum(kg(2)), Some(2000));
        let mut data = Vec::new();
        back.delegate()
            .open()
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data, vec![7; 100]);
    }

    proptest! {
        #[test]
        fn prop_offsets_intersection_keeps_offsets(
            (start, end) in (0..200u32).prop_flat_map(|s| (Just(s), s..200)),
            (other_start, other_end) in (0..200u32).prop_flat_map(|s| (Just(s), s..200)),
        ) {
            let r = range(start, end);
            let values: Vec<u64> = r.iter().map(|kg| u64::from(kg.get()) * 10).collect();
            let o = KeyGroupRangeOffsets::with_offsets(r, values).unwrap();
            let other = range(other_start, other_end);
            let narrowed = o.intersection(&other);
            prop_assert_eq!(narrowed.range(), r.intersection(&other));
            let expected: Vec<(u32, u64)> = (o.iter())
                .filter(|(kg, _)| other.contains(*kg))
                .map(|(kg, at)| (kg.get(), at))
                .collect();
            prop_assert_eq!(pairs(&narrowed), expected);
        }
    }
}

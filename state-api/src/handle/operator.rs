//! Operator state handles: one stream holding every operator state, with the partition
//! offsets and distribution mode of each.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Result, StateObject, StreamStateHandle};

/// How an operator list state is redistributed when parallelism changes; the discriminant
/// is the mode's [`code`](Self::code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DistributionMode {
    /// The list is split: each new instance gets an even share of all elements.
    SplitDistribute = 0,
    /// Every new instance gets the union of all elements.
    Union = 1,
    /// A broadcast map state: identical on every instance, restored whole everywhere.
    Broadcast = 2,
}

impl DistributionMode {
    /// Every mode, in code order.
    pub const ALL: [DistributionMode; 3] = [
        DistributionMode::SplitDistribute,
        DistributionMode::Union,
        DistributionMode::Broadcast,
    ];

    /// The byte that encodes this mode in snapshot headers.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The mode written as `code` in a snapshot header, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.code() == code)
    }

    /// The mode's name (`split-distribute`, `union`, `broadcast`).
    pub fn as_str(self) -> &'static str {
        match self {
            DistributionMode::SplitDistribute => "split-distribute",
            DistributionMode::Union => "union",
            DistributionMode::Broadcast => "broadcast",
        }
    }

    /// Whether this is a list state's mode (split-distribute or union).
    pub fn is_list(self) -> bool {
        self != DistributionMode::Broadcast
    }
}

impl fmt::Display for DistributionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one operator state's partitions are inside an [`OperatorStreamStateHandle`]'s stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStatePartitions {
    /// Stream offset of each partition (one list element, or one broadcast map).
    pub offsets: Vec<u64>,
    /// How the state is redistributed.
    pub mode: DistributionMode,
}

/// An operator state snapshot: one stream plus, per state name, partition offsets and mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorStreamStateHandle {
    states: BTreeMap<String, OperatorStatePartitions>,
    delegate: Arc<dyn StreamStateHandle>,
}

impl OperatorStreamStateHandle {
    /// A handle over `delegate` with the given per-state partitions.
    pub fn new(
        states: BTreeMap<String, OperatorStatePartitions>,
        delegate: Arc<dyn StreamStateHandle>,
    ) -> Self {
        OperatorStreamStateHandle { states, delegate }
    }

    /// Partitions by state name.
    pub fn states(&self) -> &BTreeMap<String, OperatorStatePartitions> {
        &self.states
    }

    /// The stream holding the states.
    pub fn delegate(&self) -> &Arc<dyn StreamStateHandle> {
        &self.delegate
    }
}

impl StateObject for OperatorStreamStateHandle {
    fn discard(&self) -> Result<()> {
        self.delegate.discard()
    }

    fn state_size(&self) -> u64 {
        self.delegate.state_size()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;

    use super::DistributionMode::{Broadcast, SplitDistribute};
    use super::*;
    use crate::test_file::TestFile;

    #[test]
    fn operator_handle_serializes_with_offsets_modes_and_its_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator-state");
        fs::write(&path, b"partitions").unwrap();
        let states: BTreeMap<_, _> = [
            ("offsets", vec![12, 40, 77], SplitDistribute),
            ("rules", vec![100], Broadcast),
        ]
        .map(|(name, offsets, mode)| (name.to_owned(), OperatorStatePartitions { offsets, mode }))
        .into();
        let file = Arc::new(TestFile::read_back(&path, 10));
        let handle = OperatorStreamStateHandle::new(states.clone(), file);
        let json = serde_json::to_string(&handle).unwrap();
        assert!(
            json.contains("\"test-file\""),
            "the stream keeps its stable tag: {json}"
        );
        let back: OperatorStreamStateHandle = serde_json::from_str(&json).unwrap();
        assert_eq!(back.states(), &states);
        assert_eq!(back.state_size(), 10);
        let mut data = Vec::new();
        let mut stream = back.delegate().open().unwrap();
        stream.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"partitions");
    }
}

//! State handles: where the bytes of a snapshot are and how to read or delete them.
//!
//! Handles are what the coordinator stores in checkpoint metadata and hands back on
//! restore, so they serialize with `serde`. The two open families are trait objects,
//! [`StreamStateHandle`] (one readable stream of bytes) and [`KeyedStateHandle`] (the keyed
//! state of one key-group range), serialized through `typetag` (`erased-serde` plus an
//! `inventory` registry of constructors) under explicit, stable tags such as `"file"` or
//! `"key-groups"`: a third-party crate adds its own handle kind by implementing the trait
//! with its own tag. Tags are never derived from Rust type names, so renaming a type does
//! not break stored checkpoints.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use state_api::{ByteStreamStateHandle, KeyGroupRange, KeyedStateHandle, StreamStateHandle};
//! // The canonical format's handle, one keyed handle kind among others.
//! use state_format::key_groups::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
//!
//! let range = KeyGroupRange::new(0, 3)?;
//! let stream: Arc<dyn StreamStateHandle> =
//!     Arc::new(ByteStreamStateHandle::new("kg", vec![0; 40]));
//! let handle: Arc<dyn KeyedStateHandle> = Arc::new(KeyGroupsStateHandle::new(
//!     KeyGroupRangeOffsets::with_offsets(range, vec![0, 10, 20, 30])?,
//!     stream,
//! ));
//! let json = serde_json::to_string(&handle).unwrap();
//! let back: Arc<dyn KeyedStateHandle> = serde_json::from_str(&json).unwrap();
//! assert_eq!(back.key_group_range(), range);
//! let half = back.intersection(&KeyGroupRange::new(2, 9)?).expect("groups 2 and 3 intersect");
//! assert_eq!(half.key_group_range(), KeyGroupRange::new(2, 3)?);
//! # Ok::<(), state_api::Error>(())
//! ```

mod incremental;
mod operator;
mod stream;

use std::any::Any;
use std::fmt;
use std::io::{self, Read, Seek};
use std::sync::Arc;

use crate::{KeyGroupRange, Result, StateObject};

pub use incremental::{
    HandleAndLocalPath, IncrementalRemoteKeyedStateHandle, new_backend_identifier,
};
pub use operator::{DistributionMode, OperatorStatePartitions, OperatorStreamStateHandle};
pub use stream::{ByteStreamStateHandle, PlaceholderStreamStateHandle};

/// A readable, seekable stream of snapshot bytes.
pub trait StateInputStream: Read + Seek + Send {}

impl<T: Read + Seek + Send> StateInputStream for T {}

/// Where a seek `to` lands in a stream of `len` bytes read up to `pos`; `None` before the
/// start. For readers that implement `Seek` over a known length (files, objects).
pub fn seek_position(to: io::SeekFrom, pos: u64, len: u64) -> Option<u64> {
    match to {
        io::SeekFrom::Start(offset) => Some(offset),
        io::SeekFrom::End(delta) => len.checked_add_signed(delta),
        io::SeekFrom::Current(delta) => pos.checked_add_signed(delta),
    }
}

/// A handle to one stream of snapshot bytes. `dyn StreamStateHandle` downcasts to the
/// concrete handle with [`downcast_ref`](#method.downcast_ref).
#[typetag::serde]
pub trait StreamStateHandle: StateObject + Any + fmt::Debug + Send + Sync + 'static {
    /// Opens the bytes for reading from the start.
    fn open(&self) -> Result<Box<dyn StateInputStream>>;

    /// A short description for errors and listings (a path, an object key, a name).
    fn describe(&self) -> String;

    /// Whether this process wrote the stream in this run: a handle a stream's
    /// `close_and_get_handle` returned, not one read back from storage. Only such a stream
    /// may be discarded as a duplicate upload by `SharedStateRegistry::register`
    /// (`state-coordinator`); the default, `false`, never lets a registry delete it.
    fn written_by_this_process(&self) -> bool {
        false
    }

    /// The whole file on this machine holding exactly these bytes, which a restore may
    /// hard-link instead of copying; `None` (the default) when there is none.
    fn local_file(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// The path of the stream's file relative to its checkpoint storage's root (a
    /// [`StoredFile::path`](crate::StoredFile)); `None` (the default) for inline bytes.
    fn stored_path(&self) -> Option<&str> {
        None
    }
}

/// A handle to the keyed state of one key-group range. `dyn KeyedStateHandle` downcasts to
/// the concrete handle with [`downcast_ref`](#method.downcast_ref).
#[typetag::serde]
pub trait KeyedStateHandle: StateObject + Any + fmt::Debug + Send + Sync + 'static {
    /// The key groups this handle holds state for.
    fn key_group_range(&self) -> KeyGroupRange;

    /// The part of this handle that covers `range`, or `None` if they do not intersect.
    /// Restore uses it to pick, from the handles of the old instances, what a new
    /// instance's range needs.
    fn intersection(&self, range: &KeyGroupRange) -> Option<Arc<dyn KeyedStateHandle>>;

    /// Every stream the handle reads, which storage clean-up keeps; `None` (the default)
    /// when the handle cannot tell, and then clean-up deletes nothing.
    fn streams(&self) -> Option<Vec<&Arc<dyn StreamStateHandle>>> {
        None
    }

    /// The handle this one is a view of (a planned share of a restore), which downcasts see
    /// through; `None` (the default) for a handle that is no view.
    fn viewed(&self) -> Option<&dyn KeyedStateHandle> {
        None
    }
}

/// Adds `downcast_ref` and `is` to each handle trait object; `$viewed` names the handle a
/// view stands for, which both see through.
macro_rules! downcasts {
    ($($handle:ident => $viewed:expr),*) => {$(
        impl dyn $handle {
            /// The handle as the concrete handle type `T`, if it is one; a keyed handle that
            /// is a view ([`KeyedStateHandle::viewed`]) also as one of the handle it shows.
            pub fn downcast_ref<T: $handle>(&self) -> Option<&T> {
                let viewed: fn(&Self) -> Option<&Self> = $viewed;
                (self as &dyn Any).downcast_ref().or_else(|| viewed(self)?.downcast_ref())
            }

            /// Whether [`downcast_ref`](#method.downcast_ref) finds a `T`.
            pub fn is<T: $handle>(&self) -> bool {
                self.downcast_ref::<T>().is_some()
            }
        }
    )*};
}

downcasts!(StreamStateHandle => |_| None, KeyedStateHandle => |handle| handle.viewed());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_handle_tag_is_a_deserialization_error() {
        let result: std::result::Result<Arc<dyn StreamStateHandle>, _> =
            serde_json::from_str(r#"{"s3-object":{"key":"x"}}"#);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("s3-object"), "{err}");
    }
}

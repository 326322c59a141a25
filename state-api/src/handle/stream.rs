//! Stream handles of the contract itself: inline bytes, placeholders for shared files
//! uploaded earlier.

use std::io::Cursor;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, StateInputStream, StateObject, StreamStateHandle};

/// Snapshot bytes kept inline in the handle (small state, in-memory storage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteStreamStateHandle {
    name: String,
    data: Arc<[u8]>,
}

impl ByteStreamStateHandle {
    /// A handle holding `data`, called `name` in errors and listings.
    pub fn new(name: impl Into<String>, data: impl Into<Arc<[u8]>>) -> Self {
        ByteStreamStateHandle {
            name: name.into(),
            data: data.into(),
        }
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The handle's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl StateObject for ByteStreamStateHandle {
    fn discard(&self) -> Result<()> {
        Ok(())
    }

    fn state_size(&self) -> u64 {
        self.data.len() as u64
    }
}

#[typetag::serde(name = "bytes")]
impl StreamStateHandle for ByteStreamStateHandle {
    fn open(&self) -> Result<Box<dyn StateInputStream>> {
        Ok(Box::new(Cursor::new(self.data.clone())))
    }

    fn describe(&self) -> String {
        format!("inline bytes `{}`", self.name)
    }
}

/// Stands for a shared file that an earlier checkpoint already uploaded; the shared state
/// registry resolves it to the real handle. It cannot be read itself, and discarding it
/// deletes nothing (the registry owns the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceholderStreamStateHandle {
    key: String,
    size: u64,
}

impl PlaceholderStreamStateHandle {
    /// A placeholder for the shared file registered under `key`, of `size` bytes.
    pub fn new(key: impl Into<String>, size: u64) -> Self {
        PlaceholderStreamStateHandle {
            key: key.into(),
            size,
        }
    }

    /// The shared state registry key of the file it stands for.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl StateObject for PlaceholderStreamStateHandle {
    fn discard(&self) -> Result<()> {
        Ok(())
    }

    fn state_size(&self) -> u64 {
        self.size
    }
}

#[typetag::serde(name = "placeholder")]
impl StreamStateHandle for PlaceholderStreamStateHandle {
    fn open(&self) -> Result<Box<dyn StateInputStream>> {
        Err(Error::Unsupported(format!(
            "placeholder for shared file `{}` cannot be read: resolve it through the shared state registry first",
            self.key
        )))
    }

    fn describe(&self) -> String {
        format!("placeholder for shared file `{}`", self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_cannot_be_opened() {
        let err = PlaceholderStreamStateHandle::new("b-000001.sst", 10)
            .open()
            .err()
            .unwrap();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("b-000001.sst"), "{err}");
    }
}

//! A stream handle over a plain file for the unit tests of this crate, which cannot use
//! the storages built on it.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, StateInputStream, StateObject, StreamStateHandle};

/// A file by path, read back from somewhere (never written by this process).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TestFile {
    path: PathBuf,
    size: u64,
}

impl TestFile {
    /// The file at `path`, of `size` bytes, read back from somewhere.
    pub(crate) fn read_back(path: impl Into<PathBuf>, size: u64) -> Self {
        TestFile {
            path: path.into(),
            size,
        }
    }
}

impl StateObject for TestFile {
    fn discard(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(Error::io(&self.path, err)),
            _ => Ok(()),
        }
    }

    fn state_size(&self) -> u64 {
        self.size
    }
}

#[typetag::serde(name = "test-file")]
impl StreamStateHandle for TestFile {
    fn open(&self) -> Result<Box<dyn StateInputStream>> {
        let file = File::open(&self.path).map_err(|err| Error::io(&self.path, err))?;
        Ok(Box::new(file))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

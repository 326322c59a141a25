//! The same storage on the local file system (`file://`) and the in-memory store
//! (`memory://`), which need no server: multipart round trips, drops that leave nothing,
//! discards that keep other checkpoints (`chk-1` is not a prefix of `chk-10`), and handles
//! that read back after serialization.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::MaxParallelism;
use state_api::{
    CheckpointMetadata, CheckpointStreamFactory, CheckpointType, CheckpointedStateScope, Error,
    StateObject, StreamStateHandle,
};
use state_storage_object::{ObjectCheckpointStorage, ObjectStoreOptions};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn write(
    storage: &ObjectCheckpointStorage,
    checkpoint_id: CheckpointId,
    data: &[u8],
) -> Arc<dyn StreamStateHandle> {
    let mut stream = storage
        .stream_factory(checkpoint_id)
        .create_output_stream(CheckpointedStateScope::Exclusive)
        .unwrap();
    stream.write_all(data).unwrap();
    stream.close_and_get_handle().unwrap()
}

fn read(handle: &Arc<dyn StreamStateHandle>) -> Vec<u8> {
    let mut data = Vec::new();
    handle.open().unwrap().read_to_end(&mut data).unwrap();
    data
}

fn check_store(url: &str) {
    let storage = ObjectCheckpointStorage::open(url, ObjectStoreOptions::default())
        .unwrap_or_else(|err| panic!("{url}: {err}"))
        .with_file_state_threshold(0);
    let big = pattern(2 * ObjectStoreOptions::DEFAULT_PART_SIZE + 5);
    let handle = write(&storage, CheckpointId::new(1), &big);
    assert_eq!(read(&handle), big, "{url}: multipart round trip");
    let json = serde_json::to_string(&handle).unwrap();
    let back: Arc<dyn StreamStateHandle> = serde_json::from_str(&json).unwrap();
    assert_eq!(read(&back), big, "{url}: read after deserialization");

    let mut dropped = storage
        .stream_factory(CheckpointId::new(10))
        .create_output_stream(CheckpointedStateScope::Shared)
        .unwrap();
    dropped.write_all(&big).unwrap();
    drop(dropped);
    assert_eq!(
        storage.stored_objects(None).unwrap().len(),
        1,
        "{url}: a dropped stream left an object"
    );

    write(&storage, CheckpointId::new(10), b"checkpoint ten");
    storage
        .commit_checkpoint(&CheckpointMetadata::new(
            CheckpointId::new(10),
            0,
            CheckpointType::Checkpoint,
            MaxParallelism::of(128),
        ))
        .unwrap();
    storage.discard_checkpoint(CheckpointId::new(1)).unwrap();
    assert_eq!(storage.completed_checkpoints().unwrap(), [10], "{url}");
    let left = storage.stored_objects(None).unwrap();
    assert_eq!(left.len(), 2, "{url}: {left:?}");
    assert!(
        left.iter().all(|name| name.starts_with("chk-10/")),
        "{url}: discarding chk-1 took {left:?}"
    );
    let err = read_err(&handle);
    assert!(matches!(err, Error::NotFound { .. }), "{url}: {err}");
    storage.discard_checkpoint(CheckpointId::new(10)).unwrap();
    assert!(storage.stored_objects(None).unwrap().is_empty(), "{url}");
}

fn read_err(handle: &Arc<dyn StreamStateHandle>) -> Error {
    let mut data = Vec::new();
    match handle.open() {
        Err(err) => err,
        Ok(mut input) => Error::stream("reading", input.read_to_end(&mut data).unwrap_err()),
    }
}

#[test]
fn the_in_memory_store() {
    check_store("memory://stores-test/job");
}

#[test]
fn the_local_file_system() {
    let dir = tempfile::tempdir().unwrap();
    check_store(&format!("file://{}/job", dir.path().display()));
}

#[test]
fn a_discarded_handle_is_gone_and_discarding_again_is_no_error() {
    let storage = ObjectCheckpointStorage::open(
        "memory://stores-test/discard",
        ObjectStoreOptions::default(),
    )
    .unwrap()
    .with_file_state_threshold(0);
    let handle = write(&storage, CheckpointId::new(1), b"bytes");
    handle.discard().unwrap();
    handle.discard().unwrap();
    assert!(storage.stored_objects(None).unwrap().is_empty());
}

//! Streams, handles and checkpoint storage against a real S3-compatible server (moto on
//! loopback): round trips of single-PUT and multipart streams, uploads aborted on drop and
//! on close from another thread, visibility only after completion, discards that leave no
//! object, atomic metadata commits, typed errors for a missing bucket and refused
//! credentials that never print a secret, and reads by ranged GETs.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::MaxParallelism;
use state_api::checkpoint_metadata::{CheckpointMetadata, InstanceSnapshot};
use state_api::{
    ByteStreamStateHandle, CheckpointStateOutputStream, CheckpointStreamFactory, CheckpointType,
    CheckpointedStateScope, Error, KeyGroupRange, StateObject, StreamStateHandle,
};
use state_format::{KeyGroupRangeOffsets, KeyGroupsStateHandle};
use state_storage_object::{ObjectCheckpointStorage, ObjectStateHandle, ObjectStoreOptions};
use support::{ACCESS_KEY, MotoServer, SECRET_KEY, pattern};

const MIB: usize = 1 << 20;

/// A server, a fresh bucket on it and storage at `s3://<bucket>/job` (threshold 0).
fn setup(test: &str) -> Option<(MotoServer, String, ObjectCheckpointStorage)> {
    let server = MotoServer::start(test)?;
    let bucket = server.fresh_bucket("streams");
    let storage = support::storage(&server.endpoint(), &bucket, "job").with_file_state_threshold(0);
    Some((server, bucket, storage))
}

fn open(
    storage: &ObjectCheckpointStorage,
    checkpoint_id: CheckpointId,
) -> Box<dyn CheckpointStateOutputStream> {
    storage
        .stream_factory(checkpoint_id)
        .create_output_stream(CheckpointedStateScope::Exclusive)
        .expect("opening a stream")
}

fn write_in_pieces(stream: &mut dyn CheckpointStateOutputStream, data: &[u8]) {
    for piece in data.chunks(64 * 1024 + 7) {
        let before = stream.pos();
        stream.write_all(piece).expect("writing");
        assert_eq!(
            stream.pos(),
            before + piece.len() as u64,
            "pos after a write"
        );
    }
}

fn read_all(handle: &Arc<dyn StreamStateHandle>) -> Vec<u8> {
    let mut data = Vec::new();
    handle
        .open()
        .expect("opening the handle")
        .read_to_end(&mut data)
        .expect("reading the object");
    data
}

#[test]
fn a_small_stream_is_one_put_visible_only_after_close() {
    let Some((server, bucket, storage)) = setup("a_small_stream_is_one_put") else {
        return;
    };
    let data = pattern(300 * 1024, 1);
    let mut stream = open(&storage, CheckpointId::new(1));
    write_in_pieces(&mut *stream, &data);
    assert!(
        storage.stored_objects(None).unwrap().is_empty(),
        "visible before close"
    );
    assert!(
        server.pending_uploads(&bucket).is_empty(),
        "a small stream started a multipart upload"
    );
    let handle = stream.close_and_get_handle().unwrap();
    assert_eq!(handle.state_size(), data.len() as u64);
    let object = handle
        .downcast_ref::<ObjectStateHandle>()
        .expect("an object handle");
    assert_eq!(object.store_url(), format!("s3://{bucket}"));
    assert_eq!(storage.stored_objects(Some(1)).unwrap().len(), 1);
    assert_eq!(read_all(&handle), data);
}

#[test]
fn a_multipart_stream_round_trips_and_is_invisible_until_completed() {
    let Some((server, bucket, storage)) = setup("a_multipart_stream_round_trips") else {
        return;
    };
    // Three full 8 MiB parts and a tail.
    let data = pattern(3 * ObjectStoreOptions::DEFAULT_PART_SIZE + 123_457, 2);
    let mut stream = open(&storage, CheckpointId::new(1));
    write_in_pieces(&mut *stream, &data);
    assert_eq!(
        server.pending_uploads(&bucket).len(),
        1,
        "parts are not uploaded while writing"
    );
    assert!(
        storage.stored_objects(None).unwrap().is_empty(),
        "an object is visible before completion"
    );
    let handle = stream.close_and_get_handle().unwrap();
    assert!(
        server.pending_uploads(&bucket).is_empty(),
        "the upload is still pending"
    );
    assert_eq!(storage.stored_objects(None).unwrap().len(), 1);
    assert_eq!(handle.state_size(), data.len() as u64);
    assert_eq!(
        read_all(&handle),
        data,
        "the object differs from what was written"
    );
    handle.discard().unwrap();
    server.assert_clean(&bucket, "a discarded multipart object");
}

#[test]
fn reads_seek_anywhere_through_ranged_gets() {
    let Some(server) = MotoServer::start("reads_seek_anywhere") else {
        return;
    };
    let bucket = server.fresh_bucket("seek");
    // A small read-ahead makes every seek below leave the current window.
    let mut options = support::options(&server.endpoint());
    options.read_ahead = 64 * 1024;
    let storage = ObjectCheckpointStorage::open(&format!("s3://{bucket}/job"), options)
        .unwrap()
        .with_file_state_threshold(0);
    let data = pattern(MIB + 999, 3);
    let mut stream = open(&storage, CheckpointId::new(1));
    stream.write_all(&data).unwrap();
    let handle = stream.close_and_get_handle().unwrap();
    let mut input = handle.open().unwrap();
    for &(offset, len) in &[
        (900_000usize, 70_000usize),
        (5, 10),
        (65_530, 20),
        (0, 0),
        (MIB, 999),
    ] {
        input.seek(SeekFrom::Start(offset as u64)).unwrap();
        let mut piece = vec![0; len];
        input.read_exact(&mut piece).unwrap();
        assert_eq!(
            piece,
            data[offset..offset + len],
            "bytes at {offset}..{}",
            offset + len
        );
    }
    assert_eq!(
        input.seek(SeekFrom::End(-3)).unwrap(),
        data.len() as u64 - 3
    );
    let mut tail = Vec::new();
    input.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, data[data.len() - 3..]);
    let err = input
        .seek(SeekFrom::Current(-(data.len() as i64) - 1))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn dropping_a_multipart_stream_aborts_its_upload() {
    let Some((server, bucket, storage)) = setup("dropping_a_multipart_stream") else {
        return;
    };
    let mut stream = open(&storage, CheckpointId::new(1));
    write_in_pieces(
        &mut *stream,
        &pattern(2 * ObjectStoreOptions::DEFAULT_PART_SIZE + 10, 4),
    );
    assert_eq!(server.pending_uploads(&bucket).len(), 1);
    drop(stream);
    server.assert_clean(&bucket, "a dropped multipart stream");
}

#[test]
fn closing_from_another_thread_aborts_the_upload_and_fails_the_writer() {
    let Some((server, bucket, storage)) = setup("closing_from_another_thread") else {
        return;
    };
    let mut stream = open(&storage, CheckpointId::new(1));
    write_in_pieces(
        &mut *stream,
        &pattern(ObjectStoreOptions::DEFAULT_PART_SIZE + 10, 5),
    );
    let closer = stream.closer();
    std::thread::spawn(move || closer.close())
        .join()
        .unwrap()
        .unwrap();
    server.assert_clean(&bucket, "closed from another thread");
    let err = Error::stream("writing", stream.write_all(b"more").unwrap_err());
    assert!(matches!(err, Error::Closed { .. }), "{err}");
    let err = stream.close_and_get_handle().unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err}");
    server.assert_clean(&bucket, "written to after closing");
}

#[test]
fn closing_after_completion_keeps_the_object() {
    let Some((_server, _bucket, storage)) = setup("closing_after_completion") else {
        return;
    };
    let mut stream = open(&storage, CheckpointId::new(1));
    stream.write_all(b"done").unwrap();
    let closer = stream.closer();
    let handle = stream.close_and_get_handle().unwrap();
    closer.close().unwrap();
    assert_eq!(read_all(&handle), b"done");
}

fn metadata(checkpoint_id: CheckpointId, handle: Arc<dyn StreamStateHandle>) -> CheckpointMetadata {
    let offsets =
        KeyGroupRangeOffsets::with_offsets(KeyGroupRange::new(0, 0).unwrap(), vec![0]).unwrap();
    let mut metadata = CheckpointMetadata::new(
        checkpoint_id,
        7,
        CheckpointType::Checkpoint,
        MaxParallelism::of(128),
    );
    metadata.instances.push(InstanceSnapshot {
        index: 0,
        keyed: vec![Arc::new(KeyGroupsStateHandle::new(offsets, handle))],
        operator: Vec::new(),
    });
    metadata
}

#[test]
fn a_checkpoint_is_complete_once_its_metadata_is_committed_and_never_replaced() {
    let Some((_server, _bucket, storage)) = setup("a_checkpoint_is_complete") else {
        return;
    };
    let mut stream = open(&storage, CheckpointId::new(1));
    stream.write_all(&pattern(1000, 6)).unwrap();
    let handle = stream.close_and_get_handle().unwrap();
    assert!(
        storage.completed_checkpoints().unwrap().is_empty(),
        "complete before its metadata"
    );
    let url = storage
        .commit_checkpoint(&metadata(CheckpointId::new(1), handle.clone()))
        .unwrap();
    assert!(url.ends_with("/job/chk-1/_metadata"), "{url}");
    // Checkpoint 2 wrote a stream but never committed.
    let mut stray = open(&storage, CheckpointId::new(2));
    stray.write_all(b"half").unwrap();
    stray.close_and_get_handle().unwrap();
    assert_eq!(storage.completed_checkpoints().unwrap(), [1]);

    let err = storage
        .commit_checkpoint(&metadata(CheckpointId::new(1), handle.clone()))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let loaded = storage.load_checkpoint(CheckpointId::new(1)).unwrap();
    let keyed = loaded.keyed_handles();
    let key_groups = keyed[0].downcast_ref::<KeyGroupsStateHandle>().unwrap();
    assert_eq!(
        read_all(key_groups.delegate()),
        pattern(1000, 6),
        "the handle read back from the metadata"
    );
    let err = storage.load_checkpoint(CheckpointId::new(3)).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn discarding_leaves_no_object() {
    let Some((server, bucket, storage)) = setup("discarding_leaves_no_object") else {
        return;
    };
    let factory = storage.stream_factory(CheckpointId::new(1));
    let mut handles = Vec::new();
    for (scope, len) in [
        (CheckpointedStateScope::Exclusive, 100),
        (CheckpointedStateScope::Shared, 5000),
        (
            CheckpointedStateScope::Exclusive,
            ObjectStoreOptions::DEFAULT_PART_SIZE + 1,
        ),
    ] {
        let mut stream = factory.create_output_stream(scope).unwrap();
        stream.write_all(&pattern(len, len as u64)).unwrap();
        handles.push(stream.close_and_get_handle().unwrap());
    }
    storage
        .commit_checkpoint(&metadata(CheckpointId::new(1), handles[0].clone()))
        .unwrap();
    assert_eq!(storage.stored_objects(None).unwrap().len(), 4);
    let shared = handles.remove(1);
    storage.discard_checkpoint(CheckpointId::new(1)).unwrap();
    assert!(storage.completed_checkpoints().unwrap().is_empty());
    assert_eq!(
        storage.stored_objects(Some(1)).unwrap(),
        Vec::<String>::new()
    );
    let left = storage.stored_objects(None).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with("shared/"),
        "discarding a checkpoint touched {left:?}"
    );
    shared.discard().unwrap();
    // Discarding twice is no error.
    shared.discard().unwrap();
    storage.discard_checkpoint(CheckpointId::new(1)).unwrap();
    server.assert_clean(&bucket, "every handle and checkpoint discarded");
}

#[test]
fn handles_serialize_without_endpoint_or_credentials_and_work_after_deserialization() {
    let Some((server, bucket, storage)) = setup("handles_serialize") else {
        return;
    };
    let mut stream = open(&storage, CheckpointId::new(4));
    stream.write_all(b"read me back").unwrap();
    let handle = stream.close_and_get_handle().unwrap();
    let json = serde_json::to_string(&handle).unwrap();
    assert!(json.contains("\"object\""), "{json}");
    for secret in [SECRET_KEY, ACCESS_KEY, &server.endpoint()] {
        assert!(!json.contains(secret), "the handle holds {secret}: {json}");
    }
    let back: Arc<dyn StreamStateHandle> = serde_json::from_str(&json).unwrap();
    assert_eq!(read_all(&back), b"read me back");
    back.discard().unwrap();
    server.assert_clean(&bucket, "a deserialized handle discarded");
}

#[test]
fn small_state_stays_inline_under_the_threshold() {
    let Some((server, bucket, storage)) = setup("small_state_stays_inline") else {
        return;
    };
    let storage =
        storage.with_file_state_threshold(ObjectCheckpointStorage::DEFAULT_FILE_STATE_THRESHOLD);
    let mut stream = open(&storage, CheckpointId::new(1));
    stream.write_all(b"tiny").unwrap();
    let handle = stream.close_and_get_handle().unwrap();
    assert!(handle.is::<ByteStreamStateHandle>(), "{handle:?}");
    server.assert_clean(&bucket, "an inline stream");
}

#[test]
fn a_missing_bucket_is_a_typed_error_naming_it() {
    let Some(server) = MotoServer::start("a_missing_bucket") else {
        return;
    };
    let err = ObjectCheckpointStorage::open(
        "s3://no-such-bucket-here/job",
        support::options(&server.endpoint()),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { what } if what.contains("bucket `no-such-bucket-here`")),
        "{err}"
    );
}

#[test]
fn refused_credentials_are_access_denied_and_never_printed() {
    let Some(server) = MotoServer::start("refused_credentials") else {
        return;
    };
    let bucket = server.fresh_bucket("locked");
    let storage = support::storage(&server.endpoint(), &bucket, "job").with_file_state_threshold(0);
    server.enforce_authentication();
    let err = ObjectCheckpointStorage::open(
        &format!("s3://{bucket}/job"),
        support::options(&server.endpoint()),
    )
    .unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err}");
    let mut stream = open(&storage, CheckpointId::new(1));
    stream.write_all(b"denied").unwrap();
    let write_err = stream.close_and_get_handle().unwrap_err();
    assert!(
        matches!(write_err, Error::AccessDenied { .. }),
        "{write_err}"
    );
    for shown in [
        err.to_string(),
        format!("{err:?}"),
        write_err.to_string(),
        format!("{write_err:?}"),
        format!("{storage:?}"),
    ] {
        assert!(!shown.contains(SECRET_KEY), "a secret in: {shown}");
        assert!(!shown.contains(ACCESS_KEY), "an access key in: {shown}");
    }
}

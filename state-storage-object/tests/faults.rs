//! Object storage that misbehaves: a real S3-compatible server behind a loopback proxy that
//! refuses connections, delays or holds responses, and a server killed in the middle of a
//! multipart upload. Transient failures are retried; lasting ones end in typed errors
//! within the bounded retry time; no failure leaves a visible snapshot, and discarding the
//! checkpoint leaves no object.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::time::Duration;

use state_api::CheckpointId;
use state_api::{
    CheckpointStateOutputStream, CheckpointStreamFactory, CheckpointedStateScope, Error,
    StateObject,
};
use state_storage_object::{ObjectCheckpointStorage, ObjectStoreOptions};
use support::{ACCESS_KEY, Mode, MotoServer, Proxy, SECRET_KEY, pattern};

const PART: usize = ObjectStoreOptions::MIN_PART_SIZE;

/// Storage at `s3://<bucket>/job` reached through `endpoint` (threshold 0, 5 MiB parts).
fn storage_via(
    endpoint: &str,
    bucket: &str,
    change: impl FnOnce(&mut ObjectStoreOptions),
) -> ObjectCheckpointStorage {
    let mut options = support::options(endpoint);
    options.part_size = PART;
    change(&mut options);
    ObjectCheckpointStorage::open(&format!("s3://{bucket}/job"), options)
        .expect("opening storage")
        .with_file_state_threshold(0)
}

fn open(storage: &ObjectCheckpointStorage) -> Box<dyn CheckpointStateOutputStream> {
    storage
        .stream_factory(CheckpointId::new(1))
        .create_output_stream(CheckpointedStateScope::Exclusive)
        .expect("opening a stream")
}

/// A server, a fresh bucket, a proxy in front of the server and storage through it.
fn behind_proxy(
    test: &str,
    change: impl FnOnce(&mut ObjectStoreOptions),
) -> Option<(MotoServer, String, Proxy, ObjectCheckpointStorage)> {
    let server = MotoServer::start(test)?;
    let bucket = server.fresh_bucket("proxied");
    let proxy = Proxy::start(server.port());
    let storage = storage_via(&proxy.endpoint(), &bucket, change);
    Some((server, bucket, proxy, storage))
}

#[track_caller]
fn assert_no_secret(err: &Error) {
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            !shown.contains(SECRET_KEY) && !shown.contains(ACCESS_KEY),
            "a credential in: {shown}"
        );
    }
}

#[test]
fn refused_connections_are_retried() {
    let Some((server, bucket, proxy, storage)) =
        behind_proxy("refused_connections_are_retried", |_| {})
    else {
        return;
    };
    let data = pattern(PART + 1000, 1);
    let mut stream = open(&storage);
    stream.write_all(&data).unwrap();
    // The creation of the upload and then every other request find the connection cut.
    proxy.set_mode(Mode::RefuseNext(2));
    let handle = stream
        .close_and_get_handle()
        .expect("retries got the stream through");
    assert_eq!(
        proxy.refused(),
        2,
        "the proxy refused fewer connections than it was told"
    );
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut handle.open().unwrap(), &mut back).unwrap();
    assert_eq!(back, data);
    assert!(server.pending_uploads(&bucket).is_empty());
}

#[test]
fn slow_responses_within_the_timeout_complete() {
    let Some((server, bucket, proxy, storage)) =
        behind_proxy("slow_responses_within_the_timeout", |_| {})
    else {
        return;
    };
    proxy.set_mode(Mode::Delay(Duration::from_millis(100)));
    let data = pattern(2 * PART + 77, 2);
    let mut stream = open(&storage);
    stream.write_all(&data).unwrap();
    let handle = stream
        .close_and_get_handle()
        .expect("a slow server still completes");
    assert_eq!(handle.state_size(), data.len() as u64);
    assert!(server.pending_uploads(&bucket).is_empty());
}

#[test]
fn responses_slower_than_the_request_timeout_fail_typed_and_leave_nothing() {
    let Some((server, bucket, proxy, storage)) =
        behind_proxy("responses_slower_than_the_request_timeout", |options| {
            options.request_timeout = Duration::from_millis(300);
            options.retry.max_retries = 1;
        })
    else {
        return;
    };
    proxy.set_mode(Mode::Delay(Duration::from_secs(5)));
    let mut stream = open(&storage);
    stream.write_all(&pattern(100_000, 3)).unwrap();
    let err = stream.close_and_get_handle().unwrap_err();
    match &err {
        Error::Io { path, source } => {
            assert!(
                path.to_string_lossy()
                    .starts_with(&format!("s3://{bucket}/job/chk-1/")),
                "{err}"
            );
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{err}");
        }
        other => panic!("not a typed i/o error: {other}"),
    }
    assert_no_secret(&err);
    proxy.set_mode(Mode::Pass);
    assert!(storage.completed_checkpoints().unwrap().is_empty());
    // Whatever the server stored before the client gave up goes with the checkpoint.
    storage.discard_checkpoint(CheckpointId::new(1)).unwrap();
    server.assert_clean(&bucket, "a timed-out checkpoint discarded");
}

#[test]
fn closing_unblocks_a_writer_whose_part_response_is_held() {
    let Some((server, bucket, proxy, storage)) =
        behind_proxy("closing_unblocks_a_writer", |options| {
            options.parts_in_flight = 1
        })
    else {
        return;
    };
    let mut stream = open(&storage);
    // The upload exists before the network stalls: its id is known to the stream.
    stream.write_all(&pattern(PART, 4)).unwrap();
    proxy.set_mode(Mode::Hold);
    let closer = stream.closer();
    let writer = std::thread::spawn(move || {
        let outcome = stream.write_all(&pattern(2 * PART, 5));
        (outcome, stream)
    });
    proxy.wait_until_holding();
    let closing = std::thread::spawn(move || closer.close());
    let (outcome, stream) = writer.join().unwrap();
    let err = Error::stream("writing", outcome.unwrap_err());
    assert!(matches!(err, Error::Closed { .. }), "{err}");
    drop(stream);
    // The abort itself crosses the stalled network: let it through.
    proxy.set_mode(Mode::Pass);
    closing.join().unwrap().expect("closing the stream");
    server.assert_clean(&bucket, "closed while a part response was held");
}

#[test]
fn a_server_killed_mid_upload_fails_the_stream_with_a_typed_error() {
    let Some(mut server) = MotoServer::start("a_server_killed_mid_upload") else {
        return;
    };
    let bucket = server.fresh_bucket("killed");
    let storage = storage_via(&server.endpoint(), &bucket, |_| {});
    let mut stream = open(&storage);
    stream.write_all(&pattern(2 * PART, 6)).unwrap();
    assert_eq!(
        server.pending_uploads(&bucket).len(),
        1,
        "no multipart upload running"
    );
    server.kill();
    let outcome = stream
        .write_all(&pattern(2 * PART, 7))
        .map_err(|err| Error::stream("writing", err))
        .and_then(|()| stream.close_and_get_handle().map(drop));
    let err = outcome.expect_err("a stream to a killed server completed");
    match &err {
        Error::Io { path, source } => {
            assert!(
                path.to_string_lossy()
                    .contains(&format!("s3://{bucket}/job/chk-1/")),
                "{err}"
            );
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{err}"
            );
        }
        other => panic!("not a typed i/o error: {other}"),
    }
    assert_no_secret(&err);
    // Storage elsewhere goes on working: the i/o runtime is not wedged.
    let Some(other) = MotoServer::start("a_server_killed_mid_upload") else {
        return;
    };
    let bucket = other.fresh_bucket("after");
    let storage = storage_via(&other.endpoint(), &bucket, |_| {});
    let mut stream = open(&storage);
    stream.write_all(b"after the crash").unwrap();
    let handle = stream.close_and_get_handle().unwrap();
    handle.discard().unwrap();
    other.assert_clean(&bucket, "a handle discarded after the crash");
}

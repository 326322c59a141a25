//! `snapstate::inspect` and the `snapstate` binary on checkpoint storage on object storage:
//! a heap checkpoint written through `ObjectCheckpointStorage` (over a `file://` store, so
//! the test can damage an object in place) is listed, inspected and verified by URL, and a
//! flipped byte in an object is reported with its key group and URL.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::sync::Arc;

use snapstate::Error;
use snapstate::api::CheckpointId;
use snapstate::api::SnapshotRequest;
use snapstate::api::StateObject;
use snapstate::format::KeyGroupsStateHandle;
use snapstate::inspect::{self, Location, ProblemKind};
use snapstate::object_storage::{ObjectCheckpointStorage, ObjectStateHandle, ObjectStoreOptions};
use support::{CHECKPOINT_ID, MAX_PARALLELISM};

/// A committed heap checkpoint under `<temp>/store`: the storage's URL and the keyed handle.
struct Stored {
    _dir: tempfile::TempDir,
    url: String,
    keyed: KeyGroupsStateHandle,
}

fn location(url: &str) -> Location {
    Location::Object {
        url: url.to_owned(),
        options: Box::default(),
    }
}

fn stored() -> Stored {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let url = format!("file://{}", root.display());
    let storage = ObjectCheckpointStorage::open(&url, ObjectStoreOptions::default())
        .unwrap()
        .with_file_state_threshold(0);
    let mut params = support::heap_params();
    params.key_serializer = "u64-be".to_owned();
    let mut backend = support::heap_backend(params);
    for key in 0..1_000u64 {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend.put_value("count", b"", &key.to_be_bytes()).unwrap();
    }
    let result = backend
        .snapshot(
            &SnapshotRequest::checkpoint(CheckpointId::new(CHECKPOINT_ID), 1_700_000_000_000),
            Arc::new(storage.stream_factory(CheckpointId::new(CHECKPOINT_ID))),
        )
        .unwrap()
        .run()
        .unwrap();
    let keyed = result.job_manager_owned().unwrap().clone();
    let metadata = support::one_instance(
        CheckpointId::new(CHECKPOINT_ID),
        1_700_000_000_000,
        keyed.clone(),
    );
    storage.commit_checkpoint(&metadata).unwrap();
    let keyed = keyed
        .downcast_ref::<KeyGroupsStateHandle>()
        .unwrap()
        .clone();
    Stored {
        url: storage.url().to_owned(),
        _dir: dir,
        keyed,
    }
}

/// The object holding the keyed stream.
fn keyed_object(stored: &Stored) -> &ObjectStateHandle {
    stored
        .keyed
        .delegate()
        .downcast_ref::<ObjectStateHandle>()
        .expect("the object storage writes object handles")
}

/// Where a `file://` store keeps `object`.
fn object_path(object: &ObjectStateHandle) -> std::path::PathBuf {
    std::path::Path::new("/").join(object.key())
}

#[test]
fn checkpoints_on_object_storage_are_listed_inspected_and_verified_by_url() {
    let stored = stored();
    let checkpoint_url = format!("{}/chk-{CHECKPOINT_ID}", stored.url);

    let listing = inspect::list(location(&stored.url)).unwrap();
    assert_eq!(listing.root.to_string_lossy(), stored.url);
    assert_eq!(listing.checkpoints.len(), 1);
    let summary = &listing.checkpoints[0];
    assert_eq!(summary.checkpoint_id, CHECKPOINT_ID);
    assert_eq!(summary.directory.to_string_lossy(), checkpoint_url);
    assert_eq!(summary.state_size, keyed_object(&stored).state_size());

    let report = inspect::inspect(location(&checkpoint_url), None, snapstate::registry()).unwrap();
    assert_eq!(report.summary.checkpoint_id, CHECKPOINT_ID);

    let report = inspect::verify(location(&stored.url), None, snapstate::registry()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.checkpoints.len(), 1);
}

#[test]
fn a_damaged_object_is_reported_with_its_key_group_and_url() {
    let stored = stored();
    let object = keyed_object(&stored);
    let path = object_path(object);
    // The first byte of the largest key group's section.
    let (key_group, offset) = (MAX_PARALLELISM.all().iter())
        .map(|key_group| (key_group, stored.keyed.offsets().offset(key_group).unwrap()))
        .max_by_key(|&(key_group, offset)| {
            let end = (stored.keyed.section_end(key_group)).unwrap_or_else(|| object.state_size());
            (end - offset, key_group)
        })
        .unwrap();
    support::flip_byte(&path, offset + 8);

    let report = inspect::verify(location(&stored.url), None, snapstate::registry()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(problem.key_group, Some(key_group.get()), "{problem}");
    assert!(
        matches!(
            problem.kind,
            ProblemKind::Corrupted | ProblemKind::Truncated
        ),
        "{problem}"
    );
    assert!(
        problem
            .file
            .as_deref()
            .unwrap_or_default()
            .contains(&object.url()),
        "{problem:?}"
    );
}

#[test]
fn a_prefix_without_checkpoints_is_no_checkpoint_storage() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let err = inspect::list(location(&url)).unwrap_err();
    assert!(
        matches!(&err, Error::NotACheckpointDirectory { path } if path.to_string_lossy() == url),
        "{err}"
    );
    let stored = stored();
    let err = inspect::list(location(&format!("{}/chk-99", stored.url))).unwrap_err();
    assert!(
        matches!(err, Error::NotACheckpointDirectory { .. }),
        "{err}"
    );
}

#[test]
fn the_binary_verifies_a_url_and_names_the_damage() {
    let stored = stored();
    let snapstate = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_snapstate"))
            .args(args)
            .output()
            .unwrap()
    };
    let verify = snapstate(&["verify", "--json", &stored.url]);
    assert!(verify.status.success(), "{verify:?}");
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["root"], stored.url.as_str());

    let path = object_path(keyed_object(&stored));
    support::flip_byte(
        &path,
        stored
            .keyed
            .offsets()
            .offset(MAX_PARALLELISM.all().start())
            .unwrap()
            + 4,
    );
    let verify = snapstate(&["verify", &stored.url]);
    assert_eq!(verify.status.code(), Some(1), "{verify:?}");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(text.contains(&keyed_object(&stored).url()), "{text}");

    let refused = snapstate(&["list", "--option", "s3.region", &stored.url]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("KEY=VALUE"),
        "{refused:?}"
    );
}

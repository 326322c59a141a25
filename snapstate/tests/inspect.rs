//! `snapstate::inspect` on real checkpoint directories: a heap checkpoint (plus an operator
//! snapshot) written through `LocalCheckpointStorage`, and a hand-built incremental one.
//! Listing and inspection show what was written; verification passes on intact data and
//! names exactly the damaged key group, file or partition otherwise.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::sync::Arc;

use snapstate::api::CheckpointId;
use snapstate::api::SnapshotRequest;
use snapstate::api::{
    CheckpointStreamFactory, CheckpointedStateScope, HandleAndLocalPath,
    IncrementalRemoteKeyedStateHandle, PlaceholderStreamStateHandle, StateKind, StateMetaInfo,
    StreamStateHandle,
};
use snapstate::api::{KeyGroup, MaxParallelism};
use snapstate::format::KeyedBackendSerializationProxy;
use snapstate::format::file_manifest::{FileManifest, ManifestEntry};
use snapstate::format::keyed_format::KeyedSnapshotReader;
use snapstate::inspect::{
    self, FileScope, HandleDetail, HandleKind, Problem, ProblemKind, VerifyReport,
};
use snapstate::{CheckpointType, Error, KeyGroupRange};
use support::{CHECKPOINT_ID, Fixture, KEYED_ENTRIES, MAX_PARALLELISM, seen_ttl};

const DECORATORS: [&str; 3] = ["none", "snappy", "lz4"];

fn verify(fixture: &Fixture) -> VerifyReport {
    inspect::verify(fixture.root(), None, snapstate::registry()).unwrap()
}

fn problems(report: &VerifyReport) -> String {
    report
        .problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn list_finds_the_checkpoint_with_its_size_and_handles() {
    let fixture = support::checkpoint("snappy");
    let listing = inspect::list(fixture.root()).unwrap();
    assert_eq!(listing.checkpoints.len(), 1, "{listing:?}");
    assert!(listing.incomplete.is_empty() && listing.unreadable.is_empty());
    let summary = &listing.checkpoints[0];
    assert_eq!(summary.checkpoint_id, CHECKPOINT_ID);
    assert_eq!(summary.checkpoint_type, CheckpointType::Checkpoint);
    assert_eq!(summary.max_parallelism, MAX_PARALLELISM.get());
    assert_eq!(summary.instances, 1);
    assert_eq!(summary.properties["compression"], "snappy");
    let mut on_disk = std::fs::metadata(&fixture.keyed_file).unwrap().len();
    if let Some(file) = &fixture.operator_file {
        on_disk += std::fs::metadata(file).unwrap().len();
    }
    assert_eq!(summary.state_size, on_disk, "the size of every stored file");
    let keyed = &summary.handles[0];
    assert_eq!(keyed.kind, HandleKind::KeyGroups);
    assert_eq!(
        keyed.key_group_range,
        Some(KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1).unwrap())
    );
    if fixture.operator_file.is_some() {
        assert_eq!(summary.handles[1].kind, HandleKind::Operator);
        assert_eq!(summary.handles[1].key_group_range, None);
    }
}

#[test]
fn list_reports_directories_without_metadata_as_incomplete() {
    let fixture = support::checkpoint("none");
    std::fs::create_dir(fixture.root().join("chk-4")).unwrap();
    let listing = inspect::list(fixture.root()).unwrap();
    assert_eq!(listing.checkpoints.len(), 1);
    assert_eq!(listing.incomplete.len(), 1, "{listing:?}");
    assert_eq!(listing.incomplete[0].checkpoint_id, 4);
    let report = verify(&fixture);
    assert!(report.is_ok(), "{}", problems(&report));
    assert_eq!(report.skipped, listing.incomplete);
}

#[test]
fn damaged_metadata_is_listed_as_unreadable_and_is_a_problem() {
    let fixture = support::checkpoint("none");
    let metadata = fixture
        .root()
        .join(format!("chk-{CHECKPOINT_ID}"))
        .join("_metadata");
    support::flip_byte(&metadata, 20);
    let listing = inspect::list(fixture.root()).unwrap();
    assert!(listing.checkpoints.is_empty(), "{listing:?}");
    assert_eq!(listing.unreadable[0].checkpoint_id, CHECKPOINT_ID);
    let report = verify(&fixture);
    assert_eq!(report.problems.len(), 1, "{}", problems(&report));
    assert_eq!(report.problems[0].kind, ProblemKind::Corrupted);
    assert!(
        report.problems[0].message.contains("_metadata"),
        "{}",
        report.problems[0]
    );
}

#[test]
fn inspect_shows_every_key_group_with_offset_length_and_checksum() {
    for compression in DECORATORS {
        let fixture = support::checkpoint(compression);
        let report = inspect::inspect(fixture.root(), None, snapstate::registry()).unwrap();
        assert_eq!(report.summary.checkpoint_id, CHECKPOINT_ID);
        let HandleDetail::KeyGroups(detail) = &report.handles[0].detail else {
            panic!("{compression}: not a key-groups handle: {report:?}");
        };
        assert!(
            detail
                .stream
                .contains(&*fixture.keyed_file.to_string_lossy()),
            "{}",
            detail.stream
        );
        let header = detail.header.as_ref().expect("the header reads");
        assert_eq!(header.compression, compression);
        assert!(header.compression_linked, "{compression}");
        assert_eq!(header.key_serializer, "u64-be");
        assert_eq!(
            header.version,
            snapstate::format::proxy::CURRENT_VERSION,
            "{compression}: the version that wrote it"
        );
        let states: Vec<(&str, StateKind, Option<i64>)> = header
            .states
            .iter()
            .map(|s| (s.name.as_str(), s.kind, s.time_to_live_ms))
            .collect();
        assert_eq!(
            states,
            [
                ("count", StateKind::Value, None),
                ("pages", StateKind::List, None),
                ("seen", StateKind::Map, Some(seen_ttl().time_to_live()))
            ]
        );
        let ids: Vec<u32> = detail.key_groups.iter().map(|row| row.key_group).collect();
        assert_eq!(
            ids,
            (0..MAX_PARALLELISM.get()).collect::<Vec<_>>(),
            "{compression}"
        );
        let file_size = std::fs::metadata(&fixture.keyed_file).unwrap().len();
        let mut next = detail.key_groups[0].offset;
        assert!(next > 0, "the header comes first");
        for row in &detail.key_groups {
            assert_eq!(row.offset, next, "{compression}: sections are contiguous");
            assert_eq!(
                row.checksum,
                fixture
                    .keyed
                    .checksum(KeyGroup::new(row.key_group).unwrap())
            );
            assert!(row.checksum.is_some(), "{compression}: {row:?}");
            next += row.length.expect("every section has a length");
        }
        assert_eq!(
            next, file_size,
            "{compression}: the last section ends the file"
        );
    }
}

#[test]
fn inspect_of_a_checkpoint_directory_selects_that_checkpoint() {
    let fixture = support::checkpoint("none");
    let chk = fixture.root().join(format!("chk-{CHECKPOINT_ID}"));
    let report = inspect::inspect(&chk, None, snapstate::registry()).unwrap();
    assert_eq!(report.summary.checkpoint_id, CHECKPOINT_ID);
    let listing = inspect::list(&chk).unwrap();
    assert_eq!(listing.root, fixture.root());
    let err = inspect::inspect(&chk, Some(9), snapstate::registry()).unwrap_err();
    assert!(matches!(err, Error::ConflictingCheckpoint { .. }), "{err}");
    let err = inspect::inspect(fixture.root(), Some(9), snapstate::registry()).unwrap_err();
    assert!(matches!(err, Error::CheckpointNotFound { .. }), "{err}");
    assert!(err.to_string().contains("committed: 3"), "{err}");
}

#[test]
fn verify_passes_on_an_intact_checkpoint_and_counts_every_entry() {
    for compression in DECORATORS {
        let fixture = support::checkpoint(compression);
        let report = verify(&fixture);
        assert!(report.is_ok(), "{compression}: {}", problems(&report));
        let handles = &report.checkpoints[0].handles;
        let keyed = &handles[0];
        assert!(keyed.verified);
        assert_eq!(keyed.key_groups.len(), MAX_PARALLELISM.get() as usize);
        assert_eq!(keyed.entries, KEYED_ENTRIES, "{compression}");
        if fixture.operator_file.is_some() {
            let operator = &handles[1];
            assert_eq!(operator.entries, support::OPERATOR_ENTRIES, "{operator:?}");
            assert!(operator.checked.contains("CRC-32C"), "{}", operator.checked);
        }
    }
}

/// The entries of `key_group`, read straight from the handle.
fn entries(fixture: &Fixture, key_group: u32) -> Vec<(u16, Vec<u8>, Vec<u8>)> {
    let mut reader =
        KeyedSnapshotReader::open(&fixture.keyed, snapstate::registry(), MAX_PARALLELISM).unwrap();
    let mut entries = Vec::new();
    reader
        .read_key_group(KeyGroup::new(key_group).unwrap(), &mut |entry| {
            entries.push((entry.state_id, entry.key.to_vec(), entry.value.to_vec()));
            Ok(())
        })
        .unwrap();
    entries
}

/// Flips bytes across one key group's section, one at a time, and checks that each flip
/// is reported as a problem of exactly that key group of that file.
///
/// Per-key-group CRC-32Cs cover the decoded bytes. LZ4 frames also checksum every
/// compressed block, so with `none` and `lz4` every flip is caught. A snappy chunk's
/// checksum covers decoded bytes only, and in repetitive data a flipped back-reference can
/// decode to the very same bytes: such a flip must leave the entries read back unchanged.
fn check_flips_are_pinned_to_their_key_group(compression: &str) {
    const FLIPS: u64 = 24;
    let fixture = support::checkpoint(compression);
    let key_group = support::largest_key_group(&fixture);
    let intact = entries(&fixture, key_group);
    let (offset, length) = support::section(&fixture, key_group);
    assert!(
        length > FLIPS,
        "{compression}: key group {key_group} holds data"
    );
    let original = std::fs::read(&fixture.keyed_file).unwrap();
    let mut detected = 0;
    for flip in 0..FLIPS {
        let pos = offset + flip * length / FLIPS;
        support::flip_byte(&fixture.keyed_file, pos);
        let report = verify(&fixture);
        let what = format!(
            "{compression}, key group {key_group}, byte {}",
            pos - offset
        );
        if report.problems.is_empty() {
            assert_eq!(compression, "snappy", "{what}: the flip went unnoticed");
            assert_eq!(
                entries(&fixture, key_group),
                intact,
                "{what}: unnoticed, yet the entries changed"
            );
        } else {
            detected += 1;
            assert_eq!(report.problems.len(), 1, "{what}: {}", problems(&report));
            let problem = &report.problems[0];
            assert_eq!(problem.key_group, Some(key_group), "{what}: {problem}");
            assert!(
                matches!(
                    problem.kind,
                    ProblemKind::Corrupted | ProblemKind::Truncated
                ),
                "{what}: {problem}"
            );
            assert_eq!(problem.checkpoint_id, CHECKPOINT_ID);
            assert_eq!(problem.handle.as_deref(), Some("keyed 0"));
            let file = problem.file.as_deref().unwrap_or_default();
            assert!(
                file.contains(&*fixture.keyed_file.to_string_lossy()),
                "{what}: {problem:?}"
            );
            let unread: Vec<u32> = report.checkpoints[0].handles[0]
                .key_groups
                .iter()
                .filter(|check| check.entries.is_none())
                .map(|check| check.key_group)
                .collect();
            assert_eq!(unread, [key_group], "{what}");
        }
        std::fs::write(&fixture.keyed_file, &original).unwrap();
    }
    assert!(
        detected * 4 >= FLIPS * 3,
        "{compression}: {detected} of {FLIPS} flips found"
    );
}

#[test]
fn a_flipped_byte_is_reported_as_exactly_its_key_group_uncompressed() {
    check_flips_are_pinned_to_their_key_group("none");
}

#[test]
fn a_flipped_byte_is_reported_as_exactly_its_key_group_snappy() {
    check_flips_are_pinned_to_their_key_group("snappy");
}

#[test]
fn a_flipped_byte_is_reported_as_exactly_its_key_group_lz4() {
    check_flips_are_pinned_to_their_key_group("lz4");
}

#[test]
fn a_truncated_file_is_reported_with_the_key_groups_it_lost() {
    let fixture = support::checkpoint("lz4");
    let (cut, _) = support::section(&fixture, 100);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&fixture.keyed_file)
        .unwrap();
    file.set_len(cut + 3).unwrap();
    let report = verify(&fixture);
    let text = problems(&report);
    let size = report
        .problems
        .iter()
        .find(|p| p.key_group.is_none())
        .unwrap_or_else(|| panic!("no file-level problem: {text}"));
    assert_eq!(size.kind, ProblemKind::Truncated, "{size}");
    assert!(
        size.file
            .as_deref()
            .is_some_and(|f| f.contains(&*fixture.keyed_file.to_string_lossy())),
        "{size:?}"
    );
    let lost: Vec<u32> = report.problems.iter().filter_map(|p| p.key_group).collect();
    assert_eq!(
        lost,
        (100..MAX_PARALLELISM.get()).collect::<Vec<_>>(),
        "{text}"
    );
}

#[test]
fn a_missing_stream_file_is_one_not_found_problem() {
    let fixture = support::checkpoint("none");
    std::fs::remove_file(&fixture.keyed_file).unwrap();
    let report = verify(&fixture);
    let keyed: Vec<&Problem> = report
        .problems
        .iter()
        .filter(|p| p.handle.as_deref() == Some("keyed 0"))
        .collect();
    assert_eq!(keyed.len(), 1, "{}", problems(&report));
    assert_eq!(keyed[0].kind, ProblemKind::NotFound, "{}", keyed[0]);
    // Inspect still shows the handle's layout, and why the header cannot be read.
    let report = inspect::inspect(fixture.root(), None, snapstate::registry()).unwrap();
    let HandleDetail::KeyGroups(detail) = &report.handles[0].detail else {
        panic!("{report:?}");
    };
    assert_eq!(detail.key_groups.len(), MAX_PARALLELISM.get() as usize);
    assert!(detail.header_error.is_some(), "{detail:?}");
}

#[test]
fn an_unlinked_decorator_is_reported_not_panicked_on() {
    let fixture = support::checkpoint("snappy");
    let mut registry = snapstate::Registry::default();
    snapstate::api::register(&mut registry).unwrap();
    let report = inspect::verify(fixture.root(), None, &registry).unwrap();
    let keyed: Vec<&Problem> = report
        .problems
        .iter()
        .filter(|p| p.handle.as_deref() == Some("keyed 0"))
        .collect();
    assert_eq!(keyed.len(), 1, "{}", problems(&report));
    assert_eq!(keyed[0].kind, ProblemKind::UnknownPlugin, "{}", keyed[0]);
    assert!(keyed[0].message.contains("snappy"), "{}", keyed[0]);
    let report = inspect::inspect(fixture.root(), None, &registry).unwrap();
    let HandleDetail::KeyGroups(detail) = &report.handles[0].detail else {
        panic!("{report:?}");
    };
    assert!(!detail.header.as_ref().unwrap().compression_linked);
}

#[cfg(feature = "operator")]
#[test]
fn a_flipped_byte_in_an_operator_partition_is_reported_for_that_handle() {
    let fixture = support::checkpoint("none");
    let file = fixture.operator_file.clone().unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    // The last partition is the broadcast map; its bytes end the stream.
    support::flip_byte(&file, size - 6);
    let report = verify(&fixture);
    assert_eq!(report.problems.len(), 1, "{}", problems(&report));
    let problem = &report.problems[0];
    assert_eq!(problem.handle.as_deref(), Some("operator 0"), "{problem}");
    assert_eq!(problem.kind, ProblemKind::Corrupted, "{problem}");
    assert!(problem.message.contains("rules"), "{problem}");
}

#[cfg(feature = "operator")]
#[test]
fn without_an_operator_backend_operator_streams_are_checked_by_size() {
    let fixture = support::checkpoint("none");
    let mut registry = snapstate::Registry::default();
    snapstate::api::register(&mut registry).unwrap();
    let report = inspect::verify(fixture.root(), None, &registry).unwrap();
    assert!(report.is_ok(), "{}", problems(&report));
    let operator = &report.checkpoints[0].handles[1];
    assert!(
        operator.checked.contains("not decoded"),
        "{}",
        operator.checked
    );
    assert_eq!(operator.entries, 0);

    let file = fixture.operator_file.clone().unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(size - 1)
        .unwrap();
    let report = inspect::verify(fixture.root(), None, &registry).unwrap();
    assert_eq!(report.problems.len(), 1, "{}", problems(&report));
    assert_eq!(report.problems[0].kind, ProblemKind::Truncated);
    assert_eq!(report.problems[0].handle.as_deref(), Some("operator 0"));
}

#[test]
fn a_directory_that_is_not_checkpoint_storage_is_a_typed_error() {
    let empty = tempfile::tempdir().unwrap();
    let err = inspect::list(empty.path()).unwrap_err();
    assert!(
        matches!(err, Error::NotACheckpointDirectory { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("is not a snapstate checkpoint directory"),
        "{err}"
    );
    // Fresh storage has `shared/` but no checkpoint yet.
    snapstate::LocalCheckpointStorage::new(empty.path()).unwrap();
    let err = inspect::verify(empty.path(), None, snapstate::registry()).unwrap_err();
    assert!(
        matches!(err, Error::NotACheckpointDirectory { .. }),
        "{err}"
    );
    let missing = empty.path().join("no-such-dir");
    let err = inspect::inspect(&missing, None, snapstate::registry()).unwrap_err();
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    assert!(!missing.exists(), "the inspector creates nothing");
}

// ---------------------------------------------------------------------------------------
// Incremental handles, built by hand as the RocksDB incremental strategy lays them out
// ---------------------------------------------------------------------------------------

const FILES: [(&str, bool, &[u8]); 4] = [
    ("000010.sst", true, b"sst file ten, with some bytes"),
    ("000011.sst", true, b"sst file eleven"),
    ("MANIFEST-000004", false, b"manifest"),
    ("CURRENT", false, b"MANIFEST-000004\n"),
];

struct Incremental {
    dir: tempfile::TempDir,
    files: Vec<HandleAndLocalPath>,
    meta: Arc<dyn StreamStateHandle>,
}

fn incremental_storage() -> Incremental {
    let dir = tempfile::tempdir().unwrap();
    let storage = snapstate::LocalCheckpointStorage::new(dir.path())
        .unwrap()
        .with_file_state_threshold(0);
    let factory = storage
        .stream_factory(CheckpointId::new(CHECKPOINT_ID))
        .unwrap();
    let write = |scope, bytes: &[u8]| {
        let mut out = factory.create_output_stream(scope).unwrap();
        out.write_all(bytes).unwrap();
        out.close_and_get_handle().unwrap()
    };
    let mut manifest = FileManifest::default();
    let mut files = Vec::new();
    for (name, shared, bytes) in FILES {
        let scope = match shared {
            true => CheckpointedStateScope::Shared,
            false => CheckpointedStateScope::Exclusive,
        };
        files.push(HandleAndLocalPath::new(write(scope, bytes), name));
        manifest.files.push(ManifestEntry {
            name: name.to_owned(),
            size: bytes.len() as u64,
            crc: crc32c::crc32c(bytes),
            shared,
        });
    }
    let header = KeyedBackendSerializationProxy::new(
        "u64-be",
        vec![StateMetaInfo::value("count", "void", "u64-be")],
        "none",
        MaxParallelism::of(128),
    );
    let mut meta = Vec::new();
    header.write_to(&mut meta).unwrap();
    manifest.write_to(&mut meta).unwrap();
    let meta = write(CheckpointedStateScope::Exclusive, &meta);
    Incremental { dir, files, meta }
}

impl Incremental {
    /// Commits a handle carrying `files` (shared ones first in [`FILES`] order).
    fn commit(&self, files: Vec<HandleAndLocalPath>) {
        let (shared_state, private_state) = files
            .into_iter()
            .partition(|f| f.local_path.ends_with(".sst"));
        let handle = IncrementalRemoteKeyedStateHandle {
            strategy: None,
            backend_identifier: "backend-1".into(),
            key_group_range: KeyGroupRange::new(0, MAX_PARALLELISM.get() - 1).unwrap(),
            checkpoint_id: CheckpointId::new(CHECKPOINT_ID),
            shared_state,
            private_state,
            meta_state: self.meta.clone(),
        };
        let metadata = support::one_instance(CheckpointId::new(CHECKPOINT_ID), 0, Arc::new(handle));
        let storage = snapstate::LocalCheckpointStorage::new(self.dir.path()).unwrap();
        storage.commit_checkpoint(&metadata).unwrap();
    }

    fn verify(&self) -> VerifyReport {
        inspect::verify(self.dir.path(), None, snapstate::registry()).unwrap()
    }

    fn path_of(&self, name: &str) -> std::path::PathBuf {
        let file = self.files.iter().find(|f| f.local_path == name).unwrap();
        file.handle
            .downcast_ref::<snapstate::local_storage::FileStateHandle>()
            .unwrap()
            .path()
            .to_path_buf()
    }
}

#[test]
fn incremental_handles_are_inspected_and_verified_against_their_manifest() {
    let incremental = incremental_storage();
    incremental.commit(incremental.files.clone());
    let report = incremental.verify();
    assert!(report.is_ok(), "{}", problems(&report));
    let checks = &report.checkpoints[0].handles[0].files;
    assert_eq!(checks.len(), FILES.len());
    assert!(
        checks.iter().all(|f| f.ok && f.bytes_read.is_some()),
        "{checks:?}"
    );

    let report = inspect::inspect(incremental.dir.path(), None, snapstate::registry()).unwrap();
    let HandleDetail::IncrementalRemote(detail) = &report.handles[0].detail else {
        panic!("{report:?}");
    };
    assert_eq!(detail.backend_identifier, "backend-1");
    assert_eq!(detail.header.as_ref().unwrap().states[0].name, "count");
    assert!(detail.missing_from_handle.is_empty());
    for (file, (name, shared, bytes)) in detail.files.iter().zip(FILES) {
        assert_eq!(file.local_path, name);
        assert_eq!(file.scope == FileScope::Shared, shared, "{file:?}");
        assert_eq!(file.manifest_crc, Some(crc32c::crc32c(bytes)), "{file:?}");
        assert_eq!(file.manifest_size, Some(bytes.len() as u64));
        assert!(!file.placeholder);
    }
}

#[test]
fn a_damaged_incremental_file_is_named() {
    let incremental = incremental_storage();
    incremental.commit(incremental.files.clone());
    support::flip_byte(&incremental.path_of("000011.sst"), 3);
    let report = incremental.verify();
    assert_eq!(report.problems.len(), 1, "{}", problems(&report));
    let problem = &report.problems[0];
    assert_eq!(problem.kind, ProblemKind::Corrupted, "{problem}");
    assert!(problem.message.contains("000011.sst"), "{problem}");
    assert!(problem.message.contains("CRC-32C"), "{problem}");
}

#[test]
fn a_handle_that_lacks_a_listed_file_is_reported() {
    let incremental = incremental_storage();
    let mut files = incremental.files.clone();
    files.retain(|f| f.local_path != "CURRENT");
    incremental.commit(files);
    let report = incremental.verify();
    assert_eq!(report.problems.len(), 1, "{}", problems(&report));
    assert!(
        report.problems[0].message.contains("`CURRENT`"),
        "{}",
        report.problems[0]
    );
}

#[test]
fn placeholders_are_checked_by_size_only() {
    let incremental = incremental_storage();
    let mut files = incremental.files.clone();
    let (_, _, bytes) = FILES[0];
    files[0] = HandleAndLocalPath::new(
        Arc::new(PlaceholderStreamStateHandle::new(
            "backend-0/000010.sst",
            bytes.len() as u64 + 1,
        )),
        FILES[0].0,
    );
    incremental.commit(files);
    let report = incremental.verify();
    assert_eq!(report.problems.len(), 1, "{}", problems(&report));
    assert!(
        report.problems[0].message.contains("the manifest"),
        "{}",
        report.problems[0]
    );
    assert_eq!(report.checkpoints[0].handles[0].files[0].bytes_read, None);
}

#[test]
fn heap_incremental_checkpoints_verify_and_a_damaged_delta_is_named() {
    let registry = snapstate::registry();
    let dir = tempfile::tempdir().unwrap();
    let storage = snapstate::LocalCheckpointStorage::new(dir.path())
        .unwrap()
        .with_file_state_threshold(0);
    let mut params = support::heap_params();
    params.strategy = Some("heap-incremental".into());
    let mut backend = support::heap_backend(params);
    let shared = snapstate::coordinator::SharedStateRegistry::default();
    let checkpoint = |backend: &mut dyn snapstate::api::KeyedStateBackend, id: u64| {
        let factory = Arc::new(storage.stream_factory(CheckpointId::new(id)).unwrap());
        let result = backend
            .snapshot(
                &SnapshotRequest::new(
                    CheckpointId::new(id),
                    0,
                    snapstate::CheckpointOptions::checkpoint().clone(),
                ),
                factory,
            )
            .unwrap()
            .run()
            .unwrap();
        let handle = result.job_manager_owned().unwrap();
        let handle = handle
            .downcast_ref::<IncrementalRemoteKeyedStateHandle>()
            .unwrap();
        let retained = shared.register(handle).unwrap();
        backend
            .notify_checkpoint_complete(CheckpointId::new(id))
            .unwrap();
        shared.resolve(&retained).unwrap()
    };
    for key in 0..2_000u64 {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend.put_value("count", b"", &key.to_be_bytes()).unwrap();
    }
    checkpoint(&mut *backend, 1);
    backend.set_current_key(&7u64.to_be_bytes()).unwrap();
    backend.put_value("count", b"", &[0; 8]).unwrap();
    let second = checkpoint(&mut *backend, CHECKPOINT_ID);
    let metadata = support::one_instance(
        CheckpointId::new(CHECKPOINT_ID),
        0,
        Arc::new(second.clone()),
    );
    storage.commit_checkpoint(&metadata).unwrap();

    let report = inspect::verify(dir.path(), Some(CHECKPOINT_ID), registry).unwrap();
    assert!(report.is_ok(), "{}", problems(&report));
    let checks = &report.checkpoints[0].handles[0].files;
    assert_eq!(checks.len(), 2, "base and delta: {checks:?}");

    let delta = &second.shared_state[1];
    assert!(delta.local_path.ends_with(".delta"), "{delta:?}");
    let path = delta
        .handle
        .downcast_ref::<snapstate::local_storage::FileStateHandle>()
        .unwrap()
        .path()
        .to_path_buf();
    support::flip_byte(&path, 40);
    let report = inspect::verify(dir.path(), Some(CHECKPOINT_ID), registry).unwrap();
    assert_eq!(report.problems.len(), 1, "{}", problems(&report));
    assert!(
        report.problems[0].message.contains(&delta.local_path),
        "{}",
        report.problems[0]
    );
}

//! Checkpoints a job can trust, against an adversarial operator (regressions of crafted
//! `_metadata` deleting files outside the storage, restores ignoring the max parallelism,
//! checkpoint directories that could not be moved, and reads not bounded by the metadata).
//!
//! Invariants guarded here:
//! - a restore or listing of crafted metadata reads, writes and deletes nothing outside the
//!   storage root, and a handle read back from storage is never deleted as a "duplicate";
//! - a checkpoint restores only into a job of the max parallelism it was taken with;
//! - a checkpoint directory of every backend and strategy restores (and reads its own
//!   files) after it was moved or copied, also one written with absolute paths;
//! - a data file that is a FIFO, a link to a device or an oversized metadata file is a
//!   typed error, never a hang or a huge allocation.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::checkpoint_metadata::METADATA_FILE;
use state_api::{
    CheckpointMetadata, CheckpointOptions, CheckpointStreamFactory, CheckpointType, Error,
    IncrementalRemoteKeyedStateHandle, InstanceSnapshot, KeyGroupRange, KeyedBackendParams,
    KeyedStateBackend, KeyedStateHandle, MaxParallelism, OperatorBackendParams,
    OperatorStateMetaInfo, Registry, StateMetaInfo,
};
use state_coordinator::SharedStateRegistry;
use state_format::metadata::frame_body;
use state_storage_local::LocalCheckpointStorage;

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);
const PARALLELISM: u32 = 2;
const KEYS: u64 = 400;

fn registry() -> &'static Registry {
    state_compress::link();
    state_heap::link();
    state_operator::link();
    state_rocksdb::link();
    Registry::global()
}

/// Every keyed backend with each of its strategies.
const STRATEGIES: [(&str, &str); 4] = [
    ("heap", "heap"),
    ("heap", "heap-incremental"),
    ("rocksdb", "rocksdb-full"),
    ("rocksdb", "rocksdb-incremental"),
];

fn range_of(index: u32, max_parallelism: MaxParallelism) -> KeyGroupRange {
    max_parallelism.range_for(index, PARALLELISM).unwrap()
}

fn params(
    backend: &str,
    strategy: &str,
    index: u32,
    max_parallelism: MaxParallelism,
    work: &Path,
) -> KeyedBackendParams {
    let mut params = KeyedBackendParams::new(max_parallelism, range_of(index, max_parallelism));
    params.key_serializer = "u64-be".into();
    params.strategy = Some(strategy.into());
    params.compression = "snappy".into();
    let dir = work.join(format!("{backend}-{index}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    params.working_dir = Some(dir);
    params
}

fn value(key: u64, round: u64) -> Vec<u8> {
    format!("value of {key} in round {round} {}", "x".repeat(40)).into_bytes()
}

/// Writes two checkpoints (ids 1 and 2; the second changes every tenth key) of `strategy`,
/// with operator state, into a storage at `root`; returns the expected value per key.
fn write_checkpoints(root: &Path, backend: &str, strategy: &str) -> BTreeMap<u64, Vec<u8>> {
    let registry = registry();
    let work = tempfile::tempdir().unwrap();
    let storage = LocalCheckpointStorage::new(root)
        .unwrap()
        .with_file_state_threshold(0);
    let shared = SharedStateRegistry::default();
    let factory = registry.keyed_backend(backend).unwrap();
    let operator_factory = registry.operator_backend("operator").unwrap();
    let mut instances = Vec::new();
    for index in 0..PARALLELISM {
        let mut keyed = factory
            .create(
                params(backend, strategy, index, MAX_PARALLELISM, work.path()),
                registry,
            )
            .unwrap();
        keyed
            .register_state(&StateMetaInfo::value("value", "bytes", "bytes"))
            .unwrap();
        let mut operator = operator_factory
            .create(OperatorBackendParams::new(index, PARALLELISM), registry)
            .unwrap();
        operator
            .register_state(&OperatorStateMetaInfo::union_list("offset", "u64-be"))
            .unwrap();
        operator
            .update_list("offset", &[u64::from(index).to_be_bytes().to_vec()])
            .unwrap();
        instances.push((keyed, operator));
    }
    let mut expected = BTreeMap::new();
    for checkpoint_id in 1..=2u64 {
        for key in (0..KEYS).filter(|key| checkpoint_id == 1 || key % 10 == 0) {
            let group = MAX_PARALLELISM.key_group_of(&key.to_be_bytes());
            let (keyed, _) = instances
                .iter_mut()
                .find(|(keyed, _)| keyed.key_group_range().contains(group))
                .unwrap();
            keyed.set_current_key(&key.to_be_bytes()).unwrap();
            keyed
                .put_value("value", b"", &value(key, checkpoint_id))
                .unwrap();
            expected.insert(key, value(key, checkpoint_id));
        }
        let streams: Arc<dyn CheckpointStreamFactory> = Arc::new(
            storage
                .stream_factory(CheckpointId::new(checkpoint_id))
                .unwrap(),
        );
        let mut metadata = CheckpointMetadata::new(
            CheckpointId::new(checkpoint_id),
            checkpoint_id,
            CheckpointType::Checkpoint,
            MAX_PARALLELISM,
        );
        for (index, (keyed, operator)) in (0u32..).zip(instances.iter_mut()) {
            let options = CheckpointOptions::checkpoint();
            let handle = keyed
                .snapshot(
                    &SnapshotRequest::new(
                        CheckpointId::new(checkpoint_id),
                        checkpoint_id,
                        options.clone(),
                    ),
                    streams.clone(),
                )
                .unwrap()
                .run()
                .unwrap()
                .job_manager_owned()
                .unwrap()
                .clone();
            let handle: Arc<dyn KeyedStateHandle> =
                match handle.downcast_ref::<IncrementalRemoteKeyedStateHandle>() {
                    Some(incremental) => {
                        let retained = shared.register(incremental).unwrap();
                        Arc::new(shared.resolve(&retained).unwrap())
                    }
                    None => handle,
                };
            let operator_handle = operator
                .snapshot(
                    &SnapshotRequest::new(
                        CheckpointId::new(checkpoint_id),
                        checkpoint_id,
                        options.clone(),
                    ),
                    streams.clone(),
                )
                .unwrap()
                .run()
                .unwrap()
                .job_manager_owned()
                .cloned();
            metadata.instances.push(InstanceSnapshot {
                index,
                keyed: vec![handle],
                operator: operator_handle.into_iter().collect(),
            });
        }
        storage.commit_checkpoint(&metadata).unwrap();
        for (keyed, operator) in &mut instances {
            keyed
                .notify_checkpoint_complete(CheckpointId::new(checkpoint_id))
                .unwrap();
            operator
                .notify_checkpoint_complete(CheckpointId::new(checkpoint_id))
                .unwrap();
        }
    }
    expected
}

/// Restores checkpoint 2 of the storage at `root` into `backend` with `max_parallelism`.
fn restore(
    root: &Path,
    backend: &str,
    max_parallelism: MaxParallelism,
) -> Result<Vec<Box<dyn KeyedStateBackend>>, Error> {
    let registry = registry();
    let work = tempfile::tempdir().unwrap();
    let storage = LocalCheckpointStorage::open(root)?;
    let metadata = storage.load_checkpoint(CheckpointId::new(2))?;
    SharedStateRegistry::default().register_restored(&metadata)?;
    let handles = metadata.keyed_handles();
    let operator_handles = metadata.operator_handles();
    for index in 0..PARALLELISM {
        let operator = registry.operator_backend("operator")?.restore(
            OperatorBackendParams::new(index, PARALLELISM),
            registry,
            &operator_handles[index as usize],
        )?;
        assert_eq!(operator.list("offset")?, [u64::from(index).to_be_bytes()]);
    }
    (0..PARALLELISM)
        .map(|index| {
            let strategy = match backend {
                "heap" => "heap",
                _ => "rocksdb-full",
            };
            registry.keyed_backend(backend)?.restore(
                params(backend, strategy, index, max_parallelism, work.path()),
                registry,
                &handles,
            )
        })
        .collect()
}

fn check_contents(
    instances: &mut [Box<dyn KeyedStateBackend>],
    expected: &BTreeMap<u64, Vec<u8>>,
    label: &str,
) {
    for (key, value) in expected {
        let group = MAX_PARALLELISM.key_group_of(&key.to_be_bytes());
        let instance = instances
            .iter_mut()
            .find(|instance| instance.key_group_range().contains(group))
            .unwrap();
        instance.set_current_key(&key.to_be_bytes()).unwrap();
        assert_eq!(
            instance.value("value", b"").unwrap().as_ref(),
            Some(value),
            "{label}: key {key}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
}

/// Every data file under `root/dir` (not metadata, not in-progress).
fn data_files(root: &Path, dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().is_some_and(|name| name != METADATA_FILE))
        .collect();
    files.sort();
    files
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_moved_or_copied_checkpoint_directory_restores_from_its_own_files() {
    for (backend, strategy) in STRATEGIES {
        let label = format!("{backend}/{strategy}");
        let base = tempfile::tempdir().unwrap();
        let written = base.path().join("written");
        let expected = write_checkpoints(&written, backend, strategy);
        let moved = base.path().join("moved");
        std::fs::rename(&written, &moved).unwrap();
        let mut restored = restore(&moved, backend, MAX_PARALLELISM)
            .unwrap_or_else(|err| panic!("{label}: moved: {err}"));
        check_contents(&mut restored, &expected, &format!("{label} moved"));
        drop(restored);

        // A copy reads the copy's files: damage every file of the copy's checkpoint 2,
        // and the copy fails while the original still restores.
        let copy = base.path().join("copy");
        copy_dir(&moved, &copy);
        let mut damaged = data_files(&copy, "chk-2");
        damaged.extend(data_files(&copy, "shared"));
        for file in &damaged {
            flip_last_byte(file);
        }
        assert!(
            restore(&copy, backend, MAX_PARALLELISM).is_err(),
            "{label}: the damaged copy restored: it read the original's files"
        );
        let mut original = restore(&moved, backend, MAX_PARALLELISM).unwrap();
        check_contents(&mut original, &expected, &format!("{label} original"));
    }
}

/// The metadata of checkpoint `id` of the storage at `root`, rewritten as format version 1
/// wrote it: a version-1 frame whose file handles name absolute paths.
fn rewrite_as_version_1(root: &Path, id: u64) {
    let path = root.join(format!("chk-{id}")).join(METADATA_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes[12..bytes.len() - 4]).unwrap();
    fn absolute(value: &mut serde_json::Value, root: &Path) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(file) = map.get_mut("file")
                    && let Some(path) = file.get_mut("path")
                {
                    *path = root
                        .join(path.as_str().unwrap())
                        .display()
                        .to_string()
                        .into();
                }
                map.values_mut().for_each(|v| absolute(v, root));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| absolute(v, root)),
            _ => {}
        }
    }
    let mut body = body;
    absolute(&mut body, root);
    assert!(body.to_string().contains(&*root.display().to_string()));
    let framed = frame_body(&serde_json::to_vec(&body).unwrap(), 1).unwrap();
    std::fs::write(&path, framed).unwrap();
}

#[test]
fn metadata_with_absolute_paths_restores_where_it_is_and_from_a_copy() {
    for (backend, strategy) in [("heap", "heap"), ("rocksdb", "rocksdb-incremental")] {
        let label = format!("{backend}/{strategy}");
        let base = tempfile::tempdir().unwrap();
        let original = base.path().join("original");
        let expected = write_checkpoints(&original, backend, strategy);
        rewrite_as_version_1(&original, 2);
        let mut restored = restore(&original, backend, MAX_PARALLELISM)
            .unwrap_or_else(|err| panic!("{label}: in place: {err}"));
        check_contents(&mut restored, &expected, &label);
        drop(restored);
        let copy = base.path().join("copy");
        copy_dir(&original, &copy);
        std::fs::remove_dir_all(&original).unwrap();
        let mut restored = restore(&copy, backend, MAX_PARALLELISM)
            .unwrap_or_else(|err| panic!("{label}: copy: {err}"));
        check_contents(&mut restored, &expected, &format!("{label} copy"));
    }
}

#[test]
fn a_checkpoint_restores_only_with_its_own_max_parallelism() {
    for (backend, strategy) in STRATEGIES {
        let label = format!("{backend}/{strategy}");
        let dir = tempfile::tempdir().unwrap();
        write_checkpoints(dir.path(), backend, strategy);
        for other in [64, 256] {
            let err = restore(dir.path(), backend, MaxParallelism::of(other))
                .err()
                .unwrap_or_else(|| panic!("{label}: restored with {other} key groups"));
            assert!(
                matches!(err.root(), Error::Incompatible { .. }),
                "{label} into {other}: {err}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&other.to_string()),
                "{label} into {other}: {message}"
            );
        }
        let storage = LocalCheckpointStorage::open(dir.path()).unwrap();
        let err = storage
            .load_checkpoint(CheckpointId::new(2))
            .unwrap()
            .check_max_parallelism(MaxParallelism::of(64))
            .unwrap_err();
        assert!(err.to_string().contains("128"), "{label}: {err}");
    }
}

/// The metadata JSON of checkpoint `id`, edited by `edit`, written back framed.
fn edit_metadata(root: &Path, id: u64, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = root.join(format!("chk-{id}")).join(METADATA_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&bytes[12..bytes.len() - 4]).unwrap();
    edit(&mut body);
    let framed = frame_body(&serde_json::to_vec(&body).unwrap(), 2).unwrap();
    std::fs::write(&path, framed).unwrap();
}

/// Every `"path"` of a file handle in `value`, for editing.
fn file_paths(value: &mut serde_json::Value) -> Vec<&mut serde_json::Value> {
    let mut found = Vec::new();
    fn walk<'a>(value: &'a mut serde_json::Value, found: &mut Vec<&'a mut serde_json::Value>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map.iter_mut() {
                    match (key.as_str(), inner) {
                        ("file", serde_json::Value::Object(file)) => {
                            if let Some(path) = file.get_mut("path") {
                                found.push(path);
                            }
                        }
                        (_, inner) => walk(inner, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    walk(value, &mut found);
    found
}

/// Watches `dir` for any access to what is in it.
struct Watch {
    inotify: inotify::Inotify,
}

impl Watch {
    fn new(dir: &Path) -> Self {
        let inotify = inotify::Inotify::init().unwrap();
        inotify
            .watches()
            .add(dir, inotify::WatchMask::ALL_EVENTS)
            .unwrap();
        Watch { inotify }
    }

    /// The events since the last call.
    fn events(&mut self) -> Vec<String> {
        let mut buffer = [0u8; 4096];
        match self.inotify.read_events(&mut buffer) {
            Ok(events) => events
                .map(|event| format!("{:?} {:?}", event.mask, event.name))
                .collect(),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
            Err(err) => panic!("reading inotify events: {err}"),
        }
    }
}

#[test]
fn crafted_metadata_never_touches_a_file_outside_the_storage() {
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, b"precious").unwrap();
    let pristine = base.path().join("pristine");
    write_checkpoints(&pristine, "rocksdb", "rocksdb-incremental");

    type Craft = Box<dyn Fn(&Path)>;
    let secret_path = secret.display().to_string();
    // Points every file handle at `target`, after linking `link` (under the root) to `to`.
    let to_every_path = |target: &str, link: Option<(&str, &Path)>| -> Craft {
        let target = target.to_owned();
        let link = link.map(|(name, to)| (name.to_owned(), to.to_path_buf()));
        Box::new(move |root: &Path| {
            if let Some((name, to)) = &link {
                std::os::unix::fs::symlink(to, root.join(name)).unwrap();
            }
            edit_metadata(root, 2, |body| {
                for path in file_paths(body) {
                    *path = target.clone().into();
                }
            })
        })
    };
    let cases: Vec<(&str, Craft)> = vec![
        ("absolute path outside", to_every_path(&secret_path, None)),
        (
            "relative path climbing out",
            to_every_path("../outside/secret", None),
        ),
        (
            "climbing out through the layout",
            to_every_path("shared/../../outside/secret", None),
        ),
        (
            "a symbolic link to a file outside",
            to_every_path("shared/link", Some(("shared/link", &secret))),
        ),
        (
            "a symbolic link to a directory outside",
            to_every_path("chk-9/secret", Some(("chk-9", &outside))),
        ),
        ("a duplicate shared key naming a file outside", {
            let secret_path = secret_path.clone();
            Box::new(move |root: &Path| {
                edit_metadata(root, 2, |body| {
                    // The second instance's first shared file gets the first one's key and
                    // the secret's path: a registry would take it for a duplicate upload.
                    let instances = body["instances"].as_array_mut().unwrap();
                    let first =
                        instances[0]["keyed"][0]["incremental-remote"]["shared_state"][0].clone();
                    let key = first["shared_key"].clone();
                    let target =
                        &mut instances[1]["keyed"][0]["incremental-remote"]["shared_state"][0];
                    target["shared_key"] = key;
                    target["handle"]["file"]["path"] = secret_path.clone().into();
                });
            })
        }),
        ("a task-local directory handle", {
            let outside = outside.clone();
            Box::new(move |root: &Path| {
                edit_metadata(root, 2, |body| {
                    body["instances"][0]["keyed"][0] = serde_json::json!({
                        "incremental-local": {
                            "backend_identifier": "x",
                            "checkpoint_id": 2,
                            "directory": {"directory": outside, "size": 1},
                            "key_group_range": {"start": 0, "end": 63},
                            "meta_state": {"bytes": {"name": "m", "data": []}},
                            "shared_state": []
                        }
                    });
                });
            })
        }),
    ];
    let mut watch = Watch::new(&outside);
    for (label, craft) in &cases {
        let root = base.path().join(label.replace(' ', "-"));
        copy_dir(&pristine, &root);
        craft(&root);
        let err = restore(&root, "rocksdb", MAX_PARALLELISM)
            .err()
            .unwrap_or_else(|| panic!("{label}: the crafted checkpoint restored"));
        assert!(
            matches!(err.root(), Error::OutsideStorage { .. }),
            "{label}: {err}"
        );
        let events = watch.events();
        assert!(
            events.is_empty(),
            "{label}: touched outside the root: {events:?}"
        );
        assert_eq!(std::fs::read(&secret).unwrap(), b"precious", "{label}");
        // This test's own read of the secret, just now.
        let own = watch.events();
        assert!(own.iter().any(|event| event.contains("OPEN")), "{own:?}");
    }
}

#[test]
fn a_duplicate_shared_key_inside_the_storage_deletes_nothing() {
    let root = tempfile::tempdir().unwrap();
    write_checkpoints(root.path(), "rocksdb", "rocksdb-incremental");
    let before = data_files(root.path(), "shared");
    edit_metadata(root.path(), 2, |body| {
        let instances = body["instances"].as_array_mut().unwrap();
        let key =
            instances[0]["keyed"][0]["incremental-remote"]["shared_state"][0]["shared_key"].clone();
        instances[1]["keyed"][0]["incremental-remote"]["shared_state"][0]["shared_key"] = key;
    });
    let err = restore(root.path(), "rocksdb", MAX_PARALLELISM)
        .err()
        .unwrap();
    assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains("names both"), "{err}");
    assert_eq!(
        data_files(root.path(), "shared"),
        before,
        "a file was deleted"
    );
}

#[test]
fn a_fifo_or_a_device_in_place_of_a_data_file_is_an_error_not_a_hang() {
    for (backend, strategy) in [("heap", "heap"), ("rocksdb", "rocksdb-incremental")] {
        let label = format!("{backend}/{strategy}");
        let root = tempfile::tempdir().unwrap();
        write_checkpoints(root.path(), backend, strategy);
        let victim = data_files(root.path(), "chk-2").remove(0);
        std::fs::remove_file(&victim).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&victim)
            .status()
            .unwrap();
        assert!(status.success(), "mkfifo");
        let err = restore(root.path(), backend, MAX_PARALLELISM)
            .err()
            .unwrap_or_else(|| panic!("{label}: restored through a FIFO"));
        assert!(
            err.to_string().contains("not a regular file"),
            "{label}: {err}"
        );

        std::fs::remove_file(&victim).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &victim).unwrap();
        let err = restore(root.path(), backend, MAX_PARALLELISM)
            .err()
            .unwrap_or_else(|| panic!("{label}: restored from /dev/zero"));
        assert!(
            matches!(err.root(), Error::OutsideStorage { .. }),
            "{label}: {err}"
        );
    }
}

#[test]
fn oversized_or_special_metadata_files_are_refused_before_they_are_read() {
    let root = tempfile::tempdir().unwrap();
    write_checkpoints(root.path(), "heap", "heap");
    let storage = LocalCheckpointStorage::open(root.path()).unwrap();
    let metadata = root.path().join("chk-2").join(METADATA_FILE);
    // A sparse gigabyte: refused by its length, without reading it.
    std::fs::File::options()
        .write(true)
        .open(&metadata)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let err = storage.load_checkpoint(CheckpointId::new(2)).unwrap_err();
    assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains("at most"), "{err}");
    std::fs::remove_file(&metadata).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&metadata)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo");
    let err = storage.load_checkpoint(CheckpointId::new(2)).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_file_longer_or_shorter_than_recorded_is_refused() {
    let root = tempfile::tempdir().unwrap();
    write_checkpoints(root.path(), "heap", "heap");
    let victim = data_files(root.path(), "chk-2").remove(0);
    let bytes = std::fs::read(&victim).unwrap();
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"tail");
    std::fs::write(&victim, longer).unwrap();
    let err = restore(root.path(), "heap", MAX_PARALLELISM).err().unwrap();
    assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
    std::fs::write(&victim, &bytes[..bytes.len() - 1]).unwrap();
    let err = restore(root.path(), "heap", MAX_PARALLELISM).err().unwrap();
    assert!(matches!(err.root(), Error::Truncated { .. }), "{err}");
}

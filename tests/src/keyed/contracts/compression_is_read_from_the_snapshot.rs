//! A restore takes the decorator the snapshot names, not the one configured.

use std::sync::Arc;

use state_api::{
    CheckpointId, Error, KeyedBackendParams, PluginKind, SnapshotRequest, StateMetaInfo,
};
use state_format::KeyGroupsStateHandle;
use state_format::keyed_format::KeyedSnapshotReader;

use crate::keyed::bed::{COUNT, TestBed, full_range, keys_covering, write_workload};
use crate::keyed::{KeyedTarget, MAX_PARALLELISM};

/// A snapshot written with the target's decorator restores into a backend configured with
/// another decorator: the snapshot names its decorator (in a key-groups handle, in the
/// header). A decorator name that is not linked is reported as [`Error::UnknownPlugin`],
/// never used.
pub fn compression_is_read_from_the_snapshot(target: &KeyedTarget<'_>) {
    let (registry, compression) = (target.registry, target.compression.as_str());
    let bed = TestBed::new(target, "decorator named by the snapshot");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 1), 0);
    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let handle = bed.handle(&result);

    match handle.downcast_ref::<KeyGroupsStateHandle>() {
        Some(key_groups) => {
            let reader = bed.ok(
                KeyedSnapshotReader::open(key_groups, registry, MAX_PARALLELISM),
                "reading the snapshot header",
            );
            assert_eq!(
                reader.header().compression(),
                compression,
                "{}: the snapshot header names another decorator",
                bed.label
            );
        }
        None => println!(
            "{}: the handle is not a key-groups handle ({handle:?}): not reading its header",
            bed.label
        ),
    }

    let other = registry
        .names(PluginKind::Compression)
        .into_iter()
        .find(|name| name != compression)
        .unwrap_or_else(|| compression.to_owned());
    let params = KeyedBackendParams {
        compression: other.clone(),
        ..bed.params(full_range())
    };
    let mut restored = bed.ok(
        bed.try_restore(params, &[handle], "a valid snapshot"),
        format_args!("restoring with compression `{other}` configured"),
    );
    model.check(
        &mut *restored,
        &format!("restored with compression `{other}` configured"),
    );

    // An unknown decorator fails when the backend is created or when it snapshots.
    let params = KeyedBackendParams {
        compression: "no-such-codec".into(),
        ..bed.params(full_range())
    };
    let failure = match bed.try_create(params) {
        Err(err) => err,
        Ok(mut backend) => {
            let mut model = bed.model();
            model.register(
                &mut *backend,
                &StateMetaInfo::value(COUNT, "bytes", "bytes"),
            );
            model.put_value(&mut *backend, COUNT, b"", b"k", b"v");
            let factory = bed.ok(
                storage.stream_factory(CheckpointId::new(2)),
                "opening a stream factory",
            );
            match backend.snapshot(
                &SnapshotRequest::checkpoint(CheckpointId::new(2), 0),
                Arc::new(factory),
            ) {
                Err(err) => err,
                Ok(task) => match task.run() {
                    Err(err) => err,
                    Ok(_) => panic!(
                        "{}: a snapshot with unknown compression `no-such-codec` succeeded",
                        bed.label
                    ),
                },
            }
        }
    };
    assert!(
        matches!(failure.root(), Error::UnknownPlugin { .. }),
        "{}: unknown compression: {failure}",
        bed.label
    );
}

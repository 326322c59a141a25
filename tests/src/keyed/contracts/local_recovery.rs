//! Task-local copies of snapshots restore on their own and go with their snapshot.

use std::sync::Arc;

use state_api::{CheckpointId, KeyedBackendParams, LocalRecoveryConfig, StateObject};
use state_storage_local::TaskLocalDirectory;

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{TestBed, full_range, keys_covering, standard_states, write_workload};
use crate::support;

/// With local recovery enabled, a snapshot also returns a task-local copy under the local
/// root that restores the same state on its own (with the job-manager-owned copy gone);
/// discarding the result removes both.
pub fn local_recovery(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "local recovery");
    if !target.capabilities.local_recovery {
        println!(
            "{}: skipped: the backend does not declare local recovery",
            bed.label
        );
        return;
    }
    let local_root = bed.path("local");
    let params = KeyedBackendParams {
        local_recovery: LocalRecoveryConfig::enabled(Arc::new(TaskLocalDirectory::new(
            &local_root,
        ))),
        ..bed.params(full_range())
    };
    let mut live = bed.ok(
        bed.try_create(params.clone()),
        "creating a backend with local recovery",
    );
    let mut model = bed.model();
    for meta in standard_states() {
        model.register(&mut *live, &meta);
    }
    write_workload(&mut model, &mut *live, &keys_covering(full_range(), 2), 0);
    let storage = bed.storage("checkpoints", Some(0));
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(7));
    let remote = bed.handle(&result);
    let local = result
        .task_local()
        .cloned()
        .unwrap_or_else(|| panic!("{}: the result has no task-local copy", bed.label));
    assert!(
        !support::files_under(&bed.label, &local_root).is_empty(),
        "{}: no task-local file under {}",
        bed.label,
        local_root.display()
    );

    bed.ok(remote.discard(), "discarding the job-manager-owned copy");
    // A task-local copy is restored by a job that runs with local recovery on.
    let mut restored = bed.ok(
        bed.try_restore(params, &[local], "a task-local copy"),
        "restoring from the task-local copy",
    );
    model.check(&mut *restored, "restored from the task-local copy alone");

    bed.ok(result.discard(), "discarding the snapshot");
    support::assert_no_files(&bed.label, &local_root, "task-local copy discarded");
    storage.assert_empty(None, "snapshot discarded");
}

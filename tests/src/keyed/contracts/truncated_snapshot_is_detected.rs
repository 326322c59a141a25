//! A snapshot cut at any byte never restores wrong state.

use std::collections::BTreeSet;
use std::fs;

use state_api::{CheckpointId, Error, KeyGroupRange};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{
    TestBed, incremental_files, keys_covering, snapshot_file, standard_states, write_workload,
};

/// Files up to this size are cut at every byte by [`truncated_snapshot_is_detected`];
/// larger ones (RocksDB's `OPTIONS` and sst files) at [`SPREAD_CUTS`] positions spread over
/// them plus each of their last 32 bytes.
pub const EVERY_BYTE_UP_TO: usize = 2048;

/// Cut positions of a file larger than [`EVERY_BYTE_UP_TO`].
pub const SPREAD_CUTS: usize = 256;

/// A small snapshot (two key groups, a few keys of every state kind) cut at every byte
/// boundary of each of its files never restores wrong state: every cut restore fails with
/// [`Error::Truncated`], [`Error::Corrupted`] or [`Error::NotFound`] (never a panic), or,
/// should it succeed, holds exactly the snapshot's state.
pub fn truncated_snapshot_is_detected(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "truncated at every byte");
    let range = bed.ok(KeyGroupRange::new(0, 1), "a key-group range");
    let mut model = bed.model();
    let mut live = bed.create(range);
    for meta in standard_states() {
        model.register(&mut *live, &meta);
    }
    write_workload(&mut model, &mut *live, &keys_covering(range, 2), 0);
    let storage = bed.storage("checkpoints", Some(0));
    if storage.local_root().is_none() {
        println!(
            "{}: skipped: files are cut on local storage only",
            bed.label
        );
        return;
    }
    let handle = bed.handle(&bed.snapshot(&mut *live, &storage, CheckpointId::new(1)));
    let files = match snapshot_file(&handle) {
        Ok((_, path)) => vec![path],
        Err(_) => incremental_files(&handle),
    };
    assert!(
        !files.is_empty(),
        "{}: the snapshot wrote no file to cut: {handle:?}",
        bed.label
    );
    let handles = [handle];
    let mut cuts_tried = 0;
    for path in &files {
        let original = bed.ok(fs::read(path).map_err(|e| Error::io(path, e)), "reading");
        let len = original.len();
        let cuts: BTreeSet<usize> = match len <= EVERY_BYTE_UP_TO {
            true => (0..len).collect(),
            false => (0..SPREAD_CUTS)
                .map(|i| i * len / SPREAD_CUTS)
                .chain(len.saturating_sub(32)..len)
                .collect(),
        };
        for cut in cuts {
            let case = format!("{} cut at byte {cut} of {len}", path.display());
            bed.ok(
                fs::write(path, &original[..cut]).map_err(|e| Error::io(path, e)),
                "cutting a file",
            );
            match bed.try_restore(bed.params(range), &handles, &case) {
                Ok(mut restored) => {
                    model.check(&mut *restored, &format!("restore that succeeded on {case}"))
                }
                Err(err) => assert!(
                    matches!(
                        err.root(),
                        Error::Truncated { .. } | Error::Corrupted { .. } | Error::NotFound { .. }
                    ),
                    "{}: {case}: not a typed truncation: {err}",
                    bed.label
                ),
            }
            cuts_tried += 1;
        }
        bed.ok(
            fs::write(path, &original).map_err(|e| Error::io(path, e)),
            "repairing",
        );
    }
    println!(
        "{}: {cuts_tried} cut restores over {} files",
        bed.label,
        files.len()
    );
    let mut restored = bed.restore(range, &handles);
    model.check(&mut *restored, "restored after repairing every file");
}

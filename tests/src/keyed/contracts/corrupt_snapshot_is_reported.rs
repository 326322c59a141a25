//! Changed, cut, foreign and missing snapshot bytes give typed errors naming where they are.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use state_api::{CheckpointId, Error, KeyGroup, KeyedStateHandle};
use state_format::KeyGroupsStateHandle;

use crate::compression::random_bytes;
use crate::keyed::KeyedTarget;
use crate::keyed::bed::{
    COUNT, TestBed, full_range, incremental_files, key_group, keys_covering, snapshot_file,
    write_workload,
};
use crate::keyed::model::Model;

/// Changed, cut, foreign and missing snapshot bytes give typed errors, never a panic and
/// never wrong state: a changed byte of a key group's data is [`Error::KeyGroup`] naming
/// that key group around [`Error::Corrupted`]; a file cut inside a key group is
/// [`Error::KeyGroup`] around [`Error::Truncated`] or [`Error::Corrupted`]; bytes that are
/// not a snapshot are [`Error::Snapshot`] around [`Error::Corrupted`]; a missing file is
/// [`Error::NotFound`]. A restore that succeeds anyway must hold exactly the snapshot's
/// state.
pub fn corrupt_snapshot_is_reported(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "corrupt snapshot");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    for key in keys_covering(full_range(), 1) {
        model.put_value(&mut *live, COUNT, b"", &key, b"small");
    }
    // Incompressible, so its bytes appear as they are in the file whatever the decorator.
    let marker = random_bytes(4096, 77);
    let target_group = KeyGroup::new(77).expect("invariant: 77 is a key group");
    let marker_key = key_in_group("marker", target_group);
    model.put_value(&mut *live, COUNT, b"", &marker_key, &marker);
    let storage = bed.storage("checkpoints", Some(0));
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let handle = bed.handle(&result);
    let (key_groups, path) = match snapshot_file(&handle) {
        Ok(found) => found,
        Err(reason) => {
            let files = incremental_files(&handle);
            if files.is_empty() {
                println!("{}: skipped: {reason}", bed.label);
            } else {
                corrupt_every_file(&bed, &model, &handle, &files);
            }
            return;
        }
    };
    let original = bed.ok(
        fs::read(&path).map_err(|err| Error::io(&path, err)),
        "reading the snapshot file",
    );
    let len = original.len() as u64;
    let sections = sections(&key_groups, len);
    let header_end = sections.first().map_or(len, |&(_, start, _)| start);
    let section_of = |pos: u64| {
        sections
            .iter()
            .find(|&&(_, start, end)| start <= pos && pos < end)
            .map(|&(group, _, _)| group)
    };
    let handles = [handle.clone()];

    // Restores `bytes` in place of the file; `Ok` must hold the snapshot's state exactly.
    let restore_bytes = |bytes: &[u8], case: &str| -> Option<Error> {
        if let Err(err) = fs::write(&path, bytes) {
            panic!("{}: writing {}: {err}", bed.label, path.display());
        }
        match bed.try_restore(bed.params(full_range()), &handles, case) {
            Err(err) => Some(err),
            Ok(mut restored) => {
                model.check(&mut *restored, &format!("restore that succeeded on {case}"));
                None
            }
        }
    };
    let must_fail = |bytes: &[u8], case: &str| -> Error {
        restore_bytes(bytes, case)
            .unwrap_or_else(|| panic!("{}: restore succeeded on {case}", bed.label))
    };

    // A changed byte of the marker value, inside key group `target_group`.
    let window = &marker[1000..1032];
    let found = original
        .windows(window.len())
        .position(|w| w == window)
        .map(|pos| pos as u64 + 16);
    let flip_at = match found {
        Some(pos) => {
            assert_eq!(
                section_of(pos),
                Some(target_group),
                "{}: the value of a key of key group {target_group} was written into the section of another key group",
                bed.label
            );
            pos
        }
        None => {
            let &(_, start, end) = sections
                .iter()
                .find(|(group, _, _)| *group == target_group)
                .unwrap_or_else(|| {
                    panic!("{}: the handle has no key group {target_group}", bed.label)
                });
            (start + end) / 2
        }
    };
    let mut flipped = original.clone();
    flipped[flip_at as usize] ^= 0x20;
    let case = format!("byte {flip_at} of key group {target_group} changed");
    let err = must_fail(&flipped, &case);
    assert!(
        matches!(err, Error::KeyGroup { key_group, .. } if key_group == target_group),
        "{}: {case}: {err}",
        bed.label
    );
    match (found, err.root()) {
        (Some(_), Error::Corrupted { .. }) => {}
        (None, Error::Corrupted { .. } | Error::Truncated { .. }) => {}
        _ => panic!("{}: {case}: untyped error {err}", bed.label),
    }

    // Changed bytes all over the file: typed errors naming the right place, or the exact
    // state.
    let step = (original.len() / 150).max(1);
    for pos in (0..original.len()).step_by(step) {
        let mut changed = original.clone();
        changed[pos] ^= 0xA5;
        let case = format!("byte {pos} of {len} changed");
        let Some(err) = restore_bytes(&changed, &case) else {
            continue;
        };
        let typed = matches!(
            err.root(),
            Error::Corrupted { .. } | Error::Truncated { .. } | Error::UnsupportedVersion { .. }
        );
        let placed = match section_of(pos as u64) {
            Some(group) => matches!(err, Error::KeyGroup { key_group, .. } if key_group == group),
            None => matches!(err, Error::Snapshot { .. }),
        };
        assert!(
            typed && placed,
            "{}: {case} (header ends at {header_end}): {err}",
            bed.label
        );
    }

    // Cut inside the marker value, and at other places.
    let case = format!("file cut at byte {flip_at} of {len}");
    let err = must_fail(&original[..flip_at as usize], &case);
    let last_group = key_groups.key_group_range().end();
    assert!(
        matches!(err, Error::KeyGroup { key_group, .. } if (target_group..=last_group).contains(&key_group))
            && matches!(
                err.root(),
                Error::Truncated { .. } | Error::Corrupted { .. }
            ),
        "{}: {case}: {err}",
        bed.label
    );
    for cut in [0, 3, header_end / 2, header_end, header_end + 2, len - 1] {
        let case = format!("file cut at byte {cut} of {len}");
        let Some(err) = restore_bytes(&original[..cut as usize], &case) else {
            continue;
        };
        let placed = match section_of(cut) {
            Some(_) => matches!(err, Error::KeyGroup { .. }),
            None => matches!(err, Error::Snapshot { .. }),
        };
        assert!(
            placed
                && matches!(
                    err.root(),
                    Error::Truncated { .. } | Error::Corrupted { .. }
                ),
            "{}: {case} (header ends at {header_end}): {err}",
            bed.label
        );
    }

    // Foreign bytes.
    let foreign: [(&str, Vec<u8>); 2] = [
        ("random bytes", random_bytes(original.len(), 3)),
        (
            "text",
            b"this is not a keyed snapshot, just some text\n".repeat(50),
        ),
    ];
    for (what, bytes) in foreign {
        let case = format!("a file of {what}");
        let err = must_fail(&bytes, &case);
        assert!(
            matches!(err, Error::Snapshot { .. }) && matches!(err.root(), Error::Corrupted { .. }),
            "{}: {case}: {err}",
            bed.label
        );
    }

    // Another snapshot's file in place of this one's.
    write_workload(
        &mut bed.model(),
        &mut *live,
        &keys_covering(full_range(), 1),
        3,
    );
    let other = bed.snapshot(&mut *live, &storage, CheckpointId::new(2));
    match snapshot_file(&bed.handle(&other)) {
        Ok((_, other_path)) => {
            let bytes = bed.ok(
                fs::read(&other_path).map_err(|err| Error::io(&other_path, err)),
                "reading the other snapshot",
            );
            let case = "the file of another snapshot";
            if let Some(err) = restore_bytes(&bytes, case) {
                assert!(
                    matches!(err, Error::KeyGroup { .. } | Error::Snapshot { .. })
                        && matches!(
                            err.root(),
                            Error::Corrupted { .. } | Error::Truncated { .. }
                        ),
                    "{}: {case}: {err}",
                    bed.label
                );
            }
        }
        Err(reason) => println!("{}: not swapping snapshot files: {reason}", bed.label),
    }

    // A missing file.
    if let Err(err) = fs::remove_file(&path) {
        panic!("{}: removing {}: {err}", bed.label, path.display());
    }
    let err = bed
        .try_restore(bed.params(full_range()), &handles, "a missing file")
        .err()
        .unwrap_or_else(|| panic!("{}: restore succeeded without its file", bed.label));
    assert!(
        matches!(err.root(), Error::NotFound { .. }),
        "{}: a missing file: {err}",
        bed.label
    );
}

/// The first key (`<prefix>-<i>`) of key group `group`.
fn key_in_group(prefix: &str, group: KeyGroup) -> Vec<u8> {
    (0u32..1_000_000)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .find(|key| key_group(key) == group)
        .expect("invariant: a million keys hit every one of 128 key groups")
}

/// Where each key group's section starts and ends in a key-groups file of `len` bytes.
fn sections(handle: &KeyGroupsStateHandle, len: u64) -> Vec<(KeyGroup, u64, u64)> {
    let offsets: Vec<(KeyGroup, u64)> = handle.offsets().iter().collect();
    offsets
        .iter()
        .enumerate()
        .map(|(i, &(group, start))| {
            let end = offsets.get(i + 1).map_or(len, |&(_, next)| next);
            (group, start, end)
        })
        .collect()
}

/// Flips a byte of, halves, empties and removes each file of a multi-file snapshot in
/// turn: every restore must fail with a typed error that names the file.
fn corrupt_every_file(
    bed: &TestBed<'_>,
    model: &Model,
    handle: &Arc<dyn KeyedStateHandle>,
    files: &[PathBuf],
) {
    let handles = [handle.clone()];
    for path in files {
        let original = bed.ok(fs::read(path).map_err(|e| Error::io(path, e)), "reading");
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut flipped = original.clone();
        if let Some(byte) = flipped.get_mut(original.len() / 2) {
            *byte ^= 0x20;
        }
        let cases: [(&str, Option<&[u8]>); 4] = [
            ("a flipped byte", Some(&flipped)),
            ("cut in half", Some(&original[..original.len() / 2])),
            ("emptied", Some(&[])),
            ("removed", None),
        ];
        for (case, bytes) in cases {
            if bytes == Some(original.as_slice()) {
                continue;
            }
            let written = match bytes {
                Some(bytes) => fs::write(path, bytes),
                None => fs::remove_file(path),
            };
            bed.ok(written.map_err(|e| Error::io(path, e)), "damaging a file");
            let case = format!("{name} {case}");
            match bed.try_restore(bed.params(full_range()), &handles, &case) {
                Ok(_) => panic!("{}: {case}: restore succeeded", bed.label),
                Err(err) => {
                    assert!(
                        matches!(
                            err.root(),
                            Error::Corrupted { .. }
                                | Error::Truncated { .. }
                                | Error::NotFound { .. }
                        ),
                        "{}: {case}: not a typed corruption: {err}",
                        bed.label
                    );
                    assert!(
                        err.to_string().contains(&name),
                        "{}: {case}: the error does not name the file: {err}",
                        bed.label
                    );
                }
            }
            bed.ok(
                fs::write(path, &original).map_err(|e| Error::io(path, e)),
                "repairing",
            );
        }
    }
    let mut restored = bed.restore(full_range(), &handles);
    model.check(&mut *restored, "restored after repairing every file");
}

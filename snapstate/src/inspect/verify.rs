//! [`verify`]: every handle of every selected checkpoint re-read and checked, every problem
//! collected.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;

use state_api::CheckpointId;
use state_api::MaxParallelism;
use state_api::checkpoint_metadata::{CheckpointMetadata, METADATA_FILE};
use state_api::{
    Error as StateError, IncrementalRemoteKeyedStateHandle, OperatorBackendParams,
    OperatorStreamStateHandle, Registry, StreamStateHandle,
};
use state_format::KeyGroupsStateHandle;
use state_format::file_manifest::ManifestEntry;
use state_format::keyed_format::KeyedSnapshotReader;
use state_format::timer::TimerKey;
use state_storage_local::{FileStateHandle, IN_PROGRESS_PREFIX, LOCK_FILE};

use super::storage::Storage;
use super::{
    AnyHandle, CheckpointVerification, DEFAULT_OPERATOR_BACKEND, FileCheck, FileScope,
    HandleSummary, HandleVerification, KeyGroupCheck, Leftover, LeftoverKind, Location,
    OPERATOR_BACKEND_PROPERTY, OperatorStateCheck, Problem, ProblemKind, VerifyReport, files_of,
    handles_of, is_placeholder, read_meta, summarize,
};
use crate::{Error, Result};

/// Re-reads checkpoint `checkpoint_id` (or the one a `chk-<id>` path names, or else every
/// committed checkpoint) and checks it, collecting every problem:
///
/// - key-groups handles: the stored file has the recorded size; every key group of the
///   range is read with [`KeyedSnapshotReader`], which checks its CRC-32C, its structure
///   and the decorator's own framing (the decorator the header names must be linked in
///   `registry`); entries are counted per key group;
/// - incremental handles: the meta stream's header and manifest are read; every file the
///   handle carries is read and its size and CRC-32C compared with the manifest; the handle
///   must carry exactly the manifest's files, each in the manifest's scope. Placeholders
///   cannot be read: their recorded size is compared;
/// - operator handles: the stored file has the recorded size; the handle is restored by
///   the operator backend named by the [`OPERATOR_BACKEND_PROPERTY`] property (default
///   [`DEFAULT_OPERATOR_BACKEND`]) when `registry` links it, which reads every partition
///   and checks its CRC-32C, and entries are counted per state; without it, the stream
///   is read to its end and every partition offset must lie within it;
/// - other handle kinds are listed as not verified.
///
/// Never panics on stored bytes, and never stops at the first problem.
///
/// # Errors
///
/// Those of [`list`](super::list); [`Error::CheckpointNotFound`] and [`Error::ConflictingCheckpoint`]
/// as for [`inspect`](super::inspect()), [`Error::NoCommittedCheckpoint`] when verifying all and none is
/// committed. Damaged metadata is a [`Problem`], not an error.
pub fn verify(
    location: impl Into<Location>,
    checkpoint_id: Option<u64>,
    registry: &Registry,
) -> Result<VerifyReport> {
    let storage = Storage::open(&location.into())?;
    let ids: Vec<u64> = match storage.require(checkpoint_id)? {
        Some(id) => vec![id],
        None => storage.committed().collect(),
    };
    if ids.is_empty() {
        return Err(Error::NoCommittedCheckpoint {
            root: storage.root.clone(),
        });
    }
    let all = checkpoint_id.or(storage.selected).is_none();
    let mut report = VerifyReport {
        root: storage.root.clone(),
        checkpoints: Vec::new(),
        skipped: match all {
            false => Vec::new(),
            true => storage.incomplete().collect(),
        },
        problems: Vec::new(),
        leftovers: None,
    };
    // What committed checkpoints refer to; `None` once one cannot be read.
    let mut referenced = Some(BTreeSet::new());
    for id in ids {
        let before = report.problems.len();
        let handles = match storage.load(CheckpointId::new(id)) {
            Ok(metadata) => {
                if let Some(referenced) = &mut referenced {
                    referenced.extend(stored_locations(&metadata));
                }
                verify_checkpoint(&metadata, registry, &mut report.problems)
            }
            Err(err) => {
                referenced = None;
                report.problems.push(Problem {
                    checkpoint_id: CheckpointId::new(id),
                    instance: None,
                    handle: None,
                    file: Some(
                        storage
                            .checkpoint_dir(CheckpointId::new(id))
                            .join(METADATA_FILE)
                            .display()
                            .to_string(),
                    ),
                    key_group: None,
                    kind: ProblemKind::of(&err),
                    message: err.to_string(),
                });
                Vec::new()
            }
        };
        report.checkpoints.push(CheckpointVerification {
            checkpoint_id: CheckpointId::new(id),
            handles,
            problems: report.problems.len() - before,
        });
    }
    if all && let Some(referenced) = referenced {
        report.leftovers = Some(leftovers(&storage, &referenced)?);
    }
    Ok(report)
}

/// What a restore would never read: in-progress files anywhere, and files under
/// `chk-<id>/` or `shared/` that no committed checkpoint refers to.
fn leftovers(storage: &Storage, referenced: &BTreeSet<String>) -> Result<Vec<Leftover>> {
    Ok(storage
        .stored_files()?
        .into_iter()
        .filter_map(|(path, size)| {
            let name = path.rsplit('/').next().unwrap_or(&path);
            let kind = if name.starts_with(IN_PROGRESS_PREFIX) {
                LeftoverKind::InProgress
            } else if name == METADATA_FILE || path == LOCK_FILE || referenced.contains(&path) {
                return None;
            } else if path.starts_with("chk-") || path.starts_with("shared/") {
                LeftoverKind::Unreferenced
            } else {
                return None;
            };
            Some(Leftover { path, size, kind })
        })
        .collect())
}

/// The locations, relative to the storage root, of every stored stream `metadata` names.
fn stored_locations(metadata: &CheckpointMetadata) -> Vec<String> {
    let mut streams: Vec<&dyn StreamStateHandle> = Vec::new();
    for handle in handles_of(metadata) {
        match handle {
            AnyHandle::Keyed(keyed) => {
                let any = keyed;
                if let Some(full) = any.downcast_ref::<KeyGroupsStateHandle>() {
                    streams.push(&**full.delegate());
                } else if let Some(incremental) =
                    any.downcast_ref::<IncrementalRemoteKeyedStateHandle>()
                {
                    streams.push(&*incremental.meta_state);
                    streams.extend(files_of(incremental).map(|(_, file)| &*file.handle));
                }
            }
            AnyHandle::Operator(operator) => streams.push(&**operator.delegate()),
        }
    }
    streams.into_iter().filter_map(stored_location).collect()
}

/// A stream's location relative to its storage root, for the storages the inspector reads.
fn stored_location(stream: &dyn StreamStateHandle) -> Option<String> {
    let any = stream;
    if let Some(file) = any.downcast_ref::<FileStateHandle>() {
        return file.relative_path().map(str::to_owned);
    }
    #[cfg(feature = "object-storage")]
    if let Some(object) = any.downcast_ref::<state_storage_object::ObjectStateHandle>() {
        return Some(object.relative_key().to_owned());
    }
    None
}

/// Collects the problems of one handle.
struct Findings<'p> {
    checkpoint_id: CheckpointId,
    summary: &'p HandleSummary,
    problems: &'p mut Vec<Problem>,
    found: usize,
}

impl Findings<'_> {
    fn report(&mut self, file: Option<String>, key_group: Option<u32>, error: &StateError) {
        self.found += 1;
        self.problems.push(Problem {
            checkpoint_id: self.checkpoint_id,
            instance: Some(self.summary.instance),
            handle: Some(self.summary.handle.clone()),
            file,
            key_group,
            kind: ProblemKind::of(error),
            message: error.to_string(),
        });
    }
}

fn verify_checkpoint(
    metadata: &CheckpointMetadata,
    registry: &Registry,
    problems: &mut Vec<Problem>,
) -> Vec<HandleVerification> {
    let summary = summarize(metadata, PathBuf::new());
    let operator_backend = metadata
        .properties
        .get(OPERATOR_BACKEND_PROPERTY)
        .map_or(DEFAULT_OPERATOR_BACKEND, String::as_str);
    handles_of(metadata)
        .into_iter()
        .zip(&summary.handles)
        .map(|(handle, summary)| {
            let mut findings = Findings {
                checkpoint_id: metadata.checkpoint_id,
                summary,
                problems: &mut *problems,
                found: 0,
            };
            let mut verification = HandleVerification {
                summary: summary.clone(),
                stream: None,
                checked: String::new(),
                verified: true,
                entries: 0,
                key_groups: Vec::new(),
                files: Vec::new(),
                operator_states: Vec::new(),
                problems: 0,
            };
            match handle {
                AnyHandle::Keyed(handle) => {
                    let any = handle;
                    if let Some(handle) = any.downcast_ref::<KeyGroupsStateHandle>() {
                        verify_key_groups(
                            handle,
                            registry,
                            metadata.max_parallelism,
                            &mut findings,
                            &mut verification,
                        );
                    } else if let Some(handle) =
                        any.downcast_ref::<IncrementalRemoteKeyedStateHandle>()
                    {
                        verify_incremental(handle, &mut findings, &mut verification);
                    } else {
                        verification.verified = false;
                        verification.checked = format!(
                            "not verified: the inspector cannot read {} handles",
                            summary.kind
                        );
                    }
                }
                AnyHandle::Operator(handle) => verify_operator(
                    handle,
                    registry,
                    operator_backend,
                    &mut findings,
                    &mut verification,
                ),
            }
            verification.problems = findings.found;
            verification
        })
        .collect()
}

/// A file handle whose file does not have the recorded size is truncated (or grew); other
/// stream kinds have no size to compare. Returns false when the file is missing, so the
/// caller reports that once and reads nothing.
fn check_stored_size(stream: &dyn StreamStateHandle, findings: &mut Findings<'_>) -> bool {
    let Some(file) = stream.downcast_ref::<FileStateHandle>() else {
        return true;
    };
    let path = file.path();
    let recorded = state_api::StateObject::state_size(file);
    let error = match fs::metadata(&path) {
        Ok(metadata) if metadata.len() == recorded => return true,
        Ok(metadata) => {
            let what = format!("snapshot file {}", path.display());
            let reason = format!(
                "it holds {} bytes, the handle records {recorded}",
                metadata.len()
            );
            match metadata.len() < recorded {
                true => StateError::Truncated { what, reason },
                false => StateError::Corrupted { what, reason },
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let error = StateError::NotFound {
                what: format!("snapshot file {}", path.display()),
            };
            findings.report(Some(stream.describe()), None, &error);
            return false;
        }
        Err(err) => StateError::io(path, err),
    };
    findings.report(Some(stream.describe()), None, &error);
    true
}

fn verify_key_groups(
    handle: &KeyGroupsStateHandle,
    registry: &Registry,
    max_parallelism: MaxParallelism,
    findings: &mut Findings<'_>,
    verification: &mut HandleVerification,
) {
    let stream = handle.delegate();
    let location = stream.describe();
    verification.stream = Some(location.clone());
    let range = handle.offsets().range();
    let crc = match range.iter().all(|kg| handle.checksum(kg).is_some()) {
        true => "CRC-32C checked",
        false => "no CRC-32C recorded",
    };
    verification.checked = format!(
        "stream size; header; key groups {}..={} decoded ({crc}), entries checked and counted",
        range.start(),
        range.end()
    );
    if !check_stored_size(&**stream, findings) {
        return;
    }
    let mut reader = match KeyedSnapshotReader::open(handle, registry, max_parallelism) {
        Ok(reader) => reader,
        Err(err) => {
            findings.report(Some(location), None, &err);
            return;
        }
    };
    let states = reader.header().states().to_vec();
    let composite = reader.composite_key();
    let timers = TimerKey::new(max_parallelism);
    for key_group in range.iter() {
        let mut entries = 0u64;
        let outcome = reader.read_key_group(key_group, &mut |entry| {
            // The reader checked the state id against the header.
            let meta = &states[usize::from(entry.state_id)];
            state_format::check_entry(meta, composite, timers, entry.key, entry.value)?;
            entries += 1;
            Ok(())
        });
        let entries = match outcome {
            Ok(()) => Some(entries),
            Err(err) => {
                findings.report(Some(location.clone()), Some(key_group.get()), &err);
                None
            }
        };
        verification.entries += entries.unwrap_or(0);
        verification.key_groups.push(KeyGroupCheck {
            key_group: key_group.get(),
            entries,
        });
    }
}

/// Reads `stream` to its end, but never more than one byte past `limit` (what the metadata
/// records), so a stream that goes on for ever is reported as longer instead of read for
/// ever: its length (at most `limit + 1`) and CRC-32C.
fn checksum_stream(stream: &dyn StreamStateHandle, limit: u64) -> Result<(u64, u32), StateError> {
    let mut input = stream.open()?.take(limit.saturating_add(1));
    let mut buffer = vec![0u8; 64 * 1024];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        match input.read(&mut buffer) {
            Ok(0) => return Ok((len, crc)),
            Ok(n) => {
                crc = crc32c::crc32c_append(crc, &buffer[..n]);
                len += n as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(StateError::stream(
                    format!("reading {}", stream.describe()),
                    err,
                ));
            }
        }
    }
}

fn verify_incremental(
    handle: &IncrementalRemoteKeyedStateHandle,
    findings: &mut Findings<'_>,
    verification: &mut HandleVerification,
) {
    let meta_location = handle.meta_state.describe();
    verification.stream = Some(meta_location.clone());
    verification.checked = "meta stream header and manifest; every file's size and CRC-32C against the manifest; the handle carries exactly the manifest's files".to_owned();
    if !check_stored_size(&*handle.meta_state, findings) {
        return;
    }
    let manifest = match read_meta(handle) {
        Ok((_, manifest)) => manifest,
        Err(err) => {
            findings.report(Some(meta_location), None, &err);
            return;
        }
    };
    let mut carried = BTreeSet::new();
    for (scope, file) in files_of(handle) {
        let location = file.handle.describe();
        let what = format!("file `{}` ({location})", file.local_path);
        let mut check = FileCheck {
            local_path: file.local_path.clone(),
            scope,
            bytes_read: None,
            crc: None,
            ok: false,
        };
        let problem = |error: StateError, findings: &mut Findings<'_>| {
            findings.report(Some(location.clone()), None, &error);
        };
        if !carried.insert(file.local_path.as_str()) {
            problem(
                StateError::Corrupted {
                    what: what.clone(),
                    reason: "the handle carries it twice".to_owned(),
                },
                findings,
            );
        }
        let Some(entry) = manifest.get(&file.local_path) else {
            problem(
                StateError::Corrupted {
                    what,
                    reason: "the handle carries it, the manifest does not list it".to_owned(),
                },
                findings,
            );
            verification.files.push(check);
            continue;
        };
        let before = findings.found;
        let manifest_scope = match entry.shared {
            true => FileScope::Shared,
            false => FileScope::Private,
        };
        if manifest_scope != scope {
            problem(
                StateError::Corrupted {
                    what: what.clone(),
                    reason: format!(
                        "the manifest lists it as {manifest_scope}, the handle carries it as {scope}"
                    ),
                },
                findings,
            );
        }
        let recorded = file.handle.state_size();
        if recorded != entry.size {
            problem(
                StateError::Corrupted {
                    what: what.clone(),
                    reason: format!(
                        "the handle records {recorded} bytes, the manifest {}",
                        entry.size
                    ),
                },
                findings,
            );
        }
        if !is_placeholder(file) && check_stored_size(&*file.handle, findings) {
            match checksum_stream(&*file.handle, entry.size) {
                Ok((len, crc)) => {
                    check.bytes_read = Some(len);
                    check.crc = Some(crc);
                    if let Some(error) = compare_with_manifest(&what, len, crc, entry) {
                        problem(error, findings);
                    }
                }
                Err(err) => problem(err, findings),
            }
        }
        check.ok = findings.found == before;
        verification.files.push(check);
    }
    for entry in &manifest.files {
        if !carried.contains(entry.name.as_str()) {
            findings.report(
                Some(meta_location.clone()),
                None,
                &StateError::Corrupted {
                    what: format!("incremental handle of checkpoint {}", handle.checkpoint_id),
                    reason: format!(
                        "the manifest lists {} file `{}`, the handle does not carry it",
                        match entry.shared {
                            true => "shared",
                            false => "private",
                        },
                        entry.name
                    ),
                },
            );
        }
    }
}

fn compare_with_manifest(
    what: &str,
    len: u64,
    crc: u32,
    entry: &ManifestEntry,
) -> Option<StateError> {
    if len < entry.size {
        return Some(StateError::Truncated {
            what: what.to_owned(),
            reason: format!("{len} bytes read, the manifest records {}", entry.size),
        });
    }
    if len > entry.size {
        return Some(StateError::Corrupted {
            what: what.to_owned(),
            reason: format!("{len} bytes read, the manifest records {}", entry.size),
        });
    }
    (crc != entry.crc).then(|| StateError::Corrupted {
        what: what.to_owned(),
        reason: format!(
            "CRC-32C is {crc:08x}, the manifest records {:08x}",
            entry.crc
        ),
    })
}

fn verify_operator(
    handle: &OperatorStreamStateHandle,
    registry: &Registry,
    backend: &str,
    findings: &mut Findings<'_>,
    verification: &mut HandleVerification,
) {
    let stream = handle.delegate();
    let location = stream.describe();
    verification.stream = Some(location.clone());
    verification.operator_states = handle
        .states()
        .iter()
        .map(|(name, partitions)| OperatorStateCheck {
            name: name.clone(),
            partitions: partitions.offsets.len(),
            entries: None,
        })
        .collect();
    let before = findings.found;
    if !check_stored_size(&**stream, findings) {
        verification.checked = "stream size".to_owned();
        return;
    }
    // A file of the wrong size is reported once, by the size check.
    let size_reported = findings.found > before;
    let Ok(factory) = registry.operator_backend(backend) else {
        verification.checked = format!(
            "stream size; stream read to its end, every partition offset within it; partitions not decoded: no operator state backend `{backend}` is linked"
        );
        let size = state_api::StateObject::state_size(handle);
        match checksum_stream(&**stream, size) {
            Ok((len, _)) if len != size && !size_reported => {
                let (what, reason) = (
                    location.clone(),
                    format!("{len} bytes read, the handle records {size}"),
                );
                let error = match len < size {
                    true => StateError::Truncated { what, reason },
                    false => StateError::Corrupted { what, reason },
                };
                findings.report(Some(location.clone()), None, &error);
            }
            Ok(_) => {}
            Err(err) => findings.report(Some(location.clone()), None, &err),
        }
        for (name, partitions) in handle.states() {
            for (index, offset) in partitions.offsets.iter().enumerate() {
                if *offset >= size {
                    findings.report(
                        Some(location.clone()),
                        None,
                        &StateError::Corrupted {
                            what: format!("operator state `{name}` partition {index}"),
                            reason: format!(
                                "its offset {offset} is past the end of the {size}-byte stream"
                            ),
                        },
                    );
                }
            }
        }
        return;
    };
    verification.checked = format!(
        "stream size; every partition read and its CRC-32C checked by operator backend `{backend}`, entries counted"
    );
    let mut restored = match factory.restore(
        OperatorBackendParams::new(0, 1),
        registry,
        std::slice::from_ref(handle),
    ) {
        Ok(restored) => restored,
        Err(err) => {
            findings.report(Some(location), None, &err);
            return;
        }
    };
    for check in &mut verification.operator_states {
        let mode = handle.states().get(&check.name).map(|p| p.mode);
        let entries = match mode {
            Some(mode) if mode.is_list() => restored.list(&check.name).map(|l| l.len()),
            _ => restored.broadcast_entries(&check.name).map(|e| e.len()),
        };
        match entries {
            Ok(entries) => {
                check.entries = Some(entries as u64);
                verification.entries += entries as u64;
            }
            Err(err) => findings.report(Some(location.clone()), None, &err),
        }
    }
    if let Err(err) = restored.close() {
        findings.report(Some(location), None, &err);
    }
}

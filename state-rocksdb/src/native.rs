//! What the backend needs of RocksDB's C API that the `rocksdb` crate does not wrap:
//!
//! - the whole-file CRC-32C that RocksDB computes of every sst file while it writes it
//!   (`file_checksum_gen_factory`), read back per live file (`GetLiveFilesStorageInfo`).
//!   The incremental strategy records it in its file manifest instead of reading each new
//!   file once more, and checks a file copied through a stream against it;
//! - sealing memtables without waiting for their flush, snapshots that outlive a borrow
//!   of the database, and each live sst file's largest sequence number: what the
//!   incremental strategy's cut without a flush ([`crate::cut`]) is built from;
//! - an event listener reporting compactions and sealed memtables ([`Compactions`]).

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, DB, Options};

use crate::compactions::Compactions;

/// RocksDB's name of its CRC-32C file checksum.
const CRC32C_FUNCTION: &CStr = c"FileChecksumCrc32c";

/// RocksDB's `FileType::kTableFile`: an sst file.
const TABLE_FILE: i32 = 2;

/// Size and CRC-32C of an sst file, as RocksDB computed them while writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WrittenChecksum {
    /// Bytes in the file.
    pub(crate) size: u64,
    /// CRC-32C (Castagnoli) of the whole file.
    pub(crate) crc: u32,
}

/// Makes a database opened with `options` compute the CRC-32C of every file it writes.
pub(crate) fn compute_file_checksums(options: &mut Options) {
    // SAFETY: the factory is created here and only read by the setter, which keeps its own
    // reference to the shared generator; `options` outlives the call.
    unsafe {
        let factory = ffi::rocksdb_file_checksum_gen_crc32c_factory_create();
        ffi::rocksdb_options_set_file_checksum_gen_factory(options.as_raw_ptr(), factory);
        ffi::rocksdb_file_checksum_gen_factory_destroy(factory);
    }
}

/// How fast RocksDB deletes obsolete sst files in the background.
const TRASH_DELETE_RATE: i64 = 1 << 30;

/// Makes a database opened with `options` delete the sst files a compaction replaced in
/// the background, at [`TRASH_DELETE_RATE`], after renaming them (RocksDB's
/// `SstFileManager`), instead of in the compaction's thread. Deleting a file the page cache
/// holds takes about 10 ms per 64 MB, and RocksDB's native checkpoint, which an
/// incremental checkpoint captures right after the compactions it waited for, waits for
/// those deletions first (10M keys: 65 ms after a merge of six files). RocksDB deletes at
/// once when the renamed files exceed a quarter of the database.
pub(crate) fn delete_obsolete_files_in_background(options: &mut Options) {
    // SAFETY: the environment is RocksDB's default one (destroying its handle leaves it),
    // and the manager's handle is released after the options took their own reference to
    // the manager; `options` outlives the calls.
    unsafe {
        let env = ffi::rocksdb_create_default_env();
        let manager = ffi::rocksdb_sst_file_manager_create(env);
        ffi::rocksdb_sst_file_manager_set_delete_rate_bytes_per_second(manager, TRASH_DELETE_RATE);
        ffi::rocksdb_options_set_sst_file_manager(options.as_raw_ptr(), manager);
        ffi::rocksdb_sst_file_manager_destroy(manager);
        ffi::rocksdb_env_destroy(env);
    }
}

/// The live sst files of `db` whose CRC-32C RocksDB recorded, by file name (`000042.sst`).
/// Files written before checksums were computed (by an older database, say) are absent.
/// Never flushes.
///
/// # Errors
///
/// RocksDB's message when it cannot list its live files.
pub(crate) fn live_sst_checksums(db: &DB) -> Result<HashMap<String, WrittenChecksum>, String> {
    let mut checksums = HashMap::new();
    // SAFETY: every pointer passed is either created here and destroyed before returning,
    // or `db`'s, which outlives the call. Strings are read only while `info` lives, each
    // index below the count RocksDB reports. A CRC-32C checksum is 4 raw bytes (big
    // endian), read only when the function name says it is one.
    unsafe {
        let options = ffi::rocksdb_livefiles_storage_info_options_create();
        ffi::rocksdb_livefiles_storage_info_options_set_include_checksum_info(options, 1);
        // Flush only once the live WAL reaches this size: never.
        ffi::rocksdb_livefiles_storage_info_options_set_wal_size_for_flush(options, u64::MAX);
        let mut error: *mut c_char = ptr::null_mut();
        let info = ffi::rocksdb_get_livefiles_storage_info(db.as_raw_ptr(), options, &mut error);
        ffi::rocksdb_livefiles_storage_info_options_destroy(options);
        take_error(error)?;
        if info.is_null() {
            return Err("RocksDB listed no live files".into());
        }
        for index in 0..ffi::rocksdb_livefiles_storage_info_count(info) {
            let function = ffi::rocksdb_livefiles_storage_info_file_checksum_func_name(info, index);
            if ffi::rocksdb_livefiles_storage_info_file_type(info, index) != TABLE_FILE
                || function.is_null()
                || CStr::from_ptr(function) != CRC32C_FUNCTION
            {
                continue;
            }
            let checksum = ffi::rocksdb_livefiles_storage_info_file_checksum(info, index);
            let name = ffi::rocksdb_livefiles_storage_info_relative_filename(info, index);
            if checksum.is_null() || name.is_null() {
                continue;
            }
            let bytes = std::slice::from_raw_parts(checksum.cast::<u8>(), 4);
            let crc = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let size = ffi::rocksdb_livefiles_storage_info_size(info, index);
            let name = CStr::from_ptr(name).to_string_lossy();
            let name = name.trim_start_matches('/').to_owned();
            checksums.insert(name, WrittenChecksum { size, crc });
        }
        ffi::rocksdb_livefiles_storage_info_destroy(info);
    }
    Ok(checksums)
}

/// Makes a database opened with `options` report its compactions and sealed memtables to
/// `compactions`, from its background threads and its writers.
pub(crate) fn listen(options: &mut Options, compactions: Arc<Compactions>) {
    let state = Arc::into_raw(compactions).cast_mut().cast::<c_void>();
    // SAFETY: RocksDB calls every callback (none may be null) with `state`, which holds one
    // count of the `Arc` until the listener's destructor, `release`, gives it back. The
    // options take ownership of the listener.
    unsafe {
        let listener = ffi::rocksdb_eventlistener_create(
            state,
            Some(release),
            Some(ignore_flush),
            Some(ignore_flush),
            Some(compaction_began),
            Some(compaction_ended),
            Some(ignore_subcompaction),
            Some(ignore_subcompaction),
            Some(ignore_ingestion),
            Some(ignore_background_error),
            Some(ignore_stall),
            Some(memtable_sealed),
        );
        ffi::rocksdb_options_add_eventlistener(options.as_raw_ptr(), listener);
    }
}

/// The [`Compactions`] a listener's `state` points to.
///
/// # Safety
///
/// `state` is the pointer [`listen`] gave RocksDB, and its listener is not destroyed yet.
unsafe fn compactions<'a>(state: *mut c_void) -> &'a Compactions {
    // SAFETY: the caller's promise: `state` came from `Arc::into_raw` and is still counted.
    unsafe { &*state.cast_const().cast::<Compactions>() }
}

unsafe extern "C" fn release(state: *mut c_void) {
    // SAFETY: called once, when RocksDB destroys the listener: the count `listen` took.
    drop(unsafe { Arc::from_raw(state.cast_const().cast::<Compactions>()) });
}

unsafe extern "C" fn compaction_began(
    state: *mut c_void,
    _db: *mut ffi::rocksdb_t,
    info: *const ffi::rocksdb_compactionjobinfo_t,
) {
    // SAFETY: `info` lives for the call; each index is below the count RocksDB reports, and
    // each string is copied while `info` lives.
    unsafe {
        let job = ffi::rocksdb_compactionjobinfo_job_id(info);
        let inputs = (0..ffi::rocksdb_compactionjobinfo_input_files_count(info))
            .filter_map(|index| {
                let mut size = 0;
                let path = ffi::rocksdb_compactionjobinfo_input_file_at(info, index, &mut size);
                (!path.is_null()).then(|| {
                    let bytes = std::slice::from_raw_parts(path.cast::<u8>(), size);
                    String::from_utf8_lossy(bytes).into_owned()
                })
            })
            .collect();
        compactions(state).began(job, inputs);
    }
}

unsafe extern "C" fn compaction_ended(
    state: *mut c_void,
    _db: *mut ffi::rocksdb_t,
    info: *const ffi::rocksdb_compactionjobinfo_t,
) {
    // SAFETY: `info` lives for the call.
    unsafe { compactions(state).ended(ffi::rocksdb_compactionjobinfo_job_id(info)) };
}

unsafe extern "C" fn memtable_sealed(state: *mut c_void, info: *const ffi::rocksdb_memtableinfo_t) {
    // SAFETY: `info` lives for the call.
    unsafe { compactions(state).sealed(ffi::rocksdb_memtableinfo_first_seqno(info)) };
}

unsafe extern "C" fn ignore_flush(
    _: *mut c_void,
    _: *mut ffi::rocksdb_t,
    _: *const ffi::rocksdb_flushjobinfo_t,
) {
}

unsafe extern "C" fn ignore_subcompaction(
    _: *mut c_void,
    _: *const ffi::rocksdb_subcompactionjobinfo_t,
) {
}

unsafe extern "C" fn ignore_ingestion(
    _: *mut c_void,
    _: *mut ffi::rocksdb_t,
    _: *const ffi::rocksdb_externalfileingestioninfo_t,
) {
}

unsafe extern "C" fn ignore_background_error(
    _: *mut c_void,
    _: u32,
    _: *mut ffi::rocksdb_status_ptr_t,
) {
}

unsafe extern "C" fn ignore_stall(_: *mut c_void, _: *const ffi::rocksdb_writestallinfo_t) {}

/// Takes RocksDB's error message out of `error` (set by a C call), if any.
///
/// # Safety
///
/// `error` is null or a string RocksDB allocated for this call.
unsafe fn take_error(error: *mut c_char) -> Result<(), String> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error is a NUL-terminated string RocksDB allocated with malloc.
    unsafe {
        let message = CStr::from_ptr(error).to_string_lossy().into_owned();
        ffi::rocksdb_free(error.cast::<c_void>());
        Err(message)
    }
}

/// Seals the active memtable of each of `families` and schedules its flush, without
/// waiting for it and without waiting for earlier flushes first (writes may stall until
/// they finish, as with any flush). Writes after the call go to new memtables.
///
/// # Errors
///
/// RocksDB's message when it cannot switch memtables.
pub(crate) fn seal_memtables(db: &DB, families: &[&dyn AsColumnFamilyRef]) -> Result<(), String> {
    if families.is_empty() {
        return Ok(());
    }
    let mut handles: Vec<_> = families.iter().map(|family| family.inner()).collect();
    let count = c_int::try_from(handles.len()).map_err(|_| "too many column families")?;
    // SAFETY: the options are created and destroyed here; the handles belong to `db`'s
    // column families, which `families` borrows for the call.
    unsafe {
        let options = ffi::rocksdb_flushoptions_create();
        ffi::rocksdb_flushoptions_set_wait(options, 0);
        ffi::rocksdb_flushoptions_set_allow_write_stall(options, 1);
        let mut error: *mut c_char = ptr::null_mut();
        ffi::rocksdb_flush_cfs(
            db.as_raw_ptr(),
            options,
            handles.as_mut_ptr(),
            count,
            &mut error,
        );
        ffi::rocksdb_flushoptions_destroy(options);
        take_error(error)
    }
}

/// A RocksDB snapshot that holds its database: while it lives, no compaction drops a
/// version it sees or rewrites the sequence number of a later write.
pub(crate) struct HeldSnapshot {
    db: Arc<DB>,
    snapshot: *const ffi::rocksdb_snapshot_t,
}

// SAFETY: a RocksDB snapshot is an immutable sequence number registered with the database,
// usable and releasable from any thread.
unsafe impl Send for HeldSnapshot {}
// SAFETY: as above; `&HeldSnapshot` only reads the sequence number.
unsafe impl Sync for HeldSnapshot {}

impl HeldSnapshot {
    /// A snapshot of `db` as of now.
    pub(crate) fn take(db: Arc<DB>) -> Self {
        // SAFETY: `db` is open; the snapshot is released in `drop`, before `db` is.
        let snapshot = unsafe { ffi::rocksdb_create_snapshot(db.as_raw_ptr()) };
        HeldSnapshot { db, snapshot }
    }

    /// The sequence number of the last write the snapshot sees.
    pub(crate) fn sequence_number(&self) -> u64 {
        // SAFETY: the snapshot is live until `drop`.
        unsafe { ffi::rocksdb_snapshot_get_sequence_number(self.snapshot) }
    }
}

impl Drop for HeldSnapshot {
    fn drop(&mut self) {
        // SAFETY: created from this database and released once.
        unsafe { ffi::rocksdb_release_snapshot(self.db.as_raw_ptr(), self.snapshot) };
    }
}

impl std::fmt::Debug for HeldSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSnapshot")
            .field("sequence_number", &self.sequence_number())
            .finish()
    }
}

/// A live sst file of a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveSst {
    /// Its column family's name.
    pub(crate) family: String,
    /// Its file name (`000042.sst`).
    pub(crate) name: String,
    /// Its level in the LSM tree.
    pub(crate) level: i32,
    /// The largest sequence number of its entries.
    pub(crate) largest_sequence_number: u64,
}

/// The live sst files of `db`.
pub(crate) fn live_ssts(db: &DB) -> Vec<LiveSst> {
    let mut live = Vec::new();
    // SAFETY: the list is created here and destroyed before returning; each index is below
    // its count, and its strings are read while it lives.
    unsafe {
        let files = ffi::rocksdb_livefiles(db.as_raw_ptr());
        if files.is_null() {
            return live;
        }
        let text = |text: *const c_char| match text.is_null() {
            true => String::new(),
            false => CStr::from_ptr(text).to_string_lossy().into_owned(),
        };
        for index in 0..ffi::rocksdb_livefiles_count(files) {
            let name = text(ffi::rocksdb_livefiles_name(files, index));
            live.push(LiveSst {
                family: text(ffi::rocksdb_livefiles_column_family_name(files, index)),
                name: name.trim_start_matches('/').to_owned(),
                level: ffi::rocksdb_livefiles_level(files, index),
                largest_sequence_number: ffi::rocksdb_livefiles_largest_seqno(files, index),
            });
        }
        ffi::rocksdb_livefiles_destroy(files);
    }
    live
}

/// The largest sequence number of each live sst file of `db`, by file name.
pub(crate) fn live_sst_sequence_numbers(db: &DB) -> HashMap<String, u64> {
    (live_ssts(db).into_iter())
        .map(|file| (file.name, file.largest_sequence_number))
        .collect()
}

/// Ingests `files`, sst files another RocksDB database wrote, into `family` of `db` as
/// they are: hard-linked (copied where linking fails), their sequence numbers kept, the
/// database's own sequence advanced past them. Files that overlap are given oldest first
/// (lower levels, then smaller sequence numbers). RocksDB refuses, changing nothing, when
/// they overlap any key or range tombstone `family` holds.
///
/// # Errors
///
/// RocksDB's message.
pub(crate) fn ingest_database_files(
    db: &DB,
    family: &impl AsColumnFamilyRef,
    files: &[std::path::PathBuf],
) -> Result<(), String> {
    let paths: Vec<std::ffi::CString> = (files.iter())
        .map(|path| {
            let path = path.to_str().ok_or("a file path is not UTF-8")?;
            std::ffi::CString::new(path).map_err(|_| "a file path holds a NUL byte")
        })
        .collect::<Result<_, _>>()?;
    let pointers: Vec<*const c_char> = paths.iter().map(|path| path.as_ptr()).collect();
    // SAFETY: the options are created and destroyed here; the paths outlive the call; the
    // column family belongs to `db`.
    unsafe {
        let options = ffi::rocksdb_ingestexternalfileoptions_create();
        ffi::rocksdb_ingestexternalfileoptions_set_allow_db_generated_files(options, 1);
        ffi::rocksdb_ingestexternalfileoptions_set_link_files(options, 1);
        ffi::rocksdb_ingestexternalfileoptions_set_snapshot_consistency(options, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_blocking_flush(options, 0);
        let mut error: *mut c_char = ptr::null_mut();
        ffi::rocksdb_ingest_external_file_cf(
            db.as_raw_ptr(),
            family.inner(),
            pointers.as_ptr(),
            pointers.len(),
            options,
            &mut error,
        );
        ffi::rocksdb_ingestexternalfileoptions_destroy(options);
        take_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// RocksDB's recorded checksum of each sst file is the CRC-32C of the file's bytes,
    /// which is what the file manifest holds.
    #[test]
    fn recorded_checksums_are_the_crc32c_of_each_sst_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut options = Options::default();
        options.create_if_missing(true);
        compute_file_checksums(&mut options);
        let db = DB::open(&options, dir.path()).expect("open");
        for round in 0..3u32 {
            for key in 0..2_000u32 {
                let value = format!("value {round} {key}").repeat(8);
                db.put(key.to_be_bytes(), value).expect("put");
            }
            db.flush().expect("flush");
        }
        let checksums = live_sst_checksums(&db).expect("live files");
        assert_eq!(checksums.len(), 3, "one file per flush: {checksums:?}");
        for (name, written) in &checksums {
            let bytes = fs::read(dir.path().join(name)).expect("read sst file");
            assert_eq!(written.size, bytes.len() as u64, "size of {name}");
            assert_eq!(written.crc, crc32c::crc32c(&bytes), "crc32c of {name}");
        }
    }

    /// Without the option nothing is recorded, so the caller reads the files itself.
    #[test]
    fn a_database_without_checksums_lists_none() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = DB::open_default(dir.path()).expect("open");
        db.put(b"key", b"value").expect("put");
        db.flush().expect("flush");
        assert!(live_sst_checksums(&db).expect("live files").is_empty());
    }
}

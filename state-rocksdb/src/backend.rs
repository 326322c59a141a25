//! [`RocksDBKeyedStateBackend`]: keyed state in an embedded RocksDB instance.
//!
//! # Layout
//!
//! One column family per state (named `state:<name>`). A key is the canonical composite key
//! of [`state_format::keyed_format`]: the key-group prefix (1 byte up to max parallelism 128,
//! else 2, big-endian), the `u32` length and bytes of the key, the `u32` length and bytes of
//! the namespace, and for map state the user key. Key groups are therefore contiguous key
//! ranges, and a full snapshot writes RocksDB's keys as they are.
//!
//! | state kind | RocksDB value |
//! |---|---|
//! | value | the value |
//! | list | the elements, each as `u32` length and bytes ([`encode_list`]) |
//! | map | one RocksDB entry per user key, holding the map value |
//! | priority queue | one entry per timer, keyed by its [timer key](state_format::timer) (key group, timestamp, key, namespace), empty ([`crate::timers`]) |
//!
//! List appends use a merge operator that concatenates operands: an element appended is the
//! operand `u32 length ‖ element`, so an append never reads the list (what Flink's
//! `StringAppendOperator` achieves with a delimiter, without the escaping problem).
//!
//! Writes skip RocksDB's write-ahead log: durability comes from checkpoints, as in Flink.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::{Lease, ResourceGuard};
use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DB, DBCompactionStyle,
    MergeOperands, Options, ReadOptions, UniversalCompactOptions, WriteBatch, WriteOptions,
};
use state_api::CheckpointId;
use state_api::SnapshotRequest;
use state_api::{
    AsyncSnapshotTask, CheckpointListener, CheckpointStreamFactory, Error, KeyGroup, KeyGroupRange,
    KeyedBackendParams, KeyedSnapshotResult, KeyedStateBackend, MaxParallelism, Registry, Result,
    StateKind, StateMetaInfo, Timer,
};
use state_format::KeyedSnapshots;
use state_format::key_group_prefix::write_key_group_prefix;
use state_format::keyed_format::{CompositeKey, decode_list, encode_list};
use state_format::timer::{TimerKey, not_keyed_state};
use tempfile::TempDir;

use crate::compactions::Compactions;
use crate::heap_timers::{HeapTimerSnapshot, HeapTimers};
use crate::history::IncrementalHistory;
use crate::timers::TimerQueues;
use crate::ttl_filter::TtlFilters;
use crate::{ROCKSDB, ROCKSDB_FULL};

/// Maps a RocksDB error onto [`Error::Backend`].
pub(crate) fn db_error(context: impl fmt::Display) -> impl FnOnce(rocksdb::Error) -> Error {
    move |err| Error::Backend {
        backend: ROCKSDB.to_owned(),
        source: format!("{context}: {err}").into(),
    }
}

/// The column family of state `name`.
pub(crate) fn cf_name(name: &str) -> String {
    format!("state:{name}")
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The key-group prefix of `key_group`: where its key range starts.
pub(crate) fn key_group_start(key_group: u32, prefix_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix_bytes);
    write_key_group_prefix(key_group, prefix_bytes, &mut out);
    out
}

fn concat_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut merged = Vec::with_capacity(len);
    merged.extend_from_slice(existing.unwrap_or_default());
    for operand in operands {
        merged.extend_from_slice(operand);
    }
    Some(merged)
}

/// RocksDB options of a backend: defaults suited to state of a stream processor, overridable
/// through [`KeyedBackendParams::options`].
///
/// | option | default | meaning |
/// |---|---|---|
/// | `rocksdb.block-cache-size` | 64 MiB | LRU block cache shared by the column families |
/// | `rocksdb.write-buffer-size` | 64 MiB | memtable size per column family |
/// | `rocksdb.max-background-jobs` | 2 | flush and compaction threads |
/// | `rocksdb.compression` | `lz4` | [`SstCompression`]: `none`, `snappy`, `lz4`, `zstd` |
/// | `rocksdb.compaction.style` | `universal` | [`CompactionStyle`]: `universal` or `level` |
/// | `rocksdb.compaction.cpu-priority` | `normal` | [`CompactionPriority`]: `normal` or `low` |
/// | `rocksdb.timer-service.factory` | `rocksdb` | [`TimerServiceFactory`]: where timers live, `rocksdb` or `heap` |
/// | `rocksdb.incremental.compaction-wait-ms` | 10000 | longest an incremental checkpoint waits for compactions of files it would otherwise store twice |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDBOptions {
    /// Block cache bytes.
    pub block_cache_size: usize,
    /// Memtable bytes per column family.
    pub write_buffer_size: usize,
    /// Background flush and compaction jobs.
    pub max_background_jobs: i32,
    /// Block compression of sst files.
    pub compression: SstCompression,
    /// How sst files are compacted.
    pub compaction_style: CompactionStyle,
    /// The CPU priority of the threads that compact.
    pub compaction_priority: CompactionPriority,
    /// Where priority-queue (timer) states are kept.
    pub timer_service_factory: TimerServiceFactory,
    /// The longest the asynchronous part of an incremental checkpoint waits for the
    /// compactions that ran at its cut and read files no earlier checkpoint stored
    /// (otherwise their inputs are stored now and their output with the next
    /// checkpoint). Zero waits for none.
    pub compaction_wait: Duration,
}

/// Sorted runs at which universal compaction starts merging (RocksDB's
/// `level0_file_num_compaction_trigger`).
const UNIVERSAL_SORTED_RUNS: i32 = 8;

/// `Display` and `FromStr` (ASCII case-insensitive, trimmed) of an option's enum from its
/// `ALL` and `as_str`; a value that is none of them is an [`Error::InvalidArgument`] naming
/// the option, the value and the accepted ones.
macro_rules! option_enum {
    ($type:ty, $option:literal) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $type {
            type Err = Error;

            fn from_str(value: &str) -> Result<Self> {
                parse_choice($option, value, &Self::ALL, Self::as_str)
            }
        }
    };
}

/// How RocksDB compacts a column family's sst files (`rocksdb.compaction.style`).
///
/// The choice decides how many bytes an incremental checkpoint uploads: it uploads every sst
/// file the last completed checkpoint lacks, so each file a compaction rewrites is uploaded
/// again, however little of it changed. With keys spread over the whole key space (as
/// key-group prefixes spread them), every flushed file overlaps every level below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactionStyle {
    /// Universal (tiered) compaction, the default: sorted runs are merged with runs of a
    /// similar size, so a small flush is merged with small runs and the large run at the
    /// bottom is rewritten only when the newer runs add up to more than twice its size
    /// (RocksDB's `max_size_amplification_percent` = 200). An incremental checkpoint after
    /// a change of 1% of the keys uploads about that 1% once or twice. Point reads look at
    /// up to eight sorted runs (`level0_file_num_compaction_trigger` = 8; more while merges
    /// are behind), and space amplification may reach 3x before the bottom run is merged.
    /// In either style a compaction still running when a checkpoint starts is uploaded by
    /// the next checkpoint.
    #[default]
    Universal,
    /// RocksDB's leveled compaction with its defaults (dynamic level sizes, 64 MiB files,
    /// 256 MiB level base), the default before `universal`: less space amplification, but
    /// every compaction out of level 0 rewrites the whole base level and the base level's
    /// overflow rewrites the level below, so a checkpoint after a small change can upload
    /// a large part of the state again.
    Level,
}

impl CompactionStyle {
    const ALL: [CompactionStyle; 2] = [CompactionStyle::Universal, CompactionStyle::Level];

    /// The value of `rocksdb.compaction.style` that selects this style.
    pub fn as_str(self) -> &'static str {
        match self {
            CompactionStyle::Universal => "universal",
            CompactionStyle::Level => "level",
        }
    }
}

option_enum!(CompactionStyle, "rocksdb.compaction.style");

/// The block compression of a column family's sst files (`rocksdb.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SstCompression {
    /// Blocks stored as they are.
    None,
    /// Snappy.
    Snappy,
    /// LZ4, the default: fast to write and to read.
    Lz4,
    /// Zstandard: smaller files for more processor time.
    Zstd,
}

impl SstCompression {
    const ALL: [SstCompression; 4] = [
        SstCompression::None,
        SstCompression::Snappy,
        SstCompression::Lz4,
        SstCompression::Zstd,
    ];

    /// The value of `rocksdb.compression` that selects this compression.
    pub fn as_str(self) -> &'static str {
        match self {
            SstCompression::None => "none",
            SstCompression::Snappy => "snappy",
            SstCompression::Lz4 => "lz4",
            SstCompression::Zstd => "zstd",
        }
    }
}

option_enum!(SstCompression, "rocksdb.compression");

/// Where the backend keeps its priority-queue (timer) states
/// (`rocksdb.timer-service.factory`, Flink's `state.backend.rocksdb.timer-service.factory`).
///
/// Both are snapshotted asynchronously by both RocksDB strategies and written the same way
/// in savepoints, and a restore moves timers from one to the other: a job may change the
/// choice between any two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimerServiceFactory {
    /// A column family per state, with each key group's earliest timers cached in memory
    /// (the default): timers are bounded by disk, not memory.
    #[default]
    RocksDB,
    /// Persistent ordered sets in memory, one per key group: no database access to add,
    /// remove or fire a timer, at the cost of memory for every timer and of writing every
    /// timer again in each incremental checkpoint (as a canonical key-group file).
    Heap,
}

impl TimerServiceFactory {
    const ALL: [TimerServiceFactory; 2] = [TimerServiceFactory::RocksDB, TimerServiceFactory::Heap];

    /// The value of `rocksdb.timer-service.factory` that selects this storage.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerServiceFactory::RocksDB => "rocksdb",
            TimerServiceFactory::Heap => "heap",
        }
    }
}

option_enum!(TimerServiceFactory, "rocksdb.timer-service.factory");

/// The CPU priority of RocksDB's compaction threads (`rocksdb.compaction.cpu-priority`).
///
/// `low` lets the processing and snapshot threads run first when every core is busy: a
/// full snapshot taken while RocksDB still merges what a bulk load wrote gets the cores
/// (10M keys of the benchmark on two cores: `rocksdb-full`'s checkpoint 1 took 1,013-1,461
/// ms at low priority against 1,435-1,686 ms at normal). The price is compaction debt
/// while writes keep the cores busy: in the same load, the merges fell behind (20 sorted
/// runs instead of at most 8, so point reads look at more files) and caught up in one
/// merge of 1.1 GB, which an incremental checkpoint then waited 3 s for. Hence `normal`
/// by default.
///
/// The compaction threads belong to RocksDB's default environment, which every RocksDB
/// database of the process shares: once any backend lowered their priority, it stays
/// lowered for the life of the process (a thread cannot raise its priority again without
/// privileges), whatever later backends choose. Flushes keep their priority: a memtable
/// waiting for its flush stops writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactionPriority {
    /// The threads' priority left as it is, the default.
    #[default]
    Normal,
    /// The lowest CPU priority (`nice` 19 on Linux).
    Low,
}

impl CompactionPriority {
    const ALL: [CompactionPriority; 2] = [CompactionPriority::Normal, CompactionPriority::Low];

    /// The value of `rocksdb.compaction.cpu-priority` that selects this priority.
    pub fn as_str(self) -> &'static str {
        match self {
            CompactionPriority::Low => "low",
            CompactionPriority::Normal => "normal",
        }
    }
}

option_enum!(CompactionPriority, "rocksdb.compaction.cpu-priority");

/// Makes the databases opened with `options` compact at the lowest CPU priority: RocksDB's
/// default environment, whose compaction threads every database of the process shares,
/// lowers each of them before its next compaction (the threads a compaction starts for its
/// parts inherit the priority).
fn lower_compaction_priority(options: &mut Options) {
    match rocksdb::Env::new() {
        Ok(mut env) => {
            env.lower_thread_pool_cpu_priority();
            options.set_env(&env);
        }
        Err(err) => {
            tracing::warn!(%err, "RocksDB's default environment is not available; compactions keep their priority");
        }
    }
}

/// The one of `all` that `name` gives `value` (ASCII case-insensitive, trimmed); else an
/// [`Error::InvalidArgument`] naming `option`, the value and the accepted ones.
fn parse_choice<T: Copy>(
    option: &str,
    value: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T> {
    let found = all.iter().copied();
    found
        .clone()
        .find(|choice| name(*choice).eq_ignore_ascii_case(value.trim()))
        .ok_or_else(|| {
            let accepted: Vec<String> = found.map(|choice| format!("`{}`", name(choice))).collect();
            Error::InvalidArgument(format!(
                "option `{option}` = `{value}` is not one of: {}",
                accepted.join(", ")
            ))
        })
}

impl Default for RocksDBOptions {
    fn default() -> Self {
        RocksDBOptions {
            block_cache_size: 64 << 20,
            write_buffer_size: 64 << 20,
            max_background_jobs: 2,
            compression: SstCompression::Lz4,
            compaction_style: CompactionStyle::default(),
            compaction_priority: CompactionPriority::default(),
            timer_service_factory: TimerServiceFactory::default(),
            compaction_wait: Duration::from_secs(10),
        }
    }
}

impl RocksDBOptions {
    /// The defaults with the `rocksdb.*` entries of `options` applied.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an unknown `rocksdb.*` key or a value that does not
    /// parse.
    pub fn from_params(options: &std::collections::BTreeMap<String, String>) -> Result<Self> {
        let mut parsed = RocksDBOptions::default();
        for (key, value) in options.iter().filter(|(k, _)| k.starts_with("rocksdb.")) {
            let invalid =
                || Error::InvalidArgument(format!("option `{key}` = `{value}` does not parse"));
            match key.as_str() {
                "rocksdb.block-cache-size" => {
                    parsed.block_cache_size = value.parse().map_err(|_| invalid())?
                }
                "rocksdb.write-buffer-size" => {
                    parsed.write_buffer_size = value.parse().map_err(|_| invalid())?
                }
                "rocksdb.max-background-jobs" => {
                    parsed.max_background_jobs = value.parse().map_err(|_| invalid())?
                }
                "rocksdb.compression" => parsed.compression = value.parse()?,
                "rocksdb.compaction.style" => parsed.compaction_style = value.parse()?,
                "rocksdb.compaction.cpu-priority" => parsed.compaction_priority = value.parse()?,
                "rocksdb.timer-service.factory" => parsed.timer_service_factory = value.parse()?,
                "rocksdb.incremental.compaction-wait-ms" => {
                    parsed.compaction_wait =
                        Duration::from_millis(value.parse().map_err(|_| invalid())?)
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown option `{key}`; known: rocksdb.block-cache-size, \
                         rocksdb.write-buffer-size, rocksdb.max-background-jobs, \
                         rocksdb.compression, rocksdb.compaction.style, \
                         rocksdb.compaction.cpu-priority, \
                         rocksdb.timer-service.factory, rocksdb.incremental.compaction-wait-ms"
                    )));
                }
            }
        }
        Ok(parsed)
    }

    fn db_options(&self) -> Options {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(self.max_background_jobs);
        // A compaction runs on as many threads as there are background jobs: the merges a
        // bulk load leaves end sooner, and checkpoints waiting for them too.
        options.set_max_subcompactions(u32::try_from(self.max_background_jobs).unwrap_or(1).max(1));
        // Incremental checkpoints record these instead of reading every new file back.
        crate::native::compute_file_checksums(&mut options);
        crate::native::delete_obsolete_files_in_background(&mut options);
        if self.compaction_priority == CompactionPriority::Low {
            lower_compaction_priority(&mut options);
        }
        options
    }

    /// The options of the column family of a state of `kind`.
    pub(crate) fn cf_options(&self, cache: &Cache, kind: StateKind) -> Options {
        let mut options = Options::default();
        options.set_write_buffer_size(self.write_buffer_size);
        options.set_compression_type(match self.compression {
            SstCompression::None => rocksdb::DBCompressionType::None,
            SstCompression::Snappy => rocksdb::DBCompressionType::Snappy,
            SstCompression::Lz4 => rocksdb::DBCompressionType::Lz4,
            SstCompression::Zstd => rocksdb::DBCompressionType::Zstd,
        });
        if self.compaction_style == CompactionStyle::Universal {
            options.set_compaction_style(DBCompactionStyle::Universal);
            // Compaction starts at 8 sorted runs, not RocksDB's 4: a fill leaves a few runs
            // of its own (4 after 10M keys of the benchmark), and with 4 every later flush
            // was merged at once into the newest of them, re-uploading that run with each
            // checkpoint. With 8, small flushes are merged among themselves (size ratio),
            // so a checkpoint uploads its own flush and, every few checkpoints, one merge.
            options.set_level_zero_file_num_compaction_trigger(UNIVERSAL_SORTED_RUNS);
            // RocksDB's defaults otherwise: size ratio 1%, runs merged two or more at a
            // time, the bottom run rewritten once the newer runs exceed 200% of it.
            options.set_universal_compaction_options(&UniversalCompactOptions::default());
        }
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        if kind == StateKind::PriorityQueue {
            // Adding a timer reads whether it is there, nearly always to find it is not:
            // without a filter, that read visits every sorted run (10M timers: 35,000
            // adds/s against 182,000 at 1M).
            table.set_bloom_filter(10.0, false);
        }
        options.set_block_based_table_factory(&table);
        options.set_merge_operator_associative("snapstate-list-append", concat_merge);
        options
    }
}

/// What a RocksDB backend shares with its snapshot strategies (the `backend_state` a
/// [`KeyedSnapshotStrategyFactory`](state_api::KeyedSnapshotStrategyFactory) for backend
/// `rocksdb` receives).
#[derive(Clone)]
pub struct RocksDBSnapshotSource {
    inner: Arc<SourceInner>,
}

struct SourceInner {
    db: Mutex<Option<Arc<DB>>>,
    guard: ResourceGuard,
    states: Mutex<Vec<StateMetaInfo>>,
    range: KeyGroupRange,
    max_parallelism: MaxParallelism,
    key_serializer: String,
    db_path: PathBuf,
    incremental: Mutex<IncrementalHistory>,
    /// The incremental strategy's cut waiting to be captured.
    cuts: crate::cut::Cuts,
    /// The compaction filters of states with a time to live; after `db`, so that they
    /// outlive it.
    ttl_filters: TtlFilters,
    /// The priority-queue states, when kept in memory ([`TimerServiceFactory::Heap`]).
    heap_timers: Option<Mutex<HeapTimers>>,
}

impl fmt::Debug for RocksDBSnapshotSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDBSnapshotSource")
            .field("range", &self.inner.range)
            .field("db_path", &self.inner.db_path)
            .finish()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a single assignment or push.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RocksDBSnapshotSource {
    /// The open database.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the backend closed.
    pub fn db(&self) -> Result<Arc<DB>> {
        lock(&self.inner.db).clone().ok_or_else(|| Error::Closed {
            what: format!("RocksDB backend of key groups {}", self.inner.range),
        })
    }

    /// A lease on the database: the backend does not close it while the lease is held.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the backend started closing.
    pub fn lease(&self) -> Result<Lease> {
        self.inner.guard.acquire()
    }

    /// Meta info of every registered state; a state's index is its snapshot id.
    pub fn states(&self) -> Vec<StateMetaInfo> {
        lock(&self.inner.states).clone()
    }

    /// The key groups of the backend.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.inner.range
    }

    /// Max parallelism of the job.
    pub fn max_parallelism(&self) -> MaxParallelism {
        self.inner.max_parallelism
    }

    /// Id of the key serializer.
    pub fn key_serializer(&self) -> &str {
        &self.inner.key_serializer
    }

    /// The database directory.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// The directory holding the database directory and snapshot directories.
    pub fn instance_dir(&self) -> &Path {
        self.inner.db_path.parent().unwrap_or(&self.inner.db_path)
    }

    /// The identifier of this backend instance in shared file keys: new for a new backend,
    /// the old one's after an incremental restore without rescaling.
    pub fn backend_identifier(&self) -> String {
        self.incremental().backend_id.clone()
    }

    /// The last checkpoint confirmed by `notify_checkpoint_complete` (or restored from),
    /// which the next incremental checkpoint builds on.
    pub fn last_completed_checkpoint(&self) -> Option<u64> {
        self.incremental().last_completed()
    }

    /// The incremental history: which sst files which checkpoint uploaded.
    pub(crate) fn incremental(&self) -> MutexGuard<'_, IncrementalHistory> {
        lock(&self.inner.incremental)
    }

    /// The incremental strategy's cuts.
    pub(crate) fn cuts(&self) -> &crate::cut::Cuts {
        &self.inner.cuts
    }

    /// The id of registered state `name`, checking its kind when `kind` is given.
    pub(crate) fn find_state(&self, name: &str, kind: Option<StateKind>) -> Result<usize> {
        state_format::find_state(lock(&self.inner.states).iter(), name, kind)
    }

    /// The in-memory priority-queue states; `None` when timers live in column families.
    pub(crate) fn heap_timers(&self) -> Option<MutexGuard<'_, HeapTimers>> {
        self.inner.heap_timers.as_ref().map(lock)
    }

    /// Whether priority-queue states live in memory ([`TimerServiceFactory::Heap`]).
    pub(crate) fn timers_in_memory(&self) -> bool {
        self.inner.heap_timers.is_some()
    }

    /// Whether state `meta` lives in memory rather than in a column family.
    pub(crate) fn in_memory(&self, meta: &StateMetaInfo) -> bool {
        meta.kind == StateKind::PriorityQueue && self.timers_in_memory()
    }

    /// Every in-memory state's timers now (empty when timers live in column families):
    /// what a snapshot's synchronous part takes, O(states x key groups).
    pub(crate) fn heap_timer_snapshot(&self) -> HeapTimerSnapshot {
        self.heap_timers()
            .map(|timers| timers.snapshot())
            .unwrap_or_default()
    }
}

/// What a database directory holds when a backend opens it.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The states, in id order.
    pub(crate) states: Vec<StateMetaInfo>,
    /// The states whose column families the directory holds: all but the timer states a
    /// snapshot kept in memory.
    pub(crate) families: Vec<StateMetaInfo>,
    /// Whether the directory holds a database that must open as it is (never created).
    pub(crate) existing: bool,
    /// The incremental history to continue from.
    pub(crate) history: IncrementalHistory,
}

#[derive(Debug)]
struct CurrentKey {
    /// Key-group prefix, key length and key: the start of every composite key of this key.
    prefix: Vec<u8>,
}

/// Keyed state of one key-group range in an embedded RocksDB instance.
///
/// # Example
///
/// ```
/// use state_api::{KeyGroupRange, KeyedBackendParams, KeyedStateBackend, Registry, StateMetaInfo};
/// use state_rocksdb::RocksDBKeyedStateBackend;
///
/// state_rocksdb::link();
/// let dir = tempfile::tempdir()?;
/// let mut params = KeyedBackendParams::new(state_api::MaxParallelism::new(128)?, KeyGroupRange::new(0, 127)?);
/// params.working_dir = Some(dir.path().to_path_buf());
/// let mut backend = RocksDBKeyedStateBackend::new(params, Registry::global())?;
/// backend.register_state(&StateMetaInfo::list("events", "void", "bytes"))?;
/// backend.set_current_key(b"alice")?;
/// backend.append_to_list("events", b"", b"login")?;
/// backend.append_to_list("events", b"", b"logout")?;
/// assert_eq!(backend.list("events", b"")?, [b"login".to_vec(), b"logout".to_vec()]);
/// backend.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RocksDBKeyedStateBackend {
    db: Option<Arc<DB>>,
    source: RocksDBSnapshotSource,
    params: KeyedBackendParams,
    options: RocksDBOptions,
    cache: Cache,
    composite: CompositeKey,
    current: Option<CurrentKey>,
    snapshots: KeyedSnapshots,
    write_options: WriteOptions,
    /// Removed after the database closes when the backend chose its own directory.
    temp_dir: Option<TempDir>,
    /// Set while a restore writes: column families created meanwhile compact nothing.
    bulk_load: bool,
    timer_keys: TimerKey,
    /// What is cached of each timer state ([`crate::timers`]).
    timer_queues: RefCell<TimerQueues>,
}

impl fmt::Debug for RocksDBKeyedStateBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDBKeyedStateBackend")
            .field("range", &self.params.key_group_range)
            .field("db_path", &self.source.db_path())
            .field("snapshots", &self.snapshots)
            .field("closed", &self.db.is_none())
            .finish()
    }
}

impl RocksDBKeyedStateBackend {
    /// An empty backend for `params` with its database in a fresh directory under
    /// `params.working_dir` (a temporary directory when none is given), snapshotting
    /// checkpoints with strategy `params.strategy` (default `rocksdb-full`) and savepoints
    /// with `rocksdb-full`.
    ///
    /// # Errors
    ///
    /// Unknown strategies or decorators ([`Error::UnknownPlugin`]); a strategy of another
    /// backend, a range outside the max parallelism or bad `rocksdb.*` options
    /// ([`Error::InvalidArgument`]); RocksDB failing to open ([`Error::Backend`]).
    pub fn new(params: KeyedBackendParams, registry: &Registry) -> Result<Self> {
        Self::open(params, registry, |_| {
            Ok(Opened {
                states: Vec::new(),
                families: Vec::new(),
                existing: false,
                history: IncrementalHistory::fresh(),
            })
        })
    }

    /// Opens a backend whose database directory `prepare` fills first (empty for a new
    /// backend, downloaded files for an incremental restore); `prepare` returns the states
    /// the files hold and the incremental history to continue from.
    pub(crate) fn open(
        params: KeyedBackendParams,
        registry: &Registry,
        prepare: impl FnOnce(&Path) -> Result<Opened>,
    ) -> Result<Self> {
        params.check_range()?;
        let range = params.key_group_range;
        let options = RocksDBOptions::from_params(&params.options)?;
        let (db_path, temp_dir) = db_directory(params.working_dir.as_deref())?;
        let cache = Cache::new_lru_cache(options.block_cache_size);
        let opened = prepare(&db_path)?;
        let ttl_filters = TtlFilters::new(params.clock.clone());
        let timer_keys = TimerKey::new(params.max_parallelism);
        let mut heap_timers = (options.timer_service_factory == TimerServiceFactory::Heap)
            .then(|| HeapTimers::new(timer_keys, range.len() as usize));
        // The column families the directory holds, and those of states kept in the
        // database that it does not (timers a snapshot kept in memory): created on open.
        let timers_in_memory = heap_timers.is_some();
        let in_memory =
            |meta: &StateMetaInfo| timers_in_memory && meta.kind == StateKind::PriorityQueue;
        let missing = (opened.states.iter()).filter(|meta| {
            !in_memory(meta) && !opened.families.iter().any(|f| f.name == meta.name)
        });
        let families: Vec<ColumnFamilyDescriptor> = (opened.families.iter())
            .chain(missing)
            .map(|meta| {
                let mut family = options.cf_options(&cache, meta.kind);
                ttl_filters.install(&mut family, meta);
                ColumnFamilyDescriptor::new(cf_name(&meta.name), family)
            })
            .collect();
        let compactions = Arc::new(Compactions::new(options.compaction_wait));
        let mut db_options = options.db_options();
        crate::native::listen(&mut db_options, compactions.clone());
        if opened.existing {
            db_options.create_if_missing(false);
        }
        let db = DB::open_cf_descriptors(&db_options, &db_path, families).map_err(db_error(
            format_args!("opening a database in {}", db_path.display()),
        ))?;
        if let Some(timers) = &mut heap_timers {
            for meta in (opened.states.iter()).filter(|meta| meta.kind == StateKind::PriorityQueue)
            {
                timers.register(&meta.name);
            }
            // Timers a snapshot kept in a column family move into memory.
            for meta in (opened.families.iter()).filter(|meta| in_memory(meta)) {
                timers.move_family(&db, &meta.name, range)?;
            }
        }
        let db = Arc::new(db);
        let source = RocksDBSnapshotSource {
            inner: Arc::new(SourceInner {
                db: Mutex::new(Some(db.clone())),
                guard: ResourceGuard::new(format!("RocksDB of key groups {range}")),
                states: Mutex::new(opened.states),
                range,
                max_parallelism: params.max_parallelism,
                key_serializer: params.key_serializer.clone(),
                db_path,
                incremental: Mutex::new(opened.history),
                cuts: crate::cut::Cuts::new(compactions),
                ttl_filters,
                heap_timers: heap_timers.map(Mutex::new),
            }),
        };
        let snapshots = KeyedSnapshots::new(ROCKSDB, ROCKSDB_FULL, &source, &params, registry)?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(RocksDBKeyedStateBackend {
            db: Some(db),
            composite: CompositeKey::new(params.max_parallelism),
            source,
            params,
            options,
            cache,
            current: None,
            snapshots,
            write_options,
            temp_dir,
            bulk_load: false,
            timer_keys,
            timer_queues: RefCell::new(TimerQueues::new()),
        })
    }

    /// Makes the column families created from now on compact nothing until
    /// [`end_bulk_load`](Self::end_bulk_load): what a restore that writes every entry does.
    pub(crate) fn begin_bulk_load(&mut self) {
        self.bulk_load = true;
    }

    /// Lets every column family compact again; RocksDB schedules what the load left.
    pub(crate) fn end_bulk_load(&mut self) -> Result<()> {
        if !std::mem::replace(&mut self.bulk_load, false) {
            return Ok(());
        }
        let db = self.db()?;
        for meta in self.source.states() {
            if !self.source.in_memory(&meta) {
                set_family_options(db, &meta.name, AFTER_BULK_LOAD)?;
            }
        }
        Ok(())
    }

    /// The state a snapshot strategy of this backend works from.
    pub fn snapshot_source(&self) -> &RocksDBSnapshotSource {
        &self.source
    }

    /// The RocksDB options in effect.
    pub fn options(&self) -> &RocksDBOptions {
        &self.options
    }

    pub(crate) fn db(&self) -> Result<&Arc<DB>> {
        self.db.as_ref().ok_or_else(|| Error::Closed {
            what: format!(
                "RocksDB backend of key groups {}",
                self.params.key_group_range
            ),
        })
    }

    pub(crate) fn composite_key(&self) -> CompositeKey {
        self.composite
    }

    pub(crate) fn key_group_range(&self) -> KeyGroupRange {
        self.params.key_group_range
    }

    pub(crate) fn max_parallelism_internal(&self) -> MaxParallelism {
        self.params.max_parallelism
    }

    pub(crate) fn key_serializer(&self) -> &str {
        &self.params.key_serializer
    }

    pub(crate) fn write_options(&self) -> &WriteOptions {
        &self.write_options
    }

    pub(crate) fn timer_keys(&self) -> TimerKey {
        self.timer_keys
    }

    pub(crate) fn timer_queues(&self) -> &RefCell<TimerQueues> {
        &self.timer_queues
    }

    /// The key group of `key`, which must be one this instance owns.
    pub(crate) fn params_key_group_of(&self, key: &[u8]) -> Result<KeyGroup> {
        self.params.key_group_of(key)
    }

    /// Registers `meta` (creating its column family) or checks it against the state
    /// registered under its name; returns the state's column family, `None` for a state
    /// kept in memory.
    pub(crate) fn register(
        &self,
        meta: &StateMetaInfo,
    ) -> Result<Option<Arc<BoundColumnFamily<'_>>>> {
        let db = self.db()?;
        let in_memory = self.source.in_memory(meta);
        let mut states = lock(&self.source.inner.states);
        match states.iter_mut().find(|held| held.name == meta.name) {
            Some(held) => {
                held.check_compatible(meta)?;
                held.ttl = meta.ttl;
                self.source.inner.ttl_filters.update(meta);
            }
            None => {
                if states.len() >= state_format::proxy::MAX_STATES {
                    return Err(Error::InvalidArgument(format!(
                        "cannot register state `{}`: a keyed backend holds at most {} states",
                        meta.name,
                        state_format::proxy::MAX_STATES
                    )));
                }
                if let (true, Some(mut timers)) = (in_memory, self.source.heap_timers()) {
                    timers.register(&meta.name);
                    states.push(meta.clone());
                    return Ok(None);
                }
                if let Some(cut) = self.source.cuts().waiting() {
                    // Created now, the column family would be in the files of a cut taken
                    // before it: capture that cut first (its task reads the outcome).
                    let _ = cut.capture(db, None, &|| Ok(()));
                }
                let mut family = self.options.cf_options(&self.cache, meta.kind);
                self.source.inner.ttl_filters.install(&mut family, meta);
                db.create_cf(cf_name(&meta.name), &family)
                    .map_err(db_error(format_args!(
                        "creating the column family of state `{}`",
                        meta.name
                    )))?;
                states.push(meta.clone());
                if self.bulk_load {
                    set_family_options(db, &meta.name, BULK_LOAD)?;
                }
            }
        }
        match in_memory {
            true => Ok(None),
            false => cf(db, &meta.name).map(Some),
        }
    }

    /// The column family of registered state `name`, which must be of `kind`.
    pub(crate) fn state_cf(
        &self,
        name: &str,
        kind: StateKind,
    ) -> Result<Arc<BoundColumnFamily<'_>>> {
        let db = self.db()?;
        self.source.find_state(name, Some(kind))?;
        cf(db, name)
    }

    /// The composite key of the current key and `namespace` (and `user_key`) in a buffer.
    fn key(&self, namespace: &[u8], user_key: &[u8]) -> Result<Vec<u8>> {
        self.db()?;
        let current = self.current.as_ref().ok_or_else(Error::no_current_key)?;
        let namespace_len = u32::try_from(namespace.len())
            .map_err(|_| Error::InvalidArgument("namespaces must stay below 4 GiB".into()))?;
        let mut key =
            Vec::with_capacity(current.prefix.len() + 4 + namespace.len() + user_key.len());
        key.extend_from_slice(&current.prefix);
        key.extend_from_slice(&namespace_len.to_be_bytes());
        key.extend_from_slice(namespace);
        key.extend_from_slice(user_key);
        Ok(key)
    }

    /// Collects every entry of `cf` whose key starts with `prefix`, in key order.
    pub(crate) fn scan(
        &self,
        cf: &Arc<BoundColumnFamily<'_>>,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        let db = self.db()?;
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(prefix.to_vec());
        if let Some(end) = prefix_successor(prefix) {
            read.set_iterate_upper_bound(end);
        }
        let mut iter = db.raw_iterator_cf_opt(cf, read);
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            visit(key, value);
            iter.next();
        }
        iter.status().map_err(db_error("iterating"))
    }

    pub(crate) fn write(
        &self,
        what: &str,
        write: impl FnOnce(&DB, &WriteOptions) -> std::result::Result<(), rocksdb::Error>,
    ) -> Result<()> {
        write(self.db()?, &self.write_options).map_err(db_error(what))
    }
}

/// Column-family options while a restore writes: nothing is compacted (each entry would be
/// rewritten while the restore still writes) and no write waits for compactions.
const BULK_LOAD: &[(&str, &str)] = &[
    ("disable_auto_compactions", "true"),
    ("level0_slowdown_writes_trigger", "1000000"),
    ("level0_stop_writes_trigger", "1000000"),
    ("soft_pending_compaction_bytes_limit", "0"),
    ("hard_pending_compaction_bytes_limit", "0"),
];

/// The options [`BULK_LOAD`] changes, back at RocksDB's defaults, which
/// [`RocksDBOptions::cf_options`] keeps.
const AFTER_BULK_LOAD: &[(&str, &str)] = &[
    ("disable_auto_compactions", "false"),
    ("level0_slowdown_writes_trigger", "20"),
    ("level0_stop_writes_trigger", "36"),
    ("soft_pending_compaction_bytes_limit", "68719476736"),
    ("hard_pending_compaction_bytes_limit", "274877906944"),
];

fn set_family_options(db: &DB, state: &str, options: &[(&str, &str)]) -> Result<()> {
    db.set_options_cf(&cf(db, state)?, options)
        .map_err(db_error(format_args!(
            "setting the options of state `{state}`"
        )))
}

/// The column family of state `name` in `db`.
pub(crate) fn cf<'db>(db: &'db DB, name: &str) -> Result<Arc<BoundColumnFamily<'db>>> {
    db.cf_handle(&cf_name(name)).ok_or_else(|| Error::NotFound {
        what: format!("column family of state `{name}`"),
    })
}

/// The database directory under `working_dir` (or a temporary directory) and the temporary
/// directory to remove on close, if the backend made one.
fn db_directory(working_dir: Option<&Path>) -> Result<(PathBuf, Option<TempDir>)> {
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("rocksdb-");
        builder
    };
    let dir = match working_dir {
        Some(parent) => {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            builder()
                .tempdir_in(parent)
                .map_err(|e| Error::io(parent, e))?
        }
        None => builder()
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?,
    };
    Ok((dir.path().join("db"), Some(dir)))
}

impl CheckpointListener for RocksDBKeyedStateBackend {
    fn notify_checkpoint_complete(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        // Incremental checkpoints build on the last completed one; full ones record nothing.
        self.source.incremental().complete(checkpoint_id);
        Ok(())
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: CheckpointId) -> Result<()> {
        self.source.incremental().abort(checkpoint_id);
        Ok(())
    }
}

impl KeyedStateBackend for RocksDBKeyedStateBackend {
    fn backend_name(&self) -> &str {
        ROCKSDB
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.params.key_group_range
    }

    fn max_parallelism(&self) -> MaxParallelism {
        self.params.max_parallelism
    }

    fn register_state(&mut self, meta: &StateMetaInfo) -> Result<()> {
        self.register(meta).map(|_| ())
    }

    fn states(&self) -> Vec<StateMetaInfo> {
        self.source.states()
    }

    fn set_current_key(&mut self, key: &[u8]) -> Result<()> {
        self.db()?;
        let key_group = self.params.key_group_of(key)?;
        let key_len = u32::try_from(key.len())
            .map_err(|_| Error::InvalidArgument("keys must stay below 4 GiB".into()))?;
        let current = self
            .current
            .get_or_insert_with(|| CurrentKey { prefix: Vec::new() });
        current.prefix.clear();
        write_key_group_prefix(
            key_group.get(),
            self.composite.prefix_bytes(),
            &mut current.prefix,
        );
        current.prefix.extend_from_slice(&key_len.to_be_bytes());
        current.prefix.extend_from_slice(key);
        Ok(())
    }

    fn value(&self, state: &str, namespace: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.state_cf(state, StateKind::Value)?;
        let key = self.key(namespace, &[])?;
        let value = self
            .db()?
            .get_pinned_cf(&cf, &key)
            .map_err(db_error("reading"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put_value(&mut self, state: &str, namespace: &[u8], value: &[u8]) -> Result<()> {
        let cf = self.state_cf(state, StateKind::Value)?;
        let key = self.key(namespace, &[])?;
        self.write("writing", |db, opts| db.put_cf_opt(&cf, &key, value, opts))
    }

    fn list(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        let cf = self.state_cf(state, StateKind::List)?;
        let key = self.key(namespace, &[])?;
        let value = self
            .db()?
            .get_pinned_cf(&cf, &key)
            .map_err(db_error("reading"))?;
        match value {
            None => Ok(Vec::new()),
            Some(bytes) => Ok(decode_list(&bytes)?
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect()),
        }
    }

    fn append_to_list(&mut self, state: &str, namespace: &[u8], element: &[u8]) -> Result<()> {
        let cf = self.state_cf(state, StateKind::List)?;
        let key = self.key(namespace, &[])?;
        let mut operand = Vec::with_capacity(4 + element.len());
        encode_list([element], &mut operand)?;
        self.write("appending", |db, opts| {
            db.merge_cf_opt(&cf, &key, &operand, opts)
        })
    }

    fn update_list(&mut self, state: &str, namespace: &[u8], elements: &[Vec<u8>]) -> Result<()> {
        let cf = self.state_cf(state, StateKind::List)?;
        let key = self.key(namespace, &[])?;
        if elements.is_empty() {
            return self.write("deleting", |db, opts| db.delete_cf_opt(&cf, &key, opts));
        }
        let mut value = Vec::new();
        encode_list(elements.iter().map(Vec::as_slice), &mut value)?;
        self.write("writing", |db, opts| db.put_cf_opt(&cf, &key, &value, opts))
    }

    fn map_value(&self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.state_cf(state, StateKind::Map)?;
        let key = self.key(namespace, user_key)?;
        let value = self
            .db()?
            .get_pinned_cf(&cf, &key)
            .map_err(db_error("reading"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put_map_value(
        &mut self,
        state: &str,
        namespace: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let cf = self.state_cf(state, StateKind::Map)?;
        let key = self.key(namespace, user_key)?;
        self.write("writing", |db, opts| db.put_cf_opt(&cf, &key, value, opts))
    }

    fn remove_map_value(&mut self, state: &str, namespace: &[u8], user_key: &[u8]) -> Result<()> {
        let cf = self.state_cf(state, StateKind::Map)?;
        let key = self.key(namespace, user_key)?;
        self.write("deleting", |db, opts| db.delete_cf_opt(&cf, &key, opts))
    }

    fn map_entries(&self, state: &str, namespace: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = self.state_cf(state, StateKind::Map)?;
        let prefix = self.key(namespace, &[])?;
        let mut entries = Vec::new();
        self.scan(&cf, &prefix, |key, value| {
            entries.push((key[prefix.len()..].to_vec(), value.to_vec()));
        })?;
        Ok(entries)
    }

    fn clear(&mut self, state: &str, namespace: &[u8]) -> Result<()> {
        let kind = {
            let states = lock(&self.source.inner.states);
            states[state_format::find_state(states.iter(), state, None)?].kind
        };
        if kind == StateKind::PriorityQueue {
            return Err(not_keyed_state(state));
        }
        let cf = self.state_cf(state, kind)?;
        let key = self.key(namespace, &[])?;
        match kind {
            StateKind::Value | StateKind::List => {
                self.write("deleting", |db, opts| db.delete_cf_opt(&cf, &key, opts))
            }
            StateKind::Map => {
                let mut batch = WriteBatch::default();
                self.scan(&cf, &key, |entry_key, _| batch.delete_cf(&cf, entry_key))?;
                self.write("deleting", |db, opts| db.write_opt(batch, opts))
            }
            StateKind::PriorityQueue => Err(not_keyed_state(state)),
        }
    }

    fn keys(&self, state: &str, namespace: &[u8]) -> Result<Vec<Vec<u8>>> {
        let kind = {
            let states = lock(&self.source.inner.states);
            states[state_format::find_state(states.iter(), state, None)?].kind
        };
        if kind == StateKind::PriorityQueue {
            return Err(not_keyed_state(state));
        }
        let cf = self.state_cf(state, kind)?;
        let composite = self.composite;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut failure = None;
        self.scan(&cf, &[], |key, _| match composite.split(key) {
            Ok(parts) if parts.namespace == namespace => {
                if keys.last().map(Vec::as_slice) != Some(parts.key) {
                    keys.push(parts.key.to_vec());
                }
            }
            Ok(_) => {}
            Err(err) => {
                failure.get_or_insert(err);
            }
        })?;
        match failure {
            Some(err) => Err(err),
            None => Ok(keys),
        }
    }

    fn add_timer(&mut self, state: &str, timer: &Timer) -> Result<bool> {
        self.change_timer(state, timer, true)
    }

    fn remove_timer(&mut self, state: &str, timer: &Timer) -> Result<bool> {
        self.change_timer(state, timer, false)
    }

    fn peek_timer(&self, state: &str) -> Result<Option<Timer>> {
        self.peek(state)
    }

    fn poll_timers(&mut self, state: &str, until: i64, limit: usize) -> Result<Vec<Timer>> {
        self.poll(state, until, limit)
    }

    fn timer_count(&self, state: &str) -> Result<usize> {
        self.count(state)
    }

    fn timers_of(&self, state: &str, key_group: KeyGroup) -> Result<Vec<Timer>> {
        self.timers_in(state, key_group)
    }

    fn snapshot(
        &mut self,
        request: &SnapshotRequest,
        factory: Arc<dyn CheckpointStreamFactory>,
    ) -> Result<AsyncSnapshotTask<KeyedSnapshotResult>> {
        self.db()?;
        self.snapshots.snapshot(request, factory)
    }

    fn pending_snapshots(&self) -> usize {
        self.snapshots.pending()
    }

    fn close(&mut self) -> Result<()> {
        // Cancel running snapshots, then wait until every lease is back: only then is
        // nobody reading the database.
        let cancelled = self.snapshots.close();
        self.timer_queues.get_mut().clear();
        if let Some(mut timers) = self.source.heap_timers() {
            timers.clear();
        }
        self.source.inner.guard.close();
        lock(&self.source.inner.db).take();
        if let Some(db) = self.db.take() {
            db.cancel_all_background_work(true);
            drop(db);
        }
        if let Some(dir) = self.temp_dir.take() {
            let path = dir.path().to_path_buf();
            dir.close().map_err(|e| Error::io(path, e))?;
        }
        cancelled
    }
}

impl Drop for RocksDBKeyedStateBackend {
    fn drop(&mut self) {
        if self.db.is_some()
            && let Err(err) = self.close()
        {
            tracing::warn!(error = %err, "closing a dropped RocksDB backend failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(entries: &[(&str, &str)]) -> Result<RocksDBOptions> {
        let options: BTreeMap<String, String> = entries
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        RocksDBOptions::from_params(&options)
    }

    fn check_style(value: &str, expected: CompactionStyle) {
        let parsed = parse(&[("rocksdb.compaction.style", value)]).expect("a valid style parses");
        assert_eq!(parsed.compaction_style, expected, "`{value}`");
    }

    #[test]
    fn compaction_style_defaults_to_universal() {
        let parsed = parse(&[]).expect("no options parse");
        assert_eq!(parsed.compaction_style, CompactionStyle::Universal);
        assert_eq!(parsed, RocksDBOptions::default());
    }

    /// Compactions keep their priority unless the configuration says `low`; other values
    /// are refused, naming the option.
    #[test]
    fn compaction_priority_defaults_to_normal_and_parses_its_names() {
        assert_eq!(
            parse(&[]).expect("no options").compaction_priority,
            CompactionPriority::Normal
        );
        for (value, expected) in [
            ("normal", CompactionPriority::Normal),
            (" LOW ", CompactionPriority::Low),
        ] {
            let parsed = parse(&[("rocksdb.compaction.cpu-priority", value)]).expect(value);
            assert_eq!(parsed.compaction_priority, expected, "`{value}`");
        }
        let err = parse(&[("rocksdb.compaction.cpu-priority", "high")]).expect_err("high");
        assert!(
            err.to_string().contains("rocksdb.compaction.cpu-priority"),
            "{err}"
        );
    }

    #[test]
    fn compaction_style_universal_parses() {
        check_style("universal", CompactionStyle::Universal);
    }

    #[test]
    fn compaction_style_level_parses() {
        check_style("level", CompactionStyle::Level);
    }

    #[test]
    fn compaction_style_ignores_ascii_case() {
        check_style("UNIVERSAL", CompactionStyle::Universal);
        check_style("Level", CompactionStyle::Level);
    }

    #[test]
    fn compaction_style_round_trips_through_its_name() {
        for style in [CompactionStyle::Universal, CompactionStyle::Level] {
            check_style(&style.to_string(), style);
        }
    }

    #[test]
    fn an_unknown_compaction_style_is_refused_naming_the_accepted_ones() {
        for value in ["fifo", "leveled", ""] {
            let err = parse(&[("rocksdb.compaction.style", value)])
                .expect_err("an unknown style is refused");
            assert!(
                matches!(&err, Error::InvalidArgument(message)
                    if message.contains(&format!("`{value}`"))
                        && message.contains("`universal`")
                        && message.contains("`level`")),
                "{err}"
            );
        }
    }

    #[test]
    fn timer_service_factory_parses_flinks_names_and_refuses_others() {
        assert_eq!(
            parse(&[]).expect("defaults").timer_service_factory,
            TimerServiceFactory::RocksDB
        );
        for factory in TimerServiceFactory::ALL {
            let parsed = parse(&[("rocksdb.timer-service.factory", &factory.to_string())])
                .expect("every name parses");
            assert_eq!(parsed.timer_service_factory, factory);
        }
        let err = parse(&[("rocksdb.timer-service.factory", "memory")])
            .expect_err("an unknown factory is refused");
        assert!(
            err.to_string().contains("`heap`") && err.to_string().contains("`rocksdb`"),
            "{err}"
        );
    }

    #[test]
    fn sst_compression_parses_its_names_and_refuses_others() {
        for compression in SstCompression::ALL {
            let parsed = parse(&[(
                "rocksdb.compression",
                &compression.to_string().to_uppercase(),
            )])
            .expect("every name parses, in any case");
            assert_eq!(parsed.compression, compression);
        }
        assert_eq!(
            parse(&[]).expect("defaults").compression,
            SstCompression::Lz4
        );
        let err = parse(&[("rocksdb.compression", "gzip")]).expect_err("gzip is refused");
        let message = err.to_string();
        assert!(
            message.contains("`gzip`") && message.contains("`zstd`") && message.contains("`none`"),
            "{message}"
        );
    }

    /// The newest `OPTIONS-*` file RocksDB wrote for the database of `backend`.
    fn persisted_options(backend: &RocksDBKeyedStateBackend) -> String {
        let dir = backend.snapshot_source().db_path();
        let newest = std::fs::read_dir(dir)
            .expect("the database directory exists while the backend is open")
            .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
            .filter_map(|name| {
                let number = name
                    .to_str()?
                    .strip_prefix("OPTIONS-")?
                    .parse::<u64>()
                    .ok()?;
                Some((number, name))
            })
            .max()
            .expect("RocksDB writes an OPTIONS file when it opens a database");
        std::fs::read_to_string(dir.join(newest.1)).expect("the OPTIONS file reads")
    }

    /// The options RocksDB persisted for the column family of state `state`.
    fn state_options(backend: &RocksDBKeyedStateBackend, state: &str) -> String {
        let persisted = persisted_options(backend);
        let section = persisted
            // The options file escapes the `:` of the column family name.
            .split(&format!("[CFOptions \"state\\:{state}\"]"))
            .nth(1)
            .unwrap_or_else(|| panic!("no options section of the state in:\n{persisted}"));
        section.split("\n[").next().unwrap_or(section).to_owned()
    }

    #[test]
    fn a_bulk_load_compacts_nothing_until_it_ends() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut backend = open(dir.path(), &[]);
        backend.begin_bulk_load();
        backend
            .register_state(&StateMetaInfo::value("counts", "void", "bytes"))
            .expect("the state registers");
        let loading = state_options(&backend, "counts");
        assert!(
            loading.contains("disable_auto_compactions=true"),
            "{loading}"
        );
        assert!(
            loading.contains("level0_stop_writes_trigger=1000000"),
            "{loading}"
        );
        backend.end_bulk_load().expect("the options change back");
        // Back at what a state registered without a load has: RocksDB's defaults.
        backend
            .register_state(&StateMetaInfo::value("later", "void", "bytes"))
            .expect("the state registers");
        let (after, later) = (
            state_options(&backend, "counts"),
            state_options(&backend, "later"),
        );
        for (option, value) in AFTER_BULK_LOAD {
            let setting = format!("{option}={value}");
            assert!(
                after.contains(&setting) && later.contains(&setting),
                "{setting}: {after}"
            );
        }
        backend.close().expect("the backend closes");
    }

    /// A backend of all 128 key groups working in `dir`, with `options`.
    fn open(dir: &std::path::Path, options: &[(&str, &str)]) -> RocksDBKeyedStateBackend {
        crate::link();
        let mut params = KeyedBackendParams::new(
            MaxParallelism::new(128).expect("128 is a valid max parallelism"),
            KeyGroupRange::new(0, 127).expect("0..=127 is a valid range"),
        );
        params.working_dir = Some(dir.to_path_buf());
        for (key, value) in options {
            params.options.insert((*key).into(), (*value).into());
        }
        RocksDBKeyedStateBackend::new(params, Registry::global()).expect("the backend opens")
    }

    fn check_persisted_style(value: Option<&str>, expected: &str) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let style = value.map(|value| ("rocksdb.compaction.style", value));
        let mut backend = open(dir.path(), style.as_slice());
        backend
            .register_state(&StateMetaInfo::value("counts", "void", "bytes"))
            .expect("the state registers");
        let section = state_options(&backend, "counts");
        assert!(
            section.contains(&format!("compaction_style={expected}")),
            "{section}"
        );
        backend.close().expect("the backend closes");
    }

    #[test]
    fn the_default_compaction_style_reaches_rocksdb() {
        check_persisted_style(None, "kCompactionStyleUniversal");
    }

    #[test]
    fn the_level_compaction_style_reaches_rocksdb() {
        check_persisted_style(Some("level"), "kCompactionStyleLevel");
    }
}

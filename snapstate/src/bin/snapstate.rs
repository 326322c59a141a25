//! `snapstate`: lists, inspects and verifies the checkpoints of a local checkpoint
//! directory or of checkpoint storage on object storage, and lists the plugins this binary
//! links.
//!
//! ```text
//! snapstate list DIR
//! snapstate inspect DIR [--checkpoint N]     # default: the latest committed checkpoint
//! snapstate verify DIR [--checkpoint N]      # default: every committed checkpoint
//! snapstate verify s3://bucket/prefix [--option s3.endpoint=http://127.0.0.1:9000]
//! snapstate gc DIR|URL [--dry-run] [--no-other-writer]
//! snapstate plugins
//! ```
//!
//! Every command prints aligned tables, or one JSON document on stdout with `--json`.
//! Exit codes: 0 success, 1 `verify` found problems, 2 the command failed (the error is on
//! stderr as `error: ...`).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use snapstate::inspect::{
    self, CheckpointReport, HandleDetail, HandleSummary, KeyedHeader, LeftoverKind, Listing,
    VerifyReport,
};

/// Inspect snapstate checkpoint directories (the storage root given to
/// LocalCheckpointStorage, or one chk-<id> directory in it) and checkpoint storage on
/// object storage (s3://bucket/prefix).
#[derive(Debug, Parser)]
#[command(name = "snapstate", version)]
struct Cli {
    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// Object storage settings for an `s3://` location, as KEY=VALUE with the `s3.*` keys
    /// of the configuration (`s3.endpoint=http://127.0.0.1:9000`, `s3.region=...`);
    /// credentials unset here come from the `AWS_*` environment variables. Repeatable.
    #[arg(long = "option", global = true, value_name = "KEY=VALUE")]
    options: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the checkpoints: committed ones with their handles, and incomplete ones.
    List {
        /// The storage root, or one chk-<id> directory in it; or the URL of checkpoint
        /// storage on object storage (s3://bucket/prefix), or one chk-<id> under it.
        dir: String,
    },
    /// Show one checkpoint's handles: headers, key-group offsets and checksums, files.
    Inspect {
        /// The storage root, or one chk-<id> directory in it; or the URL of checkpoint
        /// storage on object storage (s3://bucket/prefix), or one chk-<id> under it.
        dir: String,
        /// The checkpoint to inspect (default: the latest committed one).
        #[arg(long)]
        checkpoint: Option<u64>,
    },
    /// Re-read every key group, file and partition and check their checksums; exits with
    /// 1 when a problem is found.
    Verify {
        /// The storage root, or one chk-<id> directory in it; or the URL of checkpoint
        /// storage on object storage (s3://bucket/prefix), or one chk-<id> under it.
        dir: String,
        /// The checkpoint to verify (default: every committed one).
        #[arg(long)]
        checkpoint: Option<u64>,
    },
    /// Remove what crashed or cancelled writers left behind: files of checkpoints that
    /// never completed and shared files no committed checkpoint refers to. Beside a
    /// running job (a local directory another process has claimed, or object storage,
    /// which cannot be claimed) only files of checkpoints up to the latest committed one
    /// go, never those of a checkpoint still being written.
    Gc {
        /// The storage root; or the URL of checkpoint storage on object storage
        /// (s3://bucket/prefix).
        dir: String,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// No job writes into the storage now (needed for object storage to remove the
        /// files of checkpoints newer than the latest committed one).
        #[arg(long)]
        no_other_writer: bool,
    },
    /// List the plugins this binary links: backends, strategies, decorators.
    Plugins,
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    Inspect(snapstate::Error),
    /// An error of the checkpoint storage at a location.
    Storage(String, snapstate::api::Error),
    Output(io::Error),
    Usage(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Inspect(err) => write!(f, "{err}"),
            Failure::Storage(location, err) => write!(f, "checkpoint storage `{location}`: {err}"),
            Failure::Output(err) => write!(f, "cannot write the output: {err}"),
            Failure::Usage(message) => write!(f, "{message}"),
        }
    }
}

impl From<snapstate::Error> for Failure {
    fn from(err: snapstate::Error) -> Self {
        Failure::Inspect(err)
    }
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Failure::Output(err)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = run(&cli, &mut out).and_then(|code| {
        out.flush()?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(Failure::Output(err)) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(2),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

/// A local directory, or a URL (`scheme://...`) on object storage reached with `options`.
fn location(dir: &str, options: &[String]) -> Result<inspect::Location, Failure> {
    if !dir.contains("://") {
        if !options.is_empty() {
            return Err(Failure::Usage(format!(
                "--option applies to object storage URLs, and `{dir}` is a local directory"
            )));
        }
        return Ok(inspect::Location::Dir(PathBuf::from(dir)));
    }
    object_location(dir, options)
}

#[cfg(feature = "object-storage")]
fn object_location(url: &str, options: &[String]) -> Result<inspect::Location, Failure> {
    let pairs = options
        .iter()
        .map(|option| {
            option
                .split_once('=')
                .ok_or_else(|| Failure::Usage(format!("--option `{option}`: expected KEY=VALUE")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = snapstate::object_storage::ObjectStoreOptions::from_pairs(pairs)
        .map_err(|err| Failure::Usage(format!("--option: {err}")))?;
    Ok(inspect::Location::Object {
        url: url.to_owned(),
        options: Box::new(options),
    })
}

#[cfg(not(feature = "object-storage"))]
fn object_location(url: &str, _options: &[String]) -> Result<inspect::Location, Failure> {
    Err(Failure::Usage(format!(
        "`{url}` is on object storage, and this snapstate was built without the object-storage feature"
    )))
}

fn run(cli: &Cli, out: &mut dyn Write) -> Result<ExitCode, Failure> {
    let registry = snapstate::registry();
    match &cli.command {
        Command::List { dir } => {
            let listing = inspect::list(location(dir, &cli.options)?)?;
            match cli.json {
                true => json(out, &listing)?,
                false => print_listing(out, &listing)?,
            }
        }
        Command::Inspect { dir, checkpoint } => {
            let report = inspect::inspect(location(dir, &cli.options)?, *checkpoint, registry)?;
            match cli.json {
                true => json(out, &report)?,
                false => print_report(out, &report)?,
            }
        }
        Command::Verify { dir, checkpoint } => {
            let report = inspect::verify(location(dir, &cli.options)?, *checkpoint, registry)?;
            match cli.json {
                true => json(out, &report)?,
                false => print_verification(out, &report)?,
            }
            if !report.is_ok() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Gc {
            dir,
            dry_run,
            no_other_writer,
        } => {
            let report = gc(dir, &cli.options, *dry_run, *no_other_writer)?;
            match cli.json {
                true => json(out, &report)?,
                false => print_gc(out, &report)?,
            }
        }
        Command::Plugins => {
            let plugins = Plugins::of(registry);
            match cli.json {
                true => json(out, &plugins)?,
                false => print_plugins(out, &plugins)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `gc` prints.
#[derive(Debug, Serialize)]
struct GcReport {
    location: String,
    dry_run: bool,
    /// `exclusive` (every unreferenced file goes) or `possible` (a job may be writing).
    writers: &'static str,
    /// Why another writer is assumed, when it is.
    writer_note: Option<String>,
    committed: Vec<u64>,
    removed: Vec<GcFile>,
    removed_bytes: u64,
    kept: Vec<GcFile>,
}

#[derive(Debug, Serialize)]
struct GcFile {
    path: String,
    size: u64,
}

fn gc(
    dir: &str,
    options: &[String],
    dry_run: bool,
    no_other_writer: bool,
) -> Result<GcReport, Failure> {
    use snapstate::api::{CheckpointStorage, Error as StateError, JobId};
    use snapstate::coordinator::{Writers, collect_garbage, find_garbage};
    let failed = |err| Failure::Storage(dir.to_owned(), err);
    let storage: Box<dyn CheckpointStorage> = match location(dir, options)? {
        inspect::Location::Dir(path) => {
            Box::new(snapstate::LocalCheckpointStorage::open(&path).map_err(failed)?)
        }
        #[cfg(feature = "object-storage")]
        inspect::Location::Object { url, options } => Box::new(
            snapstate::object_storage::ObjectCheckpointStorage::open(&url, *options)
                .map_err(failed)?,
        ),
        other => return Err(Failure::Usage(format!("gc cannot clean {other:?}"))),
    };
    let job = JobId::new("snapstate-gc").map_err(failed)?;
    // Held until the clean-up is over: no job starts writing meanwhile.
    let claim = match storage.claim(&job) {
        Ok(claim) => Ok(claim),
        Err(StateError::InUse { holder, .. }) => Err(format!("the storage is in use by {holder}")),
        Err(err) => return Err(failed(err)),
    };
    let (writers, writer_note) = match (&claim, no_other_writer) {
        (_, true) => (Writers::Exclusive, None),
        (Ok(claim), false) if claim.is_enforced() => (Writers::Exclusive, None),
        (Ok(_), false) => (
            Writers::Possible,
            Some("the storage cannot be claimed: a job may be writing (--no-other-writer if none is)".to_owned()),
        ),
        (Err(note), false) => (Writers::Possible, Some(note.clone())),
    };
    let garbage = match dry_run {
        true => find_garbage(&*storage, writers),
        false => collect_garbage(&*storage, writers),
    }
    .map_err(failed)?;
    let files = |files: &[snapstate::api::StoredFile]| {
        files
            .iter()
            .map(|f| GcFile {
                path: f.path.clone(),
                size: f.size,
            })
            .collect()
    };
    Ok(GcReport {
        location: storage.location(),
        dry_run,
        writers: match writers {
            Writers::Exclusive => "exclusive",
            Writers::Possible => "possible",
        },
        writer_note,
        committed: garbage.committed.iter().map(|id| id.get()).collect(),
        removed: files(&garbage.files),
        removed_bytes: garbage.bytes(),
        kept: files(&garbage.kept),
    })
}

fn print_gc(out: &mut dyn Write, report: &GcReport) -> io::Result<()> {
    writeln!(out, "storage root: {}", report.location)?;
    let committed: Vec<String> = report.committed.iter().map(u64::to_string).collect();
    writeln!(
        out,
        "committed checkpoints: {}",
        match committed.is_empty() {
            true => "none".to_owned(),
            false => committed.join(", "),
        }
    )?;
    if let Some(note) = &report.writer_note {
        writeln!(
            out,
            "{note}: only files of checkpoints up to the latest committed one are removed"
        )?;
    }
    let verb = match report.dry_run {
        true => "would remove",
        false => "removed",
    };
    writeln!(
        out,
        "{verb} {} ({} bytes)",
        plural(report.removed.len(), "file", "files"),
        report.removed_bytes
    )?;
    for file in &report.removed {
        writeln!(out, "  {} ({} bytes)", file.path, file.size)?;
    }
    if !report.kept.is_empty() {
        writeln!(
            out,
            "kept {} of checkpoints newer than the latest committed one (maybe still being written)",
            plural(report.kept.len(), "file", "files")
        )?;
        for file in &report.kept {
            writeln!(out, "  {} ({} bytes)", file.path, file.size)?;
        }
    }
    Ok(())
}

fn json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// What `plugins` prints.
#[derive(Debug, Serialize)]
struct Plugins {
    plugins: Vec<Plugin>,
    /// Registration failures (duplicate names), rendered.
    conflicts: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Plugin {
    kind: String,
    name: String,
    registered_by: String,
    description: String,
}

impl Plugins {
    fn of(registry: &snapstate::Registry) -> Self {
        Plugins {
            plugins: registry
                .plugins()
                .into_iter()
                .map(|p| Plugin {
                    kind: p.kind.to_string(),
                    name: p.name,
                    registered_by: p.registered_by,
                    description: p.description,
                })
                .collect(),
            conflicts: registry.conflicts().iter().map(|e| e.to_string()).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

/// Rows printed with every column padded to its widest cell; the last column is not
/// padded, so long text there does not widen the table.
struct Table {
    indent: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(indent: usize, headers: &[&str]) -> Self {
        Table {
            indent,
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = " ".repeat(self.indent);
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn key_groups(summary: &HandleSummary) -> String {
    match summary.key_group_range {
        Some(range) if range.is_empty() => "empty".to_owned(),
        Some(range) => format!("{}..={}", range.start(), range.end()),
        None => "-".to_owned(),
    }
}

fn properties(properties: &std::collections::BTreeMap<String, String>) -> String {
    match properties.is_empty() {
        true => "-".to_owned(),
        false => properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// `ms` since the Unix epoch as an RFC 3339 UTC time.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

fn print_listing(out: &mut dyn Write, listing: &Listing) -> io::Result<()> {
    writeln!(out, "storage root: {}", listing.root.display())?;
    if listing.checkpoints.is_empty() {
        writeln!(out, "no committed checkpoint")?;
    } else {
        writeln!(out)?;
        let mut table = Table::new(
            0,
            &[
                "ID",
                "TYPE",
                "TRIGGERED (UTC)",
                "MAX PARALLELISM",
                "INSTANCES",
                "HANDLES",
                "SIZE (BYTES)",
                "PROPERTIES",
            ],
        );
        for c in &listing.checkpoints {
            table.row(vec![
                c.checkpoint_id.to_string(),
                inspect::checkpoint_type_str(c.checkpoint_type).to_owned(),
                utc(c.timestamp),
                c.max_parallelism.to_string(),
                c.instances.to_string(),
                c.handles.len().to_string(),
                c.state_size.to_string(),
                properties(&c.properties),
            ]);
        }
        table.print(out)?;
        writeln!(out)?;
        let mut handles = Table::new(
            0,
            &[
                "CHECKPOINT",
                "INSTANCE",
                "HANDLE",
                "KIND",
                "KEY GROUPS",
                "SIZE (BYTES)",
            ],
        );
        for c in &listing.checkpoints {
            for h in &c.handles {
                handles.row(vec![
                    c.checkpoint_id.to_string(),
                    h.instance.to_string(),
                    h.handle.clone(),
                    h.kind.to_string(),
                    key_groups(h),
                    h.state_size.to_string(),
                ]);
            }
        }
        handles.print(out)?;
    }
    for incomplete in &listing.incomplete {
        writeln!(
            out,
            "incomplete: checkpoint {} ({}) has no _metadata: in progress, or abandoned",
            incomplete.checkpoint_id,
            incomplete.directory.display()
        )?;
    }
    for unreadable in &listing.unreadable {
        writeln!(
            out,
            "unreadable: checkpoint {}: {}",
            unreadable.checkpoint_id, unreadable.error
        )?;
    }
    Ok(())
}

fn print_header(out: &mut dyn Write, header: &KeyedHeader) -> io::Result<()> {
    writeln!(
        out,
        "  header: format version {}, key serializer `{}`, compression `{}` ({})",
        header.version,
        header.key_serializer,
        header.compression,
        match header.compression_linked {
            true => "linked",
            false => "NOT linked: the data cannot be decoded by this binary",
        }
    )?;
    let mut states = Table::new(
        4,
        &[
            "ID",
            "STATE",
            "KIND",
            "NAMESPACE",
            "USER KEY",
            "VALUE",
            "TTL",
        ],
    );
    for s in &header.states {
        states.row(vec![
            s.id.to_string(),
            s.name.clone(),
            s.kind.to_string(),
            s.namespace_serializer.clone(),
            match s.user_key_serializer.is_empty() {
                true => "-".to_owned(),
                false => s.user_key_serializer.clone(),
            },
            s.value_serializer.clone(),
            s.time_to_live_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
        ]);
    }
    states.print(out)
}

fn print_report(out: &mut dyn Write, report: &CheckpointReport) -> io::Result<()> {
    let s = &report.summary;
    writeln!(
        out,
        "{} {} in {}",
        inspect::checkpoint_type_str(s.checkpoint_type),
        s.checkpoint_id,
        s.directory.display()
    )?;
    writeln!(
        out,
        "triggered {}, max parallelism {}, {}, {} bytes",
        utc(s.timestamp),
        s.max_parallelism,
        plural(s.instances, "instance", "instances"),
        s.state_size
    )?;
    writeln!(out, "properties: {}", properties(&s.properties))?;
    for handle in &report.handles {
        let h = &handle.summary;
        writeln!(out)?;
        writeln!(
            out,
            "instance {}, {}: {}, key groups {}, {} bytes",
            h.instance,
            h.handle,
            h.kind,
            key_groups(h),
            h.state_size
        )?;
        match &handle.detail {
            HandleDetail::KeyGroups(detail) => {
                writeln!(out, "  stream: {}", detail.stream)?;
                if let Some(header) = &detail.header {
                    print_header(out, header)?;
                }
                if let Some(err) = &detail.header_error {
                    writeln!(out, "  header: cannot be read: {err}")?;
                }
                let mut rows = Table::new(4, &["KEY GROUP", "OFFSET", "LENGTH", "CRC-32C"]);
                for row in &detail.key_groups {
                    rows.row(vec![
                        row.key_group.to_string(),
                        row.offset.to_string(),
                        or_dash(row.length),
                        or_dash(row.checksum.map(|crc| format!("{crc:08x}"))),
                    ]);
                }
                rows.print(out)?;
            }
            HandleDetail::IncrementalRemote(detail) => {
                writeln!(
                    out,
                    "  backend identifier `{}`, checkpoint {}",
                    detail.backend_identifier, detail.checkpoint_id
                )?;
                writeln!(out, "  meta stream: {}", detail.meta_stream)?;
                if let Some(header) = &detail.header {
                    print_header(out, header)?;
                }
                if let Some(err) = &detail.meta_error {
                    writeln!(out, "  meta stream: cannot be read: {err}")?;
                }
                let mut files = Table::new(
                    4,
                    &[
                        "FILE",
                        "SCOPE",
                        "SIZE",
                        "MANIFEST SIZE",
                        "MANIFEST CRC-32C",
                        "STORED AS",
                    ],
                );
                for f in &detail.files {
                    files.row(vec![
                        f.local_path.clone(),
                        f.scope.to_string(),
                        f.size.to_string(),
                        or_dash(f.manifest_size),
                        or_dash(f.manifest_crc.map(|crc| format!("{crc:08x}"))),
                        f.stream.clone(),
                    ]);
                }
                files.print(out)?;
                for name in &detail.missing_from_handle {
                    writeln!(
                        out,
                        "  the manifest lists `{name}`, which the handle does not carry"
                    )?;
                }
            }
            HandleDetail::Operator(detail) => {
                writeln!(out, "  stream: {}", detail.stream)?;
                let mut states = Table::new(4, &["STATE", "MODE", "PARTITIONS"]);
                for state in &detail.states {
                    states.row(vec![
                        state.name.clone(),
                        state.mode.to_string(),
                        state.partitions.to_string(),
                    ]);
                }
                states.print(out)?;
            }
            HandleDetail::Opaque => {
                writeln!(out, "  (a handle kind the inspector cannot look into)")?;
            }
        }
    }
    Ok(())
}

fn print_verification(out: &mut dyn Write, report: &VerifyReport) -> io::Result<()> {
    writeln!(out, "storage root: {}", report.root.display())?;
    let mut table = Table::new(
        0,
        &[
            "CHECKPOINT",
            "INSTANCE",
            "HANDLE",
            "KIND",
            "ENTRIES",
            "PROBLEMS",
            "CHECKED",
        ],
    );
    let mut handles = 0;
    let mut unverified = 0;
    for checkpoint in &report.checkpoints {
        for h in &checkpoint.handles {
            handles += 1;
            unverified += usize::from(!h.verified);
            table.row(vec![
                checkpoint.checkpoint_id.to_string(),
                h.summary.instance.to_string(),
                h.summary.handle.clone(),
                h.summary.kind.to_string(),
                h.entries.to_string(),
                h.problems.to_string(),
                h.checked.clone(),
            ]);
        }
    }
    writeln!(out)?;
    table.print(out)?;
    for skipped in &report.skipped {
        writeln!(
            out,
            "skipped: checkpoint {} has no _metadata (in progress, or abandoned)",
            skipped.checkpoint_id
        )?;
    }
    if let Some(leftovers) = report.leftovers.as_ref().filter(|l| !l.is_empty()) {
        let bytes = leftovers
            .iter()
            .fold(0u64, |total, l| total.saturating_add(l.size.unwrap_or(0)));
        writeln!(out)?;
        writeln!(
            out,
            "leftovers: {} ({bytes} bytes) that no restore reads, left by crashed or cancelled writers:",
            plural(leftovers.len(), "file", "files")
        )?;
        for leftover in leftovers {
            let why = match leftover.kind {
                LeftoverKind::InProgress => "in progress or abandoned",
                LeftoverKind::Unreferenced => "referenced by no committed checkpoint",
            };
            writeln!(out, "  {} ({why})", leftover.path)?;
        }
    }
    if !report.problems.is_empty() {
        writeln!(out)?;
        writeln!(out, "problems:")?;
        for problem in &report.problems {
            writeln!(out, "  [{}] {problem}", problem.kind)?;
        }
    }
    writeln!(out)?;
    let verdict = match report.problems.len() {
        0 => "OK".to_owned(),
        n => plural(n, "PROBLEM", "PROBLEMS"),
    };
    write!(
        out,
        "{verdict}: {} and {} checked",
        plural(report.checkpoints.len(), "checkpoint", "checkpoints"),
        plural(handles, "handle", "handles"),
    )?;
    match unverified {
        0 => writeln!(out),
        n => writeln!(
            out,
            " ({} of a kind the inspector cannot read)",
            plural(n, "handle", "handles")
        ),
    }
}

fn print_plugins(out: &mut dyn Write, plugins: &Plugins) -> io::Result<()> {
    let mut table = Table::new(0, &["KIND", "NAME", "REGISTERED BY", "DESCRIPTION"]);
    for p in &plugins.plugins {
        table.row(vec![
            p.kind.clone(),
            p.name.clone(),
            p.registered_by.clone(),
            p.description.clone(),
        ]);
    }
    table.print(out)?;
    for conflict in &plugins.conflicts {
        writeln!(out, "conflict: {conflict}")?;
    }
    Ok(())
}

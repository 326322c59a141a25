//! The job's process killed with SIGKILL from outside at random moments (while it restores,
//! processes, checkpoints, commits or cleans up), again and again, each time resumed by a
//! new process. After every kill the recovery the job starts with
//! (`CheckpointCoordinator::recover`) leaves exactly what the committed checkpoints read:
//! `snapstate verify` passes with no leftover file and no incomplete checkpoint. Every run
//! that gets to the end has exactly the counts of the stream computed directly, read back
//! from the transactions its sink committed across all the killed runs before it (one
//! work directory serves every job: a job resumed keeps its output, a fresh one starts
//! without): each window fired once, and the keyed state ends empty.
//!
//! `SNAPSTATE_KILLS` sets the number of kills per configuration (default 50, 20 on object
//! storage), `SNAPSTATE_KILL_SEED` replays the moments of a failed run (printed on failure).

#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use snapstate::api::CheckpointStorage;
use snapstate::config::StateConfig;
use snapstate::coordinator::{CheckpointCoordinator, Writers};
use snapstate::inspect::{self, Location};

/// The events of one job: enough that most kills land before its end.
const EVENTS: u64 = 200_000;
const CHECKPOINT_EVERY: u64 = 2_000;

/// A small deterministic generator of kill moments (xorshift64*).
struct Moments(u64);

impl Moments {
    fn seeded(label: &str) -> (Self, u64) {
        let seed = match std::env::var("SNAPSTATE_KILL_SEED") {
            Ok(seed) => seed.parse().expect("SNAPSTATE_KILL_SEED is a number"),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        println!("{label}: SNAPSTATE_KILL_SEED={seed}");
        (Moments(seed | 1), seed)
    }

    /// A delay from 10 to 800 ms.
    fn next_delay(&mut self) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let random = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        Duration::from_millis(10 + random % 790)
    }
}

/// Where one job keeps its checkpoints.
enum Storage {
    Local(PathBuf),
    #[cfg(feature = "object-storage")]
    S3 {
        endpoint: String,
        url: String,
    },
}

impl Storage {
    /// The configuration settings that point the job at this storage.
    fn settings(&self) -> Vec<(String, String)> {
        match self {
            Storage::Local(dir) => vec![(
                "execution.checkpointing.dir".to_owned(),
                dir.display().to_string(),
            )],
            #[cfg(feature = "object-storage")]
            Storage::S3 { endpoint, url } => vec![
                ("execution.checkpointing.dir".to_owned(), url.clone()),
                ("s3.endpoint".to_owned(), endpoint.clone()),
                ("s3.region".to_owned(), "us-east-1".to_owned()),
                ("s3.access-key".to_owned(), s3::ACCESS_KEY.to_owned()),
                ("s3.secret-key".to_owned(), s3::SECRET_KEY.to_owned()),
            ],
        }
    }

    fn location(&self) -> Location {
        match self {
            Storage::Local(dir) => Location::Dir(dir.clone()),
            #[cfg(feature = "object-storage")]
            Storage::S3 { endpoint, url } => Location::Object {
                url: url.clone(),
                options: Box::new(s3::options(endpoint)),
            },
        }
    }
}

/// One configuration under test: backend settings and a fresh storage per job.
struct Target<'a> {
    label: &'a str,
    backend: &'a [(&'a str, &'a str)],
    storage: &'a dyn Fn(u32) -> Storage,
    kills: usize,
}

impl Target<'_> {
    fn settings(&self, storage: &Storage) -> Vec<(String, String)> {
        let backend = self.backend.iter();
        let mut settings: Vec<(String, String)> = backend
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        settings.extend(storage.settings());
        settings
    }

    fn config(&self, storage: &Storage) -> StateConfig {
        let settings = self.settings(storage);
        StateConfig::from_pairs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
    }
}

/// A process of the job, resuming from the latest checkpoint if there is one.
fn job(target: &Target<'_>, storage: &Storage, work: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_windowed-counts"));
    command
        .args(["--events", &EVENTS.to_string()])
        .args([
            "--users",
            "5000",
            "--window-ms",
            "20000",
            "--parallelism",
            "2",
        ])
        .args(["--checkpoint-every", &CHECKPOINT_EVERY.to_string()])
        .args(["--job-id", "killed-job", "--resume-if-any"])
        .arg("--work-dir")
        .arg(work)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in target.settings(storage) {
        command.arg("--set").arg(format!("{key}={value}"));
    }
    command
}

/// Checks a finished process: it succeeded with the stream's exact counts, each window
/// fired once, and no window left in the keyed state.
fn assert_exact(output: &std::process::Output, context: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success()
            && stdout.contains("matches the stream computed directly: true")
            && stdout.contains("the keyed state holds 0 counts and 0 timers"),
        "{context}: {:?}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Recovers `storage` as the job does when it starts, then checks that it holds exactly
/// what its committed checkpoints read. Returns the number of files recovery removed.
fn recover_and_check(target: &Target<'_>, storage: &Storage, context: &str) -> usize {
    let config = target.config(storage);
    let checkpoints: Arc<dyn CheckpointStorage> = config.storage().unwrap();
    let coordination = config.coordinator_config(NonZeroU32::new(2).unwrap());
    let recovered =
        CheckpointCoordinator::recover(checkpoints.clone(), coordination, Writers::Exclusive)
            .unwrap_or_else(|err| panic!("{context}: recovery failed: {err}"));
    assert!(
        recovered.cleanup_errors.is_empty(),
        "{context}: {:?}",
        recovered.cleanup_errors
    );
    let removed = recovered.garbage.files.len();
    drop(recovered);
    if checkpoints.completed_checkpoints().unwrap().is_empty() {
        // Killed before its first checkpoint: nothing of it may be left.
        let files = checkpoints.list_files().unwrap();
        assert!(
            files.iter().all(|f| f.path == "shared/"),
            "{context}: left without any checkpoint: {files:?}"
        );
        return removed;
    }
    let report = inspect::verify(storage.location(), None, snapstate::registry())
        .unwrap_or_else(|err| panic!("{context}: verify failed: {err}"));
    assert!(
        report.problems.is_empty(),
        "{context}: {:?}",
        report.problems
    );
    assert!(
        report.skipped.is_empty(),
        "{context}: incomplete {:?}",
        report.skipped
    );
    let leftovers = report
        .leftovers
        .expect("every committed checkpoint is readable");
    assert!(leftovers.is_empty(), "{context}: {leftovers:?}");
    removed
}

/// Kills the job `target.kills` times at random moments, resuming it each time, then runs
/// it to the end.
fn kill_again_and_again(target: &Target<'_>) {
    let (mut moments, seed) = Moments::seeded(target.label);
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (mut jobs, mut kills, mut finished, mut removed) = (0, 0, 0, 0);
    let mut storage = (target.storage)(jobs);
    while kills < target.kills {
        let context = format!(
            "{} (SNAPSTATE_KILL_SEED={seed}), job {jobs} after {kills} kills",
            target.label
        );
        let mut child = job(target, &storage, work.path()).spawn().unwrap();
        std::thread::sleep(moments.next_delay());
        // SIGKILL: nothing is flushed, closed or cleaned up.
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            // It got to the end first: a fresh job in fresh storage goes on.
            assert_exact(&output, &context);
            finished += 1;
            jobs += 1;
            storage = (target.storage)(jobs);
            continue;
        }
        assert_eq!(
            output.status.code(),
            None,
            "{context}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        kills += 1;
        removed += recover_and_check(target, &storage, &context);
    }
    let context = format!("{} (SNAPSTATE_KILL_SEED={seed}), last run", target.label);
    let output = job(target, &storage, work.path()).output().unwrap();
    assert_exact(&output, &context);
    recover_and_check(target, &storage, &context);
    println!(
        "{}: {kills} kills, {finished} runs to the end before the last, {removed} files removed by recovery, {:.1} s",
        target.label,
        started.elapsed().as_secs_f64()
    );
}

fn kills(default: usize) -> usize {
    std::env::var("SNAPSTATE_KILLS").map_or(default, |kills| kills.parse().unwrap())
}

fn local(backend: &[(&str, &str)], label: &str) {
    let root = tempfile::tempdir().unwrap();
    let storage = |job: u32| Storage::Local(root.path().join(format!("job-{job}")));
    kill_again_and_again(&Target {
        label,
        backend,
        storage: &storage,
        kills: kills(50),
    });
}

#[test]
fn heap_survives_kills_at_any_moment() {
    local(&[("state.backend.type", "heap")], "heap");
}

#[test]
fn heap_incremental_survives_kills_at_any_moment() {
    local(
        &[
            ("state.backend.type", "heap"),
            ("execution.checkpointing.incremental", "true"),
        ],
        "heap-incremental",
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_full_survives_kills_at_any_moment() {
    local(&[("state.backend.type", "rocksdb")], "rocksdb-full");
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_incremental_survives_kills_at_any_moment() {
    local(
        &[
            ("state.backend.type", "rocksdb"),
            ("execution.checkpointing.incremental", "true"),
        ],
        "rocksdb-incremental",
    );
}

#[cfg(feature = "object-storage")]
#[path = "../../../state-storage-object/tests/support/mod.rs"]
mod s3;

#[cfg(feature = "object-storage")]
fn on_s3(backend: &[(&str, &str)], label: &str) {
    let Some(server) = s3::MotoServer::start(label) else {
        return;
    };
    let bucket = server.fresh_bucket("kills");
    let storage = |job: u32| Storage::S3 {
        endpoint: server.endpoint(),
        url: format!("s3://{bucket}/job-{job}"),
    };
    kill_again_and_again(&Target {
        label,
        backend,
        storage: &storage,
        kills: kills(20),
    });
}

#[cfg(feature = "object-storage")]
#[test]
fn heap_on_s3_survives_kills_at_any_moment() {
    on_s3(&[("state.backend.type", "heap")], "heap on s3");
}

#[cfg(all(feature = "object-storage", feature = "rocksdb"))]
#[test]
fn rocksdb_incremental_on_s3_survives_kills_at_any_moment() {
    on_s3(
        &[
            ("state.backend.type", "rocksdb"),
            ("execution.checkpointing.incremental", "true"),
        ],
        "rocksdb-incremental on s3",
    );
}

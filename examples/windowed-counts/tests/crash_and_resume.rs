//! The job killed mid-stream and resumed from its last completed checkpoint, with another
//! parallelism, ends with exactly the result of a run that was never killed, on every
//! backend the build links.

#![allow(clippy::unwrap_used)]

use snapstate::config::StateConfig;
use snapstate_example_windowed_counts::{JobSpec, Outcome, expected, run};

fn spec() -> JobSpec {
    JobSpec {
        events: 30_000,
        users: 500,
        window_ms: 20_000,
        parallelism: 2,
        checkpoint_every: 4_000,
        crash_after: None,
        resume: false,
        kill_process: false,
    }
}

/// A fresh directory, the configuration `settings` with its checkpoints there, and a label
/// for messages.
fn setup(settings: &[(&str, &str)]) -> (tempfile::TempDir, StateConfig, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StateConfig::from_pairs(settings.iter().copied()).unwrap();
    config.checkpoint_dir = Some(dir.path().join("checkpoints"));
    (dir, config, format!("{settings:?}"))
}

/// Runs `job`, which must crash after `crash_after` events; returns the last checkpoint
/// completed before the crash.
fn crash(
    job: JobSpec,
    crash_after: u64,
    config: &StateConfig,
    dir: &tempfile::TempDir,
    label: &str,
) -> Option<u64> {
    let crashed = run(
        &JobSpec {
            crash_after: Some(crash_after),
            ..job
        },
        config,
        dir.path().join("work"),
    )
    .unwrap();
    let Outcome::Crashed {
        processed,
        last_checkpoint,
    } = crashed
    else {
        panic!("{label}: the run did not crash: {crashed:?}");
    };
    assert_eq!(processed, crash_after, "{label}");
    last_checkpoint
}

/// Resumes the job with `parallelism` instances and runs it to the end: its counts must be
/// the stream's.
fn finish(parallelism: u32, config: &StateConfig, dir: &tempfile::TempDir, label: &str) {
    let finished = run(
        &JobSpec {
            resume: true,
            parallelism,
            ..spec()
        },
        config,
        dir.path().join("work"),
    )
    .unwrap();
    match finished {
        Outcome::Finished(counts) => assert!(
            counts == expected(&spec()),
            "{label}: the resumed job's counts differ from the stream's"
        ),
        other => panic!("{label}: {other:?}"),
    }
}

fn check(settings: &[(&str, &str)]) {
    let (dir, config, label) = setup(settings);
    let last_checkpoint = crash(spec(), 13_500, &config, &dir, &label);
    assert!(
        last_checkpoint.is_some(),
        "{label}: no checkpoint completed before the crash"
    );
    // Resumed with three instances, then killed again, then resumed with one.
    let resumed = JobSpec {
        resume: true,
        parallelism: 3,
        ..spec()
    };
    crash(resumed, 9_000, &config, &dir, &label);
    finish(1, &config, &dir, &label);
}

#[test]
fn heap_resumes_with_the_same_result() {
    check(&[("state.backend.type", "heap")]);
}

#[test]
fn heap_with_snappy_sections_resumes_with_the_same_result() {
    check(&[
        ("state.backend.type", "heap"),
        ("execution.checkpointing.snapshot-compression", "snappy"),
    ]);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_incremental_resumes_with_the_same_result() {
    check(&[
        ("state.backend.type", "rocksdb"),
        ("execution.checkpointing.incremental", "true"),
    ]);
}

/// Crashes just after a checkpoint was triggered, while its asynchronous part is most
/// likely still running: that checkpoint is cut off (never committed, not an error) and
/// the job resumes from the one before it.
fn crash_with_a_checkpoint_in_flight(settings: &[(&str, &str)]) {
    let (dir, config, label) = setup(settings);
    let last_checkpoint = crash(spec(), 3 * spec().checkpoint_every, &config, &dir, &label);
    assert!(last_checkpoint <= Some(3), "{label}: {last_checkpoint:?}");
    finish(spec().parallelism, &config, &dir, &label);
}

#[test]
fn heap_crash_with_a_checkpoint_in_flight() {
    crash_with_a_checkpoint_in_flight(&[("state.backend.type", "heap")]);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_incremental_crash_with_a_checkpoint_in_flight() {
    crash_with_a_checkpoint_in_flight(&[
        ("state.backend.type", "rocksdb"),
        ("execution.checkpointing.incremental", "true"),
    ]);
}

#[test]
fn an_uninterrupted_run_matches_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let config = StateConfig {
        checkpoint_dir: Some(dir.path().join("checkpoints")),
        ..StateConfig::default()
    };
    match run(&spec(), &config, dir.path().join("work")).unwrap() {
        Outcome::Finished(counts) => {
            assert_eq!(counts.values().sum::<u64>(), 30_000);
            assert!(counts == expected(&spec()));
        }
        other => panic!("{other:?}"),
    }
}

/// The process itself is killed (it exits at once, closing nothing, while the
/// checkpointing thread may be uploading), and a new process resumes.
#[test]
fn a_killed_process_resumes_in_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let job = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_windowed-counts"))
            .arg("--dir")
            .arg(dir.path())
            .args([
                "--events",
                "30000",
                "--users",
                "500",
                "--window-ms",
                "20000",
            ])
            .args(["--checkpoint-every", "4000"])
            .args(args)
            .output()
            .unwrap()
    };
    let killed = job(&["--crash-after", "17000", "--kill"]);
    assert_eq!(
        killed.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let resumed = job(&["--resume", "--parallelism", "3"]);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success() && stdout.contains("matches the stream computed directly: true"),
        "{stdout}{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

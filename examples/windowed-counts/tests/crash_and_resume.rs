//! The job killed mid-stream and resumed from its last completed checkpoint, with another
//! parallelism, ends with exactly the result of a run that was never killed, on every
//! backend the build links: every window fires once (a window committed twice fails the
//! run, one never fired shows as a difference from the stream computed directly), and the
//! keyed state holds only the windows still open, none at the end.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use snapstate::api::CheckpointId;
use snapstate::api::{CheckpointStorage, JobId};
use snapstate::config::StateConfig;
use snapstate_example_windowed_counts::{
    Held, JobSpec, NothingToResume, Outcome, OutputError, Report, Resume, expected, run, user_of,
};

fn spec() -> JobSpec {
    JobSpec {
        job_id: JobId::new("windowed-counts-test").unwrap(),
        events: 30_000,
        users: 500,
        window_ms: 20_000,
        parallelism: 2,
        checkpoint_every: 4_000,
        crash_after: None,
        resume: Resume::No,
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

/// The (user, window)s a job holds after applying events `0..offset`: those of the last
/// event's window, the only one the watermark has not passed.
fn open_windows(spec: &JobSpec, offset: u64) -> usize {
    let window = |event: u64| event * 7 / spec.window_ms;
    let last = window(offset - 1);
    let users = (0..offset)
        .filter(|&event| window(event) == last)
        .map(|event| user_of(event, spec.users));
    users.collect::<BTreeSet<_>>().len()
}

/// Runs `job`, which must crash after `crash_after` events; returns the last checkpoint
/// completed before the crash. A job started from the beginning must hold exactly the
/// windows still open then: the ones fired were cleared.
fn crash(
    job: JobSpec,
    crash_after: u64,
    config: &StateConfig,
    dir: &tempfile::TempDir,
    label: &str,
) -> Option<u64> {
    let fresh = job.resume == Resume::No;
    let report = run(
        &JobSpec {
            crash_after: Some(crash_after),
            ..job.clone()
        },
        config,
        dir.path().join("work"),
    )
    .unwrap();
    let Outcome::Crashed {
        processed,
        last_checkpoint,
    } = report.outcome
    else {
        panic!("{label}: the run did not crash: {:?}", report.outcome);
    };
    assert_eq!(processed, crash_after, "{label}");
    assert_eq!(report.held.timers, report.held.counts, "{label}");
    if fresh {
        assert_eq!(
            report.held.counts,
            open_windows(&job, crash_after),
            "{label}: the keyed state holds windows other than the open ones"
        );
    }
    last_checkpoint.map(CheckpointId::get)
}

/// Checks a finished run: every window fired once with the stream's count, and the keyed
/// state holds nothing.
fn assert_exact(report: &Report, spec: &JobSpec, label: &str) {
    match &report.outcome {
        Outcome::Finished(counts) => assert!(
            *counts == expected(spec),
            "{label}: the committed counts differ from the stream's: {} windows, {} expected",
            counts.len(),
            expected(spec).len()
        ),
        other => panic!("{label}: {other:?}"),
    }
    assert_eq!(
        report.held,
        Held::default(),
        "{label}: state left after the end"
    );
}

/// Resumes the job with `parallelism` instances and runs it to the end: its counts must be
/// the stream's.
fn finish(parallelism: u32, config: &StateConfig, dir: &tempfile::TempDir, label: &str) {
    let report = run(
        &JobSpec {
            resume: Resume::IfAny,
            parallelism,
            ..spec()
        },
        config,
        dir.path().join("work"),
    )
    .unwrap_or_else(|err| panic!("{label}: {err}"));
    assert_exact(&report, &spec(), label);
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
        resume: Resume::Latest,
        parallelism: 3,
        ..spec()
    };
    crash(resumed, 9_000, &config, &dir, &label);
    finish(1, &config, &dir, &label);
    // What the crashes cut off was discarded, older checkpoints were subsumed: the storage
    // holds the last checkpoint and exactly the files it reads.
    let report =
        snapstate::inspect::verify(dir.path().join("checkpoints"), None, snapstate::registry())
            .unwrap();
    assert_eq!(report.checkpoints.len(), 1, "{label}: {report:?}");
    assert!(report.problems.is_empty(), "{label}: {:?}", report.problems);
    assert!(
        report.skipped.is_empty(),
        "{label}: incomplete {:?}",
        report.skipped
    );
    let leftovers = report.leftovers.expect("a local directory is listed");
    assert!(leftovers.is_empty(), "{label}: {leftovers:?}");
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
    let report = run(&spec(), &config, dir.path().join("work")).unwrap();
    assert_eq!(report.restored_from, None);
    assert_exact(&report, &spec(), "uninterrupted");
    let Outcome::Finished(counts) = report.outcome else {
        unreachable!("checked above")
    };
    assert_eq!(counts.values().sum::<u64>(), 30_000);
}

/// The final checkpoint committed the last rows: resuming a finished job replays no event
/// and fires no window again.
#[test]
fn a_finished_job_resumed_fires_nothing_again() {
    let (dir, config, label) = setup(&[("state.backend.type", "heap")]);
    let first = run(&spec(), &config, dir.path().join("work")).unwrap();
    assert_exact(&first, &spec(), &label);
    let storage = config.storage().unwrap();
    let last = *storage.completed_checkpoints().unwrap().last().unwrap();
    let again = JobSpec {
        resume: Resume::Latest,
        parallelism: 3,
        ..spec()
    };
    let report = run(&again, &config, dir.path().join("work")).unwrap();
    assert_eq!(report.restored_from, Some(last), "{label}");
    assert_exact(&report, &spec(), &label);
}

/// A job started from the beginning does not count what an earlier run committed to the
/// same work directory; a resumed one keeps it.
#[test]
fn a_run_from_the_beginning_starts_with_empty_output() {
    let (dir, config, label) = setup(&[("state.backend.type", "heap")]);
    let first = run(&spec(), &config, dir.path().join("work")).unwrap();
    assert_exact(&first, &spec(), &label);
    let shorter = JobSpec {
        events: 10_000,
        ..spec()
    };
    let report = run(&shorter, &config, dir.path().join("work")).unwrap();
    assert_exact(&report, &shorter, &label);
}

/// A job crashed near the end of its stream, and the output files of the transactions
/// committed before the crash.
fn crashed_with_output() -> (tempfile::TempDir, StateConfig, Vec<std::path::PathBuf>) {
    let (dir, config, label) = setup(&[("state.backend.type", "heap")]);
    crash(spec(), 29_000, &config, &dir, &label);
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("work/output"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_none())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{label}: nothing committed before the crash"
    );
    (dir, config, files)
}

fn resume_latest(
    dir: &tempfile::TempDir,
    config: &StateConfig,
) -> snapstate_example_windowed_counts::JobResult<Report> {
    let resumed = JobSpec {
        resume: Resume::Latest,
        ..spec()
    };
    run(&resumed, config, dir.path().join("work"))
}

/// A window in the output twice, as a second firing would put it there, fails the run.
#[test]
fn a_window_fired_twice_fails_the_run() {
    let (dir, config, files) = crashed_with_output();
    std::fs::copy(&files[0], dir.path().join("work/output/txn-999")).unwrap();
    let err = resume_latest(&dir, &config).unwrap_err();
    let output = err
        .downcast_ref::<OutputError>()
        .unwrap_or_else(|| panic!("{err}"));
    assert!(matches!(output, OutputError::FiredTwice { .. }), "{output}");
    assert!(err.to_string().contains("fired twice"), "{err}");
}

/// A window missing from the output, as one never fired would be, differs from the stream.
#[test]
fn a_window_never_fired_shows_in_the_comparison() {
    let (dir, config, files) = crashed_with_output();
    // The first row of a committed transaction goes; committing the transaction again on
    // resume skips the file, which is there.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    std::fs::write(&files[0], rest).unwrap();
    let fields: Vec<u64> = first
        .split(' ')
        .map(|field| field.parse().unwrap())
        .collect();
    let report = resume_latest(&dir, &config).unwrap();
    let Outcome::Finished(mut counts) = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_ne!(counts, expected(&spec()));
    counts.insert((fields[0], fields[1]), fields[2]);
    assert!(
        counts == expected(&spec()),
        "only the removed window differs"
    );
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
        resumed.status.success()
            && stdout.contains("matches the stream computed directly: true")
            && stdout.contains("the keyed state holds 0 counts and 0 timers"),
        "{stdout}{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

/// A job that crashed after checkpoint `>= 1`, in a fresh directory: its directory,
/// configuration and label.
fn crashed_job() -> (tempfile::TempDir, StateConfig, String) {
    let (dir, config, label) = setup(&[("state.backend.type", "heap")]);
    let last = crash(spec(), 9_000, &config, &dir, &label);
    assert!(last.is_some(), "{label}: no checkpoint before the crash");
    (dir, config, label)
}

#[test]
fn resuming_where_nothing_is_stored_says_so() {
    let (dir, config, _) = setup(&[("state.backend.type", "heap")]);
    let strict = JobSpec {
        resume: Resume::Latest,
        ..spec()
    };
    let err = run(&strict, &config, dir.path().join("work")).unwrap_err();
    assert!(err.downcast_ref::<NothingToResume>().is_some(), "{err}");
    let lenient = JobSpec {
        resume: Resume::IfAny,
        ..spec()
    };
    let report = run(&lenient, &config, dir.path().join("work")).unwrap();
    assert_eq!(report.restored_from, None, "started from the beginning");
    assert_exact(&report, &spec(), "lenient");
}

#[test]
fn a_resumed_run_names_the_checkpoint_it_restored() {
    let (dir, config, label) = crashed_job();
    let storage = config.storage().unwrap();
    let latest = *storage.completed_checkpoints().unwrap().last().unwrap();
    let Report { restored_from, .. } = run(
        &JobSpec {
            resume: Resume::Latest,
            ..spec()
        },
        &config,
        dir.path().join("work"),
    )
    .unwrap();
    assert_eq!(restored_from, Some(latest), "{label}");
}

#[test]
fn another_jobs_checkpoints_are_not_resumed() {
    let (dir, config, _) = crashed_job();
    let other = JobSpec {
        job_id: JobId::new("someone-else").unwrap(),
        resume: Resume::Latest,
        ..spec()
    };
    let err = run(&other, &config, dir.path().join("work"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("windowed-counts-test") && err.contains("someone-else"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_of_another_max_parallelism_is_not_restored() {
    let (dir, mut config, _) = crashed_job();
    config.set("pipeline.max-parallelism", "64").unwrap();
    let err = run(
        &JobSpec {
            resume: Resume::Latest,
            ..spec()
        },
        &config,
        dir.path().join("work"),
    )
    .unwrap_err();
    let api = err
        .downcast_ref::<snapstate::api::Error>()
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        matches!(api, snapstate::api::Error::Incompatible { .. }),
        "{api}"
    );
    let message = api.to_string();
    assert!(
        message.contains("128") && message.contains("64"),
        "{message}"
    );
}

#[test]
fn a_second_job_on_the_same_directory_is_refused() {
    let (dir, config, _) = setup(&[("state.backend.type", "heap")]);
    let storage = config.storage().unwrap();
    let held = storage.claim(&JobId::new("first-job").unwrap()).unwrap();
    assert!(held.is_enforced(), "a local directory locks");
    let err = run(&spec(), &config, dir.path().join("work"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by job first-job"), "{err}");
    drop(held);
    let report = run(&spec(), &config, dir.path().join("work")).unwrap();
    assert_exact(&report, &spec(), "after the first job");
}

#[test]
fn a_directory_that_cannot_be_written_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"a file").unwrap();
    let config = StateConfig {
        checkpoint_dir: Some(blocker.join("checkpoints")),
        ..StateConfig::default()
    };
    let err = run(&spec(), &config, dir.path().join("work"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&*blocker.to_string_lossy()), "{err}");
}

#[test]
fn the_command_line_tells_nothing_to_resume_from_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let job = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_windowed-counts"))
            .arg("--dir")
            .arg(dir.path().join("missing"))
            .args(["--events", "2000", "--checkpoint-every", "500"])
            .args(args)
            .output()
            .unwrap()
    };
    let strict = job(&["--resume"]);
    assert_eq!(
        strict.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&strict.stderr)
    );
    assert!(String::from_utf8_lossy(&strict.stderr).contains("nothing to resume"));
    let lenient = job(&["--resume-if-any"]);
    let stdout = String::from_utf8_lossy(&lenient.stdout);
    assert!(
        lenient.status.success() && stdout.contains("started from the beginning"),
        "{stdout}"
    );
    // The latest checkpoint the lenient run committed (a trigger while one is still
    // running is skipped, so its id depends on the machine's speed).
    let latest = std::fs::read_dir(dir.path().join("missing"))
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_prefix("chk-")?
                .parse::<u64>()
                .ok()?;
            path.join("_metadata").exists().then_some(id)
        })
        .max()
        .expect("the lenient run committed a checkpoint");
    let resumed = job(&["--resume"]);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    // The lenient run ended with a final checkpoint: resumed from it, the job replays
    // nothing and its output is still the stream's.
    assert!(
        resumed.status.success()
            && stdout.contains(&format!("resumed from checkpoint {latest}\n"))
            && stdout.contains("matches the stream computed directly: true"),
        "{stdout}{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

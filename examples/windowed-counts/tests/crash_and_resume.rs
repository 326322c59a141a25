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
    }
}

fn check(settings: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StateConfig::from_pairs(settings.iter().copied()).unwrap();
    config.checkpoint_dir = Some(dir.path().join("checkpoints"));
    let label = format!("{settings:?}");

    let crashed = run(
        &JobSpec {
            crash_after: Some(13_500),
            ..spec()
        },
        &config,
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
    assert_eq!(processed, 13_500, "{label}");
    assert!(
        last_checkpoint.is_some(),
        "{label}: no checkpoint completed before the crash"
    );

    // Resumed with three instances, then killed again, then resumed with one.
    let again = run(
        &JobSpec {
            resume: true,
            parallelism: 3,
            crash_after: Some(9_000),
            ..spec()
        },
        &config,
        dir.path().join("work"),
    )
    .unwrap();
    assert!(
        matches!(again, Outcome::Crashed { .. }),
        "{label}: {again:?}"
    );
    let finished = run(
        &JobSpec {
            resume: true,
            parallelism: 1,
            ..spec()
        },
        &config,
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

//! `windowed-counts`: runs the windowed-counts job (see the library) from the command line.
//! Fired windows are committed as transaction files to `<work dir>/output`; a finished run
//! reads them back, checks them against the stream computed directly and that the keyed
//! state holds no window any more.
//!
//! ```sh
//! windowed-counts --dir /tmp/job --crash-after 60000 --kill        # killed after 60,000 events
//! windowed-counts --dir /tmp/job --resume --parallelism 3          # resumes, rescaled to 3
//! windowed-counts --dir /tmp/job --resume-if-any                    # resumes if there is a checkpoint
//! windowed-counts --dir /tmp/job2 --set state.backend.type=rocksdb --set execution.checkpointing.incremental=true
//! windowed-counts --set execution.checkpointing.dir=s3://bucket/job --work-dir /tmp/work   # object storage
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use snapstate::api::JobId;
use snapstate::config::StateConfig;
use snapstate_example_windowed_counts::{
    Held, JobSpec, NothingToResume, Outcome, Report, Resume, expected, run,
};

#[derive(Debug, Parser)]
#[command(
    name = "windowed-counts",
    about = "windowed counts with checkpoints, crash and resume"
)]
struct Cli {
    /// Checkpoint directory (overrides the configuration's).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the backends keep their working files and the job commits its output, in
    /// `output/` (default: the checkpoint directory's `work/`; required when checkpoints go
    /// to object storage). Keep it for a resumed run: its output is the job's so far.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// A TOML state configuration (state.backend.type, execution.checkpointing.*, ...).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A configuration key=value, applied after --config.
    #[arg(long = "set")]
    settings: Vec<String>,
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    #[arg(long, default_value_t = 5_000)]
    users: u64,
    #[arg(long, default_value_t = 60_000)]
    window_ms: u64,
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    #[arg(long, default_value_t = 25_000)]
    checkpoint_every: u64,
    /// Stop abruptly after this many events (a kill).
    #[arg(long)]
    crash_after: Option<u64>,
    /// Resume from the last completed checkpoint in the directory; exit status 3 when
    /// there is none.
    #[arg(long, conflicts_with = "resume_if_any")]
    resume: bool,
    /// Resume from the last completed checkpoint if there is one, else start from the
    /// beginning (the output says which).
    #[arg(long)]
    resume_if_any: bool,
    /// The job's identity, recorded in its checkpoints: resuming another job's checkpoints
    /// is refused.
    #[arg(long, default_value = "windowed-counts")]
    job_id: String,
    /// With --crash-after: end the process at once, as a kill does (exit status 137).
    #[arg(long)]
    kill: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = (|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut config = match &cli.config {
            Some(path) => StateConfig::from_file(path)?,
            None => StateConfig::default(),
        };
        for setting in &cli.settings {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| format!("--set {setting}: expected key=value"))?;
            config.set(key, value)?;
        }
        if let Some(dir) = &cli.dir {
            config.checkpoint_dir = Some(dir.clone());
        }
        let work_dir = match (
            &cli.work_dir,
            &config.checkpoint_dir,
            &config.checkpoint_url,
        ) {
            (Some(work_dir), _, _) => work_dir.clone(),
            (None, Some(dir), _) => dir.join("work"),
            (None, None, Some(_)) => {
                return Err("checkpoints on object storage need --work-dir".into());
            }
            (None, None, None) => return Err("give --dir or execution.checkpointing.dir".into()),
        };
        let spec = JobSpec {
            job_id: JobId::new(cli.job_id.clone())?,
            events: cli.events,
            users: cli.users,
            window_ms: cli.window_ms,
            parallelism: cli.parallelism,
            checkpoint_every: cli.checkpoint_every,
            crash_after: cli.crash_after,
            resume: match (cli.resume, cli.resume_if_any) {
                (true, _) => Resume::Latest,
                (false, true) => Resume::IfAny,
                (false, false) => Resume::No,
            },
            kill_process: cli.kill,
        };
        let Report {
            restored_from,
            cleaned,
            held,
            outcome,
        } = run(&spec, &config, work_dir.clone())?;
        match restored_from {
            Some(id) => println!("resumed from checkpoint {id}"),
            None => println!("started from the beginning of the stream"),
        }
        if !cleaned.files.is_empty() {
            println!(
                "removed {} files ({} bytes) a crash left in the checkpoint storage",
                cleaned.files.len(),
                cleaned.bytes()
            );
        }
        match outcome {
            Outcome::Crashed {
                processed,
                last_checkpoint,
            } => println!(
                "killed after {processed} events, {} (window, user) counts open; last completed checkpoint: {}",
                held.counts,
                last_checkpoint.map_or("none".to_owned(), |id| id.to_string())
            ),
            Outcome::Finished(counts) => {
                let total: u64 = counts.values().sum();
                let same = counts == expected(&spec);
                println!(
                    "{} (window, user) counts fired, each once, over {total} events, committed to {}; matches the stream computed directly: {same}",
                    counts.len(),
                    work_dir.join("output").display()
                );
                println!(
                    "the keyed state holds {} counts and {} timers",
                    held.counts, held.timers
                );
                if !same {
                    return Err("the result differs from the stream computed directly".into());
                }
                if held != Held::default() {
                    return Err(
                        "windows were left in the keyed state after the end of the stream".into(),
                    );
                }
            }
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            match err.downcast_ref::<NothingToResume>() {
                Some(_) => ExitCode::from(3),
                None => ExitCode::FAILURE,
            }
        }
    }
}

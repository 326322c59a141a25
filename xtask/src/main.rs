//! `cargo xtask`: how users and maintainers drive the snapstate workspace.
//!
//! - `cargo xtask demo`: the main job: every linked keyed backend filled, checkpointed
//!   (incrementally where it can), crashed, restored, rescaled 1 -> 4 -> 2 and its
//!   savepoint moved to another backend, on local directory storage.
//! - `cargo xtask bench`: `../shared/BENCHMARK.md`'s workload for every linked keyed
//!   strategy, in release mode, as JSON lines and a table.
//! - `cargo xtask ci`: what CI runs after installing system packages: formatting, lints,
//!   docs and every test.
//! - `cargo xtask dist`: release binaries in a tarball with checksums and a manifest.
//!
//! Every command first makes sure the machine has what the build needs (see `setup.rs`).
//! The `xtask` binary that `cargo xtask` builds links no backend, so it builds before
//! `clang` is installed; `demo` and `bench` then run themselves again as a release build
//! with feature `engines`, which links every backend (RocksDB among them).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "engines")]
mod bench;
mod ci;
#[cfg(feature = "engines")]
mod counting;
#[cfg(feature = "engines")]
mod demo;
mod dist;
#[cfg(feature = "engines")]
mod job;
mod setup;
#[cfg(test)]
mod tidy;
#[cfg(feature = "engines")]
mod timer_bench;
#[cfg(feature = "engines")]
mod workload;

/// Result of an xtask step; errors are printed by `main`.
type DynResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "snapstate workspace tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo on local directory storage.
    Demo {
        /// Directory for the checkpoint files (default: a fresh temporary directory, kept).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Number of keys to fill each backend with.
        #[arg(long, default_value_t = 200_000)]
        keys: u64,
    },
    /// Run the snapshot benchmark (BENCHMARK.md) in release mode.
    #[cfg(feature = "engines")]
    Bench(bench::BenchArgs),
    /// Run the snapshot benchmark (BENCHMARK.md) in release mode.
    #[cfg(not(feature = "engines"))]
    Bench {
        /// The benchmark's options (`--n`, `--v`, `--s`, `--backend`, `--kind`,
        /// `--compression`, `--dir`, `--storage`, `--s3-endpoint`, `--out`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// One benchmark configuration in this process (used by `bench`).
    #[cfg(feature = "engines")]
    #[command(hide = true)]
    BenchOne(bench::OneArgs),
    /// Check formatting, lints and docs, then run every test.
    Ci,
    /// Build release binaries and a tarball with checksums and a manifest.
    Dist(dist::DistArgs),
}

/// Runs this command again as a release build with every backend linked.
#[cfg(not(feature = "engines"))]
fn with_engines() -> DynResult {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!(
        "building the task in release mode with every backend linked (`cargo run --release --package xtask --features engines`): the first build compiles RocksDB's C++ sources, about 25 minutes on 2 cores; later builds take seconds"
    );
    let status = std::process::Command::new(cargo)
        .args(["run", "--release", "--package", "xtask"])
        .args(["--features", "engines", "--"])
        .args(std::env::args_os().skip(1))
        .status()?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("the release build of the task failed ({status})").into()),
    }
}

fn run(command: Command) -> DynResult {
    match command {
        Command::Ci => ci::run(),
        Command::Dist(args) => dist::run(args),
        #[cfg(feature = "engines")]
        Command::Demo { dir, keys } => demo::run(dir, keys),
        #[cfg(feature = "engines")]
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "engines")]
        Command::BenchOne(args) => bench::run_one(args),
        #[cfg(not(feature = "engines"))]
        Command::Demo { .. } | Command::Bench { .. } => with_engines(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = setup::ensure_system_packages().and_then(|()| run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

//! `cargo xtask`: how users and maintainers drive the snapstate workspace.
//!
//! - `cargo xtask demo`: the main job: shows the linked plugins and writes and restores a
//!   small keyed snapshot through every linked compression decorator, on local directory
//!   storage.
//! - `cargo xtask ci`: what CI runs after installing system packages: formatting, lints,
//!   docs and every test.
//!
//! Both first make sure the machine has what the build needs (see `setup.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ci;
mod demo;
mod setup;
#[cfg(test)]
mod tidy;

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
        /// Number of keys to fill the backend with.
        #[arg(long, default_value_t = 20_000)]
        keys: u64,
    },
    /// Check formatting, lints and docs, then run every test.
    Ci,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { dir, keys } => {
            setup::ensure_system_packages().and_then(|()| demo::run(dir, keys))
        }
        Command::Ci => setup::ensure_system_packages().and_then(|()| ci::run()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

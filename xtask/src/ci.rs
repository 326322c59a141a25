//! `cargo xtask ci`: formatting, lints, docs, then every test, with every feature (tests
//! last, so the test summary closes the output).

use std::process::Command;

use crate::DynResult;

fn cargo(args: &[&str], env: &[(&str, &str)]) -> DynResult {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()?;
    if !status.success() {
        return Err(format!("`cargo {}` failed ({status})", args.join(" ")).into());
    }
    Ok(())
}

/// Runs the whole check suite; stops at the first failure.
pub(crate) fn run() -> DynResult {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    // Every feature: the demo and the benchmark (xtask's `engines`) and every plugin of the
    // facade are compiled, linted and tested too.
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    cargo(&["test", "--workspace", "--all-features"], &[])?;
    Ok(())
}

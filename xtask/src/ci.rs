//! `cargo xtask ci`: formatting, lints, docs, then every test (tests last, so the test
//! summary closes the output).

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
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    cargo(&["test", "--workspace"], &[])?;
    Ok(())
}

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

/// Checks, from cargo's own dependency graph, that an application depending on the facade
/// with feature `heap` only builds neither RocksDB nor an async runtime (and that
/// `rocksdb` and `object-storage` do, so the check looks at the right thing).
fn heap_only_builds_nothing_heavy() -> DynResult {
    let tree = |features: &str| -> DynResult<String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args(["tree", "--package", "snapstate", "--edges", "normal,build"])
            .args(["--no-default-features", "--features", features])
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "`cargo tree --features {features}` failed ({})",
                output.status
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    eprintln!("$ cargo tree --package snapstate --no-default-features --features heap");
    let heap = tree("heap")?;
    for heavy in ["librocksdb-sys", "tokio", "object_store"] {
        if heap.contains(heavy) {
            return Err(format!("snapstate with feature `heap` only depends on {heavy}").into());
        }
    }
    if !tree("object-storage")?.contains("object_store") {
        return Err(
            "snapstate with feature `object-storage` does not depend on object_store".into(),
        );
    }
    if !tree("rocksdb")?.contains("librocksdb-sys") {
        return Err("snapstate with feature `rocksdb` does not depend on librocksdb-sys".into());
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
    heap_only_builds_nothing_heavy()?;
    cargo(&["test", "--workspace", "--all-features"], &[])?;
    Ok(())
}

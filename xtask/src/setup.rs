//! Makes sure the machine has what the build needs before a task runs.
//!
//! The RocksDB bindings need `clang` and `libclang`; on a Debian machine where we run as
//! root they are installed with `apt-get`, elsewhere the missing packages are named.

use std::process::Command;

use crate::DynResult;

/// Debian packages the workspace build needs.
const PACKAGES: &[&str] = &["clang", "libclang-dev"];

fn installed(package: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", package])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Installs missing system packages when possible, or says which are missing.
pub(crate) fn ensure_system_packages() -> DynResult {
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("note: not a Debian system; make sure clang and libclang are installed");
        return Ok(());
    }
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "missing system packages: {} (install them with `sudo apt-get install -y {}`)",
            missing.join(", "),
            missing.join(" ")
        )
        .into());
    }
    eprintln!("installing {}", missing.join(" "));
    let update = Command::new("apt-get").arg("update").status()?;
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .status()?;
    if !update.success() || !install.success() {
        return Err(format!("apt-get could not install {}", missing.join(" ")).into());
    }
    Ok(())
}

//! `cargo xtask dist`: release assembly.
//!
//! Builds the `snapstate` command-line tool in release mode with the selected plugin
//! features, asks the built binary which plugins it links (`snapstate plugins --json`), and
//! writes into the output directory:
//!
//! | file | holds |
//! |---|---|
//! | `snapstate-<version>-<target>.tar.gz` | `snapstate-<version>/bin/snapstate`, `README.md`, `ARCHITECTURE.md`, `manifest.json`, `SHA256SUMS` |
//! | `snapstate-<version>-<target>.tar.gz.sha256` | the tarball's SHA-256, in `sha256sum` format |
//!
//! `manifest.json` names the version, the target, the features and every linked plugin
//! (kind, name, crate); `SHA256SUMS` inside the tarball covers every other file in it. The
//! packed binary has its debug information stripped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::DynResult;

/// What `cargo xtask dist` builds.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DistArgs {
    /// Plugin features of the `snapstate` package to link (comma-separated: heap,
    /// operator, rocksdb, snappy, lz4, or full).
    #[arg(long, default_value = "full")]
    features: String,
    /// Output directory (default: `<target dir>/dist`).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn workspace_root() -> DynResult<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "xtask lives one level below the workspace root".into())
}

/// Builds the binary; returns its path (from cargo's own build messages).
fn build(features: &str) -> DynResult<PathBuf> {
    let output = cargo()
        .args([
            "build",
            "--release",
            "--package",
            "snapstate",
            "--bin",
            "snapstate",
        ])
        .args(["--features", &format!("cli,{features}")])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("building snapstate failed ({})", output.status).into());
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
        .next_back()
        .ok_or_else(|| "cargo reported no snapstate executable".into())
}

fn host_target() -> DynResult<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc).arg("-vV").output()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV names no host".into())
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Adds `bytes` as `path` (mode `mode`) to the tarball.
fn append(
    archive: &mut tar::Builder<impl std::io::Write>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> DynResult {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_cksum();
    archive.append_data(&mut header, path, bytes)?;
    Ok(())
}

/// The binary without debug information (RocksDB's C++ objects carry most of it), through
/// binutils' `strip` where it is installed; the binary as built where it is not.
fn stripped(binary: &Path) -> DynResult<Vec<u8>> {
    let copy = binary.with_extension("stripped");
    std::fs::copy(binary, &copy)?;
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg(&copy)
        .status();
    let bytes = match status {
        Ok(status) if status.success() => std::fs::read(&copy)?,
        _ => {
            eprintln!(
                "note: `strip` is not available; packing the binary with its debug information"
            );
            std::fs::read(binary)?
        }
    };
    std::fs::remove_file(&copy)?;
    Ok(bytes)
}

/// Builds and packs the release.
pub(crate) fn run(args: DistArgs) -> DynResult {
    let root = workspace_root()?;
    let binary = build(&args.features)?;
    let plugins = Command::new(&binary).args(["plugins", "--json"]).output()?;
    if !plugins.status.success() {
        return Err(format!("`snapstate plugins --json` failed ({})", plugins.status).into());
    }
    let plugins: Value = serde_json::from_slice(&plugins.stdout)?;
    let version = env!("CARGO_PKG_VERSION");
    let target = host_target()?;
    let name = format!("snapstate-{version}");
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![
        ("bin/snapstate".into(), stripped(&binary)?, 0o755),
        (
            "README.md".into(),
            std::fs::read(root.join("README.md"))?,
            0o644,
        ),
        (
            "ARCHITECTURE.md".into(),
            std::fs::read(root.join("ARCHITECTURE.md"))?,
            0o644,
        ),
    ];
    let manifest = json!({
        "name": "snapstate",
        "version": version,
        "target": target,
        "features": args.features.split(',').map(str::trim).collect::<Vec<_>>(),
        "plugins": plugins,
        "files": files.iter().map(|(path, bytes, _)| json!({
            "path": path,
            "bytes": bytes.len(),
            "sha256": sha256(bytes),
        })).collect::<Vec<_>>(),
    });
    files.push((
        "manifest.json".into(),
        serde_json::to_vec_pretty(&manifest)?,
        0o644,
    ));
    let sums: String = files
        .iter()
        .map(|(path, bytes, _)| format!("{}  {path}\n", sha256(bytes)))
        .collect();
    files.push(("SHA256SUMS".into(), sums.into_bytes(), 0o644));

    let out = match args.out {
        Some(out) => out,
        None => binary
            .parent()
            .and_then(Path::parent)
            .map(|target_dir| target_dir.join("dist"))
            .ok_or("the binary is not in a target directory")?,
    };
    std::fs::create_dir_all(&out)?;
    let tarball = out.join(format!("{name}-{target}.tar.gz"));
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(encoder);
    for (path, bytes, mode) in &files {
        append(&mut archive, &format!("{name}/{path}"), bytes, *mode)?;
    }
    let packed = archive.into_inner()?.finish()?;
    std::fs::write(&tarball, &packed)?;
    let file_name = tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let checksum = out.join(format!("{file_name}.sha256"));
    std::fs::write(&checksum, format!("{}  {file_name}\n", sha256(&packed)))?;
    println!("{}", tarball.display());
    println!("{}", checksum.display());
    println!("{}", serde_json::to_string_pretty(&manifest["plugins"])?);
    Ok(())
}

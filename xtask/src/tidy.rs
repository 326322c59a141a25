//! Repository rules checked as a test: file headers, forbidden test attributes,
//! dependency direction between crates, plugin registration, and the code map.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: xtask lives one level below the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
            (path, text)
        })
        .collect()
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let offenders: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "files without a `//!` header: {offenders:?}"
    );
}

#[test]
fn no_ignored_or_should_panic_tests() {
    let forbidden = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let offenders: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|(_, text)| forbidden.iter().any(|f| text.contains(f)))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "ignored or should_panic tests in: {offenders:?}"
    );
}

struct Package {
    name: String,
    dir: PathBuf,
    dependencies: BTreeSet<String>,
}

fn workspace_packages() -> Vec<Package> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("invariant: cargo is available to tests");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    metadata["packages"]
        .as_array()
        .expect("cargo metadata lists packages")
        .iter()
        .map(|package| Package {
            name: package["name"].as_str().unwrap_or_default().to_owned(),
            dir: Path::new(package["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            dependencies: package["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| dep["kind"].is_null()) // normal dependencies only
                .filter_map(|dep| dep["name"].as_str().map(str::to_owned))
                .collect(),
        })
        .collect()
}

const BACKENDS: [&str; 3] = ["state-heap", "state-operator", "state-rocksdb"];

/// The crates that store checkpoints: applications pick one, plugins never depend on one.
const STORAGES: [&str; 2] = ["state-storage-local", "state-storage-object"];

/// The one crate that depends on an async runtime and an object store client.
const OBJECT_STORAGE: &str = "state-storage-object";

/// Everything the contract crate may depend on: small, stable crates only.
const STATE_API_ALLOWED: [&str; 7] = [
    "crc32c",
    "erased-serde",
    "inventory",
    "serde",
    "thiserror",
    "tracing",
    "typetag",
];

/// The workspace crates `package` depends on, other than those in `allowed`.
fn workspace_deps<'p>(
    package: &'p Package,
    workspace: &BTreeSet<&str>,
    allowed: &[&str],
) -> Vec<&'p str> {
    package
        .dependencies
        .iter()
        .map(String::as_str)
        .filter(|d| workspace.contains(d) && !allowed.contains(d))
        .collect()
}

#[test]
fn dependencies_point_one_way() {
    let packages = workspace_packages();
    let workspace: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    for package in &packages {
        let deps = &package.dependencies;
        match package.name.as_str() {
            "state-api" => {
                let outside: Vec<&String> = deps
                    .iter()
                    .filter(|d| !STATE_API_ALLOWED.contains(&d.as_str()))
                    .collect();
                assert!(
                    outside.is_empty(),
                    "state-api depends on {outside:?}, beyond its allow-list {STATE_API_ALLOWED:?}"
                );
            }
            "state-format" => {
                let inside = workspace_deps(package, &workspace, &["state-api"]);
                assert!(
                    inside.is_empty(),
                    "state-format depends on workspace crates {inside:?} besides state-api"
                );
            }
            "state-coordinator" => {
                let inside = workspace_deps(package, &workspace, &["state-api"]);
                assert!(
                    inside.is_empty(),
                    "state-coordinator depends on workspace crates {inside:?}: coordination \
                     works with any backend and storage through state-api alone"
                );
            }
            "state-compress" => {
                let inside = workspace_deps(package, &workspace, &["state-api"]);
                assert!(
                    inside.is_empty(),
                    "state-compress depends on workspace crates {inside:?} besides state-api"
                );
            }
            "snapstate-example-deflate" => {
                let inside = workspace_deps(package, &workspace, &["state-api"]);
                assert!(
                    inside.is_empty(),
                    "the third-party example depends on workspace crates {inside:?} besides state-api"
                );
            }
            "snapstate-example-ordered" => {
                let inside = workspace_deps(package, &workspace, &["state-api", "state-format"]);
                assert!(
                    inside.is_empty(),
                    "the third-party keyed backend depends on workspace crates {inside:?} besides state-api and state-format"
                );
            }
            name if BACKENDS.contains(&name) => {
                let inside = workspace_deps(package, &workspace, &["state-api", "state-format"]);
                assert!(
                    inside.is_empty(),
                    "backend {name} depends on workspace crates {inside:?}: a backend depends on \
                     state-api and state-format only (no other backend, no storage, no decorator)"
                );
            }
            name if STORAGES.contains(&name) => {
                let inside = workspace_deps(package, &workspace, &["state-api", "state-format"]);
                assert!(
                    inside.is_empty(),
                    "storage {name} depends on workspace crates {inside:?} besides state-api and state-format"
                );
            }
            _ => {}
        }
        if package.name != OBJECT_STORAGE {
            for runtime in ["tokio", "object_store"] {
                assert!(
                    !deps.contains(runtime),
                    "{} depends on {runtime}: only {OBJECT_STORAGE} may",
                    package.name
                );
            }
        }
    }
}

/// No file of the contract names a concrete storage: storages implement the contract, not
/// the other way round.
#[test]
fn the_contract_names_no_concrete_storage() {
    let src = workspace_root().join("state-api").join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (number, line) in text.lines().enumerate() {
            // Runnable examples (`///` and `//!` lines) may show a storage in use.
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for storage in [
                "state_storage_local",
                "state_storage_object",
                "LocalCheckpointStorage",
            ] {
                assert!(
                    !code.contains(storage),
                    "{}:{}: the contract names the storage `{storage}`",
                    file.display(),
                    number + 1
                );
            }
        }
    }
}

#[test]
fn registering_crates_offer_explicit_registration_and_link() {
    for package in workspace_packages() {
        let lib = package.dir.join("src").join("lib.rs");
        let Ok(text) = std::fs::read_to_string(&lib) else {
            continue;
        };
        if !text.contains("submit_registration!(") || package.name == "state-api" {
            continue;
        }
        assert!(
            text.contains("pub fn register(registry: &mut"),
            "{} submits a registration but has no `pub fn register`",
            package.name
        );
        assert!(
            text.contains("pub fn link()"),
            "{} has no `pub fn link()`",
            package.name
        );
    }
}

#[test]
fn architecture_code_map_names_every_crate_folder() {
    let root = workspace_root();
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md exists at the workspace root");
    let headings: BTreeSet<String> = architecture
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .filter_map(|heading| heading.trim().strip_prefix('`'))
        .filter_map(|heading| heading.split('`').next())
        .map(|folder| folder.trim_end_matches('/').to_owned())
        .collect();
    let folders: BTreeSet<String> = workspace_packages()
        .iter()
        .filter_map(|p| {
            p.dir
                .strip_prefix(&root)
                .ok()
                .map(|d| d.display().to_string())
        })
        .collect();
    assert_eq!(
        headings, folders,
        "ARCHITECTURE.md code map headings vs crate folders"
    );
}

//! The `snapstate` binary on a real heap checkpoint: `--json` prints one parsable
//! document, `verify` exits with 1 on a damaged checkpoint and errors exit with 2 on
//! stderr.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{CHECKPOINT_ID, MAX_PARALLELISM};

fn snapstate(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snapstate"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not one JSON document ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn json_output_of_every_command_parses_and_verify_sets_the_exit_code() {
    let fixture = support::checkpoint("lz4");
    let root = fixture.root();

    let list = snapstate(&["list", "--json"], root);
    assert!(list.status.success(), "{list:?}");
    let list = json(&list);
    let checkpoint = &list["checkpoints"][0];
    assert_eq!(checkpoint["checkpoint_id"], CHECKPOINT_ID);
    assert_eq!(checkpoint["checkpoint_type"], "checkpoint");
    assert_eq!(checkpoint["handles"][0]["kind"], "key-groups");
    let size = checkpoint["state_size"].as_u64().unwrap();
    assert!(
        size >= std::fs::metadata(&fixture.keyed_file).unwrap().len(),
        "{checkpoint}"
    );

    let inspect = snapstate(&["inspect", "--json"], root);
    assert!(inspect.status.success(), "{inspect:?}");
    let inspect = json(&inspect);
    let detail = &inspect["handles"][0]["detail"]["key-groups"];
    assert_eq!(detail["header"]["compression"], "lz4");
    let version = snapstate::format::proxy::CURRENT_VERSION;
    assert_eq!(detail["header"]["version"], version);
    let text = snapstate(&["inspect"], root);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!("format version {version},")),
        "{text}"
    );
    assert_eq!(
        detail["key_groups"].as_array().unwrap().len(),
        MAX_PARALLELISM.get() as usize
    );

    let verify = snapstate(&["verify", "--json"], root);
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
    assert_eq!(json(&verify)["problems"], Value::Array(vec![]));

    let key_group = support::largest_key_group(&fixture);
    let (offset, length) = support::section(&fixture, key_group);
    support::flip_byte(&fixture.keyed_file, offset + length / 2);
    let verify = snapstate(&["verify", "--json"], root);
    assert_eq!(verify.status.code(), Some(1), "{verify:?}");
    let problems = json(&verify)["problems"].clone();
    assert_eq!(problems.as_array().unwrap().len(), 1, "{problems}");
    assert_eq!(problems[0]["key_group"], key_group, "{problems}");
    let kind = problems[0]["kind"].as_str().unwrap_or_default();
    assert!(kind == "corrupted" || kind == "truncated", "{problems}");

    // The tables name the damaged key group too.
    let verify = snapstate(&["verify"], root);
    assert_eq!(verify.status.code(), Some(1), "{verify:?}");
    let text = String::from_utf8(verify.stdout).unwrap();
    assert!(text.contains(&format!("key group {key_group}:")), "{text}");
}

#[test]
fn plugins_lists_what_the_binary_links() {
    let output = Command::new(env!("CARGO_BIN_EXE_snapstate"))
        .args(["plugins", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let plugins = json(&output);
    let names: Vec<(&str, &str)> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["registered_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(names.contains(&("heap", "state-heap")), "{names:?}");
    assert!(names.contains(&("none", "state-api")), "{names:?}");
    assert_eq!(plugins["conflicts"], Value::Array(vec![]));
}

#[test]
fn errors_go_to_stderr_with_exit_code_2() {
    let empty = tempfile::tempdir().unwrap();
    let output = snapstate(&["list"], empty.path());
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: ") && stderr.contains("not a snapstate checkpoint directory"),
        "{stderr}"
    );
}

/// Rewrites the `_metadata` of checkpoint `id` under `root` after `edit` changed its JSON.
fn edit_metadata(root: &Path, id: u64, edit: impl FnOnce(&mut Value)) {
    let path = root.join(format!("chk-{id}")).join("_metadata");
    let bytes = std::fs::read(&path).unwrap();
    let mut body: Value = serde_json::from_slice(&bytes[12..bytes.len() - 4]).unwrap();
    edit(&mut body);
    let framed =
        snapstate::format::metadata::frame_body(&serde_json::to_vec(&body).unwrap(), 2).unwrap();
    std::fs::write(&path, framed).unwrap();
}

#[test]
fn verify_reports_files_no_restore_reads_without_failing() {
    let fixture = support::checkpoint("none");
    let root = fixture.root();
    std::fs::write(root.join("shared").join("orphan"), b"left behind").unwrap();
    let checkpoint_dir = root.join(format!("chk-{CHECKPOINT_ID}"));
    std::fs::write(checkpoint_dir.join(".inprogress-cut"), b"half").unwrap();
    let verify = snapstate(&["verify", "--json"], root);
    assert!(verify.status.success(), "{verify:?}");
    let leftovers: Vec<(String, String)> = json(&verify)["leftovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_owned(),
                l["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        leftovers,
        [
            (
                format!("chk-{CHECKPOINT_ID}/.inprogress-cut"),
                "in-progress".to_owned()
            ),
            ("shared/orphan".to_owned(), "unreferenced".to_owned()),
        ]
    );
    let text = snapstate(&["verify"], root);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("leftovers: 2 files") && stdout.contains("shared/orphan"),
        "{stdout}"
    );
}

#[test]
fn verify_never_panics_on_sizes_that_do_not_add_up() {
    let fixture = support::checkpoint("none");
    let root = fixture.root();
    edit_metadata(root, CHECKPOINT_ID, |body| {
        body["instances"][0]["keyed"][0]["key-groups"]["delegate"]["file"]["size"] =
            u64::MAX.into();
        if let Some(operator) = body["instances"][0]["operator"].get_mut(0) {
            operator["delegate"]["file"]["size"] = u64::MAX.into();
        }
    });
    for command in ["list", "inspect", "verify"] {
        let output = snapstate(&[command], root);
        assert_ne!(
            output.status.code(),
            Some(101),
            "{command} panicked: {output:?}"
        );
    }
    let verify = snapstate(&["verify"], root);
    assert_eq!(verify.status.code(), Some(1), "{verify:?}");
}

#[test]
fn verify_names_a_handle_outside_the_directory_it_checks() {
    let fixture = support::checkpoint("none");
    let root = fixture.root();
    edit_metadata(root, CHECKPOINT_ID, |body| {
        body["instances"][0]["keyed"][0]["key-groups"]["delegate"]["file"]["path"] =
            "/etc/hostname".into();
    });
    let verify = snapstate(&["verify"], root);
    assert_eq!(verify.status.code(), Some(1), "{verify:?}");
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(
        stdout.contains("/etc/hostname is outside the checkpoint storage"),
        "{stdout}"
    );
}

#[test]
fn gc_removes_what_crashed_writers_left_and_a_dry_run_removes_nothing() {
    let fixture = support::checkpoint("none");
    let root = fixture.root();
    let later = CHECKPOINT_ID + 1;
    // A crash left: a half-written stream of the committed checkpoint, a shared file of
    // it nobody refers to, and the directory of a later checkpoint that never completed.
    let checkpoint_dir = root.join(format!("chk-{CHECKPOINT_ID}"));
    std::fs::write(checkpoint_dir.join(".inprogress-cut"), b"half").unwrap();
    let orphan = format!("shared/chk-{CHECKPOINT_ID}-orphan");
    std::fs::write(root.join(&orphan), b"left behind").unwrap();
    std::fs::create_dir(root.join(format!("chk-{later}"))).unwrap();
    std::fs::write(root.join(format!("chk-{later}/stream")), b"unfinished").unwrap();

    let dry = snapstate(&["gc", "--dry-run", "--json"], root);
    assert!(dry.status.success(), "{dry:?}");
    let report = json(&dry);
    let mut removed: Vec<&str> = (report["removed"].as_array().unwrap().iter())
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    removed.sort_unstable();
    let mut expected = vec![
        format!("chk-{CHECKPOINT_ID}/.inprogress-cut"),
        format!("chk-{later}/stream"),
        orphan.clone(),
    ];
    expected.sort_unstable();
    assert_eq!(removed, expected);
    assert_eq!(report["removed_bytes"], 4 + 10 + 11);
    assert_eq!(report["writers"], "exclusive");
    assert!(root.join(&orphan).exists(), "a dry run removes nothing");

    let gc = snapstate(&["gc"], root);
    assert!(gc.status.success(), "{gc:?}");
    let stdout = String::from_utf8_lossy(&gc.stdout);
    assert!(stdout.contains("removed 3 files (25 bytes)"), "{stdout}");
    assert!(!root.join(&orphan).exists());
    assert!(!root.join(format!("chk-{later}")).exists());
    let verify = snapstate(&["verify", "--json"], root);
    assert!(verify.status.success(), "{verify:?}");
    assert_eq!(json(&verify)["leftovers"], serde_json::json!([]));
}

#[test]
fn gc_beside_a_job_holding_the_storage_keeps_what_the_job_may_be_writing() {
    let fixture = support::checkpoint("none");
    let root = fixture.root();
    let storage = snapstate::LocalCheckpointStorage::open(root).unwrap();
    let _claim = storage
        .claim(&snapstate::api::JobId::new("running").unwrap())
        .unwrap();
    let later = CHECKPOINT_ID + 1;
    let old = format!("shared/chk-{CHECKPOINT_ID}-orphan");
    std::fs::write(root.join(&old), b"left behind").unwrap();
    let new = format!("shared/chk-{later}-uploading");
    std::fs::write(root.join(&new), b"being written").unwrap();

    let gc = snapstate(&["gc", "--json"], root);
    assert!(gc.status.success(), "{gc:?}");
    let report = json(&gc);
    assert_eq!(report["writers"], "possible");
    let note = report["writer_note"].as_str().unwrap();
    assert!(note.contains("running"), "{note}");
    assert!(!root.join(&old).exists());
    assert!(
        root.join(&new).exists(),
        "a newer checkpoint's file is kept"
    );
    assert_eq!(report["kept"][0]["path"], new.as_str());
}

//! The run report: `--json` on stdout, checked against `schema/run.schema.json` and field by
//! field, and the last-run record each real run leaves in its destination.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cephbackup::test_support::{RunReport, LAST_RUN_FILE};
use serde_json::Value;

use crate::harness::*;

/// Every error the schema finds in `doc`.
pub fn schema_errors(doc: &Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/run.schema.json");
    let schema: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    validator.iter_errors(doc).map(|e| e.to_string()).collect()
}

/// Parses stdout as the one document it must be, and checks it against the schema.
#[track_caller]
fn document(stdout: &str) -> Value {
    let doc: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|err| panic!("stdout is not one JSON document ({err}):\n{stdout}"));
    assert_eq!(schema_errors(&doc), Vec::<String>::new(), "{stdout}");
    doc
}

fn size_of(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[test]
fn json_prints_the_run_report_which_matches_the_schema_and_the_last_run_record() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 300);
    let conf = w.config("images = vm, missing\nbackup mode = incremental");
    let conf = conf.to_str().unwrap();
    // A planted link where the record goes is replaced, never written through.
    let elsewhere = w.tmp.path().join("elsewhere");
    fs::write(&elsewhere, "untouched").unwrap();
    std::os::unix::fs::symlink(&elsewhere, w.dest.join(LAST_RUN_FILE)).unwrap();

    let run = w.cephbackup(&["-c", conf, "--json"]).code(1);
    assert!(!run.stdout.contains("Starting backup"), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!("error: {}/missing: ", w.pool)),
        "{}",
        run.stderr
    );
    let doc = document(&run.stdout);
    let snap = w.backup_snapshots("vm").pop().unwrap();
    let vm = &doc["images"][0];
    let missing = &doc["images"][1];
    let version = doc["version"].as_str().unwrap();
    assert!(version.starts_with(env!("CARGO_PKG_VERSION")), "{version}");
    assert!(vm["duration_seconds"].as_f64().unwrap() > 0.0);
    let error = missing["error"].as_str().unwrap();
    assert!(error.starts_with("cannot list snapshots"), "{error}");
    assert!(error.contains("missing"), "{error}");
    // The whole document, its pool, destination, snapshot name, version, times and rbd's words
    // aside (the sizes of the full and its checksum file are fixed by the image size and the
    // name's length).
    let mut doc_stable = doc.clone();
    doc_stable["images"][1]["error"] = Value::from("[rbd's error]");
    let dest = w.dest.display().to_string();
    let stable = normalised(
        &doc_stable,
        &[
            (&dest, "[DEST]"),
            (&w.pool, "[POOL]"),
            (&snap, "[SNAPSHOT]"),
        ],
        &["version", "generated_at", "started_at", "duration_seconds"],
    );
    insta::assert_json_snapshot!(stable);

    // The record in the destination: the same document, restricted to it; readable by all; the
    // planted link replaced by a file, its target untouched.
    let record_path = w.dest.join(LAST_RUN_FILE);
    let meta = fs::symlink_metadata(&record_path).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "untouched");
    let recorded: Value = serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(schema_errors(&recorded), Vec::<String>::new());
    let printed: RunReport = serde_json::from_value(doc.clone()).unwrap();
    let recorded: RunReport = serde_json::from_value(recorded).unwrap();
    assert_eq!(
        recorded,
        printed.restricted_to(&w.dest.display().to_string())
    );
    assert_eq!(recorded, printed, "one destination: the whole document");

    // A diff run, as text: the summary gains the duration, the record follows.
    next_second();
    w.write_data("vm", 301);
    let conf_vm = w.config("images = vm\nbackup mode = incremental");
    let run = w.backup(&conf_vm).success();
    assert!(run.stdout.contains(" written in "), "{}", run.stdout);
    let recorded: Value = serde_json::from_slice(&fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(schema_errors(&recorded), Vec::<String>::new());
    assert_eq!(recorded["success"], true);
    let vm = &recorded["images"][0];
    assert_eq!(vm["action"], "diff");
    let diff = vm["files_written"][0]["file"].as_str().unwrap();
    assert!(diff.contains(".diff_from_"), "{diff}");
    assert_eq!(vm["bytes_written"], size_of(&w.image_dir("vm").join(diff)));

    // Check mode: reported as checked, and no record written.
    fs::remove_file(&record_path).unwrap();
    next_second();
    let run = w
        .cephbackup(&["-c", conf_vm.to_str().unwrap(), "--check", "--json"])
        .success();
    let doc = document(&run.stdout);
    assert_eq!(doc["check_mode"], true);
    assert_eq!(doc["success"], true);
    assert_eq!(doc["images"][0]["status"], "checked");
    assert_eq!(doc["images"][0]["action"], "diff");
    assert_eq!(doc["images"][0]["files_written"], serde_json::json!([]));
    assert!(!record_path.exists(), "check mode wrote a record");
}

#[test]
fn a_section_that_cannot_start_is_reported_and_leaves_no_record_in_its_destination() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 310);
    // Snapshots exist, the destination is empty and unrecorded: a disk that did not mount.
    let conf = w.config("images = vm\nbackup mode = incremental");
    w.backup(&conf).success();
    let fresh = w.tmp.path().join("unmounted");
    fs::create_dir(&fresh).unwrap();
    let conf = w.write_config(&format!(
        "[{}]\ndestination directory = {}\nceph config = {}\nimages = vm\nbackup mode = incremental\n",
        w.pool,
        fresh.display(),
        cluster().conf.display()
    ));
    let run = w
        .cephbackup(&["-c", conf.to_str().unwrap(), "--json"])
        .code(1);
    let doc = document(&run.stdout);
    assert_eq!(doc["success"], false);
    let failures = doc["section_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{doc}");
    assert_eq!(failures[0]["pool"], w.pool.as_str());
    assert_eq!(failures[0]["destination"], fresh.display().to_string());
    assert!(
        failures[0]["error"].as_str().unwrap().contains("is empty"),
        "{doc}"
    );
    assert_eq!(
        fs::read_dir(&fresh).unwrap().count(),
        0,
        "the empty destination stays empty"
    );
}

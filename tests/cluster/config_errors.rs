//! Configuration errors: reported before anything runs, one line each, exit status 2.

use crate::harness::{mkfifo, Run};

use std::process::{Command, Stdio};

fn run_with(body: &str) -> (Run, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.conf");
    std::fs::write(&path, body).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (Run::from(out), path.display().to_string())
}

const GOOD: &str = "images = a\ndestination directory = /nonexistent\nbackup mode = full\n";
/// Incremental mode, where the window keys are used, so that their mistakes are errors (in full
/// mode they are only warnings).
const GOOD_INCREMENTAL: &str =
    "images = a\ndestination directory = /nonexistent\nbackup mode = incremental\n";

#[test]
fn each_config_error_names_file_line_section_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[rbd]\nimages = a\nbackup mode = full\n",
            ":1: [rbd] destination directory:",
        ),
        (
            &format!("[rbd]\n{GOOD}chek mode = yes\n"),
            ":5: [rbd] chek mode: unknown key (did you mean 'check mode'?)",
        ),
        (
            &format!("[rbd]\n{GOOD}compress = maybe\n"),
            ":5: [rbd] compress:",
        ),
        (
            &format!("[rbd]\n{GOOD}check mode = sure\n"),
            ":5: [rbd] check mode:",
        ),
        (
            &format!("[rbd]\n{GOOD_INCREMENTAL}window size = 7d\n"),
            ":5: [rbd] window size:",
        ),
        (
            &format!("[rbd]\n{GOOD_INCREMENTAL}window size = -3\n"),
            ":5: [rbd] window size:",
        ),
        (
            &format!("[rbd]\n{GOOD_INCREMENTAL}window unit = fortnights\n"),
            ":5: [rbd] window unit:",
        ),
        (
            &format!("[rbd]\n{GOOD}ceph timeout = 999999\n"),
            ":5: [rbd] ceph timeout:",
        ),
        (
            "[rbd]\nimages = a\ndestination directory = /x\nbackup mode = differential\n",
            ":4: [rbd] backup mode:",
        ),
        (
            "[rbd]\nimages = a,,b\ndestination directory = /x\nbackup mode = full\n",
            ":2: [rbd] images:",
        ),
        (
            "[rbd]\nimages = a, a\ndestination directory = /x\nbackup mode = full\n",
            ":2: [rbd] images:",
        ),
        (
            "[rbd]\nimages = *, a\ndestination directory = /x\nbackup mode = full\n",
            ":2: [rbd] images:",
        ),
        ("images = a\n[rbd]\n", ":1:"),
    ];
    for (body, expected) in cases {
        let (run, path) = run_with(body);
        let run = run.code(2);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("error: {path}")) && first.contains(expected),
            "for {body:?}: expected {expected:?} in {first:?}"
        );
        assert!(run.stdout.is_empty(), "nothing runs: {}", run.stdout);
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let (run, _) = run_with("[a]\nimages = x\nbackup mode = full\n[b]\nimages = y\ndestination directory = /x\nbackup mode = ful\ncompres = yes\n");
    let run = run.code(2);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 3, "{}", run.stderr);
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .args(["-c", "/nonexistent/cephbackup.conf"])
        .output()
        .unwrap();
    let run = Run::from(out).code(2);
    assert!(
        run.stderr
            .starts_with("error: /nonexistent/cephbackup.conf"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1);
}

#[test]
fn usage_errors_exit_with_2_and_help_documents_the_exit_statuses() {
    let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("Exit status:") && help.contains("2  usage error"),
        "{help}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("cephbackup "));
}

#[test]
fn warnings_are_shown_with_errors_and_never_alone_change_the_status() {
    let body =
        format!("[rbd]\n{GOOD}description = nightly\nchek mode = yes\nwindow size = 7d\n[rbd]\n");
    let (run, path) = run_with(&body);
    let run = run.code(2);
    // The whole of stderr, the temporary file's path aside.
    insta::assert_snapshot!(run.stderr.replace(&path, "[CONFIG]"));
    assert!(run.stdout.is_empty(), "nothing runs: {}", run.stdout);
}

#[test]
fn a_config_that_is_no_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("cephbackup.conf");
    mkfifo(&fifo);
    for (path, what) in [
        (fifo.as_path(), "a FIFO"),
        ("/dev/zero".as_ref(), "a device"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
            .arg("-c")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let run = Run::from(out).code(2);
        assert_eq!(
            run.stderr,
            format!(
                "error: {}: cannot read configuration file: is {what}, not a regular file; \
                 it is not read\n",
                path.display()
            )
        );
    }
}

#[test]
fn an_out_of_range_wait_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .args(["--wait", "9223372036854775807", "-c", "/nonexistent.conf"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run::from(out).code(2);
    assert!(run.stderr.contains("0..=604800"), "{}", run.stderr);
}

#[test]
fn a_key_repeated_within_a_section_is_a_warning_naming_both_lines() {
    let body = "[rbd]\nimages = vm\ndestination directory = /nonexistent\nbackup mode = full\n\
                Images = vmz\nchek mode = yes\n";
    let (run, path) = run_with(body);
    let run = run.code(2);
    assert!(
        run.stderr.lines().any(|line| line
            == format!(
                "warning: {path}:5: [rbd] images: set again; the value of {path}:2 is replaced \
                 by this later one, as the original tool did"
            )),
        "{}",
        run.stderr
    );
}

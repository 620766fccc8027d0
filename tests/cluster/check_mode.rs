//! Check mode shows every step and changes nothing: no snapshot, no folder, no file.

use std::fs;

use chrono::{Duration, Utc};

use crate::harness::*;

fn assert_changes_nothing(w: &World, image: &str, conf: &std::path::Path, args: &[&str]) -> Run {
    let snaps = w.snapshots(image);
    let tree = w.dest_tree();
    let mut argv = vec!["-c", conf.to_str().unwrap()];
    argv.extend_from_slice(args);
    let run = w.cephbackup(&argv).success();
    assert_eq!(w.snapshots(image), snaps, "snapshots changed in check mode");
    assert_eq!(w.dest_tree(), tree, "destination changed in check mode");
    assert!(run.stdout.contains("Check mode: True"), "{}", run.stdout);
    assert!(run.stdout.contains("(check mode: nothing was changed)"));
    run
}

#[test]
fn check_mode_on_a_first_run_changes_nothing() {
    let w = World::new();
    w.create_image("a", 8 * MIB, 70);
    let conf = w.config("images = a\nbackup mode = incremental\ncheck mode = yes");
    let run = assert_changes_nothing(&w, "a", &conf, &[]);
    assert!(
        run.stdout.contains("Exporting image a@BACKUPUTC"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("# rbd --conf"));
    assert!(!w.image_dir("a").exists());
}

/// `text` with what differs from run to run (the pool, the folders, the snapshot names) named
/// instead.
fn stable_transcript(w: &World, conf: &std::path::Path, text: &str) -> String {
    let mut text = text
        .replace(&w.dest.display().to_string(), "[DEST]")
        .replace(&cluster().conf.display().to_string(), "[CEPH_CONF]")
        .replace(&conf.display().to_string(), "[CONF]")
        .replace(&w.pool, "[POOL]");
    while let Some(at) = text.find("BACKUPUTC2") {
        text.replace_range(at..at + "BACKUPUTC20261203T081500".len(), "[SNAPSHOT]");
    }
    if let Some(start) = text.find(" written in ") {
        let from = start + " written in ".len();
        let end = from + text[from..].find(" (").unwrap();
        text.replace_range(from..end, "[DURATION]");
    }
    text
}

/// What check mode prints, word for word, for a first incremental run and the full-mode run
/// that follows a backup: the original's lines, the `rbd` commands a real run would run, and
/// nothing else on stdout.
#[test]
fn check_mode_transcripts_stay_word_for_word() {
    let w = World::new();
    w.create_image("a", 8 * MIB, 73);
    let conf = w.config("images = a\nbackup mode = incremental\ncompress = yes");
    let first = assert_changes_nothing(&w, "a", &conf, &["--check"]);
    insta::assert_snapshot!(
        "first_incremental_run",
        stable_transcript(&w, &conf, &first.stdout)
    );
    let full = w.config_named(
        "full.conf",
        &w.dest,
        "images = a\nbackup mode = full\nkeep last = 1",
    );
    w.backup(&full).success();
    next_second();
    let again = assert_changes_nothing(&w, "a", &full, &["--check"]);
    insta::assert_snapshot!(
        "full_run_after_a_full",
        stable_transcript(&w, &full, &again.stdout)
    );
}

#[test]
fn check_mode_in_full_mode_prints_the_banner_and_changes_nothing() {
    let w = World::new();
    w.create_image("a", 8 * MIB, 71);
    let conf = w.config("images = a\nbackup mode = full\ncompress = yes");
    let run = assert_changes_nothing(&w, "a", &conf, &["--check"]);
    assert!(run
        .stdout
        .contains("Running in check mode: backup commands will just be printed and not executed"));
    assert!(run.stdout.contains("Compress mode activated"));
    assert!(run.stdout.contains("Deleting snapshot"));
}

#[test]
fn check_mode_on_a_normal_and_a_sliding_run_changes_nothing() {
    let w = World::new();
    w.create_image("b", 8 * MIB, 72);
    let spec = w.spec("b");
    let conf =
        w.config("images = b\nbackup mode = incremental\nwindow size = 2\nwindow unit = days");
    w.backup(&conf).success();
    // A run in the same second would need the snapshot name that run took, and says so.
    next_second();
    let run = assert_changes_nothing(&w, "b", &conf, &["--check"]);
    assert!(run.stdout.contains("Exporting diff"), "{}", run.stdout);

    // An old snapshot with its file makes the next run slide the window.
    let old = (Utc::now() - Duration::days(5))
        .format("BACKUPUTC%Y%m%dT%H%M%S")
        .to_string();
    let dir = w.image_dir("b");
    let current = w.backup_snapshots("b").pop().unwrap();
    let old_file = dir.join(format!("b@{old}.full"));
    rbd(&["snap", "create", &format!("{spec}@{old}")]);
    rbd(&[
        "export",
        &format!("{spec}@{old}"),
        old_file.to_str().unwrap(),
    ]);
    // Snapshot ids decide age order: recreate the current one so the old one has the lower id.
    rbd(&["snap", "rm", &format!("{spec}@{current}")]);
    rbd(&["snap", "create", &format!("{spec}@{current}")]);
    fs::rename(
        dir.join(format!("b@{current}.full")),
        dir.join(format!("b@{current}.diff_from_{old}")),
    )
    .unwrap();
    // The renamed diff has no checksum file of its own, so the new base cannot be built from the
    // folder: check mode shows only the export a real run falls back to, not a build.
    let run = assert_changes_nothing(&w, "b", &conf, &["--check"]);
    assert!(!run.stdout.contains("Building image"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("a real run exports it from the cluster instead"),
        "{}",
        run.stderr
    );
    for needle in [
        format!("Exporting image b@{current}"),
        format!("Deleting snapshot {spec}@{old}"),
    ] {
        assert!(
            run.stdout.contains(&needle),
            "missing {needle:?}:\n{}",
            run.stdout
        );
    }
    let conf = w.config(
        "images = b\nbackup mode = incremental\nwindow size = 2\nwindow unit = days\n\
         slide from cluster = yes",
    );
    let run = assert_changes_nothing(&w, "b", &conf, &["--check"]);
    for needle in [
        format!("Exporting image b@{current}"),
        format!("Removing file {}", old_file.display()),
        format!("Deleting snapshot {spec}@{old}"),
    ] {
        assert!(
            run.stdout.contains(&needle),
            "missing {needle:?}:\n{}",
            run.stdout
        );
    }
}

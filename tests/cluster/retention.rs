//! Retention: full-mode keep rules, incremental keep minimum, and what `list` says about when each
//! point goes. Old history is simulated by snapshot and file names.

use std::fs;
use std::path::Path;

use chrono::{NaiveDateTime, TimeDelta};

use crate::harness::*;

/// When a snapshot name says it was taken, as `list` prints times.
fn shown_time(snap: &str, plus: TimeDelta) -> String {
    let taken = NaiveDateTime::parse_from_str(&snap["BACKUPUTC".len()..], "%Y%m%dT%H%M%S").unwrap();
    (taken + plus).format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn list(w: &World, conf: &Path, json: bool) -> Run {
    let mut args = vec!["list", "-c", conf.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    w.cephbackup(&args).success()
}

/// Imports a full-mode file (fed on stdin: Ceph 16 refuses a path with `@`) into a new image and
/// returns that image's bytes.
fn import_full(w: &World, image: &str, file: &str, target: &str) -> Vec<u8> {
    rbd_with_stdin(
        &["import", "-", &w.spec(target)],
        &w.image_dir(image).join(file),
    );
    w.export(target, None)
}

/// The `.full` files of an image folder, oldest first.
fn fulls(w: &World, image: &str) -> Vec<String> {
    w.files(image)
        .into_iter()
        .filter(|n| n.ends_with(".full"))
        .collect()
}

#[test]
fn full_mode_keep_last_keeps_the_newest_files_with_their_checksums_and_they_restore() {
    let w = World::new();
    w.create_image("vm", 16 * MIB, 80);
    let conf = w.config("images = vm\nbackup mode = full\nkeep last = 2");
    let dir = w.image_dir("vm");
    // What each run backed up: the image as it was (nothing writes to it during the run).
    let mut backed_up: Vec<(String, Vec<u8>)> = Vec::new();
    for run in 0..4u64 {
        if run > 0 {
            w.write_data("vm", 200 + run);
            next_second();
        }
        let bytes = w.export("vm", None);
        let before = fulls(&w, "vm");
        let out = w.backup(&conf).success();
        let new = fulls(&w, "vm")
            .into_iter()
            .find(|n| !before.contains(n))
            .expect("a new full backup");
        backed_up.push((new, bytes));
        if run < 2 {
            assert!(!out.stdout.contains("Removing file"), "{}", out.stdout);
            continue;
        }
        let gone = &backed_up[usize::try_from(run).unwrap() - 2].0;
        for name in [gone.clone(), format!("{gone}.sha256")] {
            let line = format!("Removing file {}", dir.join(&name).display());
            assert!(
                out.stdout.contains(&line),
                "missing {line:?} in\n{}",
                out.stdout
            );
        }
        assert!(
            out.stderr
                .contains("full-mode retention (keep last = 2): no keep rule holds this backup"),
            "{}",
            out.stderr
        );
    }
    let kept: Vec<String> = backed_up[2..].iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(fulls(&w, "vm"), kept);
    let checksums: Vec<String> = kept.iter().map(|n| format!("{n}.sha256")).collect();
    let mut expected = [kept.clone(), checksums].concat();
    expected.sort();
    assert_eq!(
        w.all_files("vm"),
        expected,
        "exactly two files and their checksums"
    );
    w.assert_every_file_has_a_checksum("vm"); // sha256sum -c on each
    assert!(
        w.backup_snapshots("vm").is_empty(),
        "full mode leaves no snapshot"
    );
    for (index, (name, bytes)) in backed_up[2..].iter().enumerate() {
        let restored = import_full(&w, "vm", name, &format!("vm-restored-{index}"));
        assert!(
            same_bytes(&restored, bytes),
            "{name} does not restore bit for bit"
        );
    }
    list_and_check_follow_keep_last(&w, &conf, &kept);
}

/// `list` says which rule keeps each of the `kept` fulls; tightened to one, it says the older
/// one goes with the next run, and `--check` shows that run removing both (its own backup is
/// then the one kept) while changing nothing.
fn list_and_check_follow_keep_last(w: &World, conf: &Path, kept: &[String]) {
    let dir = w.image_dir("vm");
    let run = list(w, conf, false);
    assert!(
        run.stdout
            .contains("  retention: full mode, keep last = 2\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("      kept: by keep last (1 of 2)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("      kept: by keep last (2 of 2); at the edge of every rule"),
        "{}",
        run.stdout
    );
    let tight = w.config("images = vm\nbackup mode = full\nkeep last = 1");
    let run = list(w, &tight, true);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let chains = json["images"][0]["chains"].as_array().unwrap().clone();
    let removals: Vec<&str> = chains
        .iter()
        .map(|c| c["files"][0]["expiry"]["removal"].as_str().unwrap())
        .collect();
    assert_eq!(removals, ["next_run", "kept"]);
    assert_eq!(
        chains[0]["files"][0]["expiry"]["text"],
        "removed by the next run: no keep rule holds it (keep last = 1)"
    );
    let tree = w.dest_tree();
    let run = w
        .cephbackup(&["--check", "-c", tight.to_str().unwrap()])
        .success();
    for name in kept {
        let line = format!("Removing file {}", dir.join(name).display());
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    assert!(run.stderr.contains("keep last = 1"), "{}", run.stderr);
    assert_eq!(w.dest_tree(), tree, "check mode changes nothing");
}

#[test]
fn a_full_backup_that_fails_never_prunes() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 81);
    let keep_all = w.config("images = vm\nbackup mode = full");
    w.backup(&keep_all).success();
    next_second();
    w.backup(&keep_all).success();
    let before = w.all_files("vm");
    assert_eq!(before.len(), 4, "{before:?}");

    // Folders named like the backup files of the next seconds make this run's export fail
    // ("exists already") after its snapshot is taken: the run stops there.
    let keep_one = w.config("images = vm\nbackup mode = full\nkeep last = 1");
    next_second();
    let now = chrono::Utc::now();
    let blockers: Vec<std::path::PathBuf> = (0..60)
        .map(|s| {
            let snap = (now + TimeDelta::seconds(s)).format("BACKUPUTC%Y%m%dT%H%M%S");
            w.image_dir("vm").join(format!("vm@{snap}.full"))
        })
        .collect();
    for blocker in &blockers {
        fs::create_dir(blocker).unwrap();
    }
    let run = w.backup(&keep_one).code(1);
    // The run either finds the names taken before its snapshot (it waits a few seconds for a
    // free one, then gives up) or fails its export: either way it stops before pruning.
    let error = run.first_error();
    assert!(
        error.contains("exists already") || error.contains("is taken already"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("Removing file"), "{}", run.stdout);
    for blocker in &blockers {
        fs::remove_dir(blocker).unwrap();
    }
    assert_eq!(w.all_files("vm"), before, "a failed run removes nothing");
    assert!(
        w.backup_snapshots("vm").is_empty(),
        "its snapshot was rolled back"
    );

    // The next run that succeeds prunes.
    next_second();
    w.backup(&keep_one).success();
    assert_eq!(fulls(&w, "vm").len(), 1);
    w.assert_every_file_has_a_checksum("vm");
}

#[test]
fn an_outage_longer_than_the_window_keeps_keep_minimum_points_and_they_restore() {
    let w = World::new();
    w.create_image("vm", 24 * MIB, 90);
    // Daily backups 10, 9 and 8 days ago, then nothing: a 2-day window has long passed.
    let old = history(&w, "vm", &[240, 216, 192]);
    let (a, b, c) = (&old[0], &old[1], &old[2]);
    let conf = w.config(
        "images = vm\nbackup mode = incremental\nwindow size = 2\nwindow unit = days\n\
         keep minimum = 3",
    );
    let run = w.backup(&conf).success();

    let snaps = w.backup_snapshots("vm");
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    assert_eq!((&snaps[0], &snaps[1]), (b, c), "the oldest snapshot went");
    let t = &snaps[2];
    let full = format!("vm@{b}.full");
    let diff_c = format!("vm@{c}.diff_from_{b}");
    let diff_t = format!("vm@{t}.diff_from_{c}");
    assert_eq!(
        w.files("vm"),
        [full.clone(), diff_c.clone(), diff_t.clone()]
    );
    let dir = w.image_dir("vm");
    for line in [
        format!("Exporting image vm@{b} to {}", dir.join(&full).display()),
        format!(
            "Removing file {}",
            dir.join(format!("vm@{a}.full")).display()
        ),
        format!(
            "Removing file {}",
            dir.join(format!("vm@{b}.diff_from_{a}")).display()
        ),
        format!("Deleting snapshot {}@{a}", w.spec("vm")),
        format!(
            "Exporting diff {c} -> vm@{t} to {}",
            dir.join(&diff_t).display()
        ),
    ] {
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    assert!(
        run.stderr.contains("fewer than keep minimum = 3"),
        "the reason names the policy:\n{}",
        run.stderr
    );
    restore_by_hand(&w, "vm", &[&full, &diff_c, &diff_t], "vm-restored");

    // list: the oldest point goes with the next run (which leaves three without it); the
    // others are held while fewer than three newer points exist.
    let run = list(&w, &conf, false);
    let two_days = TimeDelta::days(2);
    for line in [
        "  retention: incremental, window of 2 days, keep minimum = 3".to_string(),
        format!(
            "      removed by the next run (left the window of 2 days after {})",
            shown_time(b, two_days)
        ),
        format!(
            "      kept while fewer than 3 newer restore points exist (1 now, keep minimum = 3); \
             left the window of 2 days after {}",
            shown_time(c, two_days)
        ),
        format!(
            "      kept while fewer than 3 newer restore points exist (0 now, keep minimum = 3); \
             leaves the window of 2 days after {}",
            shown_time(t, two_days)
        ),
    ] {
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    let json: serde_json::Value = serde_json::from_str(&list(&w, &conf, true).stdout).unwrap();
    let files = json["images"][0]["chains"][0]["files"]
        .as_array()
        .unwrap()
        .clone();
    let removals: Vec<&str> = files
        .iter()
        .map(|f| f["expiry"]["removal"].as_str().unwrap())
        .collect();
    assert_eq!(removals, ["next_run", "keep_minimum", "keep_minimum"]);
    assert_eq!(files[2]["expiry"]["keep_minimum"], 3);
}

#[test]
fn keep_minimum_above_what_exists_keeps_every_point() {
    let w = World::new();
    w.create_image("vm", 16 * MIB, 91);
    let old = history(&w, "vm", &[240, 216]);
    let (a, b) = (&old[0], &old[1]);
    let conf = w.config(
        "images = vm\nbackup mode = incremental\nwindow size = 2\nwindow unit = days\n\
         keep minimum = 10\ncompress = yes",
    );
    let run = w.backup(&conf).success();
    assert!(!run.stdout.contains("Removing file"), "{}", run.stdout);
    assert!(!run.stdout.contains("Deleting snapshot"), "{}", run.stdout);
    let snaps = w.backup_snapshots("vm");
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    let t = &snaps[2];
    let full = format!("vm@{a}.full");
    let diff_b = format!("vm@{b}.diff_from_{a}");
    let diff_t = format!("vm@{t}.diff_from_{b}.tar.gz");
    assert_eq!(
        w.files("vm"),
        [full.clone(), diff_b.clone(), diff_t.clone()]
    );
    assert!(
        run.stderr
            .contains("but keep minimum = 10 keeps every earlier restore point"),
        "{}",
        run.stderr
    );
    restore_by_hand(&w, "vm", &[&full, &diff_b, &diff_t], "vm-restored");
}

//! Full and incremental backups, plain and compressed, restored with the stock tools.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

fn full_mode(compress: bool) {
    let w = World::new();
    w.create_image("vm1", 32 * MIB, 1);
    rbd(&["snap", "create", &format!("{}@nightly", w.spec("vm1"))]);
    let source = w.export("vm1", None);
    let conf = w.config(&format!(
        "images = vm1\nbackup mode = full\ncompress = {}",
        if compress { "yes" } else { "no" }
    ));
    let run = w.backup(&conf).success();
    assert!(run.stdout.contains("Full ceph backup\n"), "{}", run.stdout);
    assert!(run.stdout.contains("Taking full backup of images: vm1\n"));
    assert!(run.stdout.contains(&format!(
        "Compression: {}",
        if compress { "True" } else { "False" }
    )));

    let files = w.files("vm1");
    assert_eq!(files.len(), 1, "{files:?}");
    let name = &files[0];
    let suffix = if compress { ".full.tar.gz" } else { ".full" };
    assert!(
        name.starts_with("vm1@BACKUPUTC") && name.ends_with(suffix),
        "{name}"
    );
    assert_eq!(
        w.snapshots("vm1"),
        ["nightly"],
        "the temporary snapshot is removed and the user's snapshot kept"
    );
    let path = w.image_dir("vm1").join(name);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(w.image_dir("vm1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    w.assert_every_file_has_a_checksum("vm1");
    restore_by_hand_head(&w, name, "restored", &source);
}

/// A full backup's snapshot is gone after the run, so the restore is compared with the image as
/// it was exported just before the run (nothing wrote to it in between).
fn restore_by_hand_head(w: &World, name: &str, target: &str, source: &[u8]) {
    let mut path = w.image_dir("vm1").join(name);
    if let Some(raw) = name.strip_suffix(".tar.gz") {
        assert_eq!(tar_list(&path), [raw]);
        path = untar(&path, &w.tmp.path().join("unpacked")).join(raw);
    }
    rbd_with_stdin(&["import", "-", &w.spec(target)], &path);
    assert!(same_bytes(&w.export(target, None), source));
}

#[test]
fn full_mode_uncompressed_restores_bit_for_bit() {
    full_mode(false);
}

#[test]
fn full_mode_compressed_restores_bit_for_bit() {
    full_mode(true);
}

fn incremental_chain(compress: bool) {
    let w = World::new();
    w.create_image("db", 48 * MIB, 10);
    let conf = w.config(&format!(
        "images = db\nbackup mode = incremental\nwindow size = 7\nwindow unit = days\ncompress = {compress}"
    ));
    let mut chain = Vec::new();
    for round in 0..3u64 {
        if round > 0 {
            w.write_data("db", 10 + round);
            next_second();
        }
        let run = w.backup(&conf).success();
        assert!(run.stdout.contains("Incremental ceph backup\n"));
        let snaps = w.backup_snapshots("db");
        assert_eq!(
            snaps.len(),
            usize::try_from(round).unwrap() + 1,
            "{snaps:?}"
        );
        let new = snaps.last().unwrap();
        let suffix = if compress { ".tar.gz" } else { "" };
        let expected = if round == 0 {
            format!("db@{new}.full{suffix}")
        } else {
            format!("db@{new}.diff_from_{}{suffix}", snaps[snaps.len() - 2])
        };
        assert_eq!(
            w.files("db").last().map(String::as_str),
            Some(expected.as_str()),
            "{:?}",
            w.files("db")
        );
        let verb = if round == 0 {
            "Exporting image"
        } else {
            "Exporting diff"
        };
        assert!(run.stdout.contains(verb), "{}", run.stdout);
        chain.push(expected);
    }
    assert_eq!(w.files("db").len(), 3);
    w.assert_every_file_has_a_checksum("db");
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    restore_by_hand(&w, "db", &chain, "db-restored");
}

#[test]
fn incremental_chain_restores_every_point_with_stock_tools() {
    incremental_chain(false);
}

#[test]
fn compressed_incremental_chain_restores_every_point_with_stock_tools() {
    incremental_chain(true);
}

#[test]
fn a_chain_written_by_the_original_is_continued_without_a_new_full() {
    let w = World::new();
    w.create_image("legacy", 16 * MIB, 20);
    // What the original leaves after its first run: the snapshot, and the export under its name.
    let s0 = chrono::Utc::now() - chrono::Duration::hours(1);
    let s0 = s0.format("BACKUPUTC%Y%m%dT%H%M%S").to_string();
    rbd(&["snap", "create", &format!("{}@{s0}", w.spec("legacy"))]);
    let dir = w.image_dir("legacy");
    fs::create_dir_all(&dir).unwrap();
    let full = dir.join(format!("legacy@{s0}.full"));
    rbd(&[
        "export",
        &format!("{}@{s0}", w.spec("legacy")),
        full.to_str().unwrap(),
    ]);
    w.write_data("legacy", 21);

    let conf = w.config("images = legacy\nbackup mode = incremental");
    let run = w.backup(&conf).success();
    assert!(!run.stdout.contains("Exporting image"), "{}", run.stdout);
    let snaps = w.backup_snapshots("legacy");
    assert_eq!(snaps.len(), 2);
    let diff = format!("legacy@{}.diff_from_{s0}", snaps[1]);
    assert_eq!(
        w.files("legacy"),
        [format!("legacy@{s0}.full"), diff.clone()]
    );
    restore_by_hand(
        &w,
        "legacy",
        &[&format!("legacy@{s0}.full"), &diff],
        "legacy-restored",
    );
}

#[test]
fn the_run_ends_with_a_summary() {
    let w = World::new();
    w.create_image("a", 8 * MIB, 30);
    let conf = w.config("images = a\nbackup mode = full");
    let run = w.backup(&conf).success();
    let summary = run.stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("Summary: 1 image(s) backed up, 0 failed, "),
        "{summary}"
    );
}

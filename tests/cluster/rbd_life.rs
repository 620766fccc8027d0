//! Ordinary RBD life a backup must live with: an image at its snapshot limit, image names near
//! the longest a file name may be, and backups shared with a group of readers.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::harness::*;

/// The image folder's files and their contents (a failed run still leaves its last-run record
/// in the destination).
fn backups_of(w: &World) -> std::collections::BTreeMap<String, (u32, Vec<u8>)> {
    tree_of(&w.image_dir("vm"))
}

/// The position of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
}

#[test]
fn an_image_at_its_snapshot_limit_makes_room_with_the_window_first() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 1600);
    // Nine days, three days and an hour old: a window of two days lets the first two go.
    let old = history(&w, "vm", &[24 * 9, 24 * 3, 1]);
    let spec = w.spec("vm");
    rbd(&["snap", "limit", "set", "--limit", "3", &spec]);
    let conf =
        w.config("images = vm\nbackup mode = incremental\nwindow size = 2\nwindow unit = days");

    // Check mode shows the window's removals before the snapshot, and changes nothing.
    let before = w.dest_tree();
    let check = with_conf(&w, &conf, &["--check"]).success();
    assert!(
        !check.stderr.contains("snapshot limit"),
        "check mode plans within the limit from the start: {}",
        check.stderr
    );
    let create = line_of(&check.stdout, " snap create ");
    for snap in &old[..2] {
        assert!(
            line_of(&check.stdout, &format!("Deleting snapshot {spec}@{snap}")) < create,
            "{}",
            check.stdout
        );
    }
    assert!(
        w.dest_tree() == before,
        "check mode changed the destination"
    );
    assert_eq!(w.backup_snapshots("vm"), old);

    let run = w.backup(&conf).success();
    assert!(
        run.stderr.contains("at its snapshot limit (3)"),
        "{}",
        run.stderr
    );
    let kept = w.backup_snapshots("vm");
    assert_eq!(kept.len(), 2, "{kept:?}\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(kept[0], old[2]);
    let (s, t) = (&kept[0], &kept[1]);
    let full = format!("vm@{s}.full");
    let diff = format!("vm@{t}.diff_from_{s}");
    assert_eq!(w.files("vm"), [full.clone(), diff.clone()]);
    restore_by_hand(&w, "vm", &[&full, &diff], "restored");

    // With no snapshot the window lets go, the run says what to do before it changes anything,
    // and check mode says the same.
    rbd(&["snap", "limit", "set", "--limit", "2", &spec]);
    next_second();
    let before = backups_of(&w);
    for args in [&["--check"][..], &[][..]] {
        let failed = with_conf(&w, &conf, args).code(1);
        let error = failed.first_error();
        assert!(
            error.contains("has 2 snapshots and its snapshot limit is 2")
                && error.contains("rbd snap limit set --limit 3"),
            "{args:?}: {}",
            failed.stderr
        );
        assert_eq!(w.backup_snapshots("vm"), [s.clone(), t.clone()]);
        assert!(
            backups_of(&w) == before,
            "{args:?} changed the image folder"
        );
    }
    // Room again: the chain goes on.
    rbd(&["snap", "limit", "clear", &spec]);
    w.backup(&conf).success();
    assert_eq!(w.backup_snapshots("vm").len(), 3);
}

#[test]
fn image_names_too_long_for_file_names_are_refused_before_any_snapshot() {
    let w = World::new();
    let long = "l".repeat(250);
    w.create_image(&long, 4 * MIB, 1610);
    w.create_image("short", 4 * MIB, 1611);
    let conf = w.config(&format!(
        "images = short, {long}\nbackup mode = incremental"
    ));
    let refused = w.backup(&conf).code(2);
    let error = refused.first_error();
    assert!(
        error.contains(&long)
            && error.contains("is 250 bytes long")
            && error.contains("at most 180"),
        "{}",
        refused.stderr
    );
    assert!(w.snapshots(&long).is_empty() && w.snapshots("short").is_empty());

    // `images = *`: that image fails before its snapshot, the others are backed up.
    let conf = w.config("images = *\nbackup mode = incremental");
    let run = w.backup(&conf).code(1);
    assert!(run.stderr.contains("is 250 bytes long"), "{}", run.stderr);
    assert!(w.snapshots(&long).is_empty());
    assert_eq!(w.backup_snapshots("short").len(), 1);
    assert!(!w.image_dir(&long).exists());
}

#[test]
fn the_longest_image_name_that_fits_backs_up_and_restores() {
    let w = World::new();
    // 180 bytes: its compressed diffs' checksum files are exactly 255.
    let name = "n".repeat(180);
    w.create_image(&name, 8 * MIB, 1620);
    let conf = w.config(&format!(
        "images = {name}\nbackup mode = incremental\ncompress = zstd"
    ));
    w.backup(&conf).success();
    next_second();
    w.write_data(&name, 1621);
    w.backup(&conf).success();
    let files = w.files(&name);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(w
        .all_files(&name)
        .iter()
        .any(|f| f.len() == 255 && f.ends_with(".tar.zst.sha256")));
    let snaps = w.backup_snapshots(&name);
    for (index, snap) in snaps.iter().enumerate() {
        let target = format!("restored-{index}");
        w.restore(&conf, &name)
            .into_image(&target)
            .at(snap)
            .run()
            .success();
        assert!(same_bytes(
            &w.export(&target, None),
            &w.export(&name, Some(snap))
        ));
    }
    // A full-mode section takes it too.
    let conf = w.config(&format!(
        "images = {name}\nbackup mode = full\ncompress = zstd"
    ));
    w.backup(&conf).success();
    assert_eq!(w.files(&name).len(), 3);
}

/// Every folder and file below `root` (the root itself excluded), with its mode and group.
fn modes_below(root: &Path) -> Vec<(String, u32, u32)> {
    let mut found = Vec::new();
    let mut queue = vec![root.to_path_buf()];
    while let Some(dir) = queue.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                queue.push(path.clone());
            }
            found.push((
                path.strip_prefix(root).unwrap().display().to_string(),
                meta.mode() & 0o7777,
                meta.gid(),
            ));
        }
    }
    found.sort();
    found
}

#[test]
fn a_file_group_may_read_every_backup_file_and_folder_and_nobody_else() {
    let w = World::new();
    w.create_image("vm", 16 * MIB, 1630);
    let group = "daemon";
    let gid = cephbackup::test_support::FileGroup::lookup(group)
        .unwrap()
        .gid;
    assert_ne!(gid, 0);
    // A window slide builds its new base in the folder (in place, from checksummed files the
    // test wrote as another program would, 0644 in 0755 folders): that file is covered too, and
    // the folders are the tool's to open to the group.
    crate::slide::sized_history(&w, "vm", &[(24 * 9, 16 * MIB), (24 * 3, 16 * MIB)], false);
    let conf = w.config(&format!(
        "images = vm\nbackup mode = incremental\nwindow size = 7\nwindow unit = days\n\
         file group = {group}"
    ));
    let run = w.backup(&conf).success();
    assert!(run.stdout.contains("Building image"), "{}", run.stdout);
    next_second();
    w.write_data("vm", 1631);
    w.backup(&conf).success();
    // A full-mode section, compressed, into the same destination.
    next_second();
    w.backup(&w.config(&format!(
        "images = vm\nbackup mode = full\ncompress = yes\n[DEFAULT]\nfile group = {group}"
    )))
    .success();

    let written = modes_below(&w.dest);
    let dir = format!("{}/vm", w.pool);
    let recent: Vec<&(String, u32, u32)> = written
        .iter()
        .filter(|(path, _, _)| !path.starts_with(".cephbackup-last-run"))
        .collect();
    assert!(recent.iter().any(|(p, _, _)| p.ends_with(".sha256")));
    assert!(recent.iter().any(|(p, _, _)| p.ends_with(".tar.gz")));
    assert!(recent
        .iter()
        .any(|(p, _, _)| p.ends_with(".cephbackup-image.json")));
    assert!(recent
        .iter()
        .any(|(p, _, _)| p == ".cephbackup-destination.json"));
    for (path, mode, file_gid) in recent {
        let is_folder = *path == w.pool || *path == dir;
        let expected = if is_folder { 0o750 } else { 0o640 };
        assert_eq!(
            (*mode, *file_gid),
            (expected, gid),
            "{path}: {mode:o} group {file_gid}"
        );
    }
    w.assert_checksums("vm");
}

#[test]
fn an_unknown_file_group_is_a_configuration_error_naming_its_line() {
    let w = World::new();
    w.create_image("vm", 4 * MIB, 1640);
    let conf = w.config("images = vm\nbackup mode = full\nfile group = no-such-group-here");
    let run = w.backup(&conf).code(2);
    assert!(
        run.stderr.contains(":6: [") && run.stderr.contains("unknown group \"no-such-group-here\""),
        "{}",
        run.stderr
    );
    assert!(w.snapshots("vm").is_empty());
}

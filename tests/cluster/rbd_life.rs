//! Ordinary RBD life a backup must live with: an image at its snapshot limit, image names near
//! the longest a file name may be, and backups shared with a group of readers.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::harness::*;

fn run_with(w: &World, conf: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["-c", conf.to_str().unwrap()];
    args.extend_from_slice(extra);
    w.cephbackup(&args)
}

#[test]
fn image_names_too_long_for_file_names_are_refused_before_any_snapshot() {
    let w = World::new();
    let long = "l".repeat(250);
    w.create_image(&long, 4 * MIB, 1610);
    w.create_image("short", 4 * MIB, 1611);
    let conf = w.config(&format!("images = short, {long}\nbackup mode = incremental"));
    let refused = w.backup(&conf).code(2);
    let error = refused.first_error();
    assert!(
        error.contains(&long) && error.contains("is 250 bytes long") && error.contains("at most 180"),
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
        run_with(
            &w,
            &conf,
            &[
                "restore", "--pool", &w.pool, "--image", &name, "--to", &target, "--at", snap,
            ],
        )
        .success();
        assert!(same_bytes(
            &w.export(&target, None),
            &w.export(&name, Some(snap))
        ));
    }
    // A full-mode section takes it too.
    let conf = w.config(&format!("images = {name}\nbackup mode = full\ncompress = zstd"));
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
    let gid = cephbackup::folder::access::FileGroup::lookup(group)
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
        run.stderr
            .contains(":6: [") && run.stderr.contains("unknown group \"no-such-group-here\""),
        "{}",
        run.stderr
    );
    assert!(w.snapshots("vm").is_empty());
}

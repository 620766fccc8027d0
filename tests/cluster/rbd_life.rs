//! Ordinary RBD life a backup must live with: image names near the longest a file name may be.

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

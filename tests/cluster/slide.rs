//! Window slides, with old history simulated by snapshot and file names.

use std::fs;

use crate::harness::*;

#[test]
fn the_window_slides_like_the_original_and_the_chain_still_restores() {
    let w = World::new();
    w.create_image("vm", 32 * MIB, 50);
    rbd(&["snap", "create", &format!("{}@keep-me", w.spec("vm"))]);
    let old = history(&w, "vm", &[240, 72, 24]);
    let (a, b, c) = (&old[0], &old[1], &old[2]);
    fs::write(w.image_dir("vm").join("README.txt"), "notes").unwrap();

    let conf =
        w.config("images = vm\nbackup mode = incremental\nwindow size = 7\nwindow unit = days");
    let run = w.backup(&conf).success();

    let snaps = w.backup_snapshots("vm");
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    assert_eq!((&snaps[0], &snaps[1]), (b, c));
    let t = &snaps[2];
    assert!(w.snapshots("vm").contains(&"keep-me".to_string()));
    let full = format!("vm@{b}.full");
    let diff_c = format!("vm@{c}.diff_from_{b}");
    let diff_t = format!("vm@{t}.diff_from_{c}");
    let mut expected = vec![
        full.clone(),
        diff_c.clone(),
        diff_t.clone(),
        "README.txt".into(),
    ];
    expected.sort();
    assert_eq!(w.files("vm"), expected);

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
        format!("WARNING: unexpected file in {}: README.txt", dir.display()),
    ] {
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    restore_by_hand(&w, "vm", &[&full, &diff_c, &diff_t], "vm-restored");
}

#[test]
fn a_run_after_the_whole_window_has_passed_keeps_only_a_new_full() {
    let w = World::new();
    w.create_image("old", 16 * MIB, 60);
    history(&w, "old", &[24 * 30, 24 * 20]);
    let conf = w.config("images = old\nbackup mode = incremental\nwindow size = 1\nwindow unit = week\ncompress = yes");
    w.backup(&conf).success();
    let snaps = w.backup_snapshots("old");
    assert_eq!(snaps.len(), 1);
    let full = format!("old@{}.full.tar.gz", snaps[0]);
    assert_eq!(w.files("old"), std::slice::from_ref(&full));
    restore_by_hand(&w, "old", &[&full], "old-restored");
}

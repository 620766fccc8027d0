//! `cephbackup list`: chains written by the tool and by the original, and what does not fit.

use std::fs;

use crate::chains::*;
use crate::harness::*;

#[test]
fn list_shows_chains_points_and_problems() {
    let w = World::new();
    let (conf, snaps) = backed_up_chain(&w, "vm", 3, true);
    // An image backed up by the original: legacy names, nested member, no checksums, and a
    // diff whose base is gone.
    let old_dir = w.image_dir("old");
    fs::create_dir_all(&old_dir).unwrap();
    let (u0, u1) = ("UTC20170119T092933", "UTC20170120T092933");
    let old_full = old_dir.join(format!("old@{u0}.full"));
    fs::write(&old_full, vec![1u8; 1 << 20]).unwrap();
    compress_like_the_original(&old_full);
    fs::write(
        old_dir.join(format!("old@UTC20170122T092933.diff_from_{u1}")),
        b"not read by list",
    )
    .unwrap();
    fs::write(old_dir.join(".cephbackup-tmp.AbCd12"), b"").unwrap();
    fs::write(old_dir.join("notes.txt"), b"").unwrap();

    let run = with_conf(&w, &conf, &["list"]).success();
    let vm_dir = w.image_dir("vm");
    let expected_head = format!(
        "{}/old: 1 restore point, 2017-01-19 09:29:33 UTC to 2017-01-19 09:29:33 UTC",
        w.pool
    );
    assert!(run.stdout.contains(&expected_head), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "{}/vm: 3 restore points, {} to {}",
            w.pool,
            snaps[0]
                .strip_prefix("BACKUPUTC")
                .map(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S").unwrap())
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S UTC"),
            snaps[2]
                .strip_prefix("BACKUPUTC")
                .map(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S").unwrap())
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S UTC"),
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&vm_dir.display().to_string()));
    for line in [
        format!("  chain from full backup {} (3 restore points):", snaps[0]),
        format!("    {}  diff ", snaps[2]),
        format!("  chain from full backup {u0} (1 restore point):"),
        format!("    {u0}  full "),
        "  warning: .cephbackup-tmp.AbCd12: temporary file of an interrupted run".to_string(),
        "  warning: notes.txt: not a backup file of this image".to_string(),
        format!("  error: old@UTC20170122T092933.diff_from_{u1}: starts from {u1}, but no backup file ends at {u1} (missing link): not restorable"),
    ] {
        assert!(run.stdout.contains(&line), "missing {line:?} in\n{}", run.stdout);
    }
    // Our files are compressed and have checksums; the original's compressed full has none.
    assert!(run.stdout.contains("  gzip  sha256  vm@"), "{}", run.stdout);
    assert!(run
        .stdout
        .contains(&format!("  gzip  no-sum  old@{u0}.full.tar.gz")));

    let listing = w.list_json(&conf, &["--image", "vm"], 0);
    let images = listing.images();
    assert_eq!(images.len(), 1);
    let vm = &images[0];
    assert_eq!(vm["pool"], w.pool.as_str());
    assert_eq!(listing.points(0), snaps);
    crate::monitoring::assert_schema("list", &listing.0);
    let files = vm["chains"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files[0]["kind"], "full");
    assert_eq!(files[1]["base"], snaps[0].as_str());
    for file in files {
        assert_eq!(file["compressed"], true);
        let name = file["file"].as_str().unwrap();
        assert_eq!(
            file["bytes"].as_u64().unwrap(),
            fs::metadata(vm_dir.join(name)).unwrap().len()
        );
        assert_eq!(file["checksum_file"], format!("{name}.sha256"));
    }
    assert_eq!(vm["findings"], serde_json::json!([]));

    let listing = w.list_json(&conf, &["--image", "old"], 0);
    assert_eq!(
        listing.finding_kinds(0),
        ["temporary", "unexpected", "missing_link"]
    );
}

#[test]
fn list_narrows_and_reports_what_is_missing() {
    let w = World::new();
    let conf = w.config("images = *\nbackup mode = full");
    let run = with_conf(&w, &conf, &["list"]).success();
    assert_eq!(run.stdout, "No backups found.\n");
    let run = with_conf(&w, &conf, &["list", "--pool", "other"]).code(2);
    assert!(run.stderr.contains("no section [other]"), "{}", run.stderr);
    let run = with_conf(&w, &conf, &["list", "--image", "ghost"]).code(1);
    assert!(
        run.stderr.contains("no backups of image ghost"),
        "{}",
        run.stderr
    );
    let gone = w.tmp.path().join("unmounted");
    let conf = config_at(&w, "unmounted.conf", &gone, &cluster().conf);
    let run = with_conf(&w, &conf, &["list"]).code(1);
    assert!(
        run.stderr.contains("is the backup disk mounted?"),
        "{}",
        run.stderr
    );
}

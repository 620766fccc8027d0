//! What must outlive a destination, kept by the host: files shipped with their records continue
//! their chains, a backup disk that did not mount is refused in every mode, check mode and a
//! real run decide alike, and records the tool did not seal (a forged one, a folder at a
//! record's name) never remove a snapshot or stop a backup.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// The snapshot names of an image given as `pool/image`.
fn snapshots_of(spec: &str) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_slice(&rbd(&["snap", "ls", "--format", "json", spec])).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn run(w: &World, conf: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["-c", conf.to_str().unwrap()];
    args.extend_from_slice(extra);
    w.cephbackup(&args)
}

/// A config file of its own (`name`) for this world's pool and destination.
fn conf_named(w: &World, name: &str, extra: &str) -> PathBuf {
    w.config_named(name, &w.dest, extra)
}

/// Moves every file under `from` (dotfiles included) to the same place under `to`, as
/// `rsync -a --remove-source-files from/ to/` does; with `prune`, then removes the emptied
/// folders below `from` too.
fn ship(from: &Path, to: &Path, prune: bool) {
    fn walk(root: &Path, dir: &Path, to: &Path, prune: bool) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap();
            if path.is_dir() {
                if relative == Path::new("lost+found") {
                    continue;
                }
                walk(root, &path, to, prune);
                if prune {
                    fs::remove_dir(&path).unwrap();
                }
            } else {
                let target = to.join(relative);
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                // Across filesystems (off a loop-mounted disk), a copy and a removal.
                if fs::rename(&path, &target).is_err() {
                    fs::copy(&path, &target).unwrap();
                    fs::remove_file(&path).unwrap();
                }
            }
        }
    }
    walk(from, from, to, prune);
}

#[test]
fn files_shipped_with_their_records_continue_with_a_diff_every_night() {
    for prune in [false, true] {
        let w = World::new();
        w.create_image("vm", 8 * MIB, 1100);
        let conf = w.config("images = vm\nbackup mode = incremental");
        let offsite = w.tmp.path().join("offsite");
        run(&w, &conf, &[]).success();
        ship(&w.dest, &offsite, prune);
        for night in 0..2 {
            next_second();
            w.write_data("vm", 1101 + night);
            let after = run(&w, &conf, &[]).success();
            assert!(
                after.stdout.contains("Exporting diff"),
                "prune {prune}, night {night}: a diff, not a full\n{}\n{}",
                after.stdout,
                after.stderr
            );
            assert!(
                !after.stdout.contains("Deleting snapshot"),
                "{}",
                after.stdout
            );
            if prune {
                assert!(
                    after.stderr.contains("shipped or removed since"),
                    "{}",
                    after.stderr
                );
            }
            ship(&w.dest, &offsite, prune);
        }
        assert_eq!(w.backup_snapshots("vm").len(), 3);
        // The chain, put back together from what was shipped, restores every point.
        let shipped = offsite.join(&w.pool).join("vm");
        let mut chain: Vec<String> = fs::read_dir(&shipped)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("vm@") && !n.ends_with(".sha256"))
            .collect();
        chain.sort_by_key(|n| n.split_once('@').unwrap().1.to_string());
        assert_eq!(chain.len(), 3, "{chain:?}");
        ship(&shipped, &w.image_dir("vm"), false);
        let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
        restore_by_hand(&w, "vm", &chain, "vm-restored");
    }
}

/// A loop-mounted ext4 filesystem on the world's destination, unmounted when dropped.
struct LoopDisk {
    image: PathBuf,
    mount_point: PathBuf,
    mounted: bool,
}

impl LoopDisk {
    /// `None`, with the reason printed, where loop devices cannot be used.
    fn new(w: &World) -> Option<LoopDisk> {
        let image = w.tmp.path().join("disk.img");
        let made = Command::new("truncate")
            .args(["-s", "64M"])
            .arg(&image)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&image)
                .status()
                .is_ok_and(|s| s.success());
        if !made {
            eprintln!("skipped: cannot make an ext4 image (truncate, mkfs.ext4)");
            return None;
        }
        let mut disk = LoopDisk {
            image,
            mount_point: w.dest.clone(),
            mounted: false,
        };
        if let Err(why) = disk.mount() {
            eprintln!("skipped: loop devices are not available here: {why}");
            return None;
        }
        Some(disk)
    }

    fn mount(&mut self) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&self.image)
            .arg(&self.mount_point)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        self.mounted = true;
        Ok(())
    }

    fn unmount(&mut self) {
        let status = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .unwrap();
        assert!(status.success(), "umount {}", self.mount_point.display());
        self.mounted = false;
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount_point).status();
        }
    }
}

#[test]
fn a_backup_disk_that_did_not_mount_is_refused_in_every_mode_and_continues_once_mounted() {
    let w = World::new();
    let Some(mut disk) = LoopDisk::new(&w) else {
        return;
    };
    w.create_image("vm", 8 * MIB, 1110);
    let incremental = conf_named(&w, "daily.conf", "images = vm\nbackup mode = incremental");
    let full = conf_named(&w, "weekly.conf", "images = vm\nbackup mode = full");
    run(&w, &incremental, &[]).success();
    next_second();
    run(&w, &full, &[]).success();

    // The disk did not mount: the destination is the empty folder under it, on another
    // filesystem. Every mode refuses it and nothing changes anywhere.
    disk.unmount();
    let snapshots = w.snapshots("vm");
    let dest_before = w.dest_tree();
    let state_before = tree_of(&w.state);
    for conf in [&incremental, &full] {
        for extra in [&["--check"][..], &[][..]] {
            next_second();
            let refused = run(&w, conf, extra).code(1);
            let error = refused.first_error();
            for needle in [
                format!(
                    "error: pool {}: destination directory {} is empty and on ",
                    w.pool,
                    w.dest.display()
                ),
                "where this host wrote its backups before".to_string(),
                "(is the backup disk mounted?)".to_string(),
                "nothing was changed".to_string(),
                format!("cephbackup init-destination -c {}", conf.display()),
            ] {
                assert!(error.contains(&needle), "{needle:?} not in {error}");
            }
            assert_eq!(w.snapshots("vm"), snapshots, "{extra:?}");
            assert_eq!(w.dest_tree(), dest_before, "{extra:?}");
            assert_eq!(tree_of(&w.state), state_before, "{extra:?}");
        }
    }

    // Mounted again, the chain continues with a diff.
    disk.mount().unwrap();
    next_second();
    let back = run(&w, &incremental, &[]).success();
    assert!(back.stdout.contains("Exporting diff"), "{}", back.stdout);

    // Emptied on purpose on the same filesystem: continues too, from the host's memory.
    ship(&w.dest, &w.tmp.path().join("elsewhere"), true);
    next_second();
    let emptied = run(&w, &incremental, &[]).success();
    assert!(
        emptied.stdout.contains("Exporting diff"),
        "{}",
        emptied.stdout
    );
    assert!(
        emptied.stderr.contains("shipped or removed since"),
        "{}",
        emptied.stderr
    );

    // A fresh start on the other filesystem, on purpose: init-destination accepts it once.
    disk.unmount();
    run(&w, &incremental, &[]).code(1);
    let init = run(&w, &incremental, &["init-destination"]).success();
    assert!(
        init.stdout.contains("marked as a cephbackup destination"),
        "{}",
        init.stdout
    );
    next_second();
    let fresh = run(&w, &incremental, &[]).success();
    assert!(fresh.stdout.contains("Exporting image"), "{}", fresh.stdout);
    assert!(
        !fresh.stdout.contains("Deleting snapshot"),
        "{}",
        fresh.stdout
    );
}

#[test]
fn check_mode_and_the_real_run_agree_on_a_shared_new_destination_in_either_order() {
    // Pool A's image has no snapshot; pool B's carries another job's. Both sections write into
    // one new, empty destination.
    for (later_mode, expected) in [("incremental", 1), ("full", 0)] {
        for b_first in [false, true] {
            let w = World::new();
            let other_pool = format!("{}-b", w.pool);
            create_pool(&other_pool);
            w.create_image("a", 4 * MIB, 1120);
            rbd(&["create", "--size", "4M", &format!("{other_pool}/b")]);
            rbd(&[
                "snap",
                "create",
                &format!("{other_pool}/b@BACKUPUTC20200101T000000"),
            ]);
            let section = |pool: &str, image: &str, mode: &str| {
                format!(
                    "[{pool}]\nimages = {image}\nbackup mode = {mode}\ndestination directory = \
                     {}\nceph config = {}\n",
                    w.dest.display(),
                    cluster().conf.display()
                )
            };
            let a = section(&w.pool, "a", "incremental");
            let b = section(&other_pool, "b", later_mode);
            let conf = w.write_config(&if b_first { b + &a } else { a + &b });
            let before = w.dest_tree();
            let checked = run(&w, &conf, &["--check"]);
            assert_eq!(w.dest_tree(), before, "check mode changes nothing");
            assert!(!w.state.exists(), "check mode creates no state folder");
            let real = run(&w, &conf, &[]);
            let what = format!("b {later_mode}, b first: {b_first}");
            assert_eq!(
                (checked.code, real.code),
                (expected, expected),
                "{what}\ncheck:\n{}\n{}\nreal:\n{}\n{}",
                checked.stdout,
                checked.stderr,
                real.stdout,
                real.stderr
            );
            if expected == 1 {
                assert_eq!(w.dest_tree(), before, "{what}: refused as a whole");
                assert!(
                    real.first_error()
                        .contains("has backup snapshot BACKUPUTC20200101T000000"),
                    "{}",
                    real.stderr
                );
            }
            assert_eq!(
                snapshots_of(&format!("{other_pool}/b")),
                ["BACKUPUTC20200101T000000"],
                "{what}: the other job's snapshot is untouched"
            );
            remove_pool(&other_pool);
        }
    }
}

#[test]
fn a_forged_image_record_removes_no_snapshot() {
    let w = World::new();
    w.create_image("victim", 4 * MIB, 1130);
    let conf = w.config("images = victim, tiny\nbackup mode = incremental");
    // The victim's chain starts; its snapshot is what the forgery is after.
    let only_victim = conf_named(
        &w,
        "victim.conf",
        "images = victim\nbackup mode = incremental",
    );
    run(&w, &only_victim, &[]).success();
    let target = w.backup_snapshots("victim").pop().unwrap();

    // A user who can write into the destination makes an image whose bytes are a record
    // listing that snapshot as a pending temporary one, and lets the tool back it up: the file
    // is then the tool's own, root's, mode 600.
    let forged = serde_json::json!({
        "format": 1,
        "pool": w.pool,
        "image": "victim",
        "pending": [{
            "snapshot": target,
            "file": format!("victim@{target}.full"),
            "temporary": true,
            "pid": 1,
            "started": "2026-01-01T00:00:00Z",
        }],
        "newest": null,
    })
    .to_string();
    let mut bytes = forged.into_bytes();
    bytes.resize(4096, b' ');
    let raw = w.tmp.path().join("tiny.raw");
    fs::write(&raw, &bytes).unwrap();
    rbd(&["import", raw.to_str().unwrap(), &w.spec("tiny")]);
    next_second();
    run(&w, &conf, &[]).success();
    let made: Vec<String> = w
        .files("tiny")
        .into_iter()
        .filter(|f| f.ends_with(".full"))
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    let record = w.image_dir("victim").join(IMAGE_RECORD);
    fs::rename(w.image_dir("tiny").join(&made[0]), &record).unwrap();
    assert_eq!(fs::read(&record).unwrap(), bytes, "the file is the forgery");

    next_second();
    let after = run(&w, &only_victim, &[]).success();
    assert!(
        !after.stdout.contains("Deleting snapshot"),
        "{}",
        after.stdout
    );
    assert!(
        w.backup_snapshots("victim").contains(&target),
        "{target} survived"
    );
    assert!(
        after
            .stderr
            .contains(&format!("{}: carries no seal", record.display())),
        "{}",
        after.stderr
    );
    assert!(
        after
            .stderr
            .contains("no snapshot is removed on its account"),
        "{}",
        after.stderr
    );
    // The record is the tool's again, sealed.
    assert!(w.image_record("victim")["seal"].is_string());
}

#[test]
fn a_folder_at_a_record_name_is_reported_and_the_backups_go_on() {
    for record in [".cephbackup-image.json", ".cephbackup-destination.json"] {
        let w = World::new();
        w.create_image("vm", 4 * MIB, 1140);
        let conf = w.config("images = vm\nbackup mode = incremental");
        let at = if record == IMAGE_RECORD {
            w.image_dir("vm").join(record)
        } else {
            w.dest.join(record)
        };
        fs::create_dir_all(&at).unwrap();
        for night in 0..2 {
            if night > 0 {
                next_second();
                w.write_data("vm", 1141);
            }
            let ran = run(&w, &conf, &[]).success();
            assert!(
                ran.stderr.contains(&format!(
                    "{} is a folder, not the tool's record; it is left alone",
                    at.display()
                )),
                "{record}: {}",
                ran.stderr
            );
            let expected = if night == 0 {
                "Exporting image"
            } else {
                "Exporting diff"
            };
            assert!(ran.stdout.contains(expected), "{record}: {}", ran.stdout);
            assert!(at.is_dir(), "{record} is left alone");
        }
        assert_eq!(w.files("vm").len(), 2, "{:?}", w.files("vm"));
    }
}

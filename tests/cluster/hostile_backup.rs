//! The destination is untrusted ground, seen from a backup run: stray folders, links, FIFOs and
//! names that are not UTF-8 in an image folder, a pool folder replaced by a link, and a lock
//! folder others can write. Each case runs under a deadline that SIGKILLs; a case passes when the
//! run neither hangs nor writes outside the destination, the stray entry is left as it was, and
//! the image's backups go on and restore bit for bit.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::harness::*;

fn run_within(w: &World, args: &[&str], limit: Duration) -> Run {
    w.run_within(args, limit)
}

/// Restores the newest real point with `restore --to-file` and compares it with the snapshot.
fn assert_newest_restores(w: &World, conf: &Path, image: &str) {
    let snap = w.backup_snapshots(image).last().unwrap().clone();
    let out = w.tmp.path().join(format!("{image}-{snap}.raw"));
    let _ = fs::remove_file(&out);
    // A planted entry may claim a newer point; the real newest one is asked for.
    let restore = w.restore(conf, image).into_file(&out).at(&snap);
    run_within(w, &restore.args(), Duration::from_secs(120)).success();
    assert!(
        same_bytes(&fs::read(&out).unwrap(), &w.export(image, Some(&snap))),
        "the restored {image}@{snap} differs"
    );
}

#[test]
fn stray_entries_in_an_image_folder_never_stop_a_backup() {
    type Plant = fn(&Path);
    let cases: [(&str, Plant); 6] = [
        ("a folder named like a temporary file", |dir| {
            fs::create_dir(dir.join(".cephbackup-tmp.stray")).unwrap();
        }),
        ("a temporary file whose name is not UTF-8", |dir| {
            fs::write(dir.join(OsStr::from_bytes(b".cephbackup-tmp.\xff")), "x").unwrap();
        }),
        ("a folder named like an orphan checksum", |dir| {
            fs::create_dir(
                dir.join("vm@BACKUPUTC20990101T000000.diff_from_BACKUPUTC20980101T000000.sha256"),
            )
            .unwrap();
        }),
        ("a dangling link named like the newest backup", |dir| {
            std::os::unix::fs::symlink(
                "/nonexistent/target",
                dir.join("vm@BACKUPUTC20990101T000000.full"),
            )
            .unwrap();
        }),
        ("a FIFO named like a backup file", |dir| {
            mkfifo(&dir.join("vm@BACKUPUTC20990102T000000.full"));
        }),
        ("a link to a secret named like a checksum file", |dir| {
            std::os::unix::fs::symlink(
                "/etc/shadow",
                dir.join("vm@BACKUPUTC20990103T000000.full.sha256"),
            )
            .unwrap();
        }),
    ];
    for (what, plant) in cases {
        let w = World::new();
        w.create_image("vm", 8 * MIB, 1100);
        let conf = w.config("images = vm\nbackup mode = incremental\ncompress = yes");
        let args = ["-c", conf.to_str().unwrap()];
        run_within(&w, &args, Duration::from_secs(120)).success();
        let dir = w.image_dir("vm");
        plant(&dir);
        let before: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        for round in 0..2 {
            next_second();
            w.write_data("vm", 1101 + round);
            let run = run_within(&w, &args, Duration::from_secs(120));
            assert_eq!(run.code, 0, "{what}: {}\n{}", run.stdout, run.stderr);
            assert!(
                run.stdout.contains("Exporting diff"),
                "{what}: the chain goes on: {}",
                run.stdout
            );
        }
        for name in before {
            assert!(
                fs::symlink_metadata(dir.join(&name)).is_ok(),
                "{what}: {name:?} was removed"
            );
        }
        assert_newest_restores(&w, &conf, "vm");
        let list = run_within(
            &w,
            &["-c", conf.to_str().unwrap(), "list"],
            Duration::from_secs(60),
        );
        assert!(list.code == 0 || list.code == 1, "{what}: {}", list.stderr);
    }
}

#[test]
fn a_pool_folder_replaced_by_a_link_is_not_written_through() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 1110);
    let conf = w.config("images = vm\nbackup mode = incremental");
    let args = ["-c", conf.to_str().unwrap()];
    run_within(&w, &args, Duration::from_secs(120)).success();
    let elsewhere = w.tmp.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let pool_dir = w.dest.join(&w.pool);
    fs::rename(&pool_dir, w.tmp.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &pool_dir).unwrap();
    next_second();
    let run = run_within(&w, &args, Duration::from_secs(120)).code(1);
    let error = run.first_error();
    assert!(
        error.contains(&format!(
            "{} is a symbolic link, not a folder",
            pool_dir.display()
        )),
        "{error}"
    );
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written through it"
    );
    assert_eq!(w.backup_snapshots("vm").len(), 1, "no snapshot left behind");
}

#[test]
fn a_lock_folder_others_can_write_is_refused() {
    let w = World::new();
    w.create_image("vm", 4 * MIB, 1120);
    let conf = w.config("images = vm\nbackup mode = incremental");
    let open = w.tmp.path().join("open-locks");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let run = run_within(
        &w,
        &[
            "-c",
            conf.to_str().unwrap(),
            "--lock-dir",
            open.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .code(1);
    assert!(
        run.first_error().contains("other users could block"),
        "{}",
        run.stderr
    );
    assert!(w.backup_snapshots("vm").is_empty());

    // A private one works, and its lock file is private too.
    let private = w.tmp.path().join("locks");
    run_within(
        &w,
        &[
            "-c",
            conf.to_str().unwrap(),
            "--lock-dir",
            private.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .success();
    let lock = private.join(&w.pool).join("vm.lock");
    assert_eq!(
        fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !w.dest.join(".cephbackup.lock").exists(),
        "no lock in the destination any more"
    );
}

//! `cephbackup restore`: every point of a chain, into a new image or a local file, compared bit for
//! bit with `rbd export` of the source snapshot; files written the original's way; refusals and
//! clean failure.

use std::fs;
use std::path::Path;

use crate::chains::*;
use crate::harness::*;

/// `--at` in every accepted spelling, chosen per point so each spelling is exercised.
fn spelling(snap: &str, index: usize) -> String {
    let taken = chrono::NaiveDateTime::parse_from_str(snap, "BACKUPUTC%Y%m%dT%H%M%S")
        .unwrap()
        .and_utc();
    match index % 3 {
        0 => snap.to_string(),
        1 => taken.format("%Y%m%dT%H%M%S").to_string(),
        // An instant in another zone, half a second after the snapshot: still that point.
        _ => (taken + chrono::Duration::milliseconds(500))
            .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
            .to_rfc3339(),
    }
}

fn every_point_restores(compress: bool) {
    let w = World::new();
    let (conf, snaps) = backed_up_chain(&w, "vm", 5, compress);
    // Proves --to-file needs no cluster: any rbd call with this config would fail.
    let offline = config_at(
        &w,
        "offline.conf",
        &w.dest,
        Path::new("/nonexistent/ceph.conf"),
    );

    for (index, snap) in snaps.iter().enumerate() {
        let source = w.export("vm", Some(snap));
        let target = format!("vm-at-{index}");
        let at = spelling(snap, index);
        let run = w
            .restore(&conf, "vm")
            .into_image(&target)
            .at(&at)
            .run()
            .success();
        assert!(
            run.stdout.contains(&format!("as of {snap} ")),
            "--at {at}: {}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains(&format!("{} file(s) applied", index + 1)),
            "{}",
            run.stdout
        );
        assert!(
            same_bytes(&w.export(&target, None), &source),
            "{target} differs from vm@{snap}"
        );
        // The restored image carries the chain's snapshots up to the point, as a hand restore
        // would, so the restored snapshot itself matches too.
        assert_eq!(w.snapshots(&target), snaps[..=index]);
        assert!(same_bytes(&w.export(&target, Some(snap)), &source));

        let file = w.tmp.path().join(format!("vm-at-{index}.raw"));
        w.restore(&offline, "vm")
            .into_file(&file)
            .at(&at)
            .run()
            .success();
        assert_eq!(file_sha256(&file), sha256(&source), "{}", file.display());
        assert!(
            allocated(&file) < 16 * MIB,
            "{} is not sparse: {} bytes allocated",
            file.display(),
            allocated(&file)
        );
    }

    // Without --at: the latest point. Into another pool, given as POOL/NAME.
    let other = World::new();
    let latest = snaps.last().unwrap();
    w.restore(&conf, "vm")
        .into_image(&format!("{}/latest", other.pool))
        .run()
        .success();
    assert!(same_bytes(
        &other.export("latest", None),
        &w.export("vm", Some(latest))
    ));

    // Before the first point there is nothing to restore.
    let run = w
        .restore(&conf, "vm")
        .into_image("too-early")
        .at("2020-01-01T00:00:00Z")
        .run()
        .code(1);
    assert!(
        run.stderr
            .contains("has no restore point at or before 2020-01-01 00:00:00 UTC"),
        "{}",
        run.stderr
    );
    assert!(!images(&w).contains(&"too-early".to_string()));
}

#[test]
fn every_point_of_a_chain_restores_bit_for_bit() {
    every_point_restores(false);
}

#[test]
fn every_point_of_a_compressed_chain_restores_bit_for_bit() {
    every_point_restores(true);
}

/// What the original left: legacy `UTC…` snapshot names (before the `BACKUP` prefix), files
/// written by `rbd export`/`export-diff` to a path, some compressed by `tar Scvfz` with the
/// absolute path as member name, and no checksum files.
#[test]
fn files_written_the_original_way_restore() {
    let w = World::new();
    w.create_image("old", 16 * MIB, 40);
    let dir = w.image_dir("old");
    fs::create_dir_all(&dir).unwrap();
    let snaps = [
        "UTC20170119T092933",
        "UTC20170120T092933",
        "UTC20170121T092933",
        "UTC20170122T092933",
    ];
    let mut files = Vec::new();
    for (i, snap) in snaps.iter().enumerate() {
        w.write_data("old", 41 + i as u64);
        let spec = format!("{}@{snap}", w.spec("old"));
        rbd(&["snap", "create", &spec]);
        let name = match i {
            0 => format!("old@{snap}.full"),
            _ => format!("old@{snap}.diff_from_{}", snaps[i - 1]),
        };
        let path = dir.join(&name);
        match i {
            0 => rbd(&["export", &spec, path.to_str().unwrap()]),
            _ => rbd(&[
                "export-diff",
                "--from-snap",
                snaps[i - 1],
                &spec,
                path.to_str().unwrap(),
            ]),
        };
        // The full and one diff compressed, the others left raw: both happen in old folders.
        if i == 0 || i == 2 {
            compress_like_the_original(&path);
        }
        files.push(name);
    }
    let conf = w.config("images = old\nbackup mode = incremental");

    for (index, snap) in snaps.iter().enumerate() {
        let target = format!("old-at-{index}");
        w.restore(&conf, "old")
            .into_image(&target)
            .at(snap)
            .run()
            .success();
        let source = w.export("old", Some(snap));
        assert!(same_bytes(&w.export(&target, None), &source), "{target}");
        // The base snapshot is recreated with its legacy name: that is what the diffs name.
        assert_eq!(w.snapshots(&target), snaps[..=index]);
    }
    let file = w.tmp.path().join("old.raw");
    let run = w.restore(&conf, "old").into_file(&file).run().success();
    assert!(run.stdout.contains("0 checked against"), "{}", run.stdout);
    // Nothing proves these files: each one used is named, and they restore all the same.
    let unproven = format!(
        "{}: no checksum file {}.sha256 proves its bytes",
        dir.join(&files[1]).display(),
        files[1]
    );
    assert!(run.stderr.contains(&unproven), "{}", run.stderr);
    assert_eq!(file_sha256(&file), sha256(&w.export("old", Some(snaps[3]))));
}

/// Restores `point` of `vm` into a new local file with `conf`; returns the run and the file.
fn restore_to_file(w: &World, conf: &Path, point: &str, name: &str) -> (Run, std::path::PathBuf) {
    let file = w.tmp.path().join(name);
    let run = w.restore(conf, "vm").into_file(&file).at(point).run();
    (run, file)
}

#[test]
fn an_empty_full_without_checksum_never_hides_a_proven_route() {
    let w = World::new();
    let (conf, snaps) = backed_up_chain(&w, "vm", 3, false);
    let latest = &snaps[2];
    let dir = w.image_dir("vm");
    // Beside the proven route full, diff, diff to the latest point: an empty `.full` of that
    // point with no checksum file (a failed copy, a full disk, a hand).
    let empty = format!("vm@{latest}.full");
    fs::write(dir.join(&empty), b"").unwrap();
    let source = w.export("vm", Some(latest));

    let (run, file) = restore_to_file(&w, &conf, latest, "latest.raw");
    let run = run.success();
    assert!(run.stdout.contains("from 3 file(s)"), "{}", run.stdout);
    assert!(!run.stderr.contains("proves its bytes"), "{}", run.stderr);
    assert_eq!(file_sha256(&file), sha256(&source));
    // Into an image too, with --json: every file used is proven.
    let doc = w
        .restore(&conf, "vm")
        .into_image("vm-latest")
        .arg("--json")
        .run()
        .success()
        .json();
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{doc:#}");
    assert!(files.iter().all(|f| f["proven"] == true), "{doc:#}");
    assert!(same_bytes(&w.export("vm-latest", None), &source));

    // Verify calls the empty full what it is: an error, exit 1.
    let verify = w.verify(&conf, &[]).code(1);
    let error = format!(
        "error: {}: the file holds 0 bytes, but the image size at its snapshot (recorded in \
         vm@{latest}.diff_from_{}) is {} bytes",
        dir.join(&empty).display(),
        snaps[1],
        24 * MIB
    );
    assert!(verify.stdout.contains(&error), "{}", verify.stdout);

    // A route that cannot do without an unproven file still restores, and names it.
    fs::remove_file(dir.join(&empty)).unwrap();
    let diff = format!("vm@{}.diff_from_{}", snaps[1], snaps[0]);
    fs::remove_file(dir.join(format!("{diff}.sha256"))).unwrap();
    let (run, file) = restore_to_file(&w, &conf, latest, "unproven.raw");
    let run = run.success();
    let named = format!(
        "{}: no checksum file {diff}.sha256 proves its bytes",
        dir.join(&diff).display()
    );
    assert!(run.stderr.contains(&named), "{}", run.stderr);
    assert_eq!(file_sha256(&file), sha256(&source));
    let doc = w
        .restore(&conf, "vm")
        .into_file(Path::new("/nonexistent/x"))
        .arg("--check")
        .arg("--json")
        .run()
        .success()
        .json();
    let proven: Vec<bool> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["proven"].as_bool().unwrap())
        .collect();
    assert_eq!(proven, [true, false, true], "{doc:#}");

    // The original's files (no checksum at all) beside the empty full: the empty full is
    // refused by its length, and the diffs restore the point.
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sha256") {
            fs::remove_file(path).unwrap();
        }
    }
    fs::write(dir.join(&empty), b"").unwrap();
    let refused = format!(
        "{}: the file holds 0 bytes, but the image size at its snapshot",
        dir.join(&empty).display()
    );
    let (run, file) = restore_to_file(&w, &conf, latest, "original.raw");
    let run = run.success();
    assert!(run.stderr.contains(&refused), "{}", run.stderr);
    assert!(run.stderr.contains("no route uses it"), "{}", run.stderr);
    assert_eq!(file_sha256(&file), sha256(&source));
    // With no other route to it, the point is refused by name, never replaced by an older one.
    fs::rename(dir.join(&diff), w.tmp.path().join(&diff)).unwrap();
    let (run, file) = restore_to_file(&w, &conf, latest, "refused.raw");
    let run = run.code(1);
    let error = run.first_error();
    assert!(
        error.contains(&format!("as of {latest}: {refused}")),
        "{}",
        run.stderr
    );
    assert!(error.contains(&format!("(--at {})", snaps[0])), "{error}");
    assert!(!file.exists());
}

#[test]
fn a_chain_across_a_shrink_restores_and_verifies_at_every_point() {
    let w = World::new();
    w.create_image("vm", 24 * MIB, 31);
    let conf =
        w.config("images = vm\nbackup mode = incremental\nwindow size = 7\nwindow unit = days");
    w.backup(&conf).success();
    // Shrunk below the full's size, changed, backed up; then grown a little (still below the
    // full), changed, backed up: no diff of the chain records the full's size.
    for (size, seed) in [(8 * MIB, 32), (16 * MIB, 33)] {
        rbd(&[
            "resize",
            "--allow-shrink",
            "--size",
            &format!("{}M", size / MIB),
            &w.spec("vm"),
        ]);
        w.write_data("vm", seed);
        next_second();
        w.backup(&conf).success();
    }
    let snaps = w.backup_snapshots("vm");
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    let full = format!("vm@{}.full", snaps[0]);
    assert_eq!(
        fs::metadata(w.image_dir("vm").join(&full)).unwrap().len(),
        24 * MIB
    );
    for (index, snap) in snaps.iter().enumerate() {
        let source = w.export("vm", Some(snap));
        let (run, file) = restore_to_file(&w, &conf, snap, &format!("at-{index}.raw"));
        run.success();
        assert_eq!(file_sha256(&file), sha256(&source), "{snap}");
        let target = format!("vm-at-{index}");
        w.restore(&conf, "vm")
            .into_image(&target)
            .at(snap)
            .run()
            .success();
        assert!(same_bytes(&w.export(&target, None), &source), "{target}");
    }
    let verify = w.verify(&conf, &["--source"]).success();
    assert!(verify.stdout.contains("no problems"), "{}", verify.stdout);
}

#[test]
fn an_existing_target_is_refused_and_a_corrupt_link_leaves_nothing_behind() {
    let w = World::new();
    let (conf, snaps) = backed_up_chain(&w, "db", 4, false);
    let restore = || w.restore(&conf, "db");

    // An existing image, the source itself included, is never touched.
    w.create_image("taken", 8 * MIB, 5);
    let before = w.export("taken", None);
    for existing in ["taken", "db"] {
        let run = restore().into_image(existing).run().code(1);
        assert!(
            run.stderr
                .contains(&format!("{}/{existing} exists already", w.pool)),
            "{}",
            run.stderr
        );
        assert!(!run.stdout.contains("Importing"), "{}", run.stdout);
    }
    assert!(same_bytes(&w.export("taken", None), &before));
    assert_eq!(w.snapshots("taken"), Vec::<String>::new());
    let existing_file = w.tmp.path().join("existing.raw");
    fs::write(&existing_file, "keep me").unwrap();
    restore().into_file(&existing_file).run().code(1);
    assert_eq!(fs::read_to_string(&existing_file).unwrap(), "keep me");

    // Check mode shows the plan (on stderr; stdout has the stock commands) and creates nothing.
    let run = restore()
        .into_image("planned")
        .arg("--check")
        .run()
        .success();
    assert!(
        run.stderr.contains("streamed to rbd import"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Check mode: nothing was done."));
    assert!(!images(&w).contains(&"planned".to_string()));

    // The last diff's payload damaged, its checksum file intact: rbd import-diff would take it,
    // so only the checksum catches it, after the data went in. The image must go again.
    let dir = w.image_dir("db");
    let last = format!("db@{}.diff_from_{}", snaps[3], snaps[2]);
    let pristine = fs::read(dir.join(&last)).unwrap();
    let mut damaged = pristine.clone();
    damaged[first_payload_byte(&pristine)] ^= 0x55;
    fs::write(dir.join(&last), &damaged).unwrap();
    let run = restore().into_image("half").run().code(1);
    assert!(
        run.stderr
            .contains(&format!("{}: checksum mismatch", dir.join(&last).display())),
        "{}",
        run.stderr
    );
    assert!(
        run.first_error()
            .contains(&format!("restore it with --at {}", snaps[2])),
        "the newest good point: {}",
        run.stderr
    );
    assert!(
        !images(&w).contains(&"half".to_string()),
        "{:?}",
        images(&w)
    );

    // A record the diff reader refuses (an unknown tag) with no checksum file to tell: rbd would
    // skip the byte and carry on, so it must never see it.
    let second = format!("db@{}.diff_from_{}", snaps[1], snaps[0]);
    let mut bad_tag = fs::read(dir.join(&second)).unwrap();
    // banner (12), from and to names (5 + 24 each), size (9): the first record's tag.
    let first_record = 12 + 29 + 29 + 9;
    assert!(matches!(bad_tag[first_record], b'w' | b'z'));
    bad_tag[first_record] = b'q';
    fs::write(dir.join(&second), &bad_tag).unwrap();
    fs::remove_file(dir.join(format!("{second}.sha256"))).unwrap();
    fs::write(dir.join(&last), &pristine).unwrap();
    let run = restore().into_image("half").run().code(1);
    assert!(
        run.stderr.contains(&format!(
            "{}: unknown tag byte 0x71 at byte {first_record}",
            dir.join(&second).display()
        )),
        "{}",
        run.stderr
    );
    assert!(
        !images(&w).contains(&"half".to_string()),
        "{:?}",
        images(&w)
    );

    // The same into a file: nothing is left at the path or beside it.
    let file = w.tmp.path().join("out").join("half.raw");
    fs::create_dir(file.parent().unwrap()).unwrap();
    restore().into_file(&file).run().code(1);
    assert_eq!(fs::read_dir(file.parent().unwrap()).unwrap().count(), 0);

    // An earlier point does not need the damaged file and still restores.
    restore().into_image("early").at(&snaps[0]).run().success();
    assert!(same_bytes(
        &w.export("early", None),
        &w.export("db", Some(&snaps[0]))
    ));
}

#[test]
fn usage_mistakes_exit_2() {
    let w = World::new();
    let conf = w.config("images = *\nbackup mode = full");
    for args in [
        vec!["restore", "--pool", "nope", "--image", "x", "--to", "y"],
        vec![
            "restore", "--pool", &w.pool, "--image", "x", "--to", "a/b/c/d",
        ],
        vec!["restore", "--pool", &w.pool, "--image", "x"],
        vec![
            "restore", "--pool", &w.pool, "--image", "x", "--to", "y", "--at", "soon",
        ],
    ] {
        let run = with_conf(&w, &conf, &args).code(2);
        assert!(run.stderr.starts_with("error"), "{args:?}: {}", run.stderr);
    }
    let run = w.restore(&conf, "missing").into_image("y").run().code(1);
    assert!(run.stderr.contains("no backups of"), "{}", run.stderr);
}

#[test]
fn a_signal_stops_a_restore_and_removes_what_it_created() {
    let w = World::new();
    rbd(&["create", "--size", "256M", &w.spec("big")]);
    rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-total",
        "256M",
        "--io-pattern",
        "seq",
        &w.spec("big"),
    ]);
    let conf = w.config("images = big\nbackup mode = incremental");
    w.backup(&conf).success();

    let mut child = w.spawn(&w.restore(&conf, "big").into_image("stopped").args());
    // The import is under way once the image exists; 256 MiB take far longer to import than
    // this takes to notice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !images(&w).contains(&"stopped".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the import never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("the restore was stopped: interrupted by SIGTERM"),
        "{stderr}"
    );
    assert!(
        !images(&w).contains(&"stopped".to_string()),
        "{:?}\n{stderr}",
        images(&w)
    );
}

/// A restore into a file killed outright (SIGKILL, or the second signal) cannot clean up: its
/// partial file stays, under a recognisable name, unlocked once the process is gone, and the next
/// restore into the same folder removes it.
#[test]
fn a_partial_file_left_by_a_killed_restore_is_removed_by_the_next_one() {
    use std::os::unix::process::ExitStatusExt;
    let w = World::new();
    rbd(&["create", "--size", "256M", &w.spec("big")]);
    rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-total",
        "256M",
        "--io-pattern",
        "seq",
        &w.spec("big"),
    ]);
    let conf = w.config("images = big\nbackup mode = incremental");
    w.backup(&conf).success();
    let snap = w.backup_snapshots("big").pop().unwrap();
    let out = w.tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let target = out.join("big.raw");
    let partials = || -> Vec<std::path::PathBuf> {
        fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(".cephbackup-restore.")
            })
            .collect()
    };

    let mut child = w.spawn(&w.restore(&conf, "big").into_file(&target).args());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let partial = loop {
        if let Some(partial) = partials().pop() {
            break partial;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the restore ended ({status}) before its partial file appeared");
        }
        assert!(std::time::Instant::now() < deadline, "no partial file");
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(
        partial.exists(),
        "the killed restore could not remove its partial file"
    );
    assert!(!target.exists());

    // The next restore into that folder, to another name, removes it and restores.
    let again = out.join("again.raw");
    let run = w.restore(&conf, "big").into_file(&again).run().success();
    assert!(!partial.exists(), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "removed {}, left by a restore that was killed before it finished",
            partial.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(partials(), Vec::<std::path::PathBuf>::new());
    assert_eq!(file_sha256(&again), sha256(&w.export("big", Some(&snap))));
    let names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["again.raw"]);
}

/// A chain of a gzip full, a zstd diff and a plain diff of `vm`, in a folder whose path has
/// spaces; the config and the snapshots, oldest first.
fn mixed_chain(w: &World) -> (std::path::PathBuf, Vec<String>) {
    w.create_image("vm", 24 * MIB, 41);
    let dest = w.tmp.path().join("backups of the week");
    fs::create_dir(&dest).unwrap();
    let config = |compress: &str| {
        w.config_named(
            "by-hand.conf",
            &dest,
            &format!("images = vm\nbackup mode = incremental\ncompress = {compress}"),
        )
    };
    for (index, compress) in ["yes", "zstd", "no"].into_iter().enumerate() {
        if index > 0 {
            w.write_data("vm", 42 + index as u64);
            next_second();
        }
        w.backup(&config(compress)).success();
    }
    w.write_data("vm", 49);
    let snaps = w.backup_snapshots("vm");
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    let names: Vec<String> = fs::read_dir(dest.join(&w.pool).join("vm"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for suffix in [
        ".full.tar.gz",
        ".tar.zst",
        &format!("diff_from_{}", snaps[1]),
    ] {
        assert!(
            names.iter().any(|name| name.ends_with(suffix)),
            "{suffix}: {names:?}"
        );
    }
    (config("no"), snaps)
}

/// Runs `script` with `sh`, as an administrator would, from another folder.
fn run_with_sh(w: &World, script: &str) {
    let path = w.tmp.path().join("restore by hand.sh");
    fs::write(&path, script).unwrap();
    let out = std::process::Command::new("sh")
        .arg(&path)
        .current_dir(w.tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}:\n{script}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `restore --check` prints, on stdout alone, the commands that restore the point with the stock
/// tools; run with `sh` they rebuild it bit for bit, from a folder whose path has spaces and a
/// chain of gzip, zstd and plain files.
#[test]
fn restore_check_prints_stock_commands_that_restore_the_point_by_hand() {
    let w = World::new();
    let (conf, snaps) = mixed_chain(&w);
    let run = w
        .restore(&conf, "vm")
        .into_image("by-hand")
        .arg("--check")
        .run()
        .success();
    // Only commands on stdout, so that `> restore.sh` saves a script; the steps on stderr.
    assert!(run.stdout.starts_with("set -eu\ncd -- '"), "{}", run.stdout);
    assert!(
        run.stderr.contains("streamed to rbd import"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Check mode: nothing was done."),
        "{}",
        run.stderr
    );
    for expected in [
        "sha256sum -c -- ",
        "tar -xzOf ",
        "zstd -dc -- ",
        "import-diff - ",
    ] {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.stdout);
    }
    assert!(!images(&w).contains(&"by-hand".to_string()));
    run_with_sh(&w, &run.stdout);
    let latest = snaps.last().unwrap();
    assert!(same_bytes(
        &w.export("by-hand", None),
        &w.export("vm", Some(latest))
    ));
    assert!(
        w.snapshots("by-hand").contains(latest),
        "{:?}",
        w.snapshots("by-hand")
    );

    // An earlier point: the script stops there.
    let run = w
        .restore(&conf, "vm")
        .into_image("by-hand-earlier")
        .at(&snaps[1])
        .arg("--check")
        .run()
        .success();
    assert_eq!(
        run.stdout.matches("import-diff").count(),
        1,
        "{}",
        run.stdout
    );
    run_with_sh(&w, &run.stdout);
    assert!(same_bytes(
        &w.export("by-hand-earlier", None),
        &w.export("vm", Some(&snaps[1]))
    ));
}

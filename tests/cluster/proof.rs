//! Nothing is destroyed without proof: the everyday situations in which a missing file used to be
//! taken for a leftover (an unmounted disk, a second job, files shipped offsite, a shared
//! destination), the kill that the image record exists for, and a slide that meets a file it
//! cannot prove.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn conf_for(w: &World, dest: &Path, extra: &str) -> std::path::PathBuf {
    let name = format!("{}.conf", dest.file_name().unwrap().to_string_lossy());
    w.config_named(&name, dest, extra)
}

fn run(w: &World, conf: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["-c", conf.to_str().unwrap()];
    args.extend_from_slice(extra);
    w.cephbackup(&args)
}

/// Names of the files in `dir`, sorted (the tool's records left out).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !n.starts_with(".cephbackup-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn an_unmounted_backup_disk_is_refused_and_no_snapshot_is_touched() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 1000);
    let conf = w.config("images = vm\nbackup mode = incremental");
    run(&w, &conf, &[]).success();
    next_second();
    run(&w, &conf, &[]).success();
    let snaps = w.backup_snapshots("vm");
    assert_eq!(snaps.len(), 2);

    // The disk did not mount: the destination is the empty mount point.
    let mount_point = w.tmp.path().join("mnt");
    fs::create_dir(&mount_point).unwrap();
    let unmounted = conf_for(&w, &mount_point, "images = vm\nbackup mode = incremental");
    for extra in [&["--check"][..], &[][..]] {
        let refused = run(&w, &unmounted, extra).code(1);
        let error = refused.first_error();
        for needle in [
            &format!(
                "error: pool {}: destination directory {}",
                w.pool,
                mount_point.display()
            ),
            "is empty and carries no cephbackup record",
            &format!("{} has backup snapshot {}", w.spec("vm"), snaps[0]),
            "(is the backup disk mounted?)",
            "cephbackup init-destination -c",
        ] {
            assert!(error.contains(needle), "{needle:?} not in {error}");
        }
        assert!(
            !refused.stdout.contains("Deleting snapshot"),
            "{}",
            refused.stdout
        );
        assert_eq!(w.backup_snapshots("vm"), snaps, "no snapshot touched");
        assert_eq!(
            fs::read_dir(&mount_point).unwrap().count(),
            0,
            "nothing written"
        );
    }

    // Starting a fresh destination on purpose: one command, then a full, and still no
    // snapshot of the other destination's chain is removed.
    let init = run(&w, &unmounted, &["init-destination"]).success();
    assert!(
        init.stdout.contains("marked as a cephbackup destination"),
        "{}",
        init.stdout
    );
    next_second();
    let fresh = run(&w, &unmounted, &[]).success();
    assert!(
        !fresh.stdout.contains("Deleting snapshot"),
        "{}",
        fresh.stdout
    );
    let now = w.backup_snapshots("vm");
    assert_eq!(now.len(), 3);
    assert_eq!(&now[..2], &snaps[..]);
    let files = names_in(&mount_point.join(&w.pool).join("vm"));
    assert_eq!(
        files,
        [
            format!("vm@{}.full", now[2]),
            format!("vm@{}.full.sha256", now[2])
        ]
    );
}

#[test]
fn a_weekly_full_job_leaves_the_daily_incremental_chain_alone() {
    let w = World::new();
    w.create_image("db", 16 * MIB, 1010);
    let daily = w.config("images = db\nbackup mode = incremental");
    run(&w, &daily, &[]).success();
    let weekly_dest = w.tmp.path().join("weekly");
    fs::create_dir(&weekly_dest).unwrap();
    let weekly = conf_for(
        &w,
        &weekly_dest,
        "images = db\nbackup mode = full\ncompress = yes",
    );
    // A new, empty destination for a full job: a full never builds on the daily job's
    // snapshots, so it starts at once, with no `init-destination`.
    for _ in 0..2 {
        next_second();
        w.write_data("db", 1011);
        let full = run(&w, &weekly, &[]).success();
        assert_eq!(
            full.stdout.matches("Deleting snapshot").count(),
            1,
            "only its own temporary snapshot: {}",
            full.stdout
        );
    }
    let snaps = w.backup_snapshots("db");
    assert_eq!(
        snaps.len(),
        1,
        "the daily job's snapshot survived: {snaps:?}"
    );
    assert_eq!(names_in(&weekly_dest.join(&w.pool).join("db")).len(), 4);

    next_second();
    let next = run(&w, &daily, &[]).success();
    assert!(next.stdout.contains("Exporting diff"), "{}", next.stdout);
    let files = w.files("db");
    assert_eq!(files.len(), 2, "a diff, not a new full: {files:?}");
    restore_by_hand(&w, "db", &[&files[0], &files[1]], "db-restored");
}

#[test]
fn files_shipped_offsite_after_each_run_continue_the_chain_with_diffs() {
    let w = World::new();
    w.create_image("vm", 16 * MIB, 1020);
    let conf = w.config("images = vm\nbackup mode = incremental");
    let offsite = w.tmp.path().join("offsite");
    fs::create_dir(&offsite).unwrap();
    let ship = || {
        // What `rsync --remove-source-files … '*@BACKUP*'` does: the backups go, the tool's
        // records stay.
        for name in w.all_files("vm") {
            fs::rename(w.image_dir("vm").join(&name), offsite.join(&name)).unwrap();
        }
    };
    run(&w, &conf, &[]).success();
    ship();
    for round in 0..2 {
        next_second();
        w.write_data("vm", 1021 + round);
        let after = run(&w, &conf, &[]).success();
        assert!(
            !after.stdout.contains("Deleting snapshot"),
            "{}",
            after.stdout
        );
        assert!(after.stdout.contains("Exporting diff"), "{}", after.stdout);
        assert!(
            after.stderr.contains("not in this destination any more"),
            "{}",
            after.stderr
        );
        ship();
    }
    let snaps = w.backup_snapshots("vm");
    assert_eq!(snaps.len(), 3);
    // The chain, put back together offsite, restores every point bit for bit.
    let mut chain: Vec<String> = names_in(&offsite)
        .into_iter()
        .filter(|n| !n.ends_with(".sha256"))
        .collect();
    chain.sort_by_key(|n| n.split_once('@').unwrap().1.to_string());
    assert_eq!(chain.len(), 3, "{chain:?}");
    for name in names_in(&offsite) {
        fs::rename(offsite.join(&name), w.image_dir("vm").join(&name)).unwrap();
    }
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    restore_by_hand(&w, "vm", &chain, "vm-restored");
}

#[test]
fn two_configs_sharing_a_destination_back_up_at_the_same_time() {
    let a = World::new();
    let b = World::new();
    rbd(&["create", "--size", "4G", &a.spec("big")]);
    a.write_data("big", 1030);
    b.create_image("small", 8 * MIB, 1031);
    let conf_a = a.config("images = big\nbackup mode = incremental\ncompress = yes");
    // The second config writes into the first one's destination, for its own pool.
    let conf_b = conf_for(&b, &a.dest, "images = small\nbackup mode = incremental");
    let mut first = a.spawn(&["-c", conf_a.to_str().unwrap()]);
    let started = Instant::now();
    let writing = |dir: &Path| {
        fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".cephbackup-tmp.")
            })
        })
    };
    while !writing(&a.image_dir("big")) {
        if first.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(120) {
            let _ = first.kill();
            let out = Run::from(first.wait_with_output().unwrap());
            panic!(
                "the first run never started writing:\n{}\n{}",
                out.stdout, out.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run(&b, &conf_b, &[]).success();
    assert!(
        second.stdout.contains("1 image(s) backed up"),
        "{}",
        second.stdout
    );
    let first = Run::from(first.wait_with_output().unwrap()).success();
    assert!(
        first.stdout.contains("1 image(s) backed up"),
        "{}",
        first.stdout
    );
    assert_eq!(b.files("small").len(), 0, "b's own dest is untouched");
    assert_eq!(names_in(&a.dest.join(&b.pool).join("small")).len(), 2);
    assert_eq!(a.files("big").len(), 1);
}

#[test]
fn a_run_killed_between_snapshot_and_file_leaves_a_record_and_the_next_run_removes_exactly_that_snapshot(
) {
    let w = World::new();
    rbd(&["create", "--size", "4G", &w.spec("big")]);
    w.write_data("big", 1040);
    let conf = w.config("images = big\nbackup mode = incremental\ncompress = yes");
    // A snapshot made by someone else, without any file: never ours to remove.
    let stranger = format!("BACKUPUTC{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    rbd(&["snap", "create", &format!("{}@{stranger}", w.spec("big"))]);
    run(&w, &conf, &["init-destination"]).success();
    next_second();

    // The first backup is a compressed full of 4 GiB: long enough to land a kill inside it.
    let mut child = w.spawn(&["-c", conf.to_str().unwrap()]);
    let dir = w.image_dir("big");
    let started = Instant::now();
    let doomed = loop {
        let temp = fs::read_dir(&dir).is_ok_and(|mut entries| {
            entries.any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".cephbackup-tmp.")
            })
        });
        let snaps = w.backup_snapshots("big");
        if temp && snaps.len() == 2 {
            break snaps[1].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the export never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the run died by SIGKILL: {status:?}"
    );
    // The kill landed with the snapshot made and its file not complete.
    assert!(w.backup_snapshots("big").contains(&doomed));
    assert!(
        !w.files("big").iter().any(|f| f.contains("@BACKUP")),
        "{:?}",
        w.files("big")
    );
    let record = w.image_record("big");
    assert_eq!(
        record["pending"][0]["snapshot"],
        doomed.as_str(),
        "{record}"
    );

    next_second();
    let next = run(&w, &conf, &["--wait", "120"]).success();
    let deleted: Vec<&str> = next
        .stdout
        .lines()
        .filter(|l| l.starts_with("Deleting snapshot"))
        .collect();
    assert_eq!(
        deleted,
        [format!("Deleting snapshot {}@{doomed}", w.spec("big"))]
    );
    let after = w.backup_snapshots("big");
    assert!(!after.contains(&doomed));
    assert_eq!(after[0], stranger, "the stranger's snapshot stays");
    assert_eq!(w.image_record("big")["pending"], serde_json::json!([]));
    let files = w.files("big");
    assert_eq!(
        files,
        [format!("big@{}.full.tar.gz", after[1])],
        "a full: the stranger is no base"
    );
    assert_consistent_temp_free(&w, "big");
    restore_by_hand(&w, "big", &[&files[0]], "big-restored");
}

fn assert_consistent_temp_free(w: &World, image: &str) {
    let temp = fs::read_dir(w.image_dir(image))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".cephbackup-tmp.")
        })
        .count();
    assert_eq!(temp, 0, "temporary files left");
    w.assert_every_file_has_a_checksum(image);
}

#[test]
fn a_closed_stdout_stops_the_printing_not_the_backups() {
    let w = World::new();
    for (i, image) in ["a", "b", "c"].iter().enumerate() {
        w.create_image(image, 4 * MIB, 1050 + i as u64);
    }
    let conf = w.config("images = a, b, c\nbackup mode = incremental");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .args(["-c", conf.to_str().unwrap()])
        .env("STATE_DIRECTORY", &w.state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: read one line, then close the pipe.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("Starting backup for pool"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    for image in ["a", "b", "c"] {
        assert_eq!(w.files(image).len(), 1, "{image} was backed up");
    }
    let listed = Command::new("sh")
        .env("STATE_DIRECTORY", &w.state)
        .arg("-c")
        .arg(format!(
            "'{}' -c '{}' list | true",
            env!("CARGO_BIN_EXE_cephbackup"),
            conf.display()
        ))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stderr).contains("panicked"));
}

#[test]
fn an_unreachable_cluster_costs_one_timeout_not_one_per_image() {
    let w = World::new();
    let bad_conf = w.unreachable_cluster_conf();
    let conf = w.write_config(&format!(
        "[DEFAULT]\nbackup mode = incremental\ndestination directory = {}\nceph config = {}\n\
         ceph timeout = 3\n[rbd]\nimages = a, b, c, d, e\n[ssd]\nimages = f\n",
        w.dest.display(),
        bad_conf.display()
    ));
    // A deadline that kills: the run must be over long before five or six timeouts add up.
    let out = w
        .run_within(&["-c", conf.to_str().unwrap()], Duration::from_secs(10))
        .code(1);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 2, "one line for each section: {errors:?}");
    assert!(
        errors[0].contains("did not answer within 3 s"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains(&bad_conf.display().to_string()),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("did not answer earlier in this run"),
        "{}",
        errors[1]
    );
    for image in ["rbd/a", "rbd/b", "rbd/e"] {
        assert!(
            out.stdout.contains(&format!("Failed: {image}")),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn a_slide_never_trusts_a_base_it_cannot_prove() {
    for damage in ["empty, no checksum", "truncated, checksum of the whole"] {
        let w = World::new();
        w.create_image("vm", 16 * MIB, 1060);
        let old = history(&w, "vm", &[240, 72, 24]);
        let (b, c) = (&old[1], &old[2]);
        let dir = w.image_dir("vm");
        // A full of the new base is there already, as if an interrupted slide had left it, but
        // damaged.
        let base = dir.join(format!("vm@{b}.full"));
        let good = w.export("vm", Some(b));
        match damage {
            "empty, no checksum" => fs::write(&base, b"").unwrap(),
            _ => {
                fs::write(&base, &good[..good.len() / 2]).unwrap();
                let digest = sha256_hex(&good);
                fs::write(
                    dir.join(format!("vm@{b}.full.sha256")),
                    format!("{digest}  vm@{b}.full\n"),
                )
                .unwrap();
            }
        }
        let conf =
            w.config("images = vm\nbackup mode = incremental\nwindow size = 7\nwindow unit = days");
        let run = w.backup(&conf).success();
        assert!(
            run.stderr.contains(&format!("vm@{b}.full is not reused")),
            "{damage}: {}",
            run.stderr
        );
        assert!(
            run.stdout.contains(&format!("Exporting image vm@{b}")),
            "{damage}: {}",
            run.stdout
        );
        assert_eq!(fs::read(&base).unwrap(), good, "{damage}: written again");
        let t = w.backup_snapshots("vm")[2].clone();
        let chain = [
            format!("vm@{b}.full"),
            format!("vm@{c}.diff_from_{b}"),
            format!("vm@{t}.diff_from_{c}"),
        ];
        assert_eq!(w.files("vm"), chain);
        // The original's diffs have no checksum file; the two this run wrote do, and match.
        w.assert_checksums("vm");
        let all = w.all_files("vm");
        assert!(all.contains(&format!("{}.sha256", chain[0])), "{all:?}");
        assert!(all.contains(&format!("{}.sha256", chain[2])), "{all:?}");
        let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
        restore_by_hand(&w, "vm", &chain, "vm-restored");
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

//! Window slides, with old history simulated by snapshot and file names.
//!
//! A slide builds its new base from the old base and the diffs in the folder (no cluster read)
//! when their checksums prove them; the first test's history was written by the original (no
//! checksum files), so it is exported from the cluster as the original did.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cephbackup::test_support::{DiffHeader, DiffWriter};
use sha2::{Digest, Sha256};

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
    // The original's files carry no checksum: nothing proves them, so the cluster serves S.
    assert!(
        run.stderr.contains("has no checksum file"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains(&format!(" export {}@{b} -", w.spec("vm"))),
        "{}",
        run.stdout
    );
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

fn resize(w: &World, image: &str, size: u64) {
    if w.image_size(image) == size {
        return;
    }
    rbd(&[
        "resize",
        "--allow-shrink",
        "--size",
        &format!("{}M", size / MIB),
        &w.spec(image),
    ]);
}

/// Writes `name.sha256` beside `name` as the tool does.
fn checksum(dir: &Path, name: &str) {
    let digest: String = Sha256::digest(fs::read(dir.join(name)).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fs::write(
        dir.join(format!("{name}.sha256")),
        format!("{digest}  {name}\n"),
    )
    .unwrap();
}

/// Takes a backup snapshot `age_hours` old and writes its file as a run of this tool would have:
/// a full export without `base`, else a diff from it, with its checksum file; with `compress`,
/// archived the way the original did (`tar Sczf`, a GNU sparse member). Returns the snapshot.
fn snap_and_file(
    w: &World,
    image: &str,
    age_hours: i64,
    base: Option<&str>,
    compress: bool,
) -> String {
    let dir = w.image_dir(image);
    fs::create_dir_all(&dir).unwrap();
    let snap = (chrono::Utc::now() - chrono::Duration::hours(age_hours))
        .format("BACKUPUTC%Y%m%dT%H%M%S")
        .to_string();
    let spec = format!("{}@{snap}", w.spec(image));
    rbd(&["snap", "create", &spec]);
    let name = match base {
        None => {
            let name = format!("{image}@{snap}.full");
            rbd(&["export", &spec, dir.join(&name).to_str().unwrap()]);
            name
        }
        Some(base) => {
            let name = format!("{image}@{snap}.diff_from_{base}");
            let path = dir.join(&name);
            rbd(&[
                "export-diff",
                "--from-snap",
                base,
                &spec,
                path.to_str().unwrap(),
            ]);
            name
        }
    };
    let name = if compress {
        let archive = format!("{name}.tar.gz");
        let out = Command::new("tar")
            .args(["-C", dir.to_str().unwrap(), "-Sczf", &archive, &name])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        fs::remove_file(dir.join(&name)).unwrap();
        archive
    } else {
        name
    };
    checksum(&dir, &name);
    snap
}

/// A history of backup snapshots at the given ages, the image resized to the given size and
/// changed before each. Returns the snapshots, oldest first.
pub(crate) fn sized_history(
    w: &World,
    image: &str,
    steps: &[(i64, u64)],
    compress: bool,
) -> Vec<String> {
    let mut snaps: Vec<String> = Vec::new();
    for (index, (age, size)) in steps.iter().enumerate() {
        resize(w, image, *size);
        w.write_data(image, 200 + index as u64);
        let snap = snap_and_file(w, image, *age, snaps.last().map(String::as_str), compress);
        snaps.push(snap);
    }
    snaps
}

/// The raw image a full backup file holds (unpacked with GNU tar when compressed).
fn raw_of(w: &World, image: &str, name: &str) -> Vec<u8> {
    let path = w.image_dir(image).join(name);
    match name.strip_suffix(".tar.gz") {
        Some(member) => {
            let into = w.tmp.path().join(format!("unpacked-{name}"));
            fs::read(untar(&path, &into).join(member)).unwrap()
        }
        None => fs::read(path).unwrap(),
    }
}

/// No full export ran: every `rbd export` the run printed is a diff.
#[track_caller]
fn assert_no_full_export(run: &Run) {
    let full: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| {
            (l.starts_with("# rbd ") && l.contains(" export ")) || l.starts_with("Exporting image")
        })
        .collect();
    assert!(full.is_empty(), "{full:?} in\n{}", run.stdout);
}

#[test]
fn slides_build_the_new_base_without_the_cluster_bit_identical_as_images_grow_and_shrink() {
    for compress in [false, true] {
        let w = World::new();
        w.create_image("vm", 32 * MIB, 70);
        let gz = if compress { ".tar.gz" } else { "" };
        // R 32 MiB, S grown to 48 MiB, C shrunk to 20 MiB; now grown to 40 MiB.
        let old = sized_history(
            &w,
            "vm",
            &[(72, 32 * MIB), (47, 48 * MIB), (24, 20 * MIB)],
            compress,
        );
        let (r, s, c) = (&old[0], &old[1], &old[2]);
        resize(&w, "vm", 40 * MIB);
        w.write_data("vm", 300);
        let yes = if compress { "yes" } else { "no" };
        let conf = w.config(&format!(
            "images = vm\nbackup mode = incremental\nwindow size = 2\nwindow unit = days\n\
             compress = {yes}"
        ));
        let run = w.backup(&conf).success();
        let full = format!("vm@{s}.full{gz}");
        let line = format!(
            "Building image {full} from vm@{r}.full{gz} and vm@{s}.diff_from_{r}{gz} (no cluster \
             read)"
        );
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
        assert_no_full_export(&run);
        let dir = w.image_dir("vm");
        for gone in [
            format!("vm@{s}.diff_from_{r}{gz}"),
            format!("vm@{r}.full{gz}.sha256"),
        ] {
            let line = format!("Removing file {}", dir.join(gone).display());
            assert!(
                run.stdout.contains(&line),
                "missing {line:?} in\n{}",
                run.stdout
            );
        }
        let t = w.backup_snapshots("vm")[2].clone();
        let diff_c = format!("vm@{c}.diff_from_{s}{gz}");
        let diff_t = format!("vm@{t}.diff_from_{c}{gz}");
        assert_eq!(
            w.files("vm"),
            [full.clone(), diff_c.clone(), diff_t.clone()]
        );
        assert!(
            same_bytes(&raw_of(&w, "vm", &full), &w.export("vm", Some(s))),
            "{full} differs from rbd export of {s} (compress = {yes})"
        );
        // S's 48 MiB full is larger than every point after it: verify holds it to its own
        // checksum, not to the sizes its chain's diffs record.
        w.assert_checksums("vm");
        w.verify(&conf, &[]).success();
        restore_by_hand(&w, "vm", &[&full, &diff_c, &diff_t], "vm-once");

        // With a window of one day, S and C (24 hours and a bit) are both out: T becomes the
        // base, built from S's full through C's shrinking and T's growing diff. The image
        // shrinks again before this run.
        let conf = w.config(&format!(
            "images = vm\nbackup mode = incremental\nwindow size = 1\nwindow unit = days\n\
             compress = {yes}"
        ));
        resize(&w, "vm", 16 * MIB);
        w.write_data("vm", 301);
        next_second();
        let run = w.backup(&conf).success();
        let full_t = format!("vm@{t}.full{gz}");
        let line =
            format!("Building image {full_t} from {full} and {diff_c}, {diff_t} (no cluster read)");
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
        assert_no_full_export(&run);
        let snaps = w.backup_snapshots("vm");
        assert_eq!(snaps.len(), 2, "{snaps:?}");
        let diff_u = format!("vm@{}.diff_from_{t}{gz}", snaps[1]);
        assert_eq!(w.files("vm"), [full_t.clone(), diff_u.clone()]);
        assert!(
            same_bytes(&raw_of(&w, "vm", &full_t), &w.export("vm", Some(&t))),
            "{full_t} differs from rbd export of {t} (compress = {yes})"
        );
        restore_by_hand(&w, "vm", &[&full_t, &diff_u], "vm-twice");
    }
}

#[test]
fn check_mode_shows_the_build_and_slide_from_cluster_keeps_the_original_export() {
    let w = World::new();
    w.create_image("vm", 16 * MIB, 71);
    let old = sized_history(&w, "vm", &[(72, 16 * MIB), (24, 24 * MIB)], false);
    let (r, s) = (&old[0], &old[1]);
    let body = "images = vm\nbackup mode = incremental\nwindow size = 2\nwindow unit = days";
    let conf = w.config(body);
    let before = w.dest_tree();
    let run = w
        .cephbackup(&["-c", conf.to_str().unwrap(), "--check"])
        .success();
    let line = format!(
        "Building image vm@{s}.full from vm@{r}.full and vm@{s}.diff_from_{r} (no cluster read)"
    );
    assert!(
        run.stdout.contains(&line),
        "missing {line:?} in\n{}",
        run.stdout
    );
    // Check mode reads and proves the files: nothing would come from the cluster.
    assert_no_full_export(&run);
    assert_eq!(w.dest_tree(), before, "check mode changed the destination");

    let conf = w.config(&format!("{body}\nslide from cluster = yes"));
    let run = w.backup(&conf).success();
    let dir = w.image_dir("vm");
    let full = format!("vm@{s}.full");
    for line in [
        format!("Exporting image vm@{s} to {}", dir.join(&full).display()),
        format!(" export {}@{s} -", w.spec("vm")),
        format!(
            "Removing file {}",
            dir.join(format!("vm@{r}.full")).display()
        ),
    ] {
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("Building image"), "{}", run.stdout);
    assert!(same_bytes(
        &raw_of(&w, "vm", &full),
        &w.export("vm", Some(s))
    ));
    w.assert_checksums("vm");
}

#[test]
fn a_diff_whose_checksum_is_wrong_makes_the_slide_export_from_the_cluster() {
    let w = World::new();
    w.create_image("vm", 16 * MIB, 72);
    let old = sized_history(&w, "vm", &[(72, 16 * MIB), (24, 8 * MIB)], true);
    let (r, s) = (&old[0], &old[1]);
    let diff = format!("vm@{s}.diff_from_{r}.tar.gz");
    let dir = w.image_dir("vm");
    fs::write(
        dir.join(format!("{diff}.sha256")),
        format!("{}  {diff}\n", "0".repeat(64)),
    )
    .unwrap();
    let conf = w.config(
        "images = vm\nbackup mode = incremental\nwindow size = 2\nwindow unit = days\ncompress = yes",
    );
    // Check mode proves the files too, and shows the fallback a real run takes.
    let before = w.dest_tree();
    let check = w
        .cephbackup(&["-c", conf.to_str().unwrap(), "--check"])
        .success();
    assert!(
        check.stdout.contains(&format!("Exporting image vm@{s} to"))
            && check
                .stderr
                .contains("a real run exports it from the cluster instead"),
        "{}\n{}",
        check.stdout,
        check.stderr
    );
    assert_eq!(w.dest_tree(), before, "check mode changed the destination");
    let run = w.backup(&conf).success();
    let full = format!("vm@{s}.full.tar.gz");
    assert!(
        run.stderr.contains(&format!(
            "{full} cannot be built from the folder: {diff}: checksum mismatch"
        )) && run.stderr.contains("exporting it from the cluster instead"),
        "{}",
        run.stderr
    );
    // stdout says only what happened: the export, not a build that was given up.
    assert!(!run.stdout.contains("Building image"), "{}", run.stdout);
    assert!(!check.stdout.contains("Building image"), "{}", check.stdout);
    for line in [
        format!(
            "Exporting image vm@{s} to {}",
            dir.join(format!("vm@{s}.full")).display()
        ),
        format!(
            "Removing file {}",
            dir.join(format!("vm@{r}.full.tar.gz")).display()
        ),
    ] {
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    let t = w.backup_snapshots("vm")[1].clone();
    let diff_t = format!("vm@{t}.diff_from_{s}.tar.gz");
    assert_eq!(w.files("vm"), [full.clone(), diff_t.clone()]);
    restore_by_hand(&w, "vm", &[&full, &diff_t], "vm-restored");
}

/// A diff stream rewriting the first `len` bytes of an image of `size` with data from `seed`.
fn big_diff(path: &Path, size: u64, len: u64, seed: u64) {
    let header = DiffHeader {
        from_snap: None,
        to_snap: None,
        size,
    };
    let file = fs::File::create(path).unwrap();
    let mut writer = DiffWriter::new(std::io::BufWriter::new(file), &header).unwrap();
    let mut rng = Rng(seed | 1);
    let mut chunk = vec![0u8; 4 << 20];
    let mut offset = 0;
    while offset < len {
        for word in chunk.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        writer.write_data(offset, &chunk).unwrap();
        offset += chunk.len() as u64;
    }
    writer.finish().unwrap();
}

/// A window slide killed by SIGKILL while it advances the base in place: an image of 256 MiB
/// whose second point rewrites most of it (so the build takes long enough to be caught), a run
/// that slides the window, killed once its working file appears. Asserts the kill landed mid-slide
/// (the marker and the working file there, neither the old base nor the new one).
struct KilledSlide {
    w: World,
    /// The old base's snapshot and the one the killed run was advancing it to.
    r: String,
    s: String,
    conf: std::path::PathBuf,
    dir: std::path::PathBuf,
    marker: std::path::PathBuf,
    working: std::path::PathBuf,
}

fn kill_a_slide_midway(seed: u64) -> KilledSlide {
    let w = World::new();
    let size = 256 * MIB;
    w.create_image("big", size, 73 + seed);
    let r = snap_and_file(&w, "big", 72, None, false);
    let stream = w.tmp.path().join("big.diff");
    big_diff(&stream, size, 224 * MIB, 5 + seed);
    rbd(&["import-diff", stream.to_str().unwrap(), &w.spec("big")]);
    let s = snap_and_file(&w, "big", 24, Some(&r), false);
    w.write_data("big", 400 + seed);
    let conf =
        w.config("images = big\nbackup mode = incremental\nwindow size = 2\nwindow unit = days");
    let dir = w.image_dir("big");
    let marker = dir.join(".cephbackup-advance.json");
    let working = dir.join(format!(".cephbackup-advancing.big@{s}.full"));

    let mut child = w.spawn(&["-c", conf.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !working.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run ended ({status}) before its build started: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc_sigkill()), "{status}");
    assert!(
        marker.exists() && working.exists(),
        "{:?}",
        w.all_files("big")
    );
    assert!(!dir.join(format!("big@{s}.full")).exists());
    assert!(!dir.join(format!("big@{r}.full")).exists());
    KilledSlide {
        w,
        r,
        s,
        conf,
        dir,
        marker,
        working,
    }
}

#[test]
fn a_slide_killed_while_it_advances_the_base_is_finished_by_the_next_run() {
    let KilledSlide {
        w,
        r,
        s,
        conf,
        marker,
        working,
        ..
    } = kill_a_slide_midway(0);

    // Nothing offers the half-advanced file: the chain it was shows a missing link until the
    // next run, and no point can be restored from it.
    let c = conf.to_str().unwrap();
    let list = w.cephbackup(&["-c", c, "list"]);
    assert!(
        !list.stdout.contains(&format!("big@{s}.full ")),
        "{}",
        list.stdout
    );
    let verify = w.verify(&conf, &[]);
    assert_ne!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
    let restored = w.tmp.path().join("restored.raw");
    for at in [s.as_str(), r.as_str()] {
        let run = w.restore(&conf, "big").into_file(&restored).at(at).run();
        assert_ne!(run.code, 0, "restore --at {at}: {}", run.stdout);
        assert!(!restored.exists());
    }

    next_second();
    let run = w.backup(&conf).success();
    let line = format!("Finishing image big@{s} from an interrupted build (no cluster read)");
    assert!(
        run.stdout.contains(&line),
        "missing {line:?} in\n{}",
        run.stdout
    );
    assert_no_full_export(&run);
    assert!(!marker.exists() && !working.exists());
    let full = format!("big@{s}.full");
    assert!(same_bytes(
        &raw_of(&w, "big", &full),
        &w.export("big", Some(&s))
    ));
    let snaps = w.backup_snapshots("big");
    assert_eq!(snaps.len(), 2, "the killed run's snapshot went: {snaps:?}");
    let diff_t = format!("big@{}.diff_from_{s}", snaps[1]);
    assert_eq!(w.files("big"), [full.clone(), diff_t.clone()]);
    w.verify(&conf, &[]).success();
    restore_by_hand(&w, "big", &[&full, &diff_t], "big-restored");
}

fn libc_sigkill() -> i32 {
    9
}

#[test]
fn a_working_file_changed_after_a_killed_slide_is_discarded_and_the_base_exported() {
    let KilledSlide {
        w,
        s,
        conf,
        dir,
        marker,
        working,
        ..
    } = kill_a_slide_midway(1);

    // Between the runs, someone writes into the working file, past what the diff rewrites.
    {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(&working).unwrap();
        file.write_all_at(&[0xa5; 4096], 240 * MIB).unwrap();
    }

    next_second();
    let run = w.backup(&conf).success();
    let full = format!("big@{s}.full");
    assert!(
        run.stderr.contains(&format!(
            "{full} cannot be built from the folder: .cephbackup-advancing.big@{s}.full was \
             changed while no run held it"
        )) && run.stderr.contains("exporting it from the cluster instead"),
        "{}",
        run.stderr
    );
    let line = format!("Exporting image big@{s} to {}", dir.join(&full).display());
    assert!(
        run.stdout.contains(&line),
        "missing {line:?} in\n{}",
        run.stdout
    );
    assert!(!marker.exists() && !working.exists());
    assert!(same_bytes(
        &raw_of(&w, "big", &full),
        &w.export("big", Some(&s))
    ));
    let snaps = w.backup_snapshots("big");
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let t = &snaps[1];
    let diff_t = format!("big@{t}.diff_from_{s}");
    assert_eq!(w.files("big"), [full.clone(), diff_t.clone()]);
    w.verify(&conf, &[]).success();
    // Every point restores bit for bit.
    for point in [&s, t] {
        let file = w.tmp.path().join(format!("{point}.raw"));
        w.restore(&conf, "big")
            .into_file(&file)
            .at(point)
            .run()
            .success();
        assert!(
            same_bytes(&fs::read(&file).unwrap(), &w.export("big", Some(point))),
            "{point}"
        );
    }
}

//! Faults: killed runs, signals, overlapping runs, a full disk, an unreachable cluster, hostile
//! names and snapshots that cannot be removed. Whatever happens, the backups already taken stay
//! restorable and the next run carries on.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::harness::*;

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().unwrap())
}

/// Waits (up to a minute) until an export is under way: its temporary file exists.
/// Waits until a backup of `image` is exporting: its snapshot exists and a temporary file is
/// open in its folder. A temporary file alone is not enough, since a record written before the
/// snapshot is taken also passes through one.
fn wait_for_export(w: &World, image: &str) {
    let dir = w.image_dir(image);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if temp_files(&dir) > 0 && !w.backup_snapshots(image).is_empty() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    panic!("no export started in {}", dir.display());
}

fn temp_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_string_lossy().starts_with(".cephbackup-tmp.")
                })
                .count()
        })
        .unwrap_or(0)
}

/// What must hold after any run: no temporary file, and every backup snapshot has a file.
fn assert_consistent(w: &World, image: &str) {
    assert_eq!(temp_files(&w.image_dir(image)), 0, "temporary files left");
    let files = w.files(image);
    for snap in w.backup_snapshots(image) {
        let prefix = format!("{image}@{snap}.");
        assert!(
            files.iter().any(|f| f.starts_with(&prefix)),
            "snapshot {snap} has no backup file: {files:?}"
        );
    }
    w.assert_every_file_has_a_checksum(image);
}

/// The newest full and the diffs after it, in order.
fn latest_chain(w: &World, image: &str) -> Vec<String> {
    let mut files = w.files(image);
    files.sort_by_key(|f| f.split_once('@').unwrap().1.to_string());
    let start = files
        .iter()
        .rposition(|f| f.contains(".full"))
        .expect("a full backup");
    files.split_off(start)
}

/// A run that was killed: when, and the last line it had printed by then.
struct Kill {
    after_ms: u64,
    last_line: String,
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "killed after {} ms, having printed {:?}",
            self.after_ms, self.last_line
        )
    }
}

/// Starts a run and SIGKILLs it after `delay_ms`. `None` when the kill came too late: the run had
/// exited already, or had printed its summary (its work was done).
fn kill_run(w: &World, conf: &str, delay_ms: u64) -> Option<Kill> {
    let child = w.spawn(&["-c", conf]);
    sleep(Duration::from_millis(delay_ms));
    signal(&child, "-KILL");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let finished = stdout.contains("Summary: ");
    match out.status.signal() {
        Some(9) if !finished => Some(Kill {
            after_ms: delay_ms,
            last_line: stdout.lines().last().unwrap_or("").to_string(),
        }),
        Some(9) => None,
        _ => {
            // Not killed: then it ended on its own, and well.
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}\n{stdout}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(finished, "{stdout}");
            None
        }
    }
}

fn kill_trials(extra: &str, trials: u64, seed: u64) {
    let w = World::new();
    w.create_image("k", 32 * MIB, seed);
    let conf_path = w.config(extra);
    let conf = conf_path.to_str().unwrap();
    w.backup(&conf_path).success();
    // The kills are spread over the length of a run like the trials' (not the first, full one).
    w.write_data("k", seed * 100 + 99);
    next_second();
    let started = Instant::now();
    w.backup(&conf_path).success();
    let normal_run = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut rng = Rng(seed | 1);
    let mut kills = Vec::new();
    for trial in 0..trials {
        w.write_data("k", seed * 100 + trial);
        let mut delay = rng.next() % (normal_run + 1);
        // A run that finished before the kill landed was not a trial: try again, sooner.
        let kill = loop {
            next_second();
            if let Some(kill) = kill_run(&w, conf, delay) {
                break kill;
            }
            assert!(
                delay > 0,
                "trial {trial}: even an immediate kill came too late"
            );
            delay /= 2;
        };
        next_second();
        // The dead run's rbd children hold its lock until they have exited.
        let run = w.cephbackup(&["-c", conf, "--wait", "120"]);
        assert_eq!(
            run.code, 0,
            "trial {trial} ({kill}; a run takes ~{normal_run} ms; seed {seed}):\n{}\n{}",
            run.stdout, run.stderr
        );
        assert_consistent(&w, "k");
        kills.push(kill);
    }
    // Every trial's run died by SIGKILL before its summary line.
    assert_eq!(kills.len() as u64, trials);
    for kill in &kills {
        eprintln!("seed {seed}, runs of ~{normal_run} ms: {kill}");
    }
    let chain = latest_chain(&w, "k");
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    if extra.contains("full") {
        // Full mode keeps no snapshot to compare with, but nothing wrote to the image after the
        // last run: its newest full file must hold the whole image as it is now.
        let newest = chain[0];
        assert!(newest.ends_with(".full"), "{chain:?}");
        let file = fs::read(w.image_dir("k").join(newest)).unwrap();
        assert!(
            same_bytes(&file, &w.export("k", None)),
            "{newest} ({} bytes) is not the image",
            file.len()
        );
    } else {
        restore_by_hand(&w, "k", &chain, "k-restored");
    }
}

#[test]
fn sigkill_at_random_points_of_incremental_runs_never_breaks_the_chain() {
    kill_trials("images = k\nbackup mode = incremental", 6, 11);
}

#[test]
fn sigkill_at_random_points_of_compressed_runs_never_breaks_the_chain() {
    kill_trials(
        "images = k\nbackup mode = incremental\ncompress = yes",
        6,
        12,
    );
}

#[test]
fn sigkill_at_random_points_of_sliding_runs_never_breaks_the_chain() {
    // A window of 0 makes every run a slide: new full, old files and snapshots removed.
    kill_trials(
        "images = k\nbackup mode = incremental\nwindow size = 0\ncompress = yes",
        6,
        13,
    );
}

#[test]
fn sigkill_at_random_points_of_full_runs_leaves_no_snapshot_or_partial_file() {
    kill_trials("images = k\nbackup mode = full", 6, 14);
}

/// A sparse image large enough that its compressed export is still running when we look (its
/// holes are not compressed, but `rbd export` still streams them as zeros, which takes seconds).
fn big_image(w: &World, image: &str) {
    rbd(&["create", "--size", "4G", &w.spec(image)]);
    w.write_data(image, 500);
}

#[test]
fn sigterm_during_an_export_stops_cleanly_with_143() {
    let w = World::new();
    big_image(&w, "big");
    w.create_image("after", 8 * MIB, 501);
    let conf = w.config("images = big, after\nbackup mode = incremental\ncompress = yes");
    let child = w.spawn(&["-c", conf.to_str().unwrap()]);
    wait_for_export(&w, "big");
    signal(&child, "-TERM");
    let run = finish(child).code(143);
    assert!(
        run.stderr.contains("interrupted by SIGTERM"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("remaining images were skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(
        w.all_files("big"),
        Vec::<String>::new(),
        "nothing partial left"
    );
    assert_eq!(
        w.backup_snapshots("big"),
        Vec::<String>::new(),
        "snapshot rolled back"
    );
    assert!(w.files("after").is_empty(), "the next image was skipped");
    next_second();
    w.backup(&w.config("images = after\nbackup mode = incremental"))
        .success();
    assert_consistent(&w, "after");
}

/// A `PATH` whose `rbd` makes snapshots like the real one, then marks `made` and hangs until it
/// is stopped: a signal that lands after the cluster made the snapshot, before `rbd` said so.
fn path_with_rbd_hanging_after_snap_create(w: &World) -> (String, std::path::PathBuf) {
    let made = w.tmp.path().join("snapshot-made");
    let script = format!(
        "#!/bin/sh\n\
         case \"$*\" in *'snap create'*)\n\
         \x20 '{real}' \"$@\" || exit $?\n\
         \x20 : > '{made}'\n\
         \x20 exec sleep 120;;\n\
         esac\n\
         exec '{real}' \"$@\"\n",
        real = real_rbd(),
        made = made.display()
    );
    (path_with_rbd_script(w, "hanging-bin", &script), made)
}

#[test]
fn sigterm_after_the_cluster_made_the_snapshot_but_before_rbd_said_so_removes_it() {
    let w = World::new();
    w.create_image("img", 8 * MIB, 502);
    let conf = w.config("images = img\nbackup mode = incremental");
    let (path, made) = path_with_rbd_hanging_after_snap_create(&w);
    let child = w.spawn_with_env(&["-c", conf.to_str().unwrap()], &[("PATH", &path)]);
    assert!(
        wait_until(Duration::from_secs(60), || made.exists()),
        "rbd snap create never ran"
    );
    let snaps = w.backup_snapshots("img");
    assert_eq!(snaps.len(), 1, "the snapshot is made, rbd has not returned");
    assert!(
        w.image_record("img")["pending"][0]["snapshot"] == snaps[0].as_str(),
        "the run is still waiting for rbd"
    );
    signal(&child, "-TERM");
    let run = finish_within(child, Duration::from_secs(60)).code(143);
    assert!(
        run.stderr
            .contains(&format!("removing snapshot {}", snaps[0])),
        "{}",
        run.stderr
    );
    assert_eq!(w.backup_snapshots("img"), Vec::<String>::new());
    assert_eq!(w.image_record("img")["pending"], serde_json::json!([]));
    assert_eq!(w.all_files("img"), Vec::<String>::new());
    next_second();
    w.backup(&conf).success();
    assert_consistent(&w, "img");
}

#[test]
fn overlapping_runs_are_refused_or_wait_for_the_lock() {
    let w = World::new();
    big_image(&w, "big");
    let conf = w.config("images = big\nbackup mode = incremental\ncompress = yes");
    let conf = conf.to_str().unwrap();
    let first = w.spawn(&["-c", conf]);
    wait_for_export(&w, "big");
    let refused = w.cephbackup(&["-c", conf, "--wait", "0"]).code(75);
    assert!(
        refused.stderr.contains(&format!(
            "another cephbackup run (pid {}: {} -c {conf}) is using {}",
            first.id(),
            env!("CARGO_BIN_EXE_cephbackup"),
            w.spec("big")
        )),
        "{}",
        refused.stderr
    );
    // Paused, the first run cannot let go of the image while the second one arrives at it.
    signal(&first, "-STOP");
    let mut waiting = w.spawn(&["-c", conf, "--wait", "600"]);
    let lock_name = format!("/{}/big.lock", w.pool);
    let reached = wait_until(Duration::from_secs(60), || {
        waiting.try_wait().unwrap().is_some() || has_open(waiting.id(), &lock_name)
    });
    let still_running = waiting.try_wait().unwrap().is_none();
    let snapshots = w.backup_snapshots("big");
    signal(&first, "-CONT");
    assert!(
        reached && still_running,
        "the waiting run never opened its lock file ({lock_name}) while the first held it"
    );
    assert_eq!(snapshots.len(), 1, "the waiting run did not start early");
    let first_snapshot = &snapshots[0];
    finish(first).success();
    let waited = finish(waiting).success();
    assert!(waited
        .stdout
        .contains("Summary: 1 image(s) backed up, 0 failed"));
    let snapshots = w.backup_snapshots("big");
    assert_eq!(snapshots.len(), 2);
    assert_eq!(&snapshots[0], first_snapshot);
    // The waiting run's backup is a diff from the first run's: it began after that was complete.
    let files = w.files("big");
    assert_eq!(
        files,
        [
            format!("big@{first_snapshot}.full.tar.gz"),
            format!("big@{}.diff_from_{first_snapshot}.tar.gz", snapshots[1])
        ]
    );
    assert_consistent(&w, "big");
}

/// Polls `done` every 20 ms until it holds (true) or `limit` has passed (false).
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    false
}

/// True when process `pid` has a file open whose path ends with `suffix`.
fn has_open(pid: u32, suffix: &str) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .any(|target| target.to_string_lossy().ends_with(suffix))
}

/// A small filesystem mounted for the test and unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, megabytes: u32) -> Option<SmallDisk> {
        fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }

    fn grow(&self, megabytes: u32) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_fails_the_image_cleanly_and_the_next_run_recovers() {
    let w = World::new();
    let Some(disk) = SmallDisk::mount(&w.dest, 6) else {
        eprintln!("skipped: this machine does not allow mounting a small filesystem");
        return;
    };
    w.create_image("small", 4 * MIB, 600);
    rbd(&["create", "--size", "64M", &w.spec("large")]);
    // Incompressible data well beyond the 6 MiB of the disk.
    for seed in 601..609 {
        w.write_data("large", seed);
    }
    let conf = w.config("images = large, small\nbackup mode = incremental");
    let run = w.backup(&conf).code(1);
    let error = run.first_error();
    // One short line, the cause first: the file and that its disk is full. The export's
    // command line is only in the debug log (`-v`).
    let prefix = format!(
        "error: {}/large: cannot write {}/large@BACKUP",
        w.pool,
        w.image_dir("large").display()
    );
    assert!(error.starts_with(&prefix), "{error}");
    assert!(
        error.ends_with(".full: the disk is full (No space left on device)"),
        "{error}"
    );
    assert!(
        !error.contains("rbd") && !error.contains("--conf"),
        "{error}"
    );
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count(),
        1
    );
    assert_eq!(
        w.all_files("large"),
        Vec::<String>::new(),
        "partial file removed"
    );
    assert!(
        w.backup_snapshots("large").is_empty(),
        "snapshot rolled back"
    );
    assert_eq!(
        w.files("small").len(),
        1,
        "the other image was still backed up"
    );

    disk.grow(256);
    w.write_data("small", 610);
    next_second();
    w.backup(&conf).success();
    assert_consistent(&w, "large");
    assert_consistent(&w, "small");
    let large = latest_chain(&w, "large");
    restore_by_hand(&w, "large", &[&large[0]], "large-restored");
    let small = latest_chain(&w, "small");
    assert_eq!(small.len(), 2, "the chain continues with a diff: {small:?}");
    restore_by_hand(&w, "small", &[&small[0], &small[1]], "small-restored");
    drop(disk);
}

#[test]
fn an_unreachable_cluster_fails_within_the_timeout_cause_first_naming_the_config() {
    let w = World::new();
    let bad_conf = w.unreachable_cluster_conf();
    let conf = w.write_config(&format!(
        "[rbd]\nimages = a\nbackup mode = incremental\ndestination directory = {}\n\
         ceph config = {}\nceph timeout = 3\n",
        w.dest.display(),
        bad_conf.display()
    ));
    let run = w.backup(&conf).code(1);
    let error = run.first_error();
    assert!(
        error.starts_with("error: rbd/a: cannot list snapshots: cannot reach the cluster"),
        "{error}"
    );
    for needle in [
        &format!(
            "the cluster of {} did not answer within 3 s",
            bad_conf.display()
        ),
        "authenticate timed out",
    ] {
        assert!(error.contains(needle), "{needle:?} missing in {error}");
    }
    // The command line is for the debug log only.
    assert!(!error.contains("--conf"), "{error}");
}

/// A keyring holding a freshly made (so wrong, or unknown) key for `client.<user>`.
fn keyring_with_a_new_key(w: &World, user: &str) -> std::path::PathBuf {
    let path = w.tmp.path().join(format!("{user}.keyring"));
    let out = Command::new("ceph-authtool")
        .arg("--create-keyring")
        .arg(&path)
        .args(["--gen-key", "-n", &format!("client.{user}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    path
}

#[test]
fn a_refused_login_says_authentication_failed_naming_the_user_and_keyring_settings() {
    let w = World::new();
    w.create_image("a", 4 * MIB, 850);
    w.create_image("b", 4 * MIB, 851);
    let settings = "see `ceph user` and `ceph keyring`";
    // The admin user with a wrong key, for named images in incremental mode.
    let wrong = keyring_with_a_new_key(&w, "admin");
    let conf = w.config(&format!(
        "images = a, b\nbackup mode = incremental\nceph keyring = {}\nceph timeout = 20",
        wrong.display()
    ));
    let started = Instant::now();
    let run = w.backup(&conf).code(1);
    assert!(started.elapsed() < Duration::from_secs(20), "no timeout");
    assert_eq!(
        run.first_error(),
        format!(
            "error: {}/a: cannot list snapshots: authentication failed: the cluster refused ceph \
             user 'admin' (the default) with the key in {} (an unknown user or a wrong key; \
             {settings}) (the remaining images on this cluster are not attempted)",
            w.pool,
            wrong.display()
        )
    );
    assert!(!run.stderr.contains("cannot reach"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("error: ").count(), 1, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("Failed: {}/b", w.pool)),
        "{}",
        run.stdout
    );
    // A user the cluster does not know, with `images = *` in full mode.
    let unknown = keyring_with_a_new_key(&w, "nobody");
    let conf = w.config(&format!(
        "images = *\nbackup mode = full\nceph user = nobody\nceph keyring = {}",
        unknown.display()
    ));
    let run = w.backup(&conf).code(1);
    assert_eq!(
        run.first_error(),
        format!(
            "error: pool {}: cannot list the images of pool {}: authentication failed: the \
             cluster refused ceph user 'nobody' with the key in {} (an unknown user or a wrong \
             key; {settings}) (the remaining images on this cluster are not attempted)",
            w.pool,
            w.pool,
            unknown.display()
        )
    );
    assert!(w.backup_snapshots("a").is_empty() && w.backup_snapshots("b").is_empty());
    assert_eq!(w.all_files("a"), Vec::<String>::new());
}

#[test]
fn an_image_name_with_control_characters_is_escaped_in_every_line() {
    let w = World::new();
    let name = "ev\x1b[31mil\tname";
    w.create_image(name, 4 * MIB, 860);
    w.create_image("fine", 4 * MIB, 861);
    let run = w
        .backup(&w.config("images = *\nbackup mode = full"))
        .code(1);
    let shown = format!("{}/ev\\x1b[31mil\\tname", w.pool);
    assert!(
        run.stderr.contains(&format!(
            "error: {shown}: image name \"ev\\u{{1b}}[31mil\\tname\""
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!("\t{shown}\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("Failed: {shown}")),
        "{}",
        run.stdout
    );
    for line in run.stdout.lines().chain(run.stderr.lines()) {
        assert!(!line.contains('\x1b'), "raw escape in {line:?}");
        // The tab that starts the overview's image lines is the original's own.
        assert!(
            !line.trim_start_matches('\t').contains('\t'),
            "raw tab in {line:?}"
        );
    }
    assert_eq!(w.files("fine").len(), 1);
}

#[test]
fn hostile_names_are_refused_with_a_clear_error() {
    let w = World::new();
    let dest = w.dest.display().to_string();
    let cases = [
        (
            "[-rbd]\nimages = a\n",
            "[-rbd] pool name \"-rbd\" starts with '-'",
        ),
        (
            "[..]\nimages = a\n",
            "[..] pool name \"..\" would name a folder outside",
        ),
        (
            "[rbd]\nimages = ../etc\n",
            "[rbd] images: image name \"../etc\" contains '/'",
        ),
        (
            "[rbd]\nimages = a, -x\n",
            "[rbd] images: image name \"-x\" starts with '-'",
        ),
        (
            "[rbd]\nimages = a@b\n",
            "[rbd] images: image name \"a@b\" contains '@'",
        ),
    ];
    for (head, expected) in cases {
        let conf = w.write_config(&format!(
            "{head}destination directory = {dest}\nbackup mode = full\n"
        ));
        let run = w.backup(&conf).code(2);
        assert!(
            run.stderr.contains(expected),
            "{expected:?} not in {}",
            run.stderr
        );
    }
    // A name from the pool itself (with `images = *`) is refused at run time, alone.
    w.create_image("-x", 4 * MIB, 700);
    w.create_image("fine name é", 4 * MIB, 701);
    let run = w
        .backup(&w.config("images = *\nbackup mode = incremental"))
        .code(1);
    assert!(
        run.stderr.contains(&format!(
            "error: {}/-x: image name \"-x\" starts with '-'",
            w.pool
        )),
        "{}",
        run.stderr
    );
    assert!(w.backup_snapshots("-x").is_empty());
    assert_eq!(w.files("fine name é").len(), 1);
}

#[test]
fn a_missing_destination_is_an_error_not_created() {
    let w = World::new();
    w.create_image("a", 4 * MIB, 800);
    let missing = w.tmp.path().join("not-mounted");
    let conf = w.write_config(&format!(
        "[{}]\nimages = a\nbackup mode = incremental\ndestination directory = {}\nceph config = {}\n",
        w.pool,
        missing.display(),
        cluster().conf.display()
    ));
    let run = w.backup(&conf).code(1);
    assert!(
        run.stderr.contains(&format!(
            "destination directory {} does not exist (is the backup disk mounted?)",
            missing.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!missing.exists());
    assert!(w.backup_snapshots("a").is_empty());
}

#[test]
fn a_protected_backup_snapshot_is_reported_and_skipped_without_breaking_the_chain() {
    let w = World::new();
    w.create_image("p", 16 * MIB, 900);
    let old = history(&w, "p", &[240, 24]);
    let protected = format!("{}@{}", w.spec("p"), old[0]);
    rbd(&["snap", "protect", &protected]);
    let conf = w.config("images = p\nbackup mode = incremental");
    let run = w.backup(&conf).success();
    assert!(
        run.stderr
            .contains(&format!("snapshot {} left in place", old[0])),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("1 warning(s)"), "{}", run.stdout);
    let snaps = w.backup_snapshots("p");
    assert_eq!(snaps.len(), 3);
    assert_eq!(snaps[0], old[0], "the protected snapshot is still there");
    let full = format!("p@{}.full", old[1]);
    let diff = format!("p@{}.diff_from_{}", snaps[2], old[1]);
    assert_eq!(w.files("p"), [full.clone(), diff.clone()]);
    restore_by_hand(&w, "p", &[&full, &diff], "p-restored");
    next_second();
    w.backup(&conf).success();
    rbd(&["snap", "unprotect", &protected]);
}

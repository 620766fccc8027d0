//! Runs that meet on one image wait for each other instead of failing, say whom they wait for,
//! and stop waiting on SIGTERM; two runs within one second both succeed; the metrics and `status`
//! tell a configuration error and a run in check mode; a configuration that backs up nothing
//! says so even under `-q`.
//!
//! The "other run" is sometimes this test holding the image's lock itself (as the tool does: an
//! exclusive flock on `<lock folder>/<pool>/<image>.lock`, with its holder line written in it), so
//! that the runs certainly meet.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use cephbackup::test_support::CLOCK_START;
use chrono::NaiveDateTime;

use crate::harness::*;

const HOLDER: &str = "pid 4242: cephbackup -c /etc/weekly.conf";

/// Takes `image`'s lock in the default lock folder (root's `/run/cephbackup`) the way a backup
/// run does; dropping the file lets go.
fn hold_lock(w: &World, image: &str) -> File {
    let pool_dir = Path::new("/run/cephbackup").join(&w.pool);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&pool_dir)
        .unwrap();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(pool_dir.join(format!("{image}.lock")))
        .unwrap();
    file.try_lock().expect("the image is free");
    file.set_len(0).unwrap();
    writeln!(file, "{HOLDER}").unwrap();
    file
}

/// A run started in the background, its stdout and stderr going to files that can be read while
/// it runs.
struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

fn start(w: &World, name: &str, args: &[&str]) -> Background {
    let stdout = w.tmp.path().join(format!("{name}.out"));
    let stderr = w.tmp.path().join(format!("{name}.err"));
    let child = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .args(args)
        .env_remove("CEPHBACKUP_LOG")
        .env("STATE_DIRECTORY", &w.state)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .expect("start cephbackup");
    Background {
        child,
        stdout,
        stderr,
    }
}

impl Background {
    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (up to a minute) until its stderr holds `text`.
    #[track_caller]
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.stderr().contains(text) {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "it ended before saying {text:?}:\n{}",
                self.stderr()
            );
            sleep(Duration::from_millis(20));
        }
        panic!("never said {text:?}:\n{}", self.stderr());
    }

    /// Waits for it to end, failing the test if that takes longer than `limit`.
    #[track_caller]
    fn finish_within(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!("still running after {limit:?}:\n{}", self.stderr());
            }
            sleep(Duration::from_millis(20));
        };
        Run {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: fs::read_to_string(&self.stdout).unwrap(),
            stderr: self.stderr(),
        }
    }
}

fn waiting_line(w: &World, image: &str) -> String {
    format!(
        "{}/{image}: waiting up to 6 h 00 min for another cephbackup run ({HOLDER}) to finish \
         with it",
        w.pool
    )
}

/// A second configuration file beside the world's own, with one section for its pool.
fn other_config(w: &World, name: &str, dest: &Path, extra: &str) -> PathBuf {
    fs::create_dir_all(dest).unwrap();
    w.config_named(name, dest, extra)
}

#[test]
fn a_full_and_an_incremental_job_started_together_both_back_up_the_image() {
    let w = World::new();
    w.create_image("vm", 16 * MIB, 1601);
    let daily = w.config("images = vm\nbackup mode = incremental");
    let weekly_dest = w.tmp.path().join("weekly");
    let weekly = other_config(
        &w,
        "weekly.conf",
        &weekly_dest,
        "images = vm\nbackup mode = full",
    );
    // Both arrive while the image is busy: each waits, saying for whom; once it is free, one
    // takes it and the other waits for that one. Neither needs a flag.
    let lock = hold_lock(&w, "vm");
    let mut incremental = start(&w, "daily", &["-c", daily.to_str().unwrap()]);
    let mut full = start(&w, "weekly", &["-c", weekly.to_str().unwrap()]);
    incremental.wait_for(&waiting_line(&w, "vm"));
    full.wait_for(&waiting_line(&w, "vm"));
    drop(lock);
    let incremental = incremental
        .finish_within(Duration::from_secs(120))
        .success();
    let full = full.finish_within(Duration::from_secs(120)).success();
    for run in [&incremental, &full] {
        assert!(
            run.stdout
                .contains("Summary: 1 image(s) backed up, 0 failed"),
            "{}",
            run.stdout
        );
    }
    // The incremental job's chain goes on from its full, and every point restores bit for bit.
    let snapshots = w.backup_snapshots("vm");
    assert_eq!(snapshots.len(), 1, "the full job's snapshot was temporary");
    let first = format!("vm@{}.full", snapshots[0]);
    assert_eq!(w.files("vm"), std::slice::from_ref(&first));
    next_second();
    w.write_data("vm", 1602);
    w.backup(&daily).success();
    let snapshots = w.backup_snapshots("vm");
    let diff = format!("vm@{}.diff_from_{}", snapshots[1], snapshots[0]);
    assert_eq!(w.files("vm"), [first.clone(), diff.clone()]);
    restore_by_hand(&w, "vm", &[&first, &diff], "restored");
    // The full job's file holds the image as it was before the new data.
    let weekly_dir = weekly_dest.join(&w.pool).join("vm");
    let fulls: Vec<String> = fs::read_dir(&weekly_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".full"))
        .collect();
    assert_eq!(fulls.len(), 1, "{fulls:?}");
    assert!(same_bytes(
        &fs::read(weekly_dir.join(&fulls[0])).unwrap(),
        &w.export("vm", Some(&snapshots[0]))
    ));
}

#[test]
fn wait_0_exits_75_a_wait_that_runs_out_says_so_and_sigterm_ends_a_wait() {
    let w = World::new();
    w.create_image("vm", 4 * MIB, 1610);
    let conf = w.config("images = vm\nbackup mode = incremental");
    let conf = conf.to_str().unwrap();
    let lock = hold_lock(&w, "vm");

    let started = Instant::now();
    let refused = w.cephbackup(&["-c", conf, "--wait", "0"]).code(75);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it did not wait"
    );
    assert!(
        refused.stderr.contains(&format!(
            "error: {}/vm: another cephbackup run ({HOLDER}) is using {}/vm; try again later, or \
             pass --wait SECONDS",
            w.pool, w.pool
        )),
        "{}",
        refused.stderr
    );

    // `wait` of [DEFAULT] bounds the wait.
    let short = w.write_config(&format!(
        "[DEFAULT]\nwait = 1\n[{}]\ndestination directory = {}\nceph config = {}\nimages = vm\n\
         backup mode = incremental\n",
        w.pool,
        w.dest.display(),
        cluster().conf.display()
    ));
    let ran_out = w.cephbackup(&["-c", short.to_str().unwrap()]).code(75);
    assert!(
        ran_out.stderr.contains(&format!(
            "is using {}/vm still, after waiting 1.0 s; try again later, or pass a longer --wait",
            w.pool
        )),
        "{}",
        ran_out.stderr
    );

    // A run waiting by default stops at once on SIGTERM, having touched nothing.
    let conf = w.config("images = vm\nbackup mode = incremental");
    let mut waiting = start(&w, "waiting", &["-c", conf.to_str().unwrap()]);
    waiting.wait_for(&waiting_line(&w, "vm"));
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &waiting.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let stopped = waiting.finish_within(Duration::from_secs(10)).code(143);
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert!(
        stopped.stderr.contains("interrupted by SIGTERM"),
        "{}",
        stopped.stderr
    );
    assert!(w.backup_snapshots("vm").is_empty());
    assert!(w.files("vm").is_empty());
    drop(lock);
}

/// Runs a backup whose clock starts at the second `snapshot` was taken in: the run meets the
/// one that took it within one second, however slow the machine.
fn backup_in_the_second_of(w: &World, conf: &Path, snapshot: &str) -> Run {
    let second = NaiveDateTime::parse_from_str(snapshot, "BACKUPUTC%Y%m%dT%H%M%S")
        .unwrap()
        .and_utc()
        .timestamp()
        .to_string();
    w.cephbackup_with_env(&["-c", conf.to_str().unwrap()], &[(CLOCK_START, &second)])
}

/// The snapshot one second after `snapshot`.
fn second_after(snapshot: &str) -> String {
    (NaiveDateTime::parse_from_str(snapshot, "BACKUPUTC%Y%m%dT%H%M%S").unwrap()
        + chrono::Duration::seconds(1))
    .format("BACKUPUTC%Y%m%dT%H%M%S")
    .to_string()
}

#[test]
fn two_runs_in_a_row_within_one_second_both_succeed() {
    let w = World::new();
    w.create_image("inc", 4 * MIB, 1620);
    w.create_image("full", 4 * MIB, 1621);
    for (image, mode) in [("inc", "incremental"), ("full", "full")] {
        let conf = w.config_named(
            &format!("{mode}.conf"),
            &w.dest,
            &format!("images = {image}\nbackup mode = {mode}"),
        );
        w.backup(&conf).success();
        // Full mode keeps no snapshot: its file alone holds the name.
        let first = w.files(image)[0]
            .split(['@', '.'])
            .nth(1)
            .unwrap()
            .to_string();
        w.write_data(image, 1622);
        let second = backup_in_the_second_of(&w, &conf, &first).success();
        assert!(
            second
                .stderr
                .contains(&format!("snapshot name {first} is taken already")),
            "{mode}: the second run did not meet the first one's second: {}",
            second.stderr
        );
        assert!(second.stderr.contains("waiting for the next second"));
        let later = second_after(&first);
        if mode == "incremental" {
            assert_eq!(w.backup_snapshots(image), [first.clone(), later.clone()]);
        }
        let files = w.files(image);
        let expected = if mode == "full" {
            [
                format!("{image}@{first}.full"),
                format!("{image}@{later}.full"),
            ]
        } else {
            [
                format!("{image}@{first}.full"),
                format!("{image}@{later}.diff_from_{first}"),
            ]
        };
        assert_eq!(files, expected, "{mode}");
        if mode == "full" {
            // No snapshot is left to compare with: the image has not changed since.
            let target = format!("restored-{image}");
            rbd_with_stdin(
                &["import", "-", &w.spec(&target)],
                &w.image_dir(image).join(&files[1]),
            );
            assert!(same_bytes(&w.export(&target, None), &w.export(image, None)));
        } else {
            let chain: Vec<&str> = files.iter().map(String::as_str).collect();
            restore_by_hand(&w, image, &chain, &format!("restored-{image}"));
        }
    }
}

/// The value of the sample without labels named `name` in the metrics text.
#[track_caller]
fn metric(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .to_string()
}

#[test]
fn metrics_and_status_tell_a_configuration_error_and_a_run_in_check_mode() {
    let w = World::new();
    w.create_image("vm", 4 * MIB, 1630);
    let prom = w.tmp.path().join("cephbackup.prom");
    let conf_with = |name: &str, section: &str| {
        let path = w.tmp.path().join(name);
        let text = format!(
            "[DEFAULT]\nmetrics file = {}\n[{}]\ndestination directory = {}\nimages = vm\n\
             backup mode = incremental\n{section}\n",
            prom.display(),
            w.pool,
            w.dest.display()
        );
        fs::write(&path, text).unwrap();
        path
    };
    let ceph = format!("ceph config = {}", cluster().conf.display());
    let good = conf_with("good.conf", &ceph);
    w.backup(&good).success();
    let text = fs::read_to_string(&prom).unwrap();
    assert_eq!(metric(&text, "cephbackup_run_success"), "1");
    assert_eq!(metric(&text, "cephbackup_run_config_error"), "0");
    assert_eq!(metric(&text, "cephbackup_run_check_mode"), "0");

    // A missing `ceph config` file, then a value that is no value: the last good run's metrics
    // are replaced each time.
    for (what, conf) in [
        (
            "missing ceph config",
            conf_with("missing.conf", "ceph config = /nonexistent/ceph.conf"),
        ),
        (
            "bad value",
            conf_with("bad.conf", &format!("{ceph}\ncompress = sometimes")),
        ),
    ] {
        fs::write(&prom, "cephbackup_run_success 1\n").unwrap();
        w.backup(&conf).code(2);
        let text = fs::read_to_string(&prom).unwrap();
        assert_eq!(metric(&text, "cephbackup_run_success"), "0", "{what}");
        assert_eq!(metric(&text, "cephbackup_run_config_error"), "1", "{what}");
    }

    // Check mode left in the file: exit 0, one warning even under -q, metrics and status say it.
    next_second();
    let checked = conf_with("checked.conf", &format!("{ceph}\ncheck mode = yes"));
    let run = w
        .cephbackup(&["-q", "-c", checked.to_str().unwrap()])
        .success();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains("is in check mode (check mode = yes): nothing was backed up"),
        "{}",
        run.stderr
    );
    let text = fs::read_to_string(&prom).unwrap();
    assert_eq!(metric(&text, "cephbackup_run_success"), "0");
    assert_eq!(metric(&text, "cephbackup_run_check_mode"), "1");
    let status = w
        .cephbackup(&["-c", checked.to_str().unwrap(), "status"])
        .code(1);
    assert!(status.stdout.starts_with("WARNING: "), "{}", status.stdout);
    assert!(
        status.stdout.contains("check mode = yes"),
        "{}",
        status.stdout
    );

    // `--check` on a configuration without the key: the metrics file tells status.
    w.cephbackup(&["-c", good.to_str().unwrap(), "--check"])
        .success();
    let text = fs::read_to_string(&prom).unwrap();
    assert_eq!(metric(&text, "cephbackup_run_check_mode"), "1");
    let status = w
        .cephbackup(&["-c", good.to_str().unwrap(), "status"])
        .code(1);
    assert!(
        status
            .stdout
            .contains("the last backup run was in check mode and backed nothing up"),
        "{}",
        status.stdout
    );
    // A real run makes it all well again.
    next_second();
    w.backup(&good).success();
    assert_eq!(
        metric(
            &fs::read_to_string(&prom).unwrap(),
            "cephbackup_run_success"
        ),
        "1"
    );
    w.cephbackup(&["-c", good.to_str().unwrap(), "status"])
        .success();
}

#[test]
fn a_configuration_that_backs_up_nothing_warns_even_when_quiet() {
    let w = World::new();
    let empty = w.write_config("# nothing here yet\n");
    let run = w
        .cephbackup(&["-q", "-c", empty.to_str().unwrap()])
        .success();
    assert!(
        run.stderr
            .contains("names no pool section: nothing was backed up"),
        "{}",
        run.stderr
    );
    // `images = *` on a pool without images.
    let all = w.config("images = *\nbackup mode = incremental");
    let run = w.cephbackup(&["-q", "-c", all.to_str().unwrap()]).success();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].contains(&format!(
            "no image to back up in {} ({}): nothing was backed up",
            w.pool,
            all.display()
        )),
        "{}",
        run.stderr
    );
}

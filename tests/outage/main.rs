//! A cluster that stops answering in the middle of a run. This binary has a cluster of its own,
//! because freezing the OSD would stall every other test sharing it; its tests take turns
//! ([`TURN`]) for the same reason.

#![allow(clippy::disallowed_methods)] // tests drive the real binary, rbd, ceph and kill directly

#[allow(dead_code)]
#[path = "../cluster/harness.rs"]
mod harness;

use std::process::Command;
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use harness::*;

/// Held by each test for its whole length: one test's frozen OSD is every test's.
static TURN: Mutex<()> = Mutex::new(());

fn my_turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Freezes the cluster's only OSD (SIGSTOP) until dropped: a stalled daemon, not a dead one, so
/// its in-memory data survives for the rest of the test.
struct FrozenOsd(String);

impl FrozenOsd {
    fn freeze() -> FrozenOsd {
        let run_dir = cluster().conf.parent().unwrap().join("run");
        let pid = std::fs::read_to_string(run_dir.join("osd.0.pid")).unwrap();
        let pid = pid.trim().to_string();
        assert!(Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success());
        FrozenOsd(pid)
    }
}

impl Drop for FrozenOsd {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

#[test]
fn a_stalled_osd_fails_the_run_within_the_timeout_and_the_next_run_recovers() {
    let _turn = my_turn();
    let w = World::new();
    rbd(&["create", "--size", "1G", &w.spec("vm")]);
    w.write_data("vm", 1);
    let conf =
        w.config("images = vm\nbackup mode = incremental\ncompress = yes\nceph timeout = 10");
    w.backup(&conf).success();
    w.write_data("vm", 2);
    sleep(Duration::from_millis(1100));

    let child = w.spawn(&["-c", conf.to_str().unwrap()]);
    let frozen = FrozenOsd::freeze();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    drop(frozen);
    let run = Run::from(out).code(1);
    let error = run.first_error();
    for needle in [
        format!("error: {}/vm:", w.pool),
        format!(
            "the cluster of {} did not answer within 10 s",
            cluster().conf.display()
        ),
    ] {
        assert!(error.contains(&needle), "{needle:?} missing in {error}");
    }
    // Cause first: the long rbd command line is for the debug log only.
    assert!(!error.contains("--conf"), "{error}");
    eprintln!("the run with a frozen OSD ended after {took:?}");

    sleep(Duration::from_millis(1100));
    let run = w.backup(&conf).success();
    let snaps = w.backup_snapshots("vm");
    let files = w.files("vm");
    assert_eq!(
        files.len(),
        snaps.len(),
        "{files:?} {snaps:?}\n{}",
        run.stdout
    );
    w.assert_every_file_has_a_checksum("vm");
    let chain: Vec<&str> = files.iter().map(String::as_str).collect();
    restore_by_hand(&w, "vm", &chain, "vm-restored");
}

/// True once a backup file is being written in `dir` (its temporary file exists).
fn export_started(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".cephbackup-tmp")
        })
    })
}

#[test]
fn a_cluster_that_stops_during_an_export_costs_at_most_two_timeouts_and_one_line() {
    let _turn = my_turn();
    let w = World::new();
    rbd(&["create", "--size", "1G", &w.spec("vm")]);
    w.create_image("other", 4 * MIB, 3);
    let conf = w.config("images = vm, other\nbackup mode = incremental\nceph timeout = 5");
    w.backup(&conf).success();
    // Enough changed data that the diff is still streaming when the OSD stops.
    rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "4M",
        "--io-total",
        "800M",
        &w.spec("vm"),
    ]);
    next_second();

    let snapshots_before = w.backup_snapshots("vm").len();
    let mut child = w.spawn(&["-c", conf.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    // A temporary file alone is not the export: the record noting the snapshot about to be
    // taken passes through one first. The new snapshot must exist too.
    while !(export_started(&w.image_dir("vm")) && w.backup_snapshots("vm").len() > snapshots_before)
    {
        assert!(Instant::now() < deadline, "the export never started");
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        sleep(Duration::from_millis(5));
    }
    let frozen = FrozenOsd::freeze();
    let stopped = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = stopped.elapsed();
    drop(frozen);
    let run = Run::from(out).code(1);
    eprintln!(
        "the run ended {took:?} after the OSD stopped:\n{}",
        run.stderr
    );
    // The export fails at its first timed-out operation instead of waiting for every other
    // one in flight, and the snapshot it made is left for the next run rather than costing
    // one more timeout now; the other image is not attempted.
    assert!(took < Duration::from_secs(2 * 5 + 1), "{took:?}");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    let error = errors[0];
    assert!(
        error.starts_with(&format!("error: {}/vm: cannot export vm@BACKUP", w.pool)),
        "{error}"
    );
    assert!(
        error.ends_with(&format!(
            ": timed out (the cluster of {} did not answer within 5 s; see `ceph timeout`; the \
             remaining images on it are not attempted)",
            cluster().conf.display()
        )),
        "{error}"
    );
    assert!(!run.stderr.contains("librbd"), "{}", run.stderr);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("Failed: {}/other", w.pool)),
        "{}",
        run.stdout
    );
    let left = w.backup_snapshots("vm");
    assert_eq!(left.len(), 2, "the new snapshot is left: {left:?}");

    // The cluster is back: the next run removes the leftover and carries the chain on.
    next_second();
    let run = w.backup(&conf).success();
    assert!(
        run.stdout
            .contains(&format!("Deleting snapshot {}@{}", w.spec("vm"), left[1])),
        "{}",
        run.stdout
    );
    let files = w.files("vm");
    assert_eq!(files.len(), 2, "{files:?}");
    let chain: Vec<&str> = files.iter().map(String::as_str).collect();
    restore_by_hand(&w, "vm", &chain, "vm-restored");
}

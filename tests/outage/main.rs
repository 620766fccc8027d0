//! A cluster that stops answering in the middle of a run. This binary has a cluster of its own,
//! because freezing the OSD would stall every other test sharing it.

#![allow(clippy::disallowed_methods)] // tests drive the real binary, rbd, ceph and kill directly

#[allow(dead_code)]
#[path = "../cluster/harness.rs"]
mod harness;

use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use harness::*;

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

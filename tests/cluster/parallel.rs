//! `parallel images = N`: several images backed up at once, with one failing, with SIGTERM; and
//! how many `rbd` processes one image costs.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A config for this test's pool with `[DEFAULT]` holding `defaults`.
fn config_with(w: &World, defaults: &str, extra: &str) -> PathBuf {
    w.write_config(&format!(
        "[DEFAULT]\n{defaults}\n[{}]\ndestination directory = {}\nceph config = {}\n{extra}\n",
        w.pool,
        w.dest.display(),
        cluster().conf.display()
    ))
}

/// The indexes of the stdout lines about `image` (they name `image@`) form one block.
#[track_caller]
fn assert_contiguous(stdout: &str, image: &str) {
    let lines: Vec<usize> = stdout
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            line.contains(&format!("/{image}@")) || line.contains(&format!(" {image}@"))
        })
        .map(|(index, _)| index)
        .collect();
    assert!(!lines.is_empty(), "no line about {image}:\n{stdout}");
    assert_eq!(
        lines.last().unwrap() - lines[0] + 1,
        lines.len(),
        "the lines about {image} are interleaved with others:\n{stdout}"
    );
}

fn temp_files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(temp_files_under(&path));
            } else if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".cephbackup-tmp.")
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn parallel_images_back_up_eight_images_four_at_a_time_and_one_failing_fails_alone() {
    let w = World::new();
    let images: Vec<String> = (0..7).map(|i| format!("img{i}")).collect();
    for (seed, image) in images.iter().enumerate() {
        w.create_image(image, 8 * MIB, 700 + seed as u64);
    }
    let mut listed = images.clone();
    listed.insert(3, "missing".into());
    let conf = config_with(
        &w,
        "parallel images = 4",
        &format!("images = {}\nbackup mode = incremental", listed.join(", ")),
    );
    let (run, log) = logged_run(&w, &conf, true);
    let conf = conf.to_str().unwrap();
    assert!(
        most_exports_at_once(&log) >= 2,
        "images ran one at a time: {log:#?}"
    );
    let mut run = Some(run);
    for round in 0..2 {
        let run = match run.take() {
            Some(first) => first,
            None => w.cephbackup(&["-c", conf]),
        }
        .code(1);
        for image in &images {
            assert_contiguous(&run.stdout, image);
        }
        assert!(
            run.stdout
                .contains("Summary: 7 image(s) backed up, 1 failed"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .ends_with(&format!("\nFailed: {}/missing\n", w.pool)),
            "{}",
            run.stdout
        );
        assert!(
            run.stderr.contains(&format!("error: {}/missing: ", w.pool)),
            "{}",
            run.stderr
        );
        for image in &images {
            let snaps = w.backup_snapshots(image);
            assert_eq!(snaps.len(), round + 1, "{image}: {snaps:?}");
            w.assert_checksums(image);
            let chain: Vec<String> = w.files(image);
            assert_eq!(chain.len(), round + 1, "{image}: {chain:?}");
        }
        assert_eq!(temp_files_under(&w.dest), Vec::<String>::new());
        next_second();
    }
    // Restorable, bit for bit: by hand with the stock tools, and with the tool itself.
    for image in ["img0", "img6"] {
        let files = w.files(image);
        let chain: Vec<&str> = files.iter().map(String::as_str).collect();
        restore_by_hand(&w, image, &chain, &format!("{image}-by-hand"));
        let target = w.tmp.path().join(format!("{image}.raw"));
        w.restore(Path::new(conf), image)
            .into_file(&target)
            .run()
            .success();
        let newest = w.backup_snapshots(image).pop().unwrap();
        assert!(same_bytes(
            &fs::read(&target).unwrap(),
            &w.export(image, Some(&newest))
        ));
    }
}

/// A sparse image large enough that its compressed export is still running when we look.
fn big_image(w: &World, image: &str, seed: u64) {
    rbd(&["create", "--size", "1G", &w.spec(image)]);
    w.write_data(image, seed);
}

#[test]
fn sigterm_during_a_parallel_run_stops_every_running_image_and_rolls_each_back() {
    let w = World::new();
    let images = ["big0", "big1", "big2", "big3", "big4", "big5"];
    for (seed, image) in images.iter().enumerate() {
        big_image(&w, image, 800 + seed as u64);
    }
    let conf = config_with(
        &w,
        "parallel images = 3",
        &format!(
            "images = {}\nbackup mode = incremental\ncompress = yes",
            images.join(", ")
        ),
    );
    let child = w.spawn(&["-c", conf.to_str().unwrap()]);
    // Work in progress: at least two exports running at once.
    let deadline = Instant::now() + Duration::from_secs(120);
    while temp_files_under(&w.dest).len() < 2 {
        assert!(Instant::now() < deadline, "no two exports ran at once");
        sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), None, "it exited by itself");
    let run = Run::from(out).code(143);
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
        temp_files_under(&w.dest),
        Vec::<String>::new(),
        "nothing partial left"
    );
    let mut rolled_back = 0;
    for image in images {
        // Every backup snapshot left is backed by its complete file; the rest were removed.
        let snaps = w.backup_snapshots(image);
        let files = w.files(image);
        assert_eq!(snaps.len(), files.len(), "{image}: {snaps:?} {files:?}");
        for snap in &snaps {
            assert!(
                files.iter().any(|f| f.contains(&format!("@{snap}."))),
                "{image}"
            );
        }
        rolled_back += usize::from(snaps.is_empty());
    }
    assert!(rolled_back >= 2, "the running images were stopped");
    // The next run is clean and completes every image.
    next_second();
    let run = w.backup(&conf).success();
    assert!(run
        .stdout
        .contains("Summary: 6 image(s) backed up, 0 failed"));
    for image in images {
        w.assert_checksums(image);
        assert!(!w.backup_snapshots(image).is_empty());
    }
    assert_eq!(temp_files_under(&w.dest), Vec::<String>::new());
}

/// Runs the binary with a `rbd` on PATH that logs each call (one line of arguments) and runs the
/// real one; returns the calls.
fn counted_run(w: &World, conf: &Path) -> Vec<String> {
    let (run, log) = logged_run(w, conf, false);
    run.success();
    log.iter()
        .filter_map(|line| line.strip_prefix("begin "))
        .map(|call| call.split_once(' ').unwrap().1.to_string())
        .collect()
}

/// Runs the binary with a `rbd` on PATH that logs when each call begins (`begin PID ARGS`) and
/// ends (`end PID`); with `slow_exports`, an export only starts after a second, so that exports
/// that can overlap do. Returns the run and the log.
fn logged_run(w: &World, conf: &Path, slow_exports: bool) -> (Run, Vec<String>) {
    let log = w.tmp.path().join("rbd-calls.log");
    let _ = fs::remove_file(&log);
    let script = format!(
        "#!/bin/sh\necho \"begin $$ $*\" >> '{log}'\n{delay}'{real}' \"$@\"\nstatus=$?\n\
         echo \"end $$\" >> '{log}'\nexit $status\n",
        log = log.display(),
        real = real_rbd(),
        delay = if slow_exports {
            "case \"$*\" in *export*) sleep 1;; esac\n"
        } else {
            ""
        },
    );
    let path = path_with_rbd_script(w, "bin", &script);
    let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .args(["-c", conf.to_str().unwrap()])
        .env("PATH", path)
        .env_remove("CEPHBACKUP_LOG")
        .env("STATE_DIRECTORY", state_beside(conf))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    (Run::from(out), log)
}

/// The most `rbd` exports running at the same time in a log of [`logged_run`].
fn most_exports_at_once(log: &[String]) -> usize {
    let mut running = std::collections::HashSet::new();
    let mut most = 0;
    for line in log {
        if let Some(rest) = line.strip_prefix("begin ") {
            let (pid, call) = rest.split_once(' ').unwrap();
            if call.contains(" export") {
                running.insert(pid.to_string());
                most = most.max(running.len());
            }
        } else if let Some(pid) = line.strip_prefix("end ") {
            running.remove(pid);
        }
    }
    most
}

/// The verb of a logged call: what follows the cluster options (`snap ls`, `export-diff`, …).
fn verbs(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .map(|call| {
            let words: Vec<&str> = call.split_whitespace().collect();
            let mut i = 0;
            while i < words.len() && words[i].starts_with("--") {
                i += if words[i] == "--no-progress" { 1 } else { 2 };
            }
            match words.get(i) {
                Some(&"snap") => format!("snap {}", words[i + 1]),
                Some(verb) => (*verb).to_string(),
                None => call.clone(),
            }
        })
        .collect()
}

#[test]
fn a_steady_state_incremental_run_starts_three_rbd_processes_per_image() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 900);
    let conf = w.config("images = vm\nbackup mode = incremental");
    w.backup(&conf).success();
    next_second();
    w.write_data("vm", 901);
    let calls = counted_run(&w, &conf);
    assert_eq!(
        verbs(&calls),
        ["snap ls", "snap create", "export-diff"],
        "{calls:#?}"
    );
    // A sliding run needs no `rbd info`: `snap ls` gave every listed snapshot's size.
    let history_world = World::new();
    history_world.create_image("old", 8 * MIB, 902);
    history(&history_world, "old", &[24 * 9, 24 * 3, 1]);
    let conf = history_world.config("images = old\nbackup mode = incremental");
    let calls = counted_run(&history_world, &conf);
    let verbs = verbs(&calls);
    assert!(!verbs.iter().any(|v| v == "info"), "{calls:#?}");
    assert!(verbs.len() <= 5, "{calls:#?}");
}

/// Not a test of correctness: prints how much faster four images at once back up eight small
/// images than one at a time. `cargo test --features test-support --test cluster measure_ -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, run by hand"]
fn measure_parallel_images() {
    let mut seconds = Vec::new();
    for parallel in [1, 4, 1, 4] {
        let w = World::new();
        let images: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
        for (seed, image) in images.iter().enumerate() {
            w.create_image(image, 16 * MIB, 950 + seed as u64);
        }
        let conf = config_with(
            &w,
            &format!("parallel images = {parallel}"),
            &format!("images = {}\nbackup mode = incremental", images.join(", ")),
        );
        w.backup(&conf).success();
        next_second();
        for image in &images {
            w.write_data(image, 990);
        }
        let started = Instant::now();
        w.backup(&conf).success();
        seconds.push((parallel, started.elapsed().as_secs_f64()));
    }
    eprintln!("MEASURE parallel images, 8 images of 16 MiB, incremental: {seconds:?}");
}

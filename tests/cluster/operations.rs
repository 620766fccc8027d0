//! What an administrator running the tool unattended sees: `-q` silent unless something is
//! wrong, timestamped log lines off a terminal, `-v` showing every `rbd` call with its duration,
//! progress bars only on a terminal, errors that lead with their cause, `verify` and `restore`
//! naming the points a bad file costs and the one to use instead, `--at` dates, and the offline
//! configuration check that never contacts the cluster.

use std::fs;
use std::process::{Command, Stdio};

use crate::chains::*;
use crate::harness::*;

/// The state folder of the world whose config `args` name after `-c`.
fn state_for(args: &[&str]) -> std::path::PathBuf {
    let conf = args
        .windows(2)
        .find(|pair| pair[0] == "-c")
        .map_or(".", |pair| pair[1]);
    state_beside(std::path::Path::new(conf))
}

/// Runs the binary with extra environment variables.
fn run_with_env(args: &[&str], env: &[(&str, String)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cephbackup"));
    command
        .args(args)
        .env_remove("CEPHBACKUP_LOG")
        .env("STATE_DIRECTORY", state_for(args))
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    Run::from(command.output().expect("run cephbackup"))
}

/// A `PATH` whose `rbd` only leaves a mark that it was run (and fails), ahead of the real one.
fn path_with_marking_rbd(w: &World) -> (String, std::path::PathBuf) {
    let mark = w.tmp.path().join("rbd-was-run");
    let script = format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", mark.display());
    (path_with_rbd_script(w, "marking-bin", &script), mark)
}

/// True when `line` starts with an RFC 3339 UTC time (`2026-11-26T12:00:00.123Z `).
fn starts_with_utc_time(line: &str) -> bool {
    line.split_whitespace().next().is_some_and(|first| {
        first.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(first).is_ok()
    })
}

fn has_no_terminal_drawing(text: &str) -> bool {
    !text.contains('\x1b') && !text.contains('\r') && !text.contains("ETA")
}

#[test]
fn quiet_prints_nothing_on_success_and_only_the_failure_otherwise() {
    let w = World::new();
    w.create_image("a", 8 * MIB, 1);
    let conf = w.config("images = a\nbackup mode = incremental");
    let conf_arg = conf.to_str().unwrap();
    let run = w.cephbackup(&["-q", "-c", conf_arg]).success();
    assert_eq!(run.stdout, "", "stdout of a quiet, successful run");
    assert_eq!(run.stderr, "", "stderr of a quiet, successful run");
    assert_eq!(w.files("a").len(), 1, "the backup was still made");

    // Without -q, the original's lines are all there for log scrapers.
    next_second();
    let run = w.backup(&conf).success();
    for line in [
        format!("Starting backup for pool {}", w.pool),
        "Incremental ceph backup".to_string(),
        "Images to backup:".to_string(),
        format!("\t{}/a", w.pool),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "{line:?} in {}",
            run.stdout
        );
    }
    let summary = run
        .stdout
        .lines()
        .find(|l| l.starts_with("Summary: "))
        .unwrap();
    assert!(summary.contains(" written in "), "{summary}");

    // One image missing: only the failure (and the summary naming it), nothing of the rest.
    next_second();
    let conf = w.config("images = a, nosuch\nbackup mode = incremental");
    let run = w.cephbackup(&["-q", "-c", conf.to_str().unwrap()]).code(1);
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [format!(
            "error: {}/nosuch: cannot list snapshots: image 'nosuch' does not exist",
            w.pool
        )],
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("Starting backup"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("Failed: {}/nosuch", w.pool)),
        "{}",
        run.stdout
    );
    assert_eq!(w.files("a").len(), 3, "the good image was still backed up");
}

#[test]
fn quiet_verify_says_nothing_when_every_file_is_sound_and_names_a_bad_one() {
    let w = World::new();
    w.create_image("a", 8 * MIB, 2);
    let conf = w.config("images = a\nbackup mode = incremental");
    let conf_arg = conf.to_str().unwrap();
    w.backup(&conf).success();
    let run = w.cephbackup(&["-q", "-c", conf_arg, "verify"]).success();
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    // Without -q the same verify reports what it checked.
    let run = w.cephbackup(&["-c", conf_arg, "verify"]).success();
    assert!(run.stdout.contains("Verified "), "{}", run.stdout);

    // One flipped byte: the quiet verify names the file and fails.
    let full = w
        .files("a")
        .into_iter()
        .find(|f| f.ends_with(".full"))
        .unwrap();
    let path = w.image_dir("a").join(&full);
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let run = w.cephbackup(&["-q", "-c", conf_arg, "verify"]).code(1);
    assert!(run.stdout.contains(&full), "{}", run.stdout);
    assert!(run.stdout.contains("Verified "), "{}", run.stdout);
}

#[test]
fn logs_carry_utc_times_off_a_terminal_and_verbose_shows_each_rbd_call_with_its_duration() {
    let w = World::new();
    w.create_image("a", 8 * MIB, 2);
    let conf = w.config("images = a\nbackup mode = incremental");
    let run = w.backup(&conf).success();
    let logs: Vec<&str> = run.stderr.lines().collect();
    assert!(!logs.is_empty(), "some info lines are logged");
    for line in &logs {
        assert!(starts_with_utc_time(line), "no UTC time: {line:?}");
    }
    assert!(has_no_terminal_drawing(&run.stderr), "{:?}", run.stderr);
    assert!(has_no_terminal_drawing(&run.stdout), "{:?}", run.stdout);

    next_second();
    let run = w
        .cephbackup(&["-v", "-c", conf.to_str().unwrap()])
        .success();
    let snap_ls = run
        .stderr
        .lines()
        .find(|l| l.contains("finished in ") && l.contains(" snap ls "))
        .unwrap_or_else(|| panic!("no snap ls with its duration in:\n{}", run.stderr));
    assert!(starts_with_utc_time(snap_ls), "{snap_ls}");
    assert!(
        snap_ls.contains(&format!("s: rbd --conf {}", cluster().conf.display())),
        "{snap_ls}"
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("finished in ") && l.contains(" export-diff ")),
        "{}",
        run.stderr
    );
    assert!(has_no_terminal_drawing(&run.stderr), "{:?}", run.stderr);
    // CEPHBACKUP_LOG=debug says the same.
    next_second();
    let run = run_with_env(
        &["-c", conf.to_str().unwrap()],
        &[("CEPHBACKUP_LOG", "debug".to_string())],
    )
    .success();
    assert!(run.stderr.contains(" snap ls "), "{}", run.stderr);
}

/// Runs the binary under `script`, so its stdin, stdout and stderr are a terminal.
fn on_a_terminal(args: &[&str]) -> Option<String> {
    let mut line = shell_words::quote(env!("CARGO_BIN_EXE_cephbackup")).into_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&shell_words::quote(arg));
    }
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("CEPHBACKUP_LOG")
        .env("STATE_DIRECTORY", state_for(args))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn progress_is_drawn_on_a_terminal_and_never_elsewhere() {
    let w = World::new();
    w.create_image("big", 64 * MIB, 3);
    let conf = w.config("images = big\nbackup mode = incremental\ncompress = true");
    let conf_arg = conf.to_str().unwrap();
    let Some(screen) = on_a_terminal(&["-c", conf_arg]) else {
        eprintln!("skipped: no `script` to give the tool a terminal");
        return;
    };
    assert!(screen.contains("ETA"), "a bar with its ETA: {screen:?}");
    assert!(screen.contains("/s"), "a bar with its rate: {screen:?}");
    assert!(
        !screen.contains("% complete"),
        "rbd's own percentage is not drawn beside ours: {screen:?}"
    );

    // verify reads every file: a bar on a terminal, none in a pipe.
    let screen = on_a_terminal(&["-c", conf_arg, "verify"]).unwrap();
    assert!(screen.contains("ETA"), "{screen:?}");
    let run = w.verify(&conf, &[]).success();
    assert!(has_no_terminal_drawing(&run.stderr), "{:?}", run.stderr);
    assert!(has_no_terminal_drawing(&run.stdout), "{:?}", run.stdout);
    let last = run.stdout.lines().last().unwrap();
    assert!(
        last.contains(" read in ") && last.ends_with(": no problems"),
        "{last}"
    );

    // Nor does -q draw one, even on a terminal.
    next_second();
    let screen = on_a_terminal(&["-q", "-c", conf_arg]).unwrap();
    assert_eq!(screen, "", "quiet on a terminal");
}

#[test]
fn errors_lead_with_their_cause_and_keep_the_command_for_debug() {
    let w = World::new();
    w.create_image("a", 4 * MIB, 4);
    let dest = w.dest.display().to_string();
    let ceph = cluster().conf.display().to_string();
    // A missing pool, listed with `images = *`.
    let conf = w.write_config(&format!(
        "[nosuchpool]\nimages = *\nbackup mode = full\ndestination directory = {dest}\n\
         ceph config = {ceph}\n"
    ));
    let run = w.backup(&conf).code(1);
    assert_eq!(
        run.first_error(),
        "error: pool nosuchpool: cannot list the images of pool nosuchpool: pool 'nosuchpool' \
         does not exist"
    );
    // A missing pool with a named image.
    let conf = w.write_config(&format!(
        "[nosuchpool]\nimages = vm\nbackup mode = incremental\ndestination directory = {dest}\n\
         ceph config = {ceph}\n"
    ));
    let run = w.backup(&conf).code(1);
    assert_eq!(
        run.first_error(),
        "error: nosuchpool/vm: cannot list snapshots: pool 'nosuchpool' does not exist"
    );
    assert!(!run.stderr.contains("--conf"), "{}", run.stderr);
    // The command line is there at debug level.
    let run = w.cephbackup(&["-v", "-c", conf.to_str().unwrap()]).code(1);
    assert!(
        run.stderr.lines().any(|l| l.contains("failed after ")
            && l.contains(&format!("rbd --conf {ceph}"))
            && l.contains("snap ls nosuchpool/vm")),
        "{}",
        run.stderr
    );

    // A keyring that is not there: refused at load, one line naming key, section, path, cause.
    let keyring = w.tmp.path().join("client.backup.keyring");
    let conf = w.write_config(&format!(
        "[{}]\nimages = a\nbackup mode = full\ndestination directory = {dest}\n\
         ceph config = {ceph}\nceph user = backup\nceph keyring = {}\n",
        w.pool,
        keyring.display()
    ));
    let run = w.backup(&conf).code(2);
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [format!(
            "error: {}:1: [{}] ceph keyring: cannot read {}: No such file or directory",
            conf.display(),
            w.pool,
            keyring.display()
        )]
    );
    assert!(w.backup_snapshots("a").is_empty(), "nothing was done");
    // A ceph config that is not there either.
    let missing_conf = w.tmp.path().join("nosuch-ceph.conf");
    let conf = w.write_config(&format!(
        "[{}]\nimages = a\nbackup mode = full\ndestination directory = {dest}\n\
         ceph config = {}\n",
        w.pool,
        missing_conf.display()
    ));
    let run = w.backup(&conf).code(2);
    assert!(
        run.first_error().ends_with(&format!(
            "[{}] ceph config: cannot read {}: No such file or directory",
            w.pool,
            missing_conf.display()
        )),
        "{}",
        run.stderr
    );
    // list needs no cluster, so it does not ask for the file (it exits 1 for the image that
    // has no backup yet, and says so on stdout).
    let run = with_conf(&w, &conf, &["list"]).code(1);
    assert_eq!(run.stderr, "");
    assert!(run.stdout.contains("never backed up"), "{}", run.stdout);
}

#[test]
fn verify_names_the_points_a_bad_file_costs_and_restore_the_one_to_use_instead() {
    let w = World::new();
    let (conf, snaps) = backed_up_chain(&w, "vm", 4, false);
    let dir = w.image_dir("vm");
    let second = format!("vm@{}.diff_from_{}", snaps[1], snaps[0]);
    let mut data = fs::read(dir.join(&second)).unwrap();
    let at = first_payload_byte(&data);
    data[at] ^= 0x20;
    fs::write(dir.join(&second), &data).unwrap();

    let run = w.verify(&conf, &[]).code(1);
    let error = run
        .stdout
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap();
    assert!(
        error.starts_with(&format!(
            "error: {}: checksum mismatch",
            dir.join(&second).display()
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "; restore points that need this file cannot be restored: {}, {}, {}; the newest \
             point that can be restored is {}",
            snaps[1], snaps[2], snaps[3], snaps[0]
        )),
        "{error}"
    );

    let target = w.tmp.path().join("vm.raw");
    let run = w.restore(&conf, "vm").into_file(&target).run().code(1);
    let error = run.first_error();
    assert!(
        error.starts_with(&format!(
            "error: {}: checksum mismatch",
            dir.join(&second).display()
        )),
        "{error}"
    );
    assert!(
        error.ends_with(&format!(
            "; {} needs {second}, so it cannot be restored; the newest point that does not is {} \
             ({}): restore it with --at {}",
            snaps[3],
            snaps[0],
            chrono::NaiveDateTime::parse_from_str(&snaps[0]["BACKUPUTC".len()..], "%Y%m%dT%H%M%S")
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S UTC"),
            snaps[0]
        )),
        "{error}"
    );
    assert!(!target.exists());
    // Steps are said as they happen, never as a shell command.
    assert!(
        run.stdout.lines().any(|l| l.starts_with("[1/4] Writing ")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("# "), "{}", run.stdout);
    // What it suggests works.
    let run = w
        .restore(&conf, "vm")
        .into_file(&target)
        .at(&snaps[0])
        .run()
        .success();
    assert!(
        run.stdout
            .contains(" checked against their .sha256 file, in "),
        "{}",
        run.stdout
    );
    assert_eq!(
        file_sha256(&target),
        sha256(&w.export("vm", Some(&snaps[0])))
    );
}

#[test]
fn at_takes_a_date_and_time_and_a_plain_date() {
    let w = World::new();
    let (conf, snaps) = backed_up_chain(&w, "vm", 3, false);
    let taken = |snap: &str| {
        chrono::NaiveDateTime::parse_from_str(&snap["BACKUPUTC".len()..], "%Y%m%dT%H%M%S").unwrap()
    };
    let as_of = |at: &str| -> String {
        let run = w
            .restore(&conf, "vm")
            .into_image("never")
            .arg("--check")
            .at(at)
            .run()
            .success();
        // The steps are on stderr; stdout holds the stock commands.
        let line = run
            .stderr
            .lines()
            .find(|line| line.contains(" as of "))
            .unwrap_or_else(|| panic!("no point named: {}", run.stderr))
            .to_string();
        let after = line.split(" as of ").nth(1).unwrap();
        after.split(' ').next().unwrap().to_string()
    };
    let second = taken(&snaps[1]);
    assert_eq!(
        as_of(&second.format("%Y-%m-%d %H:%M:%S").to_string()),
        snaps[1]
    );
    assert_eq!(
        as_of(&second.format("%Y-%m-%dT%H:%M:%S").to_string()),
        snaps[1]
    );
    // Minutes only: the newest point taken at or before that minute's start.
    let minute = second.format("%Y-%m-%d %H:%M").to_string();
    let expected = snaps.iter().rev().find(|s| {
        taken(s)
            <= chrono::NaiveDateTime::parse_from_str(&format!("{minute}:00"), "%Y-%m-%d %H:%M:%S")
                .unwrap()
    });
    match expected {
        Some(expected) => assert_eq!(&as_of(&minute), expected),
        None => {
            w.restore(&conf, "vm")
                .into_image("never")
                .at(&minute)
                .run()
                .code(1);
        }
    }
    // A plain date: the newest point of that day.
    let last_day = taken(&snaps[2]).format("%Y-%m-%d").to_string();
    assert_eq!(as_of(&last_day), snaps[2]);
    assert!(!images(&w).contains(&"never".to_string()));
}

#[test]
fn the_offline_check_never_runs_rbd_and_lists_every_problem() {
    let w = World::new();
    let (path, mark) = path_with_marking_rbd(&w);
    fs::create_dir_all(&w.dest).unwrap();
    let conf = w.config("images = a, b\nbackup mode = incremental");
    let conf_arg = conf.to_str().unwrap().to_string();
    let run = run_with_env(
        &["-c", &conf_arg, "--check", "--offline"],
        &[("PATH", path.clone())],
    )
    .success();
    assert_eq!(run.stderr, "", "{}", run.stderr);
    assert!(
        run.stdout
            .lines()
            .last()
            .unwrap()
            .ends_with("1 section(s), no problems; the cluster was not contacted"),
        "{}",
        run.stdout
    );
    assert!(
        !mark.exists(),
        "rbd was run: {:?}",
        fs::read_to_string(&mark)
    );
    // An unreachable cluster changes nothing: nothing is asked of it.
    let unreachable = w.unreachable_cluster_conf();
    let conf = w.write_config(&format!(
        "[{}]\nimages = a\nbackup mode = full\ndestination directory = {}\nceph config = {}\n\
         ceph timeout = 3\n",
        w.pool,
        w.dest.display(),
        unreachable.display()
    ));
    w.run_within(
        &["-c", conf.to_str().unwrap(), "--check", "--offline"],
        std::time::Duration::from_secs(20),
    )
    .success();

    // Every problem, one line each: a keyring missing, a destination missing, a pool folder that
    // is a file.
    let keyring = w.tmp.path().join("nosuch.keyring");
    let missing = w.tmp.path().join("not-mounted");
    let other = w.tmp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("second"), "").unwrap();
    let conf = w.write_config(&format!(
        "[DEFAULT]\nceph config = {}\nbackup mode = full\nimages = a\n\n\
         [{}]\ndestination directory = {}\nceph user = backup\nceph keyring = {}\n\n\
         [second]\ndestination directory = {}\n",
        cluster().conf.display(),
        w.pool,
        missing.display(),
        keyring.display(),
        other.display()
    ));
    let run = run_with_env(
        &["-c", conf.to_str().unwrap(), "--check", "--offline"],
        &[("PATH", path)],
    )
    .code(2);
    let errors: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(errors.len(), 3, "{}", run.stderr);
    assert!(
        errors[0].ends_with(&format!(
            "[{}] ceph keyring: cannot read {}: No such file or directory",
            w.pool,
            keyring.display()
        )),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors[1],
        format!(
            "error: [{}] destination directory {} does not exist (is the backup disk mounted?)",
            w.pool,
            missing.display()
        )
    );
    assert!(
        errors[2].starts_with(&format!(
            "error: [second] destination directory {}: its pool folder",
            other.display()
        )) && errors[2].ends_with("is a regular file, not a folder"),
        "{}",
        errors[2]
    );
    assert!(run.stdout.contains("3 problem(s)"), "{}", run.stdout);
    assert!(
        !mark.exists(),
        "rbd was run: {:?}",
        fs::read_to_string(&mark)
    );
}

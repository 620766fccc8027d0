//! Hostile entries in a backup folder, against the real cluster: each case is planted in a fresh
//! copy of a real backup chain, then `list`, `verify` and `restore` (into a file and into an
//! image) run under a deadline that SIGKILLs. Each must finish on its own, name the entry and what
//! it is, write nothing outside the destination and the target, leak none of a root-only secret's
//! bytes, and leave the older restore points restorable bit for bit.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::chains::*;
use crate::harness::*;
use cephbackup::test_support::sparse_bomb;

/// Long enough for any honest run on a loaded machine; the hostile inputs without the fixes run
/// for months or forever.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs the binary with `-c conf`, SIGKILLing it at the deadline; panics if it needed the kill.
fn run_bounded(conf: &Path, args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
        .arg("-c")
        .arg(conf)
        .args(args)
        .env_remove("CEPHBACKUP_LOG")
        .env("STATE_DIRECTORY", state_beside(conf))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cephbackup");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "cephbackup {args:?} was still running after {} s and had to be killed",
                DEADLINE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run::from(std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    })
}

/// A snapshot name `minutes` after `snap`.
fn later(snap: &str, minutes: i64) -> String {
    let taken = chrono::NaiveDateTime::parse_from_str(snap, "BACKUPUTC%Y%m%dT%H%M%S")
        .unwrap()
        .and_utc();
    (taken + chrono::Duration::minutes(minutes))
        .format("BACKUPUTC%Y%m%dT%H%M%S")
        .to_string()
}

/// Every entry under `root`, never followed: its kind, mode, length and, for regular files, its
/// bytes. Equal before and after means nothing under `root` was written, created or removed.
fn tree(root: &Path) -> BTreeMap<String, (String, u32, u64, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, u32, u64, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = meta.file_type();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let (what, bytes) = if kind.is_dir() {
                ("dir", vec![])
            } else if kind.is_file() {
                ("file", fs::read(&path).unwrap())
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                ("symlink", target.display().to_string().into_bytes())
            } else if kind.is_fifo() {
                ("fifo", vec![])
            } else {
                ("other", vec![])
            };
            out.insert(
                rel,
                (what.to_string(), meta.mode(), meta.len(), bytes.clone()),
            );
            if kind.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What a case must produce.
enum Expect {
    /// The entry at `name` is refused, by path, with `message`; `older` is the newest point that
    /// does not need it.
    Refused {
        name: String,
        message: String,
        older: String,
    },
    /// The entry at `name` is flagged with `message`, but the point it claims is also reached by
    /// regular files, and restores from them bit for bit.
    Sidestepped { name: String, message: String },
    /// Names with control characters: reported escaped, and everything else works.
    Escaped { names: Vec<String> },
}

struct Case {
    what: &'static str,
    expect: Expect,
    /// Plants the hostile entries in a copy of the image folder.
    plant: Box<dyn Fn(&Path)>,
    /// Whether `list` has something to flag (it reads no file, so it cannot see a bomb).
    listed: bool,
}

#[test]
fn hostile_entries_are_named_bounded_and_never_hide_intact_points() {
    let w = World::new();
    let (_, snaps) = backed_up_chain(&w, "vm", 3, false);
    let (s1, s2) = (snaps[1].clone(), snaps[2].clone());
    let s3 = later(&s2, 10);
    let s4 = later(&s2, 20);
    let d2 = format!("vm@{s2}.diff_from_{s1}");

    // A root-only file outside the destination, with a marker no honest output contains.
    let marker = format!("CEPHBACKUP-SECRET-{}", std::process::id());
    let secret_dir = w.tmp.path().join("root-only");
    fs::create_dir(&secret_dir).unwrap();
    let secret = secret_dir.join("shadow");
    fs::write(&secret, marker.repeat(100_000)).unwrap();
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let secret_before = fs::read(&secret).unwrap();

    let names = Names {
        full3: format!("vm@{s3}.full"),
        s1,
        s2,
        s3,
        s4,
        d2,
    };
    let mut cases = entries_that_are_no_regular_file(&names, &secret);
    cases.extend(archive_bombs(&names));
    cases.extend(sidestepped_and_escaped(&names));
    let latest = names.s2;

    let shared = Shared {
        marker,
        secret,
        secret_before,
        latest,
    };
    run_every_case(&w, &cases, &shared);
}

/// The names the cases plant: the chain's second and newest points (`s1`, `s2`) and its newest
/// diff `d2`, two points after it (`s3`, `s4`) and a full of the first of them (`full3`).
struct Names {
    s1: String,
    s2: String,
    s3: String,
    s4: String,
    d2: String,
    full3: String,
}

/// Refused by path, with the newest point before it still restoring.
fn refused(name: String, message: &str, older: &str) -> Expect {
    Expect::Refused {
        name,
        message: message.to_string(),
        older: older.to_string(),
    }
}

/// Links, FIFOs and folders named like backup files.
fn entries_that_are_no_regular_file(names: &Names, secret: &Path) -> Vec<Case> {
    let Names {
        s1,
        s2,
        s3,
        d2,
        full3,
        ..
    } = names;
    vec![
        Case {
            what: "a .full that is a symlink to a root-only file",
            expect: refused(full3.clone(), "is a symbolic link, not a regular file", s2),
            plant: Box::new({
                let (full3, secret) = (full3.clone(), secret.to_path_buf());
                move |dir| std::os::unix::fs::symlink(&secret, dir.join(&full3)).unwrap()
            }),
            listed: true,
        },
        Case {
            what: "a .full that is a symlink to /dev/zero",
            expect: refused(full3.clone(), "is a symbolic link, not a regular file", s2),
            plant: Box::new({
                let full3 = full3.clone();
                move |dir| std::os::unix::fs::symlink("/dev/zero", dir.join(&full3)).unwrap()
            }),
            listed: true,
        },
        Case {
            what: "a .full that is a FIFO",
            expect: refused(full3.clone(), "is a FIFO, not a regular file", s2),
            plant: Box::new({
                let full3 = full3.clone();
                move |dir| mkfifo(&dir.join(&full3))
            }),
            listed: true,
        },
        Case {
            what: "the newest diff's .sha256 is a FIFO",
            expect: refused(format!("{d2}.sha256"), "is a FIFO, not a regular file", s1),
            plant: Box::new({
                let d2 = d2.clone();
                move |dir| {
                    let sidecar = dir.join(format!("{d2}.sha256"));
                    fs::remove_file(&sidecar).unwrap();
                    mkfifo(&sidecar);
                }
            }),
            listed: true,
        },
        Case {
            what: "a folder named like a backup file",
            expect: refused(full3.clone(), "is a folder, not a regular file", s2),
            plant: Box::new({
                let full3 = full3.clone();
                move |dir| {
                    fs::create_dir(dir.join(&full3)).unwrap();
                    fs::write(dir.join(&full3).join("inside"), b"x").unwrap();
                }
            }),
            listed: true,
        },
        Case {
            what: "a dangling symlink named like the newest diff",
            expect: refused(
                format!("vm@{s3}.diff_from_{s2}"),
                "is a symbolic link, not a regular file",
                s2,
            ),
            plant: Box::new({
                let name = format!("vm@{s3}.diff_from_{s2}");
                move |dir| {
                    std::os::unix::fs::symlink("/nonexistent/cephbackup-gone", dir.join(&name))
                        .unwrap();
                }
            }),
            listed: true,
        },
    ]
}

/// Sparse archives that declare more than any image: refused by size, read no further.
fn archive_bombs(names: &Names) -> Vec<Case> {
    let Names {
        s2, s3, s4, full3, ..
    } = names;
    vec![
        Case {
            what: "a 200-byte archive whose sparse member declares 2^62 bytes, as a new full",
            expect: refused(
                format!("{full3}.tar.gz"),
                &format!(
                    "the archive member {full3} declares {} bytes, more than the largest image \
                     read when its chain records no size",
                    1u64 << 62
                ),
                s2,
            ),
            plant: Box::new({
                let full3 = full3.clone();
                move |dir| {
                    fs::write(
                        dir.join(format!("{full3}.tar.gz")),
                        sparse_bomb(&full3, 1 << 62),
                    )
                    .unwrap();
                }
            }),
            listed: false,
        },
        Case {
            what: "the same declaring 1 TiB, under the absolute limit, in a chain whose diff \
                   records 24 MiB",
            expect: refused(
                format!("{full3}.tar.gz"),
                &format!(
                    "the archive member {full3} declares {} bytes, more than the largest image \
                     size its chain records (in vm@{s4}.diff_from_{s3}): {} bytes",
                    1u64 << 40,
                    24 * MIB
                ),
                s2,
            ),
            plant: Box::new({
                let (full3, s3, s4) = (full3.clone(), s3.clone(), s4.clone());
                move |dir| {
                    fs::write(
                        dir.join(format!("{full3}.tar.gz")),
                        sparse_bomb(&full3, 1 << 40),
                    )
                    .unwrap();
                    let header = cephbackup::test_support::DiffHeader {
                        from_snap: Some(s3.clone()),
                        to_snap: Some(s4.clone()),
                        size: 24 * MIB,
                    };
                    let mut diff =
                        cephbackup::test_support::DiffWriter::new(Vec::new(), &header).unwrap();
                    diff.write_data(4096, &[7u8; 4096]).unwrap();
                    fs::write(
                        dir.join(format!("vm@{s4}.diff_from_{s3}")),
                        diff.finish().unwrap(),
                    )
                    .unwrap();
                }
            }),
            listed: false,
        },
        Case {
            what: "a sparse archive declaring 2^62 bytes as the newest diff",
            expect: refused(
                format!("vm@{s3}.diff_from_{s2}.tar.gz"),
                &format!(
                    "the archive member vm@{s3}.diff_from_{s2} declares 4611686018427387904 \
                     bytes, more than the longest diff stream"
                ),
                s2,
            ),
            plant: Box::new({
                let name = format!("vm@{s3}.diff_from_{s2}");
                move |dir| {
                    fs::write(
                        dir.join(format!("{name}.tar.gz")),
                        sparse_bomb(&name, 1 << 62),
                    )
                    .unwrap();
                }
            }),
            listed: false,
        },
    ]
}

/// A FIFO the chain's diffs route around, and names with control characters.
fn sidestepped_and_escaped(names: &Names) -> Vec<Case> {
    let s2 = &names.s2;
    let evil = "vm@BACKUPUTC\x1b]0;pwned\x07\nerror: forged line\r.full".to_string();
    let strange = "\x1b[2J\x1b[31mnotes\\x1b".to_string();
    vec![
        Case {
            what: "a FIFO named like a full of the newest point, which diffs also reach",
            expect: Expect::Sidestepped {
                name: format!("vm@{s2}.full"),
                message: "is a FIFO, not a regular file".to_string(),
            },
            plant: Box::new({
                let name = format!("vm@{s2}.full");
                move |dir| mkfifo(&dir.join(&name))
            }),
            listed: true,
        },
        Case {
            what: "file names with control characters",
            expect: Expect::Escaped {
                names: vec![evil.clone(), strange.clone()],
            },
            plant: Box::new({
                let (evil, strange) = (evil.clone(), strange.clone());
                move |dir| {
                    fs::write(dir.join(&evil), b"x").unwrap();
                    fs::write(dir.join(&strange), b"y").unwrap();
                }
            }),
            listed: true,
        },
    ]
}

/// Every case runs, so one failure does not hide another; then all failures are shown.
fn run_every_case(w: &World, cases: &[Case], shared: &Shared) {
    let mut failures = Vec::new();
    for (number, case) in cases.iter().enumerate() {
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_case(w, number, case, shared);
        }));
        if let Err(panic) = checked {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    panic
                        .downcast_ref::<&str>()
                        .map(std::string::ToString::to_string)
                })
                .unwrap_or_default();
            failures.push(format!("{}: {message}", case.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// What every case shares: the secret and the newest honest point.
struct Shared {
    marker: String,
    secret: PathBuf,
    secret_before: Vec<u8>,
    latest: String,
}

/// One case planted in its own copy of the backups: its folder, config and output folder, and
/// every output its commands printed (searched for the secret at the end).
struct Planted<'w> {
    w: &'w World,
    number: usize,
    what: &'static str,
    dir: PathBuf,
    conf: PathBuf,
    out_dir: PathBuf,
    file_out: PathBuf,
    latest_image: String,
    outputs: std::cell::RefCell<Vec<String>>,
}

impl Planted<'_> {
    /// Runs the binary under the deadline and keeps what it printed.
    fn run(&self, args: &[&str]) -> Run {
        let run = run_bounded(&self.conf, args);
        self.outputs
            .borrow_mut()
            .push(format!("{}{}", run.stdout, run.stderr));
        run
    }

    /// `restore` of `vm` with `extra`, under the deadline.
    fn restore(&self, extra: &[&str]) -> Run {
        let mut args = vec!["restore", "--pool", self.w.pool.as_str(), "--image", "vm"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `verify` names the entry at `name` with `message`, and exits 1.
    fn verify_names(&self, name: &str, message: &str) {
        let path = self.dir.join(name).display().to_string();
        let verify = self.run(&["verify", "--image", "vm"]).code(1);
        let line = format!("error: {path}: {message}");
        assert!(
            verify.stdout.lines().any(|l| l.starts_with(&line)),
            "{}: {line:?} in\n{}",
            self.what,
            verify.stdout
        );
    }
}

/// Plants one case in a fresh copy of the backups and checks every command against it.
fn check_case(w: &World, number: usize, case: &Case, shared: &Shared) {
    let what = case.what;
    let dest = copy_backups(w, &format!("hostile-{number}"));
    let dir = dest.join(&w.pool).join("vm");
    (case.plant)(&dir);
    let out_dir = w.tmp.path().join(format!("out-{number}"));
    fs::create_dir(&out_dir).unwrap();
    let planted = Planted {
        w,
        number,
        what,
        conf: config_at(w, &format!("hostile-{number}.conf"), &dest, &cluster().conf),
        dir,
        file_out: out_dir.join("latest.raw"),
        out_dir,
        latest_image: format!("hostile-{number}-latest"),
        outputs: std::cell::RefCell::new(Vec::new()),
    };
    let dest_before = tree(&dest);

    let list = planted.run(&["list", "--image", "vm"]).success();
    let list_json: serde_json::Value = serde_json::from_str(
        &planted
            .run(&["list", "--json", "--image", "vm"])
            .success()
            .stdout,
    )
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let findings = list_json["images"][0]["findings"]
        .as_array()
        .unwrap()
        .clone();

    match &case.expect {
        Expect::Refused {
            name,
            message,
            older,
        } => {
            if case.listed {
                let line = format!("  error: {name}: {message}");
                assert!(
                    list.stdout.contains(&line),
                    "{what}: {line:?} in\n{}",
                    list.stdout
                );
                assert!(
                    findings.iter().any(|f| f["file"] == name.as_str()
                        && f["kind"] == "not_regular"
                        && f["severity"] == "error"),
                    "{what}: {findings:?}"
                );
            }
            check_refused(&planted, name, message, older);
        }
        Expect::Sidestepped { name, message } => {
            let line = format!("  error: {name}: {message}");
            assert!(
                list.stdout.contains(&line),
                "{what}: {line:?} in\n{}",
                list.stdout
            );
            check_sidestepped(&planted, name, message, &shared.latest);
        }
        Expect::Escaped { names } => {
            check_escaped(&planted, names, &list, &findings, &shared.latest);
        }
    }

    assert!(
        tree(&dest) == dest_before,
        "{what}: something under the destination changed"
    );
    check_nothing_leaked(&planted, shared);
}

/// The entry at `name` is refused by path with `message` by verify and by restore into a file or
/// an image, which leave nothing behind; the point `older` restores bit for bit.
fn check_refused(planted: &Planted, name: &str, message: &str, older: &str) {
    let (w, what, number) = (planted.w, planted.what, planted.number);
    let path = planted.dir.join(name).display().to_string();
    planted.verify_names(name, message);

    let file_out = &planted.file_out;
    for target in [
        vec!["--to-file", file_out.to_str().unwrap()],
        vec!["--to", planted.latest_image.as_str()],
    ] {
        let refused = planted.restore(&target).code(1);
        let error = refused.first_error();
        assert!(
            error.contains(&path) && error.contains(message),
            "{what}: {error}"
        );
        assert_eq!(
            refused
                .stderr
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1,
            "{what}: {}",
            refused.stderr
        );
        assert!(
            !refused.stdout.contains("Importing") && !refused.stdout.contains("Writing"),
            "{what}: {}",
            refused.stdout
        );
    }
    assert!(!file_out.exists(), "{what}");
    assert!(!images(w).contains(&planted.latest_image), "{what}");

    // The point before the hostile entry restores bit for bit, into a file and an image.
    let expected = w.export("vm", Some(older));
    let older_file = planted.out_dir.join("older.raw");
    let older_image = format!("hostile-{number}-older");
    planted
        .restore(&["--at", older, "--to-file", older_file.to_str().unwrap()])
        .success();
    assert_eq!(file_sha256(&older_file), sha256(&expected), "{what}");
    planted
        .restore(&["--at", older, "--to", &older_image])
        .success();
    assert!(
        same_bytes(&w.export(&older_image, None), &expected),
        "{what}"
    );
    let mut names: Vec<String> = fs::read_dir(&planted.out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["older.raw"], "{what}: only the target was written");
}

/// The entry at `name` is named by verify with `message`, and the newest point `latest` restores
/// all the same, into a file and an image.
fn check_sidestepped(planted: &Planted, name: &str, message: &str, latest: &str) {
    let (w, what) = (planted.w, planted.what);
    planted.verify_names(name, message);
    let expected = w.export("vm", Some(latest));
    planted
        .restore(&["--to-file", planted.file_out.to_str().unwrap()])
        .success();
    assert_eq!(file_sha256(&planted.file_out), sha256(&expected), "{what}");
    planted.restore(&["--to", &planted.latest_image]).success();
    assert!(
        same_bytes(&w.export(&planted.latest_image, None), &expected),
        "{what}"
    );
}

/// Names with control characters are shown escaped by list and verify, named exactly in their
/// JSON, forge no line and change nothing: the newest point `latest` restores.
fn check_escaped(
    planted: &Planted,
    names: &[String],
    list: &Run,
    findings: &[serde_json::Value],
    latest: &str,
) {
    let (w, what, dir) = (planted.w, planted.what, &planted.dir);
    for name in names {
        let shown = cephbackup::test_support::escaped(name).into_owned();
        assert_ne!(&shown, name);
        assert!(
            list.stdout.contains(&shown),
            "{what}: {shown:?} in {}",
            list.stdout
        );
        assert!(
            findings.iter().any(|f| f["file"] == name.as_str()),
            "{what}: JSON names it exactly: {findings:?}"
        );
    }
    let verify = planted.run(&["verify", "--image", "vm"]).success();
    let json = planted
        .run(&["verify", "--json", "--image", "vm"])
        .success();
    let document: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    for name in names {
        let shown = cephbackup::test_support::escaped(name).into_owned();
        assert!(
            verify
                .stdout
                .contains(&format!("{}: ", dir.join(&shown).display())),
            "{what}: {shown:?} in {}",
            verify.stdout
        );
        let path = dir.join(name).display().to_string();
        assert!(
            document["images"][0]["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["file"] == path.as_str()),
            "{what}: {}",
            json.stdout
        );
    }
    for run in [list, &verify, &json] {
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !all.chars().any(|c| c != '\n' && c.is_control()),
            "{what}: a control character reached the output: {all:?}"
        );
        assert!(
            !all.lines().any(|l| l.starts_with("error: forged")),
            "{what}: a name forged a line: {all}"
        );
    }
    // Strangers change nothing: the latest point restores.
    planted
        .restore(&["--to-file", planted.file_out.to_str().unwrap()])
        .success();
    assert_eq!(
        file_sha256(&planted.file_out),
        sha256(&w.export("vm", Some(latest))),
        "{what}"
    );
}

/// The secret is unchanged, and no output and no image restored by the case holds its marker.
fn check_nothing_leaked(planted: &Planted, shared: &Shared) {
    let (w, what, number) = (planted.w, planted.what, planted.number);
    let marker = shared.marker.as_str();
    assert_eq!(
        fs::read(&shared.secret).unwrap(),
        shared.secret_before,
        "{what}"
    );
    for output in planted.outputs.borrow().iter() {
        assert!(
            !output.contains(marker),
            "{what}: the secret leaked: {output}"
        );
    }
    for image in images(w)
        .into_iter()
        .filter(|i| i.starts_with(&format!("hostile-{number}-")))
    {
        let bytes = w.export(&image, None);
        assert!(
            !bytes
                .windows(marker.len())
                .any(|win| win == marker.as_bytes()),
            "{what}: the secret leaked into {image}"
        );
    }
}

/// `restore` as a user who may not read the destination: the error says so, not that there are
/// no backups. Skipped where `runuser` or the `nobody` user is missing.
#[test]
fn permission_denied_is_not_reported_as_missing_backups() {
    let w = World::new();
    let (_, _) = backed_up_chain(&w, "vm", 1, false);
    // The config is readable by everyone; the destination is not.
    let open = w.tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::set_permissions(
        w.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(&w.dest, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let conf = config_at(&w, "open/readable.conf", &w.dest, &cluster().conf);
    fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(env!("CARGO_BIN_EXE_cephbackup"))
        .arg("-c")
        .arg(&conf)
        .args(["restore", "--pool", &w.pool, "--image", "vm", "--to-file"])
        .arg(open.join("vm.raw"))
        .env_remove("CEPHBACKUP_LOG")
        .output();
    let Ok(out) = out else {
        eprintln!("skipped: runuser is not available");
        return;
    };
    let run = Run::from(out);
    if run.stderr.contains("runuser:") {
        eprintln!("skipped: {}", run.stderr);
        return;
    }
    let run = run.code(1);
    let error = run.first_error();
    assert_eq!(
        error,
        format!(
            "error: cannot read the backups of {}/vm: {}: Permission denied (os error 13)",
            w.pool,
            w.image_dir("vm").display()
        )
    );
    assert!(!open.join("vm.raw").exists());
}

/// Where the target is a path that cannot be written, the error names it and its cause, not the
/// backup file.
#[test]
fn a_target_that_cannot_be_written_is_named_with_its_cause() {
    let w = World::new();
    let (conf, _) = backed_up_chain(&w, "vm", 2, false);
    let missing: PathBuf = w.tmp.path().join("no/such/folder/vm.raw");
    let run = w.restore(&conf, "vm").into_file(&missing).run().code(1);
    assert_eq!(
        run.first_error(),
        format!(
            "error: cannot create {}: cannot create a file in {}: No such file or directory (os \
             error 2)",
            missing.display(),
            missing.parent().unwrap().display()
        )
    );
}

/// A sparse archive member just under the absolute limit is read (nothing says the image is
/// smaller), but it cannot keep `verify` or `restore --to-file` from stopping on SIGTERM: the
/// signal is checked while the member is read, not only between files.
#[test]
fn a_signal_stops_a_long_read_inside_an_archive_promptly() {
    let w = World::new();
    let dir = w.image_dir("vm");
    fs::create_dir_all(&dir).unwrap();
    let full = "vm@BACKUPUTC20200101T000000.full";
    // 512 TiB of holes: days of reading.
    fs::write(
        dir.join(format!("{full}.tar.gz")),
        sparse_bomb(full, 1 << 49),
    )
    .unwrap();
    let conf = w.config("images = vm\nbackup mode = full");
    let out = w.tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let target = out.join("vm.raw");
    let restore = w.restore(&conf, "vm").into_file(&target);
    for args in [vec!["-c", conf.to_str().unwrap(), "verify"], restore.args()] {
        let mut child = w.spawn(&args);
        // Well into the member by then.
        std::thread::sleep(Duration::from_secs(2));
        assert!(child.try_wait().unwrap().is_none(), "{args:?} ended early");
        let signalled = Instant::now();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if signalled.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("{args:?} did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(143), "{args:?}: {stderr}");
        assert!(
            stderr.contains("interrupted by SIGTERM"),
            "{args:?}: {stderr}"
        );
    }
    // The interrupted restore removed its own partial file.
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
}

/// A `.tar.zst` whose sparse map holds 200,000 ranges (a few MiB of headers compressing to a few
/// KiB) is verified promptly: the map is walked once, not once per range. One more range than
/// the writer ever writes is refused with one line naming the file.
#[test]
fn a_sparse_map_of_many_ranges_is_read_promptly_and_one_past_the_cap_refused() {
    use cephbackup::test_support::sparse_tar;
    use cephbackup::test_support::MAX_SPARSE_EXTENTS;
    let w = World::new();
    let dir = w.image_dir("vm");
    fs::create_dir_all(&dir).unwrap();
    let conf = w.config("images = vm\nbackup mode = full");
    let plant = |full: &str, entries: &[(u64, u64)], size: u64, data: &[u8]| {
        let name = format!("{full}.tar.zst");
        let bytes = zstd::encode_all(&sparse_tar(full, entries, size, data)[..], 19).unwrap();
        fs::write(dir.join(&name), &bytes).unwrap();
        fs::write(
            dir.join(format!("{name}.sha256")),
            cephbackup::test_support::checksum_line(&sha256(&bytes), &name),
        )
        .unwrap();
        (name, bytes.len())
    };
    // All empty but the last, one byte apart: GNU-valid, and all header.
    let count = 200_000u64;
    let mut entries: Vec<(u64, u64)> = (0..count - 1).map(|i| (i, 0)).collect();
    entries.push((count - 1, 1));
    let full = "vm@BACKUPUTC20200101T000000.full";
    let (_, on_disk) = plant(full, &entries, count, &[7]);
    assert!(on_disk < 200_000, "{on_disk} bytes");
    let started = Instant::now();
    w.run_within(
        &["-c", conf.to_str().unwrap(), "verify"],
        Duration::from_secs(60),
    )
    .success();
    // Machines are noisy; the crate's quadratic walk took minutes here.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let over: Vec<(u64, u64)> = (0..=MAX_SPARSE_EXTENTS as u64 + 1)
        .map(|i| (i, 0))
        .collect();
    let later = "vm@BACKUPUTC20200102T000000.full";
    let (name, _) = plant(later, &over, over.len() as u64, &[]);
    let run = w
        .run_within(
            &["-c", conf.to_str().unwrap(), "verify"],
            Duration::from_secs(60),
        )
        .code(1);
    // verify reports on stdout.
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("sparse map"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    assert!(
        lines[0].starts_with("error: ")
            && lines[0].contains(&name)
            && lines[0].contains(&format!("more than {MAX_SPARSE_EXTENTS} ranges")),
        "{}",
        run.stdout
    );
}

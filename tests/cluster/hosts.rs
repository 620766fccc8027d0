//! Several backup hosts sharing one configuration (`coordination pool`): worker processes, each
//! with a host name, state folder and lock folder of its own, run one config against the
//! cluster and a shared destination. Every image is backed up exactly once per round, a killed
//! worker's image is finished by another after its lease expires, and a stalled worker publishes
//! nothing once it resumes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Seconds a lease lasts in these tests: a dead worker's image is taken over after this.
const LEASE: u64 = 8;

/// A config for the world's pool whose hosts coordinate in that same pool.
fn shared_config(w: &World, images: &str) -> PathBuf {
    w.write_config(&format!(
        "[DEFAULT]\ncoordination pool = {pool}\ncoordination lease = {LEASE}\nceph config = {conf}\n\
         [{pool}]\ndestination directory = {dest}\nimages = {images}\nbackup mode = incremental\n",
        pool = w.pool,
        conf = cluster().conf.display(),
        dest = w.dest.display(),
    ))
}

/// Starts a worker: the binary as host `host`, with its own state and lock folders (another
/// machine's), `extra` arguments and `path` as PATH when given.
fn worker(w: &World, conf: &Path, host: &str, extra: &[&str], path: Option<&str>) -> Child {
    let own = w.tmp.path().join(format!("host-{host}"));
    fs::create_dir_all(&own).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cephbackup"));
    command
        .args(["-c", conf.to_str().unwrap(), "--json", "--host", host])
        .arg("--lock-dir")
        .arg(own.join("locks"))
        .args(extra)
        .env_remove("CEPHBACKUP_LOG")
        .env("STATE_DIRECTORY", own.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.spawn().expect("start a worker")
}

/// Each image's status in each worker's run report: image → [(host, status, action)].
fn statuses(reports: &[serde_json::Value]) -> BTreeMap<String, Vec<(String, String, String)>> {
    let mut by_image: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for report in reports {
        for image in report["images"].as_array().unwrap() {
            by_image
                .entry(image["image"].as_str().unwrap().to_string())
                .or_default()
                .push((
                    image["host"].as_str().unwrap_or("").to_string(),
                    image["status"].as_str().unwrap().to_string(),
                    image["action"].as_str().unwrap().to_string(),
                ));
        }
    }
    by_image
}

/// Runs `hosts` at once (started in that order) and returns their reports.
fn round(w: &World, conf: &Path, hosts: &[&str]) -> Vec<serde_json::Value> {
    let children: Vec<Child> = hosts
        .iter()
        .map(|host| worker(w, conf, host, &[], None))
        .collect();
    children
        .into_iter()
        .map(|child| {
            let run = finish_within(child, Duration::from_secs(300)).success();
            // Every record any host sealed is believed by every other: no warning at all.
            assert!(!run.stderr.contains(" WARN "), "{}", run.stderr);
            let report = run.json();
            let errors = crate::report::schema_errors(&report);
            assert_eq!(errors, Vec::<String>::new(), "{report}");
            report
        })
        .collect()
}

/// Every image was backed up by exactly one host in the round (`action`), and the other
/// hosts reported it as that host's.
#[track_caller]
fn assert_once_each(reports: &[serde_json::Value], images: &[String], action: &str) {
    let by_image = statuses(reports);
    assert_eq!(by_image.len(), images.len(), "{by_image:?}");
    for (image, seen) in &by_image {
        let done: Vec<&(String, String, String)> = seen
            .iter()
            .filter(|(_, status, _)| status == "ok")
            .collect();
        assert_eq!(done.len(), 1, "{image} backed up once: {seen:?}");
        assert_eq!(done[0].2, action, "{image}: {seen:?}");
        for (host, status, action) in seen.iter().filter(|(_, status, _)| status != "ok") {
            assert_eq!(status, "elsewhere", "{image}: {seen:?}");
            assert_eq!(action, "skipped", "{image}: {seen:?}");
            assert_eq!(
                host, &done[0].0,
                "{image} is reported as its host's: {seen:?}"
            );
        }
    }
}

#[test]
fn three_hosts_back_up_every_image_exactly_once_per_round() {
    let w = World::new();
    let images: Vec<String> = (0..30).map(|i| format!("vm{i:02}")).collect();
    for (seed, image) in images.iter().enumerate() {
        w.create_image(image, 4 * MIB, seed as u64);
    }
    let conf = shared_config(&w, "*");

    let first = round(&w, &conf, &["w1", "w2", "w3"]);
    assert_once_each(&first, &images, "full");
    // The work was shared: more than one host backed images up.
    let hosts: std::collections::BTreeSet<String> = statuses(&first)
        .values()
        .flat_map(|seen| seen.iter().filter(|s| s.1 == "ok").map(|s| s.0.clone()))
        .collect();
    assert!(hosts.len() > 1, "one host did everything: {hosts:?}");
    for image in &images {
        assert_eq!(w.backup_snapshots(image).len(), 1, "{image}");
        assert_eq!(w.files(image).len(), 1, "{image}: {:?}", w.files(image));
        w.assert_every_file_has_a_checksum(image);
    }

    // Next night, the hosts start in another order: every chain continues with one diff,
    // whichever host made its full.
    for (seed, image) in images.iter().enumerate() {
        w.write_data(image, 100 + seed as u64);
    }
    next_second();
    // w1 was reinstalled: its state folder (and its own record key) is gone; the hosts' shared
    // memory and key in the cluster let it continue any chain.
    fs::remove_dir_all(w.tmp.path().join("host-w1/state")).unwrap();
    let second = round(&w, &conf, &["w3", "w2", "w1"]);
    assert_once_each(&second, &images, "diff");
    for image in &images {
        let files = w.files(image);
        assert_eq!(files.len(), 2, "{image}: {files:?}");
        assert_eq!(w.backup_snapshots(image).len(), 2, "{image}");
    }
    // `status` names the host that completed each image's newest point.
    let done_by = statuses(&second);
    let status = with_conf(&w, &conf, &["status", "--json"]).success().json();
    let shown = status["images"].as_array().unwrap();
    assert_eq!(shown.len(), images.len(), "{status}");
    for image in shown {
        let name = image["image"].as_str().unwrap();
        let host = &done_by[name].iter().find(|s| s.1 == "ok").unwrap().0;
        assert_eq!(image["host"].as_str(), Some(host.as_str()), "{image}");
    }
    // `list --json` names it on each image's newest point.
    let listing = w.list_json(&conf, &[], 0);
    assert_eq!(listing.images().len(), images.len());
    for image in listing.images() {
        let name = image["image"].as_str().unwrap();
        let host = &done_by[name].iter().find(|s| s.1 == "ok").unwrap().0;
        let newest = image["restore_points"].as_array().unwrap().last().unwrap();
        assert_eq!(newest["host"].as_str(), Some(host.as_str()), "{image}");
    }
    // Every chain restores what its source snapshot holds, bit for bit.
    w.verify(&conf, &["--source"]).success();
    let chain: Vec<String> = w.files(&images[7]);
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    restore_by_hand(&w, &images[7], &chain, "restored");
}

/// A PATH whose `rbd` stalls the full export of `image` after its first bytes until
/// `release` exists, having created `started`.
fn stalling_rbd(w: &World, image: &str) -> (String, PathBuf, Release) {
    let release = w.tmp.path().join("release");
    let started = w.tmp.path().join("export-started");
    let script = format!(
        "#!/bin/sh\n\
         case \"$*\" in *' export '*'/{image}@'*)\n\
         \x20 '{real}' \"$@\" | {{ head -c 65536; touch '{started}'; until [ -e '{release}' ]; do sleep 0.1; done; cat; }}\n\
         \x20 exit 0;;\n\
         esac\n\
         exec '{real}' \"$@\"\n",
        real = real_rbd(),
        started = started.display(),
        release = release.display()
    );
    let path = path_with_rbd_script(w, "stalling-bin", &script);
    (path, started, Release(release))
}

/// The file that lets a stalled export go on; made when dropped at the latest, so that no
/// stalled `rbd` outlives its test (a killed worker's goes on alone).
struct Release(PathBuf);

impl Release {
    fn now(&self) {
        fs::write(&self.0, "").unwrap();
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = fs::write(&self.0, "");
    }
}

#[track_caller]
fn wait_for(file: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        assert!(Instant::now() < deadline, "the export did not start");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the worker ended early"
        );
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_hosts_image_is_finished_by_another_after_its_lease_expires() {
    let w = World::new();
    let images = ["a1", "a2", "a3", "a4"];
    for (seed, image) in images.iter().enumerate() {
        w.create_image(image, 4 * MIB, seed as u64);
    }
    let conf = shared_config(&w, &images.join(","));
    let (path, started, _release) = stalling_rbd(&w, "a1");
    let mut doomed = worker(&w, &conf, "doomed", &[], Some(&path));
    wait_for(&started, &mut doomed);
    doomed.kill().unwrap();
    let status = doomed.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL mid-export");
    let published = |image: &str| -> Vec<String> {
        let mut files = w.files(image);
        files.retain(|name| !name.starts_with(".cephbackup-tmp."));
        files
    };
    // Killed in the middle: its partial file is under a temporary name only.
    assert_eq!(w.files("a1").len(), 1, "{:?}", w.files("a1"));
    assert!(published("a1").is_empty(), "{:?}", w.files("a1"));

    // The other hosts wait for the dead host's lease to expire and take its image over.
    let started_at = Instant::now();
    let reports: Vec<serde_json::Value> = ["w1", "w2"]
        .iter()
        .map(|host| worker(&w, &conf, host, &["--wait", "60"], None))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|child| {
            finish_within(child, Duration::from_secs(120))
                .success()
                .json()
        })
        .collect();
    let by_image = statuses(&reports);
    let done = |image: &str| -> Vec<String> {
        by_image[image]
            .iter()
            .filter(|s| s.1 == "ok")
            .map(|s| s.0.clone())
            .collect()
    };
    assert_eq!(done("a1").len(), 1, "{by_image:?}");
    assert!(
        started_at.elapsed() < Duration::from_secs(60),
        "taken over after the lease, not the whole wait"
    );
    for image in images {
        // One backup snapshot each: the dead host's was removed (its record named it).
        assert_eq!(w.backup_snapshots(image).len(), 1, "{image}");
        assert_eq!(w.files(image).len(), 1, "{image}: {:?}", w.files(image));
    }
    restore_by_hand(&w, "a1", &[w.files("a1")[0].as_str()], "a1-restored");
}

#[test]
fn a_stalled_host_publishes_nothing_once_it_resumes() {
    let w = World::new();
    w.create_image("s1", 4 * MIB, 1);
    let conf = shared_config(&w, "s1");
    let (path, started, release) = stalling_rbd(&w, "s1");
    let mut stalled = worker(&w, &conf, "stalled", &[], Some(&path));
    wait_for(&started, &mut stalled);
    // `hosts` shows who runs and who holds the image's lease, until when.
    let shown = with_conf(&w, &conf, &["hosts", "--json"]).success().json();
    assert_eq!(hosts_schema_errors(&shown), Vec::<String>::new(), "{shown}");
    assert_eq!(shown["running"][0]["host"], "stalled", "{shown}");
    assert_eq!(shown["leases"][0]["image"], "s1", "{shown}");
    assert_eq!(shown["leases"][0]["host"], "stalled", "{shown}");
    assert!(shown["leases"][0]["expires"]
        .as_str()
        .unwrap()
        .starts_with("20"));
    let pid = rustix::process::Pid::from_child(&stalled);
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    // Past its lease, another host takes the image over and backs it up.
    sleep(Duration::from_secs(LEASE + 2));
    let other = finish_within(
        worker(&w, &conf, "other", &["--wait", "60"], None),
        Duration::from_secs(120),
    )
    .success();
    let report = other.json();
    assert_eq!(report["images"][0]["status"], "ok", "{report}");
    let files = w.files("s1");
    let snapshots = w.backup_snapshots("s1");
    assert_eq!(
        (files.len(), snapshots.len()),
        (1, 1),
        "{files:?} {snapshots:?}"
    );

    // Resumed, the stalled host finds its lease gone: its export is not published, its
    // snapshot is rolled back, and it says so.
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    release.now();
    let resumed = finish_within(stalled, Duration::from_secs(60));
    assert_eq!(resumed.code, 1, "{}", resumed.stderr);
    assert!(
        resumed.stderr.contains("lost its lease"),
        "{}",
        resumed.stderr
    );
    assert_eq!(w.files("s1"), files, "the other host's chain is untouched");
    let shown = with_conf(&w, &conf, &["hosts"]).success().stdout;
    assert!(
        shown.contains(&format!("{}/s1  by other at ", w.pool)),
        "{shown}"
    );
    assert_eq!(w.backup_snapshots("s1"), snapshots, "no snapshot leaked");
    restore_by_hand(&w, "s1", &[files[0].as_str()], "s1-restored");
}

/// `ceph ARGS` against the test cluster.
fn ceph(args: &[&str]) -> std::process::Output {
    Command::new("ceph")
        .arg("--conf")
        .arg(&cluster().conf)
        .args(args)
        .output()
        .unwrap()
}

fn hosts_schema_errors(doc: &serde_json::Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/hosts.schema.json");
    let schema: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator.iter_errors(doc).map(|e| e.to_string()).collect()
}

#[test]
fn a_missing_or_unwritable_coordination_pool_is_one_line_at_load() {
    let w = World::new();
    w.create_image("m1", 4 * MIB, 1);
    let conf = w.write_config(&format!(
        "[DEFAULT]\ncoordination pool = no-such-pool\nceph config = {conf}\n[{pool}]\n\
         destination directory = {dest}\nimages = m1\nbackup mode = full\n",
        pool = w.pool,
        conf = cluster().conf.display(),
        dest = w.dest.display(),
    ));
    let run = w.backup(&conf).code(1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("coordination pool no-such-pool does not exist in the cluster of"),
        "{}",
        run.stderr
    );
    assert!(w.backup_snapshots("m1").is_empty());

    // A user that may only read the pool cannot take leases: refused before any snapshot.
    let user = format!("client.ro-{}", w.pool);
    let keyring = w.tmp.path().join("ro.keyring");
    let read_only = format!("allow r pool={}", w.pool);
    let keyring_path = keyring.to_str().unwrap();
    let caps = ["mon", "allow r", "osd", &read_only, "-o", keyring_path];
    let out = ceph(&[&["auth", "get-or-create", &user][..], &caps].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = w.write_config(&format!(
        "[DEFAULT]\ncoordination pool = {pool}\nceph config = {conf}\nceph user = {name}\n\
         ceph keyring = {keyring}\n[{pool}]\ndestination directory = {dest}\nimages = m1\n\
         backup mode = full\n",
        pool = w.pool,
        conf = cluster().conf.display(),
        name = user.strip_prefix("client.").unwrap(),
        keyring = keyring.display(),
        dest = w.dest.display(),
    ));
    let run = w.backup(&conf).code(1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("cannot write to coordination pool {}", w.pool)),
        "{}",
        run.stderr
    );
    assert!(w.backup_snapshots("m1").is_empty());
    let _ = ceph(&["auth", "rm", &user]);
}

/// `rados --pool POOL ARGS` against the test cluster; panics with its stderr when it fails.
fn rados(pool: &str, args: &[&str]) -> String {
    let out = Command::new("rados")
        .arg("--conf")
        .arg(&cluster().conf)
        .args(["--pool", pool])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rados {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_host_that_holds_a_lease_only_to_look_is_never_named_as_the_backer() {
    let w = World::new();
    w.create_image("t1", 4 * MIB, 1);
    let conf = shared_config(&w, "t1");
    let first = finish_within(worker(&w, &conf, "w0", &[], None), Duration::from_secs(120));
    assert_eq!(first.success().json()["images"][0]["status"], "ok");
    // A round the test keeps open: every worker below joins it.
    let objects = rados(&w.pool, &["ls"]);
    let round_object = objects
        .lines()
        .find(|name| name.starts_with("cephbackup.round."))
        .expect("the round's object");
    rados(
        &w.pool,
        &[
            "lock",
            "get",
            round_object,
            "round",
            "--lock-type",
            "shared",
            "--lock-tag",
            "test-round",
            "--lock-cookie",
            "keeper",
            "--lock-duration",
            "120",
        ],
    );
    w.write_data("t1", 2);
    next_second();
    let done = finish_within(worker(&w, &conf, "w3", &[], None), Duration::from_secs(120));
    assert_eq!(done.success().json()["images"][0]["status"], "ok");
    // w2 holds the image's lease now, as a host does while it reads that w3 completed it.
    let lease = format!("cephbackup.lease.{}/t1", w.pool);
    rados(
        &w.pool,
        &[
            "lock",
            "get",
            &lease,
            "cephbackup",
            "--lock-cookie",
            "w2",
            "--lock-duration",
            "120",
        ],
    );
    let report = finish_within(worker(&w, &conf, "w1", &[], None), Duration::from_secs(120))
        .success()
        .json();
    let image = &report["images"][0];
    assert_eq!(image["status"], "elsewhere", "{report}");
    assert_eq!(image["host"], "w3", "the host that backed it up: {report}");
    assert_eq!(w.files("t1").len(), 2, "{:?}", w.files("t1"));
}

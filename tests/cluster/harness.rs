//! Test harness: one throwaway Ceph cluster per test binary, and a small world per test.
//!
//! The cluster is started on first use by `scripts/ceph-sandbox` in a temporary folder, on a free
//! loopback port, with a watchdog that stops it once this test process exits. Each test gets its own
//! pool (so `images = *` sees only its images), its own destination folder and config file, and runs
//! the real `cephbackup` binary against the real cluster.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use cephbackup::test_support::{DiffHeader, DiffWriter};

pub const MIB: u64 = 1024 * 1024;
/// The tool's record in each image folder.
pub const IMAGE_RECORD: &str = ".cephbackup-image.json";

pub struct Cluster {
    pub conf: PathBuf,
}

/// The shared cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // A fresh folder, never one named after this process: process ids are reused, and a
        // folder left by an earlier test binary with the same id would stop this one starting.
        // A start that fails (a port taken between the check and the monitor's bind) is tried
        // again in a new folder.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-sandbox");
        let start = || {
            let dir = tempfile::Builder::new()
                .prefix("cephbackup-test-cluster-")
                .tempdir()
                .expect("a folder for the test cluster")
                .keep();
            let out = Command::new(&script)
                .arg("start")
                .arg(&dir)
                .arg(std::process::id().to_string())
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/ceph-sandbox");
            if !out.status.success() {
                // Whatever daemon did start goes with its folder.
                let _ = Command::new(&script).arg("stop").arg(&dir).status();
            }
            out
        };
        let out = (0..3)
            .map(|_| start())
            .find(|out| out.status.success())
            .expect("the test cluster did not start (three tries)");
        let conf = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Cluster { conf: conf.into() }
    })
}

/// The S3 gateway (radosgw) beside the shared cluster, started on first use by the tests that
/// need one.
pub struct Rgw {
    /// `http://127.0.0.1:PORT`, path-style requests.
    pub endpoint: String,
    /// The AWS shared-credentials file of its one user (`[default]`, mode 0600).
    pub credentials: PathBuf,
    pub access_key: String,
    pub secret_key: String,
}

pub fn rgw() -> &'static Rgw {
    static RGW: OnceLock<Rgw> = OnceLock::new();
    RGW.get_or_init(|| {
        let dir = cluster().conf.parent().unwrap().to_path_buf();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-sandbox");
        let started = std::time::Instant::now();
        let out = Command::new(&script)
            .arg("rgw")
            .arg(&dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/ceph-sandbox rgw");
        assert!(out.status.success(), "radosgw did not start");
        eprintln!("radosgw ready after {:?}", started.elapsed());
        let endpoint = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let credentials = dir.join("rgw/credentials");
        let text = fs::read_to_string(&credentials).unwrap();
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.trim_start().strip_prefix('='))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("{key} in {}", credentials.display()))
        };
        Rgw {
            endpoint,
            access_key: value("aws_access_key_id"),
            secret_key: value("aws_secret_access_key"),
            credentials,
        }
    })
}

/// Runs `rbd` against the test cluster; panics with its stderr on failure.
pub fn rbd(args: &[&str]) -> Vec<u8> {
    let out = rbd_output(args);
    assert!(
        out.status.success(),
        "rbd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn rbd_output(args: &[&str]) -> Output {
    Command::new("rbd")
        .arg("--conf")
        .arg(&cluster().conf)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rbd")
}

/// Runs `rbd` with a file on stdin.
pub fn rbd_with_stdin(args: &[&str], stdin: &Path) {
    let out = Command::new("rbd")
        .arg("--conf")
        .arg(&cluster().conf)
        .args(args)
        .stdin(fs::File::open(stdin).unwrap())
        .output()
        .expect("run rbd");
    assert!(
        out.status.success(),
        "rbd {args:?} < {} failed: {}",
        stdin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test's own pool, folders and config.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub pool: String,
    pub dest: PathBuf,
    /// The state folder of this world's "host": every run of the binary gets it as
    /// `STATE_DIRECTORY`, so no test shares `/var/lib/cephbackup` or another test's memory.
    pub state: PathBuf,
}

static POOLS: AtomicUsize = AtomicUsize::new(0);

impl World {
    pub fn new() -> World {
        let pool = format!(
            "t{}-{}",
            std::process::id(),
            POOLS.fetch_add(1, Ordering::SeqCst)
        );
        create_pool(&pool);
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("backups");
        fs::create_dir(&dest).unwrap();
        let state = tmp.path().join("state");
        World {
            tmp,
            pool,
            dest,
            state,
        }
    }

    pub fn spec(&self, image: &str) -> String {
        format!("{}/{image}", self.pool)
    }

    /// Creates an image and fills some of it with data derived from `seed`.
    pub fn create_image(&self, image: &str, size: u64, seed: u64) {
        rbd(&[
            "create",
            "--size",
            &format!("{}M", size / MIB),
            &self.spec(image),
        ]);
        self.write_data(image, seed);
    }

    /// Overwrites a few scattered extents (and zeroes one) with data derived from `seed`, by
    /// importing a diff stream made with the project's own writer.
    pub fn write_data(&self, image: &str, seed: u64) {
        let size = self.image_size(image);
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut extents: Vec<(u64, u64, bool)> = (0..12)
            .map(|_| {
                let len = 4096 * (1 + rng.next() % 64);
                let offset = (rng.next() % (size / 4096)) * 4096;
                (offset.min(size - len), len, rng.next().is_multiple_of(5))
            })
            .collect();
        extents.sort();
        let mut stream = Vec::new();
        let header = DiffHeader {
            from_snap: None,
            to_snap: None,
            size,
        };
        let mut writer = DiffWriter::new(&mut stream, &header).unwrap();
        let mut end = 0;
        for (offset, len, zero) in extents {
            if offset < end {
                continue;
            }
            if zero {
                writer.write_zero(offset, len).unwrap();
            } else {
                let data: Vec<u8> = (0..len).map(|_| rng.next().to_le_bytes()[0]).collect();
                writer.write_data(offset, &data).unwrap();
            }
            end = offset + len;
        }
        writer.finish().unwrap();
        let file = self.tmp.path().join(format!("write-{seed}.diff"));
        fs::write(&file, &stream).unwrap();
        rbd(&["import-diff", file.to_str().unwrap(), &self.spec(image)]);
    }

    pub fn image_size(&self, image: &str) -> u64 {
        let info: serde_json::Value =
            serde_json::from_slice(&rbd(&["info", "--format", "json", &self.spec(image)])).unwrap();
        info["size"].as_u64().unwrap()
    }

    /// The image's bytes (at `snap`, or now), as `rbd export` writes them.
    pub fn export(&self, image: &str, snap: Option<&str>) -> Vec<u8> {
        let spec = match snap {
            Some(s) => format!("{}@{s}", self.spec(image)),
            None => self.spec(image),
        };
        rbd(&["export", &spec, "-"])
    }

    pub fn snapshots(&self, image: &str) -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_slice(&rbd(&["snap", "ls", "--format", "json", &self.spec(image)]))
                .unwrap();
        let mut snaps: Vec<(u64, String)> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_u64().unwrap(),
                    s["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        snaps.sort();
        snaps.into_iter().map(|(_, n)| n).collect()
    }

    pub fn backup_snapshots(&self, image: &str) -> Vec<String> {
        self.snapshots(image)
            .into_iter()
            .filter(|s| s.starts_with("BACKUP"))
            .collect()
    }

    pub fn image_dir(&self, image: &str) -> PathBuf {
        self.dest.join(&self.pool).join(image)
    }

    /// File names in an image's backup folder, sorted, without the checksum files.
    pub fn files(&self, image: &str) -> Vec<String> {
        let mut names = self.all_files(image);
        names.retain(|n| !n.ends_with(".sha256"));
        names
    }

    /// Every backup file has a `.sha256` beside it (true of all files the tool wrote).
    pub fn assert_every_file_has_a_checksum(&self, image: &str) {
        let all = self.all_files(image);
        for name in all
            .iter()
            .filter(|n| n.contains("@BACKUP") && !n.ends_with(".sha256"))
        {
            let sidecar = format!("{name}.sha256");
            assert!(
                all.contains(&sidecar),
                "{name} has no checksum file: {all:?}"
            );
        }
        self.assert_checksums(image);
    }

    /// Every checksum file is accepted by `sha256sum -c` in its folder, and none is left without
    /// its backup file.
    pub fn assert_checksums(&self, image: &str) {
        let all = self.all_files(image);
        for sidecar in all.iter().filter(|n| n.ends_with(".sha256")) {
            let out = Command::new("sha256sum")
                .args(["-c", sidecar])
                .current_dir(self.image_dir(image))
                .output()
                .unwrap();
            assert!(out.status.success(), "sha256sum -c {sidecar}: {out:?}");
        }
        for sidecar in all.iter().filter(|n| n.ends_with(".sha256")) {
            let of = sidecar.strip_suffix(".sha256").unwrap();
            assert!(all.iter().any(|n| n == of), "{sidecar} without its file");
        }
    }

    /// Every name in an image's backup folder, sorted, except the tool's record of the image
    /// (which is not a backup file and stays when a run is rolled back).
    pub fn all_files(&self, image: &str) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(self.image_dir(image)) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|name| name != IMAGE_RECORD)
                .collect(),
            Err(_) => vec![],
        };
        names.sort();
        names
    }

    /// The image record the tool keeps in an image's folder, as JSON.
    pub fn image_record(&self, image: &str) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.image_dir(image).join(IMAGE_RECORD)).unwrap())
            .unwrap()
    }

    pub fn write_config(&self, body: &str) -> PathBuf {
        let path = self.tmp.path().join("cephbackup.conf");
        fs::write(&path, body).unwrap();
        path
    }

    /// A config with one section for this test's pool.
    pub fn config(&self, extra: &str) -> PathBuf {
        self.config_named("cephbackup.conf", &self.dest, extra)
    }

    /// A config file of its own (`name`, beside the world's) with one section for this test's
    /// pool backing up into `dest`.
    pub fn config_named(&self, name: &str, dest: &Path, extra: &str) -> PathBuf {
        let path = self.tmp.path().join(name);
        let body = format!(
            "[{}]\ndestination directory = {}\nceph config = {}\n{extra}\n",
            self.pool,
            dest.display(),
            cluster().conf.display()
        );
        fs::write(&path, body).unwrap();
        path
    }

    /// Runs the real binary.
    pub fn cephbackup(&self, args: &[&str]) -> Run {
        self.cephbackup_with_env(args, &[])
    }

    /// Runs the real binary with `env` added to its environment.
    pub fn cephbackup_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_cephbackup"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("CEPHBACKUP_LOG")
            .env("STATE_DIRECTORY", &self.state)
            .stdin(Stdio::null())
            .output()
            .expect("run cephbackup");
        Run::from(out)
    }

    /// Starts the real binary without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.spawn_with_env(args, &[])
    }

    /// Starts the real binary with `env` added to its environment, without waiting for it.
    pub fn spawn_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_cephbackup"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("CEPHBACKUP_LOG")
            .env("STATE_DIRECTORY", &self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cephbackup")
    }

    /// Runs the real binary, SIGKILLing it (and failing the test) if it is still running after
    /// `limit`: a hang becomes a failure, never a stuck test.
    pub fn run_within(&self, args: &[&str], limit: std::time::Duration) -> Run {
        finish_within(self.spawn(args), limit)
    }

    /// A Ceph configuration whose monitor nobody answers for.
    pub fn unreachable_cluster_conf(&self) -> PathBuf {
        let path = self.tmp.path().join("unreachable.conf");
        fs::write(
            &path,
            "[global]\nmon host = v1:127.0.0.1:9\nauth client required = none\n",
        )
        .unwrap();
        path
    }

    pub fn backup(&self, conf: &Path) -> Run {
        self.cephbackup(&["-c", conf.to_str().unwrap()])
    }

    /// `restore` of one of this world's images with the config `conf`: the command line that
    /// every restore test spells, finished by the builder's `into_file`/`into_image`, `at` and `arg`.
    pub fn restore(&self, conf: &Path, image: &str) -> RestoreCommand<'_> {
        RestoreCommand {
            world: self,
            args: [
                "-c",
                conf.to_str().unwrap(),
                "restore",
                "--pool",
                &self.pool,
                "--image",
                image,
            ]
            .map(str::to_string)
            .to_vec(),
        }
    }

    /// `verify` with the config `conf` and any further arguments.
    pub fn verify(&self, conf: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["verify"];
        args.extend_from_slice(extra);
        with_conf(self, conf, &args)
    }

    /// `list --json` with the config `conf` and any further arguments, exiting with `code`.
    #[track_caller]
    pub fn list_json(&self, conf: &Path, extra: &[&str], code: i32) -> Listing {
        let mut args = vec!["list", "--json"];
        args.extend_from_slice(extra);
        Listing(with_conf(self, conf, &args).code(code).json())
    }

    /// Every path under the destination with its mode and content: equal before and after a run
    /// means the run changed nothing on disk.
    pub fn dest_tree(&self) -> BTreeMap<String, (u32, Vec<u8>)> {
        tree_of(&self.dest)
    }
}

/// Waits for a started run, SIGKILLing it (and failing the test) if it is still running after
/// `limit`: a hang becomes a failure, never a stuck test.
pub fn finish_within(mut child: std::process::Child, limit: std::time::Duration) -> Run {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run hung; killed after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().unwrap())
}

/// A `PATH` whose `rbd` is `script` (a shell script, put in `w`'s folder `dir`), ahead of the
/// rest of the test's `PATH`.
pub fn path_with_rbd_script(w: &World, dir: &str, script: &str) -> String {
    let bin = w.tmp.path().join(dir);
    std::fs::create_dir_all(&bin).unwrap();
    let rbd = bin.join("rbd");
    std::fs::write(&rbd, script).unwrap();
    std::fs::set_permissions(&rbd, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The path of the real `rbd`, for wrappers put ahead of it on `PATH`.
pub fn real_rbd() -> String {
    let out = Command::new("sh")
        .args(["-c", "command -v rbd"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs the binary with `-c conf` and the given arguments.
pub fn with_conf(w: &World, conf: &Path, args: &[&str]) -> Run {
    let mut all = vec!["-c", conf.to_str().unwrap()];
    all.extend_from_slice(args);
    w.cephbackup(&all)
}

/// A `restore` command line being built (see [`World::restore`]).
pub struct RestoreCommand<'w> {
    world: &'w World,
    args: Vec<String>,
}

impl RestoreCommand<'_> {
    /// Into a new local file.
    pub fn into_file(self, file: &Path) -> Self {
        self.arg("--to-file").arg(file.to_str().unwrap())
    }

    /// Into a new image (`NAME` or `POOL/NAME`).
    pub fn into_image(self, target: &str) -> Self {
        self.arg("--to").arg(target)
    }

    /// The point to restore, in any spelling `--at` accepts.
    pub fn at(self, at: &str) -> Self {
        self.arg("--at").arg(at)
    }

    /// One more argument (`--json`, `--check`, …).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// The whole command line, `-c CONF` first, for [`World::spawn`] or [`World::run_within`].
    pub fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    pub fn run(self) -> Run {
        self.world.cephbackup(&self.args())
    }
}

/// The document `list --json` printed, with the views the tests ask of it.
pub struct Listing(pub serde_json::Value);

impl Listing {
    /// The listed images, in order.
    pub fn images(&self) -> &[serde_json::Value] {
        self.0["images"].as_array().expect("list --json has images")
    }

    /// The snapshot names of the restore points of the `index`th image, oldest first.
    pub fn points(&self, index: usize) -> Vec<&str> {
        self.images()[index]["restore_points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["snapshot"].as_str().unwrap())
            .collect()
    }

    /// The kinds of the findings of the `index`th image, in order.
    pub fn finding_kinds(&self, index: usize) -> Vec<&str> {
        self.images()[index]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap())
            .collect()
    }
}

/// A JSON document made stable for a snapshot: within every string each `from` of `replace`
/// becomes its `to` (paths, pool and snapshot names, in the order given), and the value of every
/// key named in `varying` (times, durations) becomes `[key]`.
pub fn normalised(
    doc: &serde_json::Value,
    replace: &[(&str, &str)],
    varying: &[&str],
) -> serde_json::Value {
    use serde_json::Value;
    match doc {
        Value::String(text) => Value::String(
            replace
                .iter()
                .fold(text.clone(), |text, (from, to)| text.replace(from, to)),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| normalised(item, replace, varying))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| {
                    let value = if varying.contains(&key.as_str()) {
                        Value::String(format!("[{key}]"))
                    } else {
                        normalised(value, replace, varying)
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every path under `root` with its mode and content (nothing when `root` does not exist).
pub fn tree_of(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut tree = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut tree);
    }
    tree
}

fn walk(root: &Path, dir: &Path, tree: &mut BTreeMap<String, (u32, Vec<u8>)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = entry.metadata().unwrap();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        if meta.is_dir() {
            tree.insert(rel, (meta.permissions().mode(), vec![]));
            walk(root, &path, tree);
        } else {
            tree.insert(rel, (meta.permissions().mode(), fs::read(&path).unwrap()));
        }
    }
}

/// Each world removes its pool when it ends (a failed test included): the throwaway cluster
/// allows only so many placement groups per OSD, and a suite that kept every pool would run out
/// of them halfway.
impl Drop for World {
    fn drop(&mut self) {
        remove_pool(&self.pool);
    }
}

/// Removes a test pool; a failure is ignored, since it only costs the cluster some room.
pub fn remove_pool(pool: &str) {
    let _ = Command::new("ceph")
        .arg("--conf")
        .arg(&cluster().conf)
        .args([
            "osd",
            "pool",
            "rm",
            pool,
            pool,
            "--yes-i-really-really-mean-it",
        ])
        .output();
}

/// The state folder a run with the config file `conf` gets: the one of the world whose folder
/// holds the file (see [`World::state`]).
pub fn state_beside(conf: &Path) -> PathBuf {
    conf.parent().unwrap().join("state")
}

pub fn create_pool(pool: &str) {
    let conf = &cluster().conf;
    let out = Command::new("ceph")
        .arg("--conf")
        .arg(conf)
        .args(["osd", "pool", "create", pool, "8", "8"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rbd(&["pool", "init", pool]);
}

/// The result of one `cephbackup` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The first `error: ` line on stderr.
    #[track_caller]
    pub fn first_error(&self) -> &str {
        self.stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line in:\n{}", self.stderr))
    }

    /// Stdout parsed as the one JSON document it must be.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Waits until the wall clock enters a new second, so the next run gets a fresh snapshot name.
pub fn next_second() {
    let into = chrono::Utc::now().timestamp_subsec_millis();
    std::thread::sleep(std::time::Duration::from_millis(
        u64::from(1000 - into) + 20,
    ));
}

/// Deterministic bytes for test data; no need for cryptographic quality.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Extracts a `.tar.gz` with GNU tar into a fresh folder and returns the folder.
pub fn untar(archive: &Path, into: &Path) -> PathBuf {
    fs::create_dir_all(into).unwrap();
    let out = Command::new("tar")
        .arg("xzf")
        .arg(archive)
        .current_dir(into)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    into.to_path_buf()
}

/// Member names of a `.tar.gz`, as GNU tar lists them.
pub fn tar_list(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Makes a FIFO at `path`: a planted entry that blocks whoever opens it for reading.
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// Writes bytes to a file (for comparing large buffers in assertion messages without dumping them).
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a == b
}

#[allow(dead_code)]
pub fn write_file(path: &Path, data: &[u8]) {
    fs::File::create(path).unwrap().write_all(data).unwrap();
}

/// Restores a chain the way an administrator with only the stock tools would: `rbd import` of the
/// full (fed on stdin, because Ceph 16 refuses a file path containing `@`), `rbd snap create` of its
/// snapshot, then `rbd import-diff` of each diff in order. Compressed files are unpacked with GNU
/// tar first. After each link the restored snapshot is compared bit for bit with the source.
pub fn restore_by_hand(world: &World, image: &str, chain: &[&str], target: &str) {
    world.assert_checksums(image);
    let unpacked = world.tmp.path().join(format!("unpacked-{target}"));
    let target_spec = world.spec(target);
    for (i, name) in chain.iter().enumerate() {
        let mut path = world.image_dir(image).join(name);
        let raw_name = name.strip_suffix(".tar.gz").unwrap_or(name);
        if raw_name != *name {
            assert_eq!(tar_list(&path), [raw_name], "member name of {name}");
            path = untar(&path, &unpacked).join(raw_name);
        }
        let snap = raw_name
            .split_once('@')
            .unwrap()
            .1
            .split('.')
            .next()
            .unwrap()
            .to_string();
        if i == 0 {
            assert!(
                raw_name.ends_with(".full"),
                "a chain starts with a full: {name}"
            );
            rbd_with_stdin(&["import", "-", &target_spec], &path);
            rbd(&["snap", "create", &format!("{target_spec}@{snap}")]);
        } else {
            rbd(&["import-diff", path.to_str().unwrap(), &target_spec]);
        }
        assert!(
            same_bytes(
                &world.export(target, Some(&snap)),
                &world.export(image, Some(&snap))
            ),
            "restored {target}@{snap} differs from {image}@{snap}"
        );
    }
}

/// Builds the history the original would have left: snapshots at the given ages (hours), the
/// first exported in full and each later one as a diff from the one before, with data changed in
/// between. Returns the snapshot names, oldest first.
pub fn history(w: &World, image: &str, ages_hours: &[i64]) -> Vec<String> {
    let dir = w.image_dir(image);
    fs::create_dir_all(&dir).unwrap();
    let mut names: Vec<String> = Vec::new();
    for (i, age) in ages_hours.iter().enumerate() {
        let snap = (chrono::Utc::now() - chrono::Duration::hours(*age))
            .format("BACKUPUTC%Y%m%dT%H%M%S")
            .to_string();
        w.write_data(image, 100 + i as u64);
        let spec = format!("{}@{snap}", w.spec(image));
        rbd(&["snap", "create", &spec]);
        match names.last() {
            None => {
                let file = dir.join(format!("{image}@{snap}.full"));
                rbd(&["export", &spec, file.to_str().unwrap()]);
            }
            Some(base) => {
                let file = dir.join(format!("{image}@{snap}.diff_from_{base}"));
                rbd(&[
                    "export-diff",
                    "--from-snap",
                    base,
                    &spec,
                    file.to_str().unwrap(),
                ]);
            }
        }
        names.push(snap);
    }
    w.write_data(image, 999);
    names
}

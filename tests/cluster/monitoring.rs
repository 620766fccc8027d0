//! Monitoring: the metrics file after real runs (one image failing), `status` and its exit
//! statuses, `list` showing the configured image never backed up, and every JSON document checked
//! against its schema in `schema/`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::*;

const MIB: u64 = 1 << 20;

/// The samples of a metrics file: metric name and sorted labels to value.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// Panics naming every place where `value` does not match `schema/<kind>.schema.json`.
#[track_caller]
pub fn assert_schema(kind: &str, value: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(format!("{kind}.schema.json"));
    let schema: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{kind}: {errors:#?}\n{value:#}");
}

/// The samples of a metrics file, parsed by a Prometheus text-format parser: name and labels to
/// value; also checks that every family has its HELP text.
fn metrics(path: &Path) -> Samples {
    let text = fs::read_to_string(path).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut samples = HashMap::new();
    for sample in scrape.samples {
        assert!(
            scrape.docs.contains_key(&sample.metric),
            "{} has no HELP",
            sample.metric
        );
        let prometheus_parse::Value::Gauge(value) = sample.value else {
            panic!("{} is not a gauge: {:?}", sample.metric, sample.value);
        };
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let key = (sample.metric.clone(), labels);
        assert!(
            samples.insert(key, value).is_none(),
            "{} twice",
            sample.metric
        );
    }
    samples
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    samples.get(&(name.to_string(), labels)).copied()
}

fn taken(snapshot: &str) -> f64 {
    let stamp = snapshot.strip_prefix("BACKUPUTC").unwrap();
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S")
        .unwrap()
        .and_utc()
        .timestamp() as f64
}

fn config(w: &World, metrics: &Path) -> PathBuf {
    w.config(&format!(
        "images = vm, missing\nbackup mode = incremental\n\n[DEFAULT]\nmetrics file = {}\n",
        metrics.display()
    ))
}

/// The metrics file with what changes from run to run made stable: the pool's name and the
/// values of the timestamp and duration gauges (proven against the clock by the test itself).
fn stable_metrics(path: &Path, pool: &str) -> String {
    fs::read_to_string(path)
        .unwrap()
        .replace(pool, "[POOL]")
        .lines()
        .map(|line| match line.rsplit_once(' ') {
            Some((sample, _))
                if !line.starts_with('#')
                    && (sample.contains("_timestamp_seconds")
                        || sample.contains("_duration_seconds")) =>
            {
                format!("{sample} [varies]")
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `status`'s text with what differs from run to run named instead: the destination, the pool,
/// the newest point's snapshot name (`snap`) and its time, which must be the snapshot's own
/// stamp, and each image's age, which grows with the time the test took.
fn stable_status(w: &World, snap: Option<&str>, text: &str) -> String {
    let mut text = text.replace(&w.dest.display().to_string(), "[DEST]");
    if let Some(snap) = snap {
        let stamp = snap.strip_prefix("BACKUPUTC").unwrap();
        let taken = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S").unwrap();
        let shown = format!("{snap} ({} UTC)", taken.format("%Y-%m-%d %H:%M:%S"));
        assert!(text.contains(&shown), "{text}");
        text = text.replace(&shown, "[SNAPSHOT] ([TAKEN])");
    }
    text.replace(&w.pool, "[POOL]")
        .lines()
        .map(|line| match (line.find("), "), line.find(" old")) {
            (Some(from), Some(to)) if from < to => {
                format!("{}), [AGE]{}", &line[..from], &line[to..])
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One world with a backed-up image `vm` and a configured image `missing` that the cluster does
/// not have, its metrics written into a folder of their own.
struct Monitored {
    w: World,
    conf: PathBuf,
    metrics_dir: PathBuf,
    prom: PathBuf,
}

impl Monitored {
    fn vm(&self) -> [(&str, &str); 2] {
        [("pool", self.w.pool.as_str()), ("image", "vm")]
    }

    fn missing(&self) -> [(&str, &str); 2] {
        [("pool", self.w.pool.as_str()), ("image", "missing")]
    }
}

#[test]
fn metrics_status_and_list_follow_real_runs_with_a_failed_image() {
    let w = World::new();
    w.create_image("vm", 8 * MIB, 3);
    let metrics_dir = w.tmp.path().join("textfile");
    fs::create_dir(&metrics_dir).unwrap();
    let prom = metrics_dir.join("cephbackup.prom");
    let conf = config(&w, &prom);
    let m = Monitored {
        w,
        conf,
        metrics_dir,
        prom,
    };
    nothing_backed_up_is_two_gaps(&m);

    // First run: vm backed up, `missing` does not exist in the cluster.
    let started = chrono::Utc::now().timestamp() as f64;
    let run = m.w.backup(&m.conf).code(1);
    let ended = chrono::Utc::now().timestamp() as f64 + 1.0;
    assert!(run.stderr.contains("missing"), "{}", run.stderr);
    let snaps = m.w.backup_snapshots("vm");
    assert_eq!(snaps.len(), 1);
    let (success, run_at) = first_run_metrics(&m, &snaps[0], started, ended);
    status_and_list_after_the_first_run(&m, &snaps[0]);
    a_failed_run_keeps_the_last_success(&m, &snaps[0], success, run_at);
    ages_unknown_and_usage_errors(&m);
    override_and_documents(&m);
}

/// Nothing backed up yet: both configured images are gaps.
fn nothing_backed_up_is_two_gaps(m: &Monitored) {
    let (w, conf, pool) = (&m.w, &m.conf, m.w.pool.as_str());
    let run = with_conf(w, conf, &["status", "--max-age", "26h"]).code(2);
    insta::assert_snapshot!(
        "status_with_nothing_backed_up",
        stable_status(w, None, &run.stdout)
    );
    let run = with_conf(w, conf, &["list"]).code(1);
    assert!(
        run.stdout.contains(&format!(
            "{pool}/missing: never backed up: configured in [{pool}], but there is no folder"
        )),
        "{}",
        run.stdout
    );
}

/// The metrics file after the first run (`snap` taken between `started` and `ended`): the whole
/// file as a snapshot, and each value that follows from the folder or the clock proven against
/// it. Returns vm's last success and the run's time.
fn first_run_metrics(m: &Monitored, snap: &str, started: f64, ended: f64) -> (f64, f64) {
    let (w, vm, missing) = (&m.w, m.vm(), m.missing());
    insta::assert_snapshot!(stable_metrics(&m.prom, &w.pool));
    let first = metrics(&m.prom);
    assert_eq!(value(&first, "cephbackup_run_success", &[]), Some(0.0));
    assert_eq!(
        value(
            &first,
            "cephbackup_image_last_run_status",
            &[
                ("pool", w.pool.as_str()),
                ("image", "missing"),
                ("status", "failed")
            ]
        ),
        Some(1.0)
    );
    // Incremental mode keeps the run's snapshot in the cluster: the base of the next diff.
    assert_eq!(
        value(&first, "cephbackup_image_snapshots_kept", &vm),
        Some(w.backup_snapshots("vm").len() as f64)
    );
    assert_eq!(w.backup_snapshots("vm").len(), 1);
    let files = w.files("vm");
    let backup_files = files.iter().filter(|f| !f.ends_with(".sha256")).count();
    assert_eq!(
        value(&first, "cephbackup_image_files", &vm),
        Some(backup_files as f64)
    );
    let stored: u64 = files
        .iter()
        .filter(|f| !f.ends_with(".sha256"))
        .map(|f| fs::metadata(w.image_dir("vm").join(f)).unwrap().len())
        .sum();
    assert_eq!(
        value(&first, "cephbackup_image_stored_bytes", &vm),
        Some(stored as f64)
    );
    let written = value(&first, "cephbackup_image_last_run_written_bytes", &vm).unwrap();
    assert!(written >= stored as f64, "{written} < {stored}");
    assert_eq!(
        value(&first, "cephbackup_run_written_bytes", &[]),
        Some(written)
    );
    assert_eq!(
        value(
            &first,
            "cephbackup_image_newest_point_timestamp_seconds",
            &vm
        ),
        Some(taken(snap))
    );
    assert_eq!(
        value(
            &first,
            "cephbackup_image_last_success_timestamp_seconds",
            &missing
        ),
        None,
        "never backed up: no last success"
    );
    let success = value(
        &first,
        "cephbackup_image_last_success_timestamp_seconds",
        &vm,
    )
    .unwrap();
    assert!(
        started <= success && success <= ended,
        "{started} {success} {ended}"
    );
    let run_at = value(&first, "cephbackup_run_timestamp_seconds", &[]).unwrap();
    assert!(
        started <= run_at && run_at <= ended,
        "{started} {run_at} {ended}"
    );
    let duration = value(&first, "cephbackup_run_duration_seconds", &[]).unwrap();
    assert!(duration > 0.0 && duration <= ended - started, "{duration}");
    let mode = fs::metadata(&m.prom).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o644
    );
    assert_eq!(
        fs::read_dir(&m.metrics_dir).unwrap().count(),
        1,
        "no temporary file left"
    );
    (success, run_at)
}

/// `status` and `list` after the first run: vm fresh (its point `snap`), missing still a gap.
fn status_and_list_after_the_first_run(m: &Monitored, snap: &str) {
    let (w, conf, pool) = (&m.w, &m.conf, m.w.pool.as_str());
    let run = with_conf(w, conf, &["status", "--max-age", "26h"]).code(2);
    insta::assert_snapshot!(
        "status_after_the_first_run",
        stable_status(w, Some(snap), &run.stdout)
    );
    with_conf(w, conf, &["status", "--image", "vm", "--max-age", "26h"]).code(0);
    let status = with_conf(w, conf, &["status", "--json", "--max-age", "26h"])
        .code(2)
        .json();
    assert_schema("status", &status);
    assert_eq!(status["status"], "critical");
    assert_eq!(status["images"][0]["newest"]["snapshot"], snap);
    assert_eq!(status["images"][1]["reason"], "no_backup");
    let list = with_conf(w, conf, &["list"]).code(1);
    assert!(
        list.stdout
            .contains(&format!("  newest restore point: {snap}, ")),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout
            .contains(&format!("{pool}/missing: never backed up")),
        "{}",
        list.stdout
    );
    let listed = w.list_json(conf, &[], 1);
    assert_schema("list", &listed.0);
    let images = listed.images();
    assert_eq!(images.len(), 2);
    assert_eq!(images[1]["image"], "missing");
    assert_eq!(images[1]["backed_up"], false);
    assert_eq!(images[0]["restore_points"][0]["snapshot"], snap);
    assert!(images[0]["restore_points"][0]["expiry"]["removal"].is_string());
}

/// Second run: vm now fails too (gone from the cluster); its last success (`success`) stays put,
/// and the run's time moves past the first run's `run_at`.
fn a_failed_run_keeps_the_last_success(m: &Monitored, snap: &str, success: f64, run_at: f64) {
    let (w, vm) = (&m.w, m.vm());
    next_second();
    rbd(&["rename", &w.spec("vm"), &w.spec("vm-away")]);
    w.backup(&m.conf).code(1);
    let second = metrics(&m.prom);
    assert_eq!(
        value(&second, "cephbackup_image_last_run_success", &vm),
        Some(0.0)
    );
    assert_eq!(
        value(
            &second,
            "cephbackup_image_last_success_timestamp_seconds",
            &vm
        ),
        Some(success),
        "a failed run must not move the last success"
    );
    assert_eq!(
        value(
            &second,
            "cephbackup_image_newest_point_timestamp_seconds",
            &vm
        ),
        Some(taken(snap))
    );
    assert_eq!(
        value(&second, "cephbackup_image_restore_points", &vm),
        Some(1.0)
    );
    assert!(value(&second, "cephbackup_run_timestamp_seconds", &[]).unwrap() > run_at);
    rbd(&["rename", &w.spec("vm-away"), &w.spec("vm")]);
}

/// Ages: the newest point is at least a second old now. An unreadable destination is UNKNOWN; an
/// invalid age a usage error.
fn ages_unknown_and_usage_errors(m: &Monitored) {
    let (w, conf) = (&m.w, &m.conf);
    next_second();
    next_second();
    with_conf(w, conf, &["status", "--image", "vm", "--max-age", "1s"]).code(2);
    let run = with_conf(
        w,
        conf,
        &[
            "status",
            "--image",
            "vm",
            "--warn-age",
            "1s",
            "--max-age",
            "1d",
        ],
    )
    .code(1);
    assert!(
        run.stdout
            .starts_with("WARNING: 1 image(s): 1 older than --warn-age 1s"),
        "{}",
        run.stdout
    );
    let gone = config_with_dest(w, &w.tmp.path().join("not-mounted"));
    let run = with_conf(w, &gone, &["status", "--max-age", "1d"]).code(3);
    assert!(run.stdout.starts_with("UNKNOWN: "), "{}", run.stdout);
    with_conf(w, conf, &["status", "--max-age", "soon"]).code(2);
}

/// --metrics-file overrides the config; verify and restore documents match their schemas.
fn override_and_documents(m: &Monitored) {
    let (w, conf, vm) = (&m.w, &m.conf, m.vm());
    let other = m.metrics_dir.join("other.prom");
    next_second();
    w.cephbackup(&[
        "-c",
        conf.to_str().unwrap(),
        "--metrics-file",
        other.to_str().unwrap(),
    ])
    .code(1);
    let samples = metrics(&other);
    assert_eq!(
        value(&samples, "cephbackup_image_last_run_success", &vm),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "cephbackup_image_restore_points", &vm),
        Some(2.0)
    );
    let verified = w.verify(conf, &["--json"]).code(0).json();
    assert_schema("verify", &verified);
    assert_eq!(verified["kind"], "verify");
    let target = w.tmp.path().join("vm.raw");
    let run = w
        .restore(conf, "vm")
        .into_file(&target)
        .arg("--json")
        .run()
        .success();
    let restored = run.json();
    assert_schema("restore", &restored);
    let newest = w.backup_snapshots("vm").last().unwrap().clone();
    assert_eq!(restored["snapshot"], newest.as_str());
    assert_eq!(restored["target"]["path"], target.to_str().unwrap());
    assert!(same_bytes(
        &fs::read(&target).unwrap(),
        &w.export("vm", Some(&newest))
    ));
    assert!(
        run.stderr.contains("Restoring "),
        "the steps go to stderr: {}",
        run.stderr
    );
}

fn config_with_dest(w: &World, dest: &Path) -> PathBuf {
    let path = w.tmp.path().join("gone.conf");
    fs::write(
        &path,
        format!(
            "[{}]\nimages = vm\nbackup mode = full\ndestination directory = {}\nceph config = {}\n",
            w.pool,
            dest.display(),
            cluster().conf.display()
        ),
    )
    .unwrap();
    path
}

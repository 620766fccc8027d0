//! The executor against an in-memory cluster ([`crate::cluster::fake`]): images are byte
//! vectors, snapshots have ids, and any operation on any image can be made to fail the way `rbd`
//! fails (by exit status). The destination is a real temporary folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::folder::door::LocalFolder;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::{run, RunOptions, RunOutcome};
use crate::cluster::fake::{Call, Fail, Fake};
use crate::cluster::rbd::ClusterOps;
use crate::config::{self, Config, PoolJob};
use crate::folder::naming::{SnapName, TEMP_PREFIX};
use crate::folder::record::{self, ImageRecord};
use crate::output::capture;
use crate::report::{Action, RunReport};
use crate::state::{Access, HostState};

/// A temporary destination, a fake cluster and a clock that only moves when told.
struct World {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    locks: PathBuf,
    state: PathBuf,
    fake: Fake,
    now: Mutex<DateTime<Utc>>,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let locks = tmp.path().join("locks");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&locks).unwrap();
        World {
            dest,
            locks,
            state: tmp.path().join("state"),
            _tmp: tmp,
            fake: Fake::default(),
            now: Mutex::new(Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap()),
        }
    }

    /// An image of `len` bytes of a pattern that depends on `seed`.
    fn image(&self, pool: &str, image: &str, len: usize, seed: u8) {
        let data = (0..len)
            .map(|i| {
                u8::try_from(i % 256)
                    .unwrap()
                    .wrapping_mul(31)
                    .wrapping_add(seed)
            })
            .collect();
        self.fake.add_image(pool, image, data);
    }

    fn hours_later(&self, hours: i64) {
        let mut now = self.now.lock().unwrap();
        *now += chrono::Duration::hours(hours);
    }

    /// One section per `(pool, settings)`, all on the same cluster configuration.
    fn config(&self, sections: &[(&str, &str)]) -> Config {
        self.config_with("", sections)
    }

    /// Like [`World::config`], with a `[DEFAULT]` section holding `defaults`.
    fn config_with(&self, defaults: &str, sections: &[(&str, &str)]) -> Config {
        let defaults = format!("[DEFAULT]\n{defaults}\n");
        let text: String = std::iter::once(defaults)
            .chain(sections.iter().map(|(pool, settings)| {
                format!(
                    "[{pool}]\ndestination directory = {}\nceph config = /etc/ceph/fake.conf\n\
                     {settings}\n",
                    self.dest.display()
                )
            }))
            .collect();
        config::parse_str(&text, Path::new("test.conf")).unwrap()
    }

    /// Runs the executor; returns its outcome and what it printed.
    fn run(&self, config: &Config, check: bool) -> (RunOutcome, String) {
        let fake = self.fake.clone();
        let make = move |_: &PoolJob| -> Box<dyn ClusterOps> { Box::new(fake.clone()) };
        let now = || *self.now.lock().unwrap();
        let options = RunOptions {
            force_check: check,
            now: &now,
            wait: Duration::ZERO,
            lock_dir: self.locks.clone(),
            state_dir: self.state.clone(),
            cluster: Some(&make),
            coordination: None,
            lease_wait: Duration::ZERO,
        };
        capture::stdout(|| run(config, &options))
    }

    /// Runs and expects success.
    fn backup(&self, config: &Config) -> String {
        let (outcome, stdout) = self.run(config, false);
        assert!(outcome.succeeded(), "{outcome:?}\n{stdout}");
        stdout
    }

    fn image_dir(&self, pool: &str, image: &str) -> PathBuf {
        self.dest.join(pool).join(image)
    }

    /// The names in an image's folder, sorted.
    fn files(&self, pool: &str, image: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.image_dir(pool, image))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn record(&self, pool: &str, image: &str) -> ImageRecord {
        let state = HostState::open(&self.state, Access::ReadOnly).unwrap();
        record::read_image_record(
            &LocalFolder::at(&self.image_dir(pool, image)),
            pool,
            image,
            state.key(),
        )
        .unwrap()
    }

    /// Every file under the destination with its bytes.
    fn tree(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    out.insert(path.clone(), Vec::new());
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.dest, &mut out);
        out
    }
}

fn temp_files(names: &[String]) -> Vec<&String> {
    names
        .iter()
        .filter(|n| n.starts_with(TEMP_PREFIX))
        .collect()
}

/// The lines of stdout that announce steps (what a check run promises a real run will do).
fn step_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| !l.starts_with("Check mode: ") && !l.starts_with("Running in check mode"))
        .collect()
}

#[test]
fn a_failed_export_rolls_back_the_snapshot_it_created_and_its_pending_record() {
    for compress in ["no", "yes"] {
        let w = World::new();
        w.image("rbd", "a", 100_000, 1);
        let conf = w.config(&[(
            "rbd",
            &format!("images = a\nbackup mode = incremental\ncompress = {compress}"),
        )]);
        w.backup(&conf);
        let first = w.fake.snapshots("rbd", "a");
        let files = w.files("rbd", "a");
        assert_eq!(first.len(), 1);

        w.hours_later(1);
        w.fake.write("rbd", "a", 10, b"changed");
        w.fake.fail(Call::Export, "rbd/a", Fail::HalfWay);
        let (outcome, _) = w.run(&conf, false);
        assert_eq!(outcome.images_done, 0);
        assert_eq!(outcome.failures.len(), 1, "{outcome:?}");
        assert_eq!(outcome.failures[0].0, "rbd/a");
        assert!(
            outcome.failures[0].1.contains("injected HalfWay"),
            "{outcome:?}"
        );
        let changes = w.fake.changes();
        let created = changes.iter().rev().find(|c| c.starts_with("snap create"));
        let created = created.unwrap().strip_prefix("snap create ").unwrap();
        assert_eq!(
            changes.last().unwrap(),
            &format!("snap rm {created}"),
            "the new snapshot was removed again"
        );
        assert_eq!(w.fake.snapshots("rbd", "a"), first, "compress = {compress}");
        assert_eq!(w.record("rbd", "a").pending, [], "compress = {compress}");
        assert_eq!(w.files("rbd", "a"), files, "nothing new, nothing partial");
        assert_eq!(temp_files(&w.files("rbd", "a")), Vec::<&String>::new());

        // The chain carries on from the first snapshot.
        w.fake.heal();
        w.hours_later(1);
        w.backup(&conf);
        assert_eq!(w.fake.snapshots("rbd", "a").len(), 2);
    }
}

#[test]
fn check_mode_changes_nothing_and_shows_the_steps_a_real_run_takes() {
    let w = World::new();
    w.image("rbd", "a", 50_000, 2);
    w.image("rbd", "b", 30_000, 3);
    w.image("other", "x", 20_000, 4);
    // A window of 0 makes every incremental run a slide: a new full, old files and snapshots
    // removed; full mode creates and removes a temporary snapshot.
    let conf = w.config(&[
        (
            "rbd",
            "images = *\nbackup mode = incremental\nwindow size = 0\ncompress = yes",
        ),
        ("other", "images = x\nbackup mode = full"),
    ]);
    w.backup(&conf);
    w.hours_later(2);
    w.fake.write("rbd", "a", 0, b"new data");

    let tree = w.tree();
    let calls = w.fake.calls().len();
    let snapshots = [w.fake.snapshots("rbd", "a"), w.fake.snapshots("rbd", "b")];
    let (checked, shown) = w.run(&conf, true);
    assert!(checked.succeeded() && checked.checked_only, "{checked:?}");
    assert!(
        checked
            .summary()
            .starts_with("Summary: 3 image(s) would be backed up, 0 failed, "),
        "{}",
        checked.summary()
    );
    assert_eq!(checked.bytes_written, 0);
    assert_eq!(w.tree(), tree, "the destination is byte-identical");
    assert_eq!(
        w.fake.calls()[calls..]
            .iter()
            .filter(|c| !c.starts_with("ls ")
                && !c.starts_with("snap ls ")
                && !c.starts_with("info "))
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "check mode only reads"
    );
    assert_eq!(
        [w.fake.snapshots("rbd", "a"), w.fake.snapshots("rbd", "b")],
        snapshots
    );

    let changes = w.fake.changes().len();
    let (done, printed) = w.run(&conf, false);
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(step_lines(&shown), step_lines(&printed));
    // The steps shown are really there: creations, removals, exports.
    let steps = step_lines(&printed);
    for needle in [
        "# snap create rbd/a@",
        "# snap rm rbd/a@",
        "# export rbd/b@",
        "# snap create other/x@",
        "# snap rm other/x@",
        "Removing file ",
        "Deleting snapshot rbd/b@",
        "Exporting image x@",
    ] {
        assert!(
            steps.iter().any(|l| l.starts_with(needle)),
            "{needle:?} in {steps:#?}"
        );
    }
    assert!(
        w.fake.changes().len() > changes,
        "the real run changed things"
    );
    assert_ne!(w.tree(), tree);
}

#[test]
fn at_its_snapshot_limit_an_image_makes_room_first_and_check_mode_shows_the_same_steps() {
    let w = World::new();
    w.image("rbd", "a", 40_000, 5);
    // A window of 0: every run's new full replaces everything, and its old snapshot goes.
    let conf = w.config(&[(
        "rbd",
        "images = a\nbackup mode = incremental\nwindow size = 0",
    )]);
    w.backup(&conf);
    w.fake.limit("rbd", "a", 1);
    w.hours_later(2);
    let old = w.fake.snapshots("rbd", "a");
    let (checked, shown) = w.run(&conf, true);
    assert!(checked.succeeded(), "{checked:?}\n{shown}");
    let steps = step_lines(&shown);
    let create = steps
        .iter()
        .position(|l| l.starts_with("# snap create"))
        .unwrap();
    let removal = steps
        .iter()
        .position(|l| l.starts_with(&format!("# snap rm rbd/a@{}", old[0])))
        .unwrap();
    assert!(removal < create, "{shown}");
    assert_eq!(w.fake.snapshots("rbd", "a"), old);

    let calls = w.fake.calls().len();
    let (done, printed) = w.run(&conf, false);
    assert!(done.succeeded(), "{done:?}\n{printed}");
    // The refused snapshot first, then exactly what check mode showed.
    let mut steps = step_lines(&printed);
    let refused = steps
        .iter()
        .position(|l| l.starts_with("# snap create"))
        .unwrap();
    assert!(
        steps[..refused].iter().all(|l| !l.starts_with('#')),
        "{printed}"
    );
    steps.remove(refused);
    assert_eq!(step_lines(&shown), steps);
    let new = w.fake.snapshots("rbd", "a");
    assert_eq!(new.len(), 1);
    assert_ne!(new, old);
    assert_eq!(
        w.fake.calls()[calls..]
            .iter()
            .filter(|c| *c == "info rbd/a")
            .count(),
        1,
        "the limit is asked once, after the refusal"
    );

    // Nothing the window lets go: the image fails before anything changes, in both modes.
    let conf = w.config(&[("rbd", "images = a\nbackup mode = incremental")]);
    w.hours_later(2);
    for check in [true, false] {
        let tree = w.tree();
        let (failed, _) = w.run(&conf, check);
        assert_eq!(failed.failures.len(), 1, "{failed:?}");
        let error = &failed.failures[0].1;
        assert!(
            error.contains("has 1 snapshots and its snapshot limit is 1")
                && error.contains("--limit 2"),
            "{error}"
        );
        assert_eq!(w.fake.snapshots("rbd", "a"), new);
        if check {
            assert_eq!(w.tree(), tree);
        }
    }
}

#[test]
fn one_failing_image_does_not_stop_the_others_and_is_counted() {
    let w = World::new();
    for (image, seed) in [("a", 5), ("b", 6), ("c", 7)] {
        w.image("rbd", image, 10_000, seed);
    }
    let conf = w.config(&[("rbd", "images = a, b, c\nbackup mode = incremental")]);
    w.backup(&conf);
    w.hours_later(1);
    w.fake.fail(Call::ListSnapshots, "rbd/b", Fail::NotFound);
    let (outcome, _) = w.run(&conf, false);
    assert_eq!(outcome.images_done, 2, "{outcome:?}");
    assert_eq!(outcome.failures.len(), 1);
    let (label, error) = &outcome.failures[0];
    assert_eq!(label, "rbd/b");
    assert!(error.starts_with("cannot list snapshots: "), "{error}");
    assert!(outcome.summary().contains("2 image(s) backed up, 1 failed"));
    assert!(outcome.summary().ends_with("\nFailed: rbd/b"));
    for image in ["a", "c"] {
        assert_eq!(w.fake.snapshots("rbd", image).len(), 2, "{image}");
    }
    assert_eq!(w.fake.snapshots("rbd", "b").len(), 1);
}

#[test]
fn a_timed_out_cluster_fails_the_rest_of_every_section_on_it_without_asking_again() {
    let w = World::new();
    for image in ["a", "b", "c"] {
        w.image("rbd", image, 10_000, 8);
    }
    w.image("other", "x", 10_000, 9);
    let conf = w.config(&[
        ("rbd", "images = a, b, c\nbackup mode = incremental"),
        ("other", "images = x\nbackup mode = incremental"),
    ]);
    w.backup(&conf);
    w.hours_later(1);
    w.fake.fail(Call::CreateSnapshot, "rbd/a", Fail::TimedOut);
    let (outcome, _) = w.run(&conf, false);
    let calls = w.fake.calls();
    assert!(
        calls.last().unwrap().starts_with("snap create rbd/a@"),
        "nothing was asked after the timeout: {calls:#?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("snap create"))
            .count(),
        4 + 1,
        "four images backed up by the first run, one attempt in the second"
    );
    assert_eq!(outcome.images_done, 0);
    let labels: Vec<&str> = outcome.failures.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["rbd/a", "rbd/b", "rbd/c", "other"]);
    assert!(
        outcome.failures[0].1.contains("did not answer within"),
        "{outcome:?}"
    );
    for (_, why) in &outcome.failures[1..] {
        assert_eq!(
            why,
            "not attempted: the cluster of /etc/ceph/fake.conf did not answer earlier in this run"
        );
    }
}

#[test]
fn a_cluster_that_stops_answering_during_an_export_costs_no_further_call() {
    let w = World::new();
    w.image("rbd", "a", 10_000, 4);
    w.image("rbd", "b", 10_000, 5);
    let conf = w.config(&[("rbd", "images = a, b\nbackup mode = incremental")]);
    w.backup(&conf);
    let first = w.fake.snapshots("rbd", "a");
    w.hours_later(1);
    w.fake.fail(Call::Export, "rbd/a", Fail::TimedOut);
    let (outcome, _) = w.run(&conf, false);
    let calls = w.fake.calls();
    // Removing the new snapshot would only wait for another timeout: it is left, named in the
    // image record, and the other image is not attempted.
    assert!(
        calls.last().unwrap().starts_with("export-diff"),
        "nothing was asked after the timeout: {calls:#?}"
    );
    assert_eq!(outcome.failures.len(), 2);
    assert!(
        outcome.failures[0].1.starts_with("cannot export a@BACKUP"),
        "{outcome:?}"
    );
    let left = w.fake.snapshots("rbd", "a");
    assert_eq!(left.len(), first.len() + 1);
    let pending: Vec<String> = w
        .record("rbd", "a")
        .pending
        .into_iter()
        .map(|p| p.snapshot)
        .collect();
    assert_eq!(pending, left[first.len()..]);
    // Once it answers again, the next run removes it and backs the image up.
    w.fake.heal();
    w.hours_later(1);
    let (outcome, _) = w.run(&conf, false);
    assert!(outcome.succeeded(), "{outcome:?}");
    assert!(!w.fake.snapshots("rbd", "a").contains(left.last().unwrap()));
}

#[test]
fn a_busy_snapshot_that_cannot_be_removed_is_a_warning_not_a_failure() {
    let w = World::new();
    w.image("rbd", "a", 10_000, 10);
    let conf = w.config(&[(
        "rbd",
        "images = a\nbackup mode = incremental\nwindow size = 0",
    )]);
    w.backup(&conf);
    let old = w.fake.snapshots("rbd", "a");
    w.hours_later(1);
    w.fake.fail(Call::RemoveSnapshot, "rbd/a", Fail::Busy);
    let (outcome, stdout) = w.run(&conf, false);
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.images_done, 1);
    assert_eq!(outcome.warnings, 1);
    assert!(
        stdout.contains(&format!("# snap rm rbd/a@{}", old[0])),
        "{stdout}"
    );
    let now = w.fake.snapshots("rbd", "a");
    assert_eq!(now.len(), 2);
    assert_eq!(now[0], old[0], "the busy snapshot is still there");
    assert_eq!(w.record("rbd", "a").pending, []);
}

#[test]
fn a_snapshot_made_by_an_rbd_that_then_failed_is_found_and_rolled_back() {
    let w = World::new();
    w.image("rbd", "a", 10_000, 12);
    let conf = w.config(&[("rbd", "images = a\nbackup mode = incremental")]);
    w.backup(&conf);
    let first = w.fake.snapshots("rbd", "a");
    w.hours_later(1);
    // `rbd snap create` stopped (by a signal, say) after the cluster made the snapshot.
    w.fake
        .fail(Call::CreateSnapshot, "rbd/a", Fail::AfterEffect);
    let (outcome, _) = w.run(&conf, false);
    assert_eq!(outcome.failures.len(), 1, "{outcome:?}");
    let calls = w.fake.calls();
    let created = calls
        .iter()
        .rposition(|c| c.starts_with("snap create rbd/a@"))
        .unwrap();
    let asked = &calls[created + 1];
    assert_eq!(asked, "snap ls rbd/a", "the cluster is asked: {calls:#?}");
    assert!(
        calls[created + 2].starts_with("snap rm rbd/a@"),
        "and the snapshot it made is removed: {calls:#?}"
    );
    assert_eq!(w.fake.snapshots("rbd", "a"), first);
    assert_eq!(w.record("rbd", "a").pending, []);
}

#[test]
fn a_pending_record_left_by_a_killed_run_makes_the_next_run_remove_exactly_that_snapshot() {
    let w = World::new();
    w.image("rbd", "a", 40_000, 11);
    let conf = w.config(&[("rbd", "images = a\nbackup mode = incremental")]);
    w.backup(&conf);
    let first = w.fake.snapshots("rbd", "a");

    w.hours_later(1);
    w.fake.write("rbd", "a", 100, b"more");
    w.fake.fail(Call::Export, "rbd/a", Fail::Die);
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run(&conf, false)));
    assert!(killed.is_err(), "the run died");
    let left = w.fake.snapshots("rbd", "a");
    assert_eq!(left.len(), 2, "the dead run's snapshot is still there");
    let orphan = &left[1];
    let pending: Vec<String> = w
        .record("rbd", "a")
        .pending
        .into_iter()
        .map(|p| p.snapshot)
        .collect();
    assert_eq!(pending, std::slice::from_ref(orphan));

    w.fake.heal();
    w.hours_later(1);
    let changes = w.fake.changes().len();
    w.backup(&conf);
    let removed: Vec<String> = w.fake.changes()[changes..]
        .iter()
        .filter_map(|c| c.strip_prefix("snap rm ").map(String::from))
        .collect();
    assert_eq!(removed, [format!("rbd/a@{orphan}")]);
    let now = w.fake.snapshots("rbd", "a");
    assert_eq!(now.len(), 2);
    assert_eq!(now[0], first[0]);
    assert_ne!(&now[1], orphan);
    assert_eq!(w.record("rbd", "a").pending, []);
    let files = w.files("rbd", "a");
    assert!(
        files.contains(&format!("a@{}.diff_from_{}", now[1], first[0])),
        "the chain continues from the last good point: {files:?}"
    );
    assert!(
        !files.iter().any(|f| f.contains(orphan.as_str())),
        "{files:?}"
    );
}

#[test]
fn a_final_name_taken_by_a_stranger_fails_the_image_and_leaves_no_checksum_beside_it() {
    let w = World::new();
    w.image("rbd", "a", 10_000, 9);
    let conf = w.config(&[("rbd", "images = a\nbackup mode = incremental")]);
    w.backup(&conf);
    w.hours_later(1);
    // Something else already wrote a file under the name this run's diff would take.
    let first = w.fake.snapshots("rbd", "a")[0].clone();
    let next = SnapName::at(*w.now.lock().unwrap());
    let taken = format!("a@{next}.diff_from_{first}");
    fs::write(w.image_dir("rbd", "a").join(&taken), b"a stranger's bytes").unwrap();
    let (outcome, _) = w.run(&conf, false);
    assert_eq!(outcome.failures.len(), 1, "{outcome:?}");
    let (_, error) = &outcome.failures[0];
    assert!(
        error.contains(&format!("{taken} exists already (a regular file)")),
        "{error}"
    );
    let files = w.files("rbd", "a");
    assert!(!files.contains(&format!("{taken}.sha256")), "{files:?}");
    assert_eq!(
        fs::read(w.image_dir("rbd", "a").join(&taken)).unwrap(),
        b"a stranger's bytes",
        "the stranger's file is left alone"
    );
    assert_eq!(
        w.fake.snapshots("rbd", "a"),
        [first],
        "this run's snapshot was rolled back"
    );
    assert!(w.record("rbd", "a").pending.is_empty());
}

/// `text` with the world's destination folder written as `DEST`.
fn anonymous(w: &World, text: &str) -> String {
    text.replace(&w.dest.display().to_string(), "DEST")
}

/// The same eight images (one of them, `rbd/gone`, missing from the cluster) in two pools, in
/// two worlds; the first runs one image at a time, the second four at once.
fn twin_worlds() -> [(World, Config); 2] {
    ["", "parallel images = 4"].map(|defaults| {
        let w = World::new();
        for (index, image) in ["a", "b", "c", "d"].into_iter().enumerate() {
            w.image("rbd", image, 20_000, u8::try_from(index).unwrap());
        }
        for (index, image) in ["x", "y", "z"].into_iter().enumerate() {
            w.image("ssd", image, 20_000, u8::try_from(index + 10).unwrap());
        }
        let conf = w.config_with(
            defaults,
            &[
                (
                    "rbd",
                    "images = a, b, gone, c, d\nbackup mode = incremental",
                ),
                ("ssd", "images = *\nbackup mode = full\ncompress = yes"),
            ],
        );
        (w, conf)
    })
}

#[test]
fn parallel_images_run_at_once_and_print_exactly_what_one_at_a_time_prints() {
    let [(one, one_conf), (four, four_conf)] = twin_worlds();
    assert_eq!(four_conf.parallel_images, 4);
    four.fake.0.lock().unwrap().gate = Some(4);
    for run in 0..2 {
        let (one_outcome, one_out) = one.run(&one_conf, false);
        let (four_outcome, four_out) = four.run(&four_conf, false);
        assert!(
            four.fake.0.lock().unwrap().gate_met,
            "four exports ran at the same time"
        );
        four.fake.0.lock().unwrap().gate_met = false;
        // Same lines in the same order: every image's lines together, sections in file order.
        assert_eq!(
            anonymous(&four, &four_out),
            anonymous(&one, &one_out),
            "run {run}"
        );
        for outcome in [&one_outcome, &four_outcome] {
            assert_eq!(outcome.images_done, 7, "run {run}: {outcome:?}");
            let failed: Vec<&str> = outcome.failures.iter().map(|(l, _)| l.as_str()).collect();
            assert_eq!(failed, ["rbd/gone"], "run {run}");
            let images: Vec<String> = outcome
                .report
                .images
                .iter()
                .map(|i| format!("{}/{} {:?} {}", i.pool, i.image, i.action, i.status))
                .collect();
            let first = if run == 0 { "Full" } else { "Diff" };
            assert_eq!(
                images,
                [
                    format!("rbd/a {first} ok"),
                    format!("rbd/b {first} ok"),
                    "rbd/gone Failed failed".into(),
                    format!("rbd/c {first} ok"),
                    format!("rbd/d {first} ok"),
                    "ssd/x Full ok".into(),
                    "ssd/y Full ok".into(),
                    "ssd/z Full ok".into(),
                ],
                "run {run}"
            );
        }
        for (pool, image) in [("rbd", "a"), ("rbd", "d"), ("ssd", "z")] {
            assert_eq!(
                four.files(pool, image),
                one.files(pool, image),
                "{pool}/{image}"
            );
            assert_eq!(temp_files(&four.files(pool, image)), Vec::<&String>::new());
        }
        one.hours_later(1);
        four.hours_later(1);
    }
}

#[test]
fn a_timed_out_cluster_fails_the_queued_images_of_a_parallel_run_without_asking_again() {
    let w = World::new();
    for image in ["a", "b", "c", "d", "e", "f"] {
        w.image("rbd", image, 10_000, 3);
    }
    let conf = w.config_with(
        "parallel images = 2",
        &[("rbd", "images = *\nbackup mode = incremental")],
    );
    w.backup(&conf);
    w.hours_later(1);
    w.fake.fail(Call::ListSnapshots, "rbd/a", Fail::TimedOut);
    w.fake.fail(Call::ListSnapshots, "rbd/b", Fail::TimedOut);
    let before = w.fake.calls().len();
    let (outcome, _) = w.run(&conf, false);
    assert_eq!(outcome.images_done, 0, "{outcome:?}");
    assert_eq!(outcome.failures.len(), 6);
    let asked = w.fake.calls()[before..]
        .iter()
        .filter(|c| c.starts_with("snap ls"))
        .count();
    assert!(asked <= 3, "the queued images were not tried: {asked}");
    let statuses: Vec<&str> = outcome
        .report
        .images
        .iter()
        .map(|i| i.status.as_str())
        .collect();
    assert_eq!(statuses[0], "failed");
    assert!(
        statuses[2..].iter().all(|s| *s == "not_attempted"),
        "{statuses:?}"
    );
}

#[test]
fn the_report_tells_image_by_image_what_was_written_removed_created_and_why_it_failed() {
    let w = World::new();
    w.image("rbd", "a", 10_000, 1);
    let conf = w.config(&[(
        "rbd",
        "images = a, gone\nbackup mode = incremental\nwindow size = 2\nwindow unit = hours",
    )]);
    let (outcome, _) = w.run(&conf, false);
    let report = &outcome.report;
    assert_eq!(report.envelope.kind, "run");
    assert_eq!(
        report.envelope.schema_version,
        crate::report::SCHEMA_VERSION
    );
    assert!(!report.success && !report.check_mode && report.interrupted.is_none());
    let [a, gone] = &report.images[..] else {
        panic!("{report:?}")
    };
    let first = w.fake.snapshots("rbd", "a")[0].clone();
    assert_eq!(
        (a.mode.as_str(), a.action, a.status.as_str()),
        ("incremental", Action::Full, "ok")
    );
    assert_eq!(a.destination, w.dest.display().to_string());
    assert_eq!(a.snapshots_created, std::slice::from_ref(&first));
    let written: Vec<(&str, Option<u64>)> = a
        .files_written
        .iter()
        .map(|f| (f.file.as_str(), f.bytes))
        .collect();
    let full = format!("a@{first}.full");
    assert_eq!(written[0], (full.as_str(), Some(10_000)));
    assert_eq!(written[1].0, format!("{full}.sha256"));
    assert_eq!(a.bytes_written, 10_000);
    assert_eq!(report.bytes_written, 10_000);
    assert!(a.error.is_none());
    assert_eq!(
        (gone.action, gone.status.as_str()),
        (Action::Failed, "failed")
    );
    let error = gone.error.as_deref().unwrap();
    assert!(error.starts_with("cannot list snapshots: "), "{error}");
    assert_eq!(outcome.failures[0].1, error);
    assert!(
        outcome.summary().contains(" written in "),
        "{}",
        outcome.summary()
    );

    // The record in the destination is the same document.
    let recorded: RunReport = serde_json::from_slice(
        &fs::read(w.dest.join(crate::folder::naming::LAST_RUN_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        recorded,
        report.restricted_to(&w.dest.display().to_string())
    );
    let mode = fs::metadata(w.dest.join(crate::folder::naming::LAST_RUN_FILE))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o644
    );

    // A diff, then a slide: the window of two hours drops the first point.
    let conf = w.config(&[(
        "rbd",
        "images = a\nbackup mode = incremental\nwindow size = 2\nwindow unit = hours",
    )]);
    w.hours_later(1);
    let (outcome, _) = w.run(&conf, false);
    let a = &outcome.report.images[0];
    assert_eq!(a.action, Action::Diff, "{a:?}");
    assert!(outcome.report.success);
    w.hours_later(2);
    let (outcome, _) = w.run(&conf, false);
    let a = &outcome.report.images[0];
    assert_eq!(a.action, Action::Slide, "{a:?}");
    assert!(a.snapshots_removed.contains(&first), "{a:?}");
    assert!(
        a.files_removed
            .iter()
            .any(|f| f.file == full && f.bytes == Some(10_000)),
        "{a:?}"
    );

    // Check mode says what it would do and writes no record.
    fs::remove_file(w.dest.join(crate::folder::naming::LAST_RUN_FILE)).unwrap();
    w.hours_later(1);
    let (outcome, _) = w.run(&conf, true);
    let a = &outcome.report.images[0];
    assert_eq!((a.action, a.status.as_str()), (Action::Slide, "checked"));
    assert!(a.files_written.is_empty() && a.snapshots_created.is_empty());
    assert!(outcome.report.check_mode && outcome.report.success);
    assert!(!w.dest.join(crate::folder::naming::LAST_RUN_FILE).exists());
}

#[test]
fn the_summary_gives_the_duration_for_people() {
    for (seconds, shown) in [
        (0.4, "0.4 s"),
        (59.94, "59.9 s"),
        (245.0, "4 min 05 s"),
        (7380.0, "2 h 03 min"),
    ] {
        assert_eq!(
            super::outcome::human_duration(Duration::from_secs_f64(seconds)),
            shown
        );
    }
}

#[test]
fn a_destination_emptied_with_its_records_continues_from_the_hosts_memory() {
    let w = World::new();
    w.image("rbd", "a", 40_000, 5);
    let conf = w.config(&[("rbd", "images = a\nbackup mode = incremental")]);
    // Check mode on a new host: not even the state folder appears.
    w.run(&conf, true);
    assert!(!w.state.exists(), "check mode created the state folder");
    w.backup(&conf);
    for _ in 0..2 {
        // Everything shipped away, records and folders included.
        for entry in fs::read_dir(&w.dest).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                fs::remove_dir_all(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
        }
        w.hours_later(1);
        w.fake.write("rbd", "a", 0, b"changed");
        let state_before = fs::read_dir(&w.state).unwrap().count();
        let (checked, check_out) = w.run(&conf, true);
        assert!(checked.succeeded(), "{checked:?}");
        assert!(check_out.contains("Exporting diff"), "{check_out}");
        assert_eq!(fs::read_dir(&w.dest).unwrap().count(), 0, "check wrote");
        assert_eq!(fs::read_dir(&w.state).unwrap().count(), state_before);
        let stdout = w.backup(&conf);
        assert!(stdout.contains("Exporting diff"), "{stdout}");
        let files = w.files("rbd", "a");
        assert!(files.iter().any(|f| f.contains(".diff_from_")), "{files:?}");
        assert!(w.record("rbd", "a").newest.is_some());
    }
}

#[test]
fn a_second_run_in_the_same_second_waits_for_the_next_one_and_plans_again() {
    for mode in ["incremental", "full"] {
        let w = World::new();
        w.image("rbd", "a", 20_000, 9);
        let conf = w.config(&[("rbd", &format!("images = a\nbackup mode = {mode}"))]);
        w.backup(&conf);
        // The clock moves on while the second run waits; without the wait it would fail with
        // the name taken (a snapshot in incremental mode, the full's file in full mode).
        let clock = &w.now;
        let second = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                *clock.lock().unwrap() += chrono::Duration::seconds(1);
            });
            w.run(&conf, false)
        });
        let (outcome, stdout) = second;
        assert!(outcome.succeeded(), "{mode}: {outcome:?}\n{stdout}");
        let written: Vec<&str> = outcome
            .report
            .images
            .iter()
            .flat_map(|image| image.files_written.iter().map(|f| f.file.as_str()))
            .collect();
        let expected = match mode {
            "full" => "a@BACKUPUTC20260301T020001.full",
            _ => "a@BACKUPUTC20260301T020001.diff_from_BACKUPUTC20260301T020000",
        };
        assert!(written.contains(&expected), "{mode}: {written:?}");
    }
}

#[test]
fn a_configuration_that_backs_up_nothing_says_why() {
    let w = World::new();
    let report = |config: &Config, check: bool| {
        let (outcome, _) = w.run(config, check);
        super::nothing_backed_up(config, check, &outcome.report)
    };
    let empty = config::parse_str("[DEFAULT]\n", Path::new("test.conf")).unwrap();
    let why = report(&empty, false).expect("an empty configuration");
    assert_eq!(
        why,
        "test.conf names no pool section: nothing was backed up"
    );

    w.image("rbd", "a", 10_000, 1);
    let checked = w.config(&[("rbd", "images = a\nbackup mode = full\ncheck mode = yes")]);
    let why = report(&checked, false).expect("check mode by the key");
    assert!(
        why.starts_with("every section of test.conf is in check mode"),
        "{why}"
    );
    assert_eq!(report(&checked, true), None, "--check was asked for");

    let matched_none = w.config(&[("empty", "images = *\nbackup mode = full")]);
    let why = report(&matched_none, false).expect("no image in the pool");
    assert_eq!(
        why,
        "no image to back up in empty (test.conf): nothing was backed up"
    );

    let real = w.config(&[("rbd", "images = a\nbackup mode = full")]);
    assert_eq!(report(&real, false), None);
    let (outcome, _) = w.run(&real, false);
    assert_eq!(outcome.warnings, 0, "{outcome:?}");
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn a_check_mode_section_beside_a_real_one_changes_nothing_through_its_twins() {
    let w = World::new();
    w.image("rbd", "a", 30_000, 1);
    w.image("other", "x", 20_000, 2);
    let real = w.config(&[
        ("rbd", "images = a\nbackup mode = incremental"),
        ("other", "images = x\nbackup mode = incremental"),
    ]);
    w.backup(&real);
    // The host forgets what completed (its image notes gone, its key and destination kept):
    // each record then names a newest snapshot the host has no note of, which a save notes.
    let notes: Vec<PathBuf> = files_under(&w.state)
        .into_iter()
        .filter(|p| {
            p.parent()
                .unwrap()
                .parent()
                .unwrap()
                .ends_with("destinations")
        })
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    for note in &notes {
        fs::remove_file(note).unwrap();
    }
    w.hours_later(1);
    w.fake.write("rbd", "a", 0, b"new");
    w.fake.write("other", "x", 0, b"new");

    // One run, one (writable) state: `other` in check mode beside a real `rbd`.
    let mixed = w.config(&[
        ("rbd", "images = a\nbackup mode = incremental"),
        (
            "other",
            "images = x\nbackup mode = incremental\ncheck mode = yes",
        ),
    ]);
    let folder = |image: &str| {
        w.tree()
            .into_iter()
            .filter(|(path, _)| path.starts_with(w.dest.join(image)))
            .collect::<BTreeMap<_, _>>()
    };
    let x_folder = folder("other");
    let x_snapshots = w.fake.snapshots("other", "x");
    let a_snapshots = w.fake.snapshots("rbd", "a");
    let (outcome, shown) = w.run(&mixed, false);
    assert!(outcome.succeeded(), "{outcome:?}\n{shown}");
    // The real section did its work, and its completion is noted again.
    assert_eq!(w.fake.snapshots("rbd", "a").len(), a_snapshots.len() + 1);
    let noted = files_under(&w.state)
        .into_iter()
        .filter(|p| {
            p.parent()
                .unwrap()
                .parent()
                .unwrap()
                .ends_with("destinations")
        })
        .count();
    assert_eq!(noted, 1, "only the real section noted its image");
    // The checked one: cluster, folder and report untouched.
    assert_eq!(w.fake.snapshots("other", "x"), x_snapshots);
    assert_eq!(folder("other"), x_folder);
    let x = outcome
        .report
        .images
        .iter()
        .find(|image| image.pool == "other")
        .unwrap();
    assert_eq!((x.action, x.status.as_str()), (Action::Diff, "checked"));
    assert!(
        x.files_written.is_empty() && x.snapshots_created.is_empty(),
        "{x:?}"
    );
    assert!(
        x.snapshots_removed.is_empty() && x.files_removed.is_empty(),
        "{x:?}"
    );
    // It showed what a real run of it does.
    let x_steps = |stdout: &str| -> Vec<String> {
        step_lines(stdout)
            .into_iter()
            .filter(|l| l.contains("other/x") || l.contains("x@"))
            .map(str::to_string)
            .collect()
    };
    let checked = x_steps(&shown);
    assert!(checked
        .iter()
        .any(|l| l.starts_with("# snap create other/x@")));
    let x_only = w.config(&[("other", "images = x\nbackup mode = incremental")]);
    let printed = w.backup(&x_only);
    assert_eq!(x_steps(&printed), checked);
}

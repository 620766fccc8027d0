//! The Prometheus textfile a backup run leaves for node_exporter's textfile collector
//! (`metrics file` in `[DEFAULT]`, or `--metrics-file`).
//!
//! [`render`] is pure: the run's [`RunReport`] plus each image's coverage as the disk shows it
//! after the run ([`ImageCoverage`]) give the text. What a run did (status, duration, bytes)
//! comes from the report; what exists (restore points, files, the last successful backup) comes
//! from the folders, so a failed run can never make the last success look newer or older than
//! the newest complete backup on disk. [`write()`] replaces the file atomically: a temporary file
//! in the same folder, synced, made readable by the collector, then renamed over the old one
//! (a rename replaces a symlink at that name, it never writes through it).
//!
//! Every family has HELP and TYPE lines; names follow the conventions (`_seconds`, `_bytes`,
//! `_timestamp_seconds` for Unix times); label values are escaped as the format requires.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::commands::catalog::Narrow;
use crate::commands::coverage::{self, ImageCoverage};
use crate::config::Config;
use crate::folder::door::{set_mode, PendingFile};
use crate::report::{ImageReport, ImageStatus, RunReport};

/// node_exporter usually runs as its own user: the file must be readable by others.
const FILE_MODE: u32 = 0o644;

/// The metrics text for one run.
pub fn render(report: &RunReport, coverage: &[ImageCoverage]) -> String {
    let mut families = Families::default();
    let started = DateTime::parse_from_rfc3339(&report.started_at)
        .map(|at| at.with_timezone(&Utc))
        .ok();
    // A run in check mode backed nothing up, whatever it would have done: never a success here.
    let checked = report.check_mode
        || report
            .images
            .iter()
            .any(|i| i.status == ImageStatus::Checked);
    families.add(
        "cephbackup_run_success",
        RUN_SUCCESS_HELP,
        "",
        flag(report.success && !checked),
    );
    families.add(
        "cephbackup_run_config_error",
        CONFIG_ERROR_HELP,
        "",
        flag(false),
    );
    families.add(
        "cephbackup_run_check_mode",
        CHECK_MODE_HELP,
        "",
        flag(checked),
    );
    families.add(
        "cephbackup_run_duration_seconds",
        "How long the last backup run took.",
        "",
        seconds(report.duration_seconds),
    );
    if let Some(started) = started {
        families.add(
            "cephbackup_run_start_timestamp_seconds",
            "When the last backup run started, as a Unix time.",
            "",
            started.timestamp().to_string(),
        );
        let ended = started.timestamp_millis() as f64 / 1000.0 + report.duration_seconds;
        families.add(
            "cephbackup_run_timestamp_seconds",
            "When the last backup run ended, as a Unix time.",
            "",
            seconds(ended),
        );
    }
    families.add(
        "cephbackup_run_written_bytes",
        "Bytes the last backup run wrote to the destinations.",
        "",
        report.bytes_written.to_string(),
    );
    families.add(
        "cephbackup_run_images",
        "Images the last backup run handled.",
        "",
        report.images.len().to_string(),
    );
    families.add(
        "cephbackup_run_failed_images",
        "Images the last backup run failed to back up.",
        "",
        report
            .images
            .iter()
            .filter(|image| !backed_up(image))
            .count()
            .to_string(),
    );
    for failure in &report.section_failures {
        families.add(
            "cephbackup_section_failed",
            "1 for a pool section that failed as a whole in the last run (unlistable pool, \
             refused destination).",
            &labels(&[("pool", &failure.pool)]),
            "1".to_string(),
        );
    }

    // Every image the run handled or the configuration covers, by pool and name.
    let mut images: BTreeMap<(&str, &str), Sources> = BTreeMap::new();
    for image in &report.images {
        images.entry((&image.pool, &image.image)).or_default().0 = Some(image);
    }
    for image in coverage {
        images.entry((&image.pool, &image.image)).or_default().1 = Some(image);
    }
    for ((pool, image), (run, disk)) in images {
        let labels = labels(&[("pool", pool), ("image", image)]);
        image_metrics(&mut families, &labels, run, disk);
        if run.is_none() && report.section_failures.iter().any(|f| f.pool == pool) {
            families.add(
                "cephbackup_image_last_run_success",
                IMAGE_SUCCESS_HELP,
                &labels,
                "0".to_string(),
            );
        }
    }
    families.text()
}

const RUN_SUCCESS_HELP: &str =
    "1 when the last backup run backed up every image, else 0 (also after a configuration error \
     or a run in check mode).";
const CONFIG_ERROR_HELP: &str =
    "1 when the last backup run stopped on a configuration error before backing anything up.";
const CHECK_MODE_HELP: &str =
    "1 when the last backup run was in check mode (--check, or check mode = yes) in some \
     section: those images were only shown, not backed up.";

/// The metrics text of a run that stopped on a configuration error at `at`: it did nothing, so
/// there is no image to tell of, only that it failed and why.
pub fn render_config_error(at: DateTime<Utc>) -> String {
    let mut families = Families::default();
    families.add("cephbackup_run_success", RUN_SUCCESS_HELP, "", flag(false));
    families.add(
        "cephbackup_run_config_error",
        CONFIG_ERROR_HELP,
        "",
        flag(true),
    );
    families.add(
        "cephbackup_run_check_mode",
        CHECK_MODE_HELP,
        "",
        flag(false),
    );
    families.add(
        "cephbackup_run_timestamp_seconds",
        "When the last backup run ended, as a Unix time.",
        "",
        seconds(at.timestamp_millis() as f64 / 1000.0),
    );
    families.text()
}

/// What is known of one image: what the run did to it, and what its folder holds.
type Sources<'a> = (Option<&'a ImageReport>, Option<&'a ImageCoverage>);

const IMAGE_SUCCESS_HELP: &str = "1 when the last backup run backed the image up, else 0.";

fn image_metrics(
    families: &mut Families,
    labels: &str,
    run: Option<&ImageReport>,
    disk: Option<&ImageCoverage>,
) {
    if let Some(run) = run {
        run_metrics(families, labels, run);
    }
    if let Some(disk) = disk {
        disk_metrics(families, labels, disk);
    }
}

/// Whether the run backed the image up: itself, or (with coordination) another host did in
/// this round, which is no failure of this host's.
fn backed_up(run: &ImageReport) -> bool {
    matches!(run.status, ImageStatus::Ok | ImageStatus::Elsewhere)
}

/// What the last run did to the image.
fn run_metrics(families: &mut Families, labels: &str, run: &ImageReport) {
    families.add(
        "cephbackup_image_last_run_success",
        IMAGE_SUCCESS_HELP,
        labels,
        flag(backed_up(run)),
    );
    if let Some(host) = &run.host {
        // With coordination: which host backed it up (this one or, status elsewhere, another),
        // as an info series so the image's other series keep their identity across hosts.
        families.add(
            "cephbackup_image_last_run_host",
            "With coordination pool: the host that backed the image up in the last run (this \
             one or another), in the host label; always 1.",
            &format!(
                "{},host=\"{}\"}}",
                labels.trim_end_matches('}'),
                escape(host)
            ),
            "1".to_string(),
        );
    }
    let with_status = format!(
        "{},status=\"{}\"",
        labels.trim_end_matches('}'),
        escape(run.status.as_str())
    );
    families.add(
        "cephbackup_image_last_run_status",
        "The outcome of the image in the last backup run (ok, failed, busy, not_attempted, \
         elsewhere), in the status label; always 1.",
        &format!("{with_status}}}"),
        "1".to_string(),
    );
    families.add(
        "cephbackup_image_last_run_duration_seconds",
        "How long the image took in the last backup run.",
        labels,
        seconds(run.duration_seconds),
    );
    families.add(
        "cephbackup_image_last_run_written_bytes",
        "Bytes written for the image in the last backup run.",
        labels,
        run.bytes_written.to_string(),
    );
    families.add(
        "cephbackup_image_last_run_snapshots_created",
        "Snapshots the last backup run created of the image.",
        labels,
        run.snapshots_created.len().to_string(),
    );
    families.add(
        "cephbackup_image_last_run_snapshots_removed",
        "Snapshots the last backup run removed of the image.",
        labels,
        run.snapshots_removed.len().to_string(),
    );
    if let Some(kept) = run.snapshots_kept {
        families.add(
            "cephbackup_image_snapshots_kept",
            "The tool's snapshots of the image left in the cluster by the last backup run.",
            labels,
            kept.to_string(),
        );
    }
}

/// What the image's folder holds.
fn disk_metrics(families: &mut Families, labels: &str, disk: &ImageCoverage) {
    if disk.error.is_some() {
        // Nothing on disk can be told; the absence of the series says so.
        return;
    }
    families.add(
        "cephbackup_image_backed_up",
        "1 when the image has at least one restore point on disk, else 0.",
        labels,
        flag(!disk.points.is_empty()),
    );
    families.add(
        "cephbackup_image_restore_points",
        "Restore points kept on disk for the image.",
        labels,
        disk.points.len().to_string(),
    );
    families.add(
        "cephbackup_image_files",
        "Backup files kept on disk for the image.",
        labels,
        disk.files.to_string(),
    );
    families.add(
        "cephbackup_image_stored_bytes",
        "Bytes of the backup files kept on disk for the image.",
        labels,
        disk.bytes.to_string(),
    );
    families.add(
        "cephbackup_image_unusable_files",
        "Files or entries in the image's folder that cannot be restored from.",
        labels,
        disk.unusable.to_string(),
    );
    if let Some(newest) = disk.newest() {
        families.add(
            "cephbackup_image_newest_point_timestamp_seconds",
            "When the snapshot of the image's newest restore point was taken, as a Unix time.",
            labels,
            newest.taken().timestamp().to_string(),
        );
        let completed = disk.newest_completed.unwrap_or_else(|| newest.taken());
        families.add(
            "cephbackup_image_last_success_timestamp_seconds",
            "When the newest complete backup of the image on disk was finished, as a Unix time.",
            labels,
            completed.timestamp().to_string(),
        );
    }
}

/// Metric families in the order first seen, each with its samples.
#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    by_name: BTreeMap<&'static str, (&'static str, Vec<String>)>,
}

impl Families {
    fn add(&mut self, name: &'static str, help: &'static str, labels: &str, value: String) {
        let family = self.by_name.entry(name).or_insert_with(|| {
            self.order.push(name);
            (help, Vec::new())
        });
        family.1.push(format!("{name}{labels} {value}"));
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for name in &self.order {
            let (help, samples) = &self.by_name[name];
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for sample in samples {
                out.push_str(sample);
                out.push('\n');
            }
        }
        out
    }
}

fn flag(value: bool) -> String {
    u8::from(value).to_string()
}

/// Seconds with millisecond precision, as Prometheus reads floats.
fn seconds(value: f64) -> String {
    if value.is_finite() {
        format!("{:.3}", value)
    } else {
        "NaN".to_string()
    }
}

/// `{a="x",b="y"}` with the values escaped.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// After a run: reads every configured image's coverage from the folders and replaces the
/// metrics file at `path`. A run in check mode writes it too (it says so), so that a `check
/// mode = yes` left in the file never looks like a night of good backups.
pub fn publish(config: &Config, path: &Path, report: &RunReport) -> Result<()> {
    // A destination that cannot be read leaves its images out; the run says why on its own.
    let coverage = coverage::survey(config, &Narrow::default())?;
    write(path, &render(report, &coverage.images))
}

/// Replaces the file at `path` with `text`, atomically and readable by node_exporter.
pub fn write(path: &Path, text: &str) -> Result<()> {
    let shown = path.display();
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("metrics file {shown} does not name a file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut pending = PendingFile::create(dir, name)
        .with_context(|| format!("cannot write the metrics file {shown}"))?;
    pending
        .file()
        .write_all(text.as_bytes())
        .and_then(|()| set_mode(pending.file(), FILE_MODE))
        .with_context(|| format!("cannot write the metrics file {shown}"))?;
    pending
        .commit_replacing()
        .with_context(|| format!("cannot write the metrics file {shown}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::naming::SnapName;
    use crate::report::{Action, Envelope, FileReport, SectionFailureReport};
    use chrono::TimeZone;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn image_report(image: &str, status: ImageStatus) -> ImageReport {
        let ok = status == ImageStatus::Ok;
        ImageReport {
            pool: "rbd".into(),
            image: image.into(),
            destination: "/b".into(),
            mode: "incremental".into(),
            action: if ok { Action::Diff } else { Action::Failed },
            status,
            files_written: vec![FileReport {
                file: format!("{image}@BACKUPUTC20261126T020000.diff_from_X"),
                bytes: Some(4096),
            }],
            files_removed: vec![],
            snapshots_created: vec!["BACKUPUTC20261126T020000".into()],
            snapshots_removed: vec![],
            snapshots_kept: ok.then_some(3),
            bytes_written: if ok { 4096 } else { 0 },
            duration_seconds: 2.5,
            error: (!ok).then(|| "cannot open image".to_string()),
            host: None,
        }
    }

    fn report() -> RunReport {
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 2, 0, 0).unwrap();
        RunReport {
            envelope: Envelope::new("run", at),
            started_at: "2026-11-26T02:00:00Z".into(),
            duration_seconds: 12.25,
            success: false,
            check_mode: false,
            interrupted: None,
            bytes_written: 4096,
            images: vec![
                image_report("vm", ImageStatus::Ok),
                image_report("gone", ImageStatus::Failed),
            ],
            section_failures: vec![SectionFailureReport {
                pool: "ssd".into(),
                destination: "/s".into(),
                error: "pool does not exist".into(),
            }],
        }
    }

    fn coverage(pool: &str, image: &str, points: &[&str]) -> ImageCoverage {
        ImageCoverage {
            pool: pool.into(),
            image: image.into(),
            folder: PathBuf::from(format!("/b/{pool}/{image}")),
            points: points.iter().map(|p| SnapName::parse(p).unwrap()).collect(),
            files: points.len(),
            bytes: 1000 * points.len() as u64,
            unusable: 0,
            newest_completed: None,
            error: None,
        }
    }

    #[test]
    fn the_run_and_every_image_are_rendered_with_help_and_type() {
        let mut vm = coverage(
            "rbd",
            "vm",
            &["BACKUPUTC20261125T020000", "BACKUPUTC20261126T020000"],
        );
        vm.newest_completed = Some(Utc.with_ymd_and_hms(2026, 11, 26, 2, 0, 9).unwrap());
        // Failed this time, backed up before: the last success is the one on disk.
        let gone = coverage("rbd", "gone", &["BACKUPUTC20261120T020000"]);
        let db = coverage("ssd", "db", &[]);
        let text = render(&report(), &[vm, gone, db]);
        let sample = |line: &str| {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        };
        sample("cephbackup_run_success 0");
        sample("cephbackup_run_duration_seconds 12.250");
        sample("cephbackup_run_start_timestamp_seconds 1795658400");
        sample("cephbackup_run_timestamp_seconds 1795658412.250");
        sample("cephbackup_run_written_bytes 4096");
        sample("cephbackup_run_failed_images 1");
        sample("cephbackup_section_failed{pool=\"ssd\"} 1");
        sample("cephbackup_image_last_run_success{pool=\"rbd\",image=\"vm\"} 1");
        sample("cephbackup_image_last_run_success{pool=\"rbd\",image=\"gone\"} 0");
        sample("cephbackup_image_last_run_success{pool=\"ssd\",image=\"db\"} 0");
        sample("cephbackup_image_last_run_status{pool=\"rbd\",image=\"gone\",status=\"failed\"} 1");
        sample("cephbackup_image_last_run_duration_seconds{pool=\"rbd\",image=\"vm\"} 2.500");
        sample("cephbackup_image_last_run_written_bytes{pool=\"rbd\",image=\"vm\"} 4096");
        sample("cephbackup_image_snapshots_kept{pool=\"rbd\",image=\"vm\"} 3");
        sample("cephbackup_image_restore_points{pool=\"rbd\",image=\"vm\"} 2");
        sample("cephbackup_image_files{pool=\"rbd\",image=\"vm\"} 2");
        sample("cephbackup_image_stored_bytes{pool=\"rbd\",image=\"vm\"} 2000");
        sample(
            "cephbackup_image_newest_point_timestamp_seconds{pool=\"rbd\",image=\"vm\"} \
             1795658400",
        );
        sample(
            "cephbackup_image_last_success_timestamp_seconds{pool=\"rbd\",image=\"vm\"} \
             1795658409",
        );
        sample(
            "cephbackup_image_last_success_timestamp_seconds{pool=\"rbd\",image=\"gone\"} \
             1795140000",
        );
        sample("cephbackup_image_backed_up{pool=\"ssd\",image=\"db\"} 0");
        assert!(
            !text.contains("last_success_timestamp_seconds{pool=\"ssd\""),
            "never backed up: no last success\n{text}"
        );
        // Each family once, HELP then TYPE, before its samples.
        let mut seen = std::collections::HashSet::new();
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name.to_string()), "{name} twice");
                assert_eq!(lines[index + 1], format!("# TYPE {name} gauge"));
                assert!(lines[index + 2].starts_with(name), "{}", lines[index + 2]);
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(seen.contains(name), "{name} before its HELP");
                assert!(name.starts_with("cephbackup_"), "{name}");
            }
        }
    }

    /// The value of the sample without labels named `name` in `text`.
    fn value<'t>(text: &'t str, name: &str) -> &'t str {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn an_image_another_host_backed_up_is_no_failure_and_names_that_host() {
        let mut shared = report();
        shared.section_failures.clear();
        let mut theirs = image_report("theirs", ImageStatus::Elsewhere);
        theirs.host = Some("backup-2".into());
        let mut ours = image_report("ours", ImageStatus::Ok);
        ours.host = Some("backup-1".into());
        shared.images = vec![theirs, ours];
        let text = render(&shared, &[]);
        assert_eq!(value(&text, "cephbackup_run_failed_images"), "0");
        for (image, host) in [("theirs", "backup-2"), ("ours", "backup-1")] {
            let labels = format!("{{pool=\"rbd\",image=\"{image}\"}}");
            assert_eq!(
                value(&text, &format!("cephbackup_image_last_run_success{labels}")),
                "1"
            );
            let host_series = format!(
                "cephbackup_image_last_run_host{{pool=\"rbd\",image=\"{image}\",host=\"{host}\"}}"
            );
            assert_eq!(value(&text, &host_series), "1", "{text}");
        }
        assert!(text.contains("status=\"elsewhere\"} 1"), "{text}");
    }

    #[test]
    fn a_run_in_check_mode_is_no_success_and_says_so() {
        let mut checked = report();
        checked.section_failures.clear();
        checked.images = vec![image_report("vm", ImageStatus::Checked)];
        checked.success = true;
        let text = render(&checked, &[]);
        assert_eq!(value(&text, "cephbackup_run_success"), "0");
        assert_eq!(value(&text, "cephbackup_run_check_mode"), "1");
        assert_eq!(value(&text, "cephbackup_run_config_error"), "0");
        // A real run that backed everything up.
        let mut real = checked.clone();
        real.images = vec![image_report("vm", ImageStatus::Ok)];
        let text = render(&real, &[]);
        assert_eq!(value(&text, "cephbackup_run_success"), "1");
        assert_eq!(value(&text, "cephbackup_run_check_mode"), "0");
    }

    #[test]
    fn a_configuration_error_is_a_failed_run_that_says_why() {
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 2, 0, 0).unwrap();
        let text = render_config_error(at);
        assert_eq!(value(&text, "cephbackup_run_success"), "0");
        assert_eq!(value(&text, "cephbackup_run_config_error"), "1");
        assert_eq!(value(&text, "cephbackup_run_check_mode"), "0");
        assert_eq!(
            value(&text, "cephbackup_run_timestamp_seconds"),
            "1795658400.000"
        );
        assert!(
            text.contains("# TYPE cephbackup_run_config_error gauge"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(
            labels(&[("pool", "p\"x"), ("image", "i\\\n")]),
            "{pool=\"p\\\"x\",image=\"i\\\\\\n\"}"
        );
    }

    #[test]
    fn the_file_is_replaced_atomically_and_readable_and_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cephbackup.prom");
        write(&path, "first\n").unwrap();
        write(&path, "second\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        // Nothing else is left in the folder.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cephbackup.prom"]);

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("link.prom");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write(&link, "metrics\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());

        let err = write(&dir.path().join("no/such/dir/c.prom"), "x").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("cannot write the metrics file"),
            "{err:#}"
        );
    }
}

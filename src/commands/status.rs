//! `cephbackup status`: is every configured image covered, and how recently? For monitoring
//! systems without Prometheus (Nagios, Icinga, a cron mail), in the plugin convention.
//!
//! Reads the backup folders only, like `list` (no cluster, no lock). Each configured image gets
//! one verdict ([`Health`]), judged from its newest restore point ([`crate::commands::coverage`]):
//!
//! - CRITICAL: no restore point at all, or the newest is older than `--max-age`;
//! - WARNING: the newest is older than `--warn-age`, or the folder holds files that cannot be
//!   restored from (a broken chain, an entry that is not a regular file);
//! - UNKNOWN: the destination or the image folder cannot be read;
//! - OK otherwise.
//!
//! A configuration whose runs back nothing up is a WARNING too, whatever the folders hold: a
//! section with `check mode = yes`, or a last run in check mode as the metrics file
//! (`metrics file`) tells ([`check_mode_notes`]).
//!
//! The whole verdict is the worst one, CRITICAL before UNKNOWN (a known gap is the more urgent
//! news); with no configured image found at all it is UNKNOWN. The text puts that verdict on the
//! first line (the plugin convention: monitoring shows the first line), then one line per image.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::commands::catalog::Narrow;
use crate::commands::coverage::{self, Coverage, ImageCoverage, SectionProblem};
use crate::config::Config;
use crate::outln;
use crate::output::{self, escaped, escaped_path};
use crate::report::{rfc3339, Envelope};

/// A verdict, in the order of the plugin convention's exit statuses (mapped in `cli`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Health {
    /// How bad, for taking the worst: CRITICAL outranks UNKNOWN.
    fn rank(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Warning => 1,
            Health::Unknown => 2,
            Health::Critical => 3,
        }
    }

    fn worst(self, other: Health) -> Health {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
            Health::Unknown => "UNKNOWN",
        }
    }
}

/// Why an image got its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Backed up, and recently enough (or no age was asked about).
    Fresh,
    /// Never backed up: no restore point.
    NoBackup,
    /// The newest point is older than `--max-age`.
    OlderThanMaxAge,
    /// The newest point is older than `--warn-age`.
    OlderThanWarnAge,
    /// Files in the folder cannot be restored from.
    UnusableFiles,
    /// The folder could not be read.
    Unreadable,
}

/// What `status` is asked for.
#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    pub narrow: Narrow,
    /// Older newest points are CRITICAL.
    pub max_age: Option<Duration>,
    /// Older newest points are WARNING.
    pub warn_age: Option<Duration>,
    /// One JSON document instead of text.
    pub json: bool,
}

/// Prints the verdicts and returns the whole one.
pub fn run(config: &Config, options: &StatusOptions) -> Result<Health> {
    let coverage = coverage::survey(config, &options.narrow)?;
    let now = Utc::now();
    let mut judged = judge(&coverage, options, now);
    judged.note_check_mode(check_mode_notes(config, &options.narrow));
    judged.backed_up_by = crate::commands::hosts::backed_up_by(config);
    if options.json {
        outln!("{}", output::json(&document(&judged, options, now))?);
    } else {
        outln!("{}", text(&judged, options, now).trim_end());
    }
    Ok(judged.health)
}

/// Every verdict, and the whole one.
pub struct Judged<'a> {
    pub health: Health,
    pub images: Vec<(Health, Reason, &'a ImageCoverage)>,
    pub unreadable: &'a [SectionProblem],
    /// Why runs back nothing up: check mode by the configuration or in the last run.
    pub check_mode: Vec<String>,
    /// With coordination: which host completed each image's newest backup, by pool, image and
    /// snapshot, as the hosts' shared memory tells.
    pub backed_up_by: crate::commands::hosts::BackedUpBy,
}

impl Judged<'_> {
    /// The host that completed `image`'s newest point, when the shared memory knows it.
    fn host_of(&self, image: &ImageCoverage) -> Option<&str> {
        let newest = image.newest()?.as_str().to_string();
        self.backed_up_by
            .get(&(image.pool.clone(), image.image.clone(), newest))
            .map(String::as_str)
    }
}

impl Judged<'_> {
    /// Check mode makes the whole verdict at least a WARNING.
    pub fn note_check_mode(&mut self, notes: Vec<String>) {
        if !notes.is_empty() {
            self.health = self.health.worst(Health::Warning);
        }
        self.check_mode = notes;
    }
}

/// One line per reason the configured runs back nothing up: each section (of those asked
/// about) with `check mode = yes`, and a last run in check mode when the metrics file says so.
pub fn check_mode_notes(config: &Config, narrow: &Narrow) -> Vec<String> {
    let mut notes: Vec<String> = config
        .pools
        .iter()
        .filter(|job| job.check_mode)
        .filter(|job| narrow.pool.as_ref().is_none_or(|pool| *pool == job.pool))
        .map(|job| {
            format!(
                "[{}]: check mode = yes: its runs only show what they would do",
                escaped(&job.pool)
            )
        })
        .collect();
    if let Some(path) = &config.metrics_file {
        // Written by the last run; a missing or foreign file says nothing here.
        let last_run_checked = std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines()
                .any(|line| line.trim() == "cephbackup_run_check_mode 1")
        });
        if last_run_checked {
            notes.push(format!(
                "the last backup run was in check mode and backed nothing up ({})",
                escaped_path(path)
            ));
        }
    }
    notes
}

/// The verdicts at `now`: pure, for the tests.
pub fn judge<'a>(
    coverage: &'a Coverage,
    options: &StatusOptions,
    now: DateTime<Utc>,
) -> Judged<'a> {
    let older = |limit: Option<Duration>, age: Option<Duration>| match (limit, age) {
        (Some(limit), Some(age)) => age > limit,
        _ => false,
    };
    let images: Vec<(Health, Reason, &ImageCoverage)> = coverage
        .images
        .iter()
        .map(|image| {
            let age = image.age(now);
            let (health, reason) = if image.error.is_some() {
                (Health::Unknown, Reason::Unreadable)
            } else if image.points.is_empty() {
                (Health::Critical, Reason::NoBackup)
            } else if older(options.max_age, age) {
                (Health::Critical, Reason::OlderThanMaxAge)
            } else if older(options.warn_age, age) {
                (Health::Warning, Reason::OlderThanWarnAge)
            } else if image.unusable > 0 {
                (Health::Warning, Reason::UnusableFiles)
            } else {
                (Health::Ok, Reason::Fresh)
            };
            (health, reason, image)
        })
        .collect();
    let mut health = if images.is_empty() {
        Health::Unknown
    } else {
        Health::Ok
    };
    for (image_health, _, _) in &images {
        health = health.worst(*image_health);
    }
    if !coverage.unreadable.is_empty() {
        health = health.worst(Health::Unknown);
    }
    Judged {
        health,
        images,
        unreadable: &coverage.unreadable,
        check_mode: Vec::new(),
        backed_up_by: crate::commands::hosts::BackedUpBy::new(),
    }
}

/// An age for people: the two largest units, `3d 2h`, `5h 3m`, `42m 10s`, `17s`.
pub fn age(duration: Duration) -> String {
    let total = duration.as_secs();
    let units = [
        (total / 86_400, "d"),
        (total / 3600 % 24, "h"),
        (total / 60 % 60, "m"),
        (total % 60, "s"),
    ];
    let Some(first) = units.iter().position(|(n, _)| *n > 0) else {
        return "0s".to_string();
    };
    units[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The verdict first, then one line per image, then one per unreadable destination.
pub fn text(judged: &Judged, options: &StatusOptions, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {}",
        judged.health.label(),
        summary(judged, options)
    );
    for (health, reason, image) in &judged.images {
        let label =
            escaped(&crate::cluster::rbd::spec(&image.pool, &image.image, None)).into_owned();
        let detail = match (reason, image.newest(), image.age(now)) {
            (Reason::Unreadable, _, _) => format!(
                "cannot read {}: {}",
                escaped_path(&image.folder),
                escaped(image.error.as_deref().unwrap_or_default())
            ),
            (Reason::NoBackup, _, _) => format!(
                "no backup: no restore point in {}",
                escaped_path(&image.folder)
            ),
            (_, Some(newest), Some(old)) => {
                let mut detail = format!(
                    "newest point {newest} ({}), {} old",
                    output::time(newest.taken()),
                    age(old)
                );
                match reason {
                    Reason::OlderThanMaxAge => {
                        let limit = options.max_age.unwrap_or_default();
                        let _ = write!(detail, ", older than --max-age {}", age(limit));
                    }
                    Reason::OlderThanWarnAge => {
                        let limit = options.warn_age.unwrap_or_default();
                        let _ = write!(detail, ", older than --warn-age {}", age(limit));
                    }
                    _ => {}
                }
                if let Some(host) = judged.host_of(image) {
                    let _ = write!(detail, ", by {}", escaped(host));
                }
                let points = image.points.len();
                let _ = write!(
                    detail,
                    "; {points} restore point{}",
                    if points == 1 { "" } else { "s" }
                );
                if image.unusable > 0 {
                    let _ = write!(
                        detail,
                        "; {} file(s) cannot be restored from (see `cephbackup list`)",
                        image.unusable
                    );
                }
                detail
            }
            _ => String::new(),
        };
        let _ = writeln!(out, "{}: {label}: {detail}", health.label());
    }
    for problem in judged.unreadable {
        let _ = writeln!(
            out,
            "{}: [{}]: {}",
            Health::Unknown.label(),
            escaped(&problem.pool),
            escaped(&problem.error)
        );
    }
    for note in &judged.check_mode {
        let _ = writeln!(out, "{}: {note}", Health::Warning.label());
    }
    out
}

fn summary(judged: &Judged, options: &StatusOptions) -> String {
    let count = |wanted: &[Reason]| {
        judged
            .images
            .iter()
            .filter(|(_, reason, _)| wanted.contains(reason))
            .count()
    };
    let mut parts = Vec::new();
    for (n, what) in [
        (count(&[Reason::Fresh]), "ok".to_string()),
        (count(&[Reason::NoBackup]), "never backed up".to_string()),
        (
            count(&[Reason::OlderThanMaxAge]),
            format!(
                "older than --max-age {}",
                age(options.max_age.unwrap_or_default())
            ),
        ),
        (
            count(&[Reason::OlderThanWarnAge]),
            format!(
                "older than --warn-age {}",
                age(options.warn_age.unwrap_or_default())
            ),
        ),
        (
            count(&[Reason::UnusableFiles]),
            "with files that cannot be restored from".to_string(),
        ),
        (count(&[Reason::Unreadable]), "unreadable".to_string()),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if !judged.unreadable.is_empty() {
        parts.push(format!(
            "{} destination(s) unreadable",
            judged.unreadable.len()
        ));
    }
    if !judged.check_mode.is_empty() {
        parts.push("check mode: nothing backed up".to_string());
    }
    let images = judged.images.len();
    if parts.is_empty() {
        return "no configured image found in the destinations".to_string();
    }
    format!("{images} image(s): {}", parts.join(", "))
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    status: Health,
    max_age_seconds: Option<u64>,
    warn_age_seconds: Option<u64>,
    images: Vec<ImageDoc<'a>>,
    unreadable: Vec<SectionDoc<'a>>,
    check_mode: &'a [String],
}

#[derive(Serialize)]
struct ImageDoc<'a> {
    pool: &'a str,
    image: &'a str,
    folder: String,
    status: Health,
    reason: Reason,
    backed_up: bool,
    restore_points: usize,
    newest: Option<PointDoc>,
    age_seconds: Option<u64>,
    files: usize,
    bytes: u64,
    unusable_files: usize,
    error: Option<&'a str>,
    /// With coordination: the host that completed the newest point.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
}

/// A restore point: its snapshot and when it was taken.
#[derive(Serialize)]
pub struct PointDoc {
    pub snapshot: String,
    pub time: String,
}

impl PointDoc {
    pub fn of(point: &crate::folder::naming::SnapName) -> PointDoc {
        PointDoc {
            snapshot: point.as_str().to_string(),
            time: rfc3339(point.taken()),
        }
    }
}

#[derive(Serialize)]
struct SectionDoc<'a> {
    pool: &'a str,
    destination: &'a str,
    error: &'a str,
}

fn document<'a>(judged: &'a Judged, options: &StatusOptions, now: DateTime<Utc>) -> Document<'a> {
    Document {
        envelope: Envelope::new("status", now),
        status: judged.health,
        max_age_seconds: options.max_age.map(|d| d.as_secs()),
        warn_age_seconds: options.warn_age.map(|d| d.as_secs()),
        images: judged
            .images
            .iter()
            .map(|(health, reason, image)| ImageDoc {
                pool: &image.pool,
                image: &image.image,
                folder: image.folder.display().to_string(),
                status: *health,
                reason: *reason,
                backed_up: !image.points.is_empty(),
                restore_points: image.points.len(),
                newest: image.newest().map(PointDoc::of),
                age_seconds: image.age(now).map(|d| d.as_secs()),
                files: image.files,
                bytes: image.bytes,
                unusable_files: image.unusable,
                error: image.error.as_deref(),
                host: judged.host_of(image),
            })
            .collect(),
        unreadable: judged
            .unreadable
            .iter()
            .map(|p| SectionDoc {
                pool: &p.pool,
                destination: &p.destination,
                error: &p.error,
            })
            .collect(),
        check_mode: &judged.check_mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::naming::SnapName;
    use chrono::TimeZone;
    use std::path::PathBuf;

    fn image(name: &str, points: &[&str]) -> ImageCoverage {
        ImageCoverage {
            pool: "rbd".into(),
            image: name.into(),
            folder: PathBuf::from(format!("/b/rbd/{name}")),
            points: points.iter().map(|p| SnapName::parse(p).unwrap()).collect(),
            files: points.len(),
            bytes: 100,
            unusable: 0,
            newest_completed: None,
            error: None,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    fn hours(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n * 3600))
    }

    #[test]
    fn ages_show_the_two_largest_units() {
        for (seconds, shown) in [
            (0, "0s"),
            (17, "17s"),
            (2530, "42m 10s"),
            (18_180, "5h 3m"),
            (7200, "2h"),
            (93_600, "1d 2h"),
            (86_401, "1d"),
        ] {
            assert_eq!(age(Duration::from_secs(seconds)), shown, "{seconds}");
        }
    }

    #[test]
    fn check_mode_in_the_configuration_or_the_last_run_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let prom = dir.path().join("c.prom");
        let text = format!(
            "[DEFAULT]\nmetrics file = {}\n[rbd]\nimages = a\ndestination directory = /b\n\
             backup mode = full\ncheck mode = yes\n[ssd]\nimages = b\n\
             destination directory = /c\nbackup mode = full\n",
            prom.display()
        );
        let config = crate::test_fixtures::parse_config(&text);
        let ssd = Narrow {
            pool: Some("ssd".into()),
            image: None,
        };
        let by_key = "[rbd]: check mode = yes: its runs only show what they would do";
        assert_eq!(check_mode_notes(&config, &Narrow::default()), [by_key]);
        assert!(check_mode_notes(&config, &ssd).is_empty());
        std::fs::write(&prom, "cephbackup_run_check_mode 0\n").unwrap();
        assert!(check_mode_notes(&config, &ssd).is_empty());
        std::fs::write(&prom, "cephbackup_run_check_mode 1\n").unwrap();
        let by_run = format!(
            "the last backup run was in check mode and backed nothing up ({})",
            prom.display()
        );
        assert_eq!(
            check_mode_notes(&config, &ssd),
            std::slice::from_ref(&by_run)
        );

        let coverage = Coverage {
            images: vec![image("fresh", &["BACKUPUTC20261126T020000"])],
            unreadable: vec![],
        };
        let options = StatusOptions::default();
        let mut judged = judge(&coverage, &options, now());
        assert_eq!(judged.health, Health::Ok);
        judged.note_check_mode(check_mode_notes(&config, &Narrow::default()));
        assert_eq!(judged.health, Health::Warning);
        let shown = text_of(&judged, &options);
        assert!(
            shown.starts_with("WARNING: 1 image(s): 1 ok, check mode: nothing backed up\n"),
            "{shown}"
        );
        assert!(shown.contains(&format!("\nWARNING: {by_key}\n")), "{shown}");
        assert!(shown.contains(&format!("\nWARNING: {by_run}\n")), "{shown}");
    }

    fn text_of(judged: &Judged, options: &StatusOptions) -> String {
        text(judged, options, now())
    }

    #[test]
    fn each_image_gets_the_verdict_its_newest_point_earns() {
        let coverage = Coverage {
            images: vec![
                image(
                    "fresh",
                    &["BACKUPUTC20261125T020000", "BACKUPUTC20261126T020000"],
                ),
                image("aging", &["BACKUPUTC20261125T200000"]),
                image("stale", &["BACKUPUTC20261124T020000"]),
                image("never", &[]),
            ],
            unreadable: vec![],
        };
        let options = StatusOptions {
            max_age: hours(26),
            warn_age: hours(12),
            ..StatusOptions::default()
        };
        let judged = judge(&coverage, &options, now());
        let verdicts: Vec<(Health, Reason)> =
            judged.images.iter().map(|(h, r, _)| (*h, *r)).collect();
        assert_eq!(
            verdicts,
            [
                (Health::Ok, Reason::Fresh),
                (Health::Warning, Reason::OlderThanWarnAge),
                (Health::Critical, Reason::OlderThanMaxAge),
                (Health::Critical, Reason::NoBackup),
            ]
        );
        assert_eq!(judged.health, Health::Critical);
        let shown = text(&judged, &options, now());
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines,
            [
                "CRITICAL: 4 image(s): 1 ok, 1 never backed up, 1 older than --max-age 1d 2h, \
                 1 older than --warn-age 12h",
                "OK: rbd/fresh: newest point BACKUPUTC20261126T020000 (2026-11-26 02:00:00 UTC), \
                 10h old; 2 restore points",
                "WARNING: rbd/aging: newest point BACKUPUTC20261125T200000 (2026-11-25 20:00:00 \
                 UTC), 16h old, older than --warn-age 12h; 1 restore point",
                "CRITICAL: rbd/stale: newest point BACKUPUTC20261124T020000 (2026-11-24 02:00:00 \
                 UTC), 2d 10h old, older than --max-age 1d 2h; 1 restore point",
                "CRITICAL: rbd/never: no backup: no restore point in /b/rbd/never",
            ]
        );

        // Without an age asked about, only existence counts.
        let judged = judge(&coverage, &StatusOptions::default(), now());
        assert_eq!(judged.health, Health::Critical);
        let coverage = Coverage {
            images: coverage.images[..3].to_vec(),
            unreadable: vec![],
        };
        assert_eq!(
            judge(&coverage, &StatusOptions::default(), now()).health,
            Health::Ok
        );
    }

    #[test]
    fn unreadable_is_unknown_unless_something_is_critical() {
        let mut broken = image("vm", &["BACKUPUTC20261126T020000"]);
        broken.error = Some("Permission denied".into());
        let problem = SectionProblem {
            pool: "ssd".into(),
            destination: "/mnt/backup".into(),
            error: "destination directory /mnt/backup of [ssd] does not exist".into(),
        };
        let coverage = Coverage {
            images: vec![image("ok", &["BACKUPUTC20261126T020000"])],
            unreadable: vec![problem.clone()],
        };
        let options = StatusOptions::default();
        let judged = judge(&coverage, &options, now());
        assert_eq!(judged.health, Health::Unknown);
        assert!(text(&judged, &options, now()).ends_with(
            "UNKNOWN: [ssd]: destination directory /mnt/backup of [ssd] does not exist\n"
        ));
        let coverage = Coverage {
            images: vec![broken, image("never", &[])],
            unreadable: vec![problem],
        };
        let judged = judge(&coverage, &options, now());
        assert_eq!(judged.images[0].0, Health::Unknown);
        assert_eq!(judged.health, Health::Critical);
        let empty = Coverage::default();
        assert_eq!(judge(&empty, &options, now()).health, Health::Unknown);
    }

    #[test]
    fn unusable_files_warn_and_json_names_every_field() {
        let mut damaged = image("vm", &["BACKUPUTC20261126T020000"]);
        damaged.unusable = 2;
        let coverage = Coverage {
            images: vec![damaged, image("never", &[])],
            unreadable: vec![],
        };
        let options = StatusOptions {
            max_age: hours(26),
            ..StatusOptions::default()
        };
        let judged = judge(&coverage, &options, now());
        assert_eq!(judged.images[0].0, Health::Warning);
        let value = serde_json::to_value(document(&judged, &options, now())).unwrap();
        assert_eq!(value["kind"], "status");
        assert_eq!(value["status"], "critical");
        assert_eq!(value["max_age_seconds"], 93_600);
        assert_eq!(value["warn_age_seconds"], serde_json::Value::Null);
        let vm = &value["images"][0];
        assert_eq!(vm["status"], "warning");
        assert_eq!(vm["reason"], "unusable_files");
        assert_eq!(vm["unusable_files"], 2);
        assert_eq!(vm["newest"]["snapshot"], "BACKUPUTC20261126T020000");
        assert_eq!(vm["newest"]["time"], "2026-11-26T02:00:00Z");
        assert_eq!(vm["age_seconds"], 36_000);
        let never = &value["images"][1];
        assert_eq!(never["backed_up"], false);
        assert_eq!(never["reason"], "no_backup");
        assert_eq!(never["newest"], serde_json::Value::Null);
        assert_eq!(never["age_seconds"], serde_json::Value::Null);
        crate::commands::schema_check::assert_valid("status", &value);
        let mut wrong = value;
        wrong["images"][0]["status"] = "fine".into();
        assert!(!crate::commands::schema_check::accepts("status", &wrong));
    }
}

//! The machine-readable record of what a backup run did, and the envelope every JSON document of
//! the tool shares.
//!
//! One vocabulary for every JSON output (`--json` of a run, `list`, `verify`, `restore`,
//! `status`, the last-run record): images are named by `pool` and `image`, files by `file` (the
//! name in the image's folder), snapshots by `snapshot`, instants are RFC 3339 UTC strings, sizes
//! are `bytes`, durations `duration_seconds`. Every document starts with the same [`Envelope`],
//! so a consumer can tell which tool, which version and which schema wrote it, and when.
//!
//! A run fills a [`RunReport`] as it goes; `--json` prints it instead of the text, and every real
//! run also leaves it in each destination it touched ([`LAST_RUN_FILE`](crate::folder::naming::LAST_RUN_FILE)), restricted to that
//! destination's images, so monitoring can read the outcome without parsing logs.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Bumped whenever a field changes meaning or goes away; new fields do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// The fields every JSON document of the tool starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u32,
    /// Always `cephbackup`.
    pub tool: String,
    /// The tool's version (and git revision where known).
    pub version: String,
    /// What the document is: `run`, `list`, `verify`, `restore` or `status`.
    pub kind: String,
    /// When the document was made, RFC 3339 UTC.
    pub generated_at: String,
}

impl Envelope {
    pub fn new(kind: &str, now: DateTime<Utc>) -> Envelope {
        Envelope {
            schema_version: SCHEMA_VERSION,
            tool: env!("CARGO_PKG_NAME").to_string(),
            version: version().to_string(),
            kind: kind.to_string(),
            generated_at: rfc3339(now),
        }
    }
}

/// The version shown by `--version` and written into every document: the package version and,
/// when built from a git checkout, the revision (`0.1.0 (git 1a2b3c4)`); see build.rs.
pub fn version() -> &'static str {
    env!("CEPHBACKUP_VERSION")
}

/// An instant as every document writes it: RFC 3339, UTC, whole seconds, `Z`.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What one backup run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub envelope: Envelope,
    /// When the run started, RFC 3339 UTC.
    pub started_at: String,
    pub duration_seconds: f64,
    /// True when every image was backed up (or, in check mode, would have been).
    pub success: bool,
    /// True when no section really ran: nothing was changed.
    pub check_mode: bool,
    /// The signal that stopped the run early (`SIGTERM`, `SIGINT`).
    pub interrupted: Option<String>,
    pub bytes_written: u64,
    pub images: Vec<ImageReport>,
    /// Sections that failed as a whole before any image (an unlistable pool, a refused
    /// destination): `pool` and the error.
    pub section_failures: Vec<SectionFailureReport>,
}

impl RunReport {
    /// True when every image listed was backed up (or checked), no section failed and no signal
    /// stopped the run: what `success` says of the images and sections given.
    pub fn all_succeeded(
        images: &[ImageReport],
        section_failures: &[SectionFailureReport],
        interrupted: Option<&str>,
    ) -> bool {
        interrupted.is_none()
            && section_failures.is_empty()
            && images.iter().all(|image| {
                matches!(
                    image.status,
                    ImageStatus::Ok | ImageStatus::Checked | ImageStatus::Elsewhere
                )
            })
    }

    /// The document as one destination's last-run record: only the images and section failures
    /// of sections writing to `destination` (as configured), with `success` and `bytes_written`
    /// recomputed for them; every other field as it is.
    pub fn restricted_to(&self, destination: &str) -> RunReport {
        let images: Vec<ImageReport> = self
            .images
            .iter()
            .filter(|image| image.destination == destination)
            .cloned()
            .collect();
        let section_failures: Vec<SectionFailureReport> = self
            .section_failures
            .iter()
            .filter(|failure| failure.destination == destination)
            .cloned()
            .collect();
        RunReport {
            success: RunReport::all_succeeded(
                &images,
                &section_failures,
                self.interrupted.as_deref(),
            ),
            bytes_written: images.iter().map(|image| image.bytes_written).sum(),
            images,
            section_failures,
            ..self.clone()
        }
    }
}

/// What happened to one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageReport {
    pub pool: String,
    pub image: String,
    /// The destination folder of the image's section, as configured.
    pub destination: String,
    /// `full` or `incremental`.
    pub mode: String,
    pub action: Action,
    pub status: ImageStatus,
    pub files_written: Vec<FileReport>,
    pub files_removed: Vec<FileReport>,
    pub snapshots_created: Vec<String>,
    pub snapshots_removed: Vec<String>,
    /// The tool's snapshots of the image left in the cluster after the run (what it listed, plus
    /// what it created, less what it removed); `None` when they could not be listed.
    pub snapshots_kept: Option<u64>,
    pub bytes_written: u64,
    pub duration_seconds: f64,
    /// The error, one line, when the image failed.
    pub error: Option<String>,
    /// With coordination: the host that backed the image up (this one, or with status
    /// `elsewhere` the other host that did or does).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<String>,
}

/// The main thing a run did to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A full backup was exported.
    Full,
    /// A diff was exported (incremental mode, window not sliding).
    Diff,
    /// The window slid: a new base and a diff.
    Slide,
    /// Nothing needed writing.
    Skipped,
    /// The image failed before or while writing.
    Failed,
}

/// How an image's run ended; in JSON (and the metrics' `status` label) by its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    Ok,
    Failed,
    /// Another run held the image.
    Busy,
    /// Never tried: its cluster stopped answering, or its section's check failed.
    NotAttempted,
    /// Check mode: what would be done was shown, nothing was changed.
    Checked,
    /// With coordination: another host backed it up in this round, or holds its lease.
    Elsewhere,
}

impl ImageStatus {
    /// The name the JSON documents and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Ok => "ok",
            ImageStatus::Failed => "failed",
            ImageStatus::Busy => "busy",
            ImageStatus::NotAttempted => "not_attempted",
            ImageStatus::Checked => "checked",
            ImageStatus::Elsewhere => "elsewhere",
        }
    }
}

impl fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious a reported problem is, wherever problems are reported (the configuration's,
/// verify's): an error stops what it concerns from being used; a warning changes nothing, it is
/// shown and the work goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// A file written or removed, with its size when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    pub file: String,
    pub bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionFailureReport {
    pub pool: String,
    pub destination: String,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn image_statuses_are_written_by_their_names() {
        for status in [
            ImageStatus::Ok,
            ImageStatus::Failed,
            ImageStatus::Busy,
            ImageStatus::NotAttempted,
            ImageStatus::Checked,
            ImageStatus::Elsewhere,
        ] {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
            assert_eq!(serde_json::from_value::<ImageStatus>(json).unwrap(), status);
        }
        assert_eq!(ImageStatus::NotAttempted.as_str(), "not_attempted");
    }

    #[test]
    fn the_envelope_opens_every_document_with_the_same_fields() {
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 3, 0, 5).unwrap();
        let value = serde_json::to_value(Envelope::new("run", at)).unwrap();
        assert_eq!(value["schema_version"], SCHEMA_VERSION);
        assert_eq!(value["tool"], "cephbackup");
        assert_eq!(value["kind"], "run");
        assert_eq!(value["generated_at"], "2026-11-26T03:00:05Z");
    }
}

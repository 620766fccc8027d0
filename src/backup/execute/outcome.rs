//! What a run achieved: the outcome the command turns into an exit status and a summary, and the
//! per-image and per-section results it is assembled from.

use super::*;

/// What a run achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub images_done: usize,
    /// Images another host backed up in this round (coordination).
    pub elsewhere: usize,
    /// `pool/image` (or `pool` when the pool could not be listed) and the error, one line.
    pub failures: Vec<(String, String)>,
    /// How many of the failures were images another run was using.
    pub busy: usize,
    pub bytes_written: u64,
    pub checked_only: bool,
    /// Things that went wrong without costing a backup (a snapshot that could not be removed).
    pub warnings: usize,
    /// The signal that stopped the run early.
    pub interrupted: Option<i32>,
    /// How long the run took.
    pub duration: Duration,
    /// The same, image by image, for `--json` and the last-run record.
    pub report: RunReport,
}

impl RunOutcome {
    pub(super) fn new(started_at: DateTime<Utc>) -> RunOutcome {
        RunOutcome {
            images_done: 0,
            elsewhere: 0,
            failures: Vec::new(),
            busy: 0,
            bytes_written: 0,
            checked_only: false,
            warnings: 0,
            interrupted: None,
            duration: Duration::ZERO,
            report: RunReport {
                envelope: Envelope::new("run", started_at),
                started_at: report::rfc3339(started_at),
                duration_seconds: 0.0,
                success: false,
                check_mode: false,
                interrupted: None,
                bytes_written: 0,
                images: Vec::new(),
                section_failures: Vec::new(),
            },
        }
    }

    pub fn succeeded(&self) -> bool {
        self.failures.is_empty()
    }

    /// True when the only failures were images busy in another run.
    pub fn only_busy(&self) -> bool {
        self.busy > 0 && self.busy == self.failures.len()
    }

    /// The closing line of a run.
    pub fn summary(&self) -> String {
        // A check-mode run backed nothing up: it says what a real run would have.
        let done = if self.checked_only {
            "would be backed up"
        } else {
            "backed up"
        };
        let mut line = format!(
            "Summary: {} image(s) {done}, {} failed, ",
            self.images_done,
            self.failures.len(),
        );
        if self.elsewhere > 0 {
            let _ = write!(line, "{} by other hosts, ", self.elsewhere);
        }
        let _ = write!(
            line,
            "{} written in {}",
            human_bytes(self.bytes_written),
            human_duration(self.duration)
        );
        if self.warnings > 0 {
            let _ = write!(line, ", {} warning(s)", self.warnings);
        }
        if self.checked_only {
            line.push_str(" (check mode: nothing was changed)");
        }
        if let Some(signal) = self.interrupted {
            let _ = write!(
                line,
                " (interrupted by {}: the remaining images were skipped)",
                interrupt::name(signal)
            );
        }
        for (what, _) in &self.failures {
            let _ = write!(line, "\nFailed: {}", escaped(what));
        }
        line
    }

    /// Counts one image's turn.
    pub(super) fn absorb(&mut self, done: ImageDone) {
        let label = format!("{}/{}", done.report.pool, done.report.image);
        match done.failure {
            Some(error) => {
                if done.busy {
                    self.busy += 1;
                }
                self.failures.push((label, error));
            }
            None if done.report.status == ImageStatus::Elsewhere => self.elsewhere += 1,
            None => self.images_done += 1,
        }
        self.bytes_written += done.report.bytes_written;
        self.warnings += done.warnings;
        self.report.images.push(done.report);
    }

    /// Counts a section that could not start, and the images it therefore never tried.
    pub(super) fn absorb_section(&mut self, failed: SectionFailed) {
        self.failures.push((failed.label, failed.error.clone()));
        self.report.section_failures.push(SectionFailureReport {
            pool: failed.pool,
            destination: failed.destination,
            error: failed.error,
        });
        for image in failed.not_attempted {
            self.absorb(image);
        }
    }

    /// Completes the report once the run is over.
    pub(super) fn finish(&mut self, started: Instant, now: DateTime<Utc>) {
        self.duration = started.elapsed();
        let succeeded = self.succeeded();
        let report = &mut self.report;
        report.envelope = Envelope::new("run", now);
        report.duration_seconds = seconds(self.duration);
        report.check_mode = self.checked_only;
        report.interrupted = self.interrupted.map(|s| interrupt::name(s).to_string());
        report.bytes_written = self.bytes_written;
        report.success = succeeded
            && RunReport::all_succeeded(
                &report.images,
                &report.section_failures,
                report.interrupted.as_deref(),
            );
    }
}

/// A duration in seconds with millisecond precision, as the report writes it.
pub(super) fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A duration for people: `0.4 s`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub(super) fn human_duration(duration: Duration) -> String {
    let whole = duration.as_secs();
    if whole < 60 {
        format!("{:.1} s", duration.as_secs_f64())
    } else if whole < 3600 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{} h {:02} min", whole / 3600, whole % 3600 / 60)
    }
}

/// Why a section could not start, and whom to blame.
pub(super) struct SectionFailure {
    /// How the error line names it (`pool rbd`, or `rbd/vm` when one image's check failed).
    pub(super) shown: String,
    /// How the summary lists it.
    pub(super) label: String,
    pub(super) error: anyhow::Error,
    /// Images never tried because the cluster stopped answering.
    pub(super) not_attempted: Vec<String>,
}

/// A section that could not start, reported: what the outcome counts of it.
pub(super) struct SectionFailed {
    pub(super) label: String,
    pub(super) pool: String,
    pub(super) destination: String,
    pub(super) error: String,
    pub(super) not_attempted: Vec<ImageDone>,
}

/// What one image's turn produced.
pub(super) struct ImageDone {
    pub(super) report: ImageReport,
    /// The error, one line, when the image failed.
    pub(super) failure: Option<String>,
    /// The image was busy in another run.
    pub(super) busy: bool,
    pub(super) warnings: usize,
}

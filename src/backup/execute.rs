//! Carries out the backup described by a configuration: section by section, image by image.
//!
//! For each image it takes the image's lock, reads what exists (snapshots, folder entries, the
//! image record), asks the planner what to do, and performs the steps. Check mode is the same
//! executor talking to twins: every step is announced and called the same way, and the twins
//! check mode is given ([`CheckCluster`], [`CheckFolder`], [`CheckNotes`], picked per section in
//! [`Section::new`], [`Section::door`] and [`Section::notes`]) take each change and make none,
//! saying so ([`Change::Skipped`], a door that stages no file), so a dry run shows exactly what
//! a real run would do and changes nothing. Reading (listing snapshots and files, proving a file
//! it would reuse) happens in both modes. The few other things check mode decides (a shared
//! lock, asking the snapshot limit up front, the "checked" status, no last-run file) ask
//! [`Section::checking`].
//!
//! Before any section starts, every destination is decided once ([`destinations`], with the rules
//! of [`crate::backup::destination`]): from its records and from this host's memory of it
//! ([`crate::state`]), a destination that did not mount is refused, and one whose files were
//! shipped continues its chains. As each file completes, the image record and the host's memory
//! of the image are updated together. One image failing never stops the others; its error is
//! reported on stderr and counted. A cluster that does not answer at all (or refuses our login)
//! fails the remaining images on it at once instead of costing one timeout each. If a run fails
//! before the snapshot it created is backed by a complete file, that snapshot is removed again;
//! if the run dies instead, or the cluster stopped answering (removing it would cost one more
//! timeout), the image record lets the next run remove it.
//!
//! Everything it asks of the cluster goes through [`ClusterOps`]: `rbd` in a real run, an
//! in-memory cluster in this module's tests (`execute/tests.rs`).
//!
//! stdout carries the original tool's messages, so existing log scraping keeps working.
//!
//! As it goes, the run fills a [`RunReport`] (what each image's run did: the action, the files
//! and snapshots written and removed, sizes, durations, the error), returned in the [`RunOutcome`];
//! a real run also leaves it, per destination, as that destination's last-run record
//! ([`LAST_RUN_FILE`]). With `parallel images` above 1, images run at once (see
//! [`parallel`]); everything shared between them (the clusters found unreachable, the cluster
//! handles) is thread-safe.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::backup::plan::{plan_image, Found, Plan, Settings, SnapshotExists, Step};
use crate::backup::snap_limit;
use crate::cluster::check::CheckCluster;
use crate::cluster::process::{CommandError, FailureKind};
use crate::cluster::rbd::{spec, Change, Cluster, ClusterOps, Op, Rbd};
use crate::config::{BackupMode, Config, ImageSelection, PoolJob};
use crate::folder::door::{CheckFolder, Door, LocalFolder, Sharing};
use crate::folder::format::archive::MAX_SPARSE_EXTENTS;
use crate::folder::format::write::{self, DataOfExtents, Member, SparseMapBuilder};
use crate::folder::naming::{
    self, checksum_name, BackupFile, Compression, Content, SnapName, LAST_RUN_FILE,
};
use crate::folder::read;
use crate::folder::record::{self, Blocked, Completed, ImageRecord};
use crate::folder::slide;
use crate::folder::untrusted;
use crate::outln;
use crate::output::{escaped, human_bytes};
use crate::report::{
    self, Action, Envelope, FileReport, ImageReport, ImageStatus, RunReport, SectionFailureReport,
};
use crate::state::{CheckNotes, HostState, Notes};
use crate::{interrupt, lock};

/// How many times an image's run waits for the next second when its snapshot name is taken: once
/// is enough with a clock that moves; a clock that stands still must not keep the run forever.
const SAME_SECOND_TRIES: u32 = 3;

/// Whether steps are carried out or only shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    Check,
}

/// Options that apply to the whole run.
pub struct RunOptions<'a> {
    /// Force check mode for every section, whatever the file says.
    pub force_check: bool,
    /// The clock; read once per image, like the original.
    pub now: &'a (dyn Fn() -> DateTime<Utc> + Sync),
    /// How long to wait for another run to release an image.
    pub wait: Duration,
    /// Where the image locks live.
    pub lock_dir: PathBuf,
    /// The host's state folder ([`crate::state`]).
    pub state_dir: PathBuf,
    /// What a section's cluster calls go to; `None` runs `rbd` against the section's cluster.
    /// Tests put a fake cluster here.
    pub cluster: Option<&'a ClusterFactory>,
}

/// Makes the [`ClusterOps`] a section talks to.
pub type ClusterFactory = dyn Fn(&PoolJob) -> Box<dyn ClusterOps> + Sync;

/// What a run achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub images_done: usize,
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
    fn new(started_at: DateTime<Utc>) -> RunOutcome {
        RunOutcome {
            images_done: 0,
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
        let mut line = format!(
            "Summary: {} image(s) backed up, {} failed, {} written in {}",
            self.images_done,
            self.failures.len(),
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
    fn absorb(&mut self, done: ImageDone) {
        let label = format!("{}/{}", done.report.pool, done.report.image);
        match done.failure {
            Some(error) => {
                if done.busy {
                    self.busy += 1;
                }
                self.failures.push((label, error));
            }
            None => self.images_done += 1,
        }
        self.bytes_written += done.report.bytes_written;
        self.warnings += done.warnings;
        self.report.images.push(done.report);
    }

    /// Counts a section that could not start, and the images it therefore never tried.
    fn absorb_section(&mut self, failed: SectionFailed) {
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
    fn finish(&mut self, started: Instant, now: DateTime<Utc>) {
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
fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A duration for people: `0.4 s`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
fn human_duration(duration: Duration) -> String {
    let whole = duration.as_secs();
    if whole < 60 {
        format!("{:.1} s", duration.as_secs_f64())
    } else if whole < 3600 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{} h {:02} min", whole / 3600, whole % 3600 / 60)
    }
}

fn mode_of(job: &PoolJob, options: &RunOptions) -> Mode {
    if options.force_check || job.check_mode {
        Mode::Check
    } else {
        Mode::Run
    }
}

/// True when Ceph refused this run's snapshot because the image reached its snapshot limit.
fn at_snapshot_limit(result: &Result<()>) -> bool {
    let Err(err) = result else {
        return false;
    };
    CommandError::find(err).map(CommandError::kind) == Some(FailureKind::QuotaExceeded)
}

/// True when `err` comes from a Ceph call that did not get an answer in time.
fn timed_out(err: &anyhow::Error) -> bool {
    CommandError::find(err).map(CommandError::kind) == Some(FailureKind::TimedOut)
}

/// True when `err` comes from a write that found no space left on its filesystem.
fn disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let io = cause.downcast_ref::<io::Error>();
        // An I/O error may carry another one (a stream passing on its writer's failure).
        let inner = io
            .and_then(io::Error::get_ref)
            .and_then(|e| e.downcast_ref::<io::Error>());
        [io, inner]
            .into_iter()
            .flatten()
            .any(|e| e.raw_os_error() == Some(libc::ENOSPC))
    })
}

/// True when `err` says no call to that cluster can work in this run: it did not answer in
/// time, or it refused our login.
fn cluster_failed(err: &anyhow::Error) -> bool {
    matches!(
        CommandError::find(err).map(CommandError::kind),
        Some(FailureKind::TimedOut | FailureKind::Unauthenticated)
    )
}

/// Clusters that did not answer at all in this run, with the error that showed it. Shared by the
/// images running at once.
#[derive(Default)]
struct Unreachable(Mutex<Vec<(Cluster, String)>>);

impl Unreachable {
    fn list(&self) -> std::sync::MutexGuard<'_, Vec<(Cluster, String)>> {
        // A panic elsewhere cannot leave the list half changed: pushes are whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reason(&self, cluster: &Cluster) -> Option<String> {
        self.list()
            .iter()
            .find(|(c, _)| c == cluster)
            .map(|(_, why)| why.clone())
    }

    /// Remembers `cluster` as unusable when `err` says it did not answer or refused our login;
    /// true if so.
    fn note(&self, cluster: &Cluster, err: &anyhow::Error) -> bool {
        if !cluster_failed(err) {
            return false;
        }
        let what = if timed_out(err) {
            "did not answer"
        } else {
            "refused the login"
        };
        let mut list = self.list();
        if !list.iter().any(|(c, _)| c == cluster) {
            list.push((
                cluster.clone(),
                format!(
                    "not attempted: the cluster of {} {what} earlier in this run",
                    cluster.conf.display()
                ),
            ));
        }
        true
    }
}

/// Backs up every section of `config`: in file order, image by image, or with `parallel images`
/// above 1, that many images at once (see [`parallel`]). Every failure is per image or per pool
/// and recorded in the outcome. A real run then leaves the report in each destination it used.
pub fn run(config: &Config, options: &RunOptions) -> RunOutcome {
    let started = Instant::now();
    let mut outcome = RunOutcome::new((options.now)());
    outcome.checked_only = !config.pools.is_empty();
    let unreachable = Unreachable::default();
    let sections: Vec<Section> = config
        .pools
        .iter()
        .map(|job| {
            Section::new(
                job,
                mode_of(job, options),
                options,
                &unreachable,
                &config.path,
            )
        })
        .collect();
    outcome.warnings += destinations::prepare(&sections, &options.state_dir);
    if config.parallel_images > 1 {
        parallel::run(&sections, config.parallel_images, &mut outcome);
    } else {
        for section in &sections {
            if interrupt::received().is_some() {
                break;
            }
            outcome.checked_only &= section.checking();
            section.run(&mut outcome);
        }
    }
    outcome.interrupted = interrupt::received();
    if outcome.interrupted.is_none() {
        if let Some(why) = nothing_backed_up(config, options.force_check, &outcome.report) {
            // A warning, so that `-q` shows it: cron would otherwise mail nothing at all.
            warn!("{why}");
            outcome.warnings += 1;
        }
    }
    outcome.finish(started, (options.now)());
    write_last_run_records(&sections, &outcome.report);
    outcome
}

/// Why a run that went as configured backed nothing up, when the configuration is the reason:
/// no section at all, every section in check mode by its `check mode` key (not by `--check`,
/// which was asked for), or no image at all in the sections. Pure, for the tests.
pub fn nothing_backed_up(config: &Config, force_check: bool, report: &RunReport) -> Option<String> {
    let file = config.path.display();
    if config.pools.is_empty() {
        return Some(format!(
            "{file} names no pool section: nothing was backed up"
        ));
    }
    if !force_check && config.pools.iter().all(|job| job.check_mode) {
        return Some(format!(
            "every section of {file} is in check mode (check mode = yes): nothing was backed up"
        ));
    }
    if report.images.is_empty() && report.section_failures.is_empty() {
        let pools: Vec<&str> = config.pools.iter().map(|job| job.pool.as_str()).collect();
        return Some(format!(
            "no image to back up in {} ({file}): nothing was backed up",
            pools.join(", ")
        ));
    }
    None
}

/// Leaves the report, restricted to each destination's images, in every destination a real
/// section used (check mode changes nothing, so it writes nothing either). A destination that
/// cannot take it costs a warning on stderr, never the run.
fn write_last_run_records(sections: &[Section], report: &RunReport) {
    let mut written: Vec<&Path> = Vec::new();
    for section in sections.iter().filter(|s| !s.checking()) {
        let job = section.job;
        if written.contains(&job.destination.as_path()) {
            continue;
        }
        // Only a destination whose check passed: one that did not mount (an empty mount point)
        // must stay exactly as it is, or the next run could take it for a used destination.
        if !section.started.load(Ordering::SeqCst) {
            continue;
        }
        written.push(&job.destination);
        let restricted = report.restricted_to(&job.destination_text);
        if let Err(err) = write_last_run(&job.destination, &restricted) {
            warn!("{err:#}");
        }
    }
}

/// Writes [`LAST_RUN_FILE`] in `destination`: complete and synced before it takes the
/// final name, which it takes by rename (so a symlink planted there is replaced, never followed),
/// readable by all (monitoring runs as another user).
fn write_last_run(destination: &Path, report: &RunReport) -> Result<()> {
    let mut text = crate::output::json(report).context("cannot render the run report")?;
    text.push('\n');
    LocalFolder::at(destination).put(LAST_RUN_FILE, text.as_bytes(), Sharing::Everyone)
}

/// Why a section could not start, and whom to blame.
struct SectionFailure {
    /// How the error line names it (`pool rbd`, or `rbd/vm` when one image's check failed).
    shown: String,
    /// How the summary lists it.
    label: String,
    error: anyhow::Error,
    /// Images never tried because the cluster stopped answering.
    not_attempted: Vec<String>,
}

/// A section that could not start, reported: what the outcome counts of it.
struct SectionFailed {
    label: String,
    pool: String,
    destination: String,
    error: String,
    not_attempted: Vec<ImageDone>,
}

/// What one image's turn produced.
struct ImageDone {
    report: ImageReport,
    /// The error, one line, when the image failed.
    failure: Option<String>,
    /// The image was busy in another run.
    busy: bool,
    warnings: usize,
}

struct Section<'a> {
    job: &'a PoolJob,
    mode: Mode,
    rbd: Box<dyn ClusterOps>,
    cluster: Cluster,
    settings: Settings,
    options: &'a RunOptions<'a>,
    unreachable: &'a Unreachable,
    config_path: &'a Path,
    /// Its destination passed the check and its images were listed.
    started: AtomicBool,
    /// How its destination is used this run, shared with the other sections using it; set
    /// before any section runs.
    destination: OnceLock<Arc<DestinationUse>>,
}

impl<'a> Section<'a> {
    fn new(
        job: &'a PoolJob,
        mode: Mode,
        options: &'a RunOptions,
        unreachable: &'a Unreachable,
        config_path: &'a Path,
    ) -> Section<'a> {
        let cluster = job.cluster();
        let real: Box<dyn ClusterOps> = match options.cluster {
            Some(make) => make(job),
            None => Box::new(Rbd::new(cluster.clone())),
        };
        // The one place the mode picks how the cluster is changed: check mode's twin takes
        // each change and makes none.
        let rbd: Box<dyn ClusterOps> = match mode {
            Mode::Run => real,
            Mode::Check => Box::new(CheckCluster::new(real)),
        };
        Section {
            job,
            mode,
            rbd,
            cluster,
            settings: Settings::of(job),
            options,
            unreachable,
            config_path,
            started: AtomicBool::new(false),
            destination: OnceLock::new(),
        }
    }

    /// The door into `image`'s folder: the real one, or in check mode its twin that changes
    /// nothing. The one place the mode picks how the destination is changed.
    fn door(&self, image: &str) -> Box<dyn Door> {
        let folder = LocalFolder::image(&self.job.destination, &self.job.pool, image)
            .with_access(self.job.file_access());
        match self.mode {
            Mode::Run => Box::new(folder),
            Mode::Check => Box::new(CheckFolder::new(folder)),
        }
    }

    /// Whether this section only checks. The twins above carry out what that means for each
    /// change; this answers the few decisions that are not a change (the lock, the snapshot
    /// limit, the status and summary lines, the last-run file).
    fn checking(&self) -> bool {
        self.mode == Mode::Check
    }

    /// Where an image's completed snapshot is noted: the host's state, or in check mode its
    /// twin that keeps nothing (the state is shared with the run's real sections).
    fn notes<'h>(&self, state: &'h HostState) -> &'h dyn Notes {
        match self.mode {
            Mode::Run => state,
            Mode::Check => &CheckNotes,
        }
    }

    /// The whole section, image after image.
    fn run(&self, outcome: &mut RunOutcome) {
        self.print_header();
        let images = match self.start() {
            Ok(images) => images,
            Err(failed) => return outcome.absorb_section(failed),
        };
        for image in &images {
            if interrupt::received().is_some() {
                break;
            }
            outcome.absorb(self.back_up(image));
        }
    }

    fn print_header(&self) {
        outln!("Starting backup for pool {}", self.job.pool);
        outln!(
            "{}",
            match self.job.mode {
                BackupMode::Full => "Full ceph backup",
                BackupMode::Incremental => "Incremental ceph backup",
            }
        );
    }

    /// Checks the destination and lists the images (and shows them); a failure is reported on
    /// stderr here.
    fn start(&self) -> Result<Vec<String>, SectionFailed> {
        let pool = &self.job.pool;
        let failure = match self.prepare() {
            Ok(images) => {
                self.started.store(true, Ordering::SeqCst);
                self.print_overview(&images);
                return Ok(images);
            }
            Err(failure) => failure,
        };
        let err = self.explain(&failure.error);
        eprintln!("error: {}: {err}", escaped(&failure.shown));
        let why = self
            .unreachable
            .reason(&self.cluster)
            .unwrap_or_else(|| "not attempted: the check of the destination failed".to_string());
        Err(SectionFailed {
            label: failure.label,
            pool: pool.clone(),
            destination: self.job.destination_text.clone(),
            error: err,
            not_attempted: failure
                .not_attempted
                .iter()
                .map(|image| self.not_attempted(image, why.clone()))
                .collect(),
        })
    }

    /// One image's turn: its backup, or at once a failure when its cluster stopped answering.
    fn back_up(&self, image: &str) -> ImageDone {
        if let Some(why) = self.unreachable.reason(&self.cluster) {
            return self.not_attempted(image, why);
        }
        let started = Instant::now();
        let mut image_run = ImageRun::new(self, image);
        let result = image_run.run();
        image_run.done(result, started)
    }

    fn not_attempted(&self, image: &str, why: String) -> ImageDone {
        let mut report = self.image_report(image);
        report.action = Action::Failed;
        report.status = ImageStatus::NotAttempted;
        report.error = Some(why.clone());
        ImageDone {
            report,
            failure: Some(why),
            busy: false,
            warnings: 0,
        }
    }

    /// An image's report before anything happened to it.
    fn image_report(&self, image: &str) -> ImageReport {
        ImageReport {
            pool: self.job.pool.clone(),
            image: image.to_string(),
            destination: self.job.destination_text.clone(),
            mode: match self.job.mode {
                BackupMode::Full => "full",
                BackupMode::Incremental => "incremental",
            }
            .into(),
            action: Action::Skipped,
            status: ImageStatus::Ok,
            files_written: Vec::new(),
            files_removed: Vec::new(),
            snapshots_created: Vec::new(),
            snapshots_removed: Vec::new(),
            snapshots_kept: None,
            bytes_written: 0,
            duration_seconds: 0.0,
            error: None,
        }
    }
    /// Checks the destination and lists the images; an error fails the whole section.
    fn prepare(&self) -> Result<Vec<String>, SectionFailure> {
        let pool = &self.job.pool;
        let whole = |error: anyhow::Error| SectionFailure {
            shown: format!("pool {pool}"),
            label: pool.clone(),
            error,
            not_attempted: Vec::new(),
        };
        let Some(destination) = self.destination.get() else {
            return Err(whole(anyhow::anyhow!(
                "internal error: destination {} was not decided",
                self.job.destination.display()
            )));
        };
        match &destination.decision {
            Ok(_) => {}
            // The section whose image the cluster did not answer for fails there, as its own
            // image listing would have; the others sharing the destination as the cluster's.
            Err(Refused::Unanswered {
                pool: failed_pool,
                image,
                error,
                not_attempted,
            }) if failed_pool == pool => {
                return Err(SectionFailure {
                    shown: format!("{pool}/{image}"),
                    label: format!("{pool}/{image}"),
                    error: anyhow::anyhow!("{error}"),
                    not_attempted: not_attempted.clone(),
                })
            }
            Err(Refused::Unanswered { error, .. }) => {
                let why = self.unreachable.reason(&self.cluster);
                return Err(whole(anyhow::anyhow!("{}", why.as_ref().unwrap_or(error))));
            }
            Err(Refused::Line(line)) => return Err(whole(anyhow::anyhow!("{line}"))),
        }
        if let Some(why) = self.unreachable.reason(&self.cluster) {
            return Err(whole(anyhow::anyhow!("{why}")));
        }
        let images = self.images().map_err(whole)?;
        destination
            .record_once(self.mode, (self.options.now)(), self.job.file_access())
            .map_err(whole)?;
        Ok(images)
    }

    /// The error as one line, with a hint when the cluster did not answer in time.
    fn explain(&self, err: &anyhow::Error) -> String {
        let text = format!("{err:#}");
        if !self.unreachable.note(&self.cluster, err) {
            return text;
        }
        if !timed_out(err) {
            return format!("{text} (the remaining images on this cluster are not attempted)");
        }
        format!(
            "{text} (the cluster of {} did not answer within {} s; see `ceph timeout`; the \
             remaining images on it are not attempted)",
            self.job.ceph_config.display(),
            self.job.ceph_timeout
        )
    }

    fn images(&self) -> Result<Vec<String>> {
        match &self.job.images {
            ImageSelection::Named(names) => Ok(names.clone()),
            ImageSelection::All => self
                .rbd
                .list_images(&self.job.pool)
                .with_context(|| format!("cannot list the images of pool {}", self.job.pool)),
        }
    }

    fn print_overview(&self, images: &[String]) {
        let py_bool = |b: bool| if b { "True" } else { "False" };
        outln!("Images to backup:");
        for image in images {
            outln!("\t{}", escaped(&format!("{}/{image}", self.job.pool)));
        }
        outln!("Backup folder: {}", self.job.destination_text);
        outln!("Compression: {}", compression_shown(self.job.compress));
        outln!("Check mode: {}", py_bool(self.checking()));
        if self.job.mode == BackupMode::Full {
            outln!(
                "Taking full backup of images: {}",
                escaped(&images.join(", "))
            );
            if self.checking() {
                outln!(
                    "Running in check mode: backup commands will just be printed and not executed"
                );
            }
        }
    }
}

/// How the overview line shows `compress`: the original's Python bools, and zstd by name.
fn compression_shown(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "False",
        Compression::Gzip => "True",
        Compression::Zstd => "zstd",
    }
}

struct ImageRun<'s> {
    section: &'s Section<'s>,
    image: &'s str,
    /// The image's folder in the destination: every read and change of it goes through here.
    dir: Box<dyn Door>,
    record: ImageRecord,
    /// The snapshot this run created, until a complete file backs it.
    unbacked_snapshot: Option<SnapName>,
    bytes_written: u64,
    warnings: usize,
    /// The sizes of the folder's files when the plan was made.
    sizes: HashMap<String, u64>,
    /// What the run did, for the report.
    done: Done,
    /// A non-file sits at the image record's name: the record is not written (the host's
    /// memory still is).
    record_blocked: bool,
    /// The newest completed snapshot the host's memory holds for the image, as last read or
    /// written.
    remembered: Option<Completed>,
}

/// What an image's run did (or, in check mode, would do), as the report tells it.
#[derive(Default)]
struct Done {
    files_written: Vec<FileReport>,
    files_removed: Vec<FileReport>,
    snapshots_created: Vec<String>,
    snapshots_removed: Vec<String>,
    /// A full backup, a diff was exported (or shown, in check mode).
    full: bool,
    diff: bool,
    /// The tool's snapshots of the image when the run listed them.
    listed_owned: Option<Vec<String>>,
}

impl<'s> ImageRun<'s> {
    fn new(section: &'s Section<'s>, image: &'s str) -> ImageRun<'s> {
        ImageRun {
            section,
            image,
            dir: section.door(image),
            record: ImageRecord::default(),
            unbacked_snapshot: None,
            bytes_written: 0,
            warnings: 0,
            sizes: HashMap::new(),
            done: Done::default(),
            record_blocked: false,
            remembered: None,
        }
    }

    /// The image's report and what the outcome counts, once its run is over; a failure is
    /// reported on stderr here.
    fn done(self, result: Result<()>, started: Instant) -> ImageDone {
        let section = self.section;
        let mut report = section.image_report(self.image);
        let done = self.done;
        report.action = match (&result, done.full, done.diff) {
            (Err(_), _, _) => Action::Failed,
            (Ok(()), true, true) => Action::Slide,
            (Ok(()), true, false) => Action::Full,
            (Ok(()), false, true) => Action::Diff,
            (Ok(()), false, false) => Action::Skipped,
        };
        report.files_written = done.files_written;
        report.files_removed = done.files_removed;
        report.snapshots_kept = done.listed_owned.map(|listed| {
            let mut kept: std::collections::BTreeSet<&String> = listed.iter().collect();
            kept.extend(&done.snapshots_created);
            for removed in &done.snapshots_removed {
                kept.remove(removed);
            }
            kept.len() as u64
        });
        report.snapshots_created = done.snapshots_created;
        report.snapshots_removed = done.snapshots_removed;
        report.bytes_written = self.bytes_written;
        report.duration_seconds = seconds(started.elapsed());
        let mut busy = false;
        let failure = match result {
            Ok(()) => {
                if section.checking() {
                    report.status = ImageStatus::Checked;
                }
                None
            }
            Err(err) => {
                busy = err.downcast_ref::<lock::Busy>().is_some();
                let text = match err.downcast_ref::<interrupt::Interrupted>() {
                    Some(interrupted) => interrupted.to_string(),
                    None => section.explain(&err),
                };
                // Image names come from the cluster (`images = *`): one with a control
                // character must not forge or garble the line.
                let shown = escaped(&format!("{}/{}", section.job.pool, self.image)).into_owned();
                eprintln!("error: {shown}: {text}");
                report.status = if busy {
                    ImageStatus::Busy
                } else {
                    ImageStatus::Failed
                };
                report.error = Some(text.clone());
                Some(text)
            }
        };
        ImageDone {
            report,
            failure,
            busy,
            warnings: self.warnings,
        }
    }

    fn pool(&self) -> &str {
        &self.section.job.pool
    }

    fn run(&mut self) -> Result<()> {
        naming::check_name("image", self.image).map_err(anyhow::Error::msg)?;
        // Listed names were checked when the configuration loaded; `images = *` finds its here,
        // before any snapshot is taken for a file that could not be written.
        let diffs = self.section.job.mode == BackupMode::Incremental;
        naming::check_name_length(self.image, diffs).map_err(anyhow::Error::msg)?;
        let options = self.section.options;
        let kind = if self.section.checking() {
            lock::Kind::Shared
        } else {
            lock::Kind::Exclusive
        };
        let _lock = lock::lock_image(
            &options.lock_dir,
            self.pool(),
            self.image,
            kind,
            Instant::now() + options.wait,
        )?;
        let mut result = self
            .plan_in_a_free_second(None)
            .and_then(|plan| self.perform(&plan));
        // A real run learns the snapshot limit only once Ceph refused its snapshot, so a steady
        // run starts no extra `rbd`; it then plans again within the limit.
        // (Check mode never creates a snapshot, so it is never refused one.)
        if at_snapshot_limit(&result) {
            let limit = self.snapshot_limit()?;
            warn!(
                "{}/{}: Ceph refused the snapshot: the image is at its snapshot limit ({}); \
                 planning again to make room first",
                self.pool(),
                self.image,
                limit.map_or_else(|| "unknown".to_string(), |l| l.to_string())
            );
            result = self
                .plan_in_a_free_second(limit)
                .and_then(|plan| self.perform(&plan));
        }
        match &result {
            // Removing it would cost another timeout of a cluster that has stopped answering
            // (or refuses us); the image record names it, so the next run removes it.
            Err(err) if cluster_failed(err) => self.leave_snapshot(),
            Err(_) => self.roll_back_snapshot(),
            Ok(()) => {}
        }
        // A failure caused by the signal (a killed rbd) is reported as the interruption.
        match (result, interrupt::check()) {
            (Err(_), Err(interrupted)) => Err(interrupted.into()),
            (result, _) => result,
        }
    }

    /// Plans the image's run. When the snapshot name of this second is taken (a run of the
    /// image finished within it: two runs in a row from a script, or the run this one waited
    /// for), waits for the next second and plans again from what is there then.
    fn plan_in_a_free_second(&mut self, limit: Option<u64>) -> Result<Plan> {
        let mut tries = 0;
        loop {
            match self.plan(limit) {
                Err(err) if tries < SAME_SECOND_TRIES && err.is::<SnapshotExists>() => {
                    tries += 1;
                    info!(
                        "{}/{}: {err}; waiting for the next second",
                        self.pool(),
                        self.image
                    );
                    interrupt::check()?;
                    let into = (self.section.options.now)().timestamp_subsec_millis();
                    let left = 1000 - u64::from(into.min(999));
                    std::thread::sleep(Duration::from_millis(left + 10));
                }
                other => return other,
            }
        }
    }

    fn snapshot_limit(&self) -> Result<Option<u64>> {
        self.section.rbd.snapshot_limit(self.pool(), self.image)
    }

    /// The plan for this run, within the image's snapshot limit when it is known: `limit` in a
    /// real run, asked of the cluster in check mode (which cannot learn it from a refused
    /// snapshot).
    fn plan(&mut self, limit: Option<u64>) -> Result<Plan> {
        let snapshots = self
            .section
            .rbd
            .list_snapshots(self.pool(), self.image)
            .context("cannot list snapshots")?;
        let limit = if self.section.checking() {
            self.snapshot_limit()?
        } else {
            limit
        };
        self.done.listed_owned = Some(
            snapshots
                .iter()
                .filter(|s| SnapName::is_owned(&s.name))
                .map(|s| s.name.clone())
                .collect(),
        );
        let entries = self.dir.list()?;
        self.sizes = entries
            .iter()
            .map(|entry| (entry.name.clone(), entry.size))
            .collect();
        let destination = self.destination()?;
        let state = destination.state();
        let key = state.and_then(|state| state.key());
        self.record =
            match record::read_image_record(&self.dir.location(), self.pool(), self.image, key) {
                Ok(record) => record,
                Err(unusable) if unusable.not_a_file => {
                    let kind = untrusted::kind_of(Path::new(&unusable.path))
                        .map_or("not a regular file", untrusted::EntryKind::described);
                    let blocked = Blocked {
                        path: unusable.path,
                        kind,
                    };
                    warn!("{}/{}: {blocked}", self.pool(), self.image);
                    self.warnings += 1;
                    self.record_blocked = true;
                    ImageRecord::default()
                }
                Err(unusable) => {
                    warn!("{}/{}: {unusable}", self.pool(), self.image);
                    self.warnings += 1;
                    ImageRecord::default()
                }
            };
        // What this destination completed last, when its record no longer says (shipped with
        // the files, or not believed): the host's memory continues the chain from there.
        if let (Some(state), Ok(ready)) = (state, &destination.decision) {
            if ready.trust_memory {
                match state.newest_completed(
                    &self.section.job.destination,
                    &ready.id,
                    self.pool(),
                    self.image,
                ) {
                    Ok(remembered) => self.remembered = remembered,
                    Err(err) => {
                        warn!("{}/{}: {err:#}", self.pool(), self.image);
                        self.warnings += 1;
                    }
                }
                if self.record.newest.is_none() {
                    self.record.newest.clone_from(&self.remembered);
                }
            }
        }
        let found = Found {
            image: self.image,
            snapshots: &snapshots,
            entries: &entries,
            record: &self.record,
        };
        // What only a local folder can do (build a new base in place) is asked of the door.
        let settings = self.section.settings.for_folder(self.dir.builds_in_place());
        let plan = plan_image(&settings, &found, (self.section.options.now)())?;
        Ok(snap_limit::fit(plan, snapshots.len(), limit)?)
    }

    fn perform(&mut self, plan: &Plan) -> Result<()> {
        for step in &plan.steps {
            interrupt::check()?;
            self.step(step, &plan.snapshot)?;
        }
        Ok(())
    }

    fn step(&mut self, step: &Step, new_snapshot: &SnapName) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        match step {
            Step::CreateSnapshot {
                snap,
                backs,
                temporary,
            } => self.create_snapshot(snap, backs, *temporary)?,
            Step::Export { file, reason } => {
                info!("{pool}/{image}: {}: {reason}", file.file_name(image));
                self.export(file, false)?;
                if file.snap == *new_snapshot {
                    self.unbacked_snapshot = None;
                }
            }
            Step::SlideBase {
                file,
                from,
                diffs,
                reason,
            } => {
                info!("{pool}/{image}: {}: {reason}", file.file_name(image));
                self.build_base(file, from, diffs)?;
            }
            Step::Reuse { file, reason } => self.reuse(file, reason)?,
            Step::RemoveFile { name, reason } => {
                outln!("Removing file {}", self.dir.location_of(name).display());
                info!("{pool}/{image}: removing {name}: {reason}");
                if self.dir.remove(name)? {
                    self.done.files_removed.push(FileReport {
                        file: name.clone(),
                        bytes: self.sizes.get(name).copied(),
                    });
                }
            }
            Step::RemoveSnapshot { snap, reason } => {
                outln!(
                    "Deleting snapshot {}",
                    spec(&pool, image, Some(snap.as_str()))
                );
                info!("{pool}/{image}: removing snapshot {snap}: {reason}");
                self.remove_snapshot(snap)?;
            }
            Step::SettleRecord {
                snap,
                completed,
                reason,
            } => {
                info!("{pool}/{image}: forgetting the pending snapshot {snap}: {reason}");
                self.settle_record(snap, completed.as_ref())?;
            }
            Step::UnexpectedFile { name } => {
                outln!(
                    "WARNING: unexpected file in {}: {name}",
                    self.dir.location().display()
                );
            }
            Step::UnparseableSnapshot { name } => {
                warn!("{pool}/{image}: snapshot {name} has the BACKUP prefix but no timestamp the tool can read; left alone");
            }
        }
        Ok(())
    }

    /// Takes the run's snapshot, its intent recorded first: if this run dies, the next one knows
    /// the snapshot is its own leftover.
    fn create_snapshot(
        &mut self,
        snap: &SnapName,
        backs: &BackupFile,
        temporary: bool,
    ) -> Result<()> {
        let rbd = &self.section.rbd;
        let (pool, image) = (self.pool().to_string(), self.image);
        let shown = rbd.show(
            &pool,
            image,
            Op::CreateSnapshot {
                snap: snap.as_str(),
            },
        );
        outln!("# {shown}");
        self.dir.create()?;
        let at = (self.section.options.now)();
        self.record
            .snapshot_planned(snap.as_str(), &backs.file_name(image), temporary, at);
        self.save_record()?;
        match rbd.create_snapshot(&pool, image, snap.as_str()) {
            Ok(Change::Applied) => {
                self.done.snapshots_created.push(snap.to_string());
                self.unbacked_snapshot = Some(snap.clone());
            }
            // Check mode: no snapshot, so none to report or roll back.
            Ok(Change::Skipped) => {}
            Err(err) => {
                // Unless the cluster may have created it before going silent, the snapshot is
                // not ours (it existed already) or does not exist: forget the intent, so that no
                // later run removes a snapshot on its account.
                if err.kind() != FailureKind::TimedOut && self.record.snapshot_gone(snap.as_str()) {
                    self.save_record()?;
                }
                return Err(err.into());
            }
        }
        Ok(())
    }

    /// Keeps a file the plan reuses, unless it cannot be proven: then it is written again.
    fn reuse(&mut self, file: &BackupFile, reason: &str) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let name = file.file_name(image);
        match self.proof_of(file)? {
            None => info!("{pool}/{image}: keeping {name}: {reason}"),
            Some(doubt) => {
                warn!(
                    "{pool}/{image}: {name} is not reused: {doubt}; writing it again from \
                     snapshot {}",
                    file.snap
                );
                self.export(file, true)?;
            }
        }
        Ok(())
    }

    /// Records what became of a pending snapshot: its file completed, or the snapshot gone.
    fn settle_record(&mut self, snap: &str, completed: Option<&BackupFile>) -> Result<()> {
        match completed {
            Some(file) => self
                .record
                .file_completed(&file.snap, &file.file_name(self.image)),
            None => {
                self.record.snapshot_gone(snap);
            }
        }
        self.save_record()
    }

    /// Removes a snapshot and, once it is gone, forgets any pending record of it. A snapshot that
    /// cannot go (protected, or with clones) costs disk space in the cluster, not a backup: it is
    /// reported and the run carries on.
    fn remove_snapshot(&mut self, snap: &SnapName) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let rbd = &self.section.rbd;
        let shown = rbd.show(
            &pool,
            image,
            Op::RemoveSnapshot {
                snap: snap.as_str(),
            },
        );
        outln!("# {shown}");
        match rbd.remove_snapshot(&pool, image, snap.as_str()) {
            Ok(Change::Applied) => self.done.snapshots_removed.push(snap.to_string()),
            // Check mode: the snapshot and its record stay as they are.
            Ok(Change::Skipped) => return Ok(()),
            Err(err) if err.kind() == FailureKind::NotFound => {
                info!("{pool}/{image}: snapshot {snap} was gone already");
            }
            Err(err) if err.kind() == FailureKind::TimedOut => return Err(err.into()),
            Err(err) => {
                warn!("{pool}/{image}: snapshot {snap} left in place: {err}");
                self.warnings += 1;
                return Ok(());
            }
        }
        if self.unbacked_snapshot.as_ref() == Some(snap) {
            self.unbacked_snapshot = None;
        }
        if self.record.snapshot_gone(snap.as_str()) {
            self.save_record()?;
        }
        Ok(())
    }

    fn destination(&self) -> Result<&'s DestinationUse> {
        self.section
            .destination
            .get()
            .map(|share| &**share)
            .context("internal error: the destination was not decided")
    }

    /// Writes the image record (unless a non-file sits at its name) and, when the newest
    /// completed snapshot changed, the host's memory of it: both at the moment a file completes.
    fn save_record(&mut self) -> Result<()> {
        let destination = self.destination()?;
        let (Some(state), Ok(ready)) = (destination.state(), &destination.decision) else {
            bail!("internal error: a record written for a destination that was refused");
        };
        // Only a state opened read-only before any run made the key lacks one: every section is
        // in check mode, and its door would take the record and keep nothing anyway.
        if let (false, Some(key)) = (self.record_blocked, state.key()) {
            let written =
                record::write_image_record(&*self.dir, self.pool(), self.image, &self.record, key);
            match written {
                Ok(()) => {}
                Err(err) if err.downcast_ref::<Blocked>().is_some() => {
                    warn!("{}/{}: {err:#}", self.pool(), self.image);
                    self.warnings += 1;
                    self.record_blocked = true;
                }
                Err(err) => return Err(err),
            }
        }
        if self.record.newest.is_some() && self.record.newest != self.remembered {
            if let Some(newest) = &self.record.newest {
                // The file is complete and the image record says so: a host that cannot note it
                // loses only the chance to continue after the files are shipped.
                let noted = self.section.notes(state).image_completed(
                    &self.section.job.destination,
                    &ready.id,
                    self.pool(),
                    self.image,
                    newest,
                    (self.section.options.now)(),
                );
                match noted {
                    Ok(()) => self.remembered.clone_from(&self.record.newest),
                    Err(err) => {
                        warn!("{}/{}: {err:#}", self.pool(), self.image);
                        self.warnings += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Why an existing file may not be relied on (`None` when its checksum file exists and
    /// matches and its length is the snapshot's size). Reading it is safe in check mode too.
    fn proof_of(&self, file: &BackupFile) -> Result<Option<String>> {
        let (pool, image) = (self.pool(), self.image);
        let name = file.file_name(image);
        let folder = self.dir.location();
        let recorded = match read::recorded_digest(&folder, &name) {
            Ok(Some(digest)) => digest,
            Ok(None) => return Ok(Some("it has no checksum file to prove it".into())),
            Err(err) => return Ok(Some(format!("its checksum file cannot be used: {err:#}"))),
        };
        let size = self.section.rbd.size(pool, image, file.snap.as_str())?;
        // The snapshot's size bounds what the file may claim to hold.
        let limit = read::Limit {
            bytes: size,
            why: format!("the size of snapshot {}", file.snap),
            exact: false,
        };
        let read = read::read_raw(&folder.join(&name), file.compression, &limit, |raw| {
            Ok(io::copy(raw, &mut io::sink())?)
        });
        let facts = match read {
            Ok((_, facts)) => facts,
            Err(err) => return Ok(Some(format!("it cannot be read back: {err:#}"))),
        };
        Ok(if facts.sha256 != recorded {
            Some(format!(
                "its SHA-256 is {}, its checksum file says {recorded}",
                facts.sha256
            ))
        } else if facts.raw_bytes != size {
            Some(format!(
                "it holds {} bytes of image where snapshot {} has {size}",
                facts.raw_bytes, file.snap
            ))
        } else {
            None
        })
    }

    /// Prints the line of a build in the folder. stdout says only what happens: it is printed
    /// once the build is known to go ahead (check mode: proven; a real run: done), never before
    /// a fallback to the cluster.
    fn announce_build(image: &str, file: &BackupFile, from: &str, diffs: &[String]) {
        if naming::is_working_name(from) {
            outln!(
                "Finishing image {image}@{} from an interrupted build (no cluster read)",
                file.snap
            );
        } else {
            outln!(
                "Building image {} from {from} and {} (no cluster read)",
                file.file_name(image),
                diffs.join(", ")
            );
        }
        if file.compressed() {
            outln!("Compress mode activated");
        }
    }

    /// The build a door that changes nothing in place (check mode's) is asked for: reading is
    /// allowed, so it shows the fallback a real run would take.
    fn check_build(&mut self, file: &BackupFile, from: &str, diffs: &[String]) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let doubt = if naming::is_working_name(from) {
            let key = self.destination()?.state().and_then(|state| state.key());
            slide::would_finish(&self.dir.location(), image, file, from, key)
        } else {
            slide::would_build(&*self.dir, image, file, from, diffs)
        };
        match doubt {
            None => Self::announce_build(image, file, from, diffs),
            Some(why) => {
                warn!(
                    "{pool}/{image}: {} cannot be built from the folder: {why}; a real run \
                     exports it from the cluster instead",
                    file.file_name(image)
                );
                self.export(file, false)?;
                outln!("Removing file {}", self.dir.location_of(from).display());
            }
        }
        Ok(())
    }

    /// Reports a built base `name`. The build writes (or renames) the files itself: they get the
    /// section's access here, before the record names them.
    fn note_built(&mut self, name: &str, size: u64, sha256: &str) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        for written in [name.to_string(), checksum_name(name)] {
            self.dir
                .access()
                .apply_to_path(&self.dir.location_of(&written))?;
        }
        self.bytes_written += size;
        info!("{pool}/{image}: built {name} ({size} bytes, sha256 {sha256})");
        self.done.files_written.push(FileReport {
            file: name.to_string(),
            bytes: Some(size),
        });
        self.done.files_written.push(FileReport {
            file: checksum_name(name),
            bytes: Some(write::checksum_line(sha256, name).len() as u64),
        });
        Ok(())
    }

    /// Writes the full backup `file` of a new base from the old base `from` and `diffs` in the
    /// folder ([`slide`]), or finishes such a build an interrupted run left (`from` is then its
    /// working file). When the files cannot be proven, `file` is exported from the cluster as
    /// the original did, and `from` removed.
    fn build_base(&mut self, file: &BackupFile, from: &str, diffs: &[String]) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let name = file.file_name(image);
        // In the report a new base is a new full backup, whichever way it is made.
        self.done.full = true;
        // The planner plans a build only for a folder that builds in place; check mode's door
        // says it does but hands out nothing to change, and the build is only proven.
        let Some(local) = self.dir.in_place().cloned() else {
            return self.check_build(file, from, diffs);
        };
        let key = self
            .destination()?
            .state()
            .and_then(|state| state.key())
            .context("internal error: no record key in a real run")?;
        let outcome = if naming::is_working_name(from) {
            slide::finish(&local, image, file, from, Some(key))
        } else {
            slide::build(
                &local,
                image,
                file,
                from,
                diffs,
                self.section.job.compressor_for(file.compression).as_ref(),
                key,
            )
        }
        .with_context(|| format!("cannot build {}", self.dir.location_of(&name).display()))?;
        match outcome {
            slide::BuildOutcome::Built { size, sha256 } => {
                self.note_built(&name, size, &sha256)?;
                Self::announce_build(image, file, from, diffs);
                self.note_consumed(from);
            }
            slide::BuildOutcome::Unproven(why) => {
                warn!(
                    "{pool}/{image}: {name} cannot be built from the folder: {why}; exporting it \
                     from the cluster instead"
                );
                self.export(file, false)?;
                outln!("Removing file {}", self.dir.location_of(from).display());
                slide::discard(&local, from, &name)?;
                self.note_consumed(from);
                return Ok(());
            }
            slide::BuildOutcome::Obsolete => {
                info!(
                    "{pool}/{image}: {name} was written already; the interrupted build is cleared"
                );
                return Ok(());
            }
        }
        self.record.file_completed(&file.snap, &name);
        self.save_record()
    }

    /// The old base a build used up is gone from the folder (a working file of an interrupted
    /// build was never a backup file: it is not reported).
    fn note_consumed(&mut self, from: &str) {
        if !naming::is_working_name(from) {
            self.done.files_removed.push(FileReport {
                file: from.to_string(),
                bytes: self.sizes.get(from).copied(),
            });
        }
    }

    /// Writes `file` from the cluster; `replace` lets it take the place of an unproven file of
    /// the same name, which otherwise makes the export fail.
    fn export(&mut self, file: &BackupFile, replace: bool) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let (cmd, base) = self.announce_export(file);
        self.dir.create()?;
        let name = file.file_name(image);
        // Check mode's door stages nothing: there is nothing to read from the cluster.
        let Some(mut pending) = self.dir.stage(&name)? else {
            return Ok(());
        };
        let rbd = &self.section.rbd;
        let snap = file.snap.as_str();
        let snap_spec = format!("{image}@{snap}");
        // A full export's length must match the snapshot's size: known before the data arrives.
        let expected_size = match file.content {
            Content::Full => Some(rbd.size(&pool, image, snap)?),
            Content::DiffFrom(_) => None,
        };
        let final_path = self.dir.location_of(&name);
        if !replace {
            self.refuse_foreign(&name)?;
        }
        let mut stream = crate::progress::reader(
            rbd.open_export(&pool, image, base, snap)
                .with_context(|| format!("cannot export {snap_spec}"))?,
            expected_size,
            &escaped(&format!("{pool}/{name}")),
        );
        // A signal that came after the last check but before this export was started (and so
        // could be stopped by it) must not let the export run to its end: with several images
        // at once, another image's step may have been that check's last chance.
        interrupt::check()?;
        let digest = self
            .write(file, &mut stream, expected_size, pending.file())
            // A failed rbd explains itself (and stays typed, so a timeout marks the cluster
            // unreachable). A full disk is said in so many words; the export's command line,
            // hundreds of characters of options, is only for the debug log (`-v`).
            .map_err(|err| {
                if CommandError::find(&err).is_some() {
                    return err.context(format!("cannot export {snap_spec}"));
                }
                debug!("writing the output of `{cmd}` failed: {err:#}");
                let err = if disk_full(&err) {
                    anyhow::anyhow!("the disk is full (No space left on device)")
                } else {
                    err
                };
                err.context(format!("cannot write {}", final_path.display()))
            })?;
        // The checksum goes first: then every backup file that exists has one.
        let published = self.dir.publish(pending, &digest, replace)?;
        let size = published.size;
        self.bytes_written += size;
        self.done.files_written.push(FileReport {
            file: name.clone(),
            bytes: Some(size),
        });
        self.done.files_written.push(FileReport {
            file: checksum_name(&name),
            bytes: Some(published.checksum_size),
        });
        info!("{pool}/{image}: wrote {name} ({size} bytes, sha256 {digest})");
        self.record.file_completed(&file.snap, &name);
        self.save_record()
    }

    /// Prints the original's lines for the export of `file` and notes its kind in the report;
    /// returns the `rbd` command line shown and the diff's base, if any.
    fn announce_export<'f>(&mut self, file: &'f BackupFile) -> (String, Option<&'f str>) {
        let image = self.image;
        let raw_path = self.dir.location_of(&file.raw_name(image));
        let snap_spec = format!("{image}@{}", file.snap);
        let base = match &file.content {
            Content::Full => {
                outln!("Exporting image {snap_spec} to {}", raw_path.display());
                self.done.full = true;
                None
            }
            Content::DiffFrom(base) => {
                outln!(
                    "Exporting diff {base} -> {snap_spec} to {}",
                    raw_path.display()
                );
                self.done.diff = true;
                Some(base.as_str())
            }
        };
        if file.compressed() {
            outln!("Compress mode activated");
        }
        let snap = file.snap.as_str();
        let cmd = self
            .section
            .rbd
            .show(self.pool(), image, Op::Export { base, snap });
        outln!("# {cmd}");
        (cmd, base)
    }

    /// A new file never takes the place of something already under its name.
    fn refuse_foreign(&self, name: &str) -> Result<()> {
        let path = self.dir.location_of(name);
        match self.dir.kind_of(name) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
            Ok(kind) => bail!(
                "{} exists already ({}), written by something other than this run; it is left \
                 alone",
                path.display(),
                kind.described()
            ),
        }
    }

    /// Streams one export into `out` in the file's format; returns the SHA-256 of the file. A
    /// compressed full stores only the ranges `rbd diff` says hold data (a sparse member).
    fn write(
        &self,
        file: &BackupFile,
        stream: &mut impl Read,
        expected_size: Option<u64>,
        out: &mut std::fs::File,
    ) -> Result<String> {
        let member_name = file.raw_name(self.image);
        let mtime = file.snap.taken();
        let Some(compressor) = self.section.job.compressor_for(file.compression) else {
            let (len, digest) = write::write_raw(stream, out)?;
            if let Some(expected) = expected_size.filter(|&e| e != len) {
                anyhow::bail!("the export had {len} bytes but the snapshot has {expected}");
            }
            return Ok(digest);
        };
        let digest = match expected_size {
            Some(size) => {
                let (pool, snap) = (self.pool(), file.snap.as_str());
                let mut map = SparseMapBuilder::new(size, MAX_SPARSE_EXTENTS);
                self.section
                    .rbd
                    .allocated(pool, self.image, snap, &mut map)?;
                let map = map.finish();
                let member = Member {
                    name: &member_name,
                    size,
                    mtime,
                    sparse: Some(&map),
                };
                let mut data = DataOfExtents::new(stream, &map);
                write::write_archive(&mut data, &member, &compressor, out)?
            }
            None => {
                let (mut spooled, size) = write::spool(stream, self.dir.scratch()?)?;
                let member = Member {
                    name: &member_name,
                    size,
                    mtime,
                    sparse: None,
                };
                write::write_archive(&mut spooled, &member, &compressor, out)?
            }
        };
        Ok(digest)
    }

    /// The snapshot this run created, which no complete file backs, stays for the next run to
    /// remove (its image record names it).
    fn leave_snapshot(&mut self) {
        if let Some(snap) = self.unbacked_snapshot.take() {
            info!(
                "{}/{}: snapshot {snap}, created by this run, is left for the next run to remove",
                self.pool(),
                self.image
            );
        }
    }

    /// Removes the snapshot this run created when no complete file backs it, so it cannot become
    /// the base of a diff that nothing could restore. If even that fails, the image record still
    /// names it and the next run removes it.
    fn roll_back_snapshot(&mut self) {
        let Some(snap) = self.unbacked_snapshot.take() else {
            return;
        };
        let (pool, image) = (self.pool().to_string(), self.image);
        warn!("{pool}/{image}: removing snapshot {snap}, created by this run, because its backup did not complete");
        match self
            .section
            .rbd
            .remove_snapshot(&pool, image, snap.as_str())
        {
            Ok(Change::Applied) => self.done.snapshots_removed.push(snap.to_string()),
            Ok(Change::Skipped) => return,
            Err(err) if err.kind() == FailureKind::NotFound => {}
            Err(err) => {
                warn!(
                    "{pool}/{image}: could not remove snapshot {snap} (the next run will): {err}"
                );
                return;
            }
        }
        if self.record.snapshot_gone(snap.as_str()) {
            if let Err(err) = self.save_record() {
                warn!("{pool}/{image}: {err:#}");
            }
        }
    }
}

mod destinations;
use destinations::{DestinationUse, Refused};
mod parallel;
#[cfg(test)]
mod tests;

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
//! lock and no coordination lease, asking the snapshot limit up front, hooks shown and not run,
//! the "checked" status, no last-run file) ask [`Section::checking`].
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
//!
//! The parts, by job: this file runs the sections (preflight, the overview, each image in turn);
//! [`destinations`] decides each destination once; [`image`] is one image's run, its plan and
//! its steps; [`files`] writes an image's files (an export published with its checksum first,
//! a slide's new base); [`outcome`] is what the run achieved; [`last_run`] leaves the report in
//! each destination; [`parallel`] runs images at once; [`hooks`] runs the commands around a
//! snapshot.

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
use crate::coordinate::{Coordination, Elsewhere, Lease};
use crate::folder::door::{CheckFolder, Door, Sharing, Staged};
use crate::folder::format::archive::{Owner, MAX_SPARSE_EXTENTS};
use crate::folder::format::write::{self, DataOfExtents, Member, SparseMapBuilder};
use crate::folder::naming::{
    self, checksum_name, BackupFile, Compression, Content, SnapName, LAST_RUN_FILE,
};
use crate::folder::read;
use crate::folder::record::{self, Blocked, Completed, ImageRecord};
use crate::folder::shared::EntryKind;
use crate::folder::slide;
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
    /// With `coordination pool`: the connection through which this host takes each image's
    /// lease and shares its memory with the other hosts ([`crate::coordinate`]).
    pub coordination: Option<Arc<Coordination>>,
    /// How long to wait for an image whose lease another host holds (0: it is theirs).
    pub lease_wait: Duration,
}

/// Makes the [`ClusterOps`] a section talks to.
pub type ClusterFactory = dyn Fn(&PoolJob) -> Box<dyn ClusterOps> + Sync;

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
                config.parallel_images,
            )
        })
        .collect();
    outcome.warnings += destinations::prepare(&sections, options);
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
    /// `parallel images`: also how many of a group's members export at once.
    parallel: u32,
}

/// What a run backs up in one turn: an image, or a group's images snapshotted together.
#[derive(Debug, Clone, Copy)]
enum Unit<'j> {
    Image(&'j str),
    Group(&'j crate::config::ImageGroup),
}

impl<'a> Section<'a> {
    fn new(
        job: &'a PoolJob,
        mode: Mode,
        options: &'a RunOptions,
        unreachable: &'a Unreachable,
        config_path: &'a Path,
        parallel: u32,
    ) -> Section<'a> {
        let cluster = job.cluster();
        let real: Box<dyn ClusterOps> = match options.cluster {
            Some(make) => make(job),
            None => Box::new(Rbd::new(cluster.clone()).with_quiesce(job.quiesce)),
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
            parallel,
        }
    }

    /// The door into `image`'s folder: the real one, or in check mode its twin that changes
    /// nothing.
    fn door(&self, image: &str) -> Box<dyn Door> {
        self.door_into(self.job.image_folder(image))
    }

    /// The door into the destination's top folder, where its record is.
    fn top_door(&self) -> Box<dyn Door> {
        self.door_into(self.job.destination_folder())
    }

    /// `folder`, or in check mode its twin that changes nothing: the one place the mode picks
    /// how the destination is changed.
    fn door_into(&self, folder: Box<dyn Door>) -> Box<dyn Door> {
        match self.mode {
            Mode::Run => folder,
            Mode::Check => Box::new(CheckFolder::new(folder)),
        }
    }

    /// Whether this section only checks. The twins above carry out what that means for each
    /// change; this answers the few decisions that are not a change (the lock, the snapshot
    /// limit, the status and summary lines, the last-run file).
    fn checking(&self) -> bool {
        self.mode == Mode::Check
    }

    /// Where the run's notes go (an image's completed snapshot, the destination's memory and
    /// record): the host's state, or in check mode its twin that keeps nothing (the state is
    /// shared with the run's real sections).
    fn notes<'h>(&self, state: &'h HostState) -> Box<dyn Notes + 'h> {
        match self.mode {
            Mode::Run => Box::new(state),
            Mode::Check => Box::new(CheckNotes::new(state)),
        }
    }

    /// The whole section, image after image.
    fn run(&self, outcome: &mut RunOutcome) {
        self.print_header();
        let images = match self.start() {
            Ok(images) => images,
            Err(failed) => return outcome.absorb_section(failed),
        };
        for unit in self.units(&images) {
            if interrupt::received().is_some() {
                break;
            }
            for done in self.back_up_unit(unit) {
                outcome.absorb(done);
            }
        }
    }

    /// The run's turns for `images`, in their order: a group takes the place of its first
    /// member.
    fn units<'i>(&'i self, images: &'i [String]) -> Vec<Unit<'i>> {
        let mut units = Vec::new();
        for image in images {
            match self.job.group_of(image) {
                None => units.push(Unit::Image(image)),
                Some(group) => {
                    if !units
                        .iter()
                        .any(|unit| matches!(unit, Unit::Group(g) if std::ptr::eq(*g, group)))
                    {
                        units.push(Unit::Group(group));
                    }
                }
            }
        }
        units
    }

    /// Waits until just past the start of the run clock's next second, where a snapshot name
    /// taken in this one is free again.
    fn sleep_to_the_next_second(&self) {
        let into = (self.options.now)().timestamp_subsec_millis();
        let left = 1000 - u64::from(into.min(999));
        std::thread::sleep(Duration::from_millis(left + 10));
    }

    fn back_up_unit(&self, unit: Unit<'_>) -> Vec<ImageDone> {
        match unit {
            Unit::Image(image) => vec![self.back_up(image)],
            Unit::Group(group) => self.back_up_group(group),
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
            mode: self.job.mode.as_str().into(),
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
            host: None,
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
        if let Some(state) = destination.state() {
            destination
                .record_once(&*self.top_door(), &*self.notes(state), (self.options.now)())
                .map_err(whole)?;
        }
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
        let pool = &self.job.pool;
        match &self.job.images {
            ImageSelection::Named(names) => Ok(names.clone()),
            ImageSelection::All => {
                let listed = self
                    .rbd
                    .list_images(pool)
                    .with_context(|| format!("cannot list the images of pool {pool}"))?;
                let (images, excluded): (Vec<String>, Vec<String>) = listed
                    .into_iter()
                    .partition(|image| !self.job.exclude.matches(image));
                if !excluded.is_empty() {
                    info!(
                        "{pool}: left out by `exclude`: {}",
                        escaped(&excluded.join(", "))
                    );
                }
                self.warn_of_vanished(&images, &excluded);
                // A group's member the pool lacks is missed like a listed image: it fails.
                let mut images = images;
                for group in &self.job.groups {
                    for member in &group.images {
                        if !images.contains(member) {
                            images.push(member.clone());
                        }
                    }
                }
                Ok(images)
            }
        }
    }

    /// `images = *`: the images this destination holds backups of that the pool no longer has
    /// (removed, moved to the trash, renamed), in one warning; their backups stay.
    fn warn_of_vanished(&self, images: &[String], excluded: &[String]) {
        let Ok(entries) = self.job.pool_folder().list() else {
            return;
        };
        let gone: Vec<&str> = entries
            .iter()
            .filter(|entry| entry.kind == EntryKind::Directory && !entry.name.starts_with('.'))
            // A namespace's folder (`@namespace`) holds that namespace's images.
            .filter(|entry| !naming::is_namespace_folder(&entry.name))
            .map(|entry| entry.name.as_str())
            .filter(|name| !images.iter().chain(excluded).any(|image| image == name))
            .collect();
        if !gone.is_empty() {
            warn!(
                "{}: {} backed up before, no longer in the pool (removed, in the trash or \
                 renamed?); their backups stay",
                self.job.pool,
                escaped(&gone.join(", "))
            );
        }
    }

    fn print_overview(&self, images: &[String]) {
        let py_bool = |b: bool| if b { "True" } else { "False" };
        outln!("Images to backup:");
        for image in images {
            outln!("\t{}", escaped(&format!("{}/{image}", self.job.pool)));
        }
        outln!("Backup folder: {}", self.job.destination_text);
        outln!(
            "Compression: {}",
            py_bool(self.job.compress != Compression::None)
        );
        if self.job.compress == Compression::Zstd {
            // The line above is the original's, which scripts may read: True or False only.
            info!(
                "{}: compress = zstd, files are .tar.zst",
                escaped(&self.job.pool)
            );
        }
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

mod destinations;
mod files;
mod group;
mod hooks;
mod image;
mod last_run;
mod outcome;
use destinations::{DestinationUse, Refused};
mod parallel;
use image::ImageRun;
use last_run::write_last_run_records;
pub use outcome::RunOutcome;
use outcome::{seconds, ImageDone, SectionFailed, SectionFailure};
#[cfg(test)]
mod tests;

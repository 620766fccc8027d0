//! Carries out the backup described by a configuration: section by section, image by image.
//!
//! For each image it reads what exists (snapshots, files), asks the planner what to do, and performs
//! the steps. Check mode is a mode of this executor: every step is announced the same way, and only
//! the doing is skipped, so a dry run shows exactly what a real run would do and changes nothing.
//! Reading (listing snapshots and files) happens in both modes.
//!
//! One image failing never stops the others; its error is reported on stderr and counted. If a run
//! fails before the snapshot it created is backed by a complete file, that snapshot is removed
//! again, so it can never become the base of a diff that nothing can restore.
//!
//! stdout carries the original tool's messages, so existing log scraping keeps working.

use crate::outln;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::config::{BackupMode, Config, ImageSelection, PoolJob};
use crate::naming::{self, BackupFile, Content, SnapName, CHECKSUM_SUFFIX};
use crate::plan::{plan_image, Plan, Settings, Step};
use crate::process::CommandLine;
use crate::rbd::{spec, Cluster, Rbd};
use crate::store::{self, ImageDir, Member, PendingFile};
use crate::{interrupt, lock};

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
    /// Let `rbd` draw progress bars (stderr is a terminal).
    pub progress: bool,
    /// The clock; read once per image, like the original.
    pub now: &'a dyn Fn() -> DateTime<Utc>,
    /// How long to wait for another run to release a destination.
    pub wait: Duration,
}

/// What a run achieved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub images_done: usize,
    /// `pool/image` (or `pool` when the pool could not be listed) and the error, one line.
    pub failures: Vec<(String, String)>,
    pub bytes_written: u64,
    pub checked_only: bool,
    /// Things that went wrong without costing a backup (a snapshot that could not be removed).
    pub warnings: usize,
    /// The signal that stopped the run early.
    pub interrupted: Option<i32>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.failures.is_empty()
    }

    /// The closing line of a run.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "Summary: {} image(s) backed up, {} failed, {} written",
            self.images_done,
            self.failures.len(),
            human_bytes(self.bytes_written)
        );
        if self.warnings > 0 {
            line.push_str(&format!(", {} warning(s)", self.warnings));
        }
        if self.checked_only {
            line.push_str(" (check mode: nothing was changed)");
        }
        if let Some(signal) = self.interrupted {
            line.push_str(&format!(
                " (interrupted by {}: the remaining images were skipped)",
                interrupt::name(signal)
            ));
        }
        for (what, _) in &self.failures {
            line.push_str(&format!("\nFailed: {what}"));
        }
        line
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn mode_of(job: &PoolJob, options: &RunOptions) -> Mode {
    if options.force_check || job.check_mode {
        Mode::Check
    } else {
        Mode::Run
    }
}

/// Backs up every section of `config` in file order, holding each destination's lock. Fails
/// only when a lock cannot be had ([`crate::lock::Busy`]); every other failure is per image or
/// per pool and recorded in the outcome.
pub fn run(config: &Config, options: &RunOptions) -> Result<Outcome> {
    let mut destinations: Vec<(PathBuf, lock::Kind)> = Vec::new();
    for job in &config.pools {
        let kind = match mode_of(job, options) {
            Mode::Run => lock::Kind::Exclusive,
            Mode::Check => lock::Kind::Shared,
        };
        match destinations.iter_mut().find(|(d, _)| *d == job.destination) {
            Some((_, held)) if kind == lock::Kind::Exclusive => *held = kind,
            Some(_) => {}
            None => destinations.push((job.destination.clone(), kind)),
        }
    }
    let _lock = lock::acquire(&destinations, options.wait)?;
    let mut outcome = Outcome {
        checked_only: !config.pools.is_empty(),
        ..Outcome::default()
    };
    for job in &config.pools {
        if let Some(signal) = interrupt::received() {
            outcome.interrupted = Some(signal);
            break;
        }
        let mode = mode_of(job, options);
        outcome.checked_only &= mode == Mode::Check;
        Section::new(job, mode, options).run(&mut outcome);
    }
    outcome.interrupted = interrupt::received();
    Ok(outcome)
}

struct Section<'a> {
    job: &'a PoolJob,
    mode: Mode,
    rbd: Rbd,
    settings: Settings,
    now: &'a dyn Fn() -> DateTime<Utc>,
}

impl<'a> Section<'a> {
    fn new(job: &'a PoolJob, mode: Mode, options: &'a RunOptions) -> Section<'a> {
        let cluster = Cluster {
            conf: job.ceph_config.clone(),
            user: job.ceph_user.clone(),
            keyring: job.ceph_keyring.clone(),
            timeout: job.ceph_timeout,
        };
        Section {
            job,
            mode,
            rbd: Rbd::new(cluster, options.progress),
            settings: Settings {
                mode: job.mode,
                window: job.window,
                compress: job.compress,
            },
            now: options.now,
        }
    }

    fn run(&self, outcome: &mut Outcome) {
        let pool = &self.job.pool;
        outln!("Starting backup for pool {pool}");
        outln!(
            "{}",
            match self.job.mode {
                BackupMode::Full => "Full ceph backup",
                BackupMode::Incremental => "Incremental ceph backup",
            }
        );
        let images = match self.destination_exists().and_then(|()| self.images()) {
            Ok(images) => images,
            Err(err) => {
                let err = self.explain(&err);
                eprintln!("error: pool {pool}: {err}");
                outcome.failures.push((pool.clone(), err));
                return;
            }
        };
        self.print_overview(&images);
        for image in &images {
            if interrupt::received().is_some() {
                break;
            }
            let mut image_run = ImageRun::new(self, image);
            match image_run.run() {
                Ok(()) => outcome.images_done += 1,
                Err(err) => {
                    let err = match err.downcast_ref::<interrupt::Interrupted>() {
                        Some(interrupted) => interrupted.to_string(),
                        None => self.explain(&err),
                    };
                    eprintln!("error: {pool}/{image}: {err}");
                    outcome.failures.push((format!("{pool}/{image}"), err));
                }
            }
            outcome.bytes_written += image_run.bytes_written;
            outcome.warnings += image_run.warnings;
        }
    }

    /// The error as one line, with a hint when the cluster did not answer in time.
    fn explain(&self, err: &anyhow::Error) -> String {
        let text = format!("{err:#}");
        if !text.contains("timed out") && !text.contains("exit status 110") {
            return text;
        }
        format!(
            "{text} (the cluster of {} did not answer within {} s; see `ceph timeout`)",
            self.job.ceph_config.display(),
            self.job.ceph_timeout
        )
    }

    /// A missing destination usually means a backup disk that did not mount: refuse rather than
    /// write into the mount point (and onto the root filesystem).
    fn destination_exists(&self) -> Result<()> {
        let destination = &self.job.destination;
        if destination.is_dir() {
            return Ok(());
        }
        anyhow::bail!(
            "destination directory {} does not exist (is the backup disk mounted?)",
            destination.display()
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
            outln!("\t{}/{image}", self.job.pool);
        }
        outln!("Backup folder: {}", self.job.destination_text);
        outln!("Compression: {}", py_bool(self.job.compress));
        outln!("Check mode: {}", py_bool(self.mode == Mode::Check));
        if self.job.mode == BackupMode::Full {
            outln!("Taking full backup of images: {}", images.join(", "));
            if self.mode == Mode::Check {
                outln!(
                    "Running in check mode: backup commands will just be printed and not executed"
                );
            }
        }
    }
}

struct ImageRun<'s> {
    section: &'s Section<'s>,
    image: &'s str,
    dir: ImageDir,
    /// The snapshot this run created, until a complete file backs it.
    unbacked_snapshot: Option<SnapName>,
    bytes_written: u64,
    warnings: usize,
}

impl<'s> ImageRun<'s> {
    fn new(section: &'s Section<'s>, image: &'s str) -> ImageRun<'s> {
        ImageRun {
            section,
            image,
            dir: ImageDir::new(&section.job.destination, &section.job.pool, image),
            unbacked_snapshot: None,
            bytes_written: 0,
            warnings: 0,
        }
    }

    fn pool(&self) -> &str {
        &self.section.job.pool
    }

    fn run(&mut self) -> Result<()> {
        let result = naming::check_name("image", self.image)
            .map_err(anyhow::Error::msg)
            .and_then(|()| self.plan())
            .and_then(|plan| self.perform(&plan));
        if result.is_err() {
            self.roll_back_snapshot();
        }
        // A failure caused by the signal (a killed rbd) is reported as the interruption.
        match (result, interrupt::check()) {
            (Err(_), Err(interrupted)) => Err(interrupted.into()),
            (result, _) => result,
        }
    }

    fn plan(&self) -> Result<Plan> {
        let snapshots = self
            .section
            .rbd
            .list_snapshots(self.pool(), self.image)
            .context("cannot list snapshots")?;
        let files = self.dir.list()?;
        let now = (self.section.now)();
        Ok(plan_image(
            self.image,
            &self.section.settings,
            &snapshots,
            &files,
            now,
        )?)
    }

    fn perform(&mut self, plan: &Plan) -> Result<()> {
        for step in &plan.steps {
            interrupt::check()?;
            self.step(step, &plan.snapshot)?;
        }
        Ok(())
    }

    fn step(&mut self, step: &Step, new_snapshot: &SnapName) -> Result<()> {
        let rbd = &self.section.rbd;
        let (pool, image) = (self.pool().to_string(), self.image);
        match step {
            Step::CreateSnapshot { snap } => {
                let cmd = rbd.create_snapshot(&pool, image, snap.as_str());
                if self.command(&cmd)? {
                    self.unbacked_snapshot = Some(snap.clone());
                }
            }
            Step::Export { file, reason } => {
                info!("{pool}/{image}: {}: {reason}", file.file_name(image));
                self.export(file)?;
                if file.snap == *new_snapshot {
                    self.unbacked_snapshot = None;
                }
            }
            Step::Reuse { file, reason } => {
                info!(
                    "{pool}/{image}: keeping {}: {reason}",
                    file.file_name(image)
                );
            }
            Step::RemoveFile { name, reason } => {
                outln!("Removing file {}", self.dir.file(name).display());
                info!("{pool}/{image}: removing {name}: {reason}");
                if self.section.mode == Mode::Run {
                    self.dir.remove(name)?;
                }
            }
            Step::RemoveSnapshot { snap, reason } => {
                outln!("Deleting snapshot {}", spec(&pool, image, Some(snap)));
                info!("{pool}/{image}: removing snapshot {snap}: {reason}");
                // A snapshot that cannot go (protected, or with clones) costs disk space in the
                // cluster, not a backup: report it and carry on.
                if let Err(err) = self.command(&rbd.remove_snapshot(&pool, image, snap)) {
                    warn!("{pool}/{image}: snapshot {snap} left in place: {err:#}");
                    self.warnings += 1;
                }
                if self.unbacked_snapshot.as_ref().map(SnapName::as_str) == Some(snap) {
                    self.unbacked_snapshot = None;
                }
            }
            Step::UnexpectedFile { name } => {
                outln!(
                    "WARNING: unexpected file in {}: {name}",
                    self.dir.path().display()
                );
            }
            Step::UnparseableSnapshot { name } => {
                warn!("{pool}/{image}: snapshot {name} has the BACKUP prefix but no timestamp the tool can read; left alone");
            }
        }
        Ok(())
    }

    /// Announces a command and runs it unless in check mode; true when it ran.
    fn command(&self, cmd: &CommandLine) -> Result<bool> {
        outln!("# {cmd}");
        if self.section.mode == Mode::Check {
            return Ok(false);
        }
        cmd.run()?;
        Ok(true)
    }

    fn export(&mut self, file: &BackupFile) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let rbd = &self.section.rbd;
        let raw_path = self.dir.file(&file.raw_name(image));
        let snap_spec = format!("{image}@{}", file.snap);
        let cmd = match &file.content {
            Content::Full => {
                outln!("Exporting image {snap_spec} to {}", raw_path.display());
                rbd.export(&pool, image, file.snap.as_str())
            }
            Content::DiffFrom(base) => {
                outln!(
                    "Exporting diff {base} -> {snap_spec} to {}",
                    raw_path.display()
                );
                rbd.export_diff(&pool, image, base.as_str(), file.snap.as_str())
            }
        };
        if file.compressed {
            outln!("Compress mode activated");
        }
        outln!("# {cmd}");
        if self.section.mode == Mode::Check {
            return Ok(());
        }
        // A full export's length must match the snapshot's size: known before the data arrives.
        let expected_size = match file.content {
            Content::Full => Some(rbd.size(&pool, image, file.snap.as_str())?),
            Content::DiffFrom(_) => None,
        };
        self.dir.create()?;
        let name = file.file_name(image);
        let dir = self.dir.path();
        let mut pending = PendingFile::create(&dir, &name)?;
        let mut stream = cmd.spawn_reader()?;
        let digest = self
            .write(file, &mut stream, expected_size, pending.file())
            .map_err(|err| unwrap_command_error(err, &cmd))
            .with_context(|| format!("cannot write {}", self.dir.file(&name).display()))?;
        // The checksum goes first: then every backup file that exists has one. A checksum left
        // without its file by a crash is simply replaced when that file is written again.
        let checksum_name = format!("{name}{CHECKSUM_SUFFIX}");
        let mut checksum = PendingFile::create(&dir, &checksum_name)?;
        checksum
            .file()
            .write_all(store::checksum_line(&digest, &name).as_bytes())
            .with_context(|| format!("cannot write {}", self.dir.file(&checksum_name).display()))?;
        checksum.commit_replacing()?;
        let size = pending.commit()?;
        self.bytes_written += size;
        info!("{pool}/{image}: wrote {name} ({size} bytes, sha256 {digest})");
        Ok(())
    }

    /// Streams one export into `out` in the file's format; returns the SHA-256 of the file.
    fn write(
        &self,
        file: &BackupFile,
        stream: &mut impl Read,
        expected_size: Option<u64>,
        out: &mut std::fs::File,
    ) -> Result<String> {
        let member_name = file.raw_name(self.image);
        let mtime = file.snap.taken();
        let digest = match (file.compressed, expected_size) {
            (false, expected) => {
                let (len, digest) = store::write_raw(stream, out)?;
                if let Some(expected) = expected.filter(|&e| e != len) {
                    anyhow::bail!("the export had {len} bytes but the snapshot has {expected}");
                }
                digest
            }
            (true, Some(size)) => {
                let member = Member {
                    name: &member_name,
                    size,
                    mtime,
                };
                store::write_tar_gz(stream, &member, out)?
            }
            (true, None) => {
                let (mut spooled, size) = store::spool(stream, &self.dir.path())?;
                let member = Member {
                    name: &member_name,
                    size,
                    mtime,
                };
                store::write_tar_gz(&mut spooled, &member, out)?
            }
        };
        Ok(digest)
    }

    /// Removes the snapshot this run created when no complete file backs it, so it cannot become
    /// the base of a diff that nothing could restore.
    fn roll_back_snapshot(&mut self) {
        let Some(snap) = self.unbacked_snapshot.take() else {
            return;
        };
        let (pool, image) = (self.pool(), self.image);
        warn!("{pool}/{image}: removing snapshot {snap}, created by this run, because its backup did not complete");
        if let Err(err) = self
            .section
            .rbd
            .remove_snapshot(pool, image, snap.as_str())
            .run()
        {
            warn!("{pool}/{image}: could not remove snapshot {snap}: {err}");
        }
    }
}

/// An `rbd` failure reaches us wrapped in the I/O error of the stream it was writing; unwrap it
/// so the message names the command and its stderr rather than a generic I/O failure.
fn unwrap_command_error(err: anyhow::Error, cmd: &CommandLine) -> anyhow::Error {
    let io = err
        .chain()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .and_then(|e| e.get_ref())
        .and_then(|inner| inner.downcast_ref::<crate::process::CommandError>());
    match io {
        Some(command_error) => anyhow::anyhow!("{command_error}"),
        None => err.context(format!("while reading `{cmd}`")),
    }
}

//! `cephbackup restore`: an image as it was at a backed-up point in time, in one command.
//!
//! The point restored is the newest one taken at or before `--at` (the latest without it), and
//! its route ([`crate::folder::chain`]) is replayed into a new image: `rbd import` of the full backup,
//! `rbd snap create` of its snapshot (each diff names the snapshot it starts from, legacy names
//! included), then `rbd import-diff` of each diff in order, stopping at the point. Files stream
//! from disk into `rbd`'s stdin, never as a path (Ceph 16 refuses `@` in import paths), and are
//! decompressed on the fly whatever their archive member is called. Each diff is checked record
//! by record before `rbd` sees it and each file's checksum as it passes, so anything wrong stops
//! the restore; the image it created is then removed, so a failed restore never leaves something
//! that looks restored. An existing image is never touched. The route is one of proven files (each
//! with a `.sha256` file) whenever the folder offers one; an unproven file it still uses (the
//! original tool's files have no checksum) is named on stderr, and is `proven: false` in `--json`.
//! A full without a checksum whose length is not the image size a diff records at its snapshot
//! is left out of every route ([`Folder::refuse_wrong_sized`]), and named.
//!
//! The backup folder is untrusted ground ([`crate::folder::read`]): only regular files are read, and
//! before anything is created every file of the route is opened and its declared length checked,
//! so a symlink, a FIFO or an archive declaring an absurd size is refused by name, in one line. A
//! point that only such an entry offers is refused, never quietly replaced by an older one, while
//! older points whose routes do not need it restore as usual.
//!
//! `--to-file` rebuilds the point as a new local sparse raw file instead ([`crate::folder::rebuild`]),
//! with no cluster at all. The file is written under a recognisable name in the target's folder
//! ([`PARTIAL_PREFIX`]) while its writer holds an flock on it, and renamed to the target only when
//! complete; a restore killed outright leaves that file unlocked, and the next restore into the
//! same folder removes it. Errors name what failed: the target (a full disk, a folder that does
//! not exist or cannot be written), or the backup file.
//!
//! A restore is one list of steps (`image_steps`, `file_steps`): a real run prints each as it
//! starts it, saying what it does with which file (never a shell command: nothing runs through
//! one), and ends with its duration; `--check` prints them all and does nothing. When a backup
//! file is what failed, the error names the newest point that does not need it, for `--at`. With
//! `--json` those lines go to stderr and stdout carries one document (`RestoreDoc`): what was
//! restored, into what, the point and its time, and the files used.

use crate::outln;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

use crate::cluster::process::{CommandError, CommandLine, FailureKind};
use crate::cluster::rbd::{spec, Rbd};
use crate::commands::catalog;
use crate::config::Config;
use crate::folder::chain::{FolderFile, Layout};
use crate::folder::checked_diff::CheckedDiff;
use crate::folder::naming::{self, SnapName, CHECKSUM_SUFFIX};
use crate::folder::read::{self, FirstError, Folder, Limits};
use crate::folder::rebuild;
use crate::folder::rebuild::TargetFailed;
use crate::folder::write::ImageDir;
use crate::output::{self, escaped, escaped_path};
use crate::report::{rfc3339, Envelope};
use crate::{interrupt, lock, progress, UsageError};

const BUFFER: usize = 1 << 20;
/// Ceph drops the watch of a client that died after `osd_client_watch_timeout` (30 s by
/// default); a little more, in case the cluster is busy.
const WATCH_EXPIRY: Duration = Duration::from_secs(45);
/// Names of `--to-file` targets being written: `.cephbackup-restore.<random>.<target name>`.
pub const PARTIAL_PREFIX: &str = ".cephbackup-restore.";
/// The longest file name most filesystems accept.
const NAME_MAX: usize = 255;

/// Where the restored image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Image { pool: String, name: String },
    File(PathBuf),
}

impl Target {
    /// `--to [POOL/]NAME` (in `default_pool` without a pool) or `--to-file PATH`.
    pub fn parse(
        to: Option<&str>,
        to_file: Option<&Path>,
        default_pool: &str,
    ) -> Result<Target, UsageError> {
        if let Some(path) = to_file {
            if path.file_name().is_none() {
                return Err(UsageError(format!(
                    "--to-file {} does not name a file",
                    escaped_path(path)
                )));
            }
            return Ok(Target::File(path.to_path_buf()));
        }
        let to = to.ok_or_else(|| UsageError("restore needs --to or --to-file".into()))?;
        let (pool, name) = to.split_once('/').unwrap_or((default_pool, to));
        naming::check_name("pool", pool).map_err(UsageError)?;
        naming::check_name("image", name).map_err(UsageError)?;
        Ok(Target::Image {
            pool: pool.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Image { pool, name } => write!(f, "{}", spec(pool, name, None)),
            Target::File(path) => write!(f, "{}", escaped_path(path)),
        }
    }
}

/// The point to restore and the files that lead to it, or why there is none. Only regular files
/// are used; when the point asked for is one that only an entry that is not a regular file
/// offers, the error names that entry and the newest point that can be restored instead.
pub fn choose<'a>(
    folder: &'a Folder,
    label: &str,
    at: Option<DateTime<Utc>>,
) -> Result<(&'a SnapName, Vec<&'a FolderFile>)> {
    let layout = &folder.layout;
    let usable = layout.point_at_or_before(at);
    if let Some(claimed) = folder.claimed.point_at_or_before(at) {
        let key = |p: &SnapName| (p.taken(), p.as_str().to_string());
        if usable.is_none_or(|usable| key(claimed) > key(usable)) {
            return Err(blocked(folder, label, claimed, usable));
        }
    }
    let Some(point) = usable else {
        let points = layout.points();
        match (points.first(), at) {
            (Some(oldest), Some(at)) => bail!(
                "{label} has no restore point at or before {}; the oldest is {oldest} ({})",
                output::time(at),
                output::time(oldest.taken())
            ),
            _ => {
                let unusable = layout.findings.iter().filter(|f| f.kind.is_error()).count()
                    + folder.not_regular.len();
                let hint = match unusable {
                    0 => String::new(),
                    n => format!(" ({n} file(s) cannot be restored; see `cephbackup list`)"),
                };
                bail!("{label} has no restorable backup{hint}")
            }
        }
    };
    let route = layout
        .route(point)
        .ok_or_else(|| anyhow!("{label}: no route to {point} (a bug in the chain model)"))?;
    Ok((point, route))
}

/// The error for a point whose route needs an entry that is not a regular file.
fn blocked(
    folder: &Folder,
    label: &str,
    point: &SnapName,
    usable: Option<&SnapName>,
) -> anyhow::Error {
    let route = folder.claimed.route(point).unwrap_or_default();
    let culprit = route.iter().find_map(|link| {
        let checksum = format!("{}{CHECKSUM_SUFFIX}", link.name);
        let not_regular = folder
            .not_regular
            .iter()
            .find(|entry| entry.name == link.name || entry.name == checksum)
            .map(|entry| (&entry.name, entry.message()));
        not_regular.or_else(|| {
            folder
                .refused
                .iter()
                .find(|(name, _)| *name == link.name)
                .map(|(name, why)| (name, why.clone()))
        })
    });
    let why = match culprit {
        Some((name, message)) => format!("{}: {message}", escaped_path(&folder.path.join(name))),
        None => "it needs a file that cannot be read (see `cephbackup list`)".to_string(),
    };
    let instead = match usable {
        Some(usable) => {
            format!("; the newest point that can be restored is {usable} (--at {usable})")
        }
        None => "; no point at or before it can be restored".to_string(),
    };
    anyhow!("cannot restore {label} as of {point}: {why}{instead}")
}

/// What `restore` is asked for.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The pool the image was backed up from (a section of the configuration).
    pub pool: String,
    pub image: String,
    /// The new image, `[POOL/]NAME`; or else
    pub to: Option<String>,
    /// the new local raw file.
    pub to_file: Option<PathBuf>,
    /// The newest point taken at or before this instant; the latest without it.
    pub at: Option<DateTime<Utc>>,
    /// Only show the steps.
    pub check: bool,
    /// One JSON document on stdout; the steps on stderr.
    pub json: bool,
}

/// Where the restore's own lines go: stdout, unless stdout carries the JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Say {
    Stdout,
    Stderr,
}

impl Say {
    fn line(self, line: &str) {
        match self {
            Say::Stdout => outln!("{line}"),
            Say::Stderr => eprintln!("{line}"),
        }
    }
}

/// The `--json` document of a restore that succeeded (or, in check mode, was shown).
#[derive(Debug, Serialize)]
struct RestoreDoc {
    #[serde(flatten)]
    envelope: Envelope,
    pool: String,
    image: String,
    /// The restore point: its snapshot and when it was taken.
    snapshot: String,
    time: String,
    target: TargetDoc,
    /// The backup folder the files were read from.
    folder: String,
    /// The files replayed, full backup first.
    files: Vec<RestoredFile>,
    /// Files whose `.sha256` file was checked as they were read.
    checksums_checked: usize,
    /// True when nothing was done (`--check`).
    check_mode: bool,
    duration_seconds: f64,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TargetDoc {
    Image { pool: String, image: String },
    File { path: String },
}

#[derive(Debug, Serialize)]
struct RestoredFile {
    file: String,
    /// `full` or `diff`.
    kind: &'static str,
    snapshot: String,
    /// The size of the file in the folder.
    bytes: u64,
    /// False when the file has no `.sha256` file, so nothing proves its bytes (the original
    /// tool's files have none); the route chosen has as few such files as the folder allows.
    proven: bool,
}

fn restore_doc(
    args: &RestoreOptions,
    point: &SnapName,
    target: &Target,
    folder: &Path,
    route: &[&FolderFile],
    checked: usize,
    started: Instant,
) -> RestoreDoc {
    RestoreDoc {
        envelope: Envelope::new("restore", Utc::now()),
        pool: args.pool.clone(),
        image: args.image.clone(),
        snapshot: point.as_str().to_string(),
        time: rfc3339(point.taken()),
        target: match target {
            Target::Image { pool, name } => TargetDoc::Image {
                pool: pool.clone(),
                image: name.clone(),
            },
            Target::File(path) => TargetDoc::File {
                path: path.display().to_string(),
            },
        },
        folder: folder.display().to_string(),
        files: route
            .iter()
            .map(|link| RestoredFile {
                file: link.name.clone(),
                kind: if link.file.is_full() { "full" } else { "diff" },
                snapshot: link.file.snap.as_str().to_string(),
                bytes: link.size,
                proven: link.checksum.is_some(),
            })
            .collect(),
        checksums_checked: checked,
        check_mode: args.check,
        duration_seconds: started.elapsed().as_secs_f64(),
    }
}

pub fn run(config: &Config, args: &RestoreOptions, locking: &lock::Locking) -> Result<()> {
    let started = Instant::now();
    let say = if args.json { Say::Stderr } else { Say::Stdout };
    let job = catalog::section(config, &args.pool)?;
    naming::check_name("image", &args.image).map_err(UsageError)?;
    let target = Target::parse(args.to.as_deref(), args.to_file.as_deref(), &job.pool)?;
    let label = spec(&job.pool, &args.image, None);
    let dir = ImageDir::new(&job.destination, &job.pool, &args.image);
    let shown_dir = escaped_path(&dir.path());
    match fs::metadata(dir.path()) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("no backups of {label}: {shown_dir} is not a folder"),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("no backups of {label}: {shown_dir} does not exist")
        }
        // Permission denied, an I/O error: say so, it is not the same as no backups.
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read the backups of {label}: {shown_dir}"))
        }
    }
    // Shared: other restores and checks may read along, but no backup may prune meanwhile.
    let _lock = locking.image(&job.pool, &args.image, lock::Kind::Shared)?;
    let mut scanned = read::scan(&dir, &args.image)?;
    // Every file of the route is opened and its length checked before anything is created or
    // planned, with these bounds; a full known to be of the wrong length is no route at all.
    let limits = scanned.refuse_wrong_sized();
    for (name, why) in &scanned.refused {
        warn!(
            "{}: {why}; no route uses it",
            escaped_path(&scanned.path.join(name))
        );
    }
    let (point, route) = choose(&scanned, &label, args.at)?;
    let rbd = Rbd::new(job.cluster());
    let folder = dir.path();

    match &target {
        Target::Image { pool, name } if rbd.image_exists(pool, name)? => {
            bail!("{target} exists already; restore never writes into an existing image")
        }
        Target::File(path) => match fs::symlink_metadata(path) {
            Ok(_) => bail!("{target} exists already; restore never overwrites a file"),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot check whether {target} exists"))
            }
        },
        _ => {}
    }
    let instead = |err: anyhow::Error, link: &FolderFile| {
        instead_of_bad_file(err, &scanned.layout, link, point, args.at)
    };
    for link in &route {
        interrupt::check()?;
        read::precheck(&folder, link, &limits.of(link)).map_err(|err| instead(err, link))?;
    }
    // The route has the fewest unproven files the folder allows; those it has are named.
    for link in route.iter().filter(|link| link.checksum.is_none()) {
        warn!(
            "{}: no checksum file {}{CHECKSUM_SUFFIX} proves its bytes (files written by the \
             original tool have none); it is used as it is",
            escaped_path(&folder.join(&link.name)),
            escaped(&link.name)
        );
    }
    say.line(&format!(
        "Restoring {label} as of {point} ({}) into {target}, from {} file(s) in {}",
        output::time(point.taken()),
        route.len(),
        escaped_path(&folder)
    ));
    let steps = match &target {
        Target::Image { pool, name } => image_steps(&rbd, pool, name, &route),
        Target::File(_) => file_steps(&route),
    };
    if args.check {
        for step in &steps {
            say.line(&step.describe(&folder, &target));
        }
        say.line("Check mode: nothing was done.");
        if args.json {
            let doc = restore_doc(args, point, &target, &folder, &route, 0, started);
            outln!("{}", output::json(&doc)?);
        }
        return Ok(());
    }

    let mut failed_at = None;
    let done = match &target {
        Target::Image { pool, name } => into_image(
            &rbd,
            (pool, name),
            &folder,
            &steps,
            &limits,
            say,
            &mut failed_at,
        ),
        Target::File(path) => {
            into_file(path, &folder, &steps, &limits, say, &mut failed_at).map_err(blame_signal)
        }
    };
    let checked = match (done, failed_at) {
        (Ok(checked), _) => checked,
        (Err(err), Some(link)) => return Err(instead(err, link)),
        (Err(err), None) => return Err(err),
    };
    say.line(&format!(
        "Restored {target} as of {point}: {} file(s) applied, {checked} checked against their \
         .sha256 file, in {}",
        route.len(),
        progress::duration(started.elapsed())
    ));
    if args.json {
        let doc = restore_doc(args, point, &target, &folder, &route, checked, started);
        outln!("{}", output::json(&doc)?);
    }
    Ok(())
}

/// When a backup file itself is what failed (unreadable, corrupt, not what its checksum says),
/// adds the newest point at or before the one asked for that does not need that file: the one
/// to restore instead, with `--at`. A failure of `rbd`, of the target or a signal is left as it is.
fn instead_of_bad_file(
    err: anyhow::Error,
    layout: &Layout,
    bad: &FolderFile,
    point: &SnapName,
    at: Option<DateTime<Utc>>,
) -> anyhow::Error {
    let not_the_file = interrupt::received().is_some()
        || CommandError::find(&err).is_some()
        || err.chain().any(|cause| {
            cause.downcast_ref::<TargetFailed>().is_some()
                || cause.downcast_ref::<interrupt::Interrupted>().is_some()
        });
    if not_the_file {
        return err;
    }
    let asked = at.unwrap_or_else(|| point.taken());
    let name = escaped(&bad.name);
    match layout.newest_avoiding(&[bad.name.as_str()], Some(asked)) {
        Some(good) => anyhow!(
            "{err:#}; {point} needs {name}, so it cannot be restored; the newest point that does \
             not is {good} ({}): restore it with --at {good}",
            output::time(good.taken())
        ),
        None => anyhow!(
            "{err:#}; {point} needs {name}, and no earlier point can be restored without it"
        ),
    }
}

/// One thing a restore does. The one list of steps is what `--check` prints and what a real run
/// prints, step by step, as it performs it.
struct Step<'a> {
    link: &'a FolderFile,
    /// Which file of the route `link` is, from 1, of how many.
    number: (usize, usize),
    /// What is done with the file, for people: `Importing`, `Applying`, `Writing`; none for a
    /// step that reads no file.
    verb: Option<&'static str>,
    action: Action,
}

enum Action {
    /// The file's raw content (unpacked on the fly when compressed, checked record by record
    /// when a diff) is streamed into this command's stdin.
    Feed(CommandLine),
    /// This command is run as it is.
    Run(CommandLine),
    /// The file is written into, or replayed onto, the `--to-file` target by this process.
    Rebuild,
}

/// Into a new image: `rbd import -` of the full, `rbd snap create` of its snapshot (the next
/// diff starts from it), then `rbd import-diff -` of each diff in order.
fn image_steps<'a>(rbd: &Rbd, pool: &str, name: &str, route: &[&'a FolderFile]) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    for (index, link) in route.iter().enumerate() {
        let number = (index + 1, route.len());
        if link.file.is_full() {
            steps.push(Step {
                link,
                number,
                verb: Some("Importing"),
                action: Action::Feed(rbd.import(pool, name)),
            });
            steps.push(Step {
                link,
                number,
                verb: None,
                action: Action::Run(rbd.snap_create_command(pool, name, link.file.snap.as_str())),
            });
        } else {
            steps.push(Step {
                link,
                number,
                verb: Some("Applying"),
                action: Action::Feed(rbd.import_diff(pool, name)),
            });
        }
    }
    steps
}

/// Into a new local file: the full written with holes, then each diff replayed onto it.
fn file_steps<'a>(route: &[&'a FolderFile]) -> Vec<Step<'a>> {
    route
        .iter()
        .enumerate()
        .map(|(index, link)| Step {
            link,
            number: (index + 1, route.len()),
            verb: Some(if link.file.is_full() {
                "Writing"
            } else {
                "Applying"
            }),
            action: Action::Rebuild,
        })
        .collect()
}

impl Step<'_> {
    /// The step for people, one line: what is done with which file (`[2/5]` of the route), and
    /// into what. Never a shell command: none runs (files are unpacked, checked and streamed by
    /// this process); the `rbd` verb named is the one that does run, and `-v` logs its full
    /// command line and duration.
    fn describe(&self, folder: &Path, target: &Target) -> String {
        let path = escaped_path(&folder.join(&self.link.name));
        let (number, total) = self.number;
        let verb = self.verb.unwrap_or_default();
        let unpacked = if self.link.file.compressed() {
            "its tar member unpacked, "
        } else {
            ""
        };
        match &self.action {
            Action::Feed(_) if self.link.file.is_full() => format!(
                "[{number}/{total}] {verb} {path} into {target}: {unpacked}streamed to rbd import"
            ),
            Action::Feed(_) => format!(
                "[{number}/{total}] {verb} {path} to {target}: {unpacked}checked record by \
                 record, streamed to rbd import-diff"
            ),
            Action::Run(_) => format!(
                "Creating snapshot {}@{} (the next diff starts from it): rbd snap create",
                target,
                escaped(self.link.file.snap.as_str())
            ),
            Action::Rebuild if self.link.file.is_full() => {
                format!("[{number}/{total}] {verb} {path} into {target}")
            }
            Action::Rebuild => format!("[{number}/{total}] {verb} {path} to {target}"),
        }
    }

    /// Logs that the step's file is being read, when it reads one.
    fn log(&self) {
        if self.verb.is_some() {
            info!(
                "applying {} ({} of {})",
                escaped(&self.link.name),
                self.number.0,
                self.number.1
            );
        }
    }
}

/// Replays the route into the new image `pool/name`; on failure removes what it created.
/// Returns how many files had a checksum to check.
fn into_image<'a>(
    rbd: &Rbd,
    (pool, name): (&str, &str),
    folder: &Path,
    steps: &[Step<'a>],
    limits: &Limits,
    say: Say,
    failed_at: &mut Option<&'a FolderFile>,
) -> Result<usize> {
    let target = Target::Image {
        pool: pool.to_string(),
        name: name.to_string(),
    };
    let result = replay(folder, &target, steps, limits, say, failed_at);
    let Err(err) = result else {
        return result;
    };
    let err = blame_signal(err);
    if is_already_exists(&err) {
        // Someone else created the image after our check: it is not ours to remove.
        return Err(err);
    }
    remove_partial(rbd, pool, name);
    Err(err)
}

/// Performs the steps of an image restore, each printed as it starts; `failed_at` is set to the
/// file whose step failed.
fn replay<'a>(
    folder: &Path,
    target: &Target,
    steps: &[Step<'a>],
    limits: &Limits,
    say: Say,
    failed_at: &mut Option<&'a FolderFile>,
) -> Result<usize> {
    let mut checked = 0;
    for step in steps {
        interrupt::check()?;
        say.line(&step.describe(folder, target));
        step.log();
        match &step.action {
            Action::Feed(cmd) => {
                *failed_at = Some(step.link);
                checked += usize::from(feed(cmd, folder, step.link, &limits.of(step.link))?);
                *failed_at = None;
            }
            Action::Run(cmd) => cmd.run()?,
            Action::Rebuild => bail!("a file step in an image restore (a bug)"),
        }
    }
    Ok(checked)
}

/// After SIGINT or SIGTERM, whatever failed (a killed `rbd`, a stopped stream) failed because of
/// the signal: say so, and let the exit status be the signal's.
fn blame_signal(err: anyhow::Error) -> anyhow::Error {
    match interrupt::check() {
        Err(interrupted) => {
            tracing::debug!("failure after the signal: {err:#}");
            anyhow::Error::new(interrupted).context("the restore was stopped")
        }
        Ok(()) => err,
    }
}

/// Streams one file's raw content into `cmd`'s stdin, diffs through the record checker, and
/// checks the file's checksum. True when there was a checksum to check.
fn feed(cmd: &CommandLine, folder: &Path, link: &FolderFile, limit: &read::Limit) -> Result<bool> {
    let path = folder.join(&link.name);
    let recorded = read::recorded_digest(folder, &link.name)?;
    let ((), facts) = read::read_raw(&path, link.file.compression, limit, |raw| {
        if link.file.is_full() {
            let mut input = FirstError::new(raw);
            let ran = cmd.run_with_input(&mut input);
            return settle(ran, input.error());
        }
        let diff = CheckedDiff::new(BufReader::with_capacity(BUFFER, raw), |header| {
            read::check_diff_header(link, header)
        })
        .map_err(anyhow::Error::msg)?;
        let mut input = FirstError::new(diff);
        let ran = cmd.run_with_input(&mut input);
        settle(ran, input.error())
    })
    .with_context(|| escaped_path(&path))?;
    read::check_digest(recorded.as_deref(), &facts).with_context(|| escaped_path(&path))?;
    Ok(recorded.is_some())
}

/// When reading the file failed, `rbd` only saw its input end early: the reading error is the
/// one that explains what happened.
fn settle(ran: Result<(), CommandError>, read_error: Option<&str>) -> Result<()> {
    match (ran, read_error) {
        (_, Some(problem)) => Err(anyhow::Error::msg(problem.to_string())),
        (Err(err), None) => Err(err.into()),
        (Ok(()), None) => Ok(()),
    }
}

fn is_already_exists(err: &anyhow::Error) -> bool {
    CommandError::find(err).map(CommandError::kind) == Some(FailureKind::AlreadyExists)
}

/// Removes the image a failed restore created, snapshots first; what cannot be removed is said.
fn remove_partial(rbd: &Rbd, pool: &str, name: &str) {
    let target = spec(pool, name, None);
    match rbd.image_exists(pool, name) {
        Ok(false) => return,
        Ok(true) => {}
        Err(err) => {
            warn!("cannot tell whether {target} was created, so it is left as it is: {err:#}");
            return;
        }
    }
    warn!("removing {target}: the restore did not complete");
    let removed = rbd.purge_snapshots(pool, name).run().and_then(|()| {
        let remove = rbd.remove_image(pool, name);
        let deadline = Instant::now() + WATCH_EXPIRY;
        loop {
            match remove.run() {
                Err(err) if is_still_watched(&err) && Instant::now() < deadline => {
                    warn!(
                        "{target} is still held by the rbd that was stopped; waiting for Ceph to \
                         release it (up to {} s; a second signal stops waiting)",
                        WATCH_EXPIRY.as_secs()
                    );
                    std::thread::sleep(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    });
    if let Err(err) = removed {
        warn!("{target} is left incomplete and must be removed by hand: {err}");
    }
}

/// A killed `rbd import` leaves its watch on the image until Ceph times it out, and until then
/// `rbd rm` fails with EBUSY (its snapshots are purged already, so nothing else is busy).
fn is_still_watched(err: &CommandError) -> bool {
    err.kind() == FailureKind::Busy
}

/// Rebuilds the point as a new file at `path`, each step printed as it starts; nothing appears
/// there unless it succeeds.
fn into_file<'a>(
    path: &Path,
    folder: &Path,
    steps: &[Step<'a>],
    limits: &Limits,
    say: Say,
    failed_at: &mut Option<&'a FolderFile>,
) -> Result<usize> {
    let shown = escaped_path(path);
    let partial = Partial::create(path)?;
    let target = Target::File(path.to_path_buf());
    let mut checked = 0;
    for step in steps {
        interrupt::check()?;
        say.line(&step.describe(folder, &target));
        step.log();
        let Action::Rebuild = step.action else {
            bail!("an image step in a file restore (a bug)");
        };
        *failed_at = Some(step.link);
        checked += usize::from(rebuild::apply_link(
            folder,
            step.link,
            limits,
            &partial.file,
            &shown,
        )?);
        *failed_at = None;
    }
    rebuild::sync(&partial.file, &shown)?;
    partial.commit()?;
    Ok(checked)
}

/// A `--to-file` target being written: a file named [`PARTIAL_PREFIX`]… in the target's folder,
/// locked with flock for as long as this process has it open, removed unless committed. When the
/// process is killed outright the lock goes with it, which is how [`remove_stale_partials`]
/// tells a leftover from a file another restore is still writing.
struct Partial {
    file: File,
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Partial {
    fn create(target: &Path) -> Result<Partial> {
        let shown = escaped_path(target);
        let parent = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .with_context(|| format!("{shown} does not name a file"))?;
        remove_stale_partials(parent);
        let cannot = |err: io::Error| {
            anyhow::Error::new(err).context(format!(
                "cannot create {shown}: cannot create a file in {}",
                escaped_path(parent)
            ))
        };
        for _ in 0..16 {
            let path = parent.join(partial_name(&name.to_string_lossy()));
            // Locked before it has a name where possible, so that no other restore can take it
            // for a leftover in between.
            let file = match create_locked(parent, &path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(cannot(err)),
            };
            info!("writing {} until it is complete", escaped_path(&path));
            return Ok(Partial {
                file,
                path,
                target: target.to_path_buf(),
                committed: false,
            });
        }
        Err(cannot(io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    /// Syncs the file and gives it the target's name, never replacing anything there.
    fn commit(mut self) -> Result<()> {
        let shown = escaped_path(&self.target);
        self.file.sync_all().map_err(|source| TargetFailed {
            target: shown.clone(),
            source,
        })?;
        rename_noreplace(&self.path, &self.target).with_context(|| {
            format!(
                "cannot move the finished file {} to {shown}",
                escaped_path(&self.path)
            )
        })?;
        self.committed = true;
        if let Some(parent) = self.target.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            // The data is synced; a lost rename after a crash leaves a partial to clean up.
            if let Err(err) = File::open(parent).and_then(|d| d.sync_all()) {
                warn!("cannot sync the folder {}: {err}", escaped_path(parent));
            }
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(err) = fs::remove_file(&self.path) {
            if err.kind() != io::ErrorKind::NotFound {
                warn!(
                    "cannot remove the unfinished {}: {err}; the next restore into its folder \
                     removes it",
                    escaped_path(&self.path)
                );
            }
        }
    }
}

/// `.cephbackup-restore.<random>.<name>`, cut to the longest name a filesystem takes.
fn partial_name(name: &str) -> String {
    let random: String = {
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            ^ u64::from(std::process::id()).rotate_left(32);
        (0..8)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(seed % 36) as usize])
            })
            .collect()
    };
    let mut partial = format!("{PARTIAL_PREFIX}{random}.{name}");
    while partial.len() > NAME_MAX {
        partial.pop();
    }
    partial
}

/// Creates `path` (which must not exist) in `dir`, readable by its owner only, already holding
/// an exclusive flock. With `O_TMPFILE` the file is created nameless, locked, then linked to its
/// name; on filesystems without it, created by name and locked at once.
fn create_locked(dir: &Path, path: &Path) -> io::Result<File> {
    let anonymous = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match anonymous {
        Ok(file) => {
            lock(&file)?;
            let from = format!("/proc/self/fd/{}", file.as_raw_fd());
            // The link fails if `path` exists, so nothing is replaced.
            let linked = rustix::fs::linkat(
                rustix::fs::CWD,
                from.as_str(),
                rustix::fs::CWD,
                path,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            );
            let Err(errno) = linked else {
                return Ok(file);
            };
            let err = io::Error::from(errno);
            // Without /proc the nameless file cannot be given a name: fall back.
            if err.kind() != io::ErrorKind::NotFound {
                return Err(err);
            }
        }
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
            ) => {}
        Err(err) => return Err(err),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    lock(&file)?;
    Ok(file)
}

/// Takes an exclusive flock on `file` without waiting.
fn lock(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)
}

/// Renames `from` to `to` unless `to` exists (of any kind, a dangling symlink included).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let renamed = rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    );
    let Err(errno) = renamed else {
        return Ok(());
    };
    let err = io::Error::from(errno);
    if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(err);
    }
    // Filesystems without RENAME_NOREPLACE: a hard link also fails when `to` exists.
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

/// Removes what restores killed outright left in `dir`: files named [`PARTIAL_PREFIX`]… that
/// are regular files of ours and that nobody holds a lock on. Problems are logged, never fatal:
/// this is tidying up, not the restore asked for.
pub fn remove_stale_partials(dir: &Path) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            tracing::debug!(
                "cannot look for unfinished restores in {}: {err}",
                escaped_path(dir)
            );
            return;
        }
    };
    let me = crate::folder::untrusted::effective_uid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().starts_with(PARTIAL_PREFIX.as_bytes()) {
            continue;
        }
        let path = entry.path();
        // Never through a symlink, never blocking on a FIFO, only files this user could have
        // written: anything else with that name is not ours to remove.
        let Ok(file) = crate::folder::untrusted::open_regular(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        if meta.uid() != me {
            continue;
        }
        if lock(&file).is_err() {
            info!(
                "{} is being written by another restore; left alone",
                escaped_path(&path)
            );
            continue;
        }
        // Still the file we locked, not one renamed there meanwhile.
        let same = fs::symlink_metadata(&path)
            .is_ok_and(|now| now.dev() == meta.dev() && now.ino() == meta.ino());
        if !same {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => warn!(
                "removed {}, left by a restore that was killed before it finished",
                escaped_path(&path)
            ),
            Err(err) => warn!(
                "cannot remove {}, left by a restore that was killed: {err}",
                escaped_path(&path)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::rbd::Cluster;
    use crate::folder::chain::Layout;
    use crate::folder::read::NotRegularEntry;
    use crate::folder::untrusted::EntryKind;

    const S0: &str = "BACKUPUTC20261120T020000";
    const S1: &str = "BACKUPUTC20261121T020000";
    const S2: &str = "BACKUPUTC20261122T020000";

    /// A folder of regular files only.
    fn folder(names: &[String]) -> Folder {
        Folder {
            path: "/b/rbd/vm".into(),
            layout: Layout::build("vm", names),
            claimed: Layout::build("vm", names),
            not_regular: vec![],
            refused: vec![],
        }
    }

    #[test]
    fn targets() {
        let parse = |to: &str| Target::parse(Some(to), None, "rbd").map_err(|e| e.0);
        assert_eq!(
            parse("vm-restored"),
            Ok(Target::Image {
                pool: "rbd".into(),
                name: "vm-restored".into()
            })
        );
        assert_eq!(
            parse("ssd/vm"),
            Ok(Target::Image {
                pool: "ssd".into(),
                name: "vm".into()
            })
        );
        for bad in ["", "a/b/c", "vm@snap", "-x", "ssd/", "/vm"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Target::parse(None, Some(Path::new("/tmp/vm.raw")), "rbd").map_err(|e| e.0),
            Ok(Target::File("/tmp/vm.raw".into()))
        );
        assert!(Target::parse(None, Some(Path::new("/")), "rbd").is_err());
    }

    #[test]
    fn no_point_is_explained() {
        let names = [format!("vm@{S0}.full"), format!("vm@{S1}.diff_from_{S0}")];
        let folder = folder(&names);
        let (point, route) = choose(&folder, "rbd/vm", None).unwrap();
        assert_eq!(point.as_str(), S1);
        assert_eq!(route.len(), 2);
        let early = SnapName::parse(S0).unwrap().taken() - chrono::Duration::days(1);
        let err = choose(&folder, "rbd/vm", Some(early)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "rbd/vm has no restore point at or before 2026-11-19 02:00:00 UTC; the oldest \
                 is {S0} (2026-11-20 02:00:00 UTC)"
            )
        );
        let broken = super::tests::folder(&names[1..]);
        let err = choose(&broken, "rbd/vm", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rbd/vm has no restorable backup (1 file(s) cannot be restored; see `cephbackup list`)"
        );
    }

    #[test]
    fn a_point_only_an_entry_that_is_not_a_regular_file_offers_is_refused_by_name() {
        let full = format!("vm@{S0}.full");
        let d1 = format!("vm@{S1}.diff_from_{S0}");
        let d2 = format!("vm@{S2}.diff_from_{S1}");
        let all = [full.clone(), d1.clone(), d2.clone()];
        let mut folder = folder(&all[..2]);
        folder.claimed = Layout::build("vm", &all);
        folder.not_regular = vec![NotRegularEntry {
            name: d2.clone(),
            kind: EntryKind::Symlink,
        }];
        let err = choose(&folder, "rbd/vm", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot restore rbd/vm as of {S2}: /b/rbd/vm/{d2}: is a symbolic link, not a \
                 regular file; it is not read; the newest point that can be restored is {S1} \
                 (--at {S1})"
            )
        );
        // An older point does not need it.
        let at = SnapName::parse(S1).unwrap().taken();
        let (point, route) = choose(&folder, "rbd/vm", Some(at)).unwrap();
        assert_eq!(point.as_str(), S1);
        assert_eq!(route.len(), 2);
        // A checksum file that is not a regular file blocks its backup file the same way.
        folder.not_regular = vec![NotRegularEntry {
            name: format!("{d2}.sha256"),
            kind: EntryKind::Fifo,
        }];
        let err = choose(&folder, "rbd/vm", None).unwrap_err().to_string();
        assert!(
            err.contains(&format!("/b/rbd/vm/{d2}.sha256: is a FIFO")),
            "{err}"
        );
        // When the full itself is the entry, nothing at or before the point can be restored.
        let mut folder = super::tests::folder(&[]);
        folder.claimed = Layout::build("vm", &all);
        folder.not_regular = vec![NotRegularEntry {
            name: full.clone(),
            kind: EntryKind::Fifo,
        }];
        let err = choose(&folder, "rbd/vm", None).unwrap_err().to_string();
        assert!(
            err.ends_with("is a FIFO, not a regular file; it is not read; no point at or before it can be restored"),
            "{err}"
        );
    }

    #[test]
    fn the_steps_say_what_is_done_and_show_no_command() {
        let names = [
            format!("vm@{S0}.full.tar.gz"),
            format!("vm@{S1}.diff_from_{S0}"),
        ];
        let folder = folder(&names);
        let (_, route) = choose(&folder, "rbd/vm", None).unwrap();
        let rbd = Rbd::new(Cluster {
            conf: "/c".into(),
            user: None,
            keyring: None,
            timeout: 0,
        });
        let image = Target::Image {
            pool: "rbd".into(),
            name: "new".into(),
        };
        let file = Target::File("/r/vm.raw".into());
        let shown = |steps: Vec<Step>, target: &Target| -> Vec<String> {
            steps
                .iter()
                .map(|step| step.describe(Path::new("/b/rbd/vm"), target))
                .collect()
        };
        // What is done, said as such: no shell command that never runs.
        let steps = image_steps(&rbd, "rbd", "new", &route);
        assert_eq!(
            shown(steps, &image),
            [
                format!(
                    "[1/2] Importing /b/rbd/vm/vm@{S0}.full.tar.gz into rbd/new: its tar member \
                     unpacked, streamed to rbd import"
                ),
                format!(
                    "Creating snapshot rbd/new@{S0} (the next diff starts from it): rbd snap \
                     create"
                ),
                format!(
                    "[2/2] Applying /b/rbd/vm/vm@{S1}.diff_from_{S0} to rbd/new: checked record \
                     by record, streamed to rbd import-diff"
                ),
            ]
        );
        assert_eq!(
            shown(file_steps(&route), &file),
            [
                format!("[1/2] Writing /b/rbd/vm/vm@{S0}.full.tar.gz into /r/vm.raw"),
                format!("[2/2] Applying /b/rbd/vm/vm@{S1}.diff_from_{S0} to /r/vm.raw"),
            ]
        );
    }

    #[test]
    fn partial_names_are_recognisable_and_fit() {
        let name = partial_name("vm.raw");
        assert!(name.starts_with(PARTIAL_PREFIX), "{name}");
        assert!(name.ends_with(".vm.raw"), "{name}");
        assert_eq!(name.len(), PARTIAL_PREFIX.len() + 8 + 7);
        assert_eq!(partial_name(&"x".repeat(255)).len(), 255);
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_unlocked_partials_of_ours_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vm.raw");
        // A restore in progress: its partial is locked and stays.
        let running = Partial::create(&target).unwrap();
        let running_name = running
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        // What a killed restore leaves: a partial nobody holds.
        let killed = dir.path().join(format!("{PARTIAL_PREFIX}dead.vm.raw"));
        fs::write(&killed, b"half an image").unwrap();
        // Not ours: a symlink and a folder with the prefix, and another user's file.
        let link = dir.path().join(format!("{PARTIAL_PREFIX}link"));
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        fs::create_dir(dir.path().join(format!("{PARTIAL_PREFIX}dir"))).unwrap();
        let foreign = dir.path().join(format!("{PARTIAL_PREFIX}foreign"));
        fs::write(&foreign, b"").unwrap();
        let root = crate::folder::untrusted::effective_uid() == 0;
        if root {
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        }
        remove_stale_partials(dir.path());
        let mut expected = vec![
            format!("{PARTIAL_PREFIX}dir"),
            format!("{PARTIAL_PREFIX}link"),
            running_name.clone(),
        ];
        if root {
            expected.insert(1, format!("{PARTIAL_PREFIX}foreign"));
        }
        expected.sort();
        assert_eq!(names_in(dir.path()), expected);
        // Dropped without commit: removed at once.
        drop(running);
        assert!(!dir.path().join(&running_name).exists());
    }

    #[test]
    fn a_partial_never_replaces_what_appeared_at_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vm.raw");
        let partial = Partial::create(&target).unwrap();
        fs::write(&target, b"someone else's").unwrap();
        let err = partial.commit().unwrap_err();
        assert!(format!("{err:#}").contains("File exists"), "{err:#}");
        assert_eq!(fs::read(&target).unwrap(), b"someone else's");
        assert_eq!(names_in(dir.path()), ["vm.raw"]);
    }

    /// A folder holding a full backup of `len` bytes of data, and its layout.
    fn one_full(len: usize) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("vm@{S0}.full");
        let data: Vec<u8> = (0..len)
            .map(|i| u8::try_from(i % 251).unwrap() | 1)
            .collect();
        fs::write(dir.path().join(&name), data).unwrap();
        (dir, Layout::build("vm", &[name]))
    }

    /// Restores the newest point of `layout` (backups in `backups`) into the file `target`;
    /// the error the restore ends with.
    fn into_file_failing(backups: &Path, layout: &Layout, target: &Path) -> anyhow::Error {
        let route = layout.route(layout.points()[0]).unwrap();
        into_file(
            target,
            backups,
            &file_steps(&route),
            &Limits::default(),
            Say::Stdout,
            &mut None,
        )
        .unwrap_err()
    }

    #[test]
    fn a_target_folder_that_is_missing_is_named_as_such() {
        let (backups, layout) = one_full(8192);
        let target = backups.path().join("no/such/folder/vm.raw");
        let err = into_file_failing(backups.path(), &layout, &target);
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot create {}: cannot create a file in {}: No such file or directory (os \
                 error 2)",
                target.display(),
                target.parent().unwrap().display()
            )
        );
    }

    /// A tmpfs mounted for one test, unmounted when dropped; `None` where mounting is not allowed.
    struct Mount(tempfile::TempDir);

    impl Mount {
        fn tmpfs(options: &str) -> Option<Mount> {
            let dir = tempfile::tempdir().unwrap();
            let mounted = CommandLine::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(dir.path())
                .run()
                .is_ok();
            if !mounted {
                eprintln!("skipped: cannot mount a tmpfs here");
                return None;
            }
            Some(Mount(dir))
        }
    }

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = CommandLine::new("umount").arg(self.0.path()).run();
        }
    }

    #[test]
    fn a_full_target_filesystem_is_blamed_on_the_target() {
        let (backups, layout) = one_full(4 << 20);
        let Some(mount) = Mount::tmpfs("size=1m") else {
            return;
        };
        let target = mount.0.path().join("vm.raw");
        let err = into_file_failing(backups.path(), &layout, &target);
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot write {}: No space left on device (os error 28)",
                target.display()
            )
        );
        // Nothing is left on the full filesystem.
        assert_eq!(names_in(mount.0.path()), Vec::<String>::new());
    }

    #[test]
    fn a_read_only_target_folder_is_named_with_its_cause() {
        let (backups, layout) = one_full(8192);
        let Some(mount) = Mount::tmpfs("ro,size=1m") else {
            return;
        };
        let target = mount.0.path().join("vm.raw");
        let err = into_file_failing(backups.path(), &layout, &target);
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot create {}: cannot create a file in {}: Read-only file system (os error \
                 30)",
                target.display(),
                mount.0.path().display()
            )
        );
    }

    #[test]
    fn the_json_document_names_the_point_its_time_the_target_and_the_files() {
        let names = [
            format!("vm@{S0}.full.tar.gz"),
            format!("vm@{S1}.diff_from_{S0}"),
        ];
        let mut layout = Layout::build("vm", &names);
        layout.files[0].size = 1000;
        layout.files[1].size = 20;
        let point = SnapName::parse(S1).unwrap();
        let route = layout.route(&point).unwrap();
        let args = RestoreOptions {
            pool: "rbd".into(),
            image: "vm".into(),
            json: true,
            ..RestoreOptions::default()
        };
        let started = Instant::now();
        for (target, check) in [
            (
                Target::Image {
                    pool: "other".into(),
                    name: "vm-restored".into(),
                },
                false,
            ),
            (Target::File("/tmp/vm.raw".into()), true),
        ] {
            let args = RestoreOptions {
                check,
                ..args.clone()
            };
            let doc = restore_doc(
                &args,
                &point,
                &target,
                Path::new("/b/rbd/vm"),
                &route,
                1,
                started,
            );
            let value = serde_json::to_value(&doc).unwrap();
            assert_eq!(value["kind"], "restore");
            assert_eq!(value["snapshot"], S1);
            assert_eq!(value["time"], "2026-11-21T02:00:00Z");
            assert_eq!(value["files"][0]["file"], names[0].as_str());
            assert_eq!(value["files"][0]["bytes"], 1000);
            assert_eq!(value["files"][1]["kind"], "diff");
            assert_eq!(value["check_mode"], check);
            crate::commands::schema_check::assert_valid("restore", &value);
            if check {
                assert_eq!(value["target"]["kind"], "file");
                assert_eq!(value["target"]["path"], "/tmp/vm.raw");
            } else {
                assert_eq!(
                    value["target"],
                    serde_json::json!({"kind": "image", "pool": "other", "image": "vm-restored"})
                );
            }
        }
    }
}

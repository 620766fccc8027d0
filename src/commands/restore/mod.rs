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
//! is left out of every route ([`ScannedFolder::refuse_wrong_sized`](crate::folder::read::ScannedFolder::refuse_wrong_sized)), and named.
//!
//! The backup folder is untrusted ground ([`crate::folder::read`]): only regular files are read, and
//! before anything is created every file of the route is opened and its declared length checked,
//! so a symlink, a FIFO or an archive declaring an absurd size is refused by name, in one line. A
//! point that only such an entry offers is refused, never quietly replaced by an older one, while
//! older points whose routes do not need it restore as usual.
//!
//! `--to-file` rebuilds the point as a new local sparse raw file instead ([`crate::folder::format::rebuild`]),
//! with no cluster at all. The file is written under a recognisable name in the target's folder
//! ([`PARTIAL_PREFIX`](crate::folder::naming::PARTIAL_PREFIX), [`PartialFile`](crate::folder::door::PartialFile)) while its writer holds an flock on it, and renamed to the target only when
//! complete; a restore killed outright leaves that file unlocked, and the next restore into the
//! same folder removes it. Errors name what failed: the target (a full disk, a folder that does
//! not exist or cannot be written), or the backup file.
//!
//! A restore is one list of steps (`image_steps`, `file_steps`): a real run prints each as it
//! starts it, saying what it does with which file (never a shell command: nothing runs through
//! one), and ends with its duration. `--check` does nothing: it prints the steps on stderr, and
//! on stdout the same restore as a script of stock-tool commands ([`by_hand`]) an administrator
//! can paste. When a backup file is what failed, the error names the newest point that does not
//! need it, for `--at`. With `--json` stdout carries one document (`RestoreDoc`) instead: what
//! was restored, into what, the point and its time, and the files used.
//!
//! By job: [`route`] (the target, the point and the files that lead to it, and the point to
//! restore instead), [`steps`] (the one list of steps), [`by_hand`] (check mode's script), [`to_image`] and [`to_file`] (performing
//! them), [`document`] (the `--json` document); this module runs a restore from start to end.

mod by_hand;
mod document;
mod route;
mod steps;
mod to_file;
mod to_image;

use crate::outln;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tracing::warn;

use crate::backup::execute::ClusterFactory;
use crate::cluster::rbd::{spec, ClusterOps, Rbd};
use crate::commands::catalog;
use crate::config::{Config, PoolJob};
use crate::folder::chain::FolderFile;
use crate::folder::door::Door;
use crate::folder::naming;
use crate::folder::read::{self, Limits, ScannedFolder};
use crate::folder::shared::EntryKind;
use crate::output::{self, escaped, escaped_path};
use crate::{interrupt, lock, progress, UsageError};
use document::restore_doc;
use route::instead_of_bad_file;
pub use route::{choose, Target};
use steps::{file_steps, image_steps, RestoreStep};
use to_file::into_file;
use to_image::into_image;

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
    /// The identity file that opens encrypted files.
    pub identity: Option<PathBuf>,
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

pub fn run(config: &Config, args: &RestoreOptions, locking: &lock::Locking) -> Result<()> {
    crate::folder::format::encrypt::use_identity_file(args.identity.as_deref())?;
    run_on(config, args, locking, &|job| {
        Box::new(Rbd::new(job.cluster()))
    })
}

/// [`run`], into the clusters `cluster` makes.
fn run_on(
    config: &Config,
    args: &RestoreOptions,
    locking: &lock::Locking,
    cluster: &ClusterFactory,
) -> Result<()> {
    let started = Instant::now();
    // Check mode's stdout is the script of stock-tool commands ([`by_hand`]): its own lines go to
    // stderr, as with --json.
    let say = if args.json || args.check {
        Say::Stderr
    } else {
        Say::Stdout
    };
    let job = catalog::section(config, &args.pool)?;
    naming::check_name("image", &args.image).map_err(UsageError)?;
    let target = Target::parse(args.to.as_deref(), args.to_file.as_deref(), &job.pool)?;
    let label = spec(&job.pool, &args.image, None);
    let dir = job.image_folder(&args.image);
    check_folder(job, &args.image, &label)?;
    // Shared: other restores and checks may read along, but no backup may prune meanwhile.
    let _lock = locking.image(&job.pool, &args.image, lock::Kind::Shared)?;
    let (scanned, limits) = scan(&*dir, &args.image)?;
    let (point, route) = choose(&scanned, &label, args.at)?;
    let rbd = cluster(job);
    let folder = dir.location();
    let door: &dyn Door = &*dir;
    refuse_existing(&*rbd, &target)?;
    let instead = |err: anyhow::Error, link: &FolderFile| {
        instead_of_bad_file(err, &scanned.layout, link, point, args.at)
    };
    for link in &route {
        interrupt::check()?;
        read::precheck(door, link, &limits.of(link)).map_err(|err| instead(err, link))?;
    }
    warn_unproven(&folder, &route);
    say.line(&format!(
        "Restoring {label} as of {point} ({}) into {target}, from {} file(s) in {}",
        output::time(point.taken()),
        route.len(),
        escaped_path(&folder)
    ));
    let steps = match &target {
        Target::Image { .. } => image_steps(&route),
        Target::File(_) => file_steps(&route),
    };
    // The `--json` document, when asked for, once the checksums checked are known.
    let print_json = |checked: usize| -> Result<()> {
        if args.json {
            let doc = restore_doc(args, point, &target, &folder, &route, checked, started);
            outln!("{}", output::json(&doc)?);
        }
        Ok(())
    };
    if args.check {
        for step in &steps {
            say.line(&step.describe(&folder, &target));
        }
        let cluster = job.cluster();
        let source = by_hand::Source {
            folder: &folder,
            cluster: &cluster,
            identity: args.identity.as_deref(),
        };
        let mut notes = Vec::new();
        let script = by_hand::script(&source, &route, &target, &mut notes);
        for note in &notes {
            warn!("{note}");
        }
        say.line(&format!(
            "Check mode: nothing was done. The same restore with the stock tools, on {}:",
            if args.json { "stderr" } else { "stdout" }
        ));
        for line in &script {
            if args.json {
                eprintln!("{line}");
            } else {
                outln!("{line}");
            }
        }
        return print_json(0);
    }

    let mut failed_at = None;
    let done = perform(&*rbd, &target, door, &steps, &limits, say, &mut failed_at);
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
    print_json(checked)
}

/// Reads the image's backup folder, and the bounds every file of a route is held to. Every file
/// of the route is opened and its length checked before anything is created or planned, with
/// these bounds; a full known to be of the wrong length is no route at all, and named.
fn scan(dir: &dyn Door, image: &str) -> Result<(ScannedFolder, Limits)> {
    let mut scanned = read::scan(dir, image)?;
    let limits = scanned.refuse_wrong_sized(dir);
    for (name, why) in &scanned.refused {
        warn!(
            "{}: {why}; no route uses it",
            escaped_path(&scanned.path.join(name))
        );
    }
    Ok((scanned, limits))
}

/// Performs the steps into the target, each printed as it starts; returns how many files had a
/// checksum to check. On failure `failed_at` is the file whose step failed, if one did.
fn perform<'a>(
    rbd: &dyn ClusterOps,
    target: &Target,
    folder: &dyn Door,
    steps: &[RestoreStep<'a>],
    limits: &Limits,
    say: Say,
    failed_at: &mut Option<&'a FolderFile>,
) -> Result<usize> {
    match target {
        Target::Image { pool, name } => {
            into_image(rbd, (pool, name), folder, steps, limits, say, failed_at)
        }
        Target::File(path) => {
            into_file(path, folder, steps, limits, say, failed_at).map_err(blame_signal)
        }
    }
}

/// The image's backup folder must be one: a folder that is missing is no backups, one that
/// cannot be read is said as such.
fn check_folder(job: &PoolJob, image: &str, label: &str) -> Result<()> {
    let shown_dir = escaped_path(&job.image_folder(image).location());
    match job.pool_folder().kind_of(image) {
        Ok(EntryKind::Directory) => Ok(()),
        Ok(kind) => bail!(
            "no backups of {label}: {shown_dir} is {}, not a folder",
            kind.described()
        ),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("no backups of {label}: {shown_dir} does not exist")
        }
        // Permission denied, an I/O error: say so, it is not the same as no backups.
        Err(err) => {
            Err(err).with_context(|| format!("cannot read the backups of {label}: {shown_dir}"))
        }
    }
}

/// A restore never writes into an image or over a file that exists.
fn refuse_existing(rbd: &dyn ClusterOps, target: &Target) -> Result<()> {
    match target {
        Target::Image { pool, name } if rbd.image_exists(pool, name)? => {
            bail!("{target} exists already; restore never writes into an existing image")
        }
        Target::File(path) => match fs::symlink_metadata(path) {
            Ok(_) => bail!("{target} exists already; restore never overwrites a file"),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("cannot check whether {target} exists")),
        },
        _ => Ok(()),
    }
}

/// The route has the fewest unproven files the folder allows; those it has are named.
fn warn_unproven(folder: &Path, route: &[&FolderFile]) {
    for link in route.iter().filter(|link| link.checksum.is_none()) {
        warn!(
            "{}: no checksum file {} proves its bytes (files written by the \
             original tool have none); it is used as it is",
            escaped_path(&folder.join(&link.name)),
            escaped(&naming::checksum_name(&link.name))
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::{Call, Fail, Fake};
    use crate::commands::chain::{self, Backups, S0, S1, S2};
    use crate::output::capture;
    use crate::test_fixtures::diff_file;

    /// Restores the newest point of `backups` into `rbd/vm-restored` of `fake`: the result and
    /// what was printed.
    fn restore_into(fake: &Fake, backups: &Backups) -> (Result<()>, String) {
        let args = RestoreOptions {
            pool: "rbd".into(),
            image: "vm".into(),
            to: Some("vm-restored".into()),
            ..RestoreOptions::default()
        };
        let fake = fake.clone();
        let cluster = move |_: &_| -> Box<dyn ClusterOps> { Box::new(fake.clone()) };
        capture::stdout(|| run_on(&backups.config, &args, &backups.locking, &cluster))
    }

    #[test]
    fn a_full_and_its_diffs_are_replayed_into_a_new_image() {
        let fake = Fake::default();
        let (result, stdout) = restore_into(&fake, &chain::backups());
        result.unwrap();
        assert_eq!(fake.data("rbd", "vm-restored"), Some(chain::latest()));
        assert_eq!(fake.snapshots("rbd", "vm-restored"), [S0, S1, S2]);
        let create = format!("snap create rbd/vm-restored@{S0}");
        assert_eq!(
            fake.calls(),
            [
                "ls rbd",
                "import - rbd/vm-restored",
                &create,
                "import-diff - rbd/vm-restored",
                "import-diff - rbd/vm-restored"
            ]
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 6, "{stdout}");
        assert!(lines[0].starts_with(&format!("Restoring rbd/vm as of {S2} (")));
        assert!(lines[2].starts_with("Creating snapshot rbd/vm-restored@"));
        assert!(
            lines[5].starts_with(&format!(
                "Restored rbd/vm-restored as of {S2}: 3 file(s) applied, 3 checked against \
                 their .sha256 file, in "
            )),
            "{stdout}"
        );
    }

    #[test]
    fn a_failing_import_diff_leaves_no_image_and_blames_rbd_not_the_file() {
        let fake = Fake::default();
        fake.fail(Call::ImportDiff, "rbd/vm-restored", Fail::TimedOut);
        let backups = chain::backups();
        let (result, _) = restore_into(&fake, &backups);
        // Not the file's fault: no older point is offered instead.
        let first_diff = backups.dir.join(diff_file(S0, S1));
        assert_eq!(
            format!("{:#}", result.unwrap_err()),
            format!("{}: timed out", first_diff.display())
        );
        assert_eq!(fake.data("rbd", "vm-restored"), None);
        let create = format!("snap create rbd/vm-restored@{S0}");
        assert_eq!(
            fake.changes(),
            [
                "import - rbd/vm-restored",
                &create,
                "import-diff - rbd/vm-restored",
                "snap purge rbd/vm-restored",
                "rm rbd/vm-restored"
            ]
        );
    }

    #[test]
    fn a_truncated_diff_leaves_no_image_and_names_the_point_to_restore_instead() {
        let backups = chain::backups();
        let last = backups.dir.join(diff_file(S1, S2));
        let data = fs::read(&last).unwrap();
        fs::write(&last, &data[..data.len() - 10]).unwrap();
        let fake = Fake::default();
        let (result, _) = restore_into(&fake, &backups);
        let err = format!("{:#}", result.unwrap_err());
        assert!(
            err.contains(&format!(
                "{S2} needs vm@{S2}.diff_from_{S1}, so it cannot be restored; the newest point \
                 that does not is {S1}"
            )),
            "{err}"
        );
        assert_eq!(fake.data("rbd", "vm-restored"), None);
        let changes = fake.changes();
        assert_eq!(
            changes[changes.len() - 2..],
            ["snap purge rbd/vm-restored", "rm rbd/vm-restored"]
        );
    }

    #[test]
    fn an_existing_image_is_never_touched() {
        let fake = Fake::default();
        fake.add_image("rbd", "vm-restored", vec![5; 10]);
        let (result, _) = restore_into(&fake, &chain::backups());
        assert_eq!(
            result.unwrap_err().to_string(),
            "rbd/vm-restored exists already; restore never writes into an existing image"
        );
        assert_eq!(fake.changes(), Vec::<String>::new());
        assert_eq!(fake.data("rbd", "vm-restored"), Some(vec![5; 10]));
    }

    #[test]
    fn an_image_still_watched_after_a_failure_is_removed_once_ceph_lets_it_go() {
        let fake = Fake::default();
        fake.fail(Call::ImportDiff, "rbd/vm-restored", Fail::TimedOut);
        fake.fail_once(Call::RemoveImage, "rbd/vm-restored", Fail::Busy);
        let (result, _) = restore_into(&fake, &chain::backups());
        assert!(result.is_err());
        assert_eq!(fake.data("rbd", "vm-restored"), None);
        let changes = fake.changes();
        assert_eq!(
            changes[changes.len() - 3..],
            [
                "snap purge rbd/vm-restored",
                "rm rbd/vm-restored",
                "rm rbd/vm-restored"
            ]
        );
    }
}

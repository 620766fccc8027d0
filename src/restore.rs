//! `cephbackup restore`: an image as it was at a backed-up point in time, in one command.
//!
//! The point restored is the newest one taken at or before `--at` (the latest without it), and
//! its route ([`crate::chain`]) is replayed into a new image: `rbd import` of the full backup,
//! `rbd snap create` of its snapshot (each diff names the snapshot it starts from, legacy names
//! included), then `rbd import-diff` of each diff in order, stopping at the point. Files stream
//! from disk into `rbd`'s stdin, never as a path (Ceph 16 refuses `@` in import paths), and are
//! decompressed on the fly whatever their archive member is called. Each diff is checked record
//! by record before `rbd` sees it and each file's checksum as it passes, so anything wrong stops
//! the restore; the image it created is then removed, so a failed restore never leaves something
//! that looks restored. An existing image is never touched.
//!
//! `--to-file` rebuilds the point as a new local sparse raw file instead ([`crate::rebuild`]),
//! with no cluster at all. `--check` prints the plan and does nothing.

use crate::outln;
use std::fs;
use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::chain::{self, Layout, Stored};
use crate::checked_diff::CheckedDiff;
use crate::cli::{RestoreArgs, Status, UsageError};
use crate::config::Config;
use crate::naming::{self, SnapName};
use crate::process::{CommandError, CommandLine};
use crate::rbd::{spec, Cluster, Rbd};
use crate::store::{ImageDir, PendingFile};
use crate::stored::{self, FirstError};
use crate::{catalog, interrupt, lock, rebuild};

const BUFFER: usize = 1 << 20;
/// Ceph drops the watch of a client that died after `osd_client_watch_timeout` (30 s by
/// default); a little more, in case the cluster is busy.
const WATCH_EXPIRY: Duration = Duration::from_secs(45);

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
                    path.display()
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
            Target::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The point to restore and the files that lead to it, or why there is none.
pub fn choose<'a>(
    layout: &'a Layout,
    label: &str,
    at: Option<DateTime<Utc>>,
) -> Result<(&'a SnapName, Vec<&'a Stored>)> {
    let Some(point) = layout.point_at_or_before(at) else {
        let stamp = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let points = layout.points();
        match (points.first(), at) {
            (Some(oldest), Some(at)) => bail!(
                "{label} has no restore point at or before {}; the oldest is {oldest} ({})",
                stamp(at),
                stamp(oldest.taken())
            ),
            _ => {
                let unusable = layout.findings.iter().filter(|f| f.kind.is_error()).count();
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
        .expect("every restore point has a route");
    Ok((point, route))
}

pub fn run(
    config: &Config,
    args: &RestoreArgs,
    check: bool,
    locking: &lock::Locking,
) -> Result<Status> {
    let job = catalog::section(config, &args.pool)?;
    naming::check_name("image", &args.image).map_err(UsageError)?;
    let target = Target::parse(args.to.as_deref(), args.to_file.as_deref(), &job.pool)?;
    let label = format!("{}/{}", job.pool, args.image);
    let dir = ImageDir::new(&job.destination, &job.pool, &args.image);
    if !dir.path().is_dir() {
        bail!(
            "no backups of {label}: {} does not exist",
            dir.path().display()
        );
    }
    // Shared: other restores and checks may read along, but no backup may prune meanwhile.
    let _lock = locking.image(&job.pool, &args.image, lock::Kind::Shared)?;
    let layout = chain::scan(&dir, &args.image)?;
    let (point, route) = choose(&layout, &label, args.at)?;
    let rbd = Rbd::new(Cluster::of(job), std::io::stderr().is_terminal());
    let folder = dir.path();

    match &target {
        Target::Image { pool, name } if rbd.image_exists(pool, name)? => {
            bail!("{target} exists already; restore never writes into an existing image")
        }
        Target::File(path) if fs::symlink_metadata(path).is_ok() => {
            bail!("{target} exists already; restore never overwrites a file")
        }
        _ => {}
    }
    outln!(
        "Restoring {label} as of {point} ({}) into {target}, from {} file(s) in {}",
        point.taken().format("%Y-%m-%d %H:%M:%S UTC"),
        route.len(),
        folder.display()
    );
    let lines = match &target {
        Target::Image { pool, name } => image_plan(&rbd, pool, name, &folder, &route),
        Target::File(_) => file_plan(&folder, &route),
    };
    for line in lines {
        outln!("{line}");
    }
    if check || args.check {
        outln!("Check mode: nothing was done.");
        return Ok(Status::Success);
    }

    let checked = match &target {
        Target::Image { pool, name } => into_image(&rbd, pool, name, &folder, &route),
        Target::File(path) => into_file(path, &folder, &route).map_err(blame_signal),
    }?;
    outln!(
        "Restored {target} as of {point}: {} file(s) applied, {checked} checked against their \
         .sha256 file",
        route.len()
    );
    Ok(Status::Success)
}

/// What the image restore runs, as lines for people: each file, then the command it is fed to,
/// spelled as a shell would run it (a compressed file is unpacked to stdout by `tar -xzO`).
fn image_plan(rbd: &Rbd, pool: &str, name: &str, folder: &Path, route: &[&Stored]) -> Vec<String> {
    let mut lines = Vec::new();
    for link in route {
        let path = folder.join(&link.name).display().to_string();
        let quoted = shell_words::quote(&path);
        let (verb, cmd) = if link.file.is_full() {
            ("Importing", rbd.import(pool, name))
        } else {
            ("Applying", rbd.import_diff(pool, name))
        };
        lines.push(format!("{verb} {path}"));
        lines.push(if link.file.compressed {
            format!("# tar -xzOf {quoted} | {cmd}")
        } else {
            format!("# {cmd} < {quoted}")
        });
        if link.file.is_full() {
            lines.push(format!(
                "# {}",
                rbd.create_snapshot(pool, name, link.file.snap.as_str())
            ));
        }
    }
    lines
}

fn file_plan(folder: &Path, route: &[&Stored]) -> Vec<String> {
    route
        .iter()
        .map(|link| {
            let verb = if link.file.is_full() {
                "Writing"
            } else {
                "Applying"
            };
            format!("{verb} {}", folder.join(&link.name).display())
        })
        .collect()
}

/// Replays the route into the new image `pool/name`; on failure removes what it created.
/// Returns how many files had a checksum to check.
fn into_image(
    rbd: &Rbd,
    pool: &str,
    name: &str,
    folder: &Path,
    route: &[&Stored],
) -> Result<usize> {
    let result = replay(rbd, pool, name, folder, route);
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

fn replay(rbd: &Rbd, pool: &str, name: &str, folder: &Path, route: &[&Stored]) -> Result<usize> {
    let mut checked = 0;
    for (number, link) in route.iter().enumerate() {
        interrupt::check()?;
        info!("applying {} ({} of {})", link.name, number + 1, route.len());
        if link.file.is_full() {
            checked += usize::from(feed(&rbd.import(pool, name), folder, link)?);
            let snapshot = rbd.create_snapshot(pool, name, link.file.snap.as_str());
            snapshot.run()?;
        } else {
            checked += usize::from(feed(&rbd.import_diff(pool, name), folder, link)?);
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
fn feed(cmd: &CommandLine, folder: &Path, link: &Stored) -> Result<bool> {
    let path = folder.join(&link.name);
    let recorded = stored::recorded_digest(folder, &link.name)?;
    let ((), facts) = stored::read_raw(&path, link.file.compressed, |raw| {
        if link.file.is_full() {
            let mut input = FirstError::new(raw);
            let ran = cmd.run_with_input(&mut input);
            return settle(ran, input.error());
        }
        let diff = CheckedDiff::new(BufReader::with_capacity(BUFFER, raw), |header| {
            link.check_diff_header(header)
        })
        .map_err(anyhow::Error::msg)?;
        let mut input = FirstError::new(diff);
        let ran = cmd.run_with_input(&mut input);
        settle(ran, input.error())
    })
    .with_context(|| path.display().to_string())?;
    stored::check_digest(recorded.as_deref(), &facts)
        .with_context(|| path.display().to_string())?;
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
    err.chain()
        .filter_map(|e| e.downcast_ref::<CommandError>())
        .filter_map(CommandError::stderr)
        .any(|stderr| stderr.contains("(17) File exists"))
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
/// the image cannot be removed.
fn is_still_watched(err: &CommandError) -> bool {
    err.stderr()
        .is_some_and(|stderr| stderr.contains("image still has watchers"))
}

/// Rebuilds the point as a new file at `path`; nothing appears there unless it succeeds.
fn into_file(path: &Path, folder: &Path, route: &[&Stored]) -> Result<usize> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a usable file name", path.display()))?;
    let mut pending = PendingFile::create(parent, name)?;
    let checked = rebuild::rebuild(folder, route, pending.file())?;
    pending.commit()?;
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbd::Cluster;

    const S0: &str = "BACKUPUTC20261120T020000";
    const S1: &str = "BACKUPUTC20261121T020000";

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
        let layout = Layout::build("vm", &names);
        let (point, route) = choose(&layout, "rbd/vm", None).unwrap();
        assert_eq!(point.as_str(), S1);
        assert_eq!(route.len(), 2);
        let early = SnapName::parse(S0).unwrap().taken() - chrono::Duration::days(1);
        let err = choose(&layout, "rbd/vm", Some(early)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "rbd/vm has no restore point at or before 2026-11-19 02:00:00 UTC; the oldest \
                 is {S0} (2026-11-20 02:00:00 UTC)"
            )
        );
        let broken = Layout::build("vm", &names[1..]);
        let err = choose(&broken, "rbd/vm", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rbd/vm has no restorable backup (1 file(s) cannot be restored; see `cephbackup list`)"
        );
    }

    #[test]
    fn the_plan_spells_the_commands_a_person_could_run() {
        let names = [
            format!("vm@{S0}.full.tar.gz"),
            format!("vm@{S1}.diff_from_{S0}"),
        ];
        let layout = Layout::build("vm", &names);
        let (_, route) = choose(&layout, "rbd/vm", None).unwrap();
        let rbd = Rbd::new(
            Cluster {
                conf: "/c".into(),
                user: None,
                keyring: None,
                timeout: 0,
            },
            false,
        );
        let lines = image_plan(&rbd, "rbd", "new", Path::new("/b/rbd/vm"), &route);
        let r = "rbd --conf /c --no-progress";
        assert_eq!(
            lines,
            [
                format!("Importing /b/rbd/vm/vm@{S0}.full.tar.gz"),
                format!("# tar -xzOf /b/rbd/vm/vm@{S0}.full.tar.gz | {r} import - rbd/new"),
                format!("# {r} snap create rbd/new@{S0}"),
                format!("Applying /b/rbd/vm/vm@{S1}.diff_from_{S0}"),
                format!("# {r} import-diff - rbd/new < /b/rbd/vm/vm@{S1}.diff_from_{S0}"),
            ]
        );
    }
}

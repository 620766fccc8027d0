//! Restore into a new image: the route replayed through `rbd import`, `rbd snap create` and
//! `rbd import-diff` (through [`ClusterOps`]), and the image removed again when that fails.

use std::io::BufReader;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracing::warn;

use super::steps::{RestoreAction, RestoreStep};
use super::{blame_signal, Say, Target};
use crate::cluster::process::{CommandError, FailureKind};
use crate::cluster::rbd::{spec, ClusterOps};
use crate::folder::chain::FolderFile;
use crate::folder::door::Door;
use crate::folder::format::checked_diff::CheckedDiff;
use crate::folder::read::{self, FirstError, Limits};
use crate::interrupt;
use crate::output::escaped_path;

const BUFFER: usize = 1 << 20;
/// Ceph drops the watch of a client that died after `osd_client_watch_timeout` (30 s by
/// default); a little more, in case the cluster is busy.
const WATCH_EXPIRY: Duration = Duration::from_secs(45);

/// Replays the route into the new image `pool/name`; on failure removes what it created.
/// Returns how many files had a checksum to check.
pub(super) fn into_image<'a>(
    rbd: &dyn ClusterOps,
    (pool, name): (&str, &str),
    folder: &dyn Door,
    steps: &[RestoreStep<'a>],
    limits: &Limits,
    say: Say,
    failed_at: &mut Option<&'a FolderFile>,
) -> Result<usize> {
    let target = Target::Image {
        pool: pool.to_string(),
        name: name.to_string(),
    };
    let result = replay(rbd, folder, &target, steps, limits, say, failed_at);
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
    rbd: &dyn ClusterOps,
    folder: &dyn Door,
    target: &Target,
    steps: &[RestoreStep<'a>],
    limits: &Limits,
    say: Say,
    failed_at: &mut Option<&'a FolderFile>,
) -> Result<usize> {
    let Target::Image { pool, name } = target else {
        bail!("an image restore into a file (a bug)");
    };
    let mut checked = 0;
    for step in steps {
        interrupt::check()?;
        say.line(&step.describe(&folder.location(), target));
        step.log();
        match &step.action {
            RestoreAction::Feed => {
                *failed_at = Some(step.link);
                let into = (rbd, pool.as_str(), name.as_str());
                checked += usize::from(feed(into, folder, step.link, &limits.of(step.link))?);
                *failed_at = None;
            }
            RestoreAction::CreateSnapshot => {
                rbd.create_snapshot(pool, name, step.link.file.snap.as_str())?;
            }
            RestoreAction::Rebuild => bail!("a file step in an image restore (a bug)"),
        }
    }
    Ok(checked)
}

/// Streams one file's raw content into the image `name` of `pool`: a full through `rbd import`, a
/// diff through the record checker into `rbd import-diff`; and checks the file's checksum. True
/// when there was a checksum to check.
fn feed(
    (rbd, pool, name): (&dyn ClusterOps, &str, &str),
    folder: &dyn Door,
    link: &FolderFile,
    limit: &read::Limit,
) -> Result<bool> {
    let path = folder.location_of(&link.name);
    let recorded = read::recorded_digest(folder, &link.name)?;
    let ((), facts) = read::read_raw(folder, &link.name, &link.file, limit, |raw| {
        if link.file.is_full() {
            let mut input = FirstError::new(raw);
            let ran = rbd.import(pool, name, &mut input);
            return settle(ran, input.error());
        }
        let diff = CheckedDiff::new(BufReader::with_capacity(BUFFER, raw), |header| {
            read::check_diff_header(link, header)
        })
        .map_err(anyhow::Error::msg)?;
        let mut input = FirstError::new(diff);
        let ran = rbd.import_diff(pool, name, &mut input);
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
fn remove_partial(rbd: &dyn ClusterOps, pool: &str, name: &str) {
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
    let removed = rbd.purge_snapshots(pool, name).and_then(|()| {
        let deadline = Instant::now() + WATCH_EXPIRY;
        loop {
            match rbd.remove_image(pool, name) {
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

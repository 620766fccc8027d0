//! `cephbackup init-destination`: marks configured destinations as the tool's on purpose.
//!
//! A backup run refuses a destination that looks like a backup disk that did not mount: empty
//! and unrecorded while the cluster holds backup snapshots of an incremental section's images,
//! or empty on another filesystem than the one this host wrote its backups to
//! ([`crate::backup::destination`]). When an administrator really starts a fresh destination
//! there (a new disk, a second job), this command writes a new destination record, sealed, and
//! notes the destination with its filesystem in this host's state folder ([`crate::state`]),
//! once, by hand. A fresh identity also means a fresh start: the chains the host remembers for
//! the old one are not continued into it.

use anyhow::{bail, Result};
use chrono::Utc;
use tracing::warn;

use crate::commands::catalog;
use crate::config::{Config, PoolJob};
use crate::folder::record::{self, Blocked, Destination};
use crate::outln;
use crate::state::{Access, Filesystem, HostState, Known};

/// What `init-destination` is asked for.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Only the destination of this pool (a section); all of them without it.
    pub pool: Option<String>,
    /// Only say what would be marked.
    pub check: bool,
}

pub fn run(
    config: &Config,
    options: &InitOptions,
    state_dir: &std::path::Path,
    host: Option<&str>,
) -> Result<()> {
    let check = options.check;
    let jobs: Vec<&PoolJob> = match &options.pool {
        Some(pool) => vec![catalog::section(config, pool)?],
        None => config.pools.iter().collect(),
    };
    let access = if check {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    // With coordination the record is sealed under the hosts' shared key, so every host
    // believes it.
    let shared = crate::commands::hosts::connect(config, host, false)?;
    let state = HostState::open_shared(state_dir, access, shared)?;
    let mut done: Vec<&std::path::Path> = Vec::new();
    for job in jobs {
        let dest = job.destination.as_path();
        if done.contains(&dest) {
            continue;
        }
        done.push(dest);
        let shown = dest.display();
        let top = job.destination_folder();
        let recorded = match record::inspect(&*top)? {
            Destination::Missing => bail!(
                "destination directory {shown} of [{}] does not exist{}",
                job.pool,
                record::UNMOUNTED_HINT
            ),
            Destination::NotAFolder(kind) => bail!(
                "destination directory {shown} of [{}] is {}, not a folder",
                job.pool,
                kind.described()
            ),
            Destination::Recorded => match record::read_destination_record(&*top, state.key()) {
                Ok(id) => id,
                Err(unusable) => {
                    warn!("{}: {}; it is replaced", unusable.path, unusable.problem);
                    None
                }
            },
            Destination::Adoptable | Destination::Empty => None,
        };
        let filesystem = Filesystem::of_destination(dest, job.store.as_ref())?;
        match recorded {
            Some(_) if check => outln!("{shown}: a cephbackup destination already"),
            Some(id) => {
                // Already the tool's: only the host's memory learns where it is now.
                let known = Known { id, filesystem };
                state.destination_used(dest, &known, Utc::now())?;
                outln!("{shown}: a cephbackup destination already");
            }
            None if check => {
                outln!("{shown}: would be marked as a cephbackup destination (check mode)");
            }
            None => {
                let id = record::new_destination_id()?;
                let known = Known { id, filesystem };
                state.destination_used(dest, &known, Utc::now())?;
                let Some(key) = state.key() else {
                    bail!("internal error: no record key in {}", state.dir().display());
                };
                let now = Utc::now();
                match record::write_destination_record(
                    &*top,
                    &known.id,
                    "init-destination",
                    now,
                    key,
                ) {
                    Ok(()) => {}
                    Err(err) if err.downcast_ref::<Blocked>().is_some() => warn!("{err:#}"),
                    Err(err) => return Err(err),
                }
                outln!("{shown}: marked as a cephbackup destination");
            }
        }
    }
    Ok(())
}

//! `cephbackup init-destination`: marks configured destinations as the tool's on purpose.
//!
//! A backup run refuses a destination that is empty and carries no record while the cluster holds
//! backup snapshots of its images, because that is what a backup disk that did not mount looks
//! like. When an administrator really starts a fresh destination for images that already have
//! snapshots (a new disk, a second job), this command writes the record once, by hand.

use anyhow::{bail, Result};
use chrono::Utc;

use crate::config::{Config, PoolJob};
use crate::folder::catalog;
use crate::folder::record::{self, Destination};
use crate::outln;

/// What `init-destination` is asked for.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Only the destination of this pool (a section); all of them without it.
    pub pool: Option<String>,
    /// Only say what would be marked.
    pub check: bool,
}

pub fn run(config: &Config, options: &InitOptions) -> Result<()> {
    let check = options.check;
    let jobs: Vec<&PoolJob> = match &options.pool {
        Some(pool) => vec![catalog::section(config, pool)?],
        None => config.pools.iter().collect(),
    };
    let mut done: Vec<&std::path::Path> = Vec::new();
    for job in jobs {
        let dest = job.destination.as_path();
        if done.contains(&dest) {
            continue;
        }
        done.push(dest);
        let shown = dest.display();
        match record::inspect(dest)? {
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
            Destination::Recorded => outln!("{shown}: a cephbackup destination already"),
            Destination::Adoptable | Destination::Empty if check => {
                outln!("{shown}: would be marked as a cephbackup destination (check mode)");
            }
            Destination::Adoptable | Destination::Empty => {
                record::write_destination_record(dest, "init-destination", Utc::now())?;
                outln!("{shown}: marked as a cephbackup destination");
            }
        }
    }
    Ok(())
}

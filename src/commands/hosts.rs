//! `cephbackup hosts`: the hosts sharing the configuration (`coordination pool`), as the cluster
//! sees them now: which hosts run in the current round, which images are being backed up and by
//! whom until when (the OSD's lease expiry), and which host last backed up each image, when.
//!
//! It also owns the connection every command makes to the coordination pool ([`connect`]).

use std::sync::Arc;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::cluster::rados::{lock_holders, LockHolder};
use crate::config::Config;
use crate::coordinate::{self, lease_object, Coordination, LOCK_NAME, ROUND_LOCK};
use crate::output::escaped;
use crate::report::Envelope;
use crate::state::{Access, HostState};
use crate::{clock, outln};

/// Connects to the configuration's coordination pool, when it sets one, as `host` (its hostname
/// without it); with `join`, joins the round of the hosts running now (a backup run).
pub fn connect(
    config: &Config,
    host: Option<&str>,
    join: bool,
) -> Result<Option<Arc<Coordination>>> {
    match settings(config, host) {
        Some(settings) => Coordination::connect(settings, join).map(Some),
        None => Ok(None),
    }
}

/// How to reach the configuration's coordination pool, when it sets one.
fn settings(config: &Config, host: Option<&str>) -> Option<coordinate::Settings> {
    let shared = config.coordination.as_ref()?;
    let identity = coordinate::identity(config.pools.iter().map(|job| {
        (
            job.pool.as_str(),
            job.destination_text.as_str(),
            job.mode.as_str(),
        )
    }));
    Some(coordinate::Settings {
        pool: shared.pool.clone(),
        lease: shared.lease,
        host: host.map_or_else(coordinate::hostname, str::to_string),
        cluster: shared.cluster.clone(),
        identity,
    })
}

/// The longest `list` and `status` wait for the coordination pool, in seconds: monitoring calls
/// them with short deadlines of its own, and the hosts are only a detail of their answers.
const DETAIL_TIMEOUT: u32 = 10;

/// Which host completed a backup, by pool, image and snapshot (the newest of each image, as
/// the hosts' shared memory holds it).
pub type BackedUpBy = std::collections::HashMap<(String, String, String), String>;

/// With `coordination pool`: who completed each image's newest backup. A coordination pool that
/// cannot be read costs only this detail (said on stderr), never the verdict.
pub fn backed_up_by(config: &Config) -> BackedUpBy {
    let read = || -> Result<Vec<crate::state::CompletedBy>> {
        let Some(mut settings) = settings(config, None) else {
            return Ok(Vec::new());
        };
        let timeout = settings.cluster.timeout;
        settings.cluster.timeout = if timeout == 0 {
            DETAIL_TIMEOUT
        } else {
            timeout.min(DETAIL_TIMEOUT)
        };
        let shared = Coordination::connect(settings, false)?;
        let state = crate::state::HostState::open_shared(
            &config.state_dir(),
            crate::state::Access::ReadOnly,
            Some(shared),
        )?;
        state.all_completed()
    };
    match read() {
        Ok(done) => done
            .into_iter()
            .map(|d| ((d.pool, d.image, d.snapshot), d.host))
            .collect(),
        Err(err) => {
            tracing::warn!("cannot tell which host backed up each image: {err:#}");
            BackedUpBy::new()
        }
    }
}

/// A host holding a lease, and until when.
#[derive(Debug, Serialize)]
struct Holder {
    host: String,
    /// What the holder says of itself (`cephbackup on HOST, pid N`).
    description: String,
    /// The Ceph client instance holding it.
    client: String,
    /// When the lease ends unless renewed (the OSD's clock).
    expires: String,
}

#[derive(Debug, Serialize)]
struct Lease {
    pool: String,
    image: String,
    #[serde(flatten)]
    holder: Holder,
}

#[derive(Debug, Serialize)]
struct LastBackup {
    pool: String,
    image: String,
    host: String,
    at: String,
    snapshot: String,
}

#[derive(Debug, Serialize)]
struct HostsDocument {
    #[serde(flatten)]
    envelope: Envelope,
    coordination_pool: String,
    lease_seconds: u64,
    /// The hosts running the configuration now (one round), with their round lease.
    running: Vec<Holder>,
    /// The images being backed up now.
    leases: Vec<Lease>,
    /// Each image's newest completed backup, by host.
    last_backups: Vec<LastBackup>,
}

fn holders(holders: Vec<LockHolder>) -> Vec<Holder> {
    holders
        .into_iter()
        .map(|h| Holder {
            host: h.cookie,
            description: h.description,
            client: h.client,
            expires: h.expiration,
        })
        .collect()
}

/// Shows the hosts, leases and last backups of the configuration's coordination pool.
pub fn run(config: &Config, json: bool, state_dir: &std::path::Path) -> Result<()> {
    let Some(coordination) = connect(config, None, false)? else {
        bail!(
            "{} sets no `coordination pool`: this host backs up alone",
            config.path.display()
        );
    };
    let settings = coordination.settings();
    let (pool, cluster) = (&settings.pool, &settings.cluster);
    let state = HostState::open_shared(state_dir, Access::ReadOnly, Some(coordination.clone()))?;
    let last = state.all_completed()?;
    let mut images: Vec<(String, String)> = last
        .iter()
        .map(|d| (d.pool.clone(), d.image.clone()))
        .collect();
    for job in &config.pools {
        if let crate::config::ImageSelection::Named(names) = &job.images {
            images.extend(names.iter().map(|name| (job.pool.clone(), name.clone())));
        }
    }
    images.sort();
    images.dedup();
    let mut leases = Vec::new();
    for (image_pool, image) in images {
        let object = lease_object(&image_pool, &image);
        // Asking librados first keeps the `rados` runs to the leases actually held.
        if coordination
            .pool()
            .lockers(&object, LOCK_NAME)?
            .cookies
            .is_empty()
        {
            continue;
        }
        for holder in holders(lock_holders(cluster, pool, &object, LOCK_NAME)?) {
            leases.push(Lease {
                pool: image_pool.clone(),
                image: image.clone(),
                holder,
            });
        }
    }
    let document = HostsDocument {
        envelope: Envelope::new("hosts", clock::now()),
        coordination_pool: pool.clone(),
        lease_seconds: settings.lease.as_secs(),
        running: holders(lock_holders(
            cluster,
            pool,
            &coordination.round_object(),
            ROUND_LOCK,
        )?),
        leases,
        last_backups: last
            .into_iter()
            .map(|d| LastBackup {
                pool: d.pool,
                image: d.image,
                host: d.host,
                at: d.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                snapshot: d.snapshot,
            })
            .collect(),
    };
    if json {
        outln!("{}", crate::output::json(&document)?);
    } else {
        print_text(&document);
    }
    Ok(())
}

fn print_text(doc: &HostsDocument) {
    outln!(
        "Coordination pool {} (leases of {} s)",
        escaped(&doc.coordination_pool),
        doc.lease_seconds
    );
    if doc.running.is_empty() {
        outln!("No host is running a backup of this configuration.");
    } else {
        outln!("Running now:");
        for holder in &doc.running {
            outln!(
                "  {}  ({}, {}) until {}",
                escaped(&holder.host),
                escaped(&holder.description),
                escaped(&holder.client),
                escaped(&holder.expires)
            );
        }
    }
    if !doc.leases.is_empty() {
        outln!("Being backed up:");
        for lease in &doc.leases {
            outln!(
                "  {}/{}  by {} until {}",
                escaped(&lease.pool),
                escaped(&lease.image),
                escaped(&lease.holder.host),
                escaped(&lease.holder.expires)
            );
        }
    }
    if !doc.last_backups.is_empty() {
        outln!("Last backups:");
        for last in &doc.last_backups {
            outln!(
                "  {}/{}  by {} at {} ({})",
                escaped(&last.pool),
                escaped(&last.image),
                escaped(&last.host),
                last.at,
                escaped(&last.snapshot)
            );
        }
    }
}

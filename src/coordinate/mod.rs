//! Several backup hosts running one configuration, coordinated through the cluster itself: no
//! server, no database, nothing that depends on the hosts' clocks agreeing.
//!
//! With `coordination pool = POOL` in `[DEFAULT]`, every host that runs the configuration
//! connects to that pool with librados ([`librados`], which says why not the `rados` command)
//! and:
//! - **joins the round**: a shared lease (`cls_lock`, tag = the round's id) on one object per
//!   configuration. The hosts whose runs overlap in time hold it together and so share a round
//!   id; the first host of a night finds no holder and starts a new round.
//! - **backs up an image only under its lease**: an exclusive lease on an object named after the
//!   pool and the image, taken with a duration ([`Settings::lease`]) and renewed by one thread
//!   every third of it while the image's work runs, released when it ends. A host that finds the
//!   lease held reports the image as backed up by the holder; with `--wait` it waits, and takes
//!   the image over once the lease is released or expires (a dead host's lease expires on the
//!   OSD's clock, so the hosts' clocks never matter).
//! - **does no image twice in a round**: when an image's backup completes, the shared memory
//!   ([`crate::state`], kept in this pool's omap) notes the round and the host; a host that gets
//!   the lease of an image already completed in its round skips it ("backed up by HOST").
//! - **publishes nothing after losing the lease**: before each step that changes the
//!   destination or the image's snapshots the lease is renewed at once ([`Lease::confirm`]); a
//!   lease that lapsed (the host stalled past the duration) fails the image, whose snapshot is
//!   rolled back and whose record is left to the host that took over.
//!
//! The lease objects are `cephbackup.lease.<pool>/<image>` (one per image, whatever
//! configuration or destination: two jobs never work on one image at once, as with the
//! host-local locks), the round object `cephbackup.round.<identity>` (the configuration's
//! sections, [`identity`]), the shared memory `cephbackup.state`, the record key
//! `cephbackup.key`.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::cluster::rbd::Cluster;
use crate::interrupt;

pub mod librados;

use librados::{Holder, Login, Pool, RadosError};

/// The lock name on every object: what `rados lock list` shows.
pub const LOCK_NAME: &str = "cephbackup";
pub const ROUND_LOCK: &str = "round";
/// The shared memory's object, and the record key's.
pub const STATE_OBJECT: &str = "cephbackup.state";
pub const KEY_OBJECT: &str = "cephbackup.key";
/// The lease a host holds on an image unless `coordination lease` says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// The shortest and longest `coordination lease`, in seconds: renewal every third of it must
/// fit in the time an OSD answers, and a dead host's images must not wait hours.
pub const MIN_LEASE_SECONDS: u64 = 3;
pub const MAX_LEASE_SECONDS: u64 = 3600;
const POLL: Duration = Duration::from_millis(250);
/// Attempts at joining a round when other hosts start theirs at the same moment.
const ROUND_TRIES: u32 = 10;

/// What the configuration and the command line say about coordination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub pool: String,
    pub lease: Duration,
    /// Who this host is: `--host`, else its hostname.
    pub host: String,
    /// The cluster the pool is in (the `[DEFAULT]` cluster settings).
    pub cluster: Cluster,
    /// The configuration's identity ([`identity`]): which round object the hosts share.
    pub identity: String,
}

/// The identity of a configuration's work: the same for every host given the same sections
/// (pool, destination, mode), whatever else differs between their files (lock folders, waits,
/// compression threads).
pub fn identity<'a>(sections: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> String {
    let mut parts: Vec<String> = sections
        .map(|(pool, destination, mode)| format!("{pool}\n{destination}\n{mode}"))
        .collect();
    parts.sort();
    let digest = Sha256::digest(parts.join("\n\n").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// This machine's host name (`--host` replaces it).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A lease lapsed, or another host holds it now: the image's work stops before publishing.
#[derive(Debug, thiserror::Error)]
#[error(
    "this host lost its lease on {object} (it was not renewed within {}; another host may have \
     taken the image over); nothing more is published for it",
    crate::progress::duration(*.duration)
)]
pub struct LeaseLost {
    pub object: String,
    pub duration: Duration,
}

/// The image is another host's in this round: it holds the lease now, or it completed the
/// image's backup in this round.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "backed up by {host}{}",
    if *.in_progress { ", which holds its lease now" } else { " in this round" }
)]
pub struct Elsewhere {
    pub host: String,
    pub in_progress: bool,
}

/// A connection to the coordination pool for one run, and the round it joined.
pub struct Coordination {
    pool: Pool,
    settings: Settings,
    /// Leases to renew, the round's among them.
    held: Mutex<Vec<Weak<Held>>>,
    /// The round this run belongs to, as its shared lease (its tag is the round's id); `None`
    /// in a run that only reads (check mode).
    round: Mutex<Option<Arc<Held>>>,
}

/// One held lease: what renews it, and when it was last known to be held.
struct Held {
    object: String,
    lock: &'static str,
    holder: Holder,
    /// When the last renewal that succeeded was sent; `None` once it is known to be lost.
    confirmed: Mutex<Option<Instant>>,
}

impl Held {
    fn confirmed(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.confirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a lease last confirmed at `confirmed` may still be held at `now`, by this host's own
/// measure: a renewal sent more than the duration ago may have expired on the OSD already, and
/// then another host may hold it.
pub fn may_still_hold(confirmed: Instant, now: Instant, duration: Duration) -> bool {
    now.saturating_duration_since(confirmed) < duration
}

impl Coordination {
    /// Connects to the coordination pool; with `join`, joins (or starts) the round of the
    /// configuration and starts renewing. One line when the pool is missing or unwritable.
    pub fn connect(settings: Settings, join: bool) -> Result<Arc<Coordination>> {
        let cluster = &settings.cluster;
        let login = Login {
            conf: &cluster.conf,
            user: cluster.user.as_deref(),
            keyring: cluster.keyring.as_deref(),
            timeout: cluster.timeout,
        };
        let pool = Pool::connect(&login, &settings.pool).map_err(|err| {
            let missing = err
                .downcast_ref::<RadosError>()
                .is_some_and(|e| e.call == "rados_ioctx_create" && e.errno == libc::ENOENT);
            if missing {
                anyhow::anyhow!(
                    "coordination pool {} does not exist in the cluster of {} (create it with \
                     `ceph osd pool create {}`)",
                    settings.pool,
                    cluster.conf.display(),
                    settings.pool
                )
            } else {
                err.context(format!(
                    "cannot reach coordination pool {} in the cluster of {}",
                    settings.pool,
                    cluster.conf.display()
                ))
            }
        })?;
        let coordination = Arc::new(Coordination {
            pool,
            settings,
            held: Mutex::new(Vec::new()),
            round: Mutex::new(None),
        });
        if join {
            coordination.keep_round().with_context(|| {
                format!(
                    "cannot write to coordination pool {}",
                    coordination.settings.pool
                )
            })?;
            start_renewing(&coordination);
        }
        Ok(coordination)
    }

    fn current_round(&self) -> std::sync::MutexGuard<'_, Option<Arc<Held>>> {
        self.round.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps this run in a live round: joins one when it has none, or again when its lease on
    /// the round lapsed (the host stalled while the other hosts finished theirs: the run then
    /// belongs to the round the hosts share now, and so skips what they completed in it).
    fn keep_round(&self) -> Result<()> {
        let mut round = self.current_round();
        if let Some(held) = round.as_ref() {
            match self.renew(held) {
                Ok(()) => return Ok(()),
                Err(err) if err.is::<LeaseLost>() => {}
                Err(err) => return Err(err),
            }
        }
        let held = self.join_round()?;
        tracing::debug!(
            "joined round {} of {}",
            held.holder.tag.as_deref().unwrap_or(""),
            held.object
        );
        self.renew_with_the_others(&held);
        *round = Some(held);
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn host(&self) -> &str {
        &self.settings.host
    }

    /// The id of the round this run belongs to.
    pub fn round(&self) -> Option<String> {
        self.current_round()
            .as_ref()
            .and_then(|held| held.holder.tag.clone())
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    fn holder(&self, tag: Option<String>) -> Holder {
        Holder {
            cookie: self.settings.host.clone(),
            description: format!(
                "cephbackup on {}, pid {}",
                self.settings.host,
                std::process::id()
            ),
            tag,
        }
    }

    /// The object whose shared lease makes the round of this configuration.
    pub fn round_object(&self) -> String {
        format!("cephbackup.round.{}", self.settings.identity)
    }

    /// Joins the round the hosts running now share, or starts one when none runs.
    fn join_round(&self) -> Result<Arc<Held>> {
        let object = self.round_object();
        for _ in 0..ROUND_TRIES {
            let lockers = self.pool.lockers(&object, ROUND_LOCK)?;
            let tag = if lockers.cookies.is_empty() || lockers.tag.is_empty() {
                let mut bytes = [0u8; 8];
                crate::folder::record::seal::random_bytes(&mut bytes)?;
                bytes.iter().map(|b| format!("{b:02x}")).collect()
            } else {
                lockers.tag
            };
            let held = Held {
                object: object.clone(),
                lock: ROUND_LOCK,
                holder: self.holder(Some(tag)),
                confirmed: Mutex::new(None),
            };
            let sent = Instant::now();
            match self.pool.lock(
                &object,
                ROUND_LOCK,
                &held.holder,
                self.settings.lease,
                false,
            ) {
                Ok(()) => {
                    *held.confirmed() = Some(sent);
                    return Ok(Arc::new(held));
                }
                // Another host started a round with another id at the same moment: join it.
                Err(err) if err.errno == libc::EBUSY => continue,
                Err(err) => return Err(err.into()),
            }
        }
        anyhow::bail!("cannot join the round on {object}: other hosts keep starting new ones")
    }

    /// Takes the lease of `pool/image`, waiting up to `wait` while another host holds it.
    pub fn take_image(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
        wait: Duration,
    ) -> Result<Result<Lease, Elsewhere>> {
        let object = lease_object(pool, image);
        self.keep_round()?;
        let deadline = Instant::now() + wait;
        let mut announced = false;
        loop {
            let held = Held {
                object: object.clone(),
                lock: LOCK_NAME,
                holder: self.holder(None),
                confirmed: Mutex::new(None),
            };
            let sent = Instant::now();
            match self
                .pool
                .lock(&object, LOCK_NAME, &held.holder, self.settings.lease, false)
            {
                Ok(()) => {
                    *held.confirmed() = Some(sent);
                    let held = Arc::new(held);
                    self.renew_with_the_others(&held);
                    return Ok(Ok(Lease {
                        coordination: Arc::clone(self),
                        held,
                    }));
                }
                Err(err) if err.errno == libc::EBUSY || err.errno == libc::EEXIST => {
                    let host = self
                        .pool
                        .lockers(&object, LOCK_NAME)?
                        .cookies
                        .into_iter()
                        .next()
                        // Released between the two calls: try again at once.
                        .unwrap_or_default();
                    if host.is_empty() {
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Ok(Err(Elsewhere {
                            host,
                            in_progress: true,
                        }));
                    }
                    if !announced {
                        announced = true;
                        tracing::info!(
                            "{pool}/{image}: {host} holds its lease; waiting up to {} for it",
                            crate::progress::duration(deadline - Instant::now())
                        );
                    }
                    interrupt::check()?;
                    std::thread::sleep(POLL);
                }
                Err(err) => {
                    return Err(anyhow::Error::new(err)
                        .context(format!("cannot take the lease of {pool}/{image}")))
                }
            }
        }
    }

    fn renew_with_the_others(&self, held: &Arc<Held>) {
        let mut list = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|weak| weak.strong_count() > 0);
        list.push(Arc::downgrade(held));
    }

    /// Renews `held` now; marks it lost when the OSD says it is no longer ours, or when this
    /// host could not renew it within its duration.
    fn renew(&self, held: &Held) -> Result<()> {
        let lost = || LeaseLost {
            object: held.object.clone(),
            duration: self.settings.lease,
        };
        let sent = Instant::now();
        let Some(confirmed) = *held.confirmed() else {
            return Err(lost().into());
        };
        if !may_still_hold(confirmed, sent, self.settings.lease) {
            *held.confirmed() = None;
            return Err(lost().into());
        }
        match self.pool.lock(
            &held.object,
            held.lock,
            &held.holder,
            self.settings.lease,
            true,
        ) {
            Ok(()) => {
                *held.confirmed() = Some(sent);
                Ok(())
            }
            Err(err) if err.errno == libc::ENOENT || err.errno == libc::EBUSY => {
                *held.confirmed() = None;
                Err(lost().into())
            }
            Err(err) => Err(anyhow::Error::new(err).context("cannot renew a lease")),
        }
    }

    /// Renews every lease still held; what fails is marked and found by [`Lease::confirm`].
    fn renew_all(&self) {
        let list: Vec<Arc<Held>> = {
            let mut list = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|weak| weak.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for held in list {
            if let Err(err) = self.renew(&held) {
                tracing::debug!("renewing {}: {err:#}", held.object);
            }
        }
    }
}

impl Drop for Coordination {
    fn drop(&mut self) {
        let held = self.current_round().take();
        if let Some(held) = held {
            // Leaving the round: once every host has, the next run starts a new one. A failure
            // only lets the lease expire.
            let _ = self
                .pool
                .unlock(&held.object, held.lock, &held.holder.cookie);
        }
    }
}

/// Renews the run's leases every third of their duration until the run ends.
fn start_renewing(coordination: &Arc<Coordination>) {
    let weak = Arc::downgrade(coordination);
    let period = coordination.settings.lease / 3;
    let spawned = std::thread::Builder::new()
        .name("lease renewal".to_string())
        .spawn(move || loop {
            std::thread::sleep(period);
            let Some(coordination) = weak.upgrade() else {
                return;
            };
            coordination.renew_all();
        });
    if let Err(err) = spawned {
        tracing::warn!("cannot start renewing leases: {err}; each step renews its own");
    }
}

/// The object whose lease guards `pool/image`.
pub fn lease_object(pool: &str, image: &str) -> String {
    format!("cephbackup.lease.{pool}/{image}")
}

/// An image's lease, held until dropped.
pub struct Lease {
    coordination: Arc<Coordination>,
    held: Arc<Held>,
}

impl Lease {
    /// Renews the lease now: `Ok` means it is this host's for a full duration from here, so a
    /// step that follows at once cannot cross another host's work.
    pub fn confirm(&self) -> Result<()> {
        self.coordination.renew(&self.held)
    }

    /// Whether the lease is known to be lost (without asking the cluster).
    pub fn lost(&self) -> bool {
        self.held.confirmed().is_none()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.lost() {
            return;
        }
        let _ = self.coordination.pool.unlock(
            &self.held.object,
            self.held.lock,
            &self.held.holder.cookie,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_by_this_hosts_measure_only_within_its_duration() {
        let start = Instant::now();
        let lease = Duration::from_secs(10);
        let cases = [
            (Duration::ZERO, true),
            (Duration::from_millis(9_999), true),
            (Duration::from_secs(10), false),
            (Duration::from_secs(3600), false),
        ];
        for (after, held) in cases {
            assert_eq!(
                may_still_hold(start, start + after, lease),
                held,
                "{after:?}"
            );
        }
        // A clock read before the renewal was sent never makes it older.
        assert!(may_still_hold(start + lease, start, lease));
    }

    #[test]
    fn the_identity_is_the_sections_whatever_their_order() {
        let a = [
            ("rbd", "/backup", "incremental"),
            ("vms", "/backup", "full"),
        ];
        let b = [
            ("vms", "/backup", "full"),
            ("rbd", "/backup", "incremental"),
        ];
        assert_eq!(identity(a.into_iter()), identity(b.into_iter()));
        let c = [("rbd", "/other", "incremental"), ("vms", "/backup", "full")];
        assert_ne!(identity(a.into_iter()), identity(c.into_iter()));
        assert_eq!(identity(a.into_iter()).len(), 16);
    }

    #[test]
    fn an_images_lease_object_names_its_pool_and_image() {
        assert_eq!(lease_object("rbd", "vm-1"), "cephbackup.lease.rbd/vm-1");
    }
}

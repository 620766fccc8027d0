//! The one `rados` command the tool runs: `rados lock info`, which says when each holder's lease
//! on an object expires. librados' C interface lists who holds a lock but not until when, and the
//! expiry is the OSD's own clock, the only one that decides.

use anyhow::{Context, Result};
use serde::Deserialize;

use super::rbd::{ceph_command, Cluster};

/// One holder of a lock on an object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LockHolder {
    /// The client instance (`client.4123`).
    #[serde(rename = "name")]
    pub client: String,
    pub cookie: String,
    pub description: String,
    /// When the lease ends unless renewed, as the OSD reports it.
    pub expiration: String,
}

#[derive(Deserialize)]
struct LockInfo {
    #[serde(default)]
    lockers: Vec<LockHolder>,
}

/// Who holds lock `lock` on `object` in `pool`, and until when.
pub fn lock_holders(
    cluster: &Cluster,
    pool: &str,
    object: &str,
    lock: &str,
) -> Result<Vec<LockHolder>> {
    let out = ceph_command("rados", cluster)
        .args([
            "--pool", pool, "--format", "json", "lock", "info", object, lock,
        ])
        .output()?;
    let info: LockInfo = serde_json::from_slice(&out)
        .with_context(|| format!("unexpected output from `rados lock info {object} {lock}`"))?;
    Ok(info.lockers)
}

//! The check-mode twin of a cluster: every query goes to the real cluster, and the changes the
//! backup executor asks for (a snapshot created or removed) are taken and not made. The executor
//! announces each change and calls the cluster; this twin answers [`Change::Skipped`], so the
//! executor notes no snapshot it did not make and needs not ask which mode it is in.

use std::io::Read;

use anyhow::Result;

use crate::cluster::ceph::CephTool;
use crate::cluster::process::CommandError;
use crate::cluster::rbd::{Change, ClusterOps, ExtentSink, Op, Snapshot};

/// A cluster seen in check mode: reads pass through, no change reaches it.
pub struct CheckCluster {
    real: Box<dyn ClusterOps>,
}

impl CheckCluster {
    pub fn new(real: Box<dyn ClusterOps>) -> CheckCluster {
        CheckCluster { real }
    }

    /// The restore verbs are never asked in check mode (it backs up only): asking one is a bug,
    /// said as a failed command rather than an image quietly not written.
    fn refused(&self, pool: &str, image: &str, what: &str) -> CommandError {
        CephTool::failure(
            format!("rbd {what} {pool}/{image}"),
            1,
            "internal error: check mode changes no image",
        )
    }
}

impl ClusterOps for CheckCluster {
    fn list_images(&self, pool: &str) -> Result<Vec<String>> {
        self.real.list_images(pool)
    }

    fn list_snapshots(&self, pool: &str, image: &str) -> Result<Vec<Snapshot>> {
        self.real.list_snapshots(pool, image)
    }

    fn size(&self, pool: &str, image: &str, snap: &str) -> Result<u64> {
        self.real.size(pool, image, snap)
    }

    fn snapshot_limit(&self, pool: &str, image: &str) -> Result<Option<u64>> {
        self.real.snapshot_limit(pool, image)
    }

    fn allocated(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
        into: &mut dyn ExtentSink,
    ) -> Result<()> {
        self.real.allocated(pool, image, snap, into)
    }

    /// Shown as the real cluster would run it: check mode prints the commands of a real run.
    fn show(&self, pool: &str, image: &str, op: Op) -> String {
        self.real.show(pool, image, op)
    }

    fn create_snapshot(
        &self,
        _pool: &str,
        _image: &str,
        _snap: &str,
    ) -> Result<Change, CommandError> {
        Ok(Change::Skipped)
    }

    fn remove_snapshot(
        &self,
        _pool: &str,
        _image: &str,
        _snap: &str,
    ) -> Result<Change, CommandError> {
        Ok(Change::Skipped)
    }

    /// A stream changes nothing; check mode still never opens one (its door stages no file).
    fn open_export(
        &self,
        pool: &str,
        image: &str,
        base: Option<&str>,
        snap: &str,
    ) -> Result<Box<dyn Read>, CommandError> {
        self.real.open_export(pool, image, base, snap)
    }

    fn image_exists(&self, pool: &str, image: &str) -> Result<bool> {
        self.real.image_exists(pool, image)
    }

    fn import(&self, pool: &str, image: &str, _input: &mut dyn Read) -> Result<(), CommandError> {
        Err(self.refused(pool, image, "import"))
    }

    fn import_diff(
        &self,
        pool: &str,
        image: &str,
        _input: &mut dyn Read,
    ) -> Result<(), CommandError> {
        Err(self.refused(pool, image, "import-diff"))
    }

    fn purge_snapshots(&self, pool: &str, image: &str) -> Result<(), CommandError> {
        Err(self.refused(pool, image, "snap purge"))
    }

    fn remove_image(&self, pool: &str, image: &str) -> Result<(), CommandError> {
        Err(self.refused(pool, image, "rm"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::Fake;

    #[test]
    fn a_check_cluster_reads_the_real_one_and_changes_nothing() {
        let fake = Fake::default();
        fake.add_image("rbd", "vm", b"data".to_vec());
        fake.create_snapshot("rbd", "vm", "s1").unwrap();
        let check = CheckCluster::new(Box::new(fake.clone()));
        assert_eq!(check.list_images("rbd").unwrap(), vec!["vm".to_string()]);
        assert_eq!(check.list_snapshots("rbd", "vm").unwrap().len(), 1);
        assert_eq!(
            check.create_snapshot("rbd", "vm", "s2").unwrap(),
            Change::Skipped
        );
        assert_eq!(
            check.remove_snapshot("rbd", "vm", "s1").unwrap(),
            Change::Skipped
        );
        assert_eq!(fake.snapshots("rbd", "vm"), vec!["s1".to_string()]);
        assert!(check.purge_snapshots("rbd", "vm").is_err());
        assert_eq!(fake.snapshots("rbd", "vm"), vec!["s1".to_string()]);
    }
}

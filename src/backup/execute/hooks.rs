//! The administrator's commands around an image's snapshot (`pre snapshot command`, `post
//! snapshot command`), to freeze and thaw what writes to the image: run as argument vectors with
//! the pool, image and snapshot in their environment, each within `hook timeout`, their output in
//! the log. A failing pre command fails the image before any snapshot or record changed; the
//! post command runs whenever the pre command was started (it failed, the snapshot failed or a
//! signal came included: what it froze is thawed), and its failure is a warning that never
//! undoes a good snapshot. Check mode shows them and runs none.

use super::*;
use crate::cluster::process::CommandLine;

/// Which of the two commands, and for the post command whether the snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HookPoint {
    Pre,
    Post { taken: bool },
}

impl ImageRun<'_> {
    /// Takes the run's snapshot between the section's pre and post commands.
    pub(super) fn create_snapshot(
        &mut self,
        snap: &SnapName,
        backs: &BackupFile,
        temporary: bool,
    ) -> Result<()> {
        let taken = self
            .run_hook(HookPoint::Pre, snap)
            .and_then(|()| self.take_snapshot(snap, backs, temporary));
        let post = HookPoint::Post {
            taken: taken.is_ok(),
        };
        if let Err(err) = self.run_hook(post, snap) {
            warn!("{}/{}: {err:#}", self.pool(), self.image);
            self.warnings += 1;
        }
        taken
    }

    /// Runs the section's command for `point`, if it has one (in check mode: shows it).
    fn run_hook(&self, point: HookPoint, snap: &SnapName) -> Result<()> {
        let hooks = &self.section.job.hooks;
        let (name, argv) = match point {
            HookPoint::Pre => ("pre", &hooks.pre),
            HookPoint::Post { .. } => ("post", &hooks.post),
        };
        let Some((program, args)) = argv.as_deref().and_then(<[String]>::split_first) else {
            return Ok(());
        };
        let mut command = CommandLine::new(program)
            .args(args)
            .env("CEPHBACKUP_HOOK", name)
            .env("CEPHBACKUP_POOL", self.pool())
            .env("CEPHBACKUP_IMAGE", self.image)
            .env("CEPHBACKUP_SNAPSHOT", snap.as_str())
            .env("CEPHBACKUP_CEPH_CONFIG", &self.section.job.ceph_config);
        if let HookPoint::Post { taken } = point {
            let taken = if taken { "yes" } else { "no" };
            command = command.env("CEPHBACKUP_SNAPSHOT_TAKEN", taken);
        }
        outln!(
            "# {name} snapshot command: {}",
            escaped(&command.to_string())
        );
        if self.section.checking() {
            return Ok(());
        }
        let said = command
            .run_within(hooks.timeout)
            .with_context(|| format!("the {name} snapshot command failed"))?;
        for line in String::from_utf8_lossy(&said).lines() {
            if !line.trim().is_empty() {
                info!(
                    "{}/{}: {name} snapshot command: {}",
                    self.pool(),
                    self.image,
                    escaped(line)
                );
            }
        }
        Ok(())
    }
}

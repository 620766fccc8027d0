//! The administrator's commands around an image's snapshot (`pre snapshot command`, `post
//! snapshot command`), to freeze and thaw what writes to the image: run as argument vectors with
//! the pool, image and snapshot in their environment, each within `hook timeout`, their output in
//! the log. A failing pre command fails the image before any snapshot or record changed; the
//! post command runs whenever the pre command was started (it failed, the snapshot failed or a
//! signal came included: what it froze is thawed), and its failure is a warning that never
//! undoes a good snapshot. Check mode shows them and runs none.

use super::*;
use crate::cluster::process::CommandLine;
use crate::config::ImageGroup;

/// Which of the two commands, and for the post command whether the snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HookPoint {
    Pre,
    Post { taken: bool },
}

/// Whose snapshot the commands are run around: one image, or a group of the section's images.
#[derive(Debug, Clone, Copy)]
pub(super) enum Frozen<'a> {
    Image(&'a str),
    Group(&'a ImageGroup),
}

impl Frozen<'_> {
    /// How the log names it, after the pool.
    fn shown(&self) -> String {
        match self {
            Frozen::Image(image) => (*image).to_string(),
            Frozen::Group(group) => format!("group {}", group.name),
        }
    }
}

impl ImageRun<'_> {
    /// Takes the run's snapshot between the section's pre and post commands (a group's member
    /// only takes it: its group runs the commands around all its members' snapshots).
    pub(super) fn create_snapshot(
        &mut self,
        snap: &SnapName,
        backs: &BackupFile,
        temporary: bool,
    ) -> Result<()> {
        if self.grouped {
            return self.take_snapshot(snap, backs, temporary);
        }
        let (section, frozen) = (self.section, Frozen::Image(self.image));
        let taken = run_hook(section, frozen, HookPoint::Pre, snap)
            .and_then(|()| self.take_snapshot(snap, backs, temporary));
        let post = HookPoint::Post {
            taken: taken.is_ok(),
        };
        if let Err(err) = run_hook(section, frozen, post, snap) {
            warn!("{}/{}: {err:#}", self.pool(), self.image);
            self.warnings += 1;
        }
        taken
    }
}

/// Runs the section's command for `point` around `frozen`'s snapshot, if it has one (in check
/// mode: shows it).
pub(super) fn run_hook(
    section: &Section,
    frozen: Frozen,
    point: HookPoint,
    snap: &SnapName,
) -> Result<()> {
    let hooks = &section.job.hooks;
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
        .env("CEPHBACKUP_POOL", &section.job.pool)
        .env("CEPHBACKUP_SNAPSHOT", snap.as_str())
        .env("CEPHBACKUP_CEPH_CONFIG", &section.job.ceph_config);
    command = match frozen {
        Frozen::Image(image) => command.env("CEPHBACKUP_IMAGE", image),
        // One name per line: image names may hold spaces, never a line break.
        Frozen::Group(group) => command
            .env("CEPHBACKUP_GROUP", &group.name)
            .env("CEPHBACKUP_IMAGES", group.images.join("\n")),
    };
    if let HookPoint::Post { taken } = point {
        let taken = if taken { "yes" } else { "no" };
        command = command.env("CEPHBACKUP_SNAPSHOT_TAKEN", taken);
    }
    outln!(
        "# {name} snapshot command: {}",
        escaped(&command.to_string())
    );
    if section.checking() {
        return Ok(());
    }
    let said = command
        .run_within(hooks.timeout)
        .with_context(|| format!("the {name} snapshot command failed"))?;
    for line in String::from_utf8_lossy(&said).lines() {
        if !line.trim().is_empty() {
            info!(
                "{}/{}: {name} snapshot command: {}",
                section.job.pool,
                frozen.shown(),
                escaped(line)
            );
        }
    }
    Ok(())
}

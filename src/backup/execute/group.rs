//! `group NAME = image, image`: images whose snapshots must show one moment (a virtual
//! machine's disks). The group's members are planned at one instant, so their snapshots share a
//! name; each first does what its plan puts before its snapshot; then the section's pre command
//! runs once, every member's snapshot is taken back to back, and the post command runs once
//! (whenever the pre command ran); then the members' exports and the rest of their plans go on,
//! up to `parallel images` of them at once.
//!
//! Each member stays an image of its own everywhere else: its lock, lease, record, roll-back and
//! report. A member that fails before the snapshot leaves the others to be frozen without it; a
//! pre command that fails fails every member that was to be snapshotted, before any snapshot.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use super::hooks::{run_hook, Frozen, HookPoint};
use super::*;
use crate::config::ImageGroup;
use crate::out;
use crate::output::capture;

/// One member on its way through the group's run.
struct Member<'s> {
    run: ImageRun<'s>,
    plan: Option<Plan>,
    /// Set once the member is done early (failed, or another host's); `None` while it goes on.
    failed: Option<anyhow::Error>,
}

impl Member<'_> {
    fn going(&self) -> bool {
        self.failed.is_none()
    }

    /// Where its plan takes the snapshot (none: nothing to freeze for it).
    fn snapshot_step(&self) -> Option<usize> {
        self.plan.as_ref().and_then(snapshot_step)
    }

    /// Carries out the part of its plan after its snapshot (all of it when it takes none).
    fn finish_plan(&mut self) {
        let Some(plan) = self.plan.take() else {
            return;
        };
        let after = snapshot_step(&plan).map_or(0, |at| at + 1);
        if let Err(err) = self.run.perform(&plan, after..) {
            self.failed = Some(err);
        }
    }
}

fn snapshot_step(plan: &Plan) -> Option<usize> {
    (plan.steps.iter()).position(|step| matches!(step, Step::CreateSnapshot { .. }))
}

impl Section<'_> {
    /// A group's turn: its members' backups, their snapshots taken together.
    pub(super) fn back_up_group<'s>(&'s self, group: &'s ImageGroup) -> Vec<ImageDone> {
        if let Some(why) = self.unreachable.reason(&self.cluster) {
            return (group.images.iter())
                .map(|image| self.not_attempted(image, why.clone()))
                .collect();
        }
        let started = Instant::now();
        let mut members: Vec<Member<'s>> = (group.images.iter())
            .map(|image| {
                let mut run = ImageRun::new(self, image);
                run.grouped = true;
                let failed = run.begin().err();
                Member {
                    run,
                    plan: None,
                    failed,
                }
            })
            .collect();
        self.plan_together(&mut members);
        for member in members.iter_mut().filter(|m| m.going()) {
            let (Some(plan), Some(at)) = (&member.plan, member.snapshot_step()) else {
                continue;
            };
            if let Err(err) = member.run.perform(plan, ..at) {
                member.failed = Some(err);
            }
        }
        self.freeze(group, &mut members);
        self.finish_members(&mut members);
        members
            .into_iter()
            .map(|mut member| {
                let result = match member.failed.take() {
                    Some(err) => Err(err),
                    None => Ok(()),
                };
                let result = member.run.settle(result);
                member.run.done(result, started)
            })
            .collect()
    }

    /// Plans every member at one instant; when that second's snapshot name is taken for any of
    /// them (a run of the group finished within it), all plan again in the next second.
    fn plan_together(&self, members: &mut [Member]) {
        let mut tries = 0;
        loop {
            let at = (self.options.now)();
            let mut name_taken = false;
            for member in members.iter_mut().filter(|m| m.going()) {
                member.run.at = Some(at);
                match member.run.plan(None) {
                    Ok(plan) => member.plan = Some(plan),
                    Err(err) if err.is::<SnapshotExists>() && tries < SAME_SECOND_TRIES => {
                        info!(
                            "{}/{}: {err}; the group waits for the next second",
                            self.job.pool, member.run.image
                        );
                        name_taken = true;
                    }
                    Err(err) => member.failed = Some(err),
                }
            }
            if !name_taken {
                return;
            }
            tries += 1;
            if interrupt::received().is_some() {
                for member in members.iter_mut().filter(|m| m.going()) {
                    member.failed = interrupt::check().err().map(Into::into);
                }
                return;
            }
            self.sleep_to_the_next_second();
        }
    }

    /// The pre command once, each member's snapshot, the post command once.
    fn freeze(&self, group: &ImageGroup, members: &mut [Member]) {
        let Some(snap) = (members.iter())
            .filter(|m| m.going() && m.snapshot_step().is_some())
            .find_map(|m| m.plan.as_ref().map(|plan| plan.snapshot.clone()))
        else {
            return;
        };
        let frozen = Frozen::Group(group);
        let pre = run_hook(self, frozen, HookPoint::Pre, &snap);
        let mut taken = false;
        for member in members.iter_mut().filter(|m| m.going()) {
            let (Some(plan), Some(at)) = (&member.plan, member.snapshot_step()) else {
                continue;
            };
            let result = match &pre {
                Err(err) => Err(anyhow::anyhow!("{err:#}")),
                Ok(()) => member.run.perform(plan, at..=at),
            };
            match result {
                Ok(()) => taken = true,
                Err(err) => member.failed = Some(err),
            }
        }
        if let Err(err) = run_hook(self, frozen, HookPoint::Post { taken }, &snap) {
            warn!("{}/group {}: {err:#}", self.job.pool, group.name);
            if let Some(first) = members.first_mut() {
                first.run.warnings += 1;
            }
        }
    }

    /// The rest of each member's plan (its export first): up to `parallel images` members at
    /// once, their lines printed in member order.
    fn finish_members(&self, members: &mut [Member]) {
        let going: Vec<&mut Member> = members.iter_mut().filter(|m| m.going()).collect();
        let workers = usize::try_from(self.parallel.max(1))
            .unwrap_or(usize::MAX)
            .min(going.len());
        if workers <= 1 {
            for member in going {
                member.finish_plan();
            }
            return;
        }
        let queue: Mutex<VecDeque<(usize, &mut Member)>> =
            Mutex::new(going.into_iter().enumerate().collect());
        let printed: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    let Some((at, member)) = next else {
                        break;
                    };
                    let ((), text) = capture::stdout(|| member.finish_plan());
                    (printed.lock().unwrap_or_else(PoisonError::into_inner)).push((at, text));
                });
            }
        });
        let mut printed = printed.into_inner().unwrap_or_else(PoisonError::into_inner);
        printed.sort_by_key(|(at, _)| *at);
        for (_, text) in printed {
            out!("{text}");
        }
    }
}

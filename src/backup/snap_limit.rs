//! Keeps a run within an image's snapshot limit (`rbd snap limit set`).
//!
//! Ceph refuses a new snapshot once an image has as many as its limit allows ("Disk quota
//! exceeded"). A plan creates its snapshot before the window's removals, so that a run that fails
//! never prunes; at the limit that order fails every night and nothing is ever pruned. [`fit`]
//! moves the window's removals ahead of the creation when that makes room, and otherwise refuses
//! the image with one line saying what to do, before anything changes. It is pure, like the
//! planner whose plan it adjusts; the executor learns the limit from `rbd info`.

use crate::backup::plan::{Plan, Step};
use crate::folder::naming::SnapName;

/// No room for this run's snapshot, even after every removal the plan may bring forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the image has {count} snapshots and its snapshot limit is {limit}{freed}, so no snapshot \
     can be taken: raise the limit (`rbd snap limit set --limit {needed}`, or `rbd snap limit \
     clear`), remove snapshots that are no longer needed, or shorten the window"
)]
pub struct LimitReached {
    pub count: usize,
    pub limit: u64,
    /// ", and the run may remove only N of them", when it may remove any.
    freed: String,
    /// The smallest limit this run would fit in.
    pub needed: u64,
}

/// `plan` as it can run on an image with `snapshots` snapshots (all of them, whoever took them)
/// and the snapshot limit `limit` (`None`: no limit). Unchanged when its snapshot fits; else with
/// the removals that come after the creation and that no later step relies on moved, in their
/// order, to just before it.
pub fn fit(plan: Plan, snapshots: usize, limit: Option<u64>) -> Result<Plan, LimitReached> {
    let Some(limit) = limit else {
        return Ok(plan);
    };
    let Some(create) = plan
        .steps
        .iter()
        .position(|step| matches!(step, Step::CreateSnapshot { .. }))
    else {
        return Ok(plan);
    };
    let removed_before = plan.steps[..create]
        .iter()
        .filter(|step| matches!(step, Step::RemoveSnapshot { .. }))
        .count();
    // With this run's snapshot.
    let with_new = (snapshots.saturating_sub(removed_before) + 1) as u64;
    if with_new <= limit {
        return Ok(plan);
    }
    let needed_later: Vec<&SnapName> = plan.steps[create..].iter().flat_map(relies_on).collect();
    let movable = |step: &Step| match step {
        Step::RemoveSnapshot { snap, .. } => {
            *snap != plan.snapshot && !needed_later.contains(&snap)
        }
        _ => false,
    };
    let freed = plan.steps[create..].iter().filter(|s| movable(s)).count() as u64;
    if with_new - freed > limit {
        return Err(LimitReached {
            count: snapshots - removed_before,
            limit,
            freed: if freed > 0 {
                format!(", and this run may remove only {freed} of them")
            } else {
                String::new()
            },
            needed: with_new - freed,
        });
    }
    let (early, late): (Vec<Step>, Vec<Step>) = plan.steps[create..]
        .iter()
        .cloned()
        .partition(|s| movable(s));
    let mut steps = plan.steps[..create].to_vec();
    steps.extend(early);
    steps.extend(late);
    Ok(Plan {
        snapshot: plan.snapshot,
        steps,
    })
}

/// The snapshots a step reads from the cluster (an export's snapshot and base; the snapshot
/// whose size proves a reused file or a built base).
fn relies_on(step: &Step) -> Vec<&SnapName> {
    let file = match step {
        Step::Export { file, .. } | Step::Reuse { file, .. } | Step::SlideBase { file, .. } => file,
        _ => return Vec::new(),
    };
    let mut snaps = vec![&file.snap];
    snaps.extend(file.base());
    snaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::naming::{BackupFile, Compression};
    use chrono::{TimeZone, Utc};

    fn snap(day: u32) -> SnapName {
        SnapName::at(Utc.with_ymd_and_hms(2026, 1, day, 2, 0, 0).unwrap())
    }

    fn remove(day: u32) -> Step {
        Step::RemoveSnapshot {
            snap: snap(day),
            reason: "window".into(),
        }
    }

    fn create(day: u32, temporary: bool) -> Step {
        Step::CreateSnapshot {
            snap: snap(day),
            backs: BackupFile::full(snap(day), Compression::None),
            temporary,
        }
    }

    fn export(day: u32, base: Option<u32>) -> Step {
        let file = match base {
            Some(b) => BackupFile::diff(snap(b), snap(day), Compression::None),
            None => BackupFile::full(snap(day), Compression::None),
        };
        Step::Export {
            file,
            reason: String::new(),
        }
    }

    /// A window slide on day 9: the new base is day 5's snapshot, days 1-4 leave, then the diff
    /// from day 8.
    fn slide() -> Plan {
        Plan {
            snapshot: snap(9),
            steps: vec![
                remove(1), // a leftover of an interrupted run, removed first anyway
                create(9, false),
                export(5, None),
                remove(2),
                remove(3),
                remove(4),
                export(9, Some(8)),
            ],
        }
    }

    fn shown(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|step| match step {
                Step::CreateSnapshot { snap, .. } => format!("create {snap}"),
                Step::RemoveSnapshot { snap, .. } => format!("remove {snap}"),
                Step::Export { file, .. } => format!("export {}", file.file_name("i")),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_window_makes_room_before_the_snapshot_when_the_limit_asks() {
        let original = shown(&slide());
        // Snapshots of days 1-8: 8, one of which goes before the creation anyway.
        for (limit, moved) in [(None, false), (Some(100), false), (Some(8), false)] {
            let plan = fit(slide(), 8, limit).unwrap();
            assert_eq!(shown(&plan) == original, !moved, "{limit:?}");
        }
        for limit in [7, 5] {
            let plan = fit(slide(), 8, Some(limit)).unwrap();
            assert_eq!(
                shown(&plan),
                [0, 3, 4, 5, 1, 2, 6].map(|i| original[i].clone()),
                "{limit}"
            );
        }
        let err = fit(slide(), 8, Some(4)).unwrap_err();
        assert_eq!((err.count, err.limit, err.needed), (7, 4, 5));
        assert!(
            err.to_string().contains(
                "has 7 snapshots and its snapshot limit is 4, and this run may remove only 3 of \
                 them"
            ) && err.to_string().contains("--limit 5"),
            "{err}"
        );
    }

    #[test]
    fn snapshots_a_later_step_reads_and_the_new_one_stay_in_place() {
        // Full mode: the temporary snapshot is removed after its export; nothing else goes.
        let full = Plan {
            snapshot: snap(9),
            steps: vec![create(9, true), export(9, None), remove(9)],
        };
        assert_eq!(fit(full.clone(), 2, Some(3)).unwrap(), full);
        let err = fit(full, 3, Some(3)).unwrap_err();
        assert!(!err.to_string().contains("may remove"), "{err}");
        assert_eq!(err.needed, 4);
        // A removal of a snapshot a diff starts from is never brought forward.
        let odd = Plan {
            snapshot: snap(9),
            steps: vec![create(9, false), remove(3), export(9, Some(3))],
        };
        assert_eq!(fit(odd, 3, Some(3)).unwrap_err().needed, 4);
    }
}

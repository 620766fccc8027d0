//! Decides what one run does to one image, without doing any of it.
//!
//! [`plan_image`] is a pure function of the settings, what exists (snapshots in the cluster, files
//! in the image folder) and the current time, so every decision can be tested with tables and
//! printed in check mode exactly as it would be carried out. Each step carries the reason it was
//! chosen.
//!
//! The rules are the original tool's, so an existing chain continues unchanged: full mode takes a
//! temporary snapshot, exports it and removes it. Incremental mode takes snapshot T; with no earlier
//! backup snapshot it exports T in full; when the oldest backup snapshot has left the window it
//! exports the oldest snapshot still inside (S) in full, removes the files older than S and the
//! diff that ends at S, and removes the snapshots outside the window; then, if another backup
//! snapshot is left besides T, it exports the changes from the newest earlier one to T.
//!
//! One deliberate fix: a diff is only written when its base snapshot is backed by a complete chain
//! of files back to a full backup. A snapshot left behind by a run that died has no file, and a
//! diff from it could never be restored; a full backup of T is taken instead.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::config::{BackupMode, Window};
use crate::naming::{BackupFile, Content, Entry, SnapName, CHECKSUM_SUFFIX};
use crate::rbd::Snapshot;

/// The parts of a pool's configuration that shape a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub mode: BackupMode,
    pub window: Window,
    pub compress: bool,
}

/// One thing a run does to an image, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateSnapshot {
        snap: SnapName,
    },
    /// Write `file` from the cluster (a full export of its snapshot, or a diff from its base).
    Export {
        file: BackupFile,
        reason: String,
    },
    /// A file the plan relies on is already there, written by an earlier run.
    Reuse {
        file: BackupFile,
        reason: String,
    },
    RemoveFile {
        name: String,
        reason: String,
    },
    RemoveSnapshot {
        snap: String,
        reason: String,
    },
    /// A folder entry the tool does not recognise; it is kept.
    UnexpectedFile {
        name: String,
    },
    /// A snapshot with the tool's prefix whose name does not parse; it is left alone.
    UnparseableSnapshot {
        name: String,
    },
}

/// What one run will do to one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The snapshot this run creates.
    pub snapshot: SnapName,
    pub steps: Vec<Step>,
}

/// The snapshot this run would create exists already (a second run within the same second).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "snapshot {0} exists already; was another backup of this image started in the same second?"
)]
pub struct SnapshotExists(pub String);

/// Plans one run for `image` at `now`, given its snapshots (any order) and the names in its folder.
pub fn plan_image(
    image: &str,
    settings: &Settings,
    snapshots: &[Snapshot],
    files: &[String],
    now: DateTime<Utc>,
) -> Result<Plan, SnapshotExists> {
    let new = SnapName::at(now);
    if snapshots.iter().any(|s| s.name == new.as_str()) {
        return Err(SnapshotExists(new.to_string()));
    }
    let mut plan = Plan {
        snapshot: new.clone(),
        steps: Vec::new(),
    };
    let mut folder = Folder::read(image, files);
    let owned = owned_snapshots(snapshots, &mut plan.steps);
    let owned = recover(&mut folder, owned, &mut plan.steps);
    plan.steps.push(Step::CreateSnapshot { snap: new.clone() });
    match settings.mode {
        BackupMode::Full => {
            plan.steps.push(Step::Export {
                file: BackupFile::full(new.clone(), settings.compress),
                reason: "full backup mode".into(),
            });
            plan.steps.push(Step::RemoveSnapshot {
                snap: new.to_string(),
                reason: "temporary snapshot of a full backup".into(),
            });
        }
        BackupMode::Incremental => {
            Incremental {
                image,
                settings,
                new,
                owned,
                folder,
            }
            .plan(&mut plan.steps);
        }
    }
    Ok(plan)
}

/// Clears what interrupted runs left behind, before anything else happens: temporary files,
/// checksum files whose backup file was never completed, and backup snapshots that no backup file
/// belongs to (created by a run that died before its export finished). Returns the snapshots that
/// remain; the folder forgets the removed names.
fn recover(folder: &mut Folder, owned: Vec<SnapName>, steps: &mut Vec<Step>) -> Vec<SnapName> {
    let leftovers: Vec<(String, String)> = folder
        .names
        .iter()
        .filter_map(|name| match Entry::classify(&folder.image, name) {
            Entry::Temporary => Some((
                name.clone(),
                "temporary file of an interrupted run".to_string(),
            )),
            Entry::Checksum(of) if !folder.names.contains(&of.file_name(&folder.image)) => Some((
                name.clone(),
                "checksum of a backup file that was never completed".to_string(),
            )),
            _ => None,
        })
        .collect();
    for (name, reason) in leftovers {
        folder.names.remove(&name);
        steps.push(Step::RemoveFile { name, reason });
    }
    let (backed, orphans): (Vec<SnapName>, Vec<SnapName>) = owned
        .into_iter()
        .partition(|snap| folder.find(|f| f.snap == *snap).is_some());
    for snap in orphans {
        steps.push(Step::RemoveSnapshot {
            snap: snap.to_string(),
            reason: "no backup file belongs to it: left by a run that did not finish".into(),
        });
    }
    backed
}

/// The tool's snapshots in id order; an owned name that does not parse is reported and skipped.
fn owned_snapshots(snapshots: &[Snapshot], steps: &mut Vec<Step>) -> Vec<SnapName> {
    let mut sorted: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| SnapName::is_owned(&s.name))
        .collect();
    sorted.sort_by_key(|s| s.id);
    sorted
        .into_iter()
        .filter_map(|s| {
            let parsed = SnapName::parse(&s.name).filter(|n| !n.is_legacy());
            if parsed.is_none() {
                steps.push(Step::UnparseableSnapshot {
                    name: s.name.clone(),
                });
            }
            parsed
        })
        .collect()
}

/// The image folder's entries, sorted by name so plans do not depend on directory order.
struct Folder {
    image: String,
    names: BTreeSet<String>,
    backups: Vec<(String, BackupFile)>,
}

impl Folder {
    fn read(image: &str, files: &[String]) -> Folder {
        let names: BTreeSet<String> = files.iter().cloned().collect();
        let backups = names
            .iter()
            .filter_map(|name| match Entry::classify(image, name) {
                Entry::Backup(file) => Some((name.clone(), file)),
                _ => None,
            })
            .collect();
        Folder {
            image: image.to_string(),
            names,
            backups,
        }
    }

    fn find(&self, wanted: impl Fn(&BackupFile) -> bool) -> Option<&BackupFile> {
        self.backups.iter().map(|(_, f)| f).find(|f| wanted(f))
    }
}

struct Incremental<'a> {
    image: &'a str,
    settings: &'a Settings,
    new: SnapName,
    owned: Vec<SnapName>,
    folder: Folder,
}

impl Incremental<'_> {
    fn plan(self, steps: &mut Vec<Step>) {
        let (Some(oldest), Some(newest)) = (self.owned.first(), self.owned.last()) else {
            steps.push(Step::Export {
                file: BackupFile::full(self.new.clone(), self.settings.compress),
                reason: "first backup of this image: it has no backup snapshot yet".into(),
            });
            return;
        };
        let now = self.new.taken();
        let window = self.settings.window;
        // Files the chain check may rely on once this run's removals and exports are done.
        let mut kept: Vec<BackupFile> =
            self.folder.backups.iter().map(|(_, f)| f.clone()).collect();
        let mut remaining = self.owned.len() + 1;
        if window.is_outside(now, oldest.taken()) {
            let cutoff = window.cutoff(now);
            let base = self
                .owned
                .iter()
                .find(|s| !window.is_outside(now, s.taken()))
                .unwrap_or(&self.new)
                .clone();
            self.write_new_base(&base, oldest, steps);
            kept.retain(|f| !superseded_by(f, &base));
            kept.push(BackupFile::full(base.clone(), self.settings.compress));
            self.prune_files(&base, steps);
            for snap in self
                .owned
                .iter()
                .filter(|s| window.is_outside(now, s.taken()))
            {
                remaining -= 1;
                steps.push(Step::RemoveSnapshot {
                    snap: snap.to_string(),
                    reason: format!(
                        "taken {}, before the window of {window} that starts {}",
                        snap.taken(),
                        cutoff
                    ),
                });
            }
        }
        if remaining > 1 {
            steps.push(self.diff_or_full(newest, &kept));
        }
    }

    fn write_new_base(&self, base: &SnapName, oldest: &SnapName, steps: &mut Vec<Step>) {
        let existing = self
            .folder
            .find(|f| f.is_full() && f.snap == *base)
            .cloned();
        let reason = format!(
            "the oldest backup snapshot {oldest} has left the window of {}: {base} becomes the new base",
            self.settings.window
        );
        steps.push(match existing {
            Some(file) => Step::Reuse {
                file,
                reason: format!("{reason}; its full backup was written by an earlier run"),
            },
            None => Step::Export {
                file: BackupFile::full(base.clone(), self.settings.compress),
                reason,
            },
        });
    }

    /// The original's pruning: every backup file dated before the new base, and the diff that
    /// ends at it, go; unrecognised names are reported and kept.
    fn prune_files(&self, base: &SnapName, steps: &mut Vec<Step>) {
        for name in &self.folder.names {
            match Entry::classify(self.image, name) {
                Entry::Backup(file) if superseded_by(&file, base) => {
                    steps.push(Step::RemoveFile {
                        name: name.clone(),
                        reason: removal_reason(&file, base),
                    });
                    let checksum = format!("{name}{CHECKSUM_SUFFIX}");
                    if self.folder.names.contains(&checksum) {
                        steps.push(Step::RemoveFile {
                            name: checksum,
                            reason: format!("checksum of {name}, which is removed"),
                        });
                    }
                }
                Entry::Backup(file) if file.snap.is_legacy() => {
                    steps.push(Step::UnexpectedFile { name: name.clone() })
                }
                Entry::Unexpected => steps.push(Step::UnexpectedFile { name: name.clone() }),
                Entry::Backup(_) | Entry::Checksum(_) | Entry::Temporary => {}
            }
        }
    }

    fn diff_or_full(&self, newest: &SnapName, kept: &[BackupFile]) -> Step {
        let compress = self.settings.compress;
        if chain_reaches_full(newest, kept) {
            return Step::Export {
                file: BackupFile::diff(newest.clone(), self.new.clone(), compress),
                reason: format!("changes since the newest backup snapshot {newest}"),
            };
        }
        Step::Export {
            file: BackupFile::full(self.new.clone(), compress),
            reason: format!(
                "the newest backup snapshot {newest} has no complete chain of backup files back to \
                 a full backup (an earlier run did not finish?): a diff from it could not be \
                 restored, so this run takes a full backup instead"
            ),
        }
    }
}

/// Whether pruning around a new base `base` removes `file` (legacy names are never touched).
fn superseded_by(file: &BackupFile, base: &SnapName) -> bool {
    if file.snap.is_legacy() {
        return false;
    }
    file.snap.taken() < base.taken()
        || (file.snap.taken() == base.taken() && matches!(file.content, Content::DiffFrom(_)))
}

fn removal_reason(file: &BackupFile, base: &SnapName) -> String {
    if file.snap.taken() < base.taken() {
        format!("older than the new base {base}")
    } else {
        format!("superseded by the full backup of {base}")
    }
}

/// True when `snap` has a backup file and following diffs back leads to a full backup.
pub fn chain_reaches_full(snap: &SnapName, files: &[BackupFile]) -> bool {
    let mut current = snap;
    // Each step moves to an older snapshot, so the walk ends; the bound guards odd file sets.
    for _ in 0..=files.len() {
        if files.iter().any(|f| f.is_full() && f.snap == *current) {
            return true;
        }
        match files
            .iter()
            .filter(|f| f.snap == *current)
            .find_map(|f| f.base().filter(|b| b.taken() < current.taken()))
        {
            Some(base) => current = base,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WindowUnit;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2017, 8, day, hour, 0, sec).unwrap()
    }

    fn name(t: DateTime<Utc>) -> String {
        SnapName::at(t).to_string()
    }

    fn incremental(size: u32, unit: WindowUnit, compress: bool) -> Settings {
        Settings {
            mode: BackupMode::Incremental,
            window: Window { size, unit },
            compress,
        }
    }

    /// The cluster and folder state of one image, advanced by carrying out plans.
    #[derive(Default)]
    struct World {
        snaps: Vec<Snapshot>,
        files: BTreeSet<String>,
        next_id: u64,
    }

    impl World {
        fn with(snaps: &[&str], files: &[&str]) -> World {
            let mut w = World::default();
            for s in snaps {
                w.add_snap(s);
            }
            w.files = files.iter().map(|f| f.to_string()).collect();
            w
        }

        fn add_snap(&mut self, name: &str) {
            self.next_id += 1;
            self.snaps.push(Snapshot {
                id: self.next_id,
                name: name.into(),
            });
        }

        fn plan(&self, s: &Settings, now: DateTime<Utc>) -> Plan {
            let files: Vec<String> = self.files.iter().cloned().collect();
            plan_image("img", s, &self.snaps, &files, now).unwrap()
        }

        fn run(&mut self, s: &Settings, now: DateTime<Utc>) -> Plan {
            let plan = self.plan(s, now);
            for step in &plan.steps {
                match step {
                    Step::CreateSnapshot { snap } => self.add_snap(snap.as_str()),
                    Step::Export { file, .. } => {
                        self.files.insert(file.file_name("img"));
                    }
                    Step::RemoveFile { name, .. } => assert!(self.files.remove(name), "{name}"),
                    Step::RemoveSnapshot { snap, .. } => {
                        let before = self.snaps.len();
                        self.snaps.retain(|s| s.name != *snap);
                        assert_eq!(before, self.snaps.len() + 1, "{snap}");
                    }
                    Step::Reuse { .. }
                    | Step::UnexpectedFile { .. }
                    | Step::UnparseableSnapshot { .. } => {}
                }
            }
            plan
        }

        fn snap_names(&self) -> Vec<&str> {
            self.snaps.iter().map(|s| s.name.as_str()).collect()
        }

        fn file_names(&self) -> Vec<&str> {
            self.files.iter().map(String::as_str).collect()
        }
    }

    fn exports(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Export { file, .. } => Some(file.file_name("img")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn full_mode_takes_exports_and_removes_a_temporary_snapshot() {
        let s = Settings {
            mode: BackupMode::Full,
            window: Window {
                size: 7,
                unit: WindowUnit::Days,
            },
            compress: true,
        };
        let old = name(at(1, 2, 0));
        let mut w = World::with(&[&old], &["img@BACKUPUTC20170801T020000.full"]);
        let plan = w.run(&s, at(9, 2, 0));
        assert_eq!(exports(&plan), ["img@BACKUPUTC20170809T020000.full.tar.gz"]);
        assert_eq!(
            w.snap_names(),
            [old.as_str()],
            "only the temporary snapshot goes"
        );
        assert_eq!(w.files.len(), 2, "full mode never prunes");
    }

    #[test]
    fn the_first_incremental_run_takes_a_full_backup() {
        let mut w = World::with(&["nightly"], &[]);
        let plan = w.run(&incremental(7, WindowUnit::Days, false), at(1, 2, 0));
        assert_eq!(exports(&plan), ["img@BACKUPUTC20170801T020000.full"]);
        assert_eq!(w.snap_names(), ["nightly", "BACKUPUTC20170801T020000"]);
    }

    /// The upstream worked example: daily runs at 02:00:0x with a window of 7 days.
    #[test]
    fn worked_daily_example() {
        let s = incremental(7, WindowUnit::Days, false);
        let mut w = World::default();
        let mut expected_files = vec![];
        for day in 1..=7 {
            let plan = w.run(&s, at(day, 2, day));
            let file = if day == 1 {
                "img@BACKUPUTC20170801T020001.full".to_string()
            } else {
                format!(
                    "img@{}.diff_from_{}",
                    name(at(day, 2, day)),
                    name(at(day - 1, 2, day - 1))
                )
            };
            assert_eq!(exports(&plan), std::slice::from_ref(&file), "day {day}");
            expected_files.push(file);
        }
        // Day 8: the first snapshot is 7 days and 7 seconds old: outside; S = day 2's snapshot.
        let plan = w.run(&s, at(8, 2, 8));
        assert_eq!(
            exports(&plan),
            [
                "img@BACKUPUTC20170802T020002.full",
                "img@BACKUPUTC20170808T020008.diff_from_BACKUPUTC20170807T020007",
            ]
        );
        let removed: Vec<&str> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::RemoveFile { name, .. } => Some(name.as_str()),
                Step::RemoveSnapshot { snap, .. } => Some(snap.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            removed,
            [
                "img@BACKUPUTC20170801T020001.full",
                "img@BACKUPUTC20170802T020002.diff_from_BACKUPUTC20170801T020001",
                "BACKUPUTC20170801T020001",
            ]
        );
        assert_eq!(w.snaps.len(), 7);
        assert_eq!(w.files.len(), 7);
        assert!(w.files.contains("img@BACKUPUTC20170802T020002.full"));
        // Day 9: the same pattern again, one day on.
        let plan = w.run(&s, at(9, 2, 9));
        assert_eq!(
            exports(&plan),
            [
                "img@BACKUPUTC20170803T020003.full",
                "img@BACKUPUTC20170809T020009.diff_from_BACKUPUTC20170808T020008",
            ]
        );
        assert_eq!(w.snaps.len(), 7);
        assert_eq!(
            w.file_names()[0],
            "img@BACKUPUTC20170803T020003.full",
            "one full remains, then the diffs"
        );
        assert_eq!(w.files.len(), 7);
    }

    #[test]
    fn exactly_window_old_is_still_inside() {
        let s = incremental(7, WindowUnit::Days, false);
        let mut w = World::default();
        w.run(&s, at(1, 2, 0));
        let plan = w.run(&s, at(8, 2, 0));
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170808T020000.diff_from_BACKUPUTC20170801T020000"]
        );
        let plan = w.run(&s, at(8, 2, 1));
        assert_eq!(
            exports(&plan)[0],
            "img@BACKUPUTC20170808T020000.full",
            "one second later the slide starts"
        );
    }

    #[test]
    fn window_size_zero_rebases_on_every_run() {
        let s = incremental(0, WindowUnit::Days, true);
        let mut w = World::default();
        w.run(&s, at(1, 2, 0));
        w.run(&s, at(1, 3, 0));
        let plan = w.run(&s, at(1, 4, 0));
        assert_eq!(exports(&plan), ["img@BACKUPUTC20170801T040000.full.tar.gz"]);
        assert_eq!(w.snap_names(), ["BACKUPUTC20170801T040000"]);
        assert_eq!(w.file_names(), ["img@BACKUPUTC20170801T040000.full.tar.gz"]);
    }

    #[test]
    fn runs_farther_apart_than_the_window_keep_only_the_new_full() {
        let s = incremental(2, WindowUnit::Hours, false);
        let mut w = World::default();
        w.run(&s, at(1, 0, 0));
        w.run(&s, at(1, 1, 0));
        w.run(&s, at(5, 0, 0));
        assert_eq!(w.snap_names(), ["BACKUPUTC20170805T000000"]);
        assert_eq!(w.file_names(), ["img@BACKUPUTC20170805T000000.full"]);
    }

    #[test]
    fn slide_keeps_unexpected_and_legacy_files_and_warns() {
        let s = incremental(1, WindowUnit::Days, false);
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 1, 0))],
            &[
                "img@BACKUPUTC20170801T000000.full",
                "img@BACKUPUTC20170801T000000.full.sha256",
                "img@BACKUPUTC20170802T010000.diff_from_BACKUPUTC20170801T000000",
                "img@UTC20170101T000000.full",
                "notes.txt",
            ],
        );
        let plan = w.run(&s, at(2, 12, 0));
        let unexpected: Vec<&Step> = plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::UnexpectedFile { .. }))
            .collect();
        assert_eq!(unexpected.len(), 2);
        assert_eq!(
            w.file_names(),
            [
                "img@BACKUPUTC20170802T010000.full",
                "img@BACKUPUTC20170802T120000.diff_from_BACKUPUTC20170802T010000",
                "img@UTC20170101T000000.full",
                "notes.txt",
            ]
        );
    }

    #[test]
    fn slide_reuses_a_base_written_by_an_interrupted_run() {
        let s = incremental(1, WindowUnit::Days, true);
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 1, 0))],
            &[
                "img@BACKUPUTC20170801T000000.full.tar.gz",
                "img@BACKUPUTC20170802T010000.diff_from_BACKUPUTC20170801T000000.tar.gz",
                "img@BACKUPUTC20170802T010000.full",
            ],
        );
        let plan = w.run(&s, at(2, 12, 0));
        assert!(matches!(&plan.steps[1], Step::Reuse { file, .. } if !file.compressed));
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170802T120000.diff_from_BACKUPUTC20170802T010000.tar.gz"]
        );
    }

    #[test]
    fn leftovers_of_an_interrupted_run_are_cleared_first() {
        let s = incremental(7, WindowUnit::Days, false);
        // Day 2's run died after creating its snapshot and a checksum, mid-export.
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 0, 0))],
            &[
                "img@BACKUPUTC20170801T000000.full",
                "img@BACKUPUTC20170801T000000.full.sha256",
                "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000.sha256",
                ".cephbackup-tmp.x1y2z3",
            ],
        );
        let plan = w.run(&s, at(3, 0, 0));
        let recovery: Vec<(&str, &str)> = plan.steps[..3]
            .iter()
            .map(|step| match step {
                Step::RemoveFile { name, reason } | Step::RemoveSnapshot { snap: name, reason } => {
                    (name.as_str(), reason.as_str())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            recovery,
            [
                (
                    ".cephbackup-tmp.x1y2z3",
                    "temporary file of an interrupted run"
                ),
                (
                    "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000.sha256",
                    "checksum of a backup file that was never completed"
                ),
                (
                    "BACKUPUTC20170802T000000",
                    "no backup file belongs to it: left by a run that did not finish"
                ),
            ]
        );
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170803T000000.diff_from_BACKUPUTC20170801T000000"],
            "the orphan never becomes a diff base"
        );
        assert_eq!(
            w.file_names(),
            [
                "img@BACKUPUTC20170801T000000.full",
                "img@BACKUPUTC20170801T000000.full.sha256",
                "img@BACKUPUTC20170803T000000.diff_from_BACKUPUTC20170801T000000",
            ]
        );
    }

    #[test]
    fn a_chain_that_does_not_reach_a_full_leads_to_a_new_full() {
        let s = incremental(7, WindowUnit::Days, false);
        // The original's bug: its first full export failed, later runs wrote diffs anyway.
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 0, 0))],
            &[
                "img@BACKUPUTC20170801T000000.diff_from_BACKUPUTC20170731T000000",
                "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000",
            ],
        );
        let plan = w.run(&s, at(3, 0, 0));
        assert_eq!(exports(&plan), ["img@BACKUPUTC20170803T000000.full"]);
        let Step::Export { reason, .. } = &plan.steps[1] else {
            panic!("{plan:?}")
        };
        assert!(reason.contains("BACKUPUTC20170802T000000 has no complete chain"));
        let plan = w.run(&s, at(4, 0, 0));
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170804T000000.diff_from_BACKUPUTC20170803T000000"]
        );
    }

    #[test]
    fn a_gap_in_the_chain_is_detected_through_the_slide() {
        let s = incremental(1, WindowUnit::Days, false);
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 1, 0)), &name(at(2, 2, 0))],
            &[
                "img@BACKUPUTC20170801T000000.full",
                // The diff to 01:00 on day 2 is missing.
                "img@BACKUPUTC20170802T020000.diff_from_BACKUPUTC20170802T010000",
            ],
        );
        let plan = w.run(&s, at(2, 12, 0));
        // 01:00 has no file, so its snapshot goes; 02:00 becomes the new base and the chain
        // 02:00 → now is whole again.
        assert_eq!(
            exports(&plan),
            [
                "img@BACKUPUTC20170802T020000.full",
                "img@BACKUPUTC20170802T120000.diff_from_BACKUPUTC20170802T020000",
            ]
        );
    }

    #[test]
    fn calendar_months_slide_on_the_calendar() {
        let s = incremental(1, WindowUnit::Months, false);
        let mut w = World::default();
        w.run(&s, Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap());
        let plan = w.run(&s, Utc.with_ymd_and_hms(2026, 2, 28, 0, 0, 0).unwrap());
        assert_eq!(
            exports(&plan).len(),
            1,
            "Jan 31 is inside one month of Feb 28"
        );
        // One calendar month before March 28 is February 28, although only 28 days passed.
        let plan = w.run(&s, Utc.with_ymd_and_hms(2026, 3, 28, 0, 0, 0).unwrap());
        assert_eq!(
            exports(&plan)[0],
            "img@BACKUPUTC20260228T000000.full",
            "Jan 31 left the window; Feb 28 is exactly one month old and stays"
        );
    }

    #[test]
    fn unparseable_owned_snapshots_are_reported_and_ignored() {
        let w = World::with(&["BACKUP-manual", "nightly"], &[]);
        let plan = w.plan(&incremental(7, WindowUnit::Days, false), at(1, 0, 0));
        assert_eq!(
            plan.steps[0],
            Step::UnparseableSnapshot {
                name: "BACKUP-manual".into()
            }
        );
        assert_eq!(exports(&plan), ["img@BACKUPUTC20170801T000000.full"]);
    }

    #[test]
    fn a_second_run_in_the_same_second_is_refused() {
        let snaps = [Snapshot {
            id: 1,
            name: name(at(1, 0, 0)),
        }];
        let err = plan_image(
            "img",
            &incremental(7, WindowUnit::Days, false),
            &snaps,
            &[],
            at(1, 0, 0),
        )
        .unwrap_err();
        assert_eq!(err.0, "BACKUPUTC20170801T000000");
    }

    #[test]
    fn chain_walk() {
        let s = |d| SnapName::at(at(d, 0, 0));
        let files = [
            BackupFile::full(s(1), true),
            BackupFile::diff(s(1), s(2), false),
            BackupFile::diff(s(2), s(3), true),
            BackupFile::diff(s(4), s(5), true),
        ];
        assert!(chain_reaches_full(&s(1), &files));
        assert!(chain_reaches_full(&s(3), &files));
        assert!(!chain_reaches_full(&s(5), &files));
        assert!(!chain_reaches_full(&s(6), &files));
    }
}

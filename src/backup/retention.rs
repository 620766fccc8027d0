//! Retention an administrator can reason about: which restore points a policy keeps, which it
//! removes and why, and when each point will go.
//!
//! Two policies, one per backup mode:
//! - **Full mode** keeps everything unless keep rules are set (`keep last`, `keep daily`,
//!   `keep weekly`, `keep monthly`). They mean what they mean in restic and Benji: the newest
//!   `last` backups, and the newest backup of each of the last N days, ISO weeks or months (UTC)
//!   that have a backup; a backup any rule keeps stays. Only stand-alone full backups are
//!   candidates: never a diff, never a full a diff builds on, never a file with a legacy name.
//! - **Incremental mode** keeps the original's window; `keep minimum` (in the planner, which owns
//!   the slide) only stops the window from leaving fewer than N restore points.
//!
//! Everything here is a pure function of the points (as named by their snapshots), the
//! configuration and, for expiry, the current time, so each rule is table-tested and `list`,
//! `--check` and a real run all say the same thing.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};

use crate::config::job::BackupMode;
use crate::config::keep::{KeepRules, Period};
use crate::config::window::{Window, WindowUnit};
use crate::folder::chain::{FolderFile, Layout};
use crate::folder::naming::SnapName;

impl Period {
    fn bucket(self, index: usize, taken: DateTime<Utc>) -> Bucket {
        match self {
            Period::Backup => Bucket::Backup(index),
            Period::Day => Bucket::Day(taken.date_naive()),
            Period::Week => {
                let week = taken.iso_week();
                Bucket::Week(week.year(), week.week())
            }
            Period::Month => Bucket::Month(taken.year(), taken.month()),
        }
    }
}

/// The day, ISO week or month a backup falls in (UTC), or its rank for `keep last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Backup(usize),
    Day(NaiveDate),
    Week(i32, u32),
    Month(i32, u32),
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bucket::Backup(index) => write!(f, "backup {}", index + 1),
            Bucket::Day(day) => write!(f, "{}", day.format("%Y-%m-%d")),
            Bucket::Week(year, week) => write!(f, "week {year}-W{week:02}"),
            Bucket::Month(year, month) => write!(f, "{year}-{month:02}"),
        }
    }
}

/// Why a rule keeps a backup: it is the newest of `bucket`, the `rank`-th such period counted
/// back from the newest, of `of` the rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub period: Period,
    pub bucket: Bucket,
    pub rank: u32,
    pub of: u32,
}

impl Hold {
    /// True when this is the oldest period the rule keeps: a newer period with a backup pushes
    /// it out.
    pub fn at_edge(&self) -> bool {
        self.rank == self.of
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.period.key();
        match self.period {
            Period::Backup => write!(f, "{key} ({} of {})", self.rank, self.of),
            Period::Day | Period::Week | Period::Month => write!(
                f,
                "{key} (newest of {}, {} of {})",
                self.bucket, self.rank, self.of
            ),
        }
    }
}

/// Applies the keep rules to `points` (any order, repeats ignored): every point with the rules
/// that keep it; an empty list means no rule does.
///
/// Each rule walks the points from the newest and keeps the first point of each new period until
/// it has kept as many periods as it counts; periods without a backup are skipped, not counted,
/// so a gap in the backups never empties a rule.
pub fn keep(rules: &KeepRules, points: &[SnapName]) -> BTreeMap<SnapName, Vec<Hold>> {
    let mut newest_first: Vec<&SnapName> = points.iter().collect();
    newest_first.sort_by(|a, b| (b.taken(), b.as_str()).cmp(&(a.taken(), a.as_str())));
    newest_first.dedup();
    let mut holds: BTreeMap<SnapName, Vec<Hold>> = newest_first
        .iter()
        .map(|p| ((*p).clone(), Vec::new()))
        .collect();
    for (period, count) in rules.rules() {
        let mut last_bucket = None;
        let mut rank = 0;
        for (index, point) in newest_first.iter().enumerate() {
            if rank == count {
                break;
            }
            let bucket = period.bucket(index, point.taken());
            if last_bucket == Some(bucket) {
                continue;
            }
            last_bucket = Some(bucket);
            rank += 1;
            if let Some(kept) = holds.get_mut(*point) {
                kept.push(Hold {
                    period,
                    bucket,
                    rank,
                    of: count,
                });
            }
        }
    }
    holds
}

/// The full backups of a folder that full-mode keep rules may remove: regular files (the
/// [`Layout`] holds no others) named the current way, that no diff in the folder starts from.
/// A full a diff builds on stays whatever the rules say, so no chain ever loses its start.
pub fn candidates(layout: &Layout) -> Vec<&FolderFile> {
    layout
        .files
        .iter()
        .filter(|stored| stored.file.is_full() && !stored.file.snap.is_legacy())
        .filter(|stored| !is_base_of_a_diff(layout, &stored.file.snap))
        .collect()
}

fn is_base_of_a_diff(layout: &Layout, snap: &SnapName) -> bool {
    layout.files.iter().any(|f| f.file.base() == Some(snap))
}

/// What full-mode keep rules remove after a run that wrote the full backup of `new`: each
/// candidate no rule keeps, each followed by its checksum file, with the reason. `new` counts as
/// the newest point and is never removed. Without rules, nothing is removed.
pub fn full_mode_removals(
    rules: &KeepRules,
    layout: &Layout,
    new: &SnapName,
) -> Vec<(String, String)> {
    if !rules.is_set() {
        return Vec::new();
    }
    let candidates: Vec<&FolderFile> = candidates(layout)
        .into_iter()
        .filter(|stored| stored.file.snap != *new)
        .collect();
    let mut points: Vec<SnapName> = candidates.iter().map(|s| s.file.snap.clone()).collect();
    points.push(new.clone());
    let holds = keep(rules, &points);
    let mut removals = Vec::new();
    for stored in candidates {
        if holds.get(&stored.file.snap).is_some_and(|h| !h.is_empty()) {
            continue;
        }
        removals.push((
            stored.name.clone(),
            format!(
                "full-mode retention ({rules}): no keep rule holds this backup of {}",
                crate::output::time(stored.file.snap.taken())
            ),
        ));
        if let Some(checksum) = &stored.checksum {
            removals.push((
                checksum.clone(),
                format!("checksum of {}, which is removed", stored.name),
            ));
        }
    }
    removals
}

/// The last instant at which a backup taken at `taken` is still inside `window`: the first run
/// after it finds the backup outside. `None` when that lies beyond the dates the tool handles.
///
/// Found by bisection over whole seconds with [`Window::is_outside`] itself as the judge, so it
/// agrees with the slide to the second, calendar months and their short ends included.
pub fn last_inside(window: &Window, taken: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let longest = match window.unit {
        // A calendar month is at most 31 days.
        WindowUnit::Months => TimeDelta::try_days(31 * i64::from(window.size))?,
        WindowUnit::Minutes => TimeDelta::try_minutes(i64::from(window.size))?,
        WindowUnit::Hours => TimeDelta::try_hours(i64::from(window.size))?,
        WindowUnit::Days => TimeDelta::try_days(i64::from(window.size))?,
        WindowUnit::Weeks => TimeDelta::try_weeks(i64::from(window.size))?,
    };
    let mut inside = taken;
    let mut outside = taken
        .checked_add_signed(longest)?
        .checked_add_signed(TimeDelta::seconds(1))?;
    if window.is_outside(inside, taken) || !window.is_outside(outside, taken) {
        return None;
    }
    while (outside - inside) > TimeDelta::seconds(1) {
        let middle = inside + TimeDelta::seconds((outside - inside).num_seconds() / 2);
        if window.is_outside(middle, taken) {
            outside = middle;
        } else {
            inside = middle;
        }
    }
    Some(inside)
}

/// The configuration that decides when points go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub mode: BackupMode,
    pub window: Window,
    pub keep: KeepRules,
    /// Already at least 1.
    pub keep_minimum: u32,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            BackupMode::Full if self.keep.is_set() => write!(f, "full mode, {}", self.keep),
            BackupMode::Full => f.write_str("full mode, every backup kept (no keep rules)"),
            BackupMode::Incremental => write!(
                f,
                "incremental, window of {}, keep minimum = {}",
                self.window, self.keep_minimum
            ),
        }
    }
}

/// When a restore point will be removed under the current configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// No run removes it under this configuration (as it stands now).
    Kept { why: String },
    /// The next successful run removes it.
    NextRun { why: String },
    /// It leaves the window after `after`; a run after that removes it, unless `keep minimum`
    /// holds it because fewer than `minimum` newer points would remain.
    Window {
        after: DateTime<Utc>,
        window: Window,
        /// `Some((minimum, newer points now))` when keep minimum holds it beyond the window.
        held: Option<(u32, usize)>,
        /// True when `after` is already past.
        passed: bool,
    },
}

impl Expiry {
    /// A short word for machines: `kept`, `next_run`, `first_run_after` or `keep_minimum`.
    pub fn removal(&self) -> &'static str {
        match self {
            Expiry::Kept { .. } => "kept",
            Expiry::NextRun { .. } => "next_run",
            Expiry::Window { held: Some(_), .. } => "keep_minimum",
            Expiry::Window { passed: true, .. } => "next_run",
            Expiry::Window { .. } => "first_run_after",
        }
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |at: &DateTime<Utc>| crate::output::time(*at);
        match self {
            Expiry::Kept { why } => write!(f, "kept: {why}"),
            Expiry::NextRun { why } => write!(f, "removed by the next run: {why}"),
            Expiry::Window {
                after,
                window,
                held: None,
                passed: false,
            } => write!(
                f,
                "removed by the first run after {} (leaves the window of {window})",
                time(after)
            ),
            Expiry::Window {
                after,
                window,
                held: None,
                passed: true,
            } => write!(
                f,
                "removed by the next run (left the window of {window} after {})",
                time(after)
            ),
            Expiry::Window {
                after,
                window,
                held: Some((minimum, newer)),
                passed,
            } => write!(
                f,
                "kept while fewer than {minimum} newer restore points exist ({newer} now, keep \
                 minimum = {minimum}); {} the window of {window} after {}",
                if *passed { "left" } else { "leaves" },
                time(after)
            ),
        }
    }
}

/// When each restore point of `layout` will be removed under `policy`, seen at `now`.
pub fn expiries(
    policy: &Policy,
    layout: &Layout,
    now: DateTime<Utc>,
) -> BTreeMap<SnapName, Expiry> {
    let points: Vec<SnapName> = layout.points().into_iter().cloned().collect();
    match policy.mode {
        BackupMode::Full => full_mode_expiries(&policy.keep, layout, &points),
        BackupMode::Incremental => points
            .iter()
            .enumerate()
            .map(|(index, point)| {
                let newer = points.len() - index - 1;
                (point.clone(), window_expiry(policy, point, newer, now))
            })
            .collect(),
    }
}

fn window_expiry(policy: &Policy, point: &SnapName, newer: usize, now: DateTime<Utc>) -> Expiry {
    if point.is_legacy() {
        return Expiry::Kept {
            why: "named the original's pre-2017 way (no BACKUP prefix): the window never \
                  removes it"
                .into(),
        };
    }
    let Some(after) = last_inside(&policy.window, point.taken()) else {
        return Expiry::Kept {
            why: format!("the window of {} does not end", policy.window),
        };
    };
    // The run that would remove it adds a point of its own.
    let held = (newer + 1 < policy.keep_minimum as usize).then_some((policy.keep_minimum, newer));
    Expiry::Window {
        after,
        window: policy.window,
        held,
        passed: after < now,
    }
}

fn full_mode_expiries(
    rules: &KeepRules,
    layout: &Layout,
    points: &[SnapName],
) -> BTreeMap<SnapName, Expiry> {
    let candidates: Vec<SnapName> = candidates(layout)
        .iter()
        .map(|s| s.file.snap.clone())
        .collect();
    let holds = keep(rules, &candidates);
    points
        .iter()
        .map(|point| {
            let expiry = if !candidates.contains(point) {
                Expiry::Kept {
                    why: not_a_candidate(layout, point),
                }
            } else if !rules.is_set() {
                Expiry::Kept {
                    why: "full mode keeps every backup (no keep rules are set)".into(),
                }
            } else {
                match holds.get(point).filter(|h| !h.is_empty()) {
                    Some(held) => Expiry::Kept { why: held_by(held) },
                    None => Expiry::NextRun {
                        why: format!("no keep rule holds it ({rules})"),
                    },
                }
            };
            (point.clone(), expiry)
        })
        .collect()
}

fn held_by(holds: &[Hold]) -> String {
    let rules: Vec<String> = holds.iter().map(Hold::to_string).collect();
    let mut why = format!("by {}", rules.join(", "));
    if holds.iter().all(Hold::at_edge) {
        why.push_str("; at the edge of every rule that keeps it: a newer backup can push it out");
    }
    why
}

/// Why a full-mode point is never a candidate for the keep rules.
fn not_a_candidate(layout: &Layout, point: &SnapName) -> String {
    if point.is_legacy() {
        "named the original's pre-2017 way (no BACKUP prefix): keep rules never remove it".into()
    } else if is_base_of_a_diff(layout, point) {
        "diffs start from it: keep rules remove only full backups nothing builds on".into()
    } else {
        "a diff: keep rules remove only full backups".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::utc_hour as t;
    use chrono::TimeZone;

    fn snap(at: DateTime<Utc>) -> SnapName {
        SnapName::at(at)
    }

    /// The points kept, oldest first, as `YYYY-MM-DD HH`.
    fn kept(rules: KeepRules, points: &[DateTime<Utc>]) -> Vec<String> {
        let points: Vec<SnapName> = points.iter().map(|&p| snap(p)).collect();
        keep(&rules, &points)
            .into_iter()
            .filter(|(_, holds)| !holds.is_empty())
            .map(|(p, _)| p.taken().format("%Y-%m-%d %H").to_string())
            .collect()
    }

    fn rules(
        last: Option<u32>,
        daily: Option<u32>,
        weekly: Option<u32>,
        monthly: Option<u32>,
    ) -> KeepRules {
        KeepRules {
            last,
            daily,
            weekly,
            monthly,
        }
    }

    #[test]
    fn keep_rules_table() {
        struct Case {
            what: &'static str,
            rules: KeepRules,
            points: Vec<DateTime<Utc>>,
            kept: Vec<&'static str>,
        }
        let cases = [
            Case {
                what: "keep last keeps the newest N whatever their dates",
                rules: rules(Some(2), None, None, None),
                points: vec![
                    t(2026, 1, 1, 2),
                    t(2026, 1, 2, 2),
                    t(2026, 1, 2, 3),
                    t(2026, 1, 9, 2),
                ],
                kept: vec!["2026-01-02 03", "2026-01-09 02"],
            },
            Case {
                what: "keep daily: the newest of each day, across a month and a year boundary",
                rules: rules(None, Some(3), None, None),
                points: vec![
                    t(2025, 12, 30, 2),
                    t(2025, 12, 31, 2),
                    t(2025, 12, 31, 14),
                    t(2026, 1, 1, 2),
                    t(2026, 1, 1, 23),
                ],
                kept: vec!["2025-12-30 02", "2025-12-31 14", "2026-01-01 23"],
            },
            Case {
                what: "keep daily counts days that have a backup: a gap (an outage) is skipped",
                rules: rules(None, Some(2), None, None),
                points: vec![t(2026, 2, 27, 2), t(2026, 2, 28, 2), t(2026, 3, 10, 2)],
                kept: vec!["2026-02-28 02", "2026-03-10 02"],
            },
            Case {
                what: "keep weekly uses ISO weeks: 2020-12-31 and 2021-01-03 are both 2020-W53",
                rules: rules(None, None, Some(2), None),
                points: vec![
                    t(2020, 12, 27, 2), // Sunday, 2020-W52
                    t(2020, 12, 28, 2), // Monday, 2020-W53
                    t(2020, 12, 31, 2), // Thursday, 2020-W53
                    t(2021, 1, 3, 2),   // Sunday, 2020-W53
                    t(2021, 1, 4, 2),   // Monday, 2021-W01
                ],
                kept: vec!["2021-01-03 02", "2021-01-04 02"],
            },
            Case {
                what: "keep weekly: 2024-12-30 (Monday) already belongs to 2025-W01",
                rules: rules(None, None, Some(2), None),
                points: vec![t(2024, 12, 29, 2), t(2024, 12, 30, 2), t(2025, 1, 5, 2)],
                kept: vec!["2024-12-29 02", "2025-01-05 02"],
            },
            Case {
                what: "keep monthly: the newest of each month, across a year boundary",
                rules: rules(None, None, None, Some(3)),
                points: vec![
                    t(2025, 10, 31, 2),
                    t(2025, 11, 1, 2),
                    t(2025, 11, 30, 2),
                    t(2025, 12, 31, 23),
                    t(2026, 1, 1, 0),
                ],
                kept: vec!["2025-11-30 02", "2025-12-31 23", "2026-01-01 00"],
            },
            Case {
                what: "keep monthly skips months without a backup",
                rules: rules(None, None, None, Some(2)),
                points: vec![t(2025, 1, 15, 2), t(2025, 6, 15, 2), t(2026, 2, 1, 2)],
                kept: vec!["2025-06-15 02", "2026-02-01 02"],
            },
            Case {
                what: "rules add up: a point any rule keeps stays",
                rules: rules(Some(1), Some(2), None, Some(2)),
                points: vec![
                    t(2026, 1, 10, 2),
                    t(2026, 1, 31, 2),
                    t(2026, 2, 1, 2),
                    t(2026, 2, 2, 2),
                    t(2026, 2, 2, 14),
                ],
                kept: vec!["2026-01-31 02", "2026-02-01 02", "2026-02-02 14"],
            },
            Case {
                what: "a zero rule keeps nothing by itself",
                rules: rules(Some(0), Some(1), None, None),
                points: vec![t(2026, 1, 1, 2), t(2026, 1, 1, 3)],
                kept: vec!["2026-01-01 03"],
            },
            Case {
                what: "more periods asked than exist keeps them all",
                rules: rules(None, Some(30), None, None),
                points: vec![t(2026, 1, 1, 2), t(2026, 1, 5, 2)],
                kept: vec!["2026-01-01 02", "2026-01-05 02"],
            },
        ];
        for case in cases {
            assert_eq!(kept(case.rules, &case.points), case.kept, "{}", case.what);
        }
    }

    #[test]
    fn holds_say_which_rule_keeps_a_point_and_how_close_it_is_to_going() {
        let points = [
            snap(t(2026, 1, 30, 2)),
            snap(t(2026, 1, 31, 2)),
            snap(t(2026, 2, 1, 2)),
        ];
        let holds = keep(&rules(Some(2), Some(7), Some(1), Some(2)), &points);
        let shown =
            |p: &SnapName| -> Vec<String> { holds[p].iter().map(Hold::to_string).collect() };
        assert_eq!(
            shown(&points[2]),
            [
                "keep last (1 of 2)",
                "keep daily (newest of 2026-02-01, 1 of 7)",
                "keep weekly (newest of week 2026-W05, 1 of 1)",
                "keep monthly (newest of 2026-02, 1 of 2)",
            ]
        );
        assert_eq!(
            shown(&points[1]),
            [
                "keep last (2 of 2)",
                "keep daily (newest of 2026-01-31, 2 of 7)",
                "keep monthly (newest of 2026-01, 2 of 2)",
            ]
        );
        assert_eq!(
            shown(&points[0]),
            ["keep daily (newest of 2026-01-30, 3 of 7)"]
        );
    }

    fn layout(names: &[&str]) -> Layout {
        let names: Vec<String> = names.iter().map(std::string::ToString::to_string).collect();
        Layout::build("vm", &names)
    }

    #[test]
    fn full_mode_removes_only_stand_alone_current_fulls_with_their_checksums() {
        let folder = layout(&[
            "vm@BACKUPUTC20260101T020000.full",
            "vm@BACKUPUTC20260101T020000.full.sha256",
            "vm@BACKUPUTC20260102T020000.full.tar.gz",
            "vm@BACKUPUTC20260102T020000.full.tar.gz.sha256",
            // A chain some other job left: its full is a base, its diff is no candidate.
            "vm@BACKUPUTC20260103T020000.full",
            "vm@BACKUPUTC20260104T020000.diff_from_BACKUPUTC20260103T020000",
            // The original's names.
            "vm@UTC20170101T000000.full",
            "vm_UTC20170101T000000.full",
            "notes.txt",
            "vm@BACKUPUTC20260105T020000.full",
        ]);
        let new = snap(t(2026, 1, 6, 2));
        let removed: Vec<(String, String)> =
            full_mode_removals(&rules(Some(2), None, None, None), &folder, &new);
        let names: Vec<&str> = removed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "vm@BACKUPUTC20260101T020000.full",
                "vm@BACKUPUTC20260101T020000.full.sha256",
                "vm@BACKUPUTC20260102T020000.full.tar.gz",
                "vm@BACKUPUTC20260102T020000.full.tar.gz.sha256",
            ]
        );
        assert_eq!(
            removed[0].1,
            "full-mode retention (keep last = 2): no keep rule holds this backup of \
             2026-01-01 02:00:00 UTC"
        );
        assert_eq!(
            removed[1].1,
            "checksum of vm@BACKUPUTC20260101T020000.full, which is removed"
        );
        // Without rules nothing goes; with rules the new point is never removed.
        assert!(full_mode_removals(&KeepRules::default(), &folder, &new).is_empty());
        let only_new = full_mode_removals(&rules(Some(0), Some(0), None, None), &folder, &new);
        assert_eq!(only_new.len(), 5, "{only_new:?}");
    }

    #[test]
    fn last_inside_agrees_with_the_window_to_the_second() {
        let cases = [
            (
                Window {
                    size: 7,
                    unit: WindowUnit::Days,
                },
                t(2026, 1, 1, 2),
                t(2026, 1, 8, 2),
            ),
            (
                Window {
                    size: 0,
                    unit: WindowUnit::Days,
                },
                t(2026, 1, 1, 2),
                t(2026, 1, 1, 2),
            ),
            (
                Window {
                    size: 2,
                    unit: WindowUnit::Weeks,
                },
                t(2025, 12, 25, 2),
                t(2026, 1, 8, 2),
            ),
            (
                Window {
                    size: 90,
                    unit: WindowUnit::Minutes,
                },
                t(2026, 1, 1, 23),
                t(2026, 1, 2, 0) + TimeDelta::minutes(30),
            ),
            // One calendar month after 31 January: February has no 31st, so the point is still
            // inside until the last second of February.
            (
                Window {
                    size: 1,
                    unit: WindowUnit::Months,
                },
                t(2026, 1, 31, 2),
                Utc.with_ymd_and_hms(2026, 2, 28, 23, 59, 59).unwrap(),
            ),
            (
                Window {
                    size: 1,
                    unit: WindowUnit::Months,
                },
                t(2025, 12, 15, 2),
                t(2026, 1, 15, 2),
            ),
        ];
        for (window, taken, expected) in cases {
            let after = last_inside(&window, taken).unwrap();
            assert_eq!(after, expected, "{window} from {taken}");
            assert!(!window.is_outside(after, taken));
            assert!(window.is_outside(after + TimeDelta::seconds(1), taken));
        }
    }

    fn incremental(size: u32, minimum: u32) -> Policy {
        Policy {
            mode: BackupMode::Incremental,
            window: Window {
                size,
                unit: WindowUnit::Days,
            },
            keep: KeepRules::default(),
            keep_minimum: minimum,
        }
    }

    fn shown(expiries: &BTreeMap<SnapName, Expiry>) -> Vec<String> {
        expiries.values().map(Expiry::to_string).collect()
    }

    #[test]
    fn incremental_points_expire_with_the_window_and_keep_minimum() {
        let folder = layout(&[
            "vm@BACKUPUTC20260101T020000.full",
            "vm@BACKUPUTC20260102T020000.diff_from_BACKUPUTC20260101T020000",
            "vm@BACKUPUTC20260103T020000.diff_from_BACKUPUTC20260102T020000",
        ]);
        let now = t(2026, 1, 3, 12);
        assert_eq!(
            shown(&expiries(&incremental(2, 1), &folder, now)),
            [
                "removed by the next run (left the window of 2 days after 2026-01-03 02:00:00 UTC)",
                "removed by the first run after 2026-01-04 02:00:00 UTC (leaves the window of 2 days)",
                "removed by the first run after 2026-01-05 02:00:00 UTC (leaves the window of 2 days)",
            ]
        );
        // With keep minimum = 3 the oldest still goes with the next run, which leaves 3 points
        // without it (two here, and its own); the newer two are held until 3 newer points exist.
        let held = expiries(&incremental(2, 3), &folder, now);
        assert_eq!(
            shown(&held),
            [
                "removed by the next run (left the window of 2 days after 2026-01-03 02:00:00 UTC)",
                "kept while fewer than 3 newer restore points exist (1 now, keep minimum = 3); \
                 leaves the window of 2 days after 2026-01-04 02:00:00 UTC",
                "kept while fewer than 3 newer restore points exist (0 now, keep minimum = 3); \
                 leaves the window of 2 days after 2026-01-05 02:00:00 UTC",
            ]
        );
        let removals: Vec<&str> = held.values().map(Expiry::removal).collect();
        assert_eq!(removals, ["next_run", "keep_minimum", "keep_minimum"]);
        let four = expiries(&incremental(2, 4), &folder, now);
        assert_eq!(
            four.values().next().map(Expiry::to_string).as_deref(),
            Some(
                "kept while fewer than 4 newer restore points exist (2 now, keep minimum = 4); \
                 left the window of 2 days after 2026-01-03 02:00:00 UTC"
            )
        );
        let two = expiries(&incremental(2, 2), &folder, now);
        let removals: Vec<&str> = two.values().map(Expiry::removal).collect();
        assert_eq!(removals, ["next_run", "first_run_after", "keep_minimum"]);
    }

    #[test]
    fn full_mode_points_are_kept_or_removed_by_the_next_run() {
        let folder = layout(&[
            "vm@BACKUPUTC20260101T020000.full",
            "vm@BACKUPUTC20260102T020000.full",
            "vm@BACKUPUTC20260103T020000.full",
            "vm@BACKUPUTC20260104T020000.full",
            "vm@BACKUPUTC20260105T020000.diff_from_BACKUPUTC20260104T020000",
        ]);
        let policy = |keep| Policy {
            mode: BackupMode::Full,
            window: Window {
                size: 7,
                unit: WindowUnit::Days,
            },
            keep,
            keep_minimum: 1,
        };
        let now = t(2026, 1, 5, 12);
        assert_eq!(
            shown(&expiries(&policy(KeepRules::default()), &folder, now))[0],
            "kept: full mode keeps every backup (no keep rules are set)"
        );
        assert_eq!(
            shown(&expiries(
                &policy(rules(Some(2), None, None, None)),
                &folder,
                now
            )),
            [
                "removed by the next run: no keep rule holds it (keep last = 2)",
                "kept: by keep last (2 of 2); at the edge of every rule that keeps it: a newer \
                 backup can push it out",
                "kept: by keep last (1 of 2)",
                "kept: diffs start from it: keep rules remove only full backups nothing builds on",
                "kept: a diff: keep rules remove only full backups",
            ]
        );
    }
}

//! Decides what one run does to one image, without doing any of it.
//!
//! [`plan_image`] is a pure function of the settings, what exists (snapshots in the cluster, the
//! entries of the image folder, the tool's own record of the image) and the current time, so every
//! decision can be tested with tables and printed in check mode exactly as it would be carried
//! out. Each step carries the reason it was chosen.
//!
//! The rules are the original tool's, so an existing chain continues unchanged: full mode takes a
//! temporary snapshot, exports it and removes it. Incremental mode takes snapshot T; with no earlier
//! backup snapshot it exports T in full; when the oldest backup snapshot has left the window it
//! exports the oldest snapshot still inside (S) in full, removes the files older than S and the
//! diff that ends at S, and removes the snapshots outside the window; then, if another backup
//! snapshot is left besides T, it exports the changes to T from an earlier one.
//!
//! Two retention keys extend this, and change nothing when they are not set
//! ([`crate::backup::retention`]): in full mode, keep rules remove, after the export, the full backups no
//! rule keeps; in incremental mode, `keep minimum` moves the new base S back to an older snapshot
//! when the window alone would leave fewer restore points, so an outage longer than the window
//! never wipes the history.
//!
//! Where it differs, it is so that nothing is destroyed without proof and nothing unrestorable is
//! written:
//! - Recovery removes a snapshot only when the image record ([`crate::folder::record`]) shows that a run
//!   of ours created it and died before its file was complete. A snapshot without a file is
//!   otherwise left alone (another job's, or files moved off the host) until the window removes it.
//! - The base of a diff is the newest snapshot the folder can restore ([`crate::folder::chain`]), so a
//!   stray or leftover snapshot costs a diff from an older point, never a diff nothing can restore.
//!   When the record shows the destination backed the image up to a snapshot whose file is no
//!   longer here (shipped offsite after each run), the diff starts there, as the original's did.
//!   With neither, a full backup is taken.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::backup::retention::{self, Policy};
use crate::cluster::rbd::Snapshot;
use crate::config::job::{BackupMode, PoolJob};
use crate::config::{KeepRules, Window};
use crate::folder::chain::FolderEntry;
use crate::folder::chain::{FindingKind, FolderFile, Layout};
use crate::folder::naming::{
    checksum_name, BackupFile, Compression, Content, SnapName, SLIDE_MARKER,
};
use crate::folder::record::state::ImageRecord;
use crate::folder::slide;

/// The parts of a pool's configuration that shape a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub mode: BackupMode,
    pub window: Window,
    pub compress: Compression,
    /// Full mode: which full backups a successful run keeps (none set: all of them).
    pub keep: KeepRules,
    /// Incremental mode: the fewest restore points a window slide leaves; 1 is the original's
    /// behaviour (this run's own point always remains).
    pub keep_minimum: u32,
    /// Incremental mode: a window slide exports the new base from the cluster, as the original
    /// did, instead of building it from the files in the folder.
    pub slide_from_cluster: bool,
    /// `encrypt to` is set: new files are age files.
    pub encrypt: bool,
}

impl Settings {
    pub fn of(job: &PoolJob) -> Settings {
        Settings {
            mode: job.mode,
            window: job.window,
            compress: job.compress,
            keep: job.keep,
            keep_minimum: job.keep_minimum.max(1),
            slide_from_cluster: job.slide_from_cluster,
            encrypt: job.encrypt_to.is_some(),
        }
    }

    /// A new full backup of `snap`, as this section writes them.
    pub fn full(&self, snap: SnapName) -> BackupFile {
        BackupFile::full(snap, self.compress).encrypted(self.encrypt)
    }

    /// A new diff from `base` to `snap`, as this section writes them.
    pub fn diff(&self, base: SnapName, snap: SnapName) -> BackupFile {
        BackupFile::diff(base, snap, self.compress).encrypted(self.encrypt)
    }

    /// The settings for a folder that can, or cannot, change files in place
    /// ([`crate::folder::door::Door::in_place`]): one that cannot has each slide's new base
    /// exported from the cluster, as `slide from cluster = yes` does.
    #[must_use]
    pub fn for_folder(self, in_place: bool) -> Settings {
        Settings {
            slide_from_cluster: self.slide_from_cluster || !in_place,
            ..self
        }
    }

    /// The settings that decide when restore points go, as `list` shows them.
    pub fn policy(&self) -> Policy {
        Policy {
            mode: self.mode,
            window: self.window,
            keep: self.keep,
            keep_minimum: self.keep_minimum.max(1),
        }
    }
}

/// What exists for one image when a run starts.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub image: &'a str,
    /// Every snapshot of the image, in any order.
    pub snapshots: &'a [Snapshot],
    /// The entries of the image's backup folder.
    pub entries: &'a [FolderEntry],
    pub record: &'a ImageRecord,
}

/// One thing a run does to an image, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Record the intent in the image record (synced), then create the snapshot; `backs` is the
    /// file that will back it, `temporary` a full-mode snapshot that is removed after its export.
    CreateSnapshot {
        snap: SnapName,
        backs: BackupFile,
        temporary: bool,
    },
    /// Write `file` from the cluster (a full export of its snapshot, or a diff from its base).
    Export {
        file: BackupFile,
        reason: String,
    },
    /// Write the full backup `file` of a new base without reading the cluster: from the old
    /// full backup `from` and the diffs leading from it to `file`'s snapshot, all in the folder
    /// ([`crate::folder::slide`]). `from` is consumed (it becomes `file`, or is replaced by it);
    /// the diffs are removed by later steps. When `from` is the working name of a build an
    /// interrupted run left ([`WORKING_PREFIX`](crate::folder::naming::WORKING_PREFIX)), `diffs` is empty and the build is
    /// finished from its marker. When a file cannot be proven, the executor exports `file` from
    /// the cluster instead and removes `from`.
    SlideBase {
        file: BackupFile,
        from: String,
        diffs: Vec<String>,
        reason: String,
    },
    /// A file the plan relies on is already there, written by an earlier run. It is relied on
    /// only once its checksum and length prove it; otherwise it is written again from its
    /// snapshot.
    Reuse {
        file: BackupFile,
        reason: String,
    },
    RemoveFile {
        name: String,
        reason: String,
    },
    RemoveSnapshot {
        snap: SnapName,
        reason: String,
    },
    /// A pending entry of the image record needs no action on the cluster; it is forgotten
    /// (`completed` names its file when that file was in fact written).
    SettleRecord {
        snap: String,
        completed: Option<BackupFile>,
        reason: String,
    },
    /// A folder entry the tool does not recognise, or will not touch; it is kept.
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

/// The name this run's snapshot would take is taken already: by a snapshot, or by a file of the
/// folder (a full-mode run removes its snapshot but keeps its file). Another run of the image
/// finished within the same second; the executor waits for the next second and plans again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot name {0} is taken already (another backup of this image in the same second)")]
pub struct SnapshotExists(pub String);

/// Plans one run for an image at `now`, given what exists.
pub fn plan_image(
    settings: &Settings,
    found: &Found,
    now: DateTime<Utc>,
) -> Result<Plan, SnapshotExists> {
    let new = SnapName::at(now);
    // A full-mode run removes its snapshot and leaves only its full; a diff of that second is
    // backed by its snapshot, which the check above finds.
    let taken_by_file = |entry: &FolderEntry| {
        BackupFile::parse(found.image, &entry.name)
            .is_some_and(|file| file.is_full() && file.snap == new)
    };
    if found.snapshots.iter().any(|s| s.name == new.as_str())
        || found.entries.iter().any(taken_by_file)
    {
        return Err(SnapshotExists(new.to_string()));
    }
    let mut steps = Vec::new();
    let owned = owned_snapshots(found.snapshots, &mut steps);
    // An interrupted build of a new base is finished first; the rest of the plan sees the folder
    // as it will be then.
    let entries = finish_interrupted_build(found, &mut steps);
    let found = &Found {
        entries: &entries,
        ..*found
    };
    let layout = Layout::from_entries(found.image, found.entries);
    let owned = recover(found, &layout, owned, &mut steps);
    let create_at = steps.len();
    let (backs, temporary) = match settings.mode {
        BackupMode::Full => {
            let file = settings.full(new.clone());
            steps.push(Step::Export {
                file: file.clone(),
                reason: "full backup mode".into(),
            });
            steps.push(Step::RemoveSnapshot {
                snap: new.clone(),
                reason: "temporary snapshot of a full backup".into(),
            });
            // Only after the export: a run that fails before its backup is complete stops
            // there and never prunes.
            for (name, reason) in retention::full_mode_removals(&settings.keep, &layout, &new) {
                steps.push(Step::RemoveFile { name, reason });
            }
            (file, true)
        }
        BackupMode::Incremental => {
            let file = Incremental {
                found,
                settings,
                new: new.clone(),
                owned,
                layout,
            }
            .plan(&mut steps);
            (file, false)
        }
    };
    steps.insert(
        create_at,
        Step::CreateSnapshot {
            snap: new.clone(),
            backs,
            temporary,
        },
    );
    Ok(Plan {
        snapshot: new,
        steps,
    })
}

/// The folder entries as the rest of the plan sees them. When a run died while it built a new
/// base in place (its working file and marker are there, [`crate::folder::slide`]), a step
/// finishes that build first, and the entries show the finished file and its checksum instead
/// of the working file and the marker. A marker without a working file is what a build left
/// that finished, or that died before it changed anything: it is removed. A working file without
/// a marker was not left by this tool (the marker is written before it and removed after it is
/// gone): it is reported like any stranger.
fn finish_interrupted_build(found: &Found, steps: &mut Vec<Step>) -> Vec<FolderEntry> {
    let mut entries = Vec::with_capacity(found.entries.len());
    let mut marker = None;
    let mut building = None;
    for entry in found.entries {
        if entry.is_usable_file() && entry.name == SLIDE_MARKER {
            marker = Some(entry.clone());
            continue;
        }
        if entry.is_usable_file() && building.is_none() {
            if let Some(target) = slide::working_target(found.image, &entry.name) {
                building = Some((entry.clone(), target));
                continue;
            }
        }
        entries.push(entry.clone());
    }
    match (building, marker) {
        (Some((working, file)), Some(_)) => {
            let name = file.file_name(found.image);
            steps.push(Step::SlideBase {
                file,
                from: working.name,
                diffs: Vec::new(),
                reason: "a run was interrupted while it built this file in place; finishing it \
                         from the diffs its marker names"
                    .into(),
            });
            for shown in [name.clone(), checksum_name(&name)] {
                if !entries.iter().any(|e| e.name == shown) {
                    entries.push(FolderEntry::file(&shown, 0));
                }
            }
        }
        (Some((working, _)), None) => entries.push(working),
        (None, Some(marker)) => steps.push(Step::RemoveFile {
            name: marker.name,
            reason: "marker of a build of a new base that finished, or that stopped before it \
                     changed anything"
                .into(),
        }),
        (None, None) => {}
    }
    entries
}

/// Clears what interrupted runs left behind, before anything else happens: temporary files,
/// checksum files whose backup file was never completed, and the snapshots the image record
/// shows a run of ours created without completing their file. Returns the snapshots that remain.
fn recover(
    found: &Found,
    layout: &Layout,
    owned: Vec<SnapName>,
    steps: &mut Vec<Step>,
) -> Vec<SnapName> {
    for finding in &layout.findings {
        let reason = match finding.kind {
            FindingKind::Temporary => "temporary file of an interrupted run",
            FindingKind::OrphanChecksum => "checksum of a backup file that was never completed",
            _ => continue,
        };
        steps.push(Step::RemoveFile {
            name: finding.name.clone(),
            reason: reason.into(),
        });
    }
    let mut removed = BTreeSet::new();
    for pending in &found.record.pending {
        let exists = owned.iter().find(|s| s.as_str() == pending.snapshot);
        let completed = layout
            .files
            .iter()
            .find(|f| f.name == pending.file)
            .map(|f| f.file.clone());
        let started = format!(
            "pid {}, started {}",
            pending.pid,
            crate::output::time(pending.started)
        );
        match (exists, completed) {
            (None, _) => steps.push(Step::SettleRecord {
                snap: pending.snapshot.clone(),
                completed: None,
                reason: format!(
                    "a run ({started}) meant to create it but stopped before it existed"
                ),
            }),
            (Some(snap), completed) if pending.temporary || completed.is_none() => {
                removed.insert(snap.clone());
                steps.push(Step::RemoveSnapshot {
                    snap: snap.clone(),
                    reason: if pending.temporary {
                        format!("temporary snapshot of a full backup by a run ({started}) that did not finish")
                    } else {
                        format!(
                            "created by a run ({started}) that did not finish {}, as the image \
                             record shows",
                            pending.file
                        )
                    },
                });
            }
            (Some(_), completed) => steps.push(Step::SettleRecord {
                snap: pending.snapshot.clone(),
                completed,
                reason: format!("its backup file {} was completed", pending.file),
            }),
        }
    }
    owned.into_iter().filter(|s| !removed.contains(s)).collect()
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

/// Where a window slide moves the base, as indexes into the owned snapshots (one past them
/// means this run's snapshot).
#[derive(Debug, Clone, Copy)]
struct Slide {
    base: usize,
    /// Where the original's window rule alone would put it.
    window_base: usize,
    /// Restore points left after the slide (counted only when keep minimum asks).
    points: usize,
    /// Restore points the window rule alone would leave (likewise).
    window_points: usize,
}

impl Slide {
    /// What chose the base, as removal reasons name it.
    fn policy(&self, settings: &Settings) -> String {
        if self.base < self.window_base {
            format!(
                "window of {}, keep minimum = {}",
                settings.window, settings.keep_minimum
            )
        } else {
            format!("window of {}", settings.window)
        }
    }

    /// Whether keep minimum holds the snapshot at `index` although it is outside the window:
    /// when it moved the base back, everything from the base on stays.
    fn holds(&self, index: usize) -> bool {
        self.base < self.window_base && index >= self.base
    }
}

/// What the original's pruning around a new base does to the folder.
#[derive(Debug, Default)]
struct Prune {
    /// Names to remove, with the reason, in the order to remove them.
    removals: Vec<(String, String)>,
    /// Entries reported as unexpected and left alone.
    strangers: Vec<String>,
}

struct Incremental<'a> {
    found: &'a Found<'a>,
    settings: &'a Settings,
    new: SnapName,
    owned: Vec<SnapName>,
    layout: Layout,
}

impl Incremental<'_> {
    /// Adds the steps after the snapshot is created; returns the file that backs it.
    fn plan(self, steps: &mut Vec<Step>) -> BackupFile {
        let Some(oldest) = self.owned.first() else {
            let file = self.settings.full(self.new.clone());
            steps.push(Step::Export {
                file: file.clone(),
                reason: "first backup of this image: it has no backup snapshot yet".into(),
            });
            return file;
        };
        let now = self.new.taken();
        let window = self.settings.window;
        // Names of the files still there once this run's removals and exports are done.
        let mut kept: BTreeSet<String> = self.layout.files.iter().map(|f| f.name.clone()).collect();
        let mut survivors = self.owned.clone();
        let mut held_note = None;
        if window.is_outside(now, oldest.taken()) {
            let slide = self.slide();
            if self.slide_changes_nothing(&slide) {
                held_note = Some(format!(
                    "{oldest} has left the window of {window}, but keep minimum = {} keeps every \
                     earlier restore point ({} after this run)",
                    self.settings.keep_minimum, slide.points
                ));
            } else {
                let base = self.candidate(slide.base).clone();
                let (base_file, consumed) = self.write_new_base(&slide, oldest, steps);
                let prune = self.prune(&base, &slide.policy(self.settings));
                for name in prune.strangers {
                    steps.push(Step::UnexpectedFile { name });
                }
                for (name, reason) in prune.removals {
                    kept.remove(&name);
                    // The old base a build consumed is gone once the new base is there.
                    if consumed.as_ref() != Some(&name) {
                        steps.push(Step::RemoveFile { name, reason });
                    }
                }
                kept.insert(base_file.file_name(self.found.image));
                survivors = self.survivors(&slide);
                self.remove_snapshots(&slide, steps);
                if base == self.new {
                    return base_file;
                }
            }
        }
        let (file, mut reason) = self.diff_or_full(&survivors, &kept);
        if let Some(note) = held_note {
            reason = format!("{reason}; {note}");
        }
        steps.push(Step::Export {
            file: file.clone(),
            reason,
        });
        file
    }

    /// The snapshot at `index` among the owned ones, or this run's when `index` is past them.
    fn candidate(&self, index: usize) -> &SnapName {
        self.owned.get(index).unwrap_or(&self.new)
    }

    /// Where the window slides to. The original's rule first: the oldest snapshot still inside
    /// the window (this run's, when none is). When that would leave fewer restore points than
    /// `keep minimum`, the base moves back, one older snapshot at a time, to the newest one that
    /// leaves enough; when none does, to the one that leaves the most. So an outage longer than
    /// the window never wipes the history, and with `keep minimum = 1` (this run's own point
    /// always remains) nothing differs from the original.
    fn slide(&self) -> Slide {
        let now = self.new.taken();
        let window = self.settings.window;
        let window_base = self
            .owned
            .iter()
            .position(|s| !window.is_outside(now, s.taken()))
            .unwrap_or(self.owned.len());
        let minimum = self.settings.keep_minimum as usize;
        let at_window = |points| Slide {
            base: window_base,
            window_base,
            points,
            window_points: points,
        };
        if minimum <= 1 {
            return at_window(0);
        }
        let window_points = self.points_left(window_base, window_base);
        if window_points >= minimum {
            return at_window(window_points);
        }
        let mut best = (window_base, window_points);
        for base in (0..window_base).rev() {
            let points = self.points_left(base, window_base);
            if points >= minimum {
                best = (base, points);
                break;
            }
            if points > best.1 {
                best = (base, points);
            }
        }
        Slide {
            base: best.0,
            window_base,
            points: best.1,
            window_points,
        }
    }

    /// The restore points left after a slide to the snapshot at `base`: the points of the files
    /// that remain (the base's full included) whose snapshot remains, and this run's own.
    fn points_left(&self, base: usize, window_base: usize) -> usize {
        if base >= self.owned.len() {
            return 1;
        }
        let base_snap = &self.owned[base];
        let removed: BTreeSet<String> = self
            .prune(base_snap, "")
            .removals
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let mut names: Vec<String> = self
            .layout
            .files
            .iter()
            .map(|f| f.name.clone())
            .filter(|name| !removed.contains(name))
            .collect();
        names.push(
            self.settings
                .full(base_snap.clone())
                .file_name(self.found.image),
        );
        let survivors = self.survivors(&Slide {
            base,
            window_base,
            points: 0,
            window_points: 0,
        });
        let restorable = Layout::build(self.found.image, &names)
            .points()
            .into_iter()
            .filter(|p| survivors.contains(p))
            .count();
        restorable + 1
    }

    /// True when keep minimum holds the base at the oldest snapshot, whose full backup is here
    /// already, and nothing is older: the run is then an ordinary diff, with nothing rewritten.
    fn slide_changes_nothing(&self, slide: &Slide) -> bool {
        let Some(base) = self.owned.first().filter(|_| slide.base == 0) else {
            return false;
        };
        let has_full = self
            .layout
            .files
            .iter()
            .any(|f| f.file.is_full() && f.file.snap == *base);
        has_full && self.prune(base, "").removals.is_empty()
    }

    /// The snapshots that remain after `slide`: those inside the window, and those keep minimum
    /// holds (from the base on, when it moved the base back).
    fn survivors(&self, slide: &Slide) -> Vec<SnapName> {
        self.owned
            .iter()
            .enumerate()
            .filter(|(index, snap)| self.survives(slide, *index, snap))
            .map(|(_, snap)| snap.clone())
            .collect()
    }

    fn survives(&self, slide: &Slide, index: usize, snap: &SnapName) -> bool {
        let now = self.new.taken();
        !self.settings.window.is_outside(now, snap.taken()) || slide.holds(index)
    }

    /// The original's rule: every snapshot outside the window goes, unless keep minimum holds it.
    fn remove_snapshots(&self, slide: &Slide, steps: &mut Vec<Step>) {
        let now = self.new.taken();
        let window = self.settings.window;
        let cutoff = window.cutoff(now);
        let held = slide.base < slide.window_base;
        for (index, snap) in self.owned.iter().enumerate() {
            if self.survives(slide, index, snap) {
                continue;
            }
            let mut reason = format!(
                "taken {}, before the window of {window} that starts {cutoff}",
                snap.taken()
            );
            if held {
                let _ = write!(
                    reason,
                    "; keep minimum = {} keeps the restore points from {} on",
                    self.settings.keep_minimum,
                    self.candidate(slide.base)
                );
            }
            steps.push(Step::RemoveSnapshot {
                snap: snap.clone(),
                reason,
            });
        }
    }

    /// The full backup of the new base: kept when an earlier run wrote it, built from the folder
    /// when the old base and the diffs leading to it are here, exported otherwise. Returns it,
    /// and the old base a build consumes.
    fn write_new_base(
        &self,
        slide: &Slide,
        oldest: &SnapName,
        steps: &mut Vec<Step>,
    ) -> (BackupFile, Option<String>) {
        let base = self.candidate(slide.base);
        let existing = self
            .layout
            .files
            .iter()
            .find(|f| f.file.is_full() && f.file.snap == *base)
            .map(|f| f.file.clone());
        let window = self.settings.window;
        let reason = if slide.base < slide.window_base {
            let minimum = self.settings.keep_minimum;
            let remain = if slide.points >= minimum as usize {
                format!("{} remain", slide.points)
            } else {
                format!("all {} that can remain do", slide.points)
            };
            format!(
                "the oldest backup snapshot {oldest} has left the window of {window}, which alone \
                 would leave {} restore point{}, fewer than keep minimum = {minimum}: {base} \
                 becomes the new base so that {remain}",
                slide.window_points,
                if slide.window_points == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "the oldest backup snapshot {oldest} has left the window of {window}: {base} \
                 becomes the new base"
            )
        };
        match existing {
            Some(file) => {
                steps.push(Step::Reuse {
                    file: file.clone(),
                    reason: format!("{reason}; its full backup was written by an earlier run"),
                });
                (file, None)
            }
            None => {
                let file = self.settings.full(base.clone());
                if let Some((from, diffs)) = self.local_route(base) {
                    steps.push(Step::SlideBase {
                        file: file.clone(),
                        from: from.clone(),
                        diffs,
                        reason: format!(
                            "{reason}; built from the old base and the diffs to it in the folder, \
                             without reading the cluster"
                        ),
                    });
                    return (file, Some(from));
                }
                steps.push(Step::Export {
                    file: file.clone(),
                    reason,
                });
                (file, None)
            }
        }
    }

    /// The full backup and the diffs in the folder that restore `base`, when a slide to it may
    /// build its full backup from them: unless `slide from cluster` asks for the original's
    /// export, when the route has at least one diff, and when every file of it is one the slide
    /// removes anyway (so consuming the old base takes nothing the folder keeps).
    fn local_route(&self, base: &SnapName) -> Option<(String, Vec<String>)> {
        if self.settings.slide_from_cluster {
            return None;
        }
        let route = self.layout.route(base)?;
        let (full, diffs) = route.split_first()?;
        // Encrypted files are read with a private key, which a backup host does not hold; a
        // new base that is to be encrypted is written by an export.
        if diffs.is_empty() || self.settings.encrypt || route.iter().any(|f| f.file.encrypted) {
            return None;
        }
        let removed: BTreeSet<String> = self
            .prune(base, "")
            .removals
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if !route.iter().all(|f| removed.contains(&f.name)) {
            return None;
        }
        Some((
            full.name.clone(),
            diffs.iter().map(|d| d.name.clone()).collect(),
        ))
    }

    /// The original's pruning: every backup file dated before the new base, and the diff that
    /// ends at it, go with their checksum files; entries it does not know are reported and kept.
    /// `policy` names what chose the base, for the reasons.
    fn prune(&self, base: &SnapName, policy: &str) -> Prune {
        // Reported in name order, as one listing, like the original's single pass.
        let mut reports: Vec<(&str, Option<&FolderFile>)> = self
            .layout
            .files
            .iter()
            .map(|f| (f.name.as_str(), Some(f)))
            .chain(
                self.layout
                    .findings
                    .iter()
                    .filter(|f| is_stranger(f.kind))
                    .map(|f| (f.name.as_str(), None)),
            )
            .collect();
        reports.sort_by(|a, b| a.0.cmp(b.0));
        let mut prune = Prune::default();
        for (name, stored) in reports {
            match stored {
                Some(stored) if superseded_by(&stored.file, base) => {
                    prune
                        .removals
                        .push((name.to_string(), removal_reason(&stored.file, base, policy)));
                    if let Some(checksum) = &stored.checksum {
                        prune.removals.push((
                            checksum.clone(),
                            format!("checksum of {name}, which is removed"),
                        ));
                    }
                }
                Some(stored) if !stored.file.snap.is_legacy() => {}
                _ => prune.strangers.push(name.to_string()),
            }
        }
        prune
    }

    /// The export that backs this run's snapshot, and why: a diff from the newest snapshot the
    /// destination can restore (or the one its record says it shipped), else a full backup.
    fn diff_or_full(
        &self,
        survivors: &[SnapName],
        kept: &BTreeSet<String>,
    ) -> (BackupFile, String) {
        let kept_entries: Vec<FolderEntry> = kept.iter().map(|n| FolderEntry::file(n, 0)).collect();
        let restorable: BTreeSet<&SnapName> = Layout::from_entries(self.found.image, &kept_entries)
            .points()
            .into_iter()
            .filter_map(|p| survivors.iter().find(|s| *s == p))
            .collect();
        let local = survivors.iter().rev().find(|s| restorable.contains(s));
        if let Some(shipped) = self.shipped_newest(survivors, local) {
            return (
                self.settings.diff(shipped.clone(), self.new.clone()),
                format!(
                    "changes since {shipped}, the newest snapshot this destination backed up (its \
                     image record says so); the files up to it are not in this destination any \
                     more (moved elsewhere?), so this diff continues a chain kept elsewhere"
                ),
            );
        }
        let newest = survivors.last();
        match local {
            Some(base) => (
                self.settings.diff(base.clone(), self.new.clone()),
                match newest.filter(|n| *n != base) {
                    None => format!("changes since the newest backup snapshot {base}"),
                    Some(newest) => format!(
                        "changes since {base}, the newest snapshot this destination can restore; \
                         the newer backup snapshot {newest} has no chain of files here (another \
                         job's, or left by a run that did not finish) and is not used as a base"
                    ),
                },
            ),
            None => (
                self.settings.full(self.new.clone()),
                format!(
                    "the newest backup snapshot {} has no complete chain of backup files back to \
                     a full backup in this destination, nor has an older one, and the image \
                     record names none: a diff could not be restored, so this run takes a full \
                     backup",
                    newest.map_or("", SnapName::as_str)
                ),
            ),
        }
    }

    /// The snapshot the image record says this destination completed last, when its file is no
    /// longer in the folder (shipped elsewhere) and it is newer than what the folder restores.
    fn shipped_newest<'s>(
        &self,
        survivors: &'s [SnapName],
        local: Option<&SnapName>,
    ) -> Option<&'s SnapName> {
        let newest = self.found.record.newest.as_ref()?;
        let snap = survivors.iter().find(|s| s.as_str() == newest.snapshot)?;
        let file_here = self.found.entries.iter().any(|e| e.name == newest.file);
        let newer = local.is_none_or(|l| l.taken() < snap.taken());
        (!file_here && newer).then_some(snap)
    }
}

/// Entries that a slide reports as unexpected, like the original's pruning did.
fn is_stranger(kind: FindingKind) -> bool {
    matches!(
        kind,
        FindingKind::Unexpected
            | FindingKind::Unparseable
            | FindingKind::SnapshotlessFull
            | FindingKind::NotRegular
    )
}

/// Whether pruning around a new base `base` removes `file` (legacy names are never touched).
fn superseded_by(file: &BackupFile, base: &SnapName) -> bool {
    if file.snap.is_legacy() {
        return false;
    }
    file.snap.taken() < base.taken()
        || (file.snap.taken() == base.taken() && matches!(file.content, Content::DiffFrom(_)))
}

fn removal_reason(file: &BackupFile, base: &SnapName, policy: &str) -> String {
    if file.snap.taken() < base.taken() {
        format!("older than the new base {base} ({policy})")
    } else {
        format!("superseded by the full backup of {base} ({policy})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WindowUnit;
    use crate::test_fixtures::utc_hour as utc;
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
            compress: compress.into(),
            keep: KeepRules::default(),
            keep_minimum: 1,
            slide_from_cluster: false,
            encrypt: false,
        }
    }

    /// The cluster and folder state of one image, advanced by carrying out plans the way the
    /// executor does, the image record included.
    #[derive(Default)]
    struct World {
        snaps: Vec<Snapshot>,
        files: BTreeSet<String>,
        record: ImageRecord,
        next_id: u64,
    }

    impl World {
        fn with(snaps: &[&str], files: &[&str]) -> World {
            let mut w = World::default();
            for s in snaps {
                w.add_snap(s);
            }
            w.files = files.iter().map(std::string::ToString::to_string).collect();
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
            let entries: Vec<FolderEntry> =
                self.files.iter().map(|f| FolderEntry::file(f, 1)).collect();
            let found = Found {
                image: "img",
                snapshots: &self.snaps,
                entries: &entries,
                record: &self.record,
            };
            plan_image(s, &found, now).unwrap()
        }

        fn run(&mut self, s: &Settings, now: DateTime<Utc>) -> Plan {
            let plan = self.plan(s, now);
            for step in &plan.steps {
                match step {
                    Step::CreateSnapshot {
                        snap,
                        backs,
                        temporary,
                    } => {
                        self.record.snapshot_planned(
                            snap.as_str(),
                            &backs.file_name("img"),
                            *temporary,
                            now,
                        );
                        self.add_snap(snap.as_str());
                    }
                    Step::Export { file, .. } => {
                        let name = file.file_name("img");
                        self.files.insert(name.clone());
                        self.record.file_completed(&file.snap, &name);
                    }
                    Step::SlideBase { file, from, .. } => {
                        let name = file.file_name("img");
                        assert!(self.files.remove(from), "{from}");
                        if crate::folder::naming::is_working_name(from) {
                            assert!(self.files.remove(SLIDE_MARKER));
                        }
                        self.files.insert(name.clone());
                        self.record.file_completed(&file.snap, &name);
                    }
                    Step::RemoveFile { name, .. } => assert!(self.files.remove(name), "{name}"),
                    Step::RemoveSnapshot { snap, .. } => {
                        let before = self.snaps.len();
                        self.snaps.retain(|s| s.name != snap.as_str());
                        assert_eq!(before, self.snaps.len() + 1, "{snap}");
                        self.record.snapshot_gone(snap.as_str());
                    }
                    Step::SettleRecord {
                        snap, completed, ..
                    } => match completed {
                        Some(file) => self
                            .record
                            .file_completed(&file.snap, &file.file_name("img")),
                        None => assert!(self.record.snapshot_gone(snap)),
                    },
                    Step::Reuse { .. }
                    | Step::UnexpectedFile { .. }
                    | Step::UnparseableSnapshot { .. } => {}
                }
            }
            assert!(
                self.record.pending.is_empty(),
                "a finished run leaves nothing pending"
            );
            plan
        }

        fn snap_names(&self) -> Vec<&str> {
            self.snaps.iter().map(|s| s.name.as_str()).collect()
        }

        fn file_names(&self) -> Vec<&str> {
            self.files.iter().map(String::as_str).collect()
        }

        /// Notes in the record that a run (pid 4242, day 2) died before completing `file`.
        fn died_before(&mut self, snap: &str, file: &str, temporary: bool) {
            self.record
                .pending
                .push(crate::folder::record::state::Pending {
                    snapshot: snap.into(),
                    file: file.into(),
                    temporary,
                    pid: 4242,
                    started: at(2, 0, 0),
                });
        }
    }

    fn removals(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::RemoveFile { name, .. } => Some(name.clone()),
                Step::RemoveSnapshot { snap, .. } => Some(snap.to_string()),
                _ => None,
            })
            .collect()
    }

    /// The files a plan writes, exported from the cluster or built in the folder.
    fn exports(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Export { file, .. } | Step::SlideBase { file, .. } => {
                    Some(file.file_name("img"))
                }
                _ => None,
            })
            .collect()
    }

    /// The files a plan builds in the folder: (file, from, diffs).
    fn builds(plan: &Plan) -> Vec<(String, String, Vec<String>)> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::SlideBase {
                    file, from, diffs, ..
                } => Some((file.file_name("img"), from.clone(), diffs.clone())),
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
            compress: Compression::Gzip,
            keep: KeepRules::default(),
            keep_minimum: 1,
            slide_from_cluster: false,
            encrypt: false,
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
        // Its full backup is built from day 1's and the diff to day 2, which it consumes.
        let plan = w.run(&s, at(8, 2, 8));
        assert_eq!(
            exports(&plan),
            [
                "img@BACKUPUTC20170802T020002.full",
                "img@BACKUPUTC20170808T020008.diff_from_BACKUPUTC20170807T020007",
            ]
        );
        assert_eq!(
            builds(&plan),
            [(
                "img@BACKUPUTC20170802T020002.full".to_string(),
                "img@BACKUPUTC20170801T020001.full".to_string(),
                vec!["img@BACKUPUTC20170802T020002.diff_from_BACKUPUTC20170801T020001".to_string()]
            )]
        );
        assert_eq!(
            removals(&plan),
            [
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
        assert!(matches!(&plan.steps[1], Step::Reuse { file, .. } if !file.compressed()));
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170802T120000.diff_from_BACKUPUTC20170802T010000.tar.gz"]
        );
    }

    #[test]
    fn leftovers_of_an_interrupted_run_are_cleared_first() {
        let s = incremental(7, WindowUnit::Days, false);
        // Day 2's run died after creating its snapshot and a checksum, mid-export; its record
        // says so.
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 0, 0))],
            &[
                "img@BACKUPUTC20170801T000000.full",
                "img@BACKUPUTC20170801T000000.full.sha256",
                "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000.sha256",
                ".cephbackup-tmp.x1y2z3",
            ],
        );
        w.died_before(
            "BACKUPUTC20170802T000000",
            "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000",
            false,
        );
        let plan = w.run(&s, at(3, 0, 0));
        let recovery: Vec<(&str, &str)> = plan.steps[..3]
            .iter()
            .map(|step| match step {
                Step::RemoveFile { name, reason } => (name.as_str(), reason.as_str()),
                Step::RemoveSnapshot { snap, reason } => (snap.as_str(), reason.as_str()),
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
                    "created by a run (pid 4242, started 2017-08-02 00:00:00 UTC) that did not \
                     finish img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000, as \
                     the image record shows"
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
        // 01:00 has no file but nothing proves it a leftover, so it stays and, being the oldest
        // snapshot inside the window, becomes the new base, exported from the cluster; that
        // makes the stranded diff to 02:00 restorable again, and the chain 01:00 → 02:00 → now
        // is whole.
        assert_eq!(
            exports(&plan),
            [
                "img@BACKUPUTC20170802T010000.full",
                "img@BACKUPUTC20170802T120000.diff_from_BACKUPUTC20170802T020000",
            ]
        );
        assert_eq!(
            removals(&plan),
            [
                "img@BACKUPUTC20170801T000000.full",
                "BACKUPUTC20170801T000000"
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
        let found = Found {
            image: "img",
            snapshots: &snaps,
            entries: &[],
            record: &ImageRecord::default(),
        };
        let err = plan_image(
            &incremental(7, WindowUnit::Days, false),
            &found,
            at(1, 0, 0),
        )
        .unwrap_err();
        assert_eq!(err.0, "BACKUPUTC20170801T000000");
        // A full-mode run of that second left no snapshot, only its full; a full of another
        // second or image takes nothing, nor does a diff (its snapshot would be there).
        for (file, taken) in [
            ("img@BACKUPUTC20170801T000000.full.tar.gz", true),
            (
                "img@BACKUPUTC20170801T000000.diff_from_BACKUPUTC20170731T000000",
                false,
            ),
            ("img@BACKUPUTC20170801T000001.full", false),
            ("other@BACKUPUTC20170801T000000.full", false),
        ] {
            let entries = [FolderEntry::file(file, 1)];
            let found = Found {
                image: "img",
                snapshots: &[],
                entries: &entries,
                record: &ImageRecord::default(),
            };
            let full = Settings {
                mode: BackupMode::Full,
                ..incremental(7, WindowUnit::Days, false)
            };
            let planned = plan_image(&full, &found, at(1, 0, 0));
            assert_eq!(planned.is_err(), taken, "{file}: {planned:?}");
        }
    }

    #[test]
    fn chain_walk() {
        // The planner asks the folder model which snapshots are restorable.
        let s = |d| SnapName::at(at(d, 0, 0));
        let files: Vec<String> = [
            BackupFile::full(s(1), true),
            BackupFile::diff(s(1), s(2), false),
            BackupFile::diff(s(2), s(3), true),
            BackupFile::diff(s(4), s(5), true),
        ]
        .iter()
        .map(|f| f.file_name("img"))
        .collect();
        let layout = Layout::build("img", &files);
        let points = layout.points();
        assert!(points.contains(&&s(1)));
        assert!(points.contains(&&s(3)));
        assert!(!points.contains(&&s(5)));
        assert!(!points.contains(&&s(6)));
    }

    fn settings_daily() -> Settings {
        incremental(7, WindowUnit::Days, false)
    }

    #[test]
    fn a_snapshot_without_a_file_or_a_record_is_never_removed_by_recovery() {
        // Another job's snapshot, files moved away, or the original tool's leftover: no proof.
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 0, 0))],
            &["img@BACKUPUTC20170801T000000.full"],
        );
        let plan = w.run(&settings_daily(), at(3, 0, 0));
        assert_eq!(removals(&plan), Vec::<String>::new());
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170803T000000.diff_from_BACKUPUTC20170801T000000"],
            "the diff starts from the newest point the folder restores"
        );
        let Step::Export { reason, .. } = plan.steps.last().unwrap() else {
            panic!("{plan:?}")
        };
        assert!(
            reason.contains("newer backup snapshot BACKUPUTC20170802T000000 has no chain"),
            "{reason}"
        );
        assert_eq!(w.snaps.len(), 3);
    }

    #[test]
    fn a_stray_diff_does_not_hide_the_route_that_exists() {
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 0, 0))],
            &[
                "img@BACKUPUTC20170801T000000.full",
                "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000",
                // A stray diff to the same snapshot from one no file ends at.
                "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170731T000000",
            ],
        );
        let plan = w.run(&settings_daily(), at(3, 0, 0));
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170803T000000.diff_from_BACKUPUTC20170802T000000"]
        );
    }

    #[test]
    fn files_shipped_offsite_continue_with_a_diff_from_the_recorded_snapshot() {
        let s = settings_daily();
        let mut w = World::default();
        w.run(&s, at(1, 0, 0));
        w.run(&s, at(2, 0, 0));
        // `rsync --remove-source-files` moved every backup file away after the run.
        w.files.clear();
        let plan = w.run(&s, at(3, 0, 0));
        assert_eq!(removals(&plan), Vec::<String>::new());
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170803T000000.diff_from_BACKUPUTC20170802T000000"]
        );
        let Step::Export { reason, .. } = plan.steps.last().unwrap() else {
            panic!("{plan:?}")
        };
        assert!(
            reason.contains("not in this destination any more"),
            "{reason}"
        );
        // Shipped again: the next diff follows on.
        w.files.clear();
        let plan = w.run(&s, at(4, 0, 0));
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170804T000000.diff_from_BACKUPUTC20170803T000000"]
        );
    }

    #[test]
    fn a_recorded_snapshot_whose_file_is_here_but_unrestorable_is_not_a_base() {
        // The record names day 2's diff, still in the folder, but its chain lost the full.
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 0, 0))],
            &["img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000"],
        );
        w.record.newest = Some(crate::folder::record::Completed {
            snapshot: name(at(2, 0, 0)),
            file: "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000".into(),
        });
        let plan = w.run(&settings_daily(), at(3, 0, 0));
        assert_eq!(exports(&plan), ["img@BACKUPUTC20170803T000000.full"]);
    }

    #[test]
    fn pending_records_are_settled_by_what_is_there() {
        struct Case {
            what: &'static str,
            snapshot_exists: bool,
            file_written: bool,
            temporary: bool,
            removed: bool,
        }
        let cases = [
            Case {
                what: "died between record and snapshot: nothing to remove",
                snapshot_exists: false,
                file_written: false,
                temporary: false,
                removed: false,
            },
            Case {
                what: "died mid-export: its snapshot goes",
                snapshot_exists: true,
                file_written: false,
                temporary: false,
                removed: true,
            },
            Case {
                what: "died after the file was complete: the snapshot backs it and stays",
                snapshot_exists: true,
                file_written: true,
                temporary: false,
                removed: false,
            },
            Case {
                what: "a full-mode snapshot goes whatever happened",
                snapshot_exists: true,
                file_written: true,
                temporary: true,
                removed: true,
            },
        ];
        let day2 = name(at(2, 0, 0));
        let file = "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000";
        for case in cases {
            let mut snaps = vec![name(at(1, 0, 0))];
            if case.snapshot_exists {
                snaps.push(day2.clone());
            }
            let snaps: Vec<&str> = snaps.iter().map(String::as_str).collect();
            let mut files = vec!["img@BACKUPUTC20170801T000000.full"];
            if case.file_written {
                files.push(file);
            }
            let mut w = World::with(&snaps, &files);
            w.died_before(&day2, file, case.temporary);
            let plan = w.run(&settings_daily(), at(3, 0, 0));
            assert_eq!(
                removals(&plan).contains(&day2),
                case.removed,
                "{}: {plan:?}",
                case.what
            );
            assert!(w.record.pending.is_empty(), "{}", case.what);
        }
    }

    #[test]
    fn full_mode_removes_only_snapshots_it_has_a_record_of() {
        let s = Settings {
            mode: BackupMode::Full,
            window: Window {
                size: 7,
                unit: WindowUnit::Days,
            },
            compress: Compression::None,
            keep: KeepRules::default(),
            keep_minimum: 1,
            slide_from_cluster: false,
            encrypt: false,
        };
        // The incremental job's snapshots, and a temporary one our own killed run left.
        let mut w = World::with(
            &[&name(at(1, 0, 0)), &name(at(2, 0, 0)), &name(at(2, 5, 0))],
            &[],
        );
        w.died_before(
            &name(at(2, 5, 0)),
            "img@BACKUPUTC20170802T050000.full",
            true,
        );
        let plan = w.run(&s, at(3, 0, 0));
        assert_eq!(
            removals(&plan),
            ["BACKUPUTC20170802T050000", "BACKUPUTC20170803T000000"]
        );
        assert_eq!(
            w.snap_names(),
            ["BACKUPUTC20170801T000000", "BACKUPUTC20170802T000000"]
        );
    }

    #[test]
    fn entries_that_are_not_regular_files_are_never_removed_or_used() {
        use crate::folder::shared::EntryKind;
        let snaps = [
            Snapshot {
                id: 1,
                name: name(at(1, 0, 0)),
            },
            Snapshot {
                id: 2,
                name: name(at(2, 0, 0)),
            },
        ];
        let entry = |name: &str, kind| FolderEntry {
            name: name.into(),
            kind,
            size: 0,
            exact_name: true,
        };
        let entries = [
            FolderEntry::file("img@BACKUPUTC20170801T000000.full", 1),
            entry(".cephbackup-tmp.dir", EntryKind::Directory),
            entry(
                "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000",
                EntryKind::Symlink,
            ),
            entry(
                "img@BACKUPUTC20170802T000000.diff_from_BACKUPUTC20170801T000000.sha256",
                EntryKind::Fifo,
            ),
            FolderEntry {
                name: ".cephbackup-tmp.\u{fffd}".into(),
                kind: EntryKind::File,
                size: 0,
                exact_name: false,
            },
        ];
        let found = Found {
            image: "img",
            snapshots: &snaps,
            entries: &entries,
            record: &ImageRecord::default(),
        };
        let plan = plan_image(&settings_daily(), &found, at(3, 0, 0)).unwrap();
        assert_eq!(removals(&plan), Vec::<String>::new());
        assert_eq!(
            exports(&plan),
            ["img@BACKUPUTC20170803T000000.diff_from_BACKUPUTC20170801T000000"],
            "the symlinked diff is no link of any chain"
        );

        // A full whose checksum file is a FIFO cannot be proven: no base either.
        let mut odd = entries.to_vec();
        odd.push(entry(
            "img@BACKUPUTC20170801T000000.full.sha256",
            EntryKind::Fifo,
        ));
        let found = Found {
            entries: &odd,
            ..found
        };
        let plan = plan_image(&settings_daily(), &found, at(3, 0, 0)).unwrap();
        assert_eq!(removals(&plan), Vec::<String>::new());
        assert_eq!(exports(&plan), ["img@BACKUPUTC20170803T000000.full"]);
    }

    // -----------------------------------------------------------------------------------------
    // Retention: full-mode keep rules and incremental keep minimum.

    fn full_keeping(keep: KeepRules) -> Settings {
        Settings {
            mode: BackupMode::Full,
            window: Window {
                size: 7,
                unit: WindowUnit::Days,
            },
            compress: Compression::None,
            keep,
            keep_minimum: 1,
            slide_from_cluster: false,
            encrypt: false,
        }
    }

    fn keep_last(n: u32) -> KeepRules {
        KeepRules {
            last: Some(n),
            ..KeepRules::default()
        }
    }

    fn with_minimum(mut settings: Settings, minimum: u32) -> Settings {
        settings.keep_minimum = minimum;
        settings
    }

    /// Runs like [`World::run`], then writes the checksum file of every file the run exported,
    /// as the executor does.
    fn run_with_checksums(w: &mut World, s: &Settings, now: DateTime<Utc>) -> Plan {
        let plan = w.run(s, now);
        for name in exports(&plan) {
            w.files.insert(format!("{name}.sha256"));
        }
        plan
    }

    /// The restore points the folder gives, oldest first.
    fn points(w: &World) -> Vec<String> {
        let names: Vec<String> = w.files.iter().cloned().collect();
        Layout::build("img", &names)
            .points()
            .into_iter()
            .map(std::string::ToString::to_string)
            .collect()
    }

    fn reason_of<'p>(plan: &'p Plan, removed: &str) -> &'p str {
        plan.steps
            .iter()
            .find_map(|step| match step {
                Step::RemoveFile { name, reason } if name == removed => Some(reason.as_str()),
                Step::RemoveSnapshot { snap, reason } if snap.as_str() == removed => {
                    Some(reason.as_str())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{removed} is not removed: {plan:?}"))
    }

    #[test]
    fn full_mode_keep_last_keeps_the_newest_backups_and_their_checksums() {
        let s = full_keeping(keep_last(2));
        let mut w = World::default();
        for day in 1..=2 {
            let plan = run_with_checksums(&mut w, &s, at(day, 2, 0));
            assert_eq!(
                removals(&plan),
                [name(at(day, 2, 0))],
                "only the temporary snapshot"
            );
        }
        for day in 3..=4 {
            let plan = run_with_checksums(&mut w, &s, at(day, 2, 0));
            let gone = format!("img@{}.full", name(at(day - 2, 2, 0)));
            assert_eq!(
                removals(&plan),
                [name(at(day, 2, 0)), gone.clone(), format!("{gone}.sha256")]
            );
            assert_eq!(
                reason_of(&plan, &gone),
                format!(
                    "full-mode retention (keep last = 2): no keep rule holds this backup of \
                     2017-08-0{} 02:00:00 UTC",
                    day - 2
                )
            );
        }
        assert_eq!(
            w.file_names(),
            [
                "img@BACKUPUTC20170803T020000.full",
                "img@BACKUPUTC20170803T020000.full.sha256",
                "img@BACKUPUTC20170804T020000.full",
                "img@BACKUPUTC20170804T020000.full.sha256",
            ]
        );
        assert_eq!(w.snaps.len(), 0);
    }

    #[test]
    fn full_mode_without_keep_rules_never_prunes() {
        let s = full_keeping(KeepRules::default());
        let mut w = World::default();
        for day in 1..=9 {
            let plan = run_with_checksums(&mut w, &s, at(day, 2, 0));
            assert_eq!(removals(&plan), [name(at(day, 2, 0))]);
        }
        assert_eq!(w.files.len(), 18);
    }

    #[test]
    fn full_mode_prunes_only_after_the_export_so_a_failed_run_never_prunes() {
        let mut w = World::with(
            &[],
            &[
                ".cephbackup-tmp.abc",
                "img@BACKUPUTC20170801T020000.full",
                "img@BACKUPUTC20170801T020000.full.sha256",
                "img@BACKUPUTC20170802T020000.full",
            ],
        );
        let plan = w.run(&full_keeping(keep_last(1)), at(3, 2, 0));
        let export = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::Export { .. }))
            .unwrap();
        let pruned: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Step::RemoveFile { name, .. } if name.starts_with("img@")))
            .map(|(index, _)| index)
            .collect();
        assert_eq!(pruned.len(), 3, "{plan:?}");
        // The executor stops at the first step that fails: an export that fails never reaches
        // the removals behind it.
        assert!(pruned.iter().all(|&index| index > export), "{plan:?}");
        // The leftover of an interrupted run is cleared first, as always.
        assert!(
            matches!(&plan.steps[0], Step::RemoveFile { name, .. } if name == ".cephbackup-tmp.abc")
        );
        assert_eq!(w.file_names(), ["img@BACKUPUTC20170803T020000.full"]);
    }

    #[test]
    fn full_mode_keep_rules_leave_diffs_bases_legacy_and_strangers_alone() {
        let files = [
            "img@BACKUPUTC20170801T020000.full.tar.gz",
            "img@BACKUPUTC20170801T020000.full.tar.gz.sha256",
            // An incremental chain in the same folder: its full is a base, its diff no candidate.
            "img@BACKUPUTC20170802T020000.full",
            "img@BACKUPUTC20170803T020000.diff_from_BACKUPUTC20170802T020000",
            "img@UTC20170101T000000.full",
            "img_UTC20170101T000000.full",
            "img@BACKUPfoo.full",
            "notes.txt",
        ];
        let mut w = World::with(&[], &files);
        let plan = w.run(&full_keeping(keep_last(1)), at(5, 2, 0));
        assert_eq!(
            removals(&plan),
            [
                "BACKUPUTC20170805T020000",
                "img@BACKUPUTC20170801T020000.full.tar.gz",
                "img@BACKUPUTC20170801T020000.full.tar.gz.sha256",
            ]
        );
        assert!(!plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::UnexpectedFile { .. })));
        assert_eq!(w.files.len(), files.len() - 2 + 1);
    }

    #[test]
    fn full_mode_daily_weekly_monthly_across_month_year_and_iso_week_boundaries() {
        let s = full_keeping(KeepRules {
            last: None,
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(3),
        });
        let mut w = World::default();
        let mut day = utc(2025, 11, 15, 2);
        while day <= utc(2026, 1, 20, 2) {
            run_with_checksums(&mut w, &s, day);
            day += chrono::TimeDelta::days(1);
        }
        let kept: Vec<&str> = w
            .file_names()
            .into_iter()
            .filter(|n| !n.ends_with(".sha256"))
            .map(|n| &n["img@BACKUPUTC".len().."img@BACKUPUTC".len() + 8])
            .collect();
        assert_eq!(
            kept,
            [
                "20251130", // monthly: November
                "20251231", // monthly: December
                "20260104", // weekly: 2026-W01 runs from Monday 29 December to Sunday 4 January
                "20260111", // weekly: 2026-W02
                "20260114", // daily: the last 7 days; 18 January also ends 2026-W03
                "20260115", "20260116", "20260117", "20260118", "20260119",
                "20260120", // daily, weekly 2026-W04, monthly January
            ]
        );
        assert_eq!(w.files.len(), 22, "every kept file keeps its checksum");
    }

    #[test]
    fn full_mode_keep_daily_counts_days_with_a_backup_so_an_outage_removes_nothing_extra() {
        let s = full_keeping(KeepRules {
            daily: Some(3),
            ..KeepRules::default()
        });
        let mut w = World::default();
        for day in [1, 2, 3] {
            run_with_checksums(&mut w, &s, at(day, 2, 0));
        }
        // Ten days without a run: the first run back keeps the two newest days before it.
        let plan = run_with_checksums(&mut w, &s, at(14, 2, 0));
        assert_eq!(
            removals(&plan),
            [
                "BACKUPUTC20170814T020000",
                "img@BACKUPUTC20170801T020000.full",
                "img@BACKUPUTC20170801T020000.full.sha256"
            ]
        );
        // Two runs on one day: only the newer of them counts for that day.
        let plan = run_with_checksums(&mut w, &s, at(14, 3, 0));
        assert_eq!(
            removals(&plan),
            [
                "BACKUPUTC20170814T030000",
                "img@BACKUPUTC20170814T020000.full",
                "img@BACKUPUTC20170814T020000.full.sha256"
            ]
        );
    }

    /// Daily runs at 02:00 from `first` to `last` (inclusive, days of August 2017).
    fn daily(w: &mut World, s: &Settings, days: std::ops::RangeInclusive<u32>) {
        for day in days {
            w.run(s, at(day, 2, 0));
        }
    }

    #[test]
    fn keep_minimum_changes_nothing_while_the_window_holds_enough_points() {
        let original = incremental(7, WindowUnit::Days, false);
        let guarded = with_minimum(original, 7);
        let (mut a, mut b) = (World::default(), World::default());
        for day in 1..=31 {
            let now = at(day, 2, day % 3);
            assert_eq!(a.run(&original, now), b.run(&guarded, now), "day {day}");
        }
    }

    #[test]
    fn an_outage_longer_than_the_window_keeps_keep_minimum_points() {
        struct Case {
            minimum: u32,
            /// Restore points after the first run back, oldest first (days of August).
            points: Vec<u32>,
            /// The full backups written by that run (days).
            fulls: Vec<u32>,
        }
        let cases = [
            // The original: the first run back keeps only its own full backup.
            Case {
                minimum: 1,
                points: vec![20],
                fulls: vec![20],
            },
            Case {
                minimum: 2,
                points: vec![10, 20],
                fulls: vec![10],
            },
            Case {
                minimum: 3,
                points: vec![9, 10, 20],
                fulls: vec![9],
            },
            Case {
                minimum: 7,
                points: vec![5, 6, 7, 8, 9, 10, 20],
                fulls: vec![5],
            },
            // More than exist: nothing goes and nothing is rewritten; the run is a plain diff.
            Case {
                minimum: 30,
                points: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20],
                fulls: vec![],
            },
        ];
        for case in cases {
            let s = with_minimum(incremental(7, WindowUnit::Days, false), case.minimum);
            let mut w = World::default();
            // Daily runs until the 10th, then the cluster is down until the 20th (10 days,
            // longer than the window of 7 days).
            daily(&mut w, &s, 1..=10);
            let plan = w.run(&s, at(20, 2, 0));
            let expected: Vec<String> = case.points.iter().map(|&d| name(at(d, 2, 0))).collect();
            assert_eq!(points(&w), expected, "keep minimum = {}", case.minimum);
            let fulls: Vec<String> = exports(&plan)
                .into_iter()
                .filter(|f| f.ends_with(".full"))
                .collect();
            let expected: Vec<String> = case
                .fulls
                .iter()
                .map(|&d| format!("img@{}.full", name(at(d, 2, 0))))
                .collect();
            assert_eq!(fulls, expected, "keep minimum = {}", case.minimum);
            // The snapshots of every point remain, and nothing older.
            let snaps: Vec<String> = w
                .snap_names()
                .iter()
                .map(std::string::ToString::to_string)
                .collect();
            assert_eq!(snaps, points(&w), "keep minimum = {}", case.minimum);
        }
    }

    #[test]
    fn after_an_outage_keep_minimum_slides_one_point_per_run_until_the_window_holds_enough() {
        let s = with_minimum(incremental(2, WindowUnit::Days, false), 3);
        let mut w = World::default();
        daily(&mut w, &s, 1..=5);
        assert_eq!(
            points(&w).len(),
            3,
            "the window of 2 days holds 3 daily points"
        );
        // Down from the 6th to the 11th.
        let plan = w.run(&s, at(12, 2, 0));
        assert_eq!(
            points(&w),
            [name(at(4, 2, 0)), name(at(5, 2, 0)), name(at(12, 2, 0))]
        );
        let base_reason = match &plan.steps[1] {
            Step::SlideBase { reason, .. } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            base_reason,
            "the oldest backup snapshot BACKUPUTC20170803T020000 has left the window of 2 days, \
             which alone would leave 1 restore point, fewer than keep minimum = 3: \
             BACKUPUTC20170804T020000 becomes the new base so that 3 remain; built from the old \
             base and the diffs to it in the folder, without reading the cluster"
        );
        assert_eq!(
            reason_of(&plan, "BACKUPUTC20170803T020000"),
            "taken 2017-08-03 02:00:00 UTC, before the window of 2 days that starts \
             2017-08-10 02:00:00 UTC; keep minimum = 3 keeps the restore points from \
             BACKUPUTC20170804T020000 on"
        );
        assert_eq!(
            reason_of(
                &plan,
                "img@BACKUPUTC20170804T020000.diff_from_BACKUPUTC20170803T020000"
            ),
            "superseded by the full backup of BACKUPUTC20170804T020000 (window of 2 days, keep \
             minimum = 3)"
        );
        // Each later run slides by one point, and never below three.
        let plan = w.run(&s, at(13, 2, 0));
        assert_eq!(
            points(&w),
            [name(at(5, 2, 0)), name(at(12, 2, 0)), name(at(13, 2, 0))]
        );
        assert_eq!(
            exports(&plan),
            [
                "img@BACKUPUTC20170805T020000.full",
                "img@BACKUPUTC20170813T020000.diff_from_BACKUPUTC20170812T020000",
            ]
        );
        w.run(&s, at(14, 2, 0));
        assert_eq!(
            points(&w),
            [name(at(12, 2, 0)), name(at(13, 2, 0)), name(at(14, 2, 0))]
        );
        // Back inside the window: the original's rule alone, as before the outage.
        let plan = w.run(&s, at(15, 2, 0));
        assert!(!reason_of(&plan, "BACKUPUTC20170812T020000").contains("keep minimum"));
        assert_eq!(
            reason_of(
                &plan,
                "img@BACKUPUTC20170813T020000.diff_from_BACKUPUTC20170812T020000"
            ),
            "superseded by the full backup of BACKUPUTC20170813T020000 (window of 2 days)"
        );
        assert_eq!(points(&w).len(), 3);
    }

    #[test]
    fn keep_minimum_holding_every_point_only_notes_it_in_the_diff() {
        let s = with_minimum(incremental(1, WindowUnit::Days, false), 5);
        let mut w = World::default();
        daily(&mut w, &s, 1..=2);
        let plan = w.run(&s, at(9, 2, 0));
        assert_eq!(removals(&plan), Vec::<String>::new());
        assert_eq!(
            plan.steps[1],
            Step::Export {
                file: BackupFile::diff(SnapName::at(at(2, 2, 0)), SnapName::at(at(9, 2, 0)), false),
                reason: "changes since the newest backup snapshot BACKUPUTC20170802T020000; \
                         BACKUPUTC20170801T020000 has left the window of 1 day, but keep minimum \
                         = 5 keeps every earlier restore point (3 after this run)"
                    .into()
            }
        );
    }

    #[test]
    fn keep_minimum_across_a_year_boundary_reuses_a_proven_base() {
        let s = with_minimum(incremental(3, WindowUnit::Days, false), 2);
        let mut w = World::default();
        for day in [28, 29, 30, 31] {
            w.run(&s, utc(2025, 12, day, 2));
        }
        // An interrupted slide had already written the full of 31 December.
        w.files.insert("img@BACKUPUTC20251231T020000.full".into());
        let plan = w.run(&s, utc(2026, 1, 9, 2));
        assert!(
            matches!(&plan.steps[1], Step::Reuse { file, reason }
                if file.snap.as_str() == "BACKUPUTC20251231T020000"
                    && reason.contains("fewer than keep minimum = 2")),
            "{plan:?}"
        );
        assert_eq!(
            w.file_names(),
            [
                "img@BACKUPUTC20251231T020000.full",
                "img@BACKUPUTC20260109T020000.diff_from_BACKUPUTC20251231T020000",
            ]
        );
    }

    #[test]
    fn keep_minimum_with_a_calendar_month_window() {
        let s = with_minimum(incremental(1, WindowUnit::Months, false), 2);
        let mut w = World::default();
        w.run(&s, utc(2026, 1, 31, 2));
        w.run(&s, utc(2026, 2, 28, 2));
        // 31 January is inside one month of 28 February until February has passed.
        let plan = w.run(&s, utc(2026, 2, 28, 23));
        assert_eq!(removals(&plan), Vec::<String>::new());
        // In April both are outside; keep minimum = 2 keeps February's as the new base.
        let plan = w.run(&s, utc(2026, 4, 2, 2));
        assert_eq!(
            exports(&plan)[0],
            "img@BACKUPUTC20260228T230000.full",
            "{plan:?}"
        );
        assert_eq!(
            points(&w),
            ["BACKUPUTC20260228T230000", "BACKUPUTC20260402T020000"]
        );
    }
}

#[cfg(test)]
mod slide_tests {
    use super::*;
    use crate::config::WindowUnit;
    use chrono::TimeZone;

    const R: &str = "BACKUPUTC20170801T020000";
    const S1: &str = "BACKUPUTC20170802T020000";
    const S: &str = "BACKUPUTC20170803T020000";
    const T: &str = "BACKUPUTC20170803T120000";

    fn settings(compress: bool, from_cluster: bool, minimum: u32) -> Settings {
        Settings {
            mode: BackupMode::Incremental,
            window: Window {
                size: 1,
                unit: WindowUnit::Days,
            },
            compress: compress.into(),
            keep: KeepRules::default(),
            keep_minimum: minimum,
            slide_from_cluster: from_cluster,
            encrypt: false,
        }
    }

    fn plan_of(s: &Settings, snaps: &[&str], files: &[String]) -> Plan {
        let snapshots: Vec<Snapshot> = snaps
            .iter()
            .enumerate()
            .map(|(i, name)| Snapshot {
                id: i as u64 + 1,
                name: (*name).to_string(),
            })
            .collect();
        let entries: Vec<FolderEntry> = files.iter().map(|f| FolderEntry::file(f, 1)).collect();
        let found = Found {
            image: "vm",
            snapshots: &snapshots,
            entries: &entries,
            record: &ImageRecord::default(),
        };
        // The 4th at 01:00: R and S1 are more than a day old, S and T inside the window.
        plan_image(
            s,
            &found,
            Utc.with_ymd_and_hms(2017, 8, 4, 1, 0, 0).unwrap(),
        )
        .unwrap()
    }

    fn full(snap: &str, gz: bool) -> String {
        format!("vm@{snap}.full{}", if gz { ".tar.gz" } else { "" })
    }

    fn diff(base: &str, snap: &str, gz: bool) -> String {
        format!(
            "vm@{snap}.diff_from_{base}{}",
            if gz { ".tar.gz" } else { "" }
        )
    }

    fn with_checksums(names: &[String]) -> Vec<String> {
        names
            .iter()
            .flat_map(|n| [n.clone(), format!("{n}.sha256")])
            .collect()
    }

    /// What the plan does about the new base, in one line.
    fn new_base(plan: &Plan) -> String {
        plan.steps
            .iter()
            .find_map(|step| match step {
                Step::SlideBase {
                    file, from, diffs, ..
                } => Some(format!(
                    "build {} from {from} + {}",
                    file.file_name("vm"),
                    diffs.join(" + ")
                )),
                Step::Export { file, .. } if file.is_full() => {
                    Some(format!("export {}", file.file_name("vm")))
                }
                Step::Reuse { file, .. } => Some(format!("reuse {}", file.file_name("vm"))),
                _ => None,
            })
            .unwrap_or_else(|| "nothing".into())
    }

    fn removed_files(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .filter_map(|step| match step {
                Step::RemoveFile { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// A slide of the window: the settings, the snapshots and files before it, and what the
    /// plan must do about the new base and which files it removes.
    struct SlideCase {
        what: &'static str,
        settings: Settings,
        snaps: Vec<&'static str>,
        files: Vec<String>,
        new_base: String,
        removed: Vec<String>,
    }

    fn assert_slides(cases: impl IntoIterator<Item = SlideCase>) {
        for case in cases {
            let plan = plan_of(&case.settings, &case.snaps, &case.files);
            assert_eq!(new_base(&plan), case.new_base, "{}", case.what);
            assert_eq!(removed_files(&plan), case.removed, "{}", case.what);
        }
    }

    #[test]
    fn a_folder_that_cannot_change_files_in_place_has_the_new_base_exported() {
        let files = with_checksums(&[full(S1, false), diff(S1, S, false), diff(S, T, false)]);
        let local = settings(false, false, 1).for_folder(true);
        let built = format!(
            "build {} from {} + {}",
            full(S, false),
            full(S1, false),
            diff(S1, S, false)
        );
        assert_eq!(new_base(&plan_of(&local, &[S1, S, T], &files)), built);
        let elsewhere = settings(false, false, 1).for_folder(false);
        assert_eq!(
            new_base(&plan_of(&elsewhere, &[S1, S, T], &files)),
            format!("export {}", full(S, false))
        );
    }

    #[test]
    fn a_slide_builds_the_new_base_from_the_folder_when_it_can() {
        let plain = settings(false, false, 1);
        assert_slides([
            SlideCase {
                what: "steady state: the old base and the diff to S; the old base is consumed",
                settings: plain,
                snaps: vec![S1, S, T],
                files: with_checksums(&[full(S1, false), diff(S1, S, false), diff(S, T, false)]),
                new_base: format!(
                    "build {} from {} + {}",
                    full(S, false),
                    full(S1, false),
                    diff(S1, S, false)
                ),
                removed: vec![
                    format!("{}.sha256", full(S1, false)),
                    diff(S1, S, false),
                    format!("{}.sha256", diff(S1, S, false)),
                ],
            },
            SlideCase {
                what: "two days out of the window: two diffs lead to the new base",
                settings: plain,
                snaps: vec![R, S1, S, T],
                files: vec![
                    full(R, false),
                    diff(R, S1, false),
                    diff(S1, S, false),
                    diff(S, T, false),
                ],
                new_base: format!(
                    "build {} from {} + {} + {}",
                    full(S, false),
                    full(R, false),
                    diff(R, S1, false),
                    diff(S1, S, false)
                ),
                removed: vec![diff(R, S1, false), diff(S1, S, false)],
            },
            SlideCase {
                what: "compressed chain: the new base is an archive too",
                settings: settings(true, false, 1),
                snaps: vec![S1, S, T],
                files: vec![full(S1, true), diff(S1, S, true), diff(S, T, true)],
                new_base: format!(
                    "build {} from {} + {}",
                    full(S, true),
                    full(S1, true),
                    diff(S1, S, true)
                ),
                removed: vec![diff(S1, S, true)],
            },
            SlideCase {
                what: "compress switched on: built from the plain chain into an archive",
                settings: settings(true, false, 1),
                snaps: vec![S1, S, T],
                files: vec![full(S1, false), diff(S1, S, false)],
                new_base: format!(
                    "build {} from {} + {}",
                    full(S, true),
                    full(S1, false),
                    diff(S1, S, false)
                ),
                removed: vec![diff(S1, S, false)],
            },
        ]);
    }

    #[test]
    fn a_slide_exports_or_reuses_the_new_base_when_the_folder_cannot_build_it() {
        let plain = settings(false, false, 1);
        assert_slides([
            SlideCase {
                what: "slide from cluster = yes: the original's export, and the old base removed",
                settings: settings(false, true, 1),
                snaps: vec![S1, S, T],
                files: with_checksums(&[full(S1, false), diff(S1, S, false), diff(S, T, false)]),
                new_base: format!("export {}", full(S, false)),
                removed: vec![
                    full(S1, false),
                    format!("{}.sha256", full(S1, false)),
                    diff(S1, S, false),
                    format!("{}.sha256", diff(S1, S, false)),
                ],
            },
            SlideCase {
                what: "no file ends at S: nothing to build from",
                settings: plain,
                snaps: vec![S1, S, T],
                files: vec![full(S1, false), diff(S, T, false)],
                new_base: format!("export {}", full(S, false)),
                removed: vec![full(S1, false)],
            },
            SlideCase {
                what: "S has a full already: reused, nothing built",
                settings: plain,
                snaps: vec![S1, S, T],
                files: vec![full(S1, false), diff(S1, S, false), full(S, false)],
                new_base: format!("reuse {}", full(S, false)),
                removed: vec![full(S1, false), diff(S1, S, false)],
            },
            SlideCase {
                what: "a route through a legacy full is never consumed: the original's export",
                settings: plain,
                snaps: vec![S1, S, T],
                files: vec![
                    "vm@UTC20170801T020000.full".into(),
                    diff("UTC20170801T020000", S, false),
                ],
                new_base: format!("export {}", full(S, false)),
                removed: vec![diff("UTC20170801T020000", S, false)],
            },
            SlideCase {
                what: "the window moves to this run's own snapshot: exported, nothing to build",
                settings: Settings {
                    window: Window {
                        size: 0,
                        unit: WindowUnit::Days,
                    },
                    ..plain
                },
                snaps: vec![S1, S],
                files: vec![full(S1, false), diff(S1, S, false)],
                new_base: "export vm@BACKUPUTC20170804T010000.full".into(),
                removed: vec![full(S1, false), diff(S1, S, false)],
            },
        ]);
    }

    #[test]
    fn the_build_comes_before_every_removal_of_its_files() {
        let files = with_checksums(&[full(S1, false), diff(S1, S, false)]);
        let plan = plan_of(&settings(false, false, 1), &[S1, S, T], &files);
        let build = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::SlideBase { .. }))
            .unwrap();
        for (index, step) in plan.steps.iter().enumerate() {
            if let Step::RemoveFile { .. } | Step::RemoveSnapshot { .. } = step {
                assert!(index > build, "{plan:?}");
            }
        }
    }

    #[test]
    fn an_interrupted_build_is_finished_first_and_the_plan_sees_its_result() {
        let working = crate::folder::naming::working_name(&full(S, false));
        struct Case {
            what: &'static str,
            extra: Vec<String>,
            first: Step,
            new_base: String,
        }
        let cases = [
            Case {
                what: "working file and marker: finished, then the slide reuses the result",
                extra: vec![working.clone(), SLIDE_MARKER.into()],
                first: Step::SlideBase {
                    file: BackupFile::full(SnapName::parse(S).unwrap(), false),
                    from: working.clone(),
                    diffs: vec![],
                    reason: "a run was interrupted while it built this file in place; finishing \
                             it from the diffs its marker names"
                        .into(),
                },
                new_base: format!("build {} from {working} + ", full(S, false)),
            },
            Case {
                what: "a marker alone (the build finished, or never changed anything): removed",
                extra: vec![SLIDE_MARKER.into(), full(S1, false)],
                first: Step::RemoveFile {
                    name: SLIDE_MARKER.into(),
                    reason: "marker of a build of a new base that finished, or that stopped \
                             before it changed anything"
                        .into(),
                },
                new_base: format!(
                    "build {} from {} + {}",
                    full(S, false),
                    full(S1, false),
                    diff(S1, S, false)
                ),
            },
        ];
        for case in cases {
            let mut files = vec![diff(S1, S, false), diff(S, T, false)];
            files.extend(case.extra);
            let plan = plan_of(&settings(false, false, 1), &[S1, S, T], &files);
            assert_eq!(plan.steps[0], case.first, "{}", case.what);
            assert_eq!(new_base(&plan), case.new_base, "{}", case.what);
        }
        // After the finish, the folder holds S.full: the slide relies on it (proving it first)
        // and removes the diff it superseded.
        let files = vec![
            working.clone(),
            SLIDE_MARKER.into(),
            diff(S1, S, false),
            diff(S, T, false),
        ];
        let plan = plan_of(&settings(false, false, 1), &[S1, S, T], &files);
        assert!(
            plan.steps
                .iter()
                .any(|s| matches!(s, Step::Reuse { file, .. } if file.snap.as_str() == S)),
            "{plan:?}"
        );
        assert_eq!(removed_files(&plan), [diff(S1, S, false)]);
        // A working file without a marker is not this tool's: left alone and reported.
        let files = vec![working.clone(), full(S1, false), diff(S1, S, false)];
        let plan = plan_of(&settings(false, false, 1), &[S1, S, T], &files);
        assert!(plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::UnexpectedFile { name } if *name == working)));
        assert!(!removed_files(&plan).contains(&working));
    }
}

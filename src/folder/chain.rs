//! An image's backup folder read as chains: which files restore which points in time, and what in
//! the folder does not fit.
//!
//! A restore point is a snapshot that some file ends at, provided that file is a full backup or a
//! diff whose base is itself a restore point. Each point is reached by the route with the fewest
//! files that no checksum file proves (`.sha256`), and among those by the shortest: a route of
//! proven files always beats one through an unproven file (a `.full` left without its checksum,
//! even an empty one, never hides a proven route), while in a folder of the original tool's files
//! (none proven) a snapshot that has its own full backup never goes through diffs. The points
//! that start from the same full form one chain. Diffs that lead nowhere (their base has no file:
//! a missing link) are reported, as are leftovers, duplicates and names that do not parse.
//!
//! [`Layout::build`] is pure (folder names in, model out), so every arrangement of files can be
//! tested with tables; [`scan`](crate::folder::read::scan) only adds what the disk says (the names and their sizes).
//! List, restore and verify all read folders through this one model, with the naming rules of
//! [`crate::folder::naming`] that the backup itself uses.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::folder::format::diffstream::DiffHeader;
use crate::folder::naming::{self, BackupFile, Entry, SnapName};
use crate::folder::shared::EntryKind;

/// One entry of an image folder, as the folder says it is (links are not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderEntry {
    /// The name; when the real name is not UTF-8, a lossy rendering of it.
    pub name: String,
    pub kind: EntryKind,
    /// Bytes, for regular files.
    pub size: u64,
    /// False when `name` is only a rendering of a name that is not UTF-8: such an entry is
    /// reported, never acted on by name.
    pub exact_name: bool,
}

impl FolderEntry {
    /// A regular file called `name` (for tests and pure callers).
    pub fn file(name: &str, size: u64) -> FolderEntry {
        FolderEntry {
            name: name.to_string(),
            kind: EntryKind::File,
            size,
            exact_name: true,
        }
    }

    /// True when the tool may act on this entry by its name (read it, or remove it).
    pub fn is_usable_file(&self) -> bool {
        self.kind == EntryKind::File && self.exact_name
    }
}

/// One backup file found in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderFile {
    /// The name on disk.
    pub name: String,
    pub file: BackupFile,
    /// The name of its `.sha256` file, when there is one.
    pub checksum: Option<String>,
    /// Bytes on disk (0 until [`scan`](crate::folder::read::scan) fills it in).
    pub size: u64,
}

impl FolderFile {
    /// Checks that a diff stream's snapshot names are the ones its file name promises: a stream
    /// from another image or chain, or a renamed file, must not be applied.
    pub fn check_diff_names(&self, header: &DiffHeader) -> Result<(), String> {
        let expected_from = self.file.base().map(SnapName::as_str);
        let expected_to = Some(self.file.snap.as_str());
        if header.from_snap.as_deref() == expected_from && header.to_snap.as_deref() == expected_to
        {
            return Ok(());
        }
        let show = |name: Option<&str>, none: &str| match name {
            Some(name) => name.to_string(),
            None => none.to_string(),
        };
        Err(format!(
            "the diff stream goes from {} to {}, but the file name says from {} to {}",
            show(header.from_snap.as_deref(), "the empty image"),
            show(header.to_snap.as_deref(), "the image head"),
            show(expected_from, "the empty image"),
            show(expected_to, "the image head"),
        ))
    }
}

/// A full backup and the diffs whose points start from it, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Index of the full in [`Layout::files`].
    pub full: usize,
    pub diffs: Vec<usize>,
}

impl Chain {
    /// Indexes of the full then the diffs, which is also the order of the chain's points.
    pub fn files(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.full).chain(self.diffs.iter().copied())
    }
}

/// Something in the folder that is not simply part of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file name it concerns.
    pub name: String,
    pub kind: FindingKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A diff whose base snapshot no file ends at.
    MissingLink,
    /// A diff whose base has a file that is not restorable itself.
    AfterMissingLink,
    /// A diff whose base is not older than its own snapshot.
    Backwards,
    /// A diff not needed because its snapshot is reached more directly (usually a full backup
    /// written by a window slide that was interrupted before pruning), or a full without a
    /// checksum file whose snapshot a proven route reaches.
    Superseded,
    /// The same backup stored twice (raw and compressed).
    Duplicate,
    /// A temporary file of an interrupted run.
    Temporary,
    /// Named like a backup file of this image, but the name does not parse.
    Unparseable,
    /// A full backup from before the original took snapshots (`<image>_UTC….full`).
    SnapshotlessFull,
    /// A `.sha256` file whose backup file is missing.
    OrphanChecksum,
    /// A symlink, FIFO, device or folder where a backup file, checksum or temporary file of
    /// the tool would be: never followed, read or removed.
    NotRegular,
    /// Anything else.
    Unexpected,
}

impl FindingKind {
    /// True when the finding means backups exist that cannot be restored.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            FindingKind::MissingLink
                | FindingKind::AfterMissingLink
                | FindingKind::Backwards
                | FindingKind::NotRegular
        )
    }
}

/// How a restore point is reached: the file that ends at it, and where that file's route starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reach {
    file: usize,
    /// Files of the route without a checksum file.
    unproven: usize,
    links: usize,
    full: usize,
}

impl Reach {
    /// Routes compare by this, smallest best: proof first, then length.
    fn cost(&self) -> (usize, usize) {
        (self.unproven, self.links)
    }
}

/// Everything known about one image's backup folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub image: String,
    /// Backup files ordered by the time of their snapshot, then by name.
    pub files: Vec<FolderFile>,
    /// Ordered by the time of their full backup.
    pub chains: Vec<Chain>,
    pub findings: Vec<Finding>,
    reach: HashMap<SnapName, Reach>,
    /// What the model was built from, so it can be built again without some files.
    entries: Vec<FolderEntry>,
}

/// The entries of a folder sorted by what they are, on the way to a [`Layout`].
#[derive(Default)]
struct Sorting {
    files: Vec<FolderFile>,
    checksums: Vec<String>,
    findings: Vec<Finding>,
    /// Checksum names held by something other than a regular file.
    unreadable_checksums: std::collections::HashSet<String>,
}

impl Sorting {
    /// Files `entry` where it belongs: a backup file, a checksum, or a finding.
    fn take(&mut self, image: &str, entry: &FolderEntry) {
        let name = &entry.name;
        let finding = |kind, message: &str| Finding {
            name: name.clone(),
            kind,
            message: message.to_string(),
        };
        if !entry.exact_name {
            self.findings.push(finding(
                FindingKind::Unexpected,
                "its name is not valid UTF-8 (shown with replacement characters); left alone",
            ));
            return;
        }
        let classified = Entry::classify(image, name);
        if entry.kind != EntryKind::File {
            if matches!(classified, Entry::Checksum(_)) {
                self.unreadable_checksums.insert(name.clone());
            }
            if classified != Entry::Unexpected || entry.kind != EntryKind::Directory {
                self.findings.push(Finding {
                    name: name.clone(),
                    kind: FindingKind::NotRegular,
                    message: format!(
                        "is {}, not a regular file; never read, used or removed",
                        entry.kind.described()
                    ),
                });
            } else {
                self.findings
                    .push(finding(FindingKind::Unexpected, "a folder; left alone"));
            }
            return;
        }
        match classified {
            Entry::Backup(file) => self.files.push(FolderFile {
                name: name.clone(),
                file,
                checksum: None,
                size: entry.size,
            }),
            Entry::Checksum(_) => self.checksums.push(name.clone()),
            Entry::Record => {}
            Entry::Temporary => self.findings.push(finding(
                FindingKind::Temporary,
                "temporary file of an interrupted run (the next backup removes it)",
            )),
            Entry::Unexpected if naming::is_snapshotless_full_name(image, name) => {
                self.findings.push(finding(
                    FindingKind::SnapshotlessFull,
                    "full backup from before the original tool took snapshots; in no chain \
                     (restore it by hand with rbd import)",
                ));
            }
            Entry::Unexpected if name.starts_with(&format!("{image}@")) => {
                self.findings.push(finding(
                    FindingKind::Unparseable,
                    "named like a backup file of this image, but the name does not parse",
                ));
            }
            Entry::Unexpected => self.findings.push(finding(
                FindingKind::Unexpected,
                "not a backup file of this image",
            )),
        }
    }
}

impl Layout {
    /// Builds the model from the names of regular files in `image`'s folder (in any order).
    pub fn build(image: &str, names: &[String]) -> Layout {
        let entries: Vec<FolderEntry> = names.iter().map(|n| FolderEntry::file(n, 0)).collect();
        Layout::from_entries(image, &entries)
    }

    /// Builds the model from the entries of `image`'s folder (in any order). Only regular files
    /// with a readable name take part; anything else is a finding and changes nothing.
    pub fn from_entries(image: &str, entries: &[FolderEntry]) -> Layout {
        let mut sorted: Vec<&FolderEntry> = entries.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut sorting = Sorting::default();
        for entry in sorted {
            sorting.take(image, entry);
        }
        let Sorting {
            mut files,
            checksums,
            mut findings,
            unreadable_checksums,
        } = sorting;
        // A backup file whose checksum file is a link, FIFO or folder cannot be proven, and is
        // not used (the checksum entry itself is reported already).
        files.retain(|file| {
            let checksum = naming::checksum_name(&file.name);
            let provable = !unreadable_checksums.contains(&checksum);
            if !provable {
                findings.push(Finding {
                    name: file.name.clone(),
                    kind: FindingKind::NotRegular,
                    message: format!(
                        "not used: its checksum file {checksum} is not a regular file"
                    ),
                });
            }
            provable
        });
        for checksum in checksums {
            let of = naming::checksummed(&checksum).unwrap_or(&checksum);
            match files.iter_mut().find(|f| f.name == of) {
                Some(file) => file.checksum = Some(checksum.clone()),
                None => findings.push(Finding {
                    message: format!("checksum file without its backup file {of}"),
                    name: checksum,
                    kind: FindingKind::OrphanChecksum,
                }),
            }
        }
        files.sort_by(|a, b| (a.file.snap.taken(), &a.name).cmp(&(b.file.snap.taken(), &b.name)));
        let mut layout = Layout {
            image: image.to_string(),
            files,
            chains: Vec::new(),
            findings,
            reach: HashMap::new(),
            entries: entries.to_vec(),
        };
        let usable = layout.usable_files();
        layout.find_routes(&usable);
        layout.group_chains();
        layout.explain_unused(&usable);
        layout
    }

    /// Indexes of the files that may take part in routes, in time order; the others get a
    /// finding here. Of two copies of one backup, a proven one is kept.
    fn usable_files(&mut self) -> Vec<usize> {
        let mut usable: Vec<usize> = Vec::new();
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        order.sort_by_key(|&i| (self.files[i].checksum.is_none(), i));
        for index in order {
            let stored = &self.files[index];
            let file = &stored.file;
            if let Some(base) = file.base().filter(|b| b.taken() >= file.snap.taken()) {
                self.findings.push(Finding {
                    name: stored.name.clone(),
                    kind: FindingKind::Backwards,
                    message: format!(
                        "starts from {base}, which is not older than its own snapshot: not restorable"
                    ),
                });
                continue;
            }
            let twin = usable
                .iter()
                .map(|&i| &self.files[i])
                .find(|other| other.file.snap == file.snap && other.file.content == file.content);
            if let Some(twin) = twin {
                self.findings.push(Finding {
                    name: stored.name.clone(),
                    kind: FindingKind::Duplicate,
                    message: format!("the same backup as {}; this copy is not used", twin.name),
                });
                continue;
            }
            usable.push(index);
        }
        usable.sort_unstable();
        usable
    }

    /// Gives every snapshot that can be restored its shortest route, oldest snapshot first, so a
    /// diff's base has been settled before the diff is looked at.
    fn find_routes(&mut self, usable: &[usize]) {
        let mut by_snapshot: BTreeMap<(DateTime<Utc>, &str), Vec<usize>> = BTreeMap::new();
        for &index in usable {
            let snap = &self.files[index].file.snap;
            by_snapshot
                .entry((snap.taken(), snap.as_str()))
                .or_default()
                .push(index);
        }
        let mut reach = HashMap::new();
        for candidates in by_snapshot.values() {
            // The cheapest route: proof first, then length (a full, one link, wins among equally
            // proven routes).
            let best = candidates
                .iter()
                .filter_map(|&i| {
                    let stored = &self.files[i];
                    let unproven = usize::from(stored.checksum.is_none());
                    let Some(base) = stored.file.base() else {
                        return Some(Reach {
                            file: i,
                            unproven,
                            links: 1,
                            full: i,
                        });
                    };
                    let from: &Reach = reach.get(base)?;
                    Some(Reach {
                        file: i,
                        unproven: from.unproven + unproven,
                        links: from.links + 1,
                        full: from.full,
                    })
                })
                .min_by_key(Reach::cost);
            if let Some(best) = best {
                reach.insert(self.files[best.file].file.snap.clone(), best);
            }
        }
        self.reach = reach;
    }

    fn group_chains(&mut self) {
        let mut chains: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for r in self.reach.values() {
            let diffs = chains.entry(r.full).or_default();
            if r.file != r.full {
                diffs.push(r.file);
            }
        }
        // File indexes follow time order, so sorting indexes sorts by time.
        self.chains = chains
            .into_iter()
            .map(|(full, mut diffs)| {
                diffs.sort_unstable();
                Chain { full, diffs }
            })
            .collect();
    }

    fn explain_unused(&mut self, usable: &[usize]) {
        for &index in usable {
            let stored = &self.files[index];
            let snap = &stored.file.snap;
            if self.reach.get(snap).is_some_and(|r| r.file == index) {
                continue;
            }
            // A full always makes its snapshot restorable: an unused one lost to a route that
            // checksums prove.
            let Some(base) = stored.file.base() else {
                if let Some(chosen) = self.reach.get(snap) {
                    let message = format!(
                        "not used: it has no checksum file, and {snap} is restored from {} \
                         instead, whose route checksum files prove",
                        self.files[chosen.file].name
                    );
                    self.findings.push(Finding {
                        name: stored.name.clone(),
                        kind: FindingKind::Superseded,
                        message,
                    });
                }
                continue;
            };
            // A diff from a restorable base always makes its snapshot restorable, so an unused
            // diff either lost to a better route or hangs off something unrestorable.
            let (kind, message) = if let Some(chosen) = self.reach.get(snap) {
                (
                    FindingKind::Superseded,
                    format!(
                        "not needed: {snap} is restored from {}",
                        self.files[chosen.file].name
                    ),
                )
            } else if self.files.iter().any(|f| f.file.snap == *base) {
                (
                    FindingKind::AfterMissingLink,
                    format!("starts from {base}, which cannot be restored itself: not restorable"),
                )
            } else {
                (
                    FindingKind::MissingLink,
                    format!(
                        "starts from {base}, but no backup file ends at {base} (missing link): \
                         not restorable"
                    ),
                )
            };
            self.findings.push(Finding {
                name: stored.name.clone(),
                kind,
                message,
            });
        }
        self.findings.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The same folder without the backup files named in `refused` (and their checksum
    /// files): what reading showed cannot be used, before any route is taken.
    pub fn without(&self, refused: &[&str]) -> Layout {
        let kept: Vec<FolderEntry> = self
            .entries
            .iter()
            .filter(|entry| {
                let of = naming::checksummed(&entry.name).unwrap_or(&entry.name);
                !refused.contains(&of)
            })
            .cloned()
            .collect();
        Layout::from_entries(&self.image, &kept)
    }

    /// Every restore point, oldest first.
    pub fn points(&self) -> Vec<&SnapName> {
        let mut points: Vec<&SnapName> = self.reach.keys().collect();
        points.sort_by_key(|p| (p.taken(), p.as_str()));
        points
    }

    /// The newest restore point taken at or before `at` (the newest of all without `at`).
    pub fn point_at_or_before(&self, at: Option<DateTime<Utc>>) -> Option<&SnapName> {
        self.points()
            .into_iter()
            .rfind(|p| at.is_none_or(|at| p.taken() <= at))
    }

    /// The files that restore `point`, full first; `None` when it is not a restore point.
    pub fn route(&self, point: &SnapName) -> Option<Vec<&FolderFile>> {
        let mut route = Vec::new();
        let mut current = point;
        loop {
            let reach = self.reach.get(current)?;
            let stored = &self.files[reach.file];
            route.push(stored);
            match stored.file.base() {
                Some(base) => current = base,
                None => break,
            }
        }
        route.reverse();
        Some(route)
    }

    /// The restore points whose route reads one of the files named in `bad`, oldest first:
    /// what a corrupt file makes unusable (its own point and every later one built on it).
    pub fn points_needing(&self, bad: &[&str]) -> Vec<&SnapName> {
        self.points()
            .into_iter()
            .filter(|p| self.needs_any(p, bad))
            .collect()
    }

    /// The newest point taken at or before `at` whose route reads none of the files in `bad`:
    /// the one to restore instead.
    pub fn newest_avoiding(&self, bad: &[&str], at: Option<DateTime<Utc>>) -> Option<&SnapName> {
        self.points()
            .into_iter()
            .rev()
            .filter(|p| at.is_none_or(|at| p.taken() <= at))
            .find(|p| !self.needs_any(p, bad))
    }

    fn needs_any(&self, point: &SnapName, bad: &[&str]) -> bool {
        self.route(point)
            .is_some_and(|route| route.iter().any(|f| bad.contains(&f.name.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_fixtures::{diff_file as diff, full_file as full, snap, S0, S1, S2, S3, S4};

    fn build(names: &[String]) -> Layout {
        Layout::build("vm", names)
    }

    /// Each chain as its file names.
    fn chains(layout: &Layout) -> Vec<Vec<&str>> {
        layout
            .chains
            .iter()
            .map(|c| c.files().map(|i| layout.files[i].name.as_str()).collect())
            .collect()
    }

    fn findings(layout: &Layout) -> Vec<(&str, FindingKind)> {
        layout
            .findings
            .iter()
            .map(|f| (f.name.as_str(), f.kind))
            .collect()
    }

    /// Asserts that `layout` found exactly `expected`, in order; `what` names the case.
    fn assert_findings(layout: &Layout, expected: &[(String, FindingKind)], what: &str) {
        let expected: Vec<(&str, FindingKind)> =
            expected.iter().map(|(n, k)| (n.as_str(), *k)).collect();
        assert_eq!(findings(layout), expected, "{what}");
    }

    fn route(layout: &Layout, point: &str) -> Vec<String> {
        layout
            .route(&snap(point))
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    #[test]
    fn a_linear_chain_restores_every_point() {
        let names = [
            diff(S2, S3),
            full(S0),
            diff(S0, S1),
            format!("{}.sha256", full(S0)),
            diff(S1, S2),
        ];
        let layout = build(&names);
        assert_eq!(
            chains(&layout),
            [[
                full(S0).as_str(),
                &diff(S0, S1),
                &diff(S1, S2),
                &diff(S2, S3)
            ]]
        );
        assert_eq!(findings(&layout), []);
        assert_eq!(layout.points().len(), 4);
        assert_eq!(route(&layout, S2), [full(S0), diff(S0, S1), diff(S1, S2)]);
        assert_eq!(
            layout.files[0].checksum,
            Some(format!("{}.sha256", full(S0)))
        );
        assert_eq!(layout.files[1].checksum, None);
    }

    #[test]
    fn problems_are_found_and_the_rest_still_restores() {
        struct Case {
            what: &'static str,
            names: Vec<String>,
            chains: Vec<Vec<String>>,
            findings: Vec<(String, FindingKind)>,
        }
        let cases = [
            Case {
                what: "a missing link cuts the chain; what follows it is not restorable",
                names: vec![full(S0), diff(S0, S1), diff(S2, S3), diff(S3, S4)],
                chains: vec![vec![full(S0), diff(S0, S1)]],
                findings: vec![
                    (diff(S2, S3), FindingKind::MissingLink),
                    (diff(S3, S4), FindingKind::AfterMissingLink),
                ],
            },
            Case {
                what: "diffs without any full",
                names: vec![diff(S0, S1)],
                chains: vec![],
                findings: vec![(diff(S0, S1), FindingKind::MissingLink)],
            },
            Case {
                what: "an interrupted window slide: the new full wins over the old route",
                names: vec![full(S0), diff(S0, S1), diff(S1, S2), full(S2), diff(S2, S3)],
                chains: vec![vec![full(S0), diff(S0, S1)], vec![full(S2), diff(S2, S3)]],
                findings: vec![(diff(S1, S2), FindingKind::Superseded)],
            },
            Case {
                what: "full mode: every full is its own chain",
                names: vec![full(S1), full(S0)],
                chains: vec![vec![full(S0)], vec![full(S1)]],
                findings: vec![],
            },
            Case {
                what: "a branch: both ends are restore points",
                names: vec![full(S0), diff(S0, S1), diff(S0, S2)],
                chains: vec![vec![full(S0), diff(S0, S1), diff(S0, S2)]],
                findings: vec![],
            },
            Case {
                what: "raw and compressed copies of one backup, and a backwards diff",
                names: vec![
                    full(S0),
                    format!("{}.tar.gz", full(S0)),
                    diff(S0, S1),
                    diff(S2, S1),
                ],
                chains: vec![vec![full(S0), diff(S0, S1)]],
                findings: vec![
                    (format!("{}.tar.gz", full(S0)), FindingKind::Duplicate),
                    (diff(S2, S1), FindingKind::Backwards),
                ],
            },
            Case {
                what: "leftovers and strangers are flagged and change nothing",
                names: vec![
                    full(S0),
                    ".cephbackup-tmp.x1Y2".into(),
                    "vm@BACKUPfoo.full".into(),
                    "vm_UTC20170119T092933.full.tar.gz".into(),
                    "README.txt".into(),
                    format!("{}.sha256", diff(S0, S1)),
                ],
                chains: vec![vec![full(S0)]],
                findings: vec![
                    (".cephbackup-tmp.x1Y2".into(), FindingKind::Temporary),
                    ("README.txt".into(), FindingKind::Unexpected),
                    (
                        format!("{}.sha256", diff(S0, S1)),
                        FindingKind::OrphanChecksum,
                    ),
                    ("vm@BACKUPfoo.full".into(), FindingKind::Unparseable),
                    (
                        "vm_UTC20170119T092933.full.tar.gz".into(),
                        FindingKind::SnapshotlessFull,
                    ),
                ],
            },
        ];
        for case in cases {
            let layout = build(&case.names);
            assert_eq!(chains(&layout), case.chains, "{}", case.what);
            assert_findings(&layout, &case.findings, case.what);
        }
    }

    fn sha(name: &str) -> String {
        format!("{name}.sha256")
    }

    /// Each name with its checksum file.
    fn proven(names: &[String]) -> Vec<String> {
        names.iter().flat_map(|n| [n.clone(), sha(n)]).collect()
    }

    #[test]
    fn routes_of_proven_files_beat_routes_through_unproven_ones() {
        struct Case {
            what: &'static str,
            names: Vec<String>,
            /// The route to S2.
            route: Vec<String>,
            findings: Vec<(String, FindingKind)>,
        }
        let proven_chain = proven(&[full(S0), diff(S0, S1), diff(S1, S2)]);
        let with = |extra: &[String]| {
            let mut names = proven_chain.clone();
            names.extend_from_slice(extra);
            names
        };
        let cases = [
            Case {
                what: "an empty full without checksum beside a proven route",
                names: with(&[full(S2)]),
                route: vec![full(S0), diff(S0, S1), diff(S1, S2)],
                findings: vec![(full(S2), FindingKind::Superseded)],
            },
            Case {
                what: "the same full with its checksum is the shorter proven route",
                names: with(&proven(&[full(S2)])),
                route: vec![full(S2)],
                findings: vec![(diff(S1, S2), FindingKind::Superseded)],
            },
            Case {
                what: "the original's files: nothing is proven, the full wins as before",
                names: vec![full(S0), diff(S0, S1), diff(S1, S2), full(S2)],
                route: vec![full(S2)],
                findings: vec![(diff(S1, S2), FindingKind::Superseded)],
            },
            Case {
                what: "a longer proven route beats a shorter one through an unproven diff",
                names: with(&[diff(S0, S2)]),
                route: vec![full(S0), diff(S0, S1), diff(S1, S2)],
                findings: vec![(diff(S0, S2), FindingKind::Superseded)],
            },
            Case {
                what: "fewer unproven files win: an unproven full beats an unproven full and diff",
                names: vec![full(S0), diff(S0, S2), full(S2)],
                route: vec![full(S2)],
                findings: vec![(diff(S0, S2), FindingKind::Superseded)],
            },
            Case {
                what: "of a raw and a compressed copy, the proven one is used",
                names: vec![
                    full(S0),
                    format!("{}.tar.gz", full(S0)),
                    sha(&format!("{}.tar.gz", full(S0))),
                    diff(S0, S2),
                    sha(&diff(S0, S2)),
                ],
                route: vec![format!("{}.tar.gz", full(S0)), diff(S0, S2)],
                findings: vec![(full(S0), FindingKind::Duplicate)],
            },
        ];
        for case in cases {
            let layout = build(&case.names);
            assert_eq!(route(&layout, S2), case.route, "{}", case.what);
            assert_findings(&layout, &case.findings, case.what);
        }
    }

    #[test]
    fn a_refused_file_and_its_checksum_leave_every_route() {
        let names = [
            full(S0),
            diff(S0, S1),
            diff(S1, S2),
            full(S2),
            sha(&full(S2)),
        ];
        let layout = build(&names);
        assert_eq!(route(&layout, S2), [full(S2)]);
        let without = layout.without(&[&full(S2)]);
        assert_eq!(route(&without, S2), [full(S0), diff(S0, S1), diff(S1, S2)]);
        assert_eq!(findings(&without), []);
        assert!(without.files.iter().all(|f| f.name != full(S2)));
        let without = layout.without(&[&full(S0)]);
        assert!(without.route(&snap(S1)).is_none());
        assert_eq!(route(&without, S2), [full(S2)]);
    }

    #[test]
    fn a_diff_header_must_name_the_snapshots_of_its_file() {
        let layout = build(&[full(S0), diff(S0, S1)]);
        let stored = &layout.files[1];
        let header = |from: Option<&str>, to: Option<&str>| DiffHeader {
            from_snap: from.map(Into::into),
            to_snap: to.map(Into::into),
            size: 1,
        };
        assert_eq!(stored.check_diff_names(&header(Some(S0), Some(S1))), Ok(()));
        for (from, to) in [
            (Some(S1), Some(S2)),
            (None, Some(S1)),
            (Some(S0), None),
            (Some("UTC20261120T020000"), Some(S1)),
        ] {
            let err = stored.check_diff_names(&header(from, to)).unwrap_err();
            assert!(err.ends_with(&format!("says from {S0} to {S1}")), "{err}");
        }
    }

    #[test]
    fn legacy_names_form_chains_of_their_own() {
        let (u0, u1) = ("UTC20170119T092933", "UTC20170120T092933");
        let names = [
            format!("vm@{u0}.full.tar.gz"),
            format!("vm@{u1}.diff_from_{u0}.tar.gz"),
        ];
        let layout = build(&names);
        assert_eq!(chains(&layout), [[names[0].as_str(), &names[1]]]);
        let route = layout.route(&snap(u1)).unwrap();
        assert_eq!(route[1].file.base().map(SnapName::as_str), Some(u0));
        assert!(layout.route(&snap(&format!("BACKUP{u1}"))).is_none());
    }

    #[test]
    fn the_restore_point_is_the_newest_at_or_before_the_time_asked() {
        let names = [full(S0), diff(S0, S1), diff(S1, S2)];
        let layout = build(&names);
        let t = |s: &str| snap(s).taken();
        for (at, expected) in [
            (None, Some(S2)),
            (Some(t(S2)), Some(S2)),
            (Some(t(S2) - chrono::Duration::seconds(1)), Some(S1)),
            (Some(t(S1) + chrono::Duration::hours(3)), Some(S1)),
            (Some(t(S0)), Some(S0)),
            (Some(t(S0) - chrono::Duration::seconds(1)), None),
        ] {
            assert_eq!(
                layout.point_at_or_before(at).map(SnapName::as_str),
                expected,
                "{at:?}"
            );
        }
        assert!(build(&[diff(S0, S1)]).point_at_or_before(None).is_none());
    }

    #[test]
    fn a_bad_file_makes_its_point_and_the_later_ones_of_its_chain_unusable() {
        let names = [full(S0), diff(S0, S1), diff(S1, S2), diff(S2, S3), full(S4)];
        let layout = build(&names);
        let bad = diff(S1, S2);
        let unusable: Vec<&str> = layout
            .points_needing(&[&bad])
            .into_iter()
            .map(SnapName::as_str)
            .collect();
        assert_eq!(unusable, [S2, S3]);
        let newest = |at| layout.newest_avoiding(&[&bad], at).map(SnapName::as_str);
        assert_eq!(newest(None), Some(S4));
        assert_eq!(newest(Some(snap(S3).taken())), Some(S1));
        assert_eq!(
            layout.newest_avoiding(&[&full(S0)], Some(snap(S3).taken())),
            None
        );
    }
}

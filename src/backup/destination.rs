//! Whether a run may write into a destination, decided once per destination per run from what
//! the folder shows and what this host remembers of it ([`crate::state`]).
//!
//! [`decide`] is pure: the executor gathers the facts for every destination before any section
//! runs, so check mode and a real run decide alike, whatever the order of the sections sharing
//! a destination. The rules, in order:
//! - missing, or not a folder: refused, as always;
//! - carrying a record the tool can prove it wrote, or holding anything at all (the original's
//!   backups): used (adopted and recorded when unrecorded);
//! - empty, and this host wrote there before on another filesystem: refused, whatever the mode
//!   (the disk did not mount, or another disk sits at the mount point); `init-destination`
//!   accepts it on purpose;
//! - empty, and this host wrote there before on the same filesystem: the files and records were
//!   shipped or removed on purpose; each chain continues from the snapshot the host remembers;
//! - empty, and this host has no memory of it: a first use, unless an incremental section's
//!   images already carry backup snapshots (then it looks exactly like a disk that did not
//!   mount, and is refused as a whole until `init-destination`). A full-mode section never
//!   builds on other jobs' snapshots, so full sections alone always may start.

use crate::folder::untrusted::EntryKind;
use crate::state::{Filesystem, Known};

/// What the destination folder shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderShows {
    Missing,
    WrongKind(EntryKind),
    /// It carries a destination record whose seal this host verified, with this identity.
    Recorded(String),
    /// No believable record, but not empty (backups of the original, or a record that is not
    /// believed, which counts as something in the folder).
    Adoptable,
    /// No record and nothing in it but `lost+found`.
    Empty,
}

/// Backup snapshots of an incremental section's images, looked for only when a rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshots {
    NotLooked,
    NoneFound,
    /// `pool/image` and one of its backup snapshots.
    Found {
        image: String,
        snapshot: String,
    },
}

/// What a destination's rules are decided from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub folder: FolderShows,
    /// The filesystem the folder is on (`None` when it could not be told, or is missing).
    pub filesystem: Option<Filesystem>,
    /// What this host remembers of the destination.
    pub known: Option<Known>,
    /// Whether any section using it backs up in incremental mode.
    pub incremental: bool,
    pub snapshots: Snapshots,
}

/// How a destination is used this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Its record is there and believed.
    Recorded,
    /// Taken on: a record is written (`"adopted"`).
    Adopt,
    /// A new destination: a record is written (`"first use"`).
    First,
    /// Emptied (shipped) since this host last wrote there on the same filesystem: the record is
    /// written again with the same identity, and chains continue from the host's memory.
    Continue,
}

impl Use {
    /// How the destination record says it came to be written.
    pub fn how(self) -> &'static str {
        match self {
            Use::Recorded => "recorded",
            Use::Adopt => "adopted",
            Use::First => "first use",
            Use::Continue => "continued",
        }
    }
}

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    NotAFolder(EntryKind),
    /// Empty on another filesystem than the one this host wrote to.
    OtherFilesystem {
        was: Filesystem,
        now: Filesystem,
    },
    /// Empty, unknown to this host, and an incremental section's image has backup snapshots.
    SnapshotsElsewhere {
        image: String,
        snapshot: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Refuse(Refusal),
    /// Used as `how`, under identity `id` (`None`: a new one is made). `trust_memory`: the host's
    /// memory of each image's newest completed snapshot belongs to this destination's chains.
    Proceed {
        how: Use,
        id: Option<String>,
        trust_memory: bool,
    },
    /// Ask the cluster for the incremental sections' backup snapshots, then decide again.
    LookForSnapshots,
}

/// Decides how a destination is used; see the module's rules.
pub fn decide(facts: &Facts) -> Decision {
    let known = facts.known.as_ref();
    let same_filesystem = match (known, &facts.filesystem) {
        (Some(known), Some(now)) => Some(known.filesystem == *now),
        _ => None,
    };
    let proceed = |how: Use, id: Option<&String>| Decision::Proceed {
        how,
        trust_memory: id.is_some_and(|id| known.is_some_and(|k| k.id == *id)),
        id: id.cloned(),
    };
    match &facts.folder {
        FolderShows::Missing => Decision::Refuse(Refusal::Missing),
        FolderShows::WrongKind(kind) => Decision::Refuse(Refusal::NotAFolder(*kind)),
        FolderShows::Recorded(id) => proceed(Use::Recorded, Some(id)),
        // The host's identity is kept when it is the same filesystem: the record was lost or
        // cannot be written, not the destination replaced.
        FolderShows::Adoptable => match same_filesystem {
            Some(true) => proceed(Use::Adopt, known.map(|k| &k.id)),
            _ => proceed(Use::Adopt, None),
        },
        FolderShows::Empty => match (known, same_filesystem, &facts.filesystem) {
            (Some(_), Some(true), _) => proceed(Use::Continue, known.map(|k| &k.id)),
            (Some(known), Some(false), Some(now)) => Decision::Refuse(Refusal::OtherFilesystem {
                was: known.filesystem.clone(),
                now: now.clone(),
            }),
            _ if !facts.incremental => proceed(Use::First, None),
            // A bucket cannot fail to mount: an empty prefix there is a new destination, even
            // for images that have backup snapshots from another one.
            _ if facts
                .filesystem
                .as_ref()
                .is_some_and(Filesystem::is_object_store) =>
            {
                proceed(Use::First, None)
            }
            _ => match &facts.snapshots {
                Snapshots::NotLooked => Decision::LookForSnapshots,
                Snapshots::NoneFound => proceed(Use::First, None),
                Snapshots::Found { image, snapshot } => {
                    Decision::Refuse(Refusal::SnapshotsElsewhere {
                        image: image.clone(),
                        snapshot: snapshot.clone(),
                    })
                }
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(id: &str) -> Filesystem {
        Filesystem {
            id: id.into(),
            kind: 0xEF53,
        }
    }

    fn known(id: &str, on: &str) -> Option<Known> {
        Some(Known {
            id: id.into(),
            filesystem: fs(on),
        })
    }

    fn go(how: Use, id: Option<&str>, trust_memory: bool) -> Decision {
        Decision::Proceed {
            how,
            id: id.map(str::to_string),
            trust_memory,
        }
    }

    fn found() -> Snapshots {
        Snapshots::Found {
            image: "rbd/vm".into(),
            snapshot: "BACKUPUTC20261126T000000".into(),
        }
    }

    struct Case {
        what: &'static str,
        folder: FolderShows,
        on: Option<&'static str>,
        known: Option<Known>,
        incremental: bool,
        snapshots: Snapshots,
        expect: Decision,
    }

    fn case(
        what: &'static str,
        folder: FolderShows,
        on: Option<&'static str>,
        known: Option<Known>,
        incremental: bool,
        snapshots: Snapshots,
        expect: Decision,
    ) -> Case {
        Case {
            what,
            folder,
            on,
            known,
            incremental,
            snapshots,
            expect,
        }
    }

    /// Each case's facts lead to its decision.
    fn assert_decided(cases: impl IntoIterator<Item = Case>) {
        for case in cases {
            let facts = Facts {
                folder: case.folder,
                filesystem: case.on.map(fs),
                known: case.known,
                incremental: case.incremental,
                snapshots: case.snapshots,
            };
            assert_eq!(decide(&facts), case.expect, "{}", case.what);
        }
    }

    /// A destination that is no folder is refused, whatever the host remembers.
    #[test]
    fn a_missing_folder_or_a_file_in_its_place_is_refused() {
        use FolderShows::*;
        use Snapshots::*;
        assert_decided([
            case(
                "missing",
                Missing,
                None,
                known("a", "disk"),
                true,
                NotLooked,
                Decision::Refuse(Refusal::Missing),
            ),
            case(
                "a file",
                WrongKind(EntryKind::File),
                Some("root"),
                None,
                false,
                NotLooked,
                Decision::Refuse(Refusal::NotAFolder(EntryKind::File)),
            ),
        ]);
    }

    /// A folder with the tool's record is used; the host's memory of it is trusted only when the
    /// record is the one the host knows.
    #[test]
    fn a_recorded_folder_is_used_and_trusted_only_where_the_host_knows_it() {
        use FolderShows::*;
        use Snapshots::*;
        assert_decided([
            case(
                "recorded, known",
                Recorded("a".into()),
                Some("disk"),
                known("a", "disk"),
                true,
                NotLooked,
                go(Use::Recorded, Some("a"), true),
            ),
            case(
                "recorded, host reinstalled",
                Recorded("a".into()),
                Some("disk"),
                None,
                true,
                NotLooked,
                go(Use::Recorded, Some("a"), false),
            ),
            case(
                "recorded under another identity (another disk with its own record)",
                Recorded("b".into()),
                Some("disk2"),
                known("a", "disk"),
                true,
                NotLooked,
                go(Use::Recorded, Some("b"), false),
            ),
        ]);
    }

    /// An empty bucket prefix is a first use even where an empty folder would be refused (the
    /// images have backup snapshots): nothing can fail to mount there. A known bucket emptied is
    /// continued, as a folder is.
    #[test]
    fn an_empty_bucket_prefix_is_a_first_use_or_continued() {
        let bucket = Filesystem::object_store("http://rgw/backups");
        let facts = |known: Option<Known>| Facts {
            folder: FolderShows::Empty,
            filesystem: Some(bucket.clone()),
            known,
            incremental: true,
            snapshots: found(),
        };
        assert_eq!(decide(&facts(None)), go(Use::First, None, false));
        let remembered = Known {
            id: "a".into(),
            filesystem: bucket.clone(),
        };
        assert_eq!(
            decide(&facts(Some(remembered))),
            go(Use::Continue, Some("a"), true)
        );
        // The same facts on a disk are refused.
        let disk = Facts {
            filesystem: Some(fs("disk")),
            ..facts(None)
        };
        assert!(matches!(decide(&disk), Decision::Refuse(_)));
    }

    /// Backup files without the tool's record (the original's, or a lost record) are adopted.
    #[test]
    fn backups_without_a_record_are_adopted() {
        use FolderShows::*;
        use Snapshots::*;
        assert_decided([
            case(
                "the original's backups",
                Adoptable,
                Some("disk"),
                None,
                true,
                NotLooked,
                go(Use::Adopt, None, false),
            ),
            case(
                "files but the record lost, same filesystem",
                Adoptable,
                Some("disk"),
                known("a", "disk"),
                true,
                NotLooked,
                go(Use::Adopt, Some("a"), true),
            ),
            case(
                "files of another disk",
                Adoptable,
                Some("disk2"),
                known("a", "disk"),
                true,
                NotLooked,
                go(Use::Adopt, None, false),
            ),
        ]);
    }

    /// An emptied folder the host knows continues on its own filesystem, and is refused on another.
    #[test]
    fn an_empty_folder_continues_only_on_the_filesystem_it_was_on() {
        use FolderShows::*;
        use Snapshots::*;
        assert_decided([
            case(
                "emptied on the same filesystem (shipped)",
                Empty,
                Some("disk"),
                known("a", "disk"),
                true,
                NotLooked,
                go(Use::Continue, Some("a"), true),
            ),
            case(
                "empty on another filesystem, incremental",
                Empty,
                Some("root"),
                known("a", "disk"),
                true,
                NotLooked,
                Decision::Refuse(Refusal::OtherFilesystem {
                    was: fs("disk"),
                    now: fs("root"),
                }),
            ),
            case(
                "empty on another filesystem, full mode too",
                Empty,
                Some("root"),
                known("a", "disk"),
                false,
                NoneFound,
                Decision::Refuse(Refusal::OtherFilesystem {
                    was: fs("disk"),
                    now: fs("root"),
                }),
            ),
        ]);
    }

    /// A new folder: in full mode it is first used at once; incremental, only once no snapshots of
    /// the image say that another destination holds its chain.
    #[test]
    fn a_new_folder_asks_for_the_snapshots_only_when_incremental() {
        use FolderShows::*;
        use Snapshots::*;
        assert_decided([
            case(
                "new, full mode only: other jobs' snapshots do not matter",
                Empty,
                Some("disk"),
                None,
                false,
                NotLooked,
                go(Use::First, None, false),
            ),
            case(
                "new, incremental: the snapshots are looked for",
                Empty,
                Some("disk"),
                None,
                true,
                NotLooked,
                Decision::LookForSnapshots,
            ),
            case(
                "new, incremental, no snapshots",
                Empty,
                Some("disk"),
                None,
                true,
                NoneFound,
                go(Use::First, None, false),
            ),
            case(
                "new, incremental, snapshots of another job or an unmounted disk",
                Empty,
                Some("root"),
                None,
                true,
                found(),
                Decision::Refuse(Refusal::SnapshotsElsewhere {
                    image: "rbd/vm".into(),
                    snapshot: "BACKUPUTC20261126T000000".into(),
                }),
            ),
            case(
                "known, but the filesystem cannot be told: by the first-use rule",
                Empty,
                None,
                known("a", "disk"),
                true,
                found(),
                Decision::Refuse(Refusal::SnapshotsElsewhere {
                    image: "rbd/vm".into(),
                    snapshot: "BACKUPUTC20261126T000000".into(),
                }),
            ),
        ]);
    }
}

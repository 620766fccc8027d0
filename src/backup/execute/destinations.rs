//! The destinations of a run, decided once each before any section runs
//! ([`crate::backup::destination`]), and the one moment a real run writes what it decided: the
//! destination record and this host's memory of the destination.
//!
//! The facts are gathered for every destination first (the folder, its record, its filesystem,
//! the host's memory and, only when a rule needs them, the backup snapshots of the incremental
//! sections' images), so that sections sharing a destination agree, in check mode and in a real
//! run alike, whatever their order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::{cluster_failed, RunOptions, Section};
use crate::backup::destination::{self, Decision, Facts, FolderShows, Refusal, Snapshots, Use};
use crate::config::BackupMode;
use crate::folder::door::Door;
use crate::folder::naming::{self, SnapName, DESTINATION_RECORD};
use crate::folder::record::{self, Blocked, Destination};
use crate::folder::untrusted::EntryKind;
use crate::state::{Access, Filesystem, HostState, Known, Notes};

/// What a run does with one destination, shared by the sections that use it.
pub(super) struct DestinationUse {
    pub path: PathBuf,
    /// How the destination is used, or why not.
    pub decision: Result<Ready, Refused>,
    state: Option<Arc<HostState>>,
    /// The record and the host's memory were written (by the first real section to start).
    written: Mutex<bool>,
}

/// Why a destination is not used this run.
pub(super) enum Refused {
    /// The error line.
    Line(String),
    /// The cluster did not answer while the snapshots of `pool/image` were looked for: that
    /// section fails there (its later images not attempted), the others as the cluster's.
    Unanswered {
        pool: String,
        image: String,
        error: String,
        not_attempted: Vec<String>,
    },
}

/// A destination the run may write to.
pub(super) struct Ready {
    how: Use,
    /// Its identity: the record's, the host's, or a new one.
    pub id: String,
    /// The host's memory of each image's newest completed snapshot belongs to its chains.
    pub trust_memory: bool,
    filesystem: Option<Filesystem>,
    /// The record is not (re)written: a non-file sits at its name, or it is another host's.
    leave_record: bool,
}

impl DestinationUse {
    pub fn state(&self) -> Option<&HostState> {
        self.state.as_deref()
    }

    /// The first section to start writes the record through `top`, the door of the
    /// destination's top folder (unless it is there and believed, or must be left alone), and
    /// notes the destination in the host's memory through `notes`. Check mode's twins take both
    /// and keep nothing, so each check section says again what a real run would write.
    pub fn record_once(&self, top: &dyn Door, notes: &dyn Notes, now: DateTime<Utc>) -> Result<()> {
        let Ok(ready) = &self.decision else {
            return Ok(());
        };
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if *written {
            return Ok(());
        }
        // The host's memory first: if it cannot be kept, the destination stays as it was.
        if let Some(filesystem) = &ready.filesystem {
            let known = Known {
                id: ready.id.clone(),
                filesystem: filesystem.clone(),
            };
            notes.destination_used(&self.path, &known, now)?;
        }
        if ready.how != Use::Recorded && !ready.leave_record {
            let key = notes.record_key()?;
            notes.announce_record(&self.path, ready.how.how());
            if let Some(key) = key {
                match record::write_destination_record(top, &ready.id, ready.how.how(), now, key) {
                    Ok(()) => {}
                    Err(err) if err.downcast_ref::<Blocked>().is_some() => debug!("{err:#}"),
                    Err(err) => return Err(err),
                }
            }
        }
        notes.mark_written(&mut written);
        Ok(())
    }
}

/// Decides every destination of `sections` and hands each section its share; returns how many
/// warnings that cost (records not believed, records that cannot be written).
pub(super) fn prepare(sections: &[Section], options: &RunOptions) -> usize {
    let mut warnings = 0;
    let access = if sections.iter().any(|s| !s.checking()) {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let state = HostState::open_shared(&options.state_dir, access, options.coordination.clone())
        .map(Arc::new);
    let mut uses: Vec<Arc<DestinationUse>> = Vec::new();
    for section in sections {
        let dest = section.job.destination.as_path();
        if let Some(existing) = uses.iter().find(|u| u.path == dest) {
            let _ = section.destination.set(Arc::clone(existing));
            continue;
        }
        let sharing: Vec<&Section> = sections
            .iter()
            .filter(|s| s.job.destination == dest)
            .collect();
        let (decision, state) = match &state {
            Ok(state) => (
                decide(dest, &sharing, state, &mut warnings),
                Some(Arc::clone(state)),
            ),
            Err(err) => (Err(Refused::Line(format!("{err:#}"))), None),
        };
        let share = Arc::new(DestinationUse {
            path: dest.to_path_buf(),
            decision,
            state,
            written: Mutex::new(false),
        });
        let _ = section.destination.set(Arc::clone(&share));
        uses.push(share);
    }
    warnings
}

/// The decision for `dest`, used by `sharing` (at least one section).
fn decide(
    dest: &Path,
    sharing: &[&Section],
    state: &HostState,
    warnings: &mut usize,
) -> Result<Ready, Refused> {
    let line = |text: String| Refused::Line(text);
    let shown = dest.display();
    let job = sharing[0].job;
    let top = job.destination_folder();
    let (folder, foreign_record) = look_at(&*top, state, warnings)?;
    let record_blocked =
        matches!(folder, FolderShows::Adoptable) && record_blocked(&*top, warnings);
    let filesystem = match folder {
        FolderShows::Missing | FolderShows::WrongKind(_) => None,
        _ => match Filesystem::of_destination(dest, job.store.as_ref()) {
            Ok(filesystem) => Some(filesystem),
            Err(err) => {
                warn!("{err:#}");
                *warnings += 1;
                None
            }
        },
    };
    let known = state
        .destination(dest)
        .map_err(|err| line(format!("{err:#}")))?;
    let mut facts = Facts {
        folder,
        filesystem,
        known,
        incremental: sharing
            .iter()
            .any(|s| s.job.mode == BackupMode::Incremental),
        snapshots: Snapshots::NotLooked,
    };
    let mut decision = destination::decide(&facts);
    if decision == Decision::LookForSnapshots {
        facts.snapshots = snapshots_elsewhere(sharing)?;
        decision = destination::decide(&facts);
    }
    let config = sharing[0].config_path.display();
    match decision {
        Decision::Proceed {
            how,
            id,
            trust_memory,
        } => {
            let id = match id {
                Some(id) => id,
                None => record::new_destination_id().map_err(|err| line(format!("{err:#}")))?,
            };
            if how == Use::Continue {
                info!(
                    "destination {shown} is empty, on the filesystem this host last wrote it on: \
                     its files and records were shipped or removed since; each image continues \
                     from the newest snapshot it completed there (a diff while that snapshot \
                     exists, else a full)"
                );
            }
            Ok(Ready {
                how,
                id,
                trust_memory,
                filesystem: facts.filesystem,
                leave_record: record_blocked || foreign_record,
            })
        }
        Decision::LookForSnapshots => Err(line(format!(
            "internal error: destination {shown} still undecided"
        ))),
        Decision::Refuse(Refusal::Missing) if job.store.is_some() => Err(line(format!(
            "destination directory {shown}: there is no such bucket, or these credentials may not \
             see it"
        ))),
        Decision::Refuse(refusal) => Err(line(refusal_line(
            &refusal,
            &shown.to_string(),
            &config.to_string(),
        ))),
    }
}

/// What the destination folder `top` holds, and whether its record is another host's (left
/// alone).
fn look_at(
    top: &dyn Door,
    state: &HostState,
    warnings: &mut usize,
) -> Result<(FolderShows, bool), Refused> {
    let folder = match record::inspect(top) {
        Ok(Destination::Missing) => FolderShows::Missing,
        Ok(Destination::NotAFolder(kind)) => FolderShows::WrongKind(kind),
        Ok(Destination::Adoptable) => FolderShows::Adoptable,
        Ok(Destination::Empty) => FolderShows::Empty,
        Ok(Destination::Recorded) => {
            match record::read_destination_record(top, state.key()) {
                Ok(Some(id)) => FolderShows::Recorded(id),
                // Gone since it was looked at: as if it had never been there.
                Ok(None) => FolderShows::Adoptable,
                // Another host's record, in a destination shared between hosts: both write
                // there, so neither overwrites the other's. Nothing rests on it either way.
                Err(unusable) if unusable.foreign => {
                    info!(
                    "{}: {}; this host takes the destination on as it is and leaves the record \
                     alone",
                    unusable.path, unusable.problem
                );
                    return Ok((FolderShows::Adoptable, true));
                }
                Err(unusable) => {
                    warn!(
                        "{}: {}; it is not believed: the destination is taken on as it is and its \
                     record written again",
                        unusable.path, unusable.problem
                    );
                    *warnings += 1;
                    FolderShows::Adoptable
                }
            }
        }
        Err(err) => return Err(Refused::Line(format!("{err:#}"))),
    };
    Ok((folder, false))
}

/// True (and said) when something other than a file holds the destination record's name, so
/// that no record can be written there.
fn record_blocked(top: &dyn Door, warnings: &mut usize) -> bool {
    let record_path = top.location_of(DESTINATION_RECORD);
    let Ok(kind) = top.kind_of(DESTINATION_RECORD) else {
        return false;
    };
    if kind == EntryKind::File {
        return false;
    }
    warn!(
        "{}",
        Blocked {
            path: record_path.display().to_string(),
            kind: kind.described(),
        }
    );
    *warnings += 1;
    true
}

/// The one line that says why a destination is refused and how to proceed.
fn refusal_line(refusal: &Refusal, shown: &str, config: &str) -> String {
    match refusal {
        Refusal::Missing => format!(
            "destination directory {shown} does not exist{}",
            record::UNMOUNTED_HINT
        ),
        Refusal::NotAFolder(kind) => format!(
            "destination directory {shown} is {}, not a folder",
            kind.described()
        ),
        Refusal::OtherFilesystem { was, now } => format!(
            "destination directory {shown} is empty and on {}, not on {} where this host wrote \
             its backups before{}; nothing was changed. To start it afresh there on purpose, run \
             `cephbackup init-destination -c {config}` once",
            now.described(),
            was.described(),
            if now.is_object_store() {
                ""
            } else {
                record::UNMOUNTED_HINT
            }
        ),
        Refusal::SnapshotsElsewhere { image, snapshot } => format!(
            "destination directory {shown} is empty and carries no cephbackup record, but \
             {image} has backup snapshot {snapshot}{}; nothing was changed. To start this \
             destination afresh on purpose, run `cephbackup init-destination -c {config}` once",
            record::UNMOUNTED_HINT
        ),
    }
}

/// A backup snapshot of any image of the incremental sections in `sharing`. An image or pool
/// that cannot be listed is skipped (it fails on its own when its turn comes), except that a
/// cluster that does not answer (or refuses our login) refuses the destination: nothing else would work either.
fn snapshots_elsewhere(sharing: &[&Section]) -> Result<Snapshots, Refused> {
    for section in sharing
        .iter()
        .filter(|s| s.job.mode == BackupMode::Incremental)
    {
        let pool = &section.job.pool;
        let Ok(images) = section.images() else {
            continue;
        };
        for (index, image) in images.iter().enumerate() {
            if naming::check_name("image", image).is_err() {
                continue;
            }
            match section.rbd.list_snapshots(pool, image) {
                Ok(snapshots) => {
                    if let Some(snap) = snapshots.iter().find(|s| SnapName::is_owned(&s.name)) {
                        return Ok(Snapshots::Found {
                            image: format!("{pool}/{image}"),
                            snapshot: snap.name.clone(),
                        });
                    }
                }
                Err(err) if cluster_failed(&err) => {
                    return Err(Refused::Unanswered {
                        pool: pool.clone(),
                        image: image.clone(),
                        error: section.explain(&err.context("cannot list snapshots")),
                        not_attempted: images[index + 1..].to_vec(),
                    });
                }
                Err(_) => {}
            }
        }
    }
    Ok(Snapshots::NoneFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::door::{CheckFolder, LocalFolder};
    use crate::state::CheckNotes;

    /// A destination used for the first time, shared by the sections that use it.
    fn first_use(dest: &Path, state: &Arc<HostState>) -> DestinationUse {
        DestinationUse {
            path: dest.to_path_buf(),
            decision: Ok(Ready {
                how: Use::First,
                id: "id-1".into(),
                trust_memory: false,
                filesystem: Some(Filesystem::of(dest).unwrap()),
                leave_record: false,
            }),
            state: Some(Arc::clone(state)),
            written: Mutex::new(false),
        }
    }

    fn written(share: &DestinationUse) -> bool {
        *share.written.lock().unwrap()
    }

    #[test]
    fn the_record_and_memory_are_written_once_through_the_real_twins_only() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let state =
            Arc::new(HostState::open(&root.path().join("state"), Access::ReadWrite).unwrap());
        let share = first_use(&dest, &state);
        let top = LocalFolder::at(&dest);
        let now = Utc::now();
        // A check section: nothing reaches the folder or the host's memory, and the
        // destination is not marked written, so a real section sharing it still writes.
        let check_top = CheckFolder::new(Box::new(top.clone()));
        share
            .record_once(&check_top, &CheckNotes::new(&state), now)
            .unwrap();
        assert!(!dest.join(DESTINATION_RECORD).exists());
        assert_eq!(state.destination(&dest).unwrap(), None);
        assert!(!written(&share));
        // A real section: the record through the door, the memory through the notes.
        share.record_once(&top, &&*state, now).unwrap();
        assert_eq!(
            record::read_destination_record(&LocalFolder::at(&dest), state.key()).unwrap(),
            Some("id-1".to_string())
        );
        assert_eq!(state.destination(&dest).unwrap().unwrap().id, "id-1");
        assert!(written(&share));
        // Once: the next section sharing it writes nothing again.
        std::fs::remove_file(dest.join(DESTINATION_RECORD)).unwrap();
        share.record_once(&top, &&*state, now).unwrap();
        assert!(!dest.join(DESTINATION_RECORD).exists());
    }

    #[test]
    fn without_a_key_a_real_run_fails_and_check_mode_goes_on() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        // Read-only, before any real run made the key: there is none.
        let state =
            Arc::new(HostState::open(&root.path().join("state"), Access::ReadOnly).unwrap());
        assert!(state.key().is_none());
        let share = first_use(&dest, &state);
        let top = LocalFolder::at(&dest);
        share
            .record_once(
                &CheckFolder::new(Box::new(top.clone())),
                &CheckNotes::new(&state),
                Utc::now(),
            )
            .unwrap();
        assert!(!dest.join(DESTINATION_RECORD).exists());
        // A read-only state cannot note the destination: use one with no filesystem to get as
        // far as the key.
        let mut share = first_use(&dest, &state);
        if let Ok(ready) = &mut share.decision {
            ready.filesystem = None;
        }
        let err = share.record_once(&top, &&*state, Utc::now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "internal error: no record key in a real run"
        );
        assert!(!dest.join(DESTINATION_RECORD).exists());
        assert!(!written(&share));
    }
}

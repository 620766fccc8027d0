//! What the tool writes down about its own work in a destination, so that every destructive
//! decision rests on proof rather than on something being absent.
//!
//! Two records:
//! - The destination record, `<dest>/.cephbackup-destination.json`, says "this folder is a
//!   cephbackup destination" and gives it a random identity, which the host remembers with the
//!   filesystem it was on ([`crate::state`]). Whether an empty folder without it is a new
//!   destination, one whose files were shipped, or a backup disk that did not mount is decided
//!   by [`crate::backup::destination`]. A destination already holding backups (the original
//!   tool's, say) is adopted: the record is written on first use.
//! - The image record, `<dest>/<pool>/<image>/.cephbackup-image.json`, lists the snapshots a run
//!   is about to create and has not yet backed by a complete file (written and synced before
//!   `rbd snap create`), and the newest snapshot this destination completed a backup of. Start-of-
//!   run recovery removes a snapshot only when this record proves a run of ours created it and
//!   died before its file was complete; the newest completed snapshot lets a chain continue with a
//!   diff when the files have been shipped elsewhere since.
//!
//! Records are small JSON files written like backup files (temporary name, sync, rename, folder
//! sync) and read through [`crate::folder::untrusted`] with a size bound. Each carries a seal
//! ([`seal`]): an HMAC under a key kept in this host's state folder, so that no file another user
//! places or renames into a destination can pass for one the tool wrote. A record that cannot be
//! read, belongs to another user, names another image or has no valid seal is ignored with a
//! warning: without proof, nothing is removed. Records written before seals existed are among
//! those, once; the next run rewrites them sealed. A folder or other non-file at a record's name
//! is never replaced: writing the record is skipped with a warning ([`Blocked`]), and the facts
//! stay in the host's state folder.

use std::io;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::folder::door::{Door, Sharing};

pub mod seal;
pub mod state;
use crate::folder::naming::{DESTINATION_RECORD, IMAGE_RECORD};
use crate::folder::shared::EntryKind;
pub use crate::folder::shared::UNMOUNTED_HINT;
use crate::folder::untrusted;
pub use seal::{SealKey, Unsealed};
pub use state::{Completed, ImageRecord};

/// Records are a few hundred bytes; anything far larger is not ours.
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// A run adds one pending snapshot and the next run settles it; more means something is wrong,
/// and a record claiming thousands must not drive thousands of removals.
const MAX_PENDING: usize = 64;
const FORMAT: u32 = 1;
/// The kinds a seal is computed for: a record of one kind never passes for the other.
const DESTINATION_KIND: &str = "destination";
const IMAGE_KIND: &str = "image";

/// The state of a destination folder as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Missing,
    /// There, but a file, device or the like.
    NotAFolder(EntryKind),
    /// It carries the tool's record.
    Recorded,
    /// No record, but not empty either (the original tool's backups, or anything else): it is
    /// taken on and the record written.
    Adoptable,
    /// No record and nothing in it: a fresh destination, or a mount point whose disk is missing.
    Empty,
}

/// Looks at the destination `top` without changing anything.
pub fn inspect(top: &dyn Door) -> Result<Destination> {
    let dest = &top.location();
    let kind = match top.kind() {
        Ok(kind) => kind,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Destination::Missing),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read destination {}", dest.display()))
        }
    };
    if kind != EntryKind::Directory {
        return Ok(Destination::NotAFolder(kind));
    }
    match top.kind_of(DESTINATION_RECORD) {
        Ok(EntryKind::File) => return Ok(Destination::Recorded),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| {
                format!(
                    "cannot read {}",
                    top.location_of(DESTINATION_RECORD).display()
                )
            })
        }
    }
    let entries = top
        .list()
        .with_context(|| format!("cannot list destination {}", dest.display()))?;
    // A freshly made filesystem has lost+found and nothing else: still empty.
    if entries.iter().any(|entry| entry.name != "lost+found") {
        return Ok(Destination::Adoptable);
    }
    Ok(Destination::Empty)
}

#[derive(Debug, Serialize, Deserialize)]
struct DestinationDoc {
    format: u32,
    /// The destination's identity: random, written once, kept when the record is rewritten, and
    /// remembered by the host ([`crate::state`]) with the filesystem the destination was on.
    #[serde(default)]
    id: Option<String>,
    /// How the destination came to be recorded: "first use", "adopted", "continued" or
    /// "init-destination".
    how: String,
    at: DateTime<Utc>,
    by: String,
}

/// A new random destination identity: 128 bits, as hex.
pub fn new_destination_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    seal::random_bytes(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the destination record through `top`, the door of the destination's top folder
/// (replacing one that is there), sealed under `key`. A non-file
/// at its name is left alone: the error is a [`Blocked`].
pub fn write_destination_record(
    top: &dyn Door,
    id: &str,
    how: &str,
    at: DateTime<Utc>,
    key: &SealKey,
) -> Result<()> {
    let doc = DestinationDoc {
        format: FORMAT,
        id: Some(id.to_string()),
        how: how.to_string(),
        at,
        by: format!("cephbackup {}", env!("CARGO_PKG_VERSION")),
    };
    write_sealed(top, DESTINATION_RECORD, DESTINATION_KIND, &doc, key)
}

/// Reads the destination record of `dest` and returns its identity when the record proves it was
/// written by this host's tool; an [`UnusableRecord`] otherwise (no record is `Ok(None)`).
pub fn read_destination_record(
    top: &dyn Door,
    key: Option<&SealKey>,
) -> Result<Option<String>, UnusableRecord> {
    let path = top.location_of(DESTINATION_RECORD);
    let Some(bytes) = read_record_bytes(top, DESTINATION_RECORD)? else {
        return Ok(None);
    };
    let doc: DestinationDoc = seal::open(key, DESTINATION_KIND, &bytes)
        .map_err(|why| UnusableRecord::unsealed(&path, &why))?;
    match doc.id {
        Some(id) if doc.format == FORMAT && !id.is_empty() => Ok(Some(id)),
        _ => Err(UnusableRecord::new(&path, "names no identity".into())),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageDoc {
    format: u32,
    pool: String,
    image: String,
    #[serde(flatten)]
    record: ImageRecord,
}

/// Why a record was not used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}; it is ignored, so no snapshot is removed on its account")]
pub struct UnusableRecord {
    pub path: String,
    pub problem: String,
    /// What is at the record's name is not a file at all (a folder, say): it is never replaced,
    /// and writes of the record are skipped.
    pub not_a_file: bool,
    /// It carries a seal, but not one under this host's key: most likely another host's record
    /// in a shared destination, which this host has no reason to overwrite.
    pub foreign: bool,
}

impl UnusableRecord {
    fn new(path: &Path, problem: String) -> UnusableRecord {
        UnusableRecord {
            path: path.display().to_string(),
            problem,
            not_a_file: false,
            foreign: false,
        }
    }

    fn unsealed(path: &Path, why: &Unsealed) -> UnusableRecord {
        let mut problem = why.to_string();
        if *why == Unsealed::Missing {
            problem.push_str(" (a record of an earlier version is rewritten sealed by this run)");
        }
        let mut unusable = UnusableRecord::new(path, problem);
        unusable.foreign = matches!(why, Unsealed::Wrong | Unsealed::NoKey);
        unusable
    }
}

/// A folder or other non-file sits at a record's name: it is left alone and the record is not
/// written there.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} is {kind}, not the tool's record; it is left alone and the record is kept in this \
     host's state folder only"
)]
pub struct Blocked {
    pub path: String,
    pub kind: &'static str,
}

/// The bytes of the record `name` of `folder`, when it is a regular file nobody but this user
/// can have written ([`Door::read_own`]), within the size bound.
fn read_record_bytes(folder: &dyn Door, name: &str) -> Result<Option<Vec<u8>>, UnusableRecord> {
    folder.read_own(name, MAX_RECORD_BYTES).map_err(|err| {
        let mut unusable = UnusableRecord::new(&folder.location_of(name), err.to_string());
        unusable.not_a_file = untrusted::is_not_regular(&err);
        unusable
    })
}

/// Reads the record of `pool/image` from its folder: empty when there is none, an
/// [`UnusableRecord`] when what is there cannot be trusted (its seal included, checked under
/// `key`).
pub fn read_image_record(
    folder: &dyn Door,
    pool: &str,
    image: &str,
    key: Option<&SealKey>,
) -> Result<ImageRecord, UnusableRecord> {
    let path = folder.location_of(IMAGE_RECORD);
    let unusable = |problem: String| UnusableRecord::new(&path, problem);
    let Some(bytes) = read_record_bytes(folder, IMAGE_RECORD)? else {
        return Ok(ImageRecord::default());
    };
    let doc: ImageDoc =
        seal::open(key, IMAGE_KIND, &bytes).map_err(|why| UnusableRecord::unsealed(&path, &why))?;
    if doc.format != FORMAT {
        return Err(unusable(format!("has format {}, not {FORMAT}", doc.format)));
    }
    if doc.pool != pool || doc.image != image {
        return Err(unusable(format!(
            "is the record of {}/{}, not of {pool}/{image}",
            doc.pool, doc.image
        )));
    }
    if doc.record.pending.len() > MAX_PENDING {
        return Err(unusable(format!(
            "lists {} pending snapshots, more than a run ever leaves",
            doc.record.pending.len()
        )));
    }
    Ok(doc.record)
}

/// Writes the record of `pool/image` into its folder, replacing the previous one atomically.
/// Sealed under `key`; a non-file at its name is left alone (the error is a [`Blocked`]).
pub fn write_image_record(
    folder: &dyn Door,
    pool: &str,
    image: &str,
    record: &ImageRecord,
    key: &SealKey,
) -> Result<()> {
    let doc = ImageDoc {
        format: FORMAT,
        pool: pool.to_string(),
        image: image.to_string(),
        record: record.clone(),
    };
    write_sealed(folder, IMAGE_RECORD, IMAGE_KIND, &doc, key)
}

fn write_sealed(
    folder: &dyn Door,
    name: &str,
    kind: &str,
    doc: &impl Serialize,
    key: &SealKey,
) -> Result<()> {
    let path = folder.location_of(name);
    // Only a regular file is ever replaced: a rename would fail on a folder anyway, and a link,
    // device or socket is nobody's record (whoever put it there may want it).
    match folder.kind_of(name) {
        Ok(EntryKind::File) => {}
        Ok(other) => {
            return Err(Blocked {
                path: path.display().to_string(),
                kind: other.described(),
            }
            .into())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let text = seal::seal(key, kind, doc).context("cannot encode a record")?;
    folder.put(name, &text, Sharing::Folder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::door::LocalFolder;
    use crate::folder::naming::SnapName;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn destinations_are_told_apart() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        assert_eq!(
            inspect(&LocalFolder::at(&dest)).unwrap(),
            Destination::Missing
        );
        std::fs::write(&dest, "").unwrap();
        assert_eq!(
            inspect(&LocalFolder::at(&dest)).unwrap(),
            Destination::NotAFolder(EntryKind::File)
        );
        std::fs::remove_file(&dest).unwrap();
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(dest.join("lost+found")).unwrap();
        assert_eq!(
            inspect(&LocalFolder::at(&dest)).unwrap(),
            Destination::Empty
        );
        std::fs::create_dir(dest.join("rbd")).unwrap();
        assert_eq!(
            inspect(&LocalFolder::at(&dest)).unwrap(),
            Destination::Adoptable
        );
        let key = SealKey::new([1; seal::KEY_BYTES]);
        write_destination_record(&LocalFolder::at(&dest), "id-1", "adopted", Utc::now(), &key)
            .unwrap();
        assert_eq!(
            inspect(&LocalFolder::at(&dest)).unwrap(),
            Destination::Recorded
        );
        assert_eq!(
            read_destination_record(&LocalFolder::at(&dest), Some(&key)).unwrap(),
            Some("id-1".to_string())
        );
        let other = SealKey::new([2; seal::KEY_BYTES]);
        let err = read_destination_record(&LocalFolder::at(&dest), Some(&other)).unwrap_err();
        assert!(err.problem.contains("does not match"), "{err}");
        let mode = std::fs::metadata(dest.join(DESTINATION_RECORD))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn image_records_round_trip_and_are_only_trusted_when_ours() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::new([1; seal::KEY_BYTES]);
        let read_image_record = |dir: &Path, pool: &str, image: &str| {
            super::read_image_record(&LocalFolder::at(dir), pool, image, Some(&key))
        };
        assert_eq!(
            read_image_record(dir.path(), "rbd", "vm").unwrap(),
            ImageRecord::default()
        );
        let mut record = ImageRecord::default();
        record.snapshot_planned("BACKUPUTC20261126T000000", "vm@x.full", false, Utc::now());
        record.newest = Some(Completed {
            snapshot: "BACKUPUTC20261125T000000".into(),
            file: "vm@y.full".into(),
        });
        write_image_record(&LocalFolder::at(dir.path()), "rbd", "vm", &record, &key).unwrap();
        assert_eq!(read_image_record(dir.path(), "rbd", "vm").unwrap(), record);
        let other = SealKey::new([2; seal::KEY_BYTES]);
        let err = super::read_image_record(&LocalFolder::at(dir.path()), "rbd", "vm", Some(&other))
            .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(err.to_string().contains("no snapshot is removed"), "{err}");

        let err = read_image_record(dir.path(), "rbd", "other").unwrap_err();
        assert!(err.to_string().contains("not of rbd/other"), "{err}");

        let path = dir.path().join(IMAGE_RECORD);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = read_image_record(dir.path(), "rbd", "vm").unwrap_err();
        assert!(
            err.to_string().contains("cannot be sure it wrote it"),
            "{err}"
        );

        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let err = read_image_record(dir.path(), "rbd", "vm").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "{not json").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_image_record(dir.path(), "rbd", "vm").unwrap_err();
        assert!(err.to_string().contains("not readable"), "{err}");

        // What the previous version wrote: no seal. Not believed, and the warning says why.
        let unsealed = serde_json::json!({
            "format": 1, "pool": "rbd", "image": "vm",
            "pending": [], "newest": null
        });
        std::fs::write(&path, unsealed.to_string()).unwrap();
        let err = read_image_record(dir.path(), "rbd", "vm").unwrap_err();
        assert!(err.to_string().contains("carries no seal"), "{err}");
        assert!(err.to_string().contains("rewritten sealed"), "{err}");
        assert!(!err.not_a_file);
    }

    #[test]
    fn a_non_file_at_a_record_name_is_reported_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::new([1; seal::KEY_BYTES]);
        std::fs::create_dir(dir.path().join(IMAGE_RECORD)).unwrap();
        std::fs::create_dir(dir.path().join(DESTINATION_RECORD)).unwrap();
        let err =
            read_image_record(&LocalFolder::at(dir.path()), "rbd", "vm", Some(&key)).unwrap_err();
        assert!(err.not_a_file, "{err}");
        let err = write_image_record(
            &LocalFolder::at(dir.path()),
            "rbd",
            "vm",
            &ImageRecord::default(),
            &key,
        )
        .unwrap_err();
        let blocked = err.downcast_ref::<Blocked>().unwrap();
        assert_eq!(blocked.kind, "a folder");
        let err = write_destination_record(
            &LocalFolder::at(dir.path()),
            "x",
            "adopted",
            Utc::now(),
            &key,
        )
        .unwrap_err();
        assert!(err.downcast_ref::<Blocked>().is_some(), "{err}");
        assert!(dir.path().join(IMAGE_RECORD).is_dir());
        assert!(dir.path().join(DESTINATION_RECORD).is_dir());
        assert_eq!(
            inspect(&LocalFolder::at(dir.path())).unwrap(),
            Destination::Adoptable
        );
    }

    #[test]
    fn pending_entries_are_added_and_settled() {
        let s1 = SnapName::parse("BACKUPUTC20261126T000000").unwrap();
        let s0 = SnapName::parse("BACKUPUTC20261125T000000").unwrap();
        let mut record = ImageRecord::default();
        record.snapshot_planned(s1.as_str(), "f1", false, Utc::now());
        record.snapshot_planned(s1.as_str(), "f1", false, Utc::now());
        assert_eq!(record.pending.len(), 1);
        record.file_completed(&s1, "f1");
        assert!(record.pending.is_empty());
        assert_eq!(record.newest.as_ref().unwrap().snapshot, s1.as_str());
        // An older file (a window slide's new base) does not make the record go back in time.
        record.file_completed(&s0, "f0");
        assert_eq!(record.newest.as_ref().unwrap().file, "f1");

        record.snapshot_planned("T", "t.full", true, Utc::now());
        record.file_completed(
            &SnapName::parse("BACKUPUTC20261127T000000").unwrap(),
            "t.full",
        );
        assert_eq!(
            record.pending.len(),
            1,
            "a temporary snapshot stays pending"
        );
        assert!(record.snapshot_gone("T"));
        assert!(!record.snapshot_gone("T"));
    }
}

//! What the tool writes down about its own work in a destination, so that every destructive
//! decision rests on proof rather than on something being absent.
//!
//! Two records:
//! - The destination record, `<dest>/.cephbackup-destination.json`, says "this folder is a
//!   cephbackup destination". A destination that lacks it and is empty while the cluster holds
//!   backup snapshots is most likely a backup disk that did not mount: the run refuses instead of
//!   starting over on the root filesystem. A destination already holding backups (the original
//!   tool's, say) is adopted: the record is written on first use.
//! - The image record, `<dest>/<pool>/<image>/.cephbackup-image.json`, lists the snapshots a run
//!   is about to create and has not yet backed by a complete file (written and synced before
//!   `rbd snap create`), and the newest snapshot this destination completed a backup of. Start-of-
//!   run recovery removes a snapshot only when this record proves a run of ours created it and
//!   died before its file was complete; the newest completed snapshot lets a chain continue with a
//!   diff when the files have been shipped elsewhere since.
//!
//! Records are small JSON files written like backup files (temporary name, sync, rename, folder
//! sync) and read through [`crate::folder::untrusted`] with a size bound. A record that cannot be read,
//! belongs to another user or names another image is ignored with a warning: without proof,
//! nothing is removed.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::folder::write::PendingFile;

pub mod state;
use crate::folder::untrusted::{self, EntryKind};
pub use state::{Completed, ImageRecord, Pending};

pub const DESTINATION_RECORD: &str = ".cephbackup-destination.json";
pub const IMAGE_RECORD: &str = ".cephbackup-image.json";
/// What follows "destination directory X does not exist" and its kin.
pub const UNMOUNTED_HINT: &str = " (is the backup disk mounted?)";
/// Records are a few hundred bytes; anything far larger is not ours.
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// A run adds one pending snapshot and the next run settles it; more means something is wrong,
/// and a record claiming thousands must not drive thousands of removals.
const MAX_PENDING: usize = 64;
const FORMAT: u32 = 1;

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

/// Looks at `dest` without changing anything.
pub fn inspect(dest: &Path) -> Result<Destination> {
    let meta = match std::fs::metadata(dest) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Destination::Missing),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read destination {}", dest.display()))
        }
    };
    let kind = EntryKind::of(meta.file_type());
    if kind != EntryKind::Directory {
        return Ok(Destination::NotAFolder(kind));
    }
    let record = dest.join(DESTINATION_RECORD);
    match untrusted::kind_of(&record) {
        Ok(EntryKind::File) => return Ok(Destination::Recorded),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", record.display())),
    }
    let entries = std::fs::read_dir(dest)
        .with_context(|| format!("cannot list destination {}", dest.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list destination {}", dest.display()))?;
        // A freshly made filesystem has lost+found and nothing else: still empty.
        if entry.file_name() != "lost+found" {
            return Ok(Destination::Adoptable);
        }
    }
    Ok(Destination::Empty)
}

#[derive(Debug, Serialize, Deserialize)]
struct DestinationDoc {
    format: u32,
    /// How the destination came to be recorded: "first use", "adopted" or "init-destination".
    how: String,
    at: DateTime<Utc>,
    by: String,
}

/// Writes the destination record (replacing one that is there).
pub fn write_destination_record(dest: &Path, how: &str, at: DateTime<Utc>) -> Result<()> {
    let doc = DestinationDoc {
        format: FORMAT,
        how: how.to_string(),
        at,
        by: format!("cephbackup {}", env!("CARGO_PKG_VERSION")),
    };
    write_json(dest, DESTINATION_RECORD, &doc)
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageDoc {
    format: u32,
    pool: String,
    image: String,
    #[serde(flatten)]
    record: ImageRecord,
}

/// Why an image record was not used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}; it is ignored, so no snapshot is removed on its account")]
pub struct UnusableRecord {
    pub path: String,
    pub problem: String,
}

/// Reads the record of `pool/image` from its folder: empty when there is none, an
/// [`UnusableRecord`] when what is there cannot be trusted.
pub fn read_image_record(
    folder: &Path,
    pool: &str,
    image: &str,
) -> Result<ImageRecord, UnusableRecord> {
    let path = folder.join(IMAGE_RECORD);
    let unusable = |problem: String| UnusableRecord {
        path: path.display().to_string(),
        problem,
    };
    let file = match untrusted::open_regular(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(ImageRecord::default()),
        Err(err) => return Err(unusable(err.to_string())),
    };
    let meta = file.metadata().map_err(|err| unusable(err.to_string()))?;
    if meta.uid() != untrusted::effective_uid() || meta.mode() & 0o022 != 0 {
        return Err(unusable(format!(
            "belongs to uid {} with mode {:o}, so this run cannot be sure it wrote it",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    // Read through the handle whose owner was checked, not a second open of the path.
    let bytes =
        untrusted::read_bounded(file, MAX_RECORD_BYTES).map_err(|err| unusable(err.to_string()))?;
    let doc: ImageDoc =
        serde_json::from_slice(&bytes).map_err(|err| unusable(format!("not readable: {err}")))?;
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
pub fn write_image_record(
    folder: &Path,
    pool: &str,
    image: &str,
    record: &ImageRecord,
) -> Result<()> {
    let doc = ImageDoc {
        format: FORMAT,
        pool: pool.to_string(),
        image: image.to_string(),
        record: record.clone(),
    };
    write_json(folder, IMAGE_RECORD, &doc)
}

fn write_json(dir: &Path, name: &str, doc: &impl Serialize) -> Result<()> {
    let path = dir.join(name);
    let mut text = serde_json::to_vec_pretty(doc).context("cannot encode a record")?;
    text.push(b'\n');
    let mut pending = PendingFile::create(dir, name)?;
    io::Write::write_all(pending.file(), &text)
        .with_context(|| format!("cannot write {}", path.display()))?;
    pending.commit_replacing()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::naming::SnapName;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn destinations_are_told_apart() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        assert_eq!(inspect(&dest).unwrap(), Destination::Missing);
        std::fs::write(&dest, "").unwrap();
        assert_eq!(
            inspect(&dest).unwrap(),
            Destination::NotAFolder(EntryKind::File)
        );
        std::fs::remove_file(&dest).unwrap();
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(dest.join("lost+found")).unwrap();
        assert_eq!(inspect(&dest).unwrap(), Destination::Empty);
        std::fs::create_dir(dest.join("rbd")).unwrap();
        assert_eq!(inspect(&dest).unwrap(), Destination::Adoptable);
        write_destination_record(&dest, "adopted", Utc::now()).unwrap();
        assert_eq!(inspect(&dest).unwrap(), Destination::Recorded);
        let mode = std::fs::metadata(dest.join(DESTINATION_RECORD))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn image_records_round_trip_and_are_only_trusted_when_ours() {
        let dir = tempfile::tempdir().unwrap();
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
        write_image_record(dir.path(), "rbd", "vm", &record).unwrap();
        assert_eq!(read_image_record(dir.path(), "rbd", "vm").unwrap(), record);

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

//! `restore --to-file`'s target being written: a file named [`PARTIAL_PREFIX`]… in the target's
//! folder while its writer holds an flock on it, renamed to the target only when complete and
//! never over anything that appeared there meanwhile. A restore killed outright leaves that file
//! unlocked, and the next restore into the same folder removes it.
//!
//! The target is not a destination, but it is a file the tool creates, renames and removes: the
//! local door does it, with the system calls only a local filesystem has (`O_TMPFILE`, `linkat`,
//! `flock`, `renameat2`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::folder::format::rebuild::TargetFailed;
use crate::folder::naming::{NAME_MAX, PARTIAL_PREFIX};
use crate::output::escaped_path;

/// A `--to-file` target being written: a file named [`PARTIAL_PREFIX`]… in the target's folder,
/// locked with flock for as long as this process has it open, removed unless committed. When the
/// process is killed outright the lock goes with it, which is how [`remove_stale_partials`]
/// tells a leftover from a file another restore is still writing.
pub struct PartialFile {
    file: File,
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PartialFile {
    pub fn create(target: &Path) -> Result<PartialFile> {
        let shown = escaped_path(target);
        let parent = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .with_context(|| format!("{shown} does not name a file"))?;
        remove_stale_partials(parent);
        let cannot = |err: io::Error| {
            anyhow::Error::new(err).context(format!(
                "cannot create {shown}: cannot create a file in {}",
                escaped_path(parent)
            ))
        };
        for _ in 0..16 {
            let path = parent.join(partial_name(&name.to_string_lossy()));
            // Locked before it has a name where possible, so that no other restore can take it
            // for a leftover in between.
            let file = match create_locked(parent, &path) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(cannot(err)),
            };
            info!("writing {} until it is complete", escaped_path(&path));
            return Ok(PartialFile {
                file,
                path,
                target: target.to_path_buf(),
                committed: false,
            });
        }
        Err(cannot(io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    /// The file being written.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Syncs the file and gives it the target's name, never replacing anything there.
    pub fn commit(mut self) -> Result<()> {
        let shown = escaped_path(&self.target);
        self.file.sync_all().map_err(|source| TargetFailed {
            target: shown.clone(),
            source,
        })?;
        rename_noreplace(&self.path, &self.target).with_context(|| {
            format!(
                "cannot move the finished file {} to {shown}",
                escaped_path(&self.path)
            )
        })?;
        self.committed = true;
        if let Some(parent) = self.target.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            // The data is synced; a lost rename after a crash leaves a partial to clean up.
            if let Err(err) = File::open(parent).and_then(|d| d.sync_all()) {
                warn!("cannot sync the folder {}: {err}", escaped_path(parent));
            }
        }
        Ok(())
    }
}

impl Drop for PartialFile {
    #[allow(clippy::disallowed_methods)] // the local door removes an unfinished restore target
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(err) = fs::remove_file(&self.path) {
            if err.kind() != io::ErrorKind::NotFound {
                warn!(
                    "cannot remove the unfinished {}: {err}; the next restore into its folder \
                     removes it",
                    escaped_path(&self.path)
                );
            }
        }
    }
}

/// `.cephbackup-restore.<random>.<name>`, cut to the longest name a filesystem takes.
fn partial_name(name: &str) -> String {
    let random: String = {
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            ^ u64::from(std::process::id()).rotate_left(32);
        (0..8)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(seed % 36) as usize])
            })
            .collect()
    };
    let mut partial = format!("{PARTIAL_PREFIX}{random}.{name}");
    while partial.len() > NAME_MAX {
        partial.pop();
    }
    partial
}

/// Creates `path` (which must not exist) in `dir`, readable by its owner only, already holding
/// an exclusive flock. With `O_TMPFILE` the file is created nameless, locked, then linked to its
/// name; on filesystems without it, created by name and locked at once.
#[allow(clippy::disallowed_methods)] // the local door creates a restore target, locked before it has a name
fn create_locked(dir: &Path, path: &Path) -> io::Result<File> {
    let anonymous = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match anonymous {
        Ok(file) => {
            lock(&file)?;
            let from = format!("/proc/self/fd/{}", file.as_raw_fd());
            // The link fails if `path` exists, so nothing is replaced.
            let linked = rustix::fs::linkat(
                rustix::fs::CWD,
                from.as_str(),
                rustix::fs::CWD,
                path,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            );
            let Err(errno) = linked else {
                return Ok(file);
            };
            let err = io::Error::from(errno);
            // Without /proc the nameless file cannot be given a name: fall back.
            if err.kind() != io::ErrorKind::NotFound {
                return Err(err);
            }
        }
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
            ) => {}
        Err(err) => return Err(err),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    lock(&file)?;
    Ok(file)
}

/// Takes an exclusive flock on `file` without waiting.
fn lock(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)
}

/// Renames `from` to `to` unless `to` exists (of any kind, a dangling symlink included).
#[allow(clippy::disallowed_methods)] // the local door gives a finished restore target its name
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let renamed = rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    );
    let Err(errno) = renamed else {
        return Ok(());
    };
    let err = io::Error::from(errno);
    if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(err);
    }
    // Filesystems without RENAME_NOREPLACE: a hard link also fails when `to` exists.
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

/// Removes what restores killed outright left in `dir`: files named [`PARTIAL_PREFIX`]… that
/// are regular files of ours and that nobody holds a lock on. Problems are logged, never fatal:
/// this is tidying up, not the restore asked for.
#[allow(clippy::disallowed_methods)] // the local door removes what killed restores left
pub fn remove_stale_partials(dir: &Path) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            tracing::debug!(
                "cannot look for unfinished restores in {}: {err}",
                escaped_path(dir)
            );
            return;
        }
    };
    let me = crate::folder::untrusted::effective_uid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().starts_with(PARTIAL_PREFIX.as_bytes()) {
            continue;
        }
        let path = entry.path();
        // Never through a symlink, never blocking on a FIFO, only files this user could have
        // written: anything else with that name is not ours to remove.
        let Ok(file) = crate::folder::untrusted::open_regular(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        if meta.uid() != me {
            continue;
        }
        if lock(&file).is_err() {
            info!(
                "{} is being written by another restore; left alone",
                escaped_path(&path)
            );
            continue;
        }
        // Still the file we locked, not one renamed there meanwhile.
        let same = fs::symlink_metadata(&path)
            .is_ok_and(|now| now.dev() == meta.dev() && now.ino() == meta.ino());
        if !same {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => warn!(
                "removed {}, left by a restore that was killed before it finished",
                escaped_path(&path)
            ),
            Err(err) => warn!(
                "cannot remove {}, left by a restore that was killed: {err}",
                escaped_path(&path)
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests lay out folders by hand
mod tests {
    use super::*;
    use crate::test_fixtures::names_in;

    #[test]
    fn partial_names_are_recognisable_and_fit() {
        let name = partial_name("vm.raw");
        assert!(name.starts_with(PARTIAL_PREFIX), "{name}");
        assert!(name.ends_with(".vm.raw"), "{name}");
        assert_eq!(name.len(), PARTIAL_PREFIX.len() + 8 + 7);
        assert_eq!(partial_name(&"x".repeat(255)).len(), 255);
    }

    #[test]
    fn only_unlocked_partials_of_ours_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vm.raw");
        // A restore in progress: its partial is locked and stays.
        let running = PartialFile::create(&target).unwrap();
        let running_name = running
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        // What a killed restore leaves: a partial nobody holds.
        let killed = dir.path().join(format!("{PARTIAL_PREFIX}dead.vm.raw"));
        fs::write(&killed, b"half an image").unwrap();
        // Not ours: a symlink and a folder with the prefix, and another user's file.
        let link = dir.path().join(format!("{PARTIAL_PREFIX}link"));
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        fs::create_dir(dir.path().join(format!("{PARTIAL_PREFIX}dir"))).unwrap();
        let foreign = dir.path().join(format!("{PARTIAL_PREFIX}foreign"));
        fs::write(&foreign, b"").unwrap();
        let root = crate::folder::untrusted::effective_uid() == 0;
        if root {
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        }
        remove_stale_partials(dir.path());
        let mut expected = vec![
            format!("{PARTIAL_PREFIX}dir"),
            format!("{PARTIAL_PREFIX}link"),
            running_name.clone(),
        ];
        if root {
            expected.insert(1, format!("{PARTIAL_PREFIX}foreign"));
        }
        expected.sort();
        assert_eq!(names_in(dir.path()), expected);
        // Dropped without commit: removed at once.
        drop(running);
        assert!(!dir.path().join(&running_name).exists());
    }

    #[test]
    fn a_partial_never_replaces_what_appeared_at_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vm.raw");
        let partial = PartialFile::create(&target).unwrap();
        fs::write(&target, b"someone else's").unwrap();
        let err = partial.commit().unwrap_err();
        assert!(format!("{err:#}").contains("File exists"), "{err:#}");
        assert_eq!(fs::read(&target).unwrap(), b"someone else's");
        assert_eq!(names_in(dir.path()), ["vm.raw"]);
    }
}

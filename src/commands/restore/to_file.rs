//! Restore into a new local file (`--to-file`), with no cluster at all: the point rebuilt into a
//! sparse raw file under a name of its own ([`PARTIAL_PREFIX`]), renamed to the target only
//! when complete.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use super::steps::{Action, Step};
use super::{Say, Target};
use crate::folder::chain::FolderFile;
use crate::folder::read::Limits;
use crate::folder::rebuild::{self, TargetFailed};
use crate::interrupt;
use crate::output::escaped_path;

/// Names of `--to-file` targets being written: `.cephbackup-restore.<random>.<target name>`.
pub const PARTIAL_PREFIX: &str = ".cephbackup-restore.";
/// The longest file name most filesystems accept.
const NAME_MAX: usize = 255;

/// Rebuilds the point as a new file at `path`, each step printed as it starts; nothing appears
/// there unless it succeeds.
pub(super) fn into_file<'a>(
    path: &Path,
    folder: &Path,
    steps: &[Step<'a>],
    limits: &Limits,
    say: Say,
    failed_at: &mut Option<&'a FolderFile>,
) -> Result<usize> {
    let shown = escaped_path(path);
    let partial = Partial::create(path)?;
    let target = Target::File(path.to_path_buf());
    let mut checked = 0;
    for step in steps {
        interrupt::check()?;
        say.line(&step.describe(folder, &target));
        step.log();
        let Action::Rebuild = step.action else {
            bail!("an image step in a file restore (a bug)");
        };
        *failed_at = Some(step.link);
        checked += usize::from(rebuild::apply_link(
            folder,
            step.link,
            limits,
            &partial.file,
            &shown,
        )?);
        *failed_at = None;
    }
    rebuild::sync(&partial.file, &shown)?;
    partial.commit()?;
    Ok(checked)
}

/// A `--to-file` target being written: a file named [`PARTIAL_PREFIX`]… in the target's folder,
/// locked with flock for as long as this process has it open, removed unless committed. When the
/// process is killed outright the lock goes with it, which is how [`remove_stale_partials`]
/// tells a leftover from a file another restore is still writing.
struct Partial {
    file: File,
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Partial {
    fn create(target: &Path) -> Result<Partial> {
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
            return Ok(Partial {
                file,
                path,
                target: target.to_path_buf(),
                committed: false,
            });
        }
        Err(cannot(io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    /// Syncs the file and gives it the target's name, never replacing anything there.
    fn commit(mut self) -> Result<()> {
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

impl Drop for Partial {
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
mod tests {
    use super::*;
    use crate::cluster::process::CommandLine;
    use crate::commands::chain::S0;
    use crate::commands::restore::steps::file_steps;
    use crate::folder::chain::Layout;

    #[test]
    fn partial_names_are_recognisable_and_fit() {
        let name = partial_name("vm.raw");
        assert!(name.starts_with(PARTIAL_PREFIX), "{name}");
        assert!(name.ends_with(".vm.raw"), "{name}");
        assert_eq!(name.len(), PARTIAL_PREFIX.len() + 8 + 7);
        assert_eq!(partial_name(&"x".repeat(255)).len(), 255);
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_unlocked_partials_of_ours_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("vm.raw");
        // A restore in progress: its partial is locked and stays.
        let running = Partial::create(&target).unwrap();
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
        let partial = Partial::create(&target).unwrap();
        fs::write(&target, b"someone else's").unwrap();
        let err = partial.commit().unwrap_err();
        assert!(format!("{err:#}").contains("File exists"), "{err:#}");
        assert_eq!(fs::read(&target).unwrap(), b"someone else's");
        assert_eq!(names_in(dir.path()), ["vm.raw"]);
    }

    /// A folder holding a full backup of `len` bytes of data, and its layout.
    fn one_full(len: usize) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("vm@{S0}.full");
        let data: Vec<u8> = (0..len)
            .map(|i| u8::try_from(i % 251).unwrap() | 1)
            .collect();
        fs::write(dir.path().join(&name), data).unwrap();
        (dir, Layout::build("vm", &[name]))
    }

    /// Restores the newest point of `layout` (backups in `backups`) into the file `target`;
    /// the error the restore ends with.
    fn into_file_failing(backups: &Path, layout: &Layout, target: &Path) -> anyhow::Error {
        let route = layout.route(layout.points()[0]).unwrap();
        into_file(
            target,
            backups,
            &file_steps(&route),
            &Limits::default(),
            Say::Stdout,
            &mut None,
        )
        .unwrap_err()
    }

    #[test]
    fn a_target_folder_that_is_missing_is_named_as_such() {
        let (backups, layout) = one_full(8192);
        let target = backups.path().join("no/such/folder/vm.raw");
        let err = into_file_failing(backups.path(), &layout, &target);
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot create {}: cannot create a file in {}: No such file or directory (os \
                 error 2)",
                target.display(),
                target.parent().unwrap().display()
            )
        );
    }

    /// A tmpfs mounted for one test, unmounted when dropped; `None` where mounting is not allowed.
    struct Mount(tempfile::TempDir);

    impl Mount {
        fn tmpfs(options: &str) -> Option<Mount> {
            let dir = tempfile::tempdir().unwrap();
            let mounted = CommandLine::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(dir.path())
                .run()
                .is_ok();
            if !mounted {
                eprintln!("skipped: cannot mount a tmpfs here");
                return None;
            }
            Some(Mount(dir))
        }
    }

    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = CommandLine::new("umount").arg(self.0.path()).run();
        }
    }

    #[test]
    fn a_full_target_filesystem_is_blamed_on_the_target() {
        let (backups, layout) = one_full(4 << 20);
        let Some(mount) = Mount::tmpfs("size=1m") else {
            return;
        };
        let target = mount.0.path().join("vm.raw");
        let err = into_file_failing(backups.path(), &layout, &target);
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot write {}: No space left on device (os error 28)",
                target.display()
            )
        );
        // Nothing is left on the full filesystem.
        assert_eq!(names_in(mount.0.path()), Vec::<String>::new());
    }

    #[test]
    fn a_read_only_target_folder_is_named_with_its_cause() {
        let (backups, layout) = one_full(8192);
        let Some(mount) = Mount::tmpfs("ro,size=1m") else {
            return;
        };
        let target = mount.0.path().join("vm.raw");
        let err = into_file_failing(backups.path(), &layout, &target);
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot create {}: cannot create a file in {}: Read-only file system (os error \
                 30)",
                target.display(),
                mount.0.path().display()
            )
        );
    }
}

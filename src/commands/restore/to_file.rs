//! Restore into a new local file (`--to-file`), with no cluster at all: the point rebuilt into a
//! sparse raw file written as a [`PartialFile`] (under a name of its own), renamed to the target
//! only when complete.

use std::path::Path;

use anyhow::{bail, Result};

use super::steps::{RestoreAction, RestoreStep};
use super::{Say, Target};
use crate::folder::chain::FolderFile;
use crate::folder::door::{Door, PartialFile};
use crate::folder::format::rebuild;
use crate::folder::read::Limits;
use crate::interrupt;
use crate::output::escaped_path;

/// Rebuilds the point as a new file at `path`, each step printed as it starts; nothing appears
/// there unless it succeeds.
pub(super) fn into_file<'a>(
    path: &Path,
    folder: &dyn Door,
    steps: &[RestoreStep<'a>],
    limits: &Limits,
    say: Say,
    failed_at: &mut Option<&'a FolderFile>,
) -> Result<usize> {
    let shown = escaped_path(path);
    let partial = PartialFile::create(path)?;
    let target = Target::File(path.to_path_buf());
    let mut checked = 0;
    for step in steps {
        interrupt::check()?;
        say.line(&step.describe(&folder.location(), &target));
        step.log();
        let RestoreAction::Rebuild = step.action else {
            bail!("an image step in a file restore (a bug)");
        };
        *failed_at = Some(step.link);
        checked += usize::from(rebuild::apply_link(
            folder,
            step.link,
            limits,
            partial.file(),
            &shown,
        )?);
        *failed_at = None;
    }
    rebuild::sync(partial.file(), &shown)?;
    partial.commit()?;
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::process::CommandLine;
    use crate::commands::chain::S0;
    use crate::commands::restore::steps::file_steps;
    use crate::folder::chain::Layout;
    use crate::test_fixtures::{full_file, names_in};
    use std::fs;

    /// A folder holding a full backup of `len` bytes of data, and its layout.
    fn one_full(len: usize) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let name = full_file(S0);
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
            &crate::folder::door::LocalFolder::at(backups),
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

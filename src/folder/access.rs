//! Who may read what a backup writes in its destination.
//!
//! Backup files are whole disk images, so by default only their owner may read them: files 0600,
//! folders 0700. A section with `file group = NAME` lets one group read them too (files 0640,
//! folders 0750, owned by that group), for instance the user an offsite copy runs as. Nothing is
//! ever readable by all. The group is applied on the open handle of a file before it takes its
//! final name, so a file never appears with more or less access than it is meant to have.

use std::fs::{DirBuilder, File, Permissions};
use std::io;
use std::os::unix::fs::{fchown, DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;

use crate::folder::untrusted;

/// A group that may read the backups: its name (for messages) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGroup {
    pub name: String,
    pub gid: u32,
}

impl FileGroup {
    /// The group called `name` (or, when no group has that name, with that number), from the
    /// system's group database.
    pub fn lookup(name: &str) -> Result<FileGroup, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("no group named (leave the key out to keep backups private)".into());
        }
        match gid_of(name) {
            Ok(Some(gid)) => Ok(FileGroup {
                name: name.to_string(),
                gid,
            }),
            Ok(None) => match name.parse::<u32>() {
                Ok(gid) => Ok(FileGroup {
                    name: name.to_string(),
                    gid,
                }),
                Err(_) => Err(format!(
                    "unknown group {name:?} (`getent group {name}` finds nothing); create it or \
                     name an existing one"
                )),
            },
            Err(err) => Err(format!("cannot look up group {name:?}: {err}")),
        }
    }
}

/// How new files and folders of a destination are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileAccess {
    /// The group that may read them; `None`: their owner only.
    group: Option<u32>,
}

impl FileAccess {
    /// Readable by the owner only (the default).
    pub const PRIVATE: FileAccess = FileAccess { group: None };

    /// Readable by the owner and the group `gid`.
    pub fn group(gid: u32) -> FileAccess {
        FileAccess { group: Some(gid) }
    }

    pub fn file_mode(self) -> u32 {
        if self.group.is_some() {
            0o640
        } else {
            0o600
        }
    }

    pub fn folder_mode(self) -> u32 {
        if self.group.is_some() {
            0o750
        } else {
            0o700
        }
    }

    /// Gives a file being written (by its handle) its group and mode. A private file is left as
    /// it was created (0600, as temporary files are).
    #[allow(clippy::disallowed_methods)] // the local door's group and mode of what it writes
    pub fn apply_to_file(self, file: &File) -> io::Result<()> {
        let Some(gid) = self.group else {
            return Ok(());
        };
        fchown(file, None, Some(gid))?;
        // After the chown, which may clear set-id bits; the mode is exact whatever the umask.
        file.set_permissions(Permissions::from_mode(self.file_mode()))
    }

    /// Gives a file already in place its group and mode: never through a symlink, and only a
    /// regular file of this user (what the tool itself wrote).
    pub fn apply_to_path(self, path: &Path) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let file = untrusted::open_regular(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        self.apply_owned(&file, path)
    }

    /// Creates the folder `path` with this access; `Ok(false)` when something exists there
    /// already (the caller says what it must be). A folder this user owns that exists already
    /// gets this access's group and mode too, so setting the key opens the existing tree.
    #[allow(clippy::disallowed_methods)] // the local door's folders
    pub fn create_folder(self, path: &Path) -> Result<bool> {
        match DirBuilder::new().mode(self.folder_mode()).create(path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot create {}", path.display()))
            }
        }
        self.apply_to_folder(path)?;
        Ok(true)
    }

    /// Gives an existing folder of this user its group and mode (nothing for a private access:
    /// the folders it made are 0700 already, and the others are not its to change).
    #[allow(clippy::disallowed_methods)] // the local door's group and mode of its folders
    pub fn apply_to_folder(self, path: &Path) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let folder = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("cannot open folder {}", path.display()))?;
        self.apply_owned(&folder, path)
    }

    #[allow(clippy::disallowed_methods)] // the local door's group and mode of what it writes
    fn apply_owned(self, handle: &File, path: &Path) -> Result<()> {
        let Some(gid) = self.group else {
            return Ok(());
        };
        let meta = handle
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.uid() != untrusted::effective_uid() {
            return Ok(());
        }
        let mode = if meta.is_dir() {
            self.folder_mode()
        } else {
            self.file_mode()
        };
        if meta.gid() == gid && meta.mode() & 0o7777 == mode {
            return Ok(());
        }
        fchown(handle, None, Some(gid))
            .and_then(|()| handle.set_permissions(Permissions::from_mode(mode)))
            .with_context(|| {
                format!(
                    "cannot give {} to group {gid} (`file group`; the user running cephbackup \
                     must be root or a member of it)",
                    path.display()
                )
            })
    }
}

/// The id of the group called `name`, `None` when there is none. Asked of the system's group
/// database (NSS: /etc/group, LDAP …) through getgrnam_r(3).
fn gid_of(name: &str) -> io::Result<Option<u32>> {
    // nix takes a name with a NUL byte for an unknown group; it is an error here, as before.
    if name.contains('\0') {
        return Err(io::Error::other("a NUL byte in the name"));
    }
    match nix::unistd::Group::from_name(name) {
        Ok(group) => Ok(group.map(|group| group.gid.as_raw())),
        // Some libcs say "not found" with these instead of a null result.
        Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM) => Ok(None),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_looked_up_by_name_and_unknown_ones_refused() {
        let root = FileGroup::lookup("root").unwrap();
        assert_eq!(root.gid, 0);
        assert_eq!(FileGroup::lookup("12345").unwrap().gid, 12345);
        let err = FileGroup::lookup("no-such-group-here").unwrap_err();
        assert!(
            err.contains("unknown group \"no-such-group-here\""),
            "{err}"
        );
        assert!(FileGroup::lookup(" ").is_err());
    }

    #[test]
    fn a_group_gets_read_access_and_nobody_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        let private = dir.path().join("private");
        assert!(FileAccess::PRIVATE.create_folder(&private).unwrap());
        assert_eq!(mode(&private), 0o700);
        assert!(!FileAccess::PRIVATE.create_folder(&private).unwrap());
        // The process's own primary group: any user may give its files to it.
        let gid = rustix::process::getegid().as_raw();
        let shared = FileAccess::group(gid);
        let folder = dir.path().join("shared");
        assert!(shared.create_folder(&folder).unwrap());
        assert_eq!(mode(&folder), 0o750);
        // An existing folder of ours is opened up too.
        shared.apply_to_folder(&private).unwrap();
        assert_eq!(mode(&private), 0o750);
        let path = folder.join("f");
        let file = File::create(&path).unwrap();
        file.set_permissions(Permissions::from_mode(0o600)).unwrap();
        shared.apply_to_file(&file).unwrap();
        assert_eq!(mode(&path), 0o640);
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), gid);
        // Never through a symlink.
        let link = folder.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(shared.apply_to_path(&link).is_err());
    }
}

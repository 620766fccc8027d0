//! The door on a local filesystem: the one place of the crate that changes files (each call that
//! does carries `#[allow(clippy::disallowed_methods)]`).
//!
//! A file only ever appears under its final name complete and synced: it is written to a
//! temporary name in the same folder (so the rename cannot cross filesystems), flushed to disk,
//! renamed without replacing anything unless asked to, and the folder is synced so the rename
//! survives a crash. Files are created readable by their owner only (they are whole disk images)
//! and folders the same, unless a section's `file group` lets a group read them too
//! ([`FileAccess`]). The pool and image folders are never read or written through a link.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tempfile::NamedTempFile;

use super::{Door, Opened, Published, Sharing, Staged};
use crate::folder::access::FileAccess;
use crate::folder::chain::FolderEntry;
use crate::folder::format::write::checksum_line;
use crate::folder::naming;
use crate::folder::naming::{checksum_name, TEMP_PREFIX};
use crate::folder::untrusted::{self, kind_of, EntryKind};

/// The mode of a file everyone may read ([`Sharing::Everyone`]).
const READABLE_BY_ALL: u32 = 0o644;

/// A folder on a local filesystem: `<destination>/<pool>/<image>` ([`LocalFolder::image`]) or
/// any one folder ([`LocalFolder::at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFolder {
    root: PathBuf,
    /// The folders below `root` that lead to this one, outermost first; created on demand and
    /// never followed when they are links.
    below: Vec<String>,
    access: FileAccess,
}

impl LocalFolder {
    /// The folder of `image` of `pool` (`pool/namespace` for a namespace's image) in the
    /// destination `root`.
    pub fn image(root: &Path, pool: &str, image: &str) -> LocalFolder {
        let mut below = naming::pool_path(pool);
        below.push(image.to_string());
        LocalFolder {
            root: root.to_path_buf(),
            below,
            access: FileAccess::PRIVATE,
        }
    }

    /// The folder of `pool` (or `pool/namespace`) in the destination `root`, which holds its
    /// images' folders.
    pub fn pool(root: &Path, pool: &str) -> LocalFolder {
        LocalFolder {
            root: root.to_path_buf(),
            below: naming::pool_path(pool),
            access: FileAccess::PRIVATE,
        }
    }

    /// The folder `path` itself (a destination's top, a restore target's folder).
    pub fn at(path: &Path) -> LocalFolder {
        LocalFolder {
            root: path.to_path_buf(),
            below: Vec::new(),
            access: FileAccess::PRIVATE,
        }
    }

    /// The same folder, whose folders and files are created with `access`.
    #[must_use]
    pub fn with_access(mut self, access: FileAccess) -> LocalFolder {
        self.access = access;
        self
    }

    pub fn path(&self) -> PathBuf {
        self.below.iter().fold(self.root.clone(), |p, l| p.join(l))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// The folders below the root, outermost first.
    fn levels(&self) -> Vec<PathBuf> {
        let mut at = self.root.clone();
        self.below
            .iter()
            .map(|level| {
                at.push(level);
                at.clone()
            })
            .collect()
    }

    /// Opens the regular file `name` for reading and writing, to change it in place.
    pub fn open_in_place(&self, name: &str) -> Result<File> {
        let path = self.file(name);
        #[allow(clippy::disallowed_methods)] // the local door changes a file in place
        let opened = untrusted::open_with(OpenOptions::new().read(true).write(true), &path);
        opened.with_context(|| format!("cannot open {}", path.display()))
    }

    /// Renames `from` to `to` in the folder and syncs the folder: how a file being changed in
    /// place takes a hidden working name and, finished, its final one.
    pub fn rename(&self, from: &str, to: &str, failed: impl FnOnce() -> String) -> Result<()> {
        #[allow(clippy::disallowed_methods)] // the local door's rename in place
        let renamed = fs::rename(self.file(from), self.file(to));
        renamed.with_context(failed)?;
        self.sync()
    }

    /// Removes each of `names` that is there, then syncs the folder once.
    pub fn remove_present(&self, names: &[&str]) -> Result<()> {
        for name in names {
            let path = self.file(name);
            #[allow(clippy::disallowed_methods)] // the local door removes files
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot remove {}", path.display()))
                }
            }
        }
        self.sync()
    }

    /// Syncs the folder, so that names given or taken in it survive a crash.
    pub fn sync(&self) -> Result<()> {
        sync_dir(&self.path())
    }

    /// A new file for `name`, staged out of sight ([`Door::stage`]): a local folder always
    /// stages one.
    pub fn stage(&self, name: &str) -> Result<PendingFile> {
        Ok(PendingFile::create(&self.path(), name)?.with_access(self.access))
    }
}

impl Door for LocalFolder {
    fn location(&self) -> PathBuf {
        self.path()
    }

    fn access(&self) -> FileAccess {
        self.access
    }

    fn kind(&self) -> io::Result<EntryKind> {
        // Followed when a link: a destination may be a link to the backup disk's mount point.
        fs::metadata(self.path()).map(|meta| EntryKind::of(meta.file_type()))
    }

    /// A pool or image folder that is a symlink or not a folder is refused: the tool never reads
    /// or writes through a link someone else may have planted in the destination.
    fn list(&self) -> Result<Vec<FolderEntry>> {
        for level in self.levels() {
            match kind_of(&level) {
                Ok(EntryKind::Directory) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot read {}", level.display()))
                }
                Ok(kind) => bail!("{}", not_a_folder(&level, kind)),
            }
        }
        let path = self.path();
        let entries =
            fs::read_dir(&path).with_context(|| format!("cannot list {}", path.display()))?;
        let mut listed = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            let meta = entry
                .metadata()
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            let kind = EntryKind::of(meta.file_type());
            let (name, exact_name) = match entry.file_name().into_string() {
                Ok(name) => (name, true),
                Err(raw) => (raw.to_string_lossy().into_owned(), false),
            };
            listed.push(FolderEntry {
                name,
                kind,
                size: if kind == EntryKind::File {
                    meta.len()
                } else {
                    0
                },
                exact_name,
            });
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    fn kind_of(&self, name: &str) -> io::Result<EntryKind> {
        kind_of(&self.file(name))
    }

    fn open(&self, name: &str) -> io::Result<Opened> {
        let file = untrusted::open_regular(&self.file(name))?;
        // Opened as a regular file, so its length is what will be read (the holes of a sparse
        // file read as zeros, and cost time all the same).
        let len = file.metadata()?.len();
        Ok(Opened {
            reader: Box::new(file),
            len,
        })
    }

    fn read_own(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        untrusted::read_own(&self.file(name), limit)
    }

    fn open_file(&self, name: &str) -> Option<io::Result<File>> {
        Some(untrusted::open_regular(&self.file(name)))
    }

    /// Creates the pool and image folders (0700, or 0750 for a group). The destination itself
    /// must exist: when a backup disk failed to mount, creating it would quietly fill the root
    /// filesystem instead. A pool or image folder that is a symlink is refused, never written
    /// through.
    fn create(&self) -> Result<()> {
        if !self.root.is_dir() {
            bail!(
                "destination directory {} does not exist{}",
                self.root.display(),
                crate::folder::record::UNMOUNTED_HINT
            );
        }
        for level in self.levels() {
            if self.access.create_folder(&level)? {
                sync_dir(level.parent().unwrap_or(&self.root))?;
                continue;
            }
            match kind_of(&level) {
                // One made before `file group` was set is opened to the group too.
                Ok(EntryKind::Directory) => self.access.apply_to_folder(&level)?,
                Ok(kind) => bail!("{}", not_a_folder(&level, kind)),
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot read {}", level.display()))
                }
            }
        }
        Ok(())
    }

    fn stage(&self, name: &str) -> Result<Option<Staged>> {
        LocalFolder::stage(self, name).map(|file| Some(Staged::File(file)))
    }

    fn scratch(&self) -> Result<File> {
        let dir = self.path();
        // Never named (O_TMPFILE where the filesystem has it, else unlinked at once): nothing is
        // left behind even if we are killed while it fills.
        #[allow(clippy::disallowed_methods)] // the local door's scratch space
        let scratch = tempfile::tempfile_in(&dir);
        scratch.with_context(|| format!("cannot create a temporary file in {}", dir.display()))
    }

    fn publish(&self, file: Staged, sha256: &str, replace: bool) -> Result<Published> {
        let Staged::File(file) = file else {
            bail!("internal error: a local folder was given a stream to publish");
        };
        let name = file.name().to_string();
        let checksum = checksum_name(&name);
        let line = checksum_line(sha256, &name);
        // A checksum left without its file by a crash is simply replaced when that file is
        // written again.
        self.put(&checksum, line.as_bytes(), Sharing::Folder)?;
        let committed = if replace {
            file.commit_replacing()
        } else {
            file.commit()
        };
        match committed {
            Ok(size) => Ok(Published {
                size,
                checksum_size: line.len() as u64,
            }),
            Err(err) => {
                // Never leave our checksum beside a file we did not write.
                let _ = self.remove(&checksum);
                Err(err)
            }
        }
    }

    fn put(&self, name: &str, bytes: &[u8], sharing: Sharing) -> Result<()> {
        let path = self.file(name);
        let mut pending = PendingFile::create(&self.path(), name)?;
        if sharing == Sharing::Folder {
            pending = pending.with_access(self.access);
        }
        let file = pending.file();
        file.write_all(bytes)
            .and_then(|()| match sharing {
                Sharing::Everyone => set_mode(file, READABLE_BY_ALL),
                Sharing::Private | Sharing::Folder => Ok(()),
            })
            .with_context(|| format!("cannot write {}", path.display()))?;
        pending.commit_replacing()?;
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<bool> {
        let path = self.file(name);
        #[allow(clippy::disallowed_methods)] // the local door removes files
        let removed = fs::remove_file(&path);
        removed.with_context(|| format!("cannot remove {}", path.display()))?;
        self.sync()?;
        Ok(true)
    }

    fn in_place(&self) -> Option<&LocalFolder> {
        Some(self)
    }
}

/// Gives an open file exactly `mode`, whatever the umask.
pub fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    #[allow(clippy::disallowed_methods)] // the local door sets modes of what it writes
    file.set_permissions(fs::Permissions::from_mode(mode))
}

fn not_a_folder(path: &Path, kind: EntryKind) -> String {
    format!(
        "{} is {}, not a folder; the tool does not write or read through it",
        path.display(),
        kind.described()
    )
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync folder {}", dir.display()))
}

/// A file being written under a temporary name; it disappears unless [`PendingFile::commit`]ed.
/// The local door's writer, also used for the few files outside any destination (the host's
/// state, the metrics file).
pub struct PendingFile {
    temp: NamedTempFile,
    name: String,
    final_path: PathBuf,
    access: FileAccess,
}

impl PendingFile {
    pub fn create(dir: &Path, final_name: &str) -> Result<PendingFile> {
        let final_path = dir.join(final_name);
        #[allow(clippy::disallowed_methods)] // the local door's temporary files
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        Ok(PendingFile {
            temp,
            name: final_name.to_string(),
            final_path,
            access: FileAccess::PRIVATE,
        })
    }

    /// The same file, given `access` before it takes its final name (private by default).
    #[must_use]
    pub fn with_access(mut self, access: FileAccess) -> PendingFile {
        self.access = access;
        self
    }

    /// The name it takes when committed.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Syncs the data, gives the file its final name (never replacing an existing file) and
    /// syncs the folder. Returns the size of the file.
    pub fn commit(self) -> Result<u64> {
        self.finish(false)
    }

    /// Like [`PendingFile::commit`], but replaces a file already under the final name.
    pub fn commit_replacing(self) -> Result<u64> {
        self.finish(true)
    }

    fn finish(self, replace: bool) -> Result<u64> {
        let final_path = self.final_path;
        let file = self.temp.as_file();
        self.access.apply_to_file(file).with_context(|| {
            format!("cannot set the group and mode of {}", final_path.display())
        })?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", final_path.display()))?;
        let size = file.metadata()?.len();
        #[allow(clippy::disallowed_methods)] // the local door gives finished files their name
        let persisted = if replace {
            self.temp.persist(&final_path)
        } else {
            self.temp.persist_noclobber(&final_path)
        };
        persisted.map_err(|e| e.error).with_context(|| {
            format!("cannot move the finished file to {}", final_path.display())
        })?;
        if let Some(dir) = final_path.parent() {
            sync_dir(dir)?;
        }
        Ok(size)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests lay out folders by hand
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_uncommitted_file_leaves_nothing_and_commit_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        drop(PendingFile::create(dir.path(), "x").unwrap());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        fs::write(dir.path().join("x"), b"old").unwrap();
        let mut pending = PendingFile::create(dir.path(), "x").unwrap();
        pending.file().write_all(b"new").unwrap();
        assert!(pending.commit().is_err());
        assert_eq!(fs::read(dir.path().join("x")).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn publishing_writes_the_checksum_first_and_takes_it_back_when_the_file_cannot_go() {
        let dir = tempfile::tempdir().unwrap();
        let folder = LocalFolder::at(dir.path());
        let mut staged = folder.stage("f").unwrap();
        staged.file().write_all(b"abc").unwrap();
        // sha256("abc")
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let published = folder.publish(Staged::File(staged), sha, false).unwrap();
        assert_eq!(published.size, 3);
        assert_eq!(
            fs::read_to_string(dir.path().join("f.sha256")).unwrap(),
            format!("{sha}  f\n")
        );
        assert_eq!(published.checksum_size, 68);
        // A file in the way: nothing is replaced, and no checksum is left beside it.
        fs::write(dir.path().join("g"), b"theirs").unwrap();
        let staged = folder.stage("g").unwrap();
        assert!(folder.publish(Staged::File(staged), sha, false).is_err());
        assert_eq!(fs::read(dir.path().join("g")).unwrap(), b"theirs");
        assert!(!dir.path().join("g.sha256").exists());
        // Asked to replace it (an unproven file written again), it does.
        let staged = folder.stage("g").unwrap();
        folder.publish(Staged::File(staged), sha, true).unwrap();
        assert_eq!(fs::read(dir.path().join("g")).unwrap(), b"");
    }

    #[test]
    fn small_files_are_replaced_whole_with_the_sharing_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let folder = LocalFolder::at(dir.path());
        let mode = |name: &str| {
            fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        folder.put("a", b"1", Sharing::Everyone).unwrap();
        folder.put("a", b"22", Sharing::Everyone).unwrap();
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"22");
        assert_eq!(mode("a"), 0o644);
        folder.put("b", b"1", Sharing::Private).unwrap();
        assert_eq!(mode("b"), 0o600);
        folder.remove("b").unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_destination_must_exist_but_folders_below_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = LocalFolder::image(&dir.path().join("not-mounted"), "rbd", "img");
        assert!(missing
            .create()
            .unwrap_err()
            .to_string()
            .contains("not-mounted"));
        assert!(!dir.path().join("not-mounted").exists());
        let image = LocalFolder::image(dir.path(), "rbd", "my disk");
        assert_eq!(image.list().unwrap(), Vec::<FolderEntry>::new());
        image.create().unwrap();
        let mode = fs::metadata(image.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn entries_say_what_they_are_and_linked_folders_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let image = LocalFolder::image(dir.path(), "rbd", "vm");
        image.create().unwrap();
        fs::write(image.file("a"), b"12345").unwrap();
        fs::create_dir(image.file("b")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", image.file("c")).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"d\xff");
        fs::write(image.path().join(odd), b"").unwrap();
        let listed = image.list().unwrap();
        let seen: Vec<(&str, EntryKind, u64, bool)> = listed
            .iter()
            .map(|e| (e.name.as_str(), e.kind, e.size, e.exact_name))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", EntryKind::File, 5, true),
                ("b", EntryKind::Directory, 0, true),
                ("c", EntryKind::Symlink, 0, true),
                ("d\u{fffd}", EntryKind::File, 0, false),
            ]
        );
        assert!(!listed[3].is_usable_file());

        // A pool folder planted as a link to elsewhere is neither listed nor written through.
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("ssd")).unwrap();
        let linked = LocalFolder::image(dir.path(), "ssd", "vm");
        for err in [linked.list().unwrap_err(), linked.create().unwrap_err()] {
            assert!(
                err.to_string().contains("is a symbolic link, not a folder"),
                "{err}"
            );
        }
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        // A dangling one too, with the real cause rather than "File exists".
        std::os::unix::fs::symlink(dir.path().join("absent"), dir.path().join("hdd")).unwrap();
        let err = LocalFolder::image(dir.path(), "hdd", "vm")
            .create()
            .unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
    }
}

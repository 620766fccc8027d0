//! The backup folders on disk: where an image's files live, and how a file gets there safely.
//!
//! A backup file only ever appears under its final name complete and synced: it is written to a
//! temporary name in the same folder (so the rename cannot cross filesystems), flushed to disk,
//! renamed without replacing anything, and the folder is synced so the rename survives a crash.
//! Files are created readable by their owner only (they are whole disk images) and folders the same,
//! unless a section's `file group` lets a group read them too ([`FileAccess`]).
//!
//! Writing streams: an export is copied from `rbd` to disk in bounded chunks, whatever the image
//! size. Raw full images keep their holes (all-zero blocks are skipped, as `rbd export` does when it
//! writes a file itself), and compressed files are a tar archive with one member, compressed on
//! the fly ([`crate::folder::archive`]).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::folder::access::FileAccess;
pub use crate::folder::archive::{
    write_archive, Compressor, DataOfExtents, Member, SparseMap, SparseMapBuilder,
};
pub use crate::folder::chain::FolderEntry;
use crate::folder::naming::TEMP_PREFIX;
use crate::folder::shared::EntryKind;
use crate::folder::sparse::SparseWriter;
use crate::folder::untrusted::kind_of;

const COPY_CHUNK: usize = 1 << 20;

/// `<destination>/<pool>/<image>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDir {
    root: PathBuf,
    pool: String,
    image: String,
    access: FileAccess,
}

impl ImageDir {
    pub fn new(root: &Path, pool: &str, image: &str) -> ImageDir {
        ImageDir {
            root: root.to_path_buf(),
            pool: pool.to_string(),
            image: image.to_string(),
            access: FileAccess::PRIVATE,
        }
    }

    /// The same folder, whose folders and files are created with `access`.
    #[must_use]
    pub fn with_access(mut self, access: FileAccess) -> ImageDir {
        self.access = access;
        self
    }

    /// Who may read what is written here.
    pub fn access(&self) -> FileAccess {
        self.access
    }

    pub fn path(&self) -> PathBuf {
        self.root.join(&self.pool).join(&self.image)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// The folders below the destination, outermost first.
    fn levels(&self) -> [PathBuf; 2] {
        [self.root.join(&self.pool), self.path()]
    }

    /// The entries of the folder, sorted by name; none when it does not exist yet. A pool or image
    /// folder that is a symlink or not a folder is refused: the tool never reads or writes
    /// through a link someone else may have planted in the destination.
    pub fn list(&self) -> Result<Vec<FolderEntry>> {
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

    /// Creates the pool and image folders (0700, or 0750 for a group). The destination itself must exist: when a backup
    /// disk failed to mount, creating it would quietly fill the root filesystem instead. A pool or
    /// image folder that is a symlink is refused, never written through.
    pub fn create(&self) -> Result<()> {
        if !self.root.is_dir() {
            bail!(
                "destination directory {} does not exist{}",
                self.root.display(),
                crate::folder::shared::UNMOUNTED_HINT
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

    /// Removes a regular file of the folder (never a folder, and a link only as itself).
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.file(name);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        sync_dir(&self.path())
    }
}

fn not_a_folder(path: &Path, kind: EntryKind) -> String {
    format!(
        "{} is {}, not a folder; the tool does not write or read through it",
        path.display(),
        kind.described()
    )
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync folder {}", dir.display()))
}

/// A file being written under a temporary name; it disappears unless [`PendingFile::commit`]ed.
pub struct PendingFile {
    temp: NamedTempFile,
    final_path: PathBuf,
    access: FileAccess,
}

impl PendingFile {
    pub fn create(dir: &Path, final_name: &str) -> Result<PendingFile> {
        let final_path = dir.join(final_name);
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        Ok(PendingFile {
            temp,
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

/// Passes a stream through while computing its SHA-256.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The lowercase hex digest of everything that passed.
    pub fn hex_digest(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A line of `sha256sum` output: `sha256sum -c` run in the file's folder checks it.
pub fn checksum_line(hex_digest: &str, file_name: &str) -> String {
    format!("{hex_digest}  {file_name}\n")
}

/// Writes `stream` to `file` as a raw file with holes; returns the stream length and the
/// SHA-256 of the file's bytes.
pub fn write_raw(stream: &mut impl Read, file: &mut File) -> io::Result<(u64, String)> {
    let mut sparse = SparseWriter::new(file)?;
    let mut hashing = Hashing::new(stream);
    // Reads of up to COPY_CHUNK (std's own buffer is 8 KiB): the sparse writer and the pipe
    // from `rbd` both do better with large writes.
    io::copy(
        &mut BufReader::with_capacity(COPY_CHUNK, &mut hashing),
        &mut sparse,
    )?;
    Ok((sparse.finish()?, hashing.hex_digest()))
}

/// Copies a stream of unknown length to a temporary file beside the final one, so it can then be
/// archived with its size known up front.
pub fn spool(stream: &mut impl Read, dir: &Path) -> Result<(File, u64)> {
    // Never named (O_TMPFILE where the filesystem has it, else unlinked at once): nothing is
    // left behind even if we are killed while it fills.
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let len = io::copy(&mut BufReader::with_capacity(COPY_CHUNK, stream), &mut file)?;
    file.rewind()?;
    Ok((file, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::naming::Compression;
    use chrono::Utc;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn raw_files_keep_holes_and_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 * 1024 * 1024 + 100];
        data[5000] = 1;
        data[2 * 1024 * 1024 + 7] = 2;
        let last = data.len() - 1;
        data[last] = 3;
        let mut pending = PendingFile::create(dir.path(), "img.full").unwrap();
        // Odd-sized reads exercise the partial-block path.
        let mut src = io::Cursor::new(&data).take(u64::MAX);
        let mut chunked = ChunkedReader(&mut src, 3001);
        let (len, digest) = write_raw(&mut chunked, pending.file()).unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(digest, Hashing::new(&data[..]).digest_of_all());
        assert_eq!(pending.commit().unwrap(), data.len() as u64);
        let path = dir.path().join("img.full");
        assert_eq!(fs::read(&path).unwrap(), data);
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 < 64 * 1024, "{} blocks", meta.blocks());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    impl<R: Read> Hashing<R> {
        fn digest_of_all(mut self) -> String {
            io::copy(&mut self, &mut io::sink()).unwrap();
            self.hex_digest()
        }
    }

    #[test]
    fn checksums_match_sha256sum() {
        // sha256 of "abc", as printed by sha256sum.
        let digest = Hashing::new(&b"abc"[..]).digest_of_all();
        assert_eq!(
            checksum_line(&digest, "x"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  x\n"
        );
    }

    struct ChunkedReader<'a, R>(&'a mut R, usize);
    impl<R: Read> Read for ChunkedReader<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

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
    fn tar_gz_member_has_the_bare_name_and_the_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut pending = PendingFile::create(dir.path(), "a.tar.gz").unwrap();
        let member = Member {
            name: "img@BACKUPUTC20170801T000000.full",
            size: data.len() as u64,
            mtime: Utc::now(),
            sparse: None,
        };
        let gzip = Compressor::new(Compression::Gzip, None, Some(2)).unwrap();
        let digest = write_archive(&mut &data[..], &member, &gzip, pending.file()).unwrap();
        pending.commit().unwrap();
        let on_disk = fs::read(dir.path().join("a.tar.gz")).unwrap();
        assert_eq!(digest, Hashing::new(&on_disk[..]).digest_of_all());
        let gz = flate2::read::GzDecoder::new(File::open(dir.path().join("a.tar.gz")).unwrap());
        let mut archive = tar::Archive::new(gz);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(
            entry.path().unwrap().to_str(),
            Some("img@BACKUPUTC20170801T000000.full")
        );
        let mut got = Vec::new();
        entry.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        drop(entry);
        assert!(entries.next().is_none());
    }

    #[test]
    fn tar_gz_refuses_a_stream_of_the_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        for (len, size) in [(10usize, 11u64), (12, 11)] {
            let mut pending = PendingFile::create(dir.path(), "a.tar.gz").unwrap();
            let member = Member {
                name: "m",
                size,
                mtime: Utc::now(),
                sparse: None,
            };
            let gzip = Compressor::new(Compression::Gzip, None, Some(2)).unwrap();
            let err = write_archive(&mut &vec![1u8; len][..], &member, &gzip, pending.file())
                .unwrap_err();
            assert!(err.to_string().contains("expected"), "{err}");
        }
    }

    #[test]
    fn the_destination_must_exist_but_folders_below_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ImageDir::new(&dir.path().join("not-mounted"), "rbd", "img");
        assert!(missing
            .create()
            .unwrap_err()
            .to_string()
            .contains("not-mounted"));
        assert!(!dir.path().join("not-mounted").exists());
        let image = ImageDir::new(dir.path(), "rbd", "my disk");
        assert_eq!(image.list().unwrap(), Vec::<FolderEntry>::new());
        image.create().unwrap();
        let mode = fs::metadata(image.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn entries_say_what_they_are_and_linked_folders_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let image = ImageDir::new(dir.path(), "rbd", "vm");
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
        let linked = ImageDir::new(dir.path(), "ssd", "vm");
        for err in [linked.list().unwrap_err(), linked.create().unwrap_err()] {
            assert!(
                err.to_string().contains("is a symbolic link, not a folder"),
                "{err}"
            );
        }
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        // A dangling one too, with the real cause rather than "File exists".
        std::os::unix::fs::symlink(dir.path().join("absent"), dir.path().join("hdd")).unwrap();
        let err = ImageDir::new(dir.path(), "hdd", "vm").create().unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
    }
}

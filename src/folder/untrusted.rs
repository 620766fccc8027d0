//! Opening files in folders that other users and tools can write to.
//!
//! The tool runs as root over backup destinations that are often shared disks. A name there may be
//! a symlink to `/etc/shadow`, a FIFO that blocks `open()` forever, a device or a folder. Every
//! file the tool reads from a destination is opened here: a final symlink is never followed,
//! opening never blocks, and the open handle itself (not a second look at the path) must be a
//! regular file before a byte is read.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub use crate::folder::shared::EntryKind;

/// The entry is there but is not a regular file; carried inside an `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("is {}, not a regular file; it is not read", .0.described())]
pub struct NotRegular(pub EntryKind);

/// The file may have been written by another user: it belongs to one, or others may write it;
/// carried inside an `io::Error`. What the tool itself wrote and must believe is refused so.
#[derive(Debug, thiserror::Error)]
#[error("belongs to uid {uid} with mode {mode:o}, so this run cannot be sure it wrote it")]
pub struct NotOwn {
    pub uid: u32,
    pub mode: u32,
}

/// Reads `path` whole, within `limit` bytes, when it is a regular file of this process's user
/// that nobody else may write ([`NotOwn`] otherwise); `None` when it does not exist. The bytes
/// come through the handle whose owner was checked, not a second open of the path.
pub fn read_own(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    read_owned(path, limit, 0o022)
}

/// [`read_own`], refusing also a file whose mode has any of the `forbidden` bits (`0o077`: a
/// secret nobody else may even read).
pub fn read_owned(path: &Path, limit: u64, forbidden: u32) -> io::Result<Option<Vec<u8>>> {
    use std::os::unix::fs::MetadataExt;
    let file = match open_regular(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    if meta.uid() != effective_uid() || meta.mode() & (forbidden | 0o022) != 0 {
        return Err(io::Error::other(NotOwn {
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        }));
    }
    read_bounded(file, limit).map(Some)
}

/// The kind of a path's final component, without following it.
pub fn kind_of(path: &Path) -> io::Result<EntryKind> {
    Ok(EntryKind::of(std::fs::symlink_metadata(path)?.file_type()))
}

/// The user this process acts as: files it trusts must belong to it.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens `path` with `options` (create, write, mode … as the caller needs) when it is, or becomes,
/// a regular file: never through a final symlink, never blocking on a FIFO, and checked on the
/// open handle.
#[allow(clippy::disallowed_methods)] // the one opener: callers that write are the door's (clippy.toml)
pub fn open_with(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = match options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        // O_NOFOLLOW fails with ELOOP on a final symlink: say what it is instead.
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::other(NotRegular(EntryKind::Symlink)))
        }
        Err(err) => return Err(err),
    };
    let kind = EntryKind::of(file.metadata()?.file_type());
    if kind != EntryKind::File {
        return Err(io::Error::other(NotRegular(kind)));
    }
    Ok(file)
}

/// Opens `path` for reading when it is a regular file (see [`open_with`]).
#[allow(clippy::disallowed_methods)] // opens for reading only
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_with(OpenOptions::new().read(true), path)
}

/// Reads a small regular file whole, refusing one larger than `limit` bytes; `None` when it does
/// not exist.
pub fn read_small(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    match open_regular(path) {
        Ok(file) => read_bounded(file, limit).map(Some),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Reads an open file whole, refusing one larger than `limit` bytes.
pub fn read_bounded(file: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is larger than {limit} bytes, more than such a file can hold"),
        ));
    }
    Ok(bytes)
}

/// True when `err` says the file may have been written by another user ([`NotOwn`]).
pub fn is_not_own(err: &io::Error) -> bool {
    not_own(err).is_some()
}

/// Who owns the file `err` refused, and its mode, when it is a [`NotOwn`].
pub fn not_own(err: &io::Error) -> Option<&NotOwn> {
    err.get_ref()?.downcast_ref::<NotOwn>()
}

/// True when `err` says the entry exists but is not a regular file.
pub fn is_not_regular(err: &io::Error) -> bool {
    carries::<NotRegular>(err)
}

fn carries<E: std::error::Error + 'static>(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<E>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::mkfifo;

    #[test]
    fn only_regular_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);

        assert!(open_regular(&file).is_ok());
        for (path, kind) in [
            (&link, EntryKind::Symlink),
            (&fifo, EntryKind::Fifo),
            (&dir.path().to_path_buf(), EntryKind::Directory),
        ] {
            let err = open_regular(path).unwrap_err();
            assert!(is_not_regular(&err), "{}: {err}", path.display());
            assert_eq!(
                err.to_string(),
                format!(
                    "is {}, not a regular file; it is not read",
                    kind.described()
                )
            );
            assert_eq!(kind_of(path).unwrap(), kind);
        }
        assert_eq!(
            open_regular(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string(),
            "is a device, not a regular file; it is not read"
        );
    }

    #[test]
    fn small_reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, vec![b'x'; 100]).unwrap();
        assert_eq!(read_small(&file, 100).unwrap().unwrap().len(), 100);
        assert!(read_small(&file, 99).is_err());
        assert_eq!(read_small(&dir.path().join("none"), 10).unwrap(), None);
    }

    #[test]
    fn only_a_file_nobody_else_may_write_is_read_as_our_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("record");
        std::fs::write(&file, b"{}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_own(&file, 10).unwrap().unwrap(), b"{}");
        assert_eq!(read_own(&dir.path().join("none"), 10).unwrap(), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        let err = read_own(&file, 10).unwrap_err();
        assert!(is_not_own(&err) && !is_not_regular(&err), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "belongs to uid {} with mode 620, so this run cannot be sure it wrote it",
                effective_uid()
            )
        );
        mkfifo(dir.path().join("fifo"));
        let err = read_own(&dir.path().join("fifo"), 10).unwrap_err();
        assert!(is_not_regular(&err) && !is_not_own(&err), "{err}");
    }
}

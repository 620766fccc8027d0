//! The one door into a backup folder: every read and change of a destination goes through
//! [`Door`], so a newcomer finds every write in one place and a second kind of destination is one
//! more implementation of it.
//!
//! The interface asks only what any store can give: a listing, a file opened for a streaming read,
//! a new file staged out of sight and then published whole under its final name (its checksum
//! file first, so every backup file that exists has one), small files replaced whole, and
//! removals. No file is ever renamed in place through it. What only a local folder can do (the
//! slide that changes an old base in place, [`crate::folder::slide`]) is a capability a caller
//! asks for with [`Door::in_place`]; a door without it has the new base exported instead.
//!
//! [`s3::S3Folder`] is the other kind: the objects under a prefix of an S3 bucket. It stages a backup
//! file as a multipart upload ([`Staged::Stream`]), written front to back and published whole.
//!
//! [`CheckFolder`] is check mode's twin of a local folder: it reads the real one and changes
//! nothing, so the executor announces and calls without asking which mode it is in.
//!
//! [`LocalFolder`] is the implementation on a local filesystem, and the only code of the crate
//! that changes a destination: `clippy.toml` refuses the `std::fs` (and `tempfile`, `rustix`)
//! calls that change files anywhere else, bar a named allow where a file outside any destination
//! is written (the host's state and lock folders, generated assets) and the group-and-mode policy
//! the door applies ([`crate::folder::access`]). Its [`PendingFile`] also serves the host's state
//! and the metrics file, and [`PartialFile`] is `restore --to-file`'s target being written.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::Result;

use crate::folder::access::FileAccess;
use crate::folder::chain::FolderEntry;
use crate::folder::untrusted::{read_bounded, EntryKind};

mod check;
mod local;
mod partial;
mod s3;

pub use check::CheckFolder;
pub use local::{set_mode, LocalFolder, PendingFile};
pub use partial::PartialFile;
pub use s3::{CredentialSource, ObjectStore, StoreKey};

/// Who may read a small file once it is replaced ([`Door::put`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Its owner only, whatever the folder's access (a build's marker).
    Private,
    /// As the folder's files are ([`FileAccess`]): the tool's records.
    Folder,
    /// Everyone may read it (the last-run report, which monitoring reads as another user).
    Everyone,
}

/// What publishing a backup file wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The backup file's size.
    pub size: u64,
    /// The size of its checksum file.
    pub checksum_size: u64,
}

/// A file of a folder opened for a streaming read ([`Door::open`]).
pub struct Opened {
    /// Its bytes, from the first.
    pub reader: Box<dyn Read + Send>,
    /// How many bytes it holds.
    pub len: u64,
}

/// A new backup file being written, out of sight until it is published ([`Door::publish`]); it
/// disappears unless it is.
pub enum Staged {
    /// A local file: written with holes where the image has them, and readable before it is
    /// published.
    File(PendingFile),
    /// A stream written front to back that takes its final name only when published (an object
    /// store's multipart upload).
    Stream(Box<dyn Upload>),
}

impl Staged {
    /// The name the file takes when published.
    pub fn name(&self) -> &str {
        match self {
            Staged::File(file) => file.name(),
            Staged::Stream(upload) => upload.name(),
        }
    }

    /// What a run killed while writing this file would leave behind out of sight, for the
    /// image's record to name so that the next run takes it back ([`Door::abandon`]); `None`
    /// when nothing needs that (a local temporary file is found by its name).
    pub fn leftover(&self) -> Option<&str> {
        match self {
            Staged::File(_) => None,
            Staged::Stream(upload) => Some(upload.id()),
        }
    }
}

/// A backup file streamed to a store that publishes it whole: its bytes go out as they are
/// written, and it appears under its name only when completed. Dropped uncompleted, it is taken
/// back.
pub trait Upload: Write + Send {
    /// The name it takes when completed.
    fn name(&self) -> &str;

    /// The store's name for the unfinished upload (what [`Staged::leftover`] records).
    fn id(&self) -> &str;

    /// Sends the last of the bytes, so that only making the file appear is left: a publisher
    /// calls it before it writes the checksum file, so that a failure here leaves none.
    fn send_rest(&mut self) -> io::Result<()>;

    /// Makes the file appear under its name, complete; its size.
    fn complete(self: Box<Self>) -> io::Result<u64>;
}

/// One folder of a destination (an image's folder, or the destination's top), as every part of
/// the tool reads and changes it.
pub trait Door: Send + Sync {
    /// How messages name the folder (a path for a local folder).
    fn location(&self) -> PathBuf;

    /// How messages name the file `name` of the folder.
    fn location_of(&self, name: &str) -> PathBuf {
        self.location().join(name)
    }

    /// Who may read what is written here.
    fn access(&self) -> FileAccess;

    /// What the folder itself is; `NotFound` when it is not there (a missing mount point, a
    /// missing bucket).
    fn kind(&self) -> io::Result<EntryKind>;

    /// The entries of the folder, sorted by name; none when it does not exist yet.
    fn list(&self) -> Result<Vec<FolderEntry>>;

    /// What sits at `name`, not following a link; `NotFound` when nothing does.
    fn kind_of(&self, name: &str) -> io::Result<EntryKind>;

    /// Opens the file `name` for a streaming read: a regular file only, never through a link.
    /// The error says what sits there instead ([`crate::folder::untrusted::NotRegular`] inside),
    /// or why it cannot be opened; it does not name the file.
    fn open(&self, name: &str) -> io::Result<Opened>;

    /// The small file `name` whole, refused when it is longer than `limit` bytes; `None` when
    /// nothing is there.
    fn read_small(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        match self.open(name) {
            Ok(opened) => read_bounded(opened.reader, limit).map(Some),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The small file `name` whole, as [`Door::read_small`], when nobody but this process's
    /// user can have written it: the tool's records and markers, which decide what is removed
    /// or believed. Otherwise the error carries [`crate::folder::untrusted::NotOwn`].
    fn read_own(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>>;

    /// The file `name` as a local file that can be read from any position, when the door has
    /// one: a caller that must read a file more than once copies it to [`Door::scratch`]
    /// otherwise. Read only: check mode's twin gives it too.
    fn open_file(&self, _name: &str) -> Option<io::Result<File>> {
        None
    }

    /// Makes the folder ready to take files.
    fn create(&self) -> Result<()>;

    /// A new file for `name`, staged out of sight until it is published; it disappears unless
    /// it is. `None` from a door that writes no file (check mode's twin): the caller has
    /// nothing to write, and need not read what it would have written.
    fn stage(&self, name: &str) -> Result<Option<Staged>>;

    /// Takes back what a run killed while it staged `name` left out of sight, which that run's
    /// record names as `leftover` ([`Staged::leftover`]); nothing to do for a door whose staging
    /// leaves nothing that needs a record.
    fn abandon(&self, _name: &str, _leftover: &str) -> Result<()> {
        Ok(())
    }

    /// A nameless scratch file near the folder's files, gone when it is closed.
    fn scratch(&self) -> Result<File>;

    /// Publishes a staged backup file whose SHA-256 is `sha256`: its checksum file first (so
    /// every backup file that exists has one), then the file under its final name, complete. A
    /// file already there is replaced only when `replace` (an unproven file written again);
    /// otherwise publishing fails and the checksum just written is taken back.
    fn publish(&self, file: Staged, sha256: &str, replace: bool) -> Result<Published>;

    /// Replaces the small file `name` with `bytes`, whole: a reader sees the old or the new one.
    fn put(&self, name: &str, bytes: &[u8], sharing: Sharing) -> Result<()>;

    /// Removes the file `name` (never a folder; a link only as itself); true when it did (the
    /// check-mode twin removes nothing).
    fn remove(&self, name: &str) -> Result<bool>;

    /// Whether a run of this folder builds a slide's new base in place: the planner asks this,
    /// so that a destination that cannot has the new base exported instead.
    fn builds_in_place(&self) -> bool {
        self.in_place().is_some()
    }

    /// The folder as a local one that may be changed, when it is: what only a local folder can
    /// do (change a file in place, rename one) is asked for here, never assumed.
    fn in_place(&self) -> Option<&LocalFolder>;
}

#[cfg(test)]
mod tests;

//! Small items the parts of the folder code share, depending on nothing else in it: what kind of
//! entry a name is, and the hint every "destination does not exist" message ends with. Here,
//! below them all, so that no two folder modules import each other for them.

use std::os::unix::fs::FileTypeExt;

/// What a folder entry is, for messages and for deciding whether to touch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    Device,
    Other,
}

impl EntryKind {
    pub fn of(file_type: std::fs::FileType) -> EntryKind {
        if file_type.is_file() {
            EntryKind::File
        } else if file_type.is_dir() {
            EntryKind::Directory
        } else if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_fifo() {
            EntryKind::Fifo
        } else if file_type.is_socket() {
            EntryKind::Socket
        } else if file_type.is_block_device() || file_type.is_char_device() {
            EntryKind::Device
        } else {
            EntryKind::Other
        }
    }

    /// "a symbolic link", "a FIFO", … for messages.
    pub fn described(self) -> &'static str {
        match self {
            EntryKind::File => "a regular file",
            EntryKind::Directory => "a folder",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Fifo => "a FIFO",
            EntryKind::Socket => "a socket",
            EntryKind::Device => "a device",
            EntryKind::Other => "not a regular file",
        }
    }
}

/// What follows "destination directory X does not exist" and its kin.
pub const UNMOUNTED_HINT: &str = " (is the backup disk mounted?)";

//! The commands besides the backup itself: `list`, `restore`, `verify` and `init-destination`.
//! Each takes its own options and returns a result; only `cli` turns those into exit statuses.

pub mod init;
pub mod list;
pub mod restore;
pub mod verify;

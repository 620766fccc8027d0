//! The commands besides the backup itself: `list`, `restore`, `verify`, `init-destination`, and
//! the offline check of a configuration (`--check --offline`).
//! Each takes its own options and returns a result; only `cli` turns those into exit statuses.

pub mod check_config;
pub mod init;
pub mod list;
pub mod restore;
pub mod verify;

//! cephbackup: backs up Ceph RBD images to a folder, a drop-in replacement for the Python tool of
//! the same name.
//!
//! The flow is config → per-pool jobs → a pure plan per image → an executor that runs `rbd` and
//! writes files. `main.rs` only parses the command line and turns the outcome into an exit status.

pub mod catalog;
pub mod chain;
pub mod checked_diff;
pub mod cli;
pub mod config;
pub mod diffstream;
pub mod execute;
pub mod init;
pub mod interrupt;
pub mod list;
pub mod lock;
pub mod naming;
pub mod output;
pub mod plan;
pub mod process;
pub mod rbd;
pub mod rebuild;
pub mod record;
pub mod restore;
pub mod retention;
pub mod store;
pub mod stored;
pub mod untrusted;
pub mod verify;

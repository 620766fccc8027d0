//! cephbackup: backs up Ceph RBD images to a folder, a drop-in replacement for the Python tool of
//! the same name.
//!
//! The flow is config → per-pool jobs → a pure plan per image → an executor that runs `rbd` and
//! writes files. `main.rs` only parses the command line and turns the outcome into an exit status.
//!
//! Below `main.rs` and [`cli`], nothing knows of the command line: each command takes a plain
//! options struct of its own module and returns a [`Result`](anyhow::Result) of what it found;
//! [`cli`] alone turns arguments into those options and outcomes into exit statuses.

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
pub mod sparse;
pub mod store;
pub mod stored;
pub mod untrusted;
pub mod verify;

/// A mistake in what was asked (a pool no section names, a name that cannot be an image):
/// reported with the usage status, nothing done. Callers find it with `downcast_ref`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// How a command that reports on many things ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked was done and nothing wrong was found.
    Done,
    /// It ran to the end, and found (and reported) at least one problem.
    FoundProblems,
}

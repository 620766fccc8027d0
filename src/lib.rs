//! cephbackup: backs up Ceph RBD images to a folder, a drop-in replacement for the Python tool of
//! the same name.
//!
//! The flow is config → per-pool jobs → a pure plan per image → an executor that runs `rbd` and
//! writes files. `main.rs` only parses the command line and turns the outcome into an exit status.
//!
//! Where things live:
//! - [`config`]: the INI dialect, the section schema and `%(name)s` references, value parsers.
//! - [`backup`]: the executor, the pure planner, retention policies and the window.
//! - [`folder`]: everything about a backup folder: names, the one folder model (chains and
//!   restore points), the tool's records, the one door every change to a destination goes
//!   through ([`folder::door`]), writing files, reading them back, sparse files,
//!   checksums, the `rbd diff v1` format, and opening files on untrusted ground.
//! - [`cluster`]: the one module that starts processes, and the `rbd` verbs with typed failures.
//! - [`commands`]: the backup run (`backup`), `list`, `status`, `restore`, `verify` and
//!   `init-destination`.
//! - [`state`]: the host's own memory of its destinations (identity, filesystem, each image's
//!   newest completed snapshot) and the key that seals the tool's records.
//! - [`clock`] (the wall clock a run reads, startable at a given second in test builds),
//!   [`lock`] (per-image locks), [`interrupt`] (SIGINT/SIGTERM), [`output`] (stdout that never
//!   panics, escaping, sizes and times for people), [`progress`] (bars on a terminal, durations),
//!   [`report`] (what a run did, as JSON, and the envelope every JSON document shares),
//!   [`metrics`] (the Prometheus textfile), [`assets`] (the manual pages and shell completions a
//!   package ships, generated from [`cli`]).
//!
//! Below `main.rs` and [`cli`], nothing knows of the command line: each command takes a plain
//! options struct of its own module and returns a [`Result`](anyhow::Result) of what it found;
//! [`cli`] alone turns arguments into those options and outcomes into exit statuses.

// `clippy.toml` keeps changes to files inside the door (`folder::door`) for the code that ships;
// unit tests lay out folders by hand.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod assets;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod folder;
pub mod interrupt;
pub mod lock;
pub mod metrics;
pub mod output;
pub mod progress;
pub mod report;
pub mod state;
#[cfg(test)]
mod test_fixtures;

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

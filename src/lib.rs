//! cephbackup: backs up Ceph RBD images to a folder, a drop-in replacement for the Python tool of
//! the same name.
//!
//! The flow is config → per-pool jobs → a pure plan per image → an executor that runs `rbd` and
//! writes files. `main.rs` only parses the command line and turns the outcome into an exit status.
//!
//! Where things live:
//! - [`config`]: the INI dialect, the section schema and `%(name)s` references, value parsers.
//! - [`backup`]: the executor (unit tests against an in-memory cluster), the planner (pure, the
//!   clock passed in, each step with its reason), retention policies and the window.
//! - [`folder`]: everything about a backup folder: names, the one folder model (chains and
//!   restore points), the tool's records, the one door every read and change of a destination
//!   goes through ([`folder::door`]; a section's doors come from
//!   [`config::PoolJob::image_folder`]), writing files, reading them back, sparse files,
//!   checksums, the `rbd diff v1` format, and opening files on untrusted ground.
//! - [`cluster`]: the one module that starts processes, what Ceph's failures mean, and the `rbd`
//!   verbs.
//! - [`commands`]: the backup run (`backup`), `list`, `status`, `restore`, `verify` and
//!   `init-destination`, and what they share: the image folders a configuration names, and each
//!   configured image's coverage.
//! - [`state`]: the host's own memory of its destinations (identity, filesystem, each image's
//!   newest completed snapshot) and the key that seals the tool's records.
//! - [`coordinate`]: several hosts sharing one configuration: each image's lease and the round
//!   in a RADOS pool (librados, loaded when asked for), where [`state`] then keeps its facts.
//! - [`clock`] (the wall clock a run reads, startable at a given second in test builds),
//!   [`lock`] (per-image locks), [`interrupt`] (SIGINT/SIGTERM), [`output`] (stdout that never
//!   panics, escaping, sizes and times for people), [`progress`] (bars on a terminal, durations),
//!   [`report`] (what a run did, as JSON, and the envelope every JSON document shares),
//!   [`assets`] (the manual pages and shell completions a package ships, generated from
//!   [`cli`]).
//!
//! Below `main.rs` and [`cli`], nothing knows of the command line: each command takes a plain
//! options struct of its own module and returns a [`Result`](anyhow::Result) of what it found;
//! [`cli`] alone turns arguments into those options and outcomes into exit statuses.
//!
//! Layers, lowest first; each imports only layers before it (`src/layers.rs` checks that no
//! two modules import each other): [`output`], [`progress`], [`report`]; [`cluster`];
//! [`interrupt`]; [`folder`]; [`coordinate`]; [`state`], [`lock`]; [`config`]; [`backup`];
//! [`commands`] (the metrics textfile among them); [`cli`]; [`assets`].
//!
//! Every module is private to the crate; the programs built from it reach in through [`bin`],
//! the integration tests and examples through [`test_support`] (feature `test-support`).

// `clippy.toml` keeps changes to files inside the door (`folder::door`) for the code that ships;
// unit tests lay out folders by hand.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

// Private modules, so that rustc and clippy see (and flag) code nothing calls; what leaves the
// crate is listed item by item in `bin` and `test_support`.
pub(crate) mod assets;
pub(crate) mod backup;
pub(crate) mod cli;
pub(crate) mod clock;
pub(crate) mod cluster;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod coordinate;
pub(crate) mod folder;
pub(crate) mod interrupt;
#[cfg(test)]
mod layers;
pub(crate) mod lock;
pub(crate) mod output;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod state;
#[cfg(test)]
mod test_fixtures;

/// What the programs built from this crate call, and nothing else: `src/main.rs`, the asset
/// generator (`examples/generate-assets.rs`, which `scripts/package` runs) and the packaging
/// test. Each is a separate crate, so whatever it uses must be public; listed here item by
/// item, the rest of the library stays crate-private. Not an interface for other programs.
#[doc(hidden)]
pub mod bin {
    pub use crate::assets::write_to;
    pub use crate::cli::{Cli, Command, Status};
    pub use crate::report::version;
    pub use crate::Outcome;

    /// The commands, one entry point each (the backup run is `backup`).
    pub mod commands {
        pub mod backup {
            pub use crate::commands::backup::{run, BackupOptions, Ended};
        }
        pub mod check_config {
            pub use crate::commands::check_config::{run, Verdict};
        }
        pub mod hosts {
            pub use crate::commands::hosts::run;
        }
        pub mod init {
            pub use crate::commands::init::run;
        }
        pub mod list {
            pub use crate::commands::list::run;
        }
        pub mod mount {
            pub use crate::commands::mount::run;
        }
        pub mod restore {
            pub use crate::commands::restore::run;
        }
        pub mod status {
            pub use crate::commands::status::run;
        }
        pub mod verify {
            pub use crate::commands::verify::run;
        }
    }
    pub mod config {
        pub use crate::config::{
            cluster_file_problems, load, metrics_file_despite_errors, Config, ConfigProblem,
        };
    }
    pub mod interrupt {
        pub use crate::interrupt::install;
    }
    pub mod lock {
        pub use crate::lock::{default_dir, Locking, DEFAULT_BACKUP_WAIT, DEFAULT_READ_WAIT};
    }
    pub mod metrics {
        pub use crate::commands::metrics::{publish, render_config_error, write};
    }
    pub mod output {
        pub use crate::output::{capture, json, set_quiet};
    }
    pub mod progress {
        pub use crate::progress::{enable, LogWriter};
    }
}

/// What the cluster and outage tests and `examples/window.rs` reach into the library for: test
/// writers for the formats the tool only reads, and the few pure parts they drive directly.
/// Never part of the tool: `cargo test --features test-support`.
#[cfg(feature = "test-support")]
pub mod test_support {
    pub use crate::backup::plan::{plan_image, Found, Settings, Step};
    pub use crate::clock::TEST_START as CLOCK_START;
    pub use crate::cluster::rbd::Snapshot;
    pub use crate::config::{BackupMode, KeepRules, Window, WindowUnit};
    pub use crate::folder::access::FileGroup;
    pub use crate::folder::chain::FolderEntry;
    pub use crate::folder::format::archive::MAX_SPARSE_EXTENTS;
    pub use crate::folder::format::diffstream::{DiffHeader, DiffReader, DiffWriter, Record};
    pub use crate::folder::format::untar::sparse_tar;
    pub use crate::folder::format::write::checksum_line;
    pub use crate::folder::naming::Compression;
    pub use crate::folder::naming::LAST_RUN_FILE;
    pub use crate::folder::read::sparse_bomb;
    pub use crate::folder::record::ImageRecord;
    pub use crate::output::{escaped, human_bytes};
    pub use crate::report::RunReport;
}

/// The one path [`outln!`] and [`out!`] write through, public because exported macros expand
/// in the binary too.
#[doc(hidden)]
pub use output::write as __write_stdout;

/// A mistake in what was asked (a pool no section names, a name that cannot be an image):
/// reported with the usage status, nothing done. Callers find it with `downcast_ref`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A failure another process already said on this stderr (the mount `--daemon` started, whose
/// stderr is relayed): the command fails with that process's exit status, and says nothing more.
#[derive(Debug, thiserror::Error)]
#[error("the error above (exit status {0})")]
pub struct AlreadySaid(pub i32);

/// How a command that reports on many things ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked was done and nothing wrong was found.
    Done,
    /// It ran to the end, and found (and reported) at least one problem.
    FoundProblems,
}

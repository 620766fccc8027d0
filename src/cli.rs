//! The command line: the original's `-c/--conf`, plus `--check` and the exit statuses.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::DEFAULT_CONFIG_PATH;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  every image was backed up (or, in check mode, every step was shown)
  1  at least one image or pool failed; the others were still backed up
  2  usage error or invalid configuration file; nothing was done
 75  another run is using a destination (see --wait); nothing was done
130  interrupted by SIGINT, 143 by SIGTERM: the image being backed up was rolled back,
     the remaining ones skipped";

/// Backup tool for ceph: snapshots RBD images and exports them to a folder, full or incremental.
#[derive(Debug, Parser)]
#[command(name = "cephbackup", version, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// Configuration file (INI, one section per pool)
    #[arg(
        short = 'c',
        long = "conf",
        visible_alias = "config",
        value_name = "PATH",
        default_value = DEFAULT_CONFIG_PATH
    )]
    pub conf: PathBuf,

    /// Only show what would be done, for every section, whatever `check mode` says
    #[arg(long)]
    pub check: bool,

    /// Wait up to SECONDS for another run using the same destination to finish, instead of
    /// exiting at once
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub wait: u64,

    /// Log less on stderr: warnings and errors only
    #[arg(short, long)]
    pub quiet: bool,
}

/// How a run ended, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    BackupFailed,
    UsageOrConfig,
    /// Another run holds a destination's lock.
    Busy,
    /// Stopped by this signal.
    Interrupted(i32),
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(match status {
            Status::Success => 0,
            Status::BackupFailed => 1,
            Status::UsageOrConfig => 2,
            Status::Busy => 75,
            Status::Interrupted(signal) => u8::try_from(128 + signal).unwrap_or(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_path_accepts_the_original_spellings() {
        for flag in ["-c", "--conf", "--config"] {
            let cli = Cli::try_parse_from(["cephbackup", flag, "/x.conf"]).unwrap();
            assert_eq!(cli.conf, PathBuf::from("/x.conf"));
        }
        let cli = Cli::try_parse_from(["cephbackup"]).unwrap();
        assert_eq!(cli.conf, PathBuf::from("/etc/cephbackup/cephbackup.conf"));
        assert!(!cli.check);
    }
}

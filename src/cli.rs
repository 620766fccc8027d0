//! The command line: the original's `-c/--conf`, plus `--check`, the `list`, `status`,
//! `restore`, `verify` and `init-destination` commands, and the exit statuses.
//!
//! With no command the tool backs up, exactly as the original did, so cron lines keep working.
//! This is the only module that knows the command line and exit statuses: it turns arguments into
//! the commands' own option structs ([`ListArgs::options`], …) and their results into a
//! [`Status`].

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::commands::catalog::Narrow;
use crate::commands::init::InitOptions;
use crate::commands::list::ListOptions;
use crate::commands::restore::RestoreOptions;
use crate::commands::status::{Health, StatusOptions};
use crate::commands::verify::VerifyOptions;
use crate::config::DEFAULT_CONFIG_PATH;
use crate::folder::naming::parse_point_in_time;
use crate::{Outcome, UsageError};

/// The exit statuses, shown after `--help` and in the manual page's EXIT STATUS section.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success: every image was backed up (or, in check mode, every step was shown); list,
     restore or verify did what was asked, and verify found nothing wrong
  1  at least one image or pool failed, the others were still backed up; or a restore
     failed (the image or file it was creating was removed); or verify found a problem; or
     --check --offline found a destination a run would refuse
  2  usage error or invalid configuration file (a `ceph config` or `ceph keyring` file that
     cannot be read included); nothing was done
 75  another run kept an image longer than this one waits (--wait, `wait`) and nothing
     else failed; the other images were backed up
130  interrupted by SIGINT, 143 by SIGTERM: the image being backed up was rolled back,
     the remaining ones skipped; a restore removed what it was creating
list also exits 1 when an image the configuration names has no backup at all.
status follows the monitoring-plugin convention instead:
  0  OK: every configured image has a restore point (newer than --max-age, if given)
  1  WARNING: an image's newest point is older than --warn-age, or its folder holds
     files that cannot be restored from
  2  CRITICAL: an image was never backed up, or its newest point is older than --max-age
     (an invalid configuration or usage is 2 as well)
  3  UNKNOWN: a destination or image folder cannot be read, or no configured image found";

/// The longest `--wait`: a week ([`crate::lock::MAX_WAIT_SECONDS`]).
pub const MAX_WAIT_SECONDS: u64 = crate::lock::MAX_WAIT_SECONDS;

/// Backup tool for ceph: snapshots RBD images and exports them to a folder, full or incremental.
///
/// With no command, backs up every image the configuration names (what cron runs).
#[derive(Debug, Parser)]
#[command(name = "cephbackup", version = crate::report::version(), after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// Configuration file (INI, one section per pool)
    #[arg(
        short = 'c',
        long = "conf",
        visible_alias = "config",
        value_name = "PATH",
        default_value = DEFAULT_CONFIG_PATH,
        global = true
    )]
    pub conf: PathBuf,

    /// Only show what would be done: for a backup, in every section whatever `check mode` says;
    /// also for restore and init-destination (list, status and verify change nothing and
    /// refuse it)
    #[arg(long, global = true)]
    pub check: bool,

    /// Wait up to SECONDS (at most 604800, a week) for another run using one of the same images
    /// to finish; 0 exits at once (status 75) [default: for a backup `wait` of [DEFAULT], else
    /// 21600 (6 h); for restore and verify 30]. With `coordination pool`, also how long a backup
    /// waits for an image another host holds, to take it over if that host dies [default: not
    /// at all, it is that host's]
    // This doc comment is the `--help` text, where brackets are literal, not doc links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(
        long,
        value_name = "SECONDS",
        global = true,
        value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECONDS)
    )]
    pub wait: Option<u64>,

    /// Folder for the per-image lock files [default: /run/cephbackup for root, else a private
    /// folder of the user]
    #[arg(long, value_name = "DIR", global = true)]
    pub lock_dir: Option<PathBuf>,

    /// Quiet, for cron: a backup that fully succeeds prints nothing at all; otherwise only its
    /// errors, warnings and summary. `verify` prints only the images with a problem, and nothing
    /// when there is none. Other commands log warnings and errors only
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log more on stderr: every `rbd` command line and how long it took (CEPHBACKUP_LOG=debug
    /// says the same)
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// With --check and no command: check the configuration, the ceph config and keyring files
    /// and the destinations, without contacting the cluster
    #[arg(long, requires = "check")]
    pub offline: bool,

    /// Backup run: afterwards, write Prometheus metrics to PATH (for node_exporter's textfile
    /// collector; name it *.prom), replacing it atomically; overrides `metrics file` of
    /// [DEFAULT]
    // This doc comment is the `--help` text, where brackets are literal, not doc links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Backup run with `coordination pool`: the name this host goes by among the hosts sharing
    /// the configuration, in leases, reports and `status` [default: its hostname]
    #[arg(long, value_name = "NAME", value_parser = host_name)]
    pub host: Option<String>,

    /// Backup run: print one JSON document, the run report (schema/run.schema.json), on stdout
    /// instead of the text; stderr is unchanged. Before `list`, `status`, `verify` or `restore`,
    /// the same as their own --json
    #[arg(long)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--host`: a name another host's run can show in one line (a lease's cookie).
fn host_name(text: &str) -> Result<String, String> {
    let fits = (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if fits {
        Ok(text.to_string())
    } else {
        Err("expected 1 to 64 letters, digits, '-', '_' or '.'".to_string())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show every image's backup chains: files, sizes, and the points they restore to
    List(ListArgs),
    /// Show whether every configured image is backed up, and how recently (for monitoring:
    /// exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)
    Status(StatusArgs),
    /// Restore an image as it was at a backed-up point in time, into a new image or file
    Restore(RestoreArgs),
    /// Prove the backups restorable: check every file offline, optionally against the cluster
    Verify(VerifyArgs),
    /// Show an image's restore points as raw files in a read-only FUSE filesystem, read in place
    /// from the backups (for recovering files without restoring the disk)
    Mount(MountArgs),
    /// Mark the configured destinations as cephbackup's on purpose, so that a first run into an
    /// empty one is not refused as a backup disk that did not mount
    InitDestination(InitArgs),
    /// With `coordination pool`: the hosts running the configuration now, the images being
    /// backed up and by whom until when, and which host last backed up each image
    Hosts(HostsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HostsArgs {
    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Only the destination of this pool (a section of the configuration)
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
}

/// Which backed-up images a command looks at, as given on the command line
/// ([`Narrow`] once read).
#[derive(Debug, Clone, Args)]
pub struct NarrowArgs {
    /// Only this pool (a section of the configuration)
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,

    /// Only this image
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub narrow: NarrowArgs,

    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

/// The longest age `status` accepts: ten years (longer means "never", which no limit says).
pub const MAX_AGE_SECONDS: u64 = 10 * 366 * 24 * 60 * 60;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub narrow: NarrowArgs,

    /// An image whose newest restore point is older than this is CRITICAL (exit 2): e.g. 26h,
    /// 2d, 90m, "1d 12h"
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub max_age: Option<std::time::Duration>,

    /// An image whose newest restore point is older than this is WARNING (exit 1)
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub warn_age: Option<std::time::Duration>,

    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
}

/// A positive duration such as `26h`, `2d`, `90m` or `1d 12h`, at most [`MAX_AGE_SECONDS`].
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{err}; write a duration such as 26h, 2d, 90m or \"1d 12h\""))?;
    if duration.is_zero() {
        return Err("a duration of zero would make every backup too old".to_string());
    }
    if duration.as_secs() > MAX_AGE_SECONDS {
        return Err("at most ten years".to_string());
    }
    Ok(duration)
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["to", "to_file"]))]
pub struct RestoreArgs {
    /// The pool the image was backed up from (a section of the configuration)
    #[arg(long, value_name = "POOL")]
    pub pool: String,

    /// The image whose backups to restore
    #[arg(long, value_name = "IMAGE")]
    pub image: String,

    /// The new image to create, in POOL (or in the --pool one); it must not exist
    #[arg(long, value_name = "[POOL/]NAME")]
    pub to: Option<String>,

    /// Instead, rebuild the image as a new local raw (sparse) file, without any cluster
    #[arg(long, value_name = "PATH")]
    pub to_file: Option<PathBuf>,

    /// Restore the newest point taken at or before WHEN instead of the latest: a snapshot name
    /// (BACKUPUTC20261125T120000), its stamp (20261125T120000), a date and time
    /// (2026-11-25 12:00[:00]) or a date (2026-11-25: the newest point of that day or before),
    /// all UTC; or RFC 3339 (2026-11-25T12:00:00+01:00)
    // This doc comment is the `--help` text, where brackets are literal, not doc links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "WHEN", value_parser = parse_point_in_time)]
    pub at: Option<DateTime<Utc>>,

    /// Print one JSON document instead of the text (the steps then go to stderr)
    #[arg(long)]
    pub json: bool,
    /// The private key(s) of encrypted backups (`encrypt to`): an age identity file, as
    /// `age-keygen` writes it, readable by its owner only
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// The pool the image was backed up from (a section of the configuration)
    #[arg(long, value_name = "POOL")]
    pub pool: String,

    /// The image whose backups to show
    #[arg(long, value_name = "IMAGE")]
    pub image: String,

    /// Show only the newest point taken at or before WHEN (as `restore --at`), as IMAGE.raw;
    /// without it, IMAGE.raw is the newest point and each point has a folder of its own
    #[arg(long, value_name = "WHEN", value_parser = parse_point_in_time)]
    pub at: Option<DateTime<Utc>>,

    /// An existing empty folder to mount on
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,

    /// The private key(s) of encrypted backups (`encrypt to`): an age identity file, as
    /// `age-keygen` writes it, readable by its owner only
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl MountArgs {
    pub fn options(&self) -> crate::commands::mount::MountOptions {
        crate::commands::mount::MountOptions {
            pool: self.pool.clone(),
            image: self.image.clone(),
            at: self.at,
            mountpoint: self.mountpoint.clone(),
            identity: self.identity.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub narrow: NarrowArgs,

    /// Also rebuild, per image, the newest point whose snapshot is still in the cluster, and
    /// compare its SHA-256 with `rbd export` of that snapshot (needs room in $TMPDIR)
    #[arg(long)]
    pub source: bool,

    /// Count files without a .sha256 file as problems (files written by the original tool
    /// have none, so by default they only get a warning)
    #[arg(long)]
    pub strict: bool,

    /// Print one JSON document instead of text
    #[arg(long)]
    pub json: bool,
    /// The private key(s) of encrypted backups (`encrypt to`): an age identity file, as
    /// `age-keygen` writes it, readable by its owner only
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl Cli {
    /// Refuses what parses but cannot be honoured: `--check` with a command that changes nothing
    /// (it would be silently ignored otherwise).
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.offline && self.command.is_some() {
            return Err(UsageError(
                "--offline checks the configuration for a backup run; give it without a command \
                 (cephbackup --check --offline)"
                    .into(),
            ));
        }
        let name = match &self.command {
            Some(Command::List(_)) if self.check => "list",
            Some(Command::Status(_)) if self.check => "status",
            Some(Command::Verify(_)) if self.check => "verify",
            Some(Command::Hosts(_)) if self.check => "hosts",
            Some(_) if self.metrics_file.is_some() => {
                return Err(UsageError(
                    "--metrics-file is only for a backup run (no command)".to_string(),
                ))
            }
            Some(Command::InitDestination(_)) if self.json => {
                return Err(UsageError(
                    "--json is not accepted by init-destination".to_string(),
                ))
            }
            _ => return Ok(()),
        };
        Err(UsageError(format!(
            "--check is not accepted by {name}, which changes nothing anyway"
        )))
    }
}

impl NarrowArgs {
    pub fn narrow(&self) -> Narrow {
        Narrow {
            pool: self.pool.clone(),
            image: self.image.clone(),
        }
    }
}

impl ListArgs {
    pub fn options(&self) -> ListOptions {
        ListOptions {
            narrow: self.narrow.narrow(),
            json: self.json,
        }
    }
}

impl StatusArgs {
    pub fn options(&self) -> StatusOptions {
        StatusOptions {
            narrow: self.narrow.narrow(),
            max_age: self.max_age,
            warn_age: self.warn_age,
            json: self.json,
        }
    }
}

impl VerifyArgs {
    pub fn options(&self) -> VerifyOptions {
        VerifyOptions {
            narrow: self.narrow.narrow(),
            source: self.source,
            strict: self.strict,
            json: self.json,
            quiet: false,
            identity: self.identity.clone(),
        }
    }
}

impl RestoreArgs {
    pub fn options(&self, check: bool) -> RestoreOptions {
        RestoreOptions {
            pool: self.pool.clone(),
            image: self.image.clone(),
            to: self.to.clone(),
            to_file: self.to_file.clone(),
            at: self.at,
            check,
            json: self.json,
            identity: self.identity.clone(),
        }
    }
}

impl InitArgs {
    pub fn options(&self, check: bool) -> InitOptions {
        InitOptions {
            pool: self.pool.clone(),
            check,
        }
    }
}

/// How a run ended, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// An image or pool failed, a restore failed, or verify found a problem.
    Failed,
    UsageOrConfig,
    /// Another run holds an image's lock, and nothing else failed.
    Busy,
    /// Stopped by this signal.
    Interrupted(i32),
    /// `status`'s verdict, in the monitoring-plugin convention.
    Monitoring(Health),
}

impl Status {
    /// The status of a command that ran to its end: problems it found and reported fail it.
    pub fn of_outcome(outcome: Outcome) -> Status {
        match outcome {
            Outcome::Done => Status::Success,
            Outcome::FoundProblems => Status::Failed,
        }
    }

    /// The status of `status` when it stopped with `err`: a usage error as for any command,
    /// anything else UNKNOWN (it could not tell).
    pub fn of_status_error(err: &anyhow::Error) -> Status {
        match Status::of_error(err) {
            Status::Failed => Status::Monitoring(Health::Unknown),
            other => other,
        }
    }

    /// The status of a command that stopped with `err`.
    pub fn of_error(err: &anyhow::Error) -> Status {
        if err.downcast_ref::<UsageError>().is_some() {
            Status::UsageOrConfig
        } else if err.downcast_ref::<crate::lock::Busy>().is_some() {
            Status::Busy
        } else if let Some(interrupted) = err.downcast_ref::<crate::interrupt::Interrupted>() {
            Status::Interrupted(interrupted.0)
        } else {
            Status::Failed
        }
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(match status {
            Status::Success => 0,
            Status::Failed => 1,
            Status::UsageOrConfig => 2,
            Status::Busy => 75,
            Status::Interrupted(signal) => u8::try_from(128 + signal).unwrap_or(1),
            Status::Monitoring(Health::Ok) => 0,
            Status::Monitoring(Health::Warning) => 1,
            Status::Monitoring(Health::Critical) => 2,
            Status::Monitoring(Health::Unknown) => 3,
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
    fn version_is_the_package_version_and_the_build_revision() {
        let shown = Cli::command().render_version();
        assert_eq!(
            shown.trim_end(),
            format!("cephbackup {}", crate::report::version())
        );
        let version = crate::report::version();
        let rest = version.strip_prefix(env!("CARGO_PKG_VERSION")).unwrap();
        assert!(
            rest.is_empty() || (rest.starts_with(" (git ") && rest.ends_with(')')),
            "{version}"
        );
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

    #[test]
    fn no_command_means_backup_and_the_config_goes_before_or_after_a_command() {
        let cli = Cli::try_parse_from(["cephbackup", "-c", "/x.conf"]).unwrap();
        assert!(cli.command.is_none());
        for args in [
            ["cephbackup", "-c", "/x.conf", "list"],
            ["cephbackup", "list", "-c", "/x.conf"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.conf, PathBuf::from("/x.conf"));
            assert!(matches!(cli.command, Some(Command::List(_))));
        }
    }

    #[test]
    fn restore_needs_one_target_and_reads_when() {
        let base = ["cephbackup", "restore", "--pool", "rbd", "--image", "vm"];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra));
        assert!(parse(&[]).is_err(), "a target is required");
        assert!(parse(&["--to", "x", "--to-file", "/x"]).is_err());
        let cli = parse(&["--to", "other/x", "--at", "20261125T120000", "--check"]).unwrap();
        let Some(Command::Restore(args)) = cli.command else {
            panic!("not a restore")
        };
        assert_eq!(args.to.as_deref(), Some("other/x"));
        assert!(cli.check, "restore --check is the global --check");
        assert_eq!(args.at.unwrap().to_rfc3339(), "2026-11-25T12:00:00+00:00");
        let err = parse(&["--to", "x", "--at", "yesterday"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn check_is_global_and_refused_where_it_cannot_be_honoured() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap();
        for args in [
            &["cephbackup", "--check"][..],
            &["cephbackup", "--check", "init-destination"],
            &["cephbackup", "init-destination", "--check"],
            &[
                "cephbackup",
                "--check",
                "restore",
                "--pool",
                "p",
                "--image",
                "i",
                "--to",
                "x",
            ],
        ] {
            let cli = parse(args);
            assert!(cli.check, "{args:?}");
            assert!(cli.validate().is_ok(), "{args:?}");
        }
        for (args, name) in [
            (&["cephbackup", "--check", "list"][..], "list"),
            (&["cephbackup", "verify", "--check"], "verify"),
        ] {
            let err = parse(args).validate().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("--check is not accepted by {name}, which changes nothing anyway")
            );
        }
    }

    #[test]
    fn offline_needs_check_and_no_command_and_quiet_excludes_verbose() {
        let cli = Cli::try_parse_from(["cephbackup", "--check", "--offline"]).unwrap();
        assert!(cli.offline && cli.validate().is_ok());
        assert!(Cli::try_parse_from(["cephbackup", "--offline"]).is_err());
        let cli = Cli::try_parse_from(["cephbackup", "--check", "--offline", "init-destination"])
            .unwrap();
        assert!(cli.validate().is_err());
        assert!(Cli::try_parse_from(["cephbackup", "-q", "-v"]).is_err());
        assert!(
            Cli::try_parse_from(["cephbackup", "-v", "list"])
                .unwrap()
                .verbose
        );
    }

    #[test]
    fn wait_is_bounded_to_a_week() {
        let parse = |value: &str| Cli::try_parse_from(["cephbackup", &format!("--wait={value}")]);
        assert_eq!(parse("0").unwrap().wait, Some(0));
        assert_eq!(parse("604800").unwrap().wait, Some(MAX_WAIT_SECONDS));
        assert_eq!(Cli::try_parse_from(["cephbackup"]).unwrap().wait, None);
        for value in [
            "604801",
            "9223372036854775807",
            "18446744073709551616",
            "-1",
            "1h",
        ] {
            let err = parse(value).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{value}");
            let message = err.to_string();
            assert!(message.contains("--wait"), "{value}: {message}");
        }
        let message = parse("9223372036854775807").unwrap_err().to_string();
        assert!(message.contains("0..=604800"), "{message}");
    }

    #[test]
    fn status_reads_ages_and_maps_verdicts_to_plugin_statuses() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["cephbackup", "status"].iter().chain(args)).map(|cli| {
                let Some(Command::Status(args)) = cli.command else {
                    panic!("not status")
                };
                args
            })
        };
        let args = parse(&["--max-age", "26h", "--warn-age", "90m", "--json"]).unwrap();
        assert_eq!(
            args.max_age,
            Some(std::time::Duration::from_secs(26 * 3600))
        );
        assert_eq!(args.warn_age, Some(std::time::Duration::from_secs(90 * 60)));
        assert!(args.json);
        let args = parse(&["--max-age", "2d"]).unwrap();
        assert_eq!(
            args.max_age,
            Some(std::time::Duration::from_secs(2 * 86_400))
        );
        assert_eq!(parse(&[]).unwrap().max_age, None);
        for bad in ["0s", "yesterday", "26", "20years"] {
            let err = parse(&["--max-age", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("--max-age"), "{bad}: {err}");
        }
        let codes: Vec<ExitCode> = [
            Health::Ok,
            Health::Warning,
            Health::Critical,
            Health::Unknown,
        ]
        .map(|h| ExitCode::from(Status::Monitoring(h)))
        .into();
        assert_eq!(codes, [0, 1, 2, 3].map(ExitCode::from));
        let unreadable = anyhow::anyhow!("cannot list /b");
        assert_eq!(
            Status::of_status_error(&unreadable),
            Status::Monitoring(Health::Unknown)
        );
        let usage = anyhow::Error::new(UsageError("x".into()));
        assert_eq!(Status::of_status_error(&usage), Status::UsageOrConfig);
        let err = Cli::try_parse_from(["cephbackup", "--check", "status"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("not accepted by status"), "{err}");
        let cli = Cli::try_parse_from(["cephbackup", "--metrics-file", "/m/c.prom"]).unwrap();
        assert_eq!(cli.metrics_file, Some(PathBuf::from("/m/c.prom")));
    }

    #[test]
    fn errors_map_to_statuses() {
        let usage = anyhow::Error::new(UsageError("x".into())).context("while y");
        assert_eq!(Status::of_error(&usage), Status::UsageOrConfig);
        let signal = anyhow::Error::new(crate::interrupt::Interrupted(15));
        assert_eq!(
            ExitCode::from(Status::of_error(&signal)),
            ExitCode::from(143)
        );
        assert_eq!(Status::of_error(&anyhow::anyhow!("x")), Status::Failed);
    }
}

//! The command line: the original's `-c/--conf`, plus `--check`, the `list`, `status`,
//! `restore`, `verify`, `init-destination` and `hosts` commands, and the exit statuses.
//!
//! With no command the tool backs up, exactly as the original did, so cron lines keep working.
//! Options every command may take (`-c`, `-q`, `--json`, `--check`, …) are global, so they work
//! before or after the command as they always did; those a command has no use for are hidden from
//! its help and refused, from one table ([`refused_by`]), and [`command`] is the definition that
//! every parse, help text, manual page and completion comes from.
//! This is the only module that knows the command line and exit statuses: it turns arguments into
//! the commands' own option structs ([`ListArgs::options`], …) and their results into a
//! [`Status`].

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

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
// clap's own `help` command refuses `help --help` (exit 2): [`Command::Help`] stands in for it.
#[command(
    name = "cephbackup",
    version = crate::report::version(),
    after_help = EXIT_STATUS_HELP,
    disable_help_subcommand = true
)]
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

    /// Only show what would be done, changing nothing: for a backup, in every section whatever
    /// `check mode` says; for restore, its steps (on stderr) and the same restore as stock-tool
    /// commands to paste (on stdout); for init-destination, what it would mark
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

    /// Quiet, for cron: log only warnings and errors on stderr, and print nothing that is not
    /// asked for. A backup that fully succeeds prints nothing at all (otherwise its errors,
    /// warnings and summary); verify prints only the images with a problem
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

    /// Backup run (and init-destination) with `coordination pool`: the name this host goes by
    /// among the hosts sharing the configuration, in leases, reports and `status` [default: its
    /// hostname]
    #[arg(long, value_name = "NAME", value_parser = host_name)]
    pub host: Option<String>,

    /// Print one JSON document on stdout instead of the text; the log on stderr is unchanged.
    /// Its schema is /usr/share/doc/cephbackup/<COMMAND>.schema.json (schema/ in the source
    /// tree), run.schema.json for a backup run
    // This doc comment is the `--help` text, where <COMMAND> is a placeholder, not HTML.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, global = true)]
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
    /// Print this message or the help of the given command
    Help(HelpArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HostsArgs {}

#[derive(Debug, Clone, Args)]
pub struct HelpArgs {
    /// The command whose help to print
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
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

    /// Return once mounted, leaving the mount in the background (until unmounted or signalled)
    #[arg(long)]
    pub daemon: bool,

    /// The most local space (in $TMPDIR) that decompressed and decrypted chunks of compressed
    /// or encrypted backups may take, such as 512M or 4G
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_cache_size)]
    pub cache_size: u64,
}

/// A size in binary units, such as `512M`, `4G` or `1T` (`MiB`, `GiB` and `TiB` too), of at
/// least one MiB.
fn parse_cache_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "K" | "KIB" => 10,
        "M" | "MIB" => 20,
        "G" | "GIB" => 30,
        "T" | "TIB" => 40,
        _ => return Err("write a size with its unit, such as 512M, 4G or 1T".to_string()),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| "write a size with its unit, such as 512M, 4G or 1T".to_string())?;
    if bytes < 1 << 20 {
        return Err("at least 1M".to_string());
    }
    Ok(bytes)
}

impl MountArgs {
    pub fn options(&self) -> crate::commands::mount::MountOptions {
        crate::commands::mount::MountOptions {
            pool: self.pool.clone(),
            image: self.image.clone(),
            at: self.at,
            mountpoint: self.mountpoint.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            cache_size: self.cache_size,
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

    /// The private key(s) of encrypted backups (`encrypt to`): an age identity file, as
    /// `age-keygen` writes it, readable by its owner only
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

/// The global options some commands do not honour, with the reason each command refuses them:
/// one table for both the help, which hides them from those commands ([`command`]), and the
/// refusal ([`Cli::validate`]), so that what a command's help shows is what it accepts.
/// The option is named by its clap id.
fn refused_by(command: &str) -> &'static [(&'static str, &'static str)] {
    const CHANGES_NOTHING: &str = "which changes nothing anyway";
    const NO_LOCK: &str = "which takes no image lock";
    match command {
        "list" | "status" | "hosts" => &[
            ("check", CHANGES_NOTHING),
            ("wait", NO_LOCK),
            ("lock_dir", NO_LOCK),
        ],
        "verify" => &[("check", CHANGES_NOTHING)],
        "mount" => &[
            ("check", "which only reads"),
            ("json", "which prints no JSON document"),
        ],
        "init-destination" => &[
            ("wait", NO_LOCK),
            ("lock_dir", NO_LOCK),
            ("json", "which prints no JSON document"),
        ],
        _ => &[],
    }
}

/// The command line definition: [`Cli`]'s, with each global option a command refuses
/// ([`refused_by`]) hidden from that command's help, manual page and completions.
///
/// A command that declares an argument of a global option's id keeps its own (clap propagates
/// a global option only where the id is free), and its value still reaches [`Cli`]: the hidden
/// copy parses as before, and [`Cli::validate`] refuses it with a reason.
pub fn command() -> clap::Command {
    let mut cli = Cli::command();
    let globals: Vec<clap::Arg> = cli
        .get_arguments()
        .filter(|arg| arg.is_global_set())
        .cloned()
        .collect();
    let names: Vec<String> = cli
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    for name in names {
        // `help` runs nothing: no option applies to it.
        let hidden: Vec<&str> = if name == "help" {
            globals.iter().map(|arg| arg.get_id().as_str()).collect()
        } else {
            refused_by(&name).iter().map(|(id, _)| *id).collect()
        };
        cli = cli.mut_subcommand(&name, |mut sub| {
            for id in hidden {
                let global = globals
                    .iter()
                    .find(|arg| arg.get_id() == id)
                    .expect("refused_by names a global option");
                sub = sub.arg(global.clone().hide(true));
            }
            sub
        });
    }
    cli
}

impl Cli {
    /// The command line of this process, parsed with [`command`]; exits as clap does on a usage
    /// error (status 2) or after `--help` and `--version` (status 0).
    pub fn parse_args() -> Cli {
        Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// `args` parsed as [`parse_args`](Cli::parse_args) parses the process's. `help [COMMAND]`
    /// is answered as `[COMMAND] --help` is, with the help text as the error clap exits with
    /// (on stdout, status 0), so a parsed [`Cli`] never holds [`Command::Help`].
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut definition = command();
        let mut matches = definition.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches_mut(&mut matches)?;
        let Some(Command::Help(help)) = &cli.command else {
            return Ok(cli);
        };
        definition.build();
        let shown = match &help.command {
            None => definition.render_long_help(),
            Some(name) => match definition.find_subcommand_mut(name) {
                Some(sub) => sub.render_long_help(),
                None => {
                    return Err(definition.error(
                        clap::error::ErrorKind::InvalidSubcommand,
                        format!("no command {name}: try cephbackup --help"),
                    ))
                }
            },
        };
        // Plain text: a raw message is printed as given, terminal or not.
        let shown = shown.to_string();
        Err(clap::Error::raw(clap::error::ErrorKind::DisplayHelp, shown))
    }

    /// Refuses what parses but cannot be honoured, rather than ignoring it silently: a global
    /// option a command has no use for ([`refused_by`]), and the backup run's own options given
    /// with a command.
    pub fn validate(&self) -> Result<(), UsageError> {
        let Some(command) = &self.command else {
            return Ok(());
        };
        let name = command.name();
        if self.offline {
            return Err(UsageError(
                "--offline checks the configuration for a backup run; give it without a command \
                 (cephbackup --check --offline)"
                    .into(),
            ));
        }
        if self.metrics_file.is_some() {
            return Err(UsageError(
                "--metrics-file is only for a backup run (no command)".to_string(),
            ));
        }
        if self.host.is_some() && !matches!(command, Command::InitDestination(_)) {
            return Err(UsageError(format!(
                "--host is not accepted by {name}: it names this host for a backup run or \
                 init-destination"
            )));
        }
        for (id, reason) in refused_by(name) {
            let given = match *id {
                "check" => self.check,
                "wait" => self.wait.is_some(),
                "lock_dir" => self.lock_dir.is_some(),
                "json" => self.json,
                other => unreachable!("refused_by names {other}, which validate does not know"),
            };
            if given {
                let option = id.replace('_', "-");
                return Err(UsageError(format!(
                    "--{option} is not accepted by {name}, {reason}"
                )));
            }
        }
        Ok(())
    }
}

impl Command {
    /// The command's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::List(_) => "list",
            Command::Status(_) => "status",
            Command::Restore(_) => "restore",
            Command::Verify(_) => "verify",
            Command::Mount(_) => "mount",
            Command::InitDestination(_) => "init-destination",
            Command::Hosts(_) => "hosts",
            Command::Help(_) => "help",
        }
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
    pub fn options(&self, json: bool) -> ListOptions {
        ListOptions {
            narrow: self.narrow.narrow(),
            json,
        }
    }
}

impl StatusArgs {
    pub fn options(&self, json: bool) -> StatusOptions {
        StatusOptions {
            narrow: self.narrow.narrow(),
            max_age: self.max_age,
            warn_age: self.warn_age,
            json,
        }
    }
}

impl VerifyArgs {
    pub fn options(&self, json: bool, quiet: bool) -> VerifyOptions {
        VerifyOptions {
            narrow: self.narrow.narrow(),
            source: self.source,
            strict: self.strict,
            json,
            quiet,
            identity: self.identity.clone(),
        }
    }
}

impl RestoreArgs {
    pub fn options(&self, check: bool, json: bool) -> RestoreOptions {
        RestoreOptions {
            pool: self.pool.clone(),
            image: self.image.clone(),
            to: self.to.clone(),
            to_file: self.to_file.clone(),
            at: self.at,
            check,
            json,
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
        } else if let Some(said) = err.downcast_ref::<crate::AlreadySaid>() {
            match said.0 {
                2 => Status::UsageOrConfig,
                75 => Status::Busy,
                _ => Status::Failed,
            }
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
        command().debug_assert();
    }

    #[test]
    fn cache_sizes_need_a_unit_and_one_mib() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1M", Some(1 << 20)),
            ("512M", Some(512 << 20)),
            ("4G", Some(4 << 30)),
            ("2GiB", Some(2 << 30)),
            ("1t", Some(1 << 40)),
            ("1024K", Some(1 << 20)),
            ("1023K", None),
            ("512", None),
            ("G", None),
            ("-1G", None),
            ("1.5G", None),
            ("99999999999T", None),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_cache_size(text).ok(), expected, "{text}");
        }
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
            let cli = Cli::try_parse_args(["cephbackup", flag, "/x.conf"]).unwrap();
            assert_eq!(cli.conf, PathBuf::from("/x.conf"));
        }
        let cli = Cli::try_parse_args(["cephbackup"]).unwrap();
        assert_eq!(cli.conf, PathBuf::from("/etc/cephbackup/cephbackup.conf"));
        assert!(!cli.check);
    }

    #[test]
    fn no_command_means_backup_and_the_config_goes_before_or_after_a_command() {
        let cli = Cli::try_parse_args(["cephbackup", "-c", "/x.conf"]).unwrap();
        assert!(cli.command.is_none());
        for args in [
            ["cephbackup", "-c", "/x.conf", "list"],
            ["cephbackup", "list", "-c", "/x.conf"],
        ] {
            let cli = Cli::try_parse_args(args).unwrap();
            assert_eq!(cli.conf, PathBuf::from("/x.conf"));
            assert!(matches!(cli.command, Some(Command::List(_))));
        }
    }

    #[test]
    fn restore_needs_one_target_and_reads_when() {
        let base = ["cephbackup", "restore", "--pool", "rbd", "--image", "vm"];
        let parse = |extra: &[&str]| Cli::try_parse_args(base.iter().chain(extra));
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
        let parse = |args: &[&str]| Cli::try_parse_args(args).unwrap();
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

    /// What `cephbackup COMMAND --help` shows, as clap renders it.
    fn help_of(command: &str) -> String {
        let mut definition = super::command();
        definition.build();
        let sub = definition.find_subcommand_mut(command).unwrap();
        sub.render_long_help().to_string()
    }

    #[test]
    fn a_command_refuses_and_hides_the_global_options_it_has_no_use_for() {
        let refusals = [
            ("list", "--check", "which changes nothing anyway"),
            ("list", "--wait=5", "which takes no image lock"),
            ("status", "--wait=5", "which takes no image lock"),
            ("status", "--lock-dir=/l", "which takes no image lock"),
            ("hosts", "--check", "which changes nothing anyway"),
            ("verify", "--check", "which changes nothing anyway"),
            (
                "init-destination",
                "--json",
                "which prints no JSON document",
            ),
            ("init-destination", "--wait=5", "which takes no image lock"),
        ];
        for (command, option, reason) in refusals {
            let name = option.split('=').next().unwrap();
            // Before and after the command, as the global option it is.
            for args in [
                ["cephbackup", option, command],
                ["cephbackup", command, option],
            ] {
                let cli = Cli::try_parse_args(args).unwrap();
                let err = cli.validate().unwrap_err();
                assert_eq!(
                    err.to_string(),
                    format!("{name} is not accepted by {command}, {reason}"),
                    "{args:?}"
                );
            }
            let help = help_of(command);
            assert!(
                !help.contains(name),
                "{command} --help shows {name}:\n{help}"
            );
        }
        // What a command does honour, it shows and accepts, before or after it.
        for (command, option) in [
            ("list", "--json"),
            ("status", "--json"),
            ("hosts", "--json"),
            ("verify", "--wait"),
            ("verify", "--lock-dir"),
            ("verify", "--json"),
            ("init-destination", "--check"),
            ("list", "--quiet"),
            ("list", "--conf"),
        ] {
            assert!(help_of(command).contains(option), "{command}: {option}");
        }
        for args in [
            &["cephbackup", "--json", "list"][..],
            &["cephbackup", "list", "--json"],
            &["cephbackup", "-c", "/x", "--json", "status"],
            &["cephbackup", "hosts", "--json"],
            &[
                "cephbackup",
                "verify",
                "--wait",
                "5",
                "--lock-dir",
                "/l",
                "--json",
            ],
            &["cephbackup", "--wait", "5", "verify"],
        ] {
            let cli = Cli::try_parse_args(args).unwrap();
            assert!(cli.validate().is_ok(), "{args:?}");
        }
        let cli = Cli::try_parse_args(["cephbackup", "list", "--json"]).unwrap();
        assert!(cli.json, "--json after the command is the global one");
    }

    #[test]
    fn the_backup_runs_own_options_are_refused_with_a_command() {
        for (args, message) in [
            (
                &["cephbackup", "--metrics-file", "/m.prom", "list"][..],
                "--metrics-file is only for a backup run (no command)",
            ),
            (
                &["cephbackup", "--host", "a", "status"],
                "--host is not accepted by status",
            ),
        ] {
            let err = Cli::try_parse_args(args).unwrap().validate().unwrap_err();
            assert!(err.to_string().starts_with(message), "{err}");
        }
        let cli = Cli::try_parse_args(["cephbackup", "--host", "a", "init-destination"]).unwrap();
        assert!(cli.validate().is_ok());
        // Options of the backup run alone are not even parsed after a command.
        assert!(Cli::try_parse_args(["cephbackup", "list", "--metrics-file", "/m"]).is_err());
    }

    #[test]
    fn help_answers_like_help_and_help_help_too() {
        for args in [
            &["cephbackup", "help"][..],
            &["cephbackup", "help", "--help"],
            &["cephbackup", "help", "-h"],
            &["cephbackup", "help", "restore"],
        ] {
            let err = Cli::try_parse_args(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(err.exit_code(), 0, "{args:?}");
        }
        let shown = Cli::try_parse_args(["cephbackup", "help", "restore"])
            .unwrap_err()
            .to_string();
        assert!(shown.contains("--to-file"), "{shown}");
        let help = Cli::try_parse_args(["cephbackup", "help", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("Usage: cephbackup help [COMMAND]"), "{help}");
        assert!(!help.contains("--check"), "{help}");
        let err = Cli::try_parse_args(["cephbackup", "help", "lsit"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn offline_needs_check_and_no_command_and_quiet_excludes_verbose() {
        let cli = Cli::try_parse_args(["cephbackup", "--check", "--offline"]).unwrap();
        assert!(cli.offline && cli.validate().is_ok());
        assert!(Cli::try_parse_args(["cephbackup", "--offline"]).is_err());
        let cli = Cli::try_parse_args(["cephbackup", "--check", "--offline", "init-destination"])
            .unwrap();
        assert!(cli.validate().is_err());
        assert!(Cli::try_parse_args(["cephbackup", "-q", "-v"]).is_err());
        assert!(
            Cli::try_parse_args(["cephbackup", "-v", "list"])
                .unwrap()
                .verbose
        );
    }

    #[test]
    fn wait_is_bounded_to_a_week() {
        let parse = |value: &str| Cli::try_parse_args(["cephbackup", &format!("--wait={value}")]);
        assert_eq!(parse("0").unwrap().wait, Some(0));
        assert_eq!(parse("604800").unwrap().wait, Some(MAX_WAIT_SECONDS));
        assert_eq!(Cli::try_parse_args(["cephbackup"]).unwrap().wait, None);
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
            Cli::try_parse_args(["cephbackup", "status"].iter().chain(args)).map(|cli| {
                let Some(Command::Status(args)) = cli.command else {
                    panic!("not status")
                };
                args
            })
        };
        let args = parse(&["--max-age", "26h", "--warn-age", "90m"]).unwrap();
        assert_eq!(
            args.max_age,
            Some(std::time::Duration::from_secs(26 * 3600))
        );
        assert_eq!(args.warn_age, Some(std::time::Duration::from_secs(90 * 60)));
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
        let err = Cli::try_parse_args(["cephbackup", "--check", "status"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("not accepted by status"), "{err}");
        let cli = Cli::try_parse_args(["cephbackup", "--metrics-file", "/m/c.prom"]).unwrap();
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

//! Entry point: parse the command line, run, print errors once, map the outcome to an exit status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use tracing_subscriber::fmt::time::ChronoUtc;
use tracing_subscriber::EnvFilter;

use cephbackup::bin::commands::{
    backup, check_config, hosts, init, list, mount, restore, status, verify,
};
use cephbackup::bin::{config, interrupt, lock, metrics, progress};
use cephbackup::bin::{Cli, Command, Outcome, Status};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    init_logging(&cli);
    run(&cli).into()
}

/// Log lines on stderr: `-q` keeps warnings and errors, `-v` adds the debug lines (every `rbd`
/// command with its duration), `CEPHBACKUP_LOG` overrides both. On a terminal the lines are
/// bare and a progress bar may be drawn; anywhere else (cron mail, journald, a log file) each
/// line starts with its RFC 3339 UTC time and no bar is ever drawn.
fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, true) => "debug",
        (false, false) => "info",
    };
    // The FUSE library's own lines (requests `mount` leaves to the kernel's defaults) are for
    // its developers: errors only, unless CEPHBACKUP_LOG asks.
    let filter = EnvFilter::try_from_env("CEPHBACKUP_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},fuser=error")));
    let terminal = std::io::stderr().is_terminal();
    progress::enable(terminal && !cli.quiet);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        .with_target(false)
        .with_ansi(terminal);
    if terminal {
        logs.without_time().init();
    } else {
        logs.with_timer(ChronoUtc::new("%Y-%m-%dT%H:%M:%S%.3fZ".to_string()))
            .init();
    }
}

fn run(cli: &Cli) -> Status {
    if let Err(err) = cli.validate() {
        eprintln!("error: {err}");
        return Status::UsageOrConfig;
    }
    let config = match config::load(&cli.conf) {
        Ok(config) => {
            print_problems("warning", &config.warnings);
            config
        }
        Err(problems) => {
            print_problems("error", &problems.errors);
            print_problems("warning", &problems.warnings);
            publish_config_error(cli, || config::metrics_file_despite_errors(&cli.conf));
            return Status::UsageOrConfig;
        }
    };
    if cli.offline {
        return match check_config::run(&config) {
            check_config::Verdict::Fine => Status::Success,
            check_config::Verdict::ConfigProblems => Status::UsageOrConfig,
            check_config::Verdict::DestinationProblems => Status::Failed,
        };
    }
    if needs_cluster(cli) {
        let problems = config::cluster_file_problems(&config);
        if !problems.is_empty() {
            print_problems("error", &problems);
            publish_config_error(cli, || config.metrics_file.clone());
            return Status::UsageOrConfig;
        }
    }
    if let Err(err) = interrupt::install() {
        eprintln!("error: {err:#}");
        return Status::Failed;
    }
    if let Some(command) = &cli.command {
        return run_command(command, &config, cli);
    }
    let options = backup::BackupOptions {
        check: cli.check,
        wait: cli.wait.map(Duration::from_secs),
        lock_dir: locking(cli).dir,
        quiet: cli.quiet,
        json: cli.json,
        metrics_file: cli.metrics_file.clone(),
        host: cli.host.clone(),
    };
    match backup::run(&config, &options) {
        backup::Ended::Succeeded => Status::Success,
        backup::Ended::Busy => Status::Busy,
        backup::Ended::Failed => Status::Failed,
        backup::Ended::Interrupted(signal) => Status::Interrupted(signal),
    }
}

/// A backup run (check mode included) that stops on a configuration error still replaces the
/// metrics file, when `--metrics-file` or the file's `[DEFAULT]` names one: left alone, it would
/// go on showing the last good run's success.
fn publish_config_error(cli: &Cli, from_config: impl FnOnce() -> Option<PathBuf>) {
    if cli.command.is_some() || cli.offline {
        return;
    }
    let Some(path) = cli.metrics_file.clone().or_else(from_config) else {
        return;
    };
    if let Err(err) = metrics::write(&path, &metrics::render_config_error(Utc::now())) {
        eprintln!("error: {err:#}");
    }
}

/// Whether this command talks to the cluster, so the `ceph config` and `ceph keyring` files must
/// be readable before anything starts: a backup run (also the offline check, which checks them),
/// a restore into an image, `verify --source`. `list`, `verify` and `restore --to-file` read only
/// the destination and work on a host without any Ceph configuration.
fn needs_cluster(cli: &Cli) -> bool {
    match &cli.command {
        None | Some(Command::Hosts(_)) => true,
        Some(Command::Restore(args)) => args.to.is_some(),
        Some(Command::Verify(args)) => args.source,
        Some(
            Command::List(_)
            | Command::Status(_)
            | Command::InitDestination(_)
            | Command::Help(_)
            | Command::Mount(_),
        ) => false,
    }
}

/// Where the locks are, and how long restore and verify wait for a backup of their image.
fn locking(cli: &Cli) -> lock::Locking {
    lock::Locking {
        dir: cli.lock_dir.clone().unwrap_or_else(lock::default_dir),
        wait: cli
            .wait
            .map_or(lock::DEFAULT_READ_WAIT, Duration::from_secs),
    }
}

/// One line each, `<label>: <file>:<line>: [<section>] <key>: <message>`, on stderr, before
/// anything else happens; warnings never change the exit status.
fn print_problems(label: &str, problems: &[config::ConfigProblem]) {
    for problem in problems {
        eprintln!("{label}: {problem}");
    }
}

/// The commands: each reports its own results; an error ends it, printed once.
fn run_command(command: &Command, config: &config::Config, cli: &Cli) -> Status {
    let locking = locking(cli);
    let result = match command {
        Command::List(args) => list::run(config, &args.options(cli.json)),
        Command::Status(args) => {
            return match status::run(config, &args.options(cli.json)) {
                Ok(health) => Status::Monitoring(health),
                Err(err) => {
                    eprintln!("error: {err:#}");
                    Status::of_status_error(&err)
                }
            };
        }
        Command::Restore(args) => {
            restore::run(config, &args.options(cli.check, cli.json), &locking)
                .map(|()| Outcome::Done)
        }
        Command::Verify(args) => verify::run(config, &args.options(cli.json, cli.quiet), &locking),
        Command::InitDestination(args) => {
            let options = args.options(cli.check);
            init::run(config, &options, &config.state_dir(), cli.host.as_deref())
                .map(|()| Outcome::Done)
        }
        Command::Mount(args) => {
            mount::run(config, &args.options(), &locking).map(|()| Outcome::Done)
        }
        Command::Hosts(_) => {
            hosts::run(config, cli.json, &config.state_dir()).map(|()| Outcome::Done)
        }
        // Cli::parse_args answers `help` itself, as clap answers --help.
        Command::Help(_) => Ok(Outcome::Done),
    };
    match result {
        Ok(outcome) => Status::of_outcome(outcome),
        Err(err) => {
            if err.downcast_ref::<cephbackup::AlreadySaid>().is_none() {
                eprintln!("error: {err:#}");
            }
            Status::of_error(&err)
        }
    }
}

//! Entry point: parse the command line, run, print errors once, map the outcome to an exit status.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cephbackup::backup::execute;
use cephbackup::cli::{Cli, Command, Status};
use cephbackup::commands::{init, list, restore, status, verify};
use cephbackup::output::{self, capture};
use cephbackup::{config, interrupt, lock, metrics, outln, Outcome};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    run(&cli).into()
}

fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter =
        EnvFilter::try_from_env("CEPHBACKUP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
            return Status::UsageOrConfig;
        }
    };
    if let Err(err) = interrupt::install() {
        eprintln!("error: {err:#}");
        return Status::Failed;
    }
    if let Some(command) = &cli.command {
        return run_command(command, &config, cli);
    }
    let options = execute::RunOptions {
        force_check: cli.check,
        progress: std::io::stderr().is_terminal(),
        now: &Utc::now,
        wait: Duration::from_secs(cli.wait),
        lock_dir: locking(cli).dir,
        cluster: None,
    };
    let outcome = if cli.json {
        // The text goes nowhere: stdout carries the one document.
        let (outcome, _text) = capture::stdout(|| execute::run(&config, &options));
        match output::json(&outcome.report) {
            Ok(document) => outln!("{document}"),
            Err(err) => eprintln!("error: cannot render the run report: {err}"),
        }
        outcome
    } else {
        let outcome = execute::run(&config, &options);
        outln!("{}", outcome.summary());
        outcome
    };
    let metrics_written = match cli.metrics_file.as_ref().or(config.metrics_file.as_ref()) {
        Some(path) => metrics::publish(&config, path, &outcome.report)
            .inspect_err(|err| eprintln!("error: {err:#}"))
            .is_ok(),
        None => true,
    };
    match (outcome.interrupted, outcome.succeeded()) {
        (Some(signal), _) => Status::Interrupted(signal),
        (None, true) if !metrics_written => Status::Failed,
        (None, true) => Status::Success,
        (None, false) if outcome.only_busy() => Status::Busy,
        (None, false) => Status::Failed,
    }
}

fn locking(cli: &Cli) -> lock::Locking {
    lock::Locking {
        dir: cli.lock_dir.clone().unwrap_or_else(lock::default_dir),
        wait: Duration::from_secs(cli.wait),
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
        Command::List(args) => {
            let mut options = args.options();
            options.json |= cli.json;
            list::run(config, &options)
        }
        Command::Status(args) => {
            let mut options = args.options();
            options.json |= cli.json;
            return match status::run(config, &options) {
                Ok(health) => Status::Monitoring(health),
                Err(err) => {
                    eprintln!("error: {err:#}");
                    Status::of_status_error(&err)
                }
            };
        }
        Command::Restore(args) => {
            let mut options = args.options(cli.check);
            options.json |= cli.json;
            restore::run(config, &options, &locking).map(|()| Outcome::Done)
        }
        Command::Verify(args) => {
            let mut options = args.options();
            options.json |= cli.json;
            verify::run(config, &options, &locking)
        }
        Command::InitDestination(args) => {
            init::run(config, &args.options(cli.check)).map(|()| Outcome::Done)
        }
    };
    match result {
        Ok(outcome) => Status::of_outcome(outcome),
        Err(err) => {
            eprintln!("error: {err:#}");
            Status::of_error(&err)
        }
    }
}

//! Entry point: parse the command line, run, print errors once, map the outcome to an exit status.

use std::io::IsTerminal;
use std::process::ExitCode;

use chrono::Utc;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cephbackup::cli::{Cli, Status};
use cephbackup::{config, execute};

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
    let config = match config::load(&cli.conf) {
        Ok(config) => config,
        Err(errors) => {
            for problem in &errors.0 {
                eprintln!("error: {problem}");
            }
            return Status::UsageOrConfig;
        }
    };
    let options = execute::RunOptions {
        force_check: cli.check,
        progress: std::io::stderr().is_terminal(),
        now: &Utc::now,
    };
    let outcome = execute::run(&config, &options);
    println!("{}", outcome.summary());
    if outcome.succeeded() {
        Status::Success
    } else {
        Status::BackupFailed
    }
}

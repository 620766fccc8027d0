//! The backup run itself, `cephbackup` without a command: every section of the configuration
//! backed up ([`crate::backup::execute`]), its lines or its JSON document on stdout, its
//! metrics published, and how it ended, for the exit status.

use std::path::PathBuf;
use std::time::Duration;

use crate::backup::execute::{self, ClusterFactory};
use crate::commands::hosts;
use crate::commands::metrics;
use crate::config::Config;
use crate::output::{self, capture};
use crate::{clock, lock, outln};

/// What a backup run is asked for.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Check mode for every section (`--check`): say what would be done, do nothing.
    pub check: bool,
    /// How long to wait for an image another run holds (`--wait`); the configuration's, else
    /// [`lock::DEFAULT_BACKUP_WAIT`], without it.
    pub wait: Option<Duration>,
    pub lock_dir: PathBuf,
    /// Stdout (the original's lines) held back unless the run did not fully succeed (`-q`).
    pub quiet: bool,
    /// One JSON document on stdout instead of the lines.
    pub json: bool,
    /// Where the run's metrics go (`--metrics-file`); the configuration's without it.
    pub metrics_file: Option<PathBuf>,
    /// Who this host is among those sharing the configuration (`--host`); its hostname
    /// without it.
    pub host: Option<String>,
}

/// How a backup run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every image was backed up (or, in check mode, shown) and the metrics published.
    Succeeded,
    /// Another run held an image's lock, and nothing else failed.
    Busy,
    /// An image or a section failed, or the metrics could not be published.
    Failed,
    /// Stopped by this signal.
    Interrupted(i32),
}

/// Runs the backup of every section of `config`.
pub fn run(config: &Config, options: &BackupOptions) -> Ended {
    run_on(config, options, None)
}

/// [`run`], against the clusters `cluster` makes (`rbd` without it).
fn run_on(config: &Config, options: &BackupOptions, cluster: Option<&ClusterFactory>) -> Ended {
    let metrics_file = options
        .metrics_file
        .as_ref()
        .or(config.metrics_file.as_ref());
    // A real run joins the round of its hosts; check mode only reads.
    let checking = options.check || config.pools.iter().all(|job| job.check_mode);
    let coordination = match hosts::connect(config, options.host.as_deref(), !checking) {
        Ok(coordination) => coordination,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(path) = metrics_file {
                let text = metrics::render_config_error(clock::now());
                if let Err(err) = metrics::write(path, &text) {
                    eprintln!("error: {err:#}");
                }
            }
            return Ended::Failed;
        }
    };
    let run_options = execute::RunOptions {
        force_check: options.check,
        now: &clock::now,
        wait: options
            .wait
            .or(config.wait)
            .unwrap_or(lock::DEFAULT_BACKUP_WAIT),
        lock_dir: options.lock_dir.clone(),
        state_dir: config.state_dir(),
        cluster,
        // Another host's image is waited for only when asked: by default it is theirs.
        lease_wait: options.wait.or(config.wait).unwrap_or(Duration::ZERO),
        coordination,
    };
    // Quiet: the run's stdout (the original's lines) is held back; its errors and warnings still
    // reach stderr, and a run that did not fully succeed also prints its summary.
    output::set_quiet(options.quiet);
    let outcome = if options.json {
        // The text goes nowhere: stdout carries the one document.
        let (outcome, _text) = capture::stdout(|| execute::run(config, &run_options));
        output::set_quiet(false);
        match output::json(&outcome.report) {
            Ok(document) => outln!("{document}"),
            Err(err) => eprintln!("error: cannot render the run report: {err}"),
        }
        outcome
    } else {
        let outcome = execute::run(config, &run_options);
        if !outcome.succeeded() || outcome.interrupted.is_some() {
            output::set_quiet(false);
        }
        outln!("{}", outcome.summary());
        outcome
    };
    let metrics_written = match metrics_file {
        Some(path) => metrics::publish(config, path, &outcome.report)
            .inspect_err(|err| eprintln!("error: {err:#}"))
            .is_ok(),
        None => true,
    };
    match (outcome.interrupted, outcome.succeeded()) {
        (Some(signal), _) => Ended::Interrupted(signal),
        (None, true) if !metrics_written => Ended::Failed,
        (None, true) => Ended::Succeeded,
        (None, false) if outcome.only_busy() => Ended::Busy,
        (None, false) => Ended::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::{Call, Fail, Fake};
    use crate::cluster::rbd::ClusterOps;
    use crate::output::capture;

    #[test]
    fn a_run_prints_its_document_publishes_its_metrics_and_says_how_it_ended() {
        let tmp = tempfile::tempdir().unwrap();
        let (dest, locks) = (tmp.path().join("dest"), tmp.path().join("locks"));
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&locks).unwrap();
        let metrics = tmp.path().join("cephbackup.prom");
        let text = format!(
            "[DEFAULT]\nstate directory = {}\nmetrics file = {}\n[rbd]\ndestination directory \
             = {}\nceph config = /etc/ceph/fake.conf\nimages = vm\nbackup mode = full\n",
            tmp.path().join("state").display(),
            metrics.display(),
            dest.display()
        );
        let config = crate::test_fixtures::parse_config(&text);
        let fake = Fake::default();
        fake.add_image("rbd", "vm", vec![7; 8192]);
        let cluster = {
            let fake = fake.clone();
            move |_: &_| -> Box<dyn ClusterOps> { Box::new(fake.clone()) }
        };
        let mut options = BackupOptions {
            json: true,
            wait: Some(Duration::ZERO),
            lock_dir: locks,
            ..BackupOptions::default()
        };
        let run =
            |options: &BackupOptions| capture::stdout(|| run_on(&config, options, Some(&cluster)));
        let (ended, stdout) = run(&options);
        assert_eq!(ended, Ended::Succeeded, "{stdout}");
        // One document, nothing else: the run's own lines went nowhere.
        let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        crate::commands::schema_check::assert_valid("run", &document);
        assert!(std::fs::read_to_string(&metrics)
            .unwrap()
            .contains("cephbackup_"));
        // Metrics that cannot be published fail a run that did everything else.
        options.metrics_file = Some(tmp.path().join("no/such/folder/m.prom"));
        assert_eq!(run(&options).0, Ended::Failed);
        // A failed image fails the run; its lines and summary are printed without --json.
        options.metrics_file = None;
        options.json = false;
        fake.fail(Call::CreateSnapshot, "rbd/vm", Fail::NotFound);
        let (ended, stdout) = run(&options);
        assert_eq!(ended, Ended::Failed);
        assert!(
            stdout.contains("Summary: 0 image(s) backed up, 1 failed,"),
            "{stdout}"
        );
        assert!(stdout.ends_with("\nFailed: rbd/vm\n"), "{stdout}");
    }
}

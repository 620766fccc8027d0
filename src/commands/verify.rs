//! `cephbackup verify`: proof that the backups restore, with one line per problem.
//!
//! Offline, every file is read whole, once: its bytes are hashed and compared with its `.sha256`
//! file, a compressed file must be one complete tar member (which also makes gzip check its own
//! CRC), and a diff must be a well-formed `rbd diff v1` stream whose snapshot names are the ones
//! its file name promises. The chain model adds what no single file shows: missing links and
//! diffs that hang off them. With `--source`, the newest point whose snapshot is still in the
//! cluster is rebuilt from the backups into a temporary sparse file and its SHA-256 compared with
//! `rbd export` of that snapshot.
//!
//! Severity: anything that makes a backup unrestorable or unproven is an error (non-zero exit).
//! A file with no `.sha256` file is a warning, because files written by the original tool never
//! had one; `--strict` makes it an error. Such a full whose length differs from the image size
//! its chain records (exactly, when a diff ends at its snapshot) is an error, used or not: it
//! cannot be what it claims. Leftovers and strangers in a folder are warnings.

use crate::{out, outln};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, Seek};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::info;

use crate::backup::execute::ClusterFactory;
use crate::cluster::rbd::{spec, ClusterOps, Op, Rbd};
use crate::commands::catalog::{self, ImageFolder, Narrow};
use crate::config::Config;
use crate::folder::chain::{FolderFile, Layout};
use crate::folder::door::Door;
use crate::folder::format::diffstream::DiffReader;
use crate::folder::format::encrypt;
use crate::folder::format::rebuild;
use crate::folder::format::write::Hashing;
use crate::folder::read::{self, Limits};
use crate::output::{self, escaped, human_bytes};
use crate::report::Envelope;
use crate::{interrupt, lock, progress, Outcome};

const BUFFER: usize = 1 << 20;

pub use crate::report::Severity;

/// One problem, naming the file (or, for the comparison with the cluster, the snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub severity: Severity,
    pub message: String,
}

/// The comparison of a rebuilt point with the cluster's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceCheck {
    pub snapshot: String,
    pub rebuilt_sha256: String,
    pub cluster_sha256: String,
    pub matches: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ImageVerdict {
    pub pool: String,
    pub image: String,
    pub folder: String,
    pub files_checked: usize,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    pub source: Option<SourceCheck>,
    /// Encrypted files proven by their checksum and age header only (no `--identity`).
    #[serde(skip)]
    pub sealed_only: usize,
}

impl ImageVerdict {
    fn problem(&mut self, file: impl Into<String>, severity: Severity, message: impl Into<String>) {
        self.problems.push(Problem {
            file: file.into(),
            severity,
            message: message.into(),
        });
    }

    fn count(&self, severity: Severity) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == severity)
            .count()
    }
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    ok: bool,
    errors: usize,
    warnings: usize,
    images: &'a [ImageVerdict],
}

/// What `verify` is asked for.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub narrow: Narrow,
    /// Also compare the newest point still in the cluster with `rbd export` of its snapshot.
    pub source: bool,
    /// Files without a `.sha256` file are errors, not warnings.
    pub strict: bool,
    /// One JSON document instead of text.
    pub json: bool,
    /// Text only for images with a problem, and no summary when there is none: a weekly timer
    /// or cron job then says something only when something is wrong.
    pub quiet: bool,
    /// The identity file that opens encrypted files; without it they are proven by checksum.
    pub identity: Option<PathBuf>,
}

/// Checks and reports; [`Outcome::FoundProblems`] when at least one error was found.
pub fn run(config: &Config, args: &VerifyOptions, locking: &lock::Locking) -> Result<Outcome> {
    encrypt::use_identity_file(args.identity.as_deref())?;
    run_on(config, args, locking, &|job| {
        Box::new(Rbd::new(job.cluster()))
    })
}

/// [`run`], with `--source` comparing against the clusters `cluster` makes.
fn run_on(
    config: &Config,
    args: &VerifyOptions,
    locking: &lock::Locking,
    cluster: &ClusterFactory,
) -> Result<Outcome> {
    let folders = catalog::select(
        config,
        args.narrow.pool.as_deref(),
        args.narrow.image.as_deref(),
    )?;
    let started = std::time::Instant::now();
    let mut reports = Vec::new();
    for folder in &folders {
        interrupt::check()?;
        // Shared: no backup may prune or slide the chain while it is being read.
        let _lock = locking.image(&folder.job.pool, &folder.image, lock::Kind::Shared)?;
        let report = verify_image(folder, args, cluster);
        // An image cut short by a signal is not reported as checked.
        interrupt::check()?;
        let clean = report.count(Severity::Error) + report.count(Severity::Warning) == 0;
        let shown = !args.json && (!args.quiet || !clean);
        if shown {
            out!("{}", report_lines(&report));
        }
        reports.push(report);
    }
    interrupt::check()?;
    let errors: usize = reports.iter().map(|r| r.count(Severity::Error)).sum();
    let warnings: usize = reports.iter().map(|r| r.count(Severity::Warning)).sum();
    if args.json {
        let document = Document {
            envelope: Envelope::new("verify", chrono::Utc::now()),
            ok: errors == 0,
            errors,
            warnings,
            images: &reports,
        };
        outln!("{}", output::json(&document)?);
    } else if !(args.quiet && errors + warnings == 0) {
        let took = progress::duration(started.elapsed());
        outln!("{}", summary(&reports, errors, warnings, &took));
    }
    Ok(if errors == 0 {
        Outcome::Done
    } else {
        Outcome::FoundProblems
    })
}

/// The problems of one image (and its comparison with the cluster), one line each.
fn report_lines(report: &ImageVerdict) -> String {
    let mut out = String::new();
    for problem in &report.problems {
        let severity = match problem.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(
            out,
            "{severity}: {}: {}",
            escaped(&problem.file),
            escaped(&problem.message)
        );
    }
    if let Some(source) = report.source.as_ref().filter(|s| s.matches) {
        let _ = writeln!(
            out,
            "ok: {}: rebuilt from the backups, same SHA-256 as rbd export of the snapshot \
             ({})",
            escaped(&spec(&report.pool, &report.image, Some(&source.snapshot))),
            source.cluster_sha256
        );
    }
    out
}

fn summary(reports: &[ImageVerdict], errors: usize, warnings: usize, took: &str) -> String {
    let files: usize = reports.iter().map(|r| r.files_checked).sum();
    let bytes: u64 = reports.iter().map(|r| r.bytes_read).sum();
    let sealed: usize = reports.iter().map(|r| r.sealed_only).sum();
    let verdict = match (errors, warnings) {
        (0, 0) => "no problems".to_string(),
        (0, w) => format!("no errors, {w} warning(s)"),
        (e, w) => format!("{e} error(s), {w} warning(s)"),
    };
    let sealed = match sealed {
        0 => String::new(),
        n => format!(
            "; {n} encrypted file(s) proven by checksum and age header only (--identity FILE \
             reads their contents)"
        ),
    };
    format!(
        "Verified {files} file(s) of {} image(s), {} read in {took}: {verdict}{sealed}",
        reports.len(),
        human_bytes(bytes)
    )
}

fn verify_image(
    folder: &ImageFolder,
    args: &VerifyOptions,
    cluster: &ClusterFactory,
) -> ImageVerdict {
    let dir = folder.dir.location();
    let mut report = ImageVerdict {
        pool: folder.job.pool.clone(),
        image: folder.image.clone(),
        folder: dir.display().to_string(),
        ..ImageVerdict::default()
    };
    let scanned = match read::scan(&*folder.dir, &folder.image) {
        Ok(scanned) => scanned,
        Err(err) => {
            report.problem(
                dir.display().to_string(),
                Severity::Error,
                format!("{err:#}"),
            );
            return report;
        }
    };
    let layout = &scanned.layout;
    if layout.files.is_empty() && scanned.not_regular.is_empty() {
        report.problem(
            dir.display().to_string(),
            Severity::Warning,
            "no backup files",
        );
    }
    for entry in &scanned.not_regular {
        let path = dir.join(&entry.name).display().to_string();
        report.problem(path, Severity::Error, entry.message());
    }
    for finding in &layout.findings {
        let severity = if finding.kind.is_error() {
            Severity::Error
        } else {
            Severity::Warning
        };
        let path = dir.join(&finding.name).display().to_string();
        report.problem(path, severity, finding.message.clone());
    }
    let limits = Limits::learn(&*folder.dir, layout);
    // Each file found bad, with its first error: that line also says what it costs.
    let mut bad: Vec<(&str, usize)> = Vec::new();
    for stored in &layout.files {
        if interrupt::received().is_some() {
            return report;
        }
        info!("checking {}", escaped(&stored.name));
        let before = report.problems.len();
        check_file(
            &*folder.dir,
            &layout.image,
            stored,
            &limits,
            args.strict,
            &mut report,
        );
        if let Some(first) = report.problems[before..]
            .iter()
            .position(|p| p.severity == Severity::Error)
        {
            bad.push((&stored.name, before + first));
        }
    }
    name_unusable_points(layout, &bad, &mut report);
    if args.source {
        check_source(folder, layout, &limits, &*cluster(folder.job), &mut report);
    }
    report
}

/// Adds to the first error of each bad file the restore points that need it (its own and every
/// later one of its chain), which `restore` cannot rebuild any more, and the newest point that
/// needs no bad file: what the administrator restores instead, or backs up afresh from.
fn name_unusable_points(layout: &Layout, bad: &[(&str, usize)], report: &mut ImageVerdict) {
    const SHOWN: usize = 5;
    let names: Vec<&str> = bad.iter().map(|(name, _)| *name).collect();
    let newest_good = layout.newest_avoiding(&names, None);
    for &(name, problem) in bad {
        let unusable = layout.points_needing(&[name]);
        if unusable.is_empty() {
            continue;
        }
        let mut listed: Vec<&str> = unusable.iter().take(SHOWN).map(|p| p.as_str()).collect();
        let more = unusable.len().saturating_sub(SHOWN);
        let more_text = format!("and {more} more");
        if more > 0 {
            listed.push(&more_text);
        }
        let instead = match newest_good {
            Some(good) => format!(
                "the newest point that can be restored is {good} ({})",
                output::time(good.taken())
            ),
            None => "no point of this image can be restored".to_string(),
        };
        let message = &mut report.problems[problem].message;
        let _ = write!(
            message,
            "; restore points that need this file cannot be restored: {}; {instead}",
            listed.join(", ")
        );
    }
}

/// Without the private key, an encrypted file is read as stored: its bytes against their
/// checksum, and its age header.
fn check_sealed(
    dir: &dyn Door,
    stored: &FolderFile,
    recorded: Option<&str>,
    shown: &str,
    report: &mut ImageVerdict,
) {
    let read = read::read_sealed_bytes(dir, &stored.name);
    if interrupt::received().is_some() {
        return;
    }
    report.files_checked += 1;
    report.sealed_only += 1;
    match read {
        Err(err) => report.problem(shown, Severity::Error, format!("{err:#}")),
        Ok((file_bytes, sha256)) => {
            report.bytes_read += file_bytes;
            let facts = read::Facts {
                file_bytes,
                sha256,
                raw_bytes: 0,
                member: None,
            };
            if let Err(err) = read::check_digest(recorded, &facts) {
                report.problem(shown, Severity::Error, format!("{err:#}"));
            }
        }
    }
}

/// Reads one file whole: checksum, archive shape, diff structure and names.
fn check_file(
    dir: &dyn Door,
    image: &str,
    stored: &FolderFile,
    limits: &Limits,
    strict: bool,
    report: &mut ImageVerdict,
) {
    let shown = dir.location_of(&stored.name).display().to_string();
    let recorded = match &stored.checksum {
        None => {
            let severity = if strict {
                Severity::Error
            } else {
                Severity::Warning
            };
            report.problem(
                &shown,
                severity,
                format!(
                    "no checksum file {}.sha256, so its bytes cannot be proven (files written by \
                     the original tool have none)",
                    stored.name
                ),
            );
            None
        }
        Some(_) => match read::recorded_digest(dir, &stored.name) {
            Ok(digest) => digest,
            Err(err) => {
                report.problem(&shown, Severity::Error, format!("{err:#}"));
                None
            }
        },
    };
    if stored.file.encrypted && encrypt::identities().is_none() {
        check_sealed(dir, stored, recorded.as_deref(), &shown, report);
        return;
    }
    let read = read::read_raw(dir, &stored.name, &stored.file, &limits.of(stored), |raw| {
        if stored.file.is_full() {
            io::copy(raw, &mut io::sink())?;
            return Ok(());
        }
        // The header is checked before any record is read: its size bounds the payload.
        let mut diff = DiffReader::new(BufReader::with_capacity(BUFFER, raw))?;
        read::check_diff_header(stored, diff.header()).map_err(anyhow::Error::msg)?;
        while diff.next_record()?.is_some() {}
        diff.finish()?;
        Ok(())
    });
    if interrupt::received().is_some() {
        // Whatever failed, failed because of the signal; the run ends without a verdict.
        return;
    }
    report.files_checked += 1;
    let facts = match read {
        Ok(((), facts)) => facts,
        Err(err) => {
            report.problem(&shown, Severity::Error, format!("{err:#}"));
            return;
        }
    };
    report.bytes_read += facts.file_bytes;
    if let Err(err) = read::check_digest(recorded.as_deref(), &facts) {
        report.problem(&shown, Severity::Error, format!("{err:#}"));
    }
    // Without a checksum, the image size the chain records is the only proof of a full's length
    // (a truncated copy of the original's, say). The size at its own snapshot, when a diff
    // records it, was held to exactly already ([`Limits::of`]).
    if let (true, None, None, Some((size, diff))) = (
        stored.file.is_full(),
        &recorded,
        limits.own_size(stored),
        limits.chain_size(stored),
    ) {
        if facts.raw_bytes != size {
            report.problem(
                &shown,
                Severity::Error,
                format!(
                    "holds {} bytes of image, but {} records an image of {size} bytes, and no \
                     checksum file proves it otherwise",
                    facts.raw_bytes,
                    escaped(diff)
                ),
            );
        }
    }
    if let Some(member) = &facts.member {
        let raw_name = stored.file.raw_name(image);
        let member_name = Path::new(member).file_name().and_then(|n| n.to_str());
        if member_name != Some(raw_name.as_str()) {
            report.problem(
                &shown,
                Severity::Error,
                format!("the archive holds {member}, not {raw_name}"),
            );
        }
    }
}

/// Rebuilds the newest point whose snapshot the cluster still has and compares the two.
fn check_source(
    folder: &ImageFolder,
    layout: &Layout,
    limits: &Limits,
    rbd: &dyn ClusterOps,
    report: &mut ImageVerdict,
) {
    let (pool, image) = (folder.job.pool.as_str(), folder.image.as_str());
    let label = spec(pool, image, None);
    let snapshots = match rbd.image_exists(pool, image) {
        Ok(true) => rbd.list_snapshots(pool, image),
        Ok(false) => {
            report.problem(
                &label,
                Severity::Warning,
                "not in the cluster any more: nothing to compare the backups with",
            );
            return;
        }
        Err(err) => Err(err),
    };
    let snapshots = match snapshots {
        Ok(snapshots) => snapshots,
        Err(err) => {
            report.problem(&label, Severity::Error, format!("{err:#}"));
            return;
        }
    };
    let point = layout
        .points()
        .into_iter()
        .rev()
        .find(|p| snapshots.iter().any(|s| s.name == p.as_str()));
    let Some(point) = point else {
        report.problem(
            &label,
            Severity::Warning,
            "no restore point has its snapshot in the cluster any more (full mode removes them): \
             nothing to compare the backups with",
        );
        return;
    };
    let at = spec(pool, image, Some(point.as_str()));
    // Every restore point has a route; none would be a bug in the chain model, said as such.
    let Some(route) = layout.route(point) else {
        report.problem(&at, Severity::Error, "no route to this restore point");
        return;
    };
    info!("rebuilding {} from {} file(s)", escaped(&at), route.len());
    let snapshot = (pool, image, point.as_str());
    match compare(&*folder.dir, &route, limits, rbd, snapshot) {
        Ok((rebuilt, cluster)) => {
            let matches = rebuilt == cluster;
            if !matches {
                report.problem(
                    &at,
                    Severity::Error,
                    format!(
                        "the image rebuilt from the backups (SHA-256 {rebuilt}) differs from rbd \
                         export of the snapshot (SHA-256 {cluster})"
                    ),
                );
            }
            report.source = Some(SourceCheck {
                snapshot: point.to_string(),
                rebuilt_sha256: rebuilt,
                cluster_sha256: cluster,
                matches,
            });
        }
        Err(err) => report.problem(&at, Severity::Error, format!("{err:#}")),
    }
}

/// SHA-256 of the point rebuilt from `route` and of the cluster's export of `snapshot` (pool,
/// image, snapshot), computed side by side.
fn compare(
    dir: &dyn Door,
    route: &[&FolderFile],
    limits: &Limits,
    rbd: &dyn ClusterOps,
    (pool, image, snap): (&str, &str, &str),
) -> Result<(String, String)> {
    let mut scratch = tempfile::tempfile().context(
        "cannot create a temporary file in $TMPDIR to rebuild the image in (set TMPDIR)",
    )?;
    rebuild::rebuild(
        dir,
        route,
        limits,
        &scratch,
        "the temporary file in $TMPDIR",
    )
    .context("cannot rebuild from the backups")?;
    std::thread::scope(|scope| {
        let cluster = scope.spawn(move || -> Result<String> {
            let mut hashing = Hashing::new(rbd.open_export(pool, image, None, snap)?);
            io::copy(&mut hashing, &mut io::sink()).map_err(|err| {
                // A failed rbd arrives wrapped in the read error; keep its own message.
                match err.into_inner() {
                    Some(inner) => anyhow::anyhow!("{inner}"),
                    None => {
                        let export = rbd.show(pool, image, Op::Export { base: None, snap });
                        anyhow::anyhow!("cannot read `{export}`")
                    }
                }
            })?;
            Ok(hashing.hex_digest())
        });
        let rebuilt = hash_file(&mut scratch);
        let cluster = cluster
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("hashing the export failed")));
        Ok((rebuilt?, cluster?))
    })
}

fn hash_file(file: &mut File) -> Result<String> {
    file.rewind()?;
    let mut hashing = Hashing::new(BufReader::with_capacity(BUFFER, file));
    io::copy(&mut hashing, &mut io::sink()).context("cannot read the rebuilt image")?;
    Ok(hashing.hex_digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::{Call, Fail, Fake};
    use crate::commands::chain::{self, diff, sha256, S0, S1, S2};
    use crate::output::capture;
    use crate::test_fixtures::{diff_file, full_file, names_in, write_with_checksum};
    use std::fs;

    /// A folder with a full and two diffs, each with its checksum file.
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::commands::chain::write(dir.path());
        dir
    }

    fn problems(dir: &Path, strict: bool) -> Vec<(String, Severity, String)> {
        let layout = Layout::build("vm", &names_in(dir));
        let mut report = ImageVerdict::default();
        for finding in &layout.findings {
            report.problem(&finding.name, Severity::Error, finding.message.clone());
        }
        let folder = crate::folder::door::LocalFolder::at(dir);
        let limits = Limits::learn(&folder, &layout);
        for stored in &layout.files {
            check_file(&folder, "vm", stored, &limits, strict, &mut report);
        }
        report
            .problems
            .into_iter()
            .map(|p| {
                let name = Path::new(&p.file).file_name().unwrap().to_str().unwrap();
                (name.to_string(), p.severity, p.message)
            })
            .collect()
    }

    #[test]
    fn a_clean_chain_is_clean() {
        let dir = folder();
        assert_eq!(problems(dir.path(), true), []);
    }

    #[test]
    fn each_kind_of_damage_is_one_line_naming_its_file() {
        let d1 = diff_file(S0, S1);
        let d2 = diff_file(S1, S2);
        let full = full_file(S0);
        type Damage = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Damage, &str, &str)> = vec![
            (
                "truncated diff",
                Box::new({
                    let d1 = d1.clone();
                    move |dir: &Path| {
                        let path = dir.join(&d1);
                        let data = fs::read(&path).unwrap();
                        fs::write(&path, &data[..data.len() - 1]).unwrap();
                    }
                }),
                d1.as_str(),
                "stream ends at byte",
            ),
            (
                "flipped byte in the full",
                Box::new({
                    let full = full.clone();
                    move |dir: &Path| {
                        let path = dir.join(&full);
                        let mut data = fs::read(&path).unwrap();
                        data[1000] ^= 1;
                        fs::write(&path, &data).unwrap();
                    }
                }),
                full.as_str(),
                "checksum mismatch",
            ),
            (
                "names that do not match the file",
                Box::new({
                    let d2 = d2.clone();
                    move |dir: &Path| {
                        write_with_checksum(dir, &d2, &diff(S0, S1));
                    }
                }),
                d2.as_str(),
                "but the file name says from",
            ),
            (
                "missing link",
                Box::new({
                    let d1 = d1.clone();
                    move |dir: &Path| {
                        fs::remove_file(dir.join(&d1)).unwrap();
                        fs::remove_file(dir.join(format!("{d1}.sha256"))).unwrap();
                    }
                }),
                d2.as_str(),
                "missing link",
            ),
        ];
        for (what, damage, file, message) in cases {
            let dir = folder();
            damage(dir.path());
            let found = problems(dir.path(), false);
            assert_eq!(found.len(), 1, "{what}: {found:?}");
            let (name, severity, text) = &found[0];
            assert_eq!(
                (name.as_str(), *severity),
                (file, Severity::Error),
                "{what}"
            );
            assert!(text.contains(message), "{what}: {text}");
        }
    }

    #[test]
    fn a_missing_checksum_file_is_a_warning_unless_strict() {
        let dir = folder();
        let d1 = diff_file(S0, S1);
        fs::remove_file(dir.path().join(format!("{d1}.sha256"))).unwrap();
        for (strict, severity) in [(false, Severity::Warning), (true, Severity::Error)] {
            let found = problems(dir.path(), strict);
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!((found[0].0.as_str(), found[0].1), (d1.as_str(), severity));
            assert!(found[0].2.starts_with("no checksum file"), "{}", found[0].2);
        }
    }

    #[test]
    fn a_full_without_checksum_must_have_the_size_its_chain_records() {
        let dir = folder();
        let full = full_file(S0);
        fs::remove_file(dir.path().join(format!("{full}.sha256"))).unwrap();
        // The right length: only the missing checksum is said.
        let found = problems(dir.path(), false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1, Severity::Warning);
        // A truncated copy (the original's export cut short, a 0-byte stray) is an error.
        for length in [0usize, 4096] {
            fs::write(dir.path().join(&full), vec![1u8; length]).unwrap();
            let found = problems(dir.path(), false);
            let errors: Vec<&(String, Severity, String)> =
                found.iter().filter(|p| p.1 == Severity::Error).collect();
            assert_eq!(errors.len(), 1, "{found:?}");
            assert_eq!(errors[0].0, full);
            assert!(
                errors[0]
                    .2
                    .starts_with(&format!("holds {length} bytes of image, but vm@{S1}")),
                "{}",
                errors[0].2
            );
            assert!(
                errors[0].2.contains("records an image of 1048576 bytes"),
                "{}",
                errors[0].2
            );
        }
    }

    #[test]
    fn the_summary_counts() {
        let report = ImageVerdict {
            files_checked: 3,
            bytes_read: 3 << 20,
            ..ImageVerdict::default()
        };
        assert_eq!(
            summary(&[report], 0, 0, "1.5 s"),
            "Verified 3 file(s) of 1 image(s), 3.0 MiB read in 1.5 s: no problems"
        );
        assert_eq!(
            summary(&[], 2, 1, "0.0 s"),
            "Verified 0 file(s) of 0 image(s), 0 B read in 0.0 s: 2 error(s), 1 warning(s)"
        );
    }

    #[test]
    fn the_json_document_matches_its_schema() {
        let mut report = ImageVerdict {
            pool: "rbd".into(),
            image: "vm".into(),
            folder: "/b/rbd/vm".into(),
            files_checked: 2,
            bytes_read: 4096,
            source: Some(SourceCheck {
                snapshot: S0.into(),
                rebuilt_sha256: "ab".into(),
                cluster_sha256: "ab".into(),
                matches: true,
            }),
            ..ImageVerdict::default()
        };
        report.problem("vm@x.full", Severity::Warning, "no .sha256 file");
        let reports = [report];
        let document = Document {
            envelope: Envelope::new("verify", chrono::Utc::now()),
            ok: true,
            errors: 0,
            warnings: 1,
            images: &reports,
        };
        let value = serde_json::to_value(&document).unwrap();
        assert_eq!(value["kind"], "verify");
        assert_eq!(value["images"][0]["problems"][0]["file"], "vm@x.full");
        crate::commands::schema_check::assert_valid("verify", &value);
        let mut wrong = value;
        wrong["images"][0]["problems"][0]["severity"] = "fatal".into();
        assert!(!crate::commands::schema_check::accepts("verify", &wrong));
    }

    /// `verify --source` of the chain (newest point S2) against `fake`: the outcome and stdout.
    fn verify_source(fake: &Fake) -> (Outcome, String) {
        let backups = chain::backups();
        let args = VerifyOptions {
            narrow: Narrow {
                pool: Some("rbd".into()),
                image: Some("vm".into()),
            },
            source: true,
            ..VerifyOptions::default()
        };
        let fake = fake.clone();
        let cluster = move |_: &_| -> Box<dyn ClusterOps> { Box::new(fake.clone()) };
        let (outcome, stdout) =
            capture::stdout(|| run_on(&backups.config, &args, &backups.locking, &cluster));
        (outcome.unwrap(), stdout)
    }

    #[test]
    fn the_source_is_the_export_of_the_newest_point_the_cluster_still_has() {
        let fake = Fake::default();
        fake.add_image("rbd", "vm", chain::latest());
        fake.create_snapshot("rbd", "vm", S1).unwrap();
        // The image moved on since: only its snapshot is compared.
        fake.write("rbd", "vm", 0, b"since");
        let (outcome, stdout) = verify_source(&fake);
        assert_eq!(outcome, Outcome::Done, "{stdout}");
        assert!(
            stdout.starts_with(&format!(
                "ok: rbd/vm@{S1}: rebuilt from the backups, same SHA-256 as rbd export of the \
                 snapshot ({})\n",
                sha256(&chain::latest())
            )),
            "{stdout}"
        );
        let export = format!("export rbd/vm@{S1}");
        assert_eq!(
            fake.calls()[1..],
            ["ls rbd", "snap ls rbd/vm", export.as_str()]
        );
    }

    #[test]
    fn a_source_that_differs_or_cannot_be_read_is_an_error_and_a_missing_one_a_warning() {
        let differs = Fake::default();
        differs.add_image("rbd", "vm", chain::full());
        differs.create_snapshot("rbd", "vm", S2).unwrap();
        let (outcome, stdout) = verify_source(&differs);
        assert_eq!(outcome, Outcome::FoundProblems);
        let (rebuilt, cluster) = (sha256(&chain::latest()), sha256(&chain::full()));
        assert!(
            stdout.starts_with(&format!(
                "error: rbd/vm@{S2}: the image rebuilt from the backups (SHA-256 {rebuilt}) \
                 differs from rbd export of the snapshot (SHA-256 {cluster})\n"
            )),
            "{stdout}"
        );
        let failing = Fake::default();
        failing.add_image("rbd", "vm", chain::latest());
        failing.create_snapshot("rbd", "vm", S2).unwrap();
        failing.fail(Call::Export, "rbd/vm", Fail::HalfWay);
        let (outcome, stdout) = verify_source(&failing);
        assert_eq!(outcome, Outcome::FoundProblems);
        assert!(
            stdout.starts_with(&format!("error: rbd/vm@{S2}: ")),
            "{stdout}"
        );
        assert!(stdout.contains("injected HalfWay"), "{stdout}");
        let (outcome, stdout) = verify_source(&Fake::default());
        assert_eq!(outcome, Outcome::Done);
        assert!(
            stdout.starts_with(
                "warning: rbd/vm: not in the cluster any more: nothing to compare the backups \
                 with\n"
            ),
            "{stdout}"
        );
    }
}

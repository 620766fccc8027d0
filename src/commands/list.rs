//! `cephbackup list`: every image's chains, the points they restore to, when each point will be
//! removed under the current configuration, and what does not fit.
//!
//! Reads the backup folders only (no cluster, no lock: files appear under their final names only
//! once complete, so a listing during a backup is merely a moment early), and reads no file: the
//! chains are those of the regular files ([`read::scan`]), and an entry named like a backup or
//! checksum file that is something else (a symlink, a FIFO, a folder) is flagged as an error. The
//! text and JSON renderings are pure functions of the scanned folders; every name in the text is
//! shown escaped ([`escaped`]), so a name cannot fake a line or drive the terminal. Each point
//! also says when it goes ([`Expiries`]), each image how old its newest point is.
//!
//! Images the configuration names but that have no folder are listed too, as never backed up,
//! and make `list` end with [`Outcome::FoundProblems`], as does any configured image without a
//! restore point: a gap in the coverage is a problem to see, not an absence to miss.

use crate::{out, outln};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backup::plan::Settings;
use crate::backup::retention::{self, Expiry, Policy};
use crate::cluster::rbd::spec;
use crate::commands::catalog::{self, ImageFolder, Narrow};
use crate::commands::status::{age, PointDoc};
use crate::config::{Config, ImageSelection, PoolJob};
use crate::folder::chain::{Finding, FindingKind, FolderFile, Layout};

use crate::folder::naming::{Compression, SnapName};
use crate::folder::read::{self, NotRegularEntry};
use crate::folder::untrusted::EntryKind;
use crate::output::human_bytes;
use crate::output::{self, escaped};
use crate::report::{rfc3339, Envelope};
use crate::Outcome;

/// One image's folder as scanned.
pub struct Listing {
    pub pool: String,
    pub image: String,
    pub folder: String,
    pub layout: Layout,
    /// Entries named like backup or checksum files that are not regular files.
    pub not_regular: Vec<NotRegularEntry>,
    /// When each restore point goes; `None` shows no retention at all.
    pub expiry: Option<Expiries>,
    /// Named by its section's `images` (or the section takes every image).
    pub configured: bool,
    /// False for a configured image that has no folder: never backed up.
    pub folder_exists: bool,
    /// How old the newest restore point is, when there is one.
    pub age: Option<std::time::Duration>,
}

impl Listing {
    /// A configured image with no restore point: a gap in the coverage.
    pub fn uncovered(&self) -> bool {
        self.configured && self.layout.points().is_empty()
    }
}

/// When each restore point of a folder will be removed, under its section's configuration.
pub struct Expiries {
    pub policy: Policy,
    pub by_point: BTreeMap<SnapName, Expiry>,
}

impl Expiries {
    /// Judged at `now` (a window that has passed reads "removed by the next run").
    pub fn of(policy: Policy, layout: &Layout, now: DateTime<Utc>) -> Expiries {
        Expiries {
            policy,
            by_point: retention::expiries(&policy, layout, now),
        }
    }
}

/// What `list` is asked for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub narrow: Narrow,
    /// One JSON document instead of text.
    pub json: bool,
}

/// Prints the listing; [`Outcome::FoundProblems`] when a folder could not be scanned (said on
/// stderr, the others still listed) or a configured image has no backup.
pub fn run(config: &Config, options: &ListOptions) -> Result<Outcome> {
    let (pool, image) = (
        options.narrow.pool.as_deref(),
        options.narrow.image.as_deref(),
    );
    let folders: Vec<ImageFolder> = catalog::select(config, pool, None)?
        .into_iter()
        .filter(|folder| image.is_none_or(|wanted| wanted == folder.image))
        .collect();
    let never = never_backed_up(config, pool, image, &folders)?;
    if let (Some(_), true, true) = (image, folders.is_empty(), never.is_empty()) {
        // Neither a folder nor a configured image: the usual error, naming where it looked.
        catalog::select(config, pool, image)?;
    }
    let mut listings = Vec::new();
    let mut outcome = Outcome::Done;
    let now = Utc::now();
    for folder in folders.iter().chain(&never) {
        match scan(folder, now) {
            Ok(listing) => listings.push(listing),
            Err(err) => {
                eprintln!(
                    "error: {}: {}",
                    escaped(&folder.label()),
                    escaped(&format!("{err:#}"))
                );
                outcome = Outcome::FoundProblems;
            }
        }
    }
    if listings.iter().any(Listing::uncovered) {
        outcome = Outcome::FoundProblems;
    }
    if options.json {
        // With coordination, each point's host, where the hosts' shared memory knows it.
        let hosts = crate::commands::hosts::backed_up_by(config);
        outln!("{}", output::json(&document(&listings, now, &hosts))?);
    } else if listings.is_empty() && outcome == Outcome::Done {
        outln!("No backups found.");
    } else {
        out!("{}", text(&listings));
    }
    Ok(outcome)
}

/// The images the selected sections name that have no folder, in configuration order.
fn never_backed_up<'a>(
    config: &'a Config,
    pool: Option<&str>,
    image: Option<&str>,
    folders: &[ImageFolder],
) -> Result<Vec<ImageFolder<'a>>> {
    let jobs: Vec<&PoolJob> = match pool {
        Some(pool) => vec![catalog::section(config, pool)?],
        None => config.pools.iter().collect(),
    };
    let mut never = Vec::new();
    for job in jobs {
        let ImageSelection::Named(names) = &job.images else {
            continue;
        };
        for name in names {
            let has_folder = folders
                .iter()
                .any(|f| f.job.pool == job.pool && f.image == *name);
            if !has_folder && image.is_none_or(|wanted| wanted == name) {
                never.push(ImageFolder {
                    job,
                    image: name.clone(),
                    dir: job.image_folder(name),
                });
            }
        }
    }
    Ok(never)
}

fn scan(folder: &ImageFolder, now: DateTime<Utc>) -> Result<Listing> {
    let folder_exists = folder.job.pool_folder().kind_of(&folder.image).is_ok();
    let scanned = read::scan(&*folder.dir, &folder.image)?;
    let policy = Settings::of(folder.job).policy();
    let age = scanned
        .layout
        .points()
        .last()
        .map(|newest| (now - newest.taken()).to_std().unwrap_or_default());
    Ok(Listing {
        pool: folder.job.pool.clone(),
        image: folder.image.clone(),
        folder: folder.dir.location().display().to_string(),
        expiry: Some(Expiries::of(policy, &scanned.layout, now)),
        layout: scanned.layout,
        not_regular: scanned.not_regular,
        configured: match &folder.job.images {
            ImageSelection::All => true,
            ImageSelection::Named(names) => names.contains(&folder.image),
        },
        folder_exists,
        age,
    })
}

fn severity(finding: &Finding) -> &'static str {
    if finding.kind.is_error() {
        "error"
    } else {
        "warning"
    }
}

/// The listing for people.
pub fn text(listings: &[Listing]) -> String {
    let mut out = String::new();
    for (number, listing) in listings.iter().enumerate() {
        if number > 0 {
            out.push('\n');
        }
        let layout = &listing.layout;
        let label = escaped(&spec(&listing.pool, &listing.image, None)).into_owned();
        let folder = escaped(&listing.folder);
        let points = layout.points();
        let stored: u64 = layout.files.iter().map(|f| f.size).sum();
        match (points.first(), points.last()) {
            (Some(first), Some(last)) => {
                let _ = writeln!(
                    out,
                    "{label}: {} restore point{}, {} to {}, {} in {}",
                    points.len(),
                    if points.len() == 1 { "" } else { "s" },
                    output::time(first.taken()),
                    output::time(last.taken()),
                    human_bytes(stored),
                    folder
                );
            }
            _ if !listing.folder_exists => {
                let _ = writeln!(
                    out,
                    "{label}: never backed up: configured in [{}], but there is no folder {folder}",
                    escaped(&listing.pool)
                );
            }
            _ if listing.configured => {
                let _ = writeln!(
                    out,
                    "{label}: no restore points, in {folder}: configured, but not backed up"
                );
            }
            _ => {
                let _ = writeln!(out, "{label}: no restore points, in {folder}");
            }
        }
        if let (Some(newest), Some(old)) = (points.last(), listing.age) {
            let _ = writeln!(out, "  newest restore point: {newest}, {} old", age(old));
        }
        if !listing.configured {
            let _ = writeln!(
                out,
                "  not named by images = in [{}]: no longer backed up",
                escaped(&listing.pool)
            );
        }
        if let Some(expiry) = &listing.expiry {
            let _ = writeln!(out, "  retention: {}", expiry.policy);
        }
        for chain in &layout.chains {
            let full = &layout.files[chain.full];
            let _ = writeln!(
                out,
                "  chain from full backup {} ({} restore point{}):",
                full.file.snap,
                chain.diffs.len() + 1,
                if chain.diffs.is_empty() { "" } else { "s" }
            );
            for index in chain.files() {
                let stored = &layout.files[index];
                out.push_str(&file_line(stored));
                if let Some(expiry) = listing.expiry_of(stored) {
                    let _ = writeln!(out, "      {expiry}");
                }
            }
        }
        for entry in &listing.not_regular {
            let _ = writeln!(
                out,
                "  error: {}: {}",
                escaped(&entry.name),
                entry.message()
            );
        }
        for finding in &layout.findings {
            let _ = writeln!(
                out,
                "  {}: {}: {}",
                severity(finding),
                escaped(&finding.name),
                escaped(&finding.message)
            );
        }
    }
    out
}

impl Listing {
    /// When the restore point that `stored` gives will be removed.
    fn expiry_of(&self, stored: &FolderFile) -> Option<&Expiry> {
        self.expiry.as_ref()?.by_point.get(&stored.file.snap)
    }
}

/// One file of a chain: the point it restores to, what it is, and how it is stored.
fn file_line(stored: &FolderFile) -> String {
    format!(
        "    {}  {}  {:>10}  {}  {}  {}\n",
        stored.file.snap,
        if stored.file.is_full() {
            "full"
        } else {
            "diff"
        },
        human_bytes(stored.size),
        match stored.file.compression {
            Compression::None => "raw ",
            compressed => compressed.label(),
        },
        if stored.checksum.is_some() {
            "sha256"
        } else {
            "no-sum"
        },
        escaped(&stored.name)
    )
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    envelope: Envelope,
    images: Vec<ImageDoc<'a>>,
}

#[derive(Serialize)]
struct ImageDoc<'a> {
    pool: &'a str,
    image: &'a str,
    folder: &'a str,
    /// Named by its section's `images` (or the section takes every image).
    configured: bool,
    /// At least one restore point exists.
    backed_up: bool,
    /// The newest restore point, and how old it is.
    newest: Option<PointDoc>,
    age_seconds: Option<u64>,
    /// Oldest first, each with its time and when it goes.
    restore_points: Vec<PointEntry>,
    /// The configuration that decides when points go, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    retention: Option<String>,
    chains: Vec<ChainDoc<'a>>,
    findings: Vec<FindingDoc<'a>>,
}

#[derive(Serialize)]
struct PointEntry {
    snapshot: String,
    time: String,
    /// With coordination: the host that backed this point up, where the hosts' shared memory
    /// knows it (an image's newest point).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<ExpiryDoc>,
}

#[derive(Serialize)]
struct ChainDoc<'a> {
    /// Full backup first, then the diffs in time order; each file's snapshot is a restore point.
    files: Vec<FileDoc<'a>>,
}

#[derive(Serialize)]
struct FileDoc<'a> {
    file: &'a str,
    kind: &'static str,
    snapshot: &'a str,
    /// The snapshot a diff starts from.
    base: Option<&'a str>,
    /// When the snapshot was taken, RFC 3339 UTC.
    time: String,
    bytes: u64,
    compressed: bool,
    /// An age file: read with the private key (`--identity`).
    encrypted: bool,
    checksum_file: Option<&'a str>,
    /// When the restore point this file gives will be removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<ExpiryDoc>,
}

#[derive(Serialize)]
struct ExpiryDoc {
    /// `kept`, `next_run`, `first_run_after` (the window) or `keep_minimum` (out of the window
    /// or soon to be, and held while fewer than `keep_minimum` newer points exist).
    removal: &'static str,
    /// The last instant the point is inside the window, RFC 3339 UTC; the first run after it
    /// removes the point unless keep minimum holds it.
    after: Option<String>,
    keep_minimum: Option<u32>,
    /// Restore points newer than this one, when keep minimum holds it.
    newer_points: Option<usize>,
    /// The same, for people.
    text: String,
}

fn expiry_doc(expiry: &Expiry) -> ExpiryDoc {
    let (after, held) = match expiry {
        Expiry::Window { after, held, .. } => (Some(rfc3339(*after)), *held),
        Expiry::Kept { .. } | Expiry::NextRun { .. } => (None, None),
    };
    ExpiryDoc {
        removal: expiry.removal(),
        after,
        keep_minimum: held.map(|(minimum, _)| minimum),
        newer_points: held.map(|(_, newer)| newer),
        text: expiry.to_string(),
    }
}

#[derive(Serialize)]
struct FindingDoc<'a> {
    file: &'a str,
    kind: Kind,
    /// What the entry is, for an entry that is not a regular file.
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<EntryKind>,
    message: String,
    severity: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Kind {
    Chain(FindingKind),
    /// `"not_regular"`: named like a backup or checksum file, but not a regular file.
    Entry(&'static str),
}

fn file_doc<'a>(stored: &'a FolderFile, listing: &Listing) -> FileDoc<'a> {
    FileDoc {
        file: &stored.name,
        kind: if stored.file.is_full() {
            "full"
        } else {
            "diff"
        },
        snapshot: stored.file.snap.as_str(),
        base: stored
            .file
            .base()
            .map(super::super::folder::naming::SnapName::as_str),
        time: rfc3339(stored.file.snap.taken()),
        bytes: stored.size,
        compressed: stored.file.compressed(),
        encrypted: stored.file.encrypted,
        checksum_file: stored.checksum.as_deref(),
        expiry: listing.expiry_of(stored).map(expiry_doc),
    }
}

fn document<'a>(
    listings: &'a [Listing],
    now: DateTime<Utc>,
    hosts: &crate::commands::hosts::BackedUpBy,
) -> Document<'a> {
    Document {
        envelope: Envelope::new("list", now),
        images: listings
            .iter()
            .map(|listing| {
                let layout = &listing.layout;
                let points = layout.points();
                ImageDoc {
                    pool: &listing.pool,
                    image: &listing.image,
                    folder: &listing.folder,
                    configured: listing.configured,
                    backed_up: !points.is_empty(),
                    newest: points.last().map(|p| PointDoc::of(p)),
                    age_seconds: listing.age.map(|d| d.as_secs()),
                    restore_points: points
                        .iter()
                        .map(|point| PointEntry {
                            snapshot: point.as_str().to_string(),
                            time: rfc3339(point.taken()),
                            host: hosts
                                .get(&(
                                    listing.pool.clone(),
                                    listing.image.clone(),
                                    point.as_str().to_string(),
                                ))
                                .cloned(),
                            expiry: listing
                                .expiry
                                .as_ref()
                                .and_then(|e| e.by_point.get(*point))
                                .map(expiry_doc),
                        })
                        .collect(),
                    retention: listing.expiry.as_ref().map(|e| e.policy.to_string()),
                    chains: layout
                        .chains
                        .iter()
                        .map(|chain| ChainDoc {
                            files: chain
                                .files()
                                .map(|i| file_doc(&layout.files[i], listing))
                                .collect(),
                        })
                        .collect(),
                    findings: listing
                        .not_regular
                        .iter()
                        .map(|entry| FindingDoc {
                            file: &entry.name,
                            kind: Kind::Entry("not_regular"),
                            entry: Some(entry.kind),
                            message: entry.message(),
                            severity: "error",
                        })
                        .chain(layout.findings.iter().map(|finding| FindingDoc {
                            file: &finding.name,
                            kind: Kind::Chain(finding.kind),
                            entry: None,
                            message: finding.message.clone(),
                            severity: severity(finding),
                        }))
                        .collect(),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_fixtures::{diff_file, full_file, S0, S1, S2, S3};

    fn now() -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 11, 21, 5, 2, 5).unwrap()
    }

    fn listing() -> Listing {
        let names = [
            format!("vm@{S0}.full.tar.gz"),
            format!("vm@{S0}.full.tar.gz.sha256"),
            format!("vm@{S1}.diff_from_{S0}.tar.gz"),
            diff_file(S2, S3),
            ".cephbackup-tmp.Ab12".to_string(),
        ];
        let mut layout = Layout::build("vm", &names);
        for (file, size) in layout.files.iter_mut().zip([33_554_432, 1536, 80]) {
            file.size = size;
        }
        Listing {
            pool: "rbd".into(),
            image: "vm".into(),
            folder: "/b/rbd/vm".into(),
            layout,
            not_regular: vec![],
            expiry: None,
            configured: true,
            folder_exists: true,
            age: Some(std::time::Duration::from_secs(3 * 3600 + 125)),
        }
    }

    #[test]
    fn text_shows_chains_points_and_problems() {
        let expected = format!(
            "\
rbd/vm: 2 restore points, 2026-11-20 02:00:00 UTC to 2026-11-21 02:00:00 UTC, 32.0 MiB in /b/rbd/vm
  newest restore point: {S1}, 3h 2m old
  chain from full backup {S0} (2 restore points):
    {S0}  full    32.0 MiB  gzip  sha256  vm@{S0}.full.tar.gz
    {S1}  diff     1.5 KiB  gzip  no-sum  vm@{S1}.diff_from_{S0}.tar.gz
  warning: .cephbackup-tmp.Ab12: temporary file of an interrupted run (the next backup removes it)
  error: vm@{S3}.diff_from_{S2}: starts from {S2}, but no backup file ends at {S2} (missing link): not restorable
"
        );
        assert_eq!(text(&[listing()]), expected);
    }

    #[test]
    fn json_names_every_file_and_point() {
        let json =
            serde_json::to_value(document(&[listing()], now(), &Default::default())).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["kind"], "list");
        assert_eq!(json["generated_at"], "2026-11-21T05:02:05Z");
        let image = &json["images"][0];
        assert_eq!(
            image["restore_points"],
            serde_json::json!([
                {"snapshot": S0, "time": "2026-11-20T02:00:00Z"},
                {"snapshot": S1, "time": "2026-11-21T02:00:00Z"},
            ])
        );
        assert_eq!(image["configured"], true);
        assert_eq!(image["backed_up"], true);
        assert_eq!(image["newest"]["snapshot"], S1);
        assert_eq!(image["age_seconds"], 3 * 3600 + 125);
        let full = &image["chains"][0]["files"][0];
        assert_eq!(full["file"], format!("vm@{S0}.full.tar.gz"));
        assert_eq!(full["kind"], "full");
        assert_eq!(full["time"], "2026-11-20T02:00:00Z");
        assert_eq!(full["bytes"], 33_554_432);
        assert_eq!(full["compressed"], true);
        assert_eq!(full["encrypted"], false);
        assert_eq!(full["checksum_file"], format!("vm@{S0}.full.tar.gz.sha256"));
        assert_eq!(image["chains"][0]["files"][1]["base"], S0);
        let kinds: Vec<(&str, &str)> = image["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["kind"].as_str().unwrap(), f["severity"].as_str().unwrap()))
            .collect();
        assert_eq!(kinds, [("temporary", "warning"), ("missing_link", "error")]);
        crate::commands::schema_check::assert_valid("list", &json);
        // The schema holds every name: the old spelling is refused.
        let mut old = json.clone();
        old["images"][0]["chains"][0]["files"][0]["name"] = "x".into();
        assert!(!crate::commands::schema_check::accepts("list", &old));
        let mut old = json;
        old["images"][0]["restore_points"] = serde_json::json!([S0]);
        assert!(!crate::commands::schema_check::accepts("list", &old));
    }

    #[test]
    fn entries_that_are_not_regular_files_and_control_characters_are_flagged_visibly() {
        let names = [full_file(S0), "evil\x1b[2J\nerror: forged".to_string()];
        let mut listing = Listing {
            pool: "rbd".into(),
            image: "vm".into(),
            folder: "/b/rbd/vm".into(),
            layout: Layout::build("vm", &names),
            not_regular: vec![NotRegularEntry {
                name: full_file(S1),
                kind: EntryKind::Symlink,
            }],
            expiry: None,
            configured: true,
            folder_exists: true,
            age: None,
        };
        listing.layout.files[0].size = 1024;
        let text = text(std::slice::from_ref(&listing));
        assert!(
            text.contains(&format!(
                "  error: vm@{S1}.full: is a symbolic link, not a regular file; it is not read\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("  warning: evil\\x1b[2J\\nerror: forged: not a backup file"),
            "{text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("error: forged")),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text}");
        let json = output::json(&document(
            std::slice::from_ref(&listing),
            now(),
            &Default::default(),
        ))
        .unwrap();
        assert!(!json.contains('\x1b'), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let findings = &value["images"][0]["findings"];
        assert_eq!(findings[0]["file"], full_file(S1));
        assert_eq!(findings[0]["kind"], "not_regular");
        assert_eq!(findings[0]["entry"], "symlink");
        assert_eq!(findings[0]["severity"], "error");
        assert_eq!(findings[1]["file"], names[1].as_str());
        assert_eq!(findings[1]["kind"], "unexpected");
        assert!(findings[1].get("entry").is_none());
        crate::commands::schema_check::assert_valid("list", &value);
    }

    #[test]
    fn text_and_json_show_when_each_point_goes() {
        use crate::config::{BackupMode, Window, WindowUnit};
        use chrono::TimeZone;
        let mut listing = listing();
        let policy = Policy {
            mode: BackupMode::Incremental,
            window: Window {
                size: 7,
                unit: WindowUnit::Days,
            },
            keep: crate::config::KeepRules::default(),
            keep_minimum: 2,
        };
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        listing.expiry = Some(Expiries::of(policy, &listing.layout, now));
        let shown = text(std::slice::from_ref(&listing));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[2..7],
            [
                "  retention: incremental, window of 7 days, keep minimum = 2",
                &format!("  chain from full backup {S0} (2 restore points):"),
                &format!("    {S0}  full    32.0 MiB  gzip  sha256  vm@{S0}.full.tar.gz"),
                "      removed by the next run (left the window of 7 days after 2026-11-27 \
                 02:00:00 UTC)",
                &format!("    {S1}  diff     1.5 KiB  gzip  no-sum  vm@{S1}.diff_from_{S0}.tar.gz"),
            ]
        );
        assert_eq!(
            lines[7],
            "      kept while fewer than 2 newer restore points exist (0 now, keep minimum = 2); \
             left the window of 7 days after 2026-11-28 02:00:00 UTC"
        );
        let json = serde_json::to_value(document(&[listing], now, &Default::default())).unwrap();
        let image = &json["images"][0];
        assert_eq!(
            image["retention"],
            "incremental, window of 7 days, keep minimum = 2"
        );
        let files = &image["chains"][0]["files"];
        // Every restore point says when it goes, in the list of points as beside its file.
        let points = image["restore_points"].as_array().unwrap();
        assert_eq!(points.len(), 2);
        for (point, file) in points.iter().zip(files.as_array().unwrap()) {
            assert_eq!(point["snapshot"], file["snapshot"]);
            assert_eq!(point["expiry"], file["expiry"]);
        }
        assert_eq!(points[0]["expiry"]["removal"], "next_run");
        assert_eq!(files[0]["expiry"]["removal"], "next_run");
        assert_eq!(files[0]["expiry"]["after"], "2026-11-27T02:00:00Z");
        assert_eq!(files[0]["expiry"]["keep_minimum"], serde_json::Value::Null);
        assert_eq!(files[1]["expiry"]["removal"], "keep_minimum");
        assert_eq!(files[1]["expiry"]["keep_minimum"], 2);
        assert_eq!(files[1]["expiry"]["newer_points"], 0);
        assert!(files[1]["expiry"]["text"]
            .as_str()
            .unwrap()
            .starts_with("kept while fewer than 2 newer"));
        crate::commands::schema_check::assert_valid("list", &json);
    }

    #[test]
    fn configured_images_without_backups_are_shown_as_gaps() {
        let never = Listing {
            pool: "rbd".into(),
            image: "db".into(),
            folder: "/b/rbd/db".into(),
            layout: Layout::build("db", &[]),
            not_regular: vec![],
            expiry: None,
            configured: true,
            folder_exists: false,
            age: None,
        };
        let empty = Listing {
            image: "web".into(),
            folder: "/b/rbd/web".into(),
            folder_exists: true,
            ..Listing {
                layout: Layout::build("web", &[]),
                ..never.clone_shallow()
            }
        };
        let mut retired = listing();
        retired.configured = false;
        assert!(never.uncovered() && empty.uncovered());
        assert!(!listing().uncovered() && !retired.uncovered());
        let shown = text(&[never.clone_shallow(), empty, retired]);
        for line in [
            "rbd/db: never backed up: configured in [rbd], but there is no folder /b/rbd/db",
            "rbd/web: no restore points, in /b/rbd/web: configured, but not backed up",
            "  not named by images = in [rbd]: no longer backed up",
        ] {
            assert!(
                shown.lines().any(|l| l == line),
                "{line:?} missing in\n{shown}"
            );
        }
        let json = serde_json::to_value(document(&[never], now(), &Default::default())).unwrap();
        let image = &json["images"][0];
        assert_eq!(image["configured"], true);
        assert_eq!(image["backed_up"], false);
        assert_eq!(image["newest"], serde_json::Value::Null);
        assert_eq!(image["restore_points"], serde_json::json!([]));
        crate::commands::schema_check::assert_valid("list", &json);
    }

    impl Listing {
        /// A copy for the tests (the expiries are not copied).
        fn clone_shallow(&self) -> Listing {
            Listing {
                pool: self.pool.clone(),
                image: self.image.clone(),
                folder: self.folder.clone(),
                layout: self.layout.clone(),
                not_regular: self.not_regular.clone(),
                expiry: None,
                configured: self.configured,
                folder_exists: self.folder_exists,
                age: self.age,
            }
        }
    }
}

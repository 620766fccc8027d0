//! The `--json` document of a restore that succeeded (or, in check mode, was shown): what was
//! restored, into what, the point and its time, and the files used.

use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

use super::{RestoreOptions, Target};
use crate::folder::chain::FolderFile;
use crate::folder::naming::SnapName;
use crate::report::{rfc3339, Envelope};

/// The `--json` document of a restore that succeeded (or, in check mode, was shown).
#[derive(Debug, Serialize)]
pub(super) struct RestoreDoc {
    #[serde(flatten)]
    envelope: Envelope,
    pool: String,
    image: String,
    /// The restore point: its snapshot and when it was taken.
    snapshot: String,
    time: String,
    target: TargetDoc,
    /// The backup folder the files were read from.
    folder: String,
    /// The files replayed, full backup first.
    files: Vec<RestoredFile>,
    /// Files whose `.sha256` file was checked as they were read.
    checksums_checked: usize,
    /// True when nothing was done (`--check`).
    check_mode: bool,
    duration_seconds: f64,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum TargetDoc {
    Image { pool: String, image: String },
    File { path: String },
}

#[derive(Debug, Serialize)]
struct RestoredFile {
    file: String,
    /// `full` or `diff`.
    kind: &'static str,
    snapshot: String,
    /// The size of the file in the folder.
    bytes: u64,
    /// False when the file has no `.sha256` file, so nothing proves its bytes (the original
    /// tool's files have none); the route chosen has as few such files as the folder allows.
    proven: bool,
}

pub(super) fn restore_doc(
    args: &RestoreOptions,
    point: &SnapName,
    target: &Target,
    folder: &Path,
    route: &[&FolderFile],
    checked: usize,
    started: Instant,
) -> RestoreDoc {
    RestoreDoc {
        envelope: Envelope::new("restore", Utc::now()),
        pool: args.pool.clone(),
        image: args.image.clone(),
        snapshot: point.as_str().to_string(),
        time: rfc3339(point.taken()),
        target: match target {
            Target::Image { pool, name } => TargetDoc::Image {
                pool: pool.clone(),
                image: name.clone(),
            },
            Target::File(path) => TargetDoc::File {
                path: path.display().to_string(),
            },
        },
        folder: folder.display().to_string(),
        files: route
            .iter()
            .map(|link| RestoredFile {
                file: link.name.clone(),
                kind: if link.file.is_full() { "full" } else { "diff" },
                snapshot: link.file.snap.as_str().to_string(),
                bytes: link.size,
                proven: link.checksum.is_some(),
            })
            .collect(),
        checksums_checked: checked,
        check_mode: args.check,
        duration_seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::chain::{S0, S1};
    use crate::folder::chain::Layout;
    use crate::test_fixtures::diff_file;

    #[test]
    fn the_json_document_names_the_point_its_time_the_target_and_the_files() {
        let names = [format!("vm@{S0}.full.tar.gz"), diff_file(S0, S1)];
        let mut layout = Layout::build("vm", &names);
        layout.files[0].size = 1000;
        layout.files[1].size = 20;
        let point = SnapName::parse(S1).unwrap();
        let route = layout.route(&point).unwrap();
        let args = RestoreOptions {
            pool: "rbd".into(),
            image: "vm".into(),
            json: true,
            ..RestoreOptions::default()
        };
        let started = Instant::now();
        for (target, check) in [
            (
                Target::Image {
                    pool: "other".into(),
                    name: "vm-restored".into(),
                },
                false,
            ),
            (Target::File("/tmp/vm.raw".into()), true),
        ] {
            let args = RestoreOptions {
                check,
                ..args.clone()
            };
            let doc = restore_doc(
                &args,
                &point,
                &target,
                Path::new("/b/rbd/vm"),
                &route,
                1,
                started,
            );
            let value = serde_json::to_value(&doc).unwrap();
            assert_eq!(value["kind"], "restore");
            assert_eq!(value["snapshot"], S1);
            assert_eq!(value["time"], "2026-11-21T02:00:00Z");
            assert_eq!(value["files"][0]["file"], names[0].as_str());
            assert_eq!(value["files"][0]["bytes"], 1000);
            assert_eq!(value["files"][1]["kind"], "diff");
            assert_eq!(value["check_mode"], check);
            crate::commands::schema_check::assert_valid("restore", &value);
            if check {
                assert_eq!(value["target"]["kind"], "file");
                assert_eq!(value["target"]["path"], "/tmp/vm.raw");
            } else {
                assert_eq!(
                    value["target"],
                    serde_json::json!({"kind": "image", "pool": "other", "image": "vm-restored"})
                );
            }
        }
    }
}

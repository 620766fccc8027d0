//! Which point a restore rebuilds, from which files, into what: the target named on the command
//! line, the newest point at or before `--at` and its route, and, when a backup file fails, the
//! point to restore instead.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Utc};

use crate::cluster::process::CommandError;
use crate::cluster::rbd::spec;
use crate::folder::chain::{FolderFile, Layout};
use crate::folder::format::rebuild::TargetFailed;
use crate::folder::naming::{self, SnapName};
use crate::folder::read::ScannedFolder;
use crate::output::{self, escaped, escaped_path};
use crate::{interrupt, UsageError};

/// Where the restored image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Image { pool: String, name: String },
    File(PathBuf),
}

impl Target {
    /// `--to [POOL[/NAMESPACE]/]NAME` (in `default_pool` without a pool) or `--to-file PATH`.
    pub fn parse(
        to: Option<&str>,
        to_file: Option<&Path>,
        default_pool: &str,
    ) -> Result<Target, UsageError> {
        if let Some(path) = to_file {
            if path.file_name().is_none() {
                return Err(UsageError(format!(
                    "--to-file {} does not name a file",
                    escaped_path(path)
                )));
            }
            return Ok(Target::File(path.to_path_buf()));
        }
        let to = to.ok_or_else(|| UsageError("restore needs --to or --to-file".into()))?;
        // `pool/namespace/name` for an image in a namespace: an image name holds no '/'.
        let (pool, name) = to.rsplit_once('/').unwrap_or((default_pool, to));
        naming::check_pool_spec(pool).map_err(UsageError)?;
        naming::check_name("image", name).map_err(UsageError)?;
        Ok(Target::Image {
            pool: pool.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Image { pool, name } => write!(f, "{}", spec(pool, name, None)),
            Target::File(path) => write!(f, "{}", escaped_path(path)),
        }
    }
}

/// The point to restore and the files that lead to it, or why there is none. Only regular files
/// are used; when the point asked for is one that only an entry that is not a regular file
/// offers, the error names that entry and the newest point that can be restored instead.
pub fn choose<'a>(
    folder: &'a ScannedFolder,
    label: &str,
    at: Option<DateTime<Utc>>,
) -> Result<(&'a SnapName, Vec<&'a FolderFile>)> {
    let layout = &folder.layout;
    let usable = layout.point_at_or_before(at);
    if let Some(claimed) = folder.claimed.point_at_or_before(at) {
        let key = |p: &SnapName| (p.taken(), p.as_str().to_string());
        if usable.is_none_or(|usable| key(claimed) > key(usable)) {
            return Err(blocked(folder, label, claimed, usable));
        }
    }
    let Some(point) = usable else {
        let points = layout.points();
        match (points.first(), at) {
            (Some(oldest), Some(at)) => bail!(
                "{label} has no restore point at or before {}; the oldest is {oldest} ({})",
                output::time(at),
                output::time(oldest.taken())
            ),
            _ => {
                let unusable = layout.findings.iter().filter(|f| f.kind.is_error()).count()
                    + folder.not_regular.len();
                let hint = match unusable {
                    0 => String::new(),
                    n => format!(" ({n} file(s) cannot be restored; see `cephbackup list`)"),
                };
                bail!("{label} has no restorable backup{hint}")
            }
        }
    };
    let route = layout
        .route(point)
        .ok_or_else(|| anyhow!("{label}: no route to {point} (a bug in the chain model)"))?;
    Ok((point, route))
}

/// The error for a point whose route needs an entry that is not a regular file.
fn blocked(
    folder: &ScannedFolder,
    label: &str,
    point: &SnapName,
    usable: Option<&SnapName>,
) -> anyhow::Error {
    let route = folder.claimed.route(point).unwrap_or_default();
    let culprit = route.iter().find_map(|link| {
        let checksum = naming::checksum_name(&link.name);
        let not_regular = folder
            .not_regular
            .iter()
            .find(|entry| entry.name == link.name || entry.name == checksum)
            .map(|entry| (&entry.name, entry.message()));
        not_regular.or_else(|| {
            folder
                .refused
                .iter()
                .find(|(name, _)| *name == link.name)
                .map(|(name, why)| (name, why.clone()))
        })
    });
    let why = match culprit {
        Some((name, message)) => format!("{}: {message}", escaped_path(&folder.path.join(name))),
        None => "it needs a file that cannot be read (see `cephbackup list`)".to_string(),
    };
    let instead = match usable {
        Some(usable) => {
            format!("; the newest point that can be restored is {usable} (--at {usable})")
        }
        None => "; no point at or before it can be restored".to_string(),
    };
    anyhow!("cannot restore {label} as of {point}: {why}{instead}")
}

/// When a backup file itself is what failed (unreadable, corrupt, not what its checksum says),
/// adds the newest point at or before the one asked for that does not need that file: the one
/// to restore instead, with `--at`. A failure of `rbd`, of the target or a signal is left as it is.
pub(super) fn instead_of_bad_file(
    err: anyhow::Error,
    layout: &Layout,
    bad: &FolderFile,
    point: &SnapName,
    at: Option<DateTime<Utc>>,
) -> anyhow::Error {
    let not_the_file = interrupt::received().is_some()
        || CommandError::find(&err).is_some()
        || err.chain().any(|cause| {
            cause.downcast_ref::<TargetFailed>().is_some()
                || cause.downcast_ref::<interrupt::Interrupted>().is_some()
        });
    if not_the_file {
        return err;
    }
    let asked = at.unwrap_or_else(|| point.taken());
    let name = escaped(&bad.name);
    match layout.newest_avoiding(&[bad.name.as_str()], Some(asked)) {
        Some(good) => anyhow!(
            "{err:#}; {point} needs {name}, so it cannot be restored; the newest point that does \
             not is {good} ({}): restore it with --at {good}",
            output::time(good.taken())
        ),
        None => anyhow!(
            "{err:#}; {point} needs {name}, and no earlier point can be restored without it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::chain::{S0, S1, S2};
    use crate::folder::read::NotRegularEntry;
    use crate::folder::untrusted::EntryKind;
    use crate::test_fixtures::{diff_file, full_file};

    /// A folder of regular files only.
    fn folder(names: &[String]) -> ScannedFolder {
        ScannedFolder {
            path: "/b/rbd/vm".into(),
            layout: Layout::build("vm", names),
            claimed: Layout::build("vm", names),
            not_regular: vec![],
            refused: vec![],
        }
    }

    #[test]
    fn targets() {
        let parse = |to: &str| Target::parse(Some(to), None, "rbd").map_err(|e| e.0);
        assert_eq!(
            parse("vm-restored"),
            Ok(Target::Image {
                pool: "rbd".into(),
                name: "vm-restored".into()
            })
        );
        assert_eq!(
            parse("ssd/vm"),
            Ok(Target::Image {
                pool: "ssd".into(),
                name: "vm".into()
            })
        );
        // Into a namespace: `pool/namespace/name`.
        assert_eq!(
            parse("ssd/tenant/vm"),
            Ok(Target::Image {
                pool: "ssd/tenant".into(),
                name: "vm".into()
            })
        );
        for bad in ["", "a/b/c/d", "vm@snap", "-x", "ssd/", "/vm", "a//vm"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Target::parse(None, Some(Path::new("/tmp/vm.raw")), "rbd").map_err(|e| e.0),
            Ok(Target::File("/tmp/vm.raw".into()))
        );
        assert!(Target::parse(None, Some(Path::new("/")), "rbd").is_err());
    }

    #[test]
    fn no_point_is_explained() {
        let names = [full_file(S0), diff_file(S0, S1)];
        let folder = folder(&names);
        let (point, route) = choose(&folder, "rbd/vm", None).unwrap();
        assert_eq!(point.as_str(), S1);
        assert_eq!(route.len(), 2);
        let early = SnapName::parse(S0).unwrap().taken() - chrono::Duration::days(1);
        let err = choose(&folder, "rbd/vm", Some(early)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "rbd/vm has no restore point at or before 2026-11-19 02:00:00 UTC; the oldest \
                 is {S0} (2026-11-20 02:00:00 UTC)"
            )
        );
        let broken = super::tests::folder(&names[1..]);
        let err = choose(&broken, "rbd/vm", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rbd/vm has no restorable backup (1 file(s) cannot be restored; see `cephbackup list`)"
        );
    }

    #[test]
    fn a_point_only_an_entry_that_is_not_a_regular_file_offers_is_refused_by_name() {
        let full = full_file(S0);
        let d1 = diff_file(S0, S1);
        let d2 = diff_file(S1, S2);
        let all = [full.clone(), d1.clone(), d2.clone()];
        let mut folder = folder(&all[..2]);
        folder.claimed = Layout::build("vm", &all);
        folder.not_regular = vec![NotRegularEntry {
            name: d2.clone(),
            kind: EntryKind::Symlink,
        }];
        let err = choose(&folder, "rbd/vm", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot restore rbd/vm as of {S2}: /b/rbd/vm/{d2}: is a symbolic link, not a \
                 regular file; it is not read; the newest point that can be restored is {S1} \
                 (--at {S1})"
            )
        );
        // An older point does not need it.
        let at = SnapName::parse(S1).unwrap().taken();
        let (point, route) = choose(&folder, "rbd/vm", Some(at)).unwrap();
        assert_eq!(point.as_str(), S1);
        assert_eq!(route.len(), 2);
        // A checksum file that is not a regular file blocks its backup file the same way.
        folder.not_regular = vec![NotRegularEntry {
            name: format!("{d2}.sha256"),
            kind: EntryKind::Fifo,
        }];
        let err = choose(&folder, "rbd/vm", None).unwrap_err().to_string();
        assert!(
            err.contains(&format!("/b/rbd/vm/{d2}.sha256: is a FIFO")),
            "{err}"
        );
        // When the full itself is the entry, nothing at or before the point can be restored.
        let mut folder = super::tests::folder(&[]);
        folder.claimed = Layout::build("vm", &all);
        folder.not_regular = vec![NotRegularEntry {
            name: full.clone(),
            kind: EntryKind::Fifo,
        }];
        let err = choose(&folder, "rbd/vm", None).unwrap_err().to_string();
        assert!(
            err.ends_with("is a FIFO, not a regular file; it is not read; no point at or before it can be restored"),
            "{err}"
        );
    }
}

//! How well the configuration's images are covered, read from the backup folders alone: per
//! configured image, its restore points (the newest first of interest), the files that give them,
//! and what in its folder cannot be used.
//!
//! "Configured" means the images a section names; for an `images = *` section, whose images are
//! only known to the cluster, the image folders present in its destination. A named image with
//! no folder is covered by nothing: that is what `status`, `list` and the metrics must show, not
//! hide. A destination that cannot be read (not mounted, not a folder, no permission) is kept as
//! a problem of its section, so one bad disk does not hide the others' coverage.
//!
//! `status`, `list` and the metrics file all judge coverage from here, so they always agree.

use std::path::PathBuf;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::commands::catalog::{self, Narrow};
use crate::config::{Config, ImageSelection, PoolJob};
use crate::folder::naming::SnapName;
use crate::folder::read;
use crate::UsageError;

/// The coverage of every configured image the narrowing selects.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// In configuration order, then by name.
    pub images: Vec<ImageCoverage>,
    /// Sections whose destination could not be read at all.
    pub unreadable: Vec<SectionProblem>,
}

/// One configured image, as its folder shows it.
#[derive(Debug, Clone)]
pub struct ImageCoverage {
    pub pool: String,
    pub image: String,
    pub folder: PathBuf,
    /// Every restore point, oldest first; empty when the image was never backed up (or its
    /// folder has no usable file).
    pub points: Vec<SnapName>,
    /// Backup files that are part of a chain, and their bytes.
    pub files: usize,
    pub bytes: u64,
    /// Files or entries that cannot be restored from (broken links, not regular files).
    pub unusable: usize,
    /// When the file that gives the newest point was finished (its modification time; files
    /// appear under their final names only once complete): the last successful backup, as the
    /// disk shows it whatever later runs did.
    pub newest_completed: Option<DateTime<Utc>>,
    /// Why the folder could not be read, when it could not.
    pub error: Option<String>,
}

impl ImageCoverage {
    /// The newest restore point, if any.
    pub fn newest(&self) -> Option<&SnapName> {
        self.points.last()
    }

    /// How old the newest point is at `now` (zero for a point stamped in the future).
    pub fn age(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        self.newest()
            .map(|point| (now - point.taken()).to_std().unwrap_or_default())
    }
}

/// A section whose destination could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionProblem {
    pub pool: String,
    pub destination: String,
    pub error: String,
}

/// The images `job` is configured to back up, as far as the folders can tell: the named ones, or
/// for `images = *` the image folders present. `present` lists the folders found.
pub fn configured_images(job: &PoolJob, present: &[String]) -> Vec<String> {
    match &job.images {
        ImageSelection::Named(names) => names.clone(),
        ImageSelection::All => present.to_vec(),
    }
}

/// Reads the coverage of every configured image that `narrow` selects. Only a mistake in what
/// was asked (a pool no section names) is an error; anything on disk is reported inside.
pub fn survey(config: &Config, narrow: &Narrow) -> Result<Coverage> {
    if let Some(image) = &narrow.image {
        crate::folder::naming::check_name("image", image).map_err(UsageError)?;
    }
    let jobs: Vec<&PoolJob> = match &narrow.pool {
        Some(pool) => vec![catalog::section(config, pool)?],
        None => config.pools.iter().collect(),
    };
    let mut coverage = Coverage::default();
    for job in jobs {
        let present: Vec<String> = match catalog::select(config, Some(&job.pool), None) {
            Ok(folders) => folders.into_iter().map(|f| f.image).collect(),
            Err(err) if err.downcast_ref::<UsageError>().is_some() => return Err(err),
            Err(err) => {
                coverage.unreadable.push(SectionProblem {
                    pool: job.pool.clone(),
                    destination: job.destination_text.clone(),
                    error: format!("{err:#}"),
                });
                continue;
            }
        };
        for image in configured_images(job, &present) {
            if narrow.image.as_ref().is_some_and(|wanted| *wanted != image) {
                continue;
            }
            coverage.images.push(image_coverage(job, &image));
        }
    }
    Ok(coverage)
}

fn image_coverage(job: &PoolJob, image: &str) -> ImageCoverage {
    let dir = job.image_folder(image);
    let mut coverage = ImageCoverage {
        pool: job.pool.clone(),
        image: image.to_string(),
        folder: dir.location(),
        points: Vec::new(),
        files: 0,
        bytes: 0,
        unusable: 0,
        newest_completed: None,
        error: None,
    };
    match read::scan(&*dir, image) {
        Ok(folder) => {
            let layout = &folder.layout;
            coverage.points = layout.points().into_iter().cloned().collect();
            let in_chains: Vec<usize> = layout
                .chains
                .iter()
                .flat_map(crate::folder::chain::Chain::files)
                .collect();
            coverage.files = in_chains.len();
            coverage.bytes = in_chains.iter().map(|&i| layout.files[i].size).sum();
            coverage.unusable = layout.findings.iter().filter(|f| f.kind.is_error()).count()
                + folder.not_regular.len();
            coverage.newest_completed = coverage.points.last().and_then(|newest| {
                let stored = layout.files.iter().find(|f| f.file.snap == *newest)?;
                // Opened as the regular file the scan found, never through a link; a door with
                // no local file (a bucket) says no time.
                let modified = dir
                    .open_file(&stored.name)?
                    .and_then(|file| file.metadata()?.modified())
                    .ok()?;
                Some(DateTime::<Utc>::from(modified))
            });
        }
        Err(err) => coverage.error = Some(format!("{err:#}")),
    }
    coverage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{diff_file, full_file, parse_config, S0, S1};
    use std::fs;

    #[test]
    fn named_images_without_a_folder_are_covered_by_nothing() {
        let dest = tempfile::tempdir().unwrap();
        let vm = dest.path().join("rbd/vm");
        fs::create_dir_all(&vm).unwrap();
        fs::write(vm.join(full_file(S0)), b"x").unwrap();
        fs::write(vm.join(diff_file(S0, S1)), b"yz").unwrap();
        fs::create_dir_all(dest.path().join("ssd/db")).unwrap();
        let text = format!(
            "[DEFAULT]\ndestination directory = {}\nbackup mode = full\n\
             [rbd]\nimages = vm, never\n[ssd]\nimages = *\n[gone]\ndestination directory = {}\n\
             images = *\n",
            dest.path().display(),
            dest.path().join("not-mounted").display()
        );
        let config = parse_config(&text);
        let coverage = survey(&config, &Narrow::default()).unwrap();
        let shown: Vec<(String, usize, usize, u64)> = coverage
            .images
            .iter()
            .map(|c| {
                (
                    format!("{}/{}", c.pool, c.image),
                    c.points.len(),
                    c.files,
                    c.bytes,
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("rbd/vm".to_string(), 2, 2, 3),
                ("rbd/never".to_string(), 0, 0, 0),
                ("ssd/db".to_string(), 0, 0, 0),
            ]
        );
        assert_eq!(coverage.images[0].newest().unwrap().as_str(), S1);
        let now = SnapName::parse(S1).unwrap().taken() + chrono::Duration::hours(3);
        assert_eq!(
            coverage.images[0].age(now),
            Some(std::time::Duration::from_secs(3 * 3600))
        );
        assert_eq!(coverage.unreadable.len(), 1);
        assert_eq!(coverage.unreadable[0].pool, "gone");
        assert!(
            coverage.unreadable[0].error.contains("does not exist"),
            "{:?}",
            coverage.unreadable
        );

        let narrow = Narrow {
            pool: Some("rbd".into()),
            image: Some("never".into()),
        };
        let coverage = survey(&config, &narrow).unwrap();
        assert_eq!(coverage.images.len(), 1);
        assert_eq!(coverage.images[0].image, "never");
        let narrow = Narrow {
            pool: Some("hdd".into()),
            image: None,
        };
        let err = survey(&config, &narrow).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
    }
}

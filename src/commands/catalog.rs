//! Which backed-up images `list`, `restore` and `verify` look at.
//!
//! The configuration says where each pool's backups live (`<destination>/<pool>/`); every folder
//! there is an image's backup folder, whether or not the image is still in the cluster or still
//! named by `images`. `--pool` narrows to one section and `--image` to one folder name.

use anyhow::{bail, Result};

use crate::config::{Config, PoolJob};
use crate::folder::door::Door;
use crate::folder::naming;
use crate::folder::record::{self, Destination};
use crate::folder::shared::{EntryKind, UNMOUNTED_HINT};
use crate::UsageError;

/// Which backed-up images a command looks at: one pool (a section), one image, or all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrow {
    pub pool: Option<String>,
    pub image: Option<String>,
}

/// One image's backup folder, and the section it was backed up by.
pub struct ImageFolder<'a> {
    pub job: &'a PoolJob,
    pub image: String,
    pub dir: Box<dyn Door>,
}

impl std::fmt::Debug for ImageFolder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFolder")
            .field("pool", &self.job.pool)
            .field("image", &self.image)
            .field("dir", &self.dir.location())
            .finish()
    }
}

impl ImageFolder<'_> {
    /// `pool/image`, as people and `rbd` write it.
    pub fn label(&self) -> String {
        crate::cluster::rbd::spec(&self.job.pool, &self.image, None)
    }
}

/// The section that backs up `pool`.
pub fn section<'a>(config: &'a Config, pool: &str) -> Result<&'a PoolJob> {
    config
        .pools
        .iter()
        .find(|job| job.pool == pool)
        .ok_or_else(|| {
            let known: Vec<&str> = config.pools.iter().map(|j| j.pool.as_str()).collect();
            UsageError(format!(
                "{} has no section [{pool}]; its pools are: {}",
                config.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
            .into()
        })
}

/// The image folders selected by `pool` and `image`, in configuration order then by name.
pub fn select<'a>(
    config: &'a Config,
    pool: Option<&str>,
    image: Option<&str>,
) -> Result<Vec<ImageFolder<'a>>> {
    if let Some(image) = image {
        naming::check_name("image", image).map_err(UsageError)?;
    }
    let jobs: Vec<&PoolJob> = match pool {
        Some(pool) => vec![section(config, pool)?],
        None => config.pools.iter().collect(),
    };
    let mut folders = Vec::new();
    for job in &jobs {
        check_destination(job)?;
        for name in image_folders(job)? {
            if image.is_none_or(|wanted| wanted == name) {
                folders.push(ImageFolder {
                    job,
                    dir: job.image_folder(&name),
                    image: name,
                });
            }
        }
    }
    if let (Some(image), true) = (image, folders.is_empty()) {
        let looked: Vec<String> = jobs
            .iter()
            .map(|job| {
                job.destination
                    .join(&job.pool)
                    .join(image)
                    .display()
                    .to_string()
            })
            .collect();
        bail!(
            "no backups of image {image}: no folder {}",
            looked.join(" or ")
        );
    }
    Ok(folders)
}

/// Refuses a destination that cannot hold this section's backups (missing, or not a folder), and
/// warns about an empty folder the tool never wrote to (a backup disk that did not mount, most
/// likely; `list` and `verify` then find nothing, and say why).
fn check_destination(job: &PoolJob) -> Result<()> {
    let shown = job.destination.display();
    let pool = &job.pool;
    match record::inspect(&*job.destination_folder())? {
        Destination::Recorded | Destination::Adoptable => Ok(()),
        Destination::Empty => {
            tracing::warn!("{}", unmarked_empty_message(job));
            Ok(())
        }
        Destination::Missing => bail!(
            "destination directory {shown} of [{pool}] does not exist{}",
            UNMOUNTED_HINT
        ),
        Destination::NotAFolder(kind) => bail!(
            "destination directory {shown} of [{pool}] is {}, not a folder",
            kind.described()
        ),
    }
}

fn unmarked_empty_message(job: &PoolJob) -> String {
    format!(
        "destination directory {} of [{}] is empty and carries no cephbackup record: no backup \
         was ever written there{}",
        job.destination.display(),
        job.pool,
        UNMOUNTED_HINT
    )
}

/// The image folder names under `<destination>/<pool>/` (`<pool>/@<namespace>/` for a
/// namespace), sorted; none when it does not exist yet.
fn image_folders(job: &PoolJob) -> Result<Vec<String>> {
    let entries = job.pool_folder().list()?;
    // A link planted in the destination is not followed, not even to list it; a name that is
    // not UTF-8 names no image.
    Ok(entries
        .into_iter()
        .filter(|entry| entry.kind == EntryKind::Directory && entry.exact_name)
        // A namespace's folder (`@namespace`) holds its images: its own section lists them.
        .filter(|entry| !crate::folder::naming::is_namespace_folder(&entry.name))
        .map(|entry| entry.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::parse_config;
    use std::fs;
    use std::path::Path;

    fn config(dest: &Path) -> Config {
        let text = format!(
            "[DEFAULT]\ndestination directory = {}\nbackup mode = full\nimages = *\n[rbd]\n[ssd]\n",
            dest.display()
        );
        parse_config(&text)
    }

    fn labels(folders: &[ImageFolder]) -> Vec<String> {
        folders.iter().map(ImageFolder::label).collect()
    }

    #[test]
    fn folders_are_found_and_narrowed() {
        let dest = tempfile::tempdir().unwrap();
        for dir in ["rbd/vm2", "rbd/vm1", "ssd/db"] {
            fs::create_dir_all(dest.path().join(dir)).unwrap();
        }
        fs::write(dest.path().join("rbd/stray-file"), "").unwrap();
        // A link planted among the image folders is no image folder.
        std::os::unix::fs::symlink(dest.path().join("ssd/db"), dest.path().join("rbd/linked"))
            .unwrap();
        let config = config(dest.path());
        assert_eq!(
            labels(&select(&config, None, None).unwrap()),
            ["rbd/vm1", "rbd/vm2", "ssd/db"]
        );
        assert_eq!(
            labels(&select(&config, Some("ssd"), None).unwrap()),
            ["ssd/db"]
        );
        assert_eq!(
            labels(&select(&config, None, Some("vm2")).unwrap()),
            ["rbd/vm2"]
        );

        let err = select(&config, Some("hdd"), None).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert!(err
            .to_string()
            .ends_with("no section [hdd]; its pools are: rbd, ssd"));
        let err = select(&config, Some("ssd"), Some("vm1")).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_none());
        assert!(err.to_string().contains("no backups of image vm1"), "{err}");
        let err = select(&config, None, Some("../etc")).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
    }

    #[test]
    fn a_missing_or_odd_destination_is_an_error_and_an_empty_one_is_reported() {
        let dest = tempfile::tempdir().unwrap();
        let config = config(&dest.path().join("not-mounted"));
        let err = select(&config, None, None).unwrap_err().to_string();
        assert!(err.contains("is the backup disk mounted?"), "{err}");
        let config = super::tests::config(dest.path());
        assert!(select(&config, None, None).unwrap().is_empty());
        // Each section is warned about, one line each.
        assert_eq!(config.pools.len(), 2);
        for job in &config.pools {
            check_destination(job).unwrap();
            let warning = unmarked_empty_message(job);
            assert!(
                warning.contains("is empty and carries no cephbackup record"),
                "{warning}"
            );
        }
        fs::write(dest.path().join("file"), "").unwrap();
        let config = super::tests::config(&dest.path().join("file"));
        let err = select(&config, None, None).unwrap_err().to_string();
        assert!(err.contains("is a regular file, not a folder"), "{err}");
    }
}

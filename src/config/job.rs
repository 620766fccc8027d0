//! What a configuration file means, once read: one job per pool section. Plain data, so the
//! planner can take it without taking anything that reads files.

use std::path::PathBuf;

use super::keep::KeepRules;
use super::window::Window;
use crate::cluster::rbd::Cluster;
use crate::folder::access::{FileAccess, FileGroup};
use crate::folder::door::{Door, LocalFolder, ObjectStore};
use crate::folder::format::encrypt::Recipients;
use crate::folder::format::write::Compressor;
use crate::folder::naming::{self, Compression};

use super::ConfigProblem;

/// The whole configuration file: one job per pool section, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub pools: Vec<PoolJob>,
    /// Things worth a look that change nothing a run does (unknown keys, repeated sections,
    /// values the mode ignores), in line order; to be shown before anything runs.
    pub warnings: Vec<ConfigProblem>,
    /// `parallel images` of `[DEFAULT]`: how many images a run backs up at once (1, the
    /// original's one after the other, unless set).
    pub parallel_images: u32,
    /// `metrics file` of `[DEFAULT]`: where a backup run writes its Prometheus textfile.
    pub metrics_file: Option<PathBuf>,
    /// `state directory` of `[DEFAULT]`: the host's state folder ([`crate::state`]); the
    /// default when unset is [`Config::state_dir`]'s.
    pub state_directory: Option<PathBuf>,
    /// `wait` of `[DEFAULT]`: how long a backup waits for another run using one of its images
    /// (`--wait` overrides it; [`crate::lock::DEFAULT_BACKUP_WAIT`] when neither is given).
    pub wait: Option<std::time::Duration>,
    /// `coordination pool` and `coordination lease` of `[DEFAULT]`: several hosts share this
    /// configuration ([`crate::coordinate`]).
    pub coordination: Option<Coordination>,
}

/// Where the hosts sharing a configuration coordinate, and for how long a lease holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordination {
    pub pool: String,
    pub lease: std::time::Duration,
    /// The cluster of `[DEFAULT]`, where the pool is (the first section's when `[DEFAULT]` names
    /// no `ceph config`).
    pub cluster: crate::cluster::rbd::Cluster,
}

impl Config {
    /// The host's state folder: `state directory`, else [`crate::state::default_dir`].
    pub fn state_dir(&self) -> PathBuf {
        self.state_directory
            .clone()
            .unwrap_or_else(crate::state::default_dir)
    }
}

/// What to back up for one pool, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolJob {
    /// The pool, as rbd names it: the section name exactly as written (pool names are
    /// case-sensitive), or `pool/namespace` for an RBD namespace (a section `[pool/namespace]`,
    /// or `namespace = NAME`).
    pub pool: String,
    /// The section name as written.
    pub section: String,
    /// 1-based line of the section's first header.
    pub line: usize,
    pub images: ImageSelection,
    /// `exclude`: images `images = *` leaves out (and listed names dropped, with a warning).
    pub exclude: Exclude,
    pub destination: PathBuf,
    /// `destination directory` exactly as written, for messages that echo it.
    pub destination_text: String,
    pub ceph_config: PathBuf,
    /// The cephx id (without `client.`), when not Ceph's default.
    pub ceph_user: Option<String>,
    pub ceph_keyring: Option<PathBuf>,
    /// Seconds any single Ceph operation may take (0: no limit), so a stalled or unreachable
    /// cluster fails the run instead of hanging it.
    pub ceph_timeout: u32,
    pub mode: BackupMode,
    /// `compress`: none, gzip (`yes`, the original's `.tar.gz`) or zstd (`.tar.zst`).
    pub compress: Compression,
    /// `compress level`, within the compressor's range; `None`: its default.
    pub compress_level: Option<u32>,
    /// `compress threads`; `None`: one per core.
    pub compress_threads: Option<u32>,
    pub check_mode: bool,
    /// `quiesce`: what `rbd snap create` asks of the clients mapping the image.
    pub quiesce: crate::cluster::rbd::Quiesce,
    /// `pre snapshot command`, `post snapshot command` and `hook timeout`.
    pub hooks: Hooks,
    /// `group NAME = images`: images whose snapshots are taken together, in file order.
    pub groups: Vec<ImageGroup>,
    pub window: Window,
    /// Full mode only: which full backups a successful run keeps (none set: every one).
    pub keep: KeepRules,
    /// Incremental mode only: the fewest restore points a window slide leaves (at least 1).
    pub keep_minimum: u32,
    /// Incremental mode: a window slide exports the new base from the cluster (the original's
    /// way) instead of building it from the old base and the diffs in the folder.
    pub slide_from_cluster: bool,
    /// `file group`: the group that may read what this section writes; `None`: its owner only.
    pub file_group: Option<FileGroup>,
    /// `encrypt to`: the age public keys new backup files are encrypted to; `None`: in clear.
    pub encrypt_to: Option<Recipients>,
    /// The bucket when `destination directory` is `s3://…`; `None`: a local folder.
    pub store: Option<ObjectStore>,
}

impl PoolJob {
    /// The one decision of how a file of this section that is stored as `compression` is
    /// compressed (`None`: it is not), for every writer (an export, a slide's new base). The
    /// section's `compress level` is meant for its own compressor: a file of another kind (one an
    /// earlier configuration wrote, written again) gets that kind's default level. `compress
    /// threads` bounds the section's CPU whatever the kind.
    pub fn compressor_for(&self, compression: Compression) -> Option<Compressor> {
        let level = self.compress_level.filter(|_| compression == self.compress);
        Compressor::new(compression, level, self.compress_threads)
    }

    /// The door into this section's destination folder itself, where the destination's record
    /// is.
    pub fn destination_folder(&self) -> Box<dyn Door> {
        match &self.store {
            Some(store) => Box::new(store.folder(&[] as &[&str])),
            None => Box::new(LocalFolder::at(&self.destination).with_access(self.file_access())),
        }
    }

    /// The door into the folder of this section's pool in its destination, which holds one
    /// folder per image: with [`PoolJob::destination_folder`] and [`PoolJob::image_folder`],
    /// the one place that says where and what kind a section's destination is.
    pub fn pool_folder(&self) -> Box<dyn Door> {
        match &self.store {
            Some(store) => Box::new(store.folder(&naming::pool_path(&self.pool))),
            None => Box::new(
                LocalFolder::pool(&self.destination, &self.pool).with_access(self.file_access()),
            ),
        }
    }

    /// The door into `image`'s folder of this section's destination.
    pub fn image_folder(&self, image: &str) -> Box<dyn Door> {
        match &self.store {
            Some(store) => {
                let mut below = naming::pool_path(&self.pool);
                below.push(image.to_string());
                Box::new(store.folder(&below))
            }
            None => Box::new(
                LocalFolder::image(&self.destination, &self.pool, image)
                    .with_access(self.file_access()),
            ),
        }
    }

    /// Who may read the files and folders this section writes.
    pub fn file_access(&self) -> FileAccess {
        self.file_group
            .as_ref()
            .map_or(FileAccess::PRIVATE, |group| FileAccess::group(group.gid))
    }

    /// How this section reaches its cluster.
    pub fn cluster(&self) -> Cluster {
        Cluster {
            conf: self.ceph_config.clone(),
            user: self.ceph_user.clone(),
            keyring: self.ceph_keyring.clone(),
            timeout: self.ceph_timeout,
        }
    }
}

/// Images snapshotted together (a virtual machine's disks): one pre command, their snapshots
/// back to back under one name, one post command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGroup {
    /// The name after `group` (lowercase, as the reader keeps keys).
    pub name: String,
    /// Distinct image names, each an image the section backs up, in the order written.
    pub images: Vec<String>,
    pub line: usize,
}

impl PoolJob {
    /// The group `image` belongs to, if any.
    pub fn group_of(&self, image: &str) -> Option<&ImageGroup> {
        self.groups
            .iter()
            .find(|group| group.images.iter().any(|member| member == image))
    }
}

/// Commands run around each snapshot the section takes: argument vectors (no shell unless the
/// admin writes `sh -c`), each given at most `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    pub pre: Option<Vec<String>>,
    pub post: Option<Vec<String>>,
    pub timeout: std::time::Duration,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks {
            pre: None,
            post: None,
            timeout: std::time::Duration::from_secs(u64::from(super::DEFAULT_HOOK_TIMEOUT)),
        }
    }
}

/// Shell-style patterns (`*`, `?`, `[…]`) of image names a section leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclude(pub Vec<glob::Pattern>);

impl Exclude {
    /// Whether `image` is left out.
    pub fn matches(&self, image: &str) -> bool {
        self.0.iter().any(|pattern| pattern.matches(image))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSelection {
    /// `images = *`: whatever images the pool holds at run time.
    All,
    /// Distinct, trimmed, non-empty names in the order written.
    Named(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMode {
    Full,
    Incremental,
}

impl BackupMode {
    /// The mode as the configuration and the reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMode::Full => "full",
            BackupMode::Incremental => "incremental",
        }
    }
}

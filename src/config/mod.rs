//! The configuration file: its INI dialect, the keys of a pool section, and every problem in it.
//!
//! The format comes from the original Python tool, which read it with Python 2's `ConfigParser`.
//! The reader here follows that dialect (comment rules, `[DEFAULT]`, merged repeated sections,
//! continuation lines, `%(name)s` references) so that an existing file means what it meant before.
//! Where the original accepted mistakes silently or only failed halfway through a run (untrimmed
//! image names, values checked lazily), this module reports them up front: every problem in the
//! file at once, one line each, naming the file, line, section and key.
//!
//! Strict where a mistake is dangerous, lenient where the original was. A key that looks like a
//! misspelt known key is an error (a typo in `check mode` must never turn a dry run into a real
//! run); any other unknown key is a warning, and a helper key that a `%(name)s` reference uses is
//! fine. A value the section's mode never uses (the window of a full-mode section) is only
//! warned about. Warnings travel beside the result and never stop a run.
//!
//! The tool runs as root from cron, so every input is bounded: the file must be a regular file of
//! at most [`MAX_CONFIG_BYTES`], every value at most [`MAX_VALUE_BYTES`] once its references are
//! expanded, durations have upper bounds, and at most [`MAX_REPORTED_PROBLEMS`] problems of each
//! kind are listed, each on one line of bounded length.
//!
//! Parsing ([`parse_text`]) is pure; [`load`] is the only function here that touches the disk. The INI
//! dialect lives in `ini`, the section schema and `%(name)s` references in `schema`, the value
//! parsers in `values`; the window and its arithmetic in [`window`], full mode's keep rules in
//! [`keep`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::folder::format::write::Compressor;
use crate::folder::naming::Compression;
use crate::folder::untrusted::{EntryKind, NotRegular};
use crate::report::Severity;

mod ini;
pub mod job;
pub mod keep;
pub mod keys;
mod schema;
#[cfg(test)]
mod tests;
mod values;
pub mod window;

use ini::*;
pub use job::{
    BackupMode, Config, Coordination, Exclude, Hooks, ImageGroup, ImageSelection, PoolJob,
};
pub use keep::KeepRules;
use schema::*;
use values::*;
pub use window::{Window, WindowUnit};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/cephbackup/cephbackup.conf";

const DEFAULT_CEPH_CONFIG: &str = "/etc/ceph/ceph.conf";
const DEFAULT_WINDOW: Window = Window {
    size: 7,
    unit: WindowUnit::Days,
};
/// Holds values every pool inherits; ConfigParser matches this name case-sensitively.
const DEFAULT_SECTION: &str = "DEFAULT";
/// ConfigParser lets a `%(name)s` reference resolve to this section's own name.
const SECTION_NAME_REFERENCE: &str = "__name__";
/// ConfigParser gives up after this many levels of nested references.
const MAX_REFERENCE_DEPTH: usize = 10;
/// Bounds the work for references that fan out (`%(a)s%(a)s…` at every level) without nesting.
const MAX_REFERENCE_EXPANSIONS: usize = 10_000;
/// The largest value, once its references are expanded. Counting references alone does not bound
/// memory: ten references to a value of ten references to … reach gigabytes within both limits.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The largest configuration file read. Real ones are a few kilobytes; the bound keeps a wrong
/// `-c` (a log file, a disk image) from being read whole into memory.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Problems of each kind (errors, warnings) listed; the rest are counted in one last line, so
/// that a binary file passed as the configuration cannot flood cron's mail.
pub const MAX_REPORTED_PROBLEMS: usize = 100;
/// Characters of a name or quoted text shown in a problem, so every problem stays a short line.
const MAX_QUOTED_CHARS: usize = 80;
/// Characters of a problem's message shown: a backstop for messages built elsewhere.
const MAX_MESSAGE_CHARS: usize = 600;

const IMAGES: &str = "images";
/// Shell-style patterns of image names a section leaves out.
const EXCLUDE: &str = "exclude";
const DESTINATION: &str = "destination directory";
const CEPH_CONFIG: &str = "ceph config";
const CEPH_USER: &str = "ceph user";
const CEPH_KEYRING: &str = "ceph keyring";
const BACKUP_MODE: &str = "backup mode";
const COMPRESS: &str = "compress";
const COMPRESS_LEVEL: &str = "compress level";
const COMPRESS_THREADS: &str = "compress threads";
const CHECK_MODE: &str = "check mode";
/// Whether `rbd snap create` quiesces the image's clients first (`yes`, `no`, `ignore errors`).
const QUIESCE: &str = "quiesce";
/// Commands run just before and just after an image's snapshot ([`Hooks`]), and how long each
/// may take.
const PRE_SNAPSHOT_COMMAND: &str = "pre snapshot command";
/// The RBD namespace of the section's pool (also written as the section `[pool/namespace]`).
const NAMESPACE: &str = "namespace";
/// `group NAME = image, image`: a key whose name is this word, a space and the group's name.
const GROUP: &str = "group";
const POST_SNAPSHOT_COMMAND: &str = "post snapshot command";
const HOOK_TIMEOUT: &str = "hook timeout";
/// Seconds a hook may run unless `hook timeout` says otherwise.
pub const DEFAULT_HOOK_TIMEOUT: u32 = 300;
const WINDOW_SIZE: &str = "window size";
const WINDOW_UNIT: &str = "window unit";
const CEPH_TIMEOUT: &str = "ceph timeout";
const KEEP_LAST: &str = "keep last";
const KEEP_DAILY: &str = "keep daily";
const KEEP_WEEKLY: &str = "keep weekly";
const KEEP_MONTHLY: &str = "keep monthly";
const KEEP_MINIMUM: &str = "keep minimum";
/// Read from `[DEFAULT]` only: it is about the whole run, not one pool.
const PARALLEL_IMAGES: &str = "parallel images";
/// `[DEFAULT]` only: the Prometheus textfile a backup run writes.
const METRICS_FILE: &str = "metrics file";
/// `[DEFAULT]` only: the host's state folder ([`crate::state`]).
const STATE_DIRECTORY: &str = "state directory";
/// `[DEFAULT]` only: how long a backup waits for another run's image ([`crate::lock`]).
const WAIT: &str = "wait";
/// `[DEFAULT]` only: several hosts share the configuration, through leases and a shared memory
/// in this pool ([`crate::coordinate`]), and how long a lease lasts unless renewed.
const COORDINATION_POOL: &str = "coordination pool";
const COORDINATION_LEASE: &str = "coordination lease";
/// The most images backed up at once: each costs an `rbd` process and a stream to the disk, and
/// more than this would only make them wait on each other.
pub const MAX_PARALLEL_IMAGES: u32 = 64;
/// Incremental mode: a window slide exports the new base from the cluster, as the original did,
/// instead of building it from the folder.
const SLIDE_FROM_CLUSTER: &str = "slide from cluster";
/// A group that may read the backups (files 0640, folders 0750) instead of their owner only.
const FILE_GROUP: &str = "file group";
/// New backup files are age files for these public keys ([`crate::folder::format::encrypt`]).
const ENCRYPT_TO: &str = "encrypt to";
/// An object-store destination (`destination directory = s3://BUCKET/PREFIX`): the service's URL,
/// the region requests are signed for, and the file of the keys.
const S3_ENDPOINT: &str = "s3 endpoint";
const S3_REGION: &str = "s3 region";
const S3_CREDENTIALS: &str = "s3 credentials";
/// The region signed for when `s3 region` is not set: what radosgw and most services accept.
const DEFAULT_S3_REGION: &str = "us-east-1";
/// The full-mode keep rules, in the order they are read and reported.
const KEEP_RULE_KEYS: [&str; 4] = [KEEP_LAST, KEEP_DAILY, KEEP_WEEKLY, KEEP_MONTHLY];
/// The group a `group NAME` key names, when `key` is one.
fn group_name(key: &str) -> Option<&str> {
    key.strip_prefix(GROUP)?.strip_prefix(' ').map(python_trim)
}

/// An unknown key starting with this (ignoring separators) is taken for a retention rule the tool
/// does not have (`keep yearly`, `keep hourly`). Ignoring it would be dangerous: the rules that
/// are set would then remove what the admin meant that one to keep.
const KEEP_PREFIX: &str = "keep";
/// Restore points incremental mode keeps whatever the window, unless `keep minimum` says more:
/// this run's own point, which is the original's behaviour.
pub const DEFAULT_KEEP_MINIMUM: u32 = 1;
/// Seconds a Ceph operation may take before `rbd` gives up, unless `ceph timeout` says otherwise.
pub const DEFAULT_CEPH_TIMEOUT: u32 = 300;
/// The longest `ceph timeout`: one day. Longer means "never" in practice, which `0` says plainly.
pub const MAX_CEPH_TIMEOUT: u32 = 86_400;

/// The most threads `compress threads` may ask for: far more cores than a backup host has, and
/// a bound on the memory the compressor's buffers take (a few MiB per thread).
pub const MAX_COMPRESS_THREADS: u32 = 256;

/// Python's `strtobool` words, which the original used for `compress` and `check mode`.
const TRUE_WORDS: [&str; 6] = ["y", "yes", "t", "true", "on", "1"];
const FALSE_WORDS: [&str; 6] = ["n", "no", "f", "false", "off", "0"];

/// Edits (ignoring spaces, `_` and `-`) within which an unknown key is probably a misspelling of a
/// known one. Two, not more: `backup root` is three edits from `backup mode`, and is a helper key.
const MAX_SUGGESTION_DISTANCE: usize = 2;
/// An unknown key this long (ignoring separators) or longer that starts a known key, or that a
/// known key starts (`check`, `dest`, `compression`), is taken as meaning that known key.
const MIN_ABBREVIATION_CHARS: usize = 4;

/// One problem in the configuration file.
///
/// Displays as one line, `<file>:<line>: [<section>] <key>: <message>`; the section and key parts
/// are left out when they do not apply, and the line part when the file could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigProblem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the file as a whole.
    pub line: usize,
    pub section: Option<String>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(&self.file.display().to_string()))?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        if let Some(section) = &self.section {
            write!(f, "[{}] ", excerpt(section, MAX_QUOTED_CHARS))?;
        }
        if let Some(key) = &self.key {
            write!(f, "{}: ", excerpt(key, MAX_QUOTED_CHARS))?;
        }
        f.write_str(&excerpt(&self.message, MAX_MESSAGE_CHARS))
    }
}

impl std::error::Error for ConfigProblem {}

/// Why the file cannot be used: every error found, in line order (displayed one per line), and
/// the warnings found beside them, so that fixing the errors brings no new surprise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigProblem>,
    pub warnings: Vec<ConfigProblem>,
}

impl ConfigErrors {
    /// The file as a whole could not be read.
    fn whole_file(file: &Path, message: String) -> Self {
        ConfigErrors {
            errors: vec![ConfigProblem {
                file: file.to_path_buf(),
                line: 0,
                section: None,
                key: None,
                message,
            }],
            warnings: Vec::new(),
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.errors.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses the text of a configuration file; `path` is only used to name the file in problems.
#[cfg(test)]
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(path));
    }
    parse_text(text, path, &[])
}

/// Reads and parses the configuration file at `path`.
///
/// The path may be a symlink (a managed file linked into `/etc/cephbackup`), but what it leads to
/// must be a regular file of at most [`MAX_CONFIG_BYTES`]: a FIFO, a device or `/dev/zero` is
/// refused at once, before a byte is read.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = read_bounded(path).map_err(|error| unreadable_file(path, &error))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(path));
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse_text(&text, path, &[]),
        Err(not_utf8) => {
            // Python 2 read bytes, so old files may carry Latin-1 comments; those stay harmless,
            // and only lines that matter are reported.
            let bytes = not_utf8.as_bytes();
            let text = String::from_utf8_lossy(bytes);
            parse_text(&text, path, &undecodable_lines(bytes))
        }
    }
}

/// Reads at most one byte more than [`MAX_CONFIG_BYTES`], so that an endless input (a growing
/// file, a device that slipped through) can never make this allocate without bound.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let file = open_config_file(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Opens the configuration file for reading, following symlinks but accepting only a regular file.
///
/// `O_NONBLOCK` keeps a FIFO from hanging `open` until some writer appears, and `O_NOCTTY` keeps
/// a terminal device from becoming the controlling terminal of a tool started by cron. The check
/// looks at the open handle, not at the path again, so nothing can be swapped in between.
#[allow(clippy::disallowed_methods)] // opens for reading only
fn open_config_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    match EntryKind::of(file.metadata()?.file_type()) {
        EntryKind::File => Ok(file),
        // Reading a folder always failed with this; users and scripts know the message.
        EntryKind::Directory => Err(io::Error::from_raw_os_error(libc::EISDIR)),
        kind => Err(io::Error::other(NotRegular(kind))),
    }
}

fn unreadable_file(path: &Path, error: &io::Error) -> ConfigErrors {
    ConfigErrors::whole_file(path, format!("cannot read configuration file: {error}"))
}

fn too_large(path: &Path) -> ConfigErrors {
    ConfigErrors::whole_file(
        path,
        format!(
            "configuration file is larger than 1 MiB ({MAX_CONFIG_BYTES} bytes), far more than \
             any configuration needs; is it the right file?"
        ),
    )
}

/// 1-based numbers of the lines that are not UTF-8, in ascending order.
fn undecodable_lines(bytes: &[u8]) -> Vec<usize> {
    bytes
        .split(|&byte| byte == b'\n')
        .enumerate()
        .filter(|(_, line)| std::str::from_utf8(line).is_err())
        .map(|(index, _)| index + 1)
        .collect()
}

fn parse_text(text: &str, path: &Path, undecodable: &[usize]) -> Result<Config, ConfigErrors> {
    let (ini, mut findings) = IniReader::new(path).read(text, undecodable);
    let pools: Vec<PoolJob> = ini
        .pools
        .iter()
        .filter_map(|pool| {
            let reader = PoolReader {
                file: path,
                pool,
                defaults: &ini.defaults,
                findings: &mut findings,
            };
            reader.job().ok()
        })
        .collect();
    one_section_per_pool(path, &pools, &mut findings);
    let parallel_images = parallel_images(&ini, path, &mut findings);
    let metrics_file = metrics_file(path, &ini, &mut findings);
    let state_directory = state_directory(path, &ini, &mut findings);
    let wait = wait(path, &ini, &mut findings);
    let mut coordination = coordination(path, &ini, &mut findings);
    // Without a cluster in [DEFAULT], the pool is in the cluster of the first section.
    if let (Some(coordination), None, Some(first)) = (
        coordination.as_mut(),
        ini.defaults.get(CEPH_CONFIG),
        pools.first(),
    ) {
        coordination.cluster = first.cluster();
    }
    findings
        .into_result(path, pools, parallel_images, metrics_file, state_directory)
        .map(|config| Config {
            wait,
            coordination,
            ..config
        })
}

/// `coordination pool` and `coordination lease`: one set for all the hosts of the run, so read
/// from `[DEFAULT]` only, with the cluster settings of `[DEFAULT]` (where the pool is; the
/// caller takes the first section's when `[DEFAULT]` names no `ceph config`).
fn coordination(path: &Path, ini: &RawIni, findings: &mut Findings) -> Option<Coordination> {
    let in_pool = "the hosts share one coordination pool: set it in [DEFAULT]";
    let pool = default_only(path, ini, findings, COORDINATION_POOL, in_pool, |text| {
        let name = python_trim(text);
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(format!("{} is not a pool name", quoted(text)));
        }
        Ok(name.to_string())
    });
    let lease = default_only(
        path,
        ini,
        findings,
        COORDINATION_LEASE,
        in_pool,
        parse_lease,
    );
    if pool.is_none() {
        if let Some(entry) = ini.defaults.get(COORDINATION_LEASE) {
            let problem = ConfigProblem {
                file: path.to_path_buf(),
                line: entry.line,
                section: Some(DEFAULT_SECTION.to_string()),
                key: Some(COORDINATION_LEASE.to_string()),
                message: "has no effect without `coordination pool`".to_string(),
            };
            findings.add(Severity::Warning, problem);
        }
    }
    let mut reader = defaults_reader(path, ini, findings);
    let conf = reader.optional(CEPH_CONFIG, parse_optional_text).ok()?;
    let user = reader.optional(CEPH_USER, parse_optional_text).ok()?;
    let keyring = reader.optional(CEPH_KEYRING, parse_optional_text).ok()?;
    let timeout = reader.optional(CEPH_TIMEOUT, parse_ceph_timeout).ok()?;
    Some(Coordination {
        pool: pool?,
        lease: lease.map_or(
            crate::coordinate::DEFAULT_LEASE,
            std::time::Duration::from_secs,
        ),
        cluster: crate::cluster::rbd::Cluster {
            conf: PathBuf::from(conf.as_deref().unwrap_or(DEFAULT_CEPH_CONFIG)),
            user,
            keyring: keyring.map(PathBuf::from),
            timeout: timeout.unwrap_or(DEFAULT_CEPH_TIMEOUT),
        },
    })
}

/// Two sections backing up one pool (`[rbd/ns]`, and `[rbd]` with `namespace = ns`) would run
/// two jobs over the same images' snapshots and folders.
fn one_section_per_pool(path: &Path, pools: &[PoolJob], findings: &mut Findings) {
    for (index, job) in pools.iter().enumerate() {
        if let Some(first) = pools[..index].iter().find(|first| first.pool == job.pool) {
            let problem = ConfigProblem {
                file: path.to_path_buf(),
                line: job.line,
                section: Some(job.section.clone()),
                key: None,
                message: format!(
                    "backs up pool {} as the section at line {} does: one section per pool",
                    quoted(&job.pool),
                    first.line
                ),
            };
            findings.add(Severity::Error, problem);
        }
    }
}

/// A reader of `[DEFAULT]` itself, for the keys that belong to the whole run.
fn defaults_reader<'a>(
    path: &'a Path,
    ini: &'a RawIni,
    findings: &'a mut Findings,
) -> PoolReader<'a, 'a> {
    PoolReader {
        file: path,
        pool: &ini.defaults,
        defaults: &ini.defaults,
        findings,
    }
}

/// `coordination lease`: whole seconds, within [`crate::coordinate::MIN_LEASE_SECONDS`] and
/// [`crate::coordinate::MAX_LEASE_SECONDS`].
fn parse_lease(text: &str) -> Result<u64, String> {
    use crate::coordinate::{MAX_LEASE_SECONDS, MIN_LEASE_SECONDS};
    unsigned_digits(text)?
        .and_then(|digits| digits.parse::<u64>().ok())
        .filter(|seconds| (MIN_LEASE_SECONDS..=MAX_LEASE_SECONDS).contains(seconds))
        .ok_or_else(|| {
            format!(
                "invalid value {} (expected whole seconds from {MIN_LEASE_SECONDS} to \
                 {MAX_LEASE_SECONDS})",
                quoted(text)
            )
        })
}

/// `wait`: whole seconds a backup waits for another run using one of its images; one value for
/// the whole run, so it is read from `[DEFAULT]` only (an error in a pool section).
fn wait(path: &Path, ini: &RawIni, findings: &mut Findings) -> Option<std::time::Duration> {
    let in_pool = "a run waits the same for every image: set it in [DEFAULT]";
    default_only(path, ini, findings, WAIT, in_pool, parse_wait).map(std::time::Duration::from_secs)
}

/// The `metrics file` of a configuration that cannot be used, when its `[DEFAULT]` still says
/// one: a run that stops on a configuration error must still replace the metrics of the last
/// good run, or monitoring stays green. `None` when the file cannot be read at all.
pub fn metrics_file_despite_errors(path: &Path) -> Option<PathBuf> {
    let bytes = read_bounded(path).ok()?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes);
    let (ini, mut findings) = IniReader::new(path).read(&text, &[]);
    metrics_file(path, &ini, &mut findings)
}

/// `state directory`: the host's one state folder, so it is read from `[DEFAULT]` only (with its
/// `%(name)s` references expanded there); in a pool section it is an error. The path must be
/// absolute.
fn state_directory(path: &Path, ini: &RawIni, findings: &mut Findings) -> Option<PathBuf> {
    default_only_path(
        path,
        ini,
        findings,
        STATE_DIRECTORY,
        "the host has one state folder: set it in [DEFAULT]",
        parse_absolute_folder,
    )
}

/// `metrics file`: one file for the whole run, so it is read from `[DEFAULT]` only (with its
/// `%(name)s` references expanded there); written in a pool section it is an error, as the
/// section could not have a file of its own. The path must be absolute: cron's working folder
/// is nobody's choice.
fn metrics_file(path: &Path, ini: &RawIni, findings: &mut Findings) -> Option<PathBuf> {
    default_only_path(
        path,
        ini,
        findings,
        METRICS_FILE,
        "one metrics file serves the whole run: set it in [DEFAULT]",
        parse_metrics_file,
    )
}

/// A path key that belongs to the whole run (see [`default_only`]).
fn default_only_path(
    path: &Path,
    ini: &RawIni,
    findings: &mut Findings,
    key: &str,
    in_pool: &str,
    parse: fn(&str) -> Result<String, String>,
) -> Option<PathBuf> {
    default_only(path, ini, findings, key, in_pool, parse).map(PathBuf::from)
}

/// A key that belongs to the whole run: an error with `in_pool` wherever a pool section sets
/// it, and its `[DEFAULT]` value parsed with `parse`.
fn default_only<T>(
    path: &Path,
    ini: &RawIni,
    findings: &mut Findings,
    key: &str,
    in_pool: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Option<T> {
    for pool in &ini.pools {
        if let Some(entry) = pool.get(key) {
            let problem = ConfigProblem {
                file: path.to_path_buf(),
                line: entry.line,
                section: Some(pool.name.clone()),
                key: Some(key.to_string()),
                message: in_pool.to_string(),
            };
            findings.add(Severity::Error, problem);
        }
    }
    let mut reader = defaults_reader(path, ini, findings);
    reader.optional(key, parse).ok().flatten()
}

/// `parallel images`, from `[DEFAULT]`; written in a pool section it is reported and ignored.
fn parallel_images(ini: &RawIni, path: &Path, findings: &mut Findings) -> u32 {
    for pool in &ini.pools {
        if let Some(entry) = pool.get(PARALLEL_IMAGES) {
            let problem = ConfigProblem {
                file: path.to_path_buf(),
                line: entry.line,
                section: Some(pool.name.clone()),
                key: Some(PARALLEL_IMAGES.to_string()),
                message: "is read from [DEFAULT] only (it applies to the whole run); ignored here"
                    .to_string(),
            };
            findings.add(Severity::Warning, problem);
        }
    }
    let Some(entry) = ini.defaults.get(PARALLEL_IMAGES) else {
        return 1;
    };
    match parse_count(&entry.value) {
        Ok(count) if (1..=MAX_PARALLEL_IMAGES).contains(&count) => count,
        result => {
            let message = match result {
                Err(message) => message,
                Ok(_) => format!(
                    "value {} is out of range (1 to {MAX_PARALLEL_IMAGES} images at once)",
                    quoted(&entry.value)
                ),
            };
            let problem = ConfigProblem {
                file: path.to_path_buf(),
                line: entry.line,
                section: Some(DEFAULT_SECTION.to_string()),
                key: Some(PARALLEL_IMAGES.to_string()),
                message,
            };
            findings.add(Severity::Error, problem);
            1
        }
    }
}

/// Problems found so far, by severity, in discovery order.
#[derive(Debug, Default)]
struct Findings {
    errors: Vec<ConfigProblem>,
    warnings: Vec<ConfigProblem>,
}

impl Findings {
    fn add(&mut self, severity: Severity, problem: ConfigProblem) {
        match severity {
            Severity::Error => self.errors.push(problem),
            Severity::Warning => self.warnings.push(problem),
        }
    }

    /// The pools when nothing is an error. A warning that repeats an error is dropped: a faulty
    /// `[DEFAULT]` value is only a warning for a full-mode pool but an error for an incremental
    /// one, and one line about it is enough.
    fn into_result(
        self,
        file: &Path,
        pools: Vec<PoolJob>,
        parallel_images: u32,
        metrics_file: Option<PathBuf>,
        state_directory: Option<PathBuf>,
    ) -> Result<Config, ConfigErrors> {
        let Findings { errors, warnings } = self;
        let error_set: HashSet<&ConfigProblem> = errors.iter().collect();
        let warnings: Vec<ConfigProblem> = warnings
            .into_iter()
            .filter(|warning| !error_set.contains(warning))
            .collect();
        let warnings = in_report_order(file, warnings);
        if errors.is_empty() {
            Ok(Config {
                path: file.to_path_buf(),
                pools,
                warnings,
                parallel_images,
                metrics_file,
                state_directory,
                wait: None,
                coordination: None,
            })
        } else {
            Err(ConfigErrors {
                errors: in_report_order(file, errors),
                warnings,
            })
        }
    }
}

/// Sorts by line (keeping discovery order within a line), drops exact repeats (several pools
/// inheriting one faulty `[DEFAULT]` value find the same problem), and keeps the first
/// [`MAX_REPORTED_PROBLEMS`], counting the rest in one last line.
fn in_report_order(file: &Path, mut problems: Vec<ConfigProblem>) -> Vec<ConfigProblem> {
    problems.sort_by_key(|problem| problem.line);
    let mut seen: HashSet<ConfigProblem> = HashSet::with_capacity(problems.len());
    let mut distinct: Vec<ConfigProblem> = problems
        .into_iter()
        .filter(|problem| seen.insert(problem.clone()))
        .collect();
    if distinct.len() > MAX_REPORTED_PROBLEMS {
        let hidden = distinct.len() - MAX_REPORTED_PROBLEMS;
        distinct.truncate(MAX_REPORTED_PROBLEMS);
        distinct.push(ConfigProblem {
            file: file.to_path_buf(),
            line: 0,
            section: None,
            key: None,
            message: format!("{hidden} more like these not shown"),
        });
    }
    distinct
}

/// The `ceph config` and `ceph keyring` files every section names, each opened once for reading:
/// one problem per file that is missing, unreadable or not a regular file, naming the key, the
/// (first) section that uses it, the path and the cause. Without this, a wrong path surfaced only
/// as `rbd`'s own message in the middle of a run, once per image. Relative paths are taken from
/// the current folder, as `rbd` takes them.
pub fn cluster_file_problems(config: &Config) -> Vec<ConfigProblem> {
    let mut seen: HashSet<(&str, &Path)> = HashSet::new();
    let mut problems = Vec::new();
    for job in &config.pools {
        let files = std::iter::once((CEPH_CONFIG, job.ceph_config.as_path()))
            .chain(job.ceph_keyring.as_deref().map(|path| (CEPH_KEYRING, path)));
        for (key, path) in files {
            if !seen.insert((key, path)) {
                continue;
            }
            if let Err(error) = open_config_file(path) {
                problems.push(ConfigProblem {
                    file: config.path.clone(),
                    line: job.line,
                    section: Some(job.pool.clone()),
                    key: Some(key.to_string()),
                    message: format!(
                        "cannot read {}: {}",
                        printable(&path.display().to_string()),
                        cause_of(&error)
                    ),
                });
            }
        }
    }
    problems
}

/// An I/O error for people: without Rust's `(os error N)` suffix.
fn cause_of(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

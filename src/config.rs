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
//! [`parse_str`] is pure; [`load`] is the only function here that touches the disk.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Months, TimeDelta, Utc};

use crate::retention::KeepRules;
use crate::untrusted::{EntryKind, NotRegular};

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
const MAX_MESSAGE_CHARS: usize = 400;

const IMAGES: &str = "images";
const DESTINATION: &str = "destination directory";
const CEPH_CONFIG: &str = "ceph config";
const CEPH_USER: &str = "ceph user";
const CEPH_KEYRING: &str = "ceph keyring";
const BACKUP_MODE: &str = "backup mode";
const COMPRESS: &str = "compress";
const CHECK_MODE: &str = "check mode";
const WINDOW_SIZE: &str = "window size";
const WINDOW_UNIT: &str = "window unit";
const CEPH_TIMEOUT: &str = "ceph timeout";
const KEEP_LAST: &str = "keep last";
const KEEP_DAILY: &str = "keep daily";
const KEEP_WEEKLY: &str = "keep weekly";
const KEEP_MONTHLY: &str = "keep monthly";
const KEEP_MINIMUM: &str = "keep minimum";
/// The full-mode keep rules, in the order they are read and reported.
const KEEP_RULE_KEYS: [&str; 4] = [KEEP_LAST, KEEP_DAILY, KEEP_WEEKLY, KEEP_MONTHLY];
const KNOWN_KEYS: [&str; 16] = [
    IMAGES,
    DESTINATION,
    CEPH_CONFIG,
    CEPH_USER,
    CEPH_KEYRING,
    BACKUP_MODE,
    COMPRESS,
    CHECK_MODE,
    WINDOW_SIZE,
    WINDOW_UNIT,
    CEPH_TIMEOUT,
    KEEP_LAST,
    KEEP_DAILY,
    KEEP_WEEKLY,
    KEEP_MONTHLY,
    KEEP_MINIMUM,
];
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
/// The longest window, about a century, in days. Nothing longer means anything for backups, and
/// the bound keeps window arithmetic far from the limits of the date types.
const MAX_WINDOW_DAYS: u32 = 36_525;

/// Python's `strtobool` words, which the original used for `compress` and `check mode`.
const TRUE_WORDS: [&str; 6] = ["y", "yes", "t", "true", "on", "1"];
const FALSE_WORDS: [&str; 6] = ["n", "no", "f", "false", "off", "0"];

/// Edits (ignoring spaces, `_` and `-`) within which an unknown key is probably a misspelling of a
/// known one. Two, not more: `backup root` is three edits from `backup mode`, and is a helper key.
const MAX_SUGGESTION_DISTANCE: usize = 2;
/// An unknown key this long (ignoring separators) or longer that starts a known key, or that a
/// known key starts (`check`, `dest`, `compression`), is taken as meaning that known key.
const MIN_ABBREVIATION_CHARS: usize = 4;

/// The whole configuration file: one job per pool section, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub pools: Vec<PoolJob>,
    /// Things worth a look that change nothing a run does (unknown keys, repeated sections,
    /// values the mode ignores), in line order; to be shown before anything runs.
    pub warnings: Vec<ConfigProblem>,
}

/// What to back up for one pool, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolJob {
    /// The section name exactly as written (pool names are case-sensitive).
    pub pool: String,
    /// 1-based line of the section's first header.
    pub line: usize,
    pub images: ImageSelection,
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
    pub compress: bool,
    pub check_mode: bool,
    pub window: Window,
    /// Full mode only: which full backups a successful run keeps (none set: every one).
    pub keep: KeepRules,
    /// Incremental mode only: the fewest restore points a window slide leaves (at least 1).
    pub keep_minimum: u32,
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

/// How long incremental backups are kept before the chain is re-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub size: u32,
    pub unit: WindowUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowUnit {
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
}

impl Window {
    /// The oldest instant still inside the window: a backup taken at `t` is outside iff
    /// `t < cutoff(now)`.
    ///
    /// Fixed-length units subtract `size * unit`, which makes "outside" exactly the original's
    /// strict `now - t > window`. Months are calendar months, clamped to the end of a shorter
    /// month (31 March minus one month is 28 February). A window reaching before the earliest
    /// representable instant saturates there, so nothing is ever outside it.
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let count = i64::from(self.size);
        let fixed =
            |length: Option<TimeDelta>| length.and_then(|length| now.checked_sub_signed(length));
        let cutoff = match self.unit {
            WindowUnit::Minutes => fixed(TimeDelta::try_minutes(count)),
            WindowUnit::Hours => fixed(TimeDelta::try_hours(count)),
            WindowUnit::Days => fixed(TimeDelta::try_days(count)),
            WindowUnit::Weeks => fixed(TimeDelta::try_weeks(count)),
            WindowUnit::Months => now.checked_sub_months(Months::new(self.size)),
        };
        cutoff.unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Whether a backup taken at `taken` has fallen out of the window at `now`.
    pub fn is_outside(&self, now: DateTime<Utc>, taken: DateTime<Utc>) -> bool {
        taken < self.cutoff(now)
    }

    /// Refuses a window longer than about a century ([`MAX_WINDOW_DAYS`]).
    fn check_length(&self) -> Result<(), String> {
        let longest = Window {
            size: self.unit.longest_window(),
            unit: self.unit,
        };
        if self.size <= longest.size {
            Ok(())
        } else {
            Err(format!(
                "window of {self} is longer than 100 years (at most {longest})"
            ))
        }
    }
}

impl WindowUnit {
    /// The largest `window size` in this unit: [`MAX_WINDOW_DAYS`], or 1200 calendar months.
    fn longest_window(self) -> u32 {
        match self {
            WindowUnit::Minutes => MAX_WINDOW_DAYS * 24 * 60,
            WindowUnit::Hours => MAX_WINDOW_DAYS * 24,
            WindowUnit::Days => MAX_WINDOW_DAYS,
            WindowUnit::Weeks => MAX_WINDOW_DAYS / 7,
            WindowUnit::Months => 100 * 12,
        }
    }

    fn singular(self) -> &'static str {
        match self {
            WindowUnit::Minutes => "minute",
            WindowUnit::Hours => "hour",
            WindowUnit::Days => "day",
            WindowUnit::Weeks => "week",
            WindowUnit::Months => "month",
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.size == 1 { "" } else { "s" };
        write!(f, "{} {}{}", self.size, self.unit.singular(), plural)
    }
}

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
    findings.into_result(path, pools)
}

/// Whether a problem stops the file from being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Error,
    /// Changes nothing a run does; shown, then the run goes on.
    Warning,
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
    fn into_result(self, file: &Path, pools: Vec<PoolJob>) -> Result<Config, ConfigErrors> {
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

// ---------------------------------------------------------------------------------------------
// The INI dialect: text to sections of raw `key = value` entries.

/// One option as written, with its continuation lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawEntry {
    key: String,
    value: String,
    line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RawSection {
    name: String,
    /// Of the first header; 0 for `[DEFAULT]` until its header is seen.
    line: usize,
    entries: Vec<RawEntry>,
    /// Where each key is in `entries`, so that a file of many keys is not quadratic to read.
    positions: HashMap<String, usize>,
}

impl RawSection {
    fn new(name: &str, line: usize) -> Self {
        RawSection {
            name: name.to_string(),
            line,
            entries: Vec::new(),
            positions: HashMap::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&RawEntry> {
        self.positions.get(key).map(|&index| &self.entries[index])
    }

    /// Later assignments replace earlier ones, as in ConfigParser. Returns the entry's index so
    /// continuation lines can extend it.
    fn set(&mut self, key: String, value: String, line: usize) -> usize {
        match self.positions.get(&key) {
            Some(&index) => {
                self.entries[index] = RawEntry { key, value, line };
                index
            }
            None => {
                let index = self.entries.len();
                self.positions.insert(key.clone(), index);
                self.entries.push(RawEntry { key, value, line });
                index
            }
        }
    }
}

#[derive(Debug, Default)]
struct RawIni {
    defaults: RawSection,
    pools: Vec<RawSection>,
}

/// What a single line is, before the reader's state decides what it means.
#[derive(Debug, PartialEq, Eq)]
enum LineKind<'a> {
    Ignored,
    /// Starts with whitespace: a continuation, if it directly follows an option.
    Indented(&'a str),
    Header(Result<&'a str, &'static str>),
    Option {
        key: String,
        value: String,
    },
    Unparsable(String),
}

/// Where option lines currently go.
enum Target {
    NoSectionYet,
    /// After a malformed header: its options are dropped rather than cascading into more problems.
    BrokenHeader,
    Defaults,
    Pool(usize),
}

/// What an indented line would continue.
enum Continuation {
    Nothing,
    Entry(usize),
    /// An option that was itself a problem; its continuation lines add nothing new.
    Discarded,
}

/// A key that is not one of [`KNOWN_KEYS`], as written; judged once the whole file is read.
struct UnknownKey {
    line: usize,
    section: String,
    key: String,
}

struct IniReader<'a> {
    file: &'a Path,
    ini: RawIni,
    /// Where each pool section is in `ini.pools`.
    pool_positions: HashMap<String, usize>,
    target: Target,
    continuation: Continuation,
    unknown_keys: Vec<UnknownKey>,
    findings: Findings,
}

impl<'a> IniReader<'a> {
    fn new(file: &'a Path) -> Self {
        IniReader {
            file,
            ini: RawIni {
                defaults: RawSection::new(DEFAULT_SECTION, 0),
                pools: Vec::new(),
            },
            pool_positions: HashMap::new(),
            target: Target::NoSectionYet,
            continuation: Continuation::Nothing,
            unknown_keys: Vec::new(),
            findings: Findings::default(),
        }
    }

    /// `undecodable`: the numbers of the lines that were not UTF-8, ascending.
    fn read(mut self, text: &str, undecodable: &[usize]) -> (RawIni, Findings) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let kind = classify_line(line);
            if kind != LineKind::Ignored {
                if line.contains('\0') {
                    self.skip_damaged_line(number, &kind);
                    continue;
                }
                if undecodable.binary_search(&number).is_ok() {
                    self.report(number, None, "line is not valid UTF-8 text".to_string());
                }
            }
            self.apply(number, kind);
        }
        self.report_unknown_keys();
        (self.ini, self.findings)
    }

    fn apply(&mut self, number: usize, kind: LineKind<'_>) {
        match kind {
            LineKind::Ignored => self.continuation = Continuation::Nothing,
            LineKind::Indented(text) => self.continue_option(number, text),
            LineKind::Header(Ok(name)) => self.open_section(name, number),
            LineKind::Header(Err(message)) => {
                // Reported outside any section: the previous section has ended.
                self.target = Target::BrokenHeader;
                self.report(number, None, message.to_string());
                self.continuation = Continuation::Nothing;
            }
            LineKind::Option { key, value } => self.add_option(number, key, value),
            LineKind::Unparsable(message) => {
                self.report(number, None, message);
                self.continuation = Continuation::Nothing;
            }
        }
    }

    /// A NUL byte never belongs in a text file, and is what a file damaged by a crash typically
    /// holds. The line is reported and otherwise skipped; a damaged header still ends the section
    /// before it, so that the keys below it cannot land in another pool.
    fn skip_damaged_line(&mut self, number: usize, kind: &LineKind<'_>) {
        if matches!(kind, LineKind::Header(_)) {
            self.target = Target::BrokenHeader;
        }
        let message = "line contains a NUL byte (is the file damaged?)";
        self.report(number, None, message.to_string());
        self.continuation = Continuation::Discarded;
    }

    fn open_section(&mut self, name: &str, line: usize) {
        self.target = if name == DEFAULT_SECTION {
            Target::Defaults
        } else if let Some(&index) = self.pool_positions.get(name) {
            Target::Pool(index)
        } else {
            let index = self.ini.pools.len();
            self.ini.pools.push(RawSection::new(name, line));
            self.pool_positions.insert(name.to_string(), index);
            Target::Pool(index)
        };
        self.continuation = Continuation::Nothing;
        self.note_repeated_header(line);
    }

    /// ConfigParser merges a repeated section into the first one, later values winning; so does
    /// this reader, but one file cannot hold two jobs for one pool, so a repeat is probably a
    /// mistake worth a warning.
    fn note_repeated_header(&mut self, line: usize) {
        let first = match self.target {
            Target::Defaults if self.ini.defaults.line == 0 => {
                self.ini.defaults.line = line;
                return;
            }
            Target::Defaults => self.ini.defaults.line,
            Target::Pool(index) => self.ini.pools[index].line,
            Target::NoSectionYet | Target::BrokenHeader => return,
        };
        if first != line {
            let message = format!(
                "section repeats the one at line {first}; both are merged, and a key set in \
                 both takes its later value"
            );
            self.warn(line, None, message);
        }
    }

    fn add_option(&mut self, number: usize, key: String, value: String) {
        if matches!(self.target, Target::NoSectionYet) {
            let message = "option outside any section (add a '[pool]' header above it)";
            self.report(number, Some(&key), message.to_string());
        }
        if !KNOWN_KEYS.contains(&key.as_str()) {
            if let Some(section) = self.current_section() {
                self.unknown_keys.push(UnknownKey {
                    line: number,
                    section: section.name.clone(),
                    key: key.clone(),
                });
            }
        }
        self.continuation = match self.current_section_mut() {
            Some(section) => Continuation::Entry(section.set(key, value, number)),
            None => Continuation::Discarded,
        };
    }

    /// Unknown keys can only be judged once every `%(name)s` reference in the file is known: a
    /// helper key that one uses is fine, one that looks like a misspelt known key is an error (a
    /// typo in `check mode` must never turn a dry run into a real run), and any other is ignored
    /// with a warning, as the original ignored it silently.
    fn report_unknown_keys(&mut self) {
        let referenced = referenced_names(&self.ini);
        for unknown in std::mem::take(&mut self.unknown_keys) {
            if referenced.contains(&unknown.key) {
                continue;
            }
            let (severity, message) = match closest_known_key(&unknown.key) {
                Some(known) => (
                    Severity::Error,
                    format!("unknown key (did you mean '{known}'?)"),
                ),
                None if squash_separators(&unknown.key).starts_with(KEEP_PREFIX) => (
                    Severity::Error,
                    format!(
                        "unknown retention rule (the rules are: {}, {KEEP_MINIMUM})",
                        KEEP_RULE_KEYS.join(", ")
                    ),
                ),
                None => (
                    Severity::Warning,
                    format!(
                        "unknown key, ignored (known keys: {})",
                        KNOWN_KEYS.join(", ")
                    ),
                ),
            };
            let problem = ConfigProblem {
                file: self.file.to_path_buf(),
                line: unknown.line,
                section: Some(unknown.section),
                key: Some(unknown.key),
                message,
            };
            self.findings.add(severity, problem);
        }
    }

    fn continue_option(&mut self, number: usize, text: &str) {
        match self.continuation {
            Continuation::Entry(index) => {
                if let Some(section) = self.current_section_mut() {
                    let value = &mut section.entries[index].value;
                    value.push('\n');
                    value.push_str(text);
                }
            }
            Continuation::Discarded => {}
            Continuation::Nothing => {
                let message = format!(
                    "cannot parse indented line {} (an indented line continues the option \
                     directly above it; remove the indentation)",
                    quoted(text)
                );
                self.report(number, None, message);
            }
        }
    }

    fn current_section(&self) -> Option<&RawSection> {
        match self.target {
            Target::Defaults => Some(&self.ini.defaults),
            Target::Pool(index) => Some(&self.ini.pools[index]),
            Target::NoSectionYet | Target::BrokenHeader => None,
        }
    }

    fn current_section_mut(&mut self) -> Option<&mut RawSection> {
        match self.target {
            Target::Defaults => Some(&mut self.ini.defaults),
            Target::Pool(index) => Some(&mut self.ini.pools[index]),
            Target::NoSectionYet | Target::BrokenHeader => None,
        }
    }

    fn report(&mut self, line: usize, key: Option<&str>, message: String) {
        self.add(Severity::Error, line, key, message);
    }

    fn warn(&mut self, line: usize, key: Option<&str>, message: String) {
        self.add(Severity::Warning, line, key, message);
    }

    fn add(&mut self, severity: Severity, line: usize, key: Option<&str>, message: String) {
        let section = self.current_section().map(|section| section.name.clone());
        let problem = ConfigProblem {
            file: self.file.to_path_buf(),
            line,
            section,
            key: key.map(str::to_string),
            message,
        };
        self.findings.add(severity, problem);
    }
}

/// The lower-cased names of every well-formed `%(name)s` reference in any value of the file.
fn referenced_names(ini: &RawIni) -> HashSet<String> {
    let mut names = HashSet::new();
    let sections = std::iter::once(&ini.defaults).chain(&ini.pools);
    for entry in sections.flat_map(|section| &section.entries) {
        add_reference_names(&entry.value, &mut names);
    }
    names
}

/// Reads references the way the expansion does: the name runs to the first `)`, which must be
/// followed by `s`. Malformed ones are skipped here (the expansion reports them if the value is
/// used); skipping past their `)` keeps the scan linear however the text is made.
fn add_reference_names(text: &str, names: &mut HashSet<String>) {
    let mut rest = text;
    while let Some(start) = rest.find("%(") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            return;
        };
        if after[end + 1..].starts_with('s') {
            names.insert(after[..end].to_ascii_lowercase());
        }
        rest = &after[end + 1..];
    }
}

fn classify_line(line: &str) -> LineKind<'_> {
    if is_blank(line) || line.starts_with(['#', ';']) || is_rem_comment(line) {
        LineKind::Ignored
    } else if line.starts_with(is_python_space) {
        LineKind::Indented(python_trim(line))
    } else if let Some(after_bracket) = line.strip_prefix('[') {
        LineKind::Header(section_name(after_bracket))
    } else {
        classify_option(line)
    }
}

fn is_blank(line: &str) -> bool {
    python_trim(line).is_empty()
}

/// ConfigParser also treats a line whose first word is `rem` (DOS batch style) as a comment.
fn is_rem_comment(line: &str) -> bool {
    line.starts_with(['r', 'R'])
        && line
            .split(is_python_space)
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case("rem"))
}

fn section_name(after_bracket: &str) -> Result<&str, &'static str> {
    match after_bracket.find(']') {
        None => Err("section header has no closing ']'"),
        Some(0) => Err("section header has an empty name"),
        Some(end) => Ok(&after_bracket[..end]),
    }
}

fn classify_option(line: &str) -> LineKind<'_> {
    let Some(separator) = line.find([':', '=']) else {
        return LineKind::Unparsable(format!(
            "cannot parse line {} (expected '[pool]', 'key = value' or a comment)",
            quoted(line)
        ));
    };
    if separator == 0 {
        return LineKind::Unparsable(format!("option line has no key before '{}'", &line[..1]));
    }
    LineKind::Option {
        key: python_trim(&line[..separator]).to_ascii_lowercase(),
        value: option_value(&line[separator + 1..]),
    }
}

fn option_value(after_separator: &str) -> String {
    let value = python_trim(strip_inline_comment(after_separator));
    // ConfigParser's way of writing an explicitly empty value.
    if value == "\"\"" {
        String::new()
    } else {
        value.to_string()
    }
}

/// Only the first `;` of a value is considered, as in Python 2: it starts a comment when
/// whitespace precedes it, otherwise the whole rest stays part of the value.
fn strip_inline_comment(after_separator: &str) -> &str {
    match after_separator.find(';') {
        Some(position) if after_separator[..position].ends_with(is_python_space) => {
            &after_separator[..position]
        }
        _ => after_separator,
    }
}

/// Python 2's `str.isspace` for byte strings; Unicode spaces are not whitespace to it.
fn is_python_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn python_trim(text: &str) -> &str {
    text.trim_matches(is_python_space)
}

/// The known key that `key` most probably misspells: the same but for separators (`CheckMode`,
/// `window_size`), a couple of edits away (`chek mode`), or an abbreviation or extension of it
/// (`check`, `compression`). Compared without spaces, `_` and `-`.
fn closest_known_key(key: &str) -> Option<&'static str> {
    let squashed = squash_separators(key);
    let known_keys = KNOWN_KEYS
        .iter()
        .map(|&known| (known, squash_separators(known)));
    let nearest = known_keys
        .clone()
        .filter_map(|(known, known_squashed)| {
            within_edits(&squashed, &known_squashed, MAX_SUGGESTION_DISTANCE)
                .map(|distance| (distance, known))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, known)| known);
    nearest.or_else(|| {
        known_keys
            .filter(|(_, known_squashed)| abbreviates(&squashed, known_squashed))
            .map(|(known, _)| known)
            .next()
    })
}

fn squash_separators(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect()
}

/// The edit distance when it is at most `limit`. Lengths that differ by more cannot be that
/// close, which spares computing the distance for a key of a million characters.
fn within_edits(from: &str, to: &str, limit: usize) -> Option<usize> {
    let (from_chars, to_chars) = (from.chars().count(), to.chars().count());
    if from_chars.abs_diff(to_chars) > limit {
        return None;
    }
    Some(edit_distance(from, to)).filter(|&distance| distance <= limit)
}

/// Whether one of the two (squashed) keys starts the other and the shorter is long enough to be
/// meant, not a coincidence.
fn abbreviates(key: &str, known: &str) -> bool {
    let (shorter, longer) = if key.len() <= known.len() {
        (key, known)
    } else {
        (known, key)
    };
    shorter.chars().count() >= MIN_ABBREVIATION_CHARS && longer.starts_with(shorter)
}

/// Levenshtein distance in characters.
fn edit_distance(from: &str, to: &str) -> usize {
    let to: Vec<char> = to.chars().collect();
    let mut previous: Vec<usize> = (0..=to.len()).collect();
    for (i, from_char) in from.chars().enumerate() {
        let mut current = Vec::with_capacity(to.len() + 1);
        current.push(i + 1);
        for (j, &to_char) in to.iter().enumerate() {
            let substitute = previous[j] + usize::from(from_char != to_char);
            let delete = previous[j + 1] + 1;
            let insert = current[j] + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous[to.len()]
}

// ---------------------------------------------------------------------------------------------
// Pool sections: raw entries (plus inherited defaults) to a validated job.

/// Marks a field whose problem has already been recorded.
struct Reported;

/// A value with its references expanded, and where it was written.
struct Value<'a> {
    text: String,
    line: usize,
    section: &'a str,
}

struct PoolReader<'a, 'p> {
    file: &'a Path,
    pool: &'a RawSection,
    defaults: &'a RawSection,
    findings: &'p mut Findings,
}

impl<'a> PoolReader<'a, '_> {
    fn job(mut self) -> Result<PoolJob, Reported> {
        let images = self.required(IMAGES, parse_images);
        let destination = self.required(DESTINATION, parse_required_text);
        let mode = self.required(BACKUP_MODE, parse_backup_mode);
        let ceph_config = self.optional(CEPH_CONFIG, parse_optional_text);
        let ceph_user = self.optional(CEPH_USER, parse_optional_text);
        let ceph_keyring = self.optional(CEPH_KEYRING, parse_optional_text);
        let compress = self.optional(COMPRESS, parse_bool);
        let check_mode = self.optional(CHECK_MODE, parse_bool);
        let window = self.window(mode.as_ref().ok().copied());
        let ceph_timeout = self.optional(CEPH_TIMEOUT, parse_ceph_timeout);
        let keep = self.keep_rules(mode.as_ref().ok().copied());
        let keep_minimum = self.keep_minimum(mode.as_ref().ok().copied());
        if let Err(message) = crate::naming::check_name("pool", &self.pool.name) {
            let problem = ConfigProblem {
                file: self.file.to_path_buf(),
                line: self.pool.line,
                section: Some(self.pool.name.clone()),
                key: None,
                message,
            };
            self.findings.add(Severity::Error, problem);
        }

        // Every field is read before the first `?` so that all problems get recorded.
        let destination_text = destination?;
        Ok(PoolJob {
            pool: self.pool.name.clone(),
            line: self.pool.line,
            images: images?,
            destination: PathBuf::from(&destination_text),
            destination_text,
            ceph_config: PathBuf::from(ceph_config?.as_deref().unwrap_or(DEFAULT_CEPH_CONFIG)),
            ceph_user: ceph_user?,
            ceph_keyring: ceph_keyring?.map(PathBuf::from),
            ceph_timeout: ceph_timeout?.unwrap_or(DEFAULT_CEPH_TIMEOUT),
            mode: mode?,
            compress: compress?.unwrap_or(false),
            check_mode: check_mode?.unwrap_or(false),
            window: window?,
            keep: keep?,
            keep_minimum: keep_minimum?,
        })
    }

    /// The full-mode keep rules. In an incremental section they mean nothing (the window and
    /// `keep minimum` decide there), so a mistake in them is only a warning, and one written in
    /// the section itself is reported as ignored; one inherited from `[DEFAULT]` is meant for the
    /// full-mode sections and is silently not used.
    fn keep_rules(&mut self, mode: Option<BackupMode>) -> Result<KeepRules, Reported> {
        let severity = match mode {
            Some(BackupMode::Incremental) => Severity::Warning,
            Some(BackupMode::Full) | None => Severity::Error,
        };
        let [last, daily, weekly, monthly] =
            KEEP_RULE_KEYS.map(|key| self.optional_as(key, parse_count, severity));
        let rules = KeepRules {
            last: last?,
            daily: daily?,
            weekly: weekly?,
            monthly: monthly?,
        };
        match mode {
            Some(BackupMode::Incremental) => {
                for (key, value) in KEEP_RULE_KEYS.iter().zip(rules_in_key_order(&rules)) {
                    if value.is_some() {
                        self.ignored_in_this_mode(
                            key,
                            "only full mode uses keep rules; ignored in this incremental \
                             section, whose history the window and keep minimum decide",
                        );
                    }
                }
                Ok(KeepRules::default())
            }
            Some(BackupMode::Full) | None => self.keep_rules_keep_something(rules),
        }
    }

    /// Rules that are all 0 would remove every backup but the newest: far more likely a mistake
    /// than a wish, and not one to find out about after the fact.
    fn keep_rules_keep_something(&mut self, rules: KeepRules) -> Result<KeepRules, Reported> {
        if !rules.is_set() || rules.rules().any(|(_, count)| count > 0) {
            return Ok(rules);
        }
        let first = KEEP_RULE_KEYS.iter().find_map(|key| {
            self.written(key)
                .map(|(entry, section)| (*key, entry, section))
        });
        if let Some((key, entry, section)) = first {
            let message = "every keep rule is 0, which would remove every backup but the newest; \
                           set one to 1 or more, or remove the keep rules to keep every backup"
                .to_string();
            self.record(Severity::Error, entry.line, section, key, message);
        }
        Err(Reported)
    }

    /// `keep minimum`, which only incremental mode uses (0 means the same as 1: the point a run
    /// takes always remains).
    fn keep_minimum(&mut self, mode: Option<BackupMode>) -> Result<u32, Reported> {
        let severity = match mode {
            Some(BackupMode::Full) => Severity::Warning,
            Some(BackupMode::Incremental) | None => Severity::Error,
        };
        let minimum = self.optional_as(KEEP_MINIMUM, parse_count, severity)?;
        if mode == Some(BackupMode::Full) {
            if minimum.is_some() {
                self.ignored_in_this_mode(
                    KEEP_MINIMUM,
                    "only incremental mode uses keep minimum; ignored in this full-mode section \
                     (its keep rules are keep last, keep daily, keep weekly and keep monthly)",
                );
            }
            return Ok(DEFAULT_KEEP_MINIMUM);
        }
        Ok(minimum.map_or(DEFAULT_KEEP_MINIMUM, |n| n.max(1)))
    }

    /// Warns about `key` when it is written in this pool's own section; from `[DEFAULT]` it is
    /// meant for the sections whose mode uses it.
    fn ignored_in_this_mode(&mut self, key: &str, message: &str) {
        let Some(entry) = self.pool.get(key) else {
            return;
        };
        let (line, section) = (entry.line, self.pool.name.clone());
        self.record(Severity::Warning, line, &section, key, message.to_string());
    }

    /// `window size` and `window unit`, which only incremental mode uses. Full mode never looks at
    /// them, so a mistake there cannot change what a run does: it is a warning and the default
    /// stands in. When the mode itself is wrong or missing they stay errors, to be safe.
    fn window(&mut self, mode: Option<BackupMode>) -> Result<Window, Reported> {
        let severity = match mode {
            Some(BackupMode::Full) => Severity::Warning,
            Some(BackupMode::Incremental) | None => Severity::Error,
        };
        let size = self.optional_as(WINDOW_SIZE, parse_window_size, severity);
        let unit = self.optional_as(WINDOW_UNIT, parse_window_unit, severity);
        let window = Window {
            size: size?.unwrap_or(DEFAULT_WINDOW.size),
            unit: unit?.unwrap_or(DEFAULT_WINDOW.unit),
        };
        let Err(message) = window.check_length() else {
            return Ok(window);
        };
        // Only a size that was written can exceed the bound: the default one never does.
        let (line, section) = self.written(WINDOW_SIZE).map_or(
            (self.pool.line, self.pool.name.as_str()),
            |(entry, section)| (entry.line, section),
        );
        self.record(severity, line, section, WINDOW_SIZE, message);
        match severity {
            Severity::Error => Err(Reported),
            Severity::Warning => Ok(DEFAULT_WINDOW),
        }
    }

    fn required<T>(
        &mut self,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, Reported> {
        match self.optional(key, parse)? {
            Some(parsed) => Ok(parsed),
            None => {
                let (line, section) = (self.pool.line, self.pool.name.as_str());
                let message = "required key is missing".to_string();
                self.record(Severity::Error, line, section, key, message);
                Err(Reported)
            }
        }
    }

    /// `Ok(None)` when the key is set neither in the pool nor in `[DEFAULT]`.
    fn optional<T>(
        &mut self,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Reported> {
        self.optional_as(key, parse, Severity::Error)
    }

    /// Like [`Self::optional`], reporting a problem with `severity`; after a warning the key
    /// counts as not set.
    fn optional_as<T>(
        &mut self,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
        severity: Severity,
    ) -> Result<Option<T>, Reported> {
        let Some(value) = self.value(key, severity)? else {
            return Ok(None);
        };
        match parse(&value.text) {
            Ok(parsed) => Ok(Some(parsed)),
            Err(message) => {
                self.record(severity, value.line, value.section, key, message);
                unset_after(severity)
            }
        }
    }

    fn value(&mut self, key: &str, severity: Severity) -> Result<Option<Value<'a>>, Reported> {
        let Some((entry, section)) = self.written(key) else {
            return Ok(None);
        };
        match self.expand_references(&entry.value) {
            Ok(text) => Ok(Some(Value {
                text,
                line: entry.line,
                section,
            })),
            Err(message) => {
                self.record(severity, entry.line, section, key, message);
                unset_after(severity)
            }
        }
    }

    /// The entry for `key` and the name of the section it was written in.
    fn written(&self, key: &str) -> Option<(&'a RawEntry, &'a str)> {
        let (pool, defaults) = (self.pool, self.defaults);
        pool.get(key)
            .map(|entry| (entry, pool.name.as_str()))
            .or_else(|| {
                defaults
                    .get(key)
                    .map(|entry| (entry, defaults.name.as_str()))
            })
    }

    /// The raw text a `%(name)s` reference stands for, looked up as ConfigParser does: the
    /// section's own keys, then its name, then `[DEFAULT]`.
    fn referenced(&self, name: &str) -> Option<&'a str> {
        let (pool, defaults) = (self.pool, self.defaults);
        if let Some(entry) = pool.get(name) {
            Some(&entry.value)
        } else if name == SECTION_NAME_REFERENCE {
            Some(&pool.name)
        } else {
            defaults.get(name).map(|entry| entry.value.as_str())
        }
    }

    /// Bounded three ways: nesting depth (as ConfigParser), the number of references followed,
    /// and the size of the result, which alone keeps memory small whatever the file holds.
    fn expand_references(&self, raw: &str) -> Result<String, String> {
        if raw.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "value is longer than 64 KiB ({MAX_VALUE_BYTES} bytes)"
            ));
        }
        let mut expanded = String::with_capacity(raw.len());
        let mut budget = MAX_REFERENCE_EXPANSIONS;
        self.expand_into(raw, 0, &mut budget, &mut expanded)?;
        Ok(expanded)
    }

    fn expand_into(
        &self,
        text: &str,
        depth: usize,
        budget: &mut usize,
        out: &mut String,
    ) -> Result<(), String> {
        let mut rest = text;
        while let Some(start) = rest.find("%(") {
            push_bounded(out, &rest[..start])?;
            let reference = &rest[start..];
            let name_and_after = &reference[2..];
            let Some(name_end) = name_and_after
                .find(')')
                .filter(|&end| name_and_after[end + 1..].starts_with('s'))
            else {
                return Err(malformed_reference_message(reference));
            };
            let name = name_and_after[..name_end].to_ascii_lowercase();
            let Some(target) = self.referenced(&name) else {
                return Err(format!(
                    "'%({})s' refers to {}, which is not set in [{}] or [{DEFAULT_SECTION}]",
                    excerpt(&name, MAX_QUOTED_CHARS),
                    quoted(&name),
                    excerpt(&self.pool.name, MAX_QUOTED_CHARS)
                ));
            };
            if depth >= MAX_REFERENCE_DEPTH {
                return Err(format!(
                    "'%(...)s' references are nested more than {MAX_REFERENCE_DEPTH} deep \
                     (does a value refer to itself?)"
                ));
            }
            *budget = budget
                .checked_sub(1)
                .ok_or_else(|| "'%(...)s' references expand too many times".to_string())?;
            self.expand_into(target, depth + 1, budget, out)?;
            rest = &name_and_after[name_end + 2..];
        }
        push_bounded(out, rest)
    }

    fn record(
        &mut self,
        severity: Severity,
        line: usize,
        section: &str,
        key: &str,
        message: String,
    ) {
        let problem = ConfigProblem {
            file: self.file.to_path_buf(),
            line,
            section: Some(section.to_string()),
            key: Some(key.to_string()),
            message,
        };
        self.findings.add(severity, problem);
    }
}

/// What a field is after its problem was recorded: an error fails it; after a warning it counts
/// as not set, so that its default stands in.
fn unset_after<T>(severity: Severity) -> Result<Option<T>, Reported> {
    match severity {
        Severity::Error => Err(Reported),
        Severity::Warning => Ok(None),
    }
}

/// Appends to an expanding value unless that would make it longer than [`MAX_VALUE_BYTES`].
fn push_bounded(out: &mut String, text: &str) -> Result<(), String> {
    if out.len() + text.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "'%(...)s' references expand to more than 64 KiB ({MAX_VALUE_BYTES} bytes)"
        ));
    }
    out.push_str(text);
    Ok(())
}

fn malformed_reference_message(reference: &str) -> String {
    let excerpt: String = reference.chars().take(24).collect();
    format!(
        "malformed reference {} (expected '%(name)s')",
        quoted(&excerpt)
    )
}

// ---------------------------------------------------------------------------------------------
// Value parsers: each returns the problem's message on failure.

fn parse_images(text: &str) -> Result<ImageSelection, String> {
    let names: Vec<&str> = text.split(',').map(python_trim).collect();
    if names == [""] {
        return Err(
            "no images listed (separate names with commas, or use '*' for every image in the pool)"
                .to_string(),
        );
    }
    if let Some(name) = names.iter().find(|name| name.contains('\n')) {
        return Err(format!(
            "image name {} spans two lines (separate image names with commas)",
            quoted(name)
        ));
    }
    if names.contains(&"") {
        return Err(format!(
            "empty image name in {} (doubled or trailing comma?)",
            quoted(text)
        ));
    }
    if names.contains(&"*") {
        return if names.len() == 1 {
            Ok(ImageSelection::All)
        } else {
            Err(
                "'*' selects every image in the pool and cannot be combined with other names"
                    .to_string(),
            )
        };
    }
    let repeated = repeated_names(&names);
    if !repeated.is_empty() {
        return Err(repeated_names_message(&repeated));
    }
    for name in &names {
        crate::naming::check_name("image", name)?;
    }
    Ok(ImageSelection::Named(
        names.into_iter().map(str::to_string).collect(),
    ))
}

/// Names listed more than once, each reported once, in order of first repetition.
fn repeated_names<'n>(names: &[&'n str]) -> Vec<&'n str> {
    let mut repeated: Vec<&str> = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if names[..index].contains(name) && !repeated.contains(name) {
            repeated.push(name);
        }
    }
    repeated
}

fn repeated_names_message(repeated: &[&str]) -> String {
    let list: Vec<String> = repeated.iter().map(|name| quoted(name)).collect();
    match list.as_slice() {
        [one] => format!("image {one} is listed more than once"),
        many => format!("images {} are listed more than once", many.join(", ")),
    }
}

fn parse_required_text(text: &str) -> Result<String, String> {
    reject_line_breaks(text)?;
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    Ok(text.to_string())
}

fn parse_optional_text(text: &str) -> Result<String, String> {
    reject_line_breaks(text)?;
    if text.is_empty() {
        return Err("must not be empty (leave the key out to use the default)".to_string());
    }
    Ok(text.to_string())
}

fn parse_backup_mode(text: &str) -> Result<BackupMode, String> {
    reject_line_breaks(text)?;
    match text.to_ascii_lowercase().as_str() {
        "full" => Ok(BackupMode::Full),
        "incremental" => Ok(BackupMode::Incremental),
        _ => Err(format!(
            "invalid value {} (expected 'full' or 'incremental')",
            quoted(text)
        )),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    reject_line_breaks(text)?;
    let word = text.to_ascii_lowercase();
    if TRUE_WORDS.contains(&word.as_str()) {
        Ok(true)
    } else if FALSE_WORDS.contains(&word.as_str()) {
        Ok(false)
    } else {
        Err(format!(
            "invalid value {} (expected yes or no; also accepted: y/n, true/false, t/f, on/off, 1/0)",
            quoted(text)
        ))
    }
}

fn parse_window_size(text: &str) -> Result<u32, String> {
    let Some(digits) = unsigned_digits(text)? else {
        return Err(format!(
            "invalid value {} (expected a whole number, 0 or more)",
            quoted(text)
        ));
    };
    digits
        .parse()
        .map_err(|_| format!("value {} is too large (at most {})", quoted(text), u32::MAX))
}

/// A number of restore points or periods for the retention keys: a whole number, 0 or more.
fn parse_count(text: &str) -> Result<u32, String> {
    let Some(digits) = unsigned_digits(text)? else {
        return Err(format!(
            "invalid value {} (expected a whole number, 0 or more)",
            quoted(text)
        ));
    };
    digits
        .parse()
        .map_err(|_| format!("value {} is too large (at most {})", quoted(text), u32::MAX))
}

/// The rule counts in the order of [`KEEP_RULE_KEYS`].
fn rules_in_key_order(rules: &KeepRules) -> [Option<u32>; 4] {
    [rules.last, rules.daily, rules.weekly, rules.monthly]
}

/// Seconds, up to [`MAX_CEPH_TIMEOUT`]; 0 means no limit. Its own parser, not the window's:
/// the bound and the message are about seconds.
fn parse_ceph_timeout(text: &str) -> Result<u32, String> {
    let Some(digits) = unsigned_digits(text)? else {
        return Err(format!(
            "invalid value {} (expected a whole number of seconds, 0 for no limit)",
            quoted(text)
        ));
    };
    digits
        .parse::<u32>()
        .ok()
        .filter(|&seconds| seconds <= MAX_CEPH_TIMEOUT)
        .ok_or_else(|| {
            format!(
                "value {} is too large (at most {MAX_CEPH_TIMEOUT} seconds, one day; \
                 0 means no limit)",
                quoted(text)
            )
        })
}

/// The digits of a whole number written as Python's `int()` reads a non-negative one (an
/// optional `+`); `Ok(None)` when the text is not such a number.
fn unsigned_digits(text: &str) -> Result<Option<&str>, String> {
    reject_line_breaks(text)?;
    let trimmed = python_trim(text);
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let is_number = !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit());
    Ok(is_number.then_some(digits))
}

fn parse_window_unit(text: &str) -> Result<WindowUnit, String> {
    reject_line_breaks(text)?;
    let lower = text.to_ascii_lowercase();
    let singular = lower.strip_suffix('s').unwrap_or(&lower);
    match singular {
        "minute" => Ok(WindowUnit::Minutes),
        "hour" => Ok(WindowUnit::Hours),
        "day" => Ok(WindowUnit::Days),
        "week" => Ok(WindowUnit::Weeks),
        "month" => Ok(WindowUnit::Months),
        _ => Err(format!(
            "invalid value {} (expected minutes, hours, days, weeks or months)",
            quoted(text)
        )),
    }
}

/// An indented line after a key silently becomes part of its value; for single-line settings
/// that is always a mistake, and it could otherwise swallow a following key such as `check mode`.
fn reject_line_breaks(text: &str) -> Result<(), String> {
    if text.contains('\n') {
        Err(
            "value continues on an indented line (remove the indentation if that line \
             was meant as a separate key)"
                .to_string(),
        )
    } else {
        Ok(())
    }
}

/// `text` in quotes, shortened to [`MAX_QUOTED_CHARS`] and kept on one line.
fn quoted(text: &str) -> String {
    format!("'{}'", excerpt(text, MAX_QUOTED_CHARS))
}

/// At most `max_chars` characters of `text` (then `…`), on one line however odd the text is.
fn excerpt(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => printable(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", printable(&text[..cut]))),
    }
}

/// Keeps every problem on one line however odd the text it quotes.
fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const FILE: &str = "t.conf";

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        parse_str(text, Path::new(FILE))
    }

    fn problems(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected problems, parsed {config:?}"),
            Err(errors) => errors.to_string(),
        }
    }

    fn pools(text: &str) -> Vec<PoolJob> {
        match parse(text) {
            Ok(config) => config.pools,
            Err(errors) => panic!("unexpected problems:\n{errors}"),
        }
    }

    fn only_pool(text: &str) -> PoolJob {
        let mut all = pools(text);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    /// A valid pool section; lines 1-4, so an appended line is line 5.
    fn minimal(extra: &str) -> String {
        format!("[rbd]\nimages = a\ndestination directory = /b\nbackup mode = full\n{extra}")
    }

    /// Like [`minimal`], in incremental mode, where the window keys matter; also lines 1-4.
    fn minimal_incremental(extra: &str) -> String {
        format!("[rbd]\nimages = a\ndestination directory = /b\nbackup mode = incremental\n{extra}")
    }

    fn warnings(text: &str) -> String {
        match parse(text) {
            Ok(config) => lines(&config.warnings),
            Err(errors) => panic!("unexpected problems:\n{errors}"),
        }
    }

    fn lines(problems: &[ConfigProblem]) -> String {
        let shown: Vec<String> = problems.iter().map(ConfigProblem::to_string).collect();
        shown.join("\n")
    }

    fn job(pool: &str, line: usize, images: &[&str], destination: &str) -> PoolJob {
        PoolJob {
            pool: pool.to_string(),
            line,
            images: ImageSelection::Named(images.iter().map(|s| s.to_string()).collect()),
            destination: PathBuf::from(destination),
            destination_text: destination.to_string(),
            ceph_config: PathBuf::from(DEFAULT_CEPH_CONFIG),
            ceph_user: None,
            ceph_keyring: None,
            ceph_timeout: DEFAULT_CEPH_TIMEOUT,
            mode: BackupMode::Full,
            compress: false,
            check_mode: false,
            window: DEFAULT_WINDOW,
            keep: KeepRules::default(),
            keep_minimum: DEFAULT_KEEP_MINIMUM,
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn reads_the_original_sample_config() {
        let text = "[rbd]\nwindow size = 7\nwindow unit = days\n\
                    destination directory = /mnt/ceph_backups/\nimages = logs,conf\n\
                    compress = yes\nceph config = /etc/ceph/ceph.conf\n\
                    backup mode = incremental\ncheck mode = no\n";
        let config = parse(text).unwrap();
        assert_eq!(config.path, PathBuf::from(FILE));
        let expected = PoolJob {
            mode: BackupMode::Incremental,
            compress: true,
            ..job("rbd", 1, &["logs", "conf"], "/mnt/ceph_backups/")
        };
        assert_eq!(config.pools, vec![expected]);
    }

    #[test]
    fn reads_every_key() {
        let pool = only_pool(&minimal(
            "ceph config = /etc/ceph/other.conf\nceph user = backup\n\
             ceph keyring = /etc/ceph/ceph.client.backup.keyring\ncheck mode = YES\n\
             window size = +12\nwindow unit = Hour\n",
        ));
        let expected = PoolJob {
            ceph_config: PathBuf::from("/etc/ceph/other.conf"),
            ceph_user: Some("backup".to_string()),
            ceph_keyring: Some(PathBuf::from("/etc/ceph/ceph.client.backup.keyring")),
            ceph_timeout: DEFAULT_CEPH_TIMEOUT,
            check_mode: true,
            window: Window {
                size: 12,
                unit: WindowUnit::Hours,
            },
            ..job("rbd", 1, &["a"], "/b")
        };
        assert_eq!(pool, expected);
    }

    #[test]
    fn a_file_without_pools_is_valid() {
        for text in ["", "# nothing yet\n", "[DEFAULT]\ncompress = yes\n"] {
            assert_eq!(pools(text), vec![], "{text:?}");
        }
    }

    #[test]
    fn line_syntax() {
        // (what, option line as written, key it defines, value it holds)
        let cases = [
            ("equals", "images = a", "images", "a"),
            ("colon", "images: a", "images", "a"),
            ("no spaces", "images=a", "images", "a"),
            ("first separator wins", "images = a:b", "images", "a:b"),
            ("colon before equals", "images: a=b", "images", "a=b"),
            ("key lower-cased", "Window SIZE = 3", "window size", "3"),
            (
                "inner key spaces kept",
                "window  size = 3",
                "window  size",
                "3",
            ),
            ("surrounding spaces", "images   =   a b  ", "images", "a b"),
            ("inline ; comment", "images = a ; note", "images", "a"),
            ("inline ; after tab", "images = a\t;note", "images", "a"),
            ("; without space kept", "images = a;b", "images", "a;b"),
            (
                "only the first ; counts",
                "images = a;b ;c",
                "images",
                "a;b ;c",
            ),
            ("; right after separator", "images = ; note", "images", ""),
            (
                "# kept",
                "destination directory = /x  # c",
                "destination directory",
                "/x  # c",
            ),
            ("empty quotes", "images = \"\"", "images", ""),
            (
                "empty quotes then comment",
                "images = \"\" ; none",
                "images",
                "",
            ),
            ("other quotes kept", "images = \"a\"", "images", "\"a\""),
            ("empty value", "images =", "images", ""),
            ("percent kept", "images = 100%", "images", "100%"),
        ];
        for (what, line, key, value) in cases {
            assert_eq!(
                classify_line(line),
                LineKind::Option {
                    key: key.to_string(),
                    value: value.to_string()
                },
                "{what}"
            );
        }
    }

    #[test]
    fn ignored_lines() {
        let cases = [
            "",
            "   ",
            "\t",
            "# comment",
            "; comment",
            "#images = a",
            "rem images = a",
            "REM",
            "Rem\tsomething",
        ];
        for line in cases {
            assert_eq!(classify_line(line), LineKind::Ignored, "{line:?}");
        }
        // Only the first word counts, and only when the line starts with it.
        assert!(matches!(
            classify_line("remote = x"),
            LineKind::Option { .. }
        ));
        assert!(matches!(classify_line("rem=x"), LineKind::Option { .. }));
    }

    #[test]
    fn section_headers() {
        let cases = [
            ("[rbd]", Ok("rbd")),
            ("[rbd] ; trailing text ignored", Ok("rbd")),
            ("[Rbd]", Ok("Rbd")),
            ("[ my pool ]", Ok(" my pool ")),
            ("[a=b]", Ok("a=b")),
            ("[rbd]]", Ok("rbd")),
            ("[]", Err("section header has an empty name")),
            ("[rbd", Err("section header has no closing ']'")),
        ];
        for (line, expected) in cases {
            assert_eq!(classify_line(line), LineKind::Header(expected), "{line}");
        }
    }

    #[test]
    fn section_names_are_case_sensitive_and_default_is_exact() {
        let text = "[default]\nimages = a\ndestination directory = /b\nbackup mode = full\n\
                    [Rbd]\nimages = a\ndestination directory = /b\nbackup mode = full\n";
        let names: Vec<String> = pools(text).into_iter().map(|pool| pool.pool).collect();
        assert_eq!(names, ["default", "Rbd"]);
    }

    #[test]
    fn default_section_is_inherited_and_overridden() {
        let text = "[DEFAULT]\n\
                    destination directory = /backups\n\
                    backup mode = incremental\n\
                    compress = yes\n\
                    \n\
                    [rbd]\n\
                    images = a\n\
                    \n\
                    [ssd]\n\
                    images = b\n\
                    compress = no\n\
                    backup mode = full\n";
        let expected = vec![
            PoolJob {
                mode: BackupMode::Incremental,
                compress: true,
                ..job("rbd", 6, &["a"], "/backups")
            },
            job("ssd", 9, &["b"], "/backups"),
        ];
        assert_eq!(pools(text), expected);
    }

    #[test]
    fn default_section_may_come_after_the_pools() {
        let text = "[rbd]\nimages = a\n[DEFAULT]\ndestination directory = /b\nbackup mode = full\n";
        assert_eq!(only_pool(text), job("rbd", 1, &["a"], "/b"));
    }

    #[test]
    fn repeated_sections_merge_into_the_first() {
        let text = "[rbd]\nimages = a\ndestination directory = /first\nbackup mode = full\n\
                    [ssd]\nimages = s\ndestination directory = /s\nbackup mode = full\n\
                    [rbd]\ndestination directory = /second\ncompress = on\n";
        let expected = vec![
            PoolJob {
                compress: true,
                ..job("rbd", 1, &["a"], "/second")
            },
            job("ssd", 5, &["s"], "/s"),
        ];
        assert_eq!(pools(text), expected);
    }

    #[test]
    fn repeated_key_later_wins_and_problems_name_its_line() {
        assert_eq!(only_pool(&minimal("images = b\n")).images, named(&["b"]));
        assert_eq!(
            problems(&minimal("compress = yes\ncompress = sometimes\n")),
            "t.conf:6: [rbd] compress: invalid value 'sometimes' (expected yes or no; \
             also accepted: y/n, true/false, t/f, on/off, 1/0)"
        );
    }

    #[test]
    fn continuation_lines() {
        // (what, text, expected images)
        let cases = [
            (
                "list across lines",
                "images = a,\n  b,\n\tc\n",
                named(&["a", "b", "c"]),
            ),
            (
                "value starting on next line",
                "images =\n    a, b\n",
                named(&["a", "b"]),
            ),
            (
                "continuation of continuation",
                "images = a,\n b,\n  c\n",
                named(&["a", "b", "c"]),
            ),
        ];
        for (what, body, expected) in cases {
            let text = format!("[rbd]\n{body}destination directory = /b\nbackup mode = full\n");
            assert_eq!(only_pool(&text).images, expected, "{what}");
        }
        // ConfigParser strips inline comments from the first line only.
        let section = read("[rbd]\nimages = a,\n  b ; kept\n");
        assert_eq!(section.get("images").unwrap().value, "a,\nb ; kept");
    }

    #[test]
    fn indented_line_that_continues_nothing() {
        let cases = [
            ("after a header", "[rbd]\n  images = a\n", 2),
            ("after a blank line", "[rbd]\nimages = a\n\n  b\n", 4),
            ("after a comment", "[rbd]\nimages = a\n# c\n  b\n", 4),
        ];
        for (what, text, line) in cases {
            let shown = problems(text);
            let expected_start = format!("t.conf:{line}: [rbd] cannot parse indented line '");
            assert!(
                shown
                    .lines()
                    .any(|problem| problem.starts_with(&expected_start)),
                "{what}: {shown}"
            );
        }
        assert_eq!(
            problems(&minimal("\n   b\n")),
            "t.conf:6: [rbd] cannot parse indented line 'b' (an indented line continues the \
             option directly above it; remove the indentation)"
        );
    }

    #[test]
    fn an_indented_key_cannot_hide_inside_another_value() {
        let text = minimal("destination directory = /b\n  check mode = yes\n");
        assert_eq!(
            problems(&text),
            "t.conf:5: [rbd] destination directory: value continues on an indented line \
             (remove the indentation if that line was meant as a separate key)"
        );
        let text = minimal("images = a\n  check mode = yes\n");
        assert_eq!(
            problems(&text),
            "t.conf:5: [rbd] images: image name 'a\\ncheck mode = yes' spans two lines \
             (separate image names with commas)"
        );
    }

    #[test]
    fn references() {
        // (what, body after the header, expected destination)
        let cases = [
            (
                "same section",
                "base = /b\ndestination directory = %(base)s/x\n",
                "/b/x",
            ),
            (
                "name is lower-cased",
                "base = /b\ndestination directory = %(BASE)s\n",
                "/b",
            ),
            (
                "nested",
                "a = %(b)s/a\nb = /b\ndestination directory = %(a)s\n",
                "/b/a",
            ),
            (
                "section name",
                "destination directory = /b/%(__name__)s\n",
                "/b/rbd",
            ),
            (
                "bare percent kept",
                "destination directory = /b/100%/%d\n",
                "/b/100%/%d",
            ),
            (
                "percent around reference",
                "x = y\ndestination directory = %%(x)s%\n",
                "%y%",
            ),
        ];
        for (what, body, expected) in cases {
            let text = format!("[rbd]\nimages = a\nbackup mode = full\n{body}");
            let parsed = parse_ignoring_unknown_keys(&text);
            assert_eq!(parsed.destination_text, expected, "{what}");
        }
    }

    #[test]
    fn default_references_resolve_in_each_pool() {
        let text = "[DEFAULT]\ndestination directory = /backups/%(__name__)s/%(backup mode)s\n\
                    images = a\n\
                    [rbd]\nbackup mode = full\n[ssd]\nbackup mode = incremental\n";
        let destinations: Vec<String> = pools(text)
            .into_iter()
            .map(|pool| pool.destination_text)
            .collect();
        assert_eq!(
            destinations,
            ["/backups/rbd/full", "/backups/ssd/incremental"]
        );
    }

    #[test]
    fn reference_nesting_limit_matches_configparser() {
        // Ten levels of references resolve; an eleventh is too deep.
        let chain = |levels: usize| {
            let mut body = String::new();
            for level in 0..levels {
                body.push_str(&format!("v{level} = %(v{})s\n", level + 1));
            }
            body.push_str(&format!(
                "v{levels} = /end\ndestination directory = %(v0)s\n"
            ));
            format!("[rbd]\nimages = a\nbackup mode = full\n{body}")
        };
        assert_eq!(
            parse_ignoring_unknown_keys(&chain(9)).destination_text,
            "/end"
        );
        let problem = only_value_problem(&chain(10));
        assert!(problem.contains("nested more than 10 deep"), "{problem}");
    }

    #[test]
    fn reference_problems() {
        // (what, line 5, expected Display)
        let cases = [
            (
                "missing name",
                "destination directory = %(nowhere)s",
                "t.conf:5: [rbd] destination directory: '%(nowhere)s' refers to 'nowhere', \
                 which is not set in [rbd] or [DEFAULT]",
            ),
            (
                "refers to itself",
                "destination directory = /x/%(destination directory)s",
                "t.conf:5: [rbd] destination directory: '%(...)s' references are nested more \
                 than 10 deep (does a value refer to itself?)",
            ),
            (
                "unterminated",
                "destination directory = /x/%(base",
                "t.conf:5: [rbd] destination directory: malformed reference '%(base' \
                 (expected '%(name)s')",
            ),
            (
                "not an s conversion",
                "window size = %(images)d",
                "t.conf:5: [rbd] window size: malformed reference '%(images)d' \
                 (expected '%(name)s')",
            ),
        ];
        // Incremental, so that the window size's problem is an error, not a warning.
        for (what, line, expected) in cases {
            assert_eq!(problems(&minimal_incremental(line)), expected, "{what}");
        }
    }

    #[test]
    fn runaway_references_are_bounded() {
        let mut body = String::from("[rbd]\nimages = a\nbackup mode = full\n");
        // Shallow enough for the depth limit, but 10^8 expansions if nothing stopped it.
        for level in 0..8 {
            let next = format!("%(v{})s", level + 1);
            body.push_str(&format!("v{level} = {}\n", next.repeat(10)));
        }
        body.push_str("v8 =\ndestination directory = %(v0)s\n");
        let problem = only_value_problem(&body);
        assert!(problem.contains("expand too many times"), "{problem}");
    }

    #[test]
    fn value_problems() {
        // (what, line 5 of a valid section, expected Display)
        let cases = [
            (
                "empty destination",
                "destination directory =",
                "t.conf:5: [rbd] destination directory: must not be empty",
            ),
            (
                "empty quotes destination",
                "destination directory = \"\"",
                "t.conf:5: [rbd] destination directory: must not be empty",
            ),
            (
                "empty ceph config",
                "ceph config =",
                "t.conf:5: [rbd] ceph config: must not be empty (leave the key out to use the default)",
            ),
            (
                "empty ceph user",
                "ceph user = ",
                "t.conf:5: [rbd] ceph user: must not be empty (leave the key out to use the default)",
            ),
            (
                "empty ceph keyring",
                "ceph keyring = ; later",
                "t.conf:5: [rbd] ceph keyring: must not be empty (leave the key out to use the default)",
            ),
            (
                "backup mode",
                "backup mode = differential",
                "t.conf:5: [rbd] backup mode: invalid value 'differential' \
                 (expected 'full' or 'incremental')",
            ),
            (
                "compress",
                "compress = maybe",
                "t.conf:5: [rbd] compress: invalid value 'maybe' (expected yes or no; \
                 also accepted: y/n, true/false, t/f, on/off, 1/0)",
            ),
            (
                "check mode",
                "check mode = enabled",
                "t.conf:5: [rbd] check mode: invalid value 'enabled' (expected yes or no; \
                 also accepted: y/n, true/false, t/f, on/off, 1/0)",
            ),
            (
                "empty check mode",
                "check mode =",
                "t.conf:5: [rbd] check mode: invalid value '' (expected yes or no; \
                 also accepted: y/n, true/false, t/f, on/off, 1/0)",
            ),
            (
                "window size with unit",
                "window size = 7d",
                "t.conf:5: [rbd] window size: invalid value '7d' (expected a whole number, 0 or more)",
            ),
            (
                "fractional window size",
                "window size = 7.5",
                "t.conf:5: [rbd] window size: invalid value '7.5' (expected a whole number, 0 or more)",
            ),
            (
                "negative window size",
                "window size = -3",
                "t.conf:5: [rbd] window size: invalid value '-3' (expected a whole number, 0 or more)",
            ),
            (
                "empty window size",
                "window size =",
                "t.conf:5: [rbd] window size: invalid value '' (expected a whole number, 0 or more)",
            ),
            (
                "huge window size",
                "window size = 4294967296",
                "t.conf:5: [rbd] window size: value '4294967296' is too large (at most 4294967295)",
            ),
            (
                "window unit",
                "window unit = fortnights",
                "t.conf:5: [rbd] window unit: invalid value 'fortnights' \
                 (expected minutes, hours, days, weeks or months)",
            ),
            (
                "window unit years",
                "window unit = years",
                "t.conf:5: [rbd] window unit: invalid value 'years' \
                 (expected minutes, hours, days, weeks or months)",
            ),
        ];
        // Incremental, so that the window keys' problems are errors, not warnings.
        for (what, line, expected) in cases {
            assert_eq!(problems(&minimal_incremental(line)), expected, "{what}");
        }
    }

    #[test]
    fn accepted_booleans() {
        let cases = [
            ("y", true),
            ("YES", true),
            ("t", true),
            ("True", true),
            ("on", true),
            ("1", true),
            ("n", false),
            ("No", false),
            ("f", false),
            ("FALSE", false),
            ("off", false),
            ("0", false),
        ];
        for (word, expected) in cases {
            let pool = only_pool(&minimal(&format!(
                "check mode = {word}\ncompress = {word}\n"
            )));
            assert_eq!(
                (pool.check_mode, pool.compress),
                (expected, expected),
                "{word}"
            );
        }
    }

    #[test]
    fn accepted_windows() {
        let cases = [
            ("window size = 0", 0, WindowUnit::Days),
            ("window size = 007", 7, WindowUnit::Days),
            ("window size = +3", 3, WindowUnit::Days),
            ("window unit = minute", 7, WindowUnit::Minutes),
            ("window unit = MINUTES", 7, WindowUnit::Minutes),
            ("window unit = hour", 7, WindowUnit::Hours),
            ("window unit = Days", 7, WindowUnit::Days),
            ("window unit = week", 7, WindowUnit::Weeks),
            ("window unit = weeks", 7, WindowUnit::Weeks),
            ("window unit = month", 7, WindowUnit::Months),
            ("window unit = months", 7, WindowUnit::Months),
        ];
        for (line, size, unit) in cases {
            assert_eq!(
                only_pool(&minimal(line)).window,
                Window { size, unit },
                "{line}"
            );
        }
    }

    #[test]
    fn accepted_backup_modes() {
        let cases = [
            ("full", BackupMode::Full),
            ("FULL", BackupMode::Full),
            ("incremental", BackupMode::Incremental),
            ("Incremental", BackupMode::Incremental),
        ];
        for (word, expected) in cases {
            let pool = only_pool(&minimal(&format!("backup mode = {word}")));
            assert_eq!(pool.mode, expected, "{word}");
        }
    }

    fn named(names: &[&str]) -> ImageSelection {
        ImageSelection::Named(names.iter().map(|name| name.to_string()).collect())
    }

    #[test]
    fn image_lists() {
        let cases = [
            ("a", Ok(named(&["a"]))),
            ("logs,conf", Ok(named(&["logs", "conf"]))),
            ("logs, conf", Ok(named(&["logs", "conf"]))),
            ("  a  ,\tb ", Ok(named(&["a", "b"]))),
            ("my disk, other", Ok(named(&["my disk", "other"]))),
            ("B,b", Ok(named(&["B", "b"]))),
            ("*", Ok(ImageSelection::All)),
            (" * ", Ok(ImageSelection::All)),
            (
                "",
                Err("no images listed (separate names with commas, or use '*' for every image in the pool)"),
            ),
            ("a,,b", Err("empty image name in 'a,,b' (doubled or trailing comma?)")),
            ("a,", Err("empty image name in 'a,' (doubled or trailing comma?)")),
            (",a", Err("empty image name in ',a' (doubled or trailing comma?)")),
            (
                "*,a",
                Err("'*' selects every image in the pool and cannot be combined with other names"),
            ),
            (
                "*,*",
                Err("'*' selects every image in the pool and cannot be combined with other names"),
            ),
            ("a,b, a", Err("image 'a' is listed more than once")),
            (
                "a,b,a,b,a",
                Err("images 'a', 'b' are listed more than once"),
            ),
        ];
        for (value, expected) in cases {
            let expected = expected.map_err(str::to_string);
            assert_eq!(parse_images(value), expected, "{value:?}");
        }
    }

    #[test]
    fn image_problem_display() {
        assert_eq!(
            problems(&minimal("images = *, a")),
            "t.conf:5: [rbd] images: '*' selects every image in the pool and cannot be \
             combined with other names"
        );
        assert_eq!(
            problems(&minimal("images = a, b, a")),
            "t.conf:5: [rbd] images: image 'a' is listed more than once"
        );
    }

    #[test]
    fn hostile_pool_and_image_names_are_refused() {
        let cases = [
            (
                "[-rbd]\nimages = a\n",
                "t.conf:1: [-rbd] pool name \"-rbd\" starts with '-'",
            ),
            (
                "[..]\nimages = a\n",
                "t.conf:1: [..] pool name \"..\" would name a folder",
            ),
            (
                "[rbd]\nimages = ../../etc\n",
                "t.conf:2: [rbd] images: image name \"../../etc\" contains '/'",
            ),
            (
                "[rbd]\nimages = ok, --all\n",
                "t.conf:2: [rbd] images: image name \"--all\" starts with '-'",
            ),
        ];
        for (head, expected) in cases {
            let text = format!("{head}destination directory = /b\nbackup mode = full\n");
            let errors = parse_str(&text, Path::new("t.conf")).unwrap_err();
            let first = errors.errors[0].to_string();
            assert!(
                first.starts_with(expected),
                "{first:?} should start with {expected:?}"
            );
        }
        let ok =
            "[my pool]\nimages = disque été, a.b\ndestination directory = /b\nbackup mode = full\n";
        assert!(parse_str(ok, Path::new("t.conf")).is_ok());
    }

    #[test]
    fn ceph_timeout_defaults_and_parses() {
        let parse = |extra: &str| parse_str(&minimal(extra), Path::new("t.conf"));
        assert_eq!(
            parse("").unwrap().pools[0].ceph_timeout,
            DEFAULT_CEPH_TIMEOUT
        );
        assert_eq!(
            parse("ceph timeout = 15").unwrap().pools[0].ceph_timeout,
            15
        );
        assert!(parse("ceph timeout = 15s").is_err());
    }

    #[test]
    fn unknown_keys() {
        // (line 5, expected Display)
        let cases = [
            ("chek mode = yes", "t.conf:5: [rbd] chek mode: unknown key (did you mean 'check mode'?)"),
            ("window_size = 3", "t.conf:5: [rbd] window_size: unknown key (did you mean 'window size'?)"),
            ("compres = yes", "t.conf:5: [rbd] compres: unknown key (did you mean 'compress'?)"),
            ("CheckMode = yes", "t.conf:5: [rbd] checkmode: unknown key (did you mean 'check mode'?)"),
            (
                "destination-directory = /b",
                "t.conf:5: [rbd] destination-directory: unknown key (did you mean 'destination directory'?)",
            ),
            ("ceph_conf = /c", "t.conf:5: [rbd] ceph_conf: unknown key (did you mean 'ceph config'?)"),
        ];
        for (line, expected) in cases {
            assert_eq!(problems(&minimal(line)), expected, "{line}");
        }
        // Far from every known key: ignored with a warning, as the original ignored it.
        assert_eq!(
            warnings(&minimal("retention = 3")),
            "t.conf:5: [rbd] retention: unknown key, ignored (known keys: images, destination \
             directory, ceph config, ceph user, ceph keyring, backup mode, compress, check mode, \
             window size, window unit, ceph timeout, keep last, keep daily, keep weekly, keep \
             monthly, keep minimum)"
        );
    }

    #[test]
    fn unknown_keys_in_default_are_reported_once() {
        let text = "[DEFAULT]\nchek mode = yes\n[rbd]\nimages = a\ndestination directory = /b\n\
                    backup mode = full\n";
        assert_eq!(
            problems(text),
            "t.conf:2: [DEFAULT] chek mode: unknown key (did you mean 'check mode'?)"
        );
        assert_eq!(
            problems("[DEFAULT]\ncompres = yes\n"),
            "t.conf:2: [DEFAULT] compres: unknown key (did you mean 'compress'?)"
        );
    }

    #[test]
    fn faulty_default_value_is_reported_once_at_its_line() {
        let text = "[DEFAULT]\nwindow size = 7d\nimages = a\ndestination directory = /b\n\
                    backup mode = incremental\n[rbd]\n[ssd]\n";
        assert_eq!(
            problems(text),
            "t.conf:2: [DEFAULT] window size: invalid value '7d' (expected a whole number, 0 or more)"
        );
    }

    #[test]
    fn missing_required_keys_are_reported_at_the_header() {
        let cases = [
            (
                "[rbd]\n",
                "t.conf:1: [rbd] images: required key is missing\n\
                 t.conf:1: [rbd] destination directory: required key is missing\n\
                 t.conf:1: [rbd] backup mode: required key is missing",
            ),
            (
                "# pools\n\n[rbd]\nimages = a\ndestination directory = /b\n",
                "t.conf:3: [rbd] backup mode: required key is missing",
            ),
            (
                "[DEFAULT]\nimages = a\n[rbd]\nbackup mode = full\n",
                "t.conf:3: [rbd] destination directory: required key is missing",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(problems(text), expected, "{text}");
        }
    }

    #[test]
    fn structural_problems() {
        // (text, expected Display); lines 1-4 of `minimal` are a valid section.
        let cases = [
            (
                format!("images = a\n{}", minimal("")),
                "t.conf:1: images: option outside any section (add a '[pool]' header above it)",
            ),
            (
                minimal("just some words\n"),
                "t.conf:5: [rbd] cannot parse line 'just some words' (expected '[pool]', \
                 'key = value' or a comment)",
            ),
            (
                minimal("= a\n"),
                "t.conf:5: [rbd] option line has no key before '='",
            ),
            (
                minimal(": a\n"),
                "t.conf:5: [rbd] option line has no key before ':'",
            ),
            (
                "[]\nimages = a\n".to_string(),
                "t.conf:1: section header has an empty name",
            ),
            (
                "[rbd\nimages = a\n".to_string(),
                "t.conf:1: section header has no closing ']'",
            ),
            (
                format!("{}[]\nimages = ,\n", minimal("")),
                "t.conf:5: section header has an empty name",
            ),
            (
                "words before\n".to_string(),
                "t.conf:1: cannot parse line 'words before' (expected '[pool]', 'key = value' \
                 or a comment)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(problems(&text), expected, "{text}");
        }
    }

    #[test]
    fn continuation_of_an_option_outside_any_section_is_not_reported_again() {
        assert_eq!(
            problems("images = a,\n  b\n"),
            "t.conf:1: images: option outside any section (add a '[pool]' header above it)"
        );
    }

    #[test]
    fn every_problem_is_reported_in_line_order() {
        let text = "[rbd]\n\
                    window size = 7d\n\
                    images = a,,b\n\
                    chek mode = yes\n\
                    [ssd]\n\
                    images = *\n\
                    destination directory = /b\n\
                    backup mode = sometimes\n\
                    compress = perhaps\n";
        let expected = "t.conf:1: [rbd] destination directory: required key is missing\n\
                        t.conf:1: [rbd] backup mode: required key is missing\n\
                        t.conf:2: [rbd] window size: invalid value '7d' (expected a whole number, 0 or more)\n\
                        t.conf:3: [rbd] images: empty image name in 'a,,b' (doubled or trailing comma?)\n\
                        t.conf:4: [rbd] chek mode: unknown key (did you mean 'check mode'?)\n\
                        t.conf:8: [ssd] backup mode: invalid value 'sometimes' (expected 'full' or 'incremental')\n\
                        t.conf:9: [ssd] compress: invalid value 'perhaps' (expected yes or no; \
                        also accepted: y/n, true/false, t/f, on/off, 1/0)";
        assert_eq!(problems(text), expected);
        let errors = parse(text).unwrap_err();
        let lines: Vec<usize> = errors.errors.iter().map(|problem| problem.line).collect();
        assert_eq!(lines, [1, 1, 2, 3, 4, 8, 9]);
    }

    #[test]
    fn problem_display_forms() {
        let problem = |line, section: Option<&str>, key: Option<&str>| ConfigProblem {
            file: PathBuf::from("/etc/c.conf"),
            line,
            section: section.map(str::to_string),
            key: key.map(str::to_string),
            message: "bad\nthing".to_string(),
        };
        let cases = [
            (problem(0, None, None), "/etc/c.conf: bad\\nthing"),
            (problem(3, None, None), "/etc/c.conf:3: bad\\nthing"),
            (
                problem(3, None, Some("images")),
                "/etc/c.conf:3: images: bad\\nthing",
            ),
            (
                problem(3, Some("rbd"), None),
                "/etc/c.conf:3: [rbd] bad\\nthing",
            ),
            (
                problem(3, Some("rbd"), Some("images")),
                "/etc/c.conf:3: [rbd] images: bad\\nthing",
            ),
        ];
        for (problem, expected) in cases {
            assert_eq!(problem.to_string(), expected);
        }
    }

    #[test]
    fn edit_distances() {
        let cases = [
            ("", "", 0),
            ("abc", "", 3),
            ("", "abc", 3),
            ("chek mode", "check mode", 1),
            ("compres", "compress", 1),
            ("kitten", "sitting", 3),
            ("window_size", "window size", 1),
        ];
        for (from, to, expected) in cases {
            assert_eq!(edit_distance(from, to), expected, "{from} -> {to}");
        }
    }

    #[test]
    fn window_cutoffs() {
        let now = utc(2026, 3, 31, 12, 0, 0);
        let window = |size, unit| Window { size, unit };
        let cases = [
            (window(0, WindowUnit::Days), now),
            (window(30, WindowUnit::Minutes), utc(2026, 3, 31, 11, 30, 0)),
            (window(36, WindowUnit::Hours), utc(2026, 3, 30, 0, 0, 0)),
            (window(7, WindowUnit::Days), utc(2026, 3, 24, 12, 0, 0)),
            (window(2, WindowUnit::Weeks), utc(2026, 3, 17, 12, 0, 0)),
            (window(1, WindowUnit::Months), utc(2026, 2, 28, 12, 0, 0)),
            (window(13, WindowUnit::Months), utc(2025, 2, 28, 12, 0, 0)),
            (window(0, WindowUnit::Months), now),
            (
                window(u32::MAX, WindowUnit::Weeks),
                DateTime::<Utc>::MIN_UTC,
            ),
            (
                window(u32::MAX, WindowUnit::Months),
                DateTime::<Utc>::MIN_UTC,
            ),
        ];
        for (window, expected) in cases {
            assert_eq!(window.cutoff(now), expected, "{window}");
        }
    }

    #[test]
    fn exactly_window_old_is_inside_and_one_second_more_is_outside() {
        let now = utc(2026, 3, 31, 12, 0, 0);
        let second = TimeDelta::try_seconds(1).unwrap();
        let cases = [
            (
                Window {
                    size: 45,
                    unit: WindowUnit::Minutes,
                },
                utc(2026, 3, 31, 11, 15, 0),
            ),
            (
                Window {
                    size: 5,
                    unit: WindowUnit::Hours,
                },
                utc(2026, 3, 31, 7, 0, 0),
            ),
            (
                Window {
                    size: 7,
                    unit: WindowUnit::Days,
                },
                utc(2026, 3, 24, 12, 0, 0),
            ),
            (
                Window {
                    size: 1,
                    unit: WindowUnit::Weeks,
                },
                utc(2026, 3, 24, 12, 0, 0),
            ),
            (
                Window {
                    size: 1,
                    unit: WindowUnit::Months,
                },
                utc(2026, 2, 28, 12, 0, 0),
            ),
            (
                Window {
                    size: 0,
                    unit: WindowUnit::Days,
                },
                now,
            ),
        ];
        for (window, exactly_window_old) in cases {
            assert!(!window.is_outside(now, exactly_window_old), "{window}");
            assert!(
                window.is_outside(now, exactly_window_old - second),
                "{window}"
            );
            assert!(
                !window.is_outside(now, exactly_window_old + second),
                "{window}"
            );
        }
    }

    #[test]
    fn window_display() {
        let cases = [
            (7, WindowUnit::Days, "7 days"),
            (1, WindowUnit::Days, "1 day"),
            (0, WindowUnit::Days, "0 days"),
            (1, WindowUnit::Months, "1 month"),
            (2, WindowUnit::Months, "2 months"),
            (30, WindowUnit::Minutes, "30 minutes"),
            (1, WindowUnit::Hours, "1 hour"),
            (3, WindowUnit::Weeks, "3 weeks"),
        ];
        for (size, unit, expected) in cases {
            assert_eq!(Window { size, unit }.to_string(), expected);
        }
    }

    #[test]
    fn windows_crlf_and_byte_order_mark_are_tolerated() {
        let text =
            "\u{feff}[rbd]\r\nimages = a\r\ndestination directory = /b\r\nbackup mode = full\r\n";
        assert_eq!(only_pool(text), job("rbd", 1, &["a"], "/b"));
    }

    fn read(text: &str) -> RawSection {
        let (ini, findings) = IniReader::new(Path::new(FILE)).read(text, &[]);
        assert_eq!(findings.errors, vec![]);
        assert_eq!(findings.warnings, vec![]);
        ini.pools.into_iter().next().unwrap()
    }

    /// Looks at the reference expansion of the first pool alone, whatever the reader made of
    /// the file's keys.
    fn parse_ignoring_unknown_keys(text: &str) -> PoolJob {
        let (ini, _) = IniReader::new(Path::new(FILE)).read(text, &[]);
        let mut findings = Findings::default();
        let reader = PoolReader {
            file: Path::new(FILE),
            pool: &ini.pools[0],
            defaults: &ini.defaults,
            findings: &mut findings,
        };
        let job = reader.job();
        assert_eq!(findings.errors, vec![]);
        job.ok().unwrap()
    }

    fn only_value_problem(text: &str) -> String {
        let (ini, _) = IniReader::new(Path::new(FILE)).read(text, &[]);
        let mut findings = Findings::default();
        let reader = PoolReader {
            file: Path::new(FILE),
            pool: &ini.pools[0],
            defaults: &ini.defaults,
            findings: &mut findings,
        };
        assert!(reader.job().is_err());
        let problems = findings.errors;
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems[0].to_string()
    }

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("cephbackup-config-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn load_reads_the_file() {
        let file = TempFile::new("ok", minimal("").as_bytes());
        let config = load(&file.0).unwrap();
        assert_eq!(config.path, file.0);
        assert_eq!(config.pools, vec![job("rbd", 1, &["a"], "/b")]);
    }

    #[test]
    fn load_reports_unreadable_files_on_one_line() {
        let missing = Path::new("/nonexistent/cephbackup.conf");
        let cases = [
            (
                missing,
                "/nonexistent/cephbackup.conf: cannot read configuration file: \
                 No such file or directory (os error 2)",
            ),
            (
                Path::new("/"),
                "/: cannot read configuration file: Is a directory (os error 21)",
            ),
        ];
        for (path, expected) in cases {
            let errors = load(path).unwrap_err();
            assert_eq!(errors.errors.len(), 1);
            assert_eq!(errors.errors[0].line, 0);
            assert_eq!(errors.to_string(), expected);
        }
    }

    #[test]
    fn load_tolerates_latin1_comments_but_not_latin1_values() {
        let mut text = b"# Gr\xf6\xdfe der Sicherung\n".to_vec();
        text.extend_from_slice(minimal("").as_bytes());
        let file = TempFile::new("latin1-comment", &text);
        assert_eq!(load(&file.0).unwrap().pools.len(), 1);

        let mut text = minimal("").into_bytes();
        text.extend_from_slice(b"ceph user = b\xe4r\n");
        let file = TempFile::new("latin1-value", &text);
        let shown = load(&file.0).unwrap_err().to_string();
        let expected = format!("{}:5: [rbd] line is not valid UTF-8 text", file.0.display());
        assert_eq!(shown, expected);
    }

    // -----------------------------------------------------------------------------------------
    // Strict where a mistake is dangerous, lenient where the original was.

    #[test]
    fn unknown_keys_far_from_every_known_key_are_warnings() {
        let text = minimal("description = nightly backups of the VMs\nbackup root = /srv\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.pools, vec![job("rbd", 1, &["a"], "/b")]);
        let shown = lines(&config.warnings);
        let expected_starts = [
            "t.conf:5: [rbd] description: unknown key, ignored (known keys: images, ",
            "t.conf:6: [rbd] backup root: unknown key, ignored (known keys: images, ",
        ];
        assert_eq!(shown.lines().count(), 2, "{shown}");
        for (line, start) in shown.lines().zip(expected_starts) {
            assert!(
                line.starts_with(start),
                "{line:?} should start with {start:?}"
            );
        }
        // In [DEFAULT] too, reported once however many pools inherit it.
        let text = "[DEFAULT]\nnotes = see the wiki\n[rbd]\nimages = a\n\
                    destination directory = /b\nbackup mode = full\n[ssd]\nimages = b\n\
                    destination directory = /b\nbackup mode = full\n";
        let shown = warnings(text);
        assert_eq!(shown.lines().count(), 1, "{shown}");
        assert!(
            shown.starts_with("t.conf:2: [DEFAULT] notes: unknown key, ignored"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_keys_close_to_a_known_key_stay_errors_with_a_suggestion() {
        let cases = [
            ("chek mode = yes", "chek mode", "check mode"),
            ("windowsize = 3", "windowsize", "window size"),
            ("Window Sise = 3", "window sise", "window size"),
            ("check-mode = yes", "check-mode", "check mode"),
            ("check = yes", "check", "check mode"),
            ("compression = yes", "compression", "compress"),
            ("dest = /x", "dest", "destination directory"),
            ("image = a", "image", "images"),
            ("ceph timout = 5", "ceph timout", "ceph timeout"),
        ];
        for (line, key, known) in cases {
            let expected = format!("t.conf:5: [rbd] {key}: unknown key (did you mean '{known}'?)");
            assert_eq!(problems(&minimal(line)), expected, "{line}");
        }
        // Three edits from `backup mode` is too far: a helper key, as in the README's examples.
        assert!(parse(&minimal("backup root = /srv")).is_ok());
    }

    #[test]
    fn referenced_helper_keys_are_accepted_silently_and_expand() {
        // (what, text, expected destination of [rbd])
        let cases = [
            (
                "[DEFAULT] helper, lower-cased",
                "[DEFAULT]\nBackup Root = /srv\n[rbd]\nimages = a\nbackup mode = full\n\
                 destination directory = %(backup root)s/ceph\n",
                "/srv/ceph",
            ),
            (
                "reference written in capitals",
                "[DEFAULT]\nbackup root = /srv\n[rbd]\nimages = a\nbackup mode = full\n\
                 destination directory = %(BACKUP ROOT)s/ceph\n",
                "/srv/ceph",
            ),
            (
                "same-section helper, defined after its use",
                "[rbd]\nimages = a\nbackup mode = full\n\
                 destination directory = %(base)s/x\nbase = /data\n",
                "/data/x",
            ),
            (
                "the section's helper wins over [DEFAULT]'s",
                "[DEFAULT]\nbase = /srv\ndestination directory = %(base)s/%(__name__)s\n\
                 [rbd]\nimages = a\nbackup mode = full\nbase = /data\n",
                "/data/rbd",
            ),
            (
                "nested helpers",
                "[DEFAULT]\nroot = /srv\nbase = %(root)s/ceph\n[rbd]\nimages = a\n\
                 backup mode = full\ndestination directory = %(base)s\n",
                "/srv/ceph",
            ),
            (
                "a helper whose name looks like a known key's",
                "[DEFAULT]\nceph conf = /etc/ceph/c.conf\n[rbd]\nimages = a\n\
                 backup mode = full\ndestination directory = /b\nceph config = %(ceph conf)s\n",
                "/b",
            ),
        ];
        for (what, text, expected) in cases {
            let config = parse(text).unwrap_or_else(|errors| panic!("{what}: {errors}"));
            assert_eq!(config.warnings, vec![], "{what}");
            assert_eq!(config.pools[0].destination_text, expected, "{what}");
        }
        let config = parse(cases[5].1).unwrap();
        assert_eq!(
            config.pools[0].ceph_config,
            PathBuf::from("/etc/ceph/c.conf")
        );
    }

    #[test]
    fn repeated_sections_merge_with_a_warning_naming_both_lines() {
        let text = "[rbd]\nimages = a\ndestination directory = /first\nbackup mode = full\n\
                    [ssd]\nimages = s\ndestination directory = /s\nbackup mode = full\n\
                    [rbd]\ndestination directory = /second\ncompress = on\n\
                    [DEFAULT]\n[DEFAULT]\n[rbd]\n";
        let config = parse(text).unwrap();
        assert_eq!(config.pools[0].destination_text, "/second");
        assert!(config.pools[0].compress);
        assert_eq!(config.pools[0].line, 1);
        let merged = "section repeats the one at line 1; both are merged, and a key set in both \
                      takes its later value";
        assert_eq!(
            lines(&config.warnings),
            format!(
                "t.conf:9: [rbd] {merged}\n\
                 t.conf:13: [DEFAULT] section repeats the one at line 12; both are merged, and \
                 a key set in both takes its later value\n\
                 t.conf:14: [rbd] {merged}"
            )
        );
    }

    #[test]
    fn bad_window_in_a_full_mode_section_is_a_warning_and_the_section_runs() {
        let text = minimal("window size = 7d\nwindow unit = fortnights\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.pools, vec![job("rbd", 1, &["a"], "/b")]);
        assert_eq!(
            lines(&config.warnings),
            "t.conf:5: [rbd] window size: invalid value '7d' (expected a whole number, 0 or more)\n\
             t.conf:6: [rbd] window unit: invalid value 'fortnights' \
             (expected minutes, hours, days, weeks or months)"
        );
        let cases = [
            (
                "window size = %(nowhere)s",
                "t.conf:5: [rbd] window size: '%(nowhere)s' refers to 'nowhere', which is not \
                 set in [rbd] or [DEFAULT]",
            ),
            (
                "window size = 36526",
                "t.conf:5: [rbd] window size: window of 36526 days is longer than 100 years \
                 (at most 36525 days)",
            ),
            (
                "window size = 99999999999",
                "t.conf:5: [rbd] window size: value '99999999999' is too large (at most 4294967295)",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(warnings(&minimal(line)), expected, "{line}");
            assert_eq!(only_pool(&minimal(line)).window, DEFAULT_WINDOW, "{line}");
        }
    }

    #[test]
    fn bad_window_in_an_incremental_section_stays_an_error() {
        let text = minimal_incremental("window size = 7d\nwindow unit = fortnights\n");
        let errors = parse(&text).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "t.conf:5: [rbd] window size: invalid value '7d' (expected a whole number, 0 or more)\n\
             t.conf:6: [rbd] window unit: invalid value 'fortnights' \
             (expected minutes, hours, days, weeks or months)"
        );
        assert_eq!(errors.warnings, vec![]);
        // With no valid mode, nothing says the window is unused: still an error.
        let text = "[rbd]\nimages = a\ndestination directory = /b\nbackup mode = ful\n\
                    window size = 7d\n";
        let shown = problems(text);
        assert!(
            shown.contains("t.conf:5: [rbd] window size: invalid value '7d'"),
            "{shown}"
        );
        // One faulty [DEFAULT] window shared by a full and an incremental pool: one error line,
        // and no warning repeating it.
        let text = "[DEFAULT]\nwindow size = 7d\nimages = a\ndestination directory = /b\n\
                    [full]\nbackup mode = full\n[incr]\nbackup mode = incremental\n";
        let errors = parse(text).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "t.conf:2: [DEFAULT] window size: invalid value '7d' (expected a whole number, 0 or more)"
        );
        assert_eq!(errors.warnings, vec![]);
    }

    // -----------------------------------------------------------------------------------------
    // Retention keys.

    #[test]
    fn keep_rules_are_read_in_full_mode_and_absent_by_default() {
        let pool = only_pool(&minimal(
            "keep last = 2\nkeep daily = +7\nKeep Weekly = 0\nkeep monthly: 12\n",
        ));
        let expected = KeepRules {
            last: Some(2),
            daily: Some(7),
            weekly: Some(0),
            monthly: Some(12),
        };
        assert_eq!(pool.keep, expected);
        assert_eq!(pool.keep_minimum, DEFAULT_KEEP_MINIMUM);
        // Without the keys full mode keeps every backup, as the original did.
        let plain = only_pool(&minimal(""));
        assert_eq!(plain.keep, KeepRules::default());
        assert!(!plain.keep.is_set());
    }

    #[test]
    fn the_sample_config_parses_cleanly_and_keeps_a_week_through_outages() {
        let config = parse(include_str!("../ceph-backup.cfg")).unwrap();
        assert_eq!(config.warnings, vec![]);
        let pool = &config.pools[0];
        assert_eq!(pool.mode, BackupMode::Incremental);
        assert_eq!(pool.keep_minimum, 7);
        assert_eq!(pool.keep, KeepRules::default());
    }

    #[test]
    fn keep_minimum_is_read_in_incremental_mode() {
        for (extra, expected) in [
            ("", 1),
            ("keep minimum = 7", 7),
            ("keep minimum = 1", 1),
            ("keep minimum = 0", 1),
        ] {
            let pool = only_pool(&minimal_incremental(extra));
            assert_eq!(pool.keep_minimum, expected, "{extra:?}");
            assert_eq!(pool.keep, KeepRules::default(), "{extra:?}");
        }
    }

    #[test]
    fn bad_retention_values_are_one_line_errors() {
        let whole = "(expected a whole number, 0 or more)";
        let cases = [
            (minimal("keep last = -1"), format!("t.conf:5: [rbd] keep last: invalid value '-1' {whole}")),
            (minimal("keep daily = 7.5"), format!("t.conf:5: [rbd] keep daily: invalid value '7.5' {whole}")),
            (minimal("keep weekly = two"), format!("t.conf:5: [rbd] keep weekly: invalid value 'two' {whole}")),
            (minimal("keep monthly = "), format!("t.conf:5: [rbd] keep monthly: invalid value '' {whole}")),
            (
                minimal("keep monthly = 99999999999"),
                "t.conf:5: [rbd] keep monthly: value '99999999999' is too large (at most 4294967295)"
                    .to_string(),
            ),
            (
                minimal("keep last = 3\n  keep daily = 2"),
                "t.conf:5: [rbd] keep last: value continues on an indented line (remove the \
                 indentation if that line was meant as a separate key)"
                    .to_string(),
            ),
            (
                minimal("keep last = 0\nkeep daily = 0"),
                "t.conf:5: [rbd] keep last: every keep rule is 0, which would remove every backup \
                 but the newest; set one to 1 or more, or remove the keep rules to keep every \
                 backup"
                    .to_string(),
            ),
            (
                minimal_incremental("keep minimum = -2"),
                format!("t.conf:5: [rbd] keep minimum: invalid value '-2' {whole}"),
            ),
            (
                minimal_incremental("keep minimum = 1.5"),
                format!("t.conf:5: [rbd] keep minimum: invalid value '1.5' {whole}"),
            ),
            (
                "[DEFAULT]\nkeep minimum = x\n[rbd]\nimages = a\ndestination directory = /b\n\
                 backup mode = incremental\n"
                    .to_string(),
                format!("t.conf:2: [DEFAULT] keep minimum: invalid value 'x' {whole}"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(problems(&text), expected, "{text}");
        }
    }

    #[test]
    fn retention_keys_of_the_other_mode_are_warned_about_where_written() {
        let text = minimal_incremental("keep last = 3\nkeep daily = x\nkeep minimum = 4\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.pools[0].keep, KeepRules::default());
        assert_eq!(config.pools[0].keep_minimum, 4);
        assert_eq!(
            lines(&config.warnings),
            "t.conf:5: [rbd] keep last: only full mode uses keep rules; ignored in this \
             incremental section, whose history the window and keep minimum decide\n\
             t.conf:6: [rbd] keep daily: invalid value 'x' (expected a whole number, 0 or more)"
        );
        let text = minimal("keep minimum = 7\nkeep last = 5\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.pools[0].keep_minimum, DEFAULT_KEEP_MINIMUM);
        assert_eq!(config.pools[0].keep.last, Some(5));
        assert_eq!(
            lines(&config.warnings),
            "t.conf:5: [rbd] keep minimum: only incremental mode uses keep minimum; ignored in \
             this full-mode section (its keep rules are keep last, keep daily, keep weekly and \
             keep monthly)"
        );
        // From [DEFAULT], each key applies where its mode uses it, without a word elsewhere.
        let text = "[DEFAULT]\nkeep last = 4\nkeep minimum = 7\nimages = a\n\
                    destination directory = /b\n[full]\nbackup mode = full\n\
                    [incr]\nbackup mode = incremental\n";
        let config = parse(text).unwrap();
        assert_eq!(config.warnings, vec![]);
        assert_eq!(config.pools[0].keep.last, Some(4));
        assert_eq!(config.pools[0].keep_minimum, DEFAULT_KEEP_MINIMUM);
        assert_eq!(config.pools[1].keep, KeepRules::default());
        assert_eq!(config.pools[1].keep_minimum, 7);
    }

    #[test]
    fn misspelt_or_unknown_retention_keys_are_errors() {
        let cases = [
            ("keep_last = 2", "keep_last", "keep last"),
            ("KeepLast = 2", "keeplast", "keep last"),
            ("keep dayly = 7", "keep dayly", "keep daily"),
            ("keep weekely = 4", "keep weekely", "keep weekly"),
            ("keep-monthly = 4", "keep-monthly", "keep monthly"),
            ("keep minimun = 7", "keep minimun", "keep minimum"),
            ("keep min = 7", "keep min", "keep minimum"),
            ("keep = 3", "keep", "keep last"),
        ];
        for (line, key, known) in cases {
            let expected = format!("t.conf:5: [rbd] {key}: unknown key (did you mean '{known}'?)");
            assert_eq!(problems(&minimal(line)), expected, "{line}");
        }
        // A rule the tool does not have must not be ignored: the rules that are set would then
        // remove the backups it was meant to keep.
        for key in ["keep yearly", "keep hourly", "keep within"] {
            assert_eq!(
                problems(&minimal(&format!("{key} = 5"))),
                format!(
                    "t.conf:5: [rbd] {key}: unknown retention rule (the rules are: keep last, \
                     keep daily, keep weekly, keep monthly, keep minimum)"
                ),
            );
        }
    }

    #[test]
    fn window_length_is_bounded_to_a_century() {
        let cases = [
            ("minutes", 52_596_000),
            ("hours", 876_600),
            ("days", 36_525),
            ("weeks", 5_217),
            ("months", 1_200),
        ];
        let now = utc(2026, 3, 31, 12, 0, 0);
        for (unit, longest) in cases {
            let at_bound =
                minimal_incremental(&format!("window size = {longest}\nwindow unit = {unit}\n"));
            let window = only_pool(&at_bound).window;
            assert_eq!(window.size, longest, "{unit}");
            // Exact arithmetic, far from the date types' limits: no saturation, no panic.
            let cutoff = window.cutoff(now);
            assert!(cutoff > utc(1925, 1, 1, 0, 0, 0), "{unit}: {cutoff}");
            assert!(cutoff < utc(1927, 1, 1, 0, 0, 0), "{unit}: {cutoff}");

            let beyond = minimal_incremental(&format!(
                "window size = {}\nwindow unit = {unit}\n",
                longest + 1
            ));
            let expected = format!(
                "t.conf:5: [rbd] window size: window of {} {unit} is longer than 100 years \
                 (at most {longest} {unit})",
                longest + 1
            );
            assert_eq!(problems(&beyond), expected, "{unit}");
        }
    }

    #[test]
    fn ceph_timeout_is_bounded_to_a_day() {
        assert_eq!(only_pool(&minimal("ceph timeout = 0")).ceph_timeout, 0);
        assert_eq!(
            only_pool(&minimal("ceph timeout = 86400")).ceph_timeout,
            MAX_CEPH_TIMEOUT
        );
        let too_large = |value: &str| {
            format!(
                "t.conf:5: [rbd] ceph timeout: value '{value}' is too large (at most 86400 \
                 seconds, one day; 0 means no limit)"
            )
        };
        let cases = [
            ("86401", too_large("86401")),
            ("4294967296", too_large("4294967296")),
            (
                "99999999999999999999999",
                too_large("99999999999999999999999"),
            ),
            (
                "15s",
                "t.conf:5: [rbd] ceph timeout: invalid value '15s' (expected a whole number of \
                 seconds, 0 for no limit)"
                    .to_string(),
            ),
            (
                "-1",
                "t.conf:5: [rbd] ceph timeout: invalid value '-1' (expected a whole number of \
                 seconds, 0 for no limit)"
                    .to_string(),
            ),
        ];
        for (value, expected) in cases {
            let text = minimal(&format!("ceph timeout = {value}"));
            assert_eq!(problems(&text), expected, "{value}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Bounds: the file, the values, the report.

    /// Runs `f` on another thread and fails, rather than hangs, if it takes longer than 10 s.
    fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(f()));
        receiver
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("did not finish within 10 s")
    }

    fn load_error(path: &Path) -> String {
        let path = path.to_path_buf();
        let errors = within_seconds(move || load(&path)).unwrap_err();
        assert_eq!(errors.errors.len(), 1, "{errors}");
        errors.to_string()
    }

    #[test]
    fn load_refuses_a_fifo_or_a_device_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("cephbackup.conf");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // A FIFO nobody writes to would block a plain open() forever.
        assert_eq!(
            load_error(&fifo),
            format!(
                "{}: cannot read configuration file: is a FIFO, not a regular file; \
                 it is not read",
                fifo.display()
            )
        );
        // A symlink to it is followed, and refused for what it leads to.
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(load_error(&link).ends_with("is a FIFO, not a regular file; it is not read"));
        assert_eq!(
            load_error(Path::new("/dev/zero")),
            "/dev/zero: cannot read configuration file: is a device, not a regular file; \
             it is not read"
        );
    }

    #[test]
    fn load_follows_a_symlink_to_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let managed = dir.path().join("managed.conf");
        std::fs::write(&managed, minimal("")).unwrap();
        let link = dir.path().join("cephbackup.conf");
        std::os::unix::fs::symlink(&managed, &link).unwrap();
        let config = load(&link).unwrap();
        assert_eq!(config.path, link);
        assert_eq!(config.pools, vec![job("rbd", 1, &["a"], "/b")]);
    }

    #[test]
    fn load_refuses_a_file_over_the_size_limit() {
        let limit = usize::try_from(MAX_CONFIG_BYTES).unwrap();
        let mut text = minimal("").into_bytes();
        let padding = limit - text.len();
        text.extend(std::iter::repeat_n(b'#', padding - 1));
        text.push(b'\n');
        assert_eq!(text.len(), limit);
        let file = TempFile::new("at-limit", &text);
        assert_eq!(load(&file.0).unwrap().pools.len(), 1);

        text.push(b'\n');
        let file = TempFile::new("over-limit", &text);
        let expected = format!(
            "{}: configuration file is larger than 1 MiB (1048576 bytes), far more than any \
             configuration needs; is it the right file?",
            file.0.display()
        );
        assert_eq!(load_error(&file.0), expected);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(parse_str(&text, &file.0).unwrap_err().to_string(), expected);
    }

    /// Ten references to a value of ten references to … : within the depth and count limits,
    /// but gigabytes once expanded.
    fn expansion_bomb() -> String {
        let mut text = String::from("[rbd]\nimages = a\nbackup mode = full\n");
        text.push_str(&format!("v9 = {}\n", "x".repeat(1000)));
        for level in (0..9).rev() {
            let next = format!("%(v{})s", level + 1);
            text.push_str(&format!("v{level} = {}\n", next.repeat(10)));
        }
        text.push_str("destination directory = %(v0)s\n");
        text
    }

    #[test]
    fn an_expansion_bomb_is_refused_by_size() {
        let text = expansion_bomb();
        assert!(text.len() < 2000);
        assert_eq!(
            problems(&text),
            "t.conf:14: [rbd] destination directory: '%(...)s' references expand to more than \
             64 KiB (65536 bytes)"
        );
        // Just under the bound is fine.
        let text = format!(
            "[rbd]\nimages = a\nbackup mode = full\nhalf = /{}\n\
             destination directory = %(half)s%(half)s\n",
            "x".repeat(MAX_VALUE_BYTES / 2 - 1)
        );
        assert_eq!(only_pool(&text).destination_text.len(), MAX_VALUE_BYTES);
    }

    #[test]
    fn adversarial_inputs_give_one_line_errors() {
        let deep = {
            let mut text = String::from("[rbd]\nimages = a\nbackup mode = full\n");
            for level in 0..1000 {
                text.push_str(&format!("v{level} = %(v{})s\n", level + 1));
            }
            text.push_str("v1000 = /end\ndestination directory = %(v0)s\n");
            text
        };
        // (what, text, the start of the one problem expected)
        let cases = [
            (
                "huge expansion",
                expansion_bomb(),
                "t.conf:14: [rbd] destination directory: '%(...)s' references expand to more",
            ),
            (
                "deep references",
                deep,
                "t.conf:1005: [rbd] destination directory: '%(...)s' references are nested",
            ),
            (
                "very long value",
                minimal_incremental(&format!("ceph config = /{}\n", "x".repeat(500_000))),
                "t.conf:5: [rbd] ceph config: value is longer than 64 KiB (65536 bytes)",
            ),
            (
                "very long line that is no option",
                minimal(&format!("{}\n", "x".repeat(500_000))),
                "t.conf:5: [rbd] cannot parse line 'xxxxxxxx",
            ),
            (
                "very long malformed reference",
                minimal(&format!("ceph user = {}\n", "%(".repeat(30_000))),
                "t.conf:5: [rbd] ceph user: malformed reference '%(%(%(",
            ),
            (
                // Unknown keys are only warned about, and their values only scanned for
                // references: that scan must stay linear however the text is made.
                "very long unknown key and value, with a bad value elsewhere",
                minimal(&format!(
                    "{} = 1\nnotes = {})x\ncompress = maybe\n",
                    "k".repeat(300_000),
                    "%(".repeat(200_000)
                )),
                "t.conf:7: [rbd] compress: invalid value 'maybe'",
            ),
            (
                "NUL bytes in a value",
                minimal("ceph user = a\0b\n"),
                "t.conf:5: [rbd] line contains a NUL byte (is the file damaged?)",
            ),
            (
                "a file of NUL bytes",
                "\0".repeat(100_000),
                "t.conf:1: line contains a NUL byte (is the file damaged?)",
            ),
            (
                "a NUL byte in a header",
                format!("{}[ss\0d]\ncompress = yes\n", minimal("")),
                "t.conf:5: line contains a NUL byte (is the file damaged?)",
            ),
        ];
        for (what, text, expected_start) in cases {
            let errors = within_seconds(move || parse(&text)).unwrap_err();
            let shown = errors.to_string();
            assert_eq!(shown.lines().count(), 1, "{what}: {shown:.300}");
            assert!(shown.starts_with(expected_start), "{what}: {shown:.300}");
            assert!(shown.len() < 600, "{what}: {} characters", shown.len());
        }

        // Invalid UTF-8, through the file.
        let mut text = minimal("").into_bytes();
        text.extend_from_slice(b"ceph user = \xff\xfe\x00\xc3\n");
        let file = TempFile::new("binary-value", &text);
        assert_eq!(
            load_error(&file.0),
            format!(
                "{}:5: [rbd] line contains a NUL byte (is the file damaged?)",
                file.0.display()
            )
        );
        let mut text = minimal("").into_bytes();
        text.extend_from_slice(b"ceph user = \xff\xfe\xc3\n");
        let file = TempFile::new("undecodable-value", &text);
        assert_eq!(
            load_error(&file.0),
            format!("{}:5: [rbd] line is not valid UTF-8 text", file.0.display())
        );
    }

    #[test]
    fn problem_floods_are_capped_and_stay_fast() {
        let mut many_pools = String::new();
        for index in 0..50_000 {
            many_pools.push_str(&format!("[p{index}]\n"));
        }
        let binary: Vec<u8> = b"\xff\n".repeat(200_000);
        let file = TempFile::new("binary", &binary);
        let path = file.0.clone();
        let from_file = within_seconds(move || load(&path)).unwrap_err();
        let from_text = within_seconds(move || parse(&many_pools)).unwrap_err();
        for (errors, hidden) in [(from_file, 400_000 - 100), (from_text, 150_000 - 100)] {
            let shown = errors.to_string();
            assert_eq!(shown.lines().count(), MAX_REPORTED_PROBLEMS + 1);
            let last = shown.lines().last().unwrap();
            assert!(
                last.ends_with(&format!(": {hidden} more like these not shown")),
                "{last}"
            );
        }
        let text = minimal("") + &(0..300).map(|i| format!("n{i} = x\n")).collect::<String>();
        let config = parse(&text).unwrap();
        assert_eq!(config.warnings.len(), MAX_REPORTED_PROBLEMS + 1);
    }
}

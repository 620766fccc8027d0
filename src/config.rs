//! The configuration file: its INI dialect, the keys of a pool section, and every problem in it.
//!
//! The format comes from the original Python tool, which read it with Python 2's `ConfigParser`.
//! The reader here follows that dialect (comment rules, `[DEFAULT]`, merged repeated sections,
//! continuation lines, `%(name)s` references) so that an existing file means what it meant before.
//! Where the original accepted mistakes silently or only failed halfway through a run (unknown
//! keys, untrimmed image names, values checked lazily), this module reports them up front: every
//! problem in the file at once, one line each, naming the file, line, section and key.
//!
//! [`parse_str`] is pure; [`load`] is the only function here that touches the disk.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Months, TimeDelta, Utc};

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
const KNOWN_KEYS: [&str; 11] = [
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
];
/// Seconds a Ceph operation may take before `rbd` gives up, unless `ceph timeout` says otherwise.
pub const DEFAULT_CEPH_TIMEOUT: u32 = 300;

/// Python's `strtobool` words, which the original used for `compress` and `check mode`.
const TRUE_WORDS: [&str; 6] = ["y", "yes", "t", "true", "on", "1"];
const FALSE_WORDS: [&str; 6] = ["n", "no", "f", "false", "off", "0"];

/// Edits within which an unknown key is probably a misspelling of a known one.
const MAX_SUGGESTION_DISTANCE: usize = 3;

/// The whole configuration file: one job per pool section, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub pools: Vec<PoolJob>,
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
}

impl WindowUnit {
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
            write!(f, "[{}] ", printable(section))?;
        }
        if let Some(key) = &self.key {
            write!(f, "{}: ", printable(key))?;
        }
        f.write_str(&printable(&self.message))
    }
}

impl std::error::Error for ConfigProblem {}

/// Every problem found in the file, in line order; displays one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    /// Sorts by line (keeping discovery order within a line) and drops exact repeats, which
    /// arise when several pools inherit the same faulty `[DEFAULT]` value.
    fn in_line_order(mut problems: Vec<ConfigProblem>) -> Self {
        problems.sort_by_key(|problem| problem.line);
        let mut distinct: Vec<ConfigProblem> = Vec::with_capacity(problems.len());
        for problem in problems {
            if !distinct.contains(&problem) {
                distinct.push(problem);
            }
        }
        ConfigErrors(distinct)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
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
    parse_text(text, path, &[])
}

/// Reads and parses the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = std::fs::read(path).map_err(|error| unreadable_file(path, &error))?;
    match String::from_utf8(bytes) {
        Ok(text) => parse_str(&text, path),
        Err(not_utf8) => {
            // Python 2 read bytes, so old files may carry Latin-1 comments; those stay harmless,
            // and only lines that matter are reported.
            let bytes = not_utf8.as_bytes();
            let text = String::from_utf8_lossy(bytes);
            parse_text(&text, path, &undecodable_lines(bytes))
        }
    }
}

fn unreadable_file(path: &Path, error: &std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigProblem {
        file: path.to_path_buf(),
        line: 0,
        section: None,
        key: None,
        message: format!("cannot read configuration file: {error}"),
    }])
}

fn undecodable_lines(bytes: &[u8]) -> Vec<usize> {
    bytes
        .split(|&byte| byte == b'\n')
        .enumerate()
        .filter(|(_, line)| std::str::from_utf8(line).is_err())
        .map(|(index, _)| index + 1)
        .collect()
}

fn parse_text(text: &str, path: &Path, undecodable: &[usize]) -> Result<Config, ConfigErrors> {
    let (ini, mut problems) = IniReader::new(path).read(text, undecodable);
    let pools: Vec<PoolJob> = ini
        .pools
        .iter()
        .filter_map(|pool| {
            let reader = PoolReader {
                file: path,
                pool,
                defaults: &ini.defaults,
                problems: &mut problems,
            };
            reader.job().ok()
        })
        .collect();
    if problems.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            pools,
        })
    } else {
        Err(ConfigErrors::in_line_order(problems))
    }
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
    line: usize,
    entries: Vec<RawEntry>,
}

impl RawSection {
    fn new(name: &str, line: usize) -> Self {
        RawSection {
            name: name.to_string(),
            line,
            entries: Vec::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&RawEntry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    /// Later assignments replace earlier ones, as in ConfigParser. Returns the entry's index so
    /// continuation lines can extend it.
    fn set(&mut self, key: String, value: String, line: usize) -> usize {
        match self.entries.iter().position(|entry| entry.key == key) {
            Some(index) => {
                self.entries[index] = RawEntry { key, value, line };
                index
            }
            None => {
                self.entries.push(RawEntry { key, value, line });
                self.entries.len() - 1
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

struct IniReader<'a> {
    file: &'a Path,
    ini: RawIni,
    target: Target,
    continuation: Continuation,
    problems: Vec<ConfigProblem>,
}

impl<'a> IniReader<'a> {
    fn new(file: &'a Path) -> Self {
        IniReader {
            file,
            ini: RawIni {
                defaults: RawSection::new(DEFAULT_SECTION, 0),
                pools: Vec::new(),
            },
            target: Target::NoSectionYet,
            continuation: Continuation::Nothing,
            problems: Vec::new(),
        }
    }

    fn read(mut self, text: &str, undecodable: &[usize]) -> (RawIni, Vec<ConfigProblem>) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let kind = classify_line(line);
            if kind != LineKind::Ignored && undecodable.contains(&number) {
                self.report(number, None, "line is not valid UTF-8 text".to_string());
            }
            self.apply(number, kind);
        }
        (self.ini, self.problems)
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

    fn open_section(&mut self, name: &str, line: usize) {
        self.target = if name == DEFAULT_SECTION {
            Target::Defaults
        } else if let Some(index) = self.ini.pools.iter().position(|pool| pool.name == name) {
            Target::Pool(index)
        } else {
            self.ini.pools.push(RawSection::new(name, line));
            Target::Pool(self.ini.pools.len() - 1)
        };
        self.continuation = Continuation::Nothing;
    }

    fn add_option(&mut self, number: usize, key: String, value: String) {
        if matches!(self.target, Target::NoSectionYet) {
            let message = "option outside any section (add a '[pool]' header above it)";
            self.report(number, Some(&key), message.to_string());
        }
        if !KNOWN_KEYS.contains(&key.as_str()) && self.current_section().is_some() {
            self.report(number, Some(&key), unknown_key_message(&key));
        }
        self.continuation = match self.current_section_mut() {
            Some(section) => Continuation::Entry(section.set(key, value, number)),
            None => Continuation::Discarded,
        };
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
        let section = self.current_section().map(|section| section.name.clone());
        self.problems.push(ConfigProblem {
            file: self.file.to_path_buf(),
            line,
            section,
            key: key.map(str::to_string),
            message,
        });
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

fn unknown_key_message(key: &str) -> String {
    match closest_known_key(key) {
        Some(known) => format!("unknown key (did you mean '{known}'?)"),
        None => format!("unknown key (known keys: {})", KNOWN_KEYS.join(", ")),
    }
}

fn closest_known_key(key: &str) -> Option<&'static str> {
    let squashed = squash_separators(key);
    if let Some(&same) = KNOWN_KEYS
        .iter()
        .find(|known| squash_separators(known) == squashed)
    {
        return Some(same);
    }
    KNOWN_KEYS
        .iter()
        .map(|&known| (edit_distance(key, known), known))
        .filter(|&(distance, _)| distance <= MAX_SUGGESTION_DISTANCE)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, known)| known)
}

fn squash_separators(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect()
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
    problems: &'p mut Vec<ConfigProblem>,
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
        let window_size = self.optional(WINDOW_SIZE, parse_window_size);
        let window_unit = self.optional(WINDOW_UNIT, parse_window_unit);
        let ceph_timeout = self.optional(CEPH_TIMEOUT, parse_window_size);
        if let Err(message) = crate::naming::check_name("pool", &self.pool.name) {
            self.problems.push(ConfigProblem {
                file: self.file.to_path_buf(),
                line: self.pool.line,
                section: Some(self.pool.name.clone()),
                key: None,
                message,
            });
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
            window: Window {
                size: window_size?.unwrap_or(DEFAULT_WINDOW.size),
                unit: window_unit?.unwrap_or(DEFAULT_WINDOW.unit),
            },
        })
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
                self.report(line, section, key, "required key is missing".to_string());
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
        let Some(value) = self.value(key)? else {
            return Ok(None);
        };
        match parse(&value.text) {
            Ok(parsed) => Ok(Some(parsed)),
            Err(message) => {
                self.report(value.line, value.section, key, message);
                Err(Reported)
            }
        }
    }

    fn value(&mut self, key: &str) -> Result<Option<Value<'a>>, Reported> {
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
                self.report(entry.line, section, key, message);
                Err(Reported)
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

    /// The raw text a `%(name)s` reference stands for, looked up as ConfigParser does.
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

    fn expand_references(&self, raw: &str) -> Result<String, String> {
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
            out.push_str(&rest[..start]);
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
                    "'%({name})s' refers to '{name}', which is not set in [{}] or [{DEFAULT_SECTION}]",
                    self.pool.name
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
        out.push_str(rest);
        Ok(())
    }

    fn report(&mut self, line: usize, section: &str, key: &str, message: String) {
        self.problems.push(ConfigProblem {
            file: self.file.to_path_buf(),
            line,
            section: Some(section.to_string()),
            key: Some(key.to_string()),
            message,
        });
    }
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
    reject_line_breaks(text)?;
    let trimmed = python_trim(text);
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!(
            "invalid value {} (expected a whole number, 0 or more)",
            quoted(text)
        ));
    }
    digits
        .parse()
        .map_err(|_| format!("value {} is too large (at most {})", quoted(text), u32::MAX))
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

fn quoted(text: &str) -> String {
    format!("'{}'", printable(text))
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
        for (what, line, expected) in cases {
            assert_eq!(problems(&minimal(line)), expected, "{what}");
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
        for (what, line, expected) in cases {
            assert_eq!(problems(&minimal(line)), expected, "{what}");
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
            let first = errors.0[0].to_string();
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
            (
                "retention = 3",
                "t.conf:5: [rbd] retention: unknown key (known keys: images, destination directory, \
                 ceph config, ceph user, ceph keyring, backup mode, compress, check mode, \
                 window size, window unit, ceph timeout)",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(problems(&minimal(line)), expected, "{line}");
        }
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
                    backup mode = full\n[rbd]\n[ssd]\n";
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
        let lines: Vec<usize> = errors.0.iter().map(|problem| problem.line).collect();
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
        let (ini, problems) = IniReader::new(Path::new(FILE)).read(text, &[]);
        assert_eq!(problems, vec![]);
        ini.pools.into_iter().next().unwrap()
    }

    /// Helper keys used only as reference targets are unknown keys; drop those problems to
    /// look at the reference expansion alone.
    fn parse_ignoring_unknown_keys(text: &str) -> PoolJob {
        let (ini, _) = IniReader::new(Path::new(FILE)).read(text, &[]);
        let mut problems = Vec::new();
        let reader = PoolReader {
            file: Path::new(FILE),
            pool: &ini.pools[0],
            defaults: &ini.defaults,
            problems: &mut problems,
        };
        let job = reader.job();
        assert_eq!(problems, vec![]);
        job.ok().unwrap()
    }

    fn only_value_problem(text: &str) -> String {
        let (ini, _) = IniReader::new(Path::new(FILE)).read(text, &[]);
        let mut problems = Vec::new();
        let reader = PoolReader {
            file: Path::new(FILE),
            pool: &ini.pools[0],
            defaults: &ini.defaults,
            problems: &mut problems,
        };
        assert!(reader.job().is_err());
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
            assert_eq!(errors.0.len(), 1);
            assert_eq!(errors.0[0].line, 0);
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
}

//! The INI dialect of Python 2's `ConfigParser`: text to sections of raw `key = value` entries,
//! with every problem of the text itself (bad lines, unknown keys) reported by line.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One option as written, with its continuation lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawEntry {
    pub(super) key: String,
    pub(super) value: String,
    pub(super) line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RawSection {
    pub(super) name: String,
    /// Of the first header; 0 for `[DEFAULT]` until its header is seen.
    pub(super) line: usize,
    pub(super) entries: Vec<RawEntry>,
    /// Where each key is in `entries`, so that a file of many keys is not quadratic to read.
    pub(super) positions: HashMap<String, usize>,
}

impl RawSection {
    pub(super) fn new(name: &str, line: usize) -> Self {
        RawSection {
            name: name.to_string(),
            line,
            entries: Vec::new(),
            positions: HashMap::new(),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&RawEntry> {
        self.positions.get(key).map(|&index| &self.entries[index])
    }

    /// Later assignments replace earlier ones, as in ConfigParser. Returns the entry's index so
    /// continuation lines can extend it.
    pub(super) fn set(&mut self, key: String, value: String, line: usize) -> usize {
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
pub(super) struct RawIni {
    pub(super) defaults: RawSection,
    pub(super) pools: Vec<RawSection>,
}

/// What a single line is, before the reader's state decides what it means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LineKind<'a> {
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
pub(super) enum Target {
    NoSectionYet,
    /// After a malformed header: its options are dropped rather than cascading into more problems.
    BrokenHeader,
    Defaults,
    Pool(usize),
}

/// What an indented line would continue.
pub(super) enum Continuation {
    Nothing,
    Entry(usize),
    /// An option that was itself a problem; its continuation lines add nothing new.
    Discarded,
}

/// A key that is not one of [`keys::KEYS`], as written; judged once the whole file is read.
pub(super) struct UnknownKey {
    pub(super) line: usize,
    pub(super) section: String,
    pub(super) key: String,
}

pub(super) struct IniReader<'a> {
    pub(super) file: &'a Path,
    pub(super) ini: RawIni,
    /// Where each pool section is in `ini.pools`.
    pub(super) pool_positions: HashMap<String, usize>,
    pub(super) target: Target,
    pub(super) continuation: Continuation,
    pub(super) unknown_keys: Vec<UnknownKey>,
    pub(super) findings: Findings,
    /// The line of the header that opened the current block of options: a key repeated since
    /// then is repeated within one section (a repeat across a repeated header is warned about
    /// with the header).
    pub(super) block_line: usize,
}

impl<'a> IniReader<'a> {
    pub(super) fn new(file: &'a Path) -> Self {
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
            block_line: 0,
        }
    }

    /// `undecodable`: the numbers of the lines that were not UTF-8, ascending.
    pub(super) fn read(mut self, text: &str, undecodable: &[usize]) -> (RawIni, Findings) {
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

    pub(super) fn apply(&mut self, number: usize, kind: LineKind<'_>) {
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
    pub(super) fn skip_damaged_line(&mut self, number: usize, kind: &LineKind<'_>) {
        if matches!(kind, LineKind::Header(_)) {
            self.target = Target::BrokenHeader;
        }
        let message = "line contains a NUL byte (is the file damaged?)";
        self.report(number, None, message.to_string());
        self.continuation = Continuation::Discarded;
    }

    pub(super) fn open_section(&mut self, name: &str, line: usize) {
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
        self.block_line = line;
        self.note_repeated_header(line);
    }

    /// ConfigParser merges a repeated section into the first one, later values winning; so does
    /// this reader, but one file cannot hold two jobs for one pool, so a repeat is probably a
    /// mistake worth a warning.
    pub(super) fn note_repeated_header(&mut self, line: usize) {
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

    pub(super) fn add_option(&mut self, number: usize, key: String, value: String) {
        if matches!(self.target, Target::NoSectionYet) {
            let message = "option outside any section (add a '[pool]' header above it)";
            self.report(number, Some(&key), message.to_string());
        }
        if !keys::is_known(&key) {
            if let Some(section) = self.current_section() {
                self.unknown_keys.push(UnknownKey {
                    line: number,
                    section: section.name.clone(),
                    key: key.clone(),
                });
            }
        }
        self.note_repeated_key(number, &key);
        self.continuation = match self.current_section_mut() {
            Some(section) => Continuation::Entry(section.set(key, value, number)),
            None => Continuation::Discarded,
        };
    }

    /// ConfigParser keeps the later of two values of one key in a section (`images = vm`, then
    /// `Images = vmz`: keys ignore case), and so does this reader; but the earlier line then does
    /// nothing, which is worth a warning naming both lines.
    pub(super) fn note_repeated_key(&mut self, number: usize, key: &str) {
        let Some(first) = self
            .current_section()
            .and_then(|section| section.get(key))
            .map(|entry| entry.line)
            .filter(|&first| first > self.block_line)
        else {
            return;
        };
        let message = format!(
            "set again; the value of {}:{first} is replaced by this later one, as the original \
             tool did",
            printable(&self.file.display().to_string())
        );
        self.warn(number, Some(key), message);
    }

    /// Unknown keys can only be judged once every `%(name)s` reference in the file is known: a
    /// helper key that one uses is fine, one that looks like a misspelt known key is an error (a
    /// typo in `check mode` must never turn a dry run into a real run), and any other is ignored
    /// with a warning, as the original ignored it silently.
    pub(super) fn report_unknown_keys(&mut self) {
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
                    format!("unknown key, ignored (known keys: {})", keys::shown_names()),
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

    pub(super) fn continue_option(&mut self, number: usize, text: &str) {
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

    pub(super) fn current_section(&self) -> Option<&RawSection> {
        match self.target {
            Target::Defaults => Some(&self.ini.defaults),
            Target::Pool(index) => Some(&self.ini.pools[index]),
            Target::NoSectionYet | Target::BrokenHeader => None,
        }
    }

    pub(super) fn current_section_mut(&mut self) -> Option<&mut RawSection> {
        match self.target {
            Target::Defaults => Some(&mut self.ini.defaults),
            Target::Pool(index) => Some(&mut self.ini.pools[index]),
            Target::NoSectionYet | Target::BrokenHeader => None,
        }
    }

    pub(super) fn report(&mut self, line: usize, key: Option<&str>, message: String) {
        self.add(Severity::Error, line, key, message);
    }

    pub(super) fn warn(&mut self, line: usize, key: Option<&str>, message: String) {
        self.add(Severity::Warning, line, key, message);
    }

    pub(super) fn add(
        &mut self,
        severity: Severity,
        line: usize,
        key: Option<&str>,
        message: String,
    ) {
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
pub(super) fn referenced_names(ini: &RawIni) -> HashSet<String> {
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
pub(super) fn add_reference_names(text: &str, names: &mut HashSet<String>) {
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

pub(super) fn classify_line(line: &str) -> LineKind<'_> {
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

pub(super) fn is_blank(line: &str) -> bool {
    python_trim(line).is_empty()
}

/// ConfigParser also treats a line whose first word is `rem` (DOS batch style) as a comment.
pub(super) fn is_rem_comment(line: &str) -> bool {
    line.starts_with(['r', 'R'])
        && line
            .split(is_python_space)
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case("rem"))
}

pub(super) fn section_name(after_bracket: &str) -> Result<&str, &'static str> {
    match after_bracket.find(']') {
        None => Err("section header has no closing ']'"),
        Some(0) => Err("section header has an empty name"),
        Some(end) => Ok(&after_bracket[..end]),
    }
}

pub(super) fn classify_option(line: &str) -> LineKind<'_> {
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

pub(super) fn option_value(after_separator: &str) -> String {
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
pub(super) fn strip_inline_comment(after_separator: &str) -> &str {
    match after_separator.find(';') {
        Some(position) if after_separator[..position].ends_with(is_python_space) => {
            &after_separator[..position]
        }
        _ => after_separator,
    }
}

/// Python 2's `str.isspace` for byte strings; Unicode spaces are not whitespace to it.
pub(super) fn is_python_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

pub(super) fn python_trim(text: &str) -> &str {
    text.trim_matches(is_python_space)
}

/// The known key that `key` most probably misspells: the same but for separators (`CheckMode`,
/// `window_size`), a couple of edits away (`chek mode`), or an abbreviation or extension of it
/// (`check`, `compression`). Compared without spaces, `_` and `-`.
pub(super) fn closest_known_key(key: &str) -> Option<&'static str> {
    let squashed = squash_separators(key);
    let known_keys = keys::exact_names().map(|known| (known, squash_separators(known)));
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

pub(super) fn squash_separators(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect()
}

/// The Levenshtein distance in characters (strsim's) when it is at most `limit`. Lengths that differ by more cannot be that
/// close, which spares computing the distance for a key of a million characters.
pub(super) fn within_edits(from: &str, to: &str, limit: usize) -> Option<usize> {
    let (from_chars, to_chars) = (from.chars().count(), to.chars().count());
    if from_chars.abs_diff(to_chars) > limit {
        return None;
    }
    Some(strsim::levenshtein(from, to)).filter(|&distance| distance <= limit)
}

/// Whether one of the two (squashed) keys starts the other and the shorter is long enough to be
/// meant, not a coincidence.
pub(super) fn abbreviates(key: &str, known: &str) -> bool {
    let (shorter, longer) = if key.len() <= known.len() {
        (key, known)
    } else {
        (known, key)
    };
    shorter.chars().count() >= MIN_ABBREVIATION_CHARS && longer.starts_with(shorter)
}

//! Value parsers for each key: each returns the problem's message on failure.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `exclude`: comma-separated shell-style patterns (`*`, `?`, `[…]`) of image names.
pub(super) fn parse_exclude(text: &str) -> Result<Exclude, String> {
    let mut patterns = Vec::new();
    for part in text.split(',').map(python_trim) {
        if part.is_empty() {
            return Err(format!(
                "empty pattern in {} (doubled or trailing comma?)",
                quoted(text)
            ));
        }
        let pattern = glob::Pattern::new(part)
            .map_err(|err| format!("pattern {} is not valid: {}", quoted(part), err.msg))?;
        patterns.push(pattern);
    }
    Ok(Exclude(patterns))
}

pub(super) fn parse_images(text: &str) -> Result<ImageSelection, String> {
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
        crate::folder::naming::check_name("image", name)?;
    }
    Ok(ImageSelection::Named(
        names.into_iter().map(str::to_string).collect(),
    ))
}

/// Names listed more than once, each reported once, in order of first repetition.
pub(super) fn repeated_names<'n>(names: &[&'n str]) -> Vec<&'n str> {
    let mut repeated: Vec<&str> = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if names[..index].contains(name) && !repeated.contains(name) {
            repeated.push(name);
        }
    }
    repeated
}

pub(super) fn repeated_names_message(repeated: &[&str]) -> String {
    let list: Vec<String> = repeated.iter().map(|name| quoted(name)).collect();
    match list.as_slice() {
        [one] => format!("image {one} is listed more than once"),
        many => format!("images {} are listed more than once", many.join(", ")),
    }
}

pub(super) fn parse_required_text(text: &str) -> Result<String, String> {
    reject_line_breaks(text)?;
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    Ok(text.to_string())
}

pub(super) fn parse_optional_text(text: &str) -> Result<String, String> {
    reject_line_breaks(text)?;
    if text.is_empty() {
        return Err("must not be empty (leave the key out to use the default)".to_string());
    }
    Ok(text.to_string())
}

pub(super) fn parse_metrics_file(text: &str) -> Result<String, String> {
    let text = parse_optional_text(text)?;
    if !Path::new(&text).is_absolute() {
        return Err(format!(
            "{text:?} is not an absolute path (a run from cron has no meaningful working folder)"
        ));
    }
    if Path::new(&text).file_name().is_none() {
        return Err(format!("{text:?} does not name a file"));
    }
    Ok(text)
}

pub(super) fn parse_absolute_folder(text: &str) -> Result<String, String> {
    let text = parse_optional_text(text)?;
    if !Path::new(&text).is_absolute() {
        return Err(format!(
            "{text:?} is not an absolute path (a run from cron has no meaningful working folder)"
        ));
    }
    Ok(text)
}

pub(super) fn parse_backup_mode(text: &str) -> Result<BackupMode, String> {
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

/// A hook: a command line split into words as a POSIX shell would (quotes, backslashes), but
/// run as that argument vector, without a shell.
pub(super) fn parse_command(text: &str) -> Result<Vec<String>, String> {
    reject_line_breaks(text)?;
    let words = shell_words::split(python_trim(text))
        .map_err(|_| format!("{} has an unclosed quote", quoted(text)))?;
    if words.is_empty() {
        return Err("is empty (leave the key out for no command)".to_string());
    }
    Ok(words)
}

/// `hook timeout`: whole seconds from 1 to one day.
pub(super) fn parse_hook_timeout(text: &str) -> Result<u32, String> {
    unsigned_digits(text)?
        .and_then(|digits| digits.parse::<u32>().ok())
        .filter(|seconds| (1..=MAX_CEPH_TIMEOUT).contains(seconds))
        .ok_or_else(|| {
            format!(
                "invalid value {} (expected whole seconds from 1 to {MAX_CEPH_TIMEOUT}, a day)",
                quoted(text)
            )
        })
}

/// `quiesce`: a yes/no word, or `ignore errors`.
pub(super) fn parse_quiesce(text: &str) -> Result<crate::cluster::rbd::Quiesce, String> {
    use crate::cluster::rbd::Quiesce;
    let words: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if words == ["ignore", "errors"] || words == ["ignore", "error"] {
        return Ok(Quiesce::IgnoreErrors);
    }
    match parse_bool(text) {
        Ok(true) => Ok(Quiesce::Required),
        Ok(false) => Ok(Quiesce::Skip),
        Err(_) => Err(format!(
            "invalid value {} (expected yes, no or ignore errors)",
            quoted(text)
        )),
    }
}

pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
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

/// `compress`: the original's yes/no switch (yes is gzip), or the compressor by name.
pub(super) fn parse_compress(text: &str) -> Result<Compression, String> {
    match text.to_ascii_lowercase().as_str() {
        "gzip" => return Ok(Compression::Gzip),
        "zstd" => return Ok(Compression::Zstd),
        _ => {}
    }
    parse_bool(text).map(Compression::from).map_err(|_| {
        format!(
            "invalid value {} (expected yes or no, or zstd; also accepted: y/n, true/false, t/f, \
             on/off, 1/0, gzip)",
            quoted(text)
        )
    })
}

/// `compress level`: a whole number; its range depends on the compressor ([`check_level`]).
pub(super) fn parse_level(text: &str) -> Result<u32, String> {
    let Some(digits) = unsigned_digits(text)? else {
        return Err(format!(
            "invalid value {} (expected a whole number: 1 to 9 for gzip, 1 to 19 for zstd)",
            quoted(text)
        ));
    };
    Ok(digits.parse().unwrap_or(u32::MAX))
}

/// Fails when `level` is outside what `compression`'s compressor takes.
pub(super) fn check_level(compression: Compression, level: u32) -> Result<(), String> {
    let Some(range) = Compressor::levels(compression) else {
        return Ok(());
    };
    if range.contains(&level) {
        return Ok(());
    }
    Err(format!(
        "{level} is not a {} level (expected {} to {}; {} when not set)",
        compression.label(),
        range.start(),
        range.end(),
        Compressor::default_level(compression)
    ))
}

/// `compress threads`: 1 to [`MAX_COMPRESS_THREADS`].
pub(super) fn parse_threads(text: &str) -> Result<u32, String> {
    let expected = || {
        format!(
            "invalid value {} (expected a whole number of threads from 1 to \
             {MAX_COMPRESS_THREADS}; leave it out to use every core)",
            quoted(text)
        )
    };
    let digits = unsigned_digits(text)?.ok_or_else(expected)?;
    digits
        .parse::<u32>()
        .ok()
        .filter(|threads| (1..=MAX_COMPRESS_THREADS).contains(threads))
        .ok_or_else(expected)
}

/// The window's size: a whole number, like the retention counts.
pub(super) fn parse_window_size(text: &str) -> Result<u32, String> {
    parse_count(text)
}

/// A number of restore points or periods for the retention keys: a whole number, 0 or more.
pub(super) fn parse_count(text: &str) -> Result<u32, String> {
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
pub(super) fn rules_in_key_order(rules: &KeepRules) -> [Option<u32>; 4] {
    [rules.last, rules.daily, rules.weekly, rules.monthly]
}

/// Seconds, up to [`MAX_CEPH_TIMEOUT`]; 0 means no limit. Its own parser, not the window's:
/// the bound and the message are about seconds.
/// `wait`: whole seconds, 0 (do not wait) to [`crate::lock::MAX_WAIT_SECONDS`] (a week).
pub(super) fn parse_wait(text: &str) -> Result<u64, String> {
    let max = crate::lock::MAX_WAIT_SECONDS;
    let Some(digits) = unsigned_digits(text)? else {
        return Err(format!(
            "invalid value {} (expected a whole number of seconds, 0 for not waiting)",
            quoted(text)
        ));
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|&seconds| seconds <= max)
        .ok_or_else(|| {
            format!(
                "value {} is too large (at most {max} seconds, a week)",
                quoted(text)
            )
        })
}

pub(super) fn parse_ceph_timeout(text: &str) -> Result<u32, String> {
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
pub(super) fn unsigned_digits(text: &str) -> Result<Option<&str>, String> {
    reject_line_breaks(text)?;
    let trimmed = python_trim(text);
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let is_number = !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit());
    Ok(is_number.then_some(digits))
}

pub(super) fn parse_window_unit(text: &str) -> Result<WindowUnit, String> {
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
pub(super) fn reject_line_breaks(text: &str) -> Result<(), String> {
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
pub(super) fn quoted(text: &str) -> String {
    format!("'{}'", excerpt(text, MAX_QUOTED_CHARS))
}

/// At most `max_chars` characters of `text` (then `…`), on one line however odd the text is.
pub(super) fn excerpt(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => printable(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", printable(&text[..cut]))),
    }
}

/// Keeps every problem on one line however odd the text it quotes.
pub(super) fn printable(text: &str) -> Cow<'_, str> {
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

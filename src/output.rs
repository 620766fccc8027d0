//! stdout for what the user asked for, written so that a closed or broken stdout never panics.
//!
//! `println!` panics when stdout is gone (`cephbackup | head -1`, a journald restart), which would
//! stop a backup half way. Here the first failed write turns stdout off for the rest of the process:
//! the work goes on, and only the printing stops.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);
/// `-q` on a backup run: its stdout lines are held back (see [`set_quiet`]).
static QUIET: AtomicBool = AtomicBool::new(false);

/// Holds back (or lets through again) every later line on stdout: a backup run under `-q`
/// prints nothing while things go well, so cron mails only when something did not.
pub fn set_quiet(on: bool) {
    QUIET.store(on, Ordering::Relaxed);
}

/// Writes one formatted chunk to stdout and flushes it (so our lines come before the output of a
/// child started next); after the first failure, writes nothing.
pub fn write(args: fmt::Arguments<'_>) {
    if capture::write(args) {
        return;
    }
    if CLOSED.load(Ordering::Relaxed) || QUIET.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// What a piece of code would print, collected instead of printed: see [`capture::stdout`]. Unit
/// tests read it; a run with `parallel images` collects each image's lines this way and prints
/// them together, so that images running at once never interleave on stdout.
pub mod capture {
    use std::cell::RefCell;
    use std::fmt::{self, Write as _};

    thread_local! {
        static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Collects instead of printing while this thread is in [`stdout`]; true if it did.
    pub(super) fn write(args: fmt::Arguments<'_>) -> bool {
        CAPTURED.with(|captured| match captured.borrow_mut().as_mut() {
            Some(text) => {
                let _ = text.write_fmt(args);
                true
            }
            None => false,
        })
    }

    /// Runs `f` and returns what it printed with `outln!`/`out!` on this thread (also when `f`
    /// panics, the capture ends with it). Captures nest: an enclosing one gets back what it had,
    /// and sees what the inner one collected only if that is printed again.
    pub fn stdout<R>(f: impl FnOnce() -> R) -> (R, String) {
        struct Restore(Option<String>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CAPTURED.with(|captured| *captured.borrow_mut() = previous);
            }
        }
        let previous = CAPTURED.with(|captured| captured.replace(Some(String::new())));
        let restore = Restore(previous);
        let result = f();
        let text = CAPTURED.with(|captured| captured.borrow_mut().take().unwrap_or_default());
        drop(restore);
        (result, text)
    }
}

/// `println!` that never panics: see [`crate::output`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::__write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::__write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that never panics: see [`crate::output`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::__write_stdout(format_args!($($arg)*))
    };
}

/// `text` with every character that could change what a terminal shows made visible: control
/// characters (`\n`, `\r`, `\t`, `\x1b`, …, DEL and the C1 range as `\u{9b}`), the Unicode line
/// separators and the bidirectional overrides that reorder a line, and the backslash itself
/// (`\\`), so an escaped name can never be mistaken for another. File and folder names in a
/// destination are chosen by whoever can write there: printed raw, a name could end a line and
/// fake the next one, or move the cursor and rewrite what was printed before.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path for people, escaped like [`escaped`]; bytes that are not UTF-8 are shown as `\xNN`.
pub fn escaped_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escaped(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Sizes for people: binary units, one decimal (`1023 B`, `1.5 KiB`, `32.0 MiB`).
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// How instants are shown to people, everywhere: `2026-11-25 12:00:00 UTC`.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S UTC";

/// `at` for people, in [`TIME_FORMAT`].
pub fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format(TIME_FORMAT).to_string()
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `value` as pretty JSON in which every character [`escaped`] would escape is a `\uXXXX`
/// escape, so no name inside a string can act on a terminal either. serde_json already escapes
/// the C0 controls (JSON requires it) but passes DEL, the C1 controls and the bidirectional
/// overrides through raw; they only ever occur inside strings, where an escape means the same.
pub fn json<T: serde::Serialize>(value: &T) -> serde_json::Result<String> {
    let text = serde_json::to_string_pretty(value)?;
    if !text
        .chars()
        .any(|c| c != '\\' && c != '\n' && needs_escape(c))
    {
        return Ok(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c != '\\' && c != '\n' && needs_escape(c) {
            // Outside the BMP nothing needs escaping, so one \uXXXX is always enough.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_visibly_and_unambiguously() {
        for (raw, shown) in [
            (
                "vm@BACKUPUTC20261120T020000.full",
                "vm@BACKUPUTC20261120T020000.full",
            ),
            ("a\nerror: fake", "a\\nerror: fake"),
            ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
            ("tab\there\r", "tab\\there\\r"),
            ("back\\slash", "back\\\\slash"),
            // The escaped form of one name is never the raw form of another.
            ("\\x1b", "\\\\x1b"),
            ("del\x7f c1\u{9b}31m", "del\\x7f c1\\u{9b}31m"),
            ("bidi\u{202e}txt.exe", "bidi\\u{202e}txt.exe"),
            ("ünïcödé ok", "ünïcödé ok"),
        ] {
            assert_eq!(escaped(raw), shown, "{raw:?}");
        }
        assert!(matches!(escaped("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn paths_that_are_not_utf8_are_shown_by_byte() {
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/b/\xff\x1bx\n"));
        assert_eq!(escaped_path(path), "/b/\\xff\\x1bx\\n");
    }

    #[test]
    fn json_keeps_every_control_character_escaped() {
        let names = [
            "a\nb",
            "\x1b[31m",
            "\x7f\u{9b}\u{202e}",
            "back\\slash",
            "ok",
        ];
        let text = json(&names).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && (c.is_control() || c == '\u{202e}')),
            "{text:?}"
        );
        assert!(text.contains(r#""a\nb""#), "{text}");
        assert!(text.contains(r#""\u001b[31m""#), "{text}");
        assert!(text.contains(r#""\u007f\u009b\u202e""#), "{text}");
        let back: Vec<String> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, names);
    }

    #[test]
    fn sizes_for_people() {
        for (bytes, text) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (33_554_432, "32.0 MiB"),
            (1_048_575, "1024.0 KiB"),
            (5 << 40, "5.0 TiB"),
            (3 << 50, "3.0 PiB"),
            (u64::MAX, "16.0 EiB"),
        ] {
            assert_eq!(human_bytes(bytes), text);
        }
    }

    #[test]
    fn times_for_people() {
        use chrono::TimeZone;
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 12, 0, 5)
            .unwrap();
        assert_eq!(time(at), "2026-11-25 12:00:05 UTC");
    }
}

//! Tests of the configuration reader, end to end from text to jobs and problems.

use super::*;
use crate::test_fixtures::mkfifo;
use chrono::TimeZone;
use chrono::{DateTime, TimeDelta, Utc};
use std::fmt::Write as _;

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
        section: pool.to_string(),
        line,
        images: ImageSelection::Named(
            images
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
        exclude: Exclude::default(),
        destination: PathBuf::from(destination),
        destination_text: destination.to_string(),
        ceph_config: PathBuf::from(DEFAULT_CEPH_CONFIG),
        ceph_user: None,
        ceph_keyring: None,
        ceph_timeout: DEFAULT_CEPH_TIMEOUT,
        mode: BackupMode::Full,
        compress: Compression::None,
        compress_level: None,
        compress_threads: None,
        check_mode: false,
        quiesce: crate::cluster::rbd::Quiesce::default(),
        hooks: Hooks::default(),
        groups: Vec::new(),
        window: DEFAULT_WINDOW,
        keep: KeepRules::default(),
        keep_minimum: DEFAULT_KEEP_MINIMUM,
        slide_from_cluster: false,
        file_group: None,
        encrypt_to: None,
        store: None,
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
        compress: Compression::Gzip,
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
            compress: Compression::Gzip,
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
            compress: Compression::Gzip,
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
        "t.conf:6: [rbd] compress: invalid value 'sometimes' (expected yes or no, or zstd; \
         also accepted: y/n, true/false, t/f, on/off, 1/0, gzip)"
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
            let _ = writeln!(body, "v{level} = %(v{})s", level + 1);
        }
        let _ = write!(body, "v{levels} = /end\ndestination directory = %(v0)s\n");
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
        let _ = writeln!(body, "v{level} = {}", next.repeat(10));
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
            "t.conf:5: [rbd] compress: invalid value 'maybe' (expected yes or no, or zstd; \
             also accepted: y/n, true/false, t/f, on/off, 1/0, gzip)",
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
            (expected, Compression::from(expected)),
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
    ImageSelection::Named(names.iter().map(std::string::ToString::to_string).collect())
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
        "t.conf:5: [rbd] retention: unknown key, ignored (known keys: images, namespace, \
         exclude, destination directory, ceph config, ceph user, ceph keyring, backup mode, \
         compress, compress level, compress threads, check mode, quiesce, pre snapshot command, \
         post snapshot command, hook timeout, group NAME, window size, window unit, ceph timeout, \
         keep last, keep daily, keep weekly, keep monthly, keep minimum, slide from cluster, \
         file group, encrypt to, s3 endpoint, s3 region, s3 credentials, parallel images, \
         metrics file, state directory, wait, coordination pool, coordination lease)"
    );
}

/// An `s3://` destination with its keys; `credentials` is the file's text, written 0600 (or
/// `mode`) beside the configuration.
fn s3_section(
    destination: &str,
    extra: &str,
    credentials: &str,
    mode: u32,
) -> (String, tempfile::TempDir) {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s3.credentials");
    #[allow(clippy::disallowed_methods)] // a test's own file
    fs::write(&path, credentials).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    let text = format!(
        "[rbd]\nimages = a\ndestination directory = {destination}\nbackup mode = full\n\
         s3 credentials = {}\n{extra}",
        path.display()
    );
    (text, dir)
}

const KEYS: &str = "[default]\naws_access_key_id = K\naws_secret_access_key = S\n";

#[test]
fn an_s3_destination_names_its_bucket_endpoint_and_credentials() {
    let (text, _dir) = s3_section(
        "s3://backups/site-a",
        "s3 endpoint = http://127.0.0.1:7480\n",
        KEYS,
        0o600,
    );
    let job = only_pool(&text);
    let store = job.store.as_ref().expect("an object store");
    assert_eq!(store.identity(), "http://127.0.0.1:7480/backups");
    assert_eq!(
        job.image_folder("vm").location(),
        Path::new("s3://backups/site-a/rbd/vm")
    );
    // A folder destination has none, whatever `s3 …` keys [DEFAULT] holds.
    let job = only_pool(&format!(
        "[DEFAULT]\ns3 endpoint = http://h\n{}",
        minimal("")
    ));
    assert!(job.store.is_none());
}

#[test]
fn s3_problems_name_the_key_that_is_wrong() {
    let endpoint = "s3 endpoint = http://127.0.0.1:7480\n";
    let cases = [
        (
            "s3://backups",
            "",
            KEYS,
            0o600,
            "t.conf:1: [rbd] s3 endpoint: required key is missing",
        ),
        (
            "s3://Backups",
            endpoint,
            KEYS,
            0o600,
            "t.conf:3: [rbd] destination directory: \"Backups\" is not a bucket name",
        ),
        (
            "s3://backups",
            "s3 endpoint = 127.0.0.1:7480\n",
            KEYS,
            0o600,
            "t.conf:6: [rbd] s3 endpoint: \"127.0.0.1:7480\" is not a URL",
        ),
        (
            "s3://backups",
            endpoint,
            KEYS,
            0o644,
            "t.conf:5: [rbd] s3 credentials: cannot read",
        ),
        (
            "s3://backups",
            endpoint,
            "[default]\naws_access_key_id = K\n",
            0o600,
            "t.conf:5: [rbd] s3 credentials:",
        ),
    ];
    for (destination, extra, credentials, mode, expected) in cases {
        let (text, _dir) = s3_section(destination, extra, credentials, mode);
        let found = problems(&text);
        assert!(
            found.starts_with(expected),
            "{destination} {extra}: {found}"
        );
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
                    t.conf:9: [ssd] compress: invalid value 'perhaps' (expected yes or no, or zstd; \
                    also accepted: y/n, true/false, t/f, on/off, 1/0, gzip)";
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
fn edit_distances_within_a_limit() {
    let cases = [
        ("", "", 2, Some(0)),
        ("abc", "", 3, Some(3)),
        ("abc", "", 2, None),
        ("chek mode", "check mode", 2, Some(1)),
        ("compres", "compress", 2, Some(1)),
        ("kitten", "sitting", 3, Some(3)),
        ("kitten", "sitting", 2, None),
        ("window_size", "window size", 2, Some(1)),
        // Characters, not bytes: one substituted accented letter is one edit.
        ("compréss", "compress", 2, Some(1)),
    ];
    for (from, to, limit, expected) in cases {
        assert_eq!(within_edits(from, to, limit), expected, "{from} -> {to}");
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
        let path =
            std::env::temp_dir().join(format!("cephbackup-config-{}-{name}", std::process::id()));
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
fn a_key_repeated_within_a_section_warns_naming_both_lines_and_the_later_wins() {
    let text = "[rbd]\nimages = vm\ndestination directory = /b\nbackup mode = full\n\
                Images = vmz\n[DEFAULT]\ncompress = no\nCOMPRESS = yes\n";
    let config = parse(text).unwrap();
    assert_eq!(
        config.pools[0].images,
        ImageSelection::Named(vec!["vmz".into()])
    );
    assert_eq!(config.pools[0].compress, Compression::Gzip);
    assert_eq!(
        lines(&config.warnings),
        "t.conf:5: [rbd] images: set again; the value of t.conf:2 is replaced by this later \
         one, as the original tool did\n\
         t.conf:8: [DEFAULT] compress: set again; the value of t.conf:7 is replaced by this \
         later one, as the original tool did"
    );
    // Across a repeated header, the header's own warning says it (see the next test).
}

#[test]
fn repeated_sections_merge_with_a_warning_naming_both_lines() {
    let text = "[rbd]\nimages = a\ndestination directory = /first\nbackup mode = full\n\
                [ssd]\nimages = s\ndestination directory = /s\nbackup mode = full\n\
                [rbd]\ndestination directory = /second\ncompress = on\n\
                [DEFAULT]\n[DEFAULT]\n[rbd]\n";
    let config = parse(text).unwrap();
    assert_eq!(config.pools[0].destination_text, "/second");
    assert_eq!(config.pools[0].compress, Compression::Gzip);
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
    let config = parse(include_str!("../../ceph-backup.cfg")).unwrap();
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
        (
            minimal("keep last = -1"),
            format!("t.conf:5: [rbd] keep last: invalid value '-1' {whole}"),
        ),
        (
            minimal("keep daily = 7.5"),
            format!("t.conf:5: [rbd] keep daily: invalid value '7.5' {whole}"),
        ),
        (
            minimal("keep weekly = two"),
            format!("t.conf:5: [rbd] keep weekly: invalid value 'two' {whole}"),
        ),
        (
            minimal("keep monthly = "),
            format!("t.conf:5: [rbd] keep monthly: invalid value '' {whole}"),
        ),
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
    mkfifo(&fifo);
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
    let _ = writeln!(text, "v9 = {}", "x".repeat(1000));
    for level in (0..9).rev() {
        let next = format!("%(v{})s", level + 1);
        let _ = writeln!(text, "v{level} = {}", next.repeat(10));
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
            let _ = writeln!(text, "v{level} = %(v{})s", level + 1);
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
        let _ = writeln!(many_pools, "[p{index}]");
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

#[test]
fn parallel_images_is_read_from_default_only_and_bounded() {
    assert_eq!(parse(&minimal("")).unwrap().parallel_images, 1);
    let with_default =
        |value: &str| format!("[DEFAULT]\nparallel images = {value}\n{}", minimal(""));
    assert_eq!(parse(&with_default("4")).unwrap().parallel_images, 4);
    assert_eq!(parse(&with_default("64")).unwrap().parallel_images, 64);
    for value in ["0", "65", "two", "-1"] {
        let shown = problems(&with_default(value));
        assert!(
            shown.starts_with("t.conf:2: [DEFAULT] parallel images: "),
            "{value}: {shown}"
        );
    }
    // In a pool section it means nothing: said, and the run keeps one image at a time.
    let config = parse(&minimal("parallel images = 4")).unwrap();
    assert_eq!(config.parallel_images, 1);
    assert_eq!(
        lines(&config.warnings),
        "t.conf:5: [rbd] parallel images: is read from [DEFAULT] only (it applies to the whole \
         run); ignored here"
    );
}

#[test]
fn metrics_file_is_one_absolute_path_in_default() {
    let config = parse(&format!(
        "[DEFAULT]\nroot = /var/lib/node_exporter\nmetrics file = %(root)s/cephbackup.prom\n{}",
        minimal("")
    ))
    .unwrap();
    assert_eq!(
        config.metrics_file,
        Some(PathBuf::from("/var/lib/node_exporter/cephbackup.prom"))
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(parse(&minimal("")).unwrap().metrics_file, None);
    assert_eq!(
        problems(&minimal("metrics file = /m/c.prom\n")),
        "t.conf:5: [rbd] metrics file: one metrics file serves the whole run: set it in [DEFAULT]"
    );
    assert_eq!(
        problems(&format!(
            "[DEFAULT]\nmetrics file = c.prom\n{}",
            minimal("")
        )),
        "t.conf:2: [DEFAULT] metrics file: \"c.prom\" is not an absolute path (a run from cron \
         has no meaningful working folder)"
    );
}

#[test]
fn state_directory_is_one_absolute_folder_in_default() {
    let config = parse(&format!(
        "[DEFAULT]\nstate directory = /srv/cephbackup-state\n{}",
        minimal("")
    ))
    .unwrap();
    assert_eq!(
        config.state_directory,
        Some(PathBuf::from("/srv/cephbackup-state"))
    );
    assert_eq!(config.state_dir(), PathBuf::from("/srv/cephbackup-state"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(parse(&minimal("")).unwrap().state_directory, None);
    assert_eq!(
        problems(&minimal("state directory = /s\n")),
        "t.conf:5: [rbd] state directory: the host has one state folder: set it in [DEFAULT]"
    );
    assert_eq!(
        problems(&format!(
            "[DEFAULT]\nstate directory = state\n{}",
            minimal("")
        )),
        "t.conf:2: [DEFAULT] state directory: \"state\" is not an absolute path (a run from \
         cron has no meaningful working folder)"
    );
}

#[test]
fn compress_names_its_compressor_and_keeps_the_original_switch() {
    for (word, expected) in [
        ("yes", Compression::Gzip),
        ("On", Compression::Gzip),
        ("1", Compression::Gzip),
        ("gzip", Compression::Gzip),
        ("no", Compression::None),
        ("0", Compression::None),
        ("zstd", Compression::Zstd),
        ("ZSTD", Compression::Zstd),
    ] {
        let pool = only_pool(&minimal(&format!("compress = {word}\n")));
        assert_eq!(pool.compress, expected, "{word}");
    }
    let pool = only_pool(&minimal(""));
    assert_eq!(
        (pool.compress, pool.compress_level, pool.compress_threads),
        (Compression::None, None, None)
    );
    assert_eq!(pool.compressor_for(pool.compress), None);
    // Level and threads, from the section or [DEFAULT], like every key.
    let pool = only_pool(&format!(
        "[DEFAULT]\ncompress threads = 3\n{}",
        minimal("compress = zstd\ncompress level = 19\n")
    ));
    assert_eq!(
        (pool.compress_level, pool.compress_threads),
        (Some(19), Some(3))
    );
    let compressor = pool.compressor_for(Compression::Zstd).unwrap();
    assert_eq!((compressor.level, compressor.threads), (19, 3));
    // A gzip file this zstd section writes again: gzip's default level, the section's threads.
    let compressor = pool.compressor_for(Compression::Gzip).unwrap();
    assert_eq!(
        (compressor.compression, compressor.level, compressor.threads),
        (Compression::Gzip, 6, 3)
    );
    assert_eq!(pool.compressor_for(Compression::None), None);
    let pool = only_pool(&minimal("compress = yes\n"));
    assert_eq!(pool.compressor_for(Compression::Gzip).unwrap().level, 6);
}

#[test]
fn compress_level_and_threads_out_of_range_are_one_line_errors() {
    for (lines, expected) in [
        (
            "compress = yes\ncompress level = 10",
            "t.conf:6: [rbd] compress level: 10 is not a gzip level (expected 1 to 9; 6 when \
             not set)",
        ),
        (
            "compress = zstd\ncompress level = 0",
            "t.conf:6: [rbd] compress level: 0 is not a zstd level (expected 1 to 19; 3 when \
             not set)",
        ),
        (
            "compress = zstd\ncompress level = 99999999999999",
            "t.conf:6: [rbd] compress level: 4294967295 is not a zstd level (expected 1 to 19; \
             3 when not set)",
        ),
        (
            "compress level = fast",
            "t.conf:5: [rbd] compress level: invalid value 'fast' (expected a whole number: 1 \
             to 9 for gzip, 1 to 19 for zstd)",
        ),
        (
            "compress threads = 0",
            "t.conf:5: [rbd] compress threads: invalid value '0' (expected a whole number of \
             threads from 1 to 256; leave it out to use every core)",
        ),
        (
            "compress threads = 257",
            "t.conf:5: [rbd] compress threads: invalid value '257' (expected a whole number of \
             threads from 1 to 256; leave it out to use every core)",
        ),
        (
            "compress threads = -1",
            "t.conf:5: [rbd] compress threads: invalid value '-1' (expected a whole number of \
             threads from 1 to 256; leave it out to use every core)",
        ),
    ] {
        assert_eq!(problems(&minimal(lines)), expected, "{lines}");
    }
    // A level only gzip cannot take is fine for zstd.
    assert_eq!(
        only_pool(&minimal("compress = zstd\ncompress level = 12")).compress_level,
        Some(12)
    );
}

#[test]
fn slide_from_cluster_is_a_lenient_boolean_defaulting_to_no() {
    assert!(!only_pool(&minimal_incremental("")).slide_from_cluster);
    for (word, expected) in [
        ("yes", true),
        ("On", true),
        ("1", true),
        ("no", false),
        ("f", false),
    ] {
        let pool = only_pool(&minimal_incremental(&format!(
            "slide from cluster = {word}\n"
        )));
        assert_eq!(pool.slide_from_cluster, expected, "{word}");
    }
    let problem = problems(&minimal_incremental("slide from cluster = maybe"));
    assert!(
        problem.contains("[rbd] slide from cluster: invalid value 'maybe' (expected yes or no"),
        "{problem}"
    );
}

#[test]
fn wait_is_whole_seconds_up_to_a_week_in_default() {
    let with = |value: &str| format!("[DEFAULT]\nwait = {value}\n{}", minimal(""));
    let config = parse(&with("3600")).unwrap();
    assert_eq!(config.wait, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(
        parse(&with("0")).unwrap().wait,
        Some(std::time::Duration::ZERO)
    );
    assert_eq!(parse(&minimal("")).unwrap().wait, None);
    assert_eq!(
        problems(&with("604801")),
        "t.conf:2: [DEFAULT] wait: value '604801' is too large (at most 604800 seconds, a week)"
    );
    assert_eq!(
        problems(&with("6h")),
        "t.conf:2: [DEFAULT] wait: invalid value '6h' (expected a whole number of seconds, 0 \
         for not waiting)"
    );
    assert_eq!(
        problems(&minimal("wait = 60\n")),
        "t.conf:5: [rbd] wait: a run waits the same for every image: set it in [DEFAULT]"
    );
}

#[test]
fn hooks_are_argument_vectors_with_a_timeout() {
    let pool = only_pool(&minimal(
        "pre snapshot command = /usr/local/bin/freeze --vm 'web 1'\n\
         post snapshot command = virsh domfsthaw web\nhook timeout = 120\n",
    ));
    let words = |list: &[&str]| Some(list.iter().map(|w| (*w).to_string()).collect());
    assert_eq!(
        pool.hooks.pre,
        words(&["/usr/local/bin/freeze", "--vm", "web 1"])
    );
    assert_eq!(pool.hooks.post, words(&["virsh", "domfsthaw", "web"]));
    assert_eq!(pool.hooks.timeout, std::time::Duration::from_secs(120));
    assert_eq!(only_pool(&minimal("")).hooks, Hooks::default());
    assert_eq!(
        problems(&minimal("pre snapshot command = sh -c 'echo\n")),
        "t.conf:5: [rbd] pre snapshot command: 'sh -c 'echo' has an unclosed quote"
    );
    assert_eq!(
        problems(&minimal("hook timeout = 0\n")),
        "t.conf:5: [rbd] hook timeout: invalid value '0' (expected whole seconds from 1 to \
         86400, a day)"
    );
}

#[test]
fn quiesce_is_yes_no_or_ignore_errors() {
    use crate::cluster::rbd::Quiesce;
    for (value, expected) in [
        ("yes", Quiesce::Required),
        ("no", Quiesce::Skip),
        ("off", Quiesce::Skip),
        ("ignore errors", Quiesce::IgnoreErrors),
        ("Ignore-Errors", Quiesce::IgnoreErrors),
    ] {
        let pool = only_pool(&minimal(&format!("quiesce = {value}\n")));
        assert_eq!(pool.quiesce, expected, "{value}");
    }
    assert_eq!(only_pool(&minimal("")).quiesce, Quiesce::Required);
    assert_eq!(
        problems(&minimal("quiesce = sometimes\n")),
        "t.conf:5: [rbd] quiesce: invalid value 'sometimes' (expected yes, no or ignore errors)"
    );
}

#[test]
fn exclude_leaves_out_images_by_pattern() {
    let section = |images: &str, exclude: &str| {
        format!(
            "[rbd]\nimages = {images}\ndestination directory = /b\nbackup mode = full\n\
             exclude = {exclude}\n"
        )
    };
    let pool = only_pool(&section("*", "scratch-*, tmp?"));
    for (image, left_out) in [
        ("scratch-1", true),
        ("tmp1", true),
        ("tmp10", false),
        ("vm", false),
    ] {
        assert_eq!(pool.exclude.matches(image), left_out, "{image}");
    }
    assert!(!only_pool(&minimal("")).exclude.matches("a"));
    // A listed name that is excluded is dropped, with a warning naming it.
    let text = section("vm, scratch-1, db", "scratch-*");
    assert_eq!(
        only_pool(&text).images,
        ImageSelection::Named(vec!["vm".into(), "db".into()])
    );
    assert_eq!(
        warnings(&text),
        "t.conf:5: [rbd] exclude: leaves out 'scratch-1', which `images` lists"
    );
    assert_eq!(
        problems(&section("scratch-1", "scratch-*")),
        "t.conf:5: [rbd] exclude: leaves out every image `images` lists: nothing would be \
         backed up"
    );
    assert!(problems(&section("*", "[abc"))
        .starts_with("t.conf:5: [rbd] exclude: pattern '[abc' is not valid: "));
    assert_eq!(
        problems(&section("*", "a,,b")),
        "t.conf:5: [rbd] exclude: empty pattern in 'a,,b' (doubled or trailing comma?)"
    );
}

#[test]
fn a_namespace_is_a_section_pool_namespace_or_the_namespace_key() {
    let section = |header: &str, extra: &str| {
        format!("[{header}]\nimages = *\ndestination directory = /b\nbackup mode = full\n{extra}")
    };
    let job = only_pool(&section("rbd/tenant", ""));
    assert_eq!(
        (job.pool.as_str(), job.section.as_str()),
        ("rbd/tenant", "rbd/tenant")
    );
    let job = only_pool(&section("rbd", "namespace = tenant\n"));
    assert_eq!(
        (job.pool.as_str(), job.section.as_str()),
        ("rbd/tenant", "rbd")
    );
    assert_eq!(only_pool(&section("rbd", "")).pool, "rbd");
    assert_eq!(
        problems(&format!(
            "{}{}",
            section("rbd/tenant", ""),
            section("rbd", "namespace = tenant\n")
        )),
        "t.conf:5: [rbd] backs up pool 'rbd/tenant' as the section at line 1 does: one section \
         per pool"
    );
    assert_eq!(
        problems(&section("rbd/a", "namespace = b\n")),
        "t.conf:5: [rbd/a] namespace: the section [rbd/a] names its namespace already"
    );
    assert!(problems(&section("rbd/a/b", "")).contains("namespace name \"a/b\" contains '/'"));
    assert!(problems(&section("rbd/", "")).contains("namespace name \"\" is empty"));
}

#[test]
fn groups_name_images_the_section_backs_up_each_in_one_group() {
    let section = |images: &str, extra: &str| {
        format!("[rbd]\nimages = {images}\ndestination directory = /b\nbackup mode = full\n{extra}")
    };
    let pool = only_pool(&section(
        "vm42-disk0, vm42-disk1, db",
        "group VM42 = vm42-disk0, vm42-disk1\n",
    ));
    let expected = ImageGroup {
        name: "vm42".into(),
        images: vec!["vm42-disk0".into(), "vm42-disk1".into()],
        line: 5,
    };
    assert_eq!(pool.groups, vec![expected.clone()]);
    assert_eq!(pool.group_of("vm42-disk1"), Some(&expected));
    assert_eq!(pool.group_of("db"), None);
    // With `images = *` any name may be a member: the pool is listed at run time.
    let pool = only_pool(&section("*", "group a = x, y\ngroup b = z\n"));
    assert_eq!(pool.groups.len(), 2);
    let refused = [
        (
            section("vm0, vm1", "group g = vm0, vm2\n"),
            "t.conf:5: [rbd] group g: names 'vm2', which `images` does not list",
        ),
        (
            section("*", "exclude = tmp*\ngroup g = vm0, tmp1\n"),
            "t.conf:6: [rbd] group g: names 'tmp1', which `exclude` leaves out",
        ),
        (
            section("*", "group a = x, y\ngroup b = y\n"),
            "t.conf:6: [rbd] group b: names 'y', which group 'a' at line 5 has already (an image \
             is in one group only)",
        ),
        (
            section("*", "group g = *\n"),
            "t.conf:5: [rbd] group g: '*' cannot be a group's member: name the images",
        ),
        (
            section("*", "group g = a,,b\n"),
            "t.conf:5: [rbd] group g: empty image name in 'a,,b' (doubled or trailing comma?)",
        ),
        (
            format!("[DEFAULT]\ngroup g = a\n{}", section("*", "")),
            "t.conf:2: [DEFAULT] group g: a group names images of one pool: write it in that \
             pool's section",
        ),
    ];
    for (text, expected) in refused {
        assert_eq!(problems(&text), expected, "{text}");
    }
    // `group` alone is a key with no group name: a typo'd key is still told apart.
    assert!(warnings(&section("*", "grup g = a\n")).contains("unknown key"));
}

#[test]
fn coordination_is_one_pool_and_lease_in_default_with_its_cluster() {
    let with = |defaults: &str| format!("[DEFAULT]\n{defaults}\n{}", minimal(""));
    assert_eq!(parse(&minimal("")).unwrap().coordination, None);
    let config = parse(&with(
        "coordination pool = backup-coord\nceph config = /etc/ceph/b.conf\nceph user = backup",
    ))
    .unwrap();
    let coordination = config.coordination.unwrap();
    assert_eq!(coordination.pool, "backup-coord");
    assert_eq!(coordination.lease, crate::coordinate::DEFAULT_LEASE);
    assert_eq!(coordination.cluster.conf, PathBuf::from("/etc/ceph/b.conf"));
    assert_eq!(coordination.cluster.user.as_deref(), Some("backup"));
    let config = parse(&format!(
        "[DEFAULT]\ncoordination pool = c\ncoordination lease = 30\n{}",
        minimal("ceph config = /etc/ceph/s.conf\n")
    ))
    .unwrap();
    let coordination = config.coordination.unwrap();
    assert_eq!(coordination.lease, std::time::Duration::from_secs(30));
    // No cluster in [DEFAULT]: the first section's.
    assert_eq!(coordination.cluster.conf, PathBuf::from("/etc/ceph/s.conf"));
    for bad in ["2", "3601", "1m"] {
        assert_eq!(
            problems(&with(&format!(
                "coordination pool = c\ncoordination lease = {bad}"
            ))),
            format!(
                "t.conf:3: [DEFAULT] coordination lease: invalid value '{bad}' (expected whole \
                 seconds from 3 to 3600)"
            )
        );
    }
    assert_eq!(
        problems(&with("coordination pool = a\x07b")),
        "t.conf:2: [DEFAULT] coordination pool: 'a\\u{7}b' is not a pool name"
    );
    assert_eq!(
        problems(&minimal("coordination pool = c\n")),
        "t.conf:5: [rbd] coordination pool: the hosts share one coordination pool: set it in \
         [DEFAULT]"
    );
    assert_eq!(
        warnings(&with("coordination lease = 30")),
        "t.conf:2: [DEFAULT] coordination lease: has no effect without `coordination pool`"
    );
}

#[test]
fn the_metrics_file_of_a_configuration_with_errors_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.conf");
    std::fs::write(
        &path,
        "[DEFAULT]\nmetrics file = /m/c.prom\n[rbd]\nimages = a\nbackup mode = sometimes\n",
    )
    .unwrap();
    assert!(load(&path).is_err());
    assert_eq!(
        metrics_file_despite_errors(&path),
        Some(PathBuf::from("/m/c.prom"))
    );
    std::fs::write(&path, "[rbd]\nimages = a\n").unwrap();
    assert_eq!(metrics_file_despite_errors(&path), None);
    assert_eq!(
        metrics_file_despite_errors(&dir.path().join("absent")),
        None
    );
}

#[test]
fn image_names_too_long_for_their_file_names_are_refused_at_load() {
    let long = "v".repeat(250);
    let text = format!(
        "[rbd]\ndestination directory = /b\nbackup mode = incremental\nimages = a, {long}\n"
    );
    let shown = problems(&text);
    assert!(
        shown.contains("t.conf:4")
            && shown.contains("is 250 bytes long")
            && shown.contains("at most 180"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 1, "{shown}");
    // 181 bytes: too long for a diff's checksum file, not for a full's.
    let name = "w".repeat(181);
    let text = format!("[rbd]\ndestination directory = /b\nimages = {name}\n");
    assert!(problems(&format!("{text}backup mode = incremental\n")).contains("at most 180"));
    assert_eq!(
        only_pool(&format!("{text}backup mode = full\n")).images,
        ImageSelection::Named(vec![name])
    );
    let fits = "x".repeat(180);
    only_pool(&format!(
        "[rbd]\ndestination directory = /b\nimages = {fits}\nbackup mode = incremental\n"
    ));
}

#[test]
fn file_group_names_an_existing_group_in_a_section_or_default() {
    assert_eq!(only_pool(&minimal("")).file_group, None);
    assert_eq!(
        only_pool(&minimal("")).file_access(),
        crate::folder::access::FileAccess::PRIVATE
    );
    let pool = only_pool(&minimal("file group = root\n"));
    let group = pool.file_group.clone().unwrap();
    assert_eq!((group.name.as_str(), group.gid), ("root", 0));
    assert_eq!(pool.file_access().file_mode(), 0o640);
    assert_eq!(pool.file_access().folder_mode(), 0o750);
    let inherited = only_pool(&format!("[DEFAULT]\nfile group = root\n{}", minimal("")));
    assert_eq!(inherited.file_group, Some(group));
    assert_eq!(
        problems(&minimal("file group = no-such-group-anywhere\n")),
        "t.conf:5: [rbd] file group: unknown group \"no-such-group-anywhere\" (`getent group \
         no-such-group-anywhere` finds nothing); create it or name an existing one"
    );
}

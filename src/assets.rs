//! The files a package ships beside the binary, generated from the command line definition in
//! [`crate::cli`]: the manual pages (`cephbackup.8` and one per command, `cephbackup-list.8`, …)
//! and the bash, zsh and fish completions; and `cephbackup.conf.5`, the configuration keys, from
//! the parser's own table ([`crate::config::keys`]).
//!
//! Generated, never written by hand, so that help, manual, completions and parser cannot drift
//! apart.
//! The binary never calls this module (the linker drops it); `cargo run --example
//! generate-assets -- DIR` writes the files for `scripts/package` and for anyone installing with
//! cargo.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::cli::EXIT_STATUS_HELP;

/// The manual section: cephbackup is run by the administrator, like rbd(8).
pub const MAN_SECTION: &str = "8";

/// One generated file, named relative to the output folder.
#[derive(Debug, Clone)]
pub struct Asset {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

/// Every manual page and completion script, in a stable order.
pub fn all() -> Result<Vec<Asset>> {
    let mut assets = manual_pages()?;
    assets.push(configuration_page());
    assets.extend(completions());
    Ok(assets)
}

/// Writes [`all`] below `dir` (`man/…`, `completions/…`), creating the folders; returns the
/// paths written. A build step writing into its own output folder: plain writes are enough.
#[allow(clippy::disallowed_methods)] // a build step writes the package's assets into its own output folder
pub fn write_to(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for asset in all()? {
        let path = dir.join(&asset.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &asset.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// `man/cephbackup.8`, then `man/cephbackup-<command>.8` for each visible command.
pub fn manual_pages() -> Result<Vec<Asset>> {
    // `help` has no page: `man cephbackup` is its answer.
    let mut command = crate::cli::command().mut_subcommand("help", |help| help.hide(true));
    command.build();
    let mut pages = vec![page(&command, true)?];
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        pages.push(page(sub, false)?);
    }
    Ok(pages)
}

/// The bash, zsh and fish completions, under the names their packages' folders expect.
pub fn completions() -> Vec<Asset> {
    [
        (Shell::Bash, "cephbackup"),
        (Shell::Zsh, "_cephbackup"),
        (Shell::Fish, "cephbackup.fish"),
    ]
    .into_iter()
    .map(|(shell, file)| {
        let mut contents = Vec::new();
        clap_complete::generate(
            shell,
            &mut crate::cli::command(),
            "cephbackup",
            &mut contents,
        );
        Asset {
            path: Path::new("completions").join(file),
            contents,
        }
    })
    .collect()
}

fn page(command: &clap::Command, main: bool) -> Result<Asset> {
    // Subcommands carry no version of their own; their pages show the tool's.
    let command = command.clone().version(crate::report::version());
    let man = Man::new(command.clone())
        .section(MAN_SECTION)
        .date(page_date())
        .source(format!("cephbackup {}", crate::report::version()))
        .manual("System Administration");
    let mut out = Vec::new();
    let name = man.get_filename();
    let mut render = || -> std::io::Result<()> {
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        if command.get_arguments().any(|arg| !arg.is_hide_set()) {
            man.render_options_section(&mut out)?;
        }
        if command.has_subcommands() {
            man.render_subcommands_section(&mut out)?;
        }
        let mut roff = Roff::new();
        exit_status(&mut roff);
        if main {
            files_environment_examples(&mut roff);
        }
        see_also(&mut roff, main);
        roff.to_writer(&mut out)?;
        man.render_version_section(&mut out)
    };
    render().with_context(|| format!("cannot render the manual page {name}"))?;
    Ok(Asset {
        path: Path::new("man").join(name),
        contents: out,
    })
}

/// The date a page shows: the day of `SOURCE_DATE_EPOCH` when set (reproducible builds;
/// `scripts/package` sets it to the commit's time), else today. Never empty: `.TH` needs it in
/// its place for the source and manual names after it to land where `man` shows them.
fn page_date() -> String {
    let at = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|epoch| epoch.trim().parse::<i64>().ok())
        .and_then(|epoch| chrono::DateTime::from_timestamp(epoch, 0))
        .unwrap_or_else(chrono::Utc::now);
    at.format("%Y-%m-%d").to_string()
}

/// The exit statuses, as `--help` shows them (one source: [`EXIT_STATUS_HELP`]).
fn exit_status(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    let body = EXIT_STATUS_HELP
        .split_once('\n')
        .map_or(EXIT_STATUS_HELP, |(_, rest)| rest);
    roff.control("nf", []);
    for line in body.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
}

fn paragraph(roff: &mut Roff, inlines: Vec<clap_mangen::roff::Inline>) {
    roff.control("PP", []);
    roff.text(inlines);
}

fn item(roff: &mut Roff, term: &str, text: &str) {
    roff.control("TP", []);
    roff.text([bold(term)]);
    roff.text([roman(text)]);
}

fn files_environment_examples(roff: &mut Roff) {
    roff.control("SH", ["FILES"]);
    item(
        roff,
        "/etc/cephbackup/cephbackup.conf",
        "The configuration read when no -c is given: one INI section per pool, [DEFAULT] for \
         keys shared by every section. The package installs a commented sample.",
    );
    item(
        roff,
        "/run/cephbackup/",
        "The per-image lock files of runs started by root (--lock-dir chooses another folder).",
    );
    item(
        roff,
        "/var/lib/cephbackup/",
        "The host's state folder for root (state directory, or $STATE_DIRECTORY, chooses \
         another): the destinations this host wrote to and their filesystems, each image's newest \
         completed snapshot, and the key that seals the tool's records.",
    );
    item(
        roff,
        "DESTINATION/.cephbackup-destination.json",
        "Marks a folder as a cephbackup destination (see init-destination).",
    );
    item(
        roff,
        "DESTINATION/.cephbackup-last-run.json",
        "What the last run did, as the JSON document --json prints.",
    );
    item(
        roff,
        "DESTINATION/POOL/IMAGE/",
        "One image's backup files: IMAGE@SNAPSHOT.full, IMAGE@SNAPSHOT.diff_from_SNAPSHOT, \
         compressed as .tar.gz or .tar.zst, each with a .sha256 file, and the image record \
         .cephbackup-image.json. Files are 0600 and folders 0700; with file group = NAME in the \
         configuration, 0640 and 0750 owned by that group.",
    );

    roff.control("SH", ["ENVIRONMENT"]);
    item(
        roff,
        "CEPHBACKUP_LOG",
        "How much is logged on stderr, as a tracing filter: error, warn, info (the default), \
         debug.",
    );
    item(
        roff,
        "STATE_DIRECTORY",
        "The host's state folder when the configuration names none (systemd's StateDirectory= \
         sets it).",
    );
    item(
        roff,
        "TMPDIR",
        "Where verify --source rebuilds an image to compare it with the cluster.",
    );

    roff.control("SH", ["EXAMPLES"]);
    for (what, example) in [
        (
            "Check the configuration without contacting the cluster, then show what a run would do:",
            "cephbackup --check --offline\ncephbackup --check",
        ),
        ("Back up every configured image:", "cephbackup"),
        (
            "Show every restore point, and whether every image is recent enough:",
            "cephbackup list\ncephbackup status --max-age 26h",
        ),
        (
            "Restore the point of a given time as a new image:",
            "cephbackup restore --pool rbd --image vm --to vm-restored --at '2026-11-25 02:00'",
        ),
        ("Read every backup file and prove it restorable:", "cephbackup verify"),
    ] {
        paragraph(roff, vec![roman(what)]);
        roff.control("RS", ["4"]);
        roff.control("nf", []);
        for line in example.lines() {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
        roff.control("RE", []);
    }
}

/// The section of the configuration file's page: a file format.
pub const CONF_SECTION: &str = "5";

/// The sample configuration the package installs, shown in the page's EXAMPLES.
const SAMPLE_CONFIG: &str = include_str!("../ceph-backup.cfg");

/// `man/cephbackup.conf.5`: the file's format and every key of [`crate::config::keys::KEYS`],
/// with its values and default.
pub fn configuration_page() -> Asset {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "cephbackup.conf",
            CONF_SECTION,
            &page_date(),
            &format!("cephbackup {}", crate::report::version()),
            "File Formats",
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman("cephbackup.conf - configuration of cephbackup")]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold(crate::config::DEFAULT_CONFIG_PATH)]);
    configuration_description(&mut roff);
    configuration_keys(&mut roff);
    roff.control("SH", ["EXAMPLES"]);
    paragraph(
        &mut roff,
        vec![roman(
            "The sample the package installs, without its comments (it explains every key in \
             place):",
        )],
    );
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    let lines = SAMPLE_CONFIG.lines().filter(|line| {
        let line = line.trim_start();
        !(line.starts_with('#') || line.starts_with(';') || line.is_empty())
    });
    for line in lines {
        if line.starts_with('[') && line != "[DEFAULT]" {
            roff.control("sp", []);
        }
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold(format!("cephbackup({MAN_SECTION})")),
        roman(", "),
        bold("rbd(8)"),
        roman(", "),
        bold("age(1)"),
    ]);
    paragraph(
        &mut roff,
        vec![
            roman("The administrator's manual, "),
            italic("/usr/share/doc/cephbackup/README.md"),
            roman(", shows these keys at work."),
        ],
    );
    Asset {
        path: Path::new("man").join(format!("cephbackup.conf.{CONF_SECTION}")),
        contents: roff.render().into_bytes(),
    }
}

fn configuration_description(roff: &mut Roff) {
    roff.control("SH", ["DESCRIPTION"]);
    for text in [
        "cephbackup(8) reads an INI file, the one the original Python cephbackup read: one \
         section per pool, named exactly like the pool ([rbd]), holding the keys that say which \
         images of that pool to back up, where and how. A section [DEFAULT] holds keys every \
         section inherits, and keys that are about the whole run. -c PATH names another file.",
        "Each line is key = value or key: value. Keys ignore case and may contain spaces \
         (window size). A line starting with white space continues the value above. Whole-line \
         comments start with # or ;, an inline comment needs a space before its ;.",
        "A value may refer to another key with %(name)s, as in Python's configparser: the key of \
         the same section, else of [DEFAULT] (%(__name__)s is the section's own name); %% is a \
         literal %. A key the tool does not know, such as backup root = /srv in [DEFAULT] used as \
         destination directory = %(backup root)s/ceph, is such a helper and is otherwise ignored \
         with a warning; one that looks like a misspelt known key is an error.",
        "Every problem in the file is reported before anything runs, one line each, naming the \
         file, line, section and key; cephbackup --check --offline checks a file without \
         contacting the cluster.",
    ] {
        paragraph(roff, vec![roman(text)]);
    }
}

fn configuration_keys(roff: &mut Roff) {
    use crate::config::keys::{Scope, KEYS};
    roff.control("SH", ["KEYS"]);
    paragraph(
        roff,
        vec![roman(
            "Each key may be set in a pool's section or in [DEFAULT], for every pool, unless it \
             says [DEFAULT] only or pool sections only.",
        )],
    );
    for doc in KEYS {
        roff.control("TP", []);
        roff.text([bold(doc.name.shown())]);
        let mut inlines = Vec::new();
        match doc.scope {
            Scope::DefaultOnly => inlines.push(roman("[DEFAULT] only. ")),
            Scope::PoolOnly => inlines.push(roman("Pool sections only. ")),
            Scope::AnySection => {}
        }
        inlines.extend(backquoted(doc.text));
        roff.text(inlines);
        roff.control("br", []);
        roff.text([italic("Default: "), roman(doc.default)]);
    }
}

/// `text` with its `code` spans in bold, the backquotes dropped.
fn backquoted(text: &str) -> Vec<clap_mangen::roff::Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(index, part)| {
            if index % 2 == 1 {
                bold(part)
            } else {
                roman(part)
            }
        })
        .collect()
}

fn see_also(roff: &mut Roff, main: bool) {
    roff.control("SH", ["SEE ALSO"]);
    let mut references: Vec<String> = Vec::new();
    if !main {
        references.push(format!("cephbackup({MAN_SECTION})"));
    }
    references.push(format!("cephbackup.conf({CONF_SECTION})"));
    references.push("rbd(8)".to_string());
    if main {
        references.push("systemd.timer(5)".to_string());
        references.push("crontab(5)".to_string());
    }
    let mut inlines = Vec::new();
    for (index, reference) in references.iter().enumerate() {
        if index > 0 {
            inlines.push(roman(", "));
        }
        inlines.push(bold(reference.as_str()));
    }
    roff.text(inlines);
    if main {
        paragraph(
            roff,
            vec![
                roman("The administrator's manual is "),
                italic("/usr/share/doc/cephbackup/README.md"),
                roman(", with the configuration keys, scheduling, monitoring and restoring."),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &str {
        std::str::from_utf8(&asset.contents).unwrap()
    }

    #[test]
    fn a_page_for_the_tool_and_each_command() {
        let pages = manual_pages().unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|page| page.path.display().to_string())
            .collect();
        assert_eq!(names[0], "man/cephbackup.8");
        for command in ["list", "restore", "verify", "init-destination"] {
            let name = format!("man/cephbackup-{command}.8");
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        let main = text(&pages[0]);
        assert!(main.contains("\n.TH cephbackup 8 "), "{main}");
        for section in [
            "SYNOPSIS",
            "OPTIONS",
            "EXIT STATUS",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            let heading = if section.contains(' ') {
                format!(".SH \"{section}\"\n")
            } else {
                format!(".SH {section}\n")
            };
            assert!(main.contains(&heading), "{section}");
        }
        assert!(main.contains(crate::report::version()), "{main}");
        let restore = pages
            .iter()
            .find(|page| page.path.ends_with("cephbackup-restore.8"))
            .unwrap();
        assert!(text(restore).contains("to\\-file"), "{}", text(restore));
    }

    #[test]
    fn completions_for_three_shells_know_the_commands() {
        let scripts = completions();
        assert_eq!(scripts.len(), 3);
        for script in &scripts {
            let body = text(script);
            for word in ["restore", "verify", "init-destination"] {
                assert!(body.contains(word), "{}: {word}", script.path.display());
            }
        }
    }
}

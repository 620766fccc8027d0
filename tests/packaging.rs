//! What an administrator installs besides the binary, checked with the system's own tools: the
//! manual pages render with `man` (`cephbackup.conf(5)` naming exactly the keys the parser
//! knows), the completions load in bash (and zsh and fish where installed), `systemd-analyze
//! verify` accepts the units, `--version` names the git revision, and the Debian package that
//! `scripts/package` built with dpkg-deb (`CEPHBACKUP_DEB`, set by scripts/test) holds every
//! file (the JSON schemas as in the tree included), with the configuration as a conffile,
//! complete and real control fields and md5sums, and maintainer scripts that, run with
//! stand-ins for deb-systemd-helper, register the units without ever enabling or starting them
//! and stop and disable them on removal. The `--help` of the tool and of each command is an
//! insta snapshot (tests/snapshots/), reviewed word for word.
//!
//! No cluster is needed; `man` must be installed (scripts/test installs man-db), zsh, fish and
//! systemd-analyze are used where present and skipped with a printed reason otherwise.

#![allow(clippy::disallowed_methods)] // tests drive man, bash, systemd-analyze and dpkg-deb directly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cephbackup");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Drops the overstrike sequences (`c\bc`, `_\bc`) that man uses for bold and underline when
/// its output is not a terminal.
fn plain(rendered: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in rendered.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

/// Every run of white space as one space: man justifies lines, so words are one or more spaces
/// apart.
fn squeezed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `man -l PAGE` as a reader sees it, with groff's warnings enabled: a page with a roff mistake
/// fails the test through its stderr.
fn render_man_page(page: &Path) -> String {
    assert!(
        installed("man"),
        "man is not installed: `apt-get install man-db` (scripts/test does)"
    );
    let output = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8"));
    let stderr = text(&output.stderr);
    assert!(stderr.trim().is_empty(), "{}: {stderr}", page.display());
    plain(&text(&output.stdout))
}

fn generated_assets() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let written = cephbackup::bin::write_to(dir.path()).unwrap();
    (dir, written)
}

#[test]
fn manual_pages_render_with_man() {
    let (dir, _) = generated_assets();
    let main = render_man_page(&dir.path().join("man/cephbackup.8"));
    for heading in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "EXIT STATUS",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            main.lines().any(|line| line == heading),
            "no {heading}:\n{main}"
        );
    }
    for expected in [
        "cephbackup - ",
        "--conf <PATH>",
        "/etc/cephbackup/cephbackup.conf",
        "cephbackup-restore(8)",
        "cephbackup.conf(5)",
        "75 another run kept an image longer",
        cephbackup::bin::version(),
    ] {
        assert!(
            squeezed(&main).contains(&squeezed(expected)),
            "no {expected:?}:\n{main}"
        );
    }
    for (command, option) in [
        ("list", "--json"),
        ("restore", "--to-file <PATH>"),
        ("verify", "--source"),
        ("init-destination", "--pool <POOL>"),
    ] {
        let page = render_man_page(&dir.path().join(format!("man/cephbackup-{command}.8")));
        assert!(
            squeezed(&page).contains(&format!("NAME cephbackup-{command} - ")),
            "{command}:\n{page}"
        );
        assert!(page.contains(option), "{command}: no {option}:\n{page}");
    }
}

/// The keys `cephbackup.conf(5)` documents: the bold term after each `.TP` of its KEYS section.
fn keys_on_the_configuration_page(roff: &str) -> Vec<String> {
    let section = roff
        .split_once(".SH KEYS\n")
        .and_then(|(_, rest)| rest.split_once("\n.SH "))
        .map(|(keys, _)| keys)
        .expect("a KEYS section");
    let mut lines = section.lines();
    let mut keys = Vec::new();
    while let Some(line) = lines.next() {
        if line == ".TP" {
            let term = lines.next().unwrap();
            keys.push(
                term.replace("\\fB", "")
                    .replace("\\fR", "")
                    .replace("\\-", "-"),
            );
        }
    }
    keys
}

/// The keys the parser knows, as it lists them when it meets one it does not.
fn keys_the_parser_knows() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.conf");
    std::fs::write(&conf, "[rbd]\ndescription = not a key\n").unwrap();
    let output = Command::new(BIN)
        .args(["--check", "--offline", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    let listed = stderr
        .split_once("unknown key, ignored (known keys: ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .unwrap_or_else(|| panic!("no list of known keys:\n{stderr}"))
        .0;
    listed.split(", ").map(str::to_string).collect()
}

#[test]
fn configuration_page_renders_and_documents_every_key_the_parser_knows() {
    let (dir, _) = generated_assets();
    let path = dir.path().join("man/cephbackup.conf.5");
    let page = render_man_page(&path);
    for heading in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "KEYS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            page.lines().any(|line| line == heading),
            "no {heading}:\n{page}"
        );
    }
    for expected in [
        "cephbackup.conf - configuration of cephbackup",
        "/etc/cephbackup/cephbackup.conf",
        "%(name)s",
        "[DEFAULT]",
        "cephbackup(8)",
        "Default: 21600 (6 hours)",
        "destination directory = /mnt/ceph_backups/",
    ] {
        assert!(
            squeezed(&page).contains(expected),
            "no {expected:?}:\n{page}"
        );
    }

    let roff = text(&std::fs::read(&path).unwrap());
    let mut documented = keys_on_the_configuration_page(&roff);
    let mut known = keys_the_parser_knows();
    assert!(known.len() >= 35, "{known:?}");
    documented.sort();
    known.sort();
    assert_eq!(documented, known, "the page and the parser disagree");

    // The sample names only documented keys (its commented-out ones included), and the README's
    // table lists the same keys as the page.
    let sample = text(&std::fs::read(Path::new(ROOT).join("ceph-backup.cfg")).unwrap());
    for line in sample.lines() {
        let line = line.trim_start_matches(';');
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((key, _)) = line.split_once(" = ") {
            // A family (`group NAME`) is written with a name of the admin's (`group vm42`).
            let family = |k: &String| {
                k.strip_suffix(" NAME")
                    .is_some_and(|prefix| key.starts_with(&format!("{prefix} ")))
            };
            assert!(
                documented.iter().any(|k| k == key || family(k)),
                "sample: {key}"
            );
        }
    }
    let readme = text(&std::fs::read(Path::new(ROOT).join("README.md")).unwrap());
    let table = readme
        .split_once("Every key:\n")
        .and_then(|(_, rest)| rest.split_once("\n\n"))
        .expect("the README's table of keys")
        .0;
    let mut in_readme: Vec<String> = table
        .lines()
        .filter(|row| row.starts_with("| `"))
        .flat_map(|row| {
            let cell = row.split(" | ").next().unwrap().trim_start_matches("| ");
            cell.split(", ")
                .map(|key| key.trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    in_readme.sort();
    assert_eq!(
        in_readme, documented,
        "the README's table and the page disagree"
    );
}

#[test]
fn completions_load_in_the_shells() {
    let (dir, _) = generated_assets();
    let bash = dir.path().join("completions/cephbackup");
    run(Command::new("bash").arg("-n").arg(&bash));
    // Source it and ask for completions as bash would on `cephbackup re<TAB>` and
    // `cephbackup restore --to<TAB>`.
    let script = r#"
        source "$1"
        complete -p cephbackup
        complete_line() {
            COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
            read -r -a COMP_WORDS <<< "$COMP_LINE"
            [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            COMPREPLY=()
            _cephbackup cephbackup "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            echo "$1 => ${COMPREPLY[*]}"
        }
        complete_line "cephbackup re"
        complete_line "cephbackup restore --to"
    "#;
    let output = run(Command::new("bash").args(["-c", script, "bash"]).arg(&bash));
    let shown = text(&output.stdout);
    assert!(shown.contains("-F _cephbackup cephbackup\n"), "{shown}");
    assert!(shown.contains("cephbackup re => restore"), "{shown}");
    let to = shown
        .lines()
        .find(|line| line.starts_with("cephbackup restore --to =>"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(to.contains("--to ") && to.contains("--to-file"), "{shown}");

    for (shell, file) in [("zsh", "_cephbackup"), ("fish", "cephbackup.fish")] {
        let path = dir.path().join("completions").join(file);
        assert!(
            text(&std::fs::read(&path).unwrap()).contains("restore"),
            "{file}"
        );
        if installed(shell) {
            run(Command::new(shell).arg("-n").arg(&path));
        } else {
            eprintln!("skipped: {shell} is not installed, {file} is not syntax-checked");
        }
    }
}

#[test]
fn version_names_the_git_revision() {
    let output = run(Command::new(BIN).arg("--version"));
    let shown = text(&output.stdout);
    let revision = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(ROOT)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| text(&output.stdout).trim().to_string());
    match (revision, std::env::var("CEPHBACKUP_GIT_REVISION")) {
        (_, Ok(given)) if !given.trim().is_empty() => assert_eq!(
            shown,
            format!(
                "cephbackup {} (git {})\n",
                env!("CARGO_PKG_VERSION"),
                given.trim()
            )
        ),
        (Some(revision), _) => assert_eq!(
            shown,
            format!(
                "cephbackup {} (git {revision})\n",
                env!("CARGO_PKG_VERSION")
            )
        ),
        (None, _) => {
            eprintln!("skipped: not a git checkout, --version shows no revision");
            assert_eq!(shown, format!("cephbackup {}\n", env!("CARGO_PKG_VERSION")));
        }
    }
}

const UNITS: [&str; 5] = [
    "cephbackup.service",
    "cephbackup.timer",
    "cephbackup-verify.service",
    "cephbackup-verify.timer",
    "cephbackup-failure@.service",
];

/// `cephbackup --help` and each command's, as a reader sees them: a change to any option's
/// words shows in the review of the snapshot. The width is fixed (clap reads `COLUMNS` before
/// the terminal's), so the wrapping is the same on every machine.
#[test]
fn help_of_the_tool_and_of_each_command() {
    for command in [
        "",
        "list",
        "status",
        "restore",
        "verify",
        "mount",
        "init-destination",
        "hosts",
        "help",
    ] {
        let args: Vec<&str> = [command, "--help"]
            .into_iter()
            .filter(|arg| !arg.is_empty())
            .collect();
        let mut help = Command::new(BIN);
        help.args(&args).env("COLUMNS", "100").env_remove("LINES");
        let shown = text(&run(&mut help).stdout);
        let name = match command {
            "" => "help".to_string(),
            command => format!("help_{command}"),
        };
        insta::assert_snapshot!(name, shown, &format!("cephbackup {}", args.join(" ")));
    }
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join("dist/systemd").join(name)).unwrap()
}

#[test]
fn systemd_units_say_what_the_manual_promises() {
    let backup = unit("cephbackup.service");
    let verify = unit("cephbackup-verify.service");
    for (name, body) in [
        ("cephbackup.service", &backup),
        ("cephbackup-verify.service", &verify),
    ] {
        for line in [
            "Type=oneshot",
            "RuntimeDirectory=cephbackup",
            "RuntimeDirectoryMode=0700",
            "RuntimeDirectoryPreserve=yes",
            "StateDirectory=cephbackup",
            "StateDirectoryMode=0700",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "After=network-online.target",
            "OnFailure=cephbackup-failure@%n.service",
        ] {
            assert!(body.lines().any(|l| l == line), "{name}: no {line}");
        }
        // rbd must reach the cluster: nothing may cut the network off.
        for forbidden in ["PrivateNetwork=yes", "IPAddressDeny=", "ProtectHome=yes"] {
            assert!(!body.contains(forbidden), "{name}: {forbidden}");
        }
    }
    assert!(backup.contains("\nExecStart=/usr/bin/cephbackup -c /etc/cephbackup/cephbackup.conf"));
    assert!(backup.contains("\nReadWritePaths=-/mnt/ceph_backups\n"));
    assert!(verify.contains(
        "\nExecStart=/usr/bin/cephbackup -c /etc/cephbackup/cephbackup.conf --wait 43200 verify\n"
    ));
    for timer in ["cephbackup.timer", "cephbackup-verify.timer"] {
        let body = unit(timer);
        assert!(body.contains("\nOnCalendar="), "{timer}");
        assert!(body.contains("\nPersistent=true\n"), "{timer}");
        assert!(body.contains("\nWantedBy=timers.target\n"), "{timer}");
    }
}

#[test]
fn systemd_analyze_accepts_the_units() {
    if !installed("systemd-analyze") {
        eprintln!("skipped: systemd-analyze is not installed (package systemd)");
        return;
    }
    // The units name /usr/bin/cephbackup, which systemd-analyze checks exists: point them at the
    // binary under test. SYSTEMD_UNIT_PATH lets it find the OnFailure= template beside them.
    let dir = tempfile::tempdir().unwrap();
    for name in UNITS {
        let body = unit(name).replace("/usr/bin/cephbackup", BIN);
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let output = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&UNITS[..4])
        .arg("cephbackup-failure@cephbackup.service.service")
        .current_dir(dir.path())
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display())));
    // systemd-analyze exits 0 on an unknown key or a bad value and only warns: any output is a
    // finding.
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(said.trim().is_empty(), "{said}");

    // And it does find a broken unit, so the empty output above means something.
    let broken = unit("cephbackup.service")
        .replace("/usr/bin/cephbackup", BIN)
        .replace("ProtectSystem=strict", "ProtectSystem=stricter");
    std::fs::write(dir.path().join("cephbackup.service"), broken).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "cephbackup.service"])
        .current_dir(dir.path())
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        text(&output.stderr).contains("stricter"),
        "{}",
        text(&output.stderr)
    );
}

/// The package scripts/package built, named by `CEPHBACKUP_DEB` (scripts/test sets it).
fn package() -> Option<PathBuf> {
    let Ok(path) = std::env::var("CEPHBACKUP_DEB") else {
        eprintln!(
            "skipped: CEPHBACKUP_DEB is not set; scripts/test sets it to what scripts/package \
             builds"
        );
        return None;
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "CEPHBACKUP_DEB={} is not a file",
        path.display()
    );
    Some(path)
}

#[test]
fn debian_package_holds_the_binary_pages_completions_units_and_conffile() {
    let Some(deb) = package() else { return };
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout);
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    let mut expected = vec![
        "./usr/bin/cephbackup".to_string(),
        "./usr/share/man/man8/cephbackup.8.gz".to_string(),
        "./usr/share/bash-completion/completions/cephbackup".to_string(),
        "./usr/share/zsh/vendor-completions/_cephbackup".to_string(),
        "./usr/share/fish/vendor_completions.d/cephbackup.fish".to_string(),
        "./etc/cephbackup/cephbackup.conf".to_string(),
        "./usr/share/doc/cephbackup/README.md".to_string(),
        "./usr/share/man/man5/cephbackup.conf.5.gz".to_string(),
    ];
    for command in ["list", "restore", "verify", "init-destination"] {
        expected.push(format!("./usr/share/man/man8/cephbackup-{command}.8.gz"));
    }
    for name in UNITS {
        expected.push(format!("./usr/lib/systemd/system/{name}"));
    }
    for path in &expected {
        assert!(files.contains(&path.as_str()), "{path} not in\n{listing}");
    }

    let conffiles = text(
        &run(Command::new("dpkg-deb")
            .args(["-I"])
            .arg(&deb)
            .arg("conffiles"))
        .stdout,
    );
    assert_eq!(conffiles.trim(), "/etc/cephbackup/cephbackup.conf");
    let depends = text(
        &run(Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Depends"))
        .stdout,
    );
    assert!(depends.contains("ceph-common"), "{depends}");

    // What is inside: the conffile is the sample, the binary is stripped and runs, the page
    // renders.
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    assert_eq!(
        std::fs::read(root.path().join("etc/cephbackup/cephbackup.conf")).unwrap(),
        std::fs::read(Path::new(ROOT).join("ceph-backup.cfg")).unwrap()
    );
    let binary = root.path().join("usr/bin/cephbackup");
    let size = std::fs::metadata(&binary).unwrap().len();
    // A test build's binary is about 32 MiB unstripped and 11 MiB stripped (a release build
    // about 9 MiB).
    assert!(size < 20 << 20, "{size} bytes: not stripped?");
    let sections = elf_section_names(&std::fs::read(&binary).unwrap());
    assert!(sections.iter().any(|name| name == ".text"), "{sections:?}");
    assert!(
        !sections
            .iter()
            .any(|name| name.starts_with(".debug") || name == ".symtab"),
        "the packaged binary is not stripped: {sections:?}"
    );
    let version = text(&run(Command::new(&binary).arg("--version")).stdout);
    assert!(version.starts_with("cephbackup "), "{version}");
    let page = render_man_page(&root.path().join("usr/share/man/man8/cephbackup.8.gz"));
    assert!(page.contains("EXIT STATUS"), "{page}");
    let page = render_man_page(&root.path().join("usr/share/man/man5/cephbackup.conf.5.gz"));
    assert!(page.contains("coordination lease"), "{page}");

    // The schemas `--json --help` points to, as in the source tree.
    let doc = root.path().join("usr/share/doc/cephbackup");
    let schemas: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("schema"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".schema.json"))
        .collect();
    assert!(schemas.len() >= 6, "{schemas:?}");
    for schema in schemas {
        let name = schema.file_name().unwrap();
        let shipped = std::fs::read(doc.join(name))
            .unwrap_or_else(|err| panic!("{}: {err}", name.to_string_lossy()));
        assert_eq!(
            shipped,
            std::fs::read(&schema).unwrap(),
            "{}",
            name.to_string_lossy()
        );
    }
    let help = text(&run(Command::new(&binary).args(["--help"])).stdout);
    assert!(
        help.contains("/usr/share/doc/cephbackup/<COMMAND>.schema.json"),
        "{help}"
    );
}

/// The section names of a little-endian ELF64 file (what `readelf -S` lists), enough to tell a
/// stripped binary: it has no `.symtab` and no `.debug_*` sections.
fn elf_section_names(elf: &[u8]) -> Vec<String> {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()));
    let u64_at = |at: usize| {
        usize::try_from(u64::from_le_bytes(elf[at..at + 8].try_into().unwrap())).unwrap()
    };
    assert_eq!(&elf[..5], b"\x7fELF\x02", "not an ELF64 file");
    let (table, entry_size, count, names_index) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |index: usize| table + index * entry_size;
    let names = u64_at(header(names_index) + 0x18);
    (0..count)
        .map(|index| {
            let name =
                u32::from_le_bytes(elf[header(index)..header(index) + 4].try_into().unwrap());
            let start = names + usize::try_from(name).unwrap();
            let end = start + elf[start..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&elf[start..end]).into_owned()
        })
        .collect()
}

/// A control file field of the package (`dpkg-deb --field`), trimmed.
fn control_field(deb: &Path, field: &str) -> String {
    let value = text(&run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(field)).stdout);
    value.trim().to_string()
}

#[test]
fn debian_package_control_fields_are_complete_and_dpkg_reads_them_cleanly() {
    let Some(deb) = package() else { return };
    // dpkg-deb parses the control file and warns (on stderr) about anything malformed.
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(
        info.stderr.is_empty(),
        "dpkg-deb --info warns:\n{}",
        text(&info.stderr)
    );
    let arch = text(&run(Command::new("dpkg").arg("--print-architecture")).stdout);
    for (field, expected) in [
        ("Package", "cephbackup".to_string()),
        ("Version", format!("{}-1", env!("CARGO_PKG_VERSION"))),
        ("Architecture", arch.trim().to_string()),
        ("Section", "admin".to_string()),
        ("Priority", "optional".to_string()),
    ] {
        assert_eq!(control_field(&deb, field), expected, "{field}");
    }
    // Real metadata, Cargo.toml's: no placeholder address.
    let maintainer = control_field(&deb, "Maintainer");
    assert!(
        maintainer.contains('<') && maintainer.ends_with('>'),
        "{maintainer}"
    );
    for placeholder in ["localhost", "example", "root@"] {
        assert!(
            !maintainer.contains(placeholder),
            "Maintainer: {maintainer}"
        );
    }
    let manifest = text(&std::fs::read(Path::new(ROOT).join("Cargo.toml")).unwrap());
    assert!(
        manifest.contains(&format!("authors = [\"{maintainer}\"]")),
        "{maintainer}"
    );
    let homepage = control_field(&deb, "Homepage");
    assert!(homepage.starts_with("https://"), "Homepage: {homepage:?}");
    assert!(
        manifest.contains(&format!("homepage = \"{homepage}\"")),
        "{homepage}"
    );
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!(
            "cephbackup_{}-1_{}.deb",
            env!("CARGO_PKG_VERSION"),
            arch.trim()
        )
    );

    // Depends: the C library the binary links to (dpkg-shlibdeps) and rbd's package.
    let depends = control_field(&deb, "Depends");
    let names: Vec<&str> = depends
        .split(',')
        .map(|dep| dep.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(names.contains(&"libc6"), "{depends}");
    assert!(names.contains(&"ceph-common"), "{depends}");
    assert!(!names.contains(&""), "an empty dependency: {depends}");

    // Installed-Size is in KiB: a few MB, most of it the binary.
    let size: u64 = control_field(&deb, "Installed-Size").parse().unwrap();
    assert!(size > 1000 && size < 64 << 10, "Installed-Size {size}");

    // A one-line synopsis under 80 characters, then the extended description.
    let description = control_field(&deb, "Description");
    let mut lines = description.lines();
    let synopsis = lines.next().unwrap();
    assert!(synopsis.len() < 80, "synopsis too long: {synopsis:?}");
    assert!(synopsis.contains("Ceph RBD"), "{synopsis:?}");
    let extended: Vec<&str> = lines.collect();
    assert!(
        extended.len() >= 2 && extended[0].trim_start().starts_with("cephbackup snapshots"),
        "{description}"
    );
    // What it does today: not only a folder.
    let extended = squeezed(&extended.join(" "));
    for feature in ["S3", "encrypted", "Several backup hosts"] {
        assert!(extended.contains(feature), "{feature}: {description}");
    }
}

#[test]
fn debian_package_md5sums_list_every_file_but_the_conffile() {
    let Some(deb) = package() else { return };
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path().join("DEBIAN")));
    let md5sums = control.path().join("DEBIAN/md5sums");
    // Every checksum matches the file it names...
    run(Command::new("md5sum")
        .args(["--check", "--strict", "--quiet"])
        .arg(&md5sums)
        .current_dir(root.path()));
    // ...and every regular file is named, but the conffile (dpkg records its checksum itself).
    let listed: Vec<String> = std::fs::read_to_string(&md5sums)
        .unwrap()
        .lines()
        .map(|line| line.split_once("  ").unwrap().1.to_string())
        .collect();
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout);
    let mut files = 0;
    for line in listing.lines().filter(|line| line.starts_with('-')) {
        let path = line
            .split_whitespace()
            .last()
            .unwrap()
            .trim_start_matches("./");
        if path.starts_with("etc/") {
            assert!(!listed.iter().any(|p| p == path), "conffile {path} listed");
        } else {
            assert!(listed.iter().any(|p| p == path), "{path} not in md5sums");
            files += 1;
        }
    }
    assert_eq!(files, listed.len(), "{listed:?}");
    // Everything belongs to root.
    for line in listing.lines() {
        let owner = line.split_whitespace().nth(1).unwrap();
        assert!(owner == "root/root" || owner == "0/0", "{line}");
    }
}

/// The maintainer scripts of the package, run as dpkg would with stand-ins for
/// deb-systemd-helper, deb-systemd-invoke and systemctl that log their arguments: the log of what
/// the script asked of systemd. `installed` and `enabled` are what the stand-in
/// `deb-systemd-helper debian-installed` and `was-enabled` answer. The scripts' checks for a
/// running systemd (/run/systemd/system) and for deb-systemd-helper are pointed at the sandbox,
/// which has both.
struct MaintainerScripts {
    dir: tempfile::TempDir,
}

impl MaintainerScripts {
    fn extract(deb: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(dir.path().join("DEBIAN")));
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("run-systemd-system")).unwrap();
        let logger = r#"#!/bin/sh
echo "${0##*/} $*" >>"$FAKE_LOG"
case "$1 $2" in
    "debian-installed "*) exit "$FAKE_INSTALLED" ;;
    "--quiet was-enabled") exit "$FAKE_ENABLED" ;;
esac
exit 0
"#;
        for tool in ["deb-systemd-helper", "deb-systemd-invoke", "systemctl"] {
            std::fs::write(bin.join(tool), logger).unwrap();
            run(Command::new("chmod").arg("755").arg(bin.join(tool)));
        }
        Self { dir }
    }

    fn script(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("DEBIAN").join(name)).unwrap()
    }

    fn run(&self, name: &str, args: &[&str], installed: bool, enabled: bool) -> Vec<String> {
        let dir = self.dir.path();
        let body = self
            .script(name)
            .replace(
                "/run/systemd/system",
                &dir.join("run-systemd-system").to_string_lossy(),
            )
            .replace(
                "/usr/bin/deb-systemd-helper",
                &dir.join("bin/deb-systemd-helper").to_string_lossy(),
            );
        let script = dir.join(format!("{name}.sandboxed"));
        std::fs::write(&script, body).unwrap();
        let log = dir.join("log");
        std::fs::write(&log, "").unwrap();
        let path = format!(
            "{}:{}",
            dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        run(Command::new("sh")
            .arg(&script)
            .args(args)
            .env("PATH", path)
            .env("FAKE_LOG", &log)
            .env("FAKE_INSTALLED", if installed { "0" } else { "1" })
            .env("FAKE_ENABLED", if enabled { "0" } else { "1" }));
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Whether the log has a call of `tool` with `action` naming `unit`.
fn called(log: &[String], tool: &str, action: &str, unit: &str) -> bool {
    log.iter().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.first() == Some(&tool) && words.contains(&action) && words.contains(&unit)
    })
}

#[test]
fn debian_package_scripts_register_the_units_and_never_start_them() {
    let Some(deb) = package() else { return };
    let scripts = MaintainerScripts::extract(&deb);
    for name in ["postinst", "prerm", "postrm"] {
        let body = scripts.script(name);
        assert!(body.starts_with("#!/bin/sh\n"), "{name}");
        assert!(!body.contains("#DEBHELPER#"), "{name} still has the marker");
        run(Command::new("sh")
            .arg("-n")
            .arg(scripts.dir.path().join("DEBIAN").join(name)));
    }
    // Every unit of dist/systemd is known here, so a new one cannot miss the scripts' lists.
    let mut shipped: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("dist/systemd"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    let mut known: Vec<String> = UNITS.iter().map(ToString::to_string).collect();
    known.sort();
    assert_eq!(shipped, known, "dist/systemd and UNITS differ");
    // The units with an [Install] section are the ones an administrator enables (the timers).
    let enableable: Vec<&str> = UNITS
        .into_iter()
        .filter(|name| unit(name).lines().any(|line| line == "[Install]"))
        .collect();
    assert_eq!(enableable, ["cephbackup.timer", "cephbackup-verify.timer"]);
    let starts = |log: &[String]| {
        log.iter().any(|line| {
            [
                "enable",
                "start",
                "restart",
                "try-restart",
                "reload-or-restart",
            ]
            .iter()
            .any(|action| line.split_whitespace().any(|word| word == *action))
        })
    };

    // First install: each timer registered, nothing enabled or started, systemd reloaded.
    let log = scripts.run("postinst", &["configure"], false, false);
    for name in &enableable {
        assert!(
            called(&log, "deb-systemd-helper", "update-state", name),
            "{log:?}"
        );
    }
    assert!(!starts(&log), "{log:?}");
    assert!(
        called(&log, "systemctl", "daemon-reload", "--system"),
        "{log:?}"
    );
    // Upgrade, timers left disabled: they stay so.
    let log = scripts.run("postinst", &["configure", "0.0.1-1"], true, false);
    assert!(!starts(&log), "{log:?}");
    for name in &enableable {
        assert!(
            called(&log, "deb-systemd-helper", "unmask", name),
            "{log:?}"
        );
    }
    // Upgrade, timers enabled by the administrator: they stay enabled, none is (re)started.
    let log = scripts.run("postinst", &["configure", "0.0.1-1"], true, true);
    for name in &enableable {
        assert!(
            called(&log, "deb-systemd-helper", "enable", name),
            "{log:?}"
        );
    }
    assert!(
        !log.iter()
            .any(|line| line.starts_with("deb-systemd-invoke")),
        "{log:?}"
    );

    // An upgrade stops nothing: a running backup finishes.
    for args in [&["upgrade", "0.2.0-1"][..], &["failed-upgrade", "0.2.0-1"]] {
        let log = scripts.run("prerm", args, true, true);
        assert!(log.is_empty(), "prerm {args:?}: {log:?}");
        let log = scripts.run("postrm", args, true, true);
        assert!(
            log.iter().all(|line| line.contains("daemon-reload")),
            "postrm {args:?}: {log:?}"
        );
    }
    // Removal stops every unit that is not a template, and masks the timers...
    let log = scripts.run("prerm", &["remove"], true, true);
    for name in UNITS.iter().filter(|name| !name.contains('@')) {
        assert!(called(&log, "deb-systemd-invoke", "stop", name), "{log:?}");
    }
    let log = scripts.run("postrm", &["remove"], true, true);
    for name in &enableable {
        assert!(called(&log, "deb-systemd-helper", "mask", name), "{log:?}");
    }
    // ...and purging disables them for good.
    let log = scripts.run("postrm", &["purge"], true, true);
    for name in &enableable {
        assert!(called(&log, "deb-systemd-helper", "purge", name), "{log:?}");
        assert!(
            called(&log, "deb-systemd-helper", "unmask", name),
            "{log:?}"
        );
    }
    assert!(!starts(&log), "{log:?}");
}

/// The README's quick start is real: its configuration passes the offline check (with the
/// destination and the Ceph configuration moved to temporary files), every `cephbackup` command
/// it shows parses (each with `--help` appended exits 0), and the timer it enables is shipped.
#[test]
fn readme_quick_start_works() {
    let readme = text(&std::fs::read(Path::new(ROOT).join("README.md")).unwrap());
    let quick = readme
        .split_once("### Quick start for an administrator\n")
        .and_then(|(_, rest)| rest.split_once("\n## "))
        .expect("a quick start")
        .0;
    let commands = quick
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap()
        .0;
    for line in commands.lines() {
        let command = line.split(" # ").next().unwrap().trim();
        let words: Vec<&str> = command.split_whitespace().collect();
        match words[..] {
            ["cephbackup", ref args @ ..] => {
                run(Command::new(BIN).args(args).arg("--help"));
            }
            ["systemctl", "enable", "--now", unit] => {
                assert!(UNITS.contains(&unit), "{unit} is not shipped");
            }
            _ => {}
        }
    }

    let ini = quick
        .split_once("```ini\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap()
        .0;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups");
    std::fs::create_dir(&dest).unwrap();
    let ceph_conf = dir.path().join("ceph.conf");
    std::fs::write(&ceph_conf, "[global]\n").unwrap();
    let ini = ini
        .replace("/mnt/ceph_backups", &dest.to_string_lossy())
        .replace("/etc/ceph/ceph.conf", &ceph_conf.to_string_lossy());
    let conf = dir.path().join("cephbackup.conf");
    std::fs::write(&conf, ini).unwrap();
    let output = run(Command::new(BIN)
        .arg("-c")
        .arg(&conf)
        .args(["--check", "--offline"])
        .env("STATE_DIRECTORY", dir.path().join("state")));
    let shown = text(&output.stdout);
    assert!(shown.contains("1 section(s), no problems"), "{shown}");
}

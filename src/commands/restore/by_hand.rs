//! What `restore --check` prints on stdout: the same restore as a shell script of stock-tool
//! commands (`sha256sum`, `age`, `tar`, `zstd`, `rbd`), this restore's files and target filled in
//! and every word shell-quoted, so that an administrator without this tool (or who wants to see
//! each step) can paste it, or save it with `> restore.sh` and run it with `sh`.
//!
//! It is the README's "Restoring by hand with the stock tools" written out: the checksums
//! checked first (a damaged diff would otherwise be applied by `rbd import-diff` as garbage),
//! then `rbd import -` of the full fed on stdin (Ceph 16 refuses an `@` in an import path),
//! `rbd snap create` of its snapshot (the next diff starts from it), and `rbd import-diff -` of
//! each diff in order. Nothing here runs: the tool never runs a shell.
//! Encrypted files are decrypted with `age -d -i` and the `--identity` file.

use std::path::{Path, PathBuf};

use crate::cluster::rbd::{spec, Cluster};
use crate::folder::chain::FolderFile;
use crate::folder::naming::Compression;

use super::Target;

/// Where the files are, and how to reach the cluster.
pub(super) struct Source<'a> {
    /// The image's folder, or its `s3://` location.
    pub(super) folder: &'a Path,
    pub(super) cluster: &'a Cluster,
    /// `--identity`, for encrypted files.
    pub(super) identity: Option<&'a Path>,
}

/// The script's lines (comments start with `#`); `notes` gets what the administrator must know
/// that is no command (files to download first, a target no stock tool can write), for stderr.
pub(super) fn script(
    source: &Source<'_>,
    route: &[&FolderFile],
    target: &Target,
    notes: &mut Vec<String>,
) -> Vec<String> {
    // A restore refuses an encrypted route without the key before it gets here; were it not to,
    // a script without the key would only fail half-way.
    if source.identity.is_none() && route.iter().any(|link| link.file.encrypted) {
        notes.push("the files are encrypted: give --identity FILE for the commands".to_string());
        return Vec::new();
    }
    let mut lines = vec!["set -eu".to_string()];
    let folder = source.folder.to_string_lossy();
    if folder.starts_with("s3://") {
        notes.push(format!(
            "the files are objects in {folder}: download them into the current folder first \
             (their URLs are in the script's comments), then run the script there"
        ));
        lines.push(format!(
            "# Download these objects into the current folder first (with aws s3 cp, s3cmd, \
             rclone...), from {folder}/:"
        ));
        for link in route {
            lines.push(format!("#   {folder}/{}", link.name));
            if let Some(checksum) = &link.checksum {
                lines.push(format!("#   {folder}/{checksum}"));
            }
        }
    } else {
        lines.push(words(&["cd", "--", &folder]));
    }
    let checksums: Vec<&str> = route
        .iter()
        .filter_map(|link| link.checksum.as_deref())
        .collect();
    if !checksums.is_empty() {
        let mut check = vec!["sha256sum", "-c", "--"];
        check.extend(checksums);
        lines.push(words(&check));
    }
    match target {
        Target::Image { pool, name } => {
            let image = spec(pool, name, None);
            for link in route {
                let reader = unpacked(source.identity, link);
                if link.file.is_full() {
                    lines.push(feed(reader, rbd(source.cluster, &["import", "-", &image])));
                    let snapshot = spec(pool, name, Some(link.file.snap.as_str()));
                    lines.push(rbd(source.cluster, &["snap", "create", &snapshot]));
                } else {
                    lines.push(feed(
                        reader,
                        rbd(source.cluster, &["import-diff", "-", &image]),
                    ));
                }
            }
        }
        Target::File(path) => match route {
            [full] => {
                let file = absolute(path);
                let Reader { pipe, file: input } = unpacked(source.identity, full);
                let mut command = pipe.unwrap_or_else(|| words(&["cat", "--", &input]));
                command.push_str(" > ");
                command.push_str(&quote(&file.to_string_lossy()));
                lines.push(command);
            }
            _ => notes.push(
                "no stock tool applies an rbd diff to a file: restore into an image by hand (the \
                 commands of `restore --to NAME --check`), then `rbd export` it"
                    .to_string(),
            ),
        },
    }
    lines
}

/// How a file's raw stream is read: a pipeline printing it, or (`pipe: None`) the file itself,
/// to be redirected into the command's stdin.
struct Reader {
    pipe: Option<String>,
    file: String,
}

/// `identity`: the age identity file that opens an encrypted file ([`script`] makes sure there
/// is one when a file is).
fn unpacked(identity: Option<&Path>, link: &FolderFile) -> Reader {
    let name = link.name.as_str();
    let mut stages: Vec<String> = Vec::new();
    // The first stage reads the file; the later ones read the stage before.
    let input = |stages: &Vec<String>| if stages.is_empty() { name } else { "-" };
    if let (true, Some(identity)) = (link.file.encrypted, identity) {
        let identity = absolute(identity);
        stages.push(words(&[
            "age",
            "-d",
            "-i",
            &identity.to_string_lossy(),
            name,
        ]));
    }
    match link.file.compression {
        Compression::None => {}
        Compression::Gzip => {
            // Whatever the archive's one member is called (the original's hold a whole path).
            stages.push(words(&["tar", "-xzOf", input(&stages)]));
        }
        Compression::Zstd => {
            if stages.is_empty() {
                stages.push(words(&["zstd", "-dc", "--", name]));
            } else {
                stages.push("zstd -dc".to_string());
            }
            stages.push(words(&["tar", "-xOf", "-"]));
        }
    }
    Reader {
        pipe: (!stages.is_empty()).then(|| stages.join(" | ")),
        file: name.to_string(),
    }
}

/// `reader` into `command`'s stdin: a pipe, or a redirect of the file itself.
fn feed(reader: Reader, command: String) -> String {
    match reader.pipe {
        Some(pipe) => format!("{pipe} | {command}"),
        None => format!("{command} < {}", quote(&reader.file)),
    }
}

/// An `rbd` command against the section's cluster, as the tool runs it (its time limits aside).
fn rbd(cluster: &Cluster, args: &[&str]) -> String {
    let options: Vec<String> = (cluster.options().iter())
        .map(|option| option.to_string_lossy().into_owned())
        .collect();
    let mut command = vec!["rbd"];
    command.extend(options.iter().map(String::as_str));
    command.extend(args);
    words(&command)
}

fn quote(word: &str) -> String {
    shell_words::quote(word).into_owned()
}

fn words(words: &[&str]) -> String {
    shell_words::join(words)
}

/// The script changes into the image's folder: a relative path given on the command line would
/// then name something else.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::chain::{S0, S1};
    use crate::folder::chain::Layout;
    use crate::test_fixtures::diff_file;

    fn cluster() -> Cluster {
        Cluster {
            conf: "/etc/ceph/my cluster.conf".into(),
            user: Some("backup".into()),
            keyring: None,
            timeout: 300,
        }
    }

    #[test]
    fn the_script_checks_then_imports_snapshots_and_applies_each_file_quoted() {
        let names = [
            format!("vm@{S0}.full.tar.gz"),
            format!("vm@{S0}.full.tar.gz.sha256"),
            diff_file(S0, S1),
        ];
        let layout = Layout::build("vm", &names);
        let route = layout.route(layout.points()[1]).unwrap();
        let cluster = cluster();
        let source = Source {
            folder: Path::new("/b/my pool/vm"),
            cluster: &cluster,
            identity: None,
        };
        let target = Target::Image {
            pool: "rbd".into(),
            name: "new".into(),
        };
        let mut notes = Vec::new();
        let lines = script(&source, &route, &target, &mut notes);
        let rbd = "rbd --conf '/etc/ceph/my cluster.conf' --id backup";
        assert_eq!(
            lines,
            [
                "set -eu".to_string(),
                "cd -- '/b/my pool/vm'".to_string(),
                // `@` is no shell character: a quote is only where one is needed.
                format!("sha256sum -c -- vm@{S0}.full.tar.gz.sha256"),
                format!("tar -xzOf vm@{S0}.full.tar.gz | {rbd} import - rbd/new"),
                format!("{rbd} snap create rbd/new@{S0}"),
                format!("{rbd} import-diff - rbd/new < vm@{S1}.diff_from_{S0}"),
            ]
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn encrypted_and_zstd_files_are_decrypted_and_unpacked_and_s3_files_downloaded() {
        let names = [
            format!("vm@{S0}.full.tar.zst.age"),
            format!("{}.age", diff_file(S0, S1)),
        ];
        let layout = Layout::build("vm", &names);
        let route = layout.route(layout.points()[1]).unwrap();
        let cluster = cluster();
        let target = Target::Image {
            pool: "rbd".into(),
            name: "new".into(),
        };
        let source = Source {
            folder: Path::new("s3://bucket/site/rbd/vm"),
            cluster: &cluster,
            identity: Some(Path::new("/root/backup key.txt")),
        };
        let mut notes = Vec::new();
        let lines = script(&source, &route, &target, &mut notes);
        assert!(
            lines.iter().all(|line| !line.starts_with("cd ")),
            "{lines:?}"
        );
        assert!(
            lines.contains(&format!(
                "#   s3://bucket/site/rbd/vm/vm@{S0}.full.tar.zst.age"
            )),
            "{lines:?}"
        );
        assert!(notes[0].contains("download them"), "{notes:?}");
        let import = lines.iter().find(|line| line.contains(" import ")).unwrap();
        assert_eq!(
            import,
            &format!(
                "age -d -i '/root/backup key.txt' vm@{S0}.full.tar.zst.age | zstd -dc | tar \
                 -xOf - | rbd --conf '/etc/ceph/my cluster.conf' --id backup import - rbd/new"
            )
        );
        let apply = lines.last().unwrap();
        assert!(
            apply.starts_with(&format!(
                "age -d -i '/root/backup key.txt' vm@{S1}.diff_from_{S0}.age | rbd"
            )),
            "{apply}"
        );

        // Without --identity, no script that would fail half-way.
        let source = Source {
            identity: None,
            ..source
        };
        let mut notes = Vec::new();
        assert!(script(&source, &route, &target, &mut notes).is_empty());
        assert!(notes[0].contains("--identity FILE"), "{notes:?}");
    }
}

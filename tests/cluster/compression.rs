//! Compressed backups: parallel gzip and zstd archives open with GNU tar, `gzip -t`/`zstd -t` and
//! Python's `tarfile`, give exactly what `rbd export`/`export-diff` give, keep the image's holes
//! as holes, and restore, list and verify like any chain.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::chains::*;
use crate::harness::*;

/// Runs a tool and fails the test with its stderr unless it succeeds.
fn run(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Extracts `archive` three ways (GNU tar, Python's tarfile, and after a test of the compressed
/// stream by its own tool) and returns the paths of the member each wrote.
fn extract_every_way(archive: &Path, member: &str, zstd: bool, into: &Path) -> Vec<PathBuf> {
    let archive = archive.to_str().unwrap();
    let (tester, tar_flags): (&str, &[&str]) = if zstd {
        ("zstd", &["--zstd", "-xf"])
    } else {
        ("gzip", &["-xzf"])
    };
    run(tester, &["-t", archive], Path::new("/"));
    let by_tar = into.join("tar");
    fs::create_dir_all(&by_tar).unwrap();
    let mut args = tar_flags.to_vec();
    args.push(archive);
    run("tar", &args, &by_tar);
    let mut paths = vec![by_tar.join(member)];
    if !zstd {
        // Python's tarfile reads gzip (zstd only from 3.14 on).
        let by_python = into.join("python");
        fs::create_dir_all(&by_python).unwrap();
        let script = "import sys, tarfile\nwith tarfile.open(sys.argv[1], 'r:gz') as t:\n    \
                      names = t.getnames()\n    assert len(names) == 1, names\n    \
                      t.extractall(sys.argv[2])\n";
        run(
            "python3",
            &["-c", script, archive, by_python.to_str().unwrap()],
            Path::new("/"),
        );
        paths.push(by_python.join(member));
    }
    paths
}

/// A full and a diff with `compress = <word>`, each extracted every way and compared with what
/// `rbd` writes for the same snapshots; the full, of a mostly empty image, extracts sparse.
fn full_and_diff_extract_identically(word: &str, zstd: bool) {
    let w = World::new();
    w.create_image("thin", 256 * MIB, 31);
    let conf = w.config(&format!(
        "images = thin\nbackup mode = incremental\ncompress = {word}\ncompress threads = 2"
    ));
    let run = w.backup(&conf).success();
    assert!(
        run.stdout.contains("Compress mode activated"),
        "{}",
        run.stdout
    );
    w.write_data("thin", 32);
    next_second();
    w.backup(&conf).success();
    w.assert_every_file_has_a_checksum("thin");
    let snaps = w.backup_snapshots("thin");
    let files = w.files("thin");
    let suffix = if zstd { ".tar.zst" } else { ".tar.gz" };
    assert_eq!(
        files,
        [
            format!("thin@{}.full{suffix}", snaps[0]),
            format!("thin@{}.diff_from_{}{suffix}", snaps[1], snaps[0]),
        ]
    );
    let full = w.export("thin", Some(&snaps[0]));
    let diff = rbd(&[
        "export-diff",
        "--from-snap",
        &snaps[0],
        &format!("{}@{}", w.spec("thin"), snaps[1]),
        "-",
    ]);
    for (name, expected) in files.iter().zip([&full, &diff]) {
        let member = name.strip_suffix(suffix).unwrap();
        let into = w.tmp.path().join(format!("x-{member}"));
        for path in extract_every_way(&w.image_dir("thin").join(name), member, zstd, &into) {
            assert!(
                same_bytes(&fs::read(&path).unwrap(), expected),
                "{} differs from rbd's stream",
                path.display()
            );
            if member.ends_with(".full") {
                // A few MiB of data in 256 MiB: holes stay holes.
                assert!(
                    allocated(&path) < 32 * MIB,
                    "{} is not sparse: {} bytes allocated",
                    path.display(),
                    allocated(&path)
                );
            }
        }
    }
    if zstd {
        // In zstd's seekable format (which zstd -t and tar read above): its seek table's magic
        // number ends each file.
        for name in &files {
            let bytes = fs::read(w.image_dir("thin").join(name)).unwrap();
            assert_eq!(
                bytes[bytes.len() - 4..],
                0x8F92_EAB1_u32.to_le_bytes(),
                "{name}"
            );
        }
    }
    let archive_size = fs::metadata(w.image_dir("thin").join(&files[0]))
        .unwrap()
        .len();
    assert!(
        archive_size < 16 * MIB,
        "{archive_size} bytes: the holes were compressed"
    );
}

#[test]
fn parallel_gzip_archives_extract_identically_and_sparse() {
    full_and_diff_extract_identically("yes", false);
}

#[test]
fn zstd_archives_extract_identically_and_sparse() {
    full_and_diff_extract_identically("zstd", true);
}

/// A `.tar.zst` chain is listed, verified and restored (to the cluster and to a file) like a
/// `.tar.gz` one; a full-mode run with a level and threads set works too.
#[test]
fn a_zstd_chain_lists_verifies_and_restores_bit_for_bit() {
    let w = World::new();
    w.create_image("vm", 24 * MIB, 7);
    let conf = w.config(
        "images = vm\nbackup mode = incremental\nwindow size = 7\nwindow unit = days\n\
         compress = zstd\ncompress level = 9",
    );
    for link in 0..3u64 {
        if link > 0 {
            w.write_data("vm", 70 + link);
            next_second();
        }
        let run = w.backup(&conf).success();
        // The original's line says True or False, as it always did; the detail is logged.
        assert!(run.stdout.contains("Compression: True\n"), "{}", run.stdout);
        assert!(
            run.stderr.contains("compress = zstd, files are .tar.zst"),
            "{}",
            run.stderr
        );
    }
    w.write_data("vm", 99);
    let snaps = w.backup_snapshots("vm");
    assert!(w.files("vm").iter().all(|f| f.ends_with(".tar.zst")));

    let list = with_conf(&w, &conf, &["list"]).success();
    assert!(list.stdout.contains(" zstd "), "{}", list.stdout);
    assert!(list.stdout.contains("3 restore point"), "{}", list.stdout);
    w.verify(&conf, &[]).success();

    for (index, snap) in snaps.iter().enumerate() {
        let source = w.export("vm", Some(snap));
        let target = format!("vm-at-{index}");
        w.restore(&conf, "vm")
            .into_image(&target)
            .at(snap)
            .run()
            .success();
        assert!(same_bytes(&w.export(&target, None), &source), "{target}");
        let file = w.tmp.path().join(format!("vm-at-{index}.raw"));
        w.restore(&conf, "vm")
            .into_file(&file)
            .at(snap)
            .run()
            .success();
        assert_eq!(file_sha256(&file), sha256(&source), "{}", file.display());
    }

    // A damaged .tar.zst is caught by verify.
    let full = w.image_dir("vm").join(&w.files("vm")[0]);
    let mut bytes = fs::read(&full).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&full, &bytes).unwrap();
    w.verify(&conf, &[]).code(1);

    // Full mode, gzip at level 1 on one thread: restored by hand with the stock tools.
    let w = World::new();
    w.create_image("fm", 16 * MIB, 5);
    let source = w.export("fm", None);
    let conf = w.config(
        "images = fm\nbackup mode = full\ncompress = on\ncompress level = 1\n\
         compress threads = 1",
    );
    w.backup(&conf).success();
    let name = w.files("fm").remove(0);
    let member = name.strip_suffix(".tar.gz").unwrap().to_string();
    let path = untar(&w.image_dir("fm").join(&name), &w.tmp.path().join("fm")).join(&member);
    assert!(same_bytes(&fs::read(&path).unwrap(), &source));
}

#[test]
fn bad_compress_level_and_threads_are_one_line_errors() {
    let w = World::new();
    for (extra, expected) in [
        (
            "compress = yes\ncompress level = 12",
            "compress level: 12 is not a gzip level (expected 1 to 9; 6 when not set)",
        ),
        (
            "compress = zstd\ncompress level = 20",
            "compress level: 20 is not a zstd level (expected 1 to 19; 3 when not set)",
        ),
        (
            "compress = yes\ncompress threads = 0",
            "compress threads: invalid value '0' (expected a whole number of threads from 1 to \
             256; leave it out to use every core)",
        ),
    ] {
        let conf = w.config(&format!("images = a\nbackup mode = full\n{extra}"));
        let run = w.backup(&conf).code(2);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        assert!(lines[0].ends_with(expected), "{}", run.stderr);
        assert!(lines[0].starts_with("error: "), "{}", run.stderr);
    }
}

/// Runs `program args file` and returns what it writes on stdout.
fn filter(program: &str, args: &[&str], file: &Path) -> Vec<u8> {
    let out = Command::new(program).args(args).arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The tar stream inside each backup file, compressed again the way other tools write it (in
/// pieces, each its own gzip member or zstd frame, or by `pigz` / `zstd -T2`), under the same
/// name and with a new checksum file: `restore` gives the image bit for bit and `verify`
/// passes. Cut short or with bytes after its end, the same file is refused.
fn recompressed_chains_restore_bit_for_bit(word: &str, zstd: bool, tools: &[&[&str]]) {
    let w = World::new();
    w.create_image("vm", 24 * MIB, 11);
    let conf = w.config(&format!(
        "images = vm\nbackup mode = incremental\nwindow size = 7\nwindow unit = days\n\
         compress = {word}"
    ));
    w.backup(&conf).success();
    w.write_data("vm", 12);
    next_second();
    w.backup(&conf).success();
    let snap = w.backup_snapshots("vm").pop().unwrap();
    let source = w.export("vm", Some(&snap));
    let dir = w.image_dir("vm");
    let decompress: &[&str] = if zstd {
        &["zstd", "-dc"]
    } else {
        &["gzip", "-dc"]
    };
    let originals: Vec<(String, Vec<u8>)> = w
        .files("vm")
        .into_iter()
        .map(|name| {
            let tar = filter(decompress[0], &decompress[1..], &dir.join(&name));
            (name, tar)
        })
        .collect();
    let file_out = w.tmp.path().join("vm.raw");
    let restore = || {
        let _ = fs::remove_file(&file_out);
        w.restore(&conf, "vm").into_file(&file_out).at(&snap).run()
    };
    for tool in tools {
        for (name, tar) in &originals {
            // Three pieces cut mid-block, each compressed on its own and concatenated; or the
            // whole stream by a parallel compressor.
            let pieces: Vec<&[u8]> = if tool.is_empty() {
                let third = tar.len() / 3 + 77;
                vec![&tar[..third], &tar[third..2 * third], &tar[2 * third..]]
            } else {
                vec![&tar[..]]
            };
            let mut bytes = Vec::new();
            for piece in pieces {
                let raw = w.tmp.path().join("piece");
                fs::write(&raw, piece).unwrap();
                let (program, args): (&str, &[&str]) = match tool.split_first() {
                    Some((program, args)) => (program, args),
                    None if zstd => ("zstd", &["-q", "-c"]),
                    None => ("gzip", &["-c"]),
                };
                bytes.extend(filter(program, args, &raw));
            }
            fs::write(dir.join(name), &bytes).unwrap();
            let digest = sha256(&bytes);
            fs::write(
                dir.join(format!("{name}.sha256")),
                cephbackup::test_support::checksum_line(&digest, name),
            )
            .unwrap();
        }
        w.assert_checksums("vm");
        w.verify(&conf, &[]).success();
        restore().success();
        assert_eq!(file_sha256(&file_out), sha256(&source), "{tool:?}");
    }
    // Still refused, its checksum file made to match each time: the newest file cut short, with
    // garbage after it, or with a well-formed gzip member (zstd frame) after the archive's end.
    let (name, _) = originals.last().unwrap();
    let path = dir.join(name);
    let whole = fs::read(&path).unwrap();
    let extra = {
        let raw = w.tmp.path().join("extra");
        fs::write(&raw, b"not a tar block").unwrap();
        let (program, args): (&str, &[&str]) = if zstd {
            ("zstd", &["-q", "-c"])
        } else {
            ("gzip", &["-c"])
        };
        filter(program, args, &raw)
    };
    for (what, bytes) in [
        ("cut short", whole[..whole.len() - 9].to_vec()),
        ("garbage after it", [&whole[..], b"garbage"].concat()),
        ("another member after it", [&whole[..], &extra[..]].concat()),
    ] {
        fs::write(&path, &bytes).unwrap();
        fs::write(
            dir.join(format!("{name}.sha256")),
            cephbackup::test_support::checksum_line(&sha256(&bytes), name),
        )
        .unwrap();
        let run = w.verify(&conf, &[]).code(1);
        assert!(run.stderr.contains(name.as_str()), "{what}: {}", run.stderr);
        let run = restore();
        assert_ne!(run.code, 0, "{what}: restored");
        assert!(run.stderr.contains(name.as_str()), "{what}: {}", run.stderr);
    }
}

#[test]
fn multi_member_gzip_archives_restore_bit_for_bit() {
    recompressed_chains_restore_bit_for_bit("on", false, &[&[], &["pigz", "-p", "2", "-c"]]);
}

#[test]
fn multi_frame_zstd_archives_restore_bit_for_bit() {
    recompressed_chains_restore_bit_for_bit("zstd", true, &[&[], &["zstd", "-q", "-T2", "-c"]]);
}

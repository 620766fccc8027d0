//! `cephbackup verify`: a clean chain is clean, each kind of damage is one line naming its file
//! with a non-zero exit, and `--source` compares a rebuilt point with the cluster.

use std::fs;
use std::path::{Path, PathBuf};

use crate::chains::*;
use crate::harness::*;

fn rewrite_checksum(path: &Path) {
    let name = path.file_name().unwrap().to_str().unwrap();
    let line = format!("{}  {name}\n", file_sha256(path));
    fs::write(path.with_file_name(format!("{name}.sha256")), line).unwrap();
}

fn flip(path: &Path, at: usize) {
    let mut data = fs::read(path).unwrap();
    data[at] ^= 0x20;
    fs::write(path, data).unwrap();
}

#[test]
fn verify_reports_each_kind_of_damage_and_a_clean_chain_as_clean() {
    let w = World::new();
    let (conf, snaps) = backed_up_chain(&w, "vm", 4, false);
    let name = |i: usize| match i {
        0 => format!("vm@{}.full", snaps[0]),
        _ => format!("vm@{}.diff_from_{}", snaps[i], snaps[i - 1]),
    };

    let run = w.verify(&conf, &[]).success();
    let summary = run.stdout.lines().last().unwrap();
    let read = cephbackup::test_support::human_bytes(
        (0..4)
            .map(|i| fs::metadata(w.image_dir("vm").join(name(i))).unwrap().len())
            .sum(),
    );
    assert!(
        summary.starts_with(&format!(
            "Verified 4 file(s) of 1 image(s), {read} read in "
        )) && summary.ends_with(" s: no problems"),
        "{summary}"
    );
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);

    each_kind_of_damage_is_one_error(&w, &name);
    a_missing_checksum_file_is_a_warning_or_with_strict_an_error(&w, &name(3));
}

type Damage = Box<dyn Fn(&Path)>;

/// Each kind of damage, done to a copy of the backups of `vm` (whose files `name` names, oldest
/// first), makes verify exit 1 with one line, an error naming the file.
fn each_kind_of_damage_is_one_error(w: &World, name: &dyn Fn(usize) -> String) {
    let cases: Vec<(&str, Damage, String, &str)> = vec![
        (
            "a truncated diff",
            Box::new({
                let n = name(2);
                move |dir: &Path| {
                    let path = dir.join(&n);
                    let data = fs::read(&path).unwrap();
                    fs::write(&path, &data[..data.len() - 10]).unwrap();
                }
            }),
            name(2),
            "stream ends at byte",
        ),
        (
            "a flipped byte in the full",
            Box::new({
                let n = name(0);
                move |dir: &Path| flip(&dir.join(&n), 3 * 1024 * 1024 + 17)
            }),
            name(0),
            "checksum mismatch",
        ),
        (
            "a flipped byte in a diff's data",
            Box::new({
                let n = name(1);
                move |dir: &Path| {
                    let path = dir.join(&n);
                    flip(&path, first_payload_byte(&fs::read(&path).unwrap()));
                }
            }),
            name(1),
            "checksum mismatch",
        ),
        (
            "a missing link",
            Box::new({
                let n = name(2);
                move |dir: &Path| {
                    fs::remove_file(dir.join(&n)).unwrap();
                    fs::remove_file(dir.join(format!("{n}.sha256"))).unwrap();
                }
            }),
            name(3),
            "(missing link): not restorable",
        ),
        (
            "a diff whose snapshot names do not match its file",
            Box::new({
                let (n1, n3) = (name(1), name(3));
                move |dir: &Path| {
                    fs::copy(dir.join(&n1), dir.join(&n3)).unwrap();
                    rewrite_checksum(&dir.join(&n3));
                }
            }),
            name(3),
            "but the file name says from",
        ),
    ];
    for (number, (what, damage, file, message)) in cases.into_iter().enumerate() {
        let dest = copy_backups(w, &format!("damaged-{number}"));
        let dir = dest.join(&w.pool).join("vm");
        damage(&dir);
        let damaged_conf = config_at(w, &format!("damaged-{number}.conf"), &dest, &cluster().conf);
        let run = w.verify(&damaged_conf, &[]).code(1);
        let problems: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with("error: ") || l.starts_with("warning: "))
            .collect();
        assert_eq!(problems.len(), 1, "{what}: {}", run.stdout);
        let expected = format!("error: {}: ", dir.join(&file).display());
        assert!(
            problems[0].starts_with(&expected),
            "{what}: {}",
            problems[0]
        );
        assert!(problems[0].contains(message), "{what}: {}", problems[0]);
    }
}

/// A missing checksum file (of `newest`, in a copy of the backups of `vm`): a warning naming the
/// file (files from the original have none), an error with --strict.
fn a_missing_checksum_file_is_a_warning_or_with_strict_an_error(w: &World, newest: &str) {
    let dest = copy_backups(w, "no-sidecar");
    let dir = dest.join(&w.pool).join("vm");
    fs::remove_file(dir.join(format!("{newest}.sha256"))).unwrap();
    let no_sidecar = config_at(w, "no-sidecar.conf", &dest, &cluster().conf);
    let run = w.verify(&no_sidecar, &[]).success();
    let line = format!(
        "warning: {}: no checksum file {newest}.sha256",
        dir.join(newest).display(),
    );
    assert!(run.stdout.contains(&line), "{}", run.stdout);
    assert!(
        run.stdout.ends_with("no errors, 1 warning(s)\n"),
        "{}",
        run.stdout
    );
    let run = w.verify(&no_sidecar, &["--strict"]).code(1);
    assert!(
        run.stdout.contains(&line.replacen("warning", "error", 1)),
        "{}",
        run.stdout
    );
}

#[test]
fn verify_source_compares_the_rebuilt_point_with_the_cluster() {
    let w = World::new();
    let (conf, snaps) = backed_up_chain(&w, "vm", 3, true);
    let latest = snaps.last().unwrap();
    let run = w.verify(&conf, &["--source"]).success();
    let sha = sha256(&w.export("vm", Some(latest)));
    assert!(
        run.stdout.contains(&format!(
            "ok: {}/vm@{latest}: rebuilt from the backups, same SHA-256 as rbd export of the snapshot ({sha})",
            w.pool
        )),
        "{}",
        run.stdout
    );

    // Once the newest snapshot is gone from the cluster, the newest one still there is used.
    rbd(&["snap", "rm", &format!("{}@{latest}", w.spec("vm"))]);
    let json = w.verify(&conf, &["--source", "--json"]).code(0).json();
    assert_eq!(json["ok"], true);
    let source = &json["images"][0]["source"];
    assert_eq!(source["snapshot"], snaps[1].as_str());
    assert_eq!(
        source["cluster_sha256"],
        sha256(&w.export("vm", Some(&snaps[1])))
    );
    assert_eq!(source["matches"], true);

    // A diff changed together with its checksum file passes every offline check; only the
    // comparison with the cluster can tell.
    let dest = copy_backups(&w, "forged");
    let dir: PathBuf = dest.join(&w.pool).join("vm");
    let diff = format!("vm@{}.diff_from_{}", snaps[1], snaps[0]);
    let archive = dir.join(format!("{diff}.tar.gz"));
    let unpacked = untar(&archive, &w.tmp.path().join("forged-unpacked")).join(&diff);
    flip(&unpacked, first_payload_byte(&fs::read(&unpacked).unwrap()));
    fs::remove_file(&archive).unwrap();
    fs::rename(&unpacked, dir.join(&diff)).unwrap();
    fs::remove_file(dir.join(format!("{diff}.tar.gz.sha256"))).unwrap();
    rewrite_checksum(&dir.join(&diff));
    let forged = config_at(&w, "forged.conf", &dest, &cluster().conf);
    w.verify(&forged, &[]).success();
    let run = w.verify(&forged, &["--source"]).code(1);
    assert!(
        run.stdout.contains(&format!(
            "error: {}/vm@{}: the image rebuilt from the backups (SHA-256 ",
            w.pool, snaps[1]
        )),
        "{}",
        run.stdout
    );
    let json = w.verify(&forged, &["--source", "--json"]).code(1).json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["errors"], 1);
    assert_eq!(json["images"][0]["source"]["matches"], false);
}

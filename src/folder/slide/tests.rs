use super::*;
use crate::folder::format::diffstream::apply_to_file;
use crate::folder::naming::SnapName;
use crate::test_fixtures::{
    diff_stream, names_in, read_raw_at, sha256, write_with_checksum, Rec, S0, S1, S2, S3,
};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

const KIB: u64 = 1024;

/// The record key the tests seal markers with.
fn key() -> SealKey {
    SealKey::new([3; seal::KEY_BYTES])
}
const MIB: u64 = 1 << 20;
const SNAPS: [&str; 4] = [S0, S1, S2, S3];

fn patterned(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| i.to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// A folder holding a full backup of SNAPS[0] and a diff to each later snapshot, each with its
/// checksum file; `compressed` stores them all as archives.
struct Folder {
    dir: tempfile::TempDir,
    base: Vec<u8>,
    streams: Vec<Vec<u8>>,
    compressed: bool,
}

impl Folder {
    fn new(base: Vec<u8>, streams: Vec<Vec<u8>>, compressed: bool) -> Folder {
        let folder = Folder {
            dir: tempfile::tempdir().unwrap(),
            base,
            streams,
            compressed,
        };
        folder.store(&folder.full_name(), &folder.base.clone(), true);
        for (index, stream) in folder.streams.iter().enumerate() {
            folder.store(&folder.diff_name(index), stream, false);
        }
        folder
    }

    fn snap(index: usize) -> SnapName {
        SnapName::parse(SNAPS[index]).unwrap()
    }

    fn full_name(&self) -> String {
        BackupFile::full(Folder::snap(0), self.compressed).file_name("vm")
    }

    fn diff_name(&self, index: usize) -> String {
        BackupFile::diff(
            Folder::snap(index),
            Folder::snap(index + 1),
            self.compressed,
        )
        .file_name("vm")
    }

    fn diff_names(&self) -> Vec<String> {
        (0..self.streams.len()).map(|i| self.diff_name(i)).collect()
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self, name: &str, raw: &[u8], full: bool) {
        let bytes = if self.compressed {
            let mut out = tempfile::tempfile().unwrap();
            let member = Member {
                name: name.strip_suffix(".tar.gz").unwrap(),
                size: raw.len() as u64,
                mtime: Folder::snap(0).taken(),
                sparse: None,
            };
            let gzip = write::Compressor::new(Compression::Gzip, None, Some(1)).unwrap();
            write::write_archive(&mut &raw[..], &member, &gzip, &mut out).unwrap();
            out.rewind().unwrap();
            let mut bytes = Vec::new();
            out.read_to_end(&mut bytes).unwrap();
            bytes
        } else {
            raw.to_vec()
        };
        let _ = full;
        write_with_checksum(self.dir.path(), name, &bytes);
    }

    /// What `rbd export` of the last snapshot holds: the base with every diff applied.
    fn expected(&self) -> Vec<u8> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&self.base).unwrap();
        for stream in &self.streams {
            apply_to_file(&stream[..], &mut file).unwrap();
        }
        file.rewind().unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    fn target(&self, compressed: bool) -> BackupFile {
        BackupFile::full(Folder::snap(self.streams.len()), compressed)
    }

    fn build(&self, compressed: bool) -> BuildOutcome {
        let target = self.target(compressed);
        // As a section that compresses with this kind would decide it: the kind's defaults.
        let compressor = Compressor::new(target.compression, None, None);
        build(
            &LocalFolder::at(self.dir.path()),
            "vm",
            &target,
            &self.full_name(),
            &self.diff_names(),
            compressor.as_ref(),
            &key(),
        )
        .unwrap()
    }

    /// The raw image of the file `name`, read and checked like any backup.
    fn raw_of(&self, name: &str, compressed: bool) -> Vec<u8> {
        let recorded = read::recorded_digest(&LocalFolder::at(self.dir.path()), name).unwrap();
        let (raw, facts) = read_raw_at(
            &self.path(name),
            Compression::from(compressed),
            &Limit::absolute(),
            |r| {
                let mut raw = Vec::new();
                r.read_to_end(&mut raw)?;
                Ok(raw)
            },
        )
        .unwrap();
        assert_eq!(recorded.as_deref(), Some(facts.sha256.as_str()), "{name}");
        raw
    }

    fn names(&self) -> Vec<String> {
        names_in(self.dir.path())
    }
}

/// Diff chains that grow and shrink the image, zero ranges and write past the old end.
/// A named base image and the diff streams laid over it.
type Chain = (&'static str, Vec<u8>, Vec<Vec<u8>>);

fn chains() -> Vec<Chain> {
    let (s0, s1, s2, s3) = (SNAPS[0], SNAPS[1], SNAPS[2], SNAPS[3]);
    let base = {
        let mut base = patterned(3 * MIB, 7);
        // A hole in the middle, as an export of a thin image has.
        let mib = usize::try_from(MIB).unwrap();
        base[mib..2 * mib].fill(0);
        base
    };
    vec![
        (
            "grow: writes past the old end, a zeroed range inside",
            base.clone(),
            vec![diff_stream(
                s0,
                s1,
                5 * MIB + 100,
                &[
                    Rec::W(10, vec![9u8; 5000]),
                    Rec::Z(64 * KIB, 300 * KIB),
                    Rec::W(3 * MIB - 10, patterned(20, 3)),
                    Rec::W(4 * MIB, patterned(MIB, 5)),
                    Rec::Z(5 * MIB, 100),
                ],
            )],
        ),
        (
            "shrink: the tail goes, a write and a zero record remain inside",
            base.clone(),
            vec![diff_stream(
                s0,
                s1,
                MIB + 12345,
                &[Rec::W(4096, vec![0u8; 8192]), Rec::Z(MIB, 12345)],
            )],
        ),
        (
            "no records at all, the same size",
            base.clone(),
            vec![diff_stream(s0, s1, 3 * MIB, &[])],
        ),
        (
            "three diffs: shrink, grow back (the cut part reads as zeros), write at the end",
            base,
            vec![
                diff_stream(s0, s1, MIB, &[Rec::W(0, vec![5u8; 100])]),
                diff_stream(s1, s2, 4 * MIB, &[Rec::W(3 * MIB, vec![6u8; 4096])]),
                diff_stream(
                    s2,
                    s3,
                    4 * MIB,
                    &[Rec::Z(0, 4096), Rec::W(4 * MIB - 1, vec![8u8])],
                ),
            ],
        ),
    ]
}

#[test]
fn builds_are_what_the_diffs_applied_to_the_base_give_in_every_format() {
    for (what, base, streams) in chains() {
        for (stored, target) in [(false, false), (true, true), (false, true), (true, false)] {
            let folder = Folder::new(base.clone(), streams.clone(), stored);
            let expected = folder.expected();
            let outcome = folder.build(target);
            let name = folder.target(target).file_name("vm");
            let BuildOutcome::Built { sha256, .. } = outcome else {
                panic!("{what} ({stored}, {target}): {outcome:?}")
            };
            let raw = folder.raw_of(&name, target);
            assert!(
                raw == expected,
                "{what} ({stored} -> {target}): bytes differ"
            );
            let mut names = folder.names();
            names.retain(|n| {
                !folder
                    .diff_names()
                    .iter()
                    .any(|d| n.starts_with(d.as_str()))
            });
            // The old base is consumed; its checksum file is the plan's to remove.
            assert_eq!(
                names,
                [
                    format!("{}.sha256", folder.full_name()),
                    name.clone(),
                    format!("{name}.sha256"),
                ],
                "{what} ({stored} -> {target})"
            );
            let recorded =
                read::recorded_digest(&LocalFolder::at(folder.dir.path()), &name).unwrap();
            assert_eq!(recorded, Some(sha256), "{what}");
        }
    }
}

#[test]
fn a_build_in_place_keeps_holes() {
    let (_, base, streams) = chains().remove(1);
    let folder = Folder::new(base, streams, false);
    // Written densely by the test: make the base sparse the way the tool writes it.
    let sparse = folder.path("sparse");
    {
        let file = File::create(&sparse).unwrap();
        let mut writer = crate::folder::format::sparse::SparseWriter::new(&file).unwrap();
        writer.write_all(&folder.base).unwrap();
        writer.finish().unwrap();
    }
    std::fs::rename(&sparse, folder.path(&folder.full_name())).unwrap();
    assert!(matches!(folder.build(false), BuildOutcome::Built { .. }));
    let name = folder.target(false).file_name("vm");
    let allocated = std::fs::metadata(folder.path(&name)).unwrap().blocks() * 512;
    // MIB + 12345 bytes, of which 8 KiB were written as zeros and 12345 zeroed.
    assert!(allocated <= MIB, "{allocated} bytes allocated");
    assert!(folder.raw_of(&name, false) == folder.expected());
}

/// What a run killed after the marker, the rename and all the diffs' writes (but before it
/// could count them, when `applied` is short) leaves behind: the marker of `folder`'s build, as
/// written (sealed under [`key`]), and the working file.
fn interrupted(folder: &Folder, streams: &[Vec<u8>], applied: usize) -> Marker {
    let dir = folder.dir.path();
    let target = folder.target(false).file_name("vm");
    let proven: Vec<ProvenDiff> = folder
        .diff_names()
        .iter()
        .map(|n| {
            let file = BackupFile::parse("vm", n).unwrap();
            prove_diff(&LocalFolder::at(dir), &stored(n, file)).unwrap()
        })
        .collect();
    let marker = Marker {
        format: FORMAT,
        image: "vm".into(),
        old: folder.full_name(),
        old_sha256: sha256(&folder.base),
        working: working_name(&target),
        target,
        size: proven.last().unwrap().size,
        diffs: proven
            .iter()
            .map(|d| Link {
                name: d.stored.name.clone(),
                sha256: d.sha256.clone(),
            })
            .collect(),
        applied,
        new_sha256: Some(sha256(&folder.expected())),
    };
    write_marker(&LocalFolder::at(dir), &marker, &key()).unwrap();
    let working = folder.path(&marker.working);
    std::fs::rename(folder.path(&folder.full_name()), &working).unwrap();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&working)
        .unwrap();
    for stream in streams {
        apply_to_file(&stream[..], &mut file).unwrap();
    }
    marker
}

#[test]
fn an_interrupted_build_in_place_is_finished_by_applying_the_diffs_again() {
    for (what, base, streams) in chains() {
        for applied in 0..=streams.len() {
            let folder = Folder::new(base.clone(), streams.clone(), false);
            let dir = folder.dir.path();
            let marker = interrupted(&folder, &streams, applied);
            let working = folder.path(&marker.working);
            let mode = std::fs::metadata(folder.path(SLIDE_MARKER)).unwrap().mode();
            assert_eq!(mode & 0o777, 0o600);
            let outcome = finish(
                &LocalFolder::at(dir),
                "vm",
                &folder.target(false),
                &marker.working,
                Some(&key()),
            )
            .unwrap();
            assert!(
                matches!(outcome, BuildOutcome::Built { .. }),
                "{what}: {outcome:?}"
            );
            assert!(
                folder.raw_of(&marker.target, false) == folder.expected(),
                "{what}, {applied}"
            );
            assert!(!folder.path(SLIDE_MARKER).exists());
            assert!(!working.exists());
        }
    }
}

#[test]
fn a_resumed_build_proves_its_working_file_and_its_marker() {
    type Spoil = fn(&Folder, &Marker);
    let cases: [(&str, Spoil, &str); 5] = [
        (
            "a byte of the working file changed where no diff writes",
            |f, m| {
                let file = OpenOptions::new()
                    .write(true)
                    .open(f.path(&m.working))
                    .unwrap();
                use std::os::unix::fs::FileExt;
                file.write_all_at(b"X", 2 * MIB + 17).unwrap();
            },
            "was changed while no run held it",
        ),
        (
            "the working file truncated",
            |f, m| {
                let file = OpenOptions::new()
                    .write(true)
                    .open(f.path(&m.working))
                    .unwrap();
                file.set_len(MIB).unwrap();
            },
            "was changed while no run held it",
        ),
        (
            "the marker sealed under another host's key",
            |f, m| {
                let other = SealKey::new([4; seal::KEY_BYTES]);
                write_marker(&LocalFolder::at(f.dir.path()), m, &other).unwrap();
            },
            "its seal does not match",
        ),
        (
            "the marker rewritten without a seal",
            |f, m| std::fs::write(f.path(SLIDE_MARKER), serde_json::to_vec(m).unwrap()).unwrap(),
            "carries no seal",
        ),
        (
            "a sealed marker that records no checksum of the finished file",
            |f, m| {
                let mut m = m.clone();
                m.new_sha256 = None;
                write_marker(&LocalFolder::at(f.dir.path()), &m, &key()).unwrap();
            },
            "records no checksum of the finished file",
        ),
    ];
    // The grow chain: its diff writes nowhere near 2 MiB + 17.
    let (_, base, streams) = chains().remove(0);
    for (what, spoil, says) in cases {
        let folder = Folder::new(base.clone(), streams.clone(), false);
        let marker = interrupted(&folder, &streams, 1);
        spoil(&folder, &marker);
        let target = folder.target(false);
        let outcome = finish(
            &LocalFolder::at(folder.dir.path()),
            "vm",
            &target,
            &marker.working,
            Some(&key()),
        );
        let Ok(BuildOutcome::Unproven(why)) = outcome else {
            panic!("{what}: {outcome:?}")
        };
        assert!(why.contains(says), "{what}: {why}");
        // Nothing was given the target's name; the caller exports it and discards the build.
        assert!(!folder.path(&marker.target).exists(), "{what}");
        assert!(
            !folder.path(&format!("{}.sha256", marker.target)).exists(),
            "{what}"
        );
        // Without a key, nothing is believed either.
        let outcome = finish(
            &LocalFolder::at(folder.dir.path()),
            "vm",
            &target,
            &marker.working,
            None,
        )
        .unwrap();
        assert!(
            matches!(outcome, BuildOutcome::Unproven(_)),
            "{what}: {outcome:?}"
        );
    }
}

#[test]
fn files_that_cannot_be_proven_are_left_alone() {
    let (_, base, streams) = chains().remove(0);
    type Spoil = fn(&Folder);
    let cases: [(&str, Spoil, &str); 5] = [
        (
            "a diff without a checksum file (the original's)",
            |f| std::fs::remove_file(f.path(&format!("{}.sha256", f.diff_name(0)))).unwrap(),
            "has no checksum file",
        ),
        (
            "a diff whose checksum is wrong",
            |f| {
                let name = f.diff_name(0);
                let line = write::checksum_line(&"0".repeat(64), &name);
                std::fs::write(f.path(&format!("{name}.sha256")), line).unwrap();
            },
            "checksum mismatch",
        ),
        (
            "an old base whose checksum is wrong",
            |f| {
                let name = f.full_name();
                let line = write::checksum_line(&"0".repeat(64), &name);
                std::fs::write(f.path(&format!("{name}.sha256")), line).unwrap();
            },
            "checksum mismatch",
        ),
        (
            "a missing old base",
            |f| std::fs::remove_file(f.path(&f.full_name())).unwrap(),
            "",
        ),
        (
            "a diff that is a symlink",
            |f| {
                let name = f.diff_name(0);
                std::fs::rename(f.path(&name), f.path("elsewhere")).unwrap();
                std::os::unix::fs::symlink(f.path("elsewhere"), f.path(&name)).unwrap();
            },
            "symbolic link",
        ),
    ];
    for (what, spoil, says) in cases {
        for target in [false, true] {
            let folder = Folder::new(base.clone(), streams.clone(), false);
            spoil(&folder);
            let before = folder.names();
            let outcome = folder.build(target);
            let BuildOutcome::Unproven(why) = outcome else {
                panic!("{what}: {outcome:?}")
            };
            assert!(why.contains(says), "{what}: {why}");
            assert_eq!(folder.names(), before, "{what}: nothing changed");
            if folder.path(&folder.full_name()).exists() {
                assert!(std::fs::read(folder.path(&folder.full_name())).unwrap() == folder.base);
            }
        }
    }
}

#[test]
fn a_marker_that_is_not_ours_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let file = BackupFile::full(Folder::snap(1), false);
    let working = working_name(&file.file_name("vm"));
    std::fs::write(dir.path().join(&working), b"x").unwrap();
    let assert_unproven = |says: &str| {
        let outcome = finish(
            &LocalFolder::at(dir.path()),
            "vm",
            &file,
            &working,
            Some(&key()),
        )
        .unwrap();
        assert!(
            matches!(&outcome, BuildOutcome::Unproven(why) if why.contains(says)),
            "{outcome:?}"
        );
    };
    for (text, says) in [
        ("{", "not readable"),
        (
            r#"{"format":1,"image":"vm","old":"a","old_sha256":"b","working":"w","target":"t","size":1,"diffs":[],"applied":0}"#,
            "carries no seal",
        ),
    ] {
        std::fs::write(dir.path().join(SLIDE_MARKER), text).unwrap();
        assert_unproven(says);
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join(SLIDE_MARKER),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    assert_unproven("mode");
    discard(
        &LocalFolder::at(dir.path()),
        &working,
        &file.file_name("vm"),
    )
    .unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_build_whose_target_was_written_meanwhile_is_cleared_not_finished() {
    let dir = tempfile::tempdir().unwrap();
    let file = BackupFile::full(Folder::snap(1), false);
    let target = file.file_name("vm");
    let working = working_name(&target);
    for name in [&working, &SLIDE_MARKER.to_string(), &target] {
        std::fs::write(dir.path().join(name), name.as_bytes()).unwrap();
    }
    let outcome = finish(
        &LocalFolder::at(dir.path()),
        "vm",
        &file,
        &working,
        Some(&key()),
    )
    .unwrap();
    assert_eq!(outcome, BuildOutcome::Obsolete);
    assert_eq!(names_in(dir.path()), std::slice::from_ref(&target));
    assert_eq!(
        std::fs::read(dir.path().join(&target)).unwrap(),
        target.as_bytes()
    );
}

//! Helpers shared by the list, restore and verify tests: chains written by the real tool, chains
//! written the way the original tool wrote them, and hashing.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::harness::*;

/// Where the first written byte of a diff's data is.
pub fn first_payload_byte(diff: &[u8]) -> usize {
    let mut reader = cephbackup::test_support::DiffReader::new(diff).unwrap();
    while let Some(record) = reader.next_record().unwrap() {
        if let cephbackup::test_support::Record::Write { .. } = record {
            return usize::try_from(reader.position()).unwrap();
        }
    }
    panic!("the diff writes nothing");
}

/// Backs up `image` (created here) `links` times with the real tool, changing its data between
/// runs: a full then diffs. Returns the config and the snapshot names, oldest first.
pub fn backed_up_chain(
    w: &World,
    image: &str,
    links: usize,
    compress: bool,
) -> (PathBuf, Vec<String>) {
    w.create_image(image, 24 * MIB, 7);
    let conf = w.config(&format!(
        "images = {image}\nbackup mode = incremental\nwindow size = 7\nwindow unit = days\n\
         compress = {compress}"
    ));
    for link in 0..links {
        if link > 0 {
            w.write_data(image, 70 + link as u64);
            next_second();
        }
        w.backup(&conf).success();
    }
    // Changes after the last backup must not show up in any restore.
    w.write_data(image, 99);
    let snaps = w.backup_snapshots(image);
    assert_eq!(snaps.len(), links, "{snaps:?}");
    (conf, snaps)
}

/// A config for this test's pool at another destination (for copies of a backup folder), or with
/// a cluster that does not exist (to prove a command needs none).
pub fn config_at(w: &World, name: &str, dest: &Path, ceph_conf: &Path) -> PathBuf {
    let path = w.tmp.path().join(name);
    fs::write(
        &path,
        format!(
            "[{}]\nimages = *\nbackup mode = incremental\ndestination directory = {}\n\
             ceph config = {}\n",
            w.pool,
            dest.display(),
            ceph_conf.display()
        ),
    )
    .unwrap();
    path
}

/// Copies this test's backup folder to a fresh destination and returns it.
pub fn copy_backups(w: &World, name: &str) -> PathBuf {
    let dest = w.tmp.path().join(name);
    let out = Command::new("cp")
        .arg("-a")
        .arg(&w.dest)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    dest
}

/// Compresses a file the way the original did: `tar Scvfz X.tar.gz /absolute/path/X`, then
/// `rm X`. The member is the absolute path without its leading `/`, possibly a sparse member.
pub fn compress_like_the_original(path: &Path) {
    assert!(path.is_absolute());
    let archive = format!("{}.tar.gz", path.display());
    let out = Command::new("tar")
        .arg("Scvfz")
        .arg(&archive)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::remove_file(path).unwrap();
    let member = tar_list(Path::new(&archive)).join("\n");
    assert_eq!(member, path.display().to_string().trim_start_matches('/'));
}

pub fn sha256(data: &[u8]) -> String {
    hex(Sha256::digest(data).as_slice())
}

/// SHA-256 of a file, read in chunks.
pub fn file_sha256(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(hasher.finalize().as_slice())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes a file really occupies on disk.
pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// The images of this test's pool.
pub fn images(w: &World) -> Vec<String> {
    let listed: Vec<String> =
        serde_json::from_slice(&rbd(&["ls", "--format", "json", &w.pool])).unwrap();
    let mut listed = listed;
    listed.sort();
    listed
}

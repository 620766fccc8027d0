//! The S3 door against a real radosgw: `scripts/ceph-sandbox` starts a throwaway cluster and a
//! gateway beside it once for these tests (about 20 s), stopped when this process ends. The
//! memory door's scenario runs on it: a chain scanned, bounded and rebuilt bit for bit, read
//! through the door alone.

#![allow(clippy::disallowed_methods)] // the tests start the sandbox cluster

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use super::*;
use crate::folder::door::tests::{chain, rebuilt, SIZE};
use crate::folder::read::{self, Limits};
use crate::test_fixtures::{diff_file, S1, S2};

struct Gateway {
    endpoint: String,
    key: String,
    secret: String,
}

/// The sandbox's gateway, started on first use.
fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-sandbox");
        let dir = tempfile::Builder::new()
            .prefix("cephbackup-s3-door-")
            .tempdir()
            .unwrap()
            .keep();
        let run = |args: &[&str]| {
            let out = Command::new(&script)
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "ceph-sandbox {args:?} failed");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let dir_arg = dir.to_str().unwrap();
        run(&["start", dir_arg, &std::process::id().to_string()]);
        let endpoint = run(&["rgw", dir_arg]);
        let credentials = std::fs::read_to_string(dir.join("rgw/credentials")).unwrap();
        let value = |key: &str| {
            credentials
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
                .unwrap()
                .trim()
                .to_string()
        };
        Gateway {
            endpoint,
            key: value("aws_access_key_id"),
            secret: value("aws_secret_access_key"),
        }
    })
}

/// A new bucket of the gateway, named `name`.
fn bucket(name: &str) -> Arc<S3Bucket> {
    let gw = gateway();
    let credentials = Credentials::new(gw.key.clone(), gw.secret.clone());
    let bucket = S3Bucket::new(&gw.endpoint, name, "us-east-1", credentials).unwrap();
    let url = bucket
        .bucket
        .create_bucket(&bucket.credentials)
        .sign(SIGNED_FOR);
    checked(bucket.agent.put(url.as_str()).send_empty()).unwrap();
    Arc::new(bucket)
}

/// The memory door's chain, copied into `folder` object by object.
fn chain_in(folder: &S3Folder) -> Vec<u8> {
    let (memory, image) = chain();
    for (name, bytes) in memory.files() {
        folder.put(&name, &bytes, Sharing::Folder).unwrap();
    }
    image
}

#[test]
fn a_chain_in_a_bucket_is_scanned_bounded_and_rebuilt_bit_for_bit() {
    let bucket = bucket("door-chain");
    let folder = S3Folder::new(bucket.clone(), "rbd/vm");
    assert!(folder.list().unwrap().is_empty());
    let image = chain_in(&folder);
    // Something beside the folder, and below it, is not one of its files.
    let other = S3Folder::new(bucket.clone(), "rbd");
    other.put("stray", b"x", Sharing::Folder).unwrap();
    // An empty object named like the folder (what some tools make for a folder) is no file.
    other.put("vm/", b"", Sharing::Folder).unwrap();
    let below = S3Folder::new(bucket, "rbd/vm/old");
    below.put("file", b"y", Sharing::Folder).unwrap();

    let scanned = read::scan(&folder, "vm").unwrap();
    assert_eq!(scanned.layout.points().len(), 3);
    assert!(scanned.layout.files.iter().all(|f| f.checksum.is_some()));
    let limits = Limits::learn(&folder, &scanned.layout);
    let full = &scanned.layout.files[0];
    assert_eq!(limits.chain_size(full).map(|(size, _)| size), Some(SIZE));
    assert_eq!(rebuilt(&folder).unwrap(), image);
    let listed = folder.list().unwrap();
    let old = listed.iter().find(|e| e.name == "old").unwrap();
    assert_eq!(old.kind, EntryKind::Directory);
    assert_eq!(listed.len(), 7, "{listed:?}");
}

#[test]
fn a_damaged_object_is_named_by_its_s3_location() {
    let folder = S3Folder::new(bucket("door-damaged"), "rbd/vm");
    chain_in(&folder);
    let name = diff_file(S1, S2);
    let mut damaged = folder.read_small(&name, 1 << 20).unwrap().unwrap();
    let last = damaged.len() - 2;
    damaged[last] ^= 1;
    folder.put(&name, &damaged, Sharing::Folder).unwrap();
    let err = format!("{:#}", rebuilt(&folder).unwrap_err());
    assert!(
        err.starts_with(&format!("s3://door-damaged/rbd/vm/{name}: ")),
        "{err}"
    );
}

#[test]
fn objects_are_found_read_in_ranges_removed_and_published_whole() {
    let bucket = bucket("door-files");
    let folder = S3Folder::new(bucket.clone(), "rbd/vm");
    let missing = folder.kind_of("none").unwrap_err();
    assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{missing}");
    assert_eq!(
        folder.open("none").err().unwrap().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(folder.read_small("none", 10).unwrap(), None);
    assert!(!folder.remove("none").unwrap());

    folder.put("small", b"0123456789", Sharing::Folder).unwrap();
    assert_eq!(folder.kind_of("small").unwrap(), EntryKind::File);
    assert!(
        folder.read_small("small", 9).is_err(),
        "longer than its limit"
    );
    assert_eq!(
        folder.read_own("small", 10).unwrap().unwrap(),
        b"0123456789"
    );
    let mut part = Vec::new();
    bucket
        .get("rbd/vm/small", Some(3..7))
        .unwrap()
        .reader
        .read_to_end(&mut part)
        .unwrap();
    assert_eq!(part, b"3456");
    assert!(folder.remove("small").unwrap());
    assert_eq!(folder.read_small("small", 10).unwrap(), None);

    // Published: the checksum object first, then the file through a multipart upload of more
    // than one part.
    let mut staged = folder.stage("big.full").unwrap().unwrap();
    let bytes: Vec<u8> = (0..PART as u64 + 4096).map(|i| (i % 253) as u8).collect();
    std::io::Write::write_all(staged.file(), &bytes).unwrap();
    let published = folder
        .publish(staged, "ab".repeat(32).as_str(), false)
        .unwrap();
    assert_eq!(published.size, bytes.len() as u64);
    let opened = folder.open("big.full").unwrap();
    assert_eq!(opened.len, bytes.len() as u64);
    let mut back = Vec::new();
    opened.reader.take(u64::MAX).read_to_end(&mut back).unwrap();
    assert!(back == bytes);
    assert!(folder.kind_of("big.full.sha256").is_ok());
    let staged = folder.stage("big.full").unwrap().unwrap();
    let err = folder
        .publish(staged, "ab".repeat(32).as_str(), false)
        .unwrap_err();
    assert!(format!("{err:#}").contains("already there"), "{err:#}");
    assert!(
        bucket.uploads("rbd/").unwrap().is_empty(),
        "no upload left behind"
    );
}

#[test]
fn an_unfinished_upload_is_listed_until_aborted_and_a_missing_bucket_is_named() {
    let bucket = bucket("door-uploads");
    let id = bucket.create_upload("rbd/vm/cut.full").unwrap();
    bucket
        .upload_part("rbd/vm/cut.full", &id, 1, &[1; 1024])
        .unwrap();
    assert_eq!(
        bucket.uploads("rbd/").unwrap(),
        [("rbd/vm/cut.full".to_string(), id.clone())]
    );
    let folder = S3Folder::new(bucket.clone(), "rbd/vm");
    assert!(
        folder.list().unwrap().is_empty(),
        "no object before it is complete"
    );
    bucket.abort_upload("rbd/vm/cut.full", &id).unwrap();
    assert!(bucket.uploads("rbd/").unwrap().is_empty());

    let gw = gateway();
    let credentials = Credentials::new(gw.key.clone(), gw.secret.clone());
    let missing = S3Bucket::new(&gw.endpoint, "no-such-bucket", "us-east-1", credentials).unwrap();
    let folder = S3Folder::new(Arc::new(missing), "rbd/vm");
    let err = format!("{:#}", folder.create().unwrap_err());
    assert_eq!(err, "bucket no-such-bucket does not exist");
    let err = format!("{:#}", folder.list().unwrap_err());
    assert!(err.contains("NoSuchBucket"), "{err}");
}

//! Destinations in an S3 bucket (`destination directory = s3://BUCKET/PREFIX`), against the
//! radosgw that `scripts/ceph-sandbox rgw` starts beside the test cluster: chains written into
//! the bucket, listed, verified and restored bit for bit, encrypted ones restored with stock
//! tools from the objects, a window slide, a run killed mid-upload, and the errors an admin
//! meets (no bucket, wrong keys, no service).
//!
//! The bucket is looked at through a small S3 client of the tests' own (`rusty-s3` signing,
//! `ureq` carrying), not through the tool.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusty_s3::actions::{ListObjectsV2, ListParts};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::harness::*;

/// How long a signed request stays valid.
const TTL: Duration = Duration::from_secs(300);

/// One bucket of the gateway, as the tests see it.
struct TestBucket {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
}

impl TestBucket {
    /// A new bucket named after `w`'s pool.
    fn create(w: &World) -> TestBucket {
        let rgw = rgw();
        let bucket = TestBucket {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .into(),
            bucket: Bucket::new(
                rgw.endpoint.parse().unwrap(),
                UrlStyle::Path,
                w.pool.clone(),
                "us-east-1",
            )
            .unwrap(),
            credentials: Credentials::new(&rgw.access_key, &rgw.secret_key),
        };
        let url = bucket.bucket.create_bucket(&bucket.credentials).sign(TTL);
        bucket.agent.put(url.as_str()).send_empty().unwrap();
        bucket
    }

    fn name(&self) -> &str {
        self.bucket.name()
    }

    /// The answer to a GET of `url`, as text.
    fn text(&self, url: &url::Url) -> String {
        self.agent
            .get(url.as_str())
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap()
    }

    /// Every object under `prefix`, as (key, size), at every depth.
    fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
        action.with_prefix(prefix);
        let body = self.text(&action.sign(TTL));
        let page = ListObjectsV2::parse_response(&body).unwrap();
        assert!(page.next_continuation_token.is_none(), "one page is enough");
        page.contents
            .into_iter()
            .map(|o| (o.key, o.size.unwrap_or(0)))
            .collect()
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.objects(prefix).into_iter().map(|(k, _)| k).collect()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(TTL);
        self.agent
            .get(url.as_str())
            .call()
            .unwrap()
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap()
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(TTL);
        self.agent.put(url.as_str()).send(bytes).unwrap();
    }

    /// How many parts the unfinished upload `id` of `key` has.
    fn parts(&self, key: &str, id: &str) -> usize {
        let url = ListParts::new(&self.bucket, Some(&self.credentials), key, id).sign(TTL);
        ListParts::parse_response(&self.text(&url))
            .unwrap()
            .parts
            .len()
    }

    /// The unfinished multipart uploads under `prefix`, as (key, id).
    fn uploads(&self, prefix: &str) -> Vec<(String, String)> {
        let query = [("prefix", prefix), ("uploads", "")];
        let url = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            rusty_s3::Method::Get,
            self.bucket.base_url().clone(),
            self.credentials.key(),
            self.credentials.secret(),
            None,
            self.bucket.region(),
            TTL.as_secs(),
            query.iter().copied(),
            std::iter::empty(),
        );
        self.text(&url)
            .split("<Upload>")
            .skip(1)
            .map(|u| (element(u, "Key"), element(u, "UploadId")))
            .collect()
    }
}

fn element(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml.find(&open).unwrap() + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].to_string()
}

/// A config backing `w`'s pool up into `bucket` under the prefix `site`, with `extra` lines.
fn s3_config(w: &World, bucket: &TestBucket, extra: &str) -> PathBuf {
    let rgw = rgw();
    let dest = format!("s3://{}/site", bucket.name());
    w.config_named(
        "s3.conf",
        Path::new(&dest),
        &format!(
            "s3 endpoint = {}\ns3 credentials = {}\n{extra}",
            rgw.endpoint,
            rgw.credentials.display()
        ),
    )
}

/// The key prefix of `image`'s folder in the bucket.
fn image_prefix(w: &World, image: &str) -> String {
    format!("site/{}/{image}/", w.pool)
}

/// The backup files of `image` in the bucket (no checksums, no records), by name.
fn backup_objects(w: &World, bucket: &TestBucket, image: &str) -> Vec<String> {
    let prefix = image_prefix(w, image);
    bucket
        .keys(&prefix)
        .into_iter()
        .map(|k| k[prefix.len()..].to_string())
        .filter(|n| n.contains('@') && !n.ends_with(".sha256"))
        .collect()
}

/// Each object's `.sha256` object holds its SHA-256, in `sha256sum`'s format.
fn assert_checksums_hold(w: &World, bucket: &TestBucket, image: &str) {
    let prefix = image_prefix(w, image);
    for name in backup_objects(w, bucket, image) {
        let line = String::from_utf8(bucket.get(&format!("{prefix}{name}.sha256"))).unwrap();
        let sum = sha256_hex(&bucket.get(&format!("{prefix}{name}")));
        assert_eq!(line, format!("{sum}  {name}\n"), "{name}");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Restores every restore point of `image` into a file and compares it with the snapshot.
fn assert_every_point_restores(w: &World, conf: &Path, image: &str, extra: &[&str]) {
    let snapshots = w.backup_snapshots(image);
    assert!(!snapshots.is_empty());
    for snap in &snapshots {
        let target = w.tmp.path().join(format!("{image}-{snap}.raw"));
        let mut restore = w.restore(conf, image).into_file(&target).at(snap);
        for arg in extra {
            restore = restore.arg(arg);
        }
        restore.run().success();
        assert!(
            same_bytes(&fs::read(&target).unwrap(), &w.export(image, Some(snap))),
            "{image}@{snap}"
        );
        fs::remove_file(&target).unwrap();
    }
}

#[test]
fn chains_in_a_bucket_are_listed_verified_and_restored_bit_for_bit() {
    for compress in ["no", "yes", "zstd"] {
        let w = World::new();
        let bucket = TestBucket::create(&w);
        w.create_image("vm", 12 * MIB, 1200);
        let conf = s3_config(
            &w,
            &bucket,
            &format!("images = vm\nbackup mode = incremental\ncompress = {compress}"),
        );
        // Check mode reads the bucket and writes nothing to it.
        w.cephbackup(&["-c", conf.to_str().unwrap(), "--check"])
            .success();
        assert_eq!(bucket.keys(""), Vec::<String>::new(), "{compress}");
        for round in 0..2 {
            if round > 0 {
                w.write_data("vm", 1200 + round);
                next_second();
            }
            let run = w.backup(&conf).success();
            assert!(run.stdout.contains("s3://"), "{}", run.stdout);
        }
        let files = backup_objects(&w, &bucket, "vm");
        assert_eq!(files.len(), 2, "{compress}: {files:?}");
        let suffix = match compress {
            "zstd" => ".tar.zst",
            "yes" => ".tar.gz",
            _ => "",
        };
        assert!(
            files.iter().all(|f| f.ends_with(suffix)),
            "{compress}: {files:?}"
        );
        assert_checksums_hold(&w, &bucket, "vm");
        // Nothing went to a local folder, and no upload was left unfinished.
        assert_eq!(w.dest_tree().len(), 0);
        assert_eq!(bucket.uploads(""), []);

        let listing = w.list_json(&conf, &[], 0);
        assert_eq!(listing.points(0).len(), 2, "{compress}");
        w.verify(&conf, &[]).success();
        assert_every_point_restores(&w, &conf, "vm", &[]);
        if compress != "zstd" {
            continue;
        }
        let target = format!("vm-back-{compress}");
        w.restore(&conf, "vm").into_image(&target).run().success();
        let newest = w.backup_snapshots("vm").pop().unwrap();
        assert!(same_bytes(
            &w.export(&target, None),
            &w.export("vm", Some(&newest))
        ));
    }
}

#[test]
fn full_mode_keeps_its_rules_in_a_bucket_and_status_reads_it() {
    let w = World::new();
    let bucket = TestBucket::create(&w);
    w.create_image("vm", 8 * MIB, 1300);
    let conf = s3_config(
        &w,
        &bucket,
        "images = vm\nbackup mode = full\ncompress = yes\nkeep last = 2",
    );
    for round in 0..3 {
        w.write_data("vm", 1300 + round);
        next_second();
        w.backup(&conf).success();
    }
    let files = backup_objects(&w, &bucket, "vm");
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().all(|f| f.ends_with(".full.tar.gz")),
        "{files:?}"
    );
    // Full mode leaves no snapshot behind; the files are the points.
    assert_eq!(w.backup_snapshots("vm"), Vec::<String>::new());
    assert_checksums_hold(&w, &bucket, "vm");
    // The other commands that look at a destination take a bucket too.
    let checked = with_conf(&w, &conf, &["--check", "--offline"]).success();
    assert!(checked.stdout.contains("s3://"), "{}", checked.stdout);
    let init = with_conf(&w, &conf, &["init-destination"]).success();
    assert!(
        init.stdout.contains("a cephbackup destination already"),
        "{}",
        init.stdout
    );
    let status = with_conf(&w, &conf, &["status"]).success();
    assert!(status.stdout.contains("OK"), "{}", status.stdout);
    // The last run's report is in the bucket, as it is in a folder.
    let report = bucket.get("site/.cephbackup-last-run.json");
    assert!(
        String::from_utf8_lossy(&report).contains("\"success\": true"),
        "{}",
        String::from_utf8_lossy(&report)
    );
}

/// A key pair: the public key, and the identity file (0600) holding the private key.
fn key_pair(w: &World) -> (String, PathBuf) {
    let identity = age::x25519::Identity::generate();
    let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string();
    let path = w.tmp.path().join("backup.key");
    fs::write(&path, format!("{secret}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    (identity.to_public().to_string(), path)
}

#[test]
fn an_encrypted_chain_in_a_bucket_restores_with_the_key_and_with_stock_tools() {
    let w = World::new();
    let bucket = TestBucket::create(&w);
    let (public, key) = key_pair(&w);
    w.create_image("vm", 16 * MIB, 1400);
    let conf = s3_config(
        &w,
        &bucket,
        &format!("images = vm\nbackup mode = incremental\ncompress = zstd\nencrypt to = {public}"),
    );
    w.backup(&conf).success();
    w.write_data("vm", 1401);
    next_second();
    w.backup(&conf).success();
    let mut files = backup_objects(&w, &bucket, "vm");
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().all(|f| f.ends_with(".tar.zst.age")),
        "{files:?}"
    );
    assert_checksums_hold(&w, &bucket, "vm");
    let proven = w.verify(&conf, &[]).success();
    assert!(
        proven
            .stdout
            .contains("2 encrypted file(s) proven by checksum"),
        "{}",
        proven.stdout
    );
    let key_arg = key.to_str().unwrap();
    assert_every_point_restores(&w, &conf, "vm", &["--identity", key_arg]);
    // With the key, verify rebuilds the newest point from the bucket and compares it with the
    // cluster's snapshot.
    let source = w
        .verify(&conf, &["--source", "--identity", key_arg])
        .success();
    assert!(
        source
            .stdout
            .contains("rebuilt from the backups, same SHA-256 as rbd export of the snapshot"),
        "{}",
        source.stdout
    );

    // Stock tools: each object fetched from the bucket, then age, tar and rbd.
    files.sort_by_key(|f| !f.contains(".full"));
    let fetched = w.tmp.path().join("fetched");
    fs::create_dir(&fetched).unwrap();
    for name in &files {
        let object = bucket.get(&format!("{}{name}", image_prefix(&w, "vm")));
        fs::write(fetched.join(name), object).unwrap();
    }
    crate::encryption::restore_with_stock_tools(&w, ("vm", &fetched), &files, &key, "vm-stock");
}

#[test]
fn a_window_slide_on_a_bucket_exports_the_new_base_from_the_cluster() {
    let w = World::new();
    let bucket = TestBucket::create(&w);
    // The original's chain, ten and one days old, shipped into the bucket as it was.
    w.create_image("vm", 8 * MIB, 1450);
    let old = history(&w, "vm", &[240, 24]);
    for name in w.all_files("vm") {
        let bytes = fs::read(w.image_dir("vm").join(&name)).unwrap();
        bucket.put(&format!("{}{name}", image_prefix(&w, "vm")), &bytes);
    }
    fs::remove_dir_all(w.dest.join(&w.pool)).unwrap();
    let conf = s3_config(
        &w,
        &bucket,
        "images = vm\nbackup mode = incremental\nwindow size = 3\nwindow unit = days",
    );
    let run = w.backup(&conf).success();
    assert!(
        run.stdout
            .contains(&format!("Exporting image vm@{}", old[1])),
        "the new base comes from the cluster:\n{}",
        run.stdout
    );
    let files = backup_objects(&w, &bucket, "vm");
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().any(|f| f == &format!("vm@{}.full", old[1])),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.contains(&old[0])), "{files:?}");
    assert_every_point_restores(&w, &conf, "vm", &[]);
}

#[test]
fn a_run_killed_mid_upload_publishes_nothing_and_the_next_run_aborts_its_upload() {
    let w = World::new();
    let bucket = TestBucket::create(&w);
    w.create_image("vm", 40 * MIB, 1500);
    let conf = s3_config(&w, &bucket, "images = vm\nbackup mode = incremental");
    // The export sends 20 MiB (two parts go out), then stalls until the test releases it (the
    // stalled `rbd` holds the image's lock, so the next run would wait for it).
    let release = w.tmp.path().join("release");
    let script = format!(
        "#!/bin/sh\n\
         case \"$*\" in *' export '*)\n\
         \x20 '{real}' \"$@\" | {{ head -c 20971520; until [ -e '{release}' ]; do sleep 0.1; done; cat; }}\n\
         \x20 exit 0;;\n\
         esac\n\
         exec '{real}' \"$@\"\n",
        real = real_rbd(),
        release = release.display()
    );
    let path = path_with_rbd_script(&w, "slow-bin", &script);
    let mut child = w.spawn_with_env(&["-c", conf.to_str().unwrap()], &[("PATH", &path)]);
    let prefix = image_prefix(&w, "vm");
    // In progress: the upload has sent the two whole parts of what the export gave so far.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (key, id) = loop {
        let uploads = bucket.uploads(&prefix);
        if let [(key, id)] = uploads.as_slice() {
            if bucket.parts(key, id) == 2 {
                break (key.clone(), id.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "the upload did not get under way"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    // No object under a final name; the upload is left, and the image's record names it.
    assert_eq!(backup_objects(&w, &bucket, "vm"), Vec::<String>::new());
    assert_eq!(bucket.uploads(&prefix), [(key, id.clone())]);
    let record = bucket.get(&format!("{prefix}.cephbackup-image.json"));
    assert!(
        String::from_utf8_lossy(&record).contains(&id),
        "{}",
        String::from_utf8_lossy(&record)
    );

    fs::write(&release, "").unwrap();
    let run = w.backup(&conf).success();
    assert!(
        run.stderr.contains("aborting the unfinished upload"),
        "{}",
        run.stderr
    );
    assert_eq!(bucket.uploads(""), []);
    assert_eq!(backup_objects(&w, &bucket, "vm").len(), 1);
    assert!(
        !String::from_utf8_lossy(&bucket.get(&format!("{prefix}.cephbackup-image.json")))
            .contains(&id)
    );
    assert_every_point_restores(&w, &conf, "vm", &[]);
}

#[test]
fn a_missing_bucket_wrong_keys_or_no_service_is_one_line_and_writes_nothing() {
    let w = World::new();
    w.create_image("vm", 4 * MIB, 1600);
    let rgw = rgw();
    let write_conf = |dest: &str, endpoint: &str, credentials: &Path| {
        w.config_named(
            "s3.conf",
            Path::new(dest),
            &format!(
                "images = vm\nbackup mode = incremental\ns3 endpoint = {endpoint}\n\
                 s3 credentials = {}",
                credentials.display()
            ),
        )
    };
    let wrong = w.tmp.path().join("wrong.credentials");
    fs::write(
        &wrong,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = not-the-secret\n",
            rgw.access_key
        ),
    )
    .unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    let bucket = TestBucket::create(&w);
    let existing = format!("s3://{}/site", bucket.name());
    let cases = [
        (
            "s3://no-such-bucket-here/site",
            rgw.endpoint.as_str(),
            &rgw.credentials,
            "there is no such bucket",
        ),
        (existing.as_str(), rgw.endpoint.as_str(), &wrong, "403"),
        (
            existing.as_str(),
            "http://127.0.0.1:9",
            &rgw.credentials,
            "Connection refused",
        ),
    ];
    for (dest, endpoint, credentials, expected) in cases {
        let conf = write_conf(dest, endpoint, credentials);
        let run = w.run_within(&["-c", conf.to_str().unwrap()], Duration::from_secs(120));
        assert_ne!(run.code, 0, "{dest} {endpoint}");
        let error = run.first_error();
        assert!(
            error.contains(expected),
            "{dest} {endpoint}: {}",
            run.stderr
        );
        assert!(error.contains(dest), "the destination is named: {error}");
        // No snapshot was taken for a destination that cannot take the file.
        assert_eq!(w.backup_snapshots("vm"), Vec::<String>::new(), "{dest}");
    }
    assert_eq!(bucket.keys(""), Vec::<String>::new());
}

#[test]
fn objects_another_writer_planted_are_not_believed_and_left_alone() {
    let w = World::new();
    let bucket = TestBucket::create(&w);
    w.create_image("vm", 4 * MIB, 1700);
    let conf = s3_config(&w, &bucket, "images = vm\nbackup mode = incremental");
    w.backup(&conf).success();
    let prefix = image_prefix(&w, "vm");
    // A record with no seal of this host, and a backup file with no checksum.
    let record = bucket.get(&format!("{prefix}.cephbackup-image.json"));
    let mut forged: serde_json::Value = serde_json::from_slice(&record).unwrap();
    forged["newest"] = serde_json::Value::Null;
    bucket.put(
        &format!("{prefix}.cephbackup-image.json"),
        forged.to_string().as_bytes(),
    );
    let planted = "vm@BACKUPUTC20200101T000000.full";
    bucket.put(&format!("{prefix}{planted}"), b"not an image");
    w.write_data("vm", 1701);
    next_second();
    let run = w.backup(&conf).success();
    assert!(run.stderr.contains("seal does not match"), "{}", run.stderr);
    // Nothing rests on what is not believed: the planted file stays, the chain goes on.
    assert!(bucket.keys(&prefix).contains(&format!("{prefix}{planted}")));
    assert_eq!(backup_objects(&w, &bucket, "vm").len(), 3);
    assert_every_point_restores(&w, &conf, "vm", &[]);
    let verified = w.verify(&conf, &[]);
    assert!(
        verified.stdout.contains(planted) || verified.stderr.contains(planted),
        "{}{}",
        verified.stdout,
        verified.stderr
    );
}

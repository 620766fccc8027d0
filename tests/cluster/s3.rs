//! The spike of issue 18 (an object-store destination): the S3 client the tool would use
//! (`rusty-s3` signing requests, `ureq` carrying them, both synchronous) against the radosgw
//! beside the test cluster: a streaming multipart upload whose memory stays at one part whatever
//! the object's size, a listing, a ranged read, an unfinished upload listed and then aborted.
//!
//! The upload runs in a child process (this test binary again, running only
//! [`upload_child`]), so that its peak resident memory is its own and not that of the tests
//! running beside it in this process.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::harness::*;

/// How long a signed request stays valid.
const TTL: Duration = Duration::from_secs(300);
const PART: usize = 8 << 20;
const TOTAL: u64 = 64 * MIB;
const OBJECT: &str = "rbd/vm/vm@BACKUP-full.tar";

/// One bucket of the gateway, through a client as small as the tool's would be.
struct S3 {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
}

impl S3 {
    fn new(endpoint: &str, bucket: &str, key: &str, secret: &str) -> S3 {
        S3 {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
            bucket: Bucket::new(
                endpoint.parse().unwrap(),
                UrlStyle::Path,
                bucket.to_string(),
                "us-east-1",
            )
            .unwrap(),
            credentials: Credentials::new(key, secret),
        }
    }

    fn create_bucket(&self) {
        let url = self.bucket.create_bucket(&self.credentials).sign(TTL);
        self.agent.put(url.as_str()).send_empty().unwrap();
    }

    fn delete_bucket(&self) {
        let url = self.bucket.delete_bucket(&self.credentials).sign(TTL);
        self.agent.delete(url.as_str()).call().unwrap();
    }

    /// Uploads everything `from` gives as the object `key`, one part of `PART` bytes at a time
    /// from one buffer: the memory it takes is one part's, whatever the object's size.
    fn upload(&self, key: &str, from: &mut dyn Read) -> usize {
        let id = self.create_upload(key);
        let mut buffer = vec![0; PART];
        let mut etags = Vec::new();
        loop {
            let n = read_full(from, &mut buffer);
            if n == 0 && !etags.is_empty() {
                break;
            }
            etags.push(self.upload_part(key, &id, etags.len() + 1, &buffer[..n]));
            if n < PART {
                break;
            }
        }
        let complete = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            &id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(TTL);
        self.agent.post(url.as_str()).send(complete.body()).unwrap();
        etags.len()
    }

    /// Starts a multipart upload of `key`; its id.
    fn create_upload(&self, key: &str) -> String {
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), key)
            .sign(TTL);
        let body = self
            .agent
            .post(url.as_str())
            .send_empty()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        CreateMultipartUpload::parse_response(&body)
            .unwrap()
            .upload_id()
            .to_string()
    }

    /// Uploads part `number` (from 1); its ETag.
    fn upload_part(&self, key: &str, id: &str, number: usize, bytes: &[u8]) -> String {
        let number = u16::try_from(number).unwrap();
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, id)
            .sign(TTL);
        let response = self.agent.put(url.as_str()).send(bytes).unwrap();
        response.headers()["etag"].to_str().unwrap().to_string()
    }

    fn abort_upload(&self, key: &str, id: &str) {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, id)
            .sign(TTL);
        self.agent.delete(url.as_str()).call().unwrap();
    }

    /// The unfinished multipart uploads under `prefix`, as (key, id). rusty-s3 has no action for
    /// ListMultipartUploads: the request is signed with its public signer.
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
        let body = self
            .agent
            .get(url.as_str())
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        body.split("<Upload>")
            .skip(1)
            .map(|upload| (element(upload, "Key"), element(upload, "UploadId")))
            .collect()
    }

    /// The objects under `prefix`, as (key, size).
    fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
        action.with_prefix(prefix);
        let url = action.sign(TTL);
        let body = self
            .agent
            .get(url.as_str())
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        ListObjectsV2::parse_response(&body)
            .unwrap()
            .contents
            .into_iter()
            .map(|object| (object.key, object.size.unwrap()))
            .collect()
    }

    /// The bytes `range` of `key` (a ranged GET).
    fn read_range(&self, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(TTL);
        let mut bytes = Vec::new();
        self.agent
            .get(url.as_str())
            .header("range", format!("bytes={}-{}", range.start, range.end - 1))
            .call()
            .unwrap()
            .into_body()
            .into_reader()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    }

    /// `key` as a stream: its bytes are read as they come, never held whole.
    fn open(&self, key: &str) -> impl Read {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(TTL);
        self.agent
            .get(url.as_str())
            .call()
            .unwrap()
            .into_body()
            .into_reader()
    }

    fn delete(&self, key: &str) {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(TTL);
        self.agent.delete(url.as_str()).call().unwrap();
    }
}

/// The text of the first `<name>` element in `xml`.
fn element(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml.find(&open).unwrap() + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].to_string()
}

/// Fills `buffer` from `from` as far as it goes; how many bytes it got.
fn read_full(from: &mut dyn Read, buffer: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buffer.len() {
        match from.read(&mut buffer[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Byte `i` of the test object: not compressible, not periodic within a part.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9).rotate_right(13) % 251) as u8
}

/// `len` generated bytes, made as they are read.
struct Generated {
    at: u64,
    len: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.len - self.at).unwrap_or(usize::MAX));
        for (k, byte) in buf[..n].iter_mut().enumerate() {
            *byte = byte_at(self.at + k as u64);
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// The peak resident memory of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The child's side of [`a_streaming_multipart_upload_holds_one_part_in_memory`]: uploads
/// `TOTAL` generated bytes to the bucket it is given and prints its peak memory before and after.
/// Ignored: only that test runs it, in a process of its own.
#[test]
#[ignore = "run by a_streaming_multipart_upload_holds_one_part_in_memory"]
fn upload_child() {
    let var = |name: &str| std::env::var(name).unwrap();
    let s3 = S3::new(
        &var("S3_PROOF_ENDPOINT"),
        &var("S3_PROOF_BUCKET"),
        &var("S3_PROOF_KEY"),
        &var("S3_PROOF_SECRET"),
    );
    let before = peak_rss_kib();
    let started = Instant::now();
    let parts = s3.upload(OBJECT, &mut Generated { at: 0, len: TOTAL });
    let took = started.elapsed();
    println!(
        "S3_PROOF parts={parts} before_kib={before} peak_kib={} ms={}",
        peak_rss_kib(),
        took.as_millis()
    );
}

#[test]
fn a_streaming_multipart_upload_holds_one_part_in_memory() {
    let rgw = rgw();
    let mode = std::fs::metadata(&rgw.credentials)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the credentials file is the owner's only"
    );
    let bucket = format!("proof-{}", std::process::id());
    let s3 = S3::new(&rgw.endpoint, &bucket, &rgw.access_key, &rgw.secret_key);
    let started = Instant::now();
    s3.create_bucket();
    eprintln!("bucket created in {:?}", started.elapsed());

    // 64 MiB in 8 MiB parts, uploaded by a process of its own whose peak memory is measured.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["s3::upload_child", "--exact", "--ignored", "--nocapture"])
        .env("S3_PROOF_ENDPOINT", &rgw.endpoint)
        .env("S3_PROOF_BUCKET", &bucket)
        .env("S3_PROOF_KEY", &rgw.access_key)
        .env("S3_PROOF_SECRET", &rgw.secret_key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().find(|l| l.starts_with("S3_PROOF ")).unwrap();
    eprintln!("{line}");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("parts"), TOTAL / PART as u64);
    // One part in memory and the client's own: far below the 64 MiB that went through.
    let peak_mib = field("peak_kib") / 1024;
    assert!(peak_mib < 32, "{line}");

    // Listed whole, under its final name.
    assert_eq!(s3.list("rbd/"), [(OBJECT.to_string(), TOTAL)]);
    // A byte range across a part boundary.
    let range = 3 * PART as u64 - 50..3 * PART as u64 + 50;
    let bytes = s3.read_range(OBJECT, range.clone());
    let expected: Vec<u8> = range.map(byte_at).collect();
    assert!(same_bytes(&bytes, &expected));
    // The whole, streamed back and compared as it comes.
    let mut reader = s3.open(OBJECT);
    let mut chunk = vec![0; 1 << 16];
    let mut at = 0;
    loop {
        let n = reader.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        assert!(chunk[..n].iter().zip(at..).all(|(b, i)| *b == byte_at(i)));
        at += n as u64;
    }
    assert_eq!(at, TOTAL);

    // An unfinished upload (a run killed mid-file) is listed, holds no object under its name,
    // and is gone once aborted.
    let unfinished = "rbd/vm/vm@BACKUP-diff.tar";
    let id = s3.create_upload(unfinished);
    s3.upload_part(unfinished, &id, 1, &vec![7; 5 << 20]);
    assert_eq!(
        s3.uploads("rbd/vm/"),
        [(unfinished.to_string(), id.clone())]
    );
    assert_eq!(
        s3.list("rbd/").len(),
        1,
        "no object under the unfinished name"
    );
    s3.abort_upload(unfinished, &id);
    assert!(s3.uploads("rbd/vm/").is_empty());

    s3.delete(OBJECT);
    assert!(s3.list("rbd/").is_empty());
    s3.delete_bucket();
}
